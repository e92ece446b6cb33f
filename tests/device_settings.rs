//! Setting a camera up through the API (接入, issue 28's onboarding): what a camera needs to
//! reach the platform (connect-info, from the running config, no password in it); a device set
//! up with a password of its own registers with that password only, and with the site's again
//! once it is cleared; its settings survive a restart; alarms are acknowledged once, by whom.

mod common;

use common::gb_sim::*;
use common::*;
use serde_json::json;

#[test]
fn a_device_set_up_with_its_own_password_registers_with_it_and_alarms_are_acknowledged_once() {
    let engine = Engine::start(1, "");
    let (status, info) = engine.request("GET", "/api/sip/connect-info", "");
    assert_eq!(status, 200, "{info}");
    assert_eq!((info["server_id"].as_str(), info["domain"].as_str()), (Some(SERVER), Some(DOMAIN)), "{info}");
    assert_eq!(info["sip_port"].as_u64(), Some(u64::from(engine.sip.port())), "{info}");
    assert_eq!((info["password_rule"].as_str(), info["site_password_set"].as_bool()), (Some("device_or_site"), Some(true)), "{info}");
    assert!(!info.to_string().contains(PASSWORD), "no password shown: {info}");

    // Set up before it ever registers: listed, not registered.
    let own = "own-pass-7";
    let (status, v) = engine.request("POST", "/api/devices", &json!({ "device_id": DEVICE, "name": "东门", "password": own, "transport": "udp", "ssrc_check": "strict" }).to_string());
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["settings"], json!({ "name": "东门", "own_password": true, "transport": "udp", "ssrc_check": "strict", "sub_stream": null }), "{v}");
    assert!(!v.to_string().contains(own), "the password is never shown");
    assert_eq!(engine.request("POST", "/api/devices", &json!({ "device_id": DEVICE }).to_string()).0, 409);
    let (status, v) = engine.request("GET", &format!("/api/devices/{DEVICE}"), "");
    assert_eq!((status, v["registered"].as_bool()), (200, Some(false)), "{v}");
    assert_eq!(engine.request("GET", "/api/device-settings", "").1["devices"][0]["device_id"], DEVICE);
    for (bad, says) in [(json!({ "device_id": "123" }), "20-digit"), (json!({ "device_id": "34020000001320000009", "transport": "sctp" }), "transport")] {
        let (status, v) = engine.request("POST", "/api/devices", &bad.to_string());
        assert!(status == 400 && v["message"].as_str().unwrap().contains(says), "{bad}: {v}");
    }

    // The site's password no longer opens it; its own does.
    let mut sim = Sim::new(engine.sip);
    assert_eq!(sim.register(PASSWORD, 3600).0, 403, "the site password is not this device's");
    assert_eq!(sim.register(own, 3600).0, 200);
    let (_, v) = engine.request("GET", &format!("/api/devices/{DEVICE}"), "");
    assert_eq!((v["online"].as_bool(), v["settings"]["name"].as_str()), (Some(true), Some("东门")), "{v}");

    // Kept over a restart.
    let data_dir = engine.data_dir.clone();
    drop(engine);
    let engine = Engine::start_with(1, "", "", Some(data_dir));
    let mut sim = Sim::new(engine.sip);
    assert_eq!(sim.register(PASSWORD, 3600).0, 403);
    assert_eq!(sim.register(own, 3600).0, 200, "its own password, after a restart");
    // Cleared: the site's password again.
    let (status, v) = engine.request("PUT", &format!("/api/devices/{DEVICE}"), r#"{"password": null}"#);
    assert_eq!((status, v["settings"]["own_password"].as_bool()), (200, Some(false)), "{v}");
    assert_eq!(sim.register(PASSWORD, 3600).0, 200);

    // An alarm, acknowledged once, by the key's name.
    let (_, v) = engine.request("POST", &format!("/api/devices/{DEVICE}/channels/{DEVICE}/alarm"), r#"{"description": "door"}"#);
    let alarm = v["event_id"].as_u64().unwrap();
    let (status, v) = engine.request("POST", &format!("/api/events/{alarm}/ack"), r#"{"note": "checked, a cat"}"#);
    assert_eq!(status, 200, "{v}");
    assert_eq!(engine.request("POST", &format!("/api/events/{alarm}/ack"), "{}").0, 409, "once");
    assert_eq!(engine.request("POST", "/api/events/999999/ack", "{}").0, 404);
    let (_, v) = engine.request("GET", "/api/events?since=0&kind=alarm_acknowledged", "");
    let ack = &v["events"][0];
    assert_eq!((ack["data"]["alarm_id"].as_u64(), ack["data"]["by"].as_str(), ack["data"]["note"].as_str()), (Some(alarm), Some("test-admin"), Some("checked, a cat")), "{v}");

    // Removed: its settings go with it.
    assert_eq!(engine.request("DELETE", &format!("/api/devices/{DEVICE}"), "").0, 200);
    assert_eq!(engine.request("GET", "/api/device-settings", "").1["devices"], json!([]));
}

/// The sub-stream (辅码流) for small tiles: refused, saying what to set, until the device is set
/// up for one; then a session of its own beside the main stream's, both taking media.
#[test]
fn a_device_set_up_for_a_sub_stream_plays_it_beside_the_main_stream() {
    use common::gb_device::*;
    let engine = Engine::start(1, "");
    let (_events, stop, device) = registered_device(&engine);
    let channel = CHANNELS[0];
    let play = |stream: &str| engine.request("POST", &format!("/api/devices/{DEVICE}/channels/{channel}/play"), &json!({ "stream": stream }).to_string());
    let (status, v) = play("sub");
    assert_eq!((status, v["code"].as_str()), (409, Some("no_sub_stream")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("streamnumber"), "{v}");
    assert_eq!(play("third").0, 400);
    let (status, v) = engine.request("PUT", &format!("/api/devices/{DEVICE}"), &json!({ "sub_stream": "stream9" }).to_string());
    assert!(status == 400 && v["message"].as_str().unwrap().contains("streamprofile"), "{v}");
    let (status, v) = engine.request("PUT", &format!("/api/devices/{DEVICE}"), &json!({ "sub_stream": "streamnumber" }).to_string());
    assert_eq!(status, 200, "{v}");
    assert_eq!(engine.request("GET", &format!("/api/devices/{DEVICE}"), "").1["settings"]["sub_stream"], "streamnumber");
    let (status, main) = play("main");
    assert_eq!((status, main["sub_stream"].as_bool()), (200, Some(false)), "{main}");
    let (status, sub) = play("sub");
    assert_eq!((status, sub["sub_stream"].as_bool()), (200, Some(true)), "{sub}");
    assert_ne!(main["stream_id"], sub["stream_id"]);
    assert_eq!(play("sub").1["stream_id"], sub["stream_id"], "played again: the same session");
    for s in [&main, &sub] {
        engine.wait_stat(s["stream_id"].as_str().unwrap(), "keyframes", 1);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = device.join();
}
