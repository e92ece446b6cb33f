//! The platform's events, one model for what an operator watches: devices coming and going,
//! registrations refused (and why), catalogs changing, alarms, streams starting and stopping,
//! downloads finishing. Kept on the control executor in a bounded history (what SSE clients
//! resume from with `Last-Event-ID`, and `GET /api/events?since=` reads), appended to
//! `data_dir/events.jsonl` off the executor, fanned out to SSE clients on bounded queues and
//! posted to webhooks.

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

/// Events kept in memory (and on disk after a compaction); older ones are forgotten.
pub const EVENTS_HISTORY_MAX: usize = 10_000;
/// Events older than this are forgotten at start-up and not returned.
pub const EVENTS_HISTORY_AGE_S: u64 = 7 * 86_400;
/// Events waiting for one SSE client; a client that falls this far behind is dropped.
pub const SSE_QUEUE_EVENTS_MAX: usize = 256;
/// SSE clients at once; more get 503.
pub const SSE_CLIENTS_MAX: usize = 256;
/// New events are appended to the file this often.
pub const EVENTS_PERSIST_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PlatformEvent {
    pub id: u64,
    /// Unix ms.
    pub at_ms: u64,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<String>,
    #[serde(default)]
    pub data: Value,
}

#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct EventCounters {
    pub published: u64,
    pub sse_clients: usize,
    /// SSE clients dropped for falling behind.
    pub sse_dropped: u64,
    pub persist_failures: u64,
}

pub fn events_path(data_dir: &Path) -> PathBuf {
    data_dir.join("events.jsonl")
}

/// What the history file held: the events still within age (the last `EVENTS_HISTORY_MAX`),
/// and the id the next event takes.
#[derive(Debug, Default)]
pub struct Loaded {
    pub events: Vec<PlatformEvent>,
    /// One past the largest id in the file, aged-out events included: ids never go back
    /// across restarts.
    pub next_id: u64,
    /// Lines that are no event (torn by a crash, damaged): skipped and counted.
    pub skipped: usize,
}

/// Reads the history file (blocking IO). A damaged line (invalid UTF-8 torn inside a name, a
/// half-written line) is skipped, not the whole file; a file whose last line was torn gets a
/// line end, so the next event starts a line of its own.
pub fn load(data_dir: &Path, now_ms: u64) -> Loaded {
    let path = events_path(data_dir);
    let Ok(bytes) = std::fs::read(&path) else { return Loaded { next_id: 1, ..Loaded::default() } };
    let loaded = parse_history(&bytes, now_ms);
    if loaded.skipped > 0 {
        tracing::warn!(path = %path.display(), skipped = loaded.skipped, "event history: damaged lines skipped");
    }
    if !bytes.is_empty() && bytes.last() != Some(&b'\n') {
        use std::io::Write;
        let ended = std::fs::OpenOptions::new().append(true).open(&path).and_then(|mut f| f.write_all(b"\n"));
        if let Err(error) = ended {
            tracing::warn!(path = %path.display(), %error, "event history: cannot end its torn last line");
        }
    }
    loaded
}

/// The events of a history file's bytes (pure; see `load`).
pub fn parse_history(bytes: &[u8], now_ms: u64) -> Loaded {
    let oldest = now_ms.saturating_sub(EVENTS_HISTORY_AGE_S * 1000);
    let (mut events, mut skipped, mut largest) = (VecDeque::new(), 0, 0);
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace)) {
        match serde_json::from_slice::<PlatformEvent>(line) {
            Ok(e) => {
                largest = largest.max(e.id);
                if e.at_ms >= oldest {
                    if events.len() >= EVENTS_HISTORY_MAX {
                        events.pop_front();
                    }
                    events.push_back(e);
                }
            }
            Err(_) => skipped += 1,
        }
    }
    Loaded { events: events.into(), next_id: largest.saturating_add(1), skipped }
}

fn lines(events: &[PlatformEvent]) -> String {
    events.iter().filter_map(|e| serde_json::to_string(e).ok()).map(|l| l + "\n").collect()
}

pub struct EventHub {
    next_id: Cell<u64>,
    history: RefCell<VecDeque<Rc<PlatformEvent>>>,
    unsaved: RefCell<Vec<PlatformEvent>>,
    /// Lines in the file: past twice the history it is rewritten with the history alone.
    lines_on_disk: Cell<usize>,
    clients: RefCell<Vec<LocalSender<Rc<PlatformEvent>>>>,
    counters: RefCell<EventCounters>,
    pub webhooks: super::webhooks::Webhooks,
}

impl EventHub {
    pub fn new(loaded: Loaded, webhooks: super::webhooks::Webhooks) -> EventHub {
        let lines = loaded.events.len();
        EventHub {
            next_id: Cell::new(loaded.next_id.max(1)),
            history: RefCell::new(loaded.events.into_iter().map(Rc::new).collect()),
            unsaved: RefCell::new(Vec::new()),
            lines_on_disk: Cell::new(lines),
            clients: RefCell::new(Vec::new()),
            counters: RefCell::new(EventCounters::default()),
            webhooks,
        }
    }

    pub fn counters(&self) -> EventCounters {
        let mut c = *self.counters.borrow();
        c.sse_clients = self.clients.borrow().len();
        c
    }

    /// Records an event and hands it to every SSE client and webhook; its id.
    pub fn publish(&self, kind: &str, device_id: Option<&str>, channel_id: Option<&str>, data: Value) -> u64 {
        let id = self.next_id.get();
        // u64 ids: a million events a second would take half a million years to run out.
        self.next_id.set(id.saturating_add(1));
        let event = Rc::new(PlatformEvent {
            id,
            at_ms: crate::shard::unix_ms(),
            kind: kind.to_string(),
            device_id: device_id.map(str::to_string),
            channel_id: channel_id.map(str::to_string),
            data,
        });
        {
            let mut history = self.history.borrow_mut();
            if history.len() >= EVENTS_HISTORY_MAX {
                history.pop_front();
            }
            history.push_back(event.clone());
        }
        let mut unsaved = self.unsaved.borrow_mut();
        if unsaved.len() < EVENTS_HISTORY_MAX {
            unsaved.push((*event).clone());
        }
        drop(unsaved);
        let mut dropped = 0;
        self.clients.borrow_mut().retain(|c| {
            let kept = c.try_send(event.clone()).is_ok();
            dropped += u64::from(!kept);
            kept
        });
        let mut counters = self.counters.borrow_mut();
        counters.published += 1;
        counters.sse_dropped += dropped;
        drop(counters);
        self.webhooks.offer(&event);
        id
    }

    /// Event `id`, while the history holds it.
    pub fn find(&self, id: u64) -> Option<Rc<PlatformEvent>> {
        self.history.borrow().iter().rev().find(|e| e.id == id).cloned()
    }

    /// Acknowledges alarm event `alarm_id` (an `alarm_acknowledged` event naming it, who and
    /// why); the new event's id. None when there is no such alarm in the history; Err(id of the
    /// earlier one) when it was acknowledged already.
    pub fn acknowledge(&self, alarm_id: u64, by: &str, note: &str) -> Option<Result<u64, u64>> {
        let alarm = self.find(alarm_id).filter(|e| e.kind == "alarm")?;
        let earlier = self.history.borrow().iter().find(|e| e.kind == "alarm_acknowledged" && e.data["alarm_id"] == alarm_id).map(|e| e.id);
        if let Some(id) = earlier {
            return Some(Err(id));
        }
        let data = serde_json::json!({ "alarm_id": alarm_id, "by": by, "note": note });
        Some(Ok(self.publish("alarm_acknowledged", alarm.device_id.as_deref(), alarm.channel_id.as_deref(), data)))
    }

    /// Events after `after_id`, or at/after `since_ms`, of `kind` if given, oldest first, at
    /// most `limit`.
    pub fn history(&self, after_id: Option<u64>, since_ms: Option<u64>, kind: Option<&str>, limit: usize) -> Vec<Rc<PlatformEvent>> {
        self.history
            .borrow()
            .iter()
            .filter(|e| after_id.is_none_or(|a| e.id > a) && since_ms.is_none_or(|s| e.at_ms >= s) && kind.is_none_or(|k| e.kind == k))
            .take(limit)
            .cloned()
            .collect()
    }

    /// A live feed for an SSE client: events from now on; None when there are too many clients.
    pub fn subscribe(&self) -> Option<LocalReceiver<Rc<PlatformEvent>>> {
        // Clients gone are removed at the next event (their queue is closed).
        let mut clients = self.clients.borrow_mut();
        if clients.len() >= SSE_CLIENTS_MAX {
            return None;
        }
        let (tx, rx) = local_channel::new_bounded(SSE_QUEUE_EVENTS_MAX);
        clients.push(tx);
        Some(rx)
    }

    /// Appends new events to the file, forever (blocking IO on a blocking thread).
    pub async fn persist_loop(self: Rc<Self>, data_dir: PathBuf) {
        loop {
            glommio::timer::sleep(EVENTS_PERSIST_INTERVAL).await;
            let new = std::mem::take(&mut *self.unsaved.borrow_mut());
            if new.is_empty() {
                continue;
            }
            let compact = self.lines_on_disk.get() + new.len() > 2 * EVENTS_HISTORY_MAX;
            let (text, lines) = if compact {
                let all: Vec<PlatformEvent> = self.history.borrow().iter().map(|e| (**e).clone()).collect();
                (lines(&all), all.len())
            } else {
                (lines(&new), self.lines_on_disk.get() + new.len())
            };
            let path = events_path(&data_dir);
            let written = glommio::executor()
                .spawn_blocking(move || {
                    use std::io::Write;
                    if compact {
                        let tmp = path.with_extension("jsonl.tmp");
                        std::fs::write(&tmp, text)?;
                        std::fs::rename(tmp, &path)
                    } else {
                        std::fs::OpenOptions::new().create(true).append(true).open(&path)?.write_all(text.as_bytes())
                    }
                })
                .await;
            match written {
                Ok(()) => self.lines_on_disk.set(lines),
                Err(error) => {
                    self.counters.borrow_mut().persist_failures += 1;
                    tracing::warn!(%error, "cannot append events to the history file; they stay in memory");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: u64, at_ms: u64, name: &str) -> String {
        let e = PlatformEvent { id, at_ms, kind: "device_online".into(), device_id: Some(name.into()), channel_id: None, data: Value::Null };
        serde_json::to_string(&e).unwrap() + "\n"
    }

    #[test]
    fn a_torn_or_damaged_line_costs_that_line_only() {
        let now = 10 * 86_400 * 1000;
        let mut bytes = line(1, now, "前门").into_bytes();
        // A crash tore a line inside a Chinese name: invalid UTF-8, no line end...
        let torn = line(2, now, "后院").into_bytes();
        bytes.extend_from_slice(&torn[..torn.len() / 2 - 1]);
        bytes.push(b'\n');
        bytes.extend_from_slice(b"\xff\xfe not json\n");
        bytes.extend_from_slice(line(3, now, "车库").as_bytes());
        let loaded = parse_history(&bytes, now);
        assert_eq!(loaded.events.iter().map(|e| e.id).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!((loaded.skipped, loaded.next_id), (2, 4));
    }

    #[test]
    fn ids_go_on_after_the_history_ages_out() {
        let now = 30 * 86_400 * 1000;
        let old = line(41, 1_000, "a") + &line(42, 2_000, "b");
        let loaded = parse_history(old.as_bytes(), now);
        assert!(loaded.events.is_empty(), "older than the history keeps");
        assert_eq!(loaded.next_id, 43, "ids never start over");
        assert_eq!(parse_history(b"", now).next_id, 1);
        assert_eq!(parse_history(line(u64::MAX, now, "x").as_bytes(), now).next_id, u64::MAX, "never wraps");
    }

    #[test]
    fn a_file_with_a_torn_tail_gets_a_line_end() {
        let dir = std::env::temp_dir().join(format!("gmv-events-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let now = 86_400 * 1000;
        std::fs::write(events_path(&dir), line(1, now, "a") + "{\"id\":2,\"at_ms\":").unwrap();
        let loaded = load(&dir, now);
        assert_eq!((loaded.events.len(), loaded.skipped, loaded.next_id), (1, 1, 2));
        let text = std::fs::read_to_string(events_path(&dir)).unwrap();
        assert!(text.ends_with('\n'), "the next append starts a line: {text:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
