//! The unit every demuxer/depacketizer emits and every muxer consumes.

use bytes::Bytes;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    H264,
    H265,
    /// G.711 A-law, 8 kHz mono.
    Pcma,
    /// G.711 µ-law, 8 kHz mono.
    Pcmu,
    /// AAC in ADTS framing.
    Aac,
}

impl Codec {
    pub fn is_video(self) -> bool {
        matches!(self, Codec::H264 | Codec::H265)
    }

    /// ISO 13818-1 / GB28181 PSM stream_type.
    pub fn from_stream_type(stream_type: u8) -> Option<Codec> {
        match stream_type {
            0x1b => Some(Codec::H264),
            0x24 => Some(Codec::H265),
            0x90 => Some(Codec::Pcma),
            0x91 => Some(Codec::Pcmu),
            0x0f => Some(Codec::Aac),
            _ => None,
        }
    }

    pub fn stream_type(self) -> u8 {
        match self {
            Codec::H264 => 0x1b,
            Codec::H265 => 0x24,
            Codec::Pcma => 0x90,
            Codec::Pcmu => 0x91,
            Codec::Aac => 0x0f,
        }
    }
}

/// One access unit: a whole video picture (Annex B NAL units) or a chunk of audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub codec: Codec,
    /// Presentation time on a 90 kHz clock (33-bit PS clock or RTP clock, not yet unwrapped).
    pub pts: u64,
    pub dts: u64,
    pub keyframe: bool,
    pub data: Bytes,
}
