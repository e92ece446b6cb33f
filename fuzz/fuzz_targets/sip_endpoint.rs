//! Sequences of datagrams, TCP messages, time steps and commands into the SIP endpoint,
//! after a device registered properly (so bound-device paths are reachable).
//!
//! Input: records of [op][len u8][bytes]: op % 11 = 0..2 datagram from the device / another
//! UDP host / a TCP connection; 3 time step of bytes[0]·100 ms; 4 play (live, playback or
//! download by bytes[0]); 5 stop; 6 streams seen; 7 device control; 8 playback control of the
//! last stream played; 9 RecordInfo query; 10 connection closed.
#![no_main]
use gmv::proto::sip::digest::client_response;
use gmv::proto::sip::endpoint::{
    Command, DeviceAsk, DeviceCommand, Endpoint, MediaTransport, Outcome, Peer, PlayKind, PlayStart, RecordType, StreamUse,
};
use gmv::proto::sip::mansrtsp::PlaybackAction;
use gmv::proto::sip::parse;
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};

const DEV: &str = "34020000001320000001";

fn drain(ep: &mut Endpoint) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(t) = ep.poll_transmit() {
        out.push(t.bytes);
    }
    while ep.poll_event().is_some() {}
    out
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

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let config = gmv::config::Config::default();
    let mut cfg = config.endpoint_config("127.0.0.1:5060".parse().unwrap());
    cfg.subscribe = vec!["catalog".into(), "alarm".into(), "mobile_position".into()];
    let mut ep = Endpoint::new(cfg, now, 0, [3; 16], Vec::new());
    let dev = Peer::Udp("127.0.0.10:5060".parse().unwrap());
    register(&mut ep, now, dev);
    let other = Peer::Udp("127.0.0.2:5060".parse().unwrap());
    let tcp = Peer::Tcp { conn: 1, addr: "127.0.0.11:40000".parse().unwrap() };
    let mut rest = data;
    let mut last_ssrc = 0;
    while rest.len() >= 2 {
        let (op, len) = (rest[0] % 11, usize::from(rest[1]).min(rest.len() - 2));
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
            _ if bytes.first().is_some_and(|b| b % 16 == 0) => {
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
        for t in drain(&mut ep) {
            assert!(parse(&t).is_ok(), "the endpoint sends only valid SIP: {:?}", String::from_utf8_lossy(&t));
        }
    }
});
