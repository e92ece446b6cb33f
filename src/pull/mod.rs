//! Pull proxies (拉流代理): cameras, encoders and servers that speak RTSP, RTMP, HTTP-FLV or
//! HLS, pulled into streams that play, record and cascade like any other. The list lives on
//! the control executor (API, `data_dir/proxies.json`, supervision); the clients run on one
//! thread of their own with a small tokio runtime (retina needs one), never on an executor;
//! each writes its frames to its stream's socket on the owning media shard
//! (`shard::pull_feed`).

pub mod flv;
pub mod hls;
pub mod http;
pub mod onvif;
mod onvif_api;
pub mod rtmp;
pub mod rtsp;
pub mod session;
pub mod tls;

use crate::auth::Scope;
use crate::shard::Shard;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Proxies at once (each is a client connection and a stream).
pub const PROXIES_MAX: usize = 1000;
/// Commands queued to the pull thread.
const COMMANDS_MAX: usize = 256;
/// How often the control looks for proxies to (re)start.
pub const SUPERVISE_INTERVAL: Duration = Duration::from_secs(1);
/// An on-demand proxy's client stops after its stream had no viewer this long, unless the
/// proxy says (`idle_s`, at most `ON_DEMAND_IDLE_S_MAX`).
pub const ON_DEMAND_IDLE_S_DEFAULT: u64 = 30;
pub const ON_DEMAND_IDLE_S_MAX: u64 = 3600;
/// The longest URL taken.
pub const URL_BYTES_MAX: usize = 1024;
const FILE: &str = "proxies.json";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Tcp,
    Udp,
}

impl Transport {
    /// As the API and the stream's info name it.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }
}

/// When a proxy pulls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// For as long as it exists.
    #[default]
    Always,
    /// While its stream has viewers (FLV, WebRTC, live fMP4/TS, HLS, RTP senders), and
    /// `idle_s` after the last: its stream stays open meanwhile, so a viewer's request
    /// finds it and waits for the first keyframe.
    OnDemand,
}

/// A proxy as the API takes it and `proxies.json` keeps it (its password included: the file is
/// owner-only; the API and logs show it redacted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub transport: Transport,
    #[serde(default)]
    pub mode: Mode,
    /// On demand: seconds without a viewer before the source is closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_s: Option<u64>,
    /// Made from an ONVIF camera's profile: how to reach it again (PTZ, presets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onvif: Option<OnvifLink>,
    /// A GB/T 28181 channel id (20 digits): the proxy is then a channel of this platform that
    /// cascade shares upward like a device's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<String>,
}

/// The ONVIF camera a proxy's stream comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnvifLink {
    pub device_url: String,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub password: String,
    /// The profile whose stream it pulls (PTZ calls name it).
    pub profile: String,
    /// Where PTZ calls go; None: the profile cannot move.
    pub ptz_url: Option<String>,
}

impl ProxyConfig {
    fn idle(&self) -> Duration {
        Duration::from_secs(self.idle_s.unwrap_or(ON_DEMAND_IDLE_S_DEFAULT))
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Its stream is being opened.
    #[default]
    Starting,
    Connecting,
    Playing,
    /// The source failed; dialled again after `retry_in_ms`.
    Retrying,
    /// The source answered 401: wrong user or password (dialled again, slowly).
    Unauthorized,
    /// Its stream closed; the control starts it again.
    Stopped,
    /// On demand: its stream is open, nobody watches, the source is not dialled.
    Idle,
}

/// What a proxy is doing, written by its client on the pull thread, read by the API.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PullState {
    pub status: Status,
    pub last_error: Option<String>,
    pub retry_in_ms: Option<u64>,
    pub connects: u64,
    pub failures: u64,
    pub frames: u64,
    pub dropped_frames: u64,
    pub video: Option<String>,
    pub audio: Option<String>,
}

pub(crate) fn set(state: &Arc<Mutex<PullState>>, f: impl FnOnce(&mut PullState)) {
    // A client that panicked holding the lock is gone; its state is still worth showing.
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    f(&mut s);
}

/// The URL with its password replaced (for the API and logs).
pub fn redacted(url: &url::Url) -> String {
    let mut u = url.clone();
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    u.to_string()
}

fn redacted_text(url: &str) -> String {
    url::Url::parse(url).map_or_else(|_| "(unparsable)".into(), |u| redacted(&u))
}

/// The stream a proxy feeds: `proxy/{name}`, its id from the name.
pub fn stream_ssrc(name: &str) -> u32 {
    crate::proto::ssrc::named_ssrc(&format!("proxy/{name}"))
}

enum Command {
    Start { name: String, url: url::Url, transport: Transport, sink: OwnedFd, state: Arc<Mutex<PullState>> },
    Stop { name: String },
    /// Other network work for the control (ONVIF): run to its end, bounded by its own timeouts.
    Task(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>),
}

/// The thread the RTSP clients run on.
struct PullThread {
    tx: tokio::sync::mpsc::Sender<Command>,
}

impl PullThread {
    fn start() -> std::io::Result<PullThread> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Command>(COMMANDS_MAX);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        std::thread::Builder::new().name("gmv-pull".into()).spawn(move || {
            runtime.block_on(async move {
                let mut tasks: std::collections::HashMap<String, tokio::task::AbortHandle> = Default::default();
                while let Some(cmd) = rx.recv().await {
                    match cmd {
                        Command::Start { name, url, transport, sink, state } => {
                            let std_sink = std::os::unix::net::UnixStream::from(sink);
                            let sink = match std_sink.set_nonblocking(true).and_then(|()| tokio::net::UnixStream::from_std(std_sink)) {
                                Ok(s) => s,
                                Err(error) => {
                                    tracing::error!(proxy = name, %error, "pull: stream socket unusable");
                                    continue;
                                }
                            };
                            let task = tokio::spawn(session::run(url, transport, sink, state));
                            if let Some(old) = tasks.insert(name, task.abort_handle()) {
                                old.abort();
                            }
                        }
                        Command::Stop { name } => {
                            if let Some(t) = tasks.remove(&name) {
                                t.abort();
                            }
                        }
                        Command::Task(work) => {
                            tokio::spawn(work);
                        }
                    }
                    tasks.retain(|_, t| !t.is_finished());
                }
            });
        })?;
        Ok(PullThread { tx })
    }
}

struct Entry {
    config: ProxyConfig,
    state: Arc<Mutex<PullState>>,
    /// Its stream is being opened or is open (not to be opened again).
    running: bool,
    /// On demand: the stream's socket end, kept while no client runs.
    held: Option<OwnedFd>,
    /// On demand, with a client running: since when its stream has had no viewer.
    unwatched_since: Option<std::time::Instant>,
    /// Its camera's PTZ calls one at a time, in the order they came (a stop never overtakes
    /// the move it ends).
    ptz_turn: Rc<glommio::sync::Semaphore>,
}

impl Entry {
    fn new(config: ProxyConfig, running: bool) -> Entry {
        Entry { config, state: Default::default(), running, held: None, unwatched_since: None, ptz_turn: Rc::new(glommio::sync::Semaphore::new(1)) }
    }
}

/// The control executor's proxies.
pub struct Proxies {
    shard: Rc<Shard>,
    entries: RefCell<BTreeMap<String, Entry>>,
    thread: PullThread,
    /// ONVIF conversations under way (`onvif_api::ONVIF_CALLS_MAX` at most).
    onvif_calls: std::cell::Cell<usize>,
    /// Told the proxies with a channel id (id, name, stream SSRC, playing) whenever that list
    /// changes: the control shares them upward.
    on_channels: RefCell<Option<ChannelsTold>>,
    /// What it was told last.
    channels_told: RefCell<Vec<LocalChannel>>,
}

/// A proxy as a channel of this platform: (GB channel id, name, stream SSRC, playing).
pub type LocalChannel = (String, String, u32, bool);
/// Who hears the list of proxies that are channels (the control).
pub type ChannelsTold = Box<dyn Fn(Vec<LocalChannel>)>;

/// Why a proxy is refused.
fn check(config: &ProxyConfig) -> Result<url::Url, String> {
    if !Scope::valid_name(&config.name) {
        return Err("name is letters, digits, '_' and '-' (at most 64)".into());
    }
    let url = check_url(&config.url, config.transport)?;
    if config.channel_id.as_deref().is_some_and(|id| id.len() != 20 || !id.bytes().all(|b| b.is_ascii_digit())) {
        return Err("channel_id is a GB/T 28181 id of 20 digits".into());
    }
    if config.idle_s.is_some_and(|s| !(1..=ON_DEMAND_IDLE_S_MAX).contains(&s)) {
        return Err(format!("idle_s is 1..={ON_DEMAND_IDLE_S_MAX}"));
    }
    Ok(url)
}

/// Why a source URL is not pulled (with this transport), or the URL.
pub fn check_url(text: &str, transport: Transport) -> Result<url::Url, String> {
    if text.len() > URL_BYTES_MAX {
        return Err(format!("url is longer than {URL_BYTES_MAX} bytes"));
    }
    let url = url::Url::parse(text).map_err(|e| format!("url: {e}"))?;
    let Some(kind) = session::Kind::of(&url) else {
        return Err(format!("url scheme {}:// is not pulled (rtsp://, rtsps://, rtmp://, http://….flv, http://….m3u8, https://….flv and https://….m3u8 are)", url.scheme()));
    };
    if url.host_str().is_none_or(str::is_empty) {
        return Err("url has no host".into());
    }
    if kind != session::Kind::Rtsp && transport == Transport::Udp {
        return Err("transport udp is for rtsp:// only (RTMP and HTTP are TCP)".into());
    }
    if kind == session::Kind::Rtmp && rtmp::app_and_key(&url).is_none() {
        return Err("an rtmp:// url is rtmp://host[:port]/app/stream".into());
    }
    Ok(url)
}

/// A PUT's `"onvif": {"user"?, "password"?}`: the camera's credentials for PTZ changed; when
/// the PUT sends no new URL, the stream URL's too (the camera has one password), if it had the
/// same user.
fn change_onvif_credentials(config: &mut ProxyConfig, change: &Value, url_given: bool) -> Result<(), String> {
    let Some(link) = config.onvif.as_mut() else { return Err("this proxy was not made from an ONVIF camera".into()) };
    let Some(o) = change.as_object().filter(|o| o.keys().all(|k| k == "user" || k == "password")) else {
        return Err("onvif is {\"user\"?, \"password\"?}".into());
    };
    let text = |k: &str| o.get(k).map(|v| v.as_str().filter(|s| s.len() <= 128).map(str::to_string).ok_or(format!("onvif.{k} is text of at most 128 bytes")));
    let (user, password) = (text("user").transpose()?, text("password").transpose()?);
    let old_user = link.user.clone();
    if let Some(u) = user {
        link.user = u;
    }
    if let Some(p) = password {
        link.password = p;
    }
    if !url_given
        && let Ok(mut url) = url::Url::parse(&config.url)
        && !old_user.is_empty()
        && url.username() == old_user
    {
        let _ = url.set_username(&link.user);
        let _ = url.set_password(Some(&link.password));
        config.url = url.to_string();
    }
    Ok(())
}

/// A 400 of the proxy and ONVIF calls, saying why.
fn bad_request(message: impl Into<String>) -> (u16, Value) {
    (400, json!({ "code": "bad_request", "message": message.into() }))
}

/// Another proxy with `config`'s channel id, by name.
fn channel_taken(entries: &BTreeMap<String, Entry>, config: &ProxyConfig) -> Option<String> {
    let id = config.channel_id.as_ref()?;
    entries.values().find(|e| e.config.name != config.name && e.config.channel_id.as_ref() == Some(id)).map(|e| e.config.name.clone())
}

/// A changed URL whose password is still the redacted `***` the API showed keeps the old
/// password (a form filled from `GET` sends it back as it got it).
fn keep_password(new: &str, old: &str) -> String {
    let (Ok(mut n), Ok(o)) = (url::Url::parse(new), url::Url::parse(old)) else { return new.to_string() };
    match (n.password(), o.password()) {
        (Some("***"), Some(password)) if n.username() == o.username() => {
            let _ = n.set_password(Some(password));
            n.to_string()
        }
        _ => new.to_string(),
    }
}

/// A client pulled for someone else than the proxy list (the node API's `addStreamProxy`):
/// its name on the pull thread (`node:` + the stream name: never a proxy's name, which has no
/// `:`), its stream's SSRC.
pub struct Pulled {
    pub client: String,
    pub ssrc: u32,
    pub state: Arc<Mutex<PullState>>,
}

impl Proxies {
    /// Loads `data_dir/proxies.json`, starts the pull thread and the supervision.
    pub async fn start(shard: Rc<Shard>) -> std::io::Result<Rc<Proxies>> {
        let file = shard.config.data_dir.join(FILE);
        let (list, error) = glommio::executor()
            .spawn_blocking(move || crate::control::json_file::load::<Vec<ProxyConfig>>(&file, crate::shard::unix_s()))
            .await;
        if let Some(error) = error {
            tracing::error!(error, "pull proxies file unreadable; starting with none");
        }
        // https:// sources: the authorities they are checked against.
        if let Err(error) = tls::init(shard.config.pull.ca_file.as_deref()) {
            tracing::error!(error, "pull: https:// sources will not connect");
        }
        let proxies = Rc::new(Proxies { shard, entries: Default::default(), thread: PullThread::start()?, onvif_calls: Default::default(), on_channels: Default::default(), channels_told: Default::default() });
        for config in list.into_iter().take(PROXIES_MAX) {
            if check(&config).is_ok() {
                proxies.entries.borrow_mut().insert(config.name.clone(), Entry::new(config, false));
            }
        }
        tracing::info!(proxies = proxies.entries.borrow().len(), "pull proxies loaded");
        let weak = Rc::downgrade(&proxies);
        glommio::spawn_local(async move {
            loop {
                let Some(p) = weak.upgrade() else { return };
                p.supervise().await;
                drop(p);
                glommio::timer::sleep(SUPERVISE_INTERVAL).await;
            }
        })
        .detach();
        Ok(proxies)
    }

    /// Has `tell` hear the proxies with a channel id now and whenever they change.
    pub fn on_channels(&self, tell: ChannelsTold) {
        self.on_channels.replace(Some(tell));
        self.channels_told.borrow_mut().clear();
        self.tell_channels(true);
    }

    /// Tells the proxies with a channel id when they changed (`always`: even if not).
    fn tell_channels(&self, always: bool) {
        let now: Vec<LocalChannel> = self
            .entries
            .borrow()
            .values()
            .filter_map(|e| {
                let id = e.config.channel_id.clone()?;
                let playing = e.state.lock().map(|s| s.status == Status::Playing).unwrap_or(false);
                Some((id, e.config.name.clone(), stream_ssrc(&e.config.name), playing))
            })
            .collect();
        if !always && *self.channels_told.borrow() == now {
            return;
        }
        if let Some(tell) = &*self.on_channels.borrow() {
            tell(now.clone());
        }
        *self.channels_told.borrow_mut() = now;
    }

    /// Starts the proxies that are not running (new, or their stream closed), and on-demand
    /// clients as their streams gain and lose viewers.
    async fn supervise(&self) {
        self.tell_channels(false);
        let due: Vec<String> = self
            .entries
            .borrow()
            .iter()
            .filter(|(_, e)| !e.running || e.state.lock().map(|s| s.status == Status::Stopped).unwrap_or(false))
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            self.start_one(&name).await;
        }
        let on_demand: Vec<(String, Duration)> = self
            .entries
            .borrow()
            .iter()
            .filter(|(_, e)| e.running && e.config.mode == Mode::OnDemand)
            .map(|(n, e)| (n.clone(), e.config.idle()))
            .collect();
        for (name, idle) in on_demand {
            let watched = self
                .shard
                .stream_info(stream_ssrc(&name))
                .await
                // A recording (a record plan's, or asked by the API) watches too.
                .map(|i| i.subscribers + i.senders > 0 || i.record_on || i.hls_request_ms_ago.is_some_and(|ms| ms < idle.as_millis() as u64));
            self.on_demand(&name, watched);
        }
    }

    /// An on-demand proxy whose stream has viewers (`Some(true)`), none, or is gone (`None`).
    fn on_demand(&self, name: &str, watched: Option<bool>) {
        let mut entries = self.entries.borrow_mut();
        let Some(e) = entries.get_mut(name) else { return };
        match (watched, e.held.is_some()) {
            // The stream closed (the API): opened again at the next look.
            (None, _) => {
                e.running = false;
                e.held = None;
            }
            (Some(true), true) => {
                let Some(sink) = e.held.take() else { return };
                let Ok(url) = check(&e.config) else { return };
                tracing::info!(proxy = name, "on-demand proxy: a viewer came; dialling the source");
                let cmd = Command::Start { name: name.to_string(), url, transport: e.config.transport, sink, state: e.state.clone() };
                if self.thread.tx.try_send(cmd).is_err() {
                    // Its socket went with the command: the stream closes and is opened again.
                    e.running = false;
                }
                e.unwatched_since = None;
            }
            (Some(true), false) => e.unwatched_since = None,
            (Some(false), true) => {}
            (Some(false), false) => {
                let since = *e.unwatched_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() >= e.config.idle() {
                    tracing::info!(proxy = name, idle_s = e.config.idle().as_secs(), "on-demand proxy: nobody watches; source closed");
                    // Its socket closes with the client, and the stream with it; the next looks
                    // open the stream again, idle.
                    let _ = self.thread.tx.try_send(Command::Stop { name: name.to_string() });
                    e.running = false;
                    e.unwatched_since = None;
                    set(&e.state, |s| s.status = Status::Idle);
                }
            }
        }
    }

    async fn start_one(&self, name: &str) {
        let (config, state) = match self.entries.borrow_mut().get_mut(name) {
            Some(e) => {
                e.running = true;
                (e.config.clone(), e.state.clone())
            }
            None => return,
        };
        set(&state, |s| s.status = Status::Starting);
        let Ok(url) = check(&config) else { return };
        let ssrc = stream_ssrc(name);
        match self.open_stream(&format!("proxy/{name}"), &url, config.transport).await {
            Ok((_, sink)) if config.mode == Mode::OnDemand => {
                if let Some(e) = self.entries.borrow_mut().get_mut(name) {
                    e.held = Some(sink);
                    e.unwatched_since = None;
                }
                set(&state, |s| s.status = Status::Idle);
            }
            Ok((_, sink)) => {
                let cmd = Command::Start { name: name.to_string(), url, transport: config.transport, sink, state: state.clone() };
                if self.thread.tx.try_send(cmd).is_err() {
                    tracing::warn!(proxy = name, "pull thread busy; proxy started at the next look");
                    self.shard.close_stream(ssrc).await;
                    self.not_running(name);
                }
            }
            Err(e) => {
                // The stream of a stopped proxy may still be closing: tried again at the next look.
                set(&state, |s| s.last_error = Some(format!("stream not opened: {e}")));
                self.not_running(name);
            }
        }
    }

    fn not_running(&self, name: &str) {
        if let Some(e) = self.entries.borrow_mut().get_mut(name) {
            e.running = false;
        }
    }

    /// Stops a proxy's client (its stream closes with its socket).
    fn stop_one(&self, name: &str) {
        let _ = self.thread.tx.try_send(Command::Stop { name: name.to_string() });
    }

    /// Opens the stream named `stream_name` (its SSRC from the name) for a source at `url`: its
    /// info and the socket end the client writes frames to.
    async fn open_stream(&self, stream_name: &str, url: &url::Url, transport: Transport) -> Result<(crate::shard::msg::StreamInfo, OwnedFd), crate::shard::msg::OpenError> {
        let ssrc = crate::proto::ssrc::named_ssrc(stream_name);
        let spec = crate::shard::msg::StreamSpec { ssrc, name: Some(stream_name.to_string()), ..Default::default() };
        let format = session::Kind::of(url).map_or("rtsp", session::Kind::format);
        self.shard.open_pulled(spec, transport.name(), format).await
    }

    /// Opens stream `stream_name` (e.g. `live/cam1`) and pulls `url` into it, outside the
    /// proxy list: not saved, not in `/api/proxies`; `release` ends it.
    pub async fn pull_for(&self, stream_name: &str, url: url::Url, transport: Transport) -> Result<Pulled, String> {
        let ssrc = crate::proto::ssrc::named_ssrc(stream_name);
        let (_, sink) = self.open_stream(stream_name, &url, transport).await.map_err(|e| format!("stream not opened: {e}"))?;
        let state: Arc<Mutex<PullState>> = Default::default();
        let client = format!("node:{stream_name}");
        tracing::info!(stream = stream_name, ssrc, url = redacted(&url), "pulling for the node API");
        let cmd = Command::Start { name: client.clone(), url, transport, sink, state: state.clone() };
        if self.thread.tx.try_send(cmd).is_err() {
            self.shard.close_stream(ssrc).await;
            return Err("the pull thread is busy".into());
        }
        Ok(Pulled { client, ssrc, state })
    }

    /// Runs `work` on the pull thread (where the network clients and their runtime are) and
    /// gives its result; None when the thread's queue is full or the thread is gone.
    pub async fn on_pull_thread<T: Send + 'static>(&self, work: impl std::future::Future<Output = T> + Send + 'static) -> Option<T> {
        let (tx, rx) = futures_channel::oneshot::channel();
        let task = Box::pin(async move {
            let _ = tx.send(work.await);
        });
        self.thread.tx.try_send(Command::Task(task)).ok()?;
        rx.await.ok()
    }

    /// Ends what `pull_for` started: the client stops and the stream closes.
    pub async fn release(&self, pulled: &Pulled) {
        let _ = self.thread.tx.try_send(Command::Stop { name: pulled.client.clone() });
        self.shard.close_stream(pulled.ssrc).await;
    }

    async fn save(&self) -> Result<(), String> {
        let list: Vec<ProxyConfig> = self.entries.borrow().values().map(|e| e.config.clone()).collect();
        let file = self.shard.config.data_dir.join(FILE);
        glommio::executor().spawn_blocking(move || crate::control::json_file::save(&file, &list)).await.map_err(|e| e.to_string())
    }

    fn view(&self, e: &Entry) -> Value {
        let state = e.state.lock().map(|s| s.clone()).unwrap_or_default();
        json!({
            "name": e.config.name,
            "url": redacted_text(&e.config.url),
            "transport": e.config.transport,
            "mode": e.config.mode,
            "idle_s": e.config.idle().as_secs(),
            "stream_id": crate::proto::ssrc::stream_id(stream_ssrc(&e.config.name)),
            "state": state,
            "channel_id": e.config.channel_id,
            "onvif": e.config.onvif.as_ref().map(|o| json!({ "device_url": o.device_url, "user": o.user, "profile": o.profile, "ptz": o.ptz_url.is_some() })),
        })
    }

    /// A new proxy: checked, kept, started; 201 with its view.
    async fn add(&self, config: ProxyConfig) -> (u16, Value) {
        if let Err(m) = check(&config) {
            return bad_request(m);
        }
        {
            let entries = self.entries.borrow();
            if entries.contains_key(&config.name) {
                return (409, json!({ "code": "exists", "message": "a proxy with this name exists" }));
            }
            if entries.len() >= PROXIES_MAX {
                return (409, json!({ "code": "too_many", "message": format!("at most {PROXIES_MAX} proxies") }));
            }
            if let Some(other) = channel_taken(&entries, &config) {
                return (409, json!({ "code": "channel_exists", "message": format!("proxy {other} has this channel_id") }));
            }
        }
        let name = config.name.clone();
        tracing::info!(proxy = name, url = redacted_text(&config.url), "pull proxy added");
        self.entries.borrow_mut().insert(name.clone(), Entry::new(config, false));
        if let Err(e) = self.save().await {
            tracing::error!(error = e, "pull proxies not saved");
        }
        self.start_one(&name).await;
        let view = self.entries.borrow().get(&name).map(|e| self.view(e)).unwrap_or_default();
        (201, view)
    }

    /// `/api/proxies[/{name}]`.
    pub async fn route(&self, method: &str, segments: &[&str], body: &[u8]) -> (u16, Value) {
        let bad = bad_request;
        let not_found = || (404, json!({ "code": "not_found", "message": "no such proxy" }));
        match (method, segments) {
            ("GET", ["api", "proxies"]) => {
                let list: Vec<Value> = self.entries.borrow().values().map(|e| self.view(e)).collect();
                (200, json!({ "proxies": list, "total": list.len(), "max": PROXIES_MAX }))
            }
            ("GET", ["api", "proxies", name]) => self.entries.borrow().get(*name).map_or_else(not_found, |e| (200, self.view(e))),
            ("POST", ["api", "proxies"]) => {
                let config: ProxyConfig = match serde_json::from_slice(body) {
                    Ok(c) => c,
                    Err(e) => return bad(format!("body: {e}")),
                };
                self.add(config).await
            }
            (_, ["api", "onvif", ..] | ["api", "proxies", _, "ptz" | "presets", ..]) => self.onvif_route(method, segments, body).await,
            ("PUT", ["api", "proxies", name]) => {
                let Some(mut config) = self.entries.borrow().get(*name).map(|e| e.config.clone()) else { return not_found() };
                let change: Value = match serde_json::from_slice(body) {
                    Ok(v) => v,
                    Err(e) => return bad(format!("body: {e}")),
                };
                if let Some(url) = change.get("url").and_then(Value::as_str) {
                    config.url = keep_password(url, &config.url);
                }
                if let Some(m) = change.get("mode") {
                    match serde_json::from_value(m.clone()) {
                        Ok(m) => config.mode = m,
                        Err(_) => return bad("mode is always or on_demand".into()),
                    }
                }
                match change.get("idle_s") {
                    None => {}
                    Some(Value::Null) => config.idle_s = None,
                    Some(i) => match i.as_u64() {
                        Some(i) => config.idle_s = Some(i),
                        None => return bad(format!("idle_s is 1..={ON_DEMAND_IDLE_S_MAX}")),
                    },
                }
                if let Some(t) = change.get("transport") {
                    match serde_json::from_value(t.clone()) {
                        Ok(t) => config.transport = t,
                        Err(_) => return bad("transport is tcp or udp".into()),
                    }
                }
                if let Some(o) = change.get("onvif")
                    && let Err(m) = change_onvif_credentials(&mut config, o, change.get("url").is_some())
                {
                    return bad(m);
                }
                match change.get("channel_id") {
                    None => {}
                    Some(Value::Null) => config.channel_id = None,
                    Some(Value::String(id)) => config.channel_id = Some(id.clone()),
                    Some(_) => return bad("channel_id is a GB/T 28181 id of 20 digits, or null".into()),
                }
                if let Err(m) = check(&config) {
                    return bad(m);
                }
                if let Some(other) = channel_taken(&self.entries.borrow(), &config) {
                    return (409, json!({ "code": "channel_exists", "message": format!("proxy {other} has this channel_id") }));
                }
                self.stop_one(name);
                self.entries.borrow_mut().insert(name.to_string(), Entry::new(config, true));
                if let Err(e) = self.save().await {
                    tracing::error!(error = e, "pull proxies not saved");
                }
                // The old client's stream closes with its socket; the next look starts anew.
                self.shard.close_stream(stream_ssrc(name)).await;
                self.not_running(name);
                let view = self.entries.borrow().get(*name).map(|e| self.view(e)).unwrap_or_default();
                (200, view)
            }
            ("DELETE", ["api", "proxies", name]) => {
                if self.entries.borrow_mut().remove(*name).is_none() {
                    return not_found();
                }
                self.stop_one(name);
                self.shard.close_stream(stream_ssrc(name)).await;
                if let Err(e) = self.save().await {
                    tracing::error!(error = e, "pull proxies not saved");
                }
                tracing::info!(proxy = *name, "pull proxy deleted");
                (200, json!({ "deleted": name }))
            }
            _ => (404, json!({ "code": "not_found", "message": "no such API" })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> ProxyConfig {
        ProxyConfig { name: "cam1".into(), url: url.into(), transport: Transport::Tcp, mode: Mode::Always, idle_s: None, onvif: None, channel_id: None }
    }

    #[test]
    fn new_onvif_credentials_reach_the_stream_url_too() {
        let link = OnvifLink { device_url: "http://10.0.0.8/onvif/device_service".into(), user: "admin".into(), password: "old".into(), profile: "main".into(), ptz_url: None };
        let mut c = ProxyConfig { onvif: Some(link), ..config("rtsp://admin:old@10.0.0.8:554/h264") };
        change_onvif_credentials(&mut c, &json!({ "password": "n3w!" }), false).unwrap();
        assert_eq!(c.onvif.as_ref().unwrap().password, "n3w!");
        assert_eq!(c.url, "rtsp://admin:n3w!@10.0.0.8:554/h264");
        assert!(change_onvif_credentials(&mut c, &json!({ "pass": "x" }), false).is_err());
        assert!(change_onvif_credentials(&mut config("rtsp://h/x"), &json!({ "password": "x" }), false).is_err(), "not an ONVIF proxy");
    }

    #[test]
    fn a_redacted_password_sent_back_keeps_the_old_one() {
        let old = "rtsp://admin:s3cret@10.0.0.8:554/h264";
        assert_eq!(keep_password("rtsp://admin:***@10.0.0.9:554/h264", old), "rtsp://admin:s3cret@10.0.0.9:554/h264");
        assert_eq!(keep_password("rtsp://admin:new@10.0.0.8:554/h264", old), "rtsp://admin:new@10.0.0.8:554/h264");
        // Another user: the old password is not theirs.
        assert_eq!(keep_password("rtsp://guest:***@10.0.0.8:554/h264", old), "rtsp://guest:***@10.0.0.8:554/h264");
    }

    #[test]
    fn only_pulled_schemes_with_a_host_are_taken() {
        assert!(check(&config("rtsp://admin:x@10.0.0.8:554/h264")).is_ok());
        assert!(check(&config("rtmp://h/live/x?token=1")).is_ok());
        assert!(check(&config("http://h/live/x.flv")).is_ok());
        assert!(check(&config("http://h/live/x/index.m3u8")).is_ok());
        assert!(check(&config("https://h/live/x.flv")).is_ok());
        assert!(check(&config("rtsps://h/x")).is_ok());
        for url in ["rtmp://h/nokey", "rtmps://h/live/x", "file:///etc/passwd", "rtsp:///nohost", "not a url", &format!("rtsp://h/{}", "x".repeat(URL_BYTES_MAX))] {
            assert!(check(&config(url)).is_err(), "{url}");
        }
        assert!(check(&ProxyConfig { name: "a/b".into(), ..config("rtsp://h/x") }).is_err());
    }

    #[test]
    fn passwords_never_show() {
        assert_eq!(redacted_text("rtsp://admin:secret@10.0.0.8/x"), "rtsp://admin:***@10.0.0.8/x");
        assert_eq!(redacted_text("rtsp://10.0.0.8/x"), "rtsp://10.0.0.8/x");
    }
}
