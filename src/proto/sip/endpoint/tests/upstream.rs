//! Cascade on a virtual clock: this endpoint as the lower platform of a scripted upper one.

use super::*;
use crate::proto::sip::digest::DigestCredentials;
use std::collections::BTreeSet;

const UP: &str = "44010000002000000001";
const UP_DOMAIN: &str = "4401000000";
const LOCAL_ID: &str = "34020000002000000077";
const UP_PASSWORD: &str = "upper-secret";

fn up_addr() -> SocketAddr {
    addr(50, 5060)
}

fn upstream(shared: Shared) -> UpstreamConfig {
    UpstreamConfig {
        id: "city".into(),
        name: "site gmv".into(),
        server_id: UP.into(),
        domain: UP_DOMAIN.into(),
        address: up_addr(),
        tcp: false,
        password: UP_PASSWORD.into(),
        local_id: LOCAL_ID.into(),
        register_expires_s: 600,
        keepalive: Duration::from_secs(10),
        keepalive_misses_max: 3,
        charset: Charset::Gb2312,
        shared,
        channel_ids: ChannelIds::default(),
        groups: Vec::new(),
        channel_groups: Default::default(),
    }
}

fn h_with(shared: Shared) -> H {
    let mut c = cfg();
    c.upstreams = vec![upstream(shared)];
    H::with(c)
}

/// The requests sent to the upstream so far (retransmissions included), by method.
fn sent_up(h: &mut H, method_name: &str) -> Vec<SipMsg> {
    let (up, rest): (Vec<_>, Vec<_>) = h.take().into_iter().partition(|(to, m)| *to == Peer::Udp(up_addr()) && method(m) == method_name);
    h.out = rest.into_iter().map(|(to, m)| Transmit { to, bytes: m.inner.to_string().into_bytes() }).collect();
    up.into_iter().map(|(_, m)| m).collect()
}

/// Each request once (UDP retransmissions of an unanswered one dropped).
fn distinct(msgs: Vec<SipMsg>) -> Vec<SipMsg> {
    let mut seen = BTreeSet::new();
    msgs.into_iter().filter(|m| seen.insert((m.call_id(), m.cseq()))).collect()
}

/// The upstream answers `req`.
fn up_answer(h: &mut H, req: &SipMsg, code: u16, extra: &[(&str, String)]) {
    let bytes = response(req, addr(1, 5060), code, "X", "uptag", extra, None);
    h.input(Peer::Udp(up_addr()), &bytes);
}

/// Registers with the upstream (401, then 200); the REGISTERs sent.
fn register_up(h: &mut H) -> (SipMsg, SipMsg) {
    h.advance(Duration::ZERO);
    let first = sent_up(h, "REGISTER").remove(0);
    let challenge = format!(r#"Digest realm="{UP_DOMAIN}", nonce="n-1", qop="auth", algorithm=MD5"#);
    up_answer(h, &first, 401, &[("WWW-Authenticate", challenge)]);
    let second = sent_up(h, "REGISTER").remove(0);
    up_answer(h, &second, 200, &[("Expires", "600".into())]);
    (first, second)
}

/// A request from the upstream (or from `from` claiming to be it).
fn up_request(from: SocketAddr, method_name: &str, to_user: &str, call_id: &str, cseq: u32, extra: &str, body: Option<(&str, &[u8])>) -> Vec<u8> {
    let mut head = format!(
        "{method_name} sip:{to_user}@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {from};rport;branch=z9hG4bKu{call_id}{cseq}\r\nFrom: <sip:{UP}@{UP_DOMAIN}>;tag=upf\r\nTo: <sip:{to_user}@{DOMAIN}>{extra}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method_name}\r\nContact: <sip:{UP}@{from}>\r\nMax-Forwards: 70\r\n"
    );
    match body {
        Some((ct, b)) => {
            let mut out = format!("{head}Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n", b.len()).into_bytes();
            out.extend_from_slice(b);
            out
        }
        None => {
            head.push_str("Content-Length: 0\r\n\r\n");
            head.into_bytes()
        }
    }
}

fn offer(ssrc: &str, session: &str, media: &str) -> Vec<u8> {
    format!("v=0\r\no={UP} 0 0 IN IP4 127.0.0.50\r\ns={session}\r\nc=IN IP4 127.0.0.50\r\nt=0 0\r\n{media}a=recvonly\r\na=rtpmap:96 PS/90000\r\ny={ssrc}\r\n")
        .into_bytes()
}

/// Registered upward, sharing `shared`, with the device `DEV` (channel `CH`) online; nothing
/// sent left to take.
fn registered_with_device(shared: Shared) -> (H, Dev) {
    registered_with(upstream(shared))
}

/// `registered_with_device` for an upstream configured as `u`.
fn registered_with(u: UpstreamConfig) -> (H, Dev) {
    let mut c = cfg();
    c.upstreams = vec![u];
    let mut h = H::with(c);
    let mut dev = Dev::udp(DEV, addr(9, 5060));
    h.online_device(&mut dev);
    register_up(&mut h);
    h.take();
    (h, dev)
}

fn status_of(h: &mut H) -> UpstreamStatus {
    h.ep.upstreams().remove(0)
}

#[test]
fn registers_upward_with_digest_refreshes_and_keeps_alive() {
    let mut h = h_with(Shared::All);
    let (first, second) = register_up(&mut h);
    let text = first.inner.to_string();
    assert!(text.starts_with(&format!("REGISTER sip:{UP}@{UP_DOMAIN} SIP/2.0\r\n")), "{text}");
    assert_eq!(first.from_user().as_deref(), Some(LOCAL_ID));
    assert_eq!((first.expires(), first.header("Authorization")), (Some(600), None));
    // The answer to the challenge: same call, next CSeq, a response the upper can check.
    assert_eq!(second.call_id(), first.call_id());
    assert_eq!(second.cseq().unwrap().0, first.cseq().unwrap().0 + 1);
    let creds = DigestCredentials::parse(&second.header("Authorization").unwrap()).unwrap();
    assert_eq!((creds.username.as_str(), creds.realm.as_str(), creds.qop.as_deref()), (LOCAL_ID, UP_DOMAIN, Some("auth")));
    assert!(creds.verify("REGISTER", UP_PASSWORD) && !creds.verify("REGISTER", "wrong"));
    assert!(h.take_events().contains(&Event::UpstreamRegistered { upstream: "city".into() }));
    assert_eq!((status_of(&mut h).state, status_of(&mut h).registrations), (UpstreamState::Registered, 1));

    // A keepalive every 10 s, from our id; answered, nothing is missed.
    for _ in 0..3 {
        h.advance(Duration::from_secs(10));
        let ka = sent_up(&mut h, "MESSAGE");
        assert_eq!(ka.len(), 1);
        let body = String::from_utf8_lossy(ka[0].body()).to_string();
        assert!(body.contains("<CmdType>Keepalive</CmdType>") && body.contains(&format!("<DeviceID>{LOCAL_ID}</DeviceID>")), "{body}");
        assert!(body.starts_with("<?xml version=\"1.0\" encoding=\"GB2312\"?>"));
        up_answer(&mut h, &ka[0], 200, &[]);
    }
    assert_eq!(status_of(&mut h).keepalive_misses, 0);
    // Refreshed at half the granted time (300 s), answering the new challenge.
    let mut registers = Vec::new();
    for _ in 0..28 {
        h.advance(Duration::from_secs(10));
        for ka in sent_up(&mut h, "MESSAGE") {
            up_answer(&mut h, &ka, 200, &[]);
        }
        registers.extend(sent_up(&mut h, "REGISTER"));
    }
    let registers = distinct(registers);
    assert_eq!(registers.len(), 1, "one refresh in 280 s after the 30 s already gone");
    let challenge = format!(r#"Digest realm="{UP_DOMAIN}", nonce="n-2""#);
    up_answer(&mut h, &registers[0], 401, &[("WWW-Authenticate", challenge)]);
    let again = sent_up(&mut h, "REGISTER").remove(0);
    assert!(DigestCredentials::parse(&again.header("Authorization").unwrap()).unwrap().verify("REGISTER", UP_PASSWORD));
    up_answer(&mut h, &again, 200, &[("Expires", "600".into())]);
    assert_eq!((status_of(&mut h).state, status_of(&mut h).registrations), (UpstreamState::Registered, 2));
    assert!(!h.take_events().iter().any(|e| matches!(e, Event::UpstreamLost { .. })), "a refresh loses nothing");

    // A graceful stop: Expires 0.
    h.command(Command::UnregisterUpstreams);
    let bye = sent_up(&mut h, "REGISTER").remove(0);
    assert_eq!(bye.expires(), Some(0));
}

#[test]
fn a_wrong_password_and_a_silent_upstream_back_off_without_a_busy_loop() {
    let mut h = h_with(Shared::All);
    h.advance(Duration::ZERO);
    let first = sent_up(&mut h, "REGISTER").remove(0);
    let challenge = format!(r#"Digest realm="{UP_DOMAIN}", nonce="n-1""#);
    up_answer(&mut h, &first, 401, &[("WWW-Authenticate", challenge.clone())]);
    let second = sent_up(&mut h, "REGISTER").remove(0);
    // A second 401 to our credentials is a wrong password: no third try at once.
    up_answer(&mut h, &second, 401, &[("WWW-Authenticate", challenge)]);
    assert!(sent_up(&mut h, "REGISTER").is_empty());
    let s = status_of(&mut h);
    assert_eq!(s.state, UpstreamState::Retrying);
    assert!(s.last_error.unwrap().contains("wrong password"));
    // Then the upstream says nothing at all for ten minutes: tries spread out, doubling to
    // the most, each a transaction (retransmissions are the transaction's).
    let mut tries = BTreeSet::new();
    let mut first_try_at = Vec::new();
    for tick in 0..600 {
        h.advance(Duration::from_secs(1));
        for r in sent_up(&mut h, "REGISTER") {
            if tries.insert(r.cseq().unwrap().0) {
                first_try_at.push(tick);
            }
        }
    }
    assert!((5..=12).contains(&tries.len()), "{} tries in 600 s: {first_try_at:?}", tries.len());
    let gaps: Vec<i32> = first_try_at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.windows(2).all(|g| g[1] >= g[0]), "gaps grow: {gaps:?}");
    assert!(gaps.iter().all(|&g| g <= (transaction::TRANSACTION_TIMEOUT + REGISTER_RETRY_MAX).as_secs() as i32 + 1), "{gaps:?}");
    let failed = h.take_events().into_iter().filter(|e| matches!(e, Event::UpstreamRegisterFailed { .. })).count();
    assert!(failed >= tries.len() - 1);
}

#[test]
fn an_upstream_that_stops_answering_keepalives_is_lost_and_registered_again() {
    let mut h = h_with(Shared::All);
    register_up(&mut h);
    h.take_events();
    // Three keepalives go unanswered.
    for _ in 0..4 {
        h.advance(Duration::from_secs(10));
        sent_up(&mut h, "MESSAGE");
    }
    let events = h.take_events();
    assert!(events.iter().any(|e| matches!(e, Event::UpstreamLost { upstream, error } if upstream == "city" && error.contains("keepalives"))), "{events:?}");
    assert_eq!(status_of(&mut h).state, UpstreamState::Retrying);
    h.advance(Duration::from_millis(10));
    let again = sent_up(&mut h, "REGISTER");
    assert!(!again.is_empty(), "registered again at once");
    up_answer(&mut h, &again[0], 200, &[("Expires", "600".into())]);
    assert!(h.take_events().contains(&Event::UpstreamRegistered { upstream: "city".into() }));
}

#[test]
fn a_tcp_upstream_is_signalled_over_a_connection_this_side_dials() {
    let mut c = cfg();
    c.upstreams = vec![UpstreamConfig { tcp: true, ..upstream(Shared::All) }];
    let mut h = H::with(c);
    let dialled = Peer::TcpOut(up_addr());
    // What the upper sends comes back over the connection dialled (its address).
    let over_it = Peer::Tcp { conn: 7, addr: up_addr() };
    let answer = |h: &mut H, req: &SipMsg, code: u16, extra: &[(&str, String)]| {
        let bytes = response(req, addr(1, 5060), code, "X", "uptag", extra, None);
        h.input(over_it, &bytes);
    };
    h.advance(Duration::ZERO);
    let first = h.sent_one(dialled);
    assert_eq!(method(&first), "REGISTER");
    assert!(first.header("Via").unwrap().starts_with("SIP/2.0/TCP "), "{}", first.inner);
    assert!(first.header("Contact").unwrap().ends_with(";transport=tcp>"), "{}", first.inner);
    let challenge = format!(r#"Digest realm="{UP_DOMAIN}", nonce="n-1", qop="auth", algorithm=MD5"#);
    answer(&mut h, &first, 401, &[("WWW-Authenticate", challenge)]);
    let second = h.sent_one(dialled);
    assert!(second.header("Authorization").is_some());
    // TCP is reliable: nothing is sent again while the answer is awaited.
    h.advance(Duration::from_secs(4));
    assert!(h.take().iter().all(|(_, m)| method(m) != "REGISTER"), "no retransmission over TCP");
    answer(&mut h, &second, 200, &[("Expires", "600".into())]);
    assert_eq!(status_of(&mut h).state, UpstreamState::Registered);
    h.take_events();

    // The upper may send its requests over a connection of its own to our listener (same
    // host, another port): believed; the same over UDP is not.
    let info = query("DeviceInfo", 31, LOCAL_ID);
    let own = Peer::Tcp { conn: 8, addr: SocketAddr::new(up_addr().ip(), 41000) };
    h.input(own, &up_request(own.addr(), "MESSAGE", LOCAL_ID, "info-1", 1, "", Some(("Application/MANSCDP+xml", &info))));
    h.advance(Duration::from_millis(100));
    let (ok, answers): (Vec<_>, Vec<_>) = h.take().into_iter().partition(|(_, m)| m.status().is_some());
    assert_eq!(ok.iter().map(|(to, m)| (*to, m.status())).collect::<Vec<_>>(), [(own, Some(200))], "answered on the connection it came over");
    assert!(!answers.is_empty() && answers.iter().all(|(to, m)| *to == dialled && method(m) == "MESSAGE"), "our requests go over the connection dialled: {answers:?}");
    h.input(Peer::Udp(up_addr()), &up_request(up_addr(), "MESSAGE", LOCAL_ID, "info-2", 1, "", Some(("Application/MANSCDP+xml", &info))));
    assert_eq!(h.sent_one(Peer::Udp(up_addr())).status(), Some(403));

    // The connection cannot be made again (the upper went away): each keepalive fails at
    // once, not at its timeout; lost after three, the connection is dropped and REGISTER
    // says why.
    for n in 1..=3 {
        h.advance(Duration::from_secs(10));
        assert!(h.take().iter().any(|(to, m)| *to == dialled && method(m) == "MESSAGE"), "keepalive {n}");
        h.command(Command::DialFailed { to: up_addr(), error: "Connection refused (os error 111)".into() });
    }
    let events = h.take_events();
    assert!(events.iter().any(|e| matches!(e, Event::UpstreamLost { upstream, .. } if upstream == "city")), "{events:?}");
    assert!(events.contains(&Event::DropConnection { to: up_addr() }), "{events:?}");
    h.advance(Duration::from_millis(10));
    assert_eq!(method(&h.sent_one(dialled)), "REGISTER");
    h.command(Command::DialFailed { to: up_addr(), error: "Connection refused (os error 111)".into() });
    let status = status_of(&mut h);
    assert_eq!(status.state, UpstreamState::Retrying);
    assert_eq!(status.last_error.as_deref(), Some("no TCP connection to 127.0.0.50:5060: Connection refused (os error 111)"));
}

/// A device with 20 channels, online.
fn device_with_channels(h: &mut H) -> Vec<String> {
    let mut dev = Dev::udp(DEV, addr(9, 5060));
    h.register(&mut dev);
    let ids: Vec<String> = (0..20).map(|i| format!("3402000000131000{i:04}")).collect();
    for (_, q) in h.take() {
        h.answer(&dev, &q, 200, None);
        let text = String::from_utf8_lossy(q.body()).to_string();
        if text.contains("Catalog") {
            let sn = manscdp_sn(&text);
            let items: Vec<(&str, &str)> = ids.iter().map(|i| (i.as_str(), "摄像机")).collect();
            let m = dev.request("MESSAGE", "cat", "", Some((MANSCDP_CT, &catalog_body(DEV, sn, 20, &items))));
            h.input(dev.peer, &m);
        }
    }
    h.take();
    h.take_events();
    ids
}

fn query(cmd: &str, sn: u32, device_id: &str) -> Vec<u8> {
    format!("<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Query>\r\n<CmdType>{cmd}</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{device_id}</DeviceID>\r\n</Query>\r\n").into_bytes()
}

#[test]
fn the_upstream_sees_only_the_shared_channels_in_paced_gb2312_pages() {
    let ids: Vec<String> = (0..20).map(|i| format!("3402000000131000{i:04}")).collect();
    // Every other channel, and one this platform does not know.
    let shared: BTreeSet<String> = ids.iter().step_by(2).cloned().chain(["99999999991310000001".to_string()]).collect();
    let mut h = h_with(Shared::Channels(shared));
    assert_eq!(device_with_channels(&mut h), ids);
    let h = &mut h;
    register_up(h);
    h.take();

    // From another address claiming to be the upstream: refused, nothing sent up.
    let spoof = up_request(addr(66, 5060), "MESSAGE", LOCAL_ID, "q0", 1, "", Some((MANSCDP_CT, &query("Catalog", 7, LOCAL_ID))));
    h.input(Peer::Udp(addr(66, 5060)), &spoof);
    assert_eq!(h.sent_one(Peer::Udp(addr(66, 5060))).status(), Some(403));
    assert!(h.take_events().iter().any(|e| matches!(e, Event::Refused { reason: Refusal::WrongSource, .. })));
    h.advance(Duration::from_secs(1));
    assert!(sent_up(h, "MESSAGE").iter().all(|m| !String::from_utf8_lossy(m.body()).contains("Catalog")));

    // Malformed: 400.
    let bad = up_request(up_addr(), "MESSAGE", LOCAL_ID, "q1", 1, "", Some((MANSCDP_CT, b"<Query><SN>1</SN></Query>")));
    h.input(Peer::Udp(up_addr()), &bad);
    assert_eq!(h.sent_one(Peer::Udp(up_addr())).status(), Some(400));

    let q = up_request(up_addr(), "MESSAGE", LOCAL_ID, "q2", 1, "", Some((MANSCDP_CT, &query("Catalog", 4321, LOCAL_ID))));
    h.input(Peer::Udp(up_addr()), &q);
    assert_eq!(h.sent_one(Peer::Udp(up_addr())).status(), Some(200), "answered first, the pages follow");
    // Paced: one page, then the next a moment later.
    h.advance(Duration::ZERO);
    let mut pages = sent_up(h, "MESSAGE");
    assert_eq!(pages.len(), 1);
    h.advance(Duration::from_millis(5));
    assert!(sent_up(h, "MESSAGE").is_empty());
    h.advance(Duration::from_secs(1));
    pages.extend(sent_up(h, "MESSAGE"));
    let pages = distinct(pages);
    assert_eq!(pages.len(), 2, "10 shared channels known: pages of at most {CATALOG_ITEMS_PER_MESSAGE}");
    let mut seen = BTreeSet::new();
    for p in &pages {
        let raw = p.body();
        assert!(raw.starts_with(b"<?xml version=\"1.0\" encoding=\"GB2312\"?>"));
        let (text, _) = crate::proto::sip::text::decode_body(raw);
        let m = crate::proto::sip::manscdp::parse(&text).unwrap();
        assert_eq!((m.sn, m.device_id.as_str()), (Some(4321), LOCAL_ID));
        let crate::proto::sip::manscdp::Body::Catalog { sum_num, items } = m.body else { panic!("{text}") };
        assert_eq!(sum_num, 10);
        assert!(items.len() <= CATALOG_ITEMS_PER_MESSAGE);
        for it in items {
            assert_eq!(it.name, "摄像机", "GB2312 both ways");
            seen.insert(it.device_id);
        }
    }
    let known_shared: BTreeSet<String> = ids.iter().step_by(2).cloned().collect();
    assert_eq!(seen, known_shared, "the shared channels, and only those");

    // DeviceInfo names this platform and the count it shares, right after its 200, even with
    // a catalog query on its heels (as an upper platform asks both at registration).
    let q = up_request(up_addr(), "MESSAGE", LOCAL_ID, "q4", 1, "", Some((MANSCDP_CT, &query("DeviceInfo", 9, LOCAL_ID))));
    h.input(Peer::Udp(up_addr()), &q);
    let q = up_request(up_addr(), "MESSAGE", LOCAL_ID, "q5", 1, "", Some((MANSCDP_CT, &query("Catalog", 10, LOCAL_ID))));
    h.input(Peer::Udp(up_addr()), &q);
    h.advance(Duration::from_secs(1));
    let sent = distinct(sent_up(h, "MESSAGE"));
    let texts: Vec<String> = sent.iter().map(|m| crate::proto::sip::text::decode_body(m.body()).0).collect();
    let info = texts.iter().find(|t| t.contains("<CmdType>DeviceInfo</CmdType>")).expect("DeviceInfo answered");
    assert!(info.contains("<DeviceName>site gmv</DeviceName>") && info.contains("<Channel>10</Channel>"), "{info}");
    assert_eq!(texts.iter().filter(|t| t.contains("<CmdType>Catalog</CmdType>") && t.contains("<SN>10</SN>")).count(), 2, "and the catalog's pages");
    // DeviceStatus of a channel not shared is 404.
    h.take();
    let q = up_request(up_addr(), "MESSAGE", LOCAL_ID, "q6", 1, "", Some((MANSCDP_CT, &query("DeviceStatus", 11, &ids[1]))));
    h.input(Peer::Udp(up_addr()), &q);
    assert_eq!(h.sent_one(Peer::Udp(up_addr())).status(), Some(404));
}

#[test]
fn an_upstream_invite_is_answered_resent_until_acked_and_hung_up_both_ways() {
    let (mut h, _) = registered_with_device(Shared::Channels([CH.to_string()].into()));
    h.take_events();
    let up = Peer::Udp(up_addr());
    let media = "m=video 36000 RTP/AVP 96\r\n";

    // Not shared, from a stranger, playback: refused.
    let other = up_request(up_addr(), "INVITE", "34020000001310009999", "i0", 1, "", Some(("Application/SDP", &offer("0100000001", "Play", media))));
    h.input(up, &other);
    assert_eq!(h.sent_one(up).status(), Some(404));
    let spoof = up_request(addr(66, 5060), "INVITE", CH, "i1", 1, "", Some(("Application/SDP", &offer("0100000001", "Play", media))));
    h.input(Peer::Udp(addr(66, 5060)), &spoof);
    assert_eq!(h.sent_one(Peer::Udp(addr(66, 5060))).status(), Some(403));
    let playback = up_request(up_addr(), "INVITE", CH, "i2", 1, "", Some(("Application/SDP", &offer("1100000001", "Playback", media))));
    h.input(up, &playback);
    assert_eq!(h.sent_one(up).status(), Some(488));
    assert!(!h.take_events().iter().any(|e| matches!(e, Event::UpstreamPlay(_))));

    // Live over UDP: 100, then the driver is asked.
    let invite = up_request(up_addr(), "INVITE", CH, "i3", 1, "", Some(("Application/SDP", &offer("0100000042", "Play", media))));
    h.input(up, &invite);
    assert_eq!(h.sent_one(up).status(), Some(100));
    let events = h.take_events();
    let Some(Event::UpstreamPlay(play)) = events.into_iter().find(|e| matches!(e, Event::UpstreamPlay(_))) else { panic!("asked") };
    assert_eq!((play.device_id.as_str(), play.channel_id.as_str(), play.ssrc), (DEV, CH, 100_000_042));
    assert_eq!(play.media, UpstreamMedia::Udp("127.0.0.50:36000".parse().unwrap()));
    // The same SSRC for the same channel again: refused.
    let twin = up_request(up_addr(), "INVITE", CH, "i4", 1, "", Some(("Application/SDP", &offer("0100000042", "Play", media))));
    h.input(up, &twin);
    assert_eq!(h.sent_one(up).status(), Some(488));

    let answer = UpstreamMediaAnswer { port: 40_002, media_ip: None };
    assert_eq!(h.command(Command::UpstreamAnswer { handle: play.handle, result: Ok(answer) }), Outcome::Found(true));
    let ok = h.sent_one(up);
    assert_eq!(ok.status(), Some(200));
    let sdp = String::from_utf8_lossy(ok.body()).to_string();
    assert!(sdp.contains("m=video 40002 RTP/AVP 96") && sdp.contains("y=0100000042") && sdp.contains("a=sendonly"), "{sdp}");
    let our_tag = ok.to_tag().unwrap();
    // A retransmitted INVITE gets the 200 again; without an ACK the 200 goes again itself.
    h.input(up, &invite);
    assert_eq!(h.sent_one(up).status(), Some(200));
    h.advance(Duration::from_millis(600));
    assert_eq!(h.sent_one(up).status(), Some(200));
    let ack = up_request(up_addr(), "ACK", CH, "i3", 1, &format!(";tag={our_tag}"), None);
    h.input(up, &ack);
    h.advance(Duration::from_secs(5));
    assert!(h.take().iter().all(|(_, m)| m.status() != Some(200)), "ACKed: no more 200s");
    // The upstream hangs up.
    let bye = up_request(up_addr(), "BYE", CH, "i3", 2, &format!(";tag={our_tag}"), None);
    h.input(up, &bye);
    assert_eq!(h.sent_one(up).status(), Some(200));
    assert!(h.take_events().contains(&Event::UpstreamPlayEnded { handle: play.handle, reason: UpstreamEnd::UpstreamBye }));

    // Over TCP, the upstream listening: we dial; then we hang up.
    let tcp = "m=video 36002 TCP/RTP/AVP 96\r\na=setup:passive\r\na=connection:new\r\n";
    let invite = up_request(up_addr(), "INVITE", CH, "i5", 1, "", Some(("Application/SDP", &offer("0100000043", "Play", tcp))));
    h.input(up, &invite);
    h.take();
    let Some(Event::UpstreamPlay(play)) = h.take_events().into_iter().find(|e| matches!(e, Event::UpstreamPlay(_))) else { panic!("asked") };
    assert_eq!(play.media, UpstreamMedia::TcpDial("127.0.0.50:36002".parse().unwrap()));
    h.command(Command::UpstreamAnswer { handle: play.handle, result: Ok(UpstreamMediaAnswer { port: 40_004, media_ip: None }) });
    let ok = h.sent_one(up);
    assert!(String::from_utf8_lossy(ok.body()).contains("a=setup:active"));
    let our_tag = ok.to_tag().unwrap();
    h.input(up, &up_request(up_addr(), "ACK", CH, "i5", 1, &format!(";tag={our_tag}"), None));
    assert_eq!(h.command(Command::UpstreamHangUp { handle: play.handle }), Outcome::Found(true));
    let bye = sent_up(&mut h, "BYE").remove(0);
    assert_eq!(bye.call_id().as_deref(), Some("i5"));
    assert_eq!((bye.from_tag(), bye.to_tag().as_deref()), (Some(our_tag), Some("upf")));
    assert!(bye.inner.to_string().starts_with(&format!("BYE sip:{UP}@{} SIP/2.0", up_addr())), "to the Contact");

    // The upstream sets up a third and never ACKs: ended, with a BYE.
    let invite = up_request(up_addr(), "INVITE", CH, "i6", 1, "", Some(("Application/SDP", &offer("0100000044", "Play", media))));
    h.input(up, &invite);
    h.take();
    let Some(Event::UpstreamPlay(play)) = h.take_events().into_iter().find(|e| matches!(e, Event::UpstreamPlay(_))) else { panic!("asked") };
    h.command(Command::UpstreamAnswer { handle: play.handle, result: Ok(UpstreamMediaAnswer { port: 40_006, media_ip: None }) });
    h.advance(transaction::TRANSACTION_TIMEOUT + Duration::from_secs(1));
    assert!(h.take_events().contains(&Event::UpstreamPlayEnded { handle: play.handle, reason: UpstreamEnd::NoAck }));
    assert!(!sent_up(&mut h, "BYE").is_empty());
    // A refusal from the driver is the INVITE's answer.
    let invite = up_request(up_addr(), "INVITE", CH, "i7", 1, "", Some(("Application/SDP", &offer("0100000045", "Play", media))));
    h.input(up, &invite);
    h.take();
    let Some(Event::UpstreamPlay(play)) = h.take_events().into_iter().find(|e| matches!(e, Event::UpstreamPlay(_))) else { panic!("asked") };
    h.command(Command::UpstreamAnswer { handle: play.handle, result: Err(UpstreamRefusal::Unavailable) });
    assert_eq!(h.sent_one(up).status(), Some(480));
    assert_eq!(status_of(&mut h).sessions, 0);
}

#[test]
fn a_device_control_from_above_reaches_the_device_as_it_came() {
    let (mut h, dev) = registered_with_device(Shared::Channels([CH.to_string()].into()));
    let up = Peer::Udp(up_addr());
    let control = |channel: &str| {
        format!("<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Control>\r\n<CmdType>DeviceControl</CmdType>\r\n<SN>77</SN>\r\n<DeviceID>{channel}</DeviceID>\r\n<PTZCmd>A50F01021F0000D6</PTZCmd>\r\n</Control>\r\n")
    };
    let m = up_request(up_addr(), "MESSAGE", CH, "c1", 1, "", Some((MANSCDP_CT, control(CH).as_bytes())));
    h.input(up, &m);
    let out = h.take();
    assert!(out.iter().any(|(to, m)| *to == up && m.status() == Some(200)));
    let relayed: Vec<&SipMsg> = out.iter().filter(|(to, m)| *to == dev.peer && method(m) == "MESSAGE").map(|(_, m)| m).collect();
    assert_eq!(relayed.len(), 1);
    let body = String::from_utf8_lossy(relayed[0].body()).to_string();
    assert!(body.contains("<PTZCmd>A50F01021F0000D6</PTZCmd>") && body.contains(&format!("<DeviceID>{CH}</DeviceID>")), "{body}");
    // Not shared: 404, nothing reaches a device.
    let other = "34020000001310000002";
    let m = up_request(up_addr(), "MESSAGE", other, "c2", 1, "", Some((MANSCDP_CT, control(other).as_bytes())));
    h.input(up, &m);
    assert_eq!(h.sent_one(up).status(), Some(404));
}

#[test]
fn recordings_and_playback_from_above_go_to_the_device_and_back() {
    let (mut h, _) = registered_with_device(Shared::Channels([CH.to_string()].into()));
    h.take_events();
    let up = Peer::Udp(up_addr());

    // RecordInfo: the local times (+08:00 here) become unix seconds for the driver's search.
    let q = format!(
        "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Query>\r\n<CmdType>RecordInfo</CmdType>\r\n<SN>555</SN>\r\n<DeviceID>{CH}</DeviceID>\r\n<StartTime>2026-12-05T08:00:00</StartTime>\r\n<EndTime>2026-12-05T09:00:00</EndTime>\r\n<Type>all</Type>\r\n</Query>\r\n"
    );
    h.input(up, &up_request(up_addr(), "MESSAGE", CH, "r1", 1, "", Some((MANSCDP_CT, q.as_bytes()))));
    assert_eq!(h.sent_one(up).status(), Some(200));
    let events = h.take_events();
    let Some(Event::UpstreamRecords(ask)) = events.into_iter().find(|e| matches!(e, Event::UpstreamRecords(_))) else { panic!("asked") };
    let start = 1_796_428_800; // 2026-12-05T00:00:00Z = 08:00 at +08:00
    assert_eq!((ask.upstream.as_str(), ask.sn, ask.device_id.as_str(), ask.channel_id.as_str()), ("city", 555, DEV, CH));
    assert_eq!((ask.start, ask.end, ask.record_type), (start, start + 3600, RecordType::All));
    let item = |s: i64| Recording { start: s, end: s + 600, record_type: "time".into(), name: "cam".into(), ..Default::default() };
    let items: Vec<Recording> = (0..10).map(|k| item(start + k * 600)).collect();
    h.command(Command::UpstreamRecordsAnswer { upstream: "city".into(), sn: 555, channel_id: CH.into(), items });
    h.advance(Duration::from_secs(1));
    let pages = distinct(sent_up(&mut h, "MESSAGE"));
    let texts: Vec<String> = pages.iter().map(|m| crate::proto::sip::text::decode_body(m.body()).0).collect();
    assert_eq!(texts.len(), 2, "10 recordings in pages of {CATALOG_ITEMS_PER_MESSAGE}");
    let mut got = 0;
    for t in &texts {
        let m = crate::proto::sip::manscdp::parse(t).unwrap();
        assert_eq!((m.sn, m.device_id.as_str()), (Some(555), CH));
        let crate::proto::sip::manscdp::Body::RecordInfo { sum_num, items } = m.body else { panic!("{t}") };
        assert_eq!(sum_num, 10);
        got += items.len();
    }
    assert_eq!(got, 10);
    assert!(texts[0].contains("<StartTime>2026-12-05T08:00:00</StartTime>"), "local times again: {}", texts[0]);
    // Not shared: 404.
    let other = q.replace(CH, "34020000001310000002");
    h.input(up, &up_request(up_addr(), "MESSAGE", "34020000001310000002", "r2", 1, "", Some((MANSCDP_CT, other.as_bytes()))));
    assert_eq!(h.sent_one(up).status(), Some(404));

    // A playback of a range: its own kind to the driver, its range in the answer.
    let sdp = format!(
        "v=0\r\no={UP} 0 0 IN IP4 127.0.0.50\r\ns=Playback\r\nu={CH}:0\r\nc=IN IP4 127.0.0.50\r\nt={start} {}\r\nm=video 36010 RTP/AVP 96\r\na=recvonly\r\na=rtpmap:96 PS/90000\r\ny=1100000050\r\n",
        start + 600
    );
    h.input(up, &up_request(up_addr(), "INVITE", CH, "p1", 1, "", Some(("Application/SDP", sdp.as_bytes()))));
    h.take();
    let Some(Event::UpstreamPlay(play)) = h.take_events().into_iter().find(|e| matches!(e, Event::UpstreamPlay(_))) else { panic!("asked") };
    assert_eq!(play.kind, PlayKind::Playback { start: start as u64, end: start as u64 + 600 });
    h.command(Command::UpstreamAnswer { handle: play.handle, result: Ok(UpstreamMediaAnswer { port: 40_010, media_ip: None }) });
    let ok = h.sent_one(up);
    let answer = String::from_utf8_lossy(ok.body()).to_string();
    assert!(answer.contains("s=Playback") && answer.contains(&format!("t={start} {}", start + 600)), "{answer}");
    let tag = ok.to_tag().unwrap();
    h.input(up, &up_request(up_addr(), "ACK", CH, "p1", 1, &format!(";tag={tag}"), None));
    // MANSRTSP in its dialog goes to the driver; garbage is 400, an unknown dialog 481.
    let pause = crate::proto::sip::mansrtsp::PlaybackAction::Pause.body(2);
    h.input(up, &up_request(up_addr(), "INFO", CH, "p1", 2, &format!(";tag={tag}"), Some(("Application/MANSRTSP", pause.as_bytes()))));
    assert_eq!(h.sent_one(up).status(), Some(200));
    let action = crate::proto::sip::mansrtsp::PlaybackAction::Pause;
    assert!(h.take_events().contains(&Event::UpstreamPlaybackControl { handle: play.handle, action }));
    h.input(up, &up_request(up_addr(), "INFO", CH, "p1", 3, &format!(";tag={tag}"), Some(("Application/MANSRTSP", b"NONSENSE"))));
    assert_eq!(h.sent_one(up).status(), Some(400));
    h.input(up, &up_request(up_addr(), "INFO", CH, "nope", 1, "", Some(("Application/MANSRTSP", pause.as_bytes()))));
    assert_eq!(h.sent_one(up).status(), Some(481));
    // The recording ends at the device: MediaStatus 121 goes up under the playback's Call-ID.
    assert_eq!(h.command(Command::UpstreamMediaEnd { handle: play.handle }), Outcome::Found(true));
    let ended = distinct(sent_up(&mut h, "MESSAGE"));
    assert_eq!(ended.len(), 1);
    assert_eq!((ended[0].call_id().as_deref(), ended[0].from_user().as_deref()), (Some("p1"), Some(LOCAL_ID)), "our id, the session's Call-ID");
    let (text, _) = crate::proto::sip::text::decode_body(ended[0].body());
    assert!(text.contains("<CmdType>MediaStatus</CmdType>") && text.contains("<NotifyType>121</NotifyType>") && text.contains(&format!("<DeviceID>{CH}</DeviceID>")), "{text}");
    // A download with its speed; a range that ends before it starts is refused.
    let dl = sdp.replace("s=Playback", "s=Download").replace("y=1100000050", "y=1100000051").replace("a=recvonly", "a=recvonly\r\na=downloadspeed:4");
    h.input(up, &up_request(up_addr(), "INVITE", CH, "d1", 1, "", Some(("Application/SDP", dl.as_bytes()))));
    h.take();
    let Some(Event::UpstreamPlay(play)) = h.take_events().into_iter().find(|e| matches!(e, Event::UpstreamPlay(_))) else { panic!("asked") };
    assert_eq!(play.kind, PlayKind::Download { start: start as u64, end: start as u64 + 600, speed: 4 });
    let backwards = sdp.replace(&format!("t={start} {}", start + 600), &format!("t={} {start}", start + 600)).replace("y=1100000050", "y=1100000052");
    h.input(up, &up_request(up_addr(), "INVITE", CH, "b1", 1, "", Some(("Application/SDP", backwards.as_bytes()))));
    assert_eq!(h.sent_one(up).status(), Some(488));
}

#[test]
fn a_device_alarm_on_a_shared_channel_goes_up_as_it_was_reported() {
    let (mut h, mut dev) = registered_with_device(Shared::Channels([CH.to_string()].into()));
    let alarm = |id: &str| {
        format!("<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Notify>\r\n<CmdType>Alarm</CmdType>\r\n<SN>5</SN>\r\n<DeviceID>{id}</DeviceID>\r\n<AlarmPriority>1</AlarmPriority>\r\n<AlarmMethod>5</AlarmMethod>\r\n<AlarmTime>2026-12-05T19:48:12</AlarmTime>\r\n<AlarmDescription>大门移动侦测</AlarmDescription>\r\n<Longitude>116.39</Longitude>\r\n<Latitude>39.91</Latitude>\r\n<Info>\r\n<AlarmType>2</AlarmType>\r\n</Info>\r\n</Notify>\r\n")
    };
    let body = crate::proto::sip::text::encode_body(&alarm(CH), encoding_rs::GB18030);
    let m = dev.request("MESSAGE", "al1", "", Some((MANSCDP_CT, &body)));
    h.input(dev.peer, &m);
    let up = distinct(sent_up(&mut h, "MESSAGE"));
    assert_eq!(up.len(), 1);
    let (text, _) = crate::proto::sip::text::decode_body(up[0].body());
    let parsed = crate::proto::sip::manscdp::parse(&text).unwrap();
    let crate::proto::sip::manscdp::Body::Alarm(a) = parsed.body else { panic!("{text}") };
    assert_eq!((a.device_id.as_str(), a.priority, a.method, a.alarm_type), (CH, 1, 5, Some(2)));
    assert_eq!((a.time.as_str(), a.description.as_str(), a.longitude, a.latitude), ("2026-12-05T19:48:12", "大门移动侦测", Some(116.39), Some(39.91)));
    assert_eq!(up[0].from_user().as_deref(), Some(LOCAL_ID));
    // A channel not shared keeps its alarms here.
    let body = crate::proto::sip::text::encode_body(&alarm("34020000001310000002"), encoding_rs::GB18030);
    let m = dev.request("MESSAGE", "al2", "", Some((MANSCDP_CT, &body)));
    h.input(dev.peer, &m);
    assert!(sent_up(&mut h, "MESSAGE").is_empty());

    // Everything shared: the device's own alarms go up, one under an id not its own does not.
    let mut h = h_with(Shared::All);
    let mut dev = Dev::udp(DEV, addr(9, 5060));
    h.online_device(&mut dev);
    register_up(&mut h);
    h.take();
    for (call, id, up) in [("al3", DEV, 1), ("al4", "34020000001310000099", 0)] {
        let body = crate::proto::sip::text::encode_body(&alarm(id), encoding_rs::GB18030);
        h.input(dev.peer, &dev.request("MESSAGE", call, "", Some((MANSCDP_CT, &body))));
        assert_eq!(distinct(sent_up(&mut h, "MESSAGE")).len(), up, "{id}");
    }
}

/// Starts a live session of `CH` from above, answered and ACKed: its handle.
fn live_from_above(h: &mut H, call_id: &str, ssrc: &str) -> UpstreamCallHandle {
    let up = Peer::Udp(up_addr());
    let invite = up_request(up_addr(), "INVITE", CH, call_id, 1, "", Some(("Application/SDP", &offer(ssrc, "Play", "m=video 36000 RTP/AVP 96\r\n"))));
    h.input(up, &invite);
    let Some(Event::UpstreamPlay(play)) = h.take_events().into_iter().find(|e| matches!(e, Event::UpstreamPlay(_))) else { panic!("asked") };
    assert_eq!(h.command(Command::UpstreamAnswer { handle: play.handle, result: Ok(UpstreamMediaAnswer { port: 40_020, media_ip: None }) }), Outcome::Found(true));
    h.take();
    play.handle
}

#[test]
fn upstreams_are_added_changed_and_removed_while_running() {
    let (mut h, _) = registered_with_device(Shared::Channels([CH.to_string()].into()));
    h.take_events();

    // What it shares changes at once: a session of a channel no longer shared ends (BYE up,
    // the driver told); the registration stays as it was.
    let handle = live_from_above(&mut h, "s1", "0100000051");
    assert_eq!(status_of(&mut h).session_list, vec![UpstreamSession { channel_id: CH.into(), kind: "live", ssrc: 100_000_051 }]);
    assert_eq!(h.command(Command::SetUpstream(Box::new(upstream(Shared::Channels(BTreeSet::new()))))), Outcome::Found(true));
    assert_eq!(distinct(sent_up(&mut h, "BYE")).len(), 1);
    assert!(sent_up(&mut h, "REGISTER").is_empty(), "no new registration for a change of what is shared");
    assert!(h.take_events().contains(&Event::UpstreamPlayEnded { handle, reason: UpstreamEnd::UpstreamGone }));
    let status = status_of(&mut h);
    assert_eq!((status.state, status.shared, status.sessions), (UpstreamState::Registered, Shared::Channels(BTreeSet::new()), 0));
    let q = up_request(up_addr(), "INVITE", CH, "s2", 1, "", Some(("Application/SDP", &offer("0100000052", "Play", "m=video 36000 RTP/AVP 96\r\n"))));
    h.input(Peer::Udp(up_addr()), &q);
    assert_eq!(h.sent_one(Peer::Udp(up_addr())).status(), Some(404), "no longer shared");
    h.take();

    // A new password: the old registration ends (Expires 0) and a new one is made.
    h.command(Command::SetUpstream(Box::new(upstream(Shared::All))));
    h.take();
    let mut changed = upstream(Shared::All);
    changed.password = "new-secret".into();
    assert_eq!(h.command(Command::SetUpstream(Box::new(changed))), Outcome::Found(true));
    let registers = distinct(sent_up(&mut h, "REGISTER"));
    assert_eq!(registers.iter().map(|r| r.expires()).collect::<Vec<_>>(), vec![Some(0)], "{registers:?}");
    assert_eq!(status_of(&mut h).state, UpstreamState::Registering);
    h.advance(Duration::ZERO);
    let fresh = distinct(sent_up(&mut h, "REGISTER"));
    assert_eq!(fresh.len(), 1);
    assert_ne!(fresh[0].call_id(), registers[0].call_id(), "a registration of its own");
    // The old entry's answers do not touch the new one.
    up_answer(&mut h, &registers[0], 200, &[]);
    assert_eq!((h.ep.upstreams().len(), status_of(&mut h).state), (1, UpstreamState::Registering));
    let challenge = format!(r#"Digest realm="{UP_DOMAIN}", nonce="n-9""#);
    up_answer(&mut h, &fresh[0], 401, &[("WWW-Authenticate", challenge)]);
    let answer = sent_up(&mut h, "REGISTER").remove(0);
    assert!(DigestCredentials::parse(&answer.header("Authorization").unwrap()).unwrap().verify("REGISTER", "new-secret"));
    up_answer(&mut h, &answer, 200, &[("Expires", "600".into())]);
    assert_eq!(status_of(&mut h).state, UpstreamState::Registered);

    // Removed: its session BYE'd, Expires 0, gone from the list; its requests are refused.
    let handle = live_from_above(&mut h, "s3", "0100000053");
    assert_eq!(h.command(Command::RemoveUpstream { id: "city".into() }), Outcome::Found(true));
    assert!(h.take_events().contains(&Event::UpstreamPlayEnded { handle, reason: UpstreamEnd::UpstreamGone }));
    assert_eq!(distinct(sent_up(&mut h, "BYE")).len(), 1);
    let bye_reg = distinct(sent_up(&mut h, "REGISTER"));
    assert_eq!(bye_reg.iter().map(|r| r.expires()).collect::<Vec<_>>(), vec![Some(0)]);
    assert!(h.ep.upstreams().is_empty());
    assert_eq!(h.command(Command::RemoveUpstream { id: "city".into() }), Outcome::Found(false));
    let q = up_request(up_addr(), "MESSAGE", LOCAL_ID, "q1", 1, "", Some((MANSCDP_CT, &query("Catalog", 1, LOCAL_ID))));
    h.input(Peer::Udp(up_addr()), &q);
    assert_eq!(h.sent_one(Peer::Udp(up_addr())).status(), Some(403));
    // Its Expires 0 challenged: answered, then it is forgotten; nothing else goes up.
    let challenge = format!(r#"Digest realm="{UP_DOMAIN}", nonce="n-10""#);
    up_answer(&mut h, &bye_reg[0], 401, &[("WWW-Authenticate", challenge)]);
    let again = sent_up(&mut h, "REGISTER").remove(0);
    assert_eq!(again.expires(), Some(0));
    up_answer(&mut h, &again, 200, &[]);
    h.advance(Duration::from_secs(120));
    assert!(sent_up(&mut h, "REGISTER").is_empty() && sent_up(&mut h, "MESSAGE").is_empty());

    // Up to UPSTREAMS_MAX.
    for n in 0..UPSTREAMS_MAX {
        let mut u = upstream(Shared::All);
        u.id = format!("up{n}");
        assert_eq!(h.command(Command::SetUpstream(Box::new(u))), Outcome::Found(true));
    }
    let mut u = upstream(Shared::All);
    u.id = "one-too-many".into();
    assert_eq!(h.command(Command::SetUpstream(Box::new(u))), Outcome::Found(false));
    assert_eq!(h.ep.upstreams().len(), UPSTREAMS_MAX);
}

/// The NOTIFYs sent up since last asked, each once, answered 200 (so none goes again).
fn notifies(h: &mut H) -> Vec<SipMsg> {
    let sent = distinct(sent_up(h, "NOTIFY"));
    for n in &sent {
        up_answer(h, n, 200, &[]);
    }
    sent
}

/// A SUBSCRIBE from the upstream for `cmd` (Catalog, Alarm...); `to_tag` for a refresh.
fn up_subscribe(call_id: &str, cseq: u32, cmd: &str, expires: u32, to_tag: Option<&str>) -> Vec<u8> {
    let tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let extra = format!("{tag}\r\nEvent: {}\r\nExpires: {expires}", if cmd == "Catalog" { "Catalog" } else { "presence" });
    up_request(up_addr(), "SUBSCRIBE", LOCAL_ID, call_id, cseq, &extra, Some((MANSCDP_CT, &query(cmd, 30 + cseq, LOCAL_ID))))
}

#[test]
fn subscriptions_from_above_carry_the_catalog_its_changes_and_alarms() {
    let (mut h, mut dev) = registered_with_device(Shared::Channels([CH.to_string()].into()));
    let up = Peer::Udp(up_addr());

    // Catalog: 200 with our tag and the time granted, then the catalog in a NOTIFY of the
    // subscription (its dialog, Event and Subscription-State).
    h.input(up, &up_subscribe("sub-c", 1, "Catalog", 3600, None));
    let ok = h.sent_one(up);
    assert_eq!((ok.status(), ok.expires()), (Some(200), Some(3600)));
    let tag = ok.to_tag().expect("our tag");
    h.advance(Duration::from_millis(100));
    let first = notifies(&mut h);
    assert_eq!(first.len(), 1);
    let n = &first[0];
    assert_eq!((n.call_id().as_deref(), n.from_tag(), n.to_tag().as_deref()), (Some("sub-c"), Some(tag.clone()), Some("upf")));
    assert_eq!(n.header("Event").as_deref(), Some("Catalog"));
    assert!(n.header("Subscription-State").unwrap().starts_with("active;expires="));
    let (text, _) = crate::proto::sip::text::decode_body(n.body());
    assert!(text.contains("<Notify>") && text.contains(&format!("<DeviceID>{CH}</DeviceID>")) && text.contains("<SN>31</SN>"), "{text}");

    // The device says its channel went off: the subscriber hears OFF.
    let change = format!(
        "<?xml version=\"1.0\"?>\r\n<Notify>\r\n<CmdType>Catalog</CmdType>\r\n<SN>7</SN>\r\n<DeviceID>{DEV}</DeviceID>\r\n<SumNum>1</SumNum>\r\n<DeviceList Num=\"1\">\r\n<Item>\r\n<DeviceID>{CH}</DeviceID>\r\n<Event>OFF</Event>\r\n</Item>\r\n</DeviceList>\r\n</Notify>\r\n"
    );
    h.input(dev.peer, &dev.request("MESSAGE", "chg1", "", Some((MANSCDP_CT, change.as_bytes()))));
    h.advance(Duration::from_millis(100));
    let off = notifies(&mut h);
    assert_eq!(off.len(), 1);
    let (text, _) = crate::proto::sip::text::decode_body(off[0].body());
    assert!(text.contains(&format!("<DeviceID>{CH}</DeviceID>")) && text.contains("<Event>OFF</Event>"), "{text}");
    assert!(off[0].cseq().unwrap().0 > n.cseq().unwrap().0, "the dialog's CSeq goes on");

    // What is shared changes: the channel leaves (DEL).
    h.command(Command::SetUpstream(Box::new(upstream(Shared::Channels(BTreeSet::new())))));
    h.advance(Duration::from_millis(100));
    let del = notifies(&mut h);
    let (text, _) = crate::proto::sip::text::decode_body(del[0].body());
    assert!(text.contains("<Event>DEL</Event>"), "{text}");
    h.command(Command::SetUpstream(Box::new(upstream(Shared::Channels([CH.to_string()].into())))));
    h.advance(Duration::from_millis(100));
    h.take();

    // Alarm: a subscription of its own; alarms then come as NOTIFYs in it, not MESSAGEs.
    h.input(up, &up_subscribe("sub-a", 1, "Alarm", 60, None));
    assert_eq!(h.sent_one(up).status(), Some(200));
    let alarm = format!("<Notify><CmdType>Alarm</CmdType><SN>9</SN><DeviceID>{CH}</DeviceID><AlarmPriority>2</AlarmPriority><AlarmMethod>5</AlarmMethod><AlarmTime>2026-12-05T10:00:00</AlarmTime></Notify>");
    h.input(dev.peer, &dev.request("MESSAGE", "al9", "", Some((MANSCDP_CT, alarm.as_bytes()))));
    let notified = notifies(&mut h);
    assert!(sent_up(&mut h, "MESSAGE").is_empty());
    assert_eq!((notified.len(), notified[0].call_id().as_deref(), notified[0].header("Event").as_deref()), (1, Some("sub-a"), Some("presence")));
    assert!(String::from_utf8_lossy(notified[0].body()).contains("<CmdType>Alarm</CmdType>"));
    h.take();

    // A refresh in a dialog not ours: 481; a kind not offered: 489; Expires 0 ends
    // the catalog subscription: changes no longer go up.
    h.input(up, &up_subscribe("sub-c", 2, "Catalog", 3600, Some("not-ours")));
    assert_eq!(h.sent_one(up).status(), Some(481));
    h.input(up, &up_subscribe("sub-x", 1, "ConfigDownload", 3600, None));
    assert_eq!(h.sent_one(up).status(), Some(489));
    // Positions: a subscription of its own, the channel's position in a NOTIFY.
    h.input(up, &up_subscribe("sub-m", 1, "MobilePosition", 3600, None));
    assert_eq!(h.sent_one(up).status(), Some(200));
    let position = format!("<Notify><CmdType>MobilePosition</CmdType><SN>4</SN><DeviceID>{CH}</DeviceID><Time>2026-12-05T10:00:00</Time><Longitude>116.5</Longitude><Latitude>39.9</Latitude><Speed>12</Speed></Notify>");
    h.input(dev.peer, &dev.request("MESSAGE", "pos1", "", Some((MANSCDP_CT, position.as_bytes()))));
    let moved = notifies(&mut h);
    assert_eq!((moved.len(), moved[0].call_id().as_deref(), moved[0].header("Event").as_deref()), (1, Some("sub-m"), Some("presence")));
    let text = String::from_utf8_lossy(moved[0].body()).to_string();
    assert!(text.contains("<CmdType>MobilePosition</CmdType>") && text.contains("<Longitude>116.5</Longitude>") && text.contains("<Speed>12</Speed>"), "{text}");
    h.take();
    h.input(up, &up_subscribe("sub-c", 3, "Catalog", 0, Some(&tag)));
    assert_eq!(h.sent_one(up).status(), Some(200));
    h.input(dev.peer, &dev.request("MESSAGE", "chg2", "", Some((MANSCDP_CT, change.replace("OFF", "ON").replace("<SN>7", "<SN>8").as_bytes()))));
    h.advance(Duration::from_millis(100));
    let left = sent_up(&mut h, "NOTIFY");
    assert!(left.is_empty(), "{:?}", left.iter().map(|m| m.inner.to_string()).collect::<Vec<_>>());
    // The alarm subscription runs out at its expiry: alarms go as MESSAGEs again.
    for _ in 0..7 {
        h.advance(Duration::from_secs(10));
        for ka in sent_up(&mut h, "MESSAGE") {
            up_answer(&mut h, &ka, 200, &[]);
        }
    }
    h.take();
    h.input(dev.peer, &dev.request("MESSAGE", "al10", "", Some((MANSCDP_CT, alarm.replace("<SN>9", "<SN>10").as_bytes()))));
    assert!(sent_up(&mut h, "NOTIFY").is_empty());
    assert_eq!(distinct(sent_up(&mut h, "MESSAGE")).iter().filter(|m| String::from_utf8_lossy(m.body()).contains("Alarm")).count(), 1);
}

#[test]
fn a_device_controls_result_goes_back_up_under_the_upstreams_sn() {
    let (mut h, mut dev) = registered_with_device(Shared::Channels([CH.to_string()].into()));
    let up = Peer::Udp(up_addr());
    let guard = format!("<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Control>\r\n<CmdType>DeviceControl</CmdType>\r\n<SN>55</SN>\r\n<DeviceID>{CH}</DeviceID>\r\n<GuardCmd>SetGuard</GuardCmd>\r\n</Control>\r\n");
    h.input(up, &up_request(up_addr(), "MESSAGE", CH, "g1", 1, "", Some((MANSCDP_CT, guard.as_bytes()))));
    let out = h.take();
    assert!(out.iter().any(|(to, m)| *to == up && m.status() == Some(200)));
    assert!(out.iter().any(|(to, m)| *to == dev.peer && String::from_utf8_lossy(m.body()).contains("<GuardCmd>SetGuard</GuardCmd>")));
    // The device's Response under that SN goes up; one under another SN does not.
    let result = |sn: u32, r: &str| format!("<?xml version=\"1.0\"?>\r\n<Response>\r\n<CmdType>DeviceControl</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{CH}</DeviceID>\r\n<Result>{r}</Result>\r\n</Response>\r\n");
    h.input(dev.peer, &dev.request("MESSAGE", "res1", "", Some((MANSCDP_CT, result(55, "ERROR").as_bytes()))));
    let upward = distinct(sent_up(&mut h, "MESSAGE"));
    assert_eq!(upward.len(), 1);
    let (text, _) = crate::proto::sip::text::decode_body(upward[0].body());
    assert!(text.contains("<SN>55</SN>") && text.contains("<Result>ERROR</Result>") && text.contains(&format!("<DeviceID>{CH}</DeviceID>")), "{text}");
    h.take();
    h.input(dev.peer, &dev.request("MESSAGE", "res2", "", Some((MANSCDP_CT, result(55, "OK").as_bytes()))));
    assert!(sent_up(&mut h, "MESSAGE").is_empty(), "answered once");
}

#[test]
fn a_channel_goes_up_under_the_id_the_upstream_gave_it() {
    const THEIRS: &str = "44010200001320000009";
    let mut u = upstream(Shared::Channels([CH.to_string()].into()));
    u.channel_ids = ChannelIds::new([(CH.to_string(), THEIRS.to_string())]).unwrap();
    let (mut h, mut dev) = registered_with(u);
    let up = Peer::Udp(up_addr());

    // The catalog lists it under their id.
    h.input(up, &up_request(up_addr(), "MESSAGE", LOCAL_ID, "c1", 1, "", Some((MANSCDP_CT, &query("Catalog", 3, LOCAL_ID)))));
    h.advance(Duration::from_millis(100));
    let (text, _) = crate::proto::sip::text::decode_body(distinct(sent_up(&mut h, "MESSAGE"))[0].body());
    assert!(text.contains(&format!("<DeviceID>{THEIRS}</DeviceID>")) && !text.contains(CH), "{text}");
    h.take();

    // Their id plays our channel; ours is not reachable from above.
    let offer_live = offer("0100000061", "Play", "m=video 36000 RTP/AVP 96\r\n");
    h.input(up, &up_request(up_addr(), "INVITE", CH, "i1", 1, "", Some(("Application/SDP", &offer_live))));
    assert_eq!(h.sent_one(up).status(), Some(404));
    h.input(up, &up_request(up_addr(), "INVITE", THEIRS, "i2", 1, "", Some(("Application/SDP", &offer_live))));
    let Some(Event::UpstreamPlay(play)) = h.take_events().into_iter().find(|e| matches!(e, Event::UpstreamPlay(_))) else { panic!("asked") };
    assert_eq!((play.device_id.as_str(), play.channel_id.as_str()), (DEV, CH));
    h.take();

    // A DeviceControl under their id reaches the device under ours.
    let ptz = format!("<?xml version=\"1.0\"?>\r\n<Control>\r\n<CmdType>DeviceControl</CmdType>\r\n<SN>8</SN>\r\n<DeviceID>{THEIRS}</DeviceID>\r\n<PTZCmd>A50F01021F0000D6</PTZCmd>\r\n</Control>\r\n");
    h.input(up, &up_request(up_addr(), "MESSAGE", THEIRS, "p1", 1, "", Some((MANSCDP_CT, ptz.as_bytes()))));
    let out = h.take();
    let to_device = out.iter().find(|(to, _)| *to == dev.peer).map(|(_, m)| String::from_utf8_lossy(m.body()).to_string()).unwrap();
    assert!(to_device.contains(&format!("<DeviceID>{CH}</DeviceID>")) && to_device.contains("<PTZCmd>A50F01021F0000D6</PTZCmd>"), "{to_device}");

    // The device's alarm goes up under their id.
    let alarm = format!("<Notify><CmdType>Alarm</CmdType><SN>9</SN><DeviceID>{CH}</DeviceID><AlarmPriority>2</AlarmPriority><AlarmMethod>5</AlarmMethod><AlarmTime>2026-12-05T10:00:00</AlarmTime></Notify>");
    h.input(dev.peer, &dev.request("MESSAGE", "al1", "", Some((MANSCDP_CT, alarm.as_bytes()))));
    let up_alarm = distinct(sent_up(&mut h, "MESSAGE"));
    assert!(String::from_utf8_lossy(up_alarm[0].body()).contains(&format!("<DeviceID>{THEIRS}</DeviceID>")));

    // One id upward for two channels is refused.
    assert!(ChannelIds::new([("a".to_string(), "x".to_string()), ("b".to_string(), "x".to_string())]).is_none());
}

#[test]
fn the_catalog_sent_up_holds_the_groups_and_hangs_channels_in_them() {
    const BG: &str = "44010200002150000001";
    const ORG: &str = "44010200002160000001";
    let mut u = upstream(Shared::All);
    u.groups = vec![
        CatalogGroup { id: BG.into(), name: "城管".into(), parent: None },
        CatalogGroup { id: ORG.into(), name: "一号路口".into(), parent: Some(BG.into()) },
    ];
    u.channel_groups = [(CH.to_string(), ORG.to_string())].into();
    let (mut h, _) = registered_with(u);
    h.input(Peer::Udp(up_addr()), &up_request(up_addr(), "MESSAGE", LOCAL_ID, "c1", 1, "", Some((MANSCDP_CT, &query("Catalog", 3, LOCAL_ID)))));
    h.advance(Duration::from_millis(100));
    let (text, _) = crate::proto::sip::text::decode_body(distinct(sent_up(&mut h, "MESSAGE"))[0].body());
    let items: Vec<&str> = text.split("<Item>").skip(1).collect();
    assert_eq!(items.len(), 3, "{text}");
    assert!(text.contains("<SumNum>3</SumNum>"), "{text}");
    let field = |item: &str, tag: &str| crate::proto::sip::manscdp::element(item, tag).map(|v| v.trim().to_string());
    assert_eq!((field(items[0], "DeviceID").as_deref(), field(items[0], "Name").as_deref(), field(items[0], "ParentID")), (Some(BG), Some("城管"), None));
    assert_eq!((field(items[1], "DeviceID").as_deref(), field(items[1], "ParentID").as_deref(), field(items[1], "BusinessGroupID").as_deref()), (Some(ORG), Some(BG), Some(BG)));
    assert_eq!((field(items[2], "DeviceID").as_deref(), field(items[2], "ParentID").as_deref(), field(items[2], "BusinessGroupID").as_deref()), (Some(CH), Some(ORG), Some(BG)));
}

#[test]
fn this_platforms_own_sources_go_up_as_channels_of_its_server_id() {
    const PROXY: &str = "34020000001320000501";
    let (mut h, _) = registered_with_device(Shared::All);
    let item = |id: &str, name: &str, status: &str| crate::proto::sip::manscdp::CatalogItem { device_id: id.into(), name: name.into(), status: status.into(), ..Default::default() };
    // A device's channel id is the device's: left out; so is an id that is no id.
    let channels = vec![item(PROXY, "大门", "ON"), item(CH, "same as the device's", "ON"), item("bad\r\nid", "x", "ON")];
    assert_eq!(h.command(Command::SetLocalChannels { channels }), Outcome::Done);
    h.input(Peer::Udp(up_addr()), &up_request(up_addr(), "MESSAGE", LOCAL_ID, "c1", 1, "", Some((MANSCDP_CT, &query("Catalog", 3, LOCAL_ID)))));
    h.advance(Duration::from_millis(100));
    let (text, _) = crate::proto::sip::text::decode_body(distinct(sent_up(&mut h, "MESSAGE"))[0].body());
    let field = |item: &str, tag: &str| crate::proto::sip::manscdp::element(item, tag).map(|v| v.trim().to_string());
    let items: Vec<(Option<String>, Option<String>)> = text.split("<Item>").skip(1).map(|i| (field(i, "DeviceID"), field(i, "Status"))).collect();
    assert!(items.contains(&(Some(PROXY.into()), Some("ON".into()))), "{text}");
    assert_eq!(items.iter().filter(|(id, _)| id.as_deref() == Some(CH)).count(), 1, "the device's channel once: {text}");
    assert!(!text.contains("bad"), "{text}");

    // Played from above: the driver is asked with the platform's own id as the device.
    let up = Peer::Udp(up_addr());
    let invite = up_request(up_addr(), "INVITE", PROXY, "i1", 1, "", Some(("Application/SDP", &offer("0100000077", "Play", "m=video 36000 RTP/AVP 96\r\n"))));
    h.take();
    h.take_events();
    h.input(up, &invite);
    assert_eq!(h.sent_one(up).status(), Some(100));
    let Some(Event::UpstreamPlay(play)) = h.take_events().into_iter().find(|e| matches!(e, Event::UpstreamPlay(_))) else { panic!("asked") };
    assert_eq!((play.device_id.as_str(), play.channel_id.as_str()), (h.ep.local_sources_id(), PROXY));
}
