//! ONVIF over the REST API: `POST /api/onvif/discover` (WS-Discovery probe), `POST
//! /api/onvif/inspect` (a camera's identity, profiles and stream addresses), `POST
//! /api/onvif/proxies` (a pull proxy of one profile, in one call), and PTZ of such a proxy as
//! GB channels have it (`/api/proxies/{name}/ptz`, `/presets`). The conversations run on the
//! pull thread (`onvif`); here they are asked for and answered.

use super::onvif::{self, Failure};
use super::{Mode, OnvifLink, Proxies, ProxyConfig, Transport, bad_request as bad};
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

/// ONVIF conversations under way at once, at most (each a handful of HTTP exchanges).
pub const ONVIF_CALLS_MAX: usize = 8;
/// The longest user name or password taken.
const CREDENTIAL_BYTES_MAX: usize = 128;

fn failed(f: &Failure) -> (u16, Value) {
    let code = match f {
        Failure::Unreachable(_) => "camera_unreachable",
        Failure::Unauthorized => "camera_unauthorized",
        Failure::Device(_) => "camera_error",
    };
    let status = if matches!(f, Failure::Unreachable(_)) { 504 } else { 502 };
    (status, json!({ "code": code, "message": f.to_string() }))
}

/// One conversation's place among `ONVIF_CALLS_MAX`, given back when dropped.
struct Slot<'a>(&'a std::cell::Cell<usize>);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Discover {
    /// Where the probe goes: the multicast group (default) or one camera's `ip:port`.
    address: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Inspect {
    device_url: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MakeProxy {
    name: String,
    device_url: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
    /// The profile's token; absent: the camera's first (its main stream).
    profile: Option<String>,
    #[serde(default)]
    transport: Transport,
    #[serde(default)]
    mode: Mode,
    idle_s: Option<u64>,
    /// A GB channel id: shared upward by cascade.
    channel_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Move {
    pan: Option<f32>,
    tilt: Option<f32>,
    zoom: Option<f32>,
    speed: Option<f32>,
}

/// Why a request to a camera is refused before any conversation: credentials too long, a
/// device address that is no `http://` URL.
fn refused(device_url: &str, user: &str, password: &str) -> Option<(u16, Value)> {
    if user.len() > CREDENTIAL_BYTES_MAX || password.len() > CREDENTIAL_BYTES_MAX {
        return Some(bad(format!("user and password are at most {CREDENTIAL_BYTES_MAX} bytes")));
    }
    match url::Url::parse(device_url) {
        Ok(u) if u.scheme() == "http" && u.host_str().is_some_and(|h| !h.is_empty()) && device_url.len() <= super::URL_BYTES_MAX => None,
        Ok(u) if u.scheme() == "https" => Some(bad("device_url: https:// cameras are not spoken to yet (http:// is)")),
        _ => Some(bad("device_url is the camera's http://host[:port]/onvif/device_service")),
    }
}

impl Proxies {
    fn onvif_slot(&self) -> Option<Slot<'_>> {
        let n = self.onvif_calls.get();
        (n < ONVIF_CALLS_MAX).then(|| {
            self.onvif_calls.set(n + 1);
            Slot(&self.onvif_calls)
        })
    }

    /// Runs a camera conversation on the pull thread.
    async fn converse<T: Send + 'static>(&self, work: impl std::future::Future<Output = Result<T, Failure>> + Send + 'static) -> Result<T, (u16, Value)> {
        let Some(_slot) = self.onvif_slot() else {
            return Err((503, json!({ "code": "busy", "message": format!("{ONVIF_CALLS_MAX} ONVIF conversations are under way; try again") })));
        };
        match self.on_pull_thread(work).await {
            Some(Ok(v)) => Ok(v),
            Some(Err(f)) => Err(failed(&f)),
            None => Err((503, json!({ "code": "pull_unavailable", "message": "the pull thread is busy or gone" }))),
        }
    }

    pub(super) async fn onvif_route(&self, method: &str, segments: &[&str], body: &[u8]) -> (u16, Value) {
        match (method, segments) {
            ("POST", ["api", "onvif", "discover"]) => {
                let ask: Discover = match serde_json::from_slice(if body.is_empty() { b"{}" } else { body }) {
                    Ok(a) => a,
                    Err(e) => return bad(format!("body: {e}")),
                };
                let to = match ask.address.as_deref().map(str::parse::<std::net::SocketAddr>) {
                    None => onvif::DISCOVERY_ADDR,
                    Some(Ok(a)) => a,
                    Some(Err(_)) => return bad("address is ip:port (the multicast group 239.255.255.250:3702 when absent)"),
                };
                let (interface, wait) = (self.shard.config.onvif.interface, Duration::from_millis(self.shard.config.onvif.probe_wait_ms));
                let found = self.converse(async move { onvif::discover(interface, to, wait).await.map_err(Failure::Unreachable) }).await;
                match found {
                    Ok(cameras) => {
                        let list: Vec<Value> = cameras
                            .iter()
                            .map(|c| json!({ "endpoint": c.endpoint, "name": c.name, "hardware": c.hardware, "device_url": c.device_url(), "xaddrs": c.xaddrs }))
                            .collect();
                        tracing::info!(%to, cameras = list.len(), "ONVIF probe answered");
                        (200, json!({ "cameras": list, "probed": to.to_string(), "wait_ms": wait.as_millis() as u64 }))
                    }
                    Err(e) => e,
                }
            }
            ("POST", ["api", "onvif", "inspect"]) => {
                let ask: Inspect = match serde_json::from_slice(body) {
                    Ok(a) => a,
                    Err(e) => return bad(format!("body: {e}")),
                };
                if let Some(refusal) = refused(&ask.device_url, &ask.user, &ask.password) {
                    return refusal;
                }
                match self.converse(async move { onvif::inspect(&ask.device_url, &ask.user, &ask.password).await }).await {
                    Ok(report) => (200, json!(report)),
                    Err(e) => e,
                }
            }
            ("POST", ["api", "onvif", "proxies"]) => {
                let ask: MakeProxy = match serde_json::from_slice(body) {
                    Ok(a) => a,
                    Err(e) => return bad(format!("body: {e}")),
                };
                if let Some(refusal) = refused(&ask.device_url, &ask.user, &ask.password) {
                    return refusal;
                }
                let (url, user, password) = (ask.device_url.clone(), ask.user.clone(), ask.password.clone());
                let report = match self.converse(async move { onvif::inspect(&url, &user, &password).await }).await {
                    Ok(r) => r,
                    Err(e) => return e,
                };
                let profile = match &ask.profile {
                    Some(token) => report.profiles.iter().find(|p| &p.token == token),
                    None => report.profiles.iter().find(|p| p.stream_uri.is_some()),
                };
                let Some(profile) = profile else {
                    return (422, json!({ "code": "no_profile", "message": "the camera has no such profile with a stream address", "profiles": report.profiles }));
                };
                let Some(uri) = &profile.stream_uri else {
                    return (422, json!({ "code": "no_stream_uri", "message": profile.stream_uri_error }));
                };
                let url = match onvif::with_credentials(uri, &ask.user, &ask.password) {
                    Ok(u) => u,
                    Err(m) => return (422, json!({ "code": "no_stream_uri", "message": m })),
                };
                let link = OnvifLink {
                    device_url: report.device_url.clone(),
                    user: ask.user,
                    password: ask.password,
                    profile: profile.token.clone(),
                    ptz_url: profile.ptz.then(|| report.ptz_url.clone()),
                };
                let config = ProxyConfig { name: ask.name, url: url.to_string(), transport: ask.transport, mode: ask.mode, idle_s: ask.idle_s, onvif: Some(link), channel_id: ask.channel_id };
                self.add(config).await
            }
            (_, ["api", "proxies", name, rest @ ..]) => self.ptz(method, name, rest, body).await,
            _ => (404, json!({ "code": "not_found", "message": "no such API" })),
        }
    }

    /// `ptz` and `presets` of a proxy made from an ONVIF camera.
    async fn ptz(&self, method: &str, name: &str, rest: &[&str], body: &[u8]) -> (u16, Value) {
        let Some((link, turn)) = self.entries.borrow().get(name).map(|e| (e.config.onvif.clone(), e.ptz_turn.clone())) else {
            return (404, json!({ "code": "not_found", "message": "no such proxy" }));
        };
        let Some(link) = link else {
            return (409, json!({ "code": "not_onvif", "message": "this proxy was not made from an ONVIF camera: gmv cannot move it" }));
        };
        let Some(ptz_url) = link.ptz_url.clone() else {
            return (409, json!({ "code": "no_ptz", "message": "the camera's profile has no PTZ configuration" }));
        };
        let OnvifLink { device_url, user, password, profile, .. } = link;
        // One call at a time per camera, in order: a stop sent after a move reaches it after.
        let Ok(_turn) = turn.acquire_static_permit(1).await else {
            return (404, json!({ "code": "not_found", "message": "no such proxy" }));
        };
        let camera = async move |device_url: String| onvif::Camera::open(&device_url, &user, &password).await;
        match (method, rest) {
            ("POST", ["ptz"]) => {
                let m: Move = match serde_json::from_slice(if body.is_empty() { b"{}" } else { body }) {
                    Ok(m) => m,
                    Err(e) => return bad(format!("body: {e}")),
                };
                let speed = m.speed.unwrap_or(0.5);
                let axes = [m.pan.unwrap_or(0.0), m.tilt.unwrap_or(0.0), m.zoom.unwrap_or(0.0)];
                if !(0.0..=1.0).contains(&speed) {
                    return bad("speed must be 0..=1");
                }
                if axes.iter().any(|a| !(-1.0..=1.0).contains(a)) {
                    return bad("pan, tilt and zoom must be -1..=1");
                }
                let [pan, tilt, zoom] = axes.map(|a| a * speed);
                let work = async move { camera(device_url).await?.move_or_stop(&ptz_url, &profile, pan, tilt, zoom).await };
                match self.converse(work).await {
                    Ok(()) => (200, json!({ "answered": true, "stopped": pan == 0.0 && tilt == 0.0 && zoom == 0.0 })),
                    Err(e) => e,
                }
            }
            ("GET", ["presets"]) => match self.converse(async move { camera(device_url).await?.presets(&ptz_url, &profile).await }).await {
                Ok(list) => (200, json!({ "presets": list.into_iter().map(|(token, name)| json!({ "token": token, "name": name })).collect::<Vec<_>>() })),
                Err(e) => e,
            },
            ("POST", ["presets"]) => {
                let preset_name = serde_json::from_slice::<Value>(body).ok().and_then(|v| v.get("name").and_then(Value::as_str).map(str::to_string));
                let Some(preset_name) = preset_name.filter(|n| !n.is_empty() && n.len() <= 64) else { return bad("body is {\"name\": 1..=64 characters}") };
                match self.converse(async move { camera(device_url).await?.set_preset(&ptz_url, &profile, &preset_name).await }).await {
                    Ok(token) => (201, json!({ "token": token })),
                    Err(e) => e,
                }
            }
            ("POST", ["presets", token, "call"]) => {
                let token = token.to_string();
                match self.converse(async move { camera(device_url).await?.goto_preset(&ptz_url, &profile, &token).await }).await {
                    Ok(()) => (200, json!({ "answered": true })),
                    Err(e) => e,
                }
            }
            ("DELETE", ["presets", token]) => {
                let owned = token.to_string();
                match self.converse(async move { camera(device_url).await?.remove_preset(&ptz_url, &profile, &owned).await }).await {
                    Ok(()) => (200, json!({ "deleted": token })),
                    Err(e) => e,
                }
            }
            _ => (404, json!({ "code": "not_found", "message": "no such API" })),
        }
    }
}
