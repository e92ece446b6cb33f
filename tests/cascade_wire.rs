//! Cascade (级联) against a scripted upper platform that is not gmv: a UDP socket in this test
//! plays the city platform and checks what a lower gmv puts on the wire. The digest it answers
//! is computed here from RFC 2617 (qop=auth), not by gmv's code; keepalives come at the
//! configured period; a catalog of 19 shared channels (Chinese names) comes in pages of at most
//! 8 with SumNum, GB2312 as declared; live media comes under the upper's SSRC over UDP and over
//! TCP with the upper listening (`a=setup`), as RTP (PT 96, sequence without gaps, timestamps
//! never going back) carrying PS that ffprobe decodes. Refused: a channel not shared (404), a
//! request from another address (403), a malformed query (400), the same SSRC twice (488).
//! A catalog SUBSCRIBE gets the catalog in NOTIFYs of its dialog.
//! A second upper never answers REGISTER: the lower retransmits on RFC 3261 timers, gives up,
//! says why in its state and waits its backoff before the next try (no busy loop).

mod common;

use common::gb_device::*;
use common::gb_sim::*;
use common::*;
use gmv::proto::sip::{SipMsg, parse};
use md5::{Digest, Md5};
use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

const UP_ID: &str = "44010000002000000001";
const UP_DOMAIN: &str = "4401000000";
const UP_PASSWORD: &str = "city-secret";
const LOCAL_ID: &str = "34020000002000000088";
const SITE_NAME: &str = "七号站点";
const NONCE: &str = "9bd055b9a2d0c6f3";
const KEEPALIVE_S: u64 = 1;

/// The camera's 20 channels with Chinese names; the first 19 are shared upward.
fn channels() -> Vec<(String, String)> {
    (1..=20).map(|n| (format!("340200000013100010{n:02}"), format!("通道{n}"))).collect()
}

fn md5_hex(text: &str) -> String {
    Md5::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A parameter of a Digest header (quoted or not).
fn digest_param(header: &str, name: &str) -> Option<String> {
    let rest = header.trim().strip_prefix("Digest")?;
    rest.split(',').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().trim_matches('"').to_string())
    })
}

fn xml_field(text: &str, tag: &str) -> Option<String> {
    gmv::proto::sip::manscdp::element(text, tag).map(|v| v.trim().to_string())
}

/// How the scripted upper platform's signalling travels.
enum Wire {
    Udp(UdpSocket),
    /// The connection the lower dialled, and what was read of it that is not a whole message
    /// yet.
    Tcp { conn: TcpStream, buf: RefCell<Vec<u8>> },
}

/// The scripted upper platform's signalling socket.
struct Upper {
    wire: Wire,
    /// Its SIP address (what the lower was told).
    addr: SocketAddr,
    lower: SocketAddr,
    cseq: u32,
}

/// A whole SIP message at the head of `buf` (framed by its Content-Length, RFC 3261 §18.3),
/// taken off it.
fn frame(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case("content-length") || k.trim().eq_ignore_ascii_case("l")))
        .map(|(_, v)| v.trim().parse().expect("a Content-Length number"))
        .expect("Content-Length over TCP");
    (buf.len() >= head_end + length).then(|| buf.drain(..head_end + length).collect())
}

impl Upper {
    fn bind() -> Upper {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let addr = sock.local_addr().unwrap();
        Upper { wire: Wire::Udp(sock), addr, lower: "127.0.0.1:9".parse().unwrap(), cseq: 0 }
    }

    /// The connection the lower dials to `listener` (the upper platform's SIP TCP port).
    fn accept(listener: &TcpListener) -> Upper {
        listener.set_nonblocking(true).unwrap();
        let (conn, lower) = wait_for("the lower's SIP connection", Duration::from_secs(15), || listener.accept().ok());
        conn.set_nonblocking(false).unwrap();
        conn.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        Upper { wire: Wire::Tcp { conn, buf: RefCell::new(Vec::new()) }, addr: listener.local_addr().unwrap(), lower, cseq: 0 }
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn transport(&self) -> &'static str {
        match self.wire {
            Wire::Udp(_) => "UDP",
            Wire::Tcp { .. } => "TCP",
        }
    }

    /// The next message within `limit`: its request line or status line, the message, the
    /// sender.
    fn recv(&self, limit: Duration) -> Option<(String, SipMsg, SocketAddr)> {
        let deadline = Instant::now() + limit;
        let mut buf = vec![0u8; 65536];
        let whole = |bytes: &[u8], from| {
            let first = String::from_utf8_lossy(bytes).lines().next().unwrap_or_default().to_string();
            Some((first, parse(bytes).expect("the lower sent valid SIP"), from))
        };
        while Instant::now() < deadline {
            match &self.wire {
                Wire::Udp(sock) => {
                    if let Ok((n, from)) = sock.recv_from(&mut buf) {
                        return whole(&buf[..n], from);
                    }
                }
                Wire::Tcp { conn, buf: pending } => {
                    if let Some(message) = frame(&mut pending.borrow_mut()) {
                        return whole(&message, conn.peer_addr().unwrap());
                    }
                    match (&*conn).read(&mut buf) {
                        Ok(0) => return None,
                        Ok(n) => pending.borrow_mut().extend_from_slice(&buf[..n]),
                        Err(_) => {}
                    }
                }
            }
        }
        None
    }

    /// The next message that `keep` accepts; keepalives meanwhile are answered 200.
    fn next(&self, what: &str, limit: Duration, keep: impl Fn(&SipMsg) -> bool) -> (String, SipMsg) {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some((first, m, from)) = self.recv(left) else { panic!("timed out waiting for {what}") };
            assert_eq!(from, self.lower, "{first}");
            if keep(&m) {
                return (first, m);
            }
            if m.is_request() && String::from_utf8_lossy(m.body()).contains("<CmdType>Keepalive</CmdType>") {
                self.reply(&m, 200, "");
            }
        }
    }

    /// Answers keepalives until `job` (the media being received) is done, as an upper
    /// platform does while it takes a stream in; its result.
    fn keepalives_while<T>(&self, job: std::thread::JoinHandle<T>) -> T {
        while !job.is_finished() {
            if let Some((first, m, _)) = self.recv(Duration::from_millis(100)) {
                assert!(String::from_utf8_lossy(m.body()).contains("<CmdType>Keepalive</CmdType>"), "unexpected {first}");
                self.reply(&m, 200, "");
            }
        }
        job.join().unwrap()
    }

    fn reply(&self, req: &SipMsg, code: u16, extra: &str) {
        let mut head = format!("SIP/2.0 {code} {}\r\n", if code == 200 { "OK" } else { "Whatever" });
        for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
            let v = req.header(name).unwrap();
            if name == "To" && !v.contains("tag=") {
                head.push_str(&format!("To: {v};tag=city{code}\r\n"));
            } else {
                head.push_str(&format!("{name}: {v}\r\n"));
            }
        }
        head.push_str(extra);
        head.push_str("Content-Length: 0\r\n\r\n");
        self.send(head.as_bytes());
    }

    /// A request from the upper platform to the lower (to `target`, a channel or the lower).
    fn request(&mut self, method: &str, target: &str, call_id: &str, from_tag: &str, extra: &str, body: Option<(&str, &[u8])>) -> Vec<u8> {
        self.cseq += 1;
        let local = self.addr();
        let mut text = format!(
            "{method} sip:{target}@{} SIP/2.0\r\nVia: SIP/2.0/{} {local};rport;branch=z9hG4bKcity{}{method}\r\nFrom: <sip:{UP_ID}@{UP_DOMAIN}>;tag={from_tag}\r\nTo: <sip:{target}@3402000000>\r\nCall-ID: {call_id}\r\nCSeq: {} {method}\r\nContact: <sip:{UP_ID}@{local}>\r\nMax-Forwards: 70\r\n{extra}",
            self.lower,
            self.transport(),
            self.cseq,
            self.cseq
        )
        .into_bytes();
        match body {
            Some((ct, b)) => {
                text.extend_from_slice(format!("Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n", b.len()).as_bytes());
                text.extend_from_slice(b);
            }
            None => text.extend_from_slice(b"Content-Length: 0\r\n\r\n"),
        }
        text
    }

    fn send(&self, bytes: &[u8]) {
        match &self.wire {
            Wire::Udp(sock) => {
                sock.send_to(bytes, self.lower).unwrap();
            }
            Wire::Tcp { conn, .. } => (&*conn).write_all(bytes).unwrap(),
        }
    }

    /// The final response to the request with `call_id`.
    fn final_response(&self, call_id: &str) -> SipMsg {
        self.next(&format!("the answer to {call_id}"), Duration::from_secs(10), |m| {
            !m.is_request() && m.call_id().as_deref() == Some(call_id) && m.status().is_some_and(|s| s >= 200)
        })
        .1
    }

    fn manscdp(&mut self, call_id: &str, xml: &str) -> SipMsg {
        let body = encoding_rs::GB18030.encode(xml).0.into_owned();
        let m = self.request("MESSAGE", LOCAL_ID, call_id, "q", "", Some(("Application/MANSCDP+xml", &body)));
        self.send(&m);
        self.final_response(call_id)
    }
}

fn lower_yaml(upper: SocketAddr, shared: &[String]) -> String {
    let list: Vec<String> = shared.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "cascade:\n  upstreams:\n  - id: city\n    name: \"{SITE_NAME}\"\n    server_id: \"{UP_ID}\"\n    domain: \"{UP_DOMAIN}\"\n    address: \"{upper}\"\n    password: \"{UP_PASSWORD}\"\n    local_id: \"{LOCAL_ID}\"\n    register_expires_s: 60\n    keepalive_s: {KEEPALIVE_S}\n    keepalive_timeout_count: 10\n    shared: [{}]\n",
        list.join(", ")
    )
}

fn upstream_state(lower: &Engine) -> serde_json::Value {
    lower.request("GET", "/api/upstreams", "").1["upstreams"][0].clone()
}

/// The RTP of one upstream session: checks every packet (version, PT 96, the upper's SSRC,
/// sequence without gaps, timestamps never going back) and gives the PS it carries.
struct RtpCheck {
    ssrc: u32,
    last: Option<(u16, u32)>,
    packets: usize,
    ps: Vec<u8>,
}

impl RtpCheck {
    fn new(ssrc: u32) -> RtpCheck {
        RtpCheck { ssrc, last: None, packets: 0, ps: Vec::new() }
    }

    fn take(&mut self, p: &[u8]) {
        assert!(p.len() > 12, "{} bytes", p.len());
        assert_eq!(p[0] >> 6, 2, "RTP version");
        assert_eq!(p[1] & 0x7f, 96, "payload type");
        let seq = u16::from_be_bytes([p[2], p[3]]);
        let ts = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
        assert_eq!(u32::from_be_bytes([p[8], p[9], p[10], p[11]]), self.ssrc, "the upper's SSRC");
        if let Some((last_seq, last_ts)) = self.last {
            assert_eq!(seq, last_seq.wrapping_add(1), "sequence after {last_seq}");
            assert!(ts.wrapping_sub(last_ts) < 0x8000_0000, "timestamp {ts} went back from {last_ts}");
        }
        self.last = Some((seq, ts));
        self.packets += 1;
        let header = 12 + 4 * usize::from(p[0] & 0x0f);
        self.ps.extend_from_slice(&p[header..]);
    }

    /// Writes the PS and has ffprobe decode it: 320x240 H.264, at least `frames` pictures.
    fn decode(&self, out: &str, frames: usize) {
        assert!(self.ps.starts_with(&[0, 0, 1, 0xba]), "PS pack header first");
        let file = work_dir().join(out);
        std::fs::write(&file, &self.ps).unwrap();
        let probe = ffprobe(&file);
        assert_eq!((probe.codec.as_str(), probe.width, probe.height), ("h264", WIDTH, HEIGHT), "{out}");
        assert!(probe.frames >= frames, "{out}: {} frames in {} packets", probe.frames, self.packets);
    }
}

/// A thread taking the RTP of an upstream session on `media` until `packets` came (or 20 s),
/// each checked by `RtpCheck` for `ssrc`.
fn receive_udp_rtp(media: Arc<UdpSocket>, ssrc: u32, packets: usize) -> std::thread::JoinHandle<RtpCheck> {
    std::thread::spawn(move || {
        let mut check = RtpCheck::new(ssrc);
        let mut buf = vec![0u8; 65536];
        let deadline = Instant::now() + Duration::from_secs(20);
        while check.packets < packets && Instant::now() < deadline {
            if let Ok((n, _)) = media.recv_from(&mut buf) {
                check.take(&buf[..n]);
            }
        }
        check
    })
}

fn invite_sdp(port: u16, proto: &str, setup: &str, ssrc: &str) -> String {
    format!(
        "v=0\r\no={UP_ID} 0 0 IN IP4 127.0.0.1\r\ns=Play\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=video {port} {proto} 96 97 98\r\na=recvonly\r\na=rtpmap:96 PS/90000\r\na=rtpmap:97 MPEG4/90000\r\na=rtpmap:98 H264/90000\r\n{setup}y={ssrc}\r\n"
    )
}

/// INVITE from above; the final answer (ACKed when 200).
fn invite(up: &mut Upper, channel: &str, call_id: &str, sdp: &str) -> SipMsg {
    let subject = format!("Subject: {channel}:{},{UP_ID}:0\r\n", &sdp[sdp.find("y=").unwrap() + 2..].trim());
    let m = up.request("INVITE", channel, call_id, "inv", &subject, Some(("APPLICATION/SDP", sdp.as_bytes())));
    up.send(&m);
    let answer = up.final_response(call_id);
    if answer.status() == Some(200) {
        let cseq = up.cseq;
        let to = answer.header("To").unwrap();
        let ack = format!(
            "ACK sip:{channel}@{} SIP/2.0\r\nVia: SIP/2.0/{} {};rport;branch=z9hG4bKack{cseq}\r\nFrom: <sip:{UP_ID}@{UP_DOMAIN}>;tag=inv\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            up.lower,
            up.transport(),
            up.addr()
        );
        up.send(ack.as_bytes());
    }
    answer
}

/// BYE from above in the dialog the 200 `answer` made.
fn bye(up: &mut Upper, channel: &str, call_id: &str, answer: &SipMsg) {
    let to = answer.header("To").unwrap();
    let m = up.request("BYE", channel, call_id, "inv", "", None);
    let text = String::from_utf8(m).unwrap();
    let to_line = text.lines().find(|l| l.starts_with("To:")).unwrap().to_string();
    let m = text.replacen(&to_line, &format!("To: {to}"), 1);
    up.send(m.as_bytes());
    assert_eq!(up.final_response(call_id).status(), Some(200));
}

/// The catalog pages answering query `sn` until `count` items came: each page checked (at
/// most 8 items, SumNum, the query's SN, GB2312 as declared), 19 items in 3 pages; the items
/// (id, name) sorted.
fn catalog_pages(up: &Upper, sn: &str, count: usize) -> Vec<(String, String)> {
    let mut items: Vec<(String, String)> = Vec::new();
    let mut pages = 0;
    while items.len() < count {
        let (_, page) = up.next("a catalog page", Duration::from_secs(10), |m| m.is_request() && m.body().windows(7).any(|w| w == b"Catalog"));
        up.reply(&page, 200, "");
        pages += 1;
        assert!(!page.body().windows("通道".len()).any(|w| w == "通道".as_bytes()), "names are not UTF-8 under a GB2312 declaration");
        let (text, _, bad) = encoding_rs::GB18030.decode(page.body());
        assert!(!bad);
        assert!(text.starts_with("<?xml version=\"1.0\" encoding=\"GB2312\"?>"), "{text}");
        assert_eq!((xml_field(&text, "SN").as_deref(), xml_field(&text, "SumNum")), (Some(sn), Some(count.to_string())), "{text}");
        let in_page: Vec<&str> = text.split("<Item>").skip(1).collect();
        assert!(!in_page.is_empty() && in_page.len() <= 8, "{} items in a page", in_page.len());
        assert!(text.contains(&format!("<DeviceList Num=\"{}\">", in_page.len())), "{text}");
        for item in in_page {
            items.push((xml_field(item, "DeviceID").unwrap(), xml_field(item, "Name").unwrap()));
        }
    }
    assert_eq!(pages, count.div_ceil(8));
    items.sort();
    items
}

/// Takes the lower's REGISTER: challenges it with qop=auth, checks its answer against the
/// digest computed here (RFC 2617), grants it.
fn accept_registration(up: &Upper) {
    let (first, reg) = up.next("REGISTER", Duration::from_secs(15), |m| m.method().is_some_and(|m| m.to_string() == "REGISTER"));
    assert!(first.starts_with(&format!("REGISTER sip:{UP_ID}@")), "{first}");
    assert_eq!(reg.from_user().as_deref(), Some(LOCAL_ID));
    assert_eq!(reg.header("To").as_deref().and_then(gmv::proto::sip::message::uri_user).as_deref(), Some(LOCAL_ID));
    assert_eq!(reg.expires(), Some(60));
    assert!(reg.header("Authorization").is_none());
    assert!(reg.header("Via").unwrap().starts_with(&format!("SIP/2.0/{} ", up.transport())), "{first}");
    if up.transport() == "TCP" {
        assert!(reg.header("Contact").unwrap().ends_with(";transport=tcp>"), "requests back come over TCP");
    }
    up.reply(&reg, 401, &format!("WWW-Authenticate: Digest realm=\"{UP_DOMAIN}\", nonce=\"{NONCE}\", qop=\"auth\", algorithm=MD5\r\n"));
    let (_, auth_reg) = up.next("the authorised REGISTER", Duration::from_secs(10), |m| m.header("Authorization").is_some());
    assert_eq!(auth_reg.call_id(), reg.call_id(), "one registration, one Call-ID");
    assert_eq!(auth_reg.cseq().unwrap().0, reg.cseq().unwrap().0 + 1);
    let auth = auth_reg.header("Authorization").unwrap();
    let p = |k: &str| digest_param(&auth, k).unwrap_or_else(|| panic!("{k} in {auth}"));
    assert_eq!((p("username").as_str(), p("realm").as_str(), p("nonce").as_str(), p("qop").as_str()), (LOCAL_ID, UP_DOMAIN, NONCE, "auth"));
    let ha1 = md5_hex(&format!("{LOCAL_ID}:{UP_DOMAIN}:{UP_PASSWORD}"));
    let ha2 = md5_hex(&format!("REGISTER:{}", p("uri")));
    let expected = md5_hex(&format!("{ha1}:{NONCE}:{}:{}:auth:{ha2}", p("nc"), p("cnonce")));
    assert_eq!(p("response"), expected, "RFC 2617 digest");
    up.reply(&auth_reg, 200, "Expires: 60\r\n");
}

#[test]
fn a_scripted_upper_platform_sees_the_lower_gmv_on_the_wire() {
    let mut up = Upper::bind();
    let chans = channels();
    let shared: Vec<String> = chans[..19].iter().map(|(id, _)| id.clone()).collect();
    let lower = Engine::start_with(1, &lower_yaml(up.addr(), &shared), "", None);
    up.lower = lower.sip;

    // REGISTER, challenged with qop=auth; the answer's digest computed here.
    accept_registration(&up);
    wait_for("registered", Duration::from_secs(10), || (upstream_state(&lower)["state"] == "registered").then_some(()));

    // Keepalives at the configured period, answered.
    let mut at = Vec::new();
    for _ in 0..3 {
        let (_, k) = up.next("a keepalive", Duration::from_secs(10), |m| m.is_request() && String::from_utf8_lossy(m.body()).contains("Keepalive"));
        at.push(Instant::now());
        let text = String::from_utf8_lossy(k.body()).to_string();
        assert_eq!((xml_field(&text, "DeviceID").as_deref(), xml_field(&text, "Status").as_deref()), (Some(LOCAL_ID), Some("OK")), "{text}");
        up.reply(&k, 200, "");
    }
    for gap in at.windows(2).map(|w| w[1] - w[0]) {
        assert!(gap >= Duration::from_millis(KEEPALIVE_S * 500) && gap <= Duration::from_secs(KEEPALIVE_S * 3), "keepalive gap {gap:?}");
    }

    // The camera registers with the lower, its 20 channels in.
    let mut sim = Sim::new(lower.sip);
    assert_eq!(sim.register(PASSWORD, 3600).0, 200);
    let (events_tx, _events) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let device = {
        let (stop, chans) = (stop.clone(), chans.clone());
        std::thread::spawn(move || run_device_with(sim, events_tx, stop, chans))
    };
    wait_for("the camera's catalog at the lower", Duration::from_secs(15), || {
        let (_, v) = lower.request("GET", &format!("/api/devices/{DEVICE}/channels"), "");
        (v["channels"].as_array().map(Vec::len) == Some(20)).then_some(())
    });

    // Catalog: 19 items in pages of at most 8, each with SumNum 19 and the query's SN, GB2312.
    let answer = up.manscdp("cat-1", &format!("<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Query>\r\n<CmdType>Catalog</CmdType>\r\n<SN>417</SN>\r\n<DeviceID>{LOCAL_ID}</DeviceID>\r\n</Query>\r\n"));
    assert_eq!(answer.status(), Some(200));
    let items = catalog_pages(&up, "417", shared.len());
    assert_eq!(items, chans[..19].to_vec(), "the shared channels, their names as the camera gave them");

    // DeviceInfo names the site, in GB2312.
    assert_eq!(up.manscdp("info-1", &format!("<Query><CmdType>DeviceInfo</CmdType><SN>418</SN><DeviceID>{LOCAL_ID}</DeviceID></Query>")).status(), Some(200));
    let (_, info) = up.next("the DeviceInfo answer", Duration::from_secs(10), |m| m.is_request() && m.body().windows(10).any(|w| w == b"DeviceInfo"));
    up.reply(&info, 200, "");
    let (text, _, _) = encoding_rs::GB18030.decode(info.body());
    assert_eq!(xml_field(&text, "DeviceName").as_deref(), Some(SITE_NAME), "{text}");

    // A catalog subscription: 200 with our tag and the time granted, then the shared catalog in
    // NOTIFYs of its dialog (Event: Catalog), the same 19 channels.
    let query = format!("<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Query>\r\n<CmdType>Catalog</CmdType>\r\n<SN>419</SN>\r\n<DeviceID>{LOCAL_ID}</DeviceID>\r\n</Query>\r\n");
    let m = up.request("SUBSCRIBE", LOCAL_ID, "sub-1", "s", "Event: Catalog\r\nExpires: 3600\r\n", Some(("Application/MANSCDP+xml", query.as_bytes())));
    up.send(&m);
    let ok = up.final_response("sub-1");
    assert_eq!((ok.status(), ok.expires()), (Some(200), Some(3600)));
    let our_tag = ok.to_tag().expect("a tag for the subscription's dialog");
    let mut notified = Vec::new();
    while notified.len() < shared.len() {
        let (first, n) = up.next("a catalog NOTIFY", Duration::from_secs(10), |m| m.method().is_some_and(|m| m.to_string() == "NOTIFY"));
        up.reply(&n, 200, "");
        assert!(first.starts_with(&format!("NOTIFY sip:{UP_ID}@")), "{first}");
        assert_eq!((n.call_id().as_deref(), n.from_tag(), n.header("Event").as_deref()), (Some("sub-1"), Some(our_tag.clone()), Some("Catalog")));
        assert!(n.header("Subscription-State").is_some_and(|v| v.starts_with("active")));
        let (text, _, _) = encoding_rs::GB18030.decode(n.body());
        assert_eq!(xml_field(&text, "SN").as_deref(), Some("419"));
        notified.extend(text.split("<Item>").skip(1).filter_map(|i| xml_field(i, "DeviceID")));
    }
    notified.sort();
    assert_eq!(notified, shared);

    // Refused: a malformed query (400), the same query from another address (403).
    assert_eq!(up.manscdp("bad-1", "<Query><CmdType>Catalog</CmdType><SN>x").status(), Some(400));
    let mut other = Upper::bind();
    other.lower = lower.sip;
    assert_eq!(other.manscdp("other-1", &format!("<Query><CmdType>Catalog</CmdType><SN>9</SN><DeviceID>{LOCAL_ID}</DeviceID></Query>")).status(), Some(403));

    // A channel not shared: 404.
    let media = UdpSocket::bind("127.0.0.1:0").unwrap();
    media.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let sdp = invite_sdp(media.local_addr().unwrap().port(), "RTP/AVP", "", "0100000123");
    assert_eq!(invite(&mut up, &chans[19].0, "inv-404", &sdp).status(), Some(404));

    // Live over UDP under the upper's SSRC.
    let channel = &chans[3].0;
    let answer = invite(&mut up, channel, "inv-udp", &sdp);
    assert_eq!(answer.status(), Some(200));
    let answer_sdp = String::from_utf8_lossy(answer.body()).to_string();
    assert!(answer_sdp.contains("y=0100000123") && answer_sdp.contains("a=sendonly") && answer_sdp.contains(" RTP/AVP 96"), "{answer_sdp}");
    // The same channel under the same SSRC again would be one sender replacing the other.
    assert_eq!(invite(&mut up, channel, "inv-same", &sdp).status(), Some(488));
    let media = Arc::new(media);
    let check = up.keepalives_while(receive_udp_rtp(media.clone(), 100_000_123, 150));
    check.decode("cascade-wire-udp.ps", 10);
    bye(&mut up, channel, "inv-udp", &answer);
    let mut buf = vec![0u8; 65536];
    wait_for("the lower's send stopped", Duration::from_secs(10), || media.recv_from(&mut buf).is_err().then_some(()));

    // Live over TCP, the upper listening (a=setup:passive): the lower connects and frames RTP
    // by RFC 4571.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let sdp = invite_sdp(listener.local_addr().unwrap().port(), "TCP/RTP/AVP", "a=setup:passive\r\na=connection:new\r\n", "0100000124");
    let answer = invite(&mut up, channel, "inv-tcp", &sdp);
    assert_eq!(answer.status(), Some(200));
    let answer_sdp = String::from_utf8_lossy(answer.body()).to_string();
    assert!(answer_sdp.contains("a=setup:active") && answer_sdp.contains("TCP/RTP/AVP") && answer_sdp.contains("y=0100000124"), "{answer_sdp}");
    listener.set_nonblocking(true).unwrap();
    let (mut conn, _) = wait_for("the lower's connection", Duration::from_secs(10), || listener.accept().ok());
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let check = up.keepalives_while(std::thread::spawn(move || {
        let mut check = RtpCheck::new(100_000_124);
        while check.packets < 150 {
            let mut len = [0u8; 2];
            conn.read_exact(&mut len).unwrap();
            let mut p = vec![0u8; usize::from(u16::from_be_bytes(len))];
            conn.read_exact(&mut p).unwrap();
            check.take(&p);
        }
        (check, conn)
    }));
    let (check, mut conn) = check;
    check.decode("cascade-wire-tcp.ps", 10);
    bye(&mut up, channel, "inv-tcp", &answer);
    let mut rest = Vec::new();
    assert!(conn.read_to_end(&mut rest).is_ok(), "the lower closes its connection after the BYE");

    stop.store(true, Ordering::SeqCst);
    device.join().unwrap();

    // A graceful stop says Expires 0 (authorised again with the nonce it holds, or challenged).
    lower.signal(libc::SIGTERM);
    let (_, bye_reg) = up.next("REGISTER Expires 0", Duration::from_secs(10), |m| m.method().is_some_and(|m| m.to_string() == "REGISTER"));
    assert_eq!(bye_reg.expires(), Some(0));
    up.reply(&bye_reg, 200, "Expires: 0\r\n");
    let mut lower = lower;
    assert!(lower.wait_exit(Duration::from_secs(20)).is_some_and(|s| s.success()));
}

#[test]
fn an_upper_platform_that_never_answers_register_is_retried_with_backoff() {
    let up = Upper::bind();
    let lower = Engine::start_with(1, &lower_yaml(up.addr(), &[]), "", None);
    // The first transaction: retransmitted on Timer E (0.5 s doubling to 4 s), then given up
    // at Timer F (32 s); the next REGISTER is a new transaction after the backoff.
    let mut seen: Vec<(Instant, String)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(50);
    while Instant::now() < deadline {
        let Some((_, m, _)) = up.recv(Duration::from_millis(200)) else { continue };
        assert_eq!(m.method().map(|m| m.to_string()).as_deref(), Some("REGISTER"));
        let branch = m.branch().unwrap();
        let new = seen.last().is_some_and(|(_, b)| *b != branch);
        seen.push((Instant::now(), branch));
        if new {
            break;
        }
    }
    let (next_at, _) = seen.pop().expect("a second REGISTER transaction");
    let first = seen.len();
    assert!((8..=12).contains(&first), "{first} datagrams in the first transaction");
    let gaps: Vec<Duration> = seen.windows(2).map(|w| w[1].0 - w[0].0).collect();
    assert!(gaps.iter().all(|g| *g >= Duration::from_millis(300) && *g <= Duration::from_secs(6)), "{gaps:?}");
    assert!(gaps.last().unwrap() >= &Duration::from_secs(3), "Timer E capped at T2: {gaps:?}");
    // Between giving up and trying again the lower waits at least the first backoff (2 s)
    // after its last retransmission (which Timer F follows by 4 s or less).
    let idle = next_at - seen.last().unwrap().0;
    assert!(idle >= Duration::from_secs(2), "{idle:?} before the next try");
    let state = upstream_state(&lower);
    assert_eq!(state["state"], "retrying", "{state}");
    assert_eq!(state["last_error"], "REGISTER not answered", "{state}");
}

#[test]
fn upstreams_added_changed_and_removed_through_the_api_hold_after_a_restart() {
    let mut up = Upper::bind();
    let mut lower = Engine::start_with(1, "", "", None);
    up.lower = lower.sip;
    assert_eq!(lower.request("GET", "/api/upstreams", "").1["upstreams"], serde_json::json!([]));
    let body = serde_json::json!({
        "id": "city", "name": SITE_NAME, "server_id": UP_ID, "domain": UP_DOMAIN, "address": up.addr().to_string(),
        "password": UP_PASSWORD, "local_id": LOCAL_ID, "register_expires_s": 60, "keepalive_s": 30, "shared": []
    });
    let (status, added) = lower.request("POST", "/api/upstreams", &body.to_string());
    assert_eq!(status, 201, "{added}");
    assert_eq!((added["source"].as_str(), added["shared"].clone()), (Some("api"), serde_json::json!([])), "{added}");
    assert!(added.get("password").is_none() && !added.to_string().contains(UP_PASSWORD), "the password is never shown");
    // Refused: the same id again (409), a bad channel id (400), an unknown upstream (404), a
    // field that is not an upstream's (400).
    assert_eq!(lower.request("POST", "/api/upstreams", &body.to_string()).0, 409);
    assert_eq!(lower.request("PUT", "/api/upstreams/city/shared", r#"{"shared": ["not an id!"]}"#).0, 400);
    assert_eq!(lower.request("PUT", "/api/upstreams/nowhere/shared", r#"{"shared": "all"}"#).0, 404);
    assert_eq!(lower.request("PUT", "/api/upstreams/city", r#"{"pasword": "typo"}"#).0, 400);
    accept_registration(&up);
    wait_for("registered", Duration::from_secs(10), || (upstream_state(&lower)["state"] == "registered").then_some(()));

    // What it shares changes without a new registration: the catalog at the top follows.
    let (_events, stop, device) = registered_device(&lower);
    let catalog_ids = |up: &mut Upper, sn: u32| -> Vec<String> {
        let answer = up.manscdp(&format!("cat-{sn}"), &format!("<Query><CmdType>Catalog</CmdType><SN>{sn}</SN><DeviceID>{LOCAL_ID}</DeviceID></Query>"));
        assert_eq!(answer.status(), Some(200));
        let (_, page) = up.next("a catalog page", Duration::from_secs(10), |m| m.is_request() && m.body().windows(7).any(|w| w == b"Catalog"));
        up.reply(&page, 200, "");
        let (text, _, _) = encoding_rs::GB18030.decode(page.body());
        text.split("<Item>").skip(1).filter_map(|i| xml_field(i, "DeviceID")).collect()
    };
    assert!(catalog_ids(&mut up, 1).is_empty());
    let (status, changed) = lower.request("PUT", "/api/upstreams/city/shared", &format!(r#"{{"shared": ["{}"]}}"#, CHANNELS[1]));
    assert_eq!(status, 200, "{changed}");
    assert_eq!((changed["shared"].clone(), changed["state"].as_str()), (serde_json::json!([CHANNELS[1]]), Some("registered")));
    assert_eq!(catalog_ids(&mut up, 2), vec![CHANNELS[1].to_string()]);
    stop.store(true, Ordering::SeqCst);
    device.join().unwrap();

    // A crash and restart: the upstream the API added registers again.
    lower.crash_and_restart();
    let (_, again) = up.next("a REGISTER after the restart", Duration::from_secs(15), |m| m.method().is_some_and(|m| m.to_string() == "REGISTER"));
    up.reply(&again, 401, &format!("WWW-Authenticate: Digest realm=\"{UP_DOMAIN}\", nonce=\"{NONCE}\", algorithm=MD5\r\n"));
    let (_, answered) = up.next("the authorised REGISTER", Duration::from_secs(10), |m| m.header("Authorization").is_some());
    up.reply(&answered, 200, "Expires: 60\r\n");
    wait_for("registered after the restart", Duration::from_secs(10), || {
        let s = upstream_state(&lower);
        (s["state"] == "registered" && s["shared"] == serde_json::json!([CHANNELS[1]])).then_some(())
    });

    // Removed: Expires 0 goes up; after another restart it is still gone.
    let (status, removed) = lower.request("DELETE", "/api/upstreams/city", "");
    assert_eq!(status, 200, "{removed}");
    let (_, bye) = up.next("REGISTER Expires 0", Duration::from_secs(10), |m| m.method().is_some_and(|m| m.to_string() == "REGISTER"));
    assert_eq!(bye.expires(), Some(0));
    up.reply(&bye, 200, "");
    assert_eq!(lower.request("GET", "/api/upstreams", "").1["upstreams"], serde_json::json!([]));
    assert_eq!(lower.request("DELETE", "/api/upstreams/city", "").0, 404);
    lower.crash_and_restart();
    assert_eq!(lower.request("GET", "/api/upstreams", "").1["upstreams"], serde_json::json!([]));
}

/// A gmv media node of `control` (`--role media`), its hooks (the send's end too) to it.
fn media_node(control: SocketAddr) -> Engine {
    let hooks: String = ["on_server_started", "on_server_keepalive", "on_play", "on_publish", "on_stream_none_reader", "on_send_rtp_stopped"]
        .iter()
        .map(|n| format!("    {n}: \"http://{control}/index/hook/{n}\"\n"))
        .collect();
    let yaml = format!("node:\n  secret: \"{NODE_SECRET}\"\n  media_server_id: media-1\n  keepalive_interval_s: 1\n  hooks:\n{hooks}");
    Engine::start_command(1, "", &yaml, "", None, None, &["--role", "media"])
}

const NODE_SECRET: &str = "node-secret-0123456789";

#[test]
fn a_channel_on_a_media_node_is_sent_up_by_that_node() {
    let mut up = Upper::bind();
    let control_http: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let node = media_node(control_http);
    let nodes = format!("node:\n  media_nodes:\n    - {{id: media-1, api: \"http://{}\", secret: \"{NODE_SECRET}\", media_ip: 127.0.0.1}}\n", node.http);
    let lower = Engine::start_at(control_http, 1, &format!("{nodes}{}", lower_yaml(up.addr(), &[CHANNELS[0].to_string()])), "  no_viewer_stop_s: 0\n", &["--role", "control"]);
    up.lower = lower.sip;
    wait_for("the node up", Duration::from_secs(20), || {
        let (_, v) = lower.request("GET", "/api/nodes", "");
        v["nodes"].as_array().and_then(|l| l.iter().find(|n| n["state"] == "up")).map(|_| ())
    });
    accept_registration(&up);
    let (_events, stop, device) = registered_device(&lower);

    // Live over UDP: the answer gives the node's media address; the node sends the RTP.
    let media = UdpSocket::bind("127.0.0.1:0").unwrap();
    media.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let sdp = invite_sdp(media.local_addr().unwrap().port(), "RTP/AVP", "", "0100000131");
    let answer = invite(&mut up, CHANNELS[0], "inv-node", &sdp);
    assert_eq!(answer.status(), Some(200), "{}", String::from_utf8_lossy(answer.body()));
    let answer_sdp = gmv::proto::sdp::Sdp::parse(answer.body()).unwrap();
    let media = Arc::new(media);
    let (check, from) = up.keepalives_while({
        let media = media.clone();
        std::thread::spawn(move || {
            let mut check = RtpCheck::new(100_000_131);
            let mut buf = vec![0u8; 65536];
            let mut from = None;
            let deadline = Instant::now() + Duration::from_secs(20);
            while check.packets < 100 && Instant::now() < deadline {
                if let Ok((n, sender)) = media.recv_from(&mut buf) {
                    from = Some(sender);
                    check.take(&buf[..n]);
                }
            }
            (check, from)
        })
    });
    check.decode("cascade-wire-node.ps", 10);
    assert_eq!(from.map(|f| f.port()), Some(answer_sdp.media[0].port), "sent from the port the answer named");

    // The lower stops the camera's session: the node's sender ends (its on_send_rtp_stopped),
    // and the lower hangs the upstream up with a BYE.
    let (_, sessions) = lower.request("GET", "/api/sessions", "");
    let stream_id = sessions["sessions"][0]["stream_id"].as_str().unwrap().to_string();
    assert_eq!(lower.request("DELETE", &format!("/api/sessions/{stream_id}"), "").0, 200);
    let (_, bye) = up.next("the lower's BYE", Duration::from_secs(15), |m| m.method().is_some_and(|m| m.to_string() == "BYE"));
    assert_eq!(bye.call_id().as_deref(), Some("inv-node"));
    up.reply(&bye, 200, "");
    wait_for("no session up", Duration::from_secs(10), || (upstream_state(&lower)["sessions"] == 0).then_some(()));
    stop.store(true, Ordering::SeqCst);
    device.join().unwrap();
}

/// An upper platform that takes SIP over TCP only: the lower dials it and everything travels
/// over that connection both ways (REGISTER with its digest, keepalives, a catalog query and
/// its pages, a live INVITE, its ACK and BYE); a query on a connection of the upper's own to
/// the lower's SIP port is answered too. The upper dropping the connection costs nothing: the
/// lower dials again at its next message and stays registered. An upper that stops listening
/// is lost after the keepalives fail, and the lower's state says it cannot connect.
#[test]
fn an_upper_platform_over_tcp_is_reached_over_a_connection_the_lower_dials() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let shared: Vec<String> = CHANNELS.iter().map(|c| c.to_string()).collect();
    let yaml = lower_yaml(listener.local_addr().unwrap(), &shared).replace("keepalive_timeout_count: 10", "keepalive_timeout_count: 3") + "    transport: tcp\n";
    let lower = Engine::start_with(1, &yaml, "", None);
    let mut up = Upper::accept(&listener);
    accept_registration(&up);
    wait_for("registered", Duration::from_secs(10), || (upstream_state(&lower)["state"] == "registered").then_some(()));
    assert_eq!(upstream_state(&lower)["transport"], "tcp");
    let (_events, stop, device) = registered_device(&lower);

    // A catalog query over the connection: the pages come back over it.
    let query = format!("<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Query>\r\n<CmdType>Catalog</CmdType>\r\n<SN>501</SN>\r\n<DeviceID>{LOCAL_ID}</DeviceID>\r\n</Query>\r\n");
    assert_eq!(up.manscdp("tcp-cat", &query).status(), Some(200));
    let ids: Vec<String> = catalog_pages(&up, "501", shared.len()).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, shared);

    // Live: INVITE, 200, ACK over the connection; RTP over UDP as offered; BYE over it.
    let media = UdpSocket::bind("127.0.0.1:0").unwrap();
    media.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let sdp = invite_sdp(media.local_addr().unwrap().port(), "RTP/AVP", "", "0100000141");
    let answer = invite(&mut up, CHANNELS[1], "tcp-inv", &sdp);
    assert_eq!(answer.status(), Some(200), "{}", String::from_utf8_lossy(answer.body()));
    assert!(answer.header("Contact").unwrap().ends_with(";transport=tcp>"));
    let check = up.keepalives_while(receive_udp_rtp(Arc::new(media), 100_000_141, 100));
    check.decode("cascade-wire-sip-tcp.ps", 10);
    bye(&mut up, CHANNELS[1], "tcp-inv", &answer);

    // The upper platform's own connection to the lower's SIP port (as some platforms send
    // requests): the query is answered 200 on it, the DeviceInfo comes over the dialled one.
    let own = TcpStream::connect(lower.sip).unwrap();
    own.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut other = Upper { wire: Wire::Tcp { conn: own, buf: RefCell::new(Vec::new()) }, addr: up.addr(), lower: lower.sip, cseq: 0 };
    let m = other.request("MESSAGE", LOCAL_ID, "tcp-info", "q", "", Some(("Application/MANSCDP+xml", format!("<Query><CmdType>DeviceInfo</CmdType><SN>502</SN><DeviceID>{LOCAL_ID}</DeviceID></Query>").as_bytes())));
    other.send(&m);
    let (_, ok, _) = other.recv(Duration::from_secs(10)).expect("an answer on the upper's own connection");
    assert_eq!((ok.call_id().as_deref(), ok.status()), (Some("tcp-info"), Some(200)));
    let (_, info) = up.next("the DeviceInfo answer", Duration::from_secs(10), |m| m.is_request() && m.body().windows(10).any(|w| w == b"DeviceInfo"));
    up.reply(&info, 200, "");

    // The upper drops the connection: the lower's next message dials a new one; no new
    // registration is needed.
    let registrations = upstream_state(&lower)["registrations"].clone();
    drop(up);
    let up = Upper::accept(&listener);
    let (_, k) = up.next("a keepalive on the new connection", Duration::from_secs(10), |m| m.is_request() && String::from_utf8_lossy(m.body()).contains("Keepalive"));
    up.reply(&k, 200, "");
    let state = upstream_state(&lower);
    assert_eq!((&state["state"], &state["registrations"]), (&serde_json::json!("registered"), &registrations), "{state}");

    // The upper stops listening: keepalives cannot be sent, it is lost after 3, and the
    // lower says it cannot connect.
    drop(listener);
    drop(up);
    let state = wait_for("the lower cannot connect", Duration::from_secs(20), || {
        let s = upstream_state(&lower);
        (s["state"] == "retrying" && s["last_error"].as_str().is_some_and(|e| e.starts_with("no TCP connection to "))).then_some(s)
    });
    assert!(state["last_error"].as_str().unwrap().contains("refused"), "{state}");
    stop.store(true, Ordering::SeqCst);
    device.join().unwrap();
}
