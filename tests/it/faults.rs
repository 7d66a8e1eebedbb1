//! AWS faults seen by the operator: throttling, 5xx, and the ambiguous case (applied, response
//! lost). Each test has an emulator of its own so its faults and counters are its alone.
use std::time::Duration;

use signalman::api::{Phase, WorkflowSignal};
use signalman_testenv::aws_emulator::{FaultConfig, FaultRule, Service, ThrottleRule};
use signalman_testenv::{aws_env_at, Emulator, OPERATOR_ACCESS_KEY};

use crate::common::{ready_reason, unique, wf_signal, SwfWorld, World};

fn aws_env(emulator: &Emulator) -> Vec<(&'static str, String)> {
    aws_env_at(&emulator.endpoint, OPERATOR_ACCESS_KEY)
}

fn as_pairs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_without_spending_attempts_or_duplicating() {
    let world = World::new("throttle").await;
    let emulator = world.env.private_emulator().await;
    emulator
        .handle
        .set_faults(FaultConfig::none().with_throttle(
            Service::Swf,
            ThrottleRule::new("SignalWorkflowExecution", 1.0, 1.0),
        ))
        .expect("faults");
    let swf = SwfWorld::new(world.env, &unique("throttle")).await;
    let run_id = swf.start("wf").await;
    for i in 0..5 {
        world
            .create(&wf_signal(
                &format!("s-{i}"),
                &swf.domain,
                "wf",
                Some(&format!("in-{i}")),
            ))
            .await;
    }
    let env = aws_env(&emulator);
    let _operator = world.operator("op-throttle", &as_pairs(&env));
    for i in 0..5 {
        let status = world
            .wait_done::<WorkflowSignal>(&format!("s-{i}"), Duration::from_secs(60))
            .await;
        assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
        assert_eq!(
            status.attempts, 1,
            "throttled attempts are given back: {status:?}"
        );
    }
    let counters = emulator.handle.counters();
    assert!(
        counters.swf.throttled > 0,
        "the bucket did throttle: {counters:?}"
    );
    let mut inputs: Vec<String> = swf
        .signals("wf", &run_id)
        .await
        .into_iter()
        .filter_map(|(_, i)| i)
        .collect();
    inputs.sort();
    assert_eq!(
        inputs,
        (0..5).map(|i| format!("in-{i}")).collect::<Vec<_>>(),
        "each signal exactly once"
    );
}

/// One signal through one fault rule on SignalWorkflowExecution; returns (status, history).
async fn swf_signal_through(
    rule: FaultRule,
    prefix: &str,
) -> (
    signalman::api::SignalStatus,
    Vec<(String, Option<String>)>,
    Emulator,
) {
    let world = World::new(prefix).await;
    let emulator = world.env.private_emulator().await;
    emulator
        .handle
        .set_faults(FaultConfig::none().with_rule(Service::Swf, rule))
        .expect("faults");
    let swf = SwfWorld::new(world.env, &unique(prefix)).await;
    let run_id = swf.start("wf").await;
    world
        .create(&wf_signal("sig", &swf.domain, "wf", Some("once")))
        .await;
    let env = aws_env(&emulator);
    let operator = world.operator("op-fault", &as_pairs(&env));
    let status = world
        .wait_done::<WorkflowSignal>("sig", Duration::from_secs(60))
        .await;
    assert_eq!(
        status.phase,
        Some(Phase::Succeeded),
        "{status:?}\n{}",
        operator.log_text()
    );
    (status, swf.signals("wf", &run_id).await, emulator)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_but_response_lost_is_verified_not_resent() {
    let (status, history, emulator) = swf_signal_through(
        FaultRule::drop_after_apply()
            .on("SignalWorkflowExecution")
            .times(1),
        "ambiguous",
    )
    .await;
    assert_eq!(ready_reason(&status).as_deref(), Some("DeliveryVerified"));
    assert_eq!(
        history,
        vec![("approve".to_string(), Some("once".to_string()))]
    );
    let counters = emulator.handle.counters();
    assert_eq!(
        counters.swf.calls_of("SignalWorkflowExecution"),
        1,
        "never sent twice: {counters:?}"
    );
    assert!(
        counters.swf.calls_of("GetWorkflowExecutionHistory") >= 1,
        "verified from AWS"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_error_before_applying_is_verified_then_resent_once() {
    let (status, history, emulator) = swf_signal_through(
        FaultRule::server_error()
            .on("SignalWorkflowExecution")
            .times(1),
        "5xx",
    )
    .await;
    assert_eq!(ready_reason(&status).as_deref(), Some("Delivered"));
    assert_eq!(status.attempts, 2);
    assert_eq!(
        history,
        vec![("approve".to_string(), Some("once".to_string()))]
    );
    let counters = emulator.handle.counters();
    assert_eq!(counters.swf.calls_of("SignalWorkflowExecution"), 2);
    assert!(
        counters.swf.calls_of("GetWorkflowExecutionHistory") >= 1,
        "verified before resending"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_execution_fails_for_good_with_no_further_calls() {
    let world = World::new("notfound").await;
    let emulator = world.env.private_emulator().await;
    let swf = SwfWorld::new(world.env, &unique("notfound")).await;
    let run_id = swf.start("wf").await;
    swf.client
        .terminate_workflow_execution()
        .domain(&swf.domain)
        .workflow_id("wf")
        .run_id(&run_id)
        .send()
        .await
        .expect("terminate");
    let mut pinned = wf_signal("closed", &swf.domain, "wf", None);
    pinned.spec.run_id = Some(run_id);
    world.create(&pinned).await;
    world
        .create(&wf_signal(
            "never-started",
            &swf.domain,
            "no-such-workflow",
            None,
        ))
        .await;
    let env = aws_env(&emulator);
    let _operator = world.operator("op-notfound", &as_pairs(&env));
    for name in ["closed", "never-started"] {
        let status = world
            .wait_done::<WorkflowSignal>(name, Duration::from_secs(30))
            .await;
        assert_eq!(status.phase, Some(Phase::Failed), "{name}: {status:?}");
        assert_eq!(ready_reason(&status).as_deref(), Some("ExecutionNotFound"));
        assert_eq!(
            crate::common::condition(&status, "Stalled").as_deref(),
            Some("True")
        );
        assert_eq!(status.attempts, 1);
    }
    let calls = emulator.handle.counters().swf.calls;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        emulator.handle.counters().swf.calls,
        calls,
        "no call after failing for good"
    );
}
