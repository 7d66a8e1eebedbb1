//! `aws-emu`: runs the emulator until SIGTERM or SIGINT.
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;

/// SSM Automation and STS emulated, SWF proxied to moto, with faults on demand.
/// Prints `ready http://HOST:PORT` on stdout once it listens.
#[derive(Parser, Debug)]
#[command(name = "aws-emu", version)]
struct Args {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// moto's URL, where SWF calls are forwarded.
    #[arg(long)]
    swf_upstream: Option<String>,
    /// Account of the ARNs the emulator makes up.
    #[arg(long, default_value = "123456789012")]
    account_id: String,
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// A fault configuration to start with (JSON, as `PUT /_emu/faults` takes).
    #[arg(long)]
    faults: Option<PathBuf>,
    /// Start with throttling at the published AWS quotas (ignored with --faults).
    #[arg(long)]
    aws_quotas: bool,
    /// A lag configuration to start with (JSON, as `PUT /_emu/lag` takes).
    #[arg(long)]
    lag: Option<PathBuf>,
    /// An STS configuration to start with (JSON, as `PUT /_emu/sts` takes).
    #[arg(long)]
    sts: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = Args::parse();
    let emu = aws_emulator::start(aws_emulator::EmulatorConfig {
        listen: args.listen,
        swf_upstream: args.swf_upstream,
        account_id: args.account_id,
        region: args.region,
    })
    .await?;
    if let Some(path) = &args.faults {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let config =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        emu.handle.set_faults(config)?;
    } else if args.aws_quotas {
        emu.handle
            .set_faults(aws_emulator::FaultConfig::aws_quotas())?;
    }
    if let Some(path) = &args.lag {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let config =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        emu.handle.set_lag(config)?;
    }
    if let Some(path) = &args.sts {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let config =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        emu.handle.set_sts(config);
    }
    println!("ready {}", emu.endpoint);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    emu.shutdown();
    Ok(())
}
