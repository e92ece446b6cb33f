//! HLS segmenter (RFC 8216): frames in, MPEG-TS segments cut on keyframes at a target
//! duration, a rolling window of segments and the live playlist. Sans-IO; the caller owns
//! timing and serving.

use super::frame::{Codec, Frame};
use super::ts::{TsMuxer, ts_carries};
use bytes::Bytes;
use std::collections::VecDeque;

/// A segment growing past this (a stream without keyframes) is dropped, not kept growing.
pub const HLS_SEGMENT_BYTES_MAX: usize = 32 << 20;
/// A DTS step larger than this (either way) is a timestamp jump: the next segment is
/// marked EXT-X-DISCONTINUITY.
pub const HLS_JUMP_90K: u64 = 10 * 90_000;

#[derive(Debug, Clone, Copy)]
pub struct HlsLimits {
    pub target_duration_ms: u64,
    pub segments_max: usize,
}

#[derive(Debug, Clone)]
pub struct Segment {
    pub sequence: u64,
    /// DTS (90 kHz, unwrapped) of its first frame.
    pub start_dts: u64,
    pub duration_ms: u64,
    pub discontinuity: bool,
    pub data: Bytes,
}

pub struct HlsSegmenter {
    limits: HlsLimits,
    video: Option<Codec>,
    audio: Option<Codec>,
    muxer: Option<TsMuxer>,
    current: Vec<u8>,
    /// DTS of the current segment's first frame.
    start_dts: Option<u64>,
    last_dts: Option<u64>,
    /// Latest normal video frame interval, to end a segment cut at a timestamp jump.
    step: u64,
    /// A timestamp jump (or dropped data) since the current segment began: cut at the next
    /// keyframe and mark the segment after it.
    jump_pending: bool,
    /// The segment being built follows a jump (EXT-X-DISCONTINUITY before it).
    current_after_jump: bool,
    segments: VecDeque<Segment>,
    next_sequence: u64,
}

impl HlsSegmenter {
    pub fn new(limits: HlsLimits) -> Self {
        HlsSegmenter {
            limits,
            video: None,
            audio: None,
            muxer: None,
            current: Vec::new(),
            start_dts: None,
            last_dts: None,
            step: 0,
            jump_pending: false,
            current_after_jump: false,
            segments: VecDeque::new(),
            next_sequence: 0,
        }
    }

    pub fn segments(&self) -> impl Iterator<Item = &Segment> {
        self.segments.iter()
    }

    pub fn segment(&self, sequence: u64) -> Option<&Segment> {
        self.segments.iter().find(|s| s.sequence == sequence)
    }

    /// Frames must carry unwrapped 90 kHz timestamps.
    pub fn push(&mut self, frame: &Frame) {
        if !frame.codec.is_video() {
            if ts_carries(frame.codec) && self.audio != Some(frame.codec) {
                self.audio = Some(frame.codec); // takes effect at the next segment
            }
        } else if self.video != Some(frame.codec) {
            self.video = Some(frame.codec);
            self.start_dts = None; // restart on the new codec's first keyframe
            self.current.clear();
        }
        let prev = self.last_dts;
        if let Some(last) = prev {
            if frame.dts.abs_diff(last) > HLS_JUMP_90K {
                self.jump_pending = true;
            } else if frame.codec.is_video() && frame.dts > last {
                self.step = frame.dts - last;
            }
        }
        if frame.codec.is_video() {
            self.last_dts = Some(frame.dts);
        }
        let is_key = frame.codec.is_video() && frame.keyframe;
        match self.start_dts {
            None if is_key => self.begin(frame.dts),
            None => return, // a segment starts on a keyframe
            Some(start) if is_key && (frame.dts.saturating_sub(start) * 1000 / 90_000 >= self.limits.target_duration_ms || self.jump_pending) => {
                // Across a jump the segment ends one frame after its last frame, not at the new clock.
                let end = if self.jump_pending { prev.map_or(frame.dts, |p| p + self.step) } else { frame.dts };
                self.finish(end);
                self.begin(frame.dts);
            }
            Some(_) => {}
        }
        if let Some(m) = self.muxer.as_mut() {
            m.write_frame(frame, &mut self.current);
        }
        if self.current.len() > HLS_SEGMENT_BYTES_MAX {
            self.current.clear();
            self.start_dts = None;
            self.jump_pending = true;
        }
    }

    fn begin(&mut self, dts: u64) {
        self.current_after_jump = std::mem::take(&mut self.jump_pending);
        let mut m = TsMuxer::new(self.video, self.audio);
        self.current.clear();
        m.write_tables(&mut self.current);
        self.muxer = Some(m);
        self.start_dts = Some(dts);
    }

    fn finish(&mut self, end_dts: u64) {
        let Some(start) = self.start_dts else { return };
        let duration_ms = end_dts.saturating_sub(start) * 1000 / 90_000;
        let data = Bytes::from(std::mem::take(&mut self.current));
        self.segments.push_back(Segment {
            sequence: self.next_sequence,
            start_dts: start,
            duration_ms,
            discontinuity: self.current_after_jump,
            data,
        });
        self.next_sequence += 1;
        while self.segments.len() > self.limits.segments_max {
            self.segments.pop_front();
        }
    }

    /// The live playlist, or None before the first segment is complete.
    pub fn playlist(&self) -> Option<String> {
        let first = self.segments.front()?;
        let target_s =
            self.segments.iter().map(|s| s.duration_ms.div_ceil(1000)).max().unwrap_or(1).max(self.limits.target_duration_ms.div_ceil(1000));
        let mut p = format!("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{target_s}\n#EXT-X-MEDIA-SEQUENCE:{}\n", first.sequence);
        for s in &self.segments {
            if s.discontinuity {
                p.push_str("#EXT-X-DISCONTINUITY\n");
            }
            p.push_str(&format!("#EXTINF:{}.{:03},\n{}.ts\n", s.duration_ms / 1000, s.duration_ms % 1000, s.sequence));
        }
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(dts: u64, key: bool) -> Frame {
        let mut d = vec![0, 0, 0, 1, if key { 0x65 } else { 0x41 }, 0x88];
        d.extend_from_slice(&[7; 500]);
        Frame { codec: Codec::H264, pts: dts, dts, keyframe: key, data: Bytes::from(d) }
    }

    fn limits() -> HlsLimits {
        HlsLimits { target_duration_ms: 2000, segments_max: 3 }
    }

    #[test]
    fn cuts_on_keyframes_at_the_target_and_rolls() {
        let mut h = HlsSegmenter::new(limits());
        assert!(h.playlist().is_none());
        h.push(&video(0, false)); // before any keyframe: not in a segment
        for i in 1..=250u64 {
            h.push(&video(i * 3600, i % 25 == 1)); // a keyframe every second
        }
        let p = h.playlist().unwrap();
        assert!(p.starts_with("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n"), "{p}");
        let seqs: Vec<u64> = h.segments().map(|s| s.sequence).collect();
        assert_eq!(seqs, vec![1, 2, 3], "window of 3; 250 frames make 4 complete 2 s segments");
        assert!(h.segments().all(|s| s.duration_ms == 2000 && s.data.len() % 188 == 0));
        assert!(p.contains("#EXT-X-MEDIA-SEQUENCE:1\n#EXTINF:2.000,\n1.ts\n"));
        assert_eq!(&h.segment(2).unwrap().data[..1], &[0x47]);
    }

    #[test]
    fn timestamp_jump_marks_discontinuity() {
        let mut h = HlsSegmenter::new(limits());
        for i in 0..60u64 {
            h.push(&video(i * 3600, i % 25 == 0));
        }
        for i in 0..60u64 {
            h.push(&video(90_000 * 3600 + i * 3600, i % 25 == 0)); // camera clock jumped an hour
        }
        let p = h.playlist().unwrap();
        assert_eq!(p.matches("#EXT-X-DISCONTINUITY").count(), 1, "{p}");
        assert!(h.segments().all(|s| s.duration_ms <= 2000), "no hour-long segment");
        let marked: Vec<&Segment> = h.segments().filter(|s| s.discontinuity).collect();
        assert_eq!(marked.len(), 1);
        assert!(marked[0].start_dts >= 90_000 * 3600, "the mark is on the first segment after the jump");
    }
}
