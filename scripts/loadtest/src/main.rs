//! gmv-loadtest: N camera streams (PS over RTP, real-time pace, sendmmsg) and M HTTP-FLV
//! viewers against a gmv engine on loopback, bounded in time. Prints one JSON line of results.

mod capture;
mod engine;
mod sender;
mod viewer;

use clap::Parser;
use std::net::{SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Replay a PS-over-RTP capture as many streams against gmv and measure it")]
struct Args {
    /// gmv binary to spawn (with a generated config); without it, attach with --http/--pid.
    #[arg(long)]
    gmv: Option<String>,
    #[arg(long, default_value = "127.0.0.1:18080")]
    http: SocketAddr,
    /// Engine pid when attaching.
    #[arg(long)]
    pid: Option<u32>,
    #[arg(long, default_value = "gmv-dev-token")]
    token: String,
    /// Media shards of a spawned engine (0 = one per core).
    #[arg(long, default_value_t = 0)]
    shards: usize,
    #[arg(long, default_value_t = 100)]
    streams: usize,
    #[arg(long, default_value_t = 2000)]
    bitrate_kbps: u32,
    /// Annex B H.264 to use instead of a generated test pattern.
    #[arg(long)]
    clip: Option<std::path::PathBuf>,
    /// Seconds of sending (after set-up); the whole run stops by itself.
    #[arg(long, default_value_t = 20)]
    duration_s: u64,
    /// Seconds at the start of sending left out of the CPU figure (one-off work such as
    /// each stream's first-keyframe cover decode happens there). Loss counts the whole run.
    #[arg(long, default_value_t = 10)]
    warmup_s: u64,
    /// HTTP-FLV viewers, spread over the first `viewer_streams` streams.
    #[arg(long, default_value_t = 0)]
    viewers: usize,
    #[arg(long, default_value_t = 1)]
    viewer_streams: usize,
    /// Spawned engine makes no covers (to measure the media path alone).
    #[arg(long)]
    no_covers: bool,
    /// Sender threads (streams are split between them).
    #[arg(long, default_value_t = 1)]
    senders: usize,
    #[arg(long, default_value_t = 0.0)]
    loss_pct: f64,
    #[arg(long, default_value_t = 0.0)]
    reorder_pct: f64,
    #[arg(long, default_value_t = 0.0)]
    dup_pct: f64,
    #[arg(long, default_value = "target/loadtest")]
    work_dir: std::path::PathBuf,
}

/// Longest a run may take beyond its sending time (set-up, drain, report).
const RUN_OVERHEAD_MAX: Duration = Duration::from_secs(120);
const FIRST_SSRC: u32 = 200_000_000;

fn main() {
    let args = Args::parse();
    let hard_stop = Instant::now() + Duration::from_secs(args.duration_s) + RUN_OVERHEAD_MAX;
    std::thread::spawn(move || {
        while Instant::now() < hard_stop {
            std::thread::sleep(Duration::from_secs(1));
        }
        eprintln!("gmv-loadtest: hard time limit reached");
        std::process::exit(3);
    });
    if let Err(e) = run(&args) {
        eprintln!("gmv-loadtest: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    if !args.http.ip().is_loopback() {
        return Err("loopback only: --http must be 127.0.0.0/8".into());
    }
    let capture = capture::Capture::load(&args.work_dir, args.bitrate_kbps, args.clip.clone())?;
    let engine = match (&args.gmv, args.pid) {
        (Some(bin), _) => engine::Engine::spawn(bin, args.http, &args.token, args.streams, args.shards, !args.no_covers, &args.work_dir)?,
        (None, Some(pid)) => engine::Engine::attach(args.http, &args.token, pid),
        (None, None) => return Err("give --gmv BIN to spawn the engine, or --pid to attach".into()),
    };
    let mut targets = Vec::with_capacity(args.streams);
    // Viewers play with the play token each answer carries (the API key opens no play URL).
    let mut play_paths = Vec::new();
    for i in 0..args.streams {
        let ssrc = FIRST_SSRC + i as u32;
        let (status, v) = engine.request("POST", "/api/streams", &format!("{{\"ssrc\": {ssrc}}}")).map_err(|e| e.to_string())?;
        let port = v["port"].as_u64().filter(|_| status == 201).ok_or(format!("open stream {i}: {status} {v}"))?;
        targets.push(sender::Target { ssrc, dest: SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, port as u16) });
        play_paths.push(format!("/flv/{ssrc:010}/{}", v["play"]["token"].as_str().unwrap_or_default()));
    }

    let send_until = Instant::now() + Duration::from_secs(args.duration_s);
    let viewers: Vec<_> = (0..args.viewers)
        .map(|i| {
            let path = play_paths[i % args.viewer_streams.clamp(1, play_paths.len().max(1))].clone();
            let http = args.http;
            std::thread::spawn(move || viewer::run(http, &path, send_until))
        })
        .collect();
    // A viewer that joins mid-run measures first-frame latency (the GOP cache at work).
    let late = {
        let path = play_paths.first().cloned().unwrap_or_default();
        let http = args.http;
        let join_at = Instant::now() + Duration::from_secs(args.duration_s / 2);
        std::thread::spawn(move || {
            std::thread::sleep(join_at.saturating_duration_since(Instant::now()));
            viewer::run(http, &path, send_until)
        })
    };

    let rcvbuf_errors_before = engine::udp_rcvbuf_errors();
    let wall = Instant::now();
    // Steady-state CPU: sampled from the end of the warm-up to the end of sending.
    let warmup = Duration::from_secs(args.warmup_s.min(args.duration_s.saturating_sub(1)));
    let cpu_probe = {
        let pid = engine.pid;
        std::thread::spawn(move || {
            std::thread::sleep(warmup);
            let (t0, c0) = (Instant::now(), engine::cpu_seconds_of(pid));
            std::thread::sleep(send_until.saturating_duration_since(Instant::now()));
            (engine::cpu_seconds_of(pid) - c0) / t0.elapsed().as_secs_f64().max(0.001) * 100.0
        })
    };
    let imp = sender::Impairment { loss_pct: args.loss_pct, reorder_pct: args.reorder_pct, dup_pct: args.dup_pct };
    let per_sender = targets.len().div_ceil(args.senders.max(1)).max(1);
    let sent = std::thread::scope(|scope| {
        let handles: Vec<_> = targets
            .chunks(per_sender)
            .enumerate()
            .map(|(i, chunk)| {
                let capture = &capture;
                scope.spawn(move || sender::run(capture, chunk, send_until, imp, i as u64 + 1))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_default()).fold(sender::SendStats::default(), |a, b| a.merge(b))
    });
    let elapsed = wall.elapsed().as_secs_f64();
    let cpu = cpu_probe.join().unwrap_or(0.0);
    let rss = engine.rss_mib();
    std::thread::sleep(Duration::from_secs(1));
    let rcvbuf_errors = engine::udp_rcvbuf_errors() - rcvbuf_errors_before;

    let (_, list) = engine.request("GET", "/api/streams", "").map_err(|e| e.to_string())?;
    let streams = list["streams"].as_array().cloned().unwrap_or_default();
    let sum = |k: &str| streams.iter().map(|s| s[k].as_u64().unwrap_or(0)).sum::<u64>();
    let (received, lost, demux_errors, frames) = (sum("packets"), sum("lost"), sum("demux_errors"), sum("frames"));
    let low_latency = streams.iter().filter(|s| s["low_latency"] == true).count();

    let viewer_stats: Vec<viewer::ViewerStats> = viewers.into_iter().map(|h| h.join().unwrap_or_default()).collect();
    let late = late.join().unwrap_or_default();
    let viewer_bytes: u64 = viewer_stats.iter().map(|v| v.bytes).sum();
    let report = serde_json::json!({
        "streams": args.streams,
        "clip_kbps": capture.bitrate_kbps(),
        "seconds": (elapsed * 10.0).round() / 10.0,
        "sent_packets": sent.packets,
        "sent_pps": (sent.packets as f64 / elapsed).round(),
        "sent_mbit_s": (sent.bytes as f64 * 8.0 / elapsed / 1e6).round(),
        "dropped_on_purpose": sent.dropped_on_purpose,
        "send_errors": sent.send_errors,
        "late_send_slots": sent.late_slots,
        "engine_received_packets": received,
        "engine_missing_packets": sent.packets.saturating_sub(received),
        "engine_lost": lost,
        "engine_demux_errors": demux_errors,
        "engine_frames": frames,
        "engine_low_latency_streams": low_latency,
        "kernel_udp_rcvbuf_errors": rcvbuf_errors,
        "engine_cpu_pct": cpu.round(),
        "cpu_warmup_s": warmup.as_secs(),
        "engine_rss_mib": rss.round(),
        "viewers": viewer_stats.len(),
        "viewers_ok": viewer_stats.iter().filter(|v| v.status == 200 && v.stalls == 0).count(),
        "viewer_stalls": viewer_stats.iter().map(|v| u64::from(v.stalls)).sum::<u64>(),
        "viewer_goodput_mbit_s": (viewer_bytes as f64 * 8.0 / elapsed / 1e6 * 10.0).round() / 10.0,
        "late_viewer_first_keyframe_ms": late.first_keyframe.map(|d| d.as_millis() as u64),
    });
    println!("{report}");
    Ok(())
}
