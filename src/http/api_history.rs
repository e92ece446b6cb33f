//! REST API for recordings on devices: RecordInfo search, playback with MANSRTSP control,
//! downloads to MP4, and one timeline per channel merging device and gmv recordings.

use super::request::RequestHead;
use crate::control::Control;
use crate::control::downloads::{DOWNLOAD_SPEED_MAX, Download, DownloadRequest};
use crate::proto::sip::endpoint::{ControlError, MediaTransport, PlayError, PlayKind, RecordType};
use crate::proto::sip::gbtime;
use crate::proto::sip::mansrtsp::PlaybackAction;
use crate::proto::ssrc::parse_stream_id;
use serde_json::{Value, json};
use std::rc::Rc;

/// Items per page of a RecordInfo listing (`limit`, default and most).
pub const RECORD_PAGE_ITEMS_DEFAULT: usize = 500;
pub const RECORD_PAGE_ITEMS_MAX: usize = 2_000;
/// The longest range one search, playback or download may span.
pub const HISTORY_RANGE_S_MAX: i64 = 31 * 86_400;
/// gmv recordings looked at for a timeline.
pub const TIMELINE_OWN_RECORDS_MAX: usize = 10_000;

fn bad(message: impl Into<String>) -> (u16, Value) {
    (400, json!({ "code": "bad_request", "message": message.into() }))
}

fn error_json(status: u16, code: &str, message: String) -> (u16, Value) {
    (status, json!({ "code": code, "message": message }))
}

fn play_error(e: PlayError) -> (u16, Value) {
    let (status, code) = e.http();
    error_json(status, code, e.to_string())
}

fn control_error(e: ControlError) -> (u16, Value) {
    let (status, code) = e.http();
    error_json(status, code, e.to_string())
}

/// A time as unix seconds, or local `yyyy-MM-ddTHH:mm:ss` at `offset_s`.
fn parse_time(text: &str, offset_s: i32) -> Option<i64> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok();
    }
    gbtime::parse_local(text, offset_s)
}

/// `start` and `end` (query or JSON, as numbers or text): both given, end after start, not
/// too long apart.
fn range(start: Option<String>, end: Option<String>, offset_s: i32) -> Result<(i64, i64), (u16, Value)> {
    let (Some(start), Some(end)) = (start, end) else { return Err(bad("start and end are required (unix seconds or yyyy-MM-ddTHH:mm:ss)")) };
    let (Some(s), Some(e)) = (parse_time(&start, offset_s), parse_time(&end, offset_s)) else {
        return Err(bad("start and end are unix seconds or yyyy-MM-ddTHH:mm:ss"));
    };
    if e <= s {
        return Err(bad("end must be after start"));
    }
    if e - s > HISTORY_RANGE_S_MAX {
        return Err(bad(format!("a range spans at most {HISTORY_RANGE_S_MAX} s")));
    }
    if s < 0 {
        return Err(bad("start is before 1970"));
    }
    Ok((s, e))
}

fn json_text(v: &Value, k: &str) -> Option<String> {
    match v.get(k)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn body_json(body: &[u8]) -> Result<Value, (u16, Value)> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| bad(format!("body is not JSON: {e}")))
}

/// The transport asked for, else the device's (its setting, else UDP).
fn transport(control: &Control, device_id: &str, req: &Value) -> Result<MediaTransport, (u16, Value)> {
    match req.get("transport").and_then(Value::as_str) {
        None => Ok(control.device_transport(device_id)),
        Some(t) => MediaTransport::parse(t).ok_or_else(|| bad("transport is udp, tcp (passive) or tcp-active")),
    }
}

/// A download with the URL of its file: here, or on the media node that wrote it (known once
/// the node closed it; the node asks this control whether the token opens it).
fn download_json(control: &Control, d: &Download) -> Value {
    let mut v = json!(d);
    v["url"] = match (&d.node, &d.node_file) {
        (None, _) => {
            let token = super::play_tokens::token_for(&control.shard, &crate::auth::Scope::Record(d.id.clone()), None, None).map_or_else(String::new, |(t, _)| t);
            json!(format!("/downloads/{}?token={token}", d.file))
        }
        (Some(node), Some(file)) => json!(node_file_url(control, node, &file.url)),
        (Some(_), None) => Value::Null,
    };
    v
}

/// The URL of a file a media node wrote (`url`: its path there, as `on_record_mp4` said), with
/// this control's token for that file there (the node's on_http_access brings it back).
pub(super) fn node_file_url(control: &Control, node: &str, url: &str) -> String {
    let api = control.nodes.as_ref().and_then(|n| n.api_of(node)).unwrap_or_default();
    let path = url.trim_start_matches('/');
    let scope = crate::control::nodes::node_file_scope(node, path);
    let token = super::play_tokens::token_for(&control.shard, &scope, None, None).map_or_else(String::new, |(t, _)| t);
    format!("{api}/{path}?token={token}")
}

async fn records(control: &Rc<Control>, head: &RequestHead, device_id: &str, channel_id: &str) -> (u16, Value) {
    let offset_s = control.registry().utc_offset_for(device_id);
    let param = |k: &str| head.query_param(k).map(str::to_string);
    let (start, end) = match range(param("start"), param("end"), offset_s) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let Some(record_type) = RecordType::parse(head.query_param("type").unwrap_or("all")) else {
        return bad("type is all, time, alarm or manual");
    };
    let offset: usize = head.query_param("offset").and_then(|v| v.parse().ok()).unwrap_or(0);
    let limit = head.query_param("limit").and_then(|v| v.parse().ok()).unwrap_or(RECORD_PAGE_ITEMS_DEFAULT).clamp(1, RECORD_PAGE_ITEMS_MAX);
    match control.records(device_id, channel_id, start, end, record_type).await {
        Ok(list) => {
            let total = list.items.len();
            let page: Vec<_> = list.items.into_iter().skip(offset).take(limit).collect();
            (
                200,
                json!({
                    "device_id": device_id,
                    "channel_id": channel_id,
                    "start": start,
                    "end": end,
                    "complete": list.complete,
                    "sum_num": list.sum_num,
                    "total": total,
                    "offset": offset,
                    "records": page,
                }),
            )
        }
        Err(e) => control_error(e),
    }
}

/// A playback or download body: the JSON, its range (in the device's zone) and transport.
type HistoryRequest = (Value, (i64, i64), MediaTransport);

fn history_request(control: &Control, device_id: &str, body: &[u8]) -> Result<HistoryRequest, (u16, Value)> {
    let req = body_json(body)?;
    let offset_s = control.registry().utc_offset_for(device_id);
    let range = range(json_text(&req, "start"), json_text(&req, "end"), offset_s)?;
    let transport = transport(control, device_id, &req)?;
    Ok((req, range, transport))
}

async fn playback(control: &Rc<Control>, head: &RequestHead, device_id: &str, channel_id: &str, body: &[u8]) -> (u16, Value) {
    let (_, (start, end), transport) = match history_request(control, device_id, body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let kind = PlayKind::Playback { start: start as u64, end: end as u64 };
    match control.play_kind(device_id, channel_id, transport, kind, None).await {
        Ok(session) => (200, super::api_gb::session_json(control, head, &session)),
        Err(e) => play_error(e),
    }
}

async fn download(control: &Rc<Control>, device_id: &str, channel_id: &str, body: &[u8]) -> (u16, Value) {
    let (req, (start, end), transport) = match history_request(control, device_id, body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let speed = match req.get("speed") {
        None | Some(Value::Null) => 4,
        Some(v) => match v.as_u64().filter(|s| (1..=u64::from(DOWNLOAD_SPEED_MAX)).contains(s)) {
            Some(s) => s as u32,
            None => return bad(format!("speed is 1..={DOWNLOAD_SPEED_MAX}")),
        },
    };
    let req = DownloadRequest { start: start as u64, end: end as u64, speed, transport };
    match control.start_download(device_id, channel_id, req).await {
        Ok(d) => (202, download_json(control, &d)),
        Err(e) => play_error(e),
    }
}

/// `{"action": "pause" | "resume" | "seek" (+ "position_s") | "speed" (+ "scale")}`.
fn playback_action(body: &[u8]) -> Result<PlaybackAction, (u16, Value)> {
    let req = body_json(body)?;
    let number = |k: &str| req.get(k).and_then(Value::as_f64);
    match req.get("action").and_then(Value::as_str) {
        Some("pause") => Ok(PlaybackAction::Pause),
        Some("resume") => Ok(PlaybackAction::Resume),
        Some("seek") => number("position_s")
            .map(PlaybackAction::new_seek)
            .and_then(Result::ok)
            .ok_or_else(|| bad("seek needs position_s: seconds from the playback start")),
        Some("speed") => {
            number("scale").map(PlaybackAction::new_speed).and_then(Result::ok).ok_or_else(|| bad("speed needs scale: 0.25, 0.5, 1, 2 or 4"))
        }
        _ => Err(bad("action is pause, resume, seek or speed")),
    }
}

async fn session_control(control: &Rc<Control>, id: &str, body: &[u8]) -> (u16, Value) {
    let Some(ssrc) = parse_stream_id(id) else { return error_json(404, "not_found", "no such session".into()) };
    let action = match playback_action(body) {
        Ok(a) => a,
        Err(e) => return e,
    };
    match control.playback_control(ssrc, action).await {
        Ok(()) => (200, json!({ "stream_id": id, "action": action.name(), "answered": true })),
        Err(e) => control_error(e),
    }
}

/// Device recordings (RecordInfo over the range), gmv's own recordings of the channel, and
/// those media nodes wrote for its record plan.
async fn timeline(control: &Rc<Control>, head: &RequestHead, channel_id: &str) -> (u16, Value) {
    let device_id = {
        let found = control.registry().owner_of(channel_id).map(|d| d.device_id.clone());
        match found {
            Some(d) => d,
            None => return error_json(404, "not_found", "no device has this channel".into()),
        }
    };
    let offset_s = control.registry().utc_offset_for(&device_id);
    let param = |k: &str| head.query_param(k).map(str::to_string);
    let (start, end) = match range(param("start"), param("end"), offset_s) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let mut ranges = Vec::new();
    let mut device = json!({ "complete": false });
    match control.records(&device_id, channel_id, start, end, RecordType::All).await {
        Ok(list) => {
            device = json!({ "complete": list.complete });
            ranges.extend(list.items.iter().map(
                |r| json!({ "source": "device", "start": r.start, "end": r.end, "type": r.record_type, "name": r.name, "file_path": r.file_path }),
            ));
        }
        Err(e) => device["error"] = json!(control_error(e).1["message"]),
    }
    let index = control.shard.record_writers.index.clone();
    let (from_ms, to_ms) = (Some((start.max(0) as u64).saturating_mul(1000)), Some((end.max(0) as u64).saturating_mul(1000)));
    let filter = crate::shard::record::RecordFilter { channel_id: Some(channel_id.to_string()), stream_id: None, from_ms, to_ms };
    // With it, what media nodes recorded for the channel's plan: an MP4 on the node, no FLV.
    let (own, on_nodes) = glommio::executor()
        .spawn_blocking(move || {
            let on_nodes = index.node_records(&filter, TIMELINE_OWN_RECORDS_MAX).unwrap_or_else(|error| {
                tracing::warn!(%error, "recordings index: media nodes' recordings not listed");
                Vec::new()
            });
            (crate::shard::record::list(&index, &filter, TIMELINE_OWN_RECORDS_MAX), on_nodes)
        })
        .await;
    for (r, in_progress) in own {
        let (s, e) = ((r.start_unix_ms / 1000) as i64, (r.start_unix_ms.saturating_add(r.duration_ms) / 1000) as i64);
        if e < start || s > end {
            continue;
        }
        let stem = r.file.trim_end_matches(".mp4").to_string();
        let token =
            super::play_tokens::token_for(&control.shard, &crate::auth::Scope::Record(stem.clone()), None, None).map_or_else(String::new, |(t, _)| t);
        ranges.push(json!({ "source": "gmv", "start": s, "end": e, "file": r.file, "in_progress": in_progress, "flv": format!("/flv/record/{stem}/{token}") }));
    }
    for f in on_nodes {
        let (s, e) = ((f.start_unix_ms / 1000) as i64, (f.start_unix_ms.saturating_add(f.duration_ms) / 1000) as i64);
        if e < start || s > end {
            continue;
        }
        let url = node_file_url(control, &f.node, &f.url);
        ranges.push(json!({ "source": "node", "node": f.node, "start": s, "end": e, "file": f.name, "in_progress": false, "url": url }));
    }
    ranges.sort_by_key(|r| (r["start"].as_i64(), r["end"].as_i64()));
    (200, json!({ "device_id": device_id, "channel_id": channel_id, "start": start, "end": end, "device": device, "ranges": ranges }))
}

/// Routes for recordings; None when the path is not one of them.
pub async fn route(control: &Rc<Control>, head: &RequestHead, segments: &[&str], body: &[u8]) -> Option<(u16, Value)> {
    Some(match (head.method.as_str(), segments) {
        ("GET", ["api", "devices", id, "channels", ch, "records"]) => records(control, head, id, ch).await,
        ("POST", ["api", "devices", id, "channels", ch, "playback"]) => playback(control, head, id, ch, body).await,
        ("POST", ["api", "devices", id, "channels", ch, "download"]) => download(control, id, ch, body).await,
        ("POST", ["api", "sessions", id, "control"]) => session_control(control, id, body).await,
        ("DELETE", ["api", "sessions", id]) => match parse_stream_id(id) {
            Some(ssrc) if control.stop_session(ssrc) => (200, json!({ "stopped": true })),
            _ => error_json(404, "not_found", "no such session".into()),
        },
        ("GET", ["api", "downloads"]) => {
            (200, json!({ "downloads": control.downloads.list().iter().map(|d| download_json(control, d)).collect::<Vec<_>>() }))
        }
        ("GET", ["api", "downloads", id]) => match control.downloads.get(id) {
            Some(d) => (200, download_json(control, &d)),
            None => error_json(404, "not_found", "no such download".into()),
        },
        // A running download is cancelled (its file stays); a finished one is removed with its file.
        ("DELETE", ["api", "downloads", id]) => {
            if control.cancel_download(id) {
                (200, json!({ "cancelled": true }))
            } else if control.remove_download(id).await {
                (200, json!({ "removed": true }))
            } else {
                error_json(404, "not_found", "no such download".into())
            }
        }
        ("GET", ["api", "channels", ch, "timeline"]) => timeline(control, head, ch).await,
        _ => return None,
    })
}
