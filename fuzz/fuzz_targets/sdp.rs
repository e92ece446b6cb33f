//! SDP offers and answers (devices' and ffmpeg's).
#![no_main]
use gmv::proto::sdp::Sdp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(sdp) = Sdp::parse(data) {
        let _ = sdp.ssrc();
        let map = sdp.rtp_map();
        for pt in 0..128u8 {
            let _ = (map.kind(pt), map.sprop_parameter_sets(pt));
        }
    }
});
