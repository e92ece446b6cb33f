//! The fragmented-MP4 reader used for recording playback: box walk, moov and moof.
#![no_main]
use gmv::proto::mp4_read::{boxes, parse_moof, parse_moov};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for b in boxes(data).take(1024) {
        let Ok((kind, body)) = b else { break };
        match &kind {
            b"moov" => {
                let _ = parse_moov(body);
            }
            b"moof" => {
                let _ = parse_moof(body);
            }
            _ => {}
        }
    }
    let _ = parse_moov(data);
    let _ = parse_moof(data);
});
