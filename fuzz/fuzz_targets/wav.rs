//! WAV announcements for voice broadcast (an operator's upload): the RIFF chunk walk, the
//! format checks and the G.711 conversion, for both laws.
#![no_main]
use gmv::proto::wav::{Law, WAV_BYTES_MAX, to_g711};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for law in [Law::A, Law::Mu] {
        if let Ok(samples) = to_g711(data, law) {
            assert!(!samples.is_empty() && samples.len() <= WAV_BYTES_MAX, "never more samples than bytes in");
        }
    }
});
