//! `kubectl signalman` (the plugin binary) against the real API server, moto's SWF and the
//! SSM emulator: status, can-i, pending and retry, with the operator doing its part.
use std::process::Output;
use std::time::Duration;

use aws_sdk_ssm::types::AutomationExecutionStatus;
use kube::api::{Api, PostParams};
use signalman::api::{AutomationSignal, Phase, RetryPolicy, WorkflowSignal};
use signalman_testenv::aws_emulator::{FaultConfig, FaultRule, Service, ThrottleRule};
use signalman_testenv::{aws_env_at, OPERATOR_ACCESS_KEY};

use crate::common::{
    condition_reason, plugin, ready_reason, start_automation, unique, wf_signal, SwfWorld, World,
};

/// Runs the plugin with `args` against the cluster and `aws_endpoint`.
fn run(world: &World, aws_endpoint: &str, args: &[&str]) -> Output {
    plugin(world.env, aws_endpoint)
        .args(args)
        .output()
        .expect("running kubectl-signalman")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stdout of a run that must succeed.
fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
}

fn pairs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[test]
fn every_command_has_help() {
    for (args, wants) in [
        (vec!["--help"], vec!["status", "can-i", "pending", "retry"]),
        (
            vec!["status", "--help"],
            vec!["--operator-namespace", "--kind", "NAME"],
        ),
        (
            vec!["can-i", "--help"],
            vec!["--filename", "--policies", "--namespace-labels"],
        ),
        (
            vec!["pending", "--help"],
            vec!["--region", "--operator-principal", "--domain"],
        ),
        (vec!["retry", "--help"], vec!["NAME", "--namespace"]),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-signalman"))
            .args(&args)
            .output()
            .expect("running kubectl-signalman");
        let text = ok(out);
        assert!(
            text.contains("Usage: kubectl signalman"),
            "{args:?}: {text}"
        );
        for want in wants {
            assert!(text.contains(want), "{args:?} lacks {want}: {text}");
        }
    }
}

#[test]
fn the_krew_manifest_installs_the_plugin_binary() {
    let path = signalman_testenv::repo_root().join("plugins/krew/signalman.yaml");
    let text = std::fs::read_to_string(&path).expect("plugins/krew/signalman.yaml");
    let manifest: serde_json::Value = serde_norway::from_str(&text).expect("YAML");
    assert_eq!(
        manifest["apiVersion"],
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(manifest["kind"], "Plugin");
    assert_eq!(manifest["metadata"]["name"], "signalman");
    for key in ["version", "homepage", "shortDescription", "description"] {
        assert!(manifest["spec"][key].is_string(), "spec.{key}");
    }
    let platforms = manifest["spec"]["platforms"].as_array().expect("platforms");
    assert!(!platforms.is_empty());
    for p in platforms {
        assert_eq!(p["bin"], "kubectl-signalman", "{p}");
        assert!(p["uri"].as_str().is_some_and(|u| u.starts_with("https://")));
        assert_eq!(p["sha256"].as_str().map(str::len), Some(64));
        assert!(
            p["files"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f["from"] == "kubectl-signalman")),
            "{p}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_a_delivered_workflow_signal_shows_the_receipt_and_the_runs_one_signal() {
    let world = World::new("plugin-status").await;
    let swf = SwfWorld::new(world.env, &unique("plugin-status")).await;
    let run_id = swf.start("wf").await;
    let secret = "secret-input-4711";
    world
        .create(&wf_signal("approve-wf", &swf.domain, "wf", Some(secret)))
        .await;
    let _operator = world.operator("op-plugin", &[]);
    let status = world
        .wait_done::<WorkflowSignal>("approve-wf", Duration::from_secs(60))
        .await;
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    world
        .wait_event("approve-wf", "Delivered", Duration::from_secs(20))
        .await;
    let text = ok(run(
        &world,
        &world.env.aws_endpoint,
        &[
            "status",
            "approve-wf",
            "-n",
            &world.ns,
            "--operator-namespace",
            &world.ns,
        ],
    ));
    for want in [
        "Phase:         Succeeded".to_string(),
        "Reason:        Delivered".to_string(),
        "Attempts:      1".to_string(),
        format!("allowed by SignalPolicy allow-all-{}", world.ns),
        format!("SignalReceipt {}/r-", world.ns),
        format!("run {run_id}: 1 WorkflowExecutionSignaled event(s) named approve"),
        "Normal Delivered".to_string(),
        "Fix:           delivered: nothing to do".to_string(),
    ] {
        assert!(text.contains(&want), "{want:?} in\n{text}");
    }
    eprintln!("{text}");
    assert!(
        !text.contains(secret),
        "the input is never printed:\n{text}"
    );
    assert!(
        text.contains("delivered 20"),
        "the receipt's delivery time:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_a_policy_denied_signal_shows_the_fix_and_can_i_agrees() {
    let world = World::new("plugin-deny").await;
    let denied_ns = world.bare_namespace("plugin-denied").await;
    let signals: Api<WorkflowSignal> = Api::namespaced(world.client.clone(), &denied_ns);
    signals
        .create(
            &PostParams::default(),
            &wf_signal("s", "orders", "order-1", Some("x")),
        )
        .await
        .expect("signal");
    let _operator = world.operator(
        "op-plugin-deny",
        &[("SIGNALMAN_NAMESPACES", denied_ns.as_str())],
    );
    let status = crate::common::wait_done_in::<WorkflowSignal>(
        &world.client,
        &denied_ns,
        "s",
        Duration::from_secs(45),
    )
    .await;
    assert_eq!(ready_reason(&status).as_deref(), Some("PolicyDenied"));
    let text = ok(run(
        &world,
        &world.env.aws_endpoint,
        &["status", "s", "-n", &denied_ns, "--kind", "workflowsignal"],
    ));
    eprintln!("{text}");
    for want in [
        "Phase:         Failed".to_string(),
        "Reason:        PolicyDenied".to_string(),
        format!("DENIED: namespace {denied_ns}: metadata.namespace"),
        "Fix:           no SignalPolicy allows this signal".to_string(),
        format!("Now: namespace {denied_ns}"),
    ] {
        assert!(text.contains(&want), "{want:?} in\n{text}");
    }

    // can-i, with the cluster's policies and labels: the allowed namespace and the denied one.
    let manifest = world.env.state_dir.join(format!("can-i-{}.yaml", world.ns));
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: signalman.dev/v1alpha1\nkind: WorkflowSignal\nmetadata: {{name: ok, namespace: {}}}\nspec: {{domain: orders, workflowId: order-1, signalName: approve}}\n---\napiVersion: signalman.dev/v1alpha1\nkind: WorkflowSignal\nmetadata: {{name: no, namespace: {denied_ns}}}\nspec: {{domain: orders, workflowId: order-1, signalName: approve}}\n",
            world.ns
        ),
    )
    .expect("writing the manifest");
    let manifest = manifest.to_str().expect("a path");
    let out = run(&world, &world.env.aws_endpoint, &["can-i", "-f", manifest]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "one is denied: {}",
        stdout(&out)
    );
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "allowed\t{}/WorkflowSignal ok: allowed by SignalPolicy allow-all-{}",
            world.ns, world.ns
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "DENIED\t{denied_ns}/WorkflowSignal no: namespace {denied_ns}"
        )),
        "{text}"
    );
    // Only the allowed one: exit code 0.
    let allowed = world
        .env
        .state_dir
        .join(format!("can-i-ok-{}.yaml", world.ns));
    std::fs::write(
        &allowed,
        "apiVersion: signalman.dev/v1alpha1\nkind: WorkflowSignal\nmetadata: {name: ok}\nspec: {domain: orders, workflowId: order-1, signalName: approve}\n",
    )
    .expect("writing the manifest");
    let text = ok(run(
        &world,
        &world.env.aws_endpoint,
        &[
            "can-i",
            "-f",
            allowed.to_str().expect("a path"),
            "-n",
            &world.ns,
        ],
    ));
    assert!(text.starts_with("allowed\t"), "{text}");
    // Fully offline: policies from a file, labels from the command line.
    let policies = world
        .env
        .state_dir
        .join(format!("policies-{}.yaml", world.ns));
    std::fs::write(
        &policies,
        "apiVersion: signalman.dev/v1alpha1\nkind: SignalPolicy\nmetadata: {name: team-orders}\nspec:\n  namespaceSelector: {matchLabels: {team: orders}}\n  regions: ['*']\n  swf: {domains: [orders], workflowIds: ['order-*']}\n",
    )
    .expect("writing the policies");
    let offline = |labels: &str| {
        plugin(world.env, "http://127.0.0.1:9")
            .env("KUBECONFIG", "/nonexistent")
            .args(["can-i", "-f", manifest, "--policies"])
            .arg(&policies)
            .args(["--namespace-labels", labels, "--region", "us-east-1"])
            .output()
            .expect("running kubectl-signalman")
    };
    let out = offline("team=orders");
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("allowed by SignalPolicy team-orders"));
    let out = offline("team=billing");
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_lists_a_waiting_approval_as_a_manifest_that_gets_delivered() {
    let world = World::new("plugin-pending").await;
    let emu = world.env.private_emulator().await;
    let person = signalman_testenv::ssm_client_at(&emu.endpoint, "release-manager");
    let operator_arn = emu.handle.principal_arn(OPERATOR_ACCESS_KEY);
    // Under the policy-role profile the namespace's policy names a role: list it too.
    let policy_role = std::env::var(signalman_testenv::POLICY_ROLE_VARIABLE).unwrap_or_default();
    let mut approvers = vec![operator_arn.as_str()];
    if !policy_role.is_empty() {
        approvers.push(&policy_role);
    }
    let ours = start_automation(
        &person,
        "Signalman-Approve",
        &[("Approvers", approvers.as_slice())],
    )
    .await;
    let theirs = start_automation(
        &person,
        "Signalman-Approve",
        &[("Approvers", &["someone-else"])],
    )
    .await;
    let swf = SwfWorld::new(world.env, &unique("plugin-pending")).await;
    let run_id = swf.start("order-9").await;

    let text = ok(run(
        &world,
        &emu.endpoint,
        &[
            "pending",
            "-n",
            &world.ns,
            "--region",
            signalman_testenv::REGION,
            "--domain",
            &swf.domain,
        ],
    ));
    eprintln!("{text}");
    assert!(text.contains(&ours), "{text}");
    assert!(
        !text.contains(&theirs),
        "not listed to approve that one:\n{text}"
    );
    assert!(text.contains(&run_id), "the open SWF run:\n{text}");
    let documents: Vec<serde_json::Value> = serde_norway::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("a YAML document"))
        .filter(|v: &serde_json::Value| v.is_object())
        .collect();
    let workflow = documents
        .iter()
        .find(|d| d["kind"] == "WorkflowSignal")
        .expect("a WorkflowSignal manifest");
    assert_eq!(workflow["spec"]["runId"], run_id.as_str());
    let approval = documents
        .iter()
        .find(|d| d["kind"] == "AutomationSignal")
        .expect("an AutomationSignal manifest");
    assert_eq!(approval["spec"]["automationExecutionId"], ours.as_str());
    assert_eq!(approval["spec"]["signalType"], "Approve");
    assert_eq!(approval["metadata"]["namespace"], world.ns.as_str());

    // Applied as printed, it gets delivered and the execution moves on.
    let signal: AutomationSignal = serde_json::from_value(approval.clone()).expect("a signal");
    let name = signal.metadata.name.clone().expect("a name");
    world.create(&signal).await;
    let env = aws_env_at(&emu.endpoint, OPERATOR_ACCESS_KEY);
    let _operator = world.operator("op-plugin-pending", &pairs(&env));
    let status = world
        .wait_done::<AutomationSignal>(&name, Duration::from_secs(60))
        .await;
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    let execution = person
        .get_automation_execution()
        .automation_execution_id(&ours)
        .send()
        .await
        .expect("GetAutomationExecution")
        .automation_execution
        .expect("an execution");
    assert_ne!(
        execution.automation_execution_status(),
        Some(&AutomationExecutionStatus::Waiting),
        "approved: {execution:?}"
    );
    // status of an AutomationSignal: the execution as AWS shows it now, and the receipt.
    let text = ok(run(
        &world,
        &emu.endpoint,
        &[
            "status",
            &name,
            "-n",
            &world.ns,
            "--operator-namespace",
            &world.ns,
        ],
    ));
    eprintln!("{text}");
    for want in [
        "Phase:         Succeeded".to_string(),
        format!("execution {ours} of document Signalman-Approve: status "),
        "step approve: 1 approver decision(s) recorded".to_string(),
        format!("SignalReceipt {}/r-", world.ns),
        format!("target {ours}"),
    ] {
        assert!(text.contains(&want), "{want:?} in\n{text}");
    }
}

/// A WorkflowSignal `name` with an hour's backoff, in a world of its own whose emulator has
/// `faults`, and an operator working it: started, and returned once the signal is in `phase`.
struct LongWait {
    world: World,
    emu: signalman_testenv::Emulator,
    swf: SwfWorld,
    run_id: String,
    /// The signal's status once in that phase.
    status: signalman::api::SignalStatus,
    _operator: crate::common::Operator,
}

impl LongWait {
    async fn start(prefix: &str, name: &str, faults: FaultConfig, phase: Phase) -> LongWait {
        let world = World::new(prefix).await;
        let emu = world.env.private_emulator().await;
        emu.handle.set_faults(faults).expect("faults");
        let swf = SwfWorld::new(world.env, &unique(prefix)).await;
        let run_id = swf.start("wf").await;
        let mut signal = wf_signal(name, &swf.domain, "wf", Some("once"));
        signal.spec.retry = Some(RetryPolicy {
            initial_backoff_seconds: Some(3600),
            max_backoff_seconds: Some(3600),
            ..Default::default()
        });
        world.create(&signal).await;
        let env = aws_env_at(&emu.endpoint, OPERATOR_ACCESS_KEY);
        let _operator = world.operator(&format!("op-{prefix}"), &pairs(&env));
        world.wait_phase::<WorkflowSignal>(name, phase).await;
        let status = world
            .api::<WorkflowSignal>()
            .get(name)
            .await
            .expect("get")
            .status
            .expect("a status");
        LongWait {
            world,
            emu,
            swf,
            run_id,
            status,
            _operator,
        }
    }
}

/// `pending` without `--domain` looks the region's domains up (ListDomains, registered ones) and
/// searches those the namespace's SignalPolicies allow: the open runs of two allowed domains are
/// printed, a third domain's run is not, though its run is just as open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_without_a_domain_searches_every_domain_the_namespace_may_signal() {
    let world = World::new("plugin-domains").await;
    let ns = world.bare_namespace("plugin-domains").await;
    let prefix = unique("pd");
    world
        .policy_for(
            &ns,
            serde_json::json!({"swf": {"domains": [format!("{prefix}-allowed-*")],
                                       "workflowIds": ["*"]}}),
        )
        .await;
    let mut runs = Vec::new();
    for domain in ["allowed-1", "allowed-2", "other"] {
        let swf = SwfWorld::new(world.env, &format!("{prefix}-{domain}")).await;
        runs.push(swf.start(&format!("order-{domain}")).await);
    }

    let text = ok(run(
        &world,
        &world.env.aws_endpoint,
        &["pending", "-n", &ns, "--region", signalman_testenv::REGION],
    ));
    eprintln!("{text}");
    assert!(text.contains(&runs[0]) && text.contains(&runs[1]), "{text}");
    assert!(
        text.contains(&format!("domain: {prefix}-allowed-1")),
        "a manifest for the allowed domain:\n{text}"
    );
    assert!(
        !text.contains(&runs[2]) && !text.contains(&format!("{prefix}-other")),
        "no SignalPolicy lets {ns} signal {prefix}-other:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_ends_a_long_backoff_at_once_and_sends_once() {
    // The first send fails with a 5xx: an attempt of unknown fate, to be verified after a
    // backoff of half an hour or more.
    let faults = FaultConfig::none().with_rule(
        Service::Swf,
        FaultRule::server_error()
            .on("SignalWorkflowExecution")
            .times(1),
    );
    let LongWait {
        world,
        emu,
        swf,
        run_id,
        status: waiting,
        _operator,
    } = LongWait::start("plugin-retry", "slow", faults, Phase::Verifying).await;
    let next = waiting
        .next_attempt_time
        .as_ref()
        .expect("a scheduled verification")
        .0;
    assert!(
        next.duration_since(k8s_openapi::jiff::Timestamp::now())
            .as_secs()
            > 600,
        "a long wait: {waiting:?}"
    );

    let text = ok(run(
        &world,
        &emu.endpoint,
        &["retry", "slow", "-n", &world.ns],
    ));
    assert!(text.contains("retry requested at"), "{text}");
    let status = world
        .wait_done::<WorkflowSignal>("slow", Duration::from_secs(60))
        .await;
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    assert!(status.retry_request_honoured.is_some(), "{status:?}");
    let notes = world.event_notes("slow", "RetryRequested").await;
    assert!(
        notes.iter().any(|n| n.starts_with("retry requested at")),
        "a RetryRequested Event: {:?}",
        world.event_reasons("slow").await
    );
    swf.assert_each_input_once("wf", &run_id, ["once".to_string()].into_iter())
        .await;

    // A finished signal: retry says so and changes nothing.
    let text = ok(run(
        &world,
        &emu.endpoint,
        &["retry", "slow", "-n", &world.ns],
    ));
    assert!(text.contains("retry does nothing"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_makes_a_throttled_signal_attempt_at_once() {
    // Every send throttled: the signal waits, Pending, for half an hour or more.
    let faults = FaultConfig::none().with_throttle(
        Service::Swf,
        ThrottleRule::new("SignalWorkflowExecution", 0.0, 0.0),
    );
    let LongWait {
        world,
        emu,
        swf,
        run_id,
        status: waiting,
        _operator,
    } = LongWait::start("plugin-retry-pending", "throttled", faults, Phase::Pending).await;
    assert_eq!(
        condition_reason(&waiting, "Reconciling").as_deref(),
        Some("Throttled")
    );
    emu.handle.set_faults(FaultConfig::none()).expect("faults");

    let text = ok(run(
        &world,
        &emu.endpoint,
        &["retry", "throttled", "-n", &world.ns],
    ));
    assert!(text.contains("the next attempt is made now"), "{text}");
    let status = world
        .wait_done::<WorkflowSignal>("throttled", Duration::from_secs(20))
        .await;
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    assert_eq!(
        status.attempts, 1,
        "the throttled attempt was given back: {status:?}"
    );
    swf.assert_each_input_once("wf", &run_id, ["once".to_string()].into_iter())
        .await;
}
