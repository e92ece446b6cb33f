//! AAC ADTS framing (ISO 14496-3 §1.A.2): split ADTS streams, derive AudioSpecificConfig.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdtsHeader {
    /// Audio object type (profile + 1).
    pub object_type: u8,
    pub sampling_index: u8,
    pub channels: u8,
    pub header_bytes: usize,
    pub frame_bytes: usize,
}

pub const AAC_SAMPLE_RATES: [u32; 13] = [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350];
pub const AAC_SAMPLES_PER_FRAME: u32 = 1024;

impl AdtsHeader {
    pub fn parse(b: &[u8]) -> Option<AdtsHeader> {
        if b.len() < 7 || b[0] != 0xff || b[1] & 0xf6 != 0xf0 {
            return None;
        }
        let header_bytes = if b[1] & 0x01 == 0 { 9 } else { 7 };
        let frame_bytes = ((usize::from(b[3] & 0x03)) << 11) | (usize::from(b[4]) << 3) | usize::from(b[5] >> 5);
        let sampling_index = (b[2] >> 2) & 0x0f;
        if frame_bytes < header_bytes || sampling_index as usize >= AAC_SAMPLE_RATES.len() {
            return None;
        }
        Some(AdtsHeader { object_type: (b[2] >> 6) + 1, sampling_index, channels: ((b[2] & 0x01) << 2) | (b[3] >> 6), header_bytes, frame_bytes })
    }

    pub fn sample_rate(&self) -> u32 {
        AAC_SAMPLE_RATES[self.sampling_index as usize]
    }

    /// Two-byte AudioSpecificConfig for FLV/MP4 sequence headers.
    pub fn audio_specific_config(&self) -> [u8; 2] {
        let v = (u16::from(self.object_type) << 11) | (u16::from(self.sampling_index) << 7) | (u16::from(self.channels) << 3);
        v.to_be_bytes()
    }
}

/// An ADTS header for one raw AAC frame of `payload_bytes` bytes, from its AudioSpecificConfig
/// (MP4 and FLV carry raw frames; the frames of a stream are ADTS-framed).
pub fn adts_header(asc: [u8; 2], payload_bytes: usize) -> [u8; 7] {
    let object_type = asc[0] >> 3;
    let sampling_index = ((asc[0] & 0x07) << 1) | (asc[1] >> 7);
    let channels = (asc[1] >> 3) & 0x0f;
    let total = payload_bytes + 7;
    [
        0xff,
        0xf1,
        ((object_type.saturating_sub(1) & 0x03) << 6) | (sampling_index << 2) | (channels >> 2),
        ((channels & 0x03) << 6) | ((total >> 11) as u8 & 0x03),
        (total >> 3) as u8,
        ((total as u8 & 0x07) << 5) | 0x1f,
        0xfc,
    ]
}

/// Iterates (header, raw frame) pairs; stops at the first malformed header.
pub fn adts_frames(mut data: &[u8]) -> impl Iterator<Item = (AdtsHeader, &[u8])> {
    std::iter::from_fn(move || {
        let h = AdtsHeader::parse(data)?;
        let frame = data.get(h.header_bytes..h.frame_bytes)?;
        data = &data[h.frame_bytes..];
        Some((h, frame))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adts_header_round_trips() {
        let h = adts_header([0x12, 0x10], 100);
        let parsed = AdtsHeader::parse(&h).unwrap();
        assert_eq!((parsed.object_type, parsed.sample_rate(), parsed.channels, parsed.frame_bytes), (2, 44100, 2, 107));
        assert_eq!(parsed.audio_specific_config(), [0x12, 0x10]);
    }

    #[test]
    fn parses_adts_and_builds_asc() {
        // AAC-LC, 44.1 kHz, stereo, 10-byte frame (7 header + 3 payload), twice.
        let one = [0xff, 0xf1, 0x50, 0x80, 0x01, 0x5f, 0xfc, 1, 2, 3];
        let two: Vec<u8> = one.iter().chain(one.iter()).copied().collect();
        let frames: Vec<_> = adts_frames(&two).collect();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].1, &[1, 2, 3]);
        let h = frames[0].0;
        assert_eq!((h.object_type, h.sample_rate(), h.channels), (2, 44100, 2));
        assert_eq!(h.audio_specific_config(), [0x12, 0x10]);
    }

    #[test]
    fn fuzz_never_panics() {
        let mut rng = crate::proto::testutil::Rng::new(5);
        for _ in 0..10_000 {
            let d = rng.mutate(&[0xff, 0xf1, 0x50, 0x80, 0x01, 0x5f, 0xfc, 1, 2, 3]);
            for (h, f) in adts_frames(&d) {
                assert!(f.len() < h.frame_bytes);
            }
        }
    }
}
