//! AWS Systems Manager Automation: send `SendAutomationSignal`, and verify delivery by reading
//! the execution with `GetAutomationExecution` (is it still waiting for this signal?).
use std::collections::HashMap;

use aws_sdk_ssm::operation::RequestId;
use k8s_openapi::jiff::Timestamp;

use super::classify::ErrorClass;
use super::clients::{Gate, RegionClients};
use super::sdk_error::failure_from_sdk;
use super::target::{Prepared, SignalTarget};
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

    fn gate(clients: &RegionClients) -> &std::sync::Arc<Gate> {
        &clients.ssm.gate
    }

    fn identity(signal: &AutomationSignal) -> serde_json::Value {
        let spec = &signal.spec;
        serde_json::json!({
            "region": spec.region(),
            "automationExecutionId": spec.automation_execution_id,
            "signalType": spec.signal_type.as_str(),
            "payload": spec.payload,
        })
    }

    fn policy_target(signal: &AutomationSignal) -> crate::policy::Target<'_> {
        crate::policy::Target::Ssm {
            signal_type: signal.spec.signal_type,
            document: None,
        }
    }

    /// The execution's document name (GetAutomationExecution): execution ids are random, so
    /// only this read tells which runbook a signal would move.
    async fn document(
        signal: &AutomationSignal,
        clients: &RegionClients,
        metrics: &Metrics,
    ) -> Result<Option<String>, AwsFailure> {
        let view = read_execution_gated(signal, clients, metrics).await?;
        let document = view.document.clone();
        RECENT.put(&signal.spec.automation_execution_id, view);
        Ok(document)
    }

    fn target_of(signal: &AutomationSignal, _status: &SignalStatus) -> Option<String> {
        Some(signal.spec.automation_execution_id.clone())
    }

    /// Nothing to resolve: the execution id is the whole address. Before a first Approve or
    /// Reject of an execution that may predate the receipts, looks for the operator's own
    /// decision on it (the other signal types leave no record of who sent them).
    async fn prepare(
        signal: &AutomationSignal,
        _claim: &mut SignalStatus,
        unrecorded_before: Option<Timestamp>,
        clients: &RegionClients,
        metrics: &Metrics,
    ) -> Result<Prepared, AwsFailure> {
        let verb = match signal.spec.signal_type {
            SignalType::Approve => "Approve",
            SignalType::Reject => "Reject",
            _ => return Ok(Prepared::Send),
        };
        let Some(horizon) = unrecorded_before else {
            return Ok(Prepared::Send);
        };
        // The execution was just read for the policy check (its document): the same read
        // serves here, so a signal costs one GetAutomationExecution, not two.
        let recent = RECENT.take(&signal.spec.automation_execution_id);
        let view = match recent {
            Some(view) => Ok(view),
            None => read_execution_gated(signal, clients, metrics).await,
        };
        let view = match view {
            Ok(view) => view,
            // Not found: the send will say so and fail the signal as usual.
            Err(f) if f.class == ErrorClass::NotFound => return Ok(Prepared::Send),
            Err(f) => return Err(f),
        };
        if view
            .started
            .is_some_and(|t| t >= horizon + super::swf::CLOCK_SKEW)
        {
            return Ok(Prepared::Send);
        }
        let Some(me) = clients.caller_arn(metrics).await else {
            return Err(AwsFailure {
                class: ErrorClass::NotSent,
                code: None,
                message: "STS did not say who the operator is; cannot look for its own decision"
                    .into(),
            });
        };
        match my_decision(&view, &me, verb) {
            Decision::Found => Ok(Prepared::AlreadyDelivered(format!(
                "the execution already holds the operator's {verb} decision"
            ))),
            Decision::NotFound => Ok(Prepared::Send),
            Decision::Unreadable => Err(unreadable_decisions()),
        }
    }

    /// An Approve or Reject names who asked for it in its Comment (the approval record AWS
    /// keeps shows the operator's identity, never the person), unless that is switched off.
    async fn send(
        signal: &AutomationSignal,
        claimed: &SignalStatus,
        approved_by: Option<&str>,
        clients: &RegionClients,
    ) -> SendOutcome {
        let mut what = view(signal);
        if clients.requester_in_comment
            && matches!(what.signal_type, SignalType::Approve | SignalType::Reject)
        {
            if let Some(who) = claimed.requested_by.as_deref() {
                let payload = what.payload.get_or_insert_with(Default::default);
                let theirs = payload
                    .get("Comment")
                    .and_then(|c| c.first())
                    .map(String::as_str);
                let comment = comment_with_requester(who, approved_by, theirs);
                payload.insert("Comment".into(), vec![comment]);
            }
        }
        send(&clients.ssm.send, &what).await
    }

    async fn verify(
        signal: &AutomationSignal,
        _status: &SignalStatus,
        _since: Timestamp,
        clients: &RegionClients,
        metrics: &Metrics,
    ) -> VerifyOutcome {
        let me = clients.caller_arn(metrics).await;
        let what = view(signal);
        let read = metrics.observe_aws(
            Self::SERVICE,
            GET_EXECUTION_OPERATION,
            verify(&clients.ssm.read, &what, me.as_deref()),
            metrics::verify_outcome,
        );
        clients
            .ssm
            .gate
            .read(
                GET_EXECUTION_OPERATION,
                metrics,
                read,
                VerifyOutcome::failure,
            )
            .await
    }
}

/// Executions read moments ago (for the policy check), by id: taken by the pre-send check of
/// the same signal right after, so it need not read again. Entries older than a few seconds
/// are not used; the map is bounded.
struct RecentReads(std::sync::Mutex<HashMap<String, (std::time::Instant, ExecutionView)>>);

static RECENT: std::sync::LazyLock<RecentReads> =
    std::sync::LazyLock::new(|| RecentReads(std::sync::Mutex::new(HashMap::new())));

impl RecentReads {
    const FRESH: std::time::Duration = std::time::Duration::from_secs(5);
    const MAX: usize = 1024;

    fn put(&self, id: &str, view: ExecutionView) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= Self::MAX {
            map.retain(|_, (at, _)| at.elapsed() < Self::FRESH);
        }
        if map.len() < Self::MAX {
            map.insert(id.to_string(), (std::time::Instant::now(), view));
        }
    }

    fn take(&self, id: &str) -> Option<ExecutionView> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(id)
            .filter(|(at, _)| at.elapsed() < Self::FRESH)
            .map(|(_, view)| view)
    }
}

/// Longest Comment SendAutomationSignal takes (a payload value).
const MAX_COMMENT: usize = 512;

/// `requested by <who> via signalman[ (approved by <x>, as asserted by <who>)]: <their
/// comment>`, cut to the payload limit (the requester first, so it always fits).
pub fn comment_with_requester(
    who: &str,
    approved_by: Option<&str>,
    theirs: Option<&str>,
) -> String {
    let asserted = approved_by
        .map(|x| format!(" (approved by {x}, as asserted by {who})"))
        .unwrap_or_default();
    let text = match theirs.filter(|c| !c.is_empty()) {
        Some(c) => format!("requested by {who} via signalman{asserted}: {c}"),
        None => format!("requested by {who} via signalman{asserted}"),
    };
    match text.char_indices().nth(MAX_COMMENT) {
        Some((i, _)) => text[..i].to_string(),
        None => text,
    }
}

/// GetAutomationExecution of the signal's execution on the read client, under its limiter
/// and in the metrics.
async fn read_execution_gated(
    signal: &AutomationSignal,
    clients: &RegionClients,
    metrics: &Metrics,
) -> Result<ExecutionView, AwsFailure> {
    let observed = metrics.observe_aws(
        Ssm::SERVICE,
        GET_EXECUTION_OPERATION,
        read_execution(&clients.ssm.read, &signal.spec.automation_execution_id),
        metrics::result_outcome,
    );
    clients
        .ssm
        .gate
        .read(GET_EXECUTION_OPERATION, metrics, observed, |r| {
            r.as_ref().err()
        })
        .await
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
    pub started: Option<Timestamp>,
    /// The Automation document the execution runs.
    pub document: Option<String>,
    pub status: String,
    pub steps: Vec<StepView>,
}

/// Reads the execution and judges whether the signal landed.
pub async fn verify(
    client: &aws_sdk_ssm::Client,
    signal: &SsmSignal<'_>,
    me: Option<&str>,
) -> VerifyOutcome {
    match read_execution(client, signal.execution_id).await {
        Ok(view) => judge(&view, signal, me),
        Err(f) if f.class == ErrorClass::NotFound => VerifyOutcome::NotFound,
        Err(f) => VerifyOutcome::Failed(f),
    }
}

/// GetAutomationExecution, reduced to what verification reads.
pub async fn read_execution(
    client: &aws_sdk_ssm::Client,
    execution_id: &str,
) -> Result<ExecutionView, AwsFailure> {
    let out = client
        .get_automation_execution()
        .automation_execution_id(execution_id)
        .send()
        .await
        .map_err(|e| failure_from_sdk(&e))?;
    let Some(execution) = out.automation_execution() else {
        return Err(AwsFailure {
            class: ErrorClass::NotFound,
            code: None,
            message: "AWS returned no execution".into(),
        });
    };
    Ok(ExecutionView {
        document: execution.document_name().map(str::to_string),
        started: execution
            .execution_start_time()
            .and_then(|t| Timestamp::new(t.secs(), t.subsec_nanos() as i32).ok()),
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
    })
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

/// One approver's decision, as an ApproverDecisions entry records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApproverDecision {
    pub approver: String,
    /// As recorded: `Approve`, `Approved`, `Reject`, `Rejected`…
    pub decision: String,
}

/// Reads one ApproverDecisions entry. AWS documents it only as "a JSON map that includes the
/// approval decision of each approver"; published examples show
/// `{"Approver": …, "Decision": "Approve", "ApprovalDecisionTime": …, "Comment": …}`. So any
/// capitalisation of the field names is read, an entry may also be a JSON list of such maps,
/// and `None` means the entry could not be read: the caller must then treat the operator's own
/// decision as unknown, never as absent.
pub fn read_decisions(entry: &str) -> Option<Vec<ApproverDecision>> {
    fn one(fields: &serde_json::Map<String, serde_json::Value>) -> Option<ApproverDecision> {
        let field = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| v.as_str())
        };
        Some(ApproverDecision {
            approver: field("Approver")?.to_string(),
            decision: field("Decision")?.to_string(),
        })
    }
    match serde_json::from_str::<serde_json::Value>(entry).ok()? {
        serde_json::Value::Object(fields) => Some(vec![one(&fields)?]),
        serde_json::Value::Array(items) => items
            .iter()
            .map(|item| item.as_object().and_then(one))
            .collect(),
        _ => None,
    }
}

/// Whether the execution's approval steps hold `me`'s `verb` decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Found,
    NotFound,
    /// Some entry could not be read, and none that could was ours.
    Unreadable,
}

pub fn my_decision(view: &ExecutionView, me: &str, verb: &str) -> Decision {
    let mut unreadable = false;
    for step in view.steps.iter().filter(|s| s.action == "aws:approve") {
        for entry in &step.approver_decisions {
            match read_decisions(entry) {
                Some(decisions) => {
                    if decisions.iter().any(|d| {
                        d.approver == me
                            && d.decision
                                .to_ascii_lowercase()
                                .starts_with(&verb.to_ascii_lowercase())
                    }) {
                        return Decision::Found;
                    }
                }
                None => unreadable = true,
            }
        }
    }
    if unreadable {
        Decision::Unreadable
    } else {
        Decision::NotFound
    }
}

fn unreadable_decisions() -> AwsFailure {
    AwsFailure {
        class: ErrorClass::Ambiguous,
        code: None,
        message: "an approval record could not be read; cannot tell whether the operator's \
                  decision is there"
            .into(),
    }
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
                match my_decision(view, me, verb) {
                    Decision::Found => return VerifyOutcome::Delivered,
                    Decision::Unreadable => return VerifyOutcome::Failed(unreadable_decisions()),
                    Decision::NotFound => {}
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
            started: None,
            document: None,
            status: "Waiting".into(),
            steps: vec![approve_step("Waiting", Some("Waiting"), &[])],
        };
        assert_eq!(
            judge(&waiting, &signal("Approve", &[]), Some(ME)),
            VerifyOutcome::Absent
        );
        let mine = decision(ME, "Approve");
        let partly = ExecutionView {
            started: None,
            document: None,
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

    /// The shape of published AWS examples, verbatim, and a list of such maps.
    #[test]
    fn reads_the_published_approval_record_shapes() {
        let published = r#"{"Approver":"arn:aws:iam::123456789012:user/signalman-operator","Decision":"Approve","ApprovalDecisionTime":"2024-03-01T10:15:30.123Z","Comment":"Looks good"}"#;
        assert_eq!(
            read_decisions(published),
            Some(vec![ApproverDecision {
                approver: ME.into(),
                decision: "Approve".into()
            }])
        );
        let list = format!("[{published}]");
        assert_eq!(read_decisions(&list).map(|d| d.len()), Some(1));
        let view = ExecutionView {
            status: "Waiting".into(),
            steps: vec![approve_step("Waiting", Some("Waiting"), &[published])],
            ..Default::default()
        };
        assert_eq!(
            judge(&view, &signal("Approve", &[]), Some(ME)),
            VerifyOutcome::Delivered
        );
        assert_eq!(
            judge(&view, &signal("Reject", &[]), Some(ME)),
            VerifyOutcome::Absent
        );
    }

    /// An entry that cannot be read makes our decision unknown: never "absent" (which would
    /// resend an approval that may have landed).
    #[test]
    fn an_unreadable_approval_record_is_unknown_not_absent() {
        for entry in ["not json", r#"{"who":"x"}"#, r#"["x"]"#, "42"] {
            assert_eq!(read_decisions(entry), None, "{entry}");
            let view = ExecutionView {
                status: "Waiting".into(),
                steps: vec![approve_step("Waiting", Some("Waiting"), &[entry])],
                ..Default::default()
            };
            assert!(
                matches!(
                    judge(&view, &signal("Approve", &[]), Some(ME)),
                    VerifyOutcome::Failed(_)
                ),
                "{entry}"
            );
        }
    }

    #[test]
    fn the_comment_names_the_requester_within_the_limit() {
        assert_eq!(
            comment_with_requester("alice@example.com", None, Some("Looks good")),
            "requested by alice@example.com via signalman: Looks good"
        );
        assert_eq!(
            comment_with_requester("alice", None, None),
            "requested by alice via signalman"
        );
        assert_eq!(
            comment_with_requester(
                "system:serviceaccount:argocd:app",
                Some("carol"),
                Some("ok")
            ),
            "requested by system:serviceaccount:argocd:app via signalman (approved by carol, \
             as asserted by system:serviceaccount:argocd:app): ok"
        );
        let long = comment_with_requester("bob", None, Some(&"é".repeat(600)));
        assert_eq!(long.chars().count(), 512);
        assert!(long.starts_with("requested by bob via signalman: "));
    }

    #[test]
    fn approval_settled_by_someone_else_is_no_longer_waiting() {
        let other = decision("arn:aws:iam::123456789012:user/alice", "Reject");
        let view = ExecutionView {
            started: None,
            document: None,
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
            started: None,
            document: None,
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
            started: None,
            document: None,
            status: "Waiting".into(),
            steps: vec![step("Waiting")],
        };
        assert_eq!(judge(&paused, &resume, None), VerifyOutcome::Absent);
        let resumed = ExecutionView {
            started: None,
            document: None,
            status: "Success".into(),
            steps: vec![step("Success")],
        };
        assert_eq!(judge(&resumed, &resume, None), VerifyOutcome::Delivered);
        let cancelled = ExecutionView {
            started: None,
            document: None,
            status: "Cancelled".into(),
            steps: vec![step("Waiting")],
        };
        assert!(matches!(
            judge(&cancelled, &resume, None),
            VerifyOutcome::NoLongerWaiting { .. }
        ));
        let start = signal("StartStep", &[("StepName", "step2")]);
        let not_started = ExecutionView {
            started: None,
            document: None,
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
            started: None,
            document: None,
            status: "Waiting".into(),
            steps: vec![step("InProgress")],
        };
        assert_eq!(judge(&running, &stop, None), VerifyOutcome::Absent);
        let stopped = ExecutionView {
            started: None,
            document: None,
            status: "Waiting".into(),
            steps: vec![step("Cancelled")],
        };
        assert_eq!(judge(&stopped, &stop, None), VerifyOutcome::Delivered);
        let done = ExecutionView {
            started: None,
            document: None,
            status: "Waiting".into(),
            steps: vec![step("Success")],
        };
        assert!(matches!(
            judge(&done, &stop, None),
            VerifyOutcome::NoLongerWaiting { .. }
        ));
        let none = ExecutionView {
            started: None,
            document: None,
            status: "Waiting".into(),
            steps: vec![],
        };
        assert_eq!(judge(&none, &stop, None), VerifyOutcome::NotFound);
    }
}
