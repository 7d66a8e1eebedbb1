//! The one pipeline every kind of signal goes through:
//! read → validate → decide → (claim → send → record | verify → record | write).
//!
//! What to do is decided once, by the pure [`delivery::decide`]; this module only carries the
//! decision out against Kubernetes and, through the kind's [`SignalTarget`], AWS.
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::DynamicObject;
use kube::runtime::controller::Action;
use kube::ResourceExt;
use tracing::warn;

use super::receipts::ReceiptKey;
use super::status_io::{read_object, read_status, tell, write_and_tell, write_status};
use super::{requeue, Context, Error};
use crate::api::{ResolvedRetry, Signal, SignalStatus};
use crate::aws::circuit::{CallResult, Change, Permit};
use crate::aws::classify::ErrorClass;
use crate::aws::clients::{Identity, NoClients, RegionClients, Turn};
use crate::aws::target::{Prepared, SignalTarget};
use crate::delivery::{self, AwsFailure, EventNote, Next, ReceiptSays, SendOutcome, VerifyOutcome};
use crate::requester::Requester;
use crate::{failpoint, metrics};

/// The spec of the object at hand, as far as it was read.
enum Spec<R> {
    /// Not read: the signal is finished, and nothing it says can matter any more (most of a
    /// restart's CPU over many finished signals used to go to parsing and validating them).
    Skipped,
    Valid(R),
    /// Unreadable or against the schema; says which fields, never their values.
    Invalid(String),
}

impl<R: Signal> Spec<R> {
    fn retry(&self) -> ResolvedRetry {
        match self {
            Spec::Valid(signal) => signal.retry(),
            Spec::Skipped | Spec::Invalid(_) => ResolvedRetry::default(),
        }
    }
}

pub(super) async fn reconcile<T: SignalTarget>(
    obj: Arc<DynamicObject>,
    ctx: &Context,
) -> Result<Action, Error> {
    if obj.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let status = match read_status(&obj) {
        Ok(s) => s,
        Err(why) => {
            // A status we cannot read could hide a claim: never send on it.
            warn!(%why, "unreadable status; not sending");
            return Ok(Action::await_change());
        }
    };
    let spec = if status.as_ref().is_some_and(delivery::is_finished) {
        Spec::Skipped
    } else {
        parse::<T>(&obj)
    };
    // The requester recorded at the first claim stands; before that, the leader asks whether
    // the annotation is evidence (followers write nothing, so they need not know).
    let recorded_requester = status.as_ref().and_then(|s| s.requested_by.clone());
    // The namespace's labels are copied only when there is something to judge.
    let namespace_labels;
    let requester = if recorded_requester.is_none()
        && ctx.leadership.is_leader()
        && obj
            .annotations()
            .contains_key(crate::api::REQUESTED_BY_ANNOTATION)
    {
        namespace_labels = ctx
            .policy
            .labels_of(obj.metadata.namespace.as_deref().unwrap_or_default());
        ctx.requester.requester(&obj, &namespace_labels).await
    } else {
        Requester::None
    };
    let dctx = delivery::Ctx {
        now: Timestamp::now(),
        holder: &ctx.settings.holder,
        claim_ttl: ctx.settings.claim_ttl,
        verify_settle: ctx.settings.verify_settle,
        retry: spec.retry(),
        generation: obj.metadata.generation,
        jitter: rand::random::<f64>(),
        not_after: match &spec {
            Spec::Valid(signal) => signal.not_after(),
            Spec::Skipped | Spec::Invalid(_) => None,
        },
        verify_recheck: ctx.settings.verify_recheck,
        requested_by: recorded_requester.as_deref().or(requester.name()),
        retry_requested: crate::api::retry_now_requested(&obj.metadata),
    };
    let next = delivery::decide(status.as_ref(), &dctx);
    // Finished: nothing left here (the TTL is watched apart, and the object leaves this
    // controller's cache as it finishes).
    if next == Next::Done {
        return Ok(Action::await_change());
    }
    if !ctx.leadership.is_leader() {
        if let Next::WaitUntil(t) = next {
            return Ok(Action::requeue(until(dctx.now, t)));
        }
        return Ok(Action::requeue(requeue::FOLLOWER));
    }
    // The cache keeps a large signal without its payload. To act on it, the leader reads it
    // whole, as the API server has it now, a few at a time, and decides again on that.
    if super::trimmed(&obj) && !matches!(next, Next::WaitUntil(_)) {
        let Ok(_permit) = ctx.large_reads.try_acquire() else {
            let jitter = Duration::from_millis(rand::random::<u64>() % 500);
            return Ok(Action::requeue(requeue::LARGE_READS_BUSY + jitter));
        };
        let whole = Arc::new(read_object::<T>(&obj, ctx).await?);
        return Box::pin(reconcile::<T>(whole, ctx)).await;
    }
    let signal = match spec {
        Spec::Invalid(why) => {
            return record_invalid::<T>(&obj, status.as_ref(), &why, &dctx, ctx).await
        }
        Spec::Valid(signal) => Some(signal),
        Spec::Skipped => None,
    };
    match (next, signal) {
        (Next::Done, _) => Ok(Action::await_change()),
        (Next::WaitUntil(t), _) => Ok(Action::requeue(until(dctx.now, t))),
        (Next::Write(tr), _) => {
            write_and_tell::<T>(&obj, tr, ctx).await?;
            Ok(Action::await_change())
        }
        (Next::Verify, Some(signal)) => {
            let status = status.unwrap_or_default();
            verify::<T>(&obj, &signal, &status, &dctx, ctx).await
        }
        (Next::Claim(_), Some(signal)) => {
            if let Requester::Unproven(why) = &requester {
                requester_unproven::<T>(&obj, why, ctx).await;
            }
            let key = receipt_key::<T>(&obj, &signal);
            let earlier =
                match earlier_delivery::<T>(&obj, &signal, &key, status.as_ref(), &dctx, ctx)
                    .await?
                {
                    Earlier::Settled(tr) => {
                        write_and_tell::<T>(&obj, *tr, ctx).await?;
                        return Ok(Action::await_change());
                    }
                    Earlier::Unrecorded(unrecorded) => unrecorded,
                };
            claim_send_record::<T>(&obj, &signal, &key, status.as_ref(), earlier, &dctx, ctx).await
        }
        // A finished signal (its spec skipped) is never claimed or verified.
        (Next::Verify | Next::Claim(_), None) => Ok(Action::await_change()),
    }
}

/// A requested-by annotation that is not evidence: said once per attempt, in the log and an
/// Event (the value itself is left out: it may be anything its author wrote).
async fn requester_unproven<T: SignalTarget>(obj: &DynamicObject, why: &str, ctx: &Context) {
    tracing::info!(%why, "requested-by annotation not honoured; the signal has no requester");
    let note = EventNote {
        warning: true,
        reason: "RequesterUnproven",
        note: format!(
            "signalman.dev/requested-by is not honoured ({why}); sent with no requester, and any signalman.dev/approved-by is ignored"
        ),
    };
    tell::<T>(obj, Some(&note), ctx).await;
}

/// Parses the object as its kind and checks the CRD's rules again. The error names the field,
/// never its value.
fn parse<T: SignalTarget>(obj: &DynamicObject) -> Spec<T::Resource> {
    // A cached object without its payload is checked when it is read whole (before acting).
    let trimmed = super::trimmed(obj);
    // The CRD's own schema first, on the raw JSON: it names each bad field (a missing one
    // included) and never quotes a value.
    let spec = obj.data.get("spec").unwrap_or(&serde_json::Value::Null);
    let problems = crate::api::validation::check_schema(T::spec_schema(), spec, "spec");
    if !problems.is_empty() && !trimmed {
        return Spec::Invalid(problems.join("; "));
    }
    let value = match serde_json::to_value(obj) {
        Ok(v) => v,
        Err(_) => return Spec::Invalid("object could not be read".to_string()),
    };
    let signal: T::Resource = match serde_path_to_error::deserialize(value) {
        Ok(s) => s,
        Err(e) => {
            return Spec::Invalid(format!(
                "object does not match the {} schema at {}",
                T::KIND,
                e.path()
            ))
        }
    };
    match signal.validate() {
        Ok(()) => Spec::Valid(signal),
        Err(_) if trimmed => Spec::Valid(signal),
        Err(why) => Spec::Invalid(why),
    }
}

/// Fails a malformed object for good: `InvalidSpec`, naming the fields.
async fn record_invalid<T: SignalTarget>(
    obj: &DynamicObject,
    status: Option<&SignalStatus>,
    why: &str,
    dctx: &delivery::Ctx<'_>,
    ctx: &Context,
) -> Result<Action, Error> {
    let tr = delivery::invalid_spec(status, why, dctx);
    match write_and_tell::<T>(obj, tr.clone(), ctx).await {
        Ok(_) => Ok(Action::await_change()),
        // The API server refuses any write to some malformed objects (a CEL rule on the spec
        // cannot evaluate a field of the wrong type). The Event is then the only place to say
        // why; retrying the write cannot help until the object changes.
        Err(Error::Kube(kube::Error::Api(ae))) if ae.code == 422 => {
            warn!(%why, "malformed object; its status cannot be written");
            tell::<T>(obj, tr.event.as_ref(), ctx).await;
            Ok(Action::await_change())
        }
        Err(e) => Err(e),
    }
}

/// What is known of an earlier delivery of the same signal, before this object's first send.
enum Earlier {
    /// A receipt settles it: write this (AlreadyDelivered, or Verifying an earlier object's
    /// attempt of unknown fate) and send nothing now.
    Settled(Box<delivery::Transition>),
    /// Nothing recorded settles it.
    Unrecorded(Unrecorded),
}

/// What the claim must still see to before sending, when no receipt settled it.
struct Unrecorded {
    /// `Some(t)`: a delivery before `t` could have left no receipt, so the target's AWS side is
    /// to be checked when it is older; `None`: nothing to check (an attempt of this object may
    /// have been sent already and is verified instead, or a duplicate on purpose).
    before: Option<Timestamp>,
    /// A receipt of this signal's attempts exists (or none is kept): none to write at the claim.
    receipt_kept: bool,
}

/// Looks for an earlier delivery of this very signal (same namespace, kind, name and content),
/// by an object deleted and created again, until this object has sent anything.
async fn earlier_delivery<T: SignalTarget>(
    obj: &DynamicObject,
    signal: &T::Resource,
    key: &ReceiptKey,
    status: Option<&SignalStatus>,
    dctx: &delivery::Ctx<'_>,
    ctx: &Context,
) -> Result<Earlier, Error> {
    if !delivery::needs_earlier_check(status) || signal.allow_duplicate() {
        return Ok(Earlier::Unrecorded(Unrecorded {
            before: None,
            receipt_kept: true,
        }));
    }
    let receipt = ctx.receipts.find(key, dctx.now).await?;
    let says = receipt.as_ref().map(|r| {
        delivery::read_receipt(
            obj.metadata.uid.as_deref(),
            r.spec.signal_uid.as_deref(),
            r.spec.attempted_at.as_ref().map(|t| t.0),
            r.spec.delivered_at.as_ref().map(|t| t.0),
        )
    });
    match says {
        Some(ReceiptSays::Delivered(at)) => {
            let evidence = format!(
                "a receipt shows an earlier {} named {} delivered this signal at {at}",
                T::KIND,
                key.name
            );
            let tr = delivery::already_delivered(status, &evidence, dctx);
            Ok(Earlier::Settled(Box::new(tr)))
        }
        Some(ReceiptSays::AttemptedBefore(since)) => {
            let mut tr = delivery::verify_earlier_attempt(status, since, dctx);
            if let Some(target) = receipt.as_ref().and_then(|r| r.spec.target.as_deref()) {
                T::restore_target(signal, &mut tr.status, target);
            }
            Ok(Earlier::Settled(Box::new(tr)))
        }
        Some(ReceiptSays::Nothing) | None => Ok(Earlier::Unrecorded(Unrecorded {
            before: Some(ctx.receipts.horizon(dctx.now).await?),
            receipt_kept: receipt.is_some(),
        })),
    }
}

/// Whether, and as whom, a signal may go to AWS.
enum Authorized {
    /// With these clients (the identity the allowing SignalPolicy names), and the approver
    /// asserted by a ServiceAccount an allowing policy lets assert one.
    Send(Arc<RegionClients>, Option<String>),
    /// Some policy could allow it once the execution's document is known: read it with these
    /// clients (the best candidate's identity), then ask again with it.
    NeedsDocument(Arc<RegionClients>),
    /// No SignalPolicy allows it: why, naming namespace, field and the policy needed.
    Denied(String),
    /// Not decidable yet (the policies are not listed): look again then.
    NotYet(Duration),
    /// No region to send to, or no clients for it.
    Unaddressable(NoClients),
}

/// The SignalPolicies' verdict on the signal, and the clients of the identity they grant.
/// `document`: the Automation document, once read. No AWS call.
fn authorize<T: SignalTarget>(
    obj: &DynamicObject,
    signal: &T::Resource,
    dctx: &delivery::Ctx<'_>,
    ctx: &Context,
    document: Option<&str>,
) -> Authorized {
    if !ctx.policy.is_synced() {
        return Authorized::NotYet(requeue::POLICIES_NOT_LISTED);
    }
    let namespace = obj.metadata.namespace.as_deref().unwrap_or_default();
    let region = match ctx.aws.region_or_default(signal.region()) {
        Ok(region) => region,
        Err(why) => return Authorized::Unaddressable(why),
    };
    let mut request = crate::policy::Request {
        region: &region,
        target: T::policy_target(signal),
    };
    if let crate::policy::Target::Ssm { document: d, .. } = &mut request.target {
        *d = document;
    }
    let policies = ctx.policy.policies();
    let labels = ctx.policy.labels_of(namespace);
    let (grant, needs_document) =
        match crate::policy::evaluate(&policies, namespace, &labels, &request) {
            crate::policy::Decision::Denied(d) => return Authorized::Denied(d.message()),
            crate::policy::Decision::Allowed(grant) => (grant, false),
            // With the document known a policy cannot need it again.
            crate::policy::Decision::NeedsDocument(grant) => (grant, document.is_none()),
        };
    let identity = Identity {
        role_arn: grant.role_arn,
        namespace: namespace.to_string(),
        requested_by: dctx.requested_by.map(str::to_string),
    };
    let approved_by = match (
        obj.annotations().get(crate::api::APPROVED_BY_ANNOTATION),
        dctx.requested_by,
    ) {
        (Some(approver), Some(creator))
            if !needs_document
                && crate::policy::may_assert_approved_by(&policies, &labels, &request, creator) =>
        {
            Some(approver.clone())
        }
        (Some(_), _) if !needs_document => {
            warn!("approved-by ignored: no allowing SignalPolicy lets the creator assert it");
            None
        }
        _ => None,
    };
    match ctx.aws.for_identity(&identity, Some(&region)) {
        Ok(clients) if needs_document => Authorized::NeedsDocument(clients),
        Ok(clients) => Authorized::Send(clients, approved_by),
        Err(why) => Authorized::Unaddressable(why),
    }
}

fn receipt_key<T: SignalTarget>(obj: &DynamicObject, signal: &T::Resource) -> ReceiptKey {
    ReceiptKey::new(
        obj.metadata.namespace.as_deref().unwrap_or_default(),
        T::KIND,
        obj.metadata.name.as_deref().unwrap_or_default(),
        &T::identity(signal),
    )
}

/// How a call ended, for the circuit breaker: did AWS answer at all?
fn call_result(failure: Option<&AwsFailure>) -> CallResult {
    match failure.map(|f| f.class) {
        Some(ErrorClass::NotSent | ErrorClass::Ambiguous) => CallResult::Failed,
        _ => CallResult::Answered,
    }
}

/// Reports a call to the kind's circuit, and tells when the circuit opens or closes.
async fn record_call<T: SignalTarget>(
    obj: &DynamicObject,
    clients: &RegionClients,
    failure: Option<&AwsFailure>,
    ctx: &Context,
) {
    let gate = T::gate(clients);
    let change = gate.record_call(call_result(failure));
    ctx.metrics
        .set_circuit(T::SERVICE, &clients.region, gate.is_open());
    let note = match change {
        None => return,
        Some(Change::Opened) => {
            warn!(service = T::SERVICE, region = %clients.region, "AWS is failing: circuit open, one probe at a time until it answers");
            EventNote {
                warning: true,
                reason: "CircuitOpen",
                note: format!(
                    "{} in {} keeps failing; pending signals wait and one probe at a time checks when it is back",
                    T::SERVICE, clients.region
                ),
            }
        }
        Some(Change::Closed) => {
            tracing::info!(service = T::SERVICE, region = %clients.region, "AWS answers again: circuit closed");
            EventNote {
                warning: false,
                reason: "CircuitClosed",
                note: format!("{} in {} answers again", T::SERVICE, clients.region),
            }
        }
    };
    tell::<T>(obj, Some(&note), ctx).await;
}

/// Whether the kind's circuit lets a call through now; else when to look again.
fn circuit_wait<T: SignalTarget>(clients: &RegionClients) -> Option<Duration> {
    match T::gate(clients).permit() {
        Permit::Call | Permit::Probe => None,
        Permit::WaitUntil(t) => Some(
            t.saturating_duration_since(std::time::Instant::now())
                .max(Duration::from_millis(100)),
        ),
    }
}

/// What a signal the policies did not clear comes to: `PolicyDenied`, a failed attempt when it
/// cannot be addressed, or a wait.
async fn not_cleared<T: SignalTarget>(
    obj: &DynamicObject,
    status: Option<&SignalStatus>,
    refusal: Authorized,
    dctx: &delivery::Ctx<'_>,
    ctx: &Context,
) -> Result<Action, Error> {
    let tr = match refusal {
        Authorized::Denied(why) => delivery::policy_denied(status, &why, dctx),
        Authorized::Unaddressable(why) => {
            // Nothing was sent: the attempt this claim would have been fails at once.
            delivery::failed_before_send(&status.cloned().unwrap_or_default(), &why.failure(), dctx)
        }
        Authorized::NotYet(wait) => return Ok(Action::requeue(wait)),
        Authorized::Send(..) | Authorized::NeedsDocument(_) => {
            return Ok(Action::requeue(requeue::LOST_RACE))
        }
    };
    write_and_tell::<T>(obj, tr, ctx).await?;
    Ok(Action::await_change())
}

/// Cleared to send: as whom, with what asserted, holding the namespace's turn.
struct Ready {
    clients: Arc<RegionClients>,
    approved_by: Option<String>,
    _turn: Turn,
}

/// Everything between the decision to claim and the claim: the policies' verdict and the
/// identity they grant, the circuit, the namespace's turn at the rate limit and, for an
/// AutomationSignal, its document. `Err`: what to do instead (written already, or wait).
async fn ready_to_send<T: SignalTarget>(
    obj: &DynamicObject,
    signal: &T::Resource,
    status: Option<&SignalStatus>,
    dctx: &delivery::Ctx<'_>,
    ctx: &Context,
) -> Result<Result<Ready, Action>, Error> {
    let unclaimed = status.cloned().unwrap_or_default();
    // Nothing was sent when the signal cannot even be addressed: the attempt this claim would
    // have been fails at once.
    let (mut clients, mut approved_by, needs_document) =
        match authorize::<T>(obj, signal, dctx, ctx, None) {
            Authorized::Send(clients, approved_by) => (clients, approved_by, false),
            Authorized::NeedsDocument(clients) => (clients, None, true),
            refusal => {
                return not_cleared::<T>(obj, status, refusal, dctx, ctx)
                    .await
                    .map(Err)
            }
        };
    if let Some(wait) = circuit_wait::<T>(&clients) {
        return Ok(Err(Action::requeue(wait)));
    }
    // Namespaces take turns (for the document read too): a flood in one does not hold up the
    // signals of another.
    let turn = match T::gate(&clients).turn(
        T::SEND_OPERATION,
        obj.metadata.namespace.as_deref().unwrap_or_default(),
        obj.metadata.name.as_deref().unwrap_or_default(),
    ) {
        Ok(turn) => turn,
        Err(wait) => return Ok(Err(Action::requeue(wait))),
    };
    if needs_document {
        let document = match T::document(signal, &clients, &ctx.metrics).await {
            Ok(d) => d.unwrap_or_default(),
            Err(failure) => {
                record_call::<T>(obj, &clients, Some(&failure), ctx).await;
                let tr = delivery::failed_before_send(&unclaimed, &failure, dctx);
                write_and_tell::<T>(obj, tr, ctx).await?;
                return Ok(Err(Action::await_change()));
            }
        };
        (clients, approved_by) = match authorize::<T>(obj, signal, dctx, ctx, Some(&document)) {
            Authorized::Send(c, a) => (c, a),
            Authorized::NeedsDocument(c) => (c, None),
            refusal => {
                return not_cleared::<T>(obj, status, refusal, dctx, ctx)
                    .await
                    .map(Err)
            }
        };
    }
    Ok(Ok(Ready {
        clients,
        approved_by,
        _turn: turn,
    }))
}

/// Claim, send once, record.
async fn claim_send_record<T: SignalTarget>(
    obj: &DynamicObject,
    signal: &T::Resource,
    key: &ReceiptKey,
    status: Option<&SignalStatus>,
    earlier: Unrecorded,
    dctx: &delivery::Ctx<'_>,
    ctx: &Context,
) -> Result<Action, Error> {
    let unclaimed = status.cloned().unwrap_or_default();
    let ready = match ready_to_send::<T>(obj, signal, status, dctx, ctx).await? {
        Ok(ready) => ready,
        Err(action) => return Ok(action),
    };
    let clients = ready.clients.clone();
    let reference = key.reference();
    let mut pinned = unclaimed;
    let prepared = T::prepare(
        signal,
        &mut pinned,
        &reference,
        earlier.before,
        &clients,
        &ctx.metrics,
    )
    .await;
    // Only a failed look-up tells the circuit something: a prepare that succeeded may not have
    // called AWS at all, and the send that follows reports for the attempt.
    if let Err(f) = &prepared {
        record_call::<T>(obj, &clients, Some(f), ctx).await;
    }
    match prepared {
        Ok(Prepared::Send) => {}
        Ok(Prepared::AlreadyDelivered(evidence)) => {
            let tr = delivery::already_delivered(Some(&pinned), &evidence, dctx);
            record::<T>(obj, signal, key, tr, ctx).await?;
            return Ok(Action::await_change());
        }
        Err(failure) => {
            // Nothing was sent: the look-up's failure is this attempt's outcome, and the
            // check is made again before the next one.
            let tr = delivery::failed_before_send(&pinned, &failure, dctx);
            write_and_tell::<T>(obj, tr, ctx).await?;
            return Ok(Action::await_change());
        }
    }
    // Leadership may have been lost meanwhile (the conditional claim is the first fence).
    if !ctx.leadership.is_leader() {
        return Ok(Action::requeue(requeue::FOLLOWER));
    }
    // Stamped at the time of the claim itself: the rate limit and the look-up may have taken a
    // while, and must not shorten the claim's live window.
    let dctx = dctx.at(Timestamp::now());
    // Before anything is sent: should this object be deleted while the send's outcome is
    // unknown, the same signal created again verifies before it sends.
    let attempt = async {
        if earlier.receipt_kept {
            return Ok(());
        }
        ctx.receipts
            .record_attempt(
                key,
                obj.metadata.uid.as_deref(),
                T::target_of(signal, &pinned),
                dctx.now,
            )
            .await
    };
    let claim = delivery::claim(&pinned, &dctx);
    // The receipt and the claim are independent writes, both made before the send: at once,
    // they put one API server round trip on every signal's path instead of two. If either
    // fails nothing is sent. A claim left without its receipt is this holder's own claim of
    // unknown outcome: the next look verifies with AWS before anything goes (the receipt is
    // written then). A receipt left without the claim is what a lost race leaves anyway.
    let (attempted, claimed) = tokio::join!(attempt, write_status::<T>(obj, &claim.status, ctx));
    let claimed_obj = match claimed {
        Ok(o) => o,
        Err(e) if e.is_conflict() => return Ok(Action::requeue(requeue::LOST_RACE)),
        Err(e) => return Err(e),
    };
    attempted?;
    // No Sending Event: the status already says Sending, and an Event is one more write on
    // the path of every signal. Events tell what the status alone does not (delivery,
    // retries, verification, failures).
    failpoint::hit(failpoint::AFTER_CLAIM);

    let outcome = send_once::<T>(
        obj,
        signal,
        &claim.status,
        &reference,
        ready.approved_by.as_deref(),
        &clients,
        ctx,
    )
    .await;
    failpoint::hit(failpoint::AFTER_SEND);
    let outcome_tr = delivery::after_send(&claim.status, &outcome, &dctx.at(Timestamp::now()));
    // Conditional on the claim: if this write fails, the claim stays, and the next reconcile
    // verifies (the receipt first) instead of sending again.
    record_claimed::<T>(&claimed_obj, signal, key, &claim.status, outcome_tr, ctx).await?;
    Ok(Action::await_change())
}

/// Writes a transition, and first, when it ends the signal delivered, its receipt: if the
/// receipt cannot be written, nothing is recorded, and the next look verifies with AWS and
/// writes it then. The one place a delivery's receipt is written.
async fn record<T: SignalTarget>(
    obj: &DynamicObject,
    signal: &T::Resource,
    key: &ReceiptKey,
    tr: delivery::Transition,
    ctx: &Context,
) -> Result<DynamicObject, Error> {
    if delivery::is_delivered(&tr.status) {
        ctx.receipts
            .record_delivery(
                key,
                obj.metadata.uid.as_deref(),
                T::target_of(signal, &tr.status),
                Timestamp::now(),
            )
            .await?;
    }
    write_and_tell::<T>(obj, tr, ctx).await
}

/// Records the outcome of a claimed send on the object as claimed. Someone else's write since
/// the claim (a label, an annotation) makes that write conflict; while the object still holds
/// this very claim, the outcome is written on what was read again.
async fn record_claimed<T: SignalTarget>(
    claimed_obj: &DynamicObject,
    signal: &T::Resource,
    key: &ReceiptKey,
    claimed: &SignalStatus,
    tr: delivery::Transition,
    ctx: &Context,
) -> Result<(), Error> {
    /// Objects changed this often in a row during one send are left to verification.
    const TRIES: usize = 3;
    let mut current = claimed_obj.clone();
    for _ in 0..TRIES {
        match record::<T>(&current, signal, key, tr.clone(), ctx).await {
            Err(e) if e.is_conflict() => {
                let fresh = read_object::<T>(&current, ctx).await?;
                match read_status(&fresh) {
                    Ok(Some(s)) if s.phase == claimed.phase && s.claim == claimed.claim => {
                        current = fresh;
                    }
                    // Another writer moved the status on: its own reconcile continues from there.
                    _ => return Ok(()),
                }
            }
            other => return other.map(drop),
        }
    }
    Ok(())
}

/// The one send of a claim: its token, the call under a hard timeout, and what the call tells
/// the limiter, the circuit and the metrics.
async fn send_once<T: SignalTarget>(
    obj: &DynamicObject,
    signal: &T::Resource,
    claimed: &SignalStatus,
    reference: &str,
    approved_by: Option<&str>,
    clients: &RegionClients,
    ctx: &Context,
) -> SendOutcome {
    // The token right before the send, so the claim's write latency never bunches sends. The
    // wait is bounded so the send still ends well inside the claim's live window; past that
    // the send goes anyway (a throttle costs no attempt).
    let gate = T::gate(clients);
    let limiter = gate.limiter(T::SEND_OPERATION);
    let window = ctx
        .settings
        .claim_ttl
        .saturating_sub(ctx.settings.send_timeout * 2);
    let permit = tokio::time::timeout(window, limiter.acquire()).await.ok();
    let hard_timeout = ctx.settings.send_timeout + Duration::from_secs(2);
    // Never a send that could outlive its claim: past the deadline another replica may take
    // the signal over (a long wait for a token, a pause, a slow claim write).
    let deadline = claimed.claim.as_ref().map(|c| c.deadline.0);
    if deadline.is_none_or(|d| !delivery::may_send(d, Timestamp::now(), hard_timeout)) {
        warn!("claim too close to its deadline; not sending");
        return SendOutcome::Failed(delivery::claim_too_short());
    }
    let in_flight = ctx.metrics.in_flight(T::KIND);
    let timed_send = async {
        tokio::time::timeout(
            hard_timeout,
            T::send(signal, claimed, reference, approved_by, clients),
        )
        .await
        .unwrap_or_else(|_| {
            SendOutcome::Failed(AwsFailure {
                class: ErrorClass::Ambiguous,
                code: None,
                message: "the AWS call did not finish in time".into(),
            })
        })
    };
    let outcome = ctx
        .metrics
        .observe_aws(
            T::SERVICE,
            T::SEND_OPERATION,
            timed_send,
            metrics::send_outcome,
        )
        .await;
    drop(in_flight);
    let failure = outcome.failure();
    if let Some(permit) = permit {
        gate.record(T::SEND_OPERATION, &limiter, permit, failure, &ctx.metrics);
    }
    record_call::<T>(obj, clients, failure, ctx).await;
    outcome
}

/// Asks AWS whether an earlier attempt landed, and records the answer.
async fn verify<T: SignalTarget>(
    obj: &DynamicObject,
    signal: &T::Resource,
    status: &SignalStatus,
    dctx: &delivery::Ctx<'_>,
    ctx: &Context,
) -> Result<Action, Error> {
    let since = status
        .verify_since
        .as_ref()
        .or(status.last_attempt_time.as_ref())
        .map(|t| t.0)
        .unwrap_or(Timestamp::UNIX_EPOCH);
    let key = receipt_key::<T>(obj, signal);
    // The receipt first: a delivery recorded after the attempt in question (its outcome
    // written, the status write lost) settles it without asking AWS, whose reads may lag.
    let receipt = ctx.receipts.find(&key, dctx.now).await?;
    if delivery::receipt_settles(
        receipt.and_then(|r| r.spec.delivered_at).map(|t| t.0),
        since,
    ) {
        let tr = delivery::after_verify(status, &VerifyOutcome::Delivered, dctx);
        write_and_tell::<T>(obj, tr, ctx).await?;
        return Ok(Action::await_change());
    }
    // As the identity that sent: its own decisions are what verification looks for. A signal
    // the policies deny now is still verified (it may have been sent), as the operator itself.
    let clients = match authorize::<T>(obj, signal, dctx, ctx, None) {
        Authorized::Send(clients, _) | Authorized::NeedsDocument(clients) => Ok(clients),
        Authorized::NotYet(wait) => return Ok(Action::requeue(wait)),
        Authorized::Denied(_) => ctx.aws.for_region(signal.region()),
        Authorized::Unaddressable(why) => Err(why),
    };
    let outcome = match clients {
        Ok(clients) => {
            if let Some(wait) = circuit_wait::<T>(&clients) {
                return Ok(Action::requeue(wait));
            }
            // Namespaces take turns at the verification's read too: one namespace's many
            // verifications (a flood of ambiguous sends) neither starve another's nor hold
            // the reconcile slots while they wait.
            let _turn = match T::gate(&clients).turn(
                T::VERIFY_OPERATION,
                obj.metadata.namespace.as_deref().unwrap_or_default(),
                obj.metadata.name.as_deref().unwrap_or_default(),
            ) {
                Ok(turn) => turn,
                Err(wait) => return Ok(Action::requeue(wait)),
            };
            let outcome = T::verify(
                signal,
                status,
                &key.reference(),
                since,
                &clients,
                &ctx.metrics,
            )
            .await;
            record_call::<T>(obj, &clients, outcome.failure(), ctx).await;
            outcome
        }
        Err(why) => VerifyOutcome::Failed(why.failure()),
    };
    let tr = delivery::after_verify(status, &outcome, &dctx.at(Timestamp::now()));
    record::<T>(obj, signal, &key, tr, ctx).await?;
    Ok(Action::await_change())
}

/// How long from `now` until `t`, at least a moment.
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
