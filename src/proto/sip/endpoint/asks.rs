//! Requests whose result is the device's business answer, not the 200 to the MESSAGE:
//! DeviceStatus and PresetQuery (queries), RecordCmd, GuardCmd, AlarmCmd and HomePosition
//! (DeviceControl with a Response), DeviceConfig. Matched to the answer by (device, CmdType,
//! SN); PresetQuery answers may come in several packets (SumNum).

use super::control::{ControlError, ControlHandle};
use super::{Endpoint, Event, transaction};
use crate::proto::sip::manscdp::{self, DeviceStatus, Preset};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Asks in flight at once; more are Busy.
pub const ASKS_IN_FLIGHT_MAX: usize = 256;
/// How long the device's answer may take.
pub const ASK_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Presets kept of one answer (GB/T 28181 numbers them 1..=255).
pub const PRESETS_MAX: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceAsk {
    Status,
    Presets,
    /// RecordCmd: the device starts (true) or stops its own recording of the channel.
    Record(bool),
    /// GuardCmd: SetGuard (true) or ResetGuard.
    Guard(bool),
    /// AlarmCmd ResetAlarm.
    ResetAlarm,
    /// HomePosition: go back to `preset` after `reset_s` idle (when enabled).
    HomePosition {
        enabled: bool,
        preset: u8,
        reset_s: u32,
    },
    /// DeviceConfig BasicParam.
    Config {
        name: Option<String>,
        heartbeat_s: Option<u32>,
        heartbeat_count: Option<u32>,
    },
}

impl DeviceAsk {
    /// The CmdType of the request and of its answer.
    pub fn cmd_type(&self) -> &'static str {
        match self {
            DeviceAsk::Status => "DeviceStatus",
            DeviceAsk::Presets => "PresetQuery",
            DeviceAsk::Config { .. } => "DeviceConfig",
            _ => "DeviceControl",
        }
    }

    fn xml(&self, sn: u32, target: &str) -> String {
        let control = |element: &str, text: &str| manscdp::device_control(sn, target, element, text, "GB2312");
        match self {
            DeviceAsk::Status | DeviceAsk::Presets => manscdp::query(self.cmd_type(), sn, target, "GB2312"),
            DeviceAsk::Record(on) => control("RecordCmd", if *on { "Record" } else { "StopRecord" }),
            DeviceAsk::Guard(on) => control("GuardCmd", if *on { "SetGuard" } else { "ResetGuard" }),
            DeviceAsk::ResetAlarm => control("AlarmCmd", "ResetAlarm"),
            DeviceAsk::HomePosition { enabled, preset, reset_s } => control(
                "HomePosition",
                &format!(
                    "\r\n<Enabled>{}</Enabled>\r\n<ResetTime>{reset_s}</ResetTime>\r\n<PresetIndex>{preset}</PresetIndex>\r\n",
                    u8::from(*enabled)
                ),
            ),
            DeviceAsk::Config { name, heartbeat_s, heartbeat_count } => {
                manscdp::device_config(sn, target, name.as_deref(), *heartbeat_s, *heartbeat_count, "GB2312")
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `Result` OK.
    Done,
    Status(DeviceStatus),
    Presets(Vec<Preset>),
}

fn sorted(mut presets: Vec<Preset>) -> Vec<Preset> {
    presets.sort_by_key(|p| p.id);
    presets
}

#[derive(Debug)]
struct Pending {
    handle: ControlHandle,
    deadline: Instant,
    presets: Vec<Preset>,
}

#[derive(Debug, Default)]
pub(super) struct Asks {
    pending: HashMap<(String, &'static str, u32), Pending>,
}

impl Endpoint {
    /// Sends `ask` for a channel (or the device itself); the answer comes as `Event::AskDone`.
    pub(super) fn device_ask(&mut self, now: Instant, device_id: &str, target: &str, ask: DeviceAsk) -> Result<ControlHandle, ControlError> {
        let peer = self.reachable_channel(now, device_id, target)?;
        if self.asks.pending.len() >= ASKS_IN_FLIGHT_MAX {
            return Err(ControlError::Busy);
        }
        let sn = self.new_sn();
        let handle = self.new_control_handle();
        let cmd_type = ask.cmd_type();
        let purpose = transaction::Purpose::Ask { device_id: device_id.to_string(), cmd_type, sn };
        if !self.send_manscdp(now, device_id, peer, &ask.xml(sn, target), purpose) {
            return Err(ControlError::Busy);
        }
        self.asks.pending.insert((device_id.to_string(), cmd_type, sn), Pending { handle, deadline: now + ASK_ANSWER_TIMEOUT, presets: Vec::new() });
        Ok(handle)
    }

    fn finish_ask(&mut self, key: &(String, &'static str, u32), result: Result<Answer, ControlError>) {
        if let Some(p) = self.asks.pending.remove(key) {
            self.emit(Event::AskDone { handle: p.handle, result });
        }
    }

    /// The device's answer (`Result`, status or a packet of presets) to an ask.
    pub(super) fn ask_answered(&mut self, device_id: &str, cmd_type: &str, sn: Option<u32>, answer: manscdp::Body) -> bool {
        let Some(cmd_type) = ["DeviceStatus", "PresetQuery", "DeviceConfig", "DeviceControl"].into_iter().find(|c| *c == cmd_type) else {
            return false;
        };
        let Some(key) = sn.map(|sn| (device_id.to_string(), cmd_type, sn)) else { return false };
        let Some(p) = self.asks.pending.get_mut(&key) else { return false };
        let result = match answer {
            manscdp::Body::Result { result } if result.eq_ignore_ascii_case("OK") => Ok(Answer::Done),
            manscdp::Body::Result { result } => Err(ControlError::DeviceError(result)),
            manscdp::Body::DeviceStatus(s) => Ok(Answer::Status(s)),
            manscdp::Body::Presets { sum_num, items } => {
                for it in items {
                    if p.presets.len() < PRESETS_MAX && !p.presets.iter().any(|q| q.id == it.id) {
                        p.presets.push(it);
                    }
                }
                if p.presets.len() < sum_num.min(PRESETS_MAX) {
                    return true; // more packets to come
                }
                Ok(Answer::Presets(sorted(std::mem::take(&mut p.presets))))
            }
            _ => return false,
        };
        self.finish_ask(&key, result);
        true
    }

    /// The ask's MESSAGE was refused (or never answered).
    pub(super) fn ask_refused(&mut self, device_id: &str, cmd_type: &'static str, sn: u32, status: Option<u16>) {
        let error = status.map_or(ControlError::Timeout, ControlError::Rejected);
        self.finish_ask(&(device_id.to_string(), cmd_type, sn), Err(error));
    }

    /// Asks past their deadline: presets that came are the answer, anything else timed out.
    pub(super) fn expire_asks(&mut self, now: Instant) {
        let due: Vec<_> = self.asks.pending.iter().filter(|(_, p)| p.deadline <= now).map(|(k, _)| k.clone()).collect();
        for key in due {
            let presets = self.asks.pending.get_mut(&key).map(|p| std::mem::take(&mut p.presets)).unwrap_or_default();
            let result = if presets.is_empty() { Err(ControlError::Timeout) } else { Ok(Answer::Presets(sorted(presets))) };
            self.finish_ask(&key, result);
        }
    }
}
