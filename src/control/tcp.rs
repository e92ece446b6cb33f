//! SIP over TCP: connections framed by Content-Length and fed to the endpoint as messages.
//! Bounded so that idle or slow strangers cannot lock devices out: a total cap; a cap on
//! connections nobody registered on yet, per source address and per network (/24, /64) too;
//! when the unregistered ones fill their room, the oldest of them is closed for a newcomer;
//! hosts that have (or had) a registered device are not held to the strangers' caps; a head
//! timeout for a message begun, and an idle timeout for connections that never register.
//! Connections to upstreams signalled over TCP (`Peer::TcpOut`) are dialled here on first use,
//! one per address, and serve both ways like accepted ones.

use super::Control;
use crate::proto::sip::StreamFramer;
use crate::proto::sip::endpoint::{Command, ConnId, Peer};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalSender};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// SIP TCP connections at once.
pub const SIP_TCP_CONNS_MAX: usize = 10_000;
/// Of those, connections no device has registered on (the rest is kept for devices).
pub const SIP_TCP_UNBOUND_CONNS_MAX: usize = 8_000;
/// Unregistered connections from one source IP.
pub const SIP_TCP_UNBOUND_PER_SOURCE_MAX: usize = 32;
/// Unregistered connections from one network (IPv4 /24, IPv6 /64): a flood from many
/// addresses of one network takes no more than this.
pub const SIP_TCP_UNBOUND_PER_NET_MAX: usize = 128;
/// A message begun must be complete within this.
pub const SIP_TCP_HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection nobody registers on is closed after this.
pub const SIP_TCP_UNBOUND_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A registered device's connection silent for this many keepalive intervals is closed.
pub const SIP_TCP_BOUND_IDLE_KEEPALIVES: u32 = 4;
/// Messages queued to one connection before it counts as stuck.
pub const SIP_TCP_SEND_QUEUE_MSGS_MAX: usize = 64;
const SIP_TCP_READ_BYTES: usize = 16 * 1024;
/// Connections dialled to upstreams at once (an upstream whose address changed leaves its old
/// one until it idles out or makes room).
pub const SIP_TCP_DIALLED_MAX: usize = 2 * crate::proto::sip::endpoint::UPSTREAMS_MAX;
/// A dial not connected within this fails (its messages are lost; the endpoint is told).
pub const SIP_TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A dialled connection nothing came over for this long is closed (keepalives are answered
/// at most an hour apart: `keepalive_s` ≤ 3600).
pub const SIP_TCP_DIALLED_IDLE_TIMEOUT: Duration = Duration::from_secs(2 * 3600);

struct Conn {
    tx: LocalSender<Vec<u8>>,
    ip: IpAddr,
    /// Dialled by us (to an upstream), not accepted: no stranger's caps.
    dialled: bool,
    /// Closes the connection (evicted for a newcomer).
    evict: Option<futures_channel::oneshot::Sender<()>>,
}

#[derive(Default)]
pub struct TcpConns {
    /// By id: ids grow, so the first unregistered one is the oldest.
    conns: std::collections::BTreeMap<ConnId, Conn>,
    by_source: HashMap<IpAddr, Vec<ConnId>>,
    /// The same by network (`net_of`).
    by_net: HashMap<IpAddr, Vec<ConnId>>,
    /// Connections dialled, by the address dialled.
    dialled: HashMap<SocketAddr, ConnId>,
    next_id: ConnId,
    /// Addresses devices registered from (now or before: their last address): not strangers.
    device_hosts: Option<std::collections::HashSet<IpAddr>>,
}

/// The network an address is in for `SIP_TCP_UNBOUND_PER_NET_MAX`.
fn net_of(ip: IpAddr) -> IpAddr {
    match crate::proto::ipnet::canonical(ip) {
        IpAddr::V4(a) => IpAddr::V4(std::net::Ipv4Addr::from(u32::from(a) & 0xFFFF_FF00)),
        IpAddr::V6(a) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(a) & !((1u128 << 64) - 1))),
    }
}

/// What the connections are when a new one comes: unregistered ones from its address and
/// network, unregistered ones in all, all.
#[derive(Debug, Clone, Copy)]
struct Seen {
    known_host: bool,
    from_ip: usize,
    from_net: usize,
    unbound: usize,
    total: usize,
}

/// Strangers are held to the per-address and per-network caps and to the unregistered room;
/// a host that has (or had) a device only to the total. When the room is full, the oldest
/// unregistered connection (`oldest_unbound`) makes way.
fn admit(seen: Seen, oldest_unbound: impl FnOnce() -> Option<ConnId>) -> Admission {
    if !seen.known_host {
        if seen.from_ip >= SIP_TCP_UNBOUND_PER_SOURCE_MAX {
            return Admission::Refuse("too many unregistered connections from this address");
        }
        if seen.from_net >= SIP_TCP_UNBOUND_PER_NET_MAX {
            return Admission::Refuse("too many unregistered connections from this network");
        }
    }
    let full = seen.total >= SIP_TCP_CONNS_MAX || (!seen.known_host && seen.unbound >= SIP_TCP_UNBOUND_CONNS_MAX);
    if !full {
        return Admission::Take;
    }
    match oldest_unbound() {
        Some(oldest) => Admission::TakeEvicting(oldest),
        None => Admission::Refuse("every connection is a registered device's"),
    }
}

// A device host may open what strangers may not, and the room for strangers leaves room.
const _: () = assert!(SIP_TCP_UNBOUND_PER_SOURCE_MAX <= SIP_TCP_UNBOUND_PER_NET_MAX);
const _: () = assert!(SIP_TCP_UNBOUND_PER_NET_MAX <= SIP_TCP_UNBOUND_CONNS_MAX && SIP_TCP_UNBOUND_CONNS_MAX < SIP_TCP_CONNS_MAX);

/// What to do with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    Take,
    /// Take it, closing this older unregistered connection for it.
    TakeEvicting(ConnId),
    Refuse(&'static str),
}

impl TcpConns {
    /// Queues bytes for a connection; false if it is gone or its queue is full.
    pub fn send(&self, conn: ConnId, bytes: Vec<u8>) -> bool {
        self.conns.get(&conn).is_some_and(|c| c.tx.try_send(bytes).is_ok())
    }

    fn insert(&mut self, id: ConnId, conn: Conn) {
        self.by_source.entry(conn.ip).or_default().push(id);
        self.by_net.entry(net_of(conn.ip)).or_default().push(id);
        self.conns.insert(id, conn);
    }

    fn new_id(&mut self) -> ConnId {
        self.next_id += 1;
        self.next_id
    }

    /// Tells a connection to close (its task removes it).
    fn evict(&mut self, id: ConnId) {
        if let Some(evict) = self.conns.get_mut(&id).and_then(|c| c.evict.take()) {
            let _ = evict.send(());
        }
    }

    fn remove(&mut self, id: ConnId) {
        let Some(c) = self.conns.remove(&id) else { return };
        if c.dialled {
            self.dialled.retain(|_, d| *d != id);
            return;
        }
        for (map, key) in [(&mut self.by_source, c.ip), (&mut self.by_net, net_of(c.ip))] {
            if let Some(list) = map.get_mut(&key) {
                list.retain(|x| *x != id);
                if list.is_empty() {
                    map.remove(&key);
                }
            }
        }
    }
}

impl Control {
    /// A device registered from `ip`: its host is no stranger from now on.
    pub(super) fn device_host(&self, ip: IpAddr) {
        if let Some(hosts) = self.tcp.borrow_mut().device_hosts.as_mut()
            && hosts.len() < crate::proto::sip::endpoint::DEVICES_MAX
        {
            hosts.insert(crate::proto::ipnet::canonical(ip));
        }
    }

    /// Whether a new connection from `ip` may be taken now, and whom it displaces.
    fn tcp_admission(&self, ip: IpAddr) -> Admission {
        let mut tcp = self.tcp.borrow_mut();
        let ep = self.endpoint.borrow();
        let hosts = tcp.device_hosts.get_or_insert_with(|| ep.devices().filter_map(|d| d.addr).map(|a| crate::proto::ipnet::canonical(a.ip())).collect());
        let known_host = hosts.contains(&crate::proto::ipnet::canonical(ip));
        let unbound_in = |list: Option<&Vec<ConnId>>| list.map_or(0, |l| l.iter().filter(|c| !ep.is_bound_conn(**c)).count());
        let total = tcp.conns.len() - tcp.dialled.len();
        let seen = Seen {
            known_host,
            from_ip: unbound_in(tcp.by_source.get(&ip)),
            from_net: unbound_in(tcp.by_net.get(&net_of(ip))),
            unbound: total.saturating_sub(ep.bound_conn_count()),
            total,
        };
        // One already told to close (its task has not run yet) makes no more room.
        admit(seen, || tcp.conns.iter().find(|(id, c)| !c.dialled && !ep.is_bound_conn(**id) && c.evict.is_some()).map(|(id, _)| *id))
    }

    pub(super) async fn tcp_accept_loop(self: Rc<Self>, listener: glommio::net::TcpListener) {
        loop {
            let stream = match listener.accept().await {
                Ok(s) => s,
                Err(error) => {
                    self.warn_limited(|| tracing::warn!(%error, "SIP TCP accept failed"));
                    glommio::timer::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(addr) = stream.peer_addr() else { continue };
            if !self.is_active() {
                self.counters.borrow_mut().standby_dropped += 1;
                continue; // a standby serves no SIP: dropping it closes it
            }
            match self.tcp_admission(addr.ip()) {
                Admission::Take => {}
                Admission::TakeEvicting(oldest) => {
                    self.counters.borrow_mut().tcp_evicted += 1;
                    self.tcp.borrow_mut().evict(oldest);
                    self.warn_limited(|| tracing::warn!(%addr, "SIP TCP: unregistered connections full; the oldest closed for a new one"));
                }
                Admission::Refuse(why) => {
                    self.counters.borrow_mut().tcp_refused += 1;
                    self.warn_limited(|| tracing::warn!(%addr, why, "SIP TCP connection refused"));
                    continue; // dropping it closes it
                }
            }
            self.counters.borrow_mut().tcp_accepted += 1;
            let (tx, rx) = local_channel::new_bounded::<Vec<u8>>(SIP_TCP_SEND_QUEUE_MSGS_MAX);
            let (evict, evicted) = futures_channel::oneshot::channel();
            let id = {
                let mut tcp = self.tcp.borrow_mut();
                let id = tcp.new_id();
                tcp.insert(id, Conn { tx, ip: addr.ip(), dialled: false, evict: Some(evict) });
                id
            };
            glommio::spawn_local(self.clone().tcp_serve(stream, id, addr, rx, evicted)).detach();
        }
    }

    /// Queues bytes for the connection dialled to `addr`, dialling it first when there is
    /// none; false when its queue is full.
    pub(super) fn tcp_send_out(self: &Rc<Self>, addr: SocketAddr, bytes: Vec<u8>) -> bool {
        let mut tcp = self.tcp.borrow_mut();
        if let Some(&id) = tcp.dialled.get(&addr) {
            return tcp.send(id, bytes);
        }
        if tcp.dialled.len() >= SIP_TCP_DIALLED_MAX
            && let Some((&old_addr, &oldest)) = tcp.dialled.iter().min_by_key(|(_, id)| **id)
        {
            tcp.dialled.remove(&old_addr);
            tcp.evict(oldest);
        }
        let (tx, rx) = local_channel::new_bounded::<Vec<u8>>(SIP_TCP_SEND_QUEUE_MSGS_MAX);
        let (evict, evicted) = futures_channel::oneshot::channel();
        let id = tcp.new_id();
        let queued = tx.try_send(bytes).is_ok();
        tcp.conns.insert(id, Conn { tx, ip: addr.ip(), dialled: true, evict: Some(evict) });
        tcp.dialled.insert(addr, id);
        drop(tcp);
        glommio::spawn_local(self.clone().tcp_dial(addr, id, rx, evicted)).detach();
        queued
    }

    /// The endpoint gave up on the connection dialled to `to`: it closes (the next message
    /// dials again).
    pub(super) fn tcp_drop_out(&self, to: SocketAddr) {
        let mut tcp = self.tcp.borrow_mut();
        if let Some(id) = tcp.dialled.remove(&to) {
            tracing::info!(addr = %to, "SIP TCP connection to an upstream dropped (it stopped answering)");
            tcp.evict(id);
        }
    }

    async fn tcp_dial(self: Rc<Self>, addr: SocketAddr, id: ConnId, rx: local_channel::LocalReceiver<Vec<u8>>, evicted: futures_channel::oneshot::Receiver<()>) {
        match glommio::net::TcpStream::connect_timeout(addr, SIP_TCP_CONNECT_TIMEOUT).await {
            Ok(stream) => {
                self.counters.borrow_mut().tcp_dialled += 1;
                tracing::info!(%addr, "SIP TCP connection to an upstream made");
                self.tcp_serve(stream, id, addr, rx, evicted).await;
            }
            Err(error) => {
                self.counters.borrow_mut().tcp_dial_failed += 1;
                self.warn_limited(|| tracing::warn!(%addr, %error, "SIP TCP connection to an upstream could not be made"));
                self.tcp.borrow_mut().remove(id);
                self.command(Command::DialFailed { to: addr, error: error.to_string() });
            }
        }
    }

    /// Writes what is queued for connection `id` and reads what comes over it, until either
    /// side ends it; then the endpoint is told.
    async fn tcp_serve(
        self: Rc<Self>,
        stream: glommio::net::TcpStream,
        id: ConnId,
        addr: SocketAddr,
        rx: local_channel::LocalReceiver<Vec<u8>>,
        evicted: futures_channel::oneshot::Receiver<()>,
    ) {
        let (reader, mut writer) = futures_lite::io::split(stream);
        let writer_task = glommio::spawn_local(async move {
            while let Some(bytes) = rx.recv().await {
                if writer.write_all(&bytes).await.is_err() {
                    break;
                }
            }
        })
        .detach();
        self.tcp_read(reader, id, addr, evicted).await;
        self.tcp.borrow_mut().remove(id);
        self.command(Command::ConnClosed { conn: id });
        writer_task.cancel();
    }

    async fn tcp_read(
        self: &Rc<Self>,
        mut reader: impl futures_lite::AsyncRead + Unpin,
        id: ConnId,
        addr: SocketAddr,
        mut evicted: futures_channel::oneshot::Receiver<()>,
    ) {
        let peer = Peer::Tcp { conn: id, addr };
        let dialled = self.tcp.borrow().conns.get(&id).is_some_and(|c| c.dialled);
        let bound_idle = self.endpoint.borrow().config().keepalive_interval * SIP_TCP_BOUND_IDLE_KEEPALIVES;
        let accepted = Instant::now();
        let mut last_message = accepted;
        let mut partial_since: Option<Instant> = None;
        let mut framer = StreamFramer::default();
        let mut buf = vec![0u8; SIP_TCP_READ_BYTES];
        loop {
            let now = Instant::now();
            let bound = self.endpoint.borrow().is_bound_conn(id);
            let deadline = match partial_since {
                Some(t) => t + SIP_TCP_HEAD_TIMEOUT,
                None if dialled => last_message + SIP_TCP_DIALLED_IDLE_TIMEOUT,
                None if bound => last_message + bound_idle,
                None => accepted + SIP_TCP_UNBOUND_IDLE_TIMEOUT,
            };
            if now >= deadline {
                self.counters.borrow_mut().tcp_timeouts += 1;
                tracing::info!(%addr, bound, partial = partial_since.is_some(), "SIP TCP connection timed out; closing");
                return;
            }
            let read = async { Some(reader.read(&mut buf).await) };
            // The sender lives as long as the connection's entry: only an eviction fires it.
            let eviction = async {
                let _ = (&mut evicted).await;
                None
            };
            let read = glommio::timer::timeout(deadline - now, async { Ok(futures_lite::future::or(read, eviction).await) }).await;
            let n = match read {
                Err(_) => continue, // the deadline is looked at again (a device may have registered)
                Ok(None) => {
                    if !dialled {
                        tracing::info!(%addr, "SIP TCP connection closed for a newer one (unregistered connections full)");
                    }
                    return;
                }
                Ok(Some(Ok(0) | Err(_))) => return,
                Ok(Some(Ok(n))) => n,
            };
            framer.push(&buf[..n]);
            let mut completed = false;
            loop {
                match framer.next_message() {
                    Ok(Some(message)) => {
                        completed = true;
                        self.input(|ep, now| ep.handle_datagram(now, peer, &message));
                    }
                    Ok(None) => break,
                    Err(error) => {
                        self.warn_limited(|| tracing::warn!(%addr, %error, "SIP TCP stream unframeable; closing"));
                        return;
                    }
                }
            }
            let now = Instant::now();
            if completed {
                last_message = now;
            }
            partial_since = match (framer.buffered(), completed) {
                (0, _) => None,
                (_, true) => Some(now),
                (_, false) => partial_since.or(Some(now)),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(known_host: bool, from_ip: usize, from_net: usize, unbound: usize, total: usize) -> Seen {
        Seen { known_host, from_ip, from_net, unbound, total }
    }

    #[test]
    fn strangers_are_capped_by_address_network_and_room_and_the_oldest_makes_way() {
        let oldest = || Some(7);
        assert_eq!(admit(seen(false, 0, 0, 0, 0), oldest), Admission::Take);
        assert!(matches!(admit(seen(false, SIP_TCP_UNBOUND_PER_SOURCE_MAX, 40, 100, 100), oldest), Admission::Refuse(_)));
        assert!(matches!(admit(seen(false, 3, SIP_TCP_UNBOUND_PER_NET_MAX, 200, 200), oldest), Admission::Refuse(_)), "a /24 of many hosts");
        // 8,000 unregistered connections from 402 hosts: a newcomer takes the oldest's place.
        assert_eq!(admit(seen(false, 0, 0, SIP_TCP_UNBOUND_CONNS_MAX, SIP_TCP_UNBOUND_CONNS_MAX), oldest), Admission::TakeEvicting(7));
        assert!(matches!(admit(seen(false, 0, 0, 0, SIP_TCP_CONNS_MAX), || None), Admission::Refuse(_)), "all registered devices'");
    }

    #[test]
    fn a_device_host_is_not_held_to_the_strangers_caps() {
        let oldest = || Some(7);
        // Its host is flooded from elsewhere and its own address has many connections (an NVR
        // behind NAT with its cameras): it reconnects all the same.
        assert_eq!(admit(seen(true, 100, 500, SIP_TCP_UNBOUND_CONNS_MAX, SIP_TCP_UNBOUND_CONNS_MAX + 5), oldest), Admission::Take);
        assert_eq!(admit(seen(true, 0, 0, SIP_TCP_UNBOUND_CONNS_MAX, SIP_TCP_CONNS_MAX), oldest), Admission::TakeEvicting(7));
    }

    #[test]
    fn networks_are_slash_24_and_slash_64() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(net_of(ip("192.0.2.77")), ip("192.0.2.0"));
        assert_eq!(net_of(ip("::ffff:192.0.2.77")), ip("192.0.2.0"));
        assert_eq!(net_of(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
    }
}
