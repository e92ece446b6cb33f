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

    // Deleted by an operator: gone from the list and the disk.
    let file = r["file"].as_str().unwrap();
    assert_eq!(engine.request("DELETE", &format!("/api/records/{file}"), "").0, 200);
    assert!(get(&engine, url, &[("gmv-token", TOKEN)]).0.starts_with("HTTP/1.1 404"));
    assert_eq!(engine.request("GET", &format!("/api/records?stream={id}"), "").1["total"], 0);
    assert_eq!(engine.request("DELETE", &format!("/api/records/{file}"), "").0, 404);
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
    // The header announces only what the file has (video): a player waits for any track announced.
    let flv = std::fs::read(&out).unwrap();
    assert_eq!((&flv[..3], flv[4]), (&b"FLV"[..], 0x01), "video only");
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

/// The test clip sent again and again, each lap later in time, from one camera socket (the
/// stream is locked to its source) in one run of sequence numbers.
struct Laps {
    sock: std::net::UdpSocket,
    sender: std::cell::RefCell<gmv::sim::PsRtpSender>,
    clip: Vec<gmv::proto::frame::Frame>,
    to: String,
    stream_id: String,
}

impl Laps {
    fn new(stream: &serde_json::Value) -> Laps {
        let ssrc = stream["ssrc"].as_u64().unwrap() as u32;
        let sender = std::cell::RefCell::new(gmv::sim::PsRtpSender::new(Codec::H264, None, ssrc));
        let (to, stream_id) = (format!("127.0.0.1:{}", stream["port"]), stream["stream_id"].as_str().unwrap().to_string());
        Laps { sock: udp_sender(), sender, clip: h264_frames(), to, stream_id }
    }

    /// Sends lap `lap` (4 s of media in about 0.2 s); the engine has taken it all on return.
    fn push(&self, engine: &Engine, lap: u64) {
        let span = self.clip.len() as u64 * 3600;
        let before = engine.stream(&self.stream_id)["packets"].as_u64().unwrap();
        let mut sent = 0;
        for f in &self.clip {
            let f = gmv::proto::frame::Frame { pts: f.pts + lap * span, dts: f.dts + lap * span, ..f.clone() };
            for p in self.sender.borrow_mut().packets(&f) {
                self.sock.send_to(&p, &self.to).unwrap();
                sent += 1;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        engine.wait_packets(&self.stream_id, before + sent);
    }
}

/// A disk that fills up (here: a file size limit, so that writes past it fail as they do on a
/// full disk) stops the recorder at its first failed write: the API says so, the log says it
/// once, and the stream goes on for its viewers. Then the recorder starts again by itself (a
/// new file, which the limit lets through as freed space would), with no API call.
#[test]
fn a_full_disk_stops_the_recorder_says_so_once_and_it_starts_again_by_itself() {
    let engine = Engine::start_limited(1, "", "record:\n  all: true\n", "", None, Some(160 * 1024));
    let s = engine.open_stream(json!({}));
    let id = s["stream_id"].as_str().unwrap().to_string();
    let laps = Laps::new(&s);
    let push_lap = |lap: u64| laps.push(&engine, lap);
    // The file outgrows the limit within a few laps.
    const LAPS_TO_FAIL_MAX: u64 = 12;
    let mut lap = 0;
    let failed = loop {
        assert!(lap < LAPS_TO_FAIL_MAX, "the recorder never failed: {}", engine.stream(&id));
        push_lap(lap);
        lap += 1;
        let info = engine.stream(&id);
        if !info["record_error"].is_null() {
            break info;
        }
    };
    assert_eq!(failed["recording"], false, "{failed}");
    assert!(failed["record_error"].as_str().unwrap().contains(".mp4"), "{failed}");
    // More media: the stream still takes it, the recorder stays stopped and quiet for a while.
    push_lap(lap);
    push_lap(lap + 1);
    lap += 2;
    let info = engine.stream(&id);
    assert_eq!((info["recording"].as_bool(), info["frames"].as_u64() > failed["frames"].as_u64()), (Some(false), true), "{info}");
    let log = engine.log_text();
    assert_eq!(log.matches("recording stopped").count(), 1, "{log}");
    assert!(log.matches("fragment dropped").count() <= 1, "{log}");
    // Its retry (10 s after) opens a new file, which the limit lets through: recording again.
    let deadline = Instant::now() + Duration::from_secs(30);
    let resumed = loop {
        assert!(Instant::now() < deadline, "the recorder did not start again: {}", engine.stream(&id));
        push_lap(lap);
        lap += 1;
        let info = engine.stream(&id);
        if info["record_error"].is_null() && info["recording"] == true {
            break info;
        }
    };
    assert_ne!(resumed["record_file"], failed["record_file"], "a new file: {resumed}");
    assert!(engine.log_text().contains("recording tries a new file after a failed write"));
}

/// The bytes of every file in the engine's recordings directory.
fn records_bytes(engine: &Engine) -> u64 {
    let dir = engine.data_dir.join("records");
    std::fs::read_dir(dir).map(|d| d.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum()).unwrap_or(0)
}

/// Retention by space: a stream recorded in 1 s files fills past `max_used_bytes` (1 MiB) many
/// times over; the oldest closed files go, recording never stops, the directory stays near the
/// limit, and the API and an event say what went.
#[test]
fn retention_keeps_the_recordings_under_their_limit_without_stopping_the_recorder() {
    const LIMIT: u64 = 1 << 20;
    let engine = Engine::start(1, &format!("record:\n  all: true\n  rotate_s: 1\n  retention:\n    max_used_bytes: {LIMIT}\n    interval_s: 1\n"));
    let s = engine.open_stream(json!({}));
    let id = s["stream_id"].as_str().unwrap().to_string();
    let laps = Laps::new(&s);
    let mut most = 0;
    const LAPS: u64 = 60;
    for lap in 0..LAPS {
        laps.push(&engine, lap);
        let info = engine.stream(&id);
        assert!(info["record_error"].is_null() && info["recording"] == true, "lap {lap}: {info}");
        most = most.max(records_bytes(&engine));
    }
    let (_, r) = engine.request("GET", "/api/retention", "");
    let deleted = r["deleted_files_total"].as_u64().unwrap_or(0);
    assert!(deleted > 0 && r["rules"]["max_used_bytes"] == LIMIT, "{r}");
    // Recorded well past the limit all along (the files written), yet near it at any time: a
    // pass a second deletes what went over (a second of recording at most, and the files
    // being written).
    let (_, listed) = engine.request("GET", &format!("/api/records?stream={id}&limit=1000"), "");
    let written: u64 = listed["records"].as_array().unwrap().iter().map(|r| r["bytes"].as_u64().unwrap_or(0)).sum::<u64>() + r["deleted_bytes_total"].as_u64().unwrap();
    assert!(written > 2 * LIMIT, "recorded {written} bytes in all");
    assert!(most < LIMIT + LIMIT / 2, "the directory held {most} bytes at most");
    wait_for("a pass after the last lap", Duration::from_secs(5), || (records_bytes(&engine) <= LIMIT).then_some(()));
    let (_, events) = engine.request("GET", "/api/events?since=0&kind=recordings_deleted", "");
    let events = events["events"].as_array().cloned().unwrap_or_default();
    assert!(!events.is_empty() && events.iter().all(|e| e["data"]["why"] == "max_used" && e["data"]["deleted_files"].as_u64() > Some(0)), "{events:?}");
}

/// An export of a range across two files is one MP4 holding the frames of the parts in the
/// range: both whole files (100 frames), or from the GOP that reaches a point in the first
/// (75: its second GOP and the second file). Bad ranges are refused.
#[test]
fn a_range_across_two_files_exports_as_one_mp4() {
    let engine = Engine::start(1, "record:\n  rotate_s: 2\n");
    let s = engine.open_stream(json!({}));
    let id = s["stream_id"].as_str().unwrap().to_string();
    assert_eq!(engine.request("POST", &format!("/api/streams/{id}/record"), "").0, 200);
    // In real time (40 ms a frame): the files' start times are their media's.
    push_ps_udp(&engine, &s, &h264_frames(), Duration::from_millis(40));
    assert_eq!(engine.request("DELETE", &format!("/api/streams/{id}/record"), "").0, 200);
    let recs = closed_records(&engine, &id, 2);
    let frames: Vec<u64> = recs.iter().map(|r| r["frames"].as_u64().unwrap()).collect();
    assert_eq!(frames, vec![50, 50], "{recs:?}");
    let (f1, f2) = (&recs[0], &recs[1]);
    let start = f1["start_unix_ms"].as_u64().unwrap();
    let end = f2["start_unix_ms"].as_u64().unwrap() + f2["duration_ms"].as_u64().unwrap();
    let export = |from: u64, to: u64, name: &str| {
        let (head, body) = get(&engine, &format!("/api/records/export?stream={id}&from_ms={from}&to_ms={to}"), &[("gmv-token", TOKEN)]);
        assert!(head.starts_with("HTTP/1.1 200") && head.contains("Content-Disposition: attachment"), "{head}");
        let file = work_dir().join(name);
        std::fs::write(&file, body).unwrap();
        ffprobe(&file)
    };
    let whole = export(start - 5_000, end + 5_000, "export-whole.mp4");
    assert_eq!((whole.codec.as_str(), whole.frames), ("h264", 100), "{whole:?}");
    assert_eq!(export(start + 1_100, end + 5_000, "export-cut.mp4").frames, 75, "from the GOP reaching the cut");
    // Bad ranges: none, backwards, 0 s, more than 7 days, no stream named, nothing in range.
    for q in ["", "&from=10&to=5", "&from=10&to=10", "&from=0&to=2678400"] {
        let (head, _) = get(&engine, &format!("/api/records/export?stream={id}{q}"), &[("gmv-token", TOKEN)]);
        assert!(head.starts_with("HTTP/1.1 400"), "{q}: {head}");
    }
    assert!(get(&engine, "/api/records/export?from=1&to=2", &[("gmv-token", TOKEN)]).0.starts_with("HTTP/1.1 400"));
    assert!(get(&engine, &format!("/api/records/export?stream={id}&from=1&to=2"), &[("gmv-token", TOKEN)]).0.starts_with("HTTP/1.1 404"));
}
