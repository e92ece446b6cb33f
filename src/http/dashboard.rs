//! `GET /api/dashboard`: one answer for the console's dashboard (概览): version and uptime,
//! this process's CPU, memory and open files, the data directory's disk, the media shards'
//! streams, viewers and ingest, devices online and offline, media nodes with their load, and
//! the latest warnings and errors of the log. Any role may read it.

use super::Front;
use serde_json::{Value, json};
use std::time::Instant;

/// Warnings and errors given, newest first.
const RECENT_ERRORS_SHOWN: usize = 20;

pub async fn dashboard(front: &Front) -> Value {
    let shard = &front.shard;
    let shards = shard.shard_stats().await;
    let streams = shard.list_streams().await;
    let data_dir = shard.config.data_dir.clone();
    let (rss, fds, disk) = glommio::executor()
        .spawn_blocking(move || (crate::process::rss_bytes(), crate::process::open_fds(), crate::shard::retention::file_system_space(&data_dir)))
        .await;
    let (started_at, uptime_s) = crate::process::started();
    let sum = |f: fn(&crate::shard::ShardTotals) -> u64| shards.iter().map(f).sum::<u64>();
    let media = json!({
        "shards": shards.len(),
        "streams": streams.len(),
        "viewers": sum(|t| t.subscribers as u64),
        "webrtc_sessions": sum(|t| t.webrtc_sessions as u64),
        "hls_streams": sum(|t| t.hls_streams as u64),
        "recordings": sum(|t| t.recordings as u64),
        "ingest_kbps": streams.iter().map(|s| s.bitrate_kbps).sum::<u64>(),
        "packets": sum(|t| t.packets.packets),
        "lost": sum(|t| t.packets.lost),
        "foreign_packets": sum(|t| t.packets.foreign_packets),
        "streams_without_media": streams.iter().filter(|s| s.frames == 0).count(),
    });
    let (devices, nodes) = match &front.control {
        Some(control) => {
            let now = Instant::now();
            let registry = control.registry();
            let (mut total, mut online, mut channels) = (0usize, 0usize, 0usize);
            for d in registry.devices() {
                total += 1;
                online += usize::from(registry.is_online(d, now));
                channels += d.channels.len();
            }
            drop(registry);
            let nodes = control.nodes.as_ref().map(|n| n.views(now)).unwrap_or_default();
            (json!({ "total": total, "online": online, "offline": total - online, "channels": channels }), json!(nodes))
        }
        None => (Value::Null, json!([])),
    };
    let recent: Vec<_> = crate::recent_log::recent().into_iter().rev().take(RECENT_ERRORS_SHOWN).collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "node_id": shard.config.node_id,
        "started_at": started_at,
        "uptime_s": uptime_s,
        "process": {
            "cpu_percent": front.cpu.percent(),
            "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
            "rss_bytes": rss,
            "open_fds": fds,
        },
        "disk": disk.map(|(free, total)| json!({ "path": shard.config.data_dir.display().to_string(), "free_bytes": free, "total_bytes": total })),
        "media": media,
        "devices": devices,
        "nodes": nodes,
        "recent_errors": recent,
    })
}
