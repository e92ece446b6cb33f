//! MPEG-2 Transport Stream demuxer (ISO 13818-1) for TS carried over RTP (RFC 2250, payload
//! type 33: what `ffmpeg -f rtp_mpegts` and some encoders and cascaded platforms send). PAT
//! -> PMT -> the first video and the first audio elementary stream; PES reassembled per PID.
//! Video goes through the same access-unit assembler as program streams (pictures cut at NAL
//! level, fed as bytes arrive); an audio PES becomes one frame. Sans-IO, bounded everywhere.

use super::access_unit::AuAssembler;
use super::frame::{Codec, Frame};
use super::ps::parse_pes_header;
use bytes::Bytes;

pub const TS_PACKET_BYTES: usize = 188;
const SYNC: u8 = 0x47;
const PID_PAT: u16 = 0x0000;
const PID_NULL: u16 = 0x1fff;
/// A PES header is at most 9 + 255 bytes.
const PES_HEADER_BYTES_MAX: usize = 9 + 255;
/// An audio PES larger than this is dropped (one carries well under a second of audio).
pub const AUDIO_PES_BYTES_MAX: usize = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TsError {
    /// Bytes skipped to find the next sync byte.
    Resync {
        skipped: usize,
    },
    BadTable {
        pid: u16,
    },
    BadPes {
        pid: u16,
    },
    /// A continuity counter jumped: packets of this PID were lost.
    Discontinuity {
        pid: u16,
    },
    FrameTooLarge {
        bytes: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TsEvent {
    Frame(Frame),
    Error(TsError),
}

/// One elementary stream being reassembled.
struct Elementary {
    pid: u16,
    codec: Codec,
    /// PES header bytes gathered until the header is whole; None while in the payload.
    header: Option<Vec<u8>>,
    /// PES_packet_length + 6 when declared (0 = unbounded, video), and bytes seen so far.
    declared_total: usize,
    seen: usize,
    /// Audio payload of the current PES and its PTS.
    audio: Vec<u8>,
    audio_pts: Option<u64>,
    /// Continuity counter of the last packet with payload.
    cc: Option<u8>,
    /// Lost packets in this PES: it is dropped at its end rather than emitted damaged.
    damaged: bool,
}

#[derive(Default)]
pub struct TsDemuxer {
    /// A partial TS packet carried over from the previous push.
    carry: Vec<u8>,
    pmt_pid: Option<u16>,
    video: Option<Elementary>,
    audio: Option<Elementary>,
    assembler: Option<AuAssembler>,
    frames: Vec<Frame>,
    pub errors: u64,
}

impl TsDemuxer {
    pub fn new() -> TsDemuxer {
        TsDemuxer::default()
    }

    /// True when `payload` looks like TS: sync bytes every 188 bytes (RTP payloads of TS carry
    /// whole packets, usually seven).
    pub fn sniff(payload: &[u8]) -> bool {
        payload.len() >= TS_PACKET_BYTES && payload.len().is_multiple_of(TS_PACKET_BYTES) && payload.chunks(TS_PACKET_BYTES).all(|p| p[0] == SYNC)
    }

    /// Feeds TS bytes (whole packets normally; any split is tolerated).
    pub fn push(&mut self, data: &[u8], out: &mut Vec<TsEvent>) {
        let mut data = data;
        if !self.carry.is_empty() {
            let need = TS_PACKET_BYTES - self.carry.len();
            let take = need.min(data.len());
            self.carry.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.carry.len() < TS_PACKET_BYTES {
                return;
            }
            let packet = std::mem::take(&mut self.carry);
            self.packet(&packet, out);
        }
        while !data.is_empty() {
            if data[0] != SYNC {
                let skipped = data.iter().position(|&b| b == SYNC).unwrap_or(data.len());
                self.error(TsError::Resync { skipped }, out);
                data = &data[skipped..];
                continue;
            }
            if data.len() < TS_PACKET_BYTES {
                self.carry.extend_from_slice(data);
                return;
            }
            let (packet, rest) = data.split_at(TS_PACKET_BYTES);
            self.packet(packet, out);
            data = rest;
        }
    }

    /// Packets were lost before what comes next (an RTP gap).
    pub fn note_loss(&mut self) {
        self.carry.clear();
        for es in [self.video.as_mut(), self.audio.as_mut()].into_iter().flatten() {
            es.damaged = true;
        }
        if let Some(a) = self.assembler.as_mut() {
            a.note_loss();
        }
    }

    /// Emits what is held (end of stream).
    pub fn flush(&mut self, out: &mut Vec<TsEvent>) {
        if let Some(mut a) = self.audio.take() {
            self.finish_audio(&mut a, out);
            self.audio = Some(a);
        }
        if let Some(v) = self.assembler.as_mut() {
            v.flush(&mut self.frames);
        }
        self.drain_frames(out);
    }

    fn error(&mut self, e: TsError, out: &mut Vec<TsEvent>) {
        self.errors += 1;
        out.push(TsEvent::Error(e));
    }

    fn drain_frames(&mut self, out: &mut Vec<TsEvent>) {
        out.extend(self.frames.drain(..).map(TsEvent::Frame));
    }

    fn packet(&mut self, p: &[u8], out: &mut Vec<TsEvent>) {
        debug_assert_eq!(p.len(), TS_PACKET_BYTES);
        let unit_start = p[1] & 0x40 != 0;
        let pid = u16::from_be_bytes([p[1] & 0x1f, p[2]]);
        let control = (p[3] >> 4) & 0x03;
        let cc = p[3] & 0x0f;
        if pid == PID_NULL || control & 0x01 == 0 {
            return; // stuffing, or an adaptation field alone
        }
        let start = if control & 0x02 != 0 { 5 + p[4] as usize } else { 4 };
        let Some(payload) = p.get(start..).filter(|b| !b.is_empty()) else { return };
        if pid == PID_PAT {
            return self.pat(payload, unit_start, out);
        }
        if Some(pid) == self.pmt_pid {
            return self.pmt(pid, payload, unit_start, out);
        }
        let is_video = self.video.as_ref().is_some_and(|e| e.pid == pid);
        let is_audio = self.audio.as_ref().is_some_and(|e| e.pid == pid);
        if !(is_video || is_audio) {
            return;
        }
        let mut es = if is_video { self.video.take() } else { self.audio.take() }.expect("matched above");
        if es.cc.is_some_and(|last| (last + 1) & 0x0f != cc && last != cc) {
            es.damaged = true;
            if let Some(a) = self.assembler.as_mut().filter(|_| is_video) {
                a.note_loss();
            }
            self.error(TsError::Discontinuity { pid }, out);
        }
        let duplicate = es.cc == Some(cc);
        es.cc = Some(cc);
        if !duplicate {
            self.pes_bytes(&mut es, payload, unit_start, out);
        }
        if is_video {
            self.video = Some(es);
        } else {
            self.audio = Some(es);
        }
    }

    /// The section of a PSI packet: after the pointer field on a unit start.
    fn section(payload: &[u8], unit_start: bool) -> Option<&[u8]> {
        if !unit_start {
            return None; // tables spanning packets are not needed for one program
        }
        let pointer = *payload.first()? as usize;
        let section = payload.get(1 + pointer..)?;
        let length = (usize::from(section.get(1)? & 0x0f) << 8) | usize::from(*section.get(2)?);
        section.get(..3 + length)
    }

    fn pat(&mut self, payload: &[u8], unit_start: bool, out: &mut Vec<TsEvent>) {
        let Some(section) = Self::section(payload, unit_start) else { return };
        if section[0] != 0x00 || section.len() < 12 {
            return self.error(TsError::BadTable { pid: PID_PAT }, out);
        }
        // Programs from byte 8 to the CRC; program 0 is the network PID.
        let programs = &section[8..section.len() - 4];
        let pmt = programs.chunks_exact(4).find(|e| u16::from_be_bytes([e[0], e[1]]) != 0).map(|e| u16::from_be_bytes([e[2] & 0x1f, e[3]]));
        if pmt.is_some() && pmt != self.pmt_pid {
            self.pmt_pid = pmt;
        }
    }

    fn pmt(&mut self, pid: u16, payload: &[u8], unit_start: bool, out: &mut Vec<TsEvent>) {
        let Some(section) = Self::section(payload, unit_start) else { return };
        if section[0] != 0x02 || section.len() < 16 {
            return self.error(TsError::BadTable { pid }, out);
        }
        let program_info = (usize::from(section[10] & 0x0f) << 8) | usize::from(section[11]);
        let end = section.len() - 4;
        let mut i = 12 + program_info;
        let (mut video, mut audio) = (None, None);
        while i + 5 <= end {
            let (stream_type, es_pid) = (section[i], u16::from_be_bytes([section[i + 1] & 0x1f, section[i + 2]]));
            let info = (usize::from(section[i + 3] & 0x0f) << 8) | usize::from(section[i + 4]);
            if let Some(codec) = Codec::from_stream_type(stream_type) {
                let slot = if codec.is_video() { &mut video } else { &mut audio };
                slot.get_or_insert((es_pid, codec));
            }
            i += 5 + info;
        }
        let fresh = |(pid, codec): (u16, Codec)| Elementary {
            pid,
            codec,
            header: None,
            declared_total: 0,
            seen: 0,
            audio: Vec::new(),
            audio_pts: None,
            cc: None,
            damaged: true, // until its first unit start
        };
        // A PMT repeats every few packets: only a change of PID or codec starts over.
        if video.is_some() && video != self.video.as_ref().map(|e| (e.pid, e.codec)) {
            self.video = video.map(fresh);
            self.assembler = video.map(|(_, codec)| AuAssembler::new(codec));
        }
        if audio.is_some() && audio != self.audio.as_ref().map(|e| (e.pid, e.codec)) {
            self.audio = audio.map(fresh);
        }
    }

    fn pes_bytes(&mut self, es: &mut Elementary, mut bytes: &[u8], unit_start: bool, out: &mut Vec<TsEvent>) {
        if unit_start {
            if !es.codec.is_video() {
                self.finish_audio(es, out);
            }
            es.header = Some(Vec::with_capacity(PES_HEADER_BYTES_MAX));
            es.seen = 0;
            es.declared_total = 0;
            es.damaged = false;
        }
        if es.damaged {
            return; // wait for the next unit start
        }
        es.seen += bytes.len();
        if let Some(header) = es.header.as_mut() {
            let take = (PES_HEADER_BYTES_MAX - header.len()).min(bytes.len());
            header.extend_from_slice(&bytes[..take]);
            if header.len() < 9 || header.len() < 9 + header[8] as usize {
                if header.len() >= PES_HEADER_BYTES_MAX {
                    es.header = None;
                    es.damaged = true;
                    self.error(TsError::BadPes { pid: es.pid }, out);
                }
                return;
            }
            let header = es.header.take().expect("present");
            let parsed = (header[..3] == [0, 0, 1]).then(|| parse_pes_header(&header)).flatten();
            let Some(parsed) = parsed else {
                es.damaged = true;
                return self.error(TsError::BadPes { pid: es.pid }, out);
            };
            let declared = usize::from(u16::from_be_bytes([header[4], header[5]]));
            es.declared_total = if declared == 0 { 0 } else { 6 + declared };
            // Payload bytes gathered with the header, then the rest of this packet's.
            let first = &header[parsed.payload_offset.min(header.len())..];
            let rest = &bytes[take..];
            let timestamps = parsed.pts.map(|p| (p, parsed.dts.unwrap_or(p)));
            self.payload(es, first, timestamps, out);
            bytes = rest;
            if bytes.is_empty() {
                return self.maybe_complete(es, out);
            }
        }
        self.payload(es, bytes, None, out);
        self.maybe_complete(es, out);
    }

    /// Elementary-stream bytes of the current PES; `timestamps` with its first bytes.
    fn payload(&mut self, es: &mut Elementary, bytes: &[u8], timestamps: Option<(u64, u64)>, out: &mut Vec<TsEvent>) {
        if es.codec.is_video() {
            let Some(assembler) = self.assembler.as_mut() else { return };
            if bytes.is_empty() && timestamps.is_none() {
                return;
            }
            let result = assembler.push(bytes, timestamps, &mut self.frames);
            self.drain_frames(out);
            if let Err(e) = result {
                self.error(TsError::FrameTooLarge { bytes: e.bytes }, out);
            }
            return;
        }
        if let Some((pts, _)) = timestamps {
            es.audio_pts = Some(pts);
        }
        if es.audio.len() + bytes.len() > AUDIO_PES_BYTES_MAX {
            let bytes = es.audio.len() + bytes.len();
            es.audio.clear();
            es.damaged = true;
            return self.error(TsError::FrameTooLarge { bytes }, out);
        }
        es.audio.extend_from_slice(bytes);
    }

    /// A PES with a declared length ends when that many bytes came (audio at once).
    fn maybe_complete(&mut self, es: &mut Elementary, out: &mut Vec<TsEvent>) {
        if es.declared_total > 0 && es.seen >= es.declared_total && !es.codec.is_video() {
            self.finish_audio(es, out);
        }
    }

    fn finish_audio(&mut self, es: &mut Elementary, out: &mut Vec<TsEvent>) {
        let data = std::mem::take(&mut es.audio);
        let pts = es.audio_pts.take();
        if es.damaged || data.is_empty() {
            return;
        }
        let Some(pts) = pts else { return };
        out.push(TsEvent::Frame(Frame { codec: es.codec, pts, dts: pts, keyframe: true, data: Bytes::from(data) }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::testutil::Rng;
    use crate::proto::ts::TsMuxer;

    fn video(pts: u64, key: bool, len: usize) -> Frame {
        let mut data =
            if key { vec![0, 0, 0, 1, 0x67, 0x42, 0, 0x1e, 0, 0, 0, 1, 0x68, 0xce, 0, 0, 0, 1, 0x65, 0x88] } else { vec![0, 0, 0, 1, 0x41, 0x9a] };
        data.resize(len, 0x5a);
        Frame { codec: Codec::H264, pts, dts: pts, keyframe: key, data: Bytes::from(data) }
    }

    fn muxed(frames: &[Frame]) -> Vec<u8> {
        let mut m = TsMuxer::new(Some(Codec::H264), frames.iter().find(|f| !f.codec.is_video()).map(|f| f.codec));
        let mut out = Vec::new();
        m.write_tables(&mut out);
        for f in frames {
            m.write_frame(f, &mut out);
        }
        out
    }

    fn demux(ts: &[u8], chunk: usize) -> Vec<TsEvent> {
        let mut d = TsDemuxer::new();
        let mut events = Vec::new();
        for c in ts.chunks(chunk) {
            d.push(c, &mut events);
        }
        d.flush(&mut events);
        events
    }

    fn frames(events: &[TsEvent]) -> Vec<&Frame> {
        events.iter().filter_map(|e| if let TsEvent::Frame(f) = e { Some(f) } else { None }).collect()
    }

    #[test]
    fn round_trips_our_own_muxer_in_any_chunking() {
        let input: Vec<Frame> = (0..12).map(|i| video(i * 3600, i % 6 == 0, 300 + i as usize * 97)).collect();
        let ts = muxed(&input);
        assert!(TsDemuxer::sniff(&ts[..TS_PACKET_BYTES * 7]));
        for chunk in [TS_PACKET_BYTES * 7, TS_PACKET_BYTES, 100, 1] {
            let events = demux(&ts, chunk);
            let got = frames(&events);
            assert_eq!(got.len(), input.len(), "chunk {chunk}: {events:?}");
            for (g, f) in got.iter().zip(&input) {
                assert_eq!((g.pts, g.keyframe), (f.pts, f.keyframe));
                // The muxer puts an access unit delimiter first.
                assert!(g.data.ends_with(&f.data[4..]), "chunk {chunk}");
            }
        }
    }

    #[test]
    fn audio_pes_become_frames() {
        let adts = [0xff, 0xf1, 0x50, 0x80, 0x01, 0x7f, 0xfc, 1, 2, 3, 4];
        let mut input = Vec::new();
        for i in 0..6u64 {
            input.push(video(i * 3600, i == 0, 200));
            input.push(Frame { codec: Codec::Aac, pts: i * 3600, dts: i * 3600, keyframe: true, data: Bytes::copy_from_slice(&adts) });
        }
        let got = demux(&muxed(&input), TS_PACKET_BYTES);
        let audio: Vec<_> = frames(&got).into_iter().filter(|f| f.codec == Codec::Aac).collect();
        assert_eq!(audio.len(), 6, "{got:?}");
        assert_eq!(audio[3].pts, 3 * 3600);
        assert_eq!(&audio[3].data[..], &adts);
    }

    #[test]
    fn loss_drops_the_damaged_pes_and_resync_skips_garbage() {
        let input: Vec<Frame> = (0..10).map(|i| video(i * 3600, i % 5 == 0, 2000)).collect();
        let ts = muxed(&input);
        let mut cut = ts.clone();
        // Lose two packets inside the fourth picture; add garbage before the end.
        let packets: Vec<&[u8]> = cut.chunks(TS_PACKET_BYTES).collect();
        let lost_at = packets.len() / 10 * 4 + 3;
        let mut damaged: Vec<u8> =
            packets.iter().enumerate().filter(|(i, _)| *i != lost_at && *i != lost_at + 1).flat_map(|(_, p)| p.to_vec()).collect();
        damaged.splice(damaged.len() - TS_PACKET_BYTES * 2..damaged.len() - TS_PACKET_BYTES * 2, [1u8, 2, 3]);
        cut = damaged;
        let events = demux(&cut, TS_PACKET_BYTES);
        assert!(events.iter().any(|e| matches!(e, TsEvent::Error(TsError::Discontinuity { .. }))), "{events:?}");
        assert!(events.iter().any(|e| matches!(e, TsEvent::Error(TsError::Resync { skipped: 3 }))), "{events:?}");
        assert!(frames(&events).len() >= 7, "the rest still comes out");
    }

    #[test]
    fn hostile_input_never_panics_and_stays_bounded() {
        let input: Vec<Frame> = (0..6).map(|i| video(i * 3600, i == 0, 700)).collect();
        let ts = muxed(&input);
        let mut rng = Rng::new(33);
        for _ in 0..3_000 {
            let mut d = TsDemuxer::new();
            let mut events = Vec::new();
            d.push(&rng.mutate(&ts), &mut events);
            d.flush(&mut events);
            assert!(d.carry.len() < TS_PACKET_BYTES);
        }
        assert!(!TsDemuxer::sniff(b"\x47not ts"));
    }
}
