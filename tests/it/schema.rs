//! The API server itself refuses bad manifests, with a message a person understands (the API
//! in docs/design.md): required fields, lengths, the signal type enum, the payload rules (CEL),
//! and the immutable spec. Also what `kubectl get` shows: the `signals` category, the short
//! names and the printer columns (Ready and its reason by default). No operator runs here:
//! everything is the CRD's doing.
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use signalman::api::{
    AutomationSignal, WorkflowSignal, AUTOMATION_SIGNAL_IMMUTABLE_MESSAGE, PAYLOAD_KEY_MESSAGE,
    RESUME_MESSAGE, START_STEP_MESSAGE, STOP_STEP_MESSAGE, WORKFLOW_SIGNAL_IMMUTABLE_MESSAGE,
};

use crate::common::{World, CRD_SCHEMA};

const EXECUTION_ID: &str = "73c8eef8-f4ee-4a05-820c-e354fEXAMPLE";

fn dynamic<K>(world: &World) -> Api<DynamicObject>
where
    K: kube::Resource<DynamicType = ()>,
{
    Api::namespaced_with(
        world.client.clone(),
        &world.ns,
        &ApiResource::erase::<K>(&()),
    )
}

fn workflow_spec() -> Value {
    json!({"domain": "orders", "workflowId": "order-42", "signalName": "approve"})
}

fn automation_spec() -> Value {
    json!({"automationExecutionId": EXECUTION_ID, "signalType": "Approve"})
}

fn manifest(kind: &str, name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "signalman.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("a manifest")
}

/// `base` with `edit` applied: `null` removes a field, anything else sets it.
fn with(base: Value, edit: Value) -> Value {
    let mut spec = base;
    for (k, v) in edit.as_object().expect("an object") {
        if v.is_null() {
            spec.as_object_mut().expect("an object").remove(k);
        } else {
            spec[k] = v.clone();
        }
    }
    spec
}

/// Creates the object and returns the API server's refusal as (HTTP code, message), or
/// `None` when it was accepted.
async fn refusal(api: &Api<DynamicObject>, obj: &DynamicObject) -> Option<(u16, String)> {
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => None,
        Err(kube::Error::Api(status)) => Some((status.code, status.message.clone())),
        Err(e) => panic!("creating {:?}: {e}", obj.metadata.name),
    }
}

/// One bad manifest: what it is, its spec, and words the refusal must contain.
struct Case {
    what: &'static str,
    spec: Value,
    expect: Vec<String>,
}

fn case(what: &'static str, spec: Value, expect: &[&str]) -> Case {
    Case {
        what,
        spec,
        expect: expect.iter().map(|s| s.to_string()).collect(),
    }
}

/// Creates every case (each must be refused with 422 and a message containing its words) and
/// reports every mismatch at once.
async fn assert_refused(api: &Api<DynamicObject>, kind: &str, cases: Vec<Case>) {
    let mut wrong = Vec::new();
    for (i, c) in cases.into_iter().enumerate() {
        let name = format!("bad-{i}");
        match refusal(api, &manifest(kind, &name, c.spec)).await {
            None => wrong.push(format!("{kind} {}: accepted", c.what)),
            Some((code, message)) => {
                let missing: Vec<&String> = c
                    .expect
                    .iter()
                    .filter(|w| !message.contains(w.as_str()))
                    .collect();
                if code != 422 || !missing.is_empty() {
                    wrong.push(format!(
                        "{kind} {}: HTTP {code}, missing {missing:?} in: {message}",
                        c.what
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_workflow_signals_are_refused_with_a_clear_message() {
    let _real_schema = CRD_SCHEMA.read().await;
    let world = World::new("schema-wf").await;
    let api = dynamic::<WorkflowSignal>(&world);
    // The base is valid, as are the longest allowed values.
    let longest = with(
        workflow_spec(),
        json!({
            "domain": "d".repeat(256), "workflowId": "w".repeat(256), "signalName": "s".repeat(256),
            "runId": "r".repeat(64), "input": "i".repeat(32768),
        }),
    );
    for (i, spec) in [workflow_spec(), longest].into_iter().enumerate() {
        let ok = manifest("WorkflowSignal", &format!("good-{i}"), spec);
        assert_eq!(
            refusal(&api, &ok).await,
            None,
            "a valid manifest is accepted"
        );
    }
    let too_long = "Too long: may not be more than";
    assert_refused(
        &api,
        "WorkflowSignal",
        vec![
            case(
                "without domain",
                with(workflow_spec(), json!({"domain": null})),
                &["spec.domain", "Required value"],
            ),
            case(
                "without workflowId",
                with(workflow_spec(), json!({"workflowId": null})),
                &["spec.workflowId", "Required value"],
            ),
            case(
                "without signalName",
                with(workflow_spec(), json!({"signalName": null})),
                &["spec.signalName", "Required value"],
            ),
            case(
                "with an empty domain",
                with(workflow_spec(), json!({"domain": ""})),
                &["spec.domain", "at least 1"],
            ),
            case(
                "with a 257-character domain",
                with(workflow_spec(), json!({"domain": "d".repeat(257)})),
                &["spec.domain", too_long, "256"],
            ),
            case(
                "with a 257-character workflowId",
                with(workflow_spec(), json!({"workflowId": "w".repeat(257)})),
                &["spec.workflowId", too_long, "256"],
            ),
            case(
                "with a 257-character signalName",
                with(workflow_spec(), json!({"signalName": "s".repeat(257)})),
                &["spec.signalName", too_long, "256"],
            ),
            case(
                "with a 65-character runId",
                with(workflow_spec(), json!({"runId": "r".repeat(65)})),
                &["spec.runId", too_long, "64"],
            ),
            case(
                "with a 32769-character input",
                with(workflow_spec(), json!({"input": "i".repeat(32769)})),
                &["spec.input", too_long, "32768"],
            ),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_automation_signals_are_refused_with_a_clear_message() {
    let world = World::new("schema-am").await;
    let api = dynamic::<AutomationSignal>(&world);
    let payload = |p: Value| with(automation_spec(), json!({ "payload": p }));
    // The base is valid, as are the largest allowed payloads.
    let most_keys: serde_json::Map<String, Value> =
        (0..200).map(|i| (format!("k{i}"), json!(["v"]))).collect();
    for (i, spec) in [
        automation_spec(),
        payload(json!({"Comment": ["Looks good"]})),
        payload(Value::Object(most_keys.clone())),
        payload(json!({ "k".repeat(50): vec!["v".repeat(512); 50] })),
        with(
            automation_spec(),
            json!({"signalType": "StartStep", "payload": {"StepName": ["deploy"]}}),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let ok = manifest("AutomationSignal", &format!("good-{i}"), spec);
        assert_eq!(
            refusal(&api, &ok).await,
            None,
            "a valid manifest is accepted"
        );
    }
    let mut too_many_keys = most_keys;
    too_many_keys.insert("k200".into(), json!(["v"]));
    let step = |signal: &str, p: Value| {
        with(
            automation_spec(),
            json!({"signalType": signal, "payload": p}),
        )
    };
    assert_refused(
        &api,
        "AutomationSignal",
        vec![
            case(
                "without automationExecutionId",
                with(automation_spec(), json!({"automationExecutionId": null})),
                &["spec.automationExecutionId", "Required value"],
            ),
            case(
                "without signalType",
                with(automation_spec(), json!({"signalType": null})),
                &["spec.signalType", "Required value"],
            ),
            case(
                "with a 35-character execution id",
                with(
                    automation_spec(),
                    json!({"automationExecutionId": "a".repeat(35)}),
                ),
                &[
                    "spec.automationExecutionId",
                    "should be at least 36 chars long",
                ],
            ),
            case(
                "with a 37-character execution id",
                with(
                    automation_spec(),
                    json!({"automationExecutionId": "a".repeat(37)}),
                ),
                &[
                    "spec.automationExecutionId",
                    "Too long: may not be more than 36",
                ],
            ),
            case(
                "with an unknown signalType",
                with(automation_spec(), json!({"signalType": "Approved"})),
                &[
                    "spec.signalType",
                    "Unsupported value: \"Approved\"",
                    "\"Approve\"",
                    "\"Revoke\"",
                ],
            ),
            case(
                "StartStep without payload",
                with(automation_spec(), json!({"signalType": "StartStep"})),
                &["spec.payload", START_STEP_MESSAGE],
            ),
            case(
                "StartStep with a payload but no StepName",
                step("StartStep", json!({"Comment": ["x"]})),
                &["spec.payload", START_STEP_MESSAGE],
            ),
            case(
                "StartStep with two StepNames",
                step("StartStep", json!({"StepName": ["a", "b"]})),
                &["spec.payload", START_STEP_MESSAGE],
            ),
            case(
                "Resume without StepName",
                step("Resume", json!({"StepExecutionId": ["x"]})),
                &["spec.payload", RESUME_MESSAGE],
            ),
            case(
                "StopStep without StepExecutionId",
                step("StopStep", json!({"StepName": ["x"]})),
                &["spec.payload", STOP_STEP_MESSAGE],
            ),
            case(
                "a payload of 201 keys",
                payload(Value::Object(too_many_keys)),
                &["spec.payload", "Too many: 201: must have at most 200 items"],
            ),
            case(
                "an empty payload",
                payload(json!({})),
                &["spec.payload", "should have at least 1 properties"],
            ),
            case(
                "a payload key of 51 characters",
                payload(json!({ "k".repeat(51): ["v"] })),
                &["spec.payload", PAYLOAD_KEY_MESSAGE],
            ),
            case(
                "a payload value of 513 characters",
                payload(json!({"Comment": ["v".repeat(513)]})),
                &[
                    "spec.payload.Comment[0]",
                    "Too long: may not be more than 512",
                ],
            ),
            case(
                "an empty payload value",
                payload(json!({"Comment": [""]})),
                &["spec.payload.Comment[0]", "should be at least 1 chars long"],
            ),
            case(
                "a payload key with 51 values",
                payload(json!({"Comment": vec!["v"; 51]})),
                &[
                    "spec.payload.Comment",
                    "Too many: 51: must have at most 50 items",
                ],
            ),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_cannot_be_edited_after_creation() {
    let _real_schema = CRD_SCHEMA.read().await;
    let world = World::new("schema-immutable").await;
    for (kind, api, spec, edit, message) in [
        (
            "WorkflowSignal",
            dynamic::<WorkflowSignal>(&world),
            workflow_spec(),
            json!({"signalName": "reject"}),
            WORKFLOW_SIGNAL_IMMUTABLE_MESSAGE,
        ),
        (
            "AutomationSignal",
            dynamic::<AutomationSignal>(&world),
            automation_spec(),
            json!({"signalType": "Reject"}),
            AUTOMATION_SIGNAL_IMMUTABLE_MESSAGE,
        ),
    ] {
        let name = "sent-once";
        api.create(&PostParams::default(), &manifest(kind, name, spec.clone()))
            .await
            .expect("a valid manifest is accepted");
        for edit in [edit, json!({"region": "eu-west-1"})] {
            let err = api
                .patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "spec": edit })),
                )
                .await
                .expect_err("a spec edit is refused");
            match err {
                kube::Error::Api(s) => {
                    assert_eq!(s.code, 422, "{kind}: {s:?}");
                    assert!(
                        s.message.contains(message) && s.message.contains("spec"),
                        "{kind}: {}",
                        s.message
                    );
                }
                e => panic!("{kind}: {e}"),
            }
        }
        let obj = api.get(name).await.expect("reading");
        assert_eq!(obj.data["spec"], spec, "{kind}: the spec is unchanged");
        // Metadata stays editable (labels, annotations for GitOps tools).
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "payments"}}})),
        )
        .await
        .unwrap_or_else(|e| panic!("{kind}: labelling is allowed: {e}"));
    }
}

/// Runs kubectl in the world's namespace (with `stdin` piped in when given) and returns
/// (success, stdout, stderr). Retries while discovery does not know the kinds yet: the CRDs'
/// names and categories reach discovery a moment after they are Established.
async fn kubectl_run(world: &World, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    use std::io::Write as _;
    use std::process::Stdio;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let mut child = world
            .env
            .kubectl()
            .args(["-n", &world.ns])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        let mut input = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            input
                .write_all(text.as_bytes())
                .expect("writing to kubectl");
        }
        drop(input);
        let out = child.wait_with_output().expect("kubectl");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let undiscovered = stderr.contains("doesn't have a resource type")
            || stderr.contains("no matches for kind");
        if out.status.success() || !undiscovered || std::time::Instant::now() > deadline {
            return (out.status.success(), stdout, stderr);
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// Runs kubectl in the world's namespace; returns stdout, asserting success.
async fn kubectl(world: &World, args: &[&str]) -> String {
    let (ok, stdout, stderr) = kubectl_run(world, args, None).await;
    assert!(ok, "kubectl {args:?}: {stderr}");
    stdout
}

/// Header line split into column names.
fn header(table: &str) -> Vec<String> {
    table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The row whose first column is `name`, split into cells.
fn row(table: &str, name: &str) -> Vec<String> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|cells| cells.first().map(String::as_str) == Some(name))
        .unwrap_or_else(|| panic!("no row {name} in:\n{table}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_signals_lists_both_kinds_with_their_columns() {
    let _real_schema = CRD_SCHEMA.read().await;
    let world = World::new("schema-kubectl").await;
    let wf = dynamic::<WorkflowSignal>(&world);
    let am = dynamic::<AutomationSignal>(&world);
    wf.create(
        &PostParams::default(),
        &manifest("WorkflowSignal", "wf-one", workflow_spec()),
    )
    .await
    .expect("creating");
    am.create(
        &PostParams::default(),
        &manifest("AutomationSignal", "am-one", automation_spec()),
    )
    .await
    .expect("creating");
    // A status as the operator would write it, so the columns have something to show.
    let status = json!({"status": {"phase": "Succeeded", "attempts": 1, "runId": "run-7",
        "conditions": [{"type": "Ready", "status": "True", "reason": "Delivered", "message": "delivered",
            "lastTransitionTime": "2025-01-01T00:00:00Z"}]}});
    for (api, name) in [(&wf, "wf-one"), (&am, "am-one")] {
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("writing a status");
    }

    let all = kubectl(&world, &["get", "signals"]).await;
    assert!(
        all.contains("workflowsignal.signalman.dev/wf-one")
            && all.contains("automationsignal.signalman.dev/am-one"),
        "the signals category lists both kinds:\n{all}"
    );

    let wfsig = kubectl(&world, &["get", "wfsig"]).await;
    assert_eq!(
        header(&wfsig),
        ["NAME", "DOMAIN", "WORKFLOW", "SIGNAL", "PHASE", "ATTEMPTS", "READY", "REASON", "AGE"],
        "\n{wfsig}"
    );
    let r = row(&wfsig, "wf-one");
    assert_eq!(
        r[..8],
        [
            "wf-one",
            "orders",
            "order-42",
            "approve",
            "Succeeded",
            "1",
            "True",
            "Delivered"
        ],
        "\n{wfsig}"
    );
    let wide = kubectl(&world, &["get", "wfsig", "-o", "wide"]).await;
    let h = header(&wide);
    assert!(
        h.contains(&"RUN".to_string()) && h.contains(&"REASON".to_string()),
        "\n{wide}"
    );
    let r = row(&wide, "wf-one");
    assert!(
        r.contains(&"run-7".to_string()) && r.contains(&"Delivered".to_string()),
        "\n{wide}"
    );

    let amsig = kubectl(&world, &["get", "amsig"]).await;
    assert_eq!(
        header(&amsig),
        [
            "NAME",
            "EXECUTION",
            "SIGNAL",
            "PHASE",
            "ATTEMPTS",
            "READY",
            "REASON",
            "AGE"
        ],
        "\n{amsig}"
    );
    let r = row(&amsig, "am-one");
    assert_eq!(
        r[..7],
        [
            "am-one",
            EXECUTION_ID,
            "Approve",
            "Succeeded",
            "1",
            "True",
            "Delivered"
        ],
        "\n{amsig}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_of_a_bad_manifest_tells_the_person_why() {
    let world = World::new("schema-apply").await;
    let yaml = format!(
        "apiVersion: signalman.dev/v1alpha1\nkind: AutomationSignal\nmetadata:\n  name: start-deploy\nspec:\n  automationExecutionId: {EXECUTION_ID}\n  signalType: StartStep\n"
    );
    let (ok, _, stderr) = kubectl_run(&world, &["apply", "-f", "-"], Some(&yaml)).await;
    assert!(!ok, "accepted: {stderr}");
    assert!(
        stderr.contains("The AutomationSignal \"start-deploy\" is invalid")
            && stderr.contains("spec.payload")
            && stderr.contains(START_STEP_MESSAGE),
        "{stderr}"
    );
    // Every shipped example is accepted as is (server-side dry run).
    let examples = signalman_testenv::repo_root().join("examples");
    let examples = examples.to_str().expect("a UTF-8 path");
    let (ok, _, stderr) =
        kubectl_run(&world, &["apply", "--dry-run=server", "-f", examples], None).await;
    assert!(ok, "examples refused: {stderr}");
}
