//! One stream's viewers: a GOP cache for instant start and a bounded queue per viewer.
//! A viewer whose queue is full skips to the next keyframe; one that keeps falling behind
//! is disconnected: told through its cut signal, so its writer stops even while stuck in a
//! write to a client that reads nothing. Publishing never waits, so a slow viewer cannot
//! stall the shard.

use crate::proto::flv::FlvTag;
use bytes::Bytes;
use glommio::GlommioError;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use futures_channel::oneshot;
use std::collections::VecDeque;
use std::net::IpAddr;

/// Viewers of one stream; more are refused with 503.
pub const SUBSCRIBERS_PER_STREAM_MAX: usize = 4096;

pub struct FanoutLimits {
    pub gop_cache_bytes_max: usize,
    pub queue_tags_max: usize,
    pub skips_max: u32,
    /// Viewers from one address (`media.viewers_per_address_max`).
    pub per_address_max: usize,
}

struct Subscriber {
    tx: LocalSender<Bytes>,
    from: IpAddr,
    /// Fired when the viewer is disconnected for being slow.
    cut: Option<oneshot::Sender<()>>,
    /// Gone when the viewer's writer ends, even if no tag has been published since.
    alive: std::rc::Weak<()>,
    /// Waiting for a keyframe after its queue overflowed.
    skipping: bool,
    skips: u32,
}

/// A new viewer: what to write first (preamble and cached GOP), the live queue, a token it
/// holds while connected, and the signal that it was cut for being slow.
pub struct Subscription {
    pub first: Vec<Bytes>,
    pub rx: LocalReceiver<Bytes>,
    pub token: std::rc::Rc<()>,
    pub cut: oneshot::Receiver<()>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `SUBSCRIBERS_PER_STREAM_MAX` viewers.
    Full,
    /// `per_address_max` viewers from this address.
    PerAddress,
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

    /// Someone takes the tags (counted at the latest `publish`, which lets the gone go).
    pub fn watched(&self) -> bool {
        !self.subs.is_empty()
    }

    pub fn gop_cache_bytes_max(&self) -> usize {
        self.limits.gop_cache_bytes_max
    }

    /// True when a GOP is cached.
    pub fn has_gop(&self) -> bool {
        self.gop_valid
    }

    /// The cached GOP is stale (tags stopped being built): nothing is cached until the next
    /// keyframe is published.
    pub fn forget_gop(&mut self) {
        self.gop = VecDeque::new();
        self.gop_bytes = 0;
        self.gop_valid = false;
    }

    /// Adds a viewer from `from`, given the preamble to write before the cached GOP.
    pub fn subscribe(&mut self, preamble: Vec<Bytes>, from: IpAddr) -> Result<Subscription, Refused> {
        self.subs.retain(|s| s.alive.strong_count() > 0);
        if self.subs.len() >= SUBSCRIBERS_PER_STREAM_MAX {
            return Err(Refused::Full);
        }
        if self.subs.iter().filter(|s| s.from == from).count() >= self.limits.per_address_max {
            return Err(Refused::PerAddress);
        }
        let (tx, rx) = local_channel::new_bounded(self.limits.queue_tags_max);
        let mut first = preamble;
        if self.gop_valid {
            first.extend(self.gop.iter().cloned());
        }
        // Without a cached GOP the viewer waits for the next keyframe.
        let token = std::rc::Rc::new(());
        let (cut_tx, cut) = oneshot::channel();
        self.subs.push(Subscriber { tx, from, cut: Some(cut_tx), alive: std::rc::Rc::downgrade(&token), skipping: !self.gop_valid, skips: 0 });
        Ok(Subscription { first, rx, token, cut })
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
                        tracing::info!(skips = s.skips, from = %s.from, "disconnecting slow viewer");
                        if let Some(cut) = s.cut.take() {
                            let _ = cut.send(());
                        }
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

    /// The stream goes on without its audio: the cached GOP and sequence headers lose theirs.
    pub fn forget_audio(&mut self) {
        let is_audio = |t: &Bytes| t.first() == Some(&crate::proto::flv::TAG_AUDIO);
        self.gop.retain(|t| !is_audio(t));
        self.gop_bytes = self.gop.iter().map(Bytes::len).sum();
        self.config.retain(|(kind, _)| *kind != crate::proto::flv::TAG_AUDIO);
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

    const ME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    fn limits(queue: usize, skips: u32) -> FanoutLimits {
        FanoutLimits { gop_cache_bytes_max: 8, queue_tags_max: queue, skips_max: skips, per_address_max: 2 }
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
        let Subscription { first, rx, token: _token, .. } = f.subscribe(vec![Bytes::from_static(b"P")], ME).unwrap();
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
        let Subscription { first, rx, token: _token, .. } = f.subscribe(vec![], ME).unwrap();
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
        let Subscription { rx, token: _token, mut cut, .. } = f.subscribe(vec![], ME).unwrap();
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
        assert_eq!(cut.try_recv(), Ok(Some(())), "its writer is told to stop, even mid-write");
    }

    #[test]
    fn viewers_per_address_are_capped_and_a_closed_stream_cuts_nobody() {
        let mut f = Fanout::new(limits(4, 1));
        let other = IpAddr::from([192, 0, 2, 9]);
        let a = f.subscribe(vec![], ME).unwrap();
        let _b = f.subscribe(vec![], ME).unwrap();
        assert_eq!(f.subscribe(vec![], ME).err(), Some(Refused::PerAddress));
        let mut c = f.subscribe(vec![], other).unwrap();
        drop(a.token);
        let _again = f.subscribe(vec![], ME).expect("a viewer that left frees its place");
        f.close();
        assert!(c.cut.try_recv().is_err(), "closing the stream is no cut: the writer sends what is queued");
    }

    #[test]
    fn a_viewer_that_left_is_not_counted_even_without_traffic() {
        let mut f = Fanout::new(limits(4, 1));
        let Subscription { token, .. } = f.subscribe(vec![], ME).unwrap();
        assert_eq!(f.subscribers(), 1);
        drop(token);
        assert_eq!(f.subscribers(), 0);
    }
}
