//! STS role sessions against the real aws-sdk-sts, aws-sdk-ssm and boto3 clients:
//! AssumeRoleWithWebIdentity (tokens of a local OIDC issuer with its own discovery document
//! and JWKS), AssumeRole (tags, SourceIdentity, refusal), the container credentials endpoint,
//! and temporary credentials refused once expired.
mod common;

use std::convert::Infallible;
use std::time::Duration;

use aws_emulator::{
    ContainerCredentials, OidcProvider, RoleTrust, StsConfig, WebIdentityTrust,
    DEFAULT_CLUSTER_NAME,
};
use aws_sdk_ssm::types::{ExecutionMode, SignalType};
use aws_sdk_sts::error::ProvideErrorMetadata;
use bytes::Bytes;
use common::*;
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const ROLE: &str = "arn:aws:iam::123456789012:role/Approver";
const ROLE_SESSION_ARN: &str = "arn:aws:sts::123456789012:assumed-role/Approver/pod-1";

/// A local OIDC issuer: discovery document and JWKS over HTTP, one ES256 key.
struct Issuer {
    url: String,
    key: EncodingKey,
    kid: String,
}

fn es256_key() -> EncodingKey {
    use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("an EC key");
    EncodingKey::from_ec_der(pkcs8.as_ref())
}

async fn issuer() -> Issuer {
    let key = es256_key();
    let kid = format!("k{:08x}", rand::random::<u32>());
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::ES256)
        .expect("a JWK of the key");
    jwk.common.key_id = Some(kid.clone());
    jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let discovery = json!({
        "issuer": url,
        "jwks_uri": format!("{url}/keys"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
    })
    .to_string();
    let jwks = json!({"keys": [jwk]}).to_string();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (discovery, jwks) = (discovery.clone(), jwks.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let body = match req.uri().path() {
                        "/.well-known/openid-configuration" => Some(discovery.clone()),
                        "/keys" => Some(jwks.clone()),
                        _ => None,
                    };
                    async move {
                        Ok::<_, Infallible>(match body {
                            Some(b) => hyper::Response::new(Full::new(Bytes::from(b))),
                            None => hyper::Response::builder()
                                .status(404)
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        })
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Issuer { url, key, kid }
}

impl Issuer {
    fn provider(&self) -> OidcProvider {
        OidcProvider {
            issuer: self.url.clone(),
            ..OidcProvider::default()
        }
    }

    /// A token for `sub` with audience `aud`, expiring `exp_in` seconds from now.
    fn token(&self, sub: &str, aud: &str, exp_in: i64, extra: Value) -> String {
        self.sign(&self.key, sub, aud, exp_in, extra)
    }

    fn sign(&self, key: &EncodingKey, sub: &str, aud: &str, exp_in: i64, extra: Value) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let mut claims = json!({
            "iss": self.url, "sub": sub, "aud": [aud], "iat": now, "nbf": now, "exp": now + exp_in,
        });
        if let (Some(c), Value::Object(extra)) = (claims.as_object_mut(), extra) {
            c.extend(extra);
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, key).expect("signing a token")
    }
}

/// An STS client with retries off; unsigned when `creds` is `None`.
fn sts(endpoint: &str, creds: Option<&aws_sdk_sts::types::Credentials>) -> aws_sdk_sts::Client {
    use aws_sdk_sts::config::{retry::RetryConfig, BehaviorVersion, Credentials, Region};
    let mut config = aws_sdk_sts::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .retry_config(RetryConfig::disabled());
    if let Some(c) = creds {
        config = config.credentials_provider(Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_string()),
            None,
            "test",
        ));
    }
    aws_sdk_sts::Client::from_conf(config.build())
}

fn ssm_as(endpoint: &str, c: &aws_sdk_sts::types::Credentials) -> aws_sdk_ssm::Client {
    use aws_sdk_ssm::config::{retry::RetryConfig, BehaviorVersion, Credentials, Region};
    let config = aws_sdk_ssm::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_string()),
            None,
            "test",
        ))
        .retry_config(RetryConfig::disabled())
        .build();
    aws_sdk_ssm::Client::from_conf(config)
}

async fn web_identity(
    client: &aws_sdk_sts::Client,
    role: &str,
    token: &str,
) -> Result<
    aws_sdk_sts::operation::assume_role_with_web_identity::AssumeRoleWithWebIdentityOutput,
    String,
> {
    client
        .assume_role_with_web_identity()
        .role_arn(role)
        .role_session_name("pod-1")
        .web_identity_token(token)
        .send()
        .await
        .map_err(|e| e.code().unwrap_or("(no code)").to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_identity_credentials_act_as_the_assumed_role() {
    let emu = emulator().await;
    let issuer = issuer().await;
    emu.handle.set_sts(StsConfig {
        oidc_providers: vec![issuer.provider()],
        ..StsConfig::default()
    });
    let client = sts(&emu.endpoint, None);
    let token = issuer.token(
        "system:serviceaccount:ops:signalman",
        "sts.amazonaws.com",
        600,
        json!({}),
    );
    let out = web_identity(&client, ROLE, &token).await.expect("assumed");
    let creds = out.credentials().expect("credentials").clone();
    assert!(creds.access_key_id().starts_with("ASIA"));
    assert_eq!(creds.secret_access_key().len(), 40);
    let lifetime = creds.expiration().secs()
        - std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
    assert!(
        (3590..=3600).contains(&lifetime),
        "default 3600 s, got {lifetime}"
    );
    let user = out.assumed_role_user().expect("assumed role user");
    assert_eq!(user.arn(), ROLE_SESSION_ARN);
    assert!(
        user.assumed_role_id().starts_with("AROA") && user.assumed_role_id().ends_with(":pod-1")
    );
    assert_eq!(
        out.subject_from_web_identity_token(),
        Some("system:serviceaccount:ops:signalman")
    );
    assert_eq!(out.audience(), Some("sts.amazonaws.com"));
    assert_eq!(
        out.provider(),
        Some(issuer.url.trim_start_matches("http://"))
    );

    // Later calls signed with the session are the assumed role.
    let who = sts(&emu.endpoint, Some(&creds))
        .get_caller_identity()
        .send()
        .await
        .expect("GetCallerIdentity");
    assert_eq!(who.arn(), Some(ROLE_SESSION_ARN));
    // An aws:approve step that names the role accepts the session's approval.
    let ssm = ssm_as(&emu.endpoint, &creds);
    let id = start(
        &ssm,
        "Signalman-Approve",
        &[("Approvers", &[ROLE])],
        ExecutionMode::Auto,
    )
    .await;
    send(&ssm, &id, SignalType::Approve, &[("Comment", "ok")])
        .await
        .expect("the role's session approves");
    assert_eq!(status(&get(&ssm, &id).await), "Success");
    let signals = emu.handle.counters().ssm.signals;
    assert_eq!(signals.len(), 1);
    assert_eq!(signals[0].principal, ROLE_SESSION_ARN);
    let session = emu
        .handle
        .sts_session(creds.access_key_id())
        .expect("the session is recorded");
    assert_eq!(session.arn, ROLE_SESSION_ARN);
    assert_eq!(session.issued_by, "AssumeRoleWithWebIdentity");

    // The session token belongs to the key: without it, or with another, the key is refused.
    let mut forged = creds.clone();
    forged.session_token = "not-the-token".into();
    let err = sts(&emu.endpoint, Some(&forged))
        .get_caller_identity()
        .send()
        .await
        .expect_err("a wrong session token");
    assert_eq!(err.code(), Some("InvalidClientTokenId"));
    let err = send(
        &ssm_as(&emu.endpoint, &forged),
        &id,
        SignalType::Approve,
        &[],
    )
    .await
    .expect_err("a wrong session token");
    assert_eq!(err.code(), Some("UnrecognizedClientException"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_identity_tokens_are_checked_as_aws_does() {
    let emu = emulator().await;
    let issuer = issuer().await;
    // A key the issuer never published, under the published key's id.
    let other = es256_key();
    emu.handle.set_sts(StsConfig {
        oidc_providers: vec![issuer.provider()],
        roles: vec![RoleTrust {
            role_arn: ROLE.into(),
            web_identities: vec![WebIdentityTrust {
                issuer: issuer.url.clone(),
                subject: "system:serviceaccount:ops:signalman".into(),
            }],
            ..RoleTrust::default()
        }],
        ..StsConfig::default()
    });
    let client = sts(&emu.endpoint, None);
    let sub = "system:serviceaccount:ops:signalman";
    let cases = [
        (
            "wrong audience",
            issuer.token(sub, "pods.eks.amazonaws.com", 600, json!({})),
            ROLE,
            "InvalidIdentityToken",
        ),
        (
            "expired",
            issuer.token(sub, "sts.amazonaws.com", -5, json!({})),
            ROLE,
            "ExpiredTokenException",
        ),
        (
            "signed by another key",
            issuer.sign(&other, sub, "sts.amazonaws.com", 600, json!({})),
            ROLE,
            "InvalidIdentityToken",
        ),
        (
            "unknown issuer",
            issuer.token(
                sub,
                "sts.amazonaws.com",
                600,
                json!({"iss": "https://elsewhere.example"}),
            ),
            ROLE,
            "InvalidIdentityToken",
        ),
        (
            "untrusted subject",
            issuer.token(
                "system:serviceaccount:ops:other",
                "sts.amazonaws.com",
                600,
                json!({}),
            ),
            ROLE,
            "AccessDenied",
        ),
        (
            "unknown role",
            issuer.token(sub, "sts.amazonaws.com", 600, json!({})),
            "arn:aws:iam::123456789012:role/Nobody",
            "AccessDenied",
        ),
        (
            "not a JWT",
            "abcd.efgh".to_string(),
            ROLE,
            "InvalidIdentityToken",
        ),
    ];
    for (what, token, role, code) in cases {
        assert_eq!(
            web_identity(&client, role, &token).await.err().as_deref(),
            Some(code),
            "{what}"
        );
    }
    let ok = issuer.token(
        sub,
        "sts.amazonaws.com",
        600,
        json!({"https://aws.amazon.com/source_identity": "alice"}),
    );
    let out = web_identity(&client, ROLE, &ok)
        .await
        .expect("the trusted subject");
    assert_eq!(out.source_identity(), Some("alice"));
    // The clock skew setting makes a valid token expired, as time passing would.
    let mut config = emu.handle.sts();
    config.web_identity_clock_skew_seconds = 601;
    emu.handle.set_sts(config);
    assert_eq!(
        web_identity(&client, ROLE, &ok).await.err().as_deref(),
        Some("ExpiredTokenException")
    );
    // Model constraints come first.
    let err = client
        .assume_role_with_web_identity()
        .role_arn(ROLE)
        .role_session_name("pod-1")
        .web_identity_token(&ok)
        .duration_seconds(60)
        .send()
        .await
        .expect_err("DurationSeconds below 900");
    assert_eq!(err.code(), Some("ValidationError"));
    let err = client
        .assume_role_with_web_identity()
        .role_arn(ROLE)
        .role_session_name("has space")
        .web_identity_token(&ok)
        .send()
        .await
        .expect_err("a bad session name");
    assert_eq!(err.code(), Some("ValidationError"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_session_credentials_are_refused() {
    let emu = emulator().await;
    let issuer = issuer().await;
    emu.handle.set_sts(StsConfig {
        oidc_providers: vec![issuer.provider()],
        session_duration_seconds: Some(2),
        ..StsConfig::default()
    });
    let token = issuer.token("sub", "sts.amazonaws.com", 600, json!({}));
    let out = web_identity(&sts(&emu.endpoint, None), ROLE, &token)
        .await
        .expect("assumed");
    let creds = out.credentials().unwrap().clone();
    let ssm = ssm_as(&emu.endpoint, &creds);
    let id = start(
        &ssm,
        "Signalman-Approve",
        &[("Approvers", &[ROLE])],
        ExecutionMode::Auto,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let err = send(&ssm, &id, SignalType::Approve, &[])
        .await
        .expect_err("expired credentials");
    assert_eq!(err.code(), Some("ExpiredTokenException"));
    let err = sts(&emu.endpoint, Some(&creds))
        .get_caller_identity()
        .send()
        .await
        .expect_err("expired credentials");
    assert_eq!(err.code(), Some("ExpiredToken"));
    // SWF (forwarded to moto) is refused at the emulator, before any forwarding.
    let swf = {
        use aws_sdk_swf::config::{retry::RetryConfig, BehaviorVersion, Credentials, Region};
        aws_sdk_swf::Client::from_conf(
            aws_sdk_swf::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new("us-east-1"))
                .endpoint_url(&emu.endpoint)
                .credentials_provider(Credentials::new(
                    creds.access_key_id(),
                    creds.secret_access_key(),
                    Some(creds.session_token().to_string()),
                    None,
                    "test",
                ))
                .retry_config(RetryConfig::disabled())
                .build(),
        )
    };
    let err = swf
        .list_domains()
        .registration_status(aws_sdk_swf::types::RegistrationStatus::Registered)
        .send()
        .await
        .expect_err("expired credentials");
    assert_eq!(err.code(), Some("ExpiredTokenException"));
    assert_eq!(
        status(&get(&common::ssm(&emu.endpoint, "admin"), &id).await),
        "Waiting"
    );
    assert!(emu.handle.counters().ssm.signals.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assume_role_records_tags_and_source_identity_and_can_refuse() {
    let emu = emulator().await;
    let caller = {
        use aws_sdk_sts::config::{retry::RetryConfig, BehaviorVersion, Credentials, Region};
        aws_sdk_sts::Client::from_conf(
            aws_sdk_sts::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new("us-east-1"))
                .endpoint_url(&emu.endpoint)
                .credentials_provider(Credentials::new(
                    "signalman-operator",
                    "x",
                    None,
                    None,
                    "test",
                ))
                .retry_config(RetryConfig::disabled())
                .build(),
        )
    };
    let out = caller
        .assume_role()
        .role_arn(ROLE)
        .role_session_name("signalman-team-a")
        .source_identity("alice@example.com")
        .tags(
            aws_sdk_sts::types::Tag::builder()
                .key("namespace")
                .value("team-a")
                .build()
                .unwrap(),
        )
        .duration_seconds(900)
        .send()
        .await
        .expect("AssumeRole");
    let creds = out.credentials().unwrap().clone();
    let arn = "arn:aws:sts::123456789012:assumed-role/Approver/signalman-team-a";
    assert_eq!(out.assumed_role_user().unwrap().arn(), arn);
    assert_eq!(out.source_identity(), Some("alice@example.com"));
    let session = emu.handle.sts_session(creds.access_key_id()).unwrap();
    assert_eq!(
        session.source_identity.as_deref(),
        Some("alice@example.com")
    );
    assert_eq!(
        session.tags,
        vec![("namespace".to_string(), "team-a".to_string())]
    );
    assert_eq!(session.issued_by, "AssumeRole");
    let ssm = ssm_as(&emu.endpoint, &creds);
    let id = start(
        &ssm,
        "Signalman-Approve",
        &[("Approvers", &[ROLE])],
        ExecutionMode::Auto,
    )
    .await;
    send(&ssm, &id, SignalType::Approve, &[])
        .await
        .expect("approved as the role");
    let applied = emu.handle.counters().ssm.signals;
    assert_eq!(applied[0].principal, arn);
    assert_eq!(
        applied[0].source_identity.as_deref(),
        Some("alice@example.com")
    );

    // Role chaining keeps the SourceIdentity; changing it is refused.
    let chained = sts(&emu.endpoint, Some(&creds));
    let err = chained
        .assume_role()
        .role_arn(ROLE)
        .role_session_name("chained")
        .source_identity("mallory")
        .send()
        .await
        .expect_err("a changed SourceIdentity");
    assert_eq!(err.code(), Some("AccessDenied"));
    let out = chained
        .assume_role()
        .role_arn(ROLE)
        .role_session_name("chained")
        .send()
        .await
        .expect("chained");
    assert_eq!(out.source_identity(), Some("alice@example.com"));

    // Validation: bad SourceIdentity, duplicate tag keys, a duration over the role's maximum.
    let err = caller
        .assume_role()
        .role_arn(ROLE)
        .role_session_name("s1")
        .source_identity("aws:me")
        .send()
        .await
        .expect_err("aws: prefix");
    assert_eq!(err.code(), Some("ValidationError"));
    let err = caller
        .assume_role()
        .role_arn(ROLE)
        .role_session_name("s1")
        .duration_seconds(7200)
        .send()
        .await
        .expect_err("over MaxSessionDuration");
    assert_eq!(err.code(), Some("ValidationError"));

    // Trust by principal, then the refusal mode.
    emu.handle.set_sts(StsConfig {
        roles: vec![RoleTrust {
            role_arn: ROLE.into(),
            principals: vec!["arn:aws:iam::123456789012:user/signalman-operator".into()],
            ..RoleTrust::default()
        }],
        ..StsConfig::default()
    });
    caller
        .assume_role()
        .role_arn(ROLE)
        .role_session_name("s2")
        .send()
        .await
        .expect("a trusted principal");
    let (status_code, body) = http(
        &emu.endpoint,
        "PUT",
        "/_emu/sts",
        &[("content-type", "application/json")],
        r#"{"refuseAssumeRole": true}"#,
    )
    .await;
    assert_eq!(status_code, 200, "{body}");
    let err = caller
        .assume_role()
        .role_arn(ROLE)
        .role_session_name("s3")
        .send()
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Some("AccessDenied"));
    let (_, sessions) = http(&emu.endpoint, "GET", "/_emu/sts/sessions", &[], "").await;
    let sessions: Value = serde_json::from_str(&sessions).unwrap();
    let sessions = sessions.as_array().unwrap();
    assert_eq!(sessions.len(), 3);
    assert!(sessions
        .iter()
        .all(|s| s.get("secretAccessKey").is_none() && s.get("sessionToken").is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_credentials_need_the_authorization_token() {
    let emu = emulator().await;
    emu.handle.set_sts(StsConfig {
        container_credentials: vec![ContainerCredentials {
            authorization_token: "pod-token".into(),
            role_arn: ROLE.into(),
            session_name: None,
            ..ContainerCredentials::default()
        }],
        ..StsConfig::default()
    });
    let (code, _) = http(&emu.endpoint, "GET", "/v1/credentials", &[], "").await;
    assert_eq!(code, 400);
    let (code, _) = http(
        &emu.endpoint,
        "GET",
        "/v1/credentials",
        &[("Authorization", "other")],
        "",
    )
    .await;
    assert_eq!(code, 403);
    let (code, body) = http(
        &emu.endpoint,
        "GET",
        "/v1/credentials",
        &[("Authorization", "pod-token")],
        "",
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let key = v["AccessKeyId"].as_str().unwrap();
    assert!(key.starts_with("ASIA"));
    assert!(v["Token"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(v["Expiration"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(
        emu.handle.principal_arn(key),
        "arn:aws:sts::123456789012:assumed-role/Approver/eks-pod-identity"
    );
    let (_, shown) = http(&emu.endpoint, "GET", "/_emu/sts", &[], "").await;
    assert!(
        !shown.contains("pod-token"),
        "the control API never shows the token"
    );
}

/// boto3's own credential providers: web identity from AWS_ROLE_ARN +
/// AWS_WEB_IDENTITY_TOKEN_FILE (STS at AWS_ENDPOINT_URL_STS), and container credentials from
/// AWS_CONTAINER_CREDENTIALS_FULL_URI + AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE; AssumeRole too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_credential_providers_reach_the_emulator() {
    let Some(python) = moto_python() else {
        assert!(std::env::var_os("CI").is_none(), "no Python venv in CI");
        eprintln!("SKIPPED boto3_credential_providers_reach_the_emulator: no venv");
        return;
    };
    let emu = emulator().await;
    let issuer = issuer().await;
    emu.handle.set_sts(StsConfig {
        oidc_providers: vec![issuer.provider()],
        container_credentials: vec![ContainerCredentials {
            authorization_token: "pod-token".into(),
            role_arn: "arn:aws:iam::123456789012:role/PodRole".into(),
            session_name: Some("pod-session".into()),
            ..ContainerCredentials::default()
        }],
        ..StsConfig::default()
    });
    let dir = std::env::temp_dir().join(format!("sts-boto3-{:08x}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("token");
    std::fs::write(
        &token_file,
        issuer.token(
            "system:serviceaccount:ops:signalman",
            "sts.amazonaws.com",
            600,
            json!({}),
        ),
    )
    .unwrap();
    let pod_token_file = dir.join("pod-token");
    std::fs::write(&pod_token_file, "pod-token").unwrap();
    let script = r#"
import sys, boto3
endpoint = sys.argv[1]
who = boto3.session.Session().client("sts", endpoint_url=endpoint).get_caller_identity()
print(who["Arn"])
"#;
    let base_env = [
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_DEFAULT_REGION", "us-east-1".to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ("AWS_CONFIG_FILE", "/nonexistent".to_string()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent".to_string()),
    ];
    let run = |extra: Vec<(&'static str, String)>, script: &'static str| {
        let mut cmd = std::process::Command::new(&python);
        cmd.arg("-c").arg(script).arg(&emu.endpoint).env_clear();
        for (k, v) in base_env.iter().chain(extra.iter()) {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("running python");
        assert!(
            out.status.success(),
            "boto3 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let web = run(
        vec![
            ("AWS_ROLE_ARN", ROLE.to_string()),
            ("AWS_ROLE_SESSION_NAME", "pod-1".to_string()),
            (
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                token_file.display().to_string(),
            ),
            ("AWS_ENDPOINT_URL_STS", emu.endpoint.clone()),
        ],
        script,
    );
    assert_eq!(web, ROLE_SESSION_ARN);
    let pod = run(
        vec![
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                format!("{}/v1/credentials", emu.endpoint),
            ),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                pod_token_file.display().to_string(),
            ),
        ],
        script,
    );
    assert_eq!(
        pod,
        "arn:aws:sts::123456789012:assumed-role/PodRole/pod-session"
    );
    let assume = r#"
import sys, boto3
endpoint = sys.argv[1]
c = boto3.client("sts", endpoint_url=endpoint, aws_access_key_id="alice", aws_secret_access_key="x")
out = c.assume_role(RoleArn="arn:aws:iam::123456789012:role/Approver", RoleSessionName="s1",
                    SourceIdentity="alice", Tags=[{"Key": "namespace", "Value": "team-a"}])
assert out["SourceIdentity"] == "alice", out
assert hasattr(out["Credentials"]["Expiration"], "year"), out
k = out["Credentials"]
who = boto3.client("sts", endpoint_url=endpoint, aws_access_key_id=k["AccessKeyId"],
                   aws_secret_access_key=k["SecretAccessKey"], aws_session_token=k["SessionToken"]).get_caller_identity()
try:
    c.assume_role(RoleArn="arn:aws:iam::123456789012:role/Approver", RoleSessionName="s1", DurationSeconds=7200)
    raise SystemExit("DurationSeconds over MaxSessionDuration accepted")
except c.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] == "ValidationError", e.response
try:
    c.assume_role_with_web_identity(RoleArn="arn:aws:iam::123456789012:role/Approver", RoleSessionName="s1", WebIdentityToken="abcd.efgh.ijkl")
    raise SystemExit("a bad token accepted")
except c.exceptions.InvalidIdentityTokenException:
    pass
print(who["Arn"])
"#;
    assert_eq!(
        run(vec![], assume),
        "arn:aws:sts::123456789012:assumed-role/Approver/s1"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A Pod Identity association: the Authorization header must be the ServiceAccount's token
/// for `pods.eks.amazonaws.com`, signed by the issuer; the session carries EKS's tags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_credentials_for_a_service_account_association() {
    let emu = emulator().await;
    let issuer = issuer().await;
    emu.handle.set_sts(StsConfig {
        oidc_providers: vec![issuer.provider()],
        container_credentials: vec![ContainerCredentials {
            namespace: Some("ops".into()),
            service_account: Some("signalman".into()),
            role_arn: ROLE.into(),
            ..ContainerCredentials::default()
        }],
        ..StsConfig::default()
    });
    let claim = json!({"kubernetes.io": {"namespace": "ops", "serviceaccount": {"name": "signalman"},
                                         "pod": {"name": "signalman-0", "uid": "u-1"}}});
    let sub = "system:serviceaccount:ops:signalman";
    let get = |token: String| {
        let endpoint = emu.endpoint.clone();
        async move {
            http(
                &endpoint,
                "GET",
                "/v1/credentials",
                &[("Authorization", &token)],
                "",
            )
            .await
        }
    };
    let (code, body) = get(issuer.token(sub, "pods.eks.amazonaws.com", 600, claim.clone())).await;
    assert_eq!(code, 200, "{body}");
    let key = serde_json::from_str::<Value>(&body).unwrap()["AccessKeyId"]
        .as_str()
        .unwrap()
        .to_string();
    let session = emu.handle.sts_session(&key).expect("a session");
    // EKS's session name, with the default cluster name.
    let name = session
        .arn
        .strip_prefix("arn:aws:sts::123456789012:assumed-role/Approver/")
        .expect("a session of the role");
    // 64 characters at most: `eks-`, 23 of `<cluster>-<pod>`, `-`, the 36 of the uuid.
    let cut: String = format!("{DEFAULT_CLUSTER_NAME}-signalman-0")
        .chars()
        .take(23)
        .collect();
    assert_eq!(cut, "signalman-local-signalm");
    let uuid = name
        .strip_prefix(&format!("eks-{cut}-"))
        .unwrap_or_else(|| panic!("eks-<cluster>-<pod>-<uuid>: {name}"));
    assert_eq!(uuid.len(), 36, "{name}");
    assert_eq!(name.len(), 64);
    for tag in [
        ("eks-cluster-name", DEFAULT_CLUSTER_NAME),
        (
            "eks-cluster-arn",
            "arn:aws:eks:us-east-1:123456789012:cluster/signalman-local",
        ),
        ("kubernetes-namespace", "ops"),
        ("kubernetes-service-account", "signalman"),
        ("kubernetes-pod-name", "signalman-0"),
        ("kubernetes-pod-uid", "u-1"),
    ] {
        assert!(
            session
                .tags
                .contains(&(tag.0.to_string(), tag.1.to_string())),
            "{tag:?} in {:?}",
            session.tags
        );
    }
    let cases = [
        (
            "another ServiceAccount",
            issuer.token(
                "system:serviceaccount:ops:other",
                "pods.eks.amazonaws.com",
                600,
                json!({}),
            ),
            403,
        ),
        (
            "the STS audience",
            issuer.token(sub, "sts.amazonaws.com", 600, json!({})),
            400,
        ),
        (
            "expired",
            issuer.token(sub, "pods.eks.amazonaws.com", -5, json!({})),
            400,
        ),
        (
            "signed by another key",
            issuer.sign(&es256_key(), sub, "pods.eks.amazonaws.com", 600, json!({})),
            400,
        ),
    ];
    for (what, token, want) in cases {
        let (code, body) = get(token).await;
        assert_eq!(code, want, "{what}: {body}");
    }
}

/// An STS or SSM client signing with container credentials (the endpoint's JSON answer).
fn pod_credentials(body: &str) -> (String, String, String) {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let field = |k: &str| {
        v[k].as_str()
            .unwrap_or_else(|| panic!("{k} in {v}"))
            .to_string()
    };
    (
        field("AccessKeyId"),
        field("SecretAccessKey"),
        field("Token"),
    )
}

fn sts_keys(
    endpoint: &str,
    (key, secret, token): &(String, String, String),
) -> aws_sdk_sts::Client {
    use aws_sdk_sts::config::{retry::RetryConfig, BehaviorVersion, Credentials, Region};
    aws_sdk_sts::Client::from_conf(
        aws_sdk_sts::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .credentials_provider(Credentials::new(
                key,
                secret,
                Some(token.clone()),
                None,
                "test",
            ))
            .retry_config(RetryConfig::disabled())
            .build(),
    )
}

fn ssm_keys(
    endpoint: &str,
    (key, secret, token): &(String, String, String),
) -> aws_sdk_ssm::Client {
    use aws_sdk_ssm::config::{retry::RetryConfig, BehaviorVersion, Credentials, Region};
    aws_sdk_ssm::Client::from_conf(
        aws_sdk_ssm::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .credentials_provider(Credentials::new(
                key,
                secret,
                Some(token.clone()),
                None,
                "test",
            ))
            .retry_config(RetryConfig::disabled())
            .build(),
    )
}

/// EKS Pod Identity names the role session `eks-<cluster>-<pod>-<uuid>`, a new one at every
/// credential fetch: two fetches by the same pod are two sessions of the same role. An
/// aws:approve step needing two approvals does not take both from the role: the second
/// session's decision is refused as the role's second one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_identity_sessions_are_named_per_fetch_and_approve_once_per_role() {
    let emu = emulator().await;
    let issuer = issuer().await;
    emu.handle.set_sts(StsConfig {
        oidc_providers: vec![issuer.provider()],
        cluster_name: Some("prod-east".into()),
        container_credentials: vec![
            ContainerCredentials {
                namespace: Some("ops".into()),
                service_account: Some("signalman".into()),
                role_arn: ROLE.into(),
                ..ContainerCredentials::default()
            },
            ContainerCredentials {
                namespace: Some("ops".into()),
                service_account: Some("named".into()),
                role_arn: ROLE.into(),
                session_name: Some("explicit-name".into()),
                ..ContainerCredentials::default()
            },
        ],
        ..StsConfig::default()
    });
    let fetch = |sa: &str, claim: Value| {
        let token = issuer.token(
            &format!("system:serviceaccount:ops:{sa}"),
            "pods.eks.amazonaws.com",
            600,
            claim,
        );
        let endpoint = emu.endpoint.clone();
        async move {
            let (code, body) = http(
                &endpoint,
                "GET",
                "/v1/credentials",
                &[("Authorization", &token)],
                "",
            )
            .await;
            assert_eq!(code, 200, "{body}");
            pod_credentials(&body)
        }
    };
    let pod = json!({"kubernetes.io": {"namespace": "ops", "serviceaccount": {"name": "signalman"},
                                       "pod": {"name": "signalman-7d9f-x2x9q", "uid": "u-1"}}});
    let first = fetch("signalman", pod.clone()).await;
    let second = fetch("signalman", pod).await;
    let prefix = "arn:aws:sts::123456789012:assumed-role/Approver/";
    let mut names = Vec::new();
    for creds in [&first, &second] {
        let who = sts_keys(&emu.endpoint, creds)
            .get_caller_identity()
            .send()
            .await
            .expect("GetCallerIdentity");
        let arn = who.arn().expect("an ARN").to_string();
        let name = arn.strip_prefix(prefix).expect(&arn).to_string();
        // `prod-east-signalman-7d9f-x2x9q` cut to its first 23 characters.
        let uuid = name
            .strip_prefix("eks-prod-east-signalman-7d9-")
            .unwrap_or_else(|| panic!("eks-<cluster>-<pod>-<uuid>: {name}"));
        assert_eq!(uuid.len(), 36, "{name}");
        assert_eq!(name.len(), 64);
        assert_eq!(who.account(), Some("123456789012"));
        assert!(who.user_id().unwrap().ends_with(&format!(":{name}")));
        let session = emu.handle.sts_session(&creds.0).unwrap();
        assert_eq!(session.role_arn, ROLE);
        assert!(session
            .tags
            .contains(&("eks-cluster-name".to_string(), "prod-east".to_string())));
        names.push(name);
    }
    assert_ne!(names[0], names[1], "every fetch is a new session");

    // A token without the pod claim: the ServiceAccount stands for the pod. An explicit
    // sessionName wins.
    let no_pod = fetch("signalman", json!({})).await;
    let arn = emu.handle.principal_arn(&no_pod.0);
    assert!(
        arn.starts_with(&format!("{prefix}eks-prod-east-signalman-")),
        "{arn}"
    );
    assert_eq!(
        arn.len() - prefix.len(),
        "eks-prod-east-signalman-".len() + 36
    );
    let named = fetch("named", json!({})).await;
    assert_eq!(
        emu.handle.principal_arn(&named.0),
        format!("{prefix}explicit-name")
    );

    // Two approvals needed, from the role and from the release manager: the role's second
    // session is the same principal as its first.
    let (one, two) = (
        ssm_keys(&emu.endpoint, &first),
        ssm_keys(&emu.endpoint, &second),
    );
    let id = start(
        &one,
        "Signalman-Approve",
        &[
            ("Approvers", &[ROLE, "release-manager"]),
            ("MinRequiredApprovals", &["2"]),
        ],
        ExecutionMode::Auto,
    )
    .await;
    send(
        &one,
        &id,
        SignalType::Approve,
        &[("Comment", "first session")],
    )
    .await
    .expect("the role approves");
    for signal in [SignalType::Approve, SignalType::Reject] {
        let err = send(&two, &id, signal, &[])
            .await
            .expect_err("the role again");
        assert_eq!(err.code(), Some("InvalidAutomationSignalException"));
        assert_eq!(
            err.message(),
            Some(&*format!(
                "{ROLE} has already sent a decision for step approve"
            ))
        );
    }
    let exec = get(&one, &id).await;
    assert_eq!(status(&exec), "Waiting");
    let decisions = output(step(&exec, "approve"), "ApproverDecisions");
    assert_eq!(decisions.len(), 1);
    let decision: Value = serde_json::from_str(decisions[0]).unwrap();
    assert_eq!(decision["Approver"], format!("{prefix}{}", names[0]));
    send(
        &common::ssm(&emu.endpoint, "release-manager"),
        &id,
        SignalType::Approve,
        &[],
    )
    .await
    .expect("the release manager approves");
    assert_eq!(status(&get(&one, &id).await), "Success");
}
