//! `/metrics`, `/healthz` and `/readyz` of the real binary: a scrape after a scenario shows the
//! counts the scenario caused. Also the scrape helpers the leader tests use.
use std::time::{Duration, Instant};

use signalman::api::{Phase, RetryPolicy, WorkflowSignal};
use signalman_testenv::aws_emulator::{FaultConfig, FaultRule, Service};
use signalman_testenv::{aws_env_at, free_port, OPERATOR_ACCESS_KEY};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{unique, wf_signal, SwfWorld, World};

/// `GET path` on the operator's endpoint port: (status code, body); `None` while nothing listens.
pub async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut raw))
        .await
        .ok()?
        .ok()?;
    let code = raw.split(' ').nth(1)?.parse().ok()?;
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((code, body))
}

/// Waits until `path` answers `code`.
pub async fn wait_for(port: u16, path: &str, code: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let got = get(port, path).await;
        if got.as_ref().map(|(c, _)| *c) == Some(code) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path} on :{port} did not answer {code} within {timeout:?}: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The body of `/metrics`.
pub async fn scrape(port: u16) -> String {
    let (code, body) = get(port, "/metrics").await.expect("scraping /metrics");
    assert_eq!(code, 200, "{body}");
    body
}

/// The value of one series, e.g. `signalman_leader` or
/// `signalman_signals_total{kind="WorkflowSignal",outcome="Delivered"}`; `None` when absent.
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// `SIGNALMAN_METRICS_BIND_ADDRESS` for a fresh port.
pub fn bind_on_free_port() -> (u16, String) {
    let port = free_port().expect("a free port");
    (port, format!("127.0.0.1:{port}"))
}

fn delivered_series(outcome: &str) -> String {
    format!("signalman_signals_total{{kind=\"WorkflowSignal\",outcome=\"{outcome}\"}}")
}

fn swf_calls(operation: &str, outcome: &str) -> String {
    format!(
        "signalman_aws_calls_total{{service=\"swf\",operation=\"{operation}\",outcome=\"{outcome}\"}}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_shows_the_counts_a_scenario_caused() {
    let world = World::new("metrics").await;
    let emulator = world.env.private_emulator().await;
    // The first send is refused with a 500 before anything is applied: an ambiguous outcome,
    // verified absent, then sent again.
    emulator
        .handle
        .set_faults(
            FaultConfig::none().with_rule(
                Service::Swf,
                FaultRule::server_error()
                    .on("SignalWorkflowExecution")
                    .times(1),
            ),
        )
        .expect("faults");
    let swf = SwfWorld::new(world.env, &unique("metrics")).await;
    let run_id = swf.start("wf").await;

    let (port, bind) = bind_on_free_port();
    let aws = aws_env_at(&emulator.endpoint, OPERATOR_ACCESS_KEY);
    let mut env: Vec<(&str, &str)> = aws.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("SIGNALMAN_METRICS_BIND_ADDRESS", &bind));
    let operator = world.operator("op-metrics", &env);

    wait_for(port, "/healthz", 200, Duration::from_secs(30)).await;
    wait_for(port, "/readyz", 200, Duration::from_secs(30)).await;
    let before = scrape(port).await;
    assert_eq!(
        value(
            &before,
            "signalman_signals_pending{kind=\"WorkflowSignal\"}"
        ),
        Some(0.0),
        "{before}"
    );

    // Three signals that land, one for a workflow that does not exist (fails for good), and
    // one that waits for its workflow to start (stays pending).
    for i in 0..3 {
        world
            .create(&wf_signal(
                &format!("ok-{i}"),
                &swf.domain,
                "wf",
                Some(&format!("input-{i}")),
            ))
            .await;
    }
    world
        .create(&wf_signal("missing", &swf.domain, "no-such-workflow", None))
        .await;
    let mut waiting = wf_signal("later-1", &swf.domain, "not-started-yet", None);
    waiting.spec.retry = Some(RetryPolicy {
        max_attempts: Some(5),
        initial_backoff_seconds: Some(300),
        max_backoff_seconds: Some(300),
        retry_not_found: Some(true),
        max_duration_seconds: None,
    });
    world.create(&waiting).await;

    for i in 0..3 {
        let status = world
            .wait_done::<WorkflowSignal>(&format!("ok-{i}"), Duration::from_secs(60))
            .await;
        assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    }
    let missing = world
        .wait_done::<WorkflowSignal>("missing", Duration::from_secs(60))
        .await;
    assert_eq!(missing.phase, Some(Phase::Failed), "{missing:?}");
    // The waiting one has made its first attempt once its status says so.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let w: WorkflowSignal = world.api().get("later-1").await.expect("get");
        if w.status.as_ref().is_some_and(|s| s.attempts >= 1) {
            break;
        }
        assert!(Instant::now() < deadline, "later-1 never attempted: {w:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let text = scrape(port).await;
    let show = || format!("{text}\n--- operator log ---\n{}", operator.log_text());
    // Signals by outcome: exactly what happened.
    assert_eq!(
        value(&text, &delivered_series("Delivered")),
        Some(3.0),
        "{}",
        show()
    );
    assert_eq!(
        value(&text, &delivered_series("ExecutionNotFound")),
        Some(1.0),
        "{}",
        show()
    );
    assert_eq!(value(&text, &delivered_series("DeliveryVerified")), None);
    // AWS calls: three accepted sends, one ambiguous (the 500), and the verification it caused.
    assert_eq!(
        value(&text, &swf_calls("SignalWorkflowExecution", "ok")),
        Some(3.0),
        "{}",
        show()
    );
    assert_eq!(
        value(&text, &swf_calls("SignalWorkflowExecution", "Ambiguous")),
        Some(1.0),
        "{}",
        show()
    );
    assert!(
        value(&text, &swf_calls("GetWorkflowExecutionHistory", "ok")).unwrap_or(0.0) >= 1.0,
        "{}",
        show()
    );
    assert_eq!(
        value(
            &text,
            "signalman_aws_call_duration_seconds_count{service=\"swf\",operation=\"SignalWorkflowExecution\"}"
        ),
        Some(4.0),
        "{}",
        show()
    );
    // What the emulator saw agrees with what the operator counted.
    let counters = emulator.handle.counters();
    assert_eq!(counters.swf.calls_of("SignalWorkflowExecution"), 4);
    assert_eq!(counters.swf.applied_signals, 3);
    assert_eq!(swf.signals("wf", &run_id).await.len(), 3, "each once");
    // Gauges: one signal still waits, nothing in flight, this replica leads.
    assert_eq!(
        value(&text, "signalman_signals_pending{kind=\"WorkflowSignal\"}"),
        Some(1.0),
        "{}",
        show()
    );
    assert_eq!(
        value(
            &text,
            "signalman_signals_in_flight{kind=\"WorkflowSignal\"}"
        ),
        Some(0.0)
    );
    assert_eq!(value(&text, "signalman_leader"), Some(1.0));
    assert!(
        value(
            &text,
            "signalman_reconcile_duration_seconds_count{kind=\"WorkflowSignal\"}"
        )
        .unwrap_or(0.0)
            >= 5.0
    );
    // No label carries an object name, a workflow id or an input.
    for secret in [
        "ok-0",
        "input-0",
        "no-such-workflow",
        "later-1",
        &swf.domain,
    ] {
        assert!(!text.contains(secret), "{secret} leaked into /metrics");
    }
    assert!(
        text.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );
    assert_eq!(get(port, "/nope").await.map(|(c, _)| c), Some(404));
}
