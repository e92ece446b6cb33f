//! Sending a stream on as RTP (a node's `startSendRtp` family; cascade to an upper platform,
//! voice to a device): a sender lives on the shard that owns its source stream and takes the
//! stream's frames like a viewer, through a bounded queue to a task that writes to one peer
//! over UDP or TCP (RFC 4571), dialled or accepted. A peer too slow to drain the queue skips to
//! the next keyframe, and one that stays slow is dropped; a UDP peer that stops sending RTCP
//! receiver reports is taken for gone. Every sender's end is reported (`SendStopped`).

use super::Shard;
use super::stream::Stream;
use crate::proto::frame::{Codec, Frame};
use crate::proto::rtp_mux::{RtpMux, RtpMuxSettings};
use futures_channel::oneshot;
use futures_lite::AsyncWriteExt;
use glommio::GlommioError;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::{TcpListener, TcpStream, UdpSocket};
use std::cell::{Cell, RefCell};
use std::net::{IpAddr, SocketAddr};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

/// Senders of one source stream at once.
pub const SENDERS_PER_STREAM_MAX: usize = 8;
/// Packets queued for a sender's peer; past this the sender skips to the next keyframe.
pub const SEND_QUEUE_PACKETS_MAX: usize = 2_048;
/// Skips in a row a sender survives before its peer is taken for too slow.
pub const SEND_SKIPS_MAX: u32 = 8;
/// Waiting for a passive sender's peer (its connection or first UDP packet) and for an active
/// TCP sender's connect, when the caller names no wait (`close_delay_ms`), and at most.
pub const SEND_WAIT_DEFAULT: Duration = Duration::from_secs(5);
pub const SEND_WAIT_MAX: Duration = Duration::from_secs(60);
/// RTCP on UDP: a sender report this often; no packet from the peer's RTCP this long ends it.
pub const RTCP_SR_INTERVAL: Duration = Duration::from_secs(5);
pub const RTCP_PEER_TIMEOUT: Duration = Duration::from_secs(30);
/// TCP: packets gathered into one write, at most.
const TCP_WRITE_BATCH_BYTES_MAX: usize = 64 * 1024;
/// RTCP packets read at most (a receiver report is 32 bytes; anything fits).
const RTCP_READ_BYTES_MAX: usize = 1_500;
const _: () = assert!(SEND_WAIT_DEFAULT.as_millis() <= SEND_WAIT_MAX.as_millis() && RTCP_SR_INTERVAL.as_millis() < RTCP_PEER_TIMEOUT.as_millis());

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendTransport {
    /// To the peer's address (`startSendRtp`, `is_udp=1`).
    Udp(SocketAddr),
    /// Dialled to the peer (`startSendRtp`, `is_udp=0`).
    Tcp(SocketAddr),
    /// To whoever sends the first UDP packet to the sender's port (`startSendRtpPassive`).
    UdpPassive,
    /// To whoever connects to the sender's port (`startSendRtpPassive`, TCP).
    TcpPassive,
}

impl From<crate::proto::sip::endpoint::UpstreamMedia> for SendTransport {
    /// Where a peer that INVITEd for media (an upper platform, a device for a broadcast) wants it.
    fn from(media: crate::proto::sip::endpoint::UpstreamMedia) -> Self {
        use crate::proto::sip::endpoint::UpstreamMedia;
        match media {
            UpstreamMedia::Udp(to) => SendTransport::Udp(to),
            UpstreamMedia::TcpDial(to) => SendTransport::Tcp(to),
            UpstreamMedia::TcpListen => SendTransport::TcpPassive,
        }
    }
}

/// What names a sender among its stream's: the SSRC it sends with (ZLMediaKit's startSendRtp
/// and cascade, where a new sender with an SSRC replaces the old), or the voice broadcast it
/// is (the devices of a broadcast group may all ask for one SSRC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SenderKey {
    Ssrc(u32),
    Broadcast(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendSpec {
    pub key: SenderKey,
    pub mux: RtpMuxSettings,
    pub transport: SendTransport,
    /// The local port (`src_port`); None: one from the shard's RTP ports. A dialled TCP sender
    /// takes the port its connect gets.
    pub src_port: Option<u16>,
    /// How long a passive sender waits for its peer, a dialled one for its connect.
    pub wait: Duration,
    /// UDP: RTCP on the next port (sender reports out; the peer's silence ends the send).
    pub rtcp: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendStarted {
    pub local_port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    NoStream,
    NoAnswer,
    /// `SENDERS_PER_STREAM_MAX` senders already.
    Full,
    Bind(String),
    Connect(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::NoStream => f.write_str("can not find the source stream"),
            SendError::NoAnswer => f.write_str("owning shard did not answer"),
            SendError::Full => write!(f, "the stream has {SENDERS_PER_STREAM_MAX} senders, its most"),
            SendError::Bind(why) => write!(f, "cannot bind the sender's port: {why}"),
            SendError::Connect(why) => write!(f, "connect failed: {why}"),
        }
    }
}

/// How a sender ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendEnd {
    /// Asked to (`stopSendRtp`), or replaced by a sender with its SSRC.
    Stopped,
    SourceClosed,
    /// The peer closed or refused what was sent.
    PeerGone,
    /// No peer within the wait, or its RTCP went silent.
    Timeout,
    /// The peer did not drain its queue.
    SlowPeer,
}

impl SendEnd {
    /// ZLMediaKit's `err` of `on_send_rtp_stopped` (its socket error codes).
    pub fn zlm_err(self) -> i64 {
        match self {
            SendEnd::PeerGone => 1,
            SendEnd::Timeout => 2,
            SendEnd::Stopped | SendEnd::SourceClosed => 6,
            SendEnd::SlowPeer => 7,
        }
    }
}

/// Why the peer could not be reached or written to.
#[derive(Debug)]
enum PeerError {
    /// The sender was stopped while it waited for its peer.
    Stopped,
    /// No peer came within the wait (passive senders).
    NoPeer { wait: Duration },
    /// Accepting or reading the peer's first packet failed.
    Arrival(GlommioError<()>),
    /// A datagram to the peer could not be sent.
    Send { to: SocketAddr, error: GlommioError<()> },
    /// The TCP peer's connection failed under a write.
    TcpGone(std::io::Error),
}

impl std::fmt::Display for PeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerError::Stopped => f.write_str("stopped"),
            PeerError::NoPeer { wait } => write!(f, "no peer within {} ms", wait.as_millis()),
            PeerError::Arrival(e) => e.fmt(f),
            PeerError::Send { to, error } => write!(f, "send to {to}: {error}"),
            PeerError::TcpGone(e) => write!(f, "TCP peer gone: {e}"),
        }
    }
}

/// Why a sender ends, once known (the first reason given stands).
pub type EndCell = Rc<RefCell<Option<(SendEnd, String)>>>;

fn set_end(cell: &EndCell, end: SendEnd, why: &str) {
    cell.borrow_mut().get_or_insert_with(|| (end, why.to_string()));
}

/// A sender ended (to the control executor, which tells whom it concerns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendStopped {
    /// The source stream's SSRC (its key on the shards).
    pub source_ssrc: u32,
    /// The SSRC the sender sent with, and what named it.
    pub send_ssrc: u32,
    pub key: SenderKey,
    pub end: SendEnd,
    pub reason: String,
    /// Packets it sent, and those dropped for a slow peer.
    pub packets: u64,
    pub packets_dropped: u64,
}

/// The stream's side of a sender: frames become packets here, on the packet path.
pub struct Feed {
    pub key: SenderKey,
    mux: RtpMux,
    tx: LocalSender<Vec<u8>>,
    /// Packets go in only once the peer is there (dialled, accepted, heard from).
    connected: Rc<Cell<bool>>,
    skipping: bool,
    skips: u32,
    /// Why the sender ends, for the task's report (set before the feed is dropped).
    why: EndCell,
    /// Dropped with the feed: a task still waiting for its peer stops waiting.
    _cancel: oneshot::Sender<()>,
    dropped: Rc<Cell<u64>>,
}

impl Feed {
    /// Queues the packets of `frames`; false when the sender is to end (its peer stays too
    /// slow, or its task is gone), `why` then set.
    pub fn push(&mut self, frames: &[Frame], video: Option<Codec>, scratch: &mut Vec<Vec<u8>>) -> bool {
        if !self.connected.get() {
            return true;
        }
        for f in frames {
            // After a skip, video resumes at a keyframe (audio frames are each one).
            if self.skipping && !f.keyframe {
                self.dropped.set(self.dropped.get() + 1);
                continue;
            }
            self.skipping = false;
            scratch.clear();
            self.mux.push(f, video, scratch);
            for p in scratch.drain(..) {
                match self.tx.try_send(p) {
                    Ok(()) => {}
                    Err(GlommioError::WouldBlock(_)) => {
                        self.dropped.set(self.dropped.get() + 1);
                        self.skipping = true;
                        self.skips += 1;
                        if self.skips > SEND_SKIPS_MAX {
                            self.end(SendEnd::SlowPeer, &format!("peer too slow: its queue of {SEND_QUEUE_PACKETS_MAX} packets overflowed {} times", self.skips));
                            return false;
                        }
                        break;
                    }
                    Err(_) => {
                        self.end(SendEnd::PeerGone, "sender gone");
                        return false;
                    }
                }
            }
        }
        true
    }

    /// Whether this is the feed whose end is told through `why`.
    pub fn is_for(&self, why: &EndCell) -> bool {
        Rc::ptr_eq(&self.why, why)
    }

    /// Marks why the sender ends; it ends when the feed is dropped.
    pub fn end(&self, end: SendEnd, why: &str) {
        set_end(&self.why, end, why);
    }
}

/// Binds a UDP socket on `ip` at `port`, or at a free port of the shard's pool (taken).
fn bind_udp(shard: &Shard, ip: IpAddr, port: Option<u16>) -> Result<(UdpSocket, u16, bool), SendError> {
    if let Some(port) = port {
        let sock = UdpSocket::bind(SocketAddr::new(ip, port)).map_err(|e| SendError::Bind(format!("{ip}:{port}: {e}")))?;
        return Ok((sock, port, false));
    }
    let candidates: Vec<u16> = shard.ports.borrow().candidates(super::ports::unpredictable_u64()).take(64).collect();
    for port in candidates {
        if let Ok(sock) = UdpSocket::bind(SocketAddr::new(ip, port)) {
            shard.ports.borrow_mut().take(port);
            return Ok((sock, port, true));
        }
    }
    Err(SendError::Bind(format!("no free port in {:?}", shard.ports.borrow().range())))
}

fn bind_tcp(shard: &Shard, ip: IpAddr, port: Option<u16>) -> Result<(TcpListener, u16, bool), SendError> {
    if let Some(port) = port {
        let l = super::ports::tcp_listener(SocketAddr::new(ip, port), false).map_err(|e| SendError::Bind(format!("{ip}:{port}: {e}")))?;
        return Ok((l, port, false));
    }
    let candidates: Vec<u16> = shard.ports.borrow().candidates(super::ports::unpredictable_u64()).take(64).collect();
    for port in candidates {
        if let Ok(l) = super::ports::tcp_listener(SocketAddr::new(ip, port), false) {
            shard.ports.borrow_mut().take(port);
            return Ok((l, port, true));
        }
    }
    Err(SendError::Bind(format!("no free port in {:?}", shard.ports.borrow().range())))
}

/// Where a sender writes.
enum Peer {
    Udp { sock: UdpSocket, to: SocketAddr, rtcp: Option<UdpSocket> },
    Tcp(TcpStream),
    /// Not there yet: accepted or heard from within the wait.
    AwaitTcp(TcpListener),
    AwaitUdp { sock: UdpSocket, rtcp: Option<UdpSocket> },
}

/// Starts a sender of `stream`: binds (or dials) and answers; the peer of a passive sender is
/// waited for afterwards.
pub async fn start(shard: &Rc<Shard>, stream: &Rc<Stream>, spec: SendSpec) -> Result<SendStarted, SendError> {
    if stream.senders_len() >= SENDERS_PER_STREAM_MAX && !stream.has_sender(spec.key) {
        return Err(SendError::Full);
    }
    let ip = shard.config.rtp.listen_ip;
    let wait = spec.wait.min(SEND_WAIT_MAX);
    let rtcp_socket = |port: u16| -> Option<UdpSocket> {
        let bound = UdpSocket::bind(SocketAddr::new(ip, port.checked_add(1)?));
        if let Err(e) = &bound {
            tracing::warn!(port, error = %e, "RTP sender: no RTCP port beside it; its peer's silence is not watched");
        }
        bound.ok()
    };
    let (peer, local_port, pooled) = match spec.transport {
        SendTransport::Udp(to) => {
            let (sock, port, pooled) = bind_udp(shard, ip, spec.src_port)?;
            let rtcp = spec.rtcp.then(|| rtcp_socket(port)).flatten();
            (Peer::Udp { sock, to, rtcp }, port, pooled)
        }
        SendTransport::Tcp(to) => {
            let conn = TcpStream::connect_timeout(to, wait).await.map_err(|e| SendError::Connect(format!("{to}: {e}")))?;
            let port = conn.local_addr().map(|a| a.port()).unwrap_or(0);
            (Peer::Tcp(conn), port, false)
        }
        SendTransport::UdpPassive => {
            let (sock, port, pooled) = bind_udp(shard, ip, spec.src_port)?;
            let rtcp = spec.rtcp.then(|| rtcp_socket(port)).flatten();
            (Peer::AwaitUdp { sock, rtcp }, port, pooled)
        }
        SendTransport::TcpPassive => {
            let (listener, port, pooled) = bind_tcp(shard, ip, spec.src_port)?;
            (Peer::AwaitTcp(listener), port, pooled)
        }
    };
    let (tx, rx) = local_channel::new_bounded(SEND_QUEUE_PACKETS_MAX);
    let (cancel_tx, cancel) = oneshot::channel();
    let connected = Rc::new(Cell::new(matches!(peer, Peer::Udp { .. } | Peer::Tcp(_))));
    let why = Rc::new(RefCell::new(None));
    let dropped = Rc::new(Cell::new(0));
    let feed = Feed {
        key: spec.key,
        mux: RtpMux::new(spec.mux),
        tx,
        connected: connected.clone(),
        skipping: false,
        skips: 0,
        why: why.clone(),
        _cancel: cancel_tx,
        dropped: dropped.clone(),
    };
    if let Some(old) = stream.add_sender(feed) {
        old.end(SendEnd::Stopped, "replaced by a new sender with the same SSRC (or broadcast)");
    }
    let task = SenderTask {
        shard: Rc::downgrade(shard),
        stream: Rc::downgrade(stream),
        source_ssrc: stream.spec.ssrc,
        send_ssrc: spec.mux.ssrc,
        key: spec.key,
        why,
        dropped,
        pooled: pooled.then_some(local_port),
    };
    tracing::info!(ssrc = stream.spec.ssrc, send_ssrc = spec.mux.ssrc, local_port, transport = ?spec.transport, ps = spec.mux.ps, "RTP sender started");
    glommio::spawn_local(task.run(peer, rx, connected, cancel, wait)).detach();
    Ok(SendStarted { local_port })
}

struct SenderTask {
    shard: Weak<Shard>,
    stream: Weak<Stream>,
    source_ssrc: u32,
    send_ssrc: u32,
    key: SenderKey,
    why: EndCell,
    dropped: Rc<Cell<u64>>,
    /// A port of the shard's pool, given back at the end.
    pooled: Option<u16>,
}

impl SenderTask {
    async fn run(self, peer: Peer, rx: LocalReceiver<Vec<u8>>, connected: Rc<Cell<bool>>, cancel: oneshot::Receiver<()>, wait: Duration) {
        let peer = match peer {
            Peer::AwaitTcp(listener) => match await_peer(listener.accept(), cancel, wait).await {
                Ok(conn) => Some(Peer::Tcp(conn)),
                Err(why) => {
                    self.set_why(SendEnd::Timeout, &format!("wait tcp connection timeout: {why}"));
                    None
                }
            },
            Peer::AwaitUdp { sock, rtcp } => {
                let mut first = [0u8; RTCP_READ_BYTES_MAX];
                match await_peer(sock.recv_from(&mut first), cancel, wait).await {
                    Ok((_, to)) => Some(Peer::Udp { sock, to, rtcp }),
                    Err(why) => {
                        self.set_why(SendEnd::Timeout, &format!("wait udp connection timeout: {why}"));
                        None
                    }
                }
            }
            ready => Some(ready),
        };
        let mut packets = 0;
        if let Some(peer) = peer {
            connected.set(true);
            let result = match peer {
                Peer::Udp { sock, to, rtcp } => self.send_udp(&sock, to, rtcp, &rx, &mut packets).await,
                Peer::Tcp(conn) => send_tcp(conn, &rx, &mut packets).await,
                Peer::AwaitTcp(_) | Peer::AwaitUdp { .. } => Ok(()),
            };
            if let Err(why) = result {
                self.set_why(SendEnd::PeerGone, &why.to_string());
            }
        }
        self.finish(packets).await;
    }

    fn set_why(&self, end: SendEnd, why: &str) {
        set_end(&self.why, end, why);
    }

    async fn send_udp(&self, sock: &UdpSocket, to: SocketAddr, rtcp: Option<UdpSocket>, rx: &LocalReceiver<Vec<u8>>, packets: &mut u64) -> Result<(), PeerError> {
        let counters = Rc::new(Cell::new(RtcpCounters::default()));
        let watch = rtcp.map(|r| {
            let rtcp_to = SocketAddr::new(to.ip(), to.port().wrapping_add(1));
            glommio::spawn_local(watch_rtcp(r, rtcp_to, self.send_ssrc, self.key, counters.clone(), self.stream.clone())).detach()
        });
        let result = async {
            while let Some(p) = rx.recv().await {
                sock.send_to(&p, to).await.map_err(|error| PeerError::Send { to, error })?;
                *packets += 1;
                let mut c = counters.get();
                c.packets = c.packets.wrapping_add(1);
                c.octets = c.octets.wrapping_add(p.len().saturating_sub(12) as u32);
                c.rtp_timestamp = p.get(4..8).map_or(0, |t| u32::from_be_bytes([t[0], t[1], t[2], t[3]]));
                counters.set(c);
            }
            Ok(())
        }
        .await;
        if let Some(w) = watch {
            w.cancel();
        }
        result
    }

    /// Out of the stream, its port back to the pool, its end told to the control executor.
    async fn finish(self, packets: u64) {
        if let Some(stream) = self.stream.upgrade() {
            stream.forget_sender(self.key, &self.why);
        }
        let (end, reason) = self.why.borrow().clone().unwrap_or((SendEnd::SourceClosed, "source stream closed".to_string()));
        tracing::info!(ssrc = self.source_ssrc, send_ssrc = self.send_ssrc, packets, dropped = self.dropped.get(), reason, "RTP sender ended");
        let Some(shard) = self.shard.upgrade() else { return };
        if let Some(port) = self.pooled {
            shard.ports.borrow_mut().release(port);
        }
        let stopped = SendStopped { source_ssrc: self.source_ssrc, send_ssrc: self.send_ssrc, key: self.key, end, reason, packets, packets_dropped: self.dropped.get() };
        let _ = shard.send(super::CONTROL, super::msg::ShardMsg::SendStopped(stopped)).await;
    }
}

/// The peer's arrival, unless the feed is dropped (stopped) or `wait` passes first.
async fn await_peer<T>(arrival: impl std::future::Future<Output = glommio::Result<T, ()>>, cancel: oneshot::Receiver<()>, wait: Duration) -> Result<T, PeerError> {
    let arrival = async { arrival.await.map_err(PeerError::Arrival) };
    let cancelled = async {
        let _ = cancel.await;
        Err(PeerError::Stopped)
    };
    let timed = async {
        glommio::timer::sleep(wait).await;
        Err(PeerError::NoPeer { wait })
    };
    futures_lite::future::or(arrival, futures_lite::future::or(cancelled, timed)).await
}

/// Writes the queue's packets with RFC 4571 framing, several to a write.
async fn send_tcp(mut conn: TcpStream, rx: &LocalReceiver<Vec<u8>>, packets: &mut u64) -> Result<(), PeerError> {
    let mut batch = Vec::with_capacity(TCP_WRITE_BATCH_BYTES_MAX);
    while let Some(first) = rx.recv().await {
        batch.clear();
        let mut next = Some(first);
        while let Some(p) = next.take() {
            batch.extend_from_slice(&(p.len() as u16).to_be_bytes());
            batch.extend_from_slice(&p);
            *packets += 1;
            if batch.len() < TCP_WRITE_BATCH_BYTES_MAX {
                next = futures_lite::future::poll_once(rx.recv()).await.flatten();
            }
        }
        conn.write_all(&batch).await.map_err(PeerError::TcpGone)?;
    }
    Ok(())
}

#[derive(Debug, Default, Clone, Copy)]
struct RtcpCounters {
    packets: u32,
    octets: u32,
    rtp_timestamp: u32,
}

/// RTCP beside a UDP sender: a sender report every `RTCP_SR_INTERVAL`; a peer whose RTCP is
/// silent for `RTCP_PEER_TIMEOUT` is gone, and the sender ends.
async fn watch_rtcp(sock: UdpSocket, to: SocketAddr, ssrc: u32, key: SenderKey, counters: Rc<Cell<RtcpCounters>>, stream: Weak<Stream>) {
    let mut heard = Instant::now();
    let mut buf = vec![0u8; RTCP_READ_BYTES_MAX];
    loop {
        let c = counters.get();
        let _ = sock.send_to(&sender_report(ssrc, c), to).await;
        let until = Instant::now() + RTCP_SR_INTERVAL;
        while let Some(left) = until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
            match glommio::timer::timeout(left, async { Ok(sock.recv_from(&mut buf).await.ok()) }).await {
                Ok(Some(_)) => heard = Instant::now(),
                // A read error is no report: the interval is waited out all the same.
                Ok(None) => glommio::timer::sleep(left).await,
                Err(_) => break, // the interval is up
            }
        }
        if heard.elapsed() >= RTCP_PEER_TIMEOUT {
            if let Some(stream) = stream.upgrade() {
                stream.stop_senders(Some(key), SendEnd::Timeout, &format!("no RTCP from the peer for {} s", RTCP_PEER_TIMEOUT.as_secs()));
            }
            return;
        }
    }
}

/// RFC 3550 §6.4.1 sender report without report blocks.
fn sender_report(ssrc: u32, c: RtcpCounters) -> [u8; 28] {
    let since_1900 = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default() + Duration::from_secs(2_208_988_800);
    let frac = ((u64::from(since_1900.subsec_nanos()) << 32) / 1_000_000_000) as u32;
    let mut p = [0u8; 28];
    p[0] = 0x80;
    p[1] = 200;
    p[2..4].copy_from_slice(&6u16.to_be_bytes());
    p[4..8].copy_from_slice(&ssrc.to_be_bytes());
    p[8..12].copy_from_slice(&(since_1900.as_secs() as u32).to_be_bytes());
    p[12..16].copy_from_slice(&frac.to_be_bytes());
    p[16..20].copy_from_slice(&c.rtp_timestamp.to_be_bytes());
    p[20..24].copy_from_slice(&c.packets.to_be_bytes());
    p[24..28].copy_from_slice(&c.octets.to_be_bytes());
    p
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_sender_report_is_rfc_3550s() {
        let sr = super::sender_report(0x0102_0304, super::RtcpCounters { packets: 5, octets: 700, rtp_timestamp: 9 });
        assert_eq!(&sr[..8], &[0x80, 200, 0, 6, 1, 2, 3, 4]);
        assert_eq!(&sr[16..28], &[0, 0, 0, 9, 0, 0, 0, 5, 0, 0, 2, 188]);
    }
}
