//! Prometheus metrics (OpenMetrics text, `prometheus-client`). One [`Metrics`] handle, cheap to
//! clone, lives in the controller's `Context` and in the HTTP server.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `signalman_signals_total` | counter | `kind`, `outcome` (the terminal reason: `Delivered`, `DeliveryVerified`, `AlreadyDelivered`, `ExecutionNotFound`, `SignalRejected`, `InvalidSpec`, `RetriesExhausted`, `Expired`, `PolicyDenied`, `Failed`) |
//! | `signalman_aws_calls_total` | counter | `service`, `operation`, `outcome` (`ok` or the error class: `Throttled`, `Ambiguous`, …) |
//! | `signalman_aws_call_duration_seconds` | histogram | `service`, `operation` |
//! | `signalman_reconcile_duration_seconds` | histogram | `kind` |
//! | `signalman_signals_pending` | gauge | `kind`: watched objects not yet `Succeeded` or `Failed` |
//! | `signalman_signals_in_flight` | gauge | `kind`: sends this process is waiting on AWS for |
//! | `signalman_leader` | gauge | 1 while this replica holds the lease |
//! | `signalman_aws_rate_limit_per_second` | gauge | `service`, `operation`: the client-side rate the adaptive limiter allows now |
//! | `signalman_aws_circuit_open` | gauge | `service`, `region`: 1 while AWS keeps failing and only one probe at a time calls it |
//!
//! Every label value is one of a fixed set of `&'static str`: no object names, ids, inputs or
//! payloads, so cardinality stays bounded and nothing sensitive leaves through a scrape.
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::DynamicObject;
use kube::runtime::reflector::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::api::{Phase, SignalStatus};
use serde::Deserialize;

use crate::delivery::{self, reason, AwsFailure, SendOutcome, VerifyOutcome};

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The two kinds, as label values.
pub const KINDS: [&str; 2] = ["WorkflowSignal", "AutomationSignal"];

const AWS_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0,
];
const RECONCILE_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignalLabels {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    service: &'static str,
    operation: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    service: &'static str,
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CircuitLabels {
    service: &'static str,
    /// A region the operator was configured for or a spec named (bounded by AWS's regions).
    region: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn aws_histogram() -> Histogram {
    Histogram::new(AWS_BUCKETS)
}

fn reconcile_histogram() -> Histogram {
    Histogram::new(RECONCILE_BUCKETS)
}

struct Inner {
    registry: Registry,
    signals: Family<SignalLabels, Counter>,
    aws_calls: Family<CallLabels, Counter>,
    aws_duration: HistogramFamily<OperationLabels>,
    reconcile_duration: HistogramFamily<KindLabels>,
    pending: Family<KindLabels, Gauge>,
    in_flight: Family<KindLabels, Gauge>,
    leader: Gauge,
    circuit_open: Family<CircuitLabels, Gauge>,
    rate_limit: Family<OperationLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// The controllers' caches, read at each scrape to count pending signals.
    stores: Mutex<Vec<(&'static str, Store<DynamicObject>)>>,
}

/// The operator's metrics.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let signals = Family::<SignalLabels, Counter>::default();
        registry.register(
            "signalman_signals",
            "Signals that reached a terminal phase, by kind and reason",
            signals.clone(),
        );
        let aws_calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "signalman_aws_calls",
            "AWS API calls, by service, operation and outcome (ok or the error class)",
            aws_calls.clone(),
        );
        let aws_duration: HistogramFamily<OperationLabels> =
            Family::new_with_constructor(aws_histogram);
        registry.register(
            "signalman_aws_call_duration_seconds",
            "Duration of AWS API calls",
            aws_duration.clone(),
        );
        let reconcile_duration: HistogramFamily<KindLabels> =
            Family::new_with_constructor(reconcile_histogram);
        registry.register(
            "signalman_reconcile_duration_seconds",
            "Duration of one reconcile of one object",
            reconcile_duration.clone(),
        );
        let pending = Family::<KindLabels, Gauge>::default();
        registry.register(
            "signalman_signals_pending",
            "Watched signals not yet Succeeded or Failed",
            pending.clone(),
        );
        let in_flight = Family::<KindLabels, Gauge>::default();
        registry.register(
            "signalman_signals_in_flight",
            "Sends this process is waiting on AWS for",
            in_flight.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "signalman_leader",
            "1 while this replica holds the leader lease, else 0",
            leader.clone(),
        );
        let circuit_open = Family::<CircuitLabels, Gauge>::default();
        registry.register(
            "signalman_aws_circuit_open",
            "1 while calls to an AWS service in a region keep failing and only one probe at a time is let through",
            circuit_open.clone(),
        );
        let rate_limit =
            Family::<OperationLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "signalman_aws_rate_limit_per_second",
            "Calls per second the adaptive client-side limiter allows now, by service and operation",
            rate_limit.clone(),
        );
        for kind in KINDS {
            // Present from the first scrape, so dashboards see 0 rather than nothing.
            pending.get_or_create(&KindLabels { kind }).set(0);
            in_flight.get_or_create(&KindLabels { kind }).set(0);
        }
        Metrics(Arc::new(Inner {
            registry,
            signals,
            aws_calls,
            aws_duration,
            reconcile_duration,
            pending,
            in_flight,
            leader,
            circuit_open,
            rate_limit,
            stores: Mutex::new(Vec::new()),
        }))
    }

    /// Counts a status write that moves a signal from a non-terminal phase (or none) into
    /// `Succeeded` or `Failed`. Rewrites of an already terminal status count nothing.
    pub fn status_written(
        &self,
        kind: &'static str,
        before: Option<&SignalStatus>,
        after: &SignalStatus,
    ) {
        if before.is_some_and(delivery::is_finished) {
            return;
        }
        if let Some(outcome) = terminal_outcome(after) {
            self.0
                .signals
                .get_or_create(&SignalLabels { kind, outcome })
                .inc();
        }
    }

    /// Records one AWS call.
    pub fn aws_call(
        &self,
        service: &'static str,
        operation: &'static str,
        outcome: &'static str,
        took: Duration,
    ) {
        self.0
            .aws_calls
            .get_or_create(&CallLabels {
                service,
                operation,
                outcome,
            })
            .inc();
        self.0
            .aws_duration
            .get_or_create(&OperationLabels { service, operation })
            .observe(took.as_secs_f64());
    }

    /// Runs `call`, recording it as one AWS call whose outcome `outcome` names.
    pub async fn observe_aws<T>(
        &self,
        service: &'static str,
        operation: &'static str,
        call: impl std::future::Future<Output = T>,
        outcome: impl FnOnce(&T) -> &'static str,
    ) -> T {
        let start = Instant::now();
        let result = call.await;
        self.aws_call(service, operation, outcome(&result), start.elapsed());
        result
    }

    pub fn reconcile_done(&self, kind: &'static str, took: Duration) {
        self.0
            .reconcile_duration
            .get_or_create(&KindLabels { kind })
            .observe(took.as_secs_f64());
    }

    /// Counts a send as in flight until the returned guard is dropped.
    pub fn in_flight(&self, kind: &'static str) -> InFlight {
        let gauge = self.0.in_flight.get_or_create(&KindLabels { kind }).clone();
        gauge.inc();
        InFlight(gauge)
    }

    pub fn set_rate_limit(&self, service: &'static str, operation: &'static str, rate: f64) {
        self.0
            .rate_limit
            .get_or_create(&OperationLabels { service, operation })
            .set(rate);
    }

    pub fn set_circuit(&self, service: &'static str, region: &str, open: bool) {
        // Regions come from the operator's flag or a validated spec field (a region name's
        // shape), so the label set stays small.
        self.0
            .circuit_open
            .get_or_create(&CircuitLabels {
                service,
                region: region.to_string(),
            })
            .set(i64::from(open));
    }

    pub fn set_leader(&self, leading: bool) {
        self.0.leader.set(i64::from(leading));
    }

    /// Lets scrapes count the pending objects of `kind` in this controller cache.
    pub fn track_store(&self, kind: &'static str, store: Store<DynamicObject>) {
        self.0
            .stores
            .lock()
            .expect("metrics store list")
            .push((kind, store));
    }

    /// The OpenMetrics text of every metric, with the pending gauges counted now.
    pub fn encode(&self) -> String {
        self.refresh_pending();
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.0.registry)
            .expect("writing to a String cannot fail");
        out
    }

    fn refresh_pending(&self) {
        let stores = self.0.stores.lock().expect("metrics store list");
        for kind in KINDS {
            let pending: usize = stores
                .iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, store)| {
                    store
                        .state()
                        .iter()
                        .filter(|o| o.metadata.deletion_timestamp.is_none() && pending_object(o))
                        .count()
                })
                .sum();
            self.0
                .pending
                .get_or_create(&KindLabels { kind })
                .set(i64::try_from(pending).unwrap_or(i64::MAX));
        }
    }
}

/// Decrements the in-flight gauge when dropped.
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A cached object whose status is not `Succeeded` or `Failed`.
fn pending_object(obj: &DynamicObject) -> bool {
    let phase = obj
        .data
        .get("status")
        .and_then(|s| s.get("phase"))
        .and_then(|p| Phase::deserialize(p).ok());
    !phase.is_some_and(delivery::is_finished_phase)
}

/// The terminal reason of `status` as a label value from the fixed set, if it is terminal.
pub fn terminal_outcome(status: &SignalStatus) -> Option<&'static str> {
    let (condition, known, fallback): (&str, &[&'static str], &'static str) = match status.phase {
        Some(Phase::Succeeded) => ("Ready", reason::SUCCESS, reason::DELIVERED),
        Some(Phase::Failed) => ("Stalled", reason::FAILURE, reason::FAILED),
        _ => return None,
    };
    let found = status
        .conditions
        .iter()
        .find(|c| c.type_ == condition && c.status == "True")
        .map(|c| c.reason.as_str());
    Some(
        known
            .iter()
            .copied()
            .find(|r| Some(*r) == found)
            .unwrap_or(fallback),
    )
}

/// `ok`, or the failure's class.
pub fn send_outcome(outcome: &SendOutcome) -> &'static str {
    match outcome {
        SendOutcome::Accepted { .. } => "ok",
        SendOutcome::Failed(f) => f.class.as_str(),
    }
}

/// `ok` for an answer (whatever it says about the signal), else the failure's class.
pub fn verify_outcome(outcome: &VerifyOutcome) -> &'static str {
    match outcome {
        VerifyOutcome::Failed(f) => f.class.as_str(),
        VerifyOutcome::NotFound => "NotFound",
        _ => "ok",
    }
}

/// `ok`, or the failure's class.
pub fn result_outcome<T>(result: &Result<T, AwsFailure>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(f) => f.class.as_str(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::ErrorClass;

    fn status(phase: Phase, cond: &str, reason: &str) -> SignalStatus {
        let mut s = SignalStatus {
            phase: Some(phase),
            ..Default::default()
        };
        s.conditions
            .push(k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                type_: cond.into(),
                status: "True".into(),
                reason: reason.into(),
                message: String::new(),
                last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ),
                observed_generation: None,
            });
        s
    }

    #[test]
    fn counts_terminal_transitions_once_with_known_reasons() {
        let m = Metrics::new();
        let done = status(Phase::Succeeded, "Ready", "Delivered");
        let pending = SignalStatus {
            phase: Some(Phase::Sending),
            ..Default::default()
        };
        m.status_written("WorkflowSignal", Some(&pending), &done);
        m.status_written("WorkflowSignal", None, &done);
        m.status_written("WorkflowSignal", Some(&done), &done); // a repair write: not counted
        m.status_written("WorkflowSignal", None, &pending); // not terminal
        let failed = status(Phase::Failed, "Stalled", "ExecutionNotFound");
        m.status_written("AutomationSignal", None, &failed);
        let odd = status(Phase::Failed, "Stalled", "SomethingNew <script>");
        m.status_written("AutomationSignal", None, &odd);
        let text = m.encode();
        assert!(text.contains(
            "signalman_signals_total{kind=\"WorkflowSignal\",outcome=\"Delivered\"} 2\n"
        ));
        assert!(text.contains(
            "signalman_signals_total{kind=\"AutomationSignal\",outcome=\"ExecutionNotFound\"} 1\n"
        ));
        assert!(text
            .contains("signalman_signals_total{kind=\"AutomationSignal\",outcome=\"Failed\"} 1\n"));
        assert!(!text.contains("script"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn aws_calls_gauges_and_leader() {
        let m = Metrics::new();
        m.aws_call(
            "swf",
            "SignalWorkflowExecution",
            "ok",
            Duration::from_millis(20),
        );
        m.aws_call(
            "swf",
            "SignalWorkflowExecution",
            ErrorClass::Throttled.as_str(),
            Duration::from_millis(5),
        );
        let guard = m.in_flight("AutomationSignal");
        m.set_leader(true);
        let text = m.encode();
        assert!(text.contains("signalman_aws_calls_total{service=\"swf\",operation=\"SignalWorkflowExecution\",outcome=\"ok\"} 1\n"));
        assert!(text.contains("signalman_aws_calls_total{service=\"swf\",operation=\"SignalWorkflowExecution\",outcome=\"Throttled\"} 1\n"));
        assert!(text.contains("signalman_aws_call_duration_seconds_count{service=\"swf\",operation=\"SignalWorkflowExecution\"} 2\n"));
        assert!(text.contains("signalman_signals_in_flight{kind=\"AutomationSignal\"} 1\n"));
        assert!(text.contains("signalman_signals_pending{kind=\"WorkflowSignal\"} 0\n"));
        assert!(text.contains("signalman_leader 1\n"));
        drop(guard);
        m.set_leader(false);
        let text = m.encode();
        assert!(text.contains("signalman_signals_in_flight{kind=\"AutomationSignal\"} 0\n"));
        assert!(text.contains("signalman_leader 0\n"));
    }
}
