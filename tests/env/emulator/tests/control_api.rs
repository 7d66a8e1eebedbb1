//! The control API over HTTP, STS GetCallerIdentity, and protocol details.
mod common;

use aws_sdk_ssm::types::{ExecutionMode, SignalType};
use common::*;
use serde_json::json;

fn auth(key: &str, service: &str) -> String {
    format!("AWS4-HMAC-SHA256 Credential={key}/20250101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=00")
}

#[tokio::test]
async fn faults_counters_reset_and_identities_over_http() {
    let emu = emulator().await;
    let ep = emu.endpoint.as_str();
    let (code, body) = http_json(ep, "GET", "/_emu/health", "").await;
    assert_eq!((code, body["status"].as_str()), (200, Some("ok")));

    let config = json!({
        "ssm": {
            "throttle": [{"operation": "GetAutomationExecution", "capacity": 1, "refill_per_second": 0}],
            "rules": [{"kind": "drop_after_apply", "operation": "SendAutomationSignal", "count": 1}]
        },
        "swf": {"rules": [{"kind": "server_error", "probability": 0.25}]},
        "seed": 9
    });
    let (code, _) = http_json(ep, "PUT", "/_emu/faults", &config.to_string()).await;
    assert_eq!(code, 200);
    let (_, got) = http_json(ep, "GET", "/_emu/faults", "").await;
    let as_config =
        |v: serde_json::Value| serde_json::from_value::<aws_emulator::FaultConfig>(v).unwrap();
    assert_eq!(as_config(got), as_config(config));
    assert_eq!(emu.handle.faults().ssm.throttle[0].capacity, 1.0);

    let (code, err) = http_json(
        ep,
        "PUT",
        "/_emu/faults",
        r#"{"ssm": {"rules": [{"kind": "explode"}]}}"#,
    )
    .await;
    assert_eq!(code, 400, "{err}");
    let (code, _) = http_json(
        ep,
        "PUT",
        "/_emu/faults",
        r#"{"ssm": {"rules": [{"kind": "latency"}]}}"#,
    )
    .await;
    assert_eq!(code, 400);

    let (_, preset) = http_json(ep, "GET", "/_emu/presets/aws-quotas", "").await;
    assert_eq!(
        preset["swf"]["throttle"][0],
        json!({"operation": "SignalWorkflowExecution", "capacity": 2000.0, "refill_per_second": 30.0})
    );

    // Calls through the SDK show up in the counters.
    let c = ssm(ep, "alice");
    let id = start(
        &c,
        "Signalman-Approve",
        &[("Approvers", &["alice"])],
        ExecutionMode::Auto,
    )
    .await;
    assert!(
        send(&c, &id, SignalType::Approve, &[("Comment", "ok")])
            .await
            .is_err(),
        "dropped"
    );
    get(&c, &id).await;
    assert_eq!(
        code_of(
            c.get_automation_execution()
                .automation_execution_id(&id)
                .send()
                .await
        ),
        "ThrottlingException"
    );
    let (_, counters) = http_json(ep, "GET", "/_emu/counters", "").await;
    assert_eq!(counters["ssm"]["calls"]["SendAutomationSignal"], 1);
    assert_eq!(counters["ssm"]["calls"]["GetAutomationExecution"], 2);
    assert_eq!(counters["ssm"]["throttled"], 1);
    assert_eq!(counters["ssm"]["faults"]["drop_after_apply"], 1);
    assert_eq!(counters["ssm"]["applied_signals"], 1);
    assert_eq!(
        counters["ssm"]["signals"][0],
        json!({"execution_id": id, "signal_type": "Approve", "step_name": "approve",
               "step_execution_id": counters["ssm"]["signals"][0]["step_execution_id"], "principal": user_arn("alice")})
    );
    assert_eq!(counters["swf"]["applied_signals"], 0);

    let (_, exec) = http_json(ep, "GET", &format!("/_emu/ssm/executions/{id}"), "").await;
    assert_eq!(exec["AutomationExecutionStatus"], "Success");

    let (code, _) = http_json(ep, "POST", "/_emu/reset", "").await;
    assert_eq!(code, 200);
    let (_, counters) = http_json(ep, "GET", "/_emu/counters", "").await;
    assert_eq!(counters["ssm"]["applied_signals"], 0);
    assert_eq!(counters["ssm"]["calls"], json!({}));
    let (_, faults) = http_json(ep, "GET", "/_emu/faults", "").await;
    assert_eq!(
        faults,
        json!({"ssm": {"throttle": [], "rules": []}, "swf": {"throttle": [], "rules": []}})
    );

    let role = "arn:aws:sts::123456789012:assumed-role/Ops/alice";
    let (code, _) = http_json(
        ep,
        "PUT",
        "/_emu/identities",
        &json!({"alice": role}).to_string(),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(emu.handle.principal_arn("alice"), role);
    assert_eq!(emu.handle.principal_arn("bob"), user_arn("bob"));
    let (_, ids) = http_json(ep, "GET", "/_emu/identities", "").await;
    assert_eq!(ids, json!({"alice": role}));

    let (code, _) = http_json(ep, "GET", "/_emu/nothing", "").await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn sts_get_caller_identity_names_the_signing_principal() {
    let emu = emulator().await;
    let ep = emu.endpoint.as_str();
    let form = "Action=GetCallerIdentity&Version=2011-06-15";
    const FORM_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";
    let operator = auth("signalman-operator", "sts");
    let (code, body) = http(
        ep,
        "POST",
        "/",
        &[("Content-Type", FORM_TYPE), ("Authorization", &operator)],
        form,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("<Arn>arn:aws:iam::123456789012:user/signalman-operator</Arn>"),
        "{body}"
    );
    assert!(body.contains("<Account>123456789012</Account>"), "{body}");
    assert!(body.contains("<UserId>AIDA"), "{body}");

    emu.handle.set_identity(
        "role-key",
        "arn:aws:sts::123456789012:assumed-role/Deployer/session-1",
    );
    let role = auth("role-key", "sts");
    let (_, body) = http(
        ep,
        "POST",
        "/",
        &[("Content-Type", FORM_TYPE), ("Authorization", &role)],
        form,
    )
    .await;
    assert!(
        body.contains("<Arn>arn:aws:sts::123456789012:assumed-role/Deployer/session-1</Arn>"),
        "{body}"
    );
    assert!(body.contains(":session-1</UserId>"), "{body}");

    let (code, body) = http(
        ep,
        "POST",
        "/",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form,
    )
    .await;
    assert_eq!(code, 403);
    assert!(body.contains("MissingAuthenticationToken"), "{body}");
    let (code, body) = http(
        ep,
        "POST",
        "/",
        &[("Content-Type", FORM_TYPE), ("Authorization", &operator)],
        "Action=GetSessionToken&Version=2011-06-15",
    )
    .await;
    assert_eq!(code, 400);
    assert!(body.contains("InvalidAction"), "{body}");
}

#[tokio::test]
async fn json_protocol_details() {
    let emu = emulator().await;
    let ep = emu.endpoint.as_str();
    let alice = auth("alice", "ssm");
    let target = |op: &'static str| {
        vec![
            ("Content-Type", "application/x-amz-json-1.1"),
            ("X-Amz-Target", op),
        ]
    };

    // No credentials.
    let (code, body) = http(
        ep,
        "POST",
        "/",
        &target("AmazonSSM.GetAutomationExecution"),
        "{}",
    )
    .await;
    assert_eq!(code, 400);
    assert!(
        body.contains("MissingAuthenticationTokenException"),
        "{body}"
    );

    let signed = |op: &'static str| {
        vec![
            ("Content-Type", "application/x-amz-json-1.1"),
            ("X-Amz-Target", op),
            ("Authorization", alice.as_str()),
        ]
    };
    let (code, body) = http(
        ep,
        "POST",
        "/",
        &signed("AmazonSSM.GetAutomationExecution"),
        "{}",
    )
    .await;
    assert_eq!(code, 400);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["__type"], "ValidationException");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("automationExecutionId"),
        "{v}"
    );

    let (code, body) = http(
        ep,
        "POST",
        "/",
        &signed("AmazonSSM.GetAutomationExecution"),
        "[1]",
    )
    .await;
    assert_eq!(code, 400);
    assert!(body.contains("SerializationException"), "{body}");

    let (code, body) = http(ep, "POST", "/", &signed("AmazonSSM.ListDocuments"), "{}").await;
    assert_eq!(code, 400);
    assert!(body.contains("UnknownOperationException"), "{body}");

    // SWF without an upstream answers a server fault.
    let (code, body) = http(
        ep,
        "POST",
        "/",
        &signed("SimpleWorkflowService.ListDomains"),
        "{}",
    )
    .await;
    assert_eq!(code, 500);
    assert!(body.contains("InternalFailure"), "{body}");
}

#[test]
fn a_background_emulator_runs_without_a_runtime() {
    let emu = aws_emulator::start_background(aws_emulator::EmulatorConfig::default()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (code, _) = runtime.block_on(http_json(&emu.endpoint, "GET", "/_emu/health", ""));
    assert_eq!(code, 200);
    assert_eq!(emu.handle.account_id(), "123456789012");
    drop(emu);
}
