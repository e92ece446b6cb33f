//! Voice broadcast to a device (GB/T 28181-2016 §9.12, 语音广播): we send a Notify
//! `Broadcast` MESSAGE naming our audio source and the device's audio channel; the device
//! answers it and INVITEs us for the audio (`m=audio`, its `a=recvonly`, its SSRC in `y=`);
//! we answer with where the audio leaves from (`a=sendonly`, PCMA, or PS when that is all it
//! takes), the driver sends G.711 RTP, and a BYE from either side ends it. Here we are the
//! UAS of the device's dialog, as with an upstream's INVITE: the same dialog bookkeeping and
//! the same 200 resent until the ACK.
//!
//! Wire details follow what devices meet from wvp-GB28181-pro (its `audioBroadcastCmd` and
//! `InviteRequestProcessor`): no DeviceID in the Notify, the INVITE's Subject
//! `{source}:{n},{channel}:{n}` naming the channel, the device's media address from `c=`
//! (from `o=` when `c=` is missing), our answer's `f=v/////a/1/8/1`.

use super::transaction::{self, Purpose, ServerKey, TxKey};
use super::upstream::{CallState, UasDialog, UpstreamMedia, offered_media, same_sender};
use super::{ControlError, Endpoint, Event, Peer, Reply, Unreachable};
use crate::proto::sdp::Sdp;
use crate::proto::sip::build::{OutRequest, response};
use crate::proto::sip::message::SipMsg;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Broadcasts at once, in all (each holds a sender on a shard).
pub const BROADCASTS_MAX: usize = 64;
/// How long a device has to INVITE us after answering the Broadcast MESSAGE (wvp waits 10 s).
pub const BROADCAST_INVITE_WAIT: Duration = Duration::from_secs(10);
/// How long an ACK to our 200 may take.
const BROADCAST_ACK_WAIT: Duration = transaction::TRANSACTION_TIMEOUT;
/// The PS payload type devices offer beside PCMA.
const PS_PAYLOAD_TYPE: u8 = 96;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BroadcastHandle(pub u64);

/// How the device takes the audio: raw PCMA (payload type 8) or PCMA in PS (96).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BroadcastCodec {
    Pcma,
    PcmaInPs,
}

impl BroadcastCodec {
    pub fn payload_type(self) -> u8 {
        match self {
            BroadcastCodec::Pcma => 8,
            BroadcastCodec::PcmaInPs => PS_PAYLOAD_TYPE,
        }
    }
}

/// The device asked for the audio: send it, then `Command::BroadcastAnswer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BroadcastInvite {
    pub handle: BroadcastHandle,
    pub device_id: String,
    pub channel_id: String,
    /// Where the audio goes: the same three ways as a session sent up.
    pub media: UpstreamMedia,
    /// The device's SSRC (`y=`; one of ours when it gave none).
    pub ssrc: u32,
    pub codec: BroadcastCodec,
}

/// Why a broadcast ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BroadcastEnd {
    /// The device answered the Broadcast MESSAGE with this status.
    Refused(u16),
    /// No answer to the Broadcast MESSAGE.
    NotAnswered,
    /// The device's Response said something other than OK.
    Declined(String),
    /// The device took the MESSAGE but never INVITEd.
    NoInvite,
    /// The device's INVITE offered no audio we send (PCMA, or PS).
    NoCodec,
    /// Our 200 was never ACKed.
    NoAck,
    /// The device hung up.
    DeviceBye,
    /// The driver could not send the audio (it says why itself).
    MediaFailed,
    /// Stopped here (the API, the source's end).
    Stopped,
}

impl std::fmt::Display for BroadcastEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BroadcastEnd::Refused(s) => write!(f, "the device refused the Broadcast command (SIP {s})"),
            BroadcastEnd::NotAnswered => f.write_str("the device did not answer the Broadcast command"),
            BroadcastEnd::Declined(r) => write!(f, "the device declined the broadcast (Result {r})"),
            BroadcastEnd::NoInvite => write!(f, "the device took the Broadcast command but did not INVITE for the audio within {} s", BROADCAST_INVITE_WAIT.as_secs()),
            BroadcastEnd::NoCodec => f.write_str("the device's INVITE offered no audio format gmv sends (PCMA or PS)"),
            BroadcastEnd::NoAck => f.write_str("the device did not ACK the answer to its INVITE"),
            BroadcastEnd::DeviceBye => f.write_str("the device hung up (BYE)"),
            BroadcastEnd::MediaFailed => f.write_str("the audio could not be sent"),
            BroadcastEnd::Stopped => f.write_str("stopped"),
        }
    }
}

/// The device's INVITE once it came.
struct BroadcastCall {
    invite: SipMsg,
    key: ServerKey,
    dialog: UasDialog,
    media: UpstreamMedia,
    codec: BroadcastCodec,
    ssrc: u32,
    state: CallState,
}

struct Broadcast {
    device_id: String,
    channel_id: String,
    /// Set once the device answered the MESSAGE 2xx: the INVITE is due by then.
    invite_due: Option<Instant>,
    call: Option<BroadcastCall>,
}

#[derive(Default)]
pub(super) struct Broadcasts {
    next: u64,
    list: BTreeMap<BroadcastHandle, Broadcast>,
}

impl Endpoint {
    /// Sends the Broadcast MESSAGE for a device's audio channel; the rest comes as
    /// `Event::BroadcastInvited` or `Event::BroadcastEnded`.
    pub(super) fn start_broadcast(&mut self, now: Instant, device_id: &str, channel_id: &str) -> Result<BroadcastHandle, ControlError> {
        let peer = self.reachable_channel(now, device_id, channel_id).map_err(|u| match u {
            Unreachable::UnknownDevice => ControlError::UnknownDevice,
            Unreachable::UnknownChannel => ControlError::UnknownChannel,
            Unreachable::Offline => ControlError::Offline,
        })?;
        let b = &self.broadcasts;
        if b.list.len() >= BROADCASTS_MAX || b.list.values().any(|b| b.device_id == device_id && b.channel_id == channel_id) {
            return Err(ControlError::Busy);
        }
        self.broadcasts.next += 1;
        let handle = BroadcastHandle(self.broadcasts.next);
        // Ids only: the same bytes in GB2312 (as the body is sent) and UTF-8.
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Notify>\r\n<CmdType>Broadcast</CmdType>\r\n<SN>{}</SN>\r\n<SourceID>{}</SourceID>\r\n<TargetID>{channel_id}</TargetID>\r\n</Notify>\r\n",
            self.new_sn(),
            self.cfg.server_id
        );
        if !self.send_manscdp(now, device_id, peer, &xml, Purpose::Broadcast { handle }) {
            return Err(ControlError::Busy);
        }
        self.broadcasts.list.insert(handle, Broadcast { device_id: device_id.into(), channel_id: channel_id.into(), invite_due: None, call: None });
        Ok(handle)
    }

    /// The Broadcast MESSAGE's transaction ended with `status` (None: no answer).
    pub(super) fn broadcast_message_done(&mut self, now: Instant, handle: BroadcastHandle, status: Option<u16>) {
        let end = match status {
            Some(s) if (200..300).contains(&s) => {
                if let Some(b) = self.broadcasts.list.get_mut(&handle).filter(|b| b.call.is_none()) {
                    b.invite_due = Some(now + BROADCAST_INVITE_WAIT);
                }
                return;
            }
            Some(s) => BroadcastEnd::Refused(s),
            None => BroadcastEnd::NotAnswered,
        };
        if self.broadcasts.list.remove(&handle).is_some() {
            self.emit(Event::BroadcastEnded { handle, reason: end });
        }
    }

    /// The device's Response to the Broadcast MESSAGE: anything but OK ends it (an INVITE
    /// may come before it: the Response is not waited for).
    pub(super) fn broadcast_result(&mut self, now: Instant, device_id: &str, channel_id: &str, result: &str) {
        if result.eq_ignore_ascii_case("OK") {
            return;
        }
        let found = self.broadcasts.list.iter().find(|(_, b)| b.device_id == device_id && b.channel_id == channel_id).map(|(h, _)| *h);
        if let Some(handle) = found {
            self.end_broadcast(now, handle, BroadcastEnd::Declined(result.to_string()));
        }
    }

    /// An INVITE from a registered device: the audio of a broadcast we asked it to take.
    pub(super) fn on_device_invite(&mut self, now: Instant, from: Peer, msg: &SipMsg, key: &ServerKey) -> Option<Reply> {
        let Some(device_id) = msg.from_user() else { return Reply::status(400) };
        if let Err(reply) = self.authenticated_sender(now, from, "INVITE", &device_id) {
            return reply;
        }
        // Subject `{source}:{n},{channel}:{n}`: the channel when the device names it.
        let named = msg.header("Subject").and_then(|s| s.split(',').nth(1).and_then(|p| p.split(':').next()).map(|c| c.trim().to_string()));
        let pending = |b: &&Broadcast| b.device_id == device_id && b.call.is_none();
        let found = self.broadcasts.list.iter().filter(|(_, b)| pending(b)).find(|(_, b)| named.as_deref().is_none_or(|c| c == b.channel_id || c == device_id));
        let found = found.or_else(|| self.broadcasts.list.iter().find(|(_, b)| pending(b)));
        let Some((&handle, b)) = found else {
            // Devices do not INVITE a platform for anything else.
            self.counters.refused += 1;
            return Reply::status(403);
        };
        let channel_id = b.channel_id.clone();
        let Ok(sdp) = Sdp::parse(msg.body()) else {
            self.counters.malformed += 1;
            return Reply::status(400);
        };
        let audio = sdp.media.iter().find(|m| m.kind == "audio").or(sdp.media.first());
        let codec = match audio.map(|m| &m.formats) {
            Some(f) if f.contains(&8) => BroadcastCodec::Pcma,
            Some(f) if f.contains(&PS_PAYLOAD_TYPE) => BroadcastCodec::PcmaInPs,
            _ => {
                self.end_broadcast(now, handle, BroadcastEnd::NoCodec);
                return Some(Reply { code: 488, reason: "Not Acceptable Here", extra: Vec::new(), body: None });
            }
        };
        let Some(media) = offered_media(&sdp, "audio") else {
            self.counters.malformed += 1;
            return Reply::status(400);
        };
        let ssrc = sdp.gb_ssrc.as_deref().and_then(|y| y.trim().parse::<u32>().ok()).unwrap_or_else(|| self.rng.next_u64() as u32);
        let our_tag = self.rng.hex()[..10].to_string();
        let Some(dialog) = UasDialog::accept(msg, from, our_tag) else { return Reply::status(400) };
        if let Some(b) = self.broadcasts.list.get_mut(&handle) {
            b.invite_due = None;
            b.call = Some(BroadcastCall { invite: msg.clone(), key: key.clone(), dialog, media, codec, ssrc, state: CallState::Answering });
        }
        self.emit(Event::BroadcastInvited(Box::new(BroadcastInvite { handle, device_id, channel_id, media, ssrc, codec })));
        Some(Reply { code: 100, reason: "Trying", extra: Vec::new(), body: None })
    }

    /// The driver's answer to `Event::BroadcastInvited`: the port the audio leaves from, or
    /// why it cannot be sent (the INVITE is refused and the broadcast ends). False when the
    /// broadcast is gone meanwhile.
    pub(super) fn broadcast_answer(&mut self, now: Instant, handle: BroadcastHandle, result: Result<super::UpstreamMediaAnswer, super::UpstreamRefusal>) -> bool {
        let Some(c) = self.broadcasts.list.get(&handle).and_then(|b| b.call.as_ref()).filter(|c| c.state == CallState::Answering) else { return false };
        let answer = match &result {
            Ok(a) => {
                let ip = a.media_ip.clone().unwrap_or_else(|| self.cfg.media_ip.clone());
                let (proto, setup) = c.media.answer_lines();
                let rtpmap = match c.codec {
                    BroadcastCodec::Pcma => "a=rtpmap:8 PCMA/8000\r\n",
                    BroadcastCodec::PcmaInPs => "a=rtpmap:96 PS/90000\r\n",
                };
                let server_id = &self.cfg.server_id;
                let sdp = format!(
                    "v=0\r\no={server_id} 0 0 IN IP4 {ip}\r\ns=Play\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {} {proto} {}\r\n{rtpmap}a=sendonly\r\n{setup}y={:010}\r\nf=v/////a/1/8/1\r\n",
                    a.port,
                    c.codec.payload_type(),
                    c.ssrc
                );
                Ok((format!("<sip:{server_id}@{}>", self.cfg.local), sdp))
            }
            Err(refusal) => Err(*refusal),
        };
        let peer = c.dialog.peer;
        let answer = self.answer_invite(now, &c.invite.clone(), &c.key.clone(), &c.dialog.clone(), answer);
        if result.is_err() {
            self.broadcasts.list.remove(&handle);
            self.emit(Event::BroadcastEnded { handle, reason: BroadcastEnd::MediaFailed });
        } else if let Some(c) = self.broadcasts.list.get_mut(&handle).and_then(|b| b.call.as_mut()) {
            c.state = CallState::answered(answer, peer, now, BROADCAST_ACK_WAIT);
        }
        true
    }

    /// An ACK for our 200 to a device's broadcast INVITE (true when it was one).
    pub(super) fn broadcast_ack(&mut self, from: Peer, msg: &SipMsg) -> bool {
        let call_id = msg.call_id().unwrap_or_default();
        let found = self.broadcasts.list.values_mut().filter_map(|b| b.call.as_mut()).find(|c| c.dialog.call_id == call_id && same_sender(c.dialog.peer, from));
        let Some(c) = found else { return false };
        if matches!(c.state, CallState::Answered { .. }) {
            c.state = CallState::Confirmed;
        }
        true
    }

    /// A BYE in a broadcast's dialog; None when it is not one (a play's BYE, maybe).
    pub(super) fn on_broadcast_bye(&mut self, from: Peer, msg: &SipMsg) -> Option<Option<Reply>> {
        let call_id = msg.call_id().unwrap_or_default();
        let (handle, c) = self.broadcasts.list.iter().find_map(|(h, b)| b.call.as_ref().filter(|c| c.dialog.call_id == call_id).map(|c| (*h, c)))?;
        if !same_sender(c.dialog.peer, from) || msg.from_tag().as_deref() != Some(c.dialog.their_tag.as_str()) {
            self.counters.spoofed += 1;
            return Some(Reply::status(481));
        }
        self.broadcasts.list.remove(&handle);
        self.emit(Event::BroadcastEnded { handle, reason: BroadcastEnd::DeviceBye });
        Some(Reply::status(200))
    }

    /// Ends a broadcast from this side: BYE once the device INVITEd (500 to an INVITE not
    /// answered yet). False when there is no such broadcast.
    pub(super) fn stop_broadcast(&mut self, now: Instant, handle: BroadcastHandle) -> bool {
        if !self.broadcasts.list.contains_key(&handle) {
            return false;
        }
        self.end_broadcast(now, handle, BroadcastEnd::Stopped);
        true
    }

    fn end_broadcast(&mut self, now: Instant, handle: BroadcastHandle, reason: BroadcastEnd) {
        let Some(b) = self.broadcasts.list.remove(&handle) else { return };
        if let Some(c) = b.call {
            if c.state == CallState::Answering {
                let bytes = response(&c.invite, c.dialog.peer.addr(), 500, "Server Internal Error", &c.dialog.our_tag, &[], None);
                self.server.remember(now, c.key.clone(), bytes.clone());
                self.send(c.dialog.peer, bytes);
            } else {
                let mut dialog = c.dialog;
                self.send_device_in_dialog(now, &dialog.step(), "BYE");
            }
        }
        self.emit(Event::BroadcastEnded { handle, reason });
    }

    /// Our request in a dialog a device opened (nobody waits for its answer).
    fn send_device_in_dialog(&mut self, now: Instant, d: &UasDialog, method: &str) {
        let branch = self.rng.hex();
        let bytes = OutRequest {
            method,
            request_uri: d.remote_target.clone(),
            transport: d.peer.transport(),
            contact_transport: None,
            local: self.cfg.local,
            branch,
            from: d.our_uri.clone(),
            from_tag: &d.our_tag,
            to: d.their_uri.clone(),
            to_tag: Some(&d.their_tag),
            call_id: &d.call_id,
            cseq: d.cseq,
            contact_user: &self.cfg.server_id,
            extra: vec![],
        }
        .build(None);
        let key = TxKey { call_id: d.call_id.clone(), cseq: d.cseq, method: method.into() };
        self.start_transaction(now, key, d.peer, bytes, Purpose::Fire, transaction::TRANSACTION_TIMEOUT);
    }

    /// INVITEs overdue, 200s to resend or given up for want of an ACK.
    pub(super) fn broadcast_timers(&mut self, now: Instant) {
        let mut resend = Vec::new();
        let mut ended = Vec::new();
        for (handle, b) in self.broadcasts.list.iter_mut() {
            if b.invite_due.is_some_and(|t| now >= t) {
                ended.push((*handle, BroadcastEnd::NoInvite));
            }
            let Some(c) = b.call.as_mut() else { continue };
            match c.state.due(now) {
                Some(true) => resend.push((c.dialog.peer, c.state.bytes())),
                Some(false) => ended.push((*handle, BroadcastEnd::NoAck)),
                None => {}
            }
        }
        self.counters.retransmissions += resend.len() as u64;
        for (peer, bytes) in resend {
            self.send(peer, bytes);
        }
        for (handle, reason) in ended {
            self.end_broadcast(now, handle, reason);
        }
    }

    pub(super) fn broadcast_next_timeout(&self) -> Option<Instant> {
        self.broadcasts.list.values().filter_map(|b| b.invite_due.or_else(|| b.call.as_ref().and_then(|c| c.state.next_timeout()))).min()
    }

    /// The broadcasts in progress: (handle, device, channel), for the API.
    pub fn broadcasts(&self) -> impl Iterator<Item = (BroadcastHandle, &str, &str)> {
        self.broadcasts.list.iter().map(|(h, b)| (*h, b.device_id.as_str(), b.channel_id.as_str()))
    }
}
