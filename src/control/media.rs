//! The control's media plane: every operation on a session's stream written once, whether the
//! stream lives on this process's media shards (the media-service API) or on the media node it
//! was placed on (the ZLMediaKit node API, typed in `node_call`). Callers name a stream by its
//! SSRC and never ask where it is.

use super::Control;
use super::node_call::NodeCall;
use super::nodes::Placement;
use crate::proto::rtp_mux::RtpMuxSettings;
use crate::proto::sip::endpoint::{MediaTransport, PlayError, PlayKind, UpstreamMedia, UpstreamMediaAnswer, UpstreamRefusal};
use crate::shard::rtp_send::{SendError, SendSpec, SenderKey};
use crate::shard::msg::{Expectation, History, OpenError, PlaybackChange, StreamSpec};
use crate::shard::source::SourceRule;
use std::net::SocketAddr;
use std::rc::Rc;

/// PS over RTP, as GB/T 28181 carries it, on the payload type the answer names.
const PS_PAYLOAD_TYPE: u8 = 96;
/// How long a listening sender waits for the upstream to connect, and a dialled one for its
/// connect.
const UPSTREAM_CONNECT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// ZLMediaKit's code for a stream it does not have (yet), and how often a send asks again.
const NODE_NOT_FOUND: i64 = -500;
const NODE_SOURCE_POLL: std::time::Duration = std::time::Duration::from_millis(200);
const _: () = assert!(NODE_SOURCE_POLL.as_millis() * 10 <= UPSTREAM_CONNECT_WAIT.as_millis());

/// A stream opened for a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Opened {
    pub ssrc: u32,
    /// Its own port, or the single port every stream shares (UDP and TCP).
    pub port: u16,
    /// On a media node: the node's media address (the INVITE offers it) and its name.
    pub media_ip: Option<String>,
    pub node: Option<String>,
}

/// How far a stream has come (what a download's watcher reads).
#[derive(Debug, Clone, Default)]
pub(super) struct MediaProgress {
    /// Device media time received.
    pub media_ms: u64,
    /// Bytes recorded; None where the node does not say.
    pub bytes: Option<u64>,
    /// Since a packet last came; None where the node does not say.
    pub quiet_ms: Option<u64>,
    pub recording: bool,
    /// Why recording stopped on its own.
    pub record_error: Option<String>,
}

/// Where a session's stream is watched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlaySite {
    /// This process's shards serve it (gmv's play URLs).
    Here,
    /// A media node serves it (ZLMediaKit's play URLs there).
    Node {
        node: String,
        /// `http://host:port` of the node, no trailing slash.
        base: String,
    },
}

impl Control {
    /// The media node a stream was placed on; None: this process.
    pub(super) fn node_of(&self, ssrc: u32) -> Option<Placement> {
        self.nodes.as_ref()?.placement(ssrc)
    }

    /// Where viewers of a session's stream go.
    pub fn play_site(&self, ssrc: u32) -> PlaySite {
        match self.node_of(ssrc) {
            Some(p) => PlaySite::Node { base: p.api.trim_end_matches('/').to_string(), node: p.node },
            None => PlaySite::Here,
        }
    }

    /// Whom a device's stream takes media from until its answer says more: the device's
    /// signalling address (media bound to the device, not to whoever sends first).
    pub(crate) fn device_source(&self, device_id: &str) -> SourceRule {
        let signalling = self.endpoint().device(device_id).and_then(|d| d.binding).map(|p| p.addr().ip());
        SourceRule::device(signalling.as_slice(), self.learns_ssrc(device_id))
    }

    /// A stream for a new session of `channel_id`, under a fresh SSRC: on the shard the SSRC
    /// hashes to, or (role control) on the least-loaded media node. `history`: what the stream
    /// of a given SSRC records (a download's file is named by it); a node records a download
    /// itself (`enable_mp4`), so there only its kind counts.
    pub(super) async fn open_media_stream(
        &self,
        kind: PlayKind,
        transport: MediaTransport,
        channel_id: &str,
        history: impl Fn(u32) -> Option<History>,
        source: SourceRule,
    ) -> Result<Opened, PlayError> {
        match &self.nodes {
            Some(nodes) => {
                let placement = nodes.choose().ok_or_else(|| PlayError::NoPort("no media node is up and not draining".into()))?;
                let ssrc = self.endpoint.borrow_mut().next_ssrc(kind);
                // A download is recorded from its first frame (gmv nodes; ZLMediaKit's on_publish).
                let record = matches!(kind, PlayKind::Download { .. });
                nodes.opening(ssrc);
                let answer = nodes.send(&placement.node, &NodeCall::OpenRtpServer { ssrc, transport, record, source }).await;
                let port = answer.as_ref().ok().and_then(|a| a["port"].as_u64()).and_then(|p| u16::try_from(p).ok());
                nodes.opened(ssrc, port.map(|_| placement.node.as_str()));
                let answer = answer.map_err(|e| PlayError::NoPort(format!("media node {}: {e}", placement.node)))?;
                let port = port.ok_or_else(|| PlayError::NoPort(format!("media node answered no port: {answer}")))?;
                tracing::info!(node = %placement.node, ssrc, port, "stream placed on media node");
                Ok(Opened { ssrc, port, media_ip: Some(placement.media_ip), node: Some(placement.node) })
            }
            None => {
                for _ in 0..super::SSRC_ATTEMPTS_MAX {
                    let ssrc = self.endpoint.borrow_mut().next_ssrc(kind);
                    let spec =
                        StreamSpec { ssrc, history: history(ssrc), channel_id: Some(channel_id.to_string()), source: source.clone(), ..Default::default() };
                    match self.shard.open_stream(spec).await {
                        Ok(info) => return Ok(Opened { ssrc, port: info.port, media_ip: None, node: None }),
                        Err(OpenError::Exists) => continue,
                        Err(e) => return Err(PlayError::NoPort(e.to_string())),
                    }
                }
                Err(PlayError::Busy)
            }
        }
    }

    /// Closes a session's stream.
    pub(super) async fn close_media(&self, ssrc: u32) {
        let (Some(placement), Some(nodes)) = (self.node_of(ssrc), &self.nodes) else {
            self.shard.close_stream(ssrc).await;
            return;
        };
        nodes.forget(ssrc);
        if let Err(error) = nodes.send(&placement.node, &NodeCall::CloseRtpServer { ssrc }).await {
            tracing::warn!(node = %placement.node, ssrc, %error, "media node did not close the stream");
        }
    }

    /// The stream takes what the device's answer says: the SSRC it named, media from its
    /// addresses. Queued at once (on a shard, ahead of the ACK that makes the device send);
    /// the future says it is in force.
    pub(super) fn expect_media(self: &Rc<Self>, ssrc: u32, expect: Expectation) -> std::pin::Pin<Box<dyn Future<Output = bool>>> {
        let Some(placement) = self.node_of(ssrc) else { return Box::pin(self.shard.expect(ssrc, expect)) };
        let me = self.clone();
        Box::pin(async move {
            let Some(nodes) = &me.nodes else { return false };
            let call = NodeCall::UpdateRtpServerSsrc { ssrc, device_ssrc: expect.device_ssrc.unwrap_or(ssrc), source: expect.rule };
            nodes.send(&placement.node, &call).await.is_ok()
        })
    }

    /// TCP active: the stream connects to the device's media port.
    pub(super) async fn connect_media(&self, ssrc: u32, to: SocketAddr) -> Result<(), MediaCallError> {
        match (self.node_of(ssrc), &self.nodes) {
            (Some(placement), Some(nodes)) => nodes.send(&placement.node, &NodeCall::ConnectRtpServer { ssrc, to }).await.map(drop).map_err(MediaCallError::Node),
            _ => self.shard.connect_tcp(ssrc, to).await.map_err(MediaCallError::Shard),
        }
    }

    /// A playback's stream follows what the device now does; false: no such stream here.
    /// On a node, a pause holds the stream open (its no-packet check paused); the node's
    /// clock follows the device's timestamps through speed changes and seeks (the ZLMediaKit
    /// API has no call for either).
    pub(super) async fn change_playback(&self, ssrc: u32, change: PlaybackChange) -> bool {
        let Some(placement) = self.node_of(ssrc) else { return self.shard.playback_change(ssrc, change).await };
        if let PlaybackChange::Paused(on) = change {
            let call = if on { NodeCall::PauseRtpCheck { ssrc } } else { NodeCall::ResumeRtpCheck { ssrc } };
            self.tell_node(&placement.node, &call).await;
        }
        true
    }

    /// Sends a stream on as PS over RTP under `send_ssrc` (cascade): from the shard owning it
    /// here, or by its node's `startSendRtp`; where the media leaves from.
    pub(super) async fn start_send_up(&self, ssrc: u32, send_ssrc: u32, media: UpstreamMedia) -> Result<UpstreamMediaAnswer, UpstreamRefusal> {
        if let (Some(placement), Some(nodes)) = (self.node_of(ssrc), &self.nodes) {
            let call = NodeCall::StartSendRtp { ssrc, send_ssrc, media };
            // A node has the stream only once its first packets came (ZLMediaKit's too): asked
            // again until then, within the wait.
            let deadline = std::time::Instant::now() + UPSTREAM_CONNECT_WAIT;
            let mut answer = nodes.send(&placement.node, &call).await;
            while matches!(&answer, Err(super::nodes::NodeError::Refused { code: Some(NODE_NOT_FOUND), .. })) && std::time::Instant::now() < deadline {
                glommio::timer::sleep(NODE_SOURCE_POLL).await;
                answer = nodes.send(&placement.node, &call).await;
            }
            return match answer {
                Ok(answer) => match answer["local_port"].as_u64().and_then(|p| u16::try_from(p).ok()) {
                    Some(port) => Ok(UpstreamMediaAnswer { port, media_ip: Some(placement.media_ip) }),
                    None => {
                        tracing::warn!(node = placement.node, ssrc, send_ssrc, %answer, "startSendRtp answered no local_port");
                        Err(UpstreamRefusal::Failed)
                    }
                },
                Err(error) => {
                    tracing::warn!(node = placement.node, ssrc, send_ssrc, %error, "the media node cannot send the stream on");
                    Err(UpstreamRefusal::Failed)
                }
            };
        }
        let spec = SendSpec {
            key: SenderKey::Ssrc(send_ssrc),
            mux: RtpMuxSettings { ssrc: send_ssrc, payload_type: PS_PAYLOAD_TYPE, ps: true, only_audio: false },
            transport: media.into(),
            src_port: None,
            wait: UPSTREAM_CONNECT_WAIT,
            rtcp: false,
        };
        match self.shard.start_send(ssrc, spec).await {
            Ok(started) => Ok(UpstreamMediaAnswer { port: started.local_port, media_ip: None }),
            Err(error) => {
                tracing::warn!(ssrc, send_ssrc, ?error, "cannot send the stream on");
                Err(if error == SendError::Full { UpstreamRefusal::Busy } else { UpstreamRefusal::Failed })
            }
        }
    }

    /// Stops what `start_send_up` started.
    pub(super) async fn stop_send_up(&self, ssrc: u32, send_ssrc: u32) {
        match self.node_of(ssrc) {
            Some(placement) => self.tell_node(&placement.node, &NodeCall::StopSendRtp { ssrc, send_ssrc }).await,
            None => {
                self.shard.stop_send(ssrc, Some(SenderKey::Ssrc(send_ssrc))).await;
            }
        }
    }

    /// Makes `call` on `node`; a failure is logged, what asked goes on.
    pub(super) async fn tell_node(&self, node: &str, call: &NodeCall) {
        let Some(nodes) = &self.nodes else { return };
        if let Err(error) = nodes.send(node, call).await {
            tracing::warn!(node, call = call.name(), %error, "media node call failed");
        }
    }

    /// How far a stream has come: from its shard here, or from its node's `getMediaInfo` (the
    /// longest track's duration; a node that cannot say counts as no progress). None: the
    /// stream is gone here.
    pub(super) async fn media_progress(&self, ssrc: u32) -> Option<MediaProgress> {
        let (Some(placement), Some(nodes)) = (self.node_of(ssrc), &self.nodes) else {
            let info = self.shard.stream_info(ssrc).await?;
            return Some(MediaProgress {
                media_ms: info.media_ms,
                bytes: Some(info.record_bytes),
                quiet_ms: Some(info.last_packet_ms_ago.unwrap_or(info.age_ms)),
                recording: true,
                record_error: info.record_error,
            });
        };
        let answer = nodes.send(&placement.node, &NodeCall::GetMediaInfo { ssrc }).await.unwrap_or_default();
        let tracks = answer["tracks"].as_array().map(Vec::as_slice).unwrap_or_default();
        Some(MediaProgress {
            media_ms: tracks.iter().filter_map(|t| t["duration"].as_u64()).max().unwrap_or(0),
            bytes: answer["totalBytes"].as_u64(),
            quiet_ms: None,
            recording: answer["isRecordingMP4"].as_bool().unwrap_or(false),
            record_error: None,
        })
    }
}

/// Why a call on a session's stream failed, where the stream lives.
#[derive(Debug)]
pub enum MediaCallError {
    Node(super::nodes::NodeError),
    Shard(crate::shard::msg::StreamCallError),
}

impl std::fmt::Display for MediaCallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MediaCallError::Node(e) => write!(f, "media node: {e}"),
            MediaCallError::Shard(e) => e.fmt(f),
        }
    }
}
