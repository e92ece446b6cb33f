//! MPEG-2 Transport Stream muxer (ISO 13818-1) for HLS segments: PAT/PMT, PES with PTS/DTS,
//! PCR on the video PID, random-access flags on keyframes, AUD before each picture.
//! Carries H.264/H.265 and AAC; G.711 has no HLS-playable TS mapping and is left out.

use super::frame::{Codec, Frame};
use super::ps_mux::{crc32_mpeg, write_timestamp};

pub const TS_PACKET_BYTES: usize = 188;
const PID_PAT: u16 = 0x0000;
const PID_PMT: u16 = 0x1000;
const PID_VIDEO: u16 = 0x0100;
const PID_AUDIO: u16 = 0x0101;
const PROGRAM: u16 = 1;

pub struct TsMuxer {
    video: Option<Codec>,
    audio: Option<Codec>,
    /// Continuity counters: PAT, PMT, video, audio.
    cc: [u8; 4],
}

fn cc_index(pid: u16) -> usize {
    match pid {
        PID_PAT => 0,
        PID_PMT => 1,
        PID_VIDEO => 2,
        _ => 3,
    }
}

/// Whether a codec can go into an HLS transport stream.
pub fn ts_carries(codec: Codec) -> bool {
    matches!(codec, Codec::H264 | Codec::H265 | Codec::Aac)
}

impl TsMuxer {
    pub fn new(video: Option<Codec>, audio: Option<Codec>) -> Self {
        TsMuxer { video, audio: audio.filter(|a| ts_carries(*a)), cc: [0; 4] }
    }

    fn next_cc(&mut self, pid: u16) -> u8 {
        let i = cc_index(pid);
        let c = self.cc[i];
        self.cc[i] = (c + 1) & 0x0f;
        c
    }

    /// PAT and PMT; each segment starts with them.
    pub fn write_tables(&mut self, out: &mut Vec<u8>) {
        let pat = psi_section(0x00, PROGRAM, &[(PROGRAM >> 8) as u8, PROGRAM as u8, 0xe0 | (PID_PMT >> 8) as u8, PID_PMT as u8]);
        self.write_psi(PID_PAT, &pat, out);
        let pcr_pid = if self.video.is_some() { PID_VIDEO } else { PID_AUDIO };
        let mut body = vec![0xe0 | (pcr_pid >> 8) as u8, pcr_pid as u8, 0xf0, 0x00];
        for (codec, pid) in [(self.video, PID_VIDEO), (self.audio, PID_AUDIO)] {
            if let Some(c) = codec {
                body.extend_from_slice(&[c.stream_type(), 0xe0 | (pid >> 8) as u8, pid as u8, 0xf0, 0x00]);
            }
        }
        let pmt = psi_section(0x02, PROGRAM, &body);
        self.write_psi(PID_PMT, &pmt, out);
    }

    fn write_psi(&mut self, pid: u16, section: &[u8], out: &mut Vec<u8>) {
        let cc = self.next_cc(pid);
        let start = out.len();
        out.extend_from_slice(&[0x47, 0x40 | (pid >> 8) as u8, pid as u8, 0x10 | cc, 0x00]);
        out.extend_from_slice(section);
        out.resize(start + TS_PACKET_BYTES, 0xff);
    }

    /// Appends one frame as PES in TS packets. Frames of codecs TS cannot carry are skipped.
    pub fn write_frame(&mut self, frame: &Frame, out: &mut Vec<u8>) {
        let (pid, stream_id) = if frame.codec.is_video() { (PID_VIDEO, 0xe0) } else { (PID_AUDIO, 0xc0) };
        if (frame.codec.is_video() && self.video != Some(frame.codec)) || (!frame.codec.is_video() && self.audio != Some(frame.codec)) {
            return;
        }
        let mut pes = Vec::with_capacity(frame.data.len() + 32);
        let with_dts = frame.codec.is_video() && frame.dts != frame.pts;
        let header_len = if with_dts { 10 } else { 5 };
        let aud: &[u8] = match frame.codec {
            Codec::H264 if !starts_with_aud(frame) => &[0, 0, 0, 1, 0x09, 0xf0],
            Codec::H265 if !starts_with_aud(frame) => &[0, 0, 0, 1, 0x46, 0x01, 0x50],
            _ => &[],
        };
        let payload_len = aud.len() + frame.data.len();
        // Video PES may be unbounded (length 0); audio frames always fit.
        let pes_len = if frame.codec.is_video() || 3 + header_len + payload_len > 0xffff { 0 } else { 3 + header_len + payload_len };
        pes.extend_from_slice(&[0, 0, 1, stream_id, (pes_len >> 8) as u8, pes_len as u8, 0x80]);
        if with_dts {
            pes.extend_from_slice(&[0xc0, 10]);
            write_timestamp(&mut pes, 0x3, frame.pts);
            write_timestamp(&mut pes, 0x1, frame.dts);
        } else {
            pes.extend_from_slice(&[0x80, 5]);
            write_timestamp(&mut pes, 0x2, frame.pts);
        }
        pes.extend_from_slice(aud);
        pes.extend_from_slice(&frame.data);
        let pcr = (pid == PID_VIDEO || self.video.is_none()).then_some(frame.dts);
        self.packetize(pid, &pes, pcr, frame.keyframe && frame.codec.is_video(), out);
    }

    fn packetize(&mut self, pid: u16, pes: &[u8], pcr: Option<u64>, random_access: bool, out: &mut Vec<u8>) {
        let mut rest = pes;
        let mut first = true;
        while !rest.is_empty() {
            let cc = self.next_cc(pid);
            let start = out.len();
            let pusi = if first { 0x40 } else { 0x00 };
            out.extend_from_slice(&[0x47, pusi | (pid >> 8) as u8, pid as u8, 0]);
            // Adaptation field: PCR and random access on the first packet, stuffing on the last.
            let mut af: Vec<u8> = Vec::new();
            if first && (pcr.is_some() || random_access) {
                let mut flags = 0u8;
                if random_access {
                    flags |= 0x40;
                }
                af.push(0);
                if let Some(pcr) = pcr {
                    flags |= 0x10;
                    let base = pcr & 0x1_ffff_ffff;
                    af.extend_from_slice(&[
                        (base >> 25) as u8,
                        (base >> 17) as u8,
                        (base >> 9) as u8,
                        (base >> 1) as u8,
                        ((base & 1) << 7) as u8 | 0x7e,
                        0,
                    ]);
                }
                af[0] = flags;
            }
            let room = TS_PACKET_BYTES - 4 - if af.is_empty() { 0 } else { 1 + af.len() };
            let take = rest.len().min(room);
            if take < room {
                // Stuff the adaptation field so the packet is exactly 188 bytes.
                let need = room - take;
                if af.is_empty() {
                    // An adaptation field of length 0 takes one byte; longer ones need the flags byte.
                    if need == 1 {
                        out[start + 3] = 0x30 | cc;
                        out.push(0);
                    } else {
                        out[start + 3] = 0x30 | cc;
                        out.push((need - 1) as u8);
                        out.push(0);
                        out.resize(out.len() + need - 2, 0xff);
                    }
                } else {
                    out[start + 3] = 0x30 | cc;
                    out.push((af.len() + need) as u8);
                    out.extend_from_slice(&af);
                    out.resize(out.len() + need, 0xff);
                }
            } else if af.is_empty() {
                out[start + 3] = 0x10 | cc;
            } else {
                out[start + 3] = 0x30 | cc;
                out.push(af.len() as u8);
                out.extend_from_slice(&af);
            }
            out.extend_from_slice(&rest[..take]);
            debug_assert_eq!(out.len() - start, TS_PACKET_BYTES);
            rest = &rest[take..];
            first = false;
        }
    }
}

fn starts_with_aud(frame: &Frame) -> bool {
    super::h26x::nal_units(&frame.data).next().is_some_and(|n| match frame.codec {
        Codec::H265 => super::h26x::h265_nal_type(n) == super::h26x::H265_NAL_AUD,
        _ => super::h26x::h264_nal_type(n) == super::h26x::H264_NAL_AUD,
    })
}

/// A PSI section with the long-form header and CRC, preceded by nothing (pointer is the caller's).
fn psi_section(table_id: u8, id: u16, body: &[u8]) -> Vec<u8> {
    let len = 5 + body.len() + 4;
    let mut s = vec![table_id, 0xb0 | ((len >> 8) as u8 & 0x0f), len as u8, (id >> 8) as u8, id as u8, 0xc1, 0x00, 0x00];
    s.extend_from_slice(body);
    let crc = crc32_mpeg(&s);
    s.extend_from_slice(&crc.to_be_bytes());
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn frame(codec: Codec, ts: u64, len: usize, key: bool) -> Frame {
        let mut d =
            if codec == Codec::Aac { vec![0xff, 0xf1, 0x50, 0x80, 0x01, 0x5f, 0xfc] } else { vec![0, 0, 0, 1, if key { 0x65 } else { 0x41 }, 0x88] };
        d.extend((0..len).map(|i| (i % 200) as u8 + 1));
        Frame { codec, pts: ts, dts: ts, keyframe: key, data: Bytes::from(d) }
    }

    fn packets(out: &[u8]) -> Vec<&[u8]> {
        assert_eq!(out.len() % TS_PACKET_BYTES, 0);
        out.chunks(TS_PACKET_BYTES).collect()
    }

    #[test]
    fn tables_and_frames_are_well_formed_packets() {
        let mut m = TsMuxer::new(Some(Codec::H264), Some(Codec::Aac));
        let mut out = Vec::new();
        m.write_tables(&mut out);
        for (i, len) in [0usize, 1, 150, 170, 183, 184, 2000].iter().enumerate() {
            m.write_frame(&frame(Codec::H264, i as u64 * 3600, *len, i == 0), &mut out);
            m.write_frame(&frame(Codec::Aac, i as u64 * 3600, *len, true), &mut out);
        }
        let mut cc: std::collections::HashMap<u16, u8> = Default::default();
        for p in packets(&out) {
            assert_eq!(p[0], 0x47);
            let pid = u16::from_be_bytes([p[1] & 0x1f, p[2]]);
            if let Some(prev) = cc.insert(pid, p[3] & 0x0f) {
                assert_eq!((prev + 1) & 0x0f, p[3] & 0x0f, "continuity on pid {pid:#x}");
            }
        }
        // PAT section CRC checks out (CRC over section including CRC is 0).
        let pat = &out[5..5 + 3 + 13];
        assert_eq!(crc32_mpeg(pat), 0);
        // First video packet: PUSI, PCR and random access.
        let v = packets(&out).into_iter().find(|p| u16::from_be_bytes([p[1] & 0x1f, p[2]]) == PID_VIDEO).unwrap();
        assert_eq!(v[1] & 0x40, 0x40);
        assert_eq!(v[5] & 0x50, 0x50);
    }

    #[test]
    fn g711_is_left_out() {
        let mut m = TsMuxer::new(Some(Codec::H264), Some(Codec::Pcma));
        let mut out = Vec::new();
        m.write_frame(&Frame { codec: Codec::Pcma, pts: 0, dts: 0, keyframe: true, data: Bytes::from_static(&[0xd5; 160]) }, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn fuzz_frames_always_give_whole_packets() {
        let mut rng = crate::proto::testutil::Rng::new(31);
        let mut m = TsMuxer::new(Some(Codec::H265), Some(Codec::Aac));
        for i in 0..2_000u64 {
            let codec = [Codec::H265, Codec::Aac, Codec::H264][rng.below(3)];
            let data = Bytes::from(rng.bytes(5000));
            let mut out = Vec::new();
            m.write_frame(&Frame { codec, pts: i * 3000 + rng.below(9000) as u64, dts: i * 3000, keyframe: rng.below(2) == 0, data }, &mut out);
            assert_eq!(out.len() % TS_PACKET_BYTES, 0);
        }
    }
}
