//! Active and standby controls over one registry in PostgreSQL (`registry.postgres`). The
//! control holding the lease is active: it serves SIP and writes the registry. The others are
//! standby: they hold their SIP ports but drop what comes in, follow the registry (so their
//! API lists every device, offline), and try for the lease every `lease_s / 3`. Devices move
//! to the new active one as they register again (a floating address or their backup server).
//! An active control that cannot renew its lease before it runs out stops (its sessions are
//! ended, the database refuses its writes anyway) and starts again as a standby under its
//! supervisor.

use super::Control;
use super::store::shared::{DbError, Followed, Lead, Shared};
use crate::proto::sip::endpoint::RegistryChanges;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Reads of `ROWS_PER_READ_MAX` rows one following turn makes at most (the whole registry).
const FOLLOW_READS_MAX: usize = crate::proto::sip::endpoint::DEVICES_MAX / super::store::shared::ROWS_PER_READ_MAX + 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The registry is this control's own (SQLite): always active.
    Single,
    Active,
    Standby,
}

/// What `/api/health` and `/metrics` tell of this control's place.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HaView {
    pub mode: Mode,
    /// This control's name in the lease.
    pub instance: String,
    /// Who holds the lease, as last seen (this control when active).
    pub leader: Option<String>,
    pub epoch: u64,
    /// Registry version followed up to (the last read: as standby, or when taking over).
    pub version: u64,
    pub takeovers: u64,
    /// Why the last try to reach the database failed, if the last one did.
    pub last_error: Option<String>,
}

pub struct State {
    pub view: HaView,
    renewed_at: Instant,
}

impl State {
    pub fn new(mode: Mode, instance: &str) -> State {
        let view = HaView { mode, instance: instance.to_string(), leader: None, epoch: 0, version: 0, takeovers: 0, last_error: None };
        State { view, renewed_at: Instant::now() }
    }
}

/// This control's name when `registry.instance` is empty.
pub fn default_instance(sip_listen: &str) -> String {
    let mut host = [0u8; 256];
    // SAFETY: gethostname writes at most host.len() bytes into the buffer we own.
    let ok = unsafe { libc::gethostname(host.as_mut_ptr().cast(), host.len()) } == 0;
    let end = host.iter().position(|&b| b == 0).unwrap_or(0);
    let name = if ok { String::from_utf8_lossy(&host[..end]).to_string() } else { "gmv".into() };
    format!("{name}:{sip_listen}")
}

/// What one standby turn found, read on a blocking thread.
struct Turn {
    followed: Vec<Followed>,
    lead: Lead,
    /// Devices of this control's own SQLite registry copied into an empty shared one.
    imported: usize,
}

/// Follows the registry from `version`, tries for the lease and, when won, follows again (the
/// old holder is fenced from then on, so this read has everything it wrote).
fn standby_turn(shared: &Shared, mut version: u64, data_dir: &std::path::Path) -> Result<Turn, DbError> {
    shared.create_schema()?;
    let mut followed = Vec::new();
    follow(shared, &mut version, &mut followed)?;
    let lead = shared.try_lead()?;
    let mut imported = 0;
    if let Lead::Won { .. } = lead {
        follow(shared, &mut version, &mut followed)?;
        // A shared registry never written yet takes the devices this control kept itself.
        if version == 0 && super::store::registry_path(data_dir).exists() {
            let devices = super::store::read_only(data_dir).map_err(|e| DbError::Row(e.to_string()))?;
            if !devices.is_empty() {
                imported = shared.apply(&RegistryChanges { changed: devices, removed: Vec::new() })?;
                follow(shared, &mut version, &mut followed)?;
            }
        }
    }
    Ok(Turn { followed, lead, imported })
}

/// Reads what changed after `version` until nothing more is waiting (bounded).
fn follow(shared: &Shared, version: &mut u64, followed: &mut Vec<Followed>) -> Result<(), DbError> {
    for _ in 0..FOLLOW_READS_MAX {
        let f = shared.follow(*version)?;
        *version = f.version;
        let more = f.more;
        followed.push(f);
        if !more {
            break;
        }
    }
    Ok(())
}

impl Control {
    pub fn ha_view(&self) -> HaView {
        self.ha.borrow().view.clone()
    }

    /// Whether this control serves SIP (a standby drops what comes in).
    pub fn is_active(&self) -> bool {
        self.ha.borrow().view.mode != Mode::Standby
    }

    fn shared(&self) -> Option<std::sync::Arc<super::store::Registry>> {
        self.registry.shared().is_some().then(|| self.registry.clone())
    }

    pub(super) async fn lease_loop(self: Rc<Self>) {
        let lease = Duration::from_secs(self.shard.config.registry.lease_s);
        loop {
            if self.is_active() { self.active_turn(lease).await } else { self.standby_turn().await }
            glommio::timer::sleep(lease / 3).await;
        }
    }

    async fn standby_turn(self: &Rc<Self>) {
        let Some(registry) = self.shared() else { return };
        let version = self.ha.borrow().view.version;
        let data_dir = self.shard.config.data_dir.clone();
        let started = Instant::now();
        let turn = glommio::executor()
            .spawn_blocking(move || standby_turn(registry.shared().expect("shared registry"), version, &data_dir))
            .await;
        let turn = match turn {
            Ok(t) => t,
            Err(error) => {
                let text = error.to_string();
                if self.ha.borrow().view.last_error.as_deref() != Some(text.as_str()) {
                    tracing::warn!(%error, "shared registry: cannot follow it or try for the lease; will retry");
                }
                self.ha.borrow_mut().view.last_error = Some(text);
                return;
            }
        };
        let mut taken = 0;
        let mut skipped = 0;
        {
            let mut ha = self.ha.borrow_mut();
            ha.view.last_error = None;
            for f in &turn.followed {
                ha.view.version = ha.view.version.max(f.version);
            }
        }
        for f in turn.followed {
            skipped += f.skipped;
            taken += self.endpoint.borrow_mut().follow_registry(f.changes);
        }
        if skipped > 0 {
            tracing::warn!(skipped, "shared registry: rows that are not devices left out");
        }
        if taken > 0 {
            tracing::debug!(taken, "shared registry followed");
        }
        match turn.lead {
            Lead::Held { holder, expires_in_ms } => {
                let mut ha = self.ha.borrow_mut();
                if ha.view.leader.as_deref() != Some(holder.as_str()) {
                    tracing::info!(leader = %holder, expires_in_ms, "standby: another control holds the registry lease");
                }
                ha.view.leader = (!holder.is_empty()).then_some(holder);
            }
            Lead::Won { epoch } => {
                let devices = self.endpoint.borrow().device_count();
                {
                    let mut ha = self.ha.borrow_mut();
                    let me = ha.view.instance.clone();
                    let previous = ha.view.leader.replace(me);
                    ha.view.mode = Mode::Active;
                    ha.view.epoch = epoch;
                    ha.view.takeovers += 1;
                    ha.renewed_at = started;
                    tracing::info!(epoch, devices, imported = turn.imported, previous = ?previous, "registry lease won: this control is active (serving SIP)");
                }
                self.events.publish("control_active", None, None, serde_json::json!({ "instance": self.ha.borrow().view.instance, "epoch": epoch, "devices": devices }));
            }
        }
    }

    async fn active_turn(self: &Rc<Self>, lease: Duration) {
        let Some(registry) = self.shared() else { return };
        let started = Instant::now();
        let deadline = self.ha.borrow().renewed_at + lease;
        let renew = glommio::executor().spawn_blocking(move || registry.shared().expect("shared registry").renew());
        let wait = deadline.saturating_duration_since(Instant::now());
        let renewed = futures_lite::future::or(async { Some(renew.await) }, async {
            glommio::timer::sleep(wait).await;
            None
        })
        .await;
        let why = match renewed {
            Some(Ok(true)) => {
                let mut ha = self.ha.borrow_mut();
                ha.renewed_at = started;
                ha.view.last_error = None;
                return;
            }
            Some(Ok(false)) => "another control holds the registry lease now".to_string(),
            Some(Err(error)) if Instant::now() < deadline => {
                tracing::warn!(%error, "registry lease not renewed; will retry before it runs out");
                self.ha.borrow_mut().view.last_error = Some(error.to_string());
                return;
            }
            Some(Err(error)) => format!("the lease ran out unrenewed: {error}"),
            None => "the database did not answer before the lease ran out".to_string(),
        };
        self.step_down(&why);
    }

    /// No longer the active control: SIP input is dropped from now on and the process stops
    /// gracefully (its sessions BYE'd), to be started again as a standby by its supervisor.
    fn step_down(self: &Rc<Self>, why: &str) {
        {
            let mut ha = self.ha.borrow_mut();
            ha.view.mode = Mode::Standby;
            ha.view.epoch = 0;
            ha.view.last_error = Some(why.to_string());
        }
        tracing::error!(why, "registry lease lost: this control stops serving SIP and stops");
        self.events.publish("control_standby", None, None, serde_json::json!({ "instance": self.ha.borrow().view.instance, "why": why }));
        // To the process, not this thread (raise): the signal is blocked in every thread but
        // the one waiting for it.
        // SAFETY: kill(2) on our own pid with the signal the graceful stop waits for.
        unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
    }

    /// At a graceful stop: the lease goes at once, so a standby need not wait it out.
    pub(super) async fn release_lease(&self) {
        let Some(registry) = self.shared() else { return };
        if !self.is_active() {
            return;
        }
        match glommio::executor().spawn_blocking(move || registry.shared().expect("shared registry").release()).await {
            Ok(()) => tracing::info!("registry lease released"),
            Err(error) => tracing::warn!(%error, "registry lease not released: a standby takes over when it runs out"),
        }
    }
}
