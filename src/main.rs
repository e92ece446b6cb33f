use clap::Parser;
use std::path::PathBuf;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
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
    if cli.print_config {
        print!("{}", serde_yaml_ng::to_string(&config).unwrap_or_default());
        return std::process::ExitCode::SUCCESS;
    }
    if cli.demo {
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
