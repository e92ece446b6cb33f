//! ONVIF cameras (issue 30) against a simulated camera (tests/onvif/sim.py: WS-Discovery,
//! device, media, media2 and PTZ services with WS-Security and HTTP digest) whose RTSP stream
//! addresses point at GStreamer's RTSP server (tests/rtsp/serve.py): found by a probe, read,
//! made a proxy in one call, played (ffprobe decodes the FLV) and moved through the REST PTZ
//! calls, with what the camera was asked read back from its log. Needs python3, GStreamer's
//! RTSP server packages (tests/rtsp/README.md) and ffmpeg.

mod common;

use common::onvif_camera::{OnvifCamera, USER};
use common::rtsp_server::RtspServer;
use common::*;
use serde_json::{Value, json};
use std::time::Duration;

const PASSWORD: &str = "Secr3t!";

/// The simulated camera with `PASSWORD`.
fn camera(rtsp_port: u16, name: &str, extra: &[&str]) -> OnvifCamera {
    OnvifCamera::start(rtsp_port, name, PASSWORD, extra)
}

/// The calls of `op` the camera took.
fn calls(camera: &OnvifCamera, op: &str) -> Vec<Value> {
    camera.log_lines().into_iter().filter(|v| v["op"] == op).collect()
}

fn post(engine: &Engine, path: &str, body: Value) -> (u16, Value) {
    engine.request("POST", path, &body.to_string())
}

#[test]
fn an_onvif_camera_is_found_read_made_a_proxy_played_and_moved() {
    require_tool("ffprobe");
    let rtsp_port = free_tcp_port();
    let _rtsp = RtspServer::start(rtsp_port, &[]);
    // It lists a link-local IPv6 address first, as cameras do: the usable one is taken.
    let camera = camera(rtsp_port, "Front Door", &["--extra-xaddr", "http://[fe80::4619:b6ff:fe3e:baa1]/onvif/device_service"]);
    let engine = Engine::start(1, "onvif:\n  probe_wait_ms: 1000\n");

    let (status, found) = post(&engine, "/api/onvif/discover", json!({ "address": format!("127.0.0.1:{}", camera.discovery_port) }));
    assert_eq!(status, 200, "{found}");
    let cams = found["cameras"].as_array().unwrap();
    assert_eq!(cams.len(), 1, "{found}");
    assert_eq!((cams[0]["name"].as_str(), cams[0]["device_url"].as_str()), (Some("Front Door"), Some(camera.device_url().as_str())), "{found}");
    assert!(cams[0]["endpoint"].as_str().is_some_and(|e| e.starts_with("urn:uuid:")), "{found}");

    let (status, refused) = post(&engine, "/api/onvif/inspect", json!({ "device_url": camera.device_url(), "user": USER, "password": "wrong" }));
    assert_eq!((status, refused["code"].as_str()), (502, Some("camera_unauthorized")), "{refused}");
    let (status, report) = post(&engine, "/api/onvif/inspect", json!({ "device_url": camera.device_url(), "user": USER, "password": PASSWORD }));
    assert_eq!(status, 200, "{report}");
    assert!(!report["manufacturer"].as_str().unwrap_or("").is_empty(), "{report}");
    let profiles = report["profiles"].as_array().unwrap();
    let tokens: Vec<&str> = profiles.iter().filter_map(|p| p["token"].as_str()).collect();
    assert_eq!(tokens, ["main", "sub"], "{report}");
    assert_eq!(profiles[0]["stream_uri"], format!("rtsp://127.0.0.1:{rtsp_port}/h264"));
    assert_eq!((profiles[0]["width"].as_u64(), profiles[0]["ptz"].as_bool()), (Some(1920), Some(true)), "{report}");

    // One call: the main profile becomes a proxy with the camera's credentials.
    let (status, proxy) = post(&engine, "/api/onvif/proxies", json!({ "name": "door", "device_url": camera.device_url(), "user": USER, "password": PASSWORD }));
    assert_eq!(status, 201, "{proxy}");
    assert_eq!(proxy["url"], format!("rtsp://admin:***@127.0.0.1:{rtsp_port}/h264"), "the password is never shown");
    assert_eq!(proxy["onvif"], json!({ "device_url": camera.device_url(), "user": USER, "profile": "main", "ptz": true }));
    let stream_id = proxy["stream_id"].as_str().unwrap().to_string();
    wait_for("door playing", Duration::from_secs(20), || (engine.request("GET", "/api/proxies/door", "").1["state"]["status"] == "playing").then_some(()));
    engine.wait_stat(&stream_id, "keyframes", 1);
    let token = engine.stream_token(&stream_id);
    let file = work_dir().join(format!("onvif-door-{}.flv", std::process::id()));
    let (status, bytes) = spawn_viewer(engine.http, format!("/flv/{stream_id}/{token}"), vec![], file.clone(), Duration::from_secs(4)).join().unwrap();
    assert_eq!(status, 200);
    assert_four_seconds_of_test_pattern(&file, bytes);

    // PTZ as for GB channels: velocities times speed, {} stops.
    let (status, moved) = post(&engine, "/api/proxies/door/ptz", json!({ "pan": 1, "tilt": -0.5, "speed": 0.5 }));
    assert_eq!(status, 200, "{moved}");
    let moves = calls(&camera, "ContinuousMove");
    assert_eq!(moves.len(), 1, "{moves:?}");
    assert_eq!((moves[0]["profile"].as_str(), moves[0]["pan"].as_f64(), moves[0]["tilt"].as_f64()), (Some("main"), Some(0.5), Some(-0.25)), "{moves:?}");
    assert!(moves[0]["timeout"].is_string() || moves[0]["timeout"].is_number(), "a bounded move: {moves:?}");
    let (status, stopped) = post(&engine, "/api/proxies/door/ptz", json!({}));
    assert_eq!((status, stopped["stopped"].as_bool()), (200, Some(true)), "{stopped}");
    assert_eq!(calls(&camera, "Stop").len(), 1);
    let (status, bad) = post(&engine, "/api/proxies/door/ptz", json!({ "pan": 2 }));
    assert_eq!(status, 400, "{bad}");

    // Presets: listed, saved, called, removed.
    let (status, presets) = engine.request("GET", "/api/proxies/door/presets", "");
    assert_eq!(status, 200, "{presets}");
    let names: Vec<&str> = presets["presets"].as_array().unwrap().iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["Gate", "Parking"], "{presets}");
    let (status, saved) = post(&engine, "/api/proxies/door/presets", json!({ "name": "Lobby" }));
    assert_eq!(status, 201, "{saved}");
    let lobby = saved["token"].as_str().unwrap().to_string();
    assert_eq!(calls(&camera, "SetPreset")[0]["name"], "Lobby");
    let (status, _) = post(&engine, &format!("/api/proxies/door/presets/{lobby}/call"), json!({}));
    assert_eq!(status, 200);
    assert_eq!(calls(&camera, "GotoPreset")[0]["preset"], lobby.as_str());
    let (status, _) = engine.request("DELETE", &format!("/api/proxies/door/presets/{lobby}"), "");
    assert_eq!(status, 200);
    assert_eq!(calls(&camera, "RemovePreset")[0]["preset"], lobby.as_str());
    let (status, gone) = post(&engine, "/api/proxies/door/presets/99/call", json!({}));
    assert_eq!((status, gone["code"].as_str()), (502, Some("camera_error")), "{gone}");

    // The camera's password changed: PUT gives it to PTZ and to the stream URL alike.
    let put = |password: &str| engine.request("PUT", "/api/proxies/door", &json!({ "onvif": { "password": password } }).to_string());
    assert_eq!(put("wrong").0, 200);
    let (status, refused) = post(&engine, "/api/proxies/door/ptz", json!({}));
    assert_eq!((status, refused["code"].as_str()), (502, Some("camera_unauthorized")), "{refused}");
    let (status, view) = put(PASSWORD);
    assert_eq!((status, view["url"].as_str()), (200, Some(format!("rtsp://admin:***@127.0.0.1:{rtsp_port}/h264").as_str())), "{view}");
    assert_eq!(post(&engine, "/api/proxies/door/ptz", json!({})).0, 200);
    wait_for("door playing again", Duration::from_secs(20), || (engine.request("GET", "/api/proxies/door", "").1["state"]["status"] == "playing").then_some(()));

    // A proxy not made from a camera cannot be moved; a camera nobody serves is unreachable.
    let (status, _) = post(&engine, "/api/proxies", json!({ "name": "plain", "url": format!("rtsp://127.0.0.1:{rtsp_port}/h264only") }));
    assert_eq!(status, 201);
    let (status, not_onvif) = post(&engine, "/api/proxies/plain/ptz", json!({ "pan": 1 }));
    assert_eq!((status, not_onvif["code"].as_str()), (409, Some("not_onvif")), "{not_onvif}");
    let nobody = format!("http://127.0.0.1:{}/onvif/device_service", free_tcp_port());
    let (status, unreachable) = post(&engine, "/api/onvif/inspect", json!({ "device_url": nobody, "user": USER, "password": PASSWORD }));
    assert_eq!((status, unreachable["code"].as_str()), (504, Some("camera_unreachable")), "{unreachable}");
    let (status, _) = post(&engine, "/api/onvif/discover", json!({ "address": "not an address" }));
    assert_eq!(status, 400);
    for bad in ["https://127.0.0.1/onvif/device_service", "10.0.0.8", "ftp://10.0.0.8/x"] {
        let (status, v) = post(&engine, "/api/onvif/inspect", json!({ "device_url": bad, "user": USER, "password": PASSWORD }));
        assert_eq!(status, 400, "{bad}: {v}");
    }
}

/// A camera that takes only HTTP digest (SHA-256 preferred, as newer Hikvision firmware
/// offers), and one whose clock runs an hour ahead and takes only WS-Security: both read.
#[test]
fn digest_only_cameras_and_cameras_an_hour_off_are_read() {
    let rtsp_port = free_tcp_port();
    let digest = camera(rtsp_port, "Digest Cam", &["--auth", "digest", "--digest-alg", "SHA-256,MD5"]);
    let skewed = camera(rtsp_port, "Skewed Cam", &["--auth", "wsse", "--clock-offset", "3600"]);
    let engine = Engine::start(1, "");
    for cam in [&digest, &skewed] {
        let (status, report) = post(&engine, "/api/onvif/inspect", json!({ "device_url": cam.device_url(), "user": USER, "password": PASSWORD }));
        assert_eq!(status, 200, "{report}");
        assert_eq!(report["profiles"].as_array().map(Vec::len), Some(2), "{report}");
        let (status, refused) = post(&engine, "/api/onvif/inspect", json!({ "device_url": cam.device_url(), "user": USER, "password": "wrong" }));
        assert_eq!((status, refused["code"].as_str()), (502, Some("camera_unauthorized")), "{refused}");
    }
    // The skewed camera saw no token out of its time window.
    let skew_refusals = std::fs::read_to_string(&skewed.log).unwrap_or_default().lines().filter(|l| l.contains("wsse_time_skew")).count();
    assert_eq!(skew_refusals, 0);
}
