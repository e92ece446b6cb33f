//! RTMP push ingest against an independent publisher (ffmpeg's RTMP client): a publish token
//! from the API, the stream plays as FLV decoded by ffprobe, bad tokens and strangers are
//! refused, and a publisher that comes back gets the same stream id.

mod common;

use common::*;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn rtmp_engine() -> (Engine, u16) {
    let port = free_tcp_port();
    (Engine::start(1, &format!("rtmp:\n  listen: \"127.0.0.1:{port}\"\n")), port)
}

fn publish_token(engine: &Engine, stream: &str) -> Value {
    let (status, v) = engine.request("POST", "/api/publish-tokens", &json!({ "stream": stream }).to_string());
    assert_eq!(status, 201, "{v}");
    v
}

/// ffmpeg publishing a test pattern (320x240, 25 fps, a keyframe a second, B-frames on so
/// composition times matter) with `audio` (ffmpeg's encoder args) for `seconds`.
fn publish(url: &str, audio: &[&str], seconds: u32) -> Child {
    require_tool("ffmpeg");
    Command::new("ffmpeg")
        .args(["-v", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=8000"])
        .args(["-t", &seconds.to_string(), "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "25", "-bf", "2"])
        .args(audio)
        .args(["-f", "flv", url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ffmpeg")
}

fn stream_named(engine: &Engine, name: &str) -> Option<Value> {
    let (_, v) = engine.request("GET", "/api/streams", "");
    v["streams"].as_array()?.iter().find(|s| s["name"] == name).cloned()
}

/// The stream's FLV for `seconds`, saved to a file; its bytes.
fn watch_flv(engine: &Engine, play: &Value, seconds: u64, file: &str) -> (std::path::PathBuf, usize) {
    let url = play["flv"].as_str().unwrap();
    let path = url.splitn(4, '/').nth(3).map(|p| format!("/{p}")).unwrap();
    let out = work_dir().join(file);
    let (status, bytes) = spawn_viewer(engine.http, path, vec![], out.clone(), Duration::from_secs(seconds)).join().unwrap();
    assert_eq!(status, 200);
    (out, bytes)
}

#[test]
fn h264_and_aac_published_over_rtmp_play_as_flv() {
    let (engine, _) = rtmp_engine();
    let answer = publish_token(&engine, "live/cam1");
    let url = answer["url"].as_str().unwrap();
    assert!(url.starts_with("rtmp://127.0.0.1:") && url.contains("/live/cam1?token="), "{url}");
    assert_eq!(answer["server"].as_str().map(|s| s.ends_with("/live")), Some(true));
    let mut ffmpeg = publish(url, &["-c:a", "aac", "-ar", "16000", "-ac", "1"], 12);
    let stream = wait_for("the published stream listed with its name", Duration::from_secs(10), || stream_named(&engine, "live/cam1"));
    assert_eq!(stream["stream_id"], answer["stream_id"]);
    engine.wait_stat(stream["stream_id"].as_str().unwrap(), "keyframes", 1);
    let (file, bytes) = watch_flv(&engine, &answer["play"], 4, "rtmp-h264-aac.flv");
    assert_four_seconds_of_test_pattern(&file, bytes);
    let info = engine.stream(stream["stream_id"].as_str().unwrap());
    assert_eq!((info["payload"].as_str(), info["video_codec"].as_str(), info["audio_codec"].as_str()), (Some("flv"), Some("h264"), Some("aac")), "{info}");
    assert_eq!(info["demux_errors"], 0, "{info}");
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
    // The publisher gone, its stream closes.
    wait_for("the stream closed after its publisher left", Duration::from_secs(15), || stream_named(&engine, "live/cam1").is_none().then_some(()));
    let (_, rtmp) = engine.request("GET", "/api/rtmp", "");
    assert_eq!(rtmp["publishing"]["published"], 1, "{rtmp}");
    assert_eq!(rtmp["publishing"]["publishing"], 0, "{rtmp}");
}

#[test]
fn g711_published_over_rtmp_plays_with_its_sound() {
    let (engine, _) = rtmp_engine();
    let answer = publish_token(&engine, "live/door");
    let mut ffmpeg = publish(answer["url"].as_str().unwrap(), &["-c:a", "pcm_alaw", "-ar", "8000", "-ac", "1"], 10);
    let stream = wait_for("the G.711 stream", Duration::from_secs(10), || stream_named(&engine, "live/door"));
    engine.wait_stat(stream["stream_id"].as_str().unwrap(), "keyframes", 1);
    let (file, _) = watch_flv(&engine, &answer["play"], 3, "rtmp-g711.flv");
    let audio = ffprobe_audio(&file);
    assert_eq!((audio.codec.as_str(), audio.sample_rate), ("pcm_alaw", 8000), "{audio:?}");
    assert!(audio.packets > 20, "{audio:?}");
    assert_eq!(ffprobe(&file).codec, "h264");
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
}

/// ffmpeg's publish of `url` fails, and no stream appears.
fn refused(engine: &Engine, url: &str, name: &str) -> String {
    let mut ffmpeg = publish(url, &["-an"], 3);
    let status = wait_exit(&mut ffmpeg, Duration::from_secs(15)).expect("ffmpeg gives up when refused");
    let mut err = String::new();
    ffmpeg.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(!status.success(), "publish of {url} was taken");
    assert!(stream_named(engine, name).is_none());
    err
}

#[test]
fn publish_without_a_valid_token_is_refused() {
    let (engine, port) = rtmp_engine();
    let cam1 = publish_token(&engine, "live/cam1");
    let token = cam1["token"].as_str().unwrap();
    // No token, a forged one, another stream's.
    refused(&engine, &format!("rtmp://127.0.0.1:{port}/live/cam1"), "live/cam1");
    refused(&engine, &format!("rtmp://127.0.0.1:{port}/live/cam1?token={}x", &token[..token.len() - 1]), "live/cam1");
    refused(&engine, &format!("rtmp://127.0.0.1:{port}/live/cam2?token={token}"), "live/cam2");
    refused(&engine, &format!("rtmp://127.0.0.1:{port}/other/cam1?token={token}"), "other/cam1");
    let (_, rtmp) = engine.request("GET", "/api/rtmp", "");
    assert_eq!(rtmp["connecting"]["refused_token"], 4, "{rtmp}");
    assert_eq!(rtmp["publishing"]["published"], 0, "{rtmp}");
    // Tokens are an operator's to hand out, and only for names.
    let (status, _) = engine.request("POST", "/api/publish-tokens", r#"{"stream": "live/a b"}"#);
    assert_eq!(status, 400);
    let (status, _) = engine.request("POST", "/api/publish-tokens", r#"{"stream": "nocamera"}"#);
    assert_eq!(status, 400);
}

#[test]
fn strangers_are_bounded_and_a_returning_publisher_keeps_its_stream_id() {
    let (engine, port) = rtmp_engine();
    // Garbage instead of a handshake, and a connection that sends past its byte budget.
    let mut junk = TcpStream::connect(("127.0.0.1", port)).unwrap();
    junk.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = junk.write_all(&[0x55; 4096]);
    let mut sink = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(12);
    loop {
        match junk.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) if Instant::now() < deadline => {}
            Ok(_) => panic!("a garbage connection was kept open"),
        }
    }
    let mut flood = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut handshake = vec![3u8];
    handshake.extend_from_slice(&[0u8; 1536]);
    flood.write_all(&handshake).unwrap();
    // It is closed at its byte budget: writing on fails with a reset well before 64 MiB
    // (loopback buffers hold a few MiB), where a server that kept reading would take it all.
    flood.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let chunk = [0x07u8; 65536];
    let mut written = 0usize;
    let error = loop {
        match flood.write(&chunk) {
            Ok(n) if written < 64 << 20 => written += n,
            Ok(_) => panic!("a stranger could send 64 MiB before publishing"),
            Err(e) => break e,
        }
    };
    assert!(matches!(error.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe), "{error} after {written} bytes");
    // Too many at once from one address: the ones past the cap are closed at once.
    let idle: Vec<TcpStream> = (0..12).map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    wait_for("busy refusals counted", Duration::from_secs(5), || {
        let (_, rtmp) = engine.request("GET", "/api/rtmp", "");
        (rtmp["connecting"]["refused_busy"].as_u64() >= Some(4)).then_some(())
    });
    drop(idle);
    // The same name published twice over: the same stream id, the same play URL.
    let answer = publish_token(&engine, "site3/gate");
    let mut ids = Vec::new();
    for _ in 0..2 {
        let mut ffmpeg = publish(answer["url"].as_str().unwrap(), &["-an"], 3);
        let s = wait_for("the gate stream", Duration::from_secs(10), || stream_named(&engine, "site3/gate"));
        ids.push(s["stream_id"].clone());
        assert!(wait_exit(&mut ffmpeg, Duration::from_secs(15)).is_some_and(|s| s.success()));
        wait_for("the gate stream closed", Duration::from_secs(15), || stream_named(&engine, "site3/gate").is_none().then_some(()));
    }
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[0], answer["stream_id"]);
    let (_, rtmp) = engine.request("GET", "/api/rtmp", "");
    assert!(rtmp["connecting"]["refused_protocol"].as_u64() >= Some(2), "{rtmp}");
    assert_eq!(rtmp["publishing"]["published"], 2, "{rtmp}");
}
