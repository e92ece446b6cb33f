//! gmv-loadtest: N camera streams (PS over RTP, real-time pace, sendmmsg) and M HTTP-FLV (and
//! WebRTC) viewers against a gmv engine on loopback, bounded in time. Prints one JSON line of
//! results.

mod bare;
mod capture;
mod engine;
mod frame_clock;
mod nodes;
mod sender;
mod viewer;
mod webrtc_viewer;

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
    /// WebRTC (WHEP) viewers, spread over the same streams as the FLV ones.
    #[arg(long, default_value_t = 0)]
    webrtc_viewers: usize,
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
    /// Spawned engine takes every stream on one RTP port (`rtp.port`), steered by SSRC.
    #[arg(long)]
    single_port: bool,
    /// Run the same load against a bare receiver (binds the same ports, only drains and counts:
    /// epoll + recvmmsg, a thread per core) before gmv and again after it (A/B/A: a figure is
    /// trusted when the two bare runs agree), and with `--single-port` also the per-stream bare
    /// receiver; report each and the engine's ratio to both.
    #[arg(long)]
    with_bare: bool,
    /// Run a control and this many media nodes (`--role control`, `--role media`, ports after
    /// --http's); one simulated NVR with --streams channels registers to the control and every
    /// channel is played through it: reports streams per node, play and SIP INVITE latency.
    #[arg(long, default_value_t = 0)]
    nodes: usize,
    /// (Internal) be that bare receiver: drain these comma-separated ports, or `--bare-single-port`.
    #[arg(long, hide = true)]
    bare_receiver: bool,
    #[arg(long, hide = true, default_value = "")]
    bare_ports: String,
    #[arg(long, hide = true)]
    bare_single_port: Option<u16>,
    #[arg(long, hide = true, default_value_t = 1)]
    bare_threads: usize,
    #[arg(long, hide = true, default_value = "bare-count")]
    bare_count_file: std::path::PathBuf,
    #[arg(long, hide = true, default_value_t = 60)]
    bare_run_s: u64,
    /// The bare receivers' socket receive buffer instead of what the engine's sockets ask for
    /// (an experiment's knob: what the buffer's size costs).
    #[arg(long)]
    bare_rcvbuf_bytes: Option<usize>,
    /// The bare receivers' pause after a round that found datagrams, instead of the engine's
    /// `rtp.gather_us` (`--gather-us`, or the engine's default) (`0`: none, a wait armed at once).
    #[arg(long)]
    bare_gather_us: Option<u64>,
    /// The spawned engine's `rtp.gather_us` (the engine's default when not given).
    #[arg(long)]
    gather_us: Option<u32>,
}

/// The spawned engine's single RTP port (below its stream port range).
const SINGLE_PORT: u16 = 39_990;

/// Longest a run may take beyond its sending time (set-up, drain, report).
const RUN_OVERHEAD_MAX: Duration = Duration::from_secs(120);
const FIRST_SSRC: u32 = 200_000_000;
/// Longest a bare receiver may take to bind and write its first count.
const BARE_UP_MAX: Duration = Duration::from_secs(10);

fn main() {
    let args = Args::parse();
    if args.bare_receiver {
        let ports: Vec<u16> = args.bare_ports.split(',').filter_map(|p| p.parse().ok()).collect();
        let gather = Duration::from_micros(bare_gather_us(&args));
        bare::serve(&ports, args.bare_single_port, args.bare_threads, args.bare_rcvbuf_bytes, gather, &args.bare_count_file, Duration::from_secs(args.bare_run_s));
    }
    // Each bare run sends as long as the engine's run does, after its receiver is up.
    let bare_runs = if !args.with_bare { 0 } else if args.single_port { 3 } else { 2 };
    let hard_stop = Instant::now() + (Duration::from_secs(args.duration_s) + BARE_UP_MAX) * (1 + bare_runs) + RUN_OVERHEAD_MAX;
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
    if args.nodes > 0 {
        return run_nodes(args, &capture);
    }
    let single_port = args.single_port.then_some(SINGLE_PORT);
    if args.with_bare && args.gmv.is_none() {
        return Err("--with-bare needs --gmv: the bare receivers bind the engine's ports while it is not running".into());
    }
    // A of A/B/A: the bare receiver in the engine's mode, and the per-stream one beside a
    // single port (the floor both modes are held to).
    let bare_before = if args.with_bare { Some(run_bare(args, &capture, single_port)?) } else { None };
    let per_stream_bare = if args.with_bare && single_port.is_some() { Some(run_bare(args, &capture, None)?) } else { None };
    let engine = match (&args.gmv, args.pid) {
        (Some(bin), _) => {
            let knobs = engine::Knobs { shards: args.shards, covers: !args.no_covers, single_port, gather_us: args.gather_us };
            engine::Engine::spawn(bin, args.http, &args.token, args.streams, knobs, &args.work_dir)?
        }
        (None, Some(pid)) => engine::Engine::attach(args.http, &args.token, pid),
        (None, None) => return Err("give --gmv BIN to spawn the engine, or --pid to attach".into()),
    };
    let mut targets = Vec::with_capacity(args.streams);
    // Viewers play with the play token each answer carries (the API key opens no play URL).
    let mut play_paths = Vec::new();
    let mut whep_paths = Vec::new();
    for i in 0..args.streams {
        let ssrc = FIRST_SSRC + i as u32;
        let (status, v) = engine.request("POST", "/api/streams", &format!("{{\"ssrc\": {ssrc}}}")).map_err(|e| e.to_string())?;
        let port = v["port"].as_u64().filter(|_| status == 201).ok_or(format!("open stream {i}: {status} {v}"))?;
        targets.push(sender::Target { ssrc, dest: SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, port as u16) });
        play_paths.push(format!("/flv/{ssrc:010}/{}", v["play"]["token"].as_str().unwrap_or_default()));
        whep_paths.push(format!("/whep/{ssrc:010}/{}", v["play"]["token"].as_str().unwrap_or_default()));
    }

    let send_until = Instant::now() + Duration::from_secs(args.duration_s);
    // Viewers of the first stream time each picture from its sending to its arrival.
    let clock = std::sync::Arc::new(frame_clock::FrameClock::new());
    let viewers: Vec<_> = (0..args.viewers)
        .map(|i| {
            let stream = i % args.viewer_streams.clamp(1, play_paths.len().max(1));
            let path = play_paths[stream].clone();
            let http = args.http;
            let clock = (stream == 0).then(|| clock.clone());
            std::thread::spawn(move || viewer::run(http, &path, send_until, clock.as_deref()))
        })
        .collect();
    let webrtc_viewers: Vec<_> = (0..args.webrtc_viewers)
        .map(|i| {
            let path = whep_paths[i % args.viewer_streams.clamp(1, whep_paths.len().max(1))].clone();
            let http = args.http;
            std::thread::spawn(move || webrtc_viewer::run(http, &path, send_until))
        })
        .collect();
    // A viewer that joins mid-run measures first-frame latency (the GOP cache at work).
    let late = {
        let path = play_paths.first().cloned().unwrap_or_default();
        let http = args.http;
        let join_at = Instant::now() + Duration::from_secs(args.duration_s / 2);
        std::thread::spawn(move || {
            std::thread::sleep(join_at.saturating_duration_since(Instant::now()));
            viewer::run(http, &path, send_until, None)
        })
    };

    let rcvbuf_errors_before = engine::udp_rcvbuf_errors();
    let wall = Instant::now();
    let warmup = warmup(args);
    let cpu_probe = cpu_probe(engine.pid, warmup, send_until);
    // Drops while all the streams start at once (their first keyframes together, the
    // engine's memory faulted in) apart from those of the measured, steady part.
    let rcvbuf_errors_at_warmup = std::thread::spawn(move || {
        std::thread::sleep(warmup);
        engine::udp_rcvbuf_errors()
    });
    let sent = send_all(args, &capture, &targets, send_until, Some(&clock));
    let elapsed = wall.elapsed().as_secs_f64();
    let usage = cpu_probe.join().unwrap_or_default();
    let cpu = usage.cpu_pct;
    let rss = engine.rss_mib();
    std::thread::sleep(Duration::from_secs(1));
    let rcvbuf_errors_now = engine::udp_rcvbuf_errors();
    let rcvbuf_errors = rcvbuf_errors_now - rcvbuf_errors_before;
    let rcvbuf_errors_after_warmup = rcvbuf_errors_now.saturating_sub(rcvbuf_errors_at_warmup.join().unwrap_or(rcvbuf_errors_before));

    // The list comes in pages of at most 1,000.
    let mut streams = Vec::new();
    while streams.len() < args.streams {
        let (_, page) = engine.request("GET", &format!("/api/streams?offset={}&limit=1000", streams.len()), "").map_err(|e| e.to_string())?;
        let got = page["streams"].as_array().cloned().unwrap_or_default();
        if got.is_empty() {
            break;
        }
        streams.extend(got);
    }
    let sum = |k: &str| streams.iter().map(|s| s[k].as_u64().unwrap_or(0)).sum::<u64>();
    let (received, lost, demux_errors, frames) = (sum("packets"), sum("lost"), sum("demux_errors"), sum("frames"));
    let low_latency = streams.iter().filter(|s| s["low_latency"] == true).count();

    // Packets per media shard (the SSRC spread) and what the single port dropped.
    let (_, shards) = engine.request("GET", "/api/shards", "").map_err(|e| e.to_string())?;
    let shards = shards["shards"].as_array().cloned().unwrap_or_default();
    let per_shard: Vec<u64> = shards.iter().map(|s| s["packets"].as_u64().unwrap_or(0)).collect();
    let mean = per_shard.iter().sum::<u64>() as f64 / per_shard.len().max(1) as f64;
    let spread_pct = per_shard.iter().map(|&p| (p as f64 - mean).abs() / mean.max(1.0) * 100.0).fold(0.0, f64::max);
    let single_port_dropped: u64 =
        shards.iter().map(|s| ["not_rtp", "unknown_ssrc", "forward_dropped"].iter().map(|k| s["single_port"][k].as_u64().unwrap_or(0)).sum::<u64>()).sum();

    let viewer_stats: Vec<viewer::ViewerStats> = viewers.into_iter().map(|h| h.join().unwrap_or_default()).collect();
    let late = late.join().unwrap_or_default();
    let webrtc: Vec<webrtc_viewer::WebRtcStats> = webrtc_viewers.into_iter().map(|h| h.join().unwrap_or_default()).collect();
    let mut connect_ms: Vec<u64> = webrtc.iter().filter_map(|w| w.connected_after).map(|d| d.as_millis() as u64).collect();
    connect_ms.sort_unstable();
    let viewer_bytes: u64 = viewer_stats.iter().map(|v| v.bytes).sum();
    let mut latencies: Vec<Duration> = viewer_stats.iter().flat_map(|v| v.latencies.iter().copied()).collect();
    let mut latency_ms = |p| frame_clock::percentile(&mut latencies, p).map(|d| (d.as_secs_f64() * 1e4).round() / 10.0);
    let mut report = serde_json::json!({
        "streams": args.streams,
        "single_port": args.single_port,
        "engine_packets_per_shard": per_shard,
        "engine_shard_spread_pct": (spread_pct * 10.0).round() / 10.0,
        "single_port_dropped": single_port_dropped,
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
        "kernel_udp_rcvbuf_errors_after_warmup": rcvbuf_errors_after_warmup,
        "engine_cpu_pct": (cpu * 10.0).round() / 10.0,
        "cpu_warmup_s": warmup.as_secs(),
        "engine_rss_mib": rss.round(),
        "viewers": viewer_stats.len(),
        "viewers_ok": viewer_stats.iter().filter(|v| v.status == 200 && v.stalls == 0).count(),
        "viewer_stalls": viewer_stats.iter().map(|v| u64::from(v.stalls)).sum::<u64>(),
        "viewer_goodput_mbit_s": (viewer_bytes as f64 * 8.0 / elapsed / 1e6 * 10.0).round() / 10.0,
        "late_viewer_first_keyframe_ms": late.first_keyframe.map(|d| d.as_millis() as u64),
        "webrtc_viewers": webrtc.len(),
        "webrtc_viewers_ok": webrtc.iter().filter(|w| w.status == 201 && w.connected_after.is_some() && w.stalls == 0 && w.video_frames > 0).count(),
        "webrtc_stalls": webrtc.iter().map(|w| u64::from(w.stalls)).sum::<u64>(),
        "webrtc_video_frames": webrtc.iter().map(|w| w.video_frames).sum::<u64>(),
        "webrtc_goodput_mbit_s": (webrtc.iter().map(|w| w.bytes).sum::<u64>() as f64 * 8.0 / elapsed / 1e6 * 10.0).round() / 10.0,
        "webrtc_connect_ms_max": connect_ms.last(),
        "webrtc_first_error": webrtc.iter().find_map(|w| w.error.clone()),
        "webrtc_offer_statuses": webrtc.iter().fold(std::collections::BTreeMap::new(), |mut m, w| {
            *m.entry(w.status.to_string()).or_insert(0u32) += 1;
            m
        }),
        "frame_to_viewer_ms_p50": latency_ms(50),
        "frame_to_viewer_ms_p99": latency_ms(99),
        "frame_to_viewer_samples": latencies.len(),
    });
    let sent_pps = sent.packets as f64 / elapsed;
    report["engine_us_per_packet"] = serde_json::json!(us_per_packet(cpu, sent_pps));
    report["engine_packets_per_wait"] = serde_json::json!(packets_per_wait(sent_pps, usage.waits_per_s));
    if let Some(before) = bare_before {
        // The second bare run binds the engine's ports: the engine's exit frees them a little
        // later (its io_uring is torn down after the process is gone).
        drop(engine);
        let ports = single_port.map_or_else(|| stream_ports(args.streams), |p| vec![p]);
        if !ports_free_within(&ports, BARE_UP_MAX) {
            return Err("the engine's ports were still bound after it stopped".into());
        }
        let after = run_bare(args, &capture, single_port)?;
        let bares = [&before, &after];
        let mean_cpu = (before.cpu_pct + after.cpu_pct) / 2.0;
        let ratio = |floor: f64| (cpu / floor.max(0.1) * 100.0).round() / 100.0;
        report["bare_cpu_pct"] = serde_json::json!(bares.map(|b| (b.cpu_pct * 10.0).round() / 10.0));
        report["bare_us_per_packet"] = serde_json::json!(bares.map(|b| us_per_packet(b.cpu_pct, b.sent_pps)));
        report["bare_packets_per_wait"] = serde_json::json!(bares.map(|b| packets_per_wait(b.sent_pps, b.waits_per_s)));
        report["bare_spread_pct"] = serde_json::json!(((before.cpu_pct - after.cpu_pct).abs() / mean_cpu.max(0.1) * 1000.0).round() / 10.0);
        report["bare_received_packets"] = serde_json::json!(bares.map(|b| b.received));
        report["bare_missing_packets"] = serde_json::json!(bares.map(|b| b.sent.saturating_sub(b.received)));
        report["bare_late_send_slots"] = serde_json::json!(bares.map(|b| b.late_slots));
        report["cpu_vs_bare"] = serde_json::json!(ratio(mean_cpu));
        let per_stream_cpu = match &per_stream_bare {
            Some(p) => {
                report["per_stream_bare_cpu_pct"] = serde_json::json!((p.cpu_pct * 10.0).round() / 10.0);
                report["per_stream_bare_us_per_packet"] = serde_json::json!(us_per_packet(p.cpu_pct, p.sent_pps));
                report["per_stream_bare_packets_per_wait"] = serde_json::json!(packets_per_wait(p.sent_pps, p.waits_per_s));
                report["per_stream_bare_missing_packets"] = serde_json::json!(p.sent.saturating_sub(p.received));
                // The ruler's own check: the single-port floor costs no more than the per-stream one.
                report["bare_vs_per_stream_bare"] = serde_json::json!((mean_cpu / p.cpu_pct.max(0.1) * 100.0).round() / 100.0);
                p.cpu_pct
            }
            None => mean_cpu,
        };
        report["cpu_vs_per_stream_bare"] = serde_json::json!(ratio(per_stream_cpu));
    }
    println!("{report}");
    Ok(())
}

/// `--nodes`: set up (control, nodes, NVR, every channel played), send, report per node.
fn run_nodes(args: &Args, capture: &capture::Capture) -> Result<(), String> {
    let run = nodes::set_up(args)?;
    let until = Instant::now() + Duration::from_secs(args.duration_s);
    let wall = Instant::now();
    let probes: Vec<_> = run.nodes.iter().map(|n| cpu_probe(n.pid, warmup(args), until)).collect();
    let control_probe = cpu_probe(run.control.pid, warmup(args), until);
    let sent = send_all(args, capture, &run.targets, until, None);
    let elapsed = wall.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(1));
    let mut report = run.report.clone();
    let per_node = nodes::per_node(&run);
    let received: u64 = per_node.as_array().map_or(0, |n| n.iter().map(|n| n["packets"].as_u64().unwrap_or(0)).sum());
    report["streams"] = serde_json::json!(args.streams);
    report["per_node"] = per_node;
    report["node_cpu_pct"] = serde_json::json!(probes.into_iter().map(|p| p.join().unwrap_or_default().cpu_pct.round()).collect::<Vec<_>>());
    report["control_cpu_pct"] = serde_json::json!(control_probe.join().unwrap_or_default().cpu_pct.round());
    report["seconds"] = serde_json::json!((elapsed * 10.0).round() / 10.0);
    report["sent_packets"] = serde_json::json!(sent.packets);
    report["sent_mbit_s"] = serde_json::json!((sent.bytes as f64 * 8.0 / elapsed / 1e6).round());
    report["late_send_slots"] = serde_json::json!(sent.late_slots);
    report["nodes_received_packets"] = serde_json::json!(received);
    report["nodes_missing_packets"] = serde_json::json!(sent.packets.saturating_sub(received));
    println!("{report}");
    Ok(())
}

/// Steady-state CPU is sampled from the end of the warm-up to the end of sending.
fn warmup(args: &Args) -> Duration {
    Duration::from_secs(args.warmup_s.min(args.duration_s.saturating_sub(1)))
}

/// What a process used from the end of the warm-up to the end of sending.
#[derive(Default, Clone, Copy)]
struct Usage {
    /// 100 = one core.
    cpu_pct: f64,
    /// Times its threads gave up the CPU to wait (voluntary context switches: parks), a second.
    waits_per_s: f64,
}

/// What `pid` used from `warmup` on until `until`.
fn cpu_probe(pid: u32, warmup: Duration, until: Instant) -> std::thread::JoinHandle<Usage> {
    std::thread::spawn(move || {
        std::thread::sleep(warmup);
        let (t0, c0, w0) = (Instant::now(), engine::cpu_seconds_of(pid), engine::voluntary_switches_of(pid));
        std::thread::sleep(until.saturating_duration_since(Instant::now()));
        let seconds = t0.elapsed().as_secs_f64().max(0.001);
        Usage {
            cpu_pct: (engine::cpu_seconds_of(pid) - c0) / seconds * 100.0,
            waits_per_s: engine::voluntary_switches_of(pid).saturating_sub(w0) as f64 / seconds,
        }
    })
}

/// Every target sent from `args.senders` threads until `until` (the first thread notes when
/// the first target's pictures left on `clock`).
fn send_all(args: &Args, capture: &capture::Capture, targets: &[sender::Target], until: Instant, clock: Option<&frame_clock::FrameClock>) -> sender::SendStats {
    let imp = sender::Impairment { loss_pct: args.loss_pct, reorder_pct: args.reorder_pct, dup_pct: args.dup_pct };
    let per_sender = targets.len().div_ceil(args.senders.max(1)).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> =
            targets.chunks(per_sender).enumerate().map(|(i, chunk)| scope.spawn(move || sender::run(capture, chunk, until, imp, i as u64 + 1, clock.filter(|_| i == 0)))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_default()).fold(sender::SendStats::default(), |a, b| a.merge(b))
    })
}

/// The ports a spawned engine gives its first `streams` streams (the lowest of its range),
/// which the per-stream bare receiver binds.
fn stream_ports(streams: usize) -> Vec<u16> {
    (0..streams).map(|i| engine::PORT_MIN + i as u16).collect()
}

/// True once every one of `ports` can be bound on loopback (polled), false after `within`.
fn ports_free_within(ports: &[u16], within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if ports.iter().all(|&p| std::net::UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, p)).is_ok()) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Datagrams taken per wait of the receiving threads (more is fewer wake-ups per datagram).
fn packets_per_wait(pps: f64, waits_per_s: f64) -> f64 {
    (pps / waits_per_s.max(1.0) * 10.0).round() / 10.0
}

/// Microseconds of CPU per datagram: `cpu_pct` (100 = one core) at `pps` datagrams a second.
fn us_per_packet(cpu_pct: f64, pps: f64) -> f64 {
    (cpu_pct / 100.0 * 1e6 / pps.max(1.0) * 1000.0).round() / 1000.0
}

struct BareRun {
    cpu_pct: f64,
    waits_per_s: f64,
    sent: u64,
    sent_pps: f64,
    received: u64,
    late_slots: u64,
}

/// The bare receiver pauses as long as the engine does after a round that found datagrams:
/// the same wake-ups for the same load, so the ratio is of the work, not of the pause.
fn bare_gather_us(args: &Args) -> u64 {
    args.bare_gather_us.unwrap_or_else(|| u64::from(args.gather_us.unwrap_or(gmv::config::RTP_GATHER_US_DEFAULT)))
}

/// The same streams against the bare receiver, on the ports gmv would use.
fn run_bare(args: &Args, capture: &capture::Capture, single_port: Option<u16>) -> Result<BareRun, String> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let ports = stream_ports(args.streams);
    let count_file = args.work_dir.join("bare-count");
    let _ = std::fs::remove_file(&count_file);
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--bare-receiver").arg("--bare-threads").arg(threads.to_string()).arg("--bare-count-file").arg(&count_file);
    cmd.arg("--bare-run-s").arg((args.duration_s + 30).to_string());
    if let Some(bytes) = args.bare_rcvbuf_bytes {
        cmd.arg("--bare-rcvbuf-bytes").arg(bytes.to_string());
    }
    cmd.arg("--bare-gather-us").arg(bare_gather_us(args).to_string());
    match single_port {
        Some(p) => cmd.arg("--bare-single-port").arg(p.to_string()),
        None => cmd.arg("--bare-ports").arg(ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",")),
    };
    let mut child = cmd.spawn().map_err(|e| format!("bare receiver: {e}"))?;
    let read_count = || std::fs::read_to_string(&count_file).ok().and_then(|t| t.trim().parse::<u64>().ok());
    let up_by = Instant::now() + BARE_UP_MAX;
    while read_count().is_none() && Instant::now() < up_by {
        std::thread::sleep(Duration::from_millis(20));
    }
    let targets: Vec<sender::Target> = (0..args.streams)
        .map(|i| sender::Target {
            ssrc: FIRST_SSRC + i as u32,
            dest: SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, single_port.unwrap_or(ports[i])),
        })
        .collect();
    let (wall, until) = (Instant::now(), Instant::now() + Duration::from_secs(args.duration_s));
    let probe = cpu_probe(child.id(), warmup(args), until);
    let sent = send_all(args, capture, &targets, until, None);
    let sent_pps = sent.packets as f64 / wall.elapsed().as_secs_f64().max(0.001);
    let usage = probe.join().unwrap_or_default();
    std::thread::sleep(Duration::from_millis(500));
    let received = read_count().unwrap_or(0);
    let _ = child.kill();
    let _ = child.wait();
    Ok(BareRun { cpu_pct: usage.cpu_pct, waits_per_s: usage.waits_per_s, sent: sent.packets, sent_pps, received, late_slots: sent.late_slots })
}
