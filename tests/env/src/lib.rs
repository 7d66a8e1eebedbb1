//! The local environment every integration test, the demo and the benchmarks run on:
//! a real kube-apiserver (with embedded etcd, built from the Kubernetes Go modules),
//! moto's SWF server behind the project's AWS emulator, and the emulator's own SSM
//! Automation service, all on 127.0.0.1.
//!
//! [`shared`] starts it once per process (a test binary) and hands out what a test needs:
//! a kube client (admin or impersonating), a fresh namespace, AWS SDK clients pointed at
//! the emulator, and the emulator's fault and counter handle. The child processes are tied
//! to the thread that owns them with `PR_SET_PDEATHSIG`, and that thread lives as long as
//! the process, so they die with the test binary however it ends (even SIGKILL).
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

mod node;

pub use aws_emulator;
pub use aws_emulator::EmulatorHandle;
pub use node::{node_built, Node, GATEWAY};

/// The admin token the API server accepts (user `admin`, group `system:masters`).
pub const ADMIN_TOKEN: &str = "signalman-admin-token";
/// The emulated AWS account and region.
pub const ACCOUNT_ID: &str = "123456789012";
pub const REGION: &str = "us-east-1";
/// The access key the operator signs with; the emulator maps it to the IAM user of the same
/// name, which is what SSM approver lists name.
pub const OPERATOR_ACCESS_KEY: &str = "signalman-operator";
/// Any secret works: the emulators read the principal from the access key, not the signature.
pub const SECRET_KEY: &str = "not-a-secret";
/// The API server's `--service-account-issuer` (tests/env/apiserver/main.go): the `iss` of its
/// ServiceAccount tokens.
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// How long a start-up step may take before the environment gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// The running environment. Cheap to share: everything in it is a path, a URL or a handle.
pub struct Env {
    pub kubeconfig: PathBuf,
    pub api_server: String,
    /// The emulator's URL: SSM and STS natively, SWF proxied to moto, with faults on both.
    pub aws_endpoint: String,
    /// moto itself, bypassing the emulator's faults (for test set-up that must not be faulted).
    pub moto_endpoint: String,
    pub emulator: EmulatorHandle,
    pub state_dir: PathBuf,
    pub bin_dir: PathBuf,
    /// The runtime the shared emulator runs on; private emulators start there too, so they
    /// outlive the runtime of the test that asked for them.
    runtime: tokio::runtime::Handle,
}

/// An emulator of one test's own: its counters and faults see only that test's traffic.
#[derive(Clone, Debug)]
pub struct Emulator {
    pub endpoint: String,
    pub handle: EmulatorHandle,
}

static SHARED: OnceLock<Env> = OnceLock::new();

/// The environment of this process, started on first use.
pub fn shared() -> &'static Env {
    SHARED.get_or_init(|| match Env::start() {
        Ok(env) => env,
        Err(e) => panic!("could not start the local environment: {e:#}"),
    })
}

/// The repository root (this crate lives in `tests/env`).
pub fn repo_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.join("../..")
        .canonicalize()
        .unwrap_or_else(|_| here.join("../.."))
}

/// Where `tests/env/setup.sh` puts the built API server, kubectl, helm and moto's venv.
pub fn env_home() -> PathBuf {
    std::env::var_os("SIGNALMAN_ENV_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".env-cache"))
}

impl Env {
    /// Starts everything and returns once all of it answers. Blocking; call outside async code
    /// or through [`shared`].
    pub fn start() -> anyhow::Result<Env> {
        Env::start_with(false)
    }

    /// [`Env::start`] for a [`Node`]: the API server runs the ServiceAccount admission plugin,
    /// so that pods get their token volume (the node's controller-manager creates every
    /// namespace's default ServiceAccount, without which that plugin refuses pods).
    pub fn start_for_node() -> anyhow::Result<Env> {
        Env::start_with(true)
    }

    fn start_with(service_account_admission: bool) -> anyhow::Result<Env> {
        let home = env_home();
        let bin_dir = home.join("bin");
        ensure_built(&home)?;
        let state_dir = fresh_state_dir(&home)?;

        let (tx, rx) = mpsc::channel();
        let owner_state_dir = state_dir.clone();
        let owner_bin_dir = bin_dir.clone();
        let owner_home = home.clone();
        std::thread::Builder::new()
            .name("testenv-owner".into())
            .spawn(move || {
                owner_thread(
                    owner_home,
                    owner_bin_dir,
                    owner_state_dir,
                    service_account_admission,
                    tx,
                );
            })
            .context("spawning the environment's owner thread")?;
        let started = rx
            .recv_timeout(READY_TIMEOUT * 3)
            .map_err(|_| anyhow!("the environment did not start in time"))??;
        Ok(Env {
            kubeconfig: state_dir.join("kubeconfig"),
            api_server: started.api_server,
            aws_endpoint: started.aws_endpoint,
            moto_endpoint: started.moto_endpoint,
            emulator: started.emulator,
            state_dir,
            bin_dir,
            runtime: started.runtime,
        })
    }

    /// Starts an emulator for one test (SWF still goes to the shared moto), so that the test
    /// can switch faults and read counters without seeing or disturbing other tests.
    pub async fn private_emulator(&self) -> Emulator {
        let config = aws_emulator::EmulatorConfig {
            listen: "127.0.0.1:0".parse().expect("a socket address"),
            swf_upstream: Some(self.moto_endpoint.clone()),
            account_id: ACCOUNT_ID.to_string(),
            region: REGION.to_string(),
        };
        let running = self
            .runtime
            .spawn(aws_emulator::start(config))
            .await
            .expect("the emulator's start task")
            .expect("starting a private emulator");
        apply_lag_profile(&running.handle).expect("SIGNALMAN_EMU_LAG");
        self.trust_service_accounts(&running.handle)
            .await
            .expect("SIGNALMAN_TEST_IRSA");
        Emulator {
            endpoint: running.endpoint.clone(),
            handle: running.handle.clone(),
        }
    }

    /// Under the IRSA profile, makes `handle`'s STS trust the API server's ServiceAccount tokens
    /// (every role, every subject); otherwise nothing.
    pub async fn trust_service_accounts(&self, handle: &EmulatorHandle) -> anyhow::Result<()> {
        if !irsa_profile() {
            return Ok(());
        }
        let provider = self.oidc_provider().await?;
        let mut config = handle.sts();
        config.oidc_providers = vec![provider];
        handle.set_sts(config);
        Ok(())
    }

    /// The shared emulator (every test's default traffic goes there).
    pub fn shared_emulator(&self) -> Emulator {
        Emulator {
            endpoint: self.aws_endpoint.clone(),
            handle: self.emulator.clone(),
        }
    }

    /// An admin client, bound to the calling tokio runtime.
    pub async fn client(&self) -> kube::Client {
        self.client_with(None).await
    }

    /// A client that impersonates `user` (e.g. `system:serviceaccount:ns:name`), so RBAC applies.
    pub async fn client_as(&self, user: &str) -> kube::Client {
        self.client_with(Some(user.to_string())).await
    }

    async fn client_with(&self, impersonate: Option<String>) -> kube::Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("reading the kubeconfig");
        let mut config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .expect("loading the kubeconfig");
        config.auth_info.impersonate = impersonate;
        kube::Client::try_from(config).expect("building a kube client")
    }

    /// Creates a namespace with a random suffix, for one test's objects.
    pub async fn namespace(&self, client: &kube::Client, prefix: &str) -> String {
        let prefix: String = prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .take(40)
            .collect();
        let name = format!("{prefix}-{:08x}", rand::random::<u32>());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("creating the test namespace");
        self.allow_everything_in(client, &name).await;
        name
    }

    /// A SignalPolicy that lets `namespace` send every signal (the operator denies by default).
    /// Named after the namespace; tests of the policies themselves make their own namespaces.
    /// Nothing happens when the SignalPolicy CRD is not installed yet. With
    /// `SIGNALMAN_TEST_POLICY_ROLE` set, the policy names that role, so the operator sends as
    /// an assumed role (a test profile of scripts/test.sh).
    pub async fn allow_everything_in(&self, client: &kube::Client, namespace: &str) {
        let mut policy = serde_json::json!({
            "apiVersion": "signalman.dev/v1alpha1",
            "kind": "SignalPolicy",
            "metadata": {"name": format!("allow-all-{namespace}")},
            "spec": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "regions": ["*"],
                "swf": {"domains": ["*"], "workflowIds": ["*"]},
                "ssm": {
                    "signalTypes": ["Approve", "Reject", "StartStep", "StopStep", "Resume", "Revoke"],
                    "documentNames": ["*"],
                },
            },
        });
        if let Ok(role) = std::env::var(POLICY_ROLE_VARIABLE) {
            if !role.is_empty() {
                policy["spec"]["roleArn"] = serde_json::Value::String(role);
            }
        }
        let ar = kube::api::ApiResource {
            group: "signalman.dev".into(),
            version: "v1alpha1".into(),
            api_version: "signalman.dev/v1alpha1".into(),
            kind: "SignalPolicy".into(),
            plural: "signalpolicies".into(),
        };
        let api: Api<kube::api::DynamicObject> = Api::all_with(client.clone(), &ar);
        let object: kube::api::DynamicObject =
            serde_json::from_value(policy).expect("a SignalPolicy object");
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => {}
            Err(kube::Error::Api(ae)) if ae.code == 404 || ae.code == 409 => {}
            Err(e) => panic!("creating the test namespace's SignalPolicy: {e}"),
        }
    }

    /// Installs signalman's CRDs (server-side apply of `crds/`) and waits until they are
    /// established.
    pub fn install_crds(&self) -> anyhow::Result<()> {
        let crds = repo_root().join("crds");
        let out = self
            .kubectl()
            .args(["apply", "--server-side", "-f"])
            .arg(&crds)
            .output()
            .context("running kubectl")?;
        if !out.status.success() {
            bail!(
                "installing the CRDs: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let out = self
            .kubectl()
            .args(["wait", "--for=condition=Established", "--timeout=60s"])
            .args([
                "crd/workflowsignals.signalman.dev",
                "crd/automationsignals.signalman.dev",
                "crd/signalreceipts.signalman.dev",
                "crd/signalpolicies.signalman.dev",
            ])
            .output()
            .context("running kubectl")?;
        if !out.status.success() {
            bail!(
                "waiting for the CRDs: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// The API server's ServiceAccount issuer as an IAM OIDC provider of the emulator's STS:
    /// anonymous callers may read its discovery document and JWKS (the binding a cluster whose
    /// issuer AWS reads needs), fetched from this API server with its CA. Idempotent.
    pub async fn oidc_provider(&self) -> anyhow::Result<aws_emulator::OidcProvider> {
        use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
        let binding = ClusterRoleBinding {
            metadata: ObjectMeta {
                name: Some("signalman-testenv-oidc-discovery".into()),
                ..Default::default()
            },
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: "system:service-account-issuer-discovery".into(),
            },
            subjects: Some(vec![Subject {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "Group".into(),
                name: "system:unauthenticated".into(),
                namespace: None,
            }]),
        };
        let api = Api::<ClusterRoleBinding>::all(self.client().await);
        match api.create(&PostParams::default(), &binding).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e).context("binding the issuer discovery role"),
        }
        let ca = self.state_dir.join("apiserver/ca.crt");
        Ok(aws_emulator::OidcProvider {
            issuer: SERVICE_ACCOUNT_ISSUER.to_string(),
            discovery_url: Some(self.api_server.clone()),
            ca_pem: Some(
                std::fs::read_to_string(&ca)
                    .with_context(|| format!("reading {}", ca.display()))?,
            ),
            client_ids: Vec::new(),
        })
    }

    /// A token for ServiceAccount `namespace/name` (created if missing) from the API server's
    /// TokenRequest, for `audience`, valid `seconds` (the API server's minimum is 600).
    pub async fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
        audience: &str,
        seconds: i64,
    ) -> anyhow::Result<String> {
        use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
        use k8s_openapi::api::core::v1::ServiceAccount;
        let api = Api::<ServiceAccount>::namespaced(self.client().await, namespace);
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        match api.create(&PostParams::default(), &sa).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e).context("creating the ServiceAccount"),
        }
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![audience.to_string()],
                expiration_seconds: Some(seconds),
                bound_object_ref: None,
            },
            ..Default::default()
        };
        let issued = api
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .context("TokenRequest")?;
        issued
            .status
            .map(|s| s.token)
            .context("a TokenRequest without a token")
    }

    /// `kubectl` against this API server.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(self.bin_dir.join("kubectl"));
        cmd.env("KUBECONFIG", &self.kubeconfig);
        cmd
    }

    /// Another kube-apiserver (with its own etcd), as a cluster configured otherwise serves
    /// its APIs: `runtime_config` is kube-apiserver's `--runtime-config`, and
    /// `disabled_admission` its `--disable-admission-plugins` (the plugin of an API turned
    /// off must be off too, or it never becomes ready). Stopped on drop.
    pub fn other_api_server(
        &self,
        name: &str,
        runtime_config: &str,
        disabled_admission: &str,
    ) -> anyhow::Result<OtherApiServer> {
        let dir = self.state_dir.join(format!("apiserver-{name}"));
        std::fs::create_dir_all(&dir)?;
        let kubeconfig = dir.join("kubeconfig");
        let (child, url) = spawn_until_ready(
            Command::new(self.bin_dir.join("signalman-apiserver"))
                .arg("--data-dir")
                .arg(dir.join("data"))
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .arg("--token")
                .arg(ADMIN_TOKEN)
                .arg("--runtime-config")
                .arg(runtime_config)
                .arg("--disable-admission-plugins")
                .arg(disabled_admission),
            &dir.join("apiserver.stderr.log"),
        )
        .with_context(|| format!("starting the kube-apiserver {name}"))?;
        Ok(OtherApiServer {
            child,
            url,
            kubeconfig,
            bin_dir: self.bin_dir.clone(),
            helm_home: dir.join("helm"),
        })
    }

    /// `helm` against this API server, with its state kept inside the run's directory.
    pub fn helm(&self) -> Command {
        let mut cmd = Command::new(self.bin_dir.join("helm"));
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("HELM_CACHE_HOME", self.state_dir.join("helm/cache"))
            .env("HELM_CONFIG_HOME", self.state_dir.join("helm/config"))
            .env("HELM_DATA_HOME", self.state_dir.join("helm/data"));
        cmd
    }

    /// Environment variables that point an AWS SDK (the operator, the aws CLI) at the emulator.
    pub fn aws_env(&self, access_key: &str) -> Vec<(&'static str, String)> {
        aws_env_at(&self.aws_endpoint, access_key)
    }

    /// An SSM client signing as `access_key`, through the emulator (faults apply).
    pub fn ssm_client(&self, access_key: &str) -> aws_sdk_ssm::Client {
        ssm_client_at(&self.aws_endpoint, access_key)
    }

    /// An SWF client. `through_emulator` false talks to moto directly, past every fault.
    pub fn swf_client(&self, through_emulator: bool) -> aws_sdk_swf::Client {
        swf_client_at(if through_emulator {
            &self.aws_endpoint
        } else {
            &self.moto_endpoint
        })
    }

    /// Shell `export` lines for a person or a script (`signalman-env up --env-file`).
    pub fn shell_exports(&self) -> String {
        let mut out = format!(
            "export KUBECONFIG='{}'\nexport SIGNALMAN_EMULATOR_URL='{}'\nexport SIGNALMAN_MOTO_URL='{}'\nexport PATH='{}':\"$PATH\"\n",
            self.kubeconfig.display(),
            self.aws_endpoint,
            self.moto_endpoint,
            self.bin_dir.display()
        );
        out.push_str(&aws_shell_exports(&self.aws_endpoint));
        out
    }
}

/// `export` lines that point the aws CLI and the SDKs at `endpoint` as the operator. The
/// aws CLI v1 reads its region only from `AWS_DEFAULT_REGION` (the SDKs from `AWS_REGION`),
/// so both are set.
pub fn aws_shell_exports(endpoint: &str) -> String {
    let mut env = aws_env_at(endpoint, OPERATOR_ACCESS_KEY);
    env.push(("AWS_DEFAULT_REGION", REGION.to_string()));
    env.iter()
        .map(|(k, v)| format!("export {k}='{v}'\n"))
        .collect()
}

struct Started {
    api_server: String,
    aws_endpoint: String,
    moto_endpoint: String,
    emulator: EmulatorHandle,
    runtime: tokio::runtime::Handle,
}

/// Owns the child processes and the emulator's runtime for the life of the process.
fn owner_thread(
    home: PathBuf,
    bin_dir: PathBuf,
    state_dir: PathBuf,
    service_account_admission: bool,
    tx: mpsc::Sender<anyhow::Result<Started>>,
) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("testenv-emulator")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = tx.send(Err(e.into()));
            return;
        }
    };
    let result = (|| -> anyhow::Result<(Started, Vec<Child>)> {
        let begin = Instant::now();
        let mut children = Vec::new();
        let mut apiserver = Command::new(bin_dir.join("signalman-apiserver"));
        if service_account_admission {
            apiserver.arg("--service-account-admission");
        }
        let (apiserver, api_server) = spawn_until_ready(
            apiserver
                .arg("--data-dir")
                .arg(state_dir.join("apiserver"))
                .arg("--kubeconfig")
                .arg(state_dir.join("kubeconfig"))
                .arg("--token")
                .arg(ADMIN_TOKEN),
            &state_dir.join("apiserver.stderr.log"),
        )
        .context("starting the kube-apiserver")?;
        children.push(apiserver);
        let (moto, moto_endpoint) = spawn_until_ready(
            Command::new(home.join("venv/bin/python"))
                .arg(repo_root().join("tests/env/moto/launch.py"))
                .arg("--host")
                .arg("127.0.0.1")
                .arg("--port")
                .arg(free_port()?.to_string()),
            &state_dir.join("moto.log"),
        )
        .context("starting moto")?;
        children.push(moto);
        let emulator = runtime
            .block_on(aws_emulator::start(aws_emulator::EmulatorConfig {
                listen: "127.0.0.1:0".parse().expect("a socket address"),
                swf_upstream: Some(moto_endpoint.clone()),
                account_id: ACCOUNT_ID.to_string(),
                region: REGION.to_string(),
            }))
            .context("starting the AWS emulator")?;
        apply_lag_profile(&emulator.handle)?;
        eprintln!(
            "testenv: kube-apiserver {api_server}, moto {moto_endpoint}, emulator {} ready in {:.1}s (state in {})",
            emulator.endpoint,
            begin.elapsed().as_secs_f64(),
            state_dir.display()
        );
        Ok((
            Started {
                api_server,
                aws_endpoint: emulator.endpoint.clone(),
                moto_endpoint,
                emulator: emulator.handle.clone(),
                runtime: runtime.handle().clone(),
            },
            children,
        ))
    })();
    match result {
        Ok((started, children)) => {
            let _ = tx.send(Ok(started));
            // Keep the children and the emulator alive until the process ends; the children's
            // PDEATHSIG fires when this thread goes away with it.
            let _children = children;
            runtime.block_on(std::future::pending::<()>());
        }
        Err(e) => {
            let _ = tx.send(Err(e));
        }
    }
}

/// Spawns a child tied to this thread's life, waits for its `ready <url>` line on stdout,
/// and keeps draining its stdout afterwards. Its stderr goes to `log`.
fn spawn_until_ready(cmd: &mut Command, log: &Path) -> anyhow::Result<(Child, String)> {
    let log_file =
        std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .stdin(Stdio::null());
    // SAFETY: the closure only calls prctl, which is async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if !sent {
                if let Some(url) = line.strip_prefix("ready ") {
                    let _ = tx.send(url.trim().to_string());
                    sent = true;
                }
            }
        }
    });
    match rx.recv_timeout(READY_TIMEOUT) {
        Ok(url) => Ok((child, url)),
        Err(_) => {
            let _ = child.kill();
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            let tail: String = tail
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            bail!(
                "no ready line within {READY_TIMEOUT:?}; last lines of {}:\n{tail}",
                log.display()
            )
        }
    }
}

/// Runs the setup script when something it builds is missing (CI runs it up front).
fn ensure_built(home: &Path) -> anyhow::Result<()> {
    let needed = [
        "bin/signalman-apiserver",
        "bin/kubectl",
        "bin/helm",
        "venv/bin/python",
    ];
    if needed.iter().all(|p| home.join(p).exists()) {
        return Ok(());
    }
    eprintln!("testenv: building the local environment (tests/env/setup.sh); the first time takes minutes");
    let status = Command::new("bash")
        .arg(repo_root().join("tests/env/setup.sh"))
        .status()
        .context("running tests/env/setup.sh")?;
    if !status.success() {
        bail!("tests/env/setup.sh failed with {status}");
    }
    Ok(())
}

/// A state directory for this process, after removing those of processes that are gone.
fn fresh_state_dir(home: &Path) -> anyhow::Result<PathBuf> {
    let runs = home.join("runs");
    std::fs::create_dir_all(&runs)?;
    for entry in std::fs::read_dir(&runs)?.flatten() {
        // `<pid>` or `<pid>.<n>`: left by a process that is gone, it is removed.
        let alive = entry
            .file_name()
            .to_str()
            .and_then(|n| n.split('.').next()?.parse::<u32>().ok())
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    // One directory per environment: a process may start several (the shared one, a node's),
    // and none may clear another's.
    let pid = std::process::id();
    for n in 0u32.. {
        let dir = match n {
            0 => runs.join(pid.to_string()),
            n => runs.join(format!("{pid}.{n}")),
        };
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e.into()),
        }
    }
    unreachable!("some directory name is free")
}

/// A port that was free a moment ago (for children that need one on their command line).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The variable that turns lag mode on in every emulator the environment starts (the shared
/// one and every private one): a `LagConfig` as JSON (`PUT /_emu/lag`'s body), or `MS` /
/// `MIN-MAX` milliseconds for every write that can lag (SSM SendAutomationSignal and
/// StopAutomationExecution, SWF SignalWorkflowExecution).
pub const LAG_VARIABLE: &str = "SIGNALMAN_EMU_LAG";

/// The variable that makes every test namespace's SignalPolicy name this role.
pub const POLICY_ROLE_VARIABLE: &str = "SIGNALMAN_TEST_POLICY_ROLE";

/// The variable that runs every test operator on IRSA (a test profile of scripts/test.sh): no
/// static keys, only `AWS_ROLE_ARN` ([`IRSA_ROLE`]) and a projected-token file from the API
/// server's TokenRequest, which every emulator's STS trusts. Each process then signs as a
/// session of its own (aws-config names it after the time), as on EKS by default.
pub const IRSA_VARIABLE: &str = "SIGNALMAN_TEST_IRSA";

/// The role test operators assume under the IRSA profile.
pub const IRSA_ROLE: &str = "arn:aws:iam::123456789012:role/SignalmanOperator";

/// Whether the IRSA profile is on.
pub fn irsa_profile() -> bool {
    std::env::var(IRSA_VARIABLE).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The lag profile `SIGNALMAN_EMU_LAG` asks for, if any.
pub fn lag_profile() -> anyhow::Result<Option<aws_emulator::LagConfig>> {
    match std::env::var(LAG_VARIABLE) {
        Ok(v) if !v.trim().is_empty() => parse_lag(&v).map(Some),
        _ => Ok(None),
    }
}

fn parse_lag(text: &str) -> anyhow::Result<aws_emulator::LagConfig> {
    use aws_emulator::{LagConfig, LagRule, Service};
    let text = text.trim();
    let config = if text.starts_with('{') {
        serde_json::from_str(text).context("SIGNALMAN_EMU_LAG is not a lag configuration")?
    } else {
        let ms = |s: &str| {
            s.trim()
                .parse::<u64>()
                .with_context(|| format!("SIGNALMAN_EMU_LAG: {s:?} is not milliseconds"))
        };
        let rule = match text.split_once('-') {
            Some((min, max)) => LagRule::between(ms(min)?, ms(max)?),
            None => LagRule::fixed(ms(text)?),
        };
        LagConfig::none()
            .with_rule(Service::Ssm, rule.clone())
            .with_rule(Service::Swf, rule)
    };
    config.validate().map_err(anyhow::Error::msg)?;
    Ok(config)
}

fn apply_lag_profile(handle: &EmulatorHandle) -> anyhow::Result<()> {
    if let Some(config) = lag_profile()? {
        handle.set_lag(config)?;
    }
    Ok(())
}

/// Environment variables that point an AWS SDK (the operator, the aws CLI) at `endpoint`.
pub fn aws_env_at(endpoint: &str, access_key: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
        ("AWS_ACCESS_KEY_ID", access_key.to_string()),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
        ("AWS_REGION", REGION.to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
    ]
}

/// An SSM client at `endpoint`, signing as `access_key` (the emulator's principal).
pub fn ssm_client_at(endpoint: &str, access_key: &str) -> aws_sdk_ssm::Client {
    let config = aws_sdk_ssm::Config::builder()
        .behavior_version(aws_sdk_ssm::config::BehaviorVersion::latest())
        .region(aws_sdk_ssm::config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_ssm::config::Credentials::new(
            access_key, SECRET_KEY, None, None, "testenv",
        ))
        .build();
    aws_sdk_ssm::Client::from_conf(config)
}

/// An SWF client at `endpoint`.
pub fn swf_client_at(endpoint: &str) -> aws_sdk_swf::Client {
    let config = aws_sdk_swf::Config::builder()
        .behavior_version(aws_sdk_swf::config::BehaviorVersion::latest())
        .region(aws_sdk_swf::config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_swf::config::Credentials::new(
            OPERATOR_ACCESS_KEY,
            SECRET_KEY,
            None,
            None,
            "testenv",
        ))
        .build();
    aws_sdk_swf::Client::from_conf(config)
}

/// A kube-apiserver of one test's own ([`Env::other_api_server`]), stopped on drop.
pub struct OtherApiServer {
    child: Child,
    pub url: String,
    pub kubeconfig: PathBuf,
    bin_dir: PathBuf,
    helm_home: PathBuf,
}

impl OtherApiServer {
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(self.bin_dir.join("kubectl"));
        cmd.env("KUBECONFIG", &self.kubeconfig);
        cmd
    }

    pub fn helm(&self) -> Command {
        let mut cmd = Command::new(self.bin_dir.join("helm"));
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("HELM_CACHE_HOME", self.helm_home.join("cache"))
            .env("HELM_CONFIG_HOME", self.helm_home.join("config"))
            .env("HELM_DATA_HOME", self.helm_home.join("data"));
        cmd
    }
}

impl Drop for OtherApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_emulator::{LagRule, Service};

    #[test]
    fn lag_profiles_parse() {
        let fixed = parse_lag("2500").unwrap();
        assert_eq!(fixed.rules(Service::Ssm), [LagRule::fixed(2500)]);
        assert_eq!(fixed.rules(Service::Swf), [LagRule::fixed(2500)]);
        let range = parse_lag(" 1000-4000 ").unwrap();
        assert_eq!(range.rules(Service::Swf), [LagRule::between(1000, 4000)]);
        let json =
            parse_lag(r#"{"ssm": [{"operation": "SendAutomationSignal", "min_ms": 9}]}"#).unwrap();
        assert_eq!(json.rules(Service::Ssm)[0].min_ms, 9);
        assert!(json.rules(Service::Swf).is_empty());
        for bad in ["soon", "5-1", "1-x", r#"{"sqs": []}"#] {
            assert!(parse_lag(bad).is_err(), "{bad}");
        }
    }
}
