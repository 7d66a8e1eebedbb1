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
use tracing::warn;

use super::status_io::{read_status, tell, write_and_tell, write_status};
use super::{requeue, Context, Error};
use crate::api::{ResolvedRetry, Signal, SignalStatus};
use crate::aws::classify::ErrorClass;
use crate::aws::target::SignalTarget;
use crate::delivery::{self, AwsFailure, Next, SendOutcome, VerifyOutcome};
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
    let dctx = delivery::Ctx {
        now: Timestamp::now(),
        holder: &ctx.settings.identity,
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
    };
    let next = delivery::decide(status.as_ref(), &dctx);
    if next == Next::Done {
        return Ok(Action::await_change());
    }
    if !ctx.leadership.is_leader() {
        if let Next::WaitUntil(t) = next {
            return Ok(Action::requeue(until(dctx.now, t)));
        }
        return Ok(Action::requeue(requeue::FOLLOWER));
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
            claim_send_record::<T>(&obj, &signal, status.as_ref(), &dctx, ctx).await
        }
        // A finished signal (its spec skipped) is never claimed or verified.
        (Next::Verify | Next::Claim(_), None) => Ok(Action::await_change()),
    }
}

/// Parses the object as its kind and checks the CRD's rules again. The error names the field,
/// never its value.
fn parse<T: SignalTarget>(obj: &DynamicObject) -> Spec<T::Resource> {
    // The CRD's own schema first, on the raw JSON: it names each bad field (a missing one
    // included) and never quotes a value.
    let spec = obj.data.get("spec").unwrap_or(&serde_json::Value::Null);
    let problems = crate::api::validation::check_schema(T::spec_schema(), spec, "spec");
    if !problems.is_empty() {
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

/// Claim, send once, record.
async fn claim_send_record<T: SignalTarget>(
    obj: &DynamicObject,
    signal: &T::Resource,
    status: Option<&SignalStatus>,
    dctx: &delivery::Ctx<'_>,
    ctx: &Context,
) -> Result<Action, Error> {
    let unclaimed = status.cloned().unwrap_or_default();
    let clients = match ctx.aws.for_region(signal.region()) {
        Ok(c) => c,
        Err(why) => {
            // Nothing was sent: the attempt this claim would have been fails at once.
            let claim = delivery::claim(&unclaimed, dctx);
            let failed = SendOutcome::Failed(no_region(why));
            write_and_tell::<T>(obj, delivery::after_send(&claim.status, &failed, dctx), ctx)
                .await?;
            return Ok(Action::await_change());
        }
    };
    // Wait for the rate limit before claiming, so a claim is followed by its send at once.
    T::limiter(&clients).until_ready().await;
    // Leadership may have been lost while waiting (the claim is the first fence).
    if !ctx.leadership.is_leader() {
        return Ok(Action::requeue(requeue::FOLLOWER));
    }
    let mut pinned = unclaimed;
    if let Err(failure) = T::prepare(signal, &mut pinned, &clients, &ctx.metrics).await {
        // Nothing was sent: the look-up's failure is this attempt's outcome.
        let claim = delivery::claim(&pinned, dctx);
        let failed = SendOutcome::Failed(failure);
        write_and_tell::<T>(obj, delivery::after_send(&claim.status, &failed, dctx), ctx).await?;
        return Ok(Action::await_change());
    }
    // Stamped at the time of the claim itself: the rate limit and the look-up may have taken a
    // while, and must not shorten the claim's live window.
    let dctx = dctx.at(Timestamp::now());
    let claim = delivery::claim(&pinned, &dctx);
    let claimed_obj = match write_status::<T>(obj, &claim.status, ctx).await {
        Ok(o) => o,
        Err(e) if e.is_conflict() => return Ok(Action::requeue(requeue::LOST_RACE)),
        Err(e) => return Err(e),
    };
    tell::<T>(obj, claim.event.as_ref(), ctx).await;
    failpoint::hit(failpoint::AFTER_CLAIM);

    let in_flight = ctx.metrics.in_flight(T::KIND);
    let timed_send = async {
        let hard_timeout = ctx.settings.send_timeout + Duration::from_secs(2);
        tokio::time::timeout(hard_timeout, T::send(signal, &claim.status, &clients))
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
    failpoint::hit(failpoint::AFTER_SEND);
    let record = delivery::after_send(&claim.status, &outcome, &dctx.at(Timestamp::now()));
    // Conditional on the claim's resourceVersion: if this write fails, the claim stays and the
    // next reconcile verifies instead of sending again.
    write_and_tell::<T>(&claimed_obj, record, ctx).await?;
    Ok(Action::await_change())
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
    let outcome = match ctx.aws.for_region(signal.region()) {
        Ok(clients) => T::verify(signal, status, since, &clients, &ctx.metrics).await,
        Err(why) => VerifyOutcome::Failed(no_region(why)),
    };
    let tr = delivery::after_verify(status, &outcome, &dctx.at(Timestamp::now()));
    write_and_tell::<T>(obj, tr, ctx).await?;
    Ok(Action::await_change())
}

fn no_region(why: String) -> AwsFailure {
    AwsFailure {
        class: ErrorClass::Invalid,
        code: None,
        message: why,
    }
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
