//! ZLMediaKit's JSON shapes for streams and RTP servers, as its API answers and hooks carry
//! them (field names, types and codes from recordings of a real MediaServer).

use super::rtp_servers::{RtpServer, VHOST};
use crate::shard::msg::StreamInfo;
use serde_json::{Map, Value, json};

/// ZLMediaKit's `originType` of an RTP push, and its name.
pub const ORIGIN_TYPE_RTP_PUSH: u64 = 3;
pub const ORIGIN_TYPE_RTP_PUSH_NAME: &str = "rtp_push";
/// A stream pulled from a URL (`addStreamProxy`).
pub const ORIGIN_TYPE_PULL: u64 = 4;
pub const ORIGIN_TYPE_PULL_NAME: &str = "pull";
/// A recording played back (`loadMP4File`).
pub const ORIGIN_TYPE_MP4_VOD: u64 = 6;
pub const ORIGIN_TYPE_MP4_VOD_NAME: &str = "mp4_vod";

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

/// Where a stream comes from, as a media entry names it.
pub struct Origin {
    pub kind: u64,
    pub kind_name: &'static str,
    pub url: String,
    pub sock: Map<String, Value>,
}

/// An RTP server's stream as `getMediaList` lists it (one entry per schema) and
/// `on_stream_changed` posts it.
pub fn media_entry(s: &RtpServer, info: &StreamInfo, schema: &str, created_unix_s: u64, listen_ip: std::net::IpAddr) -> Map<String, Value> {
    let origin = Origin {
        kind: ORIGIN_TYPE_RTP_PUSH,
        kind_name: ORIGIN_TYPE_RTP_PUSH_NAME,
        // The opened name: wvp's SSRC allocator reads the hex SSRC after `/rtp/`.
        url: format!("rtp://{VHOST}/{}/{}", s.app, s.stream_id),
        sock: origin_sock(s, info, listen_ip),
    };
    stream_entry(&s.app, &s.name, origin, info, schema, created_unix_s)
}

/// A stream `app/name` as a media entry.
pub fn stream_entry(app: &str, name: &str, origin: Origin, info: &StreamInfo, schema: &str, created_unix_s: u64) -> Map<String, Value> {
    let readers = info.subscribers;
    let mut m = Map::new();
    m.insert("aliveSecond".into(), (info.age_ms / 1000).into());
    m.insert("app".into(), app.into());
    m.insert("bytesSpeed".into(), (info.bitrate_kbps * 1000 / 8).into());
    m.insert("createStamp".into(), created_unix_s.into());
    m.insert("currentStamp".into(), info.media_ms.into());
    m.insert("isRecordingHLS".into(), info.hls.into());
    m.insert("isRecordingMP4".into(), info.record_on.into());
    m.insert("originSock".into(), Value::Object(origin.sock));
    m.insert("originType".into(), origin.kind.into());
    m.insert("originTypeStr".into(), origin.kind_name.into());
    m.insert("originUrl".into(), origin.url.into());
    m.insert("params".into(), "".into());
    m.insert("readerCount".into(), readers.into());
    m.insert("schema".into(), schema.into());
    m.insert("stream".into(), name.into());
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

/// What an `on_publish` answer asks of the stream: the keys of ZLMediaKit's `ProtocolOption`
/// wvp-GB28181-pro sets (`HookResultForOnPublish`); absent or `null` keys keep the defaults.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PublishOptions {
    /// Announce, serve, record and close the stream under this name (wvp: `{deviceId}_{channelId}`,
    /// playback and download `..._{yyyyMMddHHmmss}_{yyyyMMddHHmmss}`).
    pub stream_replace: Option<String>,
    pub enable_mp4: bool,
    /// One MP4 file per this many seconds (wvp's download: the range plus 10, so one file).
    pub mp4_max_second: Option<u64>,
    /// False: the stream's audio is dropped (wvp: a channel without audio).
    pub enable_audio: Option<bool>,
}

impl PublishOptions {
    pub fn from_answer(answer: &Map<String, Value>) -> PublishOptions {
        let text = |k: &str| answer.get(k).and_then(|v| v.as_str()).filter(|s| !s.is_empty()).map(str::to_string);
        PublishOptions {
            stream_replace: text("stream_replace"),
            enable_mp4: answer.get("enable_mp4").and_then(zlm_bool).unwrap_or(false),
            mp4_max_second: answer.get("mp4_max_second").and_then(zlm_u64).filter(|s| *s > 0),
            enable_audio: answer.get("enable_audio").and_then(zlm_bool),
        }
    }
}

/// A boolean as ZLMediaKit reads one from JSON or a form (its `variant::as<bool>`): `true`,
/// `false` (any case), or a number that is 1 (true) or anything else (false); None: absent,
/// `null` or not a boolean, so the default stands.
pub fn zlm_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => Some(n.as_u64() == Some(1)),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        Value::String(s) if s.starts_with(|c: char| c.is_ascii_digit()) => Some(s.parse::<u64>().ok() == Some(1)),
        _ => None,
    }
}

fn zlm_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_answers_read_as_zlmediakit_reads_them() {
        let answer = json!({"code": 0, "msg": "success", "enable_audio": false, "enable_mp4": true, "mp4_max_second": 3610,
            "stream_replace": "34020000001320000001_34020000001310000001_20261205080000_20261205080100"});
        let o = PublishOptions::from_answer(answer.as_object().unwrap());
        assert_eq!(o.stream_replace.as_deref(), Some("34020000001320000001_34020000001310000001_20261205080000_20261205080100"));
        assert!(o.enable_mp4);
        assert_eq!(o.mp4_max_second, Some(3610));
        assert_eq!(o.enable_audio, Some(false));
        let o = PublishOptions::from_answer(json!({"code": 0, "enable_mp4": "1", "mp4_max_second": "0", "stream_replace": null}).as_object().unwrap());
        assert_eq!(o, PublishOptions { enable_mp4: true, ..Default::default() }, "0 seconds: the default; null: absent");
        for (v, b) in [(json!("TRUE"), Some(true)), (json!("500"), Some(false)), (json!(1), Some(true)), (json!(0), Some(false)), (json!("yes"), None), (Value::Null, None)] {
            assert_eq!(zlm_bool(&v), b, "{v}");
        }
    }
}
