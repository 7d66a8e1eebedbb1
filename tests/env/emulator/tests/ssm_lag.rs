//! Lag mode for SSM: SendAutomationSignal and StopAutomationExecution are applied and
//! answered at once; GetAutomationExecution and DescribeAutomationStepExecutions show the
//! old state until the delay has passed. Real aws-sdk-ssm and boto3 clients.
mod common;

use std::time::{Duration, Instant};

use aws_emulator::{LagConfig, LagRule, Service};
use aws_sdk_ssm::types::{ExecutionMode, SignalType};
use common::*;

const AUTO: ExecutionMode = ExecutionMode::Auto;

async fn described_status(c: &aws_sdk_ssm::Client, id: &str, step_name: &str) -> String {
    let out = c
        .describe_automation_step_executions()
        .automation_execution_id(id)
        .send()
        .await
        .expect("DescribeAutomationStepExecutions");
    out.step_executions()
        .iter()
        .rev()
        .find(|s| s.step_name() == Some(step_name))
        .and_then(|s| s.step_status())
        .map(|s| s.as_str().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_lagged_approval_is_answered_at_once_and_read_later() {
    let emu = emulator().await;
    let alice = ssm(&emu.endpoint, "alice");
    let id = start(
        &alice,
        "Signalman-Approve",
        &[("Approvers", &["alice"])],
        AUTO,
    )
    .await;
    emu.handle
        .set_lag(LagConfig::none().with_rule(
            Service::Ssm,
            LagRule::fixed(3000).on("SendAutomationSignal"),
        ))
        .unwrap();

    let sent = Instant::now();
    send(&alice, &id, SignalType::Approve, &[("Comment", "ok")])
        .await
        .expect("the approval is accepted");
    assert!(
        sent.elapsed() < Duration::from_millis(700),
        "answered at once"
    );
    // Applied and counted...
    assert_eq!(emu.handle.counters().ssm.applied_signals, 1);
    let truth = emu.handle.automation_execution(&id).unwrap();
    assert_eq!(truth["AutomationExecutionStatus"], "Success");
    // ...but readers still see the step waiting, without the decision.
    let exec = get(&alice, &id).await;
    assert_eq!(status(&exec), "Waiting");
    assert_eq!(step_status(&exec, "approve"), "Waiting");
    assert!(output(step(&exec, "approve"), "ApproverDecisions").is_empty());
    assert_eq!(described_status(&alice, &id, "approve").await, "Waiting");
    // A second decision is checked against what was applied, not what readers see.
    assert_eq!(
        code_of(send(&alice, &id, SignalType::Approve, &[]).await),
        "InvalidAutomationSignalException"
    );

    tokio::time::sleep(Duration::from_millis(3000).saturating_sub(sent.elapsed())).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let exec = get(&alice, &id).await;
    assert_eq!(status(&exec), "Success");
    assert_eq!(output(step(&exec, "approve"), "ApproverDecisions").len(), 1);
    assert_eq!(described_status(&alice, &id, "approve").await, "Success");
}

#[tokio::test]
async fn lag_is_switched_through_the_control_api_and_random_within_bounds() {
    let emu = emulator().await;
    let ep = emu.endpoint.as_str();
    let (code, body) = http_json(
        ep,
        "PUT",
        "/_emu/lag",
        r#"{"ssm": [{"min_ms": 400, "max_ms": 900}], "seed": 5}"#,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let (_, got) = http_json(ep, "GET", "/_emu/lag", "").await;
    assert_eq!(got["ssm"][0]["max_ms"], 900);
    assert_eq!(emu.handle.lag().ssm[0].min_ms, 400);
    // A reset between scenarios keeps the lag of the environment.
    let (code, _) = http_json(ep, "POST", "/_emu/reset", "").await;
    assert_eq!(code, 200);
    assert_eq!(emu.handle.lag().ssm[0].max_ms, Some(900));
    let (code, _) = http_json(
        ep,
        "PUT",
        "/_emu/lag",
        r#"{"ssm": [{"min_ms": 9, "max_ms": 1}]}"#,
    )
    .await;
    assert_eq!(code, 400);
    let (code, _) = http_json(ep, "PUT", "/_emu/lag", r#"{"sqs": []}"#).await;
    assert_eq!(code, 400);

    // A rule without an operation covers StopAutomationExecution as well.
    let c = ssm(ep, "ops");
    let paused = start(&c, "Signalman-Pause", &[], AUTO).await;
    let waiting = start(&c, "Signalman-Pause", &[], AUTO).await;
    let sent = Instant::now();
    send(&c, &paused, SignalType::Resume, &[("StepName", "pause")])
        .await
        .expect("resume");
    c.stop_automation_execution()
        .automation_execution_id(&waiting)
        .send()
        .await
        .expect("stop");
    let mut seen = [None, None];
    while sent.elapsed() < Duration::from_secs(3) && seen.iter().any(Option::is_none) {
        for (i, (id, done)) in [(&paused, "Success"), (&waiting, "Cancelled")]
            .iter()
            .enumerate()
        {
            let s = status(&get(&c, id).await).to_string();
            if s == *done && seen[i].is_none() {
                seen[i] = Some(sent.elapsed());
            } else if seen[i].is_none() {
                assert_eq!(s, "Waiting", "the old state until due");
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for at in seen {
        let at = at.expect("visible in the end");
        assert!(
            (Duration::from_millis(380)..Duration::from_millis(2500)).contains(&at),
            "visible after {at:?}, configured 400..=900 ms"
        );
    }

    // Off again: the next change is visible at once.
    let (code, _) = http_json(ep, "DELETE", "/_emu/lag", "").await;
    assert_eq!(code, 200);
    assert_eq!(emu.handle.lag(), LagConfig::none());
    let third = start(&c, "Signalman-Pause", &[], AUTO).await;
    send(&c, &third, SignalType::Resume, &[("StepName", "pause")])
        .await
        .expect("resume");
    assert_eq!(status(&get(&c, &third).await), "Success");
}

/// Changes become visible in the order they were made: a later change with a shorter lag
/// does not overtake an earlier one, and a change made while lag is off waits behind a
/// hidden one.
#[tokio::test]
async fn lagged_changes_become_visible_in_order() {
    let emu = emulator().await;
    let alice = ssm(&emu.endpoint, "alice");
    let bob = ssm(&emu.endpoint, "bob");
    let id = start(
        &alice,
        "Signalman-Approve",
        &[
            ("Approvers", &["alice", "bob"]),
            ("MinRequiredApprovals", &["2"]),
        ],
        AUTO,
    )
    .await;
    emu.handle
        .set_lag(LagConfig::none().with_rule(Service::Ssm, LagRule::fixed(2500)))
        .unwrap();
    let sent = Instant::now();
    send(&alice, &id, SignalType::Approve, &[]).await.unwrap();
    emu.handle.clear_lag();
    send(&bob, &id, SignalType::Approve, &[]).await.unwrap();
    let exec = get(&alice, &id).await;
    assert_eq!(status(&exec), "Waiting");
    assert!(output(step(&exec, "approve"), "ApproverDecisions").is_empty());
    tokio::time::sleep(Duration::from_millis(2600).saturating_sub(sent.elapsed())).await;
    let exec = get(&alice, &id).await;
    assert_eq!(status(&exec), "Success");
    assert_eq!(output(step(&exec, "approve"), "ApproverDecisions").len(), 2);
}

/// boto3 sees the same: the send returns, the reads lag; and it reads the emulator's error
/// messages (`message`) as its `Error.Message`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_sees_lagged_state_and_error_messages() {
    let Some(python) = python_or_skip("boto3_sees_lagged_state_and_error_messages") else {
        return;
    };
    let emu = emulator().await;
    emu.handle
        .set_lag(LagConfig::none().with_rule(
            Service::Ssm,
            LagRule::fixed(2500).on("SendAutomationSignal"),
        ))
        .unwrap();
    let script = r#"
import sys, time, boto3
c = boto3.client("ssm", endpoint_url=sys.argv[1], region_name="us-east-1",
                 aws_access_key_id="alice", aws_secret_access_key="x")
i = c.start_automation_execution(DocumentName="Signalman-Approve",
                                 Parameters={"Approvers": ["alice"]})["AutomationExecutionId"]
t = time.monotonic()
c.send_automation_signal(AutomationExecutionId=i, SignalType="Approve")
assert time.monotonic() - t < 0.8
e = c.get_automation_execution(AutomationExecutionId=i)["AutomationExecution"]
assert e["AutomationExecutionStatus"] == "Waiting", e
steps = c.describe_automation_step_executions(AutomationExecutionId=i)["StepExecutions"]
assert steps[0]["StepStatus"] == "Waiting", steps
try:
    c.send_automation_signal(AutomationExecutionId=i, SignalType="Approve")
    raise SystemExit("a second approval was accepted")
except c.exceptions.InvalidAutomationSignalException as err:
    assert "Approve signal" in err.response["Error"]["Message"], err.response
time.sleep(2.6)
e = c.get_automation_execution(AutomationExecutionId=i)["AutomationExecution"]
assert e["AutomationExecutionStatus"] == "Success", e
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
