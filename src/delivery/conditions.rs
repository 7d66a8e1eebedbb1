//! kstatus conditions (docs/design.md, "Conditions and reasons"): `Ready`, `Reconciling`,
//! `Stalled`, always in that order.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use super::backoff::floor_second;
use crate::api::{Phase, SignalStatus};

/// True once the signal is delivered.
pub const READY: &str = "Ready";
/// True while the signal is pending, in flight, being verified or waiting for a retry.
pub const RECONCILING: &str = "Reconciling";
/// True when the signal has failed for good.
pub const STALLED: &str = "Stalled";

fn status_str(value: bool) -> &'static str {
    if value {
        "True"
    } else {
        "False"
    }
}

/// Set one condition, inserting it when missing.
///
/// `lastTransitionTime` changes only when the condition's status value changes (or when the
/// condition is new); reason, message and observedGeneration are updated in place. A condition
/// keeps its position in the list; a new one is appended. Returns whether anything changed.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    now: Timestamp,
    generation: Option<i64>,
) -> bool {
    let status = status_str(status);
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            let before = c.clone();
            if c.status != status {
                c.status = status.to_string();
                c.last_transition_time = Time(floor_second(now));
            }
            reason.clone_into(&mut c.reason);
            message.clone_into(&mut c.message);
            c.observed_generation = generation;
            *c != before
        }
        None => {
            conditions.push(Condition {
                type_: type_.to_string(),
                status: status.to_string(),
                reason: reason.to_string(),
                message: message.to_string(),
                last_transition_time: Time(floor_second(now)),
                observed_generation: generation,
            });
            true
        }
    }
}

/// The status values (Ready, Reconciling, Stalled) a phase implies.
pub fn expected(phase: Phase) -> [(&'static str, bool); 3] {
    let (ready, reconciling, stalled) = match phase {
        Phase::Succeeded => (true, false, false),
        Phase::Failed => (false, false, true),
        Phase::Pending | Phase::Sending | Phase::Verifying => (false, true, false),
    };
    [
        (READY, ready),
        (RECONCILING, reconciling),
        (STALLED, stalled),
    ]
}

fn rank(type_: &str) -> usize {
    match type_ {
        READY => 0,
        RECONCILING => 1,
        STALLED => 2,
        _ => 3,
    }
}

/// Set the three kstatus conditions for `phase`, all with the same reason and message, and
/// order them Ready, Reconciling, Stalled (conditions of other types follow, in their order).
pub fn set_kstatus(
    conditions: &mut Vec<Condition>,
    phase: Phase,
    reason: &str,
    message: &str,
    now: Timestamp,
    generation: Option<i64>,
) {
    for (type_, value) in expected(phase) {
        set_condition(conditions, type_, value, reason, message, now, generation);
    }
    conditions.sort_by_key(|c| rank(&c.type_));
}

/// True when the status's conditions agree with its phase: the three kstatus conditions are
/// present with the values the phase implies, non-empty reasons, and (when the object's
/// generation is known) the status and every one of them observed that generation.
pub fn consistent(status: &SignalStatus, generation: Option<i64>) -> bool {
    let phase = status.phase.unwrap_or(Phase::Pending);
    if generation.is_some() && status.observed_generation != generation {
        return false;
    }
    expected(phase).iter().all(|(type_, value)| {
        status.conditions.iter().any(|c| {
            c.type_ == *type_
                && c.status == status_str(*value)
                && !c.reason.is_empty()
                && (generation.is_none() || c.observed_generation == generation)
        })
    })
}

/// The reason currently carried by condition `type_`, if it has status `value`.
pub fn reason_of<'s>(status: &'s SignalStatus, type_: &str, value: bool) -> Option<&'s str> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status_str(value) && !c.reason.is_empty())
        .map(|c| c.reason.as_str())
}
