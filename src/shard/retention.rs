//! Retention of the recordings (`data_dir/records`), so recording never fills the disk: every
//! `record.retention.interval_s` the control executor has a blocking thread ask the recordings
//! index (`record_index`) and delete the oldest closed recordings (file, sidecar, row) while a
//! rule is broken: older than `max_age_days`, more than `max_used_bytes` in all, less than
//! `min_free_bytes` free on the file system. A file being written (no sidecar yet) is never
//! deleted. A pass deletes at most `RETENTION_DELETES_PER_PASS_MAX` files, so the disk is
//! never flooded with unlinks; a backlog goes over several passes. Downloads
//! (`data_dir/downloads`) are the operator's and are kept. The planning is a pure function of
//! what the index holds (`plan`).

use super::record_index::RecordIndex;
use crate::config::RetentionConfig;
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

/// Files deleted at most in one pass.
pub const RETENTION_DELETES_PER_PASS_MAX: usize = 64;
/// Recordings a pass (and a check of the index) reads at most: 30 days of 10-minute files
/// from 100 cameras are 432,000 recordings, twice as many directory entries with their
/// sidecars. Past this, the newest wait for a later pass.
pub const RETENTION_SCAN_ENTRIES_MAX: usize = 2_000_000;
const DAY_MS: u64 = 24 * 3600 * 1000;

/// A closed recording, as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The `.mp4` file's name.
    pub file: String,
    pub start_unix_ms: u64,
    pub end_unix_ms: u64,
    /// The file's and its sidecar's bytes.
    pub bytes: u64,
    /// The device channel recorded, or the stream's id when it was no channel's (a proxy, an
    /// RTMP push): what a record plan's age limit is looked up by.
    pub channel_id: Option<String>,
}

/// Why a file goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Why {
    MaxAge,
    MaxUsed,
    MinFree,
}

/// What the directory holds now: every file's bytes (those being written too) and the file
/// system's free bytes (None when not known: the free-space rule is not applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub used_bytes: u64,
    pub free_bytes: Option<u64>,
}

/// Which candidates (oldest first, as sorted by start) to delete, and why: any older than its
/// age limit (its channel's record plan's, `plan_ages` in days, else the global one), then from
/// the oldest on while space is short; up to `RETENTION_DELETES_PER_PASS_MAX`.
pub fn plan(candidates: &[Candidate], rules: &RetentionConfig, plan_ages: &HashMap<String, u64>, now_unix_ms: u64, usage: Usage) -> Vec<(usize, Why)> {
    debug_assert!(candidates.windows(2).all(|w| w[0].start_unix_ms <= w[1].start_unix_ms), "oldest first");
    let (mut used, mut free) = (usage.used_bytes, usage.free_bytes);
    let too_old = |c: &Candidate| {
        let days = c.channel_id.as_ref().and_then(|ch| plan_ages.get(ch)).copied().unwrap_or(rules.max_age_days);
        days > 0 && c.end_unix_ms < now_unix_ms.saturating_sub(days.saturating_mul(DAY_MS))
    };
    let mut out = Vec::new();
    for (i, c) in candidates.iter().enumerate() {
        if out.len() >= RETENTION_DELETES_PER_PASS_MAX {
            break;
        }
        let space_short = (rules.max_used_bytes > 0 && used > rules.max_used_bytes) || (rules.min_free_bytes > 0 && free.is_some_and(|f| f < rules.min_free_bytes));
        // Age limits differ by channel: a file within its own is skipped while space is not
        // short (a later one may be past a shorter limit).
        let why = if too_old(c) {
            Why::MaxAge
        } else if !space_short {
            continue;
        } else if rules.max_used_bytes > 0 && used > rules.max_used_bytes {
            Why::MaxUsed
        } else {
            Why::MinFree
        };
        used = used.saturating_sub(c.bytes);
        free = free.map(|f| f.saturating_add(c.bytes));
        out.push((i, why));
    }
    out
}

/// What a pass found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PassReport {
    pub deleted_files: u64,
    pub deleted_bytes: u64,
    /// Why the first file went (the rule broken).
    pub why: Option<Why>,
    pub used_bytes: u64,
    pub free_bytes: Option<u64>,
    pub total_bytes: Option<u64>,
    pub error: Option<String>,
}

/// One pass over the recordings `index` knows (blocking: run it off the executors).
pub fn pass(index: &RecordIndex, rules: &RetentionConfig, plan_ages: &HashMap<String, u64>, now_unix_ms: u64) -> PassReport {
    let mut report = PassReport::default();
    let records = index.records();
    let (candidates, used) = match index.retention_candidates() {
        Ok(found) => found,
        Err(e) => {
            report.error = Some(format!("recordings index: {e}"));
            return report;
        }
    };
    let space = file_system_space(records);
    let free = space.map(|(free, _)| free);
    report.total_bytes = space.map(|(_, total)| total);
    let mut rules = rules.clone();
    // A floor the file system cannot give (larger than it is) would delete every recording:
    // that rule is left off, and said.
    if report.total_bytes.is_some_and(|total| rules.min_free_bytes >= total) {
        report.error = Some(format!("record.retention.min_free_bytes ({}) is not below the file system's size; that rule is not applied", rules.min_free_bytes));
        rules.min_free_bytes = 0;
    }
    let usage = Usage { used_bytes: used, free_bytes: free };
    let mut freed = 0;
    for (i, why) in plan(&candidates, &rules, plan_ages, now_unix_ms, usage) {
        let c = &candidates[i];
        let stem = c.file.trim_end_matches(".mp4");
        match std::fs::remove_file(records.join(&c.file)) {
            Ok(()) => {}
            // Gone meanwhile (deleted by hand, or by another control sharing the directory).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                report.error = Some(format!("{}: {e}", c.file));
                break;
            }
        }
        let _ = std::fs::remove_file(records.join(format!("{stem}.json")));
        if let Err(e) = index.removed(&c.file) {
            report.error = Some(format!("recordings index: {e}"));
        }
        report.why.get_or_insert(why);
        report.deleted_files += 1;
        freed += c.bytes;
    }
    report.deleted_bytes = freed;
    report.used_bytes = used.saturating_sub(freed);
    report.free_bytes = free.map(|f| f.saturating_add(freed));
    report
}

/// The free bytes (for an unprivileged writer) and the size of the file system holding `path`.
pub(crate) fn file_system_space(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a NUL-terminated string that outlives the call; `st` is written by
    // statvfs before it is read, and read only when the call succeeded.
    let st = unsafe {
        if libc::statvfs(c_path.as_ptr(), st.as_mut_ptr()) != 0 {
            return None;
        }
        st.assume_init()
    };
    let block = st.f_frsize as u64;
    Some((st.f_bavail as u64 * block, st.f_blocks as u64 * block))
}

/// The state of retention for the API: the rules, what the last pass found and did, and the
/// totals since start.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetentionStatus {
    pub rules: Option<RetentionConfig>,
    pub passes: u64,
    pub deleted_files_total: u64,
    pub deleted_bytes_total: u64,
    pub last_pass_unix_ms: Option<u64>,
    pub last: Option<PassReport>,
}

/// Runs retention passes on this executor's blocking threads while the engine runs (a pass
/// only when a rule is set, globally or by a record plan: `plan_ages` asks the plans each
/// time): each pass's report goes to `status` and, when it deleted something, to `deleted`.
pub async fn run(
    index: std::sync::Arc<RecordIndex>,
    rules: RetentionConfig,
    plan_ages: impl Fn() -> HashMap<String, u64>,
    status: std::rc::Rc<std::cell::RefCell<RetentionStatus>>,
    deleted: impl Fn(&PassReport),
) {
    status.borrow_mut().rules = Some(rules.clone());
    let interval = Duration::from_secs(rules.interval_s.max(1));
    loop {
        glommio::timer::sleep(interval).await;
        let ages = plan_ages();
        if !rules.any() && ages.is_empty() {
            continue;
        }
        let (i, r) = (index.clone(), rules.clone());
        let report = glommio::executor().spawn_blocking(move || pass(&i, &r, &ages, super::unix_ms())).await;
        if report.deleted_files > 0 {
            tracing::info!(files = report.deleted_files, bytes = report.deleted_bytes, why = ?report.why, used_bytes = report.used_bytes, "retention deleted recordings");
            deleted(&report);
        }
        if let Some(error) = &report.error {
            tracing::warn!(%error, "retention");
        }
        let mut s = status.borrow_mut();
        s.passes += 1;
        s.deleted_files_total += report.deleted_files;
        s.deleted_bytes_total += report.deleted_bytes;
        s.last_pass_unix_ms = Some(super::unix_ms());
        s.last = Some(report);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(n: u64, bytes: u64) -> Candidate {
        Candidate { file: format!("0100000001_{n}.mp4"), start_unix_ms: n * 1000, end_unix_ms: n * 1000 + 1000, bytes, channel_id: None }
    }

    fn rules(max_age_days: u64, max_used_bytes: u64, min_free_bytes: u64) -> RetentionConfig {
        RetentionConfig { max_age_days, max_used_bytes, min_free_bytes, interval_s: 1 }
    }

    #[test]
    fn a_record_plan_keeps_its_channels_recordings_for_its_own_time() {
        // Files of a day each: the first two of channel A (its plan keeps 1 day), then two of
        // B (the global 3 days).
        let day = |n: u64, ch: &str| Candidate { file: format!("{n}"), start_unix_ms: n * DAY_MS, end_unix_ms: (n + 1) * DAY_MS, bytes: 1, channel_id: Some(ch.into()) };
        let files = vec![day(0, "A"), day(1, "B"), day(2, "A"), day(3, "B")];
        let ages: HashMap<String, u64> = [("A".to_string(), 1)].into();
        let now = 4 * DAY_MS;
        let usage = Usage { used_bytes: 4, free_bytes: None };
        // A's older than a day (0, 2 ends at 3 days: kept), B's older than 3 days (none).
        assert_eq!(plan(&files, &rules(3, 0, 0), &ages, now, usage), vec![(0, Why::MaxAge)]);
        assert_eq!(plan(&files, &rules(3, 0, 0), &ages, now + 2 * DAY_MS, usage), vec![(0, Why::MaxAge), (1, Why::MaxAge), (2, Why::MaxAge)]);
        // A plan's age without a global rule.
        assert_eq!(plan(&files, &RetentionConfig::default(), &ages, now, usage), vec![(0, Why::MaxAge)]);
    }

    #[test]
    fn the_oldest_go_first_until_no_rule_is_broken() {
        let none = HashMap::new();
        let files: Vec<_> = (1..=5).map(|n| file(n, 100)).collect();
        let usage = |used, free| Usage { used_bytes: used, free_bytes: free };
        // 600 bytes used (a file being written is counted, not a candidate), 350 allowed.
        assert_eq!(plan(&files, &rules(0, 350, 0), &none, 0, usage(600, None)), vec![(0, Why::MaxUsed), (1, Why::MaxUsed), (2, Why::MaxUsed)]);
        // 150 free, 320 wanted: two files.
        assert_eq!(plan(&files, &rules(0, 0, 320), &none, 0, usage(600, Some(150))), vec![(0, Why::MinFree), (1, Why::MinFree)]);
        // A day kept: files ended before `now - 1 day` go, whatever the space.
        let now = 3_500 + DAY_MS;
        assert_eq!(plan(&files, &rules(1, 0, 0), &none, now, usage(600, Some(1 << 30))), vec![(0, Why::MaxAge), (1, Why::MaxAge)]);
        // Nothing broken, nothing deleted; no rule, nothing deleted.
        assert!(plan(&files, &rules(1, 1000, 10), &none, now - DAY_MS, usage(600, Some(1 << 30))).is_empty());
        assert!(plan(&files, &RetentionConfig::default(), &none, u64::MAX, usage(u64::MAX, Some(0))).is_empty());
        // The free space unknown: that rule waits.
        assert!(plan(&files, &rules(0, 0, 320), &none, 0, usage(600, None)).is_empty());
    }

    #[test]
    fn a_pass_deletes_a_bounded_number_and_the_rest_waits_for_the_next() {
        let none = HashMap::new();
        let files: Vec<_> = (1..=200).map(|n| file(n, 10)).collect();
        let planned = plan(&files, &rules(0, 1 << 20, 0), &none, 0, Usage { used_bytes: u64::MAX, free_bytes: None });
        assert_eq!(planned.len(), RETENTION_DELETES_PER_PASS_MAX);
        assert!(planned.iter().enumerate().all(|(i, (at, _))| *at == i), "oldest first");
    }

    #[test]
    fn a_pass_keeps_what_is_being_written_and_deletes_files_with_their_sidecars() {
        let none = HashMap::new();
        let data_dir = std::env::temp_dir().join(format!("gmv-retention-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        let dir = super::super::record::records_dir(&data_dir);
        for n in 1..=3u64 {
            super::super::record::plant_closed(&dir, "0100000001", n * 1000, None);
        }
        // Being written: no sidecar, the oldest of all by its name.
        std::fs::write(dir.join("0100000001_500.mp4"), vec![0u8; 5000]).unwrap();
        let index = RecordIndex::for_data_dir(&data_dir);
        index.check().unwrap();
        let report = pass(&index, &rules(0, 1 << 20, 0), &none, 10_000);
        assert_eq!(report.deleted_files, 0, "under the limit: {report:?}");
        // A limit of 1 MiB is the least, so grow what is written past it.
        std::fs::write(dir.join("0100000001_500.mp4"), vec![0u8; 1 << 20]).unwrap();
        let report = pass(&index, &rules(0, 1 << 20, 0), &none, 10_000);
        assert_eq!((report.deleted_files, report.why), (3, Some(Why::MaxUsed)), "{report:?}");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
        assert_eq!(left, vec!["0100000001_500.mp4".to_string()], "the file being written stays");
        // A floor as large as the file system is not applied (it would delete everything).
        let report = pass(&index, &rules(0, 0, u64::MAX), &none, 10_000);
        assert!(report.error.as_deref().is_some_and(|e| e.contains("min_free_bytes")), "{report:?}");
        assert_eq!(index.list(&Default::default(), 10).unwrap().len(), 1, "the index lost the deleted files' rows");
        std::fs::remove_dir_all(&data_dir).unwrap();
    }
}
