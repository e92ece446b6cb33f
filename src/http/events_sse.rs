//! `GET /api/events`: the platform's events as Server-Sent Events (live; `Last-Event-ID`
//! replays what the client missed from the kept history), or with `?since=` (unix seconds) or
//! `?after=` (an event id) the history as JSON.

use super::conn::HttpConn;
use super::request::RequestHead;
use super::response::{respond_error, respond_json};
use crate::control::Control;
use crate::control::events::{EVENTS_HISTORY_MAX, PlatformEvent};
use futures_lite::AsyncWriteExt;
use serde_json::json;
use std::time::Duration;

/// A comment line this often keeps proxies from closing a quiet stream and finds dead clients.
pub const SSE_PING_INTERVAL: Duration = Duration::from_secs(15);
/// Events in one history answer (`limit`, default and most).
pub const EVENTS_PAGE_DEFAULT: usize = 500;
pub const EVENTS_PAGE_MAX: usize = 5_000;

fn sse_frame(e: &PlatformEvent) -> String {
    format!("id: {}\nevent: {}\ndata: {}\n\n", e.id, e.kind, serde_json::to_string(e).unwrap_or_default())
}

pub async fn serve(control: &Control, conn: &mut HttpConn, head: &RequestHead) {
    let kind = head.query_param("kind");
    if head.query_param("since").is_some() || head.query_param("after").is_some() {
        let since_ms = head.query_param("since").and_then(|s| s.parse::<u64>().ok()).map(|s| s * 1000);
        let after = head.query_param("after").and_then(|s| s.parse::<u64>().ok());
        let limit = head.query_param("limit").and_then(|l| l.parse().ok()).unwrap_or(EVENTS_PAGE_DEFAULT).clamp(1, EVENTS_PAGE_MAX);
        let events: Vec<_> = control.events.history(after, since_ms, kind, limit).iter().map(|e| json!(**e)).collect();
        return respond_json(conn, 200, &json!({ "events": events })).await;
    }
    let Some(feed) = control.events.subscribe() else {
        return respond_error(conn, 503, "busy", "too many event streams open").await;
    };
    conn.keep_alive = false;
    let extra = "Content-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\n";
    let mut out = super::response::head(conn, 200, extra);
    // What the client missed, from the history; the live feed then skips what was replayed.
    let mut last_sent = 0;
    if let Some(after) = head.header("last-event-id").and_then(|v| v.trim().parse::<u64>().ok()) {
        for e in control.events.history(Some(after), None, kind, EVENTS_HISTORY_MAX) {
            out.push_str(&sse_frame(&e));
            last_sent = e.id;
        }
    }
    if conn.write_all(out.as_bytes()).await.is_err() {
        return;
    }
    loop {
        let next = futures_lite::future::or(async { feed.recv().await.map(Some) }, async {
            glommio::timer::sleep(SSE_PING_INTERVAL).await;
            Some(None)
        })
        .await;
        let text = match next {
            None => break, // the hub dropped this client: it fell behind
            Some(None) => ": ping\n\n".to_string(),
            Some(Some(e)) if e.id <= last_sent || kind.is_some_and(|k| e.kind != k) => continue,
            Some(Some(e)) => {
                last_sent = e.id;
                sse_frame(&e)
            }
        };
        if conn.write_all(text.as_bytes()).await.is_err() || conn.flush().await.is_err() {
            break;
        }
    }
    let _ = conn.close().await;
}
