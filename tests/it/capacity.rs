//! One namespace cannot run the operator out of memory: signals of the largest size etcd takes,
//! pending in one namespace, cost the operator little (its cache keeps them without their
//! payload), while another namespace's signal is still delivered within seconds.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kube::api::{Api, PostParams};
use signalman::api::{AutomationSignal, AutomationSignalSpec, RetryPolicy, SignalType};
use signalman_testenv::{aws_env_at, OPERATOR_ACCESS_KEY};

use crate::common::{am_signal, start_automation, unique, World};

/// Large pending signals in the crowded namespace: 100, or `SIGNALMAN_CAPACITY_SIGNALS` (the
/// issue's 1,000 is about 1.4 GB in etcd and minutes of creates: run by hand, with a release
/// operator through `SIGNALMAN_TEST_OPERATOR_BIN`, as its figures in the chart README were).
fn large_count() -> usize {
    std::env::var("SIGNALMAN_CAPACITY_SIGNALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
}

/// An Approve of a missing execution with a payload of 200 keys of 14 values of 512 characters
/// (about 1.4 MiB, near the most etcd stores), retried for long: it stays pending.
fn large(name: &str, i: usize, label: &str) -> AutomationSignal {
    let value = "x".repeat(512);
    let payload: BTreeMap<String, Vec<String>> = (0..200)
        .map(|k| (format!("key-{k}"), vec![value.clone(); 14]))
        .collect();
    let mut s = AutomationSignal::new(
        name,
        AutomationSignalSpec {
            automation_execution_id: format!("{:08x}-0000-4000-8000-{:012x}", i, i),
            signal_type: SignalType::Approve,
            payload: Some(payload),
            region: None,
            retry: Some(RetryPolicy {
                max_attempts: Some(100),
                initial_backoff_seconds: Some(30),
                max_backoff_seconds: Some(300),
                retry_not_found: Some(true),
                max_duration_seconds: None,
            }),
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
async fn large_pending_signals_in_one_namespace_stay_small_in_the_operator() {
    let world = World::new("crowded").await;
    let quiet_ns = world.env.namespace(&world.client, "roomy").await;
    let label = unique("capacity");
    let emu = world.env.private_emulator().await;
    let crowded: Api<AutomationSignal> = world.api();
    let count = large_count();
    let began = Instant::now();
    for i in 0..count {
        crowded
            .create(
                &PostParams::default(),
                &large(&format!("big-{i}"), i, &label),
            )
            .await
            .expect("creating a large signal");
    }
    eprintln!(
        "capacity: {count} large signals created in {:.1}s",
        began.elapsed().as_secs_f64()
    );
    let aws = aws_env_at(&emu.endpoint, OPERATOR_ACCESS_KEY);
    let mut env: Vec<(&str, &str)> = aws.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let selector = format!("signalman-test={label}");
    env.push(("SIGNALMAN_NAMESPACES", ""));
    env.push(("SIGNALMAN_LABEL_SELECTOR", &selector));
    let operator = world.operator("op-capacity", &env);
    // The crowd is listed and worked on (each first attempt reads its execution, not found).
    let reads = || emu.handle.counters().ssm.calls_of("GetAutomationExecution");
    let deadline = Instant::now() + Duration::from_secs(90);
    while reads() < 20 {
        assert!(
            Instant::now() < deadline,
            "the crowded namespace was never worked on\n{}",
            operator.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let person = signalman_testenv::ssm_client_at(&emu.endpoint, "release-manager");
    let execution = start_automation(
        &person,
        "Signalman-Approve",
        &[("Approvers", &[OPERATOR_ACCESS_KEY])],
    )
    .await;
    let mut quiet = am_signal("y", &execution, SignalType::Approve, &[]);
    quiet.metadata.labels = Some(BTreeMap::from([(
        "signalman-test".to_string(),
        label.clone(),
    )]));
    let roomy: Api<AutomationSignal> = Api::namespaced(world.client.clone(), &quiet_ns);
    let created = Instant::now();
    roomy
        .create(&PostParams::default(), &quiet)
        .await
        .expect("creating the roomy namespace's signal");
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
            "the roomy namespace's signal was not sent\n{}",
            operator.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    let peak = operator.peak_rss().expect("the operator's memory");
    let mib = peak as f64 / (1024.0 * 1024.0);
    eprintln!(
        "capacity: {count} pending signals of ~1.4 MiB: operator peak RSS {mib:.1} MiB; the \
         other namespace's signal sent {took:?} after creation"
    );
    assert!(
        took <= Duration::from_secs(10),
        "the roomy namespace waited {took:?}"
    );
    // The objects alone are 140 MiB, and the debug build idles near 40 MiB. Caching them
    // whole peaked near 290 MiB; without their payloads, near 130 MiB (what remains is pages
    // of the list, whole reads before acting, and the allocator's arenas).
    assert!(mib < 192.0, "peak RSS {mib:.1} MiB");
}
