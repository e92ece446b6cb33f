//! Wires the engine: one pinned executor per media shard plus the control executor, the mesh
//! of bounded channels between them, HTTP on every executor, the SIP driver on the control
//! executor. The one place that knows every layer (http, control -> shard -> proto).

use crate::config::Config;
use crate::http::Front;
use crate::shard::msg::ShardMsg;
use crate::shard::{CONTROL, MESH_QUEUE_MSGS_MAX, Shard, StartError, memlock_limit_bytes, plan_io_memory};
use glommio::channels::shared_channel::{self, SharedReceiver, SharedSender};
use glommio::{LocalExecutorBuilder, Placement};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

/// Reports an executor that unwinds (a panic in any of its tasks) to the main thread, which
/// then ends the process with an error: a half-alive engine (REST or SIP silent) is worse
/// than a restart by the supervisor.
pub struct ExecutorGuard {
    pub name: String,
    pub exit: Sender<Exit>,
}

impl Drop for ExecutorGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.exit.send(Exit::Fatal(format!("executor {} panicked; exiting so a supervisor can restart gmv", self.name)));
        }
    }
}

/// Logs every panic with its thread and location before it unwinds (the default hook prints
/// to stderr without the log's fields).
fn log_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current().name().unwrap_or("unnamed").to_string();
        tracing::error!(thread, %info, "panic");
        default(info);
    }));
}

/// Raises the open-files soft limit to the hard limit: every viewer, device connection and
/// stream port is a descriptor, and the common soft limit of 1,024 is far too low.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// A graceful stop (SIGTERM, SIGINT) takes at most this long before the process exits anyway.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often executors look at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(50);

/// Set by the signal thread; every executor watches it.
static STOPPING: AtomicBool = AtomicBool::new(false);
/// SIGHUPs taken so far; the control executor reloads when it moves.
static RELOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Why the main thread stops waiting.
#[derive(Debug)]
pub enum Exit {
    Fatal(String),
    /// SIGTERM/SIGINT: executors stop gracefully, then the process exits 0.
    Stop,
}

fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks TERM/INT/HUP in this thread and the threads it starts from now on. `main` calls it
/// before starting any thread of its own (the demo's encoder): a thread that left them open
/// would take a SIGTERM with its default action, killing the process (exit 143) instead of the
/// graceful stop.
pub fn block_stop_signals() -> std::io::Result<()> {
    let set = stop_signals();
    // SAFETY: pthread_sigmask with a set we own; signals stay blocked for every thread after.
    if unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Blocks TERM/INT/HUP in this thread and the threads it starts, and takes them on one thread
/// of their own: TERM and INT start a graceful stop; HUP (which would otherwise kill the
/// process without a word) asks the control executor to reload keys, secrets and passwords.
fn handle_signals(exit: Sender<Exit>) -> std::io::Result<()> {
    block_stop_signals()?;
    let set = stop_signals();
    std::thread::Builder::new().name("gmv-signals".into()).spawn(move || {
        loop {
            let mut signal = 0;
            // SAFETY: sigwait on the set blocked above, writing into a local.
            if unsafe { libc::sigwait(&set, &mut signal) } != 0 {
                continue;
            }
            if signal == libc::SIGHUP {
                tracing::info!("SIGHUP: reloading API keys, play secrets and SIP passwords");
                RELOADS.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            tracing::info!(signal, "stopping: ending sessions, closing recordings, saving the registry");
            STOPPING.store(true, Ordering::SeqCst);
            let _ = exit.send(Exit::Stop);
            return;
        }
    })?;
    Ok(())
}

/// Resolves once a stop was asked for.
async fn stop_requested() {
    while !STOPPING.load(Ordering::SeqCst) {
        glommio::timer::sleep(STOP_POLL).await;
    }
}

/// On the control executor, forever: after each SIGHUP, reads the config file again (on a
/// blocking thread) and puts its keys, play secrets and SIP passwords in force everywhere,
/// logging what changed. Anything else that changed needs a restart, and the log says so.
async fn reload_loop(shard: Rc<Shard>, control: Option<Rc<crate::control::Control>>, config_path: Option<std::path::PathBuf>) {
    let mut seen = RELOADS.load(Ordering::SeqCst);
    // What a reload does not apply stays as started: `shard.config` is what to compare with.
    let started = shard.config.clone();
    loop {
        glommio::timer::sleep(STOP_POLL).await;
        let now = RELOADS.load(Ordering::SeqCst);
        if now == seen {
            continue;
        }
        seen = now;
        let path = config_path.clone();
        let data_dir = shard.config.data_dir.clone();
        let loaded = glommio::executor()
            .spawn_blocking(move || {
                let config = Config::load(path.as_deref()).map_err(|e| e.to_string())?;
                let (secrets, _) = crate::auth::load(&config.http, &data_dir)?;
                let tls = config.http.tls.as_ref().map(crate::http::tls::load).transpose()?;
                Ok::<_, String>((config, secrets, tls))
            })
            .await;
        let (config, secrets, tls) = match loaded {
            Ok(v) => v,
            Err(error) => {
                tracing::error!(%error, "reload failed; still running with the previous keys, secrets and passwords");
                continue;
            }
        };
        let mut changes = crate::auth::describe_change(&shard.secrets(), &secrets);
        if let Some(control) = &control {
            changes.extend(control.set_passwords(&config.sip.password, &config.sip.device_passwords));
        }
        // The certificate is read again; HTTPS stays on the address it started on.
        let tls = match (tls, &started.http.tls) {
            (Some(t), Some(_)) => {
                changes.push("https certificate and key read again".to_string());
                Some(t)
            }
            _ => shard.tls.borrow().clone(),
        };
        shard.publish_reload(Arc::new(secrets), tls).await;
        let needs_restart = restart_only_changes(&started, &config);
        if changes.is_empty() {
            tracing::info!("reload: keys, play secrets and SIP passwords unchanged");
        }
        for change in &changes {
            tracing::info!(change = %change, "reload");
        }
        if !needs_restart.is_empty() {
            tracing::warn!(sections = ?needs_restart, "reload: these settings changed in the file but take effect only after a restart");
        }
        tracing::info!(executors = shard.peers_len(), "reload in force on every executor");
    }
}

/// Top-level config sections that differ in something a reload does not apply.
fn restart_only_changes(started: &Config, loaded: &Config) -> Vec<&'static str> {
    let mut a = started.clone();
    let mut b = loaded.clone();
    for c in [&mut a, &mut b] {
        if let Some(t) = c.http.tls.as_mut() {
            t.cert_file.clear();
            t.key_file.clear();
        }
        c.http.api_keys.clear();
        c.http.play_secrets.clear();
        c.http.play_token_ttl_s = 0;
        c.sip.password.clear();
        c.sip.device_passwords.clear();
    }
    let sections: [(&'static str, bool); 8] = [
        (
            "node_id/shards/io_memory_kib/ring_depth/data_dir",
            (&a.node_id, a.shards, a.io_memory_kib, a.ring_depth, &a.data_dir) != (&b.node_id, b.shards, b.io_memory_kib, b.ring_depth, &b.data_dir),
        ),
        ("http", a.http != b.http),
        ("sip", a.sip != b.sip),
        ("rtp", a.rtp != b.rtp),
        ("media", a.media != b.media),
        ("hls", a.hls != b.hls),
        ("record", a.record != b.record),
        ("streams", a.streams != b.streams),
    ];
    sections.into_iter().filter_map(|(name, changed)| changed.then_some(name)).collect()
}

/// Loads the keys and play secrets (making them on first start) and says in the log where
/// they are; a generated admin key is shown this once.
fn load_secrets(config: &Config) -> Result<crate::auth::Secrets, StartError> {
    let (secrets, loaded) = crate::auth::load(&config.http, &config.data_dir).map_err(StartError::Config)?;
    let listen = config.http.listen;
    let host = if listen.ip().is_unspecified() { format!("127.0.0.1:{}", listen.port()) } else { listen.to_string() };
    let how = match (&loaded.generated_key, &loaded.key_file) {
        (Some((_, path)), _) | (None, Some(path)) => format!("the admin key in {}", path.display()),
        (None, None) => "one of the configured http.api_keys".to_string(),
    };
    tracing::info!(console = %format!("http://{host}/"), sign_in = %how, "web console");
    if let Some((key, path)) = &loaded.generated_key {
        tracing::warn!(
            admin_key = %key,
            file = %path.display(),
            "no http.api_keys configured: generated an admin key (shown this once; it stays in the file, mode 0600). Send it as `Authorization: Bearer KEY`"
        );
    } else if let Some(path) = &loaded.key_file {
        tracing::info!(file = %path.display(), "no http.api_keys configured: the admin key is in this file");
    } else {
        tracing::info!(keys = ?secrets.key_names(), "API keys");
    }
    if let Some(path) = &loaded.generated_secret {
        tracing::info!(file = %path.display(), "no http.play_secrets configured: generated a play-token secret");
    }
    Ok(secrets)
}

/// The lock file in data_dir that one running gmv holds.
pub const INSTANCE_LOCK_FILE: &str = "gmv.lock";

/// Holds `data_dir/gmv.lock` (flock, exclusive) for as long as it lives.
pub struct InstanceLock {
    _file: std::fs::File,
}

/// One gmv per data_dir: a second would share the registry and recordings and, through
/// SO_REUSEPORT, silently split the API and SIP traffic with the first.
pub fn lock_instance(data_dir: &std::path::Path) -> Result<InstanceLock, StartError> {
    use std::os::fd::AsRawFd;
    let fail = |what: String| StartError::AnotherInstance(what);
    std::fs::create_dir_all(data_dir).map_err(|e| fail(format!("cannot create data_dir {}: {e}", data_dir.display())))?;
    let path = data_dir.join(INSTANCE_LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| fail(format!("cannot open {}: {e}", path.display())))?;
    // SAFETY: flock on a descriptor we own; the lock goes with the file.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(fail(format!("another gmv is running with data_dir {} (it holds {})", data_dir.display(), path.display())));
    }
    Ok(InstanceLock { _file: file })
}

/// How long a start waits for its addresses while they are in use. The data_dir lock is held
/// by then, so no gmv of this config is running; but a gmv that just died can hold its sockets
/// a little longer than its process (io_uring releases them in the kernel after the exit), and
/// a supervisor restarting it at once must not fail for that.
pub const ADDRESS_IN_USE_WAIT: Duration = Duration::from_secs(5);
const ADDRESS_IN_USE_POLL: Duration = Duration::from_millis(100);

/// Binds the listen addresses once without SO_REUSEPORT (and lets go): taken by another
/// process, including another gmv, they fail here with a clear error instead of being shared.
pub fn probe_listen_addresses(config: &Config) -> Result<(), StartError> {
    let deadline = Instant::now() + ADDRESS_IN_USE_WAIT;
    let mut said = false;
    loop {
        match try_listen_addresses(config) {
            Err((what, addr, e)) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                if !said {
                    tracing::info!(what, %addr, wait_s = ADDRESS_IN_USE_WAIT.as_secs(), "address in use; waiting for it (a gmv that just stopped may still hold it)");
                    said = true;
                }
                std::thread::sleep(ADDRESS_IN_USE_POLL);
            }
            Err((what, addr, e)) => {
                return Err(StartError::AnotherInstance(format!("{what} address {addr} is in use (another gmv, or another service): {e}")));
            }
            Ok(()) => return Ok(()),
        }
    }
}

/// One try at every listen address: the first that cannot be bound.
fn try_listen_addresses(config: &Config) -> Result<(), (&'static str, std::net::SocketAddr, std::io::Error)> {
    let tcp = |what, addr| std::net::TcpListener::bind(addr).map(drop).map_err(|e| (what, addr, e));
    tcp("HTTP", config.http.listen)?;
    if let Some(tls) = &config.http.tls {
        tcp("HTTPS", tls.listen)?;
    }
    if !config.sip.listen.is_empty()
        && let Ok(sip) = config.sip.listen.parse::<std::net::SocketAddr>()
    {
        tcp("SIP (TCP)", sip)?;
        std::net::UdpSocket::bind(sip).map(drop).map_err(|e| ("SIP (UDP)", sip, e))?;
    }
    Ok(())
}

/// Runs the engine until the process is stopped or an executor fails. `config_path` is read
/// again on SIGHUP (None: the embedded default).
pub fn run(config: Config, config_path: Option<std::path::PathBuf>) -> Result<(), StartError> {
    crate::process::mark_started();
    log_panics();
    // What can fail without touching anything comes first: a start that fails writes no file.
    let media_shards = config.shard_count();
    let executors = media_shards + 1;
    let io_memory = plan_io_memory(config.io_memory_kib * 1024, executors, memlock_limit_bytes())?;
    let _instance = lock_instance(&config.data_dir)?;
    probe_listen_addresses(&config)?;
    let secrets = Arc::new(load_secrets(&config)?);
    let tls = config.http.tls.as_ref().map(crate::http::tls::load).transpose().map_err(StartError::Config)?;
    let nofile = raise_nofile_limit();
    let config = Arc::new(config);
    tracing::info!(media_shards, io_memory_kib = io_memory / 1024, ring_depth = config.ring_depth, nofile, "starting executors");

    let mut outgoing: Vec<Vec<Option<SharedSender<ShardMsg>>>> = (0..executors).map(|_| (0..executors).map(|_| None).collect()).collect();
    let mut incoming: Vec<Vec<SharedReceiver<ShardMsg>>> = (0..executors).map(|_| Vec::new()).collect();
    for (from, row) in outgoing.iter_mut().enumerate() {
        for (to, slot) in row.iter_mut().enumerate() {
            if from != to {
                let (tx, rx) = shared_channel::new_bounded(MESH_QUEUE_MSGS_MAX);
                *slot = Some(tx);
                incoming[to].push(rx);
            }
        }
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Executors report fatal errors here; the signal thread a stop; the main thread acts on the first.
    let (exit_tx, exit_rx) = std::sync::mpsc::channel::<Exit>();
    handle_signals(exit_tx.clone()).map_err(|e| StartError::Executor(format!("signal handling: {e}")))?;
    // Each executor reports here when its part of a graceful stop is done.
    let (stopped_tx, stopped_rx) = std::sync::mpsc::channel::<usize>();
    // The single RTP port: one socket per media shard, bound here in shard order (the group's
    // socket i is shard i + 1) before the executors take them.
    let mut single_port: Vec<Option<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)>> = match config.rtp.port {
        0 => (0..executors).map(|_| None).collect(),
        port => {
            let ip = config.rtp.listen_ip;
            let in_use = |e: std::io::Error| StartError::AnotherInstance(format!("rtp.port {port}: {e}"));
            let udp = crate::shard::steer::bind_group(ip, port, media_shards).map_err(in_use)?;
            let tcp = crate::shard::steer::bind_tcp_group(ip, port, media_shards).map_err(in_use)?;
            tracing::info!(port, media_shards, "one RTP port for every stream, steered by SSRC");
            std::iter::once(None).chain(udp.into_iter().zip(tcp).map(Some)).collect()
        }
    };
    // WebRTC: one UDP socket per media shard, bound here so a port in use stops the start.
    let mut webrtc: Vec<Option<std::os::fd::OwnedFd>> = (0..executors).map(|_| None).collect();
    if config.webrtc.enabled {
        for (index, slot) in webrtc.iter_mut().enumerate().skip(1) {
            let addr = config.webrtc.shard_addr(index);
            let sock = std::net::UdpSocket::bind(addr).map_err(|e| StartError::AnotherInstance(format!("webrtc.port: UDP {addr}: {e}")))?;
            *slot = Some(sock.into());
        }
    }
    // RTMP push ingest: one listener, accepted on the control executor.
    let mut rtmp_fd: Option<std::os::fd::OwnedFd> = None;
    if config.rtmp.enabled {
        let addr = config.rtmp.listen;
        let listener = std::net::TcpListener::bind(addr).map_err(|e| StartError::AnotherInstance(format!("rtmp.listen: TCP {addr}: {e}")))?;
        tracing::info!(%addr, port = listener.local_addr().map(|a| a.port()).unwrap_or(0), "RTMP push ingest listening");
        rtmp_fd = Some(listener.into());
    }
    let mut handles = Vec::new();
    for (index, (out, inc)) in outgoing.into_iter().zip(incoming).enumerate() {
        let single_port_fd = single_port[index].take();
        let webrtc_fd = webrtc[index].take();
        let rtmp_fd = if index == CONTROL { rtmp_fd.take() } else { None };
        let placement = if index == CONTROL { Placement::Unbound } else { Placement::Fixed((index - 1) % cpus) };
        let name = if index == CONTROL { "gmv-control".to_string() } else { format!("gmv-shard-{index}") };
        let config = config.clone();
        let secrets = secrets.clone();
        let tls = tls.clone();
        let config_path = config_path.clone();
        let exit_tx = exit_tx.clone();
        let stopped_tx = stopped_tx.clone();
        let guard = ExecutorGuard { name: name.clone(), exit: exit_tx.clone() };
        let handle = LocalExecutorBuilder::new(placement)
            .name(&name)
            .io_memory(io_memory)
            .ring_depth(config.ring_depth)
            .spawn(move || async move {
                let _guard = guard;
                // Connecting waits for the peer executor's side, so connect every end at once.
                let tx_tasks: Vec<_> = out
                    .into_iter()
                    .map(|tx| glommio::spawn_local(async move { if let Some(tx) = tx { Some(tx.connect().await) } else { None } }))
                    .collect();
                let rx_tasks: Vec<_> = inc.into_iter().map(|rx| glommio::spawn_local(rx.connect())).collect();
                let mut peers = Vec::with_capacity(tx_tasks.len());
                for t in tx_tasks {
                    peers.push(t.await);
                }
                let shard = Rc::new(Shard::new(index, media_shards, config, secrets, peers));
                *shard.tls.borrow_mut() = tls;
                if let Some((udp, tcp)) = single_port_fd {
                    use std::os::fd::{FromRawFd, IntoRawFd};
                    // SAFETY: each fd is a bound socket handed to this executor alone.
                    let (udp, tcp) = unsafe {
                        (glommio::net::UdpSocket::from_raw_fd(udp.into_raw_fd()), glommio::net::TcpListener::from_raw_fd(tcp.into_raw_fd()))
                    };
                    glommio::spawn_local(crate::shard::single_port::udp_loop(shard.clone(), udp)).detach();
                    glommio::spawn_local(crate::shard::single_port::tcp_accept_loop(shard.clone(), tcp)).detach();
                }
                if let Some(fd) = webrtc_fd {
                    use std::os::fd::{FromRawFd, IntoRawFd};
                    // SAFETY: the fd is a bound UDP socket handed to this executor alone.
                    let udp = unsafe { glommio::net::UdpSocket::from_raw_fd(fd.into_raw_fd()) };
                    match crate::shard::webrtc::WebRtc::start(udp) {
                        Ok(w) => {
                            tracing::info!(shard = index, port = w.port(), "WebRTC (WHEP) socket");
                            let _ = shard.webrtc.set(w);
                        }
                        Err(error) => tracing::error!(shard = index, %error, "WebRTC socket unusable; WHEP off on this shard"),
                    }
                }
                if let Some(fd) = rtmp_fd {
                    use std::os::fd::{FromRawFd, IntoRawFd};
                    // SAFETY: the fd is a bound, listening TCP socket handed to this executor alone.
                    let listener = unsafe { glommio::net::TcpListener::from_raw_fd(fd.into_raw_fd()) };
                    glommio::spawn_local(crate::shard::rtmp::accept_loop(shard.clone(), listener)).detach();
                }
                let control = if index == CONTROL {
                    match crate::control::Control::start(shard.clone()).await {
                        Ok(control) => control,
                        Err(e) => {
                            let _ = exit_tx.send(Exit::Fatal(format!("SIP on {}: {e}", shard.config.sip.listen)));
                            return;
                        }
                    }
                } else {
                    None
                };
                let node = (index == CONTROL).then(|| crate::node::Node::start(shard.clone()));
                if index == CONTROL {
                    let events = control.as_ref().map(|c| c.events.clone());
                    let node = node.clone();
                    let sender_node = node.clone();
                    let sender_control = control.clone();
                    let _ = shard.on_send_stopped.set(Box::new(move |stopped| {
                        if let Some(node) = &sender_node {
                            node.send_stopped(&stopped);
                        }
                        if let Some(control) = &sender_control {
                            control.upstream_send_stopped(&stopped);
                            control.broadcast_send_stopped(&stopped);
                        }
                    }));
                    let keyframe_control = control.clone();
                    let _ = shard.on_keyframe_wanted.set(Box::new(move |ssrc| {
                        if let Some(control) = &keyframe_control {
                            control.keyframe_wanted(ssrc);
                        }
                    }));
                    let _ = shard.on_recording_closed.set(Box::new(move |info| {
                        if let Some(node) = &node {
                            node.recording_closed(&info);
                        }
                        if let Some(events) = &events {
                            let channel = info.channel_id.clone();
                            events.publish("recording_closed", None, channel.as_deref(), serde_json::json!(info));
                        }
                    }));
                }
                let pull = if index == CONTROL {
                    match crate::pull::Proxies::start(shard.clone()).await {
                        Ok(p) => Some(p),
                        Err(error) => {
                            tracing::error!(%error, "pull proxies unavailable (their thread did not start)");
                            None
                        }
                    }
                } else {
                    None
                };
                if let (Some(node), Some(pull)) = (&node, &pull) {
                    node.pull.replace(Some(pull.clone()));
                }
                // Proxies with a GB channel id are channels of this platform, shared upward.
                if let (Some(control), Some(pull)) = (&control, &pull) {
                    let control = control.clone();
                    pull.on_channels(Box::new(move |channels| control.set_local_channels(channels)));
                }
                let front = Rc::new(Front { shard: shard.clone(), control, node, pull, users: Default::default(), cpu: Default::default() });
                let serve_front = front.clone();
                let _ = shard.handoff.set(Box::new(move |conn| crate::http::server::serve_handoff(&serve_front, conn)));
                if index == CONTROL {
                    if front.control.is_none() {
                        tracing::info!("SIP disabled");
                    }
                    // Before the API is served (the health check answers): recordings a crash
                    // cut short are repaired and the recordings index checked against the
                    // directory, then the configured streams are opened.
                    let (data_dir, index) = (shard.config.data_dir.clone(), shard.record_writers.index.clone());
                    let checked = glommio::executor()
                        .spawn_blocking(move || {
                            crate::shard::record::recover(&data_dir);
                            index.check()
                        })
                        .await;
                    match checked {
                        Ok(c) => tracing::info!(added = c.added, removed = c.removed, "recordings index checked against the directory"),
                        Err(error) => tracing::warn!(%error, "recordings index: check failed (listings read the directory)"),
                    }
                    glommio::spawn_local(crate::shard::record_index::keep(shard.record_writers.index.clone())).detach();
                    shard.open_static_streams().await;
                    let rules = shard.config.record.retention.clone();
                    // Global rules, or (with SIP) record plans that keep their channels' own time.
                    if rules.any() || front.control.is_some() {
                        let index = shard.record_writers.index.clone();
                        let events = front.control.as_ref().map(|c| c.events.clone());
                        let plans = front.control.clone();
                        let plan_ages = move || plans.as_ref().map(|c| c.plan_max_ages()).unwrap_or_default();
                        glommio::spawn_local(crate::shard::retention::run(index, rules, plan_ages, shard.retention.clone(), move |report| {
                            if let Some(events) = &events {
                                events.publish("recordings_deleted", None, None, serde_json::json!(report));
                            }
                        }))
                        .detach();
                    }
                    glommio::spawn_local(reload_loop(shard.clone(), front.control.clone(), config_path)).detach();
                }
                {
                    let (shard, front) = (shard.clone(), front.clone());
                    glommio::spawn_local(async move {
                        stop_requested().await;
                        let limit = STOP_TIMEOUT / 2;
                        match &front.control {
                            Some(control) => control.shut_down(limit).await,
                            None if shard.is_control() => {}
                            None => shard.stop_media(limit).await,
                        }
                        let _ = stopped_tx.send(index);
                    })
                    .detach();
                }
                for t in rx_tasks {
                    let rx = t.await;
                    let shard = shard.clone();
                    glommio::spawn_local(async move {
                        while let Some(msg) = rx.recv().await {
                            crate::shard::stream::handle_msg(&shard, msg);
                        }
                    })
                    .detach();
                }
                if index == CONTROL {
                    std::future::pending::<()>().await;
                } else {
                    glommio::spawn_local(crate::shard::stream::housekeeping(shard.clone())).detach();
                    if let Err(e) = crate::http::server::serve(front).await {
                        let _ = exit_tx.send(Exit::Fatal(format!("shard {index}: HTTP listener on {}: {e}", shard.config.http.listen)));
                    }
                }
            })
            .map_err(|e| StartError::Executor(e.to_string()))?;
        handles.push(handle);
    }
    drop(exit_tx);
    drop(stopped_tx);
    match exit_rx.recv() {
        Ok(Exit::Fatal(error)) => Err(StartError::Executor(error)),
        Ok(Exit::Stop) => {
            let deadline = Instant::now() + STOP_TIMEOUT;
            let mut stopped = 0;
            while stopped < executors {
                match stopped_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(_) => stopped += 1,
                    Err(_) => break,
                }
            }
            if stopped < executors {
                tracing::warn!(stopped, executors, "stop took too long; exiting anyway");
            } else {
                tracing::info!("stopped");
            }
            // Executors are left to the process exit (their loops never end on their own).
            drop(handles);
            Ok(())
        }
        // Every sender is gone: no executor is left.
        Err(_) => {
            for h in handles {
                h.join().map_err(|e| StartError::Executor(e.to_string()))?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A task that panics on an executor is reported, not left as a silent dead thread.
    #[test]
    fn a_panicking_task_is_reported_to_the_main_thread() {
        let (tx, rx) = std::sync::mpsc::channel();
        let guard = ExecutorGuard { name: "test-exec".into(), exit: tx.clone() };
        let keep_open = tx; // as the other executors hold the channel open in the engine
        let handle = LocalExecutorBuilder::new(Placement::Unbound)
            .spawn(move || async move {
                let _guard = guard;
                glommio::spawn_local(async { panic!("hostile input") }).detach();
                std::future::pending::<()>().await;
            })
            .unwrap();
        let report = rx.recv_timeout(Duration::from_secs(10)).expect("the panic is reported");
        assert!(matches!(&report, Exit::Fatal(e) if e.contains("test-exec panicked")), "{report:?}");
        assert!(handle.join().is_err());
        drop(keep_open);
    }

    #[test]
    fn nofile_soft_limit_is_raised_to_the_hard_limit() {
        let got = raise_nofile_limit();
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes into the struct we own.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!((got, lim.rlim_cur), (lim.rlim_max, lim.rlim_max));
    }
}
