//! Live HTTP-FLV viewer: preamble and cached GOP first, then live tags from a bounded queue.
//! The same bytes go over a WebSocket (binary frames) when the request asked to upgrade.

use super::conn::HttpConn;
use super::response::respond_error;
use crate::http::routes::stream_id;
use crate::shard::Shard;
use crate::shard::fanout::{Refused, Subscription};
use futures_lite::AsyncWriteExt;
use std::rc::Rc;

/// How long a viewer may see no tag before we check whether it hung up.
pub(super) const VIEWER_IDLE_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// True if the peer closed (EOF or error); data it sent is left unread.
pub(super) fn peer_closed(conn: &HttpConn) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: recv into a 1-byte buffer we own; MSG_PEEK|MSG_DONTWAIT never blocks or consumes.
    let n = unsafe { libc::recv(conn.raw_fd(), b.as_mut_ptr().cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    n == 0 || (n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock)
}

/// Header lines of a live or recorded FLV response.
pub const FLV_HEADERS: &str = "Content-Type: video/x-flv\r\nCache-Control: no-cache\r\n";

/// `websocket`: the handshake's accept value when the viewer asked for a WebSocket;
/// `hevc_legacy`: H.265 rewritten to codec id 12 for this viewer (a copy of each H.265 tag).
pub async fn serve(shard: &Rc<Shard>, mut conn: HttpConn, ssrc: u32, websocket: Option<String>, hevc_legacy: bool) {
    conn.keep_alive = false; // the body lasts as long as the stream
    let Some(stream) = shard.streams.borrow().get(&ssrc).cloned() else {
        return respond_error(&mut conn, 404, "not_found", "no such stream").await;
    };
    stream.watch_flv();
    let preamble = stream.pipeline.borrow().flv.preamble();
    let subscribed = stream.fanout.borrow_mut().subscribe(preamble, conn.peer_ip());
    let Subscription { first, rx, token: _connected, cut } = match subscribed {
        Ok(s) => s,
        Err(Refused::Full) => return respond_error(&mut conn, 503, "too_many_viewers", "stream has too many viewers").await,
        Err(Refused::PerAddress) => {
            let n = shard.viewers_refused_per_address.get() + 1;
            shard.viewers_refused_per_address.set(n);
            if n.is_power_of_two() {
                tracing::warn!(ssrc, peer = %conn.peer_ip(), refused = n, "FLV viewer refused: too many viewers of this stream from its address (media.viewers_per_address_max)");
            }
            return respond_error(&mut conn, 503, "too_many_viewers", "too many viewers of this stream from your address").await;
        }
    };
    let mut cut = Some(cut);
    // Hold no reference to the stream: closing it ends our queue and so this loop.
    drop(stream);
    conn.set_nodelay();
    let peer = conn.peer_ip();
    tracing::info!(ssrc, stream_id = %stream_id(ssrc), ?peer, websocket = websocket.is_some(), "FLV viewer joined");
    let head = match &websocket {
        Some(accept) => super::websocket::handshake(accept),
        None => super::response::head(&conn, 200, FLV_HEADERS),
    };
    let mut legacy = Vec::new();
    let mut as_sent = |tag: &[u8]| -> Vec<u8> {
        match hevc_legacy && crate::proto::flv::legacy_hevc(tag, &mut legacy) {
            true => legacy.clone(),
            false => tag.to_vec(),
        }
    };
    let first: Vec<u8> = first.iter().flat_map(|b| as_sent(b)).collect();
    let mut burst = Vec::with_capacity(head.len() + first.len() + 10);
    burst.extend_from_slice(head.as_bytes());
    let framed = |bytes: &[u8], out: &mut Vec<u8>| match websocket {
        Some(_) => super::websocket::binary_frame(bytes, out),
        None => out.extend_from_slice(bytes),
    };
    framed(&first, &mut burst);
    let mut result = write_unless_cut(&mut conn, &burst, &mut cut).await;
    drop(burst);
    let mut frame = Vec::new();
    while result.is_ok() {
        match glommio::timer::timeout(VIEWER_IDLE_CHECK, async { Ok(rx.recv().await) }).await {
            Ok(Some(tag)) if hevc_legacy && crate::proto::flv::legacy_hevc(&tag, &mut legacy) => {
                frame.clear();
                framed(&legacy, &mut frame);
                result = write_unless_cut(&mut conn, &frame, &mut cut).await;
            }
            Ok(Some(tag)) if websocket.is_some() => {
                frame.clear();
                framed(&tag, &mut frame);
                result = write_unless_cut(&mut conn, &frame, &mut cut).await;
            }
            Ok(Some(tag)) => result = write_unless_cut(&mut conn, &tag, &mut cut).await,
            Ok(None) => break, // stream closed, or this viewer cut while it waited
            // Nothing to send: notice a viewer that hung up while the stream is quiet.
            Err(_) if peer_closed(&conn) => break,
            Err(_) => {}
        }
    }
    if matches!(result, Err(Ended::Cut)) || cut.as_mut().is_some_and(|c| matches!(c.try_recv(), Ok(Some(())))) {
        // Cut for being slow: what its socket still holds is dropped with it (reset), not
        // kept in the kernel until a client that reads nothing goes away.
        reset_on_close(&conn);
    }
    let _ = conn.close().await;
    let ended = match result {
        Ok(()) => "stream closed or viewer gone".to_string(),
        Err(Ended::Cut) => "cut for being slow".to_string(),
        Err(Ended::Io(kind)) => format!("write failed: {kind}"),
    };
    tracing::info!(ssrc, stream_id = %stream_id(ssrc), ?peer, ended, "FLV viewer left");
}

#[derive(Debug)]
enum Ended {
    Io(std::io::ErrorKind),
    /// Disconnected for being slow.
    Cut,
}

/// Writes `bytes` unless the viewer is cut first (a client that reads nothing leaves the
/// write pending forever: the cut ends it).
async fn write_unless_cut(conn: &mut HttpConn, bytes: &[u8], cut: &mut Option<futures_channel::oneshot::Receiver<()>>) -> Result<(), Ended> {
    let write = async { conn.write_all(bytes).await.map_err(|e| Ended::Io(e.kind())) };
    let cut_signal = async {
        if let Some(rx) = cut.as_mut() {
            if rx.await.is_ok() {
                return Err(Ended::Cut);
            }
            // The stream closed: no cut will come; the writer sends what is queued.
            *cut = None;
        }
        std::future::pending().await
    };
    futures_lite::future::or(write, cut_signal).await
}

/// SO_LINGER 0: closing the socket resets it and frees its unsent bytes at once.
fn reset_on_close(conn: &HttpConn) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt on the connection's own fd with a linger value that outlives the call.
    unsafe {
        libc::setsockopt(
            conn.raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}
