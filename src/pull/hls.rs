//! HLS sources (`http://…/index.m3u8`): the playlist read again every half target duration,
//! each new MPEG-TS segment fetched whole (bounded) and demuxed (`proto::ts_demux`), its
//! frames sent at the pace their timestamps say, so viewers and the HLS/recording outputs see
//! a live stream rather than a burst per segment. A multivariant playlist's highest-bandwidth
//! variant is taken. fMP4 (CMAF) segments are not read (say so in the state).

use super::http;
use super::session::{Ended, FrameSink, SILENCE_TIMEOUT};
use crate::proto::m3u8::{self, PLAYLIST_BYTES_MAX, Playlist};
use crate::proto::ts_demux::{TsDemuxer, TsEvent};
use std::time::{Duration, Instant};

/// A segment's bytes, at most.
pub const SEGMENT_BYTES_MAX: usize = 32 << 20;
/// Segments from the end of a live playlist the pull starts with (the least delay that still
/// has a keyframe to start on).
const START_SEGMENTS: usize = 2;
/// Playlist reloads: half the target duration, within these.
const RELOAD_MIN: Duration = Duration::from_millis(500);
const RELOAD_MAX: Duration = Duration::from_secs(5);
/// A frame this far ahead or behind of the pace (a timestamp jump) resets it instead of waiting.
const PACE_JUMP_MAX: Duration = Duration::from_secs(10);
const VIDEO_HZ: u64 = 90_000;

/// One attempt: playlists and segments until the source fails or ends or the stream goes.
pub async fn pull_once(url: &url::Url, sink: &mut FrameSink) -> Ended {
    let mut playlist_url = url.clone();
    let mut next_sequence: Option<u64> = None;
    let mut demux = TsDemuxer::new();
    let mut pace: Option<(Instant, u64)> = None;
    let mut last_new = Instant::now();
    let mut playing = false;
    let mut events = Vec::new();
    loop {
        let (text, base) = match fetch(&playlist_url, PLAYLIST_BYTES_MAX).await {
            Ok(answer) => answer,
            Err(why) => return Ended::Source(why),
        };
        let (target, segments, ended) = match m3u8::parse(&text) {
            Err(e) => return Ended::Source(e.to_string()),
            Ok(Playlist::Multivariant(variants)) => {
                if playlist_url != *url {
                    return Ended::Source("a variant playlist is itself multivariant".into());
                }
                match base.join(&variants[0]) {
                    Ok(v) => playlist_url = v,
                    Err(e) => return Ended::Source(format!("variant {:?}: {e}", variants[0])),
                }
                continue;
            }
            Ok(Playlist::Media { target_duration_s, segments, ended }) => (target_duration_s, segments, ended),
        };
        let reload = (Duration::from_secs(target.max(1)) / 2).clamp(RELOAD_MIN, RELOAD_MAX);
        let from = next_sequence.unwrap_or_else(|| segments.iter().rev().nth(START_SEGMENTS - 1).or(segments.first()).map_or(0, |s| s.sequence));
        let fresh: Vec<_> = segments.into_iter().filter(|s| s.sequence >= from).collect();
        let got_new = !fresh.is_empty();
        if got_new {
            last_new = Instant::now();
        }
        for segment in fresh {
            next_sequence = Some(segment.sequence + 1);
            if segment.uri.contains(".m4s") || segment.uri.contains(".mp4") {
                return Ended::Source("fMP4 (CMAF) segments are not read; an MPEG-TS playlist is".into());
            }
            let segment_url = match base.join(&segment.uri) {
                Ok(u) => u,
                Err(e) => return Ended::Source(format!("segment {:?}: {e}", segment.uri)),
            };
            let bytes = match fetch(&segment_url, SEGMENT_BYTES_MAX).await {
                Ok((b, _)) => b,
                Err(why) => return Ended::Source(format!("segment {}: {why}", segment.sequence)),
            };
            if !playing {
                playing = true;
                sink.playing(url, None, None);
            }
            if segment.discontinuity {
                demux.note_loss();
                pace = None;
            }
            demux.push(&bytes, &mut events);
            for event in events.drain(..) {
                let frame = match event {
                    TsEvent::Frame(f) => f,
                    TsEvent::Error(_) => {
                        sink.dropped();
                        continue;
                    }
                };
                paced(&mut pace, frame.dts).await;
                if let Err(ended) = sink.send(&frame).await {
                    return ended;
                }
            }
        }
        if ended {
            demux.flush(&mut events);
            return Ended::Source("the playlist ended (#EXT-X-ENDLIST)".into());
        }
        if last_new.elapsed() > SILENCE_TIMEOUT.max(reload * 6) {
            return Ended::Source(format!("no new segment for {} s", last_new.elapsed().as_secs()));
        }
        // Sending paces itself: after new segments the playlist is read again at once (a
        // sleep here would put the next segment's frames behind their pace, then out in a
        // burst).
        if !got_new {
            tokio::time::sleep(reload).await;
        }
    }
}

async fn fetch(url: &url::Url, max: usize) -> Result<(bytes::BytesMut, url::Url), String> {
    let response = http::get(url).await?;
    let at = response.url.clone();
    let body = tokio::time::timeout(SILENCE_TIMEOUT, response.read_all(max)).await.map_err(|_| format!("body not read within {} s", SILENCE_TIMEOUT.as_secs()))??;
    Ok((body, at))
}

/// Waits until the wall clock reaches `dts` on the pace set by the first frame (TS time is
/// 33 bits of 90 kHz; a wrap or a jump starts the pace again).
async fn paced(pace: &mut Option<(Instant, u64)>, dts: u64) {
    let (start, start_dts) = *pace.get_or_insert((Instant::now(), dts));
    let ahead = Duration::from_micros(dts.saturating_sub(start_dts) * 1_000_000 / VIDEO_HZ);
    let due = start + ahead;
    let now = Instant::now();
    if dts < start_dts || due > now + PACE_JUMP_MAX || now > due + PACE_JUMP_MAX {
        *pace = Some((now, dts));
        return;
    }
    if due > now {
        tokio::time::sleep(due - now).await;
    }
}
