//! The GB28181 SIP endpoint, sans-IO in the quinn-proto shape. Inputs: `handle_datagram`
//! (a UDP datagram or one framed TCP message), `handle_timeout`, `handle_command`. After each
//! input the driver drains `poll_transmit` and `poll_event` until empty, then sleeps until
//! `poll_timeout`. Time is always passed in; nothing here reads a clock, does IO or logs.
//!
//! Inside: RFC 3261 client and server transactions, registrations with digest nonces bound to
//! their source, device liveness, queries matched by (device, CmdType, SN), and per-channel
//! play state (pending, live) with dialogs. Only an authenticated REGISTER binds a device to
//! an address or connection; every other message claiming to be that device must come from
//! there.

mod asks;
mod broadcast;
pub use broadcast::{BROADCAST_INVITE_WAIT, BROADCASTS_MAX, BroadcastCodec, BroadcastEnd, BroadcastHandle, BroadcastInvite};
mod challenge;
pub use challenge::{RATE_NETWORKS_MAX, RateLimit, RateLimits};
mod control;
mod device;
mod messages;
mod play;
mod query;
mod records;
mod registrar;
mod rng;
mod subscribe;
mod transaction;
mod upstream;
mod upstream_subs;
pub use upstream::{
    CATALOG_GROUPS_MAX, CATALOG_ITEMS_PER_MESSAGE, CatalogGroup, ChannelIds, Charset, REGISTER_RETRY_MAX, REGISTER_RETRY_MIN, Shared, UPSTREAM_CALLS_MAX, UPSTREAMS_MAX, UpstreamCallHandle, UpstreamConfig,
    UpstreamEnd, UpstreamMedia, UpstreamMediaAnswer, UpstreamPlay, UpstreamRecords, UpstreamRefusal, UpstreamSession, UpstreamState, UpstreamStatus, business_group, id_type,
};
pub use transaction::{LATENCY_BOUNDS_MS, Latencies, LatencyHistogram, TIMED_METHODS};

pub use asks::{ASK_ANSWER_TIMEOUT, ASKS_IN_FLIGHT_MAX, Answer, DeviceAsk, PRESETS_MAX};
pub use challenge::{AUTH_FAILURES_MAX, CHALLENGE_TTL, CHALLENGES_MAX};
pub use control::{CONTROLS_IN_FLIGHT_MAX, ControlError, ControlHandle, DeviceCommand};
pub use device::{CHANNELS_PER_DEVICE_MAX, DEVICES_MAX, Device};
pub use play::{MediaTransport, PlayError, PlayHandle, PlayKind, PlayStart, SESSIONS_MAX, Session, SubStreamAttr};
pub use query::{QUERY_ANSWER_TIMEOUT, QueryCmd};
pub use records::{RECORD_ITEMS_MAX, RECORD_QUERIES_MAX, RecordList, RecordType, Recording};
pub use subscribe::{POSITION_INTERVAL_S, SUBSCRIBE_EXPIRES_S_MIN, SUBSCRIBE_REFRESH_MARGIN, SubKind};
pub use transaction::{CLIENT_TRANSACTIONS_MAX, T1, T2, TRANSACTION_TIMEOUT};

use super::SipMsg;
use super::build::{OutRequest, response};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A TCP connection, numbered by the driver.
pub type ConnId = u64;
/// Transmits and events queued before the driver drains them; past this they are dropped
/// and counted (a driver drains after every input, so this is a bug guard).
pub const OUTPUTS_QUEUED_MAX: usize = 65_536;
/// Housekeeping (liveness, queries, expiry) runs this often.
pub const TICK: Duration = Duration::from_secs(1);
/// Registration length when the device names none, and the most granted.
pub const REGISTER_EXPIRES_DEFAULT_S: u32 = 3600;
pub const REGISTER_EXPIRES_MAX_S: u32 = 86_400;

/// Longest device or channel id taken (GB28181 ids are 20 digits; some devices use others).
pub const ID_CHARS_MAX: usize = 64;
/// Draws of a new SSRC before one in use is taken anyway (the shard then refuses it and the
/// caller draws again); with 9,999 values and at most a few thousand sessions, rarely past 2.
const SSRC_DRAWS_MAX: usize = 16;

/// Whether `id` may name a device or channel: it goes into request URIs, headers and SDP, so
/// nothing that could end or split them (found by the sip_endpoint fuzz target: a channel id
/// with CRLF injected headers into the INVITE).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= ID_CHARS_MAX && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Where a SIP message came from / goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    Udp(SocketAddr),
    /// A connection accepted on the SIP TCP listener (responses and requests reuse it).
    Tcp {
        conn: ConnId,
        addr: SocketAddr,
    },
    /// A TCP connection this side opens to the address (an upstream signalled over TCP): the
    /// driver dials it on first use and keeps it; what comes back over it arrives as
    /// `Peer::Tcp` with this address.
    TcpOut(SocketAddr),
}

impl Peer {
    pub fn addr(&self) -> SocketAddr {
        match *self {
            Peer::Udp(a) | Peer::Tcp { addr: a, .. } | Peer::TcpOut(a) => a,
        }
    }

    pub fn transport(&self) -> &'static str {
        match self {
            Peer::Udp(_) => "UDP",
            Peer::Tcp { .. } | Peer::TcpOut(_) => "TCP",
        }
    }

    /// The same sender: the same UDP address, or the same TCP connection (a dialled one is
    /// the connection to its address).
    pub fn same_as(&self, other: &Peer) -> bool {
        match (self, other) {
            (Peer::Udp(a), Peer::Udp(b)) => a == b,
            (Peer::Tcp { conn: a, .. }, Peer::Tcp { conn: b, .. }) => a == b,
            (Peer::TcpOut(a), Peer::Tcp { addr: b, .. } | Peer::TcpOut(b)) | (Peer::Tcp { addr: a, .. }, Peer::TcpOut(b)) => a == b,
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub to: Peer,
    pub bytes: Vec<u8>,
}

/// What the endpoint needs to know of the node (from the engine config).
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    pub server_id: String,
    pub domain: String,
    pub password: String,
    pub device_passwords: BTreeMap<String, String>,
    pub digest_qop: bool,
    /// host:port put in Via and Contact.
    pub local: SocketAddr,
    /// Media address offered in INVITE SDP.
    pub media_ip: String,
    pub keepalive_interval: Duration,
    pub invite_timeout: Duration,
    /// Stop a played channel nobody watches for this long; None keeps it.
    pub no_viewer_stop: Option<Duration>,
    /// Ask DeviceInfo and Catalog again this often; None only on registration and sync.
    pub catalog_refresh: Option<Duration>,
    /// Devices' clocks, seconds east of UTC (RecordInfo times are local): the default, and
    /// per device.
    pub utc_offset_s: i32,
    pub device_utc_offsets_s: BTreeMap<String, i32>,
    /// How long a RecordInfo answer may take to arrive in full.
    pub record_query_timeout: Duration,
    /// Subscriptions made on every device (`catalog`, `alarm`, `mobile_position`), those of
    /// devices listed apart, and the time asked for each.
    pub subscribe: Vec<String>,
    pub device_subscribe: BTreeMap<String, Vec<String>>,
    pub subscribe_expires_s: u32,
    /// New REGISTER challenges a source gets (the default, and networks set apart).
    pub register_rate: challenge::RateLimits,
    /// Upper platforms this one registers with and shares channels to (cascade).
    pub upstreams: Vec<UpstreamConfig>,
}

impl EndpointConfig {
    pub fn utc_offset_for(&self, device_id: &str) -> i32 {
        self.device_utc_offsets_s.get(device_id).copied().unwrap_or(self.utc_offset_s)
    }

    fn password_for(&self, device_id: &str) -> &str {
        self.device_passwords.get(device_id).unwrap_or(&self.password)
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    pub received: u64,
    pub malformed: u64,
    pub registers: u64,
    pub auth_failures: u64,
    /// Refused: unknown or unregistered senders, full tables.
    pub refused: u64,
    /// REGISTERs dropped because their source was over its challenge rate.
    pub rate_limited: u64,
    /// Messages claiming a registered device from another address or connection.
    pub spoofed: u64,
    pub keepalives: u64,
    pub responses_unmatched: u64,
    pub retransmissions: u64,
    /// Requests that were retransmissions of one already answered.
    pub retransmissions_absorbed: u64,
    pub transactions_timed_out: u64,
    /// MESSAGE bodies longer than their Content-Length said (taken from the datagram).
    pub lenient_bodies: u64,
    pub query_failures: u64,
    pub alarms: u64,
    pub outputs_dropped: u64,
}

/// Why a request from a device was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No registration (or it expired): 403 makes a device register again.
    NotRegistered,
    /// The device is registered from another address or connection.
    WrongSource,
    /// Digest `username` is not the device id in From.
    UsernameMismatch,
    WrongPassword,
    TooManyFailures,
    RegistryFull,
    /// A BYE whose tags do not match the dialog.
    WrongDialog,
    /// A REGISTER answering a nonce that expired or was never issued to it (challenged again).
    StaleNonce,
    /// Its source is over its REGISTER rate (503 with Retry-After; this is said once each time
    /// the limit bites).
    RateLimited,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NotRegistered => "not registered",
            Refusal::WrongSource => "registered from another address",
            Refusal::UsernameMismatch => "digest username is not the From user",
            Refusal::WrongPassword => "wrong password",
            Refusal::TooManyFailures => "too many authentication failures",
            Refusal::RegistryFull => "device registry full",
            Refusal::WrongDialog => "tags do not match the dialog",
            Refusal::StaleNonce => "expired or unknown nonce (challenged again)",
            Refusal::RateLimited => "too many REGISTERs from this address (503, Retry-After; sip.register_rate)",
        }
    }
}

/// Why a play session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    Api,
    DeviceBye,
    StreamGone,
    NoViewers,
    /// The device said the recording it plays or sends has ended (MediaStatus 121).
    EndOfFile,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Api => "stopped",
            EndReason::DeviceBye => "device sent BYE",
            EndReason::StreamGone => "stream closed",
            EndReason::NoViewers => "no viewers",
            EndReason::EndOfFile => "end of recording (MediaStatus 121)",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Registered {
        device_id: String,
        peer: Peer,
        expires_s: u32,
    },
    Unregistered {
        device_id: String,
    },
    Offline {
        device_id: String,
    },
    Refused {
        peer: Peer,
        method: String,
        device_id: Option<String>,
        reason: Refusal,
    },
    Malformed {
        peer: Peer,
        error: String,
    },
    CatalogUpdated {
        device_id: String,
        channels: usize,
        complete: bool,
    },
    DeviceInfoUpdated {
        device_id: String,
    },
    QueryFailed {
        device_id: String,
        cmd: QueryCmd,
        error: String,
        retry_in: Duration,
    },
    /// The persisted registry changed (the driver saves it).
    RegistryChanged,
    /// The device answered 200 and was ACKed; `media` is where to connect for TCP active.
    PlayAnswered {
        handle: PlayHandle,
        session: Box<Session>,
        media: Option<SocketAddr>,
    },
    /// The play failed; `ssrc` is the stream the driver opened for it, to close.
    PlayFailed {
        handle: PlayHandle,
        error: PlayError,
        ssrc: Option<u32>,
    },
    /// A live session ended (BYE sent or received); the driver closes its stream.
    SessionEnded {
        device_id: String,
        channel_id: String,
        ssrc: u32,
        kind: PlayKind,
        reason: EndReason,
    },
    /// A device control request ended: the device's answer, or why there was none.
    ControlDone {
        handle: ControlHandle,
        result: Result<(), ControlError>,
    },
    /// A mobile device's position (MobilePosition notification).
    Position {
        device_id: String,
        position: crate::proto::sip::manscdp::Position,
    },
    /// A device reported an alarm (answered 200 and with a Response).
    Alarm {
        device_id: String,
        alarm: crate::proto::sip::manscdp::Alarm,
    },
    /// An ask ended: the device's answer, or why there was none.
    AskDone {
        handle: ControlHandle,
        result: Result<Answer, ControlError>,
    },
    /// A RecordInfo query ended: the merged answer (maybe incomplete), or why there was none.
    RecordsDone {
        handle: ControlHandle,
        result: Result<RecordList, ControlError>,
    },
    /// The connection dialled to `to` (`Peer::TcpOut`) is no longer trusted (its upstream
    /// stopped answering over it): close it; the next message to `to` dials a new one.
    DropConnection {
        to: SocketAddr,
    },
    /// Registered with an upstream (first, or again after it was lost).
    UpstreamRegistered {
        upstream: String,
    },
    /// A registration upward failed; tried again in `retry_in`.
    UpstreamRegisterFailed {
        upstream: String,
        error: String,
        retry_in: Duration,
    },
    /// A registered upstream was lost (keepalives unanswered, a refresh refused): its
    /// sessions end (each with `UpstreamPlayEnded`).
    UpstreamLost {
        upstream: String,
        error: String,
    },
    /// An upstream asks for a channel's live video: play it, send it on, then answer with
    /// `Command::UpstreamAnswer`.
    UpstreamPlay(Box<UpstreamPlay>),
    /// An upstream asks for a channel's recordings: search, then `Command::UpstreamRecordsAnswer`.
    UpstreamRecords(Box<UpstreamRecords>),
    /// MANSRTSP from above for a playback it asked for: pass it to the device's playback.
    UpstreamPlaybackControl {
        handle: UpstreamCallHandle,
        action: crate::proto::sip::mansrtsp::PlaybackAction,
    },
    /// An upstream session ended from above (BYE, CANCEL, no ACK, upstream lost): stop its
    /// sender.
    UpstreamPlayEnded {
        handle: UpstreamCallHandle,
        reason: UpstreamEnd,
    },
    /// A device INVITEd us for a broadcast's audio: send it, then `Command::BroadcastAnswer`.
    BroadcastInvited(Box<BroadcastInvite>),
    /// A broadcast ended (its sender, if any, is to stop).
    BroadcastEnded {
        handle: BroadcastHandle,
        reason: BroadcastEnd,
    },
}

/// Why a device's channel cannot be asked anything now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unreachable {
    UnknownDevice,
    UnknownChannel,
    Offline,
}

/// Whether a stream still exists on its shard and anyone uses it (FLV or HLS viewers, a
/// recording).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamUse {
    pub ssrc: u32,
    pub in_use: bool,
}

/// What changed in the registry since it was last saved.
#[derive(Debug, Default, Clone)]
pub struct RegistryChanges {
    pub changed: Vec<Device>,
    pub removed: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Play a channel: live, joined to a pending play, or a new one (then open a stream and
    /// send `Invite`, or `Abandon`).
    Play { device_id: String, channel_id: String, transport: MediaTransport, kind: PlayKind },
    /// The stream for a new play is open: send the INVITE offering `port`.
    /// `media_ip`: where the device sends media when not this node's own (`media_ip` of the
    /// config): a media node the stream was placed on.
    Invite { handle: PlayHandle, ssrc: u32, port: u16, media_ip: Option<String> },
    /// The stream for a new play could not be opened.
    Abandon { handle: PlayHandle, error: PlayError },
    /// Stop the live play of a channel.
    Stop { device_id: String, channel_id: String },
    /// Stop the session (live or history) whose stream is `ssrc`.
    StopSession { ssrc: u32 },
    /// MANSRTSP in a playback's dialog; the result comes as `Event::ControlDone`.
    PlaybackControl { ssrc: u32, action: crate::proto::sip::mansrtsp::PlaybackAction },
    /// A request answered by the device's own MESSAGE, for `target` (a channel or the device);
    /// the result comes as `Event::AskDone`.
    Ask { device_id: String, target: String, ask: DeviceAsk },
    /// RecordInfo for a channel over `[start, end]` (unix seconds); the answer comes as
    /// `Event::RecordsDone`.
    Records { device_id: String, channel_id: String, start: i64, end: i64, record_type: RecordType },
    /// Every stream as the shards listed them, asked at `listed_at` (the session check).
    StreamsSeen { listed_at: Instant, streams: Vec<StreamUse> },
    /// Ask DeviceInfo and Catalog again now.
    Sync { device_id: String },
    /// A TCP connection closed: devices bound to it are unreachable.
    ConnClosed { conn: ConnId },
    /// A connection to `to` (`Peer::TcpOut`) could not be made: what was sent over it is lost.
    DialFailed { to: SocketAddr, error: String },
    /// Forget a device: its subscriptions end (`Expires: 0`), its sessions are BYE'd.
    Remove { device_id: String },
    /// Send a DeviceControl to a channel; the result comes as `Event::ControlDone`.
    Control { device_id: String, channel_id: String, command: DeviceCommand },
    /// The answer to `Event::UpstreamPlay`: where the media leaves from, or why not.
    /// `Found(false)`: the session is gone meanwhile (stop what was started).
    UpstreamAnswer { handle: UpstreamCallHandle, result: Result<UpstreamMediaAnswer, UpstreamRefusal> },
    /// This platform's own sources with a GB channel id (pull proxies): the whole list, shared
    /// upward as channels of `local_sources_id` (ids that are not GB ids, or a registered
    /// device's, are left out).
    SetLocalChannels { channels: Vec<crate::proto::sip::manscdp::CatalogItem> },
    /// The recordings found for `Event::UpstreamRecords` (empty when the search failed).
    UpstreamRecordsAnswer { upstream: String, sn: u32, channel_id: String, items: Vec<Recording> },
    /// An upstream session's media stopped here: BYE to the upstream.
    UpstreamHangUp { handle: UpstreamCallHandle },
    /// The recording an upstream's playback or download sends ended at the device: MediaStatus
    /// 121 to the upstream (the BYE follows with `UpstreamHangUp`).
    UpstreamMediaEnd { handle: UpstreamCallHandle },
    /// This platform stops: `Expires: 0` to every upstream, their sessions BYE'd.
    UnregisterUpstreams,
    /// Adds an upstream or changes the one with its id (`Outcome::Found(false)`: already
    /// `UPSTREAMS_MAX`).
    SetUpstream(Box<UpstreamConfig>),
    /// Removes an upstream: its sessions BYE'd, `Expires: 0` when it was registered
    /// (`Outcome::Found(false)`: no such upstream).
    RemoveUpstream { id: String },
    /// Voice broadcast to a device's audio channel: the Broadcast MESSAGE; the device's INVITE
    /// comes as `Event::BroadcastInvited` (`Outcome::Broadcast`).
    Broadcast { device_id: String, channel_id: String },
    /// The answer to `Event::BroadcastInvited`: where the audio leaves from, or why not.
    BroadcastAnswer { handle: BroadcastHandle, result: Result<UpstreamMediaAnswer, UpstreamRefusal> },
    /// Ends a broadcast (BYE to the device once it INVITEd); `Found(false)`: no such broadcast.
    StopBroadcast { handle: BroadcastHandle },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Play(Result<PlayStart, PlayError>),
    /// Stop/Sync: whether there was such a session/device.
    Found(bool),
    Control(Result<ControlHandle, ControlError>),
    Broadcast(Result<BroadcastHandle, ControlError>),
    Done,
}

/// A response the endpoint gives to a request.
struct Reply {
    code: u16,
    reason: &'static str,
    extra: Vec<(&'static str, String)>,
    body: Option<(&'static str, Vec<u8>)>,
}

impl Reply {
    fn status(code: u16) -> Option<Reply> {
        let reason = match code {
            200 => "OK",
            400 => "Bad Request",
            403 => "Forbidden",
            404 => "Not Found",
            415 => "Unsupported Media Type",
            481 => "Call/Transaction Does Not Exist",
            501 => "Not Implemented",
            503 => "Service Unavailable",
            _ => "Unknown",
        };
        Some(Reply { code, reason, extra: Vec::new(), body: None })
    }
}

pub struct Endpoint {
    cfg: EndpointConfig,
    /// `now` at construction and the unix time it stood for (for Date headers, registered_at).
    clock_base: (Instant, u64),
    rng: rng::Rng,
    devices: BTreeMap<String, Device>,
    /// Devices bound to each TCP connection (the driver keeps bound connections longer).
    tcp_bound: HashMap<ConnId, u32>,
    challenges: challenge::Challenges,
    client: transaction::ClientTransactions,
    server: transaction::ServerTransactions,
    plays: play::Plays,
    controls: control::Controls,
    records: records::RecordQueries,
    asks: asks::Asks,
    subscriptions: subscribe::Subscriptions,
    /// Alarms answered 200 whose Response is still to go: (device, SN, alarm's DeviceID).
    alarm_acks: Vec<(String, u32, String)>,
    counters: Counters,
    latencies: transaction::Latencies,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    next_tick: Instant,
    /// Devices changed (or removed) since the registry was last taken for saving.
    registry_dirty: std::collections::BTreeSet<String>,
    /// Upper platforms (cascade) and the media sessions they asked for.
    upstreams: upstream::Upstreams,
    /// Voice broadcasts to devices, from the MESSAGE to the BYE.
    broadcasts: broadcast::Broadcasts,
    /// This platform's own sources (pull proxies with a GB channel id) as a device of its
    /// server id: never registered, always online, its channels shared upward like devices'.
    local_sources: Device,
}

impl Endpoint {
    /// `now` and `unix_ms` are the same moment; `seed` makes tags, branches and nonces (give
    /// it OS randomness: nonces must not be guessable). `devices` come from storage (offline).
    pub fn new(cfg: EndpointConfig, now: Instant, unix_ms: u64, seed: [u8; 16], devices: Vec<Device>) -> Endpoint {
        let devices = devices.into_iter().take(DEVICES_MAX).map(|d| (d.device_id.clone(), d)).collect();
        let register_rate = cfg.register_rate.clone();
        let mut endpoint = Endpoint {
            cfg,
            clock_base: (now, unix_ms),
            rng: rng::Rng::new(seed),
            devices,
            tcp_bound: HashMap::new(),
            challenges: challenge::Challenges::new(register_rate),
            client: Default::default(),
            server: Default::default(),
            plays: Default::default(),
            controls: Default::default(),
            records: Default::default(),
            asks: Default::default(),
            subscriptions: Default::default(),
            alarm_acks: Vec::new(),
            counters: Counters::default(),
            latencies: transaction::Latencies::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            next_tick: now + TICK,
            registry_dirty: Default::default(),
            upstreams: Default::default(),
            broadcasts: Default::default(),
            local_sources: Device::default(),
        };
        endpoint.local_sources.device_id = endpoint.cfg.server_id.clone();
        endpoint.local_sources.info.manufacturer = "gmv".into();
        endpoint.init_upstreams(now);
        endpoint
    }

    /// New digest passwords (a reload); what changed, by device id, for the log. Devices
    /// registered keep their registration; the new password counts from their next REGISTER.
    pub fn set_passwords(&mut self, password: &str, device_passwords: &BTreeMap<String, String>) -> Vec<String> {
        let mut changes = Vec::new();
        if self.cfg.password != password {
            changes.push("sip.password changed".to_string());
        }
        let old = &self.cfg.device_passwords;
        for (id, p) in device_passwords {
            match old.get(id) {
                None => changes.push(format!("sip.device_passwords: {id} added")),
                Some(o) if o != p => changes.push(format!("sip.device_passwords: {id} changed")),
                Some(_) => {}
            }
        }
        for id in old.keys().filter(|id| !device_passwords.contains_key(*id)) {
            changes.push(format!("sip.device_passwords: {id} removed"));
        }
        self.cfg.password = password.to_string();
        self.cfg.device_passwords = device_passwords.clone();
        changes
    }

    /// Where to reach the online device `device_id` about `channel_id` (one of its channels, or
    /// itself; any channel while its catalog is empty).
    fn reachable_channel(&self, now: Instant, device_id: &str, channel_id: &str) -> Result<Peer, Unreachable> {
        if !valid_id(channel_id) {
            return Err(Unreachable::UnknownChannel);
        }
        let d = self.devices.get(device_id).ok_or(Unreachable::UnknownDevice)?;
        if !d.online(now, self.cfg.keepalive_interval) {
            return Err(Unreachable::Offline);
        }
        if !d.channels.is_empty() && !d.channels.contains_key(channel_id) && channel_id != device_id {
            return Err(Unreachable::UnknownChannel);
        }
        // Online implies bound.
        d.binding.ok_or(Unreachable::Offline)
    }

    pub fn config(&self) -> &EndpointConfig {
        &self.cfg
    }

    pub fn unix_ms(&self, now: Instant) -> u64 {
        let (base, unix) = self.clock_base;
        unix + now.saturating_duration_since(base).as_millis() as u64
    }

    // ---- outputs ----

    #[must_use = "what the endpoint wants sent is lost unless the driver sends it"]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    #[must_use = "an event not taken is lost"]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let next = self.client.next_timeout().map_or(self.next_tick, |t| t.min(self.next_tick));
        let next = self.upstream_next_timeout().map_or(next, |t| t.min(next));
        Some(self.broadcast_next_timeout().map_or(next, |t| t.min(next)))
    }

    fn send(&mut self, to: Peer, bytes: Vec<u8>) {
        if self.transmits.len() >= OUTPUTS_QUEUED_MAX {
            self.counters.outputs_dropped += 1;
            return;
        }
        self.transmits.push_back(Transmit { to, bytes });
    }

    fn emit(&mut self, event: Event) {
        if self.events.len() >= OUTPUTS_QUEUED_MAX {
            self.counters.outputs_dropped += 1;
            return;
        }
        self.events.push_back(event);
    }

    // ---- read access for the API ----

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// How long devices took to answer this endpoint's requests, by method.
    pub fn latencies(&self) -> transaction::Latencies {
        self.latencies
    }

    pub fn devices(&self) -> impl Iterator<Item = &Device> {
        self.devices.values()
    }

    pub fn device(&self, device_id: &str) -> Option<&Device> {
        self.devices.get(device_id)
    }

    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    pub fn is_online(&self, device: &Device, now: Instant) -> bool {
        std::ptr::eq(device, &self.local_sources) || device.online(now, self.cfg.keepalive_interval)
    }

    /// This platform's own sources as channels: ids that are no GB-safe ids, or that a
    /// registered device or one of its channels has, are left out (the device's stays what
    /// the id names). One pass over every device's channels, only when the list changes.
    fn set_local_channels(&mut self, channels: Vec<crate::proto::sip::manscdp::CatalogItem>) {
        let mut local: BTreeMap<String, crate::proto::sip::manscdp::CatalogItem> = channels
            .into_iter()
            .filter(|c| valid_id(&c.device_id) && !self.devices.contains_key(&c.device_id))
            .take(device::CHANNELS_PER_DEVICE_MAX)
            .map(|c| (c.device_id.clone(), c))
            .collect();
        for d in self.devices.values() {
            if local.is_empty() {
                break;
            }
            for id in d.channels.keys() {
                local.remove(id);
            }
        }
        self.local_sources.channels = local;
    }

    /// The id this platform's own sources go under (its server id): an upstream session of one
    /// of their channels names it as the device.
    pub fn local_sources_id(&self) -> &str {
        &self.local_sources.device_id
    }

    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.plays.sessions()
    }

    /// A device's subscriptions: (kind, active).
    pub fn subscriptions_of(&self, device_id: &str) -> Vec<(SubKind, bool)> {
        self.subscriptions.of(device_id)
    }

    fn remove_device(&mut self, now: Instant, device_id: &str) -> bool {
        if !self.devices.contains_key(device_id) {
            return false;
        }
        self.unsubscribe_all(now, device_id);
        let sessions: Vec<u32> = self.plays.sessions().filter(|s| s.device_id == device_id).map(|s| s.ssrc).collect();
        for ssrc in sessions {
            self.stop_ssrc(now, ssrc, EndReason::Api);
        }
        self.set_binding(device_id, None);
        self.devices.remove(device_id);
        self.registry_changed(device_id);
        true
    }

    /// Whether a device is bound to this TCP connection (it stays open longer).
    pub fn is_bound_conn(&self, conn: ConnId) -> bool {
        self.tcp_bound.contains_key(&conn)
    }

    /// The devices to persist (changed, removed) since the last call, if any: only those are
    /// copied (a copy of 100,000 devices takes a third of a second; `benches/registry.rs`).
    #[must_use = "changes taken and not saved are lost (give them back with registry_save_failed)"]
    pub fn take_registry_changes(&mut self) -> Option<RegistryChanges> {
        if self.registry_dirty.is_empty() {
            return None;
        }
        let mut changes = RegistryChanges::default();
        for id in std::mem::take(&mut self.registry_dirty) {
            match self.devices.get(&id) {
                Some(d) => changes.changed.push(d.clone()),
                None => changes.removed.push(id),
            }
        }
        Some(changes)
    }

    /// A standby control takes the active one's registry changes: devices as stored (offline
    /// here, since their bindings are the active control's), nothing to save again. A device
    /// bound here (which a standby never has) is left as it is.
    pub fn follow_registry(&mut self, changes: RegistryChanges) -> usize {
        let mut taken = 0;
        for d in changes.changed {
            let bound = self.devices.get(&d.device_id).is_some_and(|known| known.binding.is_some());
            if !bound && (self.devices.contains_key(&d.device_id) || self.devices.len() < DEVICES_MAX) {
                self.devices.insert(d.device_id.clone(), d);
                taken += 1;
            }
        }
        for id in changes.removed {
            if self.devices.get(&id).is_some_and(|known| known.binding.is_none()) {
                self.devices.remove(&id);
                taken += 1;
            }
        }
        taken
    }

    /// The driver could not save these changes: offer them again next time.
    pub fn registry_save_failed(&mut self, changes: &RegistryChanges) {
        let ids = changes.changed.iter().map(|d| d.device_id.clone()).chain(changes.removed.iter().cloned());
        self.registry_dirty.extend(ids);
    }

    /// TCP connections some device is bound to.
    pub fn bound_conn_count(&self) -> usize {
        self.tcp_bound.len()
    }

    fn registry_changed(&mut self, device_id: &str) {
        if self.registry_dirty.is_empty() {
            self.emit(Event::RegistryChanged);
        }
        self.registry_dirty.insert(device_id.to_string());
    }

    /// A GB28181 SSRC for a new stream: live (`0…`) or history (`1…`), its last four digits
    /// drawn unpredictably (from the nonces' keyed generator: someone who knows the RTP port
    /// and the SSRCs handed out so far cannot name the next and send it first), skipping those
    /// of this endpoint's sessions (the owning shard refuses any other in use).
    pub fn next_ssrc(&mut self, kind: PlayKind) -> u32 {
        use crate::proto::ssrc::{GB_HISTORY_SSRC_BASE, GB_SSRC_SEQUENCES, gb_live_ssrc};
        let mut ssrc = 0;
        for _ in 0..SSRC_DRAWS_MAX {
            let sequence = 1 + (self.rng.secret_u64() % u64::from(GB_SSRC_SEQUENCES - 1)) as u32;
            let live = gb_live_ssrc(&self.cfg.domain, sequence);
            ssrc = if kind.is_live() { live } else { live + GB_HISTORY_SSRC_BASE };
            if !self.plays.uses_ssrc(ssrc) {
                break;
            }
        }
        ssrc
    }

    // ---- inputs ----

    pub fn handle_datagram(&mut self, now: Instant, from: Peer, data: &[u8]) {
        self.counters.received += 1;
        if data.iter().all(u8::is_ascii_whitespace) {
            return; // CRLF keep-alive
        }
        let parsed = match from {
            Peer::Udp(_) => super::parse_datagram(data).map(|(msg, fixed)| {
                self.counters.lenient_bodies += u64::from(fixed);
                msg
            }),
            Peer::Tcp { .. } | Peer::TcpOut(_) => super::parse(data),
        };
        match parsed {
            Ok(msg) if msg.is_request() => self.on_request(now, from, &msg, data),
            Ok(msg) => self.on_response(now, from, &msg),
            Err(error) => {
                self.counters.malformed += 1;
                self.emit(Event::Malformed { peer: from, error: error.to_string() });
                // A request we cannot parse still deserves an answer when it can be routed.
                if let Some(bad) = super::build::bad_request_for_unparsed(data, from.addr()) {
                    self.send(from, bad);
                }
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let mut retransmits = Vec::new();
        let finished = self.client.on_timeout(now, &mut retransmits);
        self.counters.retransmissions += retransmits.len() as u64;
        for (to, bytes) in retransmits {
            self.send(to, bytes);
        }
        for f in finished {
            if let transaction::Finished::TimedOut(key, tx) = f {
                self.counters.transactions_timed_out += 1;
                self.on_transaction_done(now, key, tx, None);
            }
        }
        self.upstream_timers(now);
        self.broadcast_timers(now);
        if now >= self.next_tick {
            self.next_tick = now + TICK;
            self.tick(now);
        }
    }

    pub fn handle_command(&mut self, now: Instant, command: Command) -> Outcome {
        match command {
            Command::Play { device_id, channel_id, transport, kind } => Outcome::Play(self.play(now, &device_id, &channel_id, transport, kind)),
            Command::Invite { handle, ssrc, port, media_ip } => {
                self.invite(now, handle, ssrc, port, media_ip.as_deref());
                Outcome::Done
            }
            Command::Abandon { handle, error } => {
                self.abandon(handle, error);
                Outcome::Done
            }
            Command::Stop { device_id, channel_id } => Outcome::Found(self.stop(now, &device_id, &channel_id, EndReason::Api)),
            Command::StopSession { ssrc } => Outcome::Found(self.stop_ssrc(now, ssrc, EndReason::Api)),
            Command::PlaybackControl { ssrc, action } => Outcome::Control(self.playback_control(now, ssrc, action)),
            Command::Ask { device_id, target, ask } => Outcome::Control(self.device_ask(now, &device_id, &target, ask)),
            Command::Records { device_id, channel_id, start, end, record_type } => {
                Outcome::Control(self.record_query(now, &device_id, &channel_id, start, end, record_type))
            }
            Command::StreamsSeen { listed_at, streams } => {
                self.streams_seen(now, listed_at, &streams);
                Outcome::Done
            }
            Command::Sync { device_id } => Outcome::Found(self.sync(now, &device_id)),
            Command::Remove { device_id } => Outcome::Found(self.remove_device(now, &device_id)),
            Command::Control { device_id, channel_id, command } => Outcome::Control(self.device_control(now, &device_id, &channel_id, command)),
            Command::ConnClosed { conn } => {
                self.conn_closed(conn);
                Outcome::Done
            }
            Command::DialFailed { to, error } => {
                self.dial_failed(now, to, error);
                Outcome::Done
            }
            Command::UpstreamAnswer { handle, result } => Outcome::Found(self.upstream_answer(now, handle, result)),
            Command::SetLocalChannels { channels } => {
                self.set_local_channels(channels);
                Outcome::Done
            }
            Command::UpstreamRecordsAnswer { upstream, sn, channel_id, items } => {
                Outcome::Found(self.upstream_records_answer(now, &upstream, sn, &channel_id, &items))
            }
            Command::UpstreamHangUp { handle } => Outcome::Found(self.upstream_hang_up(now, handle)),
            Command::UpstreamMediaEnd { handle } => Outcome::Found(self.upstream_media_end(now, handle)),
            Command::UnregisterUpstreams => {
                self.unregister_upstreams(now);
                Outcome::Done
            }
            Command::SetUpstream(cfg) => Outcome::Found(self.set_upstream(now, *cfg)),
            Command::RemoveUpstream { id } => Outcome::Found(self.remove_upstream(now, &id)),
            Command::Broadcast { device_id, channel_id } => Outcome::Broadcast(self.start_broadcast(now, &device_id, &channel_id)),
            Command::BroadcastAnswer { handle, result } => Outcome::Found(self.broadcast_answer(now, handle, result)),
            Command::StopBroadcast { handle } => Outcome::Found(self.stop_broadcast(now, handle)),
        }
    }

    // ---- dispatch ----

    fn on_request(&mut self, now: Instant, from: Peer, msg: &SipMsg, raw: &[u8]) {
        let method = msg.method().map(|m| m.to_string().to_ascii_uppercase()).unwrap_or_default();
        if method == "ACK" {
            // ACKs to our final answers: an upstream's INVITE, a device's broadcast INVITE.
            if !self.upstream_ack(from, msg) {
                self.broadcast_ack(from, msg);
            }
            return;
        }
        let (Some(call_id), Some((cseq, _))) = (msg.call_id(), msg.cseq()) else {
            self.counters.malformed += 1;
            self.emit(Event::Malformed { peer: from, error: format!("{method} without Call-ID or CSeq") });
            return self.reply(now, from, msg, None, Reply::status(400));
        };
        // RFC 2543 stacks send no branch: their retransmissions share Call-ID and CSeq.
        let branch = msg.branch().unwrap_or(call_id);
        let key = transaction::ServerKey { source: from.addr(), branch, cseq, method: method.clone() };
        if let Some(previous) = self.server.retransmitted(&key) {
            self.counters.retransmissions_absorbed += 1;
            let previous = previous.to_vec();
            return self.send(from, previous);
        }
        let mut registered = None;
        let reply = match self.upstream_sender(msg) {
            Some(i) => self.on_upstream_request(now, from, msg, i, &method, &key),
            None => self.device_request(now, from, msg, raw, &method, &key, &mut registered),
        };
        self.reply(now, from, msg, Some(key), reply);
        self.send_alarm_acks(now);
        self.send_upstream_answers(now);
        // Queries and subscriptions go out after the 200 that registered the device.
        if let Some(device_id) = registered {
            self.run_queries(now, &device_id);
            self.subscribe_all(now, &device_id);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn device_request(&mut self, now: Instant, from: Peer, msg: &SipMsg, raw: &[u8], method: &str, key: &transaction::ServerKey, registered: &mut Option<String>) -> Option<Reply> {
        match method {
            "REGISTER" => self.on_register(now, from, msg, registered),
            "MESSAGE" | "NOTIFY" => self.on_message(now, from, msg, raw),
            "INVITE" => self.on_device_invite(now, from, msg, key),
            "BYE" => match self.on_broadcast_bye(from, msg) {
                Some(reply) => reply,
                None => self.on_bye(now, from, msg),
            },
            "OPTIONS" => Reply::status(200),
            _ => Reply::status(501),
        }
    }

    fn reply(&mut self, now: Instant, to: Peer, msg: &SipMsg, key: Option<transaction::ServerKey>, reply: Option<Reply>) {
        let Some(r) = reply else { return };
        let tag = self.rng.hex();
        let body = r.body.as_ref().map(|(t, b)| (*t, b.as_slice()));
        let extra: Vec<(&str, String)> = r.extra.iter().map(|(k, v)| (*k, v.clone())).collect();
        let bytes = response(msg, to.addr(), r.code, r.reason, &tag[..10], &extra, body);
        if let Some(key) = key {
            self.server.remember(now, key, bytes.clone());
        }
        self.send(to, bytes);
    }

    fn on_response(&mut self, now: Instant, from: Peer, msg: &SipMsg) {
        let (Some(call_id), Some((cseq, method)), Some(status)) = (msg.call_id(), msg.cseq(), msg.status()) else {
            self.counters.responses_unmatched += 1;
            return;
        };
        let key = transaction::TxKey { call_id, cseq, method };
        let Some(tx) = self.client.get(&key) else {
            if status == 200 && key.method == "INVITE" {
                // A 2xx repeated: our ACK was lost (RFC 3261 §13.2.2.4), or it answers an
                // INVITE we gave up on.
                return self.late_invite_ok(now, from, msg, &key);
            }
            self.counters.responses_unmatched += 1;
            return;
        };
        if !tx.to.same_as(&from) {
            self.counters.spoofed += 1;
            return self.emit(Event::Refused {
                peer: from,
                method: format!("{status} {}", key.method),
                device_id: None,
                reason: Refusal::WrongSource,
            });
        }
        if status < 200 && key.method == "INVITE" {
            self.invite_proceeding(now, &key.call_id);
        }
        if let Some(transaction::Finished::Answered(key, tx)) = self.client.on_response(now, &key, status) {
            self.latencies.observe(&key.method, now.saturating_duration_since(tx.started));
            self.on_transaction_done(now, key, tx, Some(msg));
        }
    }

    fn on_transaction_done(&mut self, now: Instant, key: transaction::TxKey, tx: transaction::ClientTx, answer: Option<&SipMsg>) {
        match tx.purpose.clone() {
            transaction::Purpose::Query { device_id, cmd, sn } => {
                let status = answer.and_then(SipMsg::status);
                if !status.is_some_and(|s| (200..300).contains(&s)) {
                    let error = match status {
                        Some(s) => format!("{} query answered {s}", cmd.name()),
                        None => format!("{} query not answered", cmd.name()),
                    };
                    self.query_failed(now, &device_id, cmd, Some(sn), error);
                }
            }
            transaction::Purpose::Invite { handle } => self.invite_done(now, handle, &key, &tx, answer),
            transaction::Purpose::Control { handle } => self.control_done(handle, answer.and_then(SipMsg::status)),
            transaction::Purpose::Subscribe { device_id, kind } => self.subscribe_done(now, &device_id, kind, answer),
            transaction::Purpose::Ask { device_id, cmd_type, sn } => {
                let status = answer.and_then(SipMsg::status);
                if !status.is_some_and(|s| (200..300).contains(&s)) {
                    self.ask_refused(&device_id, cmd_type, sn, status);
                }
            }
            transaction::Purpose::Records { device_id, sn } => {
                let status = answer.and_then(SipMsg::status);
                if !status.is_some_and(|s| (200..300).contains(&s)) {
                    self.record_query_refused(&device_id, sn, status);
                }
            }
            transaction::Purpose::UpstreamRegister { upstream } => self.upstream_register_done(now, upstream, answer),
            transaction::Purpose::UpstreamKeepalive { upstream } => self.upstream_keepalive_done(now, upstream, answer),
            transaction::Purpose::Broadcast { handle } => self.broadcast_message_done(now, handle, answer.and_then(SipMsg::status)),
            transaction::Purpose::Fire => {}
        }
    }

    /// Builds a request to `to_user` at the domain, sent to `peer`.
    #[allow(clippy::too_many_arguments)]
    fn build_request(
        &mut self,
        method: &str,
        to_user: &str,
        peer: Peer,
        call_id: &str,
        from_tag: &str,
        to_tag: Option<&str>,
        cseq: u32,
        branch: &str,
        extra: Vec<(&str, String)>,
        body: Option<(&str, &[u8])>,
    ) -> Vec<u8> {
        let domain = &self.cfg.domain;
        OutRequest {
            method,
            request_uri: format!("sip:{to_user}@{domain}"),
            transport: peer.transport(),
            // As wvp-GB28181-pro writes it to devices: no transport parameter.
            contact_transport: None,
            local: self.cfg.local,
            branch: branch.to_string(),
            from: format!("sip:{}@{domain}", self.cfg.server_id),
            from_tag,
            to: format!("sip:{to_user}@{domain}"),
            to_tag,
            call_id,
            cseq,
            contact_user: &self.cfg.server_id,
            extra,
        }
        .build(body)
    }

    fn new_call_id(&mut self) -> String {
        format!("{}@{}", self.rng.hex(), self.cfg.local.ip())
    }

    /// Sends a request in a client transaction; false when too many are in flight.
    fn start_transaction(
        &mut self,
        now: Instant,
        key: transaction::TxKey,
        to: Peer,
        bytes: Vec<u8>,
        purpose: transaction::Purpose,
        timeout: Duration,
    ) -> bool {
        if !self.client.start(now, key, to, bytes.clone(), purpose, timeout) {
            self.counters.refused += 1;
            return false;
        }
        self.send(to, bytes);
        true
    }

    fn set_binding(&mut self, device_id: &str, binding: Option<Peer>) {
        let Some(d) = self.devices.get_mut(device_id) else { return };
        if let Some(Peer::Tcp { conn, .. }) = d.binding
            && let Some(n) = self.tcp_bound.get_mut(&conn)
        {
            *n -= 1;
            if *n == 0 {
                self.tcp_bound.remove(&conn);
            }
        }
        if let Some(Peer::Tcp { conn, .. }) = binding {
            *self.tcp_bound.entry(conn).or_default() += 1;
        }
        d.binding = binding;
    }

    fn conn_closed(&mut self, conn: ConnId) {
        if self.tcp_bound.remove(&conn).is_none() {
            return;
        }
        for d in self.devices.values_mut() {
            if matches!(d.binding, Some(Peer::Tcp { conn: c, .. }) if c == conn) {
                d.binding = None;
            }
        }
    }

    /// The transactions sent over a connection that could not be made end now, not at their
    /// timeout (the upstreams at that address say why in their state).
    fn dial_failed(&mut self, now: Instant, to: SocketAddr, error: String) {
        self.upstream_dial_failed(to, &error);
        for (key, tx) in self.client.abandon(Peer::TcpOut(to)) {
            self.counters.transactions_timed_out += 1;
            self.on_transaction_done(now, key, tx, None);
        }
    }

    /// Once a second: liveness edges, queries due or overdue, expiry of remembered state.
    fn tick(&mut self, now: Instant) {
        self.server.expire(now);
        self.challenges.expire(now);
        self.plays.expire(now);
        self.expire_record_queries(now);
        self.expire_asks(now);
        self.tick_subscriptions(now);
        let keepalive = self.cfg.keepalive_interval;
        let mut offline = Vec::new();
        let mut query_work = Vec::new();
        for (id, d) in self.devices.iter_mut() {
            let online = d.online(now, keepalive);
            if d.was_online && !online {
                offline.push(id.clone());
                d.catalog_merge = None;
                d.queries.clear();
            }
            d.was_online = online;
            if online && d.queries.next_deadline().is_some_and(|t| t <= now) {
                query_work.push(id.clone());
            }
        }
        for device_id in offline {
            self.emit(Event::Offline { device_id });
        }
        for device_id in query_work {
            self.run_queries(now, &device_id);
        }
    }
}

#[cfg(test)]
mod tests;
