//! Voice broadcast (issue 27) end to end: a WAV announcement made by ffmpeg is POSTed for a
//! channel of the simulated device, which answers the Broadcast command and INVITEs gmv for
//! the audio as cameras do; the RTP it receives is checked on the wire (payload type 8, its
//! own SSRC, 20 ms packets at pace) and decoded by ffmpeg, and the tone in it is measured.
//! The announcement's end brings the BYE; a stop does too; refusals are explained. A group
//! broadcast reaches three channels that each take audio their own way (raw PCMA over UDP, over
//! TCP, PS over UDP), decoded by ffmpeg. Talk: headless Chromium's microphone (a fake capture
//! device playing a tone file) over WHIP reaches the device as that tone; the browser's DELETE,
//! or its vanishing, ends the talk with a BYE. Needs ffmpeg, and for talk chromium and `npm ci`
//! in tests/browser (scripts/test.sh installs them).

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
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let path = work_dir().join(format!("broadcast-received-{}.alaw", N.fetch_add(1, Ordering::SeqCst)));
    std::fs::write(&path, alaw).unwrap();
    let out = std::process::Command::new("ffmpeg").args(["-v", "error", "-f", "alaw", "-ar", "8000", "-ac", "1", "-i"]).arg(&path).args(["-f", "s16le", "-"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect()
}

/// The audio of a PS stream as a device's decoder takes it, read here by a demuxer of the
/// test's own (ffmpeg 5 takes stream id 0xC0 for MPEG audio whatever the PSM says): the stream
/// type the PSM gives stream 0xC0, and the payloads of its PES packets, in order.
fn ps_audio(ps: &[u8]) -> (Option<u8>, Vec<u8>) {
    let (mut psm_type, mut audio, mut at) = (None, Vec::new(), 0);
    while at + 6 <= ps.len() {
        if ps[at..at + 3] != [0, 0, 1] {
            at += 1;
            continue;
        }
        let id = ps[at + 3];
        if id == 0xBA {
            // MPEG-2 pack header: 14 bytes and its stuffing.
            at += 14 + usize::from(ps.get(at + 13).map_or(0, |b| b & 7));
            continue;
        }
        let len = usize::from(u16::from_be_bytes([ps[at + 4], ps[at + 5]]));
        let body = &ps[(at + 6).min(ps.len())..(at + 6 + len).min(ps.len())];
        if id == 0xBC && body.len() >= 6 {
            // PSM: info, then the ES map (type, id, info length, info).
            let info = usize::from(u16::from_be_bytes([body[2], body[3]]));
            let mut m = 4 + info + 2;
            while m + 4 <= body.len() - 4 {
                if body[m + 1] == 0xC0 {
                    psm_type = Some(body[m]);
                }
                m += 4 + usize::from(u16::from_be_bytes([body[m + 2], body[m + 3]]));
            }
        } else if id == 0xC0 && body.len() >= 3 {
            audio.extend_from_slice(&body[3 + usize::from(body[2])..]);
        }
        at += 6 + len;
    }
    (psm_type, audio)
}

/// What one channel of the device received: the RTP (payload type, SSRC, payload), and
/// whether its BYE came.
type Received = (Vec<(u8, u32, Vec<u8>)>, bool);

/// What the device received per channel until each of `channels` had its BYE (or `within`).
fn received_until_byes(events: &std::sync::mpsc::Receiver<DeviceEvent>, channels: &[&str], within: Duration) -> std::collections::HashMap<String, Received> {
    let mut got: std::collections::HashMap<String, Received> = channels.iter().map(|c| (c.to_string(), (Vec::new(), false))).collect();
    let deadline = Instant::now() + within;
    while !got.values().all(|(_, bye)| *bye) && Instant::now() < deadline {
        match events.recv_timeout(Duration::from_millis(200)) {
            Ok(DeviceEvent::BroadcastRtp { channel, pt, ssrc, payload }) => got.entry(channel).or_default().0.push((pt, ssrc, payload)),
            Ok(DeviceEvent::Bye { channel }) => got.entry(channel).or_default().1 = true,
            _ => {}
        }
    }
    got
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

/// `tone_share` of each half second of `samples`, their median: a browser's microphone comes
/// through its resampler and jitter buffer, whose small drifts smear a long window's narrow
/// bin (a clean 1 kHz tone measured 0.99 a half second and 0.30 over 3 s).
fn tone_share_median(samples: &[i16], hz: f64) -> f64 {
    let mut shares: Vec<f64> = samples.chunks(4_000).filter(|c| c.len() == 4_000).map(|c| tone_share(c, hz)).collect();
    shares.sort_by(f64::total_cmp);
    shares.get(shares.len() / 2).copied().unwrap_or(0.0)
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
            Ok(DeviceEvent::BroadcastRtp { pt, ssrc, payload, .. }) => packets.push((Instant::now(), pt, ssrc, payload)),
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

#[test]
fn a_group_broadcast_reaches_channels_taking_pcma_over_udp_and_tcp_and_ps_from_one_announcement() {
    let engine = Engine::start(1, "");
    let (events, stop, device) = registered_device(&engine);
    // The simulated device's channels 1, 3 and 4 take raw PCMA over UDP, over TCP (listening)
    // and PS over UDP.
    let channels = [CHANNELS[0], CHANNELS[2], CHANNELS[3]];
    let query = channels.iter().map(|c| format!("{DEVICE}:{c}")).collect::<Vec<_>>().join(",");
    let (status, text) = engine.try_request("POST", &format!("/api/broadcasts?channels={query}"), &[("gmv-token", TOKEN), ("content-type", "audio/wav")], &announcement(1000, 2)).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(status, 200, "{v}");
    let codec_of = |i: usize| v["broadcasts"][i]["broadcast"]["codec"].as_str().map(str::to_string);
    assert_eq!([codec_of(0), codec_of(1), codec_of(2)].map(|c| c.unwrap_or_default()), ["pcma", "pcma", "pcma_in_ps"], "{v}");
    assert!(v["broadcasts"].as_array().unwrap().iter().all(|b| b["broadcast"]["state"] == "sending"), "{v}");
    // One announcement's stream feeds all three.
    assert_eq!(engine.request("GET", "/api/streams", "").1["total"], 1);

    let got = received_until_byes(&events, &channels, Duration::from_secs(15));
    for (i, channel) in channels.iter().enumerate() {
        let (packets, bye) = &got[*channel];
        assert!(bye, "channel {channel}: a BYE at the announcement's end");
        let ps = i == 2;
        assert!(packets.iter().all(|(pt, ssrc, _)| (*pt, *ssrc) == (if ps { 96 } else { 8 }, 100_000_123)), "channel {channel}: payload type and the device's SSRC");
        let mut bytes: Vec<u8> = packets.iter().flat_map(|(_, _, p)| p.iter().copied()).collect();
        // Raw: the A-law itself; PS: packs whose map names it G.711 A-law (stream type 0x90).
        if ps {
            let (psm_type, audio) = ps_audio(&bytes);
            assert_eq!(psm_type, Some(0x90), "channel {channel}: the PSM names the audio G.711 A-law");
            bytes = audio;
        }
        let samples = ffmpeg_decode_alaw(&bytes);
        assert!((15_600..=16_000).contains(&samples.len()), "channel {channel}: {} samples of 2 s", samples.len());
        let (at, off) = (tone_share(&samples, 1000.0), tone_share(&samples, 1_500.0));
        assert!(at > 0.8 && off < 0.05, "channel {channel}: the 1 kHz tone: {at:.3} at 1 kHz, {off:.3} at 1.5 kHz");
    }
    let (_, list) = engine.request("GET", "/api/broadcasts", "");
    let ended: Vec<_> = list["broadcasts"].as_array().unwrap().iter().filter(|b| b["state"] == "ended" && b["why"] == "the announcement played to its end").collect();
    assert_eq!(ended.len(), 3, "{list}");
    wait_for("the announcement's stream closed", Duration::from_secs(5), || (engine.request("GET", "/api/streams", "").1["total"] == 0).then_some(()));

    // A group is 1 to 32 channels, each named well.
    for bad in ["", "?channels=", "?channels=nocolon", "?channels=a:b:c"] {
        let (status, _) = engine.try_request("POST", &format!("/api/broadcasts{bad}"), &[("gmv-token", TOKEN)], b"{\"stream_id\": \"0000000001\"}").unwrap();
        assert_eq!(status, 400, "{bad}");
    }
    stop.store(true, Ordering::SeqCst);
    device.join().unwrap();
}

/// A microphone's tone for Chromium's fake capture device: 1 kHz at 48 kHz mono, by ffmpeg.
fn microphone_tone() -> std::path::PathBuf {
    require_tool("ffmpeg");
    let path = work_dir().join("microphone-1khz.wav");
    let status = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000", "-t", "10", "-c:a", "pcm_s16le", "-ac", "1", "-f", "wav"])
        .arg(&path)
        .status()
        .expect("run ffmpeg");
    assert!(status.success());
    path
}

#[test]
fn talk_from_chromiums_microphone_reaches_the_device_and_ends_with_the_browser() {
    let engine = Engine::start(1, "");
    let (events, stop, device) = registered_device(&engine);
    let tone = microphone_tone();
    let channel = CHANNELS[1];
    let path = format!("/whip/broadcast/{DEVICE}/{channel}");

    // Refused before anything starts: no key, a play token's worth of nothing, no channels.
    let offer = gmv::sim::browser_offer(&[], &[(8, "PCMA/8000")]);
    let (status, _) = engine.try_request("POST", &path, &[("content-type", "application/sdp")], offer.as_bytes()).unwrap();
    assert_eq!(status, 401);
    let (status, _) = engine.try_request("POST", "/whip/broadcast?channels=x", &[("gmv-token", TOKEN), ("content-type", "application/sdp")], offer.as_bytes()).unwrap();
    assert_eq!(status, 400);
    // An offer without PCMA: refused naming it, and its broadcast ends (no stream is left).
    let opus = gmv::sim::browser_offer(&[], &[(111, "opus/48000/2")]);
    let (status, text) = engine.try_request("POST", &path, &[("gmv-token", TOKEN), ("content-type", "application/sdp")], opus.as_bytes()).unwrap();
    assert!(status == 400 && text.contains("PCMA"), "{status} {text}");
    wait_for("the refused talk's stream closed", Duration::from_secs(10), || (engine.request("GET", "/api/streams", "").1["total"] == 0).then_some(()));
    // (the device may have INVITEd for it meanwhile: its events are not this talk's)
    wait_for("the refused talk ended", Duration::from_secs(15), || {
        let (_, list) = engine.request("GET", "/api/broadcasts", "");
        list["broadcasts"].as_array().unwrap().iter().all(|b| b["state"] == "ended").then_some(())
    });
    while events.try_recv().is_ok() {}

    // Chromium talks 3 s, then DELETEs its session.
    let out = whip_in_chromium(&engine, &path, &tone, 3, &[]);
    assert_eq!((out["ok"].as_bool(), out["post_status"].as_u64()), (Some(true), Some(201)), "{out}");
    assert_eq!(out["answer_codecs"], serde_json::json!(["PCMA"]), "{out}");
    assert_eq!(out["connection_state"], "connected", "{out}");
    assert_eq!(out["sent"]["codec"], "audio/PCMA", "{out}");
    assert!(out["sent"]["packets"].as_u64().unwrap_or(0) >= 100, "{out}");
    assert_eq!(out["delete_status"], 200, "{out}");
    assert!(out["location"].as_str().unwrap_or_default().starts_with("/whip/"), "{out}");
    let got = received_until_byes(&events, &[channel], Duration::from_secs(10));
    let (packets, bye) = &got[channel];
    assert!(bye, "the BYE once the browser left");
    assert!(packets.iter().all(|(pt, ssrc, _)| (*pt, *ssrc) == (8, 100_000_123)), "PCMA under the device's SSRC");
    let alaw: Vec<u8> = packets.iter().flat_map(|(_, _, p)| p.iter().copied()).collect();
    assert!(alaw.len() >= 8_000 * 2, "at least 2 s of the 3 s talk: {} samples", alaw.len());
    let samples = ffmpeg_decode_alaw(&alaw);
    let (at, off) = (tone_share_median(&samples, 1000.0), tone_share_median(&samples, 1_500.0));
    assert!(at > 0.8 && off < 0.05, "the microphone's 1 kHz tone: {at:.3} at 1 kHz, {off:.3} at 1.5 kHz");
    let (_, list) = engine.request("GET", "/api/broadcasts", "");
    let talk = &list["broadcasts"][0];
    assert_eq!((talk["source"].as_str(), talk["why"].as_str()), (Some("microphone"), Some("the talk ended (the browser's microphone left)")), "{list}");

    // A browser that vanishes mid-talk (killed: no DELETE, no goodbye): its silence ends the
    // session, the talk stream closes and the device gets its BYE.
    let out = whip_in_chromium(&engine, &path, &tone, 2, &[("VANISH", "1")]);
    assert_eq!((out["ok"].as_bool(), out["connection_state"].as_str()), (Some(true), Some("connected")), "{out}");
    let got = received_until_byes(&events, &[channel], Duration::from_secs(20));
    assert!(!got[channel].0.is_empty() && got[channel].1, "audio, then a BYE after the browser vanished");
    wait_for("the talk stream closed", Duration::from_secs(5), || (engine.request("GET", "/api/streams", "").1["total"] == 0).then_some(()));

    // One microphone to a group: two channels, one of them over TCP (the device listens).
    let group = [CHANNELS[0], CHANNELS[2]];
    let path = format!("/whip/broadcast?channels={}", group.map(|c| format!("{DEVICE}:{c}")).join(","));
    let out = whip_in_chromium(&engine, &path, &tone, 3, &[]);
    assert_eq!((out["post_status"].as_u64(), out["delete_status"].as_u64()), (Some(201), Some(200)), "{out}");
    let got = received_until_byes(&events, &group, Duration::from_secs(10));
    for channel in group {
        let (packets, bye) = &got[channel];
        assert!(bye, "channel {channel}: the BYE once the browser left");
        let alaw: Vec<u8> = packets.iter().flat_map(|(_, _, p)| p.iter().copied()).collect();
        let at = tone_share_median(&ffmpeg_decode_alaw(&alaw), 1000.0);
        assert!(alaw.len() >= 8_000 * 2 && at > 0.8, "channel {channel}: {} samples, {at:.3} at 1 kHz", alaw.len());
    }
    wait_for("the group's talk stream closed", Duration::from_secs(5), || (engine.request("GET", "/api/streams", "").1["total"] == 0).then_some(()));
    stop.store(true, Ordering::SeqCst);
    device.join().unwrap();
}

#[test]
fn push_to_talk_in_the_console_reaches_the_camera_and_its_sound_comes_back_in_the_tile() {
    let engine = Engine::start(1, "");
    let (events, stop, device) = registered_talking_device(&engine);
    let tone = microphone_tone();
    let channel = TALKING_CHANNEL;
    let shots = work_dir().join("shots");
    std::fs::create_dir_all(&shots).unwrap();
    let page = format!("http://{}/", engine.http);
    let args = [page.as_ref(), TOKEN.as_ref(), DEVICE.as_ref(), channel.as_ref(), tone.as_os_str(), "3".as_ref()];
    let v = browser_script("talk_console_check.mjs", &args, &[("SHOTS_DIR", shots.to_str().unwrap())]);
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["without_channel"].as_str().unwrap_or_default().contains("Select a tile"), "{v}");
    assert_eq!((v["while_talking"].as_str(), v["button_on"].as_bool()), (Some("Talking: release to stop"), Some(true)), "{v}");
    assert!(v["level_max"].as_f64().unwrap_or(0.0) > 0.1, "the meter moves with the microphone: {v}");
    assert!(v["target_while_talking"].as_str().unwrap_or_default().contains("the camera is listening"), "{v}");
    assert!(v["target_after"].as_str().unwrap_or_default().contains("ended: the talk ended"), "{v}");
    assert_eq!(v["button_zh"], "按住说话", "{v}");
    // The rest of the console speaks Chinese too (issue 28): the devices view and the wall.
    assert_eq!((v["devices_zh"]["nav"].as_str(), v["tile_zh"].as_str()), (Some("设备"), Some("空闲")), "{v}");
    assert!(v["devices_zh"]["count"].as_str().unwrap_or_default().contains("共 1 台设备"), "{v}");
    // Both ways: the camera's own sound (its 600 Hz) plays in its tile over WebRTC meanwhile.
    let peaks: Vec<u64> = v["heard"]["peaks"].as_array().map(|a| a.iter().filter_map(|p| p.as_u64()).collect()).unwrap_or_default();
    assert!(peaks.len() >= 4 && peaks.iter().all(|p| p.abs_diff(u64::from(DEVICE_SOUND_HZ)) <= 12), "the camera's tone in the tile: {v}");

    // The camera heard the microphone's tone, then got its BYE.
    let got = received_until_byes(&events, &[channel], Duration::from_secs(10));
    let (packets, bye) = &got[channel];
    assert!(bye, "the BYE once the button was released");
    let alaw: Vec<u8> = packets.iter().flat_map(|(_, _, p)| p.iter().copied()).collect();
    assert!(alaw.len() >= 8_000 * 2, "at least 2 s of the 3 s held: {} samples", alaw.len());
    let samples = ffmpeg_decode_alaw(&alaw);
    // (The console asks for echo cancellation and noise suppression, as a room's microphone
    // needs: the tone still comes through.)
    let (at, off) = (tone_share_median(&samples, 1000.0), tone_share_median(&samples, 1_500.0));
    assert!(at > 0.8 && off < 0.05, "the microphone's 1 kHz tone: {at:.3} at 1 kHz, {off:.3} at 1.5 kHz");
    stop.store(true, Ordering::SeqCst);
    device.join().unwrap();
}
