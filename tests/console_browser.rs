//! The web console in headless Chromium against a simulated device with four channels: sign
//! in, the device tree, a 4-tile live wall playing HTTP-FLV through mpegts.js (each video
//! advances and decodes), PTZ press-and-hold reaching the device as PTZCmd bytes, an alarm in the
//! event log. Screenshots land in target/console-*.png. Needs chromium and `npm ci` in
//! tests/browser (.ci/run does both).

mod common;

use common::gb_sim::*;
use common::*;
use gmv::proto::frame::Codec;
use std::net::UdpSocket;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

const BROWSER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
const SHOTS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target");
/// The device's clock zone (the engine is told the same).
const ZONE_S: i32 = 8 * 3600;
const OFFLINE_DEVICES: usize = 3000;
const CHANNELS: [&str; 4] = ["34020000001310000001", "34020000001310000002", "34020000001310000003", "34020000001310000004"];

/// Sends the clip, looped with running timestamps, at real time until `stop`.
fn stream_clip(port: u16, ssrc: u32, stop: Arc<AtomicBool>) {
    let clip = h264_frames();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut sender = gmv::sim::PsRtpSender::new(Codec::H264, None, ssrc);
    let start = Instant::now();
    for i in 0u64.. {
        if stop.load(Ordering::Relaxed) || i > 90 * u64::from(FPS) {
            return;
        }
        let mut f = clip[i as usize % clip.len()].clone();
        (f.pts, f.dts) = (i * 3600, i * 3600);
        for p in sender.packets(&f) {
            let _ = sock.send_to(&p, ("127.0.0.1", port));
        }
        let due = start + Duration::from_millis(i * 1000 / u64::from(FPS));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

/// The device: four channels, INVITEs answered and fed, PTZCmds reported; once one came, an
/// alarm every second.
fn run_device(mut sim: Sim, ptz_seen: mpsc::Sender<String>, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut offers: Vec<(String, u16, u32)> = Vec::new();
    let mut media: Vec<(String, Arc<AtomicBool>)> = Vec::new();
    let mut alarms_from: Option<Instant> = None;
    let mut sn = 1000;
    while Instant::now() < deadline {
        if alarms_from.is_some_and(|t| t <= Instant::now()) {
            alarms_from = Some(Instant::now() + Duration::from_secs(1));
            sn += 1;
            let body = format!(
                "<?xml version=\"1.0\"?>\r\n<Notify>\r\n<CmdType>Alarm</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{}</DeviceID>\r\n<AlarmPriority>1</AlarmPriority>\r\n<AlarmMethod>5</AlarmMethod>\r\n<AlarmTime>2026-12-01T10:00:00</AlarmTime>\r\n<AlarmDescription>Motion at the gate</AlarmDescription>\r\n</Notify>\r\n",
                CHANNELS[0]
            );
            let m = sim.request("MESSAGE", &format!("alarm-{sn}"), "", Some("Application/MANSCDP+xml"), body.as_bytes());
            sim.send(&m);
        }
        let Some(msg) = sim.recv(Duration::from_millis(50)) else { continue };
        if !msg.is_request() {
            continue;
        }
        let text = String::from_utf8_lossy(msg.body()).to_string();
        let field = |n: &str| gmv::proto::sip::manscdp::element(&text, n).map(str::to_string);
        match msg.method().map(|m| m.to_string()).as_deref() {
            Some("MESSAGE") => {
                sim.reply(&msg, 200, "OK", "", None);
                let sn = field("SN").unwrap_or_default();
                if text.contains("<CmdType>RecordInfo</CmdType>") {
                    // One recording, from two hours to an hour and fifty minutes ago.
                    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
                    let (s, e) =
                        (gmv::proto::sip::gbtime::format_local(now - 7200, ZONE_S), gmv::proto::sip::gbtime::format_local(now - 6600, ZONE_S));
                    let channel = field("DeviceID").unwrap_or_default();
                    let body = format!(
                        "<?xml version=\"1.0\"?>\r\n<Response>\r\n<CmdType>RecordInfo</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{channel}</DeviceID>\r\n<SumNum>1</SumNum>\r\n<RecordList Num=\"1\">\r\n<Item><DeviceID>{channel}</DeviceID><Name>rec</Name><FilePath>/sd/1.mp4</FilePath><StartTime>{s}</StartTime><EndTime>{e}</EndTime><Type>time</Type></Item>\r\n</RecordList>\r\n</Response>\r\n"
                    );
                    let m = sim.request("MESSAGE", &format!("rec-{sn}"), "", Some("Application/MANSCDP+xml"), body.as_bytes());
                    sim.send(&m);
                } else if text.contains("<CmdType>Catalog</CmdType>") {
                    let items: String = CHANNELS
                        .iter()
                        .enumerate()
                        .map(|(i, c)| {
                            format!(
                                "<Item><DeviceID>{c}</DeviceID><Name>Camera {}</Name><Manufacturer>Sim</Manufacturer><Status>ON</Status></Item>\r\n",
                                i + 1
                            )
                        })
                        .collect();
                    let body = format!(
                        "<?xml version=\"1.0\"?>\r\n<Response>\r\n<CmdType>Catalog</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{DEVICE}</DeviceID>\r\n<SumNum>4</SumNum>\r\n<DeviceList Num=\"4\">\r\n{items}</DeviceList>\r\n</Response>\r\n"
                    );
                    let m = sim.request("MESSAGE", &format!("cat-{sn}"), "", Some("Application/MANSCDP+xml"), body.as_bytes());
                    sim.send(&m);
                } else if text.contains("<CmdType>PresetQuery</CmdType>") {
                    let channel = field("DeviceID").unwrap_or_default();
                    let body = format!(
                        "<?xml version=\"1.0\"?>\r\n<Response>\r\n<CmdType>PresetQuery</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{channel}</DeviceID>\r\n<PresetList Num=\"1\">\r\n<Item><PresetID>1</PresetID><PresetName>Gate</PresetName></Item>\r\n</PresetList>\r\n</Response>\r\n"
                    );
                    let m = sim.request("MESSAGE", &format!("presets-{sn}"), "", Some("Application/MANSCDP+xml"), body.as_bytes());
                    sim.send(&m);
                } else if let Some(ptz) = field("PTZCmd") {
                    let _ = ptz_seen.send(ptz);
                    alarms_from.get_or_insert(Instant::now());
                }
            }
            Some("INVITE") => {
                let offer = gmv::proto::sdp::Sdp::parse(msg.body()).unwrap();
                let ssrc = offer.ssrc().unwrap();
                // The offer's o= names the channel.
                let channel = text.lines().find_map(|l| l.strip_prefix("o=")).and_then(|o| o.split(' ').next()).unwrap_or_default().to_string();
                sim.reply(&msg, 100, "Trying", "", None);
                let answer = format!(
                    "v=0\r\no={channel} 0 0 IN IP4 127.0.0.1\r\ns=Play\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=video 15060 RTP/AVP 96\r\na=sendonly\r\na=rtpmap:96 PS/90000\r\ny={ssrc:010}\r\n"
                );
                sim.reply(&msg, 200, "OK", &format!("Contact: <sip:{channel}@{}>\r\n", sim.local()), Some(("Application/SDP", answer.as_bytes())));
                offers.push((msg.call_id().unwrap(), offer.media[0].port, ssrc));
            }
            Some("ACK") => {
                let call_id = msg.call_id().unwrap();
                if let Some(i) = offers.iter().position(|o| o.0 == call_id) {
                    let (call_id, port, ssrc) = offers.remove(i);
                    let stop = Arc::new(AtomicBool::new(false));
                    let s = stop.clone();
                    std::thread::spawn(move || stream_clip(port, ssrc, s));
                    media.push((call_id, stop));
                }
            }
            Some("INFO") => {
                sim.reply(&msg, 200, "OK", "", None);
                if let Some(action) = gmv::proto::sip::mansrtsp::parse(&text) {
                    let _ = ptz_seen.send(format!("INFO {action:?}"));
                }
            }
            Some("BYE") => {
                sim.reply(&msg, 200, "OK", "", None);
                let call_id = msg.call_id().unwrap();
                media.retain(|(c, stop)| c != &call_id || !stop.swap(true, Ordering::Relaxed));
            }
            _ => sim.reply(&msg, 200, "OK", "", None),
        }
    }
    for (_, stop) in media {
        stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn the_console_shows_the_device_plays_four_tiles_moves_ptz_and_logs_alarms() {
    // Three thousand devices known from an earlier run (offline) besides the simulated one.
    let data_dir = work_dir().join(format!("console-data-{}", std::process::id()));
    std::fs::create_dir_all(&data_dir).unwrap();
    let known: Vec<gmv::proto::sip::endpoint::Device> = (0..OFFLINE_DEVICES)
        .map(|i| {
            let mut d = gmv::proto::sip::endpoint::Device::new(&format!("4402000000132{i:07}"));
            for c in 0..2 {
                let id = format!("4402000000131{:07}", i * 2 + c);
                d.channels
                    .insert(id.clone(), gmv::proto::sip::manscdp::CatalogItem { device_id: id, name: format!("old {c}"), ..Default::default() });
            }
            d
        })
        .collect();
    std::fs::write(data_dir.join("devices.json"), serde_json::to_vec(&known).unwrap()).unwrap();
    let engine = Engine::start_full(2, "", "  idle_timeout_s: 600\nhls:\n  segment_duration_s: 1\n", "  time_zone: \"+08:00\"\n", Some(data_dir));
    let mut sim = Sim::new(engine.sip);
    assert_eq!(sim.register(PASSWORD, 3600).0, 200);
    let (ptz_tx, ptz_rx) = mpsc::channel();
    std::thread::spawn(move || run_device(sim, ptz_tx, Duration::from_secs(120)));
    wait_for("catalog", Duration::from_secs(15), || {
        let (_, v) = engine.request("GET", &format!("/api/devices/{DEVICE}/channels"), "");
        (v["channels"].as_array().map(Vec::len) == Some(4)).then_some(())
    });
    // The page itself needs no key; the API does.
    let (head, page) = http_get(engine.http, "/", &[]);
    assert_eq!(status_of(&head), 200);
    assert!(String::from_utf8_lossy(&page).contains("/console/vendor/mpegts.js"));

    // A stream taking media only from 10.9.9.9, sent some from elsewhere: its tile says so.
    let waiting = engine.open_stream(serde_json::json!({"source": "10.9.9.9"}));
    let stranger = std::net::UdpSocket::bind("127.0.0.5:0").unwrap();
    let ssrc = waiting["ssrc"].as_u64().unwrap() as u32;
    for p in gmv::sim::ps_rtp_packets(&h264_frames()[..5], ssrc).into_iter().flatten() {
        stranger.send_to(&p, ("127.0.0.1", waiting["port"].as_u64().unwrap() as u16)).unwrap();
    }
    let out = Command::new("node")
        .arg(format!("{BROWSER_DIR}/console_check.mjs"))
        .arg(format!("http://{}/", engine.http))
        .arg(TOKEN)
        .arg(DEVICE)
        .args(CHANNELS)
        .env("SHOTS_DIR", SHOTS_DIR)
        .env("DEVICES_TOTAL", (OFFLINE_DEVICES + 1).to_string())
        .env("SEARCH_CHANNEL", "44020000001310004321")
        .env("NO_MEDIA_STREAM", waiting["stream_id"].as_str().unwrap())
        .current_dir(BROWSER_DIR)
        .output()
        .expect("node (npm ci in tests/browser)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap_or_default();
    assert_eq!(result["ok"], true, "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(result["wrong_key"].as_str().unwrap().contains("not valid"), "{result}");
    assert_eq!(result["search_count"].as_str(), Some("1 of 1 devices"), "{result}");
    let rows = result["rows_in_page"].as_u64().unwrap();
    assert!((1..100).contains(&rows), "the tree draws the rows in view, not {OFFLINE_DEVICES}: {rows}");
    assert_eq!(result["tiles"].as_array().map(Vec::len), Some(9), "{result}");
    // Every tile plays over WebRTC (the first choice), none fell back to FLV or HLS.
    let players: Vec<&str> = result["tile_players"].as_array().unwrap().iter().filter_map(serde_json::Value::as_str).collect();
    assert!(players.len() == 9 && players.iter().all(|p| *p == "webrtc"), "{players:?}");
    for t in result["tiles"].as_array().unwrap() {
        assert_eq!((t["width"].as_u64(), t["height"].as_u64()), (Some(u64::from(WIDTH)), Some(u64::from(HEIGHT))), "{t}");
    }
    // Press and hold right: a pan right at half speed, then a stop.
    // then preset 1 called from the list; the playback paused and sought by a drag.
    let asked: Vec<String> = ptz_rx.try_iter().collect();
    let moves: Vec<&str> = asked.iter().map(String::as_str).filter(|m| !m.starts_with("INFO")).collect();
    assert_eq!(moves, ["A50F010180000036", "A50F0100000000B5", "A50F018200010038"], "{asked:?}");
    let infos: Vec<&str> = asked.iter().map(String::as_str).filter(|m| m.starts_with("INFO")).collect();
    assert_eq!(infos.first(), Some(&"INFO Pause"), "{asked:?}");
    assert!(infos.iter().any(|i| i.starts_with("INFO Seek(")), "{asked:?}");
    assert!(result["alarm"].as_str().unwrap().contains("Motion at the gate"), "{result}");
    assert!(result["download"].as_str().unwrap().contains('%'), "{result}");
    assert!(result["details"].as_str().unwrap().contains("no X-GB-Ver"), "{result}");
    assert!(result["hls_tile"]["time"].as_f64().unwrap() > 1.0, "{result}");
    let no_media = result["no_media"].as_str().unwrap_or_default();
    assert!(no_media.contains("from 127.0.0.5") && no_media.contains("takes media from 10.9.9.9 only"), "{result}");
    for shot in ["devices", "wall", "events", "playback", "details", "streams", "no-media", "phone"] {
        assert!(std::path::Path::new(SHOTS_DIR).join(format!("console-{shot}.png")).exists());
    }
}
