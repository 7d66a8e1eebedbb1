//! SWF through the proxy as SWF behaves, where moto does not: paged histories, validation
//! of required members, lag mode, and signals counted even when their caller went away.
//! Real aws-sdk-swf and boto3 clients; moto from the test venv (skipped without one).
mod common;

use std::time::{Duration, Instant};

use aws_emulator::{FaultConfig, FaultRule, Service};
use aws_sdk_swf::error::ProvideErrorMetadata;
use aws_sdk_swf::types::WorkflowExecution;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn signal(client: &aws_sdk_swf::Client, domain: &str, workflow_id: &str, name: &str) {
    client
        .signal_workflow_execution()
        .domain(domain)
        .workflow_id(workflow_id)
        .signal_name(name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("signal {name}: {e:?}"));
}

/// One page of the history through the emulator.
async fn page(
    client: &aws_sdk_swf::Client,
    execution: &WorkflowExecution,
    size: Option<i32>,
    reverse: bool,
    token: Option<String>,
) -> aws_sdk_swf::operation::get_workflow_execution_history::GetWorkflowExecutionHistoryOutput {
    client
        .get_workflow_execution_history()
        .domain("paging")
        .execution(execution.clone())
        .set_maximum_page_size(size)
        .reverse_order(reverse)
        .set_next_page_token(token)
        .send()
        .await
        .expect("GetWorkflowExecutionHistory")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2500_event_history_is_paged_like_swf() {
    let Some(python) = python_or_skip("a_2500_event_history_is_paged_like_swf") else {
        return;
    };
    let moto = start_moto(&python);
    let emu = emulator_with(Some(moto.url.clone())).await;
    let client = swf(&emu.endpoint);
    register_swf(&client, "paging").await;
    let execution = start_workflow(&client, "paging", "big").await;
    // Started + DecisionTaskScheduled are events 1 and 2; moto adds WorkflowExecutionSignaled
    // and DecisionTaskScheduled for every signal. The needle is signal 124, event 249: on the
    // third page when read newest first in pages of 1,000 (2500..1501, 1500..501, 500..1).
    // The fillers go to moto directly (faster; the proxy is not what is tested here).
    let moto_client = swf(&moto.url);
    for _ in 1..124 {
        signal(&moto_client, "paging", "big", "filler").await;
    }
    signal(&client, "paging", "big", "needle").await;
    for _ in 125..=1249 {
        signal(&moto_client, "paging", "big", "filler").await;
    }
    assert_eq!(
        history_page(&moto_client, "paging", &execution).await.len(),
        2500,
        "moto answers everything at once"
    );

    // Newest first, pages of 1,000: the needle is on the third page, and only there.
    let mut token = None;
    let mut pages = vec![];
    loop {
        let out = page(&client, &execution, Some(1000), true, token.take()).await;
        pages.push(out.events().to_vec());
        match out.next_page_token() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
        assert!(pages.len() < 10, "paging does not end");
    }
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [1000, 1000, 500]);
    let first_ids: Vec<i64> = pages.iter().map(|p| p[0].event_id()).collect();
    assert_eq!(
        first_ids,
        [2500, 1500, 500],
        "newest first, no gap or overlap"
    );
    for (i, p) in pages.iter().enumerate() {
        let has_needle = signal_names(p).iter().any(|n| n == "needle");
        assert_eq!(has_needle, i == 2, "needle on page {}", i + 1);
    }
    let needle = pages[2]
        .iter()
        .find(|e| {
            e.workflow_execution_signaled_event_attributes()
                .is_some_and(|a| a.signal_name() == "needle")
        })
        .unwrap();
    assert_eq!(needle.event_id(), 249);

    // Oldest first without maximumPageSize: the documented default of 1,000.
    let first = page(&client, &execution, None, false, None).await;
    assert_eq!(first.events().len(), 1000);
    assert_eq!(first.events()[0].event_id(), 1);
    assert!(first.next_page_token().is_some());
    // maximumPageSize 0 means the default too.
    assert_eq!(
        page(&client, &execution, Some(0), false, None)
            .await
            .events()
            .len(),
        1000
    );

    // The SDK's own paginator walks the same pages.
    let mut stream = client
        .get_workflow_execution_history()
        .domain("paging")
        .execution(execution.clone())
        .maximum_page_size(700)
        .into_paginator()
        .send();
    let mut sizes = vec![];
    while let Some(p) = stream.next().await {
        sizes.push(p.expect("a page").events().len());
    }
    assert_eq!(sizes, [700, 700, 700, 400]);

    // Out of range and foreign tokens are refused as SWF refuses them.
    let err = client
        .get_workflow_execution_history()
        .domain("paging")
        .execution(execution.clone())
        .maximum_page_size(1001)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ValidationException"), "{err:?}");
    let forward_token = first.next_page_token().unwrap().to_string();
    let err = client
        .get_workflow_execution_history()
        .domain("paging")
        .execution(execution.clone())
        .reverse_order(true)
        .next_page_token(forward_token)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ValidationException"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_required_members_are_validation_errors_not_500() {
    let Some(python) = python_or_skip("missing_required_members_are_validation_errors_not_500")
    else {
        return;
    };
    let moto = start_moto(&python);
    let emu = emulator_with(Some(moto.url.clone())).await;
    let client = swf(&emu.endpoint);
    register_swf(&client, "strict").await;
    let execution = start_workflow(&client, "strict", "wf").await;

    // The Rust SDK does not check required members itself: the request goes out without
    // signalName, as a caller's bug would send it.
    let err = client
        .signal_workflow_execution()
        .domain("strict")
        .workflow_id("wf")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ValidationException"), "{err:?}");
    assert!(
        err.message().unwrap_or_default().contains("'signalName'"),
        "{err:?}"
    );
    match &err {
        aws_sdk_swf::error::SdkError::ServiceError(e) => {
            assert_eq!(e.raw().status().as_u16(), 400)
        }
        other => panic!("expected a service error, got {other:?}"),
    }
    // The SDK's WorkflowExecution builder insists on a runId; a raw request does not.
    let (status, body) = http(
        &emu.endpoint,
        "POST",
        "/",
        &[
            ("Content-Type", "application/x-amz-json-1.0"),
            ("X-Amz-Target", "SimpleWorkflowService.GetWorkflowExecutionHistory"),
            ("Authorization", "AWS4-HMAC-SHA256 Credential=raw/20260101/us-east-1/swf/aws4_request, SignedHeaders=host, Signature=0"),
        ],
        r#"{"domain": "strict", "execution": {"workflowId": "wf"}}"#,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["__type"], "com.amazon.coral.validate#ValidationException");
    assert!(
        v["message"].as_str().unwrap().contains("'execution.runId'"),
        "{v}"
    );
    // Nothing reached moto, nothing was counted.
    assert!(signal_names(&history_page(&client, "strict", &execution).await).is_empty());
    assert_eq!(emu.handle.counters().swf.applied_signals, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_keeps_signals_out_of_histories_until_due() {
    let Some(python) = python_or_skip("lag_keeps_signals_out_of_histories_until_due") else {
        return;
    };
    let moto = start_moto(&python);
    let emu = emulator_with(Some(moto.url.clone())).await;
    let client = swf(&emu.endpoint);
    register_swf(&client, "lagging").await;
    let execution = start_workflow(&client, "lagging", "wf").await;
    signal(&client, "lagging", "wf", "before").await;

    // Switched on through the control API, as a test profile would.
    let (code, body) = http_json(
        &emu.endpoint,
        "PUT",
        "/_emu/lag",
        r#"{"swf": [{"operation": "SignalWorkflowExecution", "min_ms": 3000}]}"#,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let sent = Instant::now();
    signal(&client, "lagging", "wf", "lagged").await;
    assert!(
        sent.elapsed() < Duration::from_millis(1000),
        "answered at once"
    );
    // moto has it, and the counters do; readers through the proxy do not yet.
    assert_eq!(
        signal_names(&history_page(&swf(&moto.url), "lagging", &execution).await),
        ["before", "lagged"]
    );
    assert_eq!(emu.handle.counters().swf.applied_signals, 2);
    let visible = signal_names(&history_page(&client, "lagging", &execution).await);
    assert_eq!(visible, ["before"]);
    // Newest first too: the hidden event is not the first one shown.
    let newest = page_in(&client, "lagging", &execution, true).await;
    assert_eq!(signal_names(&newest), ["before"]);

    // Lag off for new writes: a signal sent now still waits behind the hidden one.
    emu.handle.clear_lag();
    signal(&client, "lagging", "wf", "after").await;
    assert_eq!(
        signal_names(&history_page(&client, "lagging", &execution).await),
        ["before"],
        "a history is shown in order: nothing after a hidden signal"
    );
    tokio::time::sleep(
        Duration::from_millis(3000).saturating_sub(sent.elapsed()) + Duration::from_millis(100),
    )
    .await;
    assert_eq!(
        signal_names(&history_page(&client, "lagging", &execution).await),
        ["before", "lagged", "after"]
    );
}

async fn page_in(
    client: &aws_sdk_swf::Client,
    domain: &str,
    execution: &WorkflowExecution,
    reverse: bool,
) -> Vec<aws_sdk_swf::types::HistoryEvent> {
    client
        .get_workflow_execution_history()
        .domain(domain)
        .execution(execution.clone())
        .reverse_order(reverse)
        .send()
        .await
        .expect("GetWorkflowExecutionHistory")
        .events()
        .to_vec()
}

/// A TCP relay to `upstream` that passes requests through at once and holds every answer
/// for `delay`: moto has applied the call long before the emulator hears back.
async fn slow_answers(upstream: String, delay: Duration) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = upstream.trim_start_matches("http://").to_string();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut ri, mut wi) = inbound.split();
                let (mut ro, mut wo) = outbound.split();
                let requests = tokio::io::copy(&mut ri, &mut wo);
                let answers = async {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match ro.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        tokio::time::sleep(delay).await;
                        if wi.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                };
                tokio::select! {
                    _ = requests => {}
                    _ = answers => {}
                }
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_are_counted_when_the_caller_disconnects_mid_request() {
    let Some(python) =
        python_or_skip("signals_are_counted_when_the_caller_disconnects_mid_request")
    else {
        return;
    };
    let moto = start_moto(&python);
    let slow = slow_answers(moto.url.clone(), Duration::from_millis(800)).await;
    let emu = emulator_with(Some(slow)).await;
    let setup = swf(&moto.url);
    register_swf(&setup, "honest").await;
    let execution = start_workflow(&setup, "honest", "wf").await;

    // A caller that gives up after 200 ms: it is gone while the emulator waits for moto.
    let impatient = {
        use aws_sdk_swf::config::timeout::TimeoutConfig;
        let config = swf(&emu.endpoint)
            .config()
            .to_builder()
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(Duration::from_millis(200))
                    .build(),
            )
            .build();
        aws_sdk_swf::Client::from_conf(config)
    };
    for i in 0..3 {
        let err = impatient
            .signal_workflow_execution()
            .domain("honest")
            .workflow_id("wf")
            .signal_name(format!("dropped-{i}"))
            .send()
            .await
            .unwrap_err();
        assert!(
            matches!(err, aws_sdk_swf::error::SdkError::TimeoutError(_)),
            "{err:?}"
        );
    }
    // A SIGKILLed caller: the request is written whole, then the socket is closed.
    let body = r#"{"domain":"honest","workflowId":"wf","signalName":"killed"}"#;
    let mut raw = tokio::net::TcpStream::connect(emu.endpoint.trim_start_matches("http://"))
        .await
        .unwrap();
    let request = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-amz-json-1.0\r\nX-Amz-Target: SimpleWorkflowService.SignalWorkflowExecution\r\nAuthorization: AWS4-HMAC-SHA256 Credential=killed/20260101/us-east-1/swf/aws4_request, SignedHeaders=host, Signature=0\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    raw.write_all(request.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(raw);

    // Every forwarded call ends, answered or not (each answer takes 800 ms to come back);
    // then counter and history agree.
    let deadline = Instant::now() + Duration::from_secs(10);
    while emu.handle.counters().swf.applied_signals < 4 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let history = signal_names(&history_page(&setup, "honest", &execution).await);
    assert_eq!(
        history,
        ["dropped-0", "dropped-1", "dropped-2", "killed"],
        "moto applied every call"
    );
    let counters = emu.handle.counters();
    assert_eq!(counters.swf.applied_signals, history.len() as u64);
    let counted: Vec<&str> = counters
        .swf
        .signals
        .iter()
        .map(|s| s.signal_name.as_str())
        .collect();
    assert_eq!(counted, history);
}

/// boto3 pages through the proxy and gets the validation error (its own parameter check
/// off, so that the request goes out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_pages_histories_and_sees_validation_errors() {
    let Some(python) = python_or_skip("boto3_pages_histories_and_sees_validation_errors") else {
        return;
    };
    let moto = start_moto(&python);
    let emu = emulator_with(Some(moto.url.clone())).await;
    let client = swf(&emu.endpoint);
    register_swf(&client, "py").await;
    let execution = start_workflow(&client, "py", "wf").await;
    for i in 0..5 {
        signal(&client, "py", "wf", &format!("s{i}")).await;
    }
    // Faults still apply before paging: one 503 is retried by boto3's own retry.
    emu.handle
        .set_faults(
            FaultConfig::none().with_rule(
                Service::Swf,
                FaultRule::service_unavailable()
                    .on("GetWorkflowExecutionHistory")
                    .times(1),
            ),
        )
        .unwrap();
    let script = r#"
import sys, boto3, botocore.config
c = boto3.client("swf", endpoint_url=sys.argv[1], region_name="us-east-1",
                 aws_access_key_id="py", aws_secret_access_key="x",
                 config=botocore.config.Config(parameter_validation=False))
ex = {"workflowId": "wf", "runId": sys.argv[2]}
ids, token, pages = [], None, 0
while True:
    kw = {"nextPageToken": token} if token else {}
    out = c.get_workflow_execution_history(domain="py", execution=ex, maximumPageSize=3,
                                           reverseOrder=True, **kw)
    pages += 1
    ids += [e["eventId"] for e in out["events"]]
    token = out.get("nextPageToken")
    if not token:
        break
# Started and DecisionTaskScheduled, then a Signaled and a DecisionTaskScheduled per signal.
assert ids == list(range(12, 0, -1)), ids
assert pages == 4, pages
p = c.get_paginator("get_workflow_execution_history")
n = sum(len(pg["events"]) for pg in p.paginate(domain="py", execution=ex,
                                               PaginationConfig={"PageSize": 2}))
assert n == 12, n
try:
    c.signal_workflow_execution(domain="py", workflowId="wf")
    raise SystemExit("a signal without signalName was accepted")
except c.exceptions.ClientError as e:
    err = e.response["Error"]
    assert err["Code"] == "ValidationException", err
    assert "signalName" in err["Message"], err
    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 400
print("boto3 ok")
"#;
    let endpoint = emu.endpoint.clone();
    let run_id = execution.run_id().to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg("-c")
            .arg(script)
            .arg(endpoint)
            .arg(run_id)
            .output()
            .expect("running python")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("boto3 ok"),
        "boto3 failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        emu.handle
            .counters()
            .swf
            .faults_of(aws_emulator::FaultKind::ServiceUnavailable),
        1
    );
}
