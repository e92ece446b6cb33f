//! Voice broadcast, the driver's side: the audio source (an announcement played into a stream
//! of its own, or a stream already here that carries G.711 A-law), the Broadcast command, and
//! on the device's INVITE an RTP sender of the source's audio to the device (raw PCMA or PS,
//! under the device's SSRC) on the shard owning the source. A sender's end (the announcement
//! played out, the device gone) ends the broadcast with a BYE; the broadcast's end stops the
//! sender and closes an announcement's stream. Talk is a broadcast from a browser's
//! microphone: a talk stream of its own (like an announcement's) that the WHIP session on its
//! shard feeds; the browser leaving closes it, which ends the broadcast.

use super::Control;
use crate::proto::sip::endpoint::{
    BROADCAST_INVITE_WAIT, BroadcastCodec, BroadcastEnd, BroadcastHandle, BroadcastInvite, Command, ControlError, Outcome, TRANSACTION_TIMEOUT, UpstreamMedia,
    UpstreamMediaAnswer, UpstreamRefusal,
};
use crate::proto::rtp_mux::RtpMuxSettings;
use crate::shard::msg::StreamSpec;
use crate::shard::rtp_send::{SendSpec, SendStopped, SenderKey};
use futures_channel::oneshot;
use serde::Serialize;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

/// Ended broadcasts kept for the API (the newest).
pub const BROADCASTS_ENDED_KEPT: usize = 32;
/// How long a sender to a device over TCP waits for its connection.
const BROADCAST_CONNECT_WAIT: Duration = Duration::from_secs(10);
/// How long the API waits for the device to INVITE and the audio to start: the MESSAGE's
/// transaction, then the device's wait, with a margin.
const BROADCAST_START_WAIT: Duration = Duration::from_secs(TRANSACTION_TIMEOUT.as_secs() + BROADCAST_INVITE_WAIT.as_secs() + 2);
/// How an announcement's stream describes its audio.
const ANNOUNCEMENT_SDP: &str = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=announcement\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 0 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n";
/// Channels one broadcast group reaches at most (each device has a sender of its own).
pub const BROADCAST_GROUP_CHANNELS_MAX: usize = 32;
/// A talk stream with nothing from its microphone this long after it opened closes (longer
/// than a WHIP session has to connect).
const TALK_FIRST_PACKET_WAIT: Duration = Duration::from_secs(20);
const _: () = assert!(TALK_FIRST_PACKET_WAIT.as_secs() > crate::shard::webrtc::WHEP_CONNECT_TIMEOUT.as_secs());
/// Attempts at a free SSRC for an announcement's stream.
const SSRC_PICK_ATTEMPTS: usize = 8;

/// What a broadcast plays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BroadcastSource {
    /// G.711 A-law samples, played once at their pace.
    Announcement(Vec<u8>),
    /// The audio of a stream on this engine's shards (its SSRC).
    Stream(u32),
    /// A browser's microphone, over WHIP into a talk stream opened for it.
    Talk,
}

/// Why a broadcast did not start.
#[derive(Debug)]
pub enum BroadcastError {
    Device(ControlError),
    /// The source stream is not here (or is on a media node).
    NoSource,
    /// The announcement's stream could not be opened.
    Source(crate::shard::msg::OpenError),
    /// The device did not take it (its reason).
    Ended(String),
    /// A group of no channels, or of more than `BROADCAST_GROUP_CHANNELS_MAX`.
    Group,
}

/// A broadcast whose command went out, and where its start is told.
type Started = (BroadcastHandle, oneshot::Receiver<Result<(), String>>);

impl BroadcastError {
    /// The HTTP status and code the API answers with.
    pub fn http(&self) -> (u16, &'static str) {
        match self {
            BroadcastError::Device(e) => e.http(),
            BroadcastError::NoSource => (404, "not_found"),
            BroadcastError::Source(_) => (503, "no_stream"),
            BroadcastError::Ended(_) => (502, "broadcast_failed"),
            BroadcastError::Group => (400, "bad_request"),
        }
    }
}

impl std::fmt::Display for BroadcastError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BroadcastError::Device(e) => e.fmt(f),
            BroadcastError::NoSource => f.write_str("no such stream on this engine's shards"),
            BroadcastError::Source(e) => write!(f, "the announcement's stream could not be opened: {e}"),
            BroadcastError::Ended(why) => f.write_str(why),
            BroadcastError::Group => write!(f, "a broadcast goes to 1 to {BROADCAST_GROUP_CHANNELS_MAX} channels"),
        }
    }
}

/// A broadcast as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct BroadcastInfo {
    pub id: u64,
    pub device_id: String,
    pub channel_id: String,
    /// "announcement", or the source stream's id.
    pub source: String,
    /// inviting (the command sent, the device's INVITE awaited), sending, ended.
    pub state: &'static str,
    /// The device's SSRC and where the audio goes, once it INVITEd.
    pub ssrc: Option<u32>,
    pub to: Option<String>,
    /// pcma or pcma_in_ps.
    pub codec: Option<&'static str>,
    pub started_at_ms: u64,
    pub ended_at_ms: Option<u64>,
    pub why: Option<String>,
}

pub(super) struct BroadcastRun {
    info: BroadcastInfo,
    source_ssrc: u32,
    /// The source is the broadcast's own (an announcement's or a microphone's stream, shared by
    /// a group's broadcasts and closed with the last of them).
    owns_source: bool,
    talk: bool,
    /// The sender's SSRC once started.
    sending: Option<u32>,
    /// Why, when the sender ended first (it names the reason better than "stopped").
    end_note: Option<String>,
    started: Option<oneshot::Sender<Result<(), String>>>,
}

#[derive(Default)]
pub(super) struct Broadcasts {
    pub(super) live: std::collections::BTreeMap<BroadcastHandle, BroadcastRun>,
    pub(super) ended: VecDeque<BroadcastInfo>,
    /// Announcements not yet played, by their stream: played once every broadcast from it
    /// has its device listening (or ended).
    announcements: std::collections::HashMap<u32, Vec<u8>>,
}

/// An opened source, as the broadcasts from it know it.
#[derive(Clone)]
struct SourceRef {
    ssrc: u32,
    name: String,
    owned: bool,
    talk: bool,
}

impl Control {
    /// Starts a voice broadcast to a device's audio channel and waits until the audio goes out
    /// (or why it cannot).
    pub async fn broadcast(self: &Rc<Self>, device_id: &str, channel_id: &str, source: BroadcastSource) -> Result<BroadcastInfo, BroadcastError> {
        let channels = [(device_id.to_string(), channel_id.to_string())];
        let mut results = self.broadcast_group(&channels, source).await?;
        results.pop().unwrap_or_else(|| Err(BroadcastError::Ended("ended at once".into())))
    }

    /// Starts broadcasts of one source to several channels (a broadcast group: one encoding,
    /// a sender per device; an announcement starts once every device listens) and waits until
    /// each goes out or fails. Each channel's result, in order; Err when the source is not
    /// there or nothing could start.
    pub async fn broadcast_group(self: &Rc<Self>, channels: &[(String, String)], source: BroadcastSource) -> Result<Vec<Result<BroadcastInfo, BroadcastError>>, BroadcastError> {
        let mut waits = Vec::new();
        for started in self.start_group(channels, source).await? {
            let me = self.clone();
            waits.push(glommio::spawn_local(async move {
                match started {
                    Ok((handle, started)) => me.broadcast_started(handle, started).await,
                    Err(e) => Err(e),
                }
            }));
        }
        let mut results = Vec::with_capacity(waits.len());
        for wait in waits {
            results.push(wait.await);
        }
        Ok(results)
    }

    /// Starts talk to channels' speakers: a talk stream for the browser's microphone and a
    /// broadcast from it to each. Its SSRC (the WHIP offer goes to its shard); the broadcasts
    /// go on without waiting (GET /api/broadcasts and the events tell how they go).
    pub async fn talk(self: &Rc<Self>, channels: &[(String, String)]) -> Result<u32, BroadcastError> {
        let mut ssrc = None;
        for started in self.start_group(channels, BroadcastSource::Talk).await? {
            // A channel that could not start is in the API's list already; the others go on.
            let Ok((handle, started)) = started else { continue };
            ssrc = ssrc.or_else(|| self.broadcasts.borrow().live.get(&handle).map(|r| r.source_ssrc));
            let me = self.clone();
            glommio::spawn_local(async move {
                if let Err(error) = me.broadcast_started(handle, started).await {
                    tracing::info!(handle = handle.0, %error, "talk: a broadcast did not start");
                }
            })
            .detach();
        }
        let ssrc = ssrc.ok_or_else(|| BroadcastError::Ended("ended at once".into()))?;
        // The WHIP session closes the stream when it ends; a session that never came (the
        // offer lost on its way to the shard) must not leave the devices listening for ever.
        let me = self.clone();
        glommio::spawn_local(async move {
            glommio::timer::sleep(TALK_FIRST_PACKET_WAIT).await;
            if me.shard.stream_info(ssrc).await.is_some_and(|s| s.packets == 0) {
                tracing::info!(ssrc, "talk: nothing from the microphone in time; its stream closes");
                me.shard.close_stream(ssrc).await;
            }
        })
        .detach();
        Ok(ssrc)
    }

    /// Opens the source (when it is the group's own) and sends each channel its Broadcast
    /// command. Err when no channel took it (the source closed again), with the first error.
    async fn start_group(self: &Rc<Self>, channels: &[(String, String)], source: BroadcastSource) -> Result<Vec<Result<Started, BroadcastError>>, BroadcastError> {
        if channels.is_empty() || channels.len() > BROADCAST_GROUP_CHANNELS_MAX {
            return Err(BroadcastError::Group);
        }
        let talk = source == BroadcastSource::Talk;
        let (ssrc, announcement, name) = match source {
            BroadcastSource::Announcement(alaw) => (self.open_local_audio().await?, Some(alaw), "announcement".to_string()),
            BroadcastSource::Talk => (self.open_local_audio().await?, None, "microphone".to_string()),
            BroadcastSource::Stream(ssrc) => {
                if self.node_of(ssrc).is_some() || self.shard.stream_info(ssrc).await.is_none() {
                    return Err(BroadcastError::NoSource);
                }
                (ssrc, None, crate::proto::ssrc::stream_id(ssrc))
            }
        };
        let source = SourceRef { ssrc, name, owned: announcement.is_some() || talk, talk };
        if let Some(alaw) = announcement {
            self.broadcasts.borrow_mut().announcements.insert(ssrc, alaw);
        }
        let results: Vec<_> = channels.iter().map(|(device, channel)| self.start_broadcast(device, channel, &source)).collect();
        if results.iter().all(Result::is_err) {
            if source.owned {
                self.broadcasts.borrow_mut().announcements.remove(&ssrc);
                self.shard.close_stream(ssrc).await;
            }
            return Err(results.into_iter().find_map(Result::err).unwrap_or(BroadcastError::Group));
        }
        Ok(results)
    }

    /// Sends one channel the Broadcast command for `source`.
    fn start_broadcast(self: &Rc<Self>, device_id: &str, channel_id: &str, source: &SourceRef) -> Result<Started, BroadcastError> {
        let handle = match self.command(Command::Broadcast { device_id: device_id.into(), channel_id: channel_id.into() }) {
            Outcome::Broadcast(Ok(handle)) => handle,
            Outcome::Broadcast(Err(e)) => return Err(BroadcastError::Device(e)),
            _ => return Err(BroadcastError::Device(ControlError::Busy)),
        };
        let (tx, rx) = oneshot::channel();
        let info = BroadcastInfo {
            id: handle.0,
            device_id: device_id.into(),
            channel_id: channel_id.into(),
            source: source.name.clone(),
            state: "inviting",
            ssrc: None,
            to: None,
            codec: None,
            started_at_ms: crate::shard::unix_ms(),
            ended_at_ms: None,
            why: None,
        };
        tracing::info!(device_id, channel_id, handle = handle.0, source = info.source, "voice broadcast: Broadcast command sent");
        let run = BroadcastRun { info, source_ssrc: source.ssrc, owns_source: source.owned, talk: source.talk, sending: None, end_note: None, started: Some(tx) };
        self.broadcasts.borrow_mut().live.insert(handle, run);
        Ok((handle, rx))
    }

    /// Waits until the broadcast's audio goes out (or why it does not); stops it when that
    /// takes too long.
    async fn broadcast_started(self: &Rc<Self>, handle: BroadcastHandle, started: oneshot::Receiver<Result<(), String>>) -> Result<BroadcastInfo, BroadcastError> {
        let started = glommio::timer::timeout(BROADCAST_START_WAIT, async { Ok(started.await.unwrap_or_else(|_| Err("ended".into()))) }).await;
        match started {
            Ok(Ok(())) => self.broadcast_info(handle).ok_or_else(|| BroadcastError::Ended("ended at once".into())),
            Ok(Err(why)) => Err(BroadcastError::Ended(why)),
            Err(_) => {
                self.command(Command::StopBroadcast { handle });
                Err(BroadcastError::Ended("the broadcast did not start in time".into()))
            }
        }
    }

    /// A stream of its own for an announcement (fed once the device is listening) or a
    /// microphone (fed by its WHIP session).
    async fn open_local_audio(&self) -> Result<u32, BroadcastError> {
        let mut result = Err(crate::shard::msg::OpenError::Exists);
        for _ in 0..SSRC_PICK_ATTEMPTS {
            let ssrc = crate::shard::service::random_ssrc();
            let spec = StreamSpec { ssrc, sdp: Some(ANNOUNCEMENT_SDP.into()), local: true, ..Default::default() };
            result = self.shard.open_stream(spec).await.map(|_| ssrc);
            if result != Err(crate::shard::msg::OpenError::Exists) {
                break;
            }
        }
        result.map_err(BroadcastError::Source)
    }

    /// Stops the broadcast to a channel; false when there is none.
    pub fn stop_broadcast(self: &Rc<Self>, device_id: &str, channel_id: &str) -> bool {
        let found = self.broadcasts.borrow().live.iter().find(|(_, r)| r.info.device_id == device_id && r.info.channel_id == channel_id).map(|(h, _)| *h);
        found.is_some_and(|handle| matches!(self.command(Command::StopBroadcast { handle }), Outcome::Found(true)))
    }

    /// The broadcasts in progress, then the latest ended ones.
    pub fn broadcasts(&self) -> Vec<BroadcastInfo> {
        let b = self.broadcasts.borrow();
        b.live.values().map(|r| r.info.clone()).chain(b.ended.iter().rev().cloned()).collect()
    }

    fn broadcast_info(&self, handle: BroadcastHandle) -> Option<BroadcastInfo> {
        let b = self.broadcasts.borrow();
        b.live.get(&handle).map(|r| r.info.clone()).or_else(|| b.ended.iter().find(|i| i.id == handle.0).cloned())
    }

    /// The device INVITEd for the audio: a sender to it, then the answer, then the
    /// announcement starts.
    pub(super) fn broadcast_invited(self: &Rc<Self>, invite: BroadcastInvite) {
        let BroadcastInvite { handle, device_id, channel_id, media, ssrc, codec } = invite;
        let Some(source_ssrc) = self.broadcasts.borrow().live.get(&handle).map(|r| r.source_ssrc) else {
            self.command(Command::BroadcastAnswer { handle, result: Err(UpstreamRefusal::Failed) });
            return;
        };
        tracing::info!(device_id, channel_id, ssrc, ?media, ?codec, "voice broadcast: the device asks for the audio");
        let me = self.clone();
        glommio::spawn_local(async move {
            let spec = SendSpec {
                key: SenderKey::Broadcast(handle.0),
                mux: RtpMuxSettings { ssrc, payload_type: codec.payload_type(), ps: codec == BroadcastCodec::PcmaInPs, only_audio: true },
                transport: media.into(),
                src_port: None,
                wait: BROADCAST_CONNECT_WAIT,
                rtcp: false,
            };
            let result = me.shard.start_send(source_ssrc, spec).await;
            let answer = match &result {
                Ok(started) => Ok(UpstreamMediaAnswer { port: started.local_port, media_ip: None }),
                Err(error) => {
                    tracing::warn!(device_id, channel_id, %error, "voice broadcast: cannot send the audio");
                    if let Some(r) = me.broadcasts.borrow_mut().live.get_mut(&handle) {
                        r.end_note = Some(format!("the audio could not be sent: {error}"));
                    }
                    Err(UpstreamRefusal::Failed)
                }
            };
            let answered = matches!(me.command(Command::BroadcastAnswer { handle, result: answer }), Outcome::Found(true));
            if result.is_err() {
                return;
            }
            if !answered {
                me.shard.stop_send(source_ssrc, Some(SenderKey::Broadcast(handle.0))).await;
                return;
            }
            {
                let mut b = me.broadcasts.borrow_mut();
                let Some(r) = b.live.get_mut(&handle) else { return };
                r.sending = Some(ssrc);
                r.info.state = "sending";
                r.info.ssrc = Some(ssrc);
                r.info.to = Some(match media {
                    UpstreamMedia::Udp(to) | UpstreamMedia::TcpDial(to) => to.to_string(),
                    UpstreamMedia::TcpListen => "TCP (the device connects)".into(),
                });
                r.info.codec = Some(match codec {
                    BroadcastCodec::Pcma => "pcma",
                    BroadcastCodec::PcmaInPs => "pcma_in_ps",
                });
                if let Some(tx) = r.started.take() {
                    let _ = tx.send(Ok(()));
                }
            };
            me.play_when_all_listen(source_ssrc).await;
            let data = serde_json::json!({ "id": handle.0, "ssrc": ssrc, "codec": codec.payload_type() });
            me.events.publish("broadcast_started", Some(&device_id), Some(&channel_id), data);
        })
        .detach();
    }

    /// Plays source `ssrc`'s announcement once no broadcast from it still waits for its device.
    async fn play_when_all_listen(&self, ssrc: u32) {
        let alaw = {
            let mut b = self.broadcasts.borrow_mut();
            if b.live.values().any(|r| r.source_ssrc == ssrc && r.sending.is_none()) {
                return;
            }
            b.announcements.remove(&ssrc)
        };
        if let Some(alaw) = alaw
            && !self.shard.feed_audio(ssrc, alaw).await
        {
            tracing::warn!(ssrc, "voice broadcast: the announcement's stream is gone");
        }
    }

    /// A broadcast ended (the endpoint's word): its sender stops, an announcement's stream
    /// closes, the API is told why.
    pub(super) fn broadcast_ended(self: &Rc<Self>, handle: BroadcastHandle, reason: BroadcastEnd) {
        let Some(mut run) = self.broadcasts.borrow_mut().live.remove(&handle) else { return };
        let why = run.end_note.take().unwrap_or_else(|| reason.to_string());
        tracing::info!(device_id = run.info.device_id, channel_id = run.info.channel_id, handle = handle.0, why, "voice broadcast ended");
        if let Some(tx) = run.started.take() {
            let _ = tx.send(Err(why.clone()));
        }
        run.info.state = "ended";
        run.info.ended_at_ms = Some(crate::shard::unix_ms());
        run.info.why = Some(why.clone());
        let data = serde_json::json!({ "id": handle.0, "why": why });
        self.events.publish("broadcast_stopped", Some(&run.info.device_id), Some(&run.info.channel_id), data);
        {
            let mut b = self.broadcasts.borrow_mut();
            if b.ended.len() >= BROADCASTS_ENDED_KEPT {
                b.ended.pop_front();
            }
            b.ended.push_back(run.info);
        }
        // An owned source closes with the last broadcast from it; the others may all be
        // listening now.
        let last = !self.broadcasts.borrow().live.values().any(|r| r.source_ssrc == run.source_ssrc);
        if last {
            self.broadcasts.borrow_mut().announcements.remove(&run.source_ssrc);
        }
        let me = self.clone();
        glommio::spawn_local(async move {
            if run.sending.is_some() {
                me.shard.stop_send(run.source_ssrc, Some(SenderKey::Broadcast(handle.0))).await;
            }
            match (run.owns_source, last) {
                (true, true) => {
                    me.shard.close_stream(run.source_ssrc).await;
                }
                (true, false) => me.play_when_all_listen(run.source_ssrc).await,
                (false, _) => {}
            }
        })
        .detach();
    }

    /// A sender ended on a media shard: when it was a broadcast's, the broadcast ends (BYE).
    pub fn broadcast_send_stopped(self: &Rc<Self>, stopped: &SendStopped) {
        let found = self
            .broadcasts
            .borrow_mut()
            .live
            .iter_mut()
            .find(|(h, r)| r.source_ssrc == stopped.source_ssrc && stopped.key == SenderKey::Broadcast(h.0) && r.sending.is_some())
            .map(|(h, r)| {
                r.sending = None;
                let closed = stopped.end == crate::shard::rtp_send::SendEnd::SourceClosed;
                r.end_note = Some(if r.owns_source && closed && r.talk {
                    "the talk ended (the browser's microphone left)".into()
                } else if r.owns_source && closed {
                    "the announcement played to its end".into()
                } else {
                    format!("the audio stopped: {}", stopped.reason)
                });
                *h
            });
        if let Some(handle) = found {
            self.command(Command::StopBroadcast { handle });
        }
    }
}
