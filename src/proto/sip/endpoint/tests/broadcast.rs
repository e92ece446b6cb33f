//! Voice broadcast on a virtual clock: the Broadcast MESSAGE, the device's INVITE for the
//! audio, our answer, and each way it ends.

use super::*;

/// The INVITE a device sends for a broadcast's audio (as devices meet wvp's: Subject naming
/// the channel, recvonly, PCMA and PS offered, its SSRC in `y=`).
fn device_invite(dev: &mut Dev, call_id: &str, sdp_media: &str) -> Vec<u8> {
    let sdp = format!("v=0\r\no={} 0 0 IN IP4 127.0.0.9\r\ns=Play\r\nc=IN IP4 127.0.0.9\r\nt=0 0\r\n{sdp_media}a=recvonly\r\ny=0100000077\r\nf=v/////a/1/8/1\r\n", dev.id);
    dev.request("INVITE", call_id, &format!("Subject: {SERVER}:0,{CH}:0\r\n"), Some(("Application/SDP", sdp.as_bytes())))
}

const AUDIO: &str = "m=audio 7000 RTP/AVP 8 96\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:96 PS/90000\r\n";

/// An online device sent the Broadcast MESSAGE and answered it 200; returns the handle.
fn broadcast_taken(h: &mut H, dev: &mut Dev) -> BroadcastHandle {
    let Outcome::Broadcast(Ok(handle)) = h.command(Command::Broadcast { device_id: dev.id.clone(), channel_id: CH.into() }) else { panic!("started") };
    let message = h.sent_one(dev.peer);
    let text = String::from_utf8_lossy(message.body()).to_string();
    assert!(text.contains("<Notify>") && text.contains("<CmdType>Broadcast</CmdType>"), "{text}");
    assert!(text.contains(&format!("<SourceID>{SERVER}</SourceID>")) && text.contains(&format!("<TargetID>{CH}</TargetID>")), "{text}");
    h.answer(dev, &message, 200, None);
    handle
}

fn ended(h: &mut H) -> Vec<(BroadcastHandle, BroadcastEnd)> {
    h.take_events().into_iter().filter_map(|e| if let Event::BroadcastEnded { handle, reason } = e { Some((handle, reason)) } else { None }).collect()
}

#[test]
fn a_device_invites_for_the_audio_and_is_answered_sendonly_until_it_hangs_up() {
    let mut h = H::new();
    let mut dev = Dev::udp(DEV, addr(9, 5060));
    h.online_device(&mut dev);
    let handle = broadcast_taken(&mut h, &mut dev);
    // A second broadcast to the channel meanwhile is refused.
    assert_eq!(h.command(Command::Broadcast { device_id: DEV.into(), channel_id: CH.into() }), Outcome::Broadcast(Err(ControlError::Busy)));

    let invite = device_invite(&mut dev, "bc-1", AUDIO);
    h.input(dev.peer, &invite);
    assert_eq!(h.sent_one(dev.peer).status(), Some(100));
    let events = h.take_events();
    let Some(Event::BroadcastInvited(inv)) = events.first() else { panic!("{events:?}") };
    assert_eq!((inv.handle, inv.channel_id.as_str(), inv.ssrc), (handle, CH, 100_000_077));
    assert_eq!((inv.media, inv.codec), (UpstreamMedia::Udp(addr(9, 7000)), BroadcastCodec::Pcma));

    let answer = UpstreamMediaAnswer { port: 31_000, media_ip: None };
    assert_eq!(h.command(Command::BroadcastAnswer { handle, result: Ok(answer) }), Outcome::Found(true));
    let ok = h.sent_one(dev.peer);
    assert_eq!(ok.status(), Some(200));
    let sdp = String::from_utf8_lossy(ok.body()).to_string();
    for line in ["m=audio 31000 RTP/AVP 8", "a=rtpmap:8 PCMA/8000", "a=sendonly", "y=0100000077", "c=IN IP4 127.0.0.1"] {
        assert!(sdp.contains(line), "{line} in {sdp}");
    }
    // Resent until the ACK, then quiet.
    h.advance(T1);
    assert_eq!(h.sent_one(dev.peer).status(), Some(200));
    let ack = dev.request("ACK", "bc-1", "", None);
    h.input(dev.peer, &ack);
    h.advance(T2 * 4);
    assert!(h.take().is_empty());

    // A BYE from another address is not the device's.
    let mut other = Dev::udp(DEV, addr(66, 5060));
    let spoofed = other.request("BYE", "bc-1", "", None);
    h.input(other.peer, &spoofed);
    assert_eq!(h.sent_one(other.peer).status(), Some(481));
    assert!(ended(&mut h).is_empty());
    // The device's BYE, with its tag of the dialog (Dev tags each request anew).
    let tag = parse(&invite).unwrap().from_tag().unwrap();
    let bye = String::from_utf8(dev.request("BYE", "bc-1", "", None)).unwrap();
    let bye = bye.replacen(&format!("tag=f{}", dev.cseq), &format!("tag={tag}"), 1);
    h.input(dev.peer, bye.as_bytes());
    assert_eq!(h.sent_one(dev.peer).status(), Some(200));
    assert_eq!(ended(&mut h), vec![(handle, BroadcastEnd::DeviceBye)]);
}

#[test]
fn a_stop_byes_the_device_in_its_dialog() {
    let mut h = H::new();
    let mut dev = Dev::udp(DEV, addr(9, 5060));
    h.online_device(&mut dev);
    let handle = broadcast_taken(&mut h, &mut dev);
    let invite = device_invite(&mut dev, "bc-2", "m=audio 7000 TCP/RTP/AVP 96\r\na=setup:passive\r\na=rtpmap:96 PS/90000\r\n");
    h.input(dev.peer, &invite);
    h.take();
    let Some(Event::BroadcastInvited(inv)) = h.take_events().into_iter().next() else { panic!("invited") };
    assert_eq!((inv.media, inv.codec), (UpstreamMedia::TcpDial(addr(9, 7000)), BroadcastCodec::PcmaInPs));
    h.command(Command::BroadcastAnswer { handle, result: Ok(UpstreamMediaAnswer { port: 31_002, media_ip: None }) });
    let ok = h.sent_one(dev.peer);
    let sdp = String::from_utf8_lossy(ok.body()).to_string();
    assert!(sdp.contains("m=audio 31002 TCP/RTP/AVP 96") && sdp.contains("a=setup:active"), "{sdp}");
    h.input(dev.peer, &dev.request("ACK", "bc-2", "", None));

    assert_eq!(h.command(Command::StopBroadcast { handle }), Outcome::Found(true));
    let bye = h.sent_one(dev.peer);
    assert_eq!(method(&bye), "BYE");
    assert_eq!(bye.call_id().as_deref(), Some("bc-2"));
    assert_eq!(bye.to_tag(), parse(&invite).unwrap().from_tag(), "their tag");
    assert_eq!(ended(&mut h), vec![(handle, BroadcastEnd::Stopped)]);
    assert_eq!(h.command(Command::StopBroadcast { handle }), Outcome::Found(false));
}

#[test]
fn each_way_a_broadcast_fails_is_told() {
    let mut h = H::new();
    let mut dev = Dev::udp(DEV, addr(9, 5060));
    h.online_device(&mut dev);

    // The device refuses the MESSAGE.
    let Outcome::Broadcast(Ok(a)) = h.command(Command::Broadcast { device_id: DEV.into(), channel_id: CH.into() }) else { panic!() };
    let message = h.sent_one(dev.peer);
    h.answer(&dev, &message, 403, None);
    assert_eq!(ended(&mut h), vec![(a, BroadcastEnd::Refused(403))]);

    // It takes the MESSAGE but never INVITEs: told after the wait, not before.
    let b = broadcast_taken(&mut h, &mut dev);
    h.advance(BROADCAST_INVITE_WAIT - Duration::from_millis(100));
    assert!(ended(&mut h).is_empty());
    h.advance(Duration::from_millis(200));
    assert_eq!(ended(&mut h), vec![(b, BroadcastEnd::NoInvite)]);

    // It says no in its Response.
    let c = broadcast_taken(&mut h, &mut dev);
    let no = format!("<?xml version=\"1.0\"?>\r\n<Response>\r\n<CmdType>Broadcast</CmdType>\r\n<SN>9</SN>\r\n<DeviceID>{CH}</DeviceID>\r\n<Result>ERROR</Result>\r\n</Response>\r\n");
    h.input(dev.peer, &dev.request("MESSAGE", "resp-1", "", Some((MANSCDP_CT, no.as_bytes()))));
    assert_eq!(h.sent_one(dev.peer).status(), Some(200));
    assert_eq!(ended(&mut h), vec![(c, BroadcastEnd::Declined("ERROR".into()))]);

    // It offers only PCMU: refused 488 with the reason.
    let d = broadcast_taken(&mut h, &mut dev);
    h.input(dev.peer, &device_invite(&mut dev, "bc-3", "m=audio 7000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"));
    assert_eq!(h.sent_one(dev.peer).status(), Some(488));
    assert_eq!(ended(&mut h), vec![(d, BroadcastEnd::NoCodec)]);

    // Answered but never ACKed.
    let e = broadcast_taken(&mut h, &mut dev);
    h.input(dev.peer, &device_invite(&mut dev, "bc-4", AUDIO));
    h.take();
    h.take_events();
    h.command(Command::BroadcastAnswer { handle: e, result: Ok(UpstreamMediaAnswer { port: 31_004, media_ip: None }) });
    h.advance(TRANSACTION_TIMEOUT + Duration::from_secs(1));
    assert_eq!(ended(&mut h), vec![(e, BroadcastEnd::NoAck)]);
    assert!(h.take().iter().any(|(_, m)| method(m) == "BYE"), "a BYE after no ACK");

    // An offline device is refused at once.
    assert_eq!(
        h.command(Command::Broadcast { device_id: "34020000001320000099".into(), channel_id: CH.into() }),
        Outcome::Broadcast(Err(ControlError::UnknownDevice))
    );
}

#[test]
fn an_invite_from_a_device_with_no_broadcast_or_an_unregistered_address_is_refused() {
    let mut h = H::new();
    let mut dev = Dev::udp(DEV, addr(9, 5060));
    h.online_device(&mut dev);
    h.input(dev.peer, &device_invite(&mut dev, "bc-5", AUDIO));
    assert_eq!(h.sent_one(dev.peer).status(), Some(403));
    broadcast_taken(&mut h, &mut dev);
    let mut stranger = Dev::udp(DEV, addr(66, 5060));
    h.input(stranger.peer, &device_invite(&mut stranger, "bc-6", AUDIO));
    assert_eq!(h.sent_one(stranger.peer).status(), Some(403));
    assert!(h.take_events().iter().all(|e| !matches!(e, Event::BroadcastInvited(_))));
}
