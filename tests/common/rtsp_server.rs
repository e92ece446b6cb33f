//! GStreamer's RTSP server (tests/rtsp/serve.py) as an independent source for pull tests.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// The RTSP server on `port`, once it says it serves; killed when dropped.
pub struct RtspServer(Child);

impl RtspServer {
    pub fn start(port: u16, extra: &[&str]) -> RtspServer {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/rtsp/serve.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--port", &port.to_string()])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run tests/rtsp/serve.py (see tests/rtsp/README.md for its packages)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the RTSP server did not start (tests/rtsp/README.md lists its packages)");
        RtspServer(child)
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
