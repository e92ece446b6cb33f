//! When each picture of the first stream left the generator, so its viewers can tell how long
//! the engine took to hand it on: sender and viewers share this clock (one process).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Pictures remembered (a ring): far more than a viewer can lag and still be counted.
const FRAMES_KEPT: usize = 1_024;

pub struct FrameClock {
    start: Instant,
    /// Per slot: the picture number + 1 (0: empty) and when its last packet was sent.
    frame: Vec<AtomicU64>,
    sent_ns: Vec<AtomicU64>,
}

impl FrameClock {
    pub fn new() -> FrameClock {
        FrameClock { start: Instant::now(), frame: (0..FRAMES_KEPT).map(|_| AtomicU64::new(0)).collect(), sent_ns: (0..FRAMES_KEPT).map(|_| AtomicU64::new(0)).collect() }
    }

    /// Picture `n` of the stream has left, now.
    pub fn sent(&self, n: u64) {
        let slot = n as usize % FRAMES_KEPT;
        self.sent_ns[slot].store(self.start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.frame[slot].store(n + 1, Ordering::Release);
    }

    /// How long ago picture `n` left, if it is remembered.
    pub fn since_sent(&self, n: u64) -> Option<Duration> {
        let slot = n as usize % FRAMES_KEPT;
        if self.frame[slot].load(Ordering::Acquire) != n + 1 {
            return None;
        }
        let sent = Duration::from_nanos(self.sent_ns[slot].load(Ordering::Relaxed));
        Some(self.start.elapsed().saturating_sub(sent))
    }
}

/// The p-th percentile (0..=100) of `v` (sorted here).
pub fn percentile(v: &mut [Duration], p: usize) -> Option<Duration> {
    v.sort_unstable();
    (!v.is_empty()).then(|| v[(v.len() - 1) * p.min(100) / 100])
}
