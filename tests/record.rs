//! MP4 recording end to end: start by API, push a clip, stop; list, fetch with ranges,
//! decode with ffprobe (duration within 1 s, every frame); rotation by duration.

mod common;

use common::*;
use gmv::proto::frame::Codec;
use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};

fn get(engine: &Engine, path: &str, headers: &[(&str, &str)]) -> (String, Vec<u8>) {
    http_get(engine.http, path, headers)
}

fn closed_records(engine: &Engine, stream_id: &str, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let (_, v) = engine.request("GET", &format!("/api/records?stream={stream_id}"), "");
        let recs = v["records"].as_array().cloned().unwrap_or_default();
        if recs.len() >= n && recs.iter().all(|r| r["in_progress"] == false) {
            return recs;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("recordings of {stream_id} not closed in time");
}

#[test]
fn record_by_api_then_list_fetch_and_decode() {
    let engine = Engine::start(2, "");
    let s = engine.open_stream(json!({}));
    let id = s["stream_id"].as_str().unwrap().to_string();
    assert_eq!(engine.request("POST", &format!("/api/streams/{id}/record"), "").0, 200);
    assert_eq!(engine.request("POST", "/api/streams/0000000001/record", "").0, 404);
    push_ps_udp(&engine, &s, &h264_frames(), Duration::from_millis(3));
    assert_eq!(engine.stream(&id)["recording"], true);
    assert_eq!(engine.request("DELETE", &format!("/api/streams/{id}/record"), "").0, 200);
    let recs = closed_records(&engine, &id, 1);
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(r["frames"], CLIP_FRAMES as u64);
    let duration_ms = r["duration_ms"].as_u64().unwrap();
    assert!(duration_ms.abs_diff(4000) < 1000, "{r}");
    // The listed URL carries a play token for this recording; the bare path needs a credential.
    let listed = r["url"].as_str().unwrap();
    let url = listed.split_once('?').unwrap().0;
    assert!(get(&engine, url, &[]).0.starts_with("HTTP/1.1 401"));
    assert!(get(&engine, listed, &[]).0.starts_with("HTTP/1.1 200"));
    let other = engine.play_token(json!({ "record": "0000000001_1" }));
    assert!(get(&engine, &format!("{url}?token={other}"), &[]).0.starts_with("HTTP/1.1 401"), "a token for another recording");
    let (head, body) = get(&engine, url, &[("gmv-token", TOKEN)]);
    assert!(head.starts_with("HTTP/1.1 200") && head.contains("Accept-Ranges: bytes"), "{head}");
    assert_eq!(body.len() as u64, r["bytes"].as_u64().unwrap());
    let (head, part) = get(&engine, url, &[("gmv-token", TOKEN), ("Range", "bytes=100-199")]);
    assert!(head.starts_with("HTTP/1.1 206") && head.contains(&format!("Content-Range: bytes 100-199/{}", body.len())), "{head}");
    assert_eq!(part, body[100..200]);
    let (head, _) = get(&engine, url, &[("gmv-token", TOKEN), ("Range", &format!("bytes={}-", body.len()))]);
    assert!(head.starts_with("HTTP/1.1 416"), "{head}");
    assert!(get(&engine, "/records/..%2F..%2Fetc_1.mp4", &[("gmv-token", TOKEN)]).0.starts_with("HTTP/1.1 404"));

    let local = work_dir().join("recorded.mp4");
    std::fs::write(&local, &body).unwrap();
    assert_eq!(ffprobe(&local), Probe { codec: "h264".into(), width: WIDTH, height: HEIGHT, frames: CLIP_FRAMES });
    // ffprobe straight from the server (it may use ranges).
    let out = Command::new("timeout")
        .args(["20", "ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0"])
        .arg(format!("http://{}{listed}", engine.http))
        .output()
        .unwrap();
    let d: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0.0);
    assert!((d - 4.0).abs() < 1.0, "duration over HTTP {d}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn recording_plays_back_as_flv_at_real_time_from_a_start() {
    let engine = Engine::start(1, "record:\n  all: true\n");
    let s = engine.open_stream(json!({}));
    let id = s["stream_id"].as_str().unwrap().to_string();
    push_ps_udp(&engine, &s, &h264_frames(), Duration::from_millis(3));
    assert_eq!(engine.request("DELETE", &format!("/api/streams/{id}"), "").0, 200);
    let recs = closed_records(&engine, &id, 1);
    let stem = recs[0]["file"].as_str().unwrap().trim_end_matches(".mp4").to_string();
    assert!(get(&engine, &format!("/flv/record/{stem}/wrong"), &[]).0.starts_with("HTTP/1.1 401"));
    let out = work_dir().join("playback.flv");
    let started = Instant::now();
    let viewer = spawn_viewer(engine.http, format!("{}?start=2", recs[0]["flv"].as_str().unwrap()), vec![], out.clone(), Duration::from_secs(20));
    let (status, bytes) = viewer.join().unwrap();
    let took = started.elapsed();
    assert_eq!(status, 200);
    assert!(bytes > 1000);
    // From the keyframe at 2 s: frames 50..=99, sent at the pace they were recorded.
    assert_eq!(ffprobe(&out), Probe { codec: "h264".into(), width: WIDTH, height: HEIGHT, frames: 50 });
    assert!(took >= Duration::from_millis(1500), "2 s of video took {took:?}: not real time");
}

/// A recording cut short by a crash (no sidecar, half a fragment at the end) is repaired and
/// listed at the next start.
#[test]
fn unfinished_recording_is_recovered_at_start() {
    use gmv::proto::h26x::ParamSets;
    use gmv::proto::mp4::{Fmp4Muxer, VideoConfig};
    let frames = gmv::sim::frames_from_es(Codec::H264, &std::fs::read(h264_clip()).unwrap(), FPS);
    let mut params = ParamSets::default();
    for nal in gmv::proto::h26x::nal_units(&frames[0].data) {
        params.observe(Codec::H264, nal);
    }
    let mut m = Fmp4Muxer::new(VideoConfig::from_params(Codec::H264, &params).unwrap(), None, 0);
    let mut file = m.init_segment();
    let mut fragments = Vec::new();
    for f in &frames[..80] {
        fragments.extend(m.push(f));
    }
    for f in &fragments[..2] {
        file.extend_from_slice(f);
    }
    let whole = file.len();
    file.extend_from_slice(&fragments[2][..fragments[2].len() / 2]); // the crash
    let data_dir = work_dir().join(format!("crash-{}", free_tcp_port()));
    let records = data_dir.join("records");
    std::fs::create_dir_all(&records).unwrap();
    std::fs::write(records.join("0000000042_1795000000000.mp4"), &file).unwrap();

    let engine = Engine::start_with(1, "", "", Some(data_dir));
    let recs = closed_records(&engine, "0000000042", 1);
    assert_eq!((recs[0]["frames"].as_u64(), recs[0]["duration_ms"].as_u64(), recs[0]["bytes"].as_u64()), (Some(50), Some(2000), Some(whole as u64)));
    let (_, body) = get(&engine, recs[0]["url"].as_str().unwrap(), &[("gmv-token", TOKEN)]);
    let local = work_dir().join("recovered.mp4");
    std::fs::write(&local, body).unwrap();
    assert_eq!(ffprobe(&local).frames, 50);
}

#[test]
fn record_all_rotates_files_by_duration() {
    let engine = Engine::start(1, "record:\n  all: true\n  rotate_s: 1\n");
    let s = engine.open_stream(json!({}));
    let id = s["stream_id"].as_str().unwrap().to_string();
    push_ps_udp(&engine, &s, &h264_frames(), Duration::from_millis(3));
    assert_eq!(engine.request("DELETE", &format!("/api/streams/{id}"), "").0, 200);
    let recs = closed_records(&engine, &id, 4);
    // Keyframes every second: files of 25, 25, 25 and 25 frames.
    let frames: Vec<u64> = recs.iter().map(|r| r["frames"].as_u64().unwrap()).collect();
    assert_eq!(frames, vec![25, 25, 25, 25], "{recs:?}");
    let second = recs[1]["url"].as_str().unwrap();
    let (_, body) = get(&engine, second, &[("gmv-token", TOKEN)]);
    let local = work_dir().join("rotated.mp4");
    std::fs::write(&local, body).unwrap();
    assert_eq!(ffprobe(&local).frames, 25, "each rotated file stands alone");
}

/// A disk that fills up (here: a file size limit, so that writes past it fail as they do on a
/// full disk) stops the recorder at its first failed write: the API says so, the log says it
/// once, and the stream goes on for its viewers.
#[test]
fn a_full_disk_stops_the_recorder_and_says_so_once() {
    let engine = Engine::start_limited(1, "", "record:\n  all: true\n", "", None, Some(160 * 1024));
    let s = engine.open_stream(json!({}));
    let id = s["stream_id"].as_str().unwrap().to_string();
    let clip = h264_frames();
    let span = clip.len() as u64 * 3600;
    // One camera socket throughout: the stream is locked to its source.
    let sock = udp_sender();
    // The clip again and again, later in time, in one run of sequence numbers.
    const LAPS_MAX: u64 = 14;
    let frames: Vec<_> = (0..LAPS_MAX)
        .flat_map(|lap| clip.iter().map(move |f| gmv::proto::frame::Frame { pts: f.pts + lap * span, dts: f.dts + lap * span, ..f.clone() }))
        .collect();
    let packets = gmv::sim::ps_rtp_packets(&frames, s["ssrc"].as_u64().unwrap() as u32);
    // Sends lap `lap`; the engine has taken it all when this returns.
    let push_lap = |lap: u64| {
        let lap_packets = &packets[lap as usize * clip.len()..(lap as usize + 1) * clip.len()];
        let sent: u64 = lap_packets.iter().map(|f| f.len() as u64).sum();
        let before = engine.stream(&id)["packets"].as_u64().unwrap();
        for frame in lap_packets {
            for p in frame {
                sock.send_to(p, format!("127.0.0.1:{}", s["port"])).unwrap();
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        engine.wait_packets(&id, before + sent);
    };
    // The file outgrows the limit within a few laps.
    let mut lap = 0;
    let failed = loop {
        assert!(lap < LAPS_MAX - 2, "the recorder never failed: {}", engine.stream(&id));
        push_lap(lap);
        lap += 1;
        let info = engine.stream(&id);
        if !info["record_error"].is_null() {
            break info;
        }
    };
    assert_eq!(failed["recording"], false, "{failed}");
    assert!(failed["record_error"].as_str().unwrap().contains(".mp4"), "{failed}");
    // More media: the stream still takes it, the recorder stays stopped and quiet.
    push_lap(lap);
    push_lap(lap + 1);
    let info = engine.stream(&id);
    assert_eq!((info["recording"].as_bool(), info["frames"].as_u64() > failed["frames"].as_u64()), (Some(false), true), "{info}");
    let log = engine.log_text();
    assert_eq!(log.matches("recording stopped").count(), 1, "{log}");
    assert!(log.matches("fragment dropped").count() <= 1, "{log}");
    // Asked again (once the disk is fixed), it tries afresh.
    let (status, v) = engine.request("POST", &format!("/api/streams/{id}/record"), "");
    assert_eq!((status, v["changed"].as_bool()), (200, Some(true)), "{v}");
    assert!(engine.stream(&id)["record_error"].is_null());
}
