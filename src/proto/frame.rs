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
    /// Its name in the API (what serde writes).
    pub fn name(self) -> &'static str {
        match self {
            Codec::H264 => "h264",
            Codec::H265 => "h265",
            Codec::Pcma => "pcma",
            Codec::Pcmu => "pcmu",
            Codec::Aac => "aac",
        }
    }

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

/// Extends a wrapping timestamp (33-bit PS clock, 32-bit RTP clock) to a monotonic-ish u64.
/// A step of more than half the range backwards is taken as a wrap forwards, and vice versa.
#[derive(Debug, Clone)]
pub struct TimestampUnwrapper {
    bits: u32,
    last: Option<u64>,
}

impl TimestampUnwrapper {
    pub fn new(bits: u32) -> Self {
        TimestampUnwrapper { bits, last: None }
    }

    pub fn unwrap(&mut self, ts: u64) -> u64 {
        let modulus = 1u64 << self.bits;
        let ts = ts & (modulus - 1);
        let Some(last) = self.last else {
            // Start one full cycle up so a small backwards step never goes below zero.
            let v = modulus + ts;
            self.last = Some(v);
            return v;
        };
        let delta = ts.wrapping_sub(last) & (modulus - 1);
        let v = if delta < modulus / 2 { last + delta } else { last.saturating_sub(modulus - delta) };
        self.last = Some(v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_codecs_name_is_what_the_api_writes() {
        for c in [Codec::H264, Codec::H265, Codec::Pcma, Codec::Pcmu, Codec::Aac] {
            assert_eq!(serde_json::to_value(c).unwrap(), c.name());
        }
    }

    #[test]
    fn unwraps_forward_and_small_backward_steps() {
        let mut u = TimestampUnwrapper::new(32);
        let a = u.unwrap(u64::from(u32::MAX) - 10);
        let b = u.unwrap(5);
        assert_eq!(b - a, 16);
        let c = u.unwrap(2);
        assert_eq!(b - c, 3);
        let mut ps = TimestampUnwrapper::new(33);
        let x = ps.unwrap((1 << 33) - 1);
        assert_eq!(ps.unwrap(0) - x, 1);
    }
}
