//! HLS playlist and segments, served by the stream's shard from memory. The first playlist
//! request turns segmenting on and waits (bounded) for the first segment.

use super::conn::HttpConn;
use super::response::{respond, respond_error};
use crate::proto::hls::{HlsLimits, HlsSegmenter};
use crate::shard::Shard;
use std::rc::Rc;
use std::time::{Duration, Instant};

const PLAYLIST_POLL: Duration = Duration::from_millis(100);

pub async fn serve(shard: &Rc<Shard>, conn: &mut HttpConn, ssrc: u32, file: &str) {
    let Some(stream) = shard.streams.borrow().get(&ssrc).cloned() else {
        return respond_error(conn, 404, "not_found", "no such stream").await;
    };
    let hls = &shard.config.hls;
    stream.hls_requested.set(Some(Instant::now()));
    let target = Duration::from_secs(hls.segment_duration_s);
    {
        let mut p = stream.pipeline.borrow_mut();
        if p.hls.is_none() {
            tracing::info!(ssrc, "HLS started");
            p.hls = Some(HlsSegmenter::new(HlsLimits { target_duration_ms: target.as_millis() as u64, segments_max: hls.segments_max }));
        }
    }
    if file == "index.m3u8" {
        // A segment ends at the keyframe after the target: allow two GOPs and a bit.
        let deadline = Instant::now() + target * 3 + Duration::from_secs(2);
        loop {
            let playlist = stream.pipeline.borrow().hls.as_ref().and_then(HlsSegmenter::playlist);
            if let Some(p) = playlist {
                return respond(conn, 200, "application/vnd.apple.mpegurl", p.as_bytes()).await;
            }
            if Instant::now() >= deadline || !shard.streams.borrow().contains_key(&ssrc) {
                return respond_error(conn, 503, "not_ready", "no HLS segment yet; retry").await;
            }
            glommio::timer::sleep(PLAYLIST_POLL).await;
        }
    }
    let sequence = file.strip_suffix(".ts").and_then(|s| s.parse::<u64>().ok());
    let data = sequence.and_then(|seq| stream.pipeline.borrow().hls.as_ref().and_then(|h| h.segment(seq).map(|s| s.data.clone())));
    drop(stream);
    match data {
        Some(d) => respond(conn, 200, "video/mp2t", &d).await,
        None => respond_error(conn, 404, "not_found", "no such segment (expired or not yet made)").await,
    }
}
