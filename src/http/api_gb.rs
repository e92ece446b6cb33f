//! REST API for GB28181 devices: registry, catalog, live play sessions.

use super::request::RequestHead;
use super::routes;
use crate::control::Control;
use crate::control::play::MediaTransport;
use serde_json::{Value, json};
use std::rc::Rc;

fn device_json(control: &Control, d: &crate::control::registry::Device) -> Value {
    json!({
        "device_id": d.device_id,
        "online": d.online(control.keepalive()),
        "addr": d.addr.map(|a| a.to_string()),
        "registered_at": d.registered_at,
        "info": d.info,
        "channel_count": d.channels.len(),
    })
}

fn not_found(what: &str) -> (u16, Value) {
    (404, json!({ "code": "not_found", "message": format!("no such {what}") }))
}

pub async fn route(control: &Rc<Control>, head: &RequestHead, segments: &[&str], body: &[u8]) -> (u16, Value) {
    match (head.method.as_str(), segments) {
        ("GET", ["api", "devices"]) => {
            let reg = control.registry.borrow();
            (200, json!({ "devices": reg.devices.values().map(|d| device_json(control, d)).collect::<Vec<_>>() }))
        }
        ("GET", ["api", "devices", id]) => match control.registry.borrow().devices.get(*id) {
            Some(d) => {
                let mut v = device_json(control, d);
                v["channels"] = json!(d.channels.values().collect::<Vec<_>>());
                (200, v)
            }
            None => not_found("device"),
        },
        ("GET", ["api", "devices", id, "channels"]) => match control.registry.borrow().devices.get(*id) {
            Some(d) => (200, json!({ "channels": d.channels.values().collect::<Vec<_>>() })),
            None => not_found("device"),
        },
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
                Ok(session) => {
                    let host = head.header("host").map_or_else(|| control.shard.config.http.listen.to_string(), str::to_string);
                    let token = routes::request_token(head).unwrap_or_default();
                    let mut v = json!(session);
                    v["play"] = json!({
                        "flv": format!("http://{host}/flv/{}/{token}", session.stream_id),
                        "flv_with_header": format!("http://{host}/{}/play/{}.flv", control.shard.config.node_id, session.stream_id),
                    });
                    (200, v)
                }
                Err(e) => {
                    let (status, code) = e.http();
                    (status, json!({ "code": code, "message": format!("{e:?}") }))
                }
            }
        }
        ("POST", ["api", "devices", id, "channels", ch, "stop"]) => {
            if control.stop(id, ch, "api").await {
                (200, json!({ "stopped": true }))
            } else {
                not_found("session")
            }
        }
        ("GET", ["api", "sessions"]) => (200, json!({ "sessions": control.sessions.borrow().values().cloned().collect::<Vec<_>>() })),
        ("GET", ["api", "sip"]) => (200, json!({ "counters": *control.counters.borrow(), "local": control.local.to_string() })),
        _ => (404, json!({ "code": "not_found", "message": "no such resource" })),
    }
}
