//! RFC 6184 (H.264) and RFC 7798 (H.265) depacketizers; the first byte picks the codec.
#![no_main]
use bytes::Bytes;
use gmv::proto::frame::Codec;
use gmv::proto::rtp::RtpPacket;
use gmv::proto::rtp_depack::Depacketizer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, mut rest)) = data.split_first() else { return };
    let mut depack = Depacketizer::new(if pick & 1 == 0 { Codec::H264 } else { Codec::H265 });
    let mut out = Vec::new();
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        let (packet, tail) = tail.split_at(len);
        if let Ok(p) = RtpPacket::parse(Bytes::copy_from_slice(packet)) {
            depack.push(&p, &mut out);
        }
        out.clear();
        rest = tail;
    }
});
