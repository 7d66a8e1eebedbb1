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
