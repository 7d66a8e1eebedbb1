//! WorkflowSignal → SignalWorkflowExecution, end to end.
use std::time::Duration;

use signalman::api::{Phase, WorkflowSignal, WorkflowSignalSpec};

use crate::common::{condition, unique, SwfWorld, World};

fn signal(
    name: &str,
    domain: &str,
    workflow_id: &str,
    run_id: Option<&str>,
    input: Option<&str>,
) -> WorkflowSignal {
    WorkflowSignal::new(
        name,
        WorkflowSignalSpec {
            domain: domain.into(),
            workflow_id: workflow_id.into(),
            run_id: run_id.map(Into::into),
            signal_name: "approve".into(),
            input: input.map(Into::into),
            region: None,
            retry: None,
            not_after: None,
            allow_duplicate: None,
            ttl_seconds_after_finished: None,
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_with_and_without_run_id_and_input_exactly_once() {
    let world = World::new("swf-deliver").await;
    let swf = SwfWorld::new(world.env, &unique("deliver")).await;
    let mut cases = Vec::new();
    for (i, (pin_run, input)) in [
        (false, None),
        (false, Some("{\"ok\":true}")),
        (true, None),
        (true, Some("x")),
    ]
    .into_iter()
    .enumerate()
    {
        let workflow_id = format!("order-{i}");
        let run_id = swf.start(&workflow_id).await;
        let name = format!("sig-{i}");
        world
            .create(&signal(
                &name,
                &swf.domain,
                &workflow_id,
                pin_run.then_some(run_id.as_str()),
                input,
            ))
            .await;
        cases.push((name, workflow_id, run_id, input));
    }
    let _operator = world.operator("op-a", &[]);
    for (name, workflow_id, run_id, input) in cases {
        let status = world
            .wait_done::<WorkflowSignal>(&name, Duration::from_secs(30))
            .await;
        assert_eq!(status.phase, Some(Phase::Succeeded), "{name}: {status:?}");
        assert_eq!(status.attempts, 1);
        assert_eq!(
            status.run_id.as_deref(),
            Some(run_id.as_str()),
            "the signalled run is recorded"
        );
        assert!(status.sent_time.is_some());
        assert_eq!(condition(&status, "Ready").as_deref(), Some("True"));
        assert_eq!(condition(&status, "Reconciling").as_deref(), Some("False"));
        assert_eq!(condition(&status, "Stalled").as_deref(), Some("False"));
        let events = swf.signals(&workflow_id, &run_id).await;
        assert_eq!(
            events,
            vec![("approve".to_string(), input.map(str::to_string))],
            "{name}: exactly one matching event"
        );
        // Events are posted after the status write: wait for it rather than race it.
        world
            .wait_event(&name, "Delivered", Duration::from_secs(10))
            .await;
    }
}
