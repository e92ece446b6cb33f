//! MP4 recording of one stream on its shard: fragments (one per GOP) go through a bounded
//! queue to a writer task using glommio file IO, so the media path never waits on the disk.
//! Files rotate at a keyframe; closing a file writes a JSON sidecar with its duration.

use crate::proto::aac::AdtsHeader;
use crate::proto::frame::{Codec, Frame};
use crate::proto::h26x::{self, ParamSets};
use crate::proto::mp4::{Fmp4Muxer, VideoConfig};
use super::record_index::RecordIndex;
use glommio::channels::local_channel::{self, LocalSender};
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// Closed recordings waiting to be told to the control plane (an event each); past this the
/// oldest are forgotten (their files and sidecars are there all the same).
pub const CLOSED_RECORDS_QUEUED_MAX: usize = 1024;

/// A shard's recording files: how many are being written, those closed since last asked, and
/// the index they are written into.
#[derive(Debug)]
pub struct RecordWriters {
    pub open: Cell<usize>,
    closed: std::cell::RefCell<std::collections::VecDeque<RecordInfo>>,
    pub index: Arc<RecordIndex>,
}

impl RecordWriters {
    pub fn new(data_dir: &Path) -> RecordWriters {
        RecordWriters { open: Cell::new(0), closed: Default::default(), index: Arc::new(RecordIndex::for_data_dir(data_dir)) }
    }

    fn closed(&self, info: RecordInfo) {
        let mut q = self.closed.borrow_mut();
        if q.len() >= CLOSED_RECORDS_QUEUED_MAX {
            q.pop_front();
        }
        q.push_back(info);
    }

    #[must_use = "closed recordings taken and dropped never become events"]
    pub fn take_closed(&self) -> Vec<RecordInfo> {
        self.closed.borrow_mut().drain(..).collect()
    }
}

/// Fragments waiting for the disk; a fuller queue drops fragments (counted), never blocks.
pub const RECORD_QUEUE_FRAGMENTS_MAX: usize = 32;
/// A recorder stopped by a failed write (a full disk) tries a new file this long after, at a
/// keyframe, again and again: it records again by itself once space returns (retention, or
/// an operator, freed some).
pub const RECORD_RETRY_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecordInfo {
    pub file: String,
    pub stream_id: String,
    pub start_unix_ms: u64,
    pub duration_ms: u64,
    pub frames: u64,
    pub bytes: u64,
    /// The GB28181 channel recorded, when the stream is a device's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<String>,
    /// "alarm" for an alarm clip; none for a continuous recording.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The events (ids) of the alarms an alarm clip holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alarm_ids: Vec<u64>,
}

enum Write {
    Data(Vec<u8>),
    Finish { duration_ms: u64, frames: u64, alarm_ids: Vec<u64> },
}

struct OpenFile {
    tx: LocalSender<Write>,
    muxer: Fmp4Muxer,
    first_dts: u64,
    last_dts: u64,
    /// Frames the file held before this recorder went on with it.
    frames_before: u64,
}

pub struct Recorder {
    /// Files of this shard still being written (so a stop can wait for their sidecars).
    writers: Rc<RecordWriters>,
    /// Set by the writer on its first failed write (a full disk, a removed directory): the
    /// recorder then stops for good, instead of queueing fragments nobody writes.
    write_error: Rc<std::cell::RefCell<Option<String>>>,
    /// Why this recorder stopped on its own; it records nothing more until a retry works
    /// (`RECORD_RETRY_INTERVAL`; continuous recordings only).
    pub error: Option<String>,
    /// When it stopped, and how many retries failed since it last wrote a file whole.
    error_at: Option<std::time::Instant>,
    retries_failed: u32,
    dir: PathBuf,
    stream_id: String,
    /// The file's name without `.mp4` when fixed (a download); else `{stream_id}_{unix_ms}`.
    stem: Option<String>,
    pub channel_id: Option<String>,
    /// An alarm clip's: its kind ("alarm") and the alarms it holds, in the sidecar.
    pub kind: Option<&'static str>,
    pub alarm_ids: Vec<u64>,
    /// How long before now its first frame was (an alarm clip's pre-roll): the file's start
    /// time is set back by it.
    pub started_before: Duration,
    rotate: Duration,
    /// Bytes of fragments handed to the writer for the latest file, and its name.
    pub bytes_queued: u64,
    pub file_name: Option<String>,
    params: ParamSets,
    codec: Option<Codec>,
    adts: Option<AdtsHeader>,
    file: Option<OpenFile>,
    pub fragments_dropped: u64,
    /// A file to go on with (a download interrupted by a restart) instead of a new one.
    pub resume: Option<WholeFile>,
}

pub fn records_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("records")
}

/// Device recordings downloaded (GB28181 s=Download), one file each.
pub fn downloads_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("downloads")
}

impl Recorder {
    /// Records into `dir` (`records_dir` or `downloads_dir`); `stem` fixes the file name.
    pub fn new(dir: PathBuf, stream_id: String, stem: Option<String>, rotate: Duration, writers: Rc<RecordWriters>) -> Recorder {
        Recorder {
            writers,
            write_error: Default::default(),
            error: None,
            error_at: None,
            retries_failed: 0,
            dir,
            stream_id,
            stem,
            channel_id: None,
            kind: None,
            alarm_ids: Vec::new(),
            started_before: Duration::ZERO,
            rotate,
            bytes_queued: 0,
            file_name: None,
            params: ParamSets::default(),
            codec: None,
            adts: None,
            file: None,
            fragments_dropped: 0,
            resume: None,
        }
    }

    pub fn recording(&self) -> bool {
        self.file.is_some() // a write error takes the file away
    }

    /// Stops after the writer failed: the open file is abandoned (the writer has gone),
    /// nothing more is queued, the error stays for the API until a retry works. Logged once
    /// (failed retries at powers of two).
    fn check_writer(&mut self) -> bool {
        if self.error.is_some() {
            return false;
        }
        let Some(error) = self.write_error.borrow().clone() else { return true };
        let retry = if self.stem.is_none() { format!("; it tries again every {} s", RECORD_RETRY_INTERVAL.as_secs()) } else { String::new() };
        match self.retries_failed {
            0 => tracing::error!(stream_id = %self.stream_id, %error, "recording stopped: the file could not be written (disk full?){retry}"),
            n if n.is_power_of_two() => tracing::warn!(stream_id = %self.stream_id, %error, retries_failed = n, "recording still cannot write"),
            _ => {}
        }
        self.error = Some(error);
        self.error_at = Some(std::time::Instant::now());
        self.file = None;
        false
    }

    /// A continuous recording stopped by a failed write starts a new file at this keyframe
    /// when it waited `RECORD_RETRY_INTERVAL` (a download's file is not begun afresh: its
    /// resume does that).
    fn retry_due(&mut self, frame: &Frame) -> bool {
        let due = self.error_at.is_some_and(|at| at.elapsed() >= RECORD_RETRY_INTERVAL);
        if self.error.is_none() || self.stem.is_some() || !frame.keyframe || !frame.codec.is_video() || !due {
            return false;
        }
        if self.error_at.take().is_some() && self.write_error.borrow_mut().take().is_some() {
            self.retries_failed += 1;
        }
        tracing::info!(stream_id = %self.stream_id, "recording tries a new file after a failed write");
        self.error = None;
        true
    }

    pub fn push(&mut self, frame: &Frame) {
        if self.error.is_some() && !self.retry_due(frame) {
            return;
        }
        if !self.check_writer() {
            return;
        }
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
        let Some(fragment) = f.muxer.push(frame) else { return };
        let len = fragment.len() as u64;
        if f.tx.try_send(Write::Data(fragment)).is_ok() {
            self.bytes_queued += len;
        } else {
            self.fragments_dropped += 1;
            if self.fragments_dropped.is_power_of_two() {
                tracing::warn!(stream_id = %self.stream_id, dropped = self.fragments_dropped, "recording queue full (disk too slow); fragment dropped");
            }
        }
    }

    fn open(&mut self, keyframe: &Frame) {
        let Some(config) = VideoConfig::from_params(keyframe.codec, &self.params) else { return };
        let resume = self.resume.take();
        if let Some(whole) = &resume
            && !same_params(&whole.video_params, &self.params)
        {
            let error = "the device now sends another picture format (parameter sets) than the file holds; it is not continued".to_string();
            tracing::error!(stream_id = %self.stream_id, %error, "recording not continued");
            self.error = Some(error);
            return;
        }
        let muxer = match &resume {
            // A file without an audio track gets none now either (its init segment stays).
            Some(whole) => Fmp4Muxer::continuing(config, self.adts.filter(|_| whole.has_audio), keyframe.dts, whole.end_90k, whole.fragments),
            None => Fmp4Muxer::new(config, self.adts, keyframe.dts),
        };
        let start = super::unix_ms().saturating_sub(std::mem::take(&mut self.started_before).as_millis() as u64);
        let stem = self.stem.clone().unwrap_or_else(|| format!("{}_{start}", self.stream_id));
        let info = RecordInfo {
            file: format!("{stem}.mp4"),
            stream_id: self.stream_id.clone(),
            start_unix_ms: start,
            duration_ms: 0,
            frames: 0,
            bytes: 0,
            channel_id: self.channel_id.clone(),
            kind: self.kind.map(str::to_string),
            alarm_ids: Vec::new(),
        };
        let (tx, rx) = local_channel::new_bounded(RECORD_QUEUE_FRAGMENTS_MAX);
        let append_at = resume.as_ref().map(|w| w.bytes);
        match append_at {
            Some(bytes) => self.bytes_queued = bytes,
            None => {
                let init = muxer.init_segment();
                self.bytes_queued = init.len() as u64;
                let _ = tx.try_send(Write::Data(init));
            }
        }
        self.file_name = Some(info.file.clone());
        let dir = self.dir.clone();
        tracing::info!(stream_id = %self.stream_id, file = %info.file, continued_from_bytes = append_at, "recording started");
        let writers = self.writers.clone();
        writers.open.set(writers.open.get() + 1);
        let write_error = self.write_error.clone();
        // Files of the recordings directory are indexed (downloads are not listed from it).
        let index = (writers.index.records() == dir.as_path()).then(|| writers.index.clone());
        glommio::spawn_local(async move {
            match write_file(&dir, info.clone(), rx, append_at, index).await {
                Ok(closed) => writers.closed(closed),
                Err(error) => {
                    tracing::debug!(file = %info.file, %error, "recording write failed");
                    *write_error.borrow_mut() = Some(format!("{}: {error}", info.file));
                }
            }
            writers.open.set(writers.open.get() - 1);
        })
        .detach();
        let frames_before = resume.map_or(0, |w| w.frames);
        self.file = Some(OpenFile { tx, muxer, first_dts: keyframe.dts, last_dts: keyframe.dts, frames_before });
    }

    /// Drops the frames not yet written (the GOP under way); the dts of the first of them.
    pub fn discard_pending(&mut self) -> Option<u64> {
        let f = self.file.as_mut()?;
        let first = f.muxer.discard_pending()?;
        f.last_dts = f.last_dts.min(first.saturating_sub(1)).max(f.first_dts);
        Some(first)
    }

    /// Writes the last fragment and closes the file (its sidecar follows when the disk is done).
    pub fn finish(&mut self) {
        if !self.check_writer() {
            return;
        }
        let Some(mut f) = self.file.take() else { return };
        // Written whole so far: a stop after this is a new one, logged as such.
        self.retries_failed = 0;
        if let Some(fragment) = f.muxer.flush() {
            let _ = f.tx.try_send(Write::Data(fragment));
        }
        // One frame past the last one, as the flushed fragment counts it.
        let duration_ms = f.muxer.duration_ms(f.last_dts) + 40;
        let _ = f.tx.try_send(Write::Finish { duration_ms, frames: f.frames_before + f.muxer.frames, alarm_ids: self.alarm_ids.clone() });
    }
}

fn io_error(e: glommio::GlommioError<()>) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Writes `bytes` at `pos`; the end position. A short write (a full disk, a file size limit)
/// is an error too: the recorder stops, and the half-written fragment is cut off by `recover`.
async fn write_whole_at(file: &glommio::io::BufferedFile, bytes: Vec<u8>, pos: u64) -> std::io::Result<u64> {
    let len = bytes.len();
    let n = file.write_at(bytes, pos).await.map_err(io_error)?;
    if n < len {
        return Err(std::io::Error::new(std::io::ErrorKind::StorageFull, format!("short write: {n} of {len} bytes")));
    }
    Ok(pos + len as u64)
}

/// Writes a recording's fragments as they come: a new file, or (`append_at`) an existing one
/// from that many bytes on (cut there first); told to `index` when begun and when closed.
async fn write_file(
    dir: &Path,
    mut info: RecordInfo,
    rx: glommio::channels::local_channel::LocalReceiver<Write>,
    append_at: Option<u64>,
    index: Option<Arc<RecordIndex>>,
) -> std::io::Result<RecordInfo> {
    // Directory, index and sidecar are blocking calls: on a blocking thread, not the shard.
    let (d, begun, i) = (dir.to_path_buf(), info.clone(), index.clone());
    glommio::executor()
        .spawn_blocking(move || {
            std::fs::create_dir_all(d)?;
            if let Some(index) = i {
                tell_index(index.opened(&begun.file, &begun.stream_id, begun.start_unix_ms), &begun.file);
            }
            std::io::Result::Ok(())
        })
        .await?;
    let path = dir.join(&info.file);
    let (file, mut pos) = match append_at {
        None => (glommio::io::BufferedFile::create(&path).await.map_err(io_error)?, 0u64),
        Some(bytes) => {
            let p = path.clone();
            glommio::executor().spawn_blocking(move || std::fs::OpenOptions::new().write(true).open(p)?.set_len(bytes)).await?;
            (glommio::io::OpenOptions::new().write(true).buffered_open(&path).await.map_err(io_error)?, bytes)
        }
    };
    while let Some(w) = rx.recv().await {
        match w {
            Write::Data(bytes) => pos = write_whole_at(&file, bytes, pos).await?,
            Write::Finish { duration_ms, frames, alarm_ids } => {
                info.duration_ms = duration_ms;
                info.frames = frames;
                info.alarm_ids = alarm_ids;
                break;
            }
        }
    }
    file.fdatasync().await.map_err(io_error)?;
    file.close().await.map_err(io_error)?;
    info.bytes = pos;
    let sidecar = serde_json::to_vec_pretty(&info).map_err(std::io::Error::other)?;
    let sidecar_path = path.with_extension("json");
    let closed = info.clone();
    glommio::executor()
        .spawn_blocking(move || {
            let disk_bytes = closed.bytes.saturating_add(sidecar.len() as u64);
            std::fs::write(sidecar_path, sidecar)?;
            if let Some(index) = index {
                tell_index(index.closed(&closed, disk_bytes), &closed.file);
            }
            std::io::Result::Ok(())
        })
        .await?;
    tracing::info!(file = %info.file, duration_ms = info.duration_ms, bytes = pos, "recording closed");
    Ok(info)
}

/// An index that could not be written is put right by its next check against the directory.
fn tell_index(result: std::io::Result<()>, file: &str) {
    if let Err(error) = result {
        tracing::warn!(%file, %error, "recordings index not written (its next check puts it right)");
    }
}

/// Boxes larger than this are not recovered (nothing gmv writes is that large).
const RECOVER_BOX_BYTES_MAX: u64 = 64 << 20;

/// Finishes recordings a crash left without a sidecar: cuts a half-written fragment off the
/// end and writes the sidecar from the fragments that are whole. Run at start-up, before any
/// recorder opens a file. Returns how many were recovered.
pub fn recover(data_dir: &Path) -> usize {
    let dir = records_dir(data_dir);
    let Ok(entries) = std::fs::read_dir(&dir) else { return 0 };
    let mut recovered = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !valid_file_name(&name) || dir.join(name.replace(".mp4", ".json")).exists() {
            continue;
        }
        match recover_file(&dir.join(&name)) {
            Ok(info) => {
                tracing::warn!(file = %name, duration_ms = info.duration_ms, frames = info.frames, "recovered an unfinished recording");
                recovered += 1;
            }
            Err(error) => tracing::error!(file = %name, %error, "cannot recover recording"),
        }
    }
    recovered
}

fn recover_file(path: &Path) -> std::io::Result<RecordInfo> {
    let whole = scan_and_cut(path)?;
    let invalid = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let file = path.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    let (stream_id, start_unix_ms) = name_parts(&file).ok_or_else(|| invalid("name"))?;
    let info = RecordInfo {
        file: file.clone(),
        stream_id: stream_id.to_string(),
        start_unix_ms,
        duration_ms: whole.end_90k / 90,
        frames: whole.frames,
        bytes: whole.bytes,
        ..Default::default()
    };
    std::fs::write(path.with_extension("json"), serde_json::to_vec_pretty(&info).map_err(std::io::Error::other)?)?;
    Ok(info)
}

/// What a recording file holds that is whole: where a continuation goes on writing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WholeFile {
    /// Bytes of the init segment and the whole fragments (the file is cut there).
    pub bytes: u64,
    pub frames: u64,
    /// Where the last whole fragment ends, in video time (90 kHz).
    pub end_90k: u64,
    pub fragments: u32,
    /// The video parameter sets its init segment holds (a continuation must match them).
    pub video_params: Vec<Vec<u8>>,
    pub has_audio: bool,
}

/// Whether a file's parameter sets are the ones seen now (a continuation needs the same).
fn same_params(file: &[Vec<u8>], now: &ParamSets) -> bool {
    let mut now: Vec<&[u8]> = [&now.vps, &now.sps, &now.pps].into_iter().flatten().map(|b| b.as_ref()).collect();
    let mut file: Vec<&[u8]> = file.iter().map(Vec::as_slice).collect();
    now.sort_unstable();
    file.sort_unstable();
    now == file
}

/// Reads a recording a crash may have left half-written and cuts off what is not whole.
pub fn scan_and_cut(path: &Path) -> std::io::Result<WholeFile> {
    use crate::proto::mp4_read::{parse_moof, parse_moov};
    use std::io::{Read, Seek, SeekFrom};
    let invalid = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
    let len = f.metadata()?.len();
    let (mut pos, mut good_end) = (0u64, 0u64);
    let (mut init, mut frames, mut ticks, mut fragments) = (None, 0u64, 0u64, 0u32);
    let mut pending_moof: Option<(u64, u64)> = None; // (samples, ticks) awaiting its mdat
    while pos + 8 <= len {
        let mut header = [0u8; 8];
        f.seek(SeekFrom::Start(pos))?;
        f.read_exact(&mut header)?;
        let size = u64::from(u32::from_be_bytes([header[0], header[1], header[2], header[3]]));
        if size < 8 || pos + size > len || (size > RECOVER_BOX_BYTES_MAX && &header[4..8] != b"mdat") {
            break; // the half-written tail
        }
        match &header[4..8] {
            b"moov" | b"moof" => {
                let mut body = vec![0u8; (size - 8) as usize];
                f.read_exact(&mut body)?;
                if &header[4..8] == b"moov" {
                    init = Some(parse_moov(&body).map_err(|e| invalid(&format!("{e:?}")))?);
                    good_end = pos + size;
                } else if let Some(v) = init.as_ref().and_then(|i| i.video.as_ref()) {
                    let runs = parse_moof(&body).map_err(|e| invalid(&format!("{e:?}")))?;
                    let run = runs.iter().find(|r| r.track_id == v.track_id);
                    let samples = run.map_or(0, |r| r.samples.len() as u64);
                    let run_ticks: u64 = run.map_or(0, |r| r.samples.iter().map(|s| u64::from(s.duration)).sum());
                    pending_moof = Some((samples, run_ticks * 90_000 / u64::from(v.timescale.max(1))));
                }
            }
            b"mdat" => {
                if let Some((samples, t)) = pending_moof.take() {
                    frames += samples;
                    ticks += t;
                    fragments += 1;
                    good_end = pos + size;
                }
            }
            _ => {}
        }
        pos += size;
    }
    let Some(init) = init else { return Err(invalid("no init segment")) };
    let Some(video) = init.video else { return Err(invalid("no video track")) };
    if good_end < len {
        f.set_len(good_end)?;
    }
    Ok(WholeFile { bytes: good_end, frames, end_90k: ticks, fragments, video_params: video.params, has_audio: init.audio.is_some() })
}

/// Directory entries a listing reads at most (see `retention::RETENTION_SCAN_ENTRIES_MAX`).
pub const RECORDS_SCAN_ENTRIES_MAX: usize = super::retention::RETENTION_SCAN_ENTRIES_MAX;

/// Which recordings a listing wants: of a stream, of a device's channel, overlapping a time
/// range (unix ms); None: any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordFilter {
    pub stream_id: Option<String>,
    pub channel_id: Option<String>,
    pub from_ms: Option<u64>,
    pub to_ms: Option<u64>,
}

impl RecordFilter {
    /// Whether `r` is one of the recordings wanted (its times as told: saturating, a file a
    /// media node described may say anything).
    pub fn wants(&self, r: &RecordInfo) -> bool {
        self.stream_id.as_deref().is_none_or(|s| r.stream_id == s)
            && self.channel_id.as_deref().is_none_or(|c| r.channel_id.as_deref() == Some(c))
            && self.from_ms.is_none_or(|f| r.start_unix_ms.saturating_add(r.duration_ms) >= f)
            && self.to_ms.is_none_or(|t| r.start_unix_ms <= t)
    }
}

/// The recordings that `filter` wants, oldest first, at most `limit` (the oldest);
/// `in_progress` ones have no sidecar yet. Asked of the index; when it cannot answer (a
/// database that cannot be opened), of the directory.
pub fn list(index: &RecordIndex, filter: &RecordFilter, limit: usize) -> Vec<(RecordInfo, bool)> {
    match index.list(filter, limit) {
        Ok(listed) => listed,
        Err(error) => {
            tracing::warn!(%error, "recordings index unreadable: the directory is read instead");
            list_by_scan(index.records(), filter, limit)
        }
    }
}

/// What `list` answers, read from the directory `dir` and the sidecars (what every listing
/// did before the index; `benches/record_index.rs` compares the two). Filtered before the
/// limit, so a listing of one channel is whole however many files the others have.
pub fn list_by_scan(dir: &Path, filter: &RecordFilter, limit: usize) -> Vec<(RecordInfo, bool)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out = Vec::new();
    for e in entries.flatten().take(RECORDS_SCAN_ENTRIES_MAX) {
        let name = e.file_name().to_string_lossy().to_string();
        let Some((stream_id, start_unix_ms)) = name_parts(&name) else { continue };
        // What the name tells is checked before the sidecar is read.
        if filter.stream_id.as_deref().is_some_and(|s| s != stream_id) || filter.to_ms.is_some_and(|t| start_unix_ms > t) {
            continue;
        }
        let (info, in_progress) = match read_sidecar(&dir.join(&name)) {
            Some(info) => (info, false),
            None => {
                let bytes = e.metadata().map_or(0, |m| m.len());
                (RecordInfo { file: name.clone(), stream_id: stream_id.into(), start_unix_ms, bytes, ..Default::default() }, true)
            }
        };
        // A file being written has no channel or end yet: it is listed unless they rule it out.
        if in_progress && filter.channel_id.is_none() || filter.wants(&info) {
            out.push((info, in_progress));
        }
    }
    out.sort_by_key(|(i, _)| i.start_unix_ms);
    out.truncate(limit);
    out
}

/// Deletes a closed recording (its file, sidecar and row in the index).
pub fn delete(index: &RecordIndex, file: &str) -> Result<RecordInfo, DeleteError> {
    if !valid_file_name(file) {
        return Err(DeleteError::NotFound);
    }
    let dir = index.records();
    let stem = file.trim_end_matches(".mp4");
    let sidecar = dir.join(format!("{stem}.json"));
    let info = match std::fs::read(&sidecar) {
        Ok(b) => serde_json::from_slice::<RecordInfo>(&b).map_err(|e| DeleteError::Io(e.to_string()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(if dir.join(file).exists() { DeleteError::BeingWritten } else { DeleteError::NotFound });
        }
        Err(e) => return Err(DeleteError::Io(e.to_string())),
    };
    std::fs::remove_file(dir.join(file)).map_err(|e| DeleteError::Io(e.to_string()))?;
    let _ = std::fs::remove_file(sidecar);
    tell_index(index.removed(file), file);
    Ok(info)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteError {
    NotFound,
    /// No sidecar yet: the file is being written.
    BeingWritten,
    Io(String),
}

/// `{stream_id}_{start_unix_ms}.mp4`: the stream and start a recording's file name tells (a
/// start that is no number reads as 0).
pub(crate) fn name_parts(file: &str) -> Option<(&str, u64)> {
    let (stream_id, start) = file.strip_suffix(".mp4")?.split_once('_')?;
    Some((stream_id, start.parse().unwrap_or(0)))
}

/// The sidecar of the recording file at `mp4` (`.json` beside it), when it is there and reads.
pub(crate) fn read_sidecar(mp4: &Path) -> Option<RecordInfo> {
    std::fs::read(mp4.with_extension("json")).ok().and_then(|b| serde_json::from_slice::<RecordInfo>(&b).ok())
}

/// A recording file name as gmv makes them: `{digits}_{digits}.mp4` (no paths).
pub fn valid_file_name(name: &str) -> bool {
    name.strip_suffix(".mp4")
        .and_then(|s| s.split_once('_'))
        .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty() && a.bytes().all(|c| c.is_ascii_digit()) && b.bytes().all(|c| c.is_ascii_digit()))
}

/// A closed recording of 3 bytes and its sidecar, planted in `records` (tests).
#[cfg(test)]
pub(crate) fn plant_closed(records: &Path, stream: &str, start: u64, channel: Option<&str>) -> RecordInfo {
    let info = RecordInfo {
        file: format!("{stream}_{start}.mp4"),
        stream_id: stream.into(),
        start_unix_ms: start,
        duration_ms: 1000,
        frames: 25,
        bytes: 3,
        channel_id: channel.map(str::to_string),
        ..Default::default()
    };
    std::fs::create_dir_all(records).unwrap();
    std::fs::write(records.join(&info.file), b"mp4").unwrap();
    std::fs::write(records.join(format!("{stream}_{start}.json")), serde_json::to_vec(&info).unwrap()).unwrap();
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_filters_before_its_limit_and_a_delete_spares_what_is_being_written() {
        let data_dir = std::env::temp_dir().join(format!("gmv-record-list-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        let dir = records_dir(&data_dir);
        // Many files of one stream, few of another: a listing of the few is whole.
        for n in 0..40 {
            plant_closed(&dir, "0100000001", 1_000 + n, None);
        }
        for n in 0..3 {
            plant_closed(&dir, "0100000002", 5_000 + n * 2_000, Some("34020000001310000001"));
        }
        std::fs::write(dir.join("0100000002_99000.mp4"), b"being written").unwrap();
        let index = RecordIndex::for_data_dir(&data_dir);
        index.check().unwrap();
        // The index and the directory (the fallback) answer alike.
        let by_index = |f: &RecordFilter, limit| index.list(f, limit).unwrap();
        let by_scan = |f: &RecordFilter, limit| list_by_scan(&dir, f, limit);
        type Lister<'a> = &'a dyn Fn(&RecordFilter, usize) -> Vec<(RecordInfo, bool)>;
        let listers: [Lister; 2] = [&by_index, &by_scan];
        for (n, lister) in listers.iter().enumerate() {
            let of = |f: RecordFilter, limit| lister(&f, limit).into_iter().map(|(r, p)| (r.start_unix_ms, p)).collect::<Vec<_>>();
            let stream = |s: &str| RecordFilter { stream_id: Some(s.into()), ..Default::default() };
            assert_eq!(of(stream("0100000002"), 10), vec![(5_000, false), (7_000, false), (9_000, false), (99_000, true)], "lister {n}");
            assert_eq!(lister(&stream("0100000002"), 10)[3].0.bytes, 13, "a file being written: its size now");
            assert_eq!(of(stream("0100000002"), 2), vec![(5_000, false), (7_000, false)], "the oldest, the limit after the filter");
            let channel = RecordFilter { channel_id: Some("34020000001310000001".into()), from_ms: Some(7_500), ..Default::default() };
            assert_eq!(of(channel, 10), vec![(7_000, false), (9_000, false)], "overlapping the range, of the channel");
            assert_eq!(lister(&RecordFilter { to_ms: Some(1_004), ..Default::default() }, 100).len(), 5);
            assert_eq!(lister(&RecordFilter::default(), 100_000).len(), 44);
        }

        assert_eq!(delete(&index, "0100000002_99000.mp4"), Err(DeleteError::BeingWritten));
        assert_eq!(delete(&index, "../0100000002_5000.mp4"), Err(DeleteError::NotFound));
        assert_eq!(delete(&index, "0100000002_5000.mp4").map(|i| i.start_unix_ms), Ok(5_000));
        assert!(!dir.join("0100000002_5000.mp4").exists() && !dir.join("0100000002_5000.json").exists());
        assert_eq!(delete(&index, "0100000002_5000.mp4"), Err(DeleteError::NotFound));
        assert_eq!(list(&index, &RecordFilter::default(), 100_000).len(), 43, "its row went with it");
        std::fs::remove_dir_all(&data_dir).unwrap();
    }

    #[test]
    fn file_names_cannot_escape_the_directory() {
        assert!(super::valid_file_name("0100000001_1795000000000.mp4"));
        for bad in ["../etc/passwd", "a_1.mp4", "1_2.mp4/..", "_1.mp4", "1_.mp4", "1_2.json", "1/2_3.mp4"] {
            assert!(!super::valid_file_name(bad), "{bad}");
        }
    }
}
