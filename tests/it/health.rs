//! Health as the GitOps tools read it, on real objects of the real API server: kstatus (the
//! library Flux and kpt use), the Argo CD health Lua of `examples/gitops/argocd/argocd-cm.yaml`
//! (picked by its `signalman.dev/*` key as Argo CD picks it, the same text as
//! `examples/gitops/argocd/health.lua`) run by gopher-lua (the interpreter Argo CD embeds) with
//! the libraries Argo CD opens, and Flux's own evaluator of the
//! `healthCheckExprs` in `examples/gitops/flux/kustomization.yaml`. The Go program
//! `tests/health` (built by tests/env/setup.sh) reads the objects and reports; no operator
//! runs here: every status is written through the status subresource as the operator writes it.
use std::collections::BTreeMap;
use std::process::Command;

use k8s_openapi::jiff::Timestamp;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::Resource;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use signalman::api::{
    AutomationSignal, AutomationSignalSpec, Phase, SignalStatus, WorkflowSignal, WorkflowSignalSpec,
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
