//! The trust boundary at the API server (issue 11): the chart's admission policies, the CRD's
//! status transition rules and the chart's roles, against the real kube-apiserver. Each test
//! renders the chart's admission policies and roles with `helm template` and applies them with
//! `kubectl apply`, bound (namespaceSelector) to its own namespaces only, so the other tests of
//! this binary never meet them; a guard deletes them at the end.
//!
//! The operator's own decision (Failed/PolicyDenied, roles per policy) is tested with the
//! controller; here nothing runs but the API server.
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;
use signalman::api::{AutomationSignal, Phase, SignalStatus, WorkflowSignal};

use crate::common::{env, unique, wf_signal};

/// Runs `cmd` with `stdin`; Ok(stdout) or Err(stderr and stdout).
fn run(cmd: &mut Command, stdin: Option<&str>) -> Result<String, String> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawning");
    let mut pipe = child.stdin.take().expect("stdin");
    pipe.write_all(stdin.unwrap_or_default().as_bytes())
        .expect("writing stdin");
    drop(pipe);
    let out = child.wait_with_output().expect("waiting");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(format!("{}{}", text(&out.stderr), text(&out.stdout)))
    }
}

/// `--api-versions` for `helm template`: every `admissionregistration.k8s.io/<version>/<Kind>`
/// this API server serves, read from its discovery as `helm install` reads it. The chart renders
/// its admission policies in the versions served (MutatingAdmissionPolicy v1 on 1.36).
pub(crate) fn served_admission_api_versions() -> Vec<String> {
    static SERVED: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    SERVED
        .get_or_init(|| {
            let mut out = Vec::new();
            for version in ["v1", "v1beta1", "v1alpha1"] {
                let group = format!("admissionregistration.k8s.io/{version}");
                // A version the server does not serve answers 404.
                let Ok(text) = run(
                    env()
                        .kubectl()
                        .args(["get", "--raw", &format!("/apis/{group}")]),
                    None,
                ) else {
                    continue;
                };
                let list: serde_json::Value =
                    serde_json::from_str(&text).expect("an APIResourceList");
                for r in list["resources"].as_array().expect("resources") {
                    let name = r["name"].as_str().expect("a name");
                    if !name.contains('/') {
                        out.push(format!("{group}/{}", r["kind"].as_str().expect("a kind")));
                    }
                }
            }
            assert!(
                out.iter()
                    .any(|v| v.ends_with("/ValidatingAdmissionPolicy")),
                "{out:?}"
            );
            out
        })
        .clone()
}

/// `--api-versions` arguments for everything [`served_admission_api_versions`] lists.
pub(crate) fn api_versions_args() -> Vec<String> {
    served_admission_api_versions()
        .into_iter()
        .flat_map(|v| ["--api-versions".to_string(), v])
        .collect()
}

/// The chart's admission policies, roles and operator RBAC, applied for one test.
struct Installed {
    /// The rendered manifest, deleted on drop.
    manifest: String,
    /// Label (key=value) that puts a namespace under the admission policies.
    label: (String, String),
    /// Release namespace (the operator's).
    release_ns: String,
    /// The operator's ServiceAccount user name.
    operator: String,
    /// `<release>-signalman`.
    fullname: String,
    /// The SignalPolicies this test created, deleted on drop.
    policies: Vec<String>,
    /// When the policies were applied.
    applied_at: Instant,
}

impl Installed {
    /// Renders and applies the chart's admission policies and roles; the operator watches
    /// `watched` (its per-namespace Roles) and runs in `release_ns`.
    fn apply(release_ns: &str, watched: &[&str], region: &str) -> Installed {
        let env = env();
        let release = unique("pol");
        let fullname = format!("{release}-signalman");
        let label = ("signalman.dev/policy-test".to_string(), release.clone());
        let mut cmd = env.helm();
        cmd.args(["template", &release])
            .arg(signalman_testenv::repo_root().join("charts/signalman"))
            .args(["--namespace", release_ns])
            .args(api_versions_args())
            .args(["--set", &format!("aws.region={region}")])
            .args([
                "--set",
                &format!("watchNamespaces={{{}}}", watched.join(",")),
            ])
            .args([
                "--set-json",
                &format!(
                    "admission.namespaceSelector={}",
                    json!({"matchLabels": {&label.0: &label.1}})
                ),
            ]);
        for t in ["admission.yaml", "roles.yaml", "rbac.yaml"] {
            cmd.args(["--show-only", &format!("templates/{t}")]);
        }
        let manifest = run(&mut cmd, None).expect("helm template");
        run(env.kubectl().args(["apply", "-f", "-"]), Some(&manifest))
            .unwrap_or_else(|e| panic!("applying the chart's policies:\n{e}"));
        run(
            env.kubectl().args([
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/signalpolicies.signalman.dev",
            ]),
            None,
        )
        .expect("the SignalPolicy CRD");
        Installed {
            manifest,
            label,
            release_ns: release_ns.to_string(),
            operator: format!("system:serviceaccount:{release_ns}:{fullname}"),
            fullname,
            policies: Vec::new(),
            applied_at: Instant::now(),
        }
    }

    /// Puts `namespace` under the admission policies (the label their bindings select).
    async fn judge(&self, client: &kube::Client, namespace: &str) {
        let label = json!({"metadata": {"labels": {&self.label.0: &self.label.1}}});
        Api::<Namespace>::all(client.clone())
            .patch(namespace, &PatchParams::default(), &Patch::Merge(&label))
            .await
            .expect("labelling the namespace");
    }

    /// The operator as the chart's ServiceAccount (its RBAC, by impersonation), in the release
    /// namespace, with the chart's lease name and requester source; `extra` adds variables.
    fn operator(
        &self,
        world: &crate::common::World,
        identity: &str,
        extra: &[(&str, &str)],
    ) -> crate::common::Operator {
        let kubeconfig = crate::common::impersonating_kubeconfig(world.env, &self.operator);
        let kubeconfig = kubeconfig.display().to_string();
        let source = self.requester_source();
        let mut vars = vec![
            ("SIGNALMAN_KUBECONFIG", kubeconfig.as_str()),
            ("POD_NAMESPACE", self.release_ns.as_str()),
            ("SIGNALMAN_LEASE_NAME", self.fullname.as_str()),
            ("SIGNALMAN_REQUESTER_SOURCE", source.as_str()),
        ];
        vars.extend_from_slice(extra);
        world.operator(identity, &vars)
    }

    /// What the chart's Deployment sets SIGNALMAN_REQUESTER_SOURCE to (`tests/chart.rs`
    /// checks it): the requested-by binding, believed only where it judged the signal.
    fn requester_source(&self) -> String {
        format!("binding={}-requested-by", self.fullname)
    }

    /// Waits until a signal created now counts as created under the policies: the operator
    /// believes the requested-by stamp only once they have been in force for a while.
    async fn wait_in_force(&self) {
        let due =
            self.applied_at + signalman::requester::POLICY_LOAD_GRACE + Duration::from_secs(2);
        tokio::time::sleep_until(due.into()).await;
    }

    /// Creates a SignalPolicy named `name` (unique per run) with `spec`.
    fn policy(&mut self, name: &str, spec: serde_json::Value) -> String {
        let name = unique(name);
        let doc = json!({
            "apiVersion": "signalman.dev/v1alpha1",
            "kind": "SignalPolicy",
            "metadata": {"name": name},
            "spec": spec,
        });
        run(
            env().kubectl().args(["apply", "-f", "-"]),
            Some(&doc.to_string()),
        )
        .unwrap_or_else(|e| panic!("creating SignalPolicy {name}:\n{e}"));
        self.policies.push(name.clone());
        name
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let env = env();
        let _ = run(
            env.kubectl()
                .args(["delete", "--ignore-not-found", "--wait=false", "-f", "-"]),
            Some(&self.manifest),
        );
        for p in &self.policies {
            let _ = run(
                env.kubectl()
                    .args(["delete", "signalpolicy", p, "--ignore-not-found"]),
                None,
            );
        }
    }
}

/// A namespace with `labels`, named after `prefix`.
async fn namespace(client: &kube::Client, prefix: &str, labels: &[(&str, &str)]) -> String {
    let name = unique(prefix);
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("creating a namespace");
    name
}

fn workflow_yaml(ns: &str, name: &str, domain: &str, workflow_id: &str, extra: &str) -> String {
    format!(
        "apiVersion: signalman.dev/v1alpha1\nkind: WorkflowSignal\nmetadata:\n  name: {name}\n  namespace: {ns}\n{extra}spec: {{domain: {domain}, workflowId: {workflow_id}, signalName: approve}}\n"
    )
}

fn automation_yaml(ns: &str, name: &str, signal_type: &str) -> String {
    format!(
        "apiVersion: signalman.dev/v1alpha1\nkind: AutomationSignal\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{automationExecutionId: 73c8eef8-f4ee-4a05-820c-e354fEXAMPLE, signalType: {signal_type}}}\n"
    )
}

/// `kubectl apply` of `yaml`: Ok(output) or Err(the API server's refusal).
fn apply(yaml: &str) -> Result<String, String> {
    run(env().kubectl().args(["apply", "-f", "-"]), Some(yaml))
}

/// Applies `yaml` until an admission policy refuses it with `because` in its message; returns
/// the refusal. The API server loads policies asynchronously and not all at once: meanwhile
/// the object may be admitted, or refused by another policy (the requested-by check, before
/// the mutating policy that stamps it is in force).
fn refused_eventually(yaml: &str, because: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match apply(yaml) {
            Err(e) if e.contains("AdmissionPolicy") && e.contains(because) => return e,
            Err(e) => {
                // E.g. the CRD not yet served by this API server, or another policy's refusal
                // while the mutating policies are still loading (no requested-by stamped yet).
                assert!(
                    Instant::now() < deadline,
                    "never refused by admission because {because:?}: {e}"
                );
                std::thread::sleep(Duration::from_millis(500));
            }
            Ok(out) => {
                assert!(
                    Instant::now() < deadline,
                    "never refused; last answer: {out}"
                );
                // Admitted before the policies were in force: remove it and try again.
                let _ = run(
                    env()
                        .kubectl()
                        .args(["delete", "--ignore-not-found", "-f", "-"]),
                    Some(yaml),
                );
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

/// Applies `yaml` until admitted (a new SignalPolicy reaches the admission plugin's informer
/// after a moment); panics with the last refusal after 30 s.
fn admitted_eventually(yaml: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match apply(yaml) {
            Ok(_) => return,
            Err(e) if Instant::now() > deadline => panic!("never admitted:\n{e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// The API server's message of a refusal.
fn message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(a) => a.message.clone(),
        other => other.to_string(),
    }
}

/// Creates `obj` through `api`, retrying while a SignalPolicy created just before has not yet
/// reached the admission plugin's informer.
async fn create_eventually(api: &Api<WorkflowSignal>, obj: &WorkflowSignal) -> WorkflowSignal {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match api.create(&PostParams::default(), obj).await {
            Ok(created) => return created,
            Err(e) if Instant::now() > deadline => panic!("never admitted: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Creates `obj` through `api` until admission stamps its requested-by: the API server loads
/// the admission policies one at a time after an install, and under load the stamp can come
/// into force seconds after the check that refuses a forged one. An unstamped copy is deleted
/// (by `admin`) before the next try, and no operator runs meanwhile.
async fn create_stamped(
    api: &Api<WorkflowSignal>,
    admin: &kube::Client,
    obj: &WorkflowSignal,
) -> WorkflowSignal {
    let name = obj.name_any();
    let as_admin: Api<WorkflowSignal> =
        Api::namespaced(admin.clone(), api.namespace().expect("a namespaced Api"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let created = create_eventually(api, obj).await;
        if created
            .annotations()
            .contains_key(signalman::api::REQUESTED_BY_ANNOTATION)
        {
            return created;
        }
        assert!(
            Instant::now() < deadline,
            "requested-by was never stamped on {name}"
        );
        as_admin
            .delete(&name, &Default::default())
            .await
            .expect("deleting the unstamped signal");
        while as_admin.get_opt(&name).await.expect("reading").is_some() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn annotation(obj: &ObjectMeta, key: &str) -> Option<String> {
    obj.annotations.as_ref()?.get(key).cloned()
}

/// A RoleBinding of ClusterRole `role` to user `user` in `ns`.
async fn bind(client: &kube::Client, ns: &str, role: &str, user: &str) {
    let rb = RoleBinding {
        metadata: ObjectMeta {
            name: Some(unique("rb")),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: role.into(),
        },
        subjects: Some(vec![Subject {
            kind: "User".into(),
            name: user.into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            ..Default::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &rb)
        .await
        .expect("creating a RoleBinding");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_refuses_what_no_policy_allows_and_policies_add_up() {
    // The malformed tests loosen the signal CRDs for a moment; these need the real schema.
    let _schema = crate::common::CRD_SCHEMA.read().await;
    let env = env();
    let client = env.client().await;
    let ops = namespace(&client, "pol-ops", &[]).await;
    let team = unique("orders");
    // The label that puts the namespace under the admission policies is added below, once
    // the policies exist (their names are random).
    let ns = namespace(&client, "pol-team", &[("team", &team)]).await;
    let mut inst = Installed::apply(&ops, &[&ns], "us-east-1");
    inst.judge(&client, &ns).await;

    // No policy at all: refused, naming namespace, fields and the policy needed.
    let outside = workflow_yaml(&ns, "outside", "orders", "order-1", "");
    let e = refused_eventually(&outside, "no SignalPolicy allows");
    for part in [
        format!("namespace {ns}: no SignalPolicy allows this WorkflowSignal"),
        "spec.domain \"orders\", spec.workflowId \"order-1\", spec.region \"us-east-1\"".into(),
        format!("needed: a SignalPolicy selecting namespace {ns} whose swf.domains and swf.workflowIds match them"),
    ] {
        assert!(e.contains(&part), "{part:?} not in:\n{e}");
    }

    // One team, one SWF domain.
    let orders = inst.policy(
        "orders",
        json!({
            "namespaceSelector": {"matchLabels": {"team": team}},
            "regions": ["us-*"],
            "swf": {"domains": ["orders"], "workflowIds": ["order-*"]},
        }),
    );
    admitted_eventually(&outside);
    let wf: WorkflowSignal = Api::namespaced(client.clone(), &ns)
        .get("outside")
        .await
        .unwrap();
    assert_eq!(
        annotation(&wf.metadata, "signalman.dev/admitted-by").as_deref(),
        Some(orders.as_str())
    );
    assert_eq!(
        annotation(&wf.metadata, "signalman.dev/requested-by").as_deref(),
        Some("admin")
    );
    // Outside the policy's patterns, region or service: refused.
    let e = apply(&workflow_yaml(&ns, "other-id", "orders", "x-1", "")).unwrap_err();
    assert!(e.contains("spec.workflowId \"x-1\""), "{e}");
    let e = apply(&workflow_yaml(
        &ns,
        "other-domain",
        "billing",
        "order-1",
        "",
    ))
    .unwrap_err();
    assert!(e.contains("spec.domain \"billing\""), "{e}");
    let e = apply(
        &workflow_yaml(&ns, "other-region", "orders", "order-1", "").replace(
            "signalName: approve}",
            "signalName: approve, region: eu-west-1}",
        ),
    )
    .unwrap_err();
    assert!(e.contains("spec.region \"eu-west-1\""), "{e}");
    let e = apply(&automation_yaml(&ns, "approve", "Approve")).unwrap_err();
    assert!(
        e.contains("no SignalPolicy allows this AutomationSignal (spec.signalType Approve"),
        "{e}"
    );

    // A second policy selecting the namespace by expression adds SSM Approve/Reject.
    let cab = inst.policy(
        "cab",
        json!({
            "namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "In", "values": [team, "nobody"]}]},
            "regions": ["*"],
            "ssm": {"signalTypes": ["Approve", "Reject"], "documentNames": ["Change-*"]},
        }),
    );
    admitted_eventually(&automation_yaml(&ns, "approve", "Approve"));
    let am: AutomationSignal = Api::namespaced(client.clone(), &ns)
        .get("approve")
        .await
        .unwrap();
    assert_eq!(
        annotation(&am.metadata, "signalman.dev/admitted-by").as_deref(),
        Some(cab.as_str())
    );
    let e = apply(&automation_yaml(&ns, "revoke", "Revoke")).unwrap_err();
    assert!(e.contains("spec.signalType Revoke"), "{e}");
    // The first policy still allows what it allowed.
    apply(&workflow_yaml(&ns, "second", "orders", "order-2", "")).expect("union");

    // A mark written by hand that names a policy not allowing the signal: refused.
    let forged = workflow_yaml(
        &ns,
        "forged-mark",
        "billing",
        "b-1",
        &format!("  annotations: {{signalman.dev/admitted-by: {cab}}}\n"),
    );
    let e = apply(&forged).unwrap_err();
    assert!(
        e.contains(&format!(
            "the annotation signalman.dev/admitted-by names SignalPolicy {cab}, which does not allow this WorkflowSignal"
        )),
        "{e}"
    );

    // A namespace without the team label: no policy selects it.
    let stranger = namespace(
        &client,
        "pol-stranger",
        &[(&inst.label.0, &inst.label.1), ("team", "someone-else")],
    )
    .await;
    let e = apply(&workflow_yaml(&stranger, "s", "orders", "order-1", "")).unwrap_err();
    assert!(
        e.contains(&format!("namespace {stranger}: no SignalPolicy allows")),
        "{e}"
    );
    // A namespace the admission policies are not bound to is not judged here (the operator
    // still is): the chart's namespaceSelector scopes them.
    let unbound = namespace(&client, "pol-unbound", &[]).await;
    apply(&workflow_yaml(&unbound, "free", "orders", "order-1", "")).expect("not bound");

    // A kind the policy check has no rule for is refused, not judged by another kind's rule:
    // this test's copy of the policy is made to match SignalReceipts too (as if a kind were
    // added to its match without a rule), and a receipt in the team's namespace is refused.
    let vap = format!("{}-signal-policy", inst.fullname);
    run(
        env.kubectl().args([
            "patch",
            "validatingadmissionpolicy",
            &vap,
            "--type=json",
            "-p",
            r#"[{"op": "add", "path": "/spec/matchConstraints/resourceRules/0/resources/-", "value": "signalreceipts"}]"#,
        ]),
        None,
    )
    .expect("matching SignalReceipts too");
    let receipt = format!(
        "apiVersion: signalman.dev/v1alpha1\nkind: SignalReceipt\nmetadata: {{name: unknown-kind, namespace: {ns}}}\nspec: {{signalNamespace: {ns}, signalKind: WorkflowSignal, signalName: outside, signalHash: '0', expiresAt: '2099-01-01T00:00:00Z'}}\n"
    );
    let e = refused_eventually(&receipt, "has no rule for kind SignalReceipt");
    assert!(
        e.contains(&format!(
            "namespace {ns}: signalman admission has no rule for kind SignalReceipt (it judges a WorkflowSignal by the swf and an AutomationSignal by the ssm of a SignalPolicy); refused"
        )),
        "{e}"
    );
    // The known kinds are judged as before, each by its own rule.
    apply(&workflow_yaml(&ns, "third", "orders", "order-3", "")).expect("the swf rule");
    let e = apply(&automation_yaml(&ns, "revoke-again", "Revoke")).unwrap_err();
    assert!(e.contains("spec.signalType Revoke"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requested_by_is_stamped_and_cannot_be_forged_or_changed() {
    // The malformed tests loosen the signal CRDs for a moment; these need the real schema.
    let _schema = crate::common::CRD_SCHEMA.read().await;
    let env = env();
    let admin = env.client().await;
    let ops = namespace(&admin, "pol-ops", &[]).await;
    let team = unique("t");
    let ns = namespace(&admin, "pol-rb", &[("team", &team)]).await;
    let mut inst = Installed::apply(&ops, &[&ns], "us-east-1");
    inst.policy(
        "all",
        json!({
            "namespaceSelector": {"matchLabels": {"team": team}},
            "regions": ["*"],
            "swf": {"domains": ["*"], "workflowIds": ["*"]},
        }),
    );
    inst.judge(&admin, &ns).await;
    let author_role = format!("{}-signal-author", inst.fullname);
    bind(&admin, &ns, &author_role, "alice@example.com").await;
    let alice = env.client_as("alice@example.com").await;
    let api: Api<WorkflowSignal> = Api::namespaced(alice.clone(), &ns);

    // Until the policies are in force, a forged annotation may pass; wait for the refusal.
    let mut forged = wf_signal("forged", "d", "w", None);
    forged.metadata.annotations =
        Some([("signalman.dev/requested-by".to_string(), "bob".to_string())].into());
    let deadline = Instant::now() + Duration::from_secs(60);
    let refusal = loop {
        match api.create(&PostParams::default(), &forged).await {
            Err(kube::Error::Api(e)) => break e,
            Ok(_) => {
                assert!(
                    Instant::now() < deadline,
                    "a forged requested-by was accepted"
                );
                Api::<WorkflowSignal>::namespaced(admin.clone(), &ns)
                    .delete("forged", &Default::default())
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(refusal.code, 403, "{refusal:?}");
    assert!(
        refusal.message.contains(
            "the annotation signalman.dev/requested-by must be the requesting user (alice@example.com)"
        ),
        "{}",
        refusal.message
    );

    // Created by alice: stamped with alice.
    let created = create_stamped(&api, &admin, &wf_signal("mine", "d", "w", None)).await;
    assert_eq!(
        annotation(&created.metadata, "signalman.dev/requested-by").as_deref(),
        Some("alice@example.com")
    );

    // Nobody changes or removes it afterwards, not even a cluster administrator.
    let admin_api: Api<WorkflowSignal> = Api::namespaced(admin.clone(), &ns);
    for patch in [
        json!({"metadata": {"annotations": {"signalman.dev/requested-by": "bob"}}}),
        json!({"metadata": {"annotations": {"signalman.dev/requested-by": null}}}),
    ] {
        let e = admin_api
            .patch("mine", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect_err("changing requested-by");
        assert!(
            message(&e)
                .contains("the annotation signalman.dev/requested-by cannot be changed or removed"),
            "{e}"
        );
    }
    // Other metadata may still change.
    admin_api
        .patch(
            "mine",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .expect("a label edit");
    // Authors cannot edit signals at all (RBAC: no update or patch).
    let e = api
        .patch(
            "mine",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"x": "z"}}})),
        )
        .await
        .expect_err("an author edits");
    assert!(matches!(e, kube::Error::Api(ref a) if a.code == 403), "{e}");
}

/// approved-by is fixed at creation: set on create, it can be neither changed nor removed
/// afterwards, and one cannot be added to a signal created without it, not even by a cluster
/// administrator; other metadata still changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_by_cannot_change_after_creation() {
    // The malformed tests loosen the signal CRDs for a moment; these need the real schema.
    let _schema = crate::common::CRD_SCHEMA.read().await;
    let env = env();
    let admin = env.client().await;
    let ops = namespace(&admin, "pol-ops", &[]).await;
    let team = unique("t");
    let ns = namespace(&admin, "pol-ab", &[("team", &team)]).await;
    let mut inst = Installed::apply(&ops, &[&ns], "us-east-1");
    inst.policy(
        "all",
        json!({
            "namespaceSelector": {"matchLabels": {"team": team}},
            "regions": ["*"],
            "swf": {"domains": ["*"], "workflowIds": ["*"]},
        }),
    );
    inst.judge(&admin, &ns).await;
    let api: Api<WorkflowSignal> = Api::namespaced(admin.clone(), &ns);
    let key = signalman::api::APPROVED_BY_ANNOTATION;
    let mut approved = wf_signal("approved", "d", "w", None);
    approved.metadata.annotations =
        Some([(key.to_string(), "carol@example.com".to_string())].into());
    create_eventually(&api, &approved).await;
    let plain = create_eventually(&api, &wf_signal("plain", "d", "w", None)).await;
    assert_eq!(annotation(&plain.metadata, key), None);

    // The admission policies load asynchronously: the first refusal may take a moment.
    let change = json!({"metadata": {"annotations": {key: "mallory@example.com"}}});
    let deadline = Instant::now() + Duration::from_secs(60);
    let e = loop {
        match api
            .patch("approved", &PatchParams::default(), &Patch::Merge(&change))
            .await
        {
            Err(e) => break e,
            Ok(_) => {
                assert!(Instant::now() < deadline, "approved-by was changed");
                // Changed before the policy was in force: put it back and try again.
                api.patch(
                    "approved",
                    &PatchParams::default(),
                    &Patch::Merge(
                        &json!({"metadata": {"annotations": {key: "carol@example.com"}}}),
                    ),
                )
                .await
                .expect("restoring approved-by");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    assert!(matches!(e, kube::Error::Api(ref a) if a.code == 403), "{e}");
    assert!(
        message(&e).contains(&format!(
            "namespace {ns}: the annotation signalman.dev/approved-by cannot be changed after the WorkflowSignal was created; create a new WorkflowSignal to record another approval"
        )),
        "{e}"
    );
    for (name, patch, verb) in [
        (
            "approved",
            json!({"metadata": {"annotations": {key: null}}}),
            "removed",
        ),
        (
            "plain",
            json!({"metadata": {"annotations": {key: "carol@example.com"}}}),
            "added",
        ),
    ] {
        let e = api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect_err("an approved-by edit");
        assert!(
            message(&e).contains(&format!(
                "the annotation signalman.dev/approved-by cannot be {verb} after the WorkflowSignal was created"
            )),
            "{name}: {e}"
        );
    }
    let still = api.get("approved").await.unwrap();
    assert_eq!(
        annotation(&still.metadata, key).as_deref(),
        Some("carol@example.com")
    );
    // Other metadata may still change, with approved-by as it was.
    api.patch(
        "approved",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"labels": {"x": "y"}, "annotations": {"note": "ok"}}})),
    )
    .await
    .expect("a label and another annotation");
    api.patch(
        "plain",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"labels": {"x": "y"}}})),
    )
    .await
    .expect("a label on a signal without approved-by");
}

/// A status as the operator writes it on success.
fn succeeded(attempts: u32, requested_by: &str) -> SignalStatus {
    SignalStatus {
        observed_generation: Some(1),
        phase: Some(Phase::Succeeded),
        attempts,
        requested_by: Some(requested_by.to_string()),
        message: Some("signal delivered on attempt 1".into()),
        ..Default::default()
    }
}

async fn put_status(
    client: &kube::Client,
    ns: &str,
    name: &str,
    status: &SignalStatus,
) -> Result<WorkflowSignal, kube::Error> {
    let api: Api<WorkflowSignal> = Api::namespaced(client.clone(), ns);
    let mut obj = api.get(name).await?;
    obj.status = Some(status.clone());
    api.replace_status(name, &PostParams::default(), &obj).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_operator_writes_status_and_finished_stays_finished() {
    // The malformed tests loosen the signal CRDs for a moment; these need the real schema.
    let _schema = crate::common::CRD_SCHEMA.read().await;
    let env = env();
    let admin = env.client().await;
    let ops = namespace(&admin, "pol-ops", &[]).await;
    let team = unique("t");
    let ns = namespace(&admin, "pol-status", &[("team", &team)]).await;
    let mut inst = Installed::apply(&ops, &[&ns], "us-east-1");
    inst.policy(
        "all",
        json!({
            "namespaceSelector": {"matchLabels": {"team": team}},
            "regions": ["*"],
            "swf": {"domains": ["*"], "workflowIds": ["*"]},
        }),
    );
    inst.judge(&admin, &ns).await;
    let operator = env.client_as(&inst.operator).await;
    bind(
        &admin,
        &ns,
        &format!("{}-signal-author", inst.fullname),
        "eve",
    )
    .await;
    let eve = env.client_as("eve").await;
    // A user whose role (wrongly) grants status writes: only admission stops them.
    let broad = unique("status-writer");
    run(
        env.kubectl().args([
            "create",
            "clusterrole",
            &broad,
            "--verb=get,update,patch",
            "--resource=workflowsignals.signalman.dev,workflowsignals.signalman.dev/status",
        ]),
        None,
    )
    .expect("a broad role");
    bind(&admin, &ns, &broad, "mallory").await;
    let mallory = env.client_as("mallory").await;

    // The operator delivers: its status write is accepted.
    let eve_api: Api<WorkflowSignal> = Api::namespaced(eve.clone(), &ns);
    create_eventually(&eve_api, &wf_signal("paid", "d", "w", None)).await;
    let e;
    let deadline = Instant::now() + Duration::from_secs(30);
    // The operator's Role is applied with the policies; RBAC caches it at once, admission
    // policies after a moment: retry until a stranger's write is refused by admission.
    loop {
        let r = put_status(&mallory, &ns, "paid", &SignalStatus::default()).await;
        match r {
            Err(kube::Error::Api(refusal))
                if refusal.message.contains("only the signalman operator") =>
            {
                e = refusal;
                break;
            }
            other => {
                assert!(Instant::now() < deadline, "never refused: {other:?}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    assert_eq!(e.code, 403);
    assert!(
        e.message.contains(&format!(
            "namespace {ns}: only the signalman operator ({}) may write the status of a WorkflowSignal, not mallory",
            inst.operator
        )),
        "{}",
        e.message
    );
    put_status(&operator, &ns, "paid", &succeeded(1, "eve"))
        .await
        .expect("the operator records Succeeded");

    // Blanking or forging it: an author has no right to (RBAC, 403), a broader role and even a
    // cluster administrator are refused (the CRD's transition rules answer first, 422; the
    // admission policy would refuse them too, 403, as for the fresh signal below).
    for (who, client) in [("eve", &eve), ("mallory", &mallory), ("admin", &admin)] {
        for status in [
            SignalStatus::default(),
            SignalStatus {
                phase: Some(Phase::Pending),
                ..succeeded(1, "eve")
            },
        ] {
            let e = put_status(client, &ns, "paid", &status)
                .await
                .expect_err("a status write by someone else");
            assert!(
                matches!(e, kube::Error::Api(ref a) if a.code == 403 || a.code == 422),
                "{who}: {e}"
            );
        }
    }
    let still: WorkflowSignal = Api::namespaced(admin.clone(), &ns)
        .get("paid")
        .await
        .unwrap();
    assert_eq!(still.status.unwrap().phase, Some(Phase::Succeeded));

    // The CRD's transition rules bind the operator too.
    for (status, expected) in [
        (
            SignalStatus {
                phase: Some(Phase::Pending),
                ..succeeded(1, "eve")
            },
            "status.phase Succeeded or Failed is final",
        ),
        (
            SignalStatus::default(),
            "status.phase Succeeded or Failed is final",
        ),
        (succeeded(0, "eve"), "status.attempts never decreases"),
        (
            succeeded(1, "mallory"),
            "status.requestedBy is immutable once set",
        ),
    ] {
        let e = put_status(&operator, &ns, "paid", &status)
            .await
            .expect_err("a transition the CRD forbids");
        assert!(message(&e).contains(expected), "{expected:?} not in {e}");
    }
    // What the operator does write stays valid: a throttled attempt given back moves to
    // throttledRetries (the sum does not shrink), a repair of a finished status keeps its phase.
    create_eventually(&eve_api, &wf_signal("busy", "d", "w", None)).await;
    let claimed = SignalStatus {
        phase: Some(Phase::Sending),
        attempts: 1,
        ..Default::default()
    };
    // Forging Succeeded on a signal not yet sent (a fake GitOps health gate): only admission
    // stands in the way, and it does.
    for client in [&mallory, &admin] {
        let e = put_status(client, &ns, "busy", &succeeded(1, "eve"))
            .await
            .expect_err("a forged Succeeded");
        assert!(message(&e).contains("only the signalman operator"), "{e}");
    }
    put_status(&operator, &ns, "busy", &claimed).await.unwrap();
    let refunded = SignalStatus {
        phase: Some(Phase::Pending),
        attempts: 0,
        throttled_retries: 1,
        ..Default::default()
    };
    put_status(&operator, &ns, "busy", &refunded)
        .await
        .expect("a throttled attempt given back");
    let mut repaired = succeeded(1, "eve");
    repaired.message = Some("signal delivered".into());
    put_status(&operator, &ns, "paid", &repaired)
        .await
        .expect("a finished status repaired in place");
    let _ = run(env.kubectl().args(["delete", "clusterrole", &broad]), None);
}

/// `kubectl auth can-i` as the chart's roles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_roles_allow_what_they_should_and_nothing_more() {
    // The malformed tests loosen the signal CRDs for a moment; these need the real schema.
    let _schema = crate::common::CRD_SCHEMA.read().await;
    let env = env();
    let admin = env.client().await;
    let ops = namespace(&admin, "pol-ops", &[]).await;
    let ns = namespace(&admin, "pol-roles", &[]).await;
    let inst = Installed::apply(&ops, &[&ns], "us-east-1");
    bind(
        &admin,
        &ns,
        &format!("{}-signal-author", inst.fullname),
        "ann",
    )
    .await;
    bind(
        &admin,
        &ns,
        &format!("{}-signal-viewer", inst.fullname),
        "vic",
    )
    .await;
    let can = |user: &str, args: &[&str]| -> bool {
        let mut cmd = env.kubectl();
        cmd.args(["auth", "can-i"]).args(args).args(["--as", user]);
        match run(&mut cmd, None) {
            Ok(out) => out.trim() == "yes",
            Err(out) if out.lines().any(|l| l.trim() == "no") => false,
            Err(e) => panic!("kubectl auth can-i {args:?} as {user}: {e}"),
        }
    };
    let n = ns.as_str();
    let o = inst.release_ns.as_str();
    let op = inst.operator.as_str();
    for (user, args, want) in [
        // Authors: create, read, delete signals; never status, receipts or policies.
        (
            "ann",
            vec!["create", "workflowsignals.signalman.dev", "-n", n],
            true,
        ),
        (
            "ann",
            vec!["create", "automationsignals.signalman.dev", "-n", n],
            true,
        ),
        (
            "ann",
            vec!["delete", "automationsignals.signalman.dev", "-n", n],
            true,
        ),
        (
            "ann",
            vec!["watch", "workflowsignals.signalman.dev", "-n", n],
            true,
        ),
        (
            "ann",
            vec![
                "update",
                "workflowsignals.signalman.dev",
                "--subresource=status",
                "-n",
                n,
            ],
            false,
        ),
        (
            "ann",
            vec![
                "patch",
                "automationsignals.signalman.dev",
                "--subresource=status",
                "-n",
                n,
            ],
            false,
        ),
        (
            "ann",
            vec!["update", "workflowsignals.signalman.dev", "-n", n],
            false,
        ),
        (
            "ann",
            vec!["create", "signalreceipts.signalman.dev", "-n", o],
            false,
        ),
        ("ann", vec!["create", "signalpolicies.signalman.dev"], false),
        // Viewers: read only.
        (
            "vic",
            vec!["list", "workflowsignals.signalman.dev", "-n", n],
            true,
        ),
        (
            "vic",
            vec!["create", "workflowsignals.signalman.dev", "-n", n],
            false,
        ),
        (
            "vic",
            vec!["delete", "workflowsignals.signalman.dev", "-n", n],
            false,
        ),
        // The operator: exactly what it uses.
        (
            op,
            vec!["watch", "workflowsignals.signalman.dev", "-n", n],
            true,
        ),
        (
            op,
            vec![
                "update",
                "workflowsignals.signalman.dev",
                "--subresource=status",
                "-n",
                n,
            ],
            true,
        ),
        (
            op,
            vec![
                "patch",
                "workflowsignals.signalman.dev",
                "--subresource=status",
                "-n",
                n,
            ],
            false,
        ),
        (
            op,
            vec![
                "get",
                "workflowsignals.signalman.dev",
                "--subresource=status",
                "-n",
                n,
            ],
            false,
        ),
        (
            op,
            vec!["create", "workflowsignals.signalman.dev", "-n", n],
            false,
        ),
        (
            op,
            vec!["delete", "automationsignals.signalman.dev", "-n", n],
            true,
        ),
        (op, vec!["create", "events.events.k8s.io", "-n", n], true),
        (op, vec!["create", "events", "-n", n], false),
        (op, vec!["list", "signalpolicies.signalman.dev"], true),
        (
            op,
            vec![
                "update",
                "signalpolicies.signalman.dev",
                "--subresource=status",
            ],
            true,
        ),
        (op, vec!["create", "signalpolicies.signalman.dev"], false),
        (op, vec!["update", "signalpolicies.signalman.dev"], false),
        (op, vec!["watch", "namespaces"], true),
        (op, vec!["update", "namespaces"], false),
        (
            op,
            vec!["create", "signalreceipts.signalman.dev", "-n", o],
            true,
        ),
        (op, vec!["get", "secrets", "-n", o], false),
        (op, vec!["list", "secrets", "-A"], false),
        (op, vec!["get", "configmaps", "-n", o], false),
        (op, vec!["list", "configmaps", "-n", n], false),
    ] {
        assert_eq!(
            can(user, &args),
            want,
            "kubectl auth can-i {args:?} as {user}"
        );
    }
    drop(inst);
}

/// The policy examples are valid SignalPolicies for the real API server; bad ones are refused
/// with the CRD's messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_examples_are_accepted_and_bad_policies_refused() {
    // The malformed tests loosen the signal CRDs for a moment; these need the real schema.
    let _schema = crate::common::CRD_SCHEMA.read().await;
    let env = env();
    run(
        env.kubectl().args([
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/signalpolicies.signalman.dev",
        ]),
        None,
    )
    .expect("the SignalPolicy CRD");
    let dir = signalman_testenv::repo_root().join("examples/policies");
    let out = run(
        env.kubectl()
            .args(["apply", "--dry-run=server", "-f"])
            .arg(&dir),
        None,
    )
    .unwrap_or_else(|e| panic!("examples/policies refused:\n{e}"));
    assert_eq!(out.matches("(server dry run)").count(), 3, "{out}");
    for (spec, expected) in [
        (
            json!({"namespaceSelector": {}, "regions": ["*"]}),
            "a SignalPolicy must allow something: set swf, ssm or both",
        ),
        (
            json!({"namespaceSelector": {}, "regions": ["*"], "swf": {"domains": ["or[ders]"], "workflowIds": ["*"]}}),
            "patterns may hold letters, digits",
        ),
        (
            json!({"namespaceSelector": {}, "regions": ["*"], "swf": {"domains": ["*"], "workflowIds": ["*"]}, "roleArn": "arn:aws:iam::123456789012:user/bob"}),
            "roleArn must be an IAM role ARN",
        ),
        (
            json!({"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "Maybe"}]}, "regions": ["*"], "swf": {"domains": ["*"], "workflowIds": ["*"]}}),
            "Unsupported value: \"Maybe\"",
        ),
    ] {
        let doc = json!({
            "apiVersion": "signalman.dev/v1alpha1",
            "kind": "SignalPolicy",
            "metadata": {"name": unique("bad")},
            "spec": spec,
        });
        let e = run(
            env.kubectl().args(["apply", "--dry-run=server", "-f", "-"]),
            Some(&doc.to_string()),
        )
        .expect_err("a bad SignalPolicy");
        assert!(e.contains(expected), "{expected:?} not in:\n{e}");
    }
}

/// `helm install` with `policy.create=true`: the hook installs the one SignalPolicy after the
/// release, and it admits the namespace it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_values_policy_admits_its_namespace() {
    // The malformed tests loosen the signal CRDs for a moment; these need the real schema.
    let _schema = crate::common::CRD_SCHEMA.read().await;
    let env = env();
    let admin = env.client().await;
    let ops = namespace(&admin, "pol-helm", &[]).await;
    let release = unique("polv");
    let label = format!("signalman.dev/policy-test={release}");
    let ns = namespace(
        &admin,
        "pol-demo",
        &[("signalman.dev/policy-test", &release)],
    )
    .await;
    let mut cmd = env.helm();
    cmd.args(["install", &release])
        .arg(signalman_testenv::repo_root().join("charts/signalman"))
        .args(["--namespace", &ops, "--set", "crds.install=false"])
        .args(["--set", "aws.region=us-east-1"])
        .args(["--set", "policy.create=true"])
        .args(["--set", &format!("policy.namespace={ns}")])
        .args([
            "--set-json",
            &format!(
                "admission.namespaceSelector={}",
                json!({"matchLabels": {"signalman.dev/policy-test": release}})
            ),
        ]);
    let installed = run(&mut cmd, None).unwrap_or_else(|e| panic!("helm install:\n{e}"));
    // The API server serves MutatingAdmissionPolicy v1 (Kubernetes 1.36): Helm's discovery
    // renders them, and the NOTES say so, with nothing left out.
    assert!(
        installed.contains("MutatingAdmissionPolicies admissionregistration.k8s.io/v1."),
        "{installed}"
    );
    assert!(
        !installed.contains("No MutatingAdmissionPolicies were installed"),
        "{installed}"
    );
    let policy = format!("{release}-signalman");
    let cleanup = || {
        let _ = run(
            env.helm()
                .args(["uninstall", &release, "--namespace", &ops]),
            None,
        );
        // A hook's object outlives the release (documented): removed by hand.
        let _ = run(
            env.kubectl()
                .args(["delete", "signalpolicy", &policy, "--ignore-not-found"]),
            None,
        );
    };
    let got = run(
        env.kubectl().args([
            "get",
            "signalpolicy",
            &policy,
            "-o",
            "jsonpath={.spec.namespaceSelector}",
        ]),
        None,
    );
    let selector = got.unwrap_or_else(|e| {
        cleanup();
        panic!("the values policy was not installed: {e} ({label})")
    });
    assert!(
        selector.contains(&format!("\"kubernetes.io/metadata.name\":\"{ns}\"")),
        "{selector}"
    );
    // Another namespace under the same admission policies is refused (which also shows that
    // the policies are in force), the policy's namespace admitted.
    let other = namespace(
        &admin,
        "pol-other",
        &[("signalman.dev/policy-test", &release)],
    )
    .await;
    let e = refused_eventually(
        &workflow_yaml(&other, "refused", "any", "thing", ""),
        "no SignalPolicy allows",
    );
    assert!(
        e.contains(&format!("namespace {other}: no SignalPolicy allows")),
        "{e}"
    );
    admitted_eventually(&workflow_yaml(&ns, "via-values", "any", "thing", ""));
    let wf: WorkflowSignal = Api::namespaced(admin.clone(), &ns)
        .get("via-values")
        .await
        .unwrap();
    assert_eq!(
        annotation(&wf.metadata, "signalman.dev/admitted-by").as_deref(),
        Some(policy.as_str())
    );
    cleanup();
}

/// End to end, with the real operator running as the chart's ServiceAccount under the chart's
/// admission policies: a signal is delivered once; blanking or forging its status afterwards
/// (an author, a too-broad role) is refused, and AWS still holds exactly one signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivered_signal_whose_status_is_attacked_is_not_sent_again() {
    let _schema = crate::common::CRD_SCHEMA.read().await;
    let env = env();
    let admin = env.client().await;
    let ops = namespace(&admin, "pol-attack-ops", &[]).await;
    let team = unique("t");
    let ns = namespace(&admin, "pol-attack", &[("team", &team)]).await;
    let mut inst = Installed::apply(&ops, &[&ns], "us-east-1");
    inst.policy(
        "all",
        json!({
            "namespaceSelector": {"matchLabels": {"team": team}},
            "regions": ["*"],
            "swf": {"domains": ["*"], "workflowIds": ["*"]},
        }),
    );
    inst.judge(&admin, &ns).await;
    bind(
        &admin,
        &ns,
        &format!("{}-signal-author", inst.fullname),
        "eve",
    )
    .await;
    let eve = env.client_as("eve").await;
    let broad = unique("status-writer");
    run(
        env.kubectl().args([
            "create",
            "clusterrole",
            &broad,
            "--verb=get,update,patch",
            "--resource=workflowsignals.signalman.dev,workflowsignals.signalman.dev/status",
        ]),
        None,
    )
    .expect("a broad role");
    bind(&admin, &ns, &broad, "mallory").await;
    let mallory = env.client_as("mallory").await;

    let swf = crate::common::SwfWorld::new(env, &unique("attack")).await;
    let run_id = swf.start("wf").await;
    let world = crate::common::World {
        env,
        client: admin.clone(),
        ns: ns.clone(),
    };
    // The API server loads the admission policies asynchronously: the signal is created (before
    // the operator runs) until the requested-by stamp is in force.
    inst.wait_in_force().await;
    let eve_api: Api<WorkflowSignal> = Api::namespaced(eve.clone(), &ns);
    create_stamped(
        &eve_api,
        &admin,
        &wf_signal("once", &swf.domain, "wf", Some("x")),
    )
    .await;
    let operator = inst.operator(&world, "op-attack", &[]);
    let status = world
        .wait_done::<WorkflowSignal>("once", Duration::from_secs(60))
        .await;
    assert_eq!(
        status.phase,
        Some(Phase::Succeeded),
        "{status:?}\n{}",
        operator.log_text()
    );
    assert_eq!(status.requested_by.as_deref(), Some("eve"), "{status:?}");
    for (who, client) in [("eve", &eve), ("mallory", &mallory)] {
        for forged in [
            SignalStatus::default(),
            SignalStatus {
                phase: Some(Phase::Pending),
                ..status.clone()
            },
        ] {
            let e = put_status(client, &ns, "once", &forged)
                .await
                .expect_err("a status write by someone else");
            assert!(
                matches!(e, kube::Error::Api(ref a) if a.code == 403 || a.code == 422),
                "{who}: {e}"
            );
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        swf.signals("wf", &run_id).await,
        vec![("approve".to_string(), Some("x".to_string()))],
        "exactly one signal in AWS"
    );
    let still: WorkflowSignal = Api::namespaced(admin.clone(), &ns)
        .get("once")
        .await
        .unwrap();
    assert_eq!(still.status.and_then(|s| s.phase), Some(Phase::Succeeded));
}

/// requested-by is evidence only where the chart's admission judged the signal. A tenant in a
/// namespace a SignalPolicy allows but the admission bindings do not select writes someone
/// else's name and an approver: the signal is still sent (the policy allows it), with no
/// requester, its approved-by ignored, and an Event saying why. In a judged namespace the stamp
/// is the author.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requester_is_believed_only_where_admission_judged_the_signal() {
    let _schema = crate::common::CRD_SCHEMA.read().await;
    let env = env();
    let admin = env.client().await;
    let ops = namespace(&admin, "pol-rq-ops", &[]).await;
    let team = unique("t");
    let judged = namespace(&admin, "pol-rq-judged", &[("team", &team)]).await;
    let free = namespace(&admin, "pol-rq-free", &[("team", &team)]).await;
    let mut inst = Installed::apply(&ops, &[&judged, &free], "us-east-1");
    inst.policy(
        "all",
        json!({
            "namespaceSelector": {"matchLabels": {"team": team}},
            "regions": ["*"],
            "swf": {"domains": ["*"], "workflowIds": ["*"]},
            "approvedByAsserters": [{"namespace": "argocd", "name": "argocd-application-controller"}],
        }),
    );
    inst.judge(&admin, &judged).await;
    let author_role = format!("{}-signal-author", inst.fullname);
    for ns in [&judged, &free] {
        bind(&admin, ns, &author_role, "eve").await;
    }
    let eve = env.client_as("eve").await;
    let swf = crate::common::SwfWorld::new(env, &unique("requester")).await;
    let run_id = swf.start("wf").await;

    inst.wait_in_force().await;
    let judged_api: Api<WorkflowSignal> = Api::namespaced(eve.clone(), &judged);
    let mine = create_stamped(
        &judged_api,
        &admin,
        &wf_signal("mine", &swf.domain, "wf", Some("a")),
    )
    .await;
    assert_eq!(
        annotation(&mine.metadata, "signalman.dev/requested-by").as_deref(),
        Some("eve")
    );
    let mut forged = wf_signal("forged", &swf.domain, "wf", Some("b"));
    forged.metadata.annotations = Some(
        [
            (
                "signalman.dev/requested-by".to_string(),
                "system:serviceaccount:argocd:argocd-application-controller".to_string(),
            ),
            ("signalman.dev/approved-by".to_string(), "ceo".to_string()),
        ]
        .into(),
    );
    Api::<WorkflowSignal>::namespaced(eve.clone(), &free)
        .create(&PostParams::default(), &forged)
        .await
        .expect("nothing judges this namespace at admission");

    let watched = format!("{judged},{free}");
    let world = crate::common::World {
        env,
        client: admin.clone(),
        ns: judged.clone(),
    };
    let operator = inst.operator(
        &world,
        "op-requester",
        &[("SIGNALMAN_NAMESPACES", watched.as_str())],
    );
    let status = world
        .wait_done::<WorkflowSignal>("mine", Duration::from_secs(60))
        .await;
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    assert_eq!(status.requested_by.as_deref(), Some("eve"), "{status:?}");

    let free_world = crate::common::World {
        env,
        client: admin.clone(),
        ns: free.clone(),
    };
    let status = free_world
        .wait_done::<WorkflowSignal>("forged", Duration::from_secs(60))
        .await;
    assert_eq!(
        status.phase,
        Some(Phase::Succeeded),
        "{status:?}\n{}",
        operator.log_text()
    );
    assert_eq!(
        status.requested_by, None,
        "a requester no admission checked was believed: {status:?}"
    );
    free_world
        .wait_event("forged", "RequesterUnproven", Duration::from_secs(20))
        .await;
    let notes = free_world.event_notes("forged", "RequesterUnproven").await;
    assert!(
        notes
            .iter()
            .any(|n| n.contains(&format!("namespace {free} is not judged"))),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .all(|n| !n.contains("argocd-application-controller")),
        "the annotation's value stays out of the Event: {notes:?}"
    );
    let mut sent = swf.signals("wf", &run_id).await;
    sent.sort();
    assert_eq!(
        sent,
        vec![
            ("approve".to_string(), Some("a".to_string())),
            ("approve".to_string(), Some("b".to_string())),
        ]
    );
}
