//! `GET /metrics`: Prometheus text format, encoded by prometheus-client, gathered at scrape
//! time from the media shards (through the media-service API) and the SIP control plane. Needs
//! an API key in a header like the REST API (Prometheus: `authorization: {credentials: KEY}`).

use crate::control::Control;
use crate::shard::Shard;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::Value;

type Labels = Vec<(String, String)>;

/// Per-shard figures that only grow (exported as `_total` counters) and that go up and down.
const SHARD_COUNTERS: [(&str, &str); 4] = [
    ("packets", "RTP packets taken by the shard's streams"),
    ("bytes", "RTP bytes taken by the shard's streams"),
    ("lost", "RTP packets the shard's streams found missing (sequence gaps)"),
    ("foreign_packets", "packets dropped: another source or SSRC than the stream's"),
];
const SHARD_GAUGES: [(&str, &str); 4] = [
    ("streams", "streams on the shard"),
    ("subscribers", "live viewers (FLV, WebSocket) of the shard's streams"),
    ("hls_streams", "streams making HLS segments"),
    ("recordings", "streams being recorded"),
];
/// Figures of the control plane that are levels, not counts.
const CONTROL_GAUGES: [&str; 1] = ["sse_clients"];

/// The text to answer a scrape with.
pub async fn render(shard: &Shard, control: Option<&Control>) -> String {
    let mut registry = Registry::with_prefix("gmv");
    let shards = shard.shard_stats().await;
    for (name, help) in SHARD_COUNTERS {
        let family = Family::<Labels, Counter>::default();
        registry.register(format!("shard_{name}"), help, family.clone());
        for s in &shards {
            family.get_or_create(&shard_label(s)).inc_by(s[name].as_u64().unwrap_or(0));
        }
    }
    for (name, help) in SHARD_GAUGES {
        let family = Family::<Labels, Gauge>::default();
        registry.register(format!("shard_{name}"), help, family.clone());
        for s in &shards {
            family.get_or_create(&shard_label(s)).set(s[name].as_i64().unwrap_or(0));
        }
    }
    if shard.config.rtp.port != 0 {
        let names: Vec<String> = shards.first().and_then(|s| s["single_port"].as_object()).map(|o| o.keys().cloned().collect()).unwrap_or_default();
        for name in names {
            let family = Family::<Labels, Counter>::default();
            registry.register(format!("single_port_{name}"), format!("single RTP port: {}", name.replace('_', " ")), family.clone());
            for s in &shards {
                family.get_or_create(&shard_label(s)).inc_by(s["single_port"][&name].as_u64().unwrap_or(0));
            }
        }
    }
    if let Some(control) = control {
        let endpoint = control.endpoint();
        let groups = [
            ("sip", serde_json::to_value(endpoint.counters()).unwrap_or_default()),
            ("sip_driver", serde_json::to_value(control.driver_counters()).unwrap_or_default()),
            ("events", serde_json::to_value(control.events.counters()).unwrap_or_default()),
            ("webhooks", serde_json::to_value(control.events.webhooks.counters()).unwrap_or_default()),
        ];
        for (group, values) in groups {
            register_numbers(&mut registry, group, &values);
        }
        let devices = Gauge::<i64>::default();
        devices.set(endpoint.device_count() as i64);
        registry.register("sip_devices", "registered devices known to the control plane", devices);
        let sessions = Gauge::<i64>::default();
        sessions.set(endpoint.sessions().count() as i64);
        registry.register("sip_sessions", "media sessions (live, playback, download) with devices", sessions);
    }
    let mut text = String::new();
    if let Err(error) = encode(&mut text, &registry) {
        tracing::warn!(%error, "metrics not encoded");
    }
    text
}

fn shard_label(s: &Value) -> Labels {
    vec![("shard".to_string(), s["shard"].to_string())]
}

/// Every number of a counters struct as a metric of its own: counters, except the levels.
fn register_numbers(registry: &mut Registry, group: &str, values: &Value) {
    let Some(fields) = values.as_object() else { return };
    for (name, v) in fields {
        let Some(n) = v.as_u64() else { continue };
        let help = format!("{group}: {}", name.replace('_', " "));
        if CONTROL_GAUGES.contains(&name.as_str()) {
            let g = Gauge::<i64>::default();
            g.set(n as i64);
            registry.register(format!("{group}_{name}"), help, g);
        } else {
            let c = Counter::<u64>::default();
            c.inc_by(n);
            registry.register(format!("{group}_{name}"), help, c);
        }
    }
}
