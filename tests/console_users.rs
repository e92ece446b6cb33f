//! Console users, the dashboard and sub-streams (issue 28) in headless Chromium
//! (tests/browser/console_users_check.mjs): the admin key makes an operator and an admin user;
//! the operator signs in with a name and password (never a key: no Authorization header, the
//! session cookie, the CSRF token on every change), a wrong password is said, the dashboard is
//! the first view (this build's version, the streams, a warning the engine logged: RTP from a
//! stranger), refreshed while shown only; the operator has no Users view, plays a channel of a
//! device set up for a sub-stream in a 9-tile wall (a sub-stream session, checked through the
//! API), full screen (a main-stream session) and back (the sub-stream's), moves the camera,
//! changes their own password, signs out (a reload stays signed out) and in with the new one;
//! the admin user adds, refuses, changes and deletes users, sets the operator's password (the
//! operator's page says the session ended) and the device's sub-stream in its form; at 390 px
//! the dashboard and users fit, in English and Chinese; too many failed sign-ins say how long to
//! wait. Screenshots in target/console-users-*.png. Needs chromium and `npm ci` in tests/browser.

mod common;

use common::gb_device::*;
use common::gb_sim::DEVICE;
use common::*;
use serde_json::{Value, json};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

const BROWSER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
const SHOTS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target");
const OPERATOR: &str = "zhang";
const OPERATOR_PASSWORD: &str = "zhang-pass-1";
/// What the operator changes their own password to.
const OPERATOR_NEW_PASSWORD: &str = "zhang-pass-2";
/// What the admin sets the operator's password to (ending the operator's session).
const OPERATOR_ADMIN_SET_PASSWORD: &str = "zhang-pass-3";
const ADMIN: &str = "boss";
const ADMIN_PASSWORD: &str = "boss-pass-12";

fn require_browser() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(Path::new(&chromium).exists(), "{chromium} is missing: this test drives headless Chromium (apt-get install chromium; scripts/test.sh does)");
    let modules = Path::new(BROWSER_DIR).join("node_modules/playwright-core");
    assert!(modules.is_dir(), "{} is missing: run `npm ci` in tests/browser (scripts/test.sh does)", modules.display());
}

/// The live session of `stream_id`, as `GET /api/sessions` lists it.
fn session_of(engine: &Engine, stream_id: &str) -> Value {
    let (status, v) = engine.request("GET", "/api/sessions", "");
    assert_eq!(status, 200, "{v}");
    v["sessions"].as_array().and_then(|all| all.iter().find(|s| s["stream_id"] == stream_id).cloned()).unwrap_or(Value::Null)
}

#[test]
fn people_sign_in_see_the_overview_manage_users_and_small_tiles_play_sub_streams() {
    require_browser();
    let engine = Engine::start(1, "");
    let (events, stop, device) = registered_device(&engine);
    let channel = CHANNELS[0];

    // The device's sub-stream is asked for the Dahua way; the users, by the admin key.
    let (status, v) = engine.request("PUT", &format!("/api/devices/{DEVICE}"), &json!({ "sub_stream": "streamprofile" }).to_string());
    assert_eq!(status, 200, "{v}");
    for (name, password, role) in [(OPERATOR, OPERATOR_PASSWORD, "operator"), (ADMIN, ADMIN_PASSWORD, "admin")] {
        let (status, v) = engine.request("POST", "/api/users", &json!({ "name": name, "password": password, "role": role }).to_string());
        assert_eq!(status, 201, "{v}");
    }
    // A stream with media, then RTP from a stranger: dropped, and a warning in the log.
    let stream = engine.open_stream(json!({}));
    push_ps_udp(&engine, &stream, &h264_frames()[..30], Duration::from_millis(5));
    let stranger = udp_sender();
    let ssrc = stream["ssrc"].as_u64().unwrap() as u32;
    let port = stream["port"].as_u64().unwrap() as u16;
    for p in gmv::sim::ps_rtp_packets(&h264_frames()[..2], ssrc).into_iter().flatten() {
        stranger.send_to(&p, ("127.0.0.1", port)).unwrap();
    }
    wait_for("the stranger's warning on the dashboard", Duration::from_secs(10), || {
        let (_, d) = engine.request("GET", "/api/dashboard", "");
        d["recent_errors"].as_array()?.iter().any(|e| e["message"].as_str().is_some_and(|m| m.contains("RTP packet dropped"))).then_some(())
    });

    let url = format!("http://{}/", engine.http);
    let args = [url.as_str(), env!("CARGO_PKG_VERSION"), DEVICE, channel, OPERATOR, OPERATOR_PASSWORD, OPERATOR_NEW_PASSWORD, OPERATOR_ADMIN_SET_PASSWORD, ADMIN, ADMIN_PASSWORD];
    let mut run = BrowserRun::start("console_users_check.mjs", &args, &[("SHOTS_DIR", SHOTS_DIR)]);
    // The script asks when a tile plays; the sessions are read here, through the API.
    let (mut last, mut seen) = (String::new(), Vec::new());
    for line in run.lines() {
        let asked = ["SUB_PLAYING ", "MAIN_PLAYING ", "SUB_AGAIN "].iter().find_map(|p| line.strip_prefix(p).map(|id| (p.trim(), id.trim().to_string())));
        let Some((what, stream_id)) = asked else {
            last = line;
            continue;
        };
        seen.push((what.to_string(), stream_id.clone(), session_of(&engine, &stream_id)));
        let _ = writeln!(run.stdin, "checked");
    }
    let v = run.result(&last);

    // Signing in: name and password first (a new browser shows the key part too); a wrong
    // password said; the dashboard first.
    assert_eq!((v["signin"]["name_shown"].as_bool(), v["signin"]["key_shown"].as_bool()), (Some(true), Some(true)), "{v}");
    assert_eq!((v["wrong_status"].as_u64(), v["signin_status"].as_u64()), (Some(401), Some(200)), "{v}");
    assert_eq!(v["wrong_password"].as_str(), Some("Wrong user name or password."), "{v}");
    let d = &v["dashboard"];
    assert_eq!(d["first_view"], json!(["view-dashboard"]), "{d}");
    assert_eq!(d["version"].as_str(), Some(env!("CARGO_PKG_VERSION")), "{d}");
    assert!(d["streams"].as_str().and_then(|s| s.parse::<u64>().ok()) >= Some(1), "{d}");
    for card in ["version", "uptime", "cpu", "memory", "files", "disk", "streams", "viewers", "webrtc", "ingest", "lost", "no-media", "devices"] {
        assert!(d["cards"].as_array().unwrap().iter().any(|c| c == &format!("dash-{card}")), "{card}: {d}");
    }
    assert!(d["cpu"].as_str().unwrap().ends_with(" %") && d["memory"].as_str().unwrap().contains("MB"), "{d}");
    assert!(d["disk"].as_str().unwrap().contains("free") && d["devices"].as_str().unwrap().contains("1 online"), "{d}");
    let warning = d["warning"].as_str().unwrap_or_default();
    assert!(warning.contains("warning") && warning.contains("RTP packet dropped"), "{d}");
    assert!(v["dash_refreshes"].as_u64() >= Some(2), "refreshed every few seconds while shown: {v}");
    assert_eq!(v["dash_after_leaving"].as_u64(), Some(0), "no refresh once another view is shown: {v}");
    // Who is signed in; an operator has no Users view; nothing of the session in storage.
    let who = v["whoami"].as_str().unwrap();
    assert!(who.contains(OPERATOR) && who.contains("operator"), "{who}");
    assert_eq!((v["users_nav_shown"].as_bool(), v["password_button_shown"].as_bool()), (Some(false), Some(true)), "{v}");
    assert_eq!(v["storage"], json!({ "key": null, "cookie": "" }), "no key kept, the cookie HTTP-only: {v}");

    // Every API request of the people: no key; every change with the CSRF token (the WHEP and
    // WHIP sessions' DELETEs carry their session id, their credential, instead).
    let requests = v["requests"].as_array().unwrap();
    for r in requests {
        assert!(r["authorization"].is_null() && r["gmv_token"].is_null(), "a person's request carried a key: {r}");
        let change = !matches!(r["method"].as_str(), Some("GET" | "HEAD"));
        let path = r["path"].as_str().unwrap();
        let sign_in = r["method"] == "POST" && path == "/api/session";
        let media_session = (path.starts_with("/whep/") || path.starts_with("/whip/")) && path.contains("/session/");
        if change && !sign_in && !media_session {
            assert!(r["csrf"].as_str().is_some_and(|t| !t.is_empty()), "a change without its CSRF token: {r}");
        }
    }
    let made = |who: &str, method: &str, path: &str| requests.iter().any(|r| r["who"] == who && r["method"] == method && r["path"] == path);
    assert!(made("operator", "POST", &format!("/api/devices/{DEVICE}/channels/{channel}/play")), "the operator played");
    assert!(made("operator", "POST", &format!("/api/devices/{DEVICE}/channels/{channel}/ptz")), "the operator moved the camera");
    assert!(made("operator", "PUT", "/api/session/password") && made("operator", "DELETE", "/api/session"), "{v}");
    assert!(made("admin", "POST", "/api/users") && made("admin", "PUT", "/api/users/li") && made("admin", "DELETE", "/api/users/li"), "{v}");
    assert_eq!(v["ptz_error"].as_str(), Some(""), "{v}");
    let happened: Vec<DeviceEvent> = events.try_iter().collect();
    let moved: Vec<&String> = happened.iter().filter_map(|e| if let DeviceEvent::Ptz { channel: c, cmd } = e { (c == channel).then_some(cmd) } else { None }).collect();
    assert!(moved.iter().any(|c| c.len() == 16 && &c[6..8] == "01"), "a move right reached the device: {moved:?}");
    // The console's own fetches with the cookie: the snapshot, and talking (WHIP) to the camera.
    assert_eq!(v["snapshot"]["status"].as_u64(), Some(200), "{v}");
    assert!(v["snapshot"]["file"].as_str().unwrap().ends_with(".jpg"), "{v}");
    assert_eq!(v["whip_status"].as_u64(), Some(201), "{v}");
    assert!(v["talk"].as_str().unwrap().starts_with("Talking"), "{v}");
    assert!(made("operator", "POST", &format!("/whip/broadcast/{DEVICE}/{channel}")), "{v}");
    assert!(happened.iter().any(|e| matches!(e, DeviceEvent::BroadcastRtp { channel: c, .. } if c == channel)), "the microphone reached the camera");

    // The 9-tile wall played the sub-stream, full screen the main stream, then the sub-stream again.
    let asked: Vec<&str> = seen.iter().map(|(w, _, _)| w.as_str()).collect();
    assert_eq!(asked, ["SUB_PLAYING", "MAIN_PLAYING", "SUB_AGAIN"], "{seen:?}");
    let (sub, main, again) = (&seen[0], &seen[1], &seen[2]);
    for (what, id, session) in [sub, main, again] {
        assert_eq!((session["channel_id"].as_str(), session["kind"].as_str()), (Some(channel), Some("live")), "{what} {id}: {session}");
    }
    assert_eq!(sub.2["sub_stream"], true, "the small tile's session: {:?}", sub);
    assert_eq!(main.2["sub_stream"], false, "full screen's session: {:?}", main);
    assert_ne!(sub.1, main.1);
    assert_eq!((again.1.as_str(), &again.2["sub_stream"]), (sub.1.as_str(), &json!(true)), "back to the sub-stream's session: {again:?}");
    assert_eq!((v["sub"]["badge"].as_str(), v["main"]["badge"].as_str()), (Some("sub"), Some("")), "{v}");
    assert_eq!((v["main"]["full"].as_bool(), v["sub_again"]["full"].as_bool()), (Some(true), Some(false)), "{v}");

    // One's own password: the wrong present one and a mismatch said, then changed, still signed in.
    assert_eq!(v["pw_wrong_old"].as_str(), Some("The present password is wrong."), "{v}");
    assert_eq!(v["pw_mismatch"].as_str(), Some("The two new passwords differ."), "{v}");
    assert!(v["pw_changed"].as_str().unwrap().starts_with("Password changed"), "{v}");
    assert_eq!((v["after_change_status"].as_u64(), v["after_change_app"].as_bool()), (Some(200), Some(true)), "{v}");
    // Signed out: the sign-in screen, after a reload too (the key part folded for a person now);
    // the old password refused, the new one taken.
    assert_eq!(v["signed_out_note"].as_str(), Some("You signed out."), "{v}");
    assert_eq!(v["after_reload"], json!({ "signin": true, "app": false, "key_shown": false }), "{v}");
    assert_eq!((v["old_password_status"].as_u64(), v["new_password_status"].as_u64()), (Some(401), Some(200)), "{v}");

    // The admin user: users listed, added, refused in words, changed, deleted.
    let admin_who = v["admin_whoami"].as_str().unwrap();
    assert!(admin_who.contains(ADMIN) && admin_who.contains("admin"), "{admin_who}");
    let listed: Vec<&str> = v["users_listed"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(listed.contains(&OPERATOR) && listed.contains(&ADMIN), "{listed:?}");
    assert!(v["counters"].as_str().unwrap().contains("sign-ins"), "{v}");
    assert_eq!(v["added"].as_str(), Some("li added (viewer)."), "{v}");
    assert!(v["added_row"].as_str().unwrap().contains("li"), "{v}");
    assert!(v["bad_name"].as_str().unwrap().starts_with("A user name is 1 to 32"), "{v}");
    assert!(v["bad_password"].as_str().unwrap().starts_with("A password is 8 to 128 bytes"), "{v}");
    assert_eq!(v["exists"].as_str(), Some(format!("A user named {OPERATOR} exists already.").as_str()), "gmv's 409 in words: {v}");
    assert_eq!((v["role_set"].as_str(), v["role_after"].as_str()), (Some("li is now operator."), Some("operator")), "{v}");
    assert!(v["pw_set"].as_str().unwrap().starts_with(&format!("{OPERATOR}'s password is set")), "{v}");
    let ended = &v["session_ended"];
    assert!(ended["note"].as_str().unwrap().starts_with("Your session has ended"), "{ended}");
    assert_eq!((ended["name"].as_str(), ended["app"].as_bool()), (Some(OPERATOR), Some(false)), "{ended}");
    assert_eq!(v["delete_asks"].as_str(), Some("delete li?"), "{v}");
    assert_eq!(v["deleted"].as_str(), Some("li deleted."), "{v}");
    let (_, users) = engine.request("GET", "/api/users", "");
    let now: Vec<(&str, &str)> = users["users"].as_array().unwrap().iter().map(|u| (u["name"].as_str().unwrap(), u["role"].as_str().unwrap())).collect();
    assert_eq!(now, [(OPERATOR, "operator"), (ADMIN, "admin")], "{users}");

    // The device's sub-stream in its form: as set, then changed; shown in its details.
    assert!(v["details"].as_str().unwrap().contains("a=streamprofile:1"), "{v}");
    assert_eq!(v["form_sub"]["value"].as_str(), Some("streamprofile"), "{v}");
    let options: Vec<&str> = v["form_sub"]["options"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(options.len(), 5, "{options:?}");
    assert!(v["prov_sub"].as_str().unwrap().contains("a=streamnumber:1"), "{v}");
    let (_, dev) = engine.request("GET", &format!("/api/devices/{DEVICE}"), "");
    assert_eq!(dev["settings"]["sub_stream"], "streamnumber", "{dev}");
    let zh_options: Vec<&str> = v["zh"]["sub_options"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    for label in ["子码流 (通用) a=stream:1", "子码流 (国标2022) a=streamnumber:1", "子码流 (大华) a=streamprofile:1", "子码流 (水星/TP-LINK) a=streamMode:sub"] {
        assert!(zh_options.contains(&label), "{label}: {zh_options:?}");
    }

    // A phone's width: nothing wider than the screen, English and Chinese.
    for (view, m) in v["phone"].as_object().unwrap() {
        assert!(m["scroll"].as_u64() <= m["inner"].as_u64() && m["inner"] == 390, "{view} at 390 px: {m}");
    }
    assert_eq!((v["zh"]["nav"].as_str(), v["zh"]["users_nav"].as_str()), (Some("概览"), Some("用户管理")), "{v}");
    assert!(v["zh"]["whoami"].as_str().unwrap().contains("管理员"), "{v}");
    assert_eq!(v["catalogue_missing"], json!({ "zh": [], "en": [] }), "{v}");

    // Too many failures from this address: refused, saying how long to wait.
    let tries: Vec<u64> = v["throttle_tries"].as_array().unwrap().iter().filter_map(Value::as_u64).collect();
    assert_eq!(tries.last(), Some(&429), "{tries:?}");
    let throttled = v["throttled"].as_str().unwrap();
    assert!(throttled.starts_with("Too many failed sign-ins from this address: try again in") && throttled.contains("min"), "{throttled}");
    let (_, users) = engine.request("GET", "/api/users", "");
    assert!(users["counters"]["sign_ins_throttled"].as_u64() >= Some(1) && users["counters"]["sign_in_failures"].as_u64() >= Some(5), "{users}");

    for shot in ["signin", "signin-error", "dashboard", "wall-sub", "fullscreen", "password", "signed-out", "session-ended", "users", "device-form", "phone-dashboard", "phone-users", "phone-dashboard-zh", "phone-users-zh", "phone-throttled"] {
        assert!(Path::new(SHOTS_DIR).join(format!("console-users-{shot}.png")).exists(), "{shot}");
    }
    stop.store(true, Ordering::SeqCst);
    device.join().unwrap();
}
