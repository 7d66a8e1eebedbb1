//! One namespace's flood cannot starve another: with hundreds of AutomationSignals queued in
//! one namespace at SSM's default rate, a new signal in another namespace is sent within
//! seconds. One operator watches both namespaces with one controller per kind, as the chart's
//! default install does (all namespaces; here narrowed to this test's objects by a label).
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_ssm::types::ExecutionMode;
use kube::api::{Api, PostParams};
use signalman::api::{AutomationSignal, AutomationSignalSpec, Phase, SignalType};
use signalman_testenv::{aws_env_at, OPERATOR_ACCESS_KEY};

use crate::common::{unique, World};

const FLOOD: usize = 500;

fn approve(name: &str, execution: &str, label: &str) -> AutomationSignal {
    let mut s = AutomationSignal::new(
        name,
        AutomationSignalSpec {
            automation_execution_id: execution.into(),
            signal_type: SignalType::Approve,
            payload: None,
            region: None,
            retry: None,
            not_after: None,
            allow_duplicate: None,
            ttl_seconds_after_finished: None,
        },
    );
    s.metadata.labels = Some(BTreeMap::from([(
        "signalman-test".to_string(),
        label.to_string(),
    )]));
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_in_one_namespace_does_not_starve_another() {
    let world = World::new("flood").await;
    let quiet_ns = world.env.namespace(&world.client, "quiet").await;
    let label = unique("fair");
    let emu = world.env.private_emulator().await;
    // The flood: approvals of executions that do not exist, each one send at the SSM rate.
    let flood: Api<AutomationSignal> = world.api();
    for i in 0..FLOOD {
        let missing = format!("{:08x}-0000-4000-8000-{:012x}", i, i);
        flood
            .create(
                &PostParams::default(),
                &approve(&format!("f-{i}"), &missing, &label),
            )
            .await
            .expect("creating a flood signal");
    }
    let aws = aws_env_at(&emu.endpoint, OPERATOR_ACCESS_KEY);
    let mut env: Vec<(&str, &str)> = aws.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let selector = format!("signalman-test={label}");
    env.push(("SIGNALMAN_NAMESPACES", ""));
    env.push(("SIGNALMAN_LABEL_SELECTOR", &selector));
    let operator = world.operator("op-fair", &env);
    // Wait until the flood is well under way. Each flood signal is one call: the read of its
    // execution's document (for the policy check), which finds none and ends it.
    let flood_calls = |emu: &signalman_testenv::Emulator| {
        let c = emu.handle.counters().ssm;
        c.calls_of("GetAutomationExecution") + c.calls_of("SendAutomationSignal")
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while flood_calls(&emu) < 10 {
        assert!(
            Instant::now() < deadline,
            "the flood did not start\n{}",
            operator.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let person = signalman_testenv::ssm_client_at(&emu.endpoint, "release-manager");
    let execution = person
        .start_automation_execution()
        .document_name("Signalman-Approve")
        .mode(ExecutionMode::Auto)
        .parameters("Approvers", vec![OPERATOR_ACCESS_KEY.to_string()])
        .send()
        .await
        .expect("StartAutomationExecution")
        .automation_execution_id
        .expect("id");
    let quiet: Api<AutomationSignal> = Api::namespaced(world.client.clone(), &quiet_ns);
    let created = Instant::now();
    quiet
        .create(&PostParams::default(), &approve("y", &execution, &label))
        .await
        .expect("creating the quiet namespace's signal");
    let took = loop {
        let sent = emu
            .handle
            .counters()
            .ssm
            .signals
            .iter()
            .any(|s| s.execution_id == execution);
        if sent {
            break created.elapsed();
        }
        assert!(
            created.elapsed() < Duration::from_secs(60),
            "the quiet namespace's signal was not sent\n{}",
            operator.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let flood_sent = flood_calls(&emu);
    eprintln!("fairness: sent {took:?} after creation, while {flood_sent} of {FLOOD} flood signals had been sent");
    assert!(
        took <= Duration::from_secs(10),
        "the quiet namespace waited {took:?} behind the flood"
    );
    assert!(
        (flood_sent as usize) < FLOOD - 100,
        "the flood was still queued when the quiet signal went ({flood_sent} sent)"
    );
    let y = quiet.get("y").await.expect("y");
    let phase = y.status.and_then(|s| s.phase);
    assert!(
        matches!(phase, Some(Phase::Sending | Phase::Succeeded)),
        "{phase:?}"
    );
}

/// 500 signals of one namespace waiting to be verified (their sends' answers were lost), each
/// verification slow: another namespace's new signal is still sent within seconds. Its
/// reads and the reconcile slots are not held by the other namespace's verifications.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_verifications_does_not_starve_another_namespace() {
    use signalman_testenv::aws_emulator::{FaultConfig, FaultRule, Service};
    let world = World::new("flood-verify").await;
    let quiet_ns = world.env.namespace(&world.client, "quiet-verify").await;
    let label = unique("fair-verify");
    let emu = world.env.private_emulator().await;
    // Every read of an execution takes two seconds.
    emu.handle
        .set_faults(FaultConfig::none().with_rule(
            Service::Ssm,
            FaultRule::latency(2000).on("GetAutomationExecution"),
        ))
        .expect("faults");
    let flood: Api<AutomationSignal> = world.api();
    let since = k8s_openapi::jiff::Timestamp::now();
    for i in 0..FLOOD {
        let missing = format!("{:08x}-0000-4000-8000-{:012x}", i, i);
        let name = format!("v-{i}");
        flood
            .create(&PostParams::default(), &approve(&name, &missing, &label))
            .await
            .expect("creating a flood signal");
        // As an earlier operator left them: an attempt whose answer was lost, to be verified.
        let status = serde_json::json!({"status": {
            "phase": "Verifying",
            "observedGeneration": 1,
            "attempts": 1,
            "firstAttemptTime": since,
            "lastAttemptTime": since,
            "verifySince": since,
        }});
        flood
            .patch_status(
                &name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(status),
            )
            .await
            .expect("a Verifying status");
    }
    let aws = aws_env_at(&emu.endpoint, OPERATOR_ACCESS_KEY);
    let mut env: Vec<(&str, &str)> = aws.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let selector = format!("signalman-test={label}");
    env.push(("SIGNALMAN_NAMESPACES", ""));
    env.push(("SIGNALMAN_LABEL_SELECTOR", &selector));
    let operator = world.operator("op-fair-verify", &env);
    let reads = |emu: &signalman_testenv::Emulator| {
        emu.handle.counters().ssm.calls_of("GetAutomationExecution")
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while reads(&emu) < 5 {
        assert!(
            Instant::now() < deadline,
            "the verifications did not start\n{}",
            operator.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let person = signalman_testenv::ssm_client_at(&emu.endpoint, "release-manager");
    let execution = crate::common::start_automation(
        &person,
        "Signalman-Approve",
        &[("Approvers", &[OPERATOR_ACCESS_KEY])],
    )
    .await;
    let quiet: Api<AutomationSignal> = Api::namespaced(world.client.clone(), &quiet_ns);
    let created = Instant::now();
    quiet
        .create(&PostParams::default(), &approve("y", &execution, &label))
        .await
        .expect("creating the quiet namespace's signal");
    let took = loop {
        let sent = emu
            .handle
            .counters()
            .ssm
            .signals
            .iter()
            .any(|s| s.execution_id == execution);
        if sent {
            break created.elapsed();
        }
        assert!(
            created.elapsed() < Duration::from_secs(90),
            "the quiet namespace's signal was not sent\n{}",
            operator.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let verified = reads(&emu);
    eprintln!(
        "verification fairness: sent {took:?} after creation, {verified} execution reads so far"
    );
    assert!(
        took <= Duration::from_secs(10),
        "the quiet namespace waited {took:?} behind the verifications"
    );
    assert!(
        (verified as usize) < FLOOD - 100,
        "the verifications were still queued when the quiet signal went ({verified} reads)"
    );
}
