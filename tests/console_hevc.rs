//! The console's H.265 player (issue 26) in headless Chromium, which has no H.265 decoder of its
//! own: a simulated camera sends H.265 (320x240) with G.711 A-law sound (a 600 Hz tone); its
//! tile plays with the console's WebAssembly decoder (`wasm`: FLV over a WebSocket decoded in a
//! Worker, drawn on a canvas): the picture is 320x240, not one colour, and moves; the sound
//! comes over a sound-only WebRTC session (packets and samples received, the tone heard).
//! Closing the tile closes the WebSocket and DELETEs the WebRTC session; the stream closed by
//! the API, the tile says it ended and opens nothing again. An H.264 + G.711 camera played with
//! the FLV player shows its picture (mpegts.js told the stream has no sound) and says why it is
//! silent. Without the decoder (its script refused) the H.265 tile says it cannot play H.265 here,
//! and why. Every console string is in both catalogues. Screenshots in target/console-hevc-*.png.
//! Needs chromium and `npm ci` in tests/browser (scripts/test.sh installs them).

mod common;

use common::gb_device::*;
use common::gb_sim::DEVICE;
use common::*;
use std::path::Path;
use std::sync::atomic::Ordering;

const SHOTS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target");
/// The decoder's files as the engine must serve them: (path, content type).
const DECODER_FILES: [(&str, &str); 4] = [
    ("/console/hevc-worker.js", "text/javascript"),
    ("/console/vendor/hevc/hevcdec.js", "text/javascript"),
    ("/console/vendor/hevc/hevcdec.wasm", "application/wasm"),
    ("/console/vendor/hevc/LICENSE-hevcdec.txt", "text/plain"),
];

/// What the browser check needs, said plainly when it is missing.
fn require_browser() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(Path::new(&chromium).exists(), "{chromium} is missing: this test drives headless Chromium (apt-get install chromium; scripts/test.sh does)");
    let modules = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/node_modules/playwright-core");
    assert!(modules.is_dir(), "{} is missing: run `npm ci` in tests/browser (scripts/test.sh does)", modules.display());
}

#[test]
fn the_console_plays_h265_with_its_own_decoder_and_g711_sound_over_webrtc() {
    require_browser();
    // The clip is made before the camera is asked for it (ffmpeg takes a moment).
    let _ = (h265_clip(), device_sound_clip());
    let engine = Engine::start(1, "");
    let (_events, stop, device) = registered_hevc_device(&engine);

    // The engine serves the decoder (the page loads it only for H.265).
    let mut missing = Vec::new();
    for (path, content_type) in DECODER_FILES {
        let (head, body) = http_get(engine.http, path, &[]);
        let served = status_of(&head) == 200 && head.to_ascii_lowercase().contains(&format!("content-type: {content_type}")) && !body.is_empty();
        if !served {
            missing.push(format!("{path} ({content_type}): {}", head.lines().next().unwrap_or("no answer")));
        }
    }
    assert!(missing.is_empty(), "the engine does not serve the console's H.265 decoder (src/http/console.rs embeds it): {missing:?}");
    let env = [("SHOTS_DIR", SHOTS_DIR)];

    let page = format!("http://{}/", engine.http);
    let v = browser_script("console_hevc_check.mjs", &[page.as_ref(), DEVICE.as_ref(), HEVC_CHANNEL.as_ref(), TALKING_CHANNEL.as_ref()], &env);
    stop.store(true, Ordering::SeqCst);
    let _ = device.join();
    assert_eq!(v["ok"], true, "{v:#}");

    // The H.265 tile: the console's decoder, the picture at the stream's size, moving.
    let hevc = &v["hevc"];
    assert_eq!(hevc["player"], "wasm", "{v:#}");
    assert!(hevc["stats"].as_str().unwrap().starts_with("wasm · h265 320×240"), "the tile's figures name the player: {v:#}");
    assert_eq!((hevc["width"].as_u64(), hevc["height"].as_u64()), (Some(u64::from(WIDTH)), Some(u64::from(HEIGHT))), "{v:#}");
    assert_ne!(hevc["hash_before"], hevc["hash_after"], "the picture did not change in a second: {v:#}");
    assert!(hevc["colours"].as_u64().unwrap() > 16, "the picture is (nearly) one colour: {v:#}");
    assert!(hevc["drawn"].as_u64().unwrap() >= 10, "{v:#}");
    assert_eq!(hevc["message"], "", "nothing over a playing picture: {v:#}");
    assert_eq!(hevc["note"], "", "the sound plays, so no 'no sound': {v:#}");
    // Its sound over WebRTC, sound only: the device's tone.
    let sound = &hevc["sound"];
    assert!(sound["packets"].as_u64().unwrap() > 0 && sound["samples"].as_u64().unwrap() > 0, "{v:#}");
    assert_eq!(sound["video_transceivers"], 0, "a sound-only offer: {v:#}");
    assert!(["pcma", "pcmu"].contains(&sound["codec"].as_str().unwrap_or_default()), "{v:#}");
    let peaks: Vec<i64> = sound["peaks"].as_array().unwrap().iter().filter_map(|p| p.as_i64()).collect();
    let near = peaks.iter().filter(|p| (**p - i64::from(DEVICE_SOUND_HZ)).abs() <= 30).count();
    assert!(near * 2 > peaks.len() && !peaks.is_empty(), "the {DEVICE_SOUND_HZ} Hz tone heard: {peaks:?}");

    // Closed: its WebSocket closed, its WebRTC session deleted, the canvas gone.
    let closed = &v["closed"];
    assert_eq!(closed["ws_closed"], true, "{v:#}");
    assert_eq!(closed["whep_deleted"], true, "{v:#}");
    assert_eq!(closed["canvas"], false, "{v:#}");
    assert_eq!(closed["message"], "empty", "{v:#}");

    // The stream closed by the API: said on the tile, nothing opened again.
    let ended = &v["ended"];
    assert!(ended["message"].as_str().unwrap().starts_with("The stream ended"), "{v:#}");
    assert_eq!(ended["sockets_after"], ended["sockets_at_end"], "no reconnecting after the end: {v:#}");
    assert_eq!(ended["plays_after"], ended["plays_at_end"], "no new play after the end: {v:#}");

    // H.264 + G.711 with the FLV player: the picture plays, the tile says why it is silent.
    let flv = &v["flv"];
    assert!(flv["stats"].as_str().unwrap().starts_with("flv · h264"), "{v:#}");
    assert!(flv["frames"].as_u64().unwrap() > 10 && flv["time"].as_f64().unwrap() > 1.0, "{v:#}");
    assert_eq!((flv["width"].as_u64(), flv["height"].as_u64()), (Some(u64::from(WIDTH)), Some(u64::from(HEIGHT))), "{v:#}");
    assert!(flv["note"].as_str().unwrap().starts_with("no sound: the FLV player cannot play G.711"), "{v:#}");
    assert_eq!(flv["errors"], serde_json::json!([]), "mpegts.js errors: {v:#}");
    // Its recording in Playback: the picture, silent and saying why; the H.265 one says why not.
    let playback = &v["playback"];
    assert!(playback["frames"].as_u64().unwrap() > 20, "{v:#}");
    assert!(playback["status"].as_str().unwrap().contains("without sound"), "{v:#}");
    assert_eq!(playback["errors"], serde_json::json!([]), "mpegts.js errors: {v:#}");
    assert!(playback["hevc_status"].as_str().unwrap().starts_with("H.265 recordings cannot play here"), "{v:#}");

    // Without the decoder (its Worker script refused): said on the tile, nothing asked again.
    let unplayable = &v["unplayable"];
    assert!(unplayable["message"].as_str().unwrap().starts_with("H.265 cannot play here: this browser has no H.265 decoder"), "{v:#}");
    assert_eq!(unplayable["plays_after"], unplayable["plays_then"], "{v:#}");

    assert_eq!(v["catalogue_missing"], serde_json::json!({ "zh": [], "en": [] }), "{v:#}");
    assert_eq!(v["zh"]["player"], "auto", "{v:#}");
    assert!(v["zh"]["stats"].as_str().unwrap().starts_with("wasm · h265 320×240") && v["zh"]["stats"].as_str().unwrap().contains("帧/秒"), "{v:#}");
    for shot in ["wasm", "ended", "flv", "unplayable", "wasm-zh"] {
        assert!(Path::new(SHOTS_DIR).join(format!("console-hevc-{shot}.png")).exists(), "{shot}");
    }
}
