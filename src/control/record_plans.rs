//! Record plans, the driver's side: the plans and which channel follows which, kept in
//! `data_dir/record_plans.json` (with `registry.postgres`, in the shared registry instead), and
//! a tick each second that makes the channels follow them.
//! While its plan is in force a channel is played (live, as a viewer would ask) and its stream
//! recorded into the usual fMP4 files; a recording stream is in use, so the session is not
//! stopped for lack of viewers. A session that ends, or a play that fails, is tried again with
//! a backoff (2 s doubling to 60 s). When the plan ends the recording stops, and the session
//! too unless someone watches it (then it ends like any other once they leave). Each channel's state and last
//! error are in the API. Plans record on this engine's shards, or, on a control that places
//! its live streams on media nodes, on the node the stream is placed on: `startRecord` (asked
//! again until the node has the stream), `stopRecord` at the plan's end; the planned stream
//! counts as in use there too. The files the node closes (`on_record_mp4`) are listed by the
//! records API with the node's URL; they are remembered in memory only, and the plan's
//! `max_age_days` does not reach them (the node keeps its files as it is told).
//!
//! With a shared registry the active control drives the plans, as it drives every device (a
//! standby serves no SIP: it could not invite a channel, and two controls recording one
//! channel would ask the device for two streams). Changes are taken by the active control
//! only (the API answers a standby's 503) and written to the registry fenced by the lease;
//! a standby reads them each tick, so its API lists them (each channel `standby`), and when it
//! takes over it reads them once more before it drives them. A shared registry that has no
//! plans yet takes the `record_plans.json` of the first control to hold the lease.

use super::Control;
use super::node_call::NodeCall;
use super::nodes::NodeError;
use super::record_plan::{PLAN_CHANNELS_MAX, PLANS_MAX, Plan};
use super::store::shared::DbError;
use crate::shard::record_index::NodeRecord;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

pub const RECORD_PLANS_FILE: &str = "record_plans.json";
/// How often the channels are made to follow their plans.
const PLAN_TICK: Duration = Duration::from_secs(1);
/// A failed start is tried again after this, doubling up to the most.
const PLAN_RETRY_MIN: Duration = Duration::from_secs(2);
const PLAN_RETRY_MAX: Duration = Duration::from_secs(60);
/// Channels started in one tick at most: a thousand channels whose plan begins at 08:00 are
/// invited over some seconds, not in one burst.
const PLAN_STARTS_PER_TICK_MAX: usize = 32;
const _: () = assert!(PLAN_RETRY_MIN.as_secs() <= PLAN_RETRY_MAX.as_secs());

/// What is kept: the plans by name, and each channel's plan (`{device}/{channel}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlansFile {
    pub plans: BTreeMap<String, Plan>,
    pub channels: BTreeMap<String, String>,
}

/// A channel following a plan, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelPlan {
    pub device_id: String,
    pub channel_id: String,
    pub plan: String,
    /// The plan is in force now.
    pub active: bool,
    /// idle (the plan is not in force), starting, recording, retrying (after `last_error`).
    pub state: &'static str,
    pub last_error: Option<String>,
    /// Unix ms of the state's start.
    pub since_ms: u64,
    pub stream_id: Option<String>,
    #[serde(skip)]
    ssrc: Option<u32>,
    #[serde(skip)]
    next_try: Option<Instant>,
    #[serde(skip)]
    backoff: Duration,
}

impl ChannelPlan {
    fn new(device_id: &str, channel_id: &str, plan: &str) -> ChannelPlan {
        ChannelPlan {
            device_id: device_id.into(),
            channel_id: channel_id.into(),
            plan: plan.into(),
            active: false,
            state: "idle",
            last_error: None,
            since_ms: crate::shard::unix_ms(),
            stream_id: None,
            ssrc: None,
            next_try: None,
            backoff: PLAN_RETRY_MIN,
        }
    }

    fn set(&mut self, state: &'static str) {
        if self.state != state {
            self.state = state;
            self.since_ms = crate::shard::unix_ms();
        }
    }
}

pub(super) struct RecordPlans {
    /// The plans in force (as saved).
    file: PlansFile,
    channels: BTreeMap<String, ChannelPlan>,
    /// One change at a time (made on a copy, saved, then in force), and with a shared registry
    /// one read of its plans: a read cannot replace a change not saved yet, nor two saves land
    /// out of order.
    gate: Rc<glommio::sync::Semaphore>,
    /// With a shared registry: where this control stands against the registry's plans.
    shared: Option<SharedPlans>,
    /// Planned streams placed on media nodes (newest last), at most `PLAN_NODE_STREAMS_MAX`.
    node_streams: VecDeque<NodeStream>,
}

/// A planned stream placed on a media node: whose its recordings there are.
#[derive(Debug, Clone)]
struct NodeStream {
    ssrc: u32,
    node: String,
    device_id: String,
    channel_id: String,
}

/// The plans of a shared registry, as this control follows them.
#[derive(Debug, Default)]
struct SharedPlans {
    /// The registry row's version the plans in force are (0: none read yet).
    version: u64,
    /// Read since this control became active: it drives nothing before, since the control it
    /// took over from may have changed them after this one last read them.
    caught_up: bool,
    /// This control's own `record_plans.json`, for a registry that has no plans yet.
    local: Option<PlansFile>,
    /// The last failure to read the registry's plans (logged once until it changes).
    last_error: Option<String>,
}

impl RecordPlans {
    /// `shared`: the plans live in a shared registry; `file` (this control's own) is only
    /// taken there when the registry has none.
    pub(super) fn new(file: PlansFile, shared: bool) -> RecordPlans {
        let (file, shared) = if shared { (PlansFile::default(), Some(SharedPlans { local: Some(file), ..Default::default() })) } else { (file, None) };
        let channels = file
            .channels
            .iter()
            .filter_map(|(key, plan)| key.split_once('/').map(|(d, c)| (key.clone(), ChannelPlan::new(d, c, plan))))
            .collect();
        RecordPlans { file, channels, gate: Rc::new(glommio::sync::Semaphore::new(1)), shared, node_streams: VecDeque::new() }
    }

    /// The shared registry's plans at row `version` are in force (this control's own file is
    /// no longer wanted there).
    fn take_shared(&mut self, file: PlansFile, version: u64) {
        self.file = file;
        let shared = self.shared.as_mut().expect("a shared registry");
        shared.version = version;
        shared.local = None;
    }
}

/// Why a change to the plans was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    Invalid(String),
    NotFound(&'static str),
    Exists,
    /// A limit, named.
    Full(String),
    Save(String),
}

impl PlanError {
    pub fn http(&self) -> (u16, &'static str) {
        match self {
            PlanError::Invalid(_) => (400, "bad_plan"),
            PlanError::NotFound(_) => (404, "not_found"),
            PlanError::Exists => (409, "exists"),
            PlanError::Full(_) => (409, "too_many"),
            PlanError::Save(_) => (500, "not_saved"),
        }
    }
}

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlanError::Invalid(why) => f.write_str(why),
            PlanError::NotFound(what) => write!(f, "no such {what}"),
            PlanError::Exists => f.write_str("a plan of that name exists (PUT changes it)"),
            PlanError::Full(what) => f.write_str(what),
            PlanError::Save(why) => write!(f, "the plans could not be saved: {why}"),
        }
    }
}

fn key(device_id: &str, channel_id: &str) -> String {
    format!("{device_id}/{channel_id}")
}

/// How long a node is asked to record a planned stream before it has it (its first packets
/// come some time after the device's answer), and how often.
const PLAN_NODE_RECORD_WAIT: Duration = Duration::from_secs(10);
const PLAN_NODE_RECORD_POLL: Duration = Duration::from_millis(200);
const _: () = assert!(PLAN_NODE_RECORD_POLL.as_millis() * 10 <= PLAN_NODE_RECORD_WAIT.as_millis());
/// ZLMediaKit's code for a stream the node does not have (yet).
const NODE_NOT_FOUND: i64 = -500;
/// Planned streams placed on media nodes remembered (for their `on_record_mp4`, which may
/// come after the plan ended); the oldest is forgotten first.
const PLAN_NODE_STREAMS_MAX: usize = 2 * PLAN_CHANNELS_MAX;

/// A media node's recording file name or URL kept at most this long (ZLMediaKit's are under
/// 200 bytes: `record/rtp/{stream}/{date}/{time}.mp4`).
const NODE_RECORD_TEXT_BYTES_MAX: usize = 1024;

/// What stands for the device in a stream's key (`stream/{stream_id}`): no device has this id.
pub const STREAM_PLAN_DEVICE: &str = "stream";

impl Control {
    /// The plans (each with whether it is in force and its channels) and the channels'
    /// states (on a standby each is `standby`: the active control drives it).
    pub fn record_plans_json(&self) -> Value {
        let p = self.record_plans.borrow();
        let now = crate::shard::unix_s();
        let standby = !self.is_active();
        let plans: Vec<Value> = p
            .file
            .plans
            .values()
            .map(|plan| {
                let channels: Vec<&String> = p.file.channels.iter().filter(|(_, name)| **name == plan.name).map(|(k, _)| k).collect();
                json!({ "name": plan.name, "time_zone": plan.time_zone, "ranges": plan.ranges, "max_age_days": plan.max_age_days, "active": plan.active_at(now), "channels": channels })
            })
            .collect();
        // As the file has them now (the tick catches up within a second).
        let channels: Vec<ChannelPlan> = p
            .file
            .channels
            .iter()
            .filter_map(|(k, plan)| match p.channels.get(k) {
                Some(c) if c.plan == *plan && !standby => Some(c.clone()),
                _ => k.split_once('/').map(|(d, c)| {
                    let mut c = ChannelPlan::new(d, c, plan);
                    c.active = p.file.plans.get(plan).is_some_and(|plan| plan.active_at(now));
                    if standby {
                        c.state = "standby";
                    }
                    c
                }),
            })
            .collect();
        json!({ "plans": plans, "channels": channels })
    }

    pub fn record_plan_json(&self, name: &str) -> Option<Value> {
        let all = self.record_plans_json();
        all["plans"].as_array()?.iter().find(|p| p["name"] == name).cloned()
    }

    /// Adds a plan (`create`: refused when one has its name) or changes one.
    pub async fn put_record_plan(&self, plan: Plan, create: bool) -> Result<(), PlanError> {
        plan.validate().map_err(PlanError::Invalid)?;
        let (name, ranges, time_zone) = (plan.name.clone(), plan.ranges.len(), plan.time_zone.clone());
        self.change_record_plans(|file| {
            let exists = file.plans.contains_key(&plan.name);
            if create && exists {
                return Err(PlanError::Exists);
            }
            if !exists && file.plans.len() >= PLANS_MAX {
                return Err(PlanError::Full(format!("at most {PLANS_MAX} plans")));
            }
            file.plans.insert(plan.name.clone(), plan);
            Ok(())
        })
        .await?;
        tracing::info!(plan = name, ranges, time_zone, "record plan set");
        Ok(())
    }

    /// Removes a plan; its channels follow none any more.
    pub async fn delete_record_plan(&self, name: &str) -> Result<(), PlanError> {
        self.change_record_plans(|file| {
            if file.plans.remove(name).is_none() {
                return Err(PlanError::NotFound("plan"));
            }
            file.channels.retain(|_, plan| plan != name);
            Ok(())
        })
        .await?;
        tracing::info!(plan = name, "record plan removed");
        Ok(())
    }

    /// Has a device's channel follow `plan` (None: no plan).
    pub async fn assign_record_plan(&self, device_id: &str, channel_id: &str, plan: Option<String>) -> Result<(), PlanError> {
        if !self.has_channel(device_id, channel_id) {
            return Err(PlanError::NotFound("channel of a known device"));
        }
        self.assign_plan_key(device_id, channel_id, plan).await
    }

    /// Has a stream that is no device channel's (a pull proxy, an RTMP push, an API or
    /// static stream) follow `plan`: recorded while the plan is in force and the stream is
    /// open. It must be open when assigned (its id is then known to be a stream's).
    pub async fn assign_stream_record_plan(&self, stream_id: &str, plan: Option<String>) -> Result<(), PlanError> {
        let Some(ssrc) = crate::proto::ssrc::parse_stream_id(stream_id) else { return Err(PlanError::NotFound("stream")) };
        let kept = self.record_plans.borrow().file.channels.contains_key(&key(STREAM_PLAN_DEVICE, stream_id));
        if plan.is_some() && !kept && self.shard.stream_info(ssrc).await.is_none() {
            return Err(PlanError::NotFound("stream"));
        }
        self.assign_plan_key(STREAM_PLAN_DEVICE, stream_id, plan).await
    }

    async fn assign_plan_key(&self, device_id: &str, channel_id: &str, plan: Option<String>) -> Result<(), PlanError> {
        let k = key(device_id, channel_id);
        self.change_record_plans(|file| {
            match &plan {
                Some(name) if !file.plans.contains_key(name) => return Err(PlanError::NotFound("plan")),
                Some(_) if !file.channels.contains_key(&k) && file.channels.len() >= PLAN_CHANNELS_MAX => {
                    return Err(PlanError::Full(format!("at most {PLAN_CHANNELS_MAX} channels follow plans")));
                }
                Some(name) => {
                    file.channels.insert(k, name.clone());
                }
                None => {
                    file.channels.remove(&k);
                }
            }
            Ok(())
        })
        .await?;
        tracing::info!(device_id, channel_id, plan = ?plan, "record plan of a channel");
        Ok(())
    }

    /// Makes `change` on a copy of the plans and saves it (this control's file, or the shared
    /// registry); in force only once saved, so a refused save changes nothing. One change at a
    /// time, so none is lost to another and saves land in order.
    async fn change_record_plans(&self, change: impl FnOnce(&mut PlansFile) -> Result<(), PlanError>) -> Result<(), PlanError> {
        let gate = self.record_plans.borrow().gate.clone();
        let _one_at_a_time = gate.acquire_permit(1).await.map_err(|e| PlanError::Save(e.to_string()))?;
        // Just active: the registry's plans first (the change is made to the latest).
        if self.record_plans.borrow().shared.as_ref().is_some_and(|s| !s.caught_up) {
            self.follow_record_plans().await.map_err(|e| PlanError::Save(e.to_string()))?;
        }
        let mut file = self.record_plans.borrow().file.clone();
        change(&mut file)?;
        let version = match self.registry.shared() {
            None => {
                let path = self.shard.config.data_dir.join(RECORD_PLANS_FILE);
                let saved = file.clone();
                glommio::executor().spawn_blocking(move || super::json_file::save(&path, &saved)).await.map_err(|e| PlanError::Save(e.to_string()))?;
                None
            }
            Some(_) => Some(self.save_shared_plans(&file).await.map_err(|e| PlanError::Save(e.to_string()))?),
        };
        let mut p = self.record_plans.borrow_mut();
        p.file = file;
        if let (Some(shared), Some(version)) = (p.shared.as_mut(), version) {
            shared.version = version;
        }
        Ok(())
    }

    /// Writes the plans to the shared registry (refused unless this control holds the lease);
    /// the row's version now.
    async fn save_shared_plans(&self, file: &PlansFile) -> Result<u64, DbError> {
        let body = serde_json::to_string(file).map_err(|e| DbError::Row(e.to_string()))?;
        let registry = self.registry.clone();
        glommio::executor()
            .spawn_blocking(move || {
                let shared = registry.shared().expect("a shared registry");
                shared.create_schema()?;
                shared.save_record_plans(&body)
            })
            .await
    }

    /// Takes the shared registry's plans when they changed since last read. Active (it was so
    /// before the read began): caught up, and a registry without plans takes this control's
    /// own. Called holding the gate.
    async fn follow_record_plans(&self) -> Result<(), DbError> {
        let active = self.is_active();
        let version = self.record_plans.borrow().shared.as_ref().map_or(0, |s| s.version);
        let registry = self.registry.clone();
        let read = glommio::executor()
            .spawn_blocking(move || {
                let shared = registry.shared().expect("a shared registry");
                shared.create_schema()?;
                shared.record_plans_after(version)
            })
            .await?;
        if let Some((body, version)) = read {
            let file: PlansFile = serde_json::from_str(&body).map_err(|e| DbError::Row(format!("record plans: {e}")))?;
            tracing::info!(version, plans = file.plans.len(), channels = file.channels.len(), "record plans taken from the shared registry");
            self.record_plans.borrow_mut().take_shared(file, version);
        } else if active && version == 0 {
            // Nobody wrote plans to this registry yet: this control's own go there.
            // Kept until written: a failed write is tried again at the next read.
            let local = self.record_plans.borrow().shared.as_ref().and_then(|s| s.local.clone()).unwrap_or_default();
            if local != PlansFile::default() {
                let version = self.save_shared_plans(&local).await?;
                tracing::info!(version, plans = local.plans.len(), channels = local.channels.len(), "record plans of this control's data_dir written to the shared registry, which had none");
                self.record_plans.borrow_mut().take_shared(local, version);
            }
        }
        if active {
            self.record_plans.borrow_mut().shared.as_mut().expect("a shared registry").caught_up = true;
        }
        Ok(())
    }

    /// With a shared registry, a standby (and a control that just became active) reads its
    /// plans; a failure is logged once until it changes. False while the plans in force may
    /// be behind the registry's.
    async fn plans_followed(&self) -> bool {
        let needed = self.record_plans.borrow().shared.as_ref().map(|s| !s.caught_up || !self.is_active());
        let Some(needed) = needed else { return true };
        if !needed {
            return true;
        }
        let gate = self.record_plans.borrow().gate.clone();
        let Ok(_one_at_a_time) = gate.acquire_permit(1).await else { return false };
        let result = self.follow_record_plans().await;
        let mut p = self.record_plans.borrow_mut();
        let shared = p.shared.as_mut().expect("a shared registry");
        match result {
            Ok(()) => {
                shared.last_error = None;
                shared.caught_up
            }
            Err(error) => {
                let text = error.to_string();
                if shared.last_error.as_deref() != Some(text.as_str()) {
                    tracing::warn!(%error, caught_up = shared.caught_up, "record plans: cannot read the shared registry's; will retry");
                }
                shared.last_error = Some(text);
                false
            }
        }
    }

    /// The streams plans record now (or are starting to): in use, whoever watches.
    pub(super) fn planned_streams(&self) -> HashSet<u32> {
        self.record_plans.borrow().channels.values().filter_map(|c| c.ssrc).collect()
    }

    /// `on_record_mp4` from `node` for `stream_id`: kept in the recordings index when the
    /// stream is a plan's there. `start_s` and `duration_ms` as the hook says (`start_time`,
    /// `time_len`).
    pub(super) fn plan_recorded_on_node(&self, node: &str, stream_id: &str, file: &super::downloads::NodeFile, start_s: u64, duration_ms: u64) {
        let Some(ssrc) = crate::proto::ssrc::parse_stream_id(stream_id) else { return };
        let Some(s) = self.record_plans.borrow().node_streams.iter().rev().find(|s| s.ssrc == ssrc && s.node == node).cloned() else { return };
        // Kept on disk up to NODE_RECORDS_MAX rows: each of bounded size, whatever a node says.
        if file.name.len() > NODE_RECORD_TEXT_BYTES_MAX || file.url.len() > NODE_RECORD_TEXT_BYTES_MAX {
            tracing::warn!(node, stream_id, name_bytes = file.name.len(), url_bytes = file.url.len(), "record plan: a media node's recording with a name or URL too long is not kept");
            return;
        }
        tracing::info!(node, stream_id, device_id = s.device_id, channel_id = s.channel_id, file = %file.name, bytes = file.bytes, duration_ms, "record plan: recording closed on its media node");
        let record = NodeRecord {
            node: node.to_string(),
            stream_id: stream_id.to_string(),
            device_id: s.device_id,
            channel_id: s.channel_id,
            start_unix_ms: start_s.saturating_mul(1000), // as the node said it: any number
            duration_ms,
            name: file.name.clone(),
            url: file.url.clone(),
            bytes: file.bytes,
        };
        let index = self.shard.record_writers.index.clone();
        glommio::spawn_local(async move {
            let (node, name) = (record.node.clone(), record.name.clone());
            if let Err(error) = glommio::executor().spawn_blocking(move || index.node_recorded(&record)).await {
                tracing::warn!(node, file = %name, %error, "record plan: the media node's recording could not be kept in the index");
            }
        })
        .detach();
    }

    /// Channels whose plan keeps their recordings for its own time: channel id to days.
    pub fn plan_max_ages(&self) -> std::collections::HashMap<String, u64> {
        let p = self.record_plans.borrow();
        p.file
            .channels
            .iter()
            .filter_map(|(k, plan)| Some((k.split_once('/')?.1.to_string(), p.file.plans.get(plan)?.max_age_days?)))
            .collect()
    }

    /// Makes the channels follow their plans, each second, while this control is active (and,
    /// with a shared registry, has read the registry's plans since it became so).
    pub(super) async fn record_plan_loop(self: Rc<Self>) {
        loop {
            glommio::timer::sleep(PLAN_TICK).await;
            if self.plans_followed().await && self.is_active() {
                // Streams with a plan: which are open, and recording (asked only when some are).
                let any_stream = self.record_plans.borrow().file.channels.keys().any(|k| k.starts_with(STREAM_PLAN_DEVICE) && k[STREAM_PLAN_DEVICE.len()..].starts_with('/'));
                let streams = if any_stream { self.shard.list_streams().await.into_iter().map(|i| (i.ssrc, i.record_on)).collect() } else { Default::default() };
                self.plan_tick(crate::shard::unix_s(), Instant::now(), &streams);
            }
        }
    }

    /// One look at every channel with a plan: the channels kept in step with the file, then
    /// each started, checked or stopped as its plan says.
    /// `streams`: each open stream's SSRC and whether it records.
    fn plan_tick(self: &Rc<Self>, now_s: u64, now: Instant, streams: &std::collections::HashMap<u32, bool>) {
        let mut live: std::collections::HashMap<String, u32> =
            self.endpoint().sessions().filter(|s| s.kind == "live").map(|s| (key(&s.device_id, &s.channel_id), s.ssrc)).collect();
        // A stream's "session" is the stream recording.
        for (k, c) in self.record_plans.borrow().channels.iter().filter(|(_, c)| c.device_id == STREAM_PLAN_DEVICE) {
            if let Some(ssrc) = c.ssrc.filter(|s| streams.get(s) == Some(&true)) {
                live.insert(k.clone(), ssrc);
            }
        }
        let mut starts = Vec::new();
        let mut stops = Vec::new();
        {
            let mut guard = self.record_plans.borrow_mut();
            let p = &mut *guard;
            // Channels whose plan was taken away or changed since the last tick stop what they
            // recorded; those given one (again) start idle.
            let gone: Vec<String> = p.channels.iter().filter(|(k, c)| p.file.channels.get(*k) != Some(&c.plan)).map(|(k, _)| k.clone()).collect();
            for k in gone {
                stops.extend(p.channels.remove(&k).and_then(|c| c.ssrc));
            }
            for (k, plan) in &p.file.channels {
                if !p.channels.contains_key(k)
                    && let Some((d, c)) = k.split_once('/')
                {
                    p.channels.insert(k.clone(), ChannelPlan::new(d, c, plan));
                }
            }
            for (k, c) in p.channels.iter_mut() {
                c.active = p.file.plans.get(&c.plan).is_some_and(|plan| plan.active_at(now_s));
                match (c.active, c.state) {
                    (false, "idle") => {}
                    (false, _) => {
                        stops.extend(c.ssrc.take());
                        c.stream_id = None;
                        c.next_try = None;
                        c.backoff = PLAN_RETRY_MIN;
                        c.set("idle");
                    }
                    (true, "starting") => {}
                    // The session it recorded ended (the device went, a BYE): again, at once.
                    (true, "recording") if c.ssrc.is_none_or(|s| live.get(k) != Some(&s)) => {
                        c.last_error = Some(if c.device_id == STREAM_PLAN_DEVICE { "the stream closed or stopped recording" } else { "the session ended" }.into());
                        c.ssrc = None;
                        c.set("retrying");
                        c.next_try = Some(now);
                    }
                    (true, "recording") => {}
                    (true, _) => {
                        if c.next_try.is_none_or(|t| now >= t) && starts.len() < PLAN_STARTS_PER_TICK_MAX {
                            c.set("starting");
                            starts.push((c.device_id.clone(), c.channel_id.clone()));
                        }
                    }
                }
            }
        }
        for ssrc in stops {
            glommio::spawn_local(self.clone().plan_stop(ssrc)).detach();
        }
        for (device_id, channel_id) in starts {
            glommio::spawn_local(self.clone().plan_start(device_id, channel_id)).detach();
        }
    }

    /// A plan's end: the recording stops, and the session with it when nobody else uses the
    /// stream (no viewer, HLS or sender); else it goes on for them.
    async fn plan_stop(self: Rc<Self>, ssrc: u32) {
        if let (Some(placement), Some(nodes)) = (self.node_of(ssrc), &self.nodes) {
            // The node closes the file (`on_record_mp4` names it) and keeps the stream for
            // whoever watches it there (a node stream is in use only while watched, as the
            // session check counts it).
            self.tell_node(&placement.node, &NodeCall::StopRecord { ssrc }).await;
            let watched = nodes.send(&placement.node, &NodeCall::GetMediaInfo { ssrc }).await.is_ok_and(|m| m["totalReaderCount"].as_u64().unwrap_or(0) > 0);
            if !watched && self.stop_session(ssrc) {
                tracing::info!(ssrc, node = placement.node, "record plan ended: the node stopped recording and the session nobody watches is stopped");
            }
            return;
        }
        self.shard.record(ssrc, false).await;
        let unused = self.shard.stream_info(ssrc).await.is_some_and(|s| s.subscribers == 0 && !s.hls && s.senders == 0 && !s.recording);
        if unused && self.stop_session(ssrc) {
            tracing::info!(ssrc, "record plan ended: the session nobody watches is stopped");
        }
    }

    /// Plays a channel whose plan is in force and records its stream; the state says how it
    /// went.
    async fn plan_start(self: Rc<Self>, device_id: String, channel_id: String) {
        let result = if device_id == STREAM_PLAN_DEVICE {
            self.plan_start_stream(&channel_id).await
        } else {
            self.plan_start_channel(&device_id, &channel_id).await
        };
        self.plan_started(device_id, channel_id, result);
    }

    /// A stream with a plan records (an on-demand proxy dials its source for it).
    async fn plan_start_stream(&self, stream_id: &str) -> Result<(u32, String), String> {
        let ssrc = crate::proto::ssrc::parse_stream_id(stream_id).ok_or("not a stream id")?;
        match self.shard.record(ssrc, true).await {
            Some(_) => Ok((ssrc, crate::proto::ssrc::stream_id(ssrc))),
            None => Err("the stream is not open (a publisher not publishing, a proxy deleted)".to_string()),
        }
    }

    async fn plan_start_channel(self: &Rc<Self>, device_id: &str, channel_id: &str) -> Result<(u32, String), String> {
        let session = self.play(device_id, channel_id, self.device_transport(device_id)).await.map_err(|e| e.to_string())?;
        if let Some(placement) = self.node_of(session.ssrc) {
            return self.plan_record_on_node(device_id, channel_id, &placement.node, session.ssrc).await.map(|()| (session.ssrc, session.stream_id));
        }
        match self.shard.record(session.ssrc, true).await {
            Some(_) => Ok((session.ssrc, session.stream_id)),
            None => Err("the stream is neither on this engine's shards nor placed on a media node".to_string()),
        }
    }

    /// Has the node a planned channel's stream was placed on record it (`startRecord`), asked
    /// again until the node has the stream (it has it once the device's first packets came).
    /// The stream counts as the plan's from now, so the session check does not stop it for
    /// lack of viewers meanwhile.
    async fn plan_record_on_node(self: &Rc<Self>, device_id: &str, channel_id: &str, node: &str, ssrc: u32) -> Result<(), String> {
        let Some(nodes) = &self.nodes else { return Err("no media nodes".into()) };
        {
            let mut p = self.record_plans.borrow_mut();
            match p.channels.get_mut(&key(device_id, channel_id)).filter(|c| c.state == "starting") {
                Some(c) => c.ssrc = Some(ssrc),
                // The plan ended or changed meanwhile: nothing to record.
                None => return Err("the plan ended while the channel was invited".into()),
            }
            p.node_streams.retain(|s| s.ssrc != ssrc);
            if p.node_streams.len() >= PLAN_NODE_STREAMS_MAX {
                p.node_streams.pop_front();
            }
            p.node_streams.push_back(NodeStream { ssrc, node: node.to_string(), device_id: device_id.to_string(), channel_id: channel_id.to_string() });
        }
        let call = NodeCall::StartRecord { ssrc };
        let deadline = Instant::now() + PLAN_NODE_RECORD_WAIT;
        let mut answer = nodes.send(node, &call).await;
        while matches!(&answer, Err(NodeError::Refused { code: Some(NODE_NOT_FOUND), .. })) && Instant::now() < deadline {
            glommio::timer::sleep(PLAN_NODE_RECORD_POLL).await;
            answer = nodes.send(node, &call).await;
        }
        let still_planned = self.record_plans.borrow().channels.get(&key(device_id, channel_id)).is_some_and(|c| c.ssrc == Some(ssrc));
        match answer {
            // The plan ended meanwhile (its stop may have reached the node first): undone.
            Ok(_) if !still_planned => {
                self.tell_node(node, &NodeCall::StopRecord { ssrc }).await;
                Err("the plan ended while the media node was asked to record".into())
            }
            Ok(_) => {
                tracing::info!(device_id, channel_id, node, ssrc, "record plan: the media node records the stream");
                Ok(())
            }
            // The ssrc is dropped by `plan_started`: the session, no longer the plan's, ends
            // for lack of viewers unless someone watches it.
            Err(error) => Err(format!("media node {node} did not record the stream (startRecord): {error}")),
        }
    }

    /// How a start went, into the channel's state.
    fn plan_started(&self, device_id: String, channel_id: String, result: Result<(u32, String), String>) {
        let mut p = self.record_plans.borrow_mut();
        let Some(c) = p.channels.get_mut(&key(&device_id, &channel_id)).filter(|c| c.state == "starting") else {
            // The plan ended or changed meanwhile: the next tick stops what this started.
            return;
        };
        match result {
            Ok((ssrc, stream_id)) => {
                tracing::info!(device_id, channel_id, plan = c.plan, stream_id, "record plan: recording");
                c.ssrc = Some(ssrc);
                c.stream_id = Some(stream_id.clone());
                c.last_error = None;
                c.backoff = PLAN_RETRY_MIN;
                c.set("recording");
                drop(p);
                // A stream's plan names no device or channel.
                let (device, channel) = if device_id == STREAM_PLAN_DEVICE { (None, None) } else { (Some(device_id.as_str()), Some(channel_id.as_str())) };
                self.events.publish("record_plan_started", device, channel, json!({ "stream_id": stream_id }));
            }
            Err(error) => {
                tracing::warn!(device_id, channel_id, plan = c.plan, %error, retry_s = c.backoff.as_secs(), "record plan: cannot record");
                c.ssrc = None;
                c.last_error = Some(error);
                c.next_try = Some(Instant::now() + c.backoff);
                c.backoff = (c.backoff * 2).min(PLAN_RETRY_MAX);
                c.set("retrying");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kept_file_names_each_channel_by_device_and_channel() {
        let mut file = PlansFile::default();
        file.channels.insert(key("34020000001320000001", "34020000001310000001"), "day".into());
        file.channels.insert("no-slash".into(), "day".into());
        let p = RecordPlans::new(file, false);
        let c: Vec<_> = p.channels.values().map(|c| (c.device_id.as_str(), c.channel_id.as_str(), c.state)).collect();
        assert_eq!(c, vec![("34020000001320000001", "34020000001310000001", "idle")], "a key without its parts is left out");
    }
}
