//! The operator's SWF verification on a long history, paged as SWF pages it (the emulator's
//! proxy honours maximumPageSize, reverseOrder and nextPageToken; moto alone returns one page).
use k8s_openapi::jiff::Timestamp;
use signalman::aws::swf::{verify, SwfSignal};
use signalman::delivery::VerifyOutcome;

use crate::common::{env, unique, SwfWorld};

/// Signals sent after the one looked for: with the run's other events, about 2,500 events,
/// so newest-first pages of 1,000 put the target on the third page.
const LATER_SIGNALS: usize = 1_248;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_reads_to_the_third_page_and_stops_early_when_it_should() {
    let env = env();
    let emu = env.private_emulator().await;
    let swf = SwfWorld::new(env, &unique("paging")).await;
    let run = swf.start("wf").await;
    let claimed = Timestamp::now();
    let moto = &swf.client;
    let signal = |name: &'static str, input: String| {
        moto.signal_workflow_execution()
            .domain(&swf.domain)
            .workflow_id("wf")
            .run_id(&run)
            .signal_name(name)
            .input(input)
            .send()
    };
    signal("approve", "target".into()).await.expect("signal");
    for i in 0..LATER_SIGNALS {
        signal("progress", format!("later-{i}"))
            .await
            .expect("signal");
    }
    let through_emulator = signalman_testenv::swf_client_at(&emu.endpoint);
    let target = SwfSignal {
        domain: &swf.domain,
        workflow_id: "wf",
        run_id: &run,
        signal_name: "approve",
        input: Some("target"),
    };
    let calls = || {
        emu.handle
            .counters()
            .swf
            .calls_of("GetWorkflowExecutionHistory")
    };

    let outcome = verify(&through_emulator, target, claimed).await;
    assert!(
        matches!(outcome, VerifyOutcome::DeliveredAt(_)),
        "{outcome:?}"
    );
    assert_eq!(calls(), 3, "found on the third page of 1,000 events");

    // A claim after every event (less the clock skew): the first page is older than the claim,
    // so the search stops there.
    let after_everything = Timestamp::now() + std::time::Duration::from_secs(120);
    let outcome = verify(&through_emulator, target, after_everything).await;
    assert_eq!(outcome, VerifyOutcome::Absent);
    assert_eq!(calls(), 4, "stopped after one page");

    // Absent from a whole history: every page read, then "absent".
    let other = SwfSignal {
        input: Some("never-sent"),
        ..target
    };
    let outcome = verify(&through_emulator, other, claimed).await;
    assert_eq!(outcome, VerifyOutcome::Absent);
    assert_eq!(calls(), 7, "all three pages read");
}
