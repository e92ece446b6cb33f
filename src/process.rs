//! This process's own figures for the dashboard and a media node's keepalive: CPU time (and a
//! sampler that turns it into a percentage between two reads), resident memory, open files.
//! Cheap reads of the kernel's counters for this process (getrusage, /proc/self).

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static STARTED: OnceLock<(Instant, u64)> = OnceLock::new();

/// Notes the process's start (the first call counts).
pub fn mark_started() {
    let unix_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let _ = STARTED.set((Instant::now(), unix_s));
}

/// When the process started (unix seconds) and how long ago (seconds).
pub fn started() -> (u64, u64) {
    let (at, unix_s) = *STARTED.get_or_init(|| (Instant::now(), 0));
    (unix_s, at.elapsed().as_secs())
}

/// Process CPU time (user + system) so far.
pub fn cpu_time() -> Duration {
    // SAFETY: rusage is plain integers and timevals, for which all-zero bytes are valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Resident memory in bytes (the second field of /proc/self/statm, in pages).
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a constant of the system.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// Open file descriptors (entries of /proc/self/fd, bounded by the process's own limit).
pub fn open_fds() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count())
}

/// CPU use between two reads, as a percentage of one core (200 is two cores busy).
pub struct CpuSampler {
    mark: Cell<(Duration, Instant)>,
}

impl Default for CpuSampler {
    fn default() -> Self {
        CpuSampler { mark: Cell::new((cpu_time(), Instant::now())) }
    }
}

impl CpuSampler {
    /// Since the previous call (or since made), rounded to a tenth.
    pub fn percent(&self) -> f64 {
        let (then, at) = self.mark.get();
        let now = cpu_time();
        let wall = at.elapsed().as_secs_f64().max(0.001);
        self.mark.set((now, Instant::now()));
        (now.saturating_sub(then).as_secs_f64() / wall * 1000.0).round() / 10.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_read() {
        assert!(rss_bytes().is_some_and(|b| b > 1 << 20));
        assert!(open_fds().is_some_and(|n| n >= 3));
        let s = CpuSampler::default();
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(50) {
            std::hint::black_box(0u64);
        }
        assert!(s.percent() > 10.0, "a busy loop shows");
    }
}
