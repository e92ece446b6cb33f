//! The ZLMediaKit node API subset wvp-GB28181-pro drives a media node with: each call by its
//! name and its parameters (form fields or query), answered in ZLMediaKit's JSON shapes and
//! codes (recorded from a real MediaServer: `../shared/corpus/zlm/`). Calls gmv cannot do are
//! answered in the same error shape, saying why.

use super::Node;
use super::rtp_servers::{DIAL_GAP, DIAL_TRIES_MAX, OpenRefused, Publish, RtpServer, TcpMode};
use super::zlm::{self, code};
use crate::shard::msg::{Expectation, OpenError, PlaybackChange, StreamCallError, StreamSpec};
use crate::shard::source::SourceRule;
use crate::shard::unix_s;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub type Params = BTreeMap<String, String>;

/// Tries to find an unused random key for a server that takes any SSRC.
const KEY_PICK_ATTEMPTS: usize = 8;

#[derive(Debug)]
pub enum Reply {
    Json(Value),
    Jpeg(bytes::Bytes),
    /// Not a call of the API: HTTP 404 with an empty body, as ZLMediaKit answers.
    NoSuchCall,
}

/// ZLMediaKit's calls gmv does not make, and why.
const NOT_OFFERED: &[(&str, &str)] = &[
    ("startSendRtpTalk", "gmv does not take a peer's media back on a send (JT/T 1078 talk) yet"),
    ("addFFmpegSource", "gmv does not run ffmpeg sources: addStreamProxy pulls the URL without one"),
    ("delFFmpegSource", "gmv does not run ffmpeg sources"),
    ("restartServer", "gmv applies setServerConfig without a restart"),
    ("getMP4RecordFile", "gmv lists recordings at GET /api/records"),
    ("kick_sessions", "gmv closes viewers with their stream"),
];

/// What ZLMediaKit answers a media query without its four names (no spaces, unlike `missing`'s).
const MEDIA_ARGS_MISSED: &str = "Required parameter missed: \"schema\",\"vhost\",\"app\",\"stream\"";

fn ok() -> Value {
    json!({ "code": code::OK })
}

pub(crate) fn secret_ok(node: &Node, given: Option<&String>) -> bool {
    use subtle::ConstantTimeEq;
    let secret = node.shard.config.node.secret.as_bytes();
    match given {
        Some(g) => !secret.is_empty() && bool::from(g.as_bytes().ct_eq(secret)),
        None => false,
    }
}

/// The `-100` answer, with 32 hex digits of cookie as ZLMediaKit gives one (gmv keeps no
/// login sessions: the value means nothing).
fn login_first() -> Value {
    let random = crate::shard::service::random_ssrc;
    let cookie = format!("{:08x}{:016x}{:08x}", random(), unix_s(), random());
    json!({ "code": code::AUTH, "cookie": cookie, "msg": "Please login first" })
}

pub async fn call(node: &Node, name: &str, p: &Params) -> Reply {
    let known = matches!(
        name,
        "getServerConfig"
            | "setServerConfig"
            | "version"
            | "openRtpServer"
            | "closeRtpServer"
            | "listRtpServer"
            | "getRtpInfo"
            | "updateRtpServerSSRC"
            | "connectRtpServer"
            | "pauseRtpCheck"
            | "resumeRtpCheck"
            | "getMediaList"
            | "isMediaOnline"
            | "getMediaInfo"
            | "getSnap"
            | "startRecord"
            | "stopRecord"
            | "isRecording"
            | "close_streams"
            | "close_stream"
            | "getAllSession"
            | "deleteRecordDirectory"
            | "startSendRtp"
            | "startSendRtpPassive"
            | "stopSendRtp"
            | "loadMP4File"
            | "seekRecordStamp"
            | "setRecordSpeed"
            | "addStreamProxy"
            | "delStreamProxy"
            | "listStreamProxy"
            | "getProxyInfo"
    ) || NOT_OFFERED.iter().any(|(n, _)| *n == name);
    if !known {
        return Reply::NoSuchCall;
    }
    node.counters.borrow_mut().api_calls += 1;
    if !secret_ok(node, p.get("secret")) {
        let mut c = node.counters.borrow_mut();
        c.api_refused += 1;
        // Anyone may send these: logged at 1, 2, 4, ... refusals, all counted.
        if c.api_refused.is_power_of_two() {
            tracing::warn!(call = name, refused = c.api_refused, "node API call refused: wrong or missing secret");
        }
        return Reply::Json(login_first());
    }
    if let Some((_, why)) = NOT_OFFERED.iter().find(|(n, _)| *n == name) {
        return Reply::Json(zlm::error(code::FAILED, why));
    }
    let get = |k: &str| p.get(k).map(String::as_str).filter(|v| !v.is_empty());
    Reply::Json(match name {
        "getServerConfig" => json!({ "code": code::OK, "data": [server_config(node)] }),
        "setServerConfig" => set_server_config(node, p).await,
        "version" => json!({ "code": code::OK, "data": { "branchName": "gmv", "buildTime": "", "commitHash": env!("CARGO_PKG_VERSION") } }),
        "openRtpServer" => open_rtp_server(node, p).await,
        "closeRtpServer" => match get("stream_id") {
            None => zlm::missing(&["stream_id"]),
            Some(id) => {
                let opened_as = server(node, id).map(|s| s.stream_id);
                let hit = match opened_as {
                    Some(id) => node.close_server(&id, "closeRtpServer").await,
                    None => false,
                };
                json!({ "code": code::OK, "hit": u8::from(hit) })
            }
        },
        "listRtpServer" => {
            let list: Vec<Value> = node.servers.borrow().iter().map(zlm::rtp_server_entry).collect();
            if list.is_empty() { ok() } else { json!({ "code": code::OK, "data": list }) }
        }
        "getRtpInfo" => get_rtp_info(node, get("stream_id").unwrap_or("")).await,
        "updateRtpServerSSRC" => update_ssrc(node, get("stream_id").unwrap_or(""), get("ssrc"), get("expect_source")).await,
        "connectRtpServer" => connect(node, get("stream_id").unwrap_or(""), get("dst_url"), get("dst_port")).await,
        "pauseRtpCheck" | "resumeRtpCheck" => pause_check(node, get("stream_id").unwrap_or(""), name == "pauseRtpCheck").await,
        "getMediaList" => {
            let list = media_list(node, get("app"), get("stream"), get("schema")).await;
            if list.is_empty() { ok() } else { json!({ "code": code::OK, "data": list }) }
        }
        "isMediaOnline" => match (get("schema"), get("app"), get("stream")) {
            (Some(schema), Some(app), Some(stream)) => {
                json!({ "code": code::OK, "online": !media_list(node, Some(app), Some(stream), Some(schema)).await.is_empty() })
            }
            _ => zlm::error(code::ARGS, MEDIA_ARGS_MISSED),
        },
        "getMediaInfo" => match (get("schema"), get("vhost"), get("app"), get("stream")) {
            (Some(schema), Some(_), Some(app), Some(stream)) => match media_list(node, Some(app), Some(stream), Some(schema)).await.pop() {
                Some(Value::Object(mut m)) => {
                    m.insert("code".into(), code::OK.into());
                    m.insert("online".into(), true.into());
                    Value::Object(m)
                }
                _ => zlm::error(code::NOT_FOUND, "can not find the stream"),
            },
            _ => zlm::error(code::ARGS, MEDIA_ARGS_MISSED),
        },
        "getSnap" => return snap(node, get("url")).await,
        "startRecord" | "stopRecord" | "isRecording" => record(node, name, get("type"), get("app"), get("stream")).await,
        "close_streams" | "close_stream" => close_streams(node, get("app"), get("stream")).await,
        "startSendRtp" => start_send(node, p, false).await,
        "startSendRtpPassive" => start_send(node, p, true).await,
        "stopSendRtp" => stop_send(node, get("app"), get("stream"), get("ssrc")).await,
        "loadMP4File" => load_mp4(node, get("app"), get("stream"), get("file_path")).await,
        "seekRecordStamp" | "setRecordSpeed" => vod_control(node, name, get("app"), get("stream"), get("stamp"), get("speed")),
        "deleteRecordDirectory" => delete_recording(node, get("app"), get("stream"), get("name")).await,
        // gmv's viewers are per stream (GET /api/streams); no per-session listing.
        "getAllSession" => json!({ "code": code::OK, "data": [] }),
        "addStreamProxy" => super::proxies::add(node, p).await,
        "delStreamProxy" => super::proxies::del(node, get("key")).await,
        "listStreamProxy" => super::proxies::list(node, get("key")).await,
        "getProxyInfo" => super::proxies::info(node, get("key")).await,
        _ => return Reply::NoSuchCall,
    })
}

/// The configuration as ZLMediaKit's flat `section.key` map (strings), for what gmv has.
pub fn server_config(node: &Node) -> Map<String, Value> {
    let c = &node.shard.config;
    let t = node.timings.get();
    let targets = node.hooks.targets.borrow();
    let mut m = Map::new();
    let mut put = |k: &str, v: String| {
        m.insert(k.to_string(), Value::String(v));
    };
    put("api.secret", c.node.secret.clone());
    put("general.mediaServerId", c.media_server_id().to_string());
    put("general.streamNoneReaderDelayMS", t.none_reader_delay.as_millis().to_string());
    put("general.maxStreamWaitMS", t.max_stream_wait.as_millis().to_string());
    put("http.port", c.http.listen.port().to_string());
    put("http.sslport", c.http.tls.as_ref().map_or(0, |t| t.listen.port()).to_string());
    put("hook.enable", u8::from(targets.enabled).to_string());
    put("hook.timeoutSec", targets.timeout.as_secs().to_string());
    put("hook.retry", targets.retry.to_string());
    put("hook.retry_delay", format!("{:.1}", targets.retry_delay.as_secs_f64()));
    put("hook.alive_interval", format!("{:.1}", t.keepalive.as_secs_f64()));
    put("hook.stream_changed_schemas", c.node.stream_changed_schemas.join("/"));
    for name in crate::config::HOOK_NAMES {
        put(&format!("hook.{name}"), targets.urls.get(name).cloned().unwrap_or_default());
    }
    put("rtmp.enhanced", u8::from(node.rtmp_enhanced.get()).to_string());
    put("rtp_proxy.port", c.rtp.port.to_string());
    let (min, max) = node.port_range.get();
    put("rtp_proxy.port_range", format!("{min}-{max}"));
    put("rtp_proxy.timeoutSec", t.rtp_timeout.as_secs().to_string());
    put("protocol.enable_hls", "1".into());
    put("protocol.enable_mp4", u8::from(c.record.all).to_string());
    put("protocol.mp4_save_path", crate::shard::record::records_dir(&c.data_dir).display().to_string());
    put("record.fileSecond", c.record.rotate_s.to_string());
    put("record.appName", "record".into());
    put("protocol.continue_push_ms", "15000".into());
    // Keys wvp sets that gmv keeps and tells back without acting on them (`KEPT_KEYS`).
    for (k, v) in node.kept_config.borrow().iter() {
        put(k, v.clone());
    }
    put("hls.segDur", c.hls.segment_duration_s.to_string());
    put("hls.segNum", c.hls.segments_max.to_string());
    // What gmv does not serve is 0 (no port), as ZLMediaKit says of a disabled server.
    for k in ["rtsp.port", "rtsp.sslport", "rtmp.port", "rtmp.sslport", "rtc.port", "srt.port", "shell.port", "onvif.port"] {
        put(k, "0".into());
    }
    m
}

/// Keys wvp's `setServerConfig` sends that gmv takes and tells back in `getServerConfig`
/// without acting on them: recordings stay in `data_dir/records` (on_record_mp4 names the
/// real path, which is what wvp keeps), and an RTP server's own timeout covers a publisher
/// that went away (`protocol.continue_push_ms`).
const KEPT_KEYS: &[&str] = &["protocol.mp4_save_path", "protocol.downloadRoot", "record.appName", "protocol.continue_push_ms"];
/// Bytes of a kept value.
const KEPT_VALUE_BYTES_MAX: usize = 1024;

/// `rtp_proxy.port_range` as ZLMediaKit writes it (`30000-35000`; wvp turns its `,` into `-`):
/// a range of at least two ports (ZLMediaKit takes even pairs) not holding the single RTP port.
fn port_range(value: &str, single_port: u16) -> Option<(u16, u16)> {
    let (min, max) = value.split_once('-')?;
    let (min, max): (u16, u16) = (min.trim().parse().ok()?, max.trim().parse().ok()?);
    let holds_single = single_port != 0 && (min..=max).contains(&single_port);
    (min > 0 && min < max && !holds_single).then_some((min, max))
}

/// `hook.*`, `general.*`, `rtp_proxy.timeoutSec` and `rtp_proxy.port_range` take effect at
/// once (until the next start); other keys are ignored, as ZLMediaKit ignores unknown ones.
async fn set_server_config(node: &Node, p: &Params) -> Value {
    let mut changed = 0;
    if let Some(value) = p.get("rtp_proxy.port_range") {
        match port_range(value, node.shard.config.rtp.port) {
            Some(range) if range != node.port_range.get() => {
                node.port_range.set(range);
                node.shard.set_port_range(range.0, range.1).await;
                changed += 1;
                tracing::info!(value = %value, "setServerConfig: RTP servers take ports from this range");
            }
            Some(_) => {}
            None => tracing::warn!(value = %value, "setServerConfig: rtp_proxy.port_range ignored: not MIN-MAX of two ports or more, outside rtp.port"),
        }
    }
    let mut t = node.timings.get();
    {
        let mut targets = node.hooks.targets.borrow_mut();
        let secs = |v: &str| v.parse::<f64>().ok().filter(|s| s.is_finite() && *s > 0.0 && *s < 1e6).map(Duration::from_secs_f64);
        let ms = |v: &str| v.parse::<u64>().ok().map(Duration::from_millis);
        for (key, value) in p {
            let applied = match key.as_str() {
                "hook.enable" => Some(std::mem::replace(&mut targets.enabled, value == "1") != (value == "1")),
                "hook.timeoutSec" => secs(value).map(|d| std::mem::replace(&mut targets.timeout, d) != d),
                "hook.retry" => {
                    value.parse::<u32>().ok().filter(|r| *r <= crate::outbound::RETRIES_MAX).map(|r| std::mem::replace(&mut targets.retry, r) != r)
                }
                "hook.retry_delay" => secs(value).map(|d| std::mem::replace(&mut targets.retry_delay, d) != d),
                "hook.alive_interval" => secs(value).map(|d| std::mem::replace(&mut t.keepalive, d) != d),
                "general.streamNoneReaderDelayMS" => ms(value).map(|d| std::mem::replace(&mut t.none_reader_delay, d) != d),
                "general.maxStreamWaitMS" => ms(value).map(|d| std::mem::replace(&mut t.max_stream_wait, d) != d),
                "rtp_proxy.timeoutSec" => secs(value).map(|d| std::mem::replace(&mut t.rtp_timeout, d) != d),
                "rtmp.enhanced" => zlm::zlm_bool(&Value::String(value.clone())).map(|on| node.rtmp_enhanced.replace(on) != on),
                k if KEPT_KEYS.contains(&k) && value.len() <= KEPT_VALUE_BYTES_MAX => {
                    let before = node.kept_config.borrow_mut().insert(k.to_string(), value.clone());
                    Some(before.as_deref() != Some(value.as_str()))
                }
                k => match k.strip_prefix("hook.").filter(|n| crate::config::HOOK_NAMES.contains(n)) {
                    Some(hook) if value.is_empty() || crate::outbound::parse_url(value).is_some() => {
                        let before = targets.urls.insert(hook.to_string(), value.clone());
                        Some(before.as_deref().unwrap_or("") != value)
                    }
                    _ => None,
                },
            };
            if applied == Some(true) {
                changed += 1;
                tracing::info!(key = %key, value = %value, "setServerConfig");
            }
        }
    }
    node.timings.set(t);
    json!({ "changed": changed, "code": code::OK })
}

async fn open_rtp_server(node: &Node, p: &Params) -> Value {
    let (Some(port), Some(stream_id)) = (p.get("port"), p.get("stream_id").filter(|s| !s.is_empty())) else {
        return zlm::missing(&["port", "stream_id"]);
    };
    let Ok(port) = port.parse::<u16>() else { return zlm::error(code::ARGS, "port must be 0..65535") };
    let (min, max) = node.port_range.get();
    if port != 0 && !(min..=max).contains(&port) {
        // ZLMediaKit binds any port asked; a node's firewall is opened for its range only.
        return zlm::error(code::ARGS, &format!("port {port} is outside this node's RTP port range {min}-{max} (rtp_proxy.port_range)"));
    }
    let app = p.get("app").filter(|a| !a.is_empty()).cloned().unwrap_or_else(|| "rtp".to_string());
    let Some(tcp_mode) = TcpMode::parse(p.get("tcp_mode").map_or("0", String::as_str)) else {
        return zlm::error(code::ARGS, "tcp_mode must be 0 (UDP), 1 (TCP passive) or 2 (TCP active)");
    };
    let ssrc = match p.get("ssrc").map(String::as_str).filter(|s| !s.is_empty()) {
        None => 0,
        Some(s) => match s.parse::<u32>() {
            Ok(v) => v,
            Err(_) => return zlm::error(code::ARGS, "ssrc must be a 32-bit number"),
        },
    };
    // gmv's parameters (ZLMediaKit ignores them): the device's addresses, its SSRC learned.
    let source = match expect_source(p.get("expect_source").map(String::as_str), p.get("learn_ssrc").is_some_and(|v| v == "1")) {
        Ok(rule) => rule,
        Err(why) => return zlm::error(code::ARGS, &why),
    };
    match node.servers.borrow().may_open(stream_id, &app) {
        Ok(()) => {}
        Err(OpenRefused::Exists) => return zlm::error(code::ARGS, "This stream already exists"),
        Err(OpenRefused::BadName) => return zlm::error(code::ARGS, "stream_id and app must be 1..128 printable characters without '/'"),
        Err(OpenRefused::Full) => {
            return zlm::error(code::FAILED, &format!("this node holds {} RTP servers, its most", super::rtp_servers::RTP_SERVERS_MAX));
        }
    }
    // ZLMediaKit's tracks: 0 all, 1 audio only (not offered: gmv keeps the video), 2 video only.
    let only_track: u8 = p.get("only_track").and_then(|v| v.parse().ok()).filter(|t| *t <= 2).unwrap_or(0);
    let attempts = if ssrc != 0 { 1 } else { KEY_PICK_ATTEMPTS };
    let mut opened = Err(OpenError::Exists);
    let mut key = ssrc;
    for _ in 0..attempts {
        key = if ssrc != 0 { ssrc } else { crate::shard::service::random_ssrc() };
        let spec = StreamSpec {
            ssrc: key,
            port: (port != 0).then_some(port),
            any_ssrc: ssrc == 0,
            source: source.clone(),
            drop_audio: only_track == 2,
            ..Default::default()
        };
        opened = node.shard.open_stream(spec).await;
        if opened != Err(OpenError::Exists) {
            break;
        }
    }
    let info = match opened {
        Ok(info) => info,
        Err(OpenError::Exists) => return zlm::error(code::ARGS, &format!("ssrc {ssrc} is taken by another stream of this node")),
        Err(OpenError::NoPort(why)) => {
            let ip = node.listen_ip();
            return zlm::error(code::BIND, &format!("创建rtp端口 {ip}:{port} 失败:{why}"));
        }
        Err(OpenError::BadSdp(why)) => return zlm::error(code::ARGS, &why),
    };
    // Opened while the stream was: another call may have taken the name meanwhile.
    if node.servers.borrow().may_open(stream_id, &app).is_err() {
        node.shard.close_stream(key).await;
        return zlm::error(code::ARGS, "This stream already exists");
    }
    let server = RtpServer {
        stream_id: stream_id.clone(),
        name: stream_id.clone(),
        app,
        key,
        port: info.port,
        tcp_mode,
        ssrc,
        opened_ssrc: ssrc,
        only_track,
        re_use_port: p.get("re_use_port").is_some_and(|v| v == "1"),
        learn_ssrc: source.learn_ssrc,
        opened: Instant::now(),
        publish: Publish::Waiting,
        check_paused: false,
        unwatched_since: None,
        none_reader_asking: false,
        dial: None,
    };
    node.servers.borrow_mut().insert(server);
    // gmv's own parameter (ZLMediaKit has none and ignores it; its on_publish enable_mp4
    // records from the start there): MP4 from the first keyframe, as a download needs, where
    // on_publish comes only once a keyframe told the tracks.
    if p.get("enable_mp4").is_some_and(|v| v == "1") {
        node.shard.record(key, true).await;
    }
    tracing::info!(stream_id = %stream_id, ssrc = key, port = info.port, ?tcp_mode, "RTP server opened");
    json!({ "code": code::OK, "port": info.port })
}

/// The RTP server a call names: by the name it was opened under or the one it was published
/// under (wvp names a replaced stream by its new name in `connectRtpServer`,
/// `updateRtpServerSSRC`, `closeRtpServer` and `pauseRtpCheck`).
fn server(node: &Node, stream_id: &str) -> Option<RtpServer> {
    node.servers.borrow().resolve(stream_id).cloned()
}

async fn get_rtp_info(node: &Node, stream_id: &str) -> Value {
    let not_yet = json!({ "code": code::OK, "exist": false });
    let Some(s) = server(node, stream_id) else { return not_yet };
    match node.shard.stream_info(s.key).await {
        Some(info) if info.packets > 0 && info.peer.is_some() => {
            let mut m = zlm::origin_sock(&s, &info, node.listen_ip());
            m.insert("code".into(), code::OK.into());
            m.insert("exist".into(), true.into());
            Value::Object(m)
        }
        _ => not_yet,
    }
}

/// `expect_source`: comma-separated addresses or ranges media is taken from (absent: anyone).
fn expect_source(list: Option<&str>, learn_ssrc: bool) -> Result<SourceRule, String> {
    let items = list.unwrap_or("").split(',').map(str::trim).filter(|i| !i.is_empty());
    Ok(SourceRule { nets: SourceRule::parse_nets("expect_source", items)?, learn_ssrc })
}

async fn update_ssrc(node: &Node, stream_id: &str, ssrc: Option<&str>, source: Option<&str>) -> Value {
    let Some(ssrc) = ssrc else { return zlm::missing(&["ssrc", "stream_id"]) };
    let Ok(ssrc) = ssrc.parse::<u32>() else { return zlm::error(code::ARGS, "ssrc must be a 32-bit number") };
    let Some(s) = server(node, stream_id) else { return zlm::error(code::NOT_FOUND, "RtpServer not found by stream_id") };
    // A rule given here keeps the learning the stream was opened with.
    let rule = match source.map(|list| expect_source(Some(list), s.learn_ssrc)) {
        Some(Err(why)) => return zlm::error(code::ARGS, &why),
        Some(Ok(rule)) => Some(rule),
        None => None,
    };
    let expect = Expectation { device_ssrc: Some(ssrc).filter(|d| *d != s.key), rule };
    if !node.shard.expect(s.key, expect).await {
        return zlm::error(code::NOT_FOUND, "RtpServer not found by stream_id");
    }
    if let Some(s) = node.servers.borrow_mut().get_mut(&s.stream_id) {
        s.ssrc = ssrc;
    }
    ok()
}

async fn connect(node: &Node, stream_id: &str, url: Option<&str>, port: Option<&str>) -> Value {
    let (Some(url), Some(port)) = (url, port) else { return zlm::missing(&["dst_url", "dst_port", "stream_id"]) };
    let Some(s) = server(node, stream_id) else { return zlm::error(code::FAILED, "can not find the stream") };
    let Ok(port) = port.parse::<u16>() else { return zlm::error(code::ARGS, "dst_port must be a port") };
    let Some(addr) = resolve_host(url, port).await else { return zlm::error(code::FAILED, &format!("cannot resolve {url}")) };
    // GB/T 28181-2022 Annex D: a device's media port may not listen yet; tried again a gap
    // later (ZLMediaKit tries once).
    let mut result = Err(crate::shard::msg::StreamCallError::NoAnswer);
    for attempt in 1..=DIAL_TRIES_MAX {
        result = node.shard.connect_tcp(s.key, addr).await;
        match &result {
            Ok(()) => break,
            Err(StreamCallError::Connect(why)) if attempt < DIAL_TRIES_MAX => {
                node.counters.borrow_mut().redials_failed += 1;
                tracing::info!(stream_id = %s.stream_id, ssrc = s.key, %addr, attempt, %why, "TCP active: the device's media port refused; trying again");
                glommio::timer::sleep(DIAL_GAP).await;
            }
            Err(_) => break,
        }
    }
    match result {
        Ok(()) => {
            node.servers.borrow_mut().dialled(&s.stream_id, addr, true, Instant::now());
            ok()
        }
        Err(why) => zlm::error(code::FAILED, &format!("connect {addr}: {why}")),
    }
}

async fn pause_check(node: &Node, stream_id: &str, pause: bool) -> Value {
    let Some(s) = server(node, stream_id) else { return json!({ "code": code::NOT_FOUND }) };
    // As ZLMediaKit: only once data came (before that there is no session to pause).
    let has_data = node.shard.stream_info(s.key).await.is_some_and(|i| i.packets > 0);
    if !has_data || !node.shard.playback_change(s.key, PlaybackChange::Paused(pause)).await {
        return json!({ "code": code::NOT_FOUND });
    }
    if let Some(s) = node.servers.borrow_mut().get_mut(&s.stream_id) {
        s.check_paused = pause;
    }
    ok()
}

/// Published node streams matching the filters, one entry per schema.
async fn media_list(node: &Node, app: Option<&str>, stream: Option<&str>, schema: Option<&str>) -> Vec<Value> {
    let servers: Vec<RtpServer> = node
        .servers
        .borrow()
        .iter()
        .filter(|s| s.published() && app.is_none_or(|a| a == s.app) && stream.is_none_or(|name| name == s.name))
        .cloned()
        .collect();
    if servers.is_empty() && super::proxies::matching(node, app, stream).is_empty() {
        return Vec::new();
    }
    let infos = node.stream_infos().await;
    let mut out = super::proxies::media_entries(node, &infos, app, stream, schema);
    for s in &servers {
        let Some(info) = infos.get(&s.key) else { continue };
        let created = match s.publish {
            Publish::Published { unix_s } => unix_s,
            _ => 0,
        };
        for sc in node.schemas().iter().filter(|sc| schema.is_none_or(|want| want == sc.as_str())) {
            out.push(Value::Object(zlm::media_entry(s, info, sc, created, node.listen_ip())));
        }
    }
    out
}

/// A stream announced under a name: its SSRC and the name.
struct Announced {
    key: u32,
    app: String,
    name: String,
}

/// The stream announced as `app` and `stream`: a published server's or a proxy's.
fn published(node: &Node, app: Option<&str>, stream: Option<&str>) -> Option<Announced> {
    let server = node.servers.borrow().named(stream?).filter(|s| s.published() && app.is_none_or(|a| a == s.app)).map(|s| Announced { key: s.key, app: s.app.clone(), name: s.name.clone() });
    server.or_else(|| {
        let (app, name) = (app?, stream?);
        super::proxies::published(node, app, name).map(|key| Announced { key, app: app.to_string(), name: name.to_string() })
    })
}

async fn snap(node: &Node, url: Option<&str>) -> Reply {
    let Some(url) = url else { return Reply::Json(zlm::missing(&["url", "timeout_sec", "expire_sec"])) };
    // rtsp://host/app/stream or http://host/app/stream.live.mp4: what names the stream.
    let path = url.split('?').next().unwrap_or(url);
    let mut parts = path.rsplit('/');
    let stream = parts.next().map(|s| s.split('.').next().unwrap_or(s));
    let app = parts.next();
    let Some(s) = published(node, app, stream) else { return Reply::Json(zlm::error(code::NOT_FOUND, "can not find the stream")) };
    match node.shard.snapshot(s.key).await {
        Ok(jpeg) => Reply::Jpeg(jpeg),
        Err(why) => Reply::Json(zlm::error(code::FAILED, &format!("no snapshot yet: {why}"))),
    }
}

async fn record(node: &Node, call: &str, kind: Option<&str>, app: Option<&str>, stream: Option<&str>) -> Value {
    let (Some(kind), Some(_), Some(_)) = (kind, app, stream) else { return zlm::missing(&["type", "vhost", "app", "stream"]) };
    if kind != "1" {
        return zlm::error(code::ARGS, "gmv records MP4 only (type=1); HLS is made on demand");
    }
    let Some(s) = published(node, app, stream) else { return zlm::error(code::NOT_FOUND, "can not find the stream") };
    if call == "isRecording" {
        let on = node.shard.stream_info(s.key).await.is_some_and(|i| i.record_on);
        return json!({ "code": code::OK, "status": on });
    }
    match node.shard.record(s.key, call == "startRecord").await {
        Some(_) => json!({ "code": code::OK, "msg": "success", "result": true }),
        None => zlm::error(code::NOT_FOUND, "can not find the stream"),
    }
}

/// Resolves `host:port` on a blocking thread (a name may need DNS).
async fn resolve_host(host: &str, port: u16) -> Option<std::net::SocketAddr> {
    let target = format!("{host}:{port}");
    glommio::executor().spawn_blocking(move || std::net::ToSocketAddrs::to_socket_addrs(&target).ok().and_then(|mut a| a.next())).await
}

/// `startSendRtp` (to `dst_url:dst_port`, UDP or dialled TCP) and `startSendRtpPassive` (to
/// whoever connects or sends first), with the parameters wvp sends (cascade: PS, pt 96;
/// broadcast: raw G.711, pt 8, `only_audio`); answered `local_port` as ZLMediaKit does.
async fn start_send(node: &Node, p: &Params, passive: bool) -> Value {
    use crate::shard::rtp_send::{SEND_WAIT_DEFAULT, SendError, SendSpec, SendTransport, SenderKey};
    let get = |k: &str| p.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let flag = |k: &str, default: bool| get(k).and_then(|v| zlm::zlm_bool(&Value::String(v.to_string()))).unwrap_or(default);
    let required: &[&str] = if passive { &["vhost", "app", "stream", "ssrc"] } else { &["vhost", "app", "stream", "ssrc", "dst_url", "dst_port", "is_udp"] };
    if required.iter().any(|k| get(k).is_none()) {
        return zlm::missing(required);
    }
    let Some(ssrc) = get("ssrc").and_then(|s| s.parse::<u32>().ok()) else { return zlm::error(code::ARGS, "ssrc must be a 32-bit number") };
    let Some(payload_type) = get("pt").map_or(Some(96), |v| v.parse::<u8>().ok().filter(|pt| *pt <= 127)) else {
        return zlm::error(code::ARGS, "pt must be 0..127");
    };
    // `type`: 0 raw ES, 1 PS (the default), 2 TS; the older `use_ps` wins when given.
    let ps = match (get("use_ps"), get("type")) {
        (Some(_), _) => flag("use_ps", true),
        (None, None | Some("1")) => true,
        (None, Some("0")) => false,
        (None, Some(_)) => return zlm::error(code::ARGS, "type must be 0 (ES) or 1 (PS); gmv does not send TS"),
    };
    if get("recv_stream_id").is_some() {
        return zlm::error(code::FAILED, "gmv does not take a peer's media back on a send (recv_stream_id, talk) yet");
    }
    let src_port = match get("src_port").map(str::parse::<u16>) {
        None | Some(Ok(0)) => None,
        Some(Ok(port)) => Some(port),
        Some(Err(_)) => return zlm::error(code::ARGS, "src_port must be a port"),
    };
    let is_udp = flag("is_udp", false);
    let transport = match (passive, is_udp) {
        (true, true) => SendTransport::UdpPassive,
        (true, false) => SendTransport::TcpPassive,
        (false, _) => {
            let (Some(host), Some(Ok(port))) = (get("dst_url"), get("dst_port").map(str::parse::<u16>)) else {
                return zlm::error(code::ARGS, "dst_port must be a port");
            };
            let Some(to) = resolve_host(host, port).await else { return zlm::error(code::FAILED, &format!("cannot resolve {host}")) };
            if is_udp { SendTransport::Udp(to) } else { SendTransport::Tcp(to) }
        }
    };
    let wait = get("close_delay_ms").and_then(|v| v.parse::<u64>().ok()).filter(|ms| *ms > 0).map_or(SEND_WAIT_DEFAULT, Duration::from_millis);
    let Some(source) = published(node, get("app"), get("stream")) else { return zlm::error(code::NOT_FOUND, "can not find the source stream") };
    if !node.sends.borrow().contains_key(&(source.key, ssrc)) && node.sends.borrow().len() >= super::SENDS_TRACKED_MAX {
        return zlm::error(code::FAILED, &format!("this node sends {} streams on, its most", super::SENDS_TRACKED_MAX));
    }
    let mux = crate::proto::rtp_mux::RtpMuxSettings { ssrc, payload_type, ps, only_audio: flag("only_audio", false) };
    let spec = SendSpec { key: SenderKey::Ssrc(ssrc), mux, transport, src_port, wait, rtcp: is_udp && flag("udp_rtcp_timeout", false) };
    match node.shard.start_send(source.key, spec).await {
        Ok(started) => {
            node.sends.borrow_mut().insert((source.key, ssrc), (source.app.clone(), source.name.clone()));
            json!({ "code": code::OK, "local_port": started.local_port })
        }
        Err(SendError::NoStream) => zlm::error(code::NOT_FOUND, "can not find the source stream"),
        Err(e @ SendError::Bind(_)) => zlm::error(code::BIND, &e.to_string()),
        Err(e) => json!({ "code": code::FAILED, "msg": e.to_string(), "local_port": 0 }),
    }
}

/// `stopSendRtp`: the stream's senders with `ssrc` (absent: all of them).
async fn stop_send(node: &Node, app: Option<&str>, stream: Option<&str>, ssrc: Option<&str>) -> Value {
    let (Some(_), Some(_)) = (app, stream) else { return zlm::missing(&["vhost", "app", "stream"]) };
    let send_ssrc = match ssrc.map(str::parse::<u32>) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(_)) => return zlm::error(code::ARGS, "ssrc must be a 32-bit number"),
    };
    let Some(source) = published(node, app, stream) else { return zlm::error(code::NOT_FOUND, "can not find the stream") };
    match node.shard.stop_send(source.key, send_ssrc.map(crate::shard::rtp_send::SenderKey::Ssrc)).await {
        Some(n) if n > 0 => ok(),
        Some(_) => zlm::error(code::FAILED, "stopSendRtp failed"),
        None => zlm::error(code::NOT_FOUND, "can not find the stream"),
    }
}

/// `loadMP4File` (wvp's cloud-record playback): one recording of this node, by the path
/// `on_record_mp4` gave, published as `app`/`stream` (wvp: `mp4_record`, a name of its own) and
/// played to its viewers as HTTP-FLV. A folder (wvp's whole-day playback) is refused: gmv keeps
/// recordings in one folder, not by day.
async fn load_mp4(node: &Node, app: Option<&str>, stream: Option<&str>, file_path: Option<&str>) -> Value {
    use super::download_file::{FileRefused, resolve};
    use super::vod::{PlaybackControl, VODS_MAX, Vod};
    let (Some(app), Some(stream), Some(file_path)) = (app, stream, file_path) else { return zlm::missing(&["vhost", "app", "stream", "file_path"]) };
    let key = (app.to_string(), stream.to_string());
    if node.servers.borrow().named(stream).is_some() || node.vods.borrow().contains_key(&key) {
        return zlm::error(code::ARGS, "This stream already exists");
    }
    if node.vods.borrow().len() >= VODS_MAX {
        return zlm::error(code::FAILED, &format!("this node plays {VODS_MAX} recordings, its most"));
    }
    let records = crate::shard::record::records_dir(&node.shard.config.data_dir);
    let asked = file_path.to_string();
    let found = glommio::executor()
        .spawn_blocking(move || {
            let folders: Vec<std::path::PathBuf> = records.canonicalize().into_iter().collect();
            let (folder, name) = resolve(&asked, &folders)?;
            let sidecar = std::fs::read(folder.join(name.replace(".mp4", ".json"))).ok();
            let duration_ms = sidecar.and_then(|b| serde_json::from_slice::<crate::shard::record::RecordInfo>(&b).ok()).map_or(0, |i| i.duration_ms);
            Ok::<_, FileRefused>((name, duration_ms))
        })
        .await;
    let (name, duration_ms) = match found {
        Ok(found) => found,
        Err(FileRefused::NoSuchFile) => return zlm::error(code::BIND, &format!("cannot open {file_path}: no such recording")),
        Err(FileRefused::OutsideFolders) => {
            return zlm::error(code::BIND, "file_path names no recording of this node (gmv plays one recording file of its records folder per loadMP4File)");
        }
    };
    let vod = Vod {
        app: app.to_string(),
        stream: stream.to_string(),
        stem: name.trim_end_matches(".mp4").to_string(),
        file_path: file_path.to_string(),
        duration_ms,
        created: Instant::now(),
        created_unix_s: crate::shard::unix_s(),
        control: std::rc::Rc::new(PlaybackControl::default()),
    };
    node.vod_changed(&vod, true);
    tracing::info!(app, stream, file = %name, duration_ms, "recording published for playback (loadMP4File)");
    node.vods.borrow_mut().insert(key, vod);
    json!({ "code": code::OK, "data": { "duration_ms": duration_ms } })
}

/// `seekRecordStamp` (`stamp`, ms) and `setRecordSpeed` (`speed`) of a `loadMP4File`
/// playback, answered as ZLMediaKit does.
fn vod_control(node: &Node, call: &str, app: Option<&str>, stream: Option<&str>, stamp: Option<&str>, speed: Option<&str>) -> Value {
    let (Some(app), Some(stream)) = (app, stream) else { return zlm::missing(&["vhost", "app", "stream"]) };
    let Some(control) = node.vods.borrow().get(&(app.to_string(), stream.to_string())).map(|v| v.control.clone()) else {
        return zlm::error(code::NOT_FOUND, "can not find the stream");
    };
    let done = match call {
        "seekRecordStamp" => stamp.and_then(super::vod::parse_stamp).map(|ms| control.seek(ms)),
        _ => speed.and_then(super::vod::parse_speed).map(|x100| control.speed_x100.set(x100)),
    };
    match done {
        Some(()) => json!({ "code": code::OK, "result": 0, "msg": "success" }),
        None if call == "seekRecordStamp" => zlm::missing(&["stamp"]),
        None => zlm::error(code::ARGS, &format!("speed must be {}..{}", super::vod::SPEED_MIN, super::vod::SPEED_MAX)),
    }
}

/// wvp's retention (`CloudRecordTimer`, daily) and its delete button: one recording by the
/// `file_name` `on_record_mp4` gave, with its sidecar. gmv's recordings lie in one folder, so
/// `period` (the file's folder name to wvp) says nothing; a call without `name` (a whole day
/// of a stream in ZLMediaKit) is refused, as gmv does not file recordings by day.
async fn delete_recording(node: &Node, app: Option<&str>, stream: Option<&str>, name: Option<&str>) -> Value {
    let (Some(_), Some(_)) = (app, stream) else { return zlm::missing(&["vhost", "app", "stream"]) };
    let Some(name) = name else {
        return zlm::error(code::FAILED, "gmv deletes recordings one file at a time: name it (on_record_mp4's file_name)");
    };
    if !crate::shard::record::valid_file_name(name) {
        return zlm::error(code::ARGS, "name is not a recording file name of this node");
    }
    let dir = crate::shard::record::records_dir(&node.shard.config.data_dir);
    let (mp4, sidecar) = (dir.join(name), dir.join(name.replace(".mp4", ".json")));
    let path = mp4.display().to_string();
    let removed = glommio::executor()
        .spawn_blocking(move || {
            let removed = std::fs::remove_file(&mp4).is_ok();
            let _ = std::fs::remove_file(&sidecar);
            removed
        })
        .await;
    if removed {
        node.counters.borrow_mut().records_deleted += 1;
        tracing::info!(file = name, "recording deleted (deleteRecordDirectory)");
    }
    json!({ "code": if removed { code::OK } else { code::FAILED }, "path": path })
}

async fn close_streams(node: &Node, app: Option<&str>, stream: Option<&str>) -> Value {
    let ids: Vec<String> = node
        .servers
        .borrow()
        .iter()
        .filter(|s| s.published() && app.is_none_or(|a| a == s.app) && stream.is_none_or(|name| name == s.name))
        .map(|s| s.stream_id.clone())
        .collect();
    let mut closed = 0;
    for id in &ids {
        closed += usize::from(node.close_server(id, "close_streams").await);
    }
    // A proxy's stream closed ends the proxy, as ZLMediaKit's `PlayerProxy::close` does.
    let keys = super::proxies::matching(node, app, stream);
    for key in &keys {
        closed += usize::from(super::proxies::remove(node, key, "close_streams").await);
    }
    json!({ "code": code::OK, "count_closed": closed, "count_hit": ids.len() + keys.len() })
}

#[cfg(test)]
mod tests {
    #[test]
    fn port_ranges_as_zlmediakit_writes_them() {
        assert_eq!(super::port_range("30000-30500", 0), Some((30000, 30500)));
        assert_eq!(super::port_range(" 30000 - 30500 ", 10000), Some((30000, 30500)));
        for bad in ["30500-30000", "0-10", "30000", "30000-30000", "a-b", "30000-70000", ""] {
            assert_eq!(super::port_range(bad, 0), None, "{bad:?}");
        }
        assert_eq!(super::port_range("30000-30500", 30100), None, "holds the single RTP port");
    }

    #[test]
    fn missing_names_every_parameter_as_zlmediakit_does() {
        assert_eq!(super::zlm::missing(&["port", "stream_id"])["msg"], "Required parameter missed: \"port\", \"stream_id\"");
    }
}
