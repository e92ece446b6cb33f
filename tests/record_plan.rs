//! Record plans (录像计划) end to end: a plan in force from 3 s to 11 s from now has the
//! simulated device's channel invited at its start with nobody watching, recorded, and its
//! session ended at its end; a session stopped mid-plan is invited again at once; the two
//! recordings hold most of the 8 s (ffprobe). Plans survive a restart; bad plans and assignments are refused
//! naming why. Needs ffmpeg (the clip) and ffprobe.

mod common;

use common::gb_device::*;
use common::gb_sim::DEVICE;
use common::*;
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use std::time::Duration;

fn unix_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn hms(t: u64) -> String {
    format!("{:02}:{:02}:{:02}", (t % 86_400) / 3600, (t % 3600) / 60, t % 60)
}

/// A plan in UTC from `start` to `end` (unix seconds of one day).
fn plan_body(name: &str, start: u64, end: u64) -> String {
    let weekday = (start / 86_400 + 3) % 7 + 1;
    json!({ "name": name, "time_zone": "UTC", "ranges": [{ "days": [weekday], "start": hms(start), "end": hms(end) }] }).to_string()
}

fn channel_state(engine: &Engine, channel: &str) -> Value {
    let (_, v) = engine.request("GET", "/api/record-plans", "");
    v["channels"].as_array().and_then(|c| c.iter().find(|c| c["channel_id"] == channel).cloned()).unwrap_or(Value::Null)
}

#[test]
fn a_plan_invites_its_channel_records_it_and_ends_its_session_with_its_range() {
    let engine = Engine::start(1, "");
    let (events, stop, device) = registered_device(&engine);
    let channel = CHANNELS[0];
    // From 3 s to 9 s from now, not across midnight UTC (waited out, at most 10 s).
    while (unix_s() + 12) % 86_400 < 12 {
        std::thread::sleep(Duration::from_millis(500));
    }
    let start = unix_s() + 3;
    let end = start + 8;
    let name = "日间录像";
    let (status, v) = engine.request("POST", "/api/record-plans", &plan_body(name, start, end));
    assert_eq!((status, v["active"].as_bool()), (201, Some(false)), "{v}");
    let path = format!("/api/devices/{DEVICE}/channels/{channel}/record-plan");
    assert_eq!(engine.request("PUT", &path, &json!({ "plan": name }).to_string()).0, 200);

    // Invited at the start, nobody watching.
    let invited = loop {
        match events.recv_timeout(Duration::from_secs(10)).expect("the plan's INVITE") {
            DeviceEvent::Invited { channel: c, .. } if c == channel => break unix_s(),
            _ => {}
        }
    };
    assert!(invited + 1 >= start && invited <= start + 3, "invited at {invited}, the plan starts at {start}");
    wait_for("recording", Duration::from_secs(10), || (channel_state(&engine, channel)["state"] == "recording").then_some(()));
    let state = channel_state(&engine, channel);
    assert_eq!((state["active"].as_bool(), state["plan"].as_str()), (Some(true), Some(name)), "{state}");
    let first_stream = state["stream_id"].as_str().unwrap().to_string();

    // Stopped mid-plan (as a device's BYE or an operator would): invited again at once.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(engine.request("POST", &format!("/api/devices/{DEVICE}/channels/{channel}/stop"), "").0, 200);
    loop {
        match events.recv_timeout(Duration::from_secs(5)).expect("invited again") {
            DeviceEvent::Invited { channel: c, .. } if c == channel => break,
            _ => {}
        }
    }
    let second_stream = wait_for("recording again", Duration::from_secs(5), || {
        let s = channel_state(&engine, channel);
        (s["state"] == "recording" && s["stream_id"] != first_stream.as_str()).then(|| s["stream_id"].as_str().unwrap().to_string())
    });

    // Its end: the BYE, soon.
    let bye = loop {
        match events.recv_timeout(Duration::from_secs(15)).expect("the BYE at the plan's end") {
            DeviceEvent::Bye { channel: c } if c == channel => break unix_s(),
            _ => {}
        }
    };
    assert!(bye + 1 >= end && bye <= end + 3, "BYE at {bye}, the plan ends at {end}");
    wait_for("idle", Duration::from_secs(5), || (channel_state(&engine, channel)["state"] == "idle").then_some(()));

    // Most of the 8 s recorded, in two files (each from its first keyframe; the gap of the
    // re-invite between them).
    let closed = |stream_id: &str| {
        wait_for("the recording closed", Duration::from_secs(10), || {
            let (_, v) = engine.request("GET", &format!("/api/records?stream={stream_id}"), "");
            v["records"].as_array().and_then(|r| r.iter().find(|r| r["in_progress"] == false).cloned())
        })
    };
    let (first, record) = (closed(&first_stream), closed(&second_stream));
    let total = first["duration_ms"].as_u64().unwrap() + record["duration_ms"].as_u64().unwrap();
    assert!((5_000..=8_500).contains(&total), "{first} {record}");
    let ms = record["duration_ms"].as_u64().unwrap();
    let (_, body) = http_get(engine.http, record["url"].as_str().unwrap(), &[]);
    let file = work_dir().join("planned.mp4");
    std::fs::write(&file, body).unwrap();
    let frames = ffprobe(&file).frames;
    assert!(frames as u64 >= ms * 25 / 1000 - 25, "{frames} frames in {ms} ms");

    // Refused, naming why.
    let refused = |method: &str, path: &str, body: &str| engine.request(method, path, body);
    let inverted = json!({ "name": "x", "ranges": [{ "days": [1], "start": "18:00", "end": "08:00" }] }).to_string();
    let (status, v) = refused("POST", "/api/record-plans", &inverted);
    assert!(status == 400 && v["message"].as_str().unwrap().contains("at or before it starts"), "{v}");
    let overlap = json!({ "name": "x", "ranges": [{ "days": [1, 2], "start": "08:00", "end": "12:00" }, { "days": [2], "start": "11:00", "end": "13:00" }] }).to_string();
    let (status, v) = refused("POST", "/api/record-plans", &overlap);
    assert!(status == 400 && v["message"].as_str().unwrap().contains("overlaps"), "{v}");
    assert_eq!(refused("POST", "/api/record-plans", &plan_body(name, start, end)).0, 409, "the name exists");
    assert_eq!(refused("PUT", &path, r#"{"plan": "none such"}"#).0, 404);
    assert_eq!(refused("PUT", &format!("/api/devices/{DEVICE}/channels/34020000001310009999/record-plan"), &json!({ "plan": name }).to_string()).0, 404);
    assert_eq!(refused("PUT", &path, r#"{"plan": 7}"#).0, 400);

    // A restart keeps the plan and the channel's place in it.
    let data_dir = engine.data_dir.clone();
    drop(engine);
    let restarted = Engine::start_with(1, "", "", Some(data_dir));
    let (_, v) = restarted.request("GET", &format!("/api/record-plans/{}", "%E6%97%A5%E9%97%B4%E5%BD%95%E5%83%8F"), "");
    assert_eq!((v["name"].as_str(), v["channels"][0].as_str()), (Some(name), Some(format!("{DEVICE}/{channel}").as_str())), "{v}");
    assert_eq!(restarted.request("DELETE", &format!("/api/record-plans/{}", "%E6%97%A5%E9%97%B4%E5%BD%95%E5%83%8F"), "").0, 200);
    assert_eq!(restarted.request("GET", "/api/record-plans", "").1["channels"], json!([]), "its channels follow no plan");
    stop.store(true, Ordering::SeqCst);
    device.join().unwrap();
}
