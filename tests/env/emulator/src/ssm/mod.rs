//! The SSM Automation service (AWS JSON 1.1, target prefix `AmazonSSM`).
mod document;
mod execution;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use document::Document;
pub use document::BUILTIN_DOCUMENTS;
use execution::{Execution, Mode};

use crate::error::ApiError;
use crate::faults::SsmSignal;
use crate::response::new_uuid;

/// Every document and execution of this emulator.
#[derive(Default)]
pub(crate) struct SsmState {
    documents: BTreeMap<String, Document>,
    executions: HashMap<String, Execution>,
    /// StartAutomationExecution ClientToken → (document, execution id).
    client_tokens: HashMap<String, (String, String)>,
    /// Lag mode: executions whose latest changes readers do not see yet.
    lagging: HashMap<String, Lagging>,
}

/// What readers of one execution see while some of its changes are still hidden: the
/// versions become visible in the order they were written, each at its instant (like a
/// replica that applies a log in order).
struct Lagging {
    visible: Execution,
    pending: VecDeque<(Instant, Execution)>,
}

/// Who calls, and where.
pub(crate) struct Ctx<'a> {
    pub principal: &'a str,
    pub account_id: &'a str,
    pub region: &'a str,
    pub now: f64,
    /// Lag mode: how long this call's change stays hidden from readers.
    pub lag: Option<Duration>,
    /// The clock lagged changes are measured on.
    pub clock: Instant,
}

/// A successful answer, plus the signal it applied (for the counters).
pub(crate) struct Outcome {
    pub body: Value,
    pub signal: Option<SsmSignal>,
}

impl From<Value> for Outcome {
    fn from(body: Value) -> Self {
        Self { body, signal: None }
    }
}

const SIGNAL_TYPES: [&str; 6] = [
    "Approve",
    "Reject",
    "StartStep",
    "StopStep",
    "Resume",
    "Revoke",
];

/// The wire name of a member in validation messages (AWS writes them lower camel case).
fn member(name: &str) -> String {
    let mut c = name.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

fn opt_str<'a>(body: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::serialization(format!("{key} must be a string"))),
    }
}

fn req_str<'a>(body: &'a Map<String, Value>, key: &str) -> Result<&'a str, ApiError> {
    opt_str(body, key)?.ok_or_else(|| {
        ApiError::validation(format!(
            "Value null at '{}' failed to satisfy constraint: Member must not be null",
            member(key)
        ))
    })
}

fn opt_bool(body: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::serialization(format!("{key} must be a boolean"))),
    }
}

fn check_enum(value: &str, key: &str, allowed: &[&str]) -> Result<(), ApiError> {
    if allowed.contains(&value) {
        return Ok(());
    }
    Err(ApiError::validation(format!(
        "Value '{value}' at '{}' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
        member(key),
        allowed.join(", ")
    )))
}

fn check_len(value: &str, key: &str, min: usize, max: usize) -> Result<(), ApiError> {
    let len = value.chars().count();
    let bound = if len < min {
        format!("greater than or equal to {min}")
    } else if len > max {
        format!("less than or equal to {max}")
    } else {
        return Ok(());
    };
    Err(ApiError::validation(format!(
        "Value '{value}' at '{}' failed to satisfy constraint: Member must have length {bound}",
        member(key)
    )))
}

/// An AutomationParameterMap (Parameters, Payload) with the model's limits: 1..200 entries,
/// keys 1..50 characters, 0..50 values of 1..512 characters each.
fn param_map(
    body: &Map<String, Value>,
    key: &str,
) -> Result<Option<BTreeMap<String, Vec<String>>>, ApiError> {
    let obj = match body.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(m)) => m,
        Some(_) => {
            return Err(ApiError::serialization(format!(
                "{key} must be a map of string lists"
            )))
        }
    };
    let wire = member(key);
    if obj.is_empty() || obj.len() > 200 {
        return Err(ApiError::validation(format!(
            "Value at '{wire}' failed to satisfy constraint: Member must have between 1 and 200 entries, not {}",
            obj.len()
        )));
    }
    let mut out = BTreeMap::new();
    for (k, v) in obj {
        let n = k.chars().count();
        if !(1..=50).contains(&n) {
            return Err(ApiError::validation(format!(
                "Value '{k}' at '{wire}' failed to satisfy constraint: Map keys must have length between 1 and 50"
            )));
        }
        let list = v.as_array().ok_or_else(|| {
            ApiError::serialization(format!("{key}.{k} must be a list of strings"))
        })?;
        if list.len() > 50 {
            return Err(ApiError::validation(format!(
                "Value at '{wire}.{k}' failed to satisfy constraint: Member must have length less than or equal to 50"
            )));
        }
        let mut values = Vec::new();
        for item in list {
            let s = item.as_str().ok_or_else(|| {
                ApiError::serialization(format!("{key}.{k} must be a list of strings"))
            })?;
            let n = s.chars().count();
            if !(1..=512).contains(&n) {
                return Err(ApiError::validation(format!(
                    "Value at '{wire}.{k}' failed to satisfy constraint: Member must have length between 1 and 512"
                )));
            }
            values.push(s.to_string());
        }
        out.insert(k.clone(), values);
    }
    Ok(Some(out))
}

fn execution_id(body: &Map<String, Value>) -> Result<&str, ApiError> {
    let id = req_str(body, "AutomationExecutionId")?;
    check_len(id, "AutomationExecutionId", 36, 36)?;
    Ok(id)
}

fn not_found(id: &str) -> ApiError {
    ApiError::client(
        "AutomationExecutionNotFoundException",
        format!("There is no AutomationExecution with id: {id}"),
    )
}

fn valid_document_name(name: &str) -> bool {
    (3..=128).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Parameter values as GetAutomationExecution shows them (lists of strings).
fn default_values(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        Value::String(s) => vec![s.clone()],
        other => vec![other.to_string()],
    }
}

impl SsmState {
    fn document(&self, name: &str) -> Option<Document> {
        self.documents
            .get(name)
            .cloned()
            .or_else(|| document::builtin(name))
    }

    /// The version of `id` readers see at `now`: the latest one in lag mode only once its
    /// delay has passed.
    fn readable(&mut self, id: &str, now: Instant) -> Option<&Execution> {
        if let Some(lagging) = self.lagging.get_mut(id) {
            while lagging.pending.front().is_some_and(|(at, _)| *at <= now) {
                if let Some((_, version)) = lagging.pending.pop_front() {
                    lagging.visible = version;
                }
            }
            if lagging.pending.is_empty() {
                self.lagging.remove(id);
            }
        }
        match self.lagging.get(id) {
            Some(lagging) => Some(&lagging.visible),
            None => self.executions.get(id),
        }
    }

    /// A copy of `id` before a write, when the write must be queued for readers (it lags,
    /// or earlier changes of the execution are still hidden and it must come after them).
    fn version_before_write(&mut self, id: &str, ctx: &Ctx) -> Option<Execution> {
        let queued = self.readable(id, ctx.clock).is_some() && self.lagging.contains_key(id);
        if ctx.lag.is_none() && !queued {
            return None;
        }
        self.executions.get(id).cloned()
    }

    /// Queues the version `id` has after a successful write for readers.
    fn written(&mut self, id: &str, before: Option<Execution>, ctx: &Ctx) {
        let (Some(before), Some(after)) = (before, self.executions.get(id).cloned()) else {
            return;
        };
        let due = ctx.clock + ctx.lag.unwrap_or_default();
        match self.lagging.get_mut(id) {
            Some(lagging) => {
                let last = lagging.pending.back().map_or(due, |(at, _)| *at);
                lagging.pending.push_back((due.max(last), after));
            }
            None => {
                self.lagging.insert(
                    id.to_string(),
                    Lagging {
                        visible: before,
                        pending: VecDeque::from([(due, after)]),
                    },
                );
            }
        }
    }

    /// The JSON GetAutomationExecution would give, for in-process inspection.
    pub fn execution_json(&self, id: &str) -> Option<Value> {
        self.executions.get(id).map(Execution::to_json)
    }

    /// Handles one operation. `body` is the parsed request (an object).
    pub fn handle(
        &mut self,
        ctx: &Ctx,
        op: &str,
        body: &Map<String, Value>,
    ) -> Result<Outcome, ApiError> {
        match op {
            "CreateDocument" => self.create_document(ctx, body),
            "StartAutomationExecution" => self.start(ctx, body),
            "GetAutomationExecution" => {
                let id = execution_id(body)?;
                let exec = self.readable(id, ctx.clock).ok_or_else(|| not_found(id))?;
                Ok(json!({"AutomationExecution": exec.to_json()}).into())
            }
            "SendAutomationSignal" => self.signal(ctx, body),
            "DescribeAutomationStepExecutions" => self.describe_steps(ctx, body),
            "DescribeAutomationExecutions" => self.describe_executions(ctx, body),
            "StopAutomationExecution" => {
                let id = execution_id(body)?;
                if let Some(t) = opt_str(body, "Type")? {
                    check_enum(t, "Type", &["Complete", "Cancel"])?;
                }
                let before = self.version_before_write(id, ctx);
                let exec = self.executions.get_mut(id).ok_or_else(|| not_found(id))?;
                exec.stop(ctx.now)?;
                self.written(id, before, ctx);
                Ok(json!({}).into())
            }
            other => Err(ApiError::client(
                "UnknownOperationException",
                format!("aws-emu does not emulate AmazonSSM.{other}"),
            )),
        }
    }

    fn create_document(
        &mut self,
        ctx: &Ctx,
        body: &Map<String, Value>,
    ) -> Result<Outcome, ApiError> {
        let name = req_str(body, "Name")?;
        let content = req_str(body, "Content")?;
        if !valid_document_name(name) {
            return Err(ApiError::validation(format!(
                "Value '{name}' at 'name' failed to satisfy constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9_\\-.]{{3,128}}$"
            )));
        }
        let lower = name.to_ascii_lowercase();
        if ["aws", "amazon", "amzn"]
            .iter()
            .any(|p| lower.starts_with(p))
        {
            return Err(ApiError::validation(format!(
                "Value '{name}' at 'name' failed to satisfy constraint: the prefixes aws, amazon and amzn are reserved"
            )));
        }
        check_len(content, "Content", 1, 64 * 1024)?;
        let doc_type = opt_str(body, "DocumentType")?.unwrap_or("Command");
        if doc_type != "Automation" {
            return Err(ApiError::client(
                "InvalidDocumentContent",
                format!("aws-emu only emulates Automation documents, not DocumentType {doc_type}"),
            ));
        }
        let format = opt_str(body, "DocumentFormat")?.unwrap_or("JSON");
        let parsed: Value = match format {
            "JSON" => serde_json::from_str(content).map_err(|e| {
                ApiError::client(
                    "InvalidDocumentContent",
                    format!("The content is not valid JSON: {e}"),
                )
            })?,
            "YAML" => serde_norway::from_str(content).map_err(|e| {
                ApiError::client(
                    "InvalidDocumentContent",
                    format!("The content is not valid YAML: {e}"),
                )
            })?,
            "TEXT" => {
                return Err(ApiError::client(
                    "InvalidDocumentContent",
                    "Automation documents are JSON or YAML, not TEXT",
                ))
            }
            other => {
                check_enum(other, "DocumentFormat", &["YAML", "JSON", "TEXT"])?;
                unreachable!()
            }
        };
        if self.document(name).is_some() {
            return Err(ApiError::client(
                "DocumentAlreadyExists",
                format!("Document with same name {name} already exists"),
            ));
        }
        let doc = Document::parse(name, &parsed, format, ctx.now, ctx.account_id)?;
        let description = doc.description_json();
        self.documents.insert(name.to_string(), doc);
        Ok(json!({"DocumentDescription": description}).into())
    }

    fn start(&mut self, ctx: &Ctx, body: &Map<String, Value>) -> Result<Outcome, ApiError> {
        let name = req_str(body, "DocumentName")?;
        if !(3..=128).contains(&name.len())
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/'))
        {
            return Err(ApiError::validation(format!(
                "Value '{name}' at 'documentName' failed to satisfy constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9_\\-.:/]{{3,128}}$"
            )));
        }
        let mode = match opt_str(body, "Mode")? {
            None | Some("Auto") => Mode::Auto,
            Some("Interactive") => Mode::Interactive,
            Some(other) => {
                check_enum(other, "Mode", &["Auto", "Interactive"])?;
                unreachable!()
            }
        };
        for unsupported in [
            "Targets",
            "TargetMaps",
            "TargetLocations",
            "TargetLocationsURL",
            "TargetParameterName",
        ] {
            if body.get(unsupported).is_some_and(|v| !v.is_null()) {
                return Err(ApiError::client(
                    "InvalidAutomationExecutionParametersException",
                    format!("aws-emu does not emulate rate-control or multi-account executions ({unsupported})"),
                ));
            }
        }
        let supplied = param_map(body, "Parameters")?.unwrap_or_default();
        // A document ARN names the document by its last path segment.
        let doc_name = name.rsplit('/').next().unwrap_or(name);
        let doc = self.document(doc_name).ok_or_else(|| {
            ApiError::client(
                "AutomationDefinitionNotFoundException",
                format!("Document {name} does not exist"),
            )
        })?;
        if let Some(v) = opt_str(body, "DocumentVersion")? {
            if !matches!(v, "1" | "$DEFAULT" | "$LATEST") {
                return Err(ApiError::client(
                    "AutomationDefinitionVersionNotFoundException",
                    format!("Document {name} has no version {v}"),
                ));
            }
        }
        let token = opt_str(body, "ClientToken")?;
        if let Some(token) = token {
            if let Some((doc_of_token, id)) = self.client_tokens.get(&token.to_lowercase()) {
                if doc_of_token == doc_name {
                    return Ok(json!({"AutomationExecutionId": id}).into());
                }
                return Err(ApiError::client(
                    "IdempotentParameterMismatch",
                    "The ClientToken was used before with different parameters",
                ));
            }
        }
        let params = resolve_parameters(&doc, supplied)?;
        let id = new_uuid();
        let exec = Execution::start(
            id.clone(),
            doc,
            params,
            mode,
            ctx.principal.to_string(),
            ctx.account_id,
            ctx.region,
            ctx.now,
        );
        tracing::debug!(execution = %id, document = exec.document_name(), status = exec.status(), "started");
        self.executions.insert(id.clone(), exec);
        if let Some(token) = token {
            self.client_tokens
                .insert(token.to_lowercase(), (doc_name.to_string(), id.clone()));
        }
        Ok(json!({"AutomationExecutionId": id}).into())
    }

    fn signal(&mut self, ctx: &Ctx, body: &Map<String, Value>) -> Result<Outcome, ApiError> {
        let id = execution_id(body)?;
        let signal = req_str(body, "SignalType")?;
        check_enum(signal, "SignalType", &SIGNAL_TYPES)?;
        let payload = param_map(body, "Payload")?.unwrap_or_default();
        let before = self.version_before_write(id, ctx);
        let exec = self.executions.get_mut(id).ok_or_else(|| not_found(id))?;
        let effect = exec.signal(signal, &payload, ctx.principal, ctx.now)?;
        tracing::debug!(execution = %id, signal, status = exec.status(), "signal applied");
        self.written(id, before, ctx);
        Ok(Outcome {
            body: json!({}),
            signal: Some(SsmSignal {
                execution_id: id.to_string(),
                signal_type: signal.to_string(),
                step_name: effect.step_name,
                step_execution_id: effect.step_execution_id,
                principal: ctx.principal.to_string(),
                source_identity: None,
            }),
        })
    }

    fn describe_steps(
        &mut self,
        ctx: &Ctx,
        body: &Map<String, Value>,
    ) -> Result<Outcome, ApiError> {
        let id = execution_id(body)?;
        let max = match body.get("MaxResults") {
            None | Some(Value::Null) => 50,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(m) if (1..=50).contains(&m) => m as usize,
                _ => {
                    return Err(ApiError::validation(format!(
                        "Value '{n}' at 'maxResults' failed to satisfy constraint: Member must have value between 1 and 50"
                    )))
                }
            },
            Some(_) => return Err(ApiError::serialization("MaxResults must be an integer")),
        };
        let offset = match opt_str(body, "NextToken")? {
            None => 0,
            Some(t) => t
                .strip_prefix("aws-emu:")
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| {
                    ApiError::client("InvalidNextToken", "The NextToken is not valid")
                })?,
        };
        let reverse = opt_bool(body, "ReverseOrder")?.unwrap_or(false);
        let filters = parse_filters(body)?;
        let exec = self.readable(id, ctx.clock).ok_or_else(|| not_found(id))?;
        let mut steps: Vec<(f64, Value)> = exec
            .started_steps()
            .into_iter()
            .filter(|(start, step)| filters.iter().all(|f| f.matches(*start, step)))
            .collect();
        if reverse {
            steps.reverse();
        }
        let page: Vec<Value> = steps
            .iter()
            .skip(offset)
            .take(max)
            .map(|(_, s)| s.clone())
            .collect();
        let mut out = json!({"StepExecutions": page});
        if offset + max < steps.len() {
            out["NextToken"] = json!(format!("aws-emu:{}", offset + max));
        }
        Ok(out.into())
    }
}

impl SsmState {
    /// DescribeAutomationExecutions: every execution readers see, newest first, as
    /// AutomationExecutionMetadata, filtered by ExecutionStatus, ExecutionId, DocumentNamePrefix
    /// or CurrentAction (each filter one of its values; all filters together).
    fn describe_executions(
        &mut self,
        ctx: &Ctx,
        body: &Map<String, Value>,
    ) -> Result<Outcome, ApiError> {
        const KEYS: [&str; 4] = [
            "ExecutionStatus",
            "ExecutionId",
            "DocumentNamePrefix",
            "CurrentAction",
        ];
        let max = match body.get("MaxResults") {
            None | Some(Value::Null) => 50,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(m) if (1..=50).contains(&m) => m as usize,
                _ => {
                    return Err(ApiError::validation(format!(
                        "Value '{n}' at 'maxResults' failed to satisfy constraint: Member must have value between 1 and 50"
                    )))
                }
            },
            Some(_) => return Err(ApiError::serialization("MaxResults must be an integer")),
        };
        let offset = match opt_str(body, "NextToken")? {
            None => 0,
            Some(t) => t
                .strip_prefix("aws-emu:")
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| {
                    ApiError::client("InvalidNextToken", "The NextToken is not valid")
                })?,
        };
        let mut filters: Vec<(String, Vec<String>)> = Vec::new();
        if let Some(list) = body.get("Filters").filter(|v| !v.is_null()) {
            let list = list
                .as_array()
                .ok_or_else(|| ApiError::serialization("Filters must be a list"))?;
            for f in list {
                let f = f
                    .as_object()
                    .ok_or_else(|| ApiError::serialization("a filter must be an object"))?;
                let key = req_str(f, "Key")?;
                if !KEYS.contains(&key) {
                    return Err(ApiError::client(
                        "InvalidFilterKey",
                        format!("aws-emu does not emulate the filter key {key}"),
                    ));
                }
                let values = f
                    .get("Values")
                    .and_then(Value::as_array)
                    .map(|v| {
                        v.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                filters.push((key.to_string(), values));
            }
        }
        let ids: Vec<String> = self.executions.keys().cloned().collect();
        let mut found: Vec<Value> = Vec::new();
        for id in ids {
            let Some(exec) = self.readable(&id, ctx.clock) else {
                continue;
            };
            let full = exec.to_json();
            let field = |k: &str| full.get(k).and_then(Value::as_str).unwrap_or_default();
            let matches = filters.iter().all(|(key, values)| {
                values.iter().any(|v| match key.as_str() {
                    "ExecutionStatus" => field("AutomationExecutionStatus") == v,
                    "ExecutionId" => field("AutomationExecutionId") == v,
                    "DocumentNamePrefix" => field("DocumentName").starts_with(v.as_str()),
                    _ => field("CurrentAction") == v,
                })
            });
            if !matches {
                continue;
            }
            let mut meta = Map::new();
            for k in [
                "AutomationExecutionId",
                "DocumentName",
                "DocumentVersion",
                "AutomationExecutionStatus",
                "ExecutionStartTime",
                "ExecutionEndTime",
                "ExecutedBy",
                "Mode",
                "CurrentStepName",
                "CurrentAction",
                "FailureMessage",
                "Outputs",
            ] {
                if let Some(v) = full.get(k) {
                    meta.insert(k.to_string(), v.clone());
                }
            }
            found.push(Value::Object(meta));
        }
        let start = |v: &Value| {
            v.get("ExecutionStartTime")
                .and_then(Value::as_f64)
                .unwrap_or(0.0)
        };
        found.sort_by(|a, b| start(b).total_cmp(&start(a)));
        let page: Vec<Value> = found.iter().skip(offset).take(max).cloned().collect();
        let mut out = json!({"AutomationExecutionMetadataList": page});
        if offset + max < found.len() {
            out["NextToken"] = json!(format!("aws-emu:{}", offset + max));
        }
        Ok(out.into())
    }
}

/// Checks supplied parameters against the document and adds defaults.
fn resolve_parameters(
    doc: &Document,
    mut supplied: BTreeMap<String, Vec<String>>,
) -> Result<BTreeMap<String, Vec<String>>, ApiError> {
    let bad = |m: String| ApiError::client("InvalidAutomationExecutionParametersException", m);
    if let Some(unknown) = supplied
        .keys()
        .find(|k| !doc.parameters.iter().any(|p| &p.name == *k))
    {
        return Err(bad(format!(
            "Parameter \"{unknown}\" is not defined in document {}",
            doc.name
        )));
    }
    for p in &doc.parameters {
        match supplied.get(&p.name) {
            Some(values) => {
                let single = matches!(p.ty.as_str(), "String" | "Integer" | "Boolean");
                if single && values.len() != 1 {
                    return Err(bad(format!(
                        "Parameter \"{}\" of type {} takes exactly one value",
                        p.name, p.ty
                    )));
                }
                if p.ty == "Integer" && values[0].parse::<i64>().is_err() {
                    return Err(bad(format!("Parameter \"{}\" must be an integer", p.name)));
                }
                if p.ty == "Boolean" && values[0].parse::<bool>().is_err() {
                    return Err(bad(format!(
                        "Parameter \"{}\" must be true or false",
                        p.name
                    )));
                }
            }
            None => match &p.default {
                Some(d) => {
                    supplied.insert(p.name.clone(), default_values(d));
                }
                None => return Err(bad(format!("Parameter \"{}\" is required", p.name))),
            },
        }
    }
    Ok(supplied)
}

const FILTER_KEYS: [&str; 9] = [
    "StartTimeBefore",
    "StartTimeAfter",
    "StepExecutionStatus",
    "StepExecutionId",
    "StepName",
    "Action",
    "ParentStepExecutionId",
    "ParentStepIteration",
    "ParentStepIteratorValue",
];

struct Filter {
    key: String,
    values: Vec<String>,
    times: Vec<f64>,
}

impl Filter {
    fn matches(&self, start: f64, step: &Value) -> bool {
        let field = |name: &str| step.get(name).and_then(Value::as_str).unwrap_or("");
        match self.key.as_str() {
            "StartTimeBefore" => self.times.iter().any(|t| start < *t),
            "StartTimeAfter" => self.times.iter().any(|t| start > *t),
            "StepExecutionStatus" => self
                .values
                .iter()
                .any(|v| v.eq_ignore_ascii_case(field("StepStatus"))),
            "StepExecutionId" => self.values.iter().any(|v| v == field("StepExecutionId")),
            "StepName" => self.values.iter().any(|v| v == field("StepName")),
            "Action" => self.values.iter().any(|v| v == field("Action")),
            // The emulator has no nested (loop) steps.
            _ => false,
        }
    }
}

fn parse_filters(body: &Map<String, Value>) -> Result<Vec<Filter>, ApiError> {
    let list = match body.get("Filters") {
        None | Some(Value::Null) => return Ok(vec![]),
        Some(Value::Array(l)) => l,
        Some(_) => return Err(ApiError::serialization("Filters must be a list")),
    };
    if list.is_empty() || list.len() > 6 {
        return Err(ApiError::validation(
            "Value at 'filters' failed to satisfy constraint: Member must have length between 1 and 6",
        ));
    }
    let mut out = Vec::new();
    for f in list {
        let f = f
            .as_object()
            .ok_or_else(|| ApiError::serialization("a filter must be an object"))?;
        let key = req_str(f, "Key")?;
        if !FILTER_KEYS.contains(&key) {
            return Err(ApiError::client(
                "InvalidFilterKey",
                format!("The filter key {key} is not valid"),
            ));
        }
        let values: Vec<String> = f
            .get("Values")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                ApiError::validation("Value null at 'filters.member.values' failed to satisfy constraint: Member must not be null")
            })?
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| ApiError::serialization("filter values must be strings")))
            .collect::<Result<_, _>>()?;
        if values.is_empty()
            || values.len() > 10
            || values
                .iter()
                .any(|v| !(1..=150).contains(&v.chars().count()))
        {
            return Err(ApiError::validation(
                "Value at 'filters.member.values' failed to satisfy constraint: 1 to 10 values of 1 to 150 characters",
            ));
        }
        let mut times = Vec::new();
        if key.starts_with("StartTime") {
            for v in &values {
                let t = chrono::DateTime::parse_from_rfc3339(v)
                    .map(|t| t.timestamp_millis() as f64 / 1000.0)
                    .ok()
                    .or_else(|| v.parse::<f64>().ok())
                    .ok_or_else(|| {
                        ApiError::client("InvalidFilterValue", format!("{v} is not a timestamp"))
                    })?;
                times.push(t);
            }
        }
        out.push(Filter {
            key: key.to_string(),
            values,
            times,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_limits() {
        let body = |v: Value| json!({"Payload": v}).as_object().unwrap().clone();
        assert!(param_map(&body(json!({})), "Payload").unwrap_err().code == "ValidationException");
        assert!(param_map(&body(json!({"k": [""]})), "Payload").is_err());
        assert!(param_map(&body(json!({"k": ["x".repeat(513)]})), "Payload").is_err());
        assert!(param_map(&body(json!({"k".repeat(51): ["x"]})), "Payload").is_err());
        assert!(param_map(&body(json!({"k": vec!["x"; 51]})), "Payload").is_err());
        assert_eq!(
            param_map(&body(json!({"k": []})), "Payload")
                .unwrap()
                .unwrap()["k"]
                .len(),
            0
        );
        assert!(
            param_map(&body(json!({"k": "x"})), "Payload")
                .unwrap_err()
                .code
                == "SerializationException"
        );
    }
}
