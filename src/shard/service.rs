//! The media-service API: stream operations any executor asks of the media shards (the REST
//! API and the SIP driver alike). Each goes to the shard owning the SSRC as an owned message
//! and comes back on a one-shot channel.

use super::Shard;
use super::msg::{OpenError, ShardMsg, StreamCallError, StreamInfo, StreamSpec};

const NO_ANSWER: &str = "owning shard did not answer";

/// A fresh SSRC for a stream nobody named one for (10 decimal digits, leading 0: live).
pub fn random_ssrc() -> u32 {
    // GB28181 style: 10 decimal digits, leading 0 for live.
    (super::ports::unpredictable_u64() % 999_999_999) as u32 + 1
}

impl Shard {
    /// Opens a stream on its owning shard (which binds its port).
    pub async fn open_stream(&self, spec: StreamSpec) -> Result<StreamInfo, OpenError> {
        let ssrc = spec.ssrc;
        self.ask_owner(ssrc, |reply| ShardMsg::OpenStream { spec, reply }).await.unwrap_or_else(|| Err(OpenError::NoPort(NO_ANSWER.into())))
    }

    /// Opens a pull source's stream on its owner; the socket end its frames go to.
    pub async fn open_pulled(&self, spec: StreamSpec, transport: &'static str, format: &'static str) -> Result<(StreamInfo, std::os::fd::OwnedFd), OpenError> {
        let ssrc = spec.ssrc;
        self.ask_owner(ssrc, |reply| ShardMsg::OpenPulled { spec, transport, format, reply }).await.unwrap_or_else(|| Err(OpenError::NoPort(NO_ANSWER.into())))
    }

    /// Closes a stream (viewers get the end of it); false if there was none.
    pub async fn close_stream(&self, ssrc: u32) -> bool {
        self.ask_owner(ssrc, |reply| ShardMsg::CloseStream { ssrc, reply }).await.unwrap_or(false)
    }

    /// Every stream of every media shard.
    pub async fn list_streams(&self) -> Vec<StreamInfo> {
        let mut all = Vec::new();
        for to in self.media_indices() {
            all.extend(self.ask(to, |reply| ShardMsg::ListStreams { reply }).await.unwrap_or_default());
        }
        all
    }

    /// Every media shard takes RTP ports from `min..=max` from now on.
    pub async fn set_port_range(&self, min: u16, max: u16) {
        for to in self.media_indices() {
            if self.ask(to, |reply| ShardMsg::PortRange { min, max, reply }).await.is_none() {
                tracing::warn!(to, "media shard gone; it keeps its RTP port range");
            }
        }
    }

    /// Per media shard, its totals (`ShardTotals`: packets that reached no stream are counted
    /// only in its single-port counters).
    pub async fn shard_stats(&self) -> Vec<super::ShardTotals> {
        let mut out = Vec::new();
        for to in self.media_indices() {
            if let Some(totals) = self.ask(to, |reply| ShardMsg::ShardTotals { reply }).await {
                out.push(totals);
            }
        }
        out
    }

    /// GB28181 TCP active: the stream connects to the device's media port.
    pub async fn connect_tcp(&self, ssrc: u32, addr: std::net::SocketAddr) -> Result<(), StreamCallError> {
        self.ask_owner(ssrc, |reply| ShardMsg::ConnectTcp { ssrc, addr, reply }).await.unwrap_or(Err(StreamCallError::NoAnswer))
    }

    /// The stream also takes the SSRC the device answered in its SDP, and media from where the
    /// answer says. The request is queued at once (ahead of the ACK that makes the device
    /// send); the future says it is in force.
    pub fn expect(&self, ssrc: u32, expect: super::msg::Expectation) -> impl Future<Output = bool> + use<> {
        let queued = self.ask_now(super::owner_of(ssrc, self.media_shards), |reply| ShardMsg::Expect { ssrc, expect, reply });
        async move {
            match queued {
                Some(rx) => rx.await.unwrap_or(false),
                None => false,
            }
        }
    }

    /// A fresh JPEG of the stream's latest keyframe.
    pub async fn snapshot(&self, ssrc: u32) -> Result<bytes::Bytes, StreamCallError> {
        self.ask_owner(ssrc, |reply| ShardMsg::Snapshot { ssrc, reply }).await.unwrap_or(Err(StreamCallError::NoAnswer))
    }

    /// Tells a playback's stream what the device now does; false for an unknown stream.
    pub async fn playback_change(&self, ssrc: u32, change: super::msg::PlaybackChange) -> bool {
        self.ask_owner(ssrc, |reply| ShardMsg::Playback { ssrc, change, reply }).await.unwrap_or(false)
    }

    /// One stream's state, from its owning shard.
    pub async fn stream_info(&self, ssrc: u32) -> Option<StreamInfo> {
        self.ask_owner(ssrc, |reply| ShardMsg::StreamInfo { ssrc, reply }).await.flatten()
    }

    /// Sends stream `ssrc` on as RTP (`rtp_send`): answered once bound (a dialled sender: once
    /// connected).
    pub async fn start_send(&self, ssrc: u32, spec: super::rtp_send::SendSpec) -> Result<super::rtp_send::SendStarted, super::rtp_send::SendError> {
        self.ask_owner(ssrc, |reply| ShardMsg::StartSend { ssrc, spec, reply }).await.unwrap_or(Err(super::rtp_send::SendError::NoAnswer))
    }

    /// Plays G.711 A-law into the `local` stream `ssrc` at its pace (it closes at the end);
    /// false for an unknown or non-local stream.
    pub async fn feed_audio(&self, ssrc: u32, alaw: Vec<u8>) -> bool {
        self.ask_owner(ssrc, |reply| ShardMsg::FeedAudio { ssrc, alaw, reply }).await.unwrap_or(false)
    }

    /// Ends stream `ssrc`'s senders with `send_ssrc` (None: all): how many; None for an
    /// unknown stream.
    pub async fn stop_send(&self, ssrc: u32, key: Option<super::rtp_send::SenderKey>) -> Option<usize> {
        self.ask_owner(ssrc, |reply| ShardMsg::StopSend { ssrc, key, reply }).await.flatten()
    }

    /// A node's stream was published with these options; false for an unknown stream.
    pub async fn publishing(&self, ssrc: u32, order: super::msg::PublishOrder) -> bool {
        self.ask_owner(ssrc, |reply| ShardMsg::Publishing { ssrc, order, reply }).await.unwrap_or(false)
    }

    /// Starts/stops recording: None for an unknown stream, else whether it changed.
    pub async fn record(&self, ssrc: u32, on: bool) -> Option<bool> {
        self.ask_owner(ssrc, |reply| ShardMsg::Record { ssrc, on, reply }).await.flatten()
    }

    /// An alarm of stream `ssrc`'s channel (`alarm_id`, its event): an alarm clip to `post`
    /// after it. None: no such stream; Some(true): a clip started, false: one went on.
    pub async fn alarm(&self, ssrc: u32, alarm_id: u64, post: std::time::Duration) -> Option<bool> {
        self.ask_owner(ssrc, |reply| ShardMsg::Alarm { ssrc, alarm_id, post, reply }).await.flatten()
    }

    /// Gives every other executor a new copy of the keys, play secrets and HTTPS config, each
    /// confirming it holds them, then takes it here: once this executor answers with the new
    /// ones, all do.
    pub async fn publish_reload(&self, secrets: std::sync::Arc<crate::auth::Secrets>, tls: Option<std::sync::Arc<rustls::ServerConfig>>) {
        for to in (0..self.peers_len()).filter(|&to| to != self.index) {
            let (s, t) = (secrets.clone(), tls.clone());
            if self.ask(to, |reply| ShardMsg::Reload { secrets: s, tls: t, reply }).await.is_none() {
                tracing::warn!(to, "executor gone; it keeps its old secrets");
            }
        }
        *self.secrets.borrow_mut() = secrets;
        *self.tls.borrow_mut() = tls;
    }

    /// Opens the streams declared in the config; failures are logged, not fatal.
    pub async fn open_static_streams(&self) {
        for s in self.config.streams.clone() {
            let spec = StreamSpec { ssrc: s.ssrc, port: s.port, sdp: s.sdp, is_static: true, ..Default::default() };
            if let Err(error) = self.open_stream(spec).await {
                tracing::error!(ssrc = s.ssrc, ?error, "cannot open static stream");
            }
        }
    }
}
