//! AWS-side set-up (SWF executions in moto, SSM Automation executions in the emulator) and
//! the signals the scenarios create.
use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use aws_sdk_swf::types::{ChildPolicy, TaskList, WorkflowType};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, PostParams};
use kube::Resource;
use serde::de::DeserializeOwned;
use serde::Serialize;
use signalman::api::{
    AutomationSignal, AutomationSignalSpec, SignalType, WorkflowSignal, WorkflowSignalSpec,
};
use signalman_testenv::{ssm_client_at, Env, OPERATOR_ACCESS_KEY};

/// The access key a person uses to start Automation executions (not the operator's).
pub const PERSON: &str = "release-manager";

/// Open SWF executions of one domain: (workflowId, runId).
pub struct SwfFixture {
    pub domain: String,
    pub runs: Vec<(String, String)>,
}

impl SwfFixture {
    /// Resets moto and starts `executions` open executions in a new domain.
    ///
    /// moto schedules a new DecisionTask for every signal unless one is already started *and*
    /// one scheduled, and every call walks every decision task of every execution (its timeout
    /// check): without a decider, a burst of n signals costs moto O(n²). So each execution's
    /// first decision task is started here (one PollForDecisionTask each), which caps it at two
    /// decision tasks whatever the number of signals, as a live decider would. The timeouts are
    /// a day, so nothing times out during a run.
    pub async fn start(env: &Env, domain: &str, executions: usize) -> anyhow::Result<SwfFixture> {
        crate::harness::reset_moto(env).await?;
        let client = env.swf_client(false);
        client
            .register_domain()
            .name(domain)
            .workflow_execution_retention_period_in_days("1")
            .send()
            .await
            .context("RegisterDomain")?;
        client
            .register_workflow_type()
            .domain(domain)
            .name("change")
            .version("1")
            .default_task_list(TaskList::builder().name("main").build()?)
            .default_child_policy(ChildPolicy::Terminate)
            .default_execution_start_to_close_timeout("86400")
            .default_task_start_to_close_timeout("86400")
            .send()
            .await
            .context("RegisterWorkflowType")?;
        let mut runs = Vec::with_capacity(executions);
        for i in 0..executions {
            let workflow_id = format!("order-{i}");
            let out = client
                .start_workflow_execution()
                .domain(domain)
                .workflow_id(&workflow_id)
                .workflow_type(
                    WorkflowType::builder()
                        .name("change")
                        .version("1")
                        .build()?,
                )
                .send()
                .await
                .context("StartWorkflowExecution")?;
            runs.push((workflow_id, out.run_id().unwrap_or_default().to_string()));
        }
        for _ in 0..executions {
            client
                .poll_for_decision_task()
                .domain(domain)
                .task_list(TaskList::builder().name("main").build()?)
                .identity("bench-decider")
                .send()
                .await
                .context("PollForDecisionTask")?;
        }
        Ok(SwfFixture {
            domain: domain.to_string(),
            runs,
        })
    }

    /// The execution signal `i` goes to (round robin).
    pub fn run(&self, i: usize) -> &(String, String) {
        &self.runs[i % self.runs.len()]
    }

    /// WorkflowSignal number `i`: signal `approve` with a small JSON input to execution
    /// `i mod executions`; with `pin_run` its runId is in the spec (no run lookup).
    pub fn signal(&self, prefix: &str, i: usize, pin_run: bool) -> WorkflowSignal {
        let (workflow_id, run_id) = self.run(i);
        // Through JSON, as a user's manifest would be: optional fields the API grows later
        // stay absent without this fixture naming each one.
        let spec: WorkflowSignalSpec = serde_json::from_value(serde_json::json!({
            "domain": self.domain,
            "workflowId": workflow_id,
            "runId": pin_run.then(|| run_id.clone()),
            "signalName": "approve",
            "input": input(i),
        }))
        .expect("a valid WorkflowSignal spec");
        WorkflowSignal::new(&format!("{prefix}-{i}"), spec)
    }
}

/// The input of signal `i` (the aws CLI sends the same).
pub fn input(i: usize) -> String {
    format!("{{\"approved\":true,\"n\":{i}}}")
}

/// Starts `n` executions of the built-in `Signalman-Approve` document (an aws:approve step
/// whose approver is the operator's principal) through `endpoint`; returns their ids.
pub async fn automation_executions(endpoint: &str, n: usize) -> anyhow::Result<Vec<String>> {
    let ssm = ssm_client_at(endpoint, PERSON);
    futures::stream::iter(0..n)
        .map(|_| {
            let ssm = ssm.clone();
            async move {
                let out = ssm
                    .start_automation_execution()
                    .document_name("Signalman-Approve")
                    .parameters("Approvers", vec![OPERATOR_ACCESS_KEY.to_string()])
                    .send()
                    .await
                    .context("StartAutomationExecution")?;
                Ok::<_, anyhow::Error>(
                    out.automation_execution_id()
                        .unwrap_or_default()
                        .to_string(),
                )
            }
        })
        .buffered(8)
        .try_collect()
        .await
}

/// An Approve of execution `id`, with a comment.
pub fn approval(name: &str, id: &str) -> AutomationSignal {
    let spec: AutomationSignalSpec = serde_json::from_value(serde_json::json!({
        "automationExecutionId": id,
        "signalType": SignalType::Approve,
        "payload": BTreeMap::from([(
            "Comment".to_string(),
            vec!["approved by the benchmark".to_string()],
        )]),
    }))
    .expect("a valid AutomationSignal spec");
    AutomationSignal::new(name, spec)
}

/// Creates `objects` with `concurrency` requests at once; returns how long it took.
pub async fn create_all<K>(
    api: &Api<K>,
    objects: Vec<K>,
    concurrency: usize,
) -> anyhow::Result<Duration>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let started = std::time::Instant::now();
    futures::stream::iter(objects)
        .map(|obj| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &obj)
                    .await
                    .context("creating a signal")
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_for_each(|_| async { Ok(()) })
        .await?;
    Ok(started.elapsed())
}
