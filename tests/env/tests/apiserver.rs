//! The local kube-apiserver is a real one: CRDs with a status subresource and CEL rules,
//! watches, Leases, Events, RBAC with impersonation.
use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Event, ObjectReference, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ObjectMeta, Patch, PatchParams, PostParams,
};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::json;

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.testenv.signalman.dev}
spec:
  group: testenv.signalman.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-validations:
            - {rule: "self.min <= self.max", message: "min must not exceed max"}
            properties:
              min: {type: integer}
              max: {type: integer}
          status:
            type: object
            properties:
              seen: {type: boolean}
"#;

fn widgets(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("testenv.signalman.dev", "v1", "Widget");
    Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::from_gvk_with_plural(&gvk, "widgets"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_crds_status_watch_cel_leases_events_and_rbac() {
    let env = signalman_testenv::shared();
    let client = env.client().await;
    let ns = env.namespace(&client, "apiserver").await;

    // A CRD with a status subresource and a CEL rule.
    let crd: CustomResourceDefinition = serde_norway::from_str(CRD).expect("CRD yaml");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "widgets.testenv.signalman.dev",
        &PatchParams::apply("testenv").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("applying the CRD");
    let established = kube::runtime::wait::await_condition(
        crds,
        "widgets.testenv.signalman.dev",
        kube::runtime::wait::conditions::is_crd_established(),
    );
    tokio::time::timeout(Duration::from_secs(30), established)
        .await
        .expect("CRD established in time")
        .expect("watching the CRD");

    let api = widgets(&client, &ns);
    // Serving a watch: start it before the object exists and see the object arrive.
    let watch = watcher(api.clone(), watcher::Config::default());
    let seen = tokio::spawn(async move {
        let mut stream = std::pin::pin!(watch.applied_objects());
        while let Some(obj) = stream.try_next().await.expect("watch stream") {
            if obj.metadata.name.as_deref() == Some("w1") {
                return true;
            }
        }
        false
    });
    let mut w1: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "testenv.signalman.dev/v1", "kind": "Widget",
        "metadata": {"name": "w1"}, "spec": {"min": 1, "max": 2}
    }))
    .expect("object");
    w1 = api
        .create(&PostParams::default(), &w1)
        .await
        .expect("creating a valid widget");
    assert!(tokio::time::timeout(Duration::from_secs(20), seen)
        .await
        .expect("watch event in time")
        .expect("watch task"));

    // The status subresource: a status write keeps the spec, a main-resource write ignores status.
    w1.data["status"] = json!({"seen": true});
    let written = api
        .replace_status("w1", &PostParams::default(), &w1)
        .await
        .expect("status write");
    assert_eq!(written.data["status"]["seen"], json!(true));

    // The CEL rule refuses a bad object with its message.
    let bad: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "testenv.signalman.dev/v1", "kind": "Widget",
        "metadata": {"name": "bad"}, "spec": {"min": 5, "max": 2}
    }))
    .expect("object");
    let err = api
        .create(&PostParams::default(), &bad)
        .await
        .expect_err("CEL must refuse min > max");
    assert!(err.to_string().contains("min must not exceed max"), "{err}");

    // Leases and Events.
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some("leader".into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("me".into()),
            lease_duration_seconds: Some(15),
            ..Default::default()
        }),
    };
    leases
        .create(&PostParams::default(), &lease)
        .await
        .expect("creating a Lease");
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let event = Event {
        metadata: ObjectMeta {
            name: Some("w1.event".into()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            kind: Some("Widget".into()),
            name: Some("w1".into()),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        reason: Some("Tested".into()),
        message: Some("an event".into()),
        type_: Some("Normal".into()),
        ..Default::default()
    };
    events
        .create(&PostParams::default(), &event)
        .await
        .expect("creating an Event");
    assert_eq!(
        events
            .list(&Default::default())
            .await
            .expect("events")
            .items
            .len(),
        1
    );

    // RBAC with impersonation: a ServiceAccount with no role is refused; the admin is not.
    let sa = format!("system:serviceaccount:{ns}:nobody");
    let as_sa = env.client_as(&sa).await;
    let err = Api::<Secret>::namespaced(as_sa.clone(), &ns)
        .list(&Default::default())
        .await
        .expect_err("RBAC must refuse");
    match err {
        kube::Error::Api(ae) => assert_eq!(ae.code, 403, "{ae:?}"),
        other => panic!("expected 403, got {other}"),
    }
    assert!(
        widgets(&as_sa, &ns)
            .list(&Default::default())
            .await
            .is_err(),
        "no access to widgets either"
    );
    Api::<Secret>::namespaced(client.clone(), &ns)
        .list(&Default::default())
        .await
        .expect("admin may list secrets");
}
