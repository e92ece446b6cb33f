//! SIP message parsing (rsip behind the quirk-absorbing wrapper), every accessor, digest
//! credentials, and the raw 400 for unparseable requests.
#![no_main]
use gmv::proto::sip::{build, digest::DigestCredentials, parse, parse_datagram};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = parse(data) {
        let _ = (m.cseq(), m.from_user(), m.from_tag(), m.to_tag(), m.content_type(), m.expires(), m.branch(), m.call_id(), m.status());
        if let Some(h) = m.header("Authorization") {
            let _ = DigestCredentials::parse(&h).map(|c| c.verify("REGISTER", "12345678"));
        }
    }
    let _ = parse_datagram(data);
    let _ = build::bad_request_for_unparsed(data, "127.0.0.1:5060".parse().unwrap());
});
