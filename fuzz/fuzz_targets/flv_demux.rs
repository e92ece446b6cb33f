//! The FLV tag-body demuxer (RTMP audio and video messages) alone: a kind byte (bit 0: audio),
//! a 16-bit length, then the body, repeated, so sequence headers and pictures meet.
#![no_main]
use gmv::proto::flv_demux::TagDemuxer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut demux = TagDemuxer::new();
    let mut rest = data;
    let mut time = 0u64;
    while rest.len() >= 3 {
        let (kind, len) = (rest[0], usize::from(u16::from_be_bytes([rest[1], rest[2]])));
        let body = &rest[3..(3 + len).min(rest.len())];
        rest = &rest[3 + body.len()..];
        time += u64::from(kind >> 1);
        let out = if kind & 1 == 1 { demux.audio(body, time) } else { demux.video(body, time) };
        if let Ok(Some(frame)) = out {
            assert!(frame.data.len() <= gmv::proto::ps::FRAME_BYTES_MAX + gmv::proto::flv_demux::PARAMETER_SETS_BYTES_MAX);
        }
    }
});
