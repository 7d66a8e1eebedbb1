//! `kubectl signalman status NAME`: everything about one signal in one place, and what to do.
use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams};

use super::{fixes, Kind, KubeOptions};
use crate::api::{AutomationSignal, SignalReceipt, SignalStatus, WorkflowSignal};
use crate::aws::target::SignalTarget;
use crate::controller::receipts::ReceiptKey;
use crate::policy::{self, Decision, Request, Target};

#[derive(clap::Args)]
pub struct Args {
    /// Name of the WorkflowSignal or AutomationSignal.
    pub name: String,
    /// Namespace of the signal (else the kubeconfig context's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// The kind, when both kinds have an object of that name.
    #[arg(long, value_enum)]
    pub kind: Option<Kind>,
    /// Namespace of the operator, where it keeps its receipts (its --receipt-namespace).
    #[arg(long, default_value = "signalman")]
    pub operator_namespace: String,
    /// Region of a signal without spec.region: the operator's --region (else AWS_REGION).
    #[arg(long)]
    pub region: Option<String>,
}

/// A signal of either kind.
pub enum Found {
    Workflow(Box<WorkflowSignal>),
    Automation(Box<AutomationSignal>),
}

impl Found {
    pub fn kind(&self) -> Kind {
        match self {
            Found::Workflow(_) => Kind::WorkflowSignal,
            Found::Automation(_) => Kind::AutomationSignal,
        }
    }

    pub fn status(&self) -> Option<&SignalStatus> {
        match self {
            Found::Workflow(s) => s.status.as_ref(),
            Found::Automation(s) => s.status.as_ref(),
        }
    }

    fn spec_region(&self) -> Option<&str> {
        match self {
            Found::Workflow(s) => s.spec.region(),
            Found::Automation(s) => s.spec.region(),
        }
    }
}

/// The signal named `name` in `namespace`, of `kind` or of whichever kind has it.
pub async fn find(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    kind: Option<Kind>,
) -> anyhow::Result<Found> {
    let workflow = if kind.is_none_or(|k| k == Kind::WorkflowSignal) {
        Api::<WorkflowSignal>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await
            .context("reading WorkflowSignals")?
    } else {
        None
    };
    let automation = if kind.is_none_or(|k| k == Kind::AutomationSignal) {
        Api::<AutomationSignal>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await
            .context("reading AutomationSignals")?
    } else {
        None
    };
    match (workflow, automation) {
        (Some(_), Some(_)) => anyhow::bail!(
            "both a WorkflowSignal and an AutomationSignal are named {name} in {namespace}: pass --kind"
        ),
        (Some(w), None) => Ok(Found::Workflow(Box::new(w))),
        (None, Some(a)) => Ok(Found::Automation(Box::new(a))),
        (None, None) => anyhow::bail!("no signal named {name} in namespace {namespace}"),
    }
}

/// Everything `status` prints, gathered; [`render`] writes it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    /// What the signal is sent to, in words (never the input or the payload).
    pub target: String,
    pub status: Option<SignalStatus>,
    /// The SignalPolicies' decision now, in words.
    pub policy: String,
    /// The denial's message when the policies deny it now.
    pub denial: Option<String>,
    /// The receipt, in words.
    pub receipt: String,
    /// One line per Event, oldest first.
    pub events: Vec<String>,
    /// What AWS shows for the target now, one line each.
    pub aws: Vec<String>,
}

/// The reason of the status's Ready condition (all three conditions share it).
pub fn reason_of(status: &SignalStatus) -> Option<&str> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == crate::delivery::READY)
        .map(|c| c.reason.as_str())
}

/// The report as text.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let mut line = |k: &str, v: &str| {
        s.push_str(&format!("{k:<15}{v}\n"));
    };
    line("Signal:", &format!("{}/{} {}", r.namespace, r.kind, r.name));
    line("Target:", &r.target);
    let status = r.status.clone().unwrap_or_default();
    let phase = status
        .phase
        .map(|p| format!("{p:?}"))
        .unwrap_or_else(|| "none (the operator has not written a status yet)".to_string());
    line("Phase:", &phase);
    let reason = r.status.as_ref().and_then(reason_of);
    line("Reason:", reason.unwrap_or("-"));
    line("Message:", status.message.as_deref().unwrap_or("-"));
    let mut attempts = format!("{}", status.attempts);
    if status.throttled_retries + status.transient_retries > 0 {
        attempts.push_str(&format!(
            " (and {} throttled, {} transient retries that spent none)",
            status.throttled_retries, status.transient_retries
        ));
    }
    line("Attempts:", &attempts);
    let time = |t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        t.as_ref().map(|t| t.0.to_string())
    };
    if let Some(t) = time(&status.last_attempt_time) {
        line("Last attempt:", &t);
    }
    if let Some(t) = time(&status.next_attempt_time) {
        line("Next attempt:", &t);
    }
    if let Some(t) = time(&status.retry_request_honoured) {
        line("Retry request:", &format!("{t} (honoured)"));
    }
    if let Some(t) = time(&status.sent_time) {
        line("Sent:", &t);
    }
    if let Some(code) = &status.last_error_code {
        line("Last error:", code);
    }
    line(
        "Requested by:",
        status.requested_by.as_deref().unwrap_or("-"),
    );
    line("Policy now:", &r.policy);
    line("Receipt:", &r.receipt);
    if r.aws.is_empty() {
        line("AWS now:", "-");
    }
    for (i, a) in r.aws.iter().enumerate() {
        line(if i == 0 { "AWS now:" } else { "" }, a);
    }
    if r.events.is_empty() {
        line("Events:", "none");
    }
    for (i, e) in r.events.iter().enumerate() {
        line(if i == 0 { "Events:" } else { "" }, e);
    }
    if let Some(reason) = reason {
        let mut fix = fixes::fix_for(reason)
            .unwrap_or("a reason this plugin does not know: read the message and the Events")
            .to_string();
        if let Some(denial) = r
            .denial
            .as_ref()
            .filter(|_| reason == policy::POLICY_DENIED)
        {
            fix.push_str(&format!(". Now: {denial}"));
        }
        line("Fix:", &fix);
    }
    s
}

pub async fn run(kube: &KubeOptions, args: Args, out: &mut impl Write) -> anyhow::Result<i32> {
    let client = kube.client().await?;
    let namespace = super::namespace_or_default(&client, args.namespace.clone());
    let found = find(&client, &namespace, &args.name, args.kind).await?;
    let region = super::effective_region(found.spec_region(), args.region.as_deref()).await;
    let mut report = Report {
        kind: found.kind().as_str(),
        namespace: namespace.clone(),
        name: args.name.clone(),
        status: found.status().cloned(),
        ..Default::default()
    };
    // AWS first: an AutomationSignal's policy decision needs the execution's document.
    let document = match &found {
        Found::Workflow(w) => {
            report.target = format!(
                "SWF domain {} workflow {} run {}, signal {}, region {}",
                w.spec.domain,
                w.spec.workflow_id,
                w.status
                    .as_ref()
                    .and_then(|s| s.run_id.as_deref())
                    .or(w.spec.run_id())
                    .unwrap_or("(the current open run)"),
                w.spec.signal_name,
                region.as_deref().unwrap_or("unknown")
            );
            report.aws = swf_now(w, region.as_deref()).await;
            None
        }
        Found::Automation(a) => {
            report.target = format!(
                "SSM Automation execution {}, {}, region {}",
                a.spec.automation_execution_id,
                a.spec.signal_type,
                region.as_deref().unwrap_or("unknown")
            );
            let (lines, document) = ssm_now(a, region.as_deref()).await;
            report.aws = lines;
            document
        }
    };
    (report.policy, report.denial) = decision_now(
        &client,
        &found,
        &namespace,
        region.as_deref(),
        document.as_deref(),
    )
    .await;
    report.receipt = receipt(
        &client,
        &found,
        &namespace,
        &args.name,
        &args.operator_namespace,
    )
    .await;
    report.events = events(&client, &namespace, &args.name, found.kind().as_str()).await?;
    out.write_all(render(&report).as_bytes())?;
    Ok(0)
}

/// The policies' decision now, in words, and the denial's message when denied.
async fn decision_now(
    client: &kube::Client,
    found: &Found,
    namespace: &str,
    region: Option<&str>,
    document: Option<&str>,
) -> (String, Option<String>) {
    let Some(region) = region else {
        return (
            "cannot tell: no region (pass --region, the operator's --region)".to_string(),
            None,
        );
    };
    let (policies, labels) = match (
        super::cluster_policies(client).await,
        super::namespace_labels(client, namespace).await,
    ) {
        (Ok(p), Ok(l)) => (p, l),
        (Err(e), _) | (_, Err(e)) => return (format!("cannot tell: {e:#}"), None),
    };
    let target = match found {
        Found::Workflow(w) => Target::Swf {
            domain: &w.spec.domain,
            workflow_id: &w.spec.workflow_id,
        },
        Found::Automation(a) => Target::Ssm {
            signal_type: a.spec.signal_type,
            document,
        },
    };
    describe(&policy::evaluate(
        &policies,
        namespace,
        &labels,
        &Request { region, target },
    ))
}

/// A decision in words, and the denial's message when denied.
pub fn describe(decision: &Decision) -> (String, Option<String>) {
    let identity = |role: &Option<String>| match role {
        Some(r) => format!("as role {r}"),
        None => "as the operator's own identity".to_string(),
    };
    match decision {
        Decision::Allowed(g) => (
            format!("allowed by SignalPolicy {} {}", g.policy, identity(&g.role_arn)),
            None,
        ),
        Decision::NeedsDocument(g) => (
            format!(
                "allowed by SignalPolicy {} {} if the execution's document matches it (the execution could not be read)",
                g.policy,
                identity(&g.role_arn)
            ),
            None,
        ),
        Decision::Denied(d) => (format!("DENIED: {}", d.message()), Some(d.message())),
    }
}

/// The signal's receipt in the operator's namespace, in words.
async fn receipt(
    client: &kube::Client,
    found: &Found,
    namespace: &str,
    name: &str,
    operator_namespace: &str,
) -> String {
    let identity = match found {
        Found::Workflow(w) => crate::aws::swf::Swf::identity(w),
        Found::Automation(a) => crate::aws::ssm::Ssm::identity(a),
    };
    let key = ReceiptKey::new(namespace, found.kind().as_str(), name, &identity);
    let api = Api::<SignalReceipt>::namespaced(client.clone(), operator_namespace);
    let object = key.object_name();
    match api.get_opt(&object).await {
        Ok(Some(r))
            if r.spec.signal_hash == key.hash
                && r.spec.signal_namespace == key.namespace
                && r.spec.signal_name == key.name =>
        {
            let at = |t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
                t.as_ref()
                    .map_or("-".to_string(), |t| t.0.to_string())
            };
            format!(
                "SignalReceipt {operator_namespace}/{object}: delivered {}, attempted {}, target {}, expires {}",
                at(&r.spec.delivered_at),
                at(&r.spec.attempted_at),
                r.spec.target.as_deref().unwrap_or("-"),
                r.spec.expires_at.0
            )
        }
        Ok(_) => format!(
            "none in {operator_namespace} (no attempt of this very signal recorded; --operator-namespace names where the operator keeps them)"
        ),
        Err(e) => format!("cannot read receipts in {operator_namespace}: {e}"),
    }
}

/// The Events recorded on the signal, oldest first, one line each.
async fn events(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    kind: &str,
) -> anyhow::Result<Vec<String>> {
    let api = Api::<Event>::namespaced(client.clone(), namespace);
    let list = api
        .list(&ListParams::default().fields(&format!(
            "involvedObject.name={name},involvedObject.kind={kind}"
        )))
        .await
        .context("listing Events")?;
    let mut items: Vec<(String, String)> = list
        .items
        .into_iter()
        .map(|e| {
            let when = e
                .last_timestamp
                .as_ref()
                .or(e.first_timestamp.as_ref())
                .map(|t| t.0.to_string())
                .or_else(|| e.event_time.as_ref().map(|t| t.0.to_string()))
                .unwrap_or_default();
            let count = e
                .count
                .filter(|c| *c > 1)
                .map(|c| format!(" (x{c})"))
                .unwrap_or_default();
            let line = format!(
                "{when} {} {}{count}: {}",
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default()
            );
            (when, line)
        })
        .collect();
    items.sort();
    Ok(items.into_iter().map(|(_, l)| l).collect())
}

/// What the SWF run's history shows now: its signals of this name, counted (never an input).
async fn swf_now(w: &WorkflowSignal, region: Option<&str>) -> Vec<String> {
    let config = super::aws_config(region).await;
    let client = aws_sdk_swf::Client::new(&config);
    let pinned = w
        .status
        .as_ref()
        .and_then(|s| s.run_id.clone())
        .or(w.spec.run_id().map(str::to_string));
    let (run_id, which) = match pinned {
        Some(r) => (r, "run"),
        None => {
            match crate::aws::swf::resolve_open_run(&client, &w.spec.domain, &w.spec.workflow_id)
                .await
            {
                Ok(run) => (run.run_id, "current open run"),
                Err(f) => return vec![format!("no open run found: {}", f.message)],
            }
        }
    };
    let run = crate::aws::swf::SwfSignal {
        domain: &w.spec.domain,
        workflow_id: &w.spec.workflow_id,
        run_id: &run_id,
        signal_name: &w.spec.signal_name,
        input: None,
    };
    match crate::aws::swf::signals_of_run(&client, run).await {
        Ok(events) => {
            let ours: Vec<&crate::aws::swf::SignaledEvent> = events
                .iter()
                .filter(|e| e.signal_name == w.spec.signal_name && !e.external)
                .collect();
            let mut lines = vec![format!(
                "{which} {run_id}: {} WorkflowExecutionSignaled event(s) named {} ({} signal(s) in all)",
                ours.len(),
                w.spec.signal_name,
                events.len()
            )];
            lines.extend(ours.iter().map(|e| format!("  signalled at {}", e.at)));
            lines
        }
        Err(f) => vec![format!(
            "{which} {run_id}: history not readable: {}",
            f.message
        )],
    }
}

/// What the Automation execution shows now (its status and current step), and its document.
async fn ssm_now(a: &AutomationSignal, region: Option<&str>) -> (Vec<String>, Option<String>) {
    let config = super::aws_config(region).await;
    let client = aws_sdk_ssm::Client::new(&config);
    match crate::aws::ssm::read_execution(&client, &a.spec.automation_execution_id).await {
        Ok(view) => {
            let current = view
                .steps
                .iter()
                .rev()
                .find(|s| {
                    matches!(s.status.as_str(), "Waiting" | "InProgress" | "Pending")
                        && !s.step_execution_id.is_empty()
                })
                .map_or("none waiting or running".to_string(), |s| {
                    format!("{} ({}, {})", s.name, s.action, s.status)
                });
            let approvals: BTreeMap<&str, usize> = view
                .steps
                .iter()
                .filter(|s| !s.approver_decisions.is_empty())
                .map(|s| (s.name.as_str(), s.approver_decisions.len()))
                .collect();
            let mut lines = vec![
                format!(
                    "execution {} of document {}: status {}",
                    a.spec.automation_execution_id,
                    view.document.as_deref().unwrap_or("?"),
                    view.status
                ),
                format!("current step: {current}"),
            ];
            for (step, n) in approvals {
                lines.push(format!("step {step}: {n} approver decision(s) recorded"));
            }
            (lines, view.document)
        }
        Err(f) => (vec![format!("execution not readable: {}", f.message)], None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Phase;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    fn status(phase: Phase, reason: &str) -> SignalStatus {
        let condition = |type_: &str| Condition {
            type_: type_.into(),
            status: "False".into(),
            reason: reason.into(),
            message: "m".into(),
            observed_generation: Some(1),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ),
        };
        SignalStatus {
            phase: Some(phase),
            attempts: 2,
            message: Some("why it stopped".into()),
            conditions: vec![
                condition("Ready"),
                condition("Reconciling"),
                condition("Stalled"),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn the_report_says_the_reason_and_its_fix() {
        let r = Report {
            kind: "WorkflowSignal",
            namespace: "payments".into(),
            name: "approve-order-42".into(),
            target: "SWF domain orders".into(),
            status: Some(status(Phase::Failed, "PolicyDenied")),
            policy: "DENIED: ...".into(),
            denial: Some("namespace payments: spec.domain \"orders\" ...".into()),
            receipt: "none".into(),
            events: vec!["t Warning Failed: PolicyDenied".into()],
            aws: vec!["run r: 0 WorkflowExecutionSignaled event(s)".into()],
        };
        let text = render(&r);
        for want in [
            "Phase:         Failed",
            "Reason:        PolicyDenied",
            "Attempts:      2",
            "Fix:           no SignalPolicy allows this signal",
            "Now: namespace payments: spec.domain",
            "Events:        t Warning Failed",
        ] {
            assert!(text.contains(want), "{want:?} in\n{text}");
        }
        let unseen = Report { status: None, ..r };
        let text = render(&unseen);
        assert!(
            text.contains("the operator has not written a status yet"),
            "{text}"
        );
        assert!(!text.contains("Fix:"));
    }
}
