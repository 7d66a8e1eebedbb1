//! Whether a signal's `signalman.dev/requested-by` annotation says who created it.
//!
//! Anyone who may create a signal may write the annotation. It is evidence only where an
//! admission policy refused every create whose annotation differed from the requesting user:
//! in a namespace that policy judged, for a signal created while the policy was in force. The
//! chart's ValidatingAdmissionPolicyBinding `<fullname>-requested-by` is that policy; the
//! operator reads it (and the policy it binds) and decides here, without I/O, whether one
//! signal's annotation is proven. Everything else is "unproven": no requester, so no
//! SourceIdentity, no name in the Comment and no `approved-by` honoured (which needs a
//! requester among a policy's asserters).
use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::core::{Selector, SelectorExt};

/// Where the operator takes the requester from (`--requester-source`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequesterSource {
    /// Never: signals have no requester.
    Ignore,
    /// The annotation as it is: the cluster's own admission (another engine than the chart's)
    /// stamps and guards it in every watched namespace, as the cluster's administrator states.
    Annotation,
    /// The annotation where this ValidatingAdmissionPolicyBinding provably guarded it.
    Binding(String),
}

impl std::str::FromStr for RequesterSource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" | "ignore" => Ok(Self::Ignore),
            "annotation" => Ok(Self::Annotation),
            _ => match s.strip_prefix("binding=") {
                Some(name) if !name.is_empty() => Ok(Self::Binding(name.to_string())),
                _ => Err(format!(
                    "{s:?} is not a requester source: ignore, annotation or binding=<ValidatingAdmissionPolicyBinding name>"
                )),
            },
        }
    }
}

/// How long the API server may take to enforce an admission policy after it was created or
/// changed (it loads policies from a watch, normally within a second or two).
pub const POLICY_LOAD_GRACE: Duration = Duration::from_secs(10);

/// What the operator read of the guarding binding and its policy.
#[derive(Clone, Debug, PartialEq)]
pub enum Guard {
    /// Read at `read_at`: the binding and the policy it names.
    Read {
        binding: Box<ValidatingAdmissionPolicyBinding>,
        policy: Option<Box<ValidatingAdmissionPolicy>>,
        read_at: Timestamp,
    },
    /// The binding does not exist (read at `read_at`).
    Missing { read_at: Timestamp },
}

impl Guard {
    pub fn read_at(&self) -> Timestamp {
        match self {
            Guard::Read { read_at, .. } | Guard::Missing { read_at, .. } => *read_at,
        }
    }
}

/// One signal's requester, or why its annotation does not count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requester<'a> {
    /// No annotation.
    None,
    Proven(&'a str),
    /// The annotation is there but not evidence; the reason in words (never its value).
    Unproven(String),
}

impl<'a> Requester<'a> {
    pub fn name(&self) -> Option<&'a str> {
        match self {
            Requester::Proven(who) => Some(who),
            Requester::None | Requester::Unproven(_) => None,
        }
    }
}

/// The facts of one signal the decision reads.
pub struct Signal<'a> {
    pub namespace: &'a str,
    pub annotation: Option<&'a str>,
    pub created: Option<Timestamp>,
    pub namespace_labels: &'a BTreeMap<String, String>,
}

/// Whether the guard was read late enough to speak for a signal created at `created`: a guard
/// read before the signal existed says nothing about the policies in force when it was made.
pub fn guard_is_recent_enough(guard: &Guard, created: Option<Timestamp>) -> bool {
    created.is_some_and(|c| guard.read_at() >= c)
}

/// The requester of `signal` under `source`, with `guard` the binding as last read.
pub fn requester<'a>(
    source: &RequesterSource,
    signal: &Signal<'a>,
    guard: Option<&Guard>,
) -> Requester<'a> {
    let Some(who) = signal.annotation else {
        return Requester::None;
    };
    match source {
        RequesterSource::Ignore => Requester::Unproven(
            "the operator takes no requester from annotations (--requester-source ignore)".into(),
        ),
        RequesterSource::Annotation => Requester::Proven(who),
        RequesterSource::Binding(name) => match guarded(signal, guard) {
            Ok(()) => Requester::Proven(who),
            Err(why) => Requester::Unproven(format!(
                "admission binding {name} did not provably guard it: {why}"
            )),
        },
    }
}

fn guarded(signal: &Signal, guard: Option<&Guard>) -> Result<(), String> {
    let Some(created) = signal.created else {
        return Err("the signal has no creation time".into());
    };
    let (binding, policy) = match guard {
        None => return Err("the binding could not be read".into()),
        Some(g) if !guard_is_recent_enough(g, Some(created)) => {
            return Err("the binding was not read since the signal was created".into())
        }
        Some(Guard::Missing { .. }) => return Err("the binding does not exist".into()),
        Some(Guard::Read {
            binding, policy, ..
        }) => (binding, policy),
    };
    let spec = binding.spec.as_ref().ok_or("the binding has no spec")?;
    let denies = spec
        .validation_actions
        .as_ref()
        .is_some_and(|a| a.iter().any(|x| x == "Deny"));
    if !denies {
        return Err("the binding does not deny (validationActions lacks Deny)".into());
    }
    let Some(policy) = policy else {
        return Err(format!(
            "its policy {} does not exist",
            spec.policy_name.as_deref().unwrap_or("(none named)")
        ));
    };
    let in_force = last_change(&binding.metadata)
        .max(last_change(&policy.metadata))
        .and_then(|t| t.checked_add(POLICY_LOAD_GRACE).ok());
    match in_force {
        Some(t) if t <= created => {}
        _ => {
            return Err(format!(
                "the signal was created before the binding and its policy were in force (changed less than {}s before)",
                POLICY_LOAD_GRACE.as_secs()
            ))
        }
    }
    let matched = spec.match_resources.clone().unwrap_or_default();
    let narrowed = matched
        .object_selector
        .as_ref()
        .is_some_and(|s| *s != Default::default())
        || matched
            .resource_rules
            .as_ref()
            .is_some_and(|r| !r.is_empty())
        || matched
            .exclude_resource_rules
            .as_ref()
            .is_some_and(|r| !r.is_empty());
    if narrowed {
        return Err(
            "the binding narrows what it judges beyond a namespaceSelector (objectSelector or resource rules)"
                .into(),
        );
    }
    let selector = Selector::try_from(matched.namespace_selector.unwrap_or_default())
        .map_err(|_| "the binding's namespaceSelector is invalid".to_string())?;
    if !selector.matches(signal.namespace_labels) {
        return Err(format!(
            "namespace {} is not judged by it (its namespaceSelector does not select it)",
            signal.namespace
        ));
    }
    Ok(())
}

/// The last time an object was created or written, as far as its metadata tells (its
/// creation, and the time of every field manager's last write).
fn last_change(meta: &ObjectMeta) -> Option<Timestamp> {
    let created = meta.creation_timestamp.as_ref().map(|t| t.0);
    let written = meta
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.time.as_ref().map(|t| t.0))
        .max();
    created.max(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::admissionregistration::v1::{
        MatchResources, ValidatingAdmissionPolicyBindingSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ManagedFieldsEntry, Time};

    const T0: i64 = 1_800_000_000;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(T0 + seconds).unwrap()
    }

    fn meta(name: &str, created: i64, written: Option<i64>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            creation_timestamp: Some(Time(at(created))),
            managed_fields: written.map(|w| {
                vec![ManagedFieldsEntry {
                    time: Some(Time(at(w))),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }
    }

    fn selecting(label: &str) -> LabelSelector {
        LabelSelector {
            match_labels: Some(BTreeMap::from([(label.into(), "on".into())])),
            ..Default::default()
        }
    }

    /// The chart's binding (judging namespaces labelled `judged=on`) and policy, both created
    /// at 0, read at `read_at`.
    fn chart_guard(read_at: i64) -> Guard {
        Guard::Read {
            binding: Box::new(ValidatingAdmissionPolicyBinding {
                metadata: meta("sm-requested-by", 0, Some(0)),
                spec: Some(ValidatingAdmissionPolicyBindingSpec {
                    policy_name: Some("sm-requested-by".into()),
                    validation_actions: Some(vec!["Deny".into()]),
                    match_resources: Some(MatchResources {
                        namespace_selector: Some(selecting("judged")),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            }),
            policy: Some(Box::new(ValidatingAdmissionPolicy {
                metadata: meta("sm-requested-by", 0, None),
                ..Default::default()
            })),
            read_at: at(read_at),
        }
    }

    fn source() -> RequesterSource {
        RequesterSource::Binding("sm-requested-by".into())
    }

    fn judged() -> BTreeMap<String, String> {
        BTreeMap::from([("judged".into(), "on".into())])
    }

    fn signal<'a>(labels: &'a BTreeMap<String, String>, created: i64) -> Signal<'a> {
        Signal {
            namespace: "team-a",
            annotation: Some("alice"),
            created: Some(at(created)),
            namespace_labels: labels,
        }
    }

    fn unproven(r: Requester) -> String {
        match r {
            Requester::Unproven(why) => why,
            other => panic!("expected unproven, got {other:?}"),
        }
    }

    #[test]
    fn a_signal_created_under_the_binding_in_a_judged_namespace_has_its_requester() {
        let labels = judged();
        let g = chart_guard(100);
        assert_eq!(
            requester(&source(), &signal(&labels, 60), Some(&g)),
            Requester::Proven("alice")
        );
    }

    #[test]
    fn a_namespace_the_binding_does_not_select_proves_nothing() {
        let labels = BTreeMap::new();
        let g = chart_guard(100);
        let why = unproven(requester(&source(), &signal(&labels, 60), Some(&g)));
        assert!(why.contains("namespace team-a is not judged"), "{why}");
        assert!(
            !why.contains("alice"),
            "the annotation's value stays out: {why}"
        );
    }

    #[test]
    fn a_signal_created_before_the_binding_was_in_force_proves_nothing() {
        let labels = judged();
        let g = chart_guard(100);
        for created in [-5, 0, 9] {
            let why = unproven(requester(&source(), &signal(&labels, created), Some(&g)));
            assert!(why.contains("before the binding"), "{created}: {why}");
        }
        // A change to the binding (a later write) moves the moment it is in force.
        let Guard::Read {
            mut binding,
            policy,
            read_at,
        } = chart_guard(100)
        else {
            unreachable!()
        };
        binding.metadata = meta("sm-requested-by", 0, Some(55));
        let changed = Guard::Read {
            binding,
            policy,
            read_at,
        };
        assert!(matches!(
            requester(&source(), &signal(&labels, 60), Some(&changed)),
            Requester::Unproven(_)
        ));
        assert_eq!(
            requester(&source(), &signal(&labels, 65), Some(&changed)),
            Requester::Proven("alice")
        );
    }

    #[test]
    fn a_guard_read_before_the_signal_existed_or_missing_proves_nothing() {
        let labels = judged();
        let stale = chart_guard(50);
        let why = unproven(requester(&source(), &signal(&labels, 60), Some(&stale)));
        assert!(why.contains("not read since"), "{why}");
        assert!(!guard_is_recent_enough(&stale, Some(at(60))));
        let missing = Guard::Missing { read_at: at(100) };
        let why = unproven(requester(&source(), &signal(&labels, 60), Some(&missing)));
        assert!(why.contains("does not exist"), "{why}");
        let why = unproven(requester(&source(), &signal(&labels, 60), None));
        assert!(why.contains("could not be read"), "{why}");
    }

    #[test]
    fn a_binding_that_only_warns_or_narrows_or_lacks_its_policy_proves_nothing() {
        let labels = judged();
        type Edit<'e> = &'e dyn Fn(&mut ValidatingAdmissionPolicyBindingSpec, &mut bool);
        let edit = |f: Edit| {
            let Guard::Read {
                mut binding,
                policy,
                read_at,
            } = chart_guard(100)
            else {
                unreachable!()
            };
            let mut keep_policy = true;
            f(binding.spec.as_mut().unwrap(), &mut keep_policy);
            Guard::Read {
                binding,
                policy: policy.filter(|_| keep_policy),
                read_at,
            }
        };
        let warns = edit(
            &|s: &mut ValidatingAdmissionPolicyBindingSpec, _: &mut bool| {
                s.validation_actions = Some(vec!["Warn".into()])
            },
        );
        let narrows = edit(
            &|s: &mut ValidatingAdmissionPolicyBindingSpec, _: &mut bool| {
                s.match_resources.as_mut().unwrap().object_selector = Some(selecting("x"))
            },
        );
        let orphan =
            edit(&|_: &mut ValidatingAdmissionPolicyBindingSpec, keep: &mut bool| *keep = false);
        for (g, expect) in [
            (warns, "lacks Deny"),
            (narrows, "narrows"),
            (orphan, "does not exist"),
        ] {
            let why = unproven(requester(&source(), &signal(&labels, 60), Some(&g)));
            assert!(why.contains(expect), "{why}");
        }
    }

    #[test]
    fn the_other_sources_and_no_annotation() {
        let labels = BTreeMap::new();
        let s = signal(&labels, 60);
        assert_eq!(
            requester(&RequesterSource::Annotation, &s, None),
            Requester::Proven("alice")
        );
        assert!(matches!(
            requester(&RequesterSource::Ignore, &s, None),
            Requester::Unproven(_)
        ));
        let none = Signal {
            annotation: None,
            ..signal(&labels, 60)
        };
        assert_eq!(
            requester(&source(), &none, Some(&chart_guard(100))),
            Requester::None
        );
    }

    #[test]
    fn sources_parse() {
        assert_eq!("ignore".parse(), Ok(RequesterSource::Ignore));
        assert_eq!("".parse(), Ok(RequesterSource::Ignore));
        assert_eq!("annotation".parse(), Ok(RequesterSource::Annotation));
        assert_eq!(
            "binding=sm-requested-by".parse(),
            Ok(RequesterSource::Binding("sm-requested-by".into()))
        );
        assert!("binding=".parse::<RequesterSource>().is_err());
        assert!("webhook".parse::<RequesterSource>().is_err());
    }
}
