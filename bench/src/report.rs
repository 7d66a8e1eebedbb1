//! The results of one run: what was measured (JSON) and the same as a Markdown table.
use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::harness::percentile;
use crate::machine::{CpuWindow, LoadSample, Machine};

/// A distribution of durations, in milliseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Dist {
    pub n: usize,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Dist {
    pub fn of(mut ms: Vec<f64>) -> Dist {
        ms.retain(|v| v.is_finite());
        ms.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
        if ms.is_empty() {
            return Dist::default();
        }
        Dist {
            n: ms.len(),
            mean_ms: ms.iter().sum::<f64>() / ms.len() as f64,
            p50_ms: percentile(&ms, 50.0),
            p90_ms: percentile(&ms, 90.0),
            p99_ms: percentile(&ms, 99.0),
            max_ms: *ms.last().expect("non-empty"),
        }
    }
}

/// What delivering the signals of one scenario cost, per delivered signal.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Cost {
    pub delivered: usize,
    pub failed: usize,
    /// Calls the emulator received, by operation, per delivered signal.
    pub aws_calls_per_signal: BTreeMap<String, f64>,
    pub sends_per_signal: f64,
    pub run_lookups_per_signal: f64,
    /// ThrottlingExceptions the emulator answered (total, not per signal).
    pub throttled: u64,
    /// Signals the emulator applied (must equal `delivered`: exactly once).
    pub applied: u64,
    /// New resourceVersions after creation, as seen by a watch: each is one status write.
    pub status_writes_per_signal: f64,
    pub status_writes_max: u32,
    /// Event objects the operator recorded on these signals, per signal (each one write; a
    /// repeated event's series patch counts once more).
    pub events_per_signal: f64,
    /// Writes of the SignalReceipts for these signals (create and delivery mark), per signal.
    #[serde(default)]
    pub receipts_per_signal: f64,
    /// Status writes + Events + receipts, per signal.
    pub kube_writes_per_signal: f64,
    /// Attempts spent per signal (1 = no retry) and throttled retries per signal.
    pub attempts_per_signal: f64,
    pub throttled_retries_per_signal: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Latency {
    pub kind: String,
    pub n: usize,
    /// create request sent → `Ready=True` seen on the watch.
    pub create_to_ready: Dist,
    /// The create request itself.
    pub create_call: Dist,
    /// create request sent → the claim (`phase: Sending`) seen on the watch.
    pub create_to_claim: Dist,
    /// claim seen → `Ready=True` seen.
    pub claim_to_ready: Dist,
    /// Mean duration of each AWS operation as the operator timed it (its histogram).
    pub operator_aws_call_mean_ms: BTreeMap<String, f64>,
    /// Mean duration of one reconcile (all of them, including the no-op ones).
    pub operator_reconcile_mean_ms: Option<f64>,
    pub cost: Cost,
    pub cpu: CpuWindow,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LatencyResults {
    pub operator_args: Vec<String>,
    pub executions: usize,
    pub workflow: Option<Latency>,
    pub automation: Option<Latency>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ceiling {
    pub n: usize,
    pub concurrency: usize,
    pub seconds: f64,
    pub per_second: f64,
    pub errors: usize,
    pub applied: u64,
    pub cpu: CpuWindow,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Throughput {
    pub n: usize,
    pub executions: usize,
    pub concurrency: usize,
    pub operator_args: Vec<String>,
    /// Creating the n objects before the operator starts (not measured as the operator's).
    pub create_seconds: f64,
    pub ceiling_before: Ceiling,
    pub ceiling_after: Option<Ceiling>,
    pub ceiling_per_second: f64,
    /// First claim seen → last Ready seen.
    pub operator_seconds: f64,
    pub operator_per_second: f64,
    pub share_of_ceiling: f64,
    /// Operator spawned → leading and listed.
    pub operator_startup_seconds: f64,
    /// Operator spawned → last Ready seen.
    pub operator_end_to_end_seconds: f64,
    pub operator_hwm_mib: f64,
    pub operator_aws_call_mean_ms: BTreeMap<String, f64>,
    /// Mean duration of one reconcile (claim, send, record) during the burst.
    #[serde(default)]
    pub operator_reconcile_mean_ms: Option<f64>,
    /// Reconcile time summed over the run ÷ the window: reconciles in flight on average
    /// (Little's law); near `concurrency` means the concurrency limit is what holds it.
    #[serde(default)]
    pub operator_reconciles_in_flight: f64,
    pub cost: Cost,
    pub cpu: CpuWindow,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Quota {
    pub service: String,
    pub operation: String,
    pub n: usize,
    pub bucket: f64,
    pub refill_per_second: f64,
    pub operator_args: Vec<String>,
    /// First claim seen → last Ready seen.
    pub seconds: f64,
    pub achieved_per_second: f64,
    /// What the quota allows in that window: bucket + refill × seconds.
    pub allowed_in_window: f64,
    pub share_of_quota: f64,
    /// After the first `bucket` signals: (n − bucket) ÷ (last Ready − bucket-th Ready).
    #[serde(default)]
    pub steady_per_second: f64,
    pub throttled: u64,
    pub cost: Cost,
    pub cpu: CpuWindow,
}

/// One second of the unknown-quota run, as counted by the emulator (cumulative since the
/// operator started) and as the operator reported its own limit.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RatePoint {
    /// Seconds since the operator was spawned.
    pub t: f64,
    /// Calls of the throttled operation received so far, and how many were throttled.
    pub calls: u64,
    pub throttled: u64,
    /// Signals finished (Succeeded or Failed) so far.
    pub finished: usize,
    /// The operator's own limit for the operation (calls per second), when it exports one.
    pub operator_limit_per_second: Option<f64>,
}

/// A backlog against a quota the operator is not told: its rate flags at their defaults.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UnknownQuota {
    /// The figures of the known-quota scenario (share of quota, throttled, cost, CPU).
    pub run: Quota,
    /// Calls of the throttled operation, throttled or not.
    pub calls: u64,
    /// Throttled ÷ calls of the operation.
    pub throttled_share: f64,
    /// Sampled every second.
    pub timeline: Vec<RatePoint>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Memory {
    pub idle_rss_mib: f64,
    pub idle_hwm_mib: f64,
    pub finished: usize,
    pub finished_how: String,
    pub create_seconds: f64,
    pub rss_mib: f64,
    pub hwm_mib: f64,
    /// kube-apiserver CPU per request while the benchmark wrote the finished signals (no
    /// operator running, no watch open): one create, one status merge-patch.
    #[serde(default)]
    pub apiserver_cpu_ms_per_create: f64,
    #[serde(default)]
    pub apiserver_cpu_ms_per_status_patch: f64,
    /// One finished signal as the API server serves it (JSON bytes), and its managedFields.
    #[serde(default)]
    pub object_json_bytes: usize,
    #[serde(default)]
    pub managed_fields_json_bytes: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Restart {
    pub finished: usize,
    pub how: String,
    /// Spawn → /readyz 200 (both caches listed).
    pub ready_seconds: f64,
    /// Spawn → leading.
    pub leading_seconds: f64,
    /// Spawn → last reconcile (the reconcile count stopped moving).
    pub idle_seconds: f64,
    pub reconciles: u64,
    /// Calls the emulator received (both services, every operation).
    pub aws_calls: u64,
    /// AWS calls in the operator's own metric.
    pub operator_aws_calls: u64,
    /// Objects whose resourceVersion changed across the restart.
    pub status_writes: u64,
    pub events_written: u64,
    pub cpu: CpuWindow,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemoryResults {
    /// At 10,000 finished signals when the curve has that point, else at its largest.
    pub memory: Memory,
    pub restart: Restart,
    /// The scale curve: one restart onto each number of finished signals, smallest first.
    #[serde(default)]
    pub curve: Vec<ScalePoint>,
    /// Why the curve stops short of its last point, when it does.
    #[serde(default)]
    pub curve_error: Option<String>,
    /// The leader SIGKILLed beside a standby, at the curve's largest point.
    #[serde(default)]
    pub failover: Option<Failover>,
    /// Why the failover was not measured, when it was not.
    #[serde(default)]
    pub failover_error: Option<String>,
}

/// A leader killed without releasing its Lease, a standby beside it, a new signal created at
/// the kill: how long until it is delivered.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Failover {
    pub finished: usize,
    pub how: String,
    /// One entry per kill: kill → the standby leads, kill → the new signal seen Ready.
    pub rounds: Vec<FailoverRound>,
    pub cpu: CpuWindow,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FailoverRound {
    pub kill_to_leading_seconds: f64,
    pub kill_to_ready_seconds: f64,
}

impl Failover {
    /// The slowest round: kill → new signal Ready.
    pub fn worst_seconds(&self) -> f64 {
        self.rounds
            .iter()
            .map(|r| r.kill_to_ready_seconds)
            .fold(0.0, f64::max)
    }
}

/// One point of the scale curve: the operator restarted onto `finished` finished signals.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScalePoint {
    pub finished: usize,
    /// Seconds the benchmark took to create this point's additional finished signals (create
    /// + status write each, `setup_concurrency` at once), and how many it added.
    pub create_seconds: f64,
    pub created: usize,
    pub rss_mib: f64,
    pub hwm_mib: f64,
    pub restart: Restart,
    /// Operator CPU from spawn to idle (utime + stime), seconds, and per finished signal.
    pub operator_cpu_seconds: f64,
    pub operator_cpu_ms_per_signal: f64,
    /// The kube-apiserver's VmRSS and VmHWM (MiB) after the restart: what holding this many
    /// objects costs the API server (with its etcd) on this machine.
    #[serde(default)]
    pub apiserver_rss_mib: f64,
    #[serde(default)]
    pub apiserver_hwm_mib: f64,
}

/// Instructions the operator executed per delivered signal, counted by callgrind: the
/// operator runs under valgrind, its counters are zeroed once it leads and is idle, `n`
/// WorkflowSignals (with runId) are created at once and delivered, then the counters are dumped.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Instructions {
    pub n: usize,
    pub tool: String,
    /// Instructions (Ir) from the zero to the dump, less the idle baseline.
    pub instructions: u64,
    /// The idle baseline: the same operator, counters zeroed, 2 s of nothing to do, dumped.
    #[serde(default)]
    pub idle_instructions: u64,
    pub per_signal: f64,
    /// Created → last Ready, under valgrind (slow: only the counts mean anything).
    pub seconds: f64,
    pub cost: Cost,
    pub cpu: CpuWindow,
}

/// The run these results replace (the JSON found at the output path before the run), with its
/// targets recomputed by this version of the benchmark so that rows line up.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PreviousRun {
    pub started_at: String,
    pub git_commit: String,
    pub targets: Vec<Target>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cli {
    pub n: usize,
    pub version: String,
    pub per_signal: Dist,
    pub total_seconds: f64,
    pub applied: u64,
    pub operator_per_signal_ms: Option<f64>,
    /// CLI time per signal ÷ operator time per signal (one after another).
    pub ratio_sequential: Option<f64>,
    /// CLI time per signal ÷ the operator's time per signal in the burst (1 / throughput).
    pub ratio_burst: Option<f64>,
    pub cpu: CpuWindow,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Target {
    /// Stable name of the row, to line it up with the previous run's.
    #[serde(default)]
    pub key: String,
    pub what: String,
    pub target: String,
    pub measured: String,
    /// `None`: not measured in this run.
    pub met: Option<bool>,
    pub note: String,
    /// How busy the machine was while the row was measured.
    #[serde(default)]
    pub load: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sizes {
    pub wf_latency: usize,
    pub am_latency: usize,
    pub burst: usize,
    pub executions: usize,
    pub concurrency: usize,
    pub quota_swf: usize,
    pub quota_ssm: usize,
    pub finished: usize,
    /// The numbers of finished signals of the scale curve (`finished` is the largest).
    #[serde(default)]
    pub finished_curve: Vec<usize>,
    /// Signals delivered under callgrind for the instruction count (0: not measured).
    #[serde(default)]
    pub instructions: usize,
    pub cli: usize,
    /// Leader kills in the failover measurement (0: not measured).
    #[serde(default)]
    pub failover_kills: usize,
    #[serde(default)]
    pub unknown_swf: usize,
    #[serde(default)]
    pub unknown_ssm: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub name: String,
    pub started_at: String,
    pub finished_at: String,
    pub wall_seconds: f64,
    pub git_commit: String,
    pub operator_binary: String,
    pub operator_profile: String,
    pub bench_profile: String,
    pub machine: Machine,
    pub loadavg_before: [f64; 3],
    pub loadavg_after: [f64; 3],
    pub load_samples: Vec<LoadSample>,
    pub sizes: Sizes,
    pub latency: Option<LatencyResults>,
    pub throughput: Option<Throughput>,
    pub quota_swf: Option<Quota>,
    pub quota_ssm: Option<Quota>,
    #[serde(default)]
    pub unknown_swf: Option<UnknownQuota>,
    #[serde(default)]
    pub unknown_ssm: Option<UnknownQuota>,
    pub memory: Option<MemoryResults>,
    pub cli: Option<Cli>,
    #[serde(default)]
    pub instructions: Option<Instructions>,
    /// The PNG of the scale curve (file name beside the results), or why there is none.
    #[serde(default)]
    pub scale_plot: Option<String>,
    #[serde(default)]
    pub previous: Option<PreviousRun>,
    /// Set when not every scenario ran (`--only`): which ones did.
    #[serde(default)]
    pub partial: Option<String>,
    pub targets: Vec<Target>,
    pub findings: Vec<String>,
    pub errors: Vec<String>,
    /// Words of the person who ran it (`signalman-bench render --notes`), shown after the targets.
    #[serde(default)]
    pub notes: Option<String>,
}

fn ms(v: f64) -> String {
    if v.is_finite() {
        if v < 10.0 {
            format!("{v:.2}")
        } else {
            format!("{v:.1}")
        }
    } else {
        "–".into()
    }
}

fn pct(v: f64) -> String {
    format!("{:.1} %", v * 100.0)
}

fn met(m: Option<bool>) -> &'static str {
    match m {
        Some(true) => "met",
        Some(false) => "**not met**",
        None => "–",
    }
}

fn cpu_line(c: &CpuWindow) -> String {
    let by: Vec<String> = c
        .cores_by_process
        .iter()
        .map(|(k, v)| format!("{k} {v:.2}"))
        .collect();
    format!(
        "{:.1} s; cores used: {}; whole machine {:.2} of which other processes {:.2}; load1 {:.2} → {:.2}",
        c.seconds,
        by.join(", "),
        c.machine_busy_cores,
        c.others_cores,
        c.load1_at_start,
        c.load1_at_end
    )
}

/// How busy the machine was in a window: the load average and the cores used by processes
/// that are not the benchmark's.
pub fn load_line(c: &CpuWindow) -> String {
    format!(
        "load1 {:.2} → {:.2}; {:.2} cores busy, {:.2} by other processes",
        c.load1_at_start, c.load1_at_end, c.machine_busy_cores, c.others_cores
    )
}

fn cost_rows(out: &mut String, label: &str, c: &Cost) {
    let calls: Vec<String> = c
        .aws_calls_per_signal
        .iter()
        .map(|(k, v)| format!("{k} {v:.2}"))
        .collect();
    let _ = writeln!(
        out,
        "| {label} | {} | {} | {:.2} | {:.2} | {:.2} (max {}) | {:.2} | {:.2} | {:.2} | {} | {} |",
        c.delivered,
        if calls.is_empty() {
            "–".to_string()
        } else {
            calls.join("; ")
        },
        c.sends_per_signal,
        c.run_lookups_per_signal,
        c.status_writes_per_signal,
        c.status_writes_max,
        c.events_per_signal,
        c.receipts_per_signal,
        c.kube_writes_per_signal,
        c.throttled,
        c.applied
    );
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut o = String::new();
        let m = &self.machine;
        let _ = writeln!(o, "# signalman benchmark: `{}`\n", self.name);
        let _ = writeln!(
            o,
            "Run {} → {} ({:.0} s), commit `{}`, operator `{}` ({} build), benchmark {} build.\n",
            self.started_at,
            self.finished_at,
            self.wall_seconds,
            self.git_commit,
            self.operator_binary,
            self.operator_profile,
            self.bench_profile
        );
        let _ = writeln!(o, "## Machine\n");
        let _ = writeln!(
            o,
            "- {} × {} (`nproc` {}), {} MiB memory, Linux {}",
            m.nproc, m.cpu_model, m.nproc, m.mem_total_mib, m.kernel
        );
        let _ = writeln!(
            o,
            "- load average (1/5/15 min) before the run {:.2} / {:.2} / {:.2}, after {:.2} / {:.2} / {:.2}",
            self.loadavg_before[0],
            self.loadavg_before[1],
            self.loadavg_before[2],
            self.loadavg_after[0],
            self.loadavg_after[1],
            self.loadavg_after[2]
        );
        if !self.load_samples.is_empty() {
            let l: Vec<f64> = self.load_samples.iter().map(|s| s.load1).collect();
            let b: Vec<f64> = self.load_samples.iter().map(|s| s.busy_cores).collect();
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
            let max = |v: &[f64]| v.iter().cloned().fold(f64::MIN, f64::max);
            let _ = writeln!(
                o,
                "- during the run ({} samples): load1 mean {:.2}, max {:.2}; busy cores mean {:.2}, max {:.2} of {}",
                l.len(),
                mean(&l),
                max(&l),
                mean(&b),
                max(&b),
                m.nproc
            );
        }
        let _ = writeln!(
            o,
            "- every scenario below lists the cores its processes used and what *other* processes on the machine used in the same window\n"
        );

        if let Some(p) = &self.partial {
            let _ = writeln!(o, "**Partial run**: {p}\n");
        }
        let _ = writeln!(o, "## Targets (issue 12)\n");
        match &self.previous {
            Some(p) => {
                let _ = writeln!(
                    o,
                    "Previous run: the results these replace ({}, commit `{}`), their targets recomputed from their JSON by this version of the benchmark; \"–\" where that run did not measure the row.\n",
                    p.started_at, p.git_commit
                );
            }
            None => {
                let _ = writeln!(o, "No previous run at this path to compare with.\n");
            }
        }
        let _ = writeln!(
            o,
            "| what | target | previous run | this run | | machine load while measured | note |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|---|---|");
        for t in &self.targets {
            let before = self
                .previous
                .as_ref()
                .and_then(|p| {
                    p.targets
                        .iter()
                        .find(|x| !t.key.is_empty() && x.key == t.key)
                })
                .map(|x| match x.met {
                    Some(true) => format!("{} (met)", x.measured),
                    Some(false) => format!("{} (not met)", x.measured),
                    None => x.measured.clone(),
                })
                .unwrap_or_else(|| "–".into());
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} |",
                t.what,
                t.target,
                before,
                t.measured,
                met(t.met),
                if t.load.is_empty() { "–" } else { &t.load },
                t.note
            );
        }
        let _ = writeln!(o);
        if let Some(notes) = &self.notes {
            let _ = writeln!(o, "## Notes\n");
            let _ = writeln!(o, "{}\n", notes.trim_end());
        }
        if !self.findings.is_empty() {
            let _ = writeln!(o, "## Measured breakdown\n");
            for f in &self.findings {
                let _ = writeln!(o, "- {f}");
            }
            let _ = writeln!(o);
        }

        if let Some(l) = &self.latency {
            let _ = writeln!(
                o,
                "## 1. Latency: create → Ready=True, one signal at a time\n"
            );
            let _ = writeln!(
                o,
                "Operator flags: `{}` (rate limits raised so the limiter is not what is measured; the SSM default of 2.5/s would otherwise space the signals 400 ms apart). WorkflowSignals without `runId` (the operator looks the open run up), spread over {} executions; AutomationSignals approve one execution each. Times are taken by a watch in the benchmark process.\n",
                l.operator_args.join(" "),
                l.executions
            );
            let _ = writeln!(
                o,
                "| kind | n | p50 ms | p90 ms | p99 ms | max ms | mean ms | create call p50 | create → claim p50 | claim → Ready p50 |"
            );
            let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|---|");
            for x in [&l.workflow, &l.automation].into_iter().flatten() {
                let d = &x.create_to_ready;
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    x.kind,
                    d.n,
                    ms(d.p50_ms),
                    ms(d.p90_ms),
                    ms(d.p99_ms),
                    ms(d.max_ms),
                    ms(d.mean_ms),
                    ms(x.create_call.p50_ms),
                    ms(x.create_to_claim.p50_ms),
                    ms(x.claim_to_ready.p50_ms)
                );
            }
            let _ = writeln!(o);
            for x in [&l.workflow, &l.automation].into_iter().flatten() {
                let aws: Vec<String> = x
                    .operator_aws_call_mean_ms
                    .iter()
                    .map(|(k, v)| format!("{k} {}", ms(*v)))
                    .collect();
                let _ = writeln!(
                    o,
                    "- {}: AWS call means as the operator timed them: {}; reconcile mean {} ms. CPU: {}",
                    x.kind,
                    aws.join(", "),
                    x.operator_reconcile_mean_ms.map(ms).unwrap_or_else(|| "–".into()),
                    cpu_line(&x.cpu)
                );
            }
            let _ = writeln!(o);
        }

        if let Some(t) = &self.throughput {
            let _ = writeln!(o, "## 2. Throughput against the ceiling\n");
            let _ = writeln!(
                o,
                "{} WorkflowSignals (with `runId`: the bare loop makes one SignalWorkflowExecution per signal; the operator makes what it needs besides, as section 7 counts) over {} executions, emulator quotas off. The n objects are created while the operator is stopped ({:.1} s), then it starts with `{}` and works the backlog. The ceiling is a bare loop in the benchmark process calling SignalWorkflowExecution through the operator's own SDK client set-up (`signalman::aws::clients`, retries off) with the same concurrency ({}) against the same emulator and moto, run before and after the operator; moto is reset and the executions re-created before each of the three.\n",
                t.n,
                t.executions,
                t.create_seconds,
                t.operator_args.join(" "),
                t.concurrency
            );
            let _ = writeln!(o, "| | signals | seconds | signals/s | errors |");
            let _ = writeln!(o, "|---|---|---|---|---|");
            let _ = writeln!(
                o,
                "| ceiling (bare loop, before) | {} | {:.2} | {:.1} | {} |",
                t.ceiling_before.n,
                t.ceiling_before.seconds,
                t.ceiling_before.per_second,
                t.ceiling_before.errors
            );
            if let Some(c) = &t.ceiling_after {
                let _ = writeln!(
                    o,
                    "| ceiling (bare loop, after) | {} | {:.2} | {:.1} | {} |",
                    c.n, c.seconds, c.per_second, c.errors
                );
            }
            let _ = writeln!(
                o,
                "| operator (first claim → last Ready) | {} | {:.2} | {:.1} | {} |",
                t.n, t.operator_seconds, t.operator_per_second, t.cost.failed
            );
            let _ = writeln!(
                o,
                "\nOperator: {} of the ceiling ({:.1}/s, mean of the two loops). Start-up (spawn → listed and leading) {:.2} s; spawn → last Ready {:.2} s; peak RSS (VmHWM) {:.1} MiB.\n",
                pct(t.share_of_ceiling),
                t.ceiling_per_second,
                t.operator_startup_seconds,
                t.operator_end_to_end_seconds,
                t.operator_hwm_mib
            );
            let _ = writeln!(
                o,
                "- CPU, ceiling before: {}",
                cpu_line(&t.ceiling_before.cpu)
            );
            if let Some(c) = &t.ceiling_after {
                let _ = writeln!(o, "- CPU, ceiling after: {}", cpu_line(&c.cpu));
            }
            let _ = writeln!(o, "- CPU, operator: {}", cpu_line(&t.cpu));
            let aws: Vec<String> = t
                .operator_aws_call_mean_ms
                .iter()
                .map(|(k, v)| format!("{k} {}", ms(*v)))
                .collect();
            let _ = writeln!(
                o,
                "- AWS call means as the operator timed them: {}\n",
                aws.join(", ")
            );
        }

        let quotas: Vec<&Quota> = [&self.quota_swf, &self.quota_ssm]
            .into_iter()
            .flatten()
            .collect();
        if !quotas.is_empty() {
            let _ = writeln!(o, "## 3. Quota fidelity\n");
            let _ = writeln!(
                o,
                "The emulator enforces a token bucket on the operation; the operator's limiter is set to the same bucket and rate. Share = signals ÷ (bucket + rate × window), what the quota admits in the window (first claim seen → last Ready seen); achieved/s counts the initial bucket, steady/s leaves it out.\n"
            );
            let _ = writeln!(
                o,
                "| service | operation | n | quota | operator flags | seconds | achieved/s | steady/s | share of quota | throttled |"
            );
            let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|---|");
            for q in &quotas {
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | bucket {}, {}/s | `{}` | {:.2} | {:.2} | {:.2} | {} | {} |",
                    q.service,
                    q.operation,
                    q.n,
                    q.bucket,
                    q.refill_per_second,
                    q.operator_args.join(" "),
                    q.seconds,
                    q.achieved_per_second,
                    q.steady_per_second,
                    pct(q.share_of_quota),
                    q.throttled
                );
            }
            let _ = writeln!(o);
            for q in &quotas {
                let _ = writeln!(o, "- {} CPU: {}", q.service, cpu_line(&q.cpu));
            }
            let _ = writeln!(o);
        }

        let unknown: Vec<&UnknownQuota> = [&self.unknown_swf, &self.unknown_ssm]
            .into_iter()
            .flatten()
            .collect();
        if !unknown.is_empty() {
            let _ = writeln!(o, "## 3b. A quota the operator does not know\n");
            let _ = writeln!(
                o,
                "The emulator enforces a token bucket on the operation that the operator is not told of: it runs with its default rate flags and works a backlog. Share of quota as above; throttled share = throttled calls ÷ all calls of the operation. Targets: ≥ 90 % of the quota, ≤ 5 % of calls throttled.\n"
            );
            let _ = writeln!(
                o,
                "| service | operation | n | hidden quota | operator flags | seconds | achieved/s | steady/s | share of quota | calls | throttled | throttled share |"
            );
            let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|---|---|---|");
            for u in &unknown {
                let q = &u.run;
                let flags = if q.operator_args.is_empty() {
                    "(defaults)".to_string()
                } else {
                    format!("`{}`", q.operator_args.join(" "))
                };
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | bucket {}, {}/s | {} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} |",
                    q.service,
                    q.operation,
                    q.n,
                    q.bucket,
                    q.refill_per_second,
                    flags,
                    q.seconds,
                    q.achieved_per_second,
                    q.steady_per_second,
                    pct(q.share_of_quota),
                    u.calls,
                    q.throttled,
                    pct(u.throttled_share)
                );
            }
            let _ = writeln!(o);
            for u in &unknown {
                let _ = writeln!(
                    o,
                    "Rate over time, {} {} (emulator counts per interval; the operator's limit as it exports it, at the end of the interval):\n",
                    u.run.service, u.run.operation
                );
                let _ = writeln!(
                    o,
                    "| from s | to s | calls/s | accepted/s | throttled/s | signals finished | operator's limit/s |"
                );
                let _ = writeln!(o, "|---|---|---|---|---|---|---|");
                for row in rate_rows(&u.timeline, 24) {
                    let _ = writeln!(o, "{row}");
                }
                let _ = writeln!(o);
            }
            for u in &unknown {
                let _ = writeln!(o, "- {} CPU: {}", u.run.service, cpu_line(&u.run.cpu));
            }
            let _ = writeln!(o);
        }

        if let Some(mr) = &self.memory {
            let (m, r) = (&mr.memory, &mr.restart);
            let _ = writeln!(o, "## 4. Memory\n");
            let _ = writeln!(o, "| state | VmRSS MiB | VmHWM MiB |");
            let _ = writeln!(o, "|---|---|---|");
            let _ = writeln!(
                o,
                "| idle, nothing to watch | {:.1} | {:.1} |",
                m.idle_rss_mib, m.idle_hwm_mib
            );
            let _ = writeln!(
                o,
                "| {} finished signals in its namespace, after start-up | {:.1} | {:.1} |",
                m.finished, m.rss_mib, m.hwm_mib
            );
            match chart_memory_mib() {
                Some((request, limit)) => {
                    let _ = writeln!(
                        o,
                        "\nThe chart's default memory request and limit: {request:.0} / {limit:.0} MiB (`charts/signalman/values.yaml`); the peak with {} finished signals (VmHWM) is {:.0} % of the limit.",
                        m.finished,
                        m.hwm_mib * 100.0 / limit
                    );
                }
                None => {
                    let _ = writeln!(o, "\nThe chart's memory limit could not be read from charts/signalman/values.yaml.");
                }
            }
            let _ = writeln!(
                o,
                "\nThe finished signals: {} ({:.1} s). While the benchmark wrote them (no operator, no watch), the kube-apiserver spent {:.2} ms of CPU per create and {:.2} ms per status patch.\n",
                m.finished_how,
                m.create_seconds,
                m.apiserver_cpu_ms_per_create,
                m.apiserver_cpu_ms_per_status_patch
            );
            let _ = writeln!(
                o,
                "One finished signal is {} bytes of JSON as the API server serves it, {} of them managedFields; VmRSS grew by {:.1} KiB per finished signal.\n",
                m.object_json_bytes,
                m.managed_fields_json_bytes,
                (m.rss_mib - m.idle_rss_mib) * 1024.0 / m.finished.max(1) as f64
            );
            let _ = writeln!(o, "## 5. Restart cost\n");
            let _ = writeln!(o, "{}\n", r.how);
            let _ = writeln!(o, "| finished signals | AWS calls (emulator) | AWS calls (operator metric) | status writes | Events | spawn → ready s | → leading s | → idle s | reconciles |");
            let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|");
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {} |",
                r.finished,
                r.aws_calls,
                r.operator_aws_calls,
                r.status_writes,
                r.events_written,
                r.ready_seconds,
                r.leading_seconds,
                r.idle_seconds,
                r.reconciles
            );
            let _ = writeln!(o, "\n- CPU: {}\n", cpu_line(&r.cpu));
            if let Some(f) = &mr.failover {
                let _ = writeln!(o, "## 5b. Failover after SIGKILL\n");
                let _ = writeln!(o, "{}\n", f.how);
                let _ = writeln!(
                    o,
                    "| kill | kill → standby leads s | kill → new signal Ready s |"
                );
                let _ = writeln!(o, "|---|---|---|");
                for (i, round) in f.rounds.iter().enumerate() {
                    let _ = writeln!(
                        o,
                        "| {} | {:.2} | {:.2} |",
                        i + 1,
                        round.kill_to_leading_seconds,
                        round.kill_to_ready_seconds
                    );
                }
                let _ = writeln!(o, "\n- CPU: {}\n", cpu_line(&f.cpu));
            }
            if !mr.curve.is_empty() {
                let _ = writeln!(o, "## 4 + 5. Scale curve\n");
                let _ = writeln!(
                    o,
                    "The same namespace grown to each size in turn (the finished signals made as in 4), and the operator restarted onto it each time. Operator CPU = its utime + stime from spawn to idle.{}\n",
                    self.scale_plot
                        .as_ref()
                        .map(|p| format!(" Plot: {p}."))
                        .unwrap_or_default()
                );
                let _ = writeln!(o, "| finished signals | created for this point (s) | VmRSS MiB | VmHWM MiB | KiB per signal over idle | spawn → ready s | → idle s | operator CPU s | CPU ms per signal | AWS calls | status writes | Events | kube-apiserver VmRSS / VmHWM MiB | machine load |");
                let _ = writeln!(
                    o,
                    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
                );
                for p in &mr.curve {
                    let _ = writeln!(
                        o,
                        "| {} | {} in {:.1} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {:.3} | {} | {} | {} | {:.0} / {:.0} | {} |",
                        p.finished,
                        p.created,
                        p.create_seconds,
                        p.rss_mib,
                        p.hwm_mib,
                        (p.rss_mib - m.idle_rss_mib) * 1024.0 / p.finished.max(1) as f64,
                        p.restart.ready_seconds,
                        p.restart.idle_seconds,
                        p.operator_cpu_seconds,
                        p.operator_cpu_ms_per_signal,
                        p.restart.aws_calls,
                        p.restart.status_writes,
                        p.restart.events_written,
                        p.apiserver_rss_mib,
                        p.apiserver_hwm_mib,
                        load_line(&p.restart.cpu)
                    );
                }
                if let Some(e) = &mr.curve_error {
                    let _ = writeln!(o, "\n**The curve stops short**: {e}");
                }
                let _ = writeln!(o);
            }
        }

        if let Some(i) = &self.instructions {
            let _ = writeln!(o, "## Instruction counts per delivered signal\n");
            let _ = writeln!(
                o,
                "{} WorkflowSignals (runId given, rate limits raised) created at once onto an idle, leading operator running under {}; its counters zeroed before the creates and dumped 2 s after the last Ready (so the receipt and the Event after it count too), less an idle baseline (the same 2 s with nothing to do, measured just before). Unlike CPU time on this shared machine, the count does not depend on what else runs.\n",
                i.n, i.tool
            );
            let _ = writeln!(
                o,
                "| signals | instructions (Ir), idle baseline taken off | idle baseline (2 s) | per signal | seconds under valgrind |"
            );
            let _ = writeln!(o, "|---|---|---|---|---|");
            let _ = writeln!(
                o,
                "| {} | {} | {} | {:.0} | {:.1} |\n",
                i.n, i.instructions, i.idle_instructions, i.per_signal, i.seconds
            );
            let _ = writeln!(o, "- CPU: {}\n", cpu_line(&i.cpu));
        }

        if let Some(c) = &self.cli {
            let _ = writeln!(o, "## 6. What users would do instead: the aws CLI\n");
            let _ = writeln!(
                o,
                "`aws swf signal-workflow-execution` ({}), one process per signal, one after another, against the same kind of emulator and moto; the same signals as the first {} of the latency scenario (the CLI gives no runId: SWF signals the open run).\n",
                c.version, c.n
            );
            let _ = writeln!(o, "| | n | per signal p50 ms | mean ms | p99 ms |");
            let _ = writeln!(o, "|---|---|---|---|---|");
            let _ = writeln!(
                o,
                "| aws CLI | {} | {} | {} | {} |",
                c.n,
                ms(c.per_signal.p50_ms),
                ms(c.per_signal.mean_ms),
                ms(c.per_signal.p99_ms)
            );
            if let Some(op) = c.operator_per_signal_ms {
                let _ = writeln!(
                    o,
                    "| operator, one at a time (create → Ready, mean of the latency scenario) | | | {} | |",
                    ms(op)
                );
            }
            let _ = writeln!(
                o,
                "\nCLI time per signal ÷ operator's: one at a time {}, in a burst {}.\n",
                c.ratio_sequential
                    .map(|r| format!("{r:.1}×"))
                    .unwrap_or_else(|| "–".into()),
                c.ratio_burst
                    .map(|r| format!("{r:.1}×"))
                    .unwrap_or_else(|| "–".into())
            );
            let _ = writeln!(o, "- CPU: {}\n", cpu_line(&c.cpu));
        }

        let _ = writeln!(o, "## 7. Cost per delivered signal\n");
        let _ = writeln!(
            o,
            "AWS calls counted by the emulator; status writes = new resourceVersions after creation seen by a watch; Events = Event objects on the signals (+ series updates); receipts = writes of the SignalReceipts for these signals (each receipt's generation: created at the first attempt, marked delivered after); Kubernetes writes = the three together.\n"
        );
        let _ = writeln!(
            o,
            "| scenario | delivered | AWS calls per signal | sends | run lookups | status writes | Events | receipts | Kubernetes writes | throttled | applied by AWS |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|---|---|");
        if let Some(l) = &self.latency {
            if let Some(x) = &l.workflow {
                cost_rows(&mut o, "WorkflowSignal, one at a time, no runId", &x.cost);
            }
            if let Some(x) = &l.automation {
                cost_rows(&mut o, "AutomationSignal, one at a time", &x.cost);
            }
        }
        if let Some(t) = &self.throughput {
            cost_rows(&mut o, "WorkflowSignal burst, runId given", &t.cost);
        }
        if let Some(i) = &self.instructions {
            cost_rows(&mut o, "WorkflowSignal burst under callgrind", &i.cost);
        }
        for q in &quotas {
            cost_rows(&mut o, &format!("{} under quota", q.service), &q.cost);
        }
        for u in &unknown {
            cost_rows(
                &mut o,
                &format!("{} under an unknown quota", u.run.service),
                &u.run.cost,
            );
        }
        let _ = writeln!(o);
        if !self.errors.is_empty() {
            let _ = writeln!(o, "## Errors\n");
            for e in &self.errors {
                let _ = writeln!(o, "- {e}");
            }
            let _ = writeln!(o);
        }
        let s = &self.sizes;
        let _ = writeln!(
            o,
            "Sizes: `--wf-latency {} --am-latency {} --burst {} --executions {} --concurrency {} --quota-swf {} --quota-ssm {} --unknown-swf {} --unknown-ssm {} --finished {} --instructions {} --cli {}`. How to read this: `bench/README.md`.",
            s.wf_latency,
            s.am_latency,
            s.burst,
            s.executions,
            s.concurrency,
            s.quota_swf,
            s.quota_ssm,
            s.unknown_swf,
            s.unknown_ssm,
            if s.finished_curve.is_empty() {
                s.finished.to_string()
            } else {
                s.finished_curve
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            },
            s.instructions,
            s.cli
        );
        o
    }
}

/// The timeline as Markdown rows, intervals merged so that there are at most `max_rows`.
fn rate_rows(points: &[RatePoint], max_rows: usize) -> Vec<String> {
    if points.is_empty() {
        return vec!["| – | – | – | – | – | – | – |".into()];
    }
    let step = points.len().div_ceil(max_rows.max(1)).max(1);
    let mut rows = Vec::new();
    let mut prev: Option<&RatePoint> = None;
    for chunk in points.chunks(step) {
        let last = chunk.last().expect("chunks are not empty");
        let (t0, calls0, throttled0) = prev.map_or((0.0, 0, 0), |p| (p.t, p.calls, p.throttled));
        let dt = (last.t - t0).max(1e-9);
        let calls = last.calls.saturating_sub(calls0) as f64;
        let throttled = last.throttled.saturating_sub(throttled0) as f64;
        rows.push(format!(
            "| {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {} | {} |",
            t0,
            last.t,
            calls / dt,
            (calls - throttled).max(0.0) / dt,
            throttled / dt,
            last.finished,
            last.operator_limit_per_second
                .map(|v| format!("{v:.2}"))
                .unwrap_or_else(|| "–".into())
        ));
        prev = Some(last);
    }
    rows
}

/// The chart's default memory request and limit in MiB, read from its values.yaml.
pub fn chart_memory_mib() -> Option<(f64, f64)> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/signalman/values.yaml");
    chart_memory_of(&std::fs::read_to_string(path).ok()?)
}

fn chart_memory_of(values_yaml: &str) -> Option<(f64, f64)> {
    let values: serde_json::Value = serde_norway::from_str(values_yaml).ok()?;
    let resources = &values["resources"];
    Some((
        quantity_mib(resources["requests"]["memory"].as_str()?)?,
        quantity_mib(resources["limits"]["memory"].as_str()?)?,
    ))
}

/// A Kubernetes memory quantity (`256Mi`, `1Gi`, `300M`, bytes) in MiB.
fn quantity_mib(q: &str) -> Option<f64> {
    let units = [
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
    ];
    let (number, factor) = units
        .iter()
        .find_map(|(suffix, f)| q.strip_suffix(suffix).map(|n| (n, *f)))
        .unwrap_or((q, 1.0));
    Some(number.parse::<f64>().ok()? * factor / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_charts_memory_limit_is_read_from_its_values() {
        assert_eq!(quantity_mib("256Mi"), Some(256.0));
        assert_eq!(quantity_mib("1Gi"), Some(1024.0));
        assert_eq!(quantity_mib("x"), None);
        let values = "resources:\n  requests:\n    memory: 64Mi\n  limits:\n    memory: 256Mi\n";
        assert_eq!(chart_memory_of(values), Some((64.0, 256.0)));
        // The chart as it is: a request below its limit.
        let (request, limit) = chart_memory_mib().expect("the chart's values.yaml");
        assert!(request > 0.0 && request <= limit);
    }

    fn point(t: f64, calls: u64, throttled: u64) -> RatePoint {
        RatePoint {
            t,
            calls,
            throttled,
            finished: calls.saturating_sub(throttled) as usize,
            operator_limit_per_second: None,
        }
    }

    #[test]
    fn rate_rows_turn_cumulative_counts_into_rates_per_interval() {
        let points: Vec<RatePoint> = (1..=4).map(|i| point(i as f64, 10 * i, 2 * i)).collect();
        let rows = rate_rows(&points, 2);
        assert_eq!(
            rows,
            vec![
                "| 0.0 | 2.0 | 10.00 | 8.00 | 2.00 | 16 | – |",
                "| 2.0 | 4.0 | 10.00 | 8.00 | 2.00 | 32 | – |"
            ]
        );
        assert_eq!(rate_rows(&points, 24).len(), 4);
        assert_eq!(rate_rows(&[], 24).len(), 1);
    }
}
