//! Evidence before "delivered": a signal ends Succeeded only on evidence that is provably its
//! own. Runbooks with several approval steps and loops, one AWS identity for many namespaces,
//! objects deleted while their send's outcome is unknown, and an AWS-side check that fails.
use std::time::{Duration, Instant};

use signalman::api::{AutomationSignal, Phase, SignalStatus, SignalType, WorkflowSignal};
use signalman_testenv::aws_emulator::{FaultConfig, FaultRule, Service};
use signalman_testenv::{aws_env_at, Emulator, OPERATOR_ACCESS_KEY};

use crate::common::{
    am_signal, delete_and_wait, forget_receipts, ready_reason, start_automation, unique, wf_signal,
    Operator, SwfWorld, World,
};

/// A person's access key, for set-up calls.
const PERSON: &str = "release-manager";

/// A namespace, a private emulator and an SSM client for set-up.
struct Setup {
    world: World,
    emu: Emulator,
    ssm: aws_sdk_ssm::Client,
}

impl Setup {
    async fn new(prefix: &str) -> Setup {
        let world = World::new(prefix).await;
        let emu = world.env.private_emulator().await;
        let ssm = signalman_testenv::ssm_client_at(&emu.endpoint, PERSON);
        Setup { world, emu, ssm }
    }

    /// An operator on this emulator with the static operator keys, and `extra`.
    fn operator(&self, identity: &str, extra: &[(&str, &str)]) -> Operator {
        let aws = aws_env_at(&self.emu.endpoint, OPERATOR_ACCESS_KEY);
        let mut env: Vec<(&str, &str)> = aws.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.extend_from_slice(extra);
        self.world.operator(identity, &env)
    }

    /// The next `n` calls of `operation` of `service` fail as `rule` says.
    fn fault(&self, service: Service, rule: FaultRule) {
        self.emu
            .handle
            .set_faults(FaultConfig::none().with_rule(service, rule))
            .expect("faults");
    }

    /// (signal type, principal) of every signal the emulator applied to `id`.
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

    fn execution(&self, id: &str) -> serde_json::Value {
        self.emu
            .handle
            .automation_execution(id)
            .expect("the execution")
    }

    /// Status of the last execution of step `name` of execution `id`.
    fn step_status(&self, id: &str, name: &str) -> String {
        self.execution(id)["StepExecutions"]
            .as_array()
            .into_iter()
            .flatten()
            .rev()
            .find(|s| s["StepName"] == name)
            .and_then(|s| s["StepStatus"].as_str())
            .unwrap_or_default()
            .to_string()
    }

    async fn wait_step(&self, id: &str, name: &str, status: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.step_status(id, name) != status {
            assert!(
                Instant::now() < deadline,
                "step {name} of {id} never {status}: {}",
                self.execution(id)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn done_am(&self, name: &str) -> SignalStatus {
        self.world
            .wait_done::<AutomationSignal>(name, Duration::from_secs(60))
            .await
    }
}

/// A runbook approved in staging, then in prod, both by the operator. The prod Approve is
/// answered 503 without being applied: the staging decision must not pass for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_prod_approve_is_not_verified_by_the_staging_decision() {
    let s = Setup::new("two-steps").await;
    let _operator = s.operator("op-steps", &[]);
    let both: &[&str] = &[OPERATOR_ACCESS_KEY];
    let id = start_automation(
        &s.ssm,
        "Signalman-TwoApprovals",
        &[("StagingApprovers", both), ("ProdApprovers", both)],
    )
    .await;
    s.world
        .create(&am_signal(
            "staging",
            &id,
            SignalType::Approve,
            &[("Comment", "staging ok")],
        ))
        .await;
    let staging = s.done_am("staging").await;
    assert_eq!(
        ready_reason(&staging).as_deref(),
        Some("Delivered"),
        "{staging:?}"
    );
    s.wait_step(&id, "approveProd", "Waiting").await;

    s.fault(
        Service::Ssm,
        FaultRule::service_unavailable()
            .on("SendAutomationSignal")
            .times(1),
    );
    s.world
        .create(&am_signal(
            "prod",
            &id,
            SignalType::Approve,
            &[("Comment", "prod ok")],
        ))
        .await;
    let prod = s.done_am("prod").await;
    eprintln!("prod: {prod:?}");
    assert_eq!(prod.phase, Some(Phase::Succeeded), "{prod:?}");
    assert_eq!(
        ready_reason(&prod).as_deref(),
        Some("Delivered"),
        "{prod:?}"
    );
    assert_eq!(
        prod.attempts, 2,
        "the 503, then the send that landed: {prod:?}"
    );
    assert_eq!(s.applied(&id).len(), 2, "one decision per step");
    assert_eq!(s.step_status(&id, "approveProd"), "Success");
}

/// The same runbook after a rebuilt cluster (receipts gone, a new book): the prod Approve is
/// sent, not taken as already delivered from the staging decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_rebuild_the_prod_approve_is_sent_not_taken_for_the_staging_one() {
    let s = Setup::new("two-steps-rebuilt").await;
    let mut operator = s.operator("op-steps-rebuilt", &[]);
    let both: &[&str] = &[OPERATOR_ACCESS_KEY];
    let id = start_automation(
        &s.ssm,
        "Signalman-TwoApprovals",
        &[("StagingApprovers", both), ("ProdApprovers", both)],
    )
    .await;
    s.world
        .create(&am_signal("staging", &id, SignalType::Approve, &[]))
        .await;
    let staging = s.done_am("staging").await;
    assert_eq!(staging.phase, Some(Phase::Succeeded), "{staging:?}");
    s.wait_step(&id, "approveProd", "Waiting").await;

    operator.kill();
    forget_receipts(&s.world).await;
    operator.restart();
    s.world
        .create(&am_signal("prod", &id, SignalType::Approve, &[]))
        .await;
    let prod = s.done_am("prod").await;
    eprintln!("prod after rebuild: {prod:?}");
    assert_eq!(
        ready_reason(&prod).as_deref(),
        Some("Delivered"),
        "{prod:?}"
    );
    assert_eq!(prod.attempts, 1, "{prod:?}");
    assert_eq!(s.step_status(&id, "approveProd"), "Success");
}

/// No roleArn in the policies: namespaces X and Y sign as the same principal. Y's Approve,
/// answered 503 and not applied, must not be verified by X's decision on the same step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_identity_for_two_namespaces_a_decision_is_only_its_own_signals() {
    let x = Setup::new("one-id-x").await;
    let y = World::new("one-id-y").await;
    let watched = format!("{},{}", x.world.ns, y.ns);
    let _operator = x.operator("op-one-id", &[("SIGNALMAN_NAMESPACES", watched.as_str())]);
    let id = start_automation(
        &x.ssm,
        "Signalman-Approve",
        &[("Approvers", &[OPERATOR_ACCESS_KEY])],
    )
    .await;
    x.world
        .create(&am_signal("approve", &id, SignalType::Approve, &[]))
        .await;
    let first = x.done_am("approve").await;
    assert_eq!(
        ready_reason(&first).as_deref(),
        Some("Delivered"),
        "{first:?}"
    );

    x.fault(
        Service::Ssm,
        FaultRule::service_unavailable()
            .on("SendAutomationSignal")
            .times(1),
    );
    y.create(&am_signal("approve", &id, SignalType::Approve, &[]))
        .await;
    let theirs = y
        .wait_done::<AutomationSignal>("approve", Duration::from_secs(60))
        .await;
    eprintln!("namespace y: {theirs:?}");
    assert_ne!(
        ready_reason(&theirs).as_deref(),
        Some("DeliveryVerified"),
        "namespace y's signal never landed: {theirs:?}"
    );
    assert_eq!(theirs.phase, Some(Phase::Failed), "{theirs:?}");
    assert_eq!(
        x.applied(&id).len(),
        1,
        "only namespace x's approval landed"
    );
}

/// An object deleted while its send's outcome is unknown (applied, answer lost), then applied
/// again: the new object verifies first and finds the signal, instead of sending it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_while_verifying_and_applied_again_is_verified_not_resent() {
    let s = Setup::new("recreate-verifying").await;
    let swf = SwfWorld::new(s.world.env, &unique("recreate-verifying")).await;
    // A long settle: the object is still Verifying when it is deleted.
    let _operator = s.operator("op-recreate", &[("SIGNALMAN_VERIFY_SETTLE_MS", "8000")]);
    // As in a cluster that has kept receipts for a while: the receipt book is older than the
    // run by more than the clock skew allowed, so no AWS-side check covers for a missing
    // record of the attempt.
    swf.start("wf-warm-up").await;
    s.world
        .create(&wf_signal("warm-up", &swf.domain, "wf-warm-up", None))
        .await;
    s.world
        .wait_done::<WorkflowSignal>("warm-up", Duration::from_secs(45))
        .await;
    tokio::time::sleep(Duration::from_secs(62)).await;
    let run_id = swf.start("wf-1").await;
    s.fault(
        Service::Swf,
        FaultRule::drop_after_apply()
            .on("SignalWorkflowExecution")
            .times(1),
    );
    let signal = wf_signal("sig", &swf.domain, "wf-1", Some("once"));
    s.world.create(&signal).await;
    s.world
        .wait_phase::<WorkflowSignal>("sig", Phase::Verifying)
        .await;
    let api = s.world.api::<WorkflowSignal>();
    delete_and_wait(&api, "sig").await;
    s.world.create(&signal).await;
    let status = s
        .world
        .wait_done::<WorkflowSignal>("sig", Duration::from_secs(60))
        .await;
    eprintln!("recreated: {status:?}");
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    assert_eq!(
        ready_reason(&status).as_deref(),
        Some("DeliveryVerified"),
        "{status:?}"
    );
    assert_eq!(
        status.attempts, 0,
        "the new object sent nothing: {status:?}"
    );
    assert_eq!(
        swf.signals("wf-1", &run_id).await,
        vec![("approve".to_string(), Some("once".to_string()))],
        "exactly one signal in the history"
    );
}

/// A rebuilt cluster (signals and receipts gone) and the AWS-side check before the first send
/// failing once: the check is made again, never skipped, and finds the earlier delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_check_before_the_first_send_is_made_again_not_skipped() {
    let s = Setup::new("check-fails").await;
    let swf = SwfWorld::new(s.world.env, &unique("check-fails")).await;
    let run_id = swf.start("wf-1").await;
    let mut operator = s.operator("op-check", &[]);
    let signal = wf_signal("sig", &swf.domain, "wf-1", Some("once"));
    s.world.create(&signal).await;
    let first = s
        .world
        .wait_done::<WorkflowSignal>("sig", Duration::from_secs(45))
        .await;
    assert_eq!(
        ready_reason(&first).as_deref(),
        Some("Delivered"),
        "{first:?}"
    );

    operator.kill();
    delete_and_wait(&s.world.api::<WorkflowSignal>(), "sig").await;
    forget_receipts(&s.world).await;
    // One failed history read, as the SDK sees it (its standard retries make three attempts).
    s.fault(
        Service::Swf,
        FaultRule::service_unavailable()
            .on("GetWorkflowExecutionHistory")
            .times(3),
    );
    operator.restart();
    s.world.create(&signal).await;
    let status = s
        .world
        .wait_done::<WorkflowSignal>("sig", Duration::from_secs(60))
        .await;
    eprintln!("after the rebuild: {status:?}");
    assert_eq!(
        ready_reason(&status).as_deref(),
        Some("AlreadyDelivered"),
        "{status:?}"
    );
    assert_eq!(
        swf.signals("wf-1", &run_id).await.len(),
        1,
        "exactly one signal in the history"
    );
}

/// A looping runbook: round 1's pause is resumed (applied, answer lost) and by the time the
/// operator verifies, round 2's pause waits. Round 2 is not round 1's evidence of absence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_in_a_looping_runbook_is_judged_on_its_own_round() {
    let s = Setup::new("loop-resume").await;
    // Verification only after round 2 has paused (the loop's work step sleeps a second).
    let _operator = s.operator("op-loop", &[("SIGNALMAN_VERIFY_SETTLE_MS", "5000")]);
    let id = start_automation(&s.ssm, "Signalman-PauseLoop", &[]).await;
    s.wait_step(&id, "pause", "Waiting").await;
    s.fault(
        Service::Ssm,
        FaultRule::drop_after_apply()
            .on("SendAutomationSignal")
            .times(1),
    );
    s.world
        .create(&am_signal(
            "resume",
            &id,
            SignalType::Resume,
            &[("StepName", "pause")],
        ))
        .await;
    let status = s.done_am("resume").await;
    eprintln!("resume: {status:?}");
    assert_eq!(
        ready_reason(&status).as_deref(),
        Some("DeliveryVerified"),
        "{status:?}"
    );
    assert_eq!(
        s.applied(&id).len(),
        1,
        "round 2 was never resumed: {:?}",
        s.applied(&id)
    );
    assert_eq!(
        s.step_status(&id, "pause"),
        "Waiting",
        "round 2 still waits"
    );
}

/// Someone labels the object while its send is in flight: the outcome's write conflicts, and
/// the outcome is still recorded as sent once (not verified against a lagging history, which
/// would not show it yet, and sent again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_written_during_the_send_does_not_lose_the_outcome() {
    use signalman_testenv::aws_emulator::{LagConfig, LagRule};
    let s = Setup::new("label-mid-send").await;
    let swf = SwfWorld::new(s.world.env, &unique("label-mid-send")).await;
    let run_id = swf.start("wf-1").await;
    let _operator = s.operator("op-label", &[]);
    s.fault(
        Service::Swf,
        FaultRule::latency(3000)
            .on("SignalWorkflowExecution")
            .times(1),
    );
    // The history shows a signal only 20 s after it was sent.
    s.emu
        .handle
        .set_lag(LagConfig::none().with_rule(Service::Swf, LagRule::fixed(20_000)))
        .expect("lag");
    s.world
        .create(&wf_signal("sig", &swf.domain, "wf-1", Some("once")))
        .await;
    s.world
        .wait_phase::<WorkflowSignal>("sig", Phase::Sending)
        .await;
    let api = s.world.api::<WorkflowSignal>();
    api.patch(
        "sig",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({"metadata": {"labels": {"team": "payments"}}})),
    )
    .await
    .expect("labelling");
    let status = s
        .world
        .wait_done::<WorkflowSignal>("sig", Duration::from_secs(60))
        .await;
    eprintln!("labelled mid-send: {status:?}");
    assert_eq!(
        ready_reason(&status).as_deref(),
        Some("Delivered"),
        "{status:?}"
    );
    s.emu.handle.clear_lag();
    assert_eq!(
        swf.signals("wf-1", &run_id).await.len(),
        1,
        "exactly one signal in the history"
    );
}

/// Two processes given the same name (a pod name reused, `--identity` given twice), both
/// sending (no leader election, or a Lease that names them alike): their claims must still
/// keep each signal to one send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_with_one_name_never_share_a_claim() {
    let s = Setup::new("one-name").await;
    let swf = SwfWorld::new(s.world.env, &unique("one-name")).await;
    let run_id = swf.start("wf-1").await;
    // Slow sends keep claims live while the other process looks at the same objects.
    s.fault(
        Service::Swf,
        FaultRule::latency(4000).on("SignalWorkflowExecution"),
    );
    let alone = [("SIGNALMAN_LEADER_ELECTION", "false")];
    let _a = s.operator("op-same", &alone);
    let _b = s.operator("op-same", &alone);
    let inputs: Vec<String> = (0..12).map(|i| format!("input-{i}")).collect();
    for (i, input) in inputs.iter().enumerate() {
        s.world
            .create(&wf_signal(
                &format!("s-{i}"),
                &swf.domain,
                "wf-1",
                Some(input),
            ))
            .await;
    }
    for i in 0..inputs.len() {
        let status = s
            .world
            .wait_done::<WorkflowSignal>(&format!("s-{i}"), Duration::from_secs(90))
            .await;
        assert_eq!(status.phase, Some(Phase::Succeeded), "s-{i}: {status:?}");
        // A second attempt means one process took the other's live claim for its own.
        assert_eq!(status.attempts, 1, "s-{i}: {status:?}");
    }
    swf.assert_each_input_once("wf-1", &run_id, inputs.into_iter())
        .await;
}

/// A signal without runId reached run 1 of a workflow; the workflow went on in run 2 (a
/// continue-as-new, or a workflowId that recurs), then the cluster was rebuilt. The signal
/// applied again is found in run 1's history, not sent to run 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_rebuild_a_signal_without_run_id_is_found_in_an_earlier_run() {
    let s = Setup::new("earlier-run").await;
    let swf = SwfWorld::new(s.world.env, &unique("earlier-run")).await;
    let run1 = swf.start("wf-1").await;
    let mut operator = s.operator("op-earlier-run", &[]);
    let signal = wf_signal("sig", &swf.domain, "wf-1", Some("once"));
    s.world.create(&signal).await;
    let first = s
        .world
        .wait_done::<WorkflowSignal>("sig", Duration::from_secs(45))
        .await;
    assert_eq!(first.run_id.as_deref(), Some(run1.as_str()), "{first:?}");
    swf.client
        .terminate_workflow_execution()
        .domain(&swf.domain)
        .workflow_id("wf-1")
        .run_id(&run1)
        .send()
        .await
        .expect("TerminateWorkflowExecution");
    let run2 = swf.start("wf-1").await;

    operator.kill();
    delete_and_wait(&s.world.api::<WorkflowSignal>(), "sig").await;
    forget_receipts(&s.world).await;
    operator.restart();
    s.world.create(&signal).await;
    let status = s
        .world
        .wait_done::<WorkflowSignal>("sig", Duration::from_secs(60))
        .await;
    eprintln!("after the rebuild: {status:?}");
    assert_eq!(
        ready_reason(&status).as_deref(),
        Some("AlreadyDelivered"),
        "{status:?}"
    );
    assert_eq!(swf.signals("wf-1", &run1).await.len(), 1);
    assert!(
        swf.signals("wf-1", &run2).await.is_empty(),
        "run 2 was never signalled"
    );
}

/// A process that stalls between its claim and its send (longer than the claim lives) must not
/// send when it wakes: meanwhile another replica took the claim over, found nothing in AWS and
/// sent. Two replicas without leader election, the first stalling once for 25 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_wakes_after_its_claim_expired_does_not_send() {
    let s = Setup::new("claim-window").await;
    let swf = SwfWorld::new(s.world.env, &unique("claim-window")).await;
    let run_id = swf.start("wf-1").await;
    let stalling = s.operator(
        "op-stalls",
        &[
            ("SIGNALMAN_LEADER_ELECTION", "false"),
            ("SIGNALMAN_FAILPOINT", "after-claim:pause=25"),
        ],
    );
    s.world
        .create(&wf_signal("sig", &swf.domain, "wf-1", Some("once")))
        .await;
    s.world
        .wait_phase::<WorkflowSignal>("sig", Phase::Sending)
        .await;
    // The other replica starts once the first has claimed and stalled.
    let _other = s.operator("op-other", &[("SIGNALMAN_LEADER_ELECTION", "false")]);
    let status = s
        .world
        .wait_done::<WorkflowSignal>("sig", Duration::from_secs(90))
        .await;
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    // Past the stall: the stalled process has woken and decided.
    let deadline = Instant::now() + Duration::from_secs(40);
    while !stalling
        .log_text()
        .contains("claim too close to its deadline; not sending")
    {
        assert!(
            Instant::now() < deadline,
            "the stalled process never refused its late send\n{}",
            stalling.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        swf.signals("wf-1", &run_id).await,
        vec![("approve".to_string(), Some("once".to_string()))],
        "exactly one signal in the history"
    );
}
