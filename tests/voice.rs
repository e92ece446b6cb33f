//! Voice broadcast (issue 27) end to end: a WAV announcement made by ffmpeg is POSTed for a
//! channel of the simulated device, which answers the Broadcast command and INVITEs gmv for
//! the audio as cameras do; the RTP it receives is checked on the wire (payload type 8, its
//! own SSRC, 20 ms packets at pace) and decoded by ffmpeg, and the tone in it is measured.
//! The announcement's end brings the BYE; a stop does too; refusals are explained.

mod common;

use common::gb_device::*;
use common::gb_sim::DEVICE;
use common::*;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A WAV announcement: `seconds` of an `hz` tone, 16-bit PCM at 8 kHz mono, by ffmpeg.
fn announcement(hz: u32, seconds: u32) -> Vec<u8> {
    require_tool("ffmpeg");
    let path = work_dir().join(format!("announcement-{hz}-{seconds}.wav"));
    let source = format!("sine=frequency={hz}:sample_rate=8000");
    let status = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", &source, "-t", &seconds.to_string(), "-c:a", "pcm_s16le", "-ac", "1", "-f", "wav"])
        .arg(&path)
        .status()
        .expect("run ffmpeg");
    assert!(status.success());
    std::fs::read(path).unwrap()
}

/// A-law bytes decoded by ffmpeg to 16-bit samples.
fn ffmpeg_decode_alaw(alaw: &[u8]) -> Vec<i16> {
    let input = work_dir().join("broadcast-received.alaw");
    std::fs::write(&input, alaw).unwrap();
    let out = std::process::Command::new("ffmpeg").args(["-v", "error", "-f", "alaw", "-ar", "8000", "-ac", "1", "-i"]).arg(&input).args(["-f", "s16le", "-"]).output().unwrap();
    assert!(out.status.success());
    out.stdout.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect()
}

/// The power of `hz` in `samples` (8 kHz) against their total power: near 1 for a pure tone.
fn tone_share(samples: &[i16], hz: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * hz / 8000.0;
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s = f64::from(x) + 2.0 * w.cos() * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let power = s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2;
    let total: f64 = samples.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    2.0 * power / (samples.len() as f64 * total.max(1.0))
}

fn post_wav(engine: &Engine, channel: &str, wav: &[u8]) -> (u16, serde_json::Value) {
    let path = format!("/api/devices/{DEVICE}/channels/{channel}/broadcast");
    let (status, text) = engine.try_request("POST", &path, &[("gmv-token", TOKEN), ("content-type", "audio/wav")], wav).expect("POST");
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
}

#[test]
fn an_announcement_reaches_the_device_as_pcma_at_pace_and_ends_with_a_bye() {
    let engine = Engine::start(1, "");
    let (events, stop, device) = registered_device(&engine);
    let channel = CHANNELS[1];
    let wav = announcement(800, 2);

    let posted = Instant::now();
    let (status, v) = post_wav(&engine, channel, &wav);
    assert_eq!(status, 200, "{v}");
    let b = &v["broadcast"];
    assert_eq!((b["state"].as_str(), b["codec"].as_str(), b["ssrc"].as_u64()), (Some("sending"), Some("pcma"), Some(100_000_123)), "{v}");

    // The device's view: our answer, then the audio, then the BYE.
    let mut sdp = None;
    let mut packets = Vec::new();
    let mut bye_at = None;
    let deadline = Instant::now() + Duration::from_secs(15);
    while bye_at.is_none() && Instant::now() < deadline {
        match events.recv_timeout(Duration::from_millis(200)) {
            Ok(DeviceEvent::BroadcastAnswered { sdp: s }) => sdp = Some(s),
            Ok(DeviceEvent::BroadcastRtp { pt, ssrc, payload }) => packets.push((Instant::now(), pt, ssrc, payload)),
            Ok(DeviceEvent::Bye { channel: c }) if c == channel => bye_at = Some(Instant::now()),
            _ => {}
        }
    }
    let sdp = sdp.expect("the device's INVITE answered");
    for line in ["m=audio ", " RTP/AVP 8", "a=rtpmap:8 PCMA/8000", "a=sendonly", "y=0100000123"] {
        assert!(sdp.contains(line), "{line} in {sdp}");
    }
    let bye_at = bye_at.expect("a BYE at the announcement's end");
    assert!(packets.iter().all(|(_, pt, ssrc, _)| (*pt, *ssrc) == (8, 100_000_123)), "PCMA under the device's SSRC");
    let alaw: Vec<u8> = packets.iter().flat_map(|(_, _, _, p)| p.iter().copied()).collect();
    // 2 s of audio: all of it (a packet lost on loopback at most), 160 samples a packet.
    assert!((15_800..=16_000).contains(&alaw.len()), "{} samples", alaw.len());
    assert!(packets.iter().all(|(_, _, _, p)| p.len() == 160), "20 ms packets");
    // At the audio's pace, not in a burst: the first to the last packet about 2 s apart.
    let span = packets.last().unwrap().0 - packets[0].0;
    assert!(span >= Duration::from_millis(1_700), "sent over {span:?}");
    assert!(bye_at - posted < Duration::from_secs(6), "the BYE soon after the end");
    let samples = ffmpeg_decode_alaw(&alaw);
    let (at, off) = (tone_share(&samples, 800.0), tone_share(&samples, 1_200.0));
    assert!(at > 0.8 && off < 0.05, "the 800 Hz tone: {at:.3} at 800 Hz, {off:.3} at 1200 Hz");

    // The API's account.
    let (_, list) = engine.request("GET", "/api/broadcasts", "");
    let ended = &list["broadcasts"][0];
    assert_eq!((ended["state"].as_str(), ended["channel_id"].as_str()), (Some("ended"), Some(channel)), "{list}");
    assert_eq!(ended["why"], "the announcement played to its end", "{list}");
    stop.store(true, Ordering::SeqCst);
    device.join().unwrap();
}

#[test]
fn a_broadcast_is_stopped_by_the_api_and_refusals_say_why() {
    let engine = Engine::start(1, "");
    let (events, stop, device) = registered_device(&engine);
    let channel = CHANNELS[0];

    // What is not a broadcast: a WAV at 16 kHz, a body that is neither, an unknown device.
    let (status, v) = post_wav(&engine, channel, &{
        let mut w = announcement(800, 1);
        w[24..28].copy_from_slice(&16_000u32.to_le_bytes());
        w
    });
    assert_eq!((status, v["code"].as_str()), (400, Some("bad_audio")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("16000 Hz"), "{v}");
    let (status, v) = engine.request("POST", &format!("/api/devices/{DEVICE}/channels/{channel}/broadcast"), "{}");
    assert_eq!(status, 400, "{v}");
    let (status, _) = engine.request("POST", &format!("/api/devices/34020000001320009999/channels/{channel}/broadcast"), r#"{"stream_id": "0000000001"}"#);
    assert_eq!(status, 404);
    assert_eq!(engine.request("DELETE", &format!("/api/devices/{DEVICE}/channels/{channel}/broadcast"), "").0, 404);

    // A long announcement, stopped after a second: the device gets its BYE, the audio stops.
    let (status, v) = post_wav(&engine, channel, &announcement(800, 20));
    assert_eq!(status, 200, "{v}");
    wait_for("audio at the device", Duration::from_secs(5), || {
        events.recv_timeout(Duration::from_millis(100)).ok().filter(|e| matches!(e, DeviceEvent::BroadcastRtp { .. })).map(|_| ())
    });
    assert_eq!(engine.request("DELETE", &format!("/api/devices/{DEVICE}/channels/{channel}/broadcast"), "").0, 200);
    wait_for("the BYE", Duration::from_secs(5), || {
        events.recv_timeout(Duration::from_millis(100)).ok().filter(|e| matches!(e, DeviceEvent::Bye { .. })).map(|_| ())
    });
    let (_, list) = engine.request("GET", "/api/broadcasts", "");
    assert_eq!((list["broadcasts"][0]["state"].as_str(), list["broadcasts"][0]["why"].as_str()), (Some("ended"), Some("stopped")), "{list}");
    // The announcement's stream is gone with it (closed just after the BYE).
    wait_for("the announcement's stream closed", Duration::from_secs(5), || (engine.request("GET", "/api/streams", "").1["total"] == 0).then_some(()));
    stop.store(true, Ordering::SeqCst);
    device.join().unwrap();
}
