//! MPEG-2 Program Stream demuxer (ISO 13818-1 §2.5) as carried by GB28181 RTP.
//!
//! Sans-IO: feed RTP payloads with `push`, collect `PsEvent`s. Handles pack headers with
//! stuffing, system headers, PSM (stream types incl. vendor 0x90/0x91), PES with PTS/DTS
//! (MPEG-2 and MPEG-1 syntax), frames spread over many PES and RTP packets, and resyncs
//! on garbage by scanning for the next start code.

use super::access_unit::AuAssembler;
use super::frame::{Codec, Frame};
use super::h26x;
use bytes::BytesMut;

/// Unparsed bytes held while waiting for the rest of a packet; a PES is at most 64 KiB,
/// so more than this means a broken or hostile stream.
pub const PS_BUFFER_BYTES_MAX: usize = 2 << 20;
/// Largest access unit assembled from several PES (a 4K I-frame fits comfortably).
pub const FRAME_BYTES_MAX: usize = 8 << 20;
/// PSM entries kept; real maps have 1–3.
pub const PSM_STREAMS_MAX: usize = 16;

const START_PACK: u8 = 0xba;
const START_SYSTEM: u8 = 0xbb;
const START_PSM: u8 = 0xbc;
const START_END: u8 = 0xb9;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PsError {
    /// Bytes skipped to find the next start code.
    Resync {
        skipped: usize,
    },
    BadPackHeader,
    BadPsm,
    BadPes {
        stream_id: u8,
    },
    FrameTooLarge {
        bytes: usize,
    },
    BufferOverflow {
        bytes: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PsEvent {
    Frame(Frame),
    Error(PsError),
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PsStats {
    pub frames: u64,
    pub errors: u64,
    pub bytes_skipped: u64,
}

#[derive(Default)]
pub struct PsDemuxer {
    buf: BytesMut,
    /// (elementary_stream_id, codec) from the latest PSM.
    psm: Vec<(u8, Codec)>,
    /// Created on the first video PES, once the codec is known.
    video: Option<AuAssembler>,
    frames: Vec<Frame>,
    /// Last RTP timestamp seen, used when a PES carries no PTS.
    rtp_timestamp: u64,
    /// True while skipping garbage, so one resync run reports one error.
    resyncing: bool,
    /// The latest `push` carried video (an end-of-frame hint then concerns video).
    video_in_push: bool,
    /// (stream id, bytes still to come) of a video PES whose payload is passed straight
    /// from RTP payloads to the picture assembler, skipping the reassembly buffer.
    pes_remaining: Option<(u8, usize)>,
    pub stats: PsStats,
}

enum Step {
    NeedMore,
    Consumed(usize),
}

impl PsDemuxer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Codec declared for a stream id by the PSM, if any.
    pub fn mapped_codec(&self, stream_id: u8) -> Option<Codec> {
        self.psm.iter().find(|(id, _)| *id == stream_id).map(|(_, c)| *c)
    }

    pub fn push(&mut self, payload: &[u8], rtp_timestamp: u32, out: &mut Vec<PsEvent>) {
        self.rtp_timestamp = u64::from(rtp_timestamp);
        self.video_in_push = false;
        let mut payload = payload;
        if let Some((stream_id, remaining)) = self.pes_remaining {
            let n = remaining.min(payload.len());
            self.video_payload(stream_id, None, &payload[..n], out);
            self.pes_remaining = (remaining > n).then_some((stream_id, remaining - n));
            payload = &payload[n..];
        }
        if self.buf.len() + payload.len() > PS_BUFFER_BYTES_MAX {
            let bytes = self.buf.len() + payload.len();
            self.buf.clear();
            self.pes_remaining = None;
            self.resyncing = true;
            self.error(PsError::BufferOverflow { bytes }, out);
        }
        self.buf.extend_from_slice(payload);
        loop {
            match self.step(out) {
                Step::NeedMore => break,
                // Moves the start only: `split_to` would share the buffer (atomic counts).
                Step::Consumed(n) => bytes::Buf::advance(&mut self.buf, n),
            }
        }
    }

    /// The RTP marker ended the latest push. If that push carried video and ended on a PES
    /// boundary, the picture may be complete: see `AuAssembler::hint_end_of_picture`.
    pub fn end_of_frame(&mut self, out: &mut Vec<PsEvent>) {
        if !(self.video_in_push && self.buf.is_empty() && self.pes_remaining.is_none()) {
            return;
        }
        if let Some(v) = self.video.as_mut() {
            v.hint_end_of_picture(&mut self.frames);
        }
        self.drain_frames(out);
    }

    /// RTP packets were lost before the next payload. A PES cut by the gap cannot be counted
    /// through it (its length would swallow the next packet's headers), so parsing starts
    /// again at the next PS start code; the picture in progress is told (`AuAssembler::note_loss`).
    pub fn note_loss(&mut self, out: &mut Vec<PsEvent>) {
        if self.pes_remaining.take().is_some() || !self.buf.is_empty() {
            self.buf.clear();
            self.resyncing = true;
            self.error(PsError::Resync { skipped: 0 }, out);
        }
        if let Some(v) = self.video.as_mut() {
            v.note_loss();
        }
    }

    /// True once pictures are emitted on the RTP marker rather than when the next one starts.
    pub fn low_latency(&self) -> bool {
        self.video.as_ref().is_some_and(AuAssembler::hints_trusted)
    }

    /// Emits the frame being assembled (call at end of stream).
    pub fn flush(&mut self, out: &mut Vec<PsEvent>) {
        self.finish_video(out);
    }

    fn error(&mut self, e: PsError, out: &mut Vec<PsEvent>) {
        self.stats.errors += 1;
        out.push(PsEvent::Error(e));
    }

    fn step(&mut self, out: &mut Vec<PsEvent>) -> Step {
        let b = &self.buf[..];
        if b.len() < 4 {
            return Step::NeedMore;
        }
        if !(b[0] == 0 && b[1] == 0 && b[2] == 1 && is_ps_start(b[3])) {
            return self.resync(out);
        }
        let was_resyncing = std::mem::replace(&mut self.resyncing, false);
        let step = match b[3] {
            START_PACK => self.pack_header(out),
            START_END => Step::Consumed(4),
            START_PSM => self.packet_with_length(out, Self::parse_psm),
            START_SYSTEM => self.packet_with_length(out, |_, _, _| {}),
            _ => self.pes(out),
        };
        if matches!(step, Step::NeedMore) {
            self.resyncing = was_resyncing;
        }
        step
    }

    fn resync(&mut self, out: &mut Vec<PsEvent>) -> Step {
        let b = &self.buf[..];
        let found = memchr::memmem::find_iter(b, &[0u8, 0, 1]).find(|&i| i + 3 < b.len() && is_ps_start(b[i + 3]));
        // Keep up to 3 trailing bytes: they may be the head of a start code split across packets.
        let skip = found.unwrap_or(b.len().saturating_sub(3));
        if skip == 0 {
            return Step::NeedMore;
        }
        self.stats.bytes_skipped += skip as u64;
        if !self.resyncing {
            self.resyncing = true;
            self.error(PsError::Resync { skipped: skip }, out);
        }
        Step::Consumed(skip)
    }

    fn pack_header(&mut self, out: &mut Vec<PsEvent>) -> Step {
        let b = &self.buf[..];
        if b.len() < 5 {
            return Step::NeedMore;
        }
        if b[4] & 0xc0 == 0x40 {
            // MPEG-2: 14 bytes plus 0..7 stuffing bytes.
            if b.len() < 14 {
                return Step::NeedMore;
            }
            let len = 14 + (b[13] & 0x07) as usize;
            if b.len() < len { Step::NeedMore } else { Step::Consumed(len) }
        } else if b[4] & 0xf0 == 0x20 {
            // MPEG-1 pack header.
            if b.len() < 12 { Step::NeedMore } else { Step::Consumed(12) }
        } else {
            self.error(PsError::BadPackHeader, out);
            Step::Consumed(4)
        }
    }

    fn packet_with_length(&mut self, out: &mut Vec<PsEvent>, parse: fn(&mut Self, &[u8], &mut Vec<PsEvent>)) -> Step {
        if self.buf.len() < 6 {
            return Step::NeedMore;
        }
        let total = 6 + u16::from_be_bytes([self.buf[4], self.buf[5]]) as usize;
        if self.buf.len() < total {
            return Step::NeedMore;
        }
        let body = self.buf.split_to(total).freeze();
        parse(self, &body[6..], out);
        Step::Consumed(0)
    }

    fn parse_psm(&mut self, body: &[u8], out: &mut Vec<PsEvent>) {
        match parse_psm_body(body) {
            Some(map) => self.psm = map,
            None => self.error(PsError::BadPsm, out),
        }
    }

    fn pes(&mut self, out: &mut Vec<PsEvent>) -> Step {
        let b = &self.buf[..];
        if b.len() < 6 {
            return Step::NeedMore;
        }
        let stream_id = b[3];
        let declared = u16::from_be_bytes([b[4], b[5]]) as usize;
        let total = if declared == 0 && is_video_id(stream_id) {
            // Unbounded video PES: it ends at the next PS start code (never valid inside H.264/H.265).
            match memchr::memmem::find_iter(&b[6..], &[0u8, 0, 1]).find(|&i| 6 + i + 3 < b.len() && is_ps_start(b[6 + i + 3])) {
                Some(i) => 6 + i,
                None => return Step::NeedMore,
            }
        } else {
            6 + declared
        };
        if b.len() < total {
            // A video PES whose header (and a first payload byte, which carries the PTS on) is
            // here: pass its payload on as it arrives.
            let header_complete = b.len() >= 9 && b[6] & 0xc0 == 0x80 && b.len() > 9 + b[8] as usize;
            if !(is_video_id(stream_id) && declared > 0 && header_complete) {
                return Step::NeedMore;
            }
            let have = b.len();
            let Some(header) = parse_pes_header(b) else {
                self.error(PsError::BadPes { stream_id }, out);
                return Step::Consumed(have.min(total));
            };
            self.video_from_buf(stream_id, &header, have, out);
            self.pes_remaining = Some((stream_id, total - have));
            return Step::Consumed(have);
        }
        if !(is_video_id(stream_id) || is_audio_id(stream_id)) {
            return Step::Consumed(total); // padding, private streams, ECM/EMM…
        }
        let Some(header) = parse_pes_header(&b[..total]) else {
            self.error(PsError::BadPes { stream_id }, out);
            return Step::Consumed(total);
        };
        if is_video_id(stream_id) {
            self.video_from_buf(stream_id, &header, total, out);
            return Step::Consumed(total);
        }
        // Audio frames keep their bytes: the only split of the buffer.
        let payload = self.buf.split_to(total).freeze().slice(header.payload_offset..);
        if !payload.is_empty() {
            let codec = self.mapped_codec(stream_id).unwrap_or_else(|| sniff_audio(&payload));
            let pts = header.pts.unwrap_or(self.rtp_timestamp);
            self.stats.frames += 1;
            out.push(PsEvent::Frame(Frame { codec, pts, dts: pts, keyframe: true, data: payload }));
        }
        Step::Consumed(0)
    }

    /// The video payload of the PES at the start of the buffer, `end` bytes of it here. The
    /// assembler copies it, so it is lent rather than split off (no shared counts per packet).
    fn video_from_buf(&mut self, stream_id: u8, header: &PesHeader, end: usize, out: &mut Vec<PsEvent>) {
        let buf = std::mem::take(&mut self.buf);
        self.video_payload(stream_id, header.pts.map(|p| (p, header.dts.unwrap_or(p))), &buf[header.payload_offset..end], out);
        debug_assert!(self.buf.is_empty(), "video_payload leaves the buffer alone");
        self.buf = buf;
    }

    /// Video elementary-stream bytes; `timestamps` when they start a PES that has them.
    fn video_payload(&mut self, stream_id: u8, timestamps: Option<(u64, u64)>, payload: &[u8], out: &mut Vec<PsEvent>) {
        if payload.is_empty() {
            return;
        }
        self.video_in_push = true;
        let codec = match (self.mapped_codec(stream_id), &self.video) {
            (Some(c), _) => c,
            (None, Some(v)) => v.codec(),
            (None, None) => sniff_video(payload),
        };
        if self.video.as_ref().is_none_or(|v| v.codec() != codec) {
            self.finish_video(out);
            self.video = Some(AuAssembler::new(codec));
        }
        let assembler = self.video.as_mut().expect("just set");
        let result = assembler.push(payload, timestamps, &mut self.frames);
        self.drain_frames(out);
        if let Err(e) = result {
            self.error(PsError::FrameTooLarge { bytes: e.bytes }, out);
        }
    }

    fn finish_video(&mut self, out: &mut Vec<PsEvent>) {
        if let Some(v) = self.video.as_mut() {
            v.flush(&mut self.frames);
        }
        self.drain_frames(out);
    }

    fn drain_frames(&mut self, out: &mut Vec<PsEvent>) {
        self.stats.frames += self.frames.len() as u64;
        out.extend(self.frames.drain(..).map(PsEvent::Frame));
    }
}

fn is_video_id(id: u8) -> bool {
    (0xe0..=0xef).contains(&id)
}

fn is_audio_id(id: u8) -> bool {
    (0xc0..=0xdf).contains(&id)
}

/// Start codes that may begin a PS-level packet (pack, system, PSM, PES, end).
fn is_ps_start(id: u8) -> bool {
    id >= START_END
}

/// Parses PSM bytes after the 6-byte packet header into (stream id, codec) pairs.
fn parse_psm_body(body: &[u8]) -> Option<Vec<(u8, Codec)>> {
    let info_len = u16::from_be_bytes([*body.get(2)?, *body.get(3)?]) as usize;
    let mut i = 4 + info_len;
    let es_map_len = u16::from_be_bytes([*body.get(i)?, *body.get(i + 1)?]) as usize;
    i += 2;
    let end = i.checked_add(es_map_len)?;
    if end > body.len() {
        return None;
    }
    let mut map = Vec::new();
    while i + 4 <= end {
        let (stream_type, id) = (body[i], body[i + 1]);
        let es_info_len = u16::from_be_bytes([body[i + 2], body[i + 3]]) as usize;
        i += 4 + es_info_len;
        if let Some(codec) = Codec::from_stream_type(stream_type)
            && map.len() < PSM_STREAMS_MAX
        {
            map.push((id, codec));
        }
    }
    Some(map)
}

pub(crate) struct PesHeader {
    pub pts: Option<u64>,
    pub dts: Option<u64>,
    pub payload_offset: usize,
}

fn read_timestamp(b: &[u8]) -> Option<u64> {
    if b.len() < 5 {
        return None;
    }
    Some((u64::from(b[0] & 0x0e) << 29) | (u64::from(b[1]) << 22) | (u64::from(b[2] & 0xfe) << 14) | (u64::from(b[3]) << 7) | (u64::from(b[4]) >> 1))
}

/// A PES header (MPEG-2, or MPEG-1 in program streams) from the packet start code on.
pub(crate) fn parse_pes_header(p: &[u8]) -> Option<PesHeader> {
    let b6 = *p.get(6)?;
    if b6 & 0xc0 == 0x80 {
        // MPEG-2 PES header.
        let flags = *p.get(7)?;
        let header_len = *p.get(8)? as usize;
        let payload_offset = 9 + header_len;
        if payload_offset > p.len() {
            return None;
        }
        let opt = &p[9..payload_offset];
        let (pts, dts) = match flags >> 6 {
            2 => (Some(read_timestamp(opt)?), None),
            3 => (Some(read_timestamp(opt)?), Some(read_timestamp(opt.get(5..)?)?)),
            _ => (None, None),
        };
        return Some(PesHeader { pts, dts, payload_offset });
    }
    // MPEG-1 PES header: stuffing, optional STD buffer, then timestamps.
    let mut i = 6;
    while *p.get(i)? == 0xff {
        i += 1;
        if i > 6 + 16 {
            return None;
        }
    }
    if p[i] & 0xc0 == 0x40 {
        i += 2;
    }
    let b = *p.get(i)?;
    let (pts, dts, len) = match b & 0xf0 {
        0x20 => (Some(read_timestamp(p.get(i..)?)?), None, 5),
        0x30 => (Some(read_timestamp(p.get(i..)?)?), Some(read_timestamp(p.get(i + 5..)?)?), 10),
        _ if b == 0x0f => (None, None, 1),
        _ => return None,
    };
    let payload_offset = i + len;
    (payload_offset <= p.len()).then_some(PesHeader { pts, dts, payload_offset })
}

/// Without a PSM (e.g. ffmpeg's `-f mpeg`), guess from the first NAL header byte.
fn sniff_video(payload: &[u8]) -> Codec {
    match h26x::nal_units(payload).next().and_then(|n| n.first().copied()) {
        Some(b) if matches!(b & 0x1f, 1 | 5 | 7 | 8 | 9) || b == 0x06 => Codec::H264,
        Some(_) => Codec::H265,
        None => Codec::H264,
    }
}

/// Without a PSM, ADTS sync words mean AAC; GB28181 devices otherwise send G.711A.
fn sniff_audio(payload: &[u8]) -> Codec {
    if payload.len() >= 2 && payload[0] == 0xff && payload[1] & 0xf6 == 0xf0 { Codec::Aac } else { Codec::Pcma }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ps_mux::PsMuxer;
    use crate::proto::testutil::Rng;
    use bytes::Bytes;

    fn video_frame(pts: u64, key: bool, len: usize) -> Frame {
        let mut data = vec![0, 0, 0, 1];
        if key {
            data.extend_from_slice(&[0x67, 0x42, 0, 0x1e, 0, 0, 0, 1, 0x68, 0xce, 0, 0, 1, 0x65, 0x88]);
        } else {
            data.extend_from_slice(&[0x41, 0x9a]);
        }
        data.extend((0..len).map(|i| (i % 251) as u8 | 1));
        Frame { codec: Codec::H264, pts, dts: pts, keyframe: key, data: Bytes::from(data) }
    }

    fn audio_frame(pts: u64) -> Frame {
        Frame { codec: Codec::Pcma, pts, dts: pts, keyframe: true, data: Bytes::from(vec![0xd5; 320]) }
    }

    fn frames(events: &[PsEvent]) -> Vec<&Frame> {
        events.iter().filter_map(|e| if let PsEvent::Frame(f) = e { Some(f) } else { None }).collect()
    }

    fn mux_stream() -> (Vec<Frame>, Vec<u8>) {
        let mut mux = PsMuxer::new(Codec::H264, Some(Codec::Pcma));
        let mut input = Vec::new();
        let mut ps = Vec::new();
        for i in 0..10u64 {
            let v = video_frame(3600 * i, i % 5 == 0, if i == 0 { 150_000 } else { 3000 });
            ps.extend_from_slice(&mux.mux(&v));
            input.push(v);
            let a = audio_frame(3600 * i);
            ps.extend_from_slice(&mux.mux(&a));
            input.push(a);
        }
        (input, ps)
    }

    fn demux_in_chunks(ps: &[u8], chunk: usize) -> Vec<PsEvent> {
        let mut d = PsDemuxer::new();
        let mut out = Vec::new();
        for c in ps.chunks(chunk) {
            d.push(c, 0, &mut out);
        }
        d.flush(&mut out);
        out
    }

    #[test]
    fn round_trips_muxed_frames_in_any_chunking() {
        let (input, ps) = mux_stream();
        // Output order: video frames are emitted when the next one starts, so compare per kind.
        for chunk in [1, 7, 1400, ps.len()] {
            let out = demux_in_chunks(&ps, chunk);
            assert!(out.iter().all(|e| matches!(e, PsEvent::Frame(_))), "chunk {chunk}: {:?}", out.iter().find(|e| matches!(e, PsEvent::Error(_))));
            let got = frames(&out);
            for kind in [Codec::H264, Codec::Pcma] {
                let want: Vec<&Frame> = input.iter().filter(|f| f.codec == kind).collect();
                let have: Vec<&Frame> = got.iter().copied().filter(|f| f.codec == kind).collect();
                assert_eq!(want, have, "chunk {chunk}");
            }
        }
    }

    #[test]
    fn uses_psm_stream_types() {
        let mut mux = PsMuxer::new(Codec::H265, Some(Codec::Pcmu));
        let mut f = video_frame(0, true, 10);
        f.codec = Codec::H265;
        f.data = Bytes::from_static(&[0, 0, 0, 1, 0x40, 0x01, 1, 0, 0, 1, 0x26, 0x01, 9, 9]);
        let ps = mux.mux(&f);
        let mut d = PsDemuxer::new();
        let mut out = Vec::new();
        d.push(&ps, 0, &mut out);
        d.flush(&mut out);
        assert_eq!(d.mapped_codec(0xe0), Some(Codec::H265));
        assert_eq!(d.mapped_codec(0xc0), Some(Codec::Pcmu));
        let got = frames(&out);
        assert_eq!(got.len(), 1);
        assert!(got[0].keyframe);
        assert_eq!(got[0].codec, Codec::H265);
    }

    #[test]
    fn psm_with_descriptors_as_hikvision_sends() {
        // PSM with a program descriptor and per-stream descriptors (as Hikvision NVRs send),
        // mapping 0xe0 to H.265 and 0xc0 to G.711A.
        let body: &[u8] = &[
            0xe0, 0xff, // current_next, version, marker
            0x00, 0x0a, // program_stream_info_length
            0x40, 0x0e, 0x48, 0x4b, 0x01, 0x00, 0x14, 0x16, 0xa8, 0xc5, // descriptor "HK"
            0x00, 0x18, // elementary_stream_map_length
            0x24, 0xe0, 0x00, 0x08, 0x42, 0x0e, 0x07, 0x10, 0x10, 0xea, 0x02, 0xd0, // H.265 + descriptor
            0x90, 0xc0, 0x00, 0x08, 0x43, 0x0a, 0x01, 0x40, 0xfe, 0x00, 0x7d, 0x03, // G.711A + descriptor
            0xde, 0xad, 0xbe, 0xef, // CRC (devices often send a wrong one; not checked)
        ];
        let mut psm = vec![0, 0, 1, 0xbc, 0, body.len() as u8];
        psm.extend_from_slice(body);
        let mut d = PsDemuxer::new();
        let mut out = Vec::new();
        d.push(&psm, 0, &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!((d.mapped_codec(0xe0), d.mapped_codec(0xc0)), (Some(Codec::H265), Some(Codec::Pcma)));
        // A PSM whose map runs past its packet is reported, and the old map kept.
        let mut bad = psm.clone();
        bad[6 + 14] = 0x40;
        d.push(&bad, 0, &mut out);
        assert_eq!(out, vec![PsEvent::Error(PsError::BadPsm)]);
        assert_eq!(d.mapped_codec(0xe0), Some(Codec::H265));
    }

    #[test]
    fn resyncs_after_garbage_and_reports_once() {
        let (_, ps) = mux_stream();
        let mut d = PsDemuxer::new();
        let mut out = Vec::new();
        d.push(&[0x11; 500], 0, &mut out);
        d.push(&ps, 0, &mut out);
        d.flush(&mut out);
        let errors: Vec<_> = out.iter().filter(|e| matches!(e, PsEvent::Error(_))).collect();
        assert_eq!(errors, vec![&PsEvent::Error(PsError::Resync { skipped: 497 })]);
        assert_eq!(frames(&out).len(), 20);
    }

    #[test]
    fn pack_header_stuffing_and_mpeg1_pes() {
        // MPEG-2 pack header with 3 stuffing bytes, then an MPEG-1 style video PES with PTS only.
        let mut ps = vec![0, 0, 1, 0xba, 0x44, 0, 4, 0, 4, 1, 0, 0, 3, 0xfb, 0xff, 0xff, 0xff];
        let es = [0, 0, 0, 1, 0x65, 0x88, 0x80];
        let pes_len = 5 + es.len();
        ps.extend_from_slice(&[0, 0, 1, 0xe0, 0, pes_len as u8, 0x21, 0, 1, 0, 1]);
        ps.extend_from_slice(&es);
        let mut d = PsDemuxer::new();
        let mut out = Vec::new();
        d.push(&ps, 0, &mut out);
        d.flush(&mut out);
        let got = frames(&out);
        assert_eq!(got.len(), 1, "{out:?}");
        assert_eq!(&got[0].data[..], &es);
        assert!(got[0].keyframe);
    }

    #[test]
    fn oversized_frame_is_dropped_with_error_and_memory_stays_bounded() {
        let mut mux = PsMuxer::new(Codec::H264, None);
        let big = video_frame(0, true, FRAME_BYTES_MAX + 10);
        let next = video_frame(3600, false, 100);
        let mut d = PsDemuxer::new();
        let mut out = Vec::new();
        for c in mux.mux(&big).chunks(1400).chain(mux.mux(&next).chunks(1400)) {
            d.push(c, 0, &mut out);
            assert!(d.buf.len() <= PS_BUFFER_BYTES_MAX);
        }
        d.flush(&mut out);
        assert!(out.iter().any(|e| matches!(e, PsEvent::Error(PsError::FrameTooLarge { .. }))));
        // The picture after the oversized one still comes out whole.
        assert_eq!(frames(&out).last().map(|f| &f.data), Some(&next.data));
    }

    #[test]
    fn fuzz_random_and_mutated_input_never_panics() {
        let (_, ps) = mux_stream();
        let mut rng = Rng::new(42);
        for _ in 0..300 {
            let mutated = rng.mutate(&ps[..ps.len().min(20_000)]);
            let mut d = PsDemuxer::new();
            let mut out = Vec::new();
            for c in mutated.chunks(1 + rng.below(2000)) {
                d.push(c, 0, &mut out);
                assert!(d.buf.len() <= PS_BUFFER_BYTES_MAX);
            }
            d.flush(&mut out);
            let junk = rng.bytes(4096);
            d.push(&junk, 0, &mut out);
        }
    }
}
