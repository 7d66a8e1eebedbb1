//! kube-runtime wiring: one controller per kind of signal and watched namespace, each running
//! the same pipeline ([`pipeline`]) over the kind's [`SignalTarget`].
//!
//! Objects are watched as `DynamicObject` and parsed one by one, so an object written around
//! the schema (or by an older version of the CRD) fails alone with reason `InvalidSpec` instead
//! of breaking the list/watch of every other object.
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::ResourceExt;
use tracing::{debug, warn, Instrument};

use crate::aws::clients::AwsClients;
use crate::aws::ssm::Ssm;
use crate::aws::swf::Swf;
use crate::aws::target::SignalTarget;
use crate::health::Health;
use crate::leader::Leadership;
use crate::metrics::Metrics;

mod pipeline;
mod status_io;

/// How long to wait before looking at an object again, by why.
pub mod requeue {
    use std::time::Duration;

    /// A status write lost a race with another writer: read again shortly.
    pub const LOST_RACE: Duration = Duration::from_millis(200);
    /// This replica does not lead: look again in case it wins.
    pub const FOLLOWER: Duration = Duration::from_secs(5);
    /// The Kubernetes API failed.
    pub const KUBE_ERROR: Duration = Duration::from_secs(2);
}

/// Settings of the reconcilers (from the command line).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Who claims: unique per running replica, stable across a restart of the same pod.
    pub identity: String,
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
    pub concurrency: u16,
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
    recorder: Recorder,
}

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
        Self {
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
    ctx.health.expect_caches(KINDS * namespaces.len());
    let mut controllers = Vec::new();
    for ns in &namespaces {
        controllers.push(spawn::<Swf>(&ctx, ns.as_deref(), shutdown.clone()));
        controllers.push(spawn::<Ssm>(&ctx, ns.as_deref(), shutdown.clone()));
    }
    for c in controllers {
        let _ = c.await;
    }
}

/// Starts the controller of kind `T` in `namespace` (all namespaces when `None`).
fn spawn<T: SignalTarget>(
    ctx: &Arc<Context>,
    namespace: Option<&str>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + Clone + 'static,
) -> tokio::task::JoinHandle<()> {
    let ar = ApiResource::erase::<T::Resource>(&());
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(ctx.client.clone(), ns, &ar),
        None => Api::all_with(ctx.client.clone(), &ar),
    };
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
        watcher(api, watcher::Config::default().any_semantic())
            .modify(|obj| obj.metadata.managed_fields = None),
    )
    .inspect(move |event| {
        if matches!(event, Ok(watcher::Event::InitDone)) {
            synced.synced();
        }
    })
    .applied_objects();
    let controller = Controller::for_stream_with(objects, store, ar)
        .with_config(config)
        .reconcile_all_on(ctx.leadership.won())
        .graceful_shutdown_on(shutdown)
        .run(
            |obj, ctx: Arc<Context>| {
                let span = tracing::info_span!(
                    "reconcile",
                    kind = T::KIND,
                    namespace = obj.namespace().unwrap_or_default(),
                    name = %obj.name_any(),
                );
                async move {
                    let started = Instant::now();
                    let result = pipeline::reconcile::<T>(obj, &ctx).await;
                    ctx.metrics.reconcile_done(T::KIND, started.elapsed());
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
            |obj, err: &Error, _ctx| {
                warn!(kind = T::KIND, namespace = obj.namespace().unwrap_or_default(), name = %obj.name_any(), error = %err, "reconcile failed; retrying");
                Action::requeue(requeue::KUBE_ERROR)
            },
            ctx.clone(),
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                debug!(error = %e, "controller event");
            }
        });
    tokio::spawn(controller)
}
