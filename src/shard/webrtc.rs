//! WebRTC playback (WHEP, RFC 9725) on the shard that owns the stream. Each media shard has one
//! UDP socket for all its WebRTC viewers and answers as ICE-lite: the browser's STUN checks
//! name our ufrag, which finds the session; after that its address does. A session is a str0m
//! `Rtc` (sans-IO: datagrams, frames and time in, datagrams out) driven by one task that takes
//! the stream's frames like a live fMP4 viewer: H.264 (and H.265 where the browser offers it)
//! passed through as RTP, G.711 A/µ-law as PCMA/PCMU (WebRTC's own codecs); AAC is not sent
//! (WebRTC has no AAC). str0m keeps a short packet history per viewer and answers NACKs from it.
//! A viewer starts on the stream's last keyframe at once, then goes on from the next live one,
//! its clock shifted so the jump costs no latency. A viewer too slow for its queue skips to the
//! next keyframe like other frame viewers.
//!
//! The same sessions take a browser's microphone (WHIP, RFC 9725's ingest twin) for voice
//! talk: its G.711 A-law (PCMA, which browsers offer, so nothing is transcoded) goes into a
//! `local` stream as RTP, from where a voice broadcast's sender takes it to a camera. The
//! session ends with its stream either way: the stream closes when the browser leaves, and the
//! browser's session ends when the stream is closed (the broadcast stopped).

use super::Shard;
use crate::proto::frame::{Codec, Frame};
use futures_channel::oneshot;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::UdpSocket;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};
use str0m::change::SdpOffer;
use str0m::format::Codec as RtcCodec;
use str0m::media::{Frequency, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, IceCreds, Input, Output, Rtc, RtcConfig};

/// WebRTC viewers on one shard, of one stream, and from one address at once.
pub const WHEP_SESSIONS_PER_SHARD_MAX: usize = 256;
pub const WHEP_SESSIONS_PER_STREAM_MAX: usize = 32;
pub const WHEP_SESSIONS_PER_ADDRESS_MAX: usize = 16;
/// Microphones a talk stream takes (one: two people talking at once into one stream would
/// interleave their packets).
pub const WHIP_SESSIONS_PER_STREAM_MAX: usize = 1;
/// ICE and DTLS must be done this long after the offer, or the session ends.
pub const WHEP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A connected browser sends consent checks every few seconds (RFC 7675): nothing from it
/// for this long and it is gone.
pub const WHEP_PEER_SILENCE_TIMEOUT: Duration = Duration::from_secs(10);
/// Datagrams queued for one session between its turns; more are dropped (and counted).
pub const WHEP_DATAGRAMS_QUEUED_MAX: usize = 256;
/// An SDP offer is at most this long (a browser's is 4 to 8 KiB).
pub const WHEP_OFFER_BYTES_MAX: usize = 32 * 1024;
/// A stream's device is asked for a keyframe (a viewer joined, a browser's PLI/FIR) at most
/// this often.
pub const KEYFRAME_ASK_INTERVAL: Duration = Duration::from_secs(2);
/// A datagram read is at most this long (WebRTC keeps under the path MTU).
const DATAGRAM_BYTES_MAX: usize = 2048;
/// Frames the stream may queue for a viewer before it skips (the frame viewers' queue).
const _: () = assert!(WHEP_SESSIONS_PER_STREAM_MAX <= super::frame_viewers::FRAME_VIEWERS_PER_STREAM_MAX);
const _: () = assert!(WHEP_SESSIONS_PER_ADDRESS_MAX <= WHEP_SESSIONS_PER_SHARD_MAX && WHEP_SESSIONS_PER_STREAM_MAX <= WHEP_SESSIONS_PER_SHARD_MAX);

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct WebRtcCounters {
    pub sessions_started: u64,
    pub sessions_connected: u64,
    pub sessions_ended: u64,
    /// Offers refused for a limit, a bad SDP or a codec the browser does not offer.
    pub offers_refused: u64,
    /// Sessions whose ICE/DTLS did not complete in time.
    pub connect_timeouts: u64,
    /// Datagrams from nobody we know (no session's ufrag or address), and dropped for a full
    /// session queue.
    pub datagrams_unrouted: u64,
    pub datagrams_dropped: u64,
    /// PLI/FIR from browsers.
    pub keyframe_requests: u64,
}

/// Why an offer is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WhepError {
    /// `webrtc.enabled` is false.
    Off,
    NoStream,
    /// A limit (`WHEP_SESSIONS_PER_*`), named.
    Full(&'static str),
    BadOffer(String),
    /// The offer has no codec the stream could be sent in (or, talking, sent to a camera in).
    NoCodec(String),
    /// A microphone offered for a stream that is not a talk stream.
    NotTalk,
}

impl WhepError {
    pub fn http(&self) -> (u16, &'static str, String) {
        match self {
            WhepError::Off => (503, "webrtc_off", "WebRTC is off (webrtc.enabled)".into()),
            WhepError::NoStream => (404, "not_found", "no such stream".into()),
            WhepError::Full(what) => (503, "too_many_viewers", format!("too many WebRTC viewers ({what})")),
            WhepError::BadOffer(why) => (400, "bad_offer", format!("the SDP offer cannot be used: {why}")),
            WhepError::NoCodec(why) => (400, "no_codec", why.clone()),
            WhepError::NotTalk => (409, "not_talk", "this stream does not take a microphone".into()),
        }
    }
}

/// What a session is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Play the stream; its video codec when known (H.264 is asked for when not).
    View(Option<Codec>),
    /// Take the browser's microphone into a talk stream, in PCMA.
    Talk,
}

/// A session's answer: the SDP and the id its `Location` names.
pub struct WhepAnswer {
    pub sdp: String,
    pub session: String,
}

struct Datagram {
    at: Instant,
    from: SocketAddr,
    bytes: Vec<u8>,
}

struct Entry {
    tx: LocalSender<Datagram>,
    close: Option<oneshot::Sender<()>>,
    ssrc: u32,
    talk: bool,
    peer_ip: IpAddr,
    ufrag: String,
    addrs: Vec<SocketAddr>,
}

/// Addresses a session is known from at most (a browser uses one, or a few while ICE runs).
const ADDRS_PER_SESSION_MAX: usize = 8;

#[derive(Default)]
struct Sessions {
    by_id: HashMap<String, Entry>,
    by_ufrag: HashMap<String, String>,
    by_addr: HashMap<SocketAddr, String>,
}

impl Sessions {
    fn remove(&mut self, id: &str) {
        if let Some(e) = self.by_id.remove(id) {
            self.by_ufrag.remove(&e.ufrag);
            for a in &e.addrs {
                self.by_addr.remove(a);
            }
        }
    }
}

/// A media shard's WebRTC: its socket and sessions.
pub struct WebRtc {
    socket: Rc<UdpSocket>,
    port: u16,
    sessions: RefCell<Sessions>,
    /// When each stream's device was last asked for a keyframe.
    keyframe_asked: RefCell<super::SsrcMap<Instant>>,
    pub counters: RefCell<WebRtcCounters>,
}

impl WebRtc {
    /// Takes the shard's bound socket and starts reading it.
    pub fn start(socket: UdpSocket) -> std::io::Result<Rc<WebRtc>> {
        let port = socket.local_addr()?.port();
        let me = Rc::new(WebRtc { socket: Rc::new(socket), port, sessions: RefCell::default(), keyframe_asked: RefCell::default(), counters: RefCell::default() });
        glommio::spawn_local(me.clone().read_loop()).detach();
        Ok(me)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Sessions now.
    pub fn sessions(&self) -> usize {
        self.sessions.borrow().by_id.len()
    }

    /// Routes each datagram to its session: by the address it came from, or (a STUN check
    /// from a new address) by the ufrag it names.
    async fn read_loop(self: Rc<Self>) {
        let mut buf = vec![0u8; DATAGRAM_BYTES_MAX];
        loop {
            let (n, from) = match self.socket.recv_from(&mut buf).await {
                Ok(r) => r,
                Err(error) => {
                    tracing::warn!(%error, "WebRTC socket read failed");
                    glommio::timer::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let bytes = &buf[..n];
            let mut sessions = self.sessions.borrow_mut();
            let id = match sessions.by_addr.get(&from) {
                Some(id) => Some(id.clone()),
                None => stun_username_ufrag(bytes).and_then(|u| sessions.by_ufrag.get(u).cloned()),
            };
            let Some(id) = id else {
                self.counters.borrow_mut().datagrams_unrouted += 1;
                continue;
            };
            let Some(entry) = sessions.by_id.get_mut(&id) else { continue };
            let known = entry.addrs.contains(&from);
            if !known && entry.addrs.len() >= ADDRS_PER_SESSION_MAX {
                self.counters.borrow_mut().datagrams_dropped += 1;
                continue;
            }
            let queued = entry.tx.try_send(Datagram { at: Instant::now(), from, bytes: bytes.to_vec() }).is_ok();
            if !known {
                entry.addrs.push(from);
                sessions.by_addr.insert(from, id);
            }
            if !queued {
                self.counters.borrow_mut().datagrams_dropped += 1;
            }
        }
    }

    /// Answers a WHEP offer for stream `ssrc` of this shard (`talk`: a WHIP offer of a
    /// microphone for a talk stream): the SDP answer naming `candidate_ip` and this shard's
    /// port, and a session that sends the stream (or takes the microphone) once the browser
    /// connects.
    pub fn offer(self: &Rc<Self>, shard: &Rc<Shard>, ssrc: u32, offer: &str, candidate_ip: IpAddr, peer_ip: IpAddr, talk: bool) -> Result<WhepAnswer, WhepError> {
        let refused = |e: WhepError| {
            self.counters.borrow_mut().offers_refused += 1;
            tracing::info!(ssrc, %peer_ip, talk, error = ?e, "WebRTC offer refused");
            e
        };
        let Some(stream) = shard.streams.borrow().get(&ssrc).cloned() else { return Err(refused(WhepError::NoStream)) };
        if talk && !stream.spec.local {
            return Err(refused(WhepError::NotTalk));
        }
        {
            let s = self.sessions.borrow();
            let (per_stream, per_stream_max) = match talk {
                true => ("talk per stream", WHIP_SESSIONS_PER_STREAM_MAX),
                false => ("per stream", WHEP_SESSIONS_PER_STREAM_MAX),
            };
            if s.by_id.len() >= WHEP_SESSIONS_PER_SHARD_MAX {
                return Err(refused(WhepError::Full("per shard")));
            }
            if s.by_id.values().filter(|e| e.ssrc == ssrc && e.talk == talk).count() >= per_stream_max {
                return Err(refused(WhepError::Full(per_stream)));
            }
            if s.by_id.values().filter(|e| e.peer_ip == peer_ip).count() >= WHEP_SESSIONS_PER_ADDRESS_MAX {
                return Err(refused(WhepError::Full("per address")));
            }
        }
        let (video_codec, audio_codec, last_keyframe, params) = {
            let p = stream.pipeline.borrow();
            (p.flv.video_info().map(|(c, _)| c), p.flv.audio_codec(), p.last_keyframe.clone(), p.flv.params().clone())
        };
        let Some(([ufrag, pass], id)) = random_ids() else { return Err(refused(WhepError::Full("no randomness"))) };
        let creds = IceCreds { ufrag: ufrag.clone(), pass };
        let local = SocketAddr::new(candidate_ip, self.port);
        let want = if talk { Want::Talk } else { Want::View(video_codec) };
        let Negotiated { rtc, media, answer, early } = negotiate(offer, creds, local, want, Instant::now()).map_err(refused)?;
        // A talk session watches its stream's frames only to end with it.
        let Some(rx) = stream.add_frame_viewer() else { return Err(refused(WhepError::Full("per stream"))) };
        drop(stream);
        let (tx, datagrams) = local_channel::new_bounded(WHEP_DATAGRAMS_QUEUED_MAX);
        let (close, closed) = oneshot::channel();
        let mut sessions = self.sessions.borrow_mut();
        sessions.by_ufrag.insert(ufrag.clone(), id.clone());
        sessions.by_id.insert(id.clone(), Entry { tx, close: Some(close), ssrc, talk, peer_ip, ufrag, addrs: Vec::new() });
        drop(sessions);
        self.counters.borrow_mut().sessions_started += 1;
        tracing::info!(ssrc, %peer_ip, session = %id, talk, ?video_codec, ?audio_codec, "WebRTC session offered");
        let talk = talk.then_some(Talk { seq: 0, packets: 0 });
        // A sound-only session (no video m= line) sends the sound at once.
        let has_video = video_codec.is_some() && media.video.is_some();
        let session = Session { rtc, local, media, talk, has_video, params, cached: last_keyframe, cached_sent: None, live: false, shift: 0, connected_at: None };
        let me = self.clone();
        let sid = id.clone();
        let shard = shard.clone();
        glommio::spawn_local(async move {
            let (end, talked) = session.run(&me, &shard, ssrc, datagrams, rx, closed, early).await;
            me.sessions.borrow_mut().remove(&sid);
            me.counters.borrow_mut().sessions_ended += 1;
            tracing::info!(ssrc, session = %sid, why = end, "WebRTC session left");
            if let Some(packets) = talked {
                // The microphone is gone: the talk stream closes, which ends its senders (the
                // broadcast's BYE to the camera follows).
                tracing::info!(ssrc, packets, "talk ended: its stream closes");
                super::stream::close_stream(&shard, ssrc, "the talker left");
            }
        })
        .detach();
        Ok(WhepAnswer { sdp: answer, session: id })
    }

    /// Asks the control for a keyframe of stream `ssrc` from its device, at most once per
    /// `KEYFRAME_ASK_INTERVAL` for a stream.
    fn ask_keyframe(&self, shard: &Shard, ssrc: u32) {
        let now = Instant::now();
        let mut asked = self.keyframe_asked.borrow_mut();
        if asked.get(&ssrc).is_some_and(|at| now < *at + KEYFRAME_ASK_INTERVAL) {
            return;
        }
        if asked.len() >= WHEP_SESSIONS_PER_SHARD_MAX {
            asked.retain(|_, at| now < *at + KEYFRAME_ASK_INTERVAL);
        }
        asked.insert(ssrc, now);
        if !shard.try_send(super::CONTROL, super::msg::ShardMsg::KeyframeWanted { ssrc }) {
            tracing::debug!(ssrc, "keyframe request not passed on (control queue full)");
        }
    }

    /// Ends session `id` of stream `ssrc` (the WHEP DELETE); false when there is none.
    pub fn close(&self, ssrc: u32, id: &str) -> bool {
        let mut s = self.sessions.borrow_mut();
        match s.by_id.get_mut(id).filter(|e| e.ssrc == ssrc).and_then(|e| e.close.take()) {
            Some(close) => close.send(()).is_ok(),
            None => false,
        }
    }
}

/// A browser's offer accepted: the session's `Rtc`, the tracks it sends in, the SDP answer and
/// what str0m had to send at once.
pub struct Negotiated {
    rtc: Rtc,
    media: Tracks,
    pub answer: String,
    early: Vec<str0m::net::Transmit>,
}

/// Accepts `offer` as an ICE-lite answerer under `creds`, offering `candidate`, with the codecs
/// gmv passes through (H.264, H.265, PCMA, PCMU; a microphone PCMA only, what a camera's
/// speaker takes). Refused when the offer does not parse, has no track for the stream's video
/// (H.264 when not known yet), or (talk) no PCMA audio.
pub fn negotiate(offer: &str, creds: IceCreds, candidate: SocketAddr, want: Want, now: Instant) -> Result<Negotiated, WhepError> {
    if let Some(pt) = payload_type_reused(offer) {
        return Err(WhepError::BadOffer(format!("payload type {pt} is described in two m= lines")));
    }
    let sdp = SdpOffer::from_sdp_string(offer).map_err(|e| WhepError::BadOffer(e.to_string()))?;
    let viewing = matches!(want, Want::View(_));
    let mut rtc = RtcConfig::new()
        .set_ice_lite(true)
        .set_local_ice_credentials(creds)
        .clear_codecs()
        .enable_h264(viewing)
        .enable_h265(viewing)
        .enable_pcma(true, false)
        .enable_pcmu(viewing, false)
        .set_stats_interval(None)
        .build(now);
    let candidate = Candidate::host(candidate, "udp").map_err(|e| WhepError::BadOffer(format!("no candidate: {e}")))?;
    rtc.add_local_candidate(candidate);
    // A browser's offer is hostile input to a library that asserts on it: a panic str0m may
    // still have (see payload_type_reused) costs this offer, not the shard. `rtc` is dropped
    // with the offer on that path, so nothing half-changed is used after it.
    let accepted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rtc.sdp_api().accept_offer(sdp)));
    let answer = match accepted {
        Ok(answer) => answer.map_err(|e| WhepError::BadOffer(e.to_string()))?,
        Err(_) => return Err(WhepError::BadOffer("the WebRTC library could not read this offer".into())),
    };
    // The answer's m-lines (str0m tells of them as events only once connected).
    let mut media = Tracks::default();
    for mid in answer.media_lines.iter().map(|m| m.mid()) {
        if let Some(kind) = rtc.media(mid).map(|m| m.kind()) {
            media.added(mid, kind);
        }
    }
    media.choose(&mut rtc);
    // What accepting the offer left to send (nothing before the browser's first check).
    let mut early = Vec::new();
    loop {
        match rtc.poll_output() {
            Ok(Output::Transmit(t)) => early.push(t),
            Ok(Output::Timeout(_)) => break,
            Ok(Output::Event(_)) => {}
            Err(e) => return Err(WhepError::BadOffer(e.to_string())),
        }
    }
    // The stream's video must go in a codec the browser takes (a player that asks for sound
    // only gets the sound); its audio goes when it can. A microphone must come in PCMA.
    let video = match want {
        Want::View(video) => video,
        Want::Talk => {
            let Some(audio) = media.audio.as_ref().filter(|t| t.carries(Codec::Pcma)) else {
                let why = "the offer has no PCMA (G.711 A-law) audio, which a camera's speaker takes: offer the microphone with PCMA";
                return Err(WhepError::NoCodec(why.into()));
            };
            let receiving = rtc.media(audio.mid).is_some_and(|m| matches!(m.direction(), str0m::media::Direction::RecvOnly | str0m::media::Direction::SendRecv));
            if !receiving {
                return Err(WhepError::BadOffer("the offer's audio sends nothing (a=recvonly): offer the microphone sendonly or sendrecv".into()));
            }
            return Ok(Negotiated { rtc, media, answer: answer.to_sdp_string(), early });
        }
    };
    // An offer without video asks for the sound only (the console's H.265 tile whose
    // picture a WASM decoder draws): taken when the sound can go.
    let video_wanted = video.unwrap_or(Codec::H264);
    let refused = match &media.video {
        Some(track) => !track.carries(video_wanted),
        None => !media.audio.as_ref().is_some_and(|t| t.carries(Codec::Pcma) || t.carries(Codec::Pcmu)),
    };
    if refused {
        let name = if video_wanted == Codec::H265 { "H.265" } else { "H.264" };
        let why = format!("the offer has no {name} video (the stream's video), so it cannot be sent over WebRTC to this browser");
        return Err(WhepError::NoCodec(why));
    }
    Ok(Negotiated { rtc, media, answer: answer.to_sdp_string(), early })
}

/// ICE credentials (for callers without str0m's types).
pub fn ice_creds(ufrag: &str, pass: &str) -> IceCreds {
    IceCreds { ufrag: ufrag.into(), pass: pass.into() }
}

/// Two ICE credentials (ufrag, password) and a session id, random.
fn random_ids() -> Option<([String; 2], String)> {
    let mut bytes = [0u8; 8 + 16 + 16];
    crate::auth::fill_random(&mut bytes).ok()?;
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    Some(([hex(&bytes[..8]), hex(&bytes[8..24])], hex(&bytes[24..])))
}

/// The local ufrag a STUN binding request names (its USERNAME is `ours:theirs`, RFC 8445
/// §7.2.2), or None for anything else.
pub fn stun_username_ufrag(b: &[u8]) -> Option<&str> {
    const MAGIC: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
    const USERNAME: u16 = 0x0006;
    if b.len() < 20 || b[0] & 0xC0 != 0 || b[4..8] != MAGIC {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
    let attrs = b.get(20..20 + len)?;
    let mut at = 0;
    while at + 4 <= attrs.len() {
        let kind = u16::from_be_bytes([attrs[at], attrs[at + 1]]);
        let n = usize::from(u16::from_be_bytes([attrs[at + 2], attrs[at + 3]]));
        let value = attrs.get(at + 4..at + 4 + n)?;
        if kind == USERNAME {
            let name = std::str::from_utf8(value).ok()?;
            return name.split_once(':').map(|(ours, _)| ours);
        }
        at += 4 + n.div_ceil(4) * 4;
    }
    None
}

/// A track the answer holds: its mid, and the payload type of each of our codecs the browser
/// takes in it.
struct Track {
    mid: Mid,
    pts: Vec<(Codec, Pt)>,
}

impl Track {
    fn carries(&self, codec: Codec) -> bool {
        self.pt(codec).is_some()
    }

    fn pt(&self, codec: Codec) -> Option<Pt> {
        self.pts.iter().find(|(c, _)| *c == codec).map(|(_, pt)| *pt)
    }
}

#[derive(Default)]
struct Tracks {
    mids: Vec<(Mid, MediaKind)>,
    video: Option<Track>,
    audio: Option<Track>,
}

impl Tracks {
    fn added(&mut self, mid: Mid, kind: MediaKind) {
        self.mids.push((mid, kind));
    }

    /// The first video and audio m-lines, with the payload types of our codecs in each (for
    /// H.264, packetization-mode 1 first: what the browsers send and take).
    fn choose(&mut self, rtc: &mut Rtc) {
        for (mid, kind) in std::mem::take(&mut self.mids) {
            let Some(writer) = rtc.writer(mid) else { continue };
            let mut params: Vec<_> = writer.payload_params().map(|p| (p.spec().codec, p.pt(), p.spec().format.packetization_mode)).collect();
            params.sort_by_key(|(_, _, mode)| std::cmp::Reverse(*mode == Some(1)));
            let mut pts = Vec::new();
            for (codec, pt, _) in params {
                let ours = match codec {
                    RtcCodec::H264 => Codec::H264,
                    RtcCodec::H265 => Codec::H265,
                    RtcCodec::PCMA => Codec::Pcma,
                    RtcCodec::PCMU => Codec::Pcmu,
                    _ => continue,
                };
                if !pts.iter().any(|(c, _)| *c == ours) {
                    pts.push((ours, pt));
                }
            }
            let slot = if kind == MediaKind::Video { &mut self.video } else { &mut self.audio };
            if slot.is_none() {
                *slot = Some(Track { mid, pts });
            }
        }
    }
}

/// Why a session ended (logged).
type End = &'static str;

enum Wake {
    Datagram(Option<Datagram>),
    Frame(Option<Frame>),
    Timeout,
    Close,
}

/// A talk session's feed into its stream.
struct Talk {
    /// The next RTP sequence number of what goes into the stream.
    seq: u16,
    packets: u64,
}

struct Session {
    rtc: Rtc,
    /// Our candidate's address (what the browser sends to).
    local: SocketAddr,
    media: Tracks,
    /// Set when the session takes a microphone instead of playing.
    talk: Option<Talk>,
    /// The stream has video (audio waits for it).
    has_video: bool,
    /// The stream's parameter sets, put before a keyframe that comes without them (a camera
    /// may send them once, or out of band): a browser decodes nothing without them.
    params: crate::proto::h26x::ParamSets,
    /// The stream's latest keyframe before the browser connected (sent first), and when and
    /// at what time it went.
    cached: Option<Frame>,
    cached_sent: Option<(Instant, u64)>,
    /// Live video flows (from a live keyframe on).
    live: bool,
    /// Subtracted from every frame's time from the first live keyframe on.
    shift: u64,
    connected_at: Option<Instant>,
}

impl Session {
    #[allow(clippy::too_many_arguments)]
    async fn run(
        mut self,
        webrtc: &WebRtc,
        shard: &Shard,
        ssrc: u32,
        datagrams: LocalReceiver<Datagram>,
        frames: LocalReceiver<Frame>,
        closed: oneshot::Receiver<()>,
        early: Vec<str0m::net::Transmit>,
    ) -> (End, Option<u64>) {
        let end = self.turns(webrtc, shard, ssrc, datagrams, frames, closed, early).await;
        (end, self.talk.map(|t| t.packets))
    }

    #[allow(clippy::too_many_arguments)]
    async fn turns(
        &mut self,
        webrtc: &WebRtc,
        shard: &Shard,
        ssrc: u32,
        datagrams: LocalReceiver<Datagram>,
        frames: LocalReceiver<Frame>,
        mut closed: oneshot::Receiver<()>,
        early: Vec<str0m::net::Transmit>,
    ) -> End {
        let started = Instant::now();
        let mut last_heard = started;
        for t in early {
            let _ = webrtc.socket.send_to(&t.contents, t.destination).await;
        }
        let mut next = started;
        loop {
            let now = Instant::now();
            if self.connected_at.is_none() && now >= started + WHEP_CONNECT_TIMEOUT {
                webrtc.counters.borrow_mut().connect_timeouts += 1;
                return "ICE/DTLS not done in time";
            }
            if now >= last_heard + WHEP_PEER_SILENCE_TIMEOUT {
                return "nothing from the browser (gone)";
            }
            let deadline = wake_at(next, started, self.connected_at.is_some(), last_heard);
            let wait = deadline.saturating_duration_since(now);
            let wake = futures_lite::future::or(
                async { Wake::Datagram(datagrams.recv().await) },
                futures_lite::future::or(
                    async { Wake::Frame(frames.recv().await) },
                    futures_lite::future::or(
                        async {
                            glommio::timer::sleep(wait).await;
                            Wake::Timeout
                        },
                        async {
                            let _ = (&mut closed).await;
                            Wake::Close
                        },
                    ),
                ),
            )
            .await;
            let result = match wake {
                Wake::Close => return "closed (DELETE)",
                Wake::Datagram(None) | Wake::Frame(None) => return "the stream ended",
                Wake::Datagram(Some(d)) => {
                    last_heard = d.at;
                    let Ok(contents) = d.bytes.as_slice().try_into() else { continue };
                    // The destination is our candidate: str0m finds the candidate pair by it.
                    self.rtc.handle_input(Input::Receive(d.at, Receive { proto: Protocol::Udp, source: d.from, destination: self.local, contents }))
                }
                Wake::Frame(Some(f)) => self.write(&f, false),
                Wake::Timeout => self.rtc.handle_input(Input::Timeout(Instant::now())),
            };
            if let Err(error) = result {
                tracing::debug!(ssrc, %error, "WebRTC input refused");
            }
            match self.drain(webrtc, shard, ssrc).await {
                Ok(t) => next = t,
                Err(end) => return end,
            }
        }
    }

    /// Polls the `Rtc` until it names its next timeout: datagrams sent, events acted on.
    async fn drain(&mut self, webrtc: &WebRtc, shard: &Shard, ssrc: u32) -> Result<Instant, End> {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => return Ok(t),
                Ok(Output::Transmit(t)) => {
                    let _ = webrtc.socket.send_to(&t.contents, t.destination).await;
                }
                Ok(Output::Event(Event::Connected)) => {
                    self.connected_at = Some(Instant::now());
                    webrtc.counters.borrow_mut().sessions_connected += 1;
                    tracing::info!(ssrc, talk = self.talk.is_some(), "WebRTC session connected");
                    if self.talk.is_some() {
                        continue;
                    }
                    // The cached keyframe is decoded at once; a browser shows it once a second
                    // picture follows, so the device is asked for a fresh keyframe too.
                    if let Some(kf) = self.cached.take() {
                        let _ = self.write(&kf, true);
                    }
                    webrtc.ask_keyframe(shard, ssrc);
                }
                Ok(Output::Event(Event::IceConnectionStateChange(IceConnectionState::Disconnected))) => return Err("ICE disconnected"),
                Ok(Output::Event(Event::Closed)) => return Err("the browser closed DTLS"),
                Ok(Output::Event(Event::MediaData(d))) => self.talked(shard, ssrc, &d),
                Ok(Output::Event(Event::KeyframeRequest(_))) => {
                    webrtc.counters.borrow_mut().keyframe_requests += 1;
                    webrtc.ask_keyframe(shard, ssrc);
                }
                Ok(Output::Event(_)) => {}
                Err(error) => {
                    tracing::info!(ssrc, %error, "WebRTC session failed");
                    return Err("str0m error");
                }
            }
        }
    }

    /// Writes a frame of the stream once connected: video from a keyframe on (the cached one
    /// at once, then live from the next), audio once live video flows (at once for a stream
    /// without video).
    fn write(&mut self, f: &Frame, from_cache: bool) -> Result<(), str0m::RtcError> {
        // A talk stream's frames are this session's own microphone.
        if self.talk.is_some() {
            return Ok(());
        }
        if self.connected_at.is_none() {
            if f.codec.is_video() && f.keyframe {
                self.cached = Some(f.clone());
            }
            return Ok(());
        }
        let now = Instant::now();
        if f.codec.is_video() {
            if !self.live {
                if !f.keyframe {
                    return Ok(());
                }
                if from_cache {
                    self.cached_sent = Some((now, f.pts));
                } else {
                    // The first live keyframe after the cached one: its time goes on from the
                    // cached one's by the wall time between them, so the browser's jitter
                    // buffer does not hold every later frame back by the gap.
                    if let Some((sent_at, pts)) = self.cached_sent {
                        let elapsed_90k = (now.saturating_duration_since(sent_at).as_micros() * 9 / 100) as u64;
                        self.shift = f.pts.saturating_sub(pts).saturating_sub(elapsed_90k);
                    }
                    self.live = true;
                }
            }
        } else if !self.live && self.has_video {
            return Ok(());
        }
        let track = if f.codec.is_video() { self.media.video.as_ref() } else { self.media.audio.as_ref() };
        let Some((mid, pt)) = track.and_then(|t| Some((t.mid, t.pt(f.codec)?))) else { return Ok(()) };
        let pts = f.pts.saturating_sub(self.shift);
        let time = if f.codec.is_video() { MediaTime::new(pts, Frequency::NINETY_KHZ) } else { MediaTime::new(pts * 8_000 / 90_000, Frequency::EIGHT_KHZ) };
        let data = match f.keyframe && f.codec.is_video() {
            true => self.with_params(f),
            false => None,
        };
        let Some(writer) = self.rtc.writer(mid) else { return Ok(()) };
        match data {
            Some(d) => writer.write(pt, now, time, d),
            None => writer.write(pt, now, time, f.data.as_ref()),
        }
    }

    /// A talk session's microphone: its PCMA into the talk stream as RTP under the stream's
    /// SSRC, on the browser's clock (anything else the browser sends is not taken).
    fn talked(&mut self, shard: &Shard, ssrc: u32, d: &str0m::media::MediaData) {
        let Some(talk) = self.talk.as_mut() else { return };
        let pcma = self.media.audio.as_ref().filter(|t| t.mid == d.mid).and_then(|t| t.pt(Codec::Pcma));
        if pcma != Some(d.pt) || d.data.len() > super::audio_feed::TALK_PAYLOAD_BYTES_MAX {
            return;
        }
        let Some(stream) = shard.streams.borrow().get(&ssrc).cloned() else { return };
        let marker = talk.packets == 0 || d.audio_start_of_talk_spurt;
        stream.on_local_packet(super::audio_feed::pcma_rtp(ssrc, talk.seq, d.time.numer() as u32, marker, &d.data));
        talk.seq = talk.seq.wrapping_add(1);
        talk.packets += 1;
    }

    /// A keyframe without its SPS (and PPS, VPS), with the stream's put before it; None when it
    /// has them (or the stream has none to give).
    fn with_params(&mut self, f: &Frame) -> Option<Vec<u8>> {
        use crate::proto::h26x::{nal_units, ParamSets};
        let mut own = ParamSets::default();
        for nal in nal_units(&f.data) {
            own.observe(f.codec, nal);
        }
        if own.sps.is_some() {
            // Newer than what the stream had when the viewer came.
            self.params = own;
            return None;
        }
        let sets: Vec<&[u8]> = [&self.params.vps, &self.params.sps, &self.params.pps].into_iter().flatten().map(|b| b.as_ref()).collect();
        if sets.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(f.data.len() + sets.iter().map(|s| s.len() + 4).sum::<usize>());
        for nal in sets {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(nal);
        }
        out.extend_from_slice(&f.data);
        Some(out)
    }
}

/// A payload type an offer lists or describes (`a=rtpmap`, `a=fmtp`) in more than one m= line.
/// str0m 0.24 panics on such an offer ("Pt locked multiple times", found by the whep_offer
/// fuzz target), so it is refused before str0m reads it; browsers give each m= line its own.
fn payload_type_reused(offer: &str) -> Option<u8> {
    let (mut before, mut here) = ([false; 128], [false; 128]);
    let pt = |s: &str| s.split_whitespace().next().and_then(|p| p.parse::<u8>().ok()).filter(|p| *p < 128);
    for line in offer.lines().map(|l| l.trim_end_matches('\r')) {
        let pts: Vec<u8> = if let Some(m) = line.strip_prefix("m=") {
            for (b, h) in before.iter_mut().zip(here.iter_mut()) {
                *b |= std::mem::take(h);
            }
            m.split_whitespace().skip(3).filter_map(pt).collect()
        } else if let Some(a) = line.strip_prefix("a=rtpmap:").or_else(|| line.strip_prefix("a=fmtp:")) {
            pt(a).into_iter().collect()
        } else {
            continue;
        };
        for p in pts {
            if before[usize::from(p)] {
                return Some(p);
            }
            here[usize::from(p)] = true;
        }
    }
    None
}

/// When a session wakes without input: str0m's next timeout, the connect deadline while not
/// connected (past it, kept after connecting, it would wake the session at once, every time:
/// a spin that took half a core per viewer from its 10th second), the peer's silence limit.
fn wake_at(next: Instant, started: Instant, connected: bool, last_heard: Instant) -> Instant {
    let connect_by = if connected { next } else { started + WHEP_CONNECT_TIMEOUT };
    next.min(connect_by).min(last_heard + WHEP_PEER_SILENCE_TIMEOUT)
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_offer_describing_a_payload_type_in_two_m_lines_is_refused_before_str0m() {
        // The fuzzer's crash, cut to its cause: the audio m= line describes video's 102.
        let crafted = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\nm=video 9 UDP/TLS/RTP/SAVPF 102 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\na=ice-ufrag:Abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:4D:76:52:0E:61:F9:1E:EE:30:E8:2A:E1\r\na=setup:actpass\r\na=rtcp-mux\r\na=rtpmap:102 H264/90000\r\na=rtpmap:96 VP8/90000\r\nm=audio 9 UDP/TLS/RTP/SAVPF 8 0\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=recvonly\r\na=rtcp-mux\r\na=rtpmap:102 H264/90000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n";
        assert_eq!(payload_type_reused(crafted), Some(102));
        let refused = negotiated(crafted, Some(Codec::H264));
        assert!(matches!(&refused, Err(WhepError::BadOffer(why)) if why.contains("payload type 102")), "{:?}", refused.err());
        // A browser's offer (its own types per m= line) passes.
        let browser = offer(&[(96, "VP8/90000"), (102, "H264/90000")], &[(111, "opus/48000/2"), (8, "PCMA/8000"), (0, "PCMU/8000")]);
        assert_eq!(payload_type_reused(&browser), None);
    }

    #[test]
    fn a_connected_session_waits_for_its_next_timeout_past_the_connect_deadline() {
        use super::*;
        let started = Instant::now();
        let now = started + WHEP_CONNECT_TIMEOUT + Duration::from_secs(5);
        let next = now + Duration::from_millis(40);
        assert_eq!(wake_at(next, started, true, now), next, "not the connect deadline, long past");
        assert_eq!(wake_at(next, started, false, now), started + WHEP_CONNECT_TIMEOUT, "before connecting it holds");
        assert_eq!(wake_at(next, started, true, now - WHEP_PEER_SILENCE_TIMEOUT), now, "the peer's silence limit");
    }

    use super::*;

    use crate::sim::browser_offer as offer;

    fn negotiated(sdp: &str, video: Option<Codec>) -> Result<Negotiated, WhepError> {
        negotiated_for(sdp, Want::View(video))
    }

    fn negotiated_for(sdp: &str, want: Want) -> Result<Negotiated, WhepError> {
        negotiate(sdp, ice_creds("0123456789abcdef", "0123456789abcdef0123456789abcdef"), "192.0.2.7:8189".parse().unwrap(), want, Instant::now())
    }

    #[test]
    fn a_microphone_is_taken_in_pcma_only() {
        // Chromium's microphone offer: Opus first, G.711 among the rest, no video, sendonly.
        let mic = offer(&[], &[(111, "opus/48000/2"), (9, "G722/8000"), (0, "PCMU/8000"), (8, "PCMA/8000")]).replace("a=recvonly", "a=sendonly");
        let n = negotiated_for(&mic, Want::Talk).unwrap();
        assert!(n.answer.contains("PCMA/8000") && !n.answer.contains("opus") && !n.answer.contains("PCMU"), "{}", n.answer);
        assert_eq!(n.media.audio.as_ref().and_then(|t| t.pt(Codec::Pcma)).map(|p| *p), Some(8));
        // Without PCMA nothing a camera takes comes: refused, naming what to offer.
        let opus = offer(&[], &[(111, "opus/48000/2"), (0, "PCMU/8000")]);
        assert!(matches!(negotiated_for(&opus, Want::Talk), Err(WhepError::NoCodec(why)) if why.contains("PCMA")));
        // With video beside it, only the audio is taken; a player's offer (receive only) is
        // no microphone.
        let both = offer(&[(102, "H264/90000")], &[(8, "PCMA/8000")]).replace("a=recvonly", "a=sendrecv");
        let n = negotiated_for(&both, Want::Talk).unwrap();
        assert!(!n.answer.contains("H264"), "no video is taken: {}", n.answer);
        let player = offer(&[], &[(8, "PCMA/8000")]);
        assert!(matches!(negotiated_for(&player, Want::Talk), Err(WhepError::BadOffer(why)) if why.contains("recvonly")));
    }

    #[test]
    fn an_offer_is_answered_in_the_codecs_gmv_passes_through() {
        let sdp = offer(&[(96, "VP8/90000"), (102, "H264/90000")], &[(111, "opus/48000/2"), (8, "PCMA/8000"), (0, "PCMU/8000")]);
        let n = negotiated(&sdp, Some(Codec::H264)).unwrap();
        assert!(n.answer.contains("a=candidate:") && n.answer.contains("192.0.2.7 8189"), "{}", n.answer);
        assert!(n.answer.contains("a=ice-lite") && n.answer.contains("a=ice-ufrag:0123456789abcdef"), "{}", n.answer);
        assert!(n.answer.contains("H264/90000") && n.answer.contains("PCMA/8000") && !n.answer.contains("VP8") && !n.answer.contains("opus"), "{}", n.answer);
        let video = n.media.video.as_ref().unwrap();
        assert_eq!(video.pt(Codec::H264).map(|p| *p), Some(102));
        let audio = n.media.audio.as_ref().unwrap();
        assert_eq!((audio.pt(Codec::Pcma).map(|p| *p), audio.pt(Codec::Pcmu).map(|p| *p)), (Some(8), Some(0)));
    }

    #[test]
    fn a_sound_only_offer_gets_the_sound() {
        // The console's H.265 tile draws the picture itself and asks WebRTC for G.711 only.
        let sound = offer(&[], &[(111, "opus/48000/2"), (8, "PCMA/8000"), (0, "PCMU/8000")]);
        let n = negotiated(&sound, Some(Codec::H265)).unwrap();
        assert!(n.media.video.is_none() && n.answer.contains("PCMA/8000") && !n.answer.contains("H265"), "{}", n.answer);
        let opus = offer(&[], &[(111, "opus/48000/2")]);
        assert!(matches!(negotiated(&opus, Some(Codec::H265)), Err(WhepError::NoCodec(_))));
    }

    #[test]
    fn an_offer_without_the_streams_video_is_refused_naming_it() {
        let vp8 = offer(&[(96, "VP8/90000")], &[(111, "opus/48000/2")]);
        assert!(matches!(negotiated(&vp8, Some(Codec::H264)), Err(WhepError::NoCodec(why)) if why.contains("H.264")));
        assert!(matches!(negotiated(&vp8, None), Err(WhepError::NoCodec(why)) if why.contains("H.264")), "video not known yet: H.264 wanted");
        let h264 = offer(&[(102, "H264/90000")], &[(8, "PCMA/8000")]);
        assert!(matches!(negotiated(&h264, Some(Codec::H265)), Err(WhepError::NoCodec(why)) if why.contains("H.265")));
        // A player asking for sound only gets the sound, whatever the video (the tile draws
        // the picture from another output).
        assert!(negotiated(&offer(&[], &[(8, "PCMA/8000")]), None).is_ok());
        assert!(negotiated(&offer(&[], &[(8, "PCMA/8000")]), Some(Codec::H264)).is_ok_and(|n| n.media.video.is_none()));
        for bad in ["", "v=0\r\n", "nonsense", "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"] {
            assert!(matches!(negotiated(bad, None), Err(WhepError::BadOffer(_))), "{bad:?}");
        }
    }

    #[test]
    fn a_stun_check_names_its_session_by_our_ufrag() {
        let user = b"ourufrag:theirs";
        let mut attr = vec![0x00, 0x06, 0x00, user.len() as u8];
        attr.extend_from_slice(user);
        attr.resize(attr.len().div_ceil(4) * 4, 0);
        let mut msg = vec![0x00, 0x01, 0x00, attr.len() as u8, 0x21, 0x12, 0xA4, 0x42];
        msg.extend_from_slice(&[7; 12]);
        // Another attribute first (PRIORITY), then USERNAME.
        let priority = [0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4];
        msg[3] = (attr.len() + priority.len()) as u8;
        msg.extend_from_slice(&priority);
        msg.extend_from_slice(&attr);
        assert_eq!(stun_username_ufrag(&msg), Some("ourufrag"));
        // RTP, DTLS, a wrong cookie, a length past the end, a truncated attribute: none.
        assert_eq!(stun_username_ufrag(&[0x80, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]), None);
        assert_eq!(stun_username_ufrag(&[22, 254, 253, 0, 0]), None);
        let mut wrong = msg.clone();
        wrong[4] = 0;
        assert_eq!(stun_username_ufrag(&wrong), None);
        let mut long = msg.clone();
        long[3] = 200;
        assert_eq!(stun_username_ufrag(&long), None);
        assert_eq!(stun_username_ufrag(&msg[..msg.len() - 4]), None);
    }
}
