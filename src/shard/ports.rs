//! Per-shard RTP port range: each shard hands out ports from its own slice, so no coordination.

use std::collections::HashSet;
use std::ops::RangeInclusive;

#[derive(Debug)]
pub struct PortPool {
    range: RangeInclusive<u16>,
    next: u16,
    used: HashSet<u16>,
}

impl PortPool {
    /// Slice `shard` of `shards` equal parts of `min..=max` (the last takes the remainder).
    pub fn for_shard(min: u16, max: u16, shard: usize, shards: usize) -> PortPool {
        let total = usize::from(max - min) + 1;
        let span = (total / shards.max(1)).max(1);
        let lo = (usize::from(min) + span * shard).min(usize::from(max)) as u16;
        let hi = if shard + 1 >= shards { max } else { (usize::from(lo) + span - 1).min(usize::from(max)) as u16 };
        PortPool { range: lo..=hi, next: lo, used: HashSet::new() }
    }

    pub fn range(&self) -> RangeInclusive<u16> {
        self.range.clone()
    }

    /// Candidate ports not in use, starting after the last one handed out (so a just-freed
    /// port is not reused at once while the camera may still send to it).
    pub fn candidates(&self) -> impl Iterator<Item = u16> + '_ {
        let (lo, hi) = (*self.range.start(), *self.range.end());
        (self.next..=hi).chain(lo..self.next).filter(|p| !self.used.contains(p))
    }

    pub fn take(&mut self, port: u16) {
        self.used.insert(port);
        if self.range.contains(&port) {
            self.next = if port == *self.range.end() { *self.range.start() } else { port + 1 };
        }
    }

    pub fn release(&mut self, port: u16) {
        self.used.remove(&port);
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
    fn splits_range_and_rotates() {
        let a = PortPool::for_shard(30000, 30009, 0, 3);
        let c = PortPool::for_shard(30000, 30009, 2, 3);
        assert_eq!(a.range(), 30000..=30002);
        assert_eq!(c.range(), 30006..=30009);
        let mut p = PortPool::for_shard(30000, 30002, 0, 1);
        p.take(30000);
        assert_eq!(p.candidates().next(), Some(30001));
        p.take(30001);
        p.release(30000);
        assert_eq!(p.candidates().collect::<Vec<_>>(), vec![30002, 30000]);
    }
}
