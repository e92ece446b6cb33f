//! MANSCDP XML bodies in any declared encoding.
#![no_main]
use gmv::proto::sip::{manscdp, text};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (xml, _) = text::decode_body(data);
    let _ = manscdp::parse(&xml);
});
