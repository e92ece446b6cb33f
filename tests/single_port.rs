//! One RTP port for every stream (`rtp.port`): SO_REUSEPORT on every media shard, a classic BPF
//! program steering each datagram by SSRC to the shard that owns its stream. A packet the kernel
//! sent to another shard would be dropped there as unknown, so every stream getting all of its
//! packets is the proof that the program and the engine's placement agree.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

/// Streams per shard (each still binds its own port too; the test engine has ten per shard).
const STREAMS_PER_SHARD: usize = 8;
const PACKETS_EACH: u64 = 5;

#[test]
fn every_stream_gets_its_packets_through_the_one_port() {
    let port = free_udp_port();
    let engine = Engine::start(2, &format!("  port: {port}\n"));
    let mut per_shard = [0usize; 3];
    let ssrcs: Vec<u32> = (0..1000u32)
        .map(|i| 200_000_001 + i * 7)
        .filter(|s| {
            let o = gmv::shard::owner_of(*s, 2);
            per_shard[o] += 1;
            per_shard[o] <= STREAMS_PER_SHARD
        })
        .take(2 * STREAMS_PER_SHARD)
        .collect();
    for &ssrc in &ssrcs {
        engine.open_stream(json!({ "ssrc": ssrc }));
    }
    let shards: std::collections::BTreeSet<u64> = ssrcs.iter().map(|s| engine.stream(&format!("{s:010}"))["shard"].as_u64().unwrap()).collect();
    assert_eq!(shards.len(), 2, "the streams are spread over both shards");
    let sock = udp_sender();
    // Junk first: not RTP, too short. Dropped by the shard they go to; nothing else changes.
    sock.send_to(b"GET / HTTP/1.1\r\n\r\n", ("127.0.0.1", port)).unwrap();
    sock.send_to(&[0x80, 96, 0], ("127.0.0.1", port)).unwrap();
    for seq in 0..PACKETS_EACH as u16 {
        for &ssrc in &ssrcs {
            let mut p = vec![0x80, 96];
            p.extend_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&(u32::from(seq) * 3600).to_be_bytes());
            p.extend_from_slice(&ssrc.to_be_bytes());
            p.extend_from_slice(&[0u8; 100]);
            sock.send_to(&p, ("127.0.0.1", port)).unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for &ssrc in &ssrcs {
        engine.wait_packets(&format!("{ssrc:010}"), PACKETS_EACH);
    }
    let (_, config) = engine.request("GET", "/api/config", "");
    assert_eq!(config["rtp"]["port"].as_u64(), Some(u64::from(port)));
}
