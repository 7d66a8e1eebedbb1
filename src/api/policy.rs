//! `SignalPolicy`: which namespaces may send which signals, and as which AWS role.
//!
//! Cluster-scoped and owned by cluster administrators. Deny by default: a signal that no
//! policy allows is never sent; several policies selecting the same namespace add up (union).
//! The decision itself is [`crate::policy::evaluate`]; the chart's admission policies apply the
//! same rules at `kubectl apply` as far as CEL can (the document name of an Automation
//! execution is only known to AWS, so it is checked by the operator alone).
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use super::SignalType;

/// Annotation stamped on create (admission) with the requesting user's name; no one can forge or
/// change it. The operator copies it into `status.requestedBy`.
pub const REQUESTED_BY_ANNOTATION: &str = "signalman.dev/requested-by";
/// Annotation stamped on create (admission) with the name of a SignalPolicy that allowed the
/// signal then. Informational: the operator decides again before sending.
pub const ADMITTED_BY_ANNOTATION: &str = "signalman.dev/admitted-by";
/// Annotation with which a GitOps tool's ServiceAccount asserts who approved a change elsewhere;
/// honoured only for the ServiceAccounts an allowing policy lists in approvedByAsserters, and
/// recorded as asserted, not proven.
pub const APPROVED_BY_ANNOTATION: &str = "signalman.dev/approved-by";

/// Characters a pattern may hold: `*` (any run of characters, also none) and `?` (exactly one
/// character) are wildcards, everything else is literal. The set leaves out the characters that
/// are special in a regular expression (except `.` and `+`, which the admission policy escapes),
/// so a pattern means the same to the operator and to the admission policy.
pub const PATTERN_REGEX: &str = "^[A-Za-z0-9 _.:/@=+,#%&~*?-]+$";
/// CEL rule on one pattern.
pub const PATTERN_RULE: &str = "self.matches('^[A-Za-z0-9 _.:/@=+,#%&~*?-]+$')";
/// Message of [`PATTERN_RULE`].
pub const PATTERNS_MESSAGE: &str = "patterns may hold letters, digits, spaces and _ . : / @ = + , # % & ~ -, with * for any run of characters and ? for one";
/// Shape of `spec.roleArn`.
pub const ROLE_ARN_REGEX: &str = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$";

/// Grants a set of namespaces the right to send certain signals, optionally as an IAM role.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "signalman.dev",
    version = "v1alpha1",
    kind = "SignalPolicy",
    status = "SignalPolicyStatus",
    derive = "PartialEq",
    shortname = "sigpol",
    doc = "SignalPolicy grants the namespaces it selects the right to send certain WorkflowSignals and AutomationSignals, optionally as an IAM role the operator assumes. Deny by default: a signal that no policy allows is never sent; several policies selecting a namespace add up.",
    printcolumn = r#"{"name": "Namespaces", "type": "integer", "jsonPath": ".status.selectedNamespaces", "description": "Namespaces the policy selects"}"#,
    printcolumn = r#"{"name": "Role", "type": "string", "jsonPath": ".spec.roleArn", "description": "IAM role assumed for these namespaces"}"#,
    printcolumn = r#"{"name": "Valid", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Valid\")].status"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[x_kube(
    validation = Rule::new("has(self.swf) || has(self.ssm)")
        .message("a SignalPolicy must allow something: set swf, ssm or both"),
)]
#[serde(rename_all = "camelCase")]
pub struct SignalPolicySpec {
    /// Namespaces this policy applies to, by label (`kubernetes.io/metadata.name` names one namespace). An empty selector ({}) selects every namespace.
    #[schemars(schema_with = "selector_schema")]
    pub namespace_selector: LabelSelector,

    /// AWS regions signals may go to, as patterns (`*` any characters, `?` one character); ["*"] allows every region. A signal without spec.region goes to the operator's default region, which must match.
    #[schemars(schema_with = "patterns_64")]
    pub regions: Vec<String>,

    /// WorkflowSignals (Amazon SWF) these namespaces may send. Absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swf: Option<SwfGrant>,

    /// AutomationSignals (AWS Systems Manager) these namespaces may send. Absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssm: Option<SsmGrant>,

    /// IAM role the operator assumes (STS AssumeRole) to send these namespaces' signals. Absent: the operator's own identity. When several policies allow a signal, one with a role wins over one without, then the first by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$')").message("roleArn must be an IAM role ARN: arn:aws:iam::<account>:role/<name>"))]
    pub role_arn: Option<String>,

    /// ServiceAccounts whose signals may carry an asserted approved-by value (a GitOps tool applying a change someone approved elsewhere). Recorded as asserted by that ServiceAccount, not proven.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub approved_by_asserters: Vec<ServiceAccountRef>,
}

/// A list of 1..64 patterns of at most `max` characters, each checked by [`PATTERN_RULE`] (on
/// the items, so the rule needs no macro variable).
fn patterns(max: u32) -> Schema {
    json_schema!({
        "type": "array",
        "minItems": 1,
        "maxItems": 64,
        "items": {
            "type": "string",
            "minLength": 1,
            "maxLength": max,
            "x-kubernetes-validations": [{"rule": PATTERN_RULE, "message": PATTERNS_MESSAGE}],
        },
    })
}

fn patterns_64(_: &mut SchemaGenerator) -> Schema {
    patterns(64)
}

fn patterns_128(_: &mut SchemaGenerator) -> Schema {
    patterns(128)
}

fn patterns_256(_: &mut SchemaGenerator) -> Schema {
    patterns(256)
}

/// A label selector's schema with every list and map bounded (the generated one is not, and the
/// API server prices CEL rules by the bounds) and the operators the API server knows.
fn selector_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "properties": {
            "matchLabels": {
                "type": "object",
                "maxProperties": 64,
                "additionalProperties": {"type": "string", "maxLength": 63},
            },
            "matchExpressions": {
                "type": "array",
                "maxItems": 16,
                "items": {
                    "type": "object",
                    "required": ["key", "operator"],
                    "properties": {
                        "key": {"type": "string", "maxLength": 317},
                        "operator": {"type": "string", "enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                        "values": {
                            "type": "array",
                            "maxItems": 64,
                            "items": {"type": "string", "maxLength": 63},
                        },
                    },
                },
            },
        },
    })
}

/// The SWF part of a policy: both lists must match.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SwfGrant {
    /// SWF domains, as patterns (`*`, `?`).
    #[schemars(schema_with = "patterns_256")]
    pub domains: Vec<String>,
    /// Workflow ids, as patterns (`*`, `?`); ["*"] allows every workflow of those domains.
    #[schemars(schema_with = "patterns_256")]
    pub workflow_ids: Vec<String>,
}

/// The SSM part of a policy: both lists must match.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SsmGrant {
    /// Signal types allowed (Approve, Reject, StartStep, StopStep, Resume, Revoke).
    #[schemars(length(min = 1, max = 6))]
    pub signal_types: Vec<SignalType>,
    /// Names of the Automation documents whose executions may be signalled, as patterns (`*`, `?`). The operator reads an execution's document with GetAutomationExecution before sending; admission cannot check it.
    #[schemars(schema_with = "patterns_128")]
    pub document_names: Vec<String>,
}

/// A ServiceAccount, by namespace and name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountRef {
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

impl ServiceAccountRef {
    /// The user name the API server gives this ServiceAccount.
    pub fn username(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }
}

/// What the operator found when it last read the policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignalPolicyStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// How many namespaces the namespaceSelector selects now.
    #[serde(default)]
    #[schemars(with = "i64", range(min = 0))]
    pub selected_namespaces: u32,
    /// Valid: True when the policy can be applied; False (reason InvalidSelector) when its namespaceSelector cannot be evaluated, in which case it allows nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    use super::*;

    #[test]
    fn the_policy_is_cluster_scoped_and_its_status_a_subresource() {
        let crd = SignalPolicy::crd();
        assert_eq!(crd.spec.scope, "Cluster");
        assert!(crd.spec.versions[0]
            .subresources
            .as_ref()
            .is_some_and(|s| s.status.is_some()));
    }

    #[test]
    fn service_account_user_names() {
        let sa = ServiceAccountRef {
            namespace: "argocd".into(),
            name: "argocd-application-controller".into(),
        };
        assert_eq!(
            sa.username(),
            "system:serviceaccount:argocd:argocd-application-controller"
        );
    }
}
