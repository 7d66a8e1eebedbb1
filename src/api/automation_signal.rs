//! `AutomationSignal`: one AWS Systems Manager `SendAutomationSignal` call (the API in
//! docs/design.md).
use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    sync::OnceLock,
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    common::{ResolvedRetry, RetryPolicy, SignalStatus},
    region_or, spec_schema, validation, REGION_MAX_LENGTH, REGION_MESSAGE, REGION_RULE,
};

/// Message of the rule that makes an AutomationSignal's spec immutable.
pub const AUTOMATION_SIGNAL_IMMUTABLE_MESSAGE: &str =
    "spec is immutable: create a new AutomationSignal to send another signal";
/// Message when StartStep lacks `payload.StepName`.
pub const START_STEP_MESSAGE: &str =
    "signalType StartStep needs payload.StepName with exactly one value: the name of the step to start";
/// Message when Resume lacks `payload.StepName`.
pub const RESUME_MESSAGE: &str =
    "signalType Resume needs payload.StepName with exactly one value: the name of the step to resume";
/// Message when StopStep lacks `payload.StepExecutionId`.
pub const STOP_STEP_MESSAGE: &str =
    "signalType StopStep needs payload.StepExecutionId with exactly one value: the id of the step execution to stop";
/// Message when a payload key is empty or longer than 50 characters.
pub const PAYLOAD_KEY_MESSAGE: &str = "payload keys must be 1 to 50 characters long";

/// `spec.automationExecutionId`'s exact length.
pub const AUTOMATION_EXECUTION_ID_LENGTH: u32 = 36;
/// Most keys in `spec.payload`.
pub const PAYLOAD_MAX_KEYS: u32 = 200;
/// Longest key in `spec.payload`.
pub const PAYLOAD_MAX_KEY_LENGTH: u32 = 50;
/// Most values under one payload key.
pub const PAYLOAD_MAX_VALUES: u32 = 50;
/// Longest payload value.
pub const PAYLOAD_MAX_VALUE_LENGTH: u32 = 512;

/// `SendAutomationSignal`'s SignalType.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum SignalType {
    /// Approve an `aws:approve` step (optional `payload.Comment`).
    Approve,
    /// Reject an `aws:approve` step (optional `payload.Comment`).
    Reject,
    /// Run one step of an Interactive-mode execution (`payload.StepName`).
    StartStep,
    /// Stop a running step execution (`payload.StepExecutionId`).
    StopStep,
    /// Resume after `aws:pause` (`payload.StepName`).
    Resume,
    /// Revoke a just-in-time access request.
    Revoke,
}

impl SignalType {
    /// Every signal type, in the schema's order.
    pub const ALL: [SignalType; 6] = [
        SignalType::Approve,
        SignalType::Reject,
        SignalType::StartStep,
        SignalType::StopStep,
        SignalType::Resume,
        SignalType::Revoke,
    ];

    /// The name AWS uses (`"Approve"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            SignalType::Approve => "Approve",
            SignalType::Reject => "Reject",
            SignalType::StartStep => "StartStep",
            SignalType::StopStep => "StopStep",
            SignalType::Resume => "Resume",
            SignalType::Revoke => "Revoke",
        }
    }
}

impl fmt::Display for SignalType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Sends one signal to a running AWS Systems Manager Automation execution, exactly once.
///
/// The spec describes the event, not a desired state: it cannot be edited after creation.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[kube(
    group = "signalman.dev",
    version = "v1alpha1",
    kind = "AutomationSignal",
    namespaced,
    status = "SignalStatus",
    derive = "PartialEq",
    category = "signals",
    shortname = "amsig",
    cel,
    doc = "AutomationSignal sends one signal (Approve, Reject, StartStep, StopStep, Resume, Revoke) to a running AWS Systems Manager Automation execution (SendAutomationSignal), exactly once, and records the outcome in its status.",
    printcolumn = r#"{"name": "Execution", "type": "string", "jsonPath": ".spec.automationExecutionId", "description": "Automation execution id"}"#,
    printcolumn = r#"{"name": "Signal", "type": "string", "jsonPath": ".spec.signalType", "description": "Signal type"}"#,
    printcolumn = r#"{"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Pending, Sending, Verifying, Succeeded or Failed"}"#,
    printcolumn = r#"{"name": "Attempts", "type": "integer", "jsonPath": ".status.attempts", "description": "Attempts spent"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status", "description": "Status of the Ready condition: True once delivered"}"#,
    printcolumn = r#"{"name": "Reason", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].reason", "description": "Reason of the Ready condition"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#,
    selectable = ".spec.automationExecutionId",
    selectable = ".spec.signalType",
    selectable = ".status.phase"
)]
#[x_kube(
    validation = Rule::new("self == oldSelf").message(AUTOMATION_SIGNAL_IMMUTABLE_MESSAGE),
    validation = Rule::new("self.signalType != 'StartStep' || (has(self.payload) && 'StepName' in self.payload && size(self.payload['StepName']) == 1)")
        .message(START_STEP_MESSAGE)
        .field_path(".payload")
        .reason(Reason::FieldValueRequired),
    validation = Rule::new("self.signalType != 'Resume' || (has(self.payload) && 'StepName' in self.payload && size(self.payload['StepName']) == 1)")
        .message(RESUME_MESSAGE)
        .field_path(".payload")
        .reason(Reason::FieldValueRequired),
    validation = Rule::new("self.signalType != 'StopStep' || (has(self.payload) && 'StepExecutionId' in self.payload && size(self.payload['StepExecutionId']) == 1)")
        .message(STOP_STEP_MESSAGE)
        .field_path(".payload")
        .reason(Reason::FieldValueRequired),
)]
#[serde(rename_all = "camelCase")]
pub struct AutomationSignalSpec {
    /// Id of the Automation execution to signal (exactly 36 characters).
    #[schemars(length(equal = AUTOMATION_EXECUTION_ID_LENGTH))]
    pub automation_execution_id: String,

    /// Approve, Reject, StartStep, StopStep, Resume or Revoke.
    pub signal_type: SignalType,

    /// Data for the signal: Approve and Reject take an optional Comment; StartStep and Resume need StepName; StopStep needs StepExecutionId. 1..200 keys of 1..50 characters, each a list of 0..50 values of 1..512 characters. Never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "payload_schema")]
    #[x_kube(validation = Rule::new("self.all(k, size(k) >= 1 && size(k) <= 50)").message(PAYLOAD_KEY_MESSAGE))]
    pub payload: Option<BTreeMap<String, Vec<String>>>,

    /// AWS region of the execution, e.g. eu-west-1. Empty or absent: the operator's default region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = REGION_MAX_LENGTH))]
    #[x_kube(validation = Rule::new(REGION_RULE).message(REGION_MESSAGE))]
    pub region: Option<String>,

    /// Retry policy; every field optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,

    /// Never send after this time (RFC 3339): a signal still undelivered then ends Failed with reason Expired. Recommended under GitOps, where an object may be applied again long after it was meant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub not_after: Option<Time>,

    /// Send even if this signal was delivered before: by an earlier object with the same namespace, name and signal (a receipt), or, when no receipt can tell, as the AWS side shows. Default false: a deleted and re-created signal is not sent twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_duplicate: Option<bool>,

    /// Delete the object this many seconds after it finished (Succeeded or Failed), like a Job's ttlSecondsAfterFinished. Objects a GitOps tool manages are never deleted. Absent: the operator's default (none unless set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31_536_000))]
    pub ttl_seconds_after_finished: Option<i32>,
}

/// The payload's schema: a bounded map of bounded string lists. Written by hand because
/// schemars' length attributes cannot reach a map's values.
fn payload_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "minProperties": 1,
        "maxProperties": PAYLOAD_MAX_KEYS,
        "additionalProperties": {
            "type": "array",
            "maxItems": PAYLOAD_MAX_VALUES,
            "items": {
                "type": "string",
                "minLength": 1,
                "maxLength": PAYLOAD_MAX_VALUE_LENGTH,
            },
        },
    })
}

impl AutomationSignalSpec {
    /// The payload as `SendAutomationSignal` takes it; `None` when absent or empty, so an empty
    /// payload is never sent as `{}`.
    pub fn payload_for_wire(&self) -> Option<HashMap<String, Vec<String>>> {
        self.payload
            .as_ref()
            .filter(|p| !p.is_empty())
            .map(|p| p.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    /// The single value under `key`, if the payload has exactly one there (e.g. `StepName`).
    pub fn payload_value(&self, key: &str) -> Option<&str> {
        match self.payload.as_ref()?.get(key)?.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }

    /// The region the spec names, or `None` (also for an empty string).
    pub fn region(&self) -> Option<&str> {
        region_or(self.region.as_deref(), None)
    }

    /// The region to use: the spec's, else `default` (the operator's `--region`).
    pub fn effective_region<'a>(&'a self, default: Option<&'a str>) -> Option<&'a str> {
        region_or(self.region.as_deref(), default)
    }

    /// The retry policy with defaults applied.
    pub fn retry(&self) -> ResolvedRetry {
        self.retry.clone().unwrap_or_default().resolved()
    }
}

impl AutomationSignal {
    pub fn spec_schema() -> &'static Value {
        static SCHEMA: OnceLock<Value> = OnceLock::new();
        SCHEMA.get_or_init(spec_schema::<Self>)
    }

    /// The CRD's CEL rules, compiled on first use.
    fn cel_rules() -> &'static validation::CelRules {
        static RULES: OnceLock<validation::CelRules> = OnceLock::new();
        RULES.get_or_init(validation::CelRules::of::<Self>)
    }

    /// Everything the API server checks on create (schema and CEL rules), again, client-side: the
    /// controller's defence in depth. The error lists each problem by field and rule and never
    /// quotes a value (the payload may carry names or secrets).
    pub fn validate(&self) -> Result<(), String> {
        let Ok(spec) = serde_json::to_value(&self.spec) else {
            return Err("spec: cannot be serialized".to_owned());
        };
        let mut problems = validation::check_schema(Self::spec_schema(), &spec, "spec");
        if let Err(errors) = Self::cel_rules().check_spec(&spec) {
            problems.extend(validation::describe_cel_errors(&errors));
        }
        validation::into_result(problems)
    }
}

impl super::Signal for AutomationSignal {
    fn region(&self) -> Option<&str> {
        self.spec.region()
    }

    fn retry(&self) -> ResolvedRetry {
        self.spec.retry()
    }

    fn not_after(&self) -> Option<k8s_openapi::jiff::Timestamp> {
        self.spec.not_after.as_ref().map(|t| t.0)
    }

    fn allow_duplicate(&self) -> bool {
        self.spec.allow_duplicate.unwrap_or(false)
    }

    fn validate(&self) -> Result<(), String> {
        AutomationSignal::validate(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "73c8eef8-f4ee-4a05-820c-e354fEXAMPLE";

    fn payload(entries: &[(&str, &[&str])]) -> Option<BTreeMap<String, Vec<String>>> {
        Some(
            entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
        )
    }

    fn spec(
        signal_type: SignalType,
        payload: Option<BTreeMap<String, Vec<String>>>,
    ) -> AutomationSignalSpec {
        AutomationSignalSpec {
            automation_execution_id: ID.into(),
            signal_type,
            payload,
            region: None,
            retry: None,
            not_after: None,
            allow_duplicate: None,
            ttl_seconds_after_finished: None,
        }
    }

    fn obj(spec: AutomationSignalSpec) -> AutomationSignal {
        AutomationSignal::new("sig", spec)
    }

    fn err(spec: AutomationSignalSpec) -> String {
        obj(spec).validate().expect_err("should be invalid")
    }

    #[test]
    fn valid_objects_pass() {
        let ok = [
            spec(SignalType::Approve, None),
            spec(
                SignalType::Approve,
                payload(&[("Comment", &["Looks good"])]),
            ),
            spec(SignalType::Reject, payload(&[("Comment", &[])])),
            spec(SignalType::StartStep, payload(&[("StepName", &["deploy"])])),
            spec(SignalType::Resume, payload(&[("StepName", &["pause1"])])),
            spec(
                SignalType::StopStep,
                payload(&[("StepExecutionId", &["0d5c6f8b-1a2b-4c3d-9e8f-0123456789ab"])]),
            ),
            spec(SignalType::Revoke, None),
            AutomationSignalSpec {
                region: Some("eu-west-1".into()),
                retry: Some(RetryPolicy {
                    retry_not_found: Some(true),
                    ..Default::default()
                }),
                ..spec(
                    SignalType::Approve,
                    payload(&[(&"k".repeat(50), &[&"v".repeat(512)])]),
                )
            },
        ];
        for s in ok {
            let o = obj(s);
            o.validate_cel()
                .unwrap_or_else(|e| panic!("{:?}: {e}", o.spec));
            o.validate().unwrap_or_else(|e| panic!("{:?}: {e}", o.spec));
        }
        let most: BTreeMap<String, Vec<String>> = (0..200)
            .map(|i| (format!("k{i}"), vec!["v".to_owned(); 50]))
            .collect();
        obj(spec(SignalType::Approve, Some(most)))
            .validate()
            .unwrap();
    }

    #[test]
    fn execution_id_must_be_36_characters() {
        for id in [String::new(), "a".repeat(35), "a".repeat(37)] {
            let e = err(AutomationSignalSpec {
                automation_execution_id: id.clone(),
                ..spec(SignalType::Approve, None)
            });
            assert!(
                e.starts_with("spec.automationExecutionId: must be"),
                "{}: {e}",
                id.len()
            );
        }
    }

    #[test]
    fn unknown_signal_type_is_refused() {
        let manifest = serde_json::json!({
            "apiVersion": "signalman.dev/v1alpha1",
            "kind": "AutomationSignal",
            "metadata": {"name": "x"},
            "spec": {"automationExecutionId": ID, "signalType": "Approved"},
        });
        assert!(serde_json::from_value::<AutomationSignal>(manifest.clone()).is_err());
        let problems =
            validation::check_schema(AutomationSignal::spec_schema(), &manifest["spec"], "spec");
        assert_eq!(
            problems,
            vec!["spec.signalType: must be one of Approve, Reject, StartStep, StopStep, Resume, Revoke"]
        );
    }

    #[test]
    fn missing_required_fields_are_refused() {
        let problems = validation::check_schema(
            AutomationSignal::spec_schema(),
            &serde_json::json!({}),
            "spec",
        );
        assert_eq!(
            problems,
            vec![
                "spec.automationExecutionId: is required",
                "spec.signalType: is required"
            ]
        );
    }

    #[test]
    fn step_signals_need_their_payload_key() {
        let cases = [
            (SignalType::StartStep, None, START_STEP_MESSAGE),
            (
                SignalType::StartStep,
                payload(&[("Comment", &["x"])]),
                START_STEP_MESSAGE,
            ),
            (
                SignalType::StartStep,
                payload(&[("StepName", &[])]),
                START_STEP_MESSAGE,
            ),
            (
                SignalType::StartStep,
                payload(&[("StepName", &["a", "b"])]),
                START_STEP_MESSAGE,
            ),
            (SignalType::Resume, None, RESUME_MESSAGE),
            (
                SignalType::Resume,
                payload(&[("StepExecutionId", &["x"])]),
                RESUME_MESSAGE,
            ),
            (SignalType::StopStep, None, STOP_STEP_MESSAGE),
            (
                SignalType::StopStep,
                payload(&[("StepName", &["x"])]),
                STOP_STEP_MESSAGE,
            ),
            (
                SignalType::StopStep,
                payload(&[("StepExecutionId", &["a", "b"])]),
                STOP_STEP_MESSAGE,
            ),
        ];
        for (t, p, msg) in cases {
            let o = obj(spec(t, p));
            let cel = o.validate_cel().expect_err("CEL refuses it").to_string();
            assert!(cel.contains(msg), "{t}: {cel}");
            let e = o.validate().unwrap_err();
            assert!(e.contains(&format!("spec.payload: {msg}")), "{t}: {e}");
        }
    }

    #[test]
    fn payload_limits() {
        let too_many: BTreeMap<String, Vec<String>> =
            (0..201).map(|i| (format!("k{i}"), vec![])).collect();
        let e = err(spec(SignalType::Approve, Some(too_many)));
        assert!(
            e.contains("spec.payload: must have at most 200 entries"),
            "{e}"
        );

        let e = err(spec(SignalType::Approve, Some(BTreeMap::new())));
        assert!(
            e.contains("spec.payload: must have at least 1 entries"),
            "{e}"
        );

        let long_key = "k".repeat(51);
        let o = obj(spec(SignalType::Approve, payload(&[(&long_key, &["v"])])));
        assert!(o
            .validate_cel()
            .unwrap_err()
            .to_string()
            .contains(PAYLOAD_KEY_MESSAGE));
        assert!(o.validate().unwrap_err().contains(PAYLOAD_KEY_MESSAGE));

        let o = obj(spec(SignalType::Approve, payload(&[("", &["v"])])));
        assert!(o
            .validate_cel()
            .unwrap_err()
            .to_string()
            .contains(PAYLOAD_KEY_MESSAGE));

        let long_value = "SECRET".repeat(86); // 516 characters
        let e = err(spec(
            SignalType::Approve,
            payload(&[("Comment", &[&long_value])]),
        ));
        assert!(
            e.contains("spec.payload[\"Comment\"][0]: must be at most 512 characters long"),
            "{e}"
        );
        assert!(!e.contains("SECRET"), "{e}");

        let e = err(spec(SignalType::Approve, payload(&[("Comment", &[""])])));
        assert!(
            e.contains("spec.payload[\"Comment\"][0]: must not be empty"),
            "{e}"
        );

        let many = vec!["v"; 51];
        let e = err(spec(SignalType::Approve, payload(&[("Comment", &many)])));
        assert!(
            e.contains("spec.payload[\"Comment\"]: must have at most 50 items"),
            "{e}"
        );
    }

    #[test]
    fn spec_is_immutable() {
        let old = obj(spec(SignalType::Approve, payload(&[("Comment", &["ok"])])));
        old.validate_cel_update(&old).unwrap();
        for edited in [
            spec(SignalType::Reject, payload(&[("Comment", &["ok"])])),
            spec(SignalType::Approve, payload(&[("Comment", &["changed"])])),
            spec(SignalType::Approve, None),
            AutomationSignalSpec {
                region: Some("us-east-1".into()),
                ..old.spec.clone()
            },
        ] {
            let e = obj(edited)
                .validate_cel_update(&old)
                .unwrap_err()
                .to_string();
            assert!(e.contains(AUTOMATION_SIGNAL_IMMUTABLE_MESSAGE), "{e}");
        }
    }

    #[test]
    fn payload_for_wire_omits_empty_payloads() {
        assert_eq!(spec(SignalType::Approve, None).payload_for_wire(), None);
        assert_eq!(
            spec(SignalType::Approve, Some(BTreeMap::new())).payload_for_wire(),
            None
        );
        let wire = spec(SignalType::StartStep, payload(&[("StepName", &["deploy"])]))
            .payload_for_wire()
            .unwrap();
        assert_eq!(
            wire,
            HashMap::from([("StepName".to_owned(), vec!["deploy".to_owned()])])
        );
        // A key with an empty list is kept: AWS accepts 0..50 values.
        let wire = spec(SignalType::Approve, payload(&[("Comment", &[])]))
            .payload_for_wire()
            .unwrap();
        assert_eq!(wire.get("Comment"), Some(&vec![]));
    }

    #[test]
    fn accessors() {
        let s = spec(
            SignalType::StopStep,
            payload(&[("StepExecutionId", &["abc"]), ("Two", &["a", "b"])]),
        );
        assert_eq!(s.payload_value("StepExecutionId"), Some("abc"));
        assert_eq!(s.payload_value("Two"), None);
        assert_eq!(s.payload_value("Missing"), None);
        assert_eq!(s.region(), None);
        assert_eq!(s.effective_region(Some("us-east-1")), Some("us-east-1"));
        let s = AutomationSignalSpec {
            region: Some("eu-west-1".into()),
            ..s
        };
        assert_eq!(s.effective_region(Some("us-east-1")), Some("eu-west-1"));
        assert_eq!(s.retry(), ResolvedRetry::default());
        assert_eq!(SignalType::StartStep.to_string(), "StartStep");
        for t in SignalType::ALL {
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
    }
}
