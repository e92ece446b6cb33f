//! One RTP port for every stream (`rtp.port`): SO_REUSEPORT on every media shard, a classic BPF
//! program steering each datagram by SSRC to the shard that owns its stream. A packet the kernel
//! sent to another shard would be dropped there as unknown, so every stream getting all of its
//! packets (and no unknown SSRC counted) is the proof that the program and the engine's
//! placement agree. TCP connections move to the owning shard after their first frame; with
//! `rtp.accept_unknown_ssrc` a bare `ffmpeg -f rtp` push opens its own stream.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

/// Streams per shard: more than the test engine's port range holds (ten per shard), so streams
/// binding ports of their own would fail to open.
const STREAMS_PER_SHARD: usize = 16;
const PACKETS_EACH: u64 = 5;

#[test]
fn every_stream_gets_its_packets_through_the_one_port() {
    let port = fixed_port();
    let engine = Engine::start(2, &format!("  port: {port}\n"));
    let ssrcs = spread_ssrcs(200_000_001);
    for &ssrc in &ssrcs {
        assert_eq!(engine.open_stream(json!({ "ssrc": ssrc }))["port"].as_u64(), Some(u64::from(port)), "no port of its own");
    }
    let shards: std::collections::BTreeSet<u64> = ssrcs.iter().map(|s| engine.stream(&format!("{s:010}"))["shard"].as_u64().unwrap()).collect();
    assert_eq!(shards.len(), 2, "the streams are spread over both shards");
    let sock = udp_sender();
    // Junk first: not RTP, too short. Dropped by the shard they go to; nothing else changes.
    sock.send_to(b"GET / HTTP/1.1\r\n\r\n", ("127.0.0.1", port)).unwrap();
    sock.send_to(&[0x80, 96, 0], ("127.0.0.1", port)).unwrap();
    send_rounds_and_wait(&engine, &sock, port, &ssrcs);
    // An SSRC nobody opened is dropped and counted where the kernel sent it.
    sock.send_to(&rtp(123_456_789, 0), ("127.0.0.1", port)).unwrap();
    let totals = wait_for("the stranger counted", Duration::from_secs(5), || {
        let t = single_port_totals(&engine);
        (t["unknown_ssrc"] == 1).then_some(t)
    });
    assert_eq!(totals["not_rtp"], 2);
    assert_eq!(totals["datagrams"], 2 * STREAMS_PER_SHARD as u64 * PACKETS_EACH + 3);
    let (_, streams) = engine.request("GET", "/api/streams", "");
    assert_eq!(streams["total"], ssrcs.len(), "the stranger opened nothing");
    let (_, config) = engine.request("GET", "/api/config", "");
    assert_eq!(config["rtp"]["port"].as_u64(), Some(u64::from(port)));

    // The same figures for Prometheus, behind an API key.
    assert_eq!(engine.try_request("GET", "/metrics", &[], b"").unwrap().0, 401);
    let (status, text) = engine.try_request("GET", "/metrics", &[("Authorization", &format!("Bearer {TOKEN}"))], b"").unwrap();
    assert_eq!(status, 200);
    let value = |line_start: &str| -> u64 {
        text.lines().filter(|l| l.starts_with(line_start)).map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap()).sum()
    };
    assert!(text.contains("# TYPE gmv_shard_packets counter"), "{text}");
    assert_eq!(value("gmv_shard_packets_total{shard="), 2 * STREAMS_PER_SHARD as u64 * PACKETS_EACH, "{text}");
    assert_eq!(value("gmv_shard_streams{shard="), ssrcs.len() as u64);
    assert_eq!(value("gmv_single_port_not_rtp_total{shard="), 2);
    assert_eq!(value("gmv_single_port_unknown_ssrc_total{shard="), 1);
    assert!(text.contains("gmv_sip_received_total ") && text.ends_with("# EOF\n"), "{text}");
    // A closed stream's packets still count: the totals only grow.
    assert_eq!(engine.request("DELETE", &format!("/api/streams/{:010}", ssrcs[0]), "").0, 200);
    let (_, shards) = engine.request("GET", "/api/shards", "");
    let sum = |k: &str| shards["shards"].as_array().unwrap().iter().map(|s| s[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!((sum("packets"), sum("streams")), (2 * STREAMS_PER_SHARD as u64 * PACKETS_EACH, ssrcs.len() as u64 - 1));
}

/// With `rtp.gather_us` a shard's loop pauses after a receive that found datagrams instead of
/// arming a wake for the next: bursts, and a lone packet each once the port went quiet (the
/// loop back to waiting on the socket), all arrive.
#[test]
fn with_a_gather_pause_every_packet_still_arrives() {
    let port = fixed_port();
    let engine = Engine::start(2, &format!("  port: {port}\n  gather_us: 2000\n"));
    let (_, config) = engine.request("GET", "/api/config", "");
    assert_eq!(config["rtp"]["gather_us"].as_u64(), Some(2000));
    let ssrcs = spread_ssrcs(200_100_001);
    for &ssrc in &ssrcs {
        engine.open_stream(json!({ "ssrc": ssrc }));
    }
    let sock = udp_sender();
    send_rounds_and_wait(&engine, &sock, port, &ssrcs);
    for &ssrc in &ssrcs {
        sock.send_to(&rtp(ssrc, PACKETS_EACH as u16), ("127.0.0.1", port)).unwrap();
        engine.wait_packets(&format!("{ssrc:010}"), PACKETS_EACH + 1);
    }
}

/// Streams on ports of their own (no `rtp.port`), whose sockets a shard takes through one
/// epoll set: bursts of several turns' worth, into several streams of both shards at once, and
/// a lone packet each after the ports went quiet (the set waited on again), all arrive, none
/// counted lost; with the gather pause (the default) and without it (a wake for every round).
#[test]
fn streams_on_their_own_ports_take_bursts_and_lone_packets() {
    for rtp in ["", "  gather_us: 0\n"] {
        bursts_and_lone_packets(rtp);
    }
}

fn bursts_and_lone_packets(rtp_config: &str) {
    const BURST: u16 = 300;
    const _: () = assert!(BURST as usize > 2 * gmv::shard::stream::UDP_DATAGRAMS_PER_TURN_MAX);
    let engine = Engine::start(2, rtp_config);
    let streams: Vec<(u32, u64)> = [300_000_001u32, 300_000_002, 300_000_003, 300_000_004]
        .iter()
        .map(|&ssrc| (ssrc, engine.open_stream(json!({ "ssrc": ssrc }))["port"].as_u64().unwrap()))
        .collect();
    let shards: std::collections::BTreeSet<u64> = streams.iter().map(|(s, _)| engine.stream(&format!("{s:010}"))["shard"].as_u64().unwrap()).collect();
    assert_eq!(shards.len(), 2, "the streams are spread over both shards");
    let sock = udp_sender();
    for seq in 0..BURST {
        for &(ssrc, port) in &streams {
            sock.send_to(&rtp(ssrc, seq), ("127.0.0.1", port as u16)).unwrap();
        }
    }
    for &(ssrc, _) in &streams {
        engine.wait_packets(&format!("{ssrc:010}"), u64::from(BURST));
    }
    for &(ssrc, port) in &streams {
        sock.send_to(&rtp(ssrc, BURST), ("127.0.0.1", port as u16)).unwrap();
        engine.wait_packets(&format!("{ssrc:010}"), u64::from(BURST) + 1);
        let info = engine.stream(&format!("{ssrc:010}"));
        assert_eq!((info["lost"].as_u64(), info["rtp_errors"].as_u64()), (Some(0), Some(0)), "{info}");
    }
    let (_, v) = engine.request("GET", "/api/shards", "");
    for shard in v["shards"].as_array().unwrap() {
        assert_eq!(shard["stream_socket_recv_errors"].as_u64(), Some(0), "{shard}");
    }
}

/// A stream's socket closes with it: its port can be asked for by the next stream at once, and
/// that stream (whose socket likely has the closed one's descriptor number) takes its own
/// datagrams, while the other stream of the shard keeps taking its own.
#[test]
fn a_closed_streams_port_is_free_at_once_and_the_next_takes_its_datagrams() {
    let engine = Engine::start(1, "");
    let open = |body: serde_json::Value| (body["ssrc"].as_u64().unwrap() as u32, engine.open_stream(body)["port"].as_u64().unwrap() as u16);
    let (a, b) = (open(json!({ "ssrc": 300_100_001 })), open(json!({ "ssrc": 300_100_002 })));
    let sock = udp_sender();
    let send = |(ssrc, port): (u32, u16), seqs: std::ops::Range<u16>| {
        for seq in seqs {
            sock.send_to(&rtp(ssrc, seq), ("127.0.0.1", port)).unwrap();
        }
    };
    send(a, 0..10);
    send(b, 0..10);
    engine.wait_packets(&format!("{:010}", a.0), 10);
    engine.wait_packets(&format!("{:010}", b.0), 10);
    assert_eq!(engine.request("DELETE", &format!("/api/streams/{:010}", a.0), "").0, 200);
    let c = open(json!({ "ssrc": 300_100_003, "port": a.1 }));
    assert_eq!(c.1, a.1, "the closed stream's port, bound again");
    send(c, 0..20);
    send(b, 10..20);
    engine.wait_packets(&format!("{:010}", c.0), 20);
    engine.wait_packets(&format!("{:010}", b.0), 20);
    let info = engine.stream(&format!("{:010}", c.0));
    assert_eq!((info["packets"].as_u64(), info["lost"].as_u64()), (Some(20), Some(0)), "{info}");
    assert_eq!(engine.request("GET", &format!("/api/streams/{:010}", a.0), "").0, 404, "A stays closed");
}

/// `PACKETS_EACH` rounds of one packet for every SSRC to the single port, 5 ms apart, then
/// waits until each stream counted them.
fn send_rounds_and_wait(engine: &Engine, sock: &std::net::UdpSocket, port: u16, ssrcs: &[u32]) {
    for seq in 0..PACKETS_EACH as u16 {
        for &ssrc in ssrcs {
            sock.send_to(&rtp(ssrc, seq), ("127.0.0.1", port)).unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for &ssrc in ssrcs {
        engine.wait_packets(&format!("{ssrc:010}"), PACKETS_EACH);
    }
}

/// `STREAMS_PER_SHARD` SSRCs for each of two shards, from `first` on.
fn spread_ssrcs(first: u32) -> Vec<u32> {
    let mut per_shard = [0usize; 3];
    (0..1000u32)
        .map(|i| first + i * 7)
        .filter(|s| {
            let o = gmv::shard::owner_of(*s, 2);
            per_shard[o] += 1;
            per_shard[o] <= STREAMS_PER_SHARD
        })
        .take(2 * STREAMS_PER_SHARD)
        .collect()
}

/// An RTP packet of 100 payload bytes.
fn rtp(ssrc: u32, seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 3600).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0u8; 100]);
    p
}

/// The single-port counters summed over the shards.
fn single_port_totals(engine: &Engine) -> serde_json::Value {
    let (_, v) = engine.request("GET", "/api/shards", "");
    let mut totals = serde_json::Map::new();
    for shard in v["shards"].as_array().unwrap() {
        for (k, n) in shard["single_port"].as_object().unwrap() {
            let sum = totals.get(k).and_then(|t| t.as_u64()).unwrap_or(0) + n.as_u64().unwrap();
            totals.insert(k.clone(), json!(sum));
        }
    }
    serde_json::Value::Object(totals)
}

/// One RFC 4571 connection per stream to the one port: each reaches its stream whichever
/// shard accepted it. A connection that sends no RTP is closed and counted.
#[test]
fn tcp_connections_on_the_one_port_reach_the_shard_of_their_ssrc() {
    use std::io::Write;
    let port = fixed_port();
    let engine = Engine::start(2, &format!("  port: {port}\n"));
    let ssrcs = spread_ssrcs(300_000_001);
    for &ssrc in &ssrcs {
        engine.open_stream(json!({ "ssrc": ssrc }));
    }
    let mut conns: Vec<std::net::TcpStream> = ssrcs.iter().map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    for seq in 0..PACKETS_EACH as u16 {
        for (conn, &ssrc) in conns.iter_mut().zip(&ssrcs) {
            // The first frame in two writes: the length alone first.
            let framed = gmv::sim::rfc4571(&rtp(ssrc, seq));
            if seq == 0 {
                conn.write_all(&framed[..2]).unwrap();
                conn.flush().unwrap();
                std::thread::sleep(Duration::from_millis(1));
                conn.write_all(&framed[2..]).unwrap();
            } else {
                conn.write_all(&framed).unwrap();
            }
        }
    }
    for &ssrc in &ssrcs {
        engine.wait_packets(&format!("{ssrc:010}"), PACKETS_EACH);
        assert_eq!(engine.stream(&format!("{ssrc:010}"))["transport"], "tcp");
    }
    let mut junk = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    junk.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let totals = wait_for("the junk connection dropped", Duration::from_secs(10), || {
        let t = single_port_totals(&engine);
        (t["tcp_dropped"] == 1).then_some(t)
    });
    assert_eq!(totals["tcp_accepted"], ssrcs.len() as u64 + 1);
    // The kernel spreads connections by address, not SSRC: with 32 of them over two shards,
    // all landing on their owner has odds of 2^-32.
    assert!(totals["tcp_handed_over"].as_u64().unwrap() > 0, "{totals}");
}

/// A bare `ffmpeg -f rtp` push (H.264 on dynamic payload type 96, no SDP given to gmv) to the
/// one port opens a stream that plays, its codec learned from the packets. Without the gather
/// pause (`gather_us: 0`, a wake for every datagram; the other tests run with one).
#[test]
fn an_unknown_ssrc_opens_a_stream_when_accepted_and_its_codec_is_sniffed() {
    let port = fixed_port();
    let engine = Engine::start(2, &format!("  port: {port}\n  accept_unknown_ssrc: true\n  gather_us: 0\n"));
    let ssrc = 42_424_242u32;
    let id = format!("{ssrc:010}");
    let mut ffmpeg = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-t", "4", "-pix_fmt", "yuv420p", "-c:v", "libx264", "-bf", "0", "-g", "25"])
        .args(["-f", "rtp", "-ssrc", &ssrc.to_string(), &format!("rtp://127.0.0.1:{port}")])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ffmpeg");
    let stream = wait_for("the stream opened for the push", Duration::from_secs(20), || {
        let (status, v) = engine.request("GET", &format!("/api/streams/{id}"), "");
        (status == 200 && v["width"] == 320).then_some(v)
    });
    assert_eq!((stream["payload"].as_str(), stream["video_codec"].as_str(), stream["height"].as_u64()), (Some("h264"), Some("h264"), Some(240)));
    let out = work_dir().join("unknown-ssrc.flv");
    let viewer = spawn_viewer(engine.http, format!("/flv/{id}/{}", engine.stream_token(&id)), vec![], out.clone(), Duration::from_secs(20));
    engine.wait_subscribers(&id, 1);
    assert!(ffmpeg.wait().unwrap().success());
    assert_eq!(engine.request("DELETE", &format!("/api/streams/{id}"), "").0, 200);
    viewer.join().unwrap();
    let probe = ffprobe(&out);
    assert_eq!((probe.codec.as_str(), probe.width, probe.height), ("h264", 320, 240));
    assert!(probe.frames >= 25, "{probe:?}");
    assert_eq!(single_port_totals(&engine)["unknown_opened"], 1);
}
