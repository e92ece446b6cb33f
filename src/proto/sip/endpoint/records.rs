//! RecordInfo: what a device (an NVR, a camera's SD card) recorded for a channel in a time
//! range. The answer comes in MESSAGEs of a few items each, matched by (device, SN) and merged
//! by SumNum: repeats dropped, any order, SumNum 0 is an empty answer, and what arrived by the
//! deadline is returned marked incomplete.

use super::control::{ControlError, ControlHandle};
use super::{Endpoint, Event, transaction};
use crate::proto::sip::gbtime;
use crate::proto::sip::manscdp::{self, RecordItem};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::time::Instant;

/// RecordInfo queries in flight at once; more are Busy.
pub const RECORD_QUERIES_MAX: usize = 64;
/// Items kept of one answer (an NVR lists a month of files as thousands); the rest are
/// dropped and the answer marked incomplete.
pub const RECORD_ITEMS_MAX: usize = 10_000;

/// Which recordings: GB/T 28181 `Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordType {
    All,
    Time,
    Alarm,
    Manual,
}

impl RecordType {
    pub fn parse(s: &str) -> Option<RecordType> {
        match s {
            "all" => Some(RecordType::All),
            "time" => Some(RecordType::Time),
            "alarm" => Some(RecordType::Alarm),
            "manual" => Some(RecordType::Manual),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            RecordType::All => "all",
            RecordType::Time => "time",
            RecordType::Alarm => "alarm",
            RecordType::Manual => "manual",
        }
    }
}

/// One recording on the device; times in unix seconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Recording {
    pub start: i64,
    pub end: i64,
    #[serde(rename = "type")]
    pub record_type: String,
    pub name: String,
    pub file_path: String,
    pub address: String,
    pub secrecy: String,
    pub file_size: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordList {
    /// Sorted by start time.
    pub items: Vec<Recording>,
    /// What the device said it would send.
    pub sum_num: usize,
    /// All of it arrived.
    pub complete: bool,
}

#[derive(Debug)]
struct Pending {
    handle: ControlHandle,
    offset_s: i32,
    deadline: Instant,
    sum_num: Option<usize>,
    items: Vec<Recording>,
    seen: HashSet<(i64, i64, String, String)>,
    /// Items that could not be read (bad times): they count towards SumNum.
    unreadable: usize,
}

#[derive(Debug, Default)]
pub(super) struct RecordQueries {
    pending: HashMap<(String, u32), Pending>,
}

fn recording(item: RecordItem, offset_s: i32) -> Option<Recording> {
    let start = gbtime::parse_local(&item.start_time, offset_s)?;
    let end = gbtime::parse_local(&item.end_time, offset_s)?;
    Some(Recording {
        start,
        end: end.max(start),
        record_type: item.record_type,
        name: item.name,
        file_path: item.file_path,
        address: item.address,
        secrecy: item.secrecy,
        file_size: item.file_size.parse().ok(),
    })
}

impl Endpoint {
    /// Asks a channel's recordings in `[start, end]` (unix seconds); the answer comes as
    /// `Event::RecordsDone`.
    pub(super) fn record_query(
        &mut self,
        now: Instant,
        device_id: &str,
        channel_id: &str,
        start: i64,
        end: i64,
        record_type: RecordType,
    ) -> Result<ControlHandle, ControlError> {
        let peer = self.reachable_channel(now, device_id, channel_id)?;
        if self.records.pending.len() >= RECORD_QUERIES_MAX {
            return Err(ControlError::Busy);
        }
        let offset_s = self.cfg.utc_offset_for(device_id);
        let sn = self.new_sn();
        let (from, to) = (gbtime::format_local(start, offset_s), gbtime::format_local(end, offset_s));
        let xml = manscdp::record_info_query(sn, channel_id, &from, &to, record_type.name(), "GB2312");
        let handle = self.new_control_handle();
        let purpose = transaction::Purpose::Records { device_id: device_id.to_string(), sn };
        if !self.send_manscdp(now, device_id, peer, &xml, purpose) {
            return Err(ControlError::Busy);
        }
        let deadline = now + self.cfg.record_query_timeout;
        let p = Pending { handle, offset_s, deadline, sum_num: None, items: Vec::new(), seen: HashSet::new(), unreadable: 0 };
        self.records.pending.insert((device_id.to_string(), sn), p);
        Ok(handle)
    }

    /// One MESSAGE of a RecordInfo answer.
    pub(super) fn record_answer(&mut self, device_id: &str, sn: Option<u32>, sum_num: usize, items: Vec<RecordItem>) {
        let Some(key) = sn.map(|sn| (device_id.to_string(), sn)) else { return };
        let Some(p) = self.records.pending.get_mut(&key) else {
            self.counters.responses_unmatched += 1;
            return;
        };
        p.sum_num = Some(p.sum_num.unwrap_or(0).max(sum_num));
        for item in items {
            let Some(r) = recording(item, p.offset_s) else {
                p.unreadable += 1;
                continue;
            };
            if p.items.len() >= RECORD_ITEMS_MAX {
                break;
            }
            if p.seen.insert((r.start, r.end, r.file_path.clone(), r.name.clone())) {
                p.items.push(r);
            }
        }
        if p.items.len() + p.unreadable >= sum_num {
            self.finish_record_query(&key, true);
        }
    }

    /// The query's MESSAGE was refused (or never answered) by the device.
    pub(super) fn record_query_refused(&mut self, device_id: &str, sn: u32, status: Option<u16>) {
        let key = (device_id.to_string(), sn);
        let Some(p) = self.records.pending.get(&key) else { return };
        if p.sum_num.is_some() {
            return; // answers are arriving: the lost 200 does not matter
        }
        let p = self.records.pending.remove(&key).expect("present");
        let error = match status {
            Some(s) => ControlError::Rejected(s),
            None => ControlError::Timeout,
        };
        self.emit(Event::RecordsDone { handle: p.handle, result: Err(error) });
    }

    fn finish_record_query(&mut self, key: &(String, u32), complete: bool) {
        let Some(p) = self.records.pending.remove(key) else { return };
        let result = match p.sum_num {
            None => Err(ControlError::Timeout),
            Some(sum_num) => {
                let mut items = p.items;
                items.sort_by(|a, b| (a.start, a.end, &a.file_path).cmp(&(b.start, b.end, &b.file_path)));
                let complete = complete && p.unreadable == 0 && items.len() >= sum_num;
                Ok(RecordList { items, sum_num, complete })
            }
        };
        self.emit(Event::RecordsDone { handle: p.handle, result });
    }

    /// Queries past their deadline end with what arrived.
    pub(super) fn expire_record_queries(&mut self, now: Instant) {
        let due: Vec<(String, u32)> = self.records.pending.iter().filter(|(_, p)| p.deadline <= now).map(|(k, _)| k.clone()).collect();
        for key in due {
            self.finish_record_query(&key, false);
        }
    }
}
