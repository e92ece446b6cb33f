//! Incremental access-unit assembler for H.264/H.265 Annex B elementary streams.
//!
//! Program streams do not promise one picture per PES: GB28181 cameras align them, but
//! other muxers (ffmpeg's `vob`/`mpeg`, cascaded platforms) pack several pictures into one
//! PES or split one across PES boundaries, and put a PTS only on the PES where a picture
//! starts. So pictures are cut at NAL level (ITU-T H.264 §7.4.1.2.3, H.265 §7.4.2.4.4) and
//! each takes the PTS of the latest PES that began at or before its first byte.

use super::frame::{Codec, Frame};
use super::h26x::{h264_nal_type, h265_nal_type, is_key_nal, is_vcl};
use super::ps::FRAME_BYTES_MAX;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;

/// PES timestamps remembered while their pictures have not started yet.
const TIMESTAMP_MARKS_MAX: usize = 32;
/// The remembered largest picture shrinks by this fraction of itself per picture (halved in
/// about 180 pictures, several GOPs: keyframes, the large ones, come round before it fades).
const PICTURE_BYTES_DECAY_DIVISOR: usize = 256;
// Room is reserved for the largest recent picture and a quarter more: 10 MiB at most.
const _: () = assert!(FRAME_BYTES_MAX.checked_add(FRAME_BYTES_MAX / 4).is_some() && PICTURE_BYTES_DECAY_DIVISOR > 1);
/// The smallest allocation pictures are copied into (they pack into it one after the other).
const PICTURE_ALLOC_BYTES_MIN: usize = 64 * 1024;
// The allocation for a picture of FRAME_BYTES_MAX and a quarter more, rounded up, is bounded.
const _: () = assert!((FRAME_BYTES_MAX + FRAME_BYTES_MAX / 4).next_power_of_two() <= 4 * FRAME_BYTES_MAX && PICTURE_ALLOC_BYTES_MIN.is_power_of_two());
/// End-of-picture hints (RTP marker) that must coincide with real picture ends before the
/// assembler acts on them; one hint in the wrong place and they are ignored for good.
pub const MARKER_TRUST_CONFIRMATIONS: u32 = 8;
/// Bytes of a NAL needed to classify it: header plus the first slice-header byte.
const fn probe_bytes(codec: Codec) -> usize {
    match codec {
        Codec::H265 => 3,
        _ => 2,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameTooLarge {
    pub bytes: usize,
}

pub struct AuAssembler {
    codec: Codec,
    data: BytesMut,
    /// Where the next start-code search begins.
    scan_from: usize,
    has_vcl: bool,
    keyframe: bool,
    /// (byte offset in `data`, pts, dts) of PES starts not yet given to a picture.
    marks: VecDeque<(usize, u64, u64)>,
    /// Last emitted (pts, dts) and the step before it, to extrapolate pictures with no PTS.
    last: Option<(u64, u64)>,
    step: u64,
    /// `data.len()` at the latest end-of-picture hint not acted on.
    hint_at: Option<usize>,
    hint_confirmations: u32,
    hints_distrusted: bool,
    /// A picture was emitted on a hint: the next NAL must open a new picture.
    emitted_on_hint: bool,
    /// Packets were lost in the picture being assembled: its end says nothing about hints.
    loss_in_picture: bool,
    /// The largest recent picture (decaying): room for one is reserved when `data` runs out,
    /// so a picture is copied in once instead of through a chain of doublings (the growth's
    /// copies and fresh pages cost three times the copy itself: docs/PERFORMANCE.md), and the
    /// next pictures pack into the same allocation after it.
    picture_bytes_recent: usize,
    finder: memchr::memmem::Finder<'static>,
}

impl AuAssembler {
    pub fn new(codec: Codec) -> Self {
        AuAssembler {
            codec,
            data: BytesMut::new(),
            scan_from: 0,
            has_vcl: false,
            keyframe: false,
            marks: VecDeque::new(),
            last: None,
            step: 0,
            hint_at: None,
            hint_confirmations: 0,
            hints_distrusted: false,
            emitted_on_hint: false,
            loss_in_picture: false,
            picture_bytes_recent: 0,
            finder: memchr::memmem::Finder::new(&[0u8, 0, 1]),
        }
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    pub fn buffered(&self) -> usize {
        self.data.len()
    }

    /// Appends elementary-stream bytes; `timestamps` is the (pts, dts) of the PES they start.
    pub fn push(&mut self, es: &[u8], timestamps: Option<(u64, u64)>, out: &mut Vec<Frame>) -> Result<(), FrameTooLarge> {
        if let Some((pts, dts)) = timestamps {
            if self.marks.len() == TIMESTAMP_MARKS_MAX {
                self.marks.pop_front();
            }
            self.marks.push_back((self.data.len(), pts, dts));
        }
        if self.data.capacity() - self.data.len() < es.len() {
            // Bounded: a picture past FRAME_BYTES_MAX is refused, so none remembered is much more.
            let room = self.picture_bytes_recent + self.picture_bytes_recent / 4;
            // A power of two: the allocator's size classes stay few, so what the last GOP's
            // pictures freed is reused by this one's instead of fresh pages faulted in (and
            // the freed ones purged) as the sizes drift: docs/PERFORMANCE.md.
            let len = self.data.len();
            let capacity = (len + es.len().max(room)).max(PICTURE_ALLOC_BYTES_MIN).next_power_of_two();
            self.data.reserve(capacity - len);
        }
        self.data.extend_from_slice(es);
        self.scan(out);
        if self.data.len() > FRAME_BYTES_MAX {
            let bytes = self.data.len();
            self.reset();
            return Err(FrameTooLarge { bytes });
        }
        Ok(())
    }

    /// The transport says a picture ended here (RTP marker). Once such hints have proved
    /// right `MARKER_TRUST_CONFIRMATIONS` times, the picture is emitted now instead of when
    /// the next one starts: one frame interval less latency.
    pub fn hint_end_of_picture(&mut self, out: &mut Vec<Frame>) {
        if self.hints_distrusted || !self.has_vcl {
            return;
        }
        if self.hint_confirmations >= MARKER_TRUST_CONFIRMATIONS {
            let len = self.data.len();
            self.emit(len, out);
            self.emitted_on_hint = true;
        } else {
            self.hint_at = Some(self.data.len());
        }
    }

    /// Packets were lost before the bytes that come next: what follows cannot judge the
    /// hints (a lost packet is the network's fault, not the device's markers').
    pub fn note_loss(&mut self) {
        self.emitted_on_hint = false;
        self.hint_at = None;
        self.loss_in_picture = true;
    }

    /// True once end-of-picture hints are acted on.
    pub fn hints_trusted(&self) -> bool {
        !self.hints_distrusted && self.hint_confirmations >= MARKER_TRUST_CONFIRMATIONS
    }

    fn distrust_hints(&mut self) {
        self.hints_distrusted = true;
        self.hint_at = None;
    }

    /// Emits the picture in progress (end of stream).
    pub fn flush(&mut self, out: &mut Vec<Frame>) {
        if self.has_vcl {
            let len = self.data.len();
            self.emit(len, out);
        }
        self.reset();
    }

    fn reset(&mut self) {
        self.data.clear();
        self.marks.clear();
        self.scan_from = 0;
        self.has_vcl = false;
        self.keyframe = false;
    }

    fn scan(&mut self, out: &mut Vec<Frame>) {
        let probe = probe_bytes(self.codec);
        if self.emitted_on_hint && self.data.len() >= 4 && !(self.data.starts_with(&[0, 0, 1]) || self.data.starts_with(&[0, 0, 0, 1])) {
            // What followed a hinted picture end is the middle of a NAL: the hint was wrong.
            self.emitted_on_hint = false;
            self.distrust_hints();
        }
        loop {
            let Some(rel) = self.finder.find(&self.data[self.scan_from..]) else {
                // Keep two bytes: they may be the head of a start code split across pushes.
                self.scan_from = self.data.len().saturating_sub(2).max(self.scan_from);
                return;
            };
            let mut code = self.scan_from + rel;
            let nal = code + 3;
            if self.data.len() < nal + probe {
                self.scan_from = code;
                return;
            }
            let header = &self.data[nal..nal + probe];
            let vcl = is_vcl(self.codec, header);
            let opens = if vcl { first_slice_of_picture(self.codec, header) } else { opens_access_unit(self.codec, header) };
            if std::mem::take(&mut self.emitted_on_hint) && !(opens && code <= 1) {
                // The hint cut a picture short: never act on hints again.
                self.distrust_hints();
            }
            if self.has_vcl && opens {
                let cut = if code > 0 && self.data[code - 1] == 0 { code - 1 } else { code };
                match (self.hint_at.take(), std::mem::take(&mut self.loss_in_picture)) {
                    (_, true) => {} // a damaged picture proves nothing either way
                    (Some(h), false) if h == cut || h == code => self.hint_confirmations += 1,
                    (Some(_), false) => self.distrust_hints(),
                    // Two pictures under one hint, the second in a PES of its own with its own
                    // PTS (a Hikvision camera's keyframe and the picture after it): the hint
                    // still ends a picture, so low latency stays.
                    (None, false) if self.opens_own_pes(cut, code) => {}
                    (None, false) => self.hint_confirmations = 0,
                }
                self.emit(cut, out);
                code -= cut;
            } else if self.hint_at.is_some_and(|h| h <= code) {
                // A hint fell inside a picture (more of it followed).
                self.distrust_hints();
            }
            if vcl {
                let header = &self.data[code + 3..code + 3 + probe];
                self.keyframe |= is_key_nal(self.codec, header);
                self.has_vcl = true;
            }
            self.scan_from = code + 3;
        }
    }

    /// The picture opening at `cut` (its start code at `code`) begins a PES with a PTS other
    /// than the one of the picture before it.
    fn opens_own_pes(&self, cut: usize, code: usize) -> bool {
        let before = self.marks.iter().take_while(|m| m.0 <= 1).last().map(|m| m.1);
        self.marks.iter().any(|m| (m.0 == cut || m.0 == code) && Some(m.1) != before)
    }

    /// Emits data[..cut] as one picture and shifts offsets.
    fn emit(&mut self, cut: usize, out: &mut Vec<Frame>) {
        let data = self.data.split_to(cut).freeze();
        let recent = self.picture_bytes_recent;
        self.picture_bytes_recent = data.len().max(recent - recent / PICTURE_BYTES_DECAY_DIVISOR);
        // The picture starts at offset 0 (its first start code at 0 or 1).
        let mut ts = None;
        while let Some(&(offset, pts, dts)) = self.marks.front() {
            if offset > 1 {
                break;
            }
            ts = Some((pts, dts));
            self.marks.pop_front();
        }
        let (pts, dts) = ts.unwrap_or_else(|| self.last.map_or((0, 0), |(p, d)| (p + self.step, d + self.step)));
        if let Some((_, last_dts)) = self.last
            && dts > last_dts
        {
            self.step = dts - last_dts;
        }
        self.last = Some((pts, dts));
        for m in self.marks.iter_mut() {
            m.0 = m.0.saturating_sub(cut);
        }
        self.scan_from = self.scan_from.saturating_sub(cut);
        let keyframe = std::mem::take(&mut self.keyframe);
        self.has_vcl = false;
        if !data.is_empty() {
            out.push(Frame { codec: self.codec, pts, dts, keyframe, data });
        }
    }
}

/// first_mb_in_slice == 0 (H.264) / first_slice_segment_in_pic_flag (H.265): ue(v) 0 is bit '1'.
fn first_slice_of_picture(codec: Codec, header: &[u8]) -> bool {
    match codec {
        Codec::H265 => header[2] & 0x80 != 0,
        _ => header[1] & 0x80 != 0,
    }
}

/// NAL types that may only come before the first slice of a picture.
fn opens_access_unit(codec: Codec, header: &[u8]) -> bool {
    match codec {
        Codec::H265 => matches!(h265_nal_type(header), 32..=35 | 39 | 41..=44 | 48..=55),
        _ => matches!(h264_nal_type(header), 6..=9 | 14..=18),
    }
}

/// Splits a whole Annex B elementary stream (e.g. `ffmpeg -f h264` output) into pictures.
pub fn split_access_units(codec: Codec, data: &[u8]) -> Vec<Bytes> {
    let mut a = AuAssembler::new(codec);
    let mut frames = Vec::new();
    // A whole file may exceed the frame limit; feed it in pieces.
    for chunk in data.chunks(64 * 1024) {
        let _ = a.push(chunk, None, &mut frames);
    }
    a.flush(&mut frames);
    frames.into_iter().map(|f| f.data).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_by_first_slice_and_prefix_nals() {
        let es = [
            0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x68, 2, 0, 0, 1, 0x65, 0x88, // IDR, first_mb = 0
            0, 0, 1, 0x65, 0x40, // second slice of the same picture (first_mb != 0)
            0, 0, 1, 0x41, 0x9a, // next picture
            0, 0, 1, 0x06, 5, 0, 0, 1, 0x41, 0x9b, // SEI opens the third
        ];
        let units = split_access_units(Codec::H264, &es);
        assert_eq!(units.len(), 3);
        assert_eq!(&units[0][..], &es[..21]);
        assert_eq!(&units[1][..], &[0, 0, 1, 0x41, 0x9a]);
        assert_eq!(&units[2][..], &[0, 0, 1, 0x06, 5, 0, 0, 1, 0x41, 0x9b]);
    }

    #[test]
    fn timestamps_follow_pes_starts_not_pes_payloads() {
        let mut a = AuAssembler::new(Codec::H264);
        let mut out = Vec::new();
        // PES 1 (pts 100): picture 1 begins. PES 2 (pts 200): tail of 1, then picture 2 and 3.
        a.push(&[0, 0, 0, 1, 0x65, 0x88, 1, 2], Some((100, 100)), &mut out).unwrap();
        a.push(&[3, 4, 0, 0, 0, 1, 0x41, 0x9a, 5, 0, 0, 0, 1, 0x41, 0x9a, 6], Some((200, 200)), &mut out).unwrap();
        a.flush(&mut out);
        let got: Vec<(u64, bool, usize)> = out.iter().map(|f| (f.pts, f.keyframe, f.data.len())).collect();
        assert_eq!(got, vec![(100, true, 10), (200, false, 7), (300, false, 7)]);
    }

    #[test]
    fn start_code_split_across_pushes() {
        let mut a = AuAssembler::new(Codec::H265);
        let mut out = Vec::new();
        a.push(&[0, 0, 0, 1, 0x26, 0x01, 0xaf, 7, 0, 0], Some((1, 1)), &mut out).unwrap();
        a.push(&[1, 0x02, 0x01], Some((2, 2)), &mut out).unwrap();
        assert!(out.is_empty(), "the next header is not complete yet");
        a.push(&[0xd0, 9], None, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert!(out[0].keyframe);
        assert_eq!(&out[0].data[..], &[0, 0, 0, 1, 0x26, 0x01, 0xaf, 7]);
    }

    /// After a keyframe, the pictures that follow are copied into room reserved for one like it
    /// and pack there one after the other: a few allocations for twenty pictures, each picture's
    /// bytes copied in once (growing a buffer per picture copied them again and again).
    #[test]
    fn pictures_pack_into_room_reserved_for_a_large_one() {
        const CHUNK_BYTES: usize = 1_400;
        let mut a = AuAssembler::new(Codec::H264);
        let mut out = Vec::new();
        let mut sent = Vec::new();
        for i in 0..21u8 {
            let mut pic = vec![0, 0, 0, 1, if i == 0 { 0x65 } else { 0x41 }, 0x88];
            pic.extend(std::iter::repeat_n(i + 1, if i == 0 { 30_000 } else { 5_000 }));
            for chunk in pic.chunks(CHUNK_BYTES) {
                a.push(chunk, None, &mut out).unwrap();
            }
            sent.push(pic);
        }
        a.flush(&mut out);
        assert_eq!(out.iter().map(|f| &f.data[..]).collect::<Vec<_>>(), sent.iter().map(|p| &p[..]).collect::<Vec<_>>());
        let moves = out.windows(2).skip(1).filter(|w| w[1].data.as_ptr() != w[0].data.as_ptr().wrapping_add(w[0].data.len())).count();
        assert!(moves <= 4, "20 pictures of 5 kB after one of 30 kB in {} allocations", moves + 1);
    }

    fn picture(key: bool) -> Vec<u8> {
        let mut v = vec![0, 0, 0, 1, if key { 0x65 } else { 0x41 }, 0x88];
        v.extend_from_slice(&[7; 100]);
        v
    }

    /// An assembler whose hints have been confirmed enough to be acted on.
    fn trusted() -> (AuAssembler, Vec<Frame>) {
        let mut a = AuAssembler::new(Codec::H264);
        let mut out = Vec::new();
        for i in 0..=MARKER_TRUST_CONFIRMATIONS as u64 {
            a.push(&picture(false), Some((i, i)), &mut out).unwrap();
            a.hint_end_of_picture(&mut out);
        }
        assert!(a.hints_trusted());
        (a, out)
    }

    #[test]
    fn trusted_end_of_picture_hints_cut_latency() {
        let mut a = AuAssembler::new(Codec::H264);
        let mut out = Vec::new();
        let n = MARKER_TRUST_CONFIRMATIONS as u64;
        for i in 0..n {
            a.push(&picture(i == 0), Some((i, i)), &mut out).unwrap();
            a.hint_end_of_picture(&mut out);
            assert_eq!(out.len() as u64, i, "held until the next picture while untrusted");
        }
        a.push(&picture(false), Some((n, n)), &mut out).unwrap();
        assert!(a.hints_trusted(), "the n-th picture start confirmed the n-th hint");
        a.hint_end_of_picture(&mut out);
        assert_eq!(out.len() as u64, n + 1, "emitted on the hint");
        assert_eq!(out[n as usize].pts, n);
        a.push(&picture(false), Some((n + 1, n + 1)), &mut out).unwrap();
        assert!(a.hints_trusted());
        assert_eq!(out.len() as u64, n + 1, "nothing left to cut when the next picture starts");
    }

    #[test]
    fn a_hint_inside_a_picture_is_distrusted_for_good() {
        let mut a = AuAssembler::new(Codec::H264);
        let mut out = Vec::new();
        let p = picture(true);
        a.push(&p[..50], Some((0, 0)), &mut out).unwrap();
        a.hint_end_of_picture(&mut out); // a device that sets the marker on every packet
        a.push(&p[50..], None, &mut out).unwrap();
        a.push(&picture(false), Some((1, 1)), &mut out).unwrap();
        assert!(a.hints_distrusted);
        for i in 2..20 {
            a.push(&picture(false), Some((i, i)), &mut out).unwrap();
            a.hint_end_of_picture(&mut out);
        }
        assert!(!a.hints_trusted());
        assert_eq!(out.len(), 19, "only NAL-level cuts");
        assert_eq!(out[0].data.len(), p.len(), "the first picture came out whole");
    }

    #[test]
    fn a_wrong_hint_after_trust_is_caught_at_once() {
        let (mut a, mut out) = trusted();
        let p = picture(false);
        a.push(&p[..40], Some((50, 50)), &mut out).unwrap();
        a.hint_end_of_picture(&mut out); // wrong: the picture continues
        a.push(&p[40..], None, &mut out).unwrap();
        assert!(!a.hints_trusted());
    }

    #[test]
    fn loss_does_not_count_against_the_markers() {
        let (mut a, mut out) = trusted();
        // The next picture's first packet is lost: its data starts mid-NAL.
        a.note_loss();
        let p = picture(false);
        a.push(&p[40..], Some((99, 99)), &mut out).unwrap();
        a.push(&picture(false), Some((100, 100)), &mut out).unwrap();
        assert!(a.hints_trusted());
        // A picture whose marker packet was lost ends without a hint: not held against them.
        a.note_loss();
        a.push(&picture(false), Some((101, 101)), &mut out).unwrap();
        assert!(a.hints_trusted());
    }

    #[test]
    fn a_second_picture_in_a_pes_of_its_own_under_one_hint_keeps_the_trust() {
        let (mut a, mut out) = trusted();
        out.clear();
        // A Hikvision keyframe and the picture after it under one marker, each its own PES.
        a.push(&picture(true), Some((50, 50)), &mut out).unwrap();
        a.push(&picture(false), Some((51, 51)), &mut out).unwrap();
        a.hint_end_of_picture(&mut out);
        let got: Vec<(u64, bool)> = out.iter().map(|f| (f.pts, f.keyframe)).collect();
        assert_eq!(got, [(50, true), (51, false)], "both out by the hint");
        assert!(a.hints_trusted());
        // Two pictures in one PES under one hint: a marker missed, trust starts over.
        out.clear();
        let mut two = picture(false);
        two.extend(picture(false));
        a.push(&two, Some((52, 52)), &mut out).unwrap();
        assert!(!a.hints_trusted());
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn fuzz_never_panics_and_stays_bounded() {
        let mut rng = crate::proto::testutil::Rng::new(17);
        for codec in [Codec::H264, Codec::H265] {
            let mut a = AuAssembler::new(codec);
            let mut out = Vec::new();
            for i in 0..5_000u64 {
                let mut d = rng.bytes(3000);
                if rng.below(2) == 0 && d.len() > 8 {
                    d[3..6].copy_from_slice(&[0, 0, 1]);
                }
                let _ = a.push(&d, (rng.below(3) == 0).then_some((i, i)), &mut out);
                if rng.below(4) == 0 {
                    a.hint_end_of_picture(&mut out);
                }
                assert!(a.buffered() <= FRAME_BYTES_MAX);
                assert!(a.marks.len() <= TIMESTAMP_MARKS_MAX);
                out.clear();
            }
        }
    }
}
