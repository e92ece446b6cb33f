//! Sequences of datagrams, TCP messages, time steps and commands into the SIP endpoint,
//! after a device registered properly and the endpoint registered with an upper platform (so
//! bound-device and upstream paths are reachable).
//!
//! Input: records of [op][len u8][bytes]: op % 13 = 0..2 datagram from the device / another
//! UDP host / a TCP connection; 3 time step of bytes[0]·100 ms; 4 play (live, playback or
//! download by bytes[0]); 5 stop; 6 streams seen; 7 device control; 8 playback control of the
//! last stream played; 9 RecordInfo query; 10 connection closed (or the device removed);
//! 11 a request from the upper platform (bytes[0] picks INVITE with the rest as its SDP, an
//! INVITE with the rest as its y= and m= lines, MESSAGE with the rest as its MANSCDP body,
//! ACK/BYE/CANCEL of one of four calls, or the rest as a raw datagram); 12 the driver answers,
//! refuses or hangs up the upper platform's last INVITE.
#![no_main]
use gmv::proto::sip::digest::client_response;
use gmv::proto::sip::endpoint::{
    Charset, Command, DeviceAsk, DeviceCommand, Endpoint, Event, MediaTransport, Outcome, Peer, PlayKind, PlayStart, RecordType, Shared, StreamUse,
    UpstreamConfig, UpstreamMediaAnswer, UpstreamRefusal, UpstreamState,
};
use gmv::proto::sip::mansrtsp::PlaybackAction;
use gmv::proto::sip::parse;
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};

const DEV: &str = "34020000001320000001";

const UP: &str = "127.0.0.50:5060";

fn drain(ep: &mut Endpoint) -> Vec<Vec<u8>> {
    drain_noting(ep, &mut 0)
}

/// Transmits; the handle of an upper platform's INVITE is noted in `upstream_call`.
fn drain_noting(ep: &mut Endpoint, upstream_call: &mut u64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(t) = ep.poll_transmit() {
        out.push(t.bytes);
    }
    while let Some(e) = ep.poll_event() {
        if let Event::UpstreamPlay(p) = e {
            *upstream_call = p.handle;
        }
    }
    out
}

const CH: &str = "34020000001310000001";

/// A request from the upper platform in call `u{call}`.
fn upper_request(method: &str, call: u8, body: Option<(&str, &[u8])>) -> Vec<u8> {
    let mut out = format!(
        "{method} sip:{CH}@3402000000 SIP/2.0\r\nVia: SIP/2.0/UDP {UP};branch=z9hG4bKu{call}{method}\r\nFrom: <sip:44010000002000000001@4401000000>;tag=up{call}\r\nTo: <sip:{CH}@3402000000>\r\nCall-ID: u{call}\r\nCSeq: 1 {method}\r\nContact: <sip:44010000002000000001@{UP}>\r\n"
    );
    match body {
        Some((ct, b)) => {
            out.push_str(&format!("Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n", b.len()));
            let mut bytes = out.into_bytes();
            bytes.extend_from_slice(b);
            bytes
        }
        None => {
            out.push_str("Content-Length: 0\r\n\r\n");
            out.into_bytes()
        }
    }
}

fn upper_input(bytes: &[u8]) -> Vec<u8> {
    let b = bytes.first().copied().unwrap_or(0);
    let rest = bytes.get(1..).unwrap_or_default();
    let call = b / 8 % 4;
    match b % 8 {
        0 => upper_request("INVITE", call, Some(("Application/SDP", rest))),
        1 => {
            let sdp = [b"v=0\r\no=x 0 0 IN IP4 127.0.0.50\r\ns=Play\r\nc=IN IP4 127.0.0.50\r\nt=0 0\r\n".as_slice(), rest].concat();
            upper_request("INVITE", call, Some(("Application/SDP", &sdp)))
        }
        2 => upper_request("MESSAGE", call, Some(("Application/MANSCDP+xml", rest))),
        3 => upper_request("ACK", call, None),
        4 => upper_request("BYE", call, None),
        5 => upper_request("CANCEL", call, None),
        6 => upper_request("SUBSCRIBE", call, Some(("Application/MANSCDP+xml", rest))),
        _ => rest.to_vec(),
    }
}

/// Registers with the upper platform (its 200 to our REGISTER).
fn register_up(ep: &mut Endpoint, now: Instant) {
    ep.handle_timeout(now);
    for t in drain(ep) {
        let Ok(m) = parse(&t) else { continue };
        if m.method().is_some_and(|m| m.to_string() == "REGISTER") {
            let ok = gmv::proto::sip::build::response(&m, "127.0.0.1:5060".parse().unwrap(), 200, "OK", "up", &[("Expires", "3600".into())], None);
            ep.handle_datagram(now, Peer::Udp(UP.parse().unwrap()), &ok);
        }
    }
    drain(ep);
}

fn register(ep: &mut Endpoint, now: Instant, dev: Peer) {
    let a = dev.addr();
    let req = |auth: &str| {
        format!("REGISTER sip:34020000002000000001@3402000000 SIP/2.0\r\nVia: SIP/2.0/UDP {a};branch=z9hG4bK{}\r\nFrom: <sip:{DEV}@3402000000>;tag=1\r\nTo: <sip:{DEV}@3402000000>\r\nCall-ID: r\r\nCSeq: {} REGISTER\r\n{auth}Content-Length: 0\r\n\r\n", auth.len(), auth.len() + 1)
    };
    ep.handle_datagram(now, dev, req("").as_bytes());
    let challenge = drain(ep).into_iter().next().and_then(|b| parse(&b).ok()).expect("challenge");
    let www = challenge.header("WWW-Authenticate").expect("www");
    let nonce = www.split("nonce=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    let uri = "sip:34020000002000000001@3402000000";
    let r = client_response(DEV, "3402000000", "12345678", "REGISTER", uri, &nonce, None);
    let auth = format!("Authorization: Digest username=\"{DEV}\", realm=\"3402000000\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{r}\"\r\n");
    ep.handle_datagram(now, dev, req(&auth).as_bytes());
    drain(ep);
}

/// The upper platform the fuzzed endpoint reports to.
fn upstream_config() -> UpstreamConfig {
    UpstreamConfig {
        id: "up".into(),
        name: "fuzz".into(),
        server_id: "44010000002000000001".into(),
        domain: "4401000000".into(),
        address: UP.parse().unwrap(),
        tcp: false,
        password: "pw".into(),
        local_id: "34020000002000000077".into(),
        register_expires_s: 3600,
        keepalive: Duration::from_secs(5),
        keepalive_misses_max: 3,
        charset: Charset::Gb2312,
        shared: Shared::All,
        channel_ids: gmv::proto::sip::endpoint::ChannelIds::default(),
        groups: Vec::new(),
        channel_groups: Default::default(),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let config = gmv::config::Config::default();
    let mut cfg = config.endpoint_config("127.0.0.1:5060".parse().unwrap());
    cfg.subscribe = vec!["catalog".into(), "alarm".into(), "mobile_position".into()];
    cfg.upstreams = vec![upstream_config()];
    let mut ep = Endpoint::new(cfg, now, 0, [3; 16], Vec::new());
    let dev = Peer::Udp("127.0.0.10:5060".parse().unwrap());
    register(&mut ep, now, dev);
    let catalog = format!("<?xml version=\"1.0\"?>\r\n<Response>\r\n<CmdType>Catalog</CmdType>\r\n<SN>1</SN>\r\n<DeviceID>{DEV}</DeviceID>\r\n<SumNum>1</SumNum>\r\n<DeviceList Num=\"1\">\r\n<Item>\r\n<DeviceID>{CH}</DeviceID>\r\n<Name>cam</Name>\r\n<Status>ON</Status>\r\n</Item>\r\n</DeviceList>\r\n</Response>\r\n");
    let m = format!("MESSAGE sip:34020000002000000001@3402000000 SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKcat\r\nFrom: <sip:{DEV}@3402000000>;tag=1\r\nTo: <sip:34020000002000000001@3402000000>\r\nCall-ID: cat\r\nCSeq: 9 MESSAGE\r\nContent-Type: Application/MANSCDP+xml\r\nContent-Length: {}\r\n\r\n{catalog}", dev.addr(), catalog.len());
    ep.handle_datagram(now, dev, m.as_bytes());
    drain(&mut ep);
    assert!(ep.device(DEV).is_some_and(|d| d.channels.contains_key(CH)), "the setup gives the device a channel");
    register_up(&mut ep, now);
    assert_eq!(ep.upstreams()[0].state, UpstreamState::Registered, "the setup registers upward");
    let mut upstream_call = 0;
    let other = Peer::Udp("127.0.0.2:5060".parse().unwrap());
    let tcp = Peer::Tcp { conn: 1, addr: "127.0.0.11:40000".parse().unwrap() };
    let mut rest = data;
    let mut last_ssrc = 0;
    while rest.len() >= 2 {
        let (op, len) = (rest[0] % 13, usize::from(rest[1]).min(rest.len() - 2));
        let bytes = &rest[2..2 + len];
        rest = &rest[2 + len..];
        match op {
            0 => ep.handle_datagram(now, dev, bytes),
            1 => ep.handle_datagram(now, other, bytes),
            2 => ep.handle_datagram(now, tcp, bytes),
            3 => {
                now += Duration::from_millis(100 * u64::from(bytes.first().copied().unwrap_or(1)));
                ep.handle_timeout(now);
            }
            4 => {
                let ch = String::from_utf8_lossy(bytes.get(1..).unwrap_or_default()).to_string();
                let t = u64::from(bytes.first().copied().unwrap_or(0));
                let kind = match t % 3 {
                    0 => PlayKind::Live,
                    1 => PlayKind::Playback { start: t, end: t * 7 },
                    _ => PlayKind::Download { start: t, end: t * 5, speed: 4 },
                };
                let play = Command::Play { device_id: DEV.into(), channel_id: ch, transport: MediaTransport::Udp, kind };
                if let Outcome::Play(Ok(PlayStart::Open(handle))) = ep.handle_command(now, play) {
                    last_ssrc = ep.next_ssrc(kind);
                    ep.handle_command(now, Command::Invite { handle, ssrc: last_ssrc, port: 30_000, media_ip: None });
                }
            }
            5 => {
                ep.handle_command(now, Command::Stop { device_id: DEV.into(), channel_id: String::from_utf8_lossy(bytes).to_string() });
            }
            6 => {
                let streams = bytes.chunks(5).map(|c| StreamUse { ssrc: c.iter().fold(0u32, |a, b| a << 8 | u32::from(*b)), in_use: c.len() == 5 }).collect();
                ep.handle_command(now, Command::StreamsSeen { listed_at: now, streams });
            }
            7 => {
                // A PTZCmd (any bytes) for a channel named by the input: the MESSAGE must stay valid SIP.
                let mut ptz = [0u8; 8];
                for (p, b) in ptz.iter_mut().zip(bytes) {
                    *p = *b;
                }
                let ch = String::from_utf8_lossy(bytes.get(8..).unwrap_or_default()).to_string();
                let command = match bytes.first().map(|b| b % 3) {
                    Some(0) => DeviceCommand::KeyFrame,
                    Some(1) => DeviceCommand::Reboot,
                    _ => DeviceCommand::Ptz(ptz),
                };
                ep.handle_command(now, Command::Control { device_id: DEV.into(), channel_id: ch, command });
            }
            8 => {
                let b = bytes.first().copied().unwrap_or(0);
                let action = match b % 4 {
                    0 => PlaybackAction::Pause,
                    1 => PlaybackAction::Resume,
                    2 => PlaybackAction::Seek(u64::from(b)),
                    _ => PlaybackAction::Speed(400),
                };
                ep.handle_command(now, Command::PlaybackControl { ssrc: last_ssrc, action });
            }
            9 => {
                let ch = String::from_utf8_lossy(bytes.get(2..).unwrap_or_default()).to_string();
                let start = i64::from(bytes.first().copied().unwrap_or(0)) * 1_000_000;
                let end = start + i64::from(bytes.get(1).copied().unwrap_or(1)) * 60;
                let command = match bytes.first().map(|b| b % 4) {
                    Some(0) => Command::Ask { device_id: DEV.into(), target: ch, ask: DeviceAsk::Presets },
                    Some(1) => Command::Ask { device_id: DEV.into(), target: ch, ask: DeviceAsk::Config { name: Some(String::from_utf8_lossy(bytes).into()), heartbeat_s: Some(30), heartbeat_count: None } },
                    Some(2) => Command::Ask { device_id: DEV.into(), target: ch, ask: DeviceAsk::HomePosition { enabled: true, preset: 1, reset_s: 30 } },
                    _ => Command::Records { device_id: DEV.into(), channel_id: ch, start, end, record_type: RecordType::All },
                };
                ep.handle_command(now, command);
            }
            11 => {
                // The upper platform over UDP, or over TCP (its connection or the one dialled).
                let (up, first) = (UP.parse().unwrap(), bytes.first().copied().unwrap_or(0));
                // (Bits 0 to 4 choose the request; 5 to 7 the way it came.)
                let from = if first & 0x80 == 0 { Peer::Udp(up) } else { Peer::Tcp { conn: u64::from(first >> 5 & 3), addr: up } };
                ep.handle_datagram(now, from, &upper_input(bytes));
            }
            12 => {
                let b = bytes.first().copied().unwrap_or(0);
                // Upstreams changed while running: what is shared, how it registers, removed.
                let mut changed = upstream_config();
                changed.shared = if b & 0x10 == 0 { Shared::All } else { Shared::Channels([CH.to_string()].into()) };
                if b & 0x20 != 0 {
                    changed.password = "other".into();
                }
                changed.tcp = b & 0x80 != 0;
                let command = match b % 6 {
                    0 => Command::UpstreamAnswer { handle: upstream_call, result: Ok(UpstreamMediaAnswer { port: u16::from(b) << 8, media_ip: None }) },
                    1 => Command::UpstreamAnswer { handle: upstream_call, result: Err(UpstreamRefusal::Busy) },
                    2 => Command::UpstreamMediaEnd { handle: upstream_call },
                    3 => Command::SetUpstream(Box::new(changed)),
                    4 if b & 0x40 != 0 => Command::RemoveUpstream { id: "up".into() },
                    5 if b & 0x40 != 0 => Command::DialFailed { to: UP.parse().unwrap(), error: "refused".into() },
                    _ => Command::UpstreamHangUp { handle: upstream_call },
                };
                ep.handle_command(now, command);
            }
            10 if bytes.first().is_some_and(|b| b % 16 == 0) => {
                ep.handle_command(now, Command::Remove { device_id: DEV.into() });
                for t in drain(&mut ep) {
                    assert!(parse(&t).is_ok(), "the endpoint sends only valid SIP: {:?}", String::from_utf8_lossy(&t));
                }
                register(&mut ep, now, dev);
            }
            _ => {
                ep.handle_command(now, Command::ConnClosed { conn: 1 });
            }
        }
        for t in drain_noting(&mut ep, &mut upstream_call) {
            assert!(parse(&t).is_ok(), "the endpoint sends only valid SIP: {:?}", String::from_utf8_lossy(&t));
        }
    }
});
