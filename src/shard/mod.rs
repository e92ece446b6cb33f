//! Thread-per-core runtime: one glommio executor per media shard (pinned) plus one control
//! executor. Streams live on the shard their SSRC hashes to; executors talk only through
//! bounded channels carrying owned `ShardMsg`s.

pub mod alarm_clip;
mod audio_feed;
pub mod fanout;
pub mod frame_viewers;
pub mod msg;
pub mod pipeline;
pub mod ports;
pub mod pull_feed;
pub mod record;
pub mod record_index;
pub mod retention;
pub mod rtmp;
pub mod rtp_send;
pub mod recv_batch;
pub mod service;
pub mod single_port;
pub mod source;
pub mod steer;
pub mod stream;
pub mod stream_sockets;
pub mod webrtc;

use crate::config::Config;
use glommio::channels::shared_channel::ConnectedSender;
use msg::ShardMsg;
use ports::PortPool;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use stream::Stream;

/// Executor index of the control executor (SIP, REST API); media shards are 1..=n.
pub const CONTROL: usize = 0;
/// Messages queued between any two executors before the sender waits.
pub const MESH_QUEUE_MSGS_MAX: usize = 1024;
/// glommio refuses to start below this locked-memory limit.
pub const MEMLOCK_BYTES_MIN: u64 = 512 * 1024;
const IO_MEMORY_BYTES_MIN: usize = 64 * 1024;

/// Wall-clock milliseconds since the Unix epoch (file names, registry times, Date headers).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Wall-clock seconds since the Unix epoch (play token expiry, hook bodies).
pub fn unix_s() -> u64 {
    unix_ms() / 1000
}

/// Receives taken in a row before a receive loop lets its executor's other tasks run:
/// glommio's receive returns at once while datagrams are queued, so without this a flooded
/// socket would starve everything else on the executor.
pub struct TurnBudget {
    max: usize,
    used: usize,
}

impl TurnBudget {
    pub fn new(max: usize) -> TurnBudget {
        TurnBudget { max: max.max(1), used: 0 }
    }

    /// Call once per receive: yields every `max` calls (and says so: time passed).
    pub async fn spend(&mut self) -> bool {
        self.used += 1;
        if self.used < self.max {
            return false;
        }
        self.used = 0;
        futures_lite::future::yield_now().await;
        true
    }
}

/// Media shard (executor index) owning an SSRC. Fibonacci hashing spreads sequential GB SSRCs;
/// the single RTP port's BPF program computes the same (`steer`).
pub fn owner_of(ssrc: u32, media_shards: usize) -> usize {
    1 + steer::ssrc_bucket(ssrc, media_shards)
}

/// Maps keyed by SSRC, looked up once per packet: FxHash, not the default SipHash.
/// The keys are the shard's own streams, opened by the control plane (or, bounded, for
/// unknown SSRCs when accepted), so senders cannot flood a table with chosen colliding keys.
pub type SsrcMap<V> = HashMap<u32, V, rustc_hash::FxBuildHasher>;

/// One executor's world. Only its own thread touches it.
pub struct Shard {
    pub index: usize,
    pub media_shards: usize,
    pub config: Arc<Config>,
    peers: Vec<Option<ConnectedSender<ShardMsg>>>,
    pub streams: RefCell<SsrcMap<Rc<Stream>>>,
    pub ports: RefCell<PortPool>,
    /// Serves a connection another executor handed over (installed by the runtime, which
    /// knows the HTTP layer; the shard does not).
    pub handoff: std::cell::OnceCell<Box<dyn Fn(msg::HandoffConn)>>,
    /// Cover decodes running at once on this shard's blocking threads.
    pub cover_gate: Rc<glommio::sync::Semaphore>,
    /// Recording files this shard is still writing, and those it closed.
    pub record_writers: Rc<record::RecordWriters>,
    /// On the control executor: what to do with recordings the media shards closed (installed
    /// by the runtime: the control plane publishes them as events).
    pub on_recording_closed: std::cell::OnceCell<Box<dyn Fn(record::RecordInfo)>>,
    /// On the control executor: what to do when a media shard's RTP sender ends (the node
    /// posts `on_send_rtp_stopped`).
    pub on_send_stopped: std::cell::OnceCell<Box<dyn Fn(rtp_send::SendStopped)>>,
    /// On the control executor: what to do when a media shard's viewer wants a keyframe of a
    /// stream (ask the device).
    pub on_keyframe_wanted: std::cell::OnceCell<Box<dyn Fn(u32)>>,
    /// API keys and play secrets this executor checks requests against; a reload (SIGHUP)
    /// sends every executor a new copy.
    pub secrets: RefCell<Arc<crate::auth::Secrets>>,
    /// The HTTPS certificate and key in force (when `http.tls` is set); reloaded like secrets.
    pub tls: RefCell<Option<Arc<rustls::ServerConfig>>>,
    /// The single RTP port's counters and aliases (media shards, when `rtp.port` is set).
    pub single_port: single_port::SinglePort,
    /// The UDP sockets of streams with a port of their own (made with the first such stream).
    pub stream_sockets: std::cell::OnceCell<Rc<stream_sockets::StreamSockets>>,
    /// What the shard's closed streams took, so the shard's totals only grow (metrics).
    pub retired: std::cell::Cell<PacketTotals>,
    /// FLV viewers refused for `media.viewers_per_address_max`.
    pub viewers_refused_per_address: std::cell::Cell<u64>,
    /// WebRTC playback (media shards, when `webrtc.enabled`): the shard's socket and sessions.
    pub webrtc: std::cell::OnceCell<Rc<webrtc::WebRtc>>,
    /// On the control executor: the recordings' retention, as the API shows it.
    pub retention: Rc<RefCell<retention::RetentionStatus>>,
    /// RTMP connections: on the control until they publish, on a media shard while they do.
    pub rtmp: RefCell<rtmp::RtmpCounters>,
}

/// A media shard's figures at one instant: packet counters (closed streams' included, so they
/// only grow), levels, and the single port's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ShardTotals {
    pub shard: usize,
    #[serde(flatten)]
    pub packets: PacketTotals,
    pub streams: usize,
    pub subscribers: usize,
    pub hls_streams: usize,
    pub recordings: usize,
    pub single_port: single_port::SinglePortCounters,
    /// Failed receives on the streams' own UDP sockets (`stream_sockets`).
    pub stream_socket_recv_errors: u64,
    pub viewers_refused_per_address: u64,
    /// WebRTC viewers now, the shard's WebRTC port, and its counters.
    pub webrtc_sessions: usize,
    pub webrtc_port: u16,
    pub webrtc: webrtc::WebRtcCounters,
    pub rtmp: rtmp::RtmpCounters,
}

/// Packet counters summed over streams.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PacketTotals {
    pub packets: u64,
    pub bytes: u64,
    pub lost: u64,
    pub foreign_packets: u64,
}

impl PacketTotals {
    pub fn plus(self, s: &msg::StreamInfo) -> PacketTotals {
        PacketTotals {
            packets: self.packets + s.packets,
            bytes: self.bytes + s.bytes,
            lost: self.lost + s.lost,
            foreign_packets: self.foreign_packets + s.foreign_packets,
        }
    }
}

/// Cover (JPEG) decodes at once per shard.
pub const COVER_DECODES_AT_ONCE: u64 = 1;

impl Shard {
    /// An executor's shard; `peers[i]` reaches executor i (None for itself).
    pub fn new(
        index: usize,
        media_shards: usize,
        config: Arc<Config>,
        secrets: Arc<crate::auth::Secrets>,
        peers: Vec<Option<ConnectedSender<ShardMsg>>>,
    ) -> Shard {
        let ports = PortPool::for_shard(config.rtp.port_min, config.rtp.port_max, index.saturating_sub(1), media_shards);
        let record_writers = Rc::new(record::RecordWriters::new(&config.data_dir));
        Shard {
            index,
            media_shards,
            config,
            peers,
            streams: RefCell::new(SsrcMap::default()),
            ports: RefCell::new(ports),
            handoff: Default::default(),
            cover_gate: Rc::new(glommio::sync::Semaphore::new(COVER_DECODES_AT_ONCE)),
            record_writers,
            on_recording_closed: Default::default(),
            on_send_stopped: Default::default(),
            on_keyframe_wanted: Default::default(),
            secrets: RefCell::new(secrets),
            tls: RefCell::new(None),
            single_port: Default::default(),
            stream_sockets: Default::default(),
            retired: Default::default(),
            viewers_refused_per_address: Default::default(),
            webrtc: Default::default(),
            retention: Default::default(),
            rtmp: Default::default(),
        }
    }

    /// This shard's totals now (see `ShardTotals`).
    pub fn totals(&self) -> ShardTotals {
        let mut t = ShardTotals {
            shard: self.index,
            packets: self.retired.get(),
            single_port: self.single_port.counters(),
            stream_socket_recv_errors: self.stream_sockets.get().map_or(0, |s| s.recv_errors()),
            viewers_refused_per_address: self.viewers_refused_per_address.get(),
            rtmp: *self.rtmp.borrow(),
            ..Default::default()
        };
        if let Some(w) = self.webrtc.get() {
            (t.webrtc_sessions, t.webrtc_port, t.webrtc) = (w.sessions(), w.port(), *w.counters.borrow());
        }
        for s in self.streams.borrow().values() {
            let info = s.info();
            t.packets = t.packets.plus(&info);
            t.streams += 1;
            t.subscribers += info.subscribers;
            t.hls_streams += usize::from(info.hls);
            t.recordings += usize::from(info.recording);
        }
        t
    }

    pub fn is_control(&self) -> bool {
        self.index == CONTROL
    }

    /// Sends to another executor, waiting while its queue is full.
    /// Fails only if that executor is gone (or `to` is this executor).
    pub async fn send(&self, to: usize, msg: ShardMsg) -> Result<(), ()> {
        match self.peers.get(to).and_then(Option::as_ref) {
            Some(tx) => tx.send(msg).await.map_err(|_| ()),
            None => Err(()),
        }
    }

    /// Sends to another executor unless its queue is full (the message is then dropped: for
    /// traffic that must never wait, such as forwarded datagrams). False if not sent.
    pub fn try_send(&self, to: usize, msg: ShardMsg) -> bool {
        self.peers.get(to).and_then(Option::as_ref).is_some_and(|tx| tx.try_send(msg).is_ok())
    }

    /// Sends a request built around a one-shot reply channel to executor `to` and waits for
    /// the answer; None if that executor is gone or dropped the request.
    pub async fn ask<T>(&self, to: usize, request: impl FnOnce(futures_channel::oneshot::Sender<T>) -> ShardMsg) -> Option<T> {
        let (reply, rx) = futures_channel::oneshot::channel();
        self.send(to, request(reply)).await.ok()?;
        rx.await.ok()
    }

    /// Like `ask`, but the request is queued before this returns (or not at all, when the
    /// queue is full): what is sent next from this executor cannot overtake it.
    pub fn ask_now<T>(
        &self,
        to: usize,
        request: impl FnOnce(futures_channel::oneshot::Sender<T>) -> ShardMsg,
    ) -> Option<futures_channel::oneshot::Receiver<T>> {
        let (reply, rx) = futures_channel::oneshot::channel();
        self.peers.get(to).and_then(Option::as_ref)?.try_send(request(reply)).ok()?;
        Some(rx)
    }

    /// `ask` the media shard that owns `ssrc`.
    pub async fn ask_owner<T>(&self, ssrc: u32, request: impl FnOnce(futures_channel::oneshot::Sender<T>) -> ShardMsg) -> Option<T> {
        self.ask(owner_of(ssrc, self.media_shards), request).await
    }

    /// This executor's current keys and play secrets.
    pub fn secrets(&self) -> Arc<crate::auth::Secrets> {
        self.secrets.borrow().clone()
    }

    /// Executors in the mesh (control + media shards).
    pub fn peers_len(&self) -> usize {
        self.peers.len()
    }

    pub fn media_indices(&self) -> std::ops::RangeInclusive<usize> {
        1..=self.media_shards
    }

    /// A media shard's part of a graceful stop: close every stream (viewers get the end,
    /// recordings their last fragment) and wait, bounded, until the files and sidecars are
    /// written.
    pub async fn stop_media(&self, limit: std::time::Duration) {
        let ssrcs: Vec<u32> = self.streams.borrow().keys().copied().collect();
        for ssrc in ssrcs {
            stream::close_stream(self, ssrc, "shutdown");
        }
        let deadline = std::time::Instant::now() + limit;
        while self.record_writers.open.get() > 0 && std::time::Instant::now() < deadline {
            glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
        }
        if self.record_writers.open.get() > 0 {
            tracing::warn!(shard = self.index, files = self.record_writers.open.get(), "recordings still being written at stop");
        }
    }
}

#[derive(Debug)]
pub enum StartError {
    MemlockTooLow {
        limit_bytes: u64,
        needed_bytes: u64,
    },
    Executor(String),
    /// Another gmv holds the data_dir lock or the listen addresses.
    AnotherInstance(String),
    /// Keys, secrets or certificates the config names cannot be read or made.
    Config(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::MemlockTooLow { limit_bytes, needed_bytes } => write!(
                f,
                "locked-memory limit (RLIMIT_MEMLOCK, `ulimit -l`) is {} KiB but io_uring needs at least {} KiB; \
                 raise it with `ulimit -l unlimited` (or LimitMEMLOCK=infinity in the systemd unit, or memlock in /etc/security/limits.conf)",
                limit_bytes / 1024,
                needed_bytes / 1024
            ),
            StartError::Executor(e) => write!(f, "cannot start executor: {e}"),
            StartError::AnotherInstance(e) | StartError::Config(e) => write!(f, "{e}"),
        }
    }
}
impl std::error::Error for StartError {}

pub fn memlock_limit_bytes() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return 0;
    }
    lim.rlim_cur
}

/// Registered-buffer memory per executor: the configured amount, shrunk so all executors fit
/// in the locked-memory limit (glommio falls back to unregistered buffers if registration fails).
pub fn plan_io_memory(configured_bytes: usize, executors: usize, limit_bytes: u64) -> Result<usize, StartError> {
    if limit_bytes < MEMLOCK_BYTES_MIN {
        return Err(StartError::MemlockTooLow { limit_bytes, needed_bytes: MEMLOCK_BYTES_MIN });
    }
    let share = (limit_bytes / 2 / executors.max(1) as u64).min(usize::MAX as u64) as usize;
    Ok(configured_bytes.min(share).max(IO_MEMORY_BYTES_MIN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_spreads_sequential_ssrcs() {
        let mut counts = [0usize; 5];
        for ssrc in 100_000_000..100_001_000u32 {
            let o = owner_of(ssrc, 4);
            assert!((1..=4).contains(&o));
            counts[o] += 1;
        }
        assert!(counts[1..].iter().all(|&c| c > 200), "{counts:?}");
    }

    #[test]
    fn io_memory_fits_memlock() {
        assert_eq!(plan_io_memory(1 << 20, 3, 8 << 20).unwrap(), 1 << 20);
        assert_eq!(plan_io_memory(10 << 20, 5, 8 << 20).unwrap(), (8 << 20) / 2 / 5);
        let e = plan_io_memory(1 << 20, 3, 64 * 1024).unwrap_err();
        assert!(e.to_string().contains("ulimit -l"), "{e}");
    }
}
