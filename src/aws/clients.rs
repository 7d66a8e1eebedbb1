//! SDK clients per region, each service with two configurations: a *send* client whose SDK
//! retries are off (a resent signal could be applied twice) and whose operation
//! has a hard timeout well inside the claim's deadline, and a *read* client that keeps the
//! SDK's standard retries for the idempotent look-ups. Every call passes its service's [`Gate`]:
//! an adaptive token bucket per operation, so the operator uses a quota it does not know
//! almost fully instead of bouncing off it, and a circuit breaker.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

use super::adaptive_rate::{AdaptiveConfig, AdaptiveLimiter, Outcome, Permit as RatePermit};

use aws_credential_types::provider::SharedCredentialsProvider;

use super::assume_role::AssumedRole;
use super::circuit::{CallResult, Change, Circuit, Permit};
use super::fair::FairTurns;
use super::sdk_error::failure_from_sdk;
use crate::delivery::{AwsFailure, ErrorClass};
use crate::metrics::Metrics;

/// The client-side limit of one service's calls: start at `per_second` with `burst` tokens;
/// the limiter adapts below that to the throttling AWS answers with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

/// Most regions the operator keeps clients for at once.
pub const MAX_REGIONS: usize = 64;
/// Clients unused this long (and held by no call) make room when the table is full.
const IDLE_REGION: Duration = Duration::from_secs(60);

/// Why no clients could be had for a signal.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoClients {
    /// The signal can never be sent as it is: no region at all, a region no AWS partition
    /// knows, or one outside `--allowed-regions`. Says which, in words.
    #[error("{0}")]
    Refused(String),
    /// Clients for [`MAX_REGIONS`] regions are in use: retried once one is idle.
    #[error("{0}")]
    Full(String),
}

impl NoClients {
    /// The attempt's outcome: nothing was sent. A refusal fails the signal, naming why; a full
    /// table is retried like any failure that heals by itself.
    pub fn failure(self) -> AwsFailure {
        match self {
            NoClients::Refused(why) => AwsFailure {
                class: ErrorClass::Invalid,
                code: None,
                message: why,
            },
            NoClients::Full(why) => AwsFailure {
                class: ErrorClass::NotSent,
                code: Some("RegionLimit".into()),
                message: why,
            },
        }
    }
}
/// Most role sessions (role, namespace, requester, region) kept at once.
pub const MAX_ROLE_SESSIONS: usize = 256;

/// Whom the operator acts as for one signal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The role a SignalPolicy names; `None`: the operator's own credentials.
    pub role_arn: Option<String>,
    /// The signal's namespace: names and tags the role session.
    pub namespace: String,
    /// Who asked for the signal: the role session's SourceIdentity.
    pub requested_by: Option<String>,
}

/// Settings shared by every client the operator builds.
#[derive(Clone, Debug)]
pub struct AwsSettings {
    /// Hard timeout of one send call, well inside the claim's time to live.
    pub send_timeout: Duration,
    pub swf_rate: RateLimit,
    pub ssm_rate: RateLimit,
    /// Approve and Reject name the requester in their Comment.
    pub requester_in_comment: bool,
    /// The only regions signals may name (`--allowed-regions`); empty: any region an AWS
    /// partition knows.
    pub allowed_regions: Vec<String>,
}

/// What every call to one service in one region passes through: an adaptive token bucket per
/// operation (AWS's quotas are per operation, account and region) and a circuit breaker.
pub struct Gate {
    service: &'static str,
    rate: RateLimit,
    limiters: Mutex<HashMap<&'static str, Arc<AdaptiveLimiter>>>,
    circuit: Mutex<Circuit>,
    /// Namespaces take turns at the limiter of each operation a signal waits for (the send,
    /// the verification's read).
    turns: Mutex<HashMap<&'static str, FairTurns>>,
}

/// A signal's turn at the send limiter; leaving the line when dropped (sent, or given up).
pub struct Turn {
    gate: Arc<Gate>,
    operation: &'static str,
    namespace: String,
    name: String,
}

impl Drop for Turn {
    fn drop(&mut self) {
        if let Some(turns) = self
            .gate
            .turns
            .lock()
            .expect("turns lock")
            .get_mut(self.operation)
        {
            turns.done(&self.namespace, &self.name);
        }
    }
}

impl Gate {
    pub fn new(service: &'static str, rate: RateLimit) -> Self {
        Self {
            service,
            rate,
            limiters: Mutex::new(HashMap::new()),
            circuit: Mutex::new(Circuit::default()),
            turns: Mutex::new(HashMap::new()),
        }
    }

    /// The turn of `name` in `namespace` at `operation`'s limiter: `Ok` when it is now (hold
    /// the [`Turn`] until the send is done), else how long to wait before asking again.
    pub fn turn(
        self: &Arc<Self>,
        operation: &'static str,
        namespace: &str,
        name: &str,
    ) -> Result<Turn, Duration> {
        /// A wait shorter than this is spent at the limiter itself.
        const AT_THE_LIMITER: Duration = Duration::from_secs(1);
        let rate = self.limiter(operation).current_rate();
        let wait = self
            .turns
            .lock()
            .expect("turns lock")
            .entry(operation)
            .or_default()
            .wait(namespace, name, rate, std::time::Instant::now());
        if wait > AT_THE_LIMITER {
            // Ask again a little before the turn, so the limiter never waits for a signal
            // still asleep in the queue.
            return Err(wait - AT_THE_LIMITER);
        }
        Ok(Turn {
            gate: self.clone(),
            operation,
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }

    /// The limiter of `operation`, made on first use.
    pub fn limiter(&self, operation: &'static str) -> Arc<AdaptiveLimiter> {
        self.limiters
            .lock()
            .expect("limiter map")
            .entry(operation)
            .or_insert_with(|| {
                Arc::new(AdaptiveLimiter::new(AdaptiveConfig::new(
                    self.rate.per_second,
                    self.rate.burst,
                )))
            })
            .clone()
    }

    /// Runs one idempotent read of `operation` under its limiter, and tells the limiter how
    /// AWS answered.
    pub async fn read<T>(
        &self,
        operation: &'static str,
        metrics: &Metrics,
        call: impl std::future::Future<Output = T>,
        failure: impl Fn(&T) -> Option<&AwsFailure>,
    ) -> T {
        let limiter = self.limiter(operation);
        let permit = limiter.acquire().await;
        let result = call.await;
        self.record(operation, &limiter, permit, failure(&result), metrics);
        result
    }

    /// Tells `operation`'s limiter how the call sent with `permit` ended.
    pub fn record(
        &self,
        operation: &'static str,
        limiter: &AdaptiveLimiter,
        permit: RatePermit,
        failure: Option<&AwsFailure>,
        metrics: &Metrics,
    ) {
        let outcome = match failure.map(|f| f.class) {
            None => Outcome::Accepted,
            Some(ErrorClass::Throttled) => Outcome::Throttled,
            Some(ErrorClass::NotSent | ErrorClass::Ambiguous) => Outcome::Unknown,
            Some(_) => Outcome::Accepted,
        };
        limiter.record(permit, outcome);
        metrics.set_rate_limit(self.service, operation, limiter.current_rate());
    }

    /// Whether a call may be made now (see [`Circuit::permit`]).
    pub fn permit(&self) -> Permit {
        self.circuit
            .lock()
            .expect("circuit lock")
            .permit(std::time::Instant::now())
    }

    /// Reports how a call ended; returns a change of the circuit worth telling.
    pub fn record_call(&self, result: CallResult) -> Option<Change> {
        self.circuit
            .lock()
            .expect("circuit lock")
            .record(std::time::Instant::now(), result)
    }

    pub fn is_open(&self) -> bool {
        self.circuit.lock().expect("circuit lock").is_open()
    }
}

/// One service's clients in one region, and the gate its calls pass.
pub struct ServiceClients<C> {
    /// SDK retries off, hard operation timeout: for the one non-idempotent send.
    pub send: C,
    /// Standard SDK retries: for idempotent look-ups.
    pub read: C,
    /// Shared by every identity in the same account and region: AWS's quotas are theirs.
    pub gate: Arc<Gate>,
}

/// The clients of one region.
pub struct RegionClients {
    pub region: String,
    /// Approve and Reject name the requester in their Comment.
    pub requester_in_comment: bool,
    pub swf: ServiceClients<aws_sdk_swf::Client>,
    pub ssm: ServiceClients<aws_sdk_ssm::Client>,
    pub sts: aws_sdk_sts::Client,
    /// When these clients were last handed out.
    last_used: Mutex<std::time::Instant>,
    /// The principal these clients sign as, and when STS said so (a failure is not remembered).
    caller: tokio::sync::Mutex<Option<(std::time::Instant, String)>>,
    /// What the SWF pre-send check learned about runs, as this identity read them.
    pub swf_runs: super::swf::RunCache,
    /// Executions this identity read moments ago, for the SSM pre-send check.
    pub ssm_reads: super::ssm::RecentReads,
}

/// How long the principal STS named is trusted before it is asked again: the credentials a
/// process signs with can change (a rotated key, a new role), their principal rarely does.
const CALLER_FRESH: Duration = Duration::from_secs(600);

impl RegionClients {
    fn touch(&self, now: std::time::Instant) {
        *self.last_used.lock().expect("last used") = now;
    }

    fn idle_for(&self, now: std::time::Instant) -> Duration {
        now.saturating_duration_since(*self.last_used.lock().expect("last used"))
    }

    /// The principal the operator signs as: STS GetCallerIdentity's ARN as
    /// [`super::principal::principal_of`] reads it (a role session is its role, so a refreshed
    /// IRSA or Pod Identity session is the same principal). `None` while STS cannot say;
    /// asked again next time.
    pub async fn caller_principal(&self, metrics: &Metrics) -> Option<String> {
        let mut cached = self.caller.lock().await;
        if let Some((at, principal)) = cached.as_ref() {
            if at.elapsed() < CALLER_FRESH {
                return Some(principal.clone());
            }
        }
        let call = async {
            self.sts
                .get_caller_identity()
                .send()
                .await
                .map_err(|e| failure_from_sdk(&e))?
                .arn()
                .map(super::principal::principal_of)
                .ok_or_else(|| AwsFailure {
                    class: ErrorClass::Ambiguous,
                    code: None,
                    message: "STS named no ARN".into(),
                })
        };
        let principal = metrics
            .observe_aws(
                "sts",
                "GetCallerIdentity",
                call,
                crate::metrics::result_outcome,
            )
            .await
            .ok()?;
        *cached = Some((std::time::Instant::now(), principal.clone()));
        Some(principal)
    }
}

/// Lazily built clients keyed by region (spec.region, else the default region).
pub struct AwsClients {
    base: SdkConfig,
    settings: AwsSettings,
    regions: Mutex<HashMap<String, Arc<RegionClients>>>,
    /// Clients of role sessions, by (role, namespace, requester, region).
    roles: Mutex<HashMap<RoleSessionKey, Arc<RegionClients>>>,
    /// Rate limits and circuits by (account, region): shared by every identity there.
    gates: Mutex<HashMap<(String, String), ServiceGates>>,
}

/// The SWF and the SSM gate of one account and region.
type ServiceGates = (Arc<Gate>, Arc<Gate>);

type RoleSessionKey = (String, String, Option<String>, String);

impl AwsClients {
    /// Loads the SDK's default chain (environment, IRSA web identity, EKS Pod Identity,
    /// profiles, IMDS) and endpoint overrides (`AWS_ENDPOINT_URL[_SWF|_SSM|_STS]`).
    pub async fn from_env(default_region: Option<String>, settings: AwsSettings) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = default_region {
            loader = loader.region(Region::new(region));
        }
        Self::new(loader.load().await, settings)
    }

    pub fn new(base: SdkConfig, settings: AwsSettings) -> Self {
        Self {
            base,
            settings,
            regions: Mutex::new(HashMap::new()),
            roles: Mutex::new(HashMap::new()),
            gates: Mutex::new(HashMap::new()),
        }
    }

    /// The clients to send one signal with: the operator's own identity, or the role a
    /// SignalPolicy names, in `region` (or the default region).
    pub fn for_identity(
        &self,
        identity: &Identity,
        region: Option<&str>,
    ) -> Result<Arc<RegionClients>, NoClients> {
        let Some(role) = identity.role_arn.as_deref() else {
            return self.for_region(region);
        };
        let region = self.region_or_default(region)?;
        let key = (
            role.to_string(),
            identity.namespace.clone(),
            identity.requested_by.clone(),
            region.clone(),
        );
        let mut roles = self.roles.lock().expect("role map lock");
        if let Some(clients) = roles.get(&key) {
            return Ok(clients.clone());
        }
        // One session per role, namespace, requester and region; a bound keeps the map
        // small (clients in use live on in their Arcs; the next use makes a new session).
        if roles.len() >= MAX_ROLE_SESSIONS {
            roles.clear();
        }
        let own = self.for_region(Some(&region))?;
        let provider = AssumedRole {
            sts: own.sts.clone(),
            role_arn: role.to_string(),
            namespace: identity.namespace.clone(),
            requested_by: identity.requested_by.clone(),
        };
        let account = role.split(':').nth(4).unwrap_or_default().to_string();
        let clients = Arc::new(self.build(
            &region,
            &account,
            Some(SharedCredentialsProvider::new(provider)),
        ));
        roles.insert(key, clients.clone());
        Ok(clients)
    }

    /// `region`, else the default region, if the operator serves it: a region some AWS
    /// partition knows ([`crate::api::is_known_region`]) and, with `--allowed-regions`, one of
    /// those. The error says why not.
    pub fn region_or_default(&self, region: Option<&str>) -> Result<String, NoClients> {
        let region = region
            .map(str::to_string)
            .or_else(|| self.default_region())
            .ok_or_else(|| {
                NoClients::Refused("no region: set spec.region or the operator's --region".into())
            })?;
        if !crate::api::is_known_region(&region) {
            return Err(NoClients::Refused(format!(
                "region {region} is not a region of any AWS partition"
            )));
        }
        let allowed = &self.settings.allowed_regions;
        if !allowed.is_empty() && !allowed.contains(&region) {
            return Err(NoClients::Refused(format!(
                "region {region} is not one of the operator's --allowed-regions ({})",
                allowed.join(", ")
            )));
        }
        Ok(region)
    }

    /// The gates of `account` (empty: the operator's own) in `region`.
    fn gates(&self, account: &str, region: &str) -> (Arc<Gate>, Arc<Gate>) {
        self.gates
            .lock()
            .expect("gate map lock")
            .entry((account.to_string(), region.to_string()))
            .or_insert_with(|| {
                (
                    Arc::new(Gate::new("swf", self.settings.swf_rate)),
                    Arc::new(Gate::new("ssm", self.settings.ssm_rate)),
                )
            })
            .clone()
    }

    /// The region used when a signal names none.
    pub fn default_region(&self) -> Option<String> {
        self.base.region().map(|r| r.to_string())
    }

    /// The clients for `region` (or the default region).
    pub fn for_region(&self, region: Option<&str>) -> Result<Arc<RegionClients>, NoClients> {
        self.for_region_at(region, std::time::Instant::now())
    }

    fn for_region_at(
        &self,
        region: Option<&str>,
        now: std::time::Instant,
    ) -> Result<Arc<RegionClients>, NoClients> {
        let region = self.region_or_default(region)?;
        let mut regions = self.regions.lock().expect("region map lock");
        if let Some(clients) = regions.get(&region) {
            clients.touch(now);
            return Ok(clients.clone());
        }
        // A bound keeps names a partition's pattern admits but AWS never made from growing
        // the map (and the per-region metrics) without end: idle clients make room, and
        // while none is idle a new region waits its turn.
        if regions.len() >= MAX_REGIONS {
            regions.retain(|_, c| Arc::strong_count(c) > 1 || c.idle_for(now) < IDLE_REGION);
        }
        if regions.len() >= MAX_REGIONS {
            return Err(NoClients::Full(format!(
                "clients for {MAX_REGIONS} regions are in use (the operator's limit); region \
                 {region} is served once one of them has been idle for {}s",
                IDLE_REGION.as_secs()
            )));
        }
        let clients = Arc::new(self.build(&region, "", None));
        regions.insert(region, clients.clone());
        Ok(clients)
    }

    fn build(
        &self,
        region_name: &str,
        account: &str,
        credentials: Option<SharedCredentialsProvider>,
    ) -> RegionClients {
        let (swf_gate, ssm_gate) = self.gates(account, region_name);
        let base = match credentials {
            Some(provider) => self
                .base
                .to_builder()
                .credentials_provider(provider)
                .build(),
            None => self.base.clone(),
        };
        let region = Region::new(region_name.to_string());
        let send_timeouts = TimeoutConfig::builder()
            .operation_timeout(self.settings.send_timeout)
            .operation_attempt_timeout(self.settings.send_timeout)
            .connect_timeout(Duration::from_secs(5).min(self.settings.send_timeout))
            .build();
        let read_timeouts = TimeoutConfig::builder()
            .operation_timeout(Duration::from_secs(60))
            .operation_attempt_timeout(Duration::from_secs(20))
            .connect_timeout(Duration::from_secs(5))
            .build();
        let swf = |retry: RetryConfig, timeouts: TimeoutConfig| {
            let conf = aws_sdk_swf::config::Builder::from(&base)
                .region(region.clone())
                .retry_config(retry)
                .timeout_config(timeouts)
                .build();
            aws_sdk_swf::Client::from_conf(conf)
        };
        let ssm = |retry: RetryConfig, timeouts: TimeoutConfig| {
            let conf = aws_sdk_ssm::config::Builder::from(&base)
                .region(region.clone())
                .retry_config(retry)
                .timeout_config(timeouts)
                .build();
            aws_sdk_ssm::Client::from_conf(conf)
        };
        let sts_conf = aws_sdk_sts::config::Builder::from(&base)
            .region(region.clone())
            .timeout_config(read_timeouts.clone())
            .build();
        RegionClients {
            region: region.to_string(),
            requester_in_comment: self.settings.requester_in_comment,
            swf: ServiceClients {
                send: swf(RetryConfig::disabled(), send_timeouts.clone()),
                read: swf(RetryConfig::standard(), read_timeouts.clone()),
                gate: swf_gate,
            },
            ssm: ServiceClients {
                send: ssm(RetryConfig::disabled(), send_timeouts),
                read: ssm(RetryConfig::standard(), read_timeouts),
                gate: ssm_gate,
            },
            sts: aws_sdk_sts::Client::from_conf(sts_conf),
            last_used: Mutex::new(std::time::Instant::now()),
            caller: tokio::sync::Mutex::new(None),
            swf_runs: Default::default(),
            ssm_reads: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clients(allowed: &[&str]) -> AwsClients {
        let config = SdkConfig::builder()
            .region(Region::new("us-east-1"))
            .behavior_version(BehaviorVersion::latest())
            .build();
        let rate = RateLimit {
            per_second: 1.0,
            burst: 1,
        };
        AwsClients::new(
            config,
            AwsSettings {
                send_timeout: Duration::from_secs(5),
                swf_rate: rate,
                ssm_rate: rate,
                requester_in_comment: true,
                allowed_regions: allowed.iter().map(|r| r.to_string()).collect(),
            },
        )
    }

    #[test]
    fn regions_no_partition_knows_or_outside_the_allowlist_are_refused_naming_why() {
        let aws = clients(&[]);
        assert!(aws.for_region(Some("eu-west-1")).is_ok());
        let Err(NoClients::Refused(why)) = aws.for_region(Some("zz-fake-1")) else {
            panic!("a made-up region is refused");
        };
        assert!(
            why.contains("zz-fake-1") && why.contains("AWS partition"),
            "{why}"
        );
        let aws = clients(&["eu-west-1"]);
        assert!(aws.for_region(Some("eu-west-1")).is_ok());
        let Err(NoClients::Refused(why)) = aws.for_region(Some("eu-central-1")) else {
            panic!("a region outside the allowlist is refused");
        };
        assert!(why.contains("--allowed-regions"), "{why}");
    }

    /// A full table is a retry naming the limit; idle clients make room for a real region.
    #[test]
    fn a_full_client_table_is_a_retry_until_idle_clients_make_room() {
        let aws = clients(&[]);
        let start = std::time::Instant::now();
        let held: Vec<_> = (1..=MAX_REGIONS)
            .map(|i| {
                aws.for_region_at(Some(&format!("us-made-{i}")), start)
                    .expect("room")
            })
            .collect();
        let Err(NoClients::Full(why)) = aws.for_region_at(Some("eu-west-1"), start) else {
            panic!("the table is full");
        };
        assert!(why.contains(&MAX_REGIONS.to_string()), "{why}");
        assert_eq!(
            NoClients::Full(why).failure().class,
            ErrorClass::NotSent,
            "retried, not failed"
        );
        // Idle long enough, but still held by a call: no room yet.
        let later = start + IDLE_REGION + Duration::from_secs(1);
        assert!(matches!(
            aws.for_region_at(Some("eu-west-1"), later),
            Err(NoClients::Full(_))
        ));
        drop(held);
        assert!(aws.for_region_at(Some("eu-west-1"), later).is_ok());
    }
}
