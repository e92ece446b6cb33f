//! Per-stream ingest pipeline without IO: RTP datagram -> reorder -> PS demux or RTP
//! depacketize -> timestamp unwrap -> FLV tags. Owned by the stream's shard.

use crate::proto::flv::{FlvMuxer, FlvTag};
use crate::proto::frame::{Codec, Frame, TimestampUnwrapper};
use crate::proto::gop::GopFrames;
use crate::proto::ps::{PsDemuxer, PsEvent};
use crate::proto::rtp::{ReorderBuffer, RtpPacket, SeqStats};
use crate::proto::rtp_depack::{DepackEvent, Depacketizer};
use crate::proto::sdp::{PayloadKind, RtpMap};
use crate::proto::ts_demux::{TsDemuxer, TsEvent};
use bytes::Bytes;

const PS_CLOCK_BITS: u32 = 33;
/// RFC 3551: payload types from here on mean what the session's SDP says (0-95 are fixed).
const DYNAMIC_PAYLOAD_TYPE_MIN: u8 = 96;
const RTP_CLOCK_BITS: u32 = 32;
const VIDEO_CLOCK_HZ: u64 = 90_000;
const G711_CLOCK_HZ: u64 = 8_000;
/// Packets of an undescribed dynamic payload type dropped while waiting for one that tells
/// what it carries (`sniff`); past this many the GB28181 default (PS) is taken.
pub const SNIFF_PACKETS_MAX: u64 = 2_000;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PipelineStats {
    pub packets: u64,
    pub bytes: u64,
    pub rtp_errors: u64,
    pub demux_errors: u64,
    pub frames: u64,
    pub video_frames: u64,
    pub keyframes: u64,
    /// Media time between the last two keyframes (the GOP), ms.
    pub gop_ms: u64,
    /// Decode time between the last two pictures, 90 kHz (the frame rate's inverse).
    pub video_interval_90k: u64,
    last_video_dts: Option<u64>,
    pub ssrc_changes: u64,
    /// Packets dropped while the payload of an undescribed stream was still unknown.
    pub sniff_dropped: u64,
    /// Audio frames dropped because the stream is video only (`drop_audio`).
    pub audio_dropped: u64,
}

pub struct Pipeline {
    /// From the SDP; empty for GB28181 streams opened without one.
    map: RtpMap,
    ssrc: Option<u32>,
    reorder: ReorderBuffer,
    /// Loss/reorder counters of earlier SSRCs on this port.
    seq_history: SeqStats,
    ps: PsDemuxer,
    /// Present once the stream turned out to carry MPEG-TS (payload type 33, an `MP2T`
    /// rtpmap, or TS packets where PS was expected).
    ts: Option<TsDemuxer>,
    depack: Option<Depacketizer>,
    ps_clock: TimestampUnwrapper,
    video_clock: TimestampUnwrapper,
    audio_clock: TimestampUnwrapper,
    pub flv: FlvMuxer,
    /// FLV tags are built only while a viewer takes them (`stop_flv_at_keyframe`,
    /// `resume_flv`): while none does, the GOP since the latest video keyframe is kept here
    /// as frames instead.
    flv_idle: Option<GopFrames>,
    /// No FLV viewer is left: muxing stops at the next video keyframe, from which the GOP is
    /// kept (up to this many bytes).
    flv_stop_at_keyframe: Option<usize>,
    /// Present while someone plays the stream as HLS with MPEG-TS segments.
    pub hls: Option<crate::proto::hls::HlsSegmenter>,
    /// Present while someone plays the stream as HLS with fMP4 (CMAF) segments.
    pub hls_fmp4: Option<crate::proto::hls::HlsSegmenter>,
    /// Present while recording: emitted frames for the recorder (shared buffers, no copy).
    pub frames_out: Option<Vec<Frame>>,
    /// The latest video keyframe (shared buffer), for covers.
    pub last_keyframe: Option<Frame>,
    /// One monotonic output clock across the input's jumps: a device seeking, resuming or
    /// changing speed, a camera restarting, a capture looping.
    pub retimer: crate::proto::retime::Retimer,
    /// Dynamic payload types the SDP does not name are guessed from their bytes (streams
    /// opened for an unknown SSRC), not taken for PS.
    sniff: bool,
    /// Audio is dropped before anything sees it (a node's `only_track=2` or `on_publish`
    /// answering `enable_audio: false`): viewers, HLS, recordings and the stream's info.
    pub drop_audio: bool,
    pub stats: PipelineStats,
    /// Frames come whole from an in-process demuxer (RTMP's FLV, a pull proxy), not as RTP:
    /// what they came in, for reporting.
    framed_by: Option<&'static str>,
    ordered: Vec<RtpPacket>,
    ps_events: Vec<PsEvent>,
    ts_events: Vec<TsEvent>,
    depack_events: Vec<DepackEvent>,
}

impl Pipeline {
    pub fn new(map: RtpMap) -> Pipeline {
        let mut flv = FlvMuxer::new();
        for (pt, kind, _) in &map.entries {
            if let PayloadKind::Video(codec) = kind {
                for nal in map.sprop_parameter_sets(*pt) {
                    flv.add_parameter_set(*codec, &nal);
                }
            }
        }
        Pipeline {
            map,
            ssrc: None,
            reorder: ReorderBuffer::new(),
            seq_history: SeqStats::default(),
            ps: PsDemuxer::new(),
            ts: None,
            depack: None,
            ps_clock: TimestampUnwrapper::new(PS_CLOCK_BITS),
            video_clock: TimestampUnwrapper::new(RTP_CLOCK_BITS),
            audio_clock: TimestampUnwrapper::new(RTP_CLOCK_BITS),
            flv,
            flv_idle: None,
            flv_stop_at_keyframe: None,
            hls: None,
            hls_fmp4: None,
            frames_out: None,
            retimer: Default::default(),
            sniff: false,
            drop_audio: false,
            last_keyframe: None,
            stats: PipelineStats::default(),
            framed_by: None,
            ordered: Vec::new(),
            ps_events: Vec::new(),
            ts_events: Vec::new(),
            depack_events: Vec::new(),
        }
    }

    /// What the stream's RTP carries, for reporting.
    pub fn payload_name(&self) -> &'static str {
        if let Some(format) = self.framed_by {
            return format;
        }
        if self.ts.is_some() {
            return "ts";
        }
        match self.map.entries.iter().find(|(_, k, _)| !matches!(k, PayloadKind::Audio(_))) {
            Some((_, PayloadKind::Video(Codec::H265), _)) => "h265",
            Some((_, PayloadKind::Video(_), _)) => "h264",
            _ => "ps",
        }
    }

    pub fn seq_stats(&self) -> SeqStats {
        let (a, b) = (self.seq_history, self.reorder.stats);
        SeqStats {
            received: a.received + b.received,
            lost: a.lost + b.lost,
            duplicates: a.duplicates + b.duplicates,
            reordered: a.reordered + b.reordered,
            resets: a.resets + b.resets,
        }
    }

    /// PS pictures are cut on the RTP marker (the device's markers proved reliable).
    pub fn low_latency(&self) -> bool {
        self.ps.low_latency()
    }

    /// Guess undescribed dynamic payload types from their bytes (see `sniff`).
    pub fn sniff_payloads(&mut self) {
        self.sniff = true;
    }

    /// The kind of an undescribed dynamic payload type, learned from this packet if it tells;
    /// None: drop the packet and wait for one that does.
    fn learn_kind(&mut self, p: &RtpPacket) -> Option<PayloadKind> {
        let kind = match crate::proto::sniff::sniff(&p.payload) {
            Some(kind) => kind,
            None if self.stats.sniff_dropped < SNIFF_PACKETS_MAX => {
                self.stats.sniff_dropped += 1;
                return None;
            }
            None => PayloadKind::Ps,
        };
        tracing::info!(ssrc = self.ssrc, payload_type = p.payload_type, ?kind, dropped_before = self.stats.sniff_dropped, "RTP payload type learned from its bytes");
        self.map.entries.push((p.payload_type, kind, None));
        Some(kind)
    }

    pub fn ssrc(&self) -> Option<u32> {
        self.ssrc
    }

    /// GB28181 payload types when no SDP says otherwise (GB/T 28181 Annex: 96 PS, 98 H.264).
    fn kind(&self, payload_type: u8) -> PayloadKind {
        if let Some(k) = self.map.kind(payload_type) {
            return k;
        }
        match payload_type {
            98 if self.map.entries.is_empty() => PayloadKind::Video(Codec::H264),
            8 => PayloadKind::Audio(Codec::Pcma),
            0 => PayloadKind::Audio(Codec::Pcmu),
            33 => PayloadKind::Ts,
            _ => PayloadKind::Ps,
        }
    }

    /// The sender starts over (another SSRC, a new INVITE): what is held goes out, and its
    /// sequence numbers count afresh.
    pub fn restart_sequence(&mut self, tags: &mut Vec<FlvTag>) {
        self.flush(tags);
        self.seq_history = self.seq_stats();
        self.reorder = ReorderBuffer::new();
    }

    /// Feeds one RTP packet (UDP datagram or RFC 4571 frame) that arrived at `now_ms`
    /// (any monotonic clock); appends resulting FLV tags.
    pub fn on_packet(&mut self, datagram: Bytes, now_ms: u64, tags: &mut Vec<FlvTag>) {
        self.stats.packets += 1;
        self.stats.bytes += datagram.len() as u64;
        let packet = match RtpPacket::parse(datagram) {
            Ok(p) => p,
            Err(error) => {
                self.stats.rtp_errors += 1;
                tracing::debug!(ssrc = self.ssrc, %error, "bad RTP packet");
                return;
            }
        };
        if self.ssrc != Some(packet.ssrc) {
            if let Some(old) = self.ssrc {
                // Devices restart or answer with another SSRC: follow the new one.
                tracing::info!(old_ssrc = old, ssrc = packet.ssrc, "RTP SSRC changed");
                self.stats.ssrc_changes += 1;
                self.restart_sequence(tags);
            }
            self.ssrc = Some(packet.ssrc);
        }
        let mut ordered = std::mem::take(&mut self.ordered);
        let lost_before = self.reorder.stats.lost;
        self.reorder.push(packet, now_ms, &mut ordered);
        let gap = self.reorder.stats.lost != lost_before;
        for (i, p) in ordered.drain(..).enumerate() {
            if gap && i == 0 {
                let mut events = std::mem::take(&mut self.ps_events);
                self.ps.note_loss(&mut events);
                self.on_ps_events(&mut events, tags);
                self.ps_events = events;
                if let Some(ts) = self.ts.as_mut() {
                    ts.note_loss();
                }
            }
            self.on_ordered(p, tags);
        }
        self.ordered = ordered;
    }

    /// A whole frame from an in-process demuxer (`format`: what it came in, "flv" for RTMP),
    /// its times on a 90 kHz clock already monotonic; appends resulting FLV tags.
    pub fn on_frame(&mut self, frame: Frame, format: &'static str, tags: &mut Vec<FlvTag>) {
        self.framed_by = Some(format);
        self.stats.packets += 1;
        self.stats.bytes += frame.data.len() as u64;
        self.emit(frame, tags);
    }

    /// Releases anything held (reorder window, partial frames); call when the stream ends.
    pub fn flush(&mut self, tags: &mut Vec<FlvTag>) {
        let mut ordered = std::mem::take(&mut self.ordered);
        self.reorder.flush(&mut ordered);
        for p in ordered.drain(..) {
            self.on_ordered(p, tags);
        }
        self.ordered = ordered;
        let mut events = std::mem::take(&mut self.ps_events);
        self.ps.flush(&mut events);
        self.on_ps_events(&mut events, tags);
        self.ps_events = events;
        if let Some(ts) = self.ts.as_mut() {
            let mut events = std::mem::take(&mut self.ts_events);
            ts.flush(&mut events);
            self.on_ts_events(&mut events, tags);
            self.ts_events = events;
        }
    }

    fn on_ordered(&mut self, p: RtpPacket, tags: &mut Vec<FlvTag>) {
        let mut kind = self.kind(p.payload_type);
        if self.sniff && p.payload_type >= DYNAMIC_PAYLOAD_TYPE_MIN && self.map.kind(p.payload_type).is_none() {
            match self.learn_kind(&p) {
                Some(k) => kind = k,
                None => return,
            }
        }
        // TS where PS was assumed (a GB stream fed by a TS encoder or `ffmpeg -f rtp_mpegts`
        // with a dynamic type): PS demuxing it would make garbage pictures.
        if kind == PayloadKind::Ps && (self.ts.is_some() || (self.stats.frames == 0 && TsDemuxer::sniff(&p.payload))) {
            kind = PayloadKind::Ts;
        }
        match kind {
            PayloadKind::Ts => {
                let ts = self.ts.get_or_insert_with(|| {
                    tracing::info!(ssrc = self.ssrc, payload_type = p.payload_type, "RTP carries MPEG-TS: demuxing it as TS");
                    TsDemuxer::new()
                });
                let mut events = std::mem::take(&mut self.ts_events);
                ts.push(&p.payload, &mut events);
                self.on_ts_events(&mut events, tags);
                self.ts_events = events;
            }
            PayloadKind::Ps => {
                let mut events = std::mem::take(&mut self.ps_events);
                self.ps.push(&p.payload, p.timestamp, &mut events);
                if p.marker {
                    self.ps.end_of_frame(&mut events);
                }
                self.on_ps_events(&mut events, tags);
                self.ps_events = events;
            }
            PayloadKind::Video(codec) => {
                let mut events = std::mem::take(&mut self.depack_events);
                let depack = self.depack.get_or_insert_with(|| Depacketizer::new(codec));
                depack.push(&p, &mut events);
                for e in events.drain(..) {
                    match e {
                        DepackEvent::Frame(mut f) => {
                            let ts = self.video_clock.unwrap(f.pts);
                            (f.pts, f.dts) = (ts, ts);
                            self.emit(f, tags);
                        }
                        DepackEvent::Error(error) => {
                            self.stats.demux_errors += 1;
                            tracing::debug!(ssrc = self.ssrc, ?error, "RTP depacketize error");
                        }
                    }
                }
                self.depack_events = events;
            }
            PayloadKind::Audio(codec) => {
                let ts = self.audio_clock.unwrap(u64::from(p.timestamp)) * VIDEO_CLOCK_HZ / G711_CLOCK_HZ;
                // Copied: the packet is a slice of the receive loop's slab, which a frame kept
                // in the GOP would hold for seconds (`recv_batch`).
                let data = Bytes::copy_from_slice(&p.payload);
                self.emit(Frame { codec, pts: ts, dts: ts, keyframe: true, data }, tags);
            }
        }
    }

    fn on_ps_events(&mut self, events: &mut Vec<PsEvent>, tags: &mut Vec<FlvTag>) {
        for e in events.drain(..) {
            match e {
                PsEvent::Frame(f) => self.emit_mpeg_clocked(f, tags),
                PsEvent::Error(error) => {
                    self.stats.demux_errors += 1;
                    tracing::debug!(ssrc = self.ssrc, ?error, "PS demux error");
                }
            }
        }
    }

    fn on_ts_events(&mut self, events: &mut Vec<TsEvent>, tags: &mut Vec<FlvTag>) {
        for e in events.drain(..) {
            match e {
                TsEvent::Frame(f) => self.emit_mpeg_clocked(f, tags),
                TsEvent::Error(error) => {
                    self.stats.demux_errors += 1;
                    tracing::debug!(ssrc = self.ssrc, ?error, "TS demux error");
                }
            }
        }
    }

    /// A frame with 33-bit MPEG system timestamps (PS or TS): one clock for all its tracks
    /// keeps audio and video aligned.
    fn emit_mpeg_clocked(&mut self, mut f: Frame, tags: &mut Vec<FlvTag>) {
        let dts = self.ps_clock.unwrap(f.dts);
        let offset = (f.pts.wrapping_sub(f.dts)) & ((1 << PS_CLOCK_BITS) - 1);
        f.dts = dts;
        f.pts = if offset < (1 << (PS_CLOCK_BITS - 1)) { dts + offset } else { dts };
        self.emit(f, tags);
    }

    /// No FLV viewer takes the tags: muxing stops at the next video keyframe and the GOP from
    /// there on is kept as frames (up to `gop_bytes_max`). A stream nobody plays as FLV
    /// (recorded, sent on, played over WebRTC or not at all) copies no frame into tags.
    pub fn stop_flv_at_keyframe(&mut self, gop_bytes_max: usize) {
        if self.flv_idle.is_none() {
            self.flv_stop_at_keyframe = Some(gop_bytes_max);
        }
    }

    /// An FLV viewer comes: muxing goes on (or starts again), and if it had stopped, sequence
    /// headers, metadata and the kept GOP's tags go to `tags` first, as they would have been
    /// built; true then.
    pub fn resume_flv(&mut self, tags: &mut Vec<FlvTag>) -> bool {
        self.flv_stop_at_keyframe = None;
        let Some(gop) = self.flv_idle.take() else { return false };
        self.flv.config_tags(tags);
        for frame in gop.into_frames() {
            self.flv.push(&frame, tags);
        }
        true
    }

    /// From now on the stream is video only (a node's `enable_audio: false`): audio is dropped
    /// on arrival, and the muxer and the GOP kept for a first FLV viewer forget theirs.
    pub fn forget_audio(&mut self) {
        self.drop_audio = true;
        self.flv.forget_audio();
        if let Some(gop) = self.flv_idle.as_mut() {
            gop.forget_audio();
        }
    }

    /// No FLV tags are built now (`stop_flv_at_keyframe`).
    pub fn flv_idle(&self) -> bool {
        self.flv_idle.is_some()
    }

    /// The HLS segmenter of a segment format.
    pub fn hls_of(&mut self, format: crate::proto::hls::SegmentFormat) -> &mut Option<crate::proto::hls::HlsSegmenter> {
        match format {
            crate::proto::hls::SegmentFormat::Ts => &mut self.hls,
            crate::proto::hls::SegmentFormat::Fmp4 => &mut self.hls_fmp4,
        }
    }

    fn emit(&mut self, mut frame: Frame, tags: &mut Vec<FlvTag>) {
        if self.drop_audio && !frame.codec.is_video() {
            self.stats.audio_dropped += 1;
            return;
        }
        self.stats.frames += 1;
        self.retimer.retime(&mut frame);
        if let Some(bytes_max) = self.flv_stop_at_keyframe.filter(|_| frame.codec.is_video() && frame.keyframe) {
            self.flv_stop_at_keyframe = None;
            self.flv_idle = Some(GopFrames::new(bytes_max));
        }
        match self.flv_idle.as_mut() {
            Some(gop) => {
                self.flv.observe(&frame);
                gop.push(&frame);
            }
            None => self.flv.push(&frame, tags),
        }
        for hls in [&mut self.hls, &mut self.hls_fmp4].into_iter().flatten() {
            hls.push(&frame);
        }
        if frame.codec.is_video() {
            self.stats.video_frames += 1;
            if let Some(last) = self.stats.last_video_dts.replace(frame.dts) {
                self.stats.video_interval_90k = frame.dts.saturating_sub(last);
            }
        }
        if frame.keyframe && frame.codec.is_video() {
            self.stats.keyframes += 1;
            if let Some(last) = &self.last_keyframe {
                self.stats.gop_ms = frame.dts.saturating_sub(last.dts) / 90;
            }
            self.last_keyframe = Some(frame.clone());
        }
        if let Some(out) = self.frames_out.as_mut() {
            out.push(frame);
        }
    }
}
