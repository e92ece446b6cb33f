//! HLS segmenter (RFC 8216): frames in, segments cut on keyframes at a target duration, a
//! rolling window of segments and the live playlist. Segments are MPEG-TS or fragmented MP4
//! (CMAF: an init segment named by `EXT-X-MAP`, then `moof`+`mdat` fragments), the form
//! browsers with an HEVC decoder play H.265 in. Sans-IO; the caller owns timing and serving.

use super::aac::AdtsHeader;
use super::frame::{Codec, Frame};
use super::h26x::{self, ParamSets};
use super::mp4::{Fmp4Muxer, VideoConfig};
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

/// What a segment is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentFormat {
    /// MPEG-TS (`{sequence}.ts`): H.264, H.265 and AAC.
    Ts,
    /// Fragmented MP4 (`{sequence}.m4s` after `init-{n}.mp4`): H.264, H.265 and AAC.
    Fmp4,
}

impl SegmentFormat {
    pub fn extension(self) -> &'static str {
        match self {
            SegmentFormat::Ts => "ts",
            SegmentFormat::Fmp4 => "m4s",
        }
    }
}

/// The fMP4 form's state: the muxer of the current init segment and the inits segments name.
struct Fmp4State {
    params: ParamSets,
    adts: Option<AdtsHeader>,
    muxer: Option<Fmp4Muxer>,
    /// Init segments still named by a kept segment (or the one being built), oldest first.
    inits: VecDeque<(u32, Bytes)>,
    next_init: u32,
}

#[derive(Debug, Clone)]
pub struct Segment {
    pub sequence: u64,
    /// DTS (90 kHz, unwrapped) of its first frame.
    pub start_dts: u64,
    pub duration_ms: u64,
    pub discontinuity: bool,
    pub data: Bytes,
    /// The init segment it follows (fMP4 only; 0 for TS).
    pub init: u32,
}

pub struct HlsSegmenter {
    limits: HlsLimits,
    format: SegmentFormat,
    fmp4: Fmp4State,
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
    pub fn new(limits: HlsLimits, format: SegmentFormat) -> Self {
        HlsSegmenter {
            limits,
            format,
            fmp4: Fmp4State { params: ParamSets::default(), adts: None, muxer: None, inits: VecDeque::new(), next_init: 0 },
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

    pub fn format(&self) -> SegmentFormat {
        self.format
    }

    /// An fMP4 init segment a kept segment names.
    pub fn init(&self, number: u32) -> Option<&Bytes> {
        self.fmp4.inits.iter().find(|(n, _)| *n == number).map(|(_, b)| b)
    }

    /// Frames must carry unwrapped 90 kHz timestamps.
    pub fn push(&mut self, frame: &Frame) {
        if self.format == SegmentFormat::Fmp4 {
            self.observe(frame);
        }
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
            None if is_key => {
                if !self.begin(frame.dts) {
                    return; // no parameter sets yet (fMP4)
                }
            }
            None => return, // a segment starts on a keyframe
            Some(start) if is_key && (frame.dts.saturating_sub(start) * 1000 / 90_000 >= self.limits.target_duration_ms || self.jump_pending) => {
                // Across a jump the segment ends one frame after its last frame, not at the new clock.
                let end = if self.jump_pending { prev.map_or(frame.dts, |p| p + self.step) } else { frame.dts };
                self.end_fragment((!self.jump_pending).then_some(frame.dts));
                self.finish(end);
                if !self.begin(frame.dts) {
                    return;
                }
            }
            Some(_) => {}
        }
        match self.format {
            SegmentFormat::Ts => {
                if let Some(m) = self.muxer.as_mut() {
                    m.write_frame(frame, &mut self.current);
                }
            }
            SegmentFormat::Fmp4 => {
                if let Some(fragment) = self.fmp4.muxer.as_mut().and_then(|m| m.push(frame)) {
                    self.current.extend_from_slice(&fragment);
                }
            }
        }
        // What the fMP4 muxer holds for its next fragment counts too.
        let held = self.fmp4.muxer.as_ref().map_or(0, Fmp4Muxer::pending_bytes);
        if self.current.len() + held > HLS_SEGMENT_BYTES_MAX {
            self.current.clear();
            self.start_dts = None;
            self.jump_pending = true;
        }
    }

    /// Parameter sets and the AAC configuration an fMP4 init segment is made from.
    fn observe(&mut self, frame: &Frame) {
        if frame.codec.is_video() {
            if frame.keyframe {
                for nal in h26x::nal_units(&frame.data) {
                    self.fmp4.params.observe(frame.codec, nal);
                }
            }
        } else if frame.codec == Codec::Aac && self.fmp4.adts.is_none() {
            self.fmp4.adts = AdtsHeader::parse(&frame.data);
        }
    }

    /// Starts a segment at a keyframe; false when it cannot start (fMP4 without parameter sets).
    fn begin(&mut self, dts: u64) -> bool {
        let mut after_jump = std::mem::take(&mut self.jump_pending);
        self.current.clear();
        match self.format {
            SegmentFormat::Ts => {
                let mut m = TsMuxer::new(self.video, self.audio);
                m.write_tables(&mut self.current);
                self.muxer = Some(m);
            }
            SegmentFormat::Fmp4 => {
                let Some(video) = self.video else { return false };
                let Some(config) = VideoConfig::from_params(video, &self.fmp4.params) else {
                    self.start_dts = None;
                    return false;
                };
                let adts = self.fmp4.adts.filter(|_| self.audio == Some(Codec::Aac));
                // A new init segment after a jump (fragment times would run back), a new codec,
                // new parameter sets or audio that appeared.
                let same = self.fmp4.muxer.as_ref().is_some_and(|m| m.video().record == config.record && m.has_audio() == adts.is_some());
                if !same || after_jump {
                    let muxer = Fmp4Muxer::new(config, adts, dts);
                    let number = self.fmp4.next_init;
                    self.fmp4.next_init = self.fmp4.next_init.wrapping_add(1);
                    self.fmp4.inits.push_back((number, Bytes::from(muxer.init_segment())));
                    // A new init segment after the first is a discontinuity (RFC 8216 4.3.2.3).
                    after_jump |= self.fmp4.muxer.is_some();
                    self.fmp4.muxer = Some(muxer);
                }
            }
        }
        self.current_after_jump = after_jump;
        self.start_dts = Some(dts);
        true
    }

    /// fMP4: the GOP the muxer holds ends the segment (the keyframe at the cut is pushed
    /// after, into the next).
    fn end_fragment(&mut self, next_dts: Option<u64>) {
        let muxer = self.fmp4.muxer.as_mut();
        if let Some(fragment) = muxer.and_then(|m| if let Some(n) = next_dts { m.fragment_until(n) } else { m.flush() }) {
            self.current.extend_from_slice(&fragment);
        }
    }

    fn current_init(&self) -> u32 {
        match self.format {
            SegmentFormat::Ts => 0,
            SegmentFormat::Fmp4 => self.fmp4.inits.back().map_or(0, |(n, _)| *n),
        }
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
            init: self.current_init(),
        });
        self.next_sequence += 1;
        while self.segments.len() > self.limits.segments_max {
            self.segments.pop_front();
        }
        // Inits no kept segment names go, but for the newest (the next segment's).
        let oldest = self.segments.front().map_or(0, |s| s.init);
        while self.fmp4.inits.len() > 1 && self.fmp4.inits.front().is_some_and(|(n, _)| *n != oldest) {
            self.fmp4.inits.pop_front();
        }
    }

    /// The live playlist, or None before the first segment is complete.
    pub fn playlist(&self) -> Option<String> {
        let first = self.segments.front()?;
        let target_s =
            self.segments.iter().map(|s| s.duration_ms.div_ceil(1000)).max().unwrap_or(1).max(self.limits.target_duration_ms.div_ceil(1000));
        // EXT-X-MAP in a live playlist of fMP4 needs version 6 (RFC 8216 7); 7 as ZLMediaKit.
        let version = if self.format == SegmentFormat::Fmp4 { 7 } else { 3 };
        let mut p = format!("#EXTM3U\n#EXT-X-VERSION:{version}\n#EXT-X-TARGETDURATION:{target_s}\n#EXT-X-MEDIA-SEQUENCE:{}\n", first.sequence);
        let mut init = None;
        for s in &self.segments {
            if s.discontinuity {
                p.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if self.format == SegmentFormat::Fmp4 && init != Some(s.init) {
                p.push_str(&format!("#EXT-X-MAP:URI=\"init-{}.mp4\"\n", s.init));
            }
            init = Some(s.init);
            let ext = self.format.extension();
            p.push_str(&format!("#EXTINF:{}.{:03},\n{}.{ext}\n", s.duration_ms / 1000, s.duration_ms % 1000, s.sequence));
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
        let mut h = HlsSegmenter::new(limits(), SegmentFormat::Ts);
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
        let mut h = HlsSegmenter::new(limits(), SegmentFormat::Ts);
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

    /// A keyframe with real parameter sets (an init segment can be made from them).
    fn h264(dts: u64, key: bool) -> Frame {
        let mut data = vec![0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xbf, 0xe5, 0x84, 0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80, 0, 0, 0, 1];
        data.extend_from_slice(if key { &[0x65, 0x88, 0x84] } else { &[0x41, 0x9a, 0x02] });
        Frame { codec: Codec::H264, pts: dts, dts, keyframe: key, data: Bytes::from(data) }
    }

    /// (tfdt, sample durations) of each fragment in a segment.
    fn runs(segment: &[u8]) -> Vec<(u64, Vec<u32>)> {
        let mut out = Vec::new();
        for b in crate::proto::mp4_read::boxes(segment) {
            let (kind, body) = b.unwrap();
            assert!(&kind == b"moof" || &kind == b"mdat", "only fragments in a segment");
            if &kind == b"moof" {
                let run = crate::proto::mp4_read::parse_moof(body).unwrap().remove(0);
                out.push((run.base_time, run.samples.iter().map(|s| s.duration).collect()));
            }
        }
        out
    }

    #[test]
    fn fmp4_segments_follow_their_init_segment_without_gaps() {
        let mut h = HlsSegmenter::new(limits(), SegmentFormat::Fmp4);
        for i in 0..130u64 {
            h.push(&h264(i * 3600, i % 25 == 0));
        }
        let p = h.playlist().unwrap();
        assert!(p.starts_with("#EXTM3U\n#EXT-X-VERSION:7\n"), "{p}");
        assert_eq!(p.matches("#EXT-X-MAP:URI=\"init-0.mp4\"").count(), 1, "{p}");
        assert!(p.contains("0.m4s\n") && !p.contains(".ts"), "{p}");
        let init = h.init(0).unwrap();
        assert_eq!(&init[4..8], b"ftyp");
        // Segments of 50 frames (2 s at 25/s), one fragment per GOP, each fragment where the
        // one before ended.
        let mut next = 0;
        for s in h.segments() {
            let runs = runs(&s.data);
            assert_eq!(runs.len(), 2, "two GOPs a segment");
            for (tfdt, durations) in runs {
                assert_eq!(tfdt, next);
                assert_eq!(durations, vec![3600; 25]);
                next = tfdt + 25 * 3600;
            }
            assert_eq!(s.duration_ms, 2000);
        }
    }

    #[test]
    fn fmp4_timestamp_jump_brings_a_new_init_segment() {
        let mut h = HlsSegmenter::new(HlsLimits { target_duration_ms: 2000, segments_max: 6 }, SegmentFormat::Fmp4);
        for i in 0..60u64 {
            h.push(&h264(5_000_000 + i * 3600, i % 25 == 0));
        }
        for i in 0..60u64 {
            h.push(&h264(i * 3600, i % 25 == 0)); // the camera restarted: its clock went back
        }
        let p = h.playlist().unwrap();
        assert_eq!(p.matches("#EXT-X-MAP").count(), 2, "{p}");
        assert!(p.contains("#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init-1.mp4\"\n"), "{p}");
        let after: Vec<&Segment> = h.segments().filter(|s| s.init == 1).collect();
        assert_eq!(runs(&after[0].data)[0].0, 0, "the new init's fragments start again at 0");
        assert!(h.init(0).is_some() && h.init(1).is_some());
    }

    #[test]
    fn an_fmp4_segment_without_keyframes_stays_bounded() {
        let mut h = HlsSegmenter::new(limits(), SegmentFormat::Fmp4);
        h.push(&h264(0, true));
        let big = Frame { data: Bytes::from(vec![0u8; 1 << 20]), ..h264(3600, false) };
        for i in 1..100u64 {
            h.push(&Frame { dts: i * 3600, pts: i * 3600, ..big.clone() });
            let held = h.fmp4.muxer.as_ref().map_or(0, Fmp4Muxer::pending_bytes);
            assert!(held + h.current.len() <= HLS_SEGMENT_BYTES_MAX + (1 << 20) + 64, "{held}");
        }
    }

    #[test]
    fn fmp4_waits_for_parameter_sets() {
        let mut h = HlsSegmenter::new(limits(), SegmentFormat::Fmp4);
        let bare = |dts, key: bool| Frame { codec: Codec::H264, pts: dts, dts, keyframe: key, data: Bytes::from_static(&[0, 0, 0, 1, 0x65, 0x88]) };
        for i in 0..100u64 {
            h.push(&bare(i * 3600, i % 25 == 0));
        }
        assert!(h.playlist().is_none(), "no init segment can be made without SPS and PPS");
        for i in 100..200u64 {
            h.push(&h264(i * 3600, i % 25 == 0));
        }
        assert!(h.playlist().is_some());
    }
}
