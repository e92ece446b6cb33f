//! FLV muxer (Adobe FLV v10.1, plus enhanced-RTMP 'hvc1' for H.265).
//!
//! One `FlvMuxer` per stream turns frames (with unwrapped 90 kHz timestamps) into tags once;
//! subscribers share the resulting `Bytes`. It tracks parameter sets so a new subscriber can
//! be sent header, metadata and sequence headers before the cached GOP.

use super::aac::{AAC_SAMPLES_PER_FRAME, AdtsHeader, adts_frames};
use super::frame::{Codec, Frame};
use super::h26x::{self, ParamSets, SpsInfo};
use bytes::{BufMut, Bytes, BytesMut};

pub const TAG_AUDIO: u8 = 8;
pub const TAG_VIDEO: u8 = 9;
pub const TAG_SCRIPT: u8 = 18;
const TAG_HEADER_BYTES: usize = 11;
const PREV_TAG_SIZE_BYTES: usize = 4;
const FOURCC_HVC1: &[u8; 4] = b"hvc1";
const AVC_CODEC_ID: u8 = 7;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlvTag {
    /// The whole tag: header, body and trailing PreviousTagSize.
    pub data: Bytes,
    pub is_video: bool,
    pub keyframe: bool,
    /// Metadata or a sequence header: needed again by anyone who resumes mid-stream.
    pub config: bool,
}

/// `FLV` signature, flags and PreviousTagSize0.
pub fn file_header(has_audio: bool, has_video: bool) -> Bytes {
    let flags = (u8::from(has_audio) << 2) | u8::from(has_video);
    Bytes::copy_from_slice(&[b'F', b'L', b'V', 1, flags, 0, 0, 0, 9, 0, 0, 0, 0])
}

fn tag(tag_type: u8, timestamp_ms: u32, body_len: usize, write_body: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut b = BytesMut::with_capacity(TAG_HEADER_BYTES + body_len + PREV_TAG_SIZE_BYTES);
    b.put_u8(tag_type);
    b.put_uint(0, 3); // DataSize, patched below
    b.put_uint(u64::from(timestamp_ms & 0x00ff_ffff), 3);
    b.put_u8((timestamp_ms >> 24) as u8);
    b.put_uint(0, 3); // StreamID
    write_body(&mut b);
    let data_size = b.len() - TAG_HEADER_BYTES;
    b[1..4].copy_from_slice(&(data_size as u32).to_be_bytes()[1..]);
    b.put_u32((TAG_HEADER_BYTES + data_size) as u32);
    b.freeze()
}

/// FLV's codec id for H.265 in the pre-enhanced-RTMP form Chinese players read (ZLMediaKit's
/// `rtmp.enhanced=0`, jessibuca v3, wvp's players).
pub const LEGACY_HEVC_CODEC_ID: u8 = 12;

/// Rewrites one tag of this muxer's H.265 in the legacy form (codec id 12, AVCPacketType and
/// composition time as for H.264) into `out`; false when the tag needs no change (anything
/// but H.265 video and metadata naming `hvc1`). The payload is copied, the headers rebuilt.
pub fn legacy_hevc(tag_bytes: &[u8], out: &mut Vec<u8>) -> bool {
    if tag_bytes.len() < TAG_HEADER_BYTES + 1 + PREV_TAG_SIZE_BYTES {
        return false;
    }
    let body = &tag_bytes[TAG_HEADER_BYTES..tag_bytes.len() - PREV_TAG_SIZE_BYTES];
    match tag_bytes[0] {
        TAG_VIDEO if body[0] & 0x80 != 0 && body.get(1..5) == Some(FOURCC_HVC1) => {
            let frame_type = (body[0] >> 4) & 0x07;
            let (packet_type, cts, payload): (u8, &[u8], &[u8]) = match body[0] & 0x0f {
                0 => (0, &[0, 0, 0], &body[5..]),
                1 if body.len() >= 8 => (1, &body[5..8], &body[8..]),
                _ => return false,
            };
            out.clear();
            out.extend_from_slice(&tag_bytes[..TAG_HEADER_BYTES]);
            out.push((frame_type << 4) | LEGACY_HEVC_CODEC_ID);
            out.push(packet_type);
            out.extend_from_slice(cts);
            out.extend_from_slice(payload);
            let data_size = out.len() - TAG_HEADER_BYTES;
            out[1..4].copy_from_slice(&(data_size as u32).to_be_bytes()[1..]);
            out.extend_from_slice(&((TAG_HEADER_BYTES + data_size) as u32).to_be_bytes());
            true
        }
        TAG_SCRIPT => {
            // `videocodecid` as a number (AMF0 0x00 + f64): the same length either way.
            let key = b"\x00\x0cvideocodecid\x00";
            let Some(at) = body.windows(key.len()).position(|w| w == key) else { return false };
            let value_at = TAG_HEADER_BYTES + at + key.len();
            let hvc1 = f64::from(u32::from_be_bytes(*FOURCC_HVC1)).to_be_bytes();
            if tag_bytes.get(value_at..value_at + 8) != Some(&hvc1[..]) {
                return false;
            }
            out.clear();
            out.extend_from_slice(tag_bytes);
            out[value_at..value_at + 8].copy_from_slice(&f64::from(LEGACY_HEVC_CODEC_ID).to_be_bytes());
            true
        }
        _ => false,
    }
}

pub struct FlvMuxer {
    video_codec: Option<Codec>,
    params: ParamSets,
    sps: Option<SpsInfo>,
    audio_codec: Option<Codec>,
    aac: Option<AdtsHeader>,
    video_seq_header: Option<Bytes>,
    audio_seq_header: Option<Bytes>,
    metadata: Option<Bytes>,
    /// 90 kHz timestamp that maps to FLV time 0.
    base: Option<u64>,
    seen_keyframe: bool,
}

impl Default for FlvMuxer {
    fn default() -> Self {
        Self::new()
    }
}

impl FlvMuxer {
    pub fn new() -> Self {
        FlvMuxer {
            video_codec: None,
            params: ParamSets::default(),
            sps: None,
            audio_codec: None,
            aac: None,
            video_seq_header: None,
            audio_seq_header: None,
            metadata: None,
            base: None,
            seen_keyframe: false,
        }
    }

    /// Seeds parameter sets known out of band (SDP sprop-parameter-sets).
    pub fn add_parameter_set(&mut self, codec: Codec, nal: &[u8]) {
        self.video_codec = Some(codec);
        self.params.observe(codec, nal);
    }

    pub fn video_info(&self) -> Option<(Codec, SpsInfo)> {
        Some((self.video_codec?, self.sps?))
    }

    /// Parameter sets seen so far (for decoders that need them out of band).
    pub fn params(&self) -> &ParamSets {
        &self.params
    }

    pub fn audio_codec(&self) -> Option<Codec> {
        self.audio_codec
    }

    /// The stream goes on without its audio: new subscribers hear of none (header, metadata,
    /// sequence headers).
    pub fn forget_audio(&mut self) {
        self.audio_codec = None;
        self.aac = None;
        self.audio_seq_header = None;
        if self.metadata.is_some() {
            self.metadata = Some(self.build_metadata());
        }
    }

    /// Everything a new subscriber needs before the first cached tag.
    pub fn preamble(&self) -> Vec<Bytes> {
        let mut v = vec![file_header(self.audio_codec.is_some(), true)];
        v.extend(self.metadata.iter().cloned());
        v.extend(self.video_seq_header.iter().cloned());
        v.extend(self.audio_seq_header.iter().cloned());
        v
    }

    fn ms(&mut self, ts90: u64) -> u32 {
        let base = *self.base.get_or_insert(ts90);
        (ts90.saturating_sub(base) / 90) as u32
    }

    /// Muxes one frame (timestamps already unwrapped, 90 kHz) into zero or more tags.
    pub fn push(&mut self, frame: &Frame, out: &mut Vec<FlvTag>) {
        if frame.codec.is_video() {
            self.push_video(frame, out);
        } else {
            self.audio(frame, Some(out));
        }
    }

    /// Learns from `frame` what `push` would (codecs, parameter sets, sequence headers,
    /// metadata, the time base) without building its tags: nobody takes them now, and the
    /// preamble stays what a viewer arriving later needs. Parameter sets precede a picture's
    /// first slice, so only a keyframe is walked to its end (a sloppy sender's late ones).
    pub fn observe(&mut self, frame: &Frame) {
        if !frame.codec.is_video() {
            return self.audio(frame, None);
        }
        let codec = frame.codec;
        self.set_video_codec(codec);
        let mut changed = false;
        let mut nals = h26x::nal_units(&frame.data);
        while frame.keyframe || nals.upcoming().is_some_and(|header| !h26x::is_vcl(codec, header)) {
            let Some(nal) = nals.next() else { break };
            changed |= self.params.observe(codec, nal);
        }
        self.refresh_video_config(codec, changed, frame.dts, None);
        if self.video_seq_header.is_some() && (self.seen_keyframe || frame.keyframe) {
            self.seen_keyframe = true;
            self.ms(frame.dts);
        }
    }

    /// Metadata and sequence headers as tags, for a viewer that resumes mid-stream.
    pub fn config_tags(&self, out: &mut Vec<FlvTag>) {
        let video = [&self.metadata, &self.video_seq_header].into_iter().flatten().map(|data| (data, true));
        for (data, is_video) in video.chain(self.audio_seq_header.iter().map(|data| (data, false))) {
            out.push(FlvTag { data: data.clone(), is_video, keyframe: false, config: true });
        }
    }

    fn set_video_codec(&mut self, codec: Codec) {
        if self.video_codec != Some(codec) {
            self.video_codec = Some(codec);
            self.params = ParamSets::default();
            self.seen_keyframe = false;
        }
    }

    /// A new sequence header (and metadata) once parameter sets changed or became complete;
    /// their tags go to `out` when given.
    fn refresh_video_config(&mut self, codec: Codec, changed: bool, dts: u64, out: Option<&mut Vec<FlvTag>>) {
        if !(changed || (self.video_seq_header.is_none() && self.params.complete(codec))) {
            return;
        }
        let dts_ms = self.ms(dts);
        if let Some(seq) = self.build_video_seq_header(codec, dts_ms) {
            self.video_seq_header = Some(seq.clone());
            self.metadata = Some(self.build_metadata());
            if let Some(out) = out {
                out.push(FlvTag { data: self.metadata.clone().expect("just set"), is_video: true, keyframe: false, config: true });
                out.push(FlvTag { data: seq, is_video: true, keyframe: false, config: true });
            }
        }
    }

    fn push_video(&mut self, frame: &Frame, out: &mut Vec<FlvTag>) {
        let codec = frame.codec;
        self.set_video_codec(codec);
        let mut changed = false;
        let mut payload_bytes = 0;
        let mut nal_count = 0;
        for nal in h26x::nal_units(&frame.data) {
            changed |= self.params.observe(codec, nal);
            payload_bytes += nal.len();
            nal_count += 1;
        }
        self.refresh_video_config(codec, changed, frame.dts, Some(out));
        if self.video_seq_header.is_none() || !(self.seen_keyframe || frame.keyframe) {
            return; // undecodable until we have parameter sets and an IDR
        }
        self.seen_keyframe = true;
        let dts_ms = self.ms(frame.dts);
        let cts = ((frame.pts as i64 - frame.dts as i64) / 90).clamp(-0x80_0000, 0x7f_ffff) as i32;
        let frame_type = if frame.keyframe { 1u8 } else { 2 };
        let body_len = 8 + payload_bytes + 4 * nal_count;
        let data = tag(TAG_VIDEO, dts_ms, body_len, |b| {
            if codec == Codec::H265 {
                b.put_u8(0x80 | (frame_type << 4) | 1); // ExHeader, CodedFrames
                b.put_slice(FOURCC_HVC1);
            } else {
                b.put_u8((frame_type << 4) | AVC_CODEC_ID);
                b.put_u8(1); // AVC NALU
            }
            b.put_uint((cts as u32 & 0x00ff_ffff) as u64, 3);
            h26x::append_length_prefixed(codec, &frame.data, b);
        });
        out.push(FlvTag { data, is_video: true, keyframe: frame.keyframe, config: false });
    }

    fn build_video_seq_header(&mut self, codec: Codec, dts_ms: u32) -> Option<Bytes> {
        if !self.params.complete(codec) {
            return None;
        }
        let sps = self.params.sps.clone()?;
        let pps = self.params.pps.clone()?;
        self.sps = h26x::parse_sps(codec, &sps).ok();
        let data = match codec {
            Codec::H265 => {
                let vps = self.params.vps.clone()?;
                let record = hevc_decoder_configuration_record(&vps, &sps, &pps, self.sps?)?;
                tag(TAG_VIDEO, dts_ms, 5 + record.len(), |b| {
                    b.put_u8(0x80 | (1 << 4)); // ExHeader, key frame, SequenceStart
                    b.put_slice(FOURCC_HVC1);
                    b.put_slice(&record);
                })
            }
            _ => {
                let record = avc_decoder_configuration_record(&sps, &pps)?;
                tag(TAG_VIDEO, dts_ms, 5 + record.len(), |b| {
                    b.put_u8((1 << 4) | AVC_CODEC_ID);
                    b.put_u8(0); // AVC sequence header
                    b.put_uint(0, 3);
                    b.put_slice(&record);
                })
            }
        };
        Some(data)
    }

    /// Audio's tags go to `out` when given; without it only the state is kept (`observe`).
    fn audio(&mut self, frame: &Frame, mut out: Option<&mut Vec<FlvTag>>) {
        let ms = self.ms(frame.dts);
        let first_audio = self.audio_codec != Some(frame.codec);
        self.audio_codec = Some(frame.codec);
        match frame.codec {
            Codec::Pcma | Codec::Pcmu => {
                if first_audio {
                    self.metadata = Some(self.build_metadata());
                }
                let Some(out) = out else { return };
                // SoundFormat 7/8, 16-bit, mono; the rate bits are ignored for G.711 (always 8 kHz).
                let flags = if frame.codec == Codec::Pcma { 0x72 } else { 0x82 };
                let data = tag(TAG_AUDIO, ms, 1 + frame.data.len(), |b| {
                    b.put_u8(flags);
                    b.put_slice(&frame.data);
                });
                out.push(FlvTag { data, is_video: false, keyframe: false, config: false });
            }
            Codec::Aac => {
                for (i, (h, raw)) in adts_frames(&frame.data).enumerate() {
                    if self.aac.is_none_or(|a| a.audio_specific_config() != h.audio_specific_config()) {
                        self.aac = Some(h);
                        let asc = h.audio_specific_config();
                        let seq = tag(TAG_AUDIO, ms, 4, |b| {
                            b.put_slice(&[0xaf, 0]);
                            b.put_slice(&asc);
                        });
                        self.audio_seq_header = Some(seq.clone());
                        self.metadata = Some(self.build_metadata());
                        if let Some(out) = out.as_deref_mut() {
                            out.push(FlvTag { data: seq, is_video: false, keyframe: false, config: true });
                        }
                    }
                    let Some(out) = out.as_deref_mut() else { continue };
                    let offset_ms = (i as u64 * u64::from(AAC_SAMPLES_PER_FRAME) * 1000 / u64::from(h.sample_rate())) as u32;
                    let data = tag(TAG_AUDIO, ms.wrapping_add(offset_ms), 2 + raw.len(), |b| {
                        b.put_slice(&[0xaf, 1]);
                        b.put_slice(raw);
                    });
                    out.push(FlvTag { data, is_video: false, keyframe: false, config: false });
                }
            }
            Codec::H264 | Codec::H265 => {}
        }
    }

    fn build_metadata(&self) -> Bytes {
        let mut props: Vec<(&str, f64)> = Vec::new();
        if let (Some(codec), Some(sps)) = (self.video_codec, self.sps) {
            props.push(("width", f64::from(sps.width)));
            props.push(("height", f64::from(sps.height)));
            let id = if codec == Codec::H265 { f64::from(u32::from_be_bytes(*FOURCC_HVC1)) } else { f64::from(AVC_CODEC_ID) };
            props.push(("videocodecid", id));
        }
        match self.audio_codec {
            Some(Codec::Pcma) => props.push(("audiocodecid", 7.0)),
            Some(Codec::Pcmu) => props.push(("audiocodecid", 8.0)),
            Some(Codec::Aac) => props.push(("audiocodecid", 10.0)),
            _ => {}
        }
        let mut body = BytesMut::new();
        amf0_string(&mut body, "onMetaData");
        body.put_u8(0x08); // ECMA array
        body.put_u32(props.len() as u32);
        for (k, v) in props {
            body.put_u16(k.len() as u16);
            body.put_slice(k.as_bytes());
            body.put_u8(0x00);
            body.put_f64(v);
        }
        body.put_slice(&[0, 0, 9]);
        tag(TAG_SCRIPT, 0, body.len(), |b| b.put_slice(&body))
    }
}

fn amf0_string(b: &mut BytesMut, s: &str) {
    b.put_u8(0x02);
    b.put_u16(s.len() as u16);
    b.put_slice(s.as_bytes());
}

/// ISO 14496-15 §5.3.3.1 AVCDecoderConfigurationRecord with one SPS and one PPS.
pub fn avc_decoder_configuration_record(sps: &[u8], pps: &[u8]) -> Option<Vec<u8>> {
    if sps.len() < 4 || sps.len() > 0xffff || pps.len() > 0xffff {
        return None;
    }
    let mut r = Vec::with_capacity(11 + sps.len() + pps.len());
    r.extend_from_slice(&[1, sps[1], sps[2], sps[3], 0xff, 0xe1]);
    r.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    r.extend_from_slice(sps);
    r.push(1);
    r.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    r.extend_from_slice(pps);
    Some(r)
}

/// ISO 14496-15 §8.3.3.1 HEVCDecoderConfigurationRecord with one VPS, SPS and PPS.
pub fn hevc_decoder_configuration_record(vps: &[u8], sps: &[u8], pps: &[u8], info: SpsInfo) -> Option<Vec<u8>> {
    let rbsp = super::bits::unescape_rbsp(sps);
    let ptl = rbsp.get(h26x::H265_SPS_PTL_OFFSET..h26x::H265_SPS_PTL_OFFSET + h26x::H265_PTL_GENERAL_BYTES)?;
    if [vps.len(), sps.len(), pps.len()].iter().any(|&l| l > 0xffff) {
        return None;
    }
    let mut r = Vec::with_capacity(23 + 15 + vps.len() + sps.len() + pps.len());
    r.push(1);
    r.extend_from_slice(ptl); // profile space/tier/idc, compatibility flags, constraints, level
    r.extend_from_slice(&[0xf0, 0x00]); // min_spatial_segmentation_idc = 0
    r.push(0xfc); // parallelismType = 0
    r.push(0xfc | (info.chroma_format_idc as u8 & 0x03));
    r.push(0xf8 | ((info.bit_depth_luma - 8) as u8 & 0x07));
    r.push(0xf8 | ((info.bit_depth_chroma - 8) as u8 & 0x07));
    r.extend_from_slice(&[0, 0]); // avgFrameRate unknown
    r.push((((info.temporal_layers as u8) & 0x07) << 3) | (u8::from(info.temporal_id_nested) << 2) | 0x03);
    r.push(3);
    for (nal_type, nal) in [(h26x::H265_NAL_VPS, vps), (h26x::H265_NAL_SPS, sps), (h26x::H265_NAL_PPS, pps)] {
        r.push(0x80 | nal_type);
        r.extend_from_slice(&1u16.to_be_bytes());
        r.extend_from_slice(&(nal.len() as u16).to_be_bytes());
        r.extend_from_slice(nal);
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPS: &[u8] =
        &[0x67, 0x64, 0x00, 0x0d, 0xac, 0xb2, 0x02, 0x83, 0xf6, 0x02, 0x20, 0x00, 0x00, 0x03, 0x00, 0x20, 0x00, 0x00, 0x06, 0x41, 0xe2, 0x85, 0x49];
    const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];

    fn annexb(nals: &[&[u8]]) -> Bytes {
        let mut v = Vec::new();
        for n in nals {
            v.extend_from_slice(&[0, 0, 0, 1]);
            v.extend_from_slice(n);
        }
        Bytes::from(v)
    }

    fn video(pts: u64, key: bool) -> Frame {
        let data = if key { annexb(&[&[0x09, 0xf0], SPS, PPS, &[0x65, 0x88, 0x84]]) } else { annexb(&[&[0x41, 0x9a, 0x02]]) };
        Frame { codec: Codec::H264, pts, dts: pts, keyframe: key, data }
    }

    /// Splits a stream of concatenated tags into (type, timestamp, body).
    fn parse_tags(mut b: &[u8]) -> Vec<(u8, u32, Vec<u8>)> {
        let mut v = Vec::new();
        while b.len() >= 15 {
            let size = u32::from_be_bytes([0, b[1], b[2], b[3]]) as usize;
            let ts = u32::from_be_bytes([b[7], b[4], b[5], b[6]]);
            v.push((b[0], ts, b[11..11 + size].to_vec()));
            assert_eq!(u32::from_be_bytes(b[11 + size..15 + size].try_into().unwrap()) as usize, 11 + size);
            b = &b[15 + size..];
        }
        v
    }

    #[test]
    fn muxes_avc_sequence_header_then_avcc_frames() {
        let mut m = FlvMuxer::new();
        let mut out = Vec::new();
        m.push(&video(900, false), &mut out);
        assert!(out.is_empty(), "nothing before parameter sets and IDR");
        m.push(&video(9000, true), &mut out);
        m.push(&video(12600, false), &mut out);
        let bytes: Vec<u8> = out.iter().flat_map(|t| t.data.to_vec()).collect();
        let tags = parse_tags(&bytes);
        assert_eq!(tags.iter().map(|t| t.0).collect::<Vec<_>>(), vec![TAG_SCRIPT, TAG_VIDEO, TAG_VIDEO, TAG_VIDEO]);
        let seq = &tags[1].2;
        assert_eq!(&seq[..2], &[0x17, 0]);
        assert_eq!(&seq[5..11], &[1, 0x64, 0x00, 0x0d, 0xff, 0xe1]);
        let idr = &tags[2].2;
        assert_eq!(&idr[..5], &[0x17, 1, 0, 0, 0]);
        assert_eq!(&idr[5..], &[0, 0, 0, 3, 0x65, 0x88, 0x84], "AUD/SPS/PPS stripped, length-prefixed");
        assert_eq!((tags[2].1, tags[3].1), (0, 40), "ms from the first frame sent");
        assert!(out[2].keyframe && !out[3].keyframe);
        assert_eq!(m.video_info().map(|(_, s)| (s.width, s.height)), Some((320, 240)));
        let pre = m.preamble();
        assert_eq!(&pre[0][..3], b"FLV");
        assert_eq!(pre.len(), 3);
    }

    #[test]
    fn observed_frames_leave_the_muxer_as_if_it_had_muxed_them() {
        let pcma = |pts| Frame { codec: Codec::Pcma, pts, dts: pts, keyframe: true, data: Bytes::from_static(&[0xd5; 160]) };
        let frames: Vec<Frame> = (0..12u64)
            .flat_map(|i| [video(900 + i * 3600, i % 4 == 1), pcma(900 + i * 3600)])
            .collect();
        let mut always = FlvMuxer::new();
        let mut tags = Vec::new();
        for f in &frames {
            always.push(f, &mut tags);
        }
        // Observed up to the keyframe at index 10 (i = 5), muxed from there.
        let mut lazy = FlvMuxer::new();
        for f in &frames[..10] {
            lazy.observe(f);
        }
        assert!(frames[10].keyframe);
        assert_eq!(lazy.preamble(), always.preamble());
        assert_eq!(lazy.video_info(), always.video_info());
        assert_eq!(lazy.audio_codec(), Some(Codec::Pcma));
        let mut config = Vec::new();
        lazy.config_tags(&mut config);
        assert_eq!(config.iter().map(|t| t.data.clone()).collect::<Vec<_>>(), always.preamble()[1..].to_vec());
        assert!(config.iter().all(|t| t.config));
        let mut late = Vec::new();
        for f in &frames[10..] {
            lazy.push(f, &mut late);
        }
        let media: Vec<Bytes> = tags.iter().filter(|t| !t.config).map(|t| t.data.clone()).collect();
        let late: Vec<Bytes> = late.iter().map(|t| t.data.clone()).collect();
        assert_eq!(late[..], media[media.len() - late.len()..], "the same bytes, timestamps included");
        assert_eq!(late.len(), 14);
    }

    #[test]
    fn muxes_g711_and_aac() {
        let mut m = FlvMuxer::new();
        let mut out = Vec::new();
        m.push(&Frame { codec: Codec::Pcma, pts: 0, dts: 0, keyframe: true, data: Bytes::from_static(&[0xd5; 160]) }, &mut out);
        let adts = [0xff, 0xf1, 0x50, 0x80, 0x01, 0x5f, 0xfc, 1, 2, 3];
        let two: Vec<u8> = adts.iter().chain(adts.iter()).copied().collect();
        m.push(&Frame { codec: Codec::Aac, pts: 9000, dts: 9000, keyframe: true, data: Bytes::from(two) }, &mut out);
        let bytes: Vec<u8> = out.iter().flat_map(|t| t.data.to_vec()).collect();
        let tags = parse_tags(&bytes);
        assert_eq!(tags[0].2[0], 0x72);
        assert_eq!(tags[0].2.len(), 161);
        assert_eq!(tags[1].2, vec![0xaf, 0, 0x12, 0x10]);
        assert_eq!((tags[2].1, tags[3].1), (100, 123));
        assert_eq!(tags[3].2, vec![0xaf, 1, 1, 2, 3]);
    }

    #[test]
    fn hevc_uses_enhanced_rtmp_fourcc() {
        let vps: &[u8] = &[0x40, 0x01, 0x0c, 0x01, 0xff, 0xff, 0x01, 0x60, 0, 0, 3, 0, 0x90, 0, 0, 3, 0, 0, 3, 0, 0x78, 0x95, 0x98, 0x09];
        let sps: &[u8] = &[
            0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00, 0x00, 0x03, 0x00, 0x78, 0xa0, 0x03, 0xc0, 0x80, 0x10,
            0xe5, 0x96, 0x56, 0x69, 0x24, 0xca, 0xf0, 0x16, 0x80, 0x80, 0x00, 0x00, 0x03, 0x00, 0x80, 0x00, 0x00, 0x0c, 0x84,
        ];
        let pps: &[u8] = &[0x44, 0x01, 0xc1, 0x72, 0xb4, 0x62, 0x40];
        let data = annexb(&[vps, sps, pps, &[0x26, 0x01, 0xaf, 0x09]]);
        let mut m = FlvMuxer::new();
        let mut out = Vec::new();
        m.push(&Frame { codec: Codec::H265, pts: 0, dts: 0, keyframe: true, data }, &mut out);
        let bytes: Vec<u8> = out.iter().flat_map(|t| t.data.to_vec()).collect();
        let tags = parse_tags(&bytes);
        let seq = &tags[1].2;
        assert_eq!(&seq[..5], b"\x90hvc1");
        assert_eq!(seq[5], 1, "configurationVersion");
        assert_eq!(&seq[6..9], &[0x01, 0x60, 0x00], "general profile from SPS");
        assert_eq!(seq[5 + 22], 3, "three NAL arrays");
        let frame = &tags[2].2;
        assert_eq!(&frame[..5], b"\x91hvc1");
        assert_eq!(&frame[8..], &[0, 0, 0, 4, 0x26, 0x01, 0xaf, 0x09]);
        assert_eq!(m.video_info().map(|(_, s)| (s.width, s.height)), Some((1920, 1080)));

        // The same tags in the legacy form: codec id 12, the payload untouched.
        let mut legacy = Vec::new();
        assert!(legacy_hevc(&out[0].data, &mut legacy), "metadata names hvc1");
        assert!(legacy.windows(8).any(|w| w == 12f64.to_be_bytes()), "videocodecid 12");
        assert_eq!(legacy.len(), out[0].data.len());
        assert!(legacy_hevc(&out[1].data, &mut legacy));
        let seq_tag = parse_tags(&legacy);
        assert_eq!(&seq_tag[0].2[..5], &[0x1c, 0, 0, 0, 0], "keyframe, codec 12, sequence header, cts 0");
        assert_eq!(&seq_tag[0].2[5..], &seq[5..], "the same HEVCDecoderConfigurationRecord");
        assert!(legacy_hevc(&out[2].data, &mut legacy));
        let frame_tag = parse_tags(&legacy);
        assert_eq!(&frame_tag[0].2[..5], &[0x1c, 1, 0, 0, 0]);
        assert_eq!(&frame_tag[0].2[5..], &frame[8..], "the same NAL units");
        assert_eq!(u32::from_be_bytes(legacy[legacy.len() - 4..].try_into().unwrap()) as usize, legacy.len() - 4, "PreviousTagSize");
        let mut h264 = FlvMuxer::new();
        let mut tags = Vec::new();
        h264.push(&Frame { codec: Codec::H264, pts: 0, dts: 0, keyframe: true, data: annexb(&[&[0x67, 0x42, 0, 0x1e, 0x95, 0xa8, 0x28, 0x0f, 0x64], &[0x68, 0xce, 0x3c, 0x80], &[0x65, 1, 2]]) }, &mut tags);
        assert!(tags.iter().all(|t| !legacy_hevc(&t.data, &mut legacy)), "H.264 stays as it is");
    }

    #[test]
    fn fuzz_mux_never_panics() {
        let mut rng = crate::proto::testutil::Rng::new(11);
        let mut m = FlvMuxer::new();
        let mut out = Vec::new();
        for i in 0..5_000u64 {
            let codec = [Codec::H264, Codec::H265, Codec::Aac, Codec::Pcma][rng.below(4)];
            let seed = video(i, true).data;
            let data = Bytes::from(if rng.below(2) == 0 { rng.mutate(&seed) } else { rng.bytes(300) });
            m.push(&Frame { codec, pts: i * 3600, dts: i * 3600, keyframe: rng.below(2) == 0, data }, &mut out);
            out.clear();
        }
    }
}
