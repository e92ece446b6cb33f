//! The console's Live view (issue 28) in headless Chromium against the simulated device
//! (tests/browser/console_live_check.mjs): the device tree beside the wall with the device's name
//! before its id; two channels dragged onto tiles play; a switch to Events and back sends no new
//! play, WHEP or FLV request and the same videos go on decoding; the one-large-and-five layout;
//! a click in the tree plays in the selected tile and moves the selection to the next free one;
//! a reload brings the layout and its channels back playing; at 390 px in Chinese the tree is a
//! drawer that a tap on a channel closes, the channel playing, nothing wider than the screen; the
//! device unregistering turns its row's and its channels' dots off without a reload.
//! Screenshots in `{work_dir}/console-live-shots`. Needs chromium and `npm ci` in tests/browser
//! (scripts/test.sh installs them).

mod common;

use common::gb_device::*;
use common::gb_sim::*;
use common::*;
use serde_json::Value;
use std::io::Write;
use std::sync::atomic::Ordering;

fn assert_fits(measured: &Value, what: &str) {
    let (scroll, inner) = (measured["scroll"].as_u64().unwrap_or(u64::MAX), measured["inner"].as_u64().unwrap_or(0));
    assert!(scroll <= inner, "{what}: the page is {scroll} px wide in a {inner} px window");
}

#[test]
fn the_live_view_keeps_the_tree_beside_the_wall_and_its_tiles_playing_across_views_and_reloads() {
    let engine = Engine::start(1, "");
    let (_events, stop, device, mut camera) = registered_device_and_sender(&engine);
    let (status, v) = engine.request("POST", "/api/devices", &serde_json::json!({ "device_id": DEVICE, "name": "Front door" }).to_string());
    assert!(status == 200 || status == 201, "{status} {v}");
    let shots = work_dir().join("console-live-shots");
    std::fs::create_dir_all(&shots).unwrap();

    let url = format!("http://{}/", engine.http);
    let mut args = vec![url.as_str(), TOKEN, DEVICE];
    args.extend(CHANNELS);
    let mut run = BrowserRun::start("console_live_check.mjs", &args, &[("SHOTS_DIR", shots.to_str().unwrap())]);
    // The script says when it waits for the device to go offline; its last line is its result.
    let (mut last, mut unregistered) = (String::new(), None);
    let mut device = Some(device);
    for line in run.lines() {
        if line.trim() == "OFFLINE_NOW" {
            // The device's own thread stops (it reads the socket), then the device unregisters.
            stop.store(true, Ordering::SeqCst);
            if let Some(d) = device.take() {
                d.join().unwrap();
            }
            unregistered = Some(camera.register(PASSWORD, 0).0);
            let _ = writeln!(run.stdin, "go");
            continue;
        }
        last = line;
    }
    let v = run.result(&last);

    // The tree beside the wall, the name before the id, both dots on while the device is.
    let row = v["device_row"].as_str().unwrap();
    assert!(row.contains("Front door") && row.find("Front door") < row.find(DEVICE), "the name first, the id second: {row}");
    let beside = &v["tree_beside_wall"];
    assert!(beside["same_row"] == true && beside["tree_right"].as_f64() <= beside["wall_left"].as_f64(), "{beside}");
    assert_eq!(v["dots_on"], serde_json::json!({ "device": true, "channel": true }), "{v}");

    // Dragged: A where it was dropped (tile 1, not the first free one), B in tile 0.
    let names: Vec<&str> = v["dragged"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(&names[..3], &[&format!("cam {}", CHANNELS[1]), &format!("cam {}", CHANNELS[0]), ""], "{v}");

    // The view switch restarted nothing.
    let switch = &v["switch"];
    let before: Vec<&str> = switch["requests_before"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    let count = |part: &str| before.iter().filter(|r| r.contains(part)).count();
    assert!(count("/play") == 2 && count("/whep") >= 2, "the two plays were seen as they started (the ruler for what follows): {before:?}");
    assert_eq!(switch["new_requests"], serde_json::json!([]), "no play, WHEP or FLV request after the switch: {switch}");
    assert_eq!(switch["same_video"], serde_json::json!([true, true]), "{switch}");

    // One large and five small; a click fills the selected tile and moves on.
    let six = &v["six"];
    assert_eq!(six["tiles"].as_u64(), Some(6), "{six}");
    let (large, small) = (six["large"].as_f64().unwrap(), six["small"].as_f64().unwrap());
    assert!(large > 1.8 * small && large < 2.2 * small, "the large tile is twice a small one: {six}");
    let clicked: Vec<&str> = v["clicked"]["names"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(clicked.get(3).copied(), Some(format!("cam {}", CHANNELS[2]).as_str()), "{v}");
    assert_eq!(v["clicked"]["selected"].as_i64(), Some(4), "the selection moves to the next free tile: {v}");

    // The reload: the layout and the three channels, in their tiles.
    assert_eq!(v["reloaded"]["layout"].as_str(), Some("6"), "{v}");
    let reloaded: Vec<&str> = v["reloaded"]["names"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(&reloaded[..4], &clicked[..4], "{v}");

    // A phone, in Chinese: a drawer, closed at first, a tap plays and closes it; nothing too wide.
    let phone = &v["phone"];
    assert_eq!((phone["toggle"].as_str(), phone["tree_shown_at_first"].as_bool()), (Some("设备通道"), Some(false)), "{phone}");
    assert!(phone["hint"].as_str().unwrap().contains("拖"), "{phone}");
    assert_eq!(phone["tile0"].as_str(), Some(format!("cam {}", CHANNELS[3]).as_str()), "{phone}");
    assert!(phone["drawer"]["right"].as_f64().unwrap() <= 390.0, "{phone}");
    for (what, m) in [("drawer closed", &phone["closed"]), ("drawer open", &phone["open"]), ("after a tap", &phone["after"])] {
        assert_fits(m, what);
    }

    // Every view in Chinese: Chinese, and no English word of the console's own (protocol,
    // codec and unit names are allowed).
    let allowed = ["GB", "SIP", "UDP", "TCP", "RTP", "SSRC", "ID", "IP", "gmv", "WebRTC", "FLV", "HLS", "PTZ", "API", "RTSP", "RTMP", "ONVIF", "HTTP", "MP4", "JPEG", "CPU", "SQLite", "OBS", "MB", "KB", "Mbit", "kbit", "fps", "fMP"];
    let views = v["zh_views"].as_object().unwrap();
    assert!(views.len() >= 11, "every view walked: {views:?}");
    let mut english = Vec::new();
    for (view, found) in views {
        assert_eq!(found["chinese"], true, "{view}: {found}");
        let latin: Vec<&str> = found["latin"].as_array().unwrap().iter().filter_map(Value::as_str).filter(|w| !allowed.contains(w)).collect();
        if !latin.is_empty() {
            english.push(format!("{view}: {latin:?}"));
        }
    }
    assert!(english.is_empty(), "English left in zh-CN views: {english:?}");

    // Offline: followed without a reload.
    assert_eq!(unregistered, Some(200), "the device unregistered");
    assert!(v["offline_row"].as_str().unwrap().contains("Front door"), "{v}");
    assert_eq!(v["offline_title"].as_str(), Some("offline"), "{v}");
    for shot in ["live-desktop-dragged", "live-desktop", "live-phone-wall", "live-phone-drawer"] {
        assert!(shots.join(format!("{shot}.png")).exists(), "{shot}");
    }
}
