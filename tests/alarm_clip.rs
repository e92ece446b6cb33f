//! Alarm clips (报警录像) end to end: with `record.alarm_clip` {pre_s 2, post_s 3}, a channel
//! a viewer plays gets a device alarm (the simulated device's Alarm MESSAGE) and, about 2 s
//! later, one raised through the API: one clip holds both, from its pre-roll (before the first
//! alarm) to 3 s after the second, its sidecar naming both alarms (kind alarm); ffprobe decodes
//! it. An alarm of a channel nobody plays has it played and recorded for 3 s. Needs ffmpeg and
//! ffprobe.

mod common;

use common::gb_device::*;
use common::gb_sim::DEVICE;
use common::*;
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The closed alarm clip of `stream_id`, once there is one.
fn closed_clip(engine: &Engine, stream_id: &str, within: Duration) -> Value {
    wait_for("the alarm clip closed", within, || {
        let (_, v) = engine.request("GET", &format!("/api/records?stream={stream_id}"), "");
        v["records"].as_array().and_then(|r| r.iter().find(|r| r["kind"] == "alarm" && r["in_progress"] == false).cloned())
    })
}

fn frames_of(engine: &Engine, stream_id: &str) -> u64 {
    engine.stream(stream_id)["frames"].as_u64().unwrap_or(0)
}

#[test]
fn alarms_close_together_make_one_clip_from_before_the_first_to_after_the_last() {
    let engine = Engine::start(1, "record:\n  alarm_clip:\n    post_s: 3\n    pre_s: 2\n");
    let (_events, stop, device, mut camera) = registered_device_and_sender(&engine);
    let channel = CHANNELS[1];
    let (status, v) = engine.request("POST", &format!("/api/devices/{DEVICE}/channels/{channel}/play"), "{}");
    assert_eq!(status, 200, "{v}");
    let stream_id = v["stream_id"].as_str().unwrap().to_string();
    // 3 s of media (25 fps) so the pre-roll covers its 2 s.
    wait_for("3 s of media", Duration::from_secs(15), || (frames_of(&engine, &stream_id) >= 75).then_some(()));

    let first_at = unix_ms();
    let m = camera.request("MESSAGE", "alarm-1", "", Some("Application/MANSCDP+xml"), &alarm_message(71, channel));
    camera.send(&m);
    let first_id = wait_for("the device's alarm", Duration::from_secs(5), || {
        let (_, v) = engine.request("GET", "/api/events?since=0&kind=alarm", "");
        v["events"].as_array().and_then(|e| e.iter().find(|e| e["channel_id"] == channel)).and_then(|e| e["id"].as_u64())
    });
    // About 2 s of media later, an operator raises one.
    let at = frames_of(&engine, &stream_id);
    wait_for("2 s more of media", Duration::from_secs(10), || (frames_of(&engine, &stream_id) >= at + 50).then_some(()));
    let second_at = unix_ms();
    let (status, v) = engine.request("POST", &format!("/api/devices/{DEVICE}/channels/{channel}/alarm"), r#"{"description": "gate opened by hand"}"#);
    assert_eq!(status, 200, "{v}");
    let second_id = v["event_id"].as_u64().unwrap();
    assert!(engine.stream(&stream_id)["recording"] == true, "a clip records");

    let clip = closed_clip(&engine, &stream_id, Duration::from_secs(15));
    assert_eq!(clip["alarm_ids"], serde_json::json!([first_id, second_id]), "one clip for both: {clip}");
    assert_eq!(clip["channel_id"], channel, "{clip}");
    let (start, ms) = (clip["start_unix_ms"].as_u64().unwrap(), clip["duration_ms"].as_u64().unwrap());
    // From its pre-roll: 1 to 2 s of whole GOPs (keyframes each second) before the first alarm.
    assert!(start + 900 <= first_at && start + 3_500 >= first_at, "starts {} ms before the first alarm", first_at as i64 - start as i64);
    // To 3 s after the second (a GOP either way).
    let end = start + ms;
    assert!(end.abs_diff(second_at + 3_000) <= 1_300, "ends {} ms after the second alarm", end as i64 - second_at as i64);
    let (_, body) = http_get(engine.http, clip["url"].as_str().unwrap(), &[]);
    let file = work_dir().join("alarm-clip.mp4");
    std::fs::write(&file, body).unwrap();
    let frames = ffprobe(&file).frames as u64;
    assert!(frames.abs_diff(ms * 25 / 1000) <= 25, "{frames} frames in {ms} ms");
    // The clip's close is an event naming its alarms.
    wait_for("the clip's recording_closed event", Duration::from_secs(10), || {
        let (_, v) = engine.request("GET", "/api/events?since=0&kind=recording_closed", "");
        v["events"].as_array().unwrap().iter().any(|e| e["data"]["alarm_ids"] == clip["alarm_ids"]).then_some(())
    });

    // The clip's first alarm brought a snapshot of the channel (a JPEG of the test pattern);
    // the second, within the clip, none.
    let snapshot = wait_for("the alarm's snapshot", Duration::from_secs(15), || {
        let (_, v) = engine.request("GET", "/api/events?since=0&kind=alarm_snapshot", "");
        v["events"].as_array().and_then(|e| e.iter().find(|e| e["data"]["alarm_id"] == first_id).cloned())
    });
    assert_eq!(snapshot["channel_id"], channel, "{snapshot}");
    let (head, jpeg) = http_get(engine.http, snapshot["data"]["url"].as_str().unwrap(), &[("gmv-token", TOKEN)]);
    assert_eq!(status_of(&head), 200, "{head}");
    assert!(jpeg.starts_with(&[0xff, 0xd8]) && jpeg.len() > 1000, "a JPEG: {} bytes", jpeg.len());
    let shot = work_dir().join("alarm-snapshot.jpg");
    std::fs::write(&shot, &jpeg).unwrap();
    let probe = ffprobe(&shot);
    assert_eq!((probe.width, probe.height), (WIDTH, HEIGHT), "{probe:?}");
    let (head, _) = http_get(engine.http, &format!("/api/events/{second_id}/snapshot"), &[("gmv-token", TOKEN)]);
    assert_eq!(status_of(&head), 404, "{head}");
    let (head, _) = http_get(engine.http, "/api/events/..%2Fadmin-key/snapshot", &[("gmv-token", TOKEN)]);
    assert_eq!(status_of(&head), 404, "{head}");

    // A channel nobody plays: the alarm plays it and records the 3 s after.
    let other = CHANNELS[2];
    let raised = unix_ms();
    assert_eq!(engine.request("POST", &format!("/api/devices/{DEVICE}/channels/{other}/alarm"), "{}").0, 200);
    let session = wait_for("the channel played for the alarm", Duration::from_secs(10), || {
        let (_, v) = engine.request("GET", "/api/sessions", "");
        v["sessions"].as_array().and_then(|s| s.iter().find(|s| s["channel_id"] == other).cloned())
    });
    let clip = closed_clip(&engine, session["stream_id"].as_str().unwrap(), Duration::from_secs(15));
    assert!(clip["start_unix_ms"].as_u64().unwrap() + 200 >= raised, "no pre-roll: {clip}");
    assert!((1_500..=3_800).contains(&clip["duration_ms"].as_u64().unwrap()), "{clip}");
    assert_eq!(engine.request("POST", "/api/devices/34020000001320000099/channels/x/alarm", "{}").0, 404);
    stop.store(true, Ordering::SeqCst);
    device.join().unwrap();
}
