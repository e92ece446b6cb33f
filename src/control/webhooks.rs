//! Webhooks: each platform event of the kinds a receiver wants is POSTed to it as JSON, signed
//! with HMAC-SHA256 of the body (`X-Gmv-Signature: sha256=<hex>`). One worker per receiver on
//! the control executor sends in order from a bounded queue, retrying with backoff; a receiver
//! that is down only fills its own queue (then events for it are dropped and counted), never
//! slows SIP or media.

use super::events::PlatformEvent;
use crate::config::WebhookConfig;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
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
/// One delivery (connect, send, the answer's status line).
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes of the answer read for its status line.
const WEBHOOK_ANSWER_BYTES_MAX: usize = 1024;

#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct WebhookCounters {
    pub delivered: u64,
    pub retries: u64,
    /// Given up after `WEBHOOK_ATTEMPTS_MAX` tries.
    pub failed: u64,
    /// Not queued: the receiver's queue was full.
    pub dropped: u64,
}

/// `http://host[:port][/path]` as (host, port, path).
pub fn parse_url(url: &str) -> Option<(String, u16, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (authority, 80),
    };
    let clean = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
    (clean(host) && path.bytes().all(|b| b.is_ascii_graphic())).then(|| (host.to_string(), port, path))
}

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
    let Some((host, port, path)) = parse_url(&config.url) else { return };
    while let Some(event) = rx.recv().await {
        let body = serde_json::to_vec(&*event).unwrap_or_default();
        let mut wait = WEBHOOK_RETRY_FIRST;
        for attempt in 1..=WEBHOOK_ATTEMPTS_MAX {
            let sent = futures_lite::future::or(deliver(&host, port, &path, &config.secret, &event, &body), async {
                glommio::timer::sleep(WEBHOOK_TIMEOUT).await;
                Err("timed out".to_string())
            })
            .await;
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

async fn deliver(host: &str, port: u16, path: &str, secret: &str, event: &PlatformEvent, body: &[u8]) -> Result<(), String> {
    let target = format!("{host}:{port}");
    // Name resolution may block: on a blocking thread.
    let addr = glommio::executor()
        .spawn_blocking(move || std::net::ToSocketAddrs::to_socket_addrs(&target).ok().and_then(|mut a| a.next()))
        .await
        .ok_or("cannot resolve the receiver")?;
    let mut conn = glommio::net::TcpStream::connect_timeout(addr, WEBHOOK_TIMEOUT).await.map_err(|e| e.to_string())?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: gmv\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Gmv-Event: {}\r\nX-Gmv-Delivery: {}\r\nX-Gmv-Signature: {}\r\nConnection: close\r\n\r\n",
        body.len(),
        event.kind,
        event.id,
        signature(secret, body)
    );
    conn.write_all(head.as_bytes()).await.map_err(|e| e.to_string())?;
    conn.write_all(body).await.map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 256];
    while !answer.windows(2).any(|w| w == b"\r\n") && answer.len() < WEBHOOK_ANSWER_BYTES_MAX {
        match conn.read(&mut buf).await.map_err(|e| e.to_string())? {
            0 => break,
            n => answer.extend_from_slice(&buf[..n]),
        }
    }
    let status: u16 = String::from_utf8_lossy(&answer).split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    if (200..300).contains(&status) { Ok(()) } else { Err(format!("answered {status}")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_signatures() {
        assert_eq!(parse_url("http://10.0.0.5:8080/hooks/gmv"), Some(("10.0.0.5".into(), 8080, "/hooks/gmv".into())));
        assert_eq!(parse_url("http://example.com"), Some(("example.com".into(), 80, "/".into())));
        assert_eq!(parse_url("https://example.com/x"), None);
        assert_eq!(parse_url("http://a b/x"), None);
        assert_eq!(parse_url("http://h:99999/"), None);
        // RFC 4231 test case 2.
        assert_eq!(signature("Jefe", b"what do ya want for nothing?"), "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }
}
