//! What a camera sends, for tests and the load generator: an elementary stream cut into
//! access units, muxed to PS (GB28181 layout) and packetized into RTP; and what a browser
//! offers for WebRTC playback. Not on the engine path.

use crate::proto::access_unit::split_access_units;
use crate::proto::frame::{Codec, Frame};
use crate::proto::h26x::is_keyframe;
use crate::proto::ps_mux::PsMuxer;
use crate::proto::rtp::RtpPacketizer;

/// RTP payload size cameras typically use (fits a 1500-byte MTU with headers).
pub const RTP_PAYLOAD_BYTES: usize = 1_400;
pub const PS_PAYLOAD_TYPE: u8 = 96;

/// Video frames at a fixed rate, timestamps on the 90 kHz clock.
pub fn frames_from_es(codec: Codec, annexb: &[u8], fps: u32) -> Vec<Frame> {
    let step = 90_000 / u64::from(fps.max(1));
    split_access_units(codec, annexb)
        .into_iter()
        .enumerate()
        .map(|(i, data)| {
            let ts = i as u64 * step;
            Frame { codec, pts: ts, dts: ts, keyframe: is_keyframe(codec, &data), data }
        })
        .collect()
}

/// G.711 (or any constant-rate 8 kHz, 1 byte/sample) audio cut into `ms`-long frames.
pub fn g711_frames(codec: Codec, samples: &[u8], ms: u32) -> Vec<Frame> {
    let bytes_per_frame = (8 * ms as usize).max(1);
    samples
        .chunks(bytes_per_frame)
        .enumerate()
        .map(|(i, chunk)| {
            let ts = i as u64 * u64::from(ms) * 90;
            Frame { codec, pts: ts, dts: ts, keyframe: true, data: bytes::Bytes::copy_from_slice(chunk) }
        })
        .collect()
}

/// ADTS AAC cut into one frame per ADTS frame, timed by its sample rate.
pub fn aac_frames(adts: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    let mut rest = adts;
    while let Some(h) = crate::proto::aac::AdtsHeader::parse(rest) {
        let Some(frame) = rest.get(..h.frame_bytes) else { break };
        let ts = frames.len() as u64 * u64::from(crate::proto::aac::AAC_SAMPLES_PER_FRAME) * 90_000 / u64::from(h.sample_rate());
        frames.push(Frame { codec: Codec::Aac, pts: ts, dts: ts, keyframe: true, data: bytes::Bytes::copy_from_slice(frame) });
        rest = &rest[h.frame_bytes..];
    }
    frames
}

/// Merges tracks into decode order (audio after video at equal times, as cameras send).
pub fn interleave(video: Vec<Frame>, audio: Vec<Frame>) -> Vec<Frame> {
    let mut all: Vec<Frame> = video.into_iter().chain(audio).collect();
    all.sort_by_key(|f| (f.dts, !f.codec.is_video()));
    all
}

/// PS over RTP, one frame at a time (sequence numbers run on), for senders that pace frames.
pub struct PsRtpSender {
    mux: PsMuxer,
    rtp: RtpPacketizer,
}

impl PsRtpSender {
    pub fn new(video: Codec, audio: Option<Codec>, ssrc: u32) -> PsRtpSender {
        PsRtpSender { mux: PsMuxer::new(video, audio), rtp: RtpPacketizer { ssrc, payload_type: PS_PAYLOAD_TYPE, sequence: 0 } }
    }

    pub fn packets(&mut self, f: &Frame) -> Vec<Vec<u8>> {
        let mut packets = Vec::new();
        self.rtp.packetize(&self.mux.mux(f), f.dts as u32, RTP_PAYLOAD_BYTES, &mut packets);
        packets
    }
}

/// RTP packets (PS payload) for each frame, in send order.
pub fn ps_rtp_packets(frames: &[Frame], ssrc: u32) -> Vec<Vec<Vec<u8>>> {
    let Some(video) = frames.iter().find(|f| f.codec.is_video()) else { return Vec::new() };
    let audio = frames.iter().find(|f| !f.codec.is_video()).map(|f| f.codec);
    let mut sender = PsRtpSender::new(video.codec, audio, ssrc);
    frames.iter().map(|f| sender.packets(f)).collect()
}

/// RFC 4571 framing for RTP over TCP.
pub fn rfc4571(packet: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(2 + packet.len());
    v.extend_from_slice(&(packet.len() as u16).to_be_bytes());
    v.extend_from_slice(packet);
    v
}

/// A browser's recvonly WebRTC offer (BUNDLE, rtcp-mux, DTLS fingerprint) with these
/// (payload type, rtpmap) in its video and audio m-lines; an empty list leaves that m-line out.
pub fn browser_offer(video: &[(u8, &str)], audio: &[(u8, &str)]) -> String {
    let mut sdp = String::from("v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\na=msid-semantic: WMS\r\n");
    for (mid, kind, codecs) in [(0, "video", video), (1, "audio", audio)] {
        if codecs.is_empty() {
            continue;
        }
        let pts: Vec<String> = codecs.iter().map(|(pt, _)| pt.to_string()).collect();
        sdp.push_str(&format!(
            "m={kind} 9 UDP/TLS/RTP/SAVPF {}\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:Abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=ice-options:trickle\r\na=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\na=setup:actpass\r\na=mid:{mid}\r\na=recvonly\r\na=rtcp-mux\r\n",
            pts.join(" ")
        ));
        for (pt, codec) in codecs {
            sdp.push_str(&format!("a=rtpmap:{pt} {codec}\r\n"));
            if codec.starts_with("H264") {
                sdp.push_str(&format!("a=fmtp:{pt} level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n"));
            }
        }
    }
    sdp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::pipeline::Pipeline;

    #[test]
    fn packets_round_trip_through_the_ingest_pipeline() {
        let mut es = Vec::new();
        for i in 0..10u8 {
            let key = i % 5 == 0;
            if key {
                es.extend_from_slice(&[
                    0, 0, 0, 1, 0x67, 0x64, 0x00, 0x0d, 0xac, 0xb2, 0x02, 0x83, 0xf6, 0x02, 0x20, 0x00, 0x00, 0x03, 0x00, 0x20, 0x00, 0x00, 0x06,
                    0x41, 0xe2, 0x85, 0x49,
                ]);
                es.extend_from_slice(&[0, 0, 0, 1, 0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0]);
            }
            es.extend_from_slice(&[0, 0, 0, 1, if key { 0x65 } else { 0x41 }, 0x88]);
            es.extend(std::iter::repeat_n(i | 1, 3000));
        }
        let frames = frames_from_es(Codec::H264, &es, 25);
        assert_eq!(frames.len(), 10);
        let mut p = Pipeline::new(Default::default());
        let mut tags = Vec::new();
        for packets in ps_rtp_packets(&frames, 7) {
            for pkt in packets {
                p.on_packet(bytes::Bytes::from(pkt), 0, &mut tags);
            }
        }
        p.flush(&mut tags);
        let video_frames = tags.iter().filter(|t| t.is_video && !t.config).count();
        assert_eq!(video_frames, 10);
        assert_eq!(p.stats.demux_errors, 0);
        assert_eq!(p.flv.video_info().map(|(_, s)| (s.width, s.height)), Some((320, 240)));
    }

    #[test]
    fn packet_loss_keeps_marker_trust_and_most_frames() {
        let frames: Vec<Frame> = (0..300u64)
            .map(|i| {
                let mut d = vec![0, 0, 0, 1, if i % 50 == 0 { 0x65 } else { 0x41 }, 0x88];
                d.extend(std::iter::repeat_n(3u8, if i % 50 == 0 { 60000 } else { 9000 }));
                Frame { codec: Codec::H264, pts: i * 3600, dts: i * 3600, keyframe: i % 50 == 0, data: bytes::Bytes::from(d) }
            })
            .collect();
        let mut p = crate::shard::pipeline::Pipeline::new(Default::default());
        let mut tags = Vec::new();
        let mut rng = crate::proto::testutil::Rng::new(3);
        let (mut trusted_once, mut untrusted_after) = (false, 0);
        for packets in ps_rtp_packets(&frames, 7) {
            for raw in packets {
                if rng.below(100) == 0 {
                    continue; // 1% loss
                }
                p.on_packet(bytes::Bytes::from(raw), 0, &mut tags);
            }
            trusted_once |= p.low_latency();
            untrusted_after += usize::from(trusted_once && !p.low_latency());
        }
        assert!(trusted_once);
        assert_eq!(untrusted_after, 0, "packet loss must not make the device's markers look wrong");
        assert!(p.stats.frames >= 250, "{} of 300 frames survive 1% loss", p.stats.frames);
    }

    #[test]
    fn reliable_markers_make_each_frame_leave_with_its_last_packet() {
        let frames: Vec<Frame> = (0..30u64)
            .map(|i| {
                let mut d = vec![0, 0, 0, 1, 0x41, 0x9a];
                d.extend(std::iter::repeat_n(3u8, 2000));
                Frame { codec: Codec::H264, pts: i * 3600, dts: i * 3600, keyframe: false, data: bytes::Bytes::from(d) }
            })
            .collect();
        let mut ps = crate::proto::ps::PsDemuxer::new();
        let mut events = Vec::new();
        let mut emitted = Vec::new();
        for packets in ps_rtp_packets(&frames, 7) {
            for raw in packets {
                let p = crate::proto::rtp::RtpPacket::parse(bytes::Bytes::from(raw)).unwrap();
                ps.push(&p.payload, p.timestamp, &mut events);
                if p.marker {
                    ps.end_of_frame(&mut events);
                }
            }
            emitted.push(events.len());
        }
        let n = crate::proto::access_unit::MARKER_TRUST_CONFIRMATIONS as usize;
        assert_eq!(emitted[n - 1], n - 1, "one frame behind until trusted");
        assert_eq!(emitted[n + 5], n + 6, "then each frame leaves at once");
        assert!(ps.low_latency());
    }
}
