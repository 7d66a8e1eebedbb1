//! AutomationSignal → SendAutomationSignal, end to end: every signal type lands exactly once,
//! and the outcomes that end a signal for good (no such execution, not an approver) stop it
//! from ever calling AWS again.
use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_ssm::types::{AutomationExecution, AutomationExecutionStatus, ExecutionMode};
use signalman::api::{AutomationSignal, AutomationSignalSpec, Phase, SignalStatus, SignalType};
use signalman_testenv::{Emulator, OPERATOR_ACCESS_KEY};

use crate::common::{condition, ready_reason, World};

/// The access key a person (not the operator) uses to set executions up.
const PERSON: &str = "release-manager";

/// A test's namespace, its private emulator, an SSM client for set-up, and the operator.
struct SsmWorld {
    world: World,
    emu: Emulator,
    ssm: aws_sdk_ssm::Client,
    _operator: crate::common::Operator,
}

impl SsmWorld {
    async fn new(prefix: &str) -> SsmWorld {
        let world = World::new(prefix).await;
        let emu = world.env.private_emulator().await;
        let ssm = signalman_testenv::ssm_client_at(&emu.endpoint, PERSON);
        let aws = signalman_testenv::aws_env_at(&emu.endpoint, OPERATOR_ACCESS_KEY);
        let aws: Vec<(&str, &str)> = aws.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let operator = world.operator("op-ssm", &aws);
        SsmWorld {
            world,
            emu,
            ssm,
            _operator: operator,
        }
    }

    /// The operator's principal as the emulator sees it.
    fn operator_arn(&self) -> String {
        self.emu.handle.principal_arn(OPERATOR_ACCESS_KEY)
    }

    async fn start(
        &self,
        document: &str,
        params: &[(&str, &[&str])],
        mode: ExecutionMode,
    ) -> String {
        let mut req = self
            .ssm
            .start_automation_execution()
            .document_name(document)
            .mode(mode);
        for (k, v) in params {
            req = req.parameters(*k, v.iter().map(|s| s.to_string()).collect());
        }
        let out = req.send().await.expect("StartAutomationExecution");
        out.automation_execution_id()
            .expect("an execution id")
            .to_string()
    }

    async fn execution(&self, id: &str) -> AutomationExecution {
        self.ssm
            .get_automation_execution()
            .automation_execution_id(id)
            .send()
            .await
            .expect("GetAutomationExecution")
            .automation_execution
            .expect("an execution")
    }

    /// Status of the execution and of its step execution(s) named `step` (the last one).
    async fn step_status(&self, id: &str, step: &str) -> (AutomationExecutionStatus, String) {
        let exec = self.execution(id).await;
        let step = exec
            .step_executions()
            .iter()
            .rev()
            .find(|s| s.step_name() == Some(step))
            .and_then(|s| s.step_status())
            .map(|s| s.as_str().to_string())
            .unwrap_or_default();
        (
            exec.automation_execution_status()
                .cloned()
                .expect("a status"),
            step,
        )
    }

    /// The (signal type, principal) of every SendAutomationSignal the emulator applied to `id`.
    fn applied(&self, id: &str) -> Vec<(String, String)> {
        self.emu
            .handle
            .counters()
            .ssm
            .signals
            .into_iter()
            .filter(|s| s.execution_id == id)
            .map(|s| (s.signal_type, s.principal))
            .collect()
    }

    fn send_calls(&self) -> u64 {
        self.emu
            .handle
            .counters()
            .ssm
            .calls_of("SendAutomationSignal")
    }

    async fn signal(
        &self,
        name: &str,
        id: &str,
        signal_type: SignalType,
        payload: &[(&str, &str)],
    ) {
        self.world
            .create(&automation_signal(name, id, signal_type, payload))
            .await;
    }

    async fn done(&self, name: &str) -> SignalStatus {
        self.world
            .wait_done::<AutomationSignal>(name, Duration::from_secs(45))
            .await
    }

    /// Asserts the signal was delivered: Succeeded after one attempt, Ready, a Delivered event,
    /// and exactly one SendAutomationSignal applied to `id` besides `prior` (those the test
    /// sent itself), by the operator.
    async fn assert_delivered_once(
        &self,
        name: &str,
        id: &str,
        signal_type: SignalType,
        prior: &[(String, String)],
    ) {
        let status = self.done(name).await;
        assert_eq!(status.phase, Some(Phase::Succeeded), "{name}: {status:?}");
        assert_eq!(status.attempts, 1, "{name}: {status:?}");
        assert!(status.sent_time.is_some(), "{name}: {status:?}");
        assert_eq!(condition(&status, "Ready").as_deref(), Some("True"));
        assert_eq!(condition(&status, "Reconciling").as_deref(), Some("False"));
        assert_eq!(condition(&status, "Stalled").as_deref(), Some("False"));
        self.world
            .wait_event(name, "Delivered", Duration::from_secs(10))
            .await;
        let mut expected = prior.to_vec();
        expected.push((signal_type.as_str().to_string(), self.operator_arn()));
        assert_eq!(
            self.applied(id),
            expected,
            "{name}: exactly one {signal_type} applied, by the operator"
        );
    }
}

fn automation_signal(
    name: &str,
    id: &str,
    signal_type: SignalType,
    payload: &[(&str, &str)],
) -> AutomationSignal {
    let payload: BTreeMap<String, Vec<String>> = payload
        .iter()
        .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
        .collect();
    AutomationSignal::new(
        name,
        AutomationSignalSpec {
            automation_execution_id: id.into(),
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

/// Asserts the SendAutomationSignal count stays `calls` for a few seconds.
async fn assert_no_more_sends(sw: &SsmWorld, calls: u64, what: &str) {
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            sw.send_calls(),
            calls,
            "{what}: SendAutomationSignal called again"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_with_comment_and_reject_are_delivered_once() {
    let sw = SsmWorld::new("ssm-approve").await;
    let approvers: &[&str] = &[OPERATOR_ACCESS_KEY];
    let to_approve = sw
        .start(
            "Signalman-Approve",
            &[("Approvers", approvers)],
            ExecutionMode::Auto,
        )
        .await;
    let to_reject = sw
        .start(
            "Signalman-Approve",
            &[("Approvers", approvers)],
            ExecutionMode::Auto,
        )
        .await;
    assert_eq!(
        sw.execution(&to_approve)
            .await
            .automation_execution_status(),
        Some(&AutomationExecutionStatus::Waiting),
        "the execution waits for approval"
    );
    sw.signal(
        "approve",
        &to_approve,
        SignalType::Approve,
        &[("Comment", "Looks good")],
    )
    .await;
    sw.signal("reject", &to_reject, SignalType::Reject, &[])
        .await;

    sw.assert_delivered_once("approve", &to_approve, SignalType::Approve, &[])
        .await;
    let exec = sw.execution(&to_approve).await;
    assert_eq!(
        exec.automation_execution_status(),
        Some(&AutomationExecutionStatus::Success),
        "the execution moved past its approval"
    );
    let approve = exec
        .step_executions()
        .iter()
        .find(|s| s.step_name() == Some("approve"))
        .expect("the approve step");
    let outputs = approve.outputs().expect("approve outputs");
    assert_eq!(
        outputs.get("ApprovalStatus").map(Vec::as_slice),
        Some(&["Approved".to_string()][..])
    );
    let decisions = outputs.get("ApproverDecisions").expect("ApproverDecisions");
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    assert!(
        decisions[0].contains("Looks good") && decisions[0].contains(&sw.operator_arn()),
        "the operator's decision carries the comment: {decisions:?}"
    );

    sw.assert_delivered_once("reject", &to_reject, SignalType::Reject, &[])
        .await;
    assert_eq!(
        sw.step_status(&to_reject, "approve").await,
        (AutomationExecutionStatus::Failed, "Failed".to_string()),
        "a rejection fails the execution"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_and_revoke_are_delivered_once() {
    let sw = SsmWorld::new("ssm-resume-revoke").await;
    let paused = sw.start("Signalman-Pause", &[], ExecutionMode::Auto).await;
    assert_eq!(
        sw.step_status(&paused, "pause").await.0,
        AutomationExecutionStatus::Waiting
    );
    // An access request, approved by a person: its access window then runs until revoked.
    let approvers: &[&str] = &[PERSON];
    let access = sw
        .start(
            "Signalman-AccessRequest",
            &[("Approvers", approvers)],
            ExecutionMode::Auto,
        )
        .await;
    sw.ssm
        .send_automation_signal()
        .automation_execution_id(&access)
        .signal_type(aws_sdk_ssm::types::SignalType::Approve)
        .send()
        .await
        .expect("the person approves the access request");
    assert_eq!(
        sw.step_status(&access, "grantAccess").await,
        (AutomationExecutionStatus::Inprogress, "InProgress".into()),
        "access is granted until revoked"
    );
    let prior = sw.applied(&access);
    assert_eq!(prior.len(), 1, "{prior:?}");

    sw.signal(
        "resume",
        &paused,
        SignalType::Resume,
        &[("StepName", "pause")],
    )
    .await;
    sw.signal("revoke", &access, SignalType::Revoke, &[]).await;

    sw.assert_delivered_once("resume", &paused, SignalType::Resume, &[])
        .await;
    assert_eq!(
        sw.step_status(&paused, "pause").await,
        (AutomationExecutionStatus::Success, "Success".into()),
        "the execution resumed past its pause"
    );
    sw.assert_delivered_once("revoke", &access, SignalType::Revoke, &prior)
        .await;
    let exec = sw.execution(&access).await;
    assert_eq!(
        exec.automation_execution_status(),
        Some(&AutomationExecutionStatus::Success),
        "the access request ended"
    );
    let grant = exec
        .step_executions()
        .iter()
        .find(|s| s.step_name() == Some("grantAccess"))
        .expect("the grantAccess step");
    let outputs = grant.outputs().expect("grantAccess outputs");
    assert_eq!(
        outputs.get("AccessStatus").map(Vec::as_slice),
        Some(&["Revoked".to_string()][..]),
        "{outputs:?}"
    );
    assert_eq!(
        outputs.get("RevokedBy").map(Vec::as_slice),
        Some(&[sw.operator_arn()][..]),
        "{outputs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_step_and_stop_step_are_delivered_once() {
    let sw = SsmWorld::new("ssm-steps").await;
    let to_start = sw
        .start("Signalman-Steps", &[], ExecutionMode::Interactive)
        .await;
    let to_stop = sw
        .start("Signalman-Steps", &[], ExecutionMode::Interactive)
        .await;
    // A person starts the long-running step2 of the second execution; the operator stops it.
    sw.ssm
        .send_automation_signal()
        .automation_execution_id(&to_stop)
        .signal_type(aws_sdk_ssm::types::SignalType::StartStep)
        .payload("StepName", vec!["step2".to_string()])
        .send()
        .await
        .expect("the person starts step2");
    let exec = sw.execution(&to_stop).await;
    let step2 = exec
        .step_executions()
        .iter()
        .find(|s| s.step_name() == Some("step2"))
        .expect("step2 runs");
    assert_eq!(
        step2.step_status().map(|s| s.as_str()),
        Some("InProgress"),
        "{step2:?}"
    );
    let step_execution_id = step2
        .step_execution_id()
        .expect("a step execution id")
        .to_string();
    let prior = sw.applied(&to_stop);

    sw.signal(
        "start-step",
        &to_start,
        SignalType::StartStep,
        &[("StepName", "step1")],
    )
    .await;
    sw.signal(
        "stop-step",
        &to_stop,
        SignalType::StopStep,
        &[("StepExecutionId", &step_execution_id)],
    )
    .await;

    sw.assert_delivered_once("start-step", &to_start, SignalType::StartStep, &[])
        .await;
    assert_eq!(
        sw.step_status(&to_start, "step1").await,
        (AutomationExecutionStatus::Waiting, "Success".into()),
        "step1 ran and the interactive execution waits for the next step"
    );
    sw.assert_delivered_once("stop-step", &to_stop, SignalType::StopStep, &prior)
        .await;
    assert_eq!(
        sw.step_status(&to_stop, "step2").await,
        (AutomationExecutionStatus::Waiting, "Cancelled".into()),
        "step2 was stopped and the interactive execution waits again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_execution_and_non_approver_fail_for_good() {
    let sw = SsmWorld::new("ssm-final").await;
    let unknown = "00000000-0000-4000-8000-000000000000";
    assert_eq!(unknown.len(), 36);
    let approvers: &[&str] = &["someone-else"];
    let not_mine = sw
        .start(
            "Signalman-Approve",
            &[("Approvers", approvers)],
            ExecutionMode::Auto,
        )
        .await;
    sw.signal("unknown", unknown, SignalType::Approve, &[])
        .await;
    sw.signal("not-mine", &not_mine, SignalType::Approve, &[])
        .await;

    for (name, why) in [
        ("unknown", "ExecutionNotFound"),
        ("not-mine", "SignalRejected"),
    ] {
        let status = sw.done(name).await;
        assert_eq!(status.phase, Some(Phase::Failed), "{name}: {status:?}");
        assert_eq!(status.attempts, 1, "{name}: {status:?}");
        assert!(status.sent_time.is_none(), "{name}: {status:?}");
        assert_eq!(condition(&status, "Ready").as_deref(), Some("False"));
        assert_eq!(condition(&status, "Reconciling").as_deref(), Some("False"));
        assert_eq!(
            condition(&status, "Stalled").as_deref(),
            Some("True"),
            "{name}: {status:?}"
        );
        assert_eq!(
            ready_reason(&status).as_deref(),
            Some(why),
            "{name}: {status:?}"
        );
        let stalled = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Stalled")
            .expect("Stalled");
        assert_eq!(stalled.reason, why, "{name}: {status:?}");
        sw.world
            .wait_event(name, "Failed", Duration::from_secs(10))
            .await;
    }
    assert!(sw.applied(&not_mine).is_empty());
    assert!(sw.applied(unknown).is_empty());
    assert_eq!(
        sw.execution(&not_mine).await.automation_execution_status(),
        Some(&AutomationExecutionStatus::Waiting),
        "a refused approval leaves the execution waiting"
    );
    // The unknown execution is found missing when its document is read for the policy
    // check, before any send; the refused approval is one send. None after either.
    assert_eq!(sw.send_calls(), 1);
    assert_no_more_sends(&sw, 1, "after a final failure").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_applied_but_response_lost_is_verified_not_resent() {
    use signalman_testenv::aws_emulator::{FaultConfig, FaultRule, Service};
    let sw = SsmWorld::new("ssm-ambiguous").await;
    // Two approvals needed, so the execution still waits after the operator's: verification
    // must find the operator's own decision, not a settled step.
    let approvers: &[&str] = &[OPERATOR_ACCESS_KEY, PERSON];
    let id = sw
        .start(
            "Signalman-Approve",
            &[("Approvers", approvers), ("MinRequiredApprovals", &["2"])],
            ExecutionMode::Auto,
        )
        .await;
    sw.emu
        .handle
        .set_faults(
            FaultConfig::none().with_rule(
                Service::Ssm,
                FaultRule::drop_after_apply()
                    .on("SendAutomationSignal")
                    .times(1),
            ),
        )
        .expect("faults");
    sw.signal("approve", &id, SignalType::Approve, &[("Comment", "ok")])
        .await;
    let status = sw.done("approve").await;
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    assert_eq!(ready_reason(&status).as_deref(), Some("DeliveryVerified"));
    assert_eq!(
        sw.applied(&id),
        vec![("Approve".to_string(), sw.operator_arn())],
        "applied once"
    );
    assert_eq!(sw.send_calls(), 1, "never sent twice");
    assert_eq!(
        sw.execution(&id).await.automation_execution_status(),
        Some(&AutomationExecutionStatus::Waiting),
        "still waiting for the second approver"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_error_before_applying_is_verified_then_resent_once() {
    use signalman_testenv::aws_emulator::{FaultConfig, FaultRule, Service};
    let sw = SsmWorld::new("ssm-5xx").await;
    let id = sw.start("Signalman-Pause", &[], ExecutionMode::Auto).await;
    sw.emu
        .handle
        .set_faults(
            FaultConfig::none().with_rule(
                Service::Ssm,
                FaultRule::server_error()
                    .on("SendAutomationSignal")
                    .times(1),
            ),
        )
        .expect("faults");
    sw.signal("resume", &id, SignalType::Resume, &[("StepName", "pause")])
        .await;
    let status = sw.done("resume").await;
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    assert_eq!(
        status.attempts, 2,
        "one failed attempt, one delivered: {status:?}"
    );
    assert_eq!(
        sw.applied(&id),
        vec![("Resume".to_string(), sw.operator_arn())],
        "applied once"
    );
    assert_eq!(sw.send_calls(), 2);
    assert!(
        sw.emu
            .handle
            .counters()
            .ssm
            .calls_of("GetAutomationExecution")
            >= 1,
        "verified before resending"
    );
}
