//! Cascade (级联, GB/T 28181 §9.1–9.3 between platforms): this platform as a lower platform of
//! upper ones. Toward each upstream it is a client (REGISTER with digest, refreshed before it
//! runs out; keepalive MESSAGEs, the upstream lost after so many go unanswered; retries with a
//! backoff), and it answers what the upstream asks of the channels shared with it: Catalog
//! (paged, paced), DeviceInfo, DeviceStatus, and INVITE for live video, whose media the driver
//! sends (`Event::UpstreamPlay`, answered by `Command::UpstreamAnswer`). A request naming an
//! upstream as its sender is taken only from that upstream's configured address.

use super::transaction::{self, Purpose, ServerKey, TxKey};
use super::{Endpoint, Event, PlayKind, Peer, RecordType, Recording, Refusal, Reply};
use crate::proto::sdp::Sdp;
use crate::proto::sip::SipMsg;
use crate::proto::sip::build::{OutRequest, response};
use crate::proto::sip::digest::DigestChallenge;
use crate::proto::sip::manscdp::{self, Body, Root, escape};
use crate::proto::sip::text::{decode_body, encode_body};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Upper platforms configured at most.
pub const UPSTREAMS_MAX: usize = 16;
/// Media sessions all upstreams hold at once; more INVITEs are answered 486.
pub const UPSTREAM_CALLS_MAX: usize = 1024;
/// Catalog items in one Response MESSAGE (several kB of XML in one UDP datagram at most).
pub const CATALOG_ITEMS_PER_MESSAGE: usize = 8;
/// Catalog Response MESSAGEs queued for one upstream (a newer query replaces what is left).
pub const CATALOG_PAGES_QUEUED_MAX: usize = 4096;
/// One catalog page leaves this long after the previous one (upper platforms drop bursts).
pub const CATALOG_PAGE_INTERVAL: Duration = Duration::from_millis(20);
/// A failed registration is tried again after this, doubling up to the most.
pub const REGISTER_RETRY_MIN: Duration = Duration::from_secs(2);
pub const REGISTER_RETRY_MAX: Duration = Duration::from_secs(60);
/// Expires asked in a REGISTER, at most (a day) and at least.
pub const UPSTREAM_EXPIRES_S_MAX: u32 = 86_400;
pub const UPSTREAM_EXPIRES_S_MIN: u32 = 30;
/// The 200 to an upstream's INVITE goes again until its ACK (RFC 3261 §13.3.1.4: from T1,
/// doubling up to T2); without an ACK in 64·T1 the session is ended.
const ACK_WAIT: Duration = transaction::TRANSACTION_TIMEOUT;

const _: () = assert!(REGISTER_RETRY_MIN.as_millis() > 0 && REGISTER_RETRY_MIN.as_millis() <= REGISTER_RETRY_MAX.as_millis());
const _: () = assert!(CATALOG_PAGES_QUEUED_MAX * CATALOG_ITEMS_PER_MESSAGE >= super::CHANNELS_PER_DEVICE_MAX);

/// Which channels an upstream sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shared {
    All,
    Channels(BTreeSet<String>),
}

/// As the API and the config write it: `"all"` or the list of channel ids.
impl serde::Serialize for Shared {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Shared::All => s.serialize_str("all"),
            Shared::Channels(set) => s.collect_seq(set),
        }
    }
}

impl Shared {
    pub fn contains(&self, channel_id: &str) -> bool {
        match self {
            Shared::All => true,
            Shared::Channels(set) => set.contains(channel_id),
        }
    }
}

/// How MANSCDP bodies to an upstream are written (GB2312 is what the standard names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    Gb2312,
    Utf8,
}

impl Charset {
    pub fn label(self) -> &'static str {
        match self {
            Charset::Gb2312 => "GB2312",
            Charset::Utf8 => "UTF-8",
        }
    }

    pub(super) fn encode(self, xml: &str) -> Vec<u8> {
        match self {
            Charset::Gb2312 => encode_body(xml, encoding_rs::GB18030),
            Charset::Utf8 => xml.as_bytes().to_vec(),
        }
    }
}

/// An upper platform this one registers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// Our name for it (API, logs, events).
    pub id: String,
    /// The name this platform gives itself upward (DeviceInfo's DeviceName).
    pub name: String,
    /// The upper platform's SIP id and domain (the REGISTER's Request-URI).
    pub server_id: String,
    pub domain: String,
    pub address: SocketAddr,
    /// Signalling over TCP (a connection this side dials and keeps) rather than UDP.
    pub tcp: bool,
    pub password: String,
    /// The id this platform has toward it (From of everything sent up).
    pub local_id: String,
    pub register_expires_s: u32,
    pub keepalive: Duration,
    /// Keepalives unanswered in a row before the upstream is deemed lost.
    pub keepalive_misses_max: u32,
    pub charset: Charset,
    pub shared: Shared,
    /// Ids the upstream knows some channels by (its numbering plan), instead of ours.
    pub channel_ids: ChannelIds,
    /// Business groups and virtual organisations its catalog shows, and the one each channel
    /// hangs under (others hang under this platform).
    pub groups: Vec<CatalogGroup>,
    pub channel_groups: BTreeMap<String, String>,
}

/// A business group (id type 215) or virtual organisation (216) of the catalog sent up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogGroup {
    pub id: String,
    pub name: String,
    /// The group it sits under (a 216's is another 216 or its 215); none for a 215.
    pub parent: Option<String>,
}

/// Groups at most per upstream.
pub const CATALOG_GROUPS_MAX: usize = 1000;

/// The GB/T 28181 type of a 20-digit id (its digits 11 to 13).
pub fn id_type(id: &str) -> Option<&str> {
    id.get(10..13)
}

/// The business group (215) above `id` among `groups` (itself when it is one), bounded by
/// the group count.
pub fn business_group<'a>(groups: &'a [CatalogGroup], id: &'a str) -> Option<&'a str> {
    let mut at = id;
    for _ in 0..=groups.len() {
        if id_type(at) == Some("215") {
            return Some(at);
        }
        at = groups.iter().find(|g| g.id == at)?.parent.as_deref()?;
    }
    None
}

/// Channels known upward by other ids: ours → theirs, and back. Everything else keeps its id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelIds {
    up: BTreeMap<String, String>,
    down: BTreeMap<String, String>,
}

impl ChannelIds {
    /// From (our channel id, its id upward) pairs; None when an upward id is given twice.
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Option<ChannelIds> {
        let mut ids = ChannelIds::default();
        for (ours, theirs) in pairs {
            if ids.down.insert(theirs.clone(), ours.clone()).is_some() || ids.up.insert(ours, theirs).is_some() {
                return None;
            }
        }
        Some(ids)
    }

    /// The id upward of our channel `ours`.
    pub fn up<'a>(&'a self, ours: &'a str) -> &'a str {
        self.up.get(ours).map_or(ours, String::as_str)
    }

    /// Our id of the channel the upstream calls `theirs` (a mapped id of ours is not reachable
    /// by that id).
    pub fn down(&self, theirs: &str) -> Option<String> {
        match self.down.get(theirs) {
            Some(ours) => Some(ours.clone()),
            None if self.up.contains_key(theirs) => None,
            None => Some(theirs.to_string()),
        }
    }

    pub fn pairs(&self) -> &BTreeMap<String, String> {
        &self.up
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamState {
    Registering,
    Registered,
    /// Registration failed or the upstream was lost: tried again later.
    Retrying,
    /// `Expires: 0` sent (removed, or this platform stopping).
    Unregistered,
}

/// An upstream as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UpstreamStatus {
    pub id: String,
    pub name: String,
    pub server_id: String,
    pub domain: String,
    pub local_id: String,
    pub address: String,
    pub charset: &'static str,
    pub shared: Shared,
    pub state: UpstreamState,
    pub last_error: Option<String>,
    /// When the current registration was granted (unix ms).
    pub registered_at_ms: Option<u64>,
    pub keepalive_misses: u32,
    pub registrations: u64,
    /// Channels it sees, and media sessions it holds.
    pub shared_channels: usize,
    pub sessions: usize,
    pub session_list: Vec<UpstreamSession>,
}

/// A media session an upstream holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UpstreamSession {
    pub channel_id: String,
    pub kind: &'static str,
    pub ssrc: u32,
}

/// Where the media of an upstream's INVITE goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamMedia {
    /// RTP/AVP to the offer's address.
    Udp(SocketAddr),
    /// TCP/RTP/AVP, the upstream listening (`a=setup:passive`): we connect.
    TcpDial(SocketAddr),
    /// TCP/RTP/AVP, the upstream connecting (`a=setup:active`): we listen.
    TcpListen,
}

pub type UpstreamCallHandle = u64;

/// An upstream asks for a channel's live video.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamPlay {
    pub handle: UpstreamCallHandle,
    pub upstream: String,
    pub device_id: String,
    pub channel_id: String,
    pub media: UpstreamMedia,
    /// The SSRC the upstream asked for (`y=`), which the media must carry.
    pub ssrc: u32,
    /// Live, or a recorded range played back or downloaded (the offer's `t=`).
    pub kind: PlayKind,
}

/// An upstream asks for a channel's recordings (RecordInfo): search the device, then answer
/// with `Command::UpstreamRecordsAnswer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamRecords {
    pub upstream: String,
    /// The upstream's SN, which the answer carries.
    pub sn: u32,
    pub device_id: String,
    pub channel_id: String,
    /// Unix seconds (the query's local times read in `utc_offset_s`).
    pub start: i64,
    pub end: i64,
    pub record_type: RecordType,
}

/// Why an upstream's INVITE could not be served (its SIP answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamRefusal {
    /// The device is offline (480).
    Unavailable,
    /// Too many sessions, or the stream's senders are full (486).
    Busy,
    /// The device did not give the video, or it could not be sent on (500).
    Failed,
}

impl UpstreamMedia {
    /// The transport of our answer's m= line and its TCP setup lines (RFC 4145): the reverse
    /// of what the offer asked.
    pub(super) fn answer_lines(self) -> (&'static str, &'static str) {
        match self {
            UpstreamMedia::Udp(_) => ("RTP/AVP", ""),
            UpstreamMedia::TcpDial(_) => ("TCP/RTP/AVP", "a=setup:active\r\na=connection:new\r\n"),
            UpstreamMedia::TcpListen => ("TCP/RTP/AVP", "a=setup:passive\r\na=connection:new\r\n"),
        }
    }
}

impl UpstreamRefusal {
    pub(super) fn status(self) -> (u16, &'static str) {
        match self {
            UpstreamRefusal::Unavailable => (480, "Temporarily Unavailable"),
            UpstreamRefusal::Busy => (486, "Busy Here"),
            UpstreamRefusal::Failed => (500, "Server Internal Error"),
        }
    }
}

/// Where our answer's media leaves from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamMediaAnswer {
    pub port: u16,
    /// When not this platform's own media address (a media node sends it).
    pub media_ip: Option<String>,
}

/// Why an upstream media session ended without our asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamEnd {
    /// The upstream sent BYE (or CANCEL before our answer).
    UpstreamBye,
    /// Our 200 was never ACKed.
    NoAck,
    /// The upstream was lost or unregistered.
    UpstreamGone,
}

impl UpstreamEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamEnd::UpstreamBye => "upstream sent BYE",
            UpstreamEnd::NoAck => "upstream never ACKed",
            UpstreamEnd::UpstreamGone => "upstream lost",
        }
    }
}

/// A DeviceControl from above sent on to a device under the upstream's SN: the device's
/// Response (which carries that SN) goes up until `until`.
struct Relay {
    upstream: String,
    device_id: String,
    sn: u32,
    until: Instant,
}

/// DeviceControl Responses awaited at once (the oldest forgotten beyond).
pub const RELAYS_MAX: usize = 256;

/// What a paced body to an upstream is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Paced {
    /// A page of a catalog query's answer (a newer query replaces those still queued).
    Catalog,
    /// Another Response (RecordInfo pages).
    Answer,
    /// A NOTIFY in the subscription with this Call-ID.
    Notify(String),
}

pub(super) struct Upstream {
    pub(super) cfg: UpstreamConfig,
    /// Unique among the entries ever made: what its transactions name it by.
    serial: u64,
    /// Removed (or replaced by a changed entry of its id): only its `Expires: 0` is still on
    /// its way; it is dropped once that is answered or given up.
    leaving: bool,
    pub(super) state: UpstreamState,
    call_id: String,
    from_tag: String,
    cseq: u32,
    /// A REGISTER is in flight; with the challenge it answered (a second 401 to an answer
    /// that was not stale is a wrong password).
    registering: bool,
    answered: Option<DigestChallenge>,
    /// Expires of the REGISTER in flight (0: unregistering).
    expires_asked: u32,
    next_register: Option<Instant>,
    retry_in: Duration,
    next_keepalive: Option<Instant>,
    keepalive_in_flight: bool,
    misses: u32,
    last_error: Option<String>,
    /// Why the last connection to it could not be made (TCP): said when a REGISTER sent over
    /// it goes unanswered.
    dial_error: Option<String>,
    registered_at_ms: Option<u64>,
    registrations: u64,
    /// Paced Response MESSAGEs still to go (true: a catalog page), and when the next may.
    pages: VecDeque<(Paced, Vec<u8>)>,
    /// Answers (DeviceInfo, DeviceStatus) to send after the 200 of their query.
    answers: VecDeque<Vec<u8>>,
    next_page: Instant,
}

/// Where a dialog a peer's INVITE opened with us stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum CallState {
    /// Told the driver; no final answer yet.
    Answering,
    /// 200 sent; waiting for the ACK (resent at `resend_at` over UDP).
    Answered { bytes: Vec<u8>, resend_at: Instant, interval: Duration, give_up_at: Instant },
    Confirmed,
}

impl CallState {
    /// Our 200 `bytes` just went to `peer`: resent over UDP from T1 on (RFC 3261 §13.3.1.4)
    /// until the ACK or `ack_wait`.
    pub(super) fn answered(bytes: Vec<u8>, peer: Peer, now: Instant, ack_wait: Duration) -> CallState {
        let resend_at = if matches!(peer, Peer::Udp(_)) { now + transaction::T1 } else { now + ack_wait };
        CallState::Answered { bytes, resend_at, interval: transaction::T1, give_up_at: now + ack_wait }
    }

    /// At `now`: Some(true) to resend the 200 (the next resend set), Some(false) to give up
    /// for want of an ACK, None when nothing is due.
    pub(super) fn due(&mut self, now: Instant) -> Option<bool> {
        let CallState::Answered { resend_at, interval, give_up_at, .. } = self else { return None };
        if now >= *give_up_at {
            return Some(false);
        }
        if now < *resend_at {
            return None;
        }
        *interval = (*interval * 2).min(transaction::T2);
        *resend_at = now + *interval;
        Some(true)
    }

    /// The 200 to resend (empty unless answered).
    pub(super) fn bytes(&self) -> Vec<u8> {
        match self {
            CallState::Answered { bytes, .. } => bytes.clone(),
            _ => Vec::new(),
        }
    }

    pub(super) fn next_timeout(&self) -> Option<Instant> {
        match self {
            CallState::Answered { resend_at, give_up_at, .. } => Some((*resend_at).min(*give_up_at)),
            _ => None,
        }
    }
}

/// A dialog an upstream's request opened with us (its INVITE, its SUBSCRIBE): what our
/// requests in it carry.
#[derive(Debug, Clone)]
pub(super) struct UasDialog {
    pub(super) peer: Peer,
    pub(super) call_id: String,
    pub(super) our_tag: String,
    pub(super) their_tag: String,
    /// The request's From (theirs) and To (ours) URIs, swapped in our requests, and where
    /// those go (its Contact).
    pub(super) their_uri: String,
    pub(super) our_uri: String,
    pub(super) remote_target: String,
    /// Our latest CSeq in it.
    pub(super) cseq: u32,
}

/// Whether two messages came from one upstream sender: the same UDP address; over TCP the
/// same host, on whichever connection (an upper platform may open one per request to our
/// listener besides the one we dialled, and a TCP source cannot be forged without its
/// handshake).
pub(super) fn same_sender(a: Peer, b: Peer) -> bool {
    match (a, b) {
        (Peer::Udp(x), Peer::Udp(y)) => x == y,
        (Peer::Udp(_), _) | (_, Peer::Udp(_)) => false,
        (x, y) => x.addr().ip() == y.addr().ip(),
    }
}

impl UasDialog {
    /// The dialog `msg` from `peer` opens under our tag; None when it lacks a Call-ID, a From
    /// tag, a From or a To.
    pub(super) fn accept(msg: &SipMsg, peer: Peer, our_tag: String) -> Option<UasDialog> {
        let (Some(call_id), Some(their_tag), Some(their_from), Some(our_to)) = (msg.call_id(), msg.from_tag(), msg.header("From"), msg.header("To")) else {
            return None;
        };
        let their_uri = uri_of(&their_from);
        let remote_target = msg.header("Contact").map(|c| uri_of(&c)).filter(|c| c.starts_with("sip:")).unwrap_or_else(|| their_uri.clone());
        Some(UasDialog { peer, call_id, our_tag, their_tag, their_uri, our_uri: uri_of(&our_to), remote_target, cseq: 0 })
    }

    /// The dialog as our next request in it carries it (its CSeq taken).
    pub(super) fn step(&mut self) -> UasDialog {
        self.cseq += 1;
        self.clone()
    }
}

struct UpstreamCall {
    upstream: String,
    invite: SipMsg,
    key: ServerKey,
    dialog: UasDialog,
    media: UpstreamMedia,
    ssrc: u32,
    channel_id: String,
    kind: PlayKind,
    state: CallState,
}

/// The upstreams and their media sessions.
#[derive(Default)]
pub(super) struct Upstreams {
    pub(super) list: Vec<Upstream>,
    /// DeviceControls relayed down whose device's Response goes back up (oldest first).
    relays: VecDeque<Relay>,
    /// Subscriptions of the upstreams (catalog, alarm), each in its dialog.
    pub(super) subs: Vec<super::upstream_subs::UpstreamSub>,
    calls: BTreeMap<UpstreamCallHandle, UpstreamCall>,
    next_handle: UpstreamCallHandle,
    next_serial: u64,
}

/// Catalog bodies under `root` holding `items`, `CATALOG_ITEMS_PER_MESSAGE` each (one empty
/// page when there are none), `SumNum` the whole count.
pub(super) fn catalog_page_bodies(cfg: &UpstreamConfig, sn: u32, root: &str, items: &[String]) -> Vec<Vec<u8>> {
    let total = items.len();
    let page = |chunk: &[String]| {
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"{}\"?>\r\n<{root}>\r\n<CmdType>Catalog</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{}</DeviceID>\r\n<SumNum>{total}</SumNum>\r\n<DeviceList Num=\"{}\">\r\n{}</DeviceList>\r\n</{root}>\r\n",
            cfg.charset.label(),
            cfg.local_id,
            chunk.len(),
            chunk.concat()
        );
        cfg.charset.encode(&xml)
    };
    if items.is_empty() {
        return vec![page(&[])];
    }
    items.chunks(CATALOG_ITEMS_PER_MESSAGE).map(page).collect()
}

/// `<sip:user@host>;tag=x` → `sip:user@host`.
fn uri_of(header_value: &str) -> String {
    let v = header_value.trim();
    match (v.find('<'), v.find('>')) {
        (Some(a), Some(b)) if a < b => v[a + 1..b].to_string(),
        _ => v.split(';').next().unwrap_or_default().trim().to_string(),
    }
}

impl Endpoint {
    pub(super) fn init_upstreams(&mut self, now: Instant) {
        let configs: Vec<UpstreamConfig> = self.cfg.upstreams.iter().take(UPSTREAMS_MAX).cloned().collect();
        for cfg in configs {
            self.add_upstream(now, cfg);
        }
    }

    /// A new entry for `cfg`, registering now.
    fn add_upstream(&mut self, now: Instant, cfg: UpstreamConfig) {
        let (call_id, from_tag) = (self.new_call_id(), self.rng.hex());
        let serial = self.upstreams.next_serial;
        self.upstreams.next_serial += 1;
        self.upstreams.list.push(Upstream {
            cfg,
            serial,
            leaving: false,
            state: UpstreamState::Registering,
            call_id,
            from_tag,
            cseq: 0,
            registering: false,
            answered: None,
            expires_asked: 0,
            next_register: Some(now),
            retry_in: REGISTER_RETRY_MIN,
            next_keepalive: None,
            keepalive_in_flight: false,
            misses: 0,
            last_error: None,
            dial_error: None,
            registered_at_ms: None,
            registrations: 0,
            pages: VecDeque::new(),
            answers: VecDeque::new(),
            next_page: now,
        });
    }

    /// Adds `cfg`, or changes the upstream with its id: a change of what it shares, its name
    /// or its charset applies at once (sessions of channels no longer shared end); a change of
    /// where it is, who we are to it or how we register ends the old registration
    /// (`Expires: 0`) and makes a new one. False: `UPSTREAMS_MAX` upstreams already.
    pub(super) fn set_upstream(&mut self, now: Instant, cfg: UpstreamConfig) -> bool {
        let Some(i) = self.upstream_index(&cfg.id) else {
            if self.upstreams.list.iter().filter(|u| !u.leaving).count() >= UPSTREAMS_MAX {
                return false;
            }
            self.add_upstream(now, cfg);
            return true;
        };
        let old = &self.upstreams.list[i].cfg;
        let same_registration = (&old.server_id, &old.domain, old.address, old.tcp, &old.password, &old.local_id, old.register_expires_s, old.keepalive, old.keepalive_misses_max)
            == (&cfg.server_id, &cfg.domain, cfg.address, cfg.tcp, &cfg.password, &cfg.local_id, cfg.register_expires_s, cfg.keepalive, cfg.keepalive_misses_max);
        if !same_registration {
            self.leave_upstream(now, i);
            self.add_upstream(now, cfg);
            return true;
        }
        let before = self.upstreams.list[i].cfg.shared.clone();
        let unshared: Vec<UpstreamCallHandle> =
            self.upstreams.calls.iter().filter(|(_, c)| c.upstream == cfg.id && !cfg.shared.contains(&c.channel_id)).map(|(h, _)| *h).collect();
        for handle in unshared {
            self.end_upstream_call(now, handle);
        }
        self.upstreams.list[i].cfg = cfg;
        self.notify_shared_changed(now, i, &before);
        true
    }

    /// Removes the upstream `id`; false when there is none.
    pub(super) fn remove_upstream(&mut self, now: Instant, id: &str) -> bool {
        let Some(i) = self.upstream_index(id) else { return false };
        self.leave_upstream(now, i);
        true
    }

    /// Entry `i` goes: its sessions end (BYE), `Expires: 0` when registered, dropped once
    /// nothing of it is in flight.
    fn leave_upstream(&mut self, now: Instant, i: usize) {
        let id = self.upstreams.list[i].cfg.id.clone();
        let calls: Vec<UpstreamCallHandle> = self.upstreams.calls.iter().filter(|(_, c)| c.upstream == id).map(|(h, _)| *h).collect();
        for handle in calls {
            self.end_upstream_call(now, handle);
        }
        self.upstreams.subs.retain(|s| !s.is_of(&id));
        let u = &mut self.upstreams.list[i];
        let was = u.state;
        u.leaving = true;
        u.state = UpstreamState::Unregistered;
        u.next_keepalive = None;
        u.next_register = None;
        u.pages.clear();
        u.answers.clear();
        if was == UpstreamState::Registered {
            self.send_register(now, i, 0, None);
        }
        self.forget_left_upstreams();
    }

    /// Drops entries that left and have no REGISTER in flight.
    fn forget_left_upstreams(&mut self) {
        self.upstreams.list.retain(|u| !u.leaving || u.registering);
    }

    /// Ends an upstream session from this side for a reason of the upstream's (removed, the
    /// channel no longer shared): BYE up, and the driver stops its send.
    fn end_upstream_call(&mut self, now: Instant, handle: UpstreamCallHandle) {
        if self.upstream_hang_up(now, handle) {
            self.emit(Event::UpstreamPlayEnded { handle, reason: UpstreamEnd::UpstreamGone });
        }
    }

    /// The upstreams, as the API shows them.
    pub fn upstreams(&self) -> Vec<UpstreamStatus> {
        self.upstreams
            .list
            .iter()
            .filter(|u| !u.leaving)
            .map(|u| UpstreamStatus {
                id: u.cfg.id.clone(),
                name: u.cfg.name.clone(),
                server_id: u.cfg.server_id.clone(),
                domain: u.cfg.domain.clone(),
                local_id: u.cfg.local_id.clone(),
                address: u.cfg.address.to_string(),
                charset: u.cfg.charset.label(),
                shared: u.cfg.shared.clone(),
                state: u.state,
                last_error: u.last_error.clone(),
                registered_at_ms: u.registered_at_ms,
                keepalive_misses: u.misses,
                registrations: u.registrations,
                shared_channels: self.shared_channels(&u.cfg.shared).len(),
                sessions: self.upstreams.calls.values().filter(|c| c.upstream == u.cfg.id).count(),
                session_list: self
                    .upstreams
                    .calls
                    .values()
                    .filter(|c| c.upstream == u.cfg.id)
                    .map(|c| UpstreamSession { channel_id: c.channel_id.clone(), kind: c.kind.name(), ssrc: c.ssrc })
                    .collect(),
            })
            .collect()
    }

    /// Sends `Expires: 0` to every upstream (this platform stopping); their sessions are
    /// BYE'd. Answers to challenges still go out while the driver runs.
    pub(super) fn unregister_upstreams(&mut self, now: Instant) {
        let handles: Vec<UpstreamCallHandle> = self.upstreams.calls.keys().copied().collect();
        for handle in handles {
            self.upstream_hang_up(now, handle);
        }
        for i in 0..self.upstreams.list.len() {
            let u = &mut self.upstreams.list[i];
            if u.state == UpstreamState::Registered {
                u.state = UpstreamState::Unregistered;
                u.next_keepalive = None;
                u.next_register = None;
                self.send_register(now, i, 0, None);
            } else {
                u.state = UpstreamState::Unregistered;
                u.next_register = None;
            }
        }
    }

    /// Whether no `Expires: 0` is still on its way up (a stop waits for them, bounded).
    pub fn upstreams_settled(&self) -> bool {
        self.upstreams.list.iter().all(|u| !(u.registering && u.expires_asked == 0))
    }

    /// The channels `shared` names that this platform knows: (device, channel).
    pub(super) fn shared_channels(&self, shared: &Shared) -> Vec<(&super::Device, &manscdp::CatalogItem)> {
        match shared {
            Shared::All => self.devices.values().chain(std::iter::once(&self.local_sources)).flat_map(|d| d.channels.values().map(move |c| (d, c))).collect(),
            Shared::Channels(set) => set.iter().filter_map(|id| self.channel_owner(id)).collect(),
        }
    }

    /// The device that has channel `channel_id`, and the channel.
    pub(super) fn channel_owner(&self, channel_id: &str) -> Option<(&super::Device, &manscdp::CatalogItem)> {
        let device = self.devices.values().find_map(|d| d.channels.get(channel_id).map(|c| (d, c)));
        device.or_else(|| self.local_sources.channels.get(channel_id).map(|c| (&self.local_sources, c)))
    }

    pub(super) fn upstream_next_timeout(&self) -> Option<Instant> {
        let ups = self.upstreams.list.iter().flat_map(|u| {
            let register = u.next_register.filter(|_| !u.registering);
            let keepalive = u.next_keepalive.filter(|_| !u.keepalive_in_flight && u.state == UpstreamState::Registered);
            let page = (!u.pages.is_empty()).then_some(u.next_page);
            [register, keepalive, page]
        });
        let calls = self.upstreams.calls.values().filter_map(|c| c.state.next_timeout());
        ups.flatten().chain(calls).chain(self.upstream_subs_next_timeout()).min()
    }

    /// Sends the answers to queries just answered 200 (DeviceInfo, DeviceStatus).
    pub(super) fn send_upstream_answers(&mut self, now: Instant) {
        for i in 0..self.upstreams.list.len() {
            while let Some(answer) = self.upstreams.list[i].answers.pop_front() {
                self.send_upstream_message(now, i, answer, Purpose::Fire);
            }
        }
    }

    /// Registrations, keepalives, catalog pages and unacknowledged answers that are due.
    pub(super) fn upstream_timers(&mut self, now: Instant) {
        self.expire_upstream_subs(now);
        for i in 0..self.upstreams.list.len() {
            let u = &self.upstreams.list[i];
            if !u.registering && u.next_register.is_some_and(|t| t <= now) {
                let expires = u.cfg.register_expires_s.clamp(UPSTREAM_EXPIRES_S_MIN, UPSTREAM_EXPIRES_S_MAX);
                self.send_register(now, i, expires, None);
            }
            let u = &self.upstreams.list[i];
            if u.state == UpstreamState::Registered && !u.keepalive_in_flight && u.next_keepalive.is_some_and(|t| t <= now) {
                self.send_keepalive(now, i);
            }
            while let Some(u) = self.upstreams.list.get_mut(i).filter(|u| u.next_page <= now) {
                let Some((kind, page)) = u.pages.pop_front() else { break };
                u.next_page = now + CATALOG_PAGE_INTERVAL;
                match kind {
                    Paced::Notify(call_id) => self.send_sub_notify(now, i, &call_id, page),
                    Paced::Catalog | Paced::Answer => self.send_upstream_message(now, i, page, Purpose::Fire),
                }
            }
        }
        let mut resend = Vec::new();
        let mut gone = Vec::new();
        for (handle, c) in self.upstreams.calls.iter_mut() {
            match c.state.due(now) {
                Some(true) => resend.push((c.dialog.peer, c.state.bytes())),
                Some(false) => gone.push(*handle),
                None => {}
            }
        }
        self.counters.retransmissions += resend.len() as u64;
        for (peer, bytes) in resend {
            self.send(peer, bytes);
        }
        for handle in gone {
            self.upstream_hang_up(now, handle);
            self.emit(Event::UpstreamPlayEnded { handle, reason: UpstreamEnd::NoAck });
        }
    }

    /// A request to upstream `i`'s server id at its domain.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn upstream_request(
        &self,
        i: usize,
        method: &str,
        request_uri: String,
        (from, from_tag): (String, &str),
        (to, to_tag): (String, Option<&str>),
        call_id: &str,
        cseq: u32,
        branch: &str,
        extra: Vec<(&str, String)>,
        body: Option<(&str, &[u8])>,
    ) -> Vec<u8> {
        let cfg = &self.upstreams.list[i].cfg;
        OutRequest {
            method,
            request_uri,
            transport: if cfg.tcp { "TCP" } else { "UDP" },
            contact_transport: cfg.tcp.then_some("tcp"),
            local: self.cfg.local,
            branch: branch.to_string(),
            from,
            from_tag,
            to,
            to_tag,
            call_id,
            cseq,
            contact_user: &cfg.local_id,
            extra,
        }
        .build(body)
    }

    fn send_register(&mut self, now: Instant, i: usize, expires: u32, challenge: Option<DigestChallenge>) {
        let cnonce = self.rng.hex();
        let branch = self.rng.hex();
        let u = &mut self.upstreams.list[i];
        u.cseq += 1;
        u.registering = true;
        u.expires_asked = expires;
        u.next_register = None;
        let (cseq, call_id, from_tag) = (u.cseq, u.call_id.clone(), u.from_tag.clone());
        let cfg = u.cfg.clone();
        let uri = format!("sip:{}@{}", cfg.server_id, cfg.domain);
        let us = format!("sip:{}@{}", cfg.local_id, cfg.domain);
        let mut extra = vec![("Expires", expires.to_string())];
        if let Some(c) = &challenge {
            extra.push(("Authorization", c.authorization(&cfg.local_id, &cfg.password, "REGISTER", &uri, &cnonce[..16])));
        }
        u.answered = challenge;
        let bytes = self.upstream_request(i, "REGISTER", uri, (us.clone(), &from_tag), (us, None), &call_id, cseq, &branch, extra, None);
        let key = TxKey { call_id, cseq, method: "REGISTER".into() };
        let purpose = Purpose::UpstreamRegister { upstream: self.upstreams.list[i].serial };
        if !self.start_transaction(now, key, self.upstream_peer(i), bytes, purpose, transaction::TRANSACTION_TIMEOUT) {
            self.register_failed(now, i, "too many transactions in flight".into());
        }
    }

    fn send_keepalive(&mut self, now: Instant, i: usize) {
        let sn = self.new_sn();
        let u = &mut self.upstreams.list[i];
        u.keepalive_in_flight = true;
        u.next_keepalive = Some(now + u.cfg.keepalive);
        let (charset, local_id) = (u.cfg.charset, u.cfg.local_id.clone());
        let timeout = u.cfg.keepalive.clamp(transaction::T1 * 2, transaction::TRANSACTION_TIMEOUT);
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"{}\"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{local_id}</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n",
            charset.label()
        );
        let purpose = Purpose::UpstreamKeepalive { upstream: u.serial };
        self.send_upstream_message_timed(now, i, charset.encode(&xml), purpose, timeout, None);
    }

    pub(super) fn send_upstream_message(&mut self, now: Instant, i: usize, body: Vec<u8>, purpose: Purpose) {
        self.send_upstream_message_timed(now, i, body, purpose, transaction::TRANSACTION_TIMEOUT, None);
    }

    /// A MANSCDP MESSAGE to upstream `i`, from our id; in a call of its own, or under `call`
    /// (a session's Call-ID and next CSeq).
    fn send_upstream_message_timed(&mut self, now: Instant, i: usize, body: Vec<u8>, purpose: Purpose, timeout: Duration, call: Option<(String, u32)>) {
        let (from_tag, branch) = (self.rng.hex(), self.rng.hex());
        let (call_id, cseq) = call.unwrap_or_else(|| (self.new_call_id(), 1));
        let cfg = &self.upstreams.list[i].cfg;
        let (uri, us) = (format!("sip:{}@{}", cfg.server_id, cfg.domain), format!("sip:{}@{}", cfg.local_id, cfg.domain));
        let bytes = self.upstream_request(
            i,
            "MESSAGE",
            uri.clone(),
            (us, &from_tag),
            (uri, None),
            &call_id,
            cseq,
            &branch,
            vec![],
            Some(("Application/MANSCDP+xml", &body)),
        );
        let key = TxKey { call_id, cseq, method: "MESSAGE".into() };
        let keepalive = matches!(purpose, Purpose::UpstreamKeepalive { .. });
        if !self.start_transaction(now, key, self.upstream_peer(i), bytes, purpose, timeout) && keepalive {
            self.keepalive_done(now, i, false);
        }
    }

    /// Where requests to upstream `i` go: its address over UDP, or the connection dialled to it.
    pub(super) fn upstream_peer(&self, i: usize) -> Peer {
        let cfg = &self.upstreams.list[i].cfg;
        if cfg.tcp { Peer::TcpOut(cfg.address) } else { Peer::Udp(cfg.address) }
    }

    /// A connection to `to` could not be made: the TCP upstreams there remember why.
    pub(super) fn upstream_dial_failed(&mut self, to: SocketAddr, error: &str) {
        for u in self.upstreams.list.iter_mut().filter(|u| u.cfg.tcp && u.cfg.address == to) {
            u.dial_error = Some(format!("no TCP connection to {to}: {error}"));
        }
    }

    /// Upstream `i` stopped answering: a connection dialled to it goes (the next message dials
    /// again, rather than writing into a connection the other side may have lost).
    fn drop_upstream_connection(&mut self, i: usize) {
        if let Peer::TcpOut(to) = self.upstream_peer(i) {
            self.emit(Event::DropConnection { to });
        }
    }

    /// The upstream entry with `id` that is not leaving.
    pub(super) fn upstream_index(&self, id: &str) -> Option<usize> {
        self.upstreams.list.iter().position(|u| u.cfg.id == id && !u.leaving)
    }

    fn upstream_by_serial(&self, serial: u64) -> Option<usize> {
        self.upstreams.list.iter().position(|u| u.serial == serial)
    }

    /// The final answer (or none) to a REGISTER sent upward.
    pub(super) fn upstream_register_done(&mut self, now: Instant, serial: u64, answer: Option<&SipMsg>) {
        self.register_answered(now, serial, answer);
        self.forget_left_upstreams();
    }

    fn register_answered(&mut self, now: Instant, serial: u64, answer: Option<&SipMsg>) {
        let Some(i) = self.upstream_by_serial(serial) else { return };
        self.upstreams.list[i].registering = false;
        let status = answer.and_then(SipMsg::status);
        let u = &self.upstreams.list[i];
        let expires_asked = u.expires_asked;
        if u.state == UpstreamState::Unregistered && expires_asked != 0 {
            // An answer to a REGISTER from before the stop or the removal: a registration
            // granted meanwhile is taken back.
            if status.is_some_and(|s| (200..300).contains(&s)) {
                self.send_register(now, i, 0, None);
            }
            return;
        }
        match status {
            Some(200..=299) if expires_asked == 0 => {
                self.upstreams.list[i].registered_at_ms = None;
            }
            Some(200..=299) => {
                let granted = answer.and_then(SipMsg::expires).filter(|&e| e > 0).unwrap_or(expires_asked).min(UPSTREAM_EXPIRES_S_MAX);
                let unix_ms = self.unix_ms(now);
                let u = &mut self.upstreams.list[i];
                let was = u.state;
                u.state = UpstreamState::Registered;
                u.last_error = None;
                u.dial_error = None;
                u.retry_in = REGISTER_RETRY_MIN;
                u.answered = None;
                u.registrations += 1;
                // Refreshed at half its time, so a lost refresh still has time to retry.
                u.next_register = Some(now + Duration::from_secs(u64::from(granted / 2).max(1)));
                if was != UpstreamState::Registered {
                    u.registered_at_ms = Some(unix_ms);
                    u.misses = 0;
                    u.next_keepalive = Some(now + u.cfg.keepalive);
                    let upstream = u.cfg.id.clone();
                    self.emit(Event::UpstreamRegistered { upstream });
                }
            }
            Some(401 | 407) => {
                let header = if status == Some(401) { "WWW-Authenticate" } else { "Proxy-Authenticate" };
                let challenge = answer.and_then(|m| m.header(header)).as_deref().and_then(DigestChallenge::parse);
                let u = &self.upstreams.list[i];
                match challenge {
                    Some(c) if u.answered.is_none() || c.stale => self.send_register(now, i, expires_asked, Some(c)),
                    Some(_) => self.register_failed(now, i, "401 to our credentials: wrong password or local id".into()),
                    None => self.register_failed(now, i, format!("{} without a digest challenge gmv can answer (MD5)", status.unwrap_or_default())),
                }
            }
            Some(code) => self.register_failed(now, i, format!("REGISTER answered {code}")),
            None => {
                let why = self.upstreams.list[i].dial_error.take().unwrap_or_else(|| "REGISTER not answered".into());
                self.drop_upstream_connection(i);
                self.register_failed(now, i, why);
            }
        }
    }

    fn register_failed(&mut self, now: Instant, i: usize, error: String) {
        let u = &mut self.upstreams.list[i];
        u.registering = false;
        u.answered = None;
        if u.state == UpstreamState::Unregistered {
            return;
        }
        let retry_in = u.retry_in;
        u.retry_in = (u.retry_in * 2).min(REGISTER_RETRY_MAX);
        u.next_register = Some(now + retry_in);
        u.last_error = Some(error.clone());
        let upstream = u.cfg.id.clone();
        if u.state == UpstreamState::Registered {
            self.upstream_lost(i, error.clone());
        }
        self.upstreams.list[i].state = UpstreamState::Retrying;
        self.emit(Event::UpstreamRegisterFailed { upstream, error, retry_in });
    }

    /// Upstream `i` is gone: its sessions end, keepalives stop.
    fn upstream_lost(&mut self, i: usize, error: String) {
        let u = &mut self.upstreams.list[i];
        u.state = UpstreamState::Retrying;
        u.next_keepalive = None;
        u.registered_at_ms = None;
        u.pages.clear();
        let upstream = u.cfg.id.clone();
        self.upstreams.subs.retain(|s| !s.is_of(&upstream));
        let calls: Vec<UpstreamCallHandle> = self.upstreams.calls.iter().filter(|(_, c)| c.upstream == upstream).map(|(h, _)| *h).collect();
        for handle in calls {
            self.upstreams.calls.remove(&handle);
            self.emit(Event::UpstreamPlayEnded { handle, reason: UpstreamEnd::UpstreamGone });
        }
        self.emit(Event::UpstreamLost { upstream, error });
        self.drop_upstream_connection(i);
    }

    pub(super) fn upstream_keepalive_done(&mut self, now: Instant, serial: u64, answer: Option<&SipMsg>) {
        let Some(i) = self.upstream_by_serial(serial).filter(|&i| !self.upstreams.list[i].leaving) else { return };
        let ok = answer.and_then(SipMsg::status).is_some_and(|s| (200..300).contains(&s));
        self.keepalive_done(now, i, ok);
    }

    fn keepalive_done(&mut self, now: Instant, i: usize, ok: bool) {
        let u = &mut self.upstreams.list[i];
        u.keepalive_in_flight = false;
        if ok {
            u.misses = 0;
            return;
        }
        u.misses += 1;
        if u.state == UpstreamState::Registered && u.misses >= u.cfg.keepalive_misses_max.max(1) {
            let error = format!("{} keepalives unanswered", u.misses);
            u.last_error = Some(error.clone());
            u.next_register = Some(now);
            u.misses = 0;
            self.upstream_lost(i, error);
        }
    }

    /// The upstream a request names as its sender (From user = its server id), if any.
    pub(super) fn upstream_sender(&self, msg: &SipMsg) -> Option<usize> {
        let user = msg.from_user()?;
        self.upstreams.list.iter().position(|u| u.cfg.server_id == user)
    }

    /// A request from upstream `i` (by its From). Only its configured address is believed,
    /// and only while registered with it (BYE and CANCEL of its sessions always).
    pub(super) fn on_upstream_request(&mut self, now: Instant, from: Peer, msg: &SipMsg, i: usize, method: &str, key: &ServerKey) -> Option<Reply> {
        let u = &self.upstreams.list[i];
        let registered = u.state == UpstreamState::Registered;
        let sent_by_it = same_sender(self.upstream_peer(i), from);
        if !sent_by_it || (!registered && !matches!(method, "BYE" | "CANCEL")) {
            let reason = if !sent_by_it { Refusal::WrongSource } else { Refusal::NotRegistered };
            match reason {
                Refusal::WrongSource => self.counters.spoofed += 1,
                _ => self.counters.refused += 1,
            }
            let device_id = Some(u.cfg.server_id.clone());
            self.emit(Event::Refused { peer: from, method: method.to_string(), device_id, reason });
            return Reply::status(403);
        }
        match method {
            "MESSAGE" => self.on_upstream_message(now, msg, i),
            "INVITE" => self.on_upstream_invite(from, msg, i, key),
            "BYE" => self.on_upstream_bye(from, msg),
            "CANCEL" => self.on_upstream_cancel(now, from, msg),
            "INFO" => self.on_upstream_info(from, msg),
            "OPTIONS" => Reply::status(200),
            "SUBSCRIBE" => self.on_upstream_subscribe(now, from, msg, i, key),
            _ => Reply::status(501),
        }
    }

    fn on_upstream_message(&mut self, now: Instant, msg: &SipMsg, i: usize) -> Option<Reply> {
        if msg.content_type().as_deref() != Some("application/manscdp+xml") {
            return Reply::status(415);
        }
        let (text, _) = decode_body(msg.body());
        let parsed = match manscdp::parse(&text) {
            Ok(p) if p.root == Root::Control && p.cmd_type == "DeviceControl" => return self.relay_device_control(now, i, &p.device_id, &text),
            Ok(p) if p.root == Root::Query || (p.root == Root::Notify && p.body == Body::Keepalive) => p,
            Ok(_) => return Reply::status(200),
            Err(_) => {
                self.counters.malformed += 1;
                return Reply::status(400);
            }
        };
        let sn = parsed.sn.unwrap_or(0);
        let cfg = self.upstreams.list[i].cfg.clone();
        let answer = match parsed.cmd_type.as_str() {
            "Catalog" => {
                // A newer catalog query replaces an answer still going out.
                let pages = self.catalog_pages(&cfg, sn, now);
                self.upstreams.list[i].pages.retain(|(kind, _)| *kind != Paced::Catalog);
                self.queue_pages(now, i, Paced::Catalog, pages);
                return Reply::status(200);
            }
            "RecordInfo" => return self.upstream_record_query(i, &parsed.device_id, sn, &text),
            "DeviceInfo" => {
                let channels = self.shared_channels(&cfg.shared).len();
                let xml = format!(
                    "<?xml version=\"1.0\" encoding=\"{}\"?>\r\n<Response>\r\n<CmdType>DeviceInfo</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{}</DeviceID>\r\n<Result>OK</Result>\r\n<DeviceName>{}</DeviceName>\r\n<Manufacturer>gmv</Manufacturer>\r\n<Model>gmv</Model>\r\n<Firmware>{}</Firmware>\r\n<Channel>{channels}</Channel>\r\n</Response>\r\n",
                    cfg.charset.label(),
                    cfg.local_id,
                    escape(&cfg.name),
                    env!("CARGO_PKG_VERSION"),
                );
                cfg.charset.encode(&xml)
            }
            "DeviceStatus" => {
                let asked = parsed.device_id.clone();
                let ours = cfg.channel_ids.down(&asked).unwrap_or_default();
                let online = match self.channel_owner(&ours).filter(|_| cfg.shared.contains(&ours)) {
                    Some((d, _)) => self.is_online(d, now),
                    None if asked == cfg.local_id => true,
                    None => return Reply::status(404),
                };
                let time = crate::proto::sip::gbtime::format_local((self.unix_ms(now) / 1000) as i64, self.cfg.utc_offset_s);
                let asked = escape(&asked);
                let xml = format!(
                    "<?xml version=\"1.0\" encoding=\"{}\"?>\r\n<Response>\r\n<CmdType>DeviceStatus</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{asked}</DeviceID>\r\n<Result>OK</Result>\r\n<Online>{}</Online>\r\n<Status>OK</Status>\r\n<Encode>ON</Encode>\r\n<Record>OFF</Record>\r\n<DeviceTime>{time}</DeviceTime>\r\n</Response>\r\n",
                    cfg.charset.label(),
                    if online { "ONLINE" } else { "OFFLINE" },
                );
                cfg.charset.encode(&xml)
            }
            _ => return Reply::status(200),
        };
        // The 200 goes first (the endpoint replies after this returns), the answer with it.
        self.upstreams.list[i].answers.push_back(answer);
        Reply::status(200)
    }

    /// Paced pages for upstream `i`, as many as the queue takes (the rest dropped, counted).
    pub(super) fn queue_pages(&mut self, now: Instant, i: usize, kind: Paced, pages: Vec<Vec<u8>>) {
        let u = &mut self.upstreams.list[i];
        let room = CATALOG_PAGES_QUEUED_MAX.saturating_sub(u.pages.len());
        let dropped = pages.len().saturating_sub(room);
        u.pages.extend(pages.into_iter().take(room).map(|p| (kind.clone(), p)));
        u.next_page = u.next_page.max(now);
        self.counters.outputs_dropped += dropped as u64;
    }

    /// RecordInfo from above for a shared channel: the driver searches the device.
    fn upstream_record_query(&mut self, i: usize, asked: &str, sn: u32, xml: &str) -> Option<Reply> {
        let cfg = &self.upstreams.list[i].cfg;
        let channel_id = &cfg.channel_ids.down(asked).unwrap_or_default();
        let shared = cfg.shared.contains(channel_id);
        let Some((device, _)) = self.channel_owner(channel_id).filter(|_| shared) else {
            self.counters.refused += 1;
            return Some(Reply { code: 404, reason: "Not Found", extra: Vec::new(), body: None });
        };
        let offset = self.cfg.utc_offset_for(&device.device_id);
        let time = |tag: &str| manscdp::element(xml, tag).and_then(|t| crate::proto::sip::gbtime::parse_local(t.trim(), offset));
        let (Some(start), Some(end)) = (time("StartTime"), time("EndTime")) else {
            self.counters.malformed += 1;
            return Reply::status(400);
        };
        let record_type = manscdp::element(xml, "Type").and_then(|t| RecordType::parse(t.trim())).unwrap_or(RecordType::All);
        let records = UpstreamRecords {
            upstream: self.upstreams.list[i].cfg.id.clone(),
            sn,
            device_id: device.device_id.clone(),
            channel_id: channel_id.to_string(),
            start,
            end,
            record_type,
        };
        self.emit(Event::UpstreamRecords(Box::new(records)));
        Reply::status(200)
    }

    /// The driver's answer to `Event::UpstreamRecords`: the recordings found (none when the
    /// search failed), sent up in paced RecordInfo Responses with the upstream's SN.
    pub(super) fn upstream_records_answer(&mut self, now: Instant, upstream: &str, sn: u32, channel_id: &str, items: &[Recording]) -> bool {
        let Some(i) = self.upstream_index(upstream) else { return false };
        let cfg = self.upstreams.list[i].cfg.clone();
        let offset = self.channel_owner(channel_id).map_or(self.cfg.utc_offset_s, |(d, _)| self.cfg.utc_offset_for(&d.device_id));
        let time = |t: i64| crate::proto::sip::gbtime::format_local(t, offset);
        let channel_id = cfg.channel_ids.up(channel_id);
        let rendered: Vec<String> = items
            .iter()
            .take(CATALOG_PAGES_QUEUED_MAX * CATALOG_ITEMS_PER_MESSAGE)
            .map(|r| {
                format!(
                    "<Item>\r\n<DeviceID>{channel_id}</DeviceID>\r\n<Name>{}</Name>\r\n<FilePath>{}</FilePath>\r\n<Address>{}</Address>\r\n<StartTime>{}</StartTime>\r\n<EndTime>{}</EndTime>\r\n<Secrecy>0</Secrecy>\r\n<Type>{}</Type>\r\n</Item>\r\n",
                    escape(&r.name),
                    escape(&r.file_path),
                    escape(&r.address),
                    time(r.start),
                    time(r.end),
                    escape(if r.record_type.is_empty() { "time" } else { &r.record_type }),
                )
            })
            .collect();
        let total = rendered.len();
        let page = |chunk: &[String]| {
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"{}\"?>\r\n<Response>\r\n<CmdType>RecordInfo</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{channel_id}</DeviceID>\r\n<SumNum>{total}</SumNum>\r\n<RecordList Num=\"{}\">\r\n{}</RecordList>\r\n</Response>\r\n",
                cfg.charset.label(),
                chunk.len(),
                chunk.concat()
            );
            cfg.charset.encode(&xml)
        };
        let pages = if rendered.is_empty() { vec![page(&[])] } else { rendered.chunks(CATALOG_ITEMS_PER_MESSAGE).map(page).collect() };
        self.queue_pages(now, i, Paced::Answer, pages);
        true
    }

    /// A device's alarm for a shared channel (or device) goes up to every upstream registered
    /// (GB/T 28181 §9.4: a lower platform passes alarms on), as the device reported it.
    pub(super) fn forward_alarm(&mut self, now: Instant, alarm: &manscdp::Alarm) {
        for i in 0..self.upstreams.list.len() {
            let u = &self.upstreams.list[i];
            if u.state != UpstreamState::Registered || !u.cfg.shared.contains(&alarm.device_id) {
                continue;
            }
            let (charset, reported) = (u.cfg.charset, escape(u.cfg.channel_ids.up(&alarm.device_id)));
            let sn = self.new_sn();
            let mut xml = format!(
                "<?xml version=\"1.0\" encoding=\"{}\"?>\r\n<Notify>\r\n<CmdType>Alarm</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{}</DeviceID>\r\n<AlarmPriority>{}</AlarmPriority>\r\n<AlarmMethod>{}</AlarmMethod>\r\n<AlarmTime>{}</AlarmTime>\r\n<AlarmDescription>{}</AlarmDescription>\r\n",
                charset.label(),
                reported,
                alarm.priority,
                alarm.method,
                escape(&alarm.time),
                escape(&alarm.description),
            );
            if let (Some(lon), Some(lat)) = (alarm.longitude, alarm.latitude) {
                xml.push_str(&format!("<Longitude>{lon}</Longitude>\r\n<Latitude>{lat}</Latitude>\r\n"));
            }
            if let Some(t) = alarm.alarm_type {
                xml.push_str(&format!("<Info>\r\n<AlarmType>{t}</AlarmType>\r\n</Info>\r\n"));
            }
            xml.push_str("</Notify>\r\n");
            // In its alarm subscription when it holds one (as a NOTIFY), else as a MESSAGE.
            match self.upstream_sub(i, super::subscribe::SubKind::Alarm) {
                Some(call_id) => self.send_sub_notify(now, i, &call_id, charset.encode(&xml)),
                None => self.send_upstream_message(now, i, charset.encode(&xml), Purpose::Fire),
            }
        }
    }

    /// A DeviceControl from above (PTZ, presets, a keyframe, recording...) for a shared
    /// channel goes to its device as it came (the command bytes untouched); the device's own
    /// 200 is its answer there. A channel not shared, or unknown, is 404; one whose device is
    /// offline 480.
    fn relay_device_control(&mut self, now: Instant, i: usize, asked: &str, xml: &str) -> Option<Reply> {
        let cfg = &self.upstreams.list[i].cfg;
        let channel_id = &cfg.channel_ids.down(asked).unwrap_or_default();
        // A channel the upstream knows by another id is named by ours to its device.
        let renamed;
        let xml = if channel_id != asked {
            renamed = xml.replacen(&format!("<DeviceID>{asked}</DeviceID>"), &format!("<DeviceID>{channel_id}</DeviceID>"), 1);
            renamed.as_str()
        } else {
            xml
        };
        let shared = cfg.shared.contains(channel_id);
        let Some((device, _)) = self.channel_owner(channel_id).filter(|_| shared) else {
            self.counters.refused += 1;
            return Some(Reply { code: 404, reason: "Not Found", extra: Vec::new(), body: None });
        };
        let device_id = device.device_id.clone();
        let Ok(peer) = self.reachable_channel(now, &device_id, channel_id) else {
            return Some(Reply { code: 480, reason: "Temporarily Unavailable", extra: Vec::new(), body: None });
        };
        if !self.send_manscdp(now, &device_id, peer, xml, Purpose::Fire) {
            return Some(Reply { code: 486, reason: "Busy Here", extra: Vec::new(), body: None });
        }
        // Its Response (guard, record, alarm reset... have one) comes back under this SN.
        if let Some(sn) = manscdp::element(xml, "SN").and_then(|v| v.trim().parse().ok()) {
            let relays = &mut self.upstreams.relays;
            relays.retain(|r| r.until > now);
            if relays.len() >= RELAYS_MAX {
                relays.pop_front();
            }
            let upstream = self.upstreams.list[i].cfg.id.clone();
            relays.push_back(Relay { upstream, device_id, sn, until: now + transaction::TRANSACTION_TIMEOUT });
        }
        Reply::status(200)
    }

    /// A device's DeviceControl/DeviceConfig Response: when it answers a command relayed from
    /// above, it goes up (same SN, the device's result) and true.
    pub(super) fn relay_result_up(&mut self, now: Instant, device_id: &str, sn: u32, cmd_type: &str, target: &str, result: &str) -> bool {
        let found = self.upstreams.relays.iter().position(|r| r.device_id == device_id && r.sn == sn && r.until > now);
        let Some(r) = found.and_then(|at| self.upstreams.relays.remove(at)) else { return false };
        let Some(i) = self.upstream_index(&r.upstream).filter(|&i| self.upstreams.list[i].state == UpstreamState::Registered) else { return true };
        let cfg = &self.upstreams.list[i].cfg;
        let charset = cfg.charset;
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"{}\"?>\r\n<Response>\r\n<CmdType>{}</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{}</DeviceID>\r\n<Result>{}</Result>\r\n</Response>\r\n",
            charset.label(),
            escape(cmd_type),
            escape(cfg.channel_ids.up(target)),
            escape(result)
        );
        self.send_upstream_message(now, i, charset.encode(&xml), Purpose::Fire);
        true
    }

    /// The shared channels as Catalog Response bodies, `CATALOG_ITEMS_PER_MESSAGE` each.
    fn catalog_pages(&self, cfg: &UpstreamConfig, sn: u32, now: Instant) -> Vec<Vec<u8>> {
        self.catalog_bodies(cfg, sn, now, "Response")
    }

    /// The shared channels as Catalog bodies under `root` (Response to a query, Notify in a
    /// subscription), `CATALOG_ITEMS_PER_MESSAGE` each.
    pub(super) fn catalog_bodies(&self, cfg: &UpstreamConfig, sn: u32, now: Instant, root: &str) -> Vec<Vec<u8>> {
        // Groups first, so an upper platform has the tree before the channels hung in it.
        let groups = cfg.groups.iter().map(|g| {
            let parent = g.parent.as_deref().map(|p| format!("<ParentID>{p}</ParentID>\r\n")).unwrap_or_default();
            let business = match business_group(&cfg.groups, &g.id) {
                Some(b) if id_type(&g.id) == Some("216") => format!("<BusinessGroupID>{b}</BusinessGroupID>\r\n"),
                _ => String::new(),
            };
            format!("<Item>\r\n<DeviceID>{}</DeviceID>\r\n<Name>{}</Name>\r\n{parent}{business}</Item>\r\n", g.id, escape(&g.name))
        });
        let channels = self.shared_channels(&cfg.shared).into_iter().map(|(d, c)| self.catalog_item(cfg, d, c, now, None));
        let items: Vec<String> = groups.chain(channels).take(CATALOG_PAGES_QUEUED_MAX * CATALOG_ITEMS_PER_MESSAGE).collect();
        catalog_page_bodies(cfg, sn, root, &items)
    }

    /// One channel as a catalog item (with `event` in a catalog notification).
    pub(super) fn catalog_item(&self, cfg: &UpstreamConfig, d: &super::Device, c: &manscdp::CatalogItem, now: Instant, event: Option<&str>) -> String {
        let civil = c.device_id.get(..6).unwrap_or(&cfg.domain);
        let status = if self.is_online(d, now) && c.status != "OFF" { "ON" } else { "OFF" };
        let event = event.map(|e| format!("<Event>{e}</Event>\r\n")).unwrap_or_default();
        let group = cfg.channel_groups.get(&c.device_id);
        let business = group.and_then(|g| business_group(&cfg.groups, g)).map(|b| format!("<BusinessGroupID>{b}</BusinessGroupID>\r\n")).unwrap_or_default();
        format!(
            "<Item>\r\n<DeviceID>{}</DeviceID>\r\n<Name>{}</Name>\r\n<Manufacturer>{}</Manufacturer>\r\n<Model>{}</Model>\r\n<Owner>0</Owner>\r\n<CivilCode>{civil}</CivilCode>\r\n<Address>{}</Address>\r\n<Parental>0</Parental>\r\n<ParentID>{}</ParentID>\r\n<SafetyWay>0</SafetyWay>\r\n<RegisterWay>1</RegisterWay>\r\n<Secrecy>0</Secrecy>\r\n<Status>{status}</Status>\r\n{business}{event}</Item>\r\n",
            cfg.channel_ids.up(&c.device_id),
            escape(if c.name.is_empty() { &c.device_id } else { &c.name }),
            escape(if c.manufacturer.is_empty() { &d.info.manufacturer } else { &c.manufacturer }),
            escape(&d.info.model),
            escape(&c.address),
            group.unwrap_or(&cfg.local_id),
        )
    }

    fn on_upstream_invite(&mut self, from: Peer, msg: &SipMsg, i: usize, key: &ServerKey) -> Option<Reply> {
        let cfg = &self.upstreams.list[i].cfg;
        let channel_id = request_user(msg).or_else(|| msg.header("To").as_deref().and_then(crate::proto::sip::message::uri_user));
        let Some(asked) = channel_id.filter(|c| super::valid_id(c)) else { return Reply::status(400) };
        let channel_id = cfg.channel_ids.down(&asked).unwrap_or_default();
        let owner = self.channel_owner(&channel_id).filter(|_| cfg.shared.contains(&channel_id)).map(|(d, _)| d.device_id.clone());
        let Some(device_id) = owner else {
            self.counters.refused += 1;
            return Some(Reply { code: 404, reason: "Not Found", extra: Vec::new(), body: None });
        };
        let Ok(sdp) = Sdp::parse(msg.body()) else {
            self.counters.malformed += 1;
            return Reply::status(400);
        };
        let Some(kind) = offered_kind(&sdp, msg.body()) else {
            self.counters.malformed += 1;
            return Some(Reply { code: 488, reason: "Not Acceptable Here", extra: Vec::new(), body: None });
        };
        let Some(media) = offered_media(&sdp, "video") else {
            self.counters.malformed += 1;
            return Reply::status(400);
        };
        let Some(ssrc) = sdp.gb_ssrc.as_deref().and_then(|y| y.parse::<u32>().ok()) else {
            self.counters.malformed += 1;
            return Reply::status(400);
        };
        if self.upstreams.calls.len() >= UPSTREAM_CALLS_MAX {
            self.counters.refused += 1;
            return Some(Reply { code: 486, reason: "Busy Here", extra: Vec::new(), body: None });
        }
        // Two sessions sending one channel under one SSRC would be one sender replacing the other.
        if self.upstreams.calls.values().any(|c| c.channel_id == channel_id && c.ssrc == ssrc) {
            self.counters.refused += 1;
            return Some(Reply { code: 488, reason: "Not Acceptable Here", extra: Vec::new(), body: None });
        }
        let our_tag = self.rng.hex()[..10].to_string();
        let Some(dialog) = UasDialog::accept(msg, from, our_tag) else { return Reply::status(400) };
        let handle = self.upstreams.next_handle;
        self.upstreams.next_handle += 1;
        let upstream = cfg.id.clone();
        self.upstreams.calls.insert(
            handle,
            UpstreamCall {
                upstream: upstream.clone(),
                invite: msg.clone(),
                key: key.clone(),
                dialog,
                media,
                ssrc,
                channel_id: channel_id.clone(),
                kind,
                state: CallState::Answering,
            },
        );
        self.emit(Event::UpstreamPlay(Box::new(UpstreamPlay { handle, upstream, device_id, channel_id, media, ssrc, kind })));
        Some(Reply { code: 100, reason: "Trying", extra: Vec::new(), body: None })
    }

    /// The driver's answer to `Event::UpstreamPlay`: false when the session is gone (CANCEL
    /// or the upstream lost meanwhile: the driver stops what it started).
    pub(super) fn upstream_answer(&mut self, now: Instant, handle: UpstreamCallHandle, result: Result<UpstreamMediaAnswer, UpstreamRefusal>) -> bool {
        let Some(c) = self.upstreams.calls.get(&handle).filter(|c| c.state == CallState::Answering) else { return false };
        let Some(i) = self.upstream_index(&c.upstream) else { return false };
        let cfg = &self.upstreams.list[i].cfg;
        let transport = if cfg.tcp { ";transport=tcp" } else { "" };
        let local_id = cfg.local_id.clone();
        let contact = format!("<sip:{local_id}@{}{transport}>", self.cfg.local);
        let answer = match &result {
            Ok(a) => {
                let ip = a.media_ip.clone().unwrap_or_else(|| self.cfg.media_ip.clone());
                let (proto, setup) = c.media.answer_lines();
                let (start, end) = c.kind.range().unwrap_or((0, 0));
                let sdp = format!(
                    "v=0\r\no={local_id} 0 0 IN IP4 {ip}\r\ns={}\r\nc=IN IP4 {ip}\r\nt={start} {end}\r\nm=video {} {proto} 96\r\na=sendonly\r\na=rtpmap:96 PS/90000\r\n{setup}y={:010}\r\nf=\r\n",
                    c.kind.session_name(),
                    a.port,
                    c.ssrc
                );
                Ok((contact, sdp))
            }
            Err(refusal) => Err(*refusal),
        };
        let peer = c.dialog.peer;
        let answer = self.answer_invite(now, &c.invite.clone(), &c.key.clone(), &c.dialog.clone(), answer);
        match result {
            Ok(_) => {
                if let Some(c) = self.upstreams.calls.get_mut(&handle) {
                    c.state = CallState::answered(answer, peer, now, ACK_WAIT);
                }
            }
            Err(_) => {
                self.upstreams.calls.remove(&handle);
            }
        }
        true
    }

    /// Our final answer to a peer's INVITE in `dialog`: a 200 with our Contact and SDP, or the
    /// refusal's status; remembered for the INVITE's retransmissions and sent. Its bytes (a 200
    /// is resent until the ACK).
    pub(super) fn answer_invite(&mut self, now: Instant, invite: &SipMsg, key: &ServerKey, dialog: &UasDialog, answer: Result<(String, String), UpstreamRefusal>) -> Vec<u8> {
        let (to, tag) = (dialog.peer.addr(), &dialog.our_tag);
        let bytes = match answer {
            Ok((contact, sdp)) => response(invite, to, 200, "OK", tag, &[("Contact", contact)], Some(("application/sdp", sdp.as_bytes()))),
            Err(refusal) => {
                let (code, reason) = refusal.status();
                response(invite, to, code, reason, tag, &[], None)
            }
        };
        self.server.remember(now, key.clone(), bytes.clone());
        self.send(dialog.peer, bytes.clone());
        bytes
    }

    /// An ACK from upstream confirms our 200 (true when it was one of ours).
    pub(super) fn upstream_ack(&mut self, from: Peer, msg: &SipMsg) -> bool {
        let call_id = msg.call_id().unwrap_or_default();
        let Some(c) = self.upstreams.calls.values_mut().find(|c| c.dialog.call_id == call_id && same_sender(c.dialog.peer, from)) else { return false };
        if matches!(c.state, CallState::Answered { .. }) {
            c.state = CallState::Confirmed;
        }
        true
    }

    fn on_upstream_bye(&mut self, from: Peer, msg: &SipMsg) -> Option<Reply> {
        let call_id = msg.call_id().unwrap_or_default();
        let found = self.upstreams.calls.iter().find(|(_, c)| c.dialog.call_id == call_id && same_sender(c.dialog.peer, from)).map(|(h, c)| (*h, c.dialog.their_tag.clone()));
        let Some((handle, their_tag)) = found else { return Reply::status(481) };
        if msg.from_tag().as_deref() != Some(their_tag.as_str()) {
            self.counters.spoofed += 1;
            return Reply::status(481);
        }
        self.upstreams.calls.remove(&handle);
        self.emit(Event::UpstreamPlayEnded { handle, reason: UpstreamEnd::UpstreamBye });
        Reply::status(200)
    }

    /// MANSRTSP from above in a playback's dialog (pause, resume, seek, speed): passed to the
    /// device's playback by the driver.
    fn on_upstream_info(&mut self, from: Peer, msg: &SipMsg) -> Option<Reply> {
        let call_id = msg.call_id().unwrap_or_default();
        let found = self.upstreams.calls.iter().find(|(_, c)| c.dialog.call_id == call_id && same_sender(c.dialog.peer, from)).map(|(h, c)| (*h, c.kind));
        let Some((handle, kind)) = found else { return Reply::status(481) };
        let action = std::str::from_utf8(msg.body()).ok().and_then(crate::proto::sip::mansrtsp::parse);
        let Some(action) = action.filter(|_| !kind.is_live()) else {
            self.counters.malformed += 1;
            return Reply::status(400);
        };
        self.emit(Event::UpstreamPlaybackControl { handle, action });
        Reply::status(200)
    }

    fn on_upstream_cancel(&mut self, now: Instant, from: Peer, msg: &SipMsg) -> Option<Reply> {
        let call_id = msg.call_id().unwrap_or_default();
        let found = self.upstreams.calls.iter().find(|(_, c)| c.dialog.call_id == call_id && same_sender(c.dialog.peer, from)).map(|(h, c)| (*h, c.state.clone()));
        let Some((handle, state)) = found else { return Reply::status(481) };
        if state == CallState::Answering {
            // The INVITE ends 487 (RFC 3261 §9.2); the driver stops what it started.
            if let Some(c) = self.upstreams.calls.remove(&handle) {
                let bytes = response(&c.invite, c.dialog.peer.addr(), 487, "Request Terminated", &c.dialog.our_tag, &[], None);
                self.server.remember(now, c.key.clone(), bytes.clone());
                self.send(c.dialog.peer, bytes);
            }
            self.emit(Event::UpstreamPlayEnded { handle, reason: UpstreamEnd::UpstreamBye });
        }
        Reply::status(200)
    }

    /// The recording an upstream's playback or download sends came to its end at the device
    /// (its MediaStatus 121): the upstream is told as a device tells a platform, a Notify
    /// MediaStatus 121 MESSAGE from our id, under the session's Call-ID (by which an upper
    /// platform finds the session), before our BYE. False when the session is gone or live.
    pub(super) fn upstream_media_end(&mut self, now: Instant, handle: UpstreamCallHandle) -> bool {
        let sn = self.new_sn();
        let Some(c) = self.upstreams.calls.get_mut(&handle).filter(|c| !c.kind.is_live() && c.state != CallState::Answering) else {
            return false;
        };
        let UasDialog { cseq, call_id, .. } = c.dialog.step();
        let (channel_id, upstream) = (c.channel_id.clone(), c.upstream.clone());
        let Some(i) = self.upstream_index(&upstream) else { return false };
        let cfg = &self.upstreams.list[i].cfg;
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"{}\"?>\r\n<Notify>\r\n<CmdType>MediaStatus</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{}</DeviceID>\r\n<NotifyType>121</NotifyType>\r\n</Notify>\r\n",
            cfg.charset.label(),
            cfg.channel_ids.up(&channel_id)
        );
        let body = cfg.charset.encode(&xml);
        self.send_upstream_message_timed(now, i, body, Purpose::Fire, transaction::TRANSACTION_TIMEOUT, Some((call_id, cseq)));
        true
    }

    /// Our next request in an upstream's dialog `d` (already stepped) with upstream `i`; nobody
    /// waits for its answer.
    pub(super) fn send_in_dialog(&mut self, now: Instant, i: usize, d: &UasDialog, method: &str, extra: Vec<(&str, String)>, body: Option<(&str, &[u8])>) {
        let branch = self.rng.hex();
        let bytes = self.upstream_request(
            i,
            method,
            d.remote_target.clone(),
            (d.our_uri.clone(), &d.our_tag),
            (d.their_uri.clone(), Some(&d.their_tag)),
            &d.call_id,
            d.cseq,
            &branch,
            extra,
            body,
        );
        let key = TxKey { call_id: d.call_id.clone(), cseq: d.cseq, method: method.into() };
        // Over TCP the upper platform may have sent its request on a connection of its own:
        // ours go over the connection dialled to it.
        self.start_transaction(now, key, self.upstream_peer(i), bytes, Purpose::Fire, transaction::TRANSACTION_TIMEOUT);
    }

    /// Ends an upstream session from this side (its media stopped): BYE once answered.
    pub(super) fn upstream_hang_up(&mut self, now: Instant, handle: UpstreamCallHandle) -> bool {
        let Some(c) = self.upstreams.calls.remove(&handle) else { return false };
        let Some(i) = self.upstream_index(&c.upstream) else { return true };
        if c.state == CallState::Answering {
            let bytes = response(&c.invite, c.dialog.peer.addr(), 500, "Server Internal Error", &c.dialog.our_tag, &[], None);
            self.server.remember(now, c.key.clone(), bytes.clone());
            self.send(c.dialog.peer, bytes);
            return true;
        }
        let mut dialog = c.dialog;
        self.send_in_dialog(now, i, &dialog.step(), "BYE", vec![], None);
        true
    }
}

/// The user of a request's Request-URI.
fn request_user(msg: &SipMsg) -> Option<String> {
    match &msg.inner {
        rsip::SipMessage::Request(r) => crate::proto::sip::message::uri_user(&format!("<{}>", r.uri)),
        rsip::SipMessage::Response(_) => None,
    }
}

/// What an offer asks for: `s=Play` live; `s=Playback`/`s=Download` the range of its `t=` line
/// (unix seconds, start before end), a download at its `a=downloadspeed`.
fn offered_kind(sdp: &Sdp, body: &[u8]) -> Option<PlayKind> {
    let text = std::str::from_utf8(body).ok()?;
    let line = |prefix: &str| text.lines().find_map(|l| l.trim().strip_prefix(prefix).map(str::trim));
    let range = || -> Option<(u64, u64)> {
        let mut t = line("t=")?.split_whitespace().map(|n| n.parse::<u64>().ok());
        let (start, end) = (t.next()??, t.next()??);
        (start < end).then_some((start, end))
    };
    match sdp.session_name.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("play") => Some(PlayKind::Live),
        Some("playback") => range().map(|(start, end)| PlayKind::Playback { start, end }),
        Some("download") => {
            let speed = line("a=downloadspeed:").and_then(|s| s.parse().ok()).unwrap_or(1u32).clamp(1, 16);
            range().map(|(start, end)| PlayKind::Download { start, end, speed })
        }
        Some(_) => None,
    }
}

/// Where an INVITE's offer wants the video: its `c=` address and first `m=video` port.
pub(super) fn offered_media(sdp: &Sdp, kind: &str) -> Option<UpstreamMedia> {
    // The session's address, or the origin's when a sloppy peer gives no c= line.
    let address = sdp.connection.as_deref().or(sdp.origin.as_deref())?;
    let ip: std::net::IpAddr = address.split_whitespace().last()?.parse().ok()?;
    let m = sdp.media.iter().find(|m| m.kind == kind).or(sdp.media.first())?;
    let to = SocketAddr::new(ip, m.port);
    if !m.protocol.to_ascii_uppercase().starts_with("TCP") {
        return (m.port != 0 && !ip.is_unspecified()).then_some(UpstreamMedia::Udp(to));
    }
    match m.setup.as_deref() {
        Some("active") => Some(UpstreamMedia::TcpListen),
        _ => (m.port != 0 && !ip.is_unspecified()).then_some(UpstreamMedia::TcpDial(to)),
    }
}
