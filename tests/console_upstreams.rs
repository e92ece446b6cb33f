//! The console's Upstreams view (级联上级) in headless Chromium: a lower gmv with a simulated
//! camera reports to four upper platforms: `city`, an upper gmv that takes it (registered, and
//! plays one channel through it), `province`, the same upper gmv under a wrong password
//! (refused: retrying), `silent`, an address where nobody answers (registering, then
//! retrying once its REGISTER goes unanswered), and `closed`, over TCP to a port nobody
//! listens on (retrying: cannot connect). tests/browser/upstreams_check.mjs reads the
//! view at desktop and phone width in zh-CN and en, and with the picker shares channels 1, 2
//! and 4 with city and all with province (admin), is refused for silent (operator); a viewer is
//! told why it sees nothing. What was saved is read back here through the API. Screenshots land
//! in target/console-upstreams-*.png. Needs chromium and `npm ci` in tests/browser.

mod common;

use common::gb_device::*;
use common::gb_sim::*;
use common::*;
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;

const BROWSER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
const SHOTS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target");
const UPPER_ID: &str = "44010000002000000001";
const UPPER_DOMAIN: &str = "4401000000";
const LOWER_ID: &str = "34020000002000000077";
/// The upper gmv under another id, where the lower registers with a wrong password.
const PROVINCE_ID: &str = "44000000002000000001";
const PROVINCE_LOCAL_ID: &str = "34020000002000000078";
const SILENT_ID: &str = "45000000002000000001";
const OPERATOR_KEY: &str = "console-upstreams-operator-key";
const VIEWER_KEY: &str = "console-upstreams-viewer-key";

fn upstream(lower: &Engine, id: &str) -> Value {
    let (status, v) = lower.request("GET", "/api/upstreams", "");
    assert_eq!(status, 200, "{v}");
    v["upstreams"].as_array().and_then(|l| l.iter().find(|u| u["id"] == id).cloned()).unwrap_or(Value::Null)
}

#[test]
fn the_console_shows_the_upstreams_explains_their_errors_and_changes_what_they_share() {
    // The upper keeps what it plays without a viewer: the session sent up lasts the whole test.
    let top = Engine::start_with(1, &format!("node_id: \"{UPPER_ID}\"\n"), &format!("  domain: \"{UPPER_DOMAIN}\"\n  no_viewer_stop_s: 0\n"), None);
    // Bound and never read: REGISTERs sent here go unanswered for as long as the test runs.
    let nobody = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let keys = format!(
        "  api_keys: [{{name: admin, role: admin, sha256: \"{}\"}}, {{name: op, role: operator, sha256: \"{}\"}}, {{name: look, role: viewer, sha256: \"{}\"}}]\n",
        gmv::auth::key_hash(TOKEN),
        gmv::auth::key_hash(OPERATOR_KEY),
        gmv::auth::key_hash(VIEWER_KEY)
    );
    let cascade = format!(
        "cascade:\n  upstreams:\n\
         \x20 - id: city\n    name: \"市级平台\"\n    server_id: \"{UPPER_ID}\"\n    domain: \"{UPPER_DOMAIN}\"\n    address: \"{}\"\n    password: \"{PASSWORD}\"\n    local_id: \"{LOWER_ID}\"\n    keepalive_s: 2\n    shared: [\"{}\", \"{}\"]\n\
         \x20 - id: province\n    name: \"Province\"\n    server_id: \"{PROVINCE_ID}\"\n    domain: \"{UPPER_DOMAIN}\"\n    address: \"{}\"\n    password: \"not-the-password\"\n    local_id: \"{PROVINCE_LOCAL_ID}\"\n    shared: [\"{}\"]\n\
         \x20 - id: silent\n    server_id: \"{SILENT_ID}\"\n    domain: \"4500000000\"\n    address: \"{}\"\n    password: \"{PASSWORD}\"\n    local_id: \"{LOWER_ID}\"\n    shared: [\"{}\"]\n\
         \x20 - id: closed\n    server_id: \"{SILENT_ID}\"\n    domain: \"4600000000\"\n    address: \"127.0.0.1:{}\"\n    transport: tcp\n    password: \"{PASSWORD}\"\n    local_id: \"{LOWER_ID}\"\n    shared: [\"{}\"]\n",
        top.sip,
        CHANNELS[0],
        CHANNELS[2],
        top.sip,
        CHANNELS[0],
        nobody.local_addr().unwrap(),
        CHANNELS[3],
        free_tcp_port(),
        CHANNELS[3],
    );
    let bottom = Engine::start_full(1, &keys, &cascade, "", None);
    let (_events, stop, device) = registered_device(&bottom);

    wait_for("city registered", Duration::from_secs(15), || (upstream(&bottom, "city")["state"] == "registered").then_some(()));
    let refused = wait_for("province refused", Duration::from_secs(15), || {
        let u = upstream(&bottom, "province");
        (u["state"] == "retrying" && u["last_error"].is_string()).then_some(u)
    });
    assert_eq!(upstream(&bottom, "silent")["state"], "registering");
    // The upper plays channel 1 through the lower: a session sent up, listed under city.
    assert_eq!(top.request("POST", &format!("/api/devices/{LOWER_ID}/sync"), "").0, 202);
    wait_for("the upper's catalog of the lower", Duration::from_secs(15), || {
        let (_, v) = top.request("GET", &format!("/api/devices/{LOWER_ID}/channels"), "");
        (v["channels"].as_array().map(Vec::len) == Some(2)).then_some(())
    });
    let (status, played) = top.request("POST", &format!("/api/devices/{LOWER_ID}/channels/{}/play", CHANNELS[0]), "{}");
    assert_eq!(status, 200, "{played}");
    let session = wait_for("the session sent up", Duration::from_secs(10), || {
        let u = upstream(&bottom, "city");
        (u["sessions"] == 1).then(|| u["session_list"][0].clone())
    });
    assert_eq!((session["channel_id"].as_str(), session["kind"].as_str()), (Some(CHANNELS[0]), Some("live")), "{session}");

    let out = Command::new("node")
        .arg(format!("{BROWSER_DIR}/upstreams_check.mjs"))
        .arg(format!("http://{}/", bottom.http))
        .args([TOKEN, OPERATOR_KEY, VIEWER_KEY])
        .env("CHANNELS", CHANNELS.join(","))
        .env("SESSION_CHANNEL", CHANNELS[0])
        .env("SHOTS_DIR", SHOTS_DIR)
        .current_dir(BROWSER_DIR)
        .output()
        .expect("node (npm ci in tests/browser)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result: Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap_or_default();
    assert_eq!(result["ok"], true, "{stdout}\n{}\nprovince: {refused}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(result["steps"], json!(["desktop-zh", "desktop-en", "phone-zh", "phone-en"]), "{result}");
    // The explanations read as the operator's language has them.
    assert!(result["zh"]["province_error"].as_str().unwrap().contains("密码"), "{result}");
    assert!(result["en"]["province_error"].as_str().unwrap().contains("password"), "{result}");
    assert!(result["en"]["closed_error"].as_str().unwrap().contains("TCP"), "{result}");
    assert!(result["phone_en"]["silent_error"].as_str().unwrap().contains("does not answer"), "{result}");
    assert!(result["phone_zh"]["refused"].as_str().unwrap().contains("管理员"), "{result}");
    assert!(result["viewer"]["en"].as_str().unwrap().contains("operator or admin"), "{result}");

    // What the picker saved (admin), and what it did not (operator), as the API has it.
    let city = upstream(&bottom, "city");
    assert_eq!(city["shared"], json!([CHANNELS[0], CHANNELS[1], CHANNELS[3]]), "{city}");
    assert_eq!(city["shared_channels"], 3, "{city}");
    // Channel 1 stayed shared: its session upward goes on.
    assert_eq!(city["session_list"][0]["channel_id"], CHANNELS[0], "{city}");
    let province = upstream(&bottom, "province");
    assert_eq!(province["shared"], "all", "{province}");
    assert_eq!(province["source"], "api", "{province}");
    let silent = upstream(&bottom, "silent");
    assert_eq!(silent["shared"], json!([CHANNELS[3]]), "{silent}");
    assert_eq!((silent["state"].as_str(), silent["last_error"].as_str()), (Some("retrying"), Some("REGISTER not answered")), "{silent}");
    for shot in ["desktop-zh", "desktop-zh-picker", "desktop-en", "phone-zh", "phone-zh-picker", "phone-en", "viewer-en", "viewer-zh"] {
        assert!(std::path::Path::new(SHOTS_DIR).join(format!("console-upstreams-{shot}.png")).exists(), "{shot}");
    }

    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    device.join().unwrap();
}
