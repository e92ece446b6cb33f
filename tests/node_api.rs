//! gmv as a media node on ZLMediaKit's node API: the exchanges and hooks recorded from a real
//! MediaServer (`../shared/corpus/zlm/`) are replayed against gmv and its answers and hook
//! bodies compared field by field (times, counters, ids and ports by type only), with media
//! pushed as the recording did: UDP, TCP passive, TCP active, a port taking any SSRC, a publish
//! refused by `on_publish`, a play refused by `on_play`, an unwatched stream closed by
//! `on_stream_none_reader` and a stream that stops timing out.

mod common;

use common::*;
use serde_json::{Value, json};
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SECRET: &str = "fixture-secret-0123456789";
const S1: &str = "34020000001320000001_34020000001310000001";
const S2: &str = "34020000001320000001_34020000001310000002";
const S3: &str = "34020000001320000001_34020000001310000003";
const S4: &str = "34020000001320000001_34020000001310000004";
const S5: &str = "34020000001320000001_34020000001310000005";

/// Fields whose values differ on every run (ZLMediaKit's README lists them): compared by type.
const VOLATILE: &[&str] = &[
    "createStamp", "aliveSecond", "currentStamp", "start_time", "time_len", "file_size", "file_name", "file_path", "folder", "url",
    "bytesSpeed", "totalBytes", "frames", "key_frames", "duration", "loss", "gop_interval_ms", "gop_size", "readerCount",
    "totalReaderCount", "hook_index", "port", "peer_port", "local_port", "id", "cookie", "data", "changed",
    // The bind address: gmv's tests bind 127.0.0.1, the recording's MediaServer "::".
    "local_ip", "ip",
    // gmv makes HLS on demand (true once asked), ZLMediaKit always.
    "isRecordingHLS",
    // The recording pushed 640x480, these tests push their 320x240 clip (checked on its own).
    "width", "height",
];

fn fixture(kind: &str, name: &str) -> Value {
    let dir = corpus_dir("zlm").expect("checked by the test").join(kind);
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(name))
        .unwrap_or_else(|| panic!("no fixture {name} in {}", dir.display()));
    serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap()
}

/// Every field of `theirs` is in `ours` with the same value (volatile ones: the same type).
/// Tracks are matched by codec (ZLMediaKit adds a silent AAC track gmv does not invent).
fn assert_like(ours: &Value, theirs: &Value, at: &str) {
    match (ours, theirs) {
        (Value::Object(o), Value::Object(t)) => {
            for (k, tv) in t {
                let ov = o.get(k).unwrap_or_else(|| panic!("{at}.{k} missing in {ours}"));
                if k == "tracks" {
                    for track in ov.as_array().unwrap() {
                        let theirs = tv.as_array().unwrap().iter().find(|x| x["codec_id_name"] == track["codec_id_name"]);
                        assert_like(track, theirs.unwrap_or_else(|| panic!("{at}: no recorded track like {track}")), &format!("{at}.tracks"));
                    }
                    assert!(!ov.as_array().unwrap().is_empty(), "{at}: no track");
                } else if VOLATILE.contains(&k.as_str()) {
                    assert_eq!(kind(ov), kind(tv), "{at}.{k}: {ov} is not like {tv}");
                } else {
                    assert_like(ov, tv, &format!("{at}.{k}"));
                }
            }
        }
        (Value::Number(o), Value::Number(t)) if o.is_f64() || t.is_f64() => assert_eq!(o.as_f64(), t.as_f64(), "{at}"),
        _ => assert_eq!(ours, theirs, "{at}"),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// One recorded hook request.
#[derive(Debug, Clone)]
struct Hook {
    name: String,
    body: Value,
    headers: String,
}

/// Answers hooks as the recording's receiver did (and wvp does): `on_publish` refused for S5,
/// `on_play` refused for `callId=bad`, `on_stream_none_reader` closing S2 only.
fn hook_receiver() -> (SocketAddr, Arc<Mutex<Vec<Hook>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let (head, body) = read_response(&mut conn);
            let name = head.split_whitespace().nth(1).unwrap_or("").rsplit('/').next().unwrap_or("").to_string();
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let stream = body["stream"].as_str().unwrap_or("");
            let answer = match name.as_str() {
                "on_publish" if stream == S5 => json!({"code": -1, "msg": "fail"}),
                "on_publish" => json!({"code": 0, "msg": "success", "enable_audio": true, "enable_mp4": false}),
                "on_play" if body["params"].as_str().unwrap_or("").contains("callId=bad") => json!({"code": 401, "msg": "Unauthorized"}),
                "on_stream_none_reader" => json!({"code": 0, "close": stream == S2}),
                _ => json!({"code": 0, "msg": "success"}),
            };
            log.lock().unwrap().push(Hook { name, body, headers: head });
            let text = answer.to_string();
            let _ = conn.write_all(format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}", text.len()).as_bytes());
        }
    });
    (addr, seen)
}

fn hooks_named(seen: &Arc<Mutex<Vec<Hook>>>, name: &str, stream: &str) -> Vec<Hook> {
    let key = if name == "on_rtp_server_timeout" { "stream_id" } else { "stream" };
    seen.lock().unwrap().iter().filter(|h| h.name == name && (stream.is_empty() || h.body[key] == stream)).cloned().collect()
}

fn wait_hook(seen: &Arc<Mutex<Vec<Hook>>>, name: &str, stream: &str, n: usize) -> Vec<Hook> {
    wait_for(&format!("{n} {name} hook(s) for {stream:?}"), Duration::from_secs(30), || {
        let got = hooks_named(seen, name, stream);
        (got.len() >= n).then_some(got)
    })
}

/// A node API call (POST form, as wvp sends it): (status, content type, body).
fn call(engine: &Engine, name: &str, form: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(engine.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let req = format!(
        "POST /index/api/{name} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        engine.http,
        form.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let (head, body) = read_response(&mut s);
    let ctype = head.lines().find_map(|l| l.strip_prefix("Content-Type: ")).unwrap_or("").trim().to_string();
    (status_of(&head), ctype, body)
}

/// Replays recorded exchange `name` (its form with `changes` applied) and returns gmv's answer.
fn replay(engine: &Engine, name: &str, changes: &[(&str, &str)]) -> (Value, Value) {
    let x = fixture("exchanges", name);
    let mut form: Vec<(String, String)> = x["request"]["body"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).collect();
    for (k, v) in changes {
        match form.iter_mut().find(|(fk, _)| fk == k) {
            Some(slot) => slot.1 = v.to_string(),
            None => form.push((k.to_string(), v.to_string())),
        }
    }
    let body: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
    let call_name = x["request"]["path"].as_str().unwrap().rsplit('/').next().unwrap();
    let (status, ctype, answer) = call(engine, call_name, &body);
    assert_eq!(status, x["response"]["status"].as_u64().unwrap() as u16, "{name}: status");
    assert_eq!(ctype, "application/json; charset=utf-8", "{name}");
    (serde_json::from_slice(&answer).unwrap_or_else(|e| panic!("{name}: {e}: {}", String::from_utf8_lossy(&answer))), x["response"]["body"].clone())
}

/// Replays and compares field by field.
fn check(engine: &Engine, name: &str, changes: &[(&str, &str)]) -> Value {
    let (ours, theirs) = replay(engine, name, changes);
    assert_like(&ours, &theirs, name);
    ours
}

/// Where a sender sends: UDP to an address, or RFC 4571 on a TCP connection.
enum Out {
    Udp(UdpSocket, SocketAddr),
    Tcp(TcpStream),
}

/// UDP to the port an `openRtpServer` answer names.
fn udp_to(opened: &Value) -> Out {
    Out::Udp(udp_sender(), format!("127.0.0.1:{}", port_of(opened)).parse().unwrap())
}

/// A device sending the test clip as PS over RTP, again and again, until stopped or cut off.
struct Sender {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Sender {
    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    fn join(self) {
        self.stop();
        self.thread.join().unwrap();
    }
}

fn push(out: Out, ssrc: u32) -> Sender {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        let stop = flag;
        let frames = gmv::sim::ps_rtp_packets(&h264_frames(), ssrc);
        let mut out = out;
        while !stop.load(Ordering::SeqCst) {
            for frame in &frames {
                for p in frame {
                    let sent = match &mut out {
                        Out::Udp(s, to) => s.send_to(p, *to).map(drop),
                        Out::Tcp(s) => s.write_all(&gmv::sim::rfc4571(p)),
                    };
                    if sent.is_err() {
                        return; // closed by the node
                    }
                }
                std::thread::sleep(Duration::from_millis(1000 / u64::from(FPS)));
                if stop.load(Ordering::SeqCst) {
                    return;
                }
            }
        }
    });
    Sender { stop, thread }
}

/// A port of the node's RTP range (`openRtpServer` refuses one outside it, unlike ZLMediaKit)
/// that no RTP server holds and that is free to bind, from the top of the range down.
fn port_in_range(engine: &Engine) -> u16 {
    let (_, _, body) = call(engine, "getServerConfig", &format!("secret={SECRET}"));
    let config: Value = serde_json::from_slice(&body).unwrap();
    let range = config["data"][0]["rtp_proxy.port_range"].as_str().unwrap().to_string();
    let (min, max) = range.split_once('-').map(|(a, b)| (a.parse::<u16>().unwrap(), b.parse::<u16>().unwrap())).unwrap();
    let (_, _, body) = call(engine, "listRtpServer", &format!("secret={SECRET}"));
    let listed: Value = serde_json::from_slice(&body).unwrap();
    let held: Vec<u64> = listed["data"].as_array().map(|a| a.iter().filter_map(|s| s["port"].as_u64()).collect()).unwrap_or_default();
    (min..=max)
        .rev()
        .find(|p| !held.contains(&u64::from(*p)) && UdpSocket::bind(("127.0.0.1", *p)).is_ok() && TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .unwrap_or_else(|| panic!("no free port in the node's range {range}"))
}

fn port_of(v: &Value) -> u16 {
    v["port"].as_u64().unwrap() as u16
}

fn node_yaml(hooks: SocketAddr) -> String {
    let urls: Vec<String> = gmv::config::HOOK_NAMES.iter().map(|n| format!("    {n}: \"http://{hooks}/index/hook/{n}\"\n")).collect();
    format!(
        "node:\n  secret: \"{SECRET}\"\n  media_server_id: zlm-fixture\n  keepalive_interval_s: 1\n  stream_none_reader_delay_ms: 1500\n  max_stream_wait_ms: 1500\n  rtp_server_timeout_s: 4\n  hook_retry_delay_ms: 200\n  hooks:\n{}",
        urls.concat()
    )
}

#[test]
fn node_api_answers_and_hooks_match_a_recorded_zlmediakit() {
    if corpus_dir("zlm").is_none() {
        return;
    }
    let (hooks, seen) = hook_receiver();
    let engine = Engine::start(2, &node_yaml(hooks));

    // Started: the configuration, as ZLMediaKit's flat map, for the keys wvp reads.
    let started = wait_hook(&seen, "on_server_started", "", 1).remove(0);
    assert!(started.headers.contains("X-VHOST: __defaultVhost__"), "{}", started.headers);
    let recorded = fixture("hooks", "01-on_server_started")["body"].clone();
    for key in ["api.secret", "general.mediaServerId", "http.port", "rtp_proxy.port_range", "hook.on_play", "hook.on_publish", "hook.enable", "rtsp.port", "rtmp.port"] {
        assert_eq!(kind(&started.body[key]), kind(&recorded[key]), "{key}");
    }
    assert_eq!(started.body["mediaServerId"], "zlm-fixture");
    assert_eq!(started.body["general.mediaServerId"], "zlm-fixture");
    assert_eq!(started.body["hook.on_play"], format!("http://{hooks}/index/hook/on_play"));

    // Configuration, empty state and the error shapes.
    let config = check(&engine, "01-getServerConfig", &[]);
    assert_eq!(config["data"][0]["api.secret"], SECRET);
    for x in ["02-setServerConfig-one-key", "03-setServerConfig-changed-key", "04-setServerConfig-wvp-bulk"] {
        check(&engine, x, &[]);
    }
    let (unknown_key, recorded) = replay(&engine, "05-setServerConfig-unknown-key", &[]);
    assert_eq!(unknown_key, recorded, "an unknown key changes nothing");
    // wvp's bulk form set every hook to the recording's receiver: point them back here.
    let back: String = gmv::config::HOOK_NAMES.iter().map(|n| format!("&hook.{n}=http://{hooks}/index/hook/{n}")).collect();
    let (_, _, answer) = call(&engine, "setServerConfig", &format!("secret={SECRET}&hook.alive_interval=1.0{back}"));
    assert_eq!(serde_json::from_slice::<Value>(&answer).unwrap()["code"], 0);
    check(&engine, "06-version", &[]);
    for x in [
        "07-getMediaList-empty",
        "08-getMediaList-empty-filtered",
        "09-isMediaOnline-offline",
        "10-getMediaInfo-offline",
        "11-listRtpServer-empty",
        "12-getRtpInfo-unknown",
        "13-err-wrong-secret",
        "14-err-no-secret",
        "17-err-openRtpServer-missing-port",
        "18-err-openRtpServer-missing-stream_id",
        "19-err-closeRtpServer-missing-stream_id",
        "20-err-getMediaInfo-missing-args",
    ] {
        check(&engine, x, &[]);
    }
    let (head, body) = http_get(engine.http, "/index/api/getServerConfig?secret=wrong-secret", &[]);
    assert_like(&serde_json::from_slice(&body).unwrap(), &fixture("exchanges", "15-err")["response"]["body"], "15 (GET)");
    assert_eq!(status_of(&head), 200);
    let (status, _, body) = call(&engine, "noSuchApi", &format!("secret={SECRET}"));
    assert_eq!((status, body.len()), (404, 0), "16: an unknown call is 404 with no body");

    // RTP servers: UDP with an SSRC (S1), TCP passive on a fixed port without one (S2), TCP
    // active (S3), and one more; a name taken twice and a port taken twice are refused.
    let s1 = check(&engine, "21-openRtpServer-udp-port0-ssrc", &[]);
    check(&engine, "22-openRtpServer-same-stream_id-again", &[]);
    let fixed = port_in_range(&engine).to_string();
    let s2 = check(&engine, "23-openRtpServer-tcp-passive-fixed-port-nossrc", &[("port", &fixed)]);
    assert_eq!(port_of(&s2).to_string(), fixed);
    let (taken, recorded) = replay(&engine, "24-openRtpServer-fixed-port-in-use", &[("port", &fixed)]);
    assert_eq!(taken["code"], recorded["code"]);
    assert!(taken["msg"].as_str().unwrap().starts_with("创建rtp端口"), "{taken}");
    check(&engine, "25-openRtpServer-tcp-active-port0", &[]);
    check(&engine, "26-openRtpServer-reuseport-onlytrack", &[]);
    let listed = check(&engine, "27-listRtpServer-with-servers", &[]);
    assert_eq!(listed["data"].as_array().unwrap().len(), 4);
    check(&engine, "28-getRtpInfo-opened-no-data", &[]);
    check(&engine, "29-updateRtpServerSSRC-S2", &[]);
    check(&engine, "30-updateRtpServerSSRC-unknown", &[]);
    check(&engine, "31-pauseRtpCheck-no-data-yet", &[]);
    let device = TcpListener::bind("127.0.0.1:0").unwrap();
    let device_port = device.local_addr().unwrap().port().to_string();
    check(&engine, "32-connectRtpServer", &[("dst_port", &device_port)]);
    let (_conn, from) = device.accept().unwrap();
    assert_eq!(from.ip().to_string(), "127.0.0.1", "the node connected to the device");
    check(&engine, "33-connectRtpServer-unknown-stream", &[]);
    check(&engine, "34-closeRtpServer-existing-S3", &[]);
    check(&engine, "35-closeRtpServer-existing-tmp", &[]);
    check(&engine, "36-closeRtpServer-not-existing", &[]);

    // S1 over UDP: published, announced per schema, listed, playable.
    let s1_sender = push(udp_to(&s1), 100_000_001);
    let publish = wait_hook(&seen, "on_publish", S1, 1).remove(0);
    assert_like(&publish.body, &fixture("hooks", "03-on_publish")["body"], "on_publish");
    for (schema, recorded) in [("rtsp", "06-on_stream_changed-regist-rtsp"), ("rtmp", "05-on_stream_changed-regist-rtmp"), ("hls", "08-on_stream_changed-regist-hls")] {
        let changed = wait_for(&format!("on_stream_changed {schema}"), Duration::from_secs(10), || {
            hooks_named(&seen, "on_stream_changed", S1).into_iter().find(|h| h.body["schema"] == schema)
        });
        assert_like(&changed.body, &fixture("hooks", recorded)["body"], &format!("regist {schema}"));
        assert_eq!(changed.body["regist"], true);
    }
    let all = check(&engine, "37-getMediaList-online-all", &[]);
    assert_eq!(all["data"].as_array().unwrap().len(), 3, "one entry per schema");
    check(&engine, "38-getMediaList-online-filtered-rtsp", &[]);
    check(&engine, "39-isMediaOnline-online", &[]);
    let info = check(&engine, "40-getMediaInfo-online", &[]);
    let video = info["tracks"].as_array().unwrap().iter().find(|t| t["codec_id_name"] == "H264").unwrap().clone();
    assert_eq!((video["width"].as_u64(), video["height"].as_u64(), video["fps"].as_f64()), (Some(u64::from(WIDTH)), Some(u64::from(HEIGHT)), Some(25.0)));
    let rtp_info = check(&engine, "41-getRtpInfo-online", &[]);
    assert_eq!(rtp_info["peer_ip"], "127.0.0.1");
    check(&engine, "43-pauseRtpCheck", &[]);
    check(&engine, "44-resumeRtpCheck", &[]);
    check(&engine, "45-pauseRtpCheck-unknown", &[]);

    // Viewers on ZLMediaKit's URL: on_play allows one, refuses `callId=bad`; an unknown stream
    // is not found after the wait.
    let out = work_dir().join("node-s1.flv");
    let viewer = spawn_viewer(engine.http, format!("/rtp/{S1}.live.flv?callId=fixture-call-1"), vec![], out.clone(), Duration::from_secs(3));
    let (status, bytes) = viewer.join().unwrap();
    assert_eq!(status, 200);
    let flv = std::fs::read(&out).unwrap();
    assert!(flv.starts_with(b"FLV") && bytes > 10_000, "{bytes} bytes");
    assert!(flv_tags(&flv).iter().any(|(kind, _, data)| *kind == 9 && data.first() == Some(&0x17)), "a keyframe");
    let play = wait_hook(&seen, "on_play", S1, 1).remove(0);
    assert_like(&play.body, &fixture("hooks", "09-on_play")["body"], "on_play");
    let (head, body) = http_get(engine.http, &format!("/rtp/{S1}.live.flv?callId=bad"), &[]);
    let recorded = fixture("exchanges", "47-play-flv-S1-on_play-denied")["response"].clone();
    assert_eq!(status_of(&head), 401);
    assert!(head.contains("Content-Type: text/plain; charset=utf-8"), "{head}");
    assert_eq!(String::from_utf8_lossy(&body), recorded["body"].as_str().unwrap());
    let (head, _) = http_get(engine.http, "/rtp/no_such_stream.live.flv", &[]);
    assert_eq!(status_of(&head), 404);
    let not_found = wait_hook(&seen, "on_stream_not_found", "no_such_stream", 1).remove(0);
    assert_like(&not_found.body, &fixture("hooks", "13-on_stream_not_found")["body"], "on_stream_not_found");
    // HLS on ZLMediaKit's URL goes to gmv's playlist with a token for the stream.
    let (head, _) = http_get(engine.http, &format!("/rtp/{S1}/hls.m3u8?callId=fixture-call-2"), &[]);
    assert_eq!(status_of(&head), 302, "{head}");
    let location = head.lines().find_map(|l| l.strip_prefix("Location: ")).unwrap().trim().to_string();
    let playlist = wait_for("an HLS playlist with a segment", Duration::from_secs(20), || {
        let (head, body) = http_get(engine.http, &location, &[]);
        (status_of(&head) == 200 && String::from_utf8_lossy(&body).contains(".ts")).then_some(body)
    });
    assert!(String::from_utf8_lossy(&playlist).starts_with("#EXTM3U"));
    // ZLMediaKit's HLS-fMP4 URL (`hls.fmp4.m3u8`) goes to the fMP4 playlist.
    let (head, _) = http_get(engine.http, &format!("/rtp/{S1}/hls.fmp4.m3u8?callId=fixture-call-2"), &[]);
    assert_eq!(status_of(&head), 302, "{head}");
    let location = head.lines().find_map(|l| l.strip_prefix("Location: ")).unwrap().trim().to_string();
    assert!(location.ends_with("/index.fmp4.m3u8"), "{location}");
    let playlist = wait_for("an fMP4 HLS playlist with a segment", Duration::from_secs(20), || {
        let (head, body) = http_get(engine.http, &location, &[]);
        (status_of(&head) == 200 && String::from_utf8_lossy(&body).contains(".m4s")).then_some(body)
    });
    assert!(String::from_utf8_lossy(&playlist).contains("#EXT-X-MAP:URI=\"init-"));

    // Nobody watches S1 now (past the HLS requests): asked, answered close:false, asked again.
    let none = wait_hook(&seen, "on_stream_none_reader", S1, 1).remove(0);
    assert_like(&none.body, &fixture("hooks", "15-on_stream_none_reader")["body"], "on_stream_none_reader");

    // Recording (on_record_mp4 when the file closes) and a snapshot.
    check(&engine, "50-isRecording-before", &[]);
    check(&engine, "51-startRecord-mp4", &[]);
    check(&engine, "52-isRecording-during", &[]);
    std::thread::sleep(Duration::from_secs(3)); // a few GOPs into the file
    check(&engine, "53-stopRecord-mp4", &[]);
    let mp4 = wait_hook(&seen, "on_record_mp4", S1, 1).remove(0);
    assert_like(&mp4.body, &fixture("hooks", "18-on_record_mp4")["body"], "on_record_mp4");
    assert!(mp4.body["file_size"].as_u64().unwrap() > 10_000);
    assert!(PathBuf::from(mp4.body["file_path"].as_str().unwrap()).exists(), "{}", mp4.body);
    check(&engine, "54-isRecording-after", &[]);
    check(&engine, "56-startRecord-unknown-stream", &[]);
    let x = fixture("exchanges", "57-getSnap-async-first");
    let (head, jpeg) = http_get(engine.http, x["request"]["url"].as_str().unwrap(), &[]);
    assert_eq!(status_of(&head), 200, "{head}");
    assert!(head.contains("Content-Type: image/jpeg") && jpeg.starts_with(&[0xff, 0xd8]), "{head}");
    // Sending S1 on (cascade): UDP to a receiver here, stopped; stopping again fails; an
    // unknown stream; a passive send nobody connects to ends, told by on_send_rtp_stopped.
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    receiver.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let dst = receiver.local_addr().unwrap().port().to_string();
    check(&engine, "59-startSendRtp-udp", &[("dst_port", &dst)]);
    let mut packet = [0u8; 2048];
    let (n, _) = receiver.recv_from(&mut packet).unwrap();
    assert!(n > 12 && packet[1] & 0x7f == 96, "RTP with payload type 96");
    assert_eq!(u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]), 200_000_001, "the SSRC asked for");
    check(&engine, "60-stopSendRtp", &[]);
    check(&engine, "61-stopSendRtp-not-sending", &[]);
    check(&engine, "62-startSendRtp-unknown-stream", &[]);
    check(&engine, "63-startSendRtpPassive", &[("close_delay_ms", "1000")]);
    let stopped = wait_for("on_send_rtp_stopped of the passive send", Duration::from_secs(10), || {
        hooks_named(&seen, "on_send_rtp_stopped", S1).into_iter().find(|h| h.body["ssrc"] == "200000002")
    });
    let recorded = fixture("hooks", "24-on_send_rtp_stopped")["body"].clone();
    for key in ["app", "stream", "vhost", "params", "ssrc", "originType", "originTypeStr", "originUrl", "mediaServerId"] {
        assert_eq!(stopped.body[key], recorded[key], "on_send_rtp_stopped.{key}");
    }
    // Why it ended is gmv's own (ZLMediaKit's recording saw its peer hang up).
    assert!(stopped.body["err"].is_number() && stopped.body["msg"].as_str().unwrap().contains("timeout"), "{}", stopped.body);

    // S2's first server got no data and timed out; reopened, it takes its SSRC over TCP; its
    // viewer leaves and on_stream_none_reader closes it (close:true).
    let timeout = wait_hook(&seen, "on_rtp_server_timeout", S2, 1).remove(0);
    assert_like(&timeout.body, &fixture("hooks", "16-on_rtp_server_timeout")["body"], "on_rtp_server_timeout");
    let fixed = port_in_range(&engine).to_string();
    let s2 = check(&engine, "64-openRtpServer-tcp-passive-fixed-port-S2-reopen", &[("port", &fixed)]);
    check(&engine, "65-updateRtpServerSSRC-S2-reopened", &[]);
    let s2_sender = push(Out::Tcp(TcpStream::connect(("127.0.0.1", port_of(&s2))).unwrap()), 100_000_002);
    wait_hook(&seen, "on_publish", S2, 1);
    check(&engine, "66-getRtpInfo-S2-tcp", &[]);
    let viewer = spawn_viewer(engine.http, format!("/rtp/{S2}.live.flv"), vec![], work_dir().join("node-s2.flv"), Duration::from_secs(2));
    assert_eq!(viewer.join().unwrap().0, 200);
    wait_hook(&seen, "on_stream_none_reader", S2, 1);
    for (schema, recorded) in [("rtsp", "36-on_stream_changed-unregist-rtsp"), ("rtmp", "40-on_stream_changed-unregist-rtmp"), ("hls", "38-on_stream_changed-unregist-hls")] {
        let gone = wait_for(&format!("S2 unregist {schema}"), Duration::from_secs(10), || {
            hooks_named(&seen, "on_stream_changed", S2).into_iter().find(|h| h.body["schema"] == schema && h.body["regist"] == false)
        });
        assert_like(&gone.body, &fixture("hooks", recorded)["body"], &format!("unregist {schema}"));
    }
    check(&engine, "68-getMediaList-after-S2-closed", &[]);
    wait_for("S2's sender cut off", Duration::from_secs(10), || s2_sender.is_finished().then_some(()));
    s2_sender.stop();

    // S4 takes whatever SSRC comes to its own port; closed while streaming.
    let s4 = check(&engine, "70-openRtpServer-udp-port0-nossrc-S4", &[]);
    let s4_sender = push(udp_to(&s4), 12_345_678);
    wait_hook(&seen, "on_publish", S4, 1);
    check(&engine, "71-getRtpInfo-S4", &[]);
    check(&engine, "72-closeRtpServer-S4-streaming", &[]);
    wait_for("S4 unregistered", Duration::from_secs(10), || (hooks_named(&seen, "on_stream_changed", S4).iter().filter(|h| h.body["regist"] == false).count() == 3).then_some(()));
    check(&engine, "73-close_streams-S4-force", &[]);
    check(&engine, "74-getMediaList-S4-after-close", &[]);
    s4_sender.stop();

    // S3, TCP active with media: the node connects to the device, which then sends.
    let device = TcpListener::bind("127.0.0.1:0").unwrap();
    let device_port = device.local_addr().unwrap().port();
    check(&engine, "75-openRtpServer-tcp-active-S3-media", &[]);
    check(&engine, "76-connectRtpServer-S3-media", &[("dst_port", &device_port.to_string())]);
    let (conn, _) = device.accept().unwrap();
    let s3_sender = push(Out::Tcp(conn), 100_000_003);
    // A server opened without ssrc takes the first; updateRtpServerSSRC is how wvp names it.
    wait_hook(&seen, "on_publish", S3, 1);
    let s3_info = check(&engine, "77-getRtpInfo-S3-tcp-active", &[]);
    assert_eq!(s3_info["peer_port"].as_u64(), Some(u64::from(device_port)), "the device's own port");
    check(&engine, "78-closeRtpServer-S3-streaming", &[]);
    wait_for("S3's sender cut off", Duration::from_secs(10), || s3_sender.is_finished().then_some(()));
    s3_sender.stop();

    // S5: on_publish refuses; the server is gone.
    let s5 = check(&engine, "79-openRtpServer-udp-S5-publish-denied", &[]);
    let s5_sender = push(udp_to(&s5), 55_555);
    wait_hook(&seen, "on_publish", S5, 1);
    wait_for("S5 closed", Duration::from_secs(10), || {
        let (v, _) = replay(&engine, "82-listRtpServer-S5-publish-denied", &[]);
        (!v.to_string().contains(S5)).then_some(())
    });
    check(&engine, "80-getMediaList-S5-publish-denied", &[]);
    check(&engine, "81-getRtpInfo-S5-publish-denied", &[]);
    check(&engine, "83-closeRtpServer-S5", &[]);
    assert!(hooks_named(&seen, "on_stream_changed", S5).is_empty(), "a refused stream is never announced");
    s5_sender.stop();

    // S1 stops: it times out and is unregistered; nothing is left.
    s1_sender.stop();
    let timeout = wait_hook(&seen, "on_rtp_server_timeout", S1, 1).remove(0);
    assert_like(&timeout.body, &fixture("hooks", "66-on_rtp_server_timeout")["body"], "S1 timeout");
    wait_for("S1 unregistered", Duration::from_secs(10), || (hooks_named(&seen, "on_stream_changed", S1).iter().filter(|h| h.body["regist"] == false).count() == 3).then_some(()));
    for x in ["84-getMediaList-after-timeout", "85-listRtpServer-after-timeout", "86-closeRtpServer-after-timeout"] {
        check(&engine, x, &[]);
    }

    // Keepalives carry the node's load, by this node's name.
    let keepalive = wait_hook(&seen, "on_server_keepalive", "", 2).remove(1);
    assert_like(&keepalive.body, &fixture("hooks", "02-on_server_keepalive")["body"], "keepalive");
    for key in ["streams", "rtp_servers", "viewers", "ingest_kbps", "cpu_percent"] {
        assert!(keepalive.body["data"][key].is_number(), "{key}: {}", keepalive.body);
    }
    for t in [s1_sender, s2_sender, s3_sender, s4_sender, s5_sender] {
        t.join();
    }
}

#[test]
fn without_a_secret_every_call_is_refused_and_play_needs_gmv_credentials() {
    let engine = Engine::start(1, "node:\n  secret: \"\"\n");
    let (status, _, body) = call(&engine, "getServerConfig", "secret=");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((status, v["code"].as_i64(), v["msg"].as_str()), (200, Some(-100), Some("Please login first")));
    let (_, _, body) = call(&engine, "openRtpServer", "secret=&port=0&stream_id=x");
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["code"], -100, "nothing opened without the secret");
    // Without an on_play hook, a node play URL needs a play token or an API key (the stream
    // must exist first: opened by an engine that has a secret, below).
    let engine = Engine::start(1, "node:\n  secret: \"s3cret-s3cret\"\n  rtp_server_timeout_s: 30\n");
    let (_, _, body) = call(&engine, "openRtpServer", "secret=s3cret-s3cret&port=0&stream_id=cam1&ssrc=7");
    let opened: Value = serde_json::from_slice(&body).unwrap();
    let sender = push(udp_to(&opened), 7);
    wait_for("cam1 published", Duration::from_secs(10), || {
        let (_, _, b) = call(&engine, "isMediaOnline", "secret=s3cret-s3cret&schema=rtmp&app=rtp&stream=cam1&vhost=__defaultVhost__");
        (serde_json::from_slice::<Value>(&b).unwrap()["online"] == true).then_some(())
    });
    let (head, _) = http_get(engine.http, "/rtp/cam1.live.flv", &[]);
    assert_eq!(status_of(&head), 401, "no credential, no on_play: refused");
    let out = work_dir().join("node-cam1.flv");
    let viewer = spawn_viewer(engine.http, "/rtp/cam1.live.flv".into(), vec![("gmv-token".into(), TOKEN.into())], out.clone(), Duration::from_secs(2));
    assert_eq!(viewer.join().unwrap().0, 200, "an API key in a header plays");
    assert!(std::fs::read(&out).unwrap().starts_with(b"FLV"));
    sender.join();
}
