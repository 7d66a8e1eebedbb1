//! The delivery state machine (docs/design.md): what to do next with one signal, as pure
//! functions. No I/O, no clock, no randomness: the caller passes the time, its identity, the
//! claim's time to live, the resolved retry policy, the object's generation and a jitter value
//! in `[0, 1)` in a [`Ctx`]. Deciding twice on the same status with the same `Ctx` gives the
//! same answer, and every status this module writes is a fixed point: deciding again on it
//! never asks for the same write twice.
//!
//! # How the controller drives it
//! ```text
//! loop {
//!     match decide(status, ctx) {
//!         Done                 => stop (no requeue needed),
//!         WaitUntil(t)         => requeue at t,
//!         Write(t)             => write t.status (+ event), then decide again on what was written,
//!         Claim(t)             => write t.status conditionally on resourceVersion (conflict: requeue,
//!                                 never call AWS); SWF: put the resolved runId into t.status first;
//!                                 then send once and write after_send(&t.status, outcome, ctx),
//!         Verify               => ask AWS, write after_verify(status, outcome, ctx),
//!     }
//! }
//! ```
//! The `after_*` functions return a [`Transition`] (a status to write, never an AWS call); after
//! writing it, the controller calls [`decide`] again on the written status, which tells it to
//! wait, claim, verify or stop. On a status that is already `Succeeded` or `Failed` they return
//! it unchanged with no event (nothing to write).
//!
//! # Phases ([`decide`])
//! | status | next |
//! |---|---|
//! | none (first sight) | [`Next::Claim`] at once: the claim write is the first status write (no separate `Pending` write); `Failed`/`Expired` instead when `spec.notAfter` has passed |
//! | `Pending` (or a status without phase), `attempts >= maxAttempts` | [`Next::Write`] `Failed`/`RetriesExhausted` (only a damaged status gets here) |
//! | `Pending`, `nextAttemptTime` absent or `<= now` | [`Next::Claim`]: `Sending`, attempts+1, lastAttemptTime=now (and firstAttemptTime, once), claim{holder, deadline=now+ttl}, observedGeneration, conditions; `Failed`/`Expired` instead when `spec.notAfter` has passed |
//! | `Pending`, `nextAttemptTime > now` | [`Next::WaitUntil`]`(nextAttemptTime)` (or a repair [`Next::Write`], below) |
//! | `Pending` or `Verifying` waiting, with a retry request ([`Ctx::retry_requested`]) newer than `lastAttemptTime` and `retryRequestHonoured` | [`Next::Write`] event `RetryRequested` ([`hasten`]): `Pending` is due at once (the next [`decide`] claims); `Verifying` is verified at the earliest instant the settle rule allows; the request is recorded in `retryRequestHonoured` |
//! | `Sending`, claim held by another holder, deadline `> now` | [`Next::WaitUntil`]`(deadline)`: a live sender owns it, nobody touches it |
//! | `Sending`, deadline `<= now`, or held by this very holder, or no claim | [`Next::Write`] `Verifying`, claim cleared, verifySince = min(verifySince, lastAttemptTime), event `Verifying` |
//! | `Verifying`, `nextAttemptTime > now` | [`Next::WaitUntil`] (settle time or backoff; or a repair write) |
//! | `Verifying`, otherwise | [`Next::Verify`] |
//! | `Succeeded`, `Failed` | [`Next::Done`], always; a repair [`Next::Write`] when conditions or observedGeneration are missing or inconsistent. Never an AWS call |
//!
//! An own claim seen by [`decide`] is abandoned: within one process kube-runtime never
//! reconciles one object concurrently, so the claim is left over from a previous incarnation
//! of this holder (a restart), or from a send whose outcome this process failed to record.
//!
//! **Settle time.** Entering `Verifying` schedules the verification no earlier than
//! `verify_settle` after the last instant the signal can have been sent (the call's end for an
//! ambiguous answer; `min(claim deadline, now)` for an abandoned claim), because the SWF history
//! is eventually consistent. An expired claim whose deadline is older than the settle time is
//! verified at once.
//!
//! # Outcomes ([`after_send`], [`after_verify`])
//! | class ([`ErrorClass`]) | after a send | condition reason |
//! |---|---|---|
//! | accepted | `Succeeded`, sentTime=now, requestId, runId kept or filled, claim and nextAttemptTime cleared, event `Delivered` | `Delivered` |
//! | Throttled | `Pending` after backoff; the attempt is refunded (attempts-1, throttledRetries+1): a throttle storm never exhausts the attempts, and the backoff still grows | `Throttled` |
//! | NotSent | `Pending` after backoff; the attempt is refunded (transientRetries+1): connection errors heal, so they are bounded by `spec.retry.maxDurationSeconds` from the first attempt, not by attempts | `RetryScheduled` |
//! | Limit (SWF `LimitExceededFault`) | `Pending` after backoff: not applied, but a persistent limit, so it **spends** the attempt | `LimitExceeded` |
//! | Permission | like NotSent (expired credentials during a rotation heal; an operator may fix IAM meanwhile) | `PermissionDenied` |
//! | NotFound | `Failed`/`ExecutionNotFound`; with `retryNotFound`, like NotSent; when `verifySince` is set (an earlier attempt may have landed, e.g. the signal closed the SWF run) → `Verifying` first | `ExecutionNotFound` |
//! | InvalidNow | `Failed`/`SignalRejected`; when `verifySince` is set → `Verifying` (an earlier attempt may be why the execution moved on) | `SignalRejected` |
//! | Invalid | `Failed`/`InvalidSpec` | `InvalidSpec` |
//! | Ambiguous | `Verifying`, verifySince = min(verifySince, this claim's lastAttemptTime), verification not before now + max(settle, backoff), attempt kept as spent | `Verifying` |
//!
//! A failure that spends attempts (Limit, NotFound with `retryNotFound`) and leaves
//! `attempts >= maxAttempts` ends `Failed`/`RetriesExhausted`, the message naming the last error.
//! A refunded failure (Throttled, NotSent, Permission, and the transient verification failures
//! below) seen once `spec.retry.maxDurationSeconds` has passed since `firstAttemptTime` ends
//! `Failed`/`RetriesExhausted` too.
//!
//! | verification | next | reason |
//! |---|---|---|
//! | Delivered, DeliveredAt | `Succeeded`, event `DeliveryVerified`; sentTime = the time AWS recorded the signal when the adapter knows it (`DeliveredAt`, SWF event timestamp), else verifySince (the earliest claim that may have carried it: a lower bound), else now | `DeliveryVerified` |
//! | Absent, the first in a row | stay `Verifying`, absentReads=1, read again after `verify_recheck` (AWS shows writes after a delay); no event | `Verifying` |
//! | Absent again (or `verify_recheck` zero) | `Pending` with no nextAttemptTime (the backoff was served before verifying), so the next [`decide`] claims at once; `Failed`/`Expired` past `spec.notAfter`; `Failed`/`RetriesExhausted` when no attempts are left | `RetryScheduled` |
//! | NoLongerWaiting | `Failed`/`SignalRejected`: the execution moved on without this signal | `SignalRejected` |
//! | NotFound | as NotFound above (without the verifySince rule) | `ExecutionNotFound` |
//! | Failed, Throttled | stay `Verifying`, retry after backoff, throttledRetries+1 (no attempt spent) | `Throttled` |
//! | Failed, NotSent, Ambiguous or Permission | stay `Verifying`, retry after backoff, transientRetries+1 (no attempt spent), bounded by `spec.retry.maxDurationSeconds` | `PermissionDenied` or `Verifying` |
//! | Failed, any other class | stay `Verifying`, retry after backoff, **spends an attempt**; none left → `Failed`/`RetriesExhausted` ("may or may not have been delivered") | `Verifying` |
//!
//! [`already_delivered`]: before a first send, a receipt or the AWS side shows the same signal
//! was delivered by an earlier object: `Succeeded`/`AlreadyDelivered`, nothing sent.
//!
//! So `attempts` counts the sends that may have reached AWS and the failures that cannot heal;
//! failures that heal by themselves are bounded by time instead, so a long outage is outlasted
//! and a verification that can never succeed still ends.
//!
//! `verifySince` is kept once set (also after a verification said absent, and after success):
//! a later verification then looks back to the earliest attempt whose fate was not confirmed.
//!
//! # Backoff ([`backoff`])
//! Computed from the status alone, so it survives restarts: `n = attempts + throttledRetries +
//! transientRetries`
//! (at least 1), `base = min(maxBackoff, initialBackoff * 2^(n-1))` (saturating, no overflow),
//! `delay = base/2 + jitter * base/2` ("equal jitter": at least half the step, at most the cap),
//! `nextAttemptTime = now + delay`.
//!
//! # Time
//! `metav1.Time` serialises whole seconds, so this module writes whole seconds: past instants
//! (lastAttemptTime, sentTime, verifySince, lastTransitionTime) rounded down, instants that
//! gate an action (nextAttemptTime, claim deadline) rounded up, so that the status computed here
//! equals the status read back, and rounding never makes a retry or a claim's expiry earlier.
//!
//! # Conditions (kstatus)
//! `Ready` True once delivered (reason `Delivered`/`DeliveryVerified`), else False; `Reconciling`
//! True while `Pending`/`Sending`/`Verifying` (including a scheduled retry), False when
//! terminal; `Stalled` True when `Failed` (reason = the failure reason), else False. All three
//! carry the transition's reason and message, in the order Ready, Reconciling, Stalled, with
//! observedGeneration; `lastTransitionTime` changes only when a condition's status changes
//! ([`set_condition`]).
//!
//! # Messages and events
//! `status.message` and event notes say the last outcome in words with the AWS error code,
//! never the input or payload: the outcome types carry no request values, the adapter must keep
//! [`AwsFailure::message`] and [`VerifyOutcome::NoLongerWaiting`]'s `why` free of them, and
//! this module additionally drops AWS's message for the Invalid and InvalidNow classes (AWS
//! validation messages quote request values) and cuts any message to 200 characters. Event
//! reasons: `Sending`, `Delivered`, `DeliveryVerified`, `RetryScheduled`, `Verifying`,
//! `Failed`, `RetryRequested`.
use std::fmt::Write as _;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

pub use crate::api::ResolvedRetry;
use crate::api::{Claim, Phase, SignalStatus};

mod backoff;
mod conditions;
#[cfg(test)]
mod tests;

pub use backoff::{backoff, ceil_second, floor_second};
pub use conditions::{set_condition, set_kstatus, READY, RECONCILING, STALLED};

/// Condition reasons. The terminal ones are a guaranteed API (GitOps health checks read them).
pub mod reason {
    /// Repair fallback for a `Pending` status with no known reason.
    pub const PENDING: &str = "Pending";
    pub const SENDING: &str = "Sending";
    pub const VERIFYING: &str = "Verifying";
    pub const RETRY_SCHEDULED: &str = "RetryScheduled";
    pub const THROTTLED: &str = "Throttled";
    pub const PERMISSION_DENIED: &str = "PermissionDenied";
    pub const LIMIT_EXCEEDED: &str = "LimitExceeded";
    pub const DELIVERED: &str = "Delivered";
    pub const DELIVERY_VERIFIED: &str = "DeliveryVerified";
    pub const EXECUTION_NOT_FOUND: &str = "ExecutionNotFound";
    pub const SIGNAL_REJECTED: &str = "SignalRejected";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const RETRIES_EXHAUSTED: &str = "RetriesExhausted";
    /// Delivered before, by an earlier object with the same signal (a receipt), or as the AWS
    /// side shows: nothing was sent.
    pub const ALREADY_DELIVERED: &str = "AlreadyDelivered";
    /// `spec.notAfter` passed before the signal could be delivered.
    pub const EXPIRED: &str = "Expired";
    /// No SignalPolicy allows the signal: never sent.
    pub const POLICY_DENIED: &str = "PolicyDenied";
    /// The role a SignalPolicy names could not be assumed (retried).
    pub const ASSUME_ROLE_FAILED: &str = "AssumeRoleFailed";
    /// Repair fallback for a `Failed` status with no known reason.
    pub const FAILED: &str = "Failed";

    /// Reasons of a successful delivery.
    pub const SUCCESS: &[&str] = &[DELIVERED, DELIVERY_VERIFIED, ALREADY_DELIVERED];
    /// Reasons of a failure for good.
    pub const FAILURE: &[&str] = &[
        EXECUTION_NOT_FOUND,
        SIGNAL_REJECTED,
        INVALID_SPEC,
        RETRIES_EXHAUSTED,
        EXPIRED,
        POLICY_DENIED,
        FAILED,
    ];
    /// Every reason the operator writes into a signal's conditions (`kubectl signalman status`
    /// has a fix for each).
    pub const ALL: &[&str] = &[
        PENDING,
        SENDING,
        VERIFYING,
        RETRY_SCHEDULED,
        THROTTLED,
        PERMISSION_DENIED,
        LIMIT_EXCEEDED,
        DELIVERED,
        DELIVERY_VERIFIED,
        EXECUTION_NOT_FOUND,
        SIGNAL_REJECTED,
        INVALID_SPEC,
        RETRIES_EXHAUSTED,
        ALREADY_DELIVERED,
        EXPIRED,
        POLICY_DENIED,
        ASSUME_ROLE_FAILED,
        FAILED,
    ];
}

/// Everything a decision depends on besides the status.
#[derive(Clone, Debug)]
pub struct Ctx<'a> {
    /// The current time.
    pub now: Timestamp,
    /// This process's identity, written into claims (unique per replica, e.g. the pod name).
    pub holder: &'a str,
    /// How long a claim is live; the send's hard timeout must be well inside it.
    pub claim_ttl: Duration,
    /// How long after the last possible send a verification waits before trusting "absent"
    /// (the SWF history is eventually consistent). A few seconds.
    pub verify_settle: Duration,
    /// `spec.retry` with defaults applied.
    pub retry: ResolvedRetry,
    /// The object's `metadata.generation`.
    pub generation: Option<i64>,
    /// A random value in `[0, 1)` for the backoff's jitter.
    pub jitter: f64,
    /// `spec.notAfter`: no send is claimed from this instant on.
    pub not_after: Option<Timestamp>,
    /// After a verification found the signal absent, read once more this much later before
    /// sending again (AWS shows a delivered signal only after a delay). Zero: trust the first.
    pub verify_recheck: Duration,
    /// Who created the signal (the admission-stamped annotation), recorded once in
    /// `status.requestedBy`.
    pub requested_by: Option<&'a str>,
    /// When someone last asked for the next attempt now (the annotation
    /// [`crate::api::RETRY_NOW_ANNOTATION`], written by `kubectl signalman retry`); honoured
    /// once, by [`hasten`].
    pub retry_requested: Option<Timestamp>,
}

impl Ctx<'_> {
    fn max_attempts(&self) -> u32 {
        self.retry.max_attempts.max(1)
    }

    /// The same context at another time (an action that waited decides its times anew).
    pub fn at(&self, now: Timestamp) -> Self {
        Self {
            now,
            ..self.clone()
        }
    }
}

/// What to do next with one object.
#[derive(Clone, Debug, PartialEq)]
pub enum Next {
    /// `Succeeded` or `Failed` with consistent conditions: nothing to do, ever.
    Done,
    /// Write this status (and event); no AWS call. Then decide again on the written status.
    Write(Transition),
    /// Nothing to do before this time: requeue then.
    WaitUntil(Timestamp),
    /// Write this claim conditionally on the object's resourceVersion, then send once.
    Claim(Transition),
    /// Ask AWS whether the signal landed, then write [`after_verify`].
    Verify,
}

/// A status to write, and the event that tells the story, if any.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    pub status: SignalStatus,
    pub event: Option<EventNote>,
}

/// A Kubernetes event to record on the object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventNote {
    /// `Warning` rather than `Normal`.
    pub warning: bool,
    /// `Sending`, `Delivered`, `DeliveryVerified`, `RetryScheduled`, `Verifying`, `Failed` or
    /// `RetryRequested`.
    pub reason: &'static str,
    /// In words, with the AWS error code where there is one; never input or payload.
    pub note: String,
}

impl EventNote {
    fn normal(reason: &'static str, note: impl Into<String>) -> Self {
        EventNote {
            warning: false,
            reason,
            note: note.into(),
        }
    }

    fn warning(reason: &'static str, note: impl Into<String>) -> Self {
        EventNote {
            warning: true,
            reason,
            note: note.into(),
        }
    }
}

/// What a failed AWS call means for delivery (see [`crate::aws::classify`] for which codes map
/// where, and the module docs for what each class does).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Refused by a rate limit, not applied: retry after backoff, attempt refunded.
    Throttled,
    /// Never left this process (connect, DNS, TLS): retry after backoff, attempt spent.
    NotSent,
    /// Refused by a persistent service limit (SWF `LimitExceededFault`), not applied: retry
    /// after backoff, attempt spent.
    Limit,
    /// May have been applied (timeout, reset after sending, 5xx): verify before resending.
    Ambiguous,
    /// Refused for lack of permission or valid credentials: retry after backoff, attempt spent.
    Permission,
    /// The execution or step does not exist.
    NotFound,
    /// The signal is not valid for the execution's current state.
    InvalidNow,
    /// The request is invalid; resending the same spec cannot help.
    Invalid,
}

impl ErrorClass {
    /// A stable CamelCase name (for logs and metric labels).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Throttled => "Throttled",
            ErrorClass::NotSent => "NotSent",
            ErrorClass::Limit => "Limit",
            ErrorClass::Ambiguous => "Ambiguous",
            ErrorClass::Permission => "Permission",
            ErrorClass::NotFound => "NotFound",
            ErrorClass::InvalidNow => "InvalidNow",
            ErrorClass::Invalid => "Invalid",
        }
    }

    fn in_words(self) -> &'static str {
        match self {
            ErrorClass::Throttled => "throttled",
            ErrorClass::NotSent => "request not sent",
            ErrorClass::Limit => "service limit reached",
            ErrorClass::Ambiguous => "outcome unknown",
            ErrorClass::Permission => "permission denied",
            ErrorClass::NotFound => "not found",
            ErrorClass::InvalidNow => "signal not valid now",
            ErrorClass::Invalid => "invalid request",
        }
    }
}

/// A failed AWS call, reduced to what delivery needs. Carries no request values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsFailure {
    pub class: ErrorClass,
    /// The AWS error code, when AWS answered with one.
    pub code: Option<String>,
    /// What happened, in words; never input or payload.
    pub message: String,
}

/// The outcome of one send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// AWS accepted the signal.
    Accepted {
        request_id: Option<String>,
        /// SWF: the run that was signalled, when known.
        run_id: Option<String>,
    },
    Failed(AwsFailure),
}

/// The outcome of one verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerifyOutcome {
    /// The signal is in AWS.
    Delivered,
    /// The signal is in AWS, recorded at this time (SWF: the event's timestamp).
    DeliveredAt(Timestamp),
    /// The signal did not land (after the settle time): a new attempt may be made.
    Absent,
    /// The execution moved on without this signal (SSM: the step no longer waits). `why` says
    /// how in words, never payload values.
    NoLongerWaiting { why: String },
    /// The execution is not there.
    NotFound,
    /// The verification itself failed; retried after backoff.
    Failed(AwsFailure),
}

impl SendOutcome {
    /// The failure of a send that AWS did not accept.
    pub fn failure(&self) -> Option<&AwsFailure> {
        match self {
            SendOutcome::Failed(f) => Some(f),
            SendOutcome::Accepted { .. } => None,
        }
    }
}

impl VerifyOutcome {
    /// The failure of a verification that could not answer.
    pub fn failure(&self) -> Option<&AwsFailure> {
        match self {
            VerifyOutcome::Failed(f) => Some(f),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// decide

/// What to do next with an object whose status is `status` (`None`: never written).
pub fn decide(status: Option<&SignalStatus>, ctx: &Ctx) -> Next {
    let Some(s) = status else {
        if expired(ctx) {
            return Next::Write(expire(SignalStatus::default(), ctx));
        }
        return Next::Claim(claim(&SignalStatus::default(), ctx));
    };
    match phase(s) {
        Phase::Succeeded | Phase::Failed => repair(s, ctx).map_or(Next::Done, Next::Write),
        Phase::Pending => {
            if s.attempts >= ctx.max_attempts() {
                return Next::Write(exhausted_before_claim(s, ctx));
            }
            match scheduled(s, ctx) {
                Some(at) => hasten(s, at, ctx)
                    .or_else(|| repair(s, ctx))
                    .map_or(Next::WaitUntil(at), Next::Write),
                None if expired(ctx) => Next::Write(expire(s.clone(), ctx)),
                None => Next::Claim(claim(s, ctx)),
            }
        }
        Phase::Sending => match &s.claim {
            Some(c) if c.deadline.0 > ctx.now && c.holder != ctx.holder => {
                Next::WaitUntil(c.deadline.0)
            }
            _ => Next::Write(abandoned(s, ctx)),
        },
        Phase::Verifying => match scheduled(s, ctx) {
            Some(at) => hasten(s, at, ctx)
                .or_else(|| repair(s, ctx))
                .map_or(Next::WaitUntil(at), Next::Write),
            None => Next::Verify,
        },
    }
}

/// Reason of the Event that records an honoured retry request.
pub const RETRY_REQUESTED_EVENT: &str = "RetryRequested";

/// A retry request ([`Ctx::retry_requested`]) honoured on a signal waiting until `at`: the
/// wait ends now (`Pending`: the next [`decide`] claims, through the same claim, policy check
/// and receipt as any attempt), or, for `Verifying`, at the earliest instant verification may
/// trust what AWS shows (the claim's time to live plus the settle time after the last attempt;
/// never during a recheck after "absent"). Only a request made at or before `now`, after the
/// last attempt and after the request last honoured counts (whole seconds), and honouring it
/// records it in `retryRequestHonoured`: each request ends one wait, so a verification that
/// keeps failing is not repeated without its backoff. `None`: nothing to hasten.
pub fn hasten(s: &SignalStatus, at: Timestamp, ctx: &Ctx) -> Option<Transition> {
    let requested = floor_second(ctx.retry_requested?);
    let spent = [&s.last_attempt_time, &s.retry_request_honoured]
        .into_iter()
        .flatten()
        .any(|t| t.0 >= requested);
    if requested > ctx.now || spent {
        return None;
    }
    let phase = phase(s);
    let (due, msg) = match phase {
        Phase::Pending => (
            None,
            format!(
                "retry requested at {requested}: the next attempt is made now instead of at {at}"
            ),
        ),
        Phase::Verifying if s.absent_reads == 0 => {
            let last = s.last_attempt_time.as_ref().map_or(ctx.now, |t| t.0);
            let safe = ceil_second(backoff::add(
                backoff::add(last, ctx.claim_ttl),
                ctx.verify_settle,
            ))
            .max(ceil_second(ctx.now));
            if safe >= at {
                return None;
            }
            (
                Some(Time(safe)),
                format!(
                    "retry requested at {requested}: checking with AWS at {safe} whether attempt {} landed, instead of at {at}",
                    s.attempts
                ),
            )
        }
        _ => return None,
    };
    let mut h = s.clone();
    h.next_attempt_time = due;
    h.retry_request_honoured = Some(Time(requested));
    let why = conditions::reason_of(s, RECONCILING, true)
        .unwrap_or(match phase {
            Phase::Verifying => reason::VERIFYING,
            _ => reason::PENDING,
        })
        .to_string();
    Some(Transition {
        status: stamp(h, &why, msg.clone(), ctx),
        event: Some(EventNote::normal(RETRY_REQUESTED_EVENT, msg)),
    })
}

fn phase(s: &SignalStatus) -> Phase {
    s.phase.unwrap_or(Phase::Pending)
}

fn is_terminal(s: &SignalStatus) -> bool {
    is_finished_phase(phase(s))
}

/// `Succeeded` or `Failed`: the signal's life is over, and no AWS call or write is due except a
/// repair of its conditions.
pub fn is_finished(s: &SignalStatus) -> bool {
    is_terminal(s)
}

/// Whether the conditions and observedGeneration of `s` agree with its phase (no repair due).
pub fn conditions_consistent(s: &SignalStatus, generation: Option<i64>) -> bool {
    conditions::consistent(s, generation)
}

/// Whether `phase` ends a signal's life.
pub fn is_finished_phase(phase: Phase) -> bool {
    matches!(phase, Phase::Succeeded | Phase::Failed)
}

/// The scheduled next attempt (or verification), if it is still in the future.
fn scheduled(s: &SignalStatus, ctx: &Ctx) -> Option<Timestamp> {
    s.next_attempt_time
        .as_ref()
        .map(|t| t.0)
        .filter(|t| *t > ctx.now)
}

/// The claim of a new attempt on `s`, stamped at `ctx.now`: what [`decide`] returns as
/// [`Next::Claim`], built again by an adapter that waited before claiming.
pub fn claim(s: &SignalStatus, ctx: &Ctx) -> Transition {
    let mut c = s.clone();
    c.phase = Some(Phase::Sending);
    c.attempts = s.attempts.saturating_add(1);
    c.last_attempt_time = Some(Time(floor_second(ctx.now)));
    if c.first_attempt_time.is_none() {
        c.first_attempt_time = c.last_attempt_time.clone();
    }
    c.next_attempt_time = None;
    c.claim = Some(Claim {
        holder: ctx.holder.to_string(),
        deadline: Time(ceil_second(backoff::add(ctx.now, ctx.claim_ttl))),
    });
    c.request_id = None;
    let msg = format!(
        "sending the signal: attempt {} of {}",
        c.attempts,
        ctx.max_attempts()
    );
    Transition {
        status: stamp(c, reason::SENDING, msg.clone(), ctx),
        event: Some(EventNote::normal("Sending", msg)),
    }
}

fn abandoned(s: &SignalStatus, ctx: &Ctx) -> Transition {
    let mut v = s.clone();
    let since = earliest(&s.verify_since, &s.last_attempt_time).unwrap_or(Timestamp::UNIX_EPOCH);
    // The last instant the abandoned sender can have sent: its deadline, or now if it was us.
    let last_send = s
        .claim
        .as_ref()
        .map_or(ctx.now, |c| c.deadline.0.min(ctx.now));
    let holder = s
        .claim
        .as_ref()
        .map_or("an unknown holder", |c| c.holder.as_str());
    v.phase = Some(Phase::Verifying);
    v.claim = None;
    v.verify_since = Some(Time(since));
    v.next_attempt_time = settle_until(last_send, ctx).map(Time);
    let msg = format!(
        "attempt {} (claimed by {holder}) ended without a recorded outcome; \
         checking with AWS whether the signal landed before sending again",
        s.attempts
    );
    Transition {
        status: stamp(v, reason::VERIFYING, msg.clone(), ctx),
        event: Some(EventNote::warning("Verifying", msg)),
    }
}

fn exhausted_before_claim(s: &SignalStatus, ctx: &Ctx) -> Transition {
    let last = s.last_error_code.as_deref().unwrap_or("none recorded");
    fail(
        s.clone(),
        reason::RETRIES_EXHAUSTED,
        format!("all {} attempts are spent; last error: {last}", s.attempts),
        ctx,
    )
}

/// A status write that makes conditions and observedGeneration agree with the phase, when
/// they do not. No event.
fn repair(s: &SignalStatus, ctx: &Ctx) -> Option<Transition> {
    if conditions::consistent(s, ctx.generation) {
        return None;
    }
    let phase = phase(s);
    let why = match phase {
        Phase::Succeeded => conditions::reason_of(s, READY, true)
            .filter(|r| reason::SUCCESS.contains(r))
            .unwrap_or(reason::DELIVERED),
        Phase::Failed => conditions::reason_of(s, STALLED, true)
            .filter(|r| reason::FAILURE.contains(r))
            .unwrap_or(reason::FAILED),
        Phase::Pending => conditions::reason_of(s, RECONCILING, true).unwrap_or(reason::PENDING),
        Phase::Sending => reason::SENDING,
        Phase::Verifying => {
            conditions::reason_of(s, RECONCILING, true).unwrap_or(reason::VERIFYING)
        }
    }
    .to_string();
    let msg = s.message.clone().unwrap_or_else(|| match phase {
        Phase::Succeeded => "signal delivered".to_string(),
        Phase::Failed => "signal failed".to_string(),
        _ => "signal pending".to_string(),
    });
    Some(Transition {
        status: stamp(s.clone(), &why, msg, ctx),
        event: None,
    })
}

// ---------------------------------------------------------------------------------------------
// after_send

/// The status to write after the one send of a claim. `claimed` is the status as claimed.
pub fn after_send(claimed: &SignalStatus, outcome: &SendOutcome, ctx: &Ctx) -> Transition {
    if is_terminal(claimed) {
        return unchanged(claimed);
    }
    let mut s = claimed.clone();
    s.claim = None;
    match outcome {
        SendOutcome::Accepted { request_id, run_id } => {
            s.phase = Some(Phase::Succeeded);
            s.sent_time = Some(Time(floor_second(ctx.now)));
            s.request_id.clone_from(request_id);
            if run_id.is_some() {
                s.run_id.clone_from(run_id);
            }
            s.next_attempt_time = None;
            s.last_error_code = None;
            let mut msg = format!("signal delivered on attempt {}", s.attempts);
            if let Some(id) = request_id {
                let _ = write!(msg, " (request id {id})");
            }
            Transition {
                status: stamp(s, reason::DELIVERED, msg.clone(), ctx),
                event: Some(EventNote::normal("Delivered", msg)),
            }
        }
        SendOutcome::Failed(f) => send_failed(s, f, ctx),
    }
}

fn send_failed(mut s: SignalStatus, f: &AwsFailure, ctx: &Ctx) -> Transition {
    s.last_error_code.clone_from(&f.code);
    let d = describe(f);
    match f.class {
        ErrorClass::Throttled => {
            s.attempts = s.attempts.saturating_sub(1);
            s.throttled_retries = s.throttled_retries.saturating_add(1);
            if let Some(out) = out_of_time(&s, &d, ctx) {
                return out;
            }
            s.phase = Some(Phase::Pending);
            let at = retry_at(&s, ctx);
            s.next_attempt_time = Some(Time(at));
            let msg = format!(
                "AWS throttled the call ({d}); retrying at {at} without spending an attempt"
            );
            Transition {
                status: stamp(s, reason::THROTTLED, msg.clone(), ctx),
                event: Some(EventNote::warning("RetryScheduled", msg)),
            }
        }
        ErrorClass::NotSent => retry_transient(s, &d, reason::RETRY_SCHEDULED, ctx),
        ErrorClass::Limit => retry_or_exhaust(s, &d, reason::LIMIT_EXCEEDED, ctx),
        ErrorClass::Permission if f.code.as_deref() == Some(ASSUME_ROLE_FAILED_CODE) => {
            retry_transient(s, &d, reason::ASSUME_ROLE_FAILED, ctx)
        }
        ErrorClass::Permission => retry_transient(s, &d, reason::PERMISSION_DENIED, ctx),
        ErrorClass::NotFound | ErrorClass::InvalidNow if s.verify_since.is_some() => {
            recheck(s, &d, ctx)
        }
        ErrorClass::NotFound if ctx.retry.retry_not_found => {
            retry_or_exhaust(s, &d, reason::EXECUTION_NOT_FOUND, ctx)
        }
        ErrorClass::NotFound => fail(
            s,
            reason::EXECUTION_NOT_FOUND,
            format!("the execution was not found ({d})"),
            ctx,
        ),
        ErrorClass::InvalidNow => fail(
            s,
            reason::SIGNAL_REJECTED,
            format!("AWS rejected the signal as not valid for the execution's current state ({d})"),
            ctx,
        ),
        ErrorClass::Invalid if f.code.is_none() => fail(
            s,
            reason::INVALID_SPEC,
            format!("the signal cannot be sent: {d}"),
            ctx,
        ),
        ErrorClass::Invalid => fail(
            s,
            reason::INVALID_SPEC,
            format!("AWS rejected the request as invalid ({d})"),
            ctx,
        ),
        ErrorClass::Ambiguous => {
            let since = earliest(&s.verify_since, &s.last_attempt_time)
                .unwrap_or_else(|| floor_second(ctx.now));
            let wait = ctx.verify_settle.max(delay(&s, ctx));
            let at = ceil_second(backoff::add(ctx.now, wait));
            s.phase = Some(Phase::Verifying);
            s.verify_since = Some(Time(since));
            s.next_attempt_time = Some(Time(at));
            let msg = format!(
                "attempt {} ended without a clear answer ({d}); the signal may have landed: \
                 checking with AWS at {at} before sending again",
                s.attempts
            );
            Transition {
                status: stamp(s, reason::VERIFYING, msg.clone(), ctx),
                event: Some(EventNote::warning("Verifying", msg)),
            }
        }
    }
}

/// A refusal (not found, invalid now) after an earlier attempt that may have landed: verify
/// now instead of failing, since the earlier attempt may be why the execution moved on.
fn recheck(mut s: SignalStatus, d: &str, ctx: &Ctx) -> Transition {
    s.phase = Some(Phase::Verifying);
    s.next_attempt_time = None;
    let msg = format!(
        "attempt {} was refused ({d}) after an earlier attempt that may have landed; \
         checking with AWS whether it did",
        s.attempts
    );
    Transition {
        status: stamp(s, reason::VERIFYING, msg.clone(), ctx),
        event: Some(EventNote::warning("Verifying", msg)),
    }
}

// ---------------------------------------------------------------------------------------------
// after_verify

/// The status to write after one verification of a `Verifying` status.
pub fn after_verify(status: &SignalStatus, outcome: &VerifyOutcome, ctx: &Ctx) -> Transition {
    if is_terminal(status) {
        return unchanged(status);
    }
    let mut s = status.clone();
    s.claim = None;
    match outcome {
        VerifyOutcome::Delivered | VerifyOutcome::DeliveredAt(_) => {
            let at = match outcome {
                VerifyOutcome::DeliveredAt(t) => Some(*t),
                _ => None,
            };
            let sent = at
                .map(floor_second)
                .or_else(|| s.verify_since.as_ref().map(|t| t.0))
                .unwrap_or_else(|| floor_second(ctx.now));
            s.phase = Some(Phase::Succeeded);
            s.sent_time = Some(Time(sent));
            s.next_attempt_time = None;
            s.last_error_code = None;
            let msg = "delivery verified: AWS shows the signal from an earlier attempt; not sending again";
            Transition {
                status: stamp(s, reason::DELIVERY_VERIFIED, msg.to_string(), ctx),
                event: Some(EventNote::normal("DeliveryVerified", msg)),
            }
        }
        VerifyOutcome::Absent => {
            if s.absent_reads == 0 && !ctx.verify_recheck.is_zero() {
                s.absent_reads = 1;
                let at = ceil_second(backoff::add(ctx.now, ctx.verify_recheck));
                s.next_attempt_time = Some(Time(at));
                let msg = format!(
                    "AWS does not show the signal yet; reading again at {at} before sending \
                     again, since AWS shows a delivered signal only after a delay"
                );
                return Transition {
                    status: stamp(s, reason::VERIFYING, msg, ctx),
                    event: None,
                };
            }
            s.absent_reads = 0;
            if expired(ctx) {
                return expire(s, ctx);
            }
            if s.attempts >= ctx.max_attempts() {
                let last = s.last_error_code.as_deref().unwrap_or("none recorded");
                let msg = format!(
                    "the signal did not land and all {} attempts are spent; last error: {last}",
                    s.attempts
                );
                return fail(s, reason::RETRIES_EXHAUSTED, msg, ctx);
            }
            s.phase = Some(Phase::Pending);
            s.next_attempt_time = None;
            let msg = "AWS shows the signal did not land; sending again".to_string();
            Transition {
                status: stamp(s, reason::RETRY_SCHEDULED, msg.clone(), ctx),
                event: Some(EventNote::warning("RetryScheduled", msg)),
            }
        }
        VerifyOutcome::NoLongerWaiting { why } => fail(
            s,
            reason::SIGNAL_REJECTED,
            format!(
                "the execution no longer waits for this signal: {}",
                cut(why)
            ),
            ctx,
        ),
        VerifyOutcome::NotFound => verify_not_found(s, None, ctx),
        VerifyOutcome::Failed(f) => match f.class {
            ErrorClass::NotFound => verify_not_found(s, Some(f), ctx),
            ErrorClass::Throttled => {
                s.last_error_code.clone_from(&f.code);
                s.throttled_retries = s.throttled_retries.saturating_add(1);
                let at = retry_at(&s, ctx);
                s.next_attempt_time = Some(Time(at));
                let msg = format!(
                    "AWS throttled the verification ({}); checking again at {at}",
                    describe(f)
                );
                Transition {
                    status: stamp(s, reason::THROTTLED, msg.clone(), ctx),
                    event: Some(EventNote::warning("RetryScheduled", msg)),
                }
            }
            ErrorClass::NotSent | ErrorClass::Ambiguous | ErrorClass::Permission => {
                s.last_error_code.clone_from(&f.code);
                s.transient_retries = s.transient_retries.saturating_add(1);
                let d = describe(f);
                if let Some(out) = out_of_time(&s, &d, ctx) {
                    return out;
                }
                let at = retry_at(&s, ctx);
                s.next_attempt_time = Some(Time(at));
                let why = if f.class == ErrorClass::Permission {
                    reason::PERMISSION_DENIED
                } else {
                    reason::VERIFYING
                };
                let msg = format!(
                    "could not verify whether the signal landed ({d}); checking again at {at}"
                );
                Transition {
                    status: stamp(s, why, msg.clone(), ctx),
                    event: Some(EventNote::warning("RetryScheduled", msg)),
                }
            }
            _ => {
                s.last_error_code.clone_from(&f.code);
                s.attempts = s.attempts.saturating_add(1);
                let d = describe(f);
                if s.attempts >= ctx.max_attempts() {
                    let msg = format!(
                        "could not verify whether the signal landed ({d}) and all {} attempts \
                         are spent; it may or may not have been delivered",
                        s.attempts
                    );
                    return fail(s, reason::RETRIES_EXHAUSTED, msg, ctx);
                }
                let at = retry_at(&s, ctx);
                s.next_attempt_time = Some(Time(at));
                let why = if f.class == ErrorClass::Permission {
                    reason::PERMISSION_DENIED
                } else {
                    reason::VERIFYING
                };
                let msg = format!(
                    "could not verify whether the signal landed ({d}); checking again at {at} \
                     (attempt {} of {})",
                    s.attempts,
                    ctx.max_attempts()
                );
                Transition {
                    status: stamp(s, why, msg.clone(), ctx),
                    event: Some(EventNote::warning("RetryScheduled", msg)),
                }
            }
        },
    }
}

fn verify_not_found(mut s: SignalStatus, f: Option<&AwsFailure>, ctx: &Ctx) -> Transition {
    let d = match f {
        Some(f) => {
            s.last_error_code.clone_from(&f.code);
            format!(
                "the execution was not found while verifying ({})",
                describe(f)
            )
        }
        None => "the execution was not found while verifying".to_string(),
    };
    if ctx.retry.retry_not_found {
        retry_or_exhaust(s, &d, reason::EXECUTION_NOT_FOUND, ctx)
    } else {
        fail(s, reason::EXECUTION_NOT_FOUND, d, ctx)
    }
}

/// The error code an adapter gives a call that failed because the role a SignalPolicy names
/// could not be assumed.
pub const ASSUME_ROLE_FAILED_CODE: &str = "AssumeRoleFailed";

// ---------------------------------------------------------------------------------------------
// before and around the send

/// Clocks of the replicas and of AWS may differ by this much: a claim is sent on only while it
/// stays live this long after the send's timeout, and an AWS record this much older than a
/// claim may still belong to it.
pub const CLOCK_SKEW: Duration = Duration::from_secs(5);

/// Whether the receipt and the AWS side must still be asked about an earlier delivery before
/// sending: no attempt of this object can have reached AWS yet (nothing sent, nothing of
/// unknown fate). Asked again until a check succeeds, so a failed check never lets a send
/// through unchecked.
pub fn needs_earlier_check(status: Option<&SignalStatus>) -> bool {
    status.is_none_or(|s| {
        !is_terminal(s) && s.verify_since.is_none() && s.sent_time.is_none() && s.claim.is_none()
    })
}

/// Whether a send started now under a claim live until `deadline` ends (its hard timeout
/// included) while the claim is still live on every replica's clock. If not, it must not
/// start: another replica may take the claim over meanwhile.
pub fn may_send(deadline: Timestamp, now: Timestamp, send_timeout: Duration) -> bool {
    backoff::add(now, send_timeout + CLOCK_SKEW) <= deadline
}

/// The outcome of a send that was not started because its claim would expire first.
pub fn claim_too_short() -> AwsFailure {
    AwsFailure {
        class: ErrorClass::NotSent,
        code: None,
        message: "the claim would expire before the send could finish (a long wait for the rate \
                  limit, or a pause); not sent"
            .into(),
    }
}

/// The status to write when an attempt failed before anything was sent (a look-up, a document
/// read, the AWS-side check): the failure is that attempt's outcome. A read that may or may not
/// have reached AWS changed nothing there, so an ambiguous one counts as not sent.
pub fn failed_before_send(unclaimed: &SignalStatus, failure: &AwsFailure, ctx: &Ctx) -> Transition {
    let mut failure = failure.clone();
    if failure.class == ErrorClass::Ambiguous {
        failure.class = ErrorClass::NotSent;
    }
    let claimed = claim(unclaimed, ctx);
    after_send(&claimed.status, &SendOutcome::Failed(failure), ctx)
}

/// What a receipt found before a send says about this object's signal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReceiptSays {
    /// Delivered (by this object or an earlier one with the same signal), at this time.
    Delivered(Timestamp),
    /// An earlier object with the same signal made an attempt from this time on whose outcome
    /// was never recorded: AWS must be asked before anything is sent.
    AttemptedBefore(Timestamp),
    /// Nothing this object's own status does not already tell.
    Nothing,
}

/// Reads a receipt of this very signal: `own_uid` is this object's uid, the rest the receipt's.
pub fn read_receipt(
    own_uid: Option<&str>,
    receipt_uid: Option<&str>,
    attempted_at: Option<Timestamp>,
    delivered_at: Option<Timestamp>,
) -> ReceiptSays {
    if let Some(at) = delivered_at {
        return ReceiptSays::Delivered(at);
    }
    if own_uid.is_some() && receipt_uid == own_uid {
        return ReceiptSays::Nothing;
    }
    ReceiptSays::AttemptedBefore(attempted_at.unwrap_or(Timestamp::UNIX_EPOCH))
}

/// Whether a receipt marked delivered at `delivered_at` settles a verification of attempts
/// since `since`: a delivery of this very signal recorded no earlier than them (less the clock
/// skew), such as an outcome whose status write was lost.
pub fn receipt_settles(delivered_at: Option<Timestamp>, since: Timestamp) -> bool {
    delivered_at.is_some_and(|at| at >= since - CLOCK_SKEW)
}

/// The status to write when an earlier object with the same signal left an attempt of unknown
/// fate (its receipt): verify from that attempt on before sending anything.
pub fn verify_earlier_attempt(
    status: Option<&SignalStatus>,
    since: Timestamp,
    ctx: &Ctx,
) -> Transition {
    let mut s = status.cloned().unwrap_or_default();
    if is_terminal(&s) {
        return unchanged(&s);
    }
    s.phase = Some(Phase::Verifying);
    s.claim = None;
    s.verify_since = Some(Time(floor_second(since)));
    s.next_attempt_time = settle_until(ctx.now, ctx).map(Time);
    let msg = format!(
        "an earlier object with this very signal made an attempt at {} whose outcome was never \
         recorded; checking with AWS whether it landed before sending",
        floor_second(since)
    );
    Transition {
        status: stamp(s, reason::VERIFYING, msg.clone(), ctx),
        event: Some(EventNote::warning("Verifying", msg)),
    }
}

/// Whether a transition ends the signal delivered (its receipt is then due).
pub fn is_delivered(status: &SignalStatus) -> bool {
    phase(status) == Phase::Succeeded
}

// ---------------------------------------------------------------------------------------------
// policy_denied

/// The status to write when no SignalPolicy allows the signal: `Failed`, reason
/// `PolicyDenied`, with `why` (namespace, field and the policy needed). Nothing was sent.
pub fn policy_denied(status: Option<&SignalStatus>, why: &str, ctx: &Ctx) -> Transition {
    let s = status.cloned().unwrap_or_default();
    if is_terminal(&s) {
        return unchanged(&s);
    }
    fail(s, reason::POLICY_DENIED, cut_long(why), ctx)
}

// ---------------------------------------------------------------------------------------------
// already_delivered

/// The status to write when, before any send, a receipt or the AWS side shows this very signal
/// was delivered before (by an earlier object that was deleted and created again): `Succeeded`,
/// reason `AlreadyDelivered`, nothing sent. `evidence` says how it is known, in words.
pub fn already_delivered(status: Option<&SignalStatus>, evidence: &str, ctx: &Ctx) -> Transition {
    let mut s = status.cloned().unwrap_or_default();
    if is_terminal(&s) {
        return unchanged(&s);
    }
    s.phase = Some(Phase::Succeeded);
    s.claim = None;
    s.next_attempt_time = None;
    s.last_error_code = None;
    let msg = format!("already delivered ({}); not sending again", cut(evidence));
    Transition {
        status: stamp(s, reason::ALREADY_DELIVERED, msg.clone(), ctx),
        event: Some(EventNote::normal("AlreadyDelivered", msg)),
    }
}

// ---------------------------------------------------------------------------------------------
// invalid_spec

/// The status to write when the operator's own validation refuses the spec: `Failed`, reason
/// `InvalidSpec`, with `why` (which must not quote input or payload values). A `Succeeded` or
/// `Failed` status is returned unchanged: nothing undoes a delivered signal.
pub fn invalid_spec(status: Option<&SignalStatus>, why: &str, ctx: &Ctx) -> Transition {
    let s = status.cloned().unwrap_or_default();
    if is_terminal(&s) {
        return unchanged(&s);
    }
    fail(
        s,
        reason::INVALID_SPEC,
        format!("invalid spec: {}", cut(why)),
        ctx,
    )
}

// ---------------------------------------------------------------------------------------------
// shared pieces

fn unchanged(s: &SignalStatus) -> Transition {
    Transition {
        status: s.clone(),
        event: None,
    }
}

/// Set message, observedGeneration and the kstatus conditions for the status's phase.
fn stamp(mut s: SignalStatus, why: &str, message: String, ctx: &Ctx) -> SignalStatus {
    if s.requested_by.is_none() {
        s.requested_by = ctx.requested_by.map(str::to_string);
    }
    let generation = ctx.generation.or(s.observed_generation);
    s.observed_generation = generation;
    let phase = phase(&s);
    set_kstatus(&mut s.conditions, phase, why, &message, ctx.now, generation);
    s.message = Some(message);
    s
}

fn fail(mut s: SignalStatus, why: &'static str, message: String, ctx: &Ctx) -> Transition {
    s.phase = Some(Phase::Failed);
    s.claim = None;
    s.next_attempt_time = None;
    Transition {
        status: stamp(s, why, message.clone(), ctx),
        event: Some(EventNote::warning("Failed", format!("{why}: {message}"))),
    }
}

/// A failure that may be retried after backoff, spending the attempt already counted: back to
/// `Pending`, or `Failed`/`RetriesExhausted` when no attempts are left.
fn retry_or_exhaust(mut s: SignalStatus, d: &str, why: &'static str, ctx: &Ctx) -> Transition {
    let max = ctx.max_attempts();
    if s.attempts >= max {
        let msg = format!("gave up after {} attempts; last error: {d}", s.attempts);
        return fail(s, reason::RETRIES_EXHAUSTED, msg, ctx);
    }
    s.phase = Some(Phase::Pending);
    let at = retry_at(&s, ctx);
    s.next_attempt_time = Some(Time(at));
    let msg = format!(
        "attempt {} of {max} failed: {d}; next attempt at {at}",
        s.attempts
    );
    Transition {
        status: stamp(s, why, msg.clone(), ctx),
        event: Some(EventNote::warning("RetryScheduled", msg)),
    }
}

/// A failure that heals by itself (connection refused, credentials, a failed read): the
/// attempt is given back and the retry is bounded by `spec.retry.maxDurationSeconds` instead.
fn retry_transient(mut s: SignalStatus, d: &str, why: &'static str, ctx: &Ctx) -> Transition {
    s.attempts = s.attempts.saturating_sub(1);
    s.transient_retries = s.transient_retries.saturating_add(1);
    if let Some(out) = out_of_time(&s, d, ctx) {
        return out;
    }
    s.phase = Some(Phase::Pending);
    let at = retry_at(&s, ctx);
    s.next_attempt_time = Some(Time(at));
    let msg = format!("the call failed ({d}); retrying at {at} without spending an attempt");
    Transition {
        status: stamp(s, why, msg.clone(), ctx),
        event: Some(EventNote::warning("RetryScheduled", msg)),
    }
}

/// `Failed`/`RetriesExhausted` when transient failures have been retried for
/// `spec.retry.maxDurationSeconds` since the first attempt.
fn out_of_time(s: &SignalStatus, d: &str, ctx: &Ctx) -> Option<Transition> {
    let first = s
        .first_attempt_time
        .as_ref()
        .or(s.last_attempt_time.as_ref())?
        .0;
    if backoff::add(first, ctx.retry.max_duration) > ctx.now {
        return None;
    }
    let msg = format!(
        "failures were retried for {}s since the first attempt; giving up; last error: {d}",
        ctx.retry.max_duration.as_secs()
    );
    let maybe = if s.verify_since.is_some() {
        " The signal may or may not have been delivered."
    } else {
        ""
    };
    Some(fail(
        s.clone(),
        reason::RETRIES_EXHAUSTED,
        format!("{msg}.{maybe}"),
        ctx,
    ))
}

/// Whether `spec.notAfter` has passed.
fn expired(ctx: &Ctx) -> bool {
    ctx.not_after.is_some_and(|t| t <= ctx.now)
}

/// `Failed`/`Expired`: `spec.notAfter` passed with the signal undelivered.
fn expire(s: SignalStatus, ctx: &Ctx) -> Transition {
    let when = ctx.not_after.map(|t| t.to_string()).unwrap_or_default();
    fail(
        s,
        reason::EXPIRED,
        format!("spec.notAfter ({when}) passed before the signal was delivered; never sending it"),
        ctx,
    )
}

/// The backoff for the retries this status has seen (attempts and retries of either kind).
fn delay(s: &SignalStatus, ctx: &Ctx) -> Duration {
    let n = s
        .attempts
        .saturating_add(s.throttled_retries)
        .saturating_add(s.transient_retries);
    backoff(
        n,
        ctx.retry.initial_backoff,
        ctx.retry.max_backoff,
        ctx.jitter,
    )
}

fn retry_at(s: &SignalStatus, ctx: &Ctx) -> Timestamp {
    ceil_second(backoff::add(ctx.now, delay(s, ctx)))
}

/// When a verification may trust "absent", if that is still in the future.
fn settle_until(last_send: Timestamp, ctx: &Ctx) -> Option<Timestamp> {
    let at = ceil_second(backoff::add(last_send, ctx.verify_settle));
    (at > ctx.now).then_some(at)
}

fn earliest(a: &Option<Time>, b: &Option<Time>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.0.min(b.0)),
        (Some(t), None) | (None, Some(t)) => Some(t.0),
        (None, None) => None,
    }
}

/// The longest message text taken from outside this module.
const MAX_DETAIL: usize = 200;

/// At most 1,000 characters of `text` (a denial names namespace, fields and the policy).
fn cut_long(text: &str) -> String {
    match text.char_indices().nth(1000) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// At most [`MAX_DETAIL`] characters of `text`, on one line.
fn cut(text: &str) -> String {
    let one_line: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match one_line.char_indices().nth(MAX_DETAIL) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

/// A failure in words: the code, and the adapter's message unless AWS may have quoted request
/// values in it (an Invalid or InvalidNow answer from AWS, which always carries a code). The
/// operator's own refusals (no code) keep their message: it names the cause.
fn describe(f: &AwsFailure) -> String {
    let code = f.code.as_deref().map(str::trim).filter(|c| !c.is_empty());
    let text = match (f.class, code) {
        (ErrorClass::Invalid | ErrorClass::InvalidNow, Some(_)) => String::new(),
        _ => cut(&f.message),
    };
    match (code, text.is_empty()) {
        (Some(code), true) => cut(code),
        (Some(code), false) if text.contains(code) => text,
        (Some(code), false) => format!("{}: {text}", cut(code)),
        (None, false) => text,
        (None, true) => f.class.in_words().to_string(),
    }
}
