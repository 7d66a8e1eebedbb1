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

/// The target of `onFailure`/`onCancel: step:<name>`.
pub(crate) fn jump(policy: &Option<String>) -> Option<&str> {
    policy.as_deref().and_then(|p| p.strip_prefix("step:"))
}

/// Names of the documents every emulator has without CreateDocument.
pub const BUILTIN_DOCUMENTS: [&str; 4] = [
    "Signalman-Approve",
    "Signalman-Pause",
    "Signalman-Steps",
    "Signalman-AccessRequest",
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
    json!({
        "name": "approve",
        "action": "aws:approve",
        "onFailure": "Abort",
        "inputs": {
            "Approvers": "{{ Approvers }}",
            "MinRequiredApprovals": "{{ MinRequiredApprovals }}",
            "Message": "{{ Message }}"
        }
    })
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
