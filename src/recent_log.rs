//! The latest warnings and errors of the log, kept in memory for the console's dashboard
//! ("recent errors"): a tracing layer beside the log writer. Bounded (`RECENT_LOG_ENTRIES_MAX`
//! entries of at most `LOG_MESSAGE_BYTES_MAX` bytes); only WARN and ERROR events reach the
//! lock, and the log's own rate limits (a warning at 1, 2, 4, 8, ... drops) keep them rare.

use serde::Serialize;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Mutex;
use tracing_subscriber::layer::{Context, Layer};

pub const RECENT_LOG_ENTRIES_MAX: usize = 100;
pub const LOG_MESSAGE_BYTES_MAX: usize = 512;

#[derive(Debug, Clone, Serialize)]
pub struct LogEntry {
    pub unix_ms: u64,
    pub level: &'static str,
    pub target: String,
    /// The message and its fields (`name=value`), cut at `LOG_MESSAGE_BYTES_MAX`.
    pub message: String,
}

static RECENT: Mutex<VecDeque<LogEntry>> = Mutex::new(VecDeque::new());

/// The kept entries, newest last.
pub fn recent() -> Vec<LogEntry> {
    RECENT.lock().map(|r| r.iter().cloned().collect()).unwrap_or_default()
}

fn keep(entry: LogEntry) {
    if let Ok(mut r) = RECENT.lock() {
        if r.len() == RECENT_LOG_ENTRIES_MAX {
            r.pop_front();
        }
        r.push_back(entry);
    }
}

/// The layer: `tracing_subscriber::registry().with(...).with(RecentLog)`.
pub struct RecentLog;

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if self.0.len() >= LOG_MESSAGE_BYTES_MAX {
            return;
        }
        if field.name() == "message" {
            let fields = std::mem::take(&mut self.0);
            let _ = write!(self.0, "{value:?}{fields}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        // Strings without Debug's quotes and escapes.
        self.record_debug(field, &format_args!("{value}"));
    }
}

impl<S: tracing::Subscriber> Layer<S> for RecentLog {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        // tracing orders levels by verbosity: INFO, DEBUG and TRACE are "greater" than WARN.
        if *meta.level() > tracing::Level::WARN {
            return;
        }
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        let mut message = fields.0;
        if message.len() > LOG_MESSAGE_BYTES_MAX {
            let mut cut = LOG_MESSAGE_BYTES_MAX;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let unix_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        keep(LogEntry { unix_ms, level: meta.level().as_str(), target: meta.target().to_string(), message });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::prelude::*;

    #[test]
    fn warnings_and_errors_are_kept_bounded_and_cut() {
        let subscriber = tracing_subscriber::registry().with(RecentLog);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("not kept");
            tracing::warn!(ssrc = 7u32, peer = "10.0.0.9", "stream lost its source");
            let kept = recent().into_iter().rfind(|e| e.message.starts_with("stream lost")).unwrap();
            assert_eq!((kept.message.as_str(), kept.level), ("stream lost its source ssrc=7 peer=10.0.0.9", "WARN"), "one line");
            let long = "界".repeat(400);
            tracing::error!(what = %long, "a long one");
            for i in 0..RECENT_LOG_ENTRIES_MAX {
                tracing::warn!(i, "filler");
            }
        });
        let all = recent();
        assert_eq!(all.len(), RECENT_LOG_ENTRIES_MAX);
        assert!(all.iter().all(|e| e.message.len() <= LOG_MESSAGE_BYTES_MAX && e.level != "INFO"));
        // (Another test may log beside this one: the entries are the process's.)
        assert!(all.iter().any(|e| e.message == "filler i=99"), "{:?}", all.last());
    }
}
