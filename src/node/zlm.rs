//! ZLMediaKit's JSON shapes for streams and RTP servers, as its API answers and hooks carry
//! them (field names, types and codes from recordings of a real MediaServer).

use super::rtp_servers::{RtpServer, VHOST};
use crate::shard::msg::StreamInfo;
use serde_json::{Map, Value, json};

/// ZLMediaKit's `originType` of an RTP push, and its name.
pub const ORIGIN_TYPE_RTP_PUSH: u64 = 3;
pub const ORIGIN_TYPE_RTP_PUSH_NAME: &str = "rtp_push";

/// Result codes (`code`) of ZLMediaKit's API.
pub mod code {
    pub const OK: i64 = 0;
    /// `connectRtpServer` of an unknown stream, `stopSendRtp` with nothing sent.
    pub const FAILED: i64 = -1;
    /// Wrong or missing secret.
    pub const AUTH: i64 = -100;
    /// Missing or bad parameters, a stream that exists.
    pub const ARGS: i64 = -300;
    /// A port that cannot be bound.
    pub const BIND: i64 = -400;
    /// Not found.
    pub const NOT_FOUND: i64 = -500;
}

pub fn error(code: i64, msg: &str) -> Value {
    json!({ "code": code, "msg": msg })
}

/// `-300`, naming the parameters a call needs, as ZLMediaKit does.
pub fn missing(names: &[&str]) -> Value {
    let list: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    error(code::ARGS, &format!("Required parameter missed: {}", list.join(", ")))
}

/// A `listRtpServer` entry.
pub fn rtp_server_entry(s: &RtpServer) -> Value {
    json!({
        "app": s.app,
        "only_track": s.only_track,
        "port": s.port,
        "ssrc": s.ssrc,
        "stream_id": s.stream_id,
        "tcp_mode": s.tcp_mode as u8,
        "vhost": VHOST,
    })
}

/// Where a stream's packets come from: `originSock`, and `getRtpInfo`'s fields.
pub fn origin_sock(s: &RtpServer, info: &StreamInfo, listen_ip: std::net::IpAddr) -> Map<String, Value> {
    let (peer_ip, peer_port) = info.peer.map_or((String::new(), 0), |p| (p.ip().to_string(), p.port()));
    let mut m = Map::new();
    m.insert("identifier".into(), s.stream_id.clone().into());
    m.insert("local_ip".into(), listen_ip.to_string().into());
    m.insert("local_port".into(), info.port.into());
    m.insert("peer_ip".into(), peer_ip.into());
    m.insert("peer_port".into(), peer_port.into());
    m
}

fn loss(info: &StreamInfo) -> f64 {
    let expected = info.packets + info.lost;
    if expected == 0 { -1.0 } else { info.lost as f64 / expected as f64 }
}

/// `tracks[]`: the video track and the audio track gmv has seen.
pub fn tracks(info: &StreamInfo) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(codec) = &info.audio_codec {
        let (id, name, rate) = match codec.as_str() {
            "aac" => (2, "mpeg4-generic", 8000),
            "pcma" => (3, "PCMA", 8000),
            _ => (4, "PCMU", 8000),
        };
        out.push(json!({
            "channels": 1,
            "codec_id": id,
            "codec_id_name": name,
            "codec_type": 1,
            "duration": info.media_ms,
            "frames": info.frames.saturating_sub(info.video_frames),
            "loss": loss(info),
            "ready": true,
            "sample_bit": 16,
            "sample_rate": rate,
        }));
    }
    if let Some(codec) = &info.video_codec {
        let (id, name) = if codec == "h265" { (1, "H265") } else { (0, "H264") };
        out.push(json!({
            "codec_id": id,
            "codec_id_name": name,
            "codec_type": 0,
            "duration": info.media_ms,
            "fps": info.fps,
            "frames": info.video_frames,
            "gop_interval_ms": info.gop_ms,
            "gop_size": info.video_frames.checked_div(info.keyframes).unwrap_or(0),
            "height": info.height.unwrap_or(0),
            "key_frames": info.keyframes,
            "loss": loss(info),
            "ready": true,
            "width": info.width.unwrap_or(0),
        }));
    }
    out
}

/// A stream as `getMediaList` lists it (one entry per schema) and `on_stream_changed` posts it.
pub fn media_entry(s: &RtpServer, info: &StreamInfo, schema: &str, created_unix_s: u64, listen_ip: std::net::IpAddr) -> Map<String, Value> {
    let readers = info.subscribers;
    let mut m = Map::new();
    m.insert("aliveSecond".into(), (info.age_ms / 1000).into());
    m.insert("app".into(), s.app.clone().into());
    m.insert("bytesSpeed".into(), (info.bitrate_kbps * 1000 / 8).into());
    m.insert("createStamp".into(), created_unix_s.into());
    m.insert("currentStamp".into(), info.media_ms.into());
    m.insert("isRecordingHLS".into(), info.hls.into());
    m.insert("isRecordingMP4".into(), info.record_on.into());
    m.insert("originSock".into(), Value::Object(origin_sock(s, info, listen_ip)));
    m.insert("originType".into(), ORIGIN_TYPE_RTP_PUSH.into());
    m.insert("originTypeStr".into(), ORIGIN_TYPE_RTP_PUSH_NAME.into());
    m.insert("originUrl".into(), format!("rtp://{VHOST}/{}/{}", s.app, s.stream_id).into());
    m.insert("params".into(), "".into());
    m.insert("readerCount".into(), readers.into());
    m.insert("schema".into(), schema.into());
    m.insert("stream".into(), s.stream_id.clone().into());
    m.insert("totalBytes".into(), info.bytes.into());
    m.insert("totalReaderCount".into(), readers.into());
    m.insert("tracks".into(), Value::Array(tracks(info)));
    m.insert("vhost".into(), VHOST.into());
    m
}

/// `on_rtp_server_timeout`'s body.
pub fn rtp_server_timeout(s: &RtpServer) -> Map<String, Value> {
    let v = json!({
        "app": s.app,
        "local_port": s.port,
        "re_use_port": s.re_use_port,
        "ssrc": s.opened_ssrc,
        "stream_id": s.stream_id,
        "tcp_mode": s.tcp_mode as u8,
        "vhost": VHOST,
    });
    v.as_object().cloned().unwrap_or_default()
}

/// The fields naming a stream in `on_publish`, `on_play`, `on_stream_none_reader`, ...
pub fn stream_ref(app: &str, stream: &str, schema: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("app".into(), app.into());
    m.insert("params".into(), "".into());
    m.insert("schema".into(), schema.into());
    m.insert("stream".into(), stream.into());
    m.insert("vhost".into(), VHOST.into());
    m
}
