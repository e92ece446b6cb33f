//! Accept loop and request dispatch. A connection for a stream owned by another shard is
//! handed to that shard (the fd moves in a message) so every viewer lives next to its stream.

use super::Front;
use super::conn::HttpConn;
use super::request::{HEAD_BYTES_MAX, HeadError, RequestHead, parse_head};
use super::response::respond_error;
use super::routes::{self, Route};
use crate::auth::Scope;
use crate::proto::sip::endpoint::MediaTransport;
use crate::shard::msg::{HandoffConn, ShardMsg};
use crate::shard::{CONTROL, Shard, owner_of};
use futures_lite::AsyncReadExt;
use glommio::net::{TcpListener, TcpStream};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
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

pub async fn serve(front: Rc<Front>) -> std::io::Result<()> {
    let shard = &front.shard;
    let listener = TcpListener::bind(shard.config.http.listen).map_err(|e| std::io::Error::other(e.to_string()))?;
    tracing::info!(shard = shard.index, listen = %shard.config.http.listen, "HTTP listening");
    let limits = Rc::new(ConnLimits::default());
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
                glommio::spawn_local(handle_conn(front.clone(), conn, slot, head_slot)).detach();
            }
            Err(error) => {
                // Out of fds or similar: back off instead of spinning.
                tracing::warn!(shard = shard.index, %error, "HTTP accept failed");
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn read_head(conn: &mut HttpConn) -> Result<(RequestHead, Vec<u8>), HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = conn.read(&mut chunk).await.map_err(|_| HeadError::Malformed)?;
        if n == 0 {
            return Err(HeadError::Malformed);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some((head, len)) = parse_head(&buf)? {
            return Ok((head, buf.split_off(len)));
        }
        if buf.len() > HEAD_BYTES_MAX {
            return Err(HeadError::TooLarge);
        }
    }
}

async fn handle_conn(front: Rc<Front>, conn: TcpStream, _slot: ConnSlot, head_slot: HeadSlot) {
    let mut conn = HttpConn::new(conn);
    let read = glommio::timer::timeout(HEAD_READ_TIMEOUT, async { Ok(read_head(&mut conn).await) }).await;
    drop(head_slot);
    match read {
        Ok(Ok((head, body_prefix))) => dispatch(front, conn, head, body_prefix).await,
        Ok(Err(HeadError::TooLarge)) => respond_error(&mut conn, 431, "head_too_large", "request head too large").await,
        Ok(Err(e)) => respond_error(&mut conn, 400, "bad_request", &format!("{e:?}")).await,
        Err(_) => respond_error(&mut conn, 408, "timeout", "request head not received in time").await,
    }
}

/// A connection handed over from another shard: its request comes in the message.
pub fn serve_handoff(front: &Rc<Front>, conn: HandoffConn) {
    let Ok(request) = conn.request.downcast::<(RequestHead, Vec<u8>)>() else {
        tracing::error!(shard = front.shard.index, "hand-off without an HTTP request; dropped");
        return;
    };
    let (head, body_prefix) = *request;
    // SAFETY: the fd was duplicated for this hand-off and is owned by the message.
    let tcp = unsafe { TcpStream::from_raw_fd(conn.fd.into_raw_fd()) };
    glommio::spawn_local(dispatch(front.clone(), HttpConn::new(tcp), head, body_prefix)).detach();
}

/// Seconds since the Unix epoch, what play tokens expire by.
fn unix_s() -> u64 {
    crate::shard::unix_ms() / 1000
}

/// How long the stream token of an on-demand GB play lives: only for the hand-off to the
/// stream's shard right after the INVITE.
const GB_HANDOFF_TOKEN_TTL_S: u64 = 60;

pub async fn dispatch(front: Rc<Front>, mut conn: HttpConn, head: RequestHead, body_prefix: Vec<u8>) {
    let shard = &front.shard;
    conn.set_origin(head.header("origin"), &shard.config.http.cors_origins);
    match routes::route(&head, &shard.config) {
        Route::Preflight => preflight(&mut conn).await,
        Route::Api if shard.is_control() => super::api::serve(&front, conn, head, body_prefix).await,
        Route::Api => hand_off(shard, CONTROL, conn, head, body_prefix).await,
        Route::FlvPlay { stream_id, token } => {
            if let Some((conn, ssrc)) = at_owner(shard, conn, head, body_prefix, token.as_deref(), &stream_id).await {
                super::flv_play::serve(shard, conn, ssrc).await;
            }
        }
        Route::Hls { stream_id, token, file } => {
            if let Some((conn, ssrc)) = at_owner(shard, conn, head, body_prefix, token.as_deref(), &stream_id).await {
                super::hls_serve::serve(shard, conn, ssrc, &file).await;
            }
        }
        Route::RecordPlay { stem, token, start_s } => {
            if check_play(shard, &mut conn, &head, token.as_deref(), &Scope::Record(stem.clone())).await {
                super::record_play::serve(shard, conn, &stem, start_s).await;
            }
        }
        Route::Record { file } => {
            let stem = file.strip_suffix(".mp4").unwrap_or(&file).to_string();
            if check_play(shard, &mut conn, &head, None, &Scope::Record(stem)).await {
                super::records_serve::serve(shard, conn, &file, head.header("range")).await;
            }
        }
        Route::Cover { stream_id } => {
            let Some((mut conn, ssrc)) = at_owner(shard, conn, head, body_prefix, None, &stream_id).await else { return };
            // The live stream's cover, else the one stored when it had one.
            let live = shard.streams.borrow().get(&ssrc).and_then(|s| s.cover.borrow().clone());
            let jpeg = match live {
                Some(j) => Some(j.to_vec()),
                None => {
                    let path = shard.config.data_dir.join("covers").join(format!("{}.jpg", routes::stream_id(ssrc)));
                    glommio::executor().spawn_blocking(move || std::fs::read(path).ok()).await
                }
            };
            match jpeg {
                Some(j) => super::response::respond(&mut conn, 200, "image/jpeg", &j).await,
                None => respond_error(&mut conn, 404, "not_found", "no cover yet").await,
            }
        }
        Route::GbPlay { device_id, channel_id, token } => {
            let scope = Scope::Channel { device_id: device_id.clone(), channel_id: channel_id.clone() };
            if !check_play(shard, &mut conn, &head, token.as_deref(), &scope).await {
                return;
            }
            if !shard.is_control() {
                return hand_off(shard, CONTROL, conn, head, body_prefix).await;
            }
            let Some(control) = &front.control else {
                return respond_error(&mut conn, 503, "sip_disabled", "SIP is disabled").await;
            };
            match control.play(&device_id, &channel_id, MediaTransport::Udp).await {
                Ok(session) => {
                    // Now an ordinary play request for the session's stream, served by its
                    // shard, with a token for that stream (the one given opens the channel).
                    let scope = Scope::Stream(session.stream_id.clone());
                    let Some(token) = shard.secrets().issue(&scope, unix_s() + GB_HANDOFF_TOKEN_TTL_S, None) else {
                        return respond_error(&mut conn, 500, "internal", "cannot issue a stream token").await;
                    };
                    let mut head = head;
                    head.path = format!("/flv/{}/{token}", session.stream_id);
                    hand_off(shard, owner_of(session.ssrc, shard.media_shards), conn, head, body_prefix).await;
                }
                Err(e) => {
                    let (status, code) = e.http();
                    respond_error(&mut conn, status, code, &format!("{e:?}")).await;
                }
            }
        }
        Route::Redirect { location } => super::response::respond_redirect(&mut conn, &location).await,
        Route::NotFound => respond_error(&mut conn, 404, "not_found", "no such resource").await,
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
    let extra = format!("Access-Control-Allow-Methods: {CORS_METHODS}\r\nAccess-Control-Allow-Headers: {CORS_HEADERS}\r\nAccess-Control-Max-Age: {CORS_MAX_AGE_S}\r\n");
    super::response::respond_empty(conn, 204, &extra).await;
}

/// Checks a play request's credential for `scope`; answers 401 and gives false when it fails.
async fn check_play(shard: &Shard, conn: &mut HttpConn, head: &RequestHead, path_token: Option<&str>, scope: &Scope) -> bool {
    match routes::play_allowed(&shard.secrets(), head, path_token, scope, unix_s(), conn.peer_ip()) {
        Ok(()) => true,
        Err((status, code, message)) => {
            tracing::debug!(peer = %conn.peer_ip(), path = %head.path, message, "play refused");
            respond_error(conn, status, code, message).await;
            false
        }
    }
}

/// Token, stream id and owning shard of a stream request: Some when this shard serves it;
/// otherwise it has been answered (401/404) or handed to the owner.
async fn at_owner(
    shard: &Rc<Shard>,
    mut conn: HttpConn,
    head: RequestHead,
    body_prefix: Vec<u8>,
    token: Option<&str>,
    stream_id: &str,
) -> Option<(HttpConn, u32)> {
    let Some(ssrc) = routes::parse_stream_id(stream_id) else {
        respond_error(&mut conn, 404, "not_found", "no such stream").await;
        return None;
    };
    if !check_play(shard, &mut conn, &head, token, &Scope::Stream(routes::stream_id(ssrc))).await {
        return None;
    }
    let owner = owner_of(ssrc, shard.media_shards);
    if owner == shard.index {
        return Some((conn, ssrc));
    }
    hand_off(shard, owner, conn, head, body_prefix).await;
    None
}

async fn hand_off(shard: &Shard, to: usize, mut conn: HttpConn, head: RequestHead, body_prefix: Vec<u8>) {
    // SAFETY: dup returns a new fd we own (or -1, checked); the original closes with `conn`.
    let dup = unsafe { libc::dup(conn.tcp.as_raw_fd()) };
    if dup < 0 {
        return respond_error(&mut conn, 503, "overloaded", "cannot hand off connection").await;
    }
    let fd = unsafe { OwnedFd::from_raw_fd(dup) };
    drop(conn);
    if shard.send(to, ShardMsg::Http(HandoffConn { fd, request: Box::new((head, body_prefix)) })).await.is_err() {
        tracing::warn!(from = shard.index, to, "hand-off channel closed; connection dropped");
    }
}
