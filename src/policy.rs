//! Which namespace may send what, as which role: the decision over the [`SignalPolicy`]
//! objects, as pure code.
//!
//! Deny by default: a signal is allowed only when at least one valid policy selects its
//! namespace and allows every part of the request; policies add up (union). The chart's
//! admission policies apply the same rules at `kubectl apply`; this is the operator's check
//! before any AWS call, and it sees policy edits made after the signal was created.
//!
//! An AutomationSignal's document name is known only after GetAutomationExecution, so an SSM
//! request is evaluated twice: without the document ([`Decision::NeedsDocument`] says which role
//! to read it with, [`Decision::Denied`] means no AWS call at all), then with it.
//!
//! When several policies allow a request, the grant comes from one of them: a policy naming a
//! role wins over one without (the assumed role is the narrower identity), then the first by
//! name. The rule depends only on the policies, never on their order in a list.
use std::borrow::Borrow;
use std::collections::BTreeMap;

use kube::core::{Selector, SelectorExt};

use crate::api::{SignalPolicy, SignalPolicyStatus, SignalType};

/// `status.conditions[].reason` (and the Ready/Stalled reason) of a signal no policy allows.
pub const POLICY_DENIED: &str = "PolicyDenied";

/// What a signal asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// A WorkflowSignal.
    Swf {
        domain: &'a str,
        workflow_id: &'a str,
    },
    /// An AutomationSignal; `document` is `None` until the execution has been read.
    Ssm {
        signal_type: SignalType,
        document: Option<&'a str>,
    },
}

/// One signal, as the policies judge it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The region the signal goes to: its spec.region, else the operator's default region.
    pub region: &'a str,
    pub target: Target<'a>,
}

/// The policy a request is allowed by, and the identity to use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Name of the policy that grants it (see the module docs for the choice).
    pub policy: String,
    /// The role to assume; `None`: the operator's own identity.
    pub role_arn: Option<String>,
}

/// Why a request is denied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    pub namespace: String,
    /// The field that no policy allows, e.g. `spec.workflowId`; `metadata.namespace` when no
    /// policy selects the namespace at all.
    pub field: &'static str,
    /// The value of that field (names and ids, never an input or a payload).
    pub value: String,
    /// The valid policies selecting the namespace (empty when none does).
    pub policies: Vec<String>,
    /// What an administrator would have to add, in words.
    pub needed: String,
}

impl Denial {
    /// The message for status, Events and logs: namespace, field and the policy needed.
    pub fn message(&self) -> String {
        let by = if self.policies.is_empty() {
            "no valid SignalPolicy selects the namespace".to_string()
        } else {
            format!("not allowed by SignalPolicy {}", self.policies.join(", "))
        };
        format!(
            "namespace {}: {} {:?} {by}; needed: a SignalPolicy selecting namespace {} {}",
            self.namespace, self.field, self.value, self.namespace, self.needed
        )
    }
}

/// The outcome of [`evaluate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allowed(Grant),
    /// SSM without a document: some policy allows everything else. Read the execution's
    /// document as `Grant` (the best candidate), then evaluate again with it.
    NeedsDocument(Grant),
    Denied(Denial),
}

/// The checks in the order they are made; a denial names the furthest one any selecting
/// policy got to, so the message points at what is closest to being allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Kind,
    Region,
    Domain,
    WorkflowId,
    SignalType,
    Document,
}

/// Decides whether `namespace` (with `namespace_labels`) may send `request` under `policies`.
/// Policies whose namespaceSelector cannot be evaluated allow nothing.
/// The policies may be owned or shared (`Arc`, as the operator's cache hands them out: no
/// copy per decision).
pub fn evaluate<P: Borrow<SignalPolicy>>(
    policies: &[P],
    namespace: &str,
    namespace_labels: &BTreeMap<String, String>,
    request: &Request<'_>,
) -> Decision {
    let selecting: Vec<&SignalPolicy> = policies
        .iter()
        .map(Borrow::borrow)
        .filter(|p| selects(p, namespace_labels) == Some(true))
        .collect();
    let mut allowing: Vec<&SignalPolicy> = Vec::new();
    let mut furthest: Option<Step> = None;
    for p in &selecting {
        match first_failure(p, request) {
            None => allowing.push(p),
            Some(step) => furthest = furthest.max(Some(step)),
        }
    }
    if let Some(best) = allowing.iter().min_by(|a, b| rank(a).cmp(&rank(b))) {
        let grant = Grant {
            policy: name_of(best).to_string(),
            role_arn: best.spec.role_arn.clone(),
        };
        return match request.target {
            Target::Ssm { document: None, .. } => Decision::NeedsDocument(grant),
            _ => Decision::Allowed(grant),
        };
    }
    let mut names: Vec<String> = selecting.iter().map(|p| name_of(p).to_string()).collect();
    names.sort();
    Decision::Denied(denial(namespace, names, furthest, request))
}

/// The ServiceAccounts that may assert an approved-by value for `request`: those listed by the
/// policies that allow it (a policy that does not allow the signal grants nothing). `request`
/// should carry the document when it is an SSM request.
pub fn may_assert_approved_by<P: Borrow<SignalPolicy>>(
    policies: &[P],
    namespace_labels: &BTreeMap<String, String>,
    request: &Request<'_>,
    username: &str,
) -> bool {
    policies
        .iter()
        .map(Borrow::borrow)
        .filter(|p| selects(p, namespace_labels) == Some(true))
        .filter(|p| first_failure(p, request).is_none())
        .flat_map(|p| p.spec.approved_by_asserters.iter())
        .any(|sa| sa.username() == username)
}

/// Whether `policy` selects a namespace with `labels`; `None` when its selector is invalid.
pub fn selects(policy: &SignalPolicy, labels: &BTreeMap<String, String>) -> Option<bool> {
    let selector = Selector::try_from(policy.spec.namespace_selector.clone()).ok()?;
    Some(selector.matches(labels))
}

/// The status the operator writes on `policy`: how many of `namespaces` (their labels) it
/// selects, and whether it is valid (an invalid namespaceSelector allows nothing). Conditions
/// carry `now` as their transition time only when their status changes from `previous`.
pub fn policy_status<'a>(
    policy: &SignalPolicy,
    namespaces: impl IntoIterator<Item = &'a BTreeMap<String, String>>,
    now: k8s_openapi::jiff::Timestamp,
) -> SignalPolicyStatus {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    let valid = Selector::try_from(policy.spec.namespace_selector.clone()).is_ok();
    let selected = if valid {
        namespaces
            .into_iter()
            .filter(|labels| selects(policy, labels) == Some(true))
            .count()
    } else {
        0
    };
    let (status, reason, message) = if valid {
        (
            "True",
            "Valid",
            "the policy applies to the namespaces it selects",
        )
    } else {
        (
            "False",
            "InvalidSelector",
            "spec.namespaceSelector cannot be evaluated: the policy allows nothing",
        )
    };
    let previous = policy
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Valid"));
    let last_transition_time = match previous {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(now),
    };
    SignalPolicyStatus {
        observed_generation: policy.metadata.generation,
        selected_namespaces: u32::try_from(selected).unwrap_or(u32::MAX),
        conditions: vec![Condition {
            type_: "Valid".into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            observed_generation: policy.metadata.generation,
            last_transition_time,
        }],
    }
}

/// `*` matches any run of characters (also none), `?` exactly one; everything else is literal.
/// The admission policy turns the same patterns into anchored regular expressions with the
/// same meaning.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Greedy match with one backtrack point: the last `*` seen.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && p[pi] == t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn any_matches(patterns: &[String], value: &str) -> bool {
    patterns.iter().any(|p| glob_matches(p, value))
}

fn name_of(p: &SignalPolicy) -> &str {
    p.metadata.name.as_deref().unwrap_or_default()
}

/// Sort key of the allowing policies: with a role first, then by name.
fn rank(p: &SignalPolicy) -> (bool, &str) {
    (p.spec.role_arn.is_none(), name_of(p))
}

/// The first check `policy` fails for `request`, or `None` when it allows it.
fn first_failure(policy: &SignalPolicy, request: &Request<'_>) -> Option<Step> {
    let spec = &policy.spec;
    match request.target {
        Target::Swf {
            domain,
            workflow_id,
        } => {
            let Some(swf) = &spec.swf else {
                return Some(Step::Kind);
            };
            if !any_matches(&spec.regions, request.region) {
                return Some(Step::Region);
            }
            if !any_matches(&swf.domains, domain) {
                return Some(Step::Domain);
            }
            if !any_matches(&swf.workflow_ids, workflow_id) {
                return Some(Step::WorkflowId);
            }
        }
        Target::Ssm {
            signal_type,
            document,
        } => {
            let Some(ssm) = &spec.ssm else {
                return Some(Step::Kind);
            };
            if !any_matches(&spec.regions, request.region) {
                return Some(Step::Region);
            }
            if !ssm.signal_types.contains(&signal_type) {
                return Some(Step::SignalType);
            }
            if let Some(doc) = document {
                if !any_matches(&ssm.document_names, doc) {
                    return Some(Step::Document);
                }
            }
        }
    }
    None
}

fn denial(
    namespace: &str,
    policies: Vec<String>,
    furthest: Option<Step>,
    request: &Request<'_>,
) -> Denial {
    let (field, value, needed): (&'static str, String, String) = match (furthest, request.target) {
        (None, _) => (
            "metadata.namespace",
            namespace.to_string(),
            "that allows this signal".to_string(),
        ),
        (Some(Step::Kind), Target::Swf { .. }) => (
            "kind",
            "WorkflowSignal".to_string(),
            "with an swf section".to_string(),
        ),
        (Some(Step::Kind), Target::Ssm { .. }) => (
            "kind",
            "AutomationSignal".to_string(),
            "with an ssm section".to_string(),
        ),
        (Some(Step::Region), _) => (
            "spec.region",
            request.region.to_string(),
            format!("whose regions match {:?}", request.region),
        ),
        (Some(Step::Domain), Target::Swf { domain, .. }) => (
            "spec.domain",
            domain.to_string(),
            format!("whose swf.domains match {domain:?}"),
        ),
        (Some(Step::WorkflowId), Target::Swf { workflow_id, .. }) => (
            "spec.workflowId",
            workflow_id.to_string(),
            format!("whose swf.workflowIds match {workflow_id:?}"),
        ),
        (Some(Step::SignalType), Target::Ssm { signal_type, .. }) => (
            "spec.signalType",
            signal_type.to_string(),
            format!("whose ssm.signalTypes include {signal_type}"),
        ),
        (Some(Step::Document), Target::Ssm { document, .. }) => {
            let doc = document.unwrap_or_default();
            (
                "document (of spec.automationExecutionId)",
                doc.to_string(),
                format!("whose ssm.documentNames match {doc:?}"),
            )
        }
        // A step of the other service cannot be reached; name the namespace.
        (Some(_), _) => (
            "metadata.namespace",
            namespace.to_string(),
            "that allows this signal".to_string(),
        ),
    };
    Denial {
        namespace: namespace.to_string(),
        field,
        value,
        policies,
        needed,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

    use super::*;
    use crate::api::{ServiceAccountRef, SignalPolicySpec, SsmGrant, SwfGrant};

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn team(team: &str) -> LabelSelector {
        LabelSelector {
            match_labels: Some(labels(&[("team", team)])),
            ..Default::default()
        }
    }

    fn policy(name: &str, selector: LabelSelector) -> SignalPolicy {
        SignalPolicy::new(
            name,
            SignalPolicySpec {
                namespace_selector: selector,
                regions: strings(&["*"]),
                swf: None,
                ssm: None,
                role_arn: None,
                approved_by_asserters: vec![],
            },
        )
    }

    fn swf(mut p: SignalPolicy, domains: &[&str], ids: &[&str]) -> SignalPolicy {
        p.spec.swf = Some(SwfGrant {
            domains: strings(domains),
            workflow_ids: strings(ids),
        });
        p
    }

    fn ssm(mut p: SignalPolicy, types: &[SignalType], docs: &[&str]) -> SignalPolicy {
        p.spec.ssm = Some(SsmGrant {
            signal_types: types.to_vec(),
            document_names: strings(docs),
        });
        p
    }

    fn role(mut p: SignalPolicy, arn: &str) -> SignalPolicy {
        p.spec.role_arn = Some(arn.to_string());
        p
    }

    fn wf<'a>(region: &'a str, domain: &'a str, workflow_id: &'a str) -> Request<'a> {
        Request {
            region,
            target: Target::Swf {
                domain,
                workflow_id,
            },
        }
    }

    fn am(signal_type: SignalType, document: Option<&str>) -> Request<'_> {
        Request {
            region: "eu-west-1",
            target: Target::Ssm {
                signal_type,
                document,
            },
        }
    }

    fn denied(d: Decision) -> Denial {
        match d {
            Decision::Denied(d) => d,
            other => panic!("expected a denial, got {other:?}"),
        }
    }

    fn granted(d: Decision) -> Grant {
        match d {
            Decision::Allowed(g) => g,
            other => panic!("expected Allowed, got {other:?}"),
        }
    }

    #[test]
    fn globs() {
        for (p, t, want) in [
            ("*", "", true),
            ("*", "anything", true),
            ("order-*", "order-42", true),
            ("order-*", "order-", true),
            ("order-*", "orders-1", false),
            ("Change-*", "Change-DB", true),
            ("Change-*", "change-db", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*-prod-*", "eu-prod-7", true),
            ("*-prod-*", "eu-dev-7", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("eu-*-1", "eu-west-1", true),
            ("eu-*-1", "us-west-1", false),
            ("é?", "éx", true),
        ] {
            assert_eq!(glob_matches(p, t), want, "{p} vs {t}");
        }
    }

    #[test]
    fn no_policy_denies_and_names_the_namespace() {
        let d = denied(evaluate::<SignalPolicy>(
            &[],
            "team-a",
            &labels(&[]),
            &wf("eu-west-1", "d", "w"),
        ));
        assert_eq!(d.field, "metadata.namespace");
        assert!(d.policies.is_empty());
        let m = d.message();
        assert!(m.contains("namespace team-a"), "{m}");
        assert!(m.contains("no valid SignalPolicy selects"), "{m}");
    }

    #[test]
    fn a_policy_selecting_other_namespaces_denies() {
        let p = [swf(policy("orders", team("orders")), &["*"], &["*"])];
        let d = denied(evaluate(
            &p,
            "billing",
            &labels(&[("team", "billing")]),
            &wf("eu-west-1", "orders", "o-1"),
        ));
        assert_eq!(d.field, "metadata.namespace");
    }

    #[test]
    fn one_team_one_domain() {
        let p = [swf(
            policy("orders", team("orders")),
            &["orders"],
            &["order-*"],
        )];
        let ns = labels(&[("team", "orders")]);
        let g = granted(evaluate(
            &p,
            "orders",
            &ns,
            &wf("eu-west-1", "orders", "order-42"),
        ));
        assert_eq!(
            g,
            Grant {
                policy: "orders".into(),
                role_arn: None
            }
        );
        let d = denied(evaluate(
            &p,
            "orders",
            &ns,
            &wf("eu-west-1", "billing", "order-42"),
        ));
        assert_eq!((d.field, d.value.as_str()), ("spec.domain", "billing"));
        assert_eq!(d.policies, vec!["orders".to_string()]);
        let m = d.message();
        assert!(
            m.contains("spec.domain \"billing\" not allowed by SignalPolicy orders"),
            "{m}"
        );
        assert!(m.contains("swf.domains match \"billing\""), "{m}");
        let d = denied(evaluate(
            &p,
            "orders",
            &ns,
            &wf("eu-west-1", "orders", "x-1"),
        ));
        assert_eq!(d.field, "spec.workflowId");
        // SSM is not granted at all.
        let d = denied(evaluate(&p, "orders", &ns, &am(SignalType::Approve, None)));
        assert_eq!((d.field, d.value.as_str()), ("kind", "AutomationSignal"));
    }

    #[test]
    fn regions_are_checked() {
        let mut p = swf(policy("eu", team("a")), &["*"], &["*"]);
        p.spec.regions = strings(&["eu-*"]);
        let ns = labels(&[("team", "a")]);
        granted(evaluate(
            &[p.clone()],
            "a",
            &ns,
            &wf("eu-central-1", "d", "w"),
        ));
        let d = denied(evaluate(&[p], "a", &ns, &wf("us-east-1", "d", "w")));
        assert_eq!((d.field, d.value.as_str()), ("spec.region", "us-east-1"));
    }

    #[test]
    fn policies_add_up() {
        let ns = labels(&[("team", "a"), ("env", "prod")]);
        let by_team = swf(policy("team-a", team("a")), &["orders"], &["*"]);
        let by_env = swf(
            policy(
                "prod",
                LabelSelector {
                    match_expressions: Some(vec![LabelSelectorRequirement {
                        key: "env".into(),
                        operator: "In".into(),
                        values: Some(strings(&["prod", "staging"])),
                    }]),
                    ..Default::default()
                },
            ),
            &["billing"],
            &["*"],
        );
        let ps = [by_team, by_env];
        assert_eq!(
            granted(evaluate(&ps, "a", &ns, &wf("eu-west-1", "orders", "1"))).policy,
            "team-a"
        );
        assert_eq!(
            granted(evaluate(&ps, "a", &ns, &wf("eu-west-1", "billing", "1"))).policy,
            "prod"
        );
        let d = denied(evaluate(&ps, "a", &ns, &wf("eu-west-1", "hr", "1")));
        assert_eq!(d.policies, strings(&["prod", "team-a"]));
    }

    #[test]
    fn the_empty_selector_selects_every_namespace() {
        let p = [swf(policy("all", LabelSelector::default()), &["*"], &["*"])];
        granted(evaluate(&p, "x", &labels(&[]), &wf("eu-west-1", "d", "w")));
    }

    #[test]
    fn an_invalid_selector_allows_nothing() {
        let bad = swf(
            policy(
                "bad",
                LabelSelector {
                    match_expressions: Some(vec![LabelSelectorRequirement {
                        key: "team".into(),
                        operator: "Sometimes".into(),
                        values: None,
                    }]),
                    ..Default::default()
                },
            ),
            &["*"],
            &["*"],
        );
        assert_eq!(selects(&bad, &labels(&[("team", "a")])), None);
        let d = denied(evaluate(
            &[bad],
            "a",
            &labels(&[("team", "a")]),
            &wf("r", "d", "w"),
        ));
        assert!(
            d.policies.is_empty(),
            "an invalid policy is not reported as selecting"
        );
    }

    #[test]
    fn ssm_is_decided_in_two_steps() {
        let p = [role(
            ssm(
                policy("change", team("cab")),
                &[SignalType::Approve, SignalType::Reject],
                &["Change-*"],
            ),
            "arn:aws:iam::123456789012:role/change",
        )];
        let ns = labels(&[("team", "cab")]);
        // Before the execution is read: the role to read it with.
        match evaluate(&p, "cab", &ns, &am(SignalType::Approve, None)) {
            Decision::NeedsDocument(g) => {
                assert_eq!(
                    g.role_arn.as_deref(),
                    Some("arn:aws:iam::123456789012:role/change")
                )
            }
            other => panic!("{other:?}"),
        }
        // A signal type no policy allows is denied before any AWS call.
        let d = denied(evaluate(&p, "cab", &ns, &am(SignalType::Resume, None)));
        assert_eq!((d.field, d.value.as_str()), ("spec.signalType", "Resume"));
        // After: the document decides.
        let g = granted(evaluate(
            &p,
            "cab",
            &ns,
            &am(SignalType::Reject, Some("Change-DB")),
        ));
        assert_eq!(g.policy, "change");
        let d = denied(evaluate(
            &p,
            "cab",
            &ns,
            &am(SignalType::Approve, Some("Deploy-Prod")),
        ));
        assert_eq!(d.field, "document (of spec.automationExecutionId)");
        assert!(d
            .message()
            .contains("ssm.documentNames match \"Deploy-Prod\""));
    }

    #[test]
    fn the_denial_names_the_furthest_step() {
        let ns = labels(&[("team", "a")]);
        let only_swf = swf(policy("a-swf", team("a")), &["*"], &["*"]);
        let close = ssm(
            policy("b-ssm", team("a")),
            &[SignalType::Approve],
            &["Change-*"],
        );
        let d = denied(evaluate(
            &[only_swf, close],
            "a",
            &ns,
            &am(SignalType::Approve, Some("Other")),
        ));
        assert_eq!(d.field, "document (of spec.automationExecutionId)");
    }

    #[test]
    fn the_grant_is_chosen_by_role_then_name_whatever_the_order() {
        let ns = labels(&[("team", "a")]);
        let plain = swf(policy("a-plain", team("a")), &["*"], &["*"]);
        let zed = role(
            swf(policy("zed", team("a")), &["*"], &["*"]),
            "arn:aws:iam::123456789012:role/zed",
        );
        let yak = role(
            swf(policy("yak", team("a")), &["*"], &["*"]),
            "arn:aws:iam::123456789012:role/yak",
        );
        let req = wf("eu-west-1", "d", "w");
        for order in [
            vec![plain.clone(), zed.clone(), yak.clone()],
            vec![yak.clone(), plain.clone(), zed.clone()],
            vec![zed.clone(), yak.clone(), plain.clone()],
        ] {
            let g = granted(evaluate(&order, "a", &ns, &req));
            assert_eq!(g.policy, "yak");
            assert_eq!(
                g.role_arn.as_deref(),
                Some("arn:aws:iam::123456789012:role/yak")
            );
        }
        // Without any role: the first by name, with the operator's identity.
        let g = granted(evaluate(&[zed_plain(), plain], "a", &ns, &req));
        assert_eq!(
            g,
            Grant {
                policy: "a-plain".into(),
                role_arn: None
            }
        );
    }

    fn example(file: &str) -> SignalPolicy {
        let path = format!("{}/examples/policies/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The documented examples do what their comments say.
    #[test]
    fn the_examples_behave_as_documented() {
        let orders = [example("one-team-one-domain.yaml")];
        let ns = labels(&[("team", "orders")]);
        let g = granted(evaluate(
            &orders,
            "shop",
            &ns,
            &wf("eu-west-1", "orders", "order-7"),
        ));
        assert_eq!(
            g.role_arn.as_deref(),
            Some("arn:aws:iam::123456789012:role/signalman-orders")
        );
        denied(evaluate(
            &orders,
            "shop",
            &ns,
            &wf("eu-west-1", "payments", "order-7"),
        ));
        denied(evaluate(
            &orders,
            "shop",
            &ns,
            &wf("us-east-1", "orders", "order-7"),
        ));
        denied(evaluate(
            &orders,
            "shop",
            &ns,
            &am(SignalType::Approve, None),
        ));

        let cab = [example("change-approval.yaml")];
        let ns = labels(&[("kubernetes.io/metadata.name", "change-approvals")]);
        let req = am(SignalType::Approve, Some("Change-RotateKeys"));
        granted(evaluate(&cab, "change-approvals", &ns, &req));
        granted(evaluate(
            &cab,
            "change-approvals",
            &ns,
            &am(SignalType::Reject, Some("Change-X")),
        ));
        denied(evaluate(
            &cab,
            "change-approvals",
            &ns,
            &am(SignalType::Approve, Some("AWS-RestartEC2Instance")),
        ));
        denied(evaluate(
            &cab,
            "change-approvals",
            &ns,
            &am(SignalType::Resume, None),
        ));
        let argo = "system:serviceaccount:argocd:argocd-application-controller";
        assert!(may_assert_approved_by(&cab, &ns, &req, argo));
        let other = labels(&[("kubernetes.io/metadata.name", "elsewhere")]);
        denied(evaluate(&cab, "elsewhere", &other, &req));

        let all = [example("one-namespace-everything.yaml")];
        let demo = labels(&[("kubernetes.io/metadata.name", "demo")]);
        for t in SignalType::ALL {
            granted(evaluate(&all, "demo", &demo, &am(t, Some("Any-Doc"))));
        }
        granted(evaluate(
            &all,
            "demo",
            &demo,
            &wf("ap-south-2", "any", "thing"),
        ));
    }

    #[test]
    fn policy_status_counts_selected_namespaces_and_validity() {
        let now: k8s_openapi::jiff::Timestamp = "2026-11-29T17:00:00Z".parse().unwrap();
        let later: k8s_openapi::jiff::Timestamp = "2026-11-29T18:00:00Z".parse().unwrap();
        let mut p = swf(policy("p", team("a")), &["*"], &["*"]);
        p.metadata.generation = Some(3);
        let nss = [
            labels(&[("team", "a")]),
            labels(&[("team", "b")]),
            labels(&[("team", "a"), ("env", "prod")]),
        ];
        let s = policy_status(&p, nss.iter(), now);
        assert_eq!(s.selected_namespaces, 2);
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.conditions[0].status, "True");
        // The transition time stays while the condition does not change.
        p.status = Some(s.clone());
        let again = policy_status(&p, nss.iter(), later);
        assert_eq!(again.conditions[0].last_transition_time.0, now);
        p.spec.namespace_selector.match_expressions = Some(vec![LabelSelectorRequirement {
            key: "team".into(),
            operator: "Maybe".into(),
            values: None,
        }]);
        let bad = policy_status(&p, nss.iter(), later);
        assert_eq!(bad.selected_namespaces, 0);
        assert_eq!(
            (
                bad.conditions[0].status.as_str(),
                bad.conditions[0].reason.as_str()
            ),
            ("False", "InvalidSelector")
        );
        assert_eq!(bad.conditions[0].last_transition_time.0, later);
    }

    /// The CRD's rule and the admission policy's regular expressions read a pattern the way
    /// [`glob_matches`] does: `.` and `+` are literal, only `*` and `?` are wildcards.
    #[test]
    fn dots_and_pluses_are_literal() {
        assert!(crate::api::PATTERN_RULE.contains(crate::api::PATTERN_REGEX));
        assert!(glob_matches("a.b+c", "a.b+c"));
        assert!(!glob_matches("a.b", "axb"));
        assert!(!glob_matches("a+", "aa"));
    }

    fn zed_plain() -> SignalPolicy {
        swf(policy("zed-plain", team("a")), &["*"], &["*"])
    }

    #[test]
    fn approved_by_asserters_come_from_allowing_policies_only() {
        let ns = labels(&[("team", "a")]);
        let mut gitops = swf(policy("gitops", team("a")), &["orders"], &["*"]);
        gitops.spec.approved_by_asserters = vec![ServiceAccountRef {
            namespace: "argocd".into(),
            name: "argocd-application-controller".into(),
        }];
        let argo = "system:serviceaccount:argocd:argocd-application-controller";
        let ps = [gitops];
        assert!(may_assert_approved_by(
            &ps,
            &ns,
            &wf("r", "orders", "1"),
            argo
        ));
        assert!(!may_assert_approved_by(
            &ps,
            &ns,
            &wf("r", "billing", "1"),
            argo
        ));
        assert!(!may_assert_approved_by(
            &ps,
            &ns,
            &wf("r", "orders", "1"),
            "system:serviceaccount:argocd:other"
        ));
        assert!(!may_assert_approved_by(
            &ps,
            &labels(&[]),
            &wf("r", "orders", "1"),
            argo
        ));
    }
}
