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

/// Frame 0's NAL units without its parameter sets, and those parameter sets put before the
/// next keyframe's: what a stream whose first packets were lost receives.
fn first_keyframe_without_parameter_sets(mut frames: Vec<gmv::proto::frame::Frame>) -> Vec<gmv::proto::frame::Frame> {
    use gmv::proto::h26x::{h264_nal_type, nal_units};
    let annexb = |nals: &[&[u8]]| -> Vec<u8> { nals.iter().flat_map(|n| [&[0, 0, 0, 1][..], n].concat()).collect() };
    let first = frames[0].data.clone();
    let (params, rest): (Vec<&[u8]>, Vec<&[u8]>) = nal_units(&first).partition(|n| matches!(h264_nal_type(n), 7 | 8));
    assert_eq!(params.len(), 2, "the clip's first keyframe carries SPS and PPS");
    frames[0].data = annexb(&rest).into();
    let next = 1 + frames.iter().skip(1).position(|f| f.keyframe).expect("a second keyframe");
    let later = frames[next].data.clone();
    let with_params: Vec<&[u8]> = params.iter().copied().chain(nal_units(&later).filter(|n| !matches!(h264_nal_type(n), 7 | 8))).collect();
    frames[next].data = annexb(&with_params).into();
    frames
}

/// A first keyframe that cannot be decoded (its SPS and PPS were lost) is no reason never to
/// have a cover: the next keyframe makes it.
#[test]
fn a_cover_comes_from_a_later_keyframe_when_the_first_cannot_be_decoded() {
    let engine = Engine::start(1, "");
    let s = engine.open_stream(json!({}));
    let id = s["stream_id"].as_str().unwrap().to_string();
    let frames = gmv::sim::frames_from_es(Codec::H264, &std::fs::read(h264_clip()).unwrap(), FPS);
    let frames = first_keyframe_without_parameter_sets(frames[..2 * FPS as usize].to_vec());
    push_ps_udp(&engine, &s, &frames, Duration::from_millis(2));
    let jpeg = wait_for("a cover from the second keyframe", Duration::from_secs(10), || {
        let (head, body) = get(&engine, &format!("/cover/{id}.jpg"));
        head.starts_with("HTTP/1.1 200").then_some(body)
    });
    assert_eq!(probe_jpeg(&jpeg, "cover-later.jpg"), ("mjpeg".to_string(), WIDTH, HEIGHT));
    assert!(engine.log_text().contains("no cover for stream"), "the first try failed");
}

/// An H.265 stream's cover URL says why there is none.
#[test]
fn an_h265_cover_says_why_there_is_none() {
    let engine = Engine::start(1, "");
    let s = engine.open_stream(json!({}));
    let id = s["stream_id"].as_str().unwrap().to_string();
    push(&engine, &s, Codec::H265, h265_clip(), 30);
    let body = wait_for("the reason", Duration::from_secs(10), || {
        let (head, body) = get(&engine, &format!("/cover/{id}.jpg"));
        let body = String::from_utf8_lossy(&body).to_string();
        (head.starts_with("HTTP/1.1 404") && body.contains("no cover:")).then_some(body)
    });
    assert!(body.contains("H265"), "{body}");
}
