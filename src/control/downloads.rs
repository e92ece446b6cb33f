//! Downloads of device recordings (GB28181 `s=Download`): a stream written to one MP4 under
//! `data_dir/downloads/` by its shard, watched here until the media covers the range or the
//! device says the file ended (MediaStatus 121). A device that hangs up or stops sending is
//! invited again from where the file stopped, into the same stream and file.
//!
//! On a control (`node.role control`) the stream is placed on a media node like any other:
//! the node records it to MP4 from its first keyframe (`openRtpServer` with gmv's
//! `enable_mp4=1`; a ZLMediaKit node by `on_publish`'s `enable_mp4`; else `startRecord` once
//! media shows), progress is its `getMediaInfo`, the file is the one its `on_record_mp4` names,
//! fetched from the node with this control's token (the node asks `on_http_access`). Removing
//! such a download forgets it here; the file stays on the node.
//!
//! Downloads are saved (`data_dir/downloads/downloads.json`): one that was running when gmv
//! stopped (a crash, `kill -9`) comes back `interrupted`, its file cut to its whole fragments,
//! and goes on into the same file, from where that ends, once its device is online again.

use super::Control;
use super::node_call::NodeCall;
use crate::proto::sip::endpoint::{EndReason, MediaTransport, PlayError, PlayKind};
use crate::shard::msg::PlaybackChange;
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
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
/// How often changed downloads are saved, and interrupted ones looked at for their device.
pub const DOWNLOADS_SAVE_INTERVAL: Duration = Duration::from_secs(1);
// A download's progress is saved several times before it could count as stalled.
const _: () = assert!(DOWNLOADS_SAVE_INTERVAL.as_millis() * 4 <= DOWNLOAD_STALL.as_millis());

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DownloadState {
    Running,
    /// gmv stopped while it ran: its file holds what came until then; it goes on once the
    /// device is online.
    Interrupted,
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

#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// The media node that writes it (role control); None: this process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// On a node: its media address (INVITEs offer it) and the file as `on_record_mp4` said.
    #[serde(skip)]
    media_ip: Option<String>,
    #[serde(skip)]
    pub node_file: Option<NodeFile>,
    /// On a node: the media time last seen and when it last grew (its stall clock).
    #[serde(skip)]
    grown_at: (u64, Option<Instant>),
    /// Where in the range the media has reached (ms from its start): the resume point plus
    /// what the stream covered since.
    #[serde(default)]
    position_ms: u64,
    /// The stream's covered media when the device was last invited, and the range offset that
    /// INVITE started from.
    #[serde(skip)]
    invited_at: (u64, u64),
    #[serde(skip)]
    ssrc: u32,
    #[serde(skip)]
    port: u16,
    transport: MediaTransport,
    /// Why its SIP session ended, until the watcher acts on it.
    #[serde(skip)]
    ended: Option<EndReason>,
    /// Interrupted: what its file holds whole, to go on from.
    #[serde(skip)]
    whole: Option<crate::shard::record::WholeFile>,
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

/// A recording a media node closed (`on_record_mp4`).
#[derive(Debug, Clone, Default)]
pub struct NodeFile {
    pub name: String,
    /// Its path on the node's HTTP server (`records/...`).
    pub url: String,
    pub bytes: u64,
}

#[derive(Debug, Default)]
pub struct Downloads {
    entries: RefCell<BTreeMap<String, Download>>,
    /// Changed since last saved.
    dirty: Cell<bool>,
}

/// How far a download's stream has come, wherever it is written.
struct Progress {
    media_ms: u64,
    bytes: u64,
    /// Since media last came.
    quiet_ms: u64,
    /// The node records it (always true here).
    recording: bool,
    /// Why its recording stopped on its own (a full disk; a continued file whose picture
    /// format changed).
    error: Option<String>,
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
        self.dirty.set(true);
        Some(d.clone())
    }

    fn insert(&self, d: Download) {
        self.entries.borrow_mut().insert(d.id.clone(), d);
        self.dirty.set(true);
    }

    fn remove(&self, id: &str) -> bool {
        self.dirty.set(true);
        self.entries.borrow_mut().remove(id).is_some()
    }

    /// The downloads as saved, when they changed since the last call.
    #[must_use = "taken changes are not offered again"]
    fn take_changed(&self) -> Option<Vec<Download>> {
        self.dirty.replace(false).then(|| self.list())
    }

    /// Downloads saved by an earlier run (blocking IO: the file, and each interrupted one's
    /// MP4, cut to its whole fragments). One that was running is `interrupted`.
    pub fn load(data_dir: &std::path::Path) -> Downloads {
        let dir = crate::shard::record::downloads_dir(data_dir);
        let saved: Vec<Download> = match std::fs::read(dir.join(SAVED_FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
                tracing::warn!(%error, "the saved downloads cannot be read; starting without them");
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        let entries = saved.into_iter().take(DOWNLOADS_MAX).map(|d| (d.id.clone(), interrupted(&dir, d))).collect();
        Downloads { entries: RefCell::new(entries), dirty: Cell::new(true) }
    }

    /// A SIP session ended; true when its stream is a download's to keep (the watcher then
    /// resumes or finishes it), false when the stream may close.
    pub fn session_ended(&self, ssrc: u32, reason: EndReason) -> bool {
        let mut entries = self.entries.borrow_mut();
        let Some(d) = entries.values_mut().find(|d| d.ssrc == ssrc && d.state.active()) else { return false };
        d.ended = Some(reason);
        true
    }

    /// Whether stream `ssrc` is a running download's (a node records it from its first packets).
    pub fn is_download(&self, ssrc: u32) -> bool {
        self.entries.borrow().values().any(|d| d.ssrc == ssrc && d.state.active())
    }

    /// `on_record_mp4` from `node` for `stream_id`: the file of the download placed there.
    pub fn recorded_on_node(&self, node: &str, stream_id: &str, file: NodeFile) {
        let Some(ssrc) = crate::proto::ssrc::parse_stream_id(stream_id) else { return };
        let mut entries = self.entries.borrow_mut();
        if let Some(d) = entries.values_mut().find(|d| d.ssrc == ssrc && d.node.as_deref() == Some(node) && d.state.active()) {
            tracing::info!(download = %d.id, node, file = %file.name, bytes = file.bytes, "download file closed on its media node");
            d.node_file = Some(file);
        }
    }

    /// A failed INVITE for this stream: kept while the download is resuming.
    pub fn keeps_stream(&self, ssrc: u32) -> bool {
        self.entries.borrow().values().any(|d| d.ssrc == ssrc && d.state == DownloadState::Resuming)
    }

    /// Room for one more: drops the oldest finished entry when full.
    fn make_room(&self) -> bool {
        if self.entries.borrow().len() < DOWNLOADS_MAX {
            return true;
        }
        let oldest = self.entries.borrow().values().filter(|d| !d.state.active()).min_by_key(|d| d.created_at).map(|d| d.id.clone());
        oldest.is_some_and(|id| self.remove(&id))
    }
}

/// The saved downloads, in `downloads_dir`.
const SAVED_FILE: &str = "downloads.json";

/// A saved download as this run takes it: one that was under way when gmv stopped is
/// interrupted, its file cut to what is whole (or failed, when there is no usable file).
fn interrupted(dir: &std::path::Path, mut d: Download) -> Download {
    if !d.state.active() {
        return d;
    }
    if d.node.is_some() {
        d.state = DownloadState::Failed;
        d.error = Some("interrupted by a restart of this control; the media node's file is not continued".into());
        return d;
    }
    // The saved list is read back, not trusted: only a file name gmv makes is touched.
    if !crate::shard::record::valid_file_name(&d.file) {
        d.state = DownloadState::Failed;
        d.error = Some("interrupted by a restart; its saved file name is not one gmv makes".into());
        return d;
    }
    match crate::shard::record::scan_and_cut(&dir.join(&d.file)) {
        Ok(whole) => {
            tracing::warn!(download = %d.id, bytes = whole.bytes, media_ms = whole.end_90k / 90, "download interrupted by a restart; it goes on once its device is online");
            d.state = DownloadState::Interrupted;
            d.bytes = whole.bytes;
            d.media_ms = (whole.end_90k / 90).min(d.range_ms());
            d.position_ms = d.media_ms;
            d.error = Some("interrupted by a restart; goes on once the device is online".into());
            d.whole = Some(whole);
        }
        Err(error) => {
            tracing::warn!(download = %d.id, %error, "download interrupted by a restart; its file cannot be continued");
            d.state = DownloadState::Failed;
            d.error = Some(format!("interrupted by a restart; its file cannot be continued: {error}"));
        }
    }
    d.update_progress();
    d
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
        let source = self.device_source(device_id);
        let history = |ssrc| history_spec(ssrc, kind, created_ms);
        let super::media::Opened { ssrc, port, media_ip, node } = self.open_media_stream(kind, req.transport, channel_id, history, source).await?;
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
            node: node.clone(),
            media_ip: media_ip.clone(),
            node_file: None,
            grown_at: (0, Some(Instant::now())),
            ssrc,
            port,
            transport: req.transport,
            ended: None,
            whole: None,
        };
        self.downloads.insert(d);
        // The node's own check for a stream without packets stays off: this control tells a
        // stalled download itself, and a resume must find the stream still there.
        if let Some(node) = &node {
            self.tell_node(node, &NodeCall::PauseRtpCheck { ssrc }).await;
        }
        if let Err(error) = self.play_kind(device_id, channel_id, req.transport, kind, Some((ssrc, port, media_ip))).await {
            // The failed play closed the stream.
            self.downloads.remove(&id);
            return Err(error);
        }
        tracing::info!(device_id, channel_id, download = %id, start = req.start, end = req.end, speed = req.speed, "download started");
        glommio::spawn_local(self.clone().watch_download(id.clone())).detach();
        Ok(self.downloads.get(&id).expect("just added"))
    }

    /// Stops a running download (its file stays, as far as it got); false if none runs.
    pub fn cancel_download(self: &Rc<Self>, id: &str) -> bool {
        if self.downloads.get(id).is_some_and(|d| d.state == DownloadState::Interrupted) {
            return self.downloads.update(id, |d| d.state = DownloadState::Cancelled).is_some();
        }
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
        if !removable || !self.downloads.remove(id) {
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

    /// Forever: saves the downloads when they changed, and sends interrupted ones on once their
    /// device is online (only the active control: a standby has none running).
    pub(super) async fn downloads_loop(self: Rc<Self>) {
        let path = crate::shard::record::downloads_dir(&self.shard.config.data_dir).join(SAVED_FILE);
        loop {
            glommio::timer::sleep(DOWNLOADS_SAVE_INTERVAL).await;
            if let Some(all) = self.downloads.take_changed() {
                let path = path.clone();
                let saved = glommio::executor().spawn_blocking(move || save(&path, &all)).await;
                if let Err(error) = saved {
                    self.downloads.dirty.set(true);
                    self.warn_limited(|| tracing::warn!(%error, "cannot save the downloads; tried again in a second"));
                }
            }
            let waiting: Vec<Download> =
                self.downloads.entries.borrow().values().filter(|d| d.state == DownloadState::Interrupted && d.whole.is_some()).cloned().collect();
            for d in waiting {
                let online = self.endpoint().device(&d.device_id).is_some_and(|dev| self.endpoint().is_online(dev, Instant::now()));
                if online && self.is_active() {
                    self.continue_interrupted(d).await;
                }
            }
        }
    }

    /// An interrupted download goes on: a new stream writes on into its file, from where the
    /// file's whole fragments end (a whole second: the device starts from seconds).
    async fn continue_interrupted(self: &Rc<Self>, d: Download) {
        let Some(whole) = d.whole.clone() else { return };
        if d.resumes >= DOWNLOAD_RESUMES_MAX {
            return self.download_done(&d.id, Some(format!("interrupted, and could not go on after {} tries", d.resumes)));
        }
        let offset_s = (whole.end_90k / 90_000).min((d.end - d.start).saturating_sub(1));
        let kind = PlayKind::Download { start: d.start + offset_s, end: d.end, speed: d.speed };
        let (stem, source) = (d.id.clone(), self.device_source(&d.device_id));
        let history = |_| Some(crate::shard::msg::History::Download { stem: stem.clone(), resume: Some(whole.clone()) });
        let opened = self.open_media_stream(kind, d.transport, &d.channel_id, history, source).await;
        let (ssrc, port) = match opened {
            Ok(o) => (o.ssrc, o.port),
            Err(error) => {
                self.downloads.update(&d.id, |d| d.resumes += 1);
                return tracing::warn!(download = %d.id, ?error, "interrupted download: no stream to go on with");
            }
        };
        self.downloads.update(&d.id, |e| {
            e.state = DownloadState::Running;
            e.resumes += 1;
            e.ssrc = ssrc;
            e.port = port;
            e.invited_at = (0, offset_s * 1000);
            e.error = None;
            e.ended = None;
        });
        tracing::info!(download = %d.id, start = d.start + offset_s, from_bytes = whole.bytes, "interrupted download goes on into its file");
        if let Err(error) = self.play_kind(&d.device_id, &d.channel_id, d.transport, kind, Some((ssrc, port, None))).await {
            // The failed play closed the stream; the file is as it was: try again later.
            tracing::warn!(download = %d.id, ?error, "interrupted download: the device did not take it up again");
            self.downloads.update(&d.id, |e| {
                e.state = DownloadState::Interrupted;
                e.error = Some(format!("interrupted by a restart; going on failed ({error:?}), tried again"));
            });
            return;
        }
        self.downloads.update(&d.id, |e| e.whole = None);
        glommio::spawn_local(self.clone().watch_download(d.id.clone())).detach();
    }

    /// Follows one download: progress from its stream, the end, resumes after a drop.
    async fn watch_download(self: Rc<Self>, id: String) {
        loop {
            glommio::timer::sleep(DOWNLOAD_POLL_INTERVAL).await;
            let Some(d) = self.downloads.get(&id) else { return };
            if d.state != DownloadState::Running {
                return;
            }
            let Some(info) = self.download_progress(&d).await else {
                self.downloads.update(&id, |d| d.state = DownloadState::Failed);
                tracing::warn!(download = %id, "download stream gone");
                return;
            };
            if let Some(error) = info.error {
                return self.finish_download(&id, Some(format!("the file could not be written: {error}"))).await;
            }
            if !info.recording
                && info.media_ms > 0
                && let Some(node) = &d.node
            {
                // A node that posts no on_publish to this control records when asked.
                tracing::info!(download = %id, node, "asking the media node to record the download");
                self.tell_node(node, &NodeCall::StartRecord { ssrc: d.ssrc }).await;
            }
            let Some(d) = self.downloads.update(&id, |d| {
                let (covered_then, offset) = d.invited_at;
                d.position_ms = offset + info.media_ms.saturating_sub(covered_then);
                d.media_ms = d.media_ms.max(d.position_ms).min(d.range_ms());
                d.bytes = info.bytes;
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
                    let quiet = info.quiet_ms;
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
        // (SDP t=) before it: anything sent twice is the part of a second before that GOP. (A
        // node's recording keeps what it has: up to a second may come twice there.)
        if d.node.is_none() {
            self.change_playback(d.ssrc, PlaybackChange::Resumed).await;
        }
        let covered = self.download_progress(&d).await.map_or(0, |p| p.media_ms);
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
            match self.play_kind(&d.device_id, &d.channel_id, d.transport, kind, Some((d.ssrc, d.port, d.media_ip.clone()))).await {
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
        if let Some(node) = d.node.clone() {
            return self.finish_on_node(id, &node, d.ssrc, error).await;
        }
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
        self.downloads.update(id, |d| {
            if let Some(info) = &written {
                d.bytes = info.bytes;
            }
        });
        self.download_done(id, error);
    }

    /// The session ends and the node's stream closes, which closes its recording with every
    /// frame (a `stopRecord` would drop the GOP under way); the node's `on_record_mp4` then
    /// names the file, or the download failed.
    async fn finish_on_node(self: &Rc<Self>, id: &str, node: &str, ssrc: u32, error: Option<String>) {
        self.stop_session(ssrc);
        self.close_media(ssrc).await;
        let deadline = Instant::now() + DOWNLOAD_FLUSH_WAIT;
        while self.downloads.get(id).is_some_and(|d| d.node_file.is_none()) && Instant::now() < deadline {
            glommio::timer::sleep(Duration::from_millis(50)).await;
        }
        let file = self.downloads.get(id).and_then(|d| d.node_file);
        let error =
            error.or_else(|| file.is_none().then(|| format!("media node {node} named no recording (on_record_mp4) within {DOWNLOAD_FLUSH_WAIT:?}")));
        self.downloads.update(id, |d| {
            if let Some(f) = &file {
                d.file = f.name.clone();
                d.bytes = f.bytes;
            }
        });
        self.download_done(id, error);
    }

    fn download_done(&self, id: &str, error: Option<String>) {
        let done = self.downloads.update(id, |d| {
            d.state = if error.is_some() { DownloadState::Failed } else { DownloadState::Complete };
            d.error = error;
        });
        if let Some(d) = done {
            tracing::info!(download = %id, state = ?d.state, media_ms = d.media_ms, bytes = d.bytes, error = d.error, "download finished");
            self.events.publish("download_finished", Some(&d.device_id), Some(&d.channel_id), serde_json::json!(d));
        }
    }
}

impl Control {
    /// How far a download has come (see `media_progress`), with its own stall clock where
    /// the node does not say when media last came. None: the stream is gone here.
    async fn download_progress(&self, d: &Download) -> Option<Progress> {
        let p = self.media_progress(d.ssrc).await?;
        let media_ms = p.media_ms.max(if d.node.is_some() { d.grown_at.0 } else { 0 });
        let now = Instant::now();
        let quiet_ms = match p.quiet_ms {
            Some(q) => q,
            None => {
                let grown = self.downloads.update(&d.id, |d| {
                    if media_ms > d.grown_at.0 || d.grown_at.1.is_none() {
                        d.grown_at = (media_ms, Some(now));
                    }
                });
                let since = grown.and_then(|d| d.grown_at.1).unwrap_or(now);
                now.duration_since(since).as_millis() as u64
            }
        };
        Some(Progress { media_ms, bytes: p.bytes.unwrap_or(d.bytes), quiet_ms, recording: p.recording, error: p.record_error })
    }
}

/// Writes the downloads list whole (a temporary file renamed over the old one).
fn save(path: &std::path::Path, all: &[Download]) -> std::io::Result<()> {
    std::fs::create_dir_all(path.parent().expect("in downloads_dir"))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(all).map_err(std::io::Error::other)?)?;
    std::fs::rename(tmp, path)
}

/// A download's id and file name: the shape of gmv's recording names, so the same checks hold.
fn download_stem(ssrc: u32, created_ms: u64) -> String {
    format!("{}_{created_ms}", crate::proto::ssrc::stream_id(ssrc))
}

pub(super) fn history_spec(ssrc: u32, kind: PlayKind, created_ms: u64) -> Option<crate::shard::msg::History> {
    use crate::shard::msg::History;
    match kind {
        PlayKind::Live | PlayKind::LiveSub(_) => None,
        PlayKind::Playback { .. } => Some(History::Playback),
        PlayKind::Download { .. } => Some(History::Download { stem: download_stem(ssrc, created_ms), resume: None }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(file: &str) -> Download {
        serde_json::from_value(serde_json::json!({
            "id": "0100000001_1", "device_id": "d", "channel_id": "c", "start": 0, "end": 10, "speed": 1,
            "state": "running", "media_ms": 0, "bytes": 0, "progress": 0.0, "file": file, "resumes": 0,
            "error": null, "created_at": 0, "transport": "udp"
        }))
        .unwrap()
    }

    #[test]
    fn a_saved_download_is_read_back_not_trusted() {
        let dir = std::env::temp_dir().join(format!("gmv-downloads-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("keep.txt");
        std::fs::write(&victim, b"not a recording").unwrap();
        let d = interrupted(&dir, saved("../keep.txt"));
        assert_eq!(d.state, DownloadState::Failed, "a name gmv does not make is not touched");
        assert_eq!(std::fs::read(&victim).unwrap(), b"not a recording");
        let missing = interrupted(&dir, saved("0100000001_1.mp4"));
        assert_eq!(missing.state, DownloadState::Failed, "no file to go on with");
        assert!(missing.error.unwrap().contains("cannot be continued"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
