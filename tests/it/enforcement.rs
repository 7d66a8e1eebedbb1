//! The operator's own policy check, before any AWS call: deny by default, the SSM document
//! read from AWS, the role a policy names assumed (its session tagged with the namespace, the
//! requester as SourceIdentity), and verification that only counts the sending identity.
use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_ssm::types::ExecutionMode;
use kube::api::{Api, PostParams};
use signalman::api::{
    AutomationSignal, AutomationSignalSpec, Phase, SignalType, WorkflowSignal,
    REQUESTED_BY_ANNOTATION,
};
use signalman_testenv::aws_emulator::{FaultConfig, FaultRule, RoleTrust, Service};
use signalman_testenv::{aws_env_at, Emulator, OPERATOR_ACCESS_KEY};

use crate::common::{condition_reason, ready_reason, unique, wf_signal, SwfWorld, World};

const ACCOUNT: &str = "123456789012";

fn approve(name: &str, execution: &str, requested_by: Option<&str>) -> AutomationSignal {
    let mut s = AutomationSignal::new(
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
    );
    if let Some(user) = requested_by {
        s.metadata.annotations = Some(BTreeMap::from([(
            REQUESTED_BY_ANNOTATION.to_string(),
            user.to_string(),
        )]));
    }
    s
}

async fn execution(emu: &Emulator, approvers: &[&str], min: usize) -> String {
    let person = signalman_testenv::ssm_client_at(&emu.endpoint, "release-manager");
    person
        .start_automation_execution()
        .document_name("Signalman-Approve")
        .mode(ExecutionMode::Auto)
        .parameters(
            "Approvers",
            approvers.iter().map(|a| a.to_string()).collect(),
        )
        .parameters("MinRequiredApprovals", vec![min.to_string()])
        .send()
        .await
        .expect("StartAutomationExecution")
        .automation_execution_id
        .expect("id")
}

fn operator_env(emu: &Emulator, namespaces: &str) -> Vec<(&'static str, String)> {
    let mut env = aws_env_at(&emu.endpoint, OPERATOR_ACCESS_KEY);
    env.push(("SIGNALMAN_NAMESPACES", namespaces.to_string()));
    // No admission policies here: these tests write requested-by themselves, standing in for
    // an admission engine the operator is told to trust.
    env.push(("SIGNALMAN_REQUESTER_SOURCE", "annotation".to_string()));
    env
}

fn pairs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn role(name: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:role/{name}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_policy_nothing_is_sent() {
    let world = World::new("deny-home").await;
    let ns = world.bare_namespace("deny").await;
    let emu = world.env.private_emulator().await;
    let swf = SwfWorld::new(world.env, &unique("deny")).await;
    swf.start("wf").await;
    let signals: Api<WorkflowSignal> = Api::namespaced(world.client.clone(), &ns);
    signals
        .create(
            &PostParams::default(),
            &wf_signal("s", &swf.domain, "wf", Some("x")),
        )
        .await
        .expect("signal");
    let env = operator_env(&emu, &ns);
    let operator = world.operator("op-deny", &pairs(&env));
    let status = crate::common::wait_done_in::<WorkflowSignal>(
        &world.client,
        &ns,
        "s",
        Duration::from_secs(45),
    )
    .await;
    assert_eq!(
        (status.phase, ready_reason(&status).as_deref()),
        (Some(Phase::Failed), Some("PolicyDenied")),
        "{status:?}\n{}",
        operator.log_text()
    );
    assert_eq!(
        condition_reason(&status, "Stalled").as_deref(),
        Some("PolicyDenied")
    );
    let message = status.message.unwrap_or_default();
    assert!(
        message.contains(&format!("namespace {ns}")) && message.contains("SignalPolicy"),
        "{message}"
    );
    let counters = emu.handle.counters();
    assert_eq!(
        counters.swf.calls.values().sum::<u64>() + counters.ssm.calls.values().sum::<u64>(),
        0,
        "no AWS call: {counters:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_of_a_document_not_allowed_is_never_signalled() {
    let world = World::new("deny-doc-home").await;
    let ns = world.bare_namespace("deny-doc").await;
    world.policy_for(
        &ns,
        serde_json::json!({"ssm": {"signalTypes": ["Approve", "Reject"], "documentNames": ["Change-*"]}}),
    )
    .await;
    let emu = world.env.private_emulator().await;
    let id = execution(&emu, &[OPERATOR_ACCESS_KEY], 1).await;
    Api::<AutomationSignal>::namespaced(world.client.clone(), &ns)
        .create(&PostParams::default(), &approve("a", &id, None))
        .await
        .expect("signal");
    let env = operator_env(&emu, &ns);
    let operator = world.operator("op-doc", &pairs(&env));
    let status = crate::common::wait_done_in::<AutomationSignal>(
        &world.client,
        &ns,
        "a",
        Duration::from_secs(45),
    )
    .await;
    assert_eq!(
        (status.phase, ready_reason(&status).as_deref()),
        (Some(Phase::Failed), Some("PolicyDenied")),
        "{status:?}\n{}",
        operator.log_text()
    );
    assert!(
        status
            .message
            .unwrap_or_default()
            .contains("Signalman-Approve"),
        "the denial names the document"
    );
    let counters = emu.handle.counters();
    assert_eq!(counters.ssm.calls_of("SendAutomationSignal"), 0);
    assert!(
        counters.ssm.calls_of("GetAutomationExecution") >= 1,
        "the document was read"
    );
}

/// Two namespaces, each with a policy naming its own role. Namespace B approves first; A's
/// send then fails with a 5xx (not applied): A's verification must not take B's decision for
/// its own, so A sends again and both approvals are there, each as its own role, with the
/// requester as SourceIdentity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_namespace_sends_as_its_role_and_verifies_only_its_own_decision() {
    let world = World::new("roles-home").await;
    let a = world.bare_namespace("team-a").await;
    let b = world.bare_namespace("team-b").await;
    let everything = |role_name: &str| {
        serde_json::json!({
            "ssm": {"signalTypes": ["Approve"], "documentNames": ["*"]},
            "roleArn": role(role_name),
        })
    };
    world.policy_for(&a, everything("TeamA")).await;
    world.policy_for(&b, everything("TeamB")).await;
    let emu = world.env.private_emulator().await;
    let id = execution(&emu, &[&role("TeamA"), &role("TeamB")], 2).await;
    let env = operator_env(&emu, &format!("{a},{b}"));
    let operator = world.operator("op-roles", &pairs(&env));

    Api::<AutomationSignal>::namespaced(world.client.clone(), &b)
        .create(
            &PostParams::default(),
            &approve("b", &id, Some("bob@example.com")),
        )
        .await
        .expect("signal b");
    let status = crate::common::wait_done_in::<AutomationSignal>(
        &world.client,
        &b,
        "b",
        Duration::from_secs(45),
    )
    .await;
    assert_eq!(
        ready_reason(&status).as_deref(),
        Some("Delivered"),
        "{status:?}\n{}",
        operator.log_text()
    );
    assert_eq!(status.requested_by.as_deref(), Some("bob@example.com"));
    // The approval record AWS keeps names the person in its Comment.
    let person = signalman_testenv::ssm_client_at(&emu.endpoint, "release-manager");
    let record = format!(
        "{:?}",
        person
            .get_automation_execution()
            .automation_execution_id(&id)
            .send()
            .await
            .expect("GetAutomationExecution")
            .automation_execution
            .expect("execution")
            .step_executions()
    );
    assert!(
        record.contains("requested by bob@example.com via signalman: ship it"),
        "{record}"
    );

    emu.handle
        .set_faults(
            FaultConfig::none().with_rule(
                Service::Ssm,
                FaultRule::server_error()
                    .on("SendAutomationSignal")
                    .times(1),
            ),
        )
        .expect("faults");
    Api::<AutomationSignal>::namespaced(world.client.clone(), &a)
        .create(
            &PostParams::default(),
            &approve(
                "a",
                &id,
                Some("system:serviceaccount:argocd:argocd-application-controller"),
            ),
        )
        .await
        .expect("signal a");
    let status = crate::common::wait_done_in::<AutomationSignal>(
        &world.client,
        &a,
        "a",
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        (status.phase, ready_reason(&status).as_deref()),
        (Some(Phase::Succeeded), Some("Delivered")),
        "A was sent again, not verified by B's decision: {status:?}\n{}",
        operator.log_text()
    );
    let applied: Vec<(String, Option<String>)> = emu
        .handle
        .counters()
        .ssm
        .signals
        .into_iter()
        .filter(|s| s.execution_id == id)
        .map(|s| (s.principal, s.source_identity))
        .collect();
    assert_eq!(
        applied,
        vec![
            (
                format!("arn:aws:sts::{ACCOUNT}:assumed-role/TeamB/signalman-{b}"),
                Some("bob@example.com".to_string())
            ),
            (
                format!("arn:aws:sts::{ACCOUNT}:assumed-role/TeamA/signalman-{a}"),
                Some(
                    "system=3Aserviceaccount=3Aargocd=3Aargocd-application-controller".to_string()
                )
            ),
        ]
    );
    let session = emu
        .handle
        .sts_sessions()
        .into_iter()
        .find(|s| s.role_arn == role("TeamA"))
        .expect("a TeamA session");
    assert!(
        format!("{:?}", session.tags).contains(&a),
        "the session is tagged with the namespace: {:?}",
        session.tags
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_that_cannot_be_assumed_is_retried_and_never_sent_otherwise() {
    let world = World::new("refused-home").await;
    let ns = world.bare_namespace("refused").await;
    world
        .policy_for(
            &ns,
            serde_json::json!({
                "ssm": {"signalTypes": ["Approve"], "documentNames": ["*"]},
                "roleArn": role("Nobody"),
            }),
        )
        .await;
    let emu = world.env.private_emulator().await;
    let mut sts = emu.handle.sts();
    sts.refuse_assume_role = true;
    emu.handle.set_sts(sts);
    let id = execution(&emu, &[OPERATOR_ACCESS_KEY, &role("Nobody")], 1).await;
    Api::<AutomationSignal>::namespaced(world.client.clone(), &ns)
        .create(&PostParams::default(), &approve("a", &id, None))
        .await
        .expect("signal");
    let env = operator_env(&emu, &ns);
    let operator = world.operator("op-refused", &pairs(&env));
    let api: Api<AutomationSignal> = Api::namespaced(world.client.clone(), &ns);
    let deadline = std::time::Instant::now() + Duration::from_secs(45);
    let status = loop {
        let s = api.get("a").await.expect("get").status.unwrap_or_default();
        if condition_reason(&s, "Reconciling").as_deref() == Some("AssumeRoleFailed") {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no AssumeRoleFailed: {s:?}\n{}",
            operator.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status.phase, Some(Phase::Pending), "retried: {status:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        emu.handle.counters().ssm.calls_of("SendAutomationSignal"),
        0,
        "never sent with another identity"
    );
}

/// AWS enforces the tenancy too: team A's role trusts only sessions tagged for namespace A. A
/// SignalPolicy that wrongly lets namespace B use that role gets B's signal nowhere: STS refuses
/// the session, the signal says so, and nothing is sent as team A for B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_trusting_one_namespace_refuses_a_session_for_another() {
    let world = World::new("trust-home").await;
    let a = world.bare_namespace("trust-a").await;
    let b = world.bare_namespace("trust-b").await;
    let team_a = serde_json::json!({
        "ssm": {"signalTypes": ["Approve"], "documentNames": ["*"]},
        "roleArn": role("TeamA"),
    });
    world.policy_for(&a, team_a.clone()).await;
    // The mistake: B's policy names A's role.
    world.policy_for(&b, team_a).await;
    let emu = world.env.private_emulator().await;
    let mut sts = emu.handle.sts();
    sts.roles = vec![RoleTrust {
        role_arn: role("TeamA"),
        conditions: serde_json::json!({
            "StringEquals": {"aws:RequestTag/signalman.dev/namespace": a.clone()}
        }),
        ..RoleTrust::default()
    }];
    emu.handle.set_sts(sts);
    let id = execution(&emu, &[&role("TeamA")], 1).await;
    for ns in [&a, &b] {
        Api::<AutomationSignal>::namespaced(world.client.clone(), ns)
            .create(&PostParams::default(), &approve("approve", &id, None))
            .await
            .expect("signal");
    }
    let env = operator_env(&emu, &format!("{a},{b}"));
    let operator = world.operator("op-trust", &pairs(&env));

    let sent = crate::common::wait_done_in::<AutomationSignal>(
        &world.client,
        &a,
        "approve",
        Duration::from_secs(45),
    )
    .await;
    assert_eq!(
        ready_reason(&sent).as_deref(),
        Some("Delivered"),
        "{sent:?}"
    );
    let api_b: Api<AutomationSignal> = Api::namespaced(world.client.clone(), &b);
    let deadline = std::time::Instant::now() + Duration::from_secs(45);
    let refused = loop {
        let s = api_b
            .get("approve")
            .await
            .expect("get")
            .status
            .unwrap_or_default();
        if condition_reason(&s, "Reconciling").as_deref() == Some("AssumeRoleFailed") {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no AssumeRoleFailed in {b}: {s:?}\n{}",
            operator.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(refused.phase, Some(Phase::Pending), "{refused:?}");
    let message = refused.message.clone().unwrap_or_default();
    assert!(message.contains("AccessDenied"), "{message}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        emu.handle.counters().ssm.calls_of("SendAutomationSignal"),
        1,
        "only namespace A's approval was sent as team A"
    );
    let sessions = emu.handle.sts_sessions();
    assert!(
        sessions.iter().all(|s| s
            .tags
            .iter()
            .any(|(k, v)| k == "signalman.dev/namespace" && *v == a)),
        "a session of team A's role for another namespace: {sessions:?}"
    );
}

/// The operator keeps each policy's status: how many namespaces it selects, and whether it is
/// valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policys_status_counts_the_namespaces_it_selects() {
    let world = World::new("policy-status-home").await;
    let ns = world.bare_namespace("policy-status").await;
    world
        .policy_for(
            &ns,
            serde_json::json!({"swf": {"domains": ["*"], "workflowIds": ["*"]}}),
        )
        .await;
    let emu = world.env.private_emulator().await;
    let env = operator_env(&emu, &ns);
    let operator = world.operator("op-policy-status", &pairs(&env));
    let policies: Api<signalman::api::SignalPolicy> = Api::all(world.client.clone());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let p = policies.get(&format!("test-{ns}")).await.expect("policy");
        if let Some(status) = p.status {
            if status.selected_namespaces == 1 {
                let valid = status.conditions.iter().find(|c| c.type_ == "Valid");
                assert_eq!(valid.map(|c| c.status.as_str()), Some("True"), "{status:?}");
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no status written\n{}",
            operator.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A GitOps tool's ServiceAccount that an allowing policy lists may assert who approved; the
/// approval's Comment records it as asserted. Any other creator's assertion is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_by_is_recorded_as_asserted_only_for_listed_service_accounts() {
    const ARGO: &str = "system:serviceaccount:argocd:argocd-application-controller";
    let world = World::new("asserted-home").await;
    let ns = world.bare_namespace("asserted").await;
    world.policy_for(
        &ns,
        serde_json::json!({
            "ssm": {"signalTypes": ["Approve"], "documentNames": ["*"]},
            "approvedByAsserters": [{"namespace": "argocd", "name": "argocd-application-controller"}],
        }),
    )
    .await;
    let emu = world.env.private_emulator().await;
    let listed = execution(&emu, &[OPERATOR_ACCESS_KEY], 1).await;
    let unlisted = execution(&emu, &[OPERATOR_ACCESS_KEY], 1).await;
    let api: Api<AutomationSignal> = Api::namespaced(world.client.clone(), &ns);
    for (name, id, creator) in [
        ("by-argo", &listed, ARGO),
        ("by-mallory", &unlisted, "mallory"),
    ] {
        let mut s = approve(name, id, Some(creator));
        s.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(
                signalman::api::APPROVED_BY_ANNOTATION.into(),
                "carol@example.com".into(),
            );
        api.create(&PostParams::default(), &s)
            .await
            .expect("signal");
    }
    let env = operator_env(&emu, &ns);
    let operator = world.operator("op-asserted", &pairs(&env));
    for name in ["by-argo", "by-mallory"] {
        let status = crate::common::wait_done_in::<AutomationSignal>(
            &world.client,
            &ns,
            name,
            Duration::from_secs(45),
        )
        .await;
        assert_eq!(
            ready_reason(&status).as_deref(),
            Some("Delivered"),
            "{name}: {status:?}\n{}",
            operator.log_text()
        );
    }
    let person = signalman_testenv::ssm_client_at(&emu.endpoint, "release-manager");
    let record = |id: String| {
        let person = person.clone();
        async move {
            format!(
                "{:?}",
                person
                    .get_automation_execution()
                    .automation_execution_id(id)
                    .send()
                    .await
                    .expect("GetAutomationExecution")
                    .automation_execution
                    .expect("execution")
                    .step_executions()
            )
        }
    };
    let argo = record(listed.clone()).await;
    assert!(
        argo.contains(&format!(
            "requested by {ARGO} via signalman (approved by carol@example.com, as asserted by {ARGO}): ship it"
        )),
        "{argo}"
    );
    let mallory = record(unlisted.clone()).await;
    assert!(
        mallory.contains("requested by mallory via signalman: ship it")
            && !mallory.contains("carol"),
        "{mallory}"
    );
}
