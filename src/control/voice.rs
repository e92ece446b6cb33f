//! Voice broadcast, the driver's side: the audio source (an announcement played into a stream
//! of its own, or a stream already here that carries G.711 A-law), the Broadcast command, and
//! on the device's INVITE an RTP sender of the source's audio to the device (raw PCMA or PS,
//! under the device's SSRC) on the shard owning the source. A sender's end (the announcement
//! played out, the device gone) ends the broadcast with a BYE; the broadcast's end stops the
//! sender and closes an announcement's stream.

use super::Control;
use crate::proto::sip::endpoint::{
    BROADCAST_INVITE_WAIT, BroadcastCodec, BroadcastEnd, BroadcastHandle, BroadcastInvite, Command, ControlError, Outcome, TRANSACTION_TIMEOUT, UpstreamMedia,
    UpstreamMediaAnswer, UpstreamRefusal,
};
use crate::proto::rtp_mux::RtpMuxSettings;
use crate::shard::msg::StreamSpec;
use crate::shard::rtp_send::{SendSpec, SendStopped, SendTransport};
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
/// Attempts at a free SSRC for an announcement's stream.
const SSRC_PICK_ATTEMPTS: usize = 8;

/// What a broadcast plays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BroadcastSource {
    /// G.711 A-law samples, played once at their pace.
    Announcement(Vec<u8>),
    /// The audio of a stream on this engine's shards (its SSRC).
    Stream(u32),
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
}

impl std::fmt::Display for BroadcastError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BroadcastError::Device(e) => e.fmt(f),
            BroadcastError::NoSource => f.write_str("no such stream on this engine's shards"),
            BroadcastError::Source(e) => write!(f, "the announcement's stream could not be opened: {e}"),
            BroadcastError::Ended(why) => f.write_str(why),
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
    /// The announcement, until its stream is fed (once the sender is in place).
    announcement: Option<Vec<u8>>,
    owns_source: bool,
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
}

impl Control {
    /// Starts a voice broadcast to a device's audio channel and waits until the audio goes out
    /// (or why it cannot).
    pub async fn broadcast(self: &Rc<Self>, device_id: &str, channel_id: &str, source: BroadcastSource) -> Result<BroadcastInfo, BroadcastError> {
        let (source_ssrc, announcement, source_name) = match source {
            BroadcastSource::Announcement(alaw) => (self.open_announcement().await?, Some(alaw), "announcement".to_string()),
            BroadcastSource::Stream(ssrc) => {
                if self.node_of(ssrc).is_some() || self.shard.stream_info(ssrc).await.is_none() {
                    return Err(BroadcastError::NoSource);
                }
                (ssrc, None, crate::proto::ssrc::stream_id(ssrc))
            }
        };
        let owns_source = announcement.is_some();
        let handle = match self.command(Command::Broadcast { device_id: device_id.into(), channel_id: channel_id.into() }) {
            Outcome::Broadcast(Ok(handle)) => handle,
            other => {
                if owns_source {
                    self.shard.close_stream(source_ssrc).await;
                }
                return Err(BroadcastError::Device(match other {
                    Outcome::Broadcast(Err(e)) => e,
                    _ => ControlError::Busy,
                }));
            }
        };
        let (tx, rx) = oneshot::channel();
        let info = BroadcastInfo {
            id: handle.0,
            device_id: device_id.into(),
            channel_id: channel_id.into(),
            source: source_name,
            state: "inviting",
            ssrc: None,
            to: None,
            codec: None,
            started_at_ms: crate::shard::unix_ms(),
            ended_at_ms: None,
            why: None,
        };
        tracing::info!(device_id, channel_id, handle = handle.0, source = info.source, "voice broadcast: Broadcast command sent");
        let run = BroadcastRun { info, source_ssrc, announcement, owns_source, sending: None, end_note: None, started: Some(tx) };
        self.broadcasts.borrow_mut().live.insert(handle, run);
        let started = glommio::timer::timeout(BROADCAST_START_WAIT, async { Ok(rx.await.unwrap_or_else(|_| Err("ended".into()))) }).await;
        match started {
            Ok(Ok(())) => self.broadcast_info(handle).ok_or_else(|| BroadcastError::Ended("ended at once".into())),
            Ok(Err(why)) => Err(BroadcastError::Ended(why)),
            Err(_) => {
                self.command(Command::StopBroadcast { handle });
                Err(BroadcastError::Ended("the broadcast did not start in time".into()))
            }
        }
    }

    /// A stream of its own for an announcement (fed once the device is listening).
    async fn open_announcement(&self) -> Result<u32, BroadcastError> {
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
            let transport = match media {
                UpstreamMedia::Udp(to) => SendTransport::Udp(to),
                UpstreamMedia::TcpDial(to) => SendTransport::Tcp(to),
                UpstreamMedia::TcpListen => SendTransport::TcpPassive,
            };
            let spec = SendSpec {
                mux: RtpMuxSettings { ssrc, payload_type: codec.payload_type(), ps: codec == BroadcastCodec::PcmaInPs, only_audio: true },
                transport,
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
                me.shard.stop_send(source_ssrc, Some(ssrc)).await;
                return;
            }
            let announcement = {
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
                r.announcement.take()
            };
            if let Some(alaw) = announcement
                && !me.shard.feed_audio(source_ssrc, alaw).await
            {
                tracing::warn!(device_id, channel_id, "voice broadcast: the announcement's stream is gone");
            }
            let data = serde_json::json!({ "id": handle.0, "ssrc": ssrc, "codec": codec.payload_type() });
            me.events.publish("broadcast_started", Some(&device_id), Some(&channel_id), data);
        })
        .detach();
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
        let me = self.clone();
        glommio::spawn_local(async move {
            if let Some(send_ssrc) = run.sending {
                me.shard.stop_send(run.source_ssrc, Some(send_ssrc)).await;
            }
            if run.owns_source {
                me.shard.close_stream(run.source_ssrc).await;
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
            .find(|(_, r)| r.source_ssrc == stopped.source_ssrc && r.sending == Some(stopped.send_ssrc))
            .map(|(h, r)| {
                r.sending = None;
                r.end_note = Some(if r.owns_source && stopped.end == crate::shard::rtp_send::SendEnd::SourceClosed {
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
