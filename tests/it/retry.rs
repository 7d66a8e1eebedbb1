//! `retry.retryNotFound`: a GitOps tool may apply a signal before its workflow starts; with
//! the flag on, "no such execution" is retried and the signal lands, once, when it does start.
use std::time::{Duration, Instant};

use signalman::api::{Phase, RetryPolicy, WorkflowSignal, WorkflowSignalSpec};
use signalman_testenv::OPERATOR_ACCESS_KEY;

use crate::common::{condition, unique, SwfWorld, World};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signal_applied_before_its_workflow_starts_lands_once_with_retry_not_found() {
    let world = World::new("retry-notfound").await;
    let emu = world.env.private_emulator().await;
    let swf = SwfWorld::new(world.env, &unique("early")).await;
    let workflow_id = "starts-later";
    world
        .create(&WorkflowSignal::new(
            "early",
            WorkflowSignalSpec {
                domain: swf.domain.clone(),
                workflow_id: workflow_id.into(),
                run_id: None,
                signal_name: "go".into(),
                input: Some("{\"early\":true}".into()),
                region: None,
                retry: Some(RetryPolicy {
                    max_attempts: Some(20),
                    initial_backoff_seconds: Some(1),
                    max_backoff_seconds: Some(2),
                    retry_not_found: Some(true),
                    max_duration_seconds: None,
                }),
                not_after: None,
                allow_duplicate: None,
                ttl_seconds_after_finished: None,
            },
        ))
        .await;
    let aws = signalman_testenv::aws_env_at(&emu.endpoint, OPERATOR_ACCESS_KEY);
    let aws: Vec<(&str, &str)> = aws.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let _operator = world.operator("op-retry", &aws);

    // Wait until "not found" has been retried at least once, without giving up.
    let api = world.api::<WorkflowSignal>();
    let deadline = Instant::now() + Duration::from_secs(30);
    let waiting = loop {
        let status = api.get("early").await.expect("reading").status;
        if let Some(s) = status.as_ref() {
            assert_ne!(s.phase, Some(Phase::Failed), "gave up early: {s:?}");
            assert_ne!(s.phase, Some(Phase::Succeeded), "no workflow yet: {s:?}");
            if s.attempts >= 2 && s.phase == Some(Phase::Pending) {
                break s.clone();
            }
        }
        assert!(Instant::now() < deadline, "no retry: {status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(waiting.next_attempt_time.is_some(), "{waiting:?}");
    assert_eq!(
        condition(&waiting, "Reconciling").as_deref(),
        Some("True"),
        "{waiting:?}"
    );
    assert_eq!(
        condition(&waiting, "Stalled").as_deref(),
        Some("False"),
        "{waiting:?}"
    );
    assert_eq!(emu.handle.counters().swf.applied_signals, 0);

    let run_id = swf.start(workflow_id).await;
    let status = world
        .wait_done::<WorkflowSignal>("early", Duration::from_secs(30))
        .await;
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    assert_eq!(status.run_id.as_deref(), Some(run_id.as_str()));
    assert!(status.attempts >= 2, "{status:?}");
    assert_eq!(condition(&status, "Ready").as_deref(), Some("True"));
    assert_eq!(
        swf.signals(workflow_id, &run_id).await,
        vec![("go".to_string(), Some("{\"early\":true}".to_string()))],
        "exactly one signal in the run's history"
    );
    let counters = emu.handle.counters();
    assert_eq!(counters.swf.applied_signals, 1, "{:?}", counters.swf);
    let reasons = world
        .wait_event("early", "Delivered", Duration::from_secs(10))
        .await;
    assert!(
        reasons.iter().any(|r| r == "RetryScheduled"),
        "events {reasons:?}"
    );
}
