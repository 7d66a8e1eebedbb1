//! The chart on a real node: the operator image (scripts/oci_image.py, from the binary these
//! tests run) imported into the node's containerd, `helm install` with the chart's defaults
//! plus the emulator's endpoints, two Ready replicas that are non-root on a read-only root
//! filesystem, and a WorkflowSignal delivered exactly once from inside a pod; /metrics through
//! the chart's Service; the leader's pod deleted, another takes over and delivers the next
//! signal once; `kubectl logs` in plain text.
//!
//! Root only (the node mounts, makes cgroups and iptables rules; it undoes them when it stops);
//! elsewhere, or with SIGNALMAN_NODE=0, the test says so and passes. It has an environment of its own: its API server
//! runs the ServiceAccount admission plugin, which the chart's pods need for their token.
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use signalman::api::{Phase, WorkflowSignal};
use signalman_testenv::{Env, Node, OPERATOR_ACCESS_KEY, REGION, SECRET_KEY};

use crate::common::{holder_identity, unique, wf_signal, SwfWorld, World};

const IMAGE: &str = "registry.local/signalman";
const TAG: &str = "0.1.0";

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

    let release_ns = "signalman-system";
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
        "extraEnv[0].name=AWS_ACCESS_KEY_ID".into(),
        format!("extraEnv[0].value={OPERATOR_ACCESS_KEY}"),
        "extraEnv[1].name=AWS_SECRET_ACCESS_KEY".into(),
        format!("extraEnv[1].value={SECRET_KEY}"),
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
    world
        .create(&wf_signal(
            "sig",
            &swf.domain,
            "order-1",
            Some("from-a-pod"),
        ))
        .await;
    let status = world
        .wait_done::<WorkflowSignal>("sig", Duration::from_secs(60))
        .await;
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    assert_eq!(status.attempts, 1, "{status:?}");
    swf.assert_each_input_once("order-1", &run_id, ["from-a-pod".to_string()].into_iter())
        .await;

    // /metrics through the chart's Service (the API server's service proxy picks an endpoint).
    let metrics = run(env.kubectl().args([
        "get",
        "--raw",
        &format!(
            "/api/v1/namespaces/{release_ns}/services/signalman-metrics:http-metrics/proxy/metrics"
        ),
    ]));
    assert!(metrics.contains("signalman_"), "{metrics}");

    // Deleting the leader's pod hands over: its successor delivers the next signal, once.
    let holder = lease_holder(env, release_ns);
    let leader = holder_identity(&holder).to_string();
    assert!(
        ready
            .iter()
            .any(|p| p.metadata.name.as_deref() == Some(leader.as_str())),
        "the leader {holder} is one of the Ready pods"
    );
    let deleted = Instant::now();
    run(env.kubectl().args([
        "delete",
        "pod",
        &leader,
        "--namespace",
        release_ns,
        "--wait=false",
    ]));
    let successor = loop {
        let holder = lease_holder(env, release_ns);
        let pod = holder_identity(&holder);
        if !pod.is_empty() && pod != leader {
            break pod.to_string();
        }
        assert!(
            deleted.elapsed() < Duration::from_secs(90),
            "no new leader 90 s after deleting {leader}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!(
        "node: {successor} took over from {leader} {:.1}s after its deletion",
        deleted.elapsed().as_secs_f64()
    );
    let run_2 = swf.start("order-2").await;
    world
        .create(&wf_signal(
            "sig-2",
            &swf.domain,
            "order-2",
            Some("after-handover"),
        ))
        .await;
    let status = world
        .wait_done::<WorkflowSignal>("sig-2", Duration::from_secs(60))
        .await;
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    assert_eq!(status.attempts, 1, "{status:?}");
    swf.assert_each_input_once(
        "order-2",
        &run_2,
        ["after-handover".to_string()].into_iter(),
    )
    .await;
    swf.assert_each_input_once("order-1", &run_id, ["from-a-pod".to_string()].into_iter())
        .await;

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
