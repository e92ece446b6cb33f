//! Real devices' PS over RTP (`../shared/corpus/rtp/*_udp.pcap`), demuxed as the engine does:
//! with the RTP marker acted on once trusted (pictures out on it: one frame interval less
//! latency, `AuAssembler`), the pictures must be exactly those found with no marker at all,
//! and, where the device's elementary stream was kept, that stream; and once trusted, the
//! markers stay trusted.

mod common;

use bytes::Bytes;
use gmv::proto::frame::Frame;
use gmv::proto::ps::{PsDemuxer, PsEvent};
use gmv::proto::rtp::RtpPacket;

/// The UDP payloads of a classic little-endian pcap of Ethernet / IPv4 / UDP frames.
fn udp_payloads(pcap: &[u8]) -> Vec<Bytes> {
    assert_eq!(pcap[..4], [0xd4, 0xc3, 0xb2, 0xa1], "classic little-endian pcap");
    assert_eq!(u32::from_le_bytes(pcap[20..24].try_into().unwrap()), 1, "Ethernet link type");
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let caplen = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
        let frame = &pcap[at + 16..at + 16 + caplen];
        at += 16 + caplen;
        if frame.len() < 14 + 20 || frame[12..14] != [0x08, 0x00] || frame[14 + 9] != 17 {
            continue; // not IPv4 / UDP
        }
        let ip_header = usize::from(frame[14] & 0x0f) * 4;
        let udp = &frame[14 + ip_header..];
        let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
        out.push(Bytes::copy_from_slice(&udp[8..udp_len]));
    }
    out
}

/// (pts, keyframe, bytes) of every picture, and the markers, after the first one trusted,
/// that found the markers untrusted (pictures held a frame interval).
fn demux(packets: &[Bytes], act_on_marker: bool) -> (Vec<(u64, bool, Bytes)>, usize) {
    let mut ps = PsDemuxer::new();
    let mut events = Vec::new();
    let (mut trusted_once, mut untrusted_after) = (false, 0);
    for p in packets {
        let rtp = RtpPacket::parse(p.clone()).expect("RTP");
        ps.push(&rtp.payload, rtp.timestamp, &mut events);
        if rtp.marker && act_on_marker {
            ps.end_of_frame(&mut events);
            trusted_once |= ps.low_latency();
            untrusted_after += usize::from(trusted_once && !ps.low_latency());
        }
    }
    assert_eq!(ps.low_latency(), act_on_marker, "the device's markers are trusted once acted on");
    ps.flush(&mut events);
    let frames = events
        .into_iter()
        .filter_map(|e| match e {
            PsEvent::Frame(Frame { codec, pts, keyframe, data, .. }) if codec.is_video() => Some((pts, keyframe, data)),
            _ => None,
        })
        .collect();
    (frames, untrusted_after)
}

#[test]
fn pictures_cut_on_trusted_markers_are_those_a_full_scan_finds() {
    let Some(dir) = common::corpus_dir("rtp") else { return };
    for (capture, es) in [("hikvision_d1_h264_ps_rtp_udp.pcap", Some("hikvision_d1_h264_01e168e1.264")), ("libmpeg_h265_g711a_ps_rtp_udp.pcap", None)] {
        let packets = udp_payloads(&std::fs::read(dir.join(capture)).unwrap());
        let (scanned, _) = demux(&packets, false);
        let (on_marker, untrusted_after) = demux(&packets, true);
        assert!(scanned.len() > 100, "{capture}: {} pictures", scanned.len());
        assert_eq!(on_marker.len(), scanned.len(), "{capture}: as many pictures");
        for (i, (a, b)) in on_marker.iter().zip(&scanned).enumerate() {
            assert!(a == b, "{capture}: picture {i} differs: pts {} / {}, key {} / {}, {} / {} bytes", a.0, b.0, a.1, b.1, a.2.len(), b.2.len());
        }
        // The Hikvision camera puts its keyframe and the next picture under one marker, each
        // in a PES of its own: no reason to stop trusting the markers.
        assert_eq!(untrusted_after, 0, "{capture}: markers found untrusted after trust");
        if let Some(es) = es {
            let es = std::fs::read(dir.join("../es").join(es)).unwrap();
            let joined: Vec<u8> = scanned.iter().flat_map(|(_, _, d)| d.iter().copied()).collect();
            // The capture runs a few pictures past the kept stream (2.4 %): it is their start.
            assert!(joined.starts_with(&es) && es.len() * 100 >= joined.len() * 95, "{capture}: the pictures begin with the device's elementary stream, byte for byte ({} / {} bytes)", es.len(), joined.len());
        }
    }
}
