//! Frame-to-display latency measured in headless Chromium, over WebRTC (WHEP) and FLV on a
//! WebSocket: the test's camera sends pictures that carry their number (a 4x4 grid of blocks,
//! see tests/browser/latency_check.mjs), notes when each left, and the browser notes when it
//! displayed each one. p50/p95 are kept in target/latency.json for the record;
//! the test fails only when pictures are not read back or come later than a loose bound (a
//! player stuck seconds behind), not on figures a loaded machine moves. Needs chromium and
//! `npm ci` in tests/browser (.ci/run does both).

mod common;

use common::*;
use gmv::proto::frame::Codec;
use serde_json::json;
use std::io::Write;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Seconds each player is watched.
const WATCH_S: u64 = 6;
/// Pictures sent (at 25 a second): both watches, the browser's start and a margin.
const PICTURES: u32 = 25 * 30;
/// A player this far behind is broken, not slow.
const LATE_MS_MAX: f64 = 3000.0;

/// An H.264 clip whose picture `n` shows n as 12 bits plus a 4-bit check (its count of ones)
/// in a 4x4 grid of 40-pixel blocks, white for 1, at (80, 40) of 320x240.
fn numbered_clip(pictures: u32) -> Vec<u8> {
    require_tool("ffmpeg");
    let (w, h) = (WIDTH as usize, HEIGHT as usize);
    let mut child = Command::new("ffmpeg")
        .args(["-v", "error", "-f", "rawvideo", "-pix_fmt", "gray", "-s", &format!("{w}x{h}"), "-r", "25", "-i", "-"])
        .args(["-c:v", "libx264", "-pix_fmt", "yuv420p", "-bf", "0", "-g", "25", "-tune", "zerolatency", "-f", "h264", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run ffmpeg");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        for n in 0..pictures {
            let bits = (n & 0xfff) | ((n & 0xfff).count_ones() & 0xf) << 12;
            let mut picture = vec![96u8; w * h];
            for i in 0..16 {
                let (bx, by) = (80 + (i % 4) * 40, 40 + (i / 4) * 40);
                let value = if bits & (1 << i) != 0 { 235 } else { 16 };
                for y in by..by + 40 {
                    picture[y * w + bx..y * w + bx + 40].fill(value);
                }
            }
            stdin.write_all(&picture).unwrap();
        }
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success() && !out.stdout.is_empty(), "ffmpeg made no clip");
    out.stdout
}

fn unix_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64() * 1000.0
}

/// Latencies (ms) of the pictures the browser saw, each from when it was sent.
fn latencies(seen: &serde_json::Value, sent: &[f64]) -> Vec<f64> {
    let mut l: Vec<f64> = seen
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| Some(p[1].as_f64()? - sent.get(p[0].as_u64()? as usize).copied().filter(|t| *t > 0.0)?))
        .collect();
    l.sort_by(f64::total_cmp);
    l
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn frame_to_display_latency_over_webrtc_and_flv() {
    let engine = Engine::start(2, "");
    let s = engine.open_stream(json!({}));
    let id = s["stream_id"].as_str().unwrap().to_string();
    let frames = gmv::sim::frames_from_es(Codec::H264, &numbered_clip(PICTURES), FPS);
    assert_eq!(frames.len(), PICTURES as usize);
    let (port, ssrc) = (s["port"].as_u64().unwrap() as u16, s["ssrc"].as_u64().unwrap() as u32);
    // The camera: each picture at its time, its sending time noted.
    let camera = std::thread::spawn(move || {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut sender = gmv::sim::PsRtpSender::new(Codec::H264, None, ssrc);
        let mut sent = vec![0.0; frames.len()];
        let start = Instant::now();
        for (n, f) in frames.iter().enumerate() {
            let due = start + Duration::from_millis(n as u64 * 40);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            for p in sender.packets(f) {
                let _ = sock.send_to(&p, ("127.0.0.1", port));
            }
            sent[n] = unix_ms();
        }
        sent
    });
    engine.wait_stat(&id, "keyframes", 1);
    let token = engine.stream_token(&id);
    let (page, whep, flv) =
        (format!("http://{}/", engine.http), format!("http://{}/whep/{id}/{token}", engine.http), format!("ws://{}/flv/{id}/{token}", engine.http));
    let result = browser_script("latency_check.mjs", &[page.as_ref(), whep.as_ref(), flv.as_ref(), WATCH_S.to_string().as_ref()], &[]);
    let sent = camera.join().unwrap();
    assert_eq!(result["ok"], true, "{result}");
    let mut report = json!({});
    for player in ["webrtc", "flv"] {
        let l = latencies(&result[player]["seen"], &sent);
        assert!(l.len() as u64 >= WATCH_S * 25 / 2, "{player}: {} pictures read back of ~{}: {result}", l.len(), WATCH_S * 25);
        let (p50, p95) = (percentile(&l, 0.5), percentile(&l, 0.95));
        assert!(l[0] > 0.0, "{player}: shown before it was sent? {l:?}");
        assert!(p95 < LATE_MS_MAX, "{player}: p95 {p95:.0} ms");
        report[player] = json!({ "pictures": l.len(), "p50_ms": p50.round(), "p95_ms": p95.round(), "misread": result[player]["misread"] });
    }
    let _ = std::fs::write(concat!(env!("CARGO_MANIFEST_DIR"), "/target/latency.json"), report.to_string());
}
