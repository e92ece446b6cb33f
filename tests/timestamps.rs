//! Output timestamps stay monotonic when the input's jump: a capture that loops (its times go
//! back to the start while the sequence numbers run on) and a camera that restarts (new
//! sequence numbers, its clock somewhere else). Every output is checked: the live FLV a viewer
//! got, the HLS segments, and the MP4 recording.

mod common;

use common::*;
use gmv::proto::frame::{Codec, Frame};
use serde_json::json;
use std::process::Command;
use std::time::Duration;

/// The camera's clock after its restart: far from where it was.
const RESTART_OFFSET_90K: u64 = 1_000 * 90_000;
/// Longest step between two pictures in any output: one frame at 25 fps, with room for the
/// one-frame gap a jump becomes.
const STEP_MAX_MS: u64 = 100;

fn shifted(frames: &[Frame], by: u64) -> Vec<Frame> {
    frames.iter().map(|f| Frame { pts: f.pts + by, dts: f.dts + by, ..f.clone() }).collect()
}

/// Video decode times in ms, as ffprobe reads them from `path`.
fn video_dts_ms(path: &std::path::Path) -> Vec<u64> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v", "-show_entries", "packet=dts_time", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe");
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().trim_end_matches(',').parse::<f64>().ok()).map(|s| (s * 1000.0).round() as u64).collect()
}

fn assert_monotonic(what: &str, times: &[u64], frames: usize) {
    assert!(times.len() >= frames, "{what}: {} frames of {frames}", times.len());
    for w in times.windows(2) {
        assert!(w[1] >= w[0] && w[1] - w[0] <= STEP_MAX_MS, "{what}: {} ms then {} ms", w[0], w[1]);
    }
}

#[test]
fn a_looping_capture_and_a_restarting_camera_keep_every_output_monotonic() {
    let engine = Engine::start(1, "hls:\n  segment_duration_s: 1\n  segments_max: 20\n");
    let s = engine.open_stream(json!({}));
    let id = s["stream_id"].as_str().unwrap().to_string();
    let ssrc = s["ssrc"].as_u64().unwrap() as u32;
    let token = engine.stream_token(&id);
    assert_eq!(engine.request("POST", &format!("/api/streams/{id}/record"), "").0, 200);
    let flv = work_dir().join("timestamps.flv");
    let viewer = spawn_viewer(engine.http, format!("/flv/{id}/{token}"), vec![], flv.clone(), Duration::from_secs(40));
    engine.wait_subscribers(&id, 1);
    let hls_base = format!("/hls/{id}/{token}");
    let first = {
        let (http, path) = (engine.http, format!("{hls_base}/index.m3u8"));
        std::thread::spawn(move || http_get(http, &path, &[]))
    };
    wait_for("HLS to start", Duration::from_secs(10), || (engine.stream(&id)["hls"] == true).then_some(()));

    let clip = h264_frames();
    let dest = format!("127.0.0.1:{}", s["port"]);
    let sock = udp_sender();
    let mut sent = 0u64;
    let mut send = |sender: &mut gmv::sim::PsRtpSender, frames: &[Frame]| {
        for f in frames {
            for p in sender.packets(f) {
                sock.send_to(&p, &dest).unwrap();
                sent += 1;
            }
            std::thread::sleep(Duration::from_millis(3));
        }
    };
    // The clip, then the clip again from its start (a loop: same sender, times go back) ...
    let mut sender = gmv::sim::PsRtpSender::new(Codec::H264, None, ssrc);
    send(&mut sender, &clip);
    send(&mut sender, &clip);
    // ... then the camera restarts: sequence numbers anew, its clock far ahead.
    let mut restarted = gmv::sim::PsRtpSender::new(Codec::H264, None, ssrc);
    send(&mut restarted, &shifted(&clip, RESTART_OFFSET_90K));
    engine.wait_packets(&id, sent);
    assert_eq!(first.join().unwrap().0.split(' ').nth(1), Some("200"));

    // HLS: every listed segment, in order, read as one TS.
    let (_, playlist) = http_get(engine.http, &format!("{hls_base}/index.m3u8"), &[]);
    let playlist = String::from_utf8(playlist).unwrap();
    let mut ts = Vec::new();
    for seg in playlist.lines().filter(|l| l.ends_with(".ts")) {
        let (head, body) = http_get(engine.http, &format!("{hls_base}/{seg}"), &[]);
        assert_eq!(status_of(&head), 200, "{seg}");
        ts.extend_from_slice(&body);
    }
    let ts_path = work_dir().join("timestamps.ts");
    std::fs::write(&ts_path, &ts).unwrap();
    // Segments are cut at keyframes; the last GOP is still open.
    assert_monotonic("HLS", &video_dts_ms(&ts_path), 2 * CLIP_FRAMES);

    assert_eq!(engine.request("DELETE", &format!("/api/streams/{id}/record"), "").0, 200);
    assert_eq!(engine.request("DELETE", &format!("/api/streams/{id}"), "").0, 200);
    viewer.join().unwrap();

    // FLV: the viewer's video tags.
    let tags = flv_tags(&std::fs::read(&flv).unwrap());
    let video: Vec<u64> = tags.iter().filter(|(kind, _, body)| *kind == 9 && body.get(1) == Some(&1)).map(|(_, t, _)| u64::from(*t)).collect();
    assert_monotonic("FLV", &video, 3 * CLIP_FRAMES);
    assert_monotonic("FLV as ffprobe reads it", &video_dts_ms(&flv), 3 * CLIP_FRAMES);

    // MP4: the recording, every frame.
    let (_, v) = engine.request("GET", &format!("/api/records?stream={id}"), "");
    let record = wait_for("the recording closed", Duration::from_secs(10), || {
        let (_, v) = engine.request("GET", &format!("/api/records?stream={id}"), "");
        v["records"].as_array().and_then(|r| r.first().cloned()).filter(|r| r["in_progress"] == false)
    });
    let (_, mp4) = http_get(engine.http, record["url"].as_str().unwrap(), &[]);
    let mp4_path = work_dir().join("timestamps.mp4");
    std::fs::write(&mp4_path, &mp4).unwrap();
    let dts = video_dts_ms(&mp4_path);
    assert_monotonic("MP4", &dts, 3 * CLIP_FRAMES);
    assert_eq!(dts.len(), 3 * CLIP_FRAMES, "{v}");
}
