//! Cascade (级联) gmv ↔ gmv on loopback: a lower gmv with a simulated camera registers with an
//! upper gmv as its lower platform; the upper sees it as a device whose catalog holds the
//! shared channels only, plays one live over UDP, TCP with the upper listening and TCP with the
//! upper connecting (its FLV decoded by ffprobe each time), moves a camera's PTZ (the exact
//! command reaches the camera), searches the camera's recordings and plays one back with a
//! pause and a seek that reach the camera, downloads one (the camera's end of file passed up
//! as MediaStatus 121 completes it at the top; ffprobe decodes the MP4), sees an alarm raised
//! at the bottom, is refused a channel not shared, and each stop at the top ends the lower's send; the lower says Expires 0 when it stops and
//! registers again when the upper comes back.

mod common;

use common::gb_device::*;
use common::gb_sim::*;
use common::*;
use serde_json::Value;
use std::time::Duration;

const UPPER_ID: &str = "44010000002000000001";
const UPPER_DOMAIN: &str = "4401000000";
const LOWER_ID: &str = "34020000002000000077";
/// The channels the lower shares: two of the camera's four.
const SHARED: [&str; 2] = [CHANNELS[0], CHANNELS[2]];

fn upper() -> Engine {
    Engine::start_with(1, &format!("node_id: \"{UPPER_ID}\"\n"), &format!("  domain: \"{UPPER_DOMAIN}\"\n  keepalive_interval_s: 5\n"), None)
}

fn lower(upper_sip: std::net::SocketAddr) -> Engine {
    let cascade = format!(
        "cascade:\n  upstreams:\n  - id: city\n    name: \"site 7\"\n    server_id: \"{UPPER_ID}\"\n    domain: \"{UPPER_DOMAIN}\"\n    address: \"{upper_sip}\"\n    password: \"{PASSWORD}\"\n    local_id: \"{LOWER_ID}\"\n    register_expires_s: 300\n    keepalive_s: 2\n    keepalive_timeout_count: 3\n    shared: [\"{}\", \"{}\"]\n",
        SHARED[0], SHARED[1]
    );
    Engine::start_with(1, &cascade, "", None)
}

fn upstream_of(lower: &Engine) -> Value {
    lower.request("GET", "/api/upstreams", "").1["upstreams"][0].clone()
}

/// The upper plays `channel` of the lower over `transport` and decodes its FLV; then stops it
/// and sees the lower's session to it end.
fn play_through(upper: &Engine, lower: &Engine, channel: &str, transport: &str, out: &str) {
    let (status, session) = upper.request("POST", &format!("/api/devices/{LOWER_ID}/channels/{channel}/play"), &format!(r#"{{"transport":"{transport}"}}"#));
    assert_eq!(status, 200, "{transport}: {session}");
    assert_eq!(upstream_of(lower)["sessions"], 1, "{transport}");
    let url = session["play"]["flv"].as_str().unwrap();
    let path = url.split_once(&upper.http.to_string()).unwrap().1.to_string();
    let file = work_dir().join(out);
    let (status, _) = spawn_viewer(upper.http, path, vec![], file.clone(), Duration::from_secs(3)).join().unwrap();
    assert_eq!(status, 200);
    let probe = ffprobe(&file);
    assert_eq!((probe.codec.as_str(), probe.width, probe.height), ("h264", WIDTH, HEIGHT), "{transport}");
    assert!(probe.frames >= 10, "{transport}: {} frames through both platforms", probe.frames);
    // A stop at the top is a BYE down: the lower stops sending.
    assert_eq!(upper.request("POST", &format!("/api/devices/{LOWER_ID}/channels/{channel}/stop"), "").0, 200);
    wait_for("the lower's session ended", Duration::from_secs(10), || (upstream_of(lower)["sessions"] == 0).then_some(()));
}

#[test]
fn an_upper_gmv_sees_the_shared_channels_of_a_lower_gmv_and_plays_them_live() {
    let mut top = upper();
    let bottom = lower(top.sip);
    let (events, stop, device, camera) = registered_device_and_sender(&bottom);

    // The lower registers (digest) and the upper takes its catalog: the shared channels only.
    wait_for("the lower registered upward", Duration::from_secs(15), || (upstream_of(&bottom)["state"] == "registered").then_some(()));
    // The upper asked for the catalog at registration, maybe before the camera's was in: an
    // operator's sync asks again.
    assert_eq!(top.request("POST", &format!("/api/devices/{LOWER_ID}/sync"), "").0, 202);
    let channels = wait_for("the upper's catalog of the lower", Duration::from_secs(15), || {
        let (_, v) = top.request("GET", &format!("/api/devices/{LOWER_ID}/channels"), "");
        let ids: Vec<String> = v["channels"].as_array()?.iter().filter_map(|c| c["device_id"].as_str().map(String::from)).collect();
        (ids.len() == SHARED.len()).then_some(ids)
    });
    let mut shared: Vec<String> = SHARED.iter().map(|s| s.to_string()).collect();
    shared.sort();
    let mut got = channels.clone();
    got.sort();
    assert_eq!(got, shared);
    let (_, device_info) = top.request("GET", &format!("/api/devices/{LOWER_ID}"), "");
    assert_eq!(device_info["online"], true, "{device_info}");
    // Its DeviceInfo answer names the site (asked together with the catalog).
    assert_eq!(device_info["info"]["device_name"], "site 7", "{device_info}");
    assert_eq!(device_info["info"]["manufacturer"], "gmv", "{device_info}");

    // A channel not shared is not in the upper's catalog: its play is refused there.
    let (status, refused) = top.request("POST", &format!("/api/devices/{LOWER_ID}/channels/{}/play", CHANNELS[1]), "{}");
    assert_ne!(status, 200, "{refused}");

    // PTZ at the top: the exact command reaches the camera at the bottom.
    let (status, moved) = top.request("POST", &format!("/api/devices/{LOWER_ID}/channels/{}/ptz", SHARED[1]), r#"{"pan": -1, "speed": 0.5}"#);
    assert_eq!(status, 200, "{moved}");
    match next_event(&events) {
        DeviceEvent::Ptz { channel, cmd } => assert_eq!((channel.as_str(), cmd.as_str()), (SHARED[1], "A50F010280000037")),
        other => panic!("{other:?}"),
    }

    play_through(&top, &bottom, SHARED[0], "udp", "cascade-udp.flv");

    // Recordings on the camera at the bottom, searched from the top (RecordInfo through both
    // levels, times back as asked), played back from the top and paused there: the camera
    // gets the PAUSE.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let (start, end) = (now - 3600, now - 600);
    let (status, records) = top.request("GET", &format!("/api/devices/{LOWER_ID}/channels/{}/records?start={start}&end={end}", SHARED[1]), "");
    assert_eq!(status, 200, "{records}");
    let items = records["records"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "{records}");
    assert_eq!((items[0]["start"].as_u64(), items[0]["end"].as_u64()), (Some(start), Some(end)), "{records}");
    let body = format!(r#"{{"start": {start}, "end": {end}}}"#);
    let (status, session) = top.request("POST", &format!("/api/devices/{LOWER_ID}/channels/{}/playback", SHARED[1]), &body);
    assert_eq!(status, 200, "{session}");
    assert_eq!(upstream_of(&bottom)["sessions"], 1);
    let stream_id = session["stream_id"].as_str().unwrap().to_string();
    let url = session["play"]["flv"].as_str().unwrap();
    let path = url.split_once(&top.http.to_string()).unwrap().1.to_string();
    let file = work_dir().join("cascade-playback.flv");
    let viewer = spawn_viewer(top.http, path, vec![], file.clone(), Duration::from_secs(3));
    let (status, paused) = top.request("POST", &format!("/api/sessions/{stream_id}/control"), r#"{"action": "pause"}"#);
    assert_eq!(status, 200, "{paused}");
    let info = wait_for("the PAUSE at the camera", Duration::from_secs(10), || match events.recv_timeout(Duration::from_millis(200)) {
        Ok(DeviceEvent::Info { body }) => Some(body),
        _ => None,
    });
    assert!(info.starts_with("PAUSE RTSP/1.0"), "{info}");
    let (status, sought) = top.request("POST", &format!("/api/sessions/{stream_id}/control"), r#"{"action": "seek", "position_s": 60}"#);
    assert_eq!(status, 200, "{sought}");
    let info = wait_for("the seek at the camera", Duration::from_secs(10), || match events.recv_timeout(Duration::from_millis(200)) {
        Ok(DeviceEvent::Info { body }) => Some(body),
        _ => None,
    });
    assert!(info.starts_with("PLAY RTSP/1.0") && info.contains("Range: npt=60"), "{info}");
    assert_eq!(viewer.join().unwrap().0, 200);
    assert_eq!(ffprobe(&file).codec, "h264");
    assert_eq!(top.request("DELETE", &format!("/api/sessions/{stream_id}"), "").0, 200);
    wait_for("the lower's playback ended", Duration::from_secs(10), || {
        let (_, s) = bottom.request("GET", "/api/sessions", "");
        (upstream_of(&bottom)["sessions"] == 0 && s["sessions"].as_array().is_some_and(|l| l.iter().all(|x| x["kind"] != "playback"))).then_some(())
    });
    // A download from the top: the camera sends the clip and says its file ended; the lower
    // passes that up (MediaStatus 121) and the top's download completes.
    let (status, download) = top.request("POST", &format!("/api/devices/{LOWER_ID}/channels/{}/download", SHARED[0]), &body);
    assert_eq!(status, 202, "{download}");
    let id = download["id"].as_str().unwrap().to_string();
    let done = wait_for("the download complete at the top", Duration::from_secs(40), || {
        let (_, d) = top.request("GET", &format!("/api/downloads/{id}"), "");
        match d["state"].as_str() {
            Some("complete") => Some(d),
            Some("failed" | "cancelled") => panic!("download ended: {d}"),
            _ => None,
        }
    });
    let (head, mp4) = http_get(top.http, done["url"].as_str().unwrap(), &[]);
    assert_eq!(status_of(&head), 200, "{head}");
    let file = work_dir().join("cascade-download.mp4");
    std::fs::write(&file, &mp4).unwrap();
    let probe = ffprobe(&file);
    assert_eq!((probe.codec.as_str(), probe.width), ("h264", WIDTH), "{done}");
    assert!(probe.frames >= 10, "{} frames downloaded through both platforms", probe.frames);
    wait_for("the lower's download session ended", Duration::from_secs(10), || (upstream_of(&bottom)["sessions"] == 0).then_some(()));

    // An alarm at the bottom reaches the top, under the lower platform, for the channel.
    let alarm = format!(
        "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Notify>\r\n<CmdType>Alarm</CmdType>\r\n<SN>77</SN>\r\n<DeviceID>{}</DeviceID>\r\n<AlarmPriority>1</AlarmPriority>\r\n<AlarmMethod>5</AlarmMethod>\r\n<AlarmTime>2026-12-05T10:00:00</AlarmTime>\r\n<AlarmDescription>gate</AlarmDescription>\r\n<Info>\r\n<AlarmType>2</AlarmType>\r\n</Info>\r\n</Notify>\r\n",
        SHARED[0]
    );
    let mut camera = camera;
    let m = camera.request("MESSAGE", "alarm-1", "", Some("Application/MANSCDP+xml"), alarm.as_bytes());
    camera.send(&m);
    let raised = wait_for("the alarm at the top", Duration::from_secs(10), || {
        let (_, v) = top.request("GET", "/api/events?since=0&kind=alarm", "");
        v["events"].as_array().and_then(|l| l.first().cloned())
    });
    assert_eq!((raised["device_id"].as_str(), raised["channel_id"].as_str()), (Some(LOWER_ID), Some(SHARED[0])), "{raised}");
    assert_eq!((raised["data"]["priority"].as_u64(), raised["data"]["description"].as_str()), (Some(1), Some("gate")), "{raised}");

    play_through(&top, &bottom, SHARED[1], "tcp", "cascade-tcp-passive.flv");
    play_through(&top, &bottom, SHARED[0], "tcp-active", "cascade-tcp-active.flv");

    // The upper goes away and comes back on the same address: keepalives go unanswered, the
    // lower deems it lost and registers again once it is back.
    top.kill();
    wait_for("the upper lost", Duration::from_secs(30), || (upstream_of(&bottom)["state"] == "retrying").then_some(()));
    top.crash_and_restart();
    wait_for("registered again", Duration::from_secs(30), || {
        let up = upstream_of(&bottom);
        (up["state"] == "registered" && up["registrations"].as_u64() >= Some(2)).then_some(())
    });
    wait_for("online at the top again", Duration::from_secs(15), || {
        (top.request("GET", &format!("/api/devices/{LOWER_ID}"), "").1["online"] == true).then_some(())
    });

    // A graceful stop of the lower unregisters it (Expires 0): offline at the top at once,
    // not after the keepalives it no longer sends run out.
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    device.join().unwrap();
    drop(events);
    let mut bottom = bottom;
    assert_eq!(bottom.terminate(), Some(0));
    wait_for("offline at the top", Duration::from_secs(5), || {
        (top.request("GET", &format!("/api/devices/{LOWER_ID}"), "").1["online"] == false).then_some(())
    });
}

/// A pull proxy with a GB channel id is a channel of the lower platform: the upper sees it in
/// the lower's catalog (online while it plays) and plays it live (ffprobe decodes the FLV at
/// the top); the lower sends the proxy's stream up. Needs GStreamer's RTSP server
/// (tests/rtsp/README.md).
#[test]
fn a_proxy_with_a_channel_id_is_shared_upward_and_played_at_the_top() {
    const PROXY_CHANNEL: &str = "34020000001320000501";
    let rtsp_port = free_tcp_port();
    let _camera = common::rtsp_server::RtspServer::start(rtsp_port, &[]);
    let top = upper();
    let cascade = format!(
        "cascade:\n  upstreams:\n  - id: city\n    server_id: \"{UPPER_ID}\"\n    domain: \"{UPPER_DOMAIN}\"\n    address: \"{}\"\n    password: \"{PASSWORD}\"\n    local_id: \"{LOWER_ID}\"\n    register_expires_s: 300\n    keepalive_s: 2\n    shared: [\"{PROXY_CHANNEL}\"]\n",
        top.sip
    );
    let bottom = Engine::start_with(1, &cascade, "", None);
    let body = serde_json::json!({ "name": "gate", "url": format!("rtsp://127.0.0.1:{rtsp_port}/h264"), "channel_id": PROXY_CHANNEL });
    let (status, proxy) = bottom.request("POST", "/api/proxies", &body.to_string());
    assert_eq!(status, 201, "{proxy}");
    assert_eq!(proxy["channel_id"], PROXY_CHANNEL);
    let (status, taken) = bottom.request("POST", "/api/proxies", &serde_json::json!({ "name": "gate2", "url": "rtsp://127.0.0.1/x", "channel_id": PROXY_CHANNEL }).to_string());
    assert_eq!((status, taken["code"].as_str()), (409, Some("channel_exists")), "{taken}");
    let (status, _) = bottom.request("POST", "/api/proxies", &serde_json::json!({ "name": "gate3", "url": "rtsp://127.0.0.1/x", "channel_id": "3402" }).to_string());
    assert_eq!(status, 400, "not a GB id");
    wait_for("the proxy playing", Duration::from_secs(20), || (bottom.request("GET", "/api/proxies/gate", "").1["state"]["status"] == "playing").then_some(()));
    wait_for("the lower registered upward", Duration::from_secs(15), || (upstream_of(&bottom)["state"] == "registered").then_some(()));

    // The upper's catalog of the lower: the proxy, online.
    let channel = wait_for("the proxy in the upper's catalog", Duration::from_secs(20), || {
        assert_eq!(top.request("POST", &format!("/api/devices/{LOWER_ID}/sync"), "").0, 202);
        std::thread::sleep(Duration::from_millis(500));
        let (_, v) = top.request("GET", &format!("/api/devices/{LOWER_ID}/channels"), "");
        v["channels"].as_array()?.iter().find(|c| c["device_id"] == PROXY_CHANNEL && c["status"] == "ON").cloned()
    });
    assert_eq!(channel["name"], "gate", "{channel}");
    play_through(&top, &bottom, PROXY_CHANNEL, "udp", "cascade-proxy.flv");
}
