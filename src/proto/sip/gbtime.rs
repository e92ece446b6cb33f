//! Times as GB28181 writes them: `yyyy-MM-ddTHH:mm:ss` in the device's local time (RecordInfo,
//! alarms), `...ss.SSS` in the Date header of a REGISTER answer. The offset is an input (the
//! device's configured zone, or the engine's); nothing here reads a clock or the system zone.

use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// Offsets outside ±18 h are not time zones (and `time` refuses them).
pub const UTC_OFFSET_S_MAX: i32 = 18 * 3600;

fn offset(offset_s: i32) -> UtcOffset {
    UtcOffset::from_whole_seconds(offset_s.clamp(-UTC_OFFSET_S_MAX, UTC_OFFSET_S_MAX)).unwrap_or(UtcOffset::UTC)
}

/// `unix_s` as local `yyyy-MM-ddTHH:mm:ss` at `offset_s` east of UTC.
pub fn format_local(unix_s: i64, offset_s: i32) -> String {
    let t = OffsetDateTime::from_unix_timestamp(unix_s).unwrap_or(OffsetDateTime::UNIX_EPOCH).to_offset(offset(offset_s));
    t.format(format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]")).unwrap_or_default()
}

/// Unix seconds of a local `yyyy-MM-ddTHH:mm:ss` (devices also send a space for the `T`,
/// and fractions of a second, which are dropped) at `offset_s`.
pub fn parse_local(text: &str, offset_s: i32) -> Option<i64> {
    let text = text.trim();
    let text = text.get(..19)?.replacen(' ', "T", 1);
    let t = PrimitiveDateTime::parse(&text, format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]")).ok()?;
    Some(t.assume_offset(offset(offset_s)).unix_timestamp())
}

/// GB28181 `Date:` for device time sync: `2026-11-25T11:48:12.000` (UTC).
pub fn gb_date(unix_ms: u64) -> String {
    let s = i64::try_from(unix_ms / 1000).unwrap_or(0);
    format!("{}.{:03}", format_local(s, 0), unix_ms % 1000)
}

/// An offset written `+08:00`, `-0530`, `+8` or `Z`, in seconds east of UTC.
pub fn parse_offset(text: &str) -> Option<i32> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("z") || t.eq_ignore_ascii_case("utc") {
        return Some(0);
    }
    let (sign, rest) = match t.as_bytes().first()? {
        b'+' => (1, &t[1..]),
        b'-' => (-1, &t[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m) = if digits.len() <= 2 { (digits.as_str(), "0") } else { digits.split_at(digits.len() - 2) };
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    let s = sign * (h * 3600 + m * 60);
    (m < 60 && s.abs() <= UTC_OFFSET_S_MAX).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_times_round_trip_at_an_offset() {
        // 2026-11-25T11:48:12Z is 19:48:12 in Beijing.
        let t = 1_795_607_292;
        assert_eq!(format_local(t, 0), "2026-11-25T11:48:12");
        assert_eq!(format_local(t, 8 * 3600), "2026-11-25T19:48:12");
        assert_eq!(parse_local("2026-11-25T19:48:12", 8 * 3600), Some(t));
        assert_eq!(parse_local("2026-11-25 19:48:12.250", 8 * 3600), Some(t));
        assert_eq!(parse_local("2026-13-25T19:48:12", 0), None);
        assert_eq!(parse_local("yesterday", 0), None);
        assert_eq!(gb_date(1_795_607_292_007), "2026-11-25T11:48:12.007");
        assert_eq!(gb_date(0), "1970-01-01T00:00:00.000");
        assert_eq!(gb_date(1_795_000_000_123), "2026-11-18T11:06:40.123");
    }

    #[test]
    fn offsets() {
        assert_eq!(parse_offset("+08:00"), Some(28_800));
        assert_eq!(parse_offset("-0530"), Some(-19_800));
        assert_eq!(parse_offset("+8"), Some(28_800));
        assert_eq!(parse_offset("Z"), Some(0));
        assert_eq!(parse_offset("+25:00"), None);
        assert_eq!(parse_offset("8"), None);
        assert_eq!(parse_offset("+08:75"), None);
    }
}
