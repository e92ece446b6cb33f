//! A stream on its owning shard: sockets (UDP + RFC 4571 TCP on one port), the ingest
//! pipeline and the viewers. Also the shard's handler for cross-executor messages.

use super::Shard;
use super::fanout::{Fanout, FanoutLimits};
use super::msg::{History, OpenError, PlaybackChange, ShardMsg, StreamCallError, StreamInfo, StreamSpec};
use super::pipeline::Pipeline;
use super::source::{Origin, SourceGuard, Verdict};
use crate::proto::flv::FlvTag;
use crate::proto::rtp::{RTP_PACKET_BYTES_MAX, Rfc4571Deframer};
use crate::proto::sdp::{RtpMap, Sdp};
use crate::proto::ssrc::stream_id;
use bytes::Bytes;
use futures_lite::AsyncReadExt;
use super::stream_sockets::StreamSockets;
use glommio::net::{TcpListener, TcpStream};
use glommio::task::JoinHandle;
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Largest datagram taken per receive; covers jumbo frames some NVRs send.
pub const UDP_DATAGRAM_BYTES_MAX: usize = 9_000;
/// Datagrams a receive loop takes in a row before it lets the shard's other tasks run.
pub const UDP_DATAGRAMS_PER_TURN_MAX: usize = 64;
/// Read size per TCP RTP connection.
pub const TCP_READ_BYTES: usize = 16 * 1024;
/// Concurrent TCP RTP connections per stream (one device normally; a reconnect overlaps).
pub const TCP_CONNS_PER_STREAM_MAX: usize = 4;
/// Keyframes a stream's cover is tried from before it is given up.
pub const COVER_ATTEMPTS_MAX: u32 = 5;
/// Free ports tried before a stream is refused (another program may hold some of the range).
const PORT_BIND_ATTEMPTS_MAX: usize = 1_024;
/// How often each shard updates bitrates and closes idle streams.
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);
/// A download is one file: it never rotates within this much media time.
pub const DOWNLOAD_FILE_SPAN: Duration = Duration::from_secs(366 * 86_400);

pub struct Stream {
    pub spec: StreamSpec,
    pub port: u16,
    /// The port is this stream's alone (bound by it, back to the pool at close), not the
    /// single RTP port every stream shares.
    own_port: bool,
    /// Its UDP socket's token in the shard's `StreamSockets` (a port of its own).
    udp_token: Cell<Option<u64>>,
    pub shard: usize,
    pub created: Instant,
    pub pipeline: RefCell<Pipeline>,
    pub fanout: RefCell<Fanout>,
    pub last_packet: Cell<Option<Instant>>,
    pub transport: Cell<Option<&'static str>>,
    /// Live RTP-over-TCP connection tasks by connection number, cancelled on close.
    tcp_conns: RefCell<std::collections::HashMap<u64, JoinHandle<()>>>,
    /// The peer of each live RTP-over-TCP connection (which one is the source, in `info`).
    tcp_peers: RefCell<std::collections::HashMap<u64, SocketAddr>>,
    next_tcp_conn: Cell<u64>,
    /// (bytes at the last housekeeping tick, kbit/s over the last interval)
    bitrate: Cell<(u64, u64)>,
    tags: RefCell<Vec<FlvTag>>,
    tasks: RefCell<Vec<JoinHandle<()>>>,
    /// Itself, for tasks the stream spawns (covers).
    me: RefCell<std::rc::Weak<Stream>>,
    /// Its shard, for the messages it sends other shards (learners, aliases).
    shard_ref: std::rc::Weak<Shard>,
    /// The shard's cover-decode gate (shared by its streams).
    cover_gate: Rc<glommio::sync::Semaphore>,
    record_writers: Rc<super::record::RecordWriters>,
    covers_dir: std::path::PathBuf,
    /// Latest HLS request; HLS stops after `hls.idle_timeout_s` without one.
    pub hls_requested: Cell<Option<Instant>>,
    pub recorder: RefCell<Option<super::record::Recorder>>,
    /// A device channel's last seconds, while alarm clips are on (`record.alarm_clip`).
    preroll: RefCell<Option<super::alarm_clip::Preroll>>,
    /// The alarm clip being recorded.
    alarm_clip: RefCell<Option<super::alarm_clip::AlarmClip>>,
    /// JPEG of a keyframe; made once from the first keyframe, and again on request.
    pub cover: RefCell<Option<Bytes>>,
    /// A cover is to be made at the next keyframe (see `try_cover`).
    cover_wanted: Cell<bool>,
    /// Keyframes received when the cover was last tried; tries made; why the last failed.
    cover_tried_at: Cell<u64>,
    cover_attempts: Cell<u32>,
    cover_error: RefCell<Option<String>>,
    /// Which packets this stream takes (expected SSRCs, the locked source).
    pub source: RefCell<SourceGuard>,
    /// A playback the device was told to pause: not closed for idleness meanwhile.
    pub paused: Cell<bool>,
    /// Single port: the SSRC the device answered, when another shard forwards it here.
    alias: Cell<Option<u32>>,
    /// Single port: every media shard knows this stream waits for its device's first packet
    /// (`ShardMsg::Learner`), until it takes one or closes.
    learning: Cell<bool>,
    /// RTP senders fed from this stream's frames (`rtp_send`).
    senders: RefCell<Vec<super::rtp_send::Feed>>,
    /// Live fMP4 and TS viewers, fed frames (`frame_viewers`).
    frame_viewers: RefCell<Vec<super::frame_viewers::FrameViewer>>,
}

impl Stream {
    /// A packet that came at `now`: the receive loops read the clock once per batch (a
    /// read per packet was 1.3% of the engine's samples at 1000 streams).
    pub(super) fn on_packet(&self, data: Bytes, transport: &'static str, origin: Origin, now: Instant) {
        let now_ms = now.duration_since(self.created).as_millis() as u64;
        let verdict = if self.spec.local { Verdict::ForeignSource } else { self.source.borrow_mut().check(origin, &data, now_ms) };
        if !verdict.taken() {
            return self.dropped(verdict, origin, &data);
        }
        if let Verdict::Learned(ssrc) = verdict {
            self.learned(ssrc, origin);
        }
        if self.learning.get() {
            self.stop_learning();
        }
        self.take(data, transport, now, now_ms);
    }

    /// A packet of the stream's own in-process source (`spec.local`): no source to check.
    pub(super) fn on_local_packet(&self, data: Bytes) {
        debug_assert!(self.spec.local);
        let now = Instant::now();
        self.take(data, "local", now, now.duration_since(self.created).as_millis() as u64);
    }

    /// A task of the stream's, cancelled when it closes (a pull source's reader).
    pub(super) fn own_task(&self, task: JoinHandle<()>) {
        self.tasks.borrow_mut().push(task);
    }

    /// A whole frame of the stream's own in-process source (an RTMP publisher's: `format`
    /// "flv", `transport` "tcp"): through the pipeline as a packet would go.
    pub(super) fn on_local_frame(&self, frame: crate::proto::frame::Frame, transport: &'static str, format: &'static str) {
        debug_assert!(self.spec.local);
        self.ingest(transport, Instant::now(), |p, tags| p.on_frame(frame, format, tags));
    }

    /// A packet taken: through the pipeline to viewers, recorder and senders.
    fn take(&self, data: Bytes, transport: &'static str, now: Instant, now_ms: u64) {
        self.ingest(transport, now, |p, tags| p.on_packet(data, now_ms, tags));
    }

    /// What came in (`feed` gives it to the pipeline) goes out to viewers, recorder and senders.
    fn ingest(&self, transport: &'static str, now: Instant, feed: impl FnOnce(&mut Pipeline, &mut Vec<FlvTag>)) {
        self.last_packet.set(Some(now));
        self.transport.set(Some(transport));
        let mut tags = self.tags.borrow_mut();
        feed(&mut self.pipeline.borrow_mut(), &mut tags);
        self.deliver(&mut tags);
        drop(tags);
        if self.cover_due() {
            self.try_cover();
        }
    }

    /// A cover is wanted and a keyframe came since the last try.
    fn cover_due(&self) -> bool {
        self.cover_wanted.get() && self.pipeline.borrow().stats.keyframes > self.cover_tried_at.get()
    }

    /// Makes the cover from the latest keyframe, off the packet path. A keyframe that does not
    /// decode (its parameter sets were in packets lost before the first one taken) is no
    /// reason to give up: the next keyframes are tried, `COVER_ATTEMPTS_MAX` in all; a codec
    /// without a decoder is given up at once. Why there is none is kept for `/cover`.
    fn try_cover(&self) {
        self.cover_wanted.set(false);
        self.cover_tried_at.set(self.pipeline.borrow().stats.keyframes);
        let me = self.self_rc();
        glommio::spawn_local(async move {
            let attempt = me.cover_attempts.get() + 1;
            me.cover_attempts.set(attempt);
            match me.snapshot().await {
                Ok(_) => *me.cover_error.borrow_mut() = None,
                Err(error) => {
                    let again = attempt < COVER_ATTEMPTS_MAX && !matches!(error, crate::snapshot::SnapshotError::Unsupported(_));
                    tracing::info!(ssrc = me.spec.ssrc, %error, attempt, again, "no cover for stream");
                    *me.cover_error.borrow_mut() = Some(error.to_string());
                    me.cover_wanted.set(again);
                    // A keyframe that came while this one was decoding is not waited for again
                    // (it may be the last for a while).
                    if me.cover_due() {
                        me.try_cover();
                    }
                }
            }
        })
        .detach();
    }

    /// Why the stream has no cover, once a try failed.
    pub fn cover_error(&self) -> Option<String> {
        self.cover_error.borrow().clone()
    }

    /// The device sends another SSRC than it was offered: it is this stream's now. On the
    /// single port, the shard that SSRC is steered to keeps forwarding it here (it made the
    /// alias when it handed the packet over).
    fn learned(&self, ssrc: u32, origin: Origin) {
        let offered = self.spec.ssrc;
        tracing::info!(ssrc = offered, stream_id = %stream_id(offered), device_ssrc = ssrc, from = %origin.ip(), offered = %super::source::ssrc_text(offered), sent = %super::source::ssrc_text(ssrc), "device sends another SSRC than offered; learned it");
        if !self.own_port && ssrc != offered {
            let old = self.alias.replace(Some(ssrc));
            if let Some(old) = old.filter(|o| *o != ssrc) {
                self.unalias(old);
            }
        }
    }

    /// Tells every media shard this stream waits for the first packet from its device's
    /// addresses (single port): unknown SSRCs from there come here.
    fn start_learning(&self) {
        let Some(shard) = self.shard_rc() else { return };
        let rule = self.source.borrow().rule().clone();
        let ips: Vec<std::net::IpAddr> = rule.nets.iter().filter_map(|n| n.single()).collect();
        if ips.is_empty() || self.own_port {
            return;
        }
        for to in shard.media_indices() {
            for ip in &ips {
                let (stream_ssrc, learn) = (self.spec.ssrc, rule.learn_ssrc);
                if !tell_shard(&shard, to, ShardMsg::Learner { ip: *ip, stream_ssrc, shard: shard.index, learn }) {
                    tracing::warn!(
                        ssrc = stream_ssrc,
                        to,
                        "single RTP port: learner not sent (queue full); an SSRC the device picks is not learned there"
                    );
                }
            }
        }
        self.learning.set(true);
    }

    fn stop_learning(&self) {
        self.learning.set(false);
        let Some(shard) = self.shard_rc() else { return };
        for to in shard.media_indices() {
            if !tell_shard(&shard, to, ShardMsg::Unlearner { stream_ssrc: self.spec.ssrc }) {
                tracing::debug!(ssrc = self.spec.ssrc, to, "single RTP port: learner not taken back (queue full); it expires");
            }
        }
    }

    fn unalias(&self, device_ssrc: u32) {
        let Some(shard) = self.shard_rc() else { return };
        let ssrc = self.spec.ssrc;
        let to = super::owner_of(device_ssrc, shard.media_shards);
        if !tell_shard(&shard, to, ShardMsg::Unalias { device_ssrc, stream_ssrc: ssrc }) {
            tracing::warn!(ssrc, device_ssrc, "single RTP port: alias not removed (queue full); it goes when the SSRC is reused");
        }
    }

    fn shard_rc(&self) -> Option<Rc<Shard>> {
        self.shard_ref.upgrade()
    }

    /// A packet from a foreign source or SSRC: counted, logged at 1, 2, 4, 8, ... drops.
    fn dropped(&self, verdict: Verdict, origin: Origin, data: &[u8]) {
        let source = self.source.borrow();
        let n = source.foreign_packets;
        if n.is_power_of_two() {
            let packet_ssrc = super::source::rtp_ssrc(data);
            tracing::warn!(
                ssrc = self.spec.ssrc,
                stream_id = %stream_id(self.spec.ssrc),
                from = ?origin,
                locked = ?source.locked(),
                packet_ssrc,
                why = ?verdict,
                foreign_packets = n,
                "RTP packet dropped: not from this stream's source or SSRC"
            );
        }
    }

    fn self_rc(&self) -> Rc<Stream> {
        self.me.borrow().upgrade().expect("stream alive while receiving")
    }

    /// Decodes the latest keyframe to JPEG off the executor, keeps it as the cover and
    /// writes it to `data_dir/covers/{stream_id}.jpg`.
    pub async fn snapshot(&self) -> Result<Bytes, crate::snapshot::SnapshotError> {
        let (codec, annexb) = {
            let p = self.pipeline.borrow();
            let key = p.last_keyframe.as_ref().ok_or(crate::snapshot::SnapshotError::NoKeyframe)?;
            (key.codec, crate::snapshot::standalone_keyframe(key.codec, p.flv.params(), &key.data))
        };
        let path = self.covers_dir.join(format!("{}.jpg", stream_id(self.spec.ssrc)));
        // One decode at a time per shard: a thousand cameras connecting at once must not
        // bury the shard's blocking threads (and its cores) in decodes.
        let _permit = self.cover_gate.acquire_permit(1).await.map_err(|_| crate::snapshot::SnapshotError::Decode("shard closing".into()))?;
        let (jpeg, width, height) = glommio::executor()
            .spawn_blocking(move || {
                crate::snapshot::lower_thread_priority();
                let made = crate::snapshot::keyframe_to_jpeg(codec, &annexb)?;
                if std::fs::create_dir_all(path.parent().expect("has parent")).and_then(|_| std::fs::write(&path, &made.0)).is_err() {
                    tracing::warn!(path = %path.display(), "cannot store cover");
                }
                Ok::<_, crate::snapshot::SnapshotError>(made)
            })
            .await?;
        tracing::info!(ssrc = self.spec.ssrc, width, height, bytes = jpeg.len(), "cover made");
        let jpeg = Bytes::from(jpeg);
        *self.cover.borrow_mut() = Some(jpeg.clone());
        Ok(jpeg)
    }

    /// Hands the emitted frames to the recorder and the RTP senders (shared buffers).
    fn feed_frames(&self) {
        let (frames, video) = {
            let mut p = self.pipeline.borrow_mut();
            let video = p.flv.video_info().map(|(codec, _)| codec);
            match p.frames_out.as_mut() {
                Some(f) if !f.is_empty() => (std::mem::take(f), video),
                _ => return,
            }
        };
        if let Some(r) = self.recorder.borrow_mut().as_mut() {
            for f in &frames {
                r.push(f);
            }
        }
        self.feed_alarm_clip(&frames);
        let mut senders = self.senders.borrow_mut();
        let mut viewers = self.frame_viewers.borrow_mut();
        let before = senders.len() + viewers.len();
        if !senders.is_empty() {
            let mut scratch = Vec::new();
            senders.retain_mut(|s| s.push(&frames, video, &mut scratch));
        }
        viewers.retain_mut(|v| v.push(&frames));
        if senders.len() + viewers.len() != before {
            drop((senders, viewers));
            self.sync_frames_out();
        }
        // The buffer goes back for the next packet's frames (no allocation per packet).
        let mut frames = frames;
        frames.clear();
        if let Some(out) = self.pipeline.borrow_mut().frames_out.as_mut() {
            *out = frames;
        }
    }

    /// The pre-roll and the alarm clip take the frames; a clip past its end closes.
    fn feed_alarm_clip(&self, frames: &[crate::proto::frame::Frame]) {
        if let Some(p) = self.preroll.borrow_mut().as_mut() {
            for f in frames {
                p.push(f);
            }
        }
        let mut clip = self.alarm_clip.borrow_mut();
        let Some(c) = clip.as_mut() else { return };
        for f in frames {
            c.recorder.push(f);
        }
        if Instant::now() >= c.until {
            if let Some(mut done) = clip.take() {
                tracing::info!(ssrc = self.spec.ssrc, alarms = done.recorder.alarm_ids.len(), "alarm clip ends");
                done.recorder.finish();
            }
            drop(clip);
            self.sync_frames_out();
        }
    }

    /// An alarm of this stream's channel: a clip starts (the pre-roll first) or the one under
    /// way goes on to `post` after it. True when a clip started.
    pub fn alarm(&self, alarm_id: u64, post: Duration, config: &crate::config::Config) -> bool {
        let now = Instant::now();
        if let Some(c) = self.alarm_clip.borrow_mut().as_mut() {
            c.extend(alarm_id, post, now);
            return false;
        }
        let dir = super::record::records_dir(&config.data_dir);
        let mut recorder = super::record::Recorder::new(dir, stream_id(self.spec.ssrc), None, DOWNLOAD_FILE_SPAN, self.record_writers.clone());
        recorder.channel_id = self.spec.channel_id.clone();
        recorder.kind = Some("alarm");
        recorder.alarm_ids.push(alarm_id);
        if let Some(p) = self.preroll.borrow().as_ref() {
            let (frames, span) = p.frames();
            recorder.started_before = span;
            for f in frames {
                recorder.push(f);
            }
        }
        tracing::info!(ssrc = self.spec.ssrc, alarm_id, post_s = post.as_secs(), pre_ms = recorder.started_before.as_millis() as u64, "alarm clip starts");
        *self.alarm_clip.borrow_mut() = Some(super::alarm_clip::AlarmClip { recorder, until: now + post });
        self.sync_frames_out();
        true
    }

    /// Frames are kept for the recorder and senders only while there is one.
    fn sync_frames_out(&self) {
        let clips = self.preroll.borrow().is_some() || self.alarm_clip.borrow().is_some();
        let wanted = clips || self.recorder.borrow().is_some() || !self.senders.borrow().is_empty() || !self.frame_viewers.borrow().is_empty();
        let mut p = self.pipeline.borrow_mut();
        match (wanted, p.frames_out.is_some()) {
            (true, false) => p.frames_out = Some(Vec::new()),
            (false, true) => p.frames_out = None,
            _ => {}
        }
    }

    /// A live fMP4/TS viewer's queue of this stream's frames; None when it has as many as it takes.
    pub fn add_frame_viewer(&self) -> Option<glommio::channels::local_channel::LocalReceiver<crate::proto::frame::Frame>> {
        if self.frame_viewers.borrow().len() >= super::frame_viewers::FRAME_VIEWERS_PER_STREAM_MAX {
            return None;
        }
        let (viewer, rx) = super::frame_viewers::FrameViewer::new();
        self.frame_viewers.borrow_mut().push(viewer);
        self.sync_frames_out();
        Some(rx)
    }

    pub fn senders_len(&self) -> usize {
        self.senders.borrow().len()
    }

    pub fn has_sender(&self, key: super::rtp_send::SenderKey) -> bool {
        self.senders.borrow().iter().any(|s| s.key == key)
    }

    /// Takes a sender's feed; one with the same SSRC is given back to be ended (a new sender
    /// with an SSRC replaces the old, as ZLMediaKit's do).
    pub fn add_sender(&self, feed: super::rtp_send::Feed) -> Option<super::rtp_send::Feed> {
        let old = {
            let mut senders = self.senders.borrow_mut();
            let old = senders.iter().position(|s| s.key == feed.key).map(|i| senders.remove(i));
            senders.push(feed);
            old
        };
        self.sync_frames_out();
        old
    }

    /// Ends the sender named `key` (None: all), saying why; how many there were.
    pub fn stop_senders(&self, key: Option<super::rtp_send::SenderKey>, end: super::rtp_send::SendEnd, why: &str) -> usize {
        let stopped: Vec<super::rtp_send::Feed> = {
            let mut senders = self.senders.borrow_mut();
            let (stop, keep) = std::mem::take(&mut *senders).into_iter().partition(|s| key.is_none_or(|k| k == s.key));
            *senders = keep;
            stop
        };
        for s in &stopped {
            s.end(end, why);
        }
        let n = stopped.len();
        drop(stopped);
        self.sync_frames_out();
        n
    }

    /// A sender's task ended on its own: its feed (the one it was started with) goes.
    pub fn forget_sender(&self, key: super::rtp_send::SenderKey, why: &super::rtp_send::EndCell) {
        self.senders.borrow_mut().retain(|s| !(s.key == key && s.is_for(why)));
        self.sync_frames_out();
    }

    /// Starts or stops MP4 recording; false if it already was in that state.
    /// A recorder stopped by a write error counts as not recording: starting replaces it (a
    /// fresh try), stopping clears it.
    pub fn set_recording(&self, on: bool, config: &crate::config::Config) -> bool {
        self.set_recording_spanning(on, None, config)
    }

    /// As `set_recording`, a new file every `file_span` (None: `record.rotate_s`; at most
    /// `DOWNLOAD_FILE_SPAN`). A download is one file whatever the span.
    pub fn set_recording_spanning(&self, on: bool, file_span: Option<Duration>, config: &crate::config::Config) -> bool {
        let mut recorder = self.recorder.borrow_mut();
        let active = recorder.as_ref().is_some_and(|r| r.error.is_none());
        match (on, active) {
            (true, false) => {
                let id = stream_id(self.spec.ssrc);
                let writers = self.record_writers.clone();
                let mut made = match &self.spec.history {
                    // A download is one file, however long.
                    Some(History::Download { stem, resume }) => {
                        let dir = super::record::downloads_dir(&config.data_dir);
                        let mut r = super::record::Recorder::new(dir, id, Some(stem.clone()), DOWNLOAD_FILE_SPAN, writers);
                        r.resume = resume.clone();
                        r
                    }
                    _ => {
                        let rotate = file_span.unwrap_or(Duration::from_secs(config.record.rotate_s)).min(DOWNLOAD_FILE_SPAN);
                        super::record::Recorder::new(super::record::records_dir(&config.data_dir), id, None, rotate, writers)
                    }
                };
                made.channel_id = self.spec.channel_id.clone();
                *recorder = Some(made);
                drop(recorder);
                self.sync_frames_out();
                true
            }
            (false, true) => {
                if let Some(mut r) = recorder.take() {
                    r.finish();
                }
                drop(recorder);
                self.sync_frames_out();
                true
            }
            (false, false) => {
                if recorder.take().is_some() {
                    drop(recorder);
                    self.sync_frames_out();
                }
                false
            }
            (true, true) => false,
        }
    }

    /// From now on the stream is video only: audio is dropped on arrival and forgotten by
    /// what new viewers are given first.
    fn drop_audio(&self) {
        self.pipeline.borrow_mut().forget_audio();
        self.fanout.borrow_mut().forget_audio();
    }

    fn playback_change(&self, change: PlaybackChange) {
        tracing::info!(ssrc = self.spec.ssrc, ?change, "playback changed");
        let mut tags = Vec::new();
        {
            let mut p = self.pipeline.borrow_mut();
            match change {
                PlaybackChange::Paused(paused) => self.paused.set(paused),
                PlaybackChange::Scale(x100) => p.retimer.set_scale(x100),
                PlaybackChange::Seeked => p.retimer.expect_jump(),
                PlaybackChange::Resumed => {
                    self.source.borrow_mut().release();
                    p.restart_sequence(&mut tags);
                    p.retimer.expect_jump();
                }
            }
        }
        self.deliver(&mut tags);
        if change == PlaybackChange::Resumed {
            // The GOP under way is dropped: the device sends it again from its start.
            let dropped_from = self.recorder.borrow_mut().as_mut().and_then(|r| r.discard_pending());
            if let Some(dts) = dropped_from {
                self.pipeline.borrow_mut().retimer.rewind(dts);
            }
        }
        // Idle time counts from now, not from before the pause.
        self.last_packet.set(Some(Instant::now()));
    }

    /// Hands tags to the viewers and emitted frames to the recorder.
    fn deliver(&self, tags: &mut Vec<FlvTag>) {
        let mut fanout = self.fanout.borrow_mut();
        if !tags.is_empty() {
            for t in tags.drain(..) {
                fanout.publish(&t);
            }
            if !fanout.watched() {
                self.pipeline.borrow_mut().stop_flv_at_keyframe(fanout.gop_cache_bytes_max());
            }
        } else if fanout.has_gop() && self.pipeline.borrow().flv_idle() {
            fanout.forget_gop(); // stale since tags stopped: its memory goes now
        }
        drop(fanout);
        self.feed_frames();
    }

    /// An FLV viewer is about to subscribe: tags are built again if they had stopped, the
    /// GOP kept as frames muxed into the cache first, so it starts at once.
    pub fn watch_flv(&self) {
        let mut fanout = self.fanout.borrow_mut();
        let mut tags = Vec::new();
        if self.pipeline.borrow_mut().resume_flv(&mut tags) {
            fanout.forget_gop();
            for t in &tags {
                fanout.publish(t);
            }
        }
    }

    fn close(&self) {
        for t in self.tasks.borrow_mut().drain(..) {
            t.cancel();
        }
        for (_, t) in self.tcp_conns.borrow_mut().drain() {
            t.cancel();
        }
        let mut tags = Vec::new();
        self.pipeline.borrow_mut().flush(&mut tags);
        self.deliver(&mut tags);
        self.fanout.borrow_mut().close();
        if let Some(mut r) = self.recorder.borrow_mut().take() {
            r.finish();
        }
        if let Some(mut c) = self.alarm_clip.borrow_mut().take() {
            c.recorder.finish();
        }
        self.stop_senders(None, super::rtp_send::SendEnd::SourceClosed, "source stream closed");
        self.frame_viewers.borrow_mut().clear();
    }

    pub fn info(&self) -> StreamInfo {
        let p = self.pipeline.borrow();
        let seq = p.seq_stats();
        let video = p.flv.video_info();
        StreamInfo {
            stream_id: stream_id(self.spec.ssrc),
            name: self.spec.name.clone(),
            ssrc: self.spec.ssrc,
            shard: self.shard,
            port: self.port,
            payload: p.payload_name().to_string(),
            transport: self.transport.get(),
            peer: match self.source.borrow().locked() {
                Some(Origin::Udp(addr)) => Some(addr),
                Some(Origin::Tcp { conn, .. }) => self.tcp_peers.borrow().get(&conn).copied(),
                None => None,
            },
            video_codec: video.map(|(c, _)| c.name().to_string()),
            width: video.map(|(_, s)| s.width),
            height: video.map(|(_, s)| s.height),
            audio_codec: p.flv.audio_codec().map(|c| c.name().to_string()),
            bitrate_kbps: self.bitrate.get().1,
            packets: p.stats.packets,
            bytes: p.stats.bytes,
            lost: seq.lost,
            rtp_errors: p.stats.rtp_errors,
            demux_errors: p.stats.demux_errors,
            frames: p.stats.frames,
            video_frames: p.stats.video_frames,
            keyframes: p.stats.keyframes,
            gop_ms: p.stats.gop_ms,
            fps: if p.stats.video_interval_90k > 0 { (90_000.0 / p.stats.video_interval_90k as f64 * 100.0).round() / 100.0 } else { 0.0 },
            foreign_packets: self.source.borrow().foreign_packets,
            ssrc_changes: self.source.borrow().ssrc_changes,
            ssrc_learned: self.source.borrow().ssrc_learned,
            source_moves: self.source.borrow().source_moves,
            source: self.source.borrow().rule().describe(),
            no_media: self.source.borrow().no_media_why(),
            low_latency: p.low_latency(),
            hls: p.hls.is_some() || p.hls_fmp4.is_some(),
            hls_request_ms_ago: self.hls_requested.get().map(|t| t.elapsed().as_millis() as u64),
            // An alarm clip records too (and keeps the stream in use while it does).
            recording: self.recorder.borrow().as_ref().is_some_and(|r| r.recording()) || self.alarm_clip.borrow().is_some(),
            record_on: self.recorder.borrow().as_ref().is_some_and(|r| r.error.is_none()),
            history: self.spec.history.as_ref().map(|h| match h {
                History::Playback => "playback",
                History::Download { .. } => "download",
            }),
            paused: self.paused.get(),
            media_ms: p.retimer.covered_ms(),
            record_bytes: self.recorder.borrow().as_ref().map_or(0, |r| r.bytes_queued),
            record_file: self.recorder.borrow().as_ref().and_then(|r| r.file_name.clone()),
            record_error: self.recorder.borrow().as_ref().and_then(|r| r.error.clone()),
            subscribers: self.fanout.borrow().subscribers() + self.frame_viewers.borrow().len(),
            tcp_conns: self.tcp_conns.borrow().len(),
            senders: self.senders.borrow().len(),
            is_static: self.spec.is_static,
            age_ms: self.created.elapsed().as_millis() as u64,
            last_packet_ms_ago: self.last_packet.get().map(|t| t.elapsed().as_millis() as u64),
        }
    }
}

/// Binds UDP and TCP on one port without SO_REUSEPORT, so a port is never silently shared.
fn bind_port(ip: std::net::IpAddr, port: u16) -> std::io::Result<(std::os::fd::OwnedFd, TcpListener)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let addr = SocketAddr::new(ip, port);
    let domain = if ip.is_ipv6() { Domain::IPV6 } else { Domain::IPV4 };
    let udp = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    // Cameras burst a whole I-frame at once; give the kernel room for it.
    let _ = udp.set_recv_buffer_size(2 << 20);
    udp.bind(&addr.into())?;
    let tcp = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    tcp.set_reuse_address(true)?;
    tcp.bind(&addr.into())?;
    tcp.listen(TCP_CONNS_PER_STREAM_MAX as i32)?;
    // SAFETY: each fd comes from a socket we just created and hand over exactly once.
    Ok((udp.into(), unsafe { TcpListener::from_raw_fd(tcp.into_raw_fd()) }))
}

pub fn open_stream(shard: &Rc<Shard>, spec: StreamSpec) -> Result<StreamInfo, OpenError> {
    if shard.streams.borrow().contains_key(&spec.ssrc) {
        return Err(OpenError::Exists);
    }
    let map = match &spec.sdp {
        Some(text) => Sdp::parse(text.as_bytes()).map_err(|e| OpenError::BadSdp(e.to_string()))?.rtp_map(),
        None => RtpMap::default(),
    };
    if spec.sdp.is_some() && map.entries.is_empty() {
        return Err(OpenError::BadSdp("no payload type gmv can ingest (PS, H264, H265, PCMA, PCMU)".into()));
    }
    let ip = shard.config.rtp.listen_ip;
    let (port, sockets) = match spec.port {
        None if spec.local => (0, None),
        // The single RTP port's sockets deliver it (UDP by SSRC, TCP by its first frame).
        None if shard.config.rtp.port != 0 && !spec.any_ssrc => (shard.config.rtp.port, None),
        Some(port) => {
            if shard.ports.borrow().in_use(port) {
                return Err(OpenError::NoPort(format!("port {port} is taken by another stream")));
            }
            let bound = bind_port(ip, port).map_err(|e| OpenError::NoPort(format!("port {port}: {e}")))?;
            (port, Some(bound))
        }
        None => {
            let candidates: Vec<u16> = shard.ports.borrow().candidates(super::ports::unpredictable_u64()).take(PORT_BIND_ATTEMPTS_MAX).collect();
            candidates
                .into_iter()
                .find_map(|p| bind_port(ip, p).ok().map(|bound| (p, Some(bound))))
                .ok_or_else(|| OpenError::NoPort(format!("no free port in {:?}", shard.ports.borrow().range())))?
        }
    };
    if sockets.is_some() {
        shard.ports.borrow_mut().take(port);
    }
    let media = &shard.config.media;
    let limits = FanoutLimits {
        gop_cache_bytes_max: media.gop_cache_bytes_max,
        queue_tags_max: media.subscriber_queue_tags_max,
        skips_max: media.subscriber_skips_max,
        per_address_max: media.viewers_per_address_max,
    };
    let clips = &shard.config.record.alarm_clip;
    let preroll = (clips.post_s > 0 && spec.channel_id.is_some())
        .then(|| super::alarm_clip::Preroll::new(Duration::from_secs(clips.pre_s), clips.pre_bytes_max as usize));
    let stream = Rc::new(Stream {
        spec: spec.clone(),
        port,
        own_port: sockets.is_some(),
        udp_token: Cell::new(None),
        shard: shard.index,
        created: Instant::now(),
        pipeline: RefCell::new(Pipeline::new(map)),
        fanout: RefCell::new(Fanout::new(limits)),
        last_packet: Cell::new(None),
        transport: Cell::new(None),
        tcp_conns: RefCell::new(Default::default()),
        tcp_peers: RefCell::new(Default::default()),
        next_tcp_conn: Cell::new(0),
        bitrate: Cell::new((0, 0)),
        tags: RefCell::new(Vec::new()),
        tasks: RefCell::new(Vec::new()),
        me: RefCell::new(std::rc::Weak::new()),
        cover_gate: shard.cover_gate.clone(),
        record_writers: shard.record_writers.clone(),
        covers_dir: shard.config.data_dir.join("covers"),
        hls_requested: Cell::new(None),
        recorder: RefCell::new(None),
        preroll: RefCell::new(preroll),
        alarm_clip: RefCell::new(None),
        cover: RefCell::new(None),
        cover_wanted: Cell::new(shard.config.media.cover_on_first_keyframe),
        cover_tried_at: Cell::new(0),
        cover_attempts: Cell::new(0),
        cover_error: RefCell::new(None),
        source: RefCell::new(if spec.any_ssrc { SourceGuard::any(spec.source.clone()) } else { SourceGuard::new(spec.ssrc, spec.source.clone()) }),
        paused: Cell::new(false),
        alias: Cell::new(None),
        learning: Cell::new(false),
        senders: RefCell::new(Vec::new()),
        frame_viewers: RefCell::new(Vec::new()),
        shard_ref: Rc::downgrade(shard),
    });
    *stream.me.borrow_mut() = Rc::downgrade(&stream);
    // Before anything starts for the stream (a recording): failing here leaves nothing behind.
    let tcp = match sockets {
        Some((udp, tcp)) => {
            let token = StreamSockets::add(shard, udp, Rc::downgrade(&stream)).map_err(|e| {
                shard.ports.borrow_mut().release(port);
                OpenError::NoPort(format!("port {port}: cannot wait on its UDP socket: {e}"))
            })?;
            stream.udp_token.set(Some(token));
            Some(tcp)
        }
        None => None,
    };
    // The pre-roll takes frames from the first.
    stream.sync_frames_out();
    stream.pipeline.borrow_mut().drop_audio = spec.drop_audio;
    if spec.unsolicited {
        stream.pipeline.borrow_mut().sniff_payloads();
    }
    if shard.config.record.all || matches!(spec.history, Some(History::Download { .. })) {
        stream.set_recording(true, &shard.config);
    }
    if let Some(tcp) = tcp {
        let tcp_task = glommio::spawn_local(tcp_accept_loop(stream.clone(), tcp)).detach();
        stream.tasks.borrow_mut().push(tcp_task);
    }
    shard.streams.borrow_mut().insert(spec.ssrc, stream.clone());
    stream.start_learning();
    tracing::info!(ssrc = spec.ssrc, stream_id = %stream_id(spec.ssrc), port, shard = shard.index, source = %spec.source.describe(), learn_ssrc = spec.source.learn_ssrc, "stream opened");
    Ok(stream.info())
}

pub fn close_stream(shard: &Shard, ssrc: u32, why: &str) -> bool {
    let Some(stream) = shard.streams.borrow_mut().remove(&ssrc) else { return false };
    stream.close();
    shard.retired.set(shard.retired.get().plus(&stream.info()));
    if stream.own_port {
        shard.ports.borrow_mut().release(stream.port);
    }
    if let Some(token) = stream.udp_token.take() {
        StreamSockets::remove(shard, token);
    }
    if let Some(device_ssrc) = stream.alias.get() {
        stream.unalias(device_ssrc);
    }
    if stream.learning.get() {
        stream.stop_learning();
    }
    match stream.source.borrow().no_media_why() {
        Some(no_media) => tracing::warn!(ssrc, stream_id = %stream_id(ssrc), reason = why, no_media, "stream closed without media"),
        None => tracing::info!(ssrc, stream_id = %stream_id(ssrc), reason = why, "stream closed"),
    }
    true
}

/// Delivers a message about the single port's tables (aliases, learners) to shard `to`:
/// handled at once when that is this shard, else queued without waiting. False: its queue is
/// full and the message was dropped.
fn tell_shard(shard: &Rc<Shard>, to: usize, msg: ShardMsg) -> bool {
    if to == shard.index {
        handle_msg(shard, msg);
        return true;
    }
    shard.try_send(to, msg)
}

pub fn handle_msg(shard: &Rc<Shard>, msg: ShardMsg) {
    match msg {
        ShardMsg::Http(conn) => match shard.handoff.get() {
            Some(serve) => serve(conn),
            None => tracing::warn!(shard = shard.index, "connection handed over before HTTP was wired; dropped"),
        },
        ShardMsg::RtpTcp(conn) => super::single_port::tcp_arrived(shard, conn),
        ShardMsg::Rtmp(conn) => super::rtmp::arrived(shard, conn),
        ShardMsg::OpenPulled { spec, transport, format, reply } => {
            let _ = reply.send(super::pull_feed::open(shard, spec, transport, format));
        }
        ShardMsg::Alias { device_ssrc, stream_ssrc, shard: to } => shard.single_port.alias(device_ssrc, stream_ssrc, to),
        ShardMsg::Unalias { device_ssrc, stream_ssrc } => shard.single_port.unalias(device_ssrc, stream_ssrc),
        ShardMsg::Learner { ip, stream_ssrc, shard: to, learn } => shard.single_port.add_learner(ip, stream_ssrc, to, learn),
        ShardMsg::Unlearner { stream_ssrc } => shard.single_port.remove_learner(stream_ssrc),
        ShardMsg::Forwarded { ssrc, data, peer } => super::single_port::forwarded(shard, ssrc, data, peer),
        ShardMsg::PortRange { min, max, reply } => {
            shard.ports.borrow_mut().reslice(min, max, shard.index.saturating_sub(1), shard.media_shards);
            tracing::info!(shard = shard.index, range = ?shard.ports.borrow().range(), "RTP port range changed");
            let _ = reply.send(());
        }
        ShardMsg::ShardTotals { reply } => {
            let _ = reply.send(shard.totals());
        }
        ShardMsg::Reload { secrets, tls, reply } => {
            *shard.secrets.borrow_mut() = secrets;
            *shard.tls.borrow_mut() = tls;
            let _ = reply.send(());
        }
        ShardMsg::OpenStream { spec, reply } => {
            let _ = reply.send(open_stream(shard, spec));
        }
        ShardMsg::CloseStream { ssrc, reply } => {
            let _ = reply.send(close_stream(shard, ssrc, "api"));
        }
        ShardMsg::Snapshot { ssrc, reply } => {
            let stream = shard.streams.borrow().get(&ssrc).cloned();
            glommio::spawn_local(async move {
                let result = match stream {
                    Some(s) => s.snapshot().await.map_err(StreamCallError::Snapshot),
                    None => Err(StreamCallError::NoStream),
                };
                let _ = reply.send(result);
            })
            .detach();
        }
        ShardMsg::FeedAudio { ssrc, alaw, reply } => {
            let stream = shard.streams.borrow().get(&ssrc).cloned().filter(|s| s.spec.local);
            let _ = reply.send(stream.is_some());
            if let Some(stream) = stream {
                glommio::spawn_local(super::audio_feed::feed(Rc::downgrade(shard), Rc::downgrade(&stream), alaw)).detach();
            }
        }
        ShardMsg::ConnectTcp { ssrc, addr, reply } => {
            let stream = shard.streams.borrow().get(&ssrc).cloned();
            glommio::spawn_local(async move {
                let result = match stream {
                    Some(s) => connect_active(s, addr).await,
                    None => Err(StreamCallError::NoStream),
                };
                let _ = reply.send(result);
            })
            .detach();
        }
        ShardMsg::Expect { ssrc, expect, reply } => {
            let stream = shard.streams.borrow().get(&ssrc).cloned();
            if let (Some(s), Some(rule)) = (&stream, expect.rule) {
                tracing::debug!(ssrc, source = %rule.describe(), learn_ssrc = rule.learn_ssrc, "stream takes media from the device's addresses");
                s.source.borrow_mut().set_rule(rule);
                if !s.source.borrow().has_taken() {
                    s.start_learning();
                }
            }
            if let (Some(s), Some(device_ssrc)) = (&stream, expect.device_ssrc) {
                s.source.borrow_mut().expect(device_ssrc);
                let owner = super::owner_of(device_ssrc, shard.media_shards);
                // On the single port the kernel steers the device's SSRC to its own shard.
                if !s.own_port
                    && device_ssrc != ssrc
                    && s.alias.replace(Some(device_ssrc)).is_none()
                    && !tell_shard(shard, owner, ShardMsg::Alias { device_ssrc, stream_ssrc: ssrc, shard: shard.index })
                {
                    s.alias.set(None);
                    tracing::warn!(ssrc, device_ssrc, "single RTP port: alias not sent (queue full); the device's packets are dropped");
                }
            }
            let _ = reply.send(stream.is_some());
        }
        ShardMsg::Playback { ssrc, change, reply } => {
            let stream = shard.streams.borrow().get(&ssrc).cloned();
            if let Some(s) = &stream {
                s.playback_change(change);
            }
            let _ = reply.send(stream.is_some());
        }
        ShardMsg::StreamInfo { ssrc, reply } => {
            let _ = reply.send(shard.streams.borrow().get(&ssrc).map(|s| s.info()));
        }
        ShardMsg::Publishing { ssrc, order, reply } => {
            let stream = shard.streams.borrow().get(&ssrc).cloned();
            if let Some(s) = &stream {
                if order.drop_audio {
                    s.drop_audio();
                }
                if let Some(span) = order.record_file_span {
                    s.set_recording_spanning(true, Some(span), &shard.config);
                }
            }
            let _ = reply.send(stream.is_some());
        }
        ShardMsg::Record { ssrc, on, reply } => {
            let stream = shard.streams.borrow().get(&ssrc).cloned();
            let _ = reply.send(stream.map(|s| s.set_recording(on, &shard.config)));
        }
        ShardMsg::Alarm { ssrc, alarm_id, post, reply } => {
            let stream = shard.streams.borrow().get(&ssrc).cloned();
            let _ = reply.send(stream.map(|s| s.alarm(alarm_id, post, &shard.config)));
        }
        ShardMsg::StartSend { ssrc, spec, reply } => {
            let stream = shard.streams.borrow().get(&ssrc).cloned();
            let shard = shard.clone();
            glommio::spawn_local(async move {
                let result = match stream {
                    Some(s) => super::rtp_send::start(&shard, &s, spec).await,
                    None => Err(super::rtp_send::SendError::NoStream),
                };
                let _ = reply.send(result);
            })
            .detach();
        }
        ShardMsg::StopSend { ssrc, key, reply } => {
            let stream = shard.streams.borrow().get(&ssrc).cloned();
            let _ = reply.send(stream.map(|s| s.stop_senders(key, super::rtp_send::SendEnd::Stopped, "stopped (stopSendRtp)")));
        }
        ShardMsg::SendStopped(stopped) => {
            if let Some(hook) = shard.on_send_stopped.get() {
                hook(stopped);
            }
        }
        ShardMsg::KeyframeWanted { ssrc } => {
            if let Some(hook) = shard.on_keyframe_wanted.get() {
                hook(ssrc);
            }
        }
        ShardMsg::RecordingClosed(info) => {
            if let Some(hook) = shard.on_recording_closed.get() {
                hook(info);
            }
        }
        ShardMsg::ListStreams { reply } => {
            let mut v: Vec<StreamInfo> = shard.streams.borrow().values().map(|s| s.info()).collect();
            v.sort_by_key(|i| i.ssrc);
            let _ = reply.send(v);
        }
    }
}

async fn tcp_accept_loop(stream: Rc<Stream>, listener: TcpListener) {
    loop {
        let conn = match listener.accept().await {
            Ok(c) => c,
            Err(error) => {
                tracing::warn!(ssrc = stream.spec.ssrc, %error, "RTP TCP accept failed");
                glommio::timer::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        track_tcp_conn(&stream, conn, Vec::new());
    }
}

/// Runs an RTP-over-TCP connection as one of the stream's (cancelled when it closes), from
/// `read` on (bytes already read from it, RFC 4571 framed). False: refused, the stream has
/// as many as it takes.
pub fn track_tcp_conn(stream: &Rc<Stream>, conn: TcpStream, read: Vec<u8>) -> bool {
    if stream.tcp_conns.borrow().len() >= TCP_CONNS_PER_STREAM_MAX {
        tracing::warn!(ssrc = stream.spec.ssrc, "too many RTP TCP connections; refusing one");
        return false;
    }
    let id = stream.next_tcp_conn.get();
    stream.next_tcp_conn.set(id + 1);
    if let Ok(peer) = conn.peer_addr() {
        stream.tcp_peers.borrow_mut().insert(id, peer);
    }
    let ip = conn.peer_addr().map_or(std::net::IpAddr::from([0, 0, 0, 0]), |p| p.ip());
    let origin = Origin::Tcp { conn: id, ip: crate::proto::ipnet::canonical(ip) };
    let s = stream.clone();
    let task = glommio::spawn_local(async move {
        tcp_conn(&s, conn, origin, read).await;
        s.tcp_conns.borrow_mut().remove(&id);
        s.tcp_peers.borrow_mut().remove(&id);
        s.source.borrow_mut().origin_closed(origin);
    })
    .detach();
    stream.tcp_conns.borrow_mut().insert(id, task);
    true
}

/// TCP active media (a=setup:active): connect to the device's media port.
/// A try's bound: callers that try again (a node's `connectRtpServer`, 3 tries 1 s apart) must
/// answer within wvp's 10 s read timeout.
pub const TCP_ACTIVE_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

async fn connect_active(stream: Rc<Stream>, addr: SocketAddr) -> Result<(), StreamCallError> {
    let conn = TcpStream::connect_timeout(addr, TCP_ACTIVE_CONNECT_TIMEOUT).await.map_err(|e| StreamCallError::Connect(e.to_string()))?;
    match track_tcp_conn(&stream, conn, Vec::new()) {
        true => Ok(()),
        false => Err(StreamCallError::TcpConnsFull),
    }
}

async fn tcp_conn(stream: &Stream, mut conn: TcpStream, origin: Origin, read: Vec<u8>) {
    let peer = conn.peer_addr().ok();
    tracing::info!(ssrc = stream.spec.ssrc, ?peer, "RTP over TCP connected");
    let mut deframer = Rfc4571Deframer::default();
    deframer.push(&read);
    let now = Instant::now();
    while let Some(packet) = deframer.pop() {
        stream.on_packet(packet, "tcp", origin, now);
    }
    let mut buf = vec![0u8; TCP_READ_BYTES];
    loop {
        match conn.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                deframer.push(&buf[..n]);
                let now = Instant::now();
                while let Some(packet) = deframer.pop() {
                    stream.on_packet(packet, "tcp", origin, now);
                }
                debug_assert!(deframer.buffered() <= 2 + RTP_PACKET_BYTES_MAX + TCP_READ_BYTES);
            }
            Err(error) => {
                tracing::info!(ssrc = stream.spec.ssrc, %error, "RTP TCP read failed");
                break;
            }
        }
    }
    tracing::info!(ssrc = stream.spec.ssrc, ?peer, "RTP over TCP closed");
}

/// Per media shard, forever: bitrate per interval, idle-stream reaping.
pub async fn housekeeping(shard: Rc<Shard>) {
    let idle = Duration::from_secs(shard.config.rtp.idle_timeout_s);
    loop {
        glommio::timer::sleep(HOUSEKEEPING_INTERVAL).await;
        let mut idle_ssrcs = Vec::new();
        for (ssrc, s) in shard.streams.borrow().iter() {
            let bytes = s.pipeline.borrow().stats.bytes;
            let (last, _) = s.bitrate.get();
            let kbps = (bytes - last) * 8 / 1000 / HOUSEKEEPING_INTERVAL.as_secs().max(1);
            s.bitrate.set((bytes, kbps));
            if s.hls_requested.get().is_some_and(|t| t.elapsed() > Duration::from_secs(shard.config.hls.idle_timeout_s)) {
                let mut p = s.pipeline.borrow_mut();
                (p.hls, p.hls_fmp4) = (None, None);
                s.hls_requested.set(None);
                tracing::info!(ssrc = *ssrc, "HLS stopped: no requests");
            }
            let quiet_since = s.last_packet.get().unwrap_or(s.created);
            // Downloads are the control plane's to end (it resumes a device that drops).
            // An announcement (local) is the control's too: it waits for the device's INVITE
            // before its first packet, and closes at its end or the broadcast's.
            let managed = s.spec.is_static || s.spec.local || s.paused.get() || matches!(s.spec.history, Some(History::Download { .. }));
            if !managed && quiet_since.elapsed() > idle {
                idle_ssrcs.push(*ssrc);
            }
        }
        for ssrc in idle_ssrcs {
            close_stream(&shard, ssrc, "idle");
        }
        // Recordings closed: the control plane makes events of them.
        for info in shard.record_writers.take_closed() {
            let _ = shard.send(super::CONTROL, ShardMsg::RecordingClosed(info)).await;
        }
    }
}
