//! Health as the GitOps tools read it, on real objects of the real API server: kstatus (the
//! library Flux and kpt use), the Argo CD health Lua of `examples/gitops/argocd/argocd-cm.yaml`
//! (picked by its `signalman.dev/*` key as Argo CD picks it, the same text as
//! `examples/gitops/argocd/health.lua`) run by gopher-lua (the interpreter Argo CD embeds) with
//! the libraries Argo CD opens, and Flux's own evaluator of the
//! `healthCheckExprs` in `examples/gitops/flux/kustomization.yaml`. The Go program
//! `tests/health` (built by tests/env/setup.sh) reads the objects and reports; no operator
//! runs here: every status is written through the status subresource as the operator writes it.
//! The same for the other kinds of the group, each judged by its own rule: SignalPolicies
//! (Healthy once the operator found them valid) and SignalReceipts (always Healthy).
use std::collections::BTreeMap;
use std::process::Command;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Resource;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use signalman::api::{
    AutomationSignal, AutomationSignalSpec, Phase, SignalPolicy, SignalPolicySpec, SignalReceipt,
    SignalReceiptSpec, SignalStatus, WorkflowSignal, WorkflowSignalSpec,
};
use signalman::delivery::{reason, set_kstatus};
use signalman_testenv::repo_root;

use crate::common::World;

/// Keeps the `deleted` object in the API server after its deletion (no operator removes it).
const HOLD: &str = "signalman.dev/test-hold";

/// One line of the Go program's report.
#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
struct Report {
    kind: String,
    name: String,
    kstatus: String,
    kstatus_message: String,
    argo: String,
    argo_message: String,
    flux: Option<String>,
    /// Of the object judged: a SignalPolicy's status may be rewritten meanwhile by an operator
    /// another test runs (they keep every policy's status current).
    #[serde(default)]
    resource_version: String,
}

/// A status as the operator writes it for `phase`: the phase, the generation it acted on and
/// the three kstatus conditions from the operator's own function.
fn status(phase: Phase, why: &str, observed: i64) -> SignalStatus {
    let mut s = SignalStatus {
        observed_generation: Some(observed),
        phase: Some(phase),
        attempts: 1,
        message: Some(format!("{why} (test)")),
        ..Default::default()
    };
    set_kstatus(
        &mut s.conditions,
        phase,
        why,
        &format!("{why} (test)"),
        Timestamp::now(),
        Some(observed),
    );
    s
}

/// Creates `name` with `spec`, then (if given) writes `status` with a PUT to the status
/// subresource carrying the object's resourceVersion, as the operator does.
async fn create<K>(api: &Api<K>, mut obj: K, status: Option<SignalStatus>) -> K
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let name = obj.meta().name.clone().expect("a name");
    if name.starts_with("deleted") {
        obj.meta_mut().finalizers = Some(vec![HOLD.to_owned()]);
    }
    let created = api
        .create(&PostParams::default(), &obj)
        .await
        .expect("creating");
    let Some(status) = status else {
        return created;
    };
    let mut next = serde_json::to_value(&created).expect("serializes");
    next["status"] = serde_json::to_value(status).expect("serializes");
    let next: K = serde_json::from_value(next).expect("an object");
    api.replace_status(&name, &PostParams::default(), &next)
        .await
        .expect("writing the status")
}

/// Every case, for one kind: (name, status written after create).
fn cases() -> Vec<(&'static str, Option<SignalStatus>)> {
    vec![
        ("no-status", None),
        ("pending", Some(status(Phase::Pending, reason::PENDING, 1))),
        ("sending", Some(status(Phase::Sending, reason::SENDING, 1))),
        (
            "verifying",
            Some(status(Phase::Verifying, reason::VERIFYING, 1)),
        ),
        (
            "succeeded",
            Some(status(Phase::Succeeded, reason::DELIVERED, 1)),
        ),
        (
            "failed",
            Some(status(Phase::Failed, reason::RETRIES_EXHAUSTED, 1)),
        ),
        // Delivered as far as the status says, but for a generation older than the object's.
        (
            "lagging",
            Some(status(Phase::Succeeded, reason::DELIVERED, 0)),
        ),
        (
            "deleted",
            Some(status(Phase::Succeeded, reason::DELIVERED, 1)),
        ),
    ]
}

/// What each tool must say of each case: (kstatus, Argo CD, Flux).
fn expected(case: &str) -> (&'static str, &'static str, &'static str) {
    match case {
        "no-status" | "pending" | "sending" | "verifying" | "lagging" => {
            ("InProgress", "Progressing", "InProgress")
        }
        "succeeded" => ("Current", "Healthy", "Current"),
        "failed" => ("Failed", "Degraded", "Failed"),
        // Deleting an object that has a finalizer raises its generation: the status the operator
        // wrote is for the previous one, so Flux's evaluator waits as well.
        "deleted" => ("Terminating", "Progressing", "InProgress"),
        other => panic!("no expectation for {other}"),
    }
}

// Specs from JSON, so the cases do not name optional fields one by one.
fn workflow(name: &str) -> WorkflowSignal {
    let spec: WorkflowSignalSpec = serde_json::from_value(json!({
        "domain": "orders", "workflowId": "order-42", "signalName": "approve"
    }))
    .expect("a spec");
    WorkflowSignal::new(name, spec)
}

fn automation(name: &str) -> AutomationSignal {
    let spec: AutomationSignalSpec = serde_json::from_value(json!({
        "automationExecutionId": "73c8eef8-f4ee-4a05-820c-e354fEXAMPLE",
        "signalType": "Approve"
    }))
    .expect("a spec");
    AutomationSignal::new(name, spec)
}

/// Runs the Go program over the test's namespace.
fn report(world: &World) -> Vec<Report> {
    report_with(world, &[])
}

/// Runs the Go program over the test's namespace, with `extra` arguments.
fn report_with(world: &World, extra: &[&str]) -> Vec<Report> {
    let bin = world.env.bin_dir.join("signalman-health");
    assert!(
        bin.exists(),
        "{} is missing: run tests/env/setup.sh",
        bin.display()
    );
    let gitops = repo_root().join("examples/gitops");
    let out = Command::new(&bin)
        .arg("-kubeconfig")
        .arg(&world.env.kubeconfig)
        .args(["-namespace", &world.ns])
        .arg("-argocd-cm")
        .arg(gitops.join("argocd/argocd-cm.yaml"))
        .arg("-flux")
        .arg(gitops.join("flux/kustomization.yaml"))
        .args(extra)
        .output()
        .expect("running signalman-health");
    assert!(
        out.status.success(),
        "signalman-health: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("UTF-8")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kstatus_argo_cd_and_flux_read_every_phase_right() {
    let world = World::new("health").await;
    let wf: Api<WorkflowSignal> = world.api();
    let am: Api<AutomationSignal> = world.api();
    for (name, status) in cases() {
        create(&wf, workflow(name), status.clone()).await;
        create(&am, automation(name), status).await;
    }

    // What the API server returns for a signal nobody has written a status for: the schema's
    // default, which is what makes the tools wait.
    let fresh = wf.get("no-status").await.expect("reading");
    let fresh_status = fresh.status.expect("the API server defaults the status");
    assert_eq!(
        (fresh_status.observed_generation, fresh_status.phase),
        (Some(0), None)
    );
    assert_eq!(fresh.metadata.generation, Some(1));

    wf.delete("deleted", &DeleteParams::default())
        .await
        .expect("deleting");
    am.delete("deleted", &DeleteParams::default())
        .await
        .expect("deleting");

    let got = report(&world);
    let mut seen: BTreeMap<(String, String), &Report> = BTreeMap::new();
    for r in &got {
        seen.insert((r.kind.clone(), r.name.clone()), r);
    }
    let mut wrong = Vec::new();
    for kind in ["WorkflowSignal", "AutomationSignal"] {
        for (name, _) in cases() {
            let r = seen
                .get(&(kind.to_owned(), name.to_owned()))
                .unwrap_or_else(|| panic!("no report for {kind}/{name}: {got:?}"));
            let (kstatus, argo, flux) = expected(name);
            if (r.kstatus.as_str(), r.argo.as_str(), r.flux.as_deref())
                != (kstatus, argo, Some(flux))
            {
                wrong.push(format!(
                    "{kind}/{name}: kstatus {} ({}), Argo CD {} ({}), Flux {:?}; want {kstatus}, {argo}, {flux}",
                    r.kstatus, r.kstatus_message, r.argo, r.argo_message, r.flux
                ));
            }
        }
    }
    // The messages a person sees in Argo CD carry the operator's reason.
    let succeeded = seen[&("WorkflowSignal".to_owned(), "succeeded".to_owned())];
    assert!(
        succeeded.argo_message.starts_with(reason::DELIVERED),
        "{succeeded:?}"
    );
    let failed = seen[&("AutomationSignal".to_owned(), "failed".to_owned())];
    assert!(
        failed.argo_message.starts_with(reason::RETRIES_EXHAUSTED),
        "{failed:?}"
    );

    // Let the held objects go, so the namespace can be removed.
    let release = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    wf.patch("deleted", &PatchParams::default(), &release)
        .await
        .expect("releasing");
    am.patch("deleted", &PatchParams::default(), &release)
        .await
        .expect("releasing");

    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

/// Labels this test's SignalPolicies (cluster-scoped) with its namespace, for the Go program.
const POLICY_LABEL: &str = "signalman.dev/health-test";

/// What kstatus and Argo CD must say of each SignalPolicy case (Flux's Kustomization has no
/// expressions for policies: kstatus is what it uses).
fn policy_expected(case: &str) -> (&'static str, &'static str) {
    match case {
        // Neither is a verdict of the operator yet: Argo CD waits, kstatus has nothing to read.
        "no-status" => ("Current", "Progressing"),
        "valid" => ("Current", "Healthy"),
        // kstatus knows only Reconciling and Stalled, not Valid: only the Lua sees it.
        "invalid" => ("Current", "Degraded"),
        "lagging" => ("InProgress", "Progressing"),
        other => panic!("no expectation for {other}"),
    }
}

/// SignalPolicies and SignalReceipts, each kind by its own rule: a policy is Healthy once the
/// operator found it valid (its status for the current generation), Degraded when it cannot be
/// applied, Progressing until the operator has looked; a receipt is always Healthy. The
/// statuses are the operator's own (`signalman::policy::policy_status`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argo_cd_reads_policies_and_receipts_by_their_own_rules() {
    let world = World::new("health-kinds").await;
    let receipts: Api<SignalReceipt> = world.api();
    for (name, delivered) in [("delivered", true), ("attempted", false)] {
        let spec: SignalReceiptSpec = serde_json::from_value(json!({
            "signalNamespace": world.ns,
            "signalKind": "WorkflowSignal",
            "signalName": name,
            "signalHash": "0".repeat(64),
            "attemptedAt": "2026-12-01T10:00:00Z",
            "deliveredAt": if delivered { Some("2026-12-01T10:00:01Z") } else { None },
            "expiresAt": "2099-01-01T00:00:00Z",
        }))
        .expect("a receipt");
        receipts
            .create(&PostParams::default(), &SignalReceipt::new(name, spec))
            .await
            .expect("creating a receipt");
    }

    let policies: Api<SignalPolicy> = Api::all(world.client.clone());
    let namespaces: Vec<BTreeMap<String, String>> = Api::<Namespace>::all(world.client.clone())
        .list(&ListParams::default())
        .await
        .expect("listing namespaces")
        .items
        .into_iter()
        .map(|n| n.metadata.labels.unwrap_or_default())
        .collect();
    // Operators of other tests rewrite every policy's status (every 15 s while they lead): a
    // round whose policies changed before the report was read is run again with new ones.
    let mut attempt = 0;
    let (got, names) = loop {
        attempt += 1;
        assert!(attempt <= 5, "policies kept changing under the report");
        let round = format!("{}-{attempt}", world.ns);
        let mut written: BTreeMap<String, (String, String)> = BTreeMap::new();
        let mut spoiled = false;
        for case in ["no-status", "valid", "invalid", "lagging"] {
            let name = format!("{round}-{case}");
            let spec: SignalPolicySpec = serde_json::from_value(json!({
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": world.ns}},
                "regions": ["*"],
                "swf": {"domains": ["health"], "workflowIds": ["*"]},
            }))
            .expect("a spec");
            let mut policy = SignalPolicy::new(&name, spec);
            policy.metadata.labels = Some([(POLICY_LABEL.to_string(), round.clone())].into());
            let mut created = policies
                .create(&PostParams::default(), &policy)
                .await
                .expect("creating a policy");
            if case != "no-status" {
                let mut judged = created.clone();
                if case == "invalid" {
                    // What the operator writes for a selector it cannot evaluate.
                    judged.spec.namespace_selector.match_expressions =
                        Some(vec![LabelSelectorRequirement {
                            key: "team".into(),
                            operator: "Maybe".into(),
                            values: None,
                        }]);
                }
                let mut next = created.clone();
                next.status = Some(signalman::policy::policy_status(
                    &judged,
                    namespaces.iter(),
                    Timestamp::now(),
                ));
                match policies
                    .replace_status(&name, &PostParams::default(), &next)
                    .await
                {
                    Ok(written) => created = written,
                    // Rewritten by another test's operator since its creation: the round is run
                    // again.
                    Err(kube::Error::Api(e)) if e.code == 409 => spoiled = true,
                    Err(e) => panic!("writing the status: {e}"),
                }
            }
            if case == "lagging" {
                // A spec change the operator has not seen yet: generation 2, status of 1.
                created = policies
                    .patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"spec": {"regions": ["eu-*"]}})),
                    )
                    .await
                    .expect("editing the policy");
                assert_eq!(created.metadata.generation, Some(2));
            }
            written.insert(
                name,
                (
                    case.to_string(),
                    created
                        .metadata
                        .resource_version
                        .clone()
                        .unwrap_or_default(),
                ),
            );
        }
        let got = report_with(&world, &["-policies", &format!("{POLICY_LABEL}={round}")]);
        for name in written.keys() {
            let _ = policies.delete(name, &DeleteParams::default()).await;
        }
        let unchanged = !spoiled
            && written.iter().all(|(name, (_, rv))| {
                got.iter().any(|r| {
                    r.kind == "SignalPolicy" && &r.name == name && &r.resource_version == rv
                })
            });
        if unchanged {
            break (got, written);
        }
        eprintln!("round {attempt}: a policy's status was rewritten meanwhile; again");
    };

    let mut wrong = Vec::new();
    for (name, (case, _)) in &names {
        let r = got
            .iter()
            .find(|r| r.kind == "SignalPolicy" && &r.name == name)
            .unwrap_or_else(|| panic!("no report for SignalPolicy/{name}: {got:?}"));
        let (kstatus, argo) = policy_expected(case);
        if (r.kstatus.as_str(), r.argo.as_str(), r.flux.as_deref()) != (kstatus, argo, None) {
            wrong.push(format!(
                "SignalPolicy {case}: kstatus {} ({}), Argo CD {} ({}), Flux {:?}; want {kstatus}, {argo}, none",
                r.kstatus, r.kstatus_message, r.argo, r.argo_message, r.flux
            ));
        }
        if case == "valid" {
            assert!(
                r.argo_message
                    .starts_with("Valid: the policy applies to the namespaces it selects (namespaces selected: 1)"),
                "{r:?}"
            );
        }
        if case == "invalid" {
            assert!(r.argo_message.starts_with("InvalidSelector: "), "{r:?}");
        }
    }
    for (name, message) in [
        ("delivered", "Delivered at 2026-12-01T10:00:01Z"),
        (
            "attempted",
            "Attempt recorded; the operator verifies its outcome",
        ),
    ] {
        let r = got
            .iter()
            .find(|r| r.kind == "SignalReceipt" && r.name == name)
            .unwrap_or_else(|| panic!("no report for SignalReceipt/{name}: {got:?}"));
        if (
            r.kstatus.as_str(),
            r.argo.as_str(),
            r.argo_message.as_str(),
            r.flux.as_deref(),
        ) != ("Current", "Healthy", message, None)
        {
            wrong.push(format!("SignalReceipt {name}: {r:?}"));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

/// The Lua that the chart README and the Argo CD example tell people to install is the one
/// tested above, line for line.
#[test]
fn documented_lua_is_the_tested_lua() {
    let root = repo_root();
    let lua = std::fs::read_to_string(root.join("examples/gitops/argocd/health.lua"))
        .expect("health.lua");
    for doc in [
        "charts/signalman/README.md",
        "examples/gitops/argocd/argocd-cm.yaml",
    ] {
        let text = std::fs::read_to_string(root.join(doc)).expect(doc);
        let lines: Vec<&str> = text.lines().collect();
        let first = lua.lines().next().expect("a script");
        let start = lines
            .iter()
            .position(|l| l.trim_end().ends_with(first))
            .unwrap_or_else(|| panic!("{doc} does not contain the health Lua"));
        let indent = lines[start].len() - first.len();
        for (i, want) in lua.lines().enumerate() {
            let got = lines.get(start + i).copied().unwrap_or_default();
            let got = got.get(indent.min(got.len())..).unwrap_or_default();
            assert_eq!(
                got.trim_end(),
                want.trim_end(),
                "{doc}: line {} of the Lua differs from examples/gitops/argocd/health.lua",
                i + 1
            );
        }
    }
}

/// The signals of the GitOps example are accepted by the real API server as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitops_example_signals_are_accepted() {
    let world = World::new("health-gitops").await;
    let dir = repo_root().join("examples/gitops/signals");
    let out = world
        .env
        .kubectl()
        .args(["apply", "--dry-run=server", "-n", &world.ns, "-f"])
        .arg(&dir)
        .output()
        .expect("running kubectl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("workflowsignal.signalman.dev/approve-order-42")
            && stdout.contains("automationsignal.signalman.dev/approve-patch-window"),
        "{stdout}"
    );
}
