//! The console's operator features (issue 28) in headless Chromium against the simulated
//! device (tests/browser/console_ops_check.mjs): the onboarding panel shows what a camera
//! needs (this engine's SIP server id, domain and port), adds, refuses, changes and removes a
//! device, names the registered one from its details, and shows a viewer key no form (saying
//! why); an Alarm MESSAGE from the device while the Live wall is shown raises a toast within
//! about a second and a badge; the Events view lists the history with the channel's name,
//! filters it, acknowledges the alarm with a note (an alarm_acknowledged event, also read back
//! from the history after a reload, and in Chinese), plays the channel live and the alarm's
//! clip; the preset list stays the one of the tile selected last when an earlier tile's answer
//! comes later; an up-left press at full speed reaches the device; at 390 px no view is wider
//! than the screen, in English and in Chinese. Screenshots in `{work_dir}/console-ops-shots`.
//! Needs chromium and `npm ci` in tests/browser (scripts/test.sh installs them).

mod common;

use common::gb_device::*;
use common::gb_sim::*;
use common::*;
use serde_json::Value;
use std::sync::atomic::Ordering;
const VIEWER_KEY: &str = "console-ops-viewer-key-0123456789";
/// How long after the device sent its alarm the toast may show (the brief: within a second;
/// a little more for a loaded two-core machine's scheduling).
const TOAST_WITHIN_MS: u64 = 1_500;

/// `document.documentElement.scrollWidth <= window.innerWidth` for every view measured.
fn assert_fits(measured: &Value, what: &str) {
    let views = measured.as_object().unwrap_or_else(|| panic!("{what}: {measured}"));
    for view in ["devices", "wall", "playback", "streams", "events", "nodes", "upstreams"] {
        let v = &views[view];
        let (scroll, inner) = (v["scroll"].as_u64().unwrap_or(u64::MAX), v["inner"].as_u64().unwrap_or(0));
        assert!(scroll <= inner, "{what}: the {view} view is {scroll} px wide in a {inner} px window");
    }
    let tree = &views["tree"];
    assert!(tree["rows"].as_u64().unwrap_or(0) >= 5, "{what}: the device and its four channels drawn: {tree}");
    assert_eq!(tree["overlaps"], serde_json::json!([]), "{what}: rows overlap (not measured after wrapping): {tree}");
    assert_eq!(tree["outside"], serde_json::json!([]), "{what}: row content cut off at the right: {tree}");
}

#[test]
fn the_console_onboards_cameras_raises_and_acknowledges_alarms_binds_presets_and_fits_a_phone() {
    let http_yaml = format!(
        "  api_keys: [{{name: test-admin, role: admin, sha256: \"{}\"}}, {{name: look, role: viewer, sha256: \"{}\"}}]\n",
        gmv::auth::key_hash(TOKEN),
        gmv::auth::key_hash(VIEWER_KEY)
    );
    // Alarm clips on: the alarm's channel (playing in the wall) gets one.
    let engine = Engine::start_full(1, &http_yaml, "record:\n  alarm_clip:\n    post_s: 3\n    pre_s: 2\n", "", None);
    let (events, stop, device, mut camera) = registered_device_and_sender(&engine);
    let (channel_a, channel_b) = (CHANNELS[0], CHANNELS[1]);
    let shots = work_dir().join("console-ops-shots");
    std::fs::create_dir_all(&shots).unwrap();

    let url = format!("http://{}/", engine.http);
    let mut run = BrowserRun::start("console_ops_check.mjs", &[&url, TOKEN, VIEWER_KEY, DEVICE, channel_a, channel_b], &[("SHOTS_DIR", shots.to_str().unwrap())]);
    // The script says when the wall is shown and it waits for the alarm; its last line is its result.
    let (mut last, mut sent_ms) = (String::new(), None);
    for line in run.lines() {
        if line.trim() == "ALARM_NOW" {
            let m = camera.request("MESSAGE", "ops-alarm-1", "", Some("Application/MANSCDP+xml"), &alarm_message(81, channel_b));
            camera.send(&m);
            sent_ms = Some(unix_ms());
            continue;
        }
        last = line;
    }
    let v = run.result(&last);

    // Onboarding: this engine's values, no password; copied.
    let connect = &v["connect"];
    assert_eq!(v["onboard_open_at_first"], false, "a device is registered: the panel waits to be asked for");
    assert_eq!((connect["server_id"].as_str(), connect["domain"].as_str()), (Some(SERVER), Some(DOMAIN)), "{v}");
    assert_eq!(connect["port"].as_str(), Some(engine.sip.port().to_string().as_str()), "{v}");
    assert_eq!(connect["host"].as_str(), Some("127.0.0.1"), "{v}");
    assert!(connect["transports"].as_str().unwrap().contains("UDP / TCP"), "{v}");
    let password = connect["password"].as_str().unwrap();
    assert!(password.contains("own password") && password.contains("site password") && !password.contains(PASSWORD), "{v}");
    assert!(connect["rtp"].as_str().unwrap().contains('–'), "the RTP port range: {v}");
    assert_eq!(v["copy_button"].as_str(), Some("copied"), "{v}");
    // Added, refused (the API's words, and the form's), changed, removed; the registered one named.
    assert!(v["added"].as_str().unwrap().contains("34020000001320000077 added"), "{v}");
    let row = v["provisioned_row"].as_str().unwrap();
    assert!(row.contains("Gate 7") && row.contains("its own") && row.contains("not registered yet"), "{row}");
    assert!(v["exists_error"].as_str().unwrap().contains("set up already"), "{v}");
    assert!(v["api_error"].as_str().unwrap().contains("name is 1 to 64 bytes"), "gmv's own message shown: {v}");
    assert_eq!(v["bad_id"].as_str(), Some("A device ID is 20 digits."), "{v}");
    assert!(v["edit_title"].as_str().unwrap().contains("34020000001320000077"), "{v}");
    let row = v["changed_row"].as_str().unwrap();
    assert!(row.contains("Gate 7 east") && row.contains("site password"), "{row}");
    assert!(v["remove_asks"].as_str().unwrap().contains("remove 34020000001320000077?"), "{v}");
    assert!(v["device_row"].as_str().unwrap().contains("Front door"), "{v}");
    assert!(v["details"].as_str().unwrap().contains("name Front door"), "its settings in its details: {v}");
    // A viewer sees the details and why there is no form.
    assert_eq!(v["viewer"]["server_id"].as_str(), Some(SERVER), "{v}");
    assert!(v["viewer"]["why"].as_str().unwrap().contains("admin key") && v["viewer"]["form_shown"] == false, "{v}");

    // The preset list of the tile selected last, though the other tile's answer came later.
    let race = &v["presets_race"];
    assert_eq!(race["a_answered"].as_u64(), Some(1), "{race}");
    assert_eq!(race["channel"].as_str(), Some(channel_b), "{race}");
    let items: Vec<&str> = race["items"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(items.len() == 1 && items[0].contains("only B has this"), "{race}");
    assert!(v["presets_back"].as_array().unwrap().iter().any(|i| i.as_str().unwrap_or_default().contains("only A has this")), "{v}");
    for control in ["ptz-up-left", "ptz-down-right", "ptz-near", "ptz-far", "ptz-iris-open", "ptz-iris-close", "home-set", "home-off", "ptz-speed"] {
        assert!(v["ptz_controls"].as_array().unwrap().iter().any(|c| c == control), "{control}: {v}");
    }
    // Up and left (0x0A) at full speed (pan and tilt speed 0xFF), then a stop.
    let cmds: Vec<String> = events.try_iter().filter_map(|e| if let DeviceEvent::Ptz { channel, cmd } = e { (channel == channel_b).then_some(cmd) } else { None }).collect();
    assert!(cmds.iter().any(|c| c.len() == 16 && &c[6..12] == "0AFFFF"), "an up-left press at full speed: {cmds:?}");
    assert!(cmds.iter().any(|c| c.len() == 16 && &c[6..8] == "00"), "then a stop: {cmds:?}");

    // The toast: while the wall was shown, within about a second of the device's alarm.
    let sent_ms = sent_ms.expect("the script asked for the alarm");
    let toast = &v["toast"];
    let shown = toast["shown_at_ms"].as_u64().unwrap();
    let after_ms = shown as i64 - sent_ms as i64;
    assert!((-50..=TOAST_WITHIN_MS as i64).contains(&after_ms), "the toast {after_ms} ms after the alarm was sent");
    assert_eq!(v["toast_view_wall"], true, "{v}");
    let toast_text = toast["text"].as_str().unwrap();
    assert!(toast_text.contains("Motion at the gate") && toast_text.contains(&format!("cam {channel_b}")), "{toast_text}");
    assert_eq!(v["badge"].as_str(), Some("1"), "{v}");
    let alarm = toast["id"].as_u64().unwrap();
    let (_, alarms) = engine.request("GET", "/api/events?since=0&kind=alarm", "");
    assert!(alarms["events"].as_array().unwrap().iter().any(|e| e["id"] == alarm && e["channel_id"] == channel_b), "{alarms}");

    // Events: the history (events from before the page opened), names before ids, filters.
    let kinds: Vec<&str> = v["history_kinds"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(kinds.contains(&"event-device_online") && kinds.contains(&"event-alarm"), "{kinds:?}");
    let row = v["alarm_row"].as_str().unwrap();
    assert!(row.contains("Front door") && row.contains(DEVICE) && row.contains(&format!("cam {channel_b}")) && row.contains("Motion at the gate"), "{row}");
    assert!(row.find("Front door") < row.find(DEVICE), "the name first, the id second: {row}");
    assert_eq!(v["filtered_kinds"], serde_json::json!(["event-alarm"]), "{v}");
    assert_eq!(v["filtered_devices"], serde_json::json!([DEVICE]), "{v}");
    assert!(v["device_options"].as_array().unwrap().iter().any(|o| o.as_str().unwrap_or_default().contains("Front door")), "{v}");
    // Acknowledged with a note, by the key's name: on screen, in the API, after a reload, in Chinese.
    let acked = v["acked"].as_str().unwrap();
    assert!(acked.contains("acknowledged by test-admin") && acked.contains("checked the gate"), "{acked}");
    assert_eq!(v["badge_after_ack"], false, "{v}");
    let (_, acks) = engine.request("GET", "/api/events?since=0&kind=alarm_acknowledged", "");
    let ack = &acks["events"][0];
    assert_eq!((ack["data"]["alarm_id"].as_u64(), ack["data"]["note"].as_str()), (Some(alarm), Some("checked the gate")), "{acks}");
    let from_history = v["acked_from_history"].as_str().unwrap();
    assert!(from_history.contains("acknowledged by test-admin") && from_history.contains("checked the gate"), "{from_history}");
    // Its channel live, and its clip played.
    assert!(v["live_from_alarm"].as_array().unwrap().iter().any(|n| n.as_str() == Some(&format!("cam {channel_b}"))), "{v}");
    assert!(v["clip"]["time"].as_f64().unwrap() > 0.5, "{v}");

    // Chinese.
    let zh = &v["zh"];
    assert_eq!((zh["toggle"].as_str(), zh["title"].as_str()), (Some("如何接入摄像机"), Some("接入摄像机（GB/T 28181）")), "{zh}");
    let terms: Vec<&str> = zh["terms"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(terms.contains(&"SIP 服务器编号") && terms.contains(&"SIP 服务器域") && terms.contains(&"SIP 服务器端口"), "{zh}");
    assert!(zh["password"].as_str().unwrap().contains("统一密码"), "{zh}");
    assert_eq!(zh["form_title"].as_str(), Some("添加设备"), "{zh}");
    assert!(zh["nav_events"].as_str().unwrap().starts_with("事件"), "{zh}");
    let acked = zh["acked"].as_str().unwrap();
    assert!(acked.contains("已由 test-admin") && acked.contains("确认") && acked.contains("checked the gate"), "{acked}");
    assert_eq!(zh["kind"].as_str(), Some("告警"), "{zh}");
    // No English words of the console's own in the Chinese panel (protocol and config names are allowed).
    let allowed = ["GB", "SIP", "UDP", "TCP", "RTP", "SSRC", "gmv", "sip", "password"];
    let latin: Vec<&str> = zh["latin"].as_array().unwrap().iter().filter_map(Value::as_str).filter(|w| !allowed.contains(w)).collect();
    assert!(latin.is_empty(), "English left in the Chinese onboarding panel: {latin:?}");
    // With no device left, the Devices page opens on how to connect one.
    assert_eq!(v["removed_status"].as_u64(), Some(200), "{v}");
    assert_eq!((zh["no_devices"]["count"].as_str(), zh["no_devices"]["toggle_pressed"].as_str()), (Some("显示 0 台，共 0 台设备"), Some("true")), "{zh}");

    // A phone's width: nothing wider than the screen, rows wrapped, not cut.
    assert_fits(&v["phone_en"], "390 px, English");
    assert_fits(&v["phone_zh"], "390 px, Chinese");
    for shot in ["desktop-onboarding", "desktop-toast", "desktop-events", "phone-en-devices", "phone-en-events", "phone-zh-wall"] {
        assert!(shots.join(format!("ops-{shot}.png")).exists(), "{shot}");
    }
    stop.store(true, Ordering::SeqCst);
    device.join().unwrap();
}
