//! A recording played back as HTTP-FLV at real-time pace, from `?start=` seconds (rounded
//! down to the fragment's keyframe). Reads the file fragment by fragment; bounded memory.

use super::conn::HttpConn;
use super::record_read::RecordingReader;
use crate::node::vod::PlaybackControl;
use crate::proto::flv::{FlvMuxer, file_header};
use crate::shard::Shard;
use futures_lite::AsyncWriteExt;
use std::time::{Duration, Instant};

/// Counts a viewer of a controlled playback while it plays.
struct Watching(std::rc::Rc<PlaybackControl>);

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.viewers.set(self.0.viewers.get().saturating_sub(1));
    }
}

/// `control`: a cloud-record playback's seek and speed, followed while it plays.
pub async fn serve(shard: &Shard, mut conn: HttpConn, stem: &str, start_s: u64, control: Option<std::rc::Rc<PlaybackControl>>) {
    conn.keep_alive = false; // the body lasts as long as the playback
    let _watching = control.clone().map(|c| {
        c.viewers.set(c.viewers.get() + 1);
        c.played.set(true);
        Watching(c)
    });
    let speed = |c: &Option<std::rc::Rc<PlaybackControl>>| c.as_ref().map_or(100, |c| c.speed_x100.get().max(1));
    let mut start_s = control.as_ref().map_or(start_s, |c| c.seek_ms.get() / 1000);
    let mut generation = control.as_ref().map_or(0, |c| c.generation.get());
    let mut pace = speed(&control);
    let Some(f) =
        super::records_serve::open_recording(&crate::shard::record::records_dir(&shard.config.data_dir), &mut conn, &format!("{stem}.mp4")).await
    else {
        return;
    };
    let mut reader = RecordingReader::new(f).await;
    // The FLV header names the tracks the file has: a player waits for any it announces (a
    // recording without sound announced with sound never starts in mpegts.js).
    let (video, audio) = reader.tracks().await.unwrap_or((true, false));
    let mut mux = FlvMuxer::new();
    let mut tags = Vec::new();
    let mut started = false;
    let (mut wall_start, mut media_start) = (Instant::now(), 0u64);
    let head = super::response::head(&conn, 200, super::flv_play::FLV_HEADERS);
    let mut result = conn.write_all(head.as_bytes()).await;
    if result.is_ok() {
        result = conn.write_all(&file_header(audio, video)).await;
    }
    while result.is_ok() {
        // A seek: from the file's start again, to the keyframe before the new position.
        if let Some(c) = control.as_ref().filter(|c| c.generation.get() != generation) {
            (generation, start_s, started) = (c.generation.get(), c.seek_ms.get() / 1000, false);
            reader.rewind();
            continue;
        }
        let Some(fragment) = reader.next_fragment().await else { break };
        for fr in fragment.frames {
            if control.as_ref().is_some_and(|c| c.generation.get() != generation) {
                break; // seeked meanwhile: the loop above starts over
            }
            if speed(&control) != pace {
                // A new speed counts from here.
                pace = speed(&control);
                (wall_start, media_start) = (Instant::now(), fr.dts);
            }
            if !started {
                // Start at the first keyframe whose fragment reaches `start`.
                if !(fr.codec.is_video() && fr.keyframe && fragment.end_90k / 90_000 > start_s) {
                    continue;
                }
                started = true;
                (wall_start, media_start) = (Instant::now(), fr.dts);
            }
            let due = wall_start + Duration::from_micros(fr.dts.saturating_sub(media_start) * 1000 / 90 * 100 / u64::from(pace));
            let now = Instant::now();
            if due > now {
                glommio::timer::sleep(due - now).await;
            }
            mux.push(&fr, &mut tags);
            for t in tags.drain(..) {
                if result.is_ok() {
                    result = conn.write_all(&t.data).await;
                }
            }
        }
    }
    let _ = conn.close().await;
    reader.close().await;
}
