//! hls.js in headless Chromium plays a live gmv HLS stream, with TS and with fMP4 segments
//! (decoded video at the stream's resolution). Needs `chromium` (apt) and `npm ci` in tests/browser; .ci/run does both.

mod common;

use common::*;
use gmv::proto::frame::{Codec, Frame};
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const BROWSER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
/// Real-time pushing for this long (the browser starts near the live edge).
const LAPS: u64 = 3;

/// Serves the page and hls.js on loopback until `until`.
fn static_server(until: Instant) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        while Instant::now() < until {
            let Ok((mut s, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("/");
            let (file, ctype) = if path.starts_with("/hls.min.js") {
                (Path::new(BROWSER_DIR).join("node_modules/hls.js/dist/hls.min.js"), "application/javascript")
            } else {
                (Path::new(BROWSER_DIR).join("page.html"), "text/html")
            };
            let body = std::fs::read(file).expect("npm ci in tests/browser");
            let _ = s.write_all(
                format!("HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).as_bytes(),
            );
            let _ = s.write_all(&body);
        }
    });
    port
}

#[test]
fn hls_js_in_chromium_plays_the_live_stream() {
    hls_js_plays("index.m3u8");
}

#[test]
fn hls_js_in_chromium_plays_fmp4_segments() {
    hls_js_plays("index.fmp4.m3u8");
}

/// hls.js plays the stream's `playlist` (TS or fMP4 segments) while it is pushed live.
fn hls_js_plays(playlist: &str) {
    let until = Instant::now() + Duration::from_secs(LAPS * 4 + 50);
    let page_port = static_server(until);
    // The page comes from another origin: the engine must allow it (CORS).
    let cors = format!("  cors_origins: [\"http://127.0.0.1:{page_port}\"]\n");
    let engine = Engine::start_full(2, &cors, "hls:\n  segment_duration_s: 1\n  segments_max: 6\n", "", None);
    let s = engine.open_stream(json!({}));
    let id = s["stream_id"].as_str().unwrap().to_string();
    let clip = gmv::sim::frames_from_es(Codec::H264, &std::fs::read(h264_clip()).unwrap(), FPS);
    let span = clip.len() as u64 * 3600;
    let frames: Vec<Frame> =
        (0..LAPS).flat_map(|lap| clip.iter().map(move |f| Frame { pts: f.pts + lap * span, dts: f.dts + lap * span, ..f.clone() })).collect();
    let packets = gmv::sim::ps_rtp_packets(&frames, s["ssrc"].as_u64().unwrap() as u32);
    let dest = format!("127.0.0.1:{}", s["port"]);
    let (http, stream_path) = (engine.http, format!("/api/streams/{id}"));
    let pusher = std::thread::spawn(move || {
        // The camera starts when the player has asked for the playlist (HLS is on): however
        // long the browser takes to start, the player then sees the whole clip from the live
        // edge, and its first request waits (bounded) for the first segment.
        wait_for("hls.js to ask for the playlist", Duration::from_secs(40), || {
            let (_, body) = http_get(http, &stream_path, &[("gmv-token", TOKEN)]);
            (serde_json::from_slice::<serde_json::Value>(&body).ok()?["hls"] == true).then_some(())
        });
        let sock = udp_sender();
        let start = Instant::now();
        for (i, frame) in packets.iter().enumerate() {
            let due = start + Duration::from_millis(40 * i as u64);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            for p in frame {
                sock.send_to(p, &dest).unwrap();
            }
        }
    });
    let src = format!("http://{}/hls/{id}/{}/{playlist}", engine.http, engine.stream_token(&id));
    let page = format!("http://127.0.0.1:{page_port}/?src={src}");
    let out = Command::new("timeout")
        .args(["60", "node", &format!("{BROWSER_DIR}/hls_check.mjs"), &page])
        .output()
        .expect("node is required (and chromium: apt-get install chromium)");
    pusher.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_default();
    assert_eq!(result["ok"], true, "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!((result["width"].as_u64(), result["height"].as_u64()), (Some(WIDTH as u64), Some(HEIGHT as u64)));
}
