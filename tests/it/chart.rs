//! The Helm chart against the real API server: every value set of `charts/signalman/ci/` is
//! accepted by a server-side dry run; `helm install` creates every object; and the operator,
//! run out of cluster as the chart's ServiceAccount (an impersonating kubeconfig), delivers a
//! signal, which proves the chart's RBAC suffices, while requests outside it are refused.
//! (Rendering, lint and schema checks that need no cluster are in `tests/chart.rs`.)
//!
//! The cluster is shared by every test of this binary: installs use `crds.install=false` (the
//! suite owns the CRDs and no test may replace them) and release names of their own, and the
//! operators watch only their test's namespace.
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use signalman::api::{AutomationSignal, Phase, WorkflowSignal};

use crate::common::{impersonating_kubeconfig, unique, wf_signal, SwfWorld, World};

fn chart_dir() -> PathBuf {
    signalman_testenv::repo_root().join("charts/signalman")
}

/// The value sets of `charts/signalman/ci/`, after the defaults (None).
fn value_sets() -> Vec<Option<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart_dir().join("ci"))
        .expect("charts/signalman/ci")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.to_string_lossy().ends_with("-values.yaml"))
        .collect();
    files.sort();
    std::iter::once(None)
        .chain(files.into_iter().map(Some))
        .collect()
}

/// Runs `cmd` (with `stdin`, if any) and returns its stdout; panics with stderr on failure.
fn run(cmd: &mut Command, stdin: Option<&str>) -> String {
    let out = try_run(cmd, stdin);
    match out {
        Ok(stdout) => stdout,
        Err(e) => panic!("{cmd:?}: {e}"),
    }
}

fn try_run(cmd: &mut Command, stdin: Option<&str>) -> Result<String, String> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawning");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("writing stdin");
    }
    let out = child.wait_with_output().expect("waiting");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

/// The ServiceMonitor kind, which the Prometheus Operator would install: a minimal CRD so that
/// the API server accepts the chart's ServiceMonitor by group, version, kind and scope. It is
/// nobody else's: installing it (idempotently) disturbs no other test.
const SERVICE_MONITOR_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  names: {kind: ServiceMonitor, listKind: ServiceMonitorList, plural: servicemonitors, singular: servicemonitor}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#;

async fn ensure_namespace(client: &kube::Client, name: &str) {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        ..Default::default()
    };
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("creating namespace {name}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_value_set_passes_a_server_side_dry_run() {
    let world = World::new("chart-dry-run").await;
    let env = world.env;
    run(
        env.kubectl().args(["apply", "--server-side", "-f", "-"]),
        Some(SERVICE_MONITOR_CRD),
    );
    run(
        env.kubectl().args([
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/servicemonitors.monitoring.coreos.com",
        ]),
        None,
    );
    // The namespaces that ci/watch-namespaces-values.yaml lists.
    for ns in ["signalman-ci-team-a", "signalman-ci-team-b"] {
        ensure_namespace(&world.client, ns).await;
    }
    let release = unique("dry");
    for set in value_sets() {
        let mut template = env.helm();
        // As `helm install` would render it here: in the admission versions this server serves.
        template
            .args(["template", &release])
            .arg(chart_dir())
            .args(["--namespace", &world.ns])
            .args(crate::policy::api_versions_args());
        if let Some(file) = &set {
            template.arg("-f").arg(file);
        }
        let rendered = run(&mut template, None);
        // Nothing is stored: the API server admits, validates (CRD schemas, RBAC escalation
        // checks, defaulting) and answers as if it had.
        let applied = try_run(
            env.kubectl().args(["apply", "--dry-run=server", "-f", "-"]),
            Some(&rendered),
        )
        .unwrap_or_else(|e| panic!("value set {set:?} refused by the API server:\n{e}"));
        let objects = rendered.matches("\nkind: ").count();
        let accepted = applied
            .lines()
            .filter(|l| l.contains("(server dry run)"))
            .count();
        eprintln!("value set {set:?}: {accepted} objects accepted by the API server");
        assert_eq!(accepted, objects, "{applied}");
        assert!(accepted >= 7, "{applied}");
    }
}

/// Installs the chart into the world's namespace; returns (release, fullname).
fn install(world: &World, prefix: &str, sets: &[&str]) -> (String, String) {
    let release = unique(prefix);
    let mut cmd = world.env.helm();
    cmd.args(["install", &release]).arg(chart_dir()).args([
        "--namespace",
        &world.ns,
        "--set",
        "crds.install=false",
        // The chart's admission policies would judge every test's signals (tests/it/policy.rs
        // installs them scoped to its own namespaces).
        "--set",
        "admission.enabled=false",
    ]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    run(&mut cmd, None);
    let fullname = format!("{release}-signalman");
    (release, fullname)
}

/// Every object of the release's manifest exists in the cluster; returns their names.
fn assert_every_object_exists(world: &World, release: &str) -> Vec<String> {
    let manifest = run(
        world
            .env
            .helm()
            .args(["get", "manifest", release, "--namespace", &world.ns]),
        None,
    );
    let objects = manifest.matches("\nkind: ").count();
    let found = run(
        world.env.kubectl().args(["get", "-f", "-", "-o", "name"]),
        Some(&manifest),
    );
    let names: Vec<String> = found.lines().map(str::to_string).collect();
    assert_eq!(names.len(), objects, "{manifest}\n---\n{found}");
    names
}

fn expect_forbidden<T: std::fmt::Debug>(what: &str, result: Result<T, kube::Error>) {
    match result {
        Err(kube::Error::Api(e)) if e.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

/// Runs an operator as the chart's ServiceAccount and has it deliver one WorkflowSignal.
async fn deliver_as(world: &World, sa_user: &str, lease: &str) {
    let env = world.env;
    let kubeconfig = impersonating_kubeconfig(env, sa_user);
    let swf = SwfWorld::new(env, &unique("chart")).await;
    let run_id = swf.start("chart-order").await;
    let identity = format!("{lease}-op");
    let operator = world.operator(
        &identity,
        &[
            (
                "SIGNALMAN_KUBECONFIG",
                kubeconfig.to_str().expect("utf-8 path"),
            ),
            ("SIGNALMAN_LEASE_NAME", lease),
        ],
    );
    world
        .create(&wf_signal(
            "via-chart",
            &swf.domain,
            "chart-order",
            Some("{\"ok\":true}"),
        ))
        .await;
    let status = world
        .wait_done::<WorkflowSignal>("via-chart", Duration::from_secs(60))
        .await;
    assert_eq!(
        status.phase,
        Some(Phase::Succeeded),
        "{status:?}\noperator log:\n{}",
        operator.log_text()
    );
    assert_eq!(
        swf.signals("chart-order", &run_id).await,
        vec![("approve".to_string(), Some("{\"ok\":true}".to_string()))],
        "exactly one signal"
    );
    // Events and the Lease were written with the chart's rights too.
    world
        .wait_event("via-chart", "Delivered", Duration::from_secs(10))
        .await;
    let lease_obj = Api::<Lease>::namespaced(world.client.clone(), &world.ns)
        .get(lease)
        .await
        .expect("the leader Lease");
    assert_eq!(
        lease_obj.spec.and_then(|s| s.holder_identity).as_deref(),
        Some(identity.as_str())
    );
    let log = operator.log_text();
    assert!(
        !log.contains("forbidden") && !log.contains("Forbidden"),
        "the operator hit RBAC refusals:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaced_install_is_enough_for_the_operator_and_no_more() {
    let world = World::new("chart-ns").await;
    let env = world.env;
    let (release, fullname) = install(
        &world,
        "smns",
        &[&format!("watchNamespaces={{{}}}", world.ns)],
    );
    let names = assert_every_object_exists(&world, &release);
    for expected in [
        format!("serviceaccount/{fullname}"),
        format!("deployment.apps/{fullname}"),
        format!("service/{fullname}-metrics"),
        format!("poddisruptionbudget.policy/{fullname}"),
        format!("role.rbac.authorization.k8s.io/{fullname}"),
        format!("rolebinding.rbac.authorization.k8s.io/{fullname}"),
        format!("role.rbac.authorization.k8s.io/{fullname}-leader-election"),
        format!("rolebinding.rbac.authorization.k8s.io/{fullname}-leader-election"),
    ] {
        assert!(names.contains(&expected), "{expected} not in {names:?}");
    }
    // Cluster-wide only what is cluster-scoped: reading SignalPolicies and namespace labels
    // (and the people's roles, which bind nobody).
    let mut cluster: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with("clusterrole"))
        .collect();
    cluster.sort();
    assert_eq!(
        cluster,
        [
            &format!("clusterrole.rbac.authorization.k8s.io/{fullname}-policies"),
            &format!("clusterrole.rbac.authorization.k8s.io/{fullname}-signal-author"),
            &format!("clusterrole.rbac.authorization.k8s.io/{fullname}-signal-viewer"),
            &format!("clusterrolebinding.rbac.authorization.k8s.io/{fullname}-policies"),
        ],
        "watching listed namespaces needs no other cluster-wide access: {names:?}"
    );

    let sa_user = format!("system:serviceaccount:{}:{fullname}", world.ns);
    deliver_as(&world, &sa_user, &fullname).await;

    // Outside the chart's RBAC: refused.
    let sa = env.client_as(&sa_user).await;
    let lp = ListParams::default();
    expect_forbidden(
        "list Secrets in the namespace",
        Api::<Secret>::namespaced(sa.clone(), &world.ns)
            .list(&lp)
            .await,
    );
    expect_forbidden(
        "list Secrets everywhere",
        Api::<Secret>::all(sa.clone()).list(&lp).await,
    );
    expect_forbidden(
        "list ConfigMaps",
        Api::<ConfigMap>::namespaced(sa.clone(), &world.ns)
            .list(&lp)
            .await,
    );
    expect_forbidden(
        "list WorkflowSignals in all namespaces",
        Api::<WorkflowSignal>::all(sa.clone()).list(&lp).await,
    );
    expect_forbidden(
        "list WorkflowSignals in an unwatched namespace",
        Api::<WorkflowSignal>::namespaced(sa.clone(), "default")
            .list(&lp)
            .await,
    );
    expect_forbidden(
        "create a WorkflowSignal (the operator cannot forge signals)",
        Api::<WorkflowSignal>::namespaced(sa.clone(), &world.ns)
            .create(&PostParams::default(), &wf_signal("forged", "d", "w", None))
            .await,
    );
    expect_forbidden(
        "get another Lease",
        Api::<Lease>::namespaced(sa.clone(), &world.ns)
            .get("someone-elses-lease")
            .await,
    );
    // Inside it: reading both kinds in the watched namespace.
    Api::<AutomationSignal>::namespaced(sa.clone(), &world.ns)
        .list(&lp)
        .await
        .expect("listing AutomationSignals as the chart's ServiceAccount");

    run(
        env.helm()
            .args(["uninstall", &release, "--namespace", &world.ns]),
        None,
    );
    let left = try_run(
        env.kubectl()
            .args(["get", "serviceaccount", &fullname, "-n", &world.ns]),
        None,
    );
    assert!(left.is_err(), "the ServiceAccount outlived the release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_wide_install_reads_every_namespace_and_nothing_else() {
    let world = World::new("chart-cluster").await;
    let env = world.env;
    let (release, fullname) = install(&world, "smcl", &[]);
    let names = assert_every_object_exists(&world, &release);
    for expected in [
        format!("clusterrole.rbac.authorization.k8s.io/{fullname}"),
        format!("clusterrolebinding.rbac.authorization.k8s.io/{fullname}"),
        format!("role.rbac.authorization.k8s.io/{fullname}-leader-election"),
    ] {
        assert!(names.contains(&expected), "{expected} not in {names:?}");
    }

    let sa_user = format!("system:serviceaccount:{}:{fullname}", world.ns);
    let sa = env.client_as(&sa_user).await;
    let lp = ListParams::default();
    // What watching all namespaces needs.
    Api::<WorkflowSignal>::all(sa.clone())
        .list(&lp)
        .await
        .expect("listing WorkflowSignals in all namespaces");
    Api::<AutomationSignal>::all(sa.clone())
        .list(&lp)
        .await
        .expect("listing AutomationSignals in all namespaces");
    expect_forbidden(
        "list Secrets everywhere",
        Api::<Secret>::all(sa.clone()).list(&lp).await,
    );
    expect_forbidden(
        "get a Secret in the release namespace",
        Api::<Secret>::namespaced(sa.clone(), &world.ns)
            .get("anything")
            .await,
    );
    expect_forbidden(
        "create a WorkflowSignal",
        Api::<WorkflowSignal>::namespaced(sa.clone(), &world.ns)
            .create(&PostParams::default(), &wf_signal("forged", "d", "w", None))
            .await,
    );
    expect_forbidden(
        "a Lease in another namespace",
        Api::<Lease>::namespaced(sa.clone(), "default")
            .get(&fullname)
            .await,
    );

    // The operator on the ClusterRole (restricted to this test's namespace, so that it leaves
    // the other tests' signals alone).
    deliver_as(&world, &sa_user, &fullname).await;

    run(
        env.helm()
            .args(["uninstall", &release, "--namespace", &world.ns]),
        None,
    );
    let left = try_run(env.kubectl().args(["get", "clusterrole", &fullname]), None);
    assert!(left.is_err(), "the ClusterRole outlived the release");
}

/// Kubernetes 1.33 to 1.35 as EKS runs them serve ValidatingAdmissionPolicies but no
/// MutatingAdmissionPolicies; here a 1.36 API server with that API turned off stands in for
/// them. The chart's defaults install there: the validating policies and no mutating ones,
/// NOTES saying what admission then leaves to the operator, and the validating policies in
/// force (a forged requested-by is refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_defaults_install_where_no_mutating_admission_policy_is_served() {
    let env = crate::common::env();
    let server = env
        .other_api_server(
            "no-map",
            "admissionregistration.k8s.io/v1/mutatingadmissionpolicies=false,admissionregistration.k8s.io/v1/mutatingadmissionpolicybindings=false",
            "ServiceAccount,MutatingAdmissionPolicy",
        )
        .expect("an API server without MutatingAdmissionPolicies");
    let served = run(
        server.kubectl().args([
            "api-resources",
            "--api-group=admissionregistration.k8s.io",
            "-o",
            "name",
        ]),
        None,
    );
    assert!(
        served.contains("validatingadmissionpolicies")
            && !served.contains("mutatingadmissionpolicies"),
        "{served}"
    );

    let notes = run(
        server
            .helm()
            .args(["install", "sm"])
            .arg(chart_dir())
            .args(["--namespace", "signalman", "--create-namespace"]),
        None,
    );
    assert!(
        notes.contains("No MutatingAdmissionPolicies were installed: this API server serves no"),
        "{notes}"
    );
    let manifest = run(
        server
            .helm()
            .args(["get", "manifest", "sm", "--namespace", "signalman"]),
        None,
    );
    assert!(
        !manifest.contains("kind: MutatingAdmissionPolicy"),
        "{manifest}"
    );
    let policies = run(
        server
            .kubectl()
            .args(["get", "validatingadmissionpolicies", "-o", "name"]),
        None,
    );
    for name in [
        "sm-signalman-requested-by",
        "sm-signalman-approved-by",
        "sm-signalman-status-writer",
    ] {
        assert!(
            policies.contains(&format!(
                "validatingadmissionpolicy.admissionregistration.k8s.io/{name}"
            )),
            "{name} missing: {policies}"
        );
    }

    // The validating policies are in force once the API server has loaded them.
    run(
        server.kubectl().args([
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/workflowsignals.signalman.dev",
        ]),
        None,
    );
    run(server.kubectl().args(["create", "namespace", "team"]), None);
    let forged = "apiVersion: signalman.dev/v1alpha1\nkind: WorkflowSignal\nmetadata:\n  name: forged\n  namespace: team\n  annotations:\n    signalman.dev/requested-by: someone-else\nspec:\n  domain: d\n  workflowId: w\n  signalName: approve\n";
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let refusal = loop {
        match try_run(server.kubectl().args(["create", "-f", "-"]), Some(forged)) {
            Err(e) => break e,
            Ok(_) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "a forged requested-by was accepted"
                );
                run(
                    server
                        .kubectl()
                        .args(["delete", "workflowsignal", "forged", "-n", "team"]),
                    None,
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    assert!(
        refusal.contains("the annotation signalman.dev/requested-by must be the requesting user"),
        "{refusal}"
    );
}
