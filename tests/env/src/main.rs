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
        /// Also run a real node (containerd, kubelet, kube-proxy, kube-controller-manager,
        /// kube-scheduler) as root; stopping undoes its changes to the machine.
        #[arg(long)]
        node: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let Cli {
        command: Cmd::Up { env_file, node },
    } = Cli::parse();
    let env = if node {
        signalman_testenv::Env::start_for_node()?
    } else {
        signalman_testenv::Env::start()?
    };
    let node = node
        .then(|| signalman_testenv::Node::start(&env))
        .transpose()?;
    let exports = env.shell_exports();
    if let Some(path) = env_file {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &exports)?;
        std::fs::rename(&tmp, &path)?;
    }
    println!("{exports}");
    if let Some(node) = &node {
        println!(
            "node {} Ready; pods reach the AWS emulator at {}",
            node.name, node.aws_endpoint
        );
    }
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
    // The node before the API server: it removes its pods' containers and undoes its changes
    // to the machine, and returns when that is done.
    drop(node);
    // Exiting ends the owner thread; PDEATHSIG stops the API server and moto, and the next
    // start removes this run's state directory.
    Ok(())
}
