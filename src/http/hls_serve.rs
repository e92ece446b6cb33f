//! HLS playlists and segments, served by the stream's shard from memory: `index.m3u8` with
//! MPEG-TS segments (`{n}.ts`), `index.fmp4.m3u8` with fMP4 ones (`init-{n}.mp4`, `{n}.m4s`).
//! A playlist request turns its segmenter on and waits (bounded) for the first segment.

use super::conn::HttpConn;
use super::response::{respond, respond_error};
use crate::proto::hls::{HlsLimits, HlsSegmenter, SegmentFormat};
use crate::shard::Shard;
use bytes::Bytes;
use std::rc::Rc;
use std::time::{Duration, Instant};

const PLAYLIST_POLL: Duration = Duration::from_millis(100);

/// What an HLS file name asks for.
#[derive(Debug, PartialEq, Eq)]
enum HlsFile {
    Playlist(SegmentFormat),
    Segment(SegmentFormat, u64),
    Init(u32),
}

fn parse(file: &str) -> Option<HlsFile> {
    match file {
        "index.m3u8" => return Some(HlsFile::Playlist(SegmentFormat::Ts)),
        "index.fmp4.m3u8" => return Some(HlsFile::Playlist(SegmentFormat::Fmp4)),
        _ => {}
    }
    if let Some(n) = file.strip_prefix("init-").and_then(|f| f.strip_suffix(".mp4")) {
        return n.parse().ok().map(HlsFile::Init);
    }
    let (n, ext) = file.rsplit_once('.')?;
    let format = [SegmentFormat::Ts, SegmentFormat::Fmp4].into_iter().find(|f| f.extension() == ext)?;
    n.parse().ok().map(|n| HlsFile::Segment(format, n))
}

pub async fn serve(shard: &Rc<Shard>, conn: &mut HttpConn, ssrc: u32, file: &str) {
    let Some(stream) = shard.streams.borrow().get(&ssrc).cloned() else {
        return respond_error(conn, 404, "not_found", "no such stream").await;
    };
    let Some(file) = parse(file) else {
        return respond_error(conn, 404, "not_found", "no such HLS file (index.m3u8, index.fmp4.m3u8 and their segments)").await;
    };
    let hls = &shard.config.hls;
    stream.hls_requested.set(Some(Instant::now()));
    let target = Duration::from_secs(hls.segment_duration_s);
    if let HlsFile::Playlist(format) = file {
        {
            let mut p = stream.pipeline.borrow_mut();
            let segmenter = p.hls_of(format);
            if segmenter.is_none() {
                tracing::info!(ssrc, ?format, "HLS started");
                *segmenter = Some(HlsSegmenter::new(HlsLimits { target_duration_ms: target.as_millis() as u64, segments_max: hls.segments_max }, format));
            }
        }
        // A segment ends at the keyframe after the target: allow two GOPs and a bit.
        let deadline = Instant::now() + target * 3 + Duration::from_secs(2);
        loop {
            let playlist = stream.pipeline.borrow_mut().hls_of(format).as_ref().and_then(HlsSegmenter::playlist);
            if let Some(p) = playlist {
                return respond(conn, 200, "application/vnd.apple.mpegurl", p.as_bytes()).await;
            }
            if Instant::now() >= deadline || !shard.streams.borrow().contains_key(&ssrc) {
                return respond_error(conn, 503, "not_ready", "no HLS segment yet; retry").await;
            }
            glommio::timer::sleep(PLAYLIST_POLL).await;
        }
    }
    let found: Option<(Bytes, &str)> = {
        let mut p = stream.pipeline.borrow_mut();
        match file {
            HlsFile::Segment(format, n) => {
                let kind = if format == SegmentFormat::Ts { "video/mp2t" } else { "video/iso.segment" };
                p.hls_of(format).as_ref().and_then(|h| h.segment(n)).map(|s| (s.data.clone(), kind))
            }
            HlsFile::Init(n) => p.hls_fmp4.as_ref().and_then(|h| h.init(n)).map(|b| (b.clone(), "video/mp4")),
            HlsFile::Playlist(_) => None,
        }
    };
    drop(stream);
    match found {
        Some((d, kind)) => respond(conn, 200, kind, &d).await,
        None => respond_error(conn, 404, "not_found", "no such segment (expired or not yet made)").await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        assert_eq!(parse("index.m3u8"), Some(HlsFile::Playlist(SegmentFormat::Ts)));
        assert_eq!(parse("index.fmp4.m3u8"), Some(HlsFile::Playlist(SegmentFormat::Fmp4)));
        assert_eq!(parse("12.ts"), Some(HlsFile::Segment(SegmentFormat::Ts, 12)));
        assert_eq!(parse("12.m4s"), Some(HlsFile::Segment(SegmentFormat::Fmp4, 12)));
        assert_eq!(parse("init-3.mp4"), Some(HlsFile::Init(3)));
        for bad in ["x.ts", "12.mp4", "init-.mp4", "init-99999999999.mp4", "12", ".m4s", "index.m3u"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
