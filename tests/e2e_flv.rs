//! End to end: PS-over-RTP (UDP and TCP) and ffmpeg's plain RTP H.264 in, HTTP-FLV out,
//! checked by decoding with ffprobe.

mod common;

use common::*;
use gmv::proto::frame::Codec;
use serde_json::json;
use std::io::Write;
use std::process::Command;
use std::time::Duration;

const VIEW_LIMIT: Duration = Duration::from_secs(30);
const FRAME_GAP: Duration = Duration::from_millis(5);

fn clip_frames() -> Vec<gmv::proto::frame::Frame> {
    let es = std::fs::read(h264_clip()).unwrap();
    let frames = gmv::sim::frames_from_es(Codec::H264, &es, FPS);
    assert_eq!(frames.len(), CLIP_FRAMES);
    frames
}

#[test]
fn ps_over_udp_and_tcp_play_as_flv() {
    let engine = Engine::start(2, "");
    let frames = clip_frames();
    // Two SSRCs that land on different shards, so both local play and hand-off happen.
    let (ssrc_udp, ssrc_tcp) =
        (100_000_001u32, (100_000_002..).find(|s| gmv::shard::owner_of(*s, 2) != gmv::shard::owner_of(100_000_001, 2)).unwrap());
    let udp = engine.open_stream(json!({ "ssrc": ssrc_udp }));
    let tcp = engine.open_stream(json!({ "ssrc": ssrc_tcp }));
    let (id_udp, id_tcp) = (udp["stream_id"].as_str().unwrap().to_string(), tcp["stream_id"].as_str().unwrap().to_string());
    assert_ne!(udp["shard"], tcp["shard"]);

    let dir = work_dir();
    let (out_udp, out_tcp) = (dir.join("udp.flv"), dir.join("tcp.flv"));
    let v_udp = spawn_viewer(engine.http, format!("/flv/{id_udp}/{}", engine.stream_token(&id_udp)), vec![], out_udp.clone(), VIEW_LIMIT);
    let v_tcp =
        spawn_viewer(engine.http, format!("/{NODE_ID}/play/{id_tcp}.flv"), vec![("gmv-token".into(), TOKEN.into())], out_tcp.clone(), VIEW_LIMIT);
    engine.wait_subscribers(&id_udp, 1);
    engine.wait_subscribers(&id_tcp, 1);

    let sock = udp_sender();
    let udp_dest = format!("127.0.0.1:{}", udp["port"]);
    let mut tcp_conn = std::net::TcpStream::connect(format!("127.0.0.1:{}", tcp["port"])).unwrap();
    let (packets_udp, packets_tcp) = (gmv::sim::ps_rtp_packets(&frames, ssrc_udp), gmv::sim::ps_rtp_packets(&frames, ssrc_tcp));
    for (a, b) in packets_udp.iter().zip(&packets_tcp) {
        for p in a {
            sock.send_to(p, &udp_dest).unwrap();
        }
        for p in b {
            tcp_conn.write_all(&gmv::sim::rfc4571(p)).unwrap();
        }
        std::thread::sleep(FRAME_GAP);
    }
    let sent: usize = packets_udp.iter().map(Vec::len).sum();
    engine.wait_packets(&id_udp, sent as u64);
    engine.wait_packets(&id_tcp, packets_tcp.iter().map(Vec::len).sum::<usize>() as u64);

    let info = engine.stream(&id_udp);
    assert_eq!(info["packets"], sent as u64, "{info}");
    assert_eq!((info["lost"].as_u64(), info["demux_errors"].as_u64()), (Some(0), Some(0)), "{info}");
    assert_eq!((info["video_codec"].as_str(), info["width"].as_u64(), info["height"].as_u64()), (Some("h264"), Some(320), Some(240)));
    assert_eq!(info["low_latency"], true, "markers from the simulated camera are reliable: {info}");
    assert_eq!(engine.stream(&id_tcp)["transport"], "tcp");

    for id in [&id_udp, &id_tcp] {
        assert_eq!(engine.request("DELETE", &format!("/api/streams/{id}"), "").0, 200);
    }
    for (viewer, out) in [(v_udp, &out_udp), (v_tcp, &out_tcp)] {
        let (status, bytes) = viewer.join().unwrap();
        assert_eq!(status, 200);
        assert!(bytes > 10_000, "{bytes} bytes");
        let probe = ffprobe(out);
        assert_eq!(probe, Probe { codec: "h264".into(), width: WIDTH, height: HEIGHT, frames: CLIP_FRAMES }, "{}", out.display());
    }
}

#[test]
fn late_viewer_starts_at_cached_keyframe() {
    let engine = Engine::start(1, "");
    let frames = clip_frames();
    let s = engine.open_stream(json!({}));
    let id = s["stream_id"].as_str().unwrap().to_string();
    let ssrc = s["ssrc"].as_u64().unwrap() as u32;
    let sock = udp_sender();
    let dest = format!("127.0.0.1:{}", s["port"]);
    let packets = gmv::sim::ps_rtp_packets(&frames, ssrc);
    // 60 frames in: the GOP started at frame 50 is cached.
    for frame in &packets[..60] {
        for p in frame {
            sock.send_to(p, &dest).unwrap();
        }
    }
    engine.wait_packets(&id, packets[..60].iter().map(Vec::len).sum::<usize>() as u64);
    let out = work_dir().join("late.flv");
    let viewer = spawn_viewer(engine.http, format!("/flv/{id}/{}", engine.stream_token(&id)), vec![], out.clone(), VIEW_LIMIT);
    engine.wait_subscribers(&id, 1);
    for frame in &packets[60..] {
        for p in frame {
            sock.send_to(p, &dest).unwrap();
        }
        std::thread::sleep(FRAME_GAP);
    }
    engine.wait_packets(&id, packets.iter().map(Vec::len).sum::<usize>() as u64);
    assert_eq!(engine.request("DELETE", &format!("/api/streams/{id}"), "").0, 200);
    viewer.join().unwrap();
    let probe = ffprobe(&out);
    // Frames 50..100: the cached GOP (50..59, the frame in flight included) plus the live rest.
    assert_eq!(probe, Probe { codec: "h264".into(), width: WIDTH, height: HEIGHT, frames: CLIP_FRAMES - 50 });
}

/// FLV tags are built only while someone plays them: after the last viewer leaves, muxing
/// stops at the next keyframe and the GOP is kept as frames. A viewer who comes back before
/// that keyframe starts at the tags' cached GOP (frame 25), one who comes after it at the
/// frames' (frame 50, muxed then); both decode every frame from there.
#[test]
fn a_viewer_after_the_last_one_left_starts_at_a_cached_keyframe() {
    let engine = Engine::start(1, "");
    let sock = udp_sender();
    let mut views = Vec::new();
    // (frame the next viewer comes at, the first frame it decodes)
    for (comes_at, starts_at) in [(40usize, 25usize), (60, 50)] {
        let s = engine.open_stream(json!({}));
        let id = s["stream_id"].as_str().unwrap().to_string();
        let ssrc = s["ssrc"].as_u64().unwrap() as u32;
        let packets: Vec<Vec<Vec<u8>>> = gmv::sim::ps_rtp_packets(&clip_frames(), ssrc);
        let dest = format!("127.0.0.1:{}", s["port"]);
        let send = |frames: std::ops::Range<usize>| {
            for frame in &packets[frames.clone()] {
                for p in frame {
                    sock.send_to(p, &dest).unwrap();
                }
                std::thread::sleep(FRAME_GAP);
            }
            engine.wait_packets(&id, packets[..frames.end].iter().map(Vec::len).sum::<usize>() as u64);
        };
        // The first viewer watches frames 0..30 and hangs up.
        let mut first = std::net::TcpStream::connect(engine.http).unwrap();
        write!(first, "GET /flv/{id}/{} HTTP/1.1\r\nHost: gmv\r\n\r\n", engine.stream_token(&id)).unwrap();
        engine.wait_subscribers(&id, 1);
        send(0..30);
        drop(first);
        engine.wait_subscribers(&id, 0);
        send(30..comes_at);
        let out = work_dir().join(format!("back-at-{comes_at}.flv"));
        let viewer = spawn_viewer(engine.http, format!("/flv/{id}/{}", engine.stream_token(&id)), vec![], out.clone(), VIEW_LIMIT);
        engine.wait_subscribers(&id, 1);
        send(comes_at..CLIP_FRAMES);
        assert_eq!(engine.request("DELETE", &format!("/api/streams/{id}"), "").0, 200);
        views.push((viewer, out, starts_at));
    }
    for (viewer, out, starts_at) in views {
        assert_eq!(viewer.join().unwrap().0, 200);
        assert_eq!(ffprobe(&out), Probe { codec: "h264".into(), width: WIDTH, height: HEIGHT, frames: CLIP_FRAMES - starts_at }, "{}", out.display());
    }
}

/// ffmpeg sends the H.264 clip in real time to the stream's port with `output` options (its
/// muxer); returns once the engine has every picture but the one the next would end.
fn ffmpeg_push(engine: &Engine, stream: &serde_json::Value, output: &[&str]) {
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-re", "-i"])
        .arg(h264_clip())
        .args(["-c", "copy"])
        .args(output)
        .arg(format!("rtp://127.0.0.1:{}", stream["port"]))
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    engine.wait_stat(stream["stream_id"].as_str().unwrap(), "frames", CLIP_FRAMES as u64 - 1);
}

#[test]
fn ffmpeg_rtp_h264_with_sdp_plays_as_flv() {
    let engine = Engine::start(2, "");
    let clip = h264_clip();
    let ssrc = 305_419_896u32;
    // ffmpeg writes the SDP it would send with; a throwaway run against a local sink gets it.
    let sink = udp_sender();
    let sdp_path = work_dir().join("ffmpeg.sdp");
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(clip)
        .args(["-frames:v", "1", "-c", "copy", "-f", "rtp", "-ssrc", &ssrc.to_string(), "-sdp_file"])
        .arg(&sdp_path)
        .arg(format!("rtp://127.0.0.1:{}", sink.local_addr().unwrap().port()))
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let sdp = std::fs::read_to_string(&sdp_path).unwrap();
    assert!(sdp.contains("H264/90000"), "{sdp}");

    let s = engine.open_stream(json!({ "ssrc": ssrc, "sdp": sdp }));
    assert_eq!(s["payload"], "h264");
    let id = s["stream_id"].as_str().unwrap().to_string();
    let out = work_dir().join("rtp.flv");
    let viewer = spawn_viewer(engine.http, format!("/flv/{id}/{}", engine.stream_token(&id)), vec![], out.clone(), VIEW_LIMIT);
    engine.wait_subscribers(&id, 1);
    ffmpeg_push(&engine, &s, &["-f", "rtp", "-ssrc", &ssrc.to_string()]);
    let info = engine.stream(&id);
    assert_eq!((info["lost"].as_u64(), info["demux_errors"].as_u64(), info["width"].as_u64()), (Some(0), Some(0), Some(320)), "{info}");
    assert_eq!(engine.request("DELETE", &format!("/api/streams/{id}"), "").0, 200);
    viewer.join().unwrap();
    assert_eq!(ffprobe(&out), Probe { codec: "h264".into(), width: WIDTH, height: HEIGHT, frames: CLIP_FRAMES });
}

/// MPEG-TS over RTP (`ffmpeg -f rtp_mpegts`, payload type 33) is demuxed as TS, whether the
/// stream was declared TS by its SDP or opened as a GB28181 PS stream that then got TS.
#[test]
fn ffmpeg_rtp_mpegts_plays_as_flv_declared_or_sniffed() {
    let engine = Engine::start(2, "");
    let ts_sdp = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=ts\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=video 0 RTP/AVP 33\r\n";
    for (ssrc, sdp) in [(305_419_001u32, Some(ts_sdp)), (305_419_002, None)] {
        let s = engine.open_stream(json!({ "ssrc": ssrc, "sdp": sdp }));
        let id = s["stream_id"].as_str().unwrap().to_string();
        let out = work_dir().join(format!("ts-{ssrc}.flv"));
        let viewer = spawn_viewer(engine.http, format!("/flv/{id}/{}", engine.stream_token(&id)), vec![], out.clone(), VIEW_LIMIT);
        engine.wait_subscribers(&id, 1);
        ffmpeg_push(&engine, &s, &["-f", "rtp_mpegts", "-rtp_muxer_options", &format!("ssrc={ssrc}")]);
        let info = engine.stream(&id);
        assert_eq!((info["payload"].as_str(), info["demux_errors"].as_u64(), info["width"].as_u64()), (Some("ts"), Some(0), Some(320)), "{info}");
        assert_eq!(engine.request("DELETE", &format!("/api/streams/{id}"), "").0, 200);
        viewer.join().unwrap();
        assert_eq!(ffprobe(&out), Probe { codec: "h264".into(), width: WIDTH, height: HEIGHT, frames: CLIP_FRAMES }, "sdp {sdp:?}");
    }
}

/// Opens a PS stream, plays it while `frames` are pushed, closes it; returns the FLV bytes.
fn play_pushed(engine: &Engine, frames: &[gmv::proto::frame::Frame], name: &str) -> (serde_json::Value, std::path::PathBuf) {
    let s = engine.open_stream(json!({}));
    let id = s["stream_id"].as_str().unwrap().to_string();
    let out = work_dir().join(format!("{name}.flv"));
    let viewer = spawn_viewer(engine.http, format!("/flv/{id}/{}", engine.stream_token(&id)), vec![], out.clone(), VIEW_LIMIT);
    engine.wait_subscribers(&id, 1);
    push_ps_udp(engine, &s, frames, Duration::from_millis(2));
    let info = engine.stream(&id);
    assert_eq!(engine.request("DELETE", &format!("/api/streams/{id}"), "").0, 200);
    viewer.join().unwrap();
    (info, out)
}

#[test]
fn ps_with_g711a_audio_plays_both_tracks() {
    let engine = Engine::start(2, "");
    let audio = gmv::sim::g711_frames(Codec::Pcma, &std::fs::read(alaw_clip()).unwrap(), 40);
    assert_eq!(audio.len(), 100);
    let (info, out) = play_pushed(&engine, &gmv::sim::interleave(clip_frames(), audio), "g711");
    assert_eq!(info["audio_codec"], "pcma", "{info}");
    assert_eq!(ffprobe(&out), Probe { codec: "h264".into(), width: WIDTH, height: HEIGHT, frames: CLIP_FRAMES });
    let a = ffprobe_audio(&out);
    assert_eq!((a.codec.as_str(), a.sample_rate), ("pcm_alaw", 8000));
    // The viewer joined before the first keyframe: every audio frame from then on arrives.
    assert_eq!(a.packets, 100, "{a:?}");
}

#[test]
fn ps_with_aac_audio_plays_both_tracks() {
    let engine = Engine::start(1, "");
    let audio = gmv::sim::aac_frames(&std::fs::read(aac_clip()).unwrap());
    assert!(audio.len() > 60, "{} ADTS frames", audio.len());
    let sent = audio.len();
    let (info, out) = play_pushed(&engine, &gmv::sim::interleave(clip_frames(), audio), "aac");
    assert_eq!(info["audio_codec"], "aac", "{info}");
    assert_eq!(ffprobe(&out).frames, CLIP_FRAMES);
    assert_eq!(ffprobe_audio(&out), AudioProbe { codec: "aac".into(), sample_rate: 16000, packets: sent });
}

/// HEVC in FLV uses enhanced-RTMP ('hvc1'), which this ffmpeg (5.1) cannot read; so the test
/// rebuilds an Annex B stream from the FLV's hvcC record and length-prefixed NAL units and has
/// ffprobe decode that.
#[test]
fn ps_h265_plays_as_enhanced_flv_hevc() {
    let engine = Engine::start(2, "");
    let es = std::fs::read(h265_clip()).unwrap();
    let frames = gmv::sim::frames_from_es(Codec::H265, &es, FPS);
    assert_eq!(frames.len(), CLIP_FRAMES);
    let (info, out) = play_pushed(&engine, &frames, "hevc");
    assert_eq!((info["video_codec"].as_str(), info["width"].as_u64(), info["height"].as_u64()), (Some("h265"), Some(320), Some(240)), "{info}");
    let tags = flv_tags(&std::fs::read(&out).unwrap());
    let mut annexb = Vec::new();
    let mut coded = 0;
    for (kind, _, body) in tags.iter().filter(|t| t.0 == 9) {
        let _ = kind;
        assert_eq!(&body[1..5], b"hvc1");
        match body[0] & 0x0f {
            0 => {
                // HEVCDecoderConfigurationRecord: 22 bytes, then arrays of NAL units.
                let rec = &body[5..];
                let mut i = 23;
                for _ in 0..rec[22] {
                    let count = u16::from_be_bytes([rec[i + 1], rec[i + 2]]);
                    i += 3;
                    for _ in 0..count {
                        let len = u16::from_be_bytes([rec[i], rec[i + 1]]) as usize;
                        annexb.extend_from_slice(&[0, 0, 0, 1]);
                        annexb.extend_from_slice(&rec[i + 2..i + 2 + len]);
                        i += 2 + len;
                    }
                }
            }
            1 => {
                coded += 1;
                let mut nals = &body[8..];
                while nals.len() >= 4 {
                    let len = u32::from_be_bytes(nals[..4].try_into().unwrap()) as usize;
                    annexb.extend_from_slice(&[0, 0, 0, 1]);
                    annexb.extend_from_slice(&nals[4..4 + len]);
                    nals = &nals[4 + len..];
                }
            }
            other => panic!("unexpected packet type {other}"),
        }
    }
    assert_eq!(coded, CLIP_FRAMES);
    let rebuilt = work_dir().join("rebuilt.h265");
    std::fs::write(&rebuilt, annexb).unwrap();
    assert_eq!(ffprobe(&rebuilt), Probe { codec: "hevc".into(), width: WIDTH, height: HEIGHT, frames: CLIP_FRAMES });
}

/// A viewer that stops reading is skipped to keyframes and then cut off, while another viewer
/// of the same stream gets every frame: the shard never waits on a slow socket.
#[test]
fn slow_viewer_is_cut_off_without_hurting_others() {
    let engine = Engine::start(1, "media:\n  subscriber_queue_tags_max: 16\n  subscriber_skips_max: 1\n");
    let s = engine.open_stream(json!({}));
    let id = s["stream_id"].as_str().unwrap().to_string();
    // The slow viewer: a tiny receive buffer, and it never reads past the response head.
    let slow = {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        sock.connect(&engine.http.into()).unwrap();
        let mut slow: std::net::TcpStream = sock.into();
        slow.write_all(format!("GET /flv/{id}/{} HTTP/1.1\r\nHost: x\r\n\r\n", engine.stream_token(&id)).as_bytes()).unwrap();
        slow
    };
    // The fast viewer counts what it has read, so the sender can pace itself on it: the
    // outcome then depends on queue limits, not on how the machine schedules threads.
    let out = work_dir().join("fast.flv");
    let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let fast = {
        let (http, path, out, received) = (engine.http, format!("/flv/{id}/{}", engine.stream_token(&id)), out.clone(), received.clone());
        std::thread::spawn(move || {
            use std::io::Read;
            let mut s = std::net::TcpStream::connect(http).unwrap();
            s.set_read_timeout(Some(VIEW_LIMIT)).unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).unwrap();
            let mut data = Vec::new();
            let mut buf = [0u8; 65536];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                data.extend_from_slice(&buf[..n]);
                received.store(data.len(), std::sync::atomic::Ordering::SeqCst);
            }
            let split = data.windows(4).position(|w| w == b"\r\n\r\n").map_or(data.len(), |i| i + 4);
            std::fs::write(&out, &data[split..]).unwrap();
        })
    };
    engine.wait_subscribers(&id, 2);
    // Big frames so the slow socket's buffers fill quickly.
    let frames: Vec<gmv::proto::frame::Frame> = clip_frames()
        .into_iter()
        .map(|mut f| {
            let mut d = f.data.to_vec();
            d.extend(std::iter::repeat_n(0x5a, 250_000)); // trailing bytes inside the last NAL
            f.data = d.into();
            f
        })
        .collect();
    let sock = udp_sender();
    let dest = format!("127.0.0.1:{}", s["port"]);
    let mut sent_before = 0usize;
    for (i, frame) in gmv::sim::ps_rtp_packets(&frames, s["ssrc"].as_u64().unwrap() as u32).into_iter().enumerate() {
        for p in frame {
            sock.send_to(&p, &dest).unwrap();
        }
        // A picture leaves when the next one starts: wait until the fast viewer has every
        // frame before this one (its queue never holds more than two).
        if i > 0 {
            sent_before += frames[i - 1].data.len();
            wait_for(&format!("the fast viewer to read every frame before {i}"), Duration::from_secs(20), || {
                (received.load(std::sync::atomic::Ordering::SeqCst) >= sent_before).then_some(())
            });
        }
    }
    engine.wait_subscribers(&id, 1); // the slow viewer was cut off
    // ... and its connection reset by the engine at once, though the client never reads: not
    // kept, with its buffers, until the client goes away.
    wait_for("the cut viewer's connection reset", Duration::from_secs(10), || {
        slow.take_error().ok().flatten().filter(|e| e.kind() == std::io::ErrorKind::ConnectionReset)
    });
    assert_eq!(engine.request("DELETE", &format!("/api/streams/{id}"), "").0, 200);
    fast.join().unwrap();
    assert_eq!(ffprobe(&out).frames, CLIP_FRAMES, "the fast viewer got every frame");
}

/// One address gets `media.viewers_per_address_max` viewers of a stream; another address its own.
#[test]
fn viewers_of_a_stream_are_capped_per_address() {
    use std::io::Read;
    let engine = Engine::start(1, "media:\n  viewers_per_address_max: 2\n");
    let s = engine.open_stream(json!({}));
    let id = s["stream_id"].as_str().unwrap().to_string();
    let path = format!("/flv/{id}/{}", engine.stream_token(&id));
    let open = |from: [u8; 4]| {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.bind(&std::net::SocketAddr::from((from, 0)).into()).unwrap();
        sock.connect(&engine.http.into()).unwrap();
        let mut c: std::net::TcpStream = sock.into();
        c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut head = [0u8; 12];
        c.read_exact(&mut head).unwrap();
        (String::from_utf8_lossy(&head).to_string(), c)
    };
    let (a, _a) = open([127, 0, 0, 1]);
    let (b, _b) = open([127, 0, 0, 1]);
    let (c, _c) = open([127, 0, 0, 1]);
    let (d, _d) = open([127, 0, 0, 2]);
    assert_eq!([a.as_str(), b.as_str(), c.as_str(), d.as_str()], ["HTTP/1.1 200", "HTTP/1.1 200", "HTTP/1.1 503", "HTTP/1.1 200"]);
    engine.wait_subscribers(&id, 3);
    let (_, shards) = engine.request("GET", "/api/shards", "");
    assert_eq!(shards["shards"][0]["viewers_refused_per_address"], 1, "{shards}");
}

/// The live FLV over a WebSocket (what the console's tiles use): RFC 6455 handshake, binary
/// frames whose payloads are the same FLV.
#[test]
fn live_flv_plays_over_a_websocket() {
    use std::io::{Read, Write};
    let engine = Engine::start(2, "");
    let s = engine.open_stream(serde_json::json!({}));
    let id = s["stream_id"].as_str().unwrap().to_string();
    let token = engine.stream_token(&id);
    let mut c = std::net::TcpStream::connect(engine.http).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The key and accept value of RFC 6455 §1.3.
    write!(c, "GET /flv/{id}/{token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        c.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"), "{head}");
    engine.wait_subscribers(&id, 1);
    let frames = h264_frames();
    let pusher = std::thread::spawn({
        let (port, ssrc) = (s["port"].as_u64().unwrap() as u16, s["ssrc"].as_u64().unwrap() as u32);
        move || {
            let sock = udp_sender();
            for f in gmv::sim::ps_rtp_packets(&frames, ssrc) {
                for p in f {
                    sock.send_to(&p, ("127.0.0.1", port)).unwrap();
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    });
    // Unwrap frames (server frames are unmasked) until the clip's pictures are in.
    let mut flv = Vec::new();
    while flv.len() < 13 || flv_tags(&flv).iter().filter(|t| t.0 == 9).count() < CLIP_FRAMES - 1 {
        let mut h = [0u8; 2];
        c.read_exact(&mut h).unwrap();
        assert_eq!((h[0], h[1] & 0x80), (0x82, 0), "FIN binary, unmasked");
        let len = match h[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                c.read_exact(&mut l).unwrap();
                u16::from_be_bytes(l) as usize
            }
            127 => {
                let mut l = [0u8; 8];
                c.read_exact(&mut l).unwrap();
                u64::from_be_bytes(l) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        c.read_exact(&mut payload).unwrap();
        flv.extend_from_slice(&payload);
    }
    pusher.join().unwrap();
    assert_eq!(&flv[..3], b"FLV");
    let out = work_dir().join("websocket.flv");
    std::fs::write(&out, &flv).unwrap();
    let probe = ffprobe(&out);
    assert_eq!((probe.codec.as_str(), probe.width, probe.height), ("h264", WIDTH, HEIGHT));
}
