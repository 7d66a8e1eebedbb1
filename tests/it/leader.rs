//! Two operator processes on one Lease: only the leader claims and sends; SIGKILL the leader
//! mid-burst and the standby takes over within the lease duration and finishes, every signal
//! exactly once; SIGTERM lets the in-flight send finish and record, releases the lease, and
//! the standby takes over at once.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams};
use kube::ResourceExt;
use signalman::api::{Phase, WorkflowSignal};
use signalman_testenv::aws_emulator::{FaultConfig, FaultRule, Service};
use signalman_testenv::{aws_env_at, OPERATOR_ACCESS_KEY};

use crate::common::{holder_identity, ready_reason, unique, wf_signal, Operator, SwfWorld, World};
use crate::metrics::{bind_on_free_port, scrape, value, wait_for};

/// Default lease timing of `signalman run` (what these tests run with).
const LEASE_DURATION: Duration = Duration::from_secs(signalman::leader::DEFAULT_LEASE_SECONDS);
const LEASE_RETRY: Duration = Duration::from_secs(signalman::leader::DEFAULT_RETRY_SECONDS);

/// The holder named in the test's Lease (the harness names it after the namespace).
async fn lease_holder(world: &World) -> Option<String> {
    let api: Api<Lease> = world.api();
    api.get_opt(&world.ns)
        .await
        .expect("reading the lease")
        .and_then(|l| l.spec?.holder_identity)
        .filter(|h| !h.is_empty())
}

/// Waits until `who` holds the Lease; returns how long that took.
async fn wait_holder(world: &World, who: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let holder = lease_holder(world).await;
        if holder.as_deref() == Some(who) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "{who} did not get the lease within {timeout:?} (holder: {holder:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The process id the operator logged at start.
async fn pid_of(operator: &Operator) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = strip_ansi(&operator.log_text());
        if let Some(pid) = log
            .split("pid=")
            .nth(1)
            .map(|rest| {
                rest.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            .and_then(|digits| digits.parse().ok())
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "no pid in the log:\n{log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The log without terminal colour codes.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn owned<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

const SIGNAL_OK: &str =
    "signalman_aws_calls_total{service=\"swf\",operation=\"SignalWorkflowExecution\",outcome=\"ok\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_sends_and_a_standby_finishes_after_the_leader_is_killed() {
    const WORKFLOWS: usize = 10;
    const PER_WORKFLOW: usize = 10;
    const TOTAL: usize = WORKFLOWS * PER_WORKFLOW;
    let world = World::new("leader-failover").await;
    let swf = SwfWorld::new(world.env, &unique("failover")).await;
    let mut runs = Vec::new();
    for w in 0..WORKFLOWS {
        runs.push(swf.start(&format!("wf-{w}")).await);
    }

    // A slow send rate keeps the burst going long enough to kill the leader in the middle of
    // it; a short claim time to live lets the standby verify the leader's abandoned claims soon.
    let (port_a, bind_a) = bind_on_free_port();
    let (port_b, bind_b) = bind_on_free_port();
    let settings = [
        ("SIGNALMAN_SWF_RATE", "10"),
        ("SIGNALMAN_SWF_BURST", "1"),
        ("SIGNALMAN_CLAIM_TTL_SECONDS", "15"),
        ("SIGNALMAN_SEND_TIMEOUT_SECONDS", "4"),
    ];
    let with_bind = |bind: &str| {
        let mut env: Vec<(&'static str, String)> =
            settings.iter().map(|(k, v)| (*k, v.to_string())).collect();
        env.push(("SIGNALMAN_METRICS_BIND_ADDRESS", bind.to_string()));
        env
    };
    let env_a = with_bind(&bind_a);
    let env_b = with_bind(&bind_b);
    let mut a = world.operator("op-a", &owned(&env_a));
    wait_holder(&world, "op-a", Duration::from_secs(30)).await;
    let b = world.operator("op-b", &owned(&env_b));
    wait_for(port_a, "/readyz", 200, Duration::from_secs(30)).await;
    wait_for(port_b, "/readyz", 200, Duration::from_secs(30)).await;
    assert_eq!(value(&scrape(port_a).await, "signalman_leader"), Some(1.0));
    assert_eq!(value(&scrape(port_b).await, "signalman_leader"), Some(0.0));

    // Record every claim seen while the burst runs: (holder, object, when seen).
    let claims: Arc<Mutex<Vec<(String, String, Instant)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let api = world.api::<WorkflowSignal>();
        let claims = claims.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                if let Ok(list) = api.list(&ListParams::default()).await {
                    let now = Instant::now();
                    let mut seen = claims.lock().unwrap();
                    for s in &list.items {
                        let Some(st) = s.status.as_ref() else {
                            continue;
                        };
                        if st.phase == Some(Phase::Sending) {
                            if let Some(c) = st.claim.as_ref() {
                                seen.push((
                                    holder_identity(&c.holder).to_string(),
                                    s.name_any(),
                                    now,
                                ));
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    for w in 0..WORKFLOWS {
        for i in 0..PER_WORKFLOW {
            world
                .create(&wf_signal(
                    &format!("s-{w}-{i}"),
                    &swf.domain,
                    &format!("wf-{w}"),
                    Some(&format!("{w}-{i}")),
                ))
                .await;
        }
    }
    let api = world.api::<WorkflowSignal>();
    let succeeded = || async {
        api.list(&ListParams::default())
            .await
            .expect("list")
            .items
            .iter()
            .filter(|s| s.status.as_ref().and_then(|st| st.phase) == Some(Phase::Succeeded))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while succeeded().await < 20 {
        assert!(Instant::now() < deadline, "the leader is not delivering");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Before the kill: the leader sends, the standby has made no AWS call.
    let text_a = scrape(port_a).await;
    let text_b = scrape(port_b).await;
    assert!(value(&text_a, SIGNAL_OK).unwrap_or(0.0) >= 20.0, "{text_a}");
    assert_eq!(
        value(&text_b, SIGNAL_OK),
        None,
        "the standby sent:\n{text_b}"
    );
    assert_eq!(value(&text_b, "signalman_leader"), Some(0.0));

    a.kill();
    let killed_at = Instant::now();
    let done_at_kill = succeeded().await;
    assert!(done_at_kill < TOTAL, "the kill should land mid-burst");
    let took = wait_holder(&world, "op-b", Duration::from_secs(40)).await;
    eprintln!("{done_at_kill} of {TOTAL} delivered at the kill; the standby led {took:?} after");
    // The standby saw the leader's last renewal at most one look after it was written, and
    // takes over one lease duration after that.
    assert!(
        took <= LEASE_DURATION + LEASE_RETRY + Duration::from_secs(2),
        "takeover took {took:?}"
    );

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let list = api.list(&ListParams::default()).await.expect("list");
        let failed: Vec<String> = list
            .items
            .iter()
            .filter(|s| s.status.as_ref().and_then(|st| st.phase) == Some(Phase::Failed))
            .map(|s| s.name_any())
            .collect();
        assert!(failed.is_empty(), "failed: {failed:?}\n{}", b.log_text());
        let done = list
            .items
            .iter()
            .filter(|s| s.status.as_ref().and_then(|st| st.phase) == Some(Phase::Succeeded))
            .count();
        if done == TOTAL {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {TOTAL} delivered after the takeover\n{}",
            b.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.store(true, Ordering::SeqCst);
    watcher.await.expect("watcher");

    // Only the leader of the moment claimed: op-a before the kill, op-b only after it.
    let claims = claims.lock().unwrap().clone();
    assert!(
        claims.iter().any(|(h, _, _)| h == "op-a"),
        "no claim by the first leader was seen"
    );
    for (holder, name, seen) in &claims {
        match holder.as_str() {
            "op-a" => {}
            "op-b" => assert!(*seen >= killed_at, "op-b claimed {name} while op-a led"),
            other => panic!("unexpected claimant {other} on {name}"),
        }
    }
    let text_b = scrape(port_b).await;
    assert_eq!(value(&text_b, "signalman_leader"), Some(1.0));
    assert!(value(&text_b, SIGNAL_OK).unwrap_or(0.0) >= 1.0, "{text_b}");

    // Every signal exactly once in the SWF history.
    for (w, run_id) in runs.iter().enumerate() {
        let inputs = (0..PER_WORKFLOW).map(|i| format!("{w}-{i}"));
        swf.assert_each_input_once(&format!("wf-{w}"), run_id, inputs)
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_in_flight_send_releases_the_lease_and_the_standby_leads_at_once() {
    let world = World::new("leader-release").await;
    let emulator = world.env.private_emulator().await;
    // Each send takes 3 s: SIGTERM arrives while one is in flight.
    emulator
        .handle
        .set_faults(FaultConfig::none().with_rule(
            Service::Swf,
            FaultRule::latency(3000).on("SignalWorkflowExecution"),
        ))
        .expect("faults");
    let swf = SwfWorld::new(world.env, &unique("release")).await;
    let run_id = swf.start("wf").await;
    let aws = aws_env_at(&emulator.endpoint, OPERATOR_ACCESS_KEY);
    let (port_a, bind_a) = bind_on_free_port();
    let (port_b, bind_b) = bind_on_free_port();
    let mut env_a = owned(&aws);
    env_a.push(("SIGNALMAN_METRICS_BIND_ADDRESS", &bind_a));
    let mut env_b = owned(&aws);
    env_b.push(("SIGNALMAN_METRICS_BIND_ADDRESS", &bind_b));

    let mut a = world.operator("op-a", &env_a);
    wait_holder(&world, "op-a", Duration::from_secs(30)).await;
    let b = world.operator("op-b", &env_b);
    wait_for(port_a, "/readyz", 200, Duration::from_secs(30)).await;
    wait_for(port_b, "/readyz", 200, Duration::from_secs(30)).await;

    world
        .create(&wf_signal("sig", &swf.domain, "wf", Some("once")))
        .await;
    let api = world.api::<WorkflowSignal>();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = api.get("sig").await.expect("get");
        if s.status.as_ref().and_then(|st| st.phase) == Some(Phase::Sending) {
            let holder = s.status.as_ref().and_then(|st| st.claim.as_ref());
            assert_eq!(holder.map(|c| holder_identity(&c.holder)), Some("op-a"));
            break;
        }
        assert!(Instant::now() < deadline, "never claimed: {:?}", s.status);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // SIGTERM mid-send.
    let pid = pid_of(&a).await;
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let termed_at = Instant::now();
    // Draining: no longer ready, still serving.
    wait_for(port_a, "/readyz", 503, Duration::from_secs(2)).await;
    assert!(
        a.wait_exit(Duration::from_secs(30)),
        "op-a did not exit after SIGTERM"
    );
    let exited_after = termed_at.elapsed();
    let log_a = a.log_text();
    assert!(log_a.contains("leader lease released"), "{log_a}");
    assert!(log_a.contains("signalman stopped"), "clean exit:\n{log_a}");

    // The in-flight send finished and was recorded by op-a, once.
    let status = api.get("sig").await.expect("get").status.expect("status");
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}\n{log_a}");
    assert_eq!(ready_reason(&status).as_deref(), Some("Delivered"));
    assert_eq!(status.attempts, 1);

    // Released: the standby leads at once, not a lease duration later.
    let took = wait_holder(&world, "op-b", Duration::from_secs(10)).await;
    eprintln!("op-a exited {exited_after:?} after SIGTERM; op-b led {took:?} after that");
    assert!(
        took < LEASE_DURATION / 2,
        "takeover after a release took {took:?}"
    );

    // The new leader delivers the next signal.
    world
        .create(&wf_signal("sig-2", &swf.domain, "wf", Some("twice")))
        .await;
    let status = world
        .wait_done::<WorkflowSignal>("sig-2", Duration::from_secs(60))
        .await;
    assert_eq!(
        status.phase,
        Some(Phase::Succeeded),
        "{status:?}\n{}",
        b.log_text()
    );
    assert_eq!(
        swf.signals("wf", &run_id).await,
        vec![
            ("approve".to_string(), Some("once".to_string())),
            ("approve".to_string(), Some("twice".to_string())),
        ],
        "each signal exactly once"
    );
    let text_b = scrape(port_b).await;
    assert_eq!(value(&text_b, "signalman_leader"), Some(1.0));
    assert_eq!(value(&text_b, SIGNAL_OK), Some(1.0), "{text_b}");
}
