// The command line answers on stdout and stderr (a key, the config, why it cannot start).
#![allow(clippy::print_stdout, clippy::print_stderr)]
use clap::Parser;
use std::path::PathBuf;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long mimalloc keeps freed memory before it gives it back to the OS. Its default (1 s)
/// is shorter than a GOP: every stream's pictures of the last GOP are freed together when the
/// next keyframe comes and their pages were returned and faulted in (zeroed by the kernel)
/// again for the next GOP, about a sixth of the engine's CPU at 1000 cameras (perf, see
/// docs/PERFORMANCE.md). Longer than any GOP, shorter than "never", so a burst's memory
/// still goes back.
const ALLOC_PURGE_DELAY_MS: std::ffi::c_long = 10_000;
/// `mi_option_purge_delay` of mimalloc v3 (`mimalloc.h`); libmimalloc-sys names no constant
/// for it, so its current value is checked against v3's default before it is changed.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const MI_PURGE_DELAY_DEFAULT_MS: std::ffi::c_long = 1_000;

/// Sets the purge delay unless the option slot does not hold what v3's purge delay holds (an
/// allocator version with other numbering) or someone set it (`MIMALLOC_PURGE_DELAY`).
fn tune_allocator() -> Result<std::ffi::c_long, std::ffi::c_long> {
    // SAFETY: plain option reads and writes of the linked mimalloc, before other threads exist.
    unsafe {
        let now = libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY);
        if now != MI_PURGE_DELAY_DEFAULT_MS || std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return Err(now);
        }
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ALLOC_PURGE_DELAY_MS);
        Ok(libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY))
    }
}

/// gmv: GB/T 28181 streaming engine (RTP/PS ingest, HTTP-FLV out).
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// YAML config file; without it the embedded default (config/gmv.yml) is used.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Print the effective configuration as YAML and exit.
    #[arg(long)]
    print_config: bool,
    /// Print the SHA-256 of an API key (what `http.api_keys[].sha256` holds) and exit; with no
    /// KEY, a new random key is made and printed with it.
    #[arg(long, value_name = "KEY", num_args = 0..=1, default_missing_value = "")]
    hash_key: Option<String>,
    /// Also play a generated test pattern (OpenH264, PS over RTP on loopback) as stream
    /// 0000000001, so there is a picture without a camera.
    #[arg(long)]
    demo: bool,
    /// What this process runs (overrides `node.role`): `all` (SIP, REST, console and media),
    /// `media` (shards, ingest, play and the node API, no SIP) or `control` (SIP, REST and
    /// console, streams placed on `node.media_nodes`).
    #[arg(long, value_parser = ["all", "media", "control"])]
    role: Option<String>,
}

fn main() -> std::process::ExitCode {
    use std::io::IsTerminal;
    use tracing_subscriber::prelude::*;
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        // Colour for a person at a terminal; plain text for a log file or journald.
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal()))
        // The latest warnings and errors, for the console's dashboard.
        .with(gmv::recent_log::RecentLog)
        .init();
    match tune_allocator() {
        Ok(ms) => tracing::debug!(purge_delay_ms = ms, "allocator tuned"),
        Err(ms) => tracing::info!(purge_delay_ms = ms, "allocator purge delay left as it is (set by MIMALLOC_PURGE_DELAY, or not mimalloc v3's)"),
    }
    let cli = Cli::parse();
    if let Some(key) = cli.hash_key {
        let key = if key.is_empty() {
            match gmv::auth::generate() {
                Ok(k) => k,
                Err(e) => {
                    eprintln!("gmv: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            }
        } else {
            key
        };
        println!("key:    {key}\nsha256: {}", gmv::auth::key_hash(&key));
        return std::process::ExitCode::SUCCESS;
    }
    let mut config = match gmv::config::Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gmv: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if let Some(role) = &cli.role {
        config.node.role = match role.as_str() {
            "media" => gmv::config::Role::Media,
            "control" => gmv::config::Role::Control,
            _ => gmv::config::Role::All,
        };
        if let Err(e) = config.validate() {
            eprintln!("gmv: {e}");
            return std::process::ExitCode::from(2);
        }
    }
    if config.node.role == gmv::config::Role::Media && !config.sip.listen.is_empty() {
        tracing::info!(sip_listen = %config.sip.listen, "role media: no SIP (sip.listen ignored); driven over the node API");
        config.sip.listen.clear();
    }
    if cli.print_config {
        print!("{}", serde_yaml_ng::to_string(&config).unwrap_or_default());
        return std::process::ExitCode::SUCCESS;
    }
    if cli.demo {
        // Before the encoder's thread starts, so a SIGTERM is the graceful stop there too.
        if let Err(error) = gmv::runtime::block_stop_signals() {
            eprintln!("gmv: cannot block the stop signals: {error}");
            return std::process::ExitCode::FAILURE;
        }
        let port = config.rtp.port_max;
        config.streams.push(gmv::config::StaticStream { ssrc: gmv::demo::DEMO_SSRC, port: Some(port), sdp: None });
        tracing::info!(stream_id = %gmv::proto::ssrc::stream_id(gmv::demo::DEMO_SSRC), port, "demo: a test pattern plays as this stream (console: Streams, ▶)");
        std::thread::spawn(move || {
            if let Err(error) = gmv::demo::run(port) {
                tracing::error!(%error, "demo: cannot encode the test pattern");
            }
        });
    }
    match gmv::runtime::run(config, cli.config) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gmv: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
