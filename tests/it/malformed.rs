//! An object written around the schema (by an older CRD, a permissive schema for a moment, or
//! straight into etcd) fails alone with reason `InvalidSpec`; the controller keeps running and
//! keeps delivering the good ones.
//!
//! To get such objects into the cluster the test swaps the shared WorkflowSignal CRD's schema
//! for a permissive one for as short a time as it can, under the write half of
//! [`CRD_SCHEMA`], and puts the real one back before it asserts anything (and from `Drop` if it
//! panics on the way).
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::{json, Value};
use signalman::api::{Phase, SignalStatus, WorkflowSignal, WorkflowSignalSpec};

use crate::common::{condition, unique, SwfWorld, World, CRD_SCHEMA};

const CRD: &str = "workflowsignals.signalman.dev";

/// The real CRD as it was before the swap; puts it back when dropped unless already restored.
struct CrdSwap {
    original: CustomResourceDefinition,
    /// A namespace to probe the schema in (dry runs only).
    ns: String,
    restored: bool,
}

impl CrdSwap {
    /// Replaces the WorkflowSignal schema's `spec` with "any object".
    async fn permissive(client: &kube::Client, ns: &str) -> CrdSwap {
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        let original = crds.get(CRD).await.expect("reading the CRD");
        let mut loose = original.clone();
        for version in &mut loose.spec.versions {
            // Selectable fields must name typed string fields, which a loose spec has not.
            version.selectable_fields = None;
            let schema = version
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
                .expect("a schema");
            schema.properties.as_mut().expect("properties").insert(
                "spec".into(),
                JSONSchemaProps {
                    type_: Some("object".into()),
                    x_kubernetes_preserve_unknown_fields: Some(true),
                    ..Default::default()
                },
            );
        }
        let swap = CrdSwap {
            original,
            ns: ns.to_string(),
            restored: false,
        };
        crds.replace(CRD, &PostParams::default(), &loose)
            .await
            .expect("loosening the CRD");
        swap
    }

    /// Puts the real CRD back and waits until the API server enforces it again.
    async fn restore(mut self, client: &kube::Client) {
        restore(client, &self.original, &self.ns).await;
        self.restored = true;
    }
}

async fn restore(client: &kube::Client, original: &CustomResourceDefinition, ns: &str) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let current = crds.get(CRD).await.expect("reading the CRD");
        let mut real = original.clone();
        real.metadata.resource_version = current.metadata.resource_version;
        match crds.replace(CRD, &PostParams::default(), &real).await {
            Ok(_) => break,
            Err(kube::Error::Api(s)) if s.code == 409 && Instant::now() < deadline => continue,
            Err(e) => panic!("restoring the WorkflowSignal CRD: {e}"),
        }
    }
    // In force once a manifest without signalName is refused again (a dry run: nothing stays).
    let api = dynamic(client, ns);
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let probe = manifest("probe", json!({"domain": "d", "workflowId": "w"}));
    loop {
        match api.create(&dry, &probe).await {
            Err(kube::Error::Api(s)) if s.code == 422 => break,
            other => assert!(
                Instant::now() < deadline,
                "the real schema is not enforced again: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let crd = crds.get(CRD).await.expect("reading the CRD");
    let established = crd
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .any(|c| c.type_ == "Established" && c.status == "True");
    assert!(established, "the restored CRD is Established");
}

impl Drop for CrdSwap {
    fn drop(&mut self) {
        if self.restored {
            return;
        }
        // A panic between swap and restore: put the real CRD back before other tests notice,
        // on a runtime of our own (Drop cannot await).
        let original = self.original.clone();
        let ns = self.ns.clone();
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async {
                let client = crate::common::env().client().await;
                restore(&client, &original, &ns).await;
            });
        })
        .join();
        if done.is_err() {
            eprintln!("malformed: could not restore the WorkflowSignal CRD");
        }
    }
}

fn dynamic(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::erase::<WorkflowSignal>(&()),
    )
}

fn manifest(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "signalman.dev/v1alpha1",
        "kind": "WorkflowSignal",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("a manifest")
}

/// Waits for a terminal phase, reading the object untyped (its spec may not parse).
async fn wait_done_untyped(api: &Api<DynamicObject>, name: &str) -> SignalStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let obj = api.get(name).await.expect("reading the object");
        let status: Option<SignalStatus> = obj
            .data
            .get("status")
            .map(|s| serde_json::from_value(s.clone()).expect("a readable status"));
        if let Some(s) = &status {
            if matches!(s.phase, Some(Phase::Succeeded | Phase::Failed)) {
                return s.clone();
            }
        }
        assert!(Instant::now() < deadline, "{name} not done: {status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn good(name: &str, domain: &str, workflow_id: &str) -> WorkflowSignal {
    WorkflowSignal::new(
        name,
        WorkflowSignalSpec {
            domain: domain.into(),
            workflow_id: workflow_id.into(),
            run_id: None,
            signal_name: "approve".into(),
            input: None,
            region: None,
            retry: None,
            not_after: None,
            allow_duplicate: None,
            ttl_seconds_after_finished: None,
        },
    )
}

/// Creates `objects` (name, spec) in the world's namespace past the real schema: swaps in a
/// permissive one, creates them, and restores the real one before returning.
async fn create_around_schema(world: &World, objects: &[(&str, Value)]) {
    let api = dynamic(&world.client, &world.ns);
    let _exclusive = CRD_SCHEMA.write().await;
    let swap = CrdSwap::permissive(&world.client, &world.ns).await;
    // The loose schema takes effect shortly after the update: retry until it does.
    let deadline = Instant::now() + Duration::from_secs(20);
    for (name, spec) in objects {
        loop {
            match api
                .create(&PostParams::default(), &manifest(name, spec.clone()))
                .await
            {
                Ok(_) => break,
                Err(kube::Error::Api(s)) if s.code == 422 && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => panic!("creating {name} under the loose schema: {e}"),
            }
        }
    }
    swap.restore(&world.client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_objects_fail_alone_and_the_controller_keeps_going() {
    let world = World::new("malformed").await;
    let swf = SwfWorld::new(world.env, &unique("malformed")).await;
    let api = dynamic(&world.client, &world.ns);
    // Each breaks the real schema in its own way: (name, spec, field named, value never echoed).
    let long_domain = "secretdomain".repeat(25);
    let bad = [
        (
            "no-signal-name",
            json!({"domain": swf.domain, "workflowId": "wf-a", "input": "hush-hush-input"}),
            "signalName",
            "hush-hush-input",
        ),
        (
            "domain-too-long",
            json!({"domain": long_domain, "workflowId": "wf-a", "signalName": "approve"}),
            "domain",
            "secretdomain",
        ),
        (
            "attempts-out-of-range",
            json!({"domain": swf.domain, "workflowId": "wf-a", "signalName": "approve",
                "retry": {"maxAttempts": 7777777}}),
            "maxAttempts",
            "7777777",
        ),
    ];
    let objects: Vec<(&str, Value)> = bad.iter().map(|b| (b.0, b.1.clone())).collect();
    create_around_schema(&world, &objects).await;

    let run_a = swf.start("wf-good-a").await;
    world
        .create(&good("good-a", &swf.domain, "wf-good-a"))
        .await;
    let mut operator = world.operator("op-malformed", &[]);

    // Every case is checked before anything is asserted, so one report shows them all.
    let mut wrong = Vec::new();
    for (name, _, field, secret) in &bad {
        let status = wait_done_untyped(&api, name).await;
        let message = status.message.clone().unwrap_or_default();
        let checks = [
            (status.phase == Some(Phase::Failed), "phase Failed"),
            (status.attempts == 0, "no attempt spent"),
            (
                crate::common::ready_reason(&status).as_deref() == Some("InvalidSpec"),
                "reason InvalidSpec",
            ),
            (
                condition(&status, "Stalled").as_deref() == Some("True"),
                "Stalled",
            ),
            (message.contains(field), "the message names the field"),
            (
                !message.contains(secret)
                    && status
                        .conditions
                        .iter()
                        .all(|c| !c.message.contains(secret)),
                "the value is not quoted",
            ),
        ];
        for (ok, what) in checks {
            if !ok {
                wrong.push(format!("{name}: not {what}: {message:?} {status:?}"));
            }
        }
        world
            .wait_event(name, "Failed", Duration::from_secs(10))
            .await;
    }
    let status = world
        .wait_done::<WorkflowSignal>("good-a", Duration::from_secs(30))
        .await;
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    assert_eq!(
        swf.signals("wf-good-a", &run_a).await.len(),
        1,
        "good-a delivered once"
    );

    // Still watching: a signal created now is delivered too, by the same process.
    let run_b = swf.start("wf-good-b").await;
    world
        .create(&good("good-b", &swf.domain, "wf-good-b"))
        .await;
    let status = world
        .wait_done::<WorkflowSignal>("good-b", Duration::from_secs(30))
        .await;
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    assert_eq!(swf.signals("wf-good-b", &run_b).await.len(), 1);
    assert!(
        !operator.wait_exit(Duration::from_millis(500)),
        "the operator is still running; log: {}",
        operator.log.display()
    );
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

/// (type, reason, message) of the Events recorded on the named object.
async fn events(world: &World, name: &str) -> Vec<(String, String, String)> {
    let api: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(world.client.clone(), &world.ns);
    api.list(&Default::default())
        .await
        .expect("listing events")
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default(),
            )
        })
        .collect()
}

/// A spec field of the wrong type (`domain: 4242424`, as an older CRD could have stored it)
/// is the one malformed object nobody can write a status on: every write, the admin's
/// included, is refused by the API server, because the CRD's `self == oldSelf` rule on spec
/// cannot evaluate a spec that does not match its types ("invalid data, expected string, got
/// int64 evaluating rule: spec is immutable ..."). So the operator cannot mark it Failed; it
/// must still tell a person why (an Event, which is no part of the object) and keep
/// delivering every other signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_field_of_the_wrong_type_is_reported_and_does_not_stop_the_controller() {
    let world = World::new("malformed-type").await;
    let swf = SwfWorld::new(world.env, &unique("malformed-type")).await;
    let api = dynamic(&world.client, &world.ns);
    let name = "domain-not-a-string";
    create_around_schema(
        &world,
        &[(
            name,
            json!({"domain": 4242424, "workflowId": "wf-a", "signalName": "approve"}),
        )],
    )
    .await;
    // Why no status can be expected: the API server refuses any status write on it.
    let refused = api
        .patch_status(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"status": {"message": "probe"}})),
        )
        .await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 422),
        "a status write on a spec of the wrong type: {refused:?}"
    );

    let run = swf.start("wf-good").await;
    world.create(&good("good", &swf.domain, "wf-good")).await;
    let mut operator = world.operator("op-malformed-type", &[]);
    let status = world
        .wait_done::<WorkflowSignal>("good", Duration::from_secs(30))
        .await;
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    assert_eq!(swf.signals("wf-good", &run).await.len(), 1);

    // A Warning Event names the field, never the value.
    let deadline = Instant::now() + Duration::from_secs(10);
    let told = loop {
        let evs = events(&world, name).await;
        if let Some(e) = evs
            .iter()
            .find(|(t, r, _)| t == "Warning" && (r == "InvalidSpec" || r == "Failed"))
        {
            break e.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no Warning event explains why {name} is not sent: events {evs:?}; log {}",
            operator.log.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        told.2.contains("domain") && !told.2.contains("4242424"),
        "{told:?}"
    );
    let obj = api.get(name).await.expect("reading");
    // The API server defaults the status to `observedGeneration: 0` (so health checks see a
    // signal in progress); an operator that wrote nothing leaves it without a phase.
    assert!(
        obj.data
            .get("status")
            .and_then(|s| s.get("phase"))
            .is_none(),
        "nothing was sent"
    );
    assert!(
        !operator.wait_exit(Duration::from_millis(500)),
        "the operator is still running; log: {}",
        operator.log.display()
    );
}
