//! RTMP push ingest. The control executor accepts on `rtmp.listen`, runs the handshake and the
//! `connect`, and checks the publish token of `publish`; until then a connection is a
//! stranger's, so it is bounded in count, bytes and time. A publisher whose token verifies is
//! moved (socket, RTMP session, its pending publish) to the media shard owning its stream,
//! which opens the stream (`local`, named `{app}/{stream}`, its id derived from the name),
//! answers the publish and turns audio and video messages into frames (`flv_demux`) for the
//! stream's pipeline: viewers, HLS, recordings and senders take them as any stream's.
//!
//! The RTMP chunk protocol, handshake and AMF commands are rml_rtmp's (a sans-IO session:
//! bytes in, packets and events out), so this file is only the driver.

use super::Shard;
use super::msg::{OpenError, ShardMsg, StreamSpec};
use super::stream::{Stream, close_stream, open_stream};
use crate::auth::Scope;
use crate::proto::flv_demux::TagDemuxer;
use crate::proto::frame::TimestampUnwrapper;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult};
use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::time::Duration;

/// Connections between accept and a verified publish, at once (the rest are closed at accept).
pub const RTMP_PENDING_MAX: usize = 64;
/// Of those, from one address.
pub const RTMP_PENDING_PER_ADDRESS_MAX: usize = 8;
/// Bytes a connection may send before its publish is verified (a real publisher's handshake,
/// connect and publish take about 4 KiB).
pub const RTMP_PREAUTH_BYTES_MAX: usize = 64 << 10;
/// Time from accept to a verified publish.
pub const RTMP_PREAUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// A publisher silent this long is dropped (encoders send several messages a second).
pub const RTMP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Publishers at once on one media shard.
pub const RTMP_PUBLISHERS_PER_SHARD_MAX: usize = 512;
/// One socket read.
const RTMP_READ_BYTES: usize = 64 << 10;
const _: () = assert!(RTMP_PENDING_PER_ADDRESS_MAX <= RTMP_PENDING_MAX);
// A read never takes a stranger past its byte budget by more than one read.
const _: () = assert!(RTMP_READ_BYTES <= RTMP_PREAUTH_BYTES_MAX);

/// What happened to RTMP connections on one executor (the control's: accept to publish; a
/// media shard's: publishing), in `/api/rtmp`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RtmpCounters {
    pub accepted: u64,
    /// Closed at accept: `RTMP_PENDING_MAX` or `RTMP_PENDING_PER_ADDRESS_MAX` reached.
    pub refused_busy: u64,
    /// Handshake or RTMP framing that did not parse, or the budget of bytes or time spent.
    pub refused_protocol: u64,
    /// Publish without a token, or with one that does not verify for the stream.
    pub refused_token: u64,
    /// Publish of a stream already being published (or another stream of the same id).
    pub refused_exists: u64,
    pub published: u64,
    /// Publishers now (media shards).
    pub publishing: u64,
    /// Audio or video messages that did not demux (counted, dropped; the stream goes on).
    pub demux_errors: u64,
}

impl RtmpCounters {
    pub fn plus(self, o: &RtmpCounters) -> RtmpCounters {
        RtmpCounters {
            accepted: self.accepted + o.accepted,
            refused_busy: self.refused_busy + o.refused_busy,
            refused_protocol: self.refused_protocol + o.refused_protocol,
            refused_token: self.refused_token + o.refused_token,
            refused_exists: self.refused_exists + o.refused_exists,
            published: self.published + o.published,
            publishing: self.publishing + o.publishing,
            demux_errors: self.demux_errors + o.demux_errors,
        }
    }
}

/// A publisher whose token verified, moved to the shard owning its stream.
pub struct RtmpConn {
    pub fd: OwnedFd,
    pub peer: SocketAddr,
    pub session: Box<ServerSession>,
    /// The publish request to answer once the stream is open.
    pub request_id: u32,
    pub app: String,
    pub stream: String,
}

impl std::fmt::Debug for RtmpConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtmpConn").field("peer", &self.peer).field("app", &self.app).field("stream", &self.stream).finish()
    }
}

/// Why a connection ended before it published.
#[derive(Debug)]
enum Refused {
    Protocol(String),
    Token(&'static str),
    Closed,
}

/// Feeds a publisher's bytes to its session. rml_rtmp 0.8 panics on some hostile input (an
/// AMF0 command of fewer than three values: `drain(..3)`, found by the `rtmp_ingest` fuzz
/// target), and a stranger's bytes reach it before any token is checked: a panic costs that
/// connection (its session is dropped by the caller on Err), never the executor.
pub fn session_input(session: &mut ServerSession, bytes: &[u8]) -> Result<Vec<ServerSessionResult>, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| session.handle_input(bytes))) {
        Ok(Ok(results)) => Ok(results),
        Ok(Err(e)) => Err(format!("RTMP: {e:?}")),
        Err(_) => Err("RTMP: the session could not read this input".into()),
    }
}

/// The stream id a published `{app}/{stream}` gets (stable across reconnections).
pub fn published_ssrc(app: &str, stream: &str) -> u32 {
    crate::proto::ssrc::named_ssrc(&format!("{app}/{stream}"))
}

/// On the control executor, for ever: accepts publishers (bounded) and runs each to its
/// verified publish.
pub async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    let pending: Rc<Cell<usize>> = Rc::new(Cell::new(0));
    let by_address: Rc<std::cell::RefCell<std::collections::HashMap<IpAddr, usize>>> = Default::default();
    loop {
        let conn = match listener.accept().await {
            Ok(c) => c,
            Err(error) => {
                tracing::warn!(%error, "RTMP accept failed");
                glommio::timer::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(peer) = conn.peer_addr() else { continue };
        shard.rtmp.borrow_mut().accepted += 1;
        let ip = crate::proto::ipnet::canonical(peer.ip());
        let from_here = by_address.borrow().get(&ip).copied().unwrap_or(0);
        if pending.get() >= RTMP_PENDING_MAX || from_here >= RTMP_PENDING_PER_ADDRESS_MAX {
            shard.rtmp.borrow_mut().refused_busy += 1;
            tracing::warn!(%peer, pending = pending.get(), from_here, "RTMP: too many connections not yet publishing; closed");
            continue;
        }
        pending.set(pending.get() + 1);
        *by_address.borrow_mut().entry(ip).or_insert(0) += 1;
        let (shard, pending, by_address) = (shard.clone(), pending.clone(), by_address.clone());
        glommio::spawn_local(async move {
            let result = glommio::timer::timeout(RTMP_PREAUTH_TIMEOUT, async { Ok(until_publish(&shard, conn, peer).await) }).await;
            pending.set(pending.get() - 1);
            {
                let mut map = by_address.borrow_mut();
                if let Some(n) = map.get_mut(&ip) {
                    *n -= 1;
                    if *n == 0 {
                        map.remove(&ip);
                    }
                }
            }
            let refused = match result {
                Ok(Ok(handed)) => return hand_over(&shard, handed).await,
                Ok(Err(r)) => r,
                Err(_) => Refused::Protocol(format!("no verified publish within {} s", RTMP_PREAUTH_TIMEOUT.as_secs())),
            };
            match refused {
                Refused::Closed => tracing::debug!(%peer, "RTMP connection closed before publishing"),
                Refused::Protocol(why) => {
                    shard.rtmp.borrow_mut().refused_protocol += 1;
                    tracing::info!(%peer, why, "RTMP connection refused");
                }
                Refused::Token(why) => {
                    shard.rtmp.borrow_mut().refused_token += 1;
                    tracing::warn!(%peer, why, "RTMP publish refused");
                }
            }
        })
        .detach();
    }
}

async fn hand_over(shard: &Shard, conn: RtmpConn) {
    let ssrc = published_ssrc(&conn.app, &conn.stream);
    let owner = super::owner_of(ssrc, shard.media_shards);
    let (peer, name) = (conn.peer, format!("{}/{}", conn.app, conn.stream));
    if shard.send(owner, ShardMsg::Rtmp(conn)).await.is_err() {
        tracing::warn!(%peer, name, owner, "RTMP: the owning shard is gone; publisher dropped");
    }
}

/// Writes what the session wants sent.
async fn send_results(conn: &mut TcpStream, results: Vec<ServerSessionResult>) -> std::io::Result<()> {
    for r in results {
        if let ServerSessionResult::OutboundResponse(packet) = r {
            conn.write_all(&packet.bytes).await?;
        }
    }
    Ok(())
}

/// Handshake, connect and publish; a publisher whose token verifies comes back to be moved.
async fn until_publish(shard: &Shard, mut conn: TcpStream, peer: SocketAddr) -> Result<RtmpConn, Refused> {
    let mut buf = vec![0u8; RTMP_READ_BYTES];
    let mut budget = RTMP_PREAUTH_BYTES_MAX;
    let protocol = |e: &dyn std::fmt::Display| Refused::Protocol(e.to_string());
    let mut handshake = Handshake::new(PeerType::Server);
    let mut rest = loop {
        let n = read_some(&mut conn, &mut buf, &mut budget).await?;
        match handshake.process_bytes(&buf[..n]).map_err(|e| protocol(&format!("handshake: {e:?}")))? {
            HandshakeProcessResult::InProgress { response_bytes } => conn.write_all(&response_bytes).await.map_err(|_| Refused::Closed)?,
            HandshakeProcessResult::Completed { response_bytes, remaining_bytes } => {
                conn.write_all(&response_bytes).await.map_err(|_| Refused::Closed)?;
                break remaining_bytes;
            }
        }
    };
    let (mut session, results) = ServerSession::new(ServerSessionConfig::new()).map_err(|e| protocol(&format!("{e:?}")))?;
    send_results(&mut conn, results).await.map_err(|_| Refused::Closed)?;
    loop {
        let results = session_input(&mut session, &rest).map_err(|e| protocol(&e))?;
        for r in results {
            match r {
                ServerSessionResult::OutboundResponse(packet) => conn.write_all(&packet.bytes).await.map_err(|_| Refused::Closed)?,
                ServerSessionResult::RaisedEvent(ServerSessionEvent::ConnectionRequested { request_id, app_name }) => {
                    let answer = if Scope::valid_name(&app_name) {
                        session.accept_request(request_id)
                    } else {
                        session.reject_request(request_id, "NetConnection.Connect.Rejected", "app names are letters, digits, - and _")
                    };
                    send_results(&mut conn, answer.map_err(|e| protocol(&format!("{e:?}")))?).await.map_err(|_| Refused::Closed)?;
                }
                ServerSessionResult::RaisedEvent(ServerSessionEvent::PublishStreamRequested { request_id, app_name, stream_key, .. }) => {
                    match verify(shard, &app_name, &stream_key, peer.ip()) {
                        Ok(stream) => {
                            let fd = into_fd(conn).ok_or(Refused::Closed)?;
                            return Ok(RtmpConn { fd, peer, session: Box::new(session), request_id, app: app_name, stream });
                        }
                        Err(why) => {
                            if let Ok(answer) = session.reject_request(request_id, "NetStream.Publish.Unauthorized", why) {
                                let _ = send_results(&mut conn, answer).await;
                            }
                            return Err(Refused::Token(why));
                        }
                    }
                }
                _ => {}
            }
        }
        let n = read_some(&mut conn, &mut buf, &mut budget).await?;
        rest = buf[..n].to_vec();
    }
}

/// One read within the connection's byte budget.
async fn read_some(conn: &mut TcpStream, buf: &mut [u8], budget: &mut usize) -> Result<usize, Refused> {
    if *budget == 0 {
        return Err(Refused::Protocol(format!("more than {RTMP_PREAUTH_BYTES_MAX} bytes before a verified publish")));
    }
    let want = buf.len().min(*budget);
    match conn.read(&mut buf[..want]).await {
        Ok(0) | Err(_) => Err(Refused::Closed),
        Ok(n) => {
            *budget -= n;
            Ok(n)
        }
    }
}

/// The stream name of a publish key `{stream}?token=T` whose token opens `{app}/{stream}`.
fn verify(shard: &Shard, app: &str, key: &str, client: IpAddr) -> Result<String, &'static str> {
    let (stream, query) = key.split_once('?').unwrap_or((key, ""));
    if !Scope::valid_name(app) || !Scope::valid_name(stream) {
        return Err("app and stream names are letters, digits, - and _ (at most 64)");
    }
    let token = form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "token").map(|(_, v)| v.into_owned());
    let token = token.ok_or("no publish token (rtmp://host/app/stream?token=T, from POST /api/publish-tokens)")?;
    let scope = Scope::Publish { app: app.to_string(), stream: stream.to_string() };
    shard.secrets().verify(&token, &scope, super::unix_s(), client).map_err(|e| match e {
        crate::auth::TokenError::WrongScope => "the publish token is for another stream",
        crate::auth::TokenError::Expired => "the publish token expired",
        crate::auth::TokenError::WrongClient => "the publish token is for another address",
        _ => "the publish token does not verify",
    })?;
    Ok(stream.to_string())
}

fn into_fd(conn: TcpStream) -> Option<OwnedFd> {
    // SAFETY: dup returns a new fd we own (or -1, checked); the original closes with `conn`.
    let dup = unsafe { libc::dup(std::os::fd::AsRawFd::as_raw_fd(&conn)) };
    drop(conn);
    // SAFETY: `dup` is a valid fd (checked) nothing else owns.
    (dup >= 0).then(|| unsafe { OwnedFd::from_raw_fd(dup) })
}

/// On the owning media shard: opens the stream, answers the publish, and feeds it until the
/// publisher stops, goes silent or the stream is closed.
pub fn arrived(shard: &Rc<Shard>, conn: RtmpConn) {
    let shard = shard.clone();
    glommio::spawn_local(async move { publish(&shard, conn).await }).detach();
}

async fn publish(shard: &Rc<Shard>, handed: RtmpConn) {
    let RtmpConn { fd, peer, mut session, request_id, app, stream: stream_name } = handed;
    // SAFETY: the fd is a connected TCP socket handed to this executor alone.
    let mut conn = unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) };
    let name = format!("{app}/{stream_name}");
    let ssrc = published_ssrc(&app, &stream_name);
    let refuse = |code: &'static str, why: &str, session: &mut ServerSession| session.reject_request(request_id, code, why).unwrap_or_default();
    if shard.rtmp.borrow().publishing as usize >= RTMP_PUBLISHERS_PER_SHARD_MAX {
        shard.rtmp.borrow_mut().refused_busy += 1;
        tracing::warn!(%peer, name, "RTMP: as many publishers on this shard as it takes; refused");
        let _ = send_results(&mut conn, refuse("NetStream.Publish.Denied", "too many publishers", &mut session)).await;
        return;
    }
    let spec = StreamSpec { ssrc, local: true, name: Some(name.clone()), ..Default::default() };
    let info = match open_stream(shard, spec) {
        Ok(info) => info,
        Err(e) => {
            shard.rtmp.borrow_mut().refused_exists += 1;
            let why = match e {
                OpenError::Exists => "the stream is being published already".to_string(),
                other => other.to_string(),
            };
            tracing::warn!(%peer, name, ssrc, why, "RTMP publish refused");
            let _ = send_results(&mut conn, refuse("NetStream.Publish.BadName", &why, &mut session)).await;
            return;
        }
    };
    let Some(stream) = shard.streams.borrow().get(&ssrc).cloned() else { return };
    let accepted = match session.accept_request(request_id) {
        Ok(results) => send_results(&mut conn, results).await.is_ok(),
        Err(_) => false,
    };
    if !accepted {
        {
            close_stream(shard, ssrc, "RTMP publisher gone before its publish was answered");
            return;
        }
    }
    {
        let mut c = shard.rtmp.borrow_mut();
        c.published += 1;
        c.publishing += 1;
    }
    tracing::info!(%peer, name, ssrc, stream_id = info.stream_id, "RTMP publishing");
    let why = feed(shard, &mut conn, &mut session, &stream).await;
    shard.rtmp.borrow_mut().publishing -= 1;
    let ours = shard.streams.borrow().get(&ssrc).is_some_and(|s| Rc::ptr_eq(s, &stream));
    tracing::info!(%peer, name, ssrc, why, "RTMP publisher ended");
    if ours {
        close_stream(shard, ssrc, why);
    }
}

/// Reads the publisher's messages into the stream until it ends; why it ended.
async fn feed(shard: &Shard, conn: &mut TcpStream, session: &mut ServerSession, stream: &Rc<Stream>) -> &'static str {
    let mut demux = TagDemuxer::new();
    let mut clock = TimestampUnwrapper::new(32);
    let mut buf = vec![0u8; RTMP_READ_BYTES];
    let mut warned = false;
    loop {
        let read = glommio::timer::timeout(RTMP_IDLE_TIMEOUT, async { Ok(conn.read(&mut buf).await) }).await;
        let n = match read {
            Err(_) => return "silent for the idle timeout",
            Ok(Ok(0)) | Ok(Err(_)) => return "connection closed",
            Ok(Ok(n)) => n,
        };
        // The stream was closed meanwhile (the API, a shutdown): the publisher goes.
        let open = shard.streams.borrow().get(&stream.spec.ssrc).is_some_and(|s| Rc::ptr_eq(s, stream));
        if !open {
            return "stream closed";
        }
        let results = match session_input(session, &buf[..n]) {
            Ok(r) => r,
            Err(error) => {
                tracing::warn!(ssrc = stream.spec.ssrc, error, "RTMP framing broken; publisher dropped");
                return "RTMP framing broken";
            }
        };
        for r in results {
            let event = match r {
                ServerSessionResult::OutboundResponse(packet) => {
                    if conn.write_all(&packet.bytes).await.is_err() {
                        return "connection closed";
                    }
                    continue;
                }
                ServerSessionResult::RaisedEvent(e) => e,
                ServerSessionResult::UnhandleableMessageReceived(_) => continue,
            };
            let demuxed = match event {
                ServerSessionEvent::VideoDataReceived { data, timestamp, .. } => demux.video(&data, clock.unwrap(u64::from(timestamp.value))),
                ServerSessionEvent::AudioDataReceived { data, timestamp, .. } => demux.audio(&data, clock.unwrap(u64::from(timestamp.value))),
                ServerSessionEvent::PublishStreamFinished { .. } => return "publisher stopped",
                _ => continue,
            };
            match demuxed {
                Ok(Some(frame)) => stream.on_local_frame(frame, "tcp", "flv"),
                Ok(None) => {}
                Err(error) => {
                    shard.rtmp.borrow_mut().demux_errors += 1;
                    stream.pipeline.borrow_mut().stats.demux_errors += 1;
                    if !warned {
                        warned = true;
                        tracing::warn!(ssrc = stream.spec.ssrc, %error, "RTMP message dropped (further ones are logged at debug)");
                    } else {
                        tracing::debug!(ssrc = stream.spec.ssrc, %error, "RTMP message dropped");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_the_library_panics_on_costs_only_the_connection() {
        // fuzz/artifacts/rtmp_ingest crash: chunks carrying an AMF0 command (type 0x14) of
        // fewer than three values, in the reads the fuzz target makes of it (a length byte,
        // then 16 x length + 1 bytes).
        let crash: [u8; 25] = [
            0x00, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x14, 0xe5, 0xe5, 0x27, 0xe5, 0xe5, 0, 0, 0, 0,
        ];
        let (mut session, _) = ServerSession::new(ServerSessionConfig::new()).unwrap();
        let mut rest = &crash[..];
        let mut results = Ok(Vec::new());
        while let Some((&len, tail)) = rest.split_first() {
            let (piece, tail) = tail.split_at((usize::from(len) * 16 + 1).min(tail.len()));
            rest = tail;
            results = session_input(&mut session, piece);
            if results.is_err() {
                break;
            }
        }
        assert!(results.is_err(), "{results:?}");
    }

    #[test]
    fn published_ids_are_named_ssrcs() {
        let ssrc = super::published_ssrc("live", "cam1");
        assert_eq!(ssrc, crate::proto::ssrc::named_ssrc("live/cam1"));
        assert!(ssrc >= crate::proto::ssrc::NAMED_SSRC_BASE);
    }
}
