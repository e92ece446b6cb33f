//! Recordings on a device, end to end: a simulated NVR channel holds three recordings whose
//! every frame carries its recording time in an SEI, answers RecordInfo in three MESSAGEs,
//! plays back and downloads at the pace the Scale or download speed asks, honours Range seeks
//! and PAUSE, and sends MediaStatus 121 at the end. What the viewers and the download file hold
//! is read back from those SEIs.

mod common;

use common::gb_sim::*;
use common::*;
use gmv::proto::frame::{Codec, Frame};
use gmv::proto::sip::SipMsg;
use gmv::proto::sip::gbtime;
use gmv::proto::sip::mansrtsp::{self, PlaybackAction};
use std::net::UdpSocket;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CHANNEL: &str = "34020000001310000001";
/// The device's clock zone (the engine is told the same).
const ZONE_S: i32 = 8 * 3600;
const FRAME_MS: u64 = 40;
/// Each recording is this long; they start 20 s apart.
const RECORDING_S: u64 = 12;
const SEI_UUID: [u8; 16] = *b"gmv-sim-rec-time";
/// Keepalives every second, offline after 3 × 2 s without one (the offline case).
const SIP_YAML: &str = "  time_zone: \"+08:00\"\n  record_query_timeout_s: 3\n  keepalive_interval_s: 2\n";

/// Three recordings starting at `base` (unix seconds, a whole minute an hour ago).
fn recordings(base: u64) -> [(u64, u64); 3] {
    [0, 20, 40].map(|o| (base + o, base + o + RECORDING_S))
}

fn base_time() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    now - 3600 - now % 60
}

/// What the simulated device was asked.
#[derive(Debug, Clone, PartialEq)]
enum Asked {
    /// An INVITE: its `s=`, `t=` range and `a=downloadspeed`.
    Invite {
        name: String,
        start: u64,
        end: u64,
        speed: Option<u32>,
    },
    Info(PlaybackAction),
    Bye,
}

#[derive(Default)]
struct DeviceOptions {
    /// A download is dropped (media stops, BYE) once this much media went out, the first time.
    drop_download_after_ms: Option<u64>,
}

/// Where the device's media sender stands.
struct Play {
    /// Recording time (unix ms) of the next frame, and where the range ends.
    pos_ms: u64,
    end_ms: u64,
    /// Where the played range starts: seeks count from here.
    start_ms: u64,
    scale_x100: u16,
    paused: bool,
    stop: bool,
}

/// The clip's frames; keyframes (every 25th) get the first frame's SPS and PPS, as cameras
/// send them with every IDR.
fn clip() -> Vec<Frame> {
    let frames = h264_frames();
    let params: Vec<u8> = gmv::proto::h26x::nal_units(&frames[0].data)
        .filter(|n| matches!(n[0] & 0x1f, 7 | 8))
        .flat_map(|n| [&[0u8, 0, 0, 1][..], n].concat())
        .collect();
    frames
        .into_iter()
        .map(|mut f| {
            if f.keyframe && !gmv::proto::h26x::nal_units(&f.data).any(|n| n[0] & 0x1f == 7) {
                f.data = [params.as_slice(), &f.data].concat().into();
            }
            f
        })
        .collect()
}

/// Frame of the recording starting at `rec_start_ms` that shows time `pos_ms`: the clip looped,
/// an SEI with the time in front, PS timestamps counted from the recording's start.
fn recorded_frame(clip: &[Frame], rec_start_ms: u64, pos_ms: u64) -> Frame {
    let n = ((pos_ms - rec_start_ms) / FRAME_MS) as usize;
    let f = &clip[n % clip.len()];
    let text = format!("gmvsim:{pos_ms}");
    let mut sei = vec![0, 0, 0, 1, 0x06, 0x05, (SEI_UUID.len() + text.len()) as u8];
    sei.extend_from_slice(&SEI_UUID);
    sei.extend_from_slice(text.as_bytes());
    sei.push(0x80);
    let ts = 90_000 + (pos_ms - rec_start_ms) * 90;
    Frame { codec: Codec::H264, pts: ts, dts: ts, keyframe: f.keyframe, data: [sei.as_slice(), &f.data].concat().into() }
}

/// Sends media from `play` until its end, a stop, or `drop_after_ms` of media: paced at real
/// time over the scale (`pace_x` for a download), skipping the gaps between recordings.
/// Returns whether it reached the end.
fn send_media(play: &Mutex<Play>, port: u16, ssrc: u32, clip: &[Frame], recs: &[(u64, u64)], pace_x: u64, drop_after_ms: Option<u64>) -> bool {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut sender = gmv::sim::PsRtpSender::new(Codec::H264, None, ssrc);
    // Pacing: media sent since `anchor` at `scale`.
    let (mut anchor, mut sent_since, mut anchor_scale, mut anchor_pos) = (Instant::now(), 0u64, 0u16, 0u64);
    let mut sent_total = 0u64;
    loop {
        let (frame, scale) = {
            let mut p = play.lock().unwrap();
            if p.stop {
                return false;
            }
            if p.paused {
                drop(p);
                std::thread::sleep(Duration::from_millis(10));
                anchor_scale = 0;
                continue;
            }
            let Some(&(rs, _)) = recs.iter().find(|(_, re)| p.pos_ms < re * 1000) else { return true };
            p.pos_ms = p.pos_ms.max(rs * 1000);
            if p.pos_ms >= p.end_ms {
                return true;
            }
            let frame = recorded_frame(clip, rs * 1000, p.pos_ms);
            // A seek or a new speed restarts the pacing.
            if anchor_scale != p.scale_x100 || anchor_pos + sent_since != p.pos_ms {
                (anchor, sent_since, anchor_scale, anchor_pos) = (Instant::now(), 0, p.scale_x100, p.pos_ms);
            }
            p.pos_ms += FRAME_MS;
            (frame, p.scale_x100)
        };
        for packet in sender.packets(&frame) {
            sock.send_to(&packet, ("127.0.0.1", port)).unwrap();
        }
        sent_since += FRAME_MS;
        sent_total += FRAME_MS;
        if drop_after_ms.is_some_and(|d| sent_total >= d) {
            return false;
        }
        let due = anchor + Duration::from_millis(sent_since * 100 / u64::from(scale) / pace_x);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

fn record_info_answer(sn: &str, sum: usize, items: &[(u64, u64)]) -> Vec<u8> {
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Response>\r\n<CmdType>RecordInfo</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{CHANNEL}</DeviceID>\r\n<Name>Gate</Name>\r\n<SumNum>{sum}</SumNum>\r\n<RecordList Num=\"{}\">\r\n",
        items.len()
    );
    for (s, e) in items {
        let (s, e) = (gbtime::format_local(*s as i64, ZONE_S), gbtime::format_local(*e as i64, ZONE_S));
        xml.push_str(&format!("<Item>\r\n<DeviceID>{CHANNEL}</DeviceID>\r\n<Name>Gate</Name>\r\n<FilePath>/sd/{s}.mp4</FilePath>\r\n<Address>NVR</Address>\r\n<StartTime>{s}</StartTime>\r\n<EndTime>{e}</EndTime>\r\n<Secrecy>0</Secrecy>\r\n<Type>time</Type>\r\n</Item>\r\n"));
    }
    xml.push_str("</RecordList>\r\n</Response>\r\n");
    xml.into_bytes()
}

fn sdp_line<'a>(sdp: &'a str, prefix: &str) -> Option<&'a str> {
    sdp.lines().find_map(|l| l.strip_prefix(prefix))
}

/// The device: keepalives, catalog of one channel, RecordInfo, INVITE/INFO/BYE, media from a
/// thread; until `quit` says so or `limit`.
fn run_device(mut sim: Sim, base: u64, asked: mpsc::Sender<Asked>, quit: mpsc::Receiver<()>, options: DeviceOptions, limit: Duration) {
    let recs = recordings(base);
    let clip = Arc::new(clip());
    let deadline = Instant::now() + limit;
    let mut media: Option<(Arc<Mutex<Play>>, std::thread::JoinHandle<bool>)> = None;
    let mut offer: Option<(u16, u32, Play, u64)> = None;
    let mut dropped_once = false;
    let mut dialog: Option<SipMsg> = None;
    let mut next_keepalive = Instant::now();
    while Instant::now() < deadline && matches!(quit.try_recv(), Err(mpsc::TryRecvError::Empty)) {
        if Instant::now() >= next_keepalive {
            next_keepalive += Duration::from_secs(1);
            let body = format!(
                "<?xml version=\"1.0\"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<SN>1</SN>\r\n<DeviceID>{DEVICE}</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n"
            );
            let m = sim.request("MESSAGE", &format!("ka-{}", sim.cseq), "", Some("Application/MANSCDP+xml"), body.as_bytes());
            sim.send(&m);
        }
        // The media thread ended: the end of the file (MediaStatus 121) or a dropped download.
        if media.as_ref().is_some_and(|(_, t)| t.is_finished()) {
            let (_, thread) = media.take().unwrap();
            let ended = thread.join().unwrap();
            if ended {
                let body = format!(
                    "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Notify>\r\n<CmdType>MediaStatus</CmdType>\r\n<SN>77</SN>\r\n<DeviceID>{CHANNEL}</DeviceID>\r\n<NotifyType>121</NotifyType>\r\n</Notify>\r\n"
                );
                let m = sim.request("MESSAGE", &format!("ms-{}", sim.cseq), "", Some("Application/MANSCDP+xml"), body.as_bytes());
                sim.send(&m);
            } else if let Some(invite) = dialog.take() {
                // Dropped: the device hangs up.
                let bye = dialog_bye(&mut sim, &invite);
                sim.send(&bye);
            }
        }
        let Some(msg) = sim.recv(Duration::from_millis(20)) else { continue };
        if !msg.is_request() {
            // Its keepalive refused: the platform forgot it (a restart); it registers again.
            if msg.status() == Some(403) {
                assert_eq!(sim.register(PASSWORD, 3600).0, 200, "registered again");
            }
            continue;
        }
        let text = String::from_utf8_lossy(msg.body()).to_string();
        match msg.method().map(|m| m.to_string()).as_deref() {
            Some("MESSAGE") => {
                sim.reply(&msg, 200, "OK", "", None);
                let sn = gmv::proto::sip::manscdp::element(&text, "SN").unwrap_or("1").to_string();
                let body = if text.contains("<CmdType>Catalog</CmdType>") {
                    format!("<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Response>\r\n<CmdType>Catalog</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{DEVICE}</DeviceID>\r\n<SumNum>1</SumNum>\r\n<DeviceList Num=\"1\">\r\n<Item>\r\n<DeviceID>{CHANNEL}</DeviceID>\r\n<Name>Gate</Name>\r\n<Status>ON</Status>\r\n</Item>\r\n</DeviceList>\r\n</Response>\r\n").into_bytes()
                } else if text.contains("<CmdType>RecordInfo</CmdType>") {
                    let field = |n: &str| gmv::proto::sip::manscdp::element(&text, n).and_then(|t| gbtime::parse_local(t, ZONE_S)).unwrap() as u64;
                    let (from, to) = (field("StartTime"), field("EndTime"));
                    let found: Vec<(u64, u64)> = recs.iter().copied().filter(|(s, e)| *e > from && *s < to).collect();
                    // One item a MESSAGE, the first repeated, the last first (UDP reorders);
                    // for type=alarm the last MESSAGE is lost.
                    let mut parts: Vec<Vec<(u64, u64)>> = found.iter().map(|r| vec![*r]).collect();
                    if parts.len() > 1 {
                        parts.rotate_right(1);
                        parts.push(parts[1].clone());
                    }
                    if text.contains("<Type>alarm</Type>") {
                        parts.truncate(1);
                    }
                    for (i, part) in parts.iter().enumerate() {
                        let m = sim.request(
                            "MESSAGE",
                            &format!("rec-{sn}-{i}"),
                            "",
                            Some("Application/MANSCDP+xml"),
                            &record_info_answer(&sn, found.len(), part),
                        );
                        sim.send(&m);
                    }
                    continue;
                } else if text.contains("<CmdType>DeviceInfo</CmdType>") {
                    format!("<?xml version=\"1.0\"?>\r\n<Response>\r\n<CmdType>DeviceInfo</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{DEVICE}</DeviceID>\r\n<Manufacturer>Sim</Manufacturer>\r\n</Response>\r\n").into_bytes()
                } else {
                    continue;
                };
                let m = sim.request("MESSAGE", &format!("ans-{sn}"), "", Some("Application/MANSCDP+xml"), &body);
                sim.send(&m);
            }
            Some("INVITE") => {
                let name = sdp_line(&text, "s=").unwrap_or_default().to_string();
                let t: Vec<u64> = sdp_line(&text, "t=").unwrap_or("0 0").split(' ').filter_map(|v| v.parse().ok()).collect();
                let speed = sdp_line(&text, "a=downloadspeed:").and_then(|v| v.parse().ok());
                let port: u16 = sdp_line(&text, "m=video ").and_then(|m| m.split(' ').next()).and_then(|p| p.parse().ok()).unwrap();
                let ssrc: u32 = sdp_line(&text, "y=").and_then(|y| y.parse().ok()).unwrap();
                asked.send(Asked::Invite { name: name.clone(), start: t[0], end: t[1], speed }).unwrap();
                sim.reply(&msg, 100, "Trying", "", None);
                let answer = format!(
                    "v=0\r\no={CHANNEL} 0 0 IN IP4 127.0.0.1\r\ns={name}\r\nc=IN IP4 127.0.0.1\r\nt={} {}\r\nm=video 15060 RTP/AVP 96\r\na=sendonly\r\na=rtpmap:96 PS/90000\r\ny={ssrc:010}\r\nf=\r\n",
                    t[0], t[1]
                );
                sim.reply(&msg, 200, "OK", &format!("Contact: <sip:{CHANNEL}@{}>\r\n", sim.local()), Some(("Application/SDP", answer.as_bytes())));
                // Live: this camera shows its first recording as if it were now.
                let (from, to) = if name == "Play" { recs[0] } else { (t[0], t[1]) };
                let play = Play { pos_ms: from * 1000, end_ms: to * 1000, start_ms: from * 1000, scale_x100: 100, paused: false, stop: false };
                offer = Some((port, ssrc, play, speed.map_or(1, u64::from)));
                dialog = Some(msg.clone());
            }
            Some("ACK") => {
                let Some((port, ssrc, play, pace_x)) = offer.take() else { continue };
                let play = Arc::new(Mutex::new(play));
                let drop_after = options.drop_download_after_ms.filter(|_| speed_download(pace_x) && !dropped_once);
                dropped_once |= drop_after.is_some();
                let (p, clip) = (play.clone(), clip.clone());
                let thread = std::thread::spawn(move || send_media(&p, port, ssrc, &clip, &recs, pace_x, drop_after));
                media = Some((play, thread));
            }
            Some("INFO") => {
                let Some(action) = mansrtsp::parse(&text) else {
                    sim.reply(&msg, 400, "Bad Request", "", None);
                    continue;
                };
                asked.send(Asked::Info(action)).unwrap();
                // This device cannot play at a quarter of the speed.
                if action == PlaybackAction::Speed(25) {
                    sim.reply(&msg, 406, "Not Acceptable", "", None);
                    continue;
                }
                if let Some((play, _)) = &media {
                    let mut p = play.lock().unwrap();
                    match action {
                        PlaybackAction::Pause => p.paused = true,
                        PlaybackAction::Resume => p.paused = false,
                        PlaybackAction::Seek(s) => p.pos_ms = p.start_ms + s * 1000,
                        PlaybackAction::Speed(x100) => p.scale_x100 = x100,
                    }
                }
                sim.reply(&msg, 200, "OK", "", None);
            }
            Some("BYE") => {
                sim.reply(&msg, 200, "OK", "", None);
                asked.send(Asked::Bye).unwrap();
                if let Some((play, thread)) = media.take() {
                    play.lock().unwrap().stop = true;
                    let _ = thread.join();
                }
                dialog = None;
            }
            _ => sim.reply(&msg, 200, "OK", "", None),
        }
    }
}

fn speed_download(pace_x: u64) -> bool {
    pace_x > 1
}

/// A BYE from the device in the dialog of `invite` (its tags swapped).
fn dialog_bye(sim: &mut Sim, invite: &SipMsg) -> Vec<u8> {
    sim.cseq += 1;
    let local = sim.local();
    let from = invite.header("From").unwrap();
    let to = invite.header("To").unwrap();
    format!(
        "BYE sip:{SERVER}@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {local};rport;branch=z9hG4bKbye{}\r\nFrom: {to};tag=devtag\r\nTo: {from}\r\nCall-ID: {}\r\nCSeq: {} BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        sim.cseq,
        invite.call_id().unwrap(),
        sim.cseq
    )
    .into_bytes()
}

struct Setup {
    engine: Engine,
    base: u64,
    asked: mpsc::Receiver<Asked>,
    quit: mpsc::Sender<()>,
    device: std::thread::JoinHandle<()>,
}

impl Setup {
    /// The device goes silent (no keepalives, no answers) and the engine notices.
    fn device_gone(self) -> Engine {
        self.quit.send(()).unwrap();
        self.device.join().unwrap();
        wait_for("device offline", Duration::from_secs(15), || {
            let (_, v) = self.engine.request("GET", &format!("/api/devices/{DEVICE}"), "");
            (v["online"] == false).then_some(())
        });
        self.engine
    }
}

fn setup(options: DeviceOptions) -> Setup {
    let engine = Engine::start_with(2, "", SIP_YAML, None);
    let mut sim = Sim::new(engine.sip);
    assert_eq!(sim.register(PASSWORD, 3600).0, 200);
    let base = base_time();
    let (tx, asked) = mpsc::channel();
    let (quit, quit_rx) = mpsc::channel();
    let device = std::thread::spawn(move || run_device(sim, base, tx, quit_rx, options, Duration::from_secs(90)));
    wait_for("catalog", Duration::from_secs(15), || {
        let (_, v) = engine.request("GET", &format!("/api/devices/{DEVICE}/channels"), "");
        (v["channels"].as_array().map(Vec::len) == Some(1)).then_some(())
    });
    Setup { engine, base, asked, quit, device }
}

/// Polls a download until it is complete (within 40 s; failing or cancelled fails the test),
/// showing `each` every state seen; the complete one.
fn download_complete(engine: &Engine, id: &str, mut each: impl FnMut(&serde_json::Value)) -> serde_json::Value {
    wait_for("download complete", Duration::from_secs(40), || {
        let (_, d) = engine.request("GET", &format!("/api/downloads/{id}"), "");
        each(&d);
        match d["state"].as_str() {
            Some("complete") => Some(d),
            Some("failed" | "cancelled") => panic!("download ended: {d}"),
            _ => {
                std::thread::sleep(Duration::from_millis(100));
                None
            }
        }
    })
}

/// A finished download's file, fetched by its URL, holds every frame of the recording
/// `rec_start..rec_end` once (their SEI times) and lasts it; its URL.
fn assert_whole_download(engine: &Engine, done: &serde_json::Value, rec_start: u64, rec_end: u64, name: &str) -> String {
    let url = done["url"].as_str().unwrap().to_string();
    let (head, mp4) = http_get(engine.http, &url, &[]);
    assert_eq!(status_of(&head), 200, "{head}");
    assert_eq!(mp4.len() as u64, done["bytes"].as_u64().unwrap());
    let file = work_dir().join(format!("{name}.mp4"));
    std::fs::write(&file, &mp4).unwrap();
    let flv = work_dir().join(format!("{name}.flv"));
    let remux = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(&file)
        .args(["-c", "copy", "-f", "flv"])
        .arg(&flv)
        .status()
        .unwrap();
    assert!(remux.success());
    let times: std::collections::BTreeSet<u64> = flv_frame_times(&std::fs::read(&flv).unwrap()).into_iter().map(|f| f.1).collect();
    let all: std::collections::BTreeSet<u64> = (rec_start * 1000..rec_end * 1000).step_by(FRAME_MS as usize).collect();
    let missing: Vec<u64> = all.difference(&times).map(|t| t - rec_start * 1000).collect();
    let extra: Vec<u64> = times.difference(&all).copied().collect();
    assert!(missing.is_empty() && extra.is_empty(), "every frame of the recording is in the file: missing (ms in) {missing:?}, extra {extra:?}");
    assert_eq!(ffprobe(&file).frames, all.len(), "each frame once");
    let duration = ffprobe_duration_s(&file);
    assert!((duration - RECORDING_S as f64).abs() < 0.1, "lasts the recording: {duration} s");
    url
}

/// Next thing the device was asked, within `limit`.
fn next_asked(asked: &mpsc::Receiver<Asked>, limit: Duration) -> Asked {
    asked.recv_timeout(limit).expect("the device was asked something")
}

/// Recording times (ms) in the SEIs of an FLV's video tags, with the tags' timestamps.
fn flv_frame_times(flv: &[u8]) -> Vec<(u32, u64)> {
    flv_tags(flv)
        .into_iter()
        .filter(|(kind, _, body)| *kind == 9 && body.len() > 5 && body[1] == 1)
        .filter_map(|(_, ts, body)| {
            let mut nalus = &body[5..];
            while nalus.len() >= 4 {
                let len = u32::from_be_bytes([nalus[0], nalus[1], nalus[2], nalus[3]]) as usize;
                let nal = nalus.get(4..4 + len)?;
                if nal.first().is_some_and(|b| b & 0x1f == 6) && nal.len() > 3 + 16 && nal[3..19] == SEI_UUID {
                    let text = std::str::from_utf8(&nal[19..nal.len() - 1]).ok()?;
                    return Some((ts, text.strip_prefix("gmvsim:")?.parse().ok()?));
                }
                nalus = &nalus[4 + len..];
            }
            None
        })
        .collect()
}

fn ffprobe_duration_s(path: &std::path::Path) -> f64 {
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "format=duration", "-of", "default=nw=1:nk=1"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0.0)
}

fn control(engine: &Engine, stream_id: &str, body: &str) -> (u16, serde_json::Value) {
    engine.request("POST", &format!("/api/sessions/{stream_id}/control"), body)
}

fn frames_of(engine: &Engine, stream_id: &str) -> u64 {
    engine.stream(stream_id)["frames"].as_u64().unwrap_or(0)
}

#[test]
fn records_are_searched_merged_and_refused_clearly() {
    let s = setup(DeviceOptions::default());
    let (engine, base) = (&s.engine, s.base);
    let recs = recordings(base);
    let path = |q: &str| format!("/api/devices/{DEVICE}/channels/{CHANNEL}/records?{q}");
    let (status, v) = engine.request("GET", &path(&format!("start={}&end={}", base - 60, base + 120)), "");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["complete"], true, "{v}");
    let listed: Vec<(u64, u64)> =
        v["records"].as_array().unwrap().iter().map(|r| (r["start"].as_u64().unwrap(), r["end"].as_u64().unwrap())).collect();
    assert_eq!(listed, recs.to_vec(), "three MESSAGEs, one repeated and reordered, merged: {v}");
    assert_eq!(v["records"][0]["type"], "time");
    assert!(v["records"][0]["file_path"].as_str().unwrap().starts_with("/sd/"));
    // The same search in the device's local time; a page of one.
    let (from, to) = (gbtime::format_local(base as i64 - 60, ZONE_S), gbtime::format_local(base as i64 + 120, ZONE_S));
    let (_, local) = engine.request("GET", &path(&format!("start={from}&end={to}&offset=1&limit=1")), "");
    assert_eq!((local["total"].as_u64(), local["records"][0]["start"].as_u64()), (Some(3), Some(recs[1].0)), "{local}");
    // An answer missing a MESSAGE comes back at the deadline, marked incomplete.
    let (status, partial) = engine.request("GET", &path(&format!("start={}&end={}&type=alarm", base - 60, base + 120)), "");
    assert_eq!((status, partial["complete"].as_bool(), partial["sum_num"].as_u64()), (200, Some(false), Some(3)), "{partial}");
    assert_eq!(partial["records"].as_array().map(Vec::len), Some(1));

    // One timeline of the channel: the device's recordings and gmv's own recording of it,
    // made from live play.
    let (status, session) = engine.request("POST", &format!("/api/devices/{DEVICE}/channels/{CHANNEL}/play"), "{}");
    assert_eq!(status, 200, "{session}");
    let stream_id = session["stream_id"].as_str().unwrap().to_string();
    assert_eq!(engine.request("POST", &format!("/api/streams/{stream_id}/record"), "").0, 200);
    wait_for("two seconds of live", Duration::from_secs(10), || (frames_of(engine, &stream_id) >= 50).then_some(()));
    assert_eq!(engine.request("DELETE", &format!("/api/streams/{stream_id}/record"), "").0, 200);
    wait_for("the recording closed", Duration::from_secs(10), || {
        let (_, v) = engine.request("GET", &format!("/api/records?stream={stream_id}"), "");
        v["records"].as_array().is_some_and(|r| r.len() == 1 && r[0]["in_progress"] == false).then_some(())
    });
    assert_eq!(engine.request("POST", &format!("/api/devices/{DEVICE}/channels/{CHANNEL}/stop"), "").0, 200);
    // Its closing is an event of the channel.
    let closed = wait_for("recording_closed event", Duration::from_secs(5), || {
        let (_, v) = engine.request("GET", "/api/events?since=0&kind=recording_closed", "");
        v["events"].as_array().and_then(|e| e.first().cloned())
    });
    assert_eq!((closed["channel_id"].as_str(), closed["data"]["stream_id"].as_str()), (Some(CHANNEL), Some(stream_id.as_str())), "{closed}");
    let now = base_time() + 3600 + 60;
    let (status, t) = engine.request("GET", &format!("/api/channels/{CHANNEL}/timeline?start={}&end={}", base - 60, now + 60), "");
    assert_eq!(status, 200, "{t}");
    let sources: Vec<&str> = t["ranges"].as_array().unwrap().iter().map(|r| r["source"].as_str().unwrap()).collect();
    assert_eq!(sources, ["device", "device", "device", "gmv"], "{t}");
    assert!(t["ranges"][3]["flv"].as_str().unwrap().starts_with("/flv/record/"));

    // Bad input.
    for (q, code) in [
        (format!("start={}&end={}", base + 60, base), 400),
        ("start=yesterday&end=today".into(), 400),
        (format!("start={base}&end={}&type=motion", base + 1), 400),
        ("".into(), 400),
    ] {
        assert_eq!(engine.request("GET", &path(&q), "").0, code, "{q}");
    }
    assert_eq!(engine.request("GET", &format!("/api/devices/{DEVICE}/channels/34020000001319999999/records?start=1&end=2"), "").0, 404);
    assert_eq!(engine.request("GET", "/api/devices/34020000001329999999/channels/1/records?start=1&end=2", "").0, 404);
    assert_eq!(engine.request("GET", "/api/channels/34020000001319999999/timeline?start=1&end=2", "").0, 404);
    let body = format!("{{\"start\": {}, \"end\": {}}}", base + 10, base);
    assert_eq!(engine.request("POST", &format!("/api/devices/{DEVICE}/channels/{CHANNEL}/playback"), &body).0, 400);
    let body = format!("{{\"start\": {base}, \"end\": {}, \"speed\": 0}}", base + 10);
    assert_eq!(engine.request("POST", &format!("/api/devices/{DEVICE}/channels/{CHANNEL}/download"), &body).0, 400);
    assert_eq!(control(engine, "1000000001", "{\"action\": \"pause\"}").0, 404);
    // A device that went away: 409, for searches and playback alike.
    let engine = s.device_gone();
    let (status, v) = engine.request("GET", &path(&format!("start={}&end={}", base - 60, base + 120)), "");
    assert_eq!((status, v["code"].as_str()), (409, Some("device_offline")), "{v}");
    let body = format!("{{\"start\": {base}, \"end\": {}}}", base + 10);
    assert_eq!(engine.request("POST", &format!("/api/devices/{DEVICE}/channels/{CHANNEL}/playback"), &body).0, 409);
    assert_eq!(engine.request("POST", &format!("/api/devices/{DEVICE}/channels/{CHANNEL}/ptz"), "{\"pan\": 1}").0, 409);
    assert_eq!(engine.request("GET", &format!("/api/devices/{DEVICE}/status"), "").0, 409);
}

#[test]
fn playback_starts_at_the_asked_time_seeks_pauses_and_ends_on_media_status() {
    let s = setup(DeviceOptions::default());
    let (engine, base) = (&s.engine, s.base);
    let (rec_start, rec_end) = recordings(base)[0];
    let start = rec_start + 2;
    let body = format!("{{\"start\": {start}, \"end\": {rec_end}}}");
    let (status, session) = engine.request("POST", &format!("/api/devices/{DEVICE}/channels/{CHANNEL}/playback"), &body);
    assert_eq!(status, 200, "{session}");
    assert_eq!((session["kind"].as_str(), session["start"].as_u64(), session["end"].as_u64()), (Some("playback"), Some(start), Some(rec_end)));
    let stream_id = session["stream_id"].as_str().unwrap().to_string();
    assert!(stream_id.starts_with('1'), "history SSRC: {stream_id}");
    assert_eq!(next_asked(&s.asked, Duration::from_secs(5)), Asked::Invite { name: "Playback".into(), start, end: rec_end, speed: None });
    let url = session["play"]["flv"].as_str().unwrap();
    let path = url.split_once(&engine.http.to_string()).unwrap().1.to_string();
    let out = work_dir().join("playback.flv");
    let viewer = spawn_viewer(engine.http, path, vec![], out.clone(), Duration::from_secs(40));

    // A second of media, then a seek 6 s into the playback.
    wait_for("a second of playback", Duration::from_secs(10), || (frames_of(engine, &stream_id) >= 25).then_some(()));
    let (status, v) = control(engine, &stream_id, "{\"action\": \"seek\", \"position_s\": 6}");
    assert_eq!(status, 200, "{v}");
    assert_eq!(next_asked(&s.asked, Duration::from_secs(5)), Asked::Info(PlaybackAction::Seek(6)));
    wait_for("media after the seek", Duration::from_secs(10), || (frames_of(engine, &stream_id) >= 60).then_some(()));
    // Paused: no frames; resumed: frames again.
    assert_eq!(control(engine, &stream_id, "{\"action\": \"pause\"}").0, 200);
    assert_eq!(next_asked(&s.asked, Duration::from_secs(5)), Asked::Info(PlaybackAction::Pause));
    assert_eq!(engine.stream(&stream_id)["paused"], true);
    let paused_at = wait_for("frames to stop", Duration::from_secs(5), || {
        let a = frames_of(engine, &stream_id);
        std::thread::sleep(Duration::from_millis(300));
        (frames_of(engine, &stream_id) == a).then_some(a)
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(frames_of(engine, &stream_id), paused_at, "paused: no frames");
    assert_eq!(control(engine, &stream_id, "{\"action\": \"resume\"}").0, 200);
    wait_for("frames after resume", Duration::from_secs(5), || (frames_of(engine, &stream_id) > paused_at).then_some(()));
    // A command the device refuses is reported; bad ones never reach it.
    let (status, v) = control(engine, &stream_id, "{\"action\": \"speed\", \"scale\": 0.25}");
    assert_eq!((status, v["code"].as_str()), (502, Some("device_rejected")), "{v}");
    assert_eq!(control(engine, &stream_id, "{\"action\": \"speed\", \"scale\": 3}").0, 400);
    assert_eq!(control(engine, &stream_id, "{\"action\": \"rewind\"}").0, 400);

    // The device reaches the end, says so (MediaStatus 121): the session goes, the viewer
    // sees the end of the stream.
    let (code, _) = viewer.join().unwrap();
    assert_eq!(code, 200);
    wait_for("session removed", Duration::from_secs(5), || {
        engine.request("GET", "/api/sessions", "").1["sessions"].as_array().is_some_and(|s| s.is_empty()).then_some(())
    });
    let bye = wait_for("the BYE", Duration::from_secs(5), || match s.asked.recv_timeout(Duration::from_millis(100)) {
        Ok(Asked::Bye) => Some(true),
        Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => None,
        Err(mpsc::RecvTimeoutError::Disconnected) => Some(false),
    });
    assert!(bye, "the ended session was BYE'd");

    let flv = std::fs::read(&out).unwrap();
    let frames = flv_frame_times(&flv);
    assert_eq!(frames.first().map(|f| f.1), Some(start * 1000), "the first frame is from the asked start");
    assert!(frames.windows(2).all(|w| w[1].0 >= w[0].0), "viewer timestamps never go back");
    let jump = frames.windows(2).position(|w| w[1].1 != w[0].1 + FRAME_MS).expect("the seek shows");
    let target = (start + 6) * 1000;
    assert!((target..target + 1000).contains(&frames[jump + 1].1), "the seek lands within a GOP of {target}: {:?}", frames[jump + 1]);
    assert!(frames[jump + 1..].windows(2).all(|w| w[1].1 == w[0].1 + FRAME_MS), "one jump only; pause and resume lose nothing");
    assert_eq!(frames.last().map(|f| f.1), Some(rec_end * 1000 - FRAME_MS), "played to the end");
    assert_eq!(ffprobe(&out).frames, frames.len(), "every frame decodes");
    s.device_gone();
}

#[test]
fn scale_four_plays_four_times_as_fast() {
    let s = setup(DeviceOptions::default());
    let (engine, base) = (&s.engine, s.base);
    let (rec_start, rec_end) = recordings(base)[1];
    let body = format!("{{\"start\": {rec_start}, \"end\": {rec_end}}}");
    let started = Instant::now();
    let (status, session) = engine.request("POST", &format!("/api/devices/{DEVICE}/channels/{CHANNEL}/playback"), &body);
    assert_eq!(status, 200, "{session}");
    let stream_id = session["stream_id"].as_str().unwrap().to_string();
    let url = session["play"]["flv"].as_str().unwrap();
    let out = work_dir().join("playback-x4.flv");
    let viewer =
        spawn_viewer(engine.http, url.split_once(&engine.http.to_string()).unwrap().1.to_string(), vec![], out.clone(), Duration::from_secs(30));
    assert_eq!(control(engine, &stream_id, "{\"action\": \"speed\", \"scale\": 4}").0, 200);
    viewer.join().unwrap();
    let elapsed = started.elapsed();
    let frames = flv_frame_times(&std::fs::read(&out).unwrap());
    assert_eq!(frames.len() as u64, RECORDING_S * 1000 / FRAME_MS, "every frame of the recording");
    // Played at 1/4 of the device's clock (after the first moments at 1x): the viewer's
    // timestamps span about a quarter of the recording.
    let span_ms = frames.last().unwrap().0 - frames[0].0;
    assert!((2_500..=5_000).contains(&span_ms), "12 s at 4x spans {span_ms} ms");
    assert!(elapsed < Duration::from_secs(9), "12 s at 4x took {elapsed:?}");
    s.device_gone();
}

#[test]
fn a_download_resumes_after_the_device_drops_and_completes_whole() {
    let s = setup(DeviceOptions { drop_download_after_ms: Some(5_000) });
    let (engine, base) = (&s.engine, s.base);
    let (rec_start, rec_end) = recordings(base)[2];
    let body = format!("{{\"start\": {rec_start}, \"end\": {rec_end}, \"speed\": 4}}");
    let (status, d) = engine.request("POST", &format!("/api/devices/{DEVICE}/channels/{CHANNEL}/download"), &body);
    assert_eq!(status, 202, "{d}");
    let id = d["id"].as_str().unwrap().to_string();
    assert_eq!(
        next_asked(&s.asked, Duration::from_secs(5)),
        Asked::Invite { name: "Download".into(), start: rec_start, end: rec_end, speed: Some(4) }
    );
    let mut progress = Vec::new();
    let done = download_complete(engine, &id, |d| progress.push(d["progress"].as_f64().unwrap()));
    assert!(progress.windows(2).all(|w| w[1] >= w[0]), "progress only grows: {progress:?}");
    assert!(progress[..progress.len() - 1].iter().all(|p| *p < 1.0) && *progress.last().unwrap() == 1.0, "100 % only at the end: {progress:?}");
    assert_eq!(done["resumes"], 1, "{done}");
    // 5 s went out; the GOP under way (from 4 s) was not written yet: the second INVITE asks
    // again from there.
    let Asked::Invite { name, start, end, .. } = next_asked(&s.asked, Duration::from_secs(1)) else { panic!("no second INVITE") };
    assert_eq!((name.as_str(), start - rec_start, end), ("Download", 4, rec_end));

    // The file: whole, decodable, served with ranges, removable.
    let url = assert_whole_download(engine, &done, rec_start, rec_end, "download");
    let (head, part) = http_get(engine.http, &url, &[("Range", "bytes=0-99")]);
    assert_eq!((status_of(&head), part.len()), (206, 100));
    let (_, list) = engine.request("GET", "/api/downloads", "");
    assert_eq!(list["downloads"].as_array().map(Vec::len), Some(1));
    assert_eq!(engine.request("DELETE", &format!("/api/downloads/{id}"), "").0, 200);
    assert_eq!(status_of(&http_get(engine.http, &url, &[]).0), 404);
    assert_eq!(engine.request("GET", &format!("/api/downloads/{id}"), "").0, 404);
    s.device_gone();
}

/// `kill -9` while a download runs: after the restart it is listed `interrupted` with its
/// file (cut to its whole fragments), and once the device is online again it goes on into the
/// same file from where that ends, and completes with every frame of the recording once.
#[test]
fn a_download_interrupted_by_kill_9_goes_on_into_its_file_after_the_restart() {
    let mut s = setup(DeviceOptions::default());
    let base = s.base;
    let (rec_start, rec_end) = recordings(base)[2];
    let body = format!("{{\"start\": {rec_start}, \"end\": {rec_end}, \"speed\": 2}}");
    let (status, d) = s.engine.request("POST", &format!("/api/devices/{DEVICE}/channels/{CHANNEL}/download"), &body);
    assert_eq!(status, 202, "{d}");
    let id = d["id"].as_str().unwrap().to_string();
    wait_for("some of it written", Duration::from_secs(20), || {
        let (_, d) = s.engine.request("GET", &format!("/api/downloads/{id}"), "");
        (d["media_ms"].as_u64() >= Some(3_000)).then_some(())
    });
    s.engine.crash_and_restart();
    let (_, d) = s.engine.request("GET", &format!("/api/downloads/{id}"), "");
    assert!(matches!(d["state"].as_str(), Some("interrupted" | "running")), "listed after the restart: {d}");
    assert_eq!(d["file"], format!("{id}.mp4"));
    let done = download_complete(&s.engine, &id, |_| {});
    assert!(done["resumes"].as_u64() >= Some(1), "{done}");
    let log = s.engine.log_text();
    assert!(log.contains("download interrupted by a restart; it goes on once its device is online") && log.contains("interrupted download goes on into its file"), "{log}");
    assert_whole_download(&s.engine, &done, rec_start, rec_end, "interrupted-download");
    s.quit.send(()).unwrap();
    s.device.join().unwrap();
}
