//! Frames to RTP packets for sending a stream on (cascade to an upper platform, voice to a
//! device): PS-muxed as GB/T 28181 sends by default, or a raw elementary stream (the video as
//! H.264 RFC 6184 or H.265 RFC 7798, or with `only_audio` the G.711 as RFC 3551: one payload
//! type carries one track), with one sequence and one clock per sender.
//! Sans-IO: frames in, packets out.

use super::frame::{Codec, Frame};
use super::h26x;
use super::ps_mux::PsMuxer;
use super::rtp::RtpPacket;

/// RTP payload bytes per packet (an Ethernet MTU with IP, UDP and RTP headers to spare).
pub const SEND_PAYLOAD_BYTES_MAX: usize = 1_400;
/// G.711's RTP clock (RFC 3551), and the 90 kHz of frames and video.
const G711_CLOCK_HZ: u64 = 8_000;
const FRAME_CLOCK_HZ: u64 = 90_000;
/// RTP fixed header.
const RTP_HEADER_BYTES: usize = 12;
/// FU-A (RFC 6184 §5.8) and FU (RFC 7798 §4.4.3) headers.
const H264_FU_HEADER_BYTES: usize = 2;
const H265_FU_HEADER_BYTES: usize = 3;
const H264_FU_A: u8 = 28;
const H265_FU: u8 = 49;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpMuxSettings {
    pub ssrc: u32,
    pub payload_type: u8,
    /// PS-muxed (`use_ps=1`, GB/T 28181's default) or raw elementary streams.
    pub ps: bool,
    /// Video frames are left out (`only_audio=1`: a voice broadcast).
    pub only_audio: bool,
}

/// What the mux left out, by reason.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RtpMuxStats {
    pub frames: u64,
    pub packets: u64,
    /// Video before the first keyframe (a receiver cannot decode from there).
    pub before_keyframe: u64,
    /// Frames of a kind this sender does not send (video when only audio, audio beside video
    /// as raw ES, AAC as raw ES).
    pub not_sent: u64,
}

pub struct RtpMux {
    settings: RtpMuxSettings,
    ps: Option<PsMuxer>,
    /// The codecs the PS map was written for (a new one makes a new map).
    ps_codecs: (Option<Codec>, Option<Codec>),
    sequence: u16,
    keyframe_seen: bool,
    pub stats: RtpMuxStats,
}

impl RtpMux {
    pub fn new(settings: RtpMuxSettings) -> RtpMux {
        RtpMux { settings, ps: None, ps_codecs: (None, None), sequence: 0, keyframe_seen: false, stats: RtpMuxStats::default() }
    }

    pub fn settings(&self) -> RtpMuxSettings {
        self.settings
    }

    /// The packets of one frame, appended to `out` (none for a frame not sent).
    pub fn push(&mut self, frame: &Frame, video: Option<Codec>, out: &mut Vec<Vec<u8>>) {
        let is_video = frame.codec.is_video();
        if is_video && self.settings.only_audio {
            self.stats.not_sent += 1;
            return;
        }
        if is_video && !self.keyframe_seen {
            if !frame.keyframe {
                self.stats.before_keyframe += 1;
                return;
            }
            self.keyframe_seen = true;
        }
        let before = out.len();
        if self.settings.ps {
            self.push_ps(frame, if self.settings.only_audio { None } else { video }, out);
        } else {
            match frame.codec {
                Codec::H264 | Codec::H265 => self.push_video_es(frame, out),
                // One payload type, one track: raw ES carries the video, or the audio alone.
                Codec::Pcma | Codec::Pcmu | Codec::Aac if !self.settings.only_audio => self.stats.not_sent += 1,
                Codec::Pcma | Codec::Pcmu => {
                    let ts = (u128::from(frame.dts) * u128::from(G711_CLOCK_HZ) / u128::from(FRAME_CLOCK_HZ)) as u32;
                    for chunk in frame.data.chunks(SEND_PAYLOAD_BYTES_MAX) {
                        out.push(self.packet(false, ts, &[chunk]));
                    }
                }
                // RFC 3640's AU headers are not written: AAC goes as PS only.
                Codec::Aac => self.stats.not_sent += 1,
            }
        }
        if out.len() > before {
            self.stats.frames += 1;
            self.stats.packets += (out.len() - before) as u64;
        }
    }

    fn push_ps(&mut self, frame: &Frame, video: Option<Codec>, out: &mut Vec<Vec<u8>>) {
        let (mut v, mut a) = self.ps_codecs;
        if frame.codec.is_video() {
            v = Some(frame.codec);
        } else {
            a = Some(frame.codec);
        }
        let v = v.or(video);
        if self.ps.is_none() || (v, a) != self.ps_codecs {
            self.ps = Some(match v {
                Some(v) => PsMuxer::new(v, a),
                None => PsMuxer::audio_only(a.unwrap_or(frame.codec)),
            });
            self.ps_codecs = (v, a);
        }
        let Some(ps) = self.ps.as_mut() else { return };
        let data = ps.mux(frame);
        let chunks: Vec<&[u8]> = data.chunks(SEND_PAYLOAD_BYTES_MAX).collect();
        let n = chunks.len();
        for (i, chunk) in chunks.into_iter().enumerate() {
            out.push(self.packet(i + 1 == n, frame.dts as u32, &[chunk]));
        }
    }

    /// Single NAL unit packets, and fragmentation units for NAL units larger than a packet;
    /// the marker on the access unit's last packet.
    fn push_video_es(&mut self, frame: &Frame, out: &mut Vec<Vec<u8>>) {
        let ts = frame.pts as u32;
        let nals: Vec<&[u8]> = h26x::nal_units(&frame.data).filter(|n| !n.is_empty()).collect();
        let last = nals.len().saturating_sub(1);
        for (i, nal) in nals.into_iter().enumerate() {
            let end_of_frame = i == last;
            if nal.len() <= SEND_PAYLOAD_BYTES_MAX {
                out.push(self.packet(end_of_frame, ts, &[nal]));
                continue;
            }
            let (header, body): (Vec<u8>, &[u8]) = match frame.codec {
                Codec::H265 if nal.len() > 2 => {
                    let nal_type = h26x::h265_nal_type(nal);
                    (vec![(nal[0] & 0x81) | (H265_FU << 1), nal[1], nal_type], &nal[2..])
                }
                _ => (vec![(nal[0] & 0xe0) | H264_FU_A, nal[0] & 0x1f], &nal[1..]),
            };
            debug_assert!(header.len() == H264_FU_HEADER_BYTES || header.len() == H265_FU_HEADER_BYTES);
            let fu_at = header.len() - 1;
            let room = SEND_PAYLOAD_BYTES_MAX - header.len();
            let pieces = body.len().div_ceil(room);
            for (j, piece) in body.chunks(room).enumerate() {
                let mut h = header.clone();
                if j == 0 {
                    h[fu_at] |= 0x80; // S
                }
                if j + 1 == pieces {
                    h[fu_at] |= 0x40; // E
                }
                out.push(self.packet(end_of_frame && j + 1 == pieces, ts, &[&h, piece]));
            }
        }
    }

    fn packet(&mut self, marker: bool, timestamp: u32, parts: &[&[u8]]) -> Vec<u8> {
        let mut p = Vec::with_capacity(RTP_HEADER_BYTES + parts.iter().map(|x| x.len()).sum::<usize>());
        RtpPacket::write_header(&mut p, marker, self.settings.payload_type, self.sequence, timestamp, self.settings.ssrc);
        for part in parts {
            p.extend_from_slice(part);
        }
        self.sequence = self.sequence.wrapping_add(1);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ps::{PsDemuxer, PsEvent};
    use crate::proto::rtp_depack::{DepackEvent, Depacketizer};
    use bytes::Bytes;

    fn settings(ps: bool, only_audio: bool) -> RtpMuxSettings {
        RtpMuxSettings { ssrc: 7, payload_type: if ps { 96 } else { 98 }, ps, only_audio }
    }

    fn h264(keyframe: bool, dts: u64, nal_bytes: usize) -> Frame {
        let mut data = vec![0, 0, 0, 1, 0x67, 0x42, 0, 0x1e, 0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80, 0, 0, 0, 1];
        data.push(if keyframe { 0x65 } else { 0x41 });
        data.extend((0..nal_bytes).map(|i| (i % 251) as u8 + 1));
        Frame { codec: Codec::H264, pts: dts, dts, keyframe, data: Bytes::from(data) }
    }

    fn parse(p: &[u8]) -> RtpPacket {
        RtpPacket::parse(Bytes::copy_from_slice(p)).unwrap()
    }

    #[test]
    fn raw_h264_fragments_large_nal_units_and_depacketizes_back_to_the_same_frame() {
        let mut mux = RtpMux::new(settings(false, false));
        let mut out = Vec::new();
        mux.push(&h264(false, 0, 100), Some(Codec::H264), &mut out);
        assert!(out.is_empty(), "nothing before the first keyframe");
        let key = h264(true, 3600, 5000);
        mux.push(&key, Some(Codec::H264), &mut out);
        assert_eq!(out.len(), 2 + 4, "SPS, PPS, and the IDR in 4 FU-A");
        let seqs: Vec<u16> = out.iter().map(|p| parse(p).sequence).collect();
        assert_eq!(seqs, [0, 1, 2, 3, 4, 5]);
        assert!(out.iter().all(|p| p.len() <= RTP_HEADER_BYTES + SEND_PAYLOAD_BYTES_MAX));
        let markers: Vec<bool> = out.iter().map(|p| parse(p).marker).collect();
        assert_eq!(markers, [false, false, false, false, false, true]);
        let mut depack = Depacketizer::new(Codec::H264);
        let mut events = Vec::new();
        for p in &out {
            depack.push(&parse(p), &mut events);
        }
        let frames: Vec<Frame> = events.into_iter().filter_map(|e| if let DepackEvent::Frame(f) = e { Some(f) } else { None }).collect();
        assert_eq!(frames.len(), 1);
        let nals = |d: &[u8]| h26x::nal_units(d).map(<[u8]>::to_vec).collect::<Vec<_>>();
        assert_eq!(nals(&frames[0].data), nals(&key.data), "the same NAL units");
        assert_eq!(mux.stats.before_keyframe, 1);
    }

    #[test]
    fn ps_carries_video_and_audio_that_the_demuxer_reads_back() {
        let mut mux = RtpMux::new(settings(true, false));
        let mut out = Vec::new();
        let key = h264(true, 0, 3000);
        let audio = Frame { codec: Codec::Pcma, pts: 0, dts: 0, keyframe: true, data: Bytes::from(vec![0xd5; 320]) };
        mux.push(&key, Some(Codec::H264), &mut out);
        mux.push(&audio, Some(Codec::H264), &mut out);
        mux.push(&h264(false, 3600, 200), Some(Codec::H264), &mut out);
        let mut demux = PsDemuxer::new();
        let mut events = Vec::new();
        for p in &out {
            let p = parse(p);
            assert_eq!((p.payload_type, p.ssrc), (96, 7));
            demux.push(&p.payload, p.timestamp, &mut events);
        }
        demux.flush(&mut events);
        let count = |c| events.iter().filter(|e| matches!(e, PsEvent::Frame(f) if f.codec == c)).count();
        // A picture leaves the demuxer at the next pack, after the audio that followed it.
        assert_eq!((count(Codec::H264), count(Codec::Pcma)), (2, 1), "{events:?}");
    }

    #[test]
    fn a_voice_broadcast_sends_g711_alone_on_its_8_khz_clock() {
        for ps in [false, true] {
            let mut mux = RtpMux::new(settings(ps, true));
            let mut out = Vec::new();
            mux.push(&h264(true, 0, 100), Some(Codec::H264), &mut out);
            assert!(out.is_empty(), "only audio");
            let a = |dts| Frame { codec: Codec::Pcma, pts: dts, dts, keyframe: true, data: Bytes::from(vec![0xd5; 160]) };
            mux.push(&a(90_000), Some(Codec::H264), &mut out);
            mux.push(&a(90_000 + 1_800), Some(Codec::H264), &mut out);
            assert_eq!(out.len(), 2);
            if !ps {
                let (p0, p1) = (parse(&out[0]), parse(&out[1]));
                assert_eq!((p0.timestamp, p1.timestamp), (8_000, 8_160), "8 kHz");
                assert_eq!(p0.payload.len(), 160);
            } else {
                let mut demux = PsDemuxer::new();
                let mut events = Vec::new();
                for p in &out {
                    let p = parse(p);
                    demux.push(&p.payload, p.timestamp, &mut events);
                }
                demux.flush(&mut events);
                let audio = events.iter().filter(|e| matches!(e, PsEvent::Frame(f) if f.codec == Codec::Pcma)).count();
                assert_eq!(audio, 2, "{events:?}");
            }
        }
    }
}
