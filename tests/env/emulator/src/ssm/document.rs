//! Automation documents (runbooks): parsing schemaVersion 0.3 content and the built-ins.
use serde_json::{json, Map, Value};

use crate::error::ApiError;

/// A declared runbook parameter.
#[derive(Clone, Debug)]
pub(crate) struct ParamDef {
    pub name: String,
    pub ty: String,
    pub default: Option<Value>,
    pub description: Option<String>,
}

/// One entry of `mainSteps`.
#[derive(Clone, Debug)]
pub(crate) struct StepDef {
    pub name: String,
    pub action: String,
    pub inputs: Map<String, Value>,
    pub on_failure: Option<String>,
    pub on_cancel: Option<String>,
    pub is_end: bool,
    pub next_step: Option<String>,
    pub timeout_seconds: Option<i64>,
    pub max_attempts: Option<i64>,
    pub is_critical: Option<bool>,
}

#[derive(Clone, Debug)]
pub(crate) struct Document {
    pub name: String,
    pub version: String,
    pub format: String,
    pub description: Option<String>,
    pub parameters: Vec<ParamDef>,
    pub steps: Vec<StepDef>,
    pub outputs: Vec<String>,
    pub created: f64,
    pub owner: String,
}

const PARAM_TYPES: [&str; 6] = [
    "String",
    "StringList",
    "Integer",
    "Boolean",
    "MapList",
    "StringMap",
];

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::client("InvalidDocumentContent", message)
}

fn opt_string(obj: &Map<String, Value>, key: &str, ctx: &str) -> Result<Option<String>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(format!("{ctx}: {key} must be a string"))),
    }
}

fn opt_int(obj: &Map<String, Value>, key: &str, ctx: &str) -> Result<Option<i64>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64()),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| invalid(format!("{ctx}: {key} must be an integer"))),
        Some(_) => Err(invalid(format!("{ctx}: {key} must be an integer"))),
    }
}

fn opt_bool(obj: &Map<String, Value>, key: &str, ctx: &str) -> Result<Option<bool>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s == "true" || s == "false" => Ok(Some(s == "true")),
        Some(_) => Err(invalid(format!("{ctx}: {key} must be a boolean"))),
    }
}

fn valid_action(action: &str) -> bool {
    action
        .strip_prefix("aws:")
        .is_some_and(|a| (3..=40).contains(&a.len()) && a.chars().all(|c| c.is_ascii_alphabetic()))
}

fn valid_step_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Document {
    /// Parses document content (already decoded from JSON or YAML).
    pub fn parse(
        name: &str,
        content: &Value,
        format: &str,
        created: f64,
        owner: &str,
    ) -> Result<Self, ApiError> {
        let doc = content
            .as_object()
            .ok_or_else(|| invalid("The document content must be a JSON or YAML object"))?;
        let schema = match doc.get("schemaVersion") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        };
        if schema != "0.3" {
            return Err(ApiError::client(
                "InvalidDocumentSchemaVersion",
                format!("Automation documents need schemaVersion '0.3', not '{schema}'"),
            ));
        }
        let description = opt_string(doc, "description", "document")?;

        let mut parameters = Vec::new();
        match doc.get("parameters") {
            None | Some(Value::Null) => {}
            Some(Value::Object(params)) => {
                for (pname, def) in params {
                    let def = def
                        .as_object()
                        .ok_or_else(|| invalid(format!("parameter {pname}: must be an object")))?;
                    let ctx = format!("parameter {pname}");
                    let ty = opt_string(def, "type", &ctx)?
                        .ok_or_else(|| invalid(format!("{ctx}: type is required")))?;
                    if !PARAM_TYPES.contains(&ty.as_str()) {
                        return Err(invalid(format!(
                            "{ctx}: type must be one of {}",
                            PARAM_TYPES.join(", ")
                        )));
                    }
                    parameters.push(ParamDef {
                        name: pname.clone(),
                        ty,
                        default: def.get("default").cloned(),
                        description: opt_string(def, "description", &ctx)?,
                    });
                }
            }
            Some(_) => return Err(invalid("parameters must be an object")),
        }

        let steps_json = doc
            .get("mainSteps")
            .and_then(Value::as_array)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid("mainSteps must be a non-empty list"))?;
        let mut steps: Vec<StepDef> = Vec::new();
        for (i, step) in steps_json.iter().enumerate() {
            let step = step
                .as_object()
                .ok_or_else(|| invalid(format!("mainSteps[{i}] must be an object")))?;
            let ctx = format!("mainSteps[{i}]");
            let sname = opt_string(step, "name", &ctx)?
                .ok_or_else(|| invalid(format!("{ctx}: name is required")))?;
            if !valid_step_name(&sname) {
                return Err(invalid(format!(
                    "{ctx}: step name '{sname}' may only hold letters, digits and _"
                )));
            }
            if steps.iter().any(|s| s.name == sname) {
                return Err(invalid(format!("step name '{sname}' is used twice")));
            }
            let ctx = format!("step {sname}");
            let action = opt_string(step, "action", &ctx)?
                .ok_or_else(|| invalid(format!("{ctx}: action is required")))?;
            if !valid_action(&action) {
                return Err(invalid(format!(
                    "{ctx}: action '{action}' is not of the form aws:<name>"
                )));
            }
            let inputs = match step.get("inputs") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(m)) => m.clone(),
                Some(_) => return Err(invalid(format!("{ctx}: inputs must be an object"))),
            };
            steps.push(StepDef {
                name: sname,
                action,
                inputs,
                on_failure: opt_string(step, "onFailure", &ctx)?,
                on_cancel: opt_string(step, "onCancel", &ctx)?,
                is_end: opt_bool(step, "isEnd", &ctx)?.unwrap_or(false),
                next_step: opt_string(step, "nextStep", &ctx)?,
                timeout_seconds: opt_int(step, "timeoutSeconds", &ctx)?,
                max_attempts: opt_int(step, "maxAttempts", &ctx)?,
                is_critical: opt_bool(step, "isCritical", &ctx)?,
            });
        }
        for step in &steps {
            let targets = [
                step.next_step.as_deref(),
                jump(&step.on_failure),
                jump(&step.on_cancel),
            ];
            for target in targets.into_iter().flatten() {
                if !steps.iter().any(|s| s.name == target) {
                    return Err(invalid(format!(
                        "step {}: refers to unknown step '{target}'",
                        step.name
                    )));
                }
            }
        }
        for step in steps.iter().filter(|s| s.action == BRANCH) {
            check_branch(step, &steps)?;
        }
        check_loops(&steps)?;
        let outputs = match doc.get("outputs") {
            None | Some(Value::Null) => vec![],
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            Some(_) => return Err(invalid("outputs must be a list of step.Output names")),
        };

        Ok(Self {
            name: name.to_string(),
            version: "1".to_string(),
            format: format.to_string(),
            description,
            parameters,
            steps,
            outputs,
            created,
            owner: owner.to_string(),
        })
    }

    pub fn step_index(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.name == name)
    }

    /// The step after step `def` when it succeeds and does not branch: its `nextStep`, else
    /// the next one in `mainSteps`; none after an `isEnd` step or the last one.
    pub fn next_of(&self, def: usize) -> Option<usize> {
        next_in(&self.steps, def)
    }

    /// Every step that can follow step `def` when it succeeds, in order, once each: for an
    /// aws:branch, its choices' `NextStep`s and its `Default` (or, without one, the step
    /// [`Self::next_of`] names).
    pub fn successors(&self, def: usize) -> Vec<usize> {
        let (mut next, _) = success_edges(&self.steps, def);
        let mut seen = Vec::new();
        next.retain(|n| {
            let fresh = !seen.contains(n);
            seen.push(*n);
            fresh
        });
        next
    }

    /// The `DocumentDescription` of CreateDocument's answer.
    pub fn description_json(&self) -> Value {
        let params: Vec<Value> = self
            .parameters
            .iter()
            .map(|p| {
                let mut v = json!({"Name": p.name, "Type": p.ty});
                if let Some(d) = &p.description {
                    v["Description"] = json!(d);
                }
                if let Some(d) = &p.default {
                    v["DefaultValue"] = json!(match d {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    });
                }
                v
            })
            .collect();
        let mut v = json!({
            "Name": self.name,
            "Owner": self.owner,
            "CreatedDate": self.created,
            "Status": "Active",
            "DocumentVersion": self.version,
            "LatestVersion": self.version,
            "DefaultVersion": self.version,
            "DocumentType": "Automation",
            "SchemaVersion": "0.3",
            "DocumentFormat": self.format,
            "PlatformTypes": ["Windows", "Linux", "MacOS"],
            "Parameters": params,
            "Tags": [],
        });
        if let Some(d) = &self.description {
            v["Description"] = json!(d);
        }
        v
    }
}

pub(crate) const BRANCH: &str = "aws:branch";

/// The operations of an aws:branch choice (the Systems Manager User Guide's list).
pub(crate) const BRANCH_OPERATIONS: [&str; 11] = [
    "StringEquals",
    "EqualsIgnoreCase",
    "StartsWith",
    "EndsWith",
    "Contains",
    "NumericEquals",
    "NumericGreater",
    "NumericLesser",
    "NumericGreaterOrEquals",
    "NumericLesserOrEquals",
    "BooleanEquals",
];

fn next_in(steps: &[StepDef], def: usize) -> Option<usize> {
    let step = &steps[def];
    if step.is_end {
        return None;
    }
    match &step.next_step {
        Some(name) => steps.iter().position(|s| &s.name == name),
        None => (def + 1 < steps.len()).then_some(def + 1),
    }
}

/// The steps step `def` can go on to when it succeeds, and whether the execution can end
/// there instead.
fn success_edges(steps: &[StepDef], def: usize) -> (Vec<usize>, bool) {
    let step = &steps[def];
    let index = |name: &str| steps.iter().position(|s| s.name == name);
    let mut next = Vec::new();
    let mut fallback = true;
    if step.action == BRANCH {
        if let Some(choices) = step.inputs.get("Choices").and_then(Value::as_array) {
            next.extend(
                choices
                    .iter()
                    .filter_map(|c| c.get("NextStep").and_then(Value::as_str))
                    .filter_map(index),
            );
        }
        if let Some(default) = step.inputs.get("Default").and_then(Value::as_str) {
            next.extend(index(default));
            fallback = false;
        }
    }
    if fallback {
        match next_in(steps, def) {
            Some(n) => next.push(n),
            None => return (next, true),
        }
    }
    (next, false)
}

/// An aws:branch step's inputs: `Choices` (each a `NextStep` and a condition) and an
/// optional `Default`, every operation one the action supports, every step named existing.
fn check_branch(step: &StepDef, steps: &[StepDef]) -> Result<(), ApiError> {
    let ctx = format!("step {}", step.name);
    let names_step = |v: Option<&Value>, what: &str| match v.and_then(Value::as_str) {
        Some(name) if steps.iter().any(|s| s.name == name) => Ok(()),
        Some(name) => Err(invalid(format!(
            "{ctx}: {what} refers to unknown step '{name}'"
        ))),
        None => Err(invalid(format!("{ctx}: {what} must name a step"))),
    };
    if let Some(key) = step
        .inputs
        .keys()
        .find(|k| !matches!(k.as_str(), "Choices" | "Default"))
    {
        return Err(invalid(format!(
            "{ctx}: aws:branch takes the inputs Choices and Default, not {key}"
        )));
    }
    let choices = step
        .inputs
        .get("Choices")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| invalid(format!("{ctx}: Choices must be a non-empty list")))?;
    for (i, choice) in choices.iter().enumerate() {
        let choice = choice
            .as_object()
            .ok_or_else(|| invalid(format!("{ctx}: Choices[{i}] must be an object")))?;
        names_step(choice.get("NextStep"), &format!("Choices[{i}].NextStep"))?;
        let mut condition = choice.clone();
        condition.remove("NextStep");
        check_condition(&condition, &format!("{ctx}: Choices[{i}]"))?;
    }
    if step.inputs.contains_key("Default") {
        names_step(step.inputs.get("Default"), "Default")?;
    }
    Ok(())
}

/// One condition: `And`/`Or` (a non-empty list of conditions), `Not` (a condition), or a
/// `Variable` with exactly one operation.
fn check_condition(c: &Map<String, Value>, ctx: &str) -> Result<(), ApiError> {
    let nested = |v: &Value, ctx: &str| match v.as_object() {
        Some(inner) => check_condition(inner, ctx),
        None => Err(invalid(format!("{ctx} must be an object"))),
    };
    let keys: Vec<&str> = c.keys().map(String::as_str).collect();
    match keys.as_slice() {
        [op @ ("And" | "Or")] => {
            let list = c[*op]
                .as_array()
                .filter(|l| !l.is_empty())
                .ok_or_else(|| invalid(format!("{ctx}: {op} must be a non-empty list")))?;
            for (i, inner) in list.iter().enumerate() {
                nested(inner, &format!("{ctx}.{op}[{i}]"))?;
            }
            Ok(())
        }
        ["Not"] => nested(&c["Not"], &format!("{ctx}.Not")),
        _ => {
            if !c.get("Variable").is_some_and(Value::is_string) {
                return Err(invalid(format!(
                    "{ctx}: a condition needs a Variable (or And, Or, Not)"
                )));
            }
            let ops: Vec<&str> = keys.into_iter().filter(|k| *k != "Variable").collect();
            match ops.as_slice() {
                [op] if BRANCH_OPERATIONS.contains(op) => Ok(()),
                [op] => Err(invalid(format!(
                    "{ctx}: {op} is not an operation of aws:branch ({})",
                    BRANCH_OPERATIONS.join(", ")
                ))),
                _ => Err(invalid(format!(
                    "{ctx}: a condition takes exactly one operation besides its Variable"
                ))),
            }
        }
    }
}

/// Refuses a runbook whose steps can loop with no way out, as Automation does ("Before
/// processing a runbook, the system verifies that the runbook doesn't create an infinite
/// loop", Systems Manager User Guide, conditional branching): judged on the connections
/// after success (`nextStep`, the order of `mainSteps`, aws:branch's choices and default,
/// `isEnd`), not on conditions. A loop an aws:branch can leave is allowed.
fn check_loops(steps: &[StepDef]) -> Result<(), ApiError> {
    let edges: Vec<(Vec<usize>, bool)> =
        (0..steps.len()).map(|i| success_edges(steps, i)).collect();
    let mut ends: Vec<bool> = edges.iter().map(|(_, end)| *end).collect();
    let mut changed = true;
    while changed {
        changed = false;
        for (i, (next, _)) in edges.iter().enumerate() {
            if !ends[i] && next.iter().any(|n| ends[*n]) {
                ends[i] = true;
                changed = true;
            }
        }
    }
    let Some(start) = ends.iter().position(|e| !e) else {
        return Ok(());
    };
    // Every step after one that cannot end cannot end either: walk until one repeats.
    let mut path = vec![start];
    loop {
        let next = edges[*path.last().expect("not empty")].0[0];
        if let Some(pos) = path.iter().position(|p| *p == next) {
            let circle: Vec<&str> = path[pos..]
                .iter()
                .chain([&next])
                .map(|i| steps[*i].name.as_str())
                .collect();
            return Err(invalid(format!(
                "The runbook has an infinite loop: {} (no step of it leads to the end of the runbook)",
                circle.join(" -> ")
            )));
        }
        path.push(next);
    }
}

/// The target of `onFailure`/`onCancel: step:<name>`.
pub(crate) fn jump(policy: &Option<String>) -> Option<&str> {
    policy.as_deref().and_then(|p| p.strip_prefix("step:"))
}

/// Names of the documents every emulator has without CreateDocument.
pub const BUILTIN_DOCUMENTS: [&str; 7] = [
    "Signalman-Approve",
    "Signalman-Pause",
    "Signalman-Steps",
    "Signalman-AccessRequest",
    "Signalman-TwoApprovals",
    "Signalman-PauseLoop",
    "Signalman-ApproveLoop",
];

fn approvers_params(extra: Value) -> Value {
    let mut params = json!({
        "Approvers": {
            "type": "StringList",
            "description": "IAM user names, or user, role or assumed-role ARNs (1 to 10) allowed to approve"
        },
        "MinRequiredApprovals": {"type": "Integer", "default": 1,
            "description": "Approvals needed to continue"},
        "Message": {"type": "String", "default": "signalman test approval",
            "description": "Text of the approval request"}
    });
    if let (Some(p), Value::Object(extra)) = (params.as_object_mut(), extra) {
        p.extend(extra);
    }
    params
}

fn approve_step() -> Value {
    approve_step_with("approve", "Approvers", "MinRequiredApprovals")
}

/// An aws:approve step `name` taking its approvers and minimum from those parameters.
fn approve_step_with(name: &str, approvers: &str, min: &str) -> Value {
    json!({
        "name": name,
        "action": "aws:approve",
        "onFailure": "Abort",
        "inputs": {
            "Approvers": format!("{{{{ {approvers} }}}}"),
            "MinRequiredApprovals": format!("{{{{ {min} }}}}"),
            "Message": "{{ Message }}"
        }
    })
}

fn repeat_param() -> Value {
    json!({"type": "Boolean", "default": true,
        "description": "true: go round again after `work` until the execution is stopped; false: one round, then `finish`"})
}

/// `work` (a short sleep) then `again`, an aws:branch back to `back_to` while Repeat is
/// true, else on to `finish`.
fn loop_tail(back_to: &str) -> [Value; 2] {
    [
        json!({"name": "work", "action": "aws:sleep", "inputs": {"Duration": "PT1S"}}),
        json!({
            "name": "again",
            "action": "aws:branch",
            "inputs": {
                "Choices": [{"NextStep": back_to, "Variable": "{{ Repeat }}", "BooleanEquals": true}],
                "Default": "finish"
            }
        }),
    ]
}

fn script_step(name: &str, n: u32) -> Value {
    json!({
        "name": name,
        "action": "aws:executeScript",
        "inputs": {
            "Runtime": "python3.11",
            "Handler": "handler",
            "Script": format!("def handler(events, context):\n    return {{'step': {n}}}\n")
        }
    })
}

/// The content of a built-in document.
pub(crate) fn builtin_content(name: &str) -> Option<Value> {
    let finish = json!({"name": "finish", "action": "aws:sleep", "isEnd": true, "inputs": {"Duration": "PT1S"}});
    Some(match name {
        "Signalman-Approve" => json!({
            "schemaVersion": "0.3",
            "description": "Waits at the aws:approve step `approve` for the Approvers parameter, then runs `finish`.",
            "parameters": approvers_params(json!({})),
            "mainSteps": [approve_step(), finish]
        }),
        "Signalman-Pause" => json!({
            "schemaVersion": "0.3",
            "description": "Waits at the aws:pause step `pause` until a Resume signal, then runs `finish`.",
            "mainSteps": [{"name": "pause", "action": "aws:pause", "inputs": {}}, finish]
        }),
        "Signalman-Steps" => json!({
            "schemaVersion": "0.3",
            "description": "Three steps for Interactive mode: step1 (script), step2 (a 24h sleep that stays InProgress until stopped), step3 (script).",
            "mainSteps": [
                script_step("step1", 1),
                {"name": "step2", "action": "aws:sleep", "inputs": {"Duration": "PT24H"}},
                script_step("step3", 3)
            ]
        }),
        "Signalman-AccessRequest" => json!({
            "schemaVersion": "0.3",
            "description": "A just-in-time access request: `approve`, then `grantAccess` keeps access open for AccessDuration (InProgress) until it ends or a Revoke signal ends it; then `endAccess`.",
            "parameters": approvers_params(json!({
                "AccessDuration": {"type": "String", "default": "PT8H",
                    "description": "ISO 8601 duration of the access window"}
            })),
            "mainSteps": [
                approve_step(),
                {"name": "grantAccess", "action": "aws:sleep", "inputs": {"Duration": "{{ AccessDuration }}"}},
                script_step("endAccess", 3)
            ]
        }),
        "Signalman-TwoApprovals" => json!({
            "schemaVersion": "0.3",
            "description": "Two aws:approve steps in a row: `approveStaging` (StagingApprovers), then `approveProd` (ProdApprovers), then `finish`.",
            "parameters": {
                "StagingApprovers": {"type": "StringList",
                    "description": "Approvers of approveStaging (1 to 10)"},
                "ProdApprovers": {"type": "StringList",
                    "description": "Approvers of approveProd (1 to 10)"},
                "StagingMinRequiredApprovals": {"type": "Integer", "default": 1,
                    "description": "Approvals approveStaging needs"},
                "ProdMinRequiredApprovals": {"type": "Integer", "default": 1,
                    "description": "Approvals approveProd needs"},
                "Message": {"type": "String", "default": "signalman test approval",
                    "description": "Text of both approval requests"}
            },
            "mainSteps": [
                approve_step_with("approveStaging", "StagingApprovers", "StagingMinRequiredApprovals"),
                approve_step_with("approveProd", "ProdApprovers", "ProdMinRequiredApprovals"),
                finish
            ]
        }),
        "Signalman-PauseLoop" => {
            let [work, again] = loop_tail("pause");
            json!({
                "schemaVersion": "0.3",
                "description": "A loop: `pause` (aws:pause) until Resume, `work`, then `again` goes back to `pause` while Repeat is true (until the execution is stopped), else to `finish`.",
                "parameters": {"Repeat": repeat_param()},
                "mainSteps": [{"name": "pause", "action": "aws:pause", "inputs": {}}, work, again, finish]
            })
        }
        "Signalman-ApproveLoop" => {
            let [work, again] = loop_tail("approve");
            json!({
                "schemaVersion": "0.3",
                "description": "A loop: `approve` (aws:approve) until approved, `work`, then `again` goes back to `approve` while Repeat is true (until the execution is stopped or a rejection fails it), else to `finish`.",
                "parameters": approvers_params(json!({"Repeat": repeat_param()})),
                "mainSteps": [approve_step(), work, again, finish]
            })
        }
        _ => return None,
    })
}

/// A built-in document, owned by Amazon like the AWS-* documents.
pub(crate) fn builtin(name: &str) -> Option<Document> {
    let content = builtin_content(name)?;
    Some(
        Document::parse(name, &content, "JSON", 0.0, "Amazon")
            .expect("built-in documents are valid"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_parse() {
        for name in BUILTIN_DOCUMENTS {
            let doc = builtin(name).unwrap();
            assert!(!doc.steps.is_empty(), "{name}");
        }
        assert!(builtin("AWS-Nope").is_none());
    }

    fn parse(content: Value) -> Result<Document, ApiError> {
        Document::parse("x", &content, "JSON", 0.0, "o")
    }

    #[test]
    fn a_loop_with_no_way_out_is_refused() {
        let err = parse(json!({"schemaVersion": "0.3", "mainSteps": [
            {"name": "first", "action": "aws:sleep", "inputs": {"Duration": "PT1S"}},
            {"name": "pause", "action": "aws:pause"},
            {"name": "work", "action": "aws:sleep", "nextStep": "pause", "inputs": {"Duration": "PT1S"}},
            {"name": "finish", "action": "aws:sleep", "inputs": {"Duration": "PT1S"}}
        ]}))
        .unwrap_err();
        assert_eq!(err.code, "InvalidDocumentContent");
        assert!(
            err.message.contains("pause -> work -> pause"),
            "{}",
            err.message
        );
        // A step that names itself.
        let err = parse(json!({"schemaVersion": "0.3", "mainSteps": [
            {"name": "again", "action": "aws:sleep", "nextStep": "again"}
        ]}))
        .unwrap_err();
        assert!(err.message.contains("again -> again"), "{}", err.message);
        // Going back is fine when an aws:branch can leave the loop, or an isEnd step ends it.
        let ok = parse(json!({"schemaVersion": "0.3", "mainSteps": [
            {"name": "pause", "action": "aws:pause"},
            {"name": "again", "action": "aws:branch", "inputs": {
                "Choices": [{"NextStep": "pause", "Variable": "{{ x }}", "StringEquals": "y"}]}},
            {"name": "finish", "action": "aws:sleep", "isEnd": true}
        ]}))
        .unwrap();
        assert_eq!(ok.successors(1), [0, 2]);
        assert_eq!(ok.next_of(2), None);
    }

    #[test]
    fn branch_inputs_are_checked() {
        let doc = |choices: Value| {
            parse(json!({"schemaVersion": "0.3", "mainSteps": [
                {"name": "b", "action": "aws:branch", "inputs": {"Choices": choices, "Default": "end"}},
                {"name": "end", "action": "aws:sleep"}
            ]}))
        };
        for bad in [
            json!([]),
            json!([{"NextStep": "end", "Variable": "{{ x }}", "Matches": "y"}]),
            json!([{"NextStep": "end", "Variable": "{{ x }}"}]),
            json!([{"NextStep": "end", "Variable": "{{ x }}", "StringEquals": "a", "Contains": "b"}]),
            json!([{"NextStep": "nowhere", "Variable": "{{ x }}", "StringEquals": "y"}]),
            json!([{"Variable": "{{ x }}", "StringEquals": "y"}]),
            json!([{"NextStep": "end", "And": []}]),
            json!([{"NextStep": "end", "Not": [{"Variable": "{{ x }}", "StringEquals": "y"}]}]),
        ] {
            let err = doc(bad.clone()).unwrap_err();
            assert_eq!(err.code, "InvalidDocumentContent", "{bad}");
        }
        doc(json!([
            {"NextStep": "end", "And": [
                {"Variable": "{{ x }}", "NumericGreater": 1},
                {"Not": {"Variable": "{{ y }}", "BooleanEquals": true}}
            ]},
            {"NextStep": "b", "Or": [{"Variable": "{{ x }}", "EqualsIgnoreCase": "A"}]}
        ]))
        .unwrap();
    }

    #[test]
    fn bad_content_is_refused() {
        let err = Document::parse(
            "x",
            &json!({"schemaVersion": "2.2", "mainSteps": []}),
            "JSON",
            0.0,
            "o",
        )
        .unwrap_err();
        assert_eq!(err.code, "InvalidDocumentSchemaVersion");
        let err = Document::parse(
            "x",
            &json!({"schemaVersion": "0.3", "mainSteps": []}),
            "JSON",
            0.0,
            "o",
        )
        .unwrap_err();
        assert_eq!(err.code, "InvalidDocumentContent");
        let err = Document::parse(
            "x",
            &json!({"schemaVersion": "0.3", "mainSteps": [{"name": "a", "action": "sleep"}]}),
            "JSON",
            0.0,
            "o",
        )
        .unwrap_err();
        assert_eq!(err.code, "InvalidDocumentContent");
        let err = Document::parse(
            "x",
            &json!({"schemaVersion": "0.3", "mainSteps": [{"name": "a", "action": "aws:sleep", "nextStep": "zz"}]}),
            "JSON",
            0.0,
            "o",
        )
        .unwrap_err();
        assert!(err.message.contains("zz"));
    }
}
