//! ZLMediaKit's stream proxies on the node API (`addStreamProxy`, `delStreamProxy`,
//! `listStreamProxy`, `getProxyInfo`), as wvp-GB28181-pro's 拉流代理 drives them: each pulls a
//! URL into stream `{app}/{stream}` on the pull thread (`crate::pull`), is announced with
//! `on_stream_changed` (originType 4, `pull`) while it plays, plays at `/{app}/{stream}.live.flv`
//! and the other node URLs, and asks `on_stream_none_reader` when nobody watches. Kept in memory
//! as ZLMediaKit keeps them (wvp adds them again after a restart).

use super::api::Params;
use super::rtp_servers::VHOST;
use super::zlm::{self, code};
use super::Node;
use crate::pull::{PullState, Pulled, Status, Transport};
use crate::shard::msg::{PublishOrder, StreamInfo};
use crate::shard::unix_s;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Stream proxies at once (each a client connection and a stream), as many as the proxy list.
pub const NODE_PROXIES_MAX: usize = crate::pull::PROXIES_MAX;
/// `addStreamProxy` answers once the source plays or fails, waiting `timeout_sec` for it
/// (this when absent, at most `FIRST_PLAY_WAIT_MAX`).
pub const FIRST_PLAY_WAIT_DEFAULT: Duration = Duration::from_secs(10);
pub const FIRST_PLAY_WAIT_MAX: Duration = Duration::from_secs(60);
const FIRST_PLAY_POLL: Duration = Duration::from_millis(100);
/// The longest `app` or `stream` name taken (a path segment of the play URLs).
pub const NAME_BYTES_MAX: usize = 128;
/// What ZLMediaKit answers an `addStreamProxy` without its four names (`CHECK_ARGS`'s text).
const ADD_ARGS_MISSED: &str = "Required parameter missed: \"vhost\",\"app\",\"stream\",\"url\"";

pub struct NodeProxy {
    pub app: String,
    pub stream: String,
    /// The source as given (shown redacted).
    pub url: url::Url,
    pub pulled: Pulled,
    pub created_unix_s: u64,
    /// When it was added: a stream list taken before then does not have its stream yet.
    pub added_at: Instant,
    /// Announced (`on_stream_changed` regist): it plays now.
    pub published: bool,
    /// `enable_audio=0`, `enable_mp4=1`.
    pub order: PublishOrder,
    /// Failures after which it is dropped (`retry_count`; negative: never).
    pub retry_count: i64,
    /// The client's failures when it last began playing: later ones are re-pulls.
    pub failures_base: u64,
    /// Times it was pulled again after playing (`rePullCount`).
    pub re_pulls: u64,
    /// Published with no viewer since then.
    pub unwatched_since: Option<Instant>,
    /// `on_stream_none_reader` asked and not answered yet.
    pub asking: bool,
}

impl NodeProxy {
    fn state(&self) -> PullState {
        self.pulled.state.lock().map(|s| s.clone()).unwrap_or_else(|e| e.into_inner().clone())
    }
}

/// Why an `app` or `stream` name is not taken (they become URL path segments and file names).
fn bad_name(name: &str) -> bool {
    name.len() > NAME_BYTES_MAX || name == "." || name == ".." || name.contains(|c: char| c == '/' || c == '?' || c == '#' || c == '%' || c.is_whitespace() || c.is_control())
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// `addStreamProxy`: answered after the first play attempt, as ZLMediaKit does.
pub async fn add(node: &Node, p: &Params) -> Value {
    let get = |k: &str| p.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let (Some(vhost), Some(app), Some(stream), Some(url_text)) = (get("vhost"), get("app"), get("stream"), get("url")) else {
        return zlm::error(code::ARGS, ADD_ARGS_MISSED);
    };
    if bad_name(app) || bad_name(stream) || bad_name(vhost) {
        return zlm::error(code::ARGS, &format!("app, stream and vhost are names of at most {NAME_BYTES_MAX} bytes without '/', '?', '#', '%' or spaces"));
    }
    let key = format!("{vhost}/{app}/{stream}");
    let Some(pull) = node.pull.borrow().clone() else { return zlm::error(code::FAILED, "the pull thread is not running") };
    let transport = match get("rtp_type") {
        None | Some("0") => Transport::Tcp,
        Some("1") => Transport::Udp,
        Some("2") => return zlm::error(code::FAILED, "RTSP over multicast (rtp_type 2) is not pulled; 0 (TCP) or 1 (UDP) is"),
        Some(other) => return zlm::error(code::ARGS, &format!("rtp_type {other:?} is 0 (TCP), 1 (UDP) or 2 (multicast)")),
    };
    {
        let proxies = node.proxies.borrow();
        if proxies.contains_key(&key) {
            return zlm::error(code::FAILED, "This stream already exists");
        }
        if proxies.len() >= NODE_PROXIES_MAX {
            return zlm::error(code::FAILED, &format!("at most {NODE_PROXIES_MAX} stream proxies"));
        }
    }
    let url = match crate::pull::check_url(url_text.trim(), transport) {
        Ok(u) => u,
        Err(why) => return zlm::error(code::FAILED, &format!("invalid play url: {why}")),
    };
    let bool_arg = |k: &str| get(k).and_then(|v| zlm::zlm_bool(&Value::String(v.to_string())));
    let order = PublishOrder {
        drop_audio: bool_arg("enable_audio") == Some(false),
        record_file_span: (bool_arg("enable_mp4") == Some(true)).then(|| Duration::from_secs(node.shard.config.record.rotate_s)),
    };
    let wait = get("timeout_sec").and_then(|t| t.parse::<f64>().ok()).filter(|t| t.is_finite() && *t > 0.1).map_or(FIRST_PLAY_WAIT_DEFAULT, |t| Duration::from_secs_f64(t).min(FIRST_PLAY_WAIT_MAX));
    let retry_count = get("retry_count").and_then(|r| r.parse::<i64>().ok()).unwrap_or(-1);
    let force = bool_arg("force") == Some(true);
    let pulled = match pull.pull_for(&format!("{app}/{stream}"), url.clone(), transport).await {
        Ok(p) => p,
        Err(why) => return zlm::error(code::FAILED, &why),
    };
    let proxy = NodeProxy {
        app: app.to_string(),
        stream: stream.to_string(),
        url,
        pulled,
        created_unix_s: unix_s(),
        added_at: Instant::now(),
        published: false,
        order,
        retry_count,
        failures_base: 0,
        re_pulls: 0,
        unwatched_since: None,
        asking: false,
    };
    let taken = {
        let mut proxies = node.proxies.borrow_mut();
        // Another call added the key while this one opened its stream.
        if proxies.contains_key(&key) { Err(proxy) } else { Ok(proxies.insert(key.clone(), proxy)) }
    };
    if let Err(proxy) = taken {
        pull.release(&proxy.pulled).await;
        return zlm::error(code::FAILED, "This stream already exists");
    }
    tracing::info!(key, url = crate::pull::redacted(&node.proxies.borrow()[&key].url), "stream proxy added (node API)");
    match first_play(node, &key, wait).await {
        Ok(()) => {
            publish(node, &key).await;
            json!({ "code": code::OK, "data": { "key": key } })
        }
        Err(why) if force => {
            tracing::info!(key, why, "stream proxy not playing yet; kept (force)");
            json!({ "code": code::OK, "data": { "key": key } })
        }
        Err(why) => {
            remove(node, &key, "first play failed").await;
            zlm::error(code::FAILED, &why)
        }
    }
}

/// Waits for the first play: Ok once it plays, else why not (the client's error, or a timeout
/// in ZLMediaKit's words).
async fn first_play(node: &Node, key: &str, wait: Duration) -> Result<(), String> {
    let deadline = Instant::now() + wait;
    loop {
        let Some((state, scheme)) = node.proxies.borrow().get(key).map(|p| (p.state(), p.url.scheme().to_string())) else {
            return Err("closed by user".into());
        };
        if state.status == Status::Playing {
            return Ok(());
        }
        if state.failures > 0 {
            return Err(first_line(state.last_error.as_deref().unwrap_or("play failed")).to_string());
        }
        if Instant::now() >= deadline {
            return Err(format!("play {scheme} timeout"));
        }
        glommio::timer::sleep(FIRST_PLAY_POLL).await;
    }
}

/// `on_stream_changed` bodies for every schema: regist with the stream's entry, or unregist.
fn announcements(node: &Node, p: &NodeProxy, info: Option<&StreamInfo>, regist: bool) -> Vec<Map<String, Value>> {
    node.schemas()
        .iter()
        .map(|schema| {
            let mut body = match info {
                Some(info) if regist => zlm::stream_entry(&p.app, &p.stream, origin(node, p), info, schema, p.created_unix_s),
                _ => zlm::stream_ref(&p.app, &p.stream, schema),
            };
            body.insert("regist".into(), regist.into());
            body
        })
        .collect()
}

fn origin(node: &Node, p: &NodeProxy) -> zlm::Origin {
    let mut sock = Map::new();
    sock.insert("identifier".into(), format!("{VHOST}/{}/{}", p.app, p.stream).into());
    sock.insert("local_ip".into(), node.listen_ip().to_string().into());
    sock.insert("local_port".into(), 0.into());
    sock.insert("peer_ip".into(), p.url.host_str().unwrap_or("").into());
    sock.insert("peer_port".into(), p.url.port_or_known_default().unwrap_or(0).into());
    zlm::Origin { kind: zlm::ORIGIN_TYPE_PULL, kind_name: zlm::ORIGIN_TYPE_PULL_NAME, url: p.url.to_string(), sock }
}

/// It plays: the publish order applied, announced (once).
async fn publish(node: &Node, key: &str) {
    let Some((ssrc, order)) = node.proxies.borrow().get(key).filter(|p| !p.published).map(|p| (p.pulled.ssrc, p.order)) else { return };
    if order != PublishOrder::default() {
        node.shard.publishing(ssrc, order).await;
    }
    let info = node.shard.stream_info(ssrc).await;
    let bodies = {
        let mut proxies = node.proxies.borrow_mut();
        let Some(p) = proxies.get_mut(key).filter(|p| !p.published) else { return };
        p.published = true;
        p.failures_base = p.state().failures;
        p.unwatched_since = None;
        announcements(node, p, info.as_ref(), true)
    };
    tracing::info!(key, ssrc, "stream proxy playing; announced");
    for body in bodies {
        node.hooks.post("on_stream_changed", body);
    }
}

/// Ends a proxy: its client stops, its stream closes, unregistered if it was announced.
/// False if there was none.
pub async fn remove(node: &Node, key: &str, why: &str) -> bool {
    let Some(p) = node.proxies.borrow_mut().remove(key) else { return false };
    let pull = node.pull.borrow().clone();
    if let Some(pull) = pull {
        pull.release(&p.pulled).await;
    } else {
        node.shard.close_stream(p.pulled.ssrc).await;
    }
    if p.published {
        for body in announcements(node, &p, None, false) {
            node.hooks.post("on_stream_changed", body);
        }
    }
    tracing::info!(key, ssrc = p.pulled.ssrc, reason = why, "stream proxy closed");
    true
}

/// `delStreamProxy`: ZLMediaKit answers code 0 either way, `flag` saying whether it existed.
pub async fn del(node: &Node, key: Option<&str>) -> Value {
    let Some(key) = key else { return zlm::missing(&["key"]) };
    let flag = remove(node, key, "delStreamProxy").await;
    json!({ "code": code::OK, "data": { "flag": flag } })
}

/// The stream a play URL names, if a proxy announced it.
pub fn published(node: &Node, app: &str, stream: &str) -> Option<u32> {
    node.proxies.borrow().values().find(|p| p.published && p.app == app && p.stream == stream).map(|p| p.pulled.ssrc)
}

/// Keys of the proxies of `app`/`stream` (either may be absent: all).
pub fn matching(node: &Node, app: Option<&str>, stream: Option<&str>) -> Vec<String> {
    node.proxies
        .borrow()
        .iter()
        .filter(|(_, p)| p.published && app.is_none_or(|a| a == p.app) && stream.is_none_or(|s| s == p.stream))
        .map(|(k, _)| k.clone())
        .collect()
}

/// `getMediaList` entries of the announced proxies matching.
pub fn media_entries(node: &Node, infos: &HashMap<u32, StreamInfo>, app: Option<&str>, stream: Option<&str>, schema: Option<&str>) -> Vec<Value> {
    let proxies = node.proxies.borrow();
    let mut out = Vec::new();
    for key in matching(node, app, stream) {
        let Some(p) = proxies.get(&key) else { continue };
        let Some(info) = infos.get(&p.pulled.ssrc) else { continue };
        for sc in node.schemas().iter().filter(|sc| schema.is_none_or(|want| want == sc.as_str())) {
            out.push(Value::Object(zlm::stream_entry(&p.app, &p.stream, origin(node, p), info, sc, p.created_unix_s)));
        }
    }
    out
}

/// A proxy as `listStreamProxy` and `getProxyInfo` show it (ZLMediaKit's `ToJson(PlayerProxy)`).
fn entry(p: &NodeProxy, info: Option<&StreamInfo>) -> Map<String, Value> {
    let state = p.state();
    let playing = state.status == Status::Playing;
    let status_str = match (state.status, &state.last_error) {
        (Status::Playing, _) => "playing".to_string(),
        (Status::Retrying | Status::Unauthorized, Some(e)) => format!("play failed: {}", first_line(e)),
        (Status::Starting | Status::Connecting | Status::Retrying, _) => "connecting".to_string(),
        _ => "unknown".to_string(),
    };
    let mut m = Map::new();
    m.insert("url".into(), crate::pull::redacted(&p.url).into());
    m.insert("status".into(), u8::from(!playing).into());
    m.insert("status_str".into(), status_str.into());
    m.insert("liveSecs".into(), info.filter(|_| playing).map_or(0, |i| i.age_ms / 1000).into());
    m.insert("rePullCount".into(), p.re_pulls.into());
    m.insert("totalReaderCount".into(), info.map_or(0, |i| i.subscribers).into());
    m.insert("bytesSpeed".into(), info.map_or(0, |i| i.bitrate_kbps * 1000 / 8).into());
    m.insert("totalBytes".into(), info.map_or(0, |i| i.bytes).into());
    m.insert("src".into(), json!({ "vhost": VHOST, "app": p.app, "stream": p.stream, "params": "" }));
    m.insert("tracks".into(), Value::Array(info.map(zlm::tracks).unwrap_or_default()));
    m
}

/// `listStreamProxy` (`key` filters to that one): no `data` when there is none, as ZLMediaKit.
pub async fn list(node: &Node, key: Option<&str>) -> Value {
    let infos = node.stream_infos().await;
    let proxies = node.proxies.borrow();
    let items: Vec<Value> = proxies
        .iter()
        .filter(|(k, _)| key.is_none_or(|want| want == k.as_str()))
        .map(|(k, p)| {
            let mut m = entry(p, infos.get(&p.pulled.ssrc));
            m.insert("key".into(), k.clone().into());
            Value::Object(m)
        })
        .collect();
    if items.is_empty() { json!({ "code": code::OK }) } else { json!({ "code": code::OK, "data": items }) }
}

/// `getProxyInfo`.
pub async fn info(node: &Node, key: Option<&str>) -> Value {
    let Some(key) = key else { return zlm::missing(&["key"]) };
    let Some(ssrc) = node.proxies.borrow().get(key).map(|p| p.pulled.ssrc) else {
        return zlm::error(code::NOT_FOUND, "can not find the proxy");
    };
    let info = node.shard.stream_info(ssrc).await;
    match node.proxies.borrow().get(key) {
        Some(p) => json!({ "code": code::OK, "data": entry(p, info.as_ref()) }),
        None => zlm::error(code::NOT_FOUND, "can not find the proxy"),
    }
}

/// What the node's tick does with each proxy.
enum Step {
    Publish,
    /// It stopped playing: unregistered until it plays again.
    Lost,
    Remove(&'static str),
    AskNoneReader,
}

/// Every node tick: announce proxies that began playing, unregister those that stopped,
/// drop those whose retries ran out or whose stream closed, ask about unwatched ones.
/// `infos` is the stream list taken at `listed_at`.
pub async fn tick(node: &Rc<Node>, infos: &HashMap<u32, StreamInfo>, listed_at: Instant, readers: impl Fn(&StreamInfo) -> usize) {
    let now = Instant::now();
    let none_reader_delay = node.timings.get().none_reader_delay;
    let steps: Vec<(String, Step)> = {
        let mut proxies = node.proxies.borrow_mut();
        proxies
            .iter_mut()
            .filter_map(|(key, p)| {
                let Some(info) = infos.get(&p.pulled.ssrc) else {
                    return (p.added_at < listed_at).then(|| (key.clone(), Step::Remove("its stream closed")));
                };
                let state = p.state();
                let retries_out = p.retry_count >= 0 && state.failures.saturating_sub(p.failures_base) > p.retry_count as u64;
                let step = match (p.published, state.status == Status::Playing) {
                    (false, true) => Step::Publish,
                    (_, false) if retries_out => Step::Remove("its retries ran out (retry_count)"),
                    (true, false) => Step::Lost,
                    (false, false) => return None,
                    (true, true) if readers(info) > 0 || p.asking => {
                        p.unwatched_since = None;
                        return None;
                    }
                    (true, true) => {
                        let since = *p.unwatched_since.get_or_insert(now);
                        if now.duration_since(since) < none_reader_delay {
                            return None;
                        }
                        p.asking = true;
                        Step::AskNoneReader
                    }
                };
                Some((key.clone(), step))
            })
            .collect()
    };
    for (key, step) in steps {
        match step {
            Step::Publish => publish(node, &key).await,
            Step::Lost => {
                let bodies = {
                    let mut proxies = node.proxies.borrow_mut();
                    let Some(p) = proxies.get_mut(&key) else { continue };
                    p.published = false;
                    p.re_pulls += 1;
                    announcements(node, p, None, false)
                };
                tracing::info!(key, "stream proxy source lost; pulled again");
                for body in bodies {
                    node.hooks.post("on_stream_changed", body);
                }
            }
            Step::Remove(why) => {
                remove(node, &key, why).await;
            }
            Step::AskNoneReader => {
                glommio::spawn_local(ask_none_reader(node.clone(), key)).detach();
            }
        }
    }
}

/// Nobody watched for `none_reader_delay`: `close: true` ends the proxy (wvp may have sent
/// `delStreamProxy` meanwhile, while its hook answer was pending; then there is nothing left).
async fn ask_none_reader(node: Rc<Node>, key: String) {
    let Some((app, stream)) = node.proxies.borrow().get(&key).map(|p| (p.app.clone(), p.stream.clone())) else { return };
    let answer = node.hooks.ask("on_stream_none_reader", zlm::stream_ref(&app, &stream, "rtmp")).await;
    let close = matches!(&answer, Some(Ok(a)) if a.get("close").and_then(Value::as_bool) == Some(true));
    if close {
        remove(&node, &key, "no viewer (on_stream_none_reader)").await;
    } else if let Some(p) = node.proxies.borrow_mut().get_mut(&key) {
        // Asked again after another delay without a viewer.
        p.asking = false;
        p.unwatched_since = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_that_would_break_a_play_url_are_refused() {
        for bad in ["a/b", "..", "a b", "x?y", "x#y", "x%2F", &"x".repeat(super::NAME_BYTES_MAX + 1)] {
            assert!(super::bad_name(bad), "{bad:?}");
        }
        for good in ["live", "cam1", "34020000001320000001_34020000001310000001", "__defaultVhost__", "a.b-c"] {
            assert!(!super::bad_name(good), "{good:?}");
        }
    }
}
