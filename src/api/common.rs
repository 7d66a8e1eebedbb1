//! Types shared by both signal kinds: the retry policy and the status.
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Annotation asking for the next attempt now (an RFC 3339 time, written by `kubectl signalman
/// retry`): a signal waiting out a backoff whose last attempt is older than this time is
/// attempted at once, through the usual claim, policy check and verification
/// ([`crate::delivery::hasten`]). Finished signals ignore it.
pub const RETRY_NOW_ANNOTATION: &str = "signalman.dev/retry-now";

/// The time of the retry request in `metadata`'s [`RETRY_NOW_ANNOTATION`]; `None` when absent
/// or not an RFC 3339 time.
pub fn retry_now_requested(
    metadata: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<k8s_openapi::jiff::Timestamp> {
    metadata
        .annotations
        .as_ref()?
        .get(RETRY_NOW_ANNOTATION)?
        .trim()
        .parse()
        .ok()
}

/// Default of `spec.retry.maxAttempts`.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;
/// Default of `spec.retry.initialBackoffSeconds`.
pub const DEFAULT_INITIAL_BACKOFF_SECONDS: u32 = 1;
/// Default of `spec.retry.maxBackoffSeconds`.
pub const DEFAULT_MAX_BACKOFF_SECONDS: u32 = 300;
/// Default of `spec.retry.maxDurationSeconds`: a day outlasts every regional AWS outage on
/// record, and an approval a day late is still meaningful; `spec.notAfter` bounds it tighter.
pub const DEFAULT_MAX_DURATION_SECONDS: u32 = 86_400;

/// `spec.retry`: every field optional; the defaults are the constants above (the retry policy in
/// docs/design.md explains them).
///
/// The bounds are in the CRD schema (and so enforced by the API server); the cross-field rule
/// is a CEL rule that also runs client-side. The unsigned fields are described to the schema
/// as int32/int64: the API server warns about the format `uint32`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[x_kube(
    cel,
    validation = Rule::new(
        "(has(self.maxBackoffSeconds) ? self.maxBackoffSeconds : 300) >= (has(self.initialBackoffSeconds) ? self.initialBackoffSeconds : 1)"
    ).message("retry.maxBackoffSeconds (default 300) must be at least retry.initialBackoffSeconds (default 1)")
)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Attempts before giving up with reason RetriesExhausted (default 8, 1..100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<i32>", range(min = 1, max = 100))]
    pub max_attempts: Option<u32>,
    /// First backoff in seconds (default 1, 1..3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<i32>", range(min = 1, max = 3600))]
    pub initial_backoff_seconds: Option<u32>,
    /// Upper bound of the backoff in seconds (default 300, 1..86400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<i32>", range(min = 1, max = 86400))]
    pub max_backoff_seconds: Option<u32>,
    /// Retry "execution not found" until attempts run out instead of failing at once (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_not_found: Option<bool>,
    /// How long failures that heal by themselves (throttling, HTTP 5xx, connection errors, timeouts, expired or missing credentials) are retried, in seconds from the first attempt (default 86400, 60..31536000). They spend no attempt; maxAttempts bounds the failures that cannot heal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<i32>", range(min = 60, max = 31_536_000))]
    pub max_duration_seconds: Option<u32>,
}

/// A [`RetryPolicy`] with the defaults applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResolvedRetry {
    /// At least 1.
    pub max_attempts: u32,
    /// At least one second.
    pub initial_backoff: Duration,
    /// Never below `initial_backoff`.
    pub max_backoff: Duration,
    pub retry_not_found: bool,
    /// How long transient failures are retried, from the first attempt.
    pub max_duration: Duration,
}

impl Default for ResolvedRetry {
    fn default() -> Self {
        RetryPolicy::default().resolved()
    }
}

impl RetryPolicy {
    /// The policy with the defaults filled in (maxAttempts 8, initial 1s, max 300s,
    /// retryNotFound false, maxDurationSeconds 86400).
    ///
    /// The schema already bounds every field; this is still total for an object that slipped past
    /// it: attempts and the initial backoff are at least 1, and the maximum backoff is never below
    /// the initial one.
    pub fn resolved(&self) -> ResolvedRetry {
        let max_attempts = self.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS).max(1);
        let initial = self
            .initial_backoff_seconds
            .unwrap_or(DEFAULT_INITIAL_BACKOFF_SECONDS)
            .max(1);
        let max = self
            .max_backoff_seconds
            .unwrap_or(DEFAULT_MAX_BACKOFF_SECONDS)
            .max(initial);
        ResolvedRetry {
            max_attempts,
            initial_backoff: Duration::from_secs(u64::from(initial)),
            max_backoff: Duration::from_secs(u64::from(max)),
            retry_not_found: self.retry_not_found.unwrap_or(false),
            max_duration: Duration::from_secs(u64::from(
                self.max_duration_seconds
                    .unwrap_or(DEFAULT_MAX_DURATION_SECONDS)
                    .max(1),
            )),
        }
    }
}

/// Where a signal is in its life: Pending (waiting for its first or next attempt), Sending (an
/// attempt is claimed and may be in flight), Verifying (an attempt's outcome is unknown and AWS is
/// being asked whether the signal arrived), Succeeded (delivered; final) or Failed (will never be
/// delivered; final). Absent until the operator first writes the status. The life cycle is
/// described in docs/design.md (status and phases).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    Pending,
    Sending,
    Verifying,
    Succeeded,
    Failed,
}

/// Transition rule on the status: a finished phase (Succeeded, Failed) never changes, so a
/// delivered signal cannot be blanked back to Pending and sent again.
pub const FINISHED_RULE: &str = "!has(oldSelf.phase) || !(oldSelf.phase in ['Succeeded', 'Failed']) || (has(self.phase) && self.phase == oldSelf.phase)";
/// Message of [`FINISHED_RULE`].
pub const FINISHED_MESSAGE: &str =
    "status.phase Succeeded or Failed is final: a finished signal's phase never changes";
/// Transition rule on the status: the spent budget never shrinks. The operator gives an attempt
/// back after throttling or a failure that heals by itself, but counts it in throttledRetries or
/// transientRetries instead, so the sum of the three only grows.
pub const SPENT_RULE: &str = "(has(self.attempts) ? self.attempts : 0) + (has(self.throttledRetries) ? self.throttledRetries : 0) + (has(self.transientRetries) ? self.transientRetries : 0) >= (has(oldSelf.attempts) ? oldSelf.attempts : 0) + (has(oldSelf.throttledRetries) ? oldSelf.throttledRetries : 0) + (has(oldSelf.transientRetries) ? oldSelf.transientRetries : 0)";
/// Message of [`SPENT_RULE`].
pub const SPENT_MESSAGE: &str =
    "status.attempts never decreases: attempts + throttledRetries + transientRetries may only grow";
/// Transition rule on the status: the requester, once recorded, never changes.
pub const REQUESTED_BY_RULE: &str =
    "!has(oldSelf.requestedBy) || (has(self.requestedBy) && self.requestedBy == oldSelf.requestedBy)";
/// Message of [`REQUESTED_BY_RULE`].
pub const REQUESTED_BY_MESSAGE: &str = "status.requestedBy is immutable once set";

/// The claim an operator writes before it calls AWS: who is sending, and until when no other
/// replica may send. Present only in phase Sending (the exactly-once protocol in docs/design.md).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Claim {
    /// Identity of the operator replica that claimed the attempt (its pod name).
    pub holder: String,
    /// Until when the claim is live (RFC 3339). Past it, a replica that finds the signal still in Sending treats the attempt as abandoned and verifies with AWS before sending again.
    pub deadline: Time,
}

/// One step execution of an Automation execution, as the claim recorded it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepRef {
    /// The step's name in the runbook.
    #[schemars(length(max = 256))]
    pub name: String,
    /// The step execution's id; empty when the step had not run yet at the claim (StartStep).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 256))]
    pub step_execution_id: String,
    /// How many executions of this step the execution had at the claim: a later one is another round of a looping runbook.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(with = "i64", range(min = 0))]
    pub runs_before: u32,
}

/// What the operator has done with the signal, written by the operator alone (status subresource). Until the operator writes its first status, the API server serves observedGeneration 0 and attempts 0, so health checks (kstatus, Flux, Argo CD) read a signal the operator has not yet seen as in progress rather than as done.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[schemars(extend("default" = {"observedGeneration": 0}))]
#[x_kube(
    validation = Rule::new(FINISHED_RULE).message(FINISHED_MESSAGE),
    validation = Rule::new(SPENT_RULE).message(SPENT_MESSAGE),
    validation = Rule::new(REQUESTED_BY_RULE).message(REQUESTED_BY_MESSAGE),
)]
#[serde(rename_all = "camelCase")]
pub struct SignalStatus {
    /// The metadata.generation the operator last acted on; 0 until the operator has seen the object. Lower than metadata.generation: the status is not current yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pending, Sending, Verifying, Succeeded or Failed; absent until the operator first writes the status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Attempts spent so far (an attempt refused by AWS throttling is given back).
    #[serde(default)]
    #[schemars(with = "i64", range(min = 0))]
    pub attempts: u32,
    /// Retries that did not spend an attempt (AWS throttling); they still lengthen the backoff.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(with = "i64", range(min = 0))]
    pub throttled_retries: u32,
    /// Retries after failures that heal by themselves (HTTP 5xx, connection errors, timeouts, credential errors): they spend no attempt, are bounded by spec.retry.maxDurationSeconds, and lengthen the backoff.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(with = "i64", range(min = 0))]
    pub transient_retries: u32,
    /// When the first attempt was claimed (RFC 3339); spec.retry.maxDurationSeconds counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_attempt_time: Option<Time>,
    /// Verifications in a row that found the signal absent. AWS shows a delivered signal only after a delay, so a first "absent" is read again after a longer wait before the signal is sent again.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(with = "i64", range(min = 0))]
    pub absent_reads: u32,
    /// When the last attempt was claimed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_time: Option<Time>,
    /// When the next attempt or verification is due (RFC 3339); absent when nothing is scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_time: Option<Time>,
    /// The retry request (annotation signalman.dev/retry-now, RFC 3339) the operator last honoured by ending a wait early; each request is honoured once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_request_honoured: Option<Time>,
    /// The claim of the attempt in flight (phase Sending only): which replica sends, and until when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<Claim>,
    /// Claim time of the earliest attempt that may have reached AWS without a confirmed answer (RFC 3339); verification looks for the signal from here on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_since: Option<Time>,
    /// When AWS accepted the signal, or when verification found it delivered (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_time: Option<Time>,
    /// WorkflowSignal only: the run that was signalled (resolved when the first attempt is claimed if spec.runId is empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// AutomationSignal only: the AWS principal the signal is sent as (an IAM user, or a role for a role session; never the session), recorded at the claim. Verification looks for this principal's decision, whatever session a later process or replica signs with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub principal: Option<String>,
    /// AutomationSignal only: the step execution the signal is for, as the execution showed it at the claim (the aws:approve step waiting for Approve and Reject, the paused step for Resume). Verification reads this step execution only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<StepRef>,
    /// The AWS request id of the accepted call, for AWS support and CloudTrail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The AWS error code of the last failed call, if any (e.g. ThrottlingException).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_code: Option<String>,
    /// The last outcome in words; never quotes the input or the payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Who created the signal: the API server's user name of the request, copied from the annotation signalman.dev/requested-by (stamped at admission). Never changes once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub requested_by: Option<String>,
    /// kstatus conditions, one per type, in this order: Ready (True once delivered), Reconciling (True while pending, sending, verifying or waiting to retry), Stalled (True once failed for good). All three carry the same reason (e.g. Delivered, RetriesExhausted) and message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_request_is_read_from_its_annotation() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
        let with = |v: &str| ObjectMeta {
            annotations: Some([(RETRY_NOW_ANNOTATION.to_string(), v.to_string())].into()),
            ..Default::default()
        };
        assert_eq!(
            retry_now_requested(&with("2026-12-05T08:00:00Z")),
            Some("2026-12-05T08:00:00Z".parse().unwrap())
        );
        assert_eq!(
            retry_now_requested(&with("2026-12-05T10:00:00+02:00")),
            Some("2026-12-05T08:00:00Z".parse().unwrap())
        );
        assert_eq!(retry_now_requested(&with("now")), None);
        assert_eq!(retry_now_requested(&ObjectMeta::default()), None);
    }

    #[test]
    fn resolved_applies_the_defaults() {
        assert_eq!(
            RetryPolicy::default().resolved(),
            ResolvedRetry {
                max_attempts: 8,
                initial_backoff: Duration::from_secs(1),
                max_backoff: Duration::from_secs(300),
                retry_not_found: false,
                max_duration: Duration::from_secs(86_400),
            }
        );
        let all = RetryPolicy {
            max_attempts: Some(3),
            initial_backoff_seconds: Some(5),
            max_backoff_seconds: Some(60),
            retry_not_found: Some(true),
            max_duration_seconds: None,
        };
        assert_eq!(
            all.resolved(),
            ResolvedRetry {
                max_attempts: 3,
                initial_backoff: Duration::from_secs(5),
                max_backoff: Duration::from_secs(60),
                retry_not_found: true,
                max_duration: Duration::from_secs(86_400),
            }
        );
    }

    #[test]
    fn resolved_is_total_for_objects_that_slipped_past_the_schema() {
        let odd = RetryPolicy {
            max_attempts: Some(0),
            initial_backoff_seconds: Some(0),
            max_backoff_seconds: Some(0),
            retry_not_found: None,
            max_duration_seconds: None,
        };
        let r = odd.resolved();
        assert_eq!(r.max_attempts, 1);
        assert_eq!(r.initial_backoff, Duration::from_secs(1));
        assert_eq!(r.max_backoff, Duration::from_secs(1));
        // An initial backoff above the default maximum raises the maximum with it.
        let r = RetryPolicy {
            initial_backoff_seconds: Some(600),
            ..Default::default()
        }
        .resolved();
        assert_eq!(r.max_backoff, Duration::from_secs(600));
    }

    #[test]
    fn retry_cel_rule_runs_on_a_fragment() {
        let ok = serde_json::json!({"initialBackoffSeconds": 10, "maxBackoffSeconds": 10});
        assert!(RetryPolicy::validate_cel(&ok, None).is_ok());
        let bad = serde_json::json!({"initialBackoffSeconds": 10, "maxBackoffSeconds": 9});
        assert!(RetryPolicy::validate_cel(&bad, None).is_err());
        let bad_default_max = serde_json::json!({"initialBackoffSeconds": 301});
        assert!(RetryPolicy::validate_cel(&bad_default_max, None).is_err());
    }
}
