//! The console's Sources view (视频源) in headless Chromium: a gmv with RTMP ingest on and two
//! pull proxies made through the API from an independent RTSP server (GStreamer's, tests/rtsp/
//! serve.py, asking for admin/Secr3t!): `cam` (the right password: playing) and `wrongpw` (a
//! wrong one: unauthorized); and a simulated ONVIF camera (tests/onvif/sim.py, the same user
//! and password, its streams that server's), found only by a unicast probe (multicast does not
//! reach it here). tests/browser/sources_check.mjs reads the view at desktop and
//! phone width in zh-CN and en, and with an operator key adds `gate` through the form, sees the
//! 400 for an ftp:// address explained, changes `gate` to on demand, deletes `wrongpw`, issues
//! push addresses and has ffmpeg publish to the one it read off the page, then plays that push
//! and `cam` in the wall; it finds the ONVIF camera, is told why a wrong password is refused,
//! reads its two streams, adds it as `front-door`, holds the PTZ arrow right and calls the
//! preset Parking, saves and deletes a preset; a viewer key is told why it has no form. What
//! the browser changed is read back here through the API, what the camera was asked from its
//! log. Screenshots land in target/console-sources-*.png. Needs chromium, `npm ci` in
//! tests/browser, ffmpeg, python3 and serve.py's packages (tests/rtsp/README.md).

mod common;

use common::onvif_camera::OnvifCamera;
use common::rtsp_server::RtspServer;
use common::*;
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;

const BROWSER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
const SHOTS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target");
const OPERATOR_KEY: &str = "console-sources-operator-key";
const VIEWER_KEY: &str = "console-sources-viewer-key";
/// The RTSP server's and the ONVIF camera's password (user admin), as a real camera has one.
const PASSWORD: &str = "Secr3t!";

/// The PTZ calls the camera took, in order (its log's lines other than refused logins).
fn ptz_calls(camera: &OnvifCamera) -> Vec<Value> {
    camera.log_lines().into_iter().filter(|v| v["op"] != "auth_failed").collect()
}

fn proxy(engine: &Engine, name: &str) -> (u16, Value) {
    engine.request("GET", &format!("/api/proxies/{name}"), "")
}

fn wait_status(engine: &Engine, name: &str, status: &str) -> Value {
    wait_for(&format!("proxy {name} {status}"), Duration::from_secs(20), || {
        let (_, p) = proxy(engine, name);
        (p["state"]["status"] == status).then_some(p)
    })
}

#[test]
fn the_console_shows_changes_and_plays_pull_proxies_and_rtmp_pushes() {
    require_tool("ffmpeg");
    let rtsp_port = free_tcp_port();
    let _server = RtspServer::start(rtsp_port, &["--user", "admin", "--password", PASSWORD]);
    let camera = OnvifCamera::start(rtsp_port, "Front Door", PASSWORD, &[]);
    let rtmp_port = free_tcp_port();
    let keys = format!(
        "  api_keys: [{{name: admin, role: admin, sha256: \"{}\"}}, {{name: op, role: operator, sha256: \"{}\"}}, {{name: look, role: viewer, sha256: \"{}\"}}]\n",
        gmv::auth::key_hash(TOKEN),
        gmv::auth::key_hash(OPERATOR_KEY),
        gmv::auth::key_hash(VIEWER_KEY)
    );
    let engine =
        Engine::start_full(1, &keys, &format!("rtmp:\n  listen: \"127.0.0.1:{rtmp_port}\"\nonvif:\n  probe_wait_ms: 1000\n"), "", None);
    for (name, password, path) in [("cam", PASSWORD, "h264"), ("wrongpw", "wrong", "h264only")] {
        let url = format!("rtsp://admin:{password}@127.0.0.1:{rtsp_port}/{path}");
        let body = json!({ "name": name, "url": url, "transport": "tcp", "mode": "always" });
        let (status, v) = engine.request("POST", "/api/proxies", &body.to_string());
        assert_eq!(status, 201, "{v}");
    }
    wait_status(&engine, "cam", "playing");
    let wrong = wait_status(&engine, "wrongpw", "unauthorized");

    let out = Command::new("node")
        .arg(format!("{BROWSER_DIR}/sources_check.mjs"))
        .arg(format!("http://{}/", engine.http))
        .args([OPERATOR_KEY, VIEWER_KEY])
        .env("RTSP_PORT", rtsp_port.to_string())
        .env("RTMP_PORT", rtmp_port.to_string())
        .env("RTSP_PASSWORD", PASSWORD)
        .env("ONVIF_PROBE", format!("127.0.0.1:{}", camera.discovery_port))
        .env("ONVIF_DEVICE", camera.device_url())
        .env("ONVIF_NOBODY", format!("http://127.0.0.1:{}/onvif/device_service", free_tcp_port()))
        .env("SHOTS_DIR", SHOTS_DIR)
        .current_dir(BROWSER_DIR)
        .output()
        .expect("node (npm ci in tests/browser)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result: Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap_or_default();
    let (_, rtmp) = engine.request("GET", "/api/rtmp", "");
    assert_eq!(
        result["ok"],
        true,
        "{stdout}\n{}\nwrongpw: {wrong}\nrtmp: {rtmp}\nlog:\n{}",
        String::from_utf8_lossy(&out.stderr),
        engine.log_text().lines().rev().take(40).collect::<Vec<_>>().join("\n")
    );
    assert_eq!(result["steps"], json!(["desktop-zh", "desktop-en", "phone-zh", "phone-en", "viewer"]), "{result}");
    // The explanations read as the operator's language has them.
    assert!(result["zh"]["error"].as_str().unwrap().contains("密码"), "{result}");
    assert!(result["en"]["error"].as_str().unwrap().contains("password"), "{result}");
    assert!(result["zh"]["ftp"].as_str().unwrap().contains("ftp://"), "{result}");
    assert!(result["viewer"]["zh"].as_str().unwrap().contains("操作员"), "{result}");
    // The ONVIF camera's refusal and an unreachable camera, explained with what to check.
    assert!(result["zh"]["onvif"]["refused"].as_str().unwrap().contains("用户名或密码"), "{result}");
    assert!(result["en"]["onvif"]["unreachable"].as_str().unwrap().contains("connection refused"), "{result}");

    // What the camera was asked from the page: the hold of the right arrow (a move to the right,
    // then its stop), the preset Parking (token 2), a preset saved and deleted; nothing else moved.
    let calls = ptz_calls(&camera);
    let ops: Vec<&str> = calls.iter().filter_map(|c| c["op"].as_str()).filter(|op| *op != "GetPresets").collect();
    assert_eq!(ops, ["ContinuousMove", "Stop", "GotoPreset", "SetPreset", "RemovePreset"], "{calls:?}");
    let find = |op: &str| calls.iter().find(|c| c["op"] == op).unwrap();
    let moved = find("ContinuousMove");
    assert!(moved["pan"].as_f64() > Some(0.0), "{moved}");
    assert_eq!((moved["tilt"].as_f64(), moved["zoom"].as_f64(), moved["profile"].as_str()), (Some(0.0), Some(0.0), Some("main")), "{moved}");
    assert_eq!(find("GotoPreset")["preset"], "2", "{calls:?}");
    assert_eq!(find("SetPreset")["name"], "Lobby", "{calls:?}");
    assert_eq!(find("RemovePreset")["preset"], find("SetPreset")["preset"], "{calls:?}");
    assert!(calls.iter().all(|c| c.get("fault").is_none()), "{calls:?}");

    // What the browser changed, as the API has it: gate added over UDP and made on demand,
    // wrongpw deleted, cam as it was, nothing of the refused ftp:// proxy.
    let (_, list) = engine.request("GET", "/api/proxies", "");
    let names: Vec<&str> = list["proxies"].as_array().unwrap().iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["cam", "front-door", "gate"], "{list}");
    // The camera's proxy: its main stream with the camera's user and password, PTZ kept.
    let (_, door) = proxy(&engine, "front-door");
    assert_eq!(door["url"], format!("rtsp://admin:***@127.0.0.1:{rtsp_port}/h264"), "{door}");
    assert_eq!(door["onvif"], json!({ "device_url": camera.device_url(), "user": "admin", "profile": "main", "ptz": true }), "{door}");
    assert_eq!((door["mode"].as_str(), door["state"]["status"].as_str()), (Some("always"), Some("playing")), "{door}");
    let (_, gate) = proxy(&engine, "gate");
    assert_eq!((gate["transport"].as_str(), gate["mode"].as_str(), gate["idle_s"].as_u64()), (Some("udp"), Some("on_demand"), Some(15)), "{gate}");
    assert_eq!(gate["url"], format!("rtsp://admin:***@127.0.0.1:{rtsp_port}/h264"), "{gate}");
    // Changed, it starts over: on demand and nobody watches, so not dialled.
    assert_eq!(gate["state"]["status"], "idle", "{gate}");
    assert_eq!(proxy(&engine, "wrongpw").0, 404);
    assert_eq!(proxy(&engine, "bad").0, 404);
    let (_, cam) = proxy(&engine, "cam");
    assert_eq!((cam["mode"].as_str(), cam["state"]["status"].as_str()), (Some("always"), Some("playing")), "{cam}");
    // The page's push address was the engine's, and ffmpeg published with it (no token refused).
    let push = &result["push"];
    let url = push["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("rtmp://127.0.0.1:{rtmp_port}/live/door?token=")), "{push}");
    assert_eq!(push["clipboard"], push["url"], "{push}");
    assert!(rtmp["publishing"]["published"].as_u64() >= Some(1), "{rtmp}");
    assert_eq!(rtmp["connecting"]["refused_token"], 0, "{rtmp}");
    assert!(result["zh"]["push_tile"]["frames"].as_u64() > Some(20), "{result}");
    assert!(result["phone_zh"]["cam_tile"]["frames"].as_u64() > Some(20), "{result}");
    let shots = [
        "desktop-zh",
        "desktop-zh-refused",
        "desktop-zh-onvif-refused",
        "desktop-zh-onvif",
        "desktop-zh-wall",
        "desktop-en",
        "desktop-en-onvif",
        "phone-zh",
        "phone-zh-ptz",
        "phone-en",
        "phone-en-onvif",
        "phone-en-push",
        "viewer-en",
        "viewer-zh",
    ];
    for shot in shots {
        assert!(std::path::Path::new(SHOTS_DIR).join(format!("console-sources-{shot}.png")).exists(), "{shot}");
    }
}
