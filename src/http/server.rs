//! Accept loop and request dispatch. A connection for a stream owned by another shard is
//! handed to that shard (the fd moves in a message) so every viewer lives next to its stream.

use super::Front;
use super::conn::{HttpConn, Io};
use super::request::{HEAD_BYTES_MAX, HeadError, RequestHead, parse_head};
use super::response::respond_error;
use super::routes::{self, Route};
use crate::auth::Scope;
use crate::control::PlaySite;
use crate::proto::live_mux::LiveFormat;
use crate::shard::msg::{HandoffConn, Served, ShardMsg};
use crate::shard::{CONTROL, Shard, owner_of};
use futures_lite::AsyncReadExt;
use glommio::net::{TcpListener, TcpStream};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::time::Duration;

/// A client must send its request head within this time.
pub const HEAD_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP connections one shard serves at once; more are closed at accept (counted in the log).
pub const HTTP_CONNS_PER_SHARD_MAX: usize = 50_000;
/// Connections per source IP still sending their request head (nothing authorised yet): one
/// host cannot hold every slot with slow heads.
pub const HTTP_HEADS_PER_SOURCE_MAX: usize = 256;

/// Open connections and heads in progress per source, on one shard.
#[derive(Default)]
struct ConnLimits {
    open: Cell<usize>,
    heads: RefCell<HashMap<IpAddr, usize>>,
}

/// Counts a connection until dropped.
struct ConnSlot {
    limits: Rc<ConnLimits>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.limits.open.set(self.limits.open.get() - 1);
    }
}

/// Counts a head in progress for its source until dropped.
struct HeadSlot {
    limits: Rc<ConnLimits>,
    ip: IpAddr,
}

impl Drop for HeadSlot {
    fn drop(&mut self) {
        let mut heads = self.limits.heads.borrow_mut();
        if let Some(n) = heads.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                heads.remove(&self.ip);
            }
        }
    }
}

/// HTTP on `http.listen`, and HTTPS on `http.tls.listen` when configured, until the process ends.
pub async fn serve(front: Rc<Front>) -> std::io::Result<()> {
    let shard = &front.shard;
    let plain = crate::shard::ports::tcp_listener(shard.config.http.listen, true)
        .map_err(|e| std::io::Error::other(format!("{}: {e}", shard.config.http.listen)))?;
    tracing::info!(shard = shard.index, listen = %shard.config.http.listen, "HTTP listening");
    // One set of limits for both: a host's heads in progress count together.
    let limits = Rc::new(ConnLimits::default());
    if let Some(tls) = &shard.config.http.tls {
        let listener = crate::shard::ports::tcp_listener(tls.listen, true).map_err(|e| std::io::Error::other(format!("{}: {e}", tls.listen)))?;
        tracing::info!(shard = shard.index, listen = %tls.listen, "HTTPS listening");
        glommio::spawn_local(accept_loop(front.clone(), listener, limits.clone(), true)).detach();
    }
    accept_loop(front, plain, limits, false).await;
    Ok(())
}

async fn accept_loop(front: Rc<Front>, listener: TcpListener, limits: Rc<ConnLimits>, tls: bool) {
    let shard = &front.shard;
    let mut refused: u64 = 0;
    loop {
        match listener.accept().await {
            Ok(conn) => {
                let ip = conn.peer_addr().map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
                let heads_from_ip = limits.heads.borrow().get(&ip).copied().unwrap_or(0);
                if limits.open.get() >= HTTP_CONNS_PER_SHARD_MAX || heads_from_ip >= HTTP_HEADS_PER_SOURCE_MAX {
                    refused += 1;
                    if refused.is_power_of_two() {
                        tracing::warn!(shard = shard.index, %ip, refused, "HTTP connection refused: too many open or too many heads from this source");
                    }
                    continue; // dropping it closes it
                }
                limits.open.set(limits.open.get() + 1);
                *limits.heads.borrow_mut().entry(ip).or_default() += 1;
                let slot = ConnSlot { limits: limits.clone() };
                let head_slot = HeadSlot { limits: limits.clone(), ip };
                glommio::spawn_local(handle_conn(front.clone(), conn, slot, head_slot, tls)).detach();
            }
            Err(error) => {
                // Out of fds or similar: back off instead of spinning.
                tracing::warn!(shard = shard.index, %error, "HTTP accept failed");
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A request head, from what is pending on the connection and what arrives; None when the
/// peer closed before sending a byte of it.
async fn read_head(conn: &mut HttpConn) -> Result<Option<(RequestHead, Vec<u8>)>, HeadError> {
    let mut buf = std::mem::take(&mut conn.pending);
    let mut chunk = [0u8; 2048];
    loop {
        if !buf.is_empty() {
            if let Some((head, len)) = parse_head(&buf)? {
                return Ok(Some((head, buf.split_off(len))));
            }
            if buf.len() > HEAD_BYTES_MAX {
                return Err(HeadError::TooLarge);
            }
        }
        let n = conn.read(&mut chunk).await.map_err(|_| HeadError::Malformed)?;
        if n == 0 {
            return if buf.is_empty() { Ok(None) } else { Err(HeadError::Malformed) };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A kept connection may wait this long for its next request before it is closed.
pub const KEEP_ALIVE_IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Requests served on one connection before it is closed (a client cannot hold one forever).
pub const KEEP_ALIVE_REQUESTS_MAX: u32 = 1000;

async fn handle_conn(front: Rc<Front>, tcp: TcpStream, _slot: ConnSlot, head_slot: HeadSlot, tls: bool) {
    let started = std::time::Instant::now();
    let mut conn = if tls {
        let Some(config) = front.shard.tls.borrow().clone() else { return };
        // The handshake is part of the head's time: a silent client holds nothing longer.
        match glommio::timer::timeout(HEAD_READ_TIMEOUT, async { Ok(super::tls::accept(config, tcp).await) }).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(error)) => return tracing::debug!(shard = front.shard.index, %error, "TLS handshake failed"),
            Err(_) => return tracing::debug!(shard = front.shard.index, "TLS handshake timed out"),
        }
    } else {
        HttpConn::new(tcp)
    };
    let left = HEAD_READ_TIMEOUT.saturating_sub(started.elapsed());
    let read = glommio::timer::timeout(left, async { Ok(read_head(&mut conn).await) }).await;
    drop(head_slot);
    match read {
        Ok(Ok(Some(first))) => serve_conn(front, conn, first).await,
        Ok(Ok(None)) => {}
        Ok(Err(HeadError::TooLarge)) => respond_error(&mut conn, 431, "head_too_large", "request head too large").await,
        Ok(Err(e)) => respond_error(&mut conn, 400, "bad_request", &e.to_string()).await,
        Err(_) => respond_error(&mut conn, 408, "timeout", "request head not received in time").await,
    }
}

/// Serves `first` and, while the connection is kept (HTTP/1.1 keep-alive), the requests that
/// follow on it, until it closes, idles, is handed to another shard or streams until close.
async fn serve_conn(front: Rc<Front>, mut conn: HttpConn, first: (RequestHead, Vec<u8>)) {
    let (head, rest) = first;
    start_request(&front, &mut conn, &head, rest);
    if let Some(kept) = dispatch(front.clone(), conn, head).await {
        serve_next(front, kept).await;
    }
}

/// Takes a request on a connection: what was read past its head, the count, keep-alive, CORS.
fn start_request(front: &Front, conn: &mut HttpConn, head: &RequestHead, rest: Vec<u8>) {
    conn.pending = rest;
    conn.served += 1;
    conn.keep_alive = head.wants_keep_alive() && conn.served < KEEP_ALIVE_REQUESTS_MAX;
    conn.set_origin(head.header("origin"), &front.shard.config.http.cors_origins);
}

/// The requests that follow on a kept connection, until it closes or idles.
async fn serve_next(front: Rc<Front>, mut conn: HttpConn) {
    loop {
        let request = match glommio::timer::timeout(KEEP_ALIVE_IDLE_TIMEOUT, async { Ok(read_head(&mut conn).await) }).await {
            Ok(Ok(Some(next))) => next,
            Ok(Ok(None)) | Err(_) => return, // closed, or idle: nothing to answer
            Ok(Err(e)) => {
                conn.keep_alive = false;
                let (status, code) = if e == HeadError::TooLarge { (431, "head_too_large") } else { (400, "bad_request") };
                return respond_error(&mut conn, status, code, &e.to_string()).await;
            }
        };
        let (head, rest) = request;
        start_request(&front, &mut conn, &head, rest);
        match dispatch(front.clone(), conn, head).await {
            Some(kept) => conn = kept,
            None => return,
        }
    }
}

/// A connection handed over from another executor: what it says to serve (already authorised)
/// is served at once; a request without one is routed here as it came.
pub fn serve_handoff(front: &Rc<Front>, handed: HandoffConn) {
    let fd = handed.fd.into_raw_fd();
    // SAFETY: the fd was duplicated for this hand-off, is owned by the message, and is of the kind it says.
    let mut conn = match handed.relayed_for {
        None => HttpConn::new(unsafe { TcpStream::from_raw_fd(fd) }),
        Some(peer) => HttpConn::with(Io::Relayed(unsafe { glommio::net::UnixStream::from_raw_fd(fd) }, fd), peer),
    };
    conn.served = handed.served;
    let (front, head, rest) = (front.clone(), handed.head, handed.rest);
    match handed.serve {
        None => glommio::spawn_local(serve_conn(front, conn, (head, rest))).detach(),
        Some(served) => glommio::spawn_local(async move {
            start_request(&front, &mut conn, &head, rest);
            // Only the API reads bodies: after a stream request with one, the stream is out of step.
            conn.keep_alive &= head.content_length == 0;
            if let Some(kept) = serve_here(&front.shard, conn, served).await {
                serve_next(front, kept).await;
            }
        })
        .detach(),
    };
}

/// Serves one request (what was read past its head waits in `conn.pending`); gives the
/// connection back when it is kept for the next one.
pub async fn dispatch(front: Rc<Front>, mut conn: HttpConn, head: RequestHead) -> Option<HttpConn> {
    let shard = &front.shard;
    let route = routes::route(&head, &shard.config);
    if !matches!(route, Route::Api | Route::NodeApi { .. } | Route::NodeHook { .. }) {
        // Only the API reads bodies: after another request with one, the stream is out of step.
        if head.content_length > 0 {
            conn.keep_alive = false;
        }
    }
    match route {
        Route::Preflight => preflight(&mut conn).await,
        Route::Api if shard.is_control() => super::api::serve(&front, &mut conn, head).await,
        Route::Api => return hand_off(shard, CONTROL, conn, head, None).await,
        // ZLMediaKit's WebRTC play (wvp's player): the stream as the node's `on_play` allows it.
        Route::NodeApi { name } if shard.is_control() && name == "webrtc" => {
            let q = |k: &str| head.query_param(k).unwrap_or_default().to_string();
            if q("type") != "play" {
                conn.keep_alive = false;
                super::response::respond_json(&mut conn, 200, &serde_json::json!({ "code": -400, "msg": "gmv offers WebRTC play only (type=play)" })).await;
                return None;
            }
            let ssrc = match super::node_api::play_allowed(&front, &mut conn, &head, &q("app"), &q("stream"), "rtc").await {
                Some(super::node_api::Watch::Stream(ssrc)) => ssrc,
                Some(super::node_api::Watch::Vod { .. }) => {
                    conn.keep_alive = false;
                    super::response::respond_json(&mut conn, 200, &serde_json::json!({ "code": -400, "msg": "gmv plays recordings (loadMP4File) as HTTP-FLV only" })).await;
                    return None;
                }
                None => return None,
            };
            let offer = super::whep::read_offer(&mut conn, &head, false).await?;
            let served = super::whep::served(shard, &conn, ssrc, offer, true);
            return serve_at_owner(shard, conn, head, ssrc, served).await;
        }
        Route::NodeApi { name } if shard.is_control() => super::node_api::serve_api(&front, &mut conn, &head, &name).await,
        Route::NodePlay { app, stream, format } if shard.is_control() => {
            let ssrc = match super::node_api::play_allowed(&front, &mut conn, &head, &app, &stream, format.schema()).await {
                None => return conn.keep_alive.then_some(conn),
                Some(super::node_api::Watch::Stream(ssrc)) => ssrc,
                // A recording (loadMP4File) plays as HTTP-FLV, from where its seek put it.
                Some(super::node_api::Watch::Vod { stem, control }) if format == routes::NodeFormat::Flv && super::websocket::upgrade_accept(&head).is_none() => {
                    super::record_play::serve(shard, conn, &stem, 0, Some(control)).await;
                    return None;
                }
                Some(super::node_api::Watch::Vod { .. }) => {
                    respond_error(&mut conn, 415, "unsupported", "gmv plays recordings (loadMP4File) as HTTP-FLV only").await;
                    return conn.keep_alive.then_some(conn);
                }
            };
            let live = match format {
                routes::NodeFormat::Fmp4 => Some(LiveFormat::Fmp4),
                routes::NodeFormat::Ts => Some(LiveFormat::Ts),
                routes::NodeFormat::Flv | routes::NodeFormat::Hls | routes::NodeFormat::HlsFmp4 => None,
            };
            if let Some(format) = live {
                let served = Served::Live { ssrc, websocket: super::websocket::upgrade_accept(&head), format };
                return serve_at_owner(shard, conn, head, ssrc, served).await;
            }
            // wvp's players read H.265 as codec id 12 unless the node is set to enhanced RTMP.
            let legacy_default = front.node.as_ref().is_some_and(|n| !n.rtmp_enhanced.get());
            let playlist = match format {
                routes::NodeFormat::Hls => Some("index.m3u8"),
                routes::NodeFormat::HlsFmp4 => Some("index.fmp4.m3u8"),
                _ => None,
            };
            return serve_stream_allowed(shard, conn, head, ssrc, playlist, legacy_default).await;
        }
        Route::NodeHook { name } if shard.is_control() => super::node_api::serve_hook(&front, &mut conn, &head, &name).await,
        Route::NodeApi { .. } | Route::NodePlay { .. } | Route::NodeHook { .. } => return hand_off(shard, CONTROL, conn, head, None).await,
        Route::FlvPlay { stream_id, token } => {
            let websocket = super::websocket::upgrade_accept(&head);
            let hevc_legacy = routes::hevc_legacy(&head, false);
            return serve_stream(shard, conn, head, token.as_deref(), &stream_id, |ssrc| Served::Flv { ssrc, websocket, hevc_legacy }).await;
        }
        Route::Whep { stream_id, token } => {
            let Some(ssrc) = routes::parse_stream_id(&stream_id) else {
                respond_error(&mut conn, 404, "not_found", "no such stream").await;
                return None;
            };
            if !check_play(shard, &mut conn, &head, token.as_deref(), &Scope::Stream(routes::stream_id(ssrc))).await {
                return None;
            }
            let offer = super::whep::read_offer(&mut conn, &head, true).await?;
            let served = super::whep::served(shard, &conn, ssrc, offer, false);
            return serve_at_owner(shard, conn, head, ssrc, served).await;
        }
        Route::WhepSession { stream_id, session } => {
            let Some(ssrc) = routes::parse_stream_id(&stream_id) else {
                respond_error(&mut conn, 404, "not_found", "no such stream").await;
                return conn.keep_alive.then_some(conn);
            };
            if head.method != "DELETE" {
                super::response::respond_empty(&mut conn, 405, "Allow: DELETE\r\n").await;
                return conn.keep_alive.then_some(conn);
            }
            return serve_at_owner(shard, conn, head, ssrc, Served::WhepClose { ssrc, session }).await;
        }
        Route::WhepGb { device_id, channel_id, token } => {
            let scope = Scope::Channel { device_id: device_id.clone(), channel_id: channel_id.clone() };
            if !check_play(shard, &mut conn, &head, token.as_deref(), &scope).await {
                return None;
            }
            if !shard.is_control() {
                return hand_off(shard, CONTROL, conn, head, None).await;
            }
            let offer = super::whep::read_offer(&mut conn, &head, true).await?;
            let control = active_control(front.as_ref(), &mut conn).await?;
            match control.play(&device_id, &channel_id, control.device_transport(&device_id)).await {
                Ok(session) => match control.play_site(session.ssrc) {
                    PlaySite::Here => {
                        let served = super::whep::served(shard, &conn, session.ssrc, offer, false);
                        return serve_at_owner(shard, conn, head, session.ssrc, served).await;
                    }
                    PlaySite::Node { .. } => {
                        respond_error(&mut conn, 409, "on_media_node", "the channel plays on a media node: POST the offer to the node's WHEP URL (from the play API)").await;
                    }
                },
                Err(e) => {
                    let (status, code) = e.http();
                    respond_error(&mut conn, status, code, &e.to_string()).await;
                }
            }
            return None;
        }
        Route::WhipTalk { channels } => {
            // Talking to cameras is the broadcast API's call, with its role.
            let needed = routes::required_role("POST", &["api", "broadcasts"]);
            let refusal = match routes::api_caller(&shard.secrets(), &head) {
                Ok((_, role)) if role >= needed => None,
                Ok((caller, role)) => Some((403, "forbidden", format!("talk needs the {needed:?} role; key {caller:?} is {role:?}"))),
                Err((status, code, message)) => Some((status, code, message.to_string())),
            };
            if let Some((status, code, message)) = refusal {
                conn.keep_alive = false; // the offer is not read
                respond_error(&mut conn, status, code, &message).await;
                return None;
            }
            let Some(channels) = channels else {
                conn.keep_alive = false;
                respond_error(&mut conn, 400, "bad_request", "name the channels: ?channels={device}:{channel},...").await;
                return None;
            };
            if !shard.is_control() {
                return hand_off(shard, CONTROL, conn, head, None).await;
            }
            let offer = super::whep::read_offer(&mut conn, &head, true).await?;
            let control = active_control(front.as_ref(), &mut conn).await?;
            match control.talk(&channels).await {
                Ok(ssrc) => {
                    let served = Served::Whep { ssrc, offer, candidate_ip: super::whep::candidate_ip(shard, &conn), peer: conn.peer_ip(), zlm: false, talk: true };
                    return serve_at_owner(shard, conn, head, ssrc, served).await;
                }
                Err(e) => {
                    let (status, code) = e.http();
                    respond_error(&mut conn, status, code, &e.to_string()).await;
                }
            }
            return None;
        }
        Route::Fmp4Play { stream_id, token } => {
            let websocket = super::websocket::upgrade_accept(&head);
            return serve_stream(shard, conn, head, token.as_deref(), &stream_id, |ssrc| Served::Live { ssrc, websocket, format: LiveFormat::Fmp4 }).await;
        }
        Route::Hls { stream_id, token, file } => {
            return serve_stream(shard, conn, head, token.as_deref(), &stream_id, |ssrc| Served::Hls { ssrc, file }).await;
        }
        Route::RecordPlay { stem, token, start_s } => {
            if check_play(shard, &mut conn, &head, token.as_deref(), &Scope::Record(stem.clone())).await {
                super::record_play::serve(shard, conn, &stem, start_s, None).await;
                return None;
            }
        }
        Route::Record { file, download } => {
            let stem = file.strip_suffix(".mp4").unwrap_or(&file).to_string();
            let scope = Scope::Record(stem);
            let allowed = routes::play_allowed(&shard.secrets(), &head, None, &scope, super::play_tokens::unix_s(), conn.peer_ip());
            // A recording on a media node that a control's token opens: the node's hook asks it.
            let asks_hook = allowed.is_err() && !download && shard.config.node.role != crate::config::Role::Control;
            if asks_hook && !shard.is_control() {
                return hand_off(shard, CONTROL, conn, head, None).await;
            }
            let by_hook = match (&front.node, asks_hook) {
                (Some(node), true) => node.http_access(&format!("/records/{file}"), &head.query, std::net::SocketAddr::new(conn.peer_ip(), 0)).await,
                _ => false,
            };
            if by_hook || answer_refusal(&mut conn, &head, allowed).await {
                let dir = if download { crate::shard::record::downloads_dir } else { crate::shard::record::records_dir };
                super::records_serve::serve(&dir(&shard.config.data_dir), &mut conn, &file, head.header("range")).await;
            }
        }
        Route::Cover { stream_id } => return serve_stream(shard, conn, head, None, &stream_id, |ssrc| Served::Cover { ssrc }).await,
        Route::GbPlay { device_id, channel_id, token } => {
            let scope = Scope::Channel { device_id: device_id.clone(), channel_id: channel_id.clone() };
            if !check_play(shard, &mut conn, &head, token.as_deref(), &scope).await {
                return conn.keep_alive.then_some(conn);
            }
            if !shard.is_control() {
                return hand_off(shard, CONTROL, conn, head, None).await;
            }
            let Some(control) = active_control(front.as_ref(), &mut conn).await else {
                return conn.keep_alive.then_some(conn);
            };
            match control.play(&device_id, &channel_id, control.device_transport(&device_id)).await {
                // On a media node: the viewer goes there, with a token for the stream.
                Ok(session) => match control.play_site(session.ssrc) {
                    PlaySite::Node { node, base } => {
                        let urls = super::play_tokens::stream_play_on_node(shard, &node, &base, &session.stream_id);
                        super::response::respond_redirect(&mut conn, urls["flv"].as_str().unwrap_or_default()).await;
                    }
                    // The token given opens the channel; the stream is served as its own.
                    PlaySite::Here => return serve_stream_allowed(shard, conn, head, session.ssrc, None, false).await,
                },
                Err(e) => {
                    let (status, code) = e.http();
                    respond_error(&mut conn, status, code, &e.to_string()).await;
                }
            }
        }
        Route::Redirect { location } => super::response::respond_redirect(&mut conn, &location).await,
        Route::Console { file } => super::console::serve(&mut conn, file.as_deref()).await,
        Route::NotFound => respond_error(&mut conn, 404, "not_found", "no such resource").await,
    }
    conn.keep_alive.then_some(conn)
}

/// The control plane, for a call that invites or talks to devices; None once the refusal is
/// answered: SIP is off (503), or this control is standby (503 naming the active one).
async fn active_control<'f>(front: &'f Front, conn: &mut HttpConn) -> Option<&'f Rc<crate::control::Control>> {
    let Some(control) = &front.control else {
        respond_error(conn, 503, "sip_disabled", "SIP is disabled").await;
        return None;
    };
    if !control.is_active() {
        let (status, body) = super::api::standby(control);
        super::response::respond_json(conn, status, &body).await;
        return None;
    }
    Some(control)
}

/// Serves a stream the request was allowed by something other than a token for the stream (a
/// channel's token, a node's `on_play`): HTTP-FLV on the stream's shard as it is, HLS
/// redirected to its `playlist` with a token for the stream (a player asks again and again).
/// `legacy_default`: H.265 in the codec-id-12 form unless the URL's `h265=` says otherwise.
async fn serve_stream_allowed(
    shard: &Rc<Shard>,
    mut conn: HttpConn,
    head: RequestHead,
    ssrc: u32,
    playlist: Option<&str>,
    legacy_default: bool,
) -> Option<HttpConn> {
    if let Some(playlist) = playlist {
        let id = routes::stream_id(ssrc);
        let Some((token, _)) = super::play_tokens::token_for(shard, &Scope::Stream(id.clone()), None, None) else {
            respond_error(&mut conn, 500, "internal", "cannot issue a stream token").await;
            return None;
        };
        super::response::respond_redirect(&mut conn, &format!("/hls/{id}/{token}/{playlist}")).await;
        return conn.keep_alive.then_some(conn);
    }
    let served = Served::Flv { ssrc, websocket: super::websocket::upgrade_accept(&head), hevc_legacy: routes::hevc_legacy(&head, legacy_default) };
    serve_at_owner(shard, conn, head, ssrc, served).await
}

/// Serves a request for a stream that its token (in the path, a header or the query) opens:
/// here when this shard owns the stream, else on the owner, which serves it as it is.
async fn serve_stream(
    shard: &Rc<Shard>,
    mut conn: HttpConn,
    head: RequestHead,
    token: Option<&str>,
    stream_id: &str,
    served: impl FnOnce(u32) -> Served,
) -> Option<HttpConn> {
    let Some(ssrc) = routes::parse_stream_id(stream_id) else {
        respond_error(&mut conn, 404, "not_found", "no such stream").await;
        return conn.keep_alive.then_some(conn);
    };
    // Checked before a hand-off, so refused requests cost the owner nothing.
    if !check_play(shard, &mut conn, &head, token, &Scope::Stream(routes::stream_id(ssrc))).await {
        return conn.keep_alive.then_some(conn);
    }
    serve_at_owner(shard, conn, head, ssrc, served(ssrc)).await
}

async fn serve_at_owner(shard: &Rc<Shard>, conn: HttpConn, head: RequestHead, ssrc: u32, served: Served) -> Option<HttpConn> {
    let owner = owner_of(ssrc, shard.media_shards);
    if owner != shard.index {
        return hand_off(shard, owner, conn, head, Some(served)).await;
    }
    serve_here(shard, conn, served).await
}

/// Serves an authorised stream request on the stream's own shard; the connection when it is
/// kept for another request.
async fn serve_here(shard: &Rc<Shard>, mut conn: HttpConn, served: Served) -> Option<HttpConn> {
    match served {
        Served::Flv { ssrc, websocket, hevc_legacy } => {
            super::flv_play::serve(shard, conn, ssrc, websocket, hevc_legacy).await;
            return None;
        }
        Served::Live { ssrc, websocket, format } => {
            super::live_play::serve(shard, conn, ssrc, websocket, format).await;
            return None;
        }
        Served::Hls { ssrc, file } => super::hls_serve::serve(shard, &mut conn, ssrc, &file).await,
        Served::Cover { ssrc } => serve_cover(shard, &mut conn, ssrc).await,
        Served::Whep { ssrc, offer, candidate_ip, peer, zlm, talk } => super::whep::answer(shard, &mut conn, ssrc, &offer, candidate_ip, peer, zlm, talk).await,
        Served::WhepClose { ssrc, session } => super::whep::close(shard, &mut conn, ssrc, &session).await,
    }
    conn.keep_alive.then_some(conn)
}

/// The live stream's cover, else the one stored when it had one, else why there is none.
async fn serve_cover(shard: &Shard, conn: &mut HttpConn, ssrc: u32) {
    let live = shard.streams.borrow().get(&ssrc).and_then(|s| s.cover.borrow().clone());
    let why_none = shard.streams.borrow().get(&ssrc).and_then(|s| s.cover_error());
    let jpeg = match live {
        Some(j) => Some(j.to_vec()),
        None => {
            let path = shard.config.data_dir.join("covers").join(format!("{}.jpg", routes::stream_id(ssrc)));
            glommio::executor().spawn_blocking(move || std::fs::read(path).ok()).await
        }
    };
    match (jpeg, why_none) {
        (Some(j), _) => super::response::respond(conn, 200, "image/jpeg", &j).await,
        (None, Some(why)) => respond_error(conn, 404, "no_cover", &format!("no cover: {why}")).await,
        (None, None) => respond_error(conn, 404, "not_found", "no cover yet").await,
    }
}

/// Methods and request headers a page of an allowed origin may use.
const CORS_METHODS: &str = "GET, POST, PUT, DELETE, OPTIONS";
const CORS_HEADERS: &str = "authorization, gmv-token, content-type, range";
/// How long a browser may cache a preflight answer.
const CORS_MAX_AGE_S: u64 = 600;

/// A CORS preflight: 204 with what may be sent for an allowed origin, 403 for any other.
async fn preflight(conn: &mut HttpConn) {
    if !conn.cors_allowed() {
        return respond_error(conn, 403, "origin_not_allowed", "this origin is not in http.cors_origins").await;
    }
    let extra = format!(
        "Access-Control-Allow-Methods: {CORS_METHODS}\r\nAccess-Control-Allow-Headers: {CORS_HEADERS}\r\nAccess-Control-Max-Age: {CORS_MAX_AGE_S}\r\n"
    );
    super::response::respond_empty(conn, 204, &extra).await;
}

/// Checks a play request's credential for `scope`; answers 401 and gives false when it fails.
async fn check_play(shard: &Shard, conn: &mut HttpConn, head: &RequestHead, path_token: Option<&str>, scope: &Scope) -> bool {
    let allowed = routes::play_allowed(&shard.secrets(), head, path_token, scope, super::play_tokens::unix_s(), conn.peer_ip());
    answer_refusal(conn, head, allowed).await
}

/// True when the play was allowed; else the refusal is answered (401/403) and logged.
async fn answer_refusal(conn: &mut HttpConn, head: &RequestHead, allowed: Result<(), routes::Refusal>) -> bool {
    match allowed {
        Ok(()) => true,
        Err((status, code, message)) => {
            tracing::debug!(peer = %conn.peer_ip(), path = %head.path, message, "play refused");
            respond_error(conn, status, code, message).await;
            false
        }
    }
}

/// Moves the connection, with its request and what was read past it, to executor `to`, which
/// serves it from here on (`serve`, already authorised here; or the request routed there).
/// None: nothing is left to serve here.
async fn hand_off(shard: &Shard, to: usize, mut conn: HttpConn, head: RequestHead, serve: Option<Served>) -> Option<HttpConn> {
    let (peer, served, rest) = (conn.peer_ip(), conn.served, std::mem::take(&mut conn.pending));
    let (fd, relayed_for) = match conn.io {
        // The session stays here; the owner gets a socket pair end and this shard relays.
        Io::Tls(tls) => {
            let (here, there) = match std::os::unix::net::UnixStream::pair() {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(shard = shard.index, %error, "no socket pair for a TLS hand-off");
                    return None;
                }
            };
            // SAFETY: the fd comes from the pair just made and is handed over once.
            let here = unsafe { glommio::net::UnixStream::from_raw_fd(here.into_raw_fd()) };
            glommio::spawn_local(super::tls::relay(*tls, here)).detach();
            (OwnedFd::from(there), Some(peer))
        }
        _ => {
            // SAFETY: dup returns a new fd we own (or -1, checked); the original closes with `conn`.
            let dup = unsafe { libc::dup(conn.raw_fd()) };
            if dup < 0 {
                conn.keep_alive = false;
                respond_error(&mut conn, 503, "overloaded", "cannot hand off connection").await;
                return None;
            }
            let relayed_for = matches!(conn.io, Io::Relayed(..)).then_some(peer);
            drop(conn);
            // SAFETY: `dup` is a valid fd (checked above) that nothing else owns.
            (unsafe { OwnedFd::from_raw_fd(dup) }, relayed_for)
        }
    };
    // The request is counted again where it is served.
    let served = served.saturating_sub(1);
    if shard.send(to, ShardMsg::Http(HandoffConn { fd, relayed_for, served, head, rest, serve })).await.is_err() {
        tracing::warn!(from = shard.index, to, "hand-off channel closed; connection dropped");
    }
    None
}
