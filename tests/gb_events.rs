//! Platform events end to end: a simulated device's alarm reaches an SSE client within a second
//! and a webhook receiver (a listener in the test) with a valid HMAC signature; a receiver
//! that accepts and never answers does not slow SIP; a malformed alarm is refused and counted;
//! the history survives a restart and SSE resumes from Last-Event-ID.

mod common;

use common::gb_sim::*;
use common::*;
use hmac::{Hmac, KeyInit, Mac};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SECRET: &str = "webhook-secret-0123456789";
const CAMERA: &str = "34020000001340000001";

fn alarm_body(sn: u32, priority: &str) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Notify>\r\n<CmdType>Alarm</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{CAMERA}</DeviceID>\r\n<AlarmPriority>{priority}</AlarmPriority>\r\n<AlarmMethod>5</AlarmMethod>\r\n<AlarmTime>2026-12-01T10:00:00</AlarmTime>\r\n<AlarmDescription>Motion at the gate</AlarmDescription>\r\n<Longitude>116.39</Longitude>\r\n<Latitude>39.91</Latitude>\r\n<Info>\r\n<AlarmType>2</AlarmType>\r\n</Info>\r\n</Notify>\r\n"
    )
    .into_bytes()
}

/// A webhook receiver: every POST's head and body, answered 200.
fn receiver() -> (u16, mpsc::Receiver<(String, Vec<u8>)>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in l.incoming().take(200) {
            let Ok(mut c) = conn else { continue };
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let (head, body) = read_response(&mut c);
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            if tx.send((head, body)).is_err() {
                return;
            }
        }
    });
    (port, rx)
}

/// A receiver that takes connections and never answers (a hung server).
fn black_hole() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in l.incoming().take(100) {
            held.push(c);
        }
    });
    port
}

/// An SSE client: each event's (id, kind, data JSON) as it arrives.
fn sse_client(engine: &Engine, last_event_id: Option<u64>) -> mpsc::Receiver<(u64, String, serde_json::Value)> {
    let mut s = TcpStream::connect(engine.http).unwrap();
    let resume = last_event_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
    write!(s, "GET /api/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\ngmv-token: {TOKEN}\r\n{resume}\r\n").unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(s);
        let mut line = String::new();
        let (mut id, mut kind) = (0, String::new());
        while r.read_line(&mut line).is_ok_and(|n| n > 0) {
            let l = line.trim_end().to_string();
            line.clear();
            if let Some(v) = l.strip_prefix("id: ") {
                id = v.parse().unwrap();
            } else if let Some(v) = l.strip_prefix("event: ") {
                kind = v.to_string();
            } else if let Some(v) = l.strip_prefix("data: ")
                && tx.send((id, kind.clone(), serde_json::from_str(v).unwrap())).is_err()
            {
                return;
            }
        }
    });
    rx
}

fn next_of(rx: &mpsc::Receiver<(u64, String, serde_json::Value)>, kind: &str, limit: Duration) -> (u64, serde_json::Value) {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (id, k, v) = rx.recv_timeout(left).unwrap_or_else(|_| panic!("no {kind} event within {limit:?}"));
        if k == kind {
            return (id, v);
        }
    }
}

/// The device's next request from the engine of this CmdType (answering each with 200).
fn engine_request(sim: &Sim, cmd_type: &str, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let Some(m) = sim.recv(deadline - Instant::now()) else { break };
        if m.is_request() {
            sim.reply(&m, 200, "OK", "", None);
            let text = String::from_utf8_lossy(m.body()).to_string();
            if text.contains(&format!("<CmdType>{cmd_type}</CmdType>")) {
                return Some(text);
            }
        }
    }
    None
}

#[test]
fn an_alarm_reaches_sse_and_a_signed_webhook_and_a_hung_receiver_slows_nothing() {
    let (port, hooks) = receiver();
    let hung = black_hole();
    let extra = format!(
        "webhooks:\n  - url: \"http://127.0.0.1:{port}/hooks/gmv\"\n    kinds: [alarm, device_online]\n    secret: \"{SECRET}\"\n  - url: \"http://127.0.0.1:{hung}/never\"\n    secret: \"{SECRET}\"\n"
    );
    let mut engine = Engine::start(1, &extra);
    let events = sse_client(&engine, None);
    std::thread::sleep(Duration::from_millis(200)); // the SSE request is in before the device comes

    let mut sim = Sim::new(engine.sip);
    assert_eq!(sim.register(PASSWORD, 3600).0, 200);
    let (_, online) = next_of(&events, "device_online", Duration::from_secs(5));
    assert_eq!(online["device_id"], DEVICE);

    let sent = Instant::now();
    let m = sim.request("MESSAGE", "alarm-1", "", Some("Application/MANSCDP+xml"), &alarm_body(41, "1"));
    sim.send(&m);
    let (alarm_id, alarm) = next_of(&events, "alarm", Duration::from_secs(5));
    let latency = sent.elapsed();
    assert!(latency < Duration::from_secs(1), "alarm reached SSE in {latency:?}");
    assert_eq!((alarm["device_id"].as_str(), alarm["channel_id"].as_str()), (Some(DEVICE), Some(CAMERA)));
    let data = &alarm["data"];
    assert_eq!((data["priority"].as_u64(), data["method"].as_u64(), data["alarm_type"].as_u64()), (Some(1), Some(5), Some(2)));
    assert_eq!(data["description"], "Motion at the gate");
    // The device gets its 200 and then the platform's Response, as GB/T 28181 asks.
    let response = engine_request(&sim, "Alarm", Duration::from_secs(5)).expect("a Response to the alarm");
    assert!(response.contains("<Response>") && response.contains("<SN>41</SN>") && response.contains("<Result>OK</Result>"), "{response}");

    // The webhook: signed, with the event.
    let (head, body) = loop {
        let (head, body) = hooks.recv_timeout(Duration::from_secs(5)).expect("webhook POST");
        if head.contains("X-Gmv-Event: alarm") {
            break (head, body);
        }
    };
    assert!(head.starts_with("POST /hooks/gmv HTTP/1.1"), "{head}");
    let signature = head.lines().find_map(|l| l.strip_prefix("X-Gmv-Signature: sha256=")).expect("signature header").to_string();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&body);
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(signature, expected, "HMAC-SHA256 of the body");
    let posted: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((posted["id"].as_u64(), posted["kind"].as_str()), (Some(alarm_id), Some("alarm")));

    // Many alarms while the second receiver hangs: keepalives are answered as fast as ever.
    for i in 0..30 {
        let m = sim.request("MESSAGE", &format!("alarm-burst-{i}"), "", Some("Application/MANSCDP+xml"), &alarm_body(100 + i, "2"));
        sim.send(&m);
    }
    let keepalive = format!(
        "<?xml version=\"1.0\"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<SN>9</SN>\r\n<DeviceID>{DEVICE}</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n"
    );
    for i in 0..5 {
        let m = sim.request("MESSAGE", &format!("ka-{i}"), "", Some("Application/MANSCDP+xml"), keepalive.as_bytes());
        let asked = Instant::now();
        sim.send(&m);
        let answered = wait_for("keepalive answer", Duration::from_secs(2), || {
            let r = sim.recv_response(Duration::from_millis(500))?;
            (r.call_id().as_deref() == Some(&format!("ka-{i}"))).then(|| asked.elapsed())
        });
        assert!(answered < Duration::from_millis(500), "keepalive answered in {answered:?}");
    }
    let burst: Vec<u64> = (0..30).map(|_| next_of(&events, "alarm", Duration::from_secs(5)).0).collect();
    assert_eq!(burst, (alarm_id + 1..alarm_id + 31).collect::<Vec<_>>(), "every alarm of the burst, in order");

    // A malformed alarm (priority 9): refused, counted, no event.
    let malformed_before = engine.request("GET", "/api/sip", "").1["counters"]["malformed"].as_u64().unwrap();
    let m = sim.request("MESSAGE", "alarm-bad", "", Some("Application/MANSCDP+xml"), &alarm_body(77, "9"));
    sim.send(&m);
    let r = wait_for("answer to the bad alarm", Duration::from_secs(2), || {
        sim.recv_response(Duration::from_millis(500)).filter(|r| r.call_id().as_deref() == Some("alarm-bad"))
    });
    assert_eq!(r.status(), Some(400));
    let (_, sip) = engine.request("GET", "/api/sip", "");
    assert_eq!(sip["counters"]["malformed"].as_u64(), Some(malformed_before + 1));
    assert_eq!(sip["counters"]["alarms"].as_u64(), Some(31));
    assert!(events.recv_timeout(Duration::from_millis(300)).is_err(), "no event for a malformed alarm");

    // History: JSON since a time; SSE resumes after an id. Persisted across a restart.
    let (_, history) = engine.request("GET", "/api/events?since=0&kind=alarm", "");
    assert_eq!(history["events"].as_array().map(Vec::len), Some(31));
    let resumed = sse_client(&engine, Some(alarm_id));
    let (first, _) = next_of(&resumed, "alarm", Duration::from_secs(5));
    assert_eq!(first, alarm_id + 1, "resumed right after the last id seen");
    wait_for("events on disk", Duration::from_secs(5), || {
        std::fs::read_to_string(engine.data_dir.join("events.jsonl")).ok().filter(|t| t.lines().filter(|l| l.contains("\"alarm\"")).count() == 31)
    });
    // The live receiver got all it asked for (device_online, 31 alarms) while the other hung.
    wait_for("webhook deliveries", Duration::from_secs(10), || {
        let (_, sip) = engine.request("GET", "/api/sip", "");
        (sip["webhooks"]["delivered"].as_u64() == Some(32)).then_some(())
    });
    engine.crash_and_restart();
    let (_, history) = engine.request("GET", &format!("/api/events?after={alarm_id}&kind=alarm&limit=5"), "");
    let ids: Vec<u64> = history["events"].as_array().unwrap().iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, (alarm_id + 1..alarm_id + 6).collect::<Vec<_>>());
}

/// A stranger's REGISTER with a wrong password is an event with its reason.
#[test]
fn a_refused_registration_is_an_event_with_its_reason() {
    let engine = Engine::start(1, "");
    let events = sse_client(&engine, None);
    std::thread::sleep(Duration::from_millis(200));
    let mut sim = Sim::new(engine.sip);
    assert_eq!(sim.register("wrong-password", 3600).0, 403);
    let (_, e) = next_of(&events, "registration_failed", Duration::from_secs(5));
    assert_eq!((e["device_id"].as_str(), e["data"]["reason"].as_str()), (Some(DEVICE), Some("wrong password")));
}

/// A SUBSCRIBE the device got: its Event header, Call-ID, CSeq and Expires.
#[derive(Debug, Clone)]
struct Subscribe {
    event: String,
    call_id: String,
    cseq: u32,
    expires: u32,
}

const CH1: &str = "34020000001310000001";
const CH2: &str = "34020000001310000002";

/// Answers what the engine asks (a two-channel catalog, 200 to SUBSCRIBE granting what was
/// asked) until `done` holds for the SUBSCRIBEs seen, within `limit`.
fn serve_until(sim: &mut Sim, seen: &mut Vec<Subscribe>, limit: Duration, done: impl Fn(&[Subscribe]) -> bool) {
    let deadline = Instant::now() + limit;
    while !done(seen) {
        assert!(Instant::now() < deadline, "device not asked what was expected; got {seen:?}");
        let Some(m) = sim.recv(Duration::from_millis(100)) else { continue };
        if !m.is_request() {
            continue;
        }
        let text = String::from_utf8_lossy(m.body()).to_string();
        match m.method().map(|m| m.to_string()).as_deref() {
            Some("SUBSCRIBE") => {
                let expires = m.expires().unwrap_or(0);
                sim.reply(&m, 200, "OK", &format!("Expires: {expires}\r\n"), None);
                let event = m.header("Event").unwrap_or_default();
                seen.push(Subscribe { event, call_id: m.call_id().unwrap(), cseq: m.cseq().unwrap().0, expires });
            }
            _ => {
                sim.reply(&m, 200, "OK", "", None);
                if text.contains("<CmdType>Catalog</CmdType>") && text.contains("<Query>") {
                    let sn = gmv::proto::sip::manscdp::element(&text, "SN").unwrap().to_string();
                    let body = format!(
                        "<?xml version=\"1.0\"?>\r\n<Response>\r\n<CmdType>Catalog</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{DEVICE}</DeviceID>\r\n<SumNum>2</SumNum>\r\n<DeviceList Num=\"2\">\r\n<Item><DeviceID>{CH1}</DeviceID><Name>Gate</Name><Status>ON</Status></Item>\r\n<Item><DeviceID>{CH2}</DeviceID><Name>Yard</Name><Status>ON</Status></Item>\r\n</DeviceList>\r\n</Response>\r\n"
                    );
                    let r = sim.request("MESSAGE", &format!("cat-{sn}"), "", Some("Application/MANSCDP+xml"), body.as_bytes());
                    sim.send(&r);
                }
            }
        }
    }
}

fn catalog_notify(items: &[(&str, &str)]) -> Vec<u8> {
    let mut xml = format!(
        "<?xml version=\"1.0\"?>\r\n<Notify>\r\n<CmdType>Catalog</CmdType>\r\n<SN>300</SN>\r\n<DeviceID>{DEVICE}</DeviceID>\r\n<SumNum>{}</SumNum>\r\n<DeviceList Num=\"{}\">\r\n",
        items.len(),
        items.len()
    );
    for (id, event) in items {
        xml.push_str(&format!("<Item>\r\n<DeviceID>{id}</DeviceID>\r\n<Name>cam</Name>\r\n<Event>{event}</Event>\r\n</Item>\r\n"));
    }
    xml.push_str("</DeviceList>\r\n</Notify>\r\n");
    xml.into_bytes()
}

/// The device's answer to a NOTIFY it sent.
fn notify(sim: &mut Sim, call_id: &str, event: &str, body: &[u8]) -> u16 {
    let m = sim.request("NOTIFY", call_id, &format!("Event: {event}\r\nSubscription-State: active\r\n"), Some("Application/MANSCDP+xml"), body);
    sim.send(&m);
    wait_for("the answer to a NOTIFY", Duration::from_secs(5), || {
        sim.recv_response(Duration::from_millis(200)).filter(|r| r.call_id().as_deref() == Some(call_id))
    })
    .status()
    .unwrap()
}

fn channels(engine: &Engine) -> Vec<(String, String)> {
    let (_, v) = engine.request("GET", &format!("/api/devices/{DEVICE}/channels"), "");
    v["channels"].as_array().map_or_else(Vec::new, |c| {
        c.iter().map(|c| (c["device_id"].as_str().unwrap().to_string(), c["status"].as_str().unwrap().to_string())).collect()
    })
}

#[test]
fn subscriptions_follow_the_device_and_their_notifications_apply_whole() {
    let engine = Engine::start_with(1, "", "  subscribe: [catalog, alarm, mobile_position]\n  subscribe_expires_s: 10\n", None);
    let events = sse_client(&engine, None);
    std::thread::sleep(Duration::from_millis(200));
    let mut sim = Sim::new(engine.sip);
    assert_eq!(sim.register(PASSWORD, 3600).0, 200);
    let mut seen = Vec::new();
    serve_until(&mut sim, &mut seen, Duration::from_secs(10), |s| s.len() >= 3);
    let events_asked: Vec<&str> = seen.iter().map(|s| s.event.split(';').next().unwrap()).collect();
    assert_eq!(events_asked, ["Catalog", "presence", "presence"], "{seen:?}");
    assert!(seen.iter().all(|s| s.expires == 10));
    serve_until(&mut sim, &mut seen, Duration::from_secs(5), |_| true);
    wait_for("the catalog", Duration::from_secs(5), || (channels(&engine).len() == 2).then_some(()));

    // A channel goes away, another goes off.
    assert_eq!(notify(&mut sim, "n-1", "Catalog", &catalog_notify(&[(CH2, "DEL"), (CH1, "OFF")])), 200);
    assert_eq!(channels(&engine), vec![(CH1.to_string(), "OFF".to_string())]);
    next_of(&events, "catalog_changed", Duration::from_secs(5));
    // A notification with an event the standard does not name is refused whole.
    let malformed = engine.request("GET", "/api/sip", "").1["counters"]["malformed"].as_u64().unwrap();
    assert_eq!(notify(&mut sim, "n-2", "Catalog", &catalog_notify(&[(CH1, "ON"), (CH2, "EXPLODE")])), 400);
    assert_eq!(channels(&engine), vec![(CH1.to_string(), "OFF".to_string())], "nothing of it applied");
    assert_eq!(engine.request("GET", "/api/sip", "").1["counters"]["malformed"].as_u64(), Some(malformed + 1));
    // ADD brings a channel (back) under the same id.
    assert_eq!(notify(&mut sim, "n-3", "Catalog", &catalog_notify(&[(CH2, "ADD")])), 200);
    assert_eq!(channels(&engine).len(), 2);

    // A position.
    let position = format!(
        "<?xml version=\"1.0\"?>\r\n<Notify>\r\n<CmdType>MobilePosition</CmdType>\r\n<SN>7</SN>\r\n<DeviceID>{DEVICE}</DeviceID>\r\n<Time>2026-12-01T10:00:00</Time>\r\n<Longitude>116.397</Longitude>\r\n<Latitude>39.909</Latitude>\r\n<Speed>12.5</Speed>\r\n<Direction>90</Direction>\r\n</Notify>\r\n"
    );
    assert_eq!(notify(&mut sim, "n-4", "presence", position.as_bytes()), 200);
    let (_, p) = next_of(&events, "position", Duration::from_secs(5));
    assert_eq!((p["data"]["longitude"].as_f64(), p["data"]["speed"].as_f64()), (Some(116.397), Some(12.5)));
    let (_, d) = engine.request("GET", &format!("/api/devices/{DEVICE}"), "");
    assert_eq!(d["position"]["latitude"].as_f64(), Some(39.909), "{d}");
    assert_eq!(d["subscriptions"].as_array().map(|s| s.iter().filter(|s| s["active"] == true).count()), Some(3), "{d}");

    // Refreshed in its dialog before the 10 s run out.
    let first = seen[0].clone();
    serve_until(&mut sim, &mut seen, Duration::from_secs(12), |s| s.iter().any(|x| x.call_id == first.call_id && x.cseq > first.cseq));
    // The device registers anew: fresh subscriptions (new dialogs).
    assert_eq!(sim.register(PASSWORD, 0).0, 200);
    assert_eq!(sim.register(PASSWORD, 3600).0, 200);
    let before = seen.len();
    serve_until(&mut sim, &mut seen, Duration::from_secs(10), |s| {
        s[before..].iter().any(|x| x.event.starts_with("Catalog") && x.cseq == 1 && x.call_id != first.call_id)
    });
    // Removed: each subscription ended with Expires 0.
    serve_until(&mut sim, &mut seen, Duration::from_secs(3), |s| s[before..].len() >= 3);
    assert_eq!(engine.request("DELETE", &format!("/api/devices/{DEVICE}"), "").0, 200);
    let before = seen.len();
    serve_until(&mut sim, &mut seen, Duration::from_secs(5), |s| s[before..].iter().filter(|x| x.expires == 0).count() == 3);
    assert_eq!(engine.request("GET", &format!("/api/devices/{DEVICE}"), "").0, 404);
}
