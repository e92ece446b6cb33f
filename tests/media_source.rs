//! A stream takes RTP from its expected SSRC only and, once its source sent valid packets,
//! from that source only: packets from a second socket, a TCP connection or with another SSRC
//! never reach a viewer, and are counted.

mod common;

use common::*;
use serde_json::json;
use std::io::Write;
use std::time::Duration;

#[test]
fn rtp_from_another_socket_or_ssrc_never_reaches_a_viewer_and_is_counted() {
    let engine = Engine::start(1, "");
    let ssrc = 100_000_321u32;
    let s = engine.open_stream(json!({ "ssrc": ssrc }));
    let id = s["stream_id"].as_str().unwrap().to_string();
    let dest = format!("127.0.0.1:{}", s["port"]);
    let out = work_dir().join("locked-source.flv");
    let viewer = spawn_viewer(engine.http, format!("/flv/{id}/{}", engine.stream_token(&id)), vec![], out.clone(), Duration::from_secs(30));
    engine.wait_subscribers(&id, 1);

    let frames = h264_frames();
    let attacker = udp_sender();
    // Before the device: another SSRC locks nothing and is dropped.
    let mut foreign = 0u64;
    for frame in gmv::sim::ps_rtp_packets(&frames[..30], 4242) {
        for p in frame {
            attacker.send_to(&p, &dest).unwrap();
            foreign += 1;
        }
    }
    engine.wait_stat(&id, "foreign_packets", foreign);
    assert_eq!(engine.stream(&id)["packets"], 0);

    // The device: its first packet locks the stream to its socket.
    let device = udp_sender();
    let packets = gmv::sim::ps_rtp_packets(&frames, ssrc);
    let mut sent = 0u64;
    for (i, frame) in packets.iter().enumerate() {
        for p in frame {
            device.send_to(p, &dest).unwrap();
            sent += 1;
        }
        // The attacker now sends the right SSRC, interleaved, from its own socket and over TCP.
        if i % 10 == 5 {
            for p in &packets[i] {
                attacker.send_to(p, &dest).unwrap();
                foreign += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(3));
    }
    let mut tcp = std::net::TcpStream::connect(&dest).unwrap();
    for p in &packets[40] {
        tcp.write_all(&gmv::sim::rfc4571(p)).unwrap();
        foreign += 1;
    }
    engine.wait_packets(&id, sent);
    engine.wait_stat(&id, "foreign_packets", foreign);
    let info = engine.stream(&id);
    assert_eq!((info["packets"].as_u64(), info["foreign_packets"].as_u64()), (Some(sent), Some(foreign)), "{info}");
    assert_eq!(info["ssrc_changes"], 0);

    assert_eq!(engine.request("DELETE", &format!("/api/streams/{id}"), "").0, 200);
    let (status, _) = viewer.join().unwrap();
    assert_eq!(status, 200);
    // Exactly the device's pictures: nothing of the attacker's was mixed in.
    assert_eq!(ffprobe(&out), Probe { codec: "h264".into(), width: WIDTH, height: HEIGHT, frames: CLIP_FRAMES });
    assert!(engine.log_text().contains("RTP packet dropped"), "the drops are logged");
}
