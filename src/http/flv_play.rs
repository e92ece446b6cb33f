//! Live HTTP-FLV viewer: preamble and cached GOP first, then live tags from a bounded queue.
//! The same bytes go over a WebSocket (binary frames) when the request asked to upgrade.

use super::conn::HttpConn;
use super::response::respond_error;
use crate::http::routes::stream_id;
use crate::shard::Shard;
use futures_lite::AsyncWriteExt;
use std::rc::Rc;

/// How long a viewer may see no tag before we check whether it hung up.
const VIEWER_IDLE_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// True if the peer closed (EOF or error); data it sent is left unread.
fn peer_closed(conn: &HttpConn) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: recv into a 1-byte buffer we own; MSG_PEEK|MSG_DONTWAIT never blocks or consumes.
    let n = unsafe { libc::recv(conn.raw_fd(), b.as_mut_ptr().cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    n == 0 || (n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock)
}

/// Header lines of a live or recorded FLV response.
pub const FLV_HEADERS: &str = "Content-Type: video/x-flv\r\nCache-Control: no-cache\r\n";

/// `websocket`: the handshake's accept value when the viewer asked for a WebSocket.
pub async fn serve(shard: &Rc<Shard>, mut conn: HttpConn, ssrc: u32, websocket: Option<String>) {
    conn.keep_alive = false; // the body lasts as long as the stream
    let Some(stream) = shard.streams.borrow().get(&ssrc).cloned() else {
        return respond_error(&mut conn, 404, "not_found", "no such stream").await;
    };
    let preamble = stream.pipeline.borrow().flv.preamble();
    let Some((first, rx, _connected)) = stream.fanout.borrow_mut().subscribe(preamble) else {
        return respond_error(&mut conn, 503, "too_many_viewers", "stream has too many viewers").await;
    };
    // Hold no reference to the stream: closing it ends our queue and so this loop.
    drop(stream);
    conn.set_nodelay();
    let peer = conn.peer_ip();
    tracing::info!(ssrc, stream_id = %stream_id(ssrc), ?peer, websocket = websocket.is_some(), "FLV viewer joined");
    let head = match &websocket {
        Some(accept) => super::websocket::handshake(accept),
        None => super::response::head(&conn, 200, FLV_HEADERS),
    };
    let first: Vec<u8> = first.iter().flat_map(|b| b.iter().copied()).collect();
    let mut burst = Vec::with_capacity(head.len() + first.len() + 10);
    burst.extend_from_slice(head.as_bytes());
    let framed = |bytes: &[u8], out: &mut Vec<u8>| match websocket {
        Some(_) => super::websocket::binary_frame(bytes, out),
        None => out.extend_from_slice(bytes),
    };
    framed(&first, &mut burst);
    let mut result = conn.write_all(&burst).await;
    drop(burst);
    let mut frame = Vec::new();
    while result.is_ok() {
        match glommio::timer::timeout(VIEWER_IDLE_CHECK, async { Ok(rx.recv().await) }).await {
            Ok(Some(tag)) if websocket.is_some() => {
                frame.clear();
                framed(&tag, &mut frame);
                result = conn.write_all(&frame).await;
            }
            Ok(Some(tag)) => result = conn.write_all(&tag).await,
            Ok(None) => break, // stream closed
            // Nothing to send: notice a viewer that hung up while the stream is quiet.
            Err(_) if peer_closed(&conn) => break,
            Err(_) => {}
        }
    }
    let _ = conn.close().await;
    tracing::info!(ssrc, stream_id = %stream_id(ssrc), ?peer, error = result.err().map(|e| e.to_string()), "FLV viewer left");
}
