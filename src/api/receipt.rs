//! `SignalReceipt`: the operator's record that a signal was delivered, kept after the signal's
//! object is gone, so that the same signal applied again (a GitOps tool replacing the object, a
//! prune reverted in git) is recognised and not sent twice.
//!
//! Receipts live in the operator's own namespace, where the teams that write signals have no
//! rights: a forged receipt would suppress a send, so only the operator (and the cluster's
//! administrators) may write them.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A delivered signal, as its receipt records it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "signalman.dev",
    version = "v1alpha1",
    kind = "SignalReceipt",
    namespaced,
    derive = "PartialEq",
    shortname = "sigrcpt",
    doc = "SignalReceipt records that a WorkflowSignal or AutomationSignal was attempted (spec.attemptedAt) and delivered (spec.deliveredAt), so the same signal created again is not sent twice. Written by the operator only; deleted after spec.expiresAt.",
    printcolumn = r#"{"name": "Namespace", "type": "string", "jsonPath": ".spec.signalNamespace", "description": "Namespace of the signal"}"#,
    printcolumn = r#"{"name": "Kind", "type": "string", "jsonPath": ".spec.signalKind"}"#,
    printcolumn = r#"{"name": "Name", "type": "string", "jsonPath": ".spec.signalName", "description": "Name of the signal object"}"#,
    printcolumn = r#"{"name": "Delivered", "type": "date", "jsonPath": ".spec.deliveredAt"}"#,
    printcolumn = r#"{"name": "Expires", "type": "string", "jsonPath": ".spec.expiresAt", "description": "When the operator deletes the receipt (a date column would show a future time as invalid)"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SignalReceiptSpec {
    /// Namespace of the signal object that was delivered.
    #[schemars(length(max = 63))]
    pub signal_namespace: String,
    /// Kind of the signal object: WorkflowSignal or AutomationSignal.
    #[schemars(length(max = 64))]
    pub signal_kind: String,
    /// Name of the signal object.
    #[schemars(length(max = 253))]
    pub signal_name: String,
    /// SHA-256 (hex) of what was sent: the target and the signal with its input or payload. The input itself is never stored.
    #[schemars(length(max = 64))]
    pub signal_hash: String,
    /// Where it went: the SWF run id, or the Automation execution id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub target: Option<String>,
    /// uid of the signal object that made the attempt: an object created again under the same name has another uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub signal_uid: Option<String>,
    /// When the first attempt was claimed (RFC 3339): written before anything is sent, so that an object deleted while its send's outcome is unknown leaves a record, and the same signal created again verifies with AWS from here before sending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub attempted_at: Option<Time>,
    /// When the delivery was recorded (RFC 3339); absent while the outcome of the attempt is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub delivered_at: Option<Time>,
    /// When the operator deletes this receipt (RFC 3339).
    #[schemars(length(max = 64))]
    pub expires_at: Time,
}
