//! RTP packets through the reorder buffer (the input cuts packets and sets the clock), their
//! payloads through the payload sniffer, and the whole input through the RFC 4571 deframer.
#![no_main]
use bytes::Bytes;
use gmv::proto::rtp::{ReorderBuffer, Rfc4571Deframer, RtpPacket};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut reorder = ReorderBuffer::new();
    let mut out = Vec::new();
    let (mut rest, mut now_ms) = (data, 0u64);
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        let (packet, tail) = tail.split_at(len);
        now_ms += u64::from(len as u8 % 50);
        if let Ok(p) = RtpPacket::parse(Bytes::copy_from_slice(packet)) {
            let _ = gmv::proto::sniff::sniff(&p.payload);
            reorder.push(p, now_ms, &mut out);
        }
        rest = tail;
        assert!(reorder.held() <= 64);
    }
    reorder.flush(&mut out);
    let mut deframer = Rfc4571Deframer::default();
    deframer.push(data);
    while let Some(p) = deframer.pop() {
        let _ = RtpPacket::parse(p);
    }
});
