//! What a media node and a control take from the network before anything is authorised: node
//! API parameters (query and form body), RTP server names, and the answers hook receivers and
//! media nodes send back (HTTP answers read whole, up to a bound; an on_publish answer's
//! options and stream_replace), and the address ranges
//! `expect_source` and `POST /api/streams`'s `source` carry.
#![no_main]
use gmv::node::rtp_servers::{RtpServers, TcpMode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let (query, body) = data.split_at(split);
    let params = gmv::http::node_api::params(&String::from_utf8_lossy(query), body);
    let servers = RtpServers::default();
    for (k, v) in &params {
        let _ = (servers.may_open(k, v), TcpMode::parse(v));
        if let Ok(net) = gmv::proto::ipnet::IpNet::parse(v) {
            // What gmv writes reads back as the same range.
            assert_eq!(gmv::proto::ipnet::IpNet::parse(&net.to_string()), Ok(net));
        }
    }
    if let Ok(Some(answer)) = gmv::outbound::parse_answer(data) {
        assert!(answer.body.len() <= gmv::outbound::ANSWER_BYTES_MAX);
        // A hook receiver's on_publish answer: what it asks of the stream, and its new name.
        if let Ok(serde_json::Value::Object(m)) = serde_json::from_slice::<serde_json::Value>(&answer.body) {
            let options = gmv::node::zlm::PublishOptions::from_answer(&m);
            let mut servers = RtpServers::default();
            if let Some(name) = &options.stream_replace {
                let _ = servers.rename("0BEBC201", name);
            }
        }
    }
    let _ = gmv::outbound::parse_answer_at_eof(data);
});
