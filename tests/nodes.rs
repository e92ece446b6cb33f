//! Three processes on loopback: a control (`--role control`: SIP, REST) and two media nodes
//! (`--role media`) it drives over ZLMediaKit's node API, their hooks coming back to it. A
//! simulated device with four channels plays through both nodes, balanced; a drained node gets
//! no new stream; `kill -9` of a node ends its sessions (BYE) and its channels play again from
//! the other when asked.

mod common;

use common::gb_device::*;
use common::gb_sim::*;
use common::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const NODE_SECRET: &str = "node-secret-0123456789";

fn media_node(id: &str, control: SocketAddr) -> Engine {
    media_node_with_secret(id, control, NODE_SECRET)
}

fn media_node_with_secret(id: &str, control: SocketAddr, secret: &str) -> Engine {
    let hooks: String = ["on_server_started", "on_server_keepalive", "on_play", "on_publish", "on_stream_none_reader", "on_record_mp4", "on_http_access"]
        .iter()
        .map(|n| format!("    {n}: \"http://{control}/index/hook/{n}\"\n"))
        .collect();
    let yaml = format!("node:\n  secret: \"{secret}\"\n  media_server_id: {id}\n  keepalive_interval_s: 1\n  hooks:\n{hooks}");
    Engine::start_command(1, "", &yaml, "", None, None, &["--role", "media"])
}

fn node_states(control: &Engine) -> HashMap<String, Value> {
    let (_, v) = control.request("GET", "/api/nodes", "");
    v["nodes"].as_array().unwrap().iter().map(|n| (n["id"].as_str().unwrap().to_string(), n.clone())).collect()
}

#[test]
fn a_control_places_streams_on_two_media_nodes_drains_one_and_survives_losing_one() {
    let control_http: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let mut a = media_node("media-1", control_http);
    let b = media_node("media-2", control_http);
    let nodes: String = [("media-1", &a), ("media-2", &b)]
        .iter()
        .map(|(id, e)| format!("    - {{id: {id}, api: \"http://{}\", secret: \"{NODE_SECRET}\", media_ip: 127.0.0.1}}\n", e.http))
        .collect();
    let control = Engine::start_at(control_http, 1, &format!("node:\n  node_down_after_s: 3\n  media_nodes:\n{nodes}"), "  no_viewer_stop_s: 0\n", &["--role", "control"]);
    wait_for("both nodes up", Duration::from_secs(20), || {
        let states = node_states(&control);
        (states.values().filter(|n| n["state"] == "up").count() == 2).then_some(())
    });
    assert!(a.log_text().contains("no SIP"), "a media node runs no SIP");

    let (events, stop, device) = registered_device(&control);

    // Four channels: two on each node, each INVITE offering its node's address and port, each
    // playing from its node with the control's token.
    let mut on_node: HashMap<String, String> = HashMap::new();
    for (i, ch) in CHANNELS.iter().enumerate() {
        let session = play(&control, ch);
        let DeviceEvent::Invited { channel, to } = next_event(&events) else { panic!("no INVITE") };
        assert_eq!(channel, *ch);
        let node = session["play"]["node"].as_str().unwrap().to_string();
        let flv = session["play"]["flv"].as_str().unwrap().to_string();
        let engine = if node == "media-1" { &a } else { &b };
        assert!(flv.starts_with(&format!("http://{}/rtp/", engine.http)), "{flv}");
        assert_eq!(to.ip().to_string(), "127.0.0.1");
        watch(&flv, &format!("node-{i}.flv"));
        // The node takes the stream's media from the device only (openRtpServer's
        // expect_source, then updateRtpServerSSRC's with the answer's address).
        let on = engine.stream(session["stream_id"].as_str().unwrap());
        assert_eq!(on["source"], "127.0.0.1", "{on}");
        on_node.insert(ch.to_string(), node);
    }
    let count = |n: &str| on_node.values().filter(|v| *v == n).count();
    assert_eq!((count("media-1"), count("media-2")), (2, 2), "balanced: {on_node:?}");
    let states = node_states(&control);
    assert_eq!((states["media-1"]["placed"].as_u64(), states["media-2"]["placed"].as_u64()), (Some(2), Some(2)));
    // Prometheus: per node state and placed streams, and the SIP latency of the INVITEs.
    let (_, metrics) = control.try_request("GET", "/metrics", &[("gmv-token", TOKEN)], b"").unwrap();
    for line in ["gmv_media_node_up{node=\"media-1\"} 1", "gmv_media_node_up{node=\"media-2\"} 1", "gmv_media_node_placed{node=\"media-2\"} 2"] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    let invites = metrics.lines().find(|l| l.starts_with("gmv_sip_transaction_latency_seconds_count{method=\"INVITE\"}")).unwrap_or_else(|| panic!("{metrics}"));
    assert!(invites.ends_with(" 4"), "{invites}");
    assert!(metrics.contains("gmv_sip_transaction_latency_seconds_bucket{le=\"+Inf\",method=\"INVITE\"} 4") || metrics.contains("gmv_sip_transaction_latency_seconds_bucket{method=\"INVITE\",le=\"+Inf\"} 4"), "{metrics}");
    let (_, node_metrics) = b.try_request("GET", "/metrics", &[("gmv-token", TOKEN)], b"").unwrap();
    assert!(node_metrics.contains("gmv_node_rtp_servers 2"), "{node_metrics}");
    assert!(node_metrics.lines().any(|l| l.starts_with("gmv_node_hooks_delivered_total ") && !l.ends_with(" 0")), "{node_metrics}");

    // A token for another stream does not play; a viewer of the control's channel URL is sent
    // to the node.
    let s0 = play(&control, CHANNELS[0]);
    let url = s0["play"]["flv"].as_str().unwrap();
    let wrong = url.replace(s0["play"]["token"].as_str().unwrap(), "bogus");
    let rest = wrong.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let (head, _) = http_get(host.parse().unwrap(), &format!("/{path}"), &[]);
    assert_eq!(status_of(&head), 401, "the node's on_play asks the control, which refuses");
    let token = control.play_token(json!({"device_id": DEVICE, "channel_id": CHANNELS[0]}));
    let (head, _) = http_get(control.http, &format!("/flv/gb/{DEVICE}/{}/{token}", CHANNELS[0]), &[]);
    assert_eq!(status_of(&head), 302, "{head}");
    let location = head.lines().find_map(|l| l.strip_prefix("Location: ")).unwrap().trim().to_string();
    assert!(location.contains("/rtp/") && location.contains("?token="), "{location}");
    watch(&location, "node-redirected.flv");

    // A stream a crashed control left on a node is closed by the session check; a stream of
    // someone else's naming (wvp's) is left alone.
    let node_call = |e: &Engine, name: &str, form: &str| {
        let body = format!("secret={NODE_SECRET}&{form}");
        let (status, text) = e.try_request("POST", &format!("/index/api/{name}"), &[("Content-Type", "application/x-www-form-urlencoded")], body.as_bytes()).unwrap();
        assert_eq!(status, 200, "{text}");
        serde_json::from_str::<Value>(&text).unwrap()
    };
    assert_eq!(node_call(&b, "openRtpServer", "port=0&stream_id=0123456789&ssrc=123456789&app=rtp")["code"], 0);
    assert_eq!(node_call(&b, "openRtpServer", "port=0&stream_id=34020000001320000001_x&app=rtp")["code"], 0);
    // Within 12 s: before the node's own timeout for a server without packets (15 s) would.
    wait_for("the orphan closed", Duration::from_secs(12), || {
        let listed = node_call(&b, "listRtpServer", "").to_string();
        (!listed.contains("0123456789")).then_some(listed)
    });
    assert!(control.log_text().contains("closing a stream no session of this control owns"));
    assert!(node_call(&b, "listRtpServer", "").to_string().contains("34020000001320000001_x"));
    assert_eq!(node_call(&b, "closeRtpServer", "stream_id=34020000001320000001_x&app=rtp")["hit"], 1);

    // Drain media-2 from the console's Nodes view: a channel of it stopped and played again
    // lands on media-1.
    let out = std::process::Command::new("node")
        .arg("nodes_check.mjs")
        .arg(format!("http://{}/", control.http))
        .arg(TOKEN)
        .arg("media-2")
        .env("SHOTS_DIR", concat!(env!("CARGO_MANIFEST_DIR"), "/target"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser"))
        .output()
        .expect("node (npm ci in tests/browser)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let console: Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap_or_default();
    assert_eq!(console["ok"], true, "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(console["control"].as_str().unwrap().contains("own registry"), "{console}");
    let rows = console["rows"].as_array().unwrap();
    assert_eq!(rows.iter().map(|r| r[0].as_str().unwrap()).collect::<Vec<_>>(), ["media-1", "media-2"], "{console}");
    for r in rows {
        assert_eq!(r[3], "2", "two streams placed on each: {r}");
    }
    assert_eq!(node_states(&control)["media-2"]["draining"], true, "the console's drain reached the control");
    let moved = on_node.iter().find(|(_, n)| *n == "media-2").map(|(c, _)| c.clone()).unwrap();
    assert_eq!(control.request("POST", &format!("/api/devices/{DEVICE}/channels/{moved}/stop"), "").0, 200);
    assert!(matches!(next_event(&events), DeviceEvent::Bye { channel } if channel == moved));
    let session = play(&control, &moved);
    assert!(matches!(next_event(&events), DeviceEvent::Invited { .. }));
    assert_eq!(session["play"]["node"], "media-1", "a drained node gets no new stream");
    watch(session["play"]["flv"].as_str().unwrap(), "node-moved.flv");
    on_node.insert(moved, "media-1".into());
    assert_eq!(control.request("DELETE", "/api/nodes/media-2/drain", "").0, 200);

    // A download of a device recording goes to a node too: the node records it from its first
    // packets (on_publish's enable_mp4), the device's end of file (MediaStatus 121) finishes it,
    // on_record_mp4 names the file, and the node serves it to the control's token (on_http_access).
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let range = json!({ "start": now - 3600, "end": now - 3600 + CLIP_FRAMES as u64 / u64::from(FPS), "speed": 1 });
    let (status, d) = control.request("POST", &format!("/api/devices/{DEVICE}/channels/{}/download", CHANNELS[0]), &range.to_string());
    assert_eq!(status, 202, "{d}");
    let id = d["id"].as_str().unwrap().to_string();
    let writer = if d["node"] == "media-1" { &a } else { &b };
    assert!(matches!(next_event(&events), DeviceEvent::Invited { channel, .. } if channel == CHANNELS[0]));
    let done = wait_for("the download complete", Duration::from_secs(30), || {
        let (_, d) = control.request("GET", &format!("/api/downloads/{id}"), "");
        assert!(!matches!(d["state"].as_str(), Some("failed" | "cancelled")), "{d}");
        (d["state"] == "complete").then_some(d)
    });
    assert!(matches!(next_event(&events), DeviceEvent::Bye { channel } if channel == CHANNELS[0]), "the download's session ended");
    let url = done["url"].as_str().unwrap().to_string();
    let path = url.strip_prefix(&format!("http://{}", writer.http)).unwrap_or_else(|| panic!("{url} is not on the node that wrote it"));
    let (head, mp4) = http_get(writer.http, path, &[]);
    assert_eq!(status_of(&head), 200, "{head}");
    assert_eq!(mp4.len() as u64, done["bytes"].as_u64().unwrap(), "{done}");
    let file = work_dir().join("node-download.mp4");
    std::fs::write(&file, &mp4).unwrap();
    let frames = ffprobe(&file).frames;
    assert!(frames + 5 >= CLIP_FRAMES, "the clip's {CLIP_FRAMES} frames, about: {frames}");
    let forged = format!("{}?token=not-the-controls", path.split('?').next().unwrap());
    assert_eq!(status_of(&http_get(writer.http, &forged, &[]).0), 401, "a token the control did not make opens nothing");
    let (_, metrics) = writer.try_request("GET", "/metrics", &[("gmv-token", TOKEN)], b"").unwrap();
    for line in ["gmv_node_files_allowed_by_hook_total 1", "gmv_node_files_refused_by_hook_total 1"] {
        assert!(metrics.lines().any(|l| l == line), "{line} in the node's /metrics");
    }

    // kill -9 media-1: its sessions end (BYE) once its keepalives stop; asked again, its
    // channels play from media-2.
    a.kill();
    let lost: Vec<String> = on_node.iter().filter(|(_, n)| *n == "media-1").map(|(c, _)| c.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut byes = Vec::new();
    while byes.len() < lost.len() && Instant::now() < deadline {
        if let Ok(DeviceEvent::Bye { channel }) = events.recv_timeout(Duration::from_secs(1)) {
            byes.push(channel);
        }
    }
    byes.sort();
    let mut want = lost.clone();
    want.sort();
    assert_eq!(byes, want, "the sessions of the node that died end");
    assert_eq!(node_states(&control)["media-1"]["state"], "down");
    let (_, history) = control.request("GET", "/api/events?since=0&kind=media_node_down", "");
    let text = history.to_string();
    assert!(text.contains("media_node_down") && text.contains("media-1"), "{text}");
    for ch in &lost {
        let session = play(&control, ch);
        assert!(matches!(next_event(&events), DeviceEvent::Invited { .. }));
        assert_eq!(session["play"]["node"], "media-2");
        watch(session["play"]["flv"].as_str().unwrap(), &format!("node-again-{ch}.flv"));
    }
    stop.store(true, Ordering::SeqCst);
    device.join().unwrap();
    drop(b);
}

/// A node nobody listed announces itself with the control's announce secret (its
/// `on_server_started` carries its config) and gets streams; one with another secret is not
/// heard.
#[test]
fn a_node_announcing_itself_with_the_announce_secret_is_placed_on() {
    const ANNOUNCE: &str = "announce-secret-0123456789";
    let control_http: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    // The control first: the nodes' start hooks must find it.
    let control = Engine::start_at(control_http, 1, &format!("node:\n  announce_secret: \"{ANNOUNCE}\"\n"), "  no_viewer_stop_s: 0\n", &["--role", "control"]);
    let node = media_node_with_secret("media-x", control_http, ANNOUNCE);
    let _stranger = media_node_with_secret("media-y", control_http, "some-other-secret-0123");
    wait_for("the announced node up", Duration::from_secs(20), || (node_states(&control).get("media-x")?["state"] == "up").then_some(()));
    assert!(!node_states(&control).contains_key("media-y"), "another secret announces nothing");
    assert_eq!(node_states(&control)["media-x"]["api"], format!("http://{}", node.http));

    let (events, stop, device) = registered_device(&control);
    let session = play(&control, CHANNELS[0]);
    assert!(matches!(next_event(&events), DeviceEvent::Invited { .. }));
    assert_eq!(session["play"]["node"], "media-x");
    watch(session["play"]["flv"].as_str().unwrap(), "node-announced.flv");
    stop.store(true, Ordering::SeqCst);
    device.join().unwrap();
}
