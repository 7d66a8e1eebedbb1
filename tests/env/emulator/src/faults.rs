//! Faults on demand (throttling, 5xx, drop-after-apply, latency) and the counters that show
//! what the emulator received and applied. Every type here is the JSON of the control API.
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// The two faultable services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    Ssm,
    Swf,
}

impl Service {
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Ssm => "ssm",
            Service::Swf => "swf",
        }
    }
}

/// The whole fault configuration, for both services. The default injects nothing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    pub ssm: ServiceFaults,
    pub swf: ServiceFaults,
    /// Seed for the `probability` rolls; absent: seeded from the OS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// Faults for one service.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceFaults {
    /// Token buckets. A rule naming an operation wins over one without (which gives every
    /// operation of the service its own bucket with those numbers).
    pub throttle: Vec<ThrottleRule>,
    /// Injected faults, tried in order; the first that fires decides the call.
    pub rules: Vec<FaultRule>,
}

/// A token bucket: `capacity` calls at once, `refill_per_second` new tokens per second.
/// A call that finds the bucket empty is answered HTTP 400 `ThrottlingException` and is
/// not applied (SSM) or not forwarded (SWF).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    pub capacity: f64,
    pub refill_per_second: f64,
}

impl ThrottleRule {
    /// A bucket for one operation (e.g. `SendAutomationSignal`).
    pub fn new(operation: impl Into<String>, capacity: f64, refill_per_second: f64) -> Self {
        Self {
            operation: Some(operation.into()),
            capacity,
            refill_per_second,
        }
    }

    /// One bucket per operation, for every operation of the service.
    pub fn each_operation(capacity: f64, refill_per_second: f64) -> Self {
        Self {
            operation: None,
            capacity,
            refill_per_second,
        }
    }
}

/// What an injected fault does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// HTTP 500 without applying (SSM `InternalServerError`, SWF `InternalFailure`).
    ServerError,
    /// HTTP 503 without applying (`ServiceUnavailable`).
    ServiceUnavailable,
    /// Apply (SSM) or forward (SWF), then close the connection before any response byte.
    DropAfterApply,
    /// Wait `latency_ms` before handling the call (combines with the other kinds).
    Latency,
}

impl FaultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::ServerError => "server_error",
            FaultKind::ServiceUnavailable => "service_unavailable",
            FaultKind::DropAfterApply => "drop_after_apply",
            FaultKind::Latency => "latency",
        }
    }
}

/// One fault. `operation` absent: every operation. `count` absent: every matching call;
/// otherwise the next `count` calls on which it fires (the value left is what
/// `GET /_emu/faults` shows). `probability` absent: always fires; else fires with that
/// probability (0..=1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    pub kind: FaultKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    /// Only for `latency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
}

impl FaultRule {
    pub fn new(kind: FaultKind) -> Self {
        Self {
            kind,
            operation: None,
            count: None,
            probability: None,
            latency_ms: None,
        }
    }
    pub fn server_error() -> Self {
        Self::new(FaultKind::ServerError)
    }
    pub fn service_unavailable() -> Self {
        Self::new(FaultKind::ServiceUnavailable)
    }
    pub fn drop_after_apply() -> Self {
        Self::new(FaultKind::DropAfterApply)
    }
    pub fn latency(ms: u64) -> Self {
        Self {
            latency_ms: Some(ms),
            ..Self::new(FaultKind::Latency)
        }
    }
    /// Only calls of this operation (e.g. `SignalWorkflowExecution`).
    pub fn on(mut self, operation: impl Into<String>) -> Self {
        self.operation = Some(operation.into());
        self
    }
    /// Only the next `n` calls on which the rule fires.
    pub fn times(mut self, n: u64) -> Self {
        self.count = Some(n);
        self
    }
    pub fn with_probability(mut self, p: f64) -> Self {
        self.probability = Some(p);
        self
    }
}

impl FaultConfig {
    /// No faults.
    pub fn none() -> Self {
        Self::default()
    }

    /// Throttling at the published AWS quotas (per account and region), nothing else:
    /// SWF SignalWorkflowExecution 2000/30 per s, GetWorkflowExecutionHistory 2000/60,
    /// ListOpenWorkflowExecutions 200/48, DescribeWorkflowExecution 2000/6; SSM
    /// SendAutomationSignal, GetAutomationExecution, DescribeAutomationStepExecutions 3/3,
    /// StartAutomationExecution 1/1.
    pub fn aws_quotas() -> Self {
        let swf = [
            ("SignalWorkflowExecution", 2000.0, 30.0),
            ("GetWorkflowExecutionHistory", 2000.0, 60.0),
            ("ListOpenWorkflowExecutions", 200.0, 48.0),
            ("DescribeWorkflowExecution", 2000.0, 6.0),
        ];
        let ssm = [
            ("SendAutomationSignal", 3.0, 3.0),
            ("GetAutomationExecution", 3.0, 3.0),
            ("DescribeAutomationStepExecutions", 3.0, 3.0),
            ("StartAutomationExecution", 1.0, 1.0),
        ];
        let rules = |list: &[(&str, f64, f64)]| {
            list.iter()
                .map(|(op, c, r)| ThrottleRule::new(*op, *c, *r))
                .collect::<Vec<_>>()
        };
        Self {
            ssm: ServiceFaults {
                throttle: rules(&ssm),
                rules: vec![],
            },
            swf: ServiceFaults {
                throttle: rules(&swf),
                rules: vec![],
            },
            seed: None,
        }
    }

    pub fn service(&self, service: Service) -> &ServiceFaults {
        match service {
            Service::Ssm => &self.ssm,
            Service::Swf => &self.swf,
        }
    }

    pub fn service_mut(&mut self, service: Service) -> &mut ServiceFaults {
        match service {
            Service::Ssm => &mut self.ssm,
            Service::Swf => &mut self.swf,
        }
    }

    /// Adds a fault rule for `service`.
    pub fn with_rule(mut self, service: Service, rule: FaultRule) -> Self {
        self.service_mut(service).rules.push(rule);
        self
    }

    /// Adds a token bucket for `service`.
    pub fn with_throttle(mut self, service: Service, rule: ThrottleRule) -> Self {
        self.service_mut(service).throttle.push(rule);
        self
    }

    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Checks the numbers; the control API answers 400 with this message.
    pub fn validate(&self) -> Result<(), String> {
        for service in [Service::Ssm, Service::Swf] {
            let faults = self.service(service);
            for t in &faults.throttle {
                if !(t.capacity.is_finite() && t.capacity >= 0.0) {
                    return Err(format!(
                        "{}: throttle capacity must be >= 0",
                        service.as_str()
                    ));
                }
                if !(t.refill_per_second.is_finite() && t.refill_per_second >= 0.0) {
                    return Err(format!(
                        "{}: refill_per_second must be >= 0",
                        service.as_str()
                    ));
                }
            }
            for r in &faults.rules {
                if let Some(p) = r.probability {
                    if !(0.0..=1.0).contains(&p) {
                        return Err(format!(
                            "{}: probability must be within 0..=1",
                            service.as_str()
                        ));
                    }
                }
                if (r.kind == FaultKind::Latency) != r.latency_ms.is_some() {
                    return Err(format!(
                        "{}: latency_ms is required for kind latency and only allowed there",
                        service.as_str()
                    ));
                }
            }
        }
        Ok(())
    }
}

/// What the emulator saw, per service. `S` is the record of one applied signal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceCounters<S> {
    /// Every request received, by operation, whatever happened to it.
    pub calls: BTreeMap<String, u64>,
    /// Calls answered `ThrottlingException`.
    pub throttled: u64,
    /// Injected faults by kind (`server_error`, `service_unavailable`, `drop_after_apply`,
    /// `latency`).
    pub faults: BTreeMap<String, u64>,
    /// SSM: SendAutomationSignal calls applied. SWF: SignalWorkflowExecution calls that moto
    /// answered 2xx. Both include calls whose response was then dropped.
    pub applied_signals: u64,
    /// The applied signals, oldest first.
    pub signals: Vec<S>,
}

impl<S> Default for ServiceCounters<S> {
    fn default() -> Self {
        Self {
            calls: BTreeMap::new(),
            throttled: 0,
            faults: BTreeMap::new(),
            applied_signals: 0,
            signals: Vec::new(),
        }
    }
}

impl<S> ServiceCounters<S> {
    /// Calls received for `operation`.
    pub fn calls_of(&self, operation: &str) -> u64 {
        self.calls.get(operation).copied().unwrap_or(0)
    }
    /// Injected faults of `kind`.
    pub fn faults_of(&self, kind: FaultKind) -> u64 {
        self.faults.get(kind.as_str()).copied().unwrap_or(0)
    }
}

/// One applied SendAutomationSignal.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SsmSignal {
    pub execution_id: String,
    pub signal_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_execution_id: Option<String>,
    /// The caller's ARN.
    pub principal: String,
    /// The SourceIdentity of the caller's STS session, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_identity: Option<String>,
}

/// One SignalWorkflowExecution that moto accepted (the input itself is not kept).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SwfSignal {
    pub domain: String,
    pub workflow_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    pub signal_name: String,
    pub has_input: bool,
}

/// Everything counted since start or the last reset.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    pub ssm: ServiceCounters<SsmSignal>,
    pub swf: ServiceCounters<SwfSignal>,
}

impl Counters {
    pub(crate) fn call(&mut self, service: Service, operation: &str) {
        let calls = match service {
            Service::Ssm => &mut self.ssm.calls,
            Service::Swf => &mut self.swf.calls,
        };
        *calls.entry(operation.to_string()).or_default() += 1;
    }

    pub(crate) fn throttled(&mut self, service: Service) {
        match service {
            Service::Ssm => self.ssm.throttled += 1,
            Service::Swf => self.swf.throttled += 1,
        }
    }

    pub(crate) fn fault(&mut self, service: Service, kind: FaultKind) {
        let faults = match service {
            Service::Ssm => &mut self.ssm.faults,
            Service::Swf => &mut self.swf.faults,
        };
        *faults.entry(kind.as_str().to_string()).or_default() += 1;
    }
}

/// What to do with a call after latency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Proceed,
    Throttled,
    Fail(FaultKind),
    DropAfterApply,
}

struct Bucket {
    tokens: f64,
    capacity: f64,
    refill: f64,
    last: Instant,
}

/// The live fault state: the configuration (with counts going down), buckets, the RNG.
pub(crate) struct FaultEngine {
    config: FaultConfig,
    buckets: HashMap<(Service, String), Bucket>,
    rng: StdRng,
}

impl FaultEngine {
    pub(crate) fn new(config: FaultConfig) -> Self {
        let rng = Self::rng_for(&config);
        Self {
            config,
            buckets: HashMap::new(),
            rng,
        }
    }

    fn rng_for(config: &FaultConfig) -> StdRng {
        match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        }
    }

    pub(crate) fn config(&self) -> FaultConfig {
        self.config.clone()
    }

    pub(crate) fn set(&mut self, config: FaultConfig) {
        *self = Self::new(config);
    }

    /// The latency to add to this call (every matching latency rule that fires, summed).
    pub(crate) fn latency(&mut self, service: Service, operation: &str) -> Option<Duration> {
        let rules = &mut service_faults(&mut self.config, service).rules;
        let mut total = 0u64;
        let mut fired = false;
        for rule in rules.iter_mut().filter(|r| r.kind == FaultKind::Latency) {
            if fires(rule, operation, &mut self.rng) {
                fired = true;
                total += rule.latency_ms.unwrap_or(0);
            }
        }
        fired.then(|| Duration::from_millis(total))
    }

    /// Throttling first (the bucket is charged), then the first error rule that fires.
    pub(crate) fn verdict(&mut self, service: Service, operation: &str) -> Verdict {
        if !self.take_token(service, operation) {
            return Verdict::Throttled;
        }
        let rules = &mut service_faults(&mut self.config, service).rules;
        for rule in rules.iter_mut().filter(|r| r.kind != FaultKind::Latency) {
            if fires(rule, operation, &mut self.rng) {
                return match rule.kind {
                    FaultKind::DropAfterApply => Verdict::DropAfterApply,
                    kind => Verdict::Fail(kind),
                };
            }
        }
        Verdict::Proceed
    }

    fn take_token(&mut self, service: Service, operation: &str) -> bool {
        let key = (service, operation.to_string());
        if !self.buckets.contains_key(&key) {
            let throttle = &self.config.service(service).throttle;
            let rule = throttle
                .iter()
                .find(|t| t.operation.as_deref() == Some(operation))
                .or_else(|| throttle.iter().find(|t| t.operation.is_none()));
            let Some(rule) = rule else { return true };
            let bucket = Bucket {
                tokens: rule.capacity,
                capacity: rule.capacity,
                refill: rule.refill_per_second,
                last: Instant::now(),
            };
            self.buckets.insert(key.clone(), bucket);
        }
        let bucket = self.buckets.get_mut(&key).expect("inserted above");
        let now = Instant::now();
        let elapsed = now.duration_since(bucket.last).as_secs_f64();
        bucket.last = now;
        bucket.tokens = (bucket.tokens + elapsed * bucket.refill).min(bucket.capacity);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn service_faults(config: &mut FaultConfig, service: Service) -> &mut ServiceFaults {
    config.service_mut(service)
}

/// Whether `rule` fires for this call; a firing rule with a count spends one.
fn fires(rule: &mut FaultRule, operation: &str, rng: &mut StdRng) -> bool {
    if rule.operation.as_deref().is_some_and(|op| op != operation) {
        return false;
    }
    if rule.count == Some(0) {
        return false;
    }
    if let Some(p) = rule.probability {
        if rng.random::<f64>() >= p {
            return false;
        }
    }
    if let Some(n) = rule.count.as_mut() {
        *n -= 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_empties_and_refills() {
        let cfg =
            FaultConfig::none().with_throttle(Service::Ssm, ThrottleRule::new("Op", 2.0, 1000.0));
        let mut engine = FaultEngine::new(cfg);
        assert_eq!(engine.verdict(Service::Ssm, "Op"), Verdict::Proceed);
        assert_eq!(engine.verdict(Service::Ssm, "Op"), Verdict::Proceed);
        // Other operations and the other service have no bucket.
        assert_eq!(engine.verdict(Service::Ssm, "Other"), Verdict::Proceed);
        assert_eq!(engine.verdict(Service::Swf, "Op"), Verdict::Proceed);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(engine.verdict(Service::Ssm, "Op"), Verdict::Proceed);
    }

    #[test]
    fn zero_refill_throttles_after_capacity() {
        let cfg =
            FaultConfig::none().with_throttle(Service::Swf, ThrottleRule::each_operation(1.0, 0.0));
        let mut engine = FaultEngine::new(cfg);
        assert_eq!(engine.verdict(Service::Swf, "A"), Verdict::Proceed);
        assert_eq!(engine.verdict(Service::Swf, "A"), Verdict::Throttled);
        assert_eq!(engine.verdict(Service::Swf, "B"), Verdict::Proceed);
    }

    #[test]
    fn counted_rules_run_out_and_show_what_is_left() {
        let cfg = FaultConfig::none()
            .with_rule(Service::Ssm, FaultRule::server_error().on("Op").times(2));
        let mut engine = FaultEngine::new(cfg);
        assert_eq!(engine.verdict(Service::Ssm, "Other"), Verdict::Proceed);
        assert_eq!(
            engine.verdict(Service::Ssm, "Op"),
            Verdict::Fail(FaultKind::ServerError)
        );
        assert_eq!(engine.config().ssm.rules[0].count, Some(1));
        assert_eq!(
            engine.verdict(Service::Ssm, "Op"),
            Verdict::Fail(FaultKind::ServerError)
        );
        assert_eq!(engine.verdict(Service::Ssm, "Op"), Verdict::Proceed);
    }

    #[test]
    fn seeded_probability_is_reproducible() {
        let cfg = FaultConfig::none()
            .with_rule(
                Service::Swf,
                FaultRule::drop_after_apply().with_probability(0.5),
            )
            .with_seed(7);
        let run = || {
            let mut engine = FaultEngine::new(cfg.clone());
            (0..200)
                .map(|_| engine.verdict(Service::Swf, "X") == Verdict::DropAfterApply)
                .collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        let hits = a.iter().filter(|h| **h).count();
        assert!((50..150).contains(&hits), "{hits} of 200");
    }

    #[test]
    fn latency_rules_add_up() {
        let cfg = FaultConfig::none()
            .with_rule(Service::Ssm, FaultRule::latency(100))
            .with_rule(Service::Ssm, FaultRule::latency(50).on("B").times(1));
        let mut engine = FaultEngine::new(cfg);
        assert_eq!(
            engine.latency(Service::Ssm, "A"),
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            engine.latency(Service::Ssm, "B"),
            Some(Duration::from_millis(150))
        );
        assert_eq!(
            engine.latency(Service::Ssm, "B"),
            Some(Duration::from_millis(100))
        );
        assert_eq!(engine.latency(Service::Swf, "B"), None);
        assert_eq!(engine.verdict(Service::Ssm, "A"), Verdict::Proceed);
    }

    #[test]
    fn config_json_round_trips_and_validates() {
        let json = r#"{"ssm":{"throttle":[{"operation":"SendAutomationSignal","capacity":3,"refill_per_second":3}],
            "rules":[{"kind":"drop_after_apply","operation":"SendAutomationSignal","count":1}]},"seed":1}"#;
        let cfg: FaultConfig = serde_json::from_str(json).unwrap();
        assert_eq!(cfg.ssm.rules[0].kind, FaultKind::DropAfterApply);
        assert!(cfg.validate().is_ok());
        let back: FaultConfig =
            serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
        assert!(FaultConfig::none()
            .with_rule(
                Service::Ssm,
                FaultRule::server_error().with_probability(2.0)
            )
            .validate()
            .is_err());
        assert!(
            serde_json::from_str::<FaultConfig>(r#"{"ssm":{"rules":[{"kind":"bogus"}]}}"#).is_err()
        );
        assert!(FaultConfig::aws_quotas().validate().is_ok());
    }
}
