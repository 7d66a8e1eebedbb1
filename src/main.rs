#![forbid(unsafe_code)]
//! `signalman`: the controller (`run`), the CRD YAML (`crds`) and the version (`version`).
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use signalman::aws::clients::{AwsClients, AwsSettings, RateLimit};
use signalman::controller::{self, Context, Settings};
use signalman::leader::{Elector, Leadership, LeaseConfig, Timing};
use signalman::server;

#[derive(Parser)]
#[command(
    name = "signalman",
    version,
    about = "Sends AWS SWF and SSM Automation signals declared as Kubernetes resources, exactly once"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller.
    Run(Box<RunArgs>),
    /// Print both CustomResourceDefinitions as YAML.
    Crds,
    /// Print the version.
    Version,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Kubeconfig file; in-cluster configuration when absent (KUBECONFIG also works).
    #[arg(long, env = "SIGNALMAN_KUBECONFIG")]
    kubeconfig: Option<std::path::PathBuf>,
    /// Default AWS region for signals without spec.region (else AWS_REGION / the SDK chain).
    #[arg(long, env = "SIGNALMAN_REGION")]
    region: Option<String>,
    /// The only regions signals may name, comma separated (e.g. `eu-west-1,eu-central-1`);
    /// empty: any region of an AWS partition. A signal naming another fails `InvalidSpec`.
    #[arg(long, env = "SIGNALMAN_ALLOWED_REGIONS", value_delimiter = ',')]
    allowed_regions: Vec<String>,
    /// Namespaces to watch, comma separated; all when empty.
    #[arg(
        long = "namespaces",
        env = "SIGNALMAN_NAMESPACES",
        value_delimiter = ','
    )]
    namespaces: Vec<String>,
    /// Watch only signals with these labels (e.g. `team=payments`), to split the work of one
    /// cluster between several operators.
    #[arg(long, env = "SIGNALMAN_LABEL_SELECTOR")]
    label_selector: Option<String>,
    /// Name the requester (`status.requestedBy`) in the Comment of Approve and Reject signals:
    /// `requested by alice via signalman: <their comment>`.
    #[arg(long, env = "SIGNALMAN_REQUESTER_IN_COMMENT", default_value_t = true, action = clap::ArgAction::Set)]
    requester_in_comment: bool,
    /// Where a signal's requester (`status.requestedBy`, the SourceIdentity of role sessions,
    /// the name in the Comment, and so `approved-by`) comes from: `binding=<NAME>`, the
    /// annotation signalman.dev/requested-by only where the ValidatingAdmissionPolicyBinding
    /// NAME provably guarded it (the chart's `<fullname>-requested-by`); `annotation`, the
    /// annotation as it is (another admission engine of the cluster stamps and guards it in
    /// every watched namespace); `ignore`, no requester.
    #[arg(long, env = "SIGNALMAN_REQUESTER_SOURCE", default_value = "ignore")]
    requester_source: signalman::requester::RequesterSource,
    /// Objects reconciled at once, per kind and namespace.
    #[arg(long, env = "SIGNALMAN_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// SWF calls per second (token refill); below the 30/s SignalWorkflowExecution quota.
    #[arg(long, env = "SIGNALMAN_SWF_RATE", default_value_t = 25.0)]
    swf_rate: f64,
    /// SWF token bucket size; below the 2000 bucket of the quota.
    #[arg(long, env = "SIGNALMAN_SWF_BURST", default_value_t = 1000)]
    swf_burst: u32,
    /// SSM calls per second; below the 3 TPS of SendAutomationSignal and GetAutomationExecution.
    #[arg(long, env = "SIGNALMAN_SSM_RATE", default_value_t = 2.5)]
    ssm_rate: f64,
    #[arg(long, env = "SIGNALMAN_SSM_BURST", default_value_t = 3)]
    ssm_burst: u32,
    /// This replica's name in claims and events (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a claim stays live; a send's hard timeout is well inside it.
    #[arg(long, env = "SIGNALMAN_CLAIM_TTL_SECONDS", default_value_t = 60)]
    claim_ttl_seconds: u64,
    /// Hard timeout of one send, in seconds.
    #[arg(long, env = "SIGNALMAN_SEND_TIMEOUT_SECONDS", default_value_t = 20)]
    send_timeout_seconds: u64,
    /// Milliseconds to wait after an attempt before reading AWS to verify it.
    #[arg(long, env = "SIGNALMAN_VERIFY_SETTLE_MS", default_value_t = 2000)]
    verify_settle_ms: u64,
    /// After a verification found a signal absent, read again this much later before sending
    /// it again (AWS shows a delivered signal only after a delay).
    #[arg(long, env = "SIGNALMAN_VERIFY_RECHECK_MS", default_value_t = 10_000)]
    verify_recheck_ms: u64,
    /// Namespace of the receipts of delivered signals (default: the operator's own namespace).
    #[arg(long, env = "SIGNALMAN_RECEIPT_NAMESPACE")]
    receipt_namespace: Option<String>,
    /// Days a receipt is kept after its delivery; a signal created again within them is not
    /// sent again. At least a year covers the longest SWF run.
    #[arg(long, env = "SIGNALMAN_RECEIPT_RETENTION_DAYS", default_value_t = 400)]
    receipt_retention_days: u64,
    /// Delete finished signals this many seconds after they finished, unless their spec says
    /// otherwise or a GitOps tool manages them (default: keep them).
    #[arg(long, env = "SIGNALMAN_TTL_SECONDS_AFTER_FINISHED")]
    ttl_seconds_after_finished: Option<u64>,
    /// Log filter (tracing syntax), e.g. info or signalman=debug.
    #[arg(long, env = "SIGNALMAN_LOG_LEVEL", default_value = "info")]
    log_level: String,
    #[arg(long, env = "SIGNALMAN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Elect one leader among the replicas with a Lease; only the leader claims and sends.
    /// `--leader-election=false` for a single replica.
    #[arg(long, env = "SIGNALMAN_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Namespace of the leader Lease: the pod's own (POD_NAMESPACE from the downward API); else
    /// the service account's namespace in a cluster, the kubeconfig context's, or `default`.
    #[arg(long, env = "POD_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// Name of the leader Lease; replicas sharing it elect one leader.
    #[arg(long, env = "SIGNALMAN_LEASE_NAME", default_value = "signalman")]
    lease_name: String,
    /// Seconds a lease lasts unrenewed; a standby takes over this long after the leader's
    /// last renewal, and the leader stops sending a third of it earlier.
    #[arg(long, env = "SIGNALMAN_LEASE_DURATION_SECONDS", default_value_t = signalman::leader::DEFAULT_LEASE_SECONDS)]
    lease_duration_seconds: u64,
    /// Seconds between the leader's renewals.
    #[arg(long, env = "SIGNALMAN_LEASE_RENEW_SECONDS", default_value_t = signalman::leader::DEFAULT_RENEW_SECONDS)]
    lease_renew_seconds: u64,
    /// Seconds between a standby's looks at the lease, and before a failed lease call is retried.
    #[arg(long, env = "SIGNALMAN_LEASE_RETRY_SECONDS", default_value_t = signalman::leader::DEFAULT_RETRY_SECONDS)]
    lease_retry_seconds: u64,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "SIGNALMAN_METRICS_BIND_ADDRESS",
        default_value = "0.0.0.0:8080"
    )]
    metrics_bind_address: std::net::SocketAddr,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds => {
            print!("{}", signalman::api::crd_yaml());
            Ok(())
        }
        Command::Version => {
            println!("signalman {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Run(args) => {
            init_logging(&args.log_level, args.log_format)?;
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(run(*args))
        }
    }
}

fn init_logging(level: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(level).context("--log-level")?;
    // Colour codes only for a person at a terminal: `kubectl logs` and log collectors get
    // plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    if args.send_timeout_seconds * 2 >= args.claim_ttl_seconds {
        anyhow::bail!(
            "--send-timeout-seconds must be well inside --claim-ttl-seconds (less than half)"
        );
    }
    let timing = Timing::from_seconds(
        args.lease_duration_seconds,
        args.lease_renew_seconds,
        args.lease_retry_seconds,
    );
    timing
        .validate()
        .map_err(|e| anyhow::anyhow!("leader election: {e}"))?;
    let listener = server::bind(args.metrics_bind_address)
        .await
        .with_context(|| {
            format!(
                "binding --metrics-bind-address {}",
                args.metrics_bind_address
            )
        })?;
    let client = kube_client(args.kubeconfig.as_deref()).await?;
    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let own_namespace = args
        .leader_election_namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| client.default_namespace().to_string());
    // A send (its hard timeout, two seconds past the SDK's) must fit in a claim with room for
    // the clocks of the replicas to differ, or no signal could ever be sent.
    let send_fits = args.send_timeout_seconds + 2 + signalman::delivery::CLOCK_SKEW.as_secs();
    if args.claim_ttl_seconds < send_fits + 1 {
        anyhow::bail!(
            "--claim-ttl-seconds ({}) must be at least --send-timeout-seconds + {} ({})",
            args.claim_ttl_seconds,
            3 + signalman::delivery::CLOCK_SKEW.as_secs(),
            send_fits + 1
        );
    }
    for region in args.region.iter().chain(&args.allowed_regions) {
        if !region.is_empty() && !signalman::api::is_known_region(region) {
            anyhow::bail!(
                "{region} (in --region or --allowed-regions) is not a region of any AWS partition"
            );
        }
    }
    if args.receipt_retention_days < 30 {
        anyhow::bail!("--receipt-retention-days must be at least 30");
    }
    let aws = AwsClients::from_env(
        args.region.clone(),
        AwsSettings {
            send_timeout: Duration::from_secs(args.send_timeout_seconds),
            swf_rate: RateLimit {
                per_second: args.swf_rate,
                burst: args.swf_burst,
            },
            ssm_rate: RateLimit {
                per_second: args.ssm_rate,
                burst: args.ssm_burst,
            },
            requester_in_comment: args.requester_in_comment,
            allowed_regions: args
                .allowed_regions
                .iter()
                .filter(|r| !r.is_empty())
                .cloned()
                .collect(),
        },
    )
    .await;
    let settings = Settings {
        identity: identity.clone(),
        holder: format!("{identity}#{:08x}", rand::random::<u32>()),
        claim_ttl: Duration::from_secs(args.claim_ttl_seconds),
        send_timeout: Duration::from_secs(args.send_timeout_seconds),
        verify_settle: Duration::from_millis(args.verify_settle_ms),
        verify_recheck: Duration::from_millis(args.verify_recheck_ms),
        namespaces: watched_namespaces(&args.namespaces),
        concurrency: args.concurrency,
        label_selector: args.label_selector.clone(),
        receipt_namespace: args
            .receipt_namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| own_namespace.clone()),
        receipt_retention: Duration::from_secs(args.receipt_retention_days * 86_400),
        default_ttl: args.ttl_seconds_after_finished.map(Duration::from_secs),
        requester_source: args.requester_source.clone(),
    };
    tracing::info!(%identity, holder = %settings.holder, pid = std::process::id(), namespaces = ?settings.namespaces, region = ?aws.default_region(), requester_source = ?settings.requester_source, "signalman starting");
    let leadership = Leadership::new(!args.leader_election);
    let ctx = Arc::new(Context::new(
        client.clone(),
        aws,
        settings,
        leadership.clone(),
    ));
    let (metrics, health) = (ctx.metrics.clone(), ctx.health.clone());
    metrics.set_leader(leadership.is_leader());

    let (server_stop, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::serve(
        listener,
        metrics.clone(),
        health.clone(),
        async {
            let _ = server_stopped.await;
        },
    ));
    // The election keeps renewing while in-flight sends finish, and releases the lease after.
    let (elector_stop, elector_stopped) = tokio::sync::oneshot::channel::<()>();
    let elector = if args.leader_election {
        let namespace = own_namespace.clone();
        let elector = Elector::new(
            client.clone(),
            LeaseConfig {
                namespace,
                name: args.lease_name.clone(),
                identity: identity.clone(),
                timing,
            },
            leadership.clone(),
            metrics.clone(),
            health.clone(),
        );
        tokio::spawn(elector.run(async {
            let _ = elector_stopped.await;
        }))
    } else {
        let health = health.clone();
        tokio::spawn(async move {
            loop {
                health.beat();
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        })
    };

    let stopping = health.clone();
    // Every in-flight send ends within its hard timeout; past that, nothing worth waiting for
    // is left (e.g. the first list never succeeded), and a claim left behind is verified by
    // the next leader. So shutdown never waits longer than this.
    let shutdown_deadline = Duration::from_secs(args.send_timeout_seconds + 15);
    controller::run(ctx, async move {
        shutdown_signal().await;
        stopping.set_stopping();
        tokio::spawn(async move {
            tokio::time::sleep(shutdown_deadline).await;
            tracing::warn!(
                ?shutdown_deadline,
                "shutdown did not finish in time; exiting"
            );
            std::process::exit(0);
        });
    })
    .await;
    tracing::info!("in-flight signals finished");
    if args.leader_election {
        let _ = elector_stop.send(());
        let _ = elector.await;
    } else {
        elector.abort();
    }
    let _ = server_stop.send(());
    let _ = server.await;
    tracing::info!("signalman stopped");
    Ok(())
}

async fn kube_client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).context("reading --kubeconfig")?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(config)?)
}

/// `--namespaces` without empty or repeated names: one controller per kind and namespace, so
/// no object is reconciled by two controllers of one process at once.
fn watched_namespaces(listed: &[String]) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    listed
        .iter()
        .filter(|n| !n.is_empty() && seen.insert(n.as_str()))
        .cloned()
        .collect()
}

/// The host name, which is the pod name in a cluster; a process id suffix keeps two local
/// processes apart.
fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "signalman".into());
    format!("{host}-{}", std::process::id())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown requested; finishing in-flight signals");
}

#[cfg(test)]
mod tests {
    use super::watched_namespaces;

    #[test]
    fn a_namespace_listed_twice_is_watched_once() {
        let listed: Vec<String> = ["a", "", "b", "a"].map(String::from).to_vec();
        assert_eq!(watched_namespaces(&listed), vec!["a", "b"]);
    }
}
