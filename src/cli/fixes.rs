//! What each condition reason means for the person reading `kubectl signalman status`, and
//! what to do about it: the one table of fixes.
use crate::delivery::reason;

/// (reason, what it means and what to do), one row per reason the operator writes.
const FIXES: &[(&str, &str)] = &[
    (
        reason::PENDING,
        "the operator has not acted on the signal yet: check that it runs and watches this namespace (its --namespaces and --label-selector)",
    ),
    (
        reason::SENDING,
        "an attempt is in flight: nothing to do; if it stays here past the claim's deadline, the operator verifies with AWS before sending again",
    ),
    (
        reason::VERIFYING,
        "the outcome of an attempt is unknown and the operator is asking AWS whether it landed: nothing to do; it never sends again before knowing",
    ),
    (
        reason::RETRY_SCHEDULED,
        "the last attempt failed in a way that heals (connection, 5xx, a look-up): nothing to do, or `kubectl signalman retry` to try now instead of after the backoff",
    ),
    (
        reason::THROTTLED,
        "AWS throttled the call; no attempt was spent: nothing to do, or lower --swf-rate/--ssm-rate if it persists",
    ),
    (
        reason::PERMISSION_DENIED,
        "AWS refused the operator's (or the policy's role's) credentials: grant the IAM actions in the chart README to that identity (for Approve/Reject, list it among the step's Approvers), then `kubectl signalman retry`",
    ),
    (
        reason::ASSUME_ROLE_FAILED,
        "the role the allowing SignalPolicy names could not be assumed: let the operator's identity assume it (the role's trust policy, sts:AssumeRole), then `kubectl signalman retry`",
    ),
    (
        reason::LIMIT_EXCEEDED,
        "SWF refused the call for an account limit (LimitExceededFault); each retry spends an attempt: raise the limit or wait for the run to drain",
    ),
    (reason::DELIVERED, "delivered: nothing to do"),
    (
        reason::DELIVERY_VERIFIED,
        "delivered (an earlier attempt was found in AWS): nothing to do",
    ),
    (
        reason::ALREADY_DELIVERED,
        "an earlier object delivered this very signal (its receipt or AWS shows it), so nothing was sent: to send it again on purpose, create it with spec.allowDuplicate: true",
    ),
    (
        reason::EXECUTION_NOT_FOUND,
        "AWS knows no such execution (or run) in that region: check spec.region and the id, or set spec.retry.retryNotFound for a signal applied before its workflow starts; then create a new signal",
    ),
    (
        reason::SIGNAL_REJECTED,
        "AWS refused the signal for the execution's state, or it moved on without it (step not waiting, not an approver): check the execution (`kubectl signalman pending`), then create a new signal",
    ),
    (
        reason::INVALID_SPEC,
        "the spec breaks a rule of the schema or of AWS's validation (the message names the field): fix the manifest and create a new signal",
    ),
    (
        reason::RETRIES_EXHAUSTED,
        "every attempt (spec.retry.maxAttempts) or the retry time (maxDurationSeconds) is spent: fix the cause named in the message, then create a new signal (with a new name)",
    ),
    (
        reason::EXPIRED,
        "spec.notAfter passed before the signal could be delivered: create a new signal with a later notAfter if it is still wanted",
    ),
    (
        reason::POLICY_DENIED,
        "no SignalPolicy allows this signal, so nothing was sent: ask a cluster administrator for the SignalPolicy the message names (`kubectl signalman can-i -f` checks a manifest), then create the signal again",
    ),
    (
        reason::FAILED,
        "failed for a reason the status no longer records: read its Events, then create a new signal",
    ),
];

/// The fix for `reason`, in words; `None` for a reason the table does not know.
pub fn fix_for(reason: &str) -> Option<&'static str> {
    FIXES
        .iter()
        .find(|(r, _)| *r == reason)
        .map(|(_, fix)| *fix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_the_operator_writes_has_one_fix() {
        for r in reason::ALL {
            assert!(fix_for(r).is_some(), "no fix for {r}");
        }
        for (r, _) in FIXES {
            assert_eq!(FIXES.iter().filter(|(o, _)| o == r).count(), 1, "{r} twice");
            assert!(
                reason::ALL.contains(r),
                "{r} is not a reason the operator writes"
            );
        }
        // The policy module names its own reason; it is the same word.
        assert!(fix_for(crate::policy::POLICY_DENIED).is_some());
    }

    /// The reasons docs/design.md lists (Conditions and reasons) each have a fix, so the docs
    /// and the plugin cannot drift apart.
    #[test]
    fn every_reason_in_the_design_documents_list_has_a_fix() {
        let design = include_str!("../../docs/design.md");
        let section = design
            .split("### Conditions and reasons")
            .nth(1)
            .and_then(|s| s.split("\n### ").next())
            .expect("the Conditions and reasons section");
        let mut listed = 0;
        for row in section.lines().filter(|l| l.starts_with("| `")) {
            let reasons = row.rsplit('|').nth(1).expect("a reasons column");
            for word in reasons.split('`').skip(1).step_by(2) {
                if word.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                    && word.chars().all(|c| c.is_ascii_alphanumeric())
                {
                    listed += 1;
                    assert!(fix_for(word).is_some(), "docs list {word} without a fix");
                }
            }
        }
        assert!(listed >= 15, "the list was read: {listed} reasons");
    }
}
