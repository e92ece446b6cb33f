//! Play of device channels: live (per channel a Pending state, a second play joins it, and a
//! Live session) and history (playback and download of the device's recordings: a session
//! each, controlled with MANSRTSP INFO, ended by MediaStatus 121). Each session keeps its
//! dialog (Call-ID, both tags, our CSeq). INVITE answered 2xx is ACKed (again
//! when the 2xx repeats); an INVITE given up on is CANCELled once it is proceeding, and a 2xx
//! that arrives after that is ACKed and BYE'd so no dialog leaks.

use super::control::{ControlError, ControlHandle};
use super::transaction::{Purpose, TRANSACTION_TIMEOUT, TxKey};
use super::{EndReason, Endpoint, Event, Peer, Refusal, Reply, StreamUse};
use crate::proto::sdp::Sdp;
use crate::proto::sip::SipMsg;
use crate::proto::sip::mansrtsp::PlaybackAction;
use crate::proto::ssrc::stream_id;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Instant;

/// Sessions (live and pending) at once; more play requests get Busy.
pub const SESSIONS_MAX: usize = 10_000;
/// INVITEs given up on, remembered so a late 2xx is ACKed and BYE'd.
pub const ABANDONED_INVITES_MAX: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PlayHandle(pub u64);

/// How the device sends media (GB/T 28181 §6.3: UDP, or TCP with us listening or connecting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaTransport {
    Udp,
    /// a=setup:passive: the device connects to our port.
    TcpPassive,
    /// a=setup:active: we connect to the device's port.
    TcpActive,
}

impl Serialize for MediaTransport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for MediaTransport {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        MediaTransport::parse(&name).ok_or_else(|| serde::de::Error::custom(format!("transport {name:?}: udp, tcp-passive or tcp-active")))
    }
}

impl MediaTransport {
    pub fn parse(s: &str) -> Option<MediaTransport> {
        match s.to_ascii_lowercase().as_str() {
            "udp" => Some(MediaTransport::Udp),
            "tcp" | "tcp-passive" => Some(MediaTransport::TcpPassive),
            "tcp-active" => Some(MediaTransport::TcpActive),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            MediaTransport::Udp => "udp",
            MediaTransport::TcpPassive => "tcp-passive",
            MediaTransport::TcpActive => "tcp-active",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlayError {
    UnknownDevice,
    Offline,
    UnknownChannel,
    Busy,
    NoPort(String),
    Timeout,
    Rejected(u16),
    /// Stopped while the INVITE was pending.
    Cancelled,
    /// TCP active: the device's media port could not be reached.
    MediaConnect(String),
    /// A recorded range that ends before it starts.
    BadRange,
}

impl From<super::Unreachable> for PlayError {
    fn from(u: super::Unreachable) -> PlayError {
        match u {
            super::Unreachable::UnknownDevice => PlayError::UnknownDevice,
            super::Unreachable::UnknownChannel => PlayError::UnknownChannel,
            super::Unreachable::Offline => PlayError::Offline,
        }
    }
}

/// What an operator reads (the API's `message`, the console).
impl std::fmt::Display for PlayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlayError::UnknownDevice => f.write_str("no such device"),
            PlayError::UnknownChannel => f.write_str("the device has no such channel"),
            PlayError::Offline => f.write_str("the device is offline"),
            PlayError::Busy => f.write_str("too many plays at once; try again"),
            PlayError::NoPort(why) => write!(f, "no stream could be opened: {why}"),
            PlayError::Timeout => f.write_str("the device did not answer the INVITE"),
            PlayError::Rejected(status) => write!(f, "the device refused the INVITE (SIP {status})"),
            PlayError::Cancelled => f.write_str("stopped before the device answered"),
            PlayError::MediaConnect(why) => write!(f, "the device's media port could not be reached (TCP active): {why}"),
            PlayError::BadRange => f.write_str("the range ends before it starts"),
        }
    }
}

impl PlayError {
    pub fn http(&self) -> (u16, &'static str) {
        match self {
            PlayError::UnknownDevice | PlayError::UnknownChannel => (404, "not_found"),
            PlayError::Offline => (409, "device_offline"),
            PlayError::Cancelled => (409, "cancelled"),
            PlayError::Busy => (503, "busy"),
            PlayError::NoPort(_) => (503, "no_port"),
            PlayError::Timeout => (504, "device_timeout"),
            PlayError::Rejected(_) => (502, "device_rejected"),
            PlayError::MediaConnect(_) => (502, "media_connect_failed"),
            PlayError::BadRange => (400, "bad_request"),
        }
    }
}

/// How a device is asked for its sub-stream (辅码流) in the INVITE's SDP: vendors and the
/// 2022 edition of GB/T 28181 differ (as wvp-GB28181-pro lists them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum SubStreamAttr {
    /// `a=stream:1` (common).
    #[serde(rename = "stream")]
    Stream,
    /// `a=streamnumber:1` (GB/T 28181-2022).
    #[serde(rename = "streamnumber")]
    StreamNumber,
    /// `a=streamprofile:1` (Dahua).
    #[serde(rename = "streamprofile")]
    StreamProfile,
    /// `a=streamMode:sub` (Mercury, TP-LINK).
    #[serde(rename = "streamMode")]
    StreamMode,
}

impl SubStreamAttr {
    pub fn sdp_line(self) -> &'static str {
        match self {
            SubStreamAttr::Stream => "a=stream:1\r\n",
            SubStreamAttr::StreamNumber => "a=streamnumber:1\r\n",
            SubStreamAttr::StreamProfile => "a=streamprofile:1\r\n",
            SubStreamAttr::StreamMode => "a=streamMode:sub\r\n",
        }
    }
}

/// Third part of a live sub-stream session's key (a history session's is its handle, from 1).
const SUB_STREAM_KEY: u64 = u64::MAX;

/// What is played: the live picture (main or sub-stream), or a range of the device's
/// recordings (unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlayKind {
    Live,
    /// The live sub-stream, asked for with the device's attribute.
    LiveSub(SubStreamAttr),
    Playback {
        start: u64,
        end: u64,
    },
    /// `speed`: how much faster than real time the device may send (`a=downloadspeed`).
    Download {
        start: u64,
        end: u64,
        speed: u32,
    },
}

impl PlayKind {
    pub fn name(self) -> &'static str {
        match self {
            PlayKind::Live | PlayKind::LiveSub(_) => "live",
            PlayKind::Playback { .. } => "playback",
            PlayKind::Download { .. } => "download",
        }
    }

    pub fn range(self) -> Option<(u64, u64)> {
        match self {
            PlayKind::Live | PlayKind::LiveSub(_) => None,
            PlayKind::Playback { start, end } | PlayKind::Download { start, end, .. } => Some((start, end)),
        }
    }

    /// The live picture, main or sub-stream (one session per channel for each).
    pub fn is_live(self) -> bool {
        matches!(self, PlayKind::Live | PlayKind::LiveSub(_))
    }

    /// SDP `s=` (GB/T 28181 §9.8: Play, Playback, Download).
    pub(super) fn session_name(self) -> &'static str {
        match self {
            PlayKind::Live | PlayKind::LiveSub(_) => "Play",
            PlayKind::Playback { .. } => "Playback",
            PlayKind::Download { .. } => "Download",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlayStart {
    Live(Box<Session>),
    /// Another play of this channel is pending: wait for its answer.
    Joined(PlayHandle),
    /// New: open a stream, then `Command::Invite` (or `Abandon`).
    Open(PlayHandle),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Session {
    pub device_id: String,
    pub channel_id: String,
    pub stream_id: String,
    pub ssrc: u32,
    /// The SSRC the device said it will send (`y=` of its answer); the stream owns its port.
    pub device_ssrc: Option<u32>,
    /// Where its media is taken from: the device's signalling address and its answer's `c=`
    /// (see `media_sources`).
    pub media_from: Vec<std::net::IpAddr>,
    pub transport: &'static str,
    /// live, playback or download.
    pub kind: &'static str,
    /// A live sub-stream (辅码流) rather than the main stream.
    pub sub_stream: bool,
    /// The recorded range played (unix seconds); none for live.
    pub start: Option<u64>,
    pub end: Option<u64>,
    /// Unix seconds.
    pub started_at: u64,
    #[serde(skip)]
    pub play_kind: PlayKind,
    #[serde(skip)]
    pub(super) dialog: Dialog,
    /// CSeq of the MANSRTSP bodies sent in this dialog.
    #[serde(skip)]
    rtsp_cseq: u32,
    #[serde(skip)]
    started: Instant,
    #[serde(skip)]
    no_viewer_since: Option<Instant>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Dialog {
    pub(super) call_id: String,
    /// Ours.
    pub(super) from_tag: String,
    /// The device's (some devices send none).
    to_tag: Option<String>,
    peer: Peer,
    /// Our latest CSeq in the dialog (the INVITE's, then each INFO's).
    cseq: u32,
}

#[derive(Debug)]
struct Pending {
    handle: PlayHandle,
    kind: PlayKind,
    transport: MediaTransport,
    invite: Option<Inviting>,
    cancelled: bool,
}

#[derive(Debug, Clone)]
struct Inviting {
    ssrc: u32,
    call_id: String,
    from_tag: String,
    branch: String,
    cseq: u32,
    peer: Peer,
    provisional: bool,
}

#[derive(Debug)]
struct Abandoned {
    peer: Peer,
    channel_id: String,
    from_tag: String,
    cseq: u32,
    until: Instant,
}

/// (device, channel, 0) for live play (one per channel), (device, channel, `SUB_STREAM_KEY`)
/// for its sub-stream; (device, channel, handle) for each history session.
type ChannelKey = (String, String, u64);

#[derive(Debug, Default)]
pub struct Plays {
    live: BTreeMap<ChannelKey, Session>,
    pending: BTreeMap<ChannelKey, Pending>,
    by_handle: HashMap<PlayHandle, ChannelKey>,
    next_handle: u64,
    abandoned: HashMap<String, Abandoned>,
}

impl Plays {
    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.live.values()
    }

    /// Whether a session or a pending INVITE of this endpoint has `ssrc`.
    pub(super) fn uses_ssrc(&self, ssrc: u32) -> bool {
        self.live.values().any(|s| s.ssrc == ssrc) || self.pending.values().any(|p| p.invite.as_ref().is_some_and(|i| i.ssrc == ssrc))
    }

    pub fn expire(&mut self, now: Instant) {
        self.abandoned.retain(|_, a| a.until > now);
    }

    fn take_pending(&mut self, handle: PlayHandle) -> Option<(ChannelKey, Pending)> {
        let key = self.by_handle.remove(&handle)?;
        let p = self.pending.remove(&key)?;
        Some((key, p))
    }
}

/// The INVITE offer: our media address and the stream's port, PS first (GB/T 28181 §6.1);
/// for history the recorded range (`u=`, `t=`) and the download speed.
fn offer_sdp(channel_id: &str, media_ip: &str, port: u16, ssrc: u32, transport: MediaTransport, kind: PlayKind) -> String {
    let (proto, setup) = match transport {
        MediaTransport::Udp => ("RTP/AVP", ""),
        MediaTransport::TcpPassive => ("TCP/RTP/AVP", "a=setup:passive\r\na=connection:new\r\n"),
        MediaTransport::TcpActive => ("TCP/RTP/AVP", "a=setup:active\r\na=connection:new\r\n"),
    };
    let name = kind.session_name();
    let (uri, (start, end)) = match kind.range() {
        Some(range) => (format!("u={channel_id}:0\r\n"), range),
        None => (String::new(), (0, 0)),
    };
    let speed = match kind {
        PlayKind::Download { speed, .. } => format!("a=downloadspeed:{speed}\r\n"),
        PlayKind::LiveSub(attr) => attr.sdp_line().to_string(),
        _ => String::new(),
    };
    format!(
        "v=0\r\no={channel_id} 0 0 IN IP4 {media_ip}\r\ns={name}\r\n{uri}c=IN IP4 {media_ip}\r\nt={start} {end}\r\nm=video {port} {proto} 96 97 98\r\na=recvonly\r\na=rtpmap:96 PS/90000\r\na=rtpmap:98 H264/90000\r\na=rtpmap:97 MPEG4/90000\r\n{speed}{setup}y={}\r\nf=\r\n",
        stream_id(ssrc)
    )
}

/// The address of an SDP's `c=` line, unless unspecified (`0.0.0.0`).
fn answer_media_ip(sdp: &Sdp) -> Option<std::net::IpAddr> {
    let ip: std::net::IpAddr = sdp.connection.as_deref()?.split_whitespace().nth(2)?.parse().ok()?;
    (!ip.is_unspecified()).then_some(ip)
}

/// Where a device's media comes from: its signalling address (authenticated by its
/// registration), and its answer's `c=` address, unless that is a local one while signalling
/// comes from a public address (the device is behind NAT: its media comes from the NAT's
/// address too, and a private `c=` would let anyone on this side of it in).
pub fn media_sources(signalling: std::net::IpAddr, answer: Option<std::net::IpAddr>) -> Vec<std::net::IpAddr> {
    use crate::proto::ipnet::{canonical, is_local};
    let signalling = canonical(signalling);
    let mut from = vec![signalling];
    // A local c= says something only when signalling is local too (no NAT between).
    if let Some(c) = answer.map(canonical).filter(|c| *c != signalling && (!is_local(*c) || is_local(signalling))) {
        from.push(c);
    }
    from
}

/// Where the device listens for TCP active media: its answer's c= address and m= port.
fn answer_media_addr(sdp: &Sdp) -> Option<SocketAddr> {
    let ip = sdp.connection.as_deref()?.split_whitespace().nth(2)?.parse().ok()?;
    Some(SocketAddr::new(ip, sdp.media.first()?.port))
}

impl Endpoint {
    pub(super) fn play(
        &mut self,
        now: Instant,
        device_id: &str,
        channel_id: &str,
        transport: MediaTransport,
        kind: PlayKind,
    ) -> Result<PlayStart, super::PlayError> {
        let live_key = (device_id.to_string(), channel_id.to_string(), if kind == PlayKind::Live { 0 } else { SUB_STREAM_KEY });
        if kind.is_live() {
            if let Some(s) = self.plays.live.get(&live_key) {
                return Ok(PlayStart::Live(Box::new(s.clone())));
            }
            if let Some(p) = self.plays.pending.get(&live_key).filter(|p| !p.cancelled) {
                return Ok(PlayStart::Joined(p.handle));
            }
        }
        self.reachable_channel(now, device_id, channel_id)?;
        if kind.range().is_some_and(|(start, end)| end <= start) {
            return Err(PlayError::BadRange);
        }
        if self.plays.live.len() + self.plays.pending.len() >= SESSIONS_MAX || (kind.is_live() && self.plays.pending.contains_key(&live_key))
        {
            return Err(PlayError::Busy);
        }
        self.plays.next_handle += 1;
        let handle = PlayHandle(self.plays.next_handle);
        let key = if kind.is_live() { live_key } else { (device_id.to_string(), channel_id.to_string(), handle.0) };
        self.plays.by_handle.insert(handle, key.clone());
        self.plays.pending.insert(key, Pending { handle, kind, transport, invite: None, cancelled: false });
        Ok(PlayStart::Open(handle))
    }

    pub(super) fn abandon(&mut self, handle: PlayHandle, error: PlayError) {
        if self.plays.take_pending(handle).is_some() {
            self.emit(Event::PlayFailed { handle, error, ssrc: None });
        }
    }

    pub(super) fn invite(&mut self, now: Instant, handle: PlayHandle, ssrc: u32, port: u16, media_ip: Option<&str>) {
        let Some(key) = self.plays.by_handle.get(&handle).cloned() else {
            // Stopped while the stream was being opened.
            return self.emit(Event::PlayFailed { handle, error: PlayError::Cancelled, ssrc: Some(ssrc) });
        };
        let (device_id, channel_id) = (key.0.clone(), key.1.clone());
        let peer = self.devices.get(&device_id).filter(|d| d.online(now, self.cfg.keepalive_interval)).and_then(|d| d.binding);
        let Some(peer) = peer else {
            self.plays.take_pending(handle);
            return self.emit(Event::PlayFailed { handle, error: PlayError::Offline, ssrc: Some(ssrc) });
        };
        let (transport, kind) = self.plays.pending.get(&key).map_or((MediaTransport::Udp, PlayKind::Live), |p| (p.transport, p.kind));
        let sdp = offer_sdp(&channel_id, media_ip.unwrap_or(&self.cfg.media_ip), port, ssrc, transport, kind);
        let call_id = self.new_call_id();
        let (from_tag, branch) = (self.rng.hex(), self.rng.hex());
        let cseq = 1;
        let subject = format!("{channel_id}:{},{}:0", stream_id(ssrc), self.cfg.server_id);
        let bytes = self.build_request(
            "INVITE",
            &channel_id,
            peer,
            &call_id,
            &from_tag,
            None,
            cseq,
            &branch,
            vec![("Subject", subject)],
            Some(("Application/SDP", sdp.as_bytes())),
        );
        let tx = TxKey { call_id: call_id.clone(), cseq, method: "INVITE".into() };
        let timeout = self.cfg.invite_timeout;
        if !self.start_transaction(now, tx, peer, bytes, Purpose::Invite { handle }, timeout) {
            self.plays.take_pending(handle);
            return self.emit(Event::PlayFailed { handle, error: PlayError::Busy, ssrc: Some(ssrc) });
        }
        if let Some(p) = self.plays.pending.get_mut(&key) {
            p.invite = Some(Inviting { ssrc, call_id, from_tag, branch, cseq, peer, provisional: false });
        }
    }

    /// A provisional answer to an INVITE: CANCEL is allowed from now on (and sent at once if
    /// the play was stopped meanwhile).
    pub(super) fn invite_proceeding(&mut self, now: Instant, call_id: &str) {
        let found = self.plays.pending.iter_mut().find(|(_, p)| p.invite.as_ref().is_some_and(|i| i.call_id == call_id));
        let Some(((_, channel_id, _), p)) = found else { return };
        let Some(inv) = p.invite.as_mut() else { return };
        let first = !inv.provisional;
        inv.provisional = true;
        if first && p.cancelled {
            let (inv, channel_id) = (inv.clone(), channel_id.clone());
            self.send_cancel(now, &channel_id, &inv);
        }
    }

    fn send_cancel(&mut self, now: Instant, channel_id: &str, inv: &Inviting) {
        let bytes = self.build_request("CANCEL", channel_id, inv.peer, &inv.call_id, &inv.from_tag, None, inv.cseq, &inv.branch, vec![], None);
        let key = TxKey { call_id: inv.call_id.clone(), cseq: inv.cseq, method: "CANCEL".into() };
        self.start_transaction(now, key, inv.peer, bytes, Purpose::Fire, TRANSACTION_TIMEOUT);
    }

    /// ACK (new branch for a 2xx; the INVITE's branch for an error, RFC 3261 §17.1.1.3).
    fn send_ack(&mut self, channel_id: &str, d: &Dialog, branch: Option<&str>) {
        let branch = branch.map_or_else(|| self.rng.hex(), str::to_string);
        let bytes = self.build_request("ACK", channel_id, d.peer, &d.call_id, &d.from_tag, d.to_tag.as_deref(), d.cseq, &branch, vec![], None);
        self.send(d.peer, bytes);
    }

    fn send_bye(&mut self, now: Instant, channel_id: &str, d: &Dialog) {
        let branch = self.rng.hex();
        let cseq = d.cseq.saturating_add(1);
        let bytes = self.build_request("BYE", channel_id, d.peer, &d.call_id, &d.from_tag, d.to_tag.as_deref(), cseq, &branch, vec![], None);
        let key = TxKey { call_id: d.call_id.clone(), cseq, method: "BYE".into() };
        self.start_transaction(now, key, d.peer, bytes, Purpose::Fire, TRANSACTION_TIMEOUT);
    }

    pub(super) fn invite_done(
        &mut self,
        now: Instant,
        handle: PlayHandle,
        tx_key: &TxKey,
        tx: &super::transaction::ClientTx,
        answer: Option<&SipMsg>,
    ) {
        let Some((key, pending)) = self.plays.take_pending(handle) else { return };
        let (device_id, channel_id) = (key.0.clone(), key.1.clone());
        let Some(inv) = pending.invite else { return };
        let ssrc = Some(inv.ssrc);
        let Some(answer) = answer else {
            if tx.provisional {
                self.send_cancel(now, &channel_id, &inv);
            }
            if self.plays.abandoned.len() < ABANDONED_INVITES_MAX {
                let a = Abandoned { peer: inv.peer, channel_id, from_tag: inv.from_tag, cseq: inv.cseq, until: now + TRANSACTION_TIMEOUT };
                self.plays.abandoned.insert(tx_key.call_id.clone(), a);
            }
            return self.emit(Event::PlayFailed { handle, error: PlayError::Timeout, ssrc });
        };
        let status = answer.status().unwrap_or(0);
        let dialog = Dialog { call_id: inv.call_id.clone(), from_tag: inv.from_tag.clone(), to_tag: answer.to_tag(), peer: inv.peer, cseq: inv.cseq };
        if !(200..300).contains(&status) {
            self.send_ack(&channel_id, &dialog, Some(&inv.branch));
            let error = if pending.cancelled { PlayError::Cancelled } else { PlayError::Rejected(status) };
            return self.emit(Event::PlayFailed { handle, error, ssrc });
        }
        self.send_ack(&channel_id, &dialog, None);
        if pending.cancelled {
            self.send_bye(now, &channel_id, &dialog);
            return self.emit(Event::PlayFailed { handle, error: PlayError::Cancelled, ssrc });
        }
        let answer_sdp = Sdp::parse(answer.body()).ok();
        let media = match pending.transport {
            MediaTransport::TcpActive => answer_sdp.as_ref().and_then(answer_media_addr),
            _ => None,
        };
        if pending.transport == MediaTransport::TcpActive && media.is_none() {
            self.send_bye(now, &channel_id, &dialog);
            return self.emit(Event::PlayFailed { handle, error: PlayError::MediaConnect("answer has no media address".into()), ssrc });
        }
        let session = Session {
            device_id: device_id.clone(),
            channel_id: channel_id.clone(),
            stream_id: stream_id(inv.ssrc),
            ssrc: inv.ssrc,
            device_ssrc: answer_sdp.as_ref().and_then(Sdp::ssrc),
            media_from: media_sources(inv.peer.addr().ip(), answer_sdp.as_ref().and_then(answer_media_ip)),
            transport: pending.transport.name(),
            kind: pending.kind.name(),
            sub_stream: matches!(pending.kind, PlayKind::LiveSub(_)),
            start: pending.kind.range().map(|r| r.0),
            end: pending.kind.range().map(|r| r.1),
            started_at: self.unix_ms(now) / 1000,
            play_kind: pending.kind,
            dialog,
            rtsp_cseq: 0,
            started: now,
            no_viewer_since: None,
        };
        self.plays.live.insert(key, session.clone());
        self.emit(Event::PlayAnswered { handle, session: Box::new(session), media });
    }

    /// A 2xx to an INVITE with no transaction: ACK again for a live dialog (our ACK was
    /// lost); ACK and BYE for an INVITE we gave up on.
    pub(super) fn late_invite_ok(&mut self, now: Instant, from: Peer, msg: &SipMsg, key: &TxKey) {
        let live = self
            .plays
            .live
            .values()
            .find(|s| s.dialog.call_id == key.call_id && s.dialog.peer.same_as(&from))
            .map(|s| (s.channel_id.clone(), s.dialog.clone()));
        if let Some((channel_id, dialog)) = live {
            return self.send_ack(&channel_id, &dialog, None);
        }
        match self.plays.abandoned.remove(&key.call_id) {
            Some(a) if a.peer.same_as(&from) => {
                let dialog = Dialog { call_id: key.call_id.clone(), from_tag: a.from_tag, to_tag: msg.to_tag(), peer: a.peer, cseq: a.cseq };
                self.send_ack(&a.channel_id, &dialog, None);
                self.send_bye(now, &a.channel_id, &dialog);
            }
            other => {
                if let Some(a) = other {
                    self.plays.abandoned.insert(key.call_id.clone(), a);
                }
                self.counters.responses_unmatched += 1;
            }
        }
    }

    /// Stops the live play of a channel.
    /// Stops the channel's live sessions (the main stream and the sub-stream).
    pub(super) fn stop(&mut self, now: Instant, device_id: &str, channel_id: &str, reason: EndReason) -> bool {
        let main = self.stop_key(now, (device_id.to_string(), channel_id.to_string(), 0), reason);
        let sub = self.stop_key(now, (device_id.to_string(), channel_id.to_string(), SUB_STREAM_KEY), reason);
        main || sub
    }

    /// Stops the session (live or history, answered or pending) whose stream is `ssrc`.
    pub(super) fn stop_ssrc(&mut self, now: Instant, ssrc: u32, reason: EndReason) -> bool {
        let live = self.plays.live.iter().find(|(_, s)| s.ssrc == ssrc).map(|(k, _)| k.clone());
        let pending = || self.plays.pending.iter().find(|(_, p)| p.invite.as_ref().is_some_and(|i| i.ssrc == ssrc)).map(|(k, _)| k.clone());
        match live.or_else(pending) {
            Some(key) => self.stop_key(now, key, reason),
            None => false,
        }
    }

    fn stop_key(&mut self, now: Instant, key: ChannelKey, reason: EndReason) -> bool {
        let channel_id = key.1.clone();
        if self.plays.live.contains_key(&key) {
            self.end_session(now, &key, reason, true);
            return true;
        }
        let Some(p) = self.plays.pending.get_mut(&key) else { return false };
        if p.cancelled {
            return true;
        }
        p.cancelled = true;
        let handle = p.handle;
        match p.invite.clone() {
            Some(inv) if inv.provisional => self.send_cancel(now, &channel_id, &inv),
            // Not proceeding yet: CANCEL is not allowed; a 2xx will be ACKed and BYE'd.
            Some(_) => {}
            None => {
                self.plays.take_pending(handle);
                self.emit(Event::PlayFailed { handle, error: PlayError::Cancelled, ssrc: None });
            }
        }
        true
    }

    fn end_session(&mut self, now: Instant, key: &ChannelKey, reason: EndReason, send_bye: bool) {
        let Some(s) = self.plays.live.remove(key) else { return };
        if send_bye {
            self.send_bye(now, &s.channel_id, &s.dialog);
        }
        self.emit(Event::SessionEnded { device_id: s.device_id, channel_id: s.channel_id, ssrc: s.ssrc, kind: s.play_kind, reason });
    }

    /// Sends a MANSRTSP command in the dialog of the playback whose stream is `ssrc`; the
    /// device's answer comes as `Event::ControlDone`.
    pub(super) fn playback_control(&mut self, now: Instant, ssrc: u32, action: PlaybackAction) -> Result<ControlHandle, ControlError> {
        let Some(s) = self.plays.live.values_mut().find(|s| s.ssrc == ssrc) else { return Err(ControlError::UnknownSession) };
        if !matches!(s.play_kind, PlayKind::Playback { .. }) {
            return Err(ControlError::NotPlayback);
        }
        if !self.controls.has_room() {
            return Err(ControlError::Busy);
        }
        s.dialog.cseq = s.dialog.cseq.saturating_add(1);
        s.rtsp_cseq += 1;
        let (channel_id, d, body) = (s.channel_id.clone(), s.dialog.clone(), action.body(s.rtsp_cseq));
        let branch = self.rng.hex();
        let bytes = self.build_request(
            "INFO",
            &channel_id,
            d.peer,
            &d.call_id,
            &d.from_tag,
            d.to_tag.as_deref(),
            d.cseq,
            &branch,
            vec![],
            Some(("Application/MANSRTSP", body.as_bytes())),
        );
        let key = TxKey { call_id: d.call_id.clone(), cseq: d.cseq, method: "INFO".into() };
        let handle = self.new_control_handle();
        if !self.start_transaction(now, key, d.peer, bytes, Purpose::Control { handle }, TRANSACTION_TIMEOUT) {
            return Err(ControlError::Busy);
        }
        self.controls.started();
        Ok(handle)
    }

    /// MediaStatus 121 from a device: the recording it plays back or sends has ended. The
    /// session is found by the MESSAGE's Call-ID (devices reuse the INVITE's), else as the one
    /// history session of the channel the body names, else of the device.
    pub(super) fn media_status_end(&mut self, now: Instant, device_id: &str, call_id: &str, channel_id: &str) -> bool {
        let history = |k: &ChannelKey, s: &Session| k.0 == device_id && !s.play_kind.is_live();
        let by_call = self.plays.live.iter().find(|(k, s)| history(k, s) && s.dialog.call_id == call_id).map(|(k, _)| k.clone());
        let only = |pred: &dyn Fn(&ChannelKey) -> bool| {
            let mut found = self.plays.live.iter().filter(|(k, s)| history(k, s) && pred(k)).map(|(k, _)| k.clone());
            match (found.next(), found.next()) {
                (Some(k), None) => Some(k),
                _ => None,
            }
        };
        let key = by_call.or_else(|| only(&|k| k.1 == channel_id)).or_else(|| only(&|_| true));
        match key {
            Some(key) => {
                self.end_session(now, &key, EndReason::EndOfFile, true);
                true
            }
            None => false,
        }
    }

    /// The session check: sessions whose stream is gone, or unused for `no_viewer_stop`, end.
    /// Sessions that started after `listed_at` are not judged by this listing.
    pub(super) fn streams_seen(&mut self, now: Instant, listed_at: Instant, uses: &[StreamUse]) {
        let limit = self.cfg.no_viewer_stop;
        let mut ended = Vec::new();
        for (key, s) in self.plays.live.iter_mut() {
            if s.started > listed_at {
                continue;
            }
            match uses.iter().find(|u| u.ssrc == s.ssrc) {
                None => ended.push((key.clone(), EndReason::StreamGone)),
                Some(u) if u.in_use => s.no_viewer_since = None,
                Some(_) => {
                    let since = *s.no_viewer_since.get_or_insert(listed_at);
                    if limit.is_some_and(|l| now.saturating_duration_since(since) >= l) {
                        ended.push((key.clone(), EndReason::NoViewers));
                    }
                }
            }
        }
        for (key, reason) in ended {
            self.end_session(now, &key, reason, true);
        }
    }

    /// BYE from a device: only for a dialog we have, from its peer, with its tags.
    pub(super) fn on_bye(&mut self, now: Instant, from: Peer, msg: &SipMsg) -> Option<Reply> {
        let call_id = msg.call_id().unwrap_or_default();
        let Some((key, s)) = self.plays.live.iter().find(|(_, s)| s.dialog.call_id == call_id) else {
            return Reply::status(481);
        };
        let d = &s.dialog;
        let reason = if !d.peer.same_as(&from) {
            Some(Refusal::WrongSource)
        } else if msg.to_tag().as_deref() != Some(d.from_tag.as_str()) || (d.to_tag.is_some() && msg.from_tag() != d.to_tag) {
            Some(Refusal::WrongDialog)
        } else {
            None
        };
        if let Some(reason) = reason {
            self.counters.spoofed += 1;
            let device_id = Some(s.device_id.clone());
            self.emit(Event::Refused { peer: from, method: "BYE".into(), device_id, reason });
            return Reply::status(if reason == Refusal::WrongSource { 403 } else { 481 });
        }
        let key = key.clone();
        // The device hung up: no BYE back.
        self.end_session(now, &key, EndReason::DeviceBye, false);
        Reply::status(200)
    }
}
