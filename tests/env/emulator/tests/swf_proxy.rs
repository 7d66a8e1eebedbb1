//! SWF through the emulator to moto (`tests/env/moto/launch.py`), and boto3 against the
//! emulator's SSM. Both need a Python venv with moto (`SIGNALMAN_MOTO_PYTHON` or
//! `<repo>/.env-cache/venv/bin/python`); without one they are skipped with a message.
mod common;

use aws_emulator::{FaultConfig, FaultKind, FaultRule, Service};
use aws_sdk_swf::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_swf::types::{ChildPolicy, EventType, TaskList, WorkflowExecution, WorkflowType};
use common::*;

fn python_or_skip(test: &str) -> Option<std::path::PathBuf> {
    let python = moto_python();
    // In CI the venv is part of the set-up: a missing one is a failure, not a skip.
    assert!(
        python.is_some() || std::env::var_os("CI").is_none(),
        "{test}: no moto venv in CI (tests/env/setup.sh should have made .env-cache/venv)"
    );
    if python.is_none() {
        eprintln!(
            "SKIPPED {test}: no moto venv (set SIGNALMAN_MOTO_PYTHON, or run tests/env/setup.sh to create .env-cache/venv)"
        );
    }
    python
}

async fn signaled_events(
    client: &aws_sdk_swf::Client,
    domain: &str,
    execution: &WorkflowExecution,
) -> Vec<(String, Option<String>)> {
    let history = client
        .get_workflow_execution_history()
        .domain(domain)
        .execution(execution.clone())
        .send()
        .await
        .expect("GetWorkflowExecutionHistory");
    history
        .events()
        .iter()
        .filter(|e| e.event_type() == &EventType::WorkflowExecutionSignaled)
        .map(|e| {
            let a = e
                .workflow_execution_signaled_event_attributes()
                .expect("signal attributes");
            (a.signal_name().to_string(), a.input().map(str::to_string))
        })
        .collect()
}

async fn open_workflow(
    client: &aws_sdk_swf::Client,
    domain: &str,
    workflow_id: &str,
) -> WorkflowExecution {
    let run = client
        .start_workflow_execution()
        .domain(domain)
        .workflow_id(workflow_id)
        .workflow_type(
            WorkflowType::builder()
                .name("order")
                .version("1")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("StartWorkflowExecution");
    WorkflowExecution::builder()
        .workflow_id(workflow_id)
        .run_id(run.run_id().expect("a run id"))
        .build()
        .unwrap()
}

async fn register(client: &aws_sdk_swf::Client, domain: &str) {
    client
        .register_domain()
        .name(domain)
        .workflow_execution_retention_period_in_days("1")
        .send()
        .await
        .expect("RegisterDomain");
    client
        .register_workflow_type()
        .domain(domain)
        .name("order")
        .version("1")
        .default_task_list(TaskList::builder().name("orders").build().unwrap())
        .default_execution_start_to_close_timeout("3600")
        .default_task_start_to_close_timeout("60")
        .default_child_policy(ChildPolicy::Terminate)
        .send()
        .await
        .expect("RegisterWorkflowType");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swf_signals_through_the_proxy_with_and_without_input() {
    let Some(python) = python_or_skip("swf_signals_through_the_proxy_with_and_without_input")
    else {
        return;
    };
    let moto = start_moto(&python);
    let emu = emulator_with(Some(moto.url.clone())).await;
    let client = swf(&emu.endpoint);
    register(&client, "orders").await;
    let execution = open_workflow(&client, "orders", "order-42").await;

    client
        .signal_workflow_execution()
        .domain("orders")
        .workflow_id("order-42")
        .run_id(execution.run_id())
        .signal_name("approve")
        .input(r#"{"ok": true}"#)
        .send()
        .await
        .expect("signal with input");
    // Without runId (the current run) and without input: moto 5.2.5 answers 500 here unless
    // launch.py's fix is in place.
    client
        .signal_workflow_execution()
        .domain("orders")
        .workflow_id("order-42")
        .signal_name("nudge")
        .send()
        .await
        .expect("signal without input");

    let events = signaled_events(&client, "orders", &execution).await;
    assert_eq!(
        events,
        [
            ("approve".to_string(), Some(r#"{"ok": true}"#.to_string())),
            ("nudge".to_string(), None)
        ]
    );
    let counters = emu.handle.counters();
    assert_eq!(counters.swf.applied_signals, 2);
    assert_eq!(counters.swf.signals[0].signal_name, "approve");
    assert!(counters.swf.signals[0].has_input);
    assert!(!counters.swf.signals[1].has_input);
    assert_eq!(counters.swf.signals[1].run_id, None);
    assert_eq!(counters.swf.calls_of("SignalWorkflowExecution"), 2);

    client
        .terminate_workflow_execution()
        .domain("orders")
        .workflow_id("order-42")
        .run_id(execution.run_id())
        .send()
        .await
        .expect("TerminateWorkflowExecution");
    let after = client
        .signal_workflow_execution()
        .domain("orders")
        .workflow_id("order-42")
        .signal_name("late")
        .send()
        .await;
    assert_eq!(code_of(after), "UnknownResourceFault");
    assert_eq!(emu.handle.counters().swf.applied_signals, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swf_faults_throttle_fail_and_drop_after_forwarding() {
    let Some(python) = python_or_skip("swf_faults_throttle_fail_and_drop_after_forwarding") else {
        return;
    };
    let moto = start_moto(&python);
    let emu = emulator_with(Some(moto.url.clone())).await;
    let client = swf(&emu.endpoint);
    register(&client, "faults").await;
    let execution = open_workflow(&client, "faults", "wf-1").await;
    let signal = || {
        client
            .signal_workflow_execution()
            .domain("faults")
            .workflow_id("wf-1")
            .run_id(execution.run_id())
            .signal_name("go")
            .send()
    };

    emu.handle
        .set_faults(
            FaultConfig::none()
                .with_rule(
                    Service::Swf,
                    FaultRule::drop_after_apply()
                        .on("SignalWorkflowExecution")
                        .times(1),
                )
                .with_rule(
                    Service::Swf,
                    FaultRule::server_error()
                        .on("SignalWorkflowExecution")
                        .times(1),
                ),
        )
        .unwrap();
    let err = signal().await.unwrap_err();
    assert!(
        matches!(err, SdkError::DispatchFailure(_)),
        "expected a dispatch failure, got {err:?}"
    );
    let err = signal().await.unwrap_err();
    assert_eq!(err.code(), Some("InternalFailure"), "{err:?}");
    match &err {
        SdkError::ServiceError(e) => assert_eq!(e.raw().status().as_u16(), 500),
        other => panic!("expected a service error, got {other:?}"),
    }
    // The dropped call reached moto; the 500 did not.
    assert_eq!(
        signaled_events(&client, "faults", &execution).await.len(),
        1
    );
    let counters = emu.handle.counters();
    assert_eq!(counters.swf.applied_signals, 1);
    assert_eq!(counters.swf.faults_of(FaultKind::DropAfterApply), 1);
    assert_eq!(counters.swf.faults_of(FaultKind::ServerError), 1);

    emu.handle
        .set_faults(FaultConfig::none().with_throttle(
            Service::Swf,
            aws_emulator::ThrottleRule::new("SignalWorkflowExecution", 1.0, 0.0),
        ))
        .unwrap();
    signal().await.expect("the bucket's one token");
    let err = signal().await.unwrap_err();
    assert_eq!(err.code(), Some("ThrottlingException"), "{err:?}");
    assert_eq!(
        signaled_events(&client, "faults", &execution).await.len(),
        2
    );
    assert_eq!(emu.handle.counters().swf.throttled, 1);
}

/// boto3 (from the same venv) talks to the emulator's SSM unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_works_against_the_ssm_emulator() {
    let Some(python) = python_or_skip("boto3_works_against_the_ssm_emulator") else {
        return;
    };
    let emu = emulator().await;
    let script = r#"
import sys, boto3, botocore.exceptions
c = boto3.client("ssm", endpoint_url=sys.argv[1], region_name="us-east-1",
                 aws_access_key_id="alice", aws_secret_access_key="x")
i = c.start_automation_execution(DocumentName="Signalman-Approve",
                                 Parameters={"Approvers": ["alice"]})["AutomationExecutionId"]
e = c.get_automation_execution(AutomationExecutionId=i)["AutomationExecution"]
assert e["AutomationExecutionStatus"] == "Waiting", e
assert hasattr(e["ExecutionStartTime"], "year"), e
c.send_automation_signal(AutomationExecutionId=i, SignalType="Approve", Payload={"Comment": ["ok"]})
e = c.get_automation_execution(AutomationExecutionId=i)["AutomationExecution"]
assert e["AutomationExecutionStatus"] == "Success", e
try:
    c.send_automation_signal(AutomationExecutionId=i, SignalType="Approve")
    raise SystemExit("a second approval was accepted")
except c.exceptions.InvalidAutomationSignalException:
    pass
try:
    c.get_automation_execution(AutomationExecutionId="0" * 36)
    raise SystemExit("an unknown id was found")
except c.exceptions.AutomationExecutionNotFoundException:
    pass
ident = boto3.client("sts", endpoint_url=sys.argv[1], region_name="us-east-1",
                     aws_access_key_id="alice", aws_secret_access_key="x").get_caller_identity()
assert ident["Arn"] == "arn:aws:iam::123456789012:user/alice", ident
print("boto3 ok")
"#;
    let endpoint = emu.endpoint.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg("-c")
            .arg(script)
            .arg(endpoint)
            .output()
            .expect("running python")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("boto3 ok"),
        "boto3 failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
