//! Record plans, the driver's side: the plans and which channel follows which, kept in
//! `data_dir/record_plans.json`, and a tick each second that makes the channels follow them.
//! While its plan is in force a channel is played (live, as a viewer would ask) and its stream
//! recorded into the usual fMP4 files; a recording stream is in use, so the session is not
//! stopped for lack of viewers. A session that ends, or a play that fails, is tried again with
//! a backoff (2 s doubling to 60 s). When the plan ends the recording stops, and the session
//! too unless someone watches it (then it ends like any other once they leave). Each channel's state and last
//! error are in the API. Plans record on this engine's shards (a channel a control places on a
//! media node says so in its error).

use super::Control;
use super::record_plan::{PLAN_CHANNELS_MAX, PLANS_MAX, Plan};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
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

#[derive(Default)]
pub(super) struct RecordPlans {
    file: PlansFile,
    channels: BTreeMap<String, ChannelPlan>,
}

impl RecordPlans {
    pub(super) fn new(file: PlansFile) -> RecordPlans {
        let channels = file
            .channels
            .iter()
            .filter_map(|(key, plan)| key.split_once('/').map(|(d, c)| (key.clone(), ChannelPlan::new(d, c, plan))))
            .collect();
        RecordPlans { file, channels }
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

/// What stands for the device in a stream's key (`stream/{stream_id}`): no device has this id.
pub const STREAM_PLAN_DEVICE: &str = "stream";

impl Control {
    /// The plans (each with whether it is in force and its channels) and the channels'
    /// states.
    pub fn record_plans_json(&self) -> Value {
        let p = self.record_plans.borrow();
        let now = crate::shard::unix_s();
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
                Some(c) if c.plan == *plan => Some(c.clone()),
                _ => k.split_once('/').map(|(d, c)| ChannelPlan::new(d, c, plan)),
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
        let file = {
            let mut p = self.record_plans.borrow_mut();
            let exists = p.file.plans.contains_key(&plan.name);
            if create && exists {
                return Err(PlanError::Exists);
            }
            if !exists && p.file.plans.len() >= PLANS_MAX {
                return Err(PlanError::Full(format!("at most {PLANS_MAX} plans")));
            }
            tracing::info!(plan = plan.name, ranges = plan.ranges.len(), time_zone = plan.time_zone, "record plan set");
            p.file.plans.insert(plan.name.clone(), plan);
            p.file.clone()
        };
        self.save_record_plans(file).await
    }

    /// Removes a plan; its channels follow none any more.
    pub async fn delete_record_plan(&self, name: &str) -> Result<(), PlanError> {
        let file = {
            let mut p = self.record_plans.borrow_mut();
            if p.file.plans.remove(name).is_none() {
                return Err(PlanError::NotFound("plan"));
            }
            p.file.channels.retain(|_, plan| plan != name);
            p.file.clone()
        };
        tracing::info!(plan = name, "record plan removed");
        self.save_record_plans(file).await
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
        let file = {
            let mut p = self.record_plans.borrow_mut();
            let k = key(device_id, channel_id);
            match &plan {
                Some(name) if !p.file.plans.contains_key(name) => return Err(PlanError::NotFound("plan")),
                Some(_) if !p.file.channels.contains_key(&k) && p.file.channels.len() >= PLAN_CHANNELS_MAX => {
                    return Err(PlanError::Full(format!("at most {PLAN_CHANNELS_MAX} channels follow plans")));
                }
                Some(name) => {
                    p.file.channels.insert(k, name.clone());
                }
                None => {
                    p.file.channels.remove(&k);
                }
            }
            p.file.clone()
        };
        tracing::info!(device_id, channel_id, plan = ?plan, "record plan of a channel");
        self.save_record_plans(file).await
    }

    async fn save_record_plans(&self, file: PlansFile) -> Result<(), PlanError> {
        let path = self.shard.config.data_dir.join(RECORD_PLANS_FILE);
        glommio::executor().spawn_blocking(move || super::json_file::save(&path, &file)).await.map_err(|e| PlanError::Save(e.to_string()))
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

    /// Makes the channels follow their plans, each second, while this control is active.
    pub(super) async fn record_plan_loop(self: Rc<Self>) {
        loop {
            glommio::timer::sleep(PLAN_TICK).await;
            if self.is_active() {
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
        match self.play(device_id, channel_id, self.device_transport(device_id)).await {
            Ok(session) => match self.shard.record(session.ssrc, true).await {
                Some(_) => Ok((session.ssrc, session.stream_id)),
                None => Err("the stream is not on this engine's shards (a media node): plans record on local shards".to_string()),
            },
            Err(e) => Err(e.to_string()),
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
        let p = RecordPlans::new(file);
        let c: Vec<_> = p.channels.values().map(|c| (c.device_id.as_str(), c.channel_id.as_str(), c.state)).collect();
        assert_eq!(c, vec![("34020000001320000001", "34020000001310000001", "idle")], "a key without its parts is left out");
    }
}
