//! `aws-emulator`: the AWS side of signalman's local test environment, on one HTTP port.
//!
//! - **SSM Automation**, emulated natively (AWS JSON 1.1, `X-Amz-Target: AmazonSSM.*`):
//!   CreateDocument, StartAutomationExecution, GetAutomationExecution, SendAutomationSignal,
//!   DescribeAutomationStepExecutions, DescribeAutomationExecutions, StopAutomationExecution,
//!   with aws:approve, aws:pause, Interactive mode and the service model's error codes. Built-in documents:
//!   [`BUILTIN_DOCUMENTS`].
//! - **STS GetCallerIdentity** (Query protocol) for the caller's SigV4 access key.
//! - **SWF**, forwarded to moto (`swf_upstream`), with required members checked and
//!   GetWorkflowExecutionHistory paged as SWF pages it (moto returns one page).
//! - **Faults on demand** for both services ([`FaultConfig`]) and **lag mode**
//!   ([`LagConfig`]: writes answered at once, visible to readers later), switched at run
//!   time through [`EmulatorHandle`] or the control API under `/_emu/`, and [`Counters`] of
//!   what arrived and what was applied.
//!
//! See the crate's README for the control API and every known difference from AWS.
mod control;
mod error;
pub mod faults;
mod identity;
pub mod lag;
mod response;
mod server;
mod ssm;
mod sts;
mod sts_roles;
mod swf;
mod trust_conditions;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context as _;

pub use faults::{
    Counters, FaultConfig, FaultKind, FaultRule, Service, ServiceCounters, ServiceFaults,
    SsmSignal, SwfSignal, ThrottleRule,
};
pub use identity::default_arn;
pub use lag::{LagConfig, LagRule};
pub use ssm::BUILTIN_DOCUMENTS;
pub use sts_roles::{
    ContainerCredentials, OidcProvider, RoleTrust, Session, StsConfig, WebIdentityTrust,
    CONTAINER_CREDENTIALS_PATH, DEFAULT_CLUSTER_NAME, POD_IDENTITY_AUDIENCE, STS_AUDIENCE,
};

/// Where and as whom the emulator runs.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Base URL of moto's server (e.g. `http://127.0.0.1:5000`); SWF calls answer 500
    /// `InternalFailure` without it.
    pub swf_upstream: Option<String>,
    /// The account of every ARN the emulator makes up.
    pub account_id: String,
    pub region: String,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            swf_upstream: None,
            account_id: "123456789012".to_string(),
            region: "us-east-1".to_string(),
        }
    }
}

/// Locks a mutex, ignoring poisoning (a panicking request must not wedge the emulator).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Seconds since the epoch, to the millisecond, as AWS JSON timestamps are written.
pub(crate) fn now() -> f64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_millis() as f64) / 1000.0
}

pub(crate) struct Shared {
    pub account_id: String,
    pub region: String,
    pub swf_upstream: Option<String>,
    pub faults: Mutex<faults::FaultEngine>,
    pub lag: Mutex<lag::LagEngine>,
    /// SWF signals lag mode keeps out of histories for now.
    pub swf_hidden: Mutex<swf::HiddenSignals>,
    pub counters: Mutex<Counters>,
    pub identities: Mutex<BTreeMap<String, String>>,
    pub ssm: Mutex<ssm::SsmState>,
    pub http: swf::UpstreamClient,
    pub sts_roles: sts_roles::Roles,
}

impl Shared {
    pub fn principal_arn(&self, access_key: &str) -> String {
        if let Some(arn) = self.sts_roles.principal(access_key) {
            return arn;
        }
        lock(&self.identities)
            .get(access_key)
            .cloned()
            .unwrap_or_else(|| default_arn(&self.account_id, access_key))
    }
}

/// A cloneable handle on a running emulator's state: faults, counters, identities.
#[derive(Clone)]
pub struct EmulatorHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for EmulatorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorHandle")
            .field("account_id", &self.shared.account_id)
            .finish_non_exhaustive()
    }
}

impl EmulatorHandle {
    /// Replaces the whole fault configuration (buckets start full, counts afresh).
    pub fn set_faults(&self, config: FaultConfig) -> anyhow::Result<()> {
        config.validate().map_err(anyhow::Error::msg)?;
        lock(&self.shared.faults).set(config);
        Ok(())
    }

    /// The fault configuration in force, with the counts that are left.
    pub fn faults(&self) -> FaultConfig {
        lock(&self.shared.faults).config()
    }

    /// Turns every fault off.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).set(FaultConfig::none());
    }

    /// What arrived and what was applied since the start or the last [`reset`](Self::reset).
    pub fn counters(&self) -> Counters {
        lock(&self.shared.counters).clone()
    }

    /// Lag mode: from now on, the writes `config` names are answered at once but readers
    /// see their effect only after the delay (changes already hidden stay hidden until due).
    pub fn set_lag(&self, config: LagConfig) -> anyhow::Result<()> {
        config.validate().map_err(anyhow::Error::msg)?;
        lock(&self.shared.lag).set(config);
        Ok(())
    }

    /// The lag configuration in force.
    pub fn lag(&self) -> LagConfig {
        lock(&self.shared.lag).config()
    }

    /// No more lag for new writes.
    pub fn clear_lag(&self) {
        lock(&self.shared.lag).set(LagConfig::none());
    }

    /// Clears counters and faults (documents, executions, identities and lag stay: lag is
    /// a property of the environment under test, not of one scenario).
    pub fn reset(&self) {
        self.clear_faults();
        *lock(&self.shared.counters) = Counters::default();
    }

    /// Replaces the access key → ARN map. Unmapped keys are the IAM user of the key's name.
    pub fn set_identities(&self, identities: BTreeMap<String, String>) {
        *lock(&self.shared.identities) = identities;
    }

    /// Maps one access key to an ARN (e.g. an assumed-role session ARN).
    pub fn set_identity(&self, access_key: impl Into<String>, arn: impl Into<String>) {
        lock(&self.shared.identities).insert(access_key.into(), arn.into());
    }

    pub fn identities(&self) -> BTreeMap<String, String> {
        lock(&self.shared.identities).clone()
    }

    /// The ARN requests signed with `access_key` act as.
    pub fn principal_arn(&self, access_key: &str) -> String {
        self.shared.principal_arn(access_key)
    }

    /// GetAutomationExecution's `AutomationExecution` for `id`, without going through HTTP
    /// (no faults, not counted).
    pub fn automation_execution(&self, id: &str) -> Option<serde_json::Value> {
        lock(&self.shared.ssm).execution_json(id)
    }

    /// Replaces STS's configuration: OIDC providers, role trust, session lengths, refusals,
    /// container credentials (issued sessions stay valid until they expire).
    pub fn set_sts(&self, config: StsConfig) {
        self.shared.sts_roles.set_config(config);
    }

    pub fn sts(&self) -> StsConfig {
        self.shared.sts_roles.config()
    }

    /// The session of a temporary access key this emulator issued (assumed-role ARN,
    /// SourceIdentity, tags, expiry).
    pub fn sts_session(&self, access_key: &str) -> Option<Session> {
        self.shared.sts_roles.session(access_key)
    }

    /// Every session issued so far.
    pub fn sts_sessions(&self) -> Vec<Session> {
        self.shared.sts_roles.sessions()
    }

    pub fn account_id(&self) -> &str {
        &self.shared.account_id
    }

    pub fn region(&self) -> &str {
        &self.shared.region
    }
}

/// A started emulator. Dropping it leaves the server running for the life of the tokio
/// runtime; [`shutdown`](Self::shutdown) stops it.
pub struct RunningEmulator {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub addr: SocketAddr,
    pub handle: EmulatorHandle,
    task: tokio::task::JoinHandle<()>,
}

impl RunningEmulator {
    /// Stops accepting and closes every open connection.
    pub fn shutdown(self) {
        self.task.abort();
    }
}

/// Starts the emulator on the caller's tokio runtime and returns once it listens.
pub async fn start(config: EmulatorConfig) -> anyhow::Result<RunningEmulator> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared {
        account_id: config.account_id,
        region: config.region,
        swf_upstream: config
            .swf_upstream
            .map(|u| u.trim_end_matches('/').to_string()),
        faults: Mutex::new(faults::FaultEngine::new(FaultConfig::none())),
        lag: Mutex::new(lag::LagEngine::new(LagConfig::none())),
        swf_hidden: Mutex::new(swf::HiddenSignals::default()),
        counters: Mutex::new(Counters::default()),
        identities: Mutex::new(BTreeMap::new()),
        ssm: Mutex::new(ssm::SsmState::default()),
        http: swf::client(),
        sts_roles: sts_roles::Roles::default(),
    });
    let task = tokio::spawn(server::serve(listener, shared.clone()));
    let host = match addr.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    Ok(RunningEmulator {
        endpoint: format!("http://{host}:{}", addr.port()),
        addr,
        handle: EmulatorHandle { shared },
        task,
    })
}

/// An emulator on its own thread and runtime, for code without a tokio runtime.
/// Dropping it stops the emulator.
pub struct BackgroundEmulator {
    pub endpoint: String,
    pub handle: EmulatorHandle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for BackgroundEmulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts the emulator on a thread of its own (blocking until it listens).
pub fn start_background(config: EmulatorConfig) -> anyhow::Result<BackgroundEmulator> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("aws-emu".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow::Error::from(e)));
                    return;
                }
            };
            runtime.block_on(async move {
                match start(config).await {
                    Ok(emu) => {
                        let _ = ready_tx.send(Ok((emu.endpoint.clone(), emu.handle.clone())));
                        let _ = stop_rx.await;
                        emu.shutdown();
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            });
        })?;
    let (endpoint, handle) = ready_rx
        .recv()
        .context("the emulator thread ended early")??;
    Ok(BackgroundEmulator {
        endpoint,
        handle,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}
