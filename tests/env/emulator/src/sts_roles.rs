//! STS role sessions: AssumeRoleWithWebIdentity (IRSA), AssumeRole, and an EKS Pod Identity
//! style container credentials endpoint, with the temporary credentials they issue checked on
//! every later call (unknown, mismatched or expired session tokens are refused).
//!
//! Web identity tokens are checked as AWS documents for OIDC providers: the `iss` must be a
//! configured provider, whose discovery document and JWKS are fetched over HTTP(S); the
//! signature must verify against a key of that set; the `aud` must be one of the provider's
//! client ids (`sts.amazonaws.com` by default); the token must not be expired; and the role's
//! trust must admit the issuer and subject.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{HeaderMap, Method, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::identity::{access_key, user_id};
use crate::{lock, Shared};

type Resp = Response<Full<Bytes>>;

const NS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
/// The audience AWS expects in IRSA tokens (the provider's default client id).
pub const STS_AUDIENCE: &str = "sts.amazonaws.com";
/// The audience of the ServiceAccount tokens EKS Pod Identity exchanges.
pub const POD_IDENTITY_AUDIENCE: &str = "pods.eks.amazonaws.com";
/// Where the container credentials endpoint answers (the EKS Pod Identity Agent's path).
pub const CONTAINER_CREDENTIALS_PATH: &str = "/v1/credentials";
/// The control API of this module.
pub(crate) const CONTROL_PREFIX: &str = "/_emu/sts";
/// AWS's bounds on DurationSeconds, and the default (a role's default MaxSessionDuration).
const MIN_DURATION: u64 = 900;
const MAX_DURATION: u64 = 43_200;
const DEFAULT_DURATION: u64 = 3_600;
/// The claim AWS reads a web identity's SourceIdentity from.
const SOURCE_IDENTITY_CLAIM: &str = "https://aws.amazon.com/source_identity";
/// The cluster Pod Identity sessions are named after when the configuration names none.
pub const DEFAULT_CLUSTER_NAME: &str = "signalman-local";
/// STS's limit on RoleSessionName.
const MAX_SESSION_NAME: usize = 64;
/// The session name of a fixed-token container credentials entry that names none.
const FIXED_TOKEN_SESSION_NAME: &str = "eks-pod-identity";

/// How STS behaves: trusted identity providers, role trust, session lengths, refusals and
/// container credentials. Set at run time (`PUT /_emu/sts`, [`crate::EmulatorHandle::set_sts`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct StsConfig {
    /// The IAM OIDC providers of the account.
    pub oidc_providers: Vec<OidcProvider>,
    /// Role trust. Empty: every well-formed role ARN exists and trusts every caller
    /// (AssumeRole) and every subject of every configured provider (web identity).
    pub roles: Vec<RoleTrust>,
    /// Lifetime of every issued credential, overriding DurationSeconds and AWS's 900 s
    /// minimum (tests of refresh before expiry).
    pub session_duration_seconds: Option<u64>,
    /// Web identity tokens are judged as if the clock were this many seconds ahead (tests of
    /// expired tokens: the API server issues none shorter than 10 minutes).
    pub web_identity_clock_skew_seconds: i64,
    /// While true every AssumeRole is refused with AccessDenied.
    pub refuse_assume_role: bool,
    /// What the container credentials endpoint hands out, by Authorization header value.
    pub container_credentials: Vec<ContainerCredentials>,
    /// The EKS cluster Pod Identity associations belong to: it names their sessions
    /// (`eks-<cluster>-<pod>-<uuid>`) and their `eks-cluster-name`/`eks-cluster-arn` tags.
    /// Default [`DEFAULT_CLUSTER_NAME`].
    pub cluster_name: Option<String>,
}

/// An IAM OIDC identity provider.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct OidcProvider {
    /// The issuer exactly as tokens carry it in `iss`.
    pub issuer: String,
    /// Where the issuer's documents are fetched from when the issuer's own host is not
    /// reachable (a local API server): `<this>/.well-known/openid-configuration`, and the
    /// `jwks_uri` it names with its scheme and authority replaced by this URL's.
    pub discovery_url: Option<String>,
    /// PEM certificates trusted for the HTTPS fetches.
    pub ca_pem: Option<String>,
    /// Accepted audiences (IAM's "client ID list"); empty means `sts.amazonaws.com`.
    pub client_ids: Vec<String>,
}

/// One role and who may assume it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RoleTrust {
    pub role_arn: String,
    /// (issuer, subject) pairs allowed AssumeRoleWithWebIdentity; subject `*` is any.
    /// Empty: any subject of any configured provider.
    pub web_identities: Vec<WebIdentityTrust>,
    /// Caller ARNs allowed AssumeRole (`*` any; a role ARN admits its sessions). Empty: any.
    pub principals: Vec<String>,
    /// The role's MaxSessionDuration (default 3600).
    pub max_session_duration: Option<u64>,
    /// The trust policy's `Condition` block for AssumeRole, in IAM's own JSON (for example
    /// `{"StringEquals": {"aws:RequestTag/signalman.dev/namespace": "team-a"}}`): a request
    /// it does not hold for is `AccessDenied`. Null: none.
    pub conditions: serde_json::Value,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WebIdentityTrust {
    pub issuer: String,
    pub subject: String,
}

/// Credentials of `role_arn` for callers presenting `authorization_token`, or (an EKS Pod
/// Identity association) the token of ServiceAccount `namespace`/`service_account`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ContainerCredentials {
    /// Compared as a string (when not empty).
    pub authorization_token: String,
    /// With `service_account`: the Authorization header must be that ServiceAccount's token,
    /// for audience `pods.eks.amazonaws.com`, from a configured OIDC provider, verified as
    /// AssumeRoleWithWebIdentity verifies its tokens.
    pub namespace: Option<String>,
    pub service_account: Option<String>,
    pub role_arn: String,
    /// The role session name of every credential this entry hands out. Default: for an
    /// association (`service_account` set), EKS Pod Identity's `eks-<cluster>-<pod>-<uuid>`,
    /// a new uuid at every fetch; for a fixed-token entry, `eks-pod-identity`.
    pub session_name: Option<String>,
}

/// One issued temporary credential (the secret parts are never shown by the control API).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub access_key_id: String,
    #[serde(skip_serializing)]
    pub secret_access_key: String,
    #[serde(skip_serializing)]
    pub session_token: String,
    /// `arn:aws:sts::<account>:assumed-role/<role>/<session>`
    pub arn: String,
    pub role_arn: String,
    /// Seconds since the epoch.
    pub expiration: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_identity: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<(String, String)>,
    /// `AssumeRole`, `AssumeRoleWithWebIdentity` or `ContainerCredentials`.
    pub issued_by: String,
}

/// What the emulator keeps for STS.
#[derive(Default)]
pub(crate) struct Roles {
    config: Mutex<StsConfig>,
    sessions: Mutex<BTreeMap<String, Session>>,
    /// The JWKS of each issuer, as last fetched.
    keys: Mutex<BTreeMap<String, Arc<JwkSet>>>,
}

/// Why a call signed with temporary credentials is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SessionRefusal {
    Invalid,
    Expired,
}

impl SessionRefusal {
    /// The error of an AWS JSON protocol service (`swf` adds coral's namespace).
    pub(crate) fn json_error(self, coral_namespace: bool) -> ApiError {
        let (code, message) = match self {
            Self::Invalid => (
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            ),
            Self::Expired => (
                "ExpiredTokenException",
                "The security token included in the request is expired",
            ),
        };
        let code = if coral_namespace {
            format!("com.amazon.coral.service#{code}")
        } else {
            code.to_string()
        };
        ApiError {
            status: 400,
            code,
            message: message.to_string(),
        }
    }

    fn query_error(self) -> Resp {
        match self {
            Self::Invalid => error(
                403,
                "InvalidClientTokenId",
                "The security token included in the request is invalid.",
            ),
            Self::Expired => error(
                400,
                "ExpiredToken",
                "The security token included in the request is expired",
            ),
        }
    }
}

impl Roles {
    pub(crate) fn set_config(&self, config: StsConfig) {
        *lock(&self.config) = config;
        lock(&self.keys).clear();
    }

    pub(crate) fn config(&self) -> StsConfig {
        lock(&self.config).clone()
    }

    pub(crate) fn session(&self, access_key: &str) -> Option<Session> {
        lock(&self.sessions).get(access_key).cloned()
    }

    pub(crate) fn sessions(&self) -> Vec<Session> {
        lock(&self.sessions).values().cloned().collect()
    }

    /// The SourceIdentity of the session of a key this emulator issued.
    pub(crate) fn source_identity(&self, access_key: &str) -> Option<String> {
        lock(&self.sessions)
            .get(access_key)
            .and_then(|s| s.source_identity.clone())
    }

    /// The assumed-role ARN of a key this emulator issued.
    pub(crate) fn principal(&self, access_key: &str) -> Option<String> {
        lock(&self.sessions).get(access_key).map(|s| s.arn.clone())
    }

    /// Checks the temporary credentials of a call. Long-term keys (anything not `ASIA…`)
    /// pass; an `ASIA…` key must be one this emulator issued, with its session token, unexpired.
    pub(crate) fn check(&self, headers: &HeaderMap) -> Result<(), SessionRefusal> {
        let Some(key) = access_key(headers) else {
            return Ok(());
        };
        if !key.starts_with("ASIA") {
            return Ok(());
        }
        let sessions = lock(&self.sessions);
        let Some(session) = sessions.get(&key) else {
            return Err(SessionRefusal::Invalid);
        };
        let token = headers
            .get("x-amz-security-token")
            .and_then(|v| v.to_str().ok());
        if token != Some(session.session_token.as_str()) {
            return Err(SessionRefusal::Invalid);
        }
        if now_secs() >= session.expiration {
            return Err(SessionRefusal::Expired);
        }
        Ok(())
    }
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

fn request_id() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

fn xml(status: u16, body: String, request_id: &str) -> Resp {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/xml")
        .header("x-amzn-RequestId", request_id)
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

/// An STS Query error. Every code here is a client (`Sender`) fault, as in AWS.
fn error(status: u16, code: &str, message: &str) -> Resp {
    let id = request_id();
    let body = format!(
        "<ErrorResponse xmlns=\"{NS}\">\n  <Error>\n    <Type>Sender</Type>\n    <Code>{}</Code>\n    <Message>{}</Message>\n  </Error>\n  <RequestId>{id}</RequestId>\n</ErrorResponse>\n",
        escape(code),
        escape(message)
    );
    xml(status, body, &id)
}

fn validation(detail: &str) -> Resp {
    error(
        400,
        "ValidationError",
        &format!("1 validation error detected: {detail}"),
    )
}

fn access_denied(message: &str) -> Resp {
    error(403, "AccessDenied", message)
}

fn param<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// What this module answers before the server's own routing: its control API, the container
/// credentials endpoint, the Assume* actions, and any STS call made with refused temporary
/// credentials (an expired session cannot call GetCallerIdentity either). `None`: not ours.
pub(crate) async fn intercept(
    shared: &Shared,
    parts: &hyper::http::request::Parts,
    body: &Bytes,
) -> Option<Resp> {
    let path = parts.uri.path();
    if path == CONTROL_PREFIX || path.starts_with("/_emu/sts/") {
        return Some(control(shared, &parts.method, path, body));
    }
    if path == CONTAINER_CREDENTIALS_PATH {
        return Some(container_credentials(shared, &parts.method, &parts.headers).await);
    }
    if parts.headers.contains_key("x-amz-target") || path == "/_emu" || path.starts_with("/_emu/") {
        return None;
    }
    let query = parts.uri.query().unwrap_or("").as_bytes();
    let form: Vec<(String, String)> = form_urlencoded::parse(query)
        .chain(form_urlencoded::parse(body))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let action = param(&form, "Action")?;
    // AssumeRoleWithWebIdentity is not signed: its caller has no credentials yet.
    if action != "AssumeRoleWithWebIdentity" {
        if let Err(refusal) = shared.sts_roles.check(&parts.headers) {
            return Some(refusal.query_error());
        }
    }
    match action {
        "AssumeRoleWithWebIdentity" => Some(assume_role_with_web_identity(shared, &form).await),
        "AssumeRole" => Some(assume_role(shared, &parts.headers, &form)),
        _ => None,
    }
}

/// `arn:<partition>:iam::<12 digits>:role/<path/>name` → (account, role name).
fn parse_role_arn(arn: &str) -> Option<(&str, &str)> {
    let rest = arn.strip_prefix("arn:")?;
    let mut parts = rest.splitn(5, ':');
    let _partition = parts.next().filter(|p| !p.is_empty())?;
    if parts.next()? != "iam" || !parts.next()?.is_empty() {
        return None;
    }
    let account = parts.next()?;
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let path = parts.next()?.strip_prefix("role/")?;
    let name = path.rsplit('/').next()?;
    (!name.is_empty()).then_some((account, name))
}

/// `[\w+=,.@-]*` of the STS model (RoleSessionName, SourceIdentity).
fn session_chars_ok(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c))
}

struct Common<'a> {
    role_arn: &'a str,
    session_name: &'a str,
    duration: Option<u64>,
}

/// The parameter checks both Assume* actions share, in the order of the model's members.
fn common_params<'a>(form: &'a [(String, String)]) -> Result<Common<'a>, Box<Resp>> {
    let Some(role_arn) = param(form, "RoleArn") else {
        return Err(Box::new(validation(
            "Value null at 'roleArn' failed to satisfy constraint: Member must not be null",
        )));
    };
    if role_arn.len() < 20 || role_arn.len() > 2048 {
        return Err(Box::new(validation(
            "Value at 'roleArn' failed to satisfy constraint: Member must have length between 20 and 2048",
        )));
    }
    let Some(session_name) = param(form, "RoleSessionName") else {
        return Err(Box::new(validation(
            "Value null at 'roleSessionName' failed to satisfy constraint: Member must not be null",
        )));
    };
    if session_name.len() < 2 || session_name.len() > 64 {
        return Err(Box::new(validation(
            "Value at 'roleSessionName' failed to satisfy constraint: Member must have length between 2 and 64",
        )));
    }
    if !session_chars_ok(session_name) {
        return Err(Box::new(validation(
            "Value at 'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*",
        )));
    }
    let duration = match param(form, "DurationSeconds") {
        None => None,
        Some(v) => match v.parse::<u64>() {
            Ok(d) if (MIN_DURATION..=MAX_DURATION).contains(&d) => Some(d),
            Ok(_) => {
                return Err(Box::new(validation(&format!(
                    "Value '{v}' at 'durationSeconds' failed to satisfy constraint: Member must have value greater than or equal to {MIN_DURATION} and less than or equal to {MAX_DURATION}"
                ))))
            }
            Err(_) => {
                return Err(Box::new(error(
                    400,
                    "MalformedInput",
                    "DurationSeconds is not a number",
                )))
            }
        },
    };
    if parse_role_arn(role_arn).is_none() {
        return Err(Box::new(validation(&format!(
            "{role_arn} is not a valid role ARN"
        ))));
    }
    Ok(Common {
        role_arn,
        session_name,
        duration,
    })
}

/// The role's trust entry: `None` when the role does not exist for this configuration.
fn trust_of(config: &StsConfig, role_arn: &str) -> Option<RoleTrust> {
    if config.roles.is_empty() {
        return Some(RoleTrust {
            role_arn: role_arn.to_string(),
            ..RoleTrust::default()
        });
    }
    config
        .roles
        .iter()
        .find(|r| r.role_arn == role_arn)
        .cloned()
}

/// The session's lifetime: the override, else the request's DurationSeconds bounded by the
/// role's MaxSessionDuration.
fn lifetime(
    config: &StsConfig,
    trust: &RoleTrust,
    requested: Option<u64>,
) -> Result<u64, Box<Resp>> {
    let max = trust.max_session_duration.unwrap_or(DEFAULT_DURATION);
    if let Some(d) = requested {
        if d > max {
            return Err(Box::new(validation(
                "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
            )));
        }
    }
    Ok(config
        .session_duration_seconds
        .unwrap_or_else(|| requested.unwrap_or(DEFAULT_DURATION)))
}

fn random_chars(n: usize, alphabet: &[u8]) -> String {
    (0..n)
        .map(|_| alphabet[rand::random_range(0..alphabet.len())] as char)
        .collect()
}

const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SECRET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Issues and records a session of `role_arn` named `session_name`.
fn issue(
    shared: &Shared,
    role_arn: &str,
    session_name: &str,
    seconds: u64,
    source_identity: Option<String>,
    tags: Vec<(String, String)>,
    issued_by: &str,
) -> Session {
    let (account, role) = parse_role_arn(role_arn).expect("a checked role ARN");
    let session = Session {
        access_key_id: format!("ASIA{}", random_chars(16, UPPER)),
        secret_access_key: random_chars(40, SECRET),
        session_token: format!("IQoJb3JpZ2luX2Vj{}", random_chars(300, SECRET)),
        arn: format!("arn:aws:sts::{account}:assumed-role/{role}/{session_name}"),
        role_arn: role_arn.to_string(),
        expiration: now_secs() + seconds as i64,
        source_identity,
        tags,
        issued_by: issued_by.to_string(),
    };
    lock(&shared.sts_roles.sessions).insert(session.access_key_id.clone(), session.clone());
    session
}

fn iso8601(epoch: i64) -> String {
    chrono::DateTime::from_timestamp(epoch, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// `<Credentials>` and `<AssumedRoleUser>`.
fn credentials_xml(s: &Session) -> String {
    format!(
        "    <AssumedRoleUser>\n      <AssumedRoleId>{}</AssumedRoleId>\n      <Arn>{}</Arn>\n    </AssumedRoleUser>\n    <Credentials>\n      <AccessKeyId>{}</AccessKeyId>\n      <SecretAccessKey>{}</SecretAccessKey>\n      <SessionToken>{}</SessionToken>\n      <Expiration>{}</Expiration>\n    </Credentials>\n",
        escape(&user_id(&s.arn)),
        escape(&s.arn),
        escape(&s.access_key_id),
        escape(&s.secret_access_key),
        escape(&s.session_token),
        iso8601(s.expiration)
    )
}

fn source_identity_xml(s: &Session) -> String {
    s.source_identity
        .as_deref()
        .map(|v| format!("    <SourceIdentity>{}</SourceIdentity>\n", escape(v)))
        .unwrap_or_default()
}

fn success(action: &str, result: String) -> Resp {
    let id = request_id();
    let body = format!(
        "<{action}Response xmlns=\"{NS}\">\n  <{action}Result>\n{result}  </{action}Result>\n  <ResponseMetadata>\n    <RequestId>{id}</RequestId>\n  </ResponseMetadata>\n</{action}Response>\n"
    );
    xml(200, body, &id)
}

/// Whether the caller `principal` is one of `allowed` (exact ARN, `*`, or a role ARN
/// admitting its sessions).
fn principal_allowed(allowed: &[String], principal: &str) -> bool {
    allowed.is_empty()
        || allowed
            .iter()
            .any(|a| a == "*" || a == principal || crate::identity::approver_matches(a, principal))
}

fn assume_role(shared: &Shared, headers: &HeaderMap, form: &[(String, String)]) -> Resp {
    let Some(key) = access_key(headers) else {
        return error(
            403,
            "MissingAuthenticationToken",
            "Request is missing Authentication Token",
        );
    };
    let common = match common_params(form) {
        Ok(c) => c,
        Err(resp) => return *resp,
    };
    let mut tags = Vec::new();
    for n in 1.. {
        let Some(k) = param(form, &format!("Tags.member.{n}.Key")) else {
            break;
        };
        let v = param(form, &format!("Tags.member.{n}.Value")).unwrap_or("");
        if k.is_empty() || k.len() > 128 || v.len() > 256 {
            return validation(&format!(
                "Value at 'tags.{n}' failed to satisfy constraint: a tag key must have length between 1 and 128 and a value at most 256"
            ));
        }
        if tags
            .iter()
            .any(|(tk, _): &(String, String)| tk.eq_ignore_ascii_case(k))
        {
            return validation(
                "Duplicate tag keys found. Please note that Tag keys are case insensitive.",
            );
        }
        tags.push((k.to_string(), v.to_string()));
    }
    if tags.len() > 50 {
        return validation(
            "Value at 'tags' failed to satisfy constraint: Member must have length less than or equal to 50",
        );
    }
    let caller = shared.principal_arn(&key);
    let caller_session = shared.sts_roles.session(&key);
    let mut source_identity = param(form, "SourceIdentity").map(str::to_string);
    if let Some(si) = &source_identity {
        if si.len() < 2 || si.len() > 64 || !session_chars_ok(si) {
            return validation(
                "Value at 'sourceIdentity' failed to satisfy constraint: Member must have length between 2 and 64 and satisfy regular expression pattern: [\\w+=,.@-]*",
            );
        }
        if si.to_ascii_lowercase().starts_with("aws:") {
            return validation("SourceIdentity must not begin with the prefix aws:");
        }
    }
    // Role chaining keeps the first session's SourceIdentity; it cannot be changed.
    if let Some(inherited) = caller_session
        .as_ref()
        .and_then(|s| s.source_identity.clone())
    {
        match &source_identity {
            Some(si) if *si != inherited => {
                return access_denied(&format!(
                    "User: {caller} is not authorized to perform: sts:SetSourceIdentity on resource: {}",
                    common.role_arn
                ))
            }
            _ => source_identity = Some(inherited),
        }
    }
    let config = shared.sts_roles.config();
    let denied = || {
        access_denied(&format!(
            "User: {caller} is not authorized to perform: sts:AssumeRole on resource: {}",
            common.role_arn
        ))
    };
    if config.refuse_assume_role {
        return denied();
    }
    let Some(trust) = trust_of(&config, common.role_arn) else {
        return denied();
    };
    if !principal_allowed(&trust.principals, &caller) {
        return denied();
    }
    let request = crate::trust_conditions::RequestContext {
        principal_arn: &caller,
        role_session_name: common.session_name,
        source_identity: source_identity.as_deref(),
        tags: &tags,
    };
    if !crate::trust_conditions::conditions_hold(&trust.conditions, &request) {
        return denied();
    }
    let seconds = match lifetime(&config, &trust, common.duration) {
        Ok(s) => s,
        Err(resp) => return *resp,
    };
    let session = issue(
        shared,
        common.role_arn,
        common.session_name,
        seconds,
        source_identity,
        tags,
        "AssumeRole",
    );
    let mut result = credentials_xml(&session);
    result.push_str(&source_identity_xml(&session));
    success("AssumeRole", result)
}

/// The claims AWS reads from a web identity token.
#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Audience>,
    exp: Option<i64>,
    nbf: Option<i64>,
    #[serde(rename = "https://aws.amazon.com/source_identity")]
    source_identity: Option<String>,
    /// The API server's own claim: namespace, service account, pod.
    #[serde(rename = "kubernetes.io")]
    kubernetes: Option<Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, a: &str) -> bool {
        match self {
            Self::One(s) => s == a,
            Self::Many(v) => v.iter().any(|s| s == a),
        }
    }
}

fn invalid_token(message: &str) -> Resp {
    error(400, "InvalidIdentityToken", message)
}

/// The issuer with its scheme removed, as IAM names providers.
fn provider_name(issuer: &str) -> &str {
    issuer
        .strip_prefix("https://")
        .or_else(|| issuer.strip_prefix("http://"))
        .unwrap_or(issuer)
        .trim_end_matches('/')
}

/// Why a web identity token is refused.
enum TokenError {
    /// Malformed, unknown issuer, unknown key, bad signature, wrong audience, not yet valid.
    Invalid(String),
    Expired(String),
    /// The issuer's documents could not be fetched.
    Idp(String),
}

impl TokenError {
    fn sts_error(self) -> Resp {
        match self {
            Self::Invalid(m) => invalid_token(&m),
            Self::Expired(m) => error(400, "ExpiredTokenException", &m),
            Self::Idp(m) => error(400, "IDPCommunicationError", &m),
        }
    }
}

struct Verified {
    claims: Claims,
    issuer: String,
    /// The accepted audience the token carries.
    audience: String,
}

/// Checks a token as AWS checks OIDC tokens: a configured issuer, a signature by a key of its
/// published JWKS, an accepted audience (`audiences`, else the provider's client ids, else
/// `sts.amazonaws.com`), not expired, already valid.
async fn verify_token(
    shared: &Shared,
    config: &StsConfig,
    token: &str,
    audiences: Option<&[&str]>,
) -> Result<Verified, TokenError> {
    let invalid = |m: &str| TokenError::Invalid(m.to_string());
    // The unverified claims only pick the provider; nothing is trusted before the signature.
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| invalid("Couldn't parse the web identity token"))?;
    let unverified = jsonwebtoken::dangerous::insecure_decode::<Claims>(token)
        .map_err(|_| invalid("Couldn't parse the web identity token"))?;
    let iss = unverified
        .claims
        .iss
        .clone()
        .ok_or_else(|| invalid("The web identity token has no issuer"))?;
    let provider = config
        .oidc_providers
        .iter()
        .find(|p| provider_name(&p.issuer) == provider_name(&iss))
        .cloned()
        .ok_or_else(|| {
            TokenError::Invalid(format!(
                "No OpenIDConnect provider found in your account for {iss}"
            ))
        })?;
    let keys = provider_keys(shared, &provider, header.kid.as_deref())
        .await
        .map_err(TokenError::Idp)?;
    let jwk = match header.kid.as_deref() {
        Some(kid) => keys.find(kid),
        None if keys.keys.len() == 1 => keys.keys.first(),
        None => None,
    }
    .ok_or_else(|| invalid("The web identity token was not signed by a key of its issuer"))?;
    let key = DecodingKey::from_jwk(jwk)
        .map_err(|_| invalid("The issuer's key for this token is not usable"))?;
    if !matches!(
        header.alg,
        Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::ES256
            | Algorithm::ES384
    ) {
        return Err(invalid("Unsupported signing algorithm"));
    }
    // Only the signature here: the time and audience checks follow, with AWS's own errors.
    let mut checks = Validation::new(header.alg);
    checks.validate_exp = false;
    checks.validate_aud = false;
    checks.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Claims>(token, &key, &checks)
        .map_err(|_| invalid("The web identity token's signature is not valid"))?
        .claims;
    let accepted: Vec<String> = match audiences {
        Some(a) => a.iter().map(|s| s.to_string()).collect(),
        None if provider.client_ids.is_empty() => vec![STS_AUDIENCE.to_string()],
        None => provider.client_ids.clone(),
    };
    let audience = accepted
        .iter()
        .find(|c| claims.aud.as_ref().is_some_and(|a| a.contains(c)))
        .cloned()
        .ok_or_else(|| invalid("Incorrect token audience"))?;
    let now = now_secs() + config.web_identity_clock_skew_seconds;
    let exp = claims
        .exp
        .ok_or_else(|| invalid("The web identity token has no expiration"))?;
    if now >= exp {
        return Err(TokenError::Expired(format!(
            "Token expired: current date/time {now} must be before the expiration date/time {exp}"
        )));
    }
    if claims.nbf.is_some_and(|nbf| nbf > now) {
        return Err(invalid("The web identity token is not valid yet"));
    }
    Ok(Verified {
        claims,
        issuer: iss,
        audience,
    })
}

async fn assume_role_with_web_identity(shared: &Shared, form: &[(String, String)]) -> Resp {
    let common = match common_params(form) {
        Ok(c) => c,
        Err(resp) => return *resp,
    };
    let Some(token) = param(form, "WebIdentityToken") else {
        return validation(
            "Value null at 'webIdentityToken' failed to satisfy constraint: Member must not be null",
        );
    };
    if token.len() < 4 || token.len() > 20_000 {
        return validation(
            "Value at 'webIdentityToken' failed to satisfy constraint: Member must have length between 4 and 20000",
        );
    }
    let config = shared.sts_roles.config();
    let verified = match verify_token(shared, &config, token, None).await {
        Ok(v) => v,
        Err(e) => return e.sts_error(),
    };
    let (claims, iss, aud) = (verified.claims, verified.issuer, verified.audience);
    let subject = claims.sub.clone().unwrap_or_default();
    let denied = || access_denied("Not authorized to perform sts:AssumeRoleWithWebIdentity");
    let Some(trust) = trust_of(&config, common.role_arn) else {
        return denied();
    };
    let trusted = trust.web_identities.is_empty()
        || trust.web_identities.iter().any(|w| {
            provider_name(&w.issuer) == provider_name(&iss)
                && (w.subject == "*" || w.subject == subject)
        });
    if !trusted {
        return denied();
    }
    let seconds = match lifetime(&config, &trust, common.duration) {
        Ok(s) => s,
        Err(resp) => return *resp,
    };
    if let Some(si) = &claims.source_identity {
        if si.len() < 2 || si.len() > 64 || !session_chars_ok(si) {
            return invalid_token(&format!("The {SOURCE_IDENTITY_CLAIM} claim is not valid"));
        }
    }
    let session = issue(
        shared,
        common.role_arn,
        common.session_name,
        seconds,
        claims.source_identity.clone(),
        Vec::new(),
        "AssumeRoleWithWebIdentity",
    );
    let mut result = format!(
        "    <SubjectFromWebIdentityToken>{}</SubjectFromWebIdentityToken>\n    <Audience>{}</Audience>\n",
        escape(&subject),
        escape(&aud)
    );
    result.push_str(&credentials_xml(&session));
    result.push_str(&format!(
        "    <Provider>{}</Provider>\n",
        escape(provider_name(&iss))
    ));
    result.push_str(&source_identity_xml(&session));
    success("AssumeRoleWithWebIdentity", result)
}

/// The provider's JWKS, fetched again when the token names a key the cached set lacks
/// (the issuer rotated its keys).
async fn provider_keys(
    shared: &Shared,
    provider: &OidcProvider,
    kid: Option<&str>,
) -> Result<Arc<JwkSet>, String> {
    let cached = lock(&shared.sts_roles.keys).get(&provider.issuer).cloned();
    if let Some(keys) = cached {
        if kid.is_none_or(|k| keys.find(k).is_some()) {
            return Ok(keys);
        }
    }
    let keys = Arc::new(fetch_jwks(provider).await?);
    lock(&shared.sts_roles.keys).insert(provider.issuer.clone(), keys.clone());
    Ok(keys)
}

/// GET `url` and parse the JSON body (bounded: 1 MiB, 10 s).
async fn get_json(provider: &OidcProvider, url: &str) -> Result<Value, String> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(pem) = &provider.ca_pem {
        use rustls::pki_types::pem::PemObject as _;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| format!("the provider's CA is not PEM: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("the provider's CA is not usable: {e}"))?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let req = hyper::Request::builder()
        .method(Method::GET)
        .uri(url)
        // The API server serves its JWKS as application/jwk-set+json and refuses (406) a
        // request that accepts only application/json.
        .header("accept", "application/json, application/jwk-set+json")
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("bad URL {url}: {e}"))?;
    let fetch = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| format!("fetching {url}: {e}"))?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), 1 << 20)
            .collect()
            .await
            .map_err(|e| format!("reading {url}: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("fetching {url}: HTTP {status}"));
        }
        serde_json::from_slice::<Value>(&body).map_err(|e| format!("{url} is not JSON: {e}"))
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), fetch)
        .await
        .map_err(|_| format!("fetching {url}: timed out"))?
}

/// Discovery document, then the JWKS it names.
async fn fetch_jwks(provider: &OidcProvider) -> Result<JwkSet, String> {
    let base = provider
        .discovery_url
        .as_deref()
        .unwrap_or(&provider.issuer)
        .trim_end_matches('/');
    let discovery = get_json(
        provider,
        &format!("{base}/.well-known/openid-configuration"),
    )
    .await?;
    let issuer = discovery
        .get("issuer")
        .and_then(Value::as_str)
        .unwrap_or("");
    if issuer.trim_end_matches('/') != provider.issuer.trim_end_matches('/') {
        return Err(format!(
            "the discovery document names issuer {issuer:?}, not {:?}",
            provider.issuer
        ));
    }
    let Some(jwks_uri) = discovery.get("jwks_uri").and_then(Value::as_str) else {
        return Err("the discovery document has no jwks_uri".into());
    };
    let url = match &provider.discovery_url {
        Some(_) => rebase(jwks_uri, base)?,
        None => jwks_uri.to_string(),
    };
    let set = get_json(provider, &url).await?;
    serde_json::from_value(set).map_err(|e| format!("{url} is not a JWK set: {e}"))
}

/// `uri` with its scheme and authority replaced by those of `base`.
fn rebase(uri: &str, base: &str) -> Result<String, String> {
    let parsed: hyper::Uri = uri.parse().map_err(|e| format!("jwks_uri {uri:?}: {e}"))?;
    let base: hyper::Uri = base
        .parse()
        .map_err(|e| format!("discovery URL {base:?}: {e}"))?;
    let path = parsed.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    Ok(format!(
        "{}://{}{path}",
        base.scheme_str().unwrap_or("https"),
        base.authority().map(|a| a.as_str()).unwrap_or("")
    ))
}

/// The container credentials endpoint: the configured role's credentials for a matching
/// `Authorization` header, JSON as the SDKs' container provider reads it.
pub(crate) async fn container_credentials(
    shared: &Shared,
    method: &Method,
    headers: &HeaderMap,
) -> Resp {
    let respond = |status: u16, message: &str| {
        Response::builder()
            .status(status)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(
                json!({"message": message}).to_string(),
            )))
            .expect("a valid response")
    };
    if method != Method::GET {
        return respond(405, "use GET");
    }
    let Some(presented) = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
    else {
        return respond(400, "Service account token cannot be empty");
    };
    let config = shared.sts_roles.config();
    let mut tags = Vec::new();
    // For an association: the pod the token was issued to (else its ServiceAccount).
    let mut pod_name = None;
    let mut entry = config
        .container_credentials
        .iter()
        .find(|c| !c.authorization_token.is_empty() && c.authorization_token == presented);
    let associations = config
        .container_credentials
        .iter()
        .any(|c| c.service_account.is_some());
    if entry.is_none() && associations {
        let verified =
            match verify_token(shared, &config, presented, Some(&[POD_IDENTITY_AUDIENCE])).await {
                Ok(v) => v,
                Err(TokenError::Idp(m)) => return respond(500, &m),
                Err(TokenError::Invalid(m) | TokenError::Expired(m)) => return respond(400, &m),
            };
        let subject = verified.claims.sub.clone().unwrap_or_default();
        entry = config.container_credentials.iter().find(|c| {
            c.service_account.as_deref().is_some_and(|sa| {
                subject
                    == format!(
                        "system:serviceaccount:{}:{sa}",
                        c.namespace.as_deref().unwrap_or("default")
                    )
            })
        });
        // The session tags EKS Pod Identity adds: the cluster's, then those of the API
        // server's claim.
        let cluster = cluster_name(&config);
        tags.push(("eks-cluster-arn".to_string(), cluster_arn(shared, &cluster)));
        tags.push(("eks-cluster-name".to_string(), cluster));
        let k8s = verified.claims.kubernetes.unwrap_or(Value::Null);
        pod_name = k8s
            .pointer("/pod/name")
            .or_else(|| k8s.pointer("/serviceaccount/name"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| entry.and_then(|e| e.service_account.clone()));
        for (tag, pointer) in [
            ("kubernetes-namespace", "/namespace"),
            ("kubernetes-service-account", "/serviceaccount/name"),
            ("kubernetes-pod-name", "/pod/name"),
            ("kubernetes-pod-uid", "/pod/uid"),
        ] {
            if let Some(v) = k8s.pointer(pointer).and_then(Value::as_str) {
                tags.push((tag.to_string(), v.to_string()));
            }
        }
    }
    let Some(entry) = entry else {
        return respond(403, "No Pod Identity association for this token");
    };
    let Some((account, _)) = parse_role_arn(&entry.role_arn) else {
        return respond(500, "the configured role ARN is not valid");
    };
    let account = account.to_string();
    let seconds = config.session_duration_seconds.unwrap_or(6 * 3600);
    let session_name = match (&entry.session_name, &pod_name) {
        (Some(name), _) => name.clone(),
        (None, Some(pod)) => pod_identity_session_name(&cluster_name(&config), pod),
        (None, None) => FIXED_TOKEN_SESSION_NAME.to_string(),
    };
    let session = issue(
        shared,
        &entry.role_arn,
        &session_name,
        seconds,
        None,
        tags,
        "ContainerCredentials",
    );
    let body = json!({
        "AccessKeyId": session.access_key_id,
        "SecretAccessKey": session.secret_access_key,
        "Token": session.session_token,
        "AccountId": account,
        "Expiration": iso8601(session.expiration),
    });
    Response::builder()
        .status(200)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid response")
}

/// The configured cluster name, or [`DEFAULT_CLUSTER_NAME`].
fn cluster_name(config: &StsConfig) -> String {
    config
        .cluster_name
        .clone()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| DEFAULT_CLUSTER_NAME.to_string())
}

/// `arn:aws:eks:<region>:<account>:cluster/<name>`, the `eks-cluster-arn` tag.
fn cluster_arn(shared: &Shared, cluster: &str) -> String {
    format!(
        "arn:aws:eks:{}:{}:cluster/{cluster}",
        shared.region, shared.account_id
    )
}

/// The role session name EKS Pod Identity gives a pod's credentials,
/// `eks-<cluster>-<pod>-<uuid>` (the EKS Auth API reference, AssumedRoleUser), a new uuid
/// every time. Within RoleSessionName's 64 characters: the `<cluster>-<pod>` part is cut at
/// its end (how EKS shortens it is not documented) so that the prefix and the whole uuid
/// stay, and a character outside `[\w+=,.@-]` becomes `-`.
pub(crate) fn pod_identity_session_name(cluster: &str, pod: &str) -> String {
    let uuid = crate::response::new_uuid();
    let room = MAX_SESSION_NAME - "eks-".len() - "-".len() - uuid.len();
    let middle: String = format!("{cluster}-{pod}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(room)
        .collect();
    format!("eks-{middle}-{uuid}")
}

/// `/_emu/sts` (GET, PUT the configuration; tokens are not shown) and `/_emu/sts/sessions`.
pub(crate) fn control(shared: &Shared, method: &Method, path: &str, body: &[u8]) -> Resp {
    let respond = |status: u16, body: Value| {
        Response::builder()
            .status(status)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("a valid response")
    };
    let shown = |config: StsConfig| {
        let mut config = config;
        for c in &mut config.container_credentials {
            c.authorization_token = "(set)".to_string();
        }
        serde_json::to_value(config).unwrap_or(Value::Null)
    };
    match (method, path.trim_end_matches('/')) {
        (&Method::GET, "/_emu/sts") => respond(200, shown(shared.sts_roles.config())),
        (&Method::PUT, "/_emu/sts") => match serde_json::from_slice::<StsConfig>(body) {
            Ok(config) => {
                shared.sts_roles.set_config(config);
                respond(200, shown(shared.sts_roles.config()))
            }
            Err(e) => respond(
                400,
                json!({"error": format!("not an STS configuration: {e}")}),
            ),
        },
        (&Method::GET, "/_emu/sts/sessions") => respond(
            200,
            serde_json::to_value(shared.sts_roles.sessions()).unwrap_or(Value::Null),
        ),
        _ => respond(
            404,
            json!({"error": format!("no control endpoint {method} {path}")}),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arns() {
        assert_eq!(
            parse_role_arn("arn:aws:iam::123456789012:role/ci/Deployer"),
            Some(("123456789012", "Deployer"))
        );
        assert_eq!(parse_role_arn("arn:aws:iam::123456789012:user/alice"), None);
        assert_eq!(parse_role_arn("arn:aws:iam::1234:role/x"), None);
        assert_eq!(parse_role_arn("arn:aws:sts::123456789012:role/x"), None);
    }

    #[test]
    fn provider_names_drop_the_scheme() {
        assert_eq!(
            provider_name("https://oidc.example.com/id/ABC/"),
            "oidc.example.com/id/ABC"
        );
        assert_eq!(provider_name("oidc.example.com"), "oidc.example.com");
    }

    #[test]
    fn jwks_uri_is_rebased_on_the_discovery_url() {
        assert_eq!(
            rebase(
                "https://kubernetes.default.svc.cluster.local/openid/v1/jwks",
                "https://127.0.0.1:6443"
            )
            .unwrap(),
            "https://127.0.0.1:6443/openid/v1/jwks"
        );
    }

    #[test]
    fn session_names_follow_the_model_pattern() {
        assert!(session_chars_ok("botocore-session-1700000000"));
        assert!(session_chars_ok("a.b@c=d,e+f_g-h"));
        assert!(!session_chars_ok("with space"));
        assert!(!session_chars_ok("slash/"));
    }

    #[test]
    fn pod_identity_session_names_are_eks_names_within_64_characters() {
        let a = pod_identity_session_name("prod", "signalman-0");
        let b = pod_identity_session_name("prod", "signalman-0");
        assert_ne!(a, b, "a new uuid every time");
        let uuid = a.strip_prefix("eks-prod-signalman-0-").expect(&a);
        assert_eq!(uuid.len(), 36);
        assert_eq!(uuid.matches('-').count(), 4);
        let long = pod_identity_session_name(
            "a-cluster-name-of-forty-characters-long",
            "signalman-operator-7d9f8c6b5-x2x9q",
        );
        assert_eq!(long.len(), 64, "{long}");
        assert!(long.starts_with("eks-a-cluster-name-of-forty-"), "{long}");
        assert!(session_chars_ok(&long));
        let odd = pod_identity_session_name("my cluster/ü", "p");
        assert!(odd.starts_with("eks-my-cluster---p-"), "{odd}");
        assert!(session_chars_ok(&odd));
    }

    #[test]
    fn expired_and_foreign_sessions_are_refused() {
        let roles = Roles::default();
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            "AWS4-HMAC-SHA256 Credential=ASIAUNKNOWN/20240101/us-east-1/ssm/aws4_request"
                .parse()
                .unwrap(),
        );
        assert_eq!(roles.check(&headers), Err(SessionRefusal::Invalid));
        let session = Session {
            access_key_id: "ASIAUNKNOWN".into(),
            secret_access_key: "s".into(),
            session_token: "t".into(),
            arn: "arn:aws:sts::123456789012:assumed-role/R/s".into(),
            role_arn: "arn:aws:iam::123456789012:role/R".into(),
            expiration: now_secs() + 60,
            source_identity: None,
            tags: vec![],
            issued_by: "AssumeRole".into(),
        };
        lock(&roles.sessions).insert(session.access_key_id.clone(), session);
        assert_eq!(roles.check(&headers), Err(SessionRefusal::Invalid));
        headers.insert("x-amz-security-token", "t".parse().unwrap());
        assert_eq!(roles.check(&headers), Ok(()));
        lock(&roles.sessions)
            .get_mut("ASIAUNKNOWN")
            .unwrap()
            .expiration = now_secs() - 1;
        assert_eq!(roles.check(&headers), Err(SessionRefusal::Expired));
        let mut long_term = HeaderMap::new();
        long_term.insert(
            AUTHORIZATION,
            "AWS4-HMAC-SHA256 Credential=alice/20240101/us-east-1/ssm/aws4_request"
                .parse()
                .unwrap(),
        );
        assert_eq!(roles.check(&long_term), Ok(()));
    }
}
