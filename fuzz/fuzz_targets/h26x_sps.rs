//! H.264 and H.265 sequence parameter sets (resolution, profile, scaling lists).
#![no_main]
use gmv::proto::frame::Codec;
use gmv::proto::h26x::parse_sps;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, nal)) = data.split_first() else { return };
    let _ = parse_sps(if pick & 1 == 0 { Codec::H264 } else { Codec::H265 }, nal);
});
