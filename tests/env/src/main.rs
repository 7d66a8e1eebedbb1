//! `signalman-env up`: the local environment for a person or a script. Prints where
//! everything listens, optionally writes shell exports to a file, and runs until
//! interrupted (Ctrl-C or SIGTERM), taking the API server and moto down with it.
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Local kube-apiserver + SWF (moto) + SSM Automation emulator")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start everything and wait until interrupted.
    Up {
        /// Write `export` lines (KUBECONFIG, AWS_ENDPOINT_URL, ...) to this file once ready.
        #[arg(long)]
        env_file: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let Cli {
        command: Cmd::Up { env_file },
    } = Cli::parse();
    let env = signalman_testenv::Env::start()?;
    let exports = env.shell_exports();
    if let Some(path) = env_file {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &exports)?;
        std::fs::rename(&tmp, &path)?;
    }
    println!("{exports}");
    println!("ready (Ctrl-C to stop)");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        anyhow::Ok(())
    })?;
    // Exiting ends the owner thread; PDEATHSIG stops the API server and moto, and the next
    // start removes this run's state directory.
    Ok(())
}
