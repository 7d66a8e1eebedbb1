//! The Helm chart, checked without a cluster: lint, what it renders with the value sets of
//! `charts/signalman/ci/`, least-privilege RBAC, the pod's security settings, the schema's
//! refusals, and that its CRDs are the generated ones. `tests/it/chart.rs` has the same value
//! sets accepted by the real API server and installs the chart.
//!
//! `charts/signalman/files/crds/` must be byte-identical to `crds/`. After regenerating the
//! CRDs run
//!
//! ```sh
//! cp crds/*.yaml charts/signalman/files/crds/
//! ```
//!
//! (or `UPDATE_CHART_CRDS=1 cargo test -p signalman --test chart`) and commit both.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::{json, Value};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart_dir() -> PathBuf {
    root().join("charts/signalman")
}

const RESYNC: &str = "cp crds/*.yaml charts/signalman/files/crds/   # or: UPDATE_CHART_CRDS=1 cargo test -p signalman --test chart";

fn helm() -> Command {
    let bin = signalman_testenv::env_home().join("bin/helm");
    assert!(
        bin.exists(),
        "{} is missing: run tests/env/setup.sh (scripts/test.sh does)",
        bin.display()
    );
    let home = std::env::temp_dir().join(format!("signalman-chart-test-{}", std::process::id()));
    let mut cmd = Command::new(bin);
    cmd.env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
    cmd
}

/// The value files of `charts/signalman/ci/` (the chart-testing convention), sorted.
fn ci_value_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart_dir().join("ci"))
        .expect("charts/signalman/ci")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.to_string_lossy().ends_with("-values.yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 5,
        "expected the ci value sets, found {files:?}"
    );
    files
}

/// What the API server of each Kubernetes minor serves of the admissionregistration.k8s.io
/// group by default, as Helm reads it from discovery (`group/version/Kind`): what `helm install`
/// sees, and `helm template --api-versions` is given. EKS turns on no beta API that upstream
/// leaves off, so the MutatingAdmissionPolicy beta of 1.34 and 1.35 is not there.
const KUBE_1_33: &[&str] = &[
    "admissionregistration.k8s.io/v1/MutatingWebhookConfiguration",
    "admissionregistration.k8s.io/v1/ValidatingWebhookConfiguration",
    "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy",
    "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicyBinding",
];
/// 1.34 and 1.35 serve the same by default.
const KUBE_1_35: &[&str] = KUBE_1_33;
/// 1.34 or 1.35 with the MutatingAdmissionPolicy feature gate and
/// `--runtime-config=admissionregistration.k8s.io/v1beta1=true` (not possible on EKS).
const KUBE_1_35_BETA: &[&str] = &[
    "admissionregistration.k8s.io/v1/MutatingWebhookConfiguration",
    "admissionregistration.k8s.io/v1/ValidatingWebhookConfiguration",
    "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy",
    "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicyBinding",
    "admissionregistration.k8s.io/v1beta1/MutatingAdmissionPolicy",
    "admissionregistration.k8s.io/v1beta1/MutatingAdmissionPolicyBinding",
];
/// 1.36: MutatingAdmissionPolicy is GA.
const KUBE_1_36: &[&str] = &[
    "admissionregistration.k8s.io/v1/MutatingWebhookConfiguration",
    "admissionregistration.k8s.io/v1/ValidatingWebhookConfiguration",
    "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy",
    "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicyBinding",
    "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy",
    "admissionregistration.k8s.io/v1/MutatingAdmissionPolicyBinding",
];

/// `helm template` of the chart as release `t` in namespace `ops`; Err(stderr) when refused.
fn try_render(sets: &[&str], files: &[&Path]) -> Result<Vec<Value>, String> {
    try_render_for(&[], sets, files)
}

/// `helm template` as for an API server that serves `api_versions` (`--api-versions`).
fn try_render_for(
    api_versions: &[&str],
    sets: &[&str],
    files: &[&Path],
) -> Result<Vec<Value>, String> {
    let mut cmd = helm();
    cmd.args(["template", "t"])
        .arg(chart_dir())
        .args(["--namespace", "ops"]);
    for v in api_versions {
        cmd.args(["--api-versions", v]);
    }
    for s in sets {
        cmd.args(["--set", s]);
    }
    for f in files {
        cmd.arg("-f").arg(f);
    }
    let out = cmd.output().expect("running helm");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(parse_docs(&String::from_utf8_lossy(&out.stdout)))
}

fn render(sets: &[&str], files: &[&Path]) -> Vec<Value> {
    try_render(sets, files).unwrap_or_else(|e| panic!("helm template {sets:?} {files:?}: {e}"))
}

fn render_for(api_versions: &[&str], sets: &[&str]) -> Vec<Value> {
    try_render_for(api_versions, sets, &[])
        .unwrap_or_else(|e| panic!("helm template {api_versions:?} {sets:?}: {e}"))
}

fn parse_docs(yaml: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).expect("rendered YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn kinds(objs: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = objs
        .iter()
        .map(|o| {
            format!(
                "{}/{}@{}",
                o["kind"].as_str().unwrap_or("?"),
                o["metadata"]["name"].as_str().unwrap_or("?"),
                o["metadata"]["namespace"].as_str().unwrap_or("-")
            )
        })
        .collect();
    k.sort();
    k
}

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {:?}", kinds(objs)))
}

fn all_of<'a>(objs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objs.iter().filter(|o| o["kind"] == kind).collect()
}

fn container(objs: &[Value]) -> &Value {
    &find(objs, "Deployment", "t-signalman")["spec"]["template"]["spec"]["containers"][0]
}

/// The container's env as name → value (or "fieldRef:<path>").
fn env_of(objs: &[Value]) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for e in container(objs)["env"].as_array().expect("env") {
        let name = e["name"].as_str().expect("name").to_string();
        let value = match (&e["value"], &e["valueFrom"]["fieldRef"]["fieldPath"]) {
            (Value::String(v), _) => v.clone(),
            (_, Value::String(p)) => format!("fieldRef:{p}"),
            _ => "?".to_string(),
        };
        assert!(
            env.insert(name.clone(), value).is_none(),
            "{name} appears twice"
        );
    }
    env
}

fn crd_files(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).expect("reading a CRD"),
            )
        })
        .collect()
}

#[test]
fn chart_crds_are_the_generated_crds() {
    let generated = crd_files(&root().join("crds"));
    let chart = chart_dir().join("files/crds");
    if std::env::var_os("UPDATE_CHART_CRDS").is_some_and(|v| v != "0" && !v.is_empty()) {
        for (name, _) in crd_files(&chart) {
            std::fs::remove_file(chart.join(name)).unwrap();
        }
        for (name, yaml) in &generated {
            std::fs::write(chart.join(name), yaml).unwrap();
        }
    }
    let copied = crd_files(&chart);
    assert!(!generated.is_empty(), "crds/ is empty");
    let mut drift = Vec::new();
    for (name, yaml) in &generated {
        match copied.get(name) {
            Some(c) if c == yaml => {}
            Some(_) => drift.push(format!(
                "charts/signalman/files/crds/{name} differs from crds/{name}"
            )),
            None => drift.push(format!("charts/signalman/files/crds/{name} is missing")),
        }
    }
    for name in copied.keys().filter(|n| !generated.contains_key(*n)) {
        drift.push(format!(
            "charts/signalman/files/crds/{name} is not in crds/ (delete it)"
        ));
    }
    assert!(
        drift.is_empty(),
        "the chart's CRDs have drifted from the generated ones:\n  {}\nresync them with:\n  {RESYNC}\n",
        drift.join("\n  ")
    );
}

fn numbers_as_f64(v: &Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64().expect("a number")),
        Value::Array(a) => Value::Array(a.iter().map(numbers_as_f64).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), numbers_as_f64(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[test]
fn rendered_crds_are_the_generated_crds_kept_on_uninstall() {
    let objs = render(&[], &[]);
    let crds = all_of(&objs, "CustomResourceDefinition");
    let generated = crd_files(&root().join("crds"));
    assert_eq!(crds.len(), generated.len(), "{:?}", kinds(&objs));
    for yaml in generated.values() {
        let want: Value = serde_norway::from_str(yaml).expect("generated CRD");
        let name = want["metadata"]["name"].as_str().unwrap();
        let got = find(&objs, "CustomResourceDefinition", name);
        // Same spec, value for value (the template re-serializes it: `minimum: 0.0` comes out
        // as `0`, the same float64 to the API server).
        assert_eq!(
            numbers_as_f64(&got["spec"]),
            numbers_as_f64(&want["spec"]),
            "{name}: rendered spec differs"
        );
        assert_eq!(got["apiVersion"], want["apiVersion"]);
        assert_eq!(
            got["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
            "{name} must be kept on uninstall"
        );
        assert!(
            got["metadata"].get("namespace").is_none(),
            "a CRD is cluster-scoped"
        );
    }
    let objs = render(&["crds.keep=false"], &[]);
    for crd in all_of(&objs, "CustomResourceDefinition") {
        assert!(crd["metadata"]["annotations"]["helm.sh/resource-policy"].is_null());
    }
    let objs = render(&["crds.install=false"], &[]);
    assert!(
        all_of(&objs, "CustomResourceDefinition").is_empty(),
        "crds.install=false still renders CRDs"
    );
}

#[test]
fn helm_lint_strict_is_clean_with_every_value_set() {
    let files = ci_value_files();
    let mut sets: Vec<Option<&PathBuf>> = vec![None];
    sets.extend(files.iter().map(Some));
    for file in sets {
        let mut cmd = helm();
        cmd.args(["lint", "--strict"]).arg(chart_dir());
        if let Some(f) = file {
            cmd.arg("-f").arg(f);
        }
        let out = cmd.output().expect("running helm lint");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && !text.contains("[WARNING]") && !text.contains("[ERROR]"),
            "helm lint --strict {file:?}:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn every_value_set_renders() {
    for file in ci_value_files() {
        let objs = render(&[], &[&file]);
        eprintln!("{}: {:?}", file.display(), kinds(&objs));
        assert!(
            !all_of(&objs, "Deployment").is_empty(),
            "{}: no Deployment",
            file.display()
        );
    }
}

#[test]
fn defaults_create_every_object() {
    // On Kubernetes 1.36, which serves every kind the chart can create.
    let objs = render_for(KUBE_1_36, &[]);
    assert_eq!(
        kinds(&objs),
        vec![
            "ClusterRole/t-signalman-policies@-",
            "ClusterRole/t-signalman-signal-author@-",
            "ClusterRole/t-signalman-signal-viewer@-",
            "ClusterRole/t-signalman@-",
            "ClusterRoleBinding/t-signalman-policies@-",
            "ClusterRoleBinding/t-signalman@-",
            "CustomResourceDefinition/automationsignals.signalman.dev@-",
            "CustomResourceDefinition/signalpolicies.signalman.dev@-",
            "CustomResourceDefinition/signalreceipts.signalman.dev@-",
            "CustomResourceDefinition/workflowsignals.signalman.dev@-",
            "Deployment/t-signalman@ops",
            "MutatingAdmissionPolicy/t-signalman-policy-mark@-",
            "MutatingAdmissionPolicy/t-signalman-requested-by@-",
            "MutatingAdmissionPolicyBinding/t-signalman-policy-mark@-",
            "MutatingAdmissionPolicyBinding/t-signalman-requested-by@-",
            "PodDisruptionBudget/t-signalman@ops",
            "Role/t-signalman-leader-election@ops",
            "Role/t-signalman-receipts@ops",
            "RoleBinding/t-signalman-leader-election@ops",
            "RoleBinding/t-signalman-receipts@ops",
            "Service/t-signalman-metrics@ops",
            "ServiceAccount/t-signalman@ops",
            "ValidatingAdmissionPolicy/t-signalman-approved-by@-",
            "ValidatingAdmissionPolicy/t-signalman-requested-by@-",
            "ValidatingAdmissionPolicy/t-signalman-signal-policy-check@-",
            "ValidatingAdmissionPolicy/t-signalman-signal-policy@-",
            "ValidatingAdmissionPolicy/t-signalman-status-writer@-",
            "ValidatingAdmissionPolicyBinding/t-signalman-approved-by@-",
            "ValidatingAdmissionPolicyBinding/t-signalman-requested-by@-",
            "ValidatingAdmissionPolicyBinding/t-signalman-signal-policy-check@-",
            "ValidatingAdmissionPolicyBinding/t-signalman-signal-policy@-",
            "ValidatingAdmissionPolicyBinding/t-signalman-status-writer@-",
        ]
    );
    let pdb = find(&objs, "PodDisruptionBudget", "t-signalman");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    let deployment = find(&objs, "Deployment", "t-signalman");
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    let svc = find(&objs, "Service", "t-signalman-metrics");
    assert_eq!(
        svc["spec"]["ports"],
        json!([{"name": "http-metrics", "port": 8080, "targetPort": "http-metrics", "protocol": "TCP"}])
    );
    assert_eq!(
        svc["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );

    // One replica: no PDB (minAvailable 1 would block every node drain).
    let objs = render(&["replicaCount=1"], &[]);
    assert!(all_of(&objs, "PodDisruptionBudget").is_empty());
}

#[test]
fn the_pod_is_locked_down_and_elects_a_leader() {
    let objs = render(&[], &[]);
    let deployment = find(&objs, "Deployment", "t-signalman");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "t-signalman");
    assert_eq!(pod["terminationGracePeriodSeconds"], 30);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = container(&objs);
    assert_eq!(
        c["image"],
        format!(
            "ghcr.io/signalman-dev/signalman:{}",
            env!("CARGO_PKG_VERSION")
        )
    );
    assert_eq!(c["args"], json!(["run"]));
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["runAsUser"], 65532);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(
        c["ports"],
        json!([{"name": "http-metrics", "containerPort": 8080, "protocol": "TCP"}])
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "http-metrics"})
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "http-metrics"})
    );
    assert!(c["resources"]["requests"]["memory"].is_string());
    assert!(c["resources"]["limits"]["memory"].is_string());

    let env = env_of(&objs);
    assert_eq!(env["POD_NAME"], "fieldRef:metadata.name");
    assert_eq!(env["POD_NAMESPACE"], "fieldRef:metadata.namespace");
    assert_eq!(env["SIGNALMAN_LEADER_ELECTION"], "true");
    assert_eq!(env["SIGNALMAN_LEASE_NAME"], "t-signalman");
    assert_eq!(env["SIGNALMAN_METRICS_BIND_ADDRESS"], "0.0.0.0:8080");
    assert!(
        !env.contains_key("SIGNALMAN_NAMESPACES"),
        "all namespaces by default"
    );
    assert!(!env.contains_key("SIGNALMAN_REGION"));
    // Every SIGNALMAN_ variable the chart sets is a flag the binary knows.
    let help = Command::new(env!("CARGO_BIN_EXE_signalman"))
        .args(["run", "--help"])
        .output()
        .expect("signalman run --help");
    let help = String::from_utf8_lossy(&help.stdout);
    for name in env.keys() {
        assert!(
            help.contains(&format!("[env: {name}=")),
            "{name} is not a flag of `signalman run`"
        );
    }
}

/// The operator believes signalman.dev/requested-by only where the chart's own binding guarded
/// it: it is told that binding, may read it and its policy (and no other), and is told to
/// believe nothing when the chart installs no admission.
#[test]
fn the_operator_takes_the_requester_only_from_the_charts_requested_by_binding() {
    let objs = render(&[], &[]);
    assert_eq!(
        env_of(&objs)["SIGNALMAN_REQUESTER_SOURCE"],
        "binding=t-signalman-requested-by"
    );
    let binding = find(
        &objs,
        "ValidatingAdmissionPolicyBinding",
        "t-signalman-requested-by",
    );
    assert_eq!(binding["spec"]["policyName"], "t-signalman-requested-by");
    assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
    let rules = &find(&objs, "ClusterRole", "t-signalman-policies")["rules"];
    let admission: Vec<&Value> = rules
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["apiGroups"] == json!(["admissionregistration.k8s.io"]))
        .collect();
    assert_eq!(
        admission,
        vec![&json!({
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["validatingadmissionpolicybindings", "validatingadmissionpolicies"],
            "resourceNames": ["t-signalman-requested-by"],
            "verbs": ["get"],
        })]
    );

    let off = render(&["admission.enabled=false"], &[]);
    assert_eq!(env_of(&off)["SIGNALMAN_REQUESTER_SOURCE"], "ignore");
    let rules = &find(&off, "ClusterRole", "t-signalman-policies")["rules"];
    assert!(
        !rules.to_string().contains("admissionregistration"),
        "{rules}"
    );
}

#[test]
fn values_reach_the_operator() {
    let objs = render(
        &[
            "watchNamespaces={payments,platform}",
            "aws.region=eu-west-1",
            "aws.endpoints.swf=http://swf.local:4566",
            "aws.endpoints.ssm=http://ssm.local:4566",
            "aws.endpoints.sts=http://sts.local:4566",
            "controller.concurrency=4",
            "rateLimits.swf.perSecond=10",
            "rateLimits.swf.burst=100",
            "rateLimits.ssm.perSecond=1.5",
            "rateLimits.ssm.burst=2",
            "logging.level=debug",
            "logging.format=json",
            "metrics.port=9090",
            "extraEnv[0].name=SIGNALMAN_LOG_LEVEL",
            "extraEnv[0].value=trace",
            "extraEnv[1].name=FOO",
            "extraEnv[1].value=bar",
            "image.tag=v9",
            "fullnameOverride=ops-signalman",
        ],
        &[],
    );
    let c =
        &find(&objs, "Deployment", "ops-signalman")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "ghcr.io/signalman-dev/signalman:v9");
    let mut env = BTreeMap::new();
    for e in c["env"].as_array().unwrap() {
        let v = e["value"].as_str().unwrap_or("(ref)").to_string();
        assert!(env
            .insert(e["name"].as_str().unwrap().to_string(), v)
            .is_none());
    }
    for (k, v) in [
        ("SIGNALMAN_NAMESPACES", "payments,platform"),
        ("SIGNALMAN_REGION", "eu-west-1"),
        ("AWS_ENDPOINT_URL_SWF", "http://swf.local:4566"),
        ("AWS_ENDPOINT_URL_SSM", "http://ssm.local:4566"),
        ("AWS_ENDPOINT_URL_STS", "http://sts.local:4566"),
        ("SIGNALMAN_CONCURRENCY", "4"),
        ("SIGNALMAN_SWF_RATE", "10"),
        ("SIGNALMAN_SWF_BURST", "100"),
        ("SIGNALMAN_SSM_RATE", "1.5"),
        ("SIGNALMAN_SSM_BURST", "2"),
        ("SIGNALMAN_LOG_LEVEL", "trace"),
        ("SIGNALMAN_LOG_FORMAT", "json"),
        ("SIGNALMAN_METRICS_BIND_ADDRESS", "0.0.0.0:9090"),
        ("SIGNALMAN_LEASE_NAME", "ops-signalman"),
        ("FOO", "bar"),
    ] {
        assert_eq!(env.get(k).map(String::as_str), Some(v), "{k}");
    }
    assert!(!env.contains_key("AWS_ENDPOINT_URL"));
    assert_eq!(c["ports"][0]["containerPort"], 9090);

    let irsa = render(
        &["serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::123456789012:role/signalman"],
        &[],
    );
    assert_eq!(
        find(&irsa, "ServiceAccount", "t-signalman")["metadata"]["annotations"],
        json!({"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/signalman"})
    );

    let monitored = render(&["metrics.serviceMonitor.enabled=true"], &[]);
    let sm = find(&monitored, "ServiceMonitor", "t-signalman");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "http-metrics");
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
    assert!(all_of(&render(&[], &[]), "ServiceMonitor").is_empty());
}

/// The rules for the two kinds, their status and Events: exactly the verbs the operator uses
/// (watch and read, delete after the TTL, replace_status = update, events.k8s.io Events).
fn signal_rules() -> Value {
    json!([
        {"apiGroups": ["signalman.dev"], "resources": ["workflowsignals", "automationsignals"], "verbs": ["get", "list", "watch", "delete"]},
        {"apiGroups": ["signalman.dev"], "resources": ["workflowsignals/status", "automationsignals/status"], "verbs": ["update"]},
        {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    ])
}

/// The cluster-wide rules of release `t` (with its admission policies): the policies, the
/// namespaces' labels, and its own requested-by binding and policy, by name.
fn policy_rules() -> Value {
    json!([
        {"apiGroups": ["signalman.dev"], "resources": ["signalpolicies"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["signalman.dev"], "resources": ["signalpolicies/status"], "verbs": ["update"]},
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["validatingadmissionpolicybindings", "validatingadmissionpolicies"], "resourceNames": ["t-signalman-requested-by"], "verbs": ["get"]},
    ])
}

fn lease_rules(name: &str) -> Value {
    json!([
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": [name], "verbs": ["get", "update"]},
    ])
}

#[test]
fn rbac_is_least_privilege() {
    // All namespaces: one ClusterRole, and the Lease only in the release namespace.
    let objs = render(&[], &[]);
    assert_eq!(
        find(&objs, "ClusterRole", "t-signalman")["rules"],
        signal_rules()
    );
    let crb = find(&objs, "ClusterRoleBinding", "t-signalman");
    assert_eq!(crb["roleRef"]["name"], "t-signalman");
    assert_eq!(
        crb["subjects"],
        json!([{"kind": "ServiceAccount", "name": "t-signalman", "namespace": "ops"}])
    );
    let lease = find(&objs, "Role", "t-signalman-leader-election");
    assert_eq!(lease["metadata"]["namespace"], "ops");
    assert_eq!(lease["rules"], lease_rules("t-signalman"));
    let receipts = find(&objs, "Role", "t-signalman-receipts");
    assert_eq!(receipts["metadata"]["namespace"], "ops");
    assert_eq!(
        receipts["rules"],
        json!([{"apiGroups": ["signalman.dev"], "resources": ["signalreceipts"], "verbs": ["get", "list", "create", "patch", "delete"]}])
    );
    let text = serde_json::to_string(&objs).unwrap();
    assert!(!text.contains("secrets"), "no rule may name secrets");
    assert!(!text.contains("\"*\""), "no wildcard rules");

    assert_eq!(
        find(&objs, "ClusterRole", "t-signalman-policies")["rules"],
        policy_rules()
    );
    assert_eq!(
        find(&objs, "ClusterRoleBinding", "t-signalman-policies")["subjects"],
        crb["subjects"]
    );

    // Listed namespaces: a Role in each; cluster-wide only the cluster-scoped SignalPolicies
    // and the namespaces' labels (and the people's roles, bound to nobody).
    let objs = render(&["watchNamespaces={payments,platform}"], &[]);
    let names = |kind: &str| -> Vec<String> {
        all_of(&objs, kind)
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names("ClusterRole"),
        [
            "t-signalman-policies",
            "t-signalman-signal-author",
            "t-signalman-signal-viewer"
        ]
    );
    assert_eq!(names("ClusterRoleBinding"), ["t-signalman-policies"]);
    for ns in ["payments", "platform"] {
        let role = all_of(&objs, "Role")
            .into_iter()
            .find(|r| r["metadata"]["name"] == "t-signalman" && r["metadata"]["namespace"] == ns)
            .unwrap_or_else(|| panic!("no Role in {ns}: {:?}", kinds(&objs)));
        assert_eq!(role["rules"], signal_rules());
        let rb = all_of(&objs, "RoleBinding")
            .into_iter()
            .find(|r| r["metadata"]["name"] == "t-signalman" && r["metadata"]["namespace"] == ns)
            .unwrap_or_else(|| panic!("no RoleBinding in {ns}"));
        assert_eq!(
            rb["subjects"],
            json!([{"kind": "ServiceAccount", "name": "t-signalman", "namespace": "ops"}])
        );
    }
    assert_eq!(
        find(&objs, "Role", "t-signalman-leader-election")["metadata"]["namespace"],
        "ops"
    );

    // No election, no Lease rights; no RBAC at all when asked.
    let objs = render(&["leaderElection.enabled=false", "replicaCount=1"], &[]);
    assert!(!kinds(&objs).iter().any(|k| k.contains("leader-election")));
    assert_eq!(env_of(&objs)["SIGNALMAN_LEADER_ELECTION"], "false");
    let objs = render(&["rbac.create=false", "roles.create=false"], &[]);
    assert!(!kinds(&objs)
        .iter()
        .any(|k| k.starts_with("Role") || k.starts_with("Cluster")));
}

/// People's roles: authors and viewers aggregated into the built-in roles; neither reaches
/// status, receipts or policies.
#[test]
fn people_roles_aggregate_and_never_touch_status() {
    let objs = render(&[], &[]);
    let author = find(&objs, "ClusterRole", "t-signalman-signal-author");
    let labels = &author["metadata"]["labels"];
    assert_eq!(
        labels["rbac.authorization.k8s.io/aggregate-to-edit"],
        "true"
    );
    assert_eq!(
        labels["rbac.authorization.k8s.io/aggregate-to-admin"],
        "true"
    );
    assert_eq!(
        author["rules"],
        json!([{"apiGroups": ["signalman.dev"], "resources": ["workflowsignals", "automationsignals"], "verbs": ["create", "get", "list", "watch", "delete"]}])
    );
    let viewer = find(&objs, "ClusterRole", "t-signalman-signal-viewer");
    assert_eq!(
        viewer["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"],
        "true"
    );
    assert_eq!(
        viewer["rules"],
        json!([{"apiGroups": ["signalman.dev"], "resources": ["workflowsignals", "automationsignals"], "verbs": ["get", "list", "watch"]}])
    );
    for role in [author, viewer] {
        let text = role["rules"].to_string();
        for word in [
            "status",
            "signalreceipts",
            "signalpolicies",
            "update",
            "patch",
        ] {
            assert!(!text.contains(word), "{word} in {text}");
        }
    }
    let objs = render(&["roles.create=false"], &[]);
    assert!(!kinds(&objs).iter().any(|k| k.contains("signal-author")));
}

/// The admission policies: what they match, the operator's ServiceAccount as the only status
/// writer, the namespace selector and the default region reaching the CEL, and the mutating
/// ones left out when the API server lacks them.
#[test]
fn admission_policies_render_from_values() {
    let objs = render_for(
        KUBE_1_36,
        &[
            "aws.region=eu-west-1",
            "admission.namespaceSelector.matchLabels.tenant=yes",
            "admission.statusWriters={break-glass}",
        ],
    );
    for b in all_of(&objs, "ValidatingAdmissionPolicyBinding")
        .into_iter()
        .chain(all_of(&objs, "MutatingAdmissionPolicyBinding"))
    {
        assert_eq!(
            b["spec"]["matchResources"]["namespaceSelector"],
            json!({"matchLabels": {"tenant": "yes"}}),
            "{b}"
        );
    }
    let status = find(
        &objs,
        "ValidatingAdmissionPolicy",
        "t-signalman-status-writer",
    );
    assert_eq!(
        status["spec"]["matchConstraints"]["resourceRules"][0]["resources"],
        json!(["workflowsignals/status", "automationsignals/status"])
    );
    let rule = status["spec"]["validations"][0]["expression"]
        .as_str()
        .unwrap();
    assert_eq!(
        rule,
        "request.userInfo.username in [\"system:serviceaccount:ops:t-signalman\",\"break-glass\"]"
    );
    let mark = find(&objs, "MutatingAdmissionPolicy", "t-signalman-policy-mark");
    assert_eq!(mark["spec"]["paramKind"]["kind"], "SignalPolicy");
    let cel = mark["spec"]["mutations"][0]["applyConfiguration"]["expression"]
        .as_str()
        .unwrap();
    assert!(
        cel.contains("'eu-west-1'"),
        "the default region reaches the CEL: {cel}"
    );
    assert_eq!(
        find(
            &objs,
            "MutatingAdmissionPolicyBinding",
            "t-signalman-policy-mark"
        )["spec"]["paramRef"],
        json!({"selector": {}, "parameterNotFoundAction": "Allow"})
    );
    assert_eq!(
        find(
            &objs,
            "ValidatingAdmissionPolicyBinding",
            "t-signalman-signal-policy-check"
        )["spec"]["paramRef"],
        json!({"selector": {}, "parameterNotFoundAction": "Allow"})
    );

    // The annotations the operator reads are the ones the policies stamp.
    let text = serde_json::to_string(&objs).unwrap();
    for key in [
        signalman::api::REQUESTED_BY_ANNOTATION,
        signalman::api::ADMITTED_BY_ANNOTATION,
        signalman::api::APPROVED_BY_ANNOTATION,
    ] {
        assert!(text.contains(key), "{key} is not stamped by the chart");
    }

    // Without MutatingAdmissionPolicies: no stamping and no policy check (it needs the mark);
    // a create without the annotation is then accepted by the requested-by policy.
    let objs = render_for(KUBE_1_36, &["admission.mutatingPolicies=false"]);
    assert!(all_of(&objs, "MutatingAdmissionPolicy").is_empty());
    assert!(!kinds(&objs).iter().any(|k| k.contains("signal-policy")));
    let rb = find(
        &objs,
        "ValidatingAdmissionPolicy",
        "t-signalman-requested-by",
    );
    assert!(rb["spec"]["validations"][0]["expression"]
        .as_str()
        .unwrap()
        .contains("variables.now == ''"));
    // Watching listed namespaces: admission judges those only (another release's operator may
    // write the status of the others); all namespaces by default.
    let objs = render(&["watchNamespaces={payments,platform}"], &[]);
    for b in all_of(&objs, "ValidatingAdmissionPolicyBinding") {
        assert_eq!(
            b["spec"]["matchResources"]["namespaceSelector"],
            json!({"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["payments", "platform"]}]}),
            "{b}"
        );
    }
    let objs = render(&[], &[]);
    for b in all_of(&objs, "ValidatingAdmissionPolicyBinding") {
        assert_eq!(
            b["spec"]["matchResources"]["namespaceSelector"],
            json!({}),
            "{b}"
        );
    }
    let objs = render(&["admission.enabled=false"], &[]);
    assert!(!kinds(&objs).iter().any(|k| k.contains("AdmissionPolicy")));
}

/// CEL as one line: the chart folds long expressions over several (YAML keeps some breaks).
fn squash(cel: &str) -> String {
    cel.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `group/version/Kind` of each rendered admissionregistration.k8s.io object, with its name.
fn admission_objects(objs: &[Value]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = objs
        .iter()
        .filter(|o| {
            o["apiVersion"]
                .as_str()
                .is_some_and(|a| a.starts_with("admissionregistration.k8s.io/"))
        })
        .map(|o| {
            (
                format!(
                    "{}/{}",
                    o["apiVersion"].as_str().unwrap(),
                    o["kind"].as_str().unwrap()
                ),
                o["metadata"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn names_of(objs: &[Value], kind: &str) -> Vec<String> {
    let mut v: Vec<String> = all_of(objs, kind)
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// The chart installs with its defaults on every Kubernetes minor EKS supports (1.33 to 1.36):
/// each admission object is of a kind, in a version, that the API server serves. The
/// MutatingAdmissionPolicies are v1 where served (1.36), else v1beta1 where served (1.34 and
/// 1.35 with the beta turned on), else left out, and with them the policy check that needs
/// their mark; the ValidatingAdmissionPolicies (v1 since 1.30) are always there.
#[test]
fn admission_api_versions_follow_what_the_api_server_serves() {
    let validating_always = [
        "t-signalman-approved-by",
        "t-signalman-requested-by",
        "t-signalman-status-writer",
    ];
    let mutating = ["t-signalman-policy-mark", "t-signalman-requested-by"];
    for (minor, served, map_version) in [
        ("1.33", KUBE_1_33, None),
        ("1.34 and 1.35", KUBE_1_35, None),
        ("1.34 and 1.35, beta on", KUBE_1_35_BETA, Some("v1beta1")),
        ("1.36", KUBE_1_36, Some("v1")),
    ] {
        let objs = render_for(served, &[]);
        for (gvk, name) in admission_objects(&objs) {
            assert!(
                served.contains(&gvk.as_str()),
                "Kubernetes {minor}: {gvk} {name} is not served"
            );
        }
        let vaps = names_of(&objs, "ValidatingAdmissionPolicy");
        for name in validating_always {
            assert!(vaps.contains(&name.to_string()), "{minor}: {vaps:?}");
        }
        assert_eq!(
            names_of(&objs, "ValidatingAdmissionPolicy"),
            names_of(&objs, "ValidatingAdmissionPolicyBinding"),
            "{minor}"
        );
        for o in all_of(&objs, "ValidatingAdmissionPolicy") {
            assert_eq!(
                o["apiVersion"], "admissionregistration.k8s.io/v1",
                "{minor}"
            );
        }
        let requested_by = find(
            &objs,
            "ValidatingAdmissionPolicy",
            "t-signalman-requested-by",
        );
        let on_create = requested_by["spec"]["validations"][0]["expression"]
            .as_str()
            .unwrap();
        match map_version {
            Some(v) => {
                assert_eq!(
                    names_of(&objs, "MutatingAdmissionPolicy"),
                    mutating,
                    "{minor}"
                );
                assert_eq!(
                    names_of(&objs, "MutatingAdmissionPolicyBinding"),
                    mutating,
                    "{minor}"
                );
                for o in all_of(&objs, "MutatingAdmissionPolicy")
                    .into_iter()
                    .chain(all_of(&objs, "MutatingAdmissionPolicyBinding"))
                {
                    assert_eq!(
                        o["apiVersion"],
                        format!("admissionregistration.k8s.io/{v}"),
                        "{minor}"
                    );
                }
                assert!(vaps.contains(&"t-signalman-signal-policy".to_string()));
                assert!(vaps.contains(&"t-signalman-signal-policy-check".to_string()));
                // The stamp is then required on create.
                assert!(!on_create.contains("variables.now == ''"), "{on_create}");
            }
            None => {
                assert!(
                    all_of(&objs, "MutatingAdmissionPolicy").is_empty()
                        && all_of(&objs, "MutatingAdmissionPolicyBinding").is_empty(),
                    "{minor}: {:?}",
                    kinds(&objs)
                );
                // No mark, no policy check at admission (the operator still checks).
                assert_eq!(vaps, validating_always, "{minor}");
                assert!(on_create.contains("variables.now == ''"), "{on_create}");
            }
        }
    }
    // The beta is the same policy as the GA one, field for field.
    let ga = render_for(KUBE_1_36, &[]);
    let beta = render_for(KUBE_1_35_BETA, &[]);
    for kind in ["MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding"] {
        for name in mutating {
            assert_eq!(
                find(&ga, kind, name)["spec"],
                find(&beta, kind, name)["spec"],
                "{kind} {name}"
            );
        }
    }

    // helm template without a cluster knows group versions, no kinds: the validating policies
    // in v1 (every Kubernetes signalman supports serves it), the mutating ones only when named.
    let offline = render(&[], &[]);
    assert_eq!(
        names_of(&offline, "ValidatingAdmissionPolicy"),
        validating_always
    );
    assert!(all_of(&offline, "MutatingAdmissionPolicy").is_empty());
    for (named, version) in [
        (
            "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy",
            "v1",
        ),
        (
            "admissionregistration.k8s.io/v1beta1/MutatingAdmissionPolicy",
            "v1beta1",
        ),
    ] {
        let objs = render_for(&[named], &[]);
        assert_eq!(names_of(&objs, "MutatingAdmissionPolicy"), mutating);
        for o in all_of(&objs, "MutatingAdmissionPolicy") {
            assert_eq!(
                o["apiVersion"],
                format!("admissionregistration.k8s.io/{version}")
            );
        }
        for o in all_of(&objs, "ValidatingAdmissionPolicy") {
            assert_eq!(o["apiVersion"], "admissionregistration.k8s.io/v1");
        }
        assert!(names_of(&objs, "ValidatingAdmissionPolicy")
            .contains(&"t-signalman-signal-policy".to_string()));
    }
    // Both named: the GA one.
    let both = render_for(
        &[
            "admissionregistration.k8s.io/v1beta1/MutatingAdmissionPolicy",
            "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy",
        ],
        &[],
    );
    assert_eq!(
        find(&both, "MutatingAdmissionPolicy", "t-signalman-policy-mark")["apiVersion"],
        "admissionregistration.k8s.io/v1"
    );
    // An API server whose kinds are known and serve no ValidatingAdmissionPolicy: none of it.
    let objs = render_for(
        &["admissionregistration.k8s.io/v1/ValidatingWebhookConfiguration"],
        &[],
    );
    assert!(admission_objects(&objs).is_empty(), "{:?}", kinds(&objs));
    // admission.mutatingPolicies=false leaves them out where they are served.
    let objs = render_for(KUBE_1_36, &["admission.mutatingPolicies=false"]);
    assert!(all_of(&objs, "MutatingAdmissionPolicy").is_empty());
}

/// A copy of the chart whose NOTES.txt also renders as a ConfigMap, so that `helm template`
/// (which leaves NOTES.txt out) shows it for any `--api-versions`; removed on drop.
struct NotesChart(PathBuf);

impl NotesChart {
    fn new() -> NotesChart {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "signalman-notes-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        copy_dir(&chart_dir(), &dir);
        // Files under templates/ are not readable through .Files: a copy at the root is.
        std::fs::copy(
            dir.join("templates/NOTES.txt"),
            dir.join("notes-under-test.txt"),
        )
        .expect("copying NOTES.txt");
        std::fs::write(
            dir.join("templates/notes-under-test.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes-under-test\ndata:\n  notes: {{ tpl (.Files.Get \"notes-under-test.txt\") . | toJson }}\n",
        )
        .expect("writing the wrapper");
        NotesChart(dir)
    }

    /// The NOTES as `helm install` would print them on an API server serving `api_versions`.
    fn notes(&self, api_versions: &[&str], sets: &[&str]) -> String {
        let mut cmd = helm();
        cmd.args(["template", "t"]).arg(&self.0).args([
            "--namespace",
            "ops",
            "--show-only",
            "templates/notes-under-test.yaml",
        ]);
        for v in api_versions {
            cmd.args(["--api-versions", v]);
        }
        for s in sets {
            cmd.args(["--set", s]);
        }
        let out = cmd.output().expect("running helm");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let docs = parse_docs(&String::from_utf8_lossy(&out.stdout));
        docs[0]["data"]["notes"]
            .as_str()
            .expect("the notes")
            .to_string()
    }
}

impl Drop for NotesChart {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("{}: {e}", to.display()));
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target)
                .unwrap_or_else(|e| panic!("{}: {e}", entry.path().display()));
        }
    }
}

/// Where no MutatingAdmissionPolicy API is served, the NOTES say what admission then does not
/// enforce (the SignalPolicy check, the requested-by stamp) and that the operator still
/// enforces the policies; where it is, they say nothing of the kind.
#[test]
fn notes_say_what_admission_leaves_out_without_mutating_policies() {
    let chart = NotesChart::new();
    let left_out = [
        "No MutatingAdmissionPolicies were installed",
        "Not enforced at admission, then:",
        "the SignalPolicy check, which needs the mutating step",
        "a\n    signal no SignalPolicy allows is accepted by the API server",
        "the requested-by stamp: signalman.dev/requested-by is not set",
        "honours no signalman.dev/approved-by",
        "The operator still enforces the SignalPolicies itself",
        "ends Failed (PolicyDenied) and is never sent",
    ];
    for (what, served) in [
        ("1.33", KUBE_1_33),
        ("1.34 and 1.35", KUBE_1_35),
        ("no cluster", &[] as &[&str]),
    ] {
        let notes = chart.notes(served, &[]);
        for part in left_out {
            assert!(notes.contains(part), "{what}: {part:?} not in:\n{notes}");
        }
        assert!(
            notes.contains("this API server serves no\nMutatingAdmissionPolicy API"),
            "{what}:\n{notes}"
        );
        assert!(
            notes.contains("ValidatingAdmissionPolicies admissionregistration.k8s.io/v1."),
            "{what}:\n{notes}"
        );
        assert!(notes.contains("helm upgrade installs them"), "{notes}");
    }
    for (served, version) in [(KUBE_1_36, "v1"), (KUBE_1_35_BETA, "v1beta1")] {
        let notes = chart.notes(served, &[]);
        assert!(
            notes.contains(&format!(
                "MutatingAdmissionPolicies admissionregistration.k8s.io/{version}."
            )),
            "{notes}"
        );
        for part in left_out {
            assert!(!notes.contains(part), "{part:?} in:\n{notes}");
        }
    }
    // Turned off by value: said so, and no promise of an upgrade adding them.
    let notes = chart.notes(KUBE_1_36, &["admission.mutatingPolicies=false"]);
    assert!(
        notes.contains(
            "No MutatingAdmissionPolicies were installed: admission.mutatingPolicies=false."
        ),
        "{notes}"
    );
    assert!(notes.contains("The operator still enforces the SignalPolicies itself"));
    assert!(!notes.contains("helm upgrade installs them"), "{notes}");
    // No admission at all: nothing about it.
    let notes = chart.notes(KUBE_1_33, &["admission.enabled=false"]);
    assert!(!notes.contains("Admission"), "{notes}");
    assert!(!notes.contains("MutatingAdmissionPolicies"), "{notes}");
    // An API server without ValidatingAdmissionPolicies: none installed, the operator checks.
    let notes = chart.notes(
        &["admissionregistration.k8s.io/v1/ValidatingWebhookConfiguration"],
        &[],
    );
    assert!(
        notes.contains(
            "serves no ValidatingAdmissionPolicy API: no admission policies were installed"
        ),
        "{notes}"
    );
}

/// Each kind is judged by its own rule: a WorkflowSignal by a policy's swf grant, an
/// AutomationSignal by its ssm grant; any other kind the policies match is refused with a
/// message, never judged by another kind's rule. The kinds with a rule are exactly the kinds of
/// the resources the policies match (read from the chart's CRDs).
#[test]
fn admission_judges_each_kind_by_its_own_rule() {
    let objs = render_for(KUBE_1_36, &[]);
    // The kinds of the resources the admission policies match, from the CRDs.
    let mut matched = std::collections::BTreeSet::new();
    for (kind, name) in [
        ("MutatingAdmissionPolicy", "t-signalman-policy-mark"),
        ("ValidatingAdmissionPolicy", "t-signalman-signal-policy"),
        (
            "ValidatingAdmissionPolicy",
            "t-signalman-signal-policy-check",
        ),
    ] {
        for rule in find(&objs, kind, name)["spec"]["matchConstraints"]["resourceRules"]
            .as_array()
            .unwrap()
        {
            for r in rule["resources"].as_array().unwrap() {
                let crd = find(
                    &objs,
                    "CustomResourceDefinition",
                    &format!("{}.signalman.dev", r.as_str().unwrap()),
                );
                matched.insert(crd["spec"]["names"]["kind"].as_str().unwrap().to_string());
            }
        }
    }
    assert_eq!(
        matched.into_iter().collect::<Vec<_>>(),
        ["AutomationSignal", "WorkflowSignal"]
    );

    let vap = find(
        &objs,
        "ValidatingAdmissionPolicy",
        "t-signalman-signal-policy",
    );
    assert_eq!(
        vap["spec"]["variables"][1],
        json!({"name": "known", "expression": "object.kind in ['WorkflowSignal', 'AutomationSignal']"})
    );
    let validations = vap["spec"]["validations"].as_array().unwrap();
    assert_eq!(validations[0]["expression"], "variables.known");
    assert_eq!(validations[0]["reason"], "Forbidden");
    let refused = validations[0]["messageExpression"].as_str().unwrap();
    assert!(
        refused.contains("': signalman admission has no rule for kind ' + object.kind"),
        "{refused}"
    );
    assert!(refused.ends_with("; refused'"), "{refused}");
    // The stamp check applies to the known kinds; its message names each kind's fields.
    assert!(squash(validations[1]["expression"].as_str().unwrap())
        .starts_with("!variables.known || (has(object.metadata.annotations)"));
    let message = squash(validations[1]["messageExpression"].as_str().unwrap());
    for part in [
        "(object.kind == 'WorkflowSignal' ? 'spec.domain \"' + object.spec.domain",
        ": object.kind == 'AutomationSignal' ? 'spec.signalType ' + object.spec.signalType : 'no rule')",
        "(object.kind == 'WorkflowSignal' ? ' whose swf.domains and swf.workflowIds match them'",
        ": object.kind == 'AutomationSignal' ? ' whose ssm.signalTypes include it' : ' (none can allow this kind)')",
    ] {
        assert!(message.contains(part), "{part:?} not in {message}");
    }

    // The allowing rule, shared by the mark and the check: swf for a WorkflowSignal, ssm for an
    // AutomationSignal, false for anything else.
    let mark = find(&objs, "MutatingAdmissionPolicy", "t-signalman-policy-mark");
    let check = find(
        &objs,
        "ValidatingAdmissionPolicy",
        "t-signalman-signal-policy-check",
    );
    let allows = squash(
        check["spec"]["variables"][0]["expression"]
            .as_str()
            .unwrap(),
    );
    assert!(squash(
        mark["spec"]["mutations"][0]["applyConfiguration"]["expression"]
            .as_str()
            .unwrap()
    )
    .contains(&allows));
    let per_kind = &allows[allows
        .find("&& (object.kind == 'WorkflowSignal'")
        .unwrap_or_else(|| panic!("{allows}"))..];
    let order = [
        "object.kind == 'WorkflowSignal'",
        "? (has(params.spec.swf)",
        "params.spec.swf.domains.exists(",
        "params.spec.swf.workflowIds.exists(",
        ": object.kind == 'AutomationSignal'",
        "? (has(params.spec.ssm) && object.spec.signalType in params.spec.ssm.signalTypes)",
        ": false)",
    ];
    let mut at = 0;
    for part in order {
        let i = per_kind[at..]
            .find(part)
            .unwrap_or_else(|| panic!("{part:?} not after {at} in {per_kind}"));
        at += i + part.len();
    }
    assert_eq!(per_kind[at..].trim(), "", "{per_kind}");
}

/// approved-by is fixed at creation: an update that adds, changes or removes it is refused,
/// whichever user makes it; the status subresource is not concerned.
#[test]
fn approved_by_cannot_change_after_creation() {
    for served in [KUBE_1_33, KUBE_1_36] {
        let objs = render_for(served, &[]);
        let vap = find(
            &objs,
            "ValidatingAdmissionPolicy",
            "t-signalman-approved-by",
        );
        assert_eq!(
            vap["spec"]["matchConstraints"]["resourceRules"],
            json!([{"apiGroups": ["signalman.dev"], "apiVersions": ["v1alpha1"], "operations": ["UPDATE"], "resources": ["workflowsignals", "automationsignals"]}])
        );
        assert_eq!(vap["spec"]["failurePolicy"], "Fail");
        assert_eq!(
            vap["spec"]["variables"][0]["expression"],
            format!("'{}'", signalman::api::APPROVED_BY_ANNOTATION)
        );
        let rule = &vap["spec"]["validations"][0];
        assert_eq!(
            squash(rule["expression"].as_str().unwrap()),
            "variables.has == variables.had && (!variables.has || object.metadata.annotations[variables.key] == oldObject.metadata.annotations[variables.key])"
        );
        let message = squash(rule["messageExpression"].as_str().unwrap());
        assert!(
            message.contains("(!variables.had ? 'added' : variables.has ? 'changed' : 'removed')"),
            "{message}"
        );
        let binding = find(
            &objs,
            "ValidatingAdmissionPolicyBinding",
            "t-signalman-approved-by",
        );
        assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
        assert_eq!(binding["spec"]["policyName"], "t-signalman-approved-by");
    }
}

/// The NetworkPolicy: off by default; on, the operator's pods take connections on the metrics
/// port only, from the listed peers (none when none are listed; the node's probes always pass),
/// and egress is restricted only when rules are listed.
#[test]
fn network_policy_opens_only_the_metrics_port() {
    assert!(all_of(&render(&[], &[]), "NetworkPolicy").is_empty());

    let objs = render(&["networkPolicy.enabled=true"], &[]);
    let np = find(&objs, "NetworkPolicy", "t-signalman");
    assert_eq!(np["apiVersion"], "networking.k8s.io/v1");
    assert_eq!(np["metadata"]["namespace"], "ops");
    let deployment = find(&objs, "Deployment", "t-signalman");
    assert_eq!(np["spec"]["podSelector"], deployment["spec"]["selector"]);
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress"]));
    assert_eq!(np["spec"]["ingress"], json!([]));
    assert!(np["spec"].get("egress").is_none());

    let file = chart_dir().join("ci/network-policy-values.yaml");
    let values: Value = serde_norway::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let objs = render(&[], &[&file]);
    let np = find(&objs, "NetworkPolicy", "t-signalman");
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(
        np["spec"]["ingress"],
        json!([{
            "from": values["networkPolicy"]["metricsFrom"],
            "ports": [{"port": "http-metrics", "protocol": "TCP"}],
        }])
    );
    assert_eq!(np["spec"]["egress"], values["networkPolicy"]["egress"]);
    // The port it opens is the container's metrics port, by name, wherever metrics.port puts it.
    let objs = render(&["metrics.port=9090"], &[&file]);
    let c = container(&objs);
    assert_eq!(
        c["ports"],
        json!([{"name": "http-metrics", "containerPort": 9090, "protocol": "TCP"}])
    );
    assert_eq!(
        find(&objs, "NetworkPolicy", "t-signalman")["spec"]["ingress"][0]["ports"],
        json!([{"port": "http-metrics", "protocol": "TCP"}])
    );
}

/// The chart's own SignalPolicy: off by default; on, it grants exactly one namespace.
#[test]
fn the_values_policy_grants_one_namespace() {
    assert!(all_of(&render(&[], &[]), "SignalPolicy").is_empty());
    let objs = render(
        &[
            "policy.create=true",
            "policy.namespace=team-a",
            "policy.roleArn=arn:aws:iam::123456789012:role/team-a",
        ],
        &[],
    );
    let p = find(&objs, "SignalPolicy", "t-signalman");
    assert_eq!(
        p["spec"]["namespaceSelector"],
        json!({"matchLabels": {"kubernetes.io/metadata.name": "team-a"}})
    );
    assert_eq!(p["spec"]["regions"], json!(["*"]));
    assert_eq!(
        p["spec"]["swf"],
        json!({"domains": ["*"], "workflowIds": ["*"]})
    );
    assert_eq!(
        p["spec"]["ssm"]["signalTypes"],
        json!([
            "Approve",
            "Reject",
            "StartStep",
            "StopStep",
            "Resume",
            "Revoke"
        ])
    );
    assert_eq!(
        p["spec"]["roleArn"],
        "arn:aws:iam::123456789012:role/team-a"
    );
    assert_eq!(
        p["metadata"]["annotations"]["helm.sh/hook"],
        "post-install,post-upgrade"
    );
    // The rendered policy is a valid SignalPolicy for the operator's own type.
    let typed: signalman::api::SignalPolicy = serde_json::from_value(p.clone()).unwrap();
    assert_eq!(typed.spec.regions, ["*"]);
}

#[test]
fn the_schema_and_the_templates_refuse_wrong_values() {
    for (set, expected) in [
        ("replicaCount=two", "/replicaCount"),
        ("replicaCount=0", "/replicaCount"),
        ("logging.format=xml", "/logging/format"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("image.digest=latest", "/image/digest"),
        ("watchNamespaces[0]=Not_A_Namespace", "/watchNamespaces/0"),
        ("controller.concurrency=0", "/controller/concurrency"),
        ("rateLimits.ssm.perSecond=0", "/rateLimits/ssm/perSecond"),
        ("rateLimits.swf.burst=-1", "/rateLimits/swf/burst"),
        ("metrics.port=70000", "/metrics/port"),
        ("aws.endpoints.swf=not a url", "/aws/endpoints/swf"),
        ("aws.region=Europe", "/aws/region"),
        ("crds.install=maybe", "/crds/install"),
        ("policy.create=true", "/policy"),
        ("policy.roleArn=arn:aws:iam::1:user/x", "/policy/roleArn"),
        (
            "policy.ssm.signalTypes={Approve,Sign}",
            "/policy/ssm/signalTypes/1",
        ),
        ("policy.swf.domains={or[ders]}", "/policy/swf/domains/0"),
        (
            "admission.mutatingPolicies=sometimes",
            "/admission/mutatingPolicies",
        ),
        ("networkPolicy.enabled=yes", "/networkPolicy/enabled"),
        (
            "networkPolicy.metricsFrom[0].podSelector.matchLabel.app=prometheus",
            "/networkPolicy/metricsFrom/0/podSelector",
        ),
        (
            "networkPolicy.metricsFrom[0].ipBlock.except[0]=10.0.0.0/24",
            "/networkPolicy/metricsFrom/0/ipBlock",
        ),
        (
            "networkPolicy.egress[0].ports[0].protocol=HTTP",
            "/networkPolicy/egress/0/ports/0/protocol",
        ),
        ("replicas=2", "additional properties 'replicas'"),
        ("logging.fromat=json", "additional properties 'fromat'"),
        // Refused by the templates: settings that cannot work together.
        ("leaderElection.enabled=false", "needs replicaCount: 1"),
        ("controller.sendTimeoutSeconds=30", "under half"),
    ] {
        match try_render(&[set], &[]) {
            Ok(_) => panic!("--set {set} was accepted"),
            Err(e) => assert!(
                e.contains(expected),
                "--set {set}: expected {expected:?} in:\n{e}"
            ),
        }
    }
    // Decimals from --set arrive as strings: still accepted where a number is meant.
    let objs = render(&["rateLimits.ssm.perSecond=0.5"], &[]);
    assert_eq!(env_of(&objs)["SIGNALMAN_SSM_RATE"], "0.5");
}

#[test]
fn chart_versions_follow_the_operator() {
    let chart: Value =
        serde_norway::from_str(&std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap())
            .unwrap();
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
    assert_eq!(chart["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(chart["apiVersion"], "v2");
}
