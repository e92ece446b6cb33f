//! Cascade, the driver's side: an upstream's INVITE becomes a play of the channel (live joined
//! when it already plays; a playback or download a device session of its own) and an RTP
//! sender on the shard owning its stream, or on its media node (PS, the upstream's SSRC, to
//! where its offer said);
//! the sender's end, or the session's, hangs the upstream up. Its RecordInfo is a search of the
//! device, its MANSRTSP the device playback's control.

use super::Control;
use crate::proto::sip::endpoint::{
    Command, Outcome, PlayError, PlayKind, UpstreamCallHandle, UpstreamEnd, UpstreamMedia, UpstreamMediaAnswer, UpstreamPlay,
    UpstreamRecords, UpstreamRefusal,
};
use crate::proto::sip::mansrtsp::PlaybackAction;
use crate::shard::rtp_send::SendStopped;
use std::rc::Rc;


/// A sender started for an upstream session: the stream it takes and the SSRC it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct UpstreamSend {
    stream_ssrc: u32,
    send_ssrc: u32,
    /// A playback or download session of the upstream's own (stopped with it).
    history: bool,
}

impl Control {
    pub(super) fn upstream_play(self: &Rc<Self>, play: UpstreamPlay) {
        let UpstreamPlay { handle, upstream, device_id, channel_id, media, ssrc, kind } = play;
        tracing::info!(upstream, device_id, channel_id, ssrc, ?media, kind = kind.name(), "upstream asks for video");
        let me = self.clone();
        glommio::spawn_local(async move {
            let result = me.serve_upstream(handle, &device_id, &channel_id, media, ssrc, kind).await;
            if let Err(refusal) = &result {
                tracing::warn!(upstream, device_id, channel_id, ?refusal, "upstream play refused");
            }
            let answered = matches!(me.command(Command::UpstreamAnswer { handle, result: result.clone() }), Outcome::Found(true));
            if result.is_ok() && answered {
                let data = serde_json::json!({ "upstream": upstream, "ssrc": ssrc });
                me.events.publish("upstream_session_started", Some(&device_id), Some(&channel_id), data);
            } else if result.is_ok() {
                // Cancelled, or the upstream lost, while the video was being set up.
                let send = me.upstream_sends.borrow_mut().remove(&handle);
                if let Some(send) = send {
                    me.end_upstream_send(send).await;
                }
            }
        })
        .detach();
    }

    async fn serve_upstream(
        self: &Rc<Self>,
        handle: UpstreamCallHandle,
        device_id: &str,
        channel_id: &str,
        media: UpstreamMedia,
        ssrc: u32,
        kind: PlayKind,
    ) -> Result<UpstreamMediaAnswer, UpstreamRefusal> {
        if device_id == self.endpoint().local_sources_id() {
            return self.serve_upstream_local(handle, channel_id, media, ssrc, kind).await;
        }
        let session = self.play_kind(device_id, channel_id, self.device_transport(device_id), kind, None).await.map_err(|e| match e {
            PlayError::Offline | PlayError::UnknownDevice | PlayError::UnknownChannel => UpstreamRefusal::Unavailable,
            PlayError::Busy => UpstreamRefusal::Busy,
            _ => UpstreamRefusal::Failed,
        })?;
        match self.start_send_up(session.ssrc, ssrc, media).await {
            Ok(answer) => {
                let send = UpstreamSend { stream_ssrc: session.ssrc, send_ssrc: ssrc, history: !kind.is_live() };
                self.upstream_sends.borrow_mut().insert(handle, send);
                Ok(answer)
            }
            Err(refusal) => {
                tracing::warn!(device_id, channel_id, ?refusal, "cannot send the channel upward");
                if !kind.is_live() {
                    self.command(Command::StopSession { ssrc: session.ssrc });
                }
                Err(refusal)
            }
        }
    }

    /// One of this platform's own sources (a pull proxy's stream) sent up: live only (they
    /// have no device recordings to play back).
    async fn serve_upstream_local(
        self: &Rc<Self>,
        handle: UpstreamCallHandle,
        channel_id: &str,
        media: UpstreamMedia,
        ssrc: u32,
        kind: PlayKind,
    ) -> Result<UpstreamMediaAnswer, UpstreamRefusal> {
        let Some(stream_ssrc) = self.local_channels.borrow().get(channel_id).copied() else { return Err(UpstreamRefusal::Unavailable) };
        if !kind.is_live() {
            return Err(UpstreamRefusal::Unavailable);
        }
        let answer = self.start_send_up(stream_ssrc, ssrc, media).await?;
        self.upstream_sends.borrow_mut().insert(handle, UpstreamSend { stream_ssrc, send_ssrc: ssrc, history: false });
        Ok(answer)
    }

    /// This platform's own sources with a GB channel id (pull proxies): (channel id, name,
    /// stream SSRC, playing). Shared upward as channels of the platform's server id.
    pub fn set_local_channels(self: &Rc<Self>, channels: Vec<crate::pull::LocalChannel>) {
        let items = channels
            .iter()
            .map(|(id, name, _, playing)| crate::proto::sip::manscdp::CatalogItem {
                device_id: id.clone(),
                name: name.clone(),
                manufacturer: "gmv".into(),
                status: if *playing { "ON" } else { "OFF" }.into(),
                ..Default::default()
            })
            .collect();
        *self.local_channels.borrow_mut() = channels.into_iter().map(|(id, _, ssrc, _)| (id, ssrc)).collect();
        self.command(Command::SetLocalChannels { channels: items });
    }

    /// Stops an upstream session's sender, and its own playback or download.
    async fn end_upstream_send(self: &Rc<Self>, send: UpstreamSend) {
        self.stop_send_up(send.stream_ssrc, send.send_ssrc).await;
        if send.history {
            self.command(Command::StopSession { ssrc: send.stream_ssrc });
        }
    }

    /// The upstream ended a session (BYE, CANCEL, no ACK, lost): its sender stops.
    pub(super) fn upstream_play_ended(self: &Rc<Self>, handle: UpstreamCallHandle, reason: UpstreamEnd) {
        let Some(send) = self.upstream_sends.borrow_mut().remove(&handle) else { return };
        tracing::info!(handle, ssrc = send.send_ssrc, reason = reason.as_str(), "upstream session ended");
        self.events.publish("upstream_session_stopped", None, None, serde_json::json!({ "ssrc": send.send_ssrc, "why": reason.as_str() }));
        let me = self.clone();
        glommio::spawn_local(async move {
            me.end_upstream_send(send).await;
        })
        .detach();
    }

    /// A device session ended at the end of its recording: the upstream sessions it fed (their
    /// own playbacks and downloads) are told so (MediaStatus 121), before the BYE their
    /// sender's end brings.
    pub(super) fn upstream_media_ended(self: &Rc<Self>, stream_ssrc: u32) {
        let handles: Vec<UpstreamCallHandle> =
            self.upstream_sends.borrow().iter().filter(|(_, s)| s.history && s.stream_ssrc == stream_ssrc).map(|(h, _)| *h).collect();
        for handle in handles {
            tracing::info!(handle, ssrc = stream_ssrc, "the device's recording ended; MediaStatus 121 upward");
            self.command(Command::UpstreamMediaEnd { handle });
        }
    }

    /// RecordInfo from above: the device's answer, passed up (nothing found when it failed).
    pub(super) fn upstream_records(self: &Rc<Self>, ask: UpstreamRecords) {
        let me = self.clone();
        glommio::spawn_local(async move {
            let UpstreamRecords { upstream, sn, device_id, channel_id, start, end, record_type } = ask;
            // A source of this platform's own has no device recordings.
            let local = device_id == me.endpoint().local_sources_id();
            let found = if local { Ok(Vec::new()) } else { me.records(&device_id, &channel_id, start, end, record_type).await.map(|list| list.items) };
            let items = match found {
                Ok(items) => items,
                Err(error) => {
                    tracing::warn!(upstream, device_id, channel_id, ?error, "RecordInfo for the upstream failed; answering none");
                    Vec::new()
                }
            };
            me.command(Command::UpstreamRecordsAnswer { upstream, sn, channel_id, items });
        })
        .detach();
    }

    /// MANSRTSP from above: the device playback the upstream session plays.
    pub(super) fn upstream_playback_control(self: &Rc<Self>, handle: UpstreamCallHandle, action: PlaybackAction) {
        let Some(send) = self.upstream_sends.borrow().get(&handle).copied() else { return };
        let me = self.clone();
        glommio::spawn_local(async move {
            if let Err(error) = me.playback_control(send.stream_ssrc, action).await {
                tracing::warn!(handle, ?error, "upstream's playback control failed at the device");
            }
        })
        .detach();
    }

    /// A sender ended on a media shard: when it was an upstream session's, BYE upward.
    pub fn upstream_send_stopped(self: &Rc<Self>, stopped: &SendStopped) {
        if !matches!(stopped.key, crate::shard::rtp_send::SenderKey::Ssrc(_)) {
            return;
        }
        self.upstream_sender_ended(stopped.source_ssrc, stopped.send_ssrc, &stopped.reason);
    }

    /// A sender of stream `source_ssrc` under `send_ssrc` ended (here, or on a media node: its
    /// `on_send_rtp_stopped`): when it was an upstream session's, BYE upward.
    pub(super) fn upstream_sender_ended(self: &Rc<Self>, source_ssrc: u32, send_ssrc: u32, reason: &str) {
        let found = self
            .upstream_sends
            .borrow()
            .iter()
            .find(|(_, s)| s.stream_ssrc == source_ssrc && s.send_ssrc == send_ssrc)
            .map(|(h, _)| *h);
        let Some(handle) = found else { return };
        let send = self.upstream_sends.borrow_mut().remove(&handle);
        if send.is_some_and(|s| s.history) {
            self.command(Command::StopSession { ssrc: source_ssrc });
        }
        tracing::info!(handle, ssrc = send_ssrc, reason = reason, "upstream session's media ended; BYE upward");
        self.events.publish("upstream_session_stopped", None, None, serde_json::json!({ "ssrc": send_ssrc, "why": reason }));
        self.command(Command::UpstreamHangUp { handle });
    }

}
