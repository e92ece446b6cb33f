//! ZLMediaKit-style hooks: JSON POSTs to the URL configured for each hook name, from a
//! bounded queue served by a few workers on the control executor, each delivery under a
//! timeout and retried. A hook whose answer matters (`on_play`, `on_publish`,
//! `on_stream_none_reader`) hands it back on a one-shot channel. A receiver that is down only
//! fills the queue (then hooks are dropped and counted); media and SIP never wait on it.

use futures_channel::oneshot;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use serde::Serialize;
use serde_json::{Map, Value};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

/// Hooks waiting to be sent; past this new ones are dropped (counted).
pub const HOOK_QUEUE_MAX: usize = 4096;
/// Deliveries in flight at once (a slow receiver delays only these).
pub const HOOK_WORKERS: usize = 16;

#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct HookCounters {
    pub posted: u64,
    pub delivered: u64,
    pub retries: u64,
    /// Given up after every try.
    pub failed: u64,
    /// Not queued: the queue was full.
    pub dropped: u64,
}

/// Where and how hooks are sent; `setServerConfig` changes it while running.
#[derive(Debug, Clone)]
pub struct HookTargets {
    pub urls: std::collections::BTreeMap<String, String>,
    /// `hook.enable`: off, no hook is posted.
    pub enabled: bool,
    pub timeout: Duration,
    pub retry: u32,
    pub retry_delay: Duration,
    pub media_server_id: String,
}

/// A hook's answer: its JSON object, or why there is none.
pub type HookAnswer = Result<Map<String, Value>, String>;

struct Job {
    name: &'static str,
    url: String,
    body: Vec<u8>,
    reply: Option<oneshot::Sender<HookAnswer>>,
}

pub struct Hooks {
    queue: LocalSender<Job>,
    pub targets: Rc<RefCell<HookTargets>>,
    index: Cell<u64>,
    counters: Rc<RefCell<HookCounters>>,
}

impl Hooks {
    /// Starts the workers on the current executor.
    pub fn start(targets: HookTargets) -> Hooks {
        let (queue, rx) = local_channel::new_bounded(HOOK_QUEUE_MAX);
        let rx = Rc::new(rx);
        let targets = Rc::new(RefCell::new(targets));
        let counters = Rc::new(RefCell::new(HookCounters::default()));
        for _ in 0..HOOK_WORKERS {
            glommio::spawn_local(worker(rx.clone(), targets.clone(), counters.clone())).detach();
        }
        Hooks { queue, targets, index: Cell::new(0), counters }
    }

    pub fn counters(&self) -> HookCounters {
        *self.counters.borrow()
    }

    pub fn configured(&self, name: &str) -> bool {
        let t = self.targets.borrow();
        t.enabled && t.urls.get(name).is_some_and(|u| !u.is_empty())
    }

    /// Queues hook `name` with `body` (plus `hook_index` and `mediaServerId`); nothing when the
    /// hook is not configured or the queue is full.
    pub fn post(&self, name: &'static str, body: Map<String, Value>) {
        self.queue(name, body, None);
    }

    /// Like `post`, and its answer comes back: None when it is not configured, Some(Err) when
    /// it was dropped or failed.
    pub async fn ask(&self, name: &'static str, body: Map<String, Value>) -> Option<HookAnswer> {
        if !self.configured(name) {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        self.queue(name, body, Some(tx));
        Some(rx.await.unwrap_or_else(|_| Err("hook dropped: queue full".to_string())))
    }

    fn queue(&self, name: &'static str, mut body: Map<String, Value>, reply: Option<oneshot::Sender<HookAnswer>>) {
        if !self.configured(name) {
            return;
        }
        let targets = self.targets.borrow();
        let Some(url) = targets.urls.get(name) else { return };
        let index = self.index.get();
        self.index.set(index + 1);
        body.insert("hook_index".into(), index.into());
        body.insert("mediaServerId".into(), targets.media_server_id.clone().into());
        let job = Job { name, url: url.clone(), body: serde_json::to_vec(&body).unwrap_or_default(), reply };
        let mut c = self.counters.borrow_mut();
        c.posted += 1;
        if self.queue.try_send(job).is_err() {
            c.dropped += 1;
            if c.dropped.is_power_of_two() {
                tracing::warn!(hook = name, dropped = c.dropped, "hook receiver too slow or down: hooks dropped");
            }
        }
    }
}

/// The longest wait before a hook is tried again.
pub const HOOK_RETRY_DELAY_MAX: Duration = Duration::from_secs(60);

/// The wait before try `attempt` (1 for the first retry): `first`, doubling, at most
/// `HOOK_RETRY_DELAY_MAX`.
fn retry_delay(first: Duration, attempt: u32) -> Duration {
    first.saturating_mul(1 << attempt.saturating_sub(1).min(16)).min(HOOK_RETRY_DELAY_MAX)
}

async fn worker(rx: Rc<LocalReceiver<Job>>, targets: Rc<RefCell<HookTargets>>, counters: Rc<RefCell<HookCounters>>) {
    let headers = [format!("User-Agent: gmv/{}", env!("CARGO_PKG_VERSION")), format!("X-VHOST: {}", super::rtp_servers::VHOST)];
    while let Some(job) = rx.recv().await {
        let (timeout, retry, delay) = {
            let t = targets.borrow();
            (t.timeout, t.retry, t.retry_delay)
        };
        let mut answer = Err(String::new());
        for attempt in 0..=retry {
            if attempt > 0 {
                counters.borrow_mut().retries += 1;
                // Backing off: the delay doubles each retry, up to a bound.
                glommio::timer::sleep(retry_delay(delay, attempt)).await;
            }
            answer = match crate::outbound::post(&job.url, &headers, "application/json", &job.body, timeout).await {
                Ok(a) if a.status == 200 => serde_json::from_slice::<Map<String, Value>>(&a.body).map_err(|e| format!("answer is no JSON object: {e}")),
                Ok(a) => Err(format!("answered HTTP {}", a.status)),
                Err(e) => Err(e.to_string()),
            };
            if answer.is_ok() {
                break;
            }
            tracing::debug!(hook = job.name, url = %job.url, attempt, error = answer.as_ref().err().map(String::as_str), "hook delivery failed");
        }
        match &answer {
            Ok(_) => counters.borrow_mut().delivered += 1,
            Err(error) => {
                let mut c = counters.borrow_mut();
                c.failed += 1;
                // A receiver that is down fails every hook: a line at 1, 2, 4, ... failures.
                if c.failed.is_power_of_two() {
                    tracing::warn!(hook = job.name, url = %job.url, %error, failed = c.failed, "hook not delivered");
                }
            }
        }
        if let Some(reply) = job.reply {
            let _ = reply.send(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_doubling_to_a_bound() {
        let first = Duration::from_millis(3000);
        let waits: Vec<u64> = (1..=7).map(|a| retry_delay(first, a).as_secs()).collect();
        assert_eq!(waits, [3, 6, 12, 24, 48, 60, 60]);
        assert_eq!(retry_delay(first, u32::MAX), HOOK_RETRY_DELAY_MAX);
    }
}
