//! Cloud-record playback as wvp drives it (`loadMP4File`, `seekRecordStamp`, `setRecordSpeed`):
//! a recording of this node published under a name (app `mp4_record`), played to its viewers
//! as HTTP-FLV from where the last seek put it, at the last speed set. It goes when its last
//! viewer leaves, or when nobody came within the none-reader delay (ZLMediaKit closes such a
//! source when it has no reader, `auto_close`).

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Cloud-record playbacks one node holds at once.
pub const VODS_MAX: usize = 1_024;
/// `setRecordSpeed`'s bounds (ZLMediaKit takes any float; players use 0.25 to 16).
pub const SPEED_MIN: f64 = 0.1;
pub const SPEED_MAX: f64 = 16.0;

/// Where a cloud-record playback is, moved while it plays by `seekRecordStamp` and
/// `setRecordSpeed`; its viewers play along.
#[derive(Debug)]
pub struct PlaybackControl {
    /// Where to play from, ms into the file, as of `generation`.
    pub seek_ms: Cell<u64>,
    /// Bumped by each seek: viewers jump there.
    pub generation: Cell<u32>,
    /// Pace, in hundredths of real time (100: real time).
    pub speed_x100: Cell<u32>,
    /// Viewers playing it now, and whether any ever did.
    pub viewers: Cell<usize>,
    pub played: Cell<bool>,
}

impl Default for PlaybackControl {
    fn default() -> Self {
        PlaybackControl { seek_ms: Cell::new(0), generation: Cell::new(0), speed_x100: Cell::new(100), viewers: Cell::new(0), played: Cell::new(false) }
    }
}

impl PlaybackControl {
    pub fn seek(&self, ms: u64) {
        self.seek_ms.set(ms);
        self.generation.set(self.generation.get().wrapping_add(1));
    }
}

#[derive(Debug, Clone)]
pub struct Vod {
    pub app: String,
    pub stream: String,
    /// The recording's file name without `.mp4` (in the node's records folder).
    pub stem: String,
    pub file_path: String,
    pub duration_ms: u64,
    pub created: Instant,
    pub created_unix_s: u64,
    pub control: Rc<PlaybackControl>,
}

impl Vod {
    /// Its last viewer left, or nobody came within `wait`.
    pub fn done(&self, now: Instant, wait: Duration) -> bool {
        let c = &self.control;
        c.viewers.get() == 0 && (c.played.get() || now.saturating_duration_since(self.created) >= wait)
    }
}

/// `seekRecordStamp`'s `stamp`: ms, as an integer or the long decimal wvp's BigDecimal writes.
pub fn parse_stamp(text: &str) -> Option<u64> {
    let v: f64 = text.trim().parse().ok()?;
    (v.is_finite() && (0.0..1e15).contains(&v)).then_some(v as u64)
}

/// `setRecordSpeed`'s `speed` in hundredths, within bounds.
pub fn parse_speed(text: &str) -> Option<u32> {
    let v: f64 = text.trim().parse().ok()?;
    (v.is_finite() && (SPEED_MIN..=SPEED_MAX).contains(&v)).then_some((v * 100.0).round() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_and_speeds_as_wvp_writes_them() {
        assert_eq!(parse_stamp("12345"), Some(12345));
        assert_eq!(parse_stamp("1500.000000000000227373675443232059478759765625"), Some(1500));
        assert_eq!(parse_stamp("-1"), None);
        assert_eq!(parse_stamp("NaN"), None);
        assert_eq!(parse_speed("2"), Some(200));
        assert_eq!(parse_speed("0.5"), Some(50));
        assert_eq!(parse_speed("100"), None);
        assert_eq!(parse_speed("0"), None);
    }

    #[test]
    fn a_playback_goes_when_its_last_viewer_left_or_nobody_came() {
        let t0 = Instant::now();
        let vod = Vod {
            app: "mp4_record".into(),
            stream: "s".into(),
            stem: "1_2".into(),
            file_path: String::new(),
            duration_ms: 1000,
            created: t0,
            created_unix_s: 0,
            control: Rc::new(PlaybackControl::default()),
        };
        let wait = Duration::from_secs(20);
        assert!(!vod.done(t0, wait));
        assert!(vod.done(t0 + wait, wait), "nobody came");
        vod.control.viewers.set(1);
        vod.control.played.set(true);
        assert!(!vod.done(t0 + wait, wait), "watched");
        vod.control.viewers.set(0);
        assert!(vod.done(t0, wait), "its viewer left");
    }
}
