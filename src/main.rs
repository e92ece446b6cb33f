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
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let config = match gmv::config::Config::load(cli.config.as_deref()) {
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
    match gmv::runtime::run(config) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gmv: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
