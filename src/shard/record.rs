//! MP4 recording of one stream on its shard: fragments (one per GOP) go through a bounded
//! queue to a writer task using glommio file IO, so the media path never waits on the disk.
//! Files rotate at a keyframe; closing a file writes a JSON sidecar with its duration.

use crate::proto::aac::AdtsHeader;
use crate::proto::frame::{Codec, Frame};
use crate::proto::h26x::{self, ParamSets};
use crate::proto::mp4::{Fmp4Muxer, VideoConfig};
use glommio::channels::local_channel::{self, LocalSender};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Fragments waiting for the disk; a fuller queue drops fragments (counted), never blocks.
pub const RECORD_QUEUE_FRAGMENTS_MAX: usize = 32;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecordInfo {
    pub file: String,
    pub stream_id: String,
    pub start_unix_ms: u64,
    pub duration_ms: u64,
    pub frames: u64,
    pub bytes: u64,
}

enum Write {
    Data(Vec<u8>),
    Finish { duration_ms: u64, frames: u64 },
}

struct OpenFile {
    tx: LocalSender<Write>,
    muxer: Fmp4Muxer,
    first_dts: u64,
    last_dts: u64,
}

pub struct Recorder {
    dir: PathBuf,
    stream_id: String,
    rotate: Duration,
    params: ParamSets,
    codec: Option<Codec>,
    adts: Option<AdtsHeader>,
    file: Option<OpenFile>,
    pub fragments_dropped: u64,
}

pub fn records_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("records")
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Recorder {
    pub fn new(data_dir: &Path, stream_id: String, rotate: Duration) -> Recorder {
        Recorder { dir: records_dir(data_dir), stream_id, rotate, params: ParamSets::default(), codec: None, adts: None, file: None, fragments_dropped: 0 }
    }

    pub fn recording(&self) -> bool {
        self.file.is_some()
    }

    pub fn push(&mut self, frame: &Frame) {
        if frame.codec.is_video() {
            if self.codec != Some(frame.codec) {
                self.codec = Some(frame.codec);
                self.params = ParamSets::default();
                self.finish(); // a codec change starts a new file
            }
            if frame.keyframe {
                for nal in h26x::nal_units(&frame.data) {
                    self.params.observe(frame.codec, nal);
                }
                let rotate = self.file.as_ref().is_some_and(|f| frame.dts.saturating_sub(f.first_dts) >= self.rotate.as_millis() as u64 * 90);
                if rotate {
                    self.finish();
                }
                if self.file.is_none() {
                    self.open(frame);
                }
            }
        } else if frame.codec == Codec::Aac && self.adts.is_none() {
            self.adts = AdtsHeader::parse(&frame.data);
        }
        let Some(f) = self.file.as_mut() else { return };
        if frame.codec.is_video() {
            f.last_dts = f.last_dts.max(frame.dts);
        }
        if let Some(fragment) = f.muxer.push(frame)
            && f.tx.try_send(Write::Data(fragment)).is_err() {
                self.fragments_dropped += 1;
                tracing::warn!(stream_id = %self.stream_id, "recording queue full; fragment dropped");
            }
    }

    fn open(&mut self, keyframe: &Frame) {
        let Some(config) = VideoConfig::from_params(keyframe.codec, &self.params) else { return };
        let muxer = Fmp4Muxer::new(config, self.adts, keyframe.dts);
        let start = unix_ms();
        let info = RecordInfo { file: format!("{}_{start}.mp4", self.stream_id), stream_id: self.stream_id.clone(), start_unix_ms: start, duration_ms: 0, frames: 0, bytes: 0 };
        let (tx, rx) = local_channel::new_bounded(RECORD_QUEUE_FRAGMENTS_MAX);
        let _ = tx.try_send(Write::Data(muxer.init_segment()));
        let dir = self.dir.clone();
        tracing::info!(stream_id = %self.stream_id, file = %info.file, "recording started");
        glommio::spawn_local(async move {
            if let Err(error) = write_file(&dir, info.clone(), rx).await {
                tracing::error!(file = %info.file, %error, "recording write failed");
            }
        })
        .detach();
        self.file = Some(OpenFile { tx, muxer, first_dts: keyframe.dts, last_dts: keyframe.dts });
    }

    /// Writes the last fragment and closes the file (its sidecar follows when the disk is done).
    pub fn finish(&mut self) {
        let Some(mut f) = self.file.take() else { return };
        if let Some(fragment) = f.muxer.flush() {
            let _ = f.tx.try_send(Write::Data(fragment));
        }
        // One frame past the last one, as the flushed fragment counts it.
        let duration_ms = f.muxer.duration_ms(f.last_dts) + 40;
        let _ = f.tx.try_send(Write::Finish { duration_ms, frames: f.muxer.frames });
    }
}

fn io_error(e: glommio::GlommioError<()>) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

async fn write_file(dir: &Path, mut info: RecordInfo, rx: glommio::channels::local_channel::LocalReceiver<Write>) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(&info.file);
    let file = glommio::io::BufferedFile::create(&path).await.map_err(io_error)?;
    let mut pos = 0u64;
    while let Some(w) = rx.recv().await {
        match w {
            Write::Data(bytes) => {
                let len = bytes.len() as u64;
                file.write_at(bytes, pos).await.map_err(io_error)?;
                pos += len;
            }
            Write::Finish { duration_ms, frames } => {
                info.duration_ms = duration_ms;
                info.frames = frames;
                break;
            }
        }
    }
    file.fdatasync().await.map_err(io_error)?;
    file.close().await.map_err(io_error)?;
    info.bytes = pos;
    let sidecar = serde_json::to_vec_pretty(&info).map_err(std::io::Error::other)?;
    std::fs::write(path.with_extension("json"), sidecar)?;
    tracing::info!(file = %info.file, duration_ms = info.duration_ms, bytes = pos, "recording closed");
    Ok(())
}

/// Recordings on disk, newest last; `in_progress` ones have no sidecar yet.
pub fn list(data_dir: &Path, limit: usize) -> Vec<(RecordInfo, bool)> {
    let dir = records_dir(data_dir);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut out = Vec::new();
    for e in entries.flatten().take(limit * 2) {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(stem) = name.strip_suffix(".mp4") else { continue };
        let sidecar = std::fs::read(dir.join(format!("{stem}.json"))).ok().and_then(|b| serde_json::from_slice::<RecordInfo>(&b).ok());
        match sidecar {
            Some(info) => out.push((info, false)),
            None => {
                let Some((stream_id, start)) = stem.split_once('_') else { continue };
                let bytes = e.metadata().map_or(0, |m| m.len());
                let start_unix_ms = start.parse().unwrap_or(0);
                out.push((RecordInfo { file: name.clone(), stream_id: stream_id.into(), start_unix_ms, duration_ms: 0, frames: 0, bytes }, true));
            }
        }
    }
    out.sort_by_key(|(i, _)| i.start_unix_ms);
    out.truncate(limit);
    out
}

/// A recording file name as gmv makes them: `{digits}_{digits}.mp4` (no paths).
pub fn valid_file_name(name: &str) -> bool {
    name.strip_suffix(".mp4").and_then(|s| s.split_once('_')).is_some_and(|(a, b)| {
        !a.is_empty() && !b.is_empty() && a.bytes().all(|c| c.is_ascii_digit()) && b.bytes().all(|c| c.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn file_names_cannot_escape_the_directory() {
        assert!(super::valid_file_name("0100000001_1795000000000.mp4"));
        for bad in ["../etc/passwd", "a_1.mp4", "1_2.mp4/..", "_1.mp4", "1_.mp4", "1_2.json", "1/2_3.mp4"] {
            assert!(!super::valid_file_name(bad), "{bad}");
        }
    }
}
