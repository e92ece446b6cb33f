//! This process as a media node on the ZLMediaKit node protocol: the node API (`/index/api/...`,
//! in `api`), hooks (`hooks`), the RTP servers it was asked to open (`rtp_servers`) and the
//! driver that watches them, on the control executor. Streams are ordinary gmv streams on the
//! media shards, reached through the media-service API; nothing here touches the media path.

pub mod api;
pub mod download_file;
pub mod vod;
pub mod hooks;
pub mod proxies;
pub mod rtp_servers;
pub mod zlm;

use crate::shard::{Shard, unix_s};
use crate::shard::msg::{PublishOrder, StreamInfo};
use hooks::{HookTargets, Hooks};
use rtp_servers::{Action, RtpServer, RtpServers, StreamView, Timing};
use zlm::PublishOptions;
use serde_json::{Map, Value, json};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How often the driver looks at every RTP server's stream.
pub const NODE_TICK: Duration = Duration::from_millis(500);
/// How often a viewer waiting for a stream to be published looks again.
const PLAY_WAIT_POLL: Duration = Duration::from_millis(100);
/// Senders (`startSendRtp`) the node names in `on_send_rtp_stopped`, at most.
pub const SENDS_TRACKED_MAX: usize = rtp_servers::RTP_SERVERS_MAX;
/// Servers closed while recording, remembered until their file is closed (it closes after the
/// server, and `on_record_mp4` names the server): at most this many.
pub const CLOSED_RECORDINGS_MAX: usize = 256;

/// The settings `setServerConfig` may change while running.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    pub rtp_timeout: Duration,
    pub none_reader_delay: Duration,
    pub max_stream_wait: Duration,
    pub keepalive: Duration,
}

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct NodeCounters {
    pub api_calls: u64,
    /// Refused for a wrong or missing secret.
    pub api_refused: u64,
    pub plays_allowed: u64,
    pub plays_refused: u64,
    /// Viewers of a stream not published within `max_stream_wait`.
    pub plays_not_found: u64,
    /// Recording files `on_http_access` opened, and those it refused or did not answer.
    pub files_allowed_by_hook: u64,
    pub files_refused_by_hook: u64,
    pub rtp_timeouts: u64,
    pub publish_refused: u64,
    /// Publishes refused because `on_publish`'s `stream_replace` named another stream.
    pub replace_refused: u64,
    /// TCP active: dials to a device that failed (`connectRtpServer`'s tries and redials).
    pub redials_failed: u64,
    /// `downloadFile` calls served, refused (no secret, credential, hook or allowed address),
    /// and naming no recording of this node (a path outside its folders, `..`, a symlink).
    pub files_downloaded: u64,
    pub files_refused: u64,
    pub files_bad_path: u64,
    /// Recordings deleted by `deleteRecordDirectory`.
    pub records_deleted: u64,
    /// Senders ended (`on_send_rtp_stopped` posted).
    pub sends_stopped: u64,
}

pub struct Node {
    pub shard: Rc<Shard>,
    pub servers: RefCell<RtpServers>,
    pub hooks: Hooks,
    pub timings: Cell<Timings>,
    /// `rtp_proxy.port_range`: where RTP servers take ports (`rtp.port_min..=port_max` until a
    /// `setServerConfig` moves it); an explicit `port` outside it is refused.
    pub port_range: Cell<(u16, u16)>,
    /// `rtmp.enhanced`: H.265 on the node's FLV URLs as enhanced RTMP's `hvc1`; off (the
    /// default, as wvp ships ZLMediaKit): codec id 12, what its players read.
    pub rtmp_enhanced: Cell<bool>,
    /// Recordings published for playback (`loadMP4File`) by (app, stream).
    pub vods: RefCell<std::collections::BTreeMap<(String, String), vod::Vod>>,
    /// Keys `setServerConfig` set that gmv only tells back (`api::KEPT_KEYS`).
    pub kept_config: RefCell<std::collections::BTreeMap<String, String>>,
    pub counters: RefCell<NodeCounters>,
    /// Numbers the viewers `on_play` and `on_stream_not_found` name (their `id`).
    next_viewer: Cell<u64>,
    /// Process CPU between keepalives.
    cpu: crate::process::CpuSampler,
    /// Senders started here: (source key, send SSRC) → the source's (app, name) when started.
    pub sends: RefCell<std::collections::BTreeMap<(u32, u32), (String, String)>>,
    /// Servers closed while recording: (key, app, name), oldest first.
    closed_recordings: RefCell<std::collections::VecDeque<(u32, String, String)>>,
    /// The pull proxies' thread (set once it runs): what `addStreamProxy` pulls with.
    pub pull: RefCell<Option<Rc<crate::pull::Proxies>>>,
    /// Stream proxies by key (`{vhost}/{app}/{stream}`).
    pub proxies: RefCell<std::collections::BTreeMap<String, proxies::NodeProxy>>,
}

/// Whether a viewer of a ZLMediaKit play URL may watch.
#[derive(Debug, Clone)]
pub enum PlayDecision {
    /// `on_play` allowed it: the gmv stream to serve.
    Allowed(u32),
    /// No `on_play` hook: gmv's own credentials decide, for this stream.
    NeedsCredential(u32),
    /// A recording published by `loadMP4File`: played from its control's position; a
    /// credential for the recording is needed when no `on_play` hook is set.
    Vod { stem: String, control: Rc<vod::PlaybackControl>, needs_credential: bool },
    /// `on_play` refused, with its code and message.
    Refused(i64, String),
    NotFound,
}

/// An HLS player asks for the playlist about once a segment; one that has not asked for this
/// many segments' time is gone.
const HLS_VIEWER_GONE_SEGMENTS: u64 = 3;

/// Media an audio-only stream carries before it is taken for one: a camera's audio often
/// comes before its first picture can be read, and a stream announced then would be audio only
/// for good (ZLMediaKit waits for more tracks too, `wait_add_track_ms`).
pub const AUDIO_ONLY_WAIT_MS: u64 = 3000;

fn view(info: &StreamInfo, segment_ms: u64) -> StreamView {
    let hls_viewer = info.hls_request_ms_ago.is_some_and(|ago| ago < HLS_VIEWER_GONE_SEGMENTS * segment_ms);
    let video_ready = info.video_codec.is_some() && info.fps > 0.0;
    let audio_only = info.video_codec.is_none() && info.audio_codec.is_some() && info.media_ms >= AUDIO_ONLY_WAIT_MS;
    StreamView {
        packets: info.packets,
        ready: video_ready || audio_only,
        quiet_ms: info.last_packet_ms_ago.unwrap_or(info.age_ms),
        readers: info.subscribers + usize::from(hls_viewer),
        tcp_conns: info.tcp_conns,
    }
}

impl Node {
    /// Starts the node's hooks and driver on the control executor and posts `on_server_started`.
    pub fn start(shard: Rc<Shard>) -> Rc<Node> {
        let c = &shard.config.node;
        let targets = HookTargets {
            urls: c.hooks.clone(),
            enabled: true,
            timeout: Duration::from_secs(c.hook_timeout_s),
            retry: c.hook_retry,
            retry_delay: Duration::from_millis(c.hook_retry_delay_ms),
            media_server_id: shard.config.media_server_id().to_string(),
        };
        let timings = Timings {
            rtp_timeout: Duration::from_secs(c.rtp_server_timeout_s),
            none_reader_delay: Duration::from_millis(c.stream_none_reader_delay_ms),
            max_stream_wait: Duration::from_millis(c.max_stream_wait_ms),
            keepalive: Duration::from_secs(c.keepalive_interval_s),
        };
        let port_range = (shard.config.rtp.port_min, shard.config.rtp.port_max);
        let rtmp_enhanced = shard.config.node.rtmp_enhanced;
        let node = Rc::new(Node {
            shard,
            servers: RefCell::new(RtpServers::default()),
            hooks: Hooks::start(targets),
            port_range: Cell::new(port_range),
            rtmp_enhanced: Cell::new(rtmp_enhanced),
            kept_config: RefCell::new(Default::default()),
            vods: RefCell::new(Default::default()),
            timings: Cell::new(timings),
            counters: RefCell::new(NodeCounters::default()),
            next_viewer: Cell::new(1),
            cpu: Default::default(),
            closed_recordings: RefCell::new(Default::default()),
            sends: RefCell::new(Default::default()),
            pull: RefCell::new(None),
            proxies: RefCell::new(Default::default()),
        });
        if node.shard.config.node.secret.is_empty() {
            tracing::info!("node API off (node.secret is empty): /index/api/ answers every call \"Please login first\"");
        } else {
            tracing::info!(media_server_id = %node.shard.config.media_server_id(), "node API on /index/api/ (ZLMediaKit's), hooks: {:?}", node.hooks.targets.borrow().urls.keys().collect::<Vec<_>>());
        }
        node.hooks.post("on_server_started", api::server_config(&node));
        glommio::spawn_local(tick_loop(node.clone())).detach();
        glommio::spawn_local(keepalive_loop(node.clone())).detach();
        node
    }

    pub fn schemas(&self) -> Vec<String> {
        self.shard.config.node.stream_changed_schemas.clone()
    }

    pub fn listen_ip(&self) -> std::net::IpAddr {
        self.shard.config.rtp.listen_ip
    }

    /// Streams of the media shards by SSRC.
    pub async fn stream_infos(&self) -> HashMap<u32, StreamInfo> {
        self.shard.list_streams().await.into_iter().map(|i| (i.ssrc, i)).collect()
    }

    /// Posts `on_stream_changed` for every schema; `info` None: the stream is gone and only
    /// what names it is sent.
    fn stream_changed(&self, server: &RtpServer, info: Option<&StreamInfo>, regist: bool) {
        let created = match server.publish {
            rtp_servers::Publish::Published { unix_s } => unix_s,
            _ => unix_s(),
        };
        for schema in self.schemas() {
            let mut body = match info {
                Some(i) => zlm::media_entry(server, i, &schema, created, self.listen_ip()),
                None => zlm::stream_ref(&server.app, &server.name, &schema),
            };
            body.insert("regist".into(), regist.into());
            self.hooks.post("on_stream_changed", body);
        }
    }

    /// Closes an RTP server and its stream at once (API, `on_stream_none_reader`, refused
    /// publish): unregistered if it was published. False if there was no such server.
    pub async fn close_server(&self, stream_id: &str, why: &str) -> bool {
        let Some(server) = self.servers.borrow_mut().remove(stream_id) else { return false };
        let info = self.shard.stream_info(server.key).await;
        if info.as_ref().is_some_and(|i| i.recording) {
            let mut closed = self.closed_recordings.borrow_mut();
            if closed.len() >= CLOSED_RECORDINGS_MAX {
                closed.pop_front();
            }
            closed.push_back((server.key, server.app.clone(), server.name.clone()));
        }
        self.shard.close_stream(server.key).await;
        if server.published() {
            self.stream_changed(&server, info.as_ref(), false);
        }
        tracing::info!(stream_id, ssrc = server.key, reason = why, "RTP server closed");
        true
    }

    /// A viewer asks for `stream_id` (schema `rtmp` for HTTP-FLV, `hls`): waits for it to be
    /// published up to `max_stream_wait` (saying `on_stream_not_found` at once), then asks
    /// `on_play`.
    pub async fn play(&self, app: &str, stream_id: &str, schema: &str, params: &str, peer: std::net::SocketAddr) -> PlayDecision {
        let deadline = Instant::now() + self.timings.get().max_stream_wait;
        let mut body = zlm::stream_ref(app, stream_id, schema);
        self.viewer_fields(&mut body, params, peer);
        body.insert("protocol".into(), "http".into());
        let vod = self.vods.borrow().get(&(app.to_string(), stream_id.to_string())).map(|v| (v.stem.clone(), v.control.clone()));
        if let Some((stem, control)) = vod {
            return match self.hooks.ask("on_play", body).await {
                None => PlayDecision::Vod { stem, control, needs_credential: true },
                Some(Ok(answer)) if answer.get("code").and_then(Value::as_i64) == Some(0) => PlayDecision::Vod { stem, control, needs_credential: false },
                Some(Ok(answer)) => PlayDecision::Refused(answer.get("code").and_then(Value::as_i64).unwrap_or(-1), answer.get("msg").and_then(Value::as_str).unwrap_or("").to_string()),
                Some(Err(error)) => PlayDecision::Refused(-1, format!("on_play failed: {error}")),
            };
        }
        let published = || {
            let server = self.servers.borrow().named(stream_id).filter(|s| s.published() && s.app == app).map(|s| s.key);
            server.or_else(|| proxies::published(self, app, stream_id))
        };
        let mut key = published();
        if key.is_none() {
            self.hooks.post("on_stream_not_found", body.clone());
        }
        while key.is_none() && Instant::now() < deadline {
            glommio::timer::sleep(PLAY_WAIT_POLL).await;
            key = published();
        }
        let Some(key) = key else {
            self.counters.borrow_mut().plays_not_found += 1;
            return PlayDecision::NotFound;
        };
        let decision = match self.hooks.ask("on_play", body).await {
            None => PlayDecision::NeedsCredential(key),
            Some(Ok(answer)) => match answer.get("code").and_then(Value::as_i64) {
                Some(0) => PlayDecision::Allowed(key),
                code => PlayDecision::Refused(code.unwrap_or(-1), answer.get("msg").and_then(Value::as_str).unwrap_or("").to_string()),
            },
            Some(Err(error)) => PlayDecision::Refused(-1, format!("on_play failed: {error}")),
        };
        let mut c = self.counters.borrow_mut();
        match decision {
            PlayDecision::Refused(..) => c.plays_refused += 1,
            _ => c.plays_allowed += 1,
        }
        decision
    }

    /// What `on_play` and `on_http_access` say of the viewer: its URL parameters, address and
    /// a number of its own (`id`).
    fn viewer_fields(&self, body: &mut Map<String, Value>, params: &str, peer: std::net::SocketAddr) {
        body.insert("params".into(), params.into());
        body.insert("ip".into(), peer.ip().to_string().into());
        body.insert("port".into(), peer.port().into());
        let viewer = self.next_viewer.replace(self.next_viewer.get() + 1);
        body.insert("id".into(), format!("{viewer}-{}", self.shard.index).into());
    }

    /// A recording file gmv's own tokens do not open (a control's download): `on_http_access`
    /// decides, as ZLMediaKit asks it for files. False when the hook is not set or refuses.
    pub async fn http_access(&self, path: &str, params: &str, peer: std::net::SocketAddr) -> bool {
        let mut body = Map::new();
        body.insert("path".into(), path.into());
        body.insert("is_dir".into(), false.into());
        self.viewer_fields(&mut body, params, peer);
        let answer = self.hooks.ask("on_http_access", body).await;
        let allowed = matches!(&answer, Some(Ok(a)) if a.get("code").and_then(Value::as_i64) == Some(0));
        let mut c = self.counters.borrow_mut();
        if allowed {
            c.files_allowed_by_hook += 1;
        } else if answer.is_some() {
            c.files_refused_by_hook += 1;
            // Anyone may ask for a file: a line at 1, 2, 4, ... refusals, all counted.
            if c.files_refused_by_hook.is_power_of_two() {
                let why = match &answer {
                    Some(Err(error)) => error.clone(),
                    _ => "refused".to_string(),
                };
                tracing::warn!(path, why, refused = c.files_refused_by_hook, "recording file refused by on_http_access");
            }
        }
        allowed
    }

    /// `on_stream_changed` for a `loadMP4File` playback, every schema (ZLMediaKit's `mp4_vod`).
    pub fn vod_changed(&self, vod: &vod::Vod, regist: bool) {
        for schema in self.schemas() {
            let mut body = zlm::stream_ref(&vod.app, &vod.stream, &schema);
            body.insert("regist".into(), regist.into());
            if regist {
                body.insert("aliveSecond".into(), 0.into());
                body.insert("bytesSpeed".into(), 0.into());
                body.insert("createStamp".into(), vod.created_unix_s.into());
                body.insert("originType".into(), zlm::ORIGIN_TYPE_MP4_VOD.into());
                body.insert("originTypeStr".into(), zlm::ORIGIN_TYPE_MP4_VOD_NAME.into());
                body.insert("originUrl".into(), vod.file_path.clone().into());
                body.insert("readerCount".into(), 0.into());
                body.insert("totalReaderCount".into(), 0.into());
                body.insert("tracks".into(), Value::Array(Vec::new()));
            }
            self.hooks.post("on_stream_changed", body);
        }
    }

    /// A media shard's sender ended: `on_send_rtp_stopped` for a send this node started.
    pub fn send_stopped(&self, stopped: &crate::shard::rtp_send::SendStopped) {
        let Some((app, name)) = self.sends.borrow_mut().remove(&(stopped.source_ssrc, stopped.send_ssrc)) else { return };
        let mut body = zlm::stream_ref(&app, &name, "rtsp");
        body.remove("schema");
        body.insert("ssrc".into(), stopped.send_ssrc.to_string().into());
        body.insert("originType".into(), zlm::ORIGIN_TYPE_RTP_PUSH.into());
        body.insert("originTypeStr".into(), zlm::ORIGIN_TYPE_RTP_PUSH_NAME.into());
        body.insert("originUrl".into(), format!("rtp://{}/{app}/{name}", rtp_servers::VHOST).into());
        body.insert("msg".into(), stopped.reason.clone().into());
        body.insert("err".into(), stopped.end.zlm_err().into());
        body.insert("packets".into(), stopped.packets.into());
        self.counters.borrow_mut().sends_stopped += 1;
        self.hooks.post("on_send_rtp_stopped", body);
    }

    /// A media shard closed a recording: `on_record_mp4` for a node stream.
    pub fn recording_closed(&self, info: &crate::shard::record::RecordInfo) {
        let Some(key) = crate::proto::ssrc::parse_stream_id(&info.stream_id) else { return };
        let named = self.servers.borrow().by_key(key).map(|s| (s.app.clone(), s.name.clone()));
        let named = named.or_else(|| {
            let mut closed = self.closed_recordings.borrow_mut();
            let at = closed.iter().position(|(k, _, _)| *k == key)?;
            closed.remove(at).map(|(_, app, stream_id)| (app, stream_id))
        });
        let Some((app, stream_id)) = named else { return };
        let dir = crate::shard::record::records_dir(&self.shard.config.data_dir);
        let mut body = zlm::stream_ref(&app, &stream_id, "rtmp");
        body.remove("schema");
        body.insert("file_name".into(), info.file.clone().into());
        body.insert("file_path".into(), dir.join(&info.file).display().to_string().into());
        body.insert("file_size".into(), info.bytes.into());
        body.insert("folder".into(), format!("{}/", dir.display()).into());
        body.insert("start_time".into(), (info.start_unix_ms / 1000).into());
        body.insert("time_len".into(), (info.duration_ms as f64 / 1000.0).into());
        body.insert("url".into(), format!("records/{}", info.file).into());
        self.hooks.post("on_record_mp4", body);
    }

    /// `on_server_keepalive`'s figures: what a control plane places streams by.
    async fn load(&self) -> Map<String, Value> {
        let infos = self.shard.list_streams().await;
        let cpu_percent = self.cpu.percent().round();
        let v = json!({
            "streams": infos.len(),
            "rtp_servers": self.servers.borrow().len(),
            "viewers": infos.iter().map(|i| i.subscribers).sum::<usize>(),
            "ingest_kbps": infos.iter().map(|i| i.bitrate_kbps).sum::<u64>(),
            "cpu_percent": cpu_percent,
            "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
            "rss_bytes": crate::process::rss_bytes().unwrap_or(0),
            "media_shards": self.shard.media_shards,
        });
        v.as_object().cloned().unwrap_or_default()
    }

    async fn on_tick(self: &Rc<Self>) {
        let wait = self.timings.get().none_reader_delay;
        let done: Vec<vod::Vod> = {
            let mut vods = self.vods.borrow_mut();
            let keys: Vec<(String, String)> = vods.iter().filter(|(_, v)| v.done(Instant::now(), wait)).map(|(k, _)| k.clone()).collect();
            keys.iter().filter_map(|k| vods.remove(k)).collect()
        };
        for v in &done {
            tracing::info!(app = %v.app, stream = %v.stream, "recording playback closed: no viewer");
            self.vod_changed(v, false);
        }
        // Nothing to watch: the shards are not asked (an all-in-one gmv nobody drives).
        if self.servers.borrow().is_empty() && self.proxies.borrow().is_empty() {
            return;
        }
        let listed_at = Instant::now();
        let infos = self.stream_infos().await;
        let segment_ms = self.shard.config.hls.segment_duration_s * 1000;
        proxies::tick(self, &infos, listed_at, |info| view(info, segment_ms).readers).await;
        let t = self.timings.get();
        let timing = Timing { rtp_timeout: t.rtp_timeout, none_reader_delay: t.none_reader_delay };
        let actions = self.servers.borrow_mut().tick(Instant::now(), listed_at, timing, |key| infos.get(&key).map(|i| view(i, segment_ms)));
        for action in actions {
            match action {
                Action::AskPublish { stream_id } => {
                    let info = self.servers.borrow().get(&stream_id).and_then(|s| infos.get(&s.key).cloned());
                    glommio::spawn_local(ask_publish(self.clone(), stream_id, info)).detach();
                }
                Action::TimedOut { server } => {
                    self.counters.borrow_mut().rtp_timeouts += 1;
                    let info = infos.get(&server.key);
                    self.shard.close_stream(server.key).await;
                    tracing::info!(stream_id = %server.stream_id, ssrc = server.key, "RTP server timed out: no packets");
                    self.hooks.post("on_rtp_server_timeout", zlm::rtp_server_timeout(&server));
                    if server.published() {
                        self.stream_changed(&server, info, false);
                    }
                }
                Action::AskNoneReader { stream_id } => {
                    glommio::spawn_local(ask_none_reader(self.clone(), stream_id)).detach();
                }
                Action::Redial { stream_id, to } => {
                    glommio::spawn_local(redial(self.clone(), stream_id, to)).detach();
                }
            }
        }
    }
}

async fn tick_loop(node: Rc<Node>) {
    loop {
        glommio::timer::sleep(NODE_TICK).await;
        node.on_tick().await;
    }
}

async fn keepalive_loop(node: Rc<Node>) {
    loop {
        glommio::timer::sleep(node.timings.get().keepalive).await;
        if !node.hooks.configured("on_server_keepalive") {
            continue;
        }
        let mut body = Map::new();
        body.insert("data".into(), Value::Object(node.load().await));
        node.hooks.post("on_server_keepalive", body);
    }
}

/// Packets came to an RTP server: `on_publish` decides (allowed when it is not set).
async fn ask_publish(node: Rc<Node>, stream_id: String, info: Option<StreamInfo>) {
    let Some((app, key)) = node.servers.borrow().get(&stream_id).map(|s| (s.app.clone(), s.key)) else { return };
    let mut body = zlm::stream_ref(&app, &stream_id, "rtp");
    let peer = info.as_ref().and_then(|i| i.peer);
    body.insert("id".into(), stream_id.clone().into());
    body.insert("ip".into(), peer.map_or(String::new(), |p| p.ip().to_string()).into());
    body.insert("port".into(), peer.map_or(0, |p| p.port()).into());
    body.insert("originType".into(), zlm::ORIGIN_TYPE_RTP_PUSH.into());
    body.insert("originTypeStr".into(), zlm::ORIGIN_TYPE_RTP_PUSH_NAME.into());
    body.insert("protocol".into(), "rtp".into());
    let (allowed, options) = match node.hooks.ask("on_publish", body).await {
        None => (Ok(()), PublishOptions::default()),
        Some(Ok(answer)) => match answer.get("code").and_then(Value::as_i64) {
            Some(0) => (Ok(()), PublishOptions::from_answer(&answer)),
            code => (Err(format!("on_publish answered code {code:?}")), PublishOptions::default()),
        },
        Some(Err(error)) => (Err(format!("on_publish failed: {error}")), PublishOptions::default()),
    };
    if let Err(why) = allowed {
        node.counters.borrow_mut().publish_refused += 1;
        tracing::info!(stream_id, ssrc = key, reason = %why, "publish refused");
        node.close_server(&stream_id, "publish refused").await;
        return;
    }
    if let Some(name) = &options.stream_replace {
        let renamed = node.servers.borrow_mut().rename(&stream_id, name);
        if let Err(refused) = renamed {
            // wvp names a device's channel once: a second stream under that name is a stale
            // one's or a misconfiguration, and taking it would cut the first one's viewers off.
            node.counters.borrow_mut().replace_refused += 1;
            tracing::warn!(stream_id, ssrc = key, stream_replace = %name, ?refused, "publish refused: on_publish's stream_replace names another stream or is no stream name");
            node.close_server(&stream_id, "stream_replace refused").await;
            return;
        }
    }
    if !node.servers.borrow_mut().allow(&stream_id, unix_s()) {
        return; // closed meanwhile
    }
    let record_file_span = options.enable_mp4.then(|| options.mp4_max_second.map_or(Duration::from_secs(node.shard.config.record.rotate_s), Duration::from_secs));
    let order = PublishOrder { drop_audio: options.enable_audio == Some(false), record_file_span };
    if order != PublishOrder::default() {
        node.shard.publishing(key, order).await;
    }
    let server = node.servers.borrow().get(&stream_id).cloned();
    if let Some(server) = server {
        let info = node.shard.stream_info(key).await.or(info);
        node.stream_changed(&server, info.as_ref(), true);
        tracing::info!(stream_id, ssrc = key, name = %server.name, "stream published");
    }
}

/// TCP active: the device dropped the connection; one more try (the tick asks again, a gap
/// later, until `DIAL_TRIES_MAX` failed in a row).
async fn redial(node: Rc<Node>, stream_id: String, to: std::net::SocketAddr) {
    let Some(key) = node.servers.borrow().get(&stream_id).map(|s| s.key) else { return };
    let result = node.shard.connect_tcp(key, to).await;
    match &result {
        Ok(()) => tracing::info!(stream_id, ssrc = key, %to, "TCP active: reconnected to the device"),
        Err(error) => {
            node.counters.borrow_mut().redials_failed += 1;
            tracing::warn!(stream_id, ssrc = key, %to, %error, "TCP active: the device dropped the connection and a redial failed");
        }
    }
    node.servers.borrow_mut().dialled(&stream_id, to, result.is_ok(), Instant::now());
}

/// Nobody watched for a while: `on_stream_none_reader`'s `close: true` closes the stream.
async fn ask_none_reader(node: Rc<Node>, stream_id: String) {
    let Some((app, name)) = node.servers.borrow().get(&stream_id).map(|s| (s.app.clone(), s.name.clone())) else { return };
    let answer = node.hooks.ask("on_stream_none_reader", zlm::stream_ref(&app, &name, "rtmp")).await;
    let close = matches!(&answer, Some(Ok(a)) if a.get("close").and_then(Value::as_bool) == Some(true));
    if close {
        node.close_server(&stream_id, "no viewer (on_stream_none_reader)").await;
    } else {
        node.servers.borrow_mut().none_reader_answered(&stream_id, Instant::now());
    }
}
