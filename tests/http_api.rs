//! REST API and HTTP edge cases against a running engine; start-up errors of the binary.

mod common;

use common::*;
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn raw(engine: &Engine, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(engine.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).to_string()
}

#[test]
fn api_errors_are_json_with_status_codes() {
    let engine = Engine::start(2, "");
    assert_eq!(engine.try_request("GET", "/api/streams", &[], b"").unwrap().0, 401);
    assert_eq!(engine.try_request("GET", "/api/streams", &[("gmv-token", "wrong")], b"").unwrap().0, 401);
    // A key in a URL ends up in logs: /api takes it from a header only.
    assert_eq!(engine.try_request("GET", &format!("/api/streams?token={TOKEN}"), &[], b"").unwrap().0, 401);
    assert_eq!(engine.try_request("GET", "/api/streams", &[("Authorization", &format!("Bearer {TOKEN}"))], b"").unwrap().0, 200);

    let (status, v) = engine.request("POST", "/api/streams", "{not json");
    assert_eq!((status, v["code"].as_str()), (400, Some("bad_request")));
    let (status, _) = engine.request("POST", "/api/streams", r#"{"ssrc": "12ab"}"#);
    assert_eq!(status, 400);
    let (status, v) = engine.request("POST", "/api/streams", r#"{"sdp": "v=0\r\nm=video 1 RTP/AVP 120\r\na=rtpmap:120 VP8/90000\r\n"}"#);
    assert_eq!(status, 400, "{v}");

    let s = engine.open_stream(json!({ "ssrc": 4242 }));
    assert_eq!(s["stream_id"], "0000004242");
    // Play URLs carry a play token, never the API key.
    let token = s["play"]["token"].as_str().unwrap();
    assert!(s["play"]["flv"].as_str().unwrap().ends_with(&format!("/flv/0000004242/{token}")), "{s}");
    assert!(!s.to_string().contains(TOKEN), "{s}");
    let (status, v) = engine.request("POST", "/api/streams", &json!({ "ssrc": 4242 }).to_string());
    assert_eq!((status, v["code"].as_str()), (409, Some("exists")));
    let (status, v) = engine.request("POST", "/api/streams", &json!({ "ssrc": 4243, "port": s["port"] }).to_string());
    assert_eq!(status, 503, "port already used by a stream on this or another shard: {v}");
    // Ports outside rtp.port_min..=port_max (privileged ones, other services') are refused.
    for port in [1, 80, 65535] {
        let (status, v) = engine.request("POST", "/api/streams", &json!({ "ssrc": 4244, "port": port }).to_string());
        assert_eq!((status, v["code"].as_str()), (400, Some("bad_request")), "port {port}: {v}");
    }

    let (status, v) = engine.request("GET", "/api/streams", "");
    assert_eq!(status, 200);
    assert_eq!(v["streams"].as_array().unwrap().len(), 1);
    assert_eq!(engine.request("GET", "/api/streams/0000000001", "").0, 404);
    assert_eq!(engine.request("DELETE", "/api/streams/0000004242", "").0, 200);
    assert_eq!(engine.request("DELETE", "/api/streams/0000004242", "").0, 404);
    assert_eq!(engine.request("PUT", "/api/streams", "").0, 405);
}

#[test]
fn static_streams_open_at_start_and_stay() {
    let engine = Engine::start(
        2,
        "streams:\n  - ssrc: 100000001\n  - ssrc: 100000002\n    sdp: \"v=0\\r\\nm=video 0 RTP/AVP 96\\r\\na=rtpmap:96 H265/90000\\r\\n\"\n",
    );
    let a = engine.stream("0100000001");
    let b = engine.stream("0100000002");
    assert_eq!((a["is_static"].as_bool(), a["payload"].as_str()), (Some(true), Some("ps")));
    assert_eq!(b["payload"], "h265");
    assert_ne!(a["port"], b["port"]);
}

#[test]
fn play_urls_check_token_and_stream() {
    let engine = Engine::start(2, "");
    assert_eq!(engine.try_request("GET", "/flv/0000000007/wrong", &[], b"").unwrap().0, 401);
    assert_eq!(engine.try_request("GET", &format!("/flv/0000000007/{TOKEN}"), &[], b"").unwrap().0, 401, "an API key in a URL does not play");
    assert_eq!(engine.try_request("GET", &format!("/flv/0000000007/{}", engine.stream_token("0000000007")), &[], b"").unwrap().0, 404);
    assert_eq!(engine.try_request("GET", &format!("/flv/notanid/{TOKEN}"), &[], b"").unwrap().0, 404);
    assert_eq!(engine.try_request("GET", &format!("/{NODE_ID}/play/0000000007.flv"), &[], b"").unwrap().0, 401);
    assert_eq!(engine.try_request("GET", &format!("/{NODE_ID}/play/0000000007.flv"), &[("gmv-token", TOKEN)], b"").unwrap().0, 404);
    assert_eq!(engine.try_request("GET", "/nothing/here", &[], b"").unwrap().0, 404);
}

#[test]
fn hostile_http_gets_errors_and_the_engine_survives() {
    let engine = Engine::start(1, "");
    assert!(raw(&engine, b"\x16\x03\x01\x02\x00garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
    let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    assert!(raw(&engine, huge.as_bytes()).starts_with("HTTP/1.1 431"));
    let big_body = format!("POST /api/streams HTTP/1.1\r\ngmv-token: {TOKEN}\r\nContent-Length: 10000000\r\n\r\n");
    assert!(raw(&engine, big_body.as_bytes()).starts_with("HTTP/1.1 413"));
    // A connection that says nothing does not hold up others on its shard.
    let silent = TcpStream::connect(engine.http).unwrap();
    assert_eq!(engine.request("GET", "/api/health", "").0, 200);
    drop(silent);
}

#[test]
fn low_memlock_limit_gives_a_clear_error() {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_gmv"));
    // SAFETY: setrlimit is async-signal-safe and only touches the child.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit { rlim_cur: 64 * 1024, rlim_max: 64 * 1024 };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ulimit -l") && err.contains("64 KiB"), "{err}");
}

#[test]
fn bad_config_is_refused_with_exit_code_2() {
    let path = work_dir().join("bad.yml");
    std::fs::write(&path, "rtp: {port_min: 10, port_max: 5}\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gmv")).arg("--config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("port_min"));
}

/// Issue 8, defect 11: two thousand slow request heads from one host neither exhaust the
/// engine's descriptors nor starve other clients.
#[test]
fn slow_heads_from_one_host_do_not_starve_others() {
    let engine = Engine::start(1, "");
    let mut slow = Vec::new();
    for _ in 0..2000 {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.bind(&"127.0.0.5:0".parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
        if sock.connect(&engine.http.into()).is_err() {
            continue;
        }
        let mut s = std::net::TcpStream::from(sock);
        let _ = s.write_all(b"GET /api/health HTTP/1.1\r\n");
        slow.push(s);
    }
    for _ in 0..9 {
        let (status, _) = engine.request("GET", "/api/health", "");
        assert_eq!(status, 200);
    }
    drop(slow);
}

/// Issue 12 (one instance per config): a second gmv on the same data_dir, or on the same HTTP
/// address, exits at start with an error that says why, instead of sharing the first's traffic.
#[test]
fn a_second_instance_is_refused_at_start() {
    let engine = Engine::start(1, "");
    let run_second = |config: &std::path::Path| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gmv"))
            .arg("--config")
            .arg(config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let status = wait_exit(&mut child, Duration::from_secs(15)).expect("the second instance exits");
        let mut err = String::new();
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        (status.code(), err)
    };
    let (code, err) = run_second(&engine.config);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("another gmv is running with data_dir"), "{err}");
    // Another data_dir, same addresses.
    let text = std::fs::read_to_string(&engine.config).unwrap();
    let other_dir = engine.data_dir.with_file_name(format!("{}-second", engine.data_dir.file_name().unwrap().to_string_lossy()));
    let other = engine.config.with_extension("second.yml");
    std::fs::write(&other, text.replace(&engine.data_dir.display().to_string(), &other_dir.display().to_string())).unwrap();
    let (code, err) = run_second(&other);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("HTTP address {} is in use", engine.http)), "{err}");
    // The first is unharmed.
    assert_eq!(engine.request("GET", "/api/health", "").0, 200);
}

/// HTTP/1.1 keep-alive: API calls (with and without bodies, refused ones too) and requests for
/// streams owned by either shard follow one another on one connection, pipelined or not;
/// `Connection: close` ends it.
#[test]
fn keep_alive_serves_many_requests_on_one_connection_across_shards() {
    let engine = Engine::start(2, "");
    let (a, b) = (100_000_001u32, (100_000_002..).find(|s| gmv::shard::owner_of(*s, 2) != gmv::shard::owner_of(100_000_001, 2)).unwrap());
    let ids: Vec<String> = [a, b].iter().map(|ssrc| engine.open_stream(json!({ "ssrc": ssrc }))["stream_id"].as_str().unwrap().to_string()).collect();
    let tokens: Vec<String> = ids.iter().map(|id| engine.stream_token(id)).collect();
    let mut s = TcpStream::connect(engine.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let key = format!("gmv-token: {TOKEN}\r\n");
    let body = r#"{"stream_id": "0000000005"}"#;
    // Pipelined: three requests written at once, one with a body.
    let pipelined = format!(
        "GET /api/health HTTP/1.1\r\nHost: x\r\n{key}\r\nPOST /api/play-tokens HTTP/1.1\r\nHost: x\r\n{key}Content-Length: {}\r\n\r\n{body}GET /api/streams HTTP/1.1\r\nHost: x\r\n\r\n",
        body.len()
    );
    s.write_all(pipelined.as_bytes()).unwrap();
    let (head, _) = read_response(&mut s);
    assert!(head.starts_with("HTTP/1.1 200") && head.contains("Connection: keep-alive"), "{head}");
    let (head, token) = read_response(&mut s);
    assert!(head.starts_with("HTTP/1.1 201"), "{head}");
    assert!(String::from_utf8_lossy(&token).contains("\"token\""));
    let (head, _) = read_response(&mut s);
    assert!(head.starts_with("HTTP/1.1 401"), "no key on the third: {head}");
    // Streams on both shards, one after another: the connection follows the hand-offs.
    for round in 0..3 {
        for (id, token) in ids.iter().zip(&tokens) {
            s.write_all(format!("GET /cover/{id}.jpg?token={token} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).unwrap();
            let (head, _) = read_response(&mut s);
            assert!(head.starts_with("HTTP/1.1 404") && head.contains("keep-alive"), "round {round}, {id}: {head}");
        }
    }
    s.write_all(format!("GET /api/health HTTP/1.1\r\nHost: x\r\n{key}Connection: close\r\n\r\n").as_bytes()).unwrap();
    let (head, _) = read_response(&mut s);
    assert!(head.starts_with("HTTP/1.1 200") && head.contains("Connection: close"), "{head}");
    let mut rest = Vec::new();
    assert_eq!(s.read_to_end(&mut rest).unwrap(), 0, "closed after Connection: close");
}

/// A gmv that crashed with connections open starts again at once on the same config: the
/// half-closed connections it left behind (FIN_WAIT, up to a minute) are not taken for another
/// instance holding the addresses.
#[test]
fn a_crashed_engine_restarts_at_once_with_connections_left_half_closed() {
    let mut engine = Engine::start(2, "");
    // Clients that keep their ends open: the killed engine's ends stay half-closed.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(engine.http).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(format!("GET /api/health HTTP/1.1\r\nHost: x\r\ngmv-token: {TOKEN}\r\n\r\n").as_bytes()).unwrap();
        assert!(read_response(&mut s).0.starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    let sip = TcpStream::connect(engine.sip).unwrap();
    held.push(sip);
    engine.crash_and_restart();
    assert_eq!(engine.request("GET", "/api/health", "").0, 200);
    drop(held);
}

/// The cap on requests per kept connection holds across hand-offs: a client alternating
/// between streams of two shards still gets `Connection: close` on the 1000th answer.
#[test]
fn the_keep_alive_request_cap_follows_the_connection_across_shards() {
    let engine = Engine::start(2, "");
    let (a, b) = (100_000_001u32, (100_000_002..).find(|s| gmv::shard::owner_of(*s, 2) != gmv::shard::owner_of(100_000_001, 2)).unwrap());
    let paths: Vec<String> = [a, b]
        .iter()
        .map(|ssrc| {
            let id = engine.open_stream(json!({ "ssrc": ssrc }))["stream_id"].as_str().unwrap().to_string();
            format!("/cover/{id}.jpg?token={}", engine.stream_token(&id))
        })
        .collect();
    let mut s = TcpStream::connect(engine.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answered = 0;
    loop {
        s.write_all(format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", paths[answered % 2]).as_bytes()).unwrap();
        let (head, _) = read_response(&mut s);
        answered += 1;
        assert!(head.starts_with("HTTP/1.1 404"), "{answered}: {head}");
        if head.contains("Connection: close") {
            break;
        }
        assert!(answered < 1100, "never closed");
    }
    assert_eq!(answered, gmv::http::server::KEEP_ALIVE_REQUESTS_MAX as usize);
}

#[test]
fn listings_come_in_pages_with_their_total() {
    let engine = Engine::start(2, "");
    let ids: Vec<String> =
        (0..5).map(|i| engine.open_stream(serde_json::json!({ "ssrc": 300 + i }))["stream_id"].as_str().unwrap().to_string()).collect();
    let page = |q: &str| {
        let (status, v) = engine.request("GET", &format!("/api/streams?{q}"), "");
        assert_eq!(status, 200, "{v}");
        let got: Vec<String> = v["streams"].as_array().unwrap().iter().map(|s| s["stream_id"].as_str().unwrap().to_string()).collect();
        (got, v["total"].as_u64().unwrap())
    };
    assert_eq!(page("limit=2"), (ids[..2].to_vec(), 5));
    assert_eq!(page("offset=2&limit=2"), (ids[2..4].to_vec(), 5));
    assert_eq!(page("offset=4"), (ids[4..].to_vec(), 5));
    assert_eq!(page("offset=9"), (vec![], 5));
    // The console's first page.
    let (_, html) = http_get(engine.http, "/", &[]);
    assert!(String::from_utf8_lossy(&html).contains("<title>gmv console</title>"));
    let (head, js) = http_get(engine.http, "/console/vendor/mpegts.js", &[]);
    assert!(head.contains("text/javascript") && js.len() > 100_000, "{head}");
    assert_eq!(status_of(&http_get(engine.http, "/console/../Cargo.toml", &[]).0), 404);
}

#[test]
fn the_dashboard_tells_the_process_media_devices_and_recent_warnings() {
    let engine = Engine::start(2, "");
    let s = engine.open_stream(json!({}));
    push_ps_udp(&engine, &s, &h264_frames()[..50], Duration::from_millis(5));
    // A warning of the engine's own: an address that failed to sign in too often.
    for _ in 0..6 {
        let _ = engine.try_request("POST", "/api/session", &[], br#"{"name":"x","password":"wrong-pass"}"#);
    }
    let (status, d) = engine.request("GET", "/api/dashboard", "");
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["version"], env!("CARGO_PKG_VERSION"));
    assert!(d["started_at"].as_u64() > Some(1_700_000_000) && d["uptime_s"].is_u64(), "{d}");
    assert!(d["process"]["rss_bytes"].as_u64() > Some(1 << 20) && d["process"]["open_fds"].as_u64() > Some(3), "{d}");
    assert!(d["process"]["cpu_percent"].is_number(), "{d}");
    assert!(d["disk"]["free_bytes"].as_u64() > Some(0) && d["disk"]["total_bytes"].as_u64() >= d["disk"]["free_bytes"].as_u64(), "{d}");
    assert_eq!((d["media"]["streams"].as_u64(), d["media"]["shards"].as_u64()), (Some(1), Some(2)), "{d}");
    assert!(d["media"]["packets"].as_u64() > Some(0), "{d}");
    assert_eq!((d["devices"]["total"].as_u64(), d["devices"]["online"].as_u64()), (Some(0), Some(0)), "{d}");
    let warnings = d["recent_errors"].as_array().unwrap();
    assert!(warnings.iter().any(|w| w["level"] == "WARN" && w["message"].as_str().is_some_and(|m| m.starts_with("sign-in refused"))), "{d}");
}
