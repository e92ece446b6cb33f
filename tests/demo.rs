//! `gmv --demo`: a picture without a camera, decodable by an independent player; SIGTERM is a
//! graceful stop with it too (exit 0); the log written to a file is plain text (no colours).

mod common;

use common::*;
use std::time::Duration;

#[test]
fn the_demo_stream_plays_a_decodable_test_pattern() {
    let mut engine = Engine::start_command(1, "", "", "", None, None, &["--demo"]);
    let id = "0000000001";
    engine.wait_stat(id, "frames", 25);
    let token = engine.stream_token(id);
    let out = work_dir().join("demo.flv");
    let (status, bytes) = spawn_viewer(engine.http, format!("/flv/{id}/{token}"), vec![], out.clone(), Duration::from_secs(3)).join().unwrap();
    assert_eq!(status, 200);
    assert!(bytes > 10_000, "{bytes} bytes in 3 s");
    let probe = ffprobe(&out);
    assert_eq!((probe.codec.as_str(), probe.width, probe.height), ("h264", 640, 360), "{probe:?}");
    assert!(probe.frames >= 40, "about 25 frames a second: {probe:?}");
    let log = engine.log_text();
    assert!(!log.contains('\u{1b}'), "no ANSI colour codes in a log that is not a terminal");
    // The demo's encoder thread leaves SIGTERM to the graceful stop (it killed the process, 143).
    assert_eq!(engine.terminate(), Some(0), "{}", engine.log_text());
}
