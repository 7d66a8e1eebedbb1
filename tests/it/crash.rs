//! The operator killed (SIGKILL) at each point of the protocol, and during a burst: every
//! signal still lands exactly once. A restart over finished signals costs nothing.
use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::ListParams;
use kube::ResourceExt;
use signalman::api::{Phase, WorkflowSignal};
use signalman_testenv::{aws_env_at, OPERATOR_ACCESS_KEY};

use crate::common::{holder_identity, ready_reason, unique, wf_signal, SwfWorld, World};

/// Kills the operator at `failpoint`, restarts it, and checks the one signal landed once.
async fn crash_at(failpoint: &str, expected_reason: &str) {
    let world = World::new(&format!("crash-{failpoint}")).await;
    let swf = SwfWorld::new(world.env, &unique("crash")).await;
    let run_id = swf.start("wf-1").await;
    world
        .create(&wf_signal("sig", &swf.domain, "wf-1", Some("payload-1")))
        .await;

    let mut operator = world.operator("op-crash", &[("SIGNALMAN_FAILPOINT", failpoint)]);
    assert!(
        operator.wait_exit(Duration::from_secs(30)),
        "the operator should kill itself at {failpoint}"
    );
    let left: WorkflowSignal = world.api::<WorkflowSignal>().get("sig").await.expect("get");
    let left = left.status.expect("a status was written before the crash");
    assert_eq!(
        left.phase,
        Some(Phase::Sending),
        "the crash leaves the claim behind"
    );
    assert_eq!(
        left.claim.as_ref().map(|c| holder_identity(&c.holder)),
        Some("op-crash")
    );
    let sent_before_restart = swf.signals("wf-1", &run_id).await.len();
    assert_eq!(
        sent_before_restart,
        if failpoint == "after-send" { 1 } else { 0 }
    );

    operator.restart_with(&[], &["SIGNALMAN_FAILPOINT"]);
    let status = world
        // The restarted process is another holder: it waits for the old claim to expire.
        .wait_done::<WorkflowSignal>("sig", Duration::from_secs(60))
        .await;
    assert_eq!(
        status.phase,
        Some(Phase::Succeeded),
        "{status:?}\n{}",
        operator.log_text()
    );
    assert_eq!(ready_reason(&status).as_deref(), Some(expected_reason));
    assert_eq!(
        swf.signals("wf-1", &run_id).await,
        vec![("approve".to_string(), Some("payload-1".to_string()))],
        "exactly one signal in the history"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_claim_delivers_once_after_restart() {
    // Nothing was sent: verification finds nothing and the restarted operator sends.
    crash_at("after-claim", "Delivered").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_send_before_record_is_verified_not_resent() {
    crash_at("after-send", "DeliveryVerified").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_with_repeated_kills_delivers_every_signal_exactly_once() {
    const WORKFLOWS: usize = 20;
    const PER_WORKFLOW: usize = 10;
    let world = World::new("burst").await;
    let swf = SwfWorld::new(world.env, &unique("burst")).await;
    let mut runs = Vec::new();
    for w in 0..WORKFLOWS {
        runs.push(swf.start(&format!("wf-{w}")).await);
    }
    for w in 0..WORKFLOWS {
        for i in 0..PER_WORKFLOW {
            let input = format!("{w}-{i}");
            world
                .create(&wf_signal(
                    &format!("s-{w}-{i}"),
                    &swf.domain,
                    &format!("wf-{w}"),
                    Some(&input),
                ))
                .await;
        }
    }
    let api = world.api::<WorkflowSignal>();
    let pending = || async {
        let list = api.list(&ListParams::default()).await.expect("list");
        list.items
            .iter()
            .filter(|s| s.status.as_ref().and_then(|st| st.phase) != Some(Phase::Succeeded))
            .count()
    };
    // Kill (SIGKILL) and restart the operator while the burst is in flight.
    let mut operator = world.operator("op-burst", &[("SIGNALMAN_CONCURRENCY", "8")]);
    let total = WORKFLOWS * PER_WORKFLOW;
    let mut pending_at_kill = Vec::new();
    for kill in 0..5u64 {
        // Kill only once this incarnation has made progress, so every kill lands mid-burst
        // however slow the machine is; then a little later each time.
        let before = pending().await;
        let progress_deadline = std::time::Instant::now() + Duration::from_secs(60);
        while pending().await >= before
            && before > 0
            && std::time::Instant::now() < progress_deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(100 * kill)).await;
        operator.kill();
        pending_at_kill.push(pending().await);
        operator.restart();
    }
    eprintln!("signals not yet delivered at each kill: {pending_at_kill:?}");
    assert!(
        pending_at_kill.iter().any(|&p| p > 0 && p < total),
        "kills should land mid-burst: {pending_at_kill:?}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let list = api.list(&ListParams::default()).await.expect("list");
        let done = list
            .items
            .iter()
            .filter(|s| s.status.as_ref().and_then(|st| st.phase) == Some(Phase::Succeeded))
            .count();
        if done == WORKFLOWS * PER_WORKFLOW {
            break;
        }
        let failed: Vec<String> = list
            .items
            .iter()
            .filter(|s| s.status.as_ref().and_then(|st| st.phase) == Some(Phase::Failed))
            .map(|s| s.name_any())
            .collect();
        assert!(
            failed.is_empty(),
            "failed signals: {failed:?}\n{}",
            operator.log_text()
        );
        assert!(
            std::time::Instant::now() < deadline,
            "only {done} of {} delivered",
            WORKFLOWS * PER_WORKFLOW
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for (w, run_id) in runs.iter().enumerate() {
        let inputs = (0..PER_WORKFLOW).map(|i| format!("{w}-{i}"));
        swf.assert_each_input_once(&format!("wf-{w}"), run_id, inputs)
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_over_finished_signals_makes_no_aws_call_and_no_write() {
    const SIGNALS: usize = 30;
    let world = World::new("restart-idle").await;
    let emulator = world.env.private_emulator().await;
    let aws = aws_env_at(&emulator.endpoint, OPERATOR_ACCESS_KEY);
    let aws: Vec<(&str, &str)> = aws.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let swf = SwfWorld::new(world.env, &unique("idle")).await;
    swf.start("wf").await;
    for i in 0..SIGNALS {
        world
            .create(&wf_signal(
                &format!("s-{i}"),
                &swf.domain,
                "wf",
                Some(&i.to_string()),
            ))
            .await;
    }
    let mut operator = world.operator("op-idle", &aws);
    for i in 0..SIGNALS {
        world
            .wait_done::<WorkflowSignal>(&format!("s-{i}"), Duration::from_secs(60))
            .await;
    }
    operator.kill();
    // Let the last status writes' watch events settle, then take the baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let versions = |list: Vec<WorkflowSignal>| -> BTreeMap<String, String> {
        list.into_iter()
            .map(|s| (s.name_any(), s.resource_version().unwrap_or_default()))
            .collect()
    };
    let api = world.api::<WorkflowSignal>();
    let before = versions(api.list(&ListParams::default()).await.expect("list").items);
    emulator.handle.reset();

    operator.restart();
    // Long enough for the restarted operator to list, reconcile every object and go idle.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after = versions(api.list(&ListParams::default()).await.expect("list").items);
    let counters = emulator.handle.counters();
    assert!(
        operator.log_text().contains("signalman starting"),
        "the operator restarted"
    );
    assert_eq!(before, after, "no status write after the restart");
    assert!(
        counters.swf.calls.is_empty() && counters.ssm.calls.is_empty(),
        "no AWS call after the restart: {counters:?}"
    );
}
