//! Live play of a device channel: SSRC allocation, INVITE/200/ACK, the stream on its owning
//! shard, BYE on stop, and stopping channels nobody watches.

use super::registry::unix_now;
use super::sip_text::OutRequest;
use super::{Control, Peer};
use crate::http::routes::stream_id;
use crate::proto::sdp::Sdp;
use crate::shard::msg::{OpenError, StreamSpec};
use serde::Serialize;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Seconds between checks of sessions (viewers, streams gone).
pub const SESSION_CHECK_INTERVAL_S: u64 = 5;
/// Sessions at once; more play requests get 503.
pub const SESSIONS_MAX: usize = 10_000;

#[derive(Debug, Clone, Serialize)]
pub struct Session {
    pub device_id: String,
    pub channel_id: String,
    pub stream_id: String,
    pub ssrc: u32,
    /// The SSRC the device said it will send (`y=` of its answer); packets are accepted
    /// whatever SSRC they carry, since the stream owns its port.
    pub device_ssrc: Option<u32>,
    pub transport: &'static str,
    pub started_at: u64,
    #[serde(skip)]
    dialog: Dialog,
    #[serde(skip)]
    no_viewer_since: Option<Instant>,
}

#[derive(Debug, Clone)]
struct Dialog {
    call_id: String,
    from_tag: String,
    to_tag: Option<String>,
    cseq: u32,
    device: Peer,
}

/// How the device sends media (GB/T 28181 §6.3: UDP, or TCP with us listening or connecting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaTransport {
    Udp,
    /// a=setup:passive: the device connects to our port.
    TcpPassive,
    /// a=setup:active: we connect to the device's port.
    TcpActive,
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
}

impl PlayError {
    pub fn http(&self) -> (u16, &'static str) {
        match self {
            PlayError::UnknownDevice | PlayError::UnknownChannel => (404, "not_found"),
            PlayError::Offline => (409, "device_offline"),
            PlayError::Busy => (503, "busy"),
            PlayError::NoPort(_) => (503, "no_port"),
            PlayError::Timeout => (504, "device_timeout"),
            PlayError::Rejected(_) => (502, "device_rejected"),
        }
    }
}

/// GB28181 live SSRC: `0`, digits 4–8 of the domain, then a 4-digit sequence.
pub fn gb_ssrc(domain: &str, sequence: u32) -> u32 {
    let middle: u32 = domain.get(3..8).and_then(|d| d.parse().ok()).unwrap_or(0);
    middle * 10_000 + sequence % 10_000
}

impl Control {
    fn sip_uri(&self, user: &str) -> String {
        format!("sip:{user}@{}", self.shard.config.sip.domain)
    }

    pub async fn play(&self, device_id: &str, channel_id: &str, transport: MediaTransport) -> Result<Session, PlayError> {
        let key = (device_id.to_string(), channel_id.to_string());
        if let Some(s) = self.sessions.borrow().get(&key) {
            return Ok(s.clone());
        }
        if self.sessions.borrow().len() >= SESSIONS_MAX {
            return Err(PlayError::Busy);
        }
        let peer = {
            let reg = self.registry.borrow();
            let d = reg.devices.get(device_id).ok_or(PlayError::UnknownDevice)?;
            if !d.online(self.keepalive()) {
                return Err(PlayError::Offline);
            }
            if !d.channels.is_empty() && !d.channels.contains_key(channel_id) && channel_id != device_id {
                return Err(PlayError::UnknownChannel);
            }
            d.peer().ok_or(PlayError::Offline)?
        };
        let config = self.shard.config.clone();
        // A free SSRC: the owning shard refuses one in use.
        let mut opened = None;
        for _ in 0..16 {
            let ssrc = gb_ssrc(&config.sip.domain, (self.next() % 9_999) as u32 + 1);
            match crate::http::api::open_stream(&self.shard, StreamSpec { ssrc, port: None, sdp: None, is_static: false }).await {
                Ok(info) => {
                    opened = Some((ssrc, info.port));
                    break;
                }
                Err(OpenError::Exists) => continue,
                Err(e) => return Err(PlayError::NoPort(format!("{e:?}"))),
            }
        }
        let (ssrc, port) = opened.ok_or(PlayError::Busy)?;
        // A second request for the same channel may have won while we awaited.
        if let Some(s) = self.sessions.borrow().get(&key) {
            let existing = s.clone();
            let shard = self.shard.clone();
            glommio::spawn_local(async move { crate::http::api::close_stream(&shard, ssrc).await }).detach();
            return Ok(existing);
        }
        let media_ip = &config.sip.host_ip;
        let (proto, setup) = match transport {
            MediaTransport::Udp => ("RTP/AVP", ""),
            MediaTransport::TcpPassive => ("TCP/RTP/AVP", "a=setup:passive\r\na=connection:new\r\n"),
            MediaTransport::TcpActive => ("TCP/RTP/AVP", "a=setup:active\r\na=connection:new\r\n"),
        };
        let sdp = format!(
            "v=0\r\no={channel_id} 0 0 IN IP4 {media_ip}\r\ns=Play\r\nc=IN IP4 {media_ip}\r\nt=0 0\r\nm=video {port} {proto} 96 97 98\r\na=recvonly\r\na=rtpmap:96 PS/90000\r\na=rtpmap:98 H264/90000\r\na=rtpmap:97 MPEG4/90000\r\n{setup}y={}\r\nf=\r\n",
            stream_id(ssrc)
        );
        let call_id = format!("{}@{}", self.random(), self.local.ip());
        let from_tag = self.random();
        let cseq = 1;
        let subject = format!("{channel_id}:{},{}:0", stream_id(ssrc), config.node_id);
        let invite = OutRequest {
            method: "INVITE",
            request_uri: self.sip_uri(channel_id),
            transport: peer.transport(),
            local: self.local,
            branch: self.random(),
            from: self.sip_uri(&config.node_id),
            from_tag: &from_tag,
            to: self.sip_uri(channel_id),
            to_tag: None,
            call_id: &call_id,
            cseq,
            contact_user: &config.node_id,
            extra: vec![("Subject", subject)],
        };
        let timeout = Duration::from_secs(config.sip.invite_timeout_s);
        let answer = self.transact(peer, &call_id, cseq, "INVITE", &invite.build(Some(("Application/SDP", sdp.as_bytes()))), timeout).await;
        let answer = match answer {
            Some(a) if a.status() == Some(200) => a,
            other => {
                crate::http::api::close_stream(&self.shard, ssrc).await;
                let error = match other.and_then(|a| a.status()) {
                    Some(code) => PlayError::Rejected(code),
                    None => PlayError::Timeout,
                };
                tracing::warn!(device_id, channel_id, ?error, "INVITE failed");
                return Err(error);
            }
        };
        let answer_sdp = Sdp::parse(answer.body()).ok();
        let device_ssrc = answer_sdp.as_ref().and_then(Sdp::ssrc);
        let dialog = Dialog { call_id: call_id.clone(), from_tag: from_tag.clone(), to_tag: answer.to_tag(), cseq, device: peer };
        self.send_in_dialog(&dialog, "ACK", channel_id, cseq).await;
        if transport == MediaTransport::TcpActive {
            // We connect to where the device listens: its answer's c= address and m= port.
            let target = answer_sdp.as_ref().and_then(|s| {
                let ip = s.connection.as_deref()?.split_whitespace().nth(2)?.parse().ok()?;
                Some(SocketAddr::new(ip, s.media.first()?.port))
            });
            let connected = match target {
                Some(addr) => crate::http::api::connect_tcp(&self.shard, ssrc, addr).await,
                None => Err("answer has no media address".into()),
            };
            if let Err(error) = connected {
                tracing::warn!(device_id, channel_id, %error, "TCP active media connect failed");
                self.send_in_dialog(&dialog, "BYE", channel_id, cseq + 1).await;
                crate::http::api::close_stream(&self.shard, ssrc).await;
                return Err(PlayError::Rejected(0));
            }
        }
        if device_ssrc.is_some_and(|d| d != ssrc) {
            tracing::info!(device_id, channel_id, ssrc, device_ssrc, "device answered another SSRC; following it");
        }
        let session = Session {
            device_id: device_id.into(),
            channel_id: channel_id.into(),
            stream_id: stream_id(ssrc),
            ssrc,
            device_ssrc,
            transport: transport.name(),
            started_at: unix_now(),
            dialog,
            no_viewer_since: None,
        };
        tracing::info!(device_id, channel_id, ssrc, stream_id = %session.stream_id, "play started");
        self.sessions.borrow_mut().insert(key, session.clone());
        Ok(session)
    }

    /// Sends ACK (no transaction) or returns the request bytes' transaction result for BYE.
    async fn send_in_dialog(&self, d: &Dialog, method: &str, channel_id: &str, cseq: u32) -> Option<u16> {
        let config = &self.shard.config;
        let req = OutRequest {
            method,
            request_uri: self.sip_uri(channel_id),
            transport: d.device.transport(),
            local: self.local,
            branch: self.random(),
            from: self.sip_uri(&config.node_id),
            from_tag: &d.from_tag,
            to: self.sip_uri(channel_id),
            to_tag: d.to_tag.as_deref(),
            call_id: &d.call_id,
            cseq,
            contact_user: &config.node_id,
            extra: vec![],
        };
        let bytes = req.build(None);
        if method == "ACK" {
            self.send(d.device, &bytes).await;
            return None;
        }
        self.transact(d.device, &d.call_id, cseq, method, &bytes, super::NON_INVITE_TIMEOUT).await.and_then(|r| r.status())
    }

    /// BYE and close the stream; false if there was no such session.
    pub async fn stop(&self, device_id: &str, channel_id: &str, why: &str) -> bool {
        let Some(s) = self.sessions.borrow_mut().remove(&(device_id.to_string(), channel_id.to_string())) else { return false };
        let status = self.send_in_dialog(&s.dialog, "BYE", channel_id, s.dialog.cseq + 1).await;
        crate::http::api::close_stream(&self.shard, s.ssrc).await;
        tracing::info!(device_id, channel_id, ssrc = s.ssrc, reason = why, bye_status = ?status, "play stopped");
        true
    }

    /// Re-sends the ACK of a session whose 200 OK the device retransmitted.
    pub(super) async fn ack_again(&self, call_id: &str) {
        let found = self.sessions.borrow().values().find(|s| s.dialog.call_id == call_id).map(|s| (s.dialog.clone(), s.channel_id.clone()));
        if let Some((dialog, channel_id)) = found {
            self.send_in_dialog(&dialog, "ACK", &channel_id, dialog.cseq).await;
        }
    }

    pub(super) async fn session_ended_by_device(&self, call_id: &str) {
        let key = self.sessions.borrow().iter().find(|(_, s)| s.dialog.call_id == call_id).map(|(k, _)| k.clone());
        if let Some(key) = key {
            let s = self.sessions.borrow_mut().remove(&key);
            if let Some(s) = s {
                crate::http::api::close_stream(&self.shard, s.ssrc).await;
                tracing::info!(device_id = %s.device_id, channel_id = %s.channel_id, "device ended the stream (BYE)");
            }
        }
    }
}

/// Stops sessions whose stream is gone or that nobody has watched for `no_viewer_stop_s`.
pub(super) async fn check_sessions(control: &Control) {
    if control.sessions.borrow().is_empty() {
        return;
    }
    let streams = crate::http::api::list_streams(&control.shard).await;
    let limit = Duration::from_secs(control.shard.config.sip.no_viewer_stop_s);
    let mut to_stop = Vec::new();
    for (key, s) in control.sessions.borrow_mut().iter_mut() {
        match streams.iter().find(|i| i.ssrc == s.ssrc) {
            None => to_stop.push((key.clone(), "stream closed")),
            Some(info) if info.subscribers == 0 && !limit.is_zero() => {
                let since = *s.no_viewer_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= limit {
                    to_stop.push((key.clone(), "no viewers"));
                }
            }
            Some(_) => s.no_viewer_since = None,
        }
    }
    for ((device_id, channel_id), why) in to_stop {
        control.stop(&device_id, &channel_id, why).await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn gb_ssrc_uses_domain_digits() {
        assert_eq!(super::gb_ssrc("3402000000", 1), 200_000_001);
        assert_eq!(crate::http::routes::stream_id(super::gb_ssrc("3402000000", 1)), "0200000001");
        assert_eq!(super::gb_ssrc("3401012345", 42), 101_230_042);
    }
}
