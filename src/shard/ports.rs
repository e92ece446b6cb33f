//! Per-shard RTP port range: each shard hands out ports from its own slice, so no coordination.
//! Which free port a stream gets is drawn unpredictably (someone who saw one stream's port
//! cannot aim at the next one's), and a port just given back waits behind the others (the
//! camera that used it may still be sending).

use std::collections::{HashSet, VecDeque};
use std::ops::RangeInclusive;

/// Ports given back recently, handed out again only when no other is free.
const RECENT_PORTS_MAX: usize = 256;

#[derive(Debug)]
pub struct PortPool {
    range: RangeInclusive<u16>,
    used: HashSet<u16>,
    /// Given back, oldest first (at most `RECENT_PORTS_MAX`, and half the range).
    recent: VecDeque<u16>,
}

/// A number nobody outside this process can predict: SipHash under the process's random keys
/// (std's `RandomState`, seeded from the OS), over a counter and the time.
pub fn unpredictable_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish()
}

impl PortPool {
    /// Slice `shard` of `shards` equal parts of `min..=max` (the last takes the remainder).
    pub fn for_shard(min: u16, max: u16, shard: usize, shards: usize) -> PortPool {
        let total = usize::from(max - min) + 1;
        let span = (total / shards.max(1)).max(1);
        let lo = (usize::from(min) + span * shard).min(usize::from(max)) as u16;
        let hi = if shard + 1 >= shards { max } else { (usize::from(lo) + span - 1).min(usize::from(max)) as u16 };
        PortPool { range: lo..=hi, used: HashSet::new(), recent: VecDeque::new() }
    }

    /// Takes slice `shard` of `shards` of a new `min..=max` (a node's `setServerConfig`):
    /// ports in use stay taken wherever they are, and are not pooled again if now outside.
    pub fn reslice(&mut self, min: u16, max: u16, shard: usize, shards: usize) {
        let fresh = PortPool::for_shard(min, max, shard, shards);
        self.range = fresh.range;
        let range = self.range.clone();
        self.recent.retain(|p| range.contains(p));
    }

    pub fn range(&self) -> RangeInclusive<u16> {
        self.range.clone()
    }

    /// Candidate ports not in use: from a point `draw` picks in the range on (wrapping), the
    /// recently given back ones last.
    pub fn candidates(&self, draw: u64) -> impl Iterator<Item = u16> + '_ {
        let (lo, hi) = (*self.range.start(), *self.range.end());
        let span = u64::from(hi - lo) + 1;
        let start = lo + (draw % span) as u16;
        let fresh = (start..=hi).chain(lo..start).filter(|p| !self.used.contains(p) && !self.recent.contains(p));
        fresh.chain(self.recent.iter().copied().filter(|p| !self.used.contains(p)))
    }

    pub fn take(&mut self, port: u16) {
        self.used.insert(port);
        self.recent.retain(|p| *p != port);
    }

    pub fn release(&mut self, port: u16) {
        if !self.used.remove(&port) || !self.range.contains(&port) {
            return;
        }
        let span = usize::from(self.range.end() - self.range.start()) + 1;
        let keep = RECENT_PORTS_MAX.min(span / 2);
        if keep == 0 {
            return;
        }
        if self.recent.len() >= keep {
            self.recent.pop_front();
        }
        self.recent.push_back(port);
    }

    pub fn in_use(&self, port: u16) -> bool {
        self.used.contains(&port)
    }
}

/// Backlog of the HTTP and SIP listeners.
const LISTEN_BACKLOG: i32 = 1024;

/// A TCP listener with SO_REUSEADDR, and SO_REUSEPORT when several executors share the
/// address. SO_REUSEADDR is inherited by accepted connections: without it, connections a
/// killed gmv left half-closed (FIN_WAIT, up to a minute) make the next start's one-instance
/// probe, which binds without SO_REUSEPORT, take the address for another gmv's.
pub fn tcp_listener(addr: std::net::SocketAddr, share_port: bool) -> std::io::Result<glommio::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::fd::{FromRawFd, IntoRawFd};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if share_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    // SAFETY: the fd comes from the socket just made and is handed over once.
    Ok(unsafe { glommio::net::TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_range_is_sliced_again_and_ports_in_use_stay_taken() {
        let mut pool = PortPool::for_shard(30000, 30099, 1, 2);
        assert_eq!(pool.range(), 30050..=30099);
        pool.take(30060);
        pool.reslice(40000, 40009, 1, 2);
        assert_eq!(pool.range(), 40005..=40009);
        assert!(pool.in_use(30060), "still bound by its stream");
        assert!(pool.candidates(7).all(|p| (40005..=40009).contains(&p)));
        pool.release(30060);
        assert!(!pool.in_use(30060) && pool.candidates(0).all(|p| p != 30060), "not pooled again outside the range");
    }

    #[test]
    fn splits_range_and_draws() {
        let a = PortPool::for_shard(30000, 30009, 0, 3);
        let c = PortPool::for_shard(30000, 30009, 2, 3);
        assert_eq!(a.range(), 30000..=30002);
        assert_eq!(c.range(), 30006..=30009);
        let mut p = PortPool::for_shard(30000, 30003, 0, 1);
        assert_eq!(p.candidates(2).collect::<Vec<_>>(), vec![30002, 30003, 30000, 30001], "from the drawn point, wrapping");
        assert_eq!(p.candidates(5).next(), Some(30001));
        p.take(30000);
        p.take(30001);
        p.release(30000);
        assert_eq!(p.candidates(0).collect::<Vec<_>>(), vec![30002, 30003, 30000], "the port just given back comes last");
        p.take(30000);
        assert_eq!(p.candidates(0).collect::<Vec<_>>(), vec![30002, 30003]);
    }

    #[test]
    fn draws_spread_over_the_range() {
        let p = PortPool::for_shard(30000, 39999, 0, 1);
        let firsts: HashSet<u16> = (0..100).map(|_| p.candidates(unpredictable_u64()).next().unwrap()).collect();
        assert!(firsts.len() > 90, "{} distinct first ports of 100 draws", firsts.len());
    }
}
