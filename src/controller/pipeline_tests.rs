//! The pipeline ([`pipeline::reconcile`]) against an in-memory API server and a fake kind of
//! signal: no cluster, no AWS.
//!
//! [`FakeApi`] is a tower service behind a real `kube::Client`. It keeps objects as JSON and
//! serves what the pipeline calls as the API server would: GET, POST (409 when present),
//! conditional PUT of the status subresource (409 when the resourceVersion is stale; every
//! write bumps it) and merge PATCH; errors are `Status` bodies, so kube maps them to
//! `kube::Error::Api` with their code. A test can make the next matching request fail.
//!
//! [`FakeKind`] is a [`SignalTarget`] over the WorkflowSignal resource whose `prepare`, `send`
//! and `verify` answer from a per-thread script and record their calls. Each test runs on
//! tokio's current-thread runtime (`#[tokio::test]`), so everything stays on the test's thread
//! and its script.
use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use hyper::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{DynamicObject, ObjectMeta};
use kube::client::Body;
use kube::core::PartialObjectMetaExt;
use kube::runtime::controller::Action;
use kube::runtime::watcher;
use serde_json::{json, Value};

use super::pipeline;
use super::receipts::{ReceiptKey, BOOK_NAME};
use super::{requeue, Context, Error, PolicyView, Settings};
use crate::api::{
    Phase, SignalPolicy, SignalReceipt, SignalStatus, WorkflowSignal, WorkflowSignalSpec,
};
use crate::aws::clients::{AwsClients, AwsSettings, Gate, RateLimit, RegionClients};
use crate::aws::target::{Prepared, SignalTarget};
use crate::delivery::{AwsFailure, ErrorClass, SendOutcome, VerifyOutcome};
use crate::leader::Leadership;
use crate::metrics::Metrics;

/// The namespace the signals live in.
const NS: &str = "team-a";
/// The operator's namespace, where receipts are kept.
const RECEIPT_NS: &str = "signalman-system";
/// Who claims: this process.
const HOLDER: &str = "signalman-0#0000abcd";
/// The run FakeKind's `prepare` pins when none is pinned yet.
const PINNED_RUN: &str = "run-pinned-by-prepare";

const SIGNALS: &str = "workflowsignals";
const RECEIPTS: &str = "signalreceipts";
const EVENTS: &str = "events";
const STATUS: Option<&str> = Some("status");

// ---------------------------------------------------------------------------------------------
// the fake kind

/// What FakeKind's AWS side answers, and what was asked of it, on this thread.
#[derive(Default)]
struct Script {
    prepare: VecDeque<Result<Prepared, AwsFailure>>,
    send: VecDeque<SendOutcome>,
    verify: VecDeque<VerifyOutcome>,
    /// `deliveries_unrecorded_before` of each `prepare`: `Some` when the pre-send check was asked.
    prepared: Vec<Option<Timestamp>>,
    /// The status each send was made under (as claimed).
    sent: Vec<SignalStatus>,
    /// The phase the API server held for the object at the moment of each send.
    phase_on_server_at_send: Vec<Option<Phase>>,
    /// Whether the API server held this signal's attempt receipt at the moment of each send.
    receipt_on_server_at_send: Vec<bool>,
    verified: usize,
    /// Runs during the next send (someone else writing the object meanwhile).
    during_send: Option<Box<dyn FnOnce()>>,
    /// Where to look at the server's state during a send.
    api: Option<FakeApi>,
}

thread_local! {
    static SCRIPT: RefCell<Script> = RefCell::default();
}

fn script<R>(f: impl FnOnce(&mut Script) -> R) -> R {
    SCRIPT.with(|s| f(&mut s.borrow_mut()))
}

fn prepare_answers(answer: Result<Prepared, AwsFailure>) {
    script(|s| s.prepare.push_back(answer));
}

fn send_answers(outcome: SendOutcome) {
    script(|s| s.send.push_back(outcome));
}

fn accepted() -> SendOutcome {
    SendOutcome::Accepted {
        request_id: Some("req-1".into()),
        run_id: None,
    }
}

fn prepares() -> usize {
    script(|s| s.prepared.len())
}

fn sends() -> usize {
    script(|s| s.sent.len())
}

fn verifies() -> usize {
    script(|s| s.verified)
}

/// A kind of signal whose AWS side is the thread's [`Script`]. It reuses the WorkflowSignal
/// resource (its status path is the one the pipeline writes), the SWF gate, and pins a run in
/// `prepare` the way SWF does.
struct FakeKind;

impl SignalTarget for FakeKind {
    type Resource = WorkflowSignal;
    const KIND: &'static str = "FakeSignal";
    const SERVICE: &'static str = "fake";
    const SEND_OPERATION: &'static str = "FakeSend";
    const VERIFY_OPERATION: &'static str = "FakeVerify";

    fn spec_schema() -> &'static Value {
        WorkflowSignal::spec_schema()
    }

    fn gate(clients: &RegionClients) -> &Arc<Gate> {
        &clients.swf.gate
    }

    fn identity(signal: &WorkflowSignal) -> Value {
        json!({
            "domain": signal.spec.domain,
            "workflowId": signal.spec.workflow_id,
            "signalName": signal.spec.signal_name,
            "input": signal.spec.input,
        })
    }

    fn policy_target(signal: &WorkflowSignal) -> crate::policy::Target<'_> {
        crate::policy::Target::Swf {
            domain: &signal.spec.domain,
            workflow_id: &signal.spec.workflow_id,
        }
    }

    async fn document(
        _signal: &WorkflowSignal,
        _clients: &RegionClients,
        _metrics: &Metrics,
    ) -> Result<Option<String>, AwsFailure> {
        Ok(None)
    }

    fn target_of(_signal: &WorkflowSignal, status: &SignalStatus) -> Option<String> {
        status.run_id.clone()
    }

    fn restore_target(_signal: &WorkflowSignal, status: &mut SignalStatus, target: &str) {
        if status.run_id.is_none() {
            status.run_id = Some(target.to_string());
        }
    }

    async fn prepare(
        _signal: &WorkflowSignal,
        claim: &mut SignalStatus,
        _reference: &str,
        deliveries_unrecorded_before: Option<Timestamp>,
        _clients: &RegionClients,
        _metrics: &Metrics,
    ) -> Result<Prepared, AwsFailure> {
        let answer = script(|s| {
            s.prepared.push(deliveries_unrecorded_before);
            s.prepare.pop_front()
        })
        .expect("FakeKind::prepare was called but no answer was scripted");
        if answer.is_ok() && claim.run_id.is_none() {
            claim.run_id = Some(PINNED_RUN.to_string());
        }
        answer
    }

    async fn send(
        signal: &WorkflowSignal,
        claimed: &SignalStatus,
        _reference: &str,
        _approved_by: Option<&str>,
        _clients: &RegionClients,
    ) -> SendOutcome {
        let (outcome, during, api) = script(|s| {
            s.sent.push(claimed.clone());
            (s.send.pop_front(), s.during_send.take(), s.api.clone())
        });
        let on_server = api.as_ref().and_then(|api| {
            api.status_of(signal.metadata.name.as_deref().unwrap_or_default())
                .and_then(|s| s.phase)
        });
        let receipt_on_server = api.is_some_and(|api| {
            api.receipt(&receipt_key(signal).object_name())
                .is_some_and(|r| r.spec.attempted_at.is_some())
        });
        script(|s| {
            s.phase_on_server_at_send.push(on_server);
            s.receipt_on_server_at_send.push(receipt_on_server);
        });
        if let Some(during) = during {
            during();
        }
        outcome
            .expect("FakeKind::send was called but no outcome was scripted: a send nobody expected")
    }

    async fn verify(
        _signal: &WorkflowSignal,
        _status: &SignalStatus,
        _reference: &str,
        _since: Timestamp,
        _clients: &RegionClients,
        _metrics: &Metrics,
    ) -> VerifyOutcome {
        script(|s| {
            s.verified += 1;
            s.verify.pop_front()
        })
        .expect("FakeKind::verify was called but no outcome was scripted")
    }
}

// ---------------------------------------------------------------------------------------------
// the fake API server

/// One request the fake served.
#[derive(Clone, Debug)]
struct Served {
    method: Method,
    plural: String,
    subresource: Option<String>,
}

/// A failure to answer instead of serving the next matching request.
struct Fault {
    method: Method,
    plural: &'static str,
    subresource: Option<&'static str>,
    /// `None`: any object.
    name: Option<String>,
    code: u16,
}

#[derive(Default)]
struct ApiState {
    /// Objects as JSON, by (plural, namespace, name).
    objects: BTreeMap<(String, String, String), Value>,
    /// The last resourceVersion handed out (one counter for every object, like etcd's).
    revision: u64,
    faults: Vec<Fault>,
    served: Vec<Served>,
    /// Statuses written through the status subresource, in order (refused writes not included).
    status_writes: Vec<Value>,
}

/// An in-memory Kubernetes API server for namespaced custom resources and Events.
#[derive(Clone, Default)]
struct FakeApi(Arc<Mutex<ApiState>>);

/// Where a request goes: `/apis/<group>/<version>/namespaces/<ns>/<plural>[/<name>[/<sub>]]`.
struct Route {
    namespace: String,
    plural: String,
    name: Option<String>,
    subresource: Option<String>,
}

fn route(path: &str) -> Option<Route> {
    let parts: Vec<&str> = path.strip_prefix("/apis/")?.split('/').collect();
    match parts.as_slice() {
        [_group, _version, "namespaces", ns, plural, rest @ ..] if rest.len() <= 2 => Some(Route {
            namespace: ns.to_string(),
            plural: plural.to_string(),
            name: rest.first().map(|n| n.to_string()),
            subresource: rest.get(1).map(|s| s.to_string()),
        }),
        _ => None,
    }
}

/// A Kubernetes `Status` error body, as kube expects it.
fn failure(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }),
    )
}

fn reason_of_code(code: u16) -> &'static str {
    match code {
        404 => "NotFound",
        409 => "Conflict",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        _ => "Unknown",
    }
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let target = target.as_object_mut().expect("an object");
    for (k, v) in patch {
        if v.is_null() {
            target.remove(k);
        } else {
            merge(target.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn now_json() -> Value {
    serde_json::to_value(Time(Timestamp::now())).expect("a time")
}

impl ApiState {
    fn next_revision(&mut self) -> String {
        self.revision += 1;
        self.revision.to_string()
    }

    /// Stores a new object, filling what the API server fills.
    fn create(&mut self, namespace: &str, plural: &str, mut obj: Value) -> Value {
        let name = obj["metadata"]["name"]
            .as_str()
            .expect("objects are created with a name")
            .to_string();
        let rv = self.next_revision();
        let meta = &mut obj["metadata"];
        meta["namespace"] = json!(namespace);
        // Another uid for an object created again under the same name.
        meta["uid"] = json!(format!("uid-{rv}"));
        meta["resourceVersion"] = json!(rv);
        meta["creationTimestamp"] = now_json();
        if plural != EVENTS {
            meta["generation"] = json!(1);
        }
        self.objects
            .insert((plural.into(), namespace.into(), name), obj.clone());
        obj
    }

    fn serve(
        &mut self,
        method: &Method,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> (u16, Value) {
        let Some(r) = route(path) else {
            return failure(404, "NotFound", "the fake API server has no such path");
        };
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(_) => return failure(400, "BadRequest", "body is not JSON"),
            }
        };
        let name = r
            .name
            .clone()
            .or_else(|| body["metadata"]["name"].as_str().map(str::to_string));
        self.served.push(Served {
            method: method.clone(),
            plural: r.plural.clone(),
            subresource: r.subresource.clone(),
        });
        if let Some(i) = self.faults.iter().position(|f| {
            f.method == *method
                && f.plural == r.plural
                && f.subresource == r.subresource.as_deref()
                && (f.name.is_none() || f.name == name)
        }) {
            let f = self.faults.remove(i);
            return failure(f.code, reason_of_code(f.code), "injected by the test");
        }
        let key = (
            r.plural.clone(),
            r.namespace.clone(),
            name.clone().unwrap_or_default(),
        );
        let sub = r.subresource.as_deref();
        match (method.as_str(), r.name.is_some()) {
            ("GET", true) if sub.is_none() || sub == STATUS => match self.objects.get(&key) {
                Some(obj) => (200, obj.clone()),
                None => failure(404, "NotFound", "not found"),
            },
            ("POST", false) => {
                if name.is_none() {
                    return failure(422, "Invalid", "metadata.name is required");
                }
                if self.objects.contains_key(&key) {
                    return failure(409, "AlreadyExists", "already exists");
                }
                (201, self.create(&r.namespace, &r.plural, body))
            }
            ("PUT", true) if sub == STATUS => {
                let Some(stored) = self.objects.get(&key).cloned() else {
                    return failure(404, "NotFound", "not found");
                };
                let sent_rv = body["metadata"]["resourceVersion"].as_str().unwrap_or("");
                if !sent_rv.is_empty()
                    && Some(sent_rv) != stored["metadata"]["resourceVersion"].as_str()
                {
                    return failure(
                        409,
                        "Conflict",
                        "the object has been modified; please apply your changes to the latest version and try again",
                    );
                }
                let mut next = stored;
                next["status"] = body["status"].clone();
                next["metadata"]["resourceVersion"] = json!(self.next_revision());
                self.status_writes.push(next["status"].clone());
                self.objects.insert(key, next.clone());
                (200, next)
            }
            ("PUT", true) if sub.is_none() => {
                let Some(stored) = self.objects.get(&key).cloned() else {
                    return failure(404, "NotFound", "not found");
                };
                let sent_rv = body["metadata"]["resourceVersion"].as_str().unwrap_or("");
                if sent_rv.is_empty()
                    || Some(sent_rv) != stored["metadata"]["resourceVersion"].as_str()
                {
                    return failure(409, "Conflict", "the object has been modified");
                }
                // A replace keeps the object's identity and its status.
                let mut next = body.clone();
                for field in ["uid", "creationTimestamp", "namespace", "name"] {
                    next["metadata"][field] = stored["metadata"][field].clone();
                }
                if let Some(status) = stored.get("status") {
                    next["status"] = status.clone();
                }
                next["metadata"]["resourceVersion"] = json!(self.next_revision());
                self.objects.insert(key, next.clone());
                (200, next)
            }
            ("PATCH", true) if sub.is_none() || sub == STATUS => {
                if content_type != Some("application/merge-patch+json") {
                    return failure(415, "UnsupportedMediaType", "only merge patches are served");
                }
                let Some(stored) = self.objects.get(&key).cloned() else {
                    return failure(404, "NotFound", "not found");
                };
                let mut next = stored.clone();
                match sub {
                    Some(_) => merge(&mut next["status"], &body["status"]),
                    None => merge(&mut next, &body),
                }
                // What a patch cannot change.
                for field in ["uid", "creationTimestamp", "namespace", "name"] {
                    next["metadata"][field] = stored["metadata"][field].clone();
                }
                next["metadata"]["resourceVersion"] = json!(self.next_revision());
                if sub.is_some() {
                    self.status_writes.push(next["status"].clone());
                }
                self.objects.insert(key, next.clone());
                (200, next)
            }
            _ => failure(405, "MethodNotAllowed", "not served by the fake API server"),
        }
    }
}

impl FakeApi {
    fn state(&self) -> std::sync::MutexGuard<'_, ApiState> {
        self.0.lock().expect("fake API state")
    }

    /// A client of this server.
    fn client(&self) -> kube::Client {
        let api = self.clone();
        let service = tower::service_fn(move |req: Request<Body>| {
            let api = api.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = body.collect_bytes().await.unwrap_or_default();
                let content_type = parts
                    .headers
                    .get(hyper::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let (code, json) = api.state().serve(
                    &parts.method,
                    parts.uri.path(),
                    content_type.as_deref(),
                    &body,
                );
                let response = Response::builder()
                    .status(StatusCode::from_u16(code).expect("a status code"))
                    .header(hyper::header::CONTENT_TYPE, "application/json")
                    .body(Body::from(serde_json::to_vec(&json).expect("JSON")))
                    .expect("a response");
                Ok::<_, Infallible>(response)
            }
        });
        kube::Client::new(service, "default")
    }

    /// The next `method` on `plural` (and `subresource`), of object `name` or any, answers `code`.
    fn fail_next(
        &self,
        method: Method,
        plural: &'static str,
        subresource: Option<&'static str>,
        name: Option<&str>,
        code: u16,
    ) {
        self.state().faults.push(Fault {
            method,
            plural,
            subresource,
            name: name.map(str::to_string),
            code,
        });
    }

    /// Creates a signal in [`NS`] and returns it as the controller's cache would hand it over.
    fn create_signal(&self, signal: &WorkflowSignal) -> Arc<DynamicObject> {
        let value = serde_json::to_value(signal).expect("a WorkflowSignal");
        self.state().create(NS, SIGNALS, value);
        self.signal(signal.metadata.name.as_deref().expect("a name"))
    }

    /// Deletes the signal (a GitOps tool replacing it).
    fn delete_signal(&self, name: &str) {
        self.state()
            .objects
            .remove(&(SIGNALS.into(), NS.into(), name.into()))
            .expect("the signal exists");
    }

    /// The signal as the API server holds it now.
    fn signal(&self, name: &str) -> Arc<DynamicObject> {
        let value = self
            .state()
            .objects
            .get(&(SIGNALS.into(), NS.into(), name.into()))
            .cloned()
            .expect("the signal exists");
        Arc::new(serde_json::from_value(value).expect("a DynamicObject"))
    }

    /// Changes the signal as another writer would (a label, a status edit), bumping its
    /// resourceVersion.
    fn edit_signal(&self, name: &str, edit: impl FnOnce(&mut Value)) {
        let mut state = self.state();
        let rv = state.next_revision();
        let obj = state
            .objects
            .get_mut(&(SIGNALS.into(), NS.into(), name.into()))
            .expect("the signal exists");
        edit(obj);
        obj["metadata"]["resourceVersion"] = json!(rv);
    }

    /// The signal's status as the API server holds it.
    fn status_of(&self, name: &str) -> Option<SignalStatus> {
        let state = self.state();
        let status = state
            .objects
            .get(&(SIGNALS.into(), NS.into(), name.into()))?
            .get("status")?
            .clone();
        Some(serde_json::from_value(status).expect("a status the pipeline wrote"))
    }

    /// Every status written through the status subresource, in order.
    fn status_writes(&self) -> Vec<SignalStatus> {
        self.state()
            .status_writes
            .iter()
            .map(|s| serde_json::from_value(s.clone()).expect("a status"))
            .collect()
    }

    fn put_receipt(&self, receipt: &SignalReceipt) {
        let value = serde_json::to_value(receipt).expect("a SignalReceipt");
        self.state().create(RECEIPT_NS, RECEIPTS, value);
    }

    fn receipt(&self, name: &str) -> Option<SignalReceipt> {
        let value = self
            .state()
            .objects
            .get(&(RECEIPTS.into(), RECEIPT_NS.into(), name.into()))?
            .clone();
        Some(serde_json::from_value(value).expect("a SignalReceipt"))
    }

    /// The receipts kept, the book aside.
    fn receipt_count(&self) -> usize {
        self.state()
            .objects
            .keys()
            .filter(|(plural, ns, name)| {
                plural == RECEIPTS && ns == RECEIPT_NS && name != BOOK_NAME
            })
            .count()
    }

    /// How many `method` requests reached `plural`/`subresource` (refused ones included).
    fn requests(&self, method: Method, plural: &str, subresource: Option<&str>) -> usize {
        self.state()
            .served
            .iter()
            .filter(|r| {
                r.method == method && r.plural == plural && r.subresource.as_deref() == subresource
            })
            .count()
    }

    /// The requests served, as `METHOD plural[/sub]`, in order (Events left out).
    fn log(&self) -> Vec<String> {
        self.state()
            .served
            .iter()
            .filter(|r| r.plural != EVENTS)
            .map(|r| match &r.subresource {
                Some(sub) => format!("{} {}/{sub}", r.method, r.plural),
                None => format!("{} {}", r.method, r.plural),
            })
            .collect()
    }

    /// The reasons of the Events published, in order.
    fn event_reasons(&self) -> Vec<String> {
        let state = self.state();
        let mut events: Vec<&Value> = state
            .objects
            .iter()
            .filter(|((plural, _, _), _)| plural == EVENTS)
            .map(|(_, v)| v)
            .collect();
        events.sort_by_key(|e| {
            e["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|rv| rv.parse::<u64>().ok())
        });
        events
            .iter()
            .filter_map(|e| e["reason"].as_str().map(str::to_string))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// the operator's side

fn settings() -> Settings {
    Settings {
        identity: "signalman-0".into(),
        holder: HOLDER.into(),
        claim_ttl: Duration::from_secs(60),
        send_timeout: Duration::from_secs(10),
        verify_settle: Duration::from_secs(2),
        verify_recheck: Duration::from_secs(10),
        namespaces: Vec::new(),
        label_selector: None,
        concurrency: 1,
        receipt_namespace: RECEIPT_NS.into(),
        receipt_retention: Duration::from_secs(400 * 86_400),
        default_ttl: None,
        requester_source: crate::requester::RequesterSource::Annotation,
    }
}

fn aws() -> AwsClients {
    let base = SdkConfig::builder()
        .region(Region::new("eu-west-1"))
        .behavior_version(BehaviorVersion::latest())
        .build();
    let rate = RateLimit {
        per_second: 1000.0,
        burst: 100,
    };
    AwsClients::new(
        base,
        AwsSettings {
            send_timeout: Duration::from_secs(10),
            swf_rate: rate,
            ssm_rate: rate,
            requester_in_comment: false,
            allowed_regions: Vec::new(),
        },
    )
}

/// A SignalPolicy that lets `namespace` send everything (as tests/env's `allow_everything_in`).
fn allow_everything_in(namespace: &str) -> SignalPolicy {
    serde_json::from_value(json!({
        "apiVersion": "signalman.dev/v1alpha1",
        "kind": "SignalPolicy",
        "metadata": {"name": format!("allow-all-{namespace}")},
        "spec": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "regions": ["*"],
            "swf": {"domains": ["*"], "workflowIds": ["*"]},
            "ssm": {
                "signalTypes": ["Approve", "Reject", "StartStep", "StopStep", "Resume", "Revoke"],
                "documentNames": ["*"],
            },
        },
    }))
    .expect("a SignalPolicy")
}

/// Fills the policy view as its watch would once both lists are in (its writers are private
/// to this module tree), and marks it synced.
fn policies_listed(view: &PolicyView, policies: Vec<SignalPolicy>, namespaces: &[&str]) {
    let mut writers = view.writers.lock().expect("policy writers");
    let (policy_writer, namespace_writer) = writers.as_mut().expect("no watch took the writers");
    for policy in policies {
        policy_writer.apply_watcher_event(&watcher::Event::Apply(policy));
    }
    for name in namespaces {
        let meta = ObjectMeta {
            name: Some(name.to_string()),
            labels: Some([("kubernetes.io/metadata.name".to_string(), name.to_string())].into()),
            ..Default::default()
        };
        namespace_writer.apply_watcher_event(&watcher::Event::Apply(
            meta.into_request_partial::<Namespace>(),
        ));
    }
    for listed in &view.synced {
        listed.store(true, Ordering::SeqCst);
    }
}

/// The leader's context, on `api`, with these policies over [`NS`].
fn context(api: &FakeApi, policies: Vec<SignalPolicy>) -> Context {
    let ctx = Context::new(api.client(), aws(), settings(), Leadership::new(true));
    policies_listed(&ctx.policy, policies, &[NS]);
    script(|s| {
        *s = Script::default();
        s.api = Some(api.clone());
    });
    ctx
}

/// The leader's context with an allow-all policy for [`NS`].
fn allowed(api: &FakeApi) -> Context {
    context(api, vec![allow_everything_in(NS)])
}

fn signal(name: &str) -> WorkflowSignal {
    let mut signal = WorkflowSignal::new(
        name,
        WorkflowSignalSpec {
            domain: "orders".into(),
            workflow_id: "order-42".into(),
            run_id: None,
            signal_name: "approve".into(),
            input: Some(r#"{"ok": true}"#.into()),
            region: None,
            retry: None,
            not_after: None,
            allow_duplicate: None,
            ttl_seconds_after_finished: None,
        },
    );
    signal.metadata.namespace = Some(NS.into());
    signal
}

fn receipt_key(signal: &WorkflowSignal) -> ReceiptKey {
    ReceiptKey::new(
        NS,
        FakeKind::KIND,
        signal.metadata.name.as_deref().expect("a name"),
        &FakeKind::identity(signal),
    )
}

/// A receipt of `signal` as an earlier object (uid `uid`) left it.
fn receipt_of(
    signal: &WorkflowSignal,
    uid: &str,
    target: &str,
    attempted_at: Option<Timestamp>,
    delivered_at: Option<Timestamp>,
) -> SignalReceipt {
    let key = receipt_key(signal);
    SignalReceipt::new(
        &key.object_name(),
        crate::api::SignalReceiptSpec {
            signal_namespace: key.namespace.clone(),
            signal_kind: key.kind.to_string(),
            signal_name: key.name.clone(),
            signal_hash: key.hash.clone(),
            target: Some(target.into()),
            signal_uid: Some(uid.into()),
            attempted_at: attempted_at.map(Time),
            delivered_at: delivered_at.map(Time),
            expires_at: Time(Timestamp::now() + SignedDuration::from_hours(24 * 300)),
        },
    )
}

/// `(status, reason)` of the condition `type_`.
fn condition(status: &SignalStatus, type_: &str) -> (String, String) {
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status:?}"));
    (c.status.clone(), c.reason.clone())
}

fn is_code(result: &Result<Action, Error>, code: u16) -> bool {
    matches!(result, Err(Error::Kube(kube::Error::Api(ae))) if ae.code == code)
}

fn ambiguous() -> AwsFailure {
    AwsFailure {
        class: ErrorClass::Ambiguous,
        code: Some("InternalFailure".into()),
        message: "the connection was reset while reading the answer".into(),
    }
}

fn seconds_ago(s: i64) -> Timestamp {
    crate::delivery::floor_second(Timestamp::now() - SignedDuration::from_secs(s))
}

// ---------------------------------------------------------------------------------------------
// the scenarios

#[tokio::test]
async fn a_receipt_marked_delivered_ends_the_signal_already_delivered_without_sending() {
    let api = FakeApi::default();
    let ctx = allowed(&api);
    let sig = signal("approve-1");
    let delivered = seconds_ago(3600);
    api.put_receipt(&receipt_of(
        &sig,
        "uid-of-the-deleted-object",
        "run-earlier",
        Some(seconds_ago(3700)),
        Some(delivered),
    ));
    let obj = api.create_signal(&sig);

    let action = pipeline::reconcile::<FakeKind>(obj, &ctx)
        .await
        .expect("reconciled");

    assert_eq!(action, Action::await_change());
    let status = api.status_of("approve-1").expect("a status written");
    assert_eq!(status.phase, Some(Phase::Succeeded));
    assert_eq!(
        condition(&status, "Ready"),
        ("True".into(), "AlreadyDelivered".into())
    );
    assert_eq!(status.attempts, 0, "nothing was attempted");
    assert!(status.claim.is_none());
    assert_eq!(
        api.status_writes().len(),
        1,
        "one write: no claim before it"
    );
    assert_eq!((prepares(), sends()), (0, 0), "no AWS call at all");
    assert_eq!(api.requests(Method::POST, RECEIPTS, None), 0);
    assert_eq!(api.requests(Method::PATCH, RECEIPTS, None), 0);
    let receipt = api.receipt(&receipt_key(&sig).object_name()).expect("kept");
    assert_eq!(
        receipt.spec.delivered_at,
        Some(Time(delivered)),
        "the receipt is left as it was"
    );
    assert_eq!(api.event_reasons(), ["AlreadyDelivered"]);
}

#[tokio::test]
async fn a_signal_no_policy_allows_fails_policy_denied_without_any_aws_call() {
    let api = FakeApi::default();
    // The policies are listed, and none selects the namespace.
    let ctx = context(&api, Vec::new());
    let obj = api.create_signal(&signal("approve-1"));

    let action = pipeline::reconcile::<FakeKind>(obj, &ctx)
        .await
        .expect("reconciled");

    assert_eq!(action, Action::await_change());
    let status = api.status_of("approve-1").expect("a status written");
    assert_eq!(status.phase, Some(Phase::Failed));
    assert_eq!(
        condition(&status, "Stalled"),
        ("True".into(), "PolicyDenied".into())
    );
    assert_eq!(condition(&status, "Ready").0, "False");
    assert!(
        status.message.as_deref().unwrap_or_default().contains(NS),
        "the denial names the namespace: {:?}",
        status.message
    );
    assert_eq!(status.attempts, 0);
    assert_eq!((prepares(), sends()), (0, 0), "neither prepare nor send");
    assert_eq!(api.status_writes().len(), 1, "no claim was written");
    assert_eq!(api.receipt_count(), 0, "no attempt recorded");
    assert_eq!(api.event_reasons(), ["Failed"]);
}

#[tokio::test]
async fn an_ambiguous_prepare_gives_the_attempt_back_and_the_next_attempt_checks_again() {
    let api = FakeApi::default();
    let ctx = allowed(&api);
    let obj = api.create_signal(&signal("approve-1"));
    prepare_answers(Err(ambiguous()));

    let action = pipeline::reconcile::<FakeKind>(obj, &ctx)
        .await
        .expect("reconciled");

    assert_eq!(action, Action::await_change());
    let status = api.status_of("approve-1").expect("a status written");
    assert_eq!(status.phase, Some(Phase::Pending));
    assert_eq!(status.attempts, 0, "the attempt is given back");
    assert_eq!(status.transient_retries, 1, "and counted as a retry");
    assert!(status.claim.is_none());
    assert!(
        status.verify_since.is_none(),
        "nothing was sent: nothing to verify"
    );
    assert!(status.next_attempt_time.is_some(), "retried after backoff");
    assert_eq!(status.last_error_code.as_deref(), Some("InternalFailure"));
    assert_eq!(
        condition(&status, "Reconciling"),
        ("True".into(), "RetryScheduled".into())
    );
    assert_eq!(api.status_writes().len(), 1, "no claim was written");
    assert_eq!(
        api.receipt_count(),
        0,
        "no attempt recorded before a failed check"
    );
    assert_eq!(sends(), 0);
    assert_eq!(prepares(), 1);

    // Before the backoff is served, nothing happens.
    let action = pipeline::reconcile::<FakeKind>(api.signal("approve-1"), &ctx)
        .await
        .expect("reconciled");
    assert_ne!(
        action,
        Action::await_change(),
        "a requeue at the retry time"
    );
    assert_eq!((prepares(), sends()), (1, 0));

    // The backoff passes: the next attempt runs the pre-send check again before it sends.
    api.edit_signal("approve-1", |obj| {
        obj["status"]["nextAttemptTime"] = serde_json::to_value(Time(seconds_ago(1))).unwrap();
    });
    prepare_answers(Ok(Prepared::Send));
    send_answers(accepted());

    pipeline::reconcile::<FakeKind>(api.signal("approve-1"), &ctx)
        .await
        .expect("reconciled");

    let asked = script(|s| s.prepared.clone());
    assert_eq!(
        asked.len(),
        2,
        "prepare ran again: the check is never skipped"
    );
    assert!(
        asked.iter().all(Option::is_some),
        "both times with the horizon of unrecorded deliveries: {asked:?}"
    );
    assert_eq!(sends(), 1);
    let status = api.status_of("approve-1").expect("a status");
    assert_eq!(status.phase, Some(Phase::Succeeded));
    assert_eq!((status.attempts, status.transient_retries), (1, 1));
}

#[tokio::test]
async fn a_claim_that_conflicts_sends_nothing_and_the_next_look_claims_again() {
    let api = FakeApi::default();
    let ctx = allowed(&api);
    let stale = api.create_signal(&signal("approve-1"));
    // Someone else writes the object after the cache handed it over.
    api.edit_signal("approve-1", |obj| {
        obj["metadata"]["labels"] = json!({"team": "a"});
    });
    prepare_answers(Ok(Prepared::Send));

    let action = pipeline::reconcile::<FakeKind>(stale, &ctx)
        .await
        .expect("a lost race is no error");

    assert_eq!(action, Action::requeue(requeue::LOST_RACE));
    assert_eq!(
        api.requests(Method::PUT, SIGNALS, STATUS),
        1,
        "the claim was tried"
    );
    assert!(api.status_writes().is_empty(), "and refused");
    assert!(api.status_of("approve-1").is_none());
    assert_eq!(sends(), 0, "no claim, no send");

    // Read again, the object is claimed and sent once.
    prepare_answers(Ok(Prepared::Send));
    send_answers(accepted());
    pipeline::reconcile::<FakeKind>(api.signal("approve-1"), &ctx)
        .await
        .expect("reconciled");
    assert_eq!(sends(), 1);
    assert_eq!(
        api.status_of("approve-1").and_then(|s| s.phase),
        Some(Phase::Succeeded)
    );
}

#[tokio::test]
async fn a_receipt_that_cannot_be_written_before_the_first_send_stops_the_send() {
    let api = FakeApi::default();
    let ctx = allowed(&api);
    let sig = signal("approve-1");
    let obj = api.create_signal(&sig);
    let receipt = receipt_key(&sig).object_name();
    api.fail_next(Method::POST, RECEIPTS, None, Some(&receipt), 500);
    prepare_answers(Ok(Prepared::Send));

    let result = pipeline::reconcile::<FakeKind>(obj, &ctx).await;

    assert!(is_code(&result, 500), "the failure is returned: {result:?}");
    assert_eq!(
        api.requests(Method::POST, RECEIPTS, None),
        2,
        "the book, then the refused receipt"
    );
    assert!(api.receipt(&receipt).is_none());
    assert_eq!(sends(), 0, "nothing sent without the receipt");
    // The claim was written beside the receipt: it is this holder's own claim of an outcome
    // nobody recorded, so the next look verifies before anything goes.
    assert_eq!(
        api.status_of("approve-1").and_then(|s| s.phase),
        Some(Phase::Sending)
    );
    pipeline::reconcile::<FakeKind>(api.signal("approve-1"), &ctx)
        .await
        .expect("reconciled");
    assert_eq!(
        api.status_of("approve-1").and_then(|s| s.phase),
        Some(Phase::Verifying)
    );
    // AWS says absent (twice: a first "absent" is read again before it counts), then the
    // signal goes. Each wait is skipped by moving the next look into the past.
    script(|s| {
        s.verify.push_back(VerifyOutcome::Absent);
        s.verify.push_back(VerifyOutcome::Absent);
    });
    prepare_answers(Ok(Prepared::Send));
    send_answers(accepted());
    for _ in 0..6 {
        if api.status_of("approve-1").and_then(|s| s.phase) == Some(Phase::Succeeded) {
            break;
        }
        api.edit_signal("approve-1", |o| {
            o["status"]["nextAttemptTime"] = json!(Time(seconds_ago(1)));
        });
        pipeline::reconcile::<FakeKind>(api.signal("approve-1"), &ctx)
            .await
            .expect("reconciled");
    }
    assert_eq!(verifies(), 2, "checked with AWS first");
    assert_eq!(sends(), 1, "then sent, once");
    assert_eq!(
        api.status_of("approve-1").and_then(|s| s.phase),
        Some(Phase::Succeeded)
    );
    assert!(api
        .receipt(&receipt)
        .is_some_and(|r| r.spec.delivered_at.is_some()));
}

#[tokio::test]
async fn an_earlier_objects_attempt_of_unknown_fate_is_verified_before_anything_is_sent() {
    let api = FakeApi::default();
    let ctx = allowed(&api);
    let sig = signal("approve-1");
    let attempted = seconds_ago(600);
    api.put_receipt(&receipt_of(
        &sig,
        "uid-of-the-deleted-object",
        "run-earlier",
        Some(attempted),
        None,
    ));
    let obj = api.create_signal(&sig);
    assert_ne!(
        obj.metadata.uid.as_deref(),
        Some("uid-of-the-deleted-object")
    );

    let action = pipeline::reconcile::<FakeKind>(obj, &ctx)
        .await
        .expect("reconciled");

    assert_eq!(action, Action::await_change());
    let status = api.status_of("approve-1").expect("a status written");
    assert_eq!(status.phase, Some(Phase::Verifying));
    assert_eq!(
        status.verify_since,
        Some(Time(attempted)),
        "from the earlier attempt"
    );
    assert_eq!(
        status.run_id.as_deref(),
        Some("run-earlier"),
        "on the run the receipt names"
    );
    assert_eq!(status.attempts, 0);
    assert!(status.claim.is_none());
    assert_eq!(
        condition(&status, "Reconciling"),
        ("True".into(), "Verifying".into())
    );
    assert_eq!(api.status_writes().len(), 1, "no claim was written");
    assert_eq!((prepares(), sends(), verifies()), (0, 0, 0));
    assert_eq!(api.event_reasons(), ["Verifying"]);
}

#[tokio::test]
async fn a_successful_send_marks_the_receipt_delivered_and_the_signal_delivered() {
    let api = FakeApi::default();
    let ctx = allowed(&api);
    let sig = signal("approve-1");
    let obj = api.create_signal(&sig);
    let uid = obj.metadata.uid.clone();
    prepare_answers(Ok(Prepared::Send));
    send_answers(accepted());

    let action = pipeline::reconcile::<FakeKind>(obj, &ctx)
        .await
        .expect("reconciled");

    assert_eq!(action, Action::await_change());
    assert_eq!(sends(), 1, "exactly one send");
    let claimed = script(|s| s.sent[0].clone());
    assert_eq!(claimed.phase, Some(Phase::Sending));
    assert_eq!(
        claimed.claim.as_ref().map(|c| c.holder.as_str()),
        Some(HOLDER)
    );
    assert_eq!(
        claimed.run_id.as_deref(),
        Some(PINNED_RUN),
        "what prepare pinned is claimed"
    );
    assert_eq!(
        script(|s| s.phase_on_server_at_send.clone()),
        [Some(Phase::Sending)],
        "the claim was on the API server before the send"
    );

    let status = api.status_of("approve-1").expect("a status written");
    assert_eq!(status.phase, Some(Phase::Succeeded));
    assert_eq!(
        condition(&status, "Ready"),
        ("True".into(), "Delivered".into())
    );
    assert_eq!(status.attempts, 1);
    assert_eq!(status.request_id.as_deref(), Some("req-1"));
    assert!(status.sent_time.is_some());
    assert!(status.claim.is_none());
    let phases: Vec<_> = api.status_writes().iter().map(|s| s.phase).collect();
    assert_eq!(phases, [Some(Phase::Sending), Some(Phase::Succeeded)]);

    let receipt = api
        .receipt(&receipt_key(&sig).object_name())
        .expect("a receipt");
    assert!(
        receipt.spec.attempted_at.is_some(),
        "the attempt was recorded before the send"
    );
    assert!(receipt.spec.delivered_at.is_some(), "and marked delivered");
    assert_eq!(receipt.spec.signal_uid, uid);
    assert_eq!(receipt.spec.target.as_deref(), Some(PINNED_RUN));
    // The attempt's receipt and the claim (at once, in either order) before the send; the
    // delivery's receipt before the outcome.
    let mut log = api.log();
    log[3..5].sort();
    assert_eq!(
        log,
        [
            "GET signalreceipts",         // this signal's receipt: none
            "GET signalreceipts",         // the book: none yet
            "POST signalreceipts",        // the book, made once
            "POST signalreceipts",        // the attempt …
            "PUT workflowsignals/status", // … and the claim
            "PATCH signalreceipts",       // delivered
            "PUT workflowsignals/status", // the outcome
        ]
    );
    assert_eq!(
        script(|s| s.receipt_on_server_at_send.clone()),
        [true],
        "the attempt's receipt was on the API server before the send"
    );
    assert_eq!(api.event_reasons(), ["Delivered"]);
}

// ---------------------------------------------------------------------------------------------
// more of the protocol

#[tokio::test]
async fn a_label_written_during_the_send_does_not_lose_the_outcome() {
    let api = FakeApi::default();
    let ctx = allowed(&api);
    let obj = api.create_signal(&signal("approve-1"));
    prepare_answers(Ok(Prepared::Send));
    send_answers(accepted());
    let writer = api.clone();
    script(|s| {
        s.during_send = Some(Box::new(move || {
            writer.edit_signal("approve-1", |obj| {
                obj["metadata"]["labels"] = json!({"team": "a"});
            })
        }))
    });

    pipeline::reconcile::<FakeKind>(obj, &ctx)
        .await
        .expect("reconciled");

    assert_eq!(sends(), 1);
    let status = api.status_of("approve-1").expect("a status");
    assert_eq!(
        status.phase,
        Some(Phase::Succeeded),
        "written on the object read again"
    );
    assert_eq!(
        api.requests(Method::PUT, SIGNALS, STATUS),
        3,
        "claim, refused outcome, outcome"
    );
    assert_eq!(
        api.requests(Method::GET, SIGNALS, None),
        1,
        "read again once"
    );
}

#[tokio::test]
async fn a_follower_neither_writes_nor_calls_aws() {
    let api = FakeApi::default();
    let ctx = allowed(&api);
    ctx.leadership.set(false);
    let obj = api.create_signal(&signal("approve-1"));

    let action = pipeline::reconcile::<FakeKind>(obj, &ctx)
        .await
        .expect("reconciled");

    assert_eq!(action, Action::requeue(requeue::FOLLOWER));
    assert!(api.log().is_empty(), "no request at all: {:?}", api.log());
    assert_eq!((prepares(), sends()), (0, 0));
}

#[tokio::test]
async fn verification_reads_the_receipt_before_asking_aws() {
    let api = FakeApi::default();
    let ctx = allowed(&api);
    let sig = signal("approve-1");
    let obj = api.create_signal(&sig);
    let since = seconds_ago(120);
    // This object's own attempt: delivered (its receipt says so), the status write lost.
    api.put_receipt(&receipt_of(
        &sig,
        obj.metadata.uid.as_deref().unwrap_or_default(),
        PINNED_RUN,
        Some(since),
        Some(seconds_ago(100)),
    ));
    api.edit_signal("approve-1", |o| {
        o["status"] = json!({
            "phase": "Verifying",
            "attempts": 1,
            "verifySince": Time(since),
            "lastAttemptTime": Time(since),
            "firstAttemptTime": Time(since),
            "runId": PINNED_RUN,
        });
    });

    pipeline::reconcile::<FakeKind>(api.signal("approve-1"), &ctx)
        .await
        .expect("reconciled");

    let status = api.status_of("approve-1").expect("a status");
    assert_eq!(status.phase, Some(Phase::Succeeded));
    assert_eq!(
        condition(&status, "Ready"),
        ("True".into(), "DeliveryVerified".into())
    );
    assert_eq!(
        (prepares(), sends(), verifies()),
        (0, 0, 0),
        "AWS was not asked"
    );
}

#[tokio::test]
async fn an_outcome_that_cannot_be_written_is_verified_not_sent_again() {
    let api = FakeApi::default();
    let ctx = allowed(&api);
    let sig = signal("approve-1");
    let obj = api.create_signal(&sig);
    prepare_answers(Ok(Prepared::Send));
    send_answers(accepted());
    // The API server fails the write of the outcome (the claim is already written by then).
    let server = api.clone();
    script(|s| {
        s.during_send = Some(Box::new(move || {
            server.fail_next(Method::PUT, SIGNALS, STATUS, None, 500)
        }))
    });

    let result = pipeline::reconcile::<FakeKind>(obj, &ctx).await;

    assert!(is_code(&result, 500), "the failure is returned: {result:?}");
    assert_eq!(sends(), 1);
    let status = api.status_of("approve-1").expect("the claim");
    assert_eq!(status.phase, Some(Phase::Sending), "the claim stays");
    let receipt = api
        .receipt(&receipt_key(&sig).object_name())
        .expect("a receipt");
    assert!(
        receipt.spec.delivered_at.is_some(),
        "written before the status"
    );

    // The next look finds its own claim abandoned: verify, never send.
    pipeline::reconcile::<FakeKind>(api.signal("approve-1"), &ctx)
        .await
        .expect("reconciled");
    let status = api.status_of("approve-1").expect("a status");
    assert_eq!(status.phase, Some(Phase::Verifying));
    assert!(status.verify_since.is_some());
    // Once the settle time has passed, the receipt settles it without asking AWS.
    api.edit_signal("approve-1", |obj| {
        obj["status"]["nextAttemptTime"] = serde_json::to_value(Time(seconds_ago(1))).unwrap();
    });
    pipeline::reconcile::<FakeKind>(api.signal("approve-1"), &ctx)
        .await
        .expect("reconciled");
    let status = api.status_of("approve-1").expect("a status");
    assert_eq!(status.phase, Some(Phase::Succeeded));
    assert_eq!(
        condition(&status, "Ready"),
        ("True".into(), "DeliveryVerified".into())
    );
    assert_eq!(
        (sends(), verifies()),
        (1, 0),
        "one send in all; AWS never asked"
    );
}

/// A delivery over an expired receipt not yet swept: the attempt replaces it and the delivery
/// renews its term, so the same manifest applied again is recognised (before the fix, the old
/// expiresAt stayed, `find` ignored the receipt at once, and the signal was sent again).
#[tokio::test]
async fn a_delivery_over_an_expired_receipt_leaves_a_receipt_that_protects_it() {
    let api = FakeApi::default();
    let ctx = allowed(&api);
    let sig = signal("approve-1");
    let name = receipt_key(&sig).object_name();
    // A delivery of the same signal long ago, its receipt expired but not yet swept.
    let mut old = receipt_of(
        &sig,
        "uid-of-an-object-of-last-year",
        "run-of-last-year",
        Some(seconds_ago(500 * 86_400)),
        Some(seconds_ago(500 * 86_400)),
    );
    old.spec.expires_at = Time(seconds_ago(100 * 86_400));
    api.put_receipt(&old);
    let obj = api.create_signal(&sig);
    prepare_answers(Ok(Prepared::Send));
    send_answers(accepted());

    pipeline::reconcile::<FakeKind>(obj, &ctx)
        .await
        .expect("reconciled");
    assert_eq!(sends(), 1, "an expired receipt proves nothing: sent");

    // The same manifest applied again, to a target younger than the horizon: only the receipt
    // can tell (the AWS-side check, if asked, answers "send").
    api.delete_signal("approve-1");
    let again = api.create_signal(&sig);
    prepare_answers(Ok(Prepared::Send));
    send_answers(accepted());
    pipeline::reconcile::<FakeKind>(again, &ctx)
        .await
        .expect("reconciled");
    let receipt = api.receipt(&name).expect("a receipt");
    assert_eq!(
        sends(),
        1,
        "sent a second time; the first delivery's receipt: {:?}",
        receipt.spec
    );
    let status = api.status_of("approve-1").expect("a status");
    assert_eq!(
        condition(&status, "Ready"),
        ("True".into(), "AlreadyDelivered".into())
    );
}
