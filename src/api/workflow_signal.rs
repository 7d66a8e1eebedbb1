//! `WorkflowSignal`: one Amazon SWF `SignalWorkflowExecution` call (the API in docs/design.md).
use std::sync::OnceLock;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    common::{ResolvedRetry, RetryPolicy, SignalStatus},
    region_or, spec_schema, validation, REGION_MAX_LENGTH, REGION_MESSAGE, REGION_RULE,
};

/// Message of the rule that makes a WorkflowSignal's spec immutable.
pub const WORKFLOW_SIGNAL_IMMUTABLE_MESSAGE: &str =
    "spec is immutable: create a new WorkflowSignal to send another signal";

/// Sends one signal to a running Amazon SWF workflow execution, exactly once.
///
/// The spec describes the event, not a desired state: it cannot be edited after creation.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[kube(
    group = "signalman.dev",
    version = "v1alpha1",
    kind = "WorkflowSignal",
    namespaced,
    status = "SignalStatus",
    derive = "PartialEq",
    category = "signals",
    shortname = "wfsig",
    cel,
    doc = "WorkflowSignal sends one signal to a running Amazon SWF workflow execution (SignalWorkflowExecution), exactly once, and records the outcome in its status.",
    printcolumn = r#"{"name": "Domain", "type": "string", "jsonPath": ".spec.domain", "description": "SWF domain"}"#,
    printcolumn = r#"{"name": "Workflow", "type": "string", "jsonPath": ".spec.workflowId", "description": "Workflow id of the execution signalled"}"#,
    printcolumn = r#"{"name": "Signal", "type": "string", "jsonPath": ".spec.signalName", "description": "Signal name"}"#,
    printcolumn = r#"{"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Pending, Sending, Verifying, Succeeded or Failed"}"#,
    printcolumn = r#"{"name": "Attempts", "type": "integer", "jsonPath": ".status.attempts", "description": "Attempts spent"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status", "description": "Status of the Ready condition: True once delivered"}"#,
    printcolumn = r#"{"name": "Reason", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].reason", "description": "Reason of the Ready condition"}"#,
    printcolumn = r#"{"name": "Run", "type": "string", "priority": 1, "jsonPath": ".status.runId", "description": "Run that was signalled"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#,
    selectable = ".spec.domain",
    selectable = ".spec.workflowId",
    selectable = ".spec.signalName",
    selectable = ".status.phase"
)]
#[x_kube(validation = Rule::new("self == oldSelf").message(WORKFLOW_SIGNAL_IMMUTABLE_MESSAGE))]
#[serde(rename_all = "camelCase")]
pub struct WorkflowSignalSpec {
    /// SWF domain of the workflow execution (1..256 characters).
    #[schemars(length(min = 1, max = 256))]
    pub domain: String,

    /// Workflow id of the execution to signal (1..256 characters).
    #[schemars(length(min = 1, max = 256))]
    pub workflow_id: String,

    /// Run id of the execution (at most 64 characters). Empty or absent: the workflow's current open run, resolved once when the signal is first claimed and recorded in status.runId.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub run_id: Option<String>,

    /// Name of the signal (1..256 characters).
    #[schemars(length(min = 1, max = 256))]
    pub signal_name: String,

    /// Input delivered with the signal (at most 32768 characters). Never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32768))]
    pub input: Option<String>,

    /// AWS region of the workflow, e.g. eu-west-1. Empty or absent: the operator's default region.
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

impl WorkflowSignalSpec {
    /// The run to signal, or `None` (also for an empty string): the current open run.
    pub fn run_id(&self) -> Option<&str> {
        self.run_id.as_deref().filter(|r| !r.is_empty())
    }

    /// The input to send; `None` when absent. An empty input is sent as given (SWF accepts it).
    pub fn input(&self) -> Option<&str> {
        self.input.as_deref()
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

impl WorkflowSignal {
    /// The schema of `spec` as the CRD carries it.
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
    /// quotes a value (the input may be secret).
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

impl super::Signal for WorkflowSignal {
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
        WorkflowSignal::validate(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Signal;
    use std::time::Duration;

    fn spec() -> WorkflowSignalSpec {
        WorkflowSignalSpec {
            domain: "orders".into(),
            workflow_id: "order-42".into(),
            run_id: None,
            signal_name: "approve".into(),
            input: Some(r#"{"ok": true}"#.into()),
            region: None,
            retry: None,
            not_after: None,
            allow_duplicate: None,
            ttl_seconds_after_finished: None,
        }
    }

    fn obj(spec: WorkflowSignalSpec) -> WorkflowSignal {
        WorkflowSignal::new("approve-order-42", spec)
    }

    fn err(spec: WorkflowSignalSpec) -> String {
        obj(spec).validate().expect_err("should be invalid")
    }

    #[test]
    fn valid_objects_pass() {
        let full = WorkflowSignalSpec {
            run_id: Some("a".repeat(64)),
            input: Some("x".repeat(32768)),
            region: Some("eu-west-1".into()),
            retry: Some(RetryPolicy {
                max_attempts: Some(100),
                initial_backoff_seconds: Some(3600),
                max_backoff_seconds: Some(86400),
                retry_not_found: Some(true),
                max_duration_seconds: None,
            }),
            domain: "d".repeat(256),
            workflow_id: "w".repeat(256),
            signal_name: "s".repeat(256),
            not_after: None,
            allow_duplicate: None,
            ttl_seconds_after_finished: None,
        };
        for s in [spec(), full] {
            let o = obj(s);
            o.validate_cel().unwrap();
            o.validate().unwrap();
        }
        for region in [
            "",
            "us-east-1",
            "us-gov-west-1",
            "ap-southeast-2",
            "eusc-de-east-1",
            "cn-north-1",
        ] {
            let s = WorkflowSignalSpec {
                region: Some(region.into()),
                ..spec()
            };
            obj(s)
                .validate()
                .unwrap_or_else(|e| panic!("{region}: {e}"));
        }
    }

    #[test]
    fn each_length_limit_is_enforced() {
        let cases: [(&str, WorkflowSignalSpec); 8] = [
            (
                "spec.domain: must not be empty",
                WorkflowSignalSpec {
                    domain: String::new(),
                    ..spec()
                },
            ),
            (
                "spec.domain: must be at most 256",
                WorkflowSignalSpec {
                    domain: "d".repeat(257),
                    ..spec()
                },
            ),
            (
                "spec.workflowId: must not be empty",
                WorkflowSignalSpec {
                    workflow_id: String::new(),
                    ..spec()
                },
            ),
            (
                "spec.workflowId: must be at most 256",
                WorkflowSignalSpec {
                    workflow_id: "w".repeat(257),
                    ..spec()
                },
            ),
            (
                "spec.signalName: must not be empty",
                WorkflowSignalSpec {
                    signal_name: String::new(),
                    ..spec()
                },
            ),
            (
                "spec.signalName: must be at most 256",
                WorkflowSignalSpec {
                    signal_name: "s".repeat(257),
                    ..spec()
                },
            ),
            (
                "spec.runId: must be at most 64",
                WorkflowSignalSpec {
                    run_id: Some("r".repeat(65)),
                    ..spec()
                },
            ),
            (
                "spec.input: must be at most 32768",
                WorkflowSignalSpec {
                    input: Some("i".repeat(32769)),
                    ..spec()
                },
            ),
        ];
        for (want, s) in cases {
            let e = err(s);
            assert!(e.contains(want), "want {want:?}, got {e:?}");
        }
    }

    #[test]
    fn bad_region_is_refused_by_cel() {
        for region in [
            "EU-WEST-1",
            "eu-west",
            "eu_west_1",
            "westeurope",
            "zz-fake-1",
            "us-moon-base-1",
            " eu-west-1",
            &"a-".repeat(20),
        ] {
            let o = obj(WorkflowSignalSpec {
                region: Some(region.to_owned()),
                ..spec()
            });
            let e = o.validate().expect_err(region);
            assert!(
                e.contains(REGION_MESSAGE) || e.contains("at most 32"),
                "{region}: {e}"
            );
        }
        let o = obj(WorkflowSignalSpec {
            region: Some("moon-1".into()),
            ..spec()
        });
        assert!(o.validate_cel().is_err(), "CEL alone catches it");
    }

    #[test]
    fn retry_bounds_and_cross_field_rule() {
        let bad = [
            RetryPolicy {
                max_attempts: Some(0),
                ..Default::default()
            },
            RetryPolicy {
                max_attempts: Some(101),
                ..Default::default()
            },
            RetryPolicy {
                initial_backoff_seconds: Some(0),
                ..Default::default()
            },
            RetryPolicy {
                initial_backoff_seconds: Some(3601),
                ..Default::default()
            },
            RetryPolicy {
                max_backoff_seconds: Some(0),
                ..Default::default()
            },
            RetryPolicy {
                max_backoff_seconds: Some(86401),
                ..Default::default()
            },
        ];
        for r in bad {
            let e = err(WorkflowSignalSpec {
                retry: Some(r.clone()),
                ..spec()
            });
            assert!(e.starts_with("spec.retry."), "{r:?}: {e}");
        }
        // max below initial, explicitly or through the default max of 300.
        for r in [
            RetryPolicy {
                initial_backoff_seconds: Some(10),
                max_backoff_seconds: Some(5),
                ..Default::default()
            },
            RetryPolicy {
                initial_backoff_seconds: Some(301),
                ..Default::default()
            },
        ] {
            let o = obj(WorkflowSignalSpec {
                retry: Some(r),
                ..spec()
            });
            let e = o.validate_cel().expect_err("CEL rule");
            assert!(
                e.to_string()
                    .contains("must be at least retry.initialBackoffSeconds"),
                "{e}"
            );
        }
        let ok = RetryPolicy {
            initial_backoff_seconds: Some(300),
            ..Default::default()
        };
        obj(WorkflowSignalSpec {
            retry: Some(ok),
            ..spec()
        })
        .validate()
        .unwrap();
    }

    #[test]
    fn spec_is_immutable() {
        let old = obj(spec());
        old.validate_cel_update(&old).unwrap();
        let edits = [
            WorkflowSignalSpec {
                input: Some("other".into()),
                ..spec()
            },
            WorkflowSignalSpec {
                input: None,
                ..spec()
            },
            WorkflowSignalSpec {
                run_id: Some("r1".into()),
                ..spec()
            },
            WorkflowSignalSpec {
                retry: Some(RetryPolicy {
                    max_attempts: Some(2),
                    ..Default::default()
                }),
                ..spec()
            },
        ];
        for edited in edits {
            let e = obj(edited)
                .validate_cel_update(&old)
                .expect_err("edit refused");
            assert!(
                e.to_string().contains(WORKFLOW_SIGNAL_IMMUTABLE_MESSAGE),
                "{e}"
            );
        }
        // Status changes are not spec edits.
        let mut with_status = old.clone();
        with_status.status = Some(SignalStatus {
            attempts: 3,
            ..Default::default()
        });
        with_status.validate_cel_update(&old).unwrap();
    }

    #[test]
    fn errors_never_quote_the_input() {
        let secret = "TOP-SECRET-".repeat(3000);
        let e = err(WorkflowSignalSpec {
            input: Some(secret),
            domain: String::new(),
            region: Some("TOP-SECRET".into()),
            ..spec()
        });
        assert!(!e.contains("TOP-SECRET"), "{e}");
    }

    #[test]
    fn accessors() {
        let s = spec();
        assert_eq!(s.run_id(), None);
        assert_eq!(s.region(), None);
        assert_eq!(s.effective_region(Some("us-east-1")), Some("us-east-1"));
        assert_eq!(s.retry(), ResolvedRetry::default());
        let s = WorkflowSignalSpec {
            run_id: Some(String::new()),
            region: Some(String::new()),
            ..spec()
        };
        assert_eq!(s.run_id(), None);
        assert_eq!(s.effective_region(Some("us-east-1")), Some("us-east-1"));
        let s = WorkflowSignalSpec {
            run_id: Some("r1".into()),
            region: Some("eu-west-1".into()),
            retry: Some(RetryPolicy {
                max_backoff_seconds: Some(60),
                ..Default::default()
            }),
            ..spec()
        };
        assert_eq!(s.run_id(), Some("r1"));
        assert_eq!(s.effective_region(Some("us-east-1")), Some("eu-west-1"));
        assert_eq!(s.retry().max_backoff, Duration::from_secs(60));
        let o = obj(s);
        assert_eq!(Signal::region(&o), Some("eu-west-1"));
        assert_eq!(Signal::retry(&o).max_attempts, 8);
    }

    #[test]
    fn missing_required_fields_fail_to_parse_and_fail_the_schema() {
        let manifest = serde_json::json!({
            "apiVersion": "signalman.dev/v1alpha1",
            "kind": "WorkflowSignal",
            "metadata": {"name": "x"},
            "spec": {"domain": "orders", "workflowId": "w"},
        });
        assert!(serde_json::from_value::<WorkflowSignal>(manifest.clone()).is_err());
        let problems =
            validation::check_schema(WorkflowSignal::spec_schema(), &manifest["spec"], "spec");
        assert_eq!(problems, vec!["spec.signalName: is required"]);
    }
}
