//! Downloads of device recordings (GB28181 `s=Download`): a stream written to one MP4 under
//! `data_dir/downloads/` by its shard, watched here until the media covers the range or the
//! device says the file ended (MediaStatus 121). A device that hangs up or stops sending is
//! invited again from where the file stopped, into the same stream and file.

use super::Control;
use crate::proto::sip::endpoint::{EndReason, MediaTransport, PlayError, PlayKind};
use crate::shard::msg::PlaybackChange;
use serde::Serialize;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Downloads kept (running and finished); a new one past this removes the oldest finished
/// entry (its file stays), or is refused when all are running.
pub const DOWNLOADS_MAX: usize = 256;
/// New INVITEs for one download after its device dropped.
pub const DOWNLOAD_RESUMES_MAX: u32 = 5;
/// How often a running download's stream is looked at.
pub const DOWNLOAD_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// No media for this long: the device dropped the download.
pub const DOWNLOAD_STALL: Duration = Duration::from_secs(15);
/// Wait between failed resume attempts.
pub const DOWNLOAD_RESUME_RETRY: Duration = Duration::from_secs(2);
/// Media within this of the range's end is the end (the last frame's own length).
pub const DOWNLOAD_END_SLACK_MS: u64 = 100;
/// A device that stops within this of the end has sent all it has (it stops at the last
/// keyframe, or its file ends early): complete, not resumed.
pub const DOWNLOAD_NEAR_END_MS: u64 = 2_000;
/// How long the file's last bytes may take to reach the disk after the stream closes.
pub const DOWNLOAD_FLUSH_WAIT: Duration = Duration::from_secs(10);
/// The fastest `a=downloadspeed` asked of a device.
pub const DOWNLOAD_SPEED_MAX: u32 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DownloadState {
    Running,
    /// The device dropped; a new INVITE is on its way.
    Resuming,
    /// The media is all there; the file is being closed.
    Finishing,
    Complete,
    Failed,
    Cancelled,
}

impl DownloadState {
    fn active(self) -> bool {
        matches!(self, DownloadState::Running | DownloadState::Resuming | DownloadState::Finishing)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Download {
    /// Also the file's name without `.mp4`.
    pub id: String,
    pub device_id: String,
    pub channel_id: String,
    /// The range asked (unix seconds).
    pub start: u64,
    pub end: u64,
    pub speed: u32,
    pub state: DownloadState,
    /// Media time received (never less than before).
    pub media_ms: u64,
    pub bytes: u64,
    /// Media received over the range; 1 only once complete.
    pub progress: f64,
    pub file: String,
    pub resumes: u32,
    pub error: Option<String>,
    /// Unix seconds.
    pub created_at: u64,
    /// Where in the range the media has reached (ms from its start): the resume point plus
    /// what the stream covered since.
    #[serde(skip)]
    position_ms: u64,
    /// The stream's covered media when the device was last invited, and the range offset that
    /// INVITE started from.
    #[serde(skip)]
    invited_at: (u64, u64),
    #[serde(skip)]
    ssrc: u32,
    #[serde(skip)]
    port: u16,
    #[serde(skip)]
    transport: MediaTransport,
    /// Why its SIP session ended, until the watcher acts on it.
    #[serde(skip)]
    ended: Option<EndReason>,
}

impl Download {
    fn range_ms(&self) -> u64 {
        (self.end - self.start) * 1000
    }

    fn update_progress(&mut self) {
        self.progress = match self.state {
            DownloadState::Complete => 1.0,
            // Just short of 1 until the file is closed: a client waiting for 1 gets a whole file.
            _ => (self.media_ms as f64 / self.range_ms().max(1) as f64).min(0.999),
        };
    }
}

#[derive(Debug, Default)]
pub struct Downloads {
    entries: RefCell<BTreeMap<String, Download>>,
}

impl Downloads {
    pub fn list(&self) -> Vec<Download> {
        self.entries.borrow().values().cloned().collect()
    }

    pub fn get(&self, id: &str) -> Option<Download> {
        self.entries.borrow().get(id).cloned()
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut Download)) -> Option<Download> {
        let mut entries = self.entries.borrow_mut();
        let d = entries.get_mut(id)?;
        f(d);
        d.update_progress();
        Some(d.clone())
    }

    /// A SIP session ended; true when its stream is a download's to keep (the watcher then
    /// resumes or finishes it), false when the stream may close.
    pub fn session_ended(&self, ssrc: u32, reason: EndReason) -> bool {
        let mut entries = self.entries.borrow_mut();
        let Some(d) = entries.values_mut().find(|d| d.ssrc == ssrc && d.state.active()) else { return false };
        d.ended = Some(reason);
        true
    }

    /// A failed INVITE for this stream: kept while the download is resuming.
    pub fn keeps_stream(&self, ssrc: u32) -> bool {
        self.entries.borrow().values().any(|d| d.ssrc == ssrc && d.state == DownloadState::Resuming)
    }

    /// Room for one more: drops the oldest finished entry when full.
    fn make_room(&self) -> bool {
        let mut entries = self.entries.borrow_mut();
        if entries.len() < DOWNLOADS_MAX {
            return true;
        }
        let oldest = entries.values().filter(|d| !d.state.active()).min_by_key(|d| d.created_at).map(|d| d.id.clone());
        oldest.is_some_and(|id| entries.remove(&id).is_some())
    }
}

/// What a download request asks.
#[derive(Debug, Clone, Copy)]
pub struct DownloadRequest {
    pub start: u64,
    pub end: u64,
    pub speed: u32,
    pub transport: MediaTransport,
}

impl Control {
    /// Opens the download's stream, INVITEs the device and watches the download until done.
    pub async fn start_download(self: &Rc<Self>, device_id: &str, channel_id: &str, req: DownloadRequest) -> Result<Download, PlayError> {
        if !self.downloads.make_room() {
            return Err(PlayError::Busy);
        }
        let kind = PlayKind::Download { start: req.start, end: req.end, speed: req.speed };
        let created_ms = crate::shard::unix_ms();
        let (ssrc, port) = self.open_new_stream(kind, channel_id, created_ms).await?;
        let id = download_stem(ssrc, created_ms);
        let d = Download {
            id: id.clone(),
            device_id: device_id.to_string(),
            channel_id: channel_id.to_string(),
            start: req.start,
            end: req.end,
            speed: req.speed,
            state: DownloadState::Running,
            media_ms: 0,
            position_ms: 0,
            invited_at: (0, 0),
            bytes: 0,
            progress: 0.0,
            file: format!("{id}.mp4"),
            resumes: 0,
            error: None,
            created_at: created_ms / 1000,
            ssrc,
            port,
            transport: req.transport,
            ended: None,
        };
        self.downloads.entries.borrow_mut().insert(id.clone(), d);
        if let Err(error) = self.play_kind(device_id, channel_id, req.transport, kind, Some((ssrc, port))).await {
            // The failed play closed the stream.
            self.downloads.entries.borrow_mut().remove(&id);
            return Err(error);
        }
        tracing::info!(device_id, channel_id, download = %id, start = req.start, end = req.end, speed = req.speed, "download started");
        glommio::spawn_local(self.clone().watch_download(id.clone())).detach();
        Ok(self.downloads.get(&id).expect("just added"))
    }

    /// Stops a running download (its file stays, as far as it got); false if none runs.
    pub fn cancel_download(self: &Rc<Self>, id: &str) -> bool {
        if !self.downloads.get(id).is_some_and(|d| d.state.active()) {
            return false;
        }
        let Some(d) = self.downloads.update(id, |d| d.state = DownloadState::Cancelled) else { return false };
        if !self.stop_session(d.ssrc) {
            self.close_stream_later(d.ssrc);
        }
        true
    }

    /// Forgets a download that is not running and removes its file; false when there is none
    /// or it still runs.
    pub async fn remove_download(self: &Rc<Self>, id: &str) -> bool {
        let removable = self.downloads.get(id).is_some_and(|d| !d.state.active());
        if !removable || self.downloads.entries.borrow_mut().remove(id).is_none() {
            return false;
        }
        let dir = crate::shard::record::downloads_dir(&self.shard.config.data_dir);
        let stem = id.to_string();
        let _ = glommio::executor()
            .spawn_blocking(move || {
                let _ = std::fs::remove_file(dir.join(format!("{stem}.mp4")));
                let _ = std::fs::remove_file(dir.join(format!("{stem}.json")));
            })
            .await;
        true
    }

    /// Follows one download: progress from its stream, the end, resumes after a drop.
    async fn watch_download(self: Rc<Self>, id: String) {
        loop {
            glommio::timer::sleep(DOWNLOAD_POLL_INTERVAL).await;
            let Some(d) = self.downloads.get(&id) else { return };
            if d.state != DownloadState::Running {
                return;
            }
            let info = self.shard.stream_info(d.ssrc).await;
            let Some(info) = info else {
                self.downloads.update(&id, |d| d.state = DownloadState::Failed);
                tracing::warn!(download = %id, "download stream gone");
                return;
            };
            let Some(d) = self.downloads.update(&id, |d| {
                let (covered_then, offset) = d.invited_at;
                d.position_ms = offset + info.media_ms.saturating_sub(covered_then);
                d.media_ms = d.media_ms.max(d.position_ms).min(d.range_ms());
                d.bytes = info.record_bytes;
            }) else {
                return;
            };
            let at_end = d.position_ms + DOWNLOAD_END_SLACK_MS >= d.range_ms();
            let near_end = d.position_ms + DOWNLOAD_NEAR_END_MS >= d.range_ms();
            match d.ended {
                Some(EndReason::EndOfFile) => return self.finish_download(&id, None).await,
                _ if at_end => return self.finish_download(&id, None).await,
                Some(_) if near_end => return self.finish_download(&id, None).await,
                Some(reason) => {
                    tracing::warn!(download = %id, reason = reason.as_str(), position_ms = d.position_ms, "download dropped by the device; resuming");
                    if !self.resume_download(&id).await {
                        return;
                    }
                }
                None => {
                    let quiet = info.last_packet_ms_ago.unwrap_or(info.age_ms);
                    if quiet > DOWNLOAD_STALL.as_millis() as u64 {
                        tracing::warn!(download = %id, quiet_ms = quiet, "download stalled; inviting the device again");
                        self.downloads.update(&id, |d| d.ended = Some(EndReason::StreamGone));
                        self.stop_session(d.ssrc);
                    }
                }
            }
        }
    }

    /// INVITEs the device again from where the media stopped, into the same stream; false
    /// when the download failed for good.
    async fn resume_download(self: &Rc<Self>, id: &str) -> bool {
        let Some(d) = self.downloads.get(id) else { return false };
        // The stream drops the GOP not yet written; the device starts again from the whole second
        // (SDP t=) before it: anything sent twice is the part of a second before that GOP.
        self.shard.playback_change(d.ssrc, PlaybackChange::Resumed).await;
        let covered = self.shard.stream_info(d.ssrc).await.map_or(0, |i| i.media_ms);
        let (covered_then, offset) = d.invited_at;
        let position_ms = offset + covered.saturating_sub(covered_then);
        let offset_s = (position_ms / 1000).min(d.end - d.start - 1);
        loop {
            let Some(d) = self.downloads.update(id, |d| {
                d.state = DownloadState::Resuming;
                d.resumes += 1;
                d.ended = None;
            }) else {
                return false;
            };
            if d.resumes > DOWNLOAD_RESUMES_MAX {
                self.finish_download(id, Some(format!("device dropped the download {} times", d.resumes - 1))).await;
                return false;
            }
            self.downloads.update(id, |d| d.invited_at = (covered, offset_s * 1000));
            let start = d.start + offset_s;
            let kind = PlayKind::Download { start, end: d.end, speed: d.speed };
            match self.play_kind(&d.device_id, &d.channel_id, d.transport, kind, Some((d.ssrc, d.port))).await {
                Ok(_) => {
                    tracing::info!(download = %id, start, resumes = d.resumes, "download resumed");
                    return self.downloads.update(id, |d| d.state = DownloadState::Running).is_some();
                }
                Err(error) => {
                    tracing::warn!(download = %id, ?error, "download resume failed");
                    glommio::timer::sleep(DOWNLOAD_RESUME_RETRY).await;
                }
            }
        }
    }

    /// Ends the session and closes the stream (the shard closes the file), then waits for the
    /// file to be on disk. `error`: why it failed; None: it is complete.
    async fn finish_download(self: &Rc<Self>, id: &str, error: Option<String>) {
        let Some(d) = self.downloads.update(id, |d| d.state = DownloadState::Finishing) else { return };
        self.stop_session(d.ssrc);
        self.shard.close_stream(d.ssrc).await;
        let sidecar = crate::shard::record::downloads_dir(&self.shard.config.data_dir).join(format!("{id}.json"));
        let deadline = Instant::now() + DOWNLOAD_FLUSH_WAIT;
        let mut written = None;
        while written.is_none() && Instant::now() < deadline {
            let path = sidecar.clone();
            written = glommio::executor()
                .spawn_blocking(move || std::fs::read(path).ok().and_then(|b| serde_json::from_slice::<crate::shard::record::RecordInfo>(&b).ok()))
                .await;
            if written.is_none() {
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        }
        let error = error.or_else(|| written.is_none().then(|| "no media was written".to_string()));
        let done = self.downloads.update(id, |d| {
            if let Some(info) = &written {
                d.bytes = info.bytes;
            }
            d.state = if error.is_some() { DownloadState::Failed } else { DownloadState::Complete };
            d.error = error;
        });
        if let Some(d) = done {
            tracing::info!(download = %id, state = ?d.state, media_ms = d.media_ms, bytes = d.bytes, error = d.error, "download finished");
            self.events.publish("download_finished", Some(&d.device_id), Some(&d.channel_id), serde_json::json!(d));
        }
    }
}

/// A download's id and file name: the shape of gmv's recording names, so the same checks hold.
fn download_stem(ssrc: u32, created_ms: u64) -> String {
    format!("{}_{created_ms}", crate::proto::ssrc::stream_id(ssrc))
}

pub(super) fn history_spec(ssrc: u32, kind: PlayKind, created_ms: u64) -> Option<crate::shard::msg::History> {
    use crate::shard::msg::History;
    match kind {
        PlayKind::Live => None,
        PlayKind::Playback { .. } => Some(History::Playback),
        PlayKind::Download { .. } => Some(History::Download { stem: download_stem(ssrc, created_ms) }),
    }
}
