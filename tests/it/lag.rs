//! AWS shows a write only after a while: reads right after a send can still show the state
//! before it. Verification must not take such a read as "absent" and send again: it reads once
//! more after `--verify-recheck-ms`. Here the emulator lags by more than the settle time.
use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_ssm::types::ExecutionMode;
use signalman::api::{AutomationSignal, AutomationSignalSpec, Phase, SignalType, WorkflowSignal};
use signalman_testenv::aws_emulator::{FaultConfig, FaultRule, LagConfig, LagRule, Service};
use signalman_testenv::{aws_env_at, OPERATOR_ACCESS_KEY};

use crate::common::{ready_reason, unique, wf_signal, SwfWorld, World};

/// How long the emulator hides a write from readers: well above the tests' settle time
/// (300 ms) and below the recheck wait.
const LAG_MS: u64 = 4_000;
const RECHECK_MS: &str = "8000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_send_under_lag_is_verified_not_resent() {
    let world = World::new("lag-kill").await;
    let emu = world.env.private_emulator().await;
    emu.handle
        .set_lag(LagConfig::none().with_rule(Service::Swf, LagRule::fixed(LAG_MS)))
        .expect("lag");
    let swf = SwfWorld::new(world.env, &unique("lag")).await;
    let run = swf.start("wf").await;
    world
        .create(&wf_signal("sig", &swf.domain, "wf", Some("once")))
        .await;
    let aws = aws_env_at(&emu.endpoint, OPERATOR_ACCESS_KEY);
    let mut env: Vec<(&str, &str)> = aws.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("SIGNALMAN_VERIFY_RECHECK_MS", RECHECK_MS));
    env.push(("SIGNALMAN_FAILPOINT", "after-send"));
    let mut operator = world.operator("op-lag", &env);
    assert!(
        operator.wait_exit(Duration::from_secs(30)),
        "killed at the failpoint"
    );
    // Restarted at once: the first verification runs while the signal is still hidden.
    operator.restart_with(&[], &["SIGNALMAN_FAILPOINT"]);
    let status = world
        .wait_done::<WorkflowSignal>("sig", Duration::from_secs(60))
        .await;
    assert_eq!(
        (status.phase, ready_reason(&status).as_deref()),
        (Some(Phase::Succeeded), Some("DeliveryVerified")),
        "{status:?}\n{}",
        operator.log_text()
    );
    assert_eq!(
        emu.handle
            .counters()
            .swf
            .calls_of("SignalWorkflowExecution"),
        1,
        "never sent twice"
    );
    assert_eq!(
        swf.signals("wf", &run).await,
        vec![("approve".to_string(), Some("once".to_string()))]
    );
    assert!(
        operator.log_text().contains("phase=Some(Verifying)"),
        "the signal was verified"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_with_lost_response_under_lag_is_verified_not_resent() {
    let world = World::new("lag-drop").await;
    let emu = world.env.private_emulator().await;
    emu.handle
        .set_lag(LagConfig::none().with_rule(Service::Ssm, LagRule::fixed(LAG_MS)))
        .expect("lag");
    let person = signalman_testenv::ssm_client_at(&emu.endpoint, "release-manager");
    // Two approvals needed: only the operator's own decision can prove the delivery.
    let id = person
        .start_automation_execution()
        .document_name("Signalman-Approve")
        .mode(ExecutionMode::Auto)
        .parameters(
            "Approvers",
            vec![
                OPERATOR_ACCESS_KEY.to_string(),
                "release-manager".to_string(),
            ],
        )
        .parameters("MinRequiredApprovals", vec!["2".to_string()])
        .send()
        .await
        .expect("StartAutomationExecution")
        .automation_execution_id
        .expect("id");
    emu.handle
        .set_faults(
            FaultConfig::none().with_rule(
                Service::Ssm,
                FaultRule::drop_after_apply()
                    .on("SendAutomationSignal")
                    .times(1),
            ),
        )
        .expect("faults");
    world
        .create(&AutomationSignal::new(
            "approve",
            AutomationSignalSpec {
                automation_execution_id: id.clone(),
                signal_type: SignalType::Approve,
                payload: Some(BTreeMap::from([(
                    "Comment".to_string(),
                    vec!["ok".to_string()],
                )])),
                region: None,
                retry: None,
                not_after: None,
                allow_duplicate: None,
                ttl_seconds_after_finished: None,
            },
        ))
        .await;
    let aws = aws_env_at(&emu.endpoint, OPERATOR_ACCESS_KEY);
    let mut env: Vec<(&str, &str)> = aws.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("SIGNALMAN_VERIFY_RECHECK_MS", RECHECK_MS));
    let operator = world.operator("op-lag", &env);
    let status = world
        .wait_done::<AutomationSignal>("approve", Duration::from_secs(60))
        .await;
    assert_eq!(
        (status.phase, ready_reason(&status).as_deref()),
        (Some(Phase::Succeeded), Some("DeliveryVerified")),
        "{status:?}\n{}",
        operator.log_text()
    );
    let counters = emu.handle.counters();
    assert_eq!(
        counters.ssm.calls_of("SendAutomationSignal"),
        1,
        "never sent twice"
    );
    assert_eq!(
        counters
            .ssm
            .signals
            .iter()
            .filter(|s| s.execution_id == id)
            .count(),
        1
    );
}
