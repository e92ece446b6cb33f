//! Stream covers: a keyframe decoded (OpenH264, in process) and encoded as JPEG. Runs on a
//! blocking thread, never on a shard's executor. H.265 has no decoder here: such streams get
//! no cover (the API says so) rather than a fake one.

use crate::proto::frame::Codec;
use crate::proto::h26x::{self, ParamSets};

/// JPEG quality (1–100).
pub const COVER_QUALITY: u8 = 80;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotError {
    /// H.265 (or no video): no in-process decoder.
    Unsupported(Codec),
    NoKeyframe,
    Decode(String),
    Encode(String),
}

impl std::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotError::Unsupported(c) => write!(f, "no in-process decoder for {c:?}; covers are made for H.264 streams"),
            SnapshotError::NoKeyframe => write!(f, "no keyframe received yet"),
            SnapshotError::Decode(e) => write!(f, "decode failed: {e}"),
            SnapshotError::Encode(e) => write!(f, "JPEG encode failed: {e}"),
        }
    }
}

/// Covers are background work: the calling (blocking-pool) thread yields the CPU to the
/// shards' media threads whenever they want it (nice 19 for this thread only).
pub fn lower_thread_priority() {
    // SAFETY: setpriority on the calling thread's id; no memory is touched.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19);
    }
}

/// Annex B for a decoder on its own: parameter sets first (cameras repeat them before IDRs,
/// RTP streams may carry them only in the SDP), then the picture.
pub fn standalone_keyframe(codec: Codec, params: &ParamSets, keyframe: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(keyframe.len() + 128);
    let has_sps = h26x::nal_units(keyframe).any(|n| h26x::h264_nal_type(n) == h26x::H264_NAL_SPS);
    if codec == Codec::H264 && !has_sps {
        for ps in [&params.sps, &params.pps].into_iter().flatten() {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(ps);
        }
    }
    out.extend_from_slice(keyframe);
    out
}

/// Decodes one H.264 keyframe (with its parameter sets) to a JPEG: (jpeg, width, height).
pub fn keyframe_to_jpeg(codec: Codec, annexb: &[u8]) -> Result<(Vec<u8>, u32, u32), SnapshotError> {
    use openh264::formats::YUVSource;
    if codec != Codec::H264 {
        return Err(SnapshotError::Unsupported(codec));
    }
    let mut decoder = openh264::decoder::Decoder::new().map_err(|e| SnapshotError::Decode(e.to_string()))?;
    let rgb_of = |yuv: &openh264::decoder::DecodedYUV<'_>| {
        let (w, h) = yuv.dimensions();
        let mut rgb = vec![0u8; w * h * 3];
        yuv.write_rgb8(&mut rgb);
        (rgb, w, h)
    };
    let decoded = match decoder.decode(annexb).map_err(|e| SnapshotError::Decode(e.to_string()))? {
        Some(yuv) => Some(rgb_of(&yuv)),
        None => decoder.flush_remaining().map_err(|e| SnapshotError::Decode(e.to_string()))?.first().map(rgb_of),
    };
    let (rgb, w, h) = decoded.ok_or_else(|| SnapshotError::Decode("no picture from the keyframe".into()))?;
    let mut jpeg = Vec::new();
    jpeg_encoder::Encoder::new(&mut jpeg, COVER_QUALITY)
        .encode(&rgb, w as u16, h as u16, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| SnapshotError::Encode(e.to_string()))?;
    Ok((jpeg, w as u32, h as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_h265_are_errors_not_panics() {
        assert!(matches!(keyframe_to_jpeg(Codec::H265, &[0, 0, 1, 0x26]), Err(SnapshotError::Unsupported(Codec::H265))));
        let mut rng = crate::proto::testutil::Rng::new(5);
        for _ in 0..50 {
            let mut junk = vec![0, 0, 0, 1, 0x65];
            junk.extend(rng.bytes(2000));
            assert!(keyframe_to_jpeg(Codec::H264, &junk).is_err());
        }
    }
}
