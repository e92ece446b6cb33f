//! REST API for GB28181 devices: registry, catalog, sync, live play sessions, SIP counters.

use super::request::RequestHead;
use crate::control::{Control, PlaySite, Registry};
use crate::proto::sip::endpoint::{Answer, ControlError, Device, DeviceAsk, DeviceCommand, MediaTransport, PlayKind, Session};
use crate::proto::sip::ptz::{self, PtzAction};
use serde_json::{Value, json};
use std::rc::Rc;
use std::time::Instant;

fn device_json(ep: &Registry, d: &Device, now: Instant) -> Value {
    json!({
        "device_id": d.device_id,
        "online": ep.is_online(d, now),
        "addr": d.addr.map(|a| a.to_string()),
        "registered_at": d.registered_at,
        "info": d.info,
        "channel_count": d.channels.len(),
        "last_error": d.last_error,
        "status": d.status,
        "gb_version": d.gb_version,
        "position": d.position,
        "subscriptions": ep.subscriptions_of(&d.device_id).into_iter().map(|(k, active)| json!({ "kind": k.name(), "active": active })).collect::<Vec<_>>(),
    })
}

/// Items in one page of a listing (`limit`, default and most).
pub const LIST_PAGE_MAX: usize = 1_000;

fn not_found(what: &str) -> (u16, Value) {
    (404, json!({ "code": "not_found", "message": format!("no such {what}") }))
}

pub fn session_json(control: &Control, head: &RequestHead, session: &Session) -> Value {
    let mut v = json!(session);
    v["play"] = match control.play_site(session.ssrc) {
        PlaySite::Node { node, base } => super::play_tokens::stream_play_on_node(&control.shard, &node, &base, &session.stream_id),
        PlaySite::Here => super::play_tokens::stream_play(&control.shard, head, &session.stream_id),
    };
    v
}

/// A PTZ request body: `{"pan", "tilt", "zoom", "speed"}` (each optional; all zero stops),
/// `{"focus", "speed"}` or `{"iris", "speed"}`; values -1..=1, speed 0..=1 (default 0.5).
/// `{"plan": "name"}` or `{"plan": null}`.
fn plan_named(body: &[u8]) -> Result<Option<String>, (u16, Value)> {
    match serde_json::from_slice::<Value>(body).ok().map(|v| v["plan"].clone()) {
        Some(Value::String(name)) => Ok(Some(name)),
        Some(Value::Null) => Ok(None),
        _ => Err(bad_request("the body is {\"plan\": \"name\"} or {\"plan\": null}".into())),
    }
}

/// `PUT /api/streams/{id}/record-plan`.
pub async fn assign_stream_record_plan(control: &Rc<Control>, stream_id: &str, body: &[u8]) -> (u16, Value) {
    let plan = match plan_named(body) {
        Ok(p) => p,
        Err(refused) => return refused,
    };
    match control.assign_stream_record_plan(stream_id, plan.clone()).await {
        Ok(()) => (200, json!({ "stream_id": stream_id, "plan": plan })),
        Err(e) => plan_refused(&e),
    }
}

fn ptz_action(body: &[u8]) -> Result<PtzAction, String> {
    let req: Value = if body.is_empty() { json!({}) } else { serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))? };
    let Some(fields) = req.as_object() else { return Err("body must be a JSON object".into()) };
    if let Some(k) = fields.keys().find(|k| !["pan", "tilt", "zoom", "speed", "focus", "iris"].contains(&k.as_str())) {
        return Err(format!("unknown field {k:?}"));
    }
    let num = |k: &str| -> Result<Option<f64>, String> {
        match fields.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| format!("{k} must be a number")),
        }
    };
    let speed = num("speed")?.unwrap_or(0.5);
    let moving = ["pan", "tilt", "zoom"].iter().any(|k| fields.contains_key(*k));
    let action = match (num("focus")?, num("iris")?) {
        (Some(_), Some(_)) => return Err("focus and iris are separate commands".into()),
        (Some(_), _) | (_, Some(_)) if moving => return Err("focus/iris and pan/tilt/zoom are separate commands".into()),
        (Some(value), None) => PtzAction::Focus { value, speed },
        (None, Some(value)) => PtzAction::Iris { value, speed },
        (None, None) => {
            PtzAction::Move { pan: num("pan")?.unwrap_or(0.0), tilt: num("tilt")?.unwrap_or(0.0), zoom: num("zoom")?.unwrap_or(0.0), speed }
        }
    };
    ptz::encode(action).map(|_| action).map_err(|e| match e {
        ptz::PtzError::OutOfRange("speed") => "speed must be 0..=1".to_string(),
        ptz::PtzError::OutOfRange(k) => format!("{k} must be -1..=1"),
        ptz::PtzError::BadPreset => "presets are numbered 1..=255".to_string(),
    })
}

fn upstream_admin(result: Result<(u16, Value), crate::control::UpstreamAdminError>) -> (u16, Value) {
    result.unwrap_or_else(|e| {
        let (status, code, message) = e.status();
        (status, json!({ "code": code, "message": message }))
    })
}

fn bad_request(message: String) -> (u16, Value) {
    (400, json!({ "code": "bad_request", "message": message }))
}

/// The device's answer to an ask, or the error.
fn answer_json(result: Result<Answer, ControlError>) -> (u16, Value) {
    match result {
        Ok(Answer::Done) => (200, json!({ "result": "OK" })),
        Ok(Answer::Status(s)) => (200, json!(s)),
        Ok(Answer::Presets(p)) => (200, json!({ "presets": p })),
        Err(e) => {
            let (status, code) = e.http();
            (status, json!({ "code": code, "message": e.to_string() }))
        }
    }
}

fn json_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err("body must be a JSON object".into()),
    }
}

/// `{"on": true|false}`.
fn on_off(body: &[u8]) -> Result<bool, String> {
    json_object(body)?.get("on").and_then(Value::as_bool).ok_or_else(|| "on must be true or false".into())
}

/// `{"enabled": bool, "preset": 1..=255, "reset_s": seconds}`.
fn home_position(body: &[u8]) -> Result<DeviceAsk, String> {
    let m = json_object(body)?;
    let enabled = m.get("enabled").and_then(Value::as_bool).ok_or("enabled must be true or false")?;
    let preset = m.get("preset").and_then(Value::as_u64).filter(|p| (1..=255).contains(p)).ok_or("preset is 1..=255")? as u8;
    let reset_s = m.get("reset_s").and_then(Value::as_u64).filter(|s| *s <= 86_400).ok_or("reset_s is 0..=86400")? as u32;
    Ok(DeviceAsk::HomePosition { enabled, preset, reset_s })
}

/// `{"name"?, "heartbeat_s"?, "heartbeat_count"?}`, at least one.
fn basic_param(body: &[u8]) -> Result<DeviceAsk, String> {
    let m = json_object(body)?;
    if let Some(k) = m.keys().find(|k| !["name", "heartbeat_s", "heartbeat_count"].contains(&k.as_str())) {
        return Err(format!("unknown field {k:?}"));
    }
    let name = match m.get("name") {
        None => None,
        Some(Value::String(n)) if !n.is_empty() && n.chars().count() <= 64 => Some(n.clone()),
        Some(_) => return Err("name is 1..=64 characters".into()),
    };
    let number = |k: &str, max: u64| -> Result<Option<u32>, String> {
        match m.get(k) {
            None => Ok(None),
            Some(v) => v.as_u64().filter(|n| (1..=max).contains(n)).map(|n| Some(n as u32)).ok_or_else(|| format!("{k} is 1..={max}")),
        }
    };
    let (heartbeat_s, heartbeat_count) = (number("heartbeat_s", 3600)?, number("heartbeat_count", 100)?);
    if name.is_none() && heartbeat_s.is_none() && heartbeat_count.is_none() {
        return Err("give name, heartbeat_s or heartbeat_count".into());
    }
    Ok(DeviceAsk::Config { name, heartbeat_s, heartbeat_count })
}

/// Sends a PTZCmd and reports the device's answer.
async fn send_ptz(control: &Rc<Control>, device_id: &str, channel_id: &str, action: PtzAction) -> (u16, Value) {
    let Ok(bytes) = ptz::encode(action) else {
        return (400, json!({ "code": "bad_request", "message": "invalid PTZ command" }));
    };
    let (status, mut v) = send_control(control, device_id, channel_id, DeviceCommand::Ptz(bytes)).await;
    v["ptz_cmd"] = json!(ptz::hex(&bytes));
    (status, v)
}

/// Starts a voice broadcast to a channel: the body is a WAV announcement (8 kHz mono: 16-bit
/// PCM, A-law or µ-law) or `{"stream_id": "..."}` naming a stream whose G.711 A-law audio is
/// sent; answered once the audio goes out, or with why it cannot.
async fn broadcast(control: &Rc<Control>, device_id: &str, channel_id: &str, body: &[u8]) -> (u16, Value) {
    let source = match broadcast_source(body) {
        Ok(source) => source,
        Err(refused) => return refused,
    };
    match control.broadcast(device_id, channel_id, source).await {
        Ok(info) => (200, json!({ "broadcast": info })),
        Err(e) => broadcast_refused(&e),
    }
}

/// A broadcast group (`POST /api/broadcasts`): one source to several channels, each with its
/// result. The channels are `?channels={device}:{channel},...` (the body a WAV or JSON) or the
/// JSON's `"channels": [{"device_id", "channel_id"}, ...]`. 200 when any started.
async fn broadcast_group(control: &Rc<Control>, head: &RequestHead, body: &[u8]) -> (u16, Value) {
    let listed = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        v["channels"].as_array().map(|a| a.iter().map(|c| Some((c["device_id"].as_str()?.to_string(), c["channel_id"].as_str()?.to_string()))).collect::<Option<Vec<_>>>())
    });
    let channels = match (listed, head.query_param("channels")) {
        (Some(Some(c)), _) => c,
        (None, Some(q)) => match super::routes::channel_list(q) {
            Some(c) => c,
            None => return bad_request("?channels= is {device}:{channel} separated by commas".into()),
        },
        _ => return bad_request("name the channels: ?channels={device}:{channel},... or \"channels\": [{\"device_id\", \"channel_id\"}]".into()),
    };
    let source = match broadcast_source(body) {
        Ok(source) => source,
        Err(refused) => return refused,
    };
    let results = match control.broadcast_group(&channels, source).await {
        Ok(results) => results,
        Err(e) => return broadcast_refused(&e),
    };
    let any = results.iter().any(Result::is_ok);
    let listed: Vec<Value> = channels
        .iter()
        .zip(&results)
        .map(|((device_id, channel_id), r)| match r {
            Ok(info) => json!({ "device_id": device_id, "channel_id": channel_id, "broadcast": info }),
            Err(e) => json!({ "device_id": device_id, "channel_id": channel_id, "error": broadcast_refused(e).1 }),
        })
        .collect();
    let status = match results.iter().find_map(|r| r.as_ref().err()) {
        Some(e) if !any => e.http().0,
        _ => 200,
    };
    (status, json!({ "broadcasts": listed }))
}

/// An alarm raised through the API describes itself in at most this many bytes.
const ALARM_DESCRIPTION_BYTES_MAX: usize = 1_024;

/// Adds (`name` None: POST) or sets (PUT, the name from the path) a record plan.
async fn put_record_plan(control: &Rc<Control>, name: Option<String>, body: &[u8]) -> (u16, Value) {
    let mut v: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return bad_request("the body is a plan: {\"name\", \"time_zone\"?, \"ranges\": [{\"days\": [1..7], \"start\": \"HH:MM\", \"end\": \"HH:MM\"}]}".into()),
    };
    let create = name.is_none();
    if let Some(name) = name {
        v["name"] = json!(name);
    }
    let plan: crate::control::record_plan::Plan = match serde_json::from_value(v) {
        Ok(p) => p,
        Err(e) => return bad_request(format!("not a plan: {e}")),
    };
    let name = plan.name.clone();
    match control.put_record_plan(plan, create).await {
        Ok(()) => (if create { 201 } else { 200 }, control.record_plan_json(&name).unwrap_or(Value::Null)),
        Err(e) => plan_refused(&e),
    }
}

fn settings_refused(e: &crate::control::device_settings::SettingsError) -> (u16, Value) {
    let (status, code) = e.http();
    (status, json!({ "code": code, "message": e.to_string() }))
}

fn plan_refused(e: &crate::control::PlanError) -> (u16, Value) {
    let (status, code) = e.http();
    (status, json!({ "code": code, "message": e.to_string() }))
}

/// A path segment with its %XX escapes decoded (a plan's name may be Chinese); as it is when
/// they do not make UTF-8.
fn percent_decoded(segment: &str) -> String {
    let b = segment.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| segment.to_string())
}

/// A broadcast's source from its body: a WAV announcement (to A-law) or a stream named in JSON.
fn broadcast_source(body: &[u8]) -> Result<crate::control::voice::BroadcastSource, (u16, Value)> {
    use crate::control::voice::BroadcastSource;
    if body.starts_with(b"RIFF") {
        return match crate::proto::wav::to_g711(body, crate::proto::wav::Law::A) {
            Ok(alaw) => Ok(BroadcastSource::Announcement(alaw)),
            Err(e) => Err((400, json!({ "code": "bad_audio", "message": e.to_string() }))),
        };
    }
    let id = serde_json::from_slice::<Value>(body).ok().and_then(|v| v["stream_id"].as_str().map(str::to_string));
    match id.as_deref().and_then(crate::proto::ssrc::parse_stream_id) {
        Some(ssrc) => Ok(BroadcastSource::Stream(ssrc)),
        None => Err(bad_request("the body is a WAV file (8 kHz mono) or {\"stream_id\": \"...\"}".into())),
    }
}

fn broadcast_refused(e: &crate::control::voice::BroadcastError) -> (u16, Value) {
    let (status, code) = e.http();
    (status, json!({ "code": code, "message": e.to_string() }))
}

/// Sends a DeviceControl and reports the device's answer (200 only once the device said so).
async fn send_control(control: &Rc<Control>, device_id: &str, channel_id: &str, command: DeviceCommand) -> (u16, Value) {
    match control.control(device_id, channel_id, command).await {
        Ok(()) => (200, json!({ "device_id": device_id, "channel_id": channel_id, "answered": true })),
        Err(e) => {
            let (status, code) = e.http();
            (status, json!({ "code": code, "message": e.to_string() }))
        }
    }
}

pub async fn route(control: &Rc<Control>, head: &RequestHead, segments: &[&str], body: &[u8]) -> (u16, Value) {
    let now = Instant::now();
    match (head.method.as_str(), segments) {
        ("GET", ["api", "devices"]) => {
            // ?q= (id, name, manufacturer or a channel's id/name), ?online=true|false, ?offset, ?limit.
            let ep = control.registry();
            let q = head.query_param("q").map(str::to_lowercase);
            let online = head.query_param("online").map(|v| v == "true");
            let matches = |d: &&Device| {
                let text = |s: &str| q.as_deref().is_none_or(|q| s.to_lowercase().contains(q));
                online.is_none_or(|o| ep.is_online(d, now) == o)
                    && (text(&d.device_id)
                        || text(&d.info.device_name)
                        || text(&d.info.manufacturer)
                        || d.channels.values().any(|c| text(&c.device_id) || text(&c.name)))
            };
            let page = head.page(LIST_PAGE_MAX);
            let (devices, total) = page.of(ep.devices().filter(matches).map(|d| {
                let mut v = device_json(&ep, d, now);
                v["settings"] = control.device_settings_json(&d.device_id);
                v
            }));
            (200, json!({ "devices": devices, "total": total, "offset": page.offset }))
        }
        ("GET", ["api", "devices", id]) => {
            let ep = control.registry();
            let settings = control.device_settings_json(id);
            match ep.device(id) {
                Some(d) => {
                    let mut v = device_json(&ep, d, now);
                    v["channels"] = json!(d.channels.values().collect::<Vec<_>>());
                    v["settings"] = settings;
                    (200, v)
                }
                // Set up, not registered yet.
                None if !settings.is_null() => (200, json!({ "device_id": id, "registered": false, "online": false, "channel_count": 0, "settings": settings })),
                None => not_found("device"),
            }
        }
        ("DELETE", ["api", "devices", id]) => {
            let removed = control.remove_device(id);
            if control.forget_device_settings(id).await || removed {
                (200, json!({ "removed": true }))
            } else {
                not_found("device")
            }
        }
        ("GET", ["api", "device-settings"]) => (200, json!({ "devices": control.device_settings_list() })),
        ("POST", ["api", "devices"]) => {
            let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let id = v["device_id"].as_str().unwrap_or_default().to_string();
            match control.set_device_settings(&id, &v, true).await {
                Ok(settings) => (201, json!({ "device_id": id, "settings": settings })),
                Err(e) => settings_refused(&e),
            }
        }
        ("PUT", ["api", "devices", id]) => {
            let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            if v.get("device_id").is_some_and(|d| d != *id) {
                return bad_request("device_id in the body is not the one in the path".into());
            }
            match control.set_device_settings(id, &v, false).await {
                Ok(settings) => (200, json!({ "device_id": id, "settings": settings })),
                Err(e) => settings_refused(&e),
            }
        }
        ("POST", ["api", "events", id, "ack"]) => {
            let Ok(alarm_id) = id.parse::<u64>() else { return not_found("alarm") };
            let note = serde_json::from_slice::<Value>(body).ok().and_then(|v| v["note"].as_str().map(str::to_string)).unwrap_or_default();
            if note.len() > ALARM_DESCRIPTION_BYTES_MAX {
                return bad_request(format!("a note is at most {ALARM_DESCRIPTION_BYTES_MAX} bytes"));
            }
            let secrets = control.shard.secrets();
            let by = crate::http::routes::api_caller(&secrets, head).map_or("?", |(name, _)| name).to_string();
            match control.events.acknowledge(alarm_id, &by, &note) {
                Some(Ok(ack)) => (200, json!({ "ack_event_id": ack })),
                Some(Err(earlier)) => (409, json!({ "code": "acknowledged", "message": format!("acknowledged already (event {earlier})") })),
                None => not_found("alarm in the events history"),
            }
        }
        ("GET", ["api", "devices", id, "channels"]) => match control.registry().device(id) {
            Some(d) => {
                let q = head.query_param("q").map(str::to_lowercase);
                let text = |s: &str| q.as_deref().is_none_or(|q| s.to_lowercase().contains(q));
                let page = head.page(LIST_PAGE_MAX);
                let (channels, total) = page.of(d.channels.values().filter(|c| text(&c.device_id) || text(&c.name)));
                (200, json!({ "channels": channels, "total": total, "offset": page.offset }))
            }
            None => not_found("device"),
        },
        ("POST", ["api", "devices", id, "sync"]) => {
            if control.sync(id) {
                (202, json!({ "device_id": id, "queried": ["DeviceInfo", "Catalog"] }))
            } else {
                not_found("device")
            }
        }
        ("POST", ["api", "devices", id, "channels", ch, "play"]) => {
            let req: Value = serde_json::from_slice(body).unwrap_or(json!({}));
            let transport = match req.get("transport").and_then(Value::as_str) {
                None => control.device_transport(id),
                Some(t) => match MediaTransport::parse(t) {
                    Some(t) => t,
                    None => return (400, json!({ "code": "bad_request", "message": "transport is udp, tcp (passive) or tcp-active" })),
                },
            };
            // The sub-stream (辅码流) for small tiles, where the device is set up for one.
            let kind = match req.get("stream").and_then(Value::as_str) {
                None | Some("main") => PlayKind::Live,
                Some("sub") => match control.sub_stream_attr(id) {
                    Some(attr) => PlayKind::LiveSub(attr),
                    None => {
                        let m = format!("device {id} is not set up for a sub-stream: PUT /api/devices/{id} {{\"sub_stream\": \"stream\" | \"streamnumber\" | \"streamprofile\" | \"streamMode\"}} says how it is asked for one");
                        return (409, json!({ "code": "no_sub_stream", "message": m }));
                    }
                },
                Some(_) => return (400, json!({ "code": "bad_request", "message": "stream is main or sub" })),
            };
            match control.play_kind(id, ch, transport, kind, None).await {
                Ok(session) => (200, session_json(control, head, &session)),
                Err(e) => {
                    let (status, code) = e.http();
                    (status, json!({ "code": code, "message": e.to_string() }))
                }
            }
        }
        ("POST", ["api", "devices", id, "channels", ch, "stop"]) => {
            if control.stop(id, ch) {
                (200, json!({ "stopped": true }))
            } else {
                not_found("session")
            }
        }
        ("POST", ["api", "devices", id, "channels", ch, "ptz"]) => match ptz_action(body) {
            Ok(action) => send_ptz(control, id, ch, action).await,
            Err(message) => (400, json!({ "code": "bad_request", "message": message })),
        },
        (method @ ("POST" | "DELETE"), ["api", "devices", id, "channels", ch, "presets", n, rest @ ..]) => {
            let Some(n) = n.parse::<u8>().ok().filter(|n| *n > 0) else {
                return (400, json!({ "code": "bad_request", "message": "presets are numbered 1..=255" }));
            };
            let action = match (method, rest) {
                ("POST", []) => PtzAction::PresetSet(n),
                ("POST", ["call"]) => PtzAction::PresetCall(n),
                ("DELETE", []) => PtzAction::PresetDelete(n),
                _ => return (404, json!({ "code": "not_found", "message": "no such resource" })),
            };
            // Calling or removing a preset the channel does not have is a 404 (its list asked
            // once and kept; a device that cannot list them is taken at its word).
            if !matches!(action, PtzAction::PresetSet(_))
                && let Ok(presets) = control.presets(id, ch, false).await
                && !presets.iter().any(|p| p.id == n)
            {
                return (404, json!({ "code": "not_found", "message": format!("channel {ch} has no preset {n}") }));
            }
            let answer = send_ptz(control, id, ch, action).await;
            if answer.0 == 200 {
                control.preset_changed(id, ch, action);
            }
            answer
        }
        ("GET", ["api", "devices", id, "status"]) => answer_json(control.ask(id, id, DeviceAsk::Status).await),
        ("GET", ["api", "devices", id, "channels", ch, "presets"]) => answer_json(control.presets(id, ch, true).await.map(Answer::Presets)),
        ("POST", ["api", "devices", id, "channels", ch, "home"]) => match home_position(body) {
            Ok(ask) => answer_json(control.ask(id, ch, ask).await),
            Err(message) => bad_request(message),
        },
        ("POST", ["api", "devices", id, "channels", ch, "device-recording"]) => match on_off(body) {
            Ok(on) => answer_json(control.ask(id, ch, DeviceAsk::Record(on)).await),
            Err(message) => bad_request(message),
        },
        ("POST", ["api", "devices", id, "guard"]) => match on_off(body) {
            Ok(on) => answer_json(control.ask(id, id, DeviceAsk::Guard(on)).await),
            Err(message) => bad_request(message),
        },
        ("POST", ["api", "devices", id, "alarm-reset"]) => {
            let target =
                serde_json::from_slice::<Value>(body).ok().and_then(|v| v["channel"].as_str().map(str::to_string)).unwrap_or_else(|| id.to_string());
            answer_json(control.ask(id, &target, DeviceAsk::ResetAlarm).await)
        }
        ("PUT", ["api", "devices", id, "config"]) => match basic_param(body) {
            Ok(ask) => answer_json(control.ask(id, id, ask).await),
            Err(message) => bad_request(message),
        },
        ("POST", ["api", "devices", id, "channels", ch, "keyframe"]) => send_control(control, id, ch, DeviceCommand::KeyFrame).await,
        ("POST", ["api", "devices", id, "reboot"]) => send_control(control, id, id, DeviceCommand::Reboot).await,
        ("POST", ["api", "devices", id, "channels", ch, "broadcast"]) => broadcast(control, id, ch, body).await,
        ("DELETE", ["api", "devices", id, "channels", ch, "broadcast"]) => {
            if control.stop_broadcast(id, ch) {
                (200, json!({ "stopped": true }))
            } else {
                not_found("broadcast to this channel")
            }
        }
        ("GET", ["api", "broadcasts"]) => (200, json!({ "broadcasts": control.broadcasts() })),
        ("POST", ["api", "devices", id, "channels", ch, "alarm"]) => {
            if !control.has_channel(id, ch) {
                return not_found("channel of a known device");
            }
            let description = serde_json::from_slice::<Value>(body).ok().and_then(|v| v["description"].as_str().map(str::to_string)).unwrap_or_default();
            if description.len() > ALARM_DESCRIPTION_BYTES_MAX {
                return bad_request(format!("a description is at most {ALARM_DESCRIPTION_BYTES_MAX} bytes"));
            }
            (200, json!({ "event_id": control.raise_alarm(id, ch, &description) }))
        }
        ("GET", ["api", "record-plans"]) => (200, control.record_plans_json()),
        ("POST", ["api", "record-plans"]) => put_record_plan(control, None, body).await,
        ("GET", ["api", "record-plans", name]) => match control.record_plan_json(&percent_decoded(name)) {
            Some(plan) => (200, plan),
            None => not_found("plan"),
        },
        ("PUT", ["api", "record-plans", name]) => put_record_plan(control, Some(percent_decoded(name)), body).await,
        ("DELETE", ["api", "record-plans", name]) => match control.delete_record_plan(&percent_decoded(name)).await {
            Ok(()) => (200, json!({ "deleted": true })),
            Err(e) => plan_refused(&e),
        },
        ("PUT", ["api", "devices", id, "channels", ch, "record-plan"]) => {
            let plan = match plan_named(body) {
                Ok(p) => p,
                Err(refused) => return refused,
            };
            match control.assign_record_plan(id, ch, plan.clone()).await {
                Ok(()) => (200, json!({ "device_id": id, "channel_id": ch, "plan": plan })),
                Err(e) => plan_refused(&e),
            }
        }
        ("POST", ["api", "broadcasts"]) => broadcast_group(control, head, body).await,
        ("GET", ["api", "sessions"]) => {
            let sessions: Vec<Value> = control
                .registry()
                .sessions()
                .map(|s| {
                    let mut v = json!(s);
                    v["no_media"] = json!(control.no_media(s.ssrc));
                    v
                })
                .collect();
            (200, json!({ "sessions": sessions }))
        }
        ("GET", ["api", "upstreams"]) => (200, json!({ "upstreams": control.upstreams_json() })),
        ("POST", ["api", "upstreams"]) => upstream_admin(control.set_upstream(None, body).await.map(|v| (201, v))),
        ("PUT", ["api", "upstreams", id]) => upstream_admin(control.set_upstream(Some(id), body).await.map(|v| (200, v))),
        // The console's picker: only what is shared (`{"shared": "all" | [ids]}`).
        ("PUT", ["api", "upstreams", id, "shared"]) => match serde_json::from_slice::<Value>(body) {
            Ok(v) if v.as_object().is_some_and(|o| o.len() == 1 && o.contains_key("shared")) => {
                upstream_admin(control.set_upstream(Some(id), body).await.map(|v| (200, v)))
            }
            _ => bad_request("body must be {\"shared\": \"all\"} or {\"shared\": [channel ids]}".into()),
        },
        ("DELETE", ["api", "upstreams", id]) => upstream_admin(control.remove_upstream(id).await.map(|()| (200, json!({ "removed": id })))),
        ("GET", ["api", "sip"]) => (
            200,
            json!({
                "counters": control.registry().counters(),
                "driver": control.driver_counters(),
                "events": control.events.counters(),
                "webhooks": control.events.webhooks.counters(),
                "devices": control.registry().device_count(),
                "local": control.local.to_string(),
            }),
        ),
        _ => match super::api_history::route(control, head, segments, body).await {
            Some(answer) => answer,
            None => (404, json!({ "code": "not_found", "message": "no such resource" })),
        },
    }
}
