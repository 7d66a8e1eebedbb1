//! kube-runtime wiring: one controller per kind of signal and watched namespace, each running
//! the same pipeline ([`pipeline`]) over the kind's [`SignalTarget`].
//!
//! Objects are watched as `DynamicObject` and parsed one by one, so an object written around
//! the schema (or by an older version of the CRD) fails alone with reason `InvalidSpec` instead
//! of breaking the list/watch of every other object.
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::ResourceExt;
use tracing::{debug, error, warn, Instrument};

use crate::aws::clients::AwsClients;
use crate::aws::ssm::Ssm;
use crate::aws::swf::Swf;
use crate::aws::target::SignalTarget;
use crate::health::Health;
use crate::leader::Leadership;
use crate::metrics::Metrics;

mod pipeline;
#[cfg(test)]
mod pipeline_tests;
pub mod receipts;
pub mod requester_guard;
mod status_io;
pub mod ttl;

/// How long to wait before looking at an object again, by why.
pub mod requeue {
    use std::time::Duration;

    /// Too many large signals are being read whole: look again shortly.
    pub const LARGE_READS_BUSY: Duration = Duration::from_millis(500);
    /// A status write lost a race with another writer: read again shortly.
    pub const LOST_RACE: Duration = Duration::from_millis(200);
    /// This replica does not lead: look again in case it wins.
    pub const FOLLOWER: Duration = Duration::from_secs(5);
    /// The SignalPolicies have not been listed yet: no verdict before they are.
    pub const POLICIES_NOT_LISTED: Duration = Duration::from_secs(1);
    /// First wait after the Kubernetes API failed for an object; doubled per failure in a row.
    pub const KUBE_ERROR: Duration = Duration::from_millis(500);
    /// Longest wait after failures of the Kubernetes API.
    pub const KUBE_ERROR_MAX: Duration = Duration::from_secs(120);

    /// Exponential backoff with jitter after `failures` failures in a row (at least 1).
    pub fn after_kube_errors(failures: u32, jitter: f64) -> Duration {
        let base = KUBE_ERROR
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
            .min(KUBE_ERROR_MAX);
        base.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

/// Settings of the reconcilers (from the command line).
#[derive(Clone, Debug)]
pub struct Settings {
    /// This replica's name (the pod name): the Lease holder and the Events' reporter.
    pub identity: String,
    /// Who claims: the identity and a random suffix drawn at start-up, unique per process, so
    /// two processes (a restarted pod, a name given twice) never take each other's live claim
    /// for their own.
    pub holder: String,
    /// How long a claim stays live; the send timeout is well inside it.
    pub claim_ttl: Duration,
    /// Hard timeout of one send, as a backstop around the SDK's own operation timeout.
    pub send_timeout: Duration,
    /// Wait this long after an attempt before reading AWS to verify it (eventual consistency).
    pub verify_settle: Duration,
    /// After a verification found the signal absent, read again this much later before sending
    /// again: AWS shows a delivered signal only after a delay.
    pub verify_recheck: Duration,
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    /// Watch only signals with these labels (a label selector); empty means all.
    pub label_selector: Option<String>,
    pub concurrency: u16,
    /// Where receipts are kept: the operator's own namespace.
    pub receipt_namespace: String,
    /// How long a receipt is kept after its delivery.
    pub receipt_retention: Duration,
    /// `ttlSecondsAfterFinished` of signals that set none; `None`: keep them.
    pub default_ttl: Option<Duration>,
    /// Where a signal's requester comes from (see [`crate::requester`]).
    pub requester_source: crate::requester::RequesterSource,
}

/// The SignalPolicies and the namespaces' labels, as this process last saw them.
pub struct PolicyView {
    pub policies: reflector::Store<crate::api::SignalPolicy>,
    pub namespaces: reflector::Store<PartialObjectMeta<Namespace>>,
    /// Both listed once: before that, "no policy" could be a cache not yet filled.
    synced: [Arc<std::sync::atomic::AtomicBool>; 2],
    writers: Mutex<Option<PolicyWriters>>,
}

/// The writers of [`PolicyView`]'s stores, taken once by the watch that fills them.
type PolicyWriters = (
    reflector::store::Writer<crate::api::SignalPolicy>,
    reflector::store::Writer<PartialObjectMeta<Namespace>>,
);

impl PolicyView {
    fn new() -> Self {
        let policies = reflector::store::Writer::default();
        let namespaces = reflector::store::Writer::default();
        Self {
            policies: policies.as_reader(),
            namespaces: namespaces.as_reader(),
            synced: Default::default(),
            writers: Mutex::new(Some((policies, namespaces))),
        }
    }

    /// Both the policies and the namespaces have been listed.
    pub fn is_synced(&self) -> bool {
        self.synced
            .iter()
            .all(|s| s.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// The labels of `namespace` (empty when not seen).
    pub fn labels_of(&self, namespace: &str) -> std::collections::BTreeMap<String, String> {
        self.namespaces
            .get(&reflector::ObjectRef::new(namespace))
            .and_then(|ns| ns.metadata.labels.clone())
            .unwrap_or_default()
    }

    /// Every policy, shared with the cache (a decision copies none of them).
    pub fn policies(&self) -> Vec<Arc<crate::api::SignalPolicy>> {
        self.policies.state()
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: kube::Client,
    pub aws: AwsClients,
    pub settings: Settings,
    pub leadership: Leadership,
    pub metrics: Metrics,
    /// Readiness: set once every controller's cache is synced.
    pub health: Health,
    pub receipts: receipts::Receipts,
    pub policy: PolicyView,
    /// Large signals read whole at once (their payloads are not cached): a few, so that one
    /// namespace's many large signals never fill the operator's memory.
    pub large_reads: tokio::sync::Semaphore,
    /// Whether a signal's requested-by annotation is evidence of who created it.
    pub requester: requester_guard::RequesterGuard,
    recorder: Recorder,
}

/// Large signals read whole at once, at most.
const LARGE_READS: usize = 2;

impl Context {
    pub fn new(
        client: kube::Client,
        aws: AwsClients,
        settings: Settings,
        leadership: Leadership,
    ) -> Self {
        let reporter = Reporter {
            controller: "signalman".into(),
            instance: Some(settings.identity.clone()),
        };
        let recorder = Recorder::new(client.clone(), reporter);
        let receipts = receipts::Receipts::new(
            client.clone(),
            &settings.receipt_namespace,
            settings.receipt_retention,
        );
        Self {
            receipts,
            requester: requester_guard::RequesterGuard::new(
                client.clone(),
                settings.requester_source.clone(),
            ),
            policy: PolicyView::new(),
            large_reads: tokio::sync::Semaphore::new(LARGE_READS),
            client,
            aws,
            settings,
            leadership,
            metrics: Metrics::new(),
            health: Health::new(),
            recorder,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("status could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("the reconcile panicked")]
    Panicked,
}

impl Error {
    /// A write refused because the object changed since it was read (HTTP 409).
    fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(ae)) if ae.code == 409)
    }
}

/// Runs one controller per kind and watched namespace until `shutdown` resolves. In-flight
/// reconciles finish (send and record) before this returns.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    let namespaces: Vec<Option<String>> = if ctx.settings.namespaces.is_empty() {
        vec![None]
    } else {
        ctx.settings.namespaces.iter().cloned().map(Some).collect()
    };
    // The one place that lists the kinds of signal.
    const KINDS: usize = 2;
    // Plus the SignalPolicies and the namespaces.
    ctx.health.expect_caches(KINDS * namespaces.len() + 2);
    let policies = watch_policies(&ctx);
    let mut controllers = Vec::new();
    let mut ttl_watches = Vec::new();
    for ns in &namespaces {
        controllers.push(spawn::<Swf>(&ctx, ns.as_deref(), shutdown.clone()));
        controllers.push(spawn::<Ssm>(&ctx, ns.as_deref(), shutdown.clone()));
        ttl_watches.push(watch_ttl::<Swf>(&ctx, ns.as_deref()));
        ttl_watches.push(watch_ttl::<Ssm>(&ctx, ns.as_deref()));
    }
    let sweeper = tokio::spawn(sweep_receipts(ctx.clone()));
    let policy_status = tokio::spawn(write_policy_status(ctx.clone()));
    let mut remaining: futures::stream::FuturesUnordered<_> = controllers.into_iter().collect();
    while let Some(ended) = remaining.next().await {
        // A controller ends by itself only on shutdown; otherwise the process is broken.
        if !ctx.health.is_stopping() {
            error!(result = ?ended.err(), "a controller stopped; liveness now fails so the process is restarted");
            ctx.health.controller_died();
        }
    }
    sweeper.abort();
    for watch in ttl_watches {
        watch.abort();
    }
    policies.abort();
    policy_status.abort();
}

/// Keeps the SignalPolicies and the namespaces' labels in [`PolicyView`] (cluster-wide: a
/// policy selects namespaces by their labels).
fn watch_policies(ctx: &Arc<Context>) -> tokio::task::JoinHandle<()> {
    let (policy_writer, namespace_writer) = ctx
        .policy
        .writers
        .lock()
        .expect("policy writers")
        .take()
        .expect("policies are watched once");
    let policies_synced = ctx.health.cache();
    let namespaces_synced = ctx.health.cache();
    let [policies_listed, namespaces_listed] = ctx.policy.synced.clone();
    let policies = reflector(
        policy_writer,
        watcher(
            Api::<crate::api::SignalPolicy>::all(ctx.client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    )
    .inspect(move |event| match event {
        Ok(watcher::Event::InitDone) => {
            policies_listed.store(true, std::sync::atomic::Ordering::SeqCst);
            policies_synced.synced()
        }
        Err(e) => debug!(error = %e, "watching SignalPolicies failed; retrying with backoff"),
        _ => {}
    })
    .for_each(|_| futures::future::ready(()));
    let namespaces = reflector(
        namespace_writer,
        watcher(
            Api::<PartialObjectMeta<Namespace>>::all(ctx.client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    )
    .inspect(move |event| match event {
        Ok(watcher::Event::InitDone) => {
            namespaces_listed.store(true, std::sync::atomic::Ordering::SeqCst);
            namespaces_synced.synced()
        }
        Err(e) => debug!(error = %e, "watching namespaces failed; retrying with backoff"),
        _ => {}
    })
    .for_each(|_| futures::future::ready(()));
    tokio::spawn(async move {
        futures::join!(policies, namespaces);
    })
}

/// Keeps each SignalPolicy's status current (how many namespaces it selects, whether it is
/// valid), while leading: a write only when something changed.
async fn write_policy_status(ctx: Arc<Context>) {
    const EVERY: Duration = Duration::from_secs(15);
    let api: Api<crate::api::SignalPolicy> = Api::all(ctx.client.clone());
    loop {
        tokio::time::sleep(EVERY).await;
        if !ctx.leadership.is_leader() || !ctx.policy.is_synced() {
            continue;
        }
        let namespaces = ctx.policy.namespaces.state();
        let labels: Vec<_> = namespaces
            .iter()
            .map(|ns| ns.metadata.labels.clone().unwrap_or_default())
            .collect();
        for policy in ctx.policy.policies.state() {
            let now = k8s_openapi::jiff::Timestamp::now();
            let status = crate::policy::policy_status(&policy, labels.iter(), now);
            if policy.status.as_ref() == Some(&status) {
                continue;
            }
            let mut next = policy.as_ref().clone();
            next.status = Some(status);
            next.metadata.managed_fields = None;
            let name = next.metadata.name.clone().unwrap_or_default();
            if let Err(e) = api
                .replace_status(&name, &kube::api::PostParams::default(), &next)
                .await
            {
                debug!(error = %e, policy = %name, "SignalPolicy status not written; trying again later");
            }
        }
    }
}

/// Deletes expired receipts once an hour, while leading.
async fn sweep_receipts(ctx: Arc<Context>) {
    const EVERY: Duration = Duration::from_secs(3600);
    loop {
        tokio::time::sleep(EVERY).await;
        if ctx.leadership.is_leader() {
            if let Err(e) = ctx
                .receipts
                .sweep(k8s_openapi::jiff::Timestamp::now())
                .await
            {
                warn!(error = %e, "sweeping expired receipts failed; trying again later");
            }
        }
    }
}

/// Logs a missing CRD once, then every few minutes, with the command that installs it.
struct MissingCrdLog {
    last: Option<Instant>,
}

impl MissingCrdLog {
    const EVERY: Duration = Duration::from_secs(300);

    fn seen<T: SignalTarget>(&mut self, err: &watcher::Error) {
        let missing = matches!(
            err,
            watcher::Error::InitialListFailed(kube::Error::Api(ae))
                | watcher::Error::WatchStartFailed(kube::Error::Api(ae))
                if ae.code == 404
        );
        if !missing {
            debug!(error = %err, "watch failed; retrying with backoff");
            return;
        }
        if self.last.is_some_and(|t| t.elapsed() < Self::EVERY) {
            return;
        }
        self.last = Some(Instant::now());
        let crd = format!(
            "{}.{}",
            <T::Resource as kube::Resource>::plural(&()),
            <T::Resource as kube::Resource>::group(&())
        );
        warn!(
            %crd,
            "the CustomResourceDefinition is not installed, so nothing of this kind can be watched; \
             install it with `signalman crds | kubectl apply --server-side -f -` (or the Helm chart); \
             not ready until then"
        );
    }
}

/// The API of kind `T` in `namespace` (all namespaces when `None`), untyped.
fn signals_api<T: SignalTarget>(ctx: &Context, namespace: Option<&str>) -> Api<DynamicObject> {
    let ar = ApiResource::erase::<T::Resource>(&());
    match namespace {
        Some(ns) => Api::namespaced_with(ctx.client.clone(), ns, &ar),
        None => Api::all_with(ctx.client.clone(), &ar),
    }
}

/// Starts the TTL of kind `T`'s finished signals in `namespace`.
fn watch_ttl<T: SignalTarget>(
    ctx: &Arc<Context>,
    namespace: Option<&str>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(ttl::delete_when_due::<T>(
        signals_api::<T>(ctx, namespace),
        ctx.settings.label_selector.clone(),
        ctx.clone(),
    ))
}

/// Starts the controller of kind `T` in `namespace` (all namespaces when `None`).
fn spawn<T: SignalTarget>(
    ctx: &Arc<Context>,
    namespace: Option<&str>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + Clone + 'static,
) -> tokio::task::JoinHandle<()> {
    let ar = ApiResource::erase::<T::Resource>(&());
    let api = signals_api::<T>(ctx, namespace);
    let config = ControllerConfig::default().concurrency(ctx.settings.concurrency);
    // Controller::new_with's own wiring, plus readiness once the cache is first listed.
    let writer = reflector::store::Writer::new(ar.clone());
    let store = writer.as_reader();
    ctx.metrics.track_store(T::KIND, store.clone());
    let synced = ctx.health.cache();
    let objects = reflector(
        writer,
        // managedFields are ~40% of each cached object and never read here; a status PUT
        // without them leaves the server's copy unchanged.
        watcher(api, watch_config(ctx.settings.label_selector.as_deref()))
            .default_backoff()
            .modify(slim),
    )
    .inspect(move |event| {
        if matches!(event, Ok(watcher::Event::InitDone)) {
            synced.synced();
        }
    })
    .applied_objects();
    // Failures of the Kubernetes API in a row, per object, for the backoff.
    let kube_failures: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let failures_on_error = kube_failures.clone();
    let mut missing_crd = MissingCrdLog { last: None };
    let controller = Controller::for_stream_with(objects, store, ar)
        .with_config(config)
        .reconcile_all_on(ctx.leadership.won())
        .graceful_shutdown_on(shutdown)
        .run(
            move |obj, ctx: Arc<Context>| {
                let key = object_key(&obj);
                let kube_failures = kube_failures.clone();
                let span = tracing::info_span!(
                    "reconcile",
                    kind = T::KIND,
                    namespace = obj.namespace().unwrap_or_default(),
                    name = %obj.name_any(),
                );
                async move {
                    let started = Instant::now();
                    let result = AssertUnwindSafe(pipeline::reconcile::<T>(obj, &ctx))
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|_| {
                            error!("reconcile panicked; the object is retried with backoff");
                            Err(Error::Panicked)
                        });
                    ctx.metrics.reconcile_done(T::KIND, started.elapsed());
                    if result.is_ok() {
                        kube_failures.lock().expect("failure counts").remove(&key);
                    }
                    match result {
                        // Expected under concurrency, and exactly what keeps a send from
                        // happening twice: read again shortly; not an error.
                        Err(e) if e.is_conflict() => {
                            debug!("status write lost a race; requeueing");
                            Ok(Action::requeue(requeue::LOST_RACE))
                        }
                        other => other,
                    }
                }
                .instrument(span)
            },
            move |obj, err: &Error, ctx| {
                ctx.metrics.reconcile_error(T::KIND);
                let failures = {
                    let mut counts = failures_on_error.lock().expect("failure counts");
                    let n = counts.entry(object_key(&obj)).or_insert(0);
                    *n = n.saturating_add(1);
                    *n
                };
                let wait = requeue::after_kube_errors(failures, rand::random::<f64>());
                warn!(kind = T::KIND, namespace = obj.namespace().unwrap_or_default(), name = %obj.name_any(), error = %err, failures, retry_in_ms = wait.as_millis() as u64, "reconcile failed; retrying");
                Action::requeue(wait)
            },
            ctx.clone(),
        )
        .for_each(move |result| {
            if let Err(kube::runtime::controller::Error::QueueError(e)) = &result {
                missing_crd.seen::<T>(e);
            } else if let Err(e) = result {
                debug!(error = %e, "controller event");
            }
            futures::future::ready(())
        });
    tokio::spawn(controller)
}

/// Objects per page of a list (a page of the largest signals is about 15 MiB of JSON).
const LIST_PAGE: u32 = 10;

fn watch_config(label_selector: Option<&str>) -> watcher::Config {
    // Unfinished signals only: a finished one leaves the cache as it finishes (its TTL is
    // watched apart, without a cache, by ttl::delete_when_due).
    // Small pages: an initial list of large signals is never in memory all at once.
    let config = watcher::Config::default()
        .any_semantic()
        .page_size(LIST_PAGE)
        .fields(ttl::UNFINISHED);
    match label_selector {
        Some(selector) if !selector.is_empty() => config.labels(selector),
        _ => config,
    }
}

fn object_key(obj: &DynamicObject) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// What the cache keeps of an object. managedFields (about 40% of an object) and kubectl's
/// last-applied annotation (a copy of the whole manifest) are never read here. A large
/// payload or input (up to the 1.5 MiB etcd takes) is not kept either: the leader reads the
/// whole object again right before it acts on it ([`trimmed`]), so a namespace's pending
/// signals cost the operator a few hundred bytes each, whatever their size.
fn slim(obj: &mut DynamicObject) {
    obj.metadata.managed_fields = None;
    if let Some(a) = obj.metadata.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
    let large = obj
        .data
        .get("spec")
        .is_some_and(|spec| spec.to_string().len() > LARGE_SPEC);
    if large {
        if let Some(spec) = obj.data.get_mut("spec").and_then(|s| s.as_object_mut()) {
            spec.remove("payload");
            spec.remove("input");
        }
        obj.data[TRIMMED] = serde_json::Value::Bool(true);
    }
}

/// A spec larger than this (as JSON) is cached without its payload or input.
const LARGE_SPEC: usize = 8 * 1024;
/// Marks a cached object whose payload or input was left out: a top-level field no object
/// from the API server has (a structural schema prunes unknown fields), so only the cache sets it.
const TRIMMED: &str = "signalmanCachedWithoutPayload";

/// Whether the cache left this object's payload or input out.
pub(crate) fn trimmed(obj: &DynamicObject) -> bool {
    obj.data.get(TRIMMED).is_some()
}

#[cfg(test)]
mod tests {
    use super::requeue::{after_kube_errors, KUBE_ERROR, KUBE_ERROR_MAX};

    /// A large payload is not cached (only marked); a small signal is cached whole.
    #[test]
    fn large_payloads_are_left_out_of_the_cache() {
        let ar = kube::api::ApiResource::erase::<crate::api::AutomationSignal>(&());
        let mut small = kube::api::DynamicObject::new("s", &ar);
        small.data =
            serde_json::json!({"spec": {"signalType": "Approve", "payload": {"Comment": ["ok"]}}});
        let before = small.clone();
        super::slim(&mut small);
        assert_eq!(small, before);
        assert!(!super::trimmed(&small));
        let mut large = kube::api::DynamicObject::new("l", &ar);
        large.data = serde_json::json!({"spec": {
            "signalType": "Approve",
            "automationExecutionId": "e",
            "payload": {"Comment": ["x".repeat(10_000)]},
        }});
        super::slim(&mut large);
        assert!(super::trimmed(&large));
        assert!(large.data["spec"].get("payload").is_none());
        assert_eq!(large.data["spec"]["automationExecutionId"], "e");
    }
    use std::time::Duration;

    #[test]
    fn kubernetes_errors_back_off_exponentially_up_to_a_cap() {
        let full = |n| after_kube_errors(n, 1.0);
        assert_eq!(full(1), KUBE_ERROR);
        assert_eq!(full(2), KUBE_ERROR * 2);
        assert_eq!(full(5), KUBE_ERROR * 16);
        assert_eq!(full(40), KUBE_ERROR_MAX);
        // Jitter takes at most half off.
        assert_eq!(after_kube_errors(3, 0.0), KUBE_ERROR * 2);
        assert!(after_kube_errors(u32::MAX, 0.5) <= KUBE_ERROR_MAX);
        assert!(after_kube_errors(0, 0.0) >= Duration::from_millis(250));
    }
}
