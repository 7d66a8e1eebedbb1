//! A real Kubernetes node next to an [`Env`]'s API server: containerd, runc and the bridge CNI
//! plugin, a kubelet registered as node `127.0.0.1`, kube-proxy, kube-controller-manager and
//! kube-scheduler (tests/env/node/node.sh, built by `SIGNALMAN_NODE=1 tests/env/setup.sh`).
//! Pods reach the API server through the `kubernetes` Service (in-cluster config) and the AWS
//! emulator at [`Node::aws_endpoint`], both relayed from the bridge's gateway to loopback.
//!
//! Root only, one node per machine at a time. Stopping it (drop, or the process dying: the
//! script gets SIGTERM through `PR_SET_PDEATHSIG`) removes every container and undoes every
//! change to the machine.
use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc;
use std::time::Instant;

use anyhow::{anyhow, Context as _};

use crate::{env_home, repo_root, spawn_until_ready, Env, READY_TIMEOUT};

/// The gateway address of the node's pod bridge: where pods reach the relayed host services.
pub const GATEWAY: &str = "10.244.77.1";

/// A running node; stops (and cleans up) when dropped.
pub struct Node {
    /// The node's name (and its InternalIP).
    pub name: String,
    /// The AWS emulator as pods see it (a relay on the gateway).
    pub aws_endpoint: String,
    /// `ctr` against the node's containerd, in the `k8s.io` namespace the kubelet uses.
    ctr_socket: PathBuf,
    pid: u32,
    owner: Option<std::thread::JoinHandle<()>>,
}

/// Whether the node's programs are built (`SIGNALMAN_NODE=1 tests/env/setup.sh`).
pub fn node_built() -> bool {
    let home = env_home();
    [
        "bin/kubelet",
        "bin/kube-proxy",
        "bin/kube-controller-manager",
        "bin/kube-scheduler",
        "containerd/containerd",
        "cni-bin/bridge",
        "images/pause.tar",
    ]
    .iter()
    .all(|p| home.join(p).exists())
}

impl Node {
    /// Starts the node against `env` and returns once it is Ready. Blocking.
    pub fn start(env: &Env) -> anyhow::Result<Node> {
        if !node_built() {
            let status = Command::new("bash")
                .arg(repo_root().join("tests/env/setup.sh"))
                .env("SIGNALMAN_NODE", "1")
                .status()
                .context("running SIGNALMAN_NODE=1 tests/env/setup.sh")?;
            anyhow::ensure!(status.success(), "tests/env/setup.sh failed with {status}");
        }
        let port_of = |url: &str| -> anyhow::Result<String> {
            url.rsplit(':')
                .next()
                .map(|p| p.trim_end_matches('/').to_string())
                .with_context(|| format!("no port in {url}"))
        };
        let api_port = port_of(&env.api_server)?;
        let aws_port = port_of(&env.aws_endpoint)?;
        let dir = env.state_dir.join("node");
        std::fs::create_dir_all(&dir)?;
        let mut cmd = Command::new("bash");
        cmd.arg(repo_root().join("tests/env/node/node.sh"))
            .arg(&dir)
            .arg(&env.kubeconfig)
            .arg(env.state_dir.join("apiserver"))
            .arg(&api_port)
            .arg(&aws_port)
            .env("SIGNALMAN_ENV_HOME", env_home());
        let log = dir.join("node.log");
        let begin = Instant::now();
        // The script must outlive the caller's thread (PDEATHSIG follows the spawning thread):
        // a thread of its own spawns it and waits for it.
        let (tx, rx) = mpsc::channel();
        let owner = std::thread::Builder::new()
            .name("testenv-node".into())
            .spawn(move || match spawn_until_ready(&mut cmd, &log) {
                Ok((mut child, name)) => {
                    let _ = tx.send(Ok((child.id(), name)));
                    let _ = child.wait();
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            })
            .context("spawning the node's owner thread")?;
        let (pid, name) = rx
            .recv_timeout(READY_TIMEOUT * 2)
            .map_err(|_| anyhow!("the node did not start in time"))?
            .with_context(|| format!("starting the node (logs in {})", dir.display()))?;
        eprintln!(
            "testenv: node {name} Ready in {:.1}s (logs in {})",
            begin.elapsed().as_secs_f64(),
            dir.join("logs").display()
        );
        Ok(Node {
            name,
            aws_endpoint: format!("http://{GATEWAY}:{aws_port}"),
            ctr_socket: dir.join("containerd/containerd.sock"),
            pid,
            owner: Some(owner),
        })
    }

    /// `ctr` against the node's containerd, in the `k8s.io` namespace (the kubelet's images).
    pub fn ctr(&self) -> Command {
        let mut cmd = Command::new(env_home().join("containerd/ctr"));
        cmd.arg("-a").arg(&self.ctr_socket).args(["-n", "k8s.io"]);
        cmd
    }

    /// Does what EKS's Pod Identity Webhook does for IRSA (tests/env/node/
    /// eks-pod-identity-webhook.yaml, a MutatingAdmissionPolicy): pods created from then on whose
    /// ServiceAccount is annotated `eks.amazonaws.com/role-arn` get a projected token for
    /// audience `sts.amazonaws.com` and `AWS_ROLE_ARN` + `AWS_WEB_IDENTITY_TOKEN_FILE`. Returns
    /// once the API server applies it (policies load a moment after they are created).
    pub fn stand_in_for_the_eks_webhook(&self, env: &Env) -> anyhow::Result<()> {
        let manifest = repo_root().join("tests/env/node/eks-pod-identity-webhook.yaml");
        let policy = std::fs::read_to_string(&manifest)
            .with_context(|| format!("reading {}", manifest.display()))?;
        kubectl_stdin(env, &["apply", "-f", "-"], &policy)?;
        // A pod created with --dry-run=server in a probe namespace shows when it applies.
        let probe_ns = "testenv-webhook-probe";
        let probe = serde_json::json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": probe_ns}},
                {"apiVersion": "v1", "kind": "ServiceAccount",
                 "metadata": {"name": "probe", "namespace": probe_ns, "annotations":
                     {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/probe"}}},
            ],
        });
        let pod = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "probe", "namespace": probe_ns},
            "spec": {
                "serviceAccountName": "probe",
                "automountServiceAccountToken": false,
                "containers": [{"name": "c", "image": "probe"}],
            },
        });
        kubectl_stdin(env, &["apply", "-f", "-"], &probe.to_string())?;
        let started = Instant::now();
        loop {
            let out = kubectl_stdin(
                env,
                &["create", "--dry-run=server", "-o", "json", "-f", "-"],
                &pod.to_string(),
            );
            if let Ok(json) = &out {
                if json.contains("AWS_WEB_IDENTITY_TOKEN_FILE") {
                    let _ = env
                        .kubectl()
                        .args(["delete", "namespace", probe_ns, "--wait=false"])
                        .output();
                    return Ok(());
                }
            }
            anyhow::ensure!(
                started.elapsed() < READY_TIMEOUT,
                "the webhook's stand-in did not apply to a pod: {out:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
    }

    /// Stops the node and undoes its changes to the machine; returns when that is done.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        if let Some(owner) = self.owner.take() {
            // SAFETY: kill(2) on our own child's pid, which `owner` has not reaped yet.
            unsafe {
                libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
            }
            let _ = owner.join();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// `kubectl ARGS` with `input` on its standard input; its standard output.
fn kubectl_stdin(env: &Env, args: &[&str], input: &str) -> anyhow::Result<String> {
    use std::io::Write as _;
    let mut child = env
        .kubectl()
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("kubectl")?;
    child
        .stdin
        .take()
        .context("kubectl's stdin")?
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
