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
//! | `signalman_signals_oldest_pending_seconds` | gauge | `kind`: age (since creation) of the oldest of them; 0 when none |
//! | `signalman_signals_in_flight` | gauge | `kind`: sends this process is waiting on AWS for |
//! | `signalman_leader` | gauge | 1 while this replica holds the lease |
//! | `signalman_aws_rate_limit_per_second` | gauge | `service`, `operation`: the client-side rate the adaptive limiter allows now |
//! | `signalman_aws_circuit_open` | gauge | `service`, `region`: 1 while AWS keeps failing and only one probe at a time calls it |
//! | `signalman_reconcile_errors_total` | counter | `kind`: reconciles that ended in an error (retried with backoff; a lost status-write race is not one) |
//! | `signalman_build_info` | gauge | `version`: always 1 |
//! | `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_cpu_seconds_total`, `process_open_fds`, `process_max_fds`, `process_start_time_seconds` | gauge, counter | none: read from `/proc/self` at each scrape (Linux; absent elsewhere) |
//!
//! The failure outcomes of `signalman_signals_total` and `signalman_reconcile_errors_total` are
//! exported as 0 from the start, so that `increase()` and `rate()` see a process's first failure.
//!
//! Every label value is one of a fixed set of `&'static str`: no object names, ids, inputs or
//! payloads, so cardinality stays bounded and nothing sensitive leaves through a scrape.
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::api::DynamicObject;
use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

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
    oldest_pending: Family<KindLabels, FloatGauge>,
    in_flight: Family<KindLabels, Gauge>,
    reconcile_errors: Family<KindLabels, Counter>,
    leader: Gauge,
    circuit_open: Family<CircuitLabels, Gauge>,
    rate_limit: Family<OperationLabels, FloatGauge>,
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
        let oldest_pending = Family::<KindLabels, FloatGauge>::default();
        registry.register(
            "signalman_signals_oldest_pending_seconds",
            "Age since creation of the oldest watched signal not yet Succeeded or Failed; 0 when none",
            oldest_pending.clone(),
        );
        let in_flight = Family::<KindLabels, Gauge>::default();
        registry.register(
            "signalman_signals_in_flight",
            "Sends this process is waiting on AWS for",
            in_flight.clone(),
        );
        let reconcile_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "signalman_reconcile_errors",
            "Reconciles that ended in an error and are retried with backoff",
            reconcile_errors.clone(),
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
        let rate_limit = Family::<OperationLabels, FloatGauge>::default();
        registry.register(
            "signalman_aws_rate_limit_per_second",
            "Calls per second the adaptive client-side limiter allows now, by service and operation",
            rate_limit.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        registry.register(
            "signalman_build_info",
            "Always 1; the label carries the operator's version",
            build_info.clone(),
        );
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register_collector(Box::new(ProcessCollector));
        for kind in KINDS {
            // Present from the first scrape, so dashboards see 0 rather than nothing, and a
            // process's first failure is an increase from 0 that rate() and increase() see.
            pending.get_or_create(&KindLabels { kind }).set(0);
            oldest_pending.get_or_create(&KindLabels { kind }).set(0.0);
            in_flight.get_or_create(&KindLabels { kind }).set(0);
            let _ = reconcile_errors.get_or_create(&KindLabels { kind });
            for &outcome in reason::FAILURE {
                let _ = signals.get_or_create(&SignalLabels { kind, outcome });
            }
        }
        Metrics(Arc::new(Inner {
            registry,
            signals,
            aws_calls,
            aws_duration,
            reconcile_duration,
            pending,
            oldest_pending,
            in_flight,
            reconcile_errors,
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

    /// Counts a reconcile that ended in an error (the controller retries it with backoff).
    pub fn reconcile_error(&self, kind: &'static str) {
        self.0
            .reconcile_errors
            .get_or_create(&KindLabels { kind })
            .inc();
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

    /// Lets scrapes count the pending objects of `kind` in this controller cache, and the age of
    /// the oldest. The cache holds unfinished signals only (a finished one leaves the watch), so
    /// no state of its own is kept here.
    pub fn track_store(&self, kind: &'static str, store: Store<DynamicObject>) {
        self.0
            .stores
            .lock()
            .expect("metrics store list")
            .push((kind, store));
    }

    /// The OpenMetrics text of every metric, with the pending gauges counted now.
    pub fn encode(&self) -> String {
        self.refresh_pending(Timestamp::now());
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.0.registry)
            .expect("writing to a String cannot fail");
        out
    }

    fn refresh_pending(&self, now: Timestamp) {
        let stores = self.0.stores.lock().expect("metrics store list");
        for kind in KINDS {
            let mut pending: usize = 0;
            let mut oldest: Option<Timestamp> = None;
            for (_, store) in stores.iter().filter(|(k, _)| *k == kind) {
                for obj in store.state() {
                    if obj.metadata.deletion_timestamp.is_some() || !pending_object(&obj) {
                        continue;
                    }
                    pending += 1;
                    if let Some(created) = &obj.metadata.creation_timestamp {
                        oldest = Some(oldest.map_or(created.0, |o| o.min(created.0)));
                    }
                }
            }
            self.0
                .pending
                .get_or_create(&KindLabels { kind })
                .set(i64::try_from(pending).unwrap_or(i64::MAX));
            let age = oldest.map_or(0.0, |o| now.duration_since(o).as_secs_f64().max(0.0));
            self.0
                .oldest_pending
                .get_or_create(&KindLabels { kind })
                .set(age);
        }
    }
}

/// The process metrics of the Prometheus client libraries, read from `/proc/self` at each
/// scrape. Nothing where `/proc` cannot be read (not Linux).
#[derive(Debug)]
struct ProcessCollector;

/// Linux's USER_HZ: the unit of the CPU times in `/proc/<pid>/stat`, 100 on every architecture
/// (the kernel converts from its own HZ; Prometheus's procfs library assumes the same).
const USER_HZ: f64 = 100.0;

/// One reading of `/proc/self`.
#[derive(Debug, Default, PartialEq)]
struct ProcessStats {
    cpu_seconds: f64,
    start_time_seconds: Option<f64>,
    virtual_memory_bytes: u64,
    resident_memory_bytes: Option<u64>,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
}

impl ProcessStats {
    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| parse_boot_time(&s));
        let mut stats = parse_stat(&stat, boot_time)?;
        stats.resident_memory_bytes = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| parse_vm_rss(&s));
        stats.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64);
        stats.max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|s| parse_max_fds(&s));
        Some(stats)
    }
}

/// CPU time, start time (with the boot time of `/proc/stat`) and virtual memory from
/// `/proc/self/stat` (proc(5)).
fn parse_stat(stat: &str, boot_time: Option<u64>) -> Option<ProcessStats> {
    // The command name (field 2) may contain spaces and parentheses: fields resume after the
    // last ')', with field 3 (state) first.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    let (utime, stime, start) = (field(14)?, field(15)?, field(22)?);
    Some(ProcessStats {
        cpu_seconds: (utime + stime) as f64 / USER_HZ,
        start_time_seconds: boot_time.map(|b| b as f64 + start as f64 / USER_HZ),
        virtual_memory_bytes: field(23)?,
        ..ProcessStats::default()
    })
}

fn parse_boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// `VmRSS:  12345 kB` of `/proc/self/status`, in bytes (exact, whatever the page size).
fn parse_vm_rss(status: &str) -> Option<u64> {
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse::<u64>()
        .ok()?;
    Some(kb * 1024)
}

/// The soft limit of `Max open files` in `/proc/self/limits`; `None` when unlimited.
fn parse_max_fds(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stats) = ProcessStats::read() else {
            return Ok(());
        };
        fn gauge<N>(
            encoder: &mut DescriptorEncoder,
            name: &str,
            help: &str,
            value: N,
        ) -> Result<(), std::fmt::Error>
        where
            ConstGauge<N>: EncodeMetric,
        {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
        }
        let cpu = ConstCounter::new(stats.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            None,
            cpu.metric_type(),
        )?)?;
        if let Some(start) = stats.start_time_seconds {
            gauge(
                &mut encoder,
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                start,
            )?;
        }
        if let Some(rss) = stats.resident_memory_bytes {
            gauge(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                rss,
            )?;
        }
        gauge(
            &mut encoder,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            stats.virtual_memory_bytes,
        )?;
        if let Some(fds) = stats.open_fds {
            gauge(
                &mut encoder,
                "process_open_fds",
                "Number of open file descriptors.",
                fds,
            )?;
        }
        if let Some(max) = stats.max_fds {
            gauge(
                &mut encoder,
                "process_max_fds",
                "Maximum number of open file descriptors.",
                max,
            )?;
        }
        Ok(())
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
        assert!(!text.contains("SomethingNew") && !text.contains("<script>"));
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

    #[test]
    fn build_info_and_reconcile_errors() {
        let m = Metrics::new();
        let text = m.encode();
        assert!(
            text.contains("# TYPE signalman_build_info gauge\n"),
            "{text}"
        );
        assert!(text.contains(&format!(
            "signalman_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )));
        assert!(text.contains("# TYPE signalman_reconcile_errors counter\n"));
        // Present at 0 before the first error, for rate() and increase().
        for kind in KINDS {
            assert!(text.contains(&format!(
                "signalman_reconcile_errors_total{{kind=\"{kind}\"}} 0\n"
            )));
        }
        m.reconcile_error("WorkflowSignal");
        m.reconcile_error("WorkflowSignal");
        let text = m.encode();
        assert!(text.contains("signalman_reconcile_errors_total{kind=\"WorkflowSignal\"} 2\n"));
        assert!(text.contains("signalman_reconcile_errors_total{kind=\"AutomationSignal\"} 0\n"));
    }

    #[test]
    fn failure_outcomes_start_at_zero_and_successes_appear_when_counted() {
        let text = Metrics::new().encode();
        for kind in KINDS {
            for outcome in reason::FAILURE {
                assert!(
                    text.contains(&format!(
                        "signalman_signals_total{{kind=\"{kind}\",outcome=\"{outcome}\"}} 0\n"
                    )),
                    "{kind}/{outcome} missing:\n{text}"
                );
            }
            for outcome in reason::SUCCESS {
                assert!(!text.contains(&format!("kind=\"{kind}\",outcome=\"{outcome}\"")));
            }
        }
    }

    fn cached(
        name: &str,
        created: Option<Timestamp>,
        phase: Option<&str>,
        deleting: bool,
    ) -> DynamicObject {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let ar = kube::api::ApiResource::erase::<crate::api::WorkflowSignal>(&());
        let mut obj = DynamicObject::new(name, &ar).within("team");
        obj.metadata.uid = Some(format!("uid-{name}"));
        obj.metadata.creation_timestamp = created.map(Time);
        if deleting {
            obj.metadata.deletion_timestamp = created.map(Time);
        }
        if let Some(phase) = phase {
            obj.data = serde_json::json!({"status": {"phase": phase}});
        }
        obj
    }

    fn store_of(objs: Vec<DynamicObject>) -> Store<DynamicObject> {
        let ar = kube::api::ApiResource::erase::<crate::api::WorkflowSignal>(&());
        let mut writer = kube::runtime::reflector::store::Writer::new(ar);
        for obj in objs {
            writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(obj));
        }
        writer.as_reader()
    }

    #[test]
    fn oldest_pending_is_the_age_of_the_oldest_unfinished_signal() {
        let m = Metrics::new();
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let ago = |s: i64| Some(Timestamp::from_second(1_800_000_000 - s).unwrap());
        let series = |m: &Metrics, kind: &str| {
            m.refresh_pending(now);
            let text = {
                let mut out = String::new();
                prometheus_client::encoding::text::encode(&mut out, &m.0.registry).unwrap();
                out
            };
            let find = |name: &str| {
                let prefix = format!("{name}{{kind=\"{kind}\"}} ");
                text.lines()
                    .find_map(|l| l.strip_prefix(&prefix))
                    .unwrap_or_else(|| panic!("{prefix} missing:\n{text}"))
                    .parse::<f64>()
                    .unwrap()
            };
            (
                find("signalman_signals_pending"),
                find("signalman_signals_oldest_pending_seconds"),
            )
        };
        assert_eq!(series(&m, "WorkflowSignal"), (0.0, 0.0));
        m.track_store(
            "WorkflowSignal",
            store_of(vec![
                cached("young", ago(30), None, false),
                cached("retrying", ago(600), Some("Pending"), false),
                // Finished or being deleted: not pending, however old.
                cached("done", ago(9000), Some("Succeeded"), false),
                cached("failed", ago(9000), Some("Failed"), false),
                cached("going", ago(8000), Some("Sending"), true),
            ]),
        );
        // A second cache of the same kind (another namespace) counts too.
        m.track_store(
            "WorkflowSignal",
            store_of(vec![cached(
                "other-ns",
                ago(1200),
                Some("Verifying"),
                false,
            )]),
        );
        assert_eq!(series(&m, "WorkflowSignal"), (3.0, 1200.0));
        assert_eq!(series(&m, "AutomationSignal"), (0.0, 0.0));
        // A clock behind the API server's never reports a negative age.
        let m = Metrics::new();
        m.track_store(
            "AutomationSignal",
            store_of(vec![cached("future", ago(-5), None, false)]),
        );
        assert_eq!(series(&m, "AutomationSignal"), (1.0, 0.0));
    }

    #[test]
    fn process_metrics_parse_proc_files() {
        // comm with a space and a parenthesis; utime 250, stime 150 ticks; starttime 1234 ticks;
        // vsize 1048576.
        let stat = "42 (sig (x) man) S 1 42 42 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 3 0 1234 1048576 300 18446744073709551615";
        let parsed = parse_stat(stat, Some(1_700_000_000)).unwrap();
        assert_eq!(parsed.cpu_seconds, 4.0);
        assert_eq!(parsed.start_time_seconds, Some(1_700_000_012.34));
        assert_eq!(parsed.virtual_memory_bytes, 1_048_576);
        assert_eq!(parse_stat("garbage", None), None);
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
        assert_eq!(
            parse_vm_rss("Name:\tsignalman\nVmRSS:\t   20480 kB\n"),
            Some(20_971_520)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1048576              1048576              files\n";
        assert_eq!(parse_max_fds(limits), Some(1_048_576));
        assert_eq!(
            parse_max_fds(
                "Max open files            unlimited            unlimited            files\n"
            ),
            None
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_metrics_are_read_at_scrape_time() {
        let text = Metrics::new().encode();
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
                .parse()
                .unwrap()
        };
        assert!(text.contains("# TYPE process_cpu_seconds counter\n"));
        assert!(value("process_cpu_seconds_total") >= 0.0);
        assert!(value("process_resident_memory_bytes") > 1_000_000.0);
        assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        let now = Timestamp::now().as_second() as f64;
        let start = value("process_start_time_seconds");
        assert!(
            start <= now + 1.0 && start > now - 86_400.0 * 365.0,
            "{start}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
