//! `kubectl signalman`: a kubectl plugin to look at signals the way the operator does.
//!
//! - `status`: a signal's status, its policy decision now, its receipt, its Events, what AWS
//!   shows for its target now, and what to do about its reason ([`fixes`]).
//! - `can-i`: which SignalPolicy would allow or deny each signal of a manifest, offline.
//! - `pending`: what waits for a signal this namespace may send (Automation executions at an
//!   aws:approve step that its identity may approve, open SWF executions), as manifests.
//! - `retry`: asks the operator to end a signal's backoff now (an annotation).
//!
//! Every decision is the operator's own code ([`crate::policy::evaluate`], the receipt key of
//! [`crate::controller::receipts`], [`crate::delivery::hasten`]); nothing here creates a signal
//! or calls a writing AWS operation. Never printed: an input, a payload or a credential.
use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;

pub mod can_i;
pub mod fixes;
pub mod pending;
pub mod retry;
pub mod status;

#[derive(Parser)]
#[command(
    name = "kubectl-signalman",
    bin_name = "kubectl signalman",
    version,
    about = "Look at signalman's signals as the operator does: status, policy checks, what waits for a signal, retry now"
)]
pub struct Cli {
    /// Kubeconfig file (else KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use (else the current one).
    #[arg(long, global = true)]
    pub context: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// A signal's phase, reason and fix, policy decision now, receipt, Events and AWS side.
    Status(status::Args),
    /// Which SignalPolicy would allow or deny each signal of a manifest (no AWS call); exit
    /// code 1 when any is denied.
    CanI(can_i::Args),
    /// Automation executions waiting for an approval this namespace may give, and open SWF
    /// executions it may signal, as ready-to-apply manifests. Read-only.
    Pending(pending::Args),
    /// Ask the operator to make a signal's next attempt now instead of after its backoff.
    Retry(retry::Args),
}

/// A kind of signal, as the command line names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    #[value(name = "workflowsignal", alias = "wfsig")]
    WorkflowSignal,
    #[value(name = "automationsignal", alias = "amsig")]
    AutomationSignal,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::WorkflowSignal => "WorkflowSignal",
            Kind::AutomationSignal => "AutomationSignal",
        }
    }
}

/// Runs the command line; the process's exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            2
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    let kube = KubeOptions {
        kubeconfig: cli.kubeconfig,
        context: cli.context,
    };
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Status(args) => status::run(&kube, args, &mut out).await,
        Command::CanI(args) => can_i::run(&kube, args, &mut out).await,
        Command::Pending(args) => pending::run(&kube, args, &mut out).await,
        Command::Retry(args) => retry::run(&kube, args, &mut out).await,
    }
}

/// How to reach the cluster.
pub struct KubeOptions {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
}

impl KubeOptions {
    /// A client, and the namespace of the kubeconfig's context (or `default`).
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let options = kube::config::KubeConfigOptions {
            context: self.context.clone(),
            ..Default::default()
        };
        let config = match &self.kubeconfig {
            Some(path) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?
            }
            None if self.context.is_some() => kube::Config::from_kubeconfig(&options).await?,
            None => kube::Config::infer().await?,
        };
        Ok(kube::Client::try_from(config)?)
    }
}

/// `namespace`, else the client's default (the kubeconfig context's namespace).
pub fn namespace_or_default(client: &kube::Client, namespace: Option<String>) -> String {
    namespace.unwrap_or_else(|| client.default_namespace().to_string())
}

/// The labels of namespace `name` as the cluster has them.
pub async fn namespace_labels(
    client: &kube::Client,
    name: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    let ns = Api::<Namespace>::all(client.clone())
        .get(name)
        .await
        .with_context(|| format!("reading namespace {name}"))?;
    Ok(ns.metadata.labels.unwrap_or_default())
}

/// Every SignalPolicy of the cluster.
pub async fn cluster_policies(
    client: &kube::Client,
) -> anyhow::Result<Vec<crate::api::SignalPolicy>> {
    let list = Api::<crate::api::SignalPolicy>::all(client.clone())
        .list(&Default::default())
        .await
        .context("listing SignalPolicies")?;
    Ok(list.items)
}

/// The AWS SDK's configuration from the default chain (environment, profile, IRSA, …), in
/// `region` when given.
pub async fn aws_config(region: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region.to_string()));
    }
    loader.load().await
}

/// The region a signal goes to, as far as the plugin can tell: its own, else `--region`,
/// else the SDK's (AWS_REGION, the profile).
pub async fn effective_region(spec_region: Option<&str>, flag: Option<&str>) -> Option<String> {
    if let Some(r) = spec_region.or(flag) {
        return Some(r.to_string());
    }
    aws_config(None).await.region().map(|r| r.to_string())
}
