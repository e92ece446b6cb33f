//! Live fragmented MP4 and MPEG-TS over HTTP or a WebSocket (a node's `/{app}/{stream}.live.mp4`
//! and `.live.ts`, wvp's `fmp4`/`ws_fmp4`/`ts`/`ws_ts` URLs): the stream's frames, muxed for
//! this viewer from the next keyframe on (`proto::live_mux`).

use super::conn::HttpConn;
use super::flv_play::{VIEWER_IDLE_CHECK, peer_closed};
use super::response::respond_error;
use crate::proto::live_mux::{LiveFormat, LiveMux};
use crate::shard::Shard;
use futures_lite::AsyncWriteExt;
use std::rc::Rc;
use std::time::Duration;

/// A viewer whose socket takes no bytes this long is gone (one that reads nothing would
/// otherwise hold its connection for good once its queue was dropped).
const LIVE_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

async fn write(conn: &mut HttpConn, bytes: &[u8]) -> std::io::Result<()> {
    match glommio::timer::timeout(LIVE_WRITE_TIMEOUT, async { Ok(conn.write_all(bytes).await) }).await {
        Ok(written) => written,
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "viewer took nothing")),
    }
}

pub async fn serve(shard: &Rc<Shard>, mut conn: HttpConn, ssrc: u32, websocket: Option<String>, format: LiveFormat) {
    conn.keep_alive = false; // the body lasts as long as the stream
    let Some(stream) = shard.streams.borrow().get(&ssrc).cloned() else {
        return respond_error(&mut conn, 404, "not_found", "no such stream").await;
    };
    let audio = stream.pipeline.borrow().flv.audio_codec();
    let Some(rx) = stream.add_frame_viewer() else {
        return respond_error(&mut conn, 503, "too_many_viewers", "stream has too many fMP4/TS viewers").await;
    };
    // Hold no reference to the stream: closing it ends our queue and so this loop.
    drop(stream);
    conn.set_nodelay();
    let peer = conn.peer_ip();
    tracing::info!(ssrc, ?format, ?peer, websocket = websocket.is_some(), "live fMP4/TS viewer joined");
    let content_type = match format {
        LiveFormat::Fmp4 => "Content-Type: video/mp4\r\nCache-Control: no-cache\r\n",
        LiveFormat::Ts => "Content-Type: video/mp2t\r\nCache-Control: no-cache\r\n",
    };
    let head = match &websocket {
        Some(accept) => super::websocket::handshake(accept),
        None => super::response::head(&conn, 200, content_type),
    };
    let mut result = write(&mut conn, head.as_bytes()).await;
    let mut mux = LiveMux::new(format, audio);
    let (mut bytes, mut frame) = (Vec::new(), Vec::new());
    while result.is_ok() {
        match glommio::timer::timeout(VIEWER_IDLE_CHECK, async { Ok(rx.recv().await) }).await {
            Ok(Some(f)) => {
                bytes.clear();
                mux.push(&f, &mut bytes);
                if bytes.is_empty() {
                    continue;
                }
                let out = match websocket {
                    Some(_) => {
                        frame.clear();
                        super::websocket::binary_frame(&bytes, &mut frame);
                        &frame
                    }
                    None => &bytes,
                };
                result = write(&mut conn, out).await;
            }
            Ok(None) => break, // stream closed, or this viewer dropped for being slow
            Err(_) if peer_closed(&conn) => break,
            Err(_) => {}
        }
    }
    let _ = conn.close().await;
    tracing::info!(ssrc, ?format, ?peer, "live fMP4/TS viewer left");
}
