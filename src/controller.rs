//! kube-runtime wiring: watch both kinds, and for each object run the fixed pipeline
//! read → validate → decide → (claim → send → record | verify → record) → events.
//!
//! Objects are watched as `DynamicObject` and parsed one by one, so an object written around
//! the schema (or by an older version of the CRD) fails alone with reason `InvalidSpec` instead
//! of breaking the list/watch of every other object.
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Resource, ResourceExt};
use tokio::sync::OnceCell;
use tracing::{debug, info, warn};

use crate::api::{AutomationSignal, SignalStatus, WorkflowSignal};
use crate::aws::clients::{AwsClients, RegionClients};
use crate::aws::{ssm, swf};
use crate::delivery::{self, AwsFailure, Next, SendOutcome, Transition, VerifyOutcome};
use crate::metrics::{self, Metrics};
use crate::server::Health;

/// Which of the two kinds a controller serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Workflow,
    Automation,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Workflow => "WorkflowSignal",
            Kind::Automation => "AutomationSignal",
        }
    }

    fn api_resource(self) -> ApiResource {
        match self {
            Kind::Workflow => ApiResource::erase::<WorkflowSignal>(&()),
            Kind::Automation => ApiResource::erase::<AutomationSignal>(&()),
        }
    }
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
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    pub concurrency: u16,
}

/// Whether this replica may claim and send. Followers still verify nothing and write nothing.
/// Set by [`crate::leader::Elector`]; a watch channel so the controllers can look at every object
/// again the moment leadership is won.
#[derive(Clone, Debug)]
pub struct Leadership(Arc<tokio::sync::watch::Sender<bool>>);

impl Leadership {
    pub fn new(leading: bool) -> Self {
        Self(Arc::new(tokio::sync::watch::Sender::new(leading)))
    }
    pub fn is_leader(&self) -> bool {
        *self.0.borrow()
    }
    pub fn set(&self, leading: bool) {
        self.0
            .send_if_modified(|now| std::mem::replace(now, leading) != leading);
    }
    /// Yields each time this replica becomes the leader.
    pub fn won(&self) -> impl futures::Stream<Item = ()> + Send + 'static {
        futures::stream::unfold(self.0.subscribe(), |mut rx| async move {
            loop {
                rx.changed().await.ok()?;
                if *rx.borrow_and_update() {
                    return Some(((), rx));
                }
            }
        })
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
    recorder: Recorder,
    /// The ARN the operator signs as, learned once (for reading its own approvals).
    caller_arn: OnceCell<Option<String>>,
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
            caller_arn: OnceCell::new(),
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

/// Runs one controller per kind and watched namespace until `shutdown` resolves. In-flight
/// reconciles finish (send and record) before this returns.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    let mut controllers = Vec::new();
    let namespaces: Vec<Option<String>> = if ctx.settings.namespaces.is_empty() {
        vec![None]
    } else {
        ctx.settings.namespaces.iter().cloned().map(Some).collect()
    };
    ctx.health.expect_caches(2 * namespaces.len());
    for kind in [Kind::Workflow, Kind::Automation] {
        for ns in &namespaces {
            let ar = kind.api_resource();
            let api: Api<DynamicObject> = match ns {
                Some(ns) => Api::namespaced_with(ctx.client.clone(), ns, &ar),
                None => Api::all_with(ctx.client.clone(), &ar),
            };
            let ctx = ctx.clone();
            let shutdown = shutdown.clone();
            let config = ControllerConfig::default().concurrency(ctx.settings.concurrency);
            // Controller::new_with's own wiring, plus readiness once the cache is first listed.
            let writer = reflector::store::Writer::new(ar.clone());
            let store = writer.as_reader();
            ctx.metrics.track_store(kind.name(), store.clone());
            let synced = ctx.health.cache();
            let objects = reflector(
                writer,
                // managedFields are ~40% of each cached object and never read here; a status
                // PUT without them leaves the server's copy unchanged.
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
                    move |obj, ctx: Arc<Context>| async move {
                        let started = Instant::now();
                        let result = reconcile(kind, obj, ctx.clone()).await;
                        ctx.metrics.reconcile_done(kind.name(), started.elapsed());
                        match result {
                            // A write refused because the object changed since our cached read:
                            // expected under concurrency, and exactly what keeps a send from
                            // happening twice. Read again shortly; not an error.
                            Err(Error::Kube(kube::Error::Api(ae))) if ae.code == 409 => {
                                debug!(kind = kind.name(), "status write lost a race; requeueing");
                                Ok(Action::requeue(Duration::from_millis(200)))
                            }
                            other => other,
                        }
                    },
                    move |obj, err: &Error, _ctx| {
                        warn!(kind = kind.name(), namespace = obj.namespace().unwrap_or_default(), name = %obj.name_any(), error = %err, "reconcile failed; retrying");
                        Action::requeue(Duration::from_secs(2))
                    },
                    ctx,
                )
                .for_each(|result| async move {
                    if let Err(e) = result {
                        debug!(error = %e, "controller event");
                    }
                });
            controllers.push(tokio::spawn(controller));
        }
    }
    for c in controllers {
        let _ = c.await;
    }
}

/// A signal after parsing: what to send, borrowed views are built from it per call.
enum Parsed {
    Workflow(Box<WorkflowSignal>),
    Automation(Box<AutomationSignal>),
}

impl Parsed {
    fn region(&self) -> Option<&str> {
        match self {
            Parsed::Workflow(s) => s.spec.region(),
            Parsed::Automation(s) => s.spec.region(),
        }
    }
    fn retry(&self) -> crate::api::ResolvedRetry {
        match self {
            Parsed::Workflow(s) => s.spec.retry(),
            Parsed::Automation(s) => s.spec.retry(),
        }
    }
    fn validate(&self) -> Result<(), String> {
        match self {
            Parsed::Workflow(s) => s.validate(),
            Parsed::Automation(s) => s.validate(),
        }
    }
}

/// Parses the object as its kind. The error names the field, never its value.
fn parse(kind: Kind, obj: &DynamicObject) -> Result<Parsed, String> {
    // The CRD's own schema first, on the raw JSON: it names each bad field (a missing one
    // included) and never quotes a value.
    let spec = obj
        .data
        .get("spec")
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    let schema = match kind {
        Kind::Workflow => WorkflowSignal::spec_schema(),
        Kind::Automation => AutomationSignal::spec_schema(),
    };
    let problems = crate::api::validation::check_schema(schema, &spec, "spec");
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    let value = serde_json::to_value(obj).map_err(|_| "object could not be read".to_string())?;
    fn typed<T: serde::de::DeserializeOwned>(
        value: serde_json::Value,
        kind: Kind,
    ) -> Result<T, String> {
        serde_path_to_error::deserialize(value).map_err(|e| {
            format!(
                "object does not match the {} schema at {}",
                kind.name(),
                e.path()
            )
        })
    }
    Ok(match kind {
        Kind::Workflow => Parsed::Workflow(Box::new(typed(value, kind)?)),
        Kind::Automation => Parsed::Automation(Box::new(typed(value, kind)?)),
    })
}

/// Reads the status the operator wrote. `Err` when it is present but unreadable.
fn read_status(obj: &DynamicObject) -> Result<Option<SignalStatus>, String> {
    match obj.data.get("status") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => serde_path_to_error::deserialize(v.clone())
            .map(Some)
            .map_err(|e| format!("status could not be read at {}", e.path())),
    }
}

fn jitter() -> f64 {
    rand::random::<f64>()
}

async fn reconcile(
    kind: Kind,
    obj: Arc<DynamicObject>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    if obj.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let status = match read_status(&obj) {
        Ok(s) => s,
        Err(why) => {
            // A status we cannot read could hide a claim: never send on it.
            warn!(kind = kind.name(), namespace = obj.namespace().unwrap_or_default(), name = %obj.name_any(), %why, "unreadable status; not sending");
            return Ok(Action::await_change());
        }
    };
    let now = Timestamp::now();
    // A finished signal needs nothing, whatever its spec: decide that before parsing and
    // validating (most of a restart's CPU over many finished signals went to validation).
    let finished = delivery::Ctx {
        now,
        holder: &ctx.settings.identity,
        claim_ttl: ctx.settings.claim_ttl,
        verify_settle: ctx.settings.verify_settle,
        retry: crate::api::RetryPolicy::default().resolved(),
        generation: obj.metadata.generation,
        jitter: 0.0,
    };
    if matches!(delivery::decide(status.as_ref(), &finished), Next::Done) {
        return Ok(Action::await_change());
    }
    let parsed = parse(kind, &obj).and_then(|p| p.validate().map(|_| p));
    let retry = parsed
        .as_ref()
        .map(Parsed::retry)
        .unwrap_or_else(|_| crate::api::RetryPolicy::default().resolved());
    let dctx = delivery::Ctx {
        now,
        holder: &ctx.settings.identity,
        claim_ttl: ctx.settings.claim_ttl,
        verify_settle: ctx.settings.verify_settle,
        retry,
        generation: obj.metadata.generation,
        jitter: jitter(),
    };
    let signal = match parsed {
        Ok(p) => p,
        Err(why) => {
            if matches!(delivery::decide(status.as_ref(), &dctx), Next::Done) {
                return Ok(Action::await_change());
            }
            if !ctx.leadership.is_leader() {
                return Ok(Action::requeue(Duration::from_secs(5)));
            }
            let tr = delivery::invalid_spec(status.as_ref(), &why, &dctx);
            return match write_and_tell(kind, &obj, tr.clone(), &ctx).await {
                Ok(_) => Ok(Action::await_change()),
                // The API server refuses any write to some malformed objects (a CEL rule on the
                // spec cannot evaluate a field of the wrong type). The Event is then the only
                // place to say why; retrying the write cannot help until the object changes.
                Err(Error::Kube(kube::Error::Api(ae))) if ae.code == 422 => {
                    warn!(kind = kind.name(), namespace = obj.namespace().unwrap_or_default(), name = %obj.name_any(), %why, "malformed object; its status cannot be written");
                    tell(kind, &obj, tr.event.as_ref(), &ctx).await;
                    Ok(Action::await_change())
                }
                Err(e) => Err(e),
            };
        }
    };

    match delivery::decide(status.as_ref(), &dctx) {
        Next::Done => Ok(Action::await_change()),
        Next::WaitUntil(t) => Ok(Action::requeue(until(now, t))),
        _ if !ctx.leadership.is_leader() => Ok(Action::requeue(Duration::from_secs(5))),
        Next::Write(tr) => {
            write_and_tell(kind, &obj, tr, &ctx).await?;
            Ok(Action::await_change())
        }
        Next::Verify => {
            let status = status.unwrap_or_default();
            let outcome = match ctx.aws.for_region(signal.region()) {
                Ok(clients) => verify(&signal, &status, &clients, &ctx).await,
                Err(why) => VerifyOutcome::Failed(no_region(why)),
            };
            let tr = delivery::after_verify(
                &status,
                &outcome,
                &delivery::Ctx {
                    now: Timestamp::now(),
                    ..dctx
                },
            );
            write_and_tell(kind, &obj, tr, &ctx).await?;
            Ok(Action::await_change())
        }
        Next::Claim(claim) => {
            claim_send_record(kind, &obj, &signal, status.as_ref(), claim, dctx, &ctx).await
        }
    }
}

/// DESIGN §3 steps 1–3 for one object.
async fn claim_send_record(
    kind: Kind,
    obj: &DynamicObject,
    signal: &Parsed,
    status: Option<&SignalStatus>,
    claim: Transition,
    dctx: delivery::Ctx<'_>,
    ctx: &Context,
) -> Result<Action, Error> {
    let clients = match ctx.aws.for_region(signal.region()) {
        Ok(c) => c,
        Err(why) => {
            let tr =
                delivery::after_send(&claim.status, &SendOutcome::Failed(no_region(why)), &dctx);
            write_and_tell(kind, obj, tr, ctx).await?;
            return Ok(Action::await_change());
        }
    };
    // Wait for the rate limit before claiming, so a claim is followed by its send at once.
    match signal {
        Parsed::Workflow(_) => clients.swf_limiter.until_ready().await,
        Parsed::Automation(_) => clients.ssm_limiter.until_ready().await,
    }
    // Leadership may have been lost while waiting for the rate limit (the claim is the first fence).
    if !ctx.leadership.is_leader() {
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    // SWF: pin the run before the claim, so verification reads the run that was signalled.
    let mut run_id = claim.status.run_id.clone();
    if let Parsed::Workflow(ws) = signal {
        run_id = ws.spec.run_id.clone().filter(|r| !r.is_empty()).or(run_id);
        if run_id.is_none() {
            let lookup =
                swf::resolve_open_run(&clients.swf_read, &ws.spec.domain, &ws.spec.workflow_id);
            match ctx
                .metrics
                .observe_aws(
                    "swf",
                    "ListOpenWorkflowExecutions",
                    lookup,
                    metrics::result_outcome,
                )
                .await
            {
                Ok(run) => run_id = Some(run),
                Err(failure) => {
                    // Nothing was sent: record the lookup's failure as this attempt's outcome.
                    let tr =
                        delivery::after_send(&claim.status, &SendOutcome::Failed(failure), &dctx);
                    write_and_tell(kind, obj, tr, ctx).await?;
                    return Ok(Action::await_change());
                }
            }
        }
    }
    // The rate limit and the run lookup may have taken a while: decide again at the time of the
    // claim itself, so that its lastAttemptTime and deadline are exact.
    let dctx = delivery::Ctx {
        now: Timestamp::now(),
        ..dctx
    };
    let mut claim = match delivery::decide(status, &dctx) {
        Next::Claim(fresh) => fresh,
        _ => claim,
    };
    claim.status.run_id = run_id;
    let claimed_status = claim.status.clone();
    let claimed_obj = match write_status(kind, obj, &claim.status, ctx).await {
        Ok(o) => o,
        Err(Error::Kube(kube::Error::Api(ae))) if ae.code == 409 => {
            debug!(kind = kind.name(), name = %obj.name_any(), "claim lost a write race; not sending");
            return Ok(Action::requeue(Duration::from_millis(200)));
        }
        Err(e) => return Err(e),
    };
    tell(kind, obj, claim.event.as_ref(), ctx).await;
    failpoint("after-claim");

    let in_flight = ctx.metrics.in_flight(kind.name());
    let (service, operation) = match signal {
        Parsed::Workflow(_) => ("swf", "SignalWorkflowExecution"),
        Parsed::Automation(_) => ("ssm", "SendAutomationSignal"),
    };
    let timed_send = async {
        match tokio::time::timeout(
            ctx.settings.send_timeout + Duration::from_secs(2),
            send(signal, &claimed_status, &clients),
        )
        .await
        {
            Ok(outcome) => outcome,
            Err(_) => SendOutcome::Failed(AwsFailure {
                class: crate::aws::classify::ErrorClass::Ambiguous,
                code: None,
                message: "the AWS call did not finish in time".into(),
            }),
        }
    };
    let outcome = ctx
        .metrics
        .observe_aws(service, operation, timed_send, metrics::send_outcome)
        .await;
    drop(in_flight);
    failpoint("after-send");
    let record = delivery::after_send(
        &claimed_status,
        &outcome,
        &delivery::Ctx {
            now: Timestamp::now(),
            ..dctx
        },
    );
    // Conditional on the claim's resourceVersion: if this write fails, the claim stays and the
    // next reconcile verifies instead of sending again.
    write_and_tell(kind, &claimed_obj, record, ctx).await?;
    Ok(Action::await_change())
}

async fn send(signal: &Parsed, status: &SignalStatus, clients: &RegionClients) -> SendOutcome {
    match signal {
        Parsed::Workflow(ws) => {
            let run_id = status.run_id.as_deref().unwrap_or_default();
            swf::send(&clients.swf_send, swf_view(ws, run_id)).await
        }
        Parsed::Automation(asig) => ssm::send(&clients.ssm_send, &ssm_view(asig)).await,
    }
}

async fn verify(
    signal: &Parsed,
    status: &SignalStatus,
    clients: &RegionClients,
    ctx: &Context,
) -> VerifyOutcome {
    let since = status
        .verify_since
        .as_ref()
        .or(status.last_attempt_time.as_ref())
        .map(|t| t.0)
        .unwrap_or(Timestamp::UNIX_EPOCH);
    match signal {
        Parsed::Workflow(ws) => {
            let Some(run_id) = status.run_id.as_deref() else {
                // No run was pinned, so nothing can have been sent.
                return VerifyOutcome::Absent;
            };
            clients.swf_limiter.until_ready().await;
            ctx.metrics
                .observe_aws(
                    "swf",
                    "GetWorkflowExecutionHistory",
                    swf::verify(&clients.swf_read, swf_view(ws, run_id), since),
                    metrics::verify_outcome,
                )
                .await
        }
        Parsed::Automation(asig) => {
            let me = ctx
                .caller_arn
                .get_or_init(|| {
                    ctx.metrics.observe_aws(
                        "sts",
                        "GetCallerIdentity",
                        ssm::caller_arn(&clients.sts),
                        |arn| if arn.is_some() { "ok" } else { "Unknown" },
                    )
                })
                .await;
            clients.ssm_limiter.until_ready().await;
            ctx.metrics
                .observe_aws(
                    "ssm",
                    "GetAutomationExecution",
                    ssm::verify(&clients.ssm_read, &ssm_view(asig), me.as_deref()),
                    metrics::verify_outcome,
                )
                .await
        }
    }
}

fn swf_view<'a>(ws: &'a WorkflowSignal, run_id: &'a str) -> swf::SwfSignal<'a> {
    swf::SwfSignal {
        domain: &ws.spec.domain,
        workflow_id: &ws.spec.workflow_id,
        run_id,
        signal_name: &ws.spec.signal_name,
        input: ws.spec.input.as_deref(),
    }
}

fn ssm_view(asig: &AutomationSignal) -> ssm::SsmSignal<'_> {
    ssm::SsmSignal {
        execution_id: &asig.spec.automation_execution_id,
        signal_type: asig.spec.signal_type.as_str(),
        payload: asig.spec.payload_for_wire(),
    }
}

fn no_region(why: String) -> AwsFailure {
    AwsFailure {
        class: crate::aws::classify::ErrorClass::Invalid,
        code: None,
        message: why,
    }
}

fn until(now: Timestamp, t: Timestamp) -> Duration {
    let d = t.duration_since(now);
    if d.is_negative() {
        Duration::from_millis(0)
    } else {
        Duration::try_from(d)
            .unwrap_or(Duration::from_secs(1))
            .max(Duration::from_millis(10))
    }
}

/// Writes `status` with a PUT to the status subresource carrying the object's resourceVersion,
/// so the write fails with 409 if anyone wrote since this object was read.
async fn write_status(
    kind: Kind,
    obj: &DynamicObject,
    status: &SignalStatus,
    ctx: &Context,
) -> Result<DynamicObject, Error> {
    let ar = kind.api_resource();
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, &ar);
    let mut next = obj.clone();
    next.data["status"] = serde_json::to_value(status)?;
    Ok(api
        .replace_status(&obj.name_any(), &PostParams::default(), &next)
        .await?)
}

async fn write_and_tell(
    kind: Kind,
    obj: &DynamicObject,
    tr: Transition,
    ctx: &Context,
) -> Result<DynamicObject, Error> {
    let written = write_status(kind, obj, &tr.status, ctx).await?;
    ctx.metrics.status_written(
        kind.name(),
        read_status(obj).ok().flatten().as_ref(),
        &tr.status,
    );
    info!(
        kind = kind.name(),
        namespace = obj.namespace().unwrap_or_default(),
        name = %obj.name_any(),
        phase = ?tr.status.phase,
        attempts = tr.status.attempts,
        "status written"
    );
    tell(kind, obj, tr.event.as_ref(), ctx).await;
    Ok(written)
}

/// Publishes an Event on the object; failures are logged, never fatal.
async fn tell(kind: Kind, obj: &DynamicObject, note: Option<&delivery::EventNote>, ctx: &Context) {
    let Some(note) = note else { return };
    let mut reference = obj.object_ref(&kind.api_resource());
    reference.api_version = Some(kind.api_resource().api_version);
    let event = Event {
        type_: if note.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: note.reason.to_string(),
        note: Some(note.note.clone()),
        action: "Signal".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &reference).await {
        debug!(error = %e, "event not recorded");
    }
}

/// Crash tests: `SIGNALMAN_FAILPOINT=after-claim|after-send` makes the process SIGKILL itself
/// at that point of the protocol, exactly as an OOM kill or a node loss would stop it.
fn failpoint(name: &str) {
    static ARMED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let armed = ARMED.get_or_init(|| std::env::var("SIGNALMAN_FAILPOINT").ok());
    if armed.as_deref() == Some(name) {
        warn!(failpoint = name, "failpoint reached: killing this process");
        // SAFETY: kill(2) on our own pid; no memory is touched.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
