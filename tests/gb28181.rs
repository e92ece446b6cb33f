//! GB28181 end to end with a simulated device (pure Rust, loopback): digest REGISTER,
//! keepalive, Catalog in GB2312 split over two MESSAGEs, INVITE answered with another SSRC,
//! PS over RTP from an ffmpeg clip, HTTP-FLV checked by ffprobe, BYE, registry persistence.

mod common;

use common::*;
use gmv::proto::frame::Codec;
use gmv::proto::sip::{SipMsg, digest, parse};
use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const DEVICE: &str = "34020000001320000001";
const DOMAIN: &str = "3402000000";
const SERVER: &str = "34020000002000000001";
const PASSWORD: &str = "12345678";
const DEVICE_SSRC: u32 = 100_009_999;
const CHANNELS: [(&str, &str); 3] =
    [("34020000001310000001", "前门摄像机"), ("34020000001310000002", "后院"), ("34020000001310000003", "车库 & 仓库")];

struct Sim {
    sock: UdpSocket,
    server: SocketAddr,
    cseq: u32,
}

impl Sim {
    fn new(server: SocketAddr) -> Sim {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        Sim { sock, server, cseq: 0 }
    }

    fn local(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    fn send(&self, text: &[u8]) {
        self.sock.send_to(text, self.server).unwrap();
    }

    fn recv(&self, limit: Duration) -> Option<SipMsg> {
        let deadline = Instant::now() + limit;
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline {
            if let Ok((n, _)) = self.sock.recv_from(&mut buf) {
                return Some(parse(&buf[..n]).expect("engine sent valid SIP"));
            }
        }
        None
    }

    /// The next response, skipping requests the engine sends meanwhile (its queries).
    fn recv_response(&self, limit: Duration) -> Option<SipMsg> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            match self.recv(deadline - Instant::now()) {
                Some(m) if !m.is_request() => return Some(m),
                Some(_) => continue,
                None => return None,
            }
        }
        None
    }

    fn request(&mut self, method: &str, call_id: &str, extra: &str, content_type: Option<&str>, body: &[u8]) -> Vec<u8> {
        self.cseq += 1;
        let local = self.local();
        let mut head = format!(
            "{method} sip:{SERVER}@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {local};rport;branch=z9hG4bK{}{}\r\nFrom: <sip:{DEVICE}@{DOMAIN}>;tag=dev{}\r\nTo: <sip:{SERVER}@{DOMAIN}>\r\nCall-ID: {call_id}\r\nCSeq: {} {method}\r\nContact: <sip:{DEVICE}@{local}>\r\nMax-Forwards: 70\r\nUser-Agent: IP Camera\r\n{extra}",
            self.cseq,
            call_id.len(),
            self.cseq,
            self.cseq
        );
        if let Some(ct) = content_type {
            head.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut out = head.into_bytes();
        out.extend_from_slice(body);
        out
    }

    /// REGISTER, answer the challenge with `password`; returns the final status and the 200's Date.
    fn register(&mut self, password: &str, expires: u32) -> (u16, Option<String>) {
        let call_id = format!("reg-{}", self.local().port());
        let first = self.request("REGISTER", &call_id, &format!("Expires: {expires}\r\n"), None, b"");
        self.send(&first);
        let mut resp = self.recv_response(Duration::from_secs(5)).expect("answer to REGISTER");
        for _ in 0..5 {
            if resp.status() != Some(401) {
                break;
            }
            let www = resp.header("WWW-Authenticate").expect("challenge");
            let param = |k: &str| {
                www.split(',')
                    .find_map(|p| p.trim().trim_start_matches("Digest ").strip_prefix(&format!("{k}=")).map(|v| v.trim_matches('"').to_string()))
                    .unwrap()
            };
            let (realm, nonce) = (param("realm"), param("nonce"));
            let uri = format!("sip:{SERVER}@{DOMAIN}");
            let response = digest::client_response(DEVICE, &realm, password, "REGISTER", &uri, &nonce, None);
            let auth = format!(
                "Authorization: Digest username=\"{DEVICE}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm=MD5\r\nExpires: {expires}\r\n"
            );
            let again = self.request("REGISTER", &call_id, &auth, None, b"");
            self.send(&again);
            resp = self.recv_response(Duration::from_secs(5)).expect("answer to authorised REGISTER");
        }
        (resp.status().unwrap_or(0), resp.header("Date"))
    }

    fn reply(&self, req: &SipMsg, code: u16, reason: &str, extra: &str, body: Option<(&str, &[u8])>) {
        let mut head = format!("SIP/2.0 {code} {reason}\r\n");
        for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
            let v = req.header(name).unwrap();
            if name == "To" && code > 100 && !v.contains("tag=") {
                head.push_str(&format!("To: {v};tag=devtag\r\n"));
            } else {
                head.push_str(&format!("{name}: {v}\r\n"));
            }
        }
        head.push_str(extra);
        let mut out = match body {
            // Hikvision style: capitalised type, padded length.
            Some((ct, b)) => format!("{head}Content-Type: {ct}\r\nContent-Length:   {}\r\n\r\n", b.len()).into_bytes(),
            None => format!("{head}Content-Length: 0\r\n\r\n").into_bytes(),
        };
        if let Some((_, b)) = body {
            out.extend_from_slice(b);
        }
        self.send(&out);
    }
}

fn gb2312(text: &str) -> Vec<u8> {
    encoding_rs::GB18030.encode(text).0.into_owned()
}

fn catalog_body(sn: &str, items: &[(&str, &str)]) -> Vec<u8> {
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Response>\r\n<CmdType>Catalog</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{DEVICE}</DeviceID>\r\n<SumNum>3</SumNum>\r\n<DeviceList Num=\"{}\">\r\n",
        items.len()
    );
    for (id, name) in items {
        let name = name.replace('&', "&amp;");
        xml.push_str(&format!("<Item>\r\n<DeviceID>{id}</DeviceID>\r\n<Name>{name}</Name>\r\n<Manufacturer>Hikvision</Manufacturer>\r\n<Status>ON</Status>\r\n<ParentID>{DEVICE}</ParentID>\r\n</Item>\r\n"));
    }
    xml.push_str("</DeviceList>\r\n</Response>\r\n");
    gb2312(&xml)
}

enum Event {
    Invited { port: u16 },
    Bye,
}

/// The device's main loop: answers queries and INVITE, pushes media when told, ends on BYE.
fn run_device(mut sim: Sim, events: mpsc::Sender<Event>, go: mpsc::Receiver<()>, limit: Duration) {
    let deadline = Instant::now() + limit;
    let frames = gmv::sim::frames_from_es(Codec::H264, &std::fs::read(h264_clip()).unwrap(), FPS);
    let packets = gmv::sim::ps_rtp_packets(&frames, DEVICE_SSRC);
    let mut media_port = None;
    // TCP active: the platform connects to this listener of ours.
    let mut tcp_listener: Option<std::net::TcpListener> = None;
    while Instant::now() < deadline {
        let Some(msg) = sim.recv(Duration::from_millis(100)) else {
            if let (Some(port), Ok(())) = (media_port, go.try_recv()) {
                if let Some(listener) = tcp_listener.take() {
                    use std::io::Write;
                    let (mut conn, _) = listener.accept().expect("the engine connects for TCP active");
                    for frame in &packets {
                        for p in frame {
                            conn.write_all(&gmv::sim::rfc4571(p)).unwrap();
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                } else {
                    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
                    for frame in &packets {
                        for p in frame {
                            rtp.send_to(p, ("127.0.0.1", port)).unwrap();
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
            }
            continue;
        };
        if !msg.is_request() {
            continue; // 200s to our MESSAGEs
        }
        match msg.method().map(|m| m.to_string()).as_deref() {
            Some("MESSAGE") => {
                sim.reply(&msg, 200, "OK", "", None);
                let text = String::from_utf8_lossy(msg.body()).to_string();
                let sn = gmv::proto::sip::manscdp::element(&text, "SN").unwrap_or("1").to_string();
                let call = |n: &str| format!("{n}-{sn}");
                if text.contains("<CmdType>Catalog</CmdType>") {
                    // Split as NVRs do: SumNum 3 over two MESSAGEs.
                    for (i, part) in [&CHANNELS[..2], &CHANNELS[2..]].iter().enumerate() {
                        let m = sim.request("MESSAGE", &call(&format!("cat{i}")), "", Some("Application/MANSCDP+xml"), &catalog_body(&sn, part));
                        sim.send(&m);
                    }
                } else if text.contains("<CmdType>DeviceInfo</CmdType>") {
                    let body = format!(
                        "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Response>\r\n<CmdType>DeviceInfo</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{DEVICE}</DeviceID>\r\n<DeviceName>IPC</DeviceName>\r\n<Manufacturer>Hikvision</Manufacturer>\r\n<Model>DS-2CD</Model>\r\n<Firmware>V5.5</Firmware>\r\n<Channel>3</Channel>\r\n</Response>\r\n"
                    );
                    let m = sim.request("MESSAGE", &call("info"), "", Some("Application/MANSCDP+xml"), body.as_bytes());
                    sim.send(&m);
                }
            }
            Some("INVITE") => {
                let offer = gmv::proto::sdp::Sdp::parse(msg.body()).unwrap();
                assert_eq!(offer.session_name.as_deref(), Some("Play"));
                let port = offer.media[0].port;
                sim.reply(&msg, 100, "Trying", "", None);
                let media = if offer.media[0].setup.as_deref() == Some("active") {
                    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                    let m = format!("m=video {} TCP/RTP/AVP 96\r\na=setup:passive\r\na=connection:new\r\n", l.local_addr().unwrap().port());
                    tcp_listener = Some(l);
                    m
                } else {
                    "m=video 15060 RTP/AVP 96\r\n".to_string()
                };
                let answer = format!(
                    "v=0\r\no={DEVICE} 0 0 IN IP4 127.0.0.1\r\ns=Play\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n{media}a=sendonly\r\na=rtpmap:96 PS/90000\r\ny={DEVICE_SSRC:010}\r\nf=\r\n"
                );
                sim.reply(&msg, 200, "OK", &format!("Contact: <sip:{DEVICE}@{}>\r\n", sim.local()), Some(("Application/SDP", answer.as_bytes())));
                media_port = Some(port);
            }
            Some("ACK") => {
                events.send(Event::Invited { port: media_port.unwrap() }).unwrap();
            }
            Some("BYE") => {
                sim.reply(&msg, 200, "OK", "", None);
                events.send(Event::Bye).unwrap();
                return;
            }
            _ => sim.reply(&msg, 200, "OK", "", None),
        }
    }
}

/// A simulated device registered and serving (queries, INVITE, media on `go`), with its
/// catalog of three channels received by the engine.
fn registered_device(engine: &Engine) -> (mpsc::Receiver<Event>, mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let mut sim = Sim::new(engine.sip);
    assert_eq!(sim.register(PASSWORD, 3600).0, 200);
    let (events_tx, events) = mpsc::channel();
    let (go_tx, go) = mpsc::channel();
    let device = std::thread::spawn(move || run_device(sim, events_tx, go, Duration::from_secs(60)));
    wait_for("catalog", Duration::from_secs(15), || {
        let (_, v) = engine.request("GET", &format!("/api/devices/{DEVICE}/channels"), "");
        (v["channels"].as_array().map(Vec::len) == Some(3)).then_some(())
    });
    (events, go_tx, device)
}

fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(v) = f() {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn device_registers_lists_channels_and_plays_over_flv() {
    let engine = Engine::start(2, "");
    let mut sim = Sim::new(engine.sip);
    let (status, date) = sim.register(PASSWORD, 3600);
    assert_eq!(status, 200);
    let date = date.expect("Date header for device time sync");
    assert!(date.len() == 23 && date.as_bytes()[10] == b'T', "{date}");
    let keepalive = format!(
        "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<SN>1</SN>\r\n<DeviceID>{DEVICE}</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n"
    );
    let m = sim.request("MESSAGE", "ka-1", "", Some("application/MANSCDP+XML"), keepalive.as_bytes());
    sim.send(&m);

    let (events_tx, events) = mpsc::channel();
    let (go_tx, go) = mpsc::channel();
    let device = std::thread::spawn(move || run_device(sim, events_tx, go, Duration::from_secs(60)));

    let channels = wait_for("catalog", Duration::from_secs(15), || {
        let (status, v) = engine.request("GET", &format!("/api/devices/{DEVICE}/channels"), "");
        (status == 200 && v["channels"].as_array().is_some_and(|c| c.len() == 3)).then_some(v)
    });
    let names: Vec<&str> = channels["channels"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, CHANNELS.iter().map(|c| c.1).collect::<Vec<_>>(), "GB2312 names decoded, both MESSAGEs merged");
    let (_, devices) = engine.request("GET", "/api/devices", "");
    let d = &devices["devices"][0];
    assert_eq!((d["device_id"].as_str(), d["online"].as_bool()), (Some(DEVICE), Some(true)));
    wait_for("device info", Duration::from_secs(5), || {
        let (_, v) = engine.request("GET", &format!("/api/devices/{DEVICE}"), "");
        (v["info"]["manufacturer"] == "Hikvision").then_some(())
    });

    let channel = CHANNELS[0].0;
    let (status, session) = engine.request("POST", &format!("/api/devices/{DEVICE}/channels/{channel}/play"), "{}");
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["device_ssrc"], DEVICE_SSRC, "learned from the 200 OK y= line");
    let stream_id = session["stream_id"].as_str().unwrap().to_string();
    assert!(stream_id.starts_with("0200000"), "GB SSRC from the domain: {stream_id}");
    let Ok(Event::Invited { port }) = events.recv_timeout(Duration::from_secs(10)) else { panic!("no INVITE/ACK") };
    assert_eq!(engine.stream(&stream_id)["port"], port, "the INVITE offered the stream's own port");
    // Asking again returns the same session, no second INVITE.
    let (_, again) = engine.request("POST", &format!("/api/devices/{DEVICE}/channels/{channel}/play"), "{}");
    assert_eq!(again["stream_id"], session["stream_id"]);

    let out = work_dir().join("gb28181.flv");
    let url = session["play"]["flv"].as_str().unwrap();
    let path = url.split_once(&engine.http.to_string()).unwrap().1.to_string();
    let viewer = spawn_viewer(engine.http, path, vec![], out.clone(), Duration::from_secs(30));
    engine.wait_subscribers(&stream_id, 1);
    go_tx.send(()).unwrap();
    wait_for("all frames", Duration::from_secs(15), || (engine.stream(&stream_id)["frames"].as_u64() >= Some(CLIP_FRAMES as u64 - 1)).then_some(()));
    std::thread::sleep(Duration::from_millis(300));

    let (status, _) = engine.request("POST", &format!("/api/devices/{DEVICE}/channels/{channel}/stop"), "");
    assert_eq!(status, 200);
    assert!(matches!(events.recv_timeout(Duration::from_secs(10)), Ok(Event::Bye)), "device got BYE");
    viewer.join().unwrap();
    device.join().unwrap();
    assert_eq!(engine.request("POST", &format!("/api/devices/{DEVICE}/channels/{channel}/stop"), "").0, 404);
    assert_eq!(ffprobe(&out), Probe { codec: "h264".into(), width: WIDTH, height: HEIGHT, frames: CLIP_FRAMES });
    assert_eq!(engine.request("GET", "/api/sessions", "").1["sessions"].as_array().map(Vec::len), Some(0));

    // The registry outlives a restart: the device and its channels come back (offline).
    let data_dir = engine.data_dir.clone();
    drop(engine);
    let engine = Engine::start_with(1, "", "", Some(data_dir));
    let (_, v) = engine.request("GET", &format!("/api/devices/{DEVICE}"), "");
    assert_eq!((v["online"].as_bool(), v["channel_count"].as_u64()), (Some(false), Some(3)), "{v}");
}

/// A viewer opening a channel's URL starts the INVITE itself; the stream stops (BYE) once
/// nobody watches for `no_viewer_stop_s`.
#[test]
fn play_on_demand_and_stop_without_viewers() {
    let engine = Engine::start_with(2, "", "  no_viewer_stop_s: 1\n", None);
    let (events, go_tx, device) = registered_device(&engine);
    let channel = CHANNELS[1].0;
    assert_eq!(engine.try_request("GET", &format!("/flv/gb/{DEVICE}/{channel}/wrong"), &[], b"").unwrap().0, 401);
    assert_eq!(engine.try_request("GET", &format!("/flv/gb/{DEVICE}/nochannel/{TOKEN}"), &[], b"").unwrap().0, 404);

    let out = work_dir().join("on-demand.flv");
    // This viewer hangs up after 8 s, well after the clip has played.
    let viewer = spawn_viewer(engine.http, format!("/flv/gb/{DEVICE}/{channel}/{TOKEN}"), vec![], out.clone(), Duration::from_secs(8));
    let Ok(Event::Invited { .. }) = events.recv_timeout(Duration::from_secs(10)) else { panic!("viewer did not cause an INVITE") };
    let (_, sessions) = engine.request("GET", "/api/sessions", "");
    let stream_id = sessions["sessions"][0]["stream_id"].as_str().unwrap().to_string();
    engine.wait_subscribers(&stream_id, 1);
    go_tx.send(()).unwrap();
    wait_for("frames", Duration::from_secs(15), || (engine.stream(&stream_id)["frames"].as_u64() >= Some(CLIP_FRAMES as u64 - 1)).then_some(()));
    let (status, _) = viewer.join().unwrap();
    assert_eq!(status, 200);
    // The viewer left while the stream is quiet: after no_viewer_stop_s and a session check, BYE.
    assert!(matches!(events.recv_timeout(Duration::from_secs(20)), Ok(Event::Bye)), "no BYE after the viewer left");
    device.join().unwrap();
    assert_eq!(ffprobe(&out).frames, CLIP_FRAMES);
}

/// TCP active media: the platform connects to the port in the device's answer.
#[test]
fn tcp_active_media_plays() {
    let engine = Engine::start(2, "");
    let (events, go_tx, device) = registered_device(&engine);
    let channel = CHANNELS[2].0;
    let (status, v) = engine.request("POST", &format!("/api/devices/{DEVICE}/channels/{channel}/play"), r#"{"transport": "carrier-pigeon"}"#);
    assert_eq!(status, 400, "{v}");
    let (status, session) = engine.request("POST", &format!("/api/devices/{DEVICE}/channels/{channel}/play"), r#"{"transport": "tcp-active"}"#);
    assert_eq!((status, session["transport"].as_str()), (200, Some("tcp-active")), "{session}");
    let stream_id = session["stream_id"].as_str().unwrap().to_string();
    let Ok(Event::Invited { .. }) = events.recv_timeout(Duration::from_secs(10)) else { panic!("no INVITE/ACK") };
    let out = work_dir().join("tcp-active.flv");
    let viewer = spawn_viewer(engine.http, format!("/flv/{stream_id}/{TOKEN}"), vec![], out.clone(), Duration::from_secs(30));
    engine.wait_subscribers(&stream_id, 1);
    go_tx.send(()).unwrap();
    wait_for("frames", Duration::from_secs(15), || (engine.stream(&stream_id)["frames"].as_u64() >= Some(CLIP_FRAMES as u64 - 1)).then_some(()));
    assert_eq!(engine.stream(&stream_id)["transport"], "tcp");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(engine.request("POST", &format!("/api/devices/{DEVICE}/channels/{channel}/stop"), "").0, 200);
    assert!(matches!(events.recv_timeout(Duration::from_secs(10)), Ok(Event::Bye)));
    viewer.join().unwrap();
    device.join().unwrap();
    assert_eq!(ffprobe(&out), Probe { codec: "h264".into(), width: WIDTH, height: HEIGHT, frames: CLIP_FRAMES });
}

#[test]
fn sip_over_tcp_registers_and_queries_come_back_on_the_connection() {
    use std::io::{Read, Write};
    let engine = Engine::start_with(1, "", "  digest_qop: true\n", None);
    let mut conn = std::net::TcpStream::connect(engine.sip).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let local = conn.local_addr().unwrap();
    let mut framer = gmv::proto::sip::StreamFramer::default();
    let mut next = |conn: &mut std::net::TcpStream| -> SipMsg {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(m) = framer.next_message().unwrap() {
                return parse(&m).unwrap();
            }
            let n = conn.read(&mut buf).expect("engine answers over TCP");
            assert!(n > 0, "engine closed the connection");
            framer.push(&buf[..n]);
        }
    };
    let register = |auth: &str, cseq: u32| {
        format!(
            "REGISTER sip:{SERVER}@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/TCP {local};rport;branch=z9hG4bKt{cseq}\r\nFrom: <sip:{DEVICE}@{DOMAIN}>;tag=t1\r\nTo: <sip:{DEVICE}@{DOMAIN}>\r\nCall-ID: tcp-reg\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{DEVICE}@{local};transport=tcp>\r\n{auth}Expires: 3600\r\nContent-Length: 0\r\n\r\n"
        )
    };
    // Two messages in one write, with a CRLF keep-alive in front: framing must cope.
    conn.write_all(format!("\r\n\r\n{}", register("", 1)).as_bytes()).unwrap();
    let challenge = next(&mut conn);
    assert_eq!(challenge.status(), Some(401));
    let www = challenge.header("WWW-Authenticate").unwrap();
    assert!(www.contains("qop=\"auth\""), "{www}");
    let nonce = www.split("nonce=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    let uri = format!("sip:{SERVER}@{DOMAIN}");
    let response = digest::client_response(DEVICE, DOMAIN, PASSWORD, "REGISTER", &uri, &nonce, Some(("00000001", "c0ffee")));
    let auth = format!(
        "Authorization: Digest username=\"{DEVICE}\", realm=\"{DOMAIN}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", qop=auth, nc=00000001, cnonce=\"c0ffee\", algorithm=MD5\r\n"
    );
    conn.write_all(register(&auth, 2).as_bytes()).unwrap();
    assert_eq!(next(&mut conn).status(), Some(200), "qop=auth digest over TCP");
    // The engine's DeviceInfo query arrives on this connection, with a TCP Via.
    let query = next(&mut conn);
    assert_eq!(query.method().map(|m| m.to_string()).as_deref(), Some("MESSAGE"));
    assert!(query.header("Via").unwrap().starts_with("SIP/2.0/TCP"), "{:?}", query.header("Via"));
    assert!(String::from_utf8_lossy(query.body()).contains("<CmdType>DeviceInfo</CmdType>"));
    let (_, v) = engine.request("GET", &format!("/api/devices/{DEVICE}"), "");
    assert_eq!(v["online"], true);
}

#[test]
fn wrong_password_gets_403_and_unknown_devices_cannot_message() {
    let engine = Engine::start(1, "");
    let mut sim = Sim::new(engine.sip);
    let (status, _) = sim.register("wrong-password", 3600);
    assert_eq!(status, 403);
    let m = sim.request(
        "MESSAGE",
        "ka-x",
        "",
        Some("Application/MANSCDP+xml"),
        b"<Notify><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>x</DeviceID></Notify>",
    );
    sim.send(&m);
    assert_eq!(sim.recv_response(Duration::from_secs(5)).and_then(|r| r.status()), Some(403));
    // Register, then unregister with Expires: 0.
    assert_eq!(sim.register(PASSWORD, 3600).0, 200);
    assert_eq!(engine.request("GET", &format!("/api/devices/{DEVICE}"), "").1["online"], true);
    assert_eq!(sim.register(PASSWORD, 0).0, 200);
    assert_eq!(engine.request("GET", &format!("/api/devices/{DEVICE}"), "").1["online"], false);
    let (status, v) = engine.request("POST", &format!("/api/devices/{DEVICE}/channels/{DEVICE}/play"), "{}");
    assert_eq!((status, v["code"].as_str()), (409, Some("device_offline")));
    assert_eq!(engine.request("POST", "/api/devices/nope/channels/x/play", "{}").0, 404);
}

#[test]
fn hostile_sip_is_counted_and_the_engine_survives() {
    let engine = Engine::start(1, "");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut rng = gmv::proto::testutil::Rng::new(99);
    for i in 0..300 {
        sock.send_to(&rng.bytes(1500), engine.sip).unwrap();
        if i % 20 == 0 {
            std::thread::sleep(Duration::from_millis(2)); // stay under the socket buffer
        }
    }
    sock.send_to(&vec![b'A'; 60_000], engine.sip).unwrap();
    sock.send_to(b"REGISTER sip:x SIP/2.0\r\nContent-Length: 5000\r\n\r\nshort", engine.sip).unwrap();
    let (_, v) = wait_for("counters", Duration::from_secs(5), || {
        let r = engine.request("GET", "/api/sip", "");
        (r.1["counters"]["received"].as_u64() >= Some(302)).then_some(r)
    });
    let c = &v["counters"];
    assert_eq!((c["malformed"].as_u64(), c["registers"].as_u64()), (Some(302), Some(0)), "{v}");
    // Still serving devices.
    let mut sim = Sim::new(engine.sip);
    assert_eq!(sim.register(PASSWORD, 60).0, 200);
}
