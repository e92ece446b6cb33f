//! Stream covers: a JPEG of the first keyframe, kept and served; on-demand snapshots;
//! H.265 says it has no cover.

mod common;

use common::*;
use gmv::proto::frame::Codec;
use serde_json::json;
use std::time::{Duration, Instant};

fn get(engine: &Engine, path: &str) -> (String, Vec<u8>) {
    http_get(engine.http, path, &[("gmv-token", TOKEN)])
}

fn push(engine: &Engine, s: &serde_json::Value, codec: Codec, clip: &std::path::Path, frames: usize) {
    let all = gmv::sim::frames_from_es(codec, &std::fs::read(clip).unwrap(), FPS);
    push_ps_udp(engine, s, &all[..frames], Duration::from_millis(2));
}

fn probe_jpeg(bytes: &[u8], name: &str) -> (String, u32, u32) {
    let path = work_dir().join(name);
    std::fs::write(&path, bytes).unwrap();
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=codec_name,width,height", "-of", "csv=p=0"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let parts: Vec<&str> = text.split(',').collect();
    (parts[0].to_string(), parts.get(1).and_then(|v| v.parse().ok()).unwrap_or(0), parts.get(2).and_then(|v| v.parse().ok()).unwrap_or(0))
}

#[test]
fn cover_from_first_keyframe_and_snapshot_on_demand() {
    let engine = Engine::start(2, "");
    let s = engine.open_stream(json!({}));
    let id = s["stream_id"].as_str().unwrap().to_string();
    assert!(get(&engine, &format!("/cover/{id}.jpg")).0.starts_with("HTTP/1.1 404"));
    push(&engine, &s, Codec::H264, h264_clip(), 30);
    let deadline = Instant::now() + Duration::from_secs(10);
    let jpeg = loop {
        let (head, body) = get(&engine, &format!("/cover/{id}.jpg"));
        if head.starts_with("HTTP/1.1 200") {
            assert!(head.contains("image/jpeg"));
            break body;
        }
        assert!(Instant::now() < deadline, "no cover: {head}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(probe_jpeg(&jpeg, "cover.jpg"), ("mjpeg".to_string(), WIDTH, HEIGHT));

    let (head, snap) = get(&engine, &format!("/api/streams/{id}/snapshot"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(probe_jpeg(&snap, "snap.jpg"), ("mjpeg".to_string(), WIDTH, HEIGHT));

    // The cover outlives the stream (kept under data_dir/covers).
    assert_eq!(engine.request("DELETE", &format!("/api/streams/{id}"), "").0, 200);
    let (head, kept) = get(&engine, &format!("/cover/{id}.jpg"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(kept, snap);
}

#[test]
fn h265_streams_say_they_have_no_cover() {
    let engine = Engine::start(1, "");
    let s = engine.open_stream(json!({}));
    let id = s["stream_id"].as_str().unwrap().to_string();
    let (head, _) = get(&engine, &format!("/api/streams/{id}/snapshot"));
    assert!(head.starts_with("HTTP/1.1 409"), "no keyframe yet: {head}");
    push(&engine, &s, Codec::H265, h265_clip(), 30);
    let (head, body) = get(&engine, &format!("/api/streams/{id}/snapshot"));
    assert!(head.starts_with("HTTP/1.1 409"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("H265"), "{}", String::from_utf8_lossy(&body));
}
