//! A simulated GB28181 device with four channels for end-to-end tests: it answers catalog
//! queries and, for each INVITE, sends the test clip (PS over UDP, the offered SSRC) to the
//! offered address until the call's BYE. A voice broadcast is answered and INVITEd for as
//! cameras do it, each channel its own way: the first two take raw PCMA over UDP, the third
//! over TCP (it listens, `a=setup:passive`), the fourth PS over UDP only. Loopback only; every
//! wait bounded.

use super::gb_sim::*;
use super::*;
use serde_json::Value;
use std::collections::HashMap;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

/// A camera with a microphone (listed by `registered_talking_device` only): its stream carries
/// the device's sound, a `DEVICE_SOUND_HZ` tone in G.711 A-law, beside the video.
pub const TALKING_CHANNEL: &str = "34020000001310000005";
pub const DEVICE_SOUND_HZ: u32 = 600;
/// A camera sending H.265 (`h265_clip`) with the same G.711 A-law sound as `TALKING_CHANNEL`
/// (listed by `registered_hevc_device` only).
pub const HEVC_CHANNEL: &str = "34020000001310000006";

pub const CHANNELS: [&str; 4] = ["34020000001310000001", "34020000001310000002", "34020000001310000003", "34020000001310000004"];

#[derive(Debug)]
pub enum DeviceEvent {
    /// INVITE for `channel` answered: media goes to `to`.
    Invited { channel: String, to: SocketAddr },
    Bye { channel: String },
    /// A DeviceControl with a PTZCmd for `channel` (the command's hex as sent).
    Ptz { channel: String, cmd: String },
    /// A DeviceControl asking `channel` for a keyframe (IFameCmd, or IFrameCmd of 2022).
    Keyframe { channel: String },
    /// A MANSRTSP INFO in a playback's dialog (its body).
    Info { body: String },
    /// A voice broadcast's INVITE (ours) was answered: the platform's SDP.
    BroadcastAnswered { sdp: String },
    /// An RTP packet of a voice broadcast to `channel`, as received: payload type, SSRC, payload.
    BroadcastRtp { channel: String, pt: u8, ssrc: u32, payload: Vec<u8> },
}

/// How a channel of the simulated device takes a voice broadcast's audio.
enum AudioIn {
    Udp(UdpSocket),
    /// It listens; the platform connects (RFC 4571 framing).
    Tcp(TcpListener),
}

impl AudioIn {
    /// Binds the way `channel` takes audio, with the SDP media lines that offer it.
    fn for_channel(channel: &str) -> (AudioIn, String) {
        if channel == CHANNELS[2] {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            (AudioIn::Tcp(l), format!("m=audio {port} TCP/RTP/AVP 8\r\na=setup:passive\r\na=connection:new\r\na=rtpmap:8 PCMA/8000\r\n"))
        } else if channel == CHANNELS[3] {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            let port = sock.local_addr().unwrap().port();
            (AudioIn::Udp(sock), format!("m=audio {port} RTP/AVP 96\r\na=rtpmap:96 PS/90000\r\n"))
        } else {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            let port = sock.local_addr().unwrap().port();
            (AudioIn::Udp(sock), format!("m=audio {port} RTP/AVP 8 96\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:96 PS/90000\r\n"))
        }
    }

    /// Takes the audio, each packet an event, until `done`.
    fn take(self, channel: String, done: Arc<AtomicBool>, events: mpsc::Sender<DeviceEvent>) {
        let packet = |b: &[u8]| {
            (b.len() > 12).then(|| DeviceEvent::BroadcastRtp { channel: channel.clone(), pt: b[1] & 0x7F, ssrc: u32::from_be_bytes([b[8], b[9], b[10], b[11]]), payload: b[12..].to_vec() })
        };
        let mut buf = [0u8; 2048];
        match self {
            AudioIn::Udp(sock) => {
                sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
                while !done.load(Ordering::SeqCst) {
                    if let Some(e) = sock.recv_from(&mut buf).ok().and_then(|(n, _)| packet(&buf[..n])) {
                        let _ = events.send(e);
                    }
                }
            }
            AudioIn::Tcp(listener) => {
                listener.set_nonblocking(true).unwrap();
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                let mut conn = loop {
                    match listener.accept() {
                        Ok((c, _)) => break c,
                        Err(_) if std::time::Instant::now() < deadline && !done.load(Ordering::SeqCst) => std::thread::sleep(Duration::from_millis(20)),
                        Err(_) => return,
                    }
                };
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
                let mut pending = Vec::new();
                while !done.load(Ordering::SeqCst) {
                    match conn.read(&mut buf) {
                        Ok(0) => return,
                        Ok(n) => pending.extend_from_slice(&buf[..n]),
                        Err(_) => continue,
                    }
                    // RFC 4571: a 16-bit length before each packet.
                    while pending.len() >= 2 {
                        let len = usize::from(u16::from_be_bytes([pending[0], pending[1]]));
                        if pending.len() < 2 + len {
                            break;
                        }
                        if let Some(e) = packet(&pending[2..2 + len]) {
                            let _ = events.send(e);
                        }
                        pending.drain(..2 + len);
                    }
                }
            }
        }
    }
}

pub fn catalog(sn: &str) -> Vec<u8> {
    catalog_of(sn, &default_channels())
}

/// The four channels, named "cam {id}".
pub fn default_channels() -> Vec<(String, String)> {
    CHANNELS.iter().map(|id| (id.to_string(), format!("cam {id}"))).collect()
}

/// A catalog answer listing `channels` (id, name), GB2312-encoded as cameras send it.
pub fn catalog_of(sn: &str, channels: &[(String, String)]) -> Vec<u8> {
    let items: String = channels
        .iter()
        .map(|(id, name)| format!("<Item>\r\n<DeviceID>{id}</DeviceID>\r\n<Name>{name}</Name>\r\n<Status>ON</Status>\r\n<ParentID>{DEVICE}</ParentID>\r\n</Item>\r\n"))
        .collect();
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Response>\r\n<CmdType>Catalog</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{DEVICE}</DeviceID>\r\n<SumNum>{}</SumNum>\r\n<DeviceList Num=\"{}\">\r\n{items}</DeviceList>\r\n</Response>\r\n",
        channels.len(),
        channels.len()
    );
    encoding_rs::GB18030.encode(&xml).0.into_owned()
}

/// A device with four channels: each INVITE starts a sender looping the clip (PS over UDP, the
/// SSRC offered) to the address and port of the offer, until the BYE of its call; for a
/// download (`s=Download`) the clip goes once, then the device says the file ended
/// (MediaStatus 121).
pub fn run_device(sim: Sim, events: mpsc::Sender<DeviceEvent>, stop: Arc<AtomicBool>) {
    run_device_with(sim, events, stop, default_channels())
}

/// `run_device` with other channels (id, name) in its catalog.
pub fn run_device_with(mut sim: Sim, events: mpsc::Sender<DeviceEvent>, stop: Arc<AtomicBool>, channels: Vec<(String, String)>) {
    let frames = h264_frames();
    let mut senders: HashMap<String, (String, Arc<AtomicBool>)> = HashMap::new();
    let (ended_tx, ended) = mpsc::channel::<String>();
    // Voice broadcast INVITEs of ours awaiting their answers: Call-ID → (channel, audio in).
    let mut broadcast_invites: HashMap<String, (String, AudioIn)> = HashMap::new();
    while !stop.load(Ordering::SeqCst) {
        for channel in ended.try_iter() {
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Notify>\r\n<CmdType>MediaStatus</CmdType>\r\n<SN>121</SN>\r\n<DeviceID>{channel}</DeviceID>\r\n<NotifyType>121</NotifyType>\r\n</Notify>\r\n"
            );
            let m = sim.request("MESSAGE", &format!("ms-{channel}-{}", sim.cseq), "", Some("Application/MANSCDP+xml"), body.as_bytes());
            sim.send(&m);
        }
        let Some(msg) = sim.recv(Duration::from_millis(100)) else { continue };
        if !msg.is_request() {
            // The answer to a broadcast INVITE: ACK, then take the audio until the BYE.
            let call = msg.call_id().unwrap_or_default().to_string();
            // (a provisional answer, 100 Trying, leaves it waiting)
            let answered = if msg.status() == Some(200) { broadcast_invites.remove(&call) } else { None };
            if let Some((channel, audio)) = answered {
                let ack = sim.request("ACK", &call, "", None, b"");
                sim.send(&ack);
                events.send(DeviceEvent::BroadcastAnswered { sdp: String::from_utf8_lossy(msg.body()).to_string() }).unwrap();
                let flag = Arc::new(AtomicBool::new(false));
                let (done, events, ch) = (flag.clone(), events.clone(), channel.clone());
                std::thread::spawn(move || audio.take(ch, done, events));
                senders.insert(call, (channel, flag));
            }
            continue;
        }
        match msg.method().map(|m| m.to_string()).as_deref() {
            Some("MESSAGE") => {
                sim.reply(&msg, 200, "OK", "", None);
                let text = String::from_utf8_lossy(msg.body()).to_string();
                if ["IFameCmd", "IFrameCmd"].iter().any(|e| gmv::proto::sip::manscdp::element(&text, e).is_some()) {
                    let channel = gmv::proto::sip::manscdp::element(&text, "DeviceID").unwrap_or_default().to_string();
                    let _ = events.send(DeviceEvent::Keyframe { channel });
                }
                if let Some(cmd) = gmv::proto::sip::manscdp::element(&text, "PTZCmd") {
                    let channel = gmv::proto::sip::manscdp::element(&text, "DeviceID").unwrap_or_default().to_string();
                    events.send(DeviceEvent::Ptz { channel, cmd: cmd.trim().to_string() }).unwrap();
                }
                if text.contains("<CmdType>RecordInfo</CmdType>") {
                    // One recording over exactly the range asked.
                    let field = |tag: &str| gmv::proto::sip::manscdp::element(&text, tag).unwrap_or_default().trim().to_string();
                    let (sn, channel) = (field("SN"), field("DeviceID"));
                    let body = format!(
                        "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Response>\r\n<CmdType>RecordInfo</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{channel}</DeviceID>\r\n<SumNum>1</SumNum>\r\n<RecordList Num=\"1\">\r\n<Item>\r\n<DeviceID>{channel}</DeviceID>\r\n<Name>cam</Name>\r\n<StartTime>{}</StartTime>\r\n<EndTime>{}</EndTime>\r\n<Secrecy>0</Secrecy>\r\n<Type>time</Type>\r\n</Item>\r\n</RecordList>\r\n</Response>\r\n",
                        field("StartTime"),
                        field("EndTime")
                    );
                    let m = sim.request("MESSAGE", &format!("rec-{sn}"), "", Some("Application/MANSCDP+xml"), body.as_bytes());
                    sim.send(&m);
                }
                if text.contains("<CmdType>Broadcast</CmdType>") {
                    // Voice broadcast: OK in a Response, then our INVITE for the audio (as
                    // cameras do it to wvp: Subject naming the channel, recvonly, PCMA or PS).
                    let field = |tag: &str| gmv::proto::sip::manscdp::element(&text, tag).unwrap_or_default().trim().to_string();
                    let (sn, source, channel) = (field("SN"), field("SourceID"), field("TargetID"));
                    let body = format!(
                        "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Response>\r\n<CmdType>Broadcast</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{channel}</DeviceID>\r\n<Result>OK</Result>\r\n</Response>\r\n"
                    );
                    let m = sim.request("MESSAGE", &format!("bc-resp-{sn}"), "", Some("Application/MANSCDP+xml"), body.as_bytes());
                    sim.send(&m);
                    let (audio, media) = AudioIn::for_channel(&channel);
                    let sdp = format!(
                        "v=0\r\no={channel} 0 0 IN IP4 127.0.0.1\r\ns=Play\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n{media}a=recvonly\r\ny=0100000123\r\nf=v/////a/1/8/1\r\n"
                    );
                    let call = format!("bc-invite-{sn}");
                    let invite = sim.request("INVITE", &call, &format!("Subject: {source}:0,{channel}:0\r\n"), Some("Application/SDP"), sdp.as_bytes());
                    sim.send(&invite);
                    broadcast_invites.insert(call, (channel, audio));
                }
                if text.contains("<CmdType>Catalog</CmdType>") {
                    let sn = gmv::proto::sip::manscdp::element(&text, "SN").unwrap_or("1").to_string();
                    let m = sim.request("MESSAGE", &format!("cat-{sn}"), "", Some("Application/MANSCDP+xml"), &catalog_of(&sn, &channels));
                    sim.send(&m);
                }
            }
            Some("INVITE") => {
                let offer = gmv::proto::sdp::Sdp::parse(msg.body()).unwrap();
                let channel = msg.header("Subject").unwrap_or_default().split(':').next().unwrap_or("").to_string();
                let ip = offer.connection.as_deref().and_then(|c| c.split_whitespace().last()).unwrap_or("127.0.0.1").to_string();
                let to: SocketAddr = format!("{ip}:{}", offer.media[0].port).parse().unwrap();
                let ssrc: u32 = offer.gb_ssrc.clone().and_then(|s| s.parse().ok()).unwrap_or(1);
                let download = String::from_utf8_lossy(msg.body()).contains("s=Download");
                let name = if download { "Download" } else { "Play" };
                let answer = format!(
                    "v=0\r\no={channel} 0 0 IN IP4 127.0.0.1\r\ns={name}\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=video 15060 RTP/AVP 96\r\na=sendonly\r\na=rtpmap:96 PS/90000\r\ny={ssrc:010}\r\nf=\r\n"
                );
                sim.reply(&msg, 200, "OK", &format!("Contact: <sip:{channel}@{}>\r\n", sim.local()), Some(("Application/SDP", answer.as_bytes())));
                let flag = Arc::new(AtomicBool::new(false));
                let clip = match channel == TALKING_CHANNEL {
                    true => gmv::sim::interleave(frames.clone(), gmv::sim::g711_frames(gmv::proto::frame::Codec::Pcma, &std::fs::read(device_sound_clip()).unwrap(), 1000 / FPS)),
                    false if channel == HEVC_CHANNEL => hevc_talking_clip(),
                    false => frames.clone(),
                };
                let is_video: Vec<bool> = clip.iter().map(|f| f.codec.is_video()).collect();
                let (packets, done) = (gmv::sim::ps_rtp_packets(&clip, ssrc), flag.clone());
                let (ended_tx, ended_channel) = (ended_tx.clone(), channel.clone());
                std::thread::spawn(move || {
                    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
                    while !done.load(Ordering::SeqCst) {
                        for (frame, video) in packets.iter().zip(&is_video) {
                            for p in frame {
                                let _ = sock.send_to(p, to);
                            }
                            // A frame time after each picture (the sound's frames are as long).
                            if !video {
                                continue;
                            }
                            std::thread::sleep(Duration::from_millis(1000 / u64::from(FPS)));
                            if done.load(Ordering::SeqCst) {
                                return;
                            }
                        }
                        if download {
                            let _ = ended_tx.send(ended_channel);
                            return;
                        }
                    }
                });
                senders.insert(msg.call_id().unwrap_or_default(), (channel.clone(), flag));
                events.send(DeviceEvent::Invited { channel, to }).unwrap();
            }
            Some("BYE") => {
                sim.reply(&msg, 200, "OK", "", None);
                if let Some((channel, flag)) = senders.remove(&msg.call_id().unwrap_or_default()) {
                    flag.store(true, Ordering::SeqCst);
                    events.send(DeviceEvent::Bye { channel }).unwrap();
                }
            }
            Some("INFO") => {
                sim.reply(&msg, 200, "OK", "", None);
                events.send(DeviceEvent::Info { body: String::from_utf8_lossy(msg.body()).to_string() }).unwrap();
            }
            _ => sim.reply(&msg, 200, "OK", "", None),
        }
    }
    for (_, (_, flag)) in senders {
        flag.store(true, Ordering::SeqCst);
    }
}

/// Plays `channel` through the control's API: the session, with play URLs on its node.
pub fn play(control: &Engine, channel: &str) -> Value {
    let (status, session) = control.request("POST", &format!("/api/devices/{DEVICE}/channels/{channel}/play"), "{}");
    assert_eq!(status, 200, "{session}");
    session
}

/// Fetches an FLV URL for a while: its bytes, which must hold a keyframe.
pub fn watch(url: &str, out: &str) -> Vec<u8> {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let file = work_dir().join(out);
    let (status, _) = spawn_viewer(host.parse().unwrap(), format!("/{path}"), vec![], file.clone(), Duration::from_secs(2)).join().unwrap();
    assert_eq!(status, 200, "{url}");
    let flv = std::fs::read(file).unwrap();
    assert!(flv.starts_with(b"FLV") && flv_tags(&flv).iter().any(|(kind, _, data)| *kind == 9 && data.first() == Some(&0x17)), "{url}: {} bytes, no keyframe", flv.len());
    flv
}

/// The simulated device registered to the control, its catalog taken: its events, what stops
/// it, its thread.
/// `registered_device` with `TALKING_CHANNEL` beside the four.
pub fn registered_talking_device(control: &Engine) -> (mpsc::Receiver<DeviceEvent>, Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    registered_with(control, &[(TALKING_CHANNEL, "talking cam")])
}

/// `registered_device` with `TALKING_CHANNEL` and `HEVC_CHANNEL` beside the four.
pub fn registered_hevc_device(control: &Engine) -> (mpsc::Receiver<DeviceEvent>, Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    registered_with(control, &[(TALKING_CHANNEL, "talking cam"), (HEVC_CHANNEL, "hevc cam")])
}

/// The device registered with `extra` channels (id, name) beside the four, its catalog taken.
fn registered_with(control: &Engine, extra: &[(&str, &str)]) -> (mpsc::Receiver<DeviceEvent>, Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let mut sim = Sim::new(control.sip);
    assert_eq!(sim.register(PASSWORD, 3600).0, 200);
    let (events_tx, events) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let mut channels = default_channels();
    channels.extend(extra.iter().map(|(id, name)| (id.to_string(), name.to_string())));
    let n = channels.len();
    let device = {
        let stop = stop.clone();
        std::thread::spawn(move || run_device_with(sim, events_tx, stop, channels))
    };
    wait_for("catalog", Duration::from_secs(15), || {
        let (_, v) = control.request("GET", &format!("/api/devices/{DEVICE}/channels"), "");
        (v["channels"].as_array().map(Vec::len) == Some(n)).then_some(())
    });
    (events, stop, device)
}

/// `HEVC_CHANNEL`'s clip: the H.265 test pattern with the device's G.711 A-law sound.
fn hevc_talking_clip() -> Vec<gmv::proto::frame::Frame> {
    use gmv::proto::frame::Codec;
    let video = gmv::sim::frames_from_es(Codec::H265, &std::fs::read(h265_clip()).unwrap(), FPS);
    gmv::sim::interleave(video, gmv::sim::g711_frames(Codec::Pcma, &std::fs::read(device_sound_clip()).unwrap(), 1000 / FPS))
}

pub fn registered_device(control: &Engine) -> (mpsc::Receiver<DeviceEvent>, Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let (events, stop, device, _) = registered_device_and_sender(control);
    (events, stop, device)
}

/// `registered_device`, and a sender on the device's own socket for requests of the test's
/// (an alarm: the platform knows the device by that address); answers to them go to the
/// device's thread, which drops them.
pub fn registered_device_and_sender(control: &Engine) -> (mpsc::Receiver<DeviceEvent>, Arc<AtomicBool>, std::thread::JoinHandle<()>, Sim) {
    let mut sim = Sim::new(control.sip);
    assert_eq!(sim.register(PASSWORD, 3600).0, 200);
    let sender = Sim { sock: sim.sock.try_clone().unwrap(), server: sim.server, cseq: 1000 };
    let (events_tx, events) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let device = {
        let stop = stop.clone();
        std::thread::spawn(move || run_device(sim, events_tx, stop))
    };
    wait_for("catalog", Duration::from_secs(15), || {
        let (_, v) = control.request("GET", &format!("/api/devices/{DEVICE}/channels"), "");
        (v["channels"].as_array().map(Vec::len) == Some(CHANNELS.len())).then_some(())
    });
    (events, stop, device, sender)
}

pub fn next_event(events: &mpsc::Receiver<DeviceEvent>) -> DeviceEvent {
    events.recv_timeout(Duration::from_secs(30)).expect("a device event")
}


/// Now, in unix ms (to compare with the times the engine reports).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A device's Alarm notification for `channel` (a MANSCDP body, to send in a MESSAGE).
pub fn alarm_message(sn: u32, channel: &str) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Notify>\r\n<CmdType>Alarm</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{channel}</DeviceID>\r\n<AlarmPriority>1</AlarmPriority>\r\n<AlarmMethod>5</AlarmMethod>\r\n<AlarmTime>2026-12-06T10:00:00</AlarmTime>\r\n<AlarmDescription>Motion at the gate</AlarmDescription>\r\n</Notify>\r\n"
    )
    .into_bytes()
}
