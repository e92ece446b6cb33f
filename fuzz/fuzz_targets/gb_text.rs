//! The small GB28181 text formats: MANSRTSP bodies, local times, zone offsets.
#![no_main]
use gmv::proto::sip::{gbtime, mansrtsp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(action) = mansrtsp::parse(&text) {
        assert_eq!(mansrtsp::parse(&action.body(1)), Some(action), "what gmv writes reads back");
    }
    if let Some(t) = gbtime::parse_local(&text, 8 * 3600) {
        assert_eq!(gbtime::parse_local(&gbtime::format_local(t, 8 * 3600), 8 * 3600), Some(t));
    }
    let _ = gbtime::parse_offset(&text);
});
