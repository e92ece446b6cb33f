//! The SIP-over-TCP Content-Length framer, fed in chunks whose size the input picks. (What it
//! frames is parsed by the sip_parse target; here only the framing and its bounds.)
#![no_main]
use gmv::proto::sip::StreamFramer;
use gmv::proto::sip::message::SIP_MESSAGE_BYTES_MAX;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else { return };
    let chunk = usize::from(chunk).max(1);
    let mut f = StreamFramer::default();
    for piece in rest.chunks(chunk) {
        f.push(piece);
        loop {
            match f.next_message() {
                Ok(Some(m)) => assert!(m.len() <= SIP_MESSAGE_BYTES_MAX),
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(f.buffered() <= SIP_MESSAGE_BYTES_MAX + piece.len());
    }
});
