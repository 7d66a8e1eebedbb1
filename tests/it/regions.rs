//! Regions are real or refused: a name no AWS partition knows is refused by the API server,
//! and a region outside the operator's `--allowed-regions` fails naming why, while signals to
//! the regions it serves are delivered.
use std::time::Duration;

use kube::api::PostParams;
use signalman::api::{Phase, WorkflowSignal};

use crate::common::{ready_reason, unique, wf_signal, SwfWorld, World};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_regions_are_refused_and_the_allowlist_names_itself() {
    let world = World::new("regions").await;
    let swf = SwfWorld::new(world.env, &unique("regions")).await;
    let run = swf.start("wf-1").await;
    let api = world.api::<WorkflowSignal>();

    for region in ["zz-fake-1", "moon-1", "us-moon-base-1"] {
        let mut made_up = wf_signal("made-up", &swf.domain, "wf-1", None);
        made_up.spec.region = Some(region.into());
        let refused = api
            .create(&PostParams::default(), &made_up)
            .await
            .expect_err(region);
        let text = refused.to_string();
        assert!(
            text.contains("region of an AWS partition"),
            "{region}: {text}"
        );
    }

    let _operator = world.operator("op-regions", &[("SIGNALMAN_ALLOWED_REGIONS", "us-east-1")]);
    let mut elsewhere = wf_signal("elsewhere", &swf.domain, "wf-1", Some("x"));
    elsewhere.spec.region = Some("us-west-2".into());
    world.create(&elsewhere).await;
    world
        .create(&wf_signal("here", &swf.domain, "wf-1", Some("y")))
        .await;
    let refused = world
        .wait_done::<WorkflowSignal>("elsewhere", Duration::from_secs(45))
        .await;
    assert_eq!(refused.phase, Some(Phase::Failed), "{refused:?}");
    assert_eq!(ready_reason(&refused).as_deref(), Some("InvalidSpec"));
    let message = refused.message.clone().unwrap_or_default();
    assert!(
        message.contains("us-west-2") && message.contains("--allowed-regions"),
        "the cause is named: {message}"
    );
    let delivered = world
        .wait_done::<WorkflowSignal>("here", Duration::from_secs(45))
        .await;
    assert_eq!(delivered.phase, Some(Phase::Succeeded), "{delivered:?}");
    assert_eq!(swf.signals("wf-1", &run).await.len(), 1);
}
