//! Webhooks: each platform event of the kinds a receiver wants is POSTed to it as JSON, signed
//! with HMAC-SHA256 of the body (`X-Gmv-Signature: sha256=<hex>`). One worker per receiver on
//! the control executor sends in order from a bounded queue, retrying with backoff; a receiver
//! that is down only fills its own queue (then events for it are dropped and counted), never
//! slows SIP or media.

use super::events::PlatformEvent;
use crate::config::WebhookConfig;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// Events waiting for one receiver; past this new ones are dropped (counted).
pub const WEBHOOK_QUEUE_EVENTS_MAX: usize = 1024;
/// Tries per event; waits between them double from the first.
pub const WEBHOOK_ATTEMPTS_MAX: u32 = 5;
pub const WEBHOOK_RETRY_FIRST: Duration = Duration::from_millis(500);
/// One delivery (connect, send, the answer).
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct WebhookCounters {
    pub delivered: u64,
    pub retries: u64,
    /// Given up after `WEBHOOK_ATTEMPTS_MAX` tries.
    pub failed: u64,
    /// Not queued: the receiver's queue was full.
    pub dropped: u64,
}

pub use crate::outbound::parse_url;

/// `sha256=<hex>` of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

struct Receiver {
    config: WebhookConfig,
    queue: LocalSender<Rc<PlatformEvent>>,
}

#[derive(Default)]
pub struct Webhooks {
    receivers: Vec<Receiver>,
    counters: Rc<RefCell<WebhookCounters>>,
}

impl Webhooks {
    /// Starts one worker per configured receiver (on the current executor).
    pub fn start(configs: &[WebhookConfig]) -> Webhooks {
        let counters = Rc::new(RefCell::new(WebhookCounters::default()));
        let receivers = configs
            .iter()
            .map(|config| {
                let (queue, rx) = local_channel::new_bounded(WEBHOOK_QUEUE_EVENTS_MAX);
                glommio::spawn_local(worker(config.clone(), rx, counters.clone())).detach();
                Receiver { config: config.clone(), queue }
            })
            .collect();
        Webhooks { receivers, counters }
    }

    pub fn counters(&self) -> WebhookCounters {
        *self.counters.borrow()
    }

    pub fn offer(&self, event: &Rc<PlatformEvent>) {
        for r in &self.receivers {
            if !r.config.kinds.is_empty() && !r.config.kinds.contains(&event.kind) {
                continue;
            }
            if r.queue.try_send(event.clone()).is_err() {
                let mut c = self.counters.borrow_mut();
                c.dropped += 1;
                if c.dropped.is_power_of_two() {
                    tracing::warn!(url = %r.config.url, dropped = c.dropped, "webhook receiver too slow or down: events dropped");
                }
            }
        }
    }
}

async fn worker(config: WebhookConfig, rx: LocalReceiver<Rc<PlatformEvent>>, counters: Rc<RefCell<WebhookCounters>>) {
    while let Some(event) = rx.recv().await {
        let body = serde_json::to_vec(&*event).unwrap_or_default();
        let headers = [
            "User-Agent: gmv".to_string(),
            format!("X-Gmv-Event: {}", event.kind),
            format!("X-Gmv-Delivery: {}", event.id),
            format!("X-Gmv-Signature: {}", signature(&config.secret, &body)),
        ];
        let mut wait = WEBHOOK_RETRY_FIRST;
        for attempt in 1..=WEBHOOK_ATTEMPTS_MAX {
            let sent = match crate::outbound::post(&config.url, &headers, "application/json", &body, WEBHOOK_TIMEOUT).await {
                Ok(answer) if (200..300).contains(&answer.status) => Ok(()),
                Ok(answer) => Err(format!("answered {}", answer.status)),
                Err(e) => Err(e.to_string()),
            };
            match sent {
                Ok(()) => {
                    counters.borrow_mut().delivered += 1;
                    break;
                }
                Err(error) if attempt == WEBHOOK_ATTEMPTS_MAX => {
                    counters.borrow_mut().failed += 1;
                    tracing::warn!(url = %config.url, event = event.id, kind = %event.kind, %error, "webhook delivery failed; event dropped");
                }
                Err(error) => {
                    counters.borrow_mut().retries += 1;
                    tracing::debug!(url = %config.url, event = event.id, attempt, %error, "webhook delivery failed; retrying");
                    glommio::timer::sleep(wait).await;
                    wait *= 2;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures() {
        // RFC 4231 test case 2.
        assert_eq!(signature("Jefe", b"what do ya want for nothing?"), "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }
}
