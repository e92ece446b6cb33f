//! RTP H.264 (RFC 6184) and H.265 (RFC 7798) depacketizer: single NAL, STAP-A / AP, FU-A / FU.
//! Packets must arrive in sequence order (see `ReorderBuffer`); output is Annex B access units.

use super::frame::{Codec, Frame};
use super::h26x;
use super::ps::FRAME_BYTES_MAX;
use super::rtp::RtpPacket;
use bytes::{BufMut, BytesMut};

const START_CODE: [u8; 4] = [0, 0, 0, 1];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DepackError {
    /// Payload too short for its declared structure.
    Truncated,
    /// Aggregation/fragmentation types we do not take (STAP-B, MTAP, FU-B, PACI).
    Unsupported {
        nal_type: u8,
    },
    /// A fragment continued a NAL whose start was lost.
    FragmentWithoutStart,
    FrameTooLarge {
        bytes: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DepackEvent {
    Frame(Frame),
    Error(DepackError),
}

pub struct Depacketizer {
    codec: Codec,
    au: BytesMut,
    timestamp: Option<u32>,
    in_fragment: bool,
    next_sequence: Option<u16>,
    pub frames: u64,
}

impl Depacketizer {
    pub fn new(codec: Codec) -> Self {
        Depacketizer { codec, au: BytesMut::new(), timestamp: None, in_fragment: false, next_sequence: None, frames: 0 }
    }

    pub fn push(&mut self, packet: &RtpPacket, out: &mut Vec<DepackEvent>) {
        if self.next_sequence.is_some_and(|s| s != packet.sequence) {
            // Loss: a fragment in flight can no longer be completed.
            self.drop_fragment();
        }
        self.next_sequence = Some(packet.sequence.wrapping_add(1));
        if self.timestamp.is_some_and(|t| t != packet.timestamp) {
            self.finish(out);
        }
        self.timestamp = Some(packet.timestamp);
        let result = match self.codec {
            Codec::H265 => self.push_h265(&packet.payload),
            _ => self.push_h264(&packet.payload),
        };
        if let Err(e) = result {
            out.push(DepackEvent::Error(e));
        }
        if self.au.len() > FRAME_BYTES_MAX {
            let bytes = self.au.len();
            self.au.clear();
            self.in_fragment = false;
            out.push(DepackEvent::Error(DepackError::FrameTooLarge { bytes }));
        }
        if packet.marker {
            self.finish(out);
        }
    }

    fn drop_fragment(&mut self) {
        if self.in_fragment {
            // Cut the partial NAL back to its start code.
            if let Some(i) = memchr::memmem::rfind(&self.au, &START_CODE) {
                self.au.truncate(i);
            }
            self.in_fragment = false;
        }
    }

    fn finish(&mut self, out: &mut Vec<DepackEvent>) {
        self.in_fragment = false;
        let Some(ts) = self.timestamp else { return };
        if self.au.is_empty() {
            return;
        }
        let data = self.au.split().freeze();
        let keyframe = h26x::is_keyframe(self.codec, &data);
        self.frames += 1;
        out.push(DepackEvent::Frame(Frame { codec: self.codec, pts: u64::from(ts), dts: u64::from(ts), keyframe, data }));
    }

    fn push_nal(&mut self, nal: &[u8]) {
        self.au.put_slice(&START_CODE);
        self.au.put_slice(nal);
    }

    fn push_aggregate(&mut self, mut rest: &[u8]) -> Result<(), DepackError> {
        while rest.len() >= 2 {
            let size = u16::from_be_bytes([rest[0], rest[1]]) as usize;
            let nal = rest.get(2..2 + size).ok_or(DepackError::Truncated)?;
            if !nal.is_empty() {
                self.push_nal(nal);
            }
            rest = &rest[2 + size..];
        }
        Ok(())
    }

    fn push_fragment(&mut self, start: bool, end: bool, header: &[u8], data: &[u8]) -> Result<(), DepackError> {
        if start {
            self.drop_fragment();
            self.au.put_slice(&START_CODE);
            self.au.put_slice(header);
            self.in_fragment = true;
        } else if !self.in_fragment {
            return Err(DepackError::FragmentWithoutStart);
        }
        self.au.put_slice(data);
        if end {
            self.in_fragment = false;
        }
        Ok(())
    }

    fn push_h264(&mut self, p: &[u8]) -> Result<(), DepackError> {
        let first = *p.first().ok_or(DepackError::Truncated)?;
        match first & 0x1f {
            1..=23 => {
                self.push_nal(p);
                Ok(())
            }
            24 => self.push_aggregate(&p[1..]),
            28 => {
                let fu = *p.get(1).ok_or(DepackError::Truncated)?;
                let header = [(first & 0xe0) | (fu & 0x1f)];
                self.push_fragment(fu & 0x80 != 0, fu & 0x40 != 0, &header, &p[2..])
            }
            nal_type => Err(DepackError::Unsupported { nal_type }),
        }
    }

    fn push_h265(&mut self, p: &[u8]) -> Result<(), DepackError> {
        if p.len() < 2 {
            return Err(DepackError::Truncated);
        }
        match h26x::h265_nal_type(p) {
            48 => self.push_aggregate(&p[2..]),
            49 => {
                let fu = *p.get(2).ok_or(DepackError::Truncated)?;
                let header = [(p[0] & 0x81) | ((fu & 0x3f) << 1), p[1]];
                self.push_fragment(fu & 0x80 != 0, fu & 0x40 != 0, &header, &p[3..])
            }
            nal_type @ 50.. => Err(DepackError::Unsupported { nal_type }),
            _ => {
                self.push_nal(p);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn pkt(seq: u16, ts: u32, marker: bool, payload: &[u8]) -> RtpPacket {
        RtpPacket { marker, payload_type: 96, sequence: seq, timestamp: ts, ssrc: 1, payload: Bytes::copy_from_slice(payload) }
    }

    fn frames(out: &[DepackEvent]) -> Vec<&Frame> {
        out.iter().filter_map(|e| if let DepackEvent::Frame(f) = e { Some(f) } else { None }).collect()
    }

    #[test]
    fn h264_stap_a_then_fu_a_idr() {
        let mut d = Depacketizer::new(Codec::H264);
        let mut out = Vec::new();
        d.push(&pkt(1, 100, false, &[0x18, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce]), &mut out);
        d.push(&pkt(2, 100, false, &[0x7c, 0x85, 1, 2]), &mut out);
        d.push(&pkt(3, 100, false, &[0x7c, 0x05, 3]), &mut out);
        d.push(&pkt(4, 100, true, &[0x7c, 0x45, 4]), &mut out);
        let f = frames(&out);
        assert_eq!(f.len(), 1);
        assert!(f[0].keyframe);
        assert_eq!(&f[0].data[..], &[0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x68, 0xce, 0, 0, 0, 1, 0x65, 1, 2, 3, 4]);
    }

    #[test]
    fn h264_timestamp_change_ends_frame_without_marker() {
        let mut d = Depacketizer::new(Codec::H264);
        let mut out = Vec::new();
        d.push(&pkt(1, 100, false, &[0x41, 1]), &mut out);
        d.push(&pkt(2, 3700, false, &[0x41, 2]), &mut out);
        let f = frames(&out);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].pts, 100);
        assert!(!f[0].keyframe);
    }

    #[test]
    fn lost_fragment_is_cut_and_reported() {
        let mut d = Depacketizer::new(Codec::H264);
        let mut out = Vec::new();
        d.push(&pkt(1, 100, false, &[0x09, 0xf0]), &mut out);
        d.push(&pkt(2, 100, false, &[0x7c, 0x85, 1]), &mut out);
        // seq 3 lost
        d.push(&pkt(4, 100, true, &[0x7c, 0x45, 4]), &mut out);
        assert_eq!(out[0], DepackEvent::Error(DepackError::FragmentWithoutStart));
        let f = frames(&out);
        assert_eq!(&f[0].data[..], &[0, 0, 0, 1, 0x09, 0xf0]);
    }

    #[test]
    fn h265_fu_and_ap() {
        let mut d = Depacketizer::new(Codec::H265);
        let mut out = Vec::new();
        d.push(&pkt(1, 5, false, &[0x60, 0x01, 0, 3, 0x40, 0x01, 7, 0, 2, 0x42, 0x01]), &mut out);
        d.push(&pkt(2, 5, false, &[0x62, 0x01, 0x93, 9]), &mut out); // FU start, type 19 (IDR_W_RADL)
        d.push(&pkt(3, 5, true, &[0x62, 0x01, 0x53, 8]), &mut out);
        let f = frames(&out);
        assert_eq!(&f[0].data[..], &[0, 0, 0, 1, 0x40, 0x01, 7, 0, 0, 0, 1, 0x42, 0x01, 0, 0, 0, 1, 0x26, 0x01, 9, 8]);
        assert!(f[0].keyframe);
    }

    #[test]
    fn fuzz_never_panics_and_stays_bounded() {
        let mut rng = crate::proto::testutil::Rng::new(9);
        for codec in [Codec::H264, Codec::H265] {
            let mut d = Depacketizer::new(codec);
            let mut out = Vec::new();
            for i in 0..20_000u32 {
                let payload = rng.bytes(1500);
                d.push(&pkt(i as u16, i / 7, rng.below(9) == 0, &payload), &mut out);
                assert!(d.au.len() <= FRAME_BYTES_MAX);
                out.clear();
            }
        }
    }
}
