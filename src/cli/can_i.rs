//! `kubectl signalman can-i -f MANIFEST`: which SignalPolicy would allow or deny each signal of
//! a manifest, by the operator's own [`policy::evaluate`]. No AWS call: an AutomationSignal's
//! document is known only to AWS, so its verdict says which documents the policy allows.
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use serde::Deserialize;

use super::KubeOptions;
use crate::api::{AutomationSignal, SignalPolicy, WorkflowSignal};
use crate::policy::{self, Decision, Request, Target};

#[derive(clap::Args)]
pub struct Args {
    /// The manifest to check (`-` for standard input); WorkflowSignals and AutomationSignals,
    /// several documents allowed; other kinds are skipped.
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,
    /// Namespace of signals whose manifest names none (else the kubeconfig context's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// The SignalPolicies to judge by, from a file (YAML, several documents or a List) instead
    /// of the cluster; with --namespace-labels, nothing is read from the cluster.
    #[arg(long)]
    pub policies: Option<PathBuf>,
    /// The namespace's labels (`k=v,...`) instead of the cluster's; `kubernetes.io/metadata.name`
    /// is always the namespace's name, as the API server sets it.
    #[arg(long, value_delimiter = ',')]
    pub namespace_labels: Option<Vec<String>>,
    /// Region of signals without spec.region: the operator's --region (else AWS_REGION).
    #[arg(long, env = "AWS_REGION")]
    pub region: Option<String>,
}

/// One signal of a manifest, as the policies judge it.
#[derive(Clone, Debug, PartialEq)]
pub enum ManifestSignal {
    Workflow(Box<WorkflowSignal>),
    Automation(Box<AutomationSignal>),
}

impl ManifestSignal {
    pub fn kind(&self) -> &'static str {
        match self {
            ManifestSignal::Workflow(_) => "WorkflowSignal",
            ManifestSignal::Automation(_) => "AutomationSignal",
        }
    }

    pub fn name(&self) -> &str {
        match self {
            ManifestSignal::Workflow(s) => s.metadata.name.as_deref(),
            ManifestSignal::Automation(s) => s.metadata.name.as_deref(),
        }
        .unwrap_or_default()
    }

    pub fn namespace(&self) -> Option<&str> {
        match self {
            ManifestSignal::Workflow(s) => s.metadata.namespace.as_deref(),
            ManifestSignal::Automation(s) => s.metadata.namespace.as_deref(),
        }
    }

    fn region(&self) -> Option<&str> {
        match self {
            ManifestSignal::Workflow(s) => s.spec.region(),
            ManifestSignal::Automation(s) => s.spec.region(),
        }
    }

    fn target(&self) -> Target<'_> {
        match self {
            ManifestSignal::Workflow(s) => Target::Swf {
                domain: &s.spec.domain,
                workflow_id: &s.spec.workflow_id,
            },
            ManifestSignal::Automation(s) => Target::Ssm {
                signal_type: s.spec.signal_type,
                document: None,
            },
        }
    }
}

/// The signals of a YAML manifest (several documents, or a `List`), in order.
pub fn signals_of(manifest: &str) -> anyhow::Result<Vec<ManifestSignal>> {
    let mut out = Vec::new();
    for value in documents(manifest)? {
        match value.get("kind").and_then(|k| k.as_str()) {
            Some("WorkflowSignal") => out.push(ManifestSignal::Workflow(Box::new(
                serde_json::from_value(value).context("a WorkflowSignal that does not parse")?,
            ))),
            Some("AutomationSignal") => out.push(ManifestSignal::Automation(Box::new(
                serde_json::from_value(value).context("an AutomationSignal that does not parse")?,
            ))),
            _ => {}
        }
    }
    Ok(out)
}

/// The SignalPolicies of a YAML file (several documents, or a `List`).
pub fn policies_of(text: &str) -> anyhow::Result<Vec<SignalPolicy>> {
    documents(text)?
        .into_iter()
        .filter(|v| v.get("kind").and_then(|k| k.as_str()) == Some("SignalPolicy"))
        .map(|v| serde_json::from_value(v).context("a SignalPolicy that does not parse"))
        .collect()
}

/// Every object of a multi-document YAML text, `List` items flattened, as JSON.
fn documents(text: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut out = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        let value = serde_json::Value::deserialize(doc).context("the YAML does not parse")?;
        let is_list = value
            .get("kind")
            .and_then(|k| k.as_str())
            .is_some_and(|k| k.ends_with("List"));
        match value {
            serde_json::Value::Null => {}
            serde_json::Value::Object(mut list) if is_list => {
                if let Some(serde_json::Value::Array(items)) = list.remove("items") {
                    out.extend(items);
                }
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

/// `k=v` pairs as labels.
pub fn parse_labels(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .with_context(|| format!("{p:?} is not key=value"))
        })
        .collect()
}

/// The verdict on one signal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub allowed: bool,
    /// In words: the policy and the identity, or why not and what policy is needed.
    pub why: String,
}

/// Judges every signal by `policies`, with the labels `labels_of` gives its namespace and
/// `default_region` for signals without one.
pub fn judge(
    signals: &[ManifestSignal],
    policies: &[SignalPolicy],
    default_namespace: &str,
    labels_of: impl Fn(&str) -> BTreeMap<String, String>,
    default_region: Option<&str>,
) -> Vec<Verdict> {
    signals
        .iter()
        .map(|signal| {
            let namespace = signal.namespace().unwrap_or(default_namespace).to_string();
            let verdict = |allowed, why| Verdict {
                kind: signal.kind(),
                namespace: namespace.clone(),
                name: signal.name().to_string(),
                allowed,
                why,
            };
            let Some(region) = signal.region().or(default_region) else {
                return verdict(
                    false,
                    "no region: the signal names none; pass --region (the operator's --region)"
                        .to_string(),
                );
            };
            let request = Request {
                region,
                target: signal.target(),
            };
            match policy::evaluate(policies, &namespace, &labels_of(&namespace), &request) {
                Decision::Allowed(grant) => verdict(true, granted(&grant, None)),
                Decision::NeedsDocument(grant) => {
                    let docs = policies
                        .iter()
                        .find(|p| p.metadata.name.as_deref() == Some(grant.policy.as_str()))
                        .and_then(|p| p.spec.ssm.as_ref())
                        .map(|ssm| ssm.document_names.join(", "))
                        .unwrap_or_default();
                    verdict(true, granted(&grant, Some(&docs)))
                }
                Decision::Denied(denial) => verdict(false, denial.message()),
            }
        })
        .collect()
}

fn granted(grant: &policy::Grant, documents: Option<&str>) -> String {
    let identity = match &grant.role_arn {
        Some(role) => format!("as role {role}"),
        None => "as the operator's own identity".to_string(),
    };
    match documents {
        Some(docs) => format!(
            "allowed by SignalPolicy {} {identity}, if the execution's document matches {docs} (only AWS knows it; the operator checks before sending)",
            grant.policy
        ),
        None => format!("allowed by SignalPolicy {} {identity}", grant.policy),
    }
}

/// Writes the verdicts; whether every signal is allowed.
pub fn print(verdicts: &[Verdict], out: &mut impl Write) -> std::io::Result<bool> {
    for v in verdicts {
        let word = if v.allowed { "allowed" } else { "DENIED" };
        writeln!(
            out,
            "{word}\t{}/{} {}: {}",
            v.namespace, v.kind, v.name, v.why
        )?;
    }
    Ok(verdicts.iter().all(|v| v.allowed))
}

pub async fn run(kube: &KubeOptions, args: Args, out: &mut impl Write) -> anyhow::Result<i32> {
    let manifest = if args.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?
    };
    let signals = signals_of(&manifest)?;
    if signals.is_empty() {
        anyhow::bail!(
            "no WorkflowSignal or AutomationSignal in {}",
            args.file.display()
        );
    }
    let offline = args.policies.is_some() && args.namespace_labels.is_some();
    let client = if offline {
        None
    } else {
        Some(kube.client().await?)
    };
    let policies = match &args.policies {
        Some(path) => policies_of(
            &std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?,
        )?,
        None => super::cluster_policies(client.as_ref().expect("a client")).await?,
    };
    let default_namespace = match (&args.namespace, &client) {
        (Some(ns), _) => ns.clone(),
        (None, Some(c)) => c.default_namespace().to_string(),
        (None, None) => "default".to_string(),
    };
    let mut labels: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for ns in signals
        .iter()
        .map(|s| s.namespace().unwrap_or(&default_namespace).to_string())
    {
        if labels.contains_key(&ns) {
            continue;
        }
        let mut l = match (&args.namespace_labels, &client) {
            (Some(pairs), _) => parse_labels(pairs)?,
            (None, Some(c)) => super::namespace_labels(c, &ns).await?,
            (None, None) => BTreeMap::new(),
        };
        l.insert("kubernetes.io/metadata.name".to_string(), ns.clone());
        labels.insert(ns, l);
    }
    let verdicts = judge(
        &signals,
        &policies,
        &default_namespace,
        |ns| labels.get(ns).cloned().unwrap_or_default(),
        args.region.as_deref(),
    );
    let all_allowed = print(&verdicts, out)?;
    Ok(if all_allowed { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICIES: &str = r#"
apiVersion: signalman.dev/v1alpha1
kind: SignalPolicy
metadata: {name: payments-orders}
spec:
  namespaceSelector: {matchLabels: {team: payments}}
  regions: ["eu-*"]
  swf: {domains: [orders], workflowIds: ["order-*"]}
---
apiVersion: signalman.dev/v1alpha1
kind: SignalPolicy
metadata: {name: payments-approvals}
spec:
  namespaceSelector: {matchLabels: {team: payments}}
  regions: ["*"]
  roleArn: arn:aws:iam::123456789012:role/Approver
  ssm: {signalTypes: [Approve, Reject], documentNames: ["Release-*"]}
"#;

    const MANIFEST: &str = r#"
apiVersion: signalman.dev/v1alpha1
kind: WorkflowSignal
metadata: {name: approve-order-42, namespace: payments}
spec: {domain: orders, workflowId: order-42, signalName: approve, input: 'secret-input'}
---
apiVersion: signalman.dev/v1alpha1
kind: WorkflowSignal
metadata: {name: cancel-invoice-7}
spec: {domain: invoices, workflowId: invoice-7, signalName: cancel}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ignored}
---
apiVersion: signalman.dev/v1alpha1
kind: AutomationSignal
metadata: {name: approve-release-7}
spec: {automationExecutionId: 73c8eef8-f4ee-4a05-820c-e354fEXAMPLE, signalType: Approve}
---
apiVersion: signalman.dev/v1alpha1
kind: AutomationSignal
metadata: {name: resume-release-7}
spec: {automationExecutionId: 73c8eef8-f4ee-4a05-820c-e354fEXAMPLE, signalType: Resume, payload: {StepName: [deploy]}}
"#;

    fn payments(_: &str) -> BTreeMap<String, String> {
        parse_labels(&["team=payments".to_string()]).unwrap()
    }

    #[test]
    fn each_signal_is_judged_by_the_operators_policy_code() {
        let policies = policies_of(POLICIES).unwrap();
        let signals = signals_of(MANIFEST).unwrap();
        assert_eq!(signals.len(), 4, "the ConfigMap is skipped");
        let v = judge(&signals, &policies, "payments", payments, Some("eu-west-1"));
        let allowed: Vec<(&str, bool)> = v.iter().map(|v| (v.name.as_str(), v.allowed)).collect();
        assert_eq!(
            allowed,
            [
                ("approve-order-42", true),
                ("cancel-invoice-7", false),
                ("approve-release-7", true),
                ("resume-release-7", false),
            ]
        );
        assert!(v[0].why.contains("payments-orders"), "{}", v[0].why);
        assert!(v[1].why.contains("spec.domain"), "{}", v[1].why);
        assert!(v[2].why.contains("role/Approver") && v[2].why.contains("Release-*"));
        assert!(v[3].why.contains("spec.signalType"), "{}", v[3].why);
        // A region no policy allows.
        let v = judge(
            &signals[..1],
            &policies,
            "payments",
            payments,
            Some("us-east-1"),
        );
        assert!(
            !v[0].allowed && v[0].why.contains("spec.region"),
            "{}",
            v[0].why
        );
        // No region at all: denied, saying so.
        let v = judge(&signals[..1], &policies, "payments", payments, None);
        assert!(!v[0].allowed && v[0].why.contains("--region"));
    }

    #[test]
    fn a_namespace_no_policy_selects_is_denied_and_the_output_never_holds_the_input() {
        let policies = policies_of(POLICIES).unwrap();
        let signals = signals_of(MANIFEST).unwrap();
        let v = judge(
            &signals,
            &policies,
            "other",
            |_| BTreeMap::new(),
            Some("eu-west-1"),
        );
        // The first names its own namespace (payments), whose labels are none here either.
        assert!(v.iter().all(|v| !v.allowed));
        assert!(
            v[1].why.contains("no valid SignalPolicy selects"),
            "{}",
            v[1].why
        );
        let mut out = Vec::new();
        assert!(!print(&v, &mut out).unwrap());
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("DENIED\tother/WorkflowSignal cancel-invoice-7"),
            "{text}"
        );
        assert!(!text.contains("secret-input"));
    }

    #[test]
    fn lists_and_bad_labels() {
        let list = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: signalman.dev/v1alpha1\n  kind: SignalPolicy\n  metadata: {name: a}\n  spec: {namespaceSelector: {}, regions: ['*'], swf: {domains: ['*'], workflowIds: ['*']}}\n";
        assert_eq!(policies_of(list).unwrap().len(), 1);
        assert!(parse_labels(&["team".to_string()]).is_err());
    }
}
