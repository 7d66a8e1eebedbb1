//! `kubectl signalman pending`: what waits for a signal this namespace may send, printed as
//! manifests to apply. Read-only: DescribeAutomationExecutions, DescribeAutomationStepExecutions,
//! ListOpenWorkflowExecutions (and GetCallerIdentity for the operator's own identity).
use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Context as _;
use aws_sdk_ssm::types::{
    AutomationExecutionFilter, AutomationExecutionFilterKey, StepExecutionFilter,
    StepExecutionFilterKey,
};
use aws_sdk_swf::types::ExecutionTimeFilter;

use super::KubeOptions;
use crate::api::{
    AutomationSignal, AutomationSignalSpec, SignalPolicy, SignalType, WorkflowSignal,
    WorkflowSignalSpec,
};
use crate::aws::principal::{principal_of, same_principal};
use crate::aws::sdk_error::failure_from_sdk;
use crate::policy::{self, Decision, Request, Target};

#[derive(clap::Args)]
pub struct Args {
    /// The namespace that would send the signals (else the kubeconfig context's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// The region to look in (else each region the namespace's policies name, a pattern
    /// standing for AWS_REGION's).
    #[arg(long)]
    pub region: Option<String>,
    /// The principal the operator signs as when the allowing policy names no role (else the
    /// caller identity of these credentials: run with the operator's, or pass this).
    #[arg(long)]
    pub operator_principal: Option<String>,
    /// Look only in these SWF domains (else every registered domain the policies allow).
    #[arg(long, value_delimiter = ',')]
    pub domain: Vec<String>,
    /// Signal name of the WorkflowSignal manifests (AWS does not say which signals a workflow
    /// waits for).
    #[arg(long, default_value = "approve")]
    pub signal_name: String,
}

/// The regions to look in: `flag`, else each region named by a policy that selects the
/// namespace, with a pattern (`*`, `?`) standing for `default` (the SDK's region).
pub fn regions_to_search(
    selecting: &[&SignalPolicy],
    flag: Option<&str>,
    default: Option<&str>,
) -> Vec<String> {
    if let Some(r) = flag {
        return vec![r.to_string()];
    }
    let mut out: Vec<String> = Vec::new();
    for pattern in selecting.iter().flat_map(|p| p.spec.regions.iter()) {
        let region = if pattern.contains(['*', '?']) {
            match default {
                Some(d) if policy::glob_matches(pattern, d) => d.to_string(),
                _ => continue,
            }
        } else {
            pattern.clone()
        };
        if !out.contains(&region) {
            out.push(region);
        }
    }
    out
}

/// The entries of an aws:approve step's `Approvers` input as AWS shows it (a JSON list in a
/// string), or a comma-separated list.
pub fn parse_approvers(input: &str) -> Vec<String> {
    if let Ok(list) = serde_json::from_str::<Vec<String>>(input) {
        return list;
    }
    input
        .trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Whether an Approvers list names `principal` (an IAM user or role ARN): by ARN, a role's
/// session being its role, or by an IAM user's name.
pub fn lists_approver(approvers: &[String], principal: &str) -> bool {
    let user_name = principal_of(principal)
        .split_once(":user/")
        .map(|(_, path)| path.rsplit('/').next().unwrap_or(path).to_string());
    approvers.iter().any(|entry| {
        let entry = entry.trim();
        if entry.starts_with("arn:") {
            same_principal(entry, principal)
        } else {
            user_name.as_deref() == Some(entry)
        }
    })
}

/// Whether the step's `ApproverDecisions` outputs already hold a decision of `principal` (an
/// approval that needs several approvers waits for the others then).
pub fn has_decided(decisions: &[String], principal: &str) -> bool {
    decisions
        .iter()
        .filter_map(|entry| crate::aws::ssm::read_decisions(entry))
        .flatten()
        .any(|d| d.approver == principal || same_principal(&d.approver, principal))
}

/// A name for an object made from `parts`: lower case letters, digits and `-`, at most 63.
fn object_name(parts: &[&str]) -> String {
    let mut name = String::new();
    for c in parts.join("-").chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            name.push(c);
        } else if !name.ends_with('-') {
            name.push('-');
        }
    }
    name.truncate(63);
    name.trim_matches('-').to_string()
}

/// An Approve of `execution_id` from `namespace`, in `region`.
pub fn approval_manifest(namespace: &str, execution_id: &str, region: &str) -> AutomationSignal {
    let short: String = execution_id.chars().take(8).collect();
    let mut signal = AutomationSignal::new(
        &object_name(&["approve", &short]),
        AutomationSignalSpec {
            automation_execution_id: execution_id.to_string(),
            signal_type: SignalType::Approve,
            payload: None,
            region: Some(region.to_string()),
            retry: None,
            not_after: None,
            allow_duplicate: None,
            ttl_seconds_after_finished: None,
        },
    );
    signal.metadata.namespace = Some(namespace.to_string());
    signal
}

/// A WorkflowSignal `signal_name` to the open run `run_id`, from `namespace`, in `region`.
pub fn workflow_manifest(
    namespace: &str,
    domain: &str,
    workflow_id: &str,
    run_id: &str,
    signal_name: &str,
    region: &str,
) -> WorkflowSignal {
    let mut signal = WorkflowSignal::new(
        &object_name(&[signal_name, workflow_id]),
        WorkflowSignalSpec {
            domain: domain.to_string(),
            workflow_id: workflow_id.to_string(),
            run_id: Some(run_id.to_string()),
            signal_name: signal_name.to_string(),
            input: None,
            region: Some(region.to_string()),
            retry: None,
            not_after: None,
            allow_duplicate: None,
            ttl_seconds_after_finished: None,
        },
    );
    signal.metadata.namespace = Some(namespace.to_string());
    signal
}

/// One manifest to print, with a comment saying what waits.
struct Found {
    comment: String,
    yaml: String,
}

pub async fn run(kube: &KubeOptions, args: Args, out: &mut impl Write) -> anyhow::Result<i32> {
    let client = kube.client().await?;
    let namespace = super::namespace_or_default(&client, args.namespace.clone());
    let policies = super::cluster_policies(&client).await?;
    let labels = super::namespace_labels(&client, &namespace).await?;
    let selecting: Vec<&SignalPolicy> = policies
        .iter()
        .filter(|p| policy::selects(p, &labels) == Some(true))
        .collect();
    if selecting.is_empty() {
        writeln!(
            out,
            "# no SignalPolicy selects namespace {namespace}: it may send nothing"
        )?;
        return Ok(0);
    }
    let default_region = super::aws_config(None)
        .await
        .region()
        .map(|r| r.to_string());
    let regions = regions_to_search(
        &selecting,
        args.region.as_deref(),
        default_region.as_deref(),
    );
    if regions.is_empty() {
        anyhow::bail!("no region to look in: pass --region (or set AWS_REGION)");
    }
    let mut found = Vec::new();
    for region in &regions {
        let config = super::aws_config(Some(region)).await;
        if selecting.iter().any(|p| p.spec.ssm.is_some()) {
            let mut principal = args.operator_principal.clone();
            found.extend(
                approvals(
                    &config,
                    &policies,
                    &namespace,
                    &labels,
                    region,
                    &mut principal,
                )
                .await?,
            );
        }
        if selecting.iter().any(|p| p.spec.swf.is_some()) {
            found.extend(
                open_workflows(
                    &config, &selecting, &policies, &namespace, &labels, region, &args,
                )
                .await?,
            );
        }
    }
    if found.is_empty() {
        writeln!(
            out,
            "# nothing waits for a signal namespace {namespace} may send (regions: {})",
            regions.join(", ")
        )?;
    }
    for f in found {
        write!(out, "---\n# {}\n{}", f.comment, f.yaml)?;
    }
    Ok(0)
}

/// Executions waiting at an aws:approve step that the namespace's identity is listed to approve.
async fn approvals(
    config: &aws_config::SdkConfig,
    policies: &[SignalPolicy],
    namespace: &str,
    labels: &BTreeMap<String, String>,
    region: &str,
    operator_principal: &mut Option<String>,
) -> anyhow::Result<Vec<Found>> {
    let ssm = aws_sdk_ssm::Client::new(config);
    let waiting = AutomationExecutionFilter::builder()
        .key(AutomationExecutionFilterKey::ExecutionStatus)
        .values("Waiting")
        .build()
        .context("a filter")?;
    let mut executions = Vec::new();
    let mut token = None;
    loop {
        let page = ssm
            .describe_automation_executions()
            .filters(waiting.clone())
            .max_results(50)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "DescribeAutomationExecutions in {region}: {}",
                    failure_from_sdk(&e).message
                )
            })?;
        executions.extend(page.automation_execution_metadata_list().iter().cloned());
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => break,
        }
    }
    let mut found = Vec::new();
    for execution in executions {
        let (Some(id), Some(document)) = (
            execution.automation_execution_id(),
            execution.document_name(),
        ) else {
            continue;
        };
        let request = Request {
            region,
            target: Target::Ssm {
                signal_type: SignalType::Approve,
                document: Some(document),
            },
        };
        let Decision::Allowed(grant) = policy::evaluate(policies, namespace, labels, &request)
        else {
            continue;
        };
        let principal = match &grant.role_arn {
            Some(role) => role.clone(),
            None => match operator_principal {
                Some(p) => p.clone(),
                None => {
                    let p = caller_principal(config).await?;
                    *operator_principal = Some(p.clone());
                    p
                }
            },
        };
        let steps = ssm
            .describe_automation_step_executions()
            .automation_execution_id(id)
            .filters(
                StepExecutionFilter::builder()
                    .key(StepExecutionFilterKey::StepExecutionStatus)
                    .values("Waiting")
                    .build()
                    .context("a filter")?,
            )
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "DescribeAutomationStepExecutions of {id}: {}",
                    failure_from_sdk(&e).message
                )
            })?;
        for step in steps.step_executions() {
            if step.action() != Some("aws:approve") {
                continue;
            }
            let approvers = step
                .inputs()
                .and_then(|i| i.get("Approvers"))
                .map(String::as_str)
                .map(parse_approvers)
                .unwrap_or_default();
            let decisions: Vec<String> = step
                .outputs()
                .and_then(|o| o.get("ApproverDecisions"))
                .cloned()
                .unwrap_or_default();
            if !lists_approver(&approvers, &principal) || has_decided(&decisions, &principal) {
                continue;
            }
            let manifest = approval_manifest(namespace, id, region);
            found.push(Found {
                comment: format!(
                    "execution {id} (document {document}) waits at step {} for an approval {principal} may give (SignalPolicy {})",
                    step.step_name().unwrap_or("?"),
                    grant.policy
                ),
                yaml: serde_norway::to_string(&manifest)?,
            });
        }
    }
    Ok(found)
}

/// The principal these credentials sign as (STS GetCallerIdentity), a role session as its role.
async fn caller_principal(config: &aws_config::SdkConfig) -> anyhow::Result<String> {
    let sts = aws_sdk_sts::Client::new(config);
    let who = sts.get_caller_identity().send().await.map_err(|e| {
        anyhow::anyhow!(
            "GetCallerIdentity (pass --operator-principal instead): {}",
            failure_from_sdk(&e).message
        )
    })?;
    who.arn()
        .map(principal_of)
        .context("STS named no ARN; pass --operator-principal")
}

/// Open executions of the domains the namespace may signal.
async fn open_workflows(
    config: &aws_config::SdkConfig,
    selecting: &[&SignalPolicy],
    policies: &[SignalPolicy],
    namespace: &str,
    labels: &BTreeMap<String, String>,
    region: &str,
    args: &Args,
) -> anyhow::Result<Vec<Found>> {
    let swf = aws_sdk_swf::Client::new(config);
    let domains = if args.domain.is_empty() {
        registered_domains(&swf, region).await?
    } else {
        args.domain.clone()
    };
    let patterns: Vec<&String> = selecting
        .iter()
        .filter_map(|p| p.spec.swf.as_ref())
        .flat_map(|s| s.domains.iter())
        .collect();
    let oldest = ExecutionTimeFilter::builder()
        .oldest_date(aws_smithy_types::DateTime::from_secs(
            k8s_openapi::jiff::Timestamp::now().as_second() - 366 * 24 * 3600,
        ))
        .build()
        .context("a filter")?;
    let mut found = Vec::new();
    for domain in domains
        .iter()
        .filter(|d| patterns.iter().any(|p| policy::glob_matches(p, d)))
    {
        let mut token = None;
        loop {
            let page = swf
                .list_open_workflow_executions()
                .domain(domain)
                .start_time_filter(oldest.clone())
                .maximum_page_size(1000)
                .set_next_page_token(token.take())
                .send()
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "ListOpenWorkflowExecutions of {domain}: {}",
                        failure_from_sdk(&e).message
                    )
                })?;
            for info in page.execution_infos() {
                let Some(execution) = info.execution() else {
                    continue;
                };
                let request = Request {
                    region,
                    target: Target::Swf {
                        domain,
                        workflow_id: execution.workflow_id(),
                    },
                };
                let Decision::Allowed(grant) =
                    policy::evaluate(policies, namespace, labels, &request)
                else {
                    continue;
                };
                let manifest = workflow_manifest(
                    namespace,
                    domain,
                    execution.workflow_id(),
                    execution.run_id(),
                    &args.signal_name,
                    region,
                );
                found.push(Found {
                    comment: format!(
                        "open run {} of workflow {} in domain {domain} (SignalPolicy {}); set signalName and input to what the workflow expects",
                        execution.run_id(),
                        execution.workflow_id(),
                        grant.policy
                    ),
                    yaml: serde_norway::to_string(&manifest)?,
                });
            }
            match page.next_page_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
    }
    Ok(found)
}

/// Every registered SWF domain of the region.
async fn registered_domains(
    swf: &aws_sdk_swf::Client,
    region: &str,
) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = swf
            .list_domains()
            .registration_status(aws_sdk_swf::types::RegistrationStatus::Registered)
            .set_next_page_token(token.take())
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!("ListDomains in {region}: {}", failure_from_sdk(&e).message)
            })?;
        out.extend(page.domain_infos().iter().map(|d| d.name().to_string()));
        match page.next_page_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => return Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(regions: &[&str]) -> SignalPolicy {
        let mut p: SignalPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "signalman.dev/v1alpha1", "kind": "SignalPolicy",
            "metadata": {"name": "p"},
            "spec": {"namespaceSelector": {}, "regions": regions,
                     "swf": {"domains": ["*"], "workflowIds": ["*"]}},
        }))
        .unwrap();
        p.metadata.name = Some("p".into());
        p
    }

    #[test]
    fn regions_come_from_the_flag_or_the_policies() {
        let a = policy(&["eu-west-1", "eu-*"]);
        let b = policy(&["eu-west-1", "us-east-1", "ap-*"]);
        let both = [&a, &b];
        assert_eq!(
            regions_to_search(&both, Some("sa-east-1"), None),
            ["sa-east-1"]
        );
        assert_eq!(
            regions_to_search(&both, None, Some("eu-central-1")),
            ["eu-west-1", "eu-central-1", "us-east-1"]
        );
        assert_eq!(
            regions_to_search(&both, None, None),
            ["eu-west-1", "us-east-1"]
        );
    }

    #[test]
    fn approvers_name_a_principal_by_arn_role_or_user_name() {
        let listed = parse_approvers(
            r#"["release-manager","arn:aws:iam::123456789012:role/teams/Approver"]"#,
        );
        assert_eq!(listed.len(), 2);
        assert!(lists_approver(
            &listed,
            "arn:aws:iam::123456789012:user/release-manager"
        ));
        assert!(lists_approver(
            &listed,
            "arn:aws:iam::123456789012:role/Approver"
        ));
        assert!(lists_approver(
            &listed,
            "arn:aws:sts::123456789012:assumed-role/Approver/session-1"
        ));
        assert!(!lists_approver(
            &listed,
            "arn:aws:iam::123456789012:user/someone"
        ));
        assert!(!lists_approver(
            &listed,
            "arn:aws:iam::210987654321:role/Approver"
        ));
        assert_eq!(parse_approvers("a, b"), ["a", "b"]);
    }

    #[test]
    fn an_approver_who_has_decided_is_not_asked_again() {
        let decided = vec![
            r#"{"Approver":"arn:aws:sts::123456789012:assumed-role/Approver/s-1","Decision":"Approve"}"#
                .to_string(),
        ];
        assert!(has_decided(
            &decided,
            "arn:aws:iam::123456789012:role/Approver"
        ));
        assert!(!has_decided(
            &decided,
            "arn:aws:iam::123456789012:user/alice"
        ));
        assert!(!has_decided(&[], "arn:aws:iam::123456789012:role/Approver"));
        assert!(!has_decided(&["not json".to_string()], "x"));
    }

    #[test]
    fn manifests_are_valid_signals_of_the_namespace() {
        let a = approval_manifest(
            "payments",
            "73c8eef8-f4ee-4a05-820c-e354fEXAMPLE",
            "eu-west-1",
        );
        assert_eq!(a.metadata.name.as_deref(), Some("approve-73c8eef8"));
        assert_eq!(a.metadata.namespace.as_deref(), Some("payments"));
        a.validate().unwrap();
        let yaml = serde_norway::to_string(&a).unwrap();
        assert!(
            yaml.contains("kind: AutomationSignal") && !yaml.contains("status"),
            "{yaml}"
        );
        let w = workflow_manifest(
            "payments",
            "orders",
            "Order_42",
            "run-1",
            "approve",
            "eu-west-1",
        );
        assert_eq!(w.metadata.name.as_deref(), Some("approve-order-42"));
        w.validate().unwrap();
    }
}
