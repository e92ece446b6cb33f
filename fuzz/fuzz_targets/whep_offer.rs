//! What a browser (or anyone) POSTs to a WHEP (or WHIP) URL and sends to a shard's WebRTC port: an SDP
//! offer taken through the negotiation gmv does (str0m's parser and answerer, our track
//! choice), and a datagram's STUN USERNAME read to find its session. Neither may panic.
#![no_main]

use gmv::proto::frame::Codec;
use gmv::shard::webrtc::Want;
use libfuzzer_sys::fuzz_target;
use std::time::Instant;

fuzz_target!(|data: &[u8]| {
    let _ = gmv::shard::webrtc::stun_username_ufrag(data);
    let Some((&first, rest)) = data.split_first() else { return };
    let Ok(offer) = std::str::from_utf8(rest) else { return };
    let want = match first % 4 {
        0 => Want::View(None),
        1 => Want::View(Some(Codec::H264)),
        2 => Want::View(Some(Codec::H265)),
        _ => Want::Talk,
    };
    let creds = gmv::shard::webrtc::ice_creds("0123456789abcdef", "0123456789abcdef0123456789abcdef");
    let _ = gmv::shard::webrtc::negotiate(offer, creds, "127.0.0.1:8189".parse().unwrap(), want, Instant::now());
});
