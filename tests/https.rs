//! HTTPS end to end: live FLV over TLS decoded by ffprobe, for streams on the accepting shard
//! and on another (relayed); the API over TLS with keep-alive; a new certificate on SIGHUP.
//! Certificates are made by the openssl command line.

mod common;

use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// A self-signed certificate for 127.0.0.1 in `dir`: (cert, key).
fn make_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", &format!("/CN={name}"), "-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl is required (apt-get install openssl; .ci/run does this)");
    assert!(status.success());
    (cert, key)
}

fn tls_yaml(listen: SocketAddr, cert: &Path, key: &Path) -> String {
    format!("  tls:\n    listen: \"{listen}\"\n    cert_file: \"{}\"\n    key_file: \"{}\"\n", cert.display(), key.display())
}

/// A TLS client that trusts exactly `cert`.
fn client(cert: &Path, addr: SocketAddr) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(cert).unwrap()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let conn = rustls::ClientConnection::new(Arc::new(config), ServerName::IpAddress(addr.ip().into())).unwrap();
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

#[test]
fn https_serves_flv_that_ffprobe_decodes_from_either_shard() {
    let dir = work_dir().join(format!("tls-{}", free_tcp_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = make_cert(&dir, "first");
    let https: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let engine = Engine::start_full(2, &tls_yaml(https, &cert, &key), "", "", None);
    let a = 100_000_001u32;
    let b = (100_000_002..).find(|s| gmv::shard::owner_of(*s, 2) != gmv::shard::owner_of(a, 2)).unwrap();
    // Several connections each: the kernel spreads them over the shards, so some are served
    // where they landed and some are relayed to the stream's owner.
    for ssrc in [a, b] {
        let s = engine.open_stream(json!({ "ssrc": ssrc }));
        let id = s["stream_id"].as_str().unwrap().to_string();
        let url = format!("https://{https}/flv/{id}/{}", s["play"]["token"].as_str().unwrap());
        let probes: Vec<_> = (0..3)
            .map(|_| {
                Command::new("timeout")
                    .args(["30", "ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0"])
                    .args(["-show_entries", "stream=codec_name,width,nb_read_frames", "-of", "csv=p=0", &url])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        engine.wait_subscribers(&id, 3);
        push_ps_udp(&engine, &s, &h264_frames(), Duration::from_millis(3));
        assert_eq!(engine.request("DELETE", &format!("/api/streams/{id}"), "").0, 200);
        for p in probes {
            let out = p.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            assert_eq!(text, format!("h264,{WIDTH},{CLIP_FRAMES}"), "ssrc {ssrc}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

#[test]
fn the_api_over_https_keeps_its_connection_and_sighup_loads_a_new_certificate() {
    let dir = work_dir().join(format!("tls-{}", free_tcp_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = make_cert(&dir, "first");
    let https: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let engine = Engine::start_full(2, &tls_yaml(https, &cert, &key), "", "", None);
    let ids: Vec<String> =
        [7001u32, 7002, 7003, 7004].iter().map(|s| engine.open_stream(json!({ "ssrc": s }))["stream_id"].as_str().unwrap().to_string()).collect();

    let mut s = client(&cert, https);
    for round in 0..3 {
        s.write_all(format!("GET /api/streams HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n").as_bytes()).unwrap();
        let (head, body) = read_response(&mut s);
        assert!(head.starts_with("HTTP/1.1 200") && head.contains("keep-alive"), "round {round}: {head}");
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&body).unwrap()["streams"].as_array().unwrap().len(), 4);
        // Streams of both shards on the same TLS connection: relayed where they are not here.
        for id in &ids {
            let token = engine.stream_token(id);
            s.write_all(format!("GET /cover/{id}.jpg?token={token} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).unwrap();
            let (head, _) = read_response(&mut s);
            assert!(head.starts_with("HTTP/1.1 404"), "{id}: {head}");
        }
    }
    drop(s);

    // A new certificate under the same file names, then SIGHUP.
    let (new_cert, new_key) = make_cert(&dir, "second");
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    engine.signal(libc::SIGHUP);
    wait_for("the reload", Duration::from_secs(10), || engine.log_text().contains("reload in force on every executor").then_some(()));
    // Every shard presents the new one (connections spread over them).
    for _ in 0..6 {
        let mut s = client(&new_cert, https);
        s.write_all(format!("GET /api/health HTTP/1.1\r\nHost: x\r\ngmv-token: {TOKEN}\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
        let (head, _) = read_response(&mut s);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    assert!(engine.log_text().contains("https certificate and key read again"));
}

#[test]
fn a_missing_certificate_is_a_clear_error_at_start() {
    let path = work_dir().join("no-cert.yml");
    let yaml = format!(
        "data_dir: \"{}\"\nhttp:\n  listen: \"127.0.0.1:{}\"\n{}",
        work_dir().join("no-cert").display(),
        free_tcp_port(),
        tls_yaml(format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap(), Path::new("/nonexistent/c.pem"), Path::new("/nonexistent/k.pem"))
    );
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gmv")).arg("--config").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("http.tls.cert_file") && err.contains("/nonexistent/c.pem"), "{err}");
}
