//! The console's Recordings view and record plans (issue 29) in headless Chromium
//! (tests/browser/recordings_check.mjs) against the simulated device: a channel recorded for
//! about 10 s in files of 4 s with an alarm clip inside, and a bare stream recorded. In English
//! at 1440x900 (admin): today's recordings of the channel listed and on the timeline (the alarm
//! clip in its own lane), zoomed to an hour, played from a click (the <video> advances), the
//! alarm clip played, the hour exported as one MP4 (ffprobe decodes the download), a file
//! deleted (gone from the API too), an empty day explained, the stream chosen; a plan made
//! through the form after a bad one's message from gmv was shown, changed, and assigned to a
//! channel, which records (its state on screen and in the API); retention shown. In Chinese at
//! 390x844 (viewer): the list, a play, a refused delete and a refused plan explained, the
//! channel's state, nothing wider than the screen, no English words of the console's own.
//! Screenshots in `{work_dir}/console-recordings-shots`. Needs chromium and `npm ci` in
//! tests/browser, ffmpeg and ffprobe.

mod common;

use common::gb_device::*;
use common::gb_sim::DEVICE;
use common::*;
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use std::time::Duration;

const VIEWER_KEY: &str = "console-recordings-viewer-key-0123456789";

fn unix_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// Waits out the last minutes before midnight in UTC and in China (+08:00), the browsers' time
/// zones: the recordings made now are on the day the view opens on.
fn away_from_midnight() {
    let near = |offset: u64| (unix_s() + offset) % 86_400 > 86_400 - 300;
    while near(0) || near(8 * 3600) {
        std::thread::sleep(Duration::from_secs(5));
    }
}

fn records(engine: &Engine, query: &str) -> Vec<Value> {
    let (status, v) = engine.request("GET", &format!("/api/records?{query}"), "");
    assert_eq!(status, 200, "{v}");
    v["records"].as_array().cloned().unwrap_or_default()
}

fn frames_of(engine: &Engine, stream_id: &str) -> u64 {
    engine.stream(stream_id)["frames"].as_u64().unwrap_or(0)
}

fn text<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str().unwrap_or_else(|| panic!("{what}: not a string: {v}"))
}

fn assert_fits(v: &Value, what: &str) {
    let (scroll, inner) = (v["scroll"].as_u64().unwrap_or(u64::MAX), v["inner"].as_u64().unwrap_or(0));
    assert!(scroll <= inner && v["wide"] == json!([]), "{what}: wider than the screen: {v}");
}

#[test]
fn the_console_lists_plays_exports_and_deletes_recordings_and_keeps_record_plans() {
    away_from_midnight();
    let http_yaml = format!(
        "  api_keys: [{{name: test-admin, role: admin, sha256: \"{}\"}}, {{name: look, role: viewer, sha256: \"{}\"}}]\n",
        gmv::auth::key_hash(TOKEN),
        gmv::auth::key_hash(VIEWER_KEY)
    );
    let engine = Engine::start_full(1, &http_yaml, "record:\n  rotate_s: 4\n  alarm_clip:\n    pre_s: 1\n    post_s: 2\n", "", None);
    let (_events, stop, device) = registered_device(&engine);
    let (recorded, planned) = (CHANNELS[0], CHANNELS[1]);

    // The channel played and recorded about 10 s, an alarm raised 4 s in (its clip: 1 s before
    // to 2 s after).
    let session = play(&engine, recorded);
    let stream_id = session["stream_id"].as_str().unwrap().to_string();
    wait_for("media", Duration::from_secs(15), || (frames_of(&engine, &stream_id) >= 30).then_some(()));
    assert_eq!(engine.request("POST", &format!("/api/streams/{stream_id}/record"), "").0, 200);
    std::thread::sleep(Duration::from_secs(4));
    let (status, v) = engine.request("POST", &format!("/api/devices/{DEVICE}/channels/{recorded}/alarm"), r#"{"description": "door forced"}"#);
    assert_eq!(status, 200, "{v}");
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(engine.request("DELETE", &format!("/api/streams/{stream_id}/record"), "").0, 200);
    // Every file of the stream closed (a file being written names no channel yet).
    wait_for("the channel's recordings closed", Duration::from_secs(20), || {
        let r = records(&engine, &format!("stream={stream_id}"));
        let continuous = r.iter().filter(|r| r["kind"].is_null()).count();
        let clips = r.iter().filter(|r| r["kind"] == "alarm").count();
        (continuous >= 2 && clips >= 1 && r.iter().all(|r| r["in_progress"] == false)).then_some(())
    });
    let channel_query = format!("channel={recorded}");
    let listed = records(&engine, &channel_query);
    // A bare stream recorded (no channel).
    let bare = engine.open_stream(json!({}));
    let bare_id = bare["stream_id"].as_str().unwrap().to_string();
    assert_eq!(engine.request("POST", &format!("/api/streams/{bare_id}/record"), "").0, 200);
    push_ps_udp(&engine, &bare, &h264_frames(), Duration::from_millis(3));
    assert_eq!(engine.request("DELETE", &format!("/api/streams/{bare_id}/record"), "").0, 200);
    wait_for("the stream's recording closed", Duration::from_secs(10), || {
        let r = records(&engine, &format!("stream={bare_id}"));
        (!r.is_empty() && r.iter().all(|r| r["in_progress"] == false)).then_some(())
    });

    let shots = work_dir().join("console-recordings-shots");
    std::fs::create_dir_all(&shots).unwrap();
    let url = format!("http://{}/", engine.http);
    let mut run = BrowserRun::start("recordings_check.mjs", &[&url, TOKEN, VIEWER_KEY, DEVICE, recorded, planned, &bare_id], &[("SHOTS_DIR", shots.to_str().unwrap())]);
    let last = run.lines().last().unwrap_or_default();
    let v = run.result(&last);
    assert!(v["page_errors"].is_null(), "errors in the page: {}", v["page_errors"]);

    // English: today's recordings of the channel recorded, chosen by itself.
    let en = &v["en"];
    assert_eq!(text(&en["nav"], "nav"), "Recordings");
    assert_eq!(en["date"], en["today"], "{en}");
    assert_eq!(en["from_to"], json!(["00:00", "23:59"]), "{en}");
    assert_eq!(text(&en["source"], "source"), format!("c:{recorded}"), "{en}");
    let note = text(&en["note"], "note");
    assert!(note.contains(&format!("{} recordings of", listed.len())) && note.contains(recorded) && note.contains("alarm clips"), "{note}");
    assert!(en["segments"].as_u64() >= Some(1) && en["alarm_segments"].as_u64() >= Some(1), "{en}");
    assert_eq!(en["rows"].as_array().map(Vec::len), Some(listed.len()), "every file listed: {en}");
    let rows: Vec<&str> = en["rows"].as_array().unwrap().iter().map(|r| r["text"].as_str().unwrap()).collect();
    assert!(rows.iter().any(|r| r.contains("alarm clip (#")) && rows.iter().any(|r| r.contains("continuous recording")), "{rows:?}");
    assert!(text(&en["export_label_day"], "export label").contains("00:00 – 24:00"), "{en}");
    // Zoomed to an hour; played from a click; the cursor and the row follow.
    assert_eq!(en["zoom_steps"].as_u64(), Some(4), "24 h → 12 → 6 → 3 → 1: {en}");
    assert!(text(&en["span"], "span").contains("(1:00:00)") && en["zoom_out_enabled"] == true, "{en}");
    let play = &en["play"];
    assert!(play["advanced"].as_f64() >= Some(1.5) && play["frames"].as_u64() > Some(20), "the video advances: {play}");
    assert!(text(&play["src"], "src").starts_with("blob:"), "played through mpegts.js (FLV): {play}");
    assert!(text(&play["status"], "status").contains("Playing the continuous recording from") && play["cursor"] == true, "{play}");
    assert!(play["playing_row"].as_str().is_some(), "the file playing is marked: {play}");
    let clip = &en["clip"];
    assert!(text(&clip["src"], "clip src").contains("/records/") && clip["advanced"].as_f64() >= Some(0.8), "the clip's MP4 plays: {clip}");
    assert!(text(&clip["status"], "clip status").contains("alarm clip"), "{clip}");
    // Exported: an MP4 of the hour, decodable.
    let export = &en["export"];
    assert!(text(&en["export_label"], "label").starts_with("Export ") && text(&en["export_label"], "label").ends_with("as one MP4"), "{en}");
    let size = export["size"].as_u64().unwrap();
    assert!(size > 10_000 && export["link_bytes"].as_str() == Some(size.to_string().as_str()), "{export}");
    let name = text(&export["name"], "name");
    assert!(name.starts_with(&stream_id) && name.ends_with(".mp4"), "{export}");
    assert!(text(&export["status"], "status").contains("Exported"), "{export}");
    let probe = ffprobe(&shots.join("export.mp4"));
    assert!(probe.codec == "h264" && probe.frames >= 50, "the export decodes: {probe:?}");
    assert!(text(&en["download_href"], "href").starts_with("/records/") && text(&en["download_href"], "href").contains("?token="), "{en}");
    // Deleted after asking: gone from gmv.
    let deleted = text(&en["deleted"], "deleted");
    assert_eq!(text(&en["delete_asks"], "asks"), "delete it?");
    assert!(text(&en["delete_status"], "status").contains("was deleted"), "{en}");
    let now = records(&engine, &channel_query);
    assert!(!now.iter().any(|r| r["file"] == format!("{deleted}.mp4")) && now.len() == listed.len() - 1, "{deleted} still listed: {now:?}");
    // An empty day explained; the stream.
    let empty = text(&en["empty_day"], "empty");
    assert!(empty.starts_with("No recording of") && empty.contains("record.all"), "{empty}");
    assert_eq!(text(&en["empty_export"], "empty export"), "Nothing to export in 00:00 – 24:00", "{en}");
    assert_eq!(en["empty_export_disabled"], true, "{en}");
    assert_eq!(en["stream_option"], true, "{en}");
    assert!(text(&en["stream_note"], "stream note").contains(&format!(" of stream {bare_id} on ")), "{en}");
    assert!(en["stream_segments"].as_u64() >= Some(1), "{en}");
    assert_eq!(en["words"]["cjk"], json!([]), "Chinese in the English view: {en}");

    // Plans: the bad one refused in gmv's words; made, changed, assigned; the channel records.
    assert_eq!(text(&en["form_title"], "title"), "Add a plan");
    assert_eq!(text(&en["zone_default"], "zone"), "+08:00");
    let bad = text(&en["bad_plan"], "bad");
    assert!(bad.starts_with("Not saved:") && bad.contains("range 1: ends (08:00) at or before it starts (18:00)"), "{bad}");
    assert_eq!((en["ranges_added"].as_u64(), en["ranges_after_remove"].as_u64()), (Some(2), Some(1)), "{en}");
    assert!(text(&en["added"], "added").contains("Plan workdays added"), "{en}");
    let row = text(&en["plan_row"], "plan row");
    assert!(row.contains("every day 00:00–24:00") && row.contains("UTC") && row.contains("30 days"), "{row}");
    assert_eq!(text(&en["plan_active"], "active"), "in force");
    assert!(text(&en["edit_title"], "edit").contains("Change plan workdays") && en["edit_name_readonly"] == true, "{en}");
    assert!(text(&en["plan_row_changed"], "changed").contains("14 days"), "{en}");
    assert!(text(&en["assigned"], "assigned").contains(&format!("{planned} follows plan workdays")), "{en}");
    assert!(text(&en["channel_row"], "channel row").contains("recording") && text(&en["channel_row"], "channel row").contains("workdays"), "{en}");
    let retention = text(&en["retention"], "retention");
    assert!(retention.contains("every 60 s") && retention.contains("no limit"), "{retention}");
    assert!(text(&en["retention_plans"], "retention").contains("workdays: 14 days"), "{en}");
    assert_eq!(en["plan_words"]["cjk"], json!([]), "Chinese in the English plans: {en}");
    let (_, plans) = engine.request("GET", "/api/record-plans", "");
    let p = &plans["plans"][0];
    assert_eq!((p["name"].as_str(), p["max_age_days"].as_u64(), p["time_zone"].as_str()), (Some("workdays"), Some(14), Some("UTC")), "{plans}");
    let c = plans["channels"].as_array().unwrap().iter().find(|c| c["channel_id"] == planned).unwrap();
    assert_eq!((c["plan"].as_str(), c["state"].as_str()), (Some("workdays"), Some("recording")), "{plans}");
    assert_eq!(plans["plans"].as_array().map(Vec::len), Some(1), "neither the bad plan nor the viewer's was made: {plans}");

    // Chinese, on a phone, a viewer.
    let zh = &v["zh"];
    assert_eq!(text(&zh["nav"], "nav"), "录像");
    assert_eq!(text(&zh["tab"], "tab"), "录像计划");
    assert_eq!(text(&zh["source"], "source"), format!("c:{recorded}"), "{zh}");
    assert!(text(&zh["note"], "note").contains("段录像"), "{zh}");
    assert!(zh["segments"].as_u64() >= Some(1) && zh["rows"].as_u64() == Some(listed.len() as u64 - 1), "{zh}");
    assert!(zh["play"]["advanced"].as_f64() >= Some(1.0), "the video advances: {zh}");
    assert!(text(&zh["play"]["status"], "status").contains("正在播放连续录像"), "{zh}");
    assert_eq!(text(&zh["delete_asks"], "asks"), "确定删除？");
    let refused = text(&zh["delete_refused"], "refused");
    assert!(refused.contains("未删除") && refused.contains("操作员"), "{refused}");
    assert_eq!(zh["still_listed"], true, "{zh}");
    let row = text(&zh["channel_row"], "row");
    assert!(row.contains("录像中") && row.contains("生效中"), "{row}");
    assert!(text(&zh["plan_row"], "plan").contains("每天 00:00–24:00") && text(&zh["plan_row"], "plan").contains("14 天"), "{zh}");
    assert_eq!(text(&zh["form_title"], "form"), "添加录像计划");
    assert!(text(&zh["retention"], "retention").contains("每 60 秒"), "{zh}");
    let refused = text(&zh["plan_refused"], "refused");
    assert!(refused.contains("未保存") && refused.contains("操作员"), "{refused}");
    for (pane, what) in [("files", "the recordings"), ("plans", "the plans")] {
        let words = &zh[format!("words_{pane}")];
        assert_eq!(words["latin"], json!([]), "English left in {what} in Chinese: {words}");
        assert_eq!(words["chinese"], true, "{what}: {words}");
    }
    // Switched to English on the page.
    let switched = &zh["switched"];
    assert_eq!(text(&switched["nav"], "nav"), "Recordings");
    let row = text(&switched["plan_row"], "row");
    assert!(row.contains("every day 00:00–24:00") && row.contains("in force"), "{switched}");
    assert!(text(&switched["refused"], "refused").starts_with("Not saved: this takes an operator or admin key"), "{switched}");
    assert_eq!(text(&switched["form_title"], "title"), "Add a plan");
    assert!(text(&switched["retention"], "retention").contains("every 60 s"), "{switched}");
    assert!(text(&switched["note"], "note").contains("recordings of"), "{switched}");
    let rows: Vec<&str> = switched["rows"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(!rows.is_empty() && rows.iter().all(|r| r.contains("recording") || r.contains("alarm clip")), "{switched}");
    for words in ["plan_words", "files_words"] {
        assert_eq!(switched[words]["cjk"], json!([]), "Chinese left after the switch: {switched}");
    }
    assert_fits(&zh["fits_files"], "390 px, recordings");
    assert_fits(&zh["fits_playing"], "390 px, playing");
    assert_fits(&zh["fits_plans"], "390 px, plans");
    for shot in ["desktop-en-files", "desktop-en-plans", "phone-zh-files", "phone-zh-plans"] {
        assert!(shots.join(format!("recordings-{shot}.png")).exists(), "{shot}");
    }
    stop.store(true, Ordering::SeqCst);
    device.join().unwrap();
}
