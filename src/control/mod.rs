//! The driver of the SIP endpoint on the control executor: sockets in, `Endpoint::handle_*`,
//! drain `poll_transmit`/`poll_event`, requests to media shards through the media-service
//! API, the registry saved off the executor. All protocol decisions live in
//! `proto::sip::endpoint`; this file only moves bytes, time and results.

pub mod alarm_clips;
mod cascade;
pub mod device_settings;
pub mod downloads;
pub mod events;
pub mod ha;
pub(crate) mod json_file;
mod media;
pub use media::PlaySite;
pub mod node_call;
pub mod nodes;
pub mod record_plan;
mod record_plans;
pub use record_plans::PlanError;
mod registry;
pub use registry::Registry;
pub use upstream_admin::UpstreamAdminError;
pub mod store;
mod tcp;
mod upstream_admin;
pub mod voice;
pub mod upstreams_store;
pub mod webhooks;

use crate::proto::sip::endpoint::{
    Answer, Command, ControlError, ControlHandle, DeviceAsk, DeviceCommand, Endpoint, Event, MediaTransport, Outcome, Peer,
    PlayError, PlayHandle, PlayKind, PlayStart, RecordList, RecordType, Refusal, Session, StreamUse, TICK, Transmit,
};
use crate::proto::sip::manscdp::Preset;
use crate::proto::sip::mansrtsp::PlaybackAction;
use crate::shard::Shard;
use crate::shard::msg::{Expectation, PlaybackChange};
use crate::shard::source::SourceRule;
use crate::shard::unix_ms;
use futures_channel::oneshot;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::UdpSocket;
use std::cell::{Cell, Ref, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// UDP datagrams queued for sending; beyond this they are dropped and counted.
pub const SIP_SEND_QUEUE_MSGS_MAX: usize = 4096;
/// Datagrams taken in a row before other control tasks (timers, the API) get a turn.
pub const SIP_DATAGRAMS_PER_TURN_MAX: usize = 64;
/// How often live sessions are checked against their streams (gone, unwatched).
pub const SESSION_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// How often a changed registry is written.
pub const PERSIST_INTERVAL: Duration = Duration::from_secs(1);
/// Requests waiting on one pending play (joiners); more get Busy.
pub const PLAY_WAITERS_MAX: usize = 1024;
/// SSRCs tried for a new play before giving up (the owning shard refuses one in use).
pub const SSRC_ATTEMPTS_MAX: usize = 16;
/// Channels whose preset list is kept.
pub const PRESET_LISTS_MAX: usize = 10_000;
/// Warning lines about hostile or broken input per second; the rest are counted.
pub const WARN_LINES_PER_S_MAX: u32 = 20;

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct DriverCounters {
    pub udp_send_dropped: u64,
    pub tcp_accepted: u64,
    pub tcp_refused: u64,
    /// Unregistered connections closed to make room for a newer one.
    pub tcp_evicted: u64,
    pub tcp_timeouts: u64,
    /// Connections dialled to upstreams signalled over TCP, and those that could not be made.
    pub tcp_dialled: u64,
    pub tcp_dial_failed: u64,
    pub warnings_suppressed: u64,
    /// Plays that joined a pending INVITE of the same channel instead of sending another.
    pub plays_joined: u64,
    /// Session checks run (sessions against their streams' viewers, HLS and recording).
    pub session_checks: u64,
    /// Hooks posted to this control by no configured or announced media node (ignored).
    pub node_hooks_ignored: u64,
    /// SIP datagrams and connections that came while this control was standby (dropped).
    pub standby_dropped: u64,
}

/// Caps warning lines a second so a flood of junk cannot flood the log.
struct WarnBudget {
    window: Instant,
    used: u32,
}

type Waiter = oneshot::Sender<Result<Session, PlayError>>;

/// API calls waiting for a device's answer to a request, by the endpoint's handle.
type Waiters<T> = RefCell<HashMap<ControlHandle, oneshot::Sender<Result<T, ControlError>>>>;

/// Tells the API call waiting on `handle` (if it has not gone) the device's answer.
fn answer_waiter<T>(waiters: &Waiters<T>, handle: ControlHandle, result: Result<T, ControlError>, failed: &str) {
    if let Err(error) = &result {
        tracing::warn!(?handle, ?error, "{failed}");
    }
    if let Some(waiter) = waiters.borrow_mut().remove(&handle) {
        let _ = waiter.send(result);
    }
}

pub struct Control {
    pub shard: Rc<Shard>,
    /// Role control: the media nodes streams are placed on (else every stream is local).
    pub nodes: Option<Rc<nodes::MediaNodes>>,
    /// The registry as saved (the persistence side applies the endpoint's changes to it).
    registry: std::sync::Arc<store::Registry>,
    /// Active or standby, when the registry is shared with other controls.
    ha: RefCell<ha::State>,
    /// Advertised address (host_ip + SIP port) for Via/Contact.
    pub local: SocketAddr,
    endpoint: RefCell<Endpoint>,
    udp_out: LocalSender<(SocketAddr, Vec<u8>)>,
    /// Datagrams queued or being sent (a stop waits for its BYEs to leave).
    udp_pending: Rc<Cell<usize>>,
    tcp: RefCell<tcp::TcpConns>,
    waiters: RefCell<HashMap<PlayHandle, Vec<Waiter>>>,
    /// API calls waiting for a device control's answer (as many as the endpoint lets fly).
    control_waiters: Waiters<()>,
    record_waiters: Waiters<RecordList>,
    ask_waiters: Waiters<Answer>,
    /// Each channel's presets as its PresetQuery answer listed them, kept up to date by set
    /// and delete (at most `PRESET_LISTS_MAX` channels).
    presets: RefCell<HashMap<(String, String), Vec<Preset>>>,
    /// Sessions' streams that have taken no packet yet, and why (from the latest session
    /// check): what a session's stop event and `GET /api/sessions` tell the operator.
    no_media: RefCell<HashMap<u32, String>>,
    pub downloads: downloads::Downloads,
    pub events: Rc<events::EventHub>,
    wake: LocalSender<()>,
    timer_deadline: Cell<Option<Instant>>,
    counters: RefCell<DriverCounters>,
    warn_budget: RefCell<WarnBudget>,
    /// Senders started for upstream sessions (cascade), by the endpoint's handle.
    upstream_sends: RefCell<HashMap<crate::proto::sip::endpoint::UpstreamCallHandle, cascade::UpstreamSend>>,
    /// This platform's own sources shared upward: GB channel id to its stream's SSRC.
    local_channels: RefCell<std::collections::BTreeMap<String, u32>>,
    /// Voice broadcasts to devices, and the latest ended ones.
    broadcasts: RefCell<voice::Broadcasts>,
    /// Record plans and the channels following them.
    record_plans: RefCell<record_plans::RecordPlans>,
    /// Devices set up through the API, and the config's passwords they are merged over.
    device_settings: RefCell<std::collections::BTreeMap<String, device_settings::DeviceSettings>>,
    config_password: RefCell<String>,
    config_device_passwords: RefCell<std::collections::BTreeMap<String, String>>,
    /// Upstreams the API changed (over the config's), and one such change at a time.
    upstream_changes: RefCell<upstreams_store::Changes>,
    upstream_admin_gate: glommio::sync::Semaphore,
}

/// Receive buffer asked for the SIP UDP socket: an NVR answers a catalog query with dozens of
/// MESSAGEs at once and thousands of devices' keepalives bunch up; the default (~200 KiB,
/// each datagram costing its buffer's full size) dropped a 1,000-channel catalog in the
/// node loadtest.
pub const SIP_RCVBUF_BYTES: usize = 8 << 20;

fn bind_sip_udp(listen: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::fd::{FromRawFd, IntoRawFd};
    let domain = if listen.is_ipv6() { Domain::IPV6 } else { Domain::IPV4 };
    let sock = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(error) = sock.set_recv_buffer_size(SIP_RCVBUF_BYTES) {
        tracing::warn!(%error, "SIP: cannot enlarge the UDP receive buffer");
    }
    sock.bind(&listen.into())?;
    // SAFETY: the fd comes from the socket just made and is handed over once.
    Ok(unsafe { UdpSocket::from_raw_fd(sock.into_raw_fd()) })
}

/// 16 bytes from the OS for nonces and tags.
fn os_seed() -> [u8; 16] {
    let mut seed = [0u8; 16];
    // SAFETY: getrandom writes at most seed.len() bytes into the buffer we own.
    let n = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
    if n != seed.len() as isize {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(unix_ms());
        seed[..8].copy_from_slice(&h.finish().to_le_bytes());
    }
    seed
}

impl Control {
    /// Binds the SIP sockets, loads the registry and starts the driver's loops; None when SIP
    /// is disabled.
    pub async fn start(shard: Rc<Shard>) -> std::io::Result<Option<Rc<Control>>> {
        let config = shard.config.clone();
        if config.sip.listen.is_empty() {
            return Ok(None);
        }
        let listen: SocketAddr = config.sip.listen.parse().map_err(std::io::Error::other)?;
        let sock = bind_sip_udp(listen)?;
        let tcp = crate::shard::ports::tcp_listener(listen, false)?;
        let port = sock.local_addr().map_err(|e| std::io::Error::other(e.to_string()))?.port();
        let host: std::net::IpAddr = config.sip.host_ip.parse().map_err(std::io::Error::other)?;
        let local = SocketAddr::new(host, port);

        let (registry, devices, ha) = if config.registry.postgres.is_empty() {
            let (devices, persisted) = load_local_registry(&config).await?;
            (store::Registry::Local(persisted), devices, ha::State::new(ha::Mode::Single, ""))
        } else {
            // Standby until the lease is won; the registry comes from the database meanwhile.
            let instance = match config.registry.instance.as_str() {
                "" => ha::default_instance(&config.sip.listen),
                name => name.to_string(),
            };
            let shared = store::shared::Shared::new(&config.registry.postgres, &instance, config.registry.lease_s).map_err(std::io::Error::other)?;
            tracing::info!(%instance, lease_s = config.registry.lease_s, "device registry shared in PostgreSQL: standby until this control holds the lease");
            (store::Registry::Shared(shared), Vec::new(), ha::State::new(ha::Mode::Standby, &instance))
        };
        let registry = std::sync::Arc::new(registry);
        let (upstream_changes, upstreams) = load_upstreams(&config).await;
        let mut endpoint_config = config.endpoint_config(local);
        endpoint_config.upstreams = upstreams;
        let settings_path = config.data_dir.join(device_settings::DEVICE_SETTINGS_FILE);
        let (settings, settings_error) = glommio::executor()
            .spawn_blocking(move || json_file::load::<std::collections::BTreeMap<String, device_settings::DeviceSettings>>(&settings_path, unix_ms() / 1000))
            .await;
        if let Some(error) = settings_error {
            tracing::error!(%error, "device settings not read; the config's are in force");
        }
        endpoint_config.device_passwords = Control::merged_device_passwords(&config.sip.device_passwords, &settings);
        let endpoint = Endpoint::new(endpoint_config, Instant::now(), unix_ms(), os_seed(), devices);
        let data_dir = config.data_dir.clone();
        let history = glommio::executor().spawn_blocking(move || events::load(&data_dir, unix_ms())).await;
        let events = Rc::new(events::EventHub::new(history, webhooks::Webhooks::start(&config.webhooks)));
        let data_dir = config.data_dir.clone();
        let downloads = glommio::executor().spawn_blocking(move || downloads::Downloads::load(&data_dir)).await;
        let plans_path = config.data_dir.join(record_plans::RECORD_PLANS_FILE);
        let (plans, plans_error) = glommio::executor().spawn_blocking(move || json_file::load::<record_plans::PlansFile>(&plans_path, unix_ms() / 1000)).await;
        if let Some(error) = plans_error {
            tracing::error!(%error, "record plans not read; none in force until set again");
        }

        let (udp_out, udp_out_rx) = local_channel::new_bounded(SIP_SEND_QUEUE_MSGS_MAX);
        let udp_pending = Rc::new(Cell::new(0));
        let (wake, wake_rx) = local_channel::new_bounded(1);
        let nodes = (config.node.role == crate::config::Role::Control)
            .then(|| Rc::new(nodes::MediaNodes::new(&config.node.media_nodes, Duration::from_secs(config.node.node_down_after_s))));
        let control = Rc::new(Control {
            shard,
            nodes,
            registry,
            ha: RefCell::new(ha),
            local,
            endpoint: RefCell::new(endpoint),
            udp_out,
            udp_pending: udp_pending.clone(),
            tcp: RefCell::new(tcp::TcpConns::default()),
            waiters: RefCell::new(HashMap::new()),
            control_waiters: RefCell::new(HashMap::new()),
            record_waiters: RefCell::new(HashMap::new()),
            ask_waiters: RefCell::new(HashMap::new()),
            presets: RefCell::new(HashMap::new()),
            no_media: RefCell::new(HashMap::new()),
            downloads,
            events: events.clone(),
            wake,
            timer_deadline: Cell::new(None),
            counters: RefCell::new(DriverCounters::default()),
            warn_budget: RefCell::new(WarnBudget { window: Instant::now(), used: 0 }),
            upstream_sends: RefCell::new(HashMap::new()),
            local_channels: RefCell::new(Default::default()),
            broadcasts: RefCell::new(Default::default()),
            record_plans: RefCell::new(record_plans::RecordPlans::new(plans, !config.registry.postgres.is_empty())),
            device_settings: RefCell::new(settings),
            config_password: RefCell::new(config.sip.password.clone()),
            config_device_passwords: RefCell::new(config.sip.device_passwords.clone()),
            upstream_changes: RefCell::new(upstream_changes),
            upstream_admin_gate: glommio::sync::Semaphore::new(1),
        });
        tracing::info!(%listen, domain = %config.sip.domain, server_id = %config.node_id, "SIP listening");
        let sock = Rc::new(sock);
        glommio::spawn_local(control.clone().udp_recv_loop(sock.clone())).detach();
        glommio::spawn_local(udp_send_loop(sock, udp_out_rx, udp_pending)).detach();
        glommio::spawn_local(control.clone().tcp_accept_loop(tcp)).detach();
        glommio::spawn_local(control.clone().timer_loop(wake_rx)).detach();
        glommio::spawn_local(control.clone().session_check_loop()).detach();
        glommio::spawn_local(control.clone().persist_loop()).detach();
        glommio::spawn_local(control.clone().downloads_loop()).detach();
        glommio::spawn_local(control.clone().record_plan_loop()).detach();
        if control.registry.shared().is_some() {
            glommio::spawn_local(control.clone().lease_loop()).detach();
        }
        glommio::spawn_local(events.persist_loop(config.data_dir.clone())).detach();
        Ok(Some(control))
    }

    // ---- read access for the API ----

    /// The registry, read-only, for one answer.
    pub fn registry(&self) -> Registry<'_> {
        Registry(self.endpoint.borrow())
    }

    /// Whether `channel_id` is a channel of registered device `device_id` (or the device itself,
    /// a camera that is its own channel).
    pub fn has_channel(&self, device_id: &str, channel_id: &str) -> bool {
        self.endpoint().device(device_id).is_some_and(|d| d.channels.contains_key(channel_id) || device_id == channel_id)
    }

    fn endpoint(&self) -> Ref<'_, Endpoint> {
        self.endpoint.borrow()
    }

    /// Puts reloaded digest passwords in force (those set through the API still win); what
    /// changed, for the log.
    pub fn set_passwords(&self, password: &str, device_passwords: &std::collections::BTreeMap<String, String>) -> Vec<String> {
        *self.config_password.borrow_mut() = password.to_string();
        *self.config_device_passwords.borrow_mut() = device_passwords.clone();
        let merged = Self::merged_device_passwords(device_passwords, &self.device_settings.borrow());
        self.endpoint.borrow_mut().set_passwords(password, &merged)
    }

    pub fn driver_counters(&self) -> DriverCounters {
        *self.counters.borrow()
    }

    // ---- feeding the endpoint ----

    /// Gives the endpoint one input at the current time, then carries out what it asks.
    fn input<R>(self: &Rc<Self>, f: impl FnOnce(&mut Endpoint, Instant) -> R) -> R {
        let now = Instant::now();
        let result = f(&mut self.endpoint.borrow_mut(), now);
        self.drain();
        result
    }

    fn command(self: &Rc<Self>, command: Command) -> Outcome {
        self.input(|ep, now| ep.handle_command(now, command))
    }

    fn drain(self: &Rc<Self>) {
        loop {
            let transmit = self.endpoint.borrow_mut().poll_transmit();
            match transmit {
                Some(t) => self.transmit(t),
                None => break,
            }
        }
        loop {
            let event = self.endpoint.borrow_mut().poll_event();
            match event {
                Some(e) => self.on_event(e),
                None => break,
            }
        }
        // A new transaction may need the sleeping timer earlier. (While the timer handles a
        // timeout, `timer_deadline` is None: it looks at `poll_timeout` itself afterwards.)
        let next = self.endpoint.borrow().poll_timeout();
        if let (Some(n), Some(d)) = (next, self.timer_deadline.get())
            && n < d
        {
            let _ = self.wake.try_send(());
        }
    }

    fn transmit(self: &Rc<Self>, t: Transmit) {
        if !self.is_active() {
            // A standby control speaks to nobody: its upstream registrations would take the
            // active one's place above.
            self.counters.borrow_mut().standby_dropped += 1;
            return;
        }
        match t.to {
            Peer::Udp(addr) => {
                if self.udp_out.try_send((addr, t.bytes)).is_ok() {
                    self.udp_pending.set(self.udp_pending.get() + 1);
                } else {
                    self.counters.borrow_mut().udp_send_dropped += 1;
                    self.warn_limited(|| tracing::warn!(%addr, "SIP send queue full; message dropped"));
                }
            }
            Peer::Tcp { conn, addr } => {
                if !self.tcp.borrow().send(conn, t.bytes) {
                    self.warn_limited(|| tracing::warn!(%addr, conn, "SIP TCP connection gone or stuck; message dropped"));
                }
            }
            Peer::TcpOut(addr) => {
                if !self.tcp_send_out(addr, t.bytes) {
                    self.warn_limited(|| tracing::warn!(%addr, "SIP TCP connection to an upstream stuck; message dropped"));
                }
            }
        }
    }

    fn warn_limited(&self, log: impl FnOnce()) {
        let mut b = self.warn_budget.borrow_mut();
        let now = Instant::now();
        if now.duration_since(b.window) >= Duration::from_secs(1) {
            b.window = now;
            b.used = 0;
        }
        if b.used < WARN_LINES_PER_S_MAX {
            b.used += 1;
            log();
        } else {
            self.counters.borrow_mut().warnings_suppressed += 1;
        }
    }

    fn on_event(self: &Rc<Self>, event: Event) {
        match event {
            Event::Registered { device_id, peer, expires_s } => {
                tracing::info!(device_id, ?peer, expires_s, "device registered");
                self.device_host(peer.addr().ip());
                let data = serde_json::json!({ "addr": peer.addr().to_string(), "transport": peer.transport(), "expires_s": expires_s });
                self.events.publish("device_online", Some(&device_id), None, data);
            }
            Event::Unregistered { device_id } => {
                tracing::info!(device_id, "device unregistered");
                self.events.publish("device_offline", Some(&device_id), None, serde_json::json!({ "why": "unregistered" }));
            }
            Event::Offline { device_id } => {
                tracing::warn!(device_id, "device offline (no keepalive, registration expired or connection lost)");
                self.events.publish(
                    "device_offline",
                    Some(&device_id),
                    None,
                    serde_json::json!({ "why": "no keepalive, registration expired or connection lost" }),
                );
            }
            Event::Refused { reason: Refusal::StaleNonce, peer, device_id, .. } => {
                // Devices reuse the nonce of their last registration: routine, challenged again.
                tracing::debug!(?peer, device_id, "REGISTER with an expired nonce; challenged again");
                let data = serde_json::json!({ "addr": peer.addr().to_string(), "reason": Refusal::StaleNonce.as_str() });
                self.events.publish("registration_failed", device_id.as_deref(), None, data);
            }
            Event::Refused { peer, method, device_id, reason } => {
                if method == "REGISTER" {
                    let data = serde_json::json!({ "addr": peer.addr().to_string(), "reason": reason.as_str() });
                    self.events.publish("registration_failed", device_id.as_deref(), None, data);
                }
                self.warn_limited(|| tracing::warn!(?peer, method, device_id, reason = reason.as_str(), "SIP request refused"))
            }
            Event::Position { device_id, position } => {
                tracing::debug!(device_id, longitude = position.longitude, latitude = position.latitude, "position");
                self.events.publish("position", Some(&device_id), None, serde_json::json!(position));
            }
            Event::Alarm { device_id, alarm } => {
                tracing::info!(
                    device_id,
                    channel_id = alarm.device_id,
                    priority = alarm.priority,
                    method = alarm.method,
                    description = alarm.description,
                    "alarm"
                );
                let channel = alarm.device_id.clone();
                let id = self.events.publish("alarm", Some(&device_id), Some(&channel), serde_json::json!(alarm));
                self.alarm_clip(&device_id, &channel, id);
            }
            Event::Malformed { peer, error } => self.warn_limited(|| tracing::warn!(?peer, error, "malformed SIP message")),
            Event::CatalogUpdated { device_id, channels, complete } => {
                tracing::info!(device_id, channels, complete, "catalog updated");
                self.events.publish("catalog_changed", Some(&device_id), None, serde_json::json!({ "channels": channels, "complete": complete }));
            }
            Event::DeviceInfoUpdated { device_id } => tracing::debug!(device_id, "device info updated"),
            Event::QueryFailed { device_id, cmd, error, retry_in } => {
                self.warn_limited(|| tracing::warn!(device_id, cmd = cmd.name(), error, retry_in_s = retry_in.as_secs(), "device query failed"))
            }
            Event::RegistryChanged => {} // the persist loop takes the changes
            Event::PlayAnswered { handle, session, media } => self.play_answered(handle, session, media),
            Event::PlayFailed { handle, error, ssrc } => {
                tracing::warn!(?handle, ?error, ssrc, "play failed");
                if let Some(ssrc) = ssrc.filter(|s| !self.downloads.keeps_stream(*s)) {
                    self.close_stream_later(ssrc);
                }
                self.resolve(handle, Err(error));
            }
            Event::SessionEnded { device_id, channel_id, ssrc, kind, reason } => {
                tracing::info!(device_id, channel_id, ssrc, kind = kind.name(), reason = reason.as_str(), "play stopped");
                // A stream closed for idleness without ever taking a packet: say why.
                let no_media = self.no_media.borrow_mut().remove(&ssrc).filter(|_| reason == crate::proto::sip::endpoint::EndReason::StreamGone);
                let why = match &no_media {
                    Some(no_media) => format!("no media in {} s: {no_media}", self.shard.config.rtp.idle_timeout_s),
                    None => reason.as_str().to_string(),
                };
                if let Some(no_media) = &no_media {
                    tracing::warn!(device_id, channel_id, ssrc, no_media, "play stopped: the stream never got media");
                }
                let data = serde_json::json!({ "stream_id": crate::proto::ssrc::stream_id(ssrc), "kind": kind.name(), "why": why });
                self.events.publish("stream_stopped", Some(&device_id), Some(&channel_id), data);
                if reason == crate::proto::sip::endpoint::EndReason::EndOfFile {
                    self.upstream_media_ended(ssrc);
                }
                if !self.downloads.session_ended(ssrc, reason) {
                    self.close_stream_later(ssrc);
                }
            }
            Event::ControlDone { handle, result } => answer_waiter(&self.control_waiters, handle, result, "device control failed"),
            Event::AskDone { handle, result } => answer_waiter(&self.ask_waiters, handle, result, "device request failed"),
            Event::RecordsDone { handle, result } => answer_waiter(&self.record_waiters, handle, result, "RecordInfo query failed"),
            Event::UpstreamRegistered { upstream } => {
                tracing::info!(upstream, "registered with the upstream platform");
                self.events.publish("upstream_registered", None, None, serde_json::json!({ "upstream": upstream }));
            }
            Event::UpstreamRegisterFailed { upstream, error, retry_in } => {
                self.warn_limited(|| tracing::warn!(upstream, error, retry_in_s = retry_in.as_secs(), "registration with the upstream platform failed"))
            }
            Event::UpstreamLost { upstream, error } => {
                tracing::warn!(upstream, error, "upstream platform lost; registering again");
                self.events.publish("upstream_lost", None, None, serde_json::json!({ "upstream": upstream, "why": error }));
            }
            Event::DropConnection { to } => self.tcp_drop_out(to),
            Event::UpstreamPlay(play) => self.upstream_play(*play),
            Event::UpstreamPlayEnded { handle, reason } => self.upstream_play_ended(handle, reason),
            Event::UpstreamRecords(ask) => self.upstream_records(*ask),
            Event::UpstreamPlaybackControl { handle, action } => self.upstream_playback_control(handle, action),
            Event::BroadcastInvited(invite) => self.broadcast_invited(*invite),
            Event::BroadcastEnded { handle, reason } => self.broadcast_ended(handle, reason),
        }
    }

    fn close_stream_later(self: &Rc<Self>, ssrc: u32) {
        let me = self.clone();
        glommio::spawn_local(async move {
            me.close_media(ssrc).await;
        })
        .detach();
    }

    /// Why a session's stream has no media yet, as of the latest session check.
    pub fn no_media(&self, ssrc: u32) -> Option<String> {
        self.no_media.borrow().get(&ssrc).cloned()
    }

    fn resolve(&self, handle: PlayHandle, result: Result<Session, PlayError>) {
        for w in self.waiters.borrow_mut().remove(&handle).unwrap_or_default() {
            let _ = w.send(result.clone());
        }
    }

    fn play_answered(self: &Rc<Self>, handle: PlayHandle, session: Box<Session>, media: Option<SocketAddr>) {
        tracing::info!(device_id = %session.device_id, channel_id = %session.channel_id, stream_id = %session.stream_id, "play started");
        let data = serde_json::json!({ "stream_id": session.stream_id, "kind": session.kind, "transport": session.transport });
        self.events.publish("stream_started", Some(&session.device_id), Some(&session.channel_id), data);
        // The stream takes only its SSRCs (the device's answer, when another, joins them) and
        // media only from the device (its answer's address joins its signalling one; for TCP
        // active the address dialled). Asked now, from the drain, so it is queued before the
        // ACK leaves and the device sends.
        let device_ssrc = session.device_ssrc.filter(|d| *d != session.ssrc);
        if let Some(device_ssrc) = device_ssrc {
            tracing::info!(device_id = %session.device_id, ssrc = session.ssrc, device_ssrc, "device answered another SSRC; following it");
        }
        let from: Vec<std::net::IpAddr> = session.media_from.iter().copied().chain(media.map(|m| m.ip())).collect();
        let rule = SourceRule::device(&from, self.learns_ssrc(&session.device_id));
        let expected = self.expect_media(session.ssrc, Expectation { device_ssrc, rule: Some(rule) });
        let me = self.clone();
        glommio::spawn_local(async move {
            if !expected.await {
                tracing::warn!(device_id = %session.device_id, ssrc = session.ssrc, "the stream did not take the device's answer (SSRC, addresses); its packets may be dropped");
            }
            // TCP active: connect to the device's media port before anyone is told it plays.
            let Some(addr) = media else { return me.resolve(handle, Ok(*session)) };
            match me.connect_media(session.ssrc, addr).await {
                Ok(()) => me.resolve(handle, Ok(*session)),
                Err(error) => {
                    tracing::warn!(device_id = %session.device_id, channel_id = %session.channel_id, %error, "TCP active media connect failed");
                    me.command(Command::Stop { device_id: session.device_id.clone(), channel_id: session.channel_id.clone() });
                    me.resolve(handle, Err(PlayError::MediaConnect(error.to_string())));
                }
            }
        })
        .detach();
    }

    // ---- commands from the API ----

    /// Plays a channel live: the live session, the answer of a pending play of it, or a new one.
    pub async fn play(self: &Rc<Self>, device_id: &str, channel_id: &str, transport: MediaTransport) -> Result<Session, PlayError> {
        self.play_kind(device_id, channel_id, transport, PlayKind::Live, None).await
    }

    /// Plays live or a recorded range; `stream`: an open stream to INVITE for (a download)
    /// instead of a new one: its SSRC, port and, on a media node, the node's media address.
    pub async fn play_kind(
        self: &Rc<Self>,
        device_id: &str,
        channel_id: &str,
        transport: MediaTransport,
        kind: PlayKind,
        stream: Option<(u32, u16, Option<String>)>,
    ) -> Result<Session, PlayError> {
        let start = match self.command(Command::Play { device_id: device_id.into(), channel_id: channel_id.into(), transport, kind }) {
            Outcome::Play(start) => start?,
            _ => return Err(PlayError::Busy),
        };
        let handle = match start {
            PlayStart::Live(session) => return Ok(*session),
            PlayStart::Joined(handle) => {
                self.counters.borrow_mut().plays_joined += 1;
                handle
            }
            PlayStart::Open(handle) => handle,
        };
        let (tx, rx) = oneshot::channel();
        {
            let mut waiters = self.waiters.borrow_mut();
            let list = waiters.entry(handle).or_default();
            if list.len() >= PLAY_WAITERS_MAX {
                return Err(PlayError::Busy);
            }
            list.push(tx);
        }
        match (start, stream) {
            (PlayStart::Open(_), Some((ssrc, port, media_ip))) => {
                self.command(Command::Invite { handle, ssrc, port, media_ip });
            }
            // Detached: a caller that goes away must not leave the play half-opened.
            (PlayStart::Open(_), None) => {
                let source = self.device_source(device_id);
                glommio::spawn_local(self.clone().open_media(handle, kind, transport, channel_id.to_string(), source)).detach();
            }
            _ => {}
        }
        rx.await.unwrap_or(Err(PlayError::Cancelled))
    }

    /// Opens the stream for a new play, then INVITEs.
    async fn open_media(self: Rc<Self>, handle: PlayHandle, kind: PlayKind, transport: MediaTransport, channel_id: String, source: SourceRule) {
        let created_ms = crate::shard::unix_ms();
        let history = |ssrc| downloads::history_spec(ssrc, kind, created_ms);
        match self.open_media_stream(kind, transport, &channel_id, history, source).await {
            Ok(o) => self.command(Command::Invite { handle, ssrc: o.ssrc, port: o.port, media_ip: o.media_ip }),
            Err(error) => self.command(Command::Abandon { handle, error }),
        };
    }

    /// A viewer of stream `ssrc` wants a keyframe: the device playing it is asked for one
    /// (IFameCmd); a stream no device plays is left alone. The media shard limits how often.
    pub fn keyframe_wanted(self: &Rc<Self>, ssrc: u32) {
        let session = self.endpoint().sessions().find(|s| s.ssrc == ssrc).map(|s| (s.device_id.clone(), s.channel_id.clone()));
        let Some((device_id, channel_id)) = session else { return };
        let me = self.clone();
        glommio::spawn_local(async move {
            if let Err(error) = me.control(&device_id, &channel_id, DeviceCommand::KeyFrame).await {
                tracing::debug!(device_id, channel_id, ?error, "keyframe request not taken");
            }
        })
        .detach();
    }

    /// Sends a DeviceControl to a channel and waits for the device's answer (bounded by the
    /// SIP transaction timeout).
    pub async fn control(self: &Rc<Self>, device_id: &str, channel_id: &str, command: DeviceCommand) -> Result<(), ControlError> {
        let answer =
            self.send_awaiting(Command::Control { device_id: device_id.into(), channel_id: channel_id.into(), command }, &self.control_waiters)?;
        let (element, text) = command.element(self.endpoint().device(device_id).is_some_and(|d| d.speaks_2022()));
        tracing::info!(device_id, channel_id, element, text, "device control sent");
        answer.await.unwrap_or(Err(ControlError::Timeout))
    }

    /// Gives the endpoint a command whose result comes later as an event under a handle (a
    /// device's answer), and registers in `waiters` to be told it.
    fn send_awaiting<T>(self: &Rc<Self>, command: Command, waiters: &Waiters<T>) -> Result<oneshot::Receiver<Result<T, ControlError>>, ControlError> {
        let handle = match self.command(command) {
            Outcome::Control(handle) => handle?,
            _ => return Err(ControlError::Busy),
        };
        let (tx, rx) = oneshot::channel();
        waiters.borrow_mut().insert(handle, tx);
        Ok(rx)
    }

    /// BYE (or CANCEL) and close the stream; false if the channel was not playing.
    pub fn stop(self: &Rc<Self>, device_id: &str, channel_id: &str) -> bool {
        matches!(self.command(Command::Stop { device_id: device_id.into(), channel_id: channel_id.into() }), Outcome::Found(true))
    }

    /// BYE (or CANCEL) the session of stream `ssrc` and close it; false if there is none.
    pub fn stop_session(self: &Rc<Self>, ssrc: u32) -> bool {
        matches!(self.command(Command::StopSession { ssrc }), Outcome::Found(true))
    }

    /// Pause, resume, seek or speed of a playback: the device's answer first, then the
    /// stream is told (its idle timeout held while paused, its clock scaled).
    pub async fn playback_control(self: &Rc<Self>, ssrc: u32, action: PlaybackAction) -> Result<(), ControlError> {
        let answer = self.send_awaiting(Command::PlaybackControl { ssrc, action }, &self.control_waiters)?;
        tracing::info!(ssrc, action = action.name(), "playback control sent");
        answer.await.unwrap_or(Err(ControlError::Timeout))?;
        let change = match action {
            PlaybackAction::Pause => PlaybackChange::Paused(true),
            PlaybackAction::Resume => PlaybackChange::Paused(false),
            PlaybackAction::Speed(x100) => PlaybackChange::Scale(x100),
            PlaybackAction::Seek(_) => PlaybackChange::Seeked,
        };
        if !self.change_playback(ssrc, change).await {
            return Err(ControlError::UnknownSession);
        }
        Ok(())
    }

    /// Sends a request the device answers with a MESSAGE of its own, and waits for that answer
    /// (bounded by `ASK_ANSWER_TIMEOUT`).
    pub async fn ask(self: &Rc<Self>, device_id: &str, target: &str, ask: DeviceAsk) -> Result<Answer, ControlError> {
        tracing::info!(device_id, target, ?ask, "device request sent");
        let answer = self.send_awaiting(Command::Ask { device_id: device_id.into(), target: target.into(), ask }, &self.ask_waiters)?;
        answer.await.unwrap_or(Err(ControlError::Timeout))
    }

    /// A channel's presets: asked of the device when `fresh` or not known yet.
    pub async fn presets(self: &Rc<Self>, device_id: &str, channel_id: &str, fresh: bool) -> Result<Vec<Preset>, ControlError> {
        let key = (device_id.to_string(), channel_id.to_string());
        if !fresh && let Some(p) = self.presets.borrow().get(&key) {
            return Ok(p.clone());
        }
        let Answer::Presets(list) = self.ask(device_id, channel_id, DeviceAsk::Presets).await? else { return Err(ControlError::Timeout) };
        let mut presets = self.presets.borrow_mut();
        if presets.len() >= PRESET_LISTS_MAX && !presets.contains_key(&key) {
            presets.clear(); // a cache: asked again when needed
        }
        presets.insert(key, list.clone());
        Ok(list)
    }

    /// A preset set or removed on a channel: its kept list follows.
    pub fn preset_changed(&self, device_id: &str, channel_id: &str, action: crate::proto::sip::ptz::PtzAction) {
        use crate::proto::sip::ptz::PtzAction;
        let mut presets = self.presets.borrow_mut();
        let Some(list) = presets.get_mut(&(device_id.to_string(), channel_id.to_string())) else { return };
        match action {
            PtzAction::PresetSet(n) if !list.iter().any(|p| p.id == n) => {
                list.push(Preset { id: n, name: String::new() });
                list.sort_by_key(|p| p.id);
            }
            PtzAction::PresetDelete(n) => list.retain(|p| p.id != n),
            _ => {}
        }
    }

    /// A channel's recordings on the device in `[start, end]` (unix seconds).
    pub async fn records(
        self: &Rc<Self>,
        device_id: &str,
        channel_id: &str,
        start: i64,
        end: i64,
        record_type: RecordType,
    ) -> Result<RecordList, ControlError> {
        let command = Command::Records { device_id: device_id.into(), channel_id: channel_id.into(), start, end, record_type };
        let answer = self.send_awaiting(command, &self.record_waiters)?;
        answer.await.unwrap_or(Err(ControlError::Timeout))
    }

    /// Forget a device (subscriptions ended, sessions BYE'd); false for an unknown one.
    pub fn remove_device(self: &Rc<Self>, device_id: &str) -> bool {
        matches!(self.command(Command::Remove { device_id: device_id.into() }), Outcome::Found(true))
    }

    /// Ask a device for DeviceInfo and Catalog now; false for an unknown device.
    pub fn sync(self: &Rc<Self>, device_id: &str) -> bool {
        matches!(self.command(Command::Sync { device_id: device_id.into() }), Outcome::Found(true))
    }

    /// The control executor's part of a graceful stop: BYE every session (their streams are
    /// closed by the media shards), wait, bounded, until the datagrams have left, and save the
    /// registry.
    pub async fn shut_down(self: &Rc<Self>, limit: Duration) {
        let sessions: Vec<(String, String)> = self.endpoint.borrow().sessions().map(|s| (s.device_id.clone(), s.channel_id.clone())).collect();
        self.command(Command::UnregisterUpstreams);
        for (device_id, channel_id) in &sessions {
            self.command(Command::Stop { device_id: device_id.clone(), channel_id: channel_id.clone() });
        }
        let deadline = Instant::now() + limit;
        // Upstreams challenge the `Expires: 0` too: its answer must leave before we do.
        while (self.udp_pending.get() > 0 || !self.endpoint().upstreams_settled()) && Instant::now() < deadline {
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        let changes = self.endpoint.borrow_mut().take_registry_changes().unwrap_or_default();
        if !self.is_active() {
            tracing::info!(sessions = sessions.len(), "SIP stopped (standby: the registry is the active control's to save)");
            return;
        }
        let registry = self.registry.clone();
        match glommio::executor().spawn_blocking(move || registry.apply(&changes)).await {
            Ok(rows) => tracing::info!(sessions = sessions.len(), rows, "SIP stopped: sessions ended, registry saved"),
            Err(error) => tracing::error!(%error, "cannot save device registry at stop"),
        }
        self.release_lease().await;
    }

    // ---- loops ----

    async fn udp_recv_loop(self: Rc<Self>, sock: Rc<UdpSocket>) {
        let mut buf = vec![0u8; crate::proto::sip::message::SIP_MESSAGE_BYTES_MAX];
        let mut turn = crate::shard::TurnBudget::new(SIP_DATAGRAMS_PER_TURN_MAX);
        loop {
            turn.spend().await;
            match sock.recv_from(&mut buf).await {
                Ok(_) if !self.is_active() => self.counters.borrow_mut().standby_dropped += 1,
                Ok((n, source)) => self.input(|ep, now| ep.handle_datagram(now, Peer::Udp(source), &buf[..n])),
                Err(error) => {
                    self.warn_limited(|| tracing::warn!(%error, "SIP receive failed"));
                    glommio::timer::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    async fn timer_loop(self: Rc<Self>, wake: LocalReceiver<()>) {
        loop {
            let deadline = self.endpoint.borrow().poll_timeout().unwrap_or_else(|| Instant::now() + TICK);
            self.timer_deadline.set(Some(deadline));
            let wait = deadline.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                futures_lite::future::or(glommio::timer::sleep(wait), async {
                    wake.recv().await;
                })
                .await;
            }
            self.timer_deadline.set(None);
            self.input(|ep, now| ep.handle_timeout(now));
            // A deadline already past would come straight back: let other tasks run between.
            futures_lite::future::yield_now().await;
        }
    }

    async fn session_check_loop(self: Rc<Self>) {
        loop {
            glommio::timer::sleep(SESSION_CHECK_INTERVAL).await;
            if self.endpoint.borrow().sessions().next().is_none() {
                continue;
            }
            let listed_at = Instant::now();
            let streams = match &self.nodes {
                Some(nodes) => {
                    // Sessions on a node that went down end now (BYE); their channels play
                    // elsewhere when asked again.
                    let (down, lost) = nodes.check(listed_at);
                    for node in down {
                        self.events.publish("media_node_down", None, None, serde_json::json!({ "node": node, "sessions_ended": lost.len() }));
                    }
                    for ssrc in lost {
                        tracing::warn!(ssrc, "media node down: ending its session");
                        self.stop_session(ssrc);
                    }
                    let seen = nodes.streams().await;
                    for (node, stream_id) in seen.orphans {
                        tracing::info!(node, stream_id, "closing a stream no session of this control owns (left by an earlier control)");
                        if let Err(error) = nodes.send(&node, &node_call::NodeCall::CloseRtpServerNamed { stream_id }).await {
                            tracing::warn!(node, %error, "media node did not close an orphaned stream");
                        }
                    }
                    // A stream a record plan has the node record is in use, watched or not
                    // (as a recording stream on a local shard is).
                    let planned = self.planned_streams();
                    seen.uses.into_iter().map(|(ssrc, watched)| StreamUse { ssrc, in_use: watched || planned.contains(&ssrc) }).collect()
                }
                None => {
                    let listed = self.shard.list_streams().await;
                    self.note_no_media(&listed);
                    // HLS viewers, a recording and RTP senders (cascade) use a stream as much as
                    // FLV viewers do.
                    listed.iter().map(|s| StreamUse { ssrc: s.ssrc, in_use: s.subscribers > 0 || s.hls || s.recording || s.senders > 0 }).collect()
                }
            };
            self.command(Command::StreamsSeen { listed_at, streams });
            self.counters.borrow_mut().session_checks += 1;
        }
    }

    /// Keeps why sessions' streams have no media yet, from a listing of the streams. A stream
    /// gone since (closed for idleness) keeps its last word for the session's stop event,
    /// which the check of this listing is about to make.
    fn note_no_media(&self, listed: &[crate::shard::msg::StreamInfo]) {
        let sessions: std::collections::HashSet<u32> = self.endpoint().sessions().map(|s| s.ssrc).collect();
        let waiting = listed.iter().filter(|s| sessions.contains(&s.ssrc)).filter_map(|s| Some((s.ssrc, s.no_media.clone()?)));
        let mut no_media: HashMap<u32, String> = waiting.collect();
        let alive: std::collections::HashSet<u32> = listed.iter().map(|s| s.ssrc).collect();
        for (ssrc, why) in self.no_media.borrow_mut().drain() {
            if sessions.contains(&ssrc) && !alive.contains(&ssrc) {
                no_media.insert(ssrc, why);
            }
        }
        *self.no_media.borrow_mut() = no_media;
    }

    async fn persist_loop(self: Rc<Self>) {
        let data_dir = self.shard.config.data_dir.clone();
        loop {
            glommio::timer::sleep(PERSIST_INTERVAL).await;
            if !self.is_active() {
                continue;
            }
            let Some(changes) = self.endpoint.borrow_mut().take_registry_changes() else { continue };
            let registry = self.registry.clone();
            let changes = std::sync::Arc::new(changes);
            let handed = changes.clone();
            let saved = glommio::executor().spawn_blocking(move || registry.apply(&handed)).await;
            if let Err(error) = saved {
                let changed = changes.changed.len() + changes.removed.len();
                let place = match self.registry.shared() {
                    Some(_) => "PostgreSQL".to_string(),
                    None => store::registry_path(&data_dir).display().to_string(),
                };
                tracing::error!(registry = %place, %error, changed, "cannot save device registry; will retry");
                self.endpoint.borrow_mut().registry_save_failed(&changes);
            }
        }
    }
}

/// This control's own registry: `data_dir/registry.sqlite3` (what could not be read kept aside).
/// The upstreams in force at start: the config's read through what the API changed (kept in
/// `data_dir`); one that no longer checks out (an address that does not resolve) is left out
/// and said so.
async fn load_upstreams(config: &crate::config::Config) -> (upstreams_store::Changes, Vec<crate::proto::sip::endpoint::UpstreamConfig>) {
    let (data_dir, listed) = (config.data_dir.clone(), config.cascade.upstreams.clone());
    glommio::executor()
        .spawn_blocking(move || {
            let (changes, error) = upstreams_store::load(&data_dir, unix_ms() / 1000);
            if let Some(error) = error {
                tracing::error!(error, "upstreams changed through the API could not be read; the config's are used");
            }
            let upstreams = changes
                .apply(&listed)
                .into_iter()
                .filter_map(|(u, source)| match u.to_endpoint() {
                    Ok(cfg) => Some(cfg),
                    Err(error) => {
                        tracing::error!(upstream = u.id, ?source, error, "upstream left out");
                        None
                    }
                })
                .collect();
            (changes, upstreams)
        })
        .await
}

async fn load_local_registry(config: &crate::config::Config) -> std::io::Result<(Vec<crate::proto::sip::endpoint::Device>, store::Persisted)> {
    let data_dir = config.data_dir.clone();
    let now_s = unix_ms() / 1000;
    let (loaded, persisted) = glommio::executor()
        .spawn_blocking(move || {
            let loaded = store::load(&data_dir, now_s)?;
            Ok::<_, std::io::Error>((loaded, store::Persisted::open(&data_dir)?))
        })
        .await?;
    if let Some((aside, error)) = &loaded.moved_aside {
        tracing::error!(moved_to = %aside.display(), %error, "device registry unreadable: kept aside, starting empty; devices come back as they register");
    }
    if let Some(imported) = &loaded.imported {
        tracing::info!(from = %imported.display(), devices = loaded.devices.len(), "device registry imported into the database");
    }
    if loaded.skipped > 0 {
        tracing::warn!(skipped = loaded.skipped, "device registry: rows that are not devices left out");
    }
    tracing::info!(devices = loaded.devices.len(), path = %store::registry_path(&config.data_dir).display(), "device registry loaded");
    Ok((loaded.devices, persisted))
}

async fn udp_send_loop(sock: Rc<UdpSocket>, rx: LocalReceiver<(SocketAddr, Vec<u8>)>, pending: Rc<Cell<usize>>) {
    while let Some((addr, bytes)) = rx.recv().await {
        if let Err(error) = sock.send_to(&bytes, addr).await {
            tracing::debug!(%addr, %error, "SIP send failed");
        }
        pending.set(pending.get().saturating_sub(1));
    }
}
