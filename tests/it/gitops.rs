//! Where GitOps users live: signals deleted and created again (Argo CD Replace, Flux force, a
//! prune reverted in git, a cluster rebuilt from git), signals applied too late (notAfter),
//! long AWS outages (5xx, connections refused), and finished signals cleaned up by TTL.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_ssm::types::ExecutionMode;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use signalman::api::{AutomationSignal, AutomationSignalSpec, Phase, SignalType, WorkflowSignal};
use signalman_testenv::aws_emulator::{FaultConfig, FaultRule, Service};
use signalman_testenv::{aws_env_at, Emulator, OPERATOR_ACCESS_KEY};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::common::{
    delete_and_wait, forget_receipts, ready_reason, unique, wf_signal, SwfWorld, World,
};

fn aws_env(endpoint: &str) -> Vec<(&'static str, String)> {
    aws_env_at(endpoint, OPERATOR_ACCESS_KEY)
}

fn as_pairs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn approve(name: &str, execution: &str) -> AutomationSignal {
    AutomationSignal::new(
        name,
        AutomationSignalSpec {
            automation_execution_id: execution.into(),
            signal_type: SignalType::Approve,
            payload: Some(BTreeMap::from([(
                "Comment".to_string(),
                vec!["ship it".to_string()],
            )])),
            region: None,
            retry: None,
            not_after: None,
            allow_duplicate: None,
            ttl_seconds_after_finished: None,
        },
    )
}

/// Delete and apply again each delivered signal: the AWS side still shows one effect, and the
/// new object ends Succeeded/AlreadyDelivered, first from the receipt, then (receipts gone, as
/// in a rebuilt cluster) from the AWS side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_deleted_and_created_again_is_not_sent_twice() {
    let world = World::new("recreate").await;
    let emu = world.env.private_emulator().await;
    let env = aws_env(&emu.endpoint);
    let swf = SwfWorld::new(world.env, &unique("recreate")).await;
    let run = swf.start("wf").await;
    let pinned = {
        let mut s = wf_signal("pinned", &swf.domain, "wf", Some("pinned-input"));
        s.spec.run_id = Some(run.clone());
        s
    };
    let unpinned = wf_signal("unpinned", &swf.domain, "wf", Some("unpinned-input"));
    let person = signalman_testenv::ssm_client_at(&emu.endpoint, "release-manager");
    let execution = person
        .start_automation_execution()
        .document_name("Signalman-Approve")
        .mode(ExecutionMode::Auto)
        .parameters("Approvers", vec![OPERATOR_ACCESS_KEY.to_string()])
        .send()
        .await
        .expect("StartAutomationExecution")
        .automation_execution_id
        .expect("id");
    let approval = approve("approve", &execution);

    let operator = world.operator("op-recreate", &as_pairs(&env));
    let wf: Api<WorkflowSignal> = world.api();
    let am: Api<AutomationSignal> = world.api();
    for round in ["first", "receipt", "rebuilt"] {
        if round == "rebuilt" {
            forget_receipts(&world).await;
            // A cluster is rebuilt minutes after the deliveries, not within the seconds AWS
            // may take to show them (the lag profile of scripts/test.sh hides writes for up
            // to 3 s): the AWS-side check reads what AWS shows.
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        world.create(&pinned).await;
        world.create(&unpinned).await;
        world.create(&approval).await;
        for name in ["pinned", "unpinned"] {
            let status = world
                .wait_done::<WorkflowSignal>(name, Duration::from_secs(60))
                .await;
            let expected = if round == "first" {
                "Delivered"
            } else {
                "AlreadyDelivered"
            };
            assert_eq!(
                (status.phase, ready_reason(&status).as_deref()),
                (Some(Phase::Succeeded), Some(expected)),
                "{round} {name}: {status:?}\n{}",
                operator.log_text()
            );
        }
        let status = world
            .wait_done::<AutomationSignal>("approve", Duration::from_secs(60))
            .await;
        let expected = if round == "first" {
            "Delivered"
        } else {
            "AlreadyDelivered"
        };
        assert_eq!(
            (status.phase, ready_reason(&status).as_deref()),
            (Some(Phase::Succeeded), Some(expected)),
            "{round} approve: {status:?}\n{}",
            operator.log_text()
        );
        swf.assert_each_input_once(
            "wf",
            &run,
            ["pinned-input", "unpinned-input"]
                .map(String::from)
                .into_iter(),
        )
        .await;
        let approvals = emu
            .handle
            .counters()
            .ssm
            .signals
            .iter()
            .filter(|s| s.execution_id == execution)
            .count();
        assert_eq!(approvals, 1, "{round}: one approval applied");
        for name in ["pinned", "unpinned"] {
            delete_and_wait(&wf, name).await;
        }
        delete_and_wait(&am, "approve").await;
    }
    // An identical signal meant as a second one (allowDuplicate) is sent.
    let mut again = unpinned.clone();
    again.spec.allow_duplicate = Some(true);
    world.create(&again).await;
    let status = world
        .wait_done::<WorkflowSignal>("unpinned", Duration::from_secs(60))
        .await;
    assert_eq!(ready_reason(&status).as_deref(), Some("Delivered"));
    let twice = swf
        .signals("wf", &run)
        .await
        .into_iter()
        .filter(|(_, i)| i.as_deref() == Some("unpinned-input"))
        .count();
    assert_eq!(twice, 2, "allowDuplicate sends again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_past_its_not_after_is_never_sent() {
    let world = World::new("notafter").await;
    let emu = world.env.private_emulator().await;
    let env = aws_env(&emu.endpoint);
    let swf = SwfWorld::new(world.env, &unique("notafter")).await;
    let run = swf.start("wf").await;
    let mut late = wf_signal("late", &swf.domain, "wf", Some("late"));
    late.spec.not_after = Some(Time(
        k8s_openapi::jiff::Timestamp::now() - Duration::from_secs(60),
    ));
    world.create(&late).await;
    let _operator = world.operator("op-notafter", &as_pairs(&env));
    let status = world
        .wait_done::<WorkflowSignal>("late", Duration::from_secs(30))
        .await;
    assert_eq!(
        (status.phase, ready_reason(&status).as_deref()),
        (Some(Phase::Failed), Some("Expired")),
        "{status:?}"
    );
    let stalled = status.conditions.iter().find(|c| c.type_ == "Stalled");
    assert_eq!(stalled.map(|c| c.reason.as_str()), Some("Expired"));
    assert_eq!(status.attempts, 0);
    assert_eq!(
        emu.handle
            .counters()
            .swf
            .calls_of("SignalWorkflowExecution"),
        0
    );
    assert!(swf.signals("wf", &run).await.is_empty());
}

/// How long AWS fails in the outage tests.
const OUTAGE: Duration = Duration::from_secs(150);
const PENDING: usize = 50;

/// Every AWS call of the SWF service the operator made, as its metrics count them.
fn swf_calls(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("signalman_aws_calls_total{") && l.contains("service=\"swf\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// 50 signals pending while AWS fails for 150 s; every one delivered exactly once after, and
/// meanwhile the calls are the circuit's probes, not one per signal and retry.
async fn outage(
    prefix: &str,
    fail: impl FnOnce(&Emulator, &Switch),
    heal: impl FnOnce(&Emulator, &Switch),
) {
    let world = World::new(prefix).await;
    let emu = world.env.private_emulator().await;
    let switch = Switch::start(&emu.endpoint).await;
    let env = aws_env(&switch.endpoint);
    let swf = SwfWorld::new(world.env, &unique(prefix)).await;
    let run = swf.start("wf").await;
    fail(&emu, &switch);
    let started = Instant::now();
    for i in 0..PENDING {
        let mut s = wf_signal(
            &format!("s-{i}"),
            &swf.domain,
            "wf",
            Some(&format!("in-{i}")),
        );
        s.spec.run_id = Some(run.clone());
        world.create(&s).await;
    }
    let (port, address) = crate::metrics::bind_on_free_port();
    let mut pairs = as_pairs(&env);
    pairs.push(("SIGNALMAN_METRICS_BIND_ADDRESS", address.as_str()));
    let operator = world.operator("op-outage", &pairs);
    crate::metrics::wait_for(port, "/healthz", 200, Duration::from_secs(30)).await;
    // The first calls find out AWS is failing; after a while only probes go out.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let before = swf_calls(&crate::metrics::scrape(port).await);
    let emulator_before = emu.handle.counters().swf.calls.values().sum::<u64>();
    tokio::time::sleep(OUTAGE.saturating_sub(started.elapsed())).await;
    let during = swf_calls(&crate::metrics::scrape(port).await) - before;
    let emulator_during = emu.handle.counters().swf.calls.values().sum::<u64>() - emulator_before;
    let window = OUTAGE.saturating_sub(Duration::from_secs(30)).as_secs();
    assert!(
        // A probe is one operation; the SDK's standard retry tries a read up to 3 times.
        during <= 12.0 && emulator_during <= 36,
        "{during} AWS calls ({emulator_during} reached the emulator) in the last {window} s of \
         the outage across {PENDING} pending signals: expected the circuit's probes only\n{}",
        operator.log_text()
    );
    eprintln!("{prefix}: {during} calls in the last {window} s of the outage ({emulator_during} reached AWS)");
    let wf: Api<WorkflowSignal> = world.api();
    for i in 0..PENDING {
        let s = wf.get(&format!("s-{i}")).await.expect("signal");
        let phase = s.status.and_then(|s| s.phase);
        assert!(
            !matches!(phase, Some(Phase::Failed | Phase::Succeeded)),
            "s-{i} ended during the outage: {phase:?}"
        );
    }
    heal(&emu, &switch);
    let healed = Instant::now();
    for i in 0..PENDING {
        let status = world
            .wait_done::<WorkflowSignal>(&format!("s-{i}"), Duration::from_secs(180))
            .await;
        assert_eq!(
            status.phase,
            Some(Phase::Succeeded),
            "s-{i}: {status:?}\n{}",
            operator.log_text()
        );
    }
    eprintln!(
        "{prefix}: all {PENDING} delivered {:?} after AWS came back",
        healed.elapsed()
    );
    swf.assert_each_input_once("wf", &run, (0..PENDING).map(|i| format!("in-{i}")))
        .await;
    assert!(
        operator.log_text().contains("circuit open"),
        "the circuit opened"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_swf_outage_of_503s_is_outlasted_with_probes_only() {
    outage(
        "outage-503",
        |emu, _| {
            emu.handle
                .set_faults(
                    FaultConfig::none().with_rule(Service::Swf, FaultRule::service_unavailable()),
                )
                .expect("faults");
        },
        |emu, _| emu.handle.clear_faults(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_outlasted_with_probes_only() {
    outage(
        "outage-refused",
        |_, switch| switch.set_up(false),
        |_, switch| switch.set_up(true),
    )
    .await;
}

/// A TCP forwarder in front of the emulator that can refuse connections (its port closed, open
/// connections cut), as an unreachable endpoint does.
struct Switch {
    endpoint: String,
    up: watch::Sender<bool>,
}

impl Switch {
    async fn start(upstream: &str) -> Switch {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (up, _) = watch::channel(true);
        let mut rx = up.subscribe();
        tokio::spawn(async move {
            let mut listener = Some(listener);
            loop {
                if !*rx.borrow() {
                    // Down: the port is closed, so connecting is refused.
                    drop(listener.take());
                    if rx.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
                let l = match listener.take() {
                    Some(l) => l,
                    None => match TcpListener::bind(addr).await {
                        Ok(l) => l,
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                tokio::select! {
                    accepted = l.accept() => {
                        listener = Some(l);
                        let Ok((mut client, _)) = accepted else { continue };
                        let upstream = upstream.clone();
                        let mut down = rx.clone();
                        tokio::spawn(async move {
                            let Ok(mut server) = TcpStream::connect(&upstream).await else { return };
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                                _ = down.wait_for(|up| !*up) => {}
                            }
                        });
                    }
                    changed = rx.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        listener = Some(l);
                    }
                }
            }
        });
        Switch {
            endpoint: format!("http://{addr}"),
            up,
        }
    }

    fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }
}

/// TTL deletes a finished signal nobody else keeps, and leaves one a GitOps tool manages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_deletes_unmanaged_finished_signals_only() {
    let world = World::new("ttl").await;
    let emu = world.env.private_emulator().await;
    let env = aws_env(&emu.endpoint);
    let swf = SwfWorld::new(world.env, &unique("ttl")).await;
    swf.start("wf").await;
    let mut plain = wf_signal("plain", &swf.domain, "wf", Some("a"));
    plain.spec.ttl_seconds_after_finished = Some(2);
    let mut managed = wf_signal("managed", &swf.domain, "wf", Some("b"));
    managed.spec.ttl_seconds_after_finished = Some(2);
    managed.metadata.labels = Some(BTreeMap::from([(
        "kustomize.toolkit.fluxcd.io/name".to_string(),
        "signals".to_string(),
    )]));
    world.create(&plain).await;
    world.create(&managed).await;
    let _operator = world.operator("op-ttl", &as_pairs(&env));
    for name in ["plain", "managed"] {
        let status = world
            .wait_done::<WorkflowSignal>(name, Duration::from_secs(60))
            .await;
        assert_eq!(status.phase, Some(Phase::Succeeded));
    }
    let wf: Api<WorkflowSignal> = world.api();
    let deadline = Instant::now() + Duration::from_secs(30);
    while wf.get_opt("plain").await.expect("read").is_some() {
        assert!(Instant::now() < deadline, "plain not deleted after its TTL");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        wf.get_opt("managed").await.expect("read").is_some(),
        "a GitOps-managed signal is never deleted by TTL"
    );
    // The receipt outlives the object: applying it again sends nothing.
    world
        .create(&wf_signal("plain", &swf.domain, "wf", Some("a")))
        .await;
    let status = world
        .wait_done::<WorkflowSignal>("plain", Duration::from_secs(60))
        .await;
    assert_eq!(ready_reason(&status).as_deref(), Some("AlreadyDelivered"));
}
