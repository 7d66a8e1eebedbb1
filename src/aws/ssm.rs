//! AWS Systems Manager Automation: send `SendAutomationSignal`, and verify delivery by reading
//! the execution with `GetAutomationExecution` (is it still waiting for this signal?).
use std::collections::HashMap;

use aws_sdk_ssm::operation::RequestId;
use k8s_openapi::jiff::Timestamp;

use super::classify::ErrorClass;
use super::clients::RegionClients;
use super::sdk_error::failure_from_sdk;
use super::target::SignalTarget;
use crate::api::{AutomationSignal, SignalStatus, SignalType};
use crate::delivery::{AwsFailure, SendOutcome, VerifyOutcome};
use crate::metrics::{self, Metrics};

/// The operation that sends an AutomationSignal.
pub const SEND_OPERATION: &str = "SendAutomationSignal";
/// The read that verifies delivery.
pub const GET_EXECUTION_OPERATION: &str = "GetAutomationExecution";

/// `AutomationSignal` → AWS Systems Manager `SendAutomationSignal`.
pub struct Ssm;

impl SignalTarget for Ssm {
    type Resource = AutomationSignal;
    const KIND: &'static str = "AutomationSignal";
    const SERVICE: &'static str = "ssm";
    const SEND_OPERATION: &'static str = SEND_OPERATION;

    fn spec_schema() -> &'static serde_json::Value {
        AutomationSignal::spec_schema()
    }

    fn limiter(clients: &RegionClients) -> &governor::DefaultDirectRateLimiter {
        &clients.ssm.limiter
    }

    /// Nothing to resolve: the execution id is the whole address.
    async fn prepare(
        _signal: &AutomationSignal,
        _claim: &mut SignalStatus,
        _clients: &RegionClients,
        _metrics: &Metrics,
    ) -> Result<(), AwsFailure> {
        Ok(())
    }

    async fn send(
        signal: &AutomationSignal,
        _claimed: &SignalStatus,
        clients: &RegionClients,
    ) -> SendOutcome {
        send(&clients.ssm.send, &view(signal)).await
    }

    async fn verify(
        signal: &AutomationSignal,
        _status: &SignalStatus,
        _since: Timestamp,
        clients: &RegionClients,
        metrics: &Metrics,
    ) -> VerifyOutcome {
        let me = clients.caller_arn(metrics).await;
        clients.ssm.limiter.until_ready().await;
        metrics
            .observe_aws(
                Self::SERVICE,
                GET_EXECUTION_OPERATION,
                verify(&clients.ssm.read, &view(signal), me.as_deref()),
                metrics::verify_outcome,
            )
            .await
    }
}

fn view(signal: &AutomationSignal) -> SsmSignal<'_> {
    SsmSignal {
        execution_id: &signal.spec.automation_execution_id,
        signal_type: signal.spec.signal_type,
        payload: signal.spec.payload_for_wire(),
    }
}

/// What to send, borrowed from an AutomationSignal's spec.
#[derive(Clone, Debug)]
pub struct SsmSignal<'a> {
    pub execution_id: &'a str,
    pub signal_type: SignalType,
    /// Already without empty payloads: `None` is omitted on the wire, never sent as `{}`.
    pub payload: Option<HashMap<String, Vec<String>>>,
}

impl SsmSignal<'_> {
    /// The first value of payload entry `key` (a step name, a step execution id).
    fn first_payload_value(&self, key: &str) -> Option<&str> {
        self.payload.as_ref()?.get(key)?.first().map(String::as_str)
    }
}

/// One `SendAutomationSignal` call on the send client (no SDK retries).
pub async fn send(client: &aws_sdk_ssm::Client, signal: &SsmSignal<'_>) -> SendOutcome {
    let result = client
        .send_automation_signal()
        .automation_execution_id(signal.execution_id)
        .signal_type(aws_sdk_ssm::types::SignalType::from(
            signal.signal_type.as_str(),
        ))
        .set_payload(signal.payload.clone())
        .send()
        .await;
    match result {
        Ok(out) => SendOutcome::Accepted {
            request_id: out.request_id().map(str::to_string),
            run_id: None,
        },
        Err(e) => SendOutcome::Failed(failure_from_sdk(&e)),
    }
}

/// One step of an execution, reduced to what verification reads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepView {
    pub name: String,
    pub action: String,
    pub status: String,
    pub step_execution_id: String,
    pub approval_status: Option<String>,
    pub approver_decisions: Vec<String>,
}

/// An execution, reduced to what verification reads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExecutionView {
    pub status: String,
    pub steps: Vec<StepView>,
}

/// Reads the execution and judges whether the signal landed.
pub async fn verify(
    client: &aws_sdk_ssm::Client,
    signal: &SsmSignal<'_>,
    me: Option<&str>,
) -> VerifyOutcome {
    let out = match client
        .get_automation_execution()
        .automation_execution_id(signal.execution_id)
        .send()
        .await
    {
        Ok(out) => out,
        Err(e) => {
            let failure = failure_from_sdk(&e);
            return match failure.class {
                ErrorClass::NotFound => VerifyOutcome::NotFound,
                _ => VerifyOutcome::Failed(failure),
            };
        }
    };
    let Some(execution) = out.automation_execution() else {
        return VerifyOutcome::NotFound;
    };
    let view = ExecutionView {
        status: execution
            .automation_execution_status()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        steps: execution
            .step_executions()
            .iter()
            .map(|s| {
                let output = |key: &str| {
                    s.outputs()
                        .and_then(|o| o.get(key))
                        .cloned()
                        .unwrap_or_default()
                };
                StepView {
                    name: s.step_name().unwrap_or_default().to_string(),
                    action: s.action().unwrap_or_default().to_string(),
                    status: s
                        .step_status()
                        .map(|st| st.as_str().to_string())
                        .unwrap_or_default(),
                    step_execution_id: s.step_execution_id().unwrap_or_default().to_string(),
                    approval_status: output("ApprovalStatus").into_iter().next(),
                    approver_decisions: output("ApproverDecisions"),
                }
            })
            .collect(),
    };
    judge(&view, signal, me)
}

/// Execution statuses after which no signal can be applied any more.
fn is_finished(status: &str) -> bool {
    matches!(
        status,
        "Success"
            | "TimedOut"
            | "Cancelled"
            | "Cancelling"
            | "Failed"
            | "CompletedWithSuccess"
            | "CompletedWithFailure"
            | "Exited"
    )
}

/// Step statuses that still wait for a signal.
fn is_waiting(status: &str) -> bool {
    matches!(status, "Waiting" | "Pending" | "InProgress")
}

/// Whether an ApproverDecisions entry is `me` deciding `decision` ("Approve" or "Reject").
/// Entries are JSON objects; any string field equal to the principal and a decision field
/// naming the same verb match, whatever the field names.
fn is_my_decision(entry: &str, me: &str, decision: &str) -> bool {
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_str::<serde_json::Value>(entry)
    else {
        return false;
    };
    let mentions_me = fields.values().any(|v| v.as_str() == Some(me));
    let decides = fields.iter().any(|(k, v)| {
        k.to_ascii_lowercase().contains("decision")
            && v.as_str().is_some_and(|v| {
                v.to_ascii_lowercase()
                    .starts_with(&decision.to_ascii_lowercase())
            })
    });
    mentions_me && decides
}

/// The pure judgement: did the signal land, is the execution still waiting for it, or has it
/// moved on so that the signal can no longer apply?
pub fn judge(view: &ExecutionView, signal: &SsmSignal<'_>, me: Option<&str>) -> VerifyOutcome {
    let finished = is_finished(&view.status);
    let gone = |why: &str| VerifyOutcome::NoLongerWaiting {
        why: why.to_string(),
    };
    match signal.signal_type {
        SignalType::Approve | SignalType::Reject => {
            let (verb, settled) = if signal.signal_type == SignalType::Approve {
                ("Approve", "Approved")
            } else {
                ("Reject", "Rejected")
            };
            let approvals: Vec<&StepView> = view
                .steps
                .iter()
                .filter(|s| s.action == "aws:approve")
                .collect();
            if let Some(me) = me {
                if approvals.iter().any(|s| {
                    s.approver_decisions
                        .iter()
                        .any(|d| is_my_decision(d, me, verb))
                }) {
                    return VerifyOutcome::Delivered;
                }
            }
            if !finished && approvals.iter().any(|s| is_waiting(&s.status)) {
                return VerifyOutcome::Absent;
            }
            // Without our own decision to read, an approval settled our way is the evidence.
            let settled_our_way = approvals
                .iter()
                .rev()
                .find(|s| !is_waiting(&s.status))
                .is_some_and(|s| {
                    s.approval_status.as_deref() == Some(settled)
                        && (me.is_none() || s.approver_decisions.is_empty())
                });
            if settled_our_way {
                VerifyOutcome::Delivered
            } else {
                gone("the execution is no longer waiting for this approval decision")
            }
        }
        SignalType::Resume | SignalType::StartStep => {
            let Some(step_name) = signal.first_payload_value("StepName") else {
                return gone("the signal names no step");
            };
            match view.steps.iter().rev().find(|s| s.name == step_name) {
                // A paused step (Resume) or a step not yet started (StartStep) still waits.
                Some(step) if matches!(step.status.as_str(), "Waiting" | "Pending") => {
                    if finished {
                        gone("the execution ended before the step ran")
                    } else {
                        VerifyOutcome::Absent
                    }
                }
                Some(_) => VerifyOutcome::Delivered,
                None if finished => gone("the execution ended before the step ran"),
                None => VerifyOutcome::Absent,
            }
        }
        SignalType::StopStep => {
            let Some(id) = signal.first_payload_value("StepExecutionId") else {
                return gone("the signal names no step execution");
            };
            match view.steps.iter().find(|s| s.step_execution_id == id) {
                Some(step) if matches!(step.status.as_str(), "Cancelled" | "Cancelling") => {
                    VerifyOutcome::Delivered
                }
                Some(step) if is_waiting(&step.status) && !finished => VerifyOutcome::Absent,
                Some(_) => gone("the step execution finished before it was stopped"),
                None => VerifyOutcome::NotFound,
            }
        }
        // Revoke ends granted access: the execution leaves its running state.
        SignalType::Revoke => {
            if finished {
                match view.status.as_str() {
                    "Cancelled" | "Cancelling" | "Success" | "CompletedWithSuccess" => {
                        VerifyOutcome::Delivered
                    }
                    _ => gone("the execution ended before access was revoked"),
                }
            } else {
                VerifyOutcome::Absent
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "arn:aws:iam::123456789012:user/signalman-operator";

    fn approve_step(status: &str, approval: Option<&str>, decisions: &[&str]) -> StepView {
        StepView {
            name: "approve".into(),
            action: "aws:approve".into(),
            status: status.into(),
            step_execution_id: "s-1".into(),
            approval_status: approval.map(Into::into),
            approver_decisions: decisions.iter().map(|d| d.to_string()).collect(),
        }
    }

    fn signal(kind: &str, payload: &[(&str, &str)]) -> SsmSignal<'static> {
        let kind = SignalType::ALL
            .into_iter()
            .find(|t| t.as_str() == kind)
            .expect("a signal type");
        let payload: HashMap<String, Vec<String>> = payload
            .iter()
            .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
            .collect();
        SsmSignal {
            execution_id: "e",
            signal_type: kind,
            payload: (!payload.is_empty()).then_some(payload),
        }
    }

    fn decision(who: &str, what: &str) -> String {
        serde_json::json!({"approver": who, "decision": what}).to_string()
    }

    #[test]
    fn approve_waiting_is_absent_and_my_decision_is_delivered() {
        let waiting = ExecutionView {
            status: "Waiting".into(),
            steps: vec![approve_step("Waiting", Some("Waiting"), &[])],
        };
        assert_eq!(
            judge(&waiting, &signal("Approve", &[]), Some(ME)),
            VerifyOutcome::Absent
        );
        let mine = decision(ME, "Approve");
        let partly = ExecutionView {
            status: "Waiting".into(),
            steps: vec![approve_step("Waiting", Some("Waiting"), &[&mine])],
        };
        assert_eq!(
            judge(&partly, &signal("Approve", &[]), Some(ME)),
            VerifyOutcome::Delivered
        );
        assert!(matches!(
            judge(&partly, &signal("Reject", &[]), Some(ME)),
            VerifyOutcome::Absent
        ));
    }

    #[test]
    fn approval_settled_by_someone_else_is_no_longer_waiting() {
        let other = decision("arn:aws:iam::123456789012:user/alice", "Reject");
        let view = ExecutionView {
            status: "Failed".into(),
            steps: vec![approve_step("Failed", Some("Rejected"), &[&other])],
        };
        assert!(matches!(
            judge(&view, &signal("Approve", &[]), Some(ME)),
            VerifyOutcome::NoLongerWaiting { .. }
        ));
    }

    #[test]
    fn approval_settled_our_way_counts_when_we_cannot_tell_who() {
        let view = ExecutionView {
            status: "Success".into(),
            steps: vec![approve_step("Success", Some("Approved"), &[])],
        };
        assert_eq!(
            judge(&view, &signal("Approve", &[]), None),
            VerifyOutcome::Delivered
        );
    }

    #[test]
    fn resume_and_start_step_read_the_named_step() {
        let step = |status: &str| StepView {
            name: "pause".into(),
            action: "aws:pause".into(),
            status: status.into(),
            ..Default::default()
        };
        let resume = signal("Resume", &[("StepName", "pause")]);
        let paused = ExecutionView {
            status: "Waiting".into(),
            steps: vec![step("Waiting")],
        };
        assert_eq!(judge(&paused, &resume, None), VerifyOutcome::Absent);
        let resumed = ExecutionView {
            status: "Success".into(),
            steps: vec![step("Success")],
        };
        assert_eq!(judge(&resumed, &resume, None), VerifyOutcome::Delivered);
        let cancelled = ExecutionView {
            status: "Cancelled".into(),
            steps: vec![step("Waiting")],
        };
        assert!(matches!(
            judge(&cancelled, &resume, None),
            VerifyOutcome::NoLongerWaiting { .. }
        ));
        let start = signal("StartStep", &[("StepName", "step2")]);
        let not_started = ExecutionView {
            status: "Waiting".into(),
            steps: vec![],
        };
        assert_eq!(judge(&not_started, &start, None), VerifyOutcome::Absent);
    }

    #[test]
    fn stop_step_reads_the_step_execution() {
        let step = |status: &str| StepView {
            step_execution_id: "x-1".into(),
            status: status.into(),
            ..Default::default()
        };
        let stop = signal("StopStep", &[("StepExecutionId", "x-1")]);
        let running = ExecutionView {
            status: "Waiting".into(),
            steps: vec![step("InProgress")],
        };
        assert_eq!(judge(&running, &stop, None), VerifyOutcome::Absent);
        let stopped = ExecutionView {
            status: "Waiting".into(),
            steps: vec![step("Cancelled")],
        };
        assert_eq!(judge(&stopped, &stop, None), VerifyOutcome::Delivered);
        let done = ExecutionView {
            status: "Waiting".into(),
            steps: vec![step("Success")],
        };
        assert!(matches!(
            judge(&done, &stop, None),
            VerifyOutcome::NoLongerWaiting { .. }
        ));
        let none = ExecutionView {
            status: "Waiting".into(),
            steps: vec![],
        };
        assert_eq!(judge(&none, &stop, None), VerifyOutcome::NotFound);
    }
}
