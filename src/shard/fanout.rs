//! One stream's viewers: a GOP cache for instant start and a bounded queue per viewer.
//! A viewer whose queue is full skips to the next keyframe; one that keeps falling behind
//! is disconnected. Publishing never waits, so a slow viewer cannot stall the shard.

use crate::proto::flv::FlvTag;
use bytes::Bytes;
use glommio::GlommioError;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use std::collections::VecDeque;

/// Viewers of one stream; more are refused with 503.
pub const SUBSCRIBERS_PER_STREAM_MAX: usize = 4096;

pub struct FanoutLimits {
    pub gop_cache_bytes_max: usize,
    pub queue_tags_max: usize,
    pub skips_max: u32,
}

struct Subscriber {
    tx: LocalSender<Bytes>,
    /// Gone when the viewer's writer ends, even if no tag has been published since.
    alive: std::rc::Weak<()>,
    /// Waiting for a keyframe after its queue overflowed.
    skipping: bool,
    skips: u32,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FanoutStats {
    pub tags_dropped: u64,
    pub subscribers_dropped: u64,
}

pub struct Fanout {
    limits: FanoutLimits,
    gop: VecDeque<Bytes>,
    gop_bytes: usize,
    /// False after the GOP overflowed its budget: nothing is cached until the next keyframe.
    gop_valid: bool,
    /// Latest metadata and sequence headers, resent to a viewer resuming after a skip.
    config: Vec<(u8, Bytes)>,
    subs: Vec<Subscriber>,
    pub stats: FanoutStats,
}

impl Fanout {
    pub fn new(limits: FanoutLimits) -> Fanout {
        Fanout { limits, gop: VecDeque::new(), gop_bytes: 0, gop_valid: false, config: Vec::new(), subs: Vec::new(), stats: FanoutStats::default() }
    }

    /// Viewers still connected.
    pub fn subscribers(&self) -> usize {
        self.subs.iter().filter(|s| s.alive.strong_count() > 0).count()
    }

    /// Adds a viewer; returns what to write first (given preamble + cached GOP), the live
    /// queue, and a token the viewer holds while connected.
    pub fn subscribe(&mut self, preamble: Vec<Bytes>) -> Option<(Vec<Bytes>, LocalReceiver<Bytes>, std::rc::Rc<()>)> {
        if self.subs.len() >= SUBSCRIBERS_PER_STREAM_MAX {
            return None;
        }
        let (tx, rx) = local_channel::new_bounded(self.limits.queue_tags_max);
        let mut first = preamble;
        if self.gop_valid {
            first.extend(self.gop.iter().cloned());
        }
        // Without a cached GOP the viewer waits for the next keyframe.
        let token = std::rc::Rc::new(());
        self.subs.push(Subscriber { tx, alive: std::rc::Rc::downgrade(&token), skipping: !self.gop_valid, skips: 0 });
        Some((first, rx, token))
    }

    pub fn publish(&mut self, tag: &FlvTag) {
        if tag.config {
            let kind = tag.data[0];
            let is_metadata = kind == crate::proto::flv::TAG_SCRIPT;
            let slot_key = if is_metadata { 0 } else { kind };
            self.config.retain(|(k, _)| *k != slot_key);
            self.config.push((slot_key, tag.data.clone()));
        } else {
            self.cache(tag);
        }
        let skips_max = self.limits.skips_max;
        let config = &self.config;
        let stats = &mut self.stats;
        self.subs.retain_mut(|s| {
            if s.alive.strong_count() == 0 {
                return false;
            }
            if s.skipping {
                if !tag.is_video {
                    // Audio decodes on its own: pass it while waiting for a keyframe, if there is room.
                    if s.tx.try_send(tag.data.clone()).is_err() {
                        stats.tags_dropped += 1;
                    }
                    return true;
                }
                if !tag.keyframe {
                    stats.tags_dropped += 1;
                    return true;
                }
                s.skipping = false;
                for (_, c) in config {
                    if s.tx.try_send(c.clone()).is_err() {
                        break;
                    }
                }
            }
            match s.tx.try_send(tag.data.clone()) {
                Ok(()) => true,
                Err(GlommioError::WouldBlock(_)) => {
                    stats.tags_dropped += 1;
                    s.skips += 1;
                    s.skipping = true;
                    let keep = s.skips <= skips_max;
                    if !keep {
                        stats.subscribers_dropped += 1;
                        tracing::info!(skips = s.skips, "disconnecting slow viewer");
                    }
                    keep
                }
                Err(_) => false, // viewer went away
            }
        });
    }

    fn cache(&mut self, tag: &FlvTag) {
        if tag.is_video && tag.keyframe {
            self.gop.clear();
            self.gop_bytes = 0;
            self.gop_valid = true;
        }
        if !self.gop_valid {
            return;
        }
        self.gop_bytes += tag.data.len();
        if self.gop_bytes > self.limits.gop_cache_bytes_max {
            self.gop.clear();
            self.gop_bytes = 0;
            self.gop_valid = false;
            return;
        }
        self.gop.push_back(tag.data.clone());
    }

    /// Ends every viewer's queue; their writers finish sending what is queued and close.
    pub fn close(&mut self) {
        self.subs.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(byte: u8, is_video: bool, keyframe: bool, config: bool) -> FlvTag {
        let kind = if config && !is_video {
            8
        } else if is_video {
            9
        } else {
            8
        };
        FlvTag { data: Bytes::from(vec![kind, byte]), is_video, keyframe, config }
    }

    fn limits(queue: usize, skips: u32) -> FanoutLimits {
        FanoutLimits { gop_cache_bytes_max: 8, queue_tags_max: queue, skips_max: skips }
    }

    fn drain(rx: &LocalReceiver<Bytes>) -> Vec<u8> {
        let mut v = Vec::new();
        while let Some(Some(b)) = futures_lite::future::block_on(futures_lite::future::poll_once(rx.recv())) {
            v.push(b[1]);
        }
        v
    }

    #[test]
    fn new_viewer_gets_cached_gop_from_last_keyframe() {
        let mut f = Fanout::new(limits(16, 1));
        f.publish(&tag(0, true, false, true)); // sequence header
        for (b, key) in [(1, true), (2, false), (3, true), (4, false)] {
            f.publish(&tag(b, true, key, false));
        }
        let (first, rx, _token) = f.subscribe(vec![Bytes::from_static(b"P")]).unwrap();
        assert_eq!(first.iter().map(|b| b[b.len() - 1]).collect::<Vec<_>>(), vec![b'P', 3, 4]);
        f.publish(&tag(5, true, false, false));
        assert_eq!(drain(&rx), vec![5]);
    }

    #[test]
    fn oversized_gop_is_not_cached_and_viewer_waits_for_keyframe() {
        let mut f = Fanout::new(limits(16, 1));
        f.publish(&tag(1, true, true, false));
        for b in 2..10 {
            f.publish(&tag(b, true, false, false)); // 2 bytes each: exceeds the 8-byte budget
        }
        let (first, rx, _token) = f.subscribe(vec![]).unwrap();
        assert!(first.is_empty());
        f.publish(&tag(10, true, false, false));
        f.publish(&tag(11, true, true, false));
        assert_eq!(drain(&rx), vec![11]);
    }

    #[test]
    fn slow_viewer_skips_to_keyframe_with_config_then_is_dropped() {
        let mut f = Fanout::new(limits(2, 1));
        f.publish(&tag(0, false, false, true)); // audio sequence header
        f.publish(&tag(1, true, true, false));
        let (_, rx, _token) = f.subscribe(vec![]).unwrap();
        for b in 2..6 {
            f.publish(&tag(b, true, false, false)); // queue of 2 overflows at the third
        }
        assert_eq!(drain(&rx), vec![2, 3]);
        f.publish(&tag(6, true, false, false)); // skipped: not a keyframe
        f.publish(&tag(60, false, false, false)); // audio still passes while waiting
        assert_eq!(drain(&rx), vec![60]);
        f.publish(&tag(7, true, true, false)); // resumes: config first, then the keyframe
        assert_eq!(drain(&rx), vec![0, 7]);
        assert_eq!(f.stats.tags_dropped, 3, "4 and 5 overflowed, 6 skipped");
        for b in 8..12 {
            f.publish(&tag(b, true, false, false)); // overflows again: second skip > skips_max
        }
        assert_eq!(f.subscribers(), 0);
        assert_eq!(f.stats.subscribers_dropped, 1);
    }

    #[test]
    fn a_viewer_that_left_is_not_counted_even_without_traffic() {
        let mut f = Fanout::new(limits(4, 1));
        let (_, _rx, token) = f.subscribe(vec![]).unwrap();
        assert_eq!(f.subscribers(), 1);
        drop(token);
        assert_eq!(f.subscribers(), 0);
    }
}
