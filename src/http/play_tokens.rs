//! Play tokens handed out by the API: in play answers (a stream's URLs) and by
//! `POST /api/play-tokens` for a stream, a GB channel or a recording.

use super::request::RequestHead;
use crate::auth::{PLAY_TOKEN_TTL_S_MAX, Scope};
use crate::proto::ssrc::parse_stream_id;
use crate::shard::Shard;
use serde_json::{Value, json};
use std::net::IpAddr;

/// Seconds since the Unix epoch: what play tokens expire by.
pub use crate::shard::unix_s;

/// A token for `scope` from this executor's signing secret: (token, expiry in unix seconds).
/// `ttl_s` defaults to `http.play_token_ttl_s`.
pub fn token_for(shard: &Shard, scope: &Scope, ttl_s: Option<u64>, client: Option<IpAddr>) -> Option<(String, u64)> {
    let secrets = shard.secrets();
    let expires = unix_s() + ttl_s.unwrap_or(secrets.play_token_ttl_s);
    secrets.issue(scope, expires, client).map(|t| (t, expires))
}

fn host(shard: &Shard, head: &RequestHead) -> String {
    head.header("host").map_or_else(|| shard.config.http.listen.to_string(), str::to_string)
}

/// A live stream's play URLs with a fresh token in them.
pub fn stream_play(shard: &Shard, head: &RequestHead, stream_id: &str) -> Value {
    let host = host(shard, head);
    let (token, expires) = token_for(shard, &Scope::Stream(stream_id.to_string()), None, None).unwrap_or_default();
    let mut urls = stream_urls(&host, stream_id, &token);
    urls["flv_with_header"] = json!(format!("http://{host}/{}/play/{stream_id}.flv", shard.config.node_id));
    urls["token"] = json!(token);
    urls["expires_at"] = json!(expires);
    urls
}

/// The URLs a stream token opens: HTTP-FLV (also over a WebSocket), HLS with TS or fMP4
/// segments, live fMP4 (also over a WebSocket) and WebRTC (WHEP).
fn stream_urls(host: &str, id: &str, token: &str) -> Value {
    json!({
        "flv": format!("http://{host}/flv/{id}/{token}"),
        "hls": format!("http://{host}/hls/{id}/{token}/index.m3u8"),
        "hls_fmp4": format!("http://{host}/hls/{id}/{token}/index.fmp4.m3u8"),
        "fmp4": format!("http://{host}/fmp4/{id}/{token}"),
        "whep": format!("http://{host}/whep/{id}/{token}"),
    })
}

/// Play URLs of a stream placed on a media node (`base`: its `http://host:port`): ZLMediaKit's,
/// on the node, with a token the node's `on_play` hook brings back here.
pub fn stream_play_on_node(shard: &Shard, node: &str, base: &str, stream_id: &str) -> Value {
    let (token, expires) = token_for(shard, &Scope::Stream(stream_id.to_string()), None, None).unwrap_or_default();
    json!({
        "flv": format!("{base}/rtp/{stream_id}.live.flv?token={token}"),
        "hls": format!("{base}/rtp/{stream_id}/hls.m3u8?token={token}"),
        "fmp4": format!("{base}/rtp/{stream_id}.live.mp4?token={token}"),
        "node": node,
        "token": token,
        "expires_at": expires,
    })
}

/// `POST /api/play-tokens` with one of `{"stream_id"}`, `{"device_id", "channel_id"}` or
/// `{"record"}` (a recording's file or stem), and optionally `"ttl_s"` and `"client_ip"`
/// (an address, or `"self"` for the caller's).
pub fn issue(shard: &Shard, head: &RequestHead, body: &[u8], caller: IpAddr) -> (u16, Value) {
    let bad = |m: &str| (400, json!({ "code": "bad_request", "message": m }));
    let Ok(req) = serde_json::from_slice::<Value>(body) else { return bad("body must be JSON") };
    let text = |k: &str| req.get(k).and_then(Value::as_str);
    let scope = match (text("stream_id"), text("device_id"), text("channel_id"), text("record")) {
        (Some(id), None, None, None) => match parse_stream_id(id) {
            Some(ssrc) => Scope::Stream(crate::proto::ssrc::stream_id(ssrc)),
            None => return bad("stream_id is a 10-digit stream id"),
        },
        (None, Some(d), Some(c), None) => Scope::Channel { device_id: d.into(), channel_id: c.into() },
        (None, None, None, Some(r)) => Scope::Record(r.trim_end_matches(".mp4").into()),
        _ => return bad("give one of stream_id, device_id + channel_id, or record"),
    };
    let ttl_s = match req.get("ttl_s") {
        None => None,
        Some(v) => match v.as_u64().filter(|t| (1..=PLAY_TOKEN_TTL_S_MAX).contains(t)) {
            Some(t) => Some(t),
            None => return bad(&format!("ttl_s must be 1..={PLAY_TOKEN_TTL_S_MAX}")),
        },
    };
    let client = match text("client_ip") {
        None => None,
        Some("self") => Some(caller),
        Some(ip) => match ip.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => return bad("client_ip is an IP address or \"self\""),
        },
    };
    let Some((token, expires)) = token_for(shard, &scope, ttl_s, client) else { return bad("ids have letters, digits, '_' and '-' only") };
    let host = host(shard, head);
    let play = match &scope {
        Scope::Stream(id) => stream_urls(&host, id, &token),
        Scope::Channel { device_id, channel_id } => json!({
            "flv": format!("http://{host}/flv/gb/{device_id}/{channel_id}/{token}"),
            "whep": format!("http://{host}/whep/gb/{device_id}/{channel_id}/{token}"),
        }),
        Scope::Record(stem) => json!({
            "mp4": format!("http://{host}/records/{stem}.mp4?token={token}"),
            "flv": format!("http://{host}/flv/record/{stem}/{token}"),
        }),
        Scope::Publish { .. } => return bad("publish tokens come from POST /api/publish-tokens"),
    };
    (201, json!({ "token": token, "expires_at": expires, "client_ip": client.map(|c| c.to_string()), "play": play }))
}

/// Publish tokens last this long unless asked otherwise: an encoder is set up once.
pub const PUBLISH_TOKEN_TTL_S_DEFAULT: u64 = 30 * 86_400;
/// And at most this long.
pub const PUBLISH_TOKEN_TTL_S_MAX: u64 = 3_650 * 86_400;

/// `POST /api/publish-tokens {"stream": "{app}/{stream}", "ttl_s"?, "client_ip"?}`: a token to
/// publish that stream over RTMP, the URL an encoder is given, and the stream's id and play URLs.
pub fn issue_publish(shard: &Shard, head: &RequestHead, body: &[u8], caller: IpAddr) -> (u16, Value) {
    let bad = |m: &str| (400, json!({ "code": "bad_request", "message": m }));
    if !shard.config.rtmp.enabled {
        return (409, json!({ "code": "rtmp_disabled", "message": "RTMP ingest is off (rtmp.enabled)" }));
    }
    let Ok(req) = serde_json::from_slice::<Value>(body) else { return bad("body must be JSON") };
    let Some((app, stream)) = req.get("stream").and_then(Value::as_str).and_then(|s| s.split_once('/')) else {
        return bad("stream is \"{app}/{stream}\", e.g. \"live/cam1\"");
    };
    if !Scope::valid_name(app) || !Scope::valid_name(stream) {
        return bad("app and stream names are letters, digits, '_' and '-' (at most 64 each)");
    }
    let ttl_s = match req.get("ttl_s") {
        None => PUBLISH_TOKEN_TTL_S_DEFAULT,
        Some(v) => match v.as_u64().filter(|t| (1..=PUBLISH_TOKEN_TTL_S_MAX).contains(t)) {
            Some(t) => t,
            None => return bad(&format!("ttl_s must be 1..={PUBLISH_TOKEN_TTL_S_MAX}")),
        },
    };
    let client = match req.get("client_ip").and_then(Value::as_str) {
        None => None,
        Some("self") => Some(caller),
        Some(ip) => match ip.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => return bad("client_ip is an IP address or \"self\""),
        },
    };
    let scope = Scope::Publish { app: app.to_string(), stream: stream.to_string() };
    let Some((token, expires)) = token_for(shard, &scope, Some(ttl_s), client) else { return bad("bad stream name") };
    let api_host = host(shard, head);
    let rtmp_host = shard.config.rtmp.public_host.clone().unwrap_or_else(|| host_only(&api_host).to_string());
    let port = shard.config.rtmp.listen.port();
    let stream_id = crate::proto::ssrc::stream_id(crate::shard::rtmp::published_ssrc(app, stream));
    (
        201,
        json!({
            "token": token,
            "expires_at": expires,
            "client_ip": client.map(|c| c.to_string()),
            "url": format!("rtmp://{rtmp_host}:{port}/{app}/{stream}?token={token}"),
            // OBS and most encoders ask for a server and a stream key apart.
            "server": format!("rtmp://{rtmp_host}:{port}/{app}"),
            "stream_key": format!("{stream}?token={token}"),
            "stream_id": stream_id,
            "play": stream_play(shard, head, &stream_id),
        }),
    )
}

/// The host of a `Host` header value (`host:port`, `[v6]:port`).
fn host_only(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().map_or(host, |h| &host[..h.len() + 2]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}
