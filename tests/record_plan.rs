//! Record plans (录像计划) end to end: a plan in force from 3 s to 11 s from now has the
//! simulated device's channel invited at its start with nobody watching, recorded, and its
//! session ended at its end; a session stopped mid-plan is invited again at once; the two
//! recordings hold most of the 8 s (ffprobe). Plans survive a restart; bad plans and assignments are refused
//! naming why. On a control that places live streams on a media node the plan has the node
//! record (startRecord), the unwatched session is not stopped for lack of viewers, the node
//! stops recording at the plan's end (stopRecord) and its file is listed by the control's
//! records API and on the channel's timeline. Needs ffmpeg (the clip) and ffprobe.

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

/// A range from `lead_s` to `lead_s + length_s` from now (unix seconds) that does not cross
/// midnight UTC (a plan's range is of one day): a range that would is waited out (for at most
/// `margin_s`, polled every half second).
fn range_today(lead_s: u64, length_s: u64, margin_s: u64) -> (u64, u64) {
    assert!(lead_s + length_s < margin_s);
    while (unix_s() + margin_s) % 86_400 < margin_s {
        std::thread::sleep(Duration::from_millis(500));
    }
    let start = unix_s() + lead_s;
    (start, start + length_s)
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
    // From 3 s to 11 s from now, not across midnight UTC.
    let (start, end) = range_today(3, 8, 12);
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

#[test]
fn a_plan_on_a_control_placing_streams_on_a_media_node_records_there_and_stops_at_its_end() {
    const ANNOUNCE: &str = "announce-secret-0123456789";
    let http: std::net::SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    // The control first (the node's start hook must find it), then a media node announcing
    // itself to it: live streams are placed there. Sessions nobody uses stop after 1 s (seen by
    // the session check, every 5 s).
    let mut control = Engine::start_at(http, 1, &format!("node:\n  announce_secret: \"{ANNOUNCE}\"\n"), "  no_viewer_stop_s: 1\n", &["--role", "control"]);
    let hooks: String = ["on_server_started", "on_server_keepalive", "on_play", "on_publish", "on_stream_none_reader", "on_record_mp4", "on_http_access"]
        .iter()
        .map(|n| format!("    {n}: \"http://{http}/index/hook/{n}\"\n"))
        .collect();
    let node_yaml = format!("node:\n  secret: \"{ANNOUNCE}\"\n  media_server_id: media-x\n  keepalive_interval_s: 1\n  hooks:\n{hooks}");
    let node = Engine::start_command(1, "", &node_yaml, "", None, None, &["--role", "media"]);
    wait_for("the media node up", Duration::from_secs(20), || {
        let (_, v) = control.request("GET", "/api/nodes", "");
        v["nodes"].as_array()?.iter().any(|n| n["id"] == "media-x" && n["state"] == "up").then_some(())
    });
    let node_call = |name: &str, form: &str| {
        let body = format!("secret={ANNOUNCE}&{form}");
        let (status, text) = node.try_request("POST", &format!("/index/api/{name}"), &[("Content-Type", "application/x-www-form-urlencoded")], body.as_bytes()).unwrap();
        assert_eq!(status, 200, "{text}");
        serde_json::from_str::<Value>(&text).unwrap()
    };
    let (events, stop, device) = registered_device(&control);
    let channel = CHANNELS[0];
    // From 3 s to 21 s from now, not across midnight UTC.
    let (start, end) = range_today(3, 18, 25);
    assert_eq!(control.request("POST", "/api/record-plans", &plan_body("on-node", start, end)).0, 201);
    let path = format!("/api/devices/{DEVICE}/channels/{channel}/record-plan");
    assert_eq!(control.request("PUT", &path, &json!({ "plan": "on-node" }).to_string()).0, 200);

    // Invited at the start, nobody watching, the media going to the node, which records it.
    let invited = loop {
        match events.recv_timeout(Duration::from_secs(10)).expect("the plan's INVITE") {
            DeviceEvent::Invited { channel: c, .. } if c == channel => break unix_s(),
            _ => {}
        }
    };
    assert!(invited + 1 >= start && invited <= start + 3, "invited at {invited}, the plan starts at {start}");
    let state = wait_for("recording", Duration::from_secs(15), || {
        let s = channel_state(&control, channel);
        (s["state"] == "recording").then_some(s)
    });
    let stream_id = state["stream_id"].as_str().unwrap().to_string();
    let media = format!("vhost=__defaultVhost__&app=rtp&stream={stream_id}&type=1");
    wait_for("the node recording", Duration::from_secs(10), || (node_call("isRecording", &media)["status"] == true).then_some(()));

    // Nobody watches for much longer than no_viewer_stop_s and two session checks: the
    // planned session goes on (no BYE, the same stream, still recording on the node).
    while unix_s() < end - 4 {
        if let Ok(DeviceEvent::Bye { channel: c }) = events.recv_timeout(Duration::from_millis(200)) {
            assert_ne!(c, channel, "the planned session was stopped while nobody watched");
        }
    }
    let state = channel_state(&control, channel);
    assert_eq!((state["state"].as_str(), state["stream_id"].as_str()), (Some("recording"), Some(stream_id.as_str())), "{state}");
    assert_eq!(node_call("isRecording", &media)["status"], true);

    // Someone watches across the plan's end: the node stops recording (stopRecord), the
    // session goes on for the viewer, and ends once nobody watches.
    let session = play(&control, channel);
    assert_eq!(session["stream_id"].as_str(), Some(stream_id.as_str()), "the planned session is joined: {session}");
    let flv = session["play"]["flv"].as_str().unwrap().to_string();
    let rest = flv.strip_prefix("http://").unwrap();
    let (host, flv_path) = rest.split_once('/').unwrap();
    let viewer = spawn_viewer(host.parse().unwrap(), format!("/{flv_path}"), vec![], work_dir().join("planned-on-node.flv"), Duration::from_secs(9));
    wait_for("the plan's end to stop the node's recording", Duration::from_secs(12), || (node_call("isRecording", &media)["status"] == false).then_some(()));
    let stopped = unix_s();
    assert!(stopped + 1 >= end && stopped <= end + 3, "recording stopped at {stopped}, the plan ends at {end}");
    wait_for("idle", Duration::from_secs(5), || (channel_state(&control, channel)["state"] == "idle").then_some(()));
    let (_, sessions) = control.request("GET", "/api/sessions", "");
    assert_eq!(sessions["sessions"].as_array().map(Vec::len), Some(1), "watched: the session goes on {sessions}");

    // The node's file, as its on_record_mp4 named it, listed by the control's records API
    // with its URL on the node, and an MP4 of most of the plan.
    let record = wait_for("the node's recording listed", Duration::from_secs(10), || {
        let (_, v) = control.request("GET", &format!("/api/records?channel={channel}"), "");
        v["records"].as_array()?.iter().find(|r| r["node"] == "media-x" && r["stream_id"] == stream_id.as_str()).cloned()
    });
    let ms = record["duration_ms"].as_u64().unwrap();
    assert!((10_000..=19_000).contains(&ms), "{record}");
    let url = record["url"].as_str().unwrap();
    let file_path = url.strip_prefix(&format!("http://{}", node.http)).unwrap_or_else(|| panic!("{url} is not on the node"));
    let (head, mp4) = http_get(node.http, file_path, &[]);
    assert_eq!(status_of(&head), 200, "{head}");
    let file = work_dir().join("planned-on-node.mp4");
    std::fs::write(&file, &mp4).unwrap();
    let frames = ffprobe(&file).frames;
    assert!(frames as u64 >= ms * 25 / 1000 - 25, "{frames} frames in {ms} ms");
    // And on the channel's playback timeline, the same file on the node.
    let (_, timeline) = control.request("GET", &format!("/api/channels/{channel}/timeline?start={}&end={}", start - 60, end + 60), "");
    let on_node = timeline["ranges"].as_array().and_then(|r| r.iter().find(|r| r["source"] == "node").cloned()).unwrap_or_else(|| panic!("{timeline}"));
    // (The same file on the node: its URL up to the token, which is signed anew with its own
    // expiry at each answer.)
    let without_token = |u: &str| u.split_once("?token=").map_or(u, |(path, _)| path).to_string();
    assert_eq!((on_node["file"].as_str(), on_node["url"].as_str().map(without_token)), (record["file"].as_str(), Some(without_token(url))), "{timeline}");

    // The viewer leaves: the session ends for lack of viewers.
    let (status, bytes) = viewer.join().unwrap();
    assert!(status == 200 && bytes > 0, "the viewer got the stream: {status} {bytes}");
    loop {
        match events.recv_timeout(Duration::from_secs(20)).expect("the BYE once nobody watches") {
            DeviceEvent::Bye { channel: c } if c == channel => break,
            _ => {}
        }
    }
    stop.store(true, Ordering::SeqCst);
    device.join().unwrap();

    // The control restarted: what the node recorded for the plan is listed still (kept in the
    // recordings index, not in memory).
    let data_dir = control.data_dir.clone();
    assert_eq!(control.terminate(), Some(0), "log:\n{}", control.log_text());
    let again = Engine::start_command(1, "", &format!("node:\n  announce_secret: \"{ANNOUNCE}\"\n"), "", Some(data_dir), None, &["--role", "control"]);
    let (_, v) = again.request("GET", &format!("/api/records?channel={channel}"), "");
    let listed = v["records"].as_array().and_then(|r| r.iter().find(|r| r["node"] == "media-x" && r["file"] == record["file"]).cloned());
    assert_eq!(listed.as_ref().map(|r| r["duration_ms"].clone()), Some(record["duration_ms"].clone()), "{v}");
}
