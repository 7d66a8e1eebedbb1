//! One Automation execution and its state machine: steps, aws:approve, aws:pause,
//! Interactive mode and the signals that move them.
use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::document::{jump, Document, BRANCH};
use crate::error::ApiError;
use crate::identity::{approver_matches, principal_of};

pub(crate) const PENDING: &str = "Pending";
pub(crate) const IN_PROGRESS: &str = "InProgress";
pub(crate) const WAITING: &str = "Waiting";
pub(crate) const SUCCESS: &str = "Success";
pub(crate) const FAILED: &str = "Failed";
pub(crate) const CANCELLED: &str = "Cancelled";

/// An execution that loops through immediate steps this often is failed.
const MAX_STEP_EXECUTIONS: usize = 1000;
/// aws:sleep at least this long stays InProgress (the emulator runs shorter sleeps at once).
pub(crate) const LONG_RUNNING_SECS: f64 = 3600.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Auto,
    Interactive,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "Auto",
            Mode::Interactive => "Interactive",
        }
    }
}

#[derive(Clone, Debug)]
struct Decision {
    approver: String,
    approved: bool,
    comment: Option<String>,
    time: f64,
}

#[derive(Clone, Debug)]
enum Kind {
    Immediate,
    Approve {
        approvers: Vec<String>,
        min: usize,
        decisions: Vec<Decision>,
    },
    Pause,
    /// A long aws:sleep: runs until stopped, revoked or the execution is stopped.
    LongRunning,
}

#[derive(Clone, Debug)]
struct StepExec {
    id: String,
    def: usize,
    status: &'static str,
    start: f64,
    end: Option<f64>,
    inputs: Map<String, Value>,
    outputs: BTreeMap<String, Vec<String>>,
    failure: Option<String>,
    kind: Kind,
    /// An aws:branch step's choice: the step it goes to (None: its `nextStep` or the next one).
    branch: Option<usize>,
}

impl StepExec {
    fn active(&self) -> bool {
        self.status == IN_PROGRESS || self.status == WAITING
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Success,
    Failed,
    Cancelled,
}

/// What a signal touched, for the counters.
pub(crate) struct SignalEffect {
    pub step_name: Option<String>,
    pub step_execution_id: Option<String>,
}

#[derive(Clone, Debug)]
pub(crate) struct Execution {
    pub id: String,
    doc: Document,
    mode: Mode,
    status: &'static str,
    start: f64,
    end: Option<f64>,
    params: BTreeMap<String, Vec<String>>,
    executed_by: String,
    account_id: String,
    region: String,
    steps: Vec<StepExec>,
    failure: Option<String>,
}

fn invalid_signal(message: impl Into<String>) -> ApiError {
    ApiError::client("InvalidAutomationSignalException", message)
}

fn step_not_found(message: impl Into<String>) -> ApiError {
    ApiError::client("AutomationStepNotFoundException", message)
}

/// The one value of a payload key (StepName, StepExecutionId).
fn single<'a>(
    payload: &'a BTreeMap<String, Vec<String>>,
    key: &str,
    signal: &str,
) -> Result<&'a str, ApiError> {
    match payload.get(key).map(Vec::as_slice) {
        Some([one]) => Ok(one),
        _ => Err(invalid_signal(format!(
            "The {signal} signal needs exactly one {key} value in its payload"
        ))),
    }
}

/// Seconds of an ISO 8601 duration such as PT5S, PT1H30M, P1D.
pub(crate) fn iso_duration_secs(s: &str) -> Option<f64> {
    let rest = s.trim().strip_prefix('P')?;
    let (date, time) = rest.split_once('T').unwrap_or((rest, ""));
    let mut total = 0.0;
    for (part, units) in [
        (
            date,
            &[
                ('Y', 365.0 * 86400.0),
                ('M', 30.0 * 86400.0),
                ('W', 7.0 * 86400.0),
                ('D', 86400.0),
            ][..],
        ),
        (time, &[('H', 3600.0), ('M', 60.0), ('S', 1.0)][..]),
    ] {
        let mut num = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                num.push(c);
            } else {
                let (_, secs) = units.iter().find(|(u, _)| *u == c)?;
                total += num.parse::<f64>().ok()? * secs;
                num.clear();
            }
        }
        if !num.is_empty() {
            return None;
        }
    }
    Some(total)
}

fn value_strings(v: &Value) -> Vec<String> {
    match v {
        Value::Null => vec![],
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        other => vec![other.to_string()],
    }
}

impl Execution {
    /// Creates the execution and, in Auto mode, runs it until it waits or ends.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        id: String,
        doc: Document,
        params: BTreeMap<String, Vec<String>>,
        mode: Mode,
        executed_by: String,
        account_id: &str,
        region: &str,
        now: f64,
    ) -> Self {
        let mut exec = Self {
            id,
            doc,
            mode,
            status: if mode == Mode::Auto {
                IN_PROGRESS
            } else {
                WAITING
            },
            start: now,
            end: None,
            params,
            executed_by,
            account_id: account_id.to_string(),
            region: region.to_string(),
            steps: Vec::new(),
            failure: None,
        };
        if mode == Mode::Auto {
            exec.run(0, now);
        }
        exec
    }

    pub fn status(&self) -> &'static str {
        self.status
    }

    pub fn document_name(&self) -> &str {
        &self.doc.name
    }

    fn is_terminal(&self) -> bool {
        !matches!(self.status, PENDING | IN_PROGRESS | WAITING)
    }

    fn active(&self) -> Option<usize> {
        self.steps.iter().position(StepExec::active)
    }

    fn finish(&mut self, status: &'static str, failure: Option<String>, now: f64) {
        self.status = status;
        self.end = Some(now);
        if failure.is_some() {
            self.failure = failure;
        }
    }

    /// The step after `def` when it succeeds and is not an aws:branch.
    fn next_of(&self, def: usize) -> Option<usize> {
        self.doc.next_of(def)
    }

    /// The step after the latest execution of `def`, which has just succeeded: where an
    /// aws:branch chose to go, else [`Self::next_of`].
    fn next_after_success(&self, def: usize) -> Option<usize> {
        self.steps
            .iter()
            .rev()
            .find(|s| s.def == def)
            .and_then(|s| s.branch)
            .or_else(|| self.next_of(def))
    }

    /// Runs steps from `def` in Auto mode until one waits or the execution ends.
    fn run(&mut self, mut def: usize, now: f64) {
        loop {
            if self.steps.len() >= MAX_STEP_EXECUTIONS {
                self.finish(
                    FAILED,
                    Some(format!("More than {MAX_STEP_EXECUTIONS} step executions")),
                    now,
                );
                return;
            }
            match self.start_step(def, now) {
                None => return,
                Some(outcome) => match self.follow(def, outcome, now) {
                    Some(next) => def = next,
                    None => return,
                },
            }
        }
    }

    /// After step `def` ended with `outcome`: records what the execution does next and
    /// returns the step to run now (Auto mode only).
    fn follow(&mut self, def: usize, outcome: Outcome, now: f64) -> Option<usize> {
        let step = &self.doc.steps[def];
        let next = match outcome {
            Outcome::Success => self.next_after_success(def),
            Outcome::Failed => match step.on_failure.as_deref() {
                Some("Continue") => self.next_of(def),
                Some(p) if p.starts_with("step:") => {
                    jump(&step.on_failure).and_then(|n| self.doc.step_index(n))
                }
                _ => {
                    let message = self.steps.last().and_then(|s| s.failure.clone());
                    self.finish(FAILED, message, now);
                    return None;
                }
            },
            Outcome::Cancelled => match jump(&step.on_cancel) {
                Some(target) => self.doc.step_index(target),
                None if self.mode == Mode::Interactive => {
                    self.status = WAITING;
                    return None;
                }
                None => {
                    self.finish(CANCELLED, None, now);
                    return None;
                }
            },
        };
        match next {
            None => {
                self.finish(SUCCESS, None, now);
                None
            }
            Some(_) if self.mode == Mode::Interactive => {
                self.status = WAITING;
                None
            }
            Some(n) => {
                self.status = IN_PROGRESS;
                Some(n)
            }
        }
    }

    fn proceed(&mut self, def: usize, outcome: Outcome, now: f64) {
        if let Some(next) = self.follow(def, outcome, now) {
            self.run(next, now);
        }
    }

    /// Resolves `{{ Parameter }}` references in a step's inputs.
    fn resolve(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => {
                let t = s.trim();
                if let Some(name) = t
                    .strip_prefix("{{")
                    .and_then(|r| r.strip_suffix("}}"))
                    .map(str::trim)
                {
                    if !name.contains("{{") {
                        if let Some(typed) = self.typed_param(name) {
                            return typed;
                        }
                    }
                }
                let mut out = String::new();
                let mut rest = s.as_str();
                while let Some(open) = rest.find("{{") {
                    let Some(close) = rest[open..].find("}}") else {
                        break;
                    };
                    let name = rest[open + 2..open + close].trim();
                    out.push_str(&rest[..open]);
                    match self.param_text(name) {
                        Some(text) => out.push_str(&text),
                        None => out.push_str(&rest[open..open + close + 2]),
                    }
                    rest = &rest[open + close + 2..];
                }
                out.push_str(rest);
                Value::String(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(|i| self.resolve(i)).collect()),
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), self.resolve(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    fn builtin_var(&self, name: &str) -> Option<String> {
        match name {
            "automation:EXECUTION_ID" => Some(self.id.clone()),
            "global:ACCOUNT_ID" => Some(self.account_id.clone()),
            "global:REGION" => Some(self.region.clone()),
            _ => None,
        }
    }

    /// `{{ step.Output }}`: that output of the latest execution of the step that has it.
    fn step_output(&self, name: &str) -> Option<&Vec<String>> {
        let (step, key) = name.split_once('.')?;
        self.steps
            .iter()
            .rev()
            .filter(|s| self.doc.steps[s.def].name == step)
            .find_map(|s| s.outputs.get(key))
    }

    fn param_text(&self, name: &str) -> Option<String> {
        self.builtin_var(name)
            .or_else(|| self.params.get(name).map(|v| v.join(",")))
            .or_else(|| self.step_output(name).map(|v| v.join(",")))
    }

    fn typed_param(&self, name: &str) -> Option<Value> {
        if let Some(v) = self.builtin_var(name) {
            return Some(Value::String(v));
        }
        if !self.params.contains_key(name) {
            // ApproverDecisions is a list (MapList) even with one decision.
            return self.step_output(name).map(|v| match v.as_slice() {
                [one] if !name.ends_with(".ApproverDecisions") => Value::String(one.clone()),
                _ => json!(v),
            });
        }
        let values = self.params.get(name)?;
        let ty = self
            .doc
            .parameters
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.ty.as_str());
        let first = values.first().cloned().unwrap_or_default();
        Some(match ty {
            Some("StringList") | Some("MapList") => json!(values),
            Some("Integer") => first
                .parse::<i64>()
                .map(Value::from)
                .unwrap_or(Value::String(first)),
            Some("Boolean") => first
                .parse::<bool>()
                .map(Value::from)
                .unwrap_or(Value::String(first)),
            _ => Value::String(first),
        })
    }

    /// Starts step `def`. Returns the outcome when it ended at once, None when it waits or runs.
    fn start_step(&mut self, def: usize, now: f64) -> Option<Outcome> {
        let step = self.doc.steps[def].clone();
        let inputs: Map<String, Value> = step
            .inputs
            .iter()
            .map(|(k, v)| (k.clone(), self.resolve(v)))
            .collect();
        let mut exec = StepExec {
            id: crate::response::new_uuid(),
            def,
            status: IN_PROGRESS,
            start: now,
            end: None,
            inputs,
            outputs: BTreeMap::new(),
            failure: None,
            kind: Kind::Immediate,
            branch: None,
        };
        let outcome = match step.action.as_str() {
            BRANCH => match choose(&exec.inputs, &self.doc) {
                Ok(target) => {
                    exec.branch = target;
                    Some(Outcome::Success)
                }
                Err(problem) => {
                    exec.failure = Some(format!("Step {} failed: {problem}", step.name));
                    Some(Outcome::Failed)
                }
            },
            "aws:approve" => {
                let approvers = exec
                    .inputs
                    .get("Approvers")
                    .map(value_strings)
                    .unwrap_or_default();
                let min = match exec.inputs.get("MinRequiredApprovals") {
                    None | Some(Value::Null) => Some(1),
                    Some(Value::Number(n)) => n.as_u64().map(|n| n as usize),
                    Some(Value::String(s)) => s.trim().parse().ok(),
                    Some(_) => None,
                };
                let problem = match min {
                    _ if approvers.is_empty() || approvers.len() > 10 => Some(format!(
                        "Approvers must list 1 to 10 principals, not {}",
                        approvers.len()
                    )),
                    Some(m) if m >= 1 && m <= approvers.len() => None,
                    _ => Some(
                        "MinRequiredApprovals must be between 1 and the number of Approvers"
                            .to_string(),
                    ),
                };
                match problem {
                    Some(p) => {
                        exec.failure = Some(format!("Step {} failed: {p}", step.name));
                        Some(Outcome::Failed)
                    }
                    None => {
                        exec.kind = Kind::Approve {
                            approvers,
                            min: min.unwrap_or(1),
                            decisions: vec![],
                        };
                        exec.status = WAITING;
                        exec.outputs
                            .insert("ApprovalStatus".into(), vec!["Waiting".into()]);
                        None
                    }
                }
            }
            "aws:pause" => {
                exec.kind = Kind::Pause;
                exec.status = WAITING;
                None
            }
            "aws:sleep" if self.long_sleep(&exec.inputs, now) => {
                exec.kind = Kind::LongRunning;
                if self.approved_before() {
                    exec.outputs
                        .insert("AccessStatus".into(), vec!["Granted".into()]);
                }
                None
            }
            _ => Some(Outcome::Success),
        };
        match outcome {
            Some(Outcome::Success) => exec.status = SUCCESS,
            Some(_) => exec.status = FAILED,
            None => {}
        }
        if outcome.is_some() {
            exec.end = Some(now);
        }
        self.status = if exec.status == WAITING {
            WAITING
        } else {
            IN_PROGRESS
        };
        self.steps.push(exec);
        outcome
    }

    fn long_sleep(&self, inputs: &Map<String, Value>, now: f64) -> bool {
        if let Some(d) = inputs.get("Duration").and_then(Value::as_str) {
            return iso_duration_secs(d).is_some_and(|s| s >= LONG_RUNNING_SECS);
        }
        if let Some(ts) = inputs.get("Timestamp").and_then(Value::as_str) {
            if let Ok(t) = chrono::DateTime::parse_from_rfc3339(ts) {
                return t.timestamp() as f64 - now >= LONG_RUNNING_SECS;
            }
        }
        false
    }

    fn approved_before(&self) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(s.kind, Kind::Approve { .. }) && s.status == SUCCESS)
    }

    /// Applies a SendAutomationSignal (signal type already validated).
    pub fn signal(
        &mut self,
        signal: &str,
        payload: &BTreeMap<String, Vec<String>>,
        principal: &str,
        now: f64,
    ) -> Result<SignalEffect, ApiError> {
        if self.is_terminal() {
            return Err(invalid_signal(format!(
                "Automation execution {} has ended with status {}; it does not take the {signal} signal",
                self.id, self.status
            )));
        }
        match signal {
            "Approve" | "Reject" => self.decide(signal == "Approve", payload, principal, now),
            "Resume" => self.resume(payload, now),
            "StartStep" => self.start_step_signal(payload, now),
            "StopStep" => self.stop_step(payload, now),
            "Revoke" => self.revoke(principal, now),
            other => Err(ApiError::validation(format!(
                "Value '{other}' at 'signalType' is not a signal type"
            ))),
        }
    }

    fn effect(&self, index: usize) -> SignalEffect {
        let s = &self.steps[index];
        SignalEffect {
            step_name: Some(self.doc.steps[s.def].name.clone()),
            step_execution_id: Some(s.id.clone()),
        }
    }

    fn current_description(&self) -> String {
        match self.active() {
            Some(i) => {
                let def = &self.doc.steps[self.steps[i].def];
                format!(
                    "it is {} at step {} ({})",
                    self.status, def.name, def.action
                )
            }
            None => format!("it is {} with no step running", self.status),
        }
    }

    fn decide(
        &mut self,
        approve: bool,
        payload: &BTreeMap<String, Vec<String>>,
        principal: &str,
        now: f64,
    ) -> Result<SignalEffect, ApiError> {
        let signal = if approve { "Approve" } else { "Reject" };
        let waiting_approval = self.active().filter(|i| {
            matches!(self.steps[*i].kind, Kind::Approve { .. }) && self.steps[*i].status == WAITING
        });
        let Some(index) = waiting_approval else {
            return Err(invalid_signal(format!(
                "Automation execution {} is not waiting for an approval ({}); {signal} is not valid now",
                self.id,
                self.current_description()
            )));
        };
        let def = self.steps[index].def;
        let step_name = self.doc.steps[def].name.clone();
        let step = &mut self.steps[index];
        let Kind::Approve {
            approvers,
            min,
            decisions,
        } = &mut step.kind
        else {
            unreachable!()
        };
        if !approvers.iter().any(|a| approver_matches(a, principal)) {
            return Err(invalid_signal(format!(
                "{principal} is not an approver of step {step_name}; only the step's Approvers can {}",
                signal.to_lowercase()
            )));
        }
        // One decision per principal: a role's sessions are that role, whatever the
        // session (IRSA and Pod Identity name a new one at every refresh). AWS does not
        // document this; see the README.
        let caller = principal_of(principal);
        if decisions
            .iter()
            .any(|d| principal_of(&d.approver) == caller)
        {
            return Err(invalid_signal(format!(
                "{caller} has already sent a decision for step {step_name}"
            )));
        }
        // And one decision per Approvers entry: every decider needs an entry of its own.
        let deciders: Vec<&str> = decisions
            .iter()
            .map(|d| d.approver.as_str())
            .chain([principal])
            .collect();
        if !an_entry_each(approvers, &deciders) {
            return Err(invalid_signal(format!(
                "{caller} is named only by Approvers entries of step {step_name} that earlier decisions already count for; each entry counts once"
            )));
        }
        let comment = payload.get("Comment").and_then(|c| c.first()).cloned();
        decisions.push(Decision {
            approver: principal.to_string(),
            approved: approve,
            comment,
            time: now,
        });
        let approvals = decisions.iter().filter(|d| d.approved).count();
        let decision_json: Vec<String> = decisions
            .iter()
            .map(|d| {
                // The shape of the public examples (see the README): the signal type as
                // the decision, the decision time in ISO 8601 with microseconds.
                let mut v = json!({
                    "Approver": d.approver,
                    "Decision": if d.approved { "Approve" } else { "Reject" },
                    "ApprovalDecisionTime": iso8601_micros(d.time),
                });
                if let Some(c) = &d.comment {
                    v["Comment"] = json!(c);
                }
                v.to_string()
            })
            .collect();
        step.outputs
            .insert("ApproverDecisions".into(), decision_json);
        let outcome = if !approve {
            step.status = FAILED;
            step.failure = Some(format!("Step {step_name} was rejected by {principal}"));
            step.outputs
                .insert("ApprovalStatus".into(), vec!["Rejected".into()]);
            Some(Outcome::Failed)
        } else if approvals >= *min {
            step.status = SUCCESS;
            step.outputs
                .insert("ApprovalStatus".into(), vec!["Approved".into()]);
            Some(Outcome::Success)
        } else {
            None
        };
        if let Some(outcome) = outcome {
            step.end = Some(now);
            let effect = self.effect(index);
            self.proceed(def, outcome, now);
            return Ok(effect);
        }
        Ok(self.effect(index))
    }

    fn resume(
        &mut self,
        payload: &BTreeMap<String, Vec<String>>,
        now: f64,
    ) -> Result<SignalEffect, ApiError> {
        let name = single(payload, "StepName", "Resume")?;
        if self.doc.step_index(name).is_none() {
            return Err(step_not_found(format!(
                "Step {name} is not a step of document {}",
                self.doc.name
            )));
        }
        let paused = self.active().filter(|i| {
            let s = &self.steps[*i];
            matches!(s.kind, Kind::Pause)
                && s.status == WAITING
                && self.doc.steps[s.def].name == name
        });
        let Some(index) = paused else {
            return Err(invalid_signal(format!(
                "Step {name} is not paused, so it cannot be resumed ({})",
                self.current_description()
            )));
        };
        let def = self.steps[index].def;
        self.steps[index].status = SUCCESS;
        self.steps[index].end = Some(now);
        let effect = self.effect(index);
        self.proceed(def, Outcome::Success, now);
        Ok(effect)
    }

    fn start_step_signal(
        &mut self,
        payload: &BTreeMap<String, Vec<String>>,
        now: f64,
    ) -> Result<SignalEffect, ApiError> {
        if self.mode != Mode::Interactive {
            return Err(invalid_signal(format!(
                "Automation execution {} runs in Auto mode; StartStep is only valid in Interactive mode",
                self.id
            )));
        }
        let name = single(payload, "StepName", "StartStep")?;
        let Some(def) = self.doc.step_index(name) else {
            return Err(step_not_found(format!(
                "Step {name} is not a step of document {}",
                self.doc.name
            )));
        };
        if self.active().is_some() {
            return Err(invalid_signal(format!(
                "Step {name} cannot start now: {}",
                self.current_description()
            )));
        }
        let outcome = self.start_step(def, now);
        let effect = self.effect(self.steps.len() - 1);
        if let Some(outcome) = outcome {
            self.proceed(def, outcome, now);
        }
        Ok(effect)
    }

    fn stop_step(
        &mut self,
        payload: &BTreeMap<String, Vec<String>>,
        now: f64,
    ) -> Result<SignalEffect, ApiError> {
        let id = single(payload, "StepExecutionId", "StopStep")?;
        let Some(index) = self.steps.iter().position(|s| s.id == id) else {
            return Err(step_not_found(format!(
                "Step execution {id} does not exist in automation execution {}",
                self.id
            )));
        };
        let step = &mut self.steps[index];
        if !step.active() {
            return Err(invalid_signal(format!(
                "Step execution {id} has already ended with status {}",
                step.status
            )));
        }
        step.status = CANCELLED;
        step.end = Some(now);
        let def = step.def;
        let effect = self.effect(index);
        self.proceed(def, Outcome::Cancelled, now);
        Ok(effect)
    }

    fn revoke(&mut self, principal: &str, now: f64) -> Result<SignalEffect, ApiError> {
        let granted = self
            .active()
            .filter(|i| matches!(self.steps[*i].kind, Kind::LongRunning) && self.approved_before());
        let Some(index) = granted else {
            return Err(invalid_signal(format!(
                "Automation execution {} has no approved access to revoke ({})",
                self.id,
                self.current_description()
            )));
        };
        let step = &mut self.steps[index];
        step.status = SUCCESS;
        step.end = Some(now);
        step.outputs
            .insert("AccessStatus".into(), vec!["Revoked".into()]);
        step.outputs
            .insert("RevokedBy".into(), vec![principal.to_string()]);
        let def = step.def;
        let effect = self.effect(index);
        self.proceed(def, Outcome::Success, now);
        Ok(effect)
    }

    /// StopAutomationExecution: cancels the running step and the execution.
    pub fn stop(&mut self, now: f64) -> Result<(), ApiError> {
        if self.is_terminal() {
            return Err(ApiError::client(
                "InvalidAutomationStatusUpdateException",
                format!(
                    "Automation execution {} has already ended with status {}",
                    self.id, self.status
                ),
            ));
        }
        if let Some(i) = self.active() {
            self.steps[i].status = CANCELLED;
            self.steps[i].end = Some(now);
        }
        self.finish(CANCELLED, None, now);
        Ok(())
    }

    fn step_json(&self, s: &StepExec) -> Value {
        let def = &self.doc.steps[s.def];
        let inputs: Map<String, Value> = s
            .inputs
            .iter()
            .map(|(k, v)| (k.clone(), json!(v.to_string())))
            .collect();
        let mut v = json!({
            "StepName": def.name,
            "Action": def.action,
            "StepExecutionId": s.id,
            "StepStatus": s.status,
            "ExecutionStartTime": s.start,
            "Inputs": inputs,
            "OnFailure": def.on_failure.clone().unwrap_or_else(|| "Abort".into()),
            "MaxAttempts": def.max_attempts.unwrap_or(1),
            "IsEnd": def.is_end,
            "IsCritical": def.is_critical.unwrap_or(true),
            "OverriddenParameters": {},
        });
        if let Some(end) = s.end {
            v["ExecutionEndTime"] = json!(end);
        }
        if !s.outputs.is_empty() {
            v["Outputs"] = json!(s.outputs);
        }
        if let Some(f) = &s.failure {
            v["FailureMessage"] = json!(f);
        }
        if let Some(t) = def.timeout_seconds {
            v["TimeoutSeconds"] = json!(t);
        }
        if let Some(n) = &def.next_step {
            v["NextStep"] = json!(n);
        }
        let next: Vec<&str> = self
            .doc
            .successors(s.def)
            .into_iter()
            .map(|n| self.doc.steps[n].name.as_str())
            .collect();
        if !next.is_empty() {
            v["ValidNextSteps"] = json!(next);
        }
        v
    }

    /// Step executions that have started, in start order (DescribeAutomationStepExecutions).
    pub fn started_steps(&self) -> Vec<(f64, Value)> {
        self.steps
            .iter()
            .map(|s| (s.start, self.step_json(s)))
            .collect()
    }

    /// GetAutomationExecution's `AutomationExecution`.
    pub fn to_json(&self) -> Value {
        let mut steps: Vec<Value> = self.steps.iter().map(|s| self.step_json(s)).collect();
        for (i, def) in self.doc.steps.iter().enumerate() {
            if !self.steps.iter().any(|s| s.def == i) {
                steps.push(
                    json!({"StepName": def.name, "Action": def.action, "StepStatus": PENDING}),
                );
            }
        }
        let mut v = json!({
            "AutomationExecutionId": self.id,
            "DocumentName": self.doc.name,
            "DocumentVersion": self.doc.version,
            "ExecutionStartTime": self.start,
            "AutomationExecutionStatus": self.status,
            "Mode": self.mode.as_str(),
            "ExecutedBy": self.executed_by,
            "StepExecutions": steps,
            "StepExecutionsTruncated": false,
        });
        if !self.params.is_empty() {
            v["Parameters"] = json!(self.params);
        }
        if let Some(end) = self.end {
            v["ExecutionEndTime"] = json!(end);
        }
        if let Some(f) = &self.failure {
            v["FailureMessage"] = json!(f);
        }
        if let Some(i) = self.active() {
            let def = &self.doc.steps[self.steps[i].def];
            v["CurrentStepName"] = json!(def.name);
            v["CurrentAction"] = json!(def.action);
        }
        if !self.doc.outputs.is_empty() {
            let mut outputs = BTreeMap::new();
            for name in &self.doc.outputs {
                let (step, key) = name.split_once('.').unwrap_or((name, ""));
                let value = self
                    .steps
                    .iter()
                    .rev()
                    .find(|s| self.doc.steps[s.def].name == step && s.status == SUCCESS)
                    .and_then(|s| s.outputs.get(key).cloned())
                    .unwrap_or_else(|| {
                        vec![
                            "No output available yet because the step is not successfully executed"
                                .into(),
                        ]
                    });
                outputs.insert(name.clone(), value);
            }
            v["Outputs"] = json!(outputs);
        }
        v
    }
}

/// Where an aws:branch goes, from its resolved inputs: the `NextStep` of the first choice
/// that holds, else its `Default`, else None (its `nextStep`, or the next step).
fn choose(inputs: &Map<String, Value>, doc: &Document) -> Result<Option<usize>, String> {
    let choices = inputs
        .get("Choices")
        .and_then(Value::as_array)
        .ok_or("Choices is not a list")?;
    for choice in choices {
        let Some(choice) = choice.as_object() else {
            return Err("a choice is not an object".into());
        };
        if holds(choice)? {
            let target = choice.get("NextStep").and_then(Value::as_str).unwrap_or("");
            return doc
                .step_index(target)
                .map(Some)
                .ok_or_else(|| format!("NextStep {target} is not a step"));
        }
    }
    match inputs.get("Default").and_then(Value::as_str) {
        Some(d) => doc
            .step_index(d)
            .map(Some)
            .ok_or_else(|| format!("Default {d} is not a step")),
        None => Ok(None),
    }
}

/// A resolved value as the text a condition compares.
fn condition_text(v: &Value) -> Result<String, String> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Array(items) if items.len() == 1 => return condition_text(&items[0]),
        Value::Null => return Err("a Variable has no value".into()),
        other => other.to_string(),
    };
    if text.contains("{{") {
        return Err(format!("{text} could not be resolved"));
    }
    Ok(text)
}

/// Whether one (resolved) aws:branch condition holds.
fn holds(c: &Map<String, Value>) -> Result<bool, String> {
    let each = |v: &Value| -> Result<Vec<bool>, String> {
        v.as_array()
            .ok_or("And/Or is not a list")?
            .iter()
            .map(|inner| holds(inner.as_object().ok_or("a condition is not an object")?))
            .collect()
    };
    if let Some(all) = c.get("And") {
        return Ok(each(all)?.into_iter().all(|b| b));
    }
    if let Some(any) = c.get("Or") {
        return Ok(each(any)?.into_iter().any(|b| b));
    }
    if let Some(not) = c.get("Not") {
        return holds(not.as_object().ok_or("Not is not an object")?).map(|b| !b);
    }
    let variable = condition_text(c.get("Variable").unwrap_or(&Value::Null))?;
    let Some((op, operand)) = c.iter().find(|(k, _)| *k != "Variable" && *k != "NextStep") else {
        return Err("a condition has no operation".into());
    };
    let operand = condition_text(operand)?;
    let number = |s: &str| {
        s.trim()
            .parse::<f64>()
            .map_err(|_| format!("{op} compares numbers, and {s} is not one"))
    };
    let boolean = |s: &str| {
        s.trim()
            .parse::<bool>()
            .map_err(|_| format!("{op} compares true or false, and {s} is neither"))
    };
    Ok(match op.as_str() {
        "StringEquals" => variable == operand,
        "EqualsIgnoreCase" => variable.to_lowercase() == operand.to_lowercase(),
        "StartsWith" => variable.starts_with(&operand),
        "EndsWith" => variable.ends_with(&operand),
        "Contains" => variable.contains(&operand),
        "NumericEquals" => number(&variable)? == number(&operand)?,
        "NumericGreater" => number(&variable)? > number(&operand)?,
        "NumericLesser" => number(&variable)? < number(&operand)?,
        "NumericGreaterOrEquals" => number(&variable)? >= number(&operand)?,
        "NumericLesserOrEquals" => number(&variable)? <= number(&operand)?,
        "BooleanEquals" => boolean(&variable)? == boolean(&operand)?,
        other => return Err(format!("{other} is not an operation of aws:branch")),
    })
}

/// Whether every decider can be given an Approvers entry that names it, no entry given
/// twice (a bipartite matching, by augmenting paths: at most 10 entries).
fn an_entry_each(approvers: &[String], deciders: &[&str]) -> bool {
    fn place(
        decider: usize,
        approvers: &[String],
        deciders: &[&str],
        owner: &mut [Option<usize>],
        seen: &mut [bool],
    ) -> bool {
        for (entry, name) in approvers.iter().enumerate() {
            if seen[entry] || !approver_matches(name, deciders[decider]) {
                continue;
            }
            seen[entry] = true;
            let free = match owner[entry] {
                None => true,
                Some(other) => place(other, approvers, deciders, owner, seen),
            };
            if free {
                owner[entry] = Some(decider);
                return true;
            }
        }
        false
    }
    let mut owner = vec![None; approvers.len()];
    (0..deciders.len()).all(|d| {
        let mut seen = vec![false; approvers.len()];
        place(d, approvers, deciders, &mut owner, &mut seen)
    })
}

/// Epoch seconds as `2022-04-06T07:22:51.034463Z`.
fn iso8601_micros(epoch_seconds: f64) -> String {
    let micros = (epoch_seconds * 1_000_000.0).round() as i64;
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_times_are_written_like_the_public_example() {
        assert_eq!(
            iso8601_micros(1_649_229_771.034_463),
            "2022-04-06T07:22:51.034463Z"
        );
        assert_eq!(iso8601_micros(0.0), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn each_approvers_entry_counts_once() {
        let approvers = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let alice_a = "arn:aws:iam::111111111111:user/alice";
        let alice_b = "arn:aws:iam::222222222222:user/alice";
        // A user name entry names an alice of any account, but only one of them counts.
        assert!(an_entry_each(&approvers(&["alice"]), &[alice_a]));
        assert!(!an_entry_each(&approvers(&["alice"]), &[alice_a, alice_b]));
        // Entries are given so that as many deciders as possible count: alice_a takes her
        // ARN entry and leaves the name entry to alice_b.
        assert!(an_entry_each(
            &approvers(&["alice", alice_a]),
            &[alice_a, alice_b]
        ));
        let role = "arn:aws:iam::111111111111:role/R";
        let s1 = "arn:aws:sts::111111111111:assumed-role/R/s1";
        assert!(an_entry_each(
            &approvers(&[role, "release-manager"]),
            &[s1, "arn:aws:iam::111111111111:user/release-manager"]
        ));
    }

    #[test]
    fn durations() {
        assert_eq!(iso_duration_secs("PT5S"), Some(5.0));
        assert_eq!(iso_duration_secs("PT1H30M"), Some(5400.0));
        assert_eq!(iso_duration_secs("P1DT1S"), Some(86401.0));
        assert_eq!(iso_duration_secs("5S"), None);
        assert_eq!(iso_duration_secs("PT5X"), None);
    }
}
