//! AWS Systems Manager Automation: send `SendAutomationSignal`, and verify delivery by reading
//! the execution with `GetAutomationExecution` (is it still waiting for this signal?).
use std::collections::HashMap;

use aws_sdk_ssm::operation::RequestId;
use k8s_openapi::jiff::Timestamp;

use super::classify::ErrorClass;
use super::clients::{Gate, RegionClients};
use super::principal::same_principal;
use super::sdk_error::failure_from_sdk;
use super::target::{Prepared, SignalTarget};
use crate::api::{AutomationSignal, SignalStatus, SignalType, StepRef};
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
    const VERIFY_OPERATION: &'static str = GET_EXECUTION_OPERATION;

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
        clients
            .ssm_reads
            .put(&signal.spec.automation_execution_id, view);
        Ok(document)
    }

    fn target_of(signal: &AutomationSignal, _status: &SignalStatus) -> Option<String> {
        Some(signal.spec.automation_execution_id.clone())
    }

    /// Reads the execution as it is now and pins in the claim what verification must read
    /// later: the step execution the signal is for, and (Approve, Reject) the principal it is
    /// sent as. Before a first Approve or Reject of an execution that may predate the
    /// receipts, looks for a decision carrying this signal's reference.
    async fn prepare(
        signal: &AutomationSignal,
        claim: &mut SignalStatus,
        reference: &str,
        unrecorded_before: Option<Timestamp>,
        clients: &RegionClients,
        metrics: &Metrics,
    ) -> Result<Prepared, AwsFailure> {
        if signal.spec.signal_type == SignalType::Revoke {
            return Ok(Prepared::Send);
        }
        // The execution was just read for the policy check (its document): the same read
        // serves here, so a signal costs one GetAutomationExecution, not two.
        let recent = clients.ssm_reads.take(&signal.spec.automation_execution_id);
        let view = match recent {
            Some(view) => view,
            None => match read_execution_gated(signal, clients, metrics).await {
                Ok(view) => view,
                // Not found: the send will say so and fail the signal as usual.
                Err(f) if f.class == ErrorClass::NotFound => return Ok(Prepared::Send),
                Err(f) => return Err(f),
            },
        };
        let what = view_of(signal);
        claim.step = step_for(&view, &what);
        let Some(verb) = decision_verb(what.signal_type) else {
            return Ok(Prepared::Send);
        };
        let Some(me) = clients.caller_principal(metrics).await else {
            return Err(unknown_caller());
        };
        claim.principal = Some(me.clone());
        let Some(horizon) = unrecorded_before else {
            return Ok(Prepared::Send);
        };
        if view
            .started
            .is_some_and(|t| t >= horizon + super::swf::CLOCK_SKEW)
        {
            return Ok(Prepared::Send);
        }
        // Only the reference proves an earlier object's decision: a decision of the same
        // principal without it may be another signal's (another namespace, another step).
        match approval_evidence(&view, None, &me, verb, None, reference) {
            Evidence::Ours => Ok(Prepared::AlreadyDelivered(format!(
                "the execution already holds this signal's {verb} decision"
            ))),
            Evidence::NotOurs | Evidence::Unknown(_) => Ok(Prepared::Send),
        }
    }

    /// Approve and Reject carry the signal's reference at the start of their Comment (how
    /// verification tells this signal's decision from any other of the same principal), then
    /// who asked for it (the approval record AWS keeps shows the operator's identity, never
    /// the person) unless that is switched off, then the requester's own comment.
    async fn send(
        signal: &AutomationSignal,
        claimed: &SignalStatus,
        reference: &str,
        approved_by: Option<&str>,
        clients: &RegionClients,
    ) -> SendOutcome {
        let mut what = view_of(signal);
        if decision_verb(what.signal_type).is_some() {
            let who = claimed
                .requested_by
                .as_deref()
                .filter(|_| clients.requester_in_comment);
            let payload = what.payload.get_or_insert_with(Default::default);
            let theirs = payload
                .get("Comment")
                .and_then(|c| c.first())
                .map(String::as_str);
            let comment = comment_for(reference, who, approved_by, theirs);
            payload.insert("Comment".into(), vec![comment]);
        }
        send(&clients.ssm.send, &what).await
    }

    async fn verify(
        signal: &AutomationSignal,
        status: &SignalStatus,
        reference: &str,
        since: Timestamp,
        clients: &RegionClients,
        metrics: &Metrics,
    ) -> VerifyOutcome {
        let what = view_of(signal);
        // As the principal recorded at the claim; a claim from before that was recorded is
        // judged as the principal these clients sign as now.
        let principal = match (&status.principal, decision_verb(what.signal_type)) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(_)) => match clients.caller_principal(metrics).await {
                Some(p) => Some(p),
                None => return VerifyOutcome::Failed(unknown_caller()),
            },
            (None, None) => None,
        };
        let claimed = Claimed {
            step: status.step.as_ref(),
            principal: principal.as_deref(),
            since,
            reference,
        };
        let read = metrics.observe_aws(
            Self::SERVICE,
            GET_EXECUTION_OPERATION,
            async {
                match read_execution(&clients.ssm.read, what.execution_id).await {
                    Ok(view) => judge(&view, &what, &claimed),
                    Err(f) if f.class == ErrorClass::NotFound => VerifyOutcome::NotFound,
                    Err(f) => VerifyOutcome::Failed(f),
                }
            },
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

/// `Approve` or `Reject` for the signals that leave an approval decision.
fn decision_verb(kind: SignalType) -> Option<&'static str> {
    match kind {
        SignalType::Approve => Some("Approve"),
        SignalType::Reject => Some("Reject"),
        _ => None,
    }
}

fn unknown_caller() -> AwsFailure {
    AwsFailure {
        class: ErrorClass::NotSent,
        code: None,
        message: "STS did not say who the operator is; cannot tell its own decisions, so nothing \
                  is sent or judged until it does"
            .into(),
    }
}

/// Executions read moments ago (for the policy check), by id: taken by the pre-send check of
/// the same signal right after, so it need not read again. Entries older than a few seconds
/// are not used; the map is bounded. One per identity's clients.
#[derive(Default)]
pub struct RecentReads(std::sync::Mutex<HashMap<String, (std::time::Instant, ExecutionView)>>);

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

/// How this signal's reference opens the Comment of its decision.
pub fn marker(reference: &str) -> String {
    format!("[signalman:{reference}]")
}

/// `[signalman:<reference>] requested by <who> via signalman[ (approved by <x>, as asserted by
/// <who>)]: <their comment>` (without the requester when it is unknown or not to be named),
/// cut to the payload limit; the reference first, so it always fits and nothing the requester
/// writes can stand in its place.
pub fn comment_for(
    reference: &str,
    who: Option<&str>,
    approved_by: Option<&str>,
    theirs: Option<&str>,
) -> String {
    let mut text = marker(reference);
    if let Some(who) = who {
        let asserted = approved_by
            .map(|x| format!(" (approved by {x}, as asserted by {who})"))
            .unwrap_or_default();
        text.push_str(&format!(" requested by {who} via signalman{asserted}"));
        if let Some(c) = theirs.filter(|c| !c.is_empty()) {
            text.push_str(": ");
            text.push_str(c);
        }
    } else if let Some(c) = theirs.filter(|c| !c.is_empty()) {
        text.push(' ');
        text.push_str(c);
    }
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

fn view_of(signal: &AutomationSignal) -> SsmSignal<'_> {
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
    /// The Comment sent with the decision, when the record keeps one.
    pub comment: Option<String>,
    /// ApprovalDecisionTime, when the record has one that reads as a time.
    pub time: Option<Timestamp>,
}

/// Reads one ApproverDecisions entry. AWS documents it only as "a JSON map that includes the
/// approval decision of each approver"; published examples show
/// `{"Approver": …, "Decision": "Approve", "ApprovalDecisionTime": …, "Comment": …}`. So any
/// capitalisation of the field names is read, an entry may also be a JSON list of such maps,
/// and `None` means the entry could not be read: the caller must then treat the operator's own
/// decision as unknown, never as absent. Comment and time are optional (AWS does not promise
/// them).
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
            comment: field("Comment").map(str::to_string),
            time: field("ApprovalDecisionTime").and_then(read_time),
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

/// An ISO 8601 time as AWS writes it: with an offset, or without one (UTC).
fn read_time(text: &str) -> Option<Timestamp> {
    text.parse::<Timestamp>().ok().or_else(|| {
        text.parse::<k8s_openapi::jiff::civil::DateTime>()
            .ok()
            .and_then(|t| t.to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC).ok())
            .map(|z| z.timestamp())
    })
}

/// What an execution's approval records say about one signal's decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// A decision that is provably this signal's.
    Ours,
    /// None of the decisions is this signal's.
    NotOurs,
    /// Some record cannot tell: why, in words.
    Unknown(String),
}

/// What the claim pinned for verification, and the signal's reference.
#[derive(Clone, Copy, Debug)]
pub struct Claimed<'a> {
    /// The step execution the signal was for, as the execution showed it at the claim.
    pub step: Option<&'a StepRef>,
    /// The principal the signal was sent as (Approve, Reject).
    pub principal: Option<&'a str>,
    /// The claim of the earliest attempt whose outcome is unknown.
    pub since: Timestamp,
    pub reference: &'a str,
}

/// Looks for `me`'s `verb` decision that is this signal's, on the aws:approve step execution
/// `step` (every approve step when `None`). A decision counts when it is `me`'s as a principal
/// (any session of the same role) and its Comment opens with this signal's reference. A
/// decision whose record keeps no Comment counts only on the step pinned at the claim and no
/// earlier than `since` less the clock skew; otherwise it makes the answer unknown.
pub fn approval_evidence(
    view: &ExecutionView,
    step: Option<&StepRef>,
    me: &str,
    verb: &str,
    since: Option<Timestamp>,
    reference: &str,
) -> Evidence {
    let marker = marker(reference);
    let pinned = step
        .map(|r| r.step_execution_id.as_str())
        .filter(|id| !id.is_empty());
    let mut unknown = None;
    let steps = view
        .steps
        .iter()
        .filter(|s| s.action == "aws:approve")
        .filter(|s| pinned.is_none_or(|id| s.step_execution_id == id));
    for s in steps {
        for entry in &s.approver_decisions {
            let Some(decisions) = read_decisions(entry) else {
                unknown = Some("an approval record could not be read".to_string());
                continue;
            };
            let mine = decisions.into_iter().filter(|d| {
                same_principal(&d.approver, me)
                    && d.decision
                        .to_ascii_lowercase()
                        .starts_with(&verb.to_ascii_lowercase())
            });
            for d in mine {
                match &d.comment {
                    Some(c) if c.starts_with(&marker) => return Evidence::Ours,
                    // The same principal's decision for another signal.
                    Some(_) => {}
                    None => {
                        let in_time = matches!(
                            (since, d.time),
                            (Some(since), Some(t)) if t >= since - crate::delivery::CLOCK_SKEW
                        );
                        if pinned.is_some() && in_time {
                            return Evidence::Ours;
                        }
                        unknown = Some(
                            "a decision by the operator's principal keeps no Comment that would \
                             tell whose it is"
                                .to_string(),
                        );
                    }
                }
            }
        }
    }
    unknown.map_or(Evidence::NotOurs, Evidence::Unknown)
}

/// The step execution a signal is for, as the execution shows it now (pinned in the claim):
/// the aws:approve step waiting for a decision (Approve, Reject), the paused step of that name
/// (Resume), or the step of that name with the number of its runs so far (StartStep).
pub fn step_for(view: &ExecutionView, signal: &SsmSignal<'_>) -> Option<StepRef> {
    let pin = |s: &StepView| StepRef {
        name: s.name.clone(),
        step_execution_id: s.step_execution_id.clone(),
        runs_before: 0,
    };
    match signal.signal_type {
        SignalType::Approve | SignalType::Reject => view
            .steps
            .iter()
            .rev()
            .find(|s| s.action == "aws:approve" && is_waiting(&s.status))
            .map(pin),
        SignalType::Resume => {
            let name = signal.first_payload_value("StepName")?;
            view.steps
                .iter()
                .rev()
                .find(|s| s.name == name && matches!(s.status.as_str(), "Waiting" | "Pending"))
                .map(pin)
        }
        SignalType::StartStep => {
            let name = signal.first_payload_value("StepName")?;
            Some(StepRef {
                name: name.to_string(),
                step_execution_id: String::new(),
                runs_before: ran(view, name),
            })
        }
        SignalType::StopStep | SignalType::Revoke => None,
    }
}

/// How many executions of step `name` have started running.
fn ran(view: &ExecutionView, name: &str) -> u32 {
    let n = view
        .steps
        .iter()
        .filter(|s| s.name == name && !matches!(s.status.as_str(), "Waiting" | "Pending"))
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The pure judgement: did the signal land, is the execution still waiting for it, or has it
/// moved on so that the signal can no longer apply? Only evidence that is provably this
/// signal's says "delivered"; what cannot tell is a failed (retried) verification.
pub fn judge(view: &ExecutionView, signal: &SsmSignal<'_>, claimed: &Claimed<'_>) -> VerifyOutcome {
    let finished = is_finished(&view.status);
    let gone = |why: &str| VerifyOutcome::NoLongerWaiting {
        why: why.to_string(),
    };
    let pinned_step = claimed
        .step
        .filter(|r| !r.step_execution_id.is_empty())
        .and_then(|r| {
            view.steps
                .iter()
                .find(|s| s.step_execution_id == r.step_execution_id)
        });
    match signal.signal_type {
        SignalType::Approve | SignalType::Reject => {
            let verb = decision_verb(signal.signal_type).unwrap_or_default();
            let Some(me) = claimed.principal else {
                return VerifyOutcome::Failed(unknown_caller());
            };
            match approval_evidence(
                view,
                claimed.step,
                me,
                verb,
                Some(claimed.since),
                claimed.reference,
            ) {
                Evidence::Ours => return VerifyOutcome::Delivered,
                Evidence::Unknown(why) => {
                    return VerifyOutcome::Failed(AwsFailure {
                        class: ErrorClass::Ambiguous,
                        code: None,
                        message: format!(
                            "{why}; cannot tell whether this signal's decision is there"
                        ),
                    })
                }
                Evidence::NotOurs => {}
            }
            let still_waiting = match pinned_step {
                Some(step) => is_waiting(&step.status),
                None => view
                    .steps
                    .iter()
                    .any(|s| s.action == "aws:approve" && is_waiting(&s.status)),
            };
            if !finished && still_waiting {
                VerifyOutcome::Absent
            } else {
                gone("the execution is no longer waiting for this approval decision")
            }
        }
        SignalType::Resume => {
            let Some(step_name) = signal.first_payload_value("StepName") else {
                return gone("the signal names no step");
            };
            let step =
                pinned_step.or_else(|| view.steps.iter().rev().find(|s| s.name == step_name));
            match step {
                // A paused step still waits.
                Some(step) if matches!(step.status.as_str(), "Waiting" | "Pending") => {
                    if finished {
                        gone("the execution ended before the step was resumed")
                    } else {
                        VerifyOutcome::Absent
                    }
                }
                Some(step)
                    if finished
                        && matches!(
                            step.status.as_str(),
                            "Cancelled" | "Cancelling" | "TimedOut"
                        ) =>
                {
                    gone("the execution ended before the step was resumed")
                }
                Some(_) => VerifyOutcome::Delivered,
                None if finished => gone("the execution ended before the step ran"),
                None => VerifyOutcome::Absent,
            }
        }
        SignalType::StartStep => {
            let Some(step_name) = signal.first_payload_value("StepName") else {
                return gone("the signal names no step");
            };
            // A run of the step that started after the claim (a looping runbook runs a step
            // name several times; an earlier round is no evidence).
            let before = claimed
                .step
                .filter(|r| r.name == step_name)
                .map_or(0, |r| r.runs_before);
            if ran(view, step_name) > before {
                VerifyOutcome::Delivered
            } else if finished {
                gone("the execution ended before the step ran")
            } else {
                VerifyOutcome::Absent
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
    const ROLE: &str = "arn:aws:iam::123456789012:role/Approver";
    const REF: &str = "0123456789ab";
    const OTHER_REF: &str = "ba9876543210";

    fn session(name: &str) -> String {
        format!("arn:aws:sts::123456789012:assumed-role/Approver/{name}")
    }

    fn approve_step(
        id: &str,
        status: &str,
        approval: Option<&str>,
        decisions: &[&str],
    ) -> StepView {
        StepView {
            name: format!("approve-{id}"),
            action: "aws:approve".into(),
            status: status.into(),
            step_execution_id: id.into(),
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

    /// A decision record as AWS's examples show it, with our reference's Comment.
    fn decision(who: &str, what: &str, reference: &str) -> String {
        serde_json::json!({
            "Approver": who,
            "Decision": what,
            "ApprovalDecisionTime": "2026-12-04T10:00:05.123456Z",
            "Comment": comment_for(reference, Some("alice"), None, Some("ok")),
        })
        .to_string()
    }

    fn at(text: &str) -> Timestamp {
        text.parse().expect("a time")
    }

    fn pinned(id: &str) -> StepRef {
        StepRef {
            name: format!("approve-{id}"),
            step_execution_id: id.into(),
            runs_before: 0,
        }
    }

    fn claimed<'a>(step: Option<&'a StepRef>, principal: Option<&'a str>) -> Claimed<'a> {
        Claimed {
            step,
            principal,
            since: at("2026-12-04T10:00:00Z"),
            reference: REF,
        }
    }

    fn execution(status: &str, steps: Vec<StepView>) -> ExecutionView {
        ExecutionView {
            status: status.into(),
            steps,
            ..Default::default()
        }
    }

    #[test]
    fn approve_waiting_is_absent_and_this_signals_decision_is_delivered() {
        let step = pinned("s-1");
        let c = claimed(Some(&step), Some(ME));
        let waiting = execution(
            "Waiting",
            vec![approve_step("s-1", "Waiting", Some("Waiting"), &[])],
        );
        assert_eq!(
            judge(&waiting, &signal("Approve", &[]), &c),
            VerifyOutcome::Absent
        );
        let mine = decision(ME, "Approve", REF);
        let partly = execution(
            "Waiting",
            vec![approve_step("s-1", "Waiting", Some("Waiting"), &[&mine])],
        );
        assert_eq!(
            judge(&partly, &signal("Approve", &[]), &c),
            VerifyOutcome::Delivered
        );
        assert_eq!(
            judge(&partly, &signal("Reject", &[]), &c),
            VerifyOutcome::Absent
        );
    }

    /// IRSA and Pod Identity: the process that verifies signs with another session of the
    /// same role than the one that sent.
    #[test]
    fn a_decision_by_another_session_of_the_same_role_is_ours() {
        let step = pinned("s-1");
        let c = claimed(Some(&step), Some(ROLE));
        let sent = decision(&session("web-identity-token-1733300000000"), "Approve", REF);
        let view = execution(
            "Waiting",
            vec![approve_step("s-1", "Waiting", Some("Waiting"), &[&sent])],
        );
        assert_eq!(
            judge(&view, &signal("Approve", &[]), &c),
            VerifyOutcome::Delivered
        );
        let done = execution(
            "Success",
            vec![approve_step("s-1", "Success", Some("Approved"), &[&sent])],
        );
        assert_eq!(
            judge(&done, &signal("Approve", &[]), &c),
            VerifyOutcome::Delivered
        );
    }

    /// Staging approved by the operator earlier; the prod Approve's send was not applied.
    #[test]
    fn a_decision_on_another_approval_step_is_not_evidence() {
        let staging = decision(ROLE, "Approve", OTHER_REF);
        let view = execution(
            "Waiting",
            vec![
                approve_step("staging", "Success", Some("Approved"), &[&staging]),
                approve_step("prod", "Waiting", Some("Waiting"), &[]),
            ],
        );
        let step = pinned("prod");
        assert_eq!(
            judge(
                &view,
                &signal("Approve", &[]),
                &claimed(Some(&step), Some(ROLE))
            ),
            VerifyOutcome::Absent
        );
        // Even a decision with this very reference on another step does not count when a step
        // was pinned: the pinned step is where this signal went.
        let ours_elsewhere = decision(ROLE, "Approve", REF);
        let view = execution(
            "Waiting",
            vec![
                approve_step("staging", "Success", Some("Approved"), &[&ours_elsewhere]),
                approve_step("prod", "Waiting", Some("Waiting"), &[]),
            ],
        );
        assert_eq!(
            judge(
                &view,
                &signal("Approve", &[]),
                &claimed(Some(&step), Some(ROLE))
            ),
            VerifyOutcome::Absent
        );
    }

    /// One identity for many namespaces: namespace X's decision is not Y's.
    #[test]
    fn the_same_principals_decision_for_another_signal_is_not_ours() {
        let theirs = decision(ME, "Approve", OTHER_REF);
        let view = execution(
            "Waiting",
            vec![approve_step("s-1", "Waiting", Some("Waiting"), &[&theirs])],
        );
        let step = pinned("s-1");
        assert_eq!(
            judge(
                &view,
                &signal("Approve", &[]),
                &claimed(Some(&step), Some(ME))
            ),
            VerifyOutcome::Absent
        );
        // A requester cannot write another signal's reference into their own Comment: only
        // a Comment that opens with it counts.
        let forged = serde_json::json!({
            "Approver": ME, "Decision": "Approve",
            "Comment": comment_for(OTHER_REF, Some("mallory"), None, Some(&marker(REF))),
        })
        .to_string();
        let view = execution(
            "Waiting",
            vec![approve_step("s-1", "Waiting", Some("Waiting"), &[&forged])],
        );
        assert_eq!(
            judge(
                &view,
                &signal("Approve", &[]),
                &claimed(Some(&step), Some(ME))
            ),
            VerifyOutcome::Absent
        );
    }

    /// AWS does not promise to keep the Comment: then the pinned step, the principal and the
    /// time are the evidence, and without a pinned step the answer is unknown.
    #[test]
    fn a_record_without_comment_counts_only_on_the_pinned_step_and_in_time() {
        let bare = |time: &str| {
            serde_json::json!({"Approver": session("s2"), "Decision": "Approve", "ApprovalDecisionTime": time})
                .to_string()
        };
        let step = pinned("s-1");
        let recent = bare("2026-12-04T10:00:01.5");
        let view = execution(
            "Waiting",
            vec![approve_step("s-1", "Waiting", Some("Waiting"), &[&recent])],
        );
        assert_eq!(
            judge(
                &view,
                &signal("Approve", &[]),
                &claimed(Some(&step), Some(ROLE))
            ),
            VerifyOutcome::Delivered
        );
        let old = bare("2026-12-04T09:00:00Z");
        let view = execution(
            "Waiting",
            vec![approve_step("s-1", "Waiting", Some("Waiting"), &[&old])],
        );
        assert!(matches!(
            judge(
                &view,
                &signal("Approve", &[]),
                &claimed(Some(&step), Some(ROLE))
            ),
            VerifyOutcome::Failed(AwsFailure {
                class: ErrorClass::Ambiguous,
                ..
            })
        ));
        let view = execution(
            "Waiting",
            vec![approve_step("s-1", "Waiting", Some("Waiting"), &[&recent])],
        );
        assert!(matches!(
            judge(&view, &signal("Approve", &[]), &claimed(None, Some(ROLE))),
            VerifyOutcome::Failed(AwsFailure {
                class: ErrorClass::Ambiguous,
                ..
            })
        ));
        // Before a first send only the reference proves an earlier delivery.
        assert!(matches!(
            approval_evidence(&view, None, ROLE, "Approve", None, REF),
            Evidence::Unknown(_)
        ));
    }

    #[test]
    fn an_unknown_caller_is_never_absent() {
        let step = pinned("s-1");
        let waiting = execution(
            "Waiting",
            vec![approve_step("s-1", "Waiting", Some("Waiting"), &[])],
        );
        assert!(matches!(
            judge(
                &waiting,
                &signal("Approve", &[]),
                &claimed(Some(&step), None)
            ),
            VerifyOutcome::Failed(AwsFailure {
                class: ErrorClass::NotSent,
                ..
            })
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
                decision: "Approve".into(),
                comment: Some("Looks good".into()),
                time: Some(at("2024-03-01T10:15:30.123Z")),
            }])
        );
        let list = format!("[{published}]");
        assert_eq!(read_decisions(&list).map(|d| d.len()), Some(1));
        // Someone else's comment: the same principal, not this signal.
        let view = execution(
            "Waiting",
            vec![approve_step(
                "s-1",
                "Waiting",
                Some("Waiting"),
                &[published],
            )],
        );
        let step = pinned("s-1");
        assert_eq!(
            judge(
                &view,
                &signal("Approve", &[]),
                &claimed(Some(&step), Some(ME))
            ),
            VerifyOutcome::Absent
        );
    }

    /// An entry that cannot be read makes our decision unknown: never "absent" (which would
    /// resend an approval that may have landed).
    #[test]
    fn an_unreadable_approval_record_is_unknown_not_absent() {
        let step = pinned("s-1");
        for entry in ["not json", r#"{"who":"x"}"#, r#"["x"]"#, "42"] {
            assert_eq!(read_decisions(entry), None, "{entry}");
            let view = execution(
                "Waiting",
                vec![approve_step("s-1", "Waiting", Some("Waiting"), &[entry])],
            );
            assert!(
                matches!(
                    judge(
                        &view,
                        &signal("Approve", &[]),
                        &claimed(Some(&step), Some(ME))
                    ),
                    VerifyOutcome::Failed(_)
                ),
                "{entry}"
            );
        }
    }

    #[test]
    fn the_comment_opens_with_the_reference_then_the_requester_within_the_limit() {
        assert_eq!(
            comment_for(REF, Some("alice@example.com"), None, Some("Looks good")),
            "[signalman:0123456789ab] requested by alice@example.com via signalman: Looks good"
        );
        assert_eq!(
            comment_for(REF, Some("alice"), None, None),
            "[signalman:0123456789ab] requested by alice via signalman"
        );
        assert_eq!(
            comment_for(REF, None, None, Some("ok")),
            "[signalman:0123456789ab] ok"
        );
        assert_eq!(
            comment_for(REF, None, None, None),
            "[signalman:0123456789ab]"
        );
        assert_eq!(
            comment_for(
                REF,
                Some("system:serviceaccount:argocd:app"),
                Some("carol"),
                Some("ok")
            ),
            "[signalman:0123456789ab] requested by system:serviceaccount:argocd:app via \
             signalman (approved by carol, as asserted by system:serviceaccount:argocd:app): ok"
        );
        let long = comment_for(REF, Some("bob"), None, Some(&"é".repeat(600)));
        assert_eq!(long.chars().count(), 512);
        assert!(long.starts_with("[signalman:0123456789ab] requested by bob via signalman: "));
    }

    #[test]
    fn approval_settled_by_someone_else_is_no_longer_waiting() {
        let other = decision("arn:aws:iam::123456789012:user/alice", "Reject", OTHER_REF);
        let view = execution(
            "Failed",
            vec![approve_step("s-1", "Failed", Some("Rejected"), &[&other])],
        );
        let step = pinned("s-1");
        assert!(matches!(
            judge(
                &view,
                &signal("Approve", &[]),
                &claimed(Some(&step), Some(ME))
            ),
            VerifyOutcome::NoLongerWaiting { .. }
        ));
    }

    #[test]
    fn the_claim_pins_the_waiting_approval_step() {
        let view = execution(
            "Waiting",
            vec![
                approve_step("staging", "Success", Some("Approved"), &[]),
                approve_step("prod", "Waiting", Some("Waiting"), &[]),
            ],
        );
        assert_eq!(
            step_for(&view, &signal("Approve", &[])),
            Some(pinned("prod"))
        );
        let done = execution(
            "Success",
            vec![approve_step("staging", "Success", None, &[])],
        );
        assert_eq!(step_for(&done, &signal("Reject", &[])), None);
    }

    fn step(name: &str, id: &str, status: &str) -> StepView {
        StepView {
            name: name.into(),
            action: "aws:pause".into(),
            status: status.into(),
            step_execution_id: id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn resume_reads_the_paused_step_execution_of_the_claim() {
        let resume = signal("Resume", &[("StepName", "pause")]);
        let paused = execution("Waiting", vec![step("pause", "p-1", "Waiting")]);
        let pin = step_for(&paused, &resume).expect("the paused step");
        assert_eq!(pin.step_execution_id, "p-1");
        let c = claimed(Some(&pin), None);
        assert_eq!(judge(&paused, &resume, &c), VerifyOutcome::Absent);
        let resumed = execution("Success", vec![step("pause", "p-1", "Success")]);
        assert_eq!(judge(&resumed, &resume, &c), VerifyOutcome::Delivered);
        let cancelled = execution("Cancelled", vec![step("pause", "p-1", "Waiting")]);
        assert!(matches!(
            judge(&cancelled, &resume, &c),
            VerifyOutcome::NoLongerWaiting { .. }
        ));
    }

    /// A looping runbook: round 1's pause was resumed long ago, round 2's waits.
    #[test]
    fn resume_in_a_loop_is_judged_on_its_own_round() {
        let resume = signal("Resume", &[("StepName", "pause")]);
        let round2 = execution(
            "Waiting",
            vec![
                step("pause", "p-1", "Success"),
                step("work", "w-1", "Success"),
                step("pause", "p-2", "Waiting"),
            ],
        );
        let pin = step_for(&round2, &resume).expect("the paused step");
        assert_eq!(pin.step_execution_id, "p-2");
        assert_eq!(
            judge(&round2, &resume, &claimed(Some(&pin), None)),
            VerifyOutcome::Absent
        );
        // Round 3 waiting again after round 2 was resumed: round 2 is delivered.
        let round3 = execution(
            "Waiting",
            vec![
                step("pause", "p-1", "Success"),
                step("pause", "p-2", "Success"),
                step("pause", "p-3", "Waiting"),
            ],
        );
        assert_eq!(
            judge(&round3, &resume, &claimed(Some(&pin), None)),
            VerifyOutcome::Delivered
        );
    }

    #[test]
    fn start_step_counts_the_runs_since_the_claim() {
        let start = signal("StartStep", &[("StepName", "deploy")]);
        let before = execution("Waiting", vec![step("deploy", "d-1", "Success")]);
        let pin = step_for(&before, &start).expect("a pin");
        assert_eq!(pin.runs_before, 1);
        let c = claimed(Some(&pin), None);
        // An earlier round's run is no evidence.
        assert_eq!(judge(&before, &start, &c), VerifyOutcome::Absent);
        let after = execution(
            "Waiting",
            vec![
                step("deploy", "d-1", "Success"),
                step("deploy", "d-2", "InProgress"),
            ],
        );
        assert_eq!(judge(&after, &start, &c), VerifyOutcome::Delivered);
        let not_started = execution("Waiting", vec![]);
        assert_eq!(
            judge(&not_started, &start, &claimed(None, None)),
            VerifyOutcome::Absent
        );
    }

    #[test]
    fn stop_step_reads_the_step_execution() {
        let stop = signal("StopStep", &[("StepExecutionId", "x-1")]);
        let c = claimed(None, None);
        let with = |status: &str| execution("Waiting", vec![step("s", "x-1", status)]);
        assert_eq!(judge(&with("InProgress"), &stop, &c), VerifyOutcome::Absent);
        assert_eq!(
            judge(&with("Cancelled"), &stop, &c),
            VerifyOutcome::Delivered
        );
        assert!(matches!(
            judge(&with("Success"), &stop, &c),
            VerifyOutcome::NoLongerWaiting { .. }
        ));
        assert_eq!(
            judge(&execution("Waiting", vec![]), &stop, &c),
            VerifyOutcome::NotFound
        );
    }
}
