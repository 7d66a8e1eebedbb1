//! What the operator's integration tests share: the environment (started once for this test
//! binary), the CRDs (installed once), operator processes, and AWS-side set-up and evidence.
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_sdk_swf::types::{EventType, TaskList, WorkflowExecution, WorkflowType};
use k8s_openapi::api::core::v1::Event as CoreEvent;
use kube::api::{Api, ListParams, PostParams};
use kube::Client;
use serde::de::DeserializeOwned;
use signalman::api::{Phase, SignalStatus};
use signalman_testenv::{Env, OPERATOR_ACCESS_KEY};

/// The environment, with the CRDs installed and established.
pub fn env() -> &'static Env {
    static CRDS: OnceLock<()> = OnceLock::new();
    let env = signalman_testenv::shared();
    CRDS.get_or_init(|| {
        if let Err(e) = env.install_crds() {
            panic!("{e:#}");
        }
        let shared = env.shared_emulator();
        if let Err(e) =
            on_own_runtime(async move { env.trust_service_accounts(&shared.handle).await })
        {
            panic!("{e:#}");
        }
    });
    env
}

/// Runs `work` to completion on a runtime of its own, on a thread of its own (callable from
/// synchronous code inside a test's runtime).
fn on_own_runtime<T: Send + 'static>(
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(work)
    })
    .join()
    .expect("the helper thread")
}

/// Under the IRSA profile, a projected-token file for the operator's ServiceAccount in `ns`.
fn irsa_token_file(env: &'static Env, ns: &str) -> PathBuf {
    let path = env.state_dir.join(format!("irsa-token-{ns}"));
    let ns = ns.to_string();
    let token = on_own_runtime(async move {
        env.service_account_token(&ns, "signalman", "sts.amazonaws.com", 3600)
            .await
    })
    .expect("a ServiceAccount token");
    std::fs::write(&path, token).expect("writing the token");
    path
}

/// One test's world: a namespace, an admin client, and the operator processes it started.
pub struct World {
    pub env: &'static Env,
    pub client: Client,
    pub ns: String,
}

impl World {
    pub async fn new(prefix: &str) -> World {
        let env = env();
        let client = env.client().await;
        let ns = env.namespace(&client, prefix).await;
        World { env, client, ns }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Starts an operator process that watches this test's namespace.
    pub fn operator(&self, identity: &str, extra: &[(&str, &str)]) -> Operator {
        Operator::start(self.env, &self.ns, identity, extra, &[])
    }

    /// An operator without the environment variables named in `remove` (e.g. the static
    /// access key, to run on web identity or container credentials alone).
    pub fn operator_without(
        &self,
        identity: &str,
        extra: &[(&str, &str)],
        remove: &[&str],
    ) -> Operator {
        Operator::start(self.env, &self.ns, identity, extra, remove)
    }

    pub async fn create<K>(&self, obj: &K) -> K
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        self.api::<K>()
            .create(&PostParams::default(), obj)
            .await
            .expect("creating the object")
    }

    /// Waits until the API server's admission policies admit `obj` (a server-side dry run);
    /// returns how long that took. Right after a chart installs its CRDs and the policies that
    /// take a SignalPolicy as parameter, the API server refuses writes for a few seconds with
    /// "failed to configure policy: failed to find resource referenced by paramKind" (the chart
    /// README says so), and the policies come into force one by one (a signal may meet the
    /// requested-by check before the policy that stamps it). Panics after 60 s.
    pub async fn wait_admission_ready<K>(&self, obj: &K) -> Duration
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let began = Instant::now();
        let dry_run = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        loop {
            match self.api::<K>().create(&dry_run, obj).await {
                Ok(_) => return began.elapsed(),
                Err(e) => {
                    assert!(
                        began.elapsed() < Duration::from_secs(60),
                        "not admitted 60 s after the chart's install: {e:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }

    /// Waits until the object's status reaches a terminal phase and returns it.
    pub async fn wait_done<K>(&self, name: &str, timeout: Duration) -> SignalStatus
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug
            + HasStatus,
    {
        wait_done_in::<K>(&self.client, &self.ns, name, timeout).await
    }

    /// Waits until the named object's status is in `phase`.
    pub async fn wait_phase<K>(&self, name: &str, phase: signalman::api::Phase)
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug
            + HasStatus,
    {
        let api = self.api::<K>();
        let deadline = Instant::now() + Duration::from_secs(45);
        loop {
            let object = api.get(name).await.expect("get");
            let status = HasStatus::status(&object).cloned();
            if status.as_ref().and_then(|s| s.phase) == Some(phase) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} never {phase:?}: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Reasons of the Events recorded on the named object.
    pub async fn event_reasons(&self, name: &str) -> Vec<String> {
        self.events(name)
            .await
            .into_iter()
            .map(|(r, _)| r)
            .collect()
    }

    /// The notes of the named object's Events with `reason`.
    pub async fn event_notes(&self, name: &str, reason: &str) -> Vec<String> {
        self.events(name)
            .await
            .into_iter()
            .filter(|(r, _)| r == reason)
            .map(|(_, note)| note)
            .collect()
    }

    /// (reason, note) of every Event recorded on the named object.
    async fn events(&self, name: &str) -> Vec<(String, String)> {
        let events: Api<CoreEvent> = Api::namespaced(self.client.clone(), &self.ns);
        let list = events
            .list(&ListParams::default())
            .await
            .expect("listing events");
        list.items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(name))
            .filter_map(|e| Some((e.reason?, e.message.unwrap_or_default())))
            .collect()
    }
}

/// Waits until the named object in `namespace` reaches a terminal phase and returns its status.
pub async fn wait_done_in<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> SignalStatus
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + HasStatus,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let deadline = Instant::now() + timeout;
    loop {
        let obj = api.get(name).await.expect("reading the object");
        if let Some(status) = obj.status() {
            if matches!(status.phase, Some(Phase::Succeeded | Phase::Failed)) {
                return status.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{name} not done after {timeout:?}: {:?}",
            obj.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Access to the status of both kinds in generic helpers.
pub trait HasStatus {
    fn status(&self) -> Option<&SignalStatus>;
}
impl HasStatus for signalman::api::WorkflowSignal {
    fn status(&self) -> Option<&SignalStatus> {
        self.status.as_ref()
    }
}
impl HasStatus for signalman::api::AutomationSignal {
    fn status(&self) -> Option<&SignalStatus> {
        self.status.as_ref()
    }
}

/// The condition `type_`'s status ("True"/"False"), if present.
pub fn condition(status: &SignalStatus, type_: &str) -> Option<String> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.clone())
}

/// An operator process (the real binary), killed when dropped.
pub struct Operator {
    child: Option<Child>,
    ns: String,
    identity: String,
    extra: Vec<(String, String)>,
    remove: Vec<String>,
    pub log: PathBuf,
    env: &'static Env,
}

impl Operator {
    fn start(
        env: &'static Env,
        ns: &str,
        identity: &str,
        extra: &[(&str, &str)],
        remove: &[&str],
    ) -> Operator {
        let mut op = Operator {
            child: None,
            ns: ns.to_string(),
            identity: identity.to_string(),
            extra: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            remove: remove.iter().map(|k| k.to_string()).collect(),
            log: env.state_dir.join(format!("operator-{ns}-{identity}.log")),
            env,
        };
        op.spawn();
        op
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("operator log");
        // SIGNALMAN_TEST_OPERATOR_BIN runs the tests against another build of the operator
        // (an earlier commit's, to see a regression test fail before its fix).
        let bin = std::env::var_os("SIGNALMAN_TEST_OPERATOR_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_signalman")));
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            .env("SIGNALMAN_KUBECONFIG", &self.env.kubeconfig)
            .env("SIGNALMAN_NAMESPACES", &self.ns)
            .env("POD_NAME", &self.identity)
            // Leader election per test: the Lease lives in the test's namespace, named after it.
            .env("POD_NAMESPACE", &self.ns)
            .env("SIGNALMAN_LEASE_NAME", &self.ns)
            // Many operators run at once: any free port (tests that scrape pass their own).
            .env("SIGNALMAN_METRICS_BIND_ADDRESS", "127.0.0.1:0")
            .env("SIGNALMAN_VERIFY_SETTLE_MS", "300")
            // A restarted operator waits for the claims of its previous process to expire:
            // short claims keep the kill tests quick (a send still fits well inside one).
            .env("SIGNALMAN_CLAIM_TTL_SECONDS", "20")
            .env("SIGNALMAN_SEND_TIMEOUT_SECONDS", "5")
            // A second read after "absent" before resending, kept short in tests (the lag
            // profile sets it above the emulator's lag).
            .env(
                "SIGNALMAN_VERIFY_RECHECK_MS",
                std::env::var("SIGNALMAN_TEST_VERIFY_RECHECK_MS").unwrap_or_else(|_| "500".into()),
            )
            .env("SIGNALMAN_LOG_LEVEL", "info,signalman=debug")
            .env_remove("AWS_PROFILE")
            .envs(self.env.aws_env(OPERATOR_ACCESS_KEY))
            .envs(self.extra.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        for k in &self.remove {
            cmd.env_remove(k);
        }
        // The IRSA profile, for operators that did not set up their credentials themselves.
        if signalman_testenv::irsa_profile() && self.remove.is_empty() {
            for k in [
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN",
            ] {
                cmd.env_remove(k);
            }
            cmd.env("AWS_ROLE_ARN", signalman_testenv::IRSA_ROLE).env(
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                irsa_token_file(self.env, &self.ns),
            );
        }
        self.child = Some(cmd.spawn().expect("starting the operator"));
    }

    /// The operator's peak resident memory so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    }

    /// SIGKILL, as a crash or an OOM kill would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit by itself (e.g. at a failpoint), up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if child.try_wait().ok().flatten().is_some() {
                    self.child = None;
                    return true;
                }
            } else {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Starts the same operator again (same identity, same settings), with `env` changes.
    pub fn restart_with(&mut self, set: &[(&str, &str)], unset: &[&str]) {
        self.kill();
        self.extra
            .retain(|(k, _)| !unset.contains(&k.as_str()) && !set.iter().any(|(s, _)| s == k));
        self.extra
            .extend(set.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.spawn();
    }

    pub fn restart(&mut self) {
        self.restart_with(&[], &[]);
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An SWF domain with a registered workflow type, made through moto directly (no faults).
pub struct SwfWorld {
    pub client: aws_sdk_swf::Client,
    pub domain: String,
}

impl SwfWorld {
    pub async fn new(env: &Env, domain: &str) -> SwfWorld {
        let client = env.swf_client(false);
        client
            .register_domain()
            .name(domain)
            .workflow_execution_retention_period_in_days("1")
            .send()
            .await
            .expect("RegisterDomain");
        client
            .register_workflow_type()
            .domain(domain)
            .name("change")
            .version("1")
            .default_task_list(TaskList::builder().name("main").build().expect("task list"))
            .default_child_policy(aws_sdk_swf::types::ChildPolicy::Terminate)
            .default_execution_start_to_close_timeout("3600")
            .default_task_start_to_close_timeout("300")
            .send()
            .await
            .expect("RegisterWorkflowType");
        SwfWorld {
            client,
            domain: domain.to_string(),
        }
    }

    /// Starts a workflow execution and returns its runId.
    pub async fn start(&self, workflow_id: &str) -> String {
        let out = self
            .client
            .start_workflow_execution()
            .domain(&self.domain)
            .workflow_id(workflow_id)
            .workflow_type(
                WorkflowType::builder()
                    .name("change")
                    .version("1")
                    .build()
                    .expect("type"),
            )
            .send()
            .await
            .expect("StartWorkflowExecution");
        out.run_id().expect("runId").to_string()
    }

    /// The (signalName, input) of every WorkflowExecutionSignaled event of the run.
    pub async fn signals(&self, workflow_id: &str, run_id: &str) -> Vec<(String, Option<String>)> {
        let mut found = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .get_workflow_execution_history()
                .domain(&self.domain)
                .execution(
                    WorkflowExecution::builder()
                        .workflow_id(workflow_id)
                        .run_id(run_id)
                        .build()
                        .expect("execution"),
                )
                .set_next_page_token(token)
                .send()
                .await
                .expect("GetWorkflowExecutionHistory");
            for e in page.events() {
                if e.event_type() == &EventType::WorkflowExecutionSignaled {
                    let a = e
                        .workflow_execution_signaled_event_attributes()
                        .expect("attributes");
                    found.push((a.signal_name().to_string(), a.input().map(str::to_string)));
                }
            }
            match page.next_page_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return found,
            }
        }
    }
}

impl SwfWorld {
    /// Asserts the run's history holds exactly one signal with each of `inputs`, and no other.
    pub async fn assert_each_input_once(
        &self,
        workflow_id: &str,
        run_id: &str,
        inputs: impl Iterator<Item = String>,
    ) {
        let mut seen: std::collections::BTreeMap<String, usize> = Default::default();
        for (_, input) in self.signals(workflow_id, run_id).await {
            *seen.entry(input.unwrap_or_default()).or_default() += 1;
        }
        let expected: std::collections::BTreeMap<String, usize> = inputs.map(|i| (i, 1)).collect();
        assert_eq!(seen, expected, "{workflow_id}: every signal exactly once");
    }
}

/// The replica a claim's holder names (`<identity>#<process>`).
pub fn holder_identity(holder: &str) -> &str {
    holder.split('#').next().unwrap_or(holder)
}

/// A random suffix for names that must not collide between tests.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

/// A WorkflowSignal named `name` that sends signal `approve` with `input` to `workflow_id`.
pub fn wf_signal(
    name: &str,
    domain: &str,
    workflow_id: &str,
    input: Option<&str>,
) -> signalman::api::WorkflowSignal {
    signalman::api::WorkflowSignal::new(
        name,
        signalman::api::WorkflowSignalSpec {
            domain: domain.into(),
            workflow_id: workflow_id.into(),
            run_id: None,
            signal_name: "approve".into(),
            input: input.map(Into::into),
            region: None,
            retry: Some(fast_retry()),
            not_after: None,
            allow_duplicate: None,
            ttl_seconds_after_finished: None,
        },
    )
}

/// Short backoffs so retries happen within a test's time.
pub fn fast_retry() -> signalman::api::RetryPolicy {
    signalman::api::RetryPolicy {
        max_attempts: Some(10),
        initial_backoff_seconds: Some(1),
        max_backoff_seconds: Some(2),
        retry_not_found: None,
        max_duration_seconds: None,
    }
}

/// The reason of condition `type_`.
pub fn condition_reason(status: &SignalStatus, type_: &str) -> Option<String> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.reason.clone())
}

/// The reason of the Ready condition.
pub fn ready_reason(status: &SignalStatus) -> Option<String> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.reason.clone())
}

// --- Schema swaps (schema.rs, malformed.rs) ---

/// Guards the WorkflowSignal CRD's schema, which every test shares: a test that swaps it for a
/// permissive one for a moment (to write an object around it) holds this for writing; a test
/// that needs the API server to enforce the real schema holds it for reading.
pub static CRD_SCHEMA: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

impl World {
    /// Waits until the named object has an Event with `reason` and returns every reason seen.
    /// The operator posts an Event after writing the status, so a test that has just seen the
    /// status change may be a moment ahead of it.
    pub async fn wait_event(&self, name: &str, reason: &str, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let reasons = self.event_reasons(name).await;
            if reasons.iter().any(|r| r == reason) {
                return reasons;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: no {reason} event after {timeout:?}: {reasons:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

// --- Impersonation (chart.rs) ---

/// A copy of the environment's kubeconfig whose user impersonates `user` (kube-rs honours
/// `as` in a kubeconfig's user entry, as kubectl does), so that an operator process started
/// with `SIGNALMAN_KUBECONFIG` pointing at it has exactly the RBAC of, for example, the chart's
/// ServiceAccount (`system:serviceaccount:NS:NAME`; the API server adds the service-account
/// groups itself).
pub fn impersonating_kubeconfig(env: &Env, user: &str) -> PathBuf {
    let text = std::fs::read_to_string(&env.kubeconfig).expect("reading the kubeconfig");
    let mut config: serde_norway::Value =
        serde_norway::from_str(&text).expect("parsing the kubeconfig");
    let users = config["users"]
        .as_sequence_mut()
        .expect("users in the kubeconfig");
    for entry in users {
        entry["user"]["as"] = serde_norway::Value::String(user.to_string());
    }
    let file: String = user
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let path = env.state_dir.join(format!(
        "kubeconfig-as-{file}-{:08x}",
        rand::random::<u32>()
    ));
    std::fs::write(
        &path,
        serde_norway::to_string(&config).expect("kubeconfig YAML"),
    )
    .expect("writing the kubeconfig");
    path
}

/// An AutomationSignal named `name` of `signal_type` for execution `id`, with `payload`.
pub fn am_signal(
    name: &str,
    id: &str,
    signal_type: signalman::api::SignalType,
    payload: &[(&str, &str)],
) -> signalman::api::AutomationSignal {
    let payload: std::collections::BTreeMap<String, Vec<String>> = payload
        .iter()
        .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
        .collect();
    signalman::api::AutomationSignal::new(
        name,
        signalman::api::AutomationSignalSpec {
            automation_execution_id: id.into(),
            signal_type,
            payload: (!payload.is_empty()).then_some(payload),
            region: None,
            retry: Some(fast_retry()),
            not_after: None,
            allow_duplicate: None,
            ttl_seconds_after_finished: None,
        },
    )
}

/// Starts an Automation execution of `document` with `params` and returns its id.
pub async fn start_automation(
    ssm: &aws_sdk_ssm::Client,
    document: &str,
    params: &[(&str, &[&str])],
) -> String {
    let mut req = ssm
        .start_automation_execution()
        .document_name(document)
        .mode(aws_sdk_ssm::types::ExecutionMode::Auto);
    for (k, v) in params {
        req = req.parameters(*k, v.iter().map(|s| s.to_string()).collect());
    }
    req.send()
        .await
        .expect("StartAutomationExecution")
        .automation_execution_id()
        .expect("an execution id")
        .to_string()
}

/// Deletes the object and waits until it is gone.
pub async fn delete_and_wait<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    api.delete(name, &kube::api::DeleteParams::default())
        .await
        .expect("deleting");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while api.get_opt(name).await.expect("reading").is_some() {
        assert!(std::time::Instant::now() < deadline, "{name} not gone");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Removes every receipt of the namespace, the book included: a cluster rebuilt from git.
pub async fn forget_receipts(world: &World) {
    let receipts: Api<signalman::api::SignalReceipt> = world.api();
    let all = receipts
        .list(&ListParams::default())
        .await
        .expect("receipts");
    assert!(!all.items.is_empty(), "the deliveries left receipts");
    for r in all.items {
        delete_and_wait(&receipts, r.metadata.name.as_deref().unwrap()).await;
    }
}

// --- The kubectl plugin (plugin.rs) ---

/// `kubectl-signalman` (the plugin binary) with the environment's kubeconfig and AWS pointed at
/// `aws_endpoint` as the operator's access key, as an operator process gets them.
pub fn plugin(env: &Env, aws_endpoint: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubectl-signalman"));
    cmd.env("KUBECONFIG", &env.kubeconfig)
        .env_remove("AWS_PROFILE")
        .envs(signalman_testenv::aws_env_at(
            aws_endpoint,
            OPERATOR_ACCESS_KEY,
        ))
        .stdin(Stdio::null());
    cmd
}

impl World {
    /// A namespace without the test environment's allow-everything policy (nothing in it is
    /// allowed until a test adds a SignalPolicy).
    pub async fn bare_namespace(&self, prefix: &str) -> String {
        let name = unique(prefix);
        let namespace = k8s_openapi::api::core::v1::Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<k8s_openapi::api::core::v1::Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .expect("creating a namespace");
        name
    }

    /// A SignalPolicy that selects `namespace` alone (by its name label), in every region, with
    /// `spec`'s kinds (e.g. `{"swf": {"domains": [...], "workflowIds": ["*"]}}`).
    pub async fn policy_for(&self, namespace: &str, mut spec: serde_json::Value) {
        spec["namespaceSelector"] =
            serde_json::json!({"matchLabels": {"kubernetes.io/metadata.name": namespace}});
        spec["regions"] = serde_json::json!(["*"]);
        let obj: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "signalman.dev/v1alpha1",
            "kind": "SignalPolicy",
            "metadata": {"name": format!("test-{namespace}")},
            "spec": spec,
        }))
        .expect("a SignalPolicy");
        let ar = kube::api::ApiResource::erase::<signalman::api::SignalPolicy>(&());
        Api::<kube::api::DynamicObject>::all_with(self.client.clone(), &ar)
            .create(&PostParams::default(), &obj)
            .await
            .expect("creating the SignalPolicy");
    }
}
