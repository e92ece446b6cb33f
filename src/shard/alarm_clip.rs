//! Alarm clips (报警录像) on the stream's shard: a device channel's stream keeps its last
//! seconds of frames (the pre-roll, whole GOPs from a keyframe, bounded in time and bytes)
//! while alarm clips are on; an alarm starts a clip that records the pre-roll and then the live
//! frames until `post` after the alarm, in a file of its own (kind "alarm", the alarms' event
//! ids in its sidecar); an alarm during the clip extends it.

use crate::proto::frame::Frame;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The last seconds of a stream, from a keyframe.
pub struct Preroll {
    frames: VecDeque<Frame>,
    bytes: usize,
    span_90k: u64,
    bytes_max: usize,
}

impl Preroll {
    pub fn new(span: Duration, bytes_max: usize) -> Preroll {
        Preroll { frames: VecDeque::new(), bytes: 0, span_90k: span.as_millis() as u64 * 90, bytes_max }
    }

    /// Takes a frame: the oldest GOPs go once a later one still covers the span, or when the
    /// bytes are over (a GOP larger than all of them empties it until the next keyframe).
    pub fn push(&mut self, f: &Frame) {
        if self.frames.is_empty() && !(f.codec.is_video() && f.keyframe) {
            return; // a pre-roll starts at a keyframe
        }
        self.frames.push_back(f.clone());
        self.bytes += f.data.len();
        if f.codec.is_video() && f.keyframe {
            let window_start = f.dts.saturating_sub(self.span_90k);
            while self.second_gop_start().is_some_and(|dts| dts <= window_start) {
                self.drop_first_gop();
            }
        }
        while self.bytes > self.bytes_max {
            if self.second_gop_start().is_none() {
                self.frames.clear();
                self.bytes = 0;
                break;
            }
            self.drop_first_gop();
        }
    }

    fn second_gop_start(&self) -> Option<u64> {
        self.frames.iter().skip(1).find(|f| f.codec.is_video() && f.keyframe).map(|f| f.dts)
    }

    fn drop_first_gop(&mut self) {
        while let Some(f) = self.frames.pop_front() {
            self.bytes -= f.data.len();
            if self.frames.front().is_some_and(|n| n.codec.is_video() && n.keyframe) {
                break;
            }
        }
    }

    /// The frames kept, oldest first, and how long before the newest the first is.
    pub fn frames(&self) -> (impl Iterator<Item = &Frame>, Duration) {
        let span = match (self.frames.front(), self.frames.back()) {
            (Some(a), Some(b)) => Duration::from_millis(b.dts.saturating_sub(a.dts) / 90),
            _ => Duration::ZERO,
        };
        (self.frames.iter(), span)
    }
}

/// A clip being recorded: its recorder and when it ends.
pub struct AlarmClip {
    pub recorder: super::record::Recorder,
    pub until: Instant,
}

impl AlarmClip {
    /// An alarm during the clip: it goes on to `post` after this one.
    pub fn extend(&mut self, alarm_id: u64, post: Duration, now: Instant) {
        self.until = self.until.max(now + post);
        self.recorder.alarm_ids.push(alarm_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::frame::Codec;

    fn frame(second_tenths: u64, keyframe: bool, bytes: usize) -> Frame {
        let dts = second_tenths * 9_000;
        Frame { codec: Codec::H264, pts: dts, dts, keyframe, data: bytes::Bytes::from(vec![0u8; bytes]) }
    }

    #[test]
    fn the_pre_roll_keeps_whole_gops_covering_its_span_within_its_bytes() {
        // Keyframes each second, frames each tenth; a 2 s pre-roll.
        let mut p = Preroll::new(Duration::from_secs(2), 1 << 20);
        p.push(&frame(0, false, 10));
        assert_eq!(p.frames().0.count(), 0, "nothing before a keyframe");
        for t in 1..=55 {
            p.push(&frame(t, t % 10 == 0, 10));
        }
        let (frames, span) = p.frames();
        let first = frames.map(|f| f.dts).next().unwrap();
        // At 5.5 s: the window starts at 3.5 s; the GOP from 3 s covers it, the one from 2 s goes.
        assert_eq!((first, span), (30 * 9_000, Duration::from_millis(2_500)));
        // Bytes over: the oldest GOPs go; one GOP over the bytes empties it till the next keyframe.
        let mut small = Preroll::new(Duration::from_secs(10), 250);
        for t in 10..=35 {
            small.push(&frame(t, t % 10 == 0, 10));
        }
        assert_eq!(small.frames().0.next().map(|f| f.dts), Some(20 * 9_000), "{} bytes", small.bytes);
        small.push(&frame(36, false, 1_000));
        assert_eq!(small.frames().0.count(), 0);
        small.push(&frame(37, false, 10));
        assert_eq!(small.frames().0.count(), 0, "until the next keyframe");
        small.push(&frame(40, true, 10));
        assert_eq!(small.frames().0.count(), 1);
    }
}
