//! HLS end to end: PS over RTP in, playlist and TS segments out, read by ffprobe.

mod common;

use common::*;
use serde_json::json;
use std::process::Command;
use std::time::Duration;

fn get(http: std::net::SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, Vec<u8>) {
    let (head, body) = http_get(http, path, headers);
    (status_of(&head), body)
}

#[test]
fn hls_playlist_and_segments_decode() {
    let engine = Engine::start(2, "hls:\n  segment_duration_s: 1\n  segments_max: 10\n");
    let s = engine.open_stream(json!({}));
    let id = s["stream_id"].as_str().unwrap().to_string();
    let base = format!("/hls/{id}/{}", engine.stream_token(&id));
    assert_eq!(get(engine.http, &format!("/hls/{id}/wrong/index.m3u8"), &[]).0, 401);
    assert_eq!(get(engine.http, &format!("/hls/0000000001/{}/index.m3u8", engine.stream_token("0000000001")), &[]).0, 404);

    // The first playlist request turns HLS on and waits for a segment while the camera sends.
    // The media is made first: the playlist request waits (bounded) for the first segment
    // from the moment it is asked, and making the clip with ffmpeg can take seconds.
    let frames = h264_frames();
    let first = {
        let (http, path) = (engine.http, format!("{base}/index.m3u8"));
        std::thread::spawn(move || get(http, &path, &[]))
    };
    wait_for("HLS to start", Duration::from_secs(10), || (engine.stream(&id)["hls"] == true).then_some(()));
    push_ps_udp(&engine, &s, &frames, Duration::from_millis(10));
    let (status, first) = first.join().unwrap();
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&first).starts_with("#EXTM3U"));

    let (status, playlist) = get(engine.http, &format!("{base}/index.m3u8"), &[]);
    assert_eq!(status, 200);
    let playlist = String::from_utf8(playlist).unwrap();
    // 100 frames, a keyframe every 25: segments 0..=2 complete, the fourth still open.
    let segs: Vec<&str> = playlist.lines().filter(|l| l.ends_with(".ts")).collect();
    assert_eq!(segs, vec!["0.ts", "1.ts", "2.ts"], "{playlist}");
    assert!(playlist.contains("#EXT-X-TARGETDURATION:1\n") && playlist.contains("#EXT-X-MEDIA-SEQUENCE:0\n"), "{playlist}");
    assert_eq!(playlist.matches("#EXTINF:1.000,").count(), 3, "{playlist}");

    let mut all = Vec::new();
    for seg in &segs {
        let (status, data) = get(engine.http, &format!("{base}/{seg}"), &[]);
        assert_eq!(status, 200);
        assert_eq!(data[0], 0x47);
        all.extend_from_slice(&data);
    }
    // The header-token form serves the same segment.
    let (status, again) = get(engine.http, &format!("/{NODE_ID}/hls/{id}/1.ts"), &[("gmv-token", TOKEN)]);
    assert_eq!(status, 200);
    assert_eq!(again.len() % 188, 0);
    assert_eq!(get(engine.http, &format!("{base}/99.ts"), &[]).0, 404);
    let joined = work_dir().join("hls-joined.ts");
    std::fs::write(&joined, all).unwrap();
    assert_eq!(ffprobe(&joined), Probe { codec: "h264".into(), width: WIDTH, height: HEIGHT, frames: 75 });

    // ffprobe reads the live playlist itself.
    let out = Command::new("timeout")
        .args(["20", "ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height", "-of", "csv=p=0"])
        .arg(format!("http://{}{base}/index.m3u8", engine.http))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    assert!(!lines.is_empty() && lines.iter().all(|l| *l == "h264,320,240"), "{text} {}", String::from_utf8_lossy(&out.stderr));

    // The seed's bare playlist URL redirects to the playlist, and a player follows it.
    let (head, _) = http_get(engine.http, &base, &[]);
    assert_eq!(status_of(&head), 302, "{head}");
    assert!(head.contains(&format!("Location: {base}/index.m3u8\r\n")), "{head}");
    let out = Command::new("timeout")
        .args(["20", "ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height", "-of", "csv=p=0"])
        .arg(format!("http://{}{base}", engine.http))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l == "h264,320,240"), "{text} {}", String::from_utf8_lossy(&out.stderr));
}

/// The H.264 and H.265 test clips as frames.
fn clips() -> [(&'static str, Vec<gmv::proto::frame::Frame>); 2] {
    use gmv::proto::frame::Codec;
    [("h264", h264_frames()), ("hevc", gmv::sim::frames_from_es(Codec::H265, &std::fs::read(h265_clip()).unwrap(), FPS))]
}

#[test]
fn hls_with_fmp4_segments_decodes_h264_and_h265() {
    let engine = Engine::start(2, "hls:\n  segment_duration_s: 1\n  segments_max: 10\n");
    for (codec, frames) in clips() {
        let s = engine.open_stream(json!({}));
        let id = s["stream_id"].as_str().unwrap().to_string();
        let base = format!("/hls/{id}/{}", engine.stream_token(&id));
        let first = {
            let (http, path) = (engine.http, format!("{base}/index.fmp4.m3u8"));
            std::thread::spawn(move || get(http, &path, &[]))
        };
        wait_for("HLS to start", Duration::from_secs(10), || (engine.stream(&id)["hls"] == true).then_some(()));
        push_ps_udp(&engine, &s, &frames, Duration::from_millis(10));
        assert_eq!(first.join().unwrap().0, 200, "{codec}");

        let (status, playlist) = get(engine.http, &format!("{base}/index.fmp4.m3u8"), &[]);
        assert_eq!(status, 200);
        let playlist = String::from_utf8(playlist).unwrap();
        assert!(playlist.starts_with("#EXTM3U\n#EXT-X-VERSION:7\n") && playlist.contains("#EXT-X-MAP:URI=\"init-0.mp4\"\n"), "{playlist}");
        let segs: Vec<&str> = playlist.lines().filter(|l| l.ends_with(".m4s")).collect();
        assert_eq!(segs, vec!["0.m4s", "1.m4s", "2.m4s"], "{codec}: {playlist}");
        // The TS playlist of the same stream is its own (not started by the fMP4 one).
        assert_eq!(get(engine.http, &format!("{base}/0.ts"), &[]).0, 404);

        let (status, mut all) = get(engine.http, &format!("{base}/init-0.mp4"), &[]);
        assert_eq!(status, 200);
        assert_eq!(&all[4..8], b"ftyp");
        for seg in &segs {
            let (status, data) = get(engine.http, &format!("{base}/{seg}"), &[]);
            assert_eq!(status, 200);
            assert_eq!(&data[4..8], b"moof", "{codec} {seg}");
            all.extend_from_slice(&data);
        }
        let joined = work_dir().join(format!("hls-fmp4-{codec}.mp4"));
        std::fs::write(&joined, all).unwrap();
        assert_eq!(ffprobe(&joined), Probe { codec: codec.into(), width: WIDTH, height: HEIGHT, frames: 75 });

        // ffprobe reads the live playlist itself (EXT-X-MAP, then the fragments).
        let out = Command::new("timeout")
            .args(["20", "ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height", "-of", "csv=p=0"])
            .arg(format!("http://{}{base}/index.fmp4.m3u8", engine.http))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.lines().any(|l| l == format!("{codec},320,240")), "{text} {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn live_fmp4_over_http_decodes_h264_and_h265() {
    let engine = Engine::start(2, "");
    for (codec, frames) in clips() {
        let s = engine.open_stream(json!({}));
        let id = s["stream_id"].as_str().unwrap().to_string();
        let path = format!("/fmp4/{id}/{}", engine.stream_token(&id));
        let listed = s["play"]["fmp4"].as_str().unwrap().to_string();
        assert!(listed.contains(&format!("/fmp4/{id}/")), "{listed}");
        let out = work_dir().join(format!("live-{codec}.mp4"));
        let viewer = spawn_viewer(engine.http, path, vec![], out.clone(), Duration::from_secs(6));
        engine.wait_subscribers(&id, 1);
        push_ps_udp(&engine, &s, &frames, Duration::from_millis(10));
        let (status, bytes) = viewer.join().unwrap();
        assert_eq!(status, 200);
        assert!(bytes > 10_000, "{bytes}");
        // A fragment per GOP: the last GOP waits for a keyframe that never comes.
        assert_eq!(ffprobe(&out), Probe { codec: codec.into(), width: WIDTH, height: HEIGHT, frames: 75 });
    }
}
