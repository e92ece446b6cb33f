//! Access control end to end: API keys with roles, play tokens (forged, expired, for another
//! stream or address), CORS, the generated first-start key, SIGHUP reloads.

mod common;

use common::*;
use serde_json::json;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

const VIEWER_KEY: &str = "key-of-the-video-wall";
const OPERATOR_KEY: &str = "key-of-the-operator";
const ADMIN_KEY: &str = "key-of-the-admin";

fn keys_yaml(keys: &[(&str, &str, &str)]) -> String {
    let list: Vec<String> =
        keys.iter().map(|(name, role, key)| format!("{{name: {name}, role: {role}, sha256: \"{}\"}}", gmv::auth::key_hash(key))).collect();
    format!("  api_keys: [{}]\n", list.join(", "))
}

/// A request from `source` (a loopback address of our choosing) with `headers`: (status, body).
fn request_from(source: &str, http: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    sock.bind(&format!("{source}:0").parse::<SocketAddr>().unwrap().into()).unwrap();
    sock.connect_timeout(&http.into(), Duration::from_secs(2)).unwrap();
    let mut s: std::net::TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    s.write_all(format!("{req}\r\n{body}").as_bytes()).unwrap();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).to_string();
    (status_of(&text), text)
}

fn status(engine: &Engine, method: &str, path: &str, key: &str, body: &str) -> u16 {
    engine.try_request(method, path, &[("Authorization", &format!("Bearer {key}"))], body.as_bytes()).unwrap().0
}

#[test]
fn roles_are_enforced_per_endpoint() {
    let keys = keys_yaml(&[("wall", "viewer", VIEWER_KEY), ("ops", "operator", OPERATOR_KEY), ("root", "admin", ADMIN_KEY)]);
    let engine = Engine::start_full(1, &keys, "", "", None);
    // Reading and play tokens: every role.
    for key in [VIEWER_KEY, OPERATOR_KEY, ADMIN_KEY] {
        assert_eq!(status(&engine, "GET", "/api/streams", key, ""), 200);
        assert_eq!(status(&engine, "POST", "/api/play-tokens", key, r#"{"stream_id": "0000000001"}"#), 201);
    }
    // Changing streams: operator and admin.
    assert_eq!(status(&engine, "POST", "/api/streams", VIEWER_KEY, r#"{"ssrc": 77}"#), 403);
    assert_eq!(status(&engine, "POST", "/api/streams", OPERATOR_KEY, r#"{"ssrc": 77}"#), 201);
    assert_eq!(status(&engine, "POST", "/api/streams/0000000077/record", VIEWER_KEY, ""), 403);
    assert_eq!(status(&engine, "DELETE", "/api/streams/0000000077", VIEWER_KEY, ""), 403);
    assert_eq!(status(&engine, "DELETE", "/api/streams/0000000077", ADMIN_KEY, ""), 200);
    // The configuration: admin only, and without its secrets.
    assert_eq!(status(&engine, "GET", "/api/config", OPERATOR_KEY, ""), 403);
    let (code, body) = engine.try_request("GET", "/api/config", &[("gmv-token", ADMIN_KEY)], b"").unwrap();
    assert_eq!(code, 200, "{body}");
    let config: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(config["sip"]["password"], "(secret)");
    assert!(!body.contains("12345678"), "{body}");
    // A refusal says which role was needed.
    let (_, body) = engine.try_request("POST", "/api/streams", &[("gmv-token", VIEWER_KEY)], b"{}").unwrap();
    assert!(body.contains("Operator"), "{body}");
}

#[test]
fn play_tokens_open_only_their_stream_and_never_the_api() {
    let engine = Engine::start(2, "");
    let s = engine.open_stream(json!({ "ssrc": 4100 }));
    let id = s["stream_id"].as_str().unwrap().to_string();
    let token = s["play"]["token"].as_str().unwrap().to_string();
    // A stream without media has no cover: 404 once authorised, 401 before.
    let cover = |t: &str| engine.try_request("GET", &format!("/cover/{id}.jpg?token={t}"), &[], b"").unwrap().0;
    assert_eq!(cover(&token), 404);
    assert_eq!(engine.try_request("GET", &format!("/cover/{id}.jpg"), &[("gmv-token", &token)], b"").unwrap().0, 404);

    // Never /api, in any form.
    for (method, path) in [("GET", "/api/streams"), ("GET", "/api/health"), ("DELETE", &format!("/api/streams/{id}")), ("POST", "/api/play-tokens")] {
        for header in ["gmv-token", "Authorization"] {
            let value = if header == "Authorization" { format!("Bearer {token}") } else { token.clone() };
            assert_eq!(engine.try_request(method, path, &[(header, &value)], b"{}").unwrap().0, 401, "{method} {path} with {header}");
        }
        assert_eq!(engine.try_request(method, &format!("{path}?token={token}"), &[], b"{}").unwrap().0, 401);
    }
    assert_eq!(engine.stream(&id)["stream_id"], id.as_str(), "the stream is still there");

    // Another stream's token, a forged one, a garbled one.
    let other = engine.stream_token("0000004101");
    assert_eq!(cover(&other), 401);
    let (payload, sig) = token.split_once('.').unwrap();
    let mut forged_sig = sig.to_string().into_bytes();
    forged_sig[0] = if forged_sig[0] == b'A' { b'B' } else { b'A' };
    assert_eq!(cover(&format!("{payload}.{}", String::from_utf8(forged_sig).unwrap())), 401);
    let (other_payload, _) = other.split_once('.').unwrap();
    assert_eq!(cover(&format!("{other_payload}.{sig}")), 401, "a payload under another's signature");
    assert_eq!(cover("garbage"), 401);
    assert_eq!(engine.try_request("GET", &format!("/flv/{id}/{other}"), &[], b"").unwrap().0, 401);
    assert_eq!(engine.try_request("GET", &format!("/hls/{id}/{other}/index.m3u8"), &[], b"").unwrap().0, 401);

    // Bound to an address: works from there only.
    let bound = engine.play_token(json!({ "stream_id": id, "client_ip": "self" }));
    let path = format!("/cover/{id}.jpg?token={bound}");
    assert_eq!(request_from("127.0.0.1", engine.http, "GET", &path, &[], "").0, 404);
    assert_eq!(request_from("127.0.0.2", engine.http, "GET", &path, &[], "").0, 401);

    // Expired: good for a second, then refused.
    let (code, v) = engine.request("POST", "/api/play-tokens", &json!({ "stream_id": id, "ttl_s": 1 }).to_string());
    assert_eq!(code, 201, "{v}");
    let short = v["token"].as_str().unwrap().to_string();
    wait_for("the 1 s token to expire", Duration::from_secs(5), || (cover(&short) == 401).then_some(()));
    assert_eq!(engine.request("POST", "/api/play-tokens", &json!({ "stream_id": id, "ttl_s": 0 }).to_string()).0, 400);
    assert_eq!(engine.request("POST", "/api/play-tokens", &json!({ "stream_id": "x/y" }).to_string()).0, 400);
}

#[test]
fn cors_preflight_and_answers_follow_the_allow_list() {
    let engine = Engine::start_full(1, "  cors_origins: [\"http://console.test:8000\"]\n", "", "", None);
    let preflight = |origin: &str| {
        let headers = [("Origin", origin), ("Access-Control-Request-Method", "DELETE"), ("Access-Control-Request-Headers", "authorization")];
        request_from("127.0.0.1", engine.http, "OPTIONS", "/api/streams/0000000001", &headers, "")
    };
    let (code, head) = preflight("http://console.test:8000");
    assert_eq!(code, 204, "{head}");
    assert!(head.contains("Access-Control-Allow-Origin: http://console.test:8000"), "{head}");
    assert!(head.contains("Access-Control-Allow-Methods: ") && head.contains("DELETE"), "{head}");
    assert!(head.to_ascii_lowercase().contains("access-control-allow-headers: authorization"), "{head}");
    let (code, head) = preflight("http://evil.test");
    assert_eq!(code, 403, "{head}");
    assert!(!head.contains("Access-Control-Allow-Origin"), "{head}");
    // Actual requests: the allowed origin is echoed, another gets nothing.
    let auth = format!("Bearer {TOKEN}");
    let (_, head) =
        request_from("127.0.0.1", engine.http, "GET", "/api/health", &[("Origin", "http://console.test:8000"), ("Authorization", &auth)], "");
    assert!(head.contains("Access-Control-Allow-Origin: http://console.test:8000") && head.contains("Vary: Origin"), "{head}");
    let (_, head) = request_from("127.0.0.1", engine.http, "GET", "/api/health", &[("Origin", "http://evil.test"), ("Authorization", &auth)], "");
    assert!(head.starts_with("HTTP/1.1 200") && !head.contains("Access-Control-Allow-Origin"), "{head}");
}

/// A config without keys: the first start makes an admin key (0600, shown once in the log).
#[test]
fn first_start_generates_an_admin_key_shown_once() {
    use std::os::unix::fs::PermissionsExt;
    let engine = Engine::start_full(1, "  api_keys: []\n", "", "", None);
    let key_file = engine.data_dir.join("admin-key");
    assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(engine.data_dir.join("play-secret")).unwrap().permissions().mode() & 0o777, 0o600);
    let key = std::fs::read_to_string(&key_file).unwrap().trim().to_string();
    assert!(key.len() >= 40, "{key}");
    assert!(engine.log_text().contains(&key), "the key is shown in the first start's log");
    assert_eq!(status(&engine, "GET", "/api/streams", &key, ""), 200);
    assert_eq!(status(&engine, "GET", "/api/streams", TOKEN, ""), 401, "the example key is no key here");
    let data_dir = engine.data_dir.clone();
    drop(engine);
    let again = Engine::start_full(1, "  api_keys: []\n", "", "", Some(data_dir));
    assert_eq!(status(&again, "GET", "/api/streams", &key, ""), 200, "the same key after a restart");
    let log = again.log_text();
    assert!(!log.contains(&key) && log.contains("admin-key"), "shown once; later starts say where it is:\n{log}");
}

#[test]
fn the_example_key_is_refused_on_a_public_address() {
    let path = work_dir().join("public-example-key.yml");
    let yaml = format!(
        "data_dir: \"{}\"\nhttp:\n  listen: \"0.0.0.0:{}\"\n  api_keys: [{{name: docs, role: admin, sha256: \"{}\"}}]\n",
        work_dir().join("public-example").display(),
        free_tcp_port(),
        gmv::auth::key_hash(gmv::auth::EXAMPLE_API_KEY)
    );
    std::fs::write(&path, yaml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gmv")).arg("--config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("example key"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn sighup_puts_a_new_key_and_secret_in_force_and_says_what_changed() {
    let secret_a = "play-secret-number-one";
    let http = format!("{}  play_secrets: [\"{secret_a}\"]\n", keys_yaml(&[("first", "admin", ADMIN_KEY)]));
    let engine = Engine::start_full(2, &http, "", "", None);
    assert_eq!(status(&engine, "GET", "/api/streams", ADMIN_KEY, ""), 200);
    let s = engine.try_request("POST", "/api/play-tokens", &[("gmv-token", ADMIN_KEY)], br#"{"stream_id": "0000000009"}"#).unwrap().1;
    let old_token = serde_json::from_str::<serde_json::Value>(&s).unwrap()["token"].as_str().unwrap().to_string();
    let play = |t: &str| engine.try_request("GET", &format!("/cover/0000000009.jpg?token={t}"), &[], b"").unwrap().0;
    assert_eq!(play(&old_token), 404);

    // Rotate: a new key replaces the old one; a new signing secret, the old one still verifying.
    let config = std::fs::read_to_string(&engine.config).unwrap();
    let new_keys = keys_yaml(&[("second", "operator", OPERATOR_KEY)]);
    let rotated = config
        .replace(&keys_yaml(&[("first", "admin", ADMIN_KEY)]), &new_keys)
        .replace(&format!("[\"{secret_a}\"]"), &format!("[\"play-secret-number-two\", \"{secret_a}\"]"))
        .replace("sip:\n", "sip:\n  password: \"a-new-password\"\n");
    assert_ne!(rotated, config);
    std::fs::write(&engine.config, rotated).unwrap();
    let reloaded = |n: usize| engine.log_text().matches("reload in force on every executor").count() >= n;
    engine.signal(libc::SIGHUP);
    wait_for("the reload", Duration::from_secs(10), || reloaded(1).then_some(()));
    assert_eq!(status(&engine, "GET", "/api/streams", OPERATOR_KEY, ""), 200, "the new key works");
    assert_eq!(status(&engine, "GET", "/api/streams", ADMIN_KEY, ""), 401, "the old key is gone");
    // Every shard has the new secrets: tokens signed before still verify (rotation), new ones too.
    for _ in 0..8 {
        assert_eq!(play(&old_token), 404);
    }
    let s = engine.try_request("POST", "/api/play-tokens", &[("gmv-token", OPERATOR_KEY)], br#"{"stream_id": "0000000009"}"#).unwrap().1;
    let new_token = serde_json::from_str::<serde_json::Value>(&s).unwrap()["token"].as_str().unwrap().to_string();
    for _ in 0..8 {
        assert_eq!(play(&new_token), 404);
    }
    let log = engine.log_text();
    for said in ["api key added: second", "api key removed: first", "play secrets changed", "sip.password changed"] {
        assert!(log.contains(said), "reload log lacks {said:?}:\n{log}");
    }
    assert_eq!(engine.try_request("GET", "/api/health", &[("gmv-token", OPERATOR_KEY)], b"").unwrap().0, 200, "still running");

    // Drop the old secret: its tokens stop working on every shard.
    let config = std::fs::read_to_string(&engine.config).unwrap();
    std::fs::write(&engine.config, config.replace(&format!(", \"{secret_a}\""), "")).unwrap();
    engine.signal(libc::SIGHUP);
    wait_for("the second reload", Duration::from_secs(10), || reloaded(2).then_some(()));
    for _ in 0..8 {
        assert_eq!(play(&old_token), 401);
        assert_eq!(play(&new_token), 404);
    }
}

/// `cargo run` with the embedded default config: it comes up on 0.0.0.0:8080 with a generated
/// admin key, says where the key is, answers with it on loopback, and stops cleanly.
#[test]
fn the_default_config_runs_with_a_generated_key() {
    let cwd = work_dir().join(format!("default-{}", free_tcp_port()));
    std::fs::create_dir_all(&cwd).unwrap();
    let log = cwd.join("gmv.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gmv"))
        .current_dir(&cwd)
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let key_file = cwd.join("data").join("admin-key");
    let key = wait_for("the generated key", Duration::from_secs(15), || std::fs::read_to_string(&key_file).ok().filter(|k| k.ends_with('\n')));
    let http: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let health = wait_for("the API on the default port", Duration::from_secs(15), || {
        let s = std::net::TcpStream::connect_timeout(&http, Duration::from_millis(200)).ok()?;
        drop(s);
        Some(request_from("127.0.0.1", http, "GET", "/api/health", &[("Authorization", &format!("Bearer {}", key.trim()))], ""))
    });
    assert_eq!(health.0, 200, "{}", health.1);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(key.trim()) && text.contains("admin-key"), "the log shows the key and its file:\n{text}");
    // SAFETY: kill(2) on our child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_exit(&mut child, Duration::from_secs(20)).expect("stops on SIGTERM");
    assert_eq!(status.code(), Some(0));
}
