//! Lag mode: a call that changes state is applied and answered at once, but readers see
//! its effect only after a delay, as with AWS's eventually consistent reads. Every type
//! here is the JSON of the control API (`/_emu/lag`).
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::faults::Service;

/// Which writes lag, per service. The default lags nothing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LagConfig {
    /// SSM: `SendAutomationSignal` and `StopAutomationExecution` (what
    /// GetAutomationExecution and DescribeAutomationStepExecutions show).
    pub ssm: Vec<LagRule>,
    /// SWF through the proxy: `SignalWorkflowExecution` (what GetWorkflowExecutionHistory
    /// shows).
    pub swf: Vec<LagRule>,
    /// Seed for delays drawn between `min_ms` and `max_ms`; absent: seeded from the OS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// A delay for the writes of `operation` (absent: every lagging operation of the service):
/// `min_ms` when `max_ms` is absent, else drawn uniformly from `min_ms..=max_ms`. The first
/// rule naming the operation wins over a rule without one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LagRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    pub min_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ms: Option<u64>,
}

impl LagRule {
    /// Always `ms`.
    pub fn fixed(ms: u64) -> Self {
        Self {
            operation: None,
            min_ms: ms,
            max_ms: None,
        }
    }
    /// Uniformly within `min_ms..=max_ms`.
    pub fn between(min_ms: u64, max_ms: u64) -> Self {
        Self {
            operation: None,
            min_ms,
            max_ms: Some(max_ms),
        }
    }
    /// Only writes of this operation (e.g. `SendAutomationSignal`).
    pub fn on(mut self, operation: impl Into<String>) -> Self {
        self.operation = Some(operation.into());
        self
    }
}

impl LagConfig {
    /// No lag.
    pub fn none() -> Self {
        Self::default()
    }

    /// Adds a rule for `service`.
    pub fn with_rule(mut self, service: Service, rule: LagRule) -> Self {
        self.rules_mut(service).push(rule);
        self
    }

    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    pub fn rules(&self, service: Service) -> &[LagRule] {
        match service {
            Service::Ssm => &self.ssm,
            Service::Swf => &self.swf,
        }
    }

    fn rules_mut(&mut self, service: Service) -> &mut Vec<LagRule> {
        match service {
            Service::Ssm => &mut self.ssm,
            Service::Swf => &mut self.swf,
        }
    }

    /// Checks the bounds; the control API answers 400 with this message.
    pub fn validate(&self) -> Result<(), String> {
        for service in [Service::Ssm, Service::Swf] {
            for r in self.rules(service) {
                if r.max_ms.is_some_and(|max| max < r.min_ms) {
                    return Err(format!(
                        "{}: max_ms must not be below min_ms",
                        service.as_str()
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The writes whose effect lag mode can hide, by service and operation.
pub const LAGGING: [(Service, &str); 3] = [
    (Service::Ssm, "SendAutomationSignal"),
    (Service::Ssm, "StopAutomationExecution"),
    (Service::Swf, "SignalWorkflowExecution"),
];

/// The live lag state: the configuration and the RNG for random delays.
pub(crate) struct LagEngine {
    config: LagConfig,
    rng: StdRng,
}

impl LagEngine {
    pub(crate) fn new(config: LagConfig) -> Self {
        let rng = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Self { config, rng }
    }

    pub(crate) fn config(&self) -> LagConfig {
        self.config.clone()
    }

    pub(crate) fn set(&mut self, config: LagConfig) {
        *self = Self::new(config);
    }

    /// How long the effect of this write stays hidden from readers; `None`: not at all (or
    /// not a write that lags).
    pub(crate) fn delay(&mut self, service: Service, operation: &str) -> Option<Duration> {
        if !LAGGING.contains(&(service, operation)) {
            return None;
        }
        let rules = self.config.rules(service);
        let rule = rules
            .iter()
            .find(|r| r.operation.as_deref() == Some(operation))
            .or_else(|| rules.iter().find(|r| r.operation.is_none()))?;
        let ms = match rule.max_ms {
            Some(max) if max > rule.min_ms => self.rng.random_range(rule.min_ms..=max),
            _ => rule.min_ms,
        };
        (ms > 0).then(|| Duration::from_millis(ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_rule_wins_and_random_delays_stay_within_bounds() {
        let cfg = LagConfig::none()
            .with_rule(Service::Ssm, LagRule::fixed(100))
            .with_rule(
                Service::Ssm,
                LagRule::between(200, 300).on("SendAutomationSignal"),
            )
            .with_seed(3);
        assert!(cfg.validate().is_ok());
        let mut engine = LagEngine::new(cfg);
        assert_eq!(
            engine.delay(Service::Ssm, "StopAutomationExecution"),
            Some(Duration::from_millis(100))
        );
        let draws: Vec<u128> = (0..200)
            .map(|_| {
                engine
                    .delay(Service::Ssm, "SendAutomationSignal")
                    .unwrap()
                    .as_millis()
            })
            .collect();
        assert!(draws.iter().all(|d| (200..=300).contains(d)), "{draws:?}");
        assert!(draws.iter().any(|d| *d != draws[0]), "random, not fixed");
        assert_eq!(engine.delay(Service::Swf, "SignalWorkflowExecution"), None);
        // Reads never lag themselves.
        assert_eq!(engine.delay(Service::Ssm, "GetAutomationExecution"), None);
    }

    #[test]
    fn json_round_trips_and_validates() {
        let json = r#"{"swf":[{"operation":"SignalWorkflowExecution","min_ms":1500,"max_ms":3000}],"seed":9}"#;
        let cfg: LagConfig = serde_json::from_str(json).unwrap();
        assert_eq!(cfg.swf[0].max_ms, Some(3000));
        let back: LagConfig = serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
        assert!(LagConfig::none()
            .with_rule(Service::Swf, LagRule::between(5, 1))
            .validate()
            .is_err());
        assert!(serde_json::from_str::<LagConfig>(r#"{"ssm":[{"ms":1}]}"#).is_err());
    }
}
