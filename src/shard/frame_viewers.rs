//! Viewers that take a stream's frames rather than its FLV tags (live fMP4 and TS, muxed for
//! each viewer where it is served): frames are shared buffers, queued without a copy. A viewer
//! too slow to drain its queue skips to the next keyframe; one that stays slow is dropped.

use crate::proto::frame::Frame;
use glommio::GlommioError;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};

pub const FRAME_VIEWERS_PER_STREAM_MAX: usize = 64;
/// Frames queued for one viewer (seconds of video and audio).
pub const FRAME_VIEWER_QUEUE_FRAMES_MAX: usize = 512;
pub const FRAME_VIEWER_SKIPS_MAX: u32 = 8;

pub struct FrameViewer {
    tx: LocalSender<Frame>,
    skipping: bool,
    skips: u32,
}

impl FrameViewer {
    pub fn new() -> (FrameViewer, LocalReceiver<Frame>) {
        let (tx, rx) = local_channel::new_bounded(FRAME_VIEWER_QUEUE_FRAMES_MAX);
        (FrameViewer { tx, skipping: false, skips: 0 }, rx)
    }

    /// Queues `frames`; false when the viewer is to go (gone, or slow too often).
    pub fn push(&mut self, frames: &[Frame]) -> bool {
        for f in frames {
            if self.skipping && !(f.codec.is_video() && f.keyframe) {
                continue;
            }
            self.skipping = false;
            match self.tx.try_send(f.clone()) {
                Ok(()) => {}
                Err(GlommioError::WouldBlock(_)) => {
                    self.skipping = true;
                    self.skips += 1;
                    if self.skips > FRAME_VIEWER_SKIPS_MAX {
                        tracing::info!(skips = self.skips, "disconnecting slow live fMP4/TS viewer");
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
        true
    }
}
