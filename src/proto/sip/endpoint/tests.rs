//! The endpoint on a virtual clock, without sockets: every input is bytes and a time.

use super::*;
use crate::proto::sip::build::response;
use crate::proto::sip::digest::client_response;
use crate::proto::sip::mansrtsp::PlaybackAction;
use crate::proto::sip::{SipMsg, parse};

const SERVER: &str = "34020000002000000001";
const DOMAIN: &str = "3402000000";
const PASSWORD: &str = "12345678";
const DEV: &str = "34020000001320000001";
const CH: &str = "34020000001310000001";

fn addr(last: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, last], port))
}

fn cfg() -> EndpointConfig {
    EndpointConfig {
        server_id: SERVER.into(),
        domain: DOMAIN.into(),
        password: PASSWORD.into(),
        device_passwords: BTreeMap::new(),
        digest_qop: false,
        local: addr(1, 5060),
        media_ip: "127.0.0.1".into(),
        keepalive_interval: Duration::from_secs(60),
        invite_timeout: Duration::from_secs(10),
        no_viewer_stop: Some(Duration::from_secs(30)),
        catalog_refresh: Some(Duration::from_secs(3600)),
        utc_offset_s: 8 * 3600,
        device_utc_offsets_s: BTreeMap::new(),
        record_query_timeout: Duration::from_secs(10),
        subscribe: Vec::new(),
        device_subscribe: BTreeMap::new(),
        subscribe_expires_s: 3600,
        register_rate: RateLimits::default(),
        upstreams: Vec::new(),
    }
}

struct H {
    ep: Endpoint,
    now: Instant,
    out: Vec<Transmit>,
    events: Vec<Event>,
}

/// What a device sends.
struct Dev {
    id: String,
    peer: Peer,
    cseq: u32,
}

impl Dev {
    fn udp(id: &str, a: SocketAddr) -> Dev {
        Dev { id: id.into(), peer: Peer::Udp(a), cseq: 0 }
    }

    fn request(&mut self, method: &str, call_id: &str, extra: &str, body: Option<(&str, &[u8])>) -> Vec<u8> {
        self.request_from(&self.id.clone(), method, call_id, extra, body)
    }

    fn request_from(&mut self, from_user: &str, method: &str, call_id: &str, extra: &str, body: Option<(&str, &[u8])>) -> Vec<u8> {
        self.cseq += 1;
        let a = self.peer.addr();
        let mut head = format!(
            "{method} sip:{SERVER}@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/{} {a};rport;branch=z9hG4bKd{}{}\r\nFrom: <sip:{from_user}@{DOMAIN}>;tag=f{}\r\nTo: <sip:{SERVER}@{DOMAIN}>\r\nCall-ID: {call_id}\r\nCSeq: {} {method}\r\nContact: <sip:{from_user}@{a}>\r\nMax-Forwards: 70\r\n{extra}",
            self.peer.transport(),
            self.cseq,
            a.port(),
            self.cseq,
            self.cseq
        );
        let mut out = match body {
            Some((ct, b)) => format!("{head}Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n", b.len()).into_bytes(),
            None => {
                head.push_str("Content-Length: 0\r\n\r\n");
                head.into_bytes()
            }
        };
        if let Some((_, b)) = body {
            out.extend_from_slice(b);
        }
        out
    }

    fn auth(&self, nonce: &str, username: &str, password: &str) -> String {
        let uri = format!("sip:{SERVER}@{DOMAIN}");
        let r = client_response(username, DOMAIN, password, "REGISTER", &uri, nonce, None);
        format!(
            "Authorization: Digest username=\"{username}\", realm=\"{DOMAIN}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{r}\", algorithm=MD5\r\n"
        )
    }
}

fn keepalive_body(device: &str) -> Vec<u8> {
    format!("<?xml version=\"1.0\"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<SN>1</SN>\r\n<DeviceID>{device}</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n").into_bytes()
}

fn catalog_body(device: &str, sn: u32, sum: usize, items: &[(&str, &str)]) -> Vec<u8> {
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<Response>\r\n<CmdType>Catalog</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{device}</DeviceID>\r\n<SumNum>{sum}</SumNum>\r\n<DeviceList Num=\"{}\">\r\n",
        items.len()
    );
    for (id, name) in items {
        xml.push_str(&format!("<Item>\r\n<DeviceID>{id}</DeviceID>\r\n<Name>{name}</Name>\r\n<Status>ON</Status>\r\n</Item>\r\n"));
    }
    xml.push_str("</DeviceList>\r\n</Response>\r\n");
    xml.into_bytes()
}

const MANSCDP_CT: &str = "Application/MANSCDP+xml";

impl H {
    fn new() -> H {
        H::with(cfg())
    }

    fn with(cfg: EndpointConfig) -> H {
        let now = Instant::now();
        H { ep: Endpoint::new(cfg, now, 1_795_000_000_000, [7; 16], Vec::new()), now, out: Vec::new(), events: Vec::new() }
    }

    fn collect(&mut self) {
        while let Some(t) = self.ep.poll_transmit() {
            self.out.push(t);
        }
        while let Some(e) = self.ep.poll_event() {
            self.events.push(e);
        }
    }

    fn input(&mut self, from: Peer, bytes: &[u8]) {
        self.ep.handle_datagram(self.now, from, bytes);
        self.collect();
    }

    fn command(&mut self, c: Command) -> Outcome {
        let o = self.ep.handle_command(self.now, c);
        self.collect();
        o
    }

    /// Moves the virtual clock, firing every timeout on the way (as a driver would).
    fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        while let Some(t) = self.ep.poll_timeout().filter(|t| *t <= until) {
            self.now = t.max(self.now);
            self.ep.handle_timeout(self.now);
            self.collect();
        }
        self.now = until;
        self.ep.handle_timeout(self.now);
        self.collect();
    }

    fn take(&mut self) -> Vec<(Peer, SipMsg)> {
        std::mem::take(&mut self.out).into_iter().map(|t| (t.to, parse(&t.bytes).expect("endpoint sends valid SIP"))).collect()
    }

    fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// The one message sent, to `to`.
    fn sent_one(&mut self, to: Peer) -> SipMsg {
        let mut out = self.take();
        assert_eq!(out.len(), 1, "{:?}", out.iter().map(|(_, m)| m.inner.to_string()).collect::<Vec<_>>());
        let (p, m) = out.remove(0);
        assert_eq!(p, to);
        m
    }

    /// REGISTER with digest; returns the 200 and leaves the queries in `out`.
    fn register(&mut self, dev: &mut Dev) -> SipMsg {
        let first = dev.request("REGISTER", &format!("reg-{}", dev.id), "Expires: 3600\r\n", None);
        self.input(dev.peer, &first);
        let challenge = self.sent_one(dev.peer);
        assert_eq!(challenge.status(), Some(401));
        let nonce = nonce_of(&challenge);
        let auth = dev.auth(&nonce, &dev.id.clone(), PASSWORD);
        let second = dev.request("REGISTER", &format!("reg-{}", dev.id), &format!("{auth}Expires: 3600\r\n"), None);
        self.input(dev.peer, &second);
        let mut out = self.take();
        let (p, ok) = out.remove(0);
        assert_eq!((p, ok.status()), (dev.peer, Some(200)));
        self.out = out.into_iter().map(|(to, m)| Transmit { to, bytes: m.inner.to_string().into_bytes() }).collect();
        ok
    }

    /// Registers and answers both queries (DeviceInfo, a catalog with `CH`).
    fn online_device(&mut self, dev: &mut Dev) {
        self.register(dev);
        for (_, q) in self.take() {
            self.answer(dev, &q, 200, None);
            let text = String::from_utf8_lossy(q.body()).to_string();
            let sn: u32 = manscdp_sn(&text);
            let body = if text.contains("Catalog") {
                catalog_body(&dev.id, sn, 1, &[(CH, "cam")])
            } else {
                format!(
                    "<Response><CmdType>DeviceInfo</CmdType><SN>{sn}</SN><DeviceID>{}</DeviceID><Manufacturer>Hik</Manufacturer></Response>",
                    dev.id
                )
                .into_bytes()
            };
            let m = dev.request("MESSAGE", &format!("ans-{sn}"), "", Some((MANSCDP_CT, &body)));
            self.input(dev.peer, &m);
            assert_eq!(self.sent_one(dev.peer).status(), Some(200));
        }
        self.take_events();
    }

    fn answer(&mut self, dev: &Dev, req: &SipMsg, code: u16, body: Option<(&str, &[u8])>) {
        let reason = if code == 200 { "OK" } else { "Whatever" };
        let bytes = response(req, dev.peer.addr(), code, reason, "devtag", &[], body);
        self.input(dev.peer, &bytes);
    }

    /// Plays CH of `dev` to the point the INVITE is out; returns the handle and the INVITE.
    fn invite(&mut self, dev: &Dev) -> (PlayHandle, SipMsg) {
        let Outcome::Play(Ok(PlayStart::Open(handle))) =
            self.command(Command::Play { device_id: dev.id.clone(), channel_id: CH.into(), transport: MediaTransport::Udp, kind: PlayKind::Live })
        else {
            panic!("new play")
        };
        let ssrc = self.ep.next_ssrc(PlayKind::Live);
        self.command(Command::Invite { handle, ssrc, port: 30_000, media_ip: None });
        let invite = self.sent_one(dev.peer);
        assert_eq!(invite.method().map(|m| m.to_string()).as_deref(), Some("INVITE"));
        (handle, invite)
    }

    fn answered_invite(&mut self, dev: &Dev) -> Session {
        let (handle, invite) = self.invite(dev);
        let sdp = b"v=0\r\no=x 0 0 IN IP4 127.0.0.1\r\ns=Play\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=video 6000 RTP/AVP 96\r\na=rtpmap:96 PS/90000\r\ny=0100000002\r\n";
        self.answer(dev, &invite, 200, Some(("Application/SDP", sdp)));
        let ack = self.sent_one(dev.peer);
        assert_eq!(ack.method().map(|m| m.to_string()).as_deref(), Some("ACK"));
        let events = self.take_events();
        let Some(Event::PlayAnswered { handle: h, session, .. }) = events.into_iter().find(|e| matches!(e, Event::PlayAnswered { .. })) else {
            panic!("answered")
        };
        assert_eq!(h, handle);
        *session
    }
}

fn nonce_of(challenge: &SipMsg) -> String {
    let www = challenge.header("WWW-Authenticate").expect("challenge");
    www.split("nonce=\"").nth(1).unwrap().split('"').next().unwrap().to_string()
}

fn manscdp_sn(text: &str) -> u32 {
    crate::proto::sip::manscdp::element(text, "SN").unwrap().parse().unwrap()
}

fn method(m: &SipMsg) -> String {
    m.method().map(|m| m.to_string()).unwrap_or_default()
}

#[test]
fn register_binds_the_device_and_queries_follow_the_200() {
    let mut h = H::new();
    let mut dev = Dev::udp(DEV, addr(10, 5060));
    let ok = h.register(&mut dev);
    assert!(ok.header("Date").is_some_and(|d| d.starts_with("2026-11-18T")), "Date from the virtual clock");
    let queries = h.take();
    assert_eq!(queries.len(), 2);
    assert!(queries.iter().all(|(p, m)| *p == dev.peer && method(m) == "MESSAGE"));
    let d = h.ep.device(DEV).unwrap();
    assert!(h.ep.is_online(d, h.now));
    assert_eq!(d.binding, Some(dev.peer));
    assert!(h.take_events().iter().any(|e| matches!(e, Event::Registered { .. })));
    assert!(h.ep.take_registry_changes().is_some_and(|d| d.changed.len() == 1));
}

/// Defect 1: a keepalive from another address must not move the device's signalling
/// address (the next INVITE went to the sender, who could then feed its own video).
#[test]
fn spoofed_keepalive_is_refused_and_invites_still_go_to_the_device() {
    let mut h = H::new();
    let mut dev = Dev::udp(DEV, addr(10, 5060));
    h.online_device(&mut dev);
    let mut attacker = Dev::udp(DEV, addr(2, 5060));
    let ka = attacker.request("MESSAGE", "ka-evil", "", Some((MANSCDP_CT, &keepalive_body(DEV))));
    h.input(attacker.peer, &ka);
    assert_eq!(h.sent_one(attacker.peer).status(), Some(403));
    assert_eq!(h.ep.counters().spoofed, 1);
    assert_eq!(h.ep.counters().keepalives, 0);
    assert!(h.take_events().iter().any(|e| matches!(e, Event::Refused { reason: Refusal::WrongSource, .. })));
    let (_, invite) = h.invite(&dev); // sent_one asserted it went to dev.peer
    assert!(invite.body().starts_with(b"v=0"));
}

/// Defect 1: Catalog and DeviceInfo from another address replace nothing.
#[test]
fn spoofed_catalog_and_device_info_change_nothing() {
    let mut h = H::new();
    let mut dev = Dev::udp(DEV, addr(10, 5060));
    h.online_device(&mut dev);
    let _ = h.ep.take_registry_changes(); // a save of them: not what this test looks at
    let mut attacker = Dev::udp(DEV, addr(2, 40000));
    let junk: Vec<(String, String)> = (0..100).map(|i| (format!("junk{i}"), "x".to_string())).collect();
    let items: Vec<(&str, &str)> = junk.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let m = attacker.request("MESSAGE", "cat-evil", "", Some((MANSCDP_CT, &catalog_body(DEV, 1, items.len(), &items))));
    h.input(attacker.peer, &m);
    let info = format!("<Response><CmdType>DeviceInfo</CmdType><SN>1</SN><DeviceID>{DEV}</DeviceID><Manufacturer>Evil</Manufacturer></Response>");
    let m = attacker.request("MESSAGE", "info-evil", "", Some((MANSCDP_CT, info.as_bytes())));
    h.input(attacker.peer, &m);
    assert!(h.take().iter().all(|(_, r)| r.status() == Some(403)));
    let d = h.ep.device(DEV).unwrap();
    assert_eq!(d.channels.keys().collect::<Vec<_>>(), vec![CH]);
    assert_eq!(d.info.manufacturer, "Hik");
    assert!(h.ep.take_registry_changes().is_none(), "nothing to save");
    assert_eq!(h.ep.counters().spoofed, 2);
    // An unregistered id gets 403 and is counted as refused, not spoofed.
    let mut stranger = Dev::udp("34020000001320009999", addr(3, 5060));
    let ka = stranger.request("MESSAGE", "ka-x", "", Some((MANSCDP_CT, &keepalive_body("x"))));
    h.input(stranger.peer, &ka);
    assert_eq!(h.sent_one(stranger.peer).status(), Some(403));
}

/// Defect 1: BYE must match Call-ID, both tags and the dialog's peer.
#[test]
fn bye_must_match_the_dialog_and_come_from_the_device() {
    let mut h = H::new();
    let mut dev = Dev::udp(DEV, addr(10, 5060));
    h.online_device(&mut dev);
    let session = h.answered_invite(&dev);
    let call_id = session.dialog.call_id.clone();
    let our_tag = session.dialog.from_tag.clone();
    let bye = |d: &mut Dev, from_tag: &str, to_tag: &str| {
        d.cseq += 1;
        let a = d.peer.addr();
        format!("BYE sip:{SERVER}@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {a};branch=z9hG4bKbye{}\r\nFrom: <sip:{CH}@{DOMAIN}>;tag={from_tag}\r\nTo: <sip:{SERVER}@{DOMAIN}>;tag={to_tag}\r\nCall-ID: {call_id}\r\nCSeq: {} BYE\r\nContent-Length: 0\r\n\r\n", d.cseq, d.cseq + 100).into_bytes()
    };
    let mut attacker = Dev::udp(DEV, addr(2, 5060));
    let b = bye(&mut attacker, "devtag", &our_tag);
    h.input(attacker.peer, &b);
    assert_eq!(h.sent_one(attacker.peer).status(), Some(403));
    let b = bye(&mut dev, "othertag", &our_tag);
    h.input(dev.peer, &b);
    assert_eq!(h.sent_one(dev.peer).status(), Some(481));
    assert_eq!(h.ep.sessions().count(), 1, "still playing");
    let b = bye(&mut dev, "devtag", &our_tag);
    h.input(dev.peer, &b);
    assert_eq!(h.sent_one(dev.peer).status(), Some(200));
    assert_eq!(h.ep.sessions().count(), 0);
    assert!(h.take_events().iter().any(|e| matches!(e, Event::SessionEnded { reason: EndReason::DeviceBye, .. })));
}

/// Defect 2: the digest username must be the From user (the password is looked up by it).
#[test]
fn digest_username_must_be_the_from_user() {
    let mut h = H::new();
    let other = "34020000001320000077";
    let mut cfg = cfg();
    cfg.device_passwords.insert(other.into(), "otherpass".into());
    h.ep = Endpoint::new(cfg, h.now, 0, [1; 16], Vec::new());
    let mut dev = Dev::udp(DEV, addr(10, 5060));
    // Knows `other`'s password, claims to be DEV.
    h.input(dev.peer, &dev.request("REGISTER", "r", "", None));
    let nonce = nonce_of(&h.sent_one(dev.peer));
    let auth = dev.auth(&nonce, other, "otherpass");
    let m = dev.request("REGISTER", "r", &auth, None);
    h.input(dev.peer, &m);
    assert_eq!(h.sent_one(dev.peer).status(), Some(403));
    assert!(h.ep.device(DEV).is_none());
    assert_eq!(h.ep.counters().auth_failures, 1);
}

/// Defect 2: a stranger's REGISTER for the same id does not reset the device's nonce.
#[test]
fn a_stranger_cannot_reset_a_devices_challenge() {
    let mut h = H::new();
    let mut dev = Dev::udp(DEV, addr(10, 5060));
    h.input(dev.peer, &dev.request("REGISTER", "r", "", None));
    let nonce = nonce_of(&h.sent_one(dev.peer));
    let mut stranger = Dev::udp(DEV, addr(2, 5060));
    for _ in 0..5 {
        h.input(stranger.peer, &stranger.request("REGISTER", "s", "", None));
    }
    h.take();
    let auth = dev.auth(&nonce, DEV, PASSWORD);
    let m = dev.request("REGISTER", "r", &auth, None);
    h.input(dev.peer, &m);
    assert_eq!(h.take()[0].1.status(), Some(200), "the device's own nonce still works");
}

/// Defect 2: 12,000 made-up ids in 1.7 s from one source do not lock new devices out.
#[test]
fn a_register_flood_does_not_lock_out_new_devices() {
    let mut h = H::new();
    let mut flooder = Dev::udp("x", addr(66, 5060));
    for i in 0..12_000u32 {
        if i % 1000 == 0 {
            h.now += Duration::from_millis(140);
        }
        let m = flooder.request_from(&format!("3402000000132{i:07}"), "REGISTER", &format!("f{i}"), "", None);
        h.input(flooder.peer, &m);
    }
    let answers = h.take();
    let challenges = answers.iter().filter(|(_, m)| m.status() == Some(401)).count();
    assert!(challenges < 400, "the flooder is rate-limited: {challenges} challenges");
    // The rest are told to come back later (devices behind NAT with it), not left to guess.
    let told = answers.iter().filter(|(_, m)| m.status() == Some(503) && m.header("Retry-After").is_some_and(|r| r.parse::<u32>().is_ok())).count();
    assert_eq!(challenges + told, 12_000);
    assert!(h.ep.counters().rate_limited > 11_000);
    let warnings = h.take_events().iter().filter(|e| matches!(e, Event::Refused { reason: Refusal::RateLimited, .. })).count();
    assert!((1..=12).contains(&warnings), "said once each time it bites, not 11,000 times: {warnings}");
    let mut dev = Dev::udp(DEV, addr(10, 5060));
    h.register(&mut dev);
    assert!(h.ep.is_online(h.ep.device(DEV).unwrap(), h.now));
}

/// Defect 6: a second play of a channel while its INVITE is pending joins it.
#[test]
fn a_second_play_joins_the_pending_invite() {
    let mut h = H::new();
    let mut dev = Dev::udp(DEV, addr(10, 5060));
    h.online_device(&mut dev);
    let (handle, invite) = h.invite(&dev);
    let again = h.command(Command::Play { device_id: DEV.into(), channel_id: CH.into(), transport: MediaTransport::Udp, kind: PlayKind::Live });
    assert_eq!(again, Outcome::Play(Ok(PlayStart::Joined(handle))));
    assert!(h.take().is_empty(), "no second INVITE");
    h.answer(&dev, &invite, 200, Some(("Application/SDP", b"v=0\r\nc=IN IP4 127.0.0.1\r\nm=video 6000 RTP/AVP 96\r\n")));
    h.take();
    let Outcome::Play(Ok(PlayStart::Live(s))) =
        h.command(Command::Play { device_id: DEV.into(), channel_id: CH.into(), transport: MediaTransport::Udp, kind: PlayKind::Live })
    else {
        panic!()
    };
    assert_eq!(h.ep.sessions().count(), 1);
    assert_eq!(s.channel_id, CH);
}

/// The sub-stream (辅码流) is its own session beside the main stream's, asked for with the
/// device's attribute; stopping the channel ends both.
#[test]
fn the_sub_stream_is_a_session_of_its_own_with_the_devices_attribute() {
    let mut h = H::new();
    let mut dev = Dev::udp(DEV, addr(10, 5060));
    h.online_device(&mut dev);
    let main = h.answered_invite(&dev);
    assert!(!main.sub_stream);
    let kind = PlayKind::LiveSub(SubStreamAttr::StreamNumber);
    let Outcome::Play(Ok(PlayStart::Open(handle))) = h.command(Command::Play { device_id: DEV.into(), channel_id: CH.into(), transport: MediaTransport::Udp, kind })
    else {
        panic!("a new play for the sub-stream, not the main stream's session")
    };
    let ssrc = h.ep.next_ssrc(kind);
    assert_ne!(ssrc, main.ssrc);
    h.command(Command::Invite { handle, ssrc, port: 30_002, media_ip: None });
    let invite = h.sent_one(dev.peer);
    let sdp = String::from_utf8_lossy(invite.body()).to_string();
    assert!(sdp.contains("s=Play\r\n") && sdp.contains("a=streamnumber:1\r\n"), "{sdp}");
    h.answer(&dev, &invite, 200, Some(("Application/SDP", b"v=0\r\nc=IN IP4 127.0.0.1\r\nm=video 6002 RTP/AVP 96\r\n")));
    h.take();
    let events = h.take_events();
    let Some(Event::PlayAnswered { session, .. }) = events.into_iter().find(|e| matches!(e, Event::PlayAnswered { .. })) else { panic!("answered") };
    assert!(session.sub_stream && session.kind == "live");
    // Played again: each finds its own session.
    let again = |h: &mut H, kind| match h.command(Command::Play { device_id: DEV.into(), channel_id: CH.into(), transport: MediaTransport::Udp, kind }) {
        Outcome::Play(Ok(PlayStart::Live(s))) => s.ssrc,
        other => panic!("{other:?}"),
    };
    assert_eq!((again(&mut h, PlayKind::Live), again(&mut h, kind)), (main.ssrc, session.ssrc));
    assert_eq!(h.ep.sessions().count(), 2);
    for (attr, line) in [(SubStreamAttr::Stream, "a=stream:1"), (SubStreamAttr::StreamProfile, "a=streamprofile:1"), (SubStreamAttr::StreamMode, "a=streamMode:sub")] {
        assert_eq!(attr.sdp_line(), format!("{line}\r\n"));
    }
    assert_eq!(h.command(Command::Stop { device_id: DEV.into(), channel_id: CH.into() }), Outcome::Found(true));
    let byes = h.take().into_iter().filter(|(_, m)| method(m) == "BYE").count();
    assert_eq!((byes, h.ep.sessions().count()), (2, 0), "both ended");
}

/// Defect 7: stopping many sessions sends every BYE at once and ends them at once; nobody
/// waits for answers (devices that never answer cost a timer each, nothing more).
#[test]
fn stops_do_not_wait_for_bye_answers() {
    let mut h = H::new();
    let mut dev = Dev::udp(DEV, addr(10, 5060));
    h.online_device(&mut dev);
    // A device with no catalog may be asked for any channel.
    h.ep.devices.get_mut(DEV).unwrap().channels.clear();
    let mut channels = Vec::new();
    for i in 0..50 {
        let ch = format!("3402000000131{i:07}");
        let Outcome::Play(Ok(PlayStart::Open(handle))) =
            h.command(Command::Play { device_id: DEV.into(), channel_id: ch.clone(), transport: MediaTransport::Udp, kind: PlayKind::Live })
        else {
            panic!()
        };
        let ssrc = h.ep.next_ssrc(PlayKind::Live);
        h.command(Command::Invite { handle, ssrc, port: 30_000, media_ip: None });
        let invite = h.sent_one(dev.peer);
        h.answer(&dev, &invite, 200, Some(("Application/SDP", b"v=0\r\nm=video 6000 RTP/AVP 96\r\n")));
        h.take();
        channels.push(ch);
    }
    h.take_events();
    // Streams all gone at once (e.g. an idle timeout): one check ends all 50.
    let listed_at = h.now;
    h.command(Command::StreamsSeen { listed_at, streams: vec![] });
    let byes = h.take();
    assert_eq!(byes.iter().filter(|(_, m)| method(m) == "BYE").count(), 50);
    assert_eq!(h.take_events().iter().filter(|e| matches!(e, Event::SessionEnded { reason: EndReason::StreamGone, .. })).count(), 50);
    assert_eq!(h.ep.sessions().count(), 0);
    // Unanswered BYEs retransmit on their own timers and then give up.
    h.advance(TRANSACTION_TIMEOUT + Duration::from_secs(1));
    assert!(h.ep.counters().transactions_timed_out >= 50);
}

/// Defect 8: a malformed REGISTER gets 400 (and a Malformed event for the log).
#[test]
fn a_malformed_register_gets_400() {
    let mut h = H::new();
    let a = addr(10, 5060);
    let raw = format!(
        "REGISTER sip:{SERVER}@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {a};branch=z9hG4bKm\r\nFrom: <sip:{DEV}@{DOMAIN}>;tag=1\r\nTo: <sip:{DEV}@{DOMAIN}>\r\nCall-ID: m1\r\nCSeq: 1 REGISTER\r\nthis line is no header\r\nContent-Length: 0\r\n\r\n"
    );
    h.input(Peer::Udp(a), raw.as_bytes());
    assert_eq!(h.sent_one(Peer::Udp(a)).status(), Some(400));
    assert!(matches!(h.take_events()[..], [Event::Malformed { .. }]));
    // Parsed, but no user in From.
    let raw = format!(
        "REGISTER sip:{SERVER}@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {a};branch=z9hG4bKn\r\nFrom: <sip:{DOMAIN}>;tag=1\r\nTo: <sip:{DEV}@{DOMAIN}>\r\nCall-ID: m2\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
    );
    h.input(Peer::Udp(a), raw.as_bytes());
    assert_eq!(h.sent_one(Peer::Udp(a)).status(), Some(400));
    assert_eq!(h.ep.counters().malformed, 2);
}

/// Defect 9: a catalog whose Content-Length counts characters is read from the datagram; an
/// unreadable one is a counted error on the device, retried with backoff.
#[test]
fn catalog_answers_are_read_leniently_and_failures_retried() {
    let mut h = H::new();
    let mut dev = Dev::udp(DEV, addr(10, 5060));
    h.register(&mut dev);
    let queries = h.take();
    let (_, catalog_q) = queries.iter().find(|(_, m)| String::from_utf8_lossy(m.body()).contains("Catalog")).unwrap().clone();
    h.answer(&dev, &catalog_q, 200, None);
    let sn = manscdp_sn(&String::from_utf8_lossy(catalog_q.body()));
    // Content-Length in characters while the names are UTF-8 (3 bytes each).
    let body = catalog_body(DEV, sn, 2, &[(CH, "前门摄像机"), ("34020000001310000002", "后院")]);
    let chars = String::from_utf8(body.clone()).unwrap().chars().count();
    let mut m = dev.request("MESSAGE", "cat-utf8", "", Some((MANSCDP_CT, &body)));
    let text = String::from_utf8(m.clone()).unwrap().replace(&format!("Content-Length: {}", body.len()), &format!("Content-Length: {chars}"));
    m = text.into_bytes();
    h.input(dev.peer, &m);
    assert_eq!(h.sent_one(dev.peer).status(), Some(200));
    assert_eq!(h.ep.device(DEV).unwrap().channels.len(), 2);
    assert_eq!(h.ep.device(DEV).unwrap().channels[CH].name, "前门摄像机");
    assert_eq!(h.ep.counters().lenient_bodies, 1);

    // Ask again; this time the answer is unreadable.
    h.command(Command::Sync { device_id: DEV.into() });
    let q = h.take().into_iter().find(|(_, m)| String::from_utf8_lossy(m.body()).contains("Catalog")).unwrap().1;
    h.answer(&dev, &q, 200, None);
    let m = dev.request("MESSAGE", "cat-bad", "", Some((MANSCDP_CT, b"<Response><CmdType>Catalog</CmdType><SN>1")));
    h.input(dev.peer, &m);
    assert_eq!(h.sent_one(dev.peer).status(), Some(400));
    let d = h.ep.device(DEV).unwrap();
    assert!(d.last_error.as_deref().is_some_and(|e| e.contains("unreadable")), "{:?}", d.last_error);
    assert_eq!(h.ep.counters().query_failures, 1);
    assert!(h.take_events().iter().any(|e| matches!(e, Event::QueryFailed { cmd: QueryCmd::Catalog, retry_in, .. } if retry_in.as_secs() == 5)));
    // Retried after the backoff (the unanswered DeviceInfo query retransmits meanwhile).
    let asks_catalog = |out: Vec<(Peer, SipMsg)>| out.iter().any(|(_, m)| String::from_utf8_lossy(m.body()).contains("<CmdType>Catalog"));
    h.advance(Duration::from_secs(4));
    assert!(!asks_catalog(h.take()));
    h.advance(Duration::from_secs(2));
    assert!(asks_catalog(h.take()), "catalog asked again");
}

/// Defect 10: a stream used only by HLS or a recording keeps its session.
#[test]
fn hls_or_recording_use_keeps_a_session() {
    let mut h = H::new();
    let mut dev = Dev::udp(DEV, addr(10, 5060));
    h.online_device(&mut dev);
    let s = h.answered_invite(&dev);
    for _ in 0..10 {
        h.advance(Duration::from_secs(5));
        let listed_at = h.now;
        h.command(Command::StreamsSeen { listed_at, streams: vec![StreamUse { ssrc: s.ssrc, in_use: true }] });
    }
    assert_eq!(h.ep.sessions().count(), 1);
    for _ in 0..7 {
        h.advance(Duration::from_secs(5));
        let listed_at = h.now;
        h.command(Command::StreamsSeen { listed_at, streams: vec![StreamUse { ssrc: s.ssrc, in_use: false }] });
    }
    assert_eq!(h.ep.sessions().count(), 0, "unused for no_viewer_stop: stopped");
    assert!(h.take_events().iter().any(|e| matches!(e, Event::SessionEnded { reason: EndReason::NoViewers, .. })));
}

/// A listing made before a session went live does not end it.
#[test]
fn a_session_newer_than_the_listing_is_not_judged_by_it() {
    let mut h = H::new();
    let mut dev = Dev::udp(DEV, addr(10, 5060));
    h.online_device(&mut dev);
    let listed_at = h.now;
    h.now += Duration::from_millis(5);
    h.answered_invite(&dev);
    h.command(Command::StreamsSeen { listed_at, streams: vec![] });
    assert_eq!(h.ep.sessions().count(), 1);
}

/// INVITE over UDP: Timer A doubles from T1; a provisional answer stops it; at the play
/// timeout a proceeding INVITE is CANCELled; a 2xx after that is ACKed and BYE'd.
#[test]
fn invite_retransmits_then_cancels_and_a_late_2xx_is_closed() {
    let mut h = H::new();
    let mut dev = Dev::udp(DEV, addr(10, 5060));
    h.online_device(&mut dev);
    let start = h.now;
    let (handle, invite) = h.invite(&dev);
    let mut at = Vec::new();
    while h.now - start < Duration::from_millis(3600) {
        let before = h.now;
        let next = h.ep.poll_timeout().unwrap();
        h.advance(next - before);
        if h.take().iter().any(|(_, m)| method(m) == "INVITE") {
            at.push((h.now - start).as_millis());
        }
    }
    assert_eq!(at, vec![500, 1500, 3500], "Timer A: T1, 2·T1, 4·T1");
    h.answer(&dev, &invite, 100, None);
    h.advance(Duration::from_secs(4));
    assert!(h.take().is_empty(), "no retransmission once proceeding");
    h.advance(Duration::from_secs(3));
    let out = h.take();
    assert!(!out.is_empty() && out.iter().all(|(_, m)| method(m) == "CANCEL"), "CANCEL (retransmitted over UDP)");
    assert_eq!(out[0].1.branch(), invite.branch(), "CANCEL matches the INVITE's branch");
    assert!(h.take_events().iter().any(|e| matches!(e, Event::PlayFailed { handle: x, error: PlayError::Timeout, ssrc: Some(_) } if *x == handle)));
    h.answer(&dev, &invite, 200, Some(("Application/SDP", b"v=0\r\n")));
    let methods: Vec<String> = h.take().iter().map(|(_, m)| method(m)).collect();
    assert_eq!(methods, vec!["ACK", "BYE"], "no dialog leaks");
    assert_eq!(h.ep.sessions().count(), 0);
}

/// A rejected INVITE is ACKed on its own branch and reported.
#[test]
fn a_rejected_invite_is_acked_and_reported() {
    let mut h = H::new();
    let mut dev = Dev::udp(DEV, addr(10, 5060));
    h.online_device(&mut dev);
    let (handle, invite) = h.invite(&dev);
    h.answer(&dev, &invite, 486, None);
    let ack = h.sent_one(dev.peer);
    assert_eq!((method(&ack), ack.branch()), ("ACK".into(), invite.branch()));
    assert!(h.take_events().contains(&Event::PlayFailed { handle, error: PlayError::Rejected(486), ssrc: Some(invite_ssrc(&invite)) }));
}

fn invite_ssrc(invite: &SipMsg) -> u32 {
    crate::proto::sdp::Sdp::parse(invite.body()).unwrap().ssrc().unwrap()
}

/// A device repeating its 200 (our ACK was lost) gets the ACK again.
#[test]
fn a_repeated_2xx_is_acked_again() {
    let mut h = H::new();
    let mut dev = Dev::udp(DEV, addr(10, 5060));
    h.online_device(&mut dev);
    let (_, invite) = h.invite(&dev);
    let ok = response(&invite, dev.peer.addr(), 200, "OK", "devtag", &[], Some(("Application/SDP", b"v=0\r\n")));
    h.input(dev.peer, &ok);
    assert_eq!(method(&h.sent_one(dev.peer)), "ACK");
    h.input(dev.peer, &ok);
    assert_eq!(method(&h.sent_one(dev.peer)), "ACK");
    // The same 200 from elsewhere is not answered.
    h.input(Peer::Udp(addr(2, 5060)), &ok);
    assert!(h.take().is_empty());
}

/// Non-INVITE over UDP: Timer E doubles to T2, Timer F gives up at 64·T1; over TCP nothing
/// is retransmitted.
#[test]
fn non_invite_retransmits_capped_at_t2_and_gives_up() {
    let mut h = H::new();
    let mut dev = Dev::udp(DEV, addr(10, 5060));
    h.register(&mut dev);
    h.take();
    let start = h.now;
    let mut times = Vec::new();
    while h.now - start < TRANSACTION_TIMEOUT + Duration::from_secs(1) {
        let next = h.ep.poll_timeout().unwrap();
        h.advance(next - h.now);
        let n = h.take().len();
        if n > 0 {
            times.push(((h.now - start).as_millis(), n));
        }
    }
    let gaps: Vec<u128> = times.windows(2).map(|w| w[1].0 - w[0].0).take(5).collect();
    assert_eq!(times[0], (500, 2), "both queries retransmitted at T1");
    assert_eq!(gaps, vec![1000, 2000, 4000, 4000, 4000]);
    assert!(h.ep.device(DEV).unwrap().last_error.as_deref().is_some_and(|e| e.contains("not answered")));
}

/// A retransmitted REGISTER is answered with the same response, not handled again.
#[test]
fn a_retransmitted_request_is_absorbed() {
    let mut h = H::new();
    let mut dev = Dev::udp(DEV, addr(10, 5060));
    let first = dev.request("REGISTER", "r", "", None);
    h.input(dev.peer, &first);
    let a = h.take();
    h.input(dev.peer, &first);
    let b = h.take();
    assert_eq!(a[0].1.inner.to_string(), b[0].1.inner.to_string(), "same nonce, same tag");
    assert_eq!(h.ep.counters().retransmissions_absorbed, 1);
    assert_eq!(h.ep.counters().registers, 1);
}

/// Keepalives keep a device online; three missed intervals take it offline (one event).
#[test]
fn keepalive_expiry_takes_a_device_offline() {
    let mut h = H::new();
    let mut dev = Dev::udp(DEV, addr(10, 5060));
    h.online_device(&mut dev);
    for _ in 0..5 {
        h.advance(Duration::from_secs(60));
        let ka = dev.request("MESSAGE", "ka", "", Some((MANSCDP_CT, &keepalive_body(DEV))));
        h.input(dev.peer, &ka);
    }
    h.take();
    assert!(h.ep.is_online(h.ep.device(DEV).unwrap(), h.now));
    h.advance(Duration::from_secs(179));
    assert!(h.take_events().iter().all(|e| !matches!(e, Event::Offline { .. })));
    h.advance(Duration::from_secs(2));
    assert_eq!(h.take_events().iter().filter(|e| matches!(e, Event::Offline { .. })).count(), 1);
    let r = h.command(Command::Play { device_id: DEV.into(), channel_id: CH.into(), transport: MediaTransport::Udp, kind: PlayKind::Live });
    assert_eq!(r, Outcome::Play(Err(PlayError::Offline)));
}

/// A nonce expires: the answer to an old one is challenged again (stale), not accepted.
#[test]
fn an_expired_nonce_is_challenged_again() {
    let mut h = H::new();
    let mut dev = Dev::udp(DEV, addr(10, 5060));
    h.input(dev.peer, &dev.request("REGISTER", "r", "", None));
    let nonce = nonce_of(&h.sent_one(dev.peer));
    h.advance(CHALLENGE_TTL);
    let auth = dev.auth(&nonce, DEV, PASSWORD);
    let m = dev.request("REGISTER", "r", &auth, None);
    h.input(dev.peer, &m);
    let again = h.sent_one(dev.peer);
    assert_eq!(again.status(), Some(401));
    assert!(again.header("WWW-Authenticate").unwrap().contains("stale=TRUE"));
    assert_ne!(nonce_of(&again), nonce);
}

/// Answers are matched by (device, CmdType, SN): a stale SN does not complete the query, but
/// what it says is still applied.
#[test]
fn answers_match_by_sn_and_unsolicited_ones_still_apply() {
    let mut h = H::new();
    let mut dev = Dev::udp(DEV, addr(10, 5060));
    h.register(&mut dev);
    let queries = h.take();
    for (_, q) in &queries {
        h.answer(&dev, q, 200, None);
    }
    let catalog_sn =
        queries.iter().map(|(_, m)| String::from_utf8_lossy(m.body()).to_string()).find(|t| t.contains("Catalog")).map(|t| manscdp_sn(&t)).unwrap();
    let stale = catalog_body(DEV, catalog_sn + 1, 1, &[("old", "x")]);
    let m = dev.request("NOTIFY", "n1", "", Some((MANSCDP_CT, &stale)));
    h.input(dev.peer, &m);
    h.take();
    let d = h.ep.device(DEV).unwrap();
    assert_eq!(d.channels.keys().collect::<Vec<_>>(), vec!["old"], "applied");
    assert_eq!(d.queries.waiting_sn(QueryCmd::Catalog), Some(catalog_sn), "still waiting for its own answer");
    let right = catalog_body(DEV, catalog_sn, 1, &[(CH, "x")]);
    let m = dev.request("MESSAGE", "m1", "", Some((MANSCDP_CT, &right)));
    h.input(dev.peer, &m);
    assert_eq!(h.ep.device(DEV).unwrap().queries.waiting_sn(QueryCmd::Catalog), None);
}

/// 1,000 devices register, are queried and answer with their catalogs; the endpoint keeps
/// them all online and lists every channel.
#[test]
fn a_thousand_device_registration_and_catalog_storm() {
    let mut h = H::new();
    let mut devs: Vec<Dev> = (0..1000u32)
        .map(|i| Dev::udp(&format!("3402000000132{i:07}"), SocketAddr::from(([10, 9, (i / 250) as u8, (i % 250) as u8], 5060))))
        .collect();
    for d in devs.iter_mut() {
        h.online_device(d);
    }
    assert_eq!(h.ep.device_count(), 1000);
    assert!(h.ep.devices().all(|d| d.channels.len() == 1 && h.ep.is_online(d, h.now)));
    assert_eq!(h.ep.counters().query_failures, 0);
}

/// A TCP device is bound to its connection; when the connection goes, so does the binding.
#[test]
fn a_tcp_binding_ends_with_its_connection() {
    let mut h = H::new();
    let conn = 7;
    let mut dev = Dev { id: DEV.into(), peer: Peer::Tcp { conn, addr: addr(10, 40000) }, cseq: 0 };
    h.register(&mut dev);
    assert!(h.ep.is_bound_conn(conn));
    // The same address on another connection is not the device.
    let mut other = Dev { id: DEV.into(), peer: Peer::Tcp { conn: 8, addr: addr(10, 40000) }, cseq: 0 };
    let ka = other.request("MESSAGE", "ka", "", Some((MANSCDP_CT, &keepalive_body(DEV))));
    h.take();
    h.input(other.peer, &ka);
    assert_eq!(h.sent_one(other.peer).status(), Some(403));
    h.command(Command::ConnClosed { conn });
    assert!(!h.ep.is_bound_conn(conn));
    h.advance(TICK);
    assert!(h.take_events().iter().any(|e| matches!(e, Event::Offline { .. })));
}

/// Hostile sequences into handle_datagram: never a panic, outputs stay bounded.
#[test]
fn mutated_sequences_never_panic() {
    let mut h = H::new();
    let mut dev = Dev::udp(DEV, addr(10, 5060));
    h.online_device(&mut dev);
    let seeds: Vec<Vec<u8>> = vec![
        dev.request("REGISTER", "r", "Expires: 0\r\n", None),
        dev.request("MESSAGE", "m", "", Some((MANSCDP_CT, &keepalive_body(DEV)))),
        dev.request("MESSAGE", "c", "", Some((MANSCDP_CT, &catalog_body(DEV, 1, 3, &[(CH, "x")])))),
        dev.request("BYE", "b", "", None),
        crate::proto::sip::message::tests::HIK_INVITE_200.as_bytes().to_vec(),
    ];
    let mut rng = crate::proto::testutil::Rng::new(77);
    for i in 0..5_000 {
        let seed = &seeds[rng.below(seeds.len())];
        let m = rng.mutate(seed);
        h.ep.handle_datagram(h.now, dev.peer, &m);
        if i % 100 == 0 {
            h.now += Duration::from_millis(700);
            h.ep.handle_timeout(h.now);
        }
        while h.ep.poll_transmit().is_some() {}
        while h.ep.poll_event().is_some() {}
    }
}

/// Found by the sip_endpoint fuzz target: ids are copied into request URIs, headers and SDP,
/// so one with CRLF (or `<`, `;`, `@`) injected headers into the INVITE.
#[test]
fn ids_that_could_break_a_message_are_refused() {
    let mut h = H::new();
    let mut dev = Dev::udp(DEV, addr(10, 5060));
    h.online_device(&mut dev);
    h.ep.devices.get_mut(DEV).unwrap().channels.clear(); // any channel id may be asked for
    for bad in ["ch\r\nVia: x", "a<b", "a;b", "x@y", "", &"9".repeat(ID_CHARS_MAX + 1)] {
        let r = h.command(Command::Play { device_id: DEV.into(), channel_id: bad.into(), transport: MediaTransport::Udp, kind: PlayKind::Live });
        assert_eq!(r, Outcome::Play(Err(PlayError::UnknownChannel)), "{bad:?}");
    }
    assert!(h.take().is_empty());
    let mut odd = Dev::udp("a<b", addr(11, 5060));
    let m = odd.request("REGISTER", "r", "", None);
    h.input(odd.peer, &m);
    assert_eq!(h.sent_one(odd.peer).status(), Some(400));
    // A catalog item whose id could break an INVITE is not listed.
    h.command(Command::Sync { device_id: DEV.into() });
    let q = h.take().into_iter().find(|(_, m)| String::from_utf8_lossy(m.body()).contains("Catalog")).unwrap().1;
    let sn = manscdp_sn(&String::from_utf8_lossy(q.body()));
    let body = catalog_body(DEV, sn, 2, &[(CH, "ok"), ("bad;id", "x")]);
    let m = dev.request("MESSAGE", "c", "", Some((MANSCDP_CT, &body)));
    h.input(dev.peer, &m);
    assert_eq!(h.ep.device(DEV).unwrap().channels.keys().collect::<Vec<_>>(), vec![CH]);
}

/// Old (RFC 2543) stacks send no Via branch: answered, and their retransmissions absorbed by
/// Call-ID and CSeq.
#[test]
fn a_request_without_a_branch_is_still_answered() {
    let mut h = H::new();
    let a = addr(10, 5060);
    let raw = format!(
        "REGISTER sip:{SERVER}@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {a}\r\nFrom: <sip:{DEV}@{DOMAIN}>;tag=1\r\nTo: <sip:{DEV}@{DOMAIN}>\r\nCall-ID: old-1\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
    );
    h.input(Peer::Udp(a), raw.as_bytes());
    assert_eq!(h.sent_one(Peer::Udp(a)).status(), Some(401));
    h.input(Peer::Udp(a), raw.as_bytes());
    assert_eq!(h.sent_one(Peer::Udp(a)).status(), Some(401));
    assert_eq!(h.ep.counters().retransmissions_absorbed, 1);
}

/// A REGISTER refresh from the same address does not mark the registry for saving; a new
/// address does.
#[test]
fn only_registrations_that_change_something_are_saved() {
    let mut h = H::new();
    let mut dev = Dev::udp(DEV, addr(10, 5060));
    h.online_device(&mut dev);
    assert!(h.ep.take_registry_changes().is_some());
    h.register(&mut dev);
    h.take();
    assert!(h.ep.take_registry_changes().is_none(), "a refresh is not saved");
    let mut moved = Dev::udp(DEV, addr(10, 5070));
    h.register(&mut moved);
    h.take();
    assert!(h.ep.take_registry_changes().is_some_and(|d| d.changed[0].addr == Some(addr(10, 5070))));
}

/// A PTZ command goes to the bound device as a DeviceControl MESSAGE; the device's final
/// answer is the result: 200 done, an error status refused, silence a timeout. Unknown or
/// offline devices and channels are refused before anything is sent.
#[test]
fn device_control_reports_the_devices_answer() {
    let mut h = H::new();
    let ptz = crate::proto::sip::ptz::encode(crate::proto::sip::ptz::PtzAction::PresetCall(7)).unwrap();
    let control = |h: &mut H, device: &str, channel: &str| {
        h.command(Command::Control { device_id: device.into(), channel_id: channel.into(), command: DeviceCommand::Ptz(ptz) })
    };
    assert_eq!(control(&mut h, DEV, CH), Outcome::Control(Err(ControlError::UnknownDevice)));
    let mut dev = Dev::udp(DEV, addr(10, 5060));
    h.online_device(&mut dev);
    h.take();
    assert_eq!(control(&mut h, DEV, "34020000001319999999"), Outcome::Control(Err(ControlError::UnknownChannel)));
    assert_eq!(control(&mut h, DEV, "a\r\nX: y"), Outcome::Control(Err(ControlError::UnknownChannel)));
    assert!(h.take().is_empty(), "nothing sent for refused controls");

    let mut handles = Vec::new();
    for answer in [Some(200), Some(488), None] {
        let Outcome::Control(Ok(handle)) = control(&mut h, DEV, CH) else { panic!("control refused") };
        let msg = h.sent_one(dev.peer);
        let text = String::from_utf8_lossy(msg.body()).to_string();
        assert_eq!(method(&msg), "MESSAGE");
        assert!(text.contains("<CmdType>DeviceControl</CmdType>") && text.contains(&format!("<DeviceID>{CH}</DeviceID>")), "{text}");
        assert!(text.contains("<PTZCmd>A50F01820007003E</PTZCmd>"), "{text}");
        match answer {
            Some(code) => h.answer(&dev, &msg, code, None),
            None => h.advance(TRANSACTION_TIMEOUT + Duration::from_secs(1)),
        }
        handles.push(handle);
    }
    let done: Vec<_> = h
        .take_events()
        .into_iter()
        .filter_map(|e| if let Event::ControlDone { handle, result } = e { Some((handle, result)) } else { None })
        .collect();
    assert_eq!(done, vec![(handles[0], Ok(())), (handles[1], Err(ControlError::Rejected(488))), (handles[2], Err(ControlError::Timeout))]);
    // A keyframe request for the channel, a reboot for the device.
    h.take(); // the retransmissions of the unanswered one
    for (command, target, element) in
        [(DeviceCommand::KeyFrame, CH, "<IFameCmd>Send</IFameCmd>"), (DeviceCommand::Reboot, DEV, "<TeleBoot>Boot</TeleBoot>")]
    {
        assert!(matches!(h.command(Command::Control { device_id: DEV.into(), channel_id: target.into(), command }), Outcome::Control(Ok(_))));
        let text = String::from_utf8_lossy(h.sent_one(dev.peer).body()).to_string();
        assert!(text.contains(element) && text.contains(&format!("<DeviceID>{target}</DeviceID>")), "{text}");
    }
    // Past its keepalives the device is offline: nothing is sent.
    h.advance(Duration::from_secs(3600));
    h.take();
    assert_eq!(control(&mut h, DEV, CH), Outcome::Control(Err(ControlError::Offline)));
}

fn record_info_body(sn: u32, sum: usize, items: &[(&str, &str, &str)]) -> Vec<u8> {
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Response>\r\n<CmdType>RecordInfo</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{CH}</DeviceID>\r\n<SumNum>{sum}</SumNum>\r\n<RecordList Num=\"{}\">\r\n",
        items.len()
    );
    for (start, end, path) in items {
        xml.push_str(&format!("<Item>\r\n<DeviceID>{CH}</DeviceID>\r\n<Name>cam</Name>\r\n<FilePath>{path}</FilePath>\r\n<StartTime>{start}</StartTime>\r\n<EndTime>{end}</EndTime>\r\n<Secrecy>0</Secrecy>\r\n<Type>time</Type>\r\n</Item>\r\n"));
    }
    xml.push_str("</RecordList>\r\n</Response>\r\n");
    xml.into_bytes()
}

fn records_done(events: Vec<Event>) -> Vec<(ControlHandle, Result<RecordList, ControlError>)> {
    events.into_iter().filter_map(|e| if let Event::RecordsDone { handle, result } = e { Some((handle, result)) } else { None }).collect()
}

#[test]
fn record_info_merges_packets_by_sum_num_and_returns_what_came_at_the_deadline() {
    let mut h = H::new();
    let mut dev = Dev::udp(DEV, addr(10, 5060));
    h.online_device(&mut dev);
    h.take();
    // 2026-11-18T08:00:00+08:00 .. 10:00
    let (start, end) = (1_795_000_000 - 1_795_000_000 % 86_400, 1_795_000_000 - 1_795_000_000 % 86_400 + 7_200);
    let query = |h: &mut H| h.command(Command::Records { device_id: DEV.into(), channel_id: CH.into(), start, end, record_type: RecordType::All });
    let Outcome::Control(Ok(handle)) = query(&mut h) else { panic!("query refused") };
    let q = h.sent_one(dev.peer);
    let text = String::from_utf8_lossy(q.body()).to_string();
    assert!(text.contains("<CmdType>RecordInfo</CmdType>") && text.contains(&format!("<DeviceID>{CH}</DeviceID>")), "{text}");
    // The test's zone is +08:00: midnight UTC is 08:00 local.
    assert!(text.contains("<StartTime>2026-11-18T08:00:00</StartTime>") && text.contains("<EndTime>2026-11-18T10:00:00</EndTime>"), "{text}");
    h.answer(&dev, &q, 200, None);
    let sn = manscdp_sn(&text);
    let a = ("2026-11-18T08:00:00", "2026-11-18T08:30:00", "/sd/a");
    let b = ("2026-11-18T08:30:00", "2026-11-18T09:00:00", "/sd/b");
    let c = ("2026-11-18T09:00:00", "2026-11-18T09:30:00", "/sd/c");
    // Out of order, one packet repeated, SumNum 3.
    for (i, part) in [vec![c], vec![a], vec![a], vec![b]].into_iter().enumerate() {
        let m = dev.request("MESSAGE", &format!("rec-{i}"), "", Some((MANSCDP_CT, &record_info_body(sn, 3, &part))));
        h.input(dev.peer, &m);
        assert_eq!(h.sent_one(dev.peer).status(), Some(200));
    }
    let done = records_done(h.take_events());
    assert_eq!(done.len(), 1);
    let (got, Ok(list)) = &done[0] else { panic!("{done:?}") };
    assert_eq!(*got, handle);
    assert!(list.complete);
    assert_eq!(list.items.iter().map(|r| r.file_path.as_str()).collect::<Vec<_>>(), ["/sd/a", "/sd/b", "/sd/c"]);
    assert_eq!((list.items[0].start, list.items[0].end), (start, start + 1_800));

    // SumNum 0: an empty, complete answer at once.
    let Outcome::Control(Ok(_)) = query(&mut h) else { panic!() };
    let q = h.sent_one(dev.peer);
    let sn = manscdp_sn(&String::from_utf8_lossy(q.body()));
    h.answer(&dev, &q, 200, None);
    let m = dev.request("MESSAGE", "rec-empty", "", Some((MANSCDP_CT, &record_info_body(sn, 0, &[]))));
    h.input(dev.peer, &m);
    h.take();
    let done = records_done(h.take_events());
    assert!(matches!(&done[..], [(_, Ok(RecordList { items, complete: true, .. }))] if items.is_empty()), "{done:?}");

    // Two of three by the deadline: returned, marked incomplete. An answer under another SN
    // is not taken.
    let Outcome::Control(Ok(_)) = query(&mut h) else { panic!() };
    let q = h.sent_one(dev.peer);
    let sn = manscdp_sn(&String::from_utf8_lossy(q.body()));
    h.answer(&dev, &q, 200, None);
    for (i, (sn, part)) in [(sn, vec![a, b]), (sn + 1, vec![c])].into_iter().enumerate() {
        let m = dev.request("MESSAGE", &format!("rec-p{i}"), "", Some((MANSCDP_CT, &record_info_body(sn, 3, &part))));
        h.input(dev.peer, &m);
    }
    h.take();
    assert!(records_done(h.take_events()).is_empty());
    h.advance(Duration::from_secs(11));
    let done = records_done(h.take_events());
    assert!(matches!(&done[..], [(_, Ok(RecordList { items, complete: false, sum_num: 3 }))] if items.len() == 2), "{done:?}");

    // No answer at all: a timeout, not an empty list.
    let Outcome::Control(Ok(_)) = query(&mut h) else { panic!() };
    let q = h.sent_one(dev.peer);
    h.answer(&dev, &q, 200, None);
    h.advance(Duration::from_secs(11));
    assert_eq!(records_done(h.take_events()).into_iter().map(|d| d.1).collect::<Vec<_>>(), vec![Err(ControlError::Timeout)]);
}

#[test]
fn a_large_nvr_answer_of_hundreds_of_items_over_udp_is_taken_whole() {
    let mut h = H::new();
    let mut dev = Dev::udp(DEV, addr(10, 5060));
    h.online_device(&mut dev);
    h.take();
    let day = 1_795_000_000 - 1_795_000_000 % 86_400;
    let Outcome::Control(Ok(_)) =
        h.command(Command::Records { device_id: DEV.into(), channel_id: CH.into(), start: day, end: day + 86_400, record_type: RecordType::All })
    else {
        panic!()
    };
    let q = h.sent_one(dev.peer);
    h.answer(&dev, &q, 200, None);
    let sn = manscdp_sn(&String::from_utf8_lossy(q.body()));
    // A day in 2-minute files: 720 items, ten per MESSAGE as NVRs send them.
    let local = |s: i64| crate::proto::sip::gbtime::format_local(s, 8 * 3600);
    let items: Vec<(String, String, String)> = (0..720).map(|i| (local(day + i * 120), local(day + i * 120 + 120), format!("/r/{i}"))).collect();
    for (i, chunk) in items.chunks(10).enumerate() {
        let part: Vec<(&str, &str, &str)> = chunk.iter().map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str())).collect();
        let body = record_info_body(sn, 720, &part);
        assert!(body.len() < 8_000, "fits a datagram");
        let m = dev.request("MESSAGE", &format!("big-{i}"), "", Some((MANSCDP_CT, &body)));
        h.input(dev.peer, &m);
    }
    h.take();
    let done = records_done(h.take_events());
    let [(_, Ok(list))] = &done[..] else { panic!("{done:?}") };
    assert!(list.complete);
    assert_eq!(list.items.len(), 720);
    assert!(list.items.windows(2).all(|w| w[0].end == w[1].start));
}

#[test]
fn playback_invites_a_range_controls_it_in_dialog_and_ends_on_media_status() {
    let mut h = H::new();
    let mut dev = Dev::udp(DEV, addr(10, 5060));
    h.online_device(&mut dev);
    h.take();
    let play =
        |h: &mut H, kind: PlayKind| h.command(Command::Play { device_id: DEV.into(), channel_id: CH.into(), transport: MediaTransport::Udp, kind });
    assert_eq!(play(&mut h, PlayKind::Playback { start: 200, end: 100 }), Outcome::Play(Err(PlayError::BadRange)));
    let kind = PlayKind::Playback { start: 1_795_000_000, end: 1_795_000_600 };
    let Outcome::Play(Ok(PlayStart::Open(handle))) = play(&mut h, kind) else { panic!("new playback") };
    // A second playback of the same range is a session of its own.
    let Outcome::Play(Ok(PlayStart::Open(other))) = play(&mut h, kind) else { panic!("second playback") };
    assert_ne!(handle, other);
    h.command(Command::Abandon { handle: other, error: PlayError::Cancelled });
    let ssrc = h.ep.next_ssrc(kind);
    assert_eq!(crate::proto::ssrc::stream_id(ssrc).as_bytes()[0], b'1', "history SSRCs start with 1");
    h.command(Command::Invite { handle, ssrc, port: 30_002, media_ip: None });
    let invite = h.sent_one(dev.peer);
    let sdp = String::from_utf8_lossy(invite.body()).to_string();
    assert!(sdp.contains("s=Playback\r\nu=34020000001310000001:0\r\n") && sdp.contains("t=1795000000 1795000600\r\n"), "{sdp}");
    let answer =
        b"v=0\r\no=x 0 0 IN IP4 127.0.0.1\r\ns=Playback\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=video 6000 RTP/AVP 96\r\na=rtpmap:96 PS/90000\r\n";
    h.answer(&dev, &invite, 200, Some(("Application/SDP", answer)));
    assert_eq!(method(&h.sent_one(dev.peer)), "ACK");
    let Some(Event::PlayAnswered { session, .. }) = h.take_events().into_iter().find(|e| matches!(e, Event::PlayAnswered { .. })) else { panic!() };
    assert_eq!((session.kind, session.start, session.end), ("playback", Some(1_795_000_000), Some(1_795_000_600)));

    // Pause and a 4x speed: INFO in the dialog, CSeq rising, MANSRTSP bodies.
    let mut cseqs = Vec::new();
    for (action, expect) in
        [(PlaybackAction::Pause, "PAUSE RTSP/1.0\r\nCSeq: 1\r\n"), (PlaybackAction::Speed(400), "PLAY RTSP/1.0\r\nCSeq: 2\r\nScale: 4.00")]
    {
        let Outcome::Control(Ok(_)) = h.command(Command::PlaybackControl { ssrc, action }) else { panic!("control refused") };
        let info = h.sent_one(dev.peer);
        assert_eq!(method(&info), "INFO");
        assert_eq!(info.call_id(), invite.call_id());
        assert_eq!(info.content_type().as_deref(), Some("application/mansrtsp"));
        assert!(String::from_utf8_lossy(info.body()).starts_with(expect), "{}", String::from_utf8_lossy(info.body()));
        cseqs.push(info.cseq().unwrap().0);
        h.answer(&dev, &info, if cseqs.len() == 1 { 200 } else { 457 }, None);
    }
    assert!(cseqs[0] > invite.cseq().unwrap().0 && cseqs[1] > cseqs[0]);
    let results: Vec<_> =
        h.take_events().into_iter().filter_map(|e| if let Event::ControlDone { result, .. } = e { Some(result) } else { None }).collect();
    assert_eq!(results, vec![Ok(()), Err(ControlError::Rejected(457))]);
    // Live sessions take no MANSRTSP.
    assert_eq!(h.command(Command::PlaybackControl { ssrc: 7, action: PlaybackAction::Pause }), Outcome::Control(Err(ControlError::UnknownSession)));

    // MediaStatus 121 (not in the dialog: found by its channel) ends it with a BYE.
    let body = format!(
        "<?xml version=\"1.0\"?>\r\n<Notify>\r\n<CmdType>MediaStatus</CmdType>\r\n<SN>9</SN>\r\n<DeviceID>{CH}</DeviceID>\r\n<NotifyType>121</NotifyType>\r\n</Notify>\r\n"
    );
    let m = dev.request("MESSAGE", "media-status-1", "", Some((MANSCDP_CT, body.as_bytes())));
    h.input(dev.peer, &m);
    let sent = h.take();
    assert!(sent.iter().any(|(_, m)| m.status() == Some(200)));
    let bye = sent.iter().find(|(_, m)| method(m) == "BYE").expect("BYE").1.clone();
    assert!(bye.cseq().unwrap().0 > cseqs[1], "BYE after the INFOs in CSeq");
    let ended: Vec<_> = h
        .take_events()
        .into_iter()
        .filter_map(|e| if let Event::SessionEnded { ssrc, reason, .. } = e { Some((ssrc, reason)) } else { None })
        .collect();
    assert_eq!(ended, vec![(ssrc, EndReason::EndOfFile)]);
    assert_eq!(h.ep.sessions().count(), 0);
}

#[test]
fn a_download_offers_its_speed() {
    let mut h = H::new();
    let mut dev = Dev::udp(DEV, addr(10, 5060));
    h.online_device(&mut dev);
    h.take();
    let kind = PlayKind::Download { start: 1_795_000_000, end: 1_795_000_060, speed: 4 };
    let Outcome::Play(Ok(PlayStart::Open(handle))) =
        h.command(Command::Play { device_id: DEV.into(), channel_id: CH.into(), transport: MediaTransport::Udp, kind })
    else {
        panic!("new download")
    };
    let ssrc = h.ep.next_ssrc(kind);
    h.command(Command::Invite { handle, ssrc, port: 30_004, media_ip: None });
    let sdp = String::from_utf8_lossy(h.sent_one(dev.peer).body()).to_string();
    assert!(sdp.contains("s=Download\r\n") && sdp.contains("t=1795000000 1795000060\r\n") && sdp.contains("a=downloadspeed:4\r\n"), "{sdp}");
}

#[test]
fn asks_wait_for_the_devices_own_answer() {
    let mut h = H::new();
    let mut dev = Dev::udp(DEV, addr(10, 5060));
    h.online_device(&mut dev);
    h.take();
    let ask = |h: &mut H, ask: DeviceAsk| h.command(Command::Ask { device_id: DEV.into(), target: CH.into(), ask });
    let done = |h: &mut H| -> Vec<Result<Answer, ControlError>> {
        h.take_events().into_iter().filter_map(|e| if let Event::AskDone { result, .. } = e { Some(result) } else { None }).collect()
    };
    // RecordCmd: the 200 is not the answer; the Response MESSAGE with its SN is.
    let Outcome::Control(Ok(_)) = ask(&mut h, DeviceAsk::Record(true)) else { panic!() };
    let q = h.sent_one(dev.peer);
    let text = String::from_utf8_lossy(q.body()).to_string();
    assert!(text.contains("<RecordCmd>Record</RecordCmd>"), "{text}");
    h.answer(&dev, &q, 200, None);
    assert!(done(&mut h).is_empty());
    let sn = manscdp_sn(&text);
    for (other_sn, result) in [(sn + 1, "OK"), (sn, "ERROR")] {
        let body =
            format!("<Response><CmdType>DeviceControl</CmdType><SN>{other_sn}</SN><DeviceID>{CH}</DeviceID><Result>{result}</Result></Response>");
        let m = dev.request("MESSAGE", &format!("r-{other_sn}"), "", Some((MANSCDP_CT, body.as_bytes())));
        h.input(dev.peer, &m);
    }
    h.take();
    assert_eq!(done(&mut h), vec![Err(ControlError::DeviceError("ERROR".into()))], "only the answer with its SN counts");
    // Presets: two of three packets by the deadline are the answer; none is a timeout.
    let Outcome::Control(Ok(_)) = ask(&mut h, DeviceAsk::Presets) else { panic!() };
    let q = h.sent_one(dev.peer);
    h.answer(&dev, &q, 200, None);
    let sn = manscdp_sn(&String::from_utf8_lossy(q.body()));
    for id in [4, 2] {
        let body = format!(
            "<Response><CmdType>PresetQuery</CmdType><SN>{sn}</SN><DeviceID>{CH}</DeviceID><SumNum>3</SumNum><PresetList Num=\"1\"><Item><PresetID>{id}</PresetID><PresetName>p</PresetName></Item></PresetList></Response>"
        );
        let m = dev.request("MESSAGE", &format!("p-{id}"), "", Some((MANSCDP_CT, body.as_bytes())));
        h.input(dev.peer, &m);
    }
    h.take();
    assert!(done(&mut h).is_empty());
    h.advance(ASK_ANSWER_TIMEOUT + Duration::from_secs(1));
    let got = done(&mut h);
    assert!(matches!(&got[..], [Ok(Answer::Presets(p))] if p.iter().map(|p| p.id).collect::<Vec<_>>() == [2, 4]), "{got:?}");
    let Outcome::Control(Ok(_)) = ask(&mut h, DeviceAsk::Status) else { panic!() };
    let q = h.sent_one(dev.peer);
    h.answer(&dev, &q, 200, None);
    h.advance(ASK_ANSWER_TIMEOUT + Duration::from_secs(1));
    assert_eq!(done(&mut h), vec![Err(ControlError::Timeout)]);
}

#[test]
fn a_2022_device_gets_its_version_answered() {
    let mut h = H::new();
    let mut dev = Dev::udp(DEV, addr(10, 5060));
    let first = dev.request("REGISTER", "reg-v3", "Expires: 3600\r\nX-GB-Ver: 3.0\r\n", None);
    h.input(dev.peer, &first);
    let nonce = nonce_of(&h.sent_one(dev.peer));
    let auth = dev.auth(&nonce, DEV, PASSWORD);
    let second = dev.request("REGISTER", "reg-v3", &format!("{auth}Expires: 3600\r\nX-GB-Ver: 3.0\r\n"), None);
    h.input(dev.peer, &second);
    let ok = h.take().into_iter().map(|(_, m)| m).find(|m| m.status() == Some(200)).expect("200");
    assert_eq!(ok.header("X-GB-Ver").as_deref(), Some("3.0"));
    assert_eq!(h.ep.device(DEV).unwrap().gb_version.as_deref(), Some("3.0"));
    // The 2022 name of the keyframe request.
    h.take();
    assert!(matches!(
        h.command(Command::Control { device_id: DEV.into(), channel_id: CH.into(), command: DeviceCommand::KeyFrame }),
        Outcome::Control(Ok(_))
    ));
    let text = String::from_utf8_lossy(h.sent_one(dev.peer).body()).to_string();
    assert!(text.contains("<IFrameCmd>Send</IFrameCmd>"), "{text}");
    // A 2016 device says nothing and is told nothing.
    let mut old = Dev::udp("34020000001320000002", addr(11, 5060));
    assert!(h.register(&mut old).header("X-GB-Ver").is_none());
    // A stale nonce is an event (challenged again), not an authentication failure.
    let stale = dev.request("REGISTER", "reg-v3", &format!("{}Expires: 3600\r\n", dev.auth("0123456789abcdef", DEV, PASSWORD)), None);
    h.take();
    h.take_events();
    h.input(dev.peer, &stale);
    assert_eq!(h.sent_one(dev.peer).status(), Some(401));
    assert!(h.take_events().iter().any(|e| matches!(e, Event::Refused { reason: Refusal::StaleNonce, .. })));
    assert_eq!(h.ep.counters().auth_failures, 0);
}

/// Answered requests are timed from their first sending to their final answer, by method, on
/// the endpoint's clock; an INVITE offers a media node's address when one is given.
#[test]
fn transaction_latency_by_method_and_a_media_node_address_in_the_offer() {
    let mut h = H::new();
    let mut dev = Dev::udp(DEV, addr(10, 5060));
    h.online_device(&mut dev);
    let before = h.ep.latencies();
    let Outcome::Play(Ok(PlayStart::Open(handle))) =
        h.command(Command::Play { device_id: DEV.into(), channel_id: CH.into(), transport: MediaTransport::Udp, kind: PlayKind::Live })
    else {
        panic!("new play")
    };
    let ssrc = h.ep.next_ssrc(PlayKind::Live);
    h.command(Command::Invite { handle, ssrc, port: 30_100, media_ip: Some("10.0.0.11".into()) });
    let invite = h.sent_one(dev.peer);
    let offer = crate::proto::sdp::Sdp::parse(invite.body()).unwrap();
    assert_eq!(offer.connection.as_deref(), Some("IN IP4 10.0.0.11"));
    assert_eq!(offer.media[0].port, 30_100);
    h.advance(Duration::from_millis(300));
    h.take();
    h.answer(&dev, &invite, 200, Some(("Application/SDP", b"v=0\r\nm=video 6000 RTP/AVP 96\r\n")));
    let after = h.ep.latencies();
    let invite_i = super::TIMED_METHODS.iter().position(|m| *m == "INVITE").unwrap();
    let l = after.by_method[invite_i];
    assert_eq!(l.count, before.by_method[invite_i].count + 1);
    let bucket = super::LATENCY_BOUNDS_MS.iter().position(|b| *b == 500).unwrap();
    assert_eq!(l.counts[bucket], before.by_method[invite_i].counts[bucket] + 1, "300 ms lands in the 500 ms bucket");
    assert!(l.sum_ms >= 300);
}

#[test]
fn a_standby_follows_the_registry_offline_without_saving_it_again_and_never_over_a_binding() {
    let mut h = H::new();
    let mut dev = Dev::udp(DEV, addr(10, 5060));
    h.register(&mut dev);
    let _ = h.ep.take_registry_changes(); // a save of them: not what this test looks at
    let mut other = Device::new("34020000001320000099");
    other.last_error = Some("from the active control".into());
    let mut stale = Device::new(DEV);
    stale.last_error = Some("stale copy".into());
    let taken = h.ep.follow_registry(RegistryChanges { changed: vec![other, stale], removed: vec![DEV.into(), "34020000001320000077".into()] });
    assert_eq!(taken, 1, "only the unbound device: the bound one is neither replaced nor removed");
    let followed = h.ep.device("34020000001320000099").unwrap();
    assert_eq!(followed.last_error.as_deref(), Some("from the active control"));
    assert!(!h.ep.is_online(followed, h.now), "a followed device is offline here");
    let bound = h.ep.device(DEV).unwrap();
    assert_eq!((bound.binding, bound.last_error.as_deref()), (Some(dev.peer), None));
    assert!(h.ep.take_registry_changes().is_none(), "what was followed is not written back");
    assert_eq!(h.ep.follow_registry(RegistryChanges { changed: vec![], removed: vec!["34020000001320000099".into()] }), 1);
    assert!(h.ep.device("34020000001320000099").is_none());
}

#[test]
fn ssrcs_are_gb_ssrcs_nobody_can_predict() {
    let mut ep = Endpoint::new(cfg(), Instant::now(), 0, [7; 16], vec![]);
    let draws: Vec<u32> = (0..200).map(|_| ep.next_ssrc(PlayKind::Live)).collect();
    for s in &draws {
        // `0`, digits 4-8 of the domain (20000), four digits of sequence, never 0000.
        assert_eq!((s / 10_000, s % 10_000 != 0), (20_000, true), "{s:010}");
    }
    let distinct: std::collections::HashSet<u32> = draws.iter().copied().collect();
    assert!(distinct.len() > 180, "{} distinct of 200", distinct.len());
    let in_sequence = draws.windows(2).filter(|w| w[1] == w[0] + 1).count();
    assert!(in_sequence < 3, "{in_sequence} handed out in sequence: the next one could be guessed");
    let history = ep.next_ssrc(PlayKind::Playback { start: 1, end: 2 });
    assert_eq!(history / 10_000, 120_000, "history: a leading 1");
    let mut other = Endpoint::new(cfg(), Instant::now(), 0, [8; 16], vec![]);
    let others: Vec<u32> = (0..200).map(|_| other.next_ssrc(PlayKind::Live)).collect();
    assert!(draws.iter().zip(&others).filter(|(a, b)| a == b).count() < 5, "another seed, other SSRCs");
}

#[test]
fn media_comes_from_the_device_s_signalling_address_and_a_reachable_c_line() {
    use super::play::media_sources;
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    assert_eq!(media_sources(ip("192.168.1.64"), Some(ip("192.168.1.64"))), vec![ip("192.168.1.64")]);
    assert_eq!(media_sources(ip("192.168.1.64"), Some(ip("192.168.1.65"))), vec![ip("192.168.1.64"), ip("192.168.1.65")], "an NVR's media interface");
    assert_eq!(media_sources(ip("203.0.113.9"), Some(ip("192.168.1.64"))), vec![ip("203.0.113.9")], "behind NAT: the private c= says nothing");
    assert_eq!(media_sources(ip("203.0.113.9"), Some(ip("198.51.100.7"))), vec![ip("203.0.113.9"), ip("198.51.100.7")]);
    assert_eq!(media_sources(ip("::ffff:10.0.0.8"), None), vec![ip("10.0.0.8")]);
}

#[test]
fn a_play_answer_names_where_media_comes_from() {
    let mut h = H::new();
    let mut dev = Dev::udp(DEV, addr(9, 5060));
    h.online_device(&mut dev);
    let (_, invite) = h.invite(&dev);
    let ssrc: u32 = crate::proto::sdp::Sdp::parse(invite.body()).unwrap().gb_ssrc.unwrap().parse().unwrap();
    assert!(h.ep.plays.uses_ssrc(ssrc), "a pending INVITE's SSRC is in use");
    h.answer(&dev, &invite, 200, Some(("Application/SDP", b"v=0\r\nc=IN IP4 127.0.0.10\r\nm=video 6000 RTP/AVP 96\r\n")));
    let answered = h.take_events().into_iter().find_map(|e| if let Event::PlayAnswered { session, .. } = e { Some(session) } else { None });
    let session = answered.expect("answered");
    assert_eq!(session.media_from, vec![addr(9, 0).ip(), addr(10, 0).ip()]);
    assert!(h.ep.plays.uses_ssrc(ssrc));
}

mod broadcast;
mod upstream;
