//! Owned messages between executors (bounded shared channels; no shared state).

use futures_channel::oneshot;
use serde::Serialize;
use std::os::fd::OwnedFd;

/// An accepted connection moved to the executor that owns what it asks for, with its request
/// and what was read past it.
#[derive(Debug)]
pub struct HandoffConn {
    pub fd: OwnedFd,
    /// Some(the client's address): `fd` is one end of a socket pair the sending executor
    /// relays (it keeps the client's TLS session); None: `fd` is the client's TCP connection.
    pub relayed_for: Option<std::net::IpAddr>,
    /// Requests served on the connection before this one.
    pub served: u32,
    pub head: crate::proto::http_head::RequestHead,
    pub rest: Vec<u8>,
    /// What the receiver serves, already authorised by the sender; None: the request is
    /// routed there as it came (the API, node calls and hooks on the control executor).
    pub serve: Option<Served>,
}

/// A stream request authorised where it arrived, for the stream's own shard to serve as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Served {
    /// Live FLV; `websocket`: the handshake's accept value when it asked for one.
    /// `hevc_legacy`: H.265 tags in the legacy codec-id-12 form (`flv::legacy_hevc`).
    Flv { ssrc: u32, websocket: Option<String>, hevc_legacy: bool },
    /// The live stream as fragmented MP4 or MPEG-TS (a node's `.live.mp4`, `.live.ts`).
    Live { ssrc: u32, websocket: Option<String>, format: crate::proto::live_mux::LiveFormat },
    /// An HLS playlist or segment of the stream.
    Hls { ssrc: u32, file: String },
    /// The stream's cover.
    Cover { ssrc: u32 },
    /// A WHEP offer for the stream (its SDP read), answered with a WebRTC session sending it
    /// from `candidate_ip`; `peer` is the client's address (for the per-address limit).
    /// `zlm`: answered as ZLMediaKit's `/index/api/webrtc` (JSON), not as WHEP. `talk`: a WHIP
    /// offer of a microphone for the (talk) stream, answered with a session taking it.
    Whep { ssrc: u32, offer: String, candidate_ip: std::net::IpAddr, peer: std::net::IpAddr, zlm: bool, talk: bool },
    /// The WHEP DELETE of a session of the stream.
    WhepClose { ssrc: u32, session: String },
}

/// An RTP-over-TCP connection of the single port, moved to the shard owning the SSRC of its
/// first frame, with every byte read from it so far.
#[derive(Debug)]
pub struct RtpTcpConn {
    pub fd: OwnedFd,
    pub ssrc: u32,
    pub read: Vec<u8>,
    /// Hand-offs so far (to the SSRC's owner, then for an alias to the stream's shard).
    pub hops: u8,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamSpec {
    pub ssrc: u32,
    pub port: Option<u16>,
    pub sdp: Option<String>,
    /// Static (config) streams are never closed for idleness.
    pub is_static: bool,
    /// Opened for an SSRC nobody announced (`rtp.accept_unknown_ssrc`): undescribed dynamic
    /// payload types are guessed from their bytes.
    pub unsolicited: bool,
    /// Takes the first SSRC that arrives (a node API `openRtpServer` without `ssrc`); such a
    /// stream has a port of its own even when `rtp.port` is set (the single port routes by SSRC).
    pub any_ssrc: bool,
    /// Whom it takes media from: a device's stream only from the device's addresses (and, on
    /// the single port, an SSRC the device chose learned from them); others from anyone.
    pub source: super::source::SourceRule,
    /// The GB28181 channel it carries (kept in recording sidecars for the channel timeline).
    pub channel_id: Option<String>,
    /// A device recording played back or downloaded (retimed; a download is written to
    /// `data_dir/downloads/{stem}.mp4` and lives until the control plane closes it).
    pub history: Option<History>,
    /// Video only: audio is dropped on arrival (a node's `only_track=2`).
    pub drop_audio: bool,
    /// Fed in-process (a broadcast's announcement, `ShardMsg::FeedAudio`; an RTMP publisher):
    /// no port, and no packet from the network is taken, even one with its SSRC on the single
    /// port.
    pub local: bool,
    /// What it is called where it came from: `{app}/{stream}` of an RTMP publisher.
    pub name: Option<String>,
}

/// What a stream is to do once it is published (a node's `on_publish` answer).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishOrder {
    /// Drop the audio from now on (`enable_audio: false`).
    pub drop_audio: bool,
    /// Record it, a file per this span (`enable_mp4`, `mp4_max_second`); None: not asked to
    /// record (a recording already on goes on).
    pub record_file_span: Option<std::time::Duration>,
}

/// What a device's answer tells its stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expectation {
    /// The SSRC it said it sends (`y=`), when another than offered.
    pub device_ssrc: Option<u32>,
    /// Where its media comes from (its signalling and SDP addresses).
    pub rule: Option<super::source::SourceRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum History {
    Playback,
    /// `resume`: the file is there (a download interrupted by a restart): go on with it.
    Download {
        stem: String,
        #[serde(skip)]
        resume: Option<super::record::WholeFile>,
    },
}

/// What changed in a playback, after the device took the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaybackChange {
    /// Paused streams are not closed for idleness.
    Paused(bool),
    /// Scale in hundredths: the stream's clock runs at 1/scale.
    Scale(u16),
    /// The device restarts from another position: its timestamps jump.
    Seeked,
    /// A download resumed by a new INVITE: the device may send from a new address and starts
    /// its sequence numbers over; the GOP not yet written is dropped (`media_ms` goes back to
    /// its start) so the device can send it again whole.
    Resumed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    Exists,
    BadSdp(String),
    NoPort(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Exists => f.write_str("a stream with this SSRC is open"),
            OpenError::BadSdp(why) => write!(f, "bad SDP: {why}"),
            OpenError::NoPort(why) => write!(f, "no port: {why}"),
        }
    }
}

/// Why a shard could not do what was asked of one of its streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamCallError {
    NoStream,
    /// The owning shard did not answer (it is gone or its queue is full).
    NoAnswer,
    Snapshot(crate::snapshot::SnapshotError),
    /// TCP active: the device's media port did not take the connection.
    Connect(String),
    /// TCP: the stream has as many connections as it takes.
    TcpConnsFull,
}

impl std::fmt::Display for StreamCallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamCallError::NoStream => f.write_str("no such stream"),
            StreamCallError::NoAnswer => f.write_str("owning shard did not answer"),
            StreamCallError::Snapshot(e) => e.fmt(f),
            StreamCallError::Connect(why) => write!(f, "connect failed: {why}"),
            StreamCallError::TcpConnsFull => f.write_str("the stream has as many TCP connections as it takes"),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StreamInfo {
    pub stream_id: String,
    /// `{app}/{stream}` of a published (RTMP) stream.
    pub name: Option<String>,
    pub ssrc: u32,
    pub shard: usize,
    pub port: u16,
    /// "ps", "h264", "h265": what the RTP payload carries.
    pub payload: String,
    pub transport: Option<&'static str>,
    /// Where its packets come from (the locked source), once one is locked.
    pub peer: Option<std::net::SocketAddr>,
    pub video_codec: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub audio_codec: Option<String>,
    pub bitrate_kbps: u64,
    pub packets: u64,
    pub bytes: u64,
    pub lost: u64,
    pub rtp_errors: u64,
    pub demux_errors: u64,
    pub frames: u64,
    pub video_frames: u64,
    pub keyframes: u64,
    /// Media time between the last two keyframes, ms.
    pub gop_ms: u64,
    /// Pictures per second, from the last two pictures' decode times (0: fewer than two yet).
    pub fps: f64,
    /// Packets dropped: from another source than the locked one, or with an SSRC this stream
    /// does not expect.
    pub foreign_packets: u64,
    /// SSRC changes followed (from the locked source, after a run of packets).
    pub ssrc_changes: u64,
    /// SSRCs taken from a device that sent another than it was offered.
    pub ssrc_learned: u64,
    /// Locks moved from a silent source to the device sending from another port.
    pub source_moves: u64,
    /// Where media is taken from ("anywhere", or the device's addresses).
    pub source: String,
    /// While no packet was taken: why, in words an operator can act on.
    pub no_media: Option<String>,
    /// Pictures leave on the RTP marker instead of one frame later (see `AuAssembler`).
    pub low_latency: bool,
    /// HLS segments are being made (someone asked for the playlist recently).
    pub hls: bool,
    /// Since the latest HLS request (a player asks every segment or so).
    pub hls_request_ms_ago: Option<u64>,
    /// An MP4 file is being written.
    pub recording: bool,
    /// Recording is on (its file opens at the next keyframe) and has not failed.
    pub record_on: bool,
    /// "playback" or "download" for device recordings.
    pub history: Option<&'static str>,
    pub paused: bool,
    /// Device media time received, jumps left out (a download's progress).
    pub media_ms: u64,
    /// Bytes handed to the recording's writer, and its file.
    pub record_bytes: u64,
    pub record_file: Option<String>,
    /// Why recording stopped on its own (a write failed, e.g. the disk is full).
    pub record_error: Option<String>,
    pub subscribers: usize,
    /// RTP over TCP connections it holds (accepted or dialled).
    pub tcp_conns: usize,
    /// RTP senders sending it on (cascade, voice).
    pub senders: usize,
    pub is_static: bool,
    pub age_ms: u64,
    pub last_packet_ms_ago: Option<u64>,
}

#[derive(Debug)]
pub enum ShardMsg {
    Http(HandoffConn),
    /// An RTMP publisher whose publish token verified, for the shard owning its stream.
    Rtmp(super::rtmp::RtmpConn),
    RtpTcp(RtpTcpConn),
    /// Single port: packets of `device_ssrc` (steered to this shard) belong to `stream_ssrc` on
    /// `shard`; forward them there.
    Alias {
        device_ssrc: u32,
        stream_ssrc: u32,
        shard: usize,
    },
    Unalias {
        device_ssrc: u32,
        stream_ssrc: u32,
    },
    /// A datagram of an alias, for the stream `ssrc` of the receiving shard.
    Forwarded {
        ssrc: u32,
        data: bytes::Bytes,
        peer: std::net::SocketAddr,
    },
    /// Send the stream on as RTP (`rtp_send`); replies once bound (or dialled).
    StartSend {
        ssrc: u32,
        spec: super::rtp_send::SendSpec,
        reply: oneshot::Sender<Result<super::rtp_send::SendStarted, super::rtp_send::SendError>>,
    },
    /// Ends the stream's senders with `send_ssrc` (None: all); replies how many, None for an
    /// unknown stream.
    StopSend {
        ssrc: u32,
        key: Option<super::rtp_send::SenderKey>,
        reply: oneshot::Sender<Option<usize>>,
    },
    /// A sender ended (to the control executor).
    SendStopped(super::rtp_send::SendStopped),
    /// To the control: a viewer of stream `ssrc` wants a keyframe (a WebRTC viewer joined, or
    /// its browser lost a picture); the device playing it is asked for one.
    KeyframeWanted { ssrc: u32 },
    /// RTP ports are taken from `min..=max` from now on (this shard its slice of it).
    PortRange {
        min: u16,
        max: u16,
        reply: oneshot::Sender<()>,
    },
    /// This media shard's totals, taken at one instant.
    ShardTotals {
        reply: oneshot::Sender<super::ShardTotals>,
    },
    /// Reloaded API keys, play secrets and HTTPS certificate (SIGHUP); the reply says they
    /// are in force.
    Reload {
        secrets: std::sync::Arc<crate::auth::Secrets>,
        tls: Option<std::sync::Arc<rustls::ServerConfig>>,
        reply: oneshot::Sender<()>,
    },
    /// Opens a pull source's stream (`pull_feed`); replies with the socket end its frames
    /// are written to.
    OpenPulled {
        spec: StreamSpec,
        /// How the source is carried (`tcp`, `udp`) and what it is (`rtsp`, `rtmp`, `flv`,
        /// `hls`), as the stream's info shows.
        transport: &'static str,
        format: &'static str,
        reply: oneshot::Sender<Result<(StreamInfo, std::os::fd::OwnedFd), OpenError>>,
    },
    OpenStream {
        spec: StreamSpec,
        reply: oneshot::Sender<Result<StreamInfo, OpenError>>,
    },
    CloseStream {
        ssrc: u32,
        reply: oneshot::Sender<bool>,
    },
    ListStreams {
        reply: oneshot::Sender<Vec<StreamInfo>>,
    },
    StreamInfo {
        ssrc: u32,
        reply: oneshot::Sender<Option<StreamInfo>>,
    },
    /// Plays G.711 A-law audio into a `local` stream at its real pace (20 ms packets), then
    /// closes it; false for an unknown or non-local stream.
    FeedAudio {
        ssrc: u32,
        alaw: Vec<u8>,
        reply: oneshot::Sender<bool>,
    },
    /// Connect the stream to a device's TCP media port (GB28181 TCP active).
    ConnectTcp {
        ssrc: u32,
        addr: std::net::SocketAddr,
        reply: oneshot::Sender<Result<(), StreamCallError>>,
    },
    /// A JPEG of the latest keyframe (also kept as the cover).
    Snapshot {
        ssrc: u32,
        reply: oneshot::Sender<Result<bytes::Bytes, StreamCallError>>,
    },
    /// The device answered for the stream `ssrc`: take the SSRC it named too, and media from
    /// where its answer says (see `Expectation`). Replies whether the stream exists.
    Expect {
        ssrc: u32,
        expect: Expectation,
        reply: oneshot::Sender<bool>,
    },
    /// Single port: a stream of `shard` waits for the first packet from `ip` (a device that
    /// may send another SSRC than offered). Unknown SSRCs from there go to it: to learn when
    /// `learn`, else a few, so it can say what arrives.
    Learner {
        ip: std::net::IpAddr,
        stream_ssrc: u32,
        shard: usize,
        learn: bool,
    },
    /// The stream took its first packet, or closed: it waits no more.
    Unlearner {
        stream_ssrc: u32,
    },
    /// A playback was paused, resumed, seeked or sped up; replies whether the stream exists.
    Playback {
        ssrc: u32,
        change: PlaybackChange,
        reply: oneshot::Sender<bool>,
    },
    /// A media shard closed a recording file (to the control executor).
    RecordingClosed(super::record::RecordInfo),
    /// A node's stream was published: what its `on_publish` answer asked. Replies whether the
    /// stream exists.
    Publishing {
        ssrc: u32,
        order: PublishOrder,
        reply: oneshot::Sender<bool>,
    },
    /// Start/stop recording; replies None for an unknown stream, else whether it changed.
    Record {
        ssrc: u32,
        on: bool,
        reply: oneshot::Sender<Option<bool>>,
    },
    /// An alarm of the stream's channel: an alarm clip starts or goes on; replies None for an
    /// unknown stream, else whether a clip started.
    Alarm {
        ssrc: u32,
        alarm_id: u64,
        post: std::time::Duration,
        reply: oneshot::Sender<Option<bool>>,
    },
}
