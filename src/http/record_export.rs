//! A time range of one stream's (or one channel's) recordings exported as one MP4 (录像导出):
//! `GET /api/records/export?stream=|channel=&from=&to=` (unix seconds, or `from_ms`/`to_ms`).
//! The closed files overlapping the range are read a fragment at a time, from the fragment
//! (GOP) that reaches `from` (a cut at a keyframe) to the last frame at or before `to`, and
//! muxed again into one fragmented MP4 on one clock (each file placed at its start time), sent
//! as it is made: memory stays a fragment whatever the range. Two files of other picture formats
//! (a camera's resolution changed) end the export at the change.

use super::conn::HttpConn;
use super::record_read::RecordingReader;
use super::request::RequestHead;
use super::response::respond_error;
use crate::proto::aac::AdtsHeader;
use crate::proto::frame::Frame;
use crate::proto::h26x::{ParamSets, nal_units};
use crate::proto::mp4::{Fmp4Muxer, VideoConfig};
use crate::shard::Shard;
use crate::shard::record::{RecordFilter, RecordInfo};
use futures_lite::AsyncWriteExt;

/// The longest range one export takes.
pub const EXPORT_SPAN_MS_MAX: u64 = 7 * 24 * 3600 * 1000;
/// Files one export reads at most.
pub const EXPORT_FILES_MAX: usize = 20_000;

/// What was asked: whose recordings and the range (unix ms); or why it cannot be served.
fn asked(head: &RequestHead) -> Result<(RecordFilter, u64, u64), String> {
    let ms = |s: &str, ms: &str| {
        head.query_param(ms).and_then(|v| v.parse::<u64>().ok()).or_else(|| head.query_param(s).and_then(|v| v.parse::<u64>().ok()).map(|v| v.saturating_mul(1000)))
    };
    let (Some(from), Some(to)) = (ms("from", "from_ms"), ms("to", "to_ms")) else { return Err("from and to (unix seconds, or from_ms and to_ms) are needed".into()) };
    if to <= from || to - from > EXPORT_SPAN_MS_MAX {
        return Err(format!("the range is more than 0 s and at most {} days", EXPORT_SPAN_MS_MAX / 86_400_000));
    }
    let (stream_id, channel_id) = (head.query_param("stream").map(str::to_string), head.query_param("channel").map(str::to_string));
    if stream_id.is_some() == channel_id.is_some() {
        return Err("name one stream (stream=) or one channel (channel=)".into());
    }
    Ok((RecordFilter { stream_id, channel_id, from_ms: Some(from), to_ms: Some(to) }, from, to))
}

pub async fn serve(shard: &Shard, conn: &mut HttpConn, head: &RequestHead) {
    let (filter, from, to) = match asked(head) {
        Ok(a) => a,
        Err(why) => return respond_error(conn, 400, "bad_request", &why).await,
    };
    let index = shard.record_writers.index.clone();
    let listed = glommio::executor().spawn_blocking(move || crate::shard::record::list(&index, &filter, EXPORT_FILES_MAX)).await;
    // Alarm clips overlap the continuous files of their stream: those are left out.
    let files: Vec<RecordInfo> = listed.into_iter().filter(|(r, in_progress)| !in_progress && r.kind.is_none()).map(|(r, _)| r).collect();
    let Some(first) = files.first() else { return respond_error(conn, 404, "not_found", "no closed recording in that range").await };
    conn.keep_alive = false; // the body ends with the connection
    let name = format!("{}_{}_{}.mp4", first.stream_id, from / 1000, to / 1000);
    let extra = format!("Content-Type: video/mp4\r\nContent-Disposition: attachment; filename=\"{name}\"\r\n");
    let head_text = super::response::head(conn, 200, &extra);
    if conn.write_all(head_text.as_bytes()).await.is_err() {
        return;
    }
    let dir = crate::shard::record::records_dir(&shard.config.data_dir);
    let mut out = Export::default();
    'files: for file in &files {
        let Ok(f) = glommio::io::BufferedFile::open(dir.join(&file.file)).await else { continue };
        let mut reader = RecordingReader::new(f).await;
        let mut file_first_dts = None;
        out.next_file();
        while let Some(fragment) = reader.next_fragment().await {
            let first_dts = *file_first_dts.get_or_insert(fragment.frames.first().map_or(0, |f| f.dts));
            let wall = |dts: u64| file.start_unix_ms + dts.saturating_sub(first_dts) / 90;
            // A fragment that ends before the range is not in it (the cut is at a keyframe).
            if wall(fragment.end_90k) <= from {
                continue;
            }
            for fr in &fragment.frames {
                if wall(fr.dts) > to {
                    reader.close().await;
                    break 'files;
                }
                let bytes = match out.push(fr, file.start_unix_ms, first_dts, &fragment.frames) {
                    Ok(bytes) => bytes,
                    Err(why) => {
                        tracing::warn!(file = file.file, why, "export ends here");
                        reader.close().await;
                        break 'files;
                    }
                };
                if !bytes.is_empty() && conn.write_all(&bytes).await.is_err() {
                    reader.close().await;
                    return;
                }
            }
        }
        reader.close().await;
    }
    if let Some(last) = out.muxer.as_mut().and_then(Fmp4Muxer::flush) {
        let _ = conn.write_all(&last).await;
    }
    tracing::info!(file = name, frames = out.frames, "recordings exported");
    let _ = conn.close().await;
}

/// The one MP4 being made: its muxer once the first keyframe came, and its clock's start.
#[derive(Default)]
struct Export {
    muxer: Option<Fmp4Muxer>,
    /// Unix ms of the export's first frame: every file's frames go on this clock.
    start_unix_ms: u64,
    video: Option<crate::proto::frame::Codec>,
    frames: u64,
    /// Where the file being read starts on the export's clock (90 kHz), once known, and the
    /// last dts written.
    file_base: Option<u64>,
    last_dts: Option<u64>,
}

/// A frame's time at 25 fps (90 kHz): the least a file is placed after the one before it.
const FRAME_90K: u64 = 3_600;

impl Export {
    /// A frame of a file that started at `file_start_ms`, whose first frame's dts is
    /// `file_first_dts`: the bytes to send (the init segment first, then fragments as they
    /// close). Err when the picture format changed (one MP4 cannot hold both).
    fn push(&mut self, fr: &Frame, file_start_ms: u64, file_first_dts: u64, fragment: &[Frame]) -> Result<Vec<u8>, &'static str> {
        let mut bytes = Vec::new();
        if self.muxer.is_none() {
            if !(fr.codec.is_video() && fr.keyframe) {
                return Ok(bytes); // the export starts at a keyframe
            }
            let mut params = ParamSets::default();
            for nal in nal_units(&fr.data) {
                params.observe(fr.codec, nal);
            }
            let Some(config) = VideoConfig::from_params(fr.codec, &params) else { return Err("a keyframe without its parameter sets") };
            let adts = fragment.iter().find(|f| f.codec == crate::proto::frame::Codec::Aac).and_then(|f| AdtsHeader::parse(&f.data));
            self.start_unix_ms = file_start_ms;
            self.video = Some(fr.codec);
            let muxer = Fmp4Muxer::new(config, adts, 0);
            bytes.extend_from_slice(&muxer.init_segment());
            self.muxer = Some(muxer);
        }
        if fr.codec.is_video() && Some(fr.codec) != self.video {
            return Err("the video codec changed");
        }
        // Each file at its start time, and never over the one before (files whose clocks
        // overlap: media that came faster than real time).
        let at_start = file_start_ms.saturating_sub(self.start_unix_ms) * 90;
        let after_last = self.last_dts.map_or(0, |d| d + FRAME_90K);
        let base = *self.file_base.get_or_insert(at_start.max(after_last));
        let shift = |t: u64| base + t.saturating_sub(file_first_dts);
        let moved = Frame { dts: shift(fr.dts), pts: shift(fr.pts), ..fr.clone() };
        if let Some(fragment) = self.muxer.as_mut().and_then(|m| m.push(&moved)) {
            bytes.extend_from_slice(&fragment);
        }
        self.frames += u64::from(fr.codec.is_video());
        self.last_dts = Some(self.last_dts.map_or(moved.dts, |d| d.max(moved.dts)));
        Ok(bytes)
    }

    /// The next file's frames follow.
    fn next_file(&mut self) {
        self.file_base = None;
    }
}
