//! RTSP pull proxies against an independent RTSP server (GStreamer's gst-rtsp-server,
//! tests/rtsp/serve.py): H.264 + AAC over TCP decoded by ffprobe from gmv's FLV, H.265 + G.711
//! over UDP decoded from gmv's HLS, the server killed and started again (the proxy comes back by
//! itself, the stream id unchanged), a wrong password (unauthorized, backing off, no busy loop).
//! RTMP, HTTP-FLV and HLS sources from ffmpeg (its RTMP and HTTP servers in listen mode, its
//! HLS muxer behind Python's HTTP server).

mod common;

use common::rtsp_server::RtspServer;
use common::*;
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn add_proxy(engine: &Engine, body: Value) -> Value {
    let (status, v) = engine.request("POST", "/api/proxies", &body.to_string());
    assert_eq!(status, 201, "{v}");
    v
}

fn proxy(engine: &Engine, name: &str) -> Value {
    engine.request("GET", &format!("/api/proxies/{name}"), "").1
}

fn wait_status(engine: &Engine, name: &str, status: &str, limit: Duration) -> Value {
    wait_for(&format!("proxy {name} {status}"), limit, || {
        let p = proxy(engine, name);
        (p["state"]["status"] == status).then_some(p)
    })
}

#[test]
fn rtsp_h264_and_aac_over_tcp_play_as_flv_and_come_back_after_the_server_restarts() {
    let port = free_tcp_port();
    let server = RtspServer::start(port, &[]);
    let engine = Engine::start(1, "");
    let p = add_proxy(&engine, json!({ "name": "cam1", "url": format!("rtsp://127.0.0.1:{port}/h264"), "transport": "tcp" }));
    let stream_id = p["stream_id"].as_str().unwrap().to_string();
    wait_status(&engine, "cam1", "playing", Duration::from_secs(15));
    engine.wait_stat(&stream_id, "keyframes", 1);
    let token = engine.stream_token(&stream_id);
    let file = work_dir().join("pull-h264.flv");
    let (status, bytes) = spawn_viewer(engine.http, format!("/flv/{stream_id}/{token}"), vec![], file.clone(), Duration::from_secs(4)).join().unwrap();
    assert_eq!(status, 200);
    assert_four_seconds_of_test_pattern(&file, bytes);
    let info = engine.stream(&stream_id);
    assert_eq!((info["name"].as_str(), info["payload"].as_str(), info["transport"].as_str()), (Some("proxy/cam1"), Some("rtsp"), Some("tcp")), "{info}");

    // The server goes away: the proxy retries with backoff; the stream stays for its viewers.
    drop(server);
    let retrying = wait_status(&engine, "cam1", "retrying", Duration::from_secs(30));
    assert!(retrying["state"]["last_error"].is_string(), "{retrying}");
    let frames_before = engine.stream(&stream_id)["video_frames"].as_u64().unwrap();
    let _server = RtspServer::start(port, &[]);
    let back = wait_status(&engine, "cam1", "playing", Duration::from_secs(45));
    assert!(back["state"]["connects"].as_u64() >= Some(2), "{back}");
    wait_for("pictures again after the restart", Duration::from_secs(15), || {
        (engine.stream(&stream_id)["video_frames"].as_u64() > Some(frames_before + 25)).then_some(())
    });
    assert_eq!(back["stream_id"], stream_id.as_str());

    // Deleting the proxy ends its stream.
    let (status, _) = engine.request("DELETE", "/api/proxies/cam1", "");
    assert_eq!(status, 200);
    wait_for("the proxy's stream closed", Duration::from_secs(10), || {
        let (code, _) = engine.request("GET", &format!("/api/streams/{stream_id}"), "");
        (code == 404).then_some(())
    });
}

#[test]
fn rtsp_h265_and_g711_over_udp_play_as_hls() {
    let port = free_tcp_port();
    let _server = RtspServer::start(port, &[]);
    let engine = Engine::start(1, "");
    let p = add_proxy(&engine, json!({ "name": "gate", "url": format!("rtsp://127.0.0.1:{port}/h265"), "transport": "udp" }));
    let stream_id = p["stream_id"].as_str().unwrap().to_string();
    let playing = wait_status(&engine, "gate", "playing", Duration::from_secs(15));
    assert_eq!((playing["state"]["video"].as_str(), playing["state"]["audio"].as_str()), (Some("h265"), Some("pcma")), "{playing}");
    engine.wait_stat(&stream_id, "keyframes", 2);
    let info = engine.stream(&stream_id);
    assert_eq!((info["video_codec"].as_str(), info["audio_codec"].as_str(), info["width"].as_u64()), (Some("h265"), Some("pcma"), Some(320)), "{info}");
    // HLS: ask for the playlist (segments start), then read a whole segment with ffprobe.
    let token = engine.stream_token(&stream_id);
    let playlist = format!("/hls/{stream_id}/{token}/index.m3u8");
    let segment = wait_for("an HLS segment", Duration::from_secs(20), || {
        let (head, body) = http_get(engine.http, &playlist, &[]);
        let text = String::from_utf8_lossy(&body).to_string();
        (status_of(&head) == 200).then_some(())?;
        text.lines().find(|l| !l.starts_with('#') && !l.is_empty()).map(str::to_string)
    });
    let base = playlist.rsplit_once('/').unwrap().0;
    let (head, body) = http_get(engine.http, &format!("{base}/{segment}"), &[]);
    assert_eq!(status_of(&head), 200);
    let file = work_dir().join("pull-h265.ts");
    std::fs::write(&file, body).unwrap();
    let video = ffprobe(&file);
    assert_eq!((video.codec.as_str(), video.width, video.height), ("hevc", 320, 240), "{video:?}");
    assert!(video.frames >= 20, "{video:?}");
    // G.711 is not carried in HLS (no player reads it there); the stream has it (above) for
    // FLV and WebRTC.
}

#[test]
fn an_on_demand_proxy_dials_its_source_only_while_watched() {
    let port = free_tcp_port();
    let _server = RtspServer::start(port, &[]);
    let engine = Engine::start(1, "");
    let url = format!("rtsp://127.0.0.1:{port}/h264");
    let p = add_proxy(&engine, json!({ "name": "door", "url": url, "mode": "on_demand", "idle_s": 2 }));
    let stream_id = p["stream_id"].as_str().unwrap().to_string();
    // Open but not dialled while nobody watches.
    wait_status(&engine, "door", "idle", Duration::from_secs(10));
    assert_eq!(engine.stream(&stream_id)["name"], "proxy/door");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(proxy(&engine, "door")["state"]["connects"], 0);
    // A viewer: the source is dialled and the viewer gets pictures.
    let token = engine.stream_token(&stream_id);
    let file = work_dir().join("pull-on-demand.flv");
    let viewer = spawn_viewer(engine.http, format!("/flv/{stream_id}/{token}"), vec![], file.clone(), Duration::from_secs(6));
    wait_status(&engine, "door", "playing", Duration::from_secs(15));
    let (status, _) = viewer.join().unwrap();
    assert_eq!(status, 200);
    let video = ffprobe(&file);
    assert_eq!(video.codec, "h264");
    assert!(video.frames >= 25, "{video:?}");
    // The viewer gone, idle_s later the source is closed and the stream waits again.
    let idle = wait_status(&engine, "door", "idle", Duration::from_secs(15));
    assert_eq!(idle["state"]["connects"], 1, "{idle}");
    wait_for("the idle stream open again", Duration::from_secs(10), || {
        let (code, _) = engine.request("GET", &format!("/api/streams/{stream_id}"), "");
        (code == 200).then_some(())
    });
    let (status, _) = engine.request("PUT", "/api/proxies/door", r#"{"idle_s": 0}"#);
    assert_eq!(status, 400);
}

#[test]
fn a_wrong_password_is_unauthorized_and_backs_off() {
    let port = free_tcp_port();
    let _server = RtspServer::start(port, &["--user", "admin", "--password", "right"]);
    let engine = Engine::start(1, "");
    add_proxy(&engine, json!({ "name": "wrong", "url": format!("rtsp://admin:wrong@127.0.0.1:{port}/h264only") }));
    let p = add_proxy(&engine, json!({ "name": "right", "url": format!("rtsp://admin:right@127.0.0.1:{port}/h264only") }));
    wait_status(&engine, "right", "playing", Duration::from_secs(15));
    let wrong = wait_status(&engine, "wrong", "unauthorized", Duration::from_secs(15));
    assert!(wrong["state"]["last_error"].as_str().unwrap_or_default().contains("401"), "{wrong}");
    // Passwords never leave: not in the API, not in the log.
    let (_, list) = engine.request("GET", "/api/proxies", "");
    assert!(!list.to_string().contains("wrong@") && !list.to_string().contains("right@"), "{list}");
    assert!(list.to_string().contains("admin:***@"), "{list}");
    // Backing off: a few attempts in 8 s, not hundreds.
    std::thread::sleep(Duration::from_secs(8));
    let failures = proxy(&engine, "wrong")["state"]["failures"].as_u64().unwrap();
    assert!((2..=6).contains(&failures), "{failures} attempts in about 10 s");
    assert!(!engine.log_text().contains(":wrong@") && !engine.log_text().contains(":right@"));
    assert!(engine.stream(p["stream_id"].as_str().unwrap())["video_frames"].as_u64() > Some(0));
}

#[test]
fn proxies_of_other_schemes_and_bad_names_are_refused_and_kept_across_restarts() {
    let mut engine = Engine::start(1, "");
    for (body, why) in [
        (json!({ "name": "a", "url": "ftp://h/live/x" }), "ftp"),
        (json!({ "name": "a", "url": "rtmps://h/live/x" }), "rtmps (not yet)"),
        (json!({ "name": "a", "url": "rtmp://h/nokey" }), "rtmp without app/stream"),
        (json!({ "name": "a", "url": "rtmp://h/live/x", "transport": "udp" }), "udp for rtmp"),
        (json!({ "name": "a/b", "url": "rtsp://h/x" }), "name"),
        (json!({ "name": "a", "url": "rtsp://h/x", "transport": "sctp" }), "transport"),
    ] {
        let (status, v) = engine.request("POST", "/api/proxies", &body.to_string());
        assert_eq!(status, 400, "{why}: {v}");
    }
    // Kept in data_dir: a restart finds it (dialling a port nobody serves: retrying).
    add_proxy(&engine, json!({ "name": "lobby", "url": format!("rtsp://127.0.0.1:{}/h264", free_tcp_port()) }));
    let (status, _) = engine.request("POST", "/api/proxies", &json!({ "name": "lobby", "url": "rtsp://h/x" }).to_string());
    assert_eq!(status, 409);
    engine.crash_and_restart();
    let p = wait_status(&engine, "lobby", "retrying", Duration::from_secs(15));
    assert!(p["state"]["last_error"].is_string(), "{p}");
}

/// A child process killed when the test ends.
struct Child2(Child);

impl Drop for Child2 {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// ffmpeg sending 320x240 test pictures (H.264, GOP 25) and a 1 kHz tone in `audio` (ffmpeg's
/// encoder and rate args) as `format` to `output`, for `seconds`.
fn ffmpeg_source(audio: &[&str], format: &str, output: &str, extra: &[&str], seconds: u32) -> Child2 {
    let child = Command::new("ffmpeg")
        .args(["-v", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=16000"])
        .args(["-t", &seconds.to_string(), "-map", "0:v", "-map", "1:a", "-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "25"])
        .args(audio)
        .args(extra)
        .args(["-f", format, output])
        .stdin(Stdio::null())
        .spawn()
        .expect("ffmpeg");
    Child2(child)
}

/// Plays the proxy's stream as FLV for 4 s and checks what ffprobe decodes.
fn four_seconds_of(engine: &Engine, stream_id: &str, file: &str) -> std::path::PathBuf {
    engine.wait_stat(stream_id, "keyframes", 1);
    let token = engine.stream_token(stream_id);
    let file = work_dir().join(file);
    let (status, bytes) = spawn_viewer(engine.http, format!("/flv/{stream_id}/{token}"), vec![], file.clone(), Duration::from_secs(4)).join().unwrap();
    assert_eq!(status, 200);
    assert!(bytes > 10_000, "{bytes} bytes of FLV");
    file
}

#[test]
fn rtmp_and_http_flv_sources_served_by_ffmpeg_play_as_flv() {
    let engine = Engine::start(1, "");
    // RTMP: ffmpeg's RTMP server (listen mode) with H.264 + AAC.
    let rtmp_port = free_tcp_port();
    let aac = ["-c:a", "aac", "-ar", "16000", "-ac", "1"];
    let _rtmp = ffmpeg_source(&aac, "flv", &format!("rtmp://127.0.0.1:{rtmp_port}/live/src"), &["-listen", "1"], 60);
    // HTTP-FLV: ffmpeg's HTTP server (listen mode) with H.264 + G.711 A-law.
    let http_port = free_tcp_port();
    let alaw = ["-c:a", "pcm_alaw", "-ar", "8000", "-ac", "1"];
    let _http = ffmpeg_source(&alaw, "flv", &format!("http://127.0.0.1:{http_port}/live/src.flv"), &["-listen", "1"], 60);
    // ffmpeg listens once it has opened its inputs: the proxies retry until then.
    let a = add_proxy(&engine, json!({ "name": "rtmp-src", "url": format!("rtmp://127.0.0.1:{rtmp_port}/live/src") }));
    let b = add_proxy(&engine, json!({ "name": "flv-src", "url": format!("http://127.0.0.1:{http_port}/live/src.flv") }));

    let playing = wait_status(&engine, "rtmp-src", "playing", Duration::from_secs(20));
    let a_id = a["stream_id"].as_str().unwrap();
    let file = four_seconds_of(&engine, a_id, "pull-rtmp.flv");
    assert_four_seconds_of_test_pattern(&file, std::fs::metadata(&file).unwrap().len() as usize);
    let p = proxy(&engine, "rtmp-src");
    assert_eq!((p["state"]["video"].as_str(), p["state"]["audio"].as_str()), (Some("h264"), Some("aac")), "{p} {playing}");
    assert_eq!(engine.stream(a_id)["payload"], "rtmp");

    wait_status(&engine, "flv-src", "playing", Duration::from_secs(20));
    let b_id = b["stream_id"].as_str().unwrap();
    let file = four_seconds_of(&engine, b_id, "pull-http-flv.flv");
    let video = ffprobe(&file);
    assert_eq!((video.codec.as_str(), video.width, video.height), ("h264", 320, 240));
    assert!((75..=160).contains(&video.frames), "{video:?}");
    let audio = ffprobe_audio(&file);
    assert_eq!((audio.codec.as_str(), audio.sample_rate), ("pcm_alaw", 8000), "{audio:?}");
    let p = proxy(&engine, "flv-src");
    assert_eq!((p["state"]["video"].as_str(), p["state"]["audio"].as_str()), (Some("h264"), Some("pcma")), "{p}");
    assert_eq!(engine.stream(b_id)["payload"], "flv");
}

#[test]
fn an_hls_source_written_by_ffmpeg_plays_as_flv_at_its_own_pace() {
    let dir = work_dir().join(format!("pull-hls-src-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let playlist = dir.join("index.m3u8");
    let aac = ["-c:a", "aac", "-ar", "16000", "-ac", "1"];
    let hls = ["-hls_time", "1", "-hls_list_size", "6", "-hls_flags", "delete_segments"];
    let _ffmpeg = ffmpeg_source(&aac, "hls", playlist.to_str().unwrap(), &hls, 120);
    let port = free_tcp_port();
    let _server = Child2(
        Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1", "--directory", dir.to_str().unwrap(), &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m http.server"),
    );
    let engine = Engine::start(1, "");
    let p = add_proxy(&engine, json!({ "name": "hls-src", "url": format!("http://127.0.0.1:{port}/index.m3u8") }));
    wait_status(&engine, "hls-src", "playing", Duration::from_secs(30));
    let id = p["stream_id"].as_str().unwrap();
    let file = four_seconds_of(&engine, id, "pull-hls.flv");
    assert_four_seconds_of_test_pattern(&file, std::fs::metadata(&file).unwrap().len() as usize);
    assert_eq!(engine.stream(id)["payload"], "hls");
    // Paced by the timestamps, not a burst of 25 pictures per fetched segment: read every
    // 100 ms for 3 s, the count never jumps by more than a few pictures.
    let count = || engine.stream(id)["video_frames"].as_u64().unwrap();
    let (mut last, mut jump_max) = (count(), 0);
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(100));
        let now = count();
        jump_max = jump_max.max(now - last);
        last = now;
    }
    assert!(jump_max <= 12, "{jump_max} pictures within 100 ms");
    let frames = proxy(&engine, "hls-src")["state"]["frames"].as_u64().unwrap();
    assert!(frames > 100, "{frames} frames");
}

/// What the hostile HTTP source sends, by the request's path.
fn hostile_answer(path: &str, conn: &mut std::net::TcpStream) -> std::io::Result<u64> {
    use std::io::Write;
    const HUNDRED_MB: u64 = 100 << 20;
    let block = vec![0u8; 64 << 10];
    // Bytes written until 100 MB or until the peer hangs up (then: how far it got).
    let endless = |conn: &mut std::net::TcpStream, head: &[u8], fill: &[u8]| -> std::io::Result<u64> {
        conn.write_all(head)?;
        let mut sent = head.len() as u64;
        while sent < HUNDRED_MB && conn.write_all(fill).is_ok() {
            sent += fill.len() as u64;
        }
        Ok(sent)
    };
    match path {
        // Bytes that are no FLV at all.
        "/garbage.flv" => {
            let mut noise: Vec<u8> = (0..(256u32 << 10)).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
            noise[0] = b'X';
            conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: video/x-flv\r\n\r\n")?;
            conn.write_all(&noise)?;
            Ok(noise.len() as u64)
        }
        // An FLV whose first tag says 16 MB, then 100 MB of it.
        "/huge.flv" => {
            let mut head = b"HTTP/1.1 200 OK\r\nContent-Type: video/x-flv\r\n\r\nFLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00".to_vec();
            head.extend_from_slice(&[9, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0]);
            endless(conn, &head, &block)
        }
        // An answer head that never ends.
        "/head.flv" => endless(conn, b"HTTP/1.1 200 OK\r\nX-Filler: ", &vec![b'a'; 64 << 10]),
        // A chunk size past any integer.
        "/chunks.flv" => {
            conn.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFFFFFF\r\n")?;
            Ok(0)
        }
        // HLS whose segment is 100 MB of bytes with no length given.
        "/big/index.m3u8" => {
            let text = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:1\n#EXTINF:2.0,\nseg1.ts\n";
            write!(conn, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}", text.len())?;
            Ok(0)
        }
        "/big/seg1.ts" => endless(conn, b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\n\r\n", &block),
        _ => {
            conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")?;
            Ok(0)
        }
    }
}

/// Sources that send garbage, a 16 MB FLV tag followed by 100 MB, an endless answer head, a
/// chunk size past any integer, or a 100 MB HLS segment: each proxy fails with a reason that
/// says so, reads a bounded part of what was sent, backs off instead of spinning, and keeps
/// its stream open for its viewers.
#[test]
fn hostile_http_sources_are_bounded_and_their_streams_stay_up() {
    use std::io::{BufRead, BufReader};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // The most bytes one answer got out before the client hung up, by path.
    let sent: Arc<Mutex<std::collections::HashMap<String, u64>>> = Default::default();
    let requests = Arc::new(AtomicU64::new(0));
    let (sent_w, requests_w) = (sent.clone(), requests.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let (sent, requests) = (sent_w.clone(), requests_w.clone());
            std::thread::spawn(move || {
                conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                conn.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
                let mut line = String::new();
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut h = String::new();
                while reader.read_line(&mut h).is_ok_and(|n| n > 2) {
                    h.clear();
                }
                requests.fetch_add(1, Ordering::Relaxed);
                let n = hostile_answer(&path, &mut conn).unwrap_or(0);
                let mut s = sent.lock().unwrap();
                let e = s.entry(path).or_default();
                *e = (*e).max(n);
            });
        }
    });
    let engine = Engine::start(1, "");
    let cases = [
        ("garbage", "/garbage.flv", "not an FLV stream"),
        ("huge", "/huge.flv", "FLV tag of 16777215 bytes"),
        ("head", "/head.flv", "answer head over"),
        ("chunks", "/chunks.flv", "chunk"),
        ("bigseg", "/big/index.m3u8", "body over"),
    ];
    let mut ids = Vec::new();
    for (name, path, _) in cases {
        let p = add_proxy(&engine, json!({ "name": name, "url": format!("http://127.0.0.1:{port}{path}") }));
        ids.push(p["stream_id"].as_str().unwrap().to_string());
    }
    let started = std::time::Instant::now();
    for ((name, _, why), id) in cases.iter().zip(&ids) {
        let p = wait_for(&format!("{name} failing with {why:?}"), Duration::from_secs(60), || {
            let p = proxy(&engine, name);
            p["state"]["last_error"].as_str().is_some_and(|e| e.contains(why)).then_some(p)
        });
        assert!(matches!(p["state"]["status"].as_str(), Some("retrying" | "connecting")), "{p}");
        assert_eq!(p["state"]["frames"], 0, "{p}");
        let (status, stream) = engine.request("GET", &format!("/api/streams/{id}"), "");
        assert_eq!(status, 200, "{name}'s stream stays open for its viewers: {stream}");
    }
    // Backoff, not a busy loop: 1 s doubling, so a handful of tries per proxy by now.
    let elapsed_s = started.elapsed().as_secs() + 5;
    for (name, _, _) in cases {
        let failures = proxy(&engine, name)["state"]["failures"].as_u64().unwrap();
        assert!(failures <= 2 + elapsed_s, "{name}: {failures} failures in about {elapsed_s} s");
    }
    assert!(requests.load(Ordering::Relaxed) < 200, "{} requests", requests.load(Ordering::Relaxed));
    // Of 100 MB offered, gmv took the head of it: the bounds (16 KiB heads, 8 MiB frames,
    // 32 MiB segments) plus what the sockets buffer.
    let sent = sent.lock().unwrap().clone();
    for (path, most) in [("/huge.flv", 16u64 << 20), ("/head.flv", 16 << 20), ("/big/seg1.ts", 48 << 20)] {
        let n = sent.get(path).copied().unwrap_or(0);
        assert!(n < most, "{path}: {n} bytes went out before gmv hung up (bound {most})");
    }
    assert!(!engine.log_text().contains("panicked"));
}

/// At most 1,000 proxies: the 1,001st is refused by name (on-demand ones: nothing is dialled).
#[test]
fn a_thousand_proxies_are_the_most() {
    let engine = Engine::start(1, "");
    let url = format!("rtsp://127.0.0.1:{}/h264", free_tcp_port());
    for i in 0..1000 {
        let body = json!({ "name": format!("p{i}"), "url": url, "mode": "on_demand" }).to_string();
        let (status, v) = engine.request("POST", "/api/proxies", &body);
        assert_eq!(status, 201, "proxy {i}: {v}");
    }
    let (status, v) = engine.request("POST", "/api/proxies", &json!({ "name": "one-more", "url": url }).to_string());
    assert_eq!((status, v["code"].as_str()), (409, Some("too_many")), "{v}");
    assert!(v["message"].as_str().is_some_and(|m| m.contains("1000")), "{v}");
    let (_, list) = engine.request("GET", "/api/proxies", "");
    assert_eq!((list["total"].as_u64(), list["max"].as_u64()), (Some(1000), Some(1000)));
    wait_for("the thousand streams open", Duration::from_secs(30), || {
        let (_, streams) = engine.request("GET", "/api/streams", "");
        let n = streams.as_array().or(streams["streams"].as_array()).map_or(0, |a| a.iter().filter(|s| s["name"].as_str().is_some_and(|n| n.starts_with("proxy/p"))).count());
        (n == 1000).then_some(())
    });
}

/// A folder with a site authority (`ca.crt`) and a server certificate it signed for 127.0.0.1
/// only (`server.crt`, `server.key`), made by the openssl command line.
fn site_certificates(name: &str) -> std::path::PathBuf {
    let dir = work_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let openssl = |args: &[&str]| {
        let status = Command::new("openssl").args(args).current_dir(&dir).stderr(Stdio::null()).status().expect("openssl");
        assert!(status.success(), "openssl {args:?}");
    };
    openssl(&["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=site-ca", "-keyout", "ca.key", "-out", "ca.crt"]);
    openssl(&["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=camera-server", "-keyout", "server.key", "-out", "server.csr"]);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=critical,CA:FALSE\n").unwrap();
    openssl(&["x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "server.crt"]);
    dir
}

/// RTSP over TLS: GStreamer's RTSP server with the site authority's certificate, pulled as
/// `rtsps://` over interleaved TCP and played (ffprobe decodes the FLV); a name the
/// certificate lacks is refused, saying so.
#[test]
fn an_rtsps_source_plays_through_tls() {
    let dir = site_certificates("pull-rtsps");
    let port = free_tcp_port();
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    let _server = RtspServer::start(port, &["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]);
    let engine = Engine::start(1, &format!("pull:\n  ca_file: \"{}\"\n", dir.join("ca.crt").display()));
    let p = add_proxy(&engine, json!({ "name": "tls-cam", "url": format!("rtsps://127.0.0.1:{port}/h264") }));
    add_proxy(&engine, json!({ "name": "tls-wrong", "url": format!("rtsps://localhost:{port}/h264") }));
    wait_status(&engine, "tls-cam", "playing", Duration::from_secs(20));
    let file = four_seconds_of(&engine, p["stream_id"].as_str().unwrap(), "pull-rtsps.flv");
    assert_four_seconds_of_test_pattern(&file, std::fs::metadata(&file).unwrap().len() as usize);
    let refused = wait_for("tls-wrong refused", Duration::from_secs(20), || {
        let v = proxy(&engine, "tls-wrong");
        v["state"]["last_error"].as_str().is_some_and(|e| e.contains("TLS") && e.contains("certificate")).then_some(v)
    });
    assert_eq!(refused["state"]["frames"], 0, "{refused}");
}

/// An HTTPS HLS source: ffmpeg's HLS output behind Python's TLS server with a certificate of
/// a site's own authority (`pull.ca_file`), played; the same server under a name its
/// certificate does not carry is refused with the reason.
#[test]
fn an_https_hls_source_with_a_site_authority_plays_and_a_wrong_name_is_refused() {
    let dir = site_certificates("pull-https");
    let hls = dir.join("hls");
    std::fs::create_dir_all(&hls).unwrap();
    let playlist = hls.join("index.m3u8");
    let aac = ["-c:a", "aac", "-ar", "16000", "-ac", "1"];
    let _ffmpeg = ffmpeg_source(&aac, "hls", playlist.to_str().unwrap(), &["-hls_time", "1", "-hls_list_size", "6", "-hls_flags", "delete_segments"], 90);
    let port = free_tcp_port();
    let server = format!(
        "import http.server, ssl, functools\n\
         h = functools.partial(http.server.SimpleHTTPRequestHandler, directory={hls:?})\n\
         s = http.server.ThreadingHTTPServer(('127.0.0.1', {port}), h)\n\
         c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
         c.load_cert_chain({crt:?}, {key:?})\n\
         s.socket = c.wrap_socket(s.socket, server_side=True)\n\
         s.serve_forever()\n",
        hls = hls.display().to_string(),
        crt = dir.join("server.crt").display().to_string(),
        key = dir.join("server.key").display().to_string(),
    );
    let _https = Child2(Command::new("python3").args(["-c", &server]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("python3"));
    let engine = Engine::start(1, &format!("pull:\n  ca_file: \"{}\"\n", dir.join("ca.crt").display()));
    let p = add_proxy(&engine, json!({ "name": "tls-hls", "url": format!("https://127.0.0.1:{port}/index.m3u8") }));
    let wrong = add_proxy(&engine, json!({ "name": "tls-name", "url": format!("https://localhost:{port}/index.m3u8") }));
    wait_status(&engine, "tls-hls", "playing", Duration::from_secs(30));
    let file = four_seconds_of(&engine, p["stream_id"].as_str().unwrap(), "pull-https-hls.flv");
    let video = ffprobe(&file);
    assert_eq!((video.codec.as_str(), video.width, video.height), ("h264", 320, 240), "{video:?}");
    let refused = wait_for("tls-name refused", Duration::from_secs(20), || {
        let v = proxy(&engine, "tls-name");
        v["state"]["last_error"].as_str().is_some_and(|e| e.contains("TLS") && e.contains("certificate")).then_some(v)
    });
    assert_eq!(refused["state"]["frames"], 0, "{refused} {wrong}");
}

/// A record plan on a proxy's stream (`PUT /api/streams/{id}/record-plan`): an on-demand proxy
/// nobody watches is dialled when the plan starts, recorded (ffprobe reads the file), and its
/// source closed again after the plan's end.
#[test]
fn a_record_plan_dials_an_on_demand_proxy_records_it_and_lets_it_go() {
    let unix_s = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let hms = |t: u64| format!("{:02}:{:02}:{:02}", (t % 86_400) / 3600, (t % 3600) / 60, t % 60);
    let port = free_tcp_port();
    let _server = RtspServer::start(port, &[]);
    let engine = Engine::start(1, "");
    let p = add_proxy(&engine, json!({ "name": "yard", "url": format!("rtsp://127.0.0.1:{port}/h264"), "mode": "on_demand", "idle_s": 1 }));
    let stream_id = p["stream_id"].as_str().unwrap().to_string();
    wait_status(&engine, "yard", "idle", Duration::from_secs(10));
    // Not across midnight UTC (waited out, at most 12 s).
    while (unix_s() + 14) % 86_400 < 14 {
        std::thread::sleep(Duration::from_millis(500));
    }
    let (start, end) = (unix_s() + 2, unix_s() + 10);
    let weekday = (start / 86_400 + 3) % 7 + 1;
    let plan = json!({ "name": "yard-day", "time_zone": "UTC", "ranges": [{ "days": [weekday], "start": hms(start), "end": hms(end) }] });
    assert_eq!(engine.request("POST", "/api/record-plans", &plan.to_string()).0, 201);
    let path = format!("/api/streams/{stream_id}/record-plan");
    let (status, v) = engine.request("PUT", &path, &json!({ "plan": "yard-day" }).to_string());
    assert_eq!(status, 200, "{v}");
    assert_eq!(engine.request("PUT", "/api/streams/4000000001/record-plan", &json!({ "plan": "yard-day" }).to_string()).0, 404, "no such stream");

    let state = || {
        let (_, v) = engine.request("GET", "/api/record-plans", "");
        v["channels"].as_array().and_then(|c| c.iter().find(|c| c["channel_id"] == stream_id.as_str()).cloned()).unwrap_or(Value::Null)
    };
    wait_for("the plan recording the proxy", Duration::from_secs(15), || (state()["state"] == "recording").then_some(()));
    assert_eq!(state()["device_id"], "stream");
    wait_status(&engine, "yard", "playing", Duration::from_secs(10));
    assert_eq!(engine.stream(&stream_id)["subscribers"], 0, "nobody watches: the plan dialled it");
    wait_for("the plan's end", Duration::from_secs(20), || (state()["state"] == "idle").then_some(()));
    wait_status(&engine, "yard", "idle", Duration::from_secs(15));
    let record = wait_for("the recording closed", Duration::from_secs(10), || {
        let (_, v) = engine.request("GET", &format!("/api/records?stream={stream_id}"), "");
        v["records"].as_array().and_then(|r| r.iter().find(|r| r["in_progress"] == false).cloned())
    });
    let ms = record["duration_ms"].as_u64().unwrap();
    assert!((3_000..=9_000).contains(&ms), "{record}");
    let (_, body) = http_get(engine.http, record["url"].as_str().unwrap(), &[]);
    let file = work_dir().join(format!("planned-proxy-{}.mp4", std::process::id()));
    std::fs::write(&file, body).unwrap();
    let video = ffprobe(&file);
    assert_eq!((video.codec.as_str(), video.width), ("h264", 320), "{video:?}");
    assert!(video.frames as u64 >= ms * 25 / 1000 - 25, "{video:?} in {ms} ms");
}
