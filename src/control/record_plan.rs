//! Record plans (录像计划), the model: a named weekly schedule (time ranges per weekday in a
//! fixed-offset time zone) and whether it is in force at an instant. Pure: the driver
//! (`record_plans`) asks `active_at` with the clock's unix seconds.

use serde::{Deserialize, Serialize};

/// Plans, ranges of one plan, and channels given plans, at most.
pub const PLANS_MAX: usize = 256;
pub const PLAN_RANGES_MAX: usize = 64;
pub const PLAN_CHANNELS_MAX: usize = 4_096;
/// A plan's name is 1 to this many bytes.
pub const PLAN_NAME_BYTES_MAX: usize = 64;
/// The time zone a plan without one runs in: China Standard Time, the one zone of the sites
/// gmv serves most (no daylight saving).
pub const PLAN_TIME_ZONE_DEFAULT: &str = "+08:00";
const DAY_S: u32 = 24 * 3600;

/// A time range on some weekdays: from `start` up to (not including) `end`, `HH:MM` or
/// `HH:MM:SS`, `end` at most `24:00`. A range across midnight is two ranges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Range {
    /// Monday 1 to Sunday 7.
    pub days: Vec<u8>,
    pub start: String,
    pub end: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub name: String,
    /// `+08:00`, `-05:30`, `UTC`, or `Asia/Shanghai` (and China's other names for +08:00):
    /// fixed offsets; zones with daylight saving are not taken (say the offset).
    #[serde(default = "default_zone")]
    pub time_zone: String,
    pub ranges: Vec<Range>,
    /// Recordings of the plan's channels are kept this long (over `record.retention`'s age).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_days: Option<u64>,
}

fn default_zone() -> String {
    PLAN_TIME_ZONE_DEFAULT.to_string()
}

impl Plan {
    /// Why the plan cannot be used, naming what is wrong; Ok when it can.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() || self.name.len() > PLAN_NAME_BYTES_MAX || self.name.chars().any(|c| c.is_control() || c == '/') {
            return Err(format!("a plan's name is 1 to {PLAN_NAME_BYTES_MAX} bytes, without '/' or control characters"));
        }
        zone_offset_s(&self.time_zone)?;
        if self.max_age_days.is_some_and(|d| !(1..=36_500).contains(&d)) {
            return Err("max_age_days is 1 to 36500 (or absent: record.retention's)".into());
        }
        if self.ranges.is_empty() || self.ranges.len() > PLAN_RANGES_MAX {
            return Err(format!("a plan has 1 to {PLAN_RANGES_MAX} ranges"));
        }
        let mut spans: Vec<(u8, u32, u32, usize)> = Vec::new();
        for (i, r) in self.ranges.iter().enumerate() {
            let n = i + 1;
            let (start, end) = (seconds_of_day(&r.start).map_err(|e| format!("range {n}: start {e}"))?, seconds_of_day(&r.end).map_err(|e| format!("range {n}: end {e}"))?);
            if start >= end {
                return Err(format!("range {n}: ends ({}) at or before it starts ({}); a range across midnight is two ranges", r.end, r.start));
            }
            if r.days.is_empty() || r.days.iter().any(|d| !(1..=7).contains(d)) {
                return Err(format!("range {n}: days are 1 (Monday) to 7 (Sunday), at least one"));
            }
            for &day in &r.days {
                if let Some((_, _, _, other)) = spans.iter().find(|(d, s, e, _)| *d == day && start < *e && *s < end) {
                    return Err(format!("range {n} overlaps range {} on day {day}", other + 1));
                }
                spans.push((day, start, end, i));
            }
        }
        Ok(())
    }

    /// Whether the plan is in force at `unix_s` (a valid plan; an invalid one never is).
    pub fn active_at(&self, unix_s: u64) -> bool {
        let Ok(offset) = zone_offset_s(&self.time_zone) else { return false };
        let local = unix_s as i64 + i64::from(offset);
        let days = local.div_euclid(i64::from(DAY_S));
        // 1970-01-01 was a Thursday (4).
        let weekday = (days + 3).rem_euclid(7) as u8 + 1;
        let second = local.rem_euclid(i64::from(DAY_S)) as u32;
        self.ranges.iter().any(|r| {
            r.days.contains(&weekday)
                && matches!((seconds_of_day(&r.start), seconds_of_day(&r.end)), (Ok(s), Ok(e)) if s <= second && second < e)
        })
    }
}

/// `HH:MM` or `HH:MM:SS` as seconds of the day (`24:00` the day's end).
fn seconds_of_day(s: &str) -> Result<u32, String> {
    let bad = || format!("{s:?} is not HH:MM or HH:MM:SS");
    let parts: Vec<&str> = s.split(':').collect();
    if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.len() != 2 || !p.bytes().all(|b| b.is_ascii_digit())) {
        return Err(bad());
    }
    let n: Vec<u32> = parts.iter().map(|p| p.parse().unwrap_or(99)).collect();
    let (h, m, sec) = (n[0], n[1], n.get(2).copied().unwrap_or(0));
    if h > 24 || m > 59 || sec > 59 || (h == 24 && (m, sec) != (0, 0)) {
        return Err(bad());
    }
    Ok(h * 3600 + m * 60 + sec)
}

/// A time zone's offset from UTC in seconds.
fn zone_offset_s(zone: &str) -> Result<i32, String> {
    const CHINA: [&str; 4] = ["Asia/Shanghai", "Asia/Chongqing", "Asia/Harbin", "PRC"];
    if zone == "UTC" || zone == "Z" {
        return Ok(0);
    }
    if CHINA.contains(&zone) {
        return Ok(8 * 3600);
    }
    let bad = || format!("time_zone {zone:?}: a fixed offset such as +08:00, UTC, or Asia/Shanghai");
    let (sign, rest) = match zone.as_bytes().first() {
        Some(b'+') => (1, &zone[1..]),
        Some(b'-') => (-1, &zone[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    let (h, m): (i32, i32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 14 || !(0..60).contains(&m) || rest.len() != 5 {
        return Err(bad());
    }
    Ok(sign * (h * 3600 + m * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(zone: &str, ranges: &[(&[u8], &str, &str)]) -> Plan {
        let ranges = ranges.iter().map(|(d, s, e)| Range { days: d.to_vec(), start: s.to_string(), end: e.to_string() }).collect();
        Plan { name: "p".into(), time_zone: zone.into(), ranges, max_age_days: None }
    }

    /// 2026-12-07 (a Monday) at `hms` UTC.
    fn monday_utc(h: u64, m: u64, s: u64) -> u64 {
        1_796_601_600 + h * 3600 + m * 60 + s
    }

    #[test]
    fn a_plan_is_in_force_on_its_days_from_its_start_up_to_its_end_in_its_zone() {
        assert_eq!((monday_utc(0, 0, 0) / 86_400 + 3) % 7 + 1, 1, "the anchor is a Monday");
        let p = plan("UTC", &[(&[1, 2, 3, 4, 5], "08:00", "18:00:30")]);
        assert!(p.validate().is_ok());
        assert!(!p.active_at(monday_utc(7, 59, 59)) && p.active_at(monday_utc(8, 0, 0)) && p.active_at(monday_utc(18, 0, 29)));
        assert!(!p.active_at(monday_utc(18, 0, 30)), "the end is not in it");
        assert!(!p.active_at(monday_utc(12, 0, 0) - 86_400), "Sunday is not a working day");
        // In China's zone, Monday 08:00 is 00:00 UTC.
        let cn = plan("Asia/Shanghai", &[(&[1], "08:00", "09:00")]);
        assert!(cn.active_at(monday_utc(0, 30, 0)) && !cn.active_at(monday_utc(8, 30, 0)));
        assert!(plan("+08:00", &[(&[1], "08:00", "09:00")]).active_at(monday_utc(0, 30, 0)));
        // All day, every day.
        let always = plan("-05:30", &[(&[1, 2, 3, 4, 5, 6, 7], "00:00", "24:00")]);
        assert!(always.validate().is_ok() && (0..7).all(|d| always.active_at(monday_utc(23, 59, 59) + d * 86_400)));
    }

    #[test]
    fn bad_plans_are_refused_naming_what_is_wrong() {
        let says = |p: Plan, what: &str| {
            let e = p.validate().unwrap_err();
            assert!(e.contains(what), "{e}");
        };
        says(plan("UTC", &[(&[1], "18:00", "08:00")]), "range 1: ends (08:00) at or before it starts");
        says(plan("UTC", &[(&[1, 2], "08:00", "12:00"), (&[2], "11:00", "13:00")]), "range 2 overlaps range 1 on day 2");
        says(plan("UTC", &[(&[8], "08:00", "09:00")]), "days are 1 (Monday) to 7");
        says(plan("UTC", &[(&[], "08:00", "09:00")]), "at least one");
        says(plan("UTC", &[(&[1], "8:00", "09:00")]), "not HH:MM");
        says(plan("UTC", &[(&[1], "24:01", "24:30")]), "not HH:MM");
        says(plan("Europe/Berlin", &[(&[1], "08:00", "09:00")]), "fixed offset");
        says(plan("+8", &[(&[1], "08:00", "09:00")]), "fixed offset");
        says(plan("UTC", &[]), "1 to 64 ranges");
        says(Plan { max_age_days: Some(0), ..plan("UTC", &[(&[1], "08:00", "09:00")]) }, "max_age_days");
        says(Plan { name: "a/b".into(), ..plan("UTC", &[(&[1], "08:00", "09:00")]) }, "name");
        // Back to back is no overlap.
        assert!(plan("UTC", &[(&[1], "08:00", "12:00"), (&[1], "12:00", "13:00")]).validate().is_ok());
    }
}
