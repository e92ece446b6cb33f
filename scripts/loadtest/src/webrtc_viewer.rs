//! WebRTC (WHEP) viewers on str0m as the offering, full-ICE side (what a browser is to gmv):
//! each POSTs a recvonly offer, connects, and counts the pictures and bytes it gets and its
//! stalls, so a run gives the engine's CPU per WebRTC viewer beside its CPU per FLV viewer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

/// No picture for this long (once connected) counts as a stall.
pub const STALL_GAP: Duration = Duration::from_secs(1);
/// Longest wait on the socket between looks at the clock.
const RECV_WAIT_MAX: Duration = Duration::from_millis(50);

#[derive(Debug, Default, Clone)]
pub struct WebRtcStats {
    pub status: u16,
    pub connected_after: Option<Duration>,
    pub video_frames: u64,
    pub audio_frames: u64,
    pub bytes: u64,
    pub stalls: u32,
    /// Why it stopped early (the offer refused, str0m's error, never connected).
    pub error: Option<String>,
}

/// One viewer of `path` (`/whep/{stream_id}/{token}`) until `until`.
pub fn run(http: SocketAddr, path: &str, until: Instant) -> WebRtcStats {
    let mut stats = WebRtcStats::default();
    let started = Instant::now();
    let Ok(sock) = UdpSocket::bind("127.0.0.1:0") else { return stats };
    let Ok(local) = sock.local_addr() else { return stats };
    let mut rtc = Rtc::builder().build(started);
    let Ok(candidate) = Candidate::host(local, "udp") else { return stats };
    rtc.add_local_candidate(candidate);
    let mut change = rtc.sdp_api();
    change.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    // Video only: the clip has no audio, and str0m's answer then leaves the audio m= line
    // without a format, which str0m's own parser refuses (browsers take it).
    let Some((offer, pending)) = change.apply() else { return stats };
    let (status, answer) = post_offer(http, path, &offer.to_sdp_string());
    stats.status = status;
    let answer = match answer.filter(|_| status == 201).map(|a| SdpAnswer::from_sdp_string(&a)) {
        Some(Ok(answer)) => answer,
        Some(Err(e)) => return WebRtcStats { error: Some(format!("answer: {e}")), ..stats },
        None => return WebRtcStats { error: Some(format!("offer answered {status}")), ..stats },
    };
    if let Err(e) = rtc.sdp_api().accept_answer(pending, answer) {
        return WebRtcStats { error: Some(format!("accept answer: {e}")), ..stats };
    }
    let mut buf = vec![0u8; 2048];
    let mut last_picture = Instant::now();
    let mut stalled = false;
    let mut ice = None;
    while Instant::now() < until {
        let next = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => {
                    let _ = sock.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(Event::Connected)) => {
                    stats.connected_after = Some(started.elapsed());
                    last_picture = Instant::now();
                }
                Ok(Output::Event(Event::MediaData(m))) => {
                    stats.bytes += m.data.len() as u64;
                    if m.params.spec().codec.is_video() {
                        stats.video_frames += 1;
                        last_picture = Instant::now();
                        stalled = false;
                    } else {
                        stats.audio_frames += 1;
                    }
                }
                Ok(Output::Event(Event::IceConnectionStateChange(state))) => ice = Some(state),
                Ok(Output::Event(_)) => {}
                Err(e) => return WebRtcStats { error: Some(format!("poll: {e}")), ..stats },
            }
        };
        // The first picture is the stream's cached keyframe, the second the next live one
        // (up to a GOP later, by design): gaps count from then on.
        if stats.video_frames >= 2 && !stalled && last_picture.elapsed() > STALL_GAP {
            stats.stalls += 1;
            stalled = true;
        }
        let wait = next.saturating_duration_since(Instant::now()).clamp(Duration::from_millis(1), RECV_WAIT_MAX);
        let _ = sock.set_read_timeout(Some(wait));
        let input = match sock.recv_from(&mut buf) {
            Ok((n, source)) => match buf[..n].try_into() {
                Ok(contents) => Input::Receive(Instant::now(), Receive { proto: Protocol::Udp, source, destination: local, contents }),
                Err(_) => continue,
            },
            Err(_) => Input::Timeout(Instant::now()),
        };
        if let Err(e) = rtc.handle_input(input) {
            return WebRtcStats { error: Some(format!("input: {e}")), ..stats };
        }
    }
    if stats.connected_after.is_none() {
        stats.error = Some(format!("not connected; last ICE state {ice:?}"));
    }
    stats
}

/// The WHEP POST: its status and, on 201, the answer.
fn post_offer(http: SocketAddr, path: &str, sdp: &str) -> (u16, Option<String>) {
    let Ok(mut s) = TcpStream::connect(http) else { return (0, None) };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let request = format!("POST {path} HTTP/1.1\r\nHost: {http}\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{sdp}", sdp.len());
    if s.write_all(request.as_bytes()).is_err() {
        return (0, None);
    }
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text.split_once("\r\n\r\n").map(|(_, body)| body.to_string()))
}
