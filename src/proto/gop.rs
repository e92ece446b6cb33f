//! The current GOP as frames (shared buffers, no copy): what a stream keeps while no viewer
//! takes its FLV tags, so the first one to come still starts at once, muxed then.

use super::frame::Frame;

/// Frames of one GOP at most (a 60 s GOP at 25 fps with 50 audio frames a second is 4,500);
/// past it, or past the byte budget, nothing is kept until the next keyframe.
pub const GOP_FRAMES_MAX: usize = 8_192;

pub struct GopFrames {
    frames: Vec<Frame>,
    bytes: usize,
    bytes_max: usize,
    /// Frames since a video keyframe are all here (none before the first keyframe, nor
    /// after an overflow until the next).
    valid: bool,
}

impl GopFrames {
    pub fn new(bytes_max: usize) -> GopFrames {
        GopFrames { frames: Vec::new(), bytes: 0, bytes_max, valid: false }
    }

    pub fn push(&mut self, frame: &Frame) {
        if frame.codec.is_video() && frame.keyframe {
            self.frames.clear();
            self.bytes = 0;
            self.valid = true;
        }
        if !self.valid {
            return;
        }
        self.bytes += frame.data.len();
        if self.bytes > self.bytes_max || self.frames.len() == GOP_FRAMES_MAX {
            self.frames = Vec::new();
            self.bytes = 0;
            self.valid = false;
            return;
        }
        self.frames.push(frame.clone());
    }

    /// The stream goes on without its audio: the kept GOP loses its audio frames too.
    pub fn forget_audio(&mut self) {
        self.frames.retain(|f| f.codec.is_video());
        self.bytes = self.frames.iter().map(|f| f.data.len()).sum();
    }

    /// The frames from the latest video keyframe on; empty when there is no whole GOP.
    pub fn into_frames(self) -> Vec<Frame> {
        debug_assert!(self.valid || self.frames.is_empty());
        self.frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::frame::Codec;
    use bytes::Bytes;

    fn frame(codec: Codec, keyframe: bool, len: usize, pts: u64) -> Frame {
        Frame { codec, pts, dts: pts, keyframe, data: Bytes::from(vec![7u8; len]) }
    }

    #[test]
    fn keeps_from_the_latest_keyframe_and_nothing_before_the_first() {
        let mut g = GopFrames::new(10_000);
        g.push(&frame(Codec::Pcma, true, 160, 0));
        g.push(&frame(Codec::H264, false, 100, 1));
        g.push(&frame(Codec::H264, true, 500, 2));
        g.push(&frame(Codec::Pcma, true, 160, 3));
        g.push(&frame(Codec::H264, false, 100, 4));
        g.push(&frame(Codec::H264, true, 600, 5));
        g.push(&frame(Codec::H264, false, 100, 6));
        let pts: Vec<u64> = g.into_frames().iter().map(|f| f.pts).collect();
        assert_eq!(pts, vec![5, 6]);
        let mut g = GopFrames::new(10_000);
        g.push(&frame(Codec::H264, false, 100, 1));
        assert!(g.into_frames().is_empty(), "no keyframe yet");
    }

    #[test]
    fn forgetting_audio_keeps_the_video() {
        let mut g = GopFrames::new(10_000);
        g.push(&frame(Codec::H264, true, 500, 0));
        g.push(&frame(Codec::Pcma, true, 160, 1));
        g.push(&frame(Codec::H264, false, 100, 2));
        g.forget_audio();
        assert_eq!(g.bytes, 600);
        let pts: Vec<u64> = g.into_frames().iter().map(|f| f.pts).collect();
        assert_eq!(pts, vec![0, 2]);
    }

    #[test]
    fn an_overflow_keeps_nothing_until_the_next_keyframe() {
        let mut g = GopFrames::new(1_000);
        g.push(&frame(Codec::H264, true, 600, 0));
        g.push(&frame(Codec::H264, false, 600, 1));
        g.push(&frame(Codec::H264, false, 10, 2));
        assert!(g.frames.is_empty() && !g.valid);
        g.push(&frame(Codec::H264, true, 600, 3));
        g.push(&frame(Codec::H264, false, 10, 4));
        assert_eq!(g.into_frames().len(), 2);
        let mut g = GopFrames::new(usize::MAX);
        g.push(&frame(Codec::H264, true, 1, 0));
        for i in 0..GOP_FRAMES_MAX as u64 {
            g.push(&frame(Codec::Pcma, true, 1, i));
        }
        assert!(g.into_frames().is_empty(), "past {GOP_FRAMES_MAX} frames");
    }
}
