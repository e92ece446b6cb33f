//! The single RTP port (`rtp.port`) on a media shard. UDP: the kernel already chose this shard
//! by the datagram's SSRC (`steer`), so each goes straight to its stream here. TCP: the kernel
//! spreads connections over the shards' listeners by address, so a connection's first RFC 4571
//! frame names its SSRC and the connection moves to the owning shard (an fd and the bytes read,
//! in an owned message). A device that answered another SSRC than it was offered (`y=`) sends
//! to that SSRC's shard; it forwards to the stream's (an alias, one message per datagram,
//! dropped and counted when the queue is full). A device that ignores the offered SSRC sends
//! one nobody announced: while a device's stream waits for its first packet, every shard knows
//! the device's address (a learner), and an unknown SSRC from there becomes an alias of that
//! stream, which learns it (only when one stream waits there: two channels of one NVR would be
//! a guess). Other SSRCs no stream expects are dropped and counted, or with
//! `rtp.accept_unknown_ssrc` open a stream of their own.

use super::msg::{RtpTcpConn, ShardMsg, StreamSpec};
use super::recv_batch::{GatherPause, RecvBatch};
use super::source::{Origin, rtp_ssrc};
use super::stream::{Stream, UDP_DATAGRAM_BYTES_MAX, UDP_DATAGRAMS_PER_TURN_MAX, open_stream, track_tcp_conn};
use super::{Shard, TurnBudget, owner_of};
use crate::proto::rtp::RTP_PACKET_BYTES_MAX;
use crate::proto::ssrc::stream_id;
use bytes::Bytes;
use futures_lite::AsyncReadExt;
use glommio::net::{TcpListener, TcpStream, UdpSocket};
use serde::Serialize;
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A TCP connection must deliver its first whole RFC 4571 frame within this, or it is closed.
pub const TCP_FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections per shard still to send their first frame; more are closed at once.
pub const TCP_PENDING_PER_SHARD_MAX: usize = 256;
/// Streams opened for unknown SSRCs never take a shard past this many streams.
pub const UNKNOWN_SSRC_SHARD_STREAMS_MAX: usize = 4_096;
/// SSRCs a shard forwards to streams on other shards (devices that answered another SSRC).
pub const ALIASES_PER_SHARD_MAX: usize = 4_096;
/// Streams waiting for their device's first packet, per shard (each stream is known to every
/// shard); more are not learned from (logged).
pub const LEARNERS_PER_SHARD_MAX: usize = 4_096;
/// A learner its stream never took back (a lost message) is forgotten after this.
pub const LEARNER_TTL: Duration = Duration::from_secs(120);
/// Unknown SSRCs whose arrival times are kept (to tell a stale sender from a device starting).
pub const UNKNOWN_SSRCS_TRACKED_MAX: usize = 4_096;
/// An unknown SSRC not seen for this long is forgotten (its sender stopped).
const UNKNOWN_SSRC_FORGET_AFTER: Duration = Duration::from_secs(10);
/// Packets of an unknown SSRC shown to a stream that does not learn (`ssrc_check: strict`), so
/// it can tell the operator what arrived.
const NOTICES_PER_LEARNER_MAX: u32 = 4;
// A stale sender is told from a device starting for as long as a stream may wait.
const _: () = assert!(UNKNOWN_SSRC_FORGET_AFTER.as_secs() < LEARNER_TTL.as_secs() && NOTICES_PER_LEARNER_MAX >= 1);
/// Hand-offs of one TCP connection: to its SSRC's owner, and for an alias on to the stream's.
const TCP_HOPS_MAX: u8 = 2;
/// RFC 4571 length prefix.
const FRAME_LENGTH_BYTES: usize = 2;
const RTP_HEADER_BYTES: usize = 12;

/// What the single port took and dropped on one shard (counters only grow).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SinglePortCounters {
    pub datagrams: u64,
    /// Too short or not RTP version 2.
    pub not_rtp: u64,
    /// An SSRC no stream expects (dropped; with `accept_unknown_ssrc` only past the limits).
    pub unknown_ssrc: u64,
    /// Streams opened for unknown SSRCs.
    pub unknown_opened: u64,
    /// Datagrams sent to the stream's shard for an alias, and those dropped (queue full).
    pub forwarded: u64,
    pub forward_dropped: u64,
    pub tcp_accepted: u64,
    /// Connections moved to the shard owning their SSRC.
    pub tcp_handed_over: u64,
    /// Closed before a first frame (timeout, garbage, too many pending, refused by the stream).
    pub tcp_dropped: u64,
    /// Unknown SSRCs from a device whose stream waits: learned, shown (strict), or not learned
    /// (several streams wait on that address, or the SSRC was arriving before they did).
    pub learned: u64,
    pub shown: u64,
    pub ambiguous: u64,
}

struct Learner {
    stream_ssrc: u32,
    shard: usize,
    learn: bool,
    /// When the stream started waiting: an SSRC arriving since before then is no device
    /// starting to send but a stale sender (a stream of that device closed earlier), not learned.
    since: std::time::Instant,
    until: std::time::Instant,
    notices: u32,
}

/// Where an unknown SSRC from a waiting device goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    /// To this stream, which learns it (an alias is kept).
    Learn { stream_ssrc: u32, shard: usize },
    /// To this stream, which refuses it but says what arrived.
    Show { stream_ssrc: u32, shard: usize },
    /// Several streams learn from that address: none is chosen.
    Ambiguous,
    /// The SSRC was arriving before the stream waited: a stale sender, not learned.
    Stale,
}

#[derive(Default)]
pub struct SinglePort {
    counters: Cell<SinglePortCounters>,
    tcp_pending: Cell<usize>,
    /// Device SSRC -> (stream SSRC, the stream's shard).
    aliases: RefCell<super::SsrcMap<(u32, usize)>>,
    /// Device address -> streams waiting for its first packet, oldest first.
    learners: RefCell<std::collections::HashMap<std::net::IpAddr, Vec<Learner>>>,
    learner_count: Cell<usize>,
    /// Unknown SSRCs: (first seen, last seen).
    unknown_seen: RefCell<super::SsrcMap<(std::time::Instant, std::time::Instant)>>,
}

impl SinglePort {
    pub fn counters(&self) -> SinglePortCounters {
        self.counters.get()
    }

    fn count(&self, f: impl FnOnce(&mut SinglePortCounters) -> &mut u64) -> u64 {
        let mut c = self.counters.get();
        let n = f(&mut c);
        *n += 1;
        let n = *n;
        self.counters.set(c);
        n
    }

    /// Packets of `device_ssrc` arriving here go to `stream_ssrc` on `shard`.
    pub fn alias(&self, device_ssrc: u32, stream_ssrc: u32, shard: usize) {
        let mut aliases = self.aliases.borrow_mut();
        if aliases.len() >= ALIASES_PER_SHARD_MAX && !aliases.contains_key(&device_ssrc) {
            tracing::warn!(device_ssrc, stream_ssrc, "single RTP port: too many aliased SSRCs; this one is not forwarded");
            return;
        }
        aliases.insert(device_ssrc, (stream_ssrc, shard));
    }

    /// A stream of `shard` waits for the first packet from `ip`.
    pub fn add_learner(&self, ip: std::net::IpAddr, stream_ssrc: u32, shard: usize, learn: bool) {
        let (ip, now) = (crate::proto::ipnet::canonical(ip), std::time::Instant::now());
        let mut learners = self.learners.borrow_mut();
        if self.learner_count.get() >= LEARNERS_PER_SHARD_MAX {
            learners.retain(|_, list| {
                list.retain(|l| l.until > now);
                !list.is_empty()
            });
            self.learner_count.set(learners.values().map(Vec::len).sum());
        }
        if self.learner_count.get() >= LEARNERS_PER_SHARD_MAX {
            tracing::warn!(stream_ssrc, %ip, "single RTP port: too many streams wait for their device; this one learns no SSRC");
            return;
        }
        let list = learners.entry(ip).or_default();
        list.retain(|l| l.stream_ssrc != stream_ssrc);
        list.push(Learner { stream_ssrc, shard, learn, since: now, until: now + LEARNER_TTL, notices: 0 });
        self.learner_count.set(learners.values().map(Vec::len).sum());
    }

    pub fn remove_learner(&self, stream_ssrc: u32) {
        let mut learners = self.learners.borrow_mut();
        learners.retain(|_, list| {
            list.retain(|l| l.stream_ssrc != stream_ssrc);
            !list.is_empty()
        });
        self.learner_count.set(learners.values().map(Vec::len).sum());
    }

    /// When the unknown `ssrc` was first seen (now, if it is new), kept bounded.
    fn first_seen(&self, ssrc: u32, now: std::time::Instant) -> std::time::Instant {
        let mut seen = self.unknown_seen.borrow_mut();
        if seen.len() >= UNKNOWN_SSRCS_TRACKED_MAX && !seen.contains_key(&ssrc) {
            seen.retain(|_, (_, last)| now.duration_since(*last) < UNKNOWN_SSRC_FORGET_AFTER);
            if seen.len() >= UNKNOWN_SSRCS_TRACKED_MAX {
                seen.clear(); // a flood of made-up SSRCs: start over rather than grow
            }
        }
        let entry = seen.entry(ssrc).or_insert((now, now));
        if now.duration_since(entry.1) >= UNKNOWN_SSRC_FORGET_AFTER {
            entry.0 = now; // it stopped and started again
        }
        entry.1 = now;
        entry.0
    }

    /// Which waiting stream an unknown `ssrc` from `ip` goes to, if any.
    fn waiting_at(&self, ip: std::net::IpAddr, ssrc: u32) -> Option<Waiting> {
        let now = std::time::Instant::now();
        let first_seen = self.first_seen(ssrc, now);
        let mut learners = self.learners.borrow_mut();
        let list = learners.get_mut(&crate::proto::ipnet::canonical(ip))?;
        list.retain(|l| l.until > now);
        let mut learning = list.iter().filter(|l| l.learn);
        match (learning.next(), learning.next()) {
            (Some(_), Some(_)) => return Some(Waiting::Ambiguous),
            (Some(l), None) if first_seen < l.since => return Some(Waiting::Stale),
            (Some(l), None) => return Some(Waiting::Learn { stream_ssrc: l.stream_ssrc, shard: l.shard }),
            _ => {}
        }
        let l = list.iter_mut().find(|l| l.notices < NOTICES_PER_LEARNER_MAX)?;
        l.notices += 1;
        Some(Waiting::Show { stream_ssrc: l.stream_ssrc, shard: l.shard })
    }

    pub fn unalias(&self, device_ssrc: u32, stream_ssrc: u32) {
        let mut aliases = self.aliases.borrow_mut();
        if aliases.get(&device_ssrc).is_some_and(|(s, _)| *s == stream_ssrc) {
            aliases.remove(&device_ssrc);
        }
    }
}

/// The stream this shard delivers `ssrc` to: the one it owns, or one opened for it when
/// unknown SSRCs are accepted. None: counted and logged (at 1, 2, 4, ... drops).
fn stream_for(shard: &Rc<Shard>, ssrc: u32, peer: SocketAddr) -> Option<Rc<Stream>> {
    if let Some(s) = shard.streams.borrow().get(&ssrc) {
        return Some(s.clone());
    }
    let config = &shard.config.rtp;
    if config.accept_unknown_ssrc && shard.streams.borrow().len() < UNKNOWN_SSRC_SHARD_STREAMS_MAX {
        debug_assert_eq!(owner_of(ssrc, shard.media_shards), shard.index, "steered to its owner");
        let spec = StreamSpec {
            ssrc,
            port: None,
            sdp: config.unknown_ssrc_sdp.clone(),
            is_static: false,
            unsolicited: true,
            any_ssrc: false,
            history: None,
            channel_id: None,
            source: Default::default(),
            drop_audio: false,
            local: false,
            name: None,
        };
        match open_stream(shard, spec) {
            Ok(_) => {
                shard.single_port.count(|c| &mut c.unknown_opened);
                tracing::info!(shard = shard.index, ssrc, stream_id = %stream_id(ssrc), %peer, "single RTP port: stream opened for an unknown SSRC");
                return shard.streams.borrow().get(&ssrc).cloned();
            }
            Err(error) => tracing::warn!(shard = shard.index, ssrc, ?error, "single RTP port: cannot open a stream for an unknown SSRC"),
        }
    }
    let n = shard.single_port.count(|c| &mut c.unknown_ssrc);
    if n.is_power_of_two() {
        tracing::warn!(shard = shard.index, ssrc, stream_id = %stream_id(ssrc), %peer, unknown_ssrc = n, "single RTP port: packet of an unknown SSRC dropped");
    }
    None
}

/// The shard's UDP socket of the single port, forever: what is queued is taken in batches
/// (recvmmsg) into a slab that packets are cut from, one after the other; when nothing is, the
/// ring waits for the next datagram (a peek, which leaves it queued).
pub async fn udp_loop(shard: Rc<Shard>, socket: UdpSocket) {
    let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
    let mut batch = RecvBatch::new(UDP_DATAGRAM_BYTES_MAX);
    let mut turn = TurnBudget::new(UDP_DATAGRAMS_PER_TURN_MAX);
    let mut gather = GatherPause::new(shard.config.rtp.gather_us);
    loop {
        let n = match batch.recv(fd) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if gather.pause_if_flowing().await {
                    continue;
                }
                if let Err(error) = socket.peek_from(&mut [0u8; 1]).await {
                    tracing::warn!(shard = shard.index, %error, "single RTP port: waiting for datagrams failed");
                    glommio::timer::sleep(Duration::from_millis(100)).await;
                }
                continue;
            }
            Err(error) => {
                tracing::warn!(shard = shard.index, %error, "single RTP port receive failed");
                glommio::timer::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        gather.took();
        let mut now = Instant::now();
        for i in 0..n {
            let (packet, peer) = batch.take(i);
            shard.single_port.count(|c| &mut c.datagrams);
            on_datagram(&shard, packet, peer, now);
            if turn.spend().await {
                now = Instant::now();
            }
        }
    }
}

fn on_datagram(shard: &Rc<Shard>, data: Bytes, peer: SocketAddr, now: Instant) {
    let Some(ssrc) = rtp_ssrc(&data) else {
        let n = shard.single_port.count(|c| &mut c.not_rtp);
        if n.is_power_of_two() {
            tracing::warn!(shard = shard.index, %peer, not_rtp = n, "single RTP port: datagram that is not RTP dropped");
        }
        return;
    };
    // The stream's own SSRC first: that is nearly every packet; aliases and strangers after.
    let stream = shard.streams.borrow().get(&ssrc).cloned();
    if let Some(s) = stream {
        return s.on_packet(data, "udp", Origin::Udp(peer), now);
    }
    let alias = shard.single_port.aliases.borrow().get(&ssrc).copied();
    if let Some((stream_ssrc, to)) = alias {
        return forward(shard, stream_ssrc, to, data, peer);
    }
    if waiting_device(shard, ssrc, peer, data.clone()) {
        return;
    }
    if let Some(s) = stream_for(shard, ssrc, peer) {
        s.on_packet(data, "udp", Origin::Udp(peer), now);
    }
}

fn forward(shard: &Rc<Shard>, stream_ssrc: u32, to: usize, data: Bytes, peer: SocketAddr) {
    if to == shard.index {
        return forwarded(shard, stream_ssrc, data, peer);
    }
    let sent = shard.try_send(to, ShardMsg::Forwarded { ssrc: stream_ssrc, data, peer });
    shard.single_port.count(|c| if sent { &mut c.forwarded } else { &mut c.forward_dropped });
}

/// An unknown SSRC from a device whose stream waits for its first packet: to that stream
/// (learned, with an alias kept for the next packets; or shown). False: nobody waits there.
fn waiting_device(shard: &Rc<Shard>, ssrc: u32, peer: SocketAddr, data: Bytes) -> bool {
    let Some(waiting) = shard.single_port.waiting_at(peer.ip(), ssrc) else { return false };
    match waiting {
        Waiting::Learn { stream_ssrc, shard: to } => {
            shard.single_port.count(|c| &mut c.learned);
            shard.single_port.alias(ssrc, stream_ssrc, to);
            forward(shard, stream_ssrc, to, data, peer);
        }
        Waiting::Show { stream_ssrc, shard: to } => {
            shard.single_port.count(|c| &mut c.shown);
            forward(shard, stream_ssrc, to, data, peer);
        }
        Waiting::Ambiguous | Waiting::Stale => {
            let n = shard.single_port.count(|c| &mut c.ambiguous);
            if n.is_power_of_two() {
                tracing::warn!(shard = shard.index, ssrc, %peer, ambiguous = n, ?waiting, "single RTP port: an unknown SSRC from an address where streams wait is not learned (several wait, or it was arriving before they did: a stale sender)");
            }
            return false;
        }
    }
    true
}

/// A datagram another shard forwarded for an alias of one of this shard's streams.
pub fn forwarded(shard: &Shard, ssrc: u32, data: Bytes, peer: SocketAddr) {
    if let Some(s) = shard.streams.borrow().get(&ssrc) {
        s.on_packet(data, "udp", Origin::Udp(peer), Instant::now());
    }
}

/// The shard's TCP listener of the single port, forever.
pub async fn tcp_accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        let conn = match listener.accept().await {
            Ok(c) => c,
            Err(error) => {
                tracing::warn!(shard = shard.index, %error, "single RTP port: TCP accept failed");
                glommio::timer::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        shard.single_port.count(|c| &mut c.tcp_accepted);
        if shard.single_port.tcp_pending.get() >= TCP_PENDING_PER_SHARD_MAX {
            shard.single_port.count(|c| &mut c.tcp_dropped);
            tracing::warn!(shard = shard.index, "single RTP port: too many TCP connections without a first frame; closing one");
            continue;
        }
        shard.single_port.tcp_pending.set(shard.single_port.tcp_pending.get() + 1);
        let shard = shard.clone();
        glommio::spawn_local(async move {
            let mut conn = conn;
            let first = first_frame(&mut conn).await;
            shard.single_port.tcp_pending.set(shard.single_port.tcp_pending.get() - 1);
            let peer = conn.peer_addr().ok();
            match first {
                Ok((ssrc, read)) => route_tcp(&shard, conn, ssrc, read, 0).await,
                Err(why) => {
                    shard.single_port.count(|c| &mut c.tcp_dropped);
                    tracing::warn!(shard = shard.index, ?peer, why, "single RTP port: TCP connection closed before its first RTP frame");
                }
            }
        })
        .detach();
    }
}

/// Reads until the first RFC 4571 frame is whole: its SSRC, and every byte read.
async fn first_frame(conn: &mut TcpStream) -> Result<(u32, Vec<u8>), &'static str> {
    conn.set_read_timeout(Some(TCP_FIRST_FRAME_TIMEOUT)).map_err(|_| "cannot set a read timeout")?;
    let mut read = Vec::with_capacity(RTP_PACKET_BYTES_MAX);
    let mut chunk = [0u8; 2_048];
    loop {
        if read.len() >= FRAME_LENGTH_BYTES {
            let length = usize::from(u16::from_be_bytes([read[0], read[1]]));
            if length < RTP_HEADER_BYTES {
                return Err("first frame too short for RTP");
            }
            if read.len() >= FRAME_LENGTH_BYTES + length {
                let ssrc = rtp_ssrc(&read[FRAME_LENGTH_BYTES..FRAME_LENGTH_BYTES + length]).ok_or("first frame is not RTP")?;
                conn.set_read_timeout(None).map_err(|_| "cannot clear the read timeout")?;
                return Ok((ssrc, read));
            }
        }
        // Never past one frame plus a chunk: the length prefix bounds what is kept.
        debug_assert!(read.len() < FRAME_LENGTH_BYTES + RTP_PACKET_BYTES_MAX + chunk.len());
        match conn.read(&mut chunk).await {
            Ok(0) => return Err("closed"),
            Ok(n) => read.extend_from_slice(&chunk[..n]),
            Err(_) => return Err("read failed or timed out"),
        }
    }
}

/// Takes the connection to the stream of `ssrc`: here, or on the shard owning that SSRC, or,
/// for an alias kept here, on the stream's shard (so at most two hand-offs).
async fn route_tcp(shard: &Rc<Shard>, conn: TcpStream, ssrc: u32, read: Vec<u8>, hops: u8) {
    let mut owner = owner_of(ssrc, shard.media_shards);
    let mut ssrc = ssrc;
    if owner == shard.index && !shard.streams.borrow().contains_key(&ssrc) {
        let alias = shard.single_port.aliases.borrow().get(&ssrc).copied();
        let waiting = || conn.peer_addr().ok().and_then(|p| shard.single_port.waiting_at(p.ip(), ssrc));
        match alias {
            Some((stream_ssrc, to)) => (ssrc, owner) = (stream_ssrc, to),
            // The stream learns from the connection's first packet (or says what arrived).
            None => {
                if let Some(Waiting::Learn { stream_ssrc, shard: to } | Waiting::Show { stream_ssrc, shard: to }) = waiting() {
                    (ssrc, owner) = (stream_ssrc, to);
                }
            }
        }
    }
    if owner == shard.index || hops >= TCP_HOPS_MAX {
        return attach_tcp(shard, conn, ssrc, read);
    }
    // SAFETY: dup returns a new fd we own (or -1, checked); the original closes with `conn`.
    let dup = unsafe { libc::dup(std::os::fd::AsRawFd::as_raw_fd(&conn)) };
    drop(conn);
    if dup < 0 {
        shard.single_port.count(|c| &mut c.tcp_dropped);
        tracing::warn!(shard = shard.index, ssrc, "single RTP port: cannot hand a TCP connection over (dup failed)");
        return;
    }
    // SAFETY: `dup` is a valid fd (checked above) that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(dup) };
    shard.single_port.count(|c| &mut c.tcp_handed_over);
    if shard.send(owner, ShardMsg::RtpTcp(RtpTcpConn { fd, ssrc, read, hops: hops + 1 })).await.is_err() {
        tracing::warn!(from = shard.index, to = owner, "single RTP port: hand-off channel closed; TCP connection dropped");
    }
}

/// A TCP connection whose first frame carries `ssrc`, on the shard owning it.
pub fn attach_tcp(shard: &Rc<Shard>, conn: TcpStream, ssrc: u32, read: Vec<u8>) {
    let peer = conn.peer_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    match stream_for(shard, ssrc, peer) {
        Some(stream) if track_tcp_conn(&stream, conn, read) => {}
        _ => {
            shard.single_port.count(|c| &mut c.tcp_dropped);
        }
    }
}

/// A connection another shard handed over (its first frame named an SSRC of this shard's, or
/// one of its aliases).
pub fn tcp_arrived(shard: &Rc<Shard>, handed: RtpTcpConn) {
    use std::os::fd::IntoRawFd;
    // SAFETY: the fd is a connected TCP socket handed to this executor alone.
    let conn = unsafe { TcpStream::from_raw_fd(handed.fd.into_raw_fd()) };
    let shard = shard.clone();
    glommio::spawn_local(async move { route_tcp(&shard, conn, handed.ssrc, handed.read, handed.hops).await }).detach();
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEVICE: [u8; 4] = [10, 0, 0, 8];

    #[test]
    fn an_unknown_ssrc_from_a_waiting_device_goes_to_its_stream_unless_stale_or_ambiguous() {
        let port = SinglePort::default();
        let device = std::net::IpAddr::from(DEVICE);
        // A stale sender of this device was already sending 0xAAAA before the stream waited.
        assert_eq!(port.waiting_at(device, 0xAAAA), None, "nobody waits yet");
        port.add_learner(device, 200_000_002, 2, true);
        assert_eq!(port.waiting_at(device, 0xAAAA), Some(Waiting::Stale));
        // The device starts sending its own SSRC now: learned.
        assert_eq!(port.waiting_at(device, 0x1234), Some(Waiting::Learn { stream_ssrc: 200_000_002, shard: 2 }));
        assert_eq!(port.waiting_at(std::net::IpAddr::from([10, 0, 0, 9]), 0x1235), None, "another address: nobody waits");
        // A second channel of the same NVR waits too: which is which would be a guess.
        port.add_learner(device, 200_000_003, 1, true);
        assert_eq!(port.waiting_at(device, 0x1236), Some(Waiting::Ambiguous));
        port.remove_learner(200_000_002);
        port.remove_learner(200_000_003);
        assert_eq!(port.waiting_at(device, 0x1237), None);
    }

    #[test]
    fn a_strict_stream_is_shown_a_few_packets_then_none() {
        let port = SinglePort::default();
        let device = std::net::IpAddr::from(DEVICE);
        port.add_learner(device, 7, 1, false);
        for _ in 0..NOTICES_PER_LEARNER_MAX {
            assert_eq!(port.waiting_at(device, 0x1234), Some(Waiting::Show { stream_ssrc: 7, shard: 1 }));
        }
        assert_eq!(port.waiting_at(device, 0x1234), None, "enough to say what arrives");
    }

    #[test]
    fn learners_and_unknown_ssrcs_stay_bounded() {
        let port = SinglePort::default();
        for i in 0..(LEARNERS_PER_SHARD_MAX as u32 + 10) {
            port.add_learner(std::net::IpAddr::from(i.to_be_bytes()), i, 1, true);
        }
        assert_eq!(port.learner_count.get(), LEARNERS_PER_SHARD_MAX);
        for ssrc in 0..(UNKNOWN_SSRCS_TRACKED_MAX as u32 * 3) {
            let _ = port.first_seen(ssrc, std::time::Instant::now());
        }
        assert!(port.unknown_seen.borrow().len() <= UNKNOWN_SSRCS_TRACKED_MAX);
    }
}
