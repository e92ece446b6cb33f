//! A third-party SIP stack (sipp, `apt-get install sip-tester`) registers with digest.

mod common;

use common::*;
use std::process::Command;

#[test]
fn sipp_registers_with_digest() {
    let engine = Engine::start(1, "");
    let device = "34020000001320000009";
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/sipp/register.xml");
    let out = Command::new("timeout")
        .args(["30", "sipp"])
        .arg(engine.sip.to_string())
        .args(["-sf", scenario, "-m", "1", "-l", "1", "-nostdin", "-timeout", "20s", "-timeout_error"])
        .args(["-s", NODE_ID, "-key", "device", device, "-key", "domain", "3402000000", "-au", device, "-ap", "12345678"])
        .args(["-i", "127.0.0.1", "-p", &free_udp_port().to_string()])
        .output()
        .expect("sipp is required (apt-get install sip-tester; .ci/run does this)");
    assert!(
        out.status.success(),
        "sipp failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout).lines().rev().take(30).collect::<Vec<_>>().join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
    // sipp's last step is the 200; the engine counted it as registered before sending that.
    let (status, v) = engine.request("GET", &format!("/api/devices/{device}"), "");
    assert_eq!((status, v["online"].as_bool()), (200, Some(true)), "{v}");
}
