//! SSM Automation through the real aws-sdk-ssm client: approvals, pause, Interactive mode,
//! Revoke, and every documented error code.
mod common;

use aws_emulator::{FaultConfig, FaultRule, Service};
use aws_sdk_ssm::error::ProvideErrorMetadata as _;
use aws_sdk_ssm::types::{
    DocumentFormat, DocumentType, ExecutionMode, SignalType, StepExecutionFilter,
    StepExecutionFilterKey,
};
use common::*;

const AUTO: ExecutionMode = ExecutionMode::Auto;

#[tokio::test]
async fn approve_by_an_approver_moves_the_execution_on() {
    let emu = emulator().await;
    let alice = ssm(&emu.endpoint, "alice");
    let id = start(
        &alice,
        "Signalman-Approve",
        &[("Approvers", &["alice"])],
        AUTO,
    )
    .await;

    let exec = get(&alice, &id).await;
    assert_eq!(status(&exec), "Waiting");
    assert_eq!(exec.current_step_name(), Some("approve"));
    assert_eq!(exec.current_action(), Some("aws:approve"));
    assert_eq!(exec.mode().map(|m| m.as_str()), Some("Auto"));
    assert_eq!(exec.document_name(), Some("Signalman-Approve"));
    assert!(exec.execution_start_time().is_some());
    assert_eq!(step_status(&exec, "approve"), "Waiting");
    assert_eq!(
        output(step(&exec, "approve"), "ApprovalStatus"),
        ["Waiting"]
    );
    // Inputs are JSON-encoded, as the real service shows them.
    let inputs = step(&exec, "approve").inputs().unwrap();
    assert_eq!(inputs["Approvers"], r#"["alice"]"#);
    assert_eq!(inputs["MinRequiredApprovals"], "1");
    // The step not reached yet is listed as Pending, without an id.
    let finish = exec
        .step_executions()
        .iter()
        .find(|s| s.step_name() == Some("finish"))
        .unwrap();
    assert_eq!(finish.step_status().map(|s| s.as_str()), Some("Pending"));
    assert_eq!(exec.parameters().unwrap()["MinRequiredApprovals"], ["1"]);

    send(
        &alice,
        &id,
        SignalType::Approve,
        &[("Comment", "looks good")],
    )
    .await
    .expect("approve");
    let exec = get(&alice, &id).await;
    assert_eq!(status(&exec), "Success");
    assert!(exec.execution_end_time().is_some());
    assert_eq!(exec.current_step_name(), None);
    let approve = step(&exec, "approve");
    assert_eq!(approve.step_status().map(|s| s.as_str()), Some("Success"));
    assert_eq!(output(approve, "ApprovalStatus"), ["Approved"]);
    let decisions = output(approve, "ApproverDecisions");
    assert_eq!(decisions.len(), 1);
    let decision: serde_json::Value = serde_json::from_str(decisions[0]).unwrap();
    // The field names and values of the public AWS example (see the README).
    assert_eq!(decision["Approver"], user_arn("alice"));
    assert_eq!(decision["Decision"], "Approve");
    assert_eq!(decision["Comment"], "looks good");
    let when = decision["ApprovalDecisionTime"]
        .as_str()
        .expect("a time string");
    let when = chrono::DateTime::parse_from_rfc3339(when).expect("ISO 8601");
    let age = chrono::Utc::now().signed_duration_since(when);
    assert!(age.num_seconds().abs() < 60, "{when}");
    assert_eq!(
        decision.as_object().unwrap().len(),
        4,
        "only the four documented fields: {decision}"
    );
    assert_eq!(step_status(&exec, "finish"), "Success");

    let counters = emu.handle.counters();
    assert_eq!(counters.ssm.applied_signals, 1);
    let applied = &counters.ssm.signals[0];
    assert_eq!(applied.execution_id, id);
    assert_eq!(applied.signal_type, "Approve");
    assert_eq!(applied.step_name.as_deref(), Some("approve"));
    assert_eq!(applied.principal, user_arn("alice"));
}

#[tokio::test]
async fn two_required_approvals_need_two_different_approvers() {
    let emu = emulator().await;
    let alice = ssm(&emu.endpoint, "alice");
    let bob = ssm(&emu.endpoint, "bob");
    let approvers: &[&str] = &["alice", &user_arn("bob")];
    let id = start(
        &alice,
        "Signalman-Approve",
        &[("Approvers", approvers), ("MinRequiredApprovals", &["2"])],
        AUTO,
    )
    .await;

    send(&alice, &id, SignalType::Approve, &[])
        .await
        .expect("first approval");
    let exec = get(&alice, &id).await;
    assert_eq!(status(&exec), "Waiting");
    assert_eq!(
        output(step(&exec, "approve"), "ApprovalStatus"),
        ["Waiting"]
    );
    assert_eq!(output(step(&exec, "approve"), "ApproverDecisions").len(), 1);

    // The same approver cannot count twice.
    let code = code_of(send(&alice, &id, SignalType::Approve, &[]).await);
    assert_eq!(code, "InvalidAutomationSignalException");
    assert_eq!(status(&get(&alice, &id).await), "Waiting");

    send(&bob, &id, SignalType::Approve, &[])
        .await
        .expect("second approval");
    let exec = get(&alice, &id).await;
    assert_eq!(status(&exec), "Success");
    assert_eq!(
        output(step(&exec, "approve"), "ApprovalStatus"),
        ["Approved"]
    );
    assert_eq!(output(step(&exec, "approve"), "ApproverDecisions").len(), 2);
    assert_eq!(emu.handle.counters().ssm.applied_signals, 2);
}

#[tokio::test]
async fn one_reject_fails_the_step_and_the_execution() {
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
    send(&alice, &id, SignalType::Approve, &[])
        .await
        .expect("approve");
    send(&bob, &id, SignalType::Reject, &[("Comment", "not today")])
        .await
        .expect("reject");

    let exec = get(&alice, &id).await;
    assert_eq!(status(&exec), "Failed");
    assert!(
        exec.failure_message().unwrap().contains("rejected"),
        "{:?}",
        exec.failure_message()
    );
    let approve = step(&exec, "approve");
    assert_eq!(approve.step_status().map(|s| s.as_str()), Some("Failed"));
    assert_eq!(output(approve, "ApprovalStatus"), ["Rejected"]);
    let decisions: Vec<serde_json::Value> = output(approve, "ApproverDecisions")
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(decisions.len(), 2, "{decisions:?}");
    assert_eq!(decisions[0]["Decision"], "Approve");
    assert_eq!(decisions[0].get("Comment"), None);
    assert_eq!(decisions[1]["Approver"], user_arn("bob"));
    assert_eq!(decisions[1]["Decision"], "Reject");
    assert_eq!(decisions[1]["Comment"], "not today");
    let finish = exec
        .step_executions()
        .iter()
        .find(|s| s.step_name() == Some("finish"))
        .unwrap();
    assert_eq!(finish.step_status().map(|s| s.as_str()), Some("Pending"));

    // Nothing is valid on a failed execution.
    assert_eq!(
        code_of(send(&alice, &id, SignalType::Approve, &[]).await),
        "InvalidAutomationSignalException"
    );
}

#[tokio::test]
async fn a_non_approver_is_refused() {
    let emu = emulator().await;
    let alice = ssm(&emu.endpoint, "alice");
    let mallory = ssm(&emu.endpoint, "mallory");
    let id = start(
        &alice,
        "Signalman-Approve",
        &[("Approvers", &["alice"])],
        AUTO,
    )
    .await;
    for signal in [SignalType::Approve, SignalType::Reject] {
        let err = send(&mallory, &id, signal, &[]).await.unwrap_err();
        assert_eq!(err.code(), Some("InvalidAutomationSignalException"));
        let message = aws_sdk_ssm::error::ProvideErrorMetadata::message(&err)
            .unwrap()
            .to_string();
        assert!(message.contains("not an approver"), "{message}");
    }
    assert_eq!(status(&get(&alice, &id).await), "Waiting");
    assert_eq!(emu.handle.counters().ssm.applied_signals, 0);
}

#[tokio::test]
async fn a_second_approve_after_completion_is_refused() {
    let emu = emulator().await;
    let alice = ssm(&emu.endpoint, "alice");
    let id = start(
        &alice,
        "Signalman-Approve",
        &[("Approvers", &["alice"])],
        AUTO,
    )
    .await;
    send(&alice, &id, SignalType::Approve, &[])
        .await
        .expect("approve");
    assert_eq!(
        code_of(send(&alice, &id, SignalType::Approve, &[]).await),
        "InvalidAutomationSignalException"
    );
    assert_eq!(emu.handle.counters().ssm.applied_signals, 1);
}

#[tokio::test]
async fn an_assumed_role_session_approves_for_its_role() {
    let emu = emulator().await;
    let session = format!("arn:aws:sts::{ACCOUNT}:assumed-role/Deployer/signalman");
    emu.handle.set_identity("operator-key", &session);
    let operator = ssm(&emu.endpoint, "operator-key");
    let role = format!("arn:aws:iam::{ACCOUNT}:role/Deployer");
    let id = start(
        &operator,
        "Signalman-Approve",
        &[("Approvers", &[role.as_str()])],
        AUTO,
    )
    .await;
    assert_eq!(
        get(&operator, &id).await.executed_by(),
        Some(session.as_str())
    );
    send(&operator, &id, SignalType::Approve, &[])
        .await
        .expect("approve as the role");
    let exec = get(&operator, &id).await;
    assert_eq!(status(&exec), "Success");
    let decision: serde_json::Value =
        serde_json::from_str(output(step(&exec, "approve"), "ApproverDecisions")[0]).unwrap();
    assert_eq!(decision["Approver"], session);
}

#[tokio::test]
async fn resume_continues_a_paused_execution() {
    let emu = emulator().await;
    let c = ssm(&emu.endpoint, "ops");
    let id = start(&c, "Signalman-Pause", &[], AUTO).await;
    let exec = get(&c, &id).await;
    assert_eq!(status(&exec), "Waiting");
    assert_eq!(exec.current_step_name(), Some("pause"));
    assert_eq!(exec.current_action(), Some("aws:pause"));

    // Approve is not valid at an aws:pause step; Resume needs the paused step's name.
    assert_eq!(
        code_of(send(&c, &id, SignalType::Approve, &[]).await),
        "InvalidAutomationSignalException"
    );
    assert_eq!(
        code_of(send(&c, &id, SignalType::Resume, &[]).await),
        "InvalidAutomationSignalException"
    );
    assert_eq!(
        code_of(send(&c, &id, SignalType::Resume, &[("StepName", "nope")]).await),
        "AutomationStepNotFoundException"
    );
    assert_eq!(
        code_of(send(&c, &id, SignalType::Resume, &[("StepName", "finish")]).await),
        "InvalidAutomationSignalException"
    );

    send(&c, &id, SignalType::Resume, &[("StepName", "pause")])
        .await
        .expect("resume");
    let exec = get(&c, &id).await;
    assert_eq!(status(&exec), "Success");
    assert_eq!(step_status(&exec, "pause"), "Success");
    assert_eq!(
        code_of(send(&c, &id, SignalType::Resume, &[("StepName", "pause")]).await),
        "InvalidAutomationSignalException"
    );
    // Resume on an execution that is not paused at all.
    let other = start(&c, "Signalman-Approve", &[("Approvers", &["ops"])], AUTO).await;
    assert_eq!(
        code_of(send(&c, &other, SignalType::Resume, &[("StepName", "approve")]).await),
        "InvalidAutomationSignalException"
    );
}

#[tokio::test]
async fn interactive_mode_start_step_and_stop_step() {
    let emu = emulator().await;
    let c = ssm(&emu.endpoint, "ops");
    let id = start(&c, "Signalman-Steps", &[], ExecutionMode::Interactive).await;
    let exec = get(&c, &id).await;
    assert_eq!(status(&exec), "Waiting");
    assert_eq!(exec.mode().map(|m| m.as_str()), Some("Interactive"));
    assert!(exec
        .step_executions()
        .iter()
        .all(|s| s.step_status().map(|s| s.as_str()) == Some("Pending")));

    assert_eq!(
        code_of(send(&c, &id, SignalType::StartStep, &[("StepName", "bogus")]).await),
        "AutomationStepNotFoundException"
    );
    send(&c, &id, SignalType::StartStep, &[("StepName", "step1")])
        .await
        .expect("start step1");
    let exec = get(&c, &id).await;
    assert_eq!(step_status(&exec, "step1"), "Success");
    assert_eq!(status(&exec), "Waiting");
    assert_eq!(step(&exec, "step1").valid_next_steps(), ["step2"]);

    send(&c, &id, SignalType::StartStep, &[("StepName", "step2")])
        .await
        .expect("start step2");
    let exec = get(&c, &id).await;
    assert_eq!(step_status(&exec, "step2"), "InProgress");
    assert_eq!(status(&exec), "InProgress");
    assert_eq!(exec.current_step_name(), Some("step2"));
    // One step at a time.
    assert_eq!(
        code_of(send(&c, &id, SignalType::StartStep, &[("StepName", "step3")]).await),
        "InvalidAutomationSignalException"
    );

    let step2 = step(&exec, "step2")
        .step_execution_id()
        .unwrap()
        .to_string();
    assert_eq!(
        code_of(
            send(
                &c,
                &id,
                SignalType::StopStep,
                &[("StepExecutionId", "97fff367-fc5a-4299-aed8-0123456789ab")]
            )
            .await
        ),
        "AutomationStepNotFoundException"
    );
    send(
        &c,
        &id,
        SignalType::StopStep,
        &[("StepExecutionId", &step2)],
    )
    .await
    .expect("stop step2");
    let exec = get(&c, &id).await;
    assert_eq!(step_status(&exec, "step2"), "Cancelled");
    assert_eq!(status(&exec), "Waiting");
    assert_eq!(
        code_of(
            send(
                &c,
                &id,
                SignalType::StopStep,
                &[("StepExecutionId", &step2)]
            )
            .await
        ),
        "InvalidAutomationSignalException"
    );

    send(&c, &id, SignalType::StartStep, &[("StepName", "step3")])
        .await
        .expect("start step3");
    let exec = get(&c, &id).await;
    assert_eq!(step_status(&exec, "step3"), "Success");
    assert_eq!(status(&exec), "Success");

    let counters = emu.handle.counters();
    let kinds: Vec<_> = counters
        .ssm
        .signals
        .iter()
        .map(|s| (s.signal_type.as_str(), s.step_name.as_deref()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("StartStep", Some("step1")),
            ("StartStep", Some("step2")),
            ("StopStep", Some("step2")),
            ("StartStep", Some("step3"))
        ]
    );
    assert_eq!(
        counters.ssm.signals[2].step_execution_id.as_deref(),
        Some(step2.as_str())
    );
}

#[tokio::test]
async fn start_step_is_refused_in_auto_mode_and_stop_step_cancels_an_auto_execution() {
    let emu = emulator().await;
    let c = ssm(&emu.endpoint, "ops");
    let id = start(&c, "Signalman-Steps", &[], AUTO).await;
    let exec = get(&c, &id).await;
    // step1 ran at once; the 24h sleep of step2 keeps it InProgress.
    assert_eq!(step_status(&exec, "step1"), "Success");
    assert_eq!(step_status(&exec, "step2"), "InProgress");
    assert_eq!(status(&exec), "InProgress");
    assert_eq!(
        code_of(send(&c, &id, SignalType::StartStep, &[("StepName", "step3")]).await),
        "InvalidAutomationSignalException"
    );
    let step2 = step(&exec, "step2")
        .step_execution_id()
        .unwrap()
        .to_string();
    send(
        &c,
        &id,
        SignalType::StopStep,
        &[("StepExecutionId", &step2)],
    )
    .await
    .expect("stop step2");
    let exec = get(&c, &id).await;
    assert_eq!(step_status(&exec, "step2"), "Cancelled");
    assert_eq!(status(&exec), "Cancelled");
}

#[tokio::test]
async fn revoke_ends_an_approved_access_request() {
    let emu = emulator().await;
    let c = ssm(&emu.endpoint, "ops");
    let id = start(
        &c,
        "Signalman-AccessRequest",
        &[("Approvers", &["ops"])],
        AUTO,
    )
    .await;
    // Not approved yet: nothing to revoke.
    assert_eq!(
        code_of(send(&c, &id, SignalType::Revoke, &[]).await),
        "InvalidAutomationSignalException"
    );
    send(&c, &id, SignalType::Approve, &[])
        .await
        .expect("approve");
    let exec = get(&c, &id).await;
    assert_eq!(status(&exec), "InProgress");
    assert_eq!(exec.current_step_name(), Some("grantAccess"));
    assert_eq!(
        output(step(&exec, "grantAccess"), "AccessStatus"),
        ["Granted"]
    );

    send(&c, &id, SignalType::Revoke, &[])
        .await
        .expect("revoke");
    let exec = get(&c, &id).await;
    let grant = step(&exec, "grantAccess");
    assert_eq!(grant.step_status().map(|s| s.as_str()), Some("Success"));
    assert_eq!(output(grant, "AccessStatus"), ["Revoked"]);
    assert_eq!(output(grant, "RevokedBy"), [user_arn("ops").as_str()]);
    assert_eq!(step_status(&exec, "endAccess"), "Success");
    assert_eq!(status(&exec), "Success");
    assert_eq!(
        code_of(send(&c, &id, SignalType::Revoke, &[]).await),
        "InvalidAutomationSignalException"
    );
}

#[tokio::test]
async fn every_documented_error_code_has_a_cause() {
    let emu = emulator().await;
    let c = ssm(&emu.endpoint, "ops");
    let id = start(&c, "Signalman-Approve", &[("Approvers", &["ops"])], AUTO).await;

    // AutomationExecutionNotFoundException: a well-formed id nobody started.
    let unknown = "73c8eef8-f4ee-4a05-820c-e354f0000000";
    assert_eq!(
        code_of(send(&c, unknown, SignalType::Approve, &[]).await),
        "AutomationExecutionNotFoundException"
    );
    assert_eq!(
        code_of(
            c.get_automation_execution()
                .automation_execution_id(unknown)
                .send()
                .await
        ),
        "AutomationExecutionNotFoundException"
    );
    // ValidationException: 35 characters (the SDK does not check lengths; the server must).
    assert_eq!(
        code_of(send(&c, &id[..35], SignalType::Approve, &[]).await),
        "ValidationException"
    );
    assert_eq!(
        code_of(send(&c, &format!("{id}x"), SignalType::Approve, &[]).await),
        "ValidationException"
    );
    // ValidationException: a signal type outside the model's enum.
    assert_eq!(
        code_of(send(&c, &id, SignalType::from("Nudge"), &[]).await),
        "ValidationException"
    );
    // ValidationException: payload limits (51 values, a 513-character value, an empty map).
    let too_many = c
        .send_automation_signal()
        .automation_execution_id(&id)
        .signal_type(SignalType::Approve)
        .payload("Comment", vec!["x".to_string(); 51])
        .send()
        .await;
    assert_eq!(code_of(too_many), "ValidationException");
    assert_eq!(
        code_of(
            send(
                &c,
                &id,
                SignalType::Approve,
                &[("Comment", &"x".repeat(513))]
            )
            .await
        ),
        "ValidationException"
    );
    let empty = c
        .send_automation_signal()
        .automation_execution_id(&id)
        .signal_type(SignalType::Approve)
        .set_payload(Some(Default::default()))
        .send()
        .await;
    assert_eq!(code_of(empty), "ValidationException");
    // AutomationStepNotFoundException: a StopStep for a step execution that does not exist.
    assert_eq!(
        code_of(
            send(
                &c,
                &id,
                SignalType::StopStep,
                &[("StepExecutionId", unknown)]
            )
            .await
        ),
        "AutomationStepNotFoundException"
    );
    // InvalidAutomationSignalException: Resume while waiting for approval.
    assert_eq!(
        code_of(send(&c, &id, SignalType::Resume, &[("StepName", "approve")]).await),
        "InvalidAutomationSignalException"
    );
    // InternalServerError: an injected server fault.
    emu.handle
        .set_faults(
            FaultConfig::none().with_rule(
                Service::Ssm,
                FaultRule::server_error()
                    .on("SendAutomationSignal")
                    .times(1),
            ),
        )
        .unwrap();
    assert_eq!(
        code_of(send(&c, &id, SignalType::Approve, &[]).await),
        "InternalServerError"
    );
    // None of those applied anything; the next approval does.
    assert_eq!(emu.handle.counters().ssm.applied_signals, 0);
    send(&c, &id, SignalType::Approve, &[])
        .await
        .expect("approve");
    assert_eq!(status(&get(&c, &id).await), "Success");

    // StartAutomationExecution's own errors.
    let missing = c
        .start_automation_execution()
        .document_name("No-Such-Doc")
        .send()
        .await;
    assert_eq!(code_of(missing), "AutomationDefinitionNotFoundException");
    let no_approvers = c
        .start_automation_execution()
        .document_name("Signalman-Approve")
        .send()
        .await;
    assert_eq!(
        code_of(no_approvers),
        "InvalidAutomationExecutionParametersException"
    );
    let extra = c
        .start_automation_execution()
        .document_name("Signalman-Pause")
        .parameters("Bogus", vec!["1".into()])
        .send()
        .await;
    assert_eq!(
        code_of(extra),
        "InvalidAutomationExecutionParametersException"
    );
}

#[tokio::test]
async fn inline_documents_in_yaml_and_json() {
    let emu = emulator().await;
    let c = ssm(&emu.endpoint, "alice");
    let yaml = r#"
description: an inline approval
schemaVersion: '0.3'
parameters:
  Who:
    type: StringList
mainSteps:
  - name: prepare
    action: aws:executeScript
    inputs:
      Runtime: python3.11
      Handler: handler
      Script: "def handler(e, c): return {}"
  - name: gate
    action: aws:approve
    inputs:
      Approvers: "{{ Who }}"
      MinRequiredApprovals: 1
      Message: "execution {{ automation:EXECUTION_ID }}"
  - name: done
    action: aws:sleep
    inputs:
      Duration: PT2S
outputs:
  - gate.ApprovalStatus
"#;
    let created = c
        .create_document()
        .name("Inline-Gate")
        .content(yaml)
        .document_type(DocumentType::Automation)
        .document_format(DocumentFormat::Yaml)
        .send()
        .await
        .expect("CreateDocument");
    let description = created.document_description().unwrap();
    assert_eq!(description.name(), Some("Inline-Gate"));
    assert_eq!(description.document_version(), Some("1"));
    let again = c
        .create_document()
        .name("Inline-Gate")
        .content(yaml)
        .document_type(DocumentType::Automation)
        .document_format(DocumentFormat::Yaml)
        .send()
        .await;
    assert_eq!(code_of(again), "DocumentAlreadyExists");

    let id = start(&c, "Inline-Gate", &[("Who", &["alice"])], AUTO).await;
    let exec = get(&c, &id).await;
    assert_eq!(step_status(&exec, "prepare"), "Success");
    assert_eq!(exec.current_step_name(), Some("gate"));
    let message = &step(&exec, "gate").inputs().unwrap()["Message"];
    assert_eq!(message, &format!("\"execution {id}\""));
    assert_eq!(exec.outputs().unwrap()["gate.ApprovalStatus"].len(), 1);
    send(&c, &id, SignalType::Approve, &[])
        .await
        .expect("approve");
    let exec = get(&c, &id).await;
    assert_eq!(status(&exec), "Success");
    assert_eq!(exec.outputs().unwrap()["gate.ApprovalStatus"], ["Approved"]);

    let json = serde_json::json!({
        "schemaVersion": "0.3",
        "mainSteps": [
            {"name": "hold", "action": "aws:pause", "inputs": {}},
            {"name": "skip", "action": "aws:sleep", "inputs": {"Duration": "PT1S"}, "isEnd": true},
            {"name": "never", "action": "aws:sleep", "inputs": {"Duration": "PT1S"}}
        ]
    });
    c.create_document()
        .name("Inline-Hold")
        .content(json.to_string())
        .document_type(DocumentType::Automation)
        .send()
        .await
        .expect("CreateDocument JSON");
    let id = start(&c, "Inline-Hold", &[], AUTO).await;
    send(&c, &id, SignalType::Resume, &[("StepName", "hold")])
        .await
        .expect("resume");
    let exec = get(&c, &id).await;
    assert_eq!(status(&exec), "Success");
    let never = exec
        .step_executions()
        .iter()
        .find(|s| s.step_name() == Some("never"))
        .unwrap();
    assert_eq!(never.step_status().map(|s| s.as_str()), Some("Pending"));

    let bad = c
        .create_document()
        .name("Inline-Bad")
        .content(r#"{"schemaVersion": "2.2", "mainSteps": []}"#)
        .document_type(DocumentType::Automation)
        .send()
        .await;
    assert_eq!(code_of(bad), "InvalidDocumentSchemaVersion");
    let garbage = c
        .create_document()
        .name("Inline-Garbage")
        .content("{not json")
        .document_type(DocumentType::Automation)
        .send()
        .await;
    assert_eq!(code_of(garbage), "InvalidDocumentContent");
}

#[tokio::test]
async fn describe_step_executions_filters_pages_and_reverses() {
    let emu = emulator().await;
    let c = ssm(&emu.endpoint, "ops");
    let id = start(&c, "Signalman-Steps", &[], ExecutionMode::Interactive).await;
    // step3 is the last step: running it ends the execution, so it goes last.
    for name in ["step1", "step1", "step3"] {
        send(&c, &id, SignalType::StartStep, &[("StepName", name)])
            .await
            .expect("start step");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let all = c
        .describe_automation_step_executions()
        .automation_execution_id(&id)
        .send()
        .await
        .unwrap();
    let names: Vec<_> = all
        .step_executions()
        .iter()
        .filter_map(|s| s.step_name())
        .collect();
    assert_eq!(names, ["step1", "step1", "step3"]);

    let reversed = c
        .describe_automation_step_executions()
        .automation_execution_id(&id)
        .reverse_order(true)
        .send()
        .await
        .unwrap();
    let names: Vec<_> = reversed
        .step_executions()
        .iter()
        .filter_map(|s| s.step_name())
        .collect();
    assert_eq!(names, ["step3", "step1", "step1"]);

    let filter = StepExecutionFilter::builder()
        .key(StepExecutionFilterKey::StepName)
        .values("step1")
        .build()
        .unwrap();
    let only = c
        .describe_automation_step_executions()
        .automation_execution_id(&id)
        .filters(filter)
        .send()
        .await
        .unwrap();
    assert_eq!(only.step_executions().len(), 2);

    let page1 = c
        .describe_automation_step_executions()
        .automation_execution_id(&id)
        .max_results(2)
        .send()
        .await
        .unwrap();
    assert_eq!(page1.step_executions().len(), 2);
    let token = page1.next_token().expect("a next token").to_string();
    let page2 = c
        .describe_automation_step_executions()
        .automation_execution_id(&id)
        .max_results(2)
        .next_token(token)
        .send()
        .await
        .unwrap();
    assert_eq!(page2.step_executions().len(), 1);
    assert!(page2.next_token().is_none());

    let bad_token = c
        .describe_automation_step_executions()
        .automation_execution_id(&id)
        .next_token("nope")
        .send()
        .await;
    assert_eq!(code_of(bad_token), "InvalidNextToken");
    let too_many = c
        .describe_automation_step_executions()
        .automation_execution_id(&id)
        .max_results(51)
        .send()
        .await;
    assert_eq!(code_of(too_many), "ValidationException");
}

#[tokio::test]
async fn stop_cancels_and_then_no_signal_is_valid() {
    let emu = emulator().await;
    let c = ssm(&emu.endpoint, "alice");
    let id = start(&c, "Signalman-Approve", &[("Approvers", &["alice"])], AUTO).await;
    c.stop_automation_execution()
        .automation_execution_id(&id)
        .send()
        .await
        .expect("stop");
    let exec = get(&c, &id).await;
    assert_eq!(status(&exec), "Cancelled");
    assert_eq!(step_status(&exec, "approve"), "Cancelled");
    assert!(exec.execution_end_time().is_some());
    for (signal, payload) in [
        (SignalType::Approve, vec![]),
        (SignalType::Reject, vec![]),
        (SignalType::Resume, vec![("StepName", "approve")]),
        (SignalType::Revoke, vec![]),
    ] {
        assert_eq!(
            code_of(send(&c, &id, signal, &payload).await),
            "InvalidAutomationSignalException"
        );
    }
    let again = c
        .stop_automation_execution()
        .automation_execution_id(&id)
        .send()
        .await;
    assert_eq!(code_of(again), "InvalidAutomationStatusUpdateException");
}

/// The step's decisions as JSON objects.
fn decisions(step: &aws_sdk_ssm::types::StepExecution) -> Vec<serde_json::Value> {
    output(step, "ApproverDecisions")
        .iter()
        .map(|d| serde_json::from_str(d).expect("a JSON decision"))
        .collect()
}

fn step_id(step: &aws_sdk_ssm::types::StepExecution) -> String {
    step.step_execution_id().expect("an id").to_string()
}

/// (name, status, id) of every started step execution, in start order.
fn started(exec: &aws_sdk_ssm::types::AutomationExecution) -> Vec<(String, String, String)> {
    exec.step_executions()
        .iter()
        .filter(|s| s.step_execution_id().is_some())
        .map(|s| {
            (
                s.step_name().unwrap_or("").to_string(),
                s.step_status()
                    .map(|x| x.as_str())
                    .unwrap_or("")
                    .to_string(),
                step_id(s),
            )
        })
        .collect()
}

/// IRSA and Pod Identity sign with a new session of the same role after every refresh or
/// restart. A second decision by another session of a role that has decided is the role's
/// second decision, and is refused; the recorded Approver is the session that decided.
#[tokio::test]
async fn a_role_decides_once_whatever_its_session() {
    let emu = emulator().await;
    let role = format!("arn:aws:iam::{ACCOUNT}:role/Deployer");
    let s1 = format!("arn:aws:sts::{ACCOUNT}:assumed-role/Deployer/s1");
    let s2 = format!("arn:aws:sts::{ACCOUNT}:assumed-role/Deployer/s2");
    emu.handle.set_identity("op-1", &s1);
    emu.handle.set_identity("op-2", &s2);
    let (op1, op2) = (ssm(&emu.endpoint, "op-1"), ssm(&emu.endpoint, "op-2"));
    let manager = ssm(&emu.endpoint, "release-manager");
    let approvers: &[&str] = &[&role, &user_arn("release-manager")];
    let id = start(
        &op1,
        "Signalman-Approve",
        &[("Approvers", approvers), ("MinRequiredApprovals", &["2"])],
        AUTO,
    )
    .await;
    send(&op1, &id, SignalType::Approve, &[])
        .await
        .expect("the role approves");
    for (client, signal) in [
        (&op2, SignalType::Approve),
        (&op2, SignalType::Reject),
        (&op1, SignalType::Approve),
    ] {
        let err = send(client, &id, signal, &[]).await.unwrap_err();
        assert_eq!(err.code(), Some("InvalidAutomationSignalException"));
        assert_eq!(
            err.message(),
            Some(&*format!(
                "{role} has already sent a decision for step approve"
            ))
        );
    }
    let exec = get(&op1, &id).await;
    assert_eq!(status(&exec), "Waiting");
    let recorded = decisions(step(&exec, "approve"));
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0]["Approver"], s1);

    send(&manager, &id, SignalType::Approve, &[])
        .await
        .expect("the release manager approves");
    let exec = get(&op1, &id).await;
    assert_eq!(status(&exec), "Success");
    let recorded = decisions(step(&exec, "approve"));
    assert_eq!(recorded[0]["Approver"], s1);
    assert_eq!(recorded[1]["Approver"], user_arn("release-manager"));
    assert_eq!(emu.handle.counters().ssm.applied_signals, 2);
}

/// One Approvers entry counts for one decision: a user name entry names users of that name
/// in any account, but only the first of them to decide counts through it.
#[tokio::test]
async fn an_approvers_entry_counts_once() {
    let emu = emulator().await;
    emu.handle
        .set_identity("alice-a", "arn:aws:iam::111111111111:user/alice");
    emu.handle
        .set_identity("alice-b", "arn:aws:iam::222222222222:user/alice");
    let (alice_a, alice_b) = (ssm(&emu.endpoint, "alice-a"), ssm(&emu.endpoint, "alice-b"));
    let id = start(
        &alice_a,
        "Signalman-Approve",
        &[
            ("Approvers", &["alice", "bob"]),
            ("MinRequiredApprovals", &["2"]),
        ],
        AUTO,
    )
    .await;
    send(&alice_a, &id, SignalType::Approve, &[])
        .await
        .expect("one alice");
    let err = send(&alice_b, &id, SignalType::Approve, &[])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidAutomationSignalException"));
    assert!(
        err.message().unwrap().contains("each entry counts once"),
        "{err:?}"
    );
    send(&ssm(&emu.endpoint, "bob"), &id, SignalType::Approve, &[])
        .await
        .expect("bob");
    assert_eq!(status(&get(&alice_a, &id).await), "Success");
}

/// Every ApproverDecisions entry carries the time and the Comment exactly as it was sent.
#[tokio::test]
async fn comments_are_recorded_exactly_as_sent() {
    let emu = emulator().await;
    let c = ssm(&emu.endpoint, "alice");
    let comment = "  «ship it» \"quoted\"\n{{ not a reference }} \\ ✓ ";
    let id = start(&c, "Signalman-Approve", &[("Approvers", &["alice"])], AUTO).await;
    send(&c, &id, SignalType::Approve, &[("Comment", comment)])
        .await
        .expect("approve");
    let exec = get(&c, &id).await;
    let recorded = decisions(step(&exec, "approve"));
    assert_eq!(recorded[0]["Comment"], comment);
    assert!(recorded[0]["ApprovalDecisionTime"]
        .as_str()
        .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()));
}

/// Two aws:approve steps in a row: each has its own step execution, decisions and status;
/// while the second waits the first shows Success with its decisions.
#[tokio::test]
async fn two_approve_steps_in_a_row() {
    let emu = emulator().await;
    let alice = ssm(&emu.endpoint, "alice");
    let bob = ssm(&emu.endpoint, "bob");
    let carol = ssm(&emu.endpoint, "carol");
    let id = start(
        &alice,
        "Signalman-TwoApprovals",
        &[
            ("StagingApprovers", &["alice"]),
            ("ProdApprovers", &["bob", "carol"]),
            ("ProdMinRequiredApprovals", &["2"]),
        ],
        AUTO,
    )
    .await;
    let exec = get(&alice, &id).await;
    assert_eq!(status(&exec), "Waiting");
    assert_eq!(exec.current_step_name(), Some("approveStaging"));
    assert_eq!(
        exec.step_executions()
            .iter()
            .map(|s| (s.step_name().unwrap(), s.step_status().unwrap().as_str()))
            .collect::<Vec<_>>(),
        [
            ("approveStaging", "Waiting"),
            ("approveProd", "Pending"),
            ("finish", "Pending")
        ]
    );
    // bob is an approver of the second step only.
    assert_eq!(
        code_of(send(&bob, &id, SignalType::Approve, &[]).await),
        "InvalidAutomationSignalException"
    );
    send(
        &alice,
        &id,
        SignalType::Approve,
        &[("Comment", "staging ok")],
    )
    .await
    .expect("staging approved");

    let exec = get(&alice, &id).await;
    assert_eq!(status(&exec), "Waiting");
    assert_eq!(exec.current_step_name(), Some("approveProd"));
    let staging = step(&exec, "approveStaging");
    let prod = step(&exec, "approveProd");
    assert_ne!(step_id(staging), step_id(prod));
    assert_eq!(staging.step_status().unwrap().as_str(), "Success");
    assert_eq!(output(staging, "ApprovalStatus"), ["Approved"]);
    let staging_decisions = decisions(staging);
    assert_eq!(staging_decisions.len(), 1);
    assert_eq!(staging_decisions[0]["Approver"], user_arn("alice"));
    assert_eq!(staging_decisions[0]["Comment"], "staging ok");
    assert_eq!(prod.step_status().unwrap().as_str(), "Waiting");
    assert_eq!(output(prod, "ApprovalStatus"), ["Waiting"]);
    assert!(decisions(prod).is_empty());
    assert_eq!(prod.inputs().unwrap()["Approvers"], r#"["bob","carol"]"#);
    assert_eq!(prod.inputs().unwrap()["MinRequiredApprovals"], "2");

    // alice decided the first step; she is no approver of the second.
    let err = send(&alice, &id, SignalType::Approve, &[])
        .await
        .unwrap_err();
    assert!(err
        .message()
        .unwrap()
        .contains("not an approver of step approveProd"));
    send(&bob, &id, SignalType::Approve, &[])
        .await
        .expect("bob");
    assert_eq!(status(&get(&alice, &id).await), "Waiting");
    send(&carol, &id, SignalType::Approve, &[("Comment", "prod ok")])
        .await
        .expect("carol");
    let exec = get(&alice, &id).await;
    assert_eq!(status(&exec), "Success");
    let prod = step(&exec, "approveProd");
    assert_eq!(output(prod, "ApprovalStatus"), ["Approved"]);
    let prod_decisions = decisions(prod);
    assert_eq!(prod_decisions.len(), 2);
    assert_eq!(prod_decisions[1]["Comment"], "prod ok");
    assert_eq!(decisions(step(&exec, "approveStaging")).len(), 1);

    let described = alice
        .describe_automation_step_executions()
        .automation_execution_id(&id)
        .send()
        .await
        .unwrap();
    let names: Vec<_> = described
        .step_executions()
        .iter()
        .filter_map(|s| s.step_name())
        .collect();
    assert_eq!(names, ["approveStaging", "approveProd", "finish"]);
    let signals: Vec<_> = emu
        .handle
        .counters()
        .ssm
        .signals
        .iter()
        .map(|s| s.step_name.clone().unwrap())
        .collect();
    assert_eq!(signals, ["approveStaging", "approveProd", "approveProd"]);
}

/// A runbook that goes back (aws:branch after `work`): the step `pause` runs again and again,
/// each time a new step execution; Resume resumes the one that waits now.
#[tokio::test]
async fn a_paused_step_in_a_loop_runs_again_with_a_new_id() {
    let emu = emulator().await;
    let c = ssm(&emu.endpoint, "ops");
    let id = start(&c, "Signalman-PauseLoop", &[], AUTO).await;
    let mut ids = vec![step_id(step(&get(&c, &id).await, "pause"))];
    for round in 1..=2 {
        send(&c, &id, SignalType::Resume, &[("StepName", "pause")])
            .await
            .expect("resume");
        let exec = get(&c, &id).await;
        assert_eq!(status(&exec), "Waiting", "round {round}");
        assert_eq!(exec.current_step_name(), Some("pause"));
        let now = step(&exec, "pause");
        assert_eq!(now.step_status().unwrap().as_str(), "Waiting");
        ids.push(step_id(now));
    }
    let exec = get(&c, &id).await;
    let all = started(&exec);
    let shape: Vec<(&str, &str)> = all
        .iter()
        .map(|(n, s, _)| (n.as_str(), s.as_str()))
        .collect();
    assert_eq!(
        shape,
        [
            ("pause", "Success"),
            ("work", "Success"),
            ("again", "Success"),
            ("pause", "Success"),
            ("work", "Success"),
            ("again", "Success"),
            ("pause", "Waiting"),
        ]
    );
    // finish never ran: still listed as Pending.
    assert!(exec
        .step_executions()
        .iter()
        .any(|s| s.step_name() == Some("finish") && s.step_execution_id().is_none()));
    let mut unique = all.iter().map(|(_, _, i)| i.clone()).collect::<Vec<_>>();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        all.len(),
        "every step execution has its own id"
    );
    let again = exec
        .step_executions()
        .iter()
        .find(|s| s.step_name() == Some("again"))
        .unwrap();
    assert_eq!(again.action(), Some("aws:branch"));
    assert_eq!(again.valid_next_steps(), ["pause", "finish"]);

    let pauses = c
        .describe_automation_step_executions()
        .automation_execution_id(&id)
        .filters(
            StepExecutionFilter::builder()
                .key(StepExecutionFilterKey::StepName)
                .values("pause")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let listed: Vec<(String, String)> = pauses
        .step_executions()
        .iter()
        .map(|s| (step_id(s), s.step_status().unwrap().as_str().to_string()))
        .collect();
    assert_eq!(
        listed,
        [
            (ids[0].clone(), "Success".to_string()),
            (ids[1].clone(), "Success".to_string()),
            (ids[2].clone(), "Waiting".to_string()),
        ]
    );
    // Signals address what waits now: the ended pause executions cannot be stopped, `work`
    // is not paused.
    assert_eq!(
        code_of(
            send(
                &c,
                &id,
                SignalType::StopStep,
                &[("StepExecutionId", &ids[0])]
            )
            .await
        ),
        "InvalidAutomationSignalException"
    );
    assert_eq!(
        code_of(send(&c, &id, SignalType::Resume, &[("StepName", "work")]).await),
        "InvalidAutomationSignalException"
    );
    let counted: Vec<_> = emu
        .handle
        .counters()
        .ssm
        .signals
        .iter()
        .map(|s| s.step_execution_id.clone().unwrap())
        .collect();
    assert_eq!(counted, ids[..2]);

    c.stop_automation_execution()
        .automation_execution_id(&id)
        .send()
        .await
        .expect("stop");
    let exec = get(&c, &id).await;
    assert_eq!(status(&exec), "Cancelled");
    assert_eq!(step_status(&exec, "pause"), "Cancelled");

    // Repeat=false: one round, then finish.
    let once = start(&c, "Signalman-PauseLoop", &[("Repeat", &["false"])], AUTO).await;
    send(&c, &once, SignalType::Resume, &[("StepName", "pause")])
        .await
        .expect("resume");
    let exec = get(&c, &once).await;
    assert_eq!(status(&exec), "Success");
    assert_eq!(
        started(&exec)
            .iter()
            .map(|(n, _, _)| n.as_str())
            .collect::<Vec<_>>(),
        ["pause", "work", "again", "finish"]
    );
}

/// An aws:approve step revisited: the second round's step execution starts with no
/// decisions, and the first round's keeps its own.
#[tokio::test]
async fn an_approve_step_in_a_loop_starts_each_round_empty() {
    let emu = emulator().await;
    let alice = ssm(&emu.endpoint, "alice");
    let id = start(
        &alice,
        "Signalman-ApproveLoop",
        &[("Approvers", &["alice"])],
        AUTO,
    )
    .await;
    let first = step_id(step(&get(&alice, &id).await, "approve"));
    send(&alice, &id, SignalType::Approve, &[("Comment", "round 1")])
        .await
        .expect("round 1");
    let exec = get(&alice, &id).await;
    assert_eq!(status(&exec), "Waiting");
    let now = step(&exec, "approve");
    let second = step_id(now);
    assert_ne!(first, second);
    assert_eq!(now.step_status().unwrap().as_str(), "Waiting");
    assert_eq!(output(now, "ApprovalStatus"), ["Waiting"]);
    assert!(decisions(now).is_empty());
    let round1 = exec
        .step_executions()
        .iter()
        .find(|s| s.step_execution_id() == Some(first.as_str()))
        .unwrap();
    assert_eq!(round1.step_status().unwrap().as_str(), "Success");
    assert_eq!(decisions(round1)[0]["Comment"], "round 1");

    // The same approver decides again: it is another step execution.
    send(&alice, &id, SignalType::Reject, &[("Comment", "round 2")])
        .await
        .expect("round 2");
    let exec = get(&alice, &id).await;
    assert_eq!(status(&exec), "Failed");
    let now = step(&exec, "approve");
    assert_eq!(step_id(now), second);
    assert_eq!(output(now, "ApprovalStatus"), ["Rejected"]);
    let round2 = decisions(now);
    assert_eq!(round2.len(), 1);
    assert_eq!(round2[0]["Decision"], "Reject");
    let applied: Vec<_> = emu
        .handle
        .counters()
        .ssm
        .signals
        .iter()
        .map(|s| s.step_execution_id.clone().unwrap())
        .collect();
    assert_eq!(applied, [first, second]);
}

/// CreateDocument refuses a loop nothing can leave; an aws:branch is followed, here on an
/// earlier step's output.
#[tokio::test]
async fn infinite_loops_are_refused_and_branches_followed() {
    let emu = emulator().await;
    let c = ssm(&emu.endpoint, "alice");
    let endless = serde_json::json!({
        "schemaVersion": "0.3",
        "mainSteps": [
            {"name": "pause", "action": "aws:pause", "inputs": {}},
            {"name": "work", "action": "aws:sleep", "inputs": {"Duration": "PT1S"}, "nextStep": "pause"}
        ]
    });
    let err = c
        .create_document()
        .name("Endless")
        .content(endless.to_string())
        .document_type(DocumentType::Automation)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidDocumentContent"));
    assert!(
        err.message().unwrap().contains("pause -> work -> pause"),
        "{err:?}"
    );

    let yaml = r#"
schemaVersion: '0.3'
parameters:
  Who:
    type: StringList
mainSteps:
  - name: gate
    action: aws:approve
    onFailure: step:decide
    inputs:
      Approvers: "{{ Who }}"
  - name: decide
    action: aws:branch
    inputs:
      Choices:
        - NextStep: approved
          Variable: "{{ gate.ApprovalStatus }}"
          StringEquals: Approved
        - NextStep: rejected
          Not:
            Variable: "{{ gate.ApprovalStatus }}"
            StringEquals: Approved
  - name: approved
    action: aws:sleep
    isEnd: true
    inputs:
      Duration: PT1S
  - name: rejected
    action: aws:sleep
    isEnd: true
    inputs:
      Duration: PT1S
"#;
    c.create_document()
        .name("Branchy")
        .content(yaml)
        .document_type(DocumentType::Automation)
        .document_format(DocumentFormat::Yaml)
        .send()
        .await
        .expect("CreateDocument");
    for (signal, taken, skipped) in [
        (SignalType::Approve, "approved", "rejected"),
        (SignalType::Reject, "rejected", "approved"),
    ] {
        let id = start(&c, "Branchy", &[("Who", &["alice"])], AUTO).await;
        send(&c, &id, signal, &[]).await.expect("decide");
        let exec = get(&c, &id).await;
        let names: Vec<_> = started(&exec).into_iter().map(|(n, _, _)| n).collect();
        assert_eq!(names, ["gate", "decide", taken], "{skipped} skipped");
        assert_eq!(step_status(&exec, "decide"), "Success");
    }
}

#[tokio::test]
async fn describe_executions_filters_by_status_and_document_newest_first_and_pages() {
    use aws_sdk_ssm::types::{AutomationExecutionFilter, AutomationExecutionFilterKey};
    let emu = emulator().await;
    let c = ssm(&emu.endpoint, "alice");
    let first = start(&c, "Signalman-Approve", &[("Approvers", &["alice"])], AUTO).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let second = start(&c, "Signalman-Approve", &[("Approvers", &["alice"])], AUTO).await;
    let approved = start(&c, "Signalman-Approve", &[("Approvers", &["alice"])], AUTO).await;
    send(&c, &approved, SignalType::Approve, &[])
        .await
        .expect("approve");
    let filter = |key: AutomationExecutionFilterKey, value: &str| {
        AutomationExecutionFilter::builder()
            .key(key)
            .values(value)
            .build()
            .unwrap()
    };
    let waiting = c
        .describe_automation_executions()
        .filters(filter(
            AutomationExecutionFilterKey::ExecutionStatus,
            "Waiting",
        ))
        .send()
        .await
        .unwrap();
    let ids: Vec<_> = waiting
        .automation_execution_metadata_list()
        .iter()
        .filter_map(|m| m.automation_execution_id())
        .collect();
    assert_eq!(
        ids,
        [second.as_str(), first.as_str()],
        "newest first, Waiting only"
    );
    let meta = &waiting.automation_execution_metadata_list()[0];
    assert_eq!(meta.document_name(), Some("Signalman-Approve"));
    assert_eq!(meta.current_step_name(), Some("approve"));
    assert_eq!(meta.current_action(), Some("aws:approve"));

    let page1 = c
        .describe_automation_executions()
        .filters(filter(
            AutomationExecutionFilterKey::DocumentNamePrefix,
            "Signalman-Appr",
        ))
        .max_results(2)
        .send()
        .await
        .unwrap();
    assert_eq!(page1.automation_execution_metadata_list().len(), 2);
    let page2 = c
        .describe_automation_executions()
        .filters(filter(
            AutomationExecutionFilterKey::DocumentNamePrefix,
            "Signalman-Appr",
        ))
        .max_results(2)
        .next_token(page1.next_token().expect("a next token"))
        .send()
        .await
        .unwrap();
    assert_eq!(page2.automation_execution_metadata_list().len(), 1);
    assert!(page2.next_token().is_none());

    let unknown = c
        .describe_automation_executions()
        .filters(filter(AutomationExecutionFilterKey::TagKey, "team"))
        .send()
        .await;
    assert_eq!(code_of(unknown), "InvalidFilterKey");
}
