//! `GET /metrics`: Prometheus text format, encoded by prometheus-client, gathered at scrape
//! time from the media shards (through the media-service API) and the SIP control plane. Needs
//! an API key in a header like the REST API (Prometheus: `authorization: {credentials: KEY}`).

use crate::control::Control;
use crate::shard::{Shard, ShardTotals};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::Value;

type Labels = Vec<(String, String)>;

/// A per-shard figure: its name, help, and where `ShardTotals` has it.
type ShardFigure = (&'static str, &'static str, fn(&ShardTotals) -> u64);

/// Per-shard figures that only grow (exported as `_total` counters) and that go up and down.
const SHARD_COUNTERS: [ShardFigure; 5] = [
    ("packets", "RTP packets taken by the shard's streams", |t| t.packets.packets),
    ("bytes", "RTP bytes taken by the shard's streams", |t| t.packets.bytes),
    ("lost", "RTP packets the shard's streams found missing (sequence gaps)", |t| t.packets.lost),
    ("foreign_packets", "packets dropped: another source or SSRC than the stream's", |t| t.packets.foreign_packets),
    ("stream_socket_recv_errors", "failed receives on the streams' own UDP sockets", |t| t.stream_socket_recv_errors),
];
const SHARD_GAUGES: [ShardFigure; 4] = [
    ("streams", "streams on the shard", |t| t.streams as u64),
    ("subscribers", "live viewers (FLV, WebSocket) of the shard's streams", |t| t.subscribers as u64),
    ("hls_streams", "streams making HLS segments", |t| t.hls_streams as u64),
    ("recordings", "streams being recorded", |t| t.recordings as u64),
];
/// Figures of the control plane that are levels, not counts.
const CONTROL_GAUGES: [&str; 1] = ["sse_clients"];

/// Histograms gathered elsewhere (the SIP endpoint's, per bucket, one per method), encoded as
/// Prometheus expects: seconds, cumulative buckets, `+Inf` last, a `method` label each.
#[derive(Debug)]
struct Latencies(crate::proto::sip::endpoint::Latencies);

impl prometheus_client::encoding::EncodeMetric for Latencies {
    fn encode(&self, mut encoder: prometheus_client::encoding::MetricEncoder) -> Result<(), std::fmt::Error> {
        use crate::proto::sip::endpoint::{LATENCY_BOUNDS_MS, TIMED_METHODS};
        for (method, h) in TIMED_METHODS.iter().zip(self.0.by_method.iter()) {
            let bounds = LATENCY_BOUNDS_MS.iter().map(|ms| *ms as f64 / 1000.0).chain(std::iter::once(f64::MAX));
            let buckets: Vec<(f64, u64)> = bounds.zip(h.counts).collect();
            let labels = [("method", *method)];
            encoder.encode_family(&labels)?.encode_histogram::<prometheus_client::encoding::NoLabelSet>(h.sum_ms as f64 / 1000.0, h.count, &buckets, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Histogram
    }
}

/// Role control: each media node's state (1 up, 0 not), draining, load and placed streams.
fn register_nodes(registry: &mut Registry, nodes: &[crate::control::nodes::NodeView]) {
    type Figure = (&'static str, &'static str, fn(&crate::control::nodes::NodeView) -> i64);
    let figures: [Figure; 6] = [
        ("up", "1 while the media node sends keepalives", |n| i64::from(n.state == crate::control::nodes::NodeState::Up)),
        ("draining", "1 while the media node gets no new stream", |n| i64::from(n.draining)),
        ("streams", "streams on the media node (its last keepalive)", |n| n.load.streams as i64),
        ("viewers", "viewers on the media node (its last keepalive)", |n| n.load.viewers as i64),
        ("ingest_kbps", "media the node takes in, kbit/s (its last keepalive)", |n| n.load.ingest_kbps as i64),
        ("placed", "streams this control placed on the media node", |n| n.placed as i64),
    ];
    for (name, help, value) in figures {
        let family = Family::<Labels, Gauge>::default();
        registry.register(format!("media_node_{name}"), help, family.clone());
        for n in nodes {
            family.get_or_create(&vec![("node".to_string(), n.id.clone())]).set(value(n));
        }
    }
}

/// The text to answer a scrape with.
pub async fn render(shard: &Shard, control: Option<&Control>, node: Option<&crate::node::Node>) -> String {
    let mut registry = Registry::with_prefix("gmv");
    let shards = shard.shard_stats().await;
    for (name, help, value) in SHARD_COUNTERS {
        let family = Family::<Labels, Counter>::default();
        registry.register(format!("shard_{name}"), help, family.clone());
        for s in &shards {
            family.get_or_create(&shard_label(s)).inc_by(value(s));
        }
    }
    for (name, help, value) in SHARD_GAUGES {
        let family = Family::<Labels, Gauge>::default();
        registry.register(format!("shard_{name}"), help, family.clone());
        for s in &shards {
            family.get_or_create(&shard_label(s)).set(value(s) as i64);
        }
    }
    if shard.config.rtp.port != 0 {
        // Every field of the single port's counters, by the name it has in the API.
        let per_shard: Vec<(Labels, Value)> = shards.iter().map(|s| (shard_label(s), serde_json::to_value(s.single_port).unwrap_or_default())).collect();
        let names: Vec<String> = per_shard.first().and_then(|(_, v)| v.as_object()).map(|o| o.keys().cloned().collect()).unwrap_or_default();
        for name in names {
            let family = Family::<Labels, Counter>::default();
            registry.register(format!("single_port_{name}"), format!("single RTP port: {}", name.replace('_', " ")), family.clone());
            for (labels, counters) in &per_shard {
                family.get_or_create(labels).inc_by(counters[&name].as_u64().unwrap_or(0));
            }
        }
    }
    if let Some(control) = control {
        let sip = control.registry();
        let groups = [
            ("sip", serde_json::to_value(sip.counters()).unwrap_or_default()),
            ("sip_driver", serde_json::to_value(control.driver_counters()).unwrap_or_default()),
            ("events", serde_json::to_value(control.events.counters()).unwrap_or_default()),
            ("webhooks", serde_json::to_value(control.events.webhooks.counters()).unwrap_or_default()),
        ];
        for (group, values) in groups {
            register_numbers(&mut registry, group, &values);
        }
        let devices = Gauge::<i64>::default();
        devices.set(sip.device_count() as i64);
        registry.register("sip_devices", "registered devices known to the control plane", devices);
        let sessions = Gauge::<i64>::default();
        sessions.set(sip.sessions().count() as i64);
        registry.register("sip_sessions", "media sessions (live, playback, download) with devices", sessions);
        registry.register_with_unit(
            "sip_transaction_latency",
            "time from a request's first sending to the device's final answer, by method",
            prometheus_client::registry::Unit::Seconds,
            Latencies(sip.latencies()),
        );
        drop(sip);
        let ha = control.ha_view();
        let active = Gauge::<i64>::default();
        active.set(i64::from(ha.mode != crate::control::ha::Mode::Standby));
        registry.register("control_active", "1 while this control serves SIP (0: standby of a shared registry)", active);
        let takeovers = Counter::<u64>::default();
        takeovers.inc_by(ha.takeovers);
        registry.register("control_takeovers", "times this control won the shared registry's lease", takeovers);
        if let Some(nodes) = &control.nodes {
            register_nodes(&mut registry, &nodes.views(std::time::Instant::now()));
        }
    }
    if let Some(node) = node {
        register_numbers(&mut registry, "node", &serde_json::to_value(*node.counters.borrow()).unwrap_or_default());
        register_numbers(&mut registry, "node_hooks", &serde_json::to_value(node.hooks.counters()).unwrap_or_default());
        let servers = Gauge::<i64>::default();
        servers.set(node.servers.borrow().len() as i64);
        registry.register("node_rtp_servers", "RTP servers opened over the node API", servers);
    }
    let mut text = String::new();
    if let Err(error) = encode(&mut text, &registry) {
        tracing::warn!(%error, "metrics not encoded");
    }
    text
}

fn shard_label(s: &ShardTotals) -> Labels {
    vec![("shard".to_string(), s.shard.to_string())]
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
