//! Unit tests of the delivery machine: no I/O, a fixed clock, fixed jitter.
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use super::*;
use crate::api::{Claim, Phase, ResolvedRetry, SignalStatus};

const T0: i64 = 1_700_000_000;
const ME: &str = "signalman-0-me";
const OTHER: &str = "signalman-1-other";
const TTL: Duration = Duration::from_secs(60);
const SETTLE: Duration = Duration::from_secs(5);

fn t(sec: i64) -> Timestamp {
    Timestamp::from_second(sec).unwrap()
}

fn at(sec: i64) -> Time {
    Time(t(sec))
}

fn retry(max_attempts: u32, retry_not_found: bool) -> ResolvedRetry {
    ResolvedRetry {
        max_attempts,
        initial_backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(300),
        retry_not_found,
        max_duration: Duration::from_secs(86_400),
    }
}

fn ctx_at(now: Timestamp) -> Ctx<'static> {
    Ctx {
        now,
        holder: ME,
        claim_ttl: TTL,
        verify_settle: SETTLE,
        retry: retry(8, false),
        generation: Some(1),
        jitter: 0.5,
        not_after: None,
        verify_recheck: Duration::ZERO,
        requested_by: None,
        retry_requested: None,
    }
}

fn ctx() -> Ctx<'static> {
    ctx_at(t(T0))
}

fn failure(class: ErrorClass, code: &str) -> AwsFailure {
    AwsFailure {
        class,
        code: Some(code.to_string()),
        message: format!("AWS answered {code} (HTTP 400)"),
    }
}

fn failed(class: ErrorClass, code: &str) -> SendOutcome {
    SendOutcome::Failed(failure(class, code))
}

fn accepted() -> SendOutcome {
    SendOutcome::Accepted {
        request_id: Some("req-1".into()),
        run_id: Some("run-1".into()),
    }
}

fn claim_of(next: Next) -> Transition {
    match next {
        Next::Claim(t) => t,
        other => panic!("expected a claim, got {other:?}"),
    }
}

fn write_of(next: Next) -> Transition {
    match next {
        Next::Write(t) => t,
        other => panic!("expected a write, got {other:?}"),
    }
}

/// The status as claimed on first sight.
fn claimed(c: &Ctx) -> SignalStatus {
    claim_of(decide(None, c)).status
}

/// Condition `type_` of `s`.
fn cond<'a>(s: &'a SignalStatus, type_: &str) -> &'a Condition {
    s.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition"))
}

/// (Ready, Reconciling, Stalled) status values and the shared reason.
fn kstatus(s: &SignalStatus) -> (&str, &str, &str, &str) {
    let types: Vec<&str> = s.conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(types, [READY, RECONCILING, STALLED], "condition order");
    let reason = cond(s, READY).reason.as_str();
    for c in &s.conditions {
        assert_eq!(c.reason, reason, "all three share the reason");
        assert_eq!(c.message, s.message.clone().unwrap_or_default());
        assert_eq!(c.observed_generation, s.observed_generation);
    }
    (
        cond(s, READY).status.as_str(),
        cond(s, RECONCILING).status.as_str(),
        cond(s, STALLED).status.as_str(),
        reason,
    )
}

fn assert_in_progress(s: &SignalStatus, reason: &str) {
    assert_eq!(kstatus(s), ("False", "True", "False", reason));
}

fn assert_failed(s: &SignalStatus, reason: &str) {
    assert_eq!(s.phase, Some(Phase::Failed));
    assert_eq!(kstatus(s), ("False", "False", "True", reason));
    assert!(s.claim.is_none() && s.next_attempt_time.is_none());
}

fn assert_succeeded(s: &SignalStatus, reason: &str) {
    assert_eq!(s.phase, Some(Phase::Succeeded));
    assert_eq!(kstatus(s), ("True", "False", "False", reason));
    assert!(s.claim.is_none() && s.next_attempt_time.is_none());
}

/// Drive one object through the machine from `status` with `outcomes` for its sends and
/// verifications, jumping the clock to every scheduled time. Returns the final status and the
/// number of AWS sends made.
fn drive(
    mut status: Option<SignalStatus>,
    c: &Ctx,
    mut send: impl FnMut(u32) -> SendOutcome,
    mut verify: impl FnMut(u32) -> VerifyOutcome,
    max_steps: usize,
) -> (SignalStatus, u32) {
    let mut now = c.now;
    let (mut sends, mut verifies) = (0, 0);
    for _ in 0..max_steps {
        let c = Ctx { now, ..c.clone() };
        match decide(status.as_ref(), &c) {
            Next::Done => break,
            Next::WaitUntil(at) => {
                assert!(at > now, "a wait is in the future");
                now = at;
            }
            Next::Write(tr) => {
                let again = decide(Some(&tr.status), &c);
                assert!(
                    !matches!(&again, Next::Write(w) if w.status == tr.status),
                    "a write is a fixed point"
                );
                status = Some(tr.status);
            }
            Next::Claim(tr) => {
                sends += 1;
                let outcome = send(sends);
                status = Some(after_send(&tr.status, &outcome, &c).status);
            }
            Next::Verify => {
                verifies += 1;
                let outcome = verify(verifies);
                status = Some(after_verify(status.as_ref().unwrap(), &outcome, &c).status);
            }
        }
    }
    (status.expect("some status"), sends)
}

// ---------------------------------------------------------------------------------------------
// decide: phases

#[test]
fn first_sight_claims_at_once() {
    let c = ctx();
    let tr = claim_of(decide(None, &c));
    let s = &tr.status;
    assert_eq!(s.phase, Some(Phase::Sending));
    assert_eq!(s.attempts, 1);
    assert_eq!(s.last_attempt_time, Some(at(T0)));
    assert_eq!(
        s.claim,
        Some(Claim {
            holder: ME.into(),
            deadline: at(T0 + 60)
        })
    );
    assert_eq!(s.observed_generation, Some(1));
    assert!(s.next_attempt_time.is_none() && s.request_id.is_none());
    assert_in_progress(s, reason::SENDING);
    let event = tr.event.unwrap();
    assert_eq!((event.warning, event.reason), (false, "Sending"));
    assert!(event.note.contains("attempt 1 of 8"), "{}", event.note);
}

#[test]
fn pending_claims_when_due_and_waits_otherwise() {
    let c = ctx();
    let mut s = SignalStatus {
        phase: Some(Phase::Pending),
        attempts: 2,
        ..Default::default()
    };
    assert_eq!(
        claim_of(decide(Some(&s), &c)).status.attempts,
        3,
        "no next time: claim now"
    );
    s.next_attempt_time = Some(at(T0 - 1));
    assert!(
        matches!(decide(Some(&s), &c), Next::Claim(_)),
        "past: claim"
    );
    s.next_attempt_time = Some(at(T0));
    assert!(
        matches!(decide(Some(&s), &c), Next::Claim(_)),
        "due exactly now: claim"
    );
    // A scheduled retry written by this machine waits; its conditions are consistent.
    let sched = after_send(&claimed(&c), &failed(ErrorClass::NotSent, "X"), &c).status;
    let due = sched.next_attempt_time.clone().unwrap().0;
    assert_eq!(decide(Some(&sched), &c), Next::WaitUntil(due));
    assert!(matches!(decide(Some(&sched), &ctx_at(due)), Next::Claim(_)));
}

#[test]
fn a_status_without_phase_is_pending() {
    let s = SignalStatus::default();
    let tr = claim_of(decide(Some(&s), &ctx()));
    assert_eq!(
        (tr.status.phase, tr.status.attempts),
        (Some(Phase::Sending), 1)
    );
}

#[test]
fn a_claim_keeps_what_earlier_attempts_learnt() {
    let c = ctx();
    let s = SignalStatus {
        phase: Some(Phase::Pending),
        attempts: 1,
        throttled_retries: 4,
        verify_since: Some(at(T0 - 100)),
        run_id: Some("run-1".into()),
        last_error_code: Some("InternalFailure".into()),
        ..Default::default()
    };
    let claimed = claim_of(decide(Some(&s), &c)).status;
    assert_eq!(claimed.attempts, 2);
    assert_eq!(claimed.throttled_retries, 4);
    assert_eq!(claimed.verify_since, Some(at(T0 - 100)));
    assert_eq!(claimed.run_id.as_deref(), Some("run-1"));
    assert_eq!(claimed.last_error_code.as_deref(), Some("InternalFailure"));
}

#[test]
fn pending_with_no_attempts_left_fails_without_sending() {
    let c = Ctx {
        retry: retry(3, false),
        ..ctx()
    };
    let s = SignalStatus {
        phase: Some(Phase::Pending),
        attempts: 3,
        last_error_code: Some("AccessDeniedException".into()),
        ..Default::default()
    };
    let tr = write_of(decide(Some(&s), &c));
    assert_failed(&tr.status, reason::RETRIES_EXHAUSTED);
    assert!(tr
        .status
        .message
        .as_deref()
        .unwrap()
        .contains("AccessDeniedException"));
    assert_eq!(decide(Some(&tr.status), &c), Next::Done);
}

#[test]
fn a_live_foreign_claim_is_left_alone() {
    let a = ctx();
    let s = claimed(&Ctx {
        holder: OTHER,
        ..a.clone()
    });
    assert_eq!(decide(Some(&s), &a), Next::WaitUntil(t(T0 + 60)));
    assert_eq!(
        decide(Some(&s), &ctx_at(t(T0 + 59))),
        Next::WaitUntil(t(T0 + 60))
    );
}

#[test]
fn an_expired_foreign_claim_goes_to_verifying() {
    let s = claimed(&Ctx {
        holder: OTHER,
        ..ctx()
    });
    // The deadline itself counts as expired.
    let c = ctx_at(t(T0 + 60));
    let tr = write_of(decide(Some(&s), &c));
    let v = &tr.status;
    assert_eq!(v.phase, Some(Phase::Verifying));
    assert!(v.claim.is_none());
    assert_eq!(v.verify_since, Some(at(T0)));
    assert_eq!(v.attempts, 1, "the abandoned attempt stays spent");
    // The sender can have sent until its deadline (= now): settle before trusting "absent".
    assert_eq!(v.next_attempt_time, Some(at(T0 + 65)));
    assert_in_progress(v, reason::VERIFYING);
    let event = tr.event.unwrap();
    assert_eq!((event.warning, event.reason), (true, "Verifying"));
    assert!(event.note.contains(OTHER));
    // Long after the deadline the settle time is over: verify at once.
    let late = write_of(decide(Some(&s), &ctx_at(t(T0 + 600)))).status;
    assert!(late.next_attempt_time.is_none());
    assert_eq!(decide(Some(&late), &ctx_at(t(T0 + 600))), Next::Verify);
}

#[test]
fn an_own_claim_is_abandoned_even_before_its_deadline() {
    // This process restarted (or failed to record an outcome): the claim is left over.
    let s = claimed(&ctx());
    let c = ctx_at(t(T0 + 10));
    let v = write_of(decide(Some(&s), &c)).status;
    assert_eq!(v.phase, Some(Phase::Verifying));
    assert_eq!(v.verify_since, Some(at(T0)));
    assert_eq!(v.next_attempt_time, Some(at(T0 + 15)), "now + settle");
    assert_eq!(decide(Some(&v), &c), Next::WaitUntil(t(T0 + 15)));
    assert_eq!(decide(Some(&v), &ctx_at(t(T0 + 15))), Next::Verify);
}

#[test]
fn verify_since_is_the_earliest_unconfirmed_attempt() {
    let c = ctx_at(t(T0 + 1000));
    let mut s = claimed(&ctx());
    s.verify_since = Some(at(T0 - 50));
    assert_eq!(
        write_of(decide(Some(&s), &c)).status.verify_since,
        Some(at(T0 - 50))
    );
    s.verify_since = Some(at(T0 + 50));
    assert_eq!(
        write_of(decide(Some(&s), &c)).status.verify_since,
        Some(at(T0))
    );
    // A damaged Sending status without claim or attempt time: look back over everything.
    let bare = SignalStatus {
        phase: Some(Phase::Sending),
        attempts: 1,
        ..Default::default()
    };
    let v = write_of(decide(Some(&bare), &c)).status;
    assert_eq!(v.verify_since, Some(Time(Timestamp::UNIX_EPOCH)));
    assert_eq!(
        v.next_attempt_time,
        Some(at(T0 + 1005)),
        "no deadline known: settle from now"
    );
}

#[test]
fn verifying_waits_for_its_time_then_verifies() {
    let c = ctx();
    let v = after_send(
        &claimed(&c),
        &failed(ErrorClass::Ambiguous, "InternalFailure"),
        &c,
    )
    .status;
    let due = v.next_attempt_time.clone().unwrap().0;
    assert_eq!(decide(Some(&v), &c), Next::WaitUntil(due));
    assert_eq!(decide(Some(&v), &ctx_at(due)), Next::Verify);
    let mut unscheduled = v.clone();
    unscheduled.next_attempt_time = None;
    assert_eq!(decide(Some(&unscheduled), &c), Next::Verify);
}

#[test]
fn terminal_statuses_are_done() {
    let c = ctx();
    let ok = after_send(&claimed(&c), &accepted(), &c).status;
    let bad = after_send(
        &claimed(&c),
        &failed(ErrorClass::Invalid, "ValidationException"),
        &c,
    )
    .status;
    for s in [&ok, &bad] {
        assert_eq!(decide(Some(s), &c), Next::Done);
        assert_eq!(decide(Some(s), &ctx_at(t(T0 + 10_000_000))), Next::Done);
        // Whoever looks, whatever the policy says.
        let other = Ctx {
            holder: OTHER,
            retry: retry(1, true),
            jitter: 0.0,
            ..c.clone()
        };
        assert_eq!(decide(Some(s), &other), Next::Done);
    }
}

// ---------------------------------------------------------------------------------------------
// decide: repairs

#[test]
fn terminal_statuses_with_broken_conditions_are_repaired_without_aws() {
    let c = ctx();
    let mut ok = after_send(&claimed(&c), &accepted(), &c).status;
    ok.conditions.clear();
    let tr = write_of(decide(Some(&ok), &c));
    assert!(tr.event.is_none());
    assert_succeeded(&tr.status, reason::DELIVERED);
    assert_eq!(decide(Some(&tr.status), &c), Next::Done);

    // A verified delivery keeps its reason; the lone wrong condition is fixed.
    let v = after_send(
        &claimed(&c),
        &failed(ErrorClass::Ambiguous, "InternalFailure"),
        &c,
    )
    .status;
    let mut good = after_verify(&v, &VerifyOutcome::Delivered, &c).status;
    good.conditions.retain(|c| c.type_ != STALLED);
    let fixed = write_of(decide(Some(&good), &c)).status;
    assert_succeeded(&fixed, reason::DELIVERY_VERIFIED);

    // Failed for good keeps its failure reason.
    let mut bad = after_send(
        &claimed(&c),
        &failed(ErrorClass::NotFound, "UnknownResourceFault"),
        &c,
    )
    .status;
    bad.conditions[1].status = "True".into(); // Reconciling True on a failed object
    let fixed = write_of(decide(Some(&bad), &c)).status;
    assert_failed(&fixed, reason::EXECUTION_NOT_FOUND);

    // Phase without any conditions or message: generic reasons.
    let bare = SignalStatus {
        phase: Some(Phase::Failed),
        ..Default::default()
    };
    let fixed = write_of(decide(Some(&bare), &c)).status;
    assert_failed(&fixed, reason::FAILED);
    assert_eq!(decide(Some(&fixed), &c), Next::Done);
}

#[test]
fn a_stale_observed_generation_is_repaired() {
    let c = ctx();
    let ok = after_send(&claimed(&c), &accepted(), &c).status;
    let newer = Ctx {
        generation: Some(2),
        now: t(T0 + 100),
        ..c.clone()
    };
    let fixed = write_of(decide(Some(&ok), &newer)).status;
    assert_eq!(fixed.observed_generation, Some(2));
    assert!(fixed
        .conditions
        .iter()
        .all(|c| c.observed_generation == Some(2)));
    // Nothing transitioned: lastTransitionTime untouched.
    assert_eq!(fixed.conditions, {
        let mut expected = ok.conditions.clone();
        expected
            .iter_mut()
            .for_each(|c| c.observed_generation = Some(2));
        expected
    });
    assert_eq!(decide(Some(&fixed), &newer), Next::Done);
    // Unknown generation: nothing to compare, nothing to repair.
    assert_eq!(
        decide(
            Some(&ok),
            &Ctx {
                generation: None,
                ..c
            }
        ),
        Next::Done
    );
}

#[test]
fn a_waiting_status_with_broken_conditions_is_repaired_then_waits() {
    let c = ctx();
    let mut s = after_send(
        &claimed(&c),
        &failed(ErrorClass::Throttled, "ThrottlingException"),
        &c,
    )
    .status;
    let due = s.next_attempt_time.clone().unwrap().0;
    s.conditions.clear();
    let fixed = write_of(decide(Some(&s), &c)).status;
    assert_in_progress(&fixed, reason::PENDING);
    assert_eq!(fixed.next_attempt_time, Some(Time(due)));
    assert_eq!(decide(Some(&fixed), &c), Next::WaitUntil(due));
}

#[test]
fn a_live_foreign_claim_is_never_repaired() {
    // Writing would bump the resourceVersion under the live sender's feet.
    let mut s = claimed(&Ctx {
        holder: OTHER,
        ..ctx()
    });
    s.conditions.clear();
    s.observed_generation = None;
    assert_eq!(decide(Some(&s), &ctx()), Next::WaitUntil(t(T0 + 60)));
}

// ---------------------------------------------------------------------------------------------
// after_send

#[test]
fn accepted_is_delivered() {
    let c = ctx();
    let mut s = claimed(&c);
    s.last_error_code = Some("ThrottlingException".into());
    let later = ctx_at(t(T0 + 2));
    let tr = after_send(&s, &accepted(), &later);
    let d = &tr.status;
    assert_succeeded(d, reason::DELIVERED);
    assert_eq!(d.sent_time, Some(at(T0 + 2)));
    assert_eq!(d.request_id.as_deref(), Some("req-1"));
    assert_eq!(d.run_id.as_deref(), Some("run-1"));
    assert_eq!(d.attempts, 1);
    assert!(d.last_error_code.is_none());
    let event = tr.event.unwrap();
    assert_eq!((event.warning, event.reason), (false, "Delivered"));
    assert!(event.note.contains("req-1"));
}

#[test]
fn accepted_keeps_a_pinned_run_when_none_is_reported() {
    let c = ctx();
    let mut s = claimed(&c);
    s.run_id = Some("pinned".into());
    let out = SendOutcome::Accepted {
        request_id: None,
        run_id: None,
    };
    let d = after_send(&s, &out, &c).status;
    assert_eq!(d.run_id.as_deref(), Some("pinned"));
    assert!(d.request_id.is_none());
    let filled = SendOutcome::Accepted {
        request_id: None,
        run_id: Some("resolved".into()),
    };
    assert_eq!(
        after_send(&s, &filled, &c).status.run_id.as_deref(),
        Some("resolved")
    );
}

#[test]
fn throttled_is_refunded_and_scheduled() {
    let c = ctx();
    let tr = after_send(
        &claimed(&c),
        &failed(ErrorClass::Throttled, "ThrottlingException"),
        &c,
    );
    let s = &tr.status;
    assert_eq!(s.phase, Some(Phase::Pending));
    assert_eq!((s.attempts, s.throttled_retries), (0, 1));
    assert!(s.claim.is_none());
    // n = 1: base 1s, jitter 0.5 → 0.75s, rounded up to the next whole second.
    assert_eq!(s.next_attempt_time, Some(at(T0 + 1)));
    assert_eq!(s.last_error_code.as_deref(), Some("ThrottlingException"));
    assert_in_progress(s, reason::THROTTLED);
    let event = tr.event.as_ref().unwrap();
    assert_eq!((event.warning, event.reason), (true, "RetryScheduled"));
    assert!(event.note.contains("ThrottlingException"));
}

#[test]
fn a_throttle_storm_never_exhausts_attempts() {
    let c = Ctx {
        retry: ResolvedRetry {
            max_duration: Duration::from_secs(10 * 365 * 86_400),
            ..retry(2, false)
        },
        ..ctx()
    };
    let (s, sends) = drive(
        None,
        &c,
        |_| failed(ErrorClass::Throttled, "ThrottlingException"),
        |_| panic!("no verify"),
        3000,
    );
    assert_eq!(s.phase, Some(Phase::Pending));
    assert!(sends >= 1000, "{sends} sends");
    assert_eq!(s.attempts, 0);
    assert_eq!(s.throttled_retries, sends);
    // The backoff grew to the cap and stays there: [150s, 300s] at jitter 0.5 → 225s.
    let due = s.next_attempt_time.clone().unwrap().0;
    let c2 = Ctx {
        now: due,
        ..c.clone()
    };
    let after = after_send(
        &claim_of(decide(Some(&s), &c2)).status,
        &failed(ErrorClass::Throttled, "ThrottlingException"),
        &c2,
    );
    assert_eq!(
        after.status.next_attempt_time,
        Some(Time(backoff::add(due, S(225))))
    );
    // Once the throttling stops, delivery goes through.
    let (s, _) = drive(Some(s), &c2, |_| accepted(), |_| panic!("no verify"), 10);
    assert_succeeded(&s, reason::DELIVERED);
}

#[test]
fn transient_failures_spend_no_attempt_and_end_with_the_time_budget() {
    for (class, code, why) in [
        (ErrorClass::NotSent, "NotSent", reason::RETRY_SCHEDULED),
        (
            ErrorClass::Permission,
            "ExpiredTokenException",
            reason::PERMISSION_DENIED,
        ),
        (
            ErrorClass::Throttled,
            "ThrottlingException",
            reason::THROTTLED,
        ),
    ] {
        let c = Ctx {
            retry: ResolvedRetry {
                max_duration: Duration::from_secs(3600),
                ..retry(2, false)
            },
            ..ctx()
        };
        let first = after_send(&claimed(&c), &failed(class, code), &c);
        assert_eq!(first.status.phase, Some(Phase::Pending), "{class:?}");
        assert_eq!(first.status.attempts, 0, "{class:?} spends no attempt");
        assert_eq!(first.status.first_attempt_time, Some(at(T0)));
        assert_in_progress(&first.status, why);

        // Far more failures than maxAttempts, all retried, until an hour has passed.
        let (s, sends) = drive(
            None,
            &c,
            |_| failed(class, code),
            |_| panic!("no verify"),
            10_000,
        );
        assert!(sends > 2, "{class:?}: {sends} sends");
        assert_failed(&s, reason::RETRIES_EXHAUSTED);
        let last = s.last_attempt_time.clone().unwrap().0;
        // The first failure past the hour ends it: at most one backoff step (300 s) either side.
        assert!(
            last >= t(T0 + 3600 - 300) && last <= t(T0 + 3600 + 300),
            "{class:?}: {last}"
        );
        assert!(
            s.message.as_deref().unwrap().contains("3600s"),
            "{:?}",
            s.message
        );
        assert!(s.message.as_deref().unwrap().contains(code));
    }
}

#[test]
fn retryable_failures_spend_attempts_until_exhausted() {
    for (class, code, why, retry_not_found) in [
        (
            ErrorClass::Limit,
            "LimitExceededFault",
            reason::LIMIT_EXCEEDED,
            false,
        ),
        (
            ErrorClass::NotFound,
            "UnknownResourceFault",
            reason::EXECUTION_NOT_FOUND,
            true,
        ),
    ] {
        let c = Ctx {
            retry: retry(3, retry_not_found),
            ..ctx()
        };
        let first = after_send(&claimed(&c), &failed(class, code), &c);
        assert_eq!(first.status.phase, Some(Phase::Pending), "{class:?}");
        assert_eq!(first.status.attempts, 1, "{class:?} spends");
        assert!(first.status.next_attempt_time.is_some());
        assert_in_progress(&first.status, why);
        assert_eq!(first.event.as_ref().unwrap().reason, "RetryScheduled");

        let (s, sends) = drive(
            None,
            &c,
            |_| failed(class, code),
            |_| panic!("no verify"),
            100,
        );
        assert_eq!(sends, 3, "{class:?}: exactly max_attempts sends");
        assert_failed(&s, reason::RETRIES_EXHAUSTED);
        assert_eq!(s.attempts, 3);
        assert!(
            s.message.as_deref().unwrap().contains(code),
            "{:?}",
            s.message
        );
        assert_eq!(s.last_error_code.as_deref(), Some(code));
    }
}

#[test]
fn the_last_retryable_failure_fails_at_once() {
    let c = Ctx {
        retry: retry(1, false),
        ..ctx()
    };
    let tr = after_send(
        &claimed(&c),
        &failed(ErrorClass::Limit, "LimitExceededFault"),
        &c,
    );
    assert_failed(&tr.status, reason::RETRIES_EXHAUSTED);
    let event = tr.event.unwrap();
    assert_eq!((event.warning, event.reason), (true, "Failed"));
    assert!(event.note.starts_with("RetriesExhausted"));
}

#[test]
fn not_found_fails_unless_retry_not_found() {
    let c = ctx();
    let tr = after_send(
        &claimed(&c),
        &failed(ErrorClass::NotFound, "UnknownResourceFault"),
        &c,
    );
    assert_failed(&tr.status, reason::EXECUTION_NOT_FOUND);
    assert!(tr
        .status
        .message
        .as_deref()
        .unwrap()
        .contains("UnknownResourceFault"));

    let c = Ctx {
        retry: retry(4, true),
        ..ctx()
    };
    let first = after_send(
        &claimed(&c),
        &failed(ErrorClass::NotFound, "UnknownResourceFault"),
        &c,
    )
    .status;
    assert_eq!((first.phase, first.attempts), (Some(Phase::Pending), 1));
    assert_in_progress(&first, reason::EXECUTION_NOT_FOUND);
    let (s, sends) = drive(
        None,
        &c,
        |_| failed(ErrorClass::NotFound, "AutomationExecutionNotFoundException"),
        |_| panic!(),
        100,
    );
    assert_eq!(sends, 4);
    assert_failed(&s, reason::RETRIES_EXHAUSTED);
    // The workflow starts meanwhile: delivered.
    let (s, sends) = drive(
        None,
        &c,
        |n| {
            if n < 3 {
                failed(ErrorClass::NotFound, "UnknownResourceFault")
            } else {
                accepted()
            }
        },
        |_| panic!(),
        100,
    );
    assert_eq!(sends, 3);
    assert_succeeded(&s, reason::DELIVERED);
}

#[test]
fn refusals_after_an_ambiguous_attempt_are_verified() {
    for rnf in [false, true] {
        let c = Ctx {
            retry: retry(8, rnf),
            ..ctx()
        };
        for (class, code) in [
            (ErrorClass::InvalidNow, "InvalidAutomationSignalException"),
            (ErrorClass::NotFound, "UnknownResourceFault"),
        ] {
            let mut s = claimed(&c);
            s.attempts = 2;
            s.verify_since = Some(at(T0 - 30));
            let tr = after_send(&s, &failed(class, code), &c);
            let v = &tr.status;
            assert_eq!(v.phase, Some(Phase::Verifying), "{class:?} rnf={rnf}");
            assert_eq!(
                v.verify_since,
                Some(at(T0 - 30)),
                "the refused attempt adds nothing"
            );
            assert!(v.next_attempt_time.is_none());
            assert_eq!(v.attempts, 2);
            assert_in_progress(v, reason::VERIFYING);
            assert_eq!(decide(Some(v), &c), Next::Verify);
            // The earlier attempt did land.
            let done = after_verify(v, &VerifyOutcome::Delivered, &c).status;
            assert_succeeded(&done, reason::DELIVERY_VERIFIED);
        }
    }
}

#[test]
fn invalid_now_without_an_earlier_ambiguous_attempt_is_rejected() {
    let c = ctx();
    let tr = after_send(
        &claimed(&c),
        &failed(ErrorClass::InvalidNow, "InvalidAutomationSignalException"),
        &c,
    );
    assert_failed(&tr.status, reason::SIGNAL_REJECTED);
    assert!(tr
        .status
        .message
        .as_deref()
        .unwrap()
        .contains("InvalidAutomationSignalException"));
}

#[test]
fn invalid_fails_with_invalid_spec_even_after_an_ambiguous_attempt() {
    let c = ctx();
    let mut s = claimed(&c);
    s.verify_since = Some(at(T0 - 30));
    let tr = after_send(&s, &failed(ErrorClass::Invalid, "ValidationException"), &c);
    assert_failed(&tr.status, reason::INVALID_SPEC);
    assert_eq!(
        tr.status.last_error_code.as_deref(),
        Some("ValidationException")
    );
}

#[test]
fn ambiguous_goes_to_verifying() {
    let c = ctx();
    let s = claimed(&c);
    let later = ctx_at(t(T0 + 20)); // the call timed out after 20s
    let tr = after_send(
        &s,
        &failed(ErrorClass::Ambiguous, "InternalFailure"),
        &later,
    );
    let v = &tr.status;
    assert_eq!(v.phase, Some(Phase::Verifying));
    assert_eq!(v.verify_since, Some(at(T0)), "this claim's attempt time");
    assert_eq!(v.attempts, 1, "the attempt stays spent");
    assert!(v.claim.is_none());
    // max(settle 5s, backoff 0.75s) after the call ended.
    assert_eq!(v.next_attempt_time, Some(at(T0 + 25)));
    assert_in_progress(v, reason::VERIFYING);
    let event = tr.event.unwrap();
    assert_eq!((event.warning, event.reason), (true, "Verifying"));
    assert!(event.note.contains("InternalFailure"));

    // A later attempt's ambiguity keeps the earlier verify_since.
    let mut s2 = claimed(&ctx_at(t(T0 + 100)));
    s2.verify_since = Some(at(T0));
    let v2 = after_send(
        &s2,
        &failed(ErrorClass::Ambiguous, "InternalFailure"),
        &ctx_at(t(T0 + 101)),
    )
    .status;
    assert_eq!(v2.verify_since, Some(at(T0)));

    // With a long backoff, verification waits for the backoff, not just the settle time.
    let mut s3 = claimed(&c);
    s3.attempts = 6; // n = 6: base 32s → 24s at jitter 0.5
    let v3 = after_send(&s3, &failed(ErrorClass::Ambiguous, "InternalFailure"), &c).status;
    assert_eq!(v3.next_attempt_time, Some(at(T0 + 24)));
}

#[test]
fn after_send_on_a_terminal_status_changes_nothing() {
    let c = ctx();
    let ok = after_send(&claimed(&c), &accepted(), &c).status;
    let bad = invalid_spec(None, "bad", &c).status;
    for s in [&ok, &bad] {
        for out in [
            accepted(),
            failed(ErrorClass::Ambiguous, "InternalFailure"),
            failed(ErrorClass::Throttled, "Throttling"),
        ] {
            let tr = after_send(s, &out, &ctx_at(t(T0 + 5)));
            assert_eq!(&tr.status, s);
            assert!(tr.event.is_none());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// after_verify

fn verifying(c: &Ctx) -> SignalStatus {
    after_send(
        &claimed(c),
        &failed(ErrorClass::Ambiguous, "RequestTimeout"),
        c,
    )
    .status
}

#[test]
fn verified_delivery_succeeds() {
    let c = ctx();
    let v = verifying(&c);
    let later = ctx_at(t(T0 + 30));
    let tr = after_verify(&v, &VerifyOutcome::Delivered, &later);
    assert_succeeded(&tr.status, reason::DELIVERY_VERIFIED);
    assert_eq!(
        tr.status.sent_time,
        Some(at(T0)),
        "verify_since: the earliest claim that may have carried it"
    );
    assert!(tr.status.last_error_code.is_none());
    let event = tr.event.unwrap();
    assert_eq!((event.warning, event.reason), (false, "DeliveryVerified"));

    let precise = Timestamp::new(T0 + 3, 600_000_000).unwrap();
    let d = after_verify(&v, &VerifyOutcome::DeliveredAt(precise), &later).status;
    assert_eq!(d.sent_time, Some(at(T0 + 3)));

    let mut no_since = v.clone();
    no_since.verify_since = None;
    assert_eq!(
        after_verify(&no_since, &VerifyOutcome::Delivered, &later)
            .status
            .sent_time,
        Some(at(T0 + 30))
    );
}

#[test]
fn verified_absence_allows_a_new_attempt_at_once() {
    let c = ctx();
    let v = verifying(&c);
    let later = ctx_at(t(T0 + 30));
    let tr = after_verify(&v, &VerifyOutcome::Absent, &later);
    let p = &tr.status;
    assert_eq!(p.phase, Some(Phase::Pending));
    assert!(p.next_attempt_time.is_none());
    assert_eq!(p.verify_since, Some(at(T0)), "kept");
    assert_in_progress(p, reason::RETRY_SCHEDULED);
    assert_eq!(tr.event.unwrap().reason, "RetryScheduled");
    let again = claim_of(decide(Some(p), &later)).status;
    assert_eq!(again.attempts, 2);
    assert_eq!(again.verify_since, Some(at(T0)));
}

#[test]
fn verified_absence_with_no_attempts_left_fails() {
    let c = Ctx {
        retry: retry(1, false),
        ..ctx()
    };
    let v = verifying(&c);
    let tr = after_verify(&v, &VerifyOutcome::Absent, &c);
    assert_failed(&tr.status, reason::RETRIES_EXHAUSTED);
    assert!(tr
        .status
        .message
        .as_deref()
        .unwrap()
        .contains("RequestTimeout"));
}

#[test]
fn an_execution_that_moved_on_rejects_the_signal() {
    let c = ctx();
    let tr = after_verify(
        &verifying(&c),
        &VerifyOutcome::NoLongerWaiting {
            why: "the execution is Success".into(),
        },
        &c,
    );
    assert_failed(&tr.status, reason::SIGNAL_REJECTED);
    assert!(tr
        .status
        .message
        .as_deref()
        .unwrap()
        .contains("the execution is Success"));
}

#[test]
fn not_found_while_verifying() {
    for outcome in [
        VerifyOutcome::NotFound,
        VerifyOutcome::Failed(failure(ErrorClass::NotFound, "UnknownResourceFault")),
    ] {
        let c = ctx();
        assert_failed(
            &after_verify(&verifying(&c), &outcome, &c).status,
            reason::EXECUTION_NOT_FOUND,
        );

        let c = Ctx {
            retry: retry(8, true),
            ..ctx()
        };
        let p = after_verify(&verifying(&c), &outcome, &c).status;
        assert_eq!(p.phase, Some(Phase::Pending));
        assert_eq!(p.attempts, 1, "the verification spends nothing more");
        assert!(p.next_attempt_time.is_some(), "retried after backoff");
        assert_in_progress(&p, reason::EXECUTION_NOT_FOUND);

        let c = Ctx {
            retry: retry(1, true),
            ..ctx()
        };
        assert_failed(
            &after_verify(&verifying(&c), &outcome, &c).status,
            reason::RETRIES_EXHAUSTED,
        );
    }
}

#[test]
fn a_throttled_verification_is_retried_for_free() {
    let c = ctx();
    let v = verifying(&c);
    let tr = after_verify(
        &v,
        &VerifyOutcome::Failed(failure(ErrorClass::Throttled, "ThrottlingException")),
        &c,
    );
    let s = &tr.status;
    assert_eq!(s.phase, Some(Phase::Verifying));
    assert_eq!((s.attempts, s.throttled_retries), (1, 1));
    assert!(s.next_attempt_time.as_ref().unwrap().0 > c.now);
    assert_eq!(s.verify_since, v.verify_since);
    assert_in_progress(s, reason::THROTTLED);
    assert_eq!(tr.event.unwrap().reason, "RetryScheduled");
    // A storm of throttled verifications never ends the object and never sends.
    let c1 = Ctx {
        retry: retry(1, false),
        ..ctx()
    };
    let (s, sends) = drive(
        Some(verifying(&c1)),
        &c1,
        |_| panic!("no send while verifying"),
        |_| VerifyOutcome::Failed(failure(ErrorClass::Throttled, "ThrottlingException")),
        500,
    );
    assert_eq!((s.phase, sends), (Some(Phase::Verifying), 0));
}

#[test]
fn a_failed_verification_spends_an_attempt_and_ends_eventually() {
    let c = Ctx {
        retry: ResolvedRetry {
            max_duration: Duration::from_secs(3600),
            ..retry(3, false)
        },
        ..ctx()
    };
    let v = verifying(&c);
    // A failure that heals by itself (credentials, 5xx, network) spends no attempt...
    let tr = after_verify(
        &v,
        &VerifyOutcome::Failed(failure(ErrorClass::Permission, "AccessDeniedException")),
        &c,
    );
    let s = &tr.status;
    assert_eq!((s.phase, s.attempts), (Some(Phase::Verifying), 1));
    assert_eq!(s.transient_retries, 1);
    assert_in_progress(s, reason::PERMISSION_DENIED);
    // ...one that cannot heal does.
    let limit = after_verify(
        &v,
        &VerifyOutcome::Failed(failure(ErrorClass::Limit, "LimitExceededFault")),
        &c,
    )
    .status;
    assert_eq!((limit.phase, limit.attempts), (Some(Phase::Verifying), 2));
    assert_eq!(s.last_error_code.as_deref(), Some("AccessDeniedException"));
    let amb = after_verify(
        &v,
        &VerifyOutcome::Failed(failure(ErrorClass::Ambiguous, "InternalFailure")),
        &c,
    )
    .status;
    assert_in_progress(&amb, reason::VERIFYING);

    let (end, sends) = drive(
        Some(v),
        &c,
        |_| panic!("never resend without knowing"),
        |_| VerifyOutcome::Failed(failure(ErrorClass::Permission, "AccessDeniedException")),
        10_000,
    );
    assert_eq!(sends, 0);
    assert_failed(&end, reason::RETRIES_EXHAUSTED);
    assert!(end.message.as_deref().unwrap().contains("may or may not"));
    let (end, sends) = drive(
        Some(verifying(&c)),
        &c,
        |_| panic!("never resend without knowing"),
        |_| VerifyOutcome::Failed(failure(ErrorClass::Limit, "LimitExceededFault")),
        100,
    );
    assert_eq!(sends, 0);
    assert_failed(&end, reason::RETRIES_EXHAUSTED);
    assert!(end.message.as_deref().unwrap().contains("may or may not"));
}

#[test]
fn after_verify_on_a_terminal_status_changes_nothing() {
    let c = ctx();
    let ok = after_send(&claimed(&c), &accepted(), &c).status;
    let bad = invalid_spec(None, "bad", &c).status;
    for s in [&ok, &bad] {
        for out in [
            VerifyOutcome::Absent,
            VerifyOutcome::Delivered,
            VerifyOutcome::NotFound,
        ] {
            let tr = after_verify(s, &out, &c);
            assert_eq!(&tr.status, s);
            assert!(tr.event.is_none());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// invalid_spec

#[test]
fn invalid_spec_fails_anything_not_yet_final() {
    let c = ctx();
    let tr = invalid_spec(None, "payload.StepName is required", &c);
    assert_failed(&tr.status, reason::INVALID_SPEC);
    assert_eq!(
        tr.status.message.as_deref(),
        Some("invalid spec: payload.StepName is required")
    );
    let event = tr.event.unwrap();
    assert_eq!((event.warning, event.reason), (true, "Failed"));
    assert_eq!(decide(Some(&tr.status), &c), Next::Done);

    let pending = after_send(&claimed(&c), &failed(ErrorClass::NotSent, "X"), &c).status;
    assert_failed(
        &invalid_spec(Some(&pending), "bad", &c).status,
        reason::INVALID_SPEC,
    );
    let v = verifying(&c);
    assert_failed(
        &invalid_spec(Some(&v), "bad", &c).status,
        reason::INVALID_SPEC,
    );
}

#[test]
fn invalid_spec_never_undoes_a_final_outcome() {
    let c = ctx();
    let ok = after_send(&claimed(&c), &accepted(), &c).status;
    let tr = invalid_spec(Some(&ok), "bad", &c);
    assert_eq!(tr.status, ok);
    assert!(tr.event.is_none());
    let rejected = after_send(
        &claimed(&c),
        &failed(ErrorClass::InvalidNow, "InvalidAutomationSignalException"),
        &c,
    )
    .status;
    assert_eq!(invalid_spec(Some(&rejected), "bad", &c).status, rejected);
}

// ---------------------------------------------------------------------------------------------
// Done never becomes anything else

#[test]
fn done_never_becomes_anything_else() {
    let c = ctx();
    let finals = [
        after_send(&claimed(&c), &accepted(), &c).status,
        after_verify(&verifying(&c), &VerifyOutcome::Delivered, &c).status,
        after_send(
            &claimed(&c),
            &failed(ErrorClass::NotFound, "UnknownResourceFault"),
            &c,
        )
        .status,
        after_send(
            &claimed(&c),
            &failed(ErrorClass::Invalid, "ValidationException"),
            &c,
        )
        .status,
        {
            let one = Ctx {
                retry: retry(1, false),
                ..c.clone()
            };
            after_send(
                &claimed(&one),
                &failed(ErrorClass::Limit, "LimitExceededFault"),
                &one,
            )
            .status
        },
        invalid_spec(None, "bad", &c).status,
    ];
    let sends = [
        accepted(),
        failed(ErrorClass::Throttled, "ThrottlingException"),
        failed(ErrorClass::Ambiguous, "InternalFailure"),
        failed(ErrorClass::NotSent, "X"),
        failed(ErrorClass::InvalidNow, "InvalidAutomationSignalException"),
    ];
    let verifies = [
        VerifyOutcome::Absent,
        VerifyOutcome::Delivered,
        VerifyOutcome::NotFound,
    ];
    for s in &finals {
        for secs in [0, 1, 60, 86_400 * 365] {
            for holder in [ME, OTHER] {
                for rnf in [false, true] {
                    let c = Ctx {
                        now: t(T0 + secs),
                        holder,
                        retry: retry(8, rnf),
                        ..ctx()
                    };
                    assert_eq!(decide(Some(s), &c), Next::Done, "{s:?}");
                    for out in &sends {
                        assert_eq!(&after_send(s, out, &c).status, s);
                    }
                    for out in &verifies {
                        assert_eq!(&after_verify(s, out, &c).status, s);
                    }
                    assert_eq!(&invalid_spec(Some(s), "x", &c).status, s);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// restarts

#[test]
fn restart_in_every_phase() {
    // Statuses as a killed process leaves them, read by a fresh one (same or other holder).
    let c = ctx();
    let pending = after_send(&claimed(&c), &failed(ErrorClass::NotSent, "X"), &c).status; // due T0+1
    let sending_own = claimed(&c);
    let sending_other = claimed(&Ctx {
        holder: OTHER,
        ..c.clone()
    });
    let verifying_s = verifying(&c); // due T0+5
    let succeeded = after_send(&claimed(&c), &accepted(), &c).status;
    let failed_s = invalid_spec(None, "bad", &c).status;

    let soon = ctx_at(t(T0 + 2));
    assert!(matches!(decide(Some(&pending), &c), Next::WaitUntil(_)));
    assert!(matches!(decide(Some(&pending), &soon), Next::Claim(_)));
    let w = write_of(decide(Some(&sending_own), &soon)).status;
    assert_eq!(
        w.phase,
        Some(Phase::Verifying),
        "own claim after restart → verify, never resend"
    );
    assert_eq!(
        decide(Some(&sending_other), &soon),
        Next::WaitUntil(t(T0 + 60))
    );
    let w = write_of(decide(Some(&sending_other), &ctx_at(t(T0 + 61)))).status;
    assert_eq!(
        w.phase,
        Some(Phase::Verifying),
        "expired foreign claim → verify"
    );
    assert_eq!(decide(Some(&verifying_s), &c), Next::WaitUntil(t(T0 + 5)));
    assert_eq!(decide(Some(&verifying_s), &ctx_at(t(T0 + 5))), Next::Verify);
    assert_eq!(decide(Some(&succeeded), &soon), Next::Done);
    assert_eq!(decide(Some(&failed_s), &soon), Next::Done);
    // The other replica sees our claims as foreign: live → wait, never touch.
    let theirs = Ctx {
        holder: OTHER,
        ..soon.clone()
    };
    assert_eq!(
        decide(Some(&sending_own), &theirs),
        Next::WaitUntil(t(T0 + 60))
    );
}

#[test]
fn a_crash_between_claim_and_record_never_sends_twice_when_it_landed() {
    let c = ctx();
    // Process A claims and sends (AWS applies it), then dies before recording.
    let s = claimed(&c);
    // Process B, after the deadline: verify first, and AWS shows the signal.
    let (end, sends) = drive(
        Some(s),
        &Ctx {
            holder: OTHER,
            now: t(T0 + 61),
            ..c
        },
        |_| panic!("must not resend"),
        |_| VerifyOutcome::Delivered,
        20,
    );
    assert_eq!(sends, 0);
    assert_succeeded(&end, reason::DELIVERY_VERIFIED);
}

#[test]
fn ambiguous_then_absent_then_delivered() {
    let c = ctx();
    let (end, sends) = drive(
        None,
        &c,
        |n| {
            if n == 1 {
                failed(ErrorClass::Ambiguous, "InternalFailure")
            } else {
                accepted()
            }
        },
        |_| VerifyOutcome::Absent,
        20,
    );
    assert_eq!(sends, 2);
    assert_succeeded(&end, reason::DELIVERED);
    assert_eq!(end.attempts, 2);
    assert_eq!(end.verify_since, Some(at(T0)));
}

// ---------------------------------------------------------------------------------------------
// idempotence and determinism

/// A corpus of statuses in every phase, built by the machine and by hand.
fn corpus() -> Vec<SignalStatus> {
    let c = ctx();
    let mut v = vec![
        SignalStatus::default(),
        claimed(&c),
        claimed(&Ctx {
            holder: OTHER,
            ..c.clone()
        }),
        verifying(&c),
    ];
    for class in [
        ErrorClass::Throttled,
        ErrorClass::NotSent,
        ErrorClass::Limit,
        ErrorClass::Ambiguous,
        ErrorClass::Permission,
        ErrorClass::NotFound,
        ErrorClass::InvalidNow,
        ErrorClass::Invalid,
    ] {
        v.push(after_send(&claimed(&c), &failed(class, "Code"), &c).status);
        v.push(
            after_verify(
                &verifying(&c),
                &VerifyOutcome::Failed(failure(class, "Code")),
                &c,
            )
            .status,
        );
    }
    v.push(after_send(&claimed(&c), &accepted(), &c).status);
    for out in [
        VerifyOutcome::Delivered,
        VerifyOutcome::Absent,
        VerifyOutcome::NotFound,
        VerifyOutcome::NoLongerWaiting { why: "x".into() },
    ] {
        v.push(after_verify(&verifying(&c), &out, &c).status);
    }
    let mut broken = v.clone();
    for s in &mut broken {
        s.conditions.clear();
    }
    v.extend(broken);
    v
}

#[test]
fn deciding_twice_gives_the_same_answer() {
    for s in corpus() {
        for secs in [0, 1, 5, 59, 60, 61, 10_000] {
            let c = ctx_at(t(T0 + secs));
            assert_eq!(decide(Some(&s), &c), decide(Some(&s), &c));
            for out in [
                accepted(),
                failed(ErrorClass::Throttled, "T"),
                failed(ErrorClass::Ambiguous, "A"),
            ] {
                assert_eq!(after_send(&s, &out, &c), after_send(&s, &out, &c));
            }
            assert_eq!(
                after_verify(&s, &VerifyOutcome::Absent, &c),
                after_verify(&s, &VerifyOutcome::Absent, &c)
            );
        }
    }
}

#[test]
fn every_write_is_a_fixed_point() {
    for s in corpus() {
        for secs in [0, 1, 5, 59, 60, 61, 10_000] {
            let c = ctx_at(t(T0 + secs));
            if let Next::Write(tr) = decide(Some(&s), &c) {
                match decide(Some(&tr.status), &c) {
                    Next::Write(again) => panic!(
                        "a write asks for another write: {s:?} → {:?} → {:?}",
                        tr.status, again.status
                    ),
                    Next::Claim(_) if tr.status.phase == Some(Phase::Verifying) => {
                        panic!("verifying must not claim")
                    }
                    _ => {}
                }
            }
        }
    }
}

#[test]
fn machine_statuses_survive_a_round_trip_through_json() {
    // `now` with sub-second precision: the written times are whole seconds, so what we
    // computed is what the API server gives back.
    let c = ctx_at(Timestamp::new(T0, 123_456_789).unwrap());
    let mut all = corpus();
    all.push(claimed(&c));
    all.push(after_send(&claimed(&c), &failed(ErrorClass::Throttled, "T"), &c).status);
    all.push(after_send(&claimed(&c), &failed(ErrorClass::Ambiguous, "A"), &c).status);
    all.push(after_send(&claimed(&c), &accepted(), &c).status);
    for s in all {
        let json = serde_json::to_string(&s).unwrap();
        let back: SignalStatus = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s, "{json}");
    }
    let s = claimed(&c);
    assert_eq!(
        s.last_attempt_time,
        Some(at(T0)),
        "past instants round down"
    );
    assert_eq!(s.claim.unwrap().deadline, at(T0 + 61), "deadlines round up");
}

// ---------------------------------------------------------------------------------------------
// backoff

const S: fn(u64) -> Duration = Duration::from_secs;

#[test]
fn backoff_bounds_with_extreme_jitter() {
    let (init, max) = (S(1), S(300));
    assert_eq!(backoff(1, init, max, 0.0), Duration::from_millis(500));
    let hi = backoff(1, init, max, 0.999);
    assert!(hi < S(1) && hi >= Duration::from_millis(999), "{hi:?}");
    assert_eq!(backoff(4, init, max, 0.0), S(4));
    let hi = backoff(4, init, max, 0.999);
    assert!(hi < S(8) && hi > Duration::from_millis(7990), "{hi:?}");
    // n = 0 counts as 1.
    assert_eq!(backoff(0, init, max, 0.0), backoff(1, init, max, 0.0));
}

#[test]
fn backoff_is_capped_and_never_overflows() {
    let (init, max) = (S(1), S(300));
    for n in [10, 31, 32, 33, 63, 64, 65, 1000, u32::MAX] {
        assert_eq!(backoff(n, init, max, 0.0), S(150), "n={n}");
        let hi = backoff(n, init, max, 0.999);
        assert!(hi < S(300) && hi > S(299), "n={n}: {hi:?}");
    }
    // A huge initial backoff is capped as well.
    assert_eq!(backoff(3, S(u64::MAX / 2), S(300), 0.0), S(150));
    // A scheduled time far in the future saturates instead of panicking.
    assert_eq!(backoff::add(Timestamp::MAX, S(10)), Timestamp::MAX);
}

#[test]
fn backoff_is_monotone_in_n() {
    for jitter in [0.0, 0.25, 0.5, 0.999] {
        let mut last = Duration::ZERO;
        for n in 0..80 {
            let d = backoff(n, S(1), S(300), jitter);
            assert!(d >= last, "n={n} jitter={jitter}");
            last = d;
        }
    }
}

#[test]
fn odd_jitter_values_are_tamed() {
    let (init, max) = (S(1), S(300));
    assert_eq!(backoff(1, init, max, f64::NAN), Duration::from_millis(500));
    assert_eq!(
        backoff(1, init, max, f64::INFINITY),
        Duration::from_millis(500)
    );
    assert_eq!(backoff(1, init, max, -3.0), Duration::from_millis(500));
    assert_eq!(backoff(1, init, max, 1.0), S(1));
    assert_eq!(backoff(1, init, max, 7.0), S(1));
}

#[test]
fn backoff_grows_with_throttled_retries_too() {
    let c = ctx();
    let mut s = claimed(&c);
    s.throttled_retries = 5; // n = 1 + 5 → 32s base
    let p = after_send(&s, &failed(ErrorClass::NotSent, "X"), &c).status;
    assert_eq!(p.next_attempt_time, Some(at(T0 + 24)), "n=6: 16s + 0.5*16s");
}

#[test]
fn next_attempt_time_is_a_whole_second_never_early() {
    let now = Timestamp::new(T0, 900_000_000).unwrap();
    for jitter in [0.0, 0.3, 0.999] {
        let c = Ctx {
            jitter,
            ..ctx_at(now)
        };
        let p = after_send(&claimed(&c), &failed(ErrorClass::NotSent, "X"), &c).status;
        let next = p.next_attempt_time.unwrap().0;
        assert_eq!(next.subsec_nanosecond(), 0);
        let earliest = backoff::add(now, backoff(1, S(1), S(300), jitter));
        assert!(
            next >= earliest && next < backoff::add(earliest, S(1)),
            "{next} vs {earliest}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// conditions

#[test]
fn set_condition_moves_last_transition_time_only_on_a_status_change() {
    let mut conds = Vec::new();
    assert!(set_condition(
        &mut conds,
        READY,
        false,
        "Sending",
        "m1",
        t(T0),
        Some(1)
    ));
    assert_eq!(conds[0].last_transition_time, at(T0));
    // Same status, new reason/message/generation: updated in place, time kept.
    assert!(set_condition(
        &mut conds,
        READY,
        false,
        "Throttled",
        "m2",
        t(T0 + 10),
        Some(2)
    ));
    assert_eq!(
        (conds[0].reason.as_str(), conds[0].message.as_str()),
        ("Throttled", "m2")
    );
    assert_eq!(conds[0].observed_generation, Some(2));
    assert_eq!(conds[0].last_transition_time, at(T0));
    // Nothing new: no change reported.
    assert!(!set_condition(
        &mut conds,
        READY,
        false,
        "Throttled",
        "m2",
        t(T0 + 20),
        Some(2)
    ));
    assert_eq!(conds[0].last_transition_time, at(T0));
    // Status flips: time moves (rounded down to the second).
    let now = Timestamp::new(T0 + 30, 700_000_000).unwrap();
    assert!(set_condition(
        &mut conds,
        READY,
        true,
        "Delivered",
        "m3",
        now,
        Some(2)
    ));
    assert_eq!(
        (
            conds[0].status.as_str(),
            conds[0].last_transition_time.clone()
        ),
        ("True", at(T0 + 30))
    );
    assert_eq!(conds.len(), 1);
}

#[test]
fn kstatus_order_is_stable_and_foreign_conditions_survive() {
    let foreign = Condition {
        type_: "example.com/Other".into(),
        status: "True".into(),
        reason: "Because".into(),
        message: String::new(),
        last_transition_time: at(T0 - 5),
        observed_generation: None,
    };
    let mut conds = vec![foreign.clone()];
    set_condition(&mut conds, STALLED, false, "x", "", t(T0), None);
    set_condition(&mut conds, READY, false, "x", "", t(T0), None);
    set_kstatus(&mut conds, Phase::Sending, "Sending", "m", t(T0), Some(1));
    let types: Vec<&str> = conds.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(types, [READY, RECONCILING, STALLED, "example.com/Other"]);
    assert_eq!(conds[3], foreign);
}

#[test]
fn conditions_for_each_phase() {
    let c = ctx();
    assert_in_progress(&claimed(&c), reason::SENDING);
    assert_in_progress(
        &after_send(&claimed(&c), &failed(ErrorClass::NotSent, "X"), &c).status,
        reason::RETRY_SCHEDULED,
    );
    assert_in_progress(&verifying(&c), reason::VERIFYING);
    assert_succeeded(
        &after_send(&claimed(&c), &accepted(), &c).status,
        reason::DELIVERED,
    );
    assert_failed(&invalid_spec(None, "x", &c).status, reason::INVALID_SPEC);
}

#[test]
fn last_transition_time_is_stable_across_a_retry_cycle() {
    // Sending → throttled (Pending) → Sending → ambiguous (Verifying) → absent → Sending:
    // Reconciling stays True and Ready/Stalled stay False, so no time moves until delivery.
    let mut now = T0;
    let first = claimed(&ctx_at(t(now)));
    let times = |s: &SignalStatus| {
        s.conditions
            .iter()
            .map(|c| c.last_transition_time.clone())
            .collect::<Vec<_>>()
    };
    let start = times(&first);
    assert_eq!(start, vec![at(T0); 3]);
    let mut s = first;
    for step in 0..4 {
        now += 100;
        let c = ctx_at(t(now));
        s = match step {
            0 => after_send(&s, &failed(ErrorClass::Throttled, "T"), &c).status,
            1 => claim_of(decide(Some(&s), &c)).status,
            2 => after_send(&s, &failed(ErrorClass::Ambiguous, "A"), &c).status,
            _ => after_verify(&s, &VerifyOutcome::Absent, &c).status,
        };
        assert_eq!(times(&s), start, "step {step}");
    }
    now += 100;
    let c = ctx_at(t(now));
    let s = claim_of(decide(Some(&s), &c)).status;
    assert_eq!(times(&s), start);
    let done = after_send(&s, &accepted(), &c).status;
    let ready = cond(&done, READY);
    let reconciling = cond(&done, RECONCILING);
    let stalled = cond(&done, STALLED);
    assert_eq!(ready.last_transition_time, at(now));
    assert_eq!(reconciling.last_transition_time, at(now));
    assert_eq!(
        stalled.last_transition_time,
        at(T0),
        "Stalled stayed False all along"
    );
}

// ---------------------------------------------------------------------------------------------
// messages

#[test]
fn aws_messages_that_may_quote_request_values_are_withheld() {
    let c = ctx();
    for class in [ErrorClass::Invalid, ErrorClass::InvalidNow] {
        let f = AwsFailure {
            class,
            code: Some("ValidationException".into()),
            message: "Value 'SECRET-PAYLOAD' at 'input' failed to satisfy constraint".into(),
        };
        let tr = after_send(&claimed(&c), &SendOutcome::Failed(f), &c);
        let text = format!("{:?} {:?}", tr.status, tr.event);
        assert!(!text.contains("SECRET"), "{text}");
        assert!(tr
            .status
            .message
            .as_deref()
            .unwrap()
            .contains("ValidationException"));
    }
}

#[test]
fn messages_are_one_short_line() {
    let c = ctx();
    let f = AwsFailure {
        class: ErrorClass::Permission,
        code: None,
        message: format!("line1\nline2 {}", "x".repeat(1000)),
    };
    let s = after_send(&claimed(&c), &SendOutcome::Failed(f), &c).status;
    let msg = s.message.unwrap();
    assert!(!msg.contains('\n'));
    assert!(msg.len() < 400, "{}", msg.len());
    assert!(msg.contains("line1 line2"));
    // No code and no message: the class in words.
    let f = AwsFailure {
        class: ErrorClass::NotSent,
        code: None,
        message: String::new(),
    };
    let s = after_send(&claimed(&c), &SendOutcome::Failed(f), &c).status;
    assert!(s.message.unwrap().contains("request not sent"));
    // A message that already names the code does not repeat it.
    let s = after_send(&claimed(&c), &failed(ErrorClass::NotSent, "Xyz"), &c).status;
    assert_eq!(s.message.unwrap().matches("Xyz").count(), 1);
}

#[test]
fn error_class_names_are_stable() {
    let names: Vec<&str> = [
        ErrorClass::Throttled,
        ErrorClass::NotSent,
        ErrorClass::Limit,
        ErrorClass::Ambiguous,
        ErrorClass::Permission,
        ErrorClass::NotFound,
        ErrorClass::InvalidNow,
        ErrorClass::Invalid,
    ]
    .iter()
    .map(|c| c.as_str())
    .collect();
    assert_eq!(
        names,
        [
            "Throttled",
            "NotSent",
            "Limit",
            "Ambiguous",
            "Permission",
            "NotFound",
            "InvalidNow",
            "Invalid"
        ]
    );
}

#[test]
fn a_signal_past_not_after_is_never_claimed() {
    let c = Ctx {
        not_after: Some(t(T0)),
        ..ctx()
    };
    let Next::Write(tr) = decide(None, &c) else {
        panic!("expected a write")
    };
    assert_failed(&tr.status, reason::EXPIRED);
    assert_eq!(tr.status.attempts, 0);
    // Still in time a second earlier.
    let early = Ctx {
        now: t(T0 - 1),
        ..c.clone()
    };
    assert!(matches!(decide(None, &early), Next::Claim(_)));
    // A pending retry due after notAfter expires instead of sending.
    let pending = after_send(&claimed(&early), &failed(ErrorClass::NotSent, "X"), &early).status;
    let later = Ctx {
        now: t(T0 + 3600),
        ..c.clone()
    };
    let Next::Write(tr) = decide(Some(&pending), &later) else {
        panic!("expected a write")
    };
    assert_failed(&tr.status, reason::EXPIRED);
    // A verification that finds the signal absent after notAfter expires it too.
    let absent = after_verify(&verifying(&early), &VerifyOutcome::Absent, &later).status;
    assert_failed(&absent, reason::EXPIRED);
}

#[test]
fn absent_is_read_again_after_the_recheck_wait_before_sending_again() {
    let c = Ctx {
        verify_recheck: Duration::from_secs(10),
        ..ctx()
    };
    let first = after_verify(&verifying(&c), &VerifyOutcome::Absent, &c);
    assert_eq!(first.status.phase, Some(Phase::Verifying));
    assert_eq!(first.status.absent_reads, 1);
    assert_eq!(first.status.next_attempt_time, Some(at(T0 + 10)));
    assert!(first.event.is_none());
    assert_eq!(decide(Some(&first.status), &c), Next::WaitUntil(t(T0 + 10)));
    let due = Ctx {
        now: t(T0 + 10),
        ..c.clone()
    };
    assert_eq!(decide(Some(&first.status), &due), Next::Verify);
    // The lagging write shows up on the second read: delivered, never resent.
    let seen = after_verify(&first.status, &VerifyOutcome::Delivered, &due).status;
    assert_succeeded(&seen, reason::DELIVERY_VERIFIED);
    // Absent twice: sent again, and the count starts over.
    let again = after_verify(&first.status, &VerifyOutcome::Absent, &due).status;
    assert_eq!((again.phase, again.absent_reads), (Some(Phase::Pending), 0));
}

#[test]
fn already_delivered_succeeds_without_an_attempt() {
    let c = ctx();
    let tr = already_delivered(None, "a receipt of an earlier object", &c);
    assert_succeeded(&tr.status, reason::ALREADY_DELIVERED);
    assert_eq!(tr.status.attempts, 0);
    assert_eq!(tr.event.as_ref().unwrap().reason, "AlreadyDelivered");
    assert_eq!(decide(Some(&tr.status), &c), Next::Done);
    // Never undoes a finished signal.
    let failed_before = invalid_spec(None, "bad", &c).status;
    assert_eq!(
        already_delivered(Some(&failed_before), "x", &c).status,
        failed_before
    );
}

#[test]
fn the_requester_is_recorded_once_and_kept() {
    let c = Ctx {
        requested_by: Some("alice@example.com"),
        ..ctx()
    };
    let claim = claim_of(decide(None, &c));
    assert_eq!(
        claim.status.requested_by.as_deref(),
        Some("alice@example.com")
    );
    let other = Ctx {
        requested_by: Some("mallory"),
        ..ctx()
    };
    let done = after_send(&claim.status, &accepted(), &other).status;
    assert_eq!(done.requested_by.as_deref(), Some("alice@example.com"));
}

#[test]
fn a_policy_denial_fails_for_good_and_an_assume_role_failure_is_retried() {
    let c = ctx();
    let tr = policy_denied(None, "namespace a: spec.domain \"x\" not allowed", &c);
    assert_failed(&tr.status, reason::POLICY_DENIED);
    assert_eq!(tr.status.attempts, 0);
    assert_eq!(decide(Some(&tr.status), &c), Next::Done);
    let refused = after_send(
        &claimed(&c),
        &failed(ErrorClass::Permission, ASSUME_ROLE_FAILED_CODE),
        &c,
    );
    assert_eq!(refused.status.phase, Some(Phase::Pending));
    assert_in_progress(&refused.status, reason::ASSUME_ROLE_FAILED);
}

// ---------------------------------------------------------------------------------------------
// before and around the send

/// The receipt and the AWS side are asked until this object may have sent something: a check
/// that failed (a NotSent attempt, given back) is made again, never skipped.
#[test]
fn the_earlier_delivery_check_is_due_until_something_may_have_been_sent() {
    assert!(needs_earlier_check(None));
    let first = claim_of(decide(None, &ctx()));
    assert!(!needs_earlier_check(Some(&first.status)), "a live claim");
    let failed_check = failed_before_send(
        &SignalStatus::default(),
        &failure(ErrorClass::Ambiguous, "ServiceUnavailable"),
        &ctx(),
    );
    assert_eq!(failed_check.status.phase, Some(Phase::Pending));
    assert_eq!(failed_check.status.transient_retries, 1);
    assert!(needs_earlier_check(Some(&failed_check.status)));
    let throttled = after_send(
        &first.status,
        &failed(ErrorClass::Throttled, "Throttling"),
        &ctx(),
    );
    assert!(needs_earlier_check(Some(&throttled.status)));
    let ambiguous = after_send(
        &first.status,
        &failed(ErrorClass::Ambiguous, "InternalFailure"),
        &ctx(),
    );
    assert!(!needs_earlier_check(Some(&ambiguous.status)));
    let delivered = after_send(&first.status, &accepted(), &ctx());
    assert!(!needs_earlier_check(Some(&delivered.status)));
}

/// A look-up that may or may not have reached AWS changed nothing there: not sent, the attempt
/// given back, never Verifying.
#[test]
fn a_failure_before_the_send_is_an_attempt_that_sent_nothing() {
    let tr = failed_before_send(
        &SignalStatus::default(),
        &failure(ErrorClass::Ambiguous, "InternalFailure"),
        &ctx(),
    );
    assert_eq!(tr.status.phase, Some(Phase::Pending));
    assert_eq!(tr.status.attempts, 0);
    assert!(tr.status.verify_since.is_none());
    assert!(tr.status.claim.is_none());
    let refused = failed_before_send(
        &SignalStatus::default(),
        &failure(ErrorClass::Invalid, "ValidationException"),
        &ctx(),
    );
    assert_eq!(refused.status.phase, Some(Phase::Failed));
}

#[test]
fn a_send_starts_only_while_the_claim_outlives_it() {
    let now = t(T0);
    let timeout = Duration::from_secs(22);
    assert!(may_send(t(T0 + 60), now, timeout));
    assert!(
        may_send(t(T0 + 27), now, timeout),
        "timeout plus skew fits exactly"
    );
    assert!(!may_send(t(T0 + 26), now, timeout));
    assert!(!may_send(t(T0 - 1), now, timeout), "an expired claim");
    let claimed = claim_of(decide(None, &ctx()));
    let tr = after_send(
        &claimed.status,
        &SendOutcome::Failed(claim_too_short()),
        &ctx(),
    );
    assert_eq!(tr.status.phase, Some(Phase::Pending));
    assert_eq!(
        tr.status.attempts, 0,
        "nothing was sent: the attempt is given back"
    );
    assert!(tr.status.verify_since.is_none());
}

#[test]
fn a_receipt_says_delivered_attempted_by_an_earlier_object_or_nothing_new() {
    let attempted = Some(t(T0 - 100));
    assert_eq!(
        read_receipt(Some("new"), Some("old"), attempted, Some(t(T0 - 90))),
        ReceiptSays::Delivered(t(T0 - 90))
    );
    assert_eq!(
        read_receipt(Some("new"), Some("old"), attempted, None),
        ReceiptSays::AttemptedBefore(t(T0 - 100))
    );
    // Receipts from before uids were recorded are some earlier object's.
    assert_eq!(
        read_receipt(Some("new"), None, attempted, None),
        ReceiptSays::AttemptedBefore(t(T0 - 100))
    );
    assert_eq!(
        read_receipt(Some("new"), Some("new"), attempted, None),
        ReceiptSays::Nothing
    );
    assert_eq!(
        read_receipt(Some("new"), Some("new"), attempted, Some(t(T0))),
        ReceiptSays::Delivered(t(T0))
    );
}

/// An object created again while its predecessor's send had an unknown outcome verifies from
/// that attempt before anything is sent.
#[test]
fn an_earlier_objects_attempt_of_unknown_fate_is_verified_first() {
    let tr = verify_earlier_attempt(None, t(T0 - 100), &ctx());
    assert_eq!(tr.status.phase, Some(Phase::Verifying));
    assert_eq!(tr.status.verify_since, Some(at(T0 - 100)));
    assert_eq!(tr.status.attempts, 0);
    assert_eq!(tr.event.as_ref().map(|e| e.reason), Some("Verifying"));
    assert!(!needs_earlier_check(Some(&tr.status)));
    // Then decide: wait out the settle time, then verify; never a claim first.
    let next = decide(Some(&tr.status), &ctx());
    assert!(matches!(next, Next::WaitUntil(_)), "{next:?}");
    let later = ctx_at(t(T0 + 10));
    assert_eq!(decide(Some(&tr.status), &later), Next::Verify);
    // A finished signal stays as it is.
    let done = after_send(&claim_of(decide(None, &ctx())).status, &accepted(), &ctx());
    assert_eq!(
        verify_earlier_attempt(Some(&done.status), t(T0), &ctx()).status,
        done.status
    );
}

/// The operator's own refusals (no AWS code) name their cause in the status and the Event;
/// AWS's validation messages, which may quote request values, are still dropped.
#[test]
fn every_failure_names_its_cause() {
    let claimed = claim_of(decide(None, &ctx()));
    let own = AwsFailure {
        class: ErrorClass::Invalid,
        code: None,
        message: "region zz-fake-1 is not a region of any AWS partition".into(),
    };
    let tr = after_send(&claimed.status, &SendOutcome::Failed(own), &ctx());
    let msg = tr.status.message.clone().unwrap_or_default();
    assert!(
        msg.contains("zz-fake-1 is not a region of any AWS partition"),
        "{msg}"
    );
    assert!(tr
        .event
        .as_ref()
        .is_some_and(|e| e.note.contains("AWS partition")));
    let from_aws = AwsFailure {
        class: ErrorClass::Invalid,
        code: Some("ValidationException".into()),
        message: "Value 'secret-input' at 'input' failed to satisfy constraint".into(),
    };
    let tr = after_send(&claimed.status, &SendOutcome::Failed(from_aws), &ctx());
    let msg = tr.status.message.unwrap_or_default();
    assert!(
        msg.contains("ValidationException") && !msg.contains("secret-input"),
        "{msg}"
    );
    let full = crate::aws::clients::NoClients::Full("clients for 64 regions are in use".into());
    let tr = after_send(
        &claimed.status,
        &SendOutcome::Failed(full.failure()),
        &ctx(),
    );
    assert_eq!(
        tr.status.phase,
        Some(Phase::Pending),
        "a full table is retried"
    );
    assert!(tr.status.message.unwrap_or_default().contains("64 regions"));
}

/// A receipt settles a verification only for a delivery recorded since the attempts verified.
#[test]
fn a_receipt_settles_a_verification_only_for_a_delivery_since_the_attempts() {
    let since = t(T0);
    assert!(receipt_settles(Some(t(T0 + 3)), since));
    assert!(
        receipt_settles(Some(t(T0 - 5)), since),
        "within the clock skew"
    );
    assert!(
        !receipt_settles(Some(t(T0 - 6)), since),
        "an earlier delivery"
    );
    assert!(!receipt_settles(None, since), "only attempted");
}

// --- Retry requests (`kubectl signalman retry`) ---

/// A signal throttled on its first attempt at T0, waiting for a long backoff.
fn waiting_long(c: &Ctx) -> SignalStatus {
    let claimed = claimed(c);
    let mut s = after_send(
        &claimed,
        &failed(ErrorClass::Throttled, "ThrottlingException"),
        c,
    )
    .status;
    s.next_attempt_time = Some(at(T0 + 3600));
    s
}

#[test]
fn a_retry_request_newer_than_the_last_attempt_ends_the_backoff_once() {
    let waiting = waiting_long(&ctx());
    assert_eq!(waiting.phase, Some(Phase::Pending));
    // Without a request the signal waits out its backoff.
    let later = ctx_at(t(T0 + 10));
    assert_eq!(
        decide(Some(&waiting), &later),
        Next::WaitUntil(t(T0 + 3600))
    );
    // A request made after the last attempt: one write, which makes the signal due now.
    let asked = Ctx {
        retry_requested: Some(t(T0 + 5)),
        ..later.clone()
    };
    let tr = write_of(decide(Some(&waiting), &asked));
    assert_eq!(tr.status.phase, Some(Phase::Pending));
    assert_eq!(tr.status.next_attempt_time, None);
    assert_eq!(
        tr.status.attempts, waiting.attempts,
        "nothing spent by asking"
    );
    let event = tr.event.as_ref().expect("an event");
    assert_eq!(event.reason, RETRY_REQUESTED_EVENT);
    assert!(!event.warning);
    assert_in_progress(&tr.status, reason::THROTTLED);
    // What was written is claimed at once, through the usual claim.
    let claim = claim_of(decide(Some(&tr.status), &asked));
    assert_eq!(claim.status.attempts, waiting.attempts + 1);
    // Once that attempt has been made, the same request is spent.
    let again = after_send(
        &claim.status,
        &failed(ErrorClass::Throttled, "ThrottlingException"),
        &asked,
    )
    .status;
    assert!(matches!(decide(Some(&again), &asked), Next::WaitUntil(_)));
}

#[test]
fn a_retry_request_older_than_the_last_attempt_or_from_the_future_is_ignored() {
    let waiting = waiting_long(&ctx());
    let later = ctx_at(t(T0 + 10));
    for requested in [T0 - 60, T0, T0 + 11, T0 + 999] {
        let c = Ctx {
            retry_requested: Some(t(requested)),
            ..later.clone()
        };
        assert_eq!(
            decide(Some(&waiting), &c),
            Next::WaitUntil(t(T0 + 3600)),
            "requested at T0{:+}",
            requested - T0
        );
    }
    // Within the same second as the last attempt: the claim it would lead to is not newer.
    let c = Ctx {
        retry_requested: Some(Timestamp::from_millisecond(T0 * 1000 + 700).unwrap()),
        ..later
    };
    assert!(matches!(decide(Some(&waiting), &c), Next::WaitUntil(_)));
}

#[test]
fn a_retry_request_never_skips_the_settle_time_or_a_recheck_of_verification() {
    let c = ctx();
    let claimed = claimed(&c);
    let mut verifying = after_send(
        &claimed,
        &failed(ErrorClass::Ambiguous, "InternalFailure"),
        &c,
    )
    .status;
    assert_eq!(verifying.phase, Some(Phase::Verifying));
    verifying.next_attempt_time = Some(at(T0 + 3600));
    // Asked early: verification moves to the claim's deadline plus the settle time, no earlier.
    let asked = Ctx {
        retry_requested: Some(t(T0 + 1)),
        ..ctx_at(t(T0 + 2))
    };
    let tr = write_of(decide(Some(&verifying), &asked));
    let safe = T0 + (TTL + SETTLE).as_secs() as i64;
    assert_eq!(tr.status.next_attempt_time, Some(at(safe)));
    assert_eq!(tr.status.phase, Some(Phase::Verifying));
    assert_eq!(
        tr.event.as_ref().map(|e| e.reason),
        Some(RETRY_REQUESTED_EVENT)
    );
    // A fixed point: deciding again on what was written waits for it.
    assert_eq!(decide(Some(&tr.status), &asked), Next::WaitUntil(t(safe)));
    // Asked late: verified at once.
    let late = Ctx {
        retry_requested: Some(t(T0 + 100)),
        ..ctx_at(t(T0 + 200))
    };
    let tr = write_of(decide(Some(&verifying), &late));
    assert_eq!(tr.status.next_attempt_time, Some(at(T0 + 200)));
    assert_eq!(decide(Some(&tr.status), &ctx_at(t(T0 + 200))), Next::Verify);
    // During the recheck after a first "absent", the request changes nothing.
    let mut rechecking = verifying.clone();
    rechecking.absent_reads = 1;
    assert_eq!(
        decide(Some(&rechecking), &late),
        Next::WaitUntil(t(T0 + 3600))
    );
}

#[test]
fn a_retry_request_does_nothing_for_finished_or_sending_signals() {
    let c = ctx();
    let claimed = claimed(&c);
    let asked = Ctx {
        retry_requested: Some(t(T0 + 100)),
        ..ctx_at(t(T0 + 200))
    };
    let delivered = after_send(&claimed, &accepted(), &c).status;
    assert_eq!(decide(Some(&delivered), &asked), Next::Done);
    let failed_for_good = after_send(
        &claimed,
        &failed(ErrorClass::Invalid, "ValidationException"),
        &c,
    )
    .status;
    assert_eq!(decide(Some(&failed_for_good), &asked), Next::Done);
    let live = Ctx {
        holder: OTHER,
        retry_requested: Some(t(T0)),
        ..ctx_at(t(T0 + 1))
    };
    assert!(matches!(decide(Some(&claimed), &live), Next::WaitUntil(_)));
}

#[test]
fn a_retry_request_ends_one_wait_of_a_verification_that_keeps_failing() {
    let c = ctx();
    let claimed = claimed(&c);
    let mut verifying = after_send(
        &claimed,
        &failed(ErrorClass::Ambiguous, "InternalFailure"),
        &c,
    )
    .status;
    verifying.next_attempt_time = Some(at(T0 + 3600));
    let asked = Ctx {
        retry_requested: Some(t(T0 + 100)),
        ..ctx_at(t(T0 + 200))
    };
    let hastened = write_of(decide(Some(&verifying), &asked)).status;
    assert_eq!(hastened.retry_request_honoured, Some(at(T0 + 100)));
    assert_eq!(decide(Some(&hastened), &asked), Next::Verify);
    // The verification's read fails (AWS unreachable): it waits out its backoff again, and the
    // same request does not end that wait too.
    let outcome = VerifyOutcome::Failed(failure(ErrorClass::NotSent, "ConnectionRefused"));
    let failed_read = after_verify(&hastened, &outcome, &asked).status;
    assert_eq!(failed_read.phase, Some(Phase::Verifying));
    let next = failed_read.next_attempt_time.as_ref().expect("a backoff").0;
    assert!(next > t(T0 + 200));
    assert_eq!(decide(Some(&failed_read), &asked), Next::WaitUntil(next));
    // A newer request ends it.
    let again = Ctx {
        retry_requested: Some(t(T0 + 200)),
        ..asked
    };
    assert!(matches!(decide(Some(&failed_read), &again), Next::Write(_)));
}
