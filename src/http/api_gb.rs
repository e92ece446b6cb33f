//! REST API for GB28181 devices: registry, catalog, sync, live play sessions, SIP counters.

use super::request::RequestHead;
use crate::control::Control;
use crate::proto::sip::endpoint::{Device, Endpoint, MediaTransport, Session};
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

fn session_json(control: &Control, head: &RequestHead, session: &Session) -> Value {
    let mut v = json!(session);
    v["play"] = super::play_tokens::stream_play(&control.shard, head, &session.stream_id);
    v
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
        ("GET", ["api", "sessions"]) => (200, json!({ "sessions": control.endpoint().sessions().collect::<Vec<_>>() })),
        ("GET", ["api", "sip"]) => (
            200,
            json!({
                "counters": control.endpoint().counters(),
                "driver": control.driver_counters(),
                "devices": control.endpoint().device_count(),
                "local": control.local.to_string(),
            }),
        ),
        _ => (404, json!({ "code": "not_found", "message": "no such resource" })),
    }
}
