//! REST API, served on the control executor. Stream operations go to the owning shard as
//! messages; replies come back on one-shot channels.

use super::Front;
use super::conn::HttpConn;
use super::request::RequestHead;
use super::response::{respond_error, respond_json};
use super::routes::{self, parse_stream_id, stream_id};
use crate::auth::Scope;
use crate::shard::Shard;
use crate::shard::msg::{OpenError, StreamCallError, StreamInfo, StreamSpec};
use futures_lite::AsyncReadExt;
use serde_json::{Value, json};
use std::time::Duration;

pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Recordings listed at most per request.
const RECORDS_LIST_MAX: usize = 10_000;
/// Tries to find an unused random SSRC before giving up.
const SSRC_PICK_ATTEMPTS: usize = 8;

pub async fn serve(front: &Front, conn: &mut HttpConn, head: RequestHead) {
    let shard = &front.shard;
    let segments: Vec<&str> = head.path.trim_matches('/').split('/').collect();
    // Signing in and out take no credential.
    match (head.method.as_str(), segments.as_slice()) {
        ("POST", ["api", "session"]) => return super::users_api::sign_in(front, conn, &head).await,
        ("DELETE", ["api", "session"]) => return super::users_api::sign_out(conn).await,
        _ => {}
    }
    // Who calls is known from the head: a refused caller's body is never read (the
    // connection closes, out of step), so only authorised callers get the larger bodies.
    let secrets = shard.secrets();
    let (caller, role) = match routes::api_caller(&secrets, &head) {
        Ok(c) => c,
        Err((status, code, message)) => {
            conn.keep_alive &= head.content_length == 0;
            return respond_error(conn, status, code, message).await;
        }
    };
    let needed = routes::required_role(&head.method, &segments);
    if role < needed {
        tracing::info!(caller, ?role, ?needed, method = %head.method, path = %head.path, "API call refused: role too low");
        conn.keep_alive &= head.content_length == 0;
        return respond_error(conn, 403, "forbidden", &format!("this call needs the {needed:?} role; key {caller:?} is {role:?}")).await;
    }
    if head.content_length > routes::body_bytes_max(&head.method, &segments) {
        conn.keep_alive = false; // its body is not read
        return respond_error(conn, 413, "body_too_large", "request body too large").await;
    }
    let body = match glommio::timer::timeout(BODY_READ_TIMEOUT, async { Ok(read_body(conn, &head).await) }).await {
        Ok(Some(b)) => b,
        _ => {
            conn.keep_alive = false;
            return respond_error(conn, 400, "bad_request", "request body incomplete").await;
        }
    };
    if let ("GET", ["api", "events"]) = (head.method.as_str(), segments.as_slice()) {
        return match &front.control {
            Some(control) => super::events_sse::serve(control, conn, &head).await,
            None => respond_error(conn, 503, "sip_disabled", "events come from the control plane (SIP is disabled)").await,
        };
    }
    if let ("GET", ["metrics"]) = (head.method.as_str(), segments.as_slice()) {
        let text = super::metrics::render(shard, front.control.as_deref(), front.node.as_deref()).await;
        return super::response::respond(conn, 200, "text/plain; version=0.0.4; charset=utf-8", text.as_bytes()).await;
    }
    if let ("GET", ["api", "records", "export"]) = (head.method.as_str(), segments.as_slice()) {
        return super::record_export::serve(shard, conn, &head).await;
    }
    if let ("GET", ["api", "events", id, "snapshot"]) = (head.method.as_str(), segments.as_slice()) {
        // An alarm clip's snapshot (only a number names a file).
        let Ok(alarm_id) = id.parse::<u64>() else { return respond_error(conn, 404, "not_found", "no such alarm").await };
        let path = crate::control::alarm_clips::snapshot_path(&shard.config.data_dir, alarm_id);
        return match glommio::executor().spawn_blocking(move || std::fs::read(path)).await {
            Ok(jpeg) => super::response::respond(conn, 200, "image/jpeg", &jpeg).await,
            Err(_) => respond_error(conn, 404, "not_found", "no snapshot of this alarm (none taken, or the alarm is forgotten)").await,
        };
    }
    if let ("GET", ["api", "streams", id, "snapshot"]) = (head.method.as_str(), segments.as_slice()) {
        return match parse_stream_id(id) {
            Some(ssrc) => match shard.snapshot(ssrc).await {
                Ok(jpeg) => super::response::respond(conn, 200, "image/jpeg", &jpeg).await,
                Err(StreamCallError::NoStream) => respond_error(conn, 404, "not_found", "no such stream").await,
                Err(e) => respond_error(conn, 409, "no_snapshot", &e.to_string()).await,
            },
            None => respond_error(conn, 404, "not_found", "no such stream").await,
        };
    }
    let (status, value) = match (head.method.as_str(), segments.as_slice()) {
        ("GET", ["api", "session"]) => super::users_api::whoami(front, &head, caller, role),
        (_, ["api", "session", ..] | ["api", "users", ..]) => super::users_api::serve(front, &head, &segments, caller, &body).await,
        ("GET", ["api", "streams"]) => {
            let page = head.page(super::api_gb::LIST_PAGE_MAX);
            let mut all = shard.list_streams().await;
            all.sort_by_key(|s| s.ssrc);
            let (streams, total) = page.of(all.into_iter());
            (200, json!({ "streams": streams, "total": total, "offset": page.offset }))
        }
        ("POST", ["api", "streams"]) => create_stream(shard, &head, &body).await,
        ("GET", ["api", "streams", id]) => match parse_stream_id(id) {
            Some(ssrc) => match shard.list_streams().await.into_iter().find(|s| s.ssrc == ssrc) {
                Some(info) => {
                    let outputs = outputs(info.video_codec.as_deref(), info.audio_codec.as_deref());
                    let mut v = json!(info);
                    v["outputs"] = outputs;
                    (200, v)
                }
                None => not_found(),
            },
            None => not_found(),
        },
        ("DELETE", ["api", "streams", id]) => match parse_stream_id(id) {
            Some(ssrc) if shard.close_stream(ssrc).await => (200, json!({ "stream_id": stream_id(ssrc), "closed": true })),
            _ => not_found(),
        },
        (method @ ("POST" | "DELETE"), ["api", "streams", id, "record"]) => match parse_stream_id(id) {
            Some(ssrc) => match shard.record(ssrc, method == "POST").await {
                Some(changed) => (200, json!({ "stream_id": stream_id(ssrc), "recording": method == "POST", "changed": changed })),
                None => not_found(),
            },
            None => not_found(),
        },
        ("GET", ["api", "records"]) => (200, list_records(shard, front.control.as_ref(), &head).await),
        ("DELETE", ["api", "records", file]) => {
            let (index, name) = (shard.record_writers.index.clone(), file.to_string());
            match glommio::executor().spawn_blocking(move || crate::shard::record::delete(&index, &name)).await {
                Ok(info) => {
                    tracing::info!(file = info.file, stream_id = info.stream_id, "recording deleted by the API");
                    if let Some(control) = &front.control {
                        control.events.publish("recording_deleted", None, info.channel_id.as_deref(), json!(info));
                    }
                    (200, json!({ "deleted": info }))
                }
                Err(crate::shard::record::DeleteError::NotFound) => not_found(),
                Err(crate::shard::record::DeleteError::BeingWritten) => (409, json!({ "code": "being_written", "message": "the recording is being written; stop it first" })),
                Err(crate::shard::record::DeleteError::Io(why)) => (500, json!({ "code": "io", "message": why })),
            }
        }
        // Retention of the recordings: its rules, its last pass, what it deleted since start.
        ("GET", ["api", "retention"]) => (200, json!(*shard.retention.borrow())),
        ("POST", ["api", "play-tokens"]) => super::play_tokens::issue(shard, &head, &body, conn.peer_ip()),
        ("POST", ["api", "publish-tokens"]) => super::play_tokens::issue_publish(shard, &head, &body, conn.peer_ip()),
        ("GET", ["api", "rtmp"]) => (200, rtmp_summary(shard, &shard.shard_stats().await)),
        ("GET", ["api", "config"]) => (200, redacted_config(&shard.config)),
        ("GET", ["api", "shards"]) => (200, json!({ "rtp_port": shard.config.rtp.port, "shards": shard.shard_stats().await })),
        ("GET", ["api", "webrtc"]) => (200, webrtc_summary(&shard.shard_stats().await)),
        (_, ["api", "nodes", ..]) => nodes_api(front, &head.method, &segments),
        (_, ["api", "proxies" | "onvif", ..]) => match &front.pull {
            Some(pull) => pull.route(&head.method, &segments, &body).await,
            None => (503, json!({ "code": "pull_unavailable", "message": "pull proxies are unavailable (see the log at start)" })),
        },
        ("GET", ["api", "dashboard"]) => (200, super::dashboard::dashboard(front).await),
        ("GET", ["api", "health"]) => {
            let control = front.control.as_ref().map(|c| c.ha_view());
            (200, json!({ "status": "ok", "media_shards": shard.media_shards, "control": control }))
        }
        // How a camera is set up to reach this platform (接入信息), from the running config.
        ("GET", ["api", "sip", "connect-info"]) => (200, connect_info(&shard.config)),
        (_, ["api", "devices" | "sessions" | "downloads" | "channels" | "upstreams" | "broadcasts" | "record-plans" | "device-settings" | "events", ..] | ["api", "sip"]) => match &front.control {
            Some(control) if !control.is_active() && head.method != "GET" => standby(control),
            Some(control) => super::api_gb::route(control, &head, &segments, &body).await,
            None => (503, json!({ "code": "sip_disabled", "message": "SIP is disabled (sip.listen is empty)" })),
        },
        // A record plan for a stream that is no device channel's (a proxy, an RTMP push, ...).
        ("PUT", ["api", "streams", id, "record-plan"]) => match &front.control {
            Some(control) if !control.is_active() => standby(control),
            Some(control) => super::api_gb::assign_stream_record_plan(control, id, &body).await,
            None => (503, json!({ "code": "sip_disabled", "message": "record plans live on the control (SIP is disabled: sip.listen is empty)" })),
        },
        (_, ["api", "streams", ..]) => (405, json!({ "code": "method_not_allowed", "message": "method not allowed" })),
        _ => not_found(),
    };
    respond_json(conn, status, &value).await;
}

/// What a camera needs to register here: the SIP server id and domain, the address and port
/// (UDP and TCP), the password rule (never a password), and the RTP port(s).
fn connect_info(config: &crate::config::Config) -> Value {
    let sip_port = config.sip.listen.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok());
    let single = (config.rtp.port != 0).then_some(config.rtp.port);
    json!({
        "server_id": config.node_id,
        "domain": config.sip.domain,
        "host_ip": config.sip.host_ip,
        "sip_port": sip_port,
        "transports": ["udp", "tcp"],
        "password_rule": "device_or_site",
        "site_password_set": !config.sip.password.is_empty(),
        "rtp": { "single_port": single, "port_min": config.rtp.port_min, "port_max": config.rtp.port_max },
    })
}

/// Role control: `GET /api/nodes` (media nodes, their state and load) and
/// `POST|DELETE /api/nodes/{id}/drain` (a draining node gets no new stream; its streams stay).
fn nodes_api(front: &Front, method: &str, segments: &[&str]) -> (u16, Value) {
    let Some(nodes) = front.control.as_ref().and_then(|c| c.nodes.as_ref()) else {
        return (404, json!({ "code": "not_control", "message": "media nodes are placed on by node.role control only" }));
    };
    if method != "GET"
        && let Some(control) = front.control.as_ref().filter(|c| !c.is_active())
    {
        return standby(control);
    }
    match (method, segments) {
        ("GET", ["api", "nodes"]) => (200, json!({ "nodes": nodes.views(std::time::Instant::now()) })),
        (m @ ("POST" | "DELETE"), ["api", "nodes", id, "drain"]) => match nodes.set_draining(id, m == "POST") {
            true => (200, json!({ "node": id, "draining": m == "POST" })),
            false => (404, json!({ "code": "not_found", "message": "no such media node" })),
        },
        _ => not_found(),
    }
}

/// A PostgreSQL connection string with its password (URL user info, or `password=` in either
/// form) replaced.
fn redact_postgres(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(rest) = ["postgres://", "postgresql://"].iter().find_map(|s| url.strip_prefix(s)) {
        let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
        if let Some(at) = authority.rfind('@')
            && let Some(colon) = authority[..at].find(':')
        {
            let start = url.len() - rest.len();
            out = format!("{}(secret){}", &url[..start + colon + 1], &url[start + at..]);
        }
    }
    let mut redacted = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(i) = rest.find("password=") {
        let value = i + "password=".len();
        let end = rest[value..].find([' ', '&']).map_or(rest.len(), |e| value + e);
        redacted.push_str(&rest[..value]);
        redacted.push_str("(secret)");
        rest = &rest[end..];
    }
    redacted.push_str(rest);
    redacted
}

/// What a standby control answers a request that would change or play something.
pub fn standby(control: &crate::control::Control) -> (u16, Value) {
    let leader = control.ha_view().leader.unwrap_or_else(|| "(none yet)".into());
    (503, json!({ "code": "standby", "message": format!("this control is standby; the active control is {leader}") }))
}

/// Which outputs carry a stream's video and audio (codecs as `StreamInfo` names them), and
/// what a player should know of each: a player picks one from this.
fn outputs(video: Option<&str>, audio: Option<&str>) -> Value {
    let (hevc, g711, aac) = (video == Some("h265"), matches!(audio, Some("pcma" | "pcmu")), audio == Some("aac"));
    let out = |video: bool, audio: bool, notes: Vec<&str>| json!({ "video": video, "audio": audio, "notes": notes });
    let mut webrtc = Vec::new();
    if hevc {
        webrtc.push("H.265 only where the browser offers it over WebRTC (Safari; Chrome with a hardware decoder)");
    }
    if aac {
        webrtc.push("AAC is not sent: WebRTC has no AAC");
    }
    let mut flv = Vec::new();
    if hevc {
        flv.push("H.265 as enhanced-RTMP FLV (hvc1; ?h265=legacy for codec id 12): a player needs HEVC in Media Source Extensions");
    }
    if g711 {
        flv.push("G.711 as FLV sound format 7/8: mpegts.js cannot play it (the console plays such streams over WebRTC)");
    }
    let mut hls = if g711 { vec!["G.711 is left out: MPEG-TS segments carry H.264, H.265 and AAC"] } else { Vec::new() };
    if hevc {
        hls.push("H.265 in TS segments: few players take it; hls_fmp4 is the form browsers with an HEVC decoder play");
    }
    let fmp4 = if g711 { vec!["G.711 is left out: the fragments carry AAC only"] } else { Vec::new() };
    json!({
        "webrtc": out(video.is_some(), g711, webrtc),
        "flv": out(video.is_some(), audio.is_some(), flv),
        "hls": out(video.is_some(), aac, hls),
        "hls_fmp4": out(video.is_some(), aac, fmp4.clone()),
        "fmp4": out(video.is_some(), aac, fmp4),
    })
}

/// WebRTC over the media shards: viewers now, each shard's port, the counters summed.
fn webrtc_summary(shards: &[crate::shard::ShardTotals]) -> Value {
    let mut sum = json!({});
    for s in shards {
        let Value::Object(counters) = json!(s.webrtc) else { continue };
        for (k, v) in counters {
            let total = sum[&k].as_u64().unwrap_or(0) + v.as_u64().unwrap_or(0);
            sum[&k] = total.into();
        }
    }
    sum["sessions"] = shards.iter().map(|s| s.webrtc_sessions).sum::<usize>().into();
    sum["shards"] = shards.iter().map(|s| json!({ "shard": s.shard, "port": s.webrtc_port, "sessions": s.webrtc_sessions })).collect();
    sum
}

/// RTMP ingest: where it listens, the control's counters (connections before they publish)
/// and the media shards' (publishers).
fn rtmp_summary(shard: &Shard, shards: &[crate::shard::ShardTotals]) -> Value {
    let publishing = shards.iter().fold(crate::shard::rtmp::RtmpCounters::default(), |sum, t| sum.plus(&t.rtmp));
    json!({
        "enabled": shard.config.rtmp.enabled,
        "listen": shard.config.rtmp.listen,
        "connecting": *shard.rtmp.borrow(),
        "publishing": publishing,
    })
}

fn not_found() -> (u16, Value) {
    (404, json!({ "code": "not_found", "message": "no such stream or resource" }))
}

/// The request body, from what was read past the head (`conn.pending`) on; what was read past
/// the body (a pipelined request) stays in `conn.pending`.
pub(crate) async fn read_body(conn: &mut HttpConn, head: &RequestHead) -> Option<Vec<u8>> {
    let mut body = std::mem::take(&mut conn.pending);
    let mut chunk = [0u8; 4096];
    while body.len() < head.content_length {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    conn.pending = body.split_off(head.content_length);
    Some(body)
}

/// Recordings listed per file; `stream`, and `from`/`to` in unix seconds, filter them.
/// The sidecars are read on a blocking thread, never on the executor. On a control that
/// places streams on media nodes, the files nodes closed for record plans are listed too
/// (`node`, and a `url` on the node with this control's token for it), as far as this
/// control remembers them (since it started).
use crate::shard::record_index::NodeRecord;

async fn list_records(shard: &Shard, control: Option<&std::rc::Rc<crate::control::Control>>, head: &RequestHead) -> Value {
    let filter = crate::shard::record::RecordFilter {
        stream_id: head.query_param("stream").map(str::to_string),
        channel_id: head.query_param("channel").map(str::to_string),
        from_ms: head.query_param("from").and_then(|v| v.parse::<u64>().ok()).map(|s| s.saturating_mul(1000)),
        to_ms: head.query_param("to").and_then(|v| v.parse::<u64>().ok()).map(|s| s.saturating_mul(1000)),
    };
    let index = shard.record_writers.index.clone();
    // With media nodes, also what they recorded for record plans (the files are theirs).
    let with_nodes = control.is_some_and(|c| c.nodes.is_some());
    let listed = glommio::executor().spawn_blocking(move || {
        let own = crate::shard::record::list(&index, &filter, RECORDS_LIST_MAX).into_iter().map(|(r, p)| (r, p, None));
        let mut listed: Vec<(crate::shard::record::RecordInfo, bool, Option<NodeRecord>)> = own.collect();
        if with_nodes {
            match index.node_records(&filter, RECORDS_LIST_MAX) {
                Ok(on_nodes) => listed.extend(on_nodes.into_iter().map(|f| (f.info(), false, Some(f)))),
                Err(error) => tracing::warn!(%error, "recordings index: media nodes' recordings not listed"),
            }
            listed.sort_by_key(|(r, _, _)| r.start_unix_ms);
            listed.truncate(RECORDS_LIST_MAX);
        }
        listed
    });
    let listed = listed.await;
    let page = head.page(super::api_gb::LIST_PAGE_MAX);
    let (records, total) = page.of(listed.into_iter());
    let records: Vec<Value> = records
        .into_iter()
        .map(|(r, in_progress, on_node)| {
            let mut v = json!(r);
            v["in_progress"] = json!(in_progress);
            if let (Some(f), Some(control)) = (on_node, control) {
                // On the node that wrote it, with a token for that file there (the node's
                // on_http_access brings it back to this control).
                v["url"] = json!(super::api_history::node_file_url(control, &f.node, &f.url));
                v["node"] = json!(f.node);
                v["device_id"] = json!(f.device_id);
                return v;
            }
            let stem = r.file.trim_end_matches(".mp4").to_string();
            let token = super::play_tokens::token_for(shard, &Scope::Record(stem.clone()), None, None).map_or_else(String::new, |(t, _)| t);
            v["url"] = json!(format!("/records/{}?token={token}", r.file));
            v["flv"] = json!(format!("/flv/record/{stem}/{token}"));
            v
        })
        .collect();
    json!({ "records": records, "total": total, "offset": page.offset })
}

/// A non-zero SSRC that is unlikely to collide; collisions are caught by the owner anyway.
fn json_ssrc(v: &Value) -> Option<Option<u32>> {
    match v {
        Value::Null => Some(None),
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()).map(Some),
        Value::String(s) => parse_stream_id(s).map(Some),
        _ => None,
    }
}

/// `source`: where the stream takes media from, an address or range (`"10.0.0.8"`,
/// `"10.0.0.0/24"`) or a list of them; absent: the first sender locks the stream.
fn source_rule(v: Option<&Value>) -> Result<crate::shard::source::SourceRule, String> {
    use crate::shard::source::SourceRule;
    let items: Vec<&Value> = match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list.iter().collect(),
        Some(one) => vec![one],
    };
    let texts: Option<Vec<&str>> = items.iter().map(|i| i.as_str()).collect();
    let texts = texts.ok_or("source must be an address or range (\"10.0.0.8\", \"10.0.0.0/24\") or a list of them")?;
    Ok(SourceRule { nets: SourceRule::parse_nets("source", texts)?, learn_ssrc: false })
}

async fn create_stream(shard: &Shard, head: &RequestHead, body: &[u8]) -> (u16, Value) {
    let bad = |m: &str| (400, json!({ "code": "bad_request", "message": m }));
    let req: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return bad(&format!("body is not JSON: {e}")),
        }
    };
    let Some(ssrc) = json_ssrc(req.get("ssrc").or_else(|| req.get("stream_id")).unwrap_or(&Value::Null)) else {
        return bad("ssrc must be a u32 or a 10-digit stream id");
    };
    let port = match req.get("port") {
        None | Some(Value::Null) => None,
        // Only the configured range: anything else could be a privileged or another service's port.
        Some(v) => {
            match v.as_u64().and_then(|p| u16::try_from(p).ok()).filter(|p| (shard.config.rtp.port_min..=shard.config.rtp.port_max).contains(p)) {
                Some(p) => Some(p),
                None => {
                    return bad(&format!(
                        "port must be within rtp.port_min..=rtp.port_max ({}..={})",
                        shard.config.rtp.port_min, shard.config.rtp.port_max
                    ));
                }
            }
        }
    };
    let sdp = match req.get("sdp") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return bad("sdp must be a string"),
    };
    let source = match source_rule(req.get("source")) {
        Ok(rule) => rule,
        Err(m) => return bad(&m),
    };
    let sdp_ssrc = sdp.as_deref().and_then(|s| crate::proto::sdp::Sdp::parse(s.as_bytes()).ok()).and_then(|s| s.ssrc());
    let fixed = ssrc.or(sdp_ssrc);
    let attempts = if fixed.is_some() { 1 } else { SSRC_PICK_ATTEMPTS };
    let mut result = Err(OpenError::Exists);
    for _ in 0..attempts {
        let spec = StreamSpec {
            ssrc: fixed.unwrap_or_else(crate::shard::service::random_ssrc),
            port,
            sdp: sdp.clone(),
            source: source.clone(),
            ..Default::default()
        };
        result = shard.open_stream(spec).await;
        if result != Err(OpenError::Exists) {
            break;
        }
    }
    match result {
        Ok(info) => (201, with_play_urls(shard, head, info)),
        Err(OpenError::Exists) => (409, json!({ "code": "exists", "message": "a stream with this ssrc is open" })),
        Err(OpenError::BadSdp(m)) => bad(&format!("bad sdp: {m}")),
        Err(OpenError::NoPort(m)) => (503, json!({ "code": "no_port", "message": m })),
    }
}

fn with_play_urls(shard: &Shard, head: &RequestHead, info: StreamInfo) -> Value {
    let play = super::play_tokens::stream_play(shard, head, &info.stream_id);
    let mut v = json!(info);
    v["play"] = play;
    v
}

/// The configuration in force, secrets left out (admin only).
fn redacted_config(config: &crate::config::Config) -> Value {
    let mut c = config.clone();
    c.http.play_secrets = c.http.play_secrets.iter().map(|_| "(secret)".to_string()).collect();
    c.sip.password = "(secret)".into();
    for p in c.sip.device_passwords.values_mut() {
        *p = "(secret)".into();
    }
    for w in &mut c.webhooks {
        w.secret = "(secret)".into();
    }
    for secret in std::iter::once(&mut c.node.secret)
        .chain(std::iter::once(&mut c.node.announce_secret))
        .chain(c.node.media_nodes.iter_mut().map(|n| &mut n.secret))
    {
        if !secret.is_empty() {
            *secret = "(secret)".into();
        }
    }
    c.registry.postgres = redact_postgres(&c.registry.postgres);
    json!(c)
}

#[cfg(test)]
mod tests {
    #[test]
    fn postgres_passwords_are_redacted_in_both_forms() {
        let r = super::redact_postgres;
        assert_eq!(r("postgres://gmv:hunter2@10.0.0.5:5432/gmv"), "postgres://gmv:(secret)@10.0.0.5:5432/gmv");
        assert_eq!(
            r("postgresql://gmv:p%40ss@db/gmv?sslmode=disable&password=x"),
            "postgresql://gmv:(secret)@db/gmv?sslmode=disable&password=(secret)"
        );
        assert_eq!(r("host=db user=gmv password=hunter2 dbname=gmv"), "host=db user=gmv password=(secret) dbname=gmv");
        assert_eq!(r("postgres://gmv@db/gmv"), "postgres://gmv@db/gmv");
        assert_eq!(r(""), "");
    }
}
