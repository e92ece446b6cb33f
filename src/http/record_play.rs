//! A recording played back as HTTP-FLV at real-time pace, from `?start=` seconds (rounded
//! down to the fragment's keyframe). Reads the file fragment by fragment; bounded memory.

use super::conn::HttpConn;
use crate::proto::flv::{FlvMuxer, file_header};
use crate::proto::frame::{Codec, Frame};
use crate::proto::mp4_read::{self, InitInfo};
use crate::node::vod::PlaybackControl;
use crate::shard::Shard;
use bytes::Bytes;
use futures_lite::AsyncWriteExt;
use glommio::io::BufferedFile;
use std::time::{Duration, Instant};

/// Largest box read into memory (a fragment of a high-bitrate GOP fits).
pub const BOX_BYTES_MAX: u64 = 64 << 20;

async fn read(f: &BufferedFile, pos: u64, len: u64) -> Option<Vec<u8>> {
    let r = f.read_at(pos, len as usize).await.ok()?;
    (r.len() as u64 == len).then(|| r.to_vec())
}

/// Annex B picture from a length-prefixed sample, parameter sets first on keyframes.
fn annexb(sample: &[u8], params: &[Vec<u8>], keyframe: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(sample.len() + 64);
    if keyframe {
        for p in params {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(p);
        }
    }
    let mut rest = sample;
    while rest.len() >= 4 {
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let Some(nal) = rest.get(4..4 + len) else { break };
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(nal);
        rest = &rest[4 + len..];
    }
    out
}

/// An ADTS header for one raw AAC frame of `len` bytes.
fn adts(asc: [u8; 2], len: usize) -> [u8; 7] {
    let object_type = asc[0] >> 3;
    let sfi = ((asc[0] & 0x07) << 1) | (asc[1] >> 7);
    let channels = (asc[1] >> 3) & 0x0f;
    let total = len + 7;
    [
        0xff,
        0xf1,
        ((object_type.saturating_sub(1) & 0x03) << 6) | (sfi << 2) | (channels >> 2),
        ((channels & 0x03) << 6) | ((total >> 11) as u8 & 0x03),
        (total >> 3) as u8,
        ((total as u8 & 0x07) << 5) | 0x1f,
        0xfc,
    ]
}

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
    let len = f.file_size().await.unwrap_or(0);
    let mut init: Option<InitInfo> = None;
    let mut mux = FlvMuxer::new();
    let mut tags = Vec::new();
    let mut started = false;
    let (mut wall_start, mut media_start) = (Instant::now(), 0u64);
    let mut pos = 0u64;
    let head = super::response::head(&conn, 200, super::flv_play::FLV_HEADERS);
    let mut result = conn.write_all(head.as_bytes()).await;
    if result.is_ok() {
        result = conn.write_all(&file_header(true, true)).await;
    }
    while result.is_ok() && pos + 8 <= len {
        // A seek: from the file's start again, to the keyframe before the new position.
        if let Some(c) = control.as_ref().filter(|c| c.generation.get() != generation) {
            (generation, start_s, started, pos) = (c.generation.get(), c.seek_ms.get() / 1000, false, 0);
            continue;
        }
        let Some(header) = read(&f, pos, 8).await else { break };
        let size = u64::from(u32::from_be_bytes([header[0], header[1], header[2], header[3]]));
        let kind = [header[4], header[5], header[6], header[7]];
        if !(8..=BOX_BYTES_MAX).contains(&size) || pos + size > len {
            break; // a fragment still being written, or damage
        }
        match &kind {
            b"moov" => init = read(&f, pos + 8, size - 8).await.and_then(|b| mp4_read::parse_moov(&b).ok()),
            b"moof" => {
                let (Some(info), Some(moof)) = (init.as_ref(), read(&f, pos + 8, size - 8).await) else { break };
                let Ok(runs) = mp4_read::parse_moof(&moof) else { break };
                let mut frames = Vec::new();
                for run in &runs {
                    let mut offset = pos + u64::from(run.data_offset);
                    let mut time = run.base_time;
                    for s in &run.samples {
                        let Some(data) = read(&f, offset, u64::from(s.size)).await else { break };
                        offset += u64::from(s.size);
                        if let Some(v) = info.video.as_ref().filter(|v| v.track_id == run.track_id) {
                            let dts = time * 90_000 / u64::from(v.timescale.max(1));
                            let pts = (dts as i64 + i64::from(s.cto) * 90_000 / i64::from(v.timescale.max(1))).max(0) as u64;
                            frames.push(Frame {
                                codec: v.codec,
                                pts,
                                dts,
                                keyframe: s.keyframe,
                                data: Bytes::from(annexb(&data, &v.params, s.keyframe)),
                            });
                        } else if let Some(a) = info.audio.as_ref().filter(|a| a.track_id == run.track_id) {
                            let dts = time * 90_000 / u64::from(a.timescale.max(1));
                            let mut framed = adts(a.asc, data.len()).to_vec();
                            framed.extend_from_slice(&data);
                            frames.push(Frame { codec: Codec::Aac, pts: dts, dts, keyframe: true, data: Bytes::from(framed) });
                        }
                        time += u64::from(s.duration);
                    }
                }
                frames.sort_by_key(|fr| (fr.dts, !fr.codec.is_video()));
                for fr in frames {
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
                        let fragment_end =
                            runs.iter().map(|r| r.samples.iter().map(|s| u64::from(s.duration)).sum::<u64>() + r.base_time).max().unwrap_or(0);
                        let end_s = info.video.as_ref().map_or(0, |v| fragment_end / u64::from(v.timescale.max(1)));
                        if !(fr.codec.is_video() && fr.keyframe && end_s > start_s) {
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
            _ => {}
        }
        pos += size;
    }
    let _ = conn.close().await;
    let _ = f.close().await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn adts_header_round_trips() {
        let h = super::adts([0x12, 0x10], 100);
        let parsed = crate::proto::aac::AdtsHeader::parse(&h).unwrap();
        assert_eq!((parsed.object_type, parsed.sample_rate(), parsed.channels, parsed.frame_bytes), (2, 44100, 2, 107));
    }
}
