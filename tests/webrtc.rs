//! WebRTC playback (WHEP) against headless Chromium, the browser operators use: a stream of
//! H.264 (320x240, a keyframe a second) and G.711 A-law (a 1 kHz tone), sent in real time as PS
//! over RTP, is played by a page of the engine's origin that POSTs its offer. What the browser
//! measured is checked: frames decoded at the stream's size, H.264 and PCMA negotiated, audio
//! samples received, the tone's frequency heard, the first frame soon after the offer. Refused:
//! an offer without the stream's codec (400 naming it), a token for another stream (401), not
//! SDP (415), too many offers from one address (503). Sessions a browser never completes, or
//! leaves without a DELETE, are freed by their timeouts. Needs chromium, ffmpeg and `npm ci` in
//! tests/browser (scripts/test.sh installs them).

mod common;

use common::*;
use gmv::proto::frame::{Codec, Frame};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The tone in the test clip (`alaw_clip`).
const TONE_HZ: i64 = 1000;
/// The clip's length: looped with its times moved on by this much each time.
const CLIP_90K: u64 = 4 * 90_000;

/// Sends the clip (video and A-law tone) as PS over RTP to `stream` in real time, looped, until
/// `stop`.
fn feed(engine: &Engine, stream: &Value, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let video = gmv::sim::frames_from_es(Codec::H264, &std::fs::read(h264_clip()).unwrap(), FPS);
    let audio = gmv::sim::g711_frames(Codec::Pcma, &std::fs::read(alaw_clip()).unwrap(), 40);
    let clip = gmv::sim::interleave(video, audio);
    let dest = format!("127.0.0.1:{}", stream["port"]);
    let ssrc = stream["ssrc"].as_u64().unwrap() as u32;
    let _ = engine;
    std::thread::spawn(move || {
        let sock = udp_sender();
        let mut sender = gmv::sim::PsRtpSender::new(Codec::H264, Some(Codec::Pcma), ssrc);
        let started = Instant::now();
        for round in 0u64.. {
            for f in &clip {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let shifted = Frame { pts: f.pts + round * CLIP_90K, dts: f.dts + round * CLIP_90K, ..f.clone() };
                let due = started + Duration::from_micros(shifted.pts * 100 / 9);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                for p in sender.packets(&shifted) {
                    let _ = sock.send_to(&p, &dest);
                }
            }
        }
    })
}

fn browser_play(engine: &Engine, whep_path: &str, seconds: u32) -> Value {
    browser_run(engine, whep_path, seconds, false)
}

/// `browser_play`; `vanish`: the browser is killed after playing (no DELETE, no goodbye).
fn browser_run(engine: &Engine, whep_path: &str, seconds: u32, vanish: bool) -> Value {
    whep_in_chromium(engine, whep_path, seconds, &[("VANISH", if vanish { "1" } else { "0" })])
}

/// POSTs `body` as `content_type` to `path`: the status and the body.
fn post(engine: &Engine, path: &str, content_type: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(engine.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

fn webrtc_counters(engine: &Engine) -> Value {
    let (_, m) = engine.request("GET", "/api/webrtc", "");
    m
}

#[test]
fn a_stream_plays_in_chromium_over_whep_with_its_g711_sound() {
    let engine = Engine::start(2, "");
    let stream = engine.open_stream(serde_json::json!({}));
    let id = stream["stream_id"].as_str().unwrap().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = feed(&engine, &stream, stop.clone());
    wait_for("video and audio known", Duration::from_secs(15), || {
        let s = engine.stream(&id);
        (s["video_codec"] == "h264" && s["audio_codec"] == "pcma").then_some(())
    });
    // What each output carries of this stream, as a player reads it before choosing.
    let outputs = &engine.stream(&id)["outputs"];
    assert_eq!((outputs["webrtc"]["video"].as_bool(), outputs["webrtc"]["audio"].as_bool()), (Some(true), Some(true)), "{outputs}");
    assert_eq!(outputs["hls"]["audio"], false, "{outputs}");
    assert!(outputs["flv"]["notes"][0].as_str().is_some_and(|n| n.contains("mpegts.js cannot play")), "{outputs}");
    let token = engine.stream_token(&id);
    let played = browser_play(&engine, &format!("/whep/{id}/{token}"), 4);
    assert_eq!(played["ok"], true, "{played}");
    assert_eq!(played["post_status"], 201, "{played}");
    let video = &played["video"];
    assert_eq!((video["codec"].as_str(), video["width"].as_u64(), video["height"].as_u64()), (Some("video/H264"), Some(u64::from(WIDTH)), Some(u64::from(HEIGHT))), "{played}");
    assert!(video["frames_decoded"].as_u64().unwrap_or(0) >= 50, "about 25 frames a second for 4 s: {played}");
    let audio = &played["audio"];
    assert_eq!(audio["codec"].as_str(), Some("audio/PCMA"), "{played}");
    assert!(audio["samples"].as_u64().unwrap_or(0) > 8_000, "{played}");
    let peaks: Vec<i64> = played["audio_peaks_hz"].as_array().unwrap().iter().filter_map(Value::as_i64).collect();
    let near_tone = peaks.iter().filter(|p| (**p - TONE_HZ).abs() <= 20).count();
    assert!(near_tone * 2 > peaks.len() && peaks.len() >= 4, "the 1 kHz tone is what the browser hears: {peaks:?}");
    let first = played["first_frame_ms"].as_u64().expect("a frame drawn");
    assert!(first < 1500, "first frame {first} ms after the offer: {played}");
    assert_eq!(played["delete_status"], 200, "{played}");
    wait_for("the session gone after the DELETE", Duration::from_secs(5), || (webrtc_counters(&engine)["sessions"] == 0).then_some(()));

    // A browser that vanishes (killed: no DELETE, no DTLS goodbye) is taken for gone once it
    // has been silent for the peer timeout (10 s), not before.
    let vanished = browser_run(&engine, &format!("/whep/{id}/{token}"), 1, true);
    assert!(vanished["video"]["frames_decoded"].as_u64().unwrap_or(0) > 0, "{vanished}");
    let killed = Instant::now();
    assert_eq!(webrtc_counters(&engine)["sessions"], 1, "still there right after the kill");
    wait_for("the vanished browser's session gone", Duration::from_secs(20), || (webrtc_counters(&engine)["sessions"] == 0).then_some(()));
    let gone_after = killed.elapsed();
    assert!(gone_after >= Duration::from_secs(5) && gone_after <= Duration::from_secs(15), "gone after {gone_after:?}");

    stop.store(true, Ordering::SeqCst);
    feeder.join().unwrap();
    // The figures for the closing note (`cargo test --test webrtc -- --nocapture`).
    let _ = writeln!(std::io::stderr(), "WHEP: first frame drawn {first} ms after the offer, decoded at {} ms; {}", played["first_decoded_ms"], played["video"]);
}

#[test]
fn whep_refuses_what_it_cannot_serve_and_frees_sessions_nobody_completes() {
    let engine = Engine::start(2, "");
    let stream = engine.open_stream(serde_json::json!({}));
    let id = stream["stream_id"].as_str().unwrap().to_string();
    let other = engine.open_stream(serde_json::json!({}));
    let other_id = other["stream_id"].as_str().unwrap().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = feed(&engine, &stream, stop.clone());
    wait_for("video known", Duration::from_secs(15), || (engine.stream(&id)["video_codec"] == "h264").then_some(()));
    let token = engine.stream_token(&id);
    let path = format!("/whep/{id}/{token}");
    let good = gmv::sim::browser_offer(&[(102, "H264/90000")], &[(8, "PCMA/8000")]);

    // Only VP8 offered: 400 naming H.264.
    let (status, body) = post(&engine, &path, "application/sdp", &gmv::sim::browser_offer(&[(96, "VP8/90000")], &[(111, "opus/48000/2")]));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("H.264"), "{body}");
    // Not SDP, garbage SDP, another stream's token.
    assert_eq!(post(&engine, &path, "application/json", "{}").0, 415);
    assert_eq!(post(&engine, &path, "application/sdp", "v=0\r\nnonsense").0, 400);
    let other_token = engine.stream_token(&other_id);
    assert_eq!(post(&engine, &format!("/whep/{id}/{other_token}"), "application/sdp", &good).0, 401);
    assert_eq!(post(&engine, &format!("/whep/{id}/nonsense"), "application/sdp", &good).0, 401);

    // Offers from one address that never connect: at most 16 at once, the rest 503; all freed
    // by the connect timeout.
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(post(&engine, &path, "application/sdp", &good).0);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 16, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 503).count(), 4, "{statuses:?}");
    assert_eq!(webrtc_counters(&engine)["sessions"], 16);
    let freed = wait_for("sessions freed by the connect timeout", Duration::from_secs(20), || {
        let c = webrtc_counters(&engine);
        (c["sessions"] == 0).then_some(c)
    });
    assert!(freed["connect_timeouts"].as_u64().unwrap() >= 16, "{freed}");

    // A DELETE of a session that is not there, a PATCH (trickle ICE is not needed).
    let (status, _) = post(&engine, &format!("/whep/{id}/session/00"), "application/sdp", "");
    assert_eq!(status, 405);

    stop.store(true, Ordering::SeqCst);
    feeder.join().unwrap();
}

/// A GB28181 channel played by its WHEP URL (`/whep/gb/...`, invited on demand like its FLV
/// URL): the browser decodes the camera's H.264, and the camera is asked for a keyframe when
/// the viewer connects (IFameCmd), as it is when a browser reports a lost picture (PLI). The
/// candidate is the configured `webrtc.candidate_ip`, not the address the browser sends from.
#[test]
fn a_gb_channel_plays_over_whep_and_its_camera_is_asked_for_a_keyframe() {
    use common::gb_device::*;
    use common::gb_sim::DEVICE;
    // The browser reaches the shards at a configured address (another loopback address than
    // the one it sends from, as a LAN client's differs from the server's).
    let engine = Engine::start(2, "webrtc:\n  listen_ip: 127.0.0.2\n  port: 0\n  candidate_ip: 127.0.0.2\n");
    let (events, stop, device) = registered_device(&engine);
    let token = engine.play_token(serde_json::json!({ "device_id": DEVICE, "channel_id": CHANNELS[0] }));
    let played = browser_play(&engine, &format!("/whep/gb/{DEVICE}/{}/{token}", CHANNELS[0]), 2);
    assert_eq!(played["ok"], true, "{played}");
    let video = &played["video"];
    assert_eq!((video["codec"].as_str(), video["width"].as_u64()), (Some("video/H264"), Some(u64::from(WIDTH))), "{played}");
    assert!(video["frames_decoded"].as_u64().unwrap_or(0) >= 10, "{played}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    let asked = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(DeviceEvent::Keyframe { channel }) if channel == CHANNELS[0] => break true,
            Ok(other) => seen.push(format!("{other:?}")),
            Err(_) => break false,
        }
    };
    assert!(asked, "no keyframe asked of the camera; it saw {seen:?}");
    stop.store(true, Ordering::SeqCst);
    device.join().unwrap();
}
