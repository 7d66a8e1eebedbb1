//! Each fault mode as the real SDK client sees it, with SDK retries disabled.
mod common;

use std::time::{Duration, Instant};

use aws_emulator::{FaultConfig, FaultKind, FaultRule, Service, ThrottleRule};
use aws_sdk_ssm::error::SdkError;
use aws_sdk_ssm::types::{ExecutionMode, SignalType};
use common::*;

async fn waiting_execution(c: &aws_sdk_ssm::Client, approver: &str) -> String {
    start(
        c,
        "Signalman-Approve",
        &[("Approvers", &[approver])],
        ExecutionMode::Auto,
    )
    .await
}

#[tokio::test]
async fn throttling_after_the_bucket_empties_then_success_after_refill() {
    let emu = emulator().await;
    let c = ssm(&emu.endpoint, "alice");
    let id = waiting_execution(&c, "alice").await;
    emu.handle
        .set_faults(
            FaultConfig::none()
                .with_throttle(
                    Service::Ssm,
                    ThrottleRule::new("GetAutomationExecution", 2.0, 0.5),
                )
                .with_throttle(
                    Service::Ssm,
                    ThrottleRule::new("SendAutomationSignal", 0.0, 0.0),
                ),
        )
        .unwrap();

    // Two tokens, refilled at one per two seconds: the bucket runs dry within a few calls
    // however slow the machine is.
    let mut calls: u64 = 0;
    let throttled = loop {
        calls += 1;
        match c
            .get_automation_execution()
            .automation_execution_id(&id)
            .send()
            .await
        {
            Ok(_) => assert!(calls <= 6, "never throttled"),
            Err(e) => break e,
        }
    };
    assert!(
        calls >= 3,
        "throttled after {calls} calls with two tokens in the bucket"
    );
    assert_eq!(code_of::<(), _, _>(Err(throttled)), "ThrottlingException");
    // A throttled signal is not applied.
    assert_eq!(
        code_of(send(&c, &id, SignalType::Approve, &[]).await),
        "ThrottlingException"
    );

    tokio::time::sleep(Duration::from_millis(2200)).await;
    let exec = get(&c, &id).await;
    assert_eq!(status(&exec), "Waiting");

    let counters = emu.handle.counters();
    assert_eq!(counters.ssm.throttled, 2);
    assert_eq!(counters.ssm.applied_signals, 0);
    assert_eq!(counters.ssm.calls_of("GetAutomationExecution"), calls + 1);
    assert_eq!(counters.ssm.calls_of("SendAutomationSignal"), 1);
}

#[tokio::test]
async fn the_aws_quota_preset_throttles_start_automation_execution_at_one_per_second() {
    let emu = emulator().await;
    let c = ssm(&emu.endpoint, "alice");
    emu.handle.set_faults(FaultConfig::aws_quotas()).unwrap();
    let start_one = || {
        c.start_automation_execution()
            .document_name("Signalman-Approve")
            .parameters("Approvers", vec!["alice".into()])
            .send()
    };
    start_one().await.expect("the bucket's one token");
    let mut attempts = 0;
    let throttled = loop {
        attempts += 1;
        match start_one().await {
            Ok(_) => assert!(attempts < 5, "1 TPS never throttled"),
            Err(e) => break e,
        }
    };
    assert_eq!(code_of::<(), _, _>(Err(throttled)), "ThrottlingException");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    start_one().await.expect("refilled after a second");
    assert!(emu.handle.counters().ssm.throttled >= 1);
}

#[tokio::test]
async fn server_errors_are_not_applied() {
    let emu = emulator().await;
    let c = ssm(&emu.endpoint, "alice");
    let id = waiting_execution(&c, "alice").await;
    emu.handle
        .set_faults(
            FaultConfig::none()
                .with_rule(
                    Service::Ssm,
                    FaultRule::server_error()
                        .on("SendAutomationSignal")
                        .times(1),
                )
                .with_rule(
                    Service::Ssm,
                    FaultRule::service_unavailable()
                        .on("SendAutomationSignal")
                        .times(1),
                ),
        )
        .unwrap();

    let err = send(&c, &id, SignalType::Approve, &[]).await.unwrap_err();
    match &err {
        SdkError::ServiceError(e) => assert_eq!(e.raw().status().as_u16(), 500),
        other => panic!("expected a service error, got {other:?}"),
    }
    assert_eq!(
        aws_sdk_ssm::error::ProvideErrorMetadata::code(&err),
        Some("InternalServerError")
    );
    let err = send(&c, &id, SignalType::Approve, &[]).await.unwrap_err();
    match &err {
        SdkError::ServiceError(e) => assert_eq!(e.raw().status().as_u16(), 503),
        other => panic!("expected a service error, got {other:?}"),
    }

    let counters = emu.handle.counters();
    assert_eq!(counters.ssm.applied_signals, 0);
    assert_eq!(counters.ssm.faults_of(FaultKind::ServerError), 1);
    assert_eq!(counters.ssm.faults_of(FaultKind::ServiceUnavailable), 1);
    assert_eq!(status(&get(&c, &id).await), "Waiting");
    // Both rules are spent; GET /_emu/faults shows count 0 left.
    assert!(emu
        .handle
        .faults()
        .ssm
        .rules
        .iter()
        .all(|r| r.count == Some(0)));
    send(&c, &id, SignalType::Approve, &[])
        .await
        .expect("the third call goes through");
    assert_eq!(emu.handle.counters().ssm.applied_signals, 1);
}

#[tokio::test]
async fn drop_after_apply_fails_the_call_but_the_signal_is_applied() {
    let emu = emulator().await;
    let c = ssm(&emu.endpoint, "alice");
    let id = waiting_execution(&c, "alice").await;
    emu.handle
        .set_faults(
            FaultConfig::none().with_rule(
                Service::Ssm,
                FaultRule::drop_after_apply()
                    .on("SendAutomationSignal")
                    .times(1),
            ),
        )
        .unwrap();

    let err = send(&c, &id, SignalType::Approve, &[]).await.unwrap_err();
    assert!(
        matches!(err, SdkError::DispatchFailure(_)),
        "the SDK should see a dispatch (I/O) failure, got {err:?}"
    );
    if let SdkError::DispatchFailure(failure) = &err {
        assert!(failure.is_io() || failure.is_other(), "{failure:?}");
    }
    let counters = emu.handle.counters();
    assert_eq!(counters.ssm.applied_signals, 1);
    assert_eq!(counters.ssm.faults_of(FaultKind::DropAfterApply), 1);
    let exec = get(&c, &id).await;
    assert_eq!(status(&exec), "Success");
    assert_eq!(
        output(step(&exec, "approve"), "ApprovalStatus"),
        ["Approved"]
    );
    // The resend an operator might make is refused, as it would be by AWS.
    assert_eq!(
        code_of(send(&c, &id, SignalType::Approve, &[]).await),
        "InvalidAutomationSignalException"
    );
}

#[tokio::test]
async fn latency_is_added_before_handling() {
    let emu = emulator().await;
    let c = ssm(&emu.endpoint, "alice");
    let id = waiting_execution(&c, "alice").await;
    emu.handle
        .set_faults(FaultConfig::none().with_rule(
            Service::Ssm,
            FaultRule::latency(300).on("GetAutomationExecution"),
        ))
        .unwrap();
    let begin = Instant::now();
    get(&c, &id).await;
    let took = begin.elapsed();
    assert!(took >= Duration::from_millis(300), "took {took:?}");
    assert_eq!(emu.handle.counters().ssm.faults_of(FaultKind::Latency), 1);
}

#[tokio::test]
async fn probabilistic_faults_hit_some_calls() {
    let emu = emulator().await;
    let c = ssm(&emu.endpoint, "alice");
    let id = waiting_execution(&c, "alice").await;
    emu.handle
        .set_faults(
            FaultConfig::none()
                .with_rule(
                    Service::Ssm,
                    FaultRule::server_error()
                        .on("GetAutomationExecution")
                        .with_probability(0.5),
                )
                .with_seed(42),
        )
        .unwrap();
    let mut failed = 0;
    for _ in 0..40 {
        if c.get_automation_execution()
            .automation_execution_id(&id)
            .send()
            .await
            .is_err()
        {
            failed += 1;
        }
    }
    assert!((5..35).contains(&failed), "{failed} of 40 failed");
    let counters = emu.handle.counters();
    assert_eq!(counters.ssm.faults_of(FaultKind::ServerError), failed);
    assert_eq!(counters.ssm.calls_of("GetAutomationExecution"), 40);
}

#[tokio::test]
async fn reset_clears_faults_and_counters() {
    let emu = emulator().await;
    let c = ssm(&emu.endpoint, "alice");
    let id = waiting_execution(&c, "alice").await;
    emu.handle
        .set_faults(FaultConfig::none().with_rule(Service::Ssm, FaultRule::server_error()))
        .unwrap();
    assert!(c
        .get_automation_execution()
        .automation_execution_id(&id)
        .send()
        .await
        .is_err());
    emu.handle.reset();
    assert_eq!(emu.handle.faults(), FaultConfig::none());
    assert_eq!(emu.handle.counters(), aws_emulator::Counters::default());
    get(&c, &id).await;
}
