//! The credential paths of a pod, for real: the operator runs with no access key at all, only
//! IRSA's `AWS_ROLE_ARN` + `AWS_WEB_IDENTITY_TOKEN_FILE` (a token from the real API server's
//! TokenRequest, exchanged by the SDK with the emulator's STS AssumeRoleWithWebIdentity, which
//! verifies it against the API server's OIDC discovery and JWKS), or only EKS Pod Identity's
//! container credentials variables. Its signals must be sent as the assumed role.
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aws_sdk_ssm::types::ExecutionMode;
use signalman::api::{AutomationSignal, Phase, SignalStatus};
use signalman_testenv::aws_emulator::{
    ContainerCredentials, RoleTrust, StsConfig, WebIdentityTrust, CONTAINER_CREDENTIALS_PATH,
    POD_IDENTITY_AUDIENCE,
};
use signalman_testenv::{Emulator, SERVICE_ACCOUNT_ISSUER};

use crate::common::World;

const ROLE: &str = "arn:aws:iam::123456789012:role/SignalmanApprover";
const SESSION_PREFIX: &str = "arn:aws:sts::123456789012:assumed-role/SignalmanApprover/";
/// The static keys every other test gives the operator; these tests take them away.
const STATIC_KEYS: [&str; 3] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
];

struct CredWorld {
    world: World,
    emu: Emulator,
    ssm: aws_sdk_ssm::Client,
    dir: PathBuf,
}

impl CredWorld {
    async fn new(prefix: &str) -> CredWorld {
        let world = World::new(prefix).await;
        let emu = world.env.private_emulator().await;
        let ssm = signalman_testenv::ssm_client_at(&emu.endpoint, "release-manager");
        let dir = world.env.state_dir.join(format!("creds-{}", world.ns));
        std::fs::create_dir_all(&dir).expect("a token directory");
        CredWorld {
            world,
            emu,
            ssm,
            dir,
        }
    }

    /// STS that trusts the API server's issuer for the operator's ServiceAccount only.
    async fn trust_irsa(&self, session_seconds: Option<u64>) {
        let provider = self
            .world
            .env
            .oidc_provider()
            .await
            .expect("the API server as an OIDC provider");
        self.emu.handle.set_sts(StsConfig {
            oidc_providers: vec![provider],
            roles: vec![RoleTrust {
                role_arn: ROLE.into(),
                web_identities: vec![WebIdentityTrust {
                    issuer: SERVICE_ACCOUNT_ISSUER.into(),
                    subject: format!("system:serviceaccount:{}:signalman", self.world.ns),
                }],
                ..RoleTrust::default()
            }],
            session_duration_seconds: session_seconds,
            ..StsConfig::default()
        });
    }

    /// A projected-token file for the operator's ServiceAccount.
    async fn token_file(&self, file: &str, audience: &str) -> PathBuf {
        let token = self
            .world
            .env
            .service_account_token(&self.world.ns, "signalman", audience, 3600)
            .await
            .expect("a ServiceAccount token");
        let path = self.dir.join(file);
        std::fs::write(&path, token).expect("writing the token");
        path
    }

    /// An operator with the emulator's endpoint and region, `vars`, and no static keys.
    fn operator(&self, identity: &str, vars: &[(&str, String)]) -> crate::common::Operator {
        let mut env: Vec<(&str, String)> = vec![
            ("AWS_ENDPOINT_URL", self.emu.endpoint.clone()),
            ("AWS_REGION", signalman_testenv::REGION.to_string()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ];
        env.extend(vars.iter().cloned());
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.world.operator_without(identity, &env, &STATIC_KEYS)
    }

    /// An execution waiting for an approval by the role.
    async fn execution(&self) -> String {
        self.ssm
            .start_automation_execution()
            .document_name("Signalman-Approve")
            .parameters("Approvers", vec![ROLE.to_string()])
            .mode(ExecutionMode::Auto)
            .send()
            .await
            .expect("StartAutomationExecution")
            .automation_execution_id()
            .expect("an id")
            .to_string()
    }

    async fn approve(&self, name: &str, id: &str) {
        // Short backoffs, so a refused credential shows in the status within the test's time.
        let signal: AutomationSignal = serde_json::from_value(serde_json::json!({
            "apiVersion": "signalman.dev/v1alpha1",
            "kind": "AutomationSignal",
            "metadata": {"name": name},
            "spec": {
                "automationExecutionId": id,
                "signalType": "Approve",
                "retry": {"maxAttempts": 10, "initialBackoffSeconds": 1, "maxBackoffSeconds": 2},
            },
        }))
        .expect("an AutomationSignal");
        self.world.create(&signal).await;
    }

    async fn done(&self, name: &str) -> SignalStatus {
        self.world
            .wait_done::<AutomationSignal>(name, Duration::from_secs(60))
            .await
    }

    /// The status once an attempt has been recorded with a message (or the signal finished),
    /// within `timeout`.
    async fn first_error(&self, name: &str, timeout: Duration) -> SignalStatus {
        let api = self.world.api::<AutomationSignal>();
        let deadline = Instant::now() + timeout;
        loop {
            let status = api
                .get(name)
                .await
                .expect("reading the signal")
                .status
                .unwrap_or_default();
            let recorded = status.attempts >= 1
                && status.message.is_some()
                && !matches!(status.phase, None | Some(Phase::Pending | Phase::Sending));
            if recorded
                || status.last_error_code.is_some()
                || matches!(status.phase, Some(Phase::Succeeded | Phase::Failed))
            {
                return status;
            }
            assert!(Instant::now() < deadline, "{name}: no outcome: {status:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Principals of the SendAutomationSignal calls the emulator applied to `id`.
    fn applied(&self, id: &str) -> Vec<String> {
        self.emu
            .handle
            .counters()
            .ssm
            .signals
            .into_iter()
            .filter(|s| s.execution_id == id)
            .map(|s| s.principal)
            .collect()
    }
}

fn summary(status: &SignalStatus) -> String {
    let conditions: Vec<String> = status
        .conditions
        .iter()
        .map(|c| format!("{}={}/{}", c.type_, c.status, c.reason))
        .collect();
    format!(
        "phase={:?} attempts={} lastErrorCode={:?} message={:?} conditions=[{}]",
        status.phase,
        status.attempts,
        status.last_error_code,
        status.message,
        conditions.join(", ")
    )
}

/// IRSA: the approvals are the assumed role's, and with 30-second credentials spread over
/// more than two lifetimes every send succeeds first time (the SDK refreshes before expiry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn irsa_sends_as_the_assumed_role_and_refreshes_before_expiry() {
    let cw = CredWorld::new("creds-irsa").await;
    cw.trust_irsa(Some(30)).await;
    let token = cw.token_file("token", "sts.amazonaws.com").await;
    let _operator = cw.operator(
        "op-irsa",
        &[
            ("AWS_ROLE_ARN", ROLE.to_string()),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token.display().to_string()),
        ],
    );
    let begin = Instant::now();
    let mut ids = Vec::new();
    for i in 0..6 {
        let id = cw.execution().await;
        let name = format!("approve-{i}");
        cw.approve(&name, &id).await;
        let status = cw.done(&name).await;
        assert_eq!(
            status.phase,
            Some(Phase::Succeeded),
            "{name}: {}",
            summary(&status)
        );
        assert_eq!(status.attempts, 1, "{name}: {}", summary(&status));
        let applied = cw.applied(&id);
        assert_eq!(applied.len(), 1, "{name}: one approval");
        assert!(
            applied[0].starts_with(SESSION_PREFIX),
            "{name}: approved as {}, not the assumed role",
            applied[0]
        );
        let exec = cw
            .emu
            .handle
            .automation_execution(&id)
            .expect("the execution");
        assert_eq!(exec["AutomationExecutionStatus"], "Success", "{name}");
        ids.push(id);
        tokio::time::sleep(Duration::from_secs(12)).await;
    }
    let elapsed = begin.elapsed();
    let sessions: Vec<_> = cw
        .emu
        .handle
        .sts_sessions()
        .into_iter()
        .filter(|s| s.issued_by == "AssumeRoleWithWebIdentity")
        .collect();
    eprintln!(
        "irsa: 6 approvals over {:.0}s with 30s credentials: {} AssumeRoleWithWebIdentity sessions",
        elapsed.as_secs_f64(),
        sessions.len()
    );
    assert!(
        sessions.len() >= 2,
        "credentials were never refreshed in {elapsed:?}: {} sessions",
        sessions.len()
    );
    assert!(sessions.iter().all(|s| s.role_arn == ROLE));
}

/// IRSA with a token STS refuses: the signal is never sent, and its status says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn irsa_wrong_audience_or_expired_token_is_refused_with_a_clear_status() {
    let cw = CredWorld::new("creds-irsa-bad").await;
    cw.trust_irsa(None).await;
    // A token for another audience (Pod Identity's), exchanged for STS.
    let wrong = cw
        .token_file("wrong-audience", "pods.eks.amazonaws.com")
        .await;
    let mut operator = cw.operator(
        "op-irsa-bad",
        &[
            ("AWS_ROLE_ARN", ROLE.to_string()),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", wrong.display().to_string()),
        ],
    );
    let id = cw.execution().await;
    cw.approve("wrong-audience", &id).await;
    let status = cw
        .first_error("wrong-audience", Duration::from_secs(45))
        .await;
    eprintln!("irsa wrong audience: {}", summary(&status));
    assert_ne!(status.phase, Some(Phase::Succeeded), "{}", summary(&status));
    // Clear: nothing was sent, the credentials were refused, and it is retried.
    assert_eq!(status.phase, Some(Phase::Pending), "{}", summary(&status));
    assert_eq!(
        crate::common::condition_reason(&status, "Reconciling").as_deref(),
        Some("PermissionDenied"),
        "{}",
        summary(&status)
    );
    assert_eq!(
        status.last_error_code.as_deref(),
        Some("InvalidIdentityToken"),
        "{}",
        summary(&status)
    );
    assert!(
        status
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("could not get AWS credentials"),
        "{}",
        summary(&status)
    );
    // Retries go on; none of them may reach SSM.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(cw.applied(&id).is_empty(), "nothing was sent");
    operator.kill();

    // A token past its expiry (STS judges it 2 hours later than now).
    let mut config = cw.emu.handle.sts();
    config.web_identity_clock_skew_seconds = 7200;
    cw.emu.handle.set_sts(config);
    let token = cw.token_file("token", "sts.amazonaws.com").await;
    let _operator = cw.operator(
        "op-irsa-expired",
        &[
            ("AWS_ROLE_ARN", ROLE.to_string()),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token.display().to_string()),
        ],
    );
    let id = cw.execution().await;
    cw.approve("expired-token", &id).await;
    let status = cw
        .first_error("expired-token", Duration::from_secs(45))
        .await;
    eprintln!("irsa expired token: {}", summary(&status));
    assert_ne!(status.phase, Some(Phase::Succeeded), "{}", summary(&status));
    // Clear: nothing was sent, the credentials were refused, and it is retried.
    assert_eq!(status.phase, Some(Phase::Pending), "{}", summary(&status));
    assert_eq!(
        crate::common::condition_reason(&status, "Reconciling").as_deref(),
        Some("PermissionDenied"),
        "{}",
        summary(&status)
    );
    assert_eq!(
        status.last_error_code.as_deref(),
        Some("ExpiredTokenException"),
        "{}",
        summary(&status)
    );
    assert!(
        status
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("could not get AWS credentials"),
        "{}",
        summary(&status)
    );
    // Retries go on; none of them may reach SSM.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(cw.applied(&id).is_empty(), "nothing was sent");
    assert!(
        cw.emu
            .handle
            .sts_sessions()
            .iter()
            .all(|s| s.issued_by != "AssumeRoleWithWebIdentity"),
        "STS issued no credentials for either token"
    );
}

/// EKS Pod Identity: only the container credentials variables. The endpoint verifies the pod's
/// ServiceAccount token (audience `pods.eks.amazonaws.com`) against the API server's JWKS and
/// answers the associated role's credentials; the approval is the role's. Another
/// ServiceAccount's token, or a token that is no JWT, gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_identity_sends_as_the_associated_role() {
    let cw = CredWorld::new("creds-pod").await;
    let provider = cw
        .world
        .env
        .oidc_provider()
        .await
        .expect("the API server as an OIDC provider");
    cw.emu.handle.set_sts(StsConfig {
        oidc_providers: vec![provider],
        container_credentials: vec![ContainerCredentials {
            namespace: Some(cw.world.ns.clone()),
            service_account: Some("signalman".into()),
            role_arn: ROLE.into(),
            session_name: Some("eks-signalman-pod".into()),
            ..ContainerCredentials::default()
        }],
        ..StsConfig::default()
    });
    let token = cw.token_file("pod-token", POD_IDENTITY_AUDIENCE).await;
    let uri = format!("{}{}", cw.emu.endpoint, CONTAINER_CREDENTIALS_PATH);
    let mut operator = cw.operator(
        "op-pod",
        &[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri.clone()),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                token.display().to_string(),
            ),
        ],
    );
    let id = cw.execution().await;
    cw.approve("pod-approve", &id).await;
    let status = cw.done("pod-approve").await;
    assert_eq!(status.phase, Some(Phase::Succeeded), "{}", summary(&status));
    assert_eq!(status.attempts, 1);
    assert_eq!(
        cw.applied(&id),
        vec![format!("{SESSION_PREFIX}eks-signalman-pod")]
    );
    let session = cw
        .emu
        .handle
        .sts_sessions()
        .into_iter()
        .find(|s| s.issued_by == "ContainerCredentials")
        .expect("a container credentials session");
    let tag = |k: &str, v: &str| (k.to_string(), v.to_string());
    assert!(session
        .tags
        .contains(&tag("kubernetes-namespace", &cw.world.ns)));
    assert!(session
        .tags
        .contains(&tag("kubernetes-service-account", "signalman")));
    operator.kill();

    let intruder = cw
        .world
        .env
        .service_account_token(&cw.world.ns, "intruder", POD_IDENTITY_AUDIENCE, 3600)
        .await
        .expect("a token");
    for (case, name, token) in [
        ("another ServiceAccount's token", "pod-bad-sa", intruder),
        ("no JWT", "pod-bad-jwt", "not-a-token".to_string()),
    ] {
        let path = cw.dir.join(name);
        std::fs::write(&path, token).expect("writing a token");
        let _operator = cw.operator(
            "op-pod-bad",
            &[
                ("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri.clone()),
                (
                    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                    path.display().to_string(),
                ),
            ],
        );
        let id = cw.execution().await;
        cw.approve(name, &id).await;
        let status = cw.first_error(name, Duration::from_secs(45)).await;
        eprintln!("pod identity, {case}: {}", summary(&status));
        assert_ne!(status.phase, Some(Phase::Succeeded), "{}", summary(&status));
        // Retries go on; none of them may reach SSM.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(cw.applied(&id).is_empty(), "{case}: nothing was sent");
    }
}

impl CredWorld {
    /// An execution whose approval needs the role *and* the release manager.
    async fn execution_needing_two(&self) -> String {
        self.ssm
            .start_automation_execution()
            .document_name("Signalman-Approve")
            .parameters(
                "Approvers",
                vec![ROLE.to_string(), "release-manager".to_string()],
            )
            .parameters("MinRequiredApprovals", vec!["2".to_string()])
            .mode(ExecutionMode::Auto)
            .send()
            .await
            .expect("StartAutomationExecution")
            .automation_execution_id()
            .expect("an id")
            .to_string()
    }

    /// The next SendAutomationSignal is applied and its answer lost.
    fn lose_the_next_answer(&self) {
        use signalman_testenv::aws_emulator::{FaultConfig, FaultRule, Service};
        self.emu
            .handle
            .set_faults(
                FaultConfig::none().with_rule(
                    Service::Ssm,
                    FaultRule::drop_after_apply()
                        .on("SendAutomationSignal")
                        .times(1),
                ),
            )
            .expect("faults");
    }

    fn irsa_env(&self, token: &std::path::Path) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ROLE_ARN", ROLE.to_string()),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token.display().to_string()),
        ]
    }
}

/// The default IRSA set-up (no AWS_ROLE_SESSION_NAME: every process signs as another session of
/// the role). An approval applied with its answer lost, the operator killed while it waits to
/// verify, and a new process: it recognises the decision as its own (the role's, this signal's)
/// and never approves a second time in the release manager's place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn irsa_restart_after_a_lost_answer_verifies_its_own_decision() {
    let cw = CredWorld::new("creds-irsa-restart").await;
    cw.trust_irsa(None).await;
    let token = cw.token_file("token", "sts.amazonaws.com").await;
    let mut env = cw.irsa_env(&token);
    // Long enough to kill the process between the lost answer and the verification.
    env.push(("SIGNALMAN_VERIFY_SETTLE_MS", "6000".to_string()));
    let mut operator = cw.operator("op-irsa-restart", &env);
    let id = cw.execution_needing_two().await;
    cw.lose_the_next_answer();
    cw.approve("approve", &id).await;
    cw.world
        .wait_phase::<AutomationSignal>("approve", Phase::Verifying)
        .await;
    operator.kill();
    operator.restart();
    let status = cw.done("approve").await;
    let applied = cw.applied(&id);
    eprintln!("irsa restart: {} applied={applied:?}", summary(&status));
    assert_eq!(status.phase, Some(Phase::Succeeded), "{}", summary(&status));
    assert_eq!(
        crate::common::ready_reason(&status).as_deref(),
        Some("DeliveryVerified"),
        "{}",
        summary(&status)
    );
    assert_eq!(applied.len(), 1, "one decision by the role: {applied:?}");
    let exec = cw
        .emu
        .handle
        .automation_execution(&id)
        .expect("the execution");
    assert_eq!(
        exec["AutomationExecutionStatus"], "Waiting",
        "still waiting for the release manager"
    );
}

/// IRSA with 30-second credentials: after a refresh the operator signs as a new session, and an
/// approval whose answer is lost then is still recognised as its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn irsa_lost_answer_after_a_credential_refresh_is_verified() {
    let cw = CredWorld::new("creds-irsa-refresh").await;
    cw.trust_irsa(Some(30)).await;
    let token = cw.token_file("token", "sts.amazonaws.com").await;
    let _operator = cw.operator("op-irsa-refresh", &cw.irsa_env(&token));
    // A first approval: the operator learns who it is.
    let first = cw.execution().await;
    cw.approve("first", &first).await;
    let status = cw.done("first").await;
    assert_eq!(status.phase, Some(Phase::Succeeded), "{}", summary(&status));
    // Past the first credentials' lifetime: the next call signs with a new session.
    tokio::time::sleep(Duration::from_secs(35)).await;
    let id = cw.execution().await;
    cw.lose_the_next_answer();
    cw.approve("after-refresh", &id).await;
    let status = cw.done("after-refresh").await;
    let applied = cw.applied(&id);
    eprintln!("irsa refresh: {} applied={applied:?}", summary(&status));
    assert_eq!(status.phase, Some(Phase::Succeeded), "{}", summary(&status));
    assert_eq!(
        crate::common::ready_reason(&status).as_deref(),
        Some("DeliveryVerified"),
        "{}",
        summary(&status)
    );
    assert_eq!(applied.len(), 1, "{applied:?}");
    let sessions: Vec<String> = cw
        .emu
        .handle
        .sts_sessions()
        .into_iter()
        .filter(|s| s.issued_by == "AssumeRoleWithWebIdentity")
        .map(|s| s.arn)
        .collect();
    assert!(sessions.len() >= 2, "never refreshed: {sessions:?}");
}

/// EKS Pod Identity as EKS names its sessions (`eks-<cluster>-<pod>-<uuid>`, new with every
/// fetch): an approval applied with its answer lost, the operator restarted, and the new
/// process, another session of the role, recognises the decision as its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_identity_restart_after_a_lost_answer_verifies_its_own_decision() {
    let cw = CredWorld::new("creds-pod-restart").await;
    let provider = cw
        .world
        .env
        .oidc_provider()
        .await
        .expect("the API server as an OIDC provider");
    cw.emu.handle.set_sts(StsConfig {
        oidc_providers: vec![provider],
        container_credentials: vec![ContainerCredentials {
            namespace: Some(cw.world.ns.clone()),
            service_account: Some("signalman".into()),
            role_arn: ROLE.into(),
            ..ContainerCredentials::default()
        }],
        ..StsConfig::default()
    });
    let token = cw.token_file("pod-token", POD_IDENTITY_AUDIENCE).await;
    let uri = format!("{}{}", cw.emu.endpoint, CONTAINER_CREDENTIALS_PATH);
    let mut operator = cw.operator(
        "op-pod-restart",
        &[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                token.display().to_string(),
            ),
            ("SIGNALMAN_VERIFY_SETTLE_MS", "6000".to_string()),
        ],
    );
    let id = cw.execution_needing_two().await;
    cw.lose_the_next_answer();
    cw.approve("approve", &id).await;
    cw.world
        .wait_phase::<AutomationSignal>("approve", Phase::Verifying)
        .await;
    operator.kill();
    operator.restart();
    let status = cw.done("approve").await;
    let applied = cw.applied(&id);
    eprintln!(
        "pod identity restart: {} applied={applied:?}",
        summary(&status)
    );
    assert_eq!(
        crate::common::ready_reason(&status).as_deref(),
        Some("DeliveryVerified"),
        "{}",
        summary(&status)
    );
    assert_eq!(applied.len(), 1, "{applied:?}");
    assert!(
        applied[0].starts_with(&format!("{SESSION_PREFIX}eks-")),
        "an EKS-named session: {applied:?}"
    );
    let sessions: Vec<String> = cw
        .emu
        .handle
        .sts_sessions()
        .into_iter()
        .filter(|s| s.issued_by == "ContainerCredentials")
        .map(|s| s.arn)
        .collect();
    assert!(sessions.len() >= 2, "one session per process: {sessions:?}");
}
