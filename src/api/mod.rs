//! The two custom resources and what they share.
//!
//! - [`WorkflowSignal`]: Amazon SWF `SignalWorkflowExecution`.
//! - [`AutomationSignal`]: AWS Systems Manager `SendAutomationSignal`.
//!
//! Every rule lives in the generated CRD schema (OpenAPI keywords and CEL
//! `x-kubernetes-validations`), so the API server refuses a bad manifest. The same schema is
//! checked again client-side by each kind's `validate()` ([`validation`] for the OpenAPI
//! keywords, kube's `validate_cel` for the CEL rules).
mod automation_signal;
mod common;
mod crdgen;
pub mod validation;
mod workflow_signal;

pub use automation_signal::*;
pub use common::*;
pub use crdgen::{crd_files, crd_yaml, crds};
pub use workflow_signal::*;

use kube::CustomResourceExt;
use serde_json::Value;

/// API group of both kinds.
pub const GROUP: &str = "signalman.dev";
/// API version of both kinds.
pub const VERSION: &str = "v1alpha1";

/// CEL rule on `spec.region`: empty (the operator's default) or shaped like an AWS region
/// name (`eu-west-1`, `us-gov-west-1`, `eusc-de-east-1`).
pub const REGION_RULE: &str = "self == '' || self.matches('^[a-z]{2,}(-[a-z]+)+-[0-9]+$')";
/// Message of [`REGION_RULE`].
pub const REGION_MESSAGE: &str =
    "region must be an AWS region name such as eu-west-1, or empty for the operator's default region";
/// Longest accepted `spec.region` (real names are at most 15 characters).
pub const REGION_MAX_LENGTH: u32 = 32;

/// What the controller needs from either kind, for code generic over both.
pub trait Signal {
    /// The region named in the spec, `None` when absent or empty.
    fn region(&self) -> Option<&str>;
    /// `spec.retry` with defaults applied.
    fn retry(&self) -> ResolvedRetry;
    /// The API server's rules, checked again client-side; the error never quotes values.
    fn validate(&self) -> Result<(), String>;
    /// The region to use: the spec's, else `default` (the operator's `--region`).
    fn effective_region<'a>(&'a self, default: Option<&'a str>) -> Option<&'a str> {
        self.region().or(default)
    }
}

/// `spec_region` unless it is absent or empty, else `default`.
fn region_or<'a>(spec_region: Option<&'a str>, default: Option<&'a str>) -> Option<&'a str> {
    spec_region.filter(|r| !r.is_empty()).or(default)
}

/// The `spec` property of a kind's generated openAPIV3Schema.
fn spec_schema<K: CustomResourceExt>() -> Value {
    let crd = K::crd();
    let schema = crd
        .spec
        .versions
        .first()
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("derived CRDs carry a schema");
    let schema = serde_json::to_value(schema).expect("schemas serialize");
    schema
        .pointer("/properties/spec")
        .cloned()
        .expect("the schema has a spec property")
}
