//! The chart on a real node: the operator image (scripts/oci_image.py, from the binary these
//! tests run) imported into the node's containerd, `helm install` with the chart's defaults
//! plus the emulator's endpoints and an IRSA role on the ServiceAccount (a MutatingAdmissionPolicy
//! stands in for EKS's webhook: the pods get a projected token and no access key at all), two
//! Ready replicas that are non-root on a read-only root filesystem, and a WorkflowSignal
//! delivered exactly once from inside a pod, as the role; /metrics through the chart's Service;
//! the leader's pod deleted, then `kubectl rollout restart`, each while signals keep coming and
//! AWS is slow to answer: every signal delivered once and recorded by the process that sent it
//! (a stopping pod finishes its sends), another pod leads; `kubectl logs` in plain text.
//!
//! Root only (the node mounts, makes cgroups and iptables rules; it undoes them when it stops);
//! elsewhere, or with SIGNALMAN_NODE=0, the test says so and passes. It has an environment of its own: its API server
//! runs the ServiceAccount admission plugin, which the chart's pods need for their token.
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use signalman::api::{AutomationSignal, Phase, SignalType, WorkflowSignal};
use signalman_testenv::aws_emulator::{
    FaultConfig, FaultKind, FaultRule, RoleTrust, ServiceFaults, StsConfig, WebIdentityTrust,
};
use signalman_testenv::{Env, Node, REGION, SERVICE_ACCOUNT_ISSUER};

use crate::common::{
    am_signal, holder_identity, ready_reason, start_automation, unique, wf_signal, SwfWorld, World,
};

const IMAGE: &str = "registry.local/signalman";
const TAG: &str = "0.1.0";
const RELEASE_NS: &str = "signalman-system";
/// The IRSA role on the chart's ServiceAccount, and the sessions STS makes of it.
const ROLE: &str = "arn:aws:iam::123456789012:role/SignalmanNode";
const SESSION_PREFIX: &str = "arn:aws:sts::123456789012:assumed-role/SignalmanNode/";

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `signalman` Lease's holder ("" when released).
fn lease_holder(env: &Env, ns: &str) -> String {
    run(env.kubectl().args([
        "get",
        "lease",
        "signalman",
        "--namespace",
        ns,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_runs_on_a_node_and_its_pods_deliver_exactly_once() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("node: skipped, a node needs root");
        return;
    }
    if std::env::var("SIGNALMAN_NODE").is_ok_and(|v| v == "0") {
        eprintln!("node: skipped, SIGNALMAN_NODE=0");
        return;
    }
    let begin = Instant::now();
    // Blocking start-ups, off the test's runtime.
    let env: &'static Env = tokio::task::spawn_blocking(|| {
        Box::leak(Box::new(
            Env::start_for_node().expect("an environment for a node"),
        ))
    })
    .await
    .expect("start-up");
    let node = tokio::task::spawn_blocking(move || Node::start(env).expect("a Ready node"))
        .await
        .expect("start-up");

    let image_dir = env.state_dir.join("image");
    let tar = image_dir.join("signalman.tar");
    run(Command::new("python3")
        .arg(signalman_testenv::repo_root().join("scripts/oci_image.py"))
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_signalman"))
        .arg("--out")
        .arg(image_dir.join("layout"))
        .args(["--version", TAG, "--gzip-level", "1", "--tar"])
        .arg(&tar));
    run(node
        .ctr()
        .args(["images", "import", "--base-name", IMAGE])
        .arg(&tar));

    // IRSA as on EKS: STS trusts the API server's tokens for the chart's ServiceAccount, and
    // the webhook's stand-in gives its pods the token and the variables; no access key anywhere.
    env.emulator.set_sts(StsConfig {
        oidc_providers: vec![env
            .oidc_provider()
            .await
            .expect("the API server as an OIDC provider")],
        roles: vec![RoleTrust {
            role_arn: ROLE.into(),
            web_identities: vec![WebIdentityTrust {
                issuer: SERVICE_ACCOUNT_ISSUER.into(),
                subject: format!("system:serviceaccount:{RELEASE_NS}:signalman"),
            }],
            ..RoleTrust::default()
        }],
        ..StsConfig::default()
    });
    tokio::task::block_in_place(|| node.stand_in_for_the_eks_webhook(env))
        .expect("the EKS webhook's stand-in");

    let release_ns = RELEASE_NS;
    let mut helm = env.helm();
    helm.args(["install", "signalman"])
        .arg(signalman_testenv::repo_root().join("charts/signalman"))
        .args(["--namespace", release_ns, "--create-namespace"]);
    for set in [
        format!("image.repository={IMAGE}"),
        format!("image.tag={TAG}"),
        "image.pullPolicy=Never".into(),
        format!("aws.endpoints.all={}", node.aws_endpoint),
        format!("aws.region={REGION}"),
        format!("serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn={ROLE}"),
    ] {
        helm.args(["--set", &set]);
    }
    run(&mut helm);
    let rollout = run(env.kubectl().args([
        "rollout",
        "status",
        "deployment/signalman",
        "--namespace",
        release_ns,
        "--timeout=180s",
    ]));
    eprintln!(
        "node: {} {:.1}s after the test began",
        rollout.trim(),
        begin.elapsed().as_secs_f64()
    );

    let client = env.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), release_ns);
    let list = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=signalman"))
        .await
        .expect("listing the operator's pods");
    let ready: Vec<&Pod> = list
        .items
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .collect();
    assert_eq!(ready.len(), 2, "two Ready replicas: {list:?}");
    for pod in &ready {
        let spec = pod.spec.as_ref().expect("a pod spec");
        assert_eq!(spec.node_name.as_deref(), Some(node.name.as_str()));
        let sc = spec.containers[0]
            .security_context
            .as_ref()
            .expect("a security context");
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.run_as_non_root, Some(true));
        let env_names: Vec<&str> = spec.containers[0]
            .env
            .iter()
            .flatten()
            .map(|e| e.name.as_str())
            .collect();
        assert!(
            env_names.contains(&"AWS_WEB_IDENTITY_TOKEN_FILE")
                && !env_names.contains(&"AWS_ACCESS_KEY_ID"),
            "IRSA's variables and no access key: {env_names:?}"
        );
        let name = pod.metadata.name.as_deref().expect("a pod name");
        let status = run(env.kubectl().args([
            "get",
            "--raw",
            &format!("/api/v1/namespaces/{release_ns}/pods/{name}:8080/proxy/readyz"),
        ]));
        assert!(!status.is_empty(), "{name}: /readyz through the API server");
        // What runc was given: that user, that root filesystem.
        let id = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c[0].container_id.as_deref())
            .and_then(|id| id.strip_prefix("containerd://"))
            .expect("a containerd container id");
        let info: serde_json::Value =
            serde_json::from_str(&run(node.ctr().args(["containers", "info", id])))
                .expect("ctr containers info is JSON");
        assert_eq!(info["Spec"]["process"]["user"]["uid"], 65532, "{name}");
        assert_eq!(info["Spec"]["root"]["readonly"], true, "{name}");
    }

    // A signal in a namespace of its own, with a policy that allows it.
    let world = World {
        env,
        client: client.clone(),
        ns: env.namespace(&client, "node").await,
    };
    let swf = SwfWorld::new(env, &unique("node")).await;
    let run_id = swf.start("order-1").await;
    let first = wf_signal("sig", &swf.domain, "order-1", Some("from-a-pod"));
    eprintln!(
        "node: admission admitted a signal {:.1}s after the rollout",
        world.wait_admission_ready(&first).await.as_secs_f64()
    );
    world.create(&first).await;
    let status = world
        .wait_done::<WorkflowSignal>("sig", Duration::from_secs(60))
        .await;
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    assert_eq!(status.attempts, 1, "{status:?}");
    swf.assert_each_input_once("order-1", &run_id, ["from-a-pod".to_string()].into_iter())
        .await;
    // Sent as the role, on credentials from the pod's projected token: an approval that only
    // the role may give is accepted, and its principal is a session of the role.
    let ssm = signalman_testenv::ssm_client_at(&env.aws_endpoint, "release-manager");
    let execution = start_automation(&ssm, "Signalman-Approve", &[("Approvers", &[ROLE])]).await;
    world
        .create(&am_signal("approve", &execution, SignalType::Approve, &[]))
        .await;
    let approved = world
        .wait_done::<AutomationSignal>("approve", Duration::from_secs(60))
        .await;
    assert_eq!(approved.phase, Some(Phase::Succeeded), "{approved:?}");
    // The status names the role (its sessions' names change with every pod and refresh).
    assert_eq!(approved.principal.as_deref(), Some(ROLE), "{approved:?}");
    let sessions = env.emulator.sts_sessions();
    assert!(
        sessions
            .iter()
            .any(|s| s.issued_by == "AssumeRoleWithWebIdentity"
                && s.role_arn == ROLE
                && s.arn.starts_with(SESSION_PREFIX)),
        "the pod's token was exchanged for the role: {sessions:?}"
    );

    // /metrics through the chart's Service (the API server's service proxy picks an endpoint).
    let metrics = run(env.kubectl().args([
        "get",
        "--raw",
        &format!(
            "/api/v1/namespaces/{release_ns}/services/signalman-metrics:http-metrics/proxy/metrics"
        ),
    ]));
    assert!(metrics.contains("signalman_"), "{metrics}");

    // The leader's pod deleted mid-burst: it finishes its sends, its successor takes over, and
    // every signal is delivered once.
    let leader = holder_identity(&lease_holder(env, release_ns)).to_string();
    assert!(
        ready
            .iter()
            .any(|p| p.metadata.name.as_deref() == Some(leader.as_str())),
        "the leader {leader} is one of the Ready pods"
    );
    let deleted = leader.clone();
    while_signals_arrive(env, &world, &swf, "order-2", move || {
        run(env.kubectl().args([
            "delete",
            "pod",
            &deleted,
            "--namespace",
            RELEASE_NS,
            "--wait=true",
        ]))
    })
    .await;
    let successor = holder_identity(&lease_holder(env, release_ns)).to_string();
    assert!(
        !successor.is_empty() && successor != leader,
        "another pod leads after {leader}'s deletion: {successor:?}"
    );
    swf.assert_each_input_once("order-1", &run_id, ["from-a-pod".to_string()].into_iter())
        .await;

    // `kubectl rollout restart` the same way: both pods replaced, one at a time.
    let rolled = while_signals_arrive(env, &world, &swf, "order-3", move || {
        run(env.kubectl().args([
            "rollout",
            "restart",
            "deployment/signalman",
            "--namespace",
            RELEASE_NS,
        ]));
        run(env.kubectl().args([
            "rollout",
            "status",
            "deployment/signalman",
            "--namespace",
            RELEASE_NS,
            "--timeout=180s",
        ]))
    })
    .await;
    assert!(rolled.contains("successfully rolled out"), "{rolled}");

    let logs = run(env.kubectl().args([
        "logs",
        "--namespace",
        release_ns,
        "deployment/signalman",
        "--tail=20",
    ]));
    assert!(
        !logs.trim().is_empty() && logs.lines().all(|l| !l.trim_start().starts_with('{')),
        "kubectl logs is plain text (the chart's default format): {logs}"
    );

    let stopping = Instant::now();
    node.stop();
    eprintln!(
        "node: test done in {:.1}s (node stopped in {:.1}s)",
        begin.elapsed().as_secs_f64(),
        stopping.elapsed().as_secs_f64()
    );
}

/// Runs `disruption` (a blocking command that stops the leader's pod one way or another) while
/// a signal for `workflow_id` arrives every 400 ms and each send takes 3 s at AWS, so the
/// leader is told to stop with sends in flight; returns what `disruption` printed. Every signal
/// ends delivered once and `Delivered`: the process that sent it recorded the answer (a
/// stopping pod finishes its sends rather than leaving them to its successor's verification,
/// which would say `DeliveryVerified`).
async fn while_signals_arrive(
    env: &'static Env,
    world: &World,
    swf: &SwfWorld,
    workflow_id: &str,
    disruption: impl FnOnce() -> String + Send + 'static,
) -> String {
    let run_id = swf.start(workflow_id).await;
    env.emulator
        .set_faults(FaultConfig {
            swf: ServiceFaults {
                rules: vec![FaultRule {
                    operation: Some("SignalWorkflowExecution".into()),
                    latency_ms: Some(3000),
                    ..FaultRule::new(FaultKind::Latency)
                }],
                ..ServiceFaults::default()
            },
            ..FaultConfig::default()
        })
        .expect("a latency fault");
    let leader = holder_identity(&lease_holder(env, RELEASE_NS)).to_string();
    let pods: Api<Pod> = Api::namespaced(world.client.clone(), RELEASE_NS);
    let signals = world.api::<WorkflowSignal>();

    // The disruption starts once five signals are on their way; signals keep coming until the
    // leader's pod has been told to stop and the disruption is over.
    let mut disruption = Some(disruption);
    let mut disrupted = None;
    let began = Instant::now();
    let mut names = Vec::new();
    let mut in_flight_at_sigterm = None;
    while !disrupted
        .as_ref()
        .is_some_and(tokio::task::JoinHandle::is_finished)
        || in_flight_at_sigterm.is_none()
    {
        if names.len() == 5 {
            disrupted = disruption.take().map(tokio::task::spawn_blocking);
        }
        assert!(
            began.elapsed() < Duration::from_secs(200),
            "the disruption did not end, or the leader {leader} was never stopped"
        );
        let name = format!("{workflow_id}-{}", names.len());
        world
            .create(&wf_signal(&name, &swf.domain, workflow_id, Some(&name)))
            .await;
        names.push(name);
        if in_flight_at_sigterm.is_none() {
            // The old leader's pod is told to stop (deletion timestamp set, or gone already).
            let stopping = match pods
                .get_opt(&leader)
                .await
                .expect("reading the leader's pod")
            {
                Some(pod) => pod.metadata.deletion_timestamp.is_some(),
                None => true,
            };
            if stopping {
                let list = signals
                    .list(&ListParams::default())
                    .await
                    .expect("listing the signals");
                in_flight_at_sigterm = Some(
                    list.items
                        .iter()
                        .filter(|s| {
                            s.status.as_ref().and_then(|st| st.phase) == Some(Phase::Sending)
                        })
                        .count(),
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    eprintln!(
        "node: {workflow_id}: disruption over in {:.1}s, {} signals created meanwhile, {:?} \
         sending when the leader {leader} was told to stop",
        began.elapsed().as_secs_f64(),
        names.len(),
        in_flight_at_sigterm
    );
    let printed = disrupted
        .expect("the disruption started")
        .await
        .expect("the disruption's task");
    assert!(
        in_flight_at_sigterm.is_some_and(|n| n > 0),
        "a send was in flight when the leader was told to stop"
    );
    for name in &names {
        let status = world
            .wait_done::<WorkflowSignal>(name, Duration::from_secs(90))
            .await;
        assert_eq!(status.phase, Some(Phase::Succeeded), "{name}: {status:?}");
        assert_eq!(status.attempts, 1, "{name}: {status:?}");
        assert_eq!(
            ready_reason(&status).as_deref(),
            Some("Delivered"),
            "{name}: recorded by the process that sent it: {status:?}"
        );
    }
    swf.assert_each_input_once(workflow_id, &run_id, names.iter().cloned())
        .await;
    env.emulator.clear_faults();
    printed
}
