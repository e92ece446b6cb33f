//! Media nodes a control plane places streams on, driven over ZLMediaKit's node API (gmv
//! `--role media` nodes and ZLMediaKit alike): their load and health from their keepalive
//! hooks, placement on the least-loaded healthy node, and the calls a session needs (open,
//! close, the device's SSRC, TCP active connect, viewers).

use crate::config::MediaNodeConfig;
use serde::Serialize;
use serde_json::{Value, json};
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Media nodes a control knows at once (listed and announced).
pub const MEDIA_NODES_MAX: usize = 256;
/// One node API call, connect to answer.
pub const NODE_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Streams placed on a node since its last keepalive count toward its load at this weight (a
/// keepalive is seconds old; a burst of plays must not all land on one node).
const PLACED_SINCE_KEEPALIVE_WEIGHT: u64 = 1;
/// A node whose last keepalive said its CPU (per core) is at least this busy gets new streams
/// only when every node is.
pub const NODE_CPU_BUSY_PERCENT: f64 = 85.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// No keepalive yet.
    Unknown,
    Up,
    /// Its keepalives stopped.
    Down,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeLoad {
    pub streams: u64,
    pub viewers: u64,
    pub ingest_kbps: u64,
    pub cpu_percent: f64,
    /// Its cores (0: it did not say, as a ZLMediaKit node does not).
    pub cores: u64,
    /// Its resident memory (0: it did not say).
    pub rss_bytes: u64,
}

impl NodeLoad {
    /// Its CPU past `NODE_CPU_BUSY_PERCENT` of its cores.
    pub fn cpu_busy(&self) -> bool {
        self.cpu_percent / self.cores.max(1) as f64 >= NODE_CPU_BUSY_PERCENT
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    pub id: String,
    pub api: String,
    pub media_ip: String,
    pub state: NodeState,
    pub draining: bool,
    pub load: NodeLoad,
    /// Streams this control placed there that are open.
    pub placed: usize,
    pub last_keepalive_s_ago: Option<u64>,
}

struct Node {
    config: MediaNodeConfig,
    /// Announced itself (`node.announce_secret`) rather than listed in the config.
    announced: bool,
    /// The address its hooks must come from (its API host).
    host: String,
    state: NodeState,
    draining: bool,
    load: NodeLoad,
    last_keepalive: Option<Instant>,
    placed_since_keepalive: u64,
}

impl Node {
    fn listed(c: &MediaNodeConfig) -> Node {
        Node {
            host: crate::outbound::parse_url(&c.api).map(|(h, _, _)| h).unwrap_or_default(),
            config: c.clone(),
            announced: false,
            state: NodeState::Unknown,
            draining: false,
            load: NodeLoad::default(),
            last_keepalive: None,
            placed_since_keepalive: 0,
        }
    }
}

/// Where a stream of this control lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub node: String,
    /// `http://host:port` of the node (API and play).
    pub api: String,
    pub media_ip: String,
}

pub struct MediaNodes {
    nodes: RefCell<Vec<Node>>,
    /// Stream SSRC to the node it lives on.
    placed: RefCell<HashMap<u32, String>>,
    /// Streams being opened (`openRtpServer` asked, not answered yet): a node may list them
    /// before they are placed, and they are no orphans.
    opening: RefCell<std::collections::HashSet<u32>>,
    down_after: Duration,
}

impl MediaNodes {
    pub fn new(configs: &[MediaNodeConfig], down_after: Duration) -> MediaNodes {
        let nodes = configs.iter().map(Node::listed).collect();
        MediaNodes { nodes: RefCell::new(nodes), placed: RefCell::new(HashMap::new()), opening: Default::default(), down_after }
    }

    /// A node announcing itself (`on_server_started` from `from`, whose body is its config):
    /// added when its `api.secret` is the control's `announce_secret`; an announced node that
    /// moved gets its new address. False when not taken.
    pub fn announce(&self, id: &str, from: std::net::IpAddr, config: &Value, announce_secret: &str) -> bool {
        use subtle::ConstantTimeEq;
        let secret = config["api.secret"].as_str().unwrap_or("");
        let port = config["http.port"].as_str().and_then(|p| p.parse::<u16>().ok());
        let proven = !announce_secret.is_empty() && bool::from(secret.as_bytes().ct_eq(announce_secret.as_bytes()));
        let mut nodes = self.nodes.borrow_mut();
        let listed = nodes.iter().any(|n| n.config.id == id && !n.announced);
        let (Some(port), true, false, false) = (port, proven, listed, id.is_empty()) else { return false };
        let api = format!("http://{}", std::net::SocketAddr::new(from, port));
        let config = MediaNodeConfig { id: id.to_string(), api, secret: secret.to_string(), media_ip: from.to_string() };
        let count = nodes.len();
        match nodes.iter_mut().find(|n| n.config.id == id) {
            Some(n) => {
                n.host = from.to_string();
                n.config = config;
            }
            None if count < MEDIA_NODES_MAX => {
                tracing::info!(node = id, api = %config.api, "media node announced itself");
                nodes.push(Node { host: from.to_string(), config, announced: true, ..Node::listed(&MediaNodeConfig::default()) });
            }
            None => return false,
        }
        true
    }

    pub fn views(&self, now: Instant) -> Vec<NodeView> {
        let placed = self.placed.borrow();
        self.nodes
            .borrow()
            .iter()
            .map(|n| NodeView {
                id: n.config.id.clone(),
                api: n.config.api.clone(),
                media_ip: n.config.media_ip.clone(),
                state: n.state,
                draining: n.draining,
                load: n.load.clone(),
                placed: placed.values().filter(|id| **id == n.config.id).count(),
                last_keepalive_s_ago: n.last_keepalive.map(|t| now.saturating_duration_since(t).as_secs()),
            })
            .collect()
    }

    /// A keepalive (or start) hook from `from`: taken only from a configured node's own host.
    /// `Some(came_up)` when taken.
    pub fn keepalive(&self, now: Instant, id: &str, from: std::net::IpAddr, data: &Value) -> Option<bool> {
        let mut nodes = self.nodes.borrow_mut();
        let n = nodes.iter_mut().find(|n| n.config.id == id)?;
        if n.host.parse::<std::net::IpAddr>().is_ok_and(|h| h != from) {
            return None;
        }
        let came_up = n.state != NodeState::Up;
        if came_up {
            tracing::info!(node = id, "media node up");
        }
        n.state = NodeState::Up;
        n.last_keepalive = Some(now);
        n.placed_since_keepalive = 0;
        let num = |k: &str| data.get(k).and_then(Value::as_u64).unwrap_or(0);
        n.load = NodeLoad {
            // A ZLMediaKit keepalive counts its objects instead: one muxer per stream.
            streams: data.get("streams").and_then(Value::as_u64).unwrap_or_else(|| num("MultiMediaSourceMuxer")),
            viewers: num("viewers"),
            ingest_kbps: num("ingest_kbps"),
            cpu_percent: data.get("cpu_percent").and_then(Value::as_f64).unwrap_or(0.0),
            cores: num("cores"),
            rss_bytes: num("rss_bytes"),
        };
        Some(came_up)
    }

    /// Marks nodes whose keepalives stopped as down; returns them and the SSRCs of the streams
    /// that were on them (their sessions are to end).
    pub fn check(&self, now: Instant) -> (Vec<String>, Vec<u32>) {
        let mut went_down = Vec::new();
        for n in self.nodes.borrow_mut().iter_mut() {
            let late = n.last_keepalive.is_some_and(|t| now.saturating_duration_since(t) > self.down_after);
            if n.state == NodeState::Up && late {
                n.state = NodeState::Down;
                tracing::warn!(node = %n.config.id, down_after_s = self.down_after.as_secs(), "media node down: no keepalive");
                went_down.push(n.config.id.clone());
            }
        }
        let mut placed = self.placed.borrow_mut();
        let lost: Vec<u32> = placed.iter().filter(|(_, id)| went_down.contains(id)).map(|(s, _)| *s).collect();
        for ssrc in &lost {
            placed.remove(ssrc);
        }
        (went_down, lost)
    }

    pub fn set_draining(&self, id: &str, draining: bool) -> bool {
        match self.nodes.borrow_mut().iter_mut().find(|n| n.config.id == id) {
            Some(n) => {
                n.draining = draining;
                tracing::info!(node = id, draining, "media node drain");
                true
            }
            None => false,
        }
    }

    /// The least-loaded node that is up and not draining: one whose CPU is not busy, then the
    /// fewest streams, then the least ingest.
    pub fn choose(&self) -> Option<Placement> {
        let mut nodes = self.nodes.borrow_mut();
        let n = nodes.iter_mut().filter(|n| n.state == NodeState::Up && !n.draining).min_by_key(|n| {
            (n.load.cpu_busy(), n.load.streams + n.placed_since_keepalive * PLACED_SINCE_KEEPALIVE_WEIGHT, n.load.ingest_kbps)
        })?;
        n.placed_since_keepalive += 1;
        Some(Placement { node: n.config.id.clone(), api: n.config.api.clone(), media_ip: n.config.media_ip.clone() })
    }

    /// `openRtpServer` for `ssrc` is being asked.
    pub fn opening(&self, ssrc: u32) {
        self.opening.borrow_mut().insert(ssrc);
    }

    /// The ask for `ssrc` is over: placed on `node`, or (None) not.
    pub fn opened(&self, ssrc: u32, node: Option<&str>) {
        if let Some(node) = node {
            self.placed.borrow_mut().insert(ssrc, node.to_string());
        }
        self.opening.borrow_mut().remove(&ssrc);
    }

    #[cfg(test)]
    fn placed(&self, ssrc: u32, node: &str) {
        self.opened(ssrc, Some(node));
    }

    pub fn forget(&self, ssrc: u32) -> Option<String> {
        self.placed.borrow_mut().remove(&ssrc)
    }

    pub fn placement(&self, ssrc: u32) -> Option<Placement> {
        let id = self.placed.borrow().get(&ssrc).cloned()?;
        self.nodes.borrow().iter().find(|n| n.config.id == id).map(|n| Placement { node: id, api: n.config.api.clone(), media_ip: n.config.media_ip.clone() })
    }

    /// A node's HTTP address (`http://host:port`, no trailing slash).
    pub fn api_of(&self, node: &str) -> Option<String> {
        self.secret(node).map(|(api, _)| api.trim_end_matches('/').to_string())
    }

    fn secret(&self, node: &str) -> Option<(String, String)> {
        self.nodes.borrow().iter().find(|n| n.config.id == node).map(|n| (n.config.api.clone(), n.config.secret.clone()))
    }

    /// Makes `call` on `node`: the answer's JSON, or why there is none (a `code` other than 0
    /// included).
    pub async fn send(&self, node: &str, call: &super::node_call::NodeCall) -> Result<Value, NodeError> {
        self.call(node, call.name(), &call.params()).await
    }

    /// Calls `name` on `node` with `params` (as wvp does: a form with `secret` first).
    async fn call(&self, node: &str, name: &'static str, params: &[(&'static str, String)]) -> Result<Value, NodeError> {
        let (api, secret) = self.secret(node).ok_or(NodeError::UnknownNode)?;
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("secret", &secret);
        for (k, v) in params {
            form.append_pair(k, v);
        }
        let url = format!("{}/index/api/{name}", api.trim_end_matches('/'));
        let answer = crate::outbound::post(&url, &[], "application/x-www-form-urlencoded", form.finish().as_bytes(), NODE_CALL_TIMEOUT)
            .await
            .map_err(NodeError::Unreachable)?;
        let v: Value =
            serde_json::from_slice(&answer.body).map_err(|e| NodeError::NotJson { call: name, status: answer.status, why: e.to_string() })?;
        match v.get("code").and_then(Value::as_i64) {
            Some(0) => Ok(v),
            code => Err(NodeError::Refused { call: name, code, msg: v.get("msg").and_then(Value::as_str).unwrap_or("").to_string() }),
        }
    }

    /// Streams of every node that is up, with whether someone watches: (ssrc, in_use). A node
    /// up that does not answer has its placed streams reported in use (unknown is not gone).
    /// Also the orphans: RTP servers with a gmv stream id this control did not place (left by
    /// a control that stopped or crashed; their devices may still be sending).
    pub async fn streams(&self) -> NodeStreams {
        let ups: Vec<String> = self.nodes.borrow().iter().filter(|n| n.state == NodeState::Up).map(|n| n.config.id.clone()).collect();
        let mut out = Vec::new();
        let mut orphans = Vec::new();
        for node in ups {
            let placed: Vec<u32> = self.placed.borrow().iter().filter(|(_, n)| **n == node).map(|(s, _)| *s).collect();
            let servers = match self.send(&node, &super::node_call::NodeCall::ListRtpServer).await {
                Ok(v) => v,
                Err(error) => {
                    tracing::warn!(node, %error, "media node did not list its streams");
                    out.extend(placed.iter().map(|s| (*s, true)));
                    continue;
                }
            };
            let media = self.send(&node, &super::node_call::NodeCall::GetMediaList).await.unwrap_or(json!({}));
            let watched = |id: &str| {
                media["data"].as_array().is_some_and(|list| list.iter().any(|m| m["stream"] == id && m["totalReaderCount"].as_u64().unwrap_or(0) > 0))
            };
            for s in servers["data"].as_array().into_iter().flatten() {
                let Some(id) = s["stream_id"].as_str() else { continue };
                let Some(ssrc) = crate::proto::ssrc::parse_stream_id(id) else { continue }; // not a gmv stream (wvp's, say)
                if placed.contains(&ssrc) {
                    out.push((ssrc, watched(id)));
                } else if !self.opening.borrow().contains(&ssrc) && self.placed.borrow().get(&ssrc).is_none_or(|n| *n != node) {
                    orphans.push((node.clone(), id.to_string()));
                }
            }
        }
        NodeStreams { uses: out, orphans }
    }
}

/// Why a media node call has no answer to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeError {
    /// Not a node this control knows.
    UnknownNode,
    Unreachable(crate::outbound::OutboundError),
    NotJson { call: &'static str, status: u16, why: String },
    /// ZLMediaKit's answer with a `code` other than 0, and its `msg`.
    Refused { call: &'static str, code: Option<i64>, msg: String },
}

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeError::UnknownNode => f.write_str("no such node"),
            NodeError::Unreachable(e) => write!(f, "unreachable: {e}"),
            NodeError::NotJson { call, status, why } => write!(f, "{call}: HTTP {status} without JSON: {why}"),
            NodeError::Refused { call, code: Some(code), msg } => write!(f, "{call}: code {code} {msg}"),
            NodeError::Refused { call, code: None, msg } => write!(f, "{call}: no code {msg}"),
        }
    }
}

/// What the nodes hold, seen by the session check.
#[derive(Debug, Default)]
pub struct NodeStreams {
    /// (ssrc, watched) of the streams this control placed.
    pub uses: Vec<(u32, bool)>,
    /// (node, stream_id) of gmv streams nobody here placed.
    pub orphans: Vec<(String, String)>,
}

/// What a play token for a file on a media node is for: the node and the file's path there
/// (gmv serves `records/{name}`, ZLMediaKit `record/{app}/{stream}/{date}/{time}.mp4`, whose
/// names alone repeat across streams), hashed into the characters a token scope takes.
pub fn node_file_scope(node: &str, path: &str) -> crate::auth::Scope {
    use sha2::Digest;
    let digest = sha2::Sha256::new().chain_update(node.as_bytes()).chain_update([0]).chain_update(path.trim_start_matches('/').as_bytes()).finalize();
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    crate::auth::Scope::Record(format!("node-{hex}"))
}

/// The answer to hook `name` a media node posted from `from` (role control). Only configured
/// nodes are heard, from their own host; `on_play` takes a play token for the stream in its
/// URL (`?token=`), `on_publish` only streams this control placed (downloads recorded),
/// `on_http_access` a token for the file (`node_file_scope`).
pub fn answer_hook(control: &std::rc::Rc<super::Control>, name: &str, body: &Value, from: std::net::IpAddr, now_unix_s: u64) -> Value {
    let Some(nodes) = &control.nodes else { return json!({ "code": -1, "msg": "this gmv places no streams on media nodes (node.role is not control)" }) };
    let node_id = body["mediaServerId"].as_str().unwrap_or("");
    if name == "on_server_started" && nodes.announce(node_id, from, body, &control.shard.config.node.announce_secret) {
        control.events.publish("media_node_announced", None, None, json!({ "node": node_id, "from": from.to_string() }));
    }
    let heard = nodes.nodes.borrow().iter().any(|n| n.config.id == node_id && n.host.parse::<std::net::IpAddr>().is_ok_and(|h| h == from));
    if !heard {
        control.counters.borrow_mut().node_hooks_ignored += 1;
        control.warn_limited(|| tracing::warn!(hook = name, node = node_id, %from, "hook from an unknown media node or address; ignored"));
        return json!({ "code": -100, "msg": "not a media node of this control" });
    }
    // The play token a node's viewer brought (`params` `token=`), checked for `scope` and the
    // viewer's address; None when there is none.
    let viewer_token = |body: &Value, scope: &crate::auth::Scope| {
        let params = body["params"].as_str().unwrap_or("");
        let token = form_urlencoded::parse(params.as_bytes()).find(|(k, _)| k == "token").map(|(_, v)| v.into_owned());
        let client = body["ip"].as_str().and_then(|ip| ip.parse().ok()).unwrap_or(from);
        token.map(|t| control.shard.secrets().verify(&t, scope, now_unix_s, client))
    };
    let stream = body["stream"].as_str().unwrap_or("");
    let ours = crate::proto::ssrc::parse_stream_id(stream).and_then(|ssrc| nodes.placement(ssrc)).is_some_and(|p| p.node == node_id);
    match name {
        "on_server_started" | "on_server_keepalive" => {
            // A start carries the node's config, not its load.
            let load = if name == "on_server_started" { &Value::Null } else { &body["data"] };
            if nodes.keepalive(Instant::now(), node_id, from, load) == Some(true) {
                control.events.publish("media_node_up", None, None, json!({ "node": node_id }));
            }
            json!({ "code": 0, "msg": "success" })
        }
        // A download's stream is recorded to MP4 on its node from its first packets, and so
        // is a planned one's (which is also asked by `startRecord`, for nodes that post no
        // `on_publish` here).
        "on_publish" if ours => {
            let download = crate::proto::ssrc::parse_stream_id(stream).is_some_and(|ssrc| control.downloads.is_download(ssrc) || control.planned_streams().contains(&ssrc));
            json!({ "code": 0, "msg": "success", "enable_audio": true, "enable_mp4": download })
        }
        "on_publish" => json!({ "code": -1, "msg": "fail" }),
        "on_play" => {
            match viewer_token(body, &crate::auth::Scope::Stream(stream.to_string())) {
                Some(Ok(())) if ours => json!({ "code": 0, "msg": "success" }),
                Some(Ok(())) => json!({ "code": 404, "msg": "not a stream of this control" }),
                Some(Err(e)) => json!({ "code": 401, "msg": e.message() }),
                None => json!({ "code": 401, "msg": "no play token (?token=)" }),
            }
        }
        // The control stops sessions nobody watches itself (sip.no_viewer_stop_s).
        "on_stream_none_reader" => json!({ "code": 0, "close": false }),
        // A send ended on a node (its stream may be unplaced already, closed by this control):
        // an upstream session's ends with it, found by its stream and SSRC among ours.
        "on_send_rtp_stopped" => {
            let send = body["ssrc"].as_str().and_then(|s| s.parse::<u32>().ok()).or_else(|| body["ssrc"].as_u64().and_then(|s| u32::try_from(s).ok()));
            let source = crate::proto::ssrc::parse_stream_id(stream);
            if let (Some(source), Some(send)) = (source, send) {
                let reason = format!("stopped on media node {node_id}: {}", body["msg"].as_str().unwrap_or(""));
                control.upstream_sender_ended(source, send, &reason);
            }
            json!({ "code": 0, "msg": "success" })
        }
        "on_record_mp4" => {
            let file = super::downloads::NodeFile {
                name: body["file_name"].as_str().unwrap_or("").to_string(),
                url: body["url"].as_str().unwrap_or("").to_string(),
                bytes: body["file_size"].as_u64().unwrap_or(0),
            };
            let duration_ms = (body["time_len"].as_f64().unwrap_or(0.0) * 1000.0).round() as u64;
            control.plan_recorded_on_node(node_id, stream, &file, body["start_time"].as_u64().unwrap_or(0), duration_ms);
            control.downloads.recorded_on_node(node_id, stream, file);
            json!({ "code": 0, "msg": "success" })
        }
        // A download's file on a node, fetched with the control's token for it.
        "on_http_access" => {
            let is_dir = body["is_dir"].as_bool().unwrap_or(false);
            match viewer_token(body, &node_file_scope(node_id, body["path"].as_str().unwrap_or(""))) {
                Some(Ok(())) if !is_dir => json!({ "code": 0, "err": "", "path": "", "second": 600 }),
                Some(Err(e)) => json!({ "code": 401, "err": e.message() }),
                _ => json!({ "code": 401, "err": "no play token (?token=) for a recording" }),
            }
        }
        _ => json!({ "code": 0, "msg": "success" }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes() -> MediaNodes {
        let c = |id: &str, host: &str| MediaNodeConfig { id: id.into(), api: format!("http://{host}:8080"), secret: "s".into(), media_ip: host.into() };
        MediaNodes::new(&[c("a", "127.0.0.2"), c("b", "127.0.0.3")], Duration::from_secs(30))
    }

    #[test]
    fn places_on_the_least_loaded_node_that_is_up_and_not_draining() {
        let t = Instant::now();
        let n = nodes();
        assert_eq!(n.choose(), None, "no node has said it is up");
        let load = |s: u64| json!({"streams": s, "ingest_kbps": 0});
        assert_eq!(n.keepalive(t, "a", "10.9.9.9".parse().unwrap(), &load(0)), None, "not from the node's host");
        assert_eq!(n.keepalive(t, "z", "127.0.0.2".parse().unwrap(), &load(0)), None, "not a configured node");
        assert_eq!(n.keepalive(t, "a", "127.0.0.2".parse().unwrap(), &load(5)), Some(true), "came up");
        assert_eq!(n.keepalive(t, "a", "127.0.0.2".parse().unwrap(), &load(5)), Some(false), "stays up");
        assert_eq!(n.keepalive(t, "b", "127.0.0.3".parse().unwrap(), &load(3)), Some(true));
        let picks: Vec<String> = (0..4).map(|_| n.choose().unwrap().node).collect();
        assert_eq!(picks, ["b", "b", "a", "b"], "placed streams count until the next keepalive");
        n.set_draining("b", true);
        assert_eq!(n.choose().unwrap().node, "a");
        n.set_draining("a", true);
        assert_eq!(n.choose(), None);
    }

    #[test]
    fn a_zlmediakit_keepalive_counts_its_streams_by_their_muxers() {
        let n = nodes();
        // The data of a recorded ZLMediaKit keepalive with one stream published.
        let zlm = json!({"Buffer": 336, "Frame": 57, "MediaSource": 7, "MultiMediaSourceMuxer": 1, "RtpPacket": 59, "Socket": 18});
        n.keepalive(Instant::now(), "a", "127.0.0.2".parse().unwrap(), &zlm);
        n.keepalive(Instant::now(), "b", "127.0.0.3".parse().unwrap(), &json!({"MultiMediaSourceMuxer": 0}));
        assert_eq!(n.views(Instant::now())[0].load.streams, 1);
        assert_eq!(n.choose().unwrap().node, "b");
    }

    #[test]
    fn a_node_file_token_is_for_that_node_and_path_only() {
        let zlm = "record/rtp/1200000002/2026-12-02/2026-12-02-15-46-56-0.mp4";
        assert_eq!(node_file_scope("zlm-1", zlm), node_file_scope("zlm-1", &format!("/{zlm}")), "the hook's path has a leading slash");
        assert_ne!(node_file_scope("zlm-1", zlm), node_file_scope("zlm-2", zlm));
        assert_ne!(node_file_scope("zlm-1", zlm), node_file_scope("zlm-1", "record/rtp/1200000004/2026-12-02/2026-12-02-15-46-56-0.mp4"), "same file name, another stream");
        let crate::auth::Scope::Record(stem) = node_file_scope("a", "records/x.mp4") else { panic!() };
        assert!(stem.len() == 37 && stem.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'), "{stem}: a scope a token takes");
    }

    #[test]
    fn a_node_with_a_busy_cpu_gets_streams_only_when_every_node_is_busy() {
        let t = Instant::now();
        let n = nodes();
        let load = |streams: u64, cpu: f64| json!({"streams": streams, "cpu_percent": cpu, "cores": 2});
        n.keepalive(t, "a", "127.0.0.2".parse().unwrap(), &load(1, 190.0));
        n.keepalive(t, "b", "127.0.0.3".parse().unwrap(), &load(50, 120.0));
        assert_eq!(n.choose().unwrap().node, "b", "a has fewer streams but 95 % of its two cores busy");
        n.keepalive(t, "b", "127.0.0.3".parse().unwrap(), &load(50, 180.0));
        assert_eq!(n.choose().unwrap().node, "a", "both busy: the fewest streams again");
        n.keepalive(t, "b", "127.0.0.3".parse().unwrap(), &load(50, 120.0));
        n.keepalive(t, "a", "127.0.0.2".parse().unwrap(), &json!({"streams": 1, "cpu_percent": 95.0}));
        assert_eq!(n.choose().unwrap().node, "b", "a node that does not say its cores counts as one: 95 % of it is busy");
    }

    #[test]
    fn a_node_announcing_itself_needs_the_announce_secret() {
        let n = nodes();
        let from: std::net::IpAddr = "127.0.0.9".parse().unwrap();
        let config = |secret: &str| json!({"api.secret": secret, "http.port": "8089"});
        assert!(!n.announce("c", from, &config("wrong-secret-0123456"), "announce-secret-0123"));
        assert!(!n.announce("c", from, &config("announce-secret-0123"), ""), "announcing is off");
        assert!(!n.announce("a", from, &config("announce-secret-0123"), "announce-secret-0123"), "a listed node keeps its address");
        assert!(n.announce("c", from, &config("announce-secret-0123"), "announce-secret-0123"));
        let c = n.views(Instant::now()).into_iter().find(|v| v.id == "c").unwrap();
        assert_eq!((c.api.as_str(), c.media_ip.as_str(), c.state), ("http://127.0.0.9:8089", "127.0.0.9", NodeState::Unknown));
        assert_eq!(n.keepalive(Instant::now(), "c", from, &json!({})), Some(true), "then heard from its address");
    }

    #[test]
    fn a_silent_node_goes_down_with_its_streams() {
        let t = Instant::now();
        let n = nodes();
        n.keepalive(t, "a", "127.0.0.2".parse().unwrap(), &json!({}));
        n.keepalive(t, "b", "127.0.0.3".parse().unwrap(), &json!({}));
        n.placed(7, "a");
        n.placed(8, "b");
        assert!(n.check(t + Duration::from_secs(30)).1.is_empty());
        n.keepalive(t + Duration::from_secs(20), "b", "127.0.0.3".parse().unwrap(), &json!({}));
        assert_eq!(n.check(t + Duration::from_secs(31)), (vec!["a".to_string()], vec![7]));
        assert_eq!(n.placement(7), None);
        assert_eq!(n.choose().unwrap().node, "b");
        assert!(n.views(t).iter().any(|v| v.id == "a" && v.state == NodeState::Down));
    }
}
