//! FLV tag bodies to frames: what an RTMP publisher sends as audio and video messages (and what
//! an FLV file holds). H.264 (codec id 7), H.265 in both forms encoders use (enhanced RTMP's
//! `hvc1` FourCC and the legacy codec id 12 of Chinese encoders), AAC, G.711 A-law and µ-law.
//! Length-prefixed pictures become Annex B with the sequence header's parameter sets before each
//! keyframe (HLS, recordings and late viewers need them in-band); raw AAC frames get an ADTS
//! header. Every size is bounded; the input is a publisher's and hostile until proven otherwise.

use super::aac;
use super::frame::{Codec, Frame};
use super::h26x;
use super::ps::FRAME_BYTES_MAX;
use bytes::{BufMut, Bytes, BytesMut};

/// Parameter sets (SPS, PPS, VPS) of one sequence header, in Annex B, at most.
pub const PARAMETER_SETS_BYTES_MAX: usize = 64 << 10;
/// NAL units in one picture, at most (a 4K picture in many slices has a few dozen).
pub const NALS_PER_FRAME_MAX: usize = 1024;
/// The longest raw AAC frame an ADTS header can frame (13-bit length, 7-byte header).
pub const AAC_FRAME_BYTES_MAX: usize = 8191 - 7;
/// Video clock of frames (90 kHz) per millisecond of FLV time.
const TICKS_PER_MS: u64 = 90;
const FOURCC_HVC1: [u8; 4] = *b"hvc1";
const FOURCC_AVC1: [u8; 4] = *b"avc1";
const CODEC_ID_AVC: u8 = 7;
const CODEC_ID_HEVC_LEGACY: u8 = super::flv::LEGACY_HEVC_CODEC_ID;
const SOUND_FORMAT_ALAW: u8 = 7;
const SOUND_FORMAT_MULAW: u8 = 8;
const SOUND_FORMAT_AAC: u8 = 10;
/// FLV's frame type of a video "info/command" message: no picture.
const FRAME_TYPE_COMMAND: u8 = 5;
const FRAME_TYPE_KEY: u8 = 1;
/// hvcC: the fixed part before its arrays (ISO 14496-15 §8.3.3.1.2).
const HVCC_FIXED_BYTES: usize = 23;
/// avcC: the fixed part before its SPS count.
const AVCC_FIXED_BYTES: usize = 6;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlvError {
    /// The body ends before its header or a NAL unit's length says.
    Truncated,
    /// A video codec this demuxer does not take (FLV codec id, or an enhanced-RTMP FourCC).
    VideoCodec(String),
    /// A sound format it does not take (FLV `SoundFormat`: 2 MP3, 11 Speex, ...).
    SoundFormat(u8),
    /// Coded pictures or AAC frames before any sequence header said how to read them.
    NoSequenceHeader,
    /// A decoder configuration record (avcC, hvcC, AudioSpecificConfig) that does not parse.
    BadConfig,
    /// More than `FRAME_BYTES_MAX`, `NALS_PER_FRAME_MAX`, `PARAMETER_SETS_BYTES_MAX` or
    /// `AAC_FRAME_BYTES_MAX`.
    TooLarge,
}

impl std::fmt::Display for FlvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FlvError::Truncated => f.write_str("truncated tag"),
            FlvError::VideoCodec(c) => write!(f, "video codec {c} is not taken (H.264 and H.265 are)"),
            FlvError::SoundFormat(s) => write!(f, "sound format {s} is not taken (AAC, G.711 A-law and µ-law are)"),
            FlvError::NoSequenceHeader => f.write_str("coded frames before their sequence header"),
            FlvError::BadConfig => f.write_str("bad decoder configuration record"),
            FlvError::TooLarge => f.write_str("frame or configuration too large"),
        }
    }
}

/// A video track's state: its codec and how to read its length-prefixed pictures (FLV, and
/// what an RTSP client gives with an avcC/hvcC record).
#[derive(Debug, Clone)]
pub struct VideoTrack {
    codec: Codec,
    /// Bytes of each NAL unit's length prefix (1, 2 or 4).
    length_bytes: usize,
    /// SPS/PPS (and VPS) in Annex B, put before each keyframe that lacks them.
    params: Bytes,
}

/// One publisher's audio and video messages to frames.
#[derive(Debug, Default)]
pub struct TagDemuxer {
    video: Option<VideoTrack>,
    /// AudioSpecificConfig of the AAC track, from its sequence header.
    aac: Option<[u8; 2]>,
}

/// What a video body says, before its payload is read.
struct VideoHeader<'a> {
    codec: Codec,
    frame_type: u8,
    kind: VideoPacket,
    /// Composition time offset, ms (signed 24-bit).
    cts_ms: i32,
    payload: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VideoPacket {
    SequenceHeader,
    Pictures,
    /// End of sequence, metadata, or another enhanced-RTMP packet type without a picture.
    Other,
}

impl TagDemuxer {
    pub fn new() -> TagDemuxer {
        TagDemuxer::default()
    }

    /// The codec of the video track, once a sequence header came.
    pub fn video_codec(&self) -> Option<Codec> {
        self.video.as_ref().map(|v| v.codec)
    }

    /// A video message's body at `time_ms` (its decode time, already unwrapped): a picture,
    /// or None for a sequence header, an end of sequence or a command.
    pub fn video(&mut self, body: &[u8], time_ms: u64) -> Result<Option<Frame>, FlvError> {
        let h = video_header(body)?;
        match h.kind {
            VideoPacket::Other => Ok(None),
            _ if h.frame_type == FRAME_TYPE_COMMAND => Ok(None),
            VideoPacket::SequenceHeader => {
                self.video = Some(VideoTrack::from_config(h.codec, h.payload)?);
                Ok(None)
            }
            VideoPacket::Pictures => {
                let track = self.video.as_ref().filter(|v| v.codec == h.codec).ok_or(FlvError::NoSequenceHeader)?;
                let dts = time_ms * TICKS_PER_MS;
                let pts = dts.saturating_add_signed(i64::from(h.cts_ms) * TICKS_PER_MS as i64);
                track.picture(h.payload, h.frame_type == FRAME_TYPE_KEY, pts, dts)
            }
        }
    }

    /// An audio message's body at `time_ms`: a frame, or None for an AAC sequence header.
    pub fn audio(&mut self, body: &[u8], time_ms: u64) -> Result<Option<Frame>, FlvError> {
        let (&first, rest) = body.split_first().ok_or(FlvError::Truncated)?;
        let ts = time_ms * TICKS_PER_MS;
        let frame = |codec, data: Bytes| Ok(Some(Frame { codec, pts: ts, dts: ts, keyframe: true, data }));
        match first >> 4 {
            SOUND_FORMAT_ALAW if !rest.is_empty() => frame(Codec::Pcma, Bytes::copy_from_slice(rest)),
            SOUND_FORMAT_MULAW if !rest.is_empty() => frame(Codec::Pcmu, Bytes::copy_from_slice(rest)),
            SOUND_FORMAT_ALAW | SOUND_FORMAT_MULAW => Ok(None),
            SOUND_FORMAT_AAC => {
                let (&packet_type, payload) = rest.split_first().ok_or(FlvError::Truncated)?;
                if packet_type == 0 {
                    let asc: [u8; 2] = payload.get(..2).and_then(|a| a.try_into().ok()).ok_or(FlvError::BadConfig)?;
                    let sampling_index = ((asc[0] & 0x07) << 1) | (asc[1] >> 7);
                    if asc[0] >> 3 == 0 || usize::from(sampling_index) >= aac::AAC_SAMPLE_RATES.len() {
                        return Err(FlvError::BadConfig);
                    }
                    self.aac = Some(asc);
                    return Ok(None);
                }
                let asc = self.aac.ok_or(FlvError::NoSequenceHeader)?;
                if payload.is_empty() {
                    return Ok(None);
                }
                adts_frame(asc, payload, ts).map(Some)
            }
            other => Err(FlvError::SoundFormat(other)),
        }
    }
}

fn video_header(body: &[u8]) -> Result<VideoHeader<'_>, FlvError> {
    let (&first, rest) = body.split_first().ok_or(FlvError::Truncated)?;
    let frame_type = (first >> 4) & 0x07;
    if first & 0x80 != 0 {
        // Enhanced RTMP: packet type in the low nibble, then a FourCC.
        let fourcc: [u8; 4] = rest.get(..4).and_then(|f| f.try_into().ok()).ok_or(FlvError::Truncated)?;
        let codec = match fourcc {
            FOURCC_HVC1 => Codec::H265,
            FOURCC_AVC1 => Codec::H264,
            other => return Err(FlvError::VideoCodec(String::from_utf8_lossy(&other).into_owned())),
        };
        let rest = &rest[4..];
        let (kind, cts_ms, payload) = match first & 0x0f {
            0 => (VideoPacket::SequenceHeader, 0, rest),
            1 => {
                let cts = rest.get(..3).ok_or(FlvError::Truncated)?;
                (VideoPacket::Pictures, cts24(cts), &rest[3..])
            }
            // CodedFramesX: no composition time.
            3 => (VideoPacket::Pictures, 0, rest),
            _ => (VideoPacket::Other, 0, rest),
        };
        return Ok(VideoHeader { codec, frame_type, kind, cts_ms, payload });
    }
    let codec = match first & 0x0f {
        CODEC_ID_AVC => Codec::H264,
        CODEC_ID_HEVC_LEGACY => Codec::H265,
        other => return Err(FlvError::VideoCodec(format!("id {other}"))),
    };
    if frame_type == FRAME_TYPE_COMMAND {
        return Ok(VideoHeader { codec, frame_type, kind: VideoPacket::Other, cts_ms: 0, payload: &[] });
    }
    let head = rest.get(..4).ok_or(FlvError::Truncated)?;
    let kind = match head[0] {
        0 => VideoPacket::SequenceHeader,
        1 => VideoPacket::Pictures,
        _ => VideoPacket::Other,
    };
    Ok(VideoHeader { codec, frame_type, kind, cts_ms: cts24(&head[1..4]), payload: &rest[4..] })
}

/// A signed 24-bit big-endian composition time.
fn cts24(b: &[u8]) -> i32 {
    (i32::from_be_bytes([b[0], b[1], b[2], 0])) >> 8
}

impl VideoTrack {
    /// A track from its avcC or hvcC record: the NAL length size and the parameter sets.
    pub fn from_config(codec: Codec, record: &[u8]) -> Result<VideoTrack, FlvError> {
        config_record(codec, record)
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// One length-prefixed picture as an Annex B frame (parameter sets first on a keyframe
    /// that lacks them); `key`: the container says it is a keyframe (its NAL units may too).
    /// None for a picture without NAL units.
    pub fn picture(&self, payload: &[u8], key: bool, pts: u64, dts: u64) -> Result<Option<Frame>, FlvError> {
        let (data, has_key_nal, has_params) = annexb(self, payload)?;
        if data.is_empty() {
            return Ok(None);
        }
        let keyframe = key || has_key_nal;
        let data = if keyframe && !has_params {
            let mut with = BytesMut::with_capacity(self.params.len() + data.len());
            with.put_slice(&self.params);
            with.put_slice(&data);
            with.freeze()
        } else {
            data
        };
        Ok(Some(Frame { codec: self.codec, pts, dts, keyframe, data }))
    }
}

/// Raw AAC frames (FLV, MP4, RTSP's mpeg4-generic) with the ADTS header a stream's frames have.
pub fn adts_frame(asc: [u8; 2], payload: &[u8], ts: u64) -> Result<Frame, FlvError> {
    if payload.len() > AAC_FRAME_BYTES_MAX {
        return Err(FlvError::TooLarge);
    }
    let mut adts = BytesMut::with_capacity(7 + payload.len());
    adts.put_slice(&aac::adts_header(asc, payload.len()));
    adts.put_slice(payload);
    Ok(Frame { codec: Codec::Aac, pts: ts, dts: ts, keyframe: true, data: adts.freeze() })
}

/// Reads an avcC or hvcC record: the NAL length size and the parameter sets in Annex B.
fn config_record(codec: Codec, record: &[u8]) -> Result<VideoTrack, FlvError> {
    let mut params = BytesMut::new();
    let put = |nal: &[u8], params: &mut BytesMut| -> Result<(), FlvError> {
        if params.len() + 4 + nal.len() > PARAMETER_SETS_BYTES_MAX {
            return Err(FlvError::TooLarge);
        }
        if !nal.is_empty() {
            params.put_slice(&[0, 0, 0, 1]);
            params.put_slice(nal);
        }
        Ok(())
    };
    let length_bytes;
    match codec {
        Codec::H265 => {
            if record.len() < HVCC_FIXED_BYTES {
                return Err(FlvError::BadConfig);
            }
            length_bytes = usize::from(record[21] & 0x03) + 1;
            let mut r = Reader(&record[HVCC_FIXED_BYTES..]);
            for _ in 0..record[22] {
                r.take(1)?;
                let count = r.u16()?;
                for _ in 0..count {
                    let len = usize::from(r.u16()?);
                    put(r.take(len)?, &mut params)?;
                }
            }
        }
        _ => {
            if record.len() < AVCC_FIXED_BYTES {
                return Err(FlvError::BadConfig);
            }
            length_bytes = usize::from(record[4] & 0x03) + 1;
            let mut r = Reader(&record[5..]);
            let sps_count = r.u8()? & 0x1f;
            for _ in 0..sps_count {
                let len = usize::from(r.u16()?);
                put(r.take(len)?, &mut params)?;
            }
            let pps_count = r.u8()?;
            for _ in 0..pps_count {
                let len = usize::from(r.u16()?);
                put(r.take(len)?, &mut params)?;
            }
        }
    }
    if length_bytes == 3 {
        return Err(FlvError::BadConfig);
    }
    Ok(VideoTrack { codec, length_bytes, params: params.freeze() })
}

/// A length-prefixed picture in Annex B; whether it holds a keyframe NAL and parameter sets.
fn annexb(track: &VideoTrack, mut payload: &[u8]) -> Result<(Bytes, bool, bool), FlvError> {
    if payload.len() > FRAME_BYTES_MAX {
        return Err(FlvError::TooLarge);
    }
    let mut out = BytesMut::with_capacity(payload.len() + 64);
    let (mut key, mut params) = (false, false);
    let mut nals = 0;
    while !payload.is_empty() {
        let prefix = payload.get(..track.length_bytes).ok_or(FlvError::Truncated)?;
        let len = prefix.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b));
        let nal = payload.get(track.length_bytes..track.length_bytes + len).ok_or(FlvError::Truncated)?;
        payload = &payload[track.length_bytes + len..];
        if nal.is_empty() {
            continue;
        }
        nals += 1;
        if nals > NALS_PER_FRAME_MAX {
            return Err(FlvError::TooLarge);
        }
        key |= h26x::is_key_nal(track.codec, nal);
        params |= is_sps(track.codec, nal);
        out.put_slice(&[0, 0, 0, 1]);
        out.put_slice(nal);
    }
    Ok((out.freeze(), key, params))
}

fn is_sps(codec: Codec, nal: &[u8]) -> bool {
    match codec {
        Codec::H265 => h26x::h265_nal_type(nal) == h26x::H265_NAL_SPS,
        _ => h26x::h264_nal_type(nal) == h26x::H264_NAL_SPS,
    }
}

/// A bounds-checked cursor over a configuration record.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FlvError> {
        let (head, rest) = (self.0.get(..n).ok_or(FlvError::BadConfig)?, &self.0[n..]);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, FlvError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, FlvError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::flv::{FlvMuxer, FlvTag, avc_decoder_configuration_record};
    use crate::proto::h26x::tests::SPS_320X240;

    const PPS: &[u8] = &[0x68, 0xce, 0x38, 0x80];

    fn avc_seq_header() -> Vec<u8> {
        let mut b = vec![0x17, 0, 0, 0, 0];
        b.extend(avc_decoder_configuration_record(SPS_320X240, PPS).unwrap());
        b
    }

    fn avc_picture(key: bool, cts: i32, nals: &[&[u8]]) -> Vec<u8> {
        let mut b = vec![if key { 0x17 } else { 0x27 }, 1];
        b.extend_from_slice(&cts.to_be_bytes()[1..]);
        for n in nals {
            b.extend_from_slice(&(n.len() as u32).to_be_bytes());
            b.extend_from_slice(n);
        }
        b
    }

    #[test]
    fn h264_pictures_get_annexb_and_parameter_sets_on_keyframes() {
        let mut d = TagDemuxer::new();
        assert_eq!(d.video(&avc_picture(true, 0, &[&[0x65, 1]]), 0), Err(FlvError::NoSequenceHeader));
        assert_eq!(d.video(&avc_seq_header(), 0), Ok(None));
        let key = d.video(&avc_picture(true, 40, &[&[0x65, 1, 2]]), 1000).unwrap().unwrap();
        let mut want = vec![0, 0, 0, 1];
        want.extend_from_slice(SPS_320X240);
        want.extend_from_slice(&[0, 0, 0, 1]);
        want.extend_from_slice(PPS);
        want.extend_from_slice(&[0, 0, 0, 1, 0x65, 1, 2]);
        assert_eq!(&key.data[..], &want[..]);
        assert_eq!((key.codec, key.keyframe, key.dts, key.pts), (Codec::H264, true, 90_000, 93_600));
        let delta = d.video(&avc_picture(false, -40, &[&[0x41, 9], &[0x41, 8]]), 1040).unwrap().unwrap();
        assert_eq!(&delta.data[..], &[0, 0, 0, 1, 0x41, 9, 0, 0, 0, 1, 0x41, 8]);
        assert_eq!((delta.keyframe, delta.pts), (false, 1000 * 90));
        // The muxer that serves viewers reads what comes out: a sequence header, then pictures.
        let mut flv = FlvMuxer::new();
        let mut tags: Vec<FlvTag> = Vec::new();
        flv.push(&key, &mut tags);
        assert!(tags.iter().any(|t| t.config) && tags.iter().any(|t| t.keyframe));
    }

    #[test]
    fn enhanced_and_legacy_hevc_are_both_read() {
        for legacy in [false, true] {
            let mut d = TagDemuxer::new();
            // A minimal hvcC: fixed part with 4-byte lengths, one array of one VPS.
            let mut record = vec![0u8; HVCC_FIXED_BYTES];
            record[21] = 0x03;
            record[22] = 1;
            record.extend_from_slice(&[0x20, 0, 1, 0, 3, 0x40, 0x01, 0x0c]);
            let header = |packet: u8| if legacy { vec![0x1c, packet, 0, 0, 0] } else { [vec![0x90 | packet], b"hvc1".to_vec()].concat() };
            assert_eq!(d.video(&[header(0), record].concat(), 0), Ok(None));
            let nal: &[u8] = &[0x26, 0x01, 0xaf]; // IDR_W_RADL
            let mut body = header(1);
            if !legacy {
                body.extend_from_slice(&[0, 0, 0]);
            }
            body.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            body.extend_from_slice(nal);
            let f = d.video(&body, 40).unwrap().unwrap();
            assert_eq!(f.codec, Codec::H265);
            assert!(f.keyframe);
            assert_eq!(&f.data[..], &[0, 0, 0, 1, 0x40, 0x01, 0x0c, 0, 0, 0, 1, 0x26, 0x01, 0xaf]);
        }
        assert_eq!(TagDemuxer::new().video(b"\x90av01", 0).unwrap_err(), FlvError::VideoCodec("av01".into()));
    }

    #[test]
    fn aac_gets_adts_and_g711_passes_through() {
        let mut d = TagDemuxer::new();
        assert_eq!(d.audio(&[0xaf, 1, 5, 5], 0), Err(FlvError::NoSequenceHeader));
        assert_eq!(d.audio(&[0xaf, 0, 0x12, 0x10], 0), Ok(None));
        let f = d.audio(&[0xaf, 1, 5, 6, 7], 20).unwrap().unwrap();
        let h = aac::AdtsHeader::parse(&f.data).unwrap();
        assert_eq!((h.sample_rate(), h.channels, h.frame_bytes, &f.data[7..]), (44100, 2, 10, &[5u8, 6, 7][..]));
        assert_eq!(f.dts, 20 * 90);
        let a = d.audio(&[0x72, 0xd5, 0xd5], 40).unwrap().unwrap();
        assert_eq!((a.codec, &a.data[..]), (Codec::Pcma, &[0xd5u8, 0xd5][..]));
        assert_eq!(d.audio(&[0x82, 0xff], 40).unwrap().unwrap().codec, Codec::Pcmu);
        assert_eq!(d.audio(&[0x2f, 0, 0], 0), Err(FlvError::SoundFormat(2)));
        assert_eq!(d.audio(&[0xaf, 1].iter().copied().chain(std::iter::repeat_n(0, 9000)).collect::<Vec<_>>(), 0), Err(FlvError::TooLarge));
    }

    #[test]
    fn lying_lengths_and_counts_are_refused_not_trusted() {
        let mut d = TagDemuxer::new();
        d.video(&avc_seq_header(), 0).unwrap();
        let mut body = vec![0x27, 1, 0, 0, 0];
        body.extend_from_slice(&u32::MAX.to_be_bytes());
        body.push(0x41);
        assert_eq!(d.video(&body, 0), Err(FlvError::Truncated));
        let mut many = vec![0x27, 1, 0, 0, 0];
        for _ in 0..NALS_PER_FRAME_MAX + 1 {
            many.extend_from_slice(&[0, 0, 0, 1, 0x41]);
        }
        assert_eq!(d.video(&many, 0), Err(FlvError::TooLarge));
        // An avcC claiming 31 SPS of 65535 bytes in a short record.
        assert_eq!(d.video(&[0x17, 0, 0, 0, 0, 1, 0x42, 0, 0x1e, 0xff, 0xff, 0xff, 0xff], 0).unwrap_err(), FlvError::BadConfig);
        for cut in 0..avc_seq_header().len() {
            let _ = TagDemuxer::new().video(&avc_seq_header()[..cut], 0);
        }
    }

    #[test]
    fn random_bodies_never_panic() {
        let mut rng = crate::proto::testutil::Rng::new(7);
        let mut d = TagDemuxer::new();
        for i in 0..20_000u64 {
            let seed: &[u8] = if i % 2 == 0 { &avc_seq_header() } else { &[0xaf, 0, 0x12, 0x10, 1, 2, 3] };
            let body = rng.mutate(seed);
            let _ = d.video(&body, i);
            let _ = d.audio(&body, i);
        }
    }
}
