//! REST API for GB28181 devices: registry, catalog, sync, live play sessions, SIP counters.

use super::request::RequestHead;
use crate::control::Control;
use crate::proto::sip::endpoint::{Device, DeviceCommand, Endpoint, MediaTransport, Session};
use crate::proto::sip::ptz::{self, PtzAction};
use serde_json::{Value, json};
use std::rc::Rc;
use std::time::Instant;

fn device_json(ep: &Endpoint, d: &Device, now: Instant) -> Value {
    json!({
        "device_id": d.device_id,
        "online": ep.is_online(d, now),
        "addr": d.addr.map(|a| a.to_string()),
        "registered_at": d.registered_at,
        "info": d.info,
        "channel_count": d.channels.len(),
        "last_error": d.last_error,
    })
}

fn not_found(what: &str) -> (u16, Value) {
    (404, json!({ "code": "not_found", "message": format!("no such {what}") }))
}

pub fn session_json(control: &Control, head: &RequestHead, session: &Session) -> Value {
    let mut v = json!(session);
    v["play"] = super::play_tokens::stream_play(&control.shard, head, &session.stream_id);
    v
}

/// A PTZ request body: `{"pan", "tilt", "zoom", "speed"}` (each optional; all zero stops),
/// `{"focus", "speed"}` or `{"iris", "speed"}`; values -1..=1, speed 0..=1 (default 0.5).
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

/// Sends a PTZCmd and reports the device's answer.
async fn send_ptz(control: &Rc<Control>, device_id: &str, channel_id: &str, action: PtzAction) -> (u16, Value) {
    let Ok(bytes) = ptz::encode(action) else {
        return (400, json!({ "code": "bad_request", "message": "invalid PTZ command" }));
    };
    let (status, mut v) = send_control(control, device_id, channel_id, DeviceCommand::Ptz(bytes)).await;
    v["ptz_cmd"] = json!(ptz::hex(&bytes));
    (status, v)
}

/// Sends a DeviceControl and reports the device's answer (200 only once the device said so).
async fn send_control(control: &Rc<Control>, device_id: &str, channel_id: &str, command: DeviceCommand) -> (u16, Value) {
    match control.control(device_id, channel_id, command).await {
        Ok(()) => (200, json!({ "device_id": device_id, "channel_id": channel_id, "answered": true })),
        Err(e) => {
            let (status, code) = e.http();
            (status, json!({ "code": code, "message": format!("{e:?}") }))
        }
    }
}

pub async fn route(control: &Rc<Control>, head: &RequestHead, segments: &[&str], body: &[u8]) -> (u16, Value) {
    let now = Instant::now();
    match (head.method.as_str(), segments) {
        ("GET", ["api", "devices"]) => {
            let ep = control.endpoint();
            (200, json!({ "devices": ep.devices().map(|d| device_json(&ep, d, now)).collect::<Vec<_>>() }))
        }
        ("GET", ["api", "devices", id]) => {
            let ep = control.endpoint();
            match ep.device(id) {
                Some(d) => {
                    let mut v = device_json(&ep, d, now);
                    v["channels"] = json!(d.channels.values().collect::<Vec<_>>());
                    (200, v)
                }
                None => not_found("device"),
            }
        }
        ("GET", ["api", "devices", id, "channels"]) => match control.endpoint().device(id) {
            Some(d) => (200, json!({ "channels": d.channels.values().collect::<Vec<_>>() })),
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
                None => MediaTransport::Udp,
                Some(t) => match MediaTransport::parse(t) {
                    Some(t) => t,
                    None => return (400, json!({ "code": "bad_request", "message": "transport is udp, tcp (passive) or tcp-active" })),
                },
            };
            match control.play(id, ch, transport).await {
                Ok(session) => (200, session_json(control, head, &session)),
                Err(e) => {
                    let (status, code) = e.http();
                    (status, json!({ "code": code, "message": format!("{e:?}") }))
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
            send_ptz(control, id, ch, action).await
        }
        ("POST", ["api", "devices", id, "channels", ch, "keyframe"]) => send_control(control, id, ch, DeviceCommand::KeyFrame).await,
        ("POST", ["api", "devices", id, "reboot"]) => send_control(control, id, id, DeviceCommand::Reboot).await,
        ("GET", ["api", "sessions"]) => (200, json!({ "sessions": control.endpoint().sessions().collect::<Vec<_>>() })),
        ("GET", ["api", "sip"]) => (
            200,
            json!({
                "counters": control.endpoint().counters(),
                "driver": control.driver_counters(),
                "events": control.events.counters(),
                "webhooks": control.events.webhooks.counters(),
                "devices": control.endpoint().device_count(),
                "local": control.local.to_string(),
            }),
        ),
        _ => match super::api_history::route(control, head, segments, body).await {
            Some(answer) => answer,
            None => (404, json!({ "code": "not_found", "message": "no such resource" })),
        },
    }
}
