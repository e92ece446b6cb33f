//! The simulated ONVIF camera (tests/onvif/sim.py: WS-Discovery, device, media, media2 and
//! PTZ services) for tests, its stream addresses pointing at an RTSP server's `/h264` (main)
//! and `/h264only` (sub).

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// The camera's user.
pub const USER: &str = "admin";

/// The camera, once it says it is ready; stopped when dropped.
pub struct OnvifCamera {
    child: Child,
    pub http_port: u16,
    pub discovery_port: u16,
    /// One JSON line per PTZ call and refused login.
    pub log: PathBuf,
}

impl OnvifCamera {
    /// `name` goes into its discovery scopes; `extra`: more of sim.py's arguments.
    pub fn start(rtsp_port: u16, name: &str, password: &str, extra: &[&str]) -> OnvifCamera {
        let (http_port, discovery_port) = (super::free_tcp_port(), super::free_udp_port());
        let slug: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        let log = super::work_dir().join(format!("onvif-{slug}-{}-{http_port}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&log);
        let mut child = Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/onvif/sim.py"))
            .args(["--http-port", &http_port.to_string(), "--discovery-port", &discovery_port.to_string()])
            .args(["--user", USER, "--password", password, "--name", name])
            .args(["--rtsp-main", &format!("rtsp://127.0.0.1:{rtsp_port}/h264"), "--rtsp-sub", &format!("rtsp://127.0.0.1:{rtsp_port}/h264only")])
            .arg("--log")
            .arg(&log)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 tests/onvif/sim.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the simulated ONVIF camera did not start");
        OnvifCamera { child, http_port, discovery_port, log }
    }

    pub fn device_url(&self) -> String {
        format!("http://127.0.0.1:{}/onvif/device_service", self.http_port)
    }

    /// Every line of its log, in order.
    pub fn log_lines(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).collect()
    }
}

impl Drop for OnvifCamera {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
