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
mod policy;
mod receipt;
pub mod validation;
mod workflow_signal;

pub use automation_signal::*;
pub use common::*;
pub use crdgen::{crd_files, crd_yaml, crds};
pub use policy::*;
pub use receipt::{SignalReceipt, SignalReceiptSpec};
pub use workflow_signal::*;

use kube::CustomResourceExt;
use serde_json::Value;

/// API group of both kinds.
pub const GROUP: &str = "signalman.dev";
/// API version of both kinds.
pub const VERSION: &str = "v1alpha1";

/// CEL rule on `spec.region`: empty (the operator's default) or a name one of AWS's partitions
/// knows, by the region patterns of the AWS SDKs' partition table (aws, aws-cn, aws-us-gov,
/// aws-iso, aws-iso-b, aws-iso-e, aws-iso-f, aws-eusc); [`is_known_region`] is the same rule.
pub const REGION_RULE: &str = "self == '' || self.matches('^((us|eu|ap|sa|ca|me|af|il|mx)-[a-z0-9]+-[0-9]+|cn-[a-z0-9]+-[0-9]+|us-(gov|iso|isob|isof)-[a-z0-9]+-[0-9]+|eu-isoe-[a-z0-9]+-[0-9]+|eusc-de-[a-z0-9]+-[0-9]+)$')";
/// Message of [`REGION_RULE`].
pub const REGION_MESSAGE: &str =
    "region must be a region of an AWS partition, such as eu-west-1, cn-north-1 or us-gov-west-1, or empty for the operator's default region";

/// Whether some AWS partition knows `region` (what [`REGION_RULE`] admits, empty aside): the
/// partition patterns the AWS SDKs resolve endpoints with, so a region AWS opens later is
/// served without a new release, and a made-up name such as `zz-fake-1` is not.
pub fn is_known_region(region: &str) -> bool {
    let word = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let parts: Vec<&str> = region.split('-').collect();
    match parts.as_slice() {
        [prefix, name, n] => {
            matches!(
                *prefix,
                "us" | "eu" | "ap" | "sa" | "ca" | "me" | "af" | "il" | "mx" | "cn"
            ) && word(name)
                && number(n)
        }
        ["us", "gov" | "iso" | "isob" | "isof", name, n]
        | ["eu", "isoe", name, n]
        | ["eusc", "de", name, n] => word(name) && number(n),
        _ => false,
    }
}
/// Longest accepted `spec.region` (real names are at most 15 characters).
pub const REGION_MAX_LENGTH: u32 = 32;

/// What the controller needs from either kind, for code generic over both.
pub trait Signal {
    /// The region named in the spec, `None` when absent or empty.
    fn region(&self) -> Option<&str>;
    /// `spec.retry` with defaults applied.
    fn retry(&self) -> ResolvedRetry;
    /// `spec.notAfter`: never send after this instant.
    fn not_after(&self) -> Option<k8s_openapi::jiff::Timestamp>;
    /// `spec.allowDuplicate`: send even if this signal was delivered before.
    fn allow_duplicate(&self) -> bool;
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    use super::*;

    fn workflow(region: Option<&str>, retry: Option<RetryPolicy>) -> WorkflowSignal {
        WorkflowSignal::new(
            "w",
            WorkflowSignalSpec {
                domain: "orders".into(),
                workflow_id: "order-42".into(),
                run_id: None,
                signal_name: "approve".into(),
                input: None,
                region: region.map(str::to_owned),
                retry,
                not_after: None,
                allow_duplicate: None,
                ttl_seconds_after_finished: None,
            },
        )
    }

    fn automation(signal_type: SignalType, payload: &[(&str, &[&str])]) -> AutomationSignal {
        let payload: BTreeMap<String, Vec<String>> = payload
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect();
        AutomationSignal::new(
            "a",
            AutomationSignalSpec {
                automation_execution_id: "73c8eef8-f4ee-4a05-820c-e354fEXAMPLE".into(),
                signal_type,
                payload: (!payload.is_empty()).then_some(payload),
                region: None,
                retry: None,
                not_after: None,
                allow_duplicate: None,
                ttl_seconds_after_finished: None,
            },
        )
    }

    fn described(r: Result<(), kube::core::cel::ValidationErrors>) -> Vec<String> {
        r.err()
            .map(|e| validation::describe_cel_errors(&e))
            .unwrap_or_default()
    }

    /// The rules compiled once give the verdicts, field paths and messages of kube's own
    /// `validate_cel`, valid and invalid objects alike.
    #[test]
    fn compiled_rules_agree_with_kubes_validate_cel() {
        let bad_retry = RetryPolicy {
            initial_backoff_seconds: Some(10),
            max_backoff_seconds: Some(5),
            ..Default::default()
        };
        let workflows = [
            workflow(None, None),
            workflow(Some("eu-west-1"), None),
            workflow(Some("moon"), None),
            workflow(Some("moon"), Some(bad_retry.clone())),
            workflow(None, Some(bad_retry)),
        ];
        let mut failing = 0;
        for w in &workflows {
            let spec = serde_json::to_value(&w.spec).unwrap();
            let ours = described(validation::CelRules::of::<WorkflowSignal>().check_spec(&spec));
            assert_eq!(ours, described(w.validate_cel()), "{:?}", w.spec);
            failing += usize::from(!ours.is_empty());
        }
        let automations = [
            automation(SignalType::Approve, &[]),
            automation(SignalType::StartStep, &[("StepName", &["deploy"])]),
            automation(SignalType::StartStep, &[]),
            automation(SignalType::StopStep, &[("StepName", &["x"])]),
            automation(SignalType::Resume, &[("", &["x"])]),
        ];
        for a in &automations {
            let spec = serde_json::to_value(&a.spec).unwrap();
            let ours = described(validation::CelRules::of::<AutomationSignal>().check_spec(&spec));
            assert_eq!(ours, described(a.validate_cel()), "{:?}", a.spec);
            failing += usize::from(!ours.is_empty());
        }
        assert_eq!(failing, 6, "the cases cover failing rules too");
    }

    /// What one `validate()` costs against kube's `validate_cel`, which rebuilds the CRD and
    /// compiles every rule per call. Both are timed in the same process, interleaved, so the
    /// machine's load affects both alike; the margin is wide (the measured gap is far larger).
    #[test]
    fn validate_no_longer_rebuilds_the_crd_per_call() {
        let w = workflow(Some("eu-west-1"), None);
        let a = automation(SignalType::StartStep, &[("StepName", &["deploy"])]);
        w.validate().unwrap();
        a.validate().unwrap();
        let (mut ours, mut kubes) = (Duration::ZERO, Duration::ZERO);
        const CALLS: u32 = 40;
        for _ in 0..CALLS {
            let t = Instant::now();
            w.validate().unwrap();
            a.validate().unwrap();
            ours += t.elapsed();
            let t = Instant::now();
            w.validate_cel().unwrap();
            a.validate_cel().unwrap();
            kubes += t.elapsed();
        }
        let per_call = |d: Duration| d / (2 * CALLS);
        eprintln!(
            "per call: validate() {:?} (schema and CEL), kube validate_cel {:?} (CEL only)",
            per_call(ours),
            per_call(kubes)
        );
        assert!(
            ours * 4 < kubes,
            "validate() {:?} per call is not well below validate_cel's {:?}",
            per_call(ours),
            per_call(kubes)
        );
    }
}

#[cfg(test)]
mod region_tests {
    use super::is_known_region;

    /// The partitions' region patterns: every real region name, none made up.
    #[test]
    fn a_region_is_known_when_an_aws_partition_knows_it() {
        for region in [
            "us-east-1",
            "eu-west-1",
            "ap-southeast-5",
            "mx-central-1",
            "il-central-1",
            "cn-northwest-1",
            "us-gov-west-1",
            "us-iso-east-1",
            "us-isob-east-1",
            "us-isof-south-1",
            "eu-isoe-west-1",
            "eusc-de-east-1",
        ] {
            assert!(is_known_region(region), "{region}");
        }
        for region in [
            "zz-fake-1",
            "moon-1",
            "eu-west",
            "EU-WEST-1",
            "us-gov-1-x",
            "eusc-fr-east-1",
            "",
            "us--1",
        ] {
            assert!(!is_known_region(region), "{region}");
        }
    }
}
