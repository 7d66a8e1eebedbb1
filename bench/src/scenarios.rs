//! The scenarios of issue 5. Each one makes its own namespace, its own emulator (so its
//! counters see only its own traffic) and its own operator process, and measures one thing.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use aws_config::BehaviorVersion;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Event as CoreEvent;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use signalman::api::{AutomationSignal, SignalReceipt, WorkflowSignal};
use signalman::aws::clients::{AwsClients, AwsSettings, RateLimit};
use signalman::delivery::SendOutcome;
use signalman_testenv::aws_emulator::{Counters, FaultConfig, Service, ThrottleRule};
use signalman_testenv::{Emulator, Env, OPERATOR_ACCESS_KEY, REGION, SECRET_KEY};

use crate::fixtures::{approval, automation_executions, create_all, input, SwfFixture};
use crate::harness::{aws_calls, histogram_mean_ms, metric, metric_sum, Operator};
use crate::machine::{CpuMeter, CpuWindow};
use crate::report::*;
use crate::tracker::{Seen, Tracker};

/// What every scenario shares.
pub struct Bench {
    pub env: &'static Env,
    pub client: kube::Client,
    pub operator_bin: PathBuf,
    pub aws_cli: PathBuf,
    pub sizes: Sizes,
    pub setup_concurrency: usize,
}

const MIB: f64 = 1024.0;

fn args(list: &[(&str, String)]) -> Vec<String> {
    list.iter()
        .flat_map(|(k, v)| [k.to_string(), v.clone()])
        .collect()
}

/// Limits so high that the operator's limiter never waits.
fn unlimited() -> Vec<(&'static str, String)> {
    vec![
        ("--swf-rate", "100000".into()),
        ("--swf-burst", "100000".into()),
        ("--ssm-rate", "100000".into()),
        ("--ssm-burst", "100000".into()),
    ]
}

fn since(t0: Instant, t: Option<Instant>) -> f64 {
    t.map(|t| t.saturating_duration_since(t0).as_secs_f64() * 1000.0)
        .unwrap_or(f64::NAN)
}

/// Event objects recorded on objects of `kind` in `ns` (a series counts its repeats).
async fn events_written(client: &kube::Client, ns: &str, kind: &str) -> anyhow::Result<u64> {
    let api: Api<CoreEvent> = Api::namespaced(client.clone(), ns);
    let mut total = 0u64;
    let mut lp = ListParams::default().limit(500);
    loop {
        let page = api.list(&lp).await.context("listing Events")?;
        for e in &page.items {
            if e.involved_object.kind.as_deref() == Some(kind) {
                total += 1 + e
                    .series
                    .as_ref()
                    .and_then(|s| s.count)
                    .map(|c| (c as u64).saturating_sub(1))
                    .unwrap_or(0);
            }
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => return Ok(total),
        }
    }
}

/// Kubernetes writes besides status writes: Events on objects of `kind`, and the writes of the
/// SignalReceipts for them (the receipts live in the operator's namespace, here `ns`). A
/// receipt's writes are its `metadata.generation`: the create at the first attempt and each
/// change of its spec since (the delivery mark).
#[derive(Clone, Copy, Debug, Default)]
struct Writes {
    events: u64,
    receipts: u64,
}

async fn writes_on(client: &kube::Client, ns: &str, kind: &str) -> anyhow::Result<Writes> {
    let events = events_written(client, ns, kind).await?;
    let api: Api<SignalReceipt> = Api::namespaced(client.clone(), ns);
    let mut receipts = 0u64;
    let mut lp = ListParams::default().limit(500);
    loop {
        let page = api.list(&lp).await.context("listing SignalReceipts")?;
        receipts += page
            .items
            .iter()
            .filter(|r| r.spec.signal_kind == kind)
            .map(|r| r.metadata.generation.unwrap_or(1).max(1) as u64)
            .sum::<u64>();
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => return Ok(Writes { events, receipts }),
        }
    }
}

/// name → resourceVersion of every object of the kind in `ns`.
async fn resource_versions<K>(api: &Api<K>) -> anyhow::Result<BTreeMap<String, String>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut out = BTreeMap::new();
    let mut lp = ListParams::default().limit(500);
    loop {
        let page = api.list(&lp).await.context("listing signals")?;
        for o in &page.items {
            out.insert(o.name_any(), o.resource_version().unwrap_or_default());
        }
        match page.metadata.continue_.clone().filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => return Ok(out),
        }
    }
}

/// The cost of `seen` signals, with the emulator's counters of `service` for their traffic.
fn cost(
    seen: &[(String, Seen)],
    counters: &Counters,
    service: Service,
    other: Writes,
    send_op: &str,
) -> Cost {
    let svc = match service {
        Service::Swf => (
            &counters.swf.calls,
            counters.swf.throttled,
            counters.swf.applied_signals,
        ),
        Service::Ssm => (
            &counters.ssm.calls,
            counters.ssm.throttled,
            counters.ssm.applied_signals,
        ),
    };
    let delivered = seen.iter().filter(|(_, s)| s.ready_at.is_some()).count();
    let failed = seen.iter().filter(|(_, s)| s.failure.is_some()).count();
    let per = |x: f64| {
        if delivered > 0 {
            x / delivered as f64
        } else {
            f64::NAN
        }
    };
    let n = seen.len().max(1) as f64;
    let writes: u32 = seen.iter().map(|(_, s)| s.status_writes()).sum();
    let status_writes_per_signal = f64::from(writes) / n;
    let events_per_signal = other.events as f64 / n;
    let receipts_per_signal = other.receipts as f64 / n;
    Cost {
        delivered,
        failed,
        aws_calls_per_signal: svc
            .0
            .iter()
            .map(|(op, c)| (op.clone(), per(*c as f64)))
            .collect(),
        sends_per_signal: per(svc.0.get(send_op).copied().unwrap_or(0) as f64),
        run_lookups_per_signal: per(svc
            .0
            .get("ListOpenWorkflowExecutions")
            .copied()
            .unwrap_or(0) as f64),
        throttled: svc.1,
        applied: svc.2,
        status_writes_per_signal,
        status_writes_max: seen
            .iter()
            .map(|(_, s)| s.status_writes())
            .max()
            .unwrap_or(0),
        events_per_signal,
        receipts_per_signal,
        kube_writes_per_signal: status_writes_per_signal + events_per_signal + receipts_per_signal,
        attempts_per_signal: seen.iter().map(|(_, s)| f64::from(s.attempts)).sum::<f64>() / n,
        throttled_retries_per_signal: seen
            .iter()
            .map(|(_, s)| f64::from(s.throttled_retries))
            .sum::<f64>()
            / n,
    }
}

/// Mean duration of each AWS operation of `service` (all when `None`) in the operator's
/// histogram, in milliseconds.
fn aws_means(text: &str, only: Option<&str>) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for key in aws_calls(text).keys() {
        let mut parts = key.split('/');
        let (Some(service), Some(op)) = (parts.next(), parts.next()) else {
            continue;
        };
        if only.is_some_and(|s| s != service) {
            continue;
        }
        let labels = [
            format!("service=\"{service}\""),
            format!("operation=\"{op}\""),
        ];
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        if let Some(m) = histogram_mean_ms(text, "signalman_aws_call_duration_seconds", &labels) {
            out.insert(op.to_string(), m);
        }
    }
    out
}

/// Spawn → first claim → last Ready over a set of signals.
fn window(seen: &[(String, Seen)]) -> (Option<Instant>, Option<Instant>) {
    let first = seen.iter().filter_map(|(_, s)| s.sending_at).min();
    let last = seen.iter().filter_map(|(_, s)| s.ready_at).max();
    (first, last)
}

fn check_all_delivered(what: &str, seen: &[(String, Seen)], applied: u64) -> anyhow::Result<()> {
    let failed: Vec<String> = seen
        .iter()
        .filter_map(|(n, s)| s.failure.as_ref().map(|f| format!("{n}: {f}")))
        .take(3)
        .collect();
    if !failed.is_empty() {
        bail!("{what}: signals failed: {}", failed.join("; "));
    }
    let delivered = seen.iter().filter(|(_, s)| s.ready_at.is_some()).count();
    if delivered as u64 != applied {
        bail!("{what}: {delivered} signals Ready but AWS applied {applied} (exactly once broken?)");
    }
    Ok(())
}

/// Generous time for `n` signals at `per_second`.
fn budget(n: usize, per_second: f64) -> Duration {
    Duration::from_secs_f64(120.0 + 4.0 * n as f64 / per_second)
}

impl Bench {
    async fn namespace(&self, prefix: &str) -> String {
        self.env.namespace(&self.client, prefix).await
    }

    fn operator(
        &self,
        ns: &str,
        identity: &str,
        emu: &Emulator,
        flags: &[(&str, String)],
    ) -> anyhow::Result<Operator> {
        Operator::spawn(
            &self.operator_bin,
            self.env,
            ns,
            identity,
            &emu.endpoint,
            &args(flags),
        )
    }

    // ------------------------------------------------------------------ 1. latency

    pub async fn latency(&self) -> anyhow::Result<LatencyResults> {
        let s = &self.sizes;
        let ns = self.namespace("bench-latency").await;
        let emu = self.env.private_emulator().await;
        let executions = s.executions.min(s.wf_latency).max(1);
        let swf = SwfFixture::start(self.env, "bench-latency", executions).await?;
        let ids = automation_executions(&emu.endpoint, s.am_latency).await?;
        emu.handle.reset();
        let wf_api: Api<WorkflowSignal> = Api::namespaced(self.client.clone(), &ns);
        let am_api: Api<AutomationSignal> = Api::namespaced(self.client.clone(), &ns);
        let wf_tr = Tracker::start(wf_api.clone()).await?;
        let am_tr = Tracker::start(am_api.clone()).await?;
        let flags = unlimited();
        let mut op = self.operator(&ns, "bench-latency", &emu, &flags)?;
        op.wait_leading(Duration::from_secs(120)).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;

        let mut workflow = None;
        if s.wf_latency > 0 {
            let cpu = CpuMeter::start(&[("operator", op.pid)]);
            let mut samples = Vec::new();
            for i in 0..s.wf_latency {
                let obj = swf.signal("wf", i, false);
                let name = obj.name_any();
                let t0 = Instant::now();
                wf_api.create(&PostParams::default(), &obj).await?;
                let created = t0.elapsed();
                let seen = wf_tr.wait_ready(&name, Duration::from_secs(60)).await?;
                samples.push((t0, created, seen));
            }
            let cpu = cpu.stop();
            let text = op.metrics().await?;
            let counters = emu.handle.counters();
            let seen = wf_tr.all();
            check_all_delivered(
                "latency/WorkflowSignal",
                &seen,
                counters.swf.applied_signals,
            )?;
            let events = writes_on(&self.client, &ns, "WorkflowSignal").await?;
            workflow = Some(latency_of(
                "WorkflowSignal",
                &samples,
                &text,
                "swf",
                cost(
                    &seen,
                    &counters,
                    Service::Swf,
                    events,
                    "SignalWorkflowExecution",
                ),
                cpu,
            ));
        }

        let mut automation = None;
        if s.am_latency > 0 {
            let cpu = CpuMeter::start(&[("operator", op.pid)]);
            let mut samples = Vec::new();
            for (i, id) in ids.iter().enumerate() {
                let obj = approval(&format!("am-{i}"), id);
                let t0 = Instant::now();
                am_api.create(&PostParams::default(), &obj).await?;
                let created = t0.elapsed();
                let seen = am_tr
                    .wait_ready(&format!("am-{i}"), Duration::from_secs(60))
                    .await?;
                samples.push((t0, created, seen));
            }
            let cpu = cpu.stop();
            let text = op.metrics().await?;
            let counters = emu.handle.counters();
            let seen = am_tr.all();
            check_all_delivered(
                "latency/AutomationSignal",
                &seen,
                counters.ssm.applied_signals,
            )?;
            let events = writes_on(&self.client, &ns, "AutomationSignal").await?;
            automation = Some(latency_of(
                "AutomationSignal",
                &samples,
                &text,
                "ssm",
                cost(
                    &seen,
                    &counters,
                    Service::Ssm,
                    events,
                    "SendAutomationSignal",
                ),
                cpu,
            ));
        }
        op.stop();
        Ok(LatencyResults {
            operator_args: args(&flags),
            executions,
            workflow,
            automation,
        })
    }

    // ------------------------------------------------------------------ 2. throughput

    async fn ceiling(&self, emu: &Emulator, fx: &SwfFixture, n: usize) -> anyhow::Result<Ceiling> {
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .region(aws_config::Region::new(REGION))
            .endpoint_url(&emu.endpoint)
            .credentials_provider(aws_sdk_swf::config::Credentials::new(
                OPERATOR_ACCESS_KEY,
                SECRET_KEY,
                None,
                None,
                "bench",
            ))
            .load()
            .await;
        let clients = AwsClients::new(
            sdk,
            AwsSettings {
                send_timeout: Duration::from_secs(20),
                swf_rate: RateLimit {
                    per_second: 100_000.0,
                    burst: 100_000,
                },
                ssm_rate: RateLimit {
                    per_second: 100_000.0,
                    burst: 100_000,
                },
                allowed_regions: Vec::new(),
                requester_in_comment: false,
            },
        );
        let region = clients
            .for_region(Some(REGION))
            .map_err(|e| anyhow::anyhow!(e))?;
        let client = region.swf.send.clone();
        emu.handle.reset();
        let cpu = CpuMeter::start(&[]);
        let started = Instant::now();
        let errors = futures::stream::iter(0..n)
            .map(|i| {
                let client = client.clone();
                let (workflow_id, run_id) = fx.run(i).clone();
                let domain = fx.domain.clone();
                async move {
                    let input = input(i);
                    signalman::aws::swf::send(
                        &client,
                        signalman::aws::swf::SwfSignal {
                            domain: &domain,
                            workflow_id: &workflow_id,
                            run_id: &run_id,
                            signal_name: "approve",
                            input: Some(&input),
                        },
                    )
                    .await
                }
            })
            .buffer_unordered(self.sizes.concurrency.max(1))
            .filter(|o| futures::future::ready(matches!(o, SendOutcome::Failed(_))))
            .count()
            .await;
        let seconds = started.elapsed().as_secs_f64();
        let cpu = cpu.stop();
        Ok(Ceiling {
            n,
            concurrency: self.sizes.concurrency,
            seconds,
            per_second: n as f64 / seconds,
            errors,
            applied: emu.handle.counters().swf.applied_signals,
            cpu,
        })
    }

    pub async fn throughput(&self) -> anyhow::Result<Throughput> {
        let s = &self.sizes;
        let n = s.burst;
        let executions = s.executions.min(n).max(1);
        let emu = self.env.private_emulator().await;
        let fx = SwfFixture::start(self.env, "bench-burst", executions).await?;
        let ceiling_before = self.ceiling(&emu, &fx, n).await?;
        if ceiling_before.errors > 0 {
            bail!("the ceiling loop had {} errors", ceiling_before.errors);
        }

        let fx = SwfFixture::start(self.env, "bench-burst", executions).await?;
        emu.handle.reset();
        let ns = self.namespace("bench-burst").await;
        let api: Api<WorkflowSignal> = Api::namespaced(self.client.clone(), &ns);
        let objects = (0..n).map(|i| fx.signal("burst", i, true)).collect();
        let create_seconds = create_all(&api, objects, self.setup_concurrency)
            .await?
            .as_secs_f64();
        let tracker = Tracker::start(api.clone()).await?;
        let mut flags = unlimited();
        flags.push(("--concurrency", s.concurrency.to_string()));
        let mut op = self.operator(&ns, "bench-burst", &emu, &flags)?;
        let cpu = CpuMeter::start(&[("operator", op.pid)]);
        let startup = op.wait_leading(Duration::from_secs(120)).await?;
        tracker.wait_terminal(n, budget(n, 20.0)).await?;
        let cpu = cpu.stop();
        let text = op.metrics().await?;
        let hwm = op.sample().hwm_kib as f64 / MIB;
        let spawned = op.spawned_at;
        op.stop();
        let counters = emu.handle.counters();
        let seen = tracker.all();
        check_all_delivered("burst", &seen, counters.swf.applied_signals)?;
        let (first, last) = window(&seen);
        let (Some(first), Some(last)) = (first, last) else {
            bail!("burst: no claim or no Ready seen");
        };
        let operator_seconds = last.duration_since(first).as_secs_f64();
        let events = writes_on(&self.client, &ns, "WorkflowSignal").await?;

        let ceiling_after = if s.burst > 0 {
            let fx = SwfFixture::start(self.env, "bench-burst", executions).await?;
            Some(self.ceiling(&emu, &fx, n).await?)
        } else {
            None
        };
        let ceilings: Vec<f64> = std::iter::once(ceiling_before.per_second)
            .chain(ceiling_after.iter().map(|c| c.per_second))
            .collect();
        let ceiling_per_second = ceilings.iter().sum::<f64>() / ceilings.len() as f64;
        let operator_per_second = n as f64 / operator_seconds.max(1e-9);
        Ok(Throughput {
            n,
            executions,
            concurrency: s.concurrency,
            operator_args: args(&flags),
            create_seconds,
            ceiling_before,
            ceiling_after,
            ceiling_per_second,
            operator_seconds,
            operator_per_second,
            share_of_ceiling: operator_per_second / ceiling_per_second,
            operator_startup_seconds: startup.as_secs_f64(),
            operator_end_to_end_seconds: last.duration_since(spawned).as_secs_f64(),
            operator_hwm_mib: hwm,
            operator_aws_call_mean_ms: aws_means(&text, None),
            operator_reconcile_mean_ms: histogram_mean_ms(
                &text,
                "signalman_reconcile_duration_seconds",
                &["kind=\"WorkflowSignal\""],
            ),
            operator_reconciles_in_flight: metric_sum(
                &text,
                "signalman_reconcile_duration_seconds_sum",
                &["kind=\"WorkflowSignal\""],
            ) / operator_seconds.max(1e-9),
            cost: cost(
                &seen,
                &counters,
                Service::Swf,
                events,
                "SignalWorkflowExecution",
            ),
            cpu,
        })
    }

    // ------------------------------------------------------------------ 3. quotas

    pub async fn quota_swf(&self, bucket: f64, rate: f64) -> anyhow::Result<Quota> {
        let s = &self.sizes;
        let n = s.quota_swf;
        let executions = s.executions.min(n).max(1);
        let emu = self.env.private_emulator().await;
        let fx = SwfFixture::start(self.env, "bench-quota", executions).await?;
        let ns = self.namespace("bench-quota-swf").await;
        let api: Api<WorkflowSignal> = Api::namespaced(self.client.clone(), &ns);
        let objects = (0..n).map(|i| fx.signal("quota", i, true)).collect();
        create_all(&api, objects, self.setup_concurrency).await?;
        let tracker = Tracker::start(api.clone()).await?;
        emu.handle.reset();
        emu.handle.set_faults(FaultConfig::none().with_throttle(
            Service::Swf,
            ThrottleRule::new("SignalWorkflowExecution", bucket, rate),
        ))?;
        let flags = vec![
            ("--swf-rate", format!("{rate}")),
            ("--swf-burst", format!("{bucket}")),
        ];
        let mut op = self.operator(&ns, "bench-quota-swf", &emu, &flags)?;
        let cpu = CpuMeter::start(&[("operator", op.pid)]);
        op.wait_leading(Duration::from_secs(120)).await?;
        tracker.wait_terminal(n, budget(n, rate)).await?;
        let cpu = cpu.stop();
        op.stop();
        let counters = emu.handle.counters();
        emu.handle.clear_faults();
        let seen = tracker.all();
        check_all_delivered("quota/swf", &seen, counters.swf.applied_signals)?;
        let events = writes_on(&self.client, &ns, "WorkflowSignal").await?;
        Ok(quota_of(
            "swf",
            "SignalWorkflowExecution",
            n,
            bucket,
            rate,
            args(&flags),
            &seen,
            cost(
                &seen,
                &counters,
                Service::Swf,
                events,
                "SignalWorkflowExecution",
            ),
            counters.swf.throttled,
            cpu,
        ))
    }

    pub async fn quota_ssm(&self, bucket: f64, rate: f64) -> anyhow::Result<Quota> {
        let n = self.sizes.quota_ssm;
        let emu = self.env.private_emulator().await;
        let ids = automation_executions(&emu.endpoint, n).await?;
        let ns = self.namespace("bench-quota-ssm").await;
        let api: Api<AutomationSignal> = Api::namespaced(self.client.clone(), &ns);
        let objects = ids
            .iter()
            .enumerate()
            .map(|(i, id)| approval(&format!("quota-{i}"), id))
            .collect();
        create_all(&api, objects, self.setup_concurrency).await?;
        let tracker = Tracker::start(api.clone()).await?;
        emu.handle.reset();
        emu.handle.set_faults(FaultConfig::none().with_throttle(
            Service::Ssm,
            ThrottleRule::new("SendAutomationSignal", bucket, rate),
        ))?;
        let flags = vec![
            ("--ssm-rate", format!("{rate}")),
            ("--ssm-burst", format!("{bucket}")),
        ];
        let mut op = self.operator(&ns, "bench-quota-ssm", &emu, &flags)?;
        let cpu = CpuMeter::start(&[("operator", op.pid)]);
        op.wait_leading(Duration::from_secs(120)).await?;
        tracker.wait_terminal(n, budget(n, rate)).await?;
        let cpu = cpu.stop();
        op.stop();
        let counters = emu.handle.counters();
        emu.handle.clear_faults();
        let seen = tracker.all();
        check_all_delivered("quota/ssm", &seen, counters.ssm.applied_signals)?;
        let events = writes_on(&self.client, &ns, "AutomationSignal").await?;
        Ok(quota_of(
            "ssm",
            "SendAutomationSignal",
            n,
            bucket,
            rate,
            args(&flags),
            &seen,
            cost(
                &seen,
                &counters,
                Service::Ssm,
                events,
                "SendAutomationSignal",
            ),
            counters.ssm.throttled,
            cpu,
        ))
    }

    // ------------------------------------------------------------------ 3b. unknown quota

    /// A backlog against a quota the operator is not told of: the emulator throttles the
    /// service's signal operation at `bucket` and `rate`, the operator runs with its default
    /// rate flags. Sampled every second: the emulator's calls and throttles, signals finished,
    /// and the operator's own limit for the operation if it exports one.
    pub async fn unknown_quota(
        &self,
        service: Service,
        bucket: f64,
        rate: f64,
    ) -> anyhow::Result<UnknownQuota> {
        let (svc, operation, n, kind) = match service {
            Service::Swf => (
                "swf",
                "SignalWorkflowExecution",
                self.sizes.unknown_swf,
                "WorkflowSignal",
            ),
            Service::Ssm => (
                "ssm",
                "SendAutomationSignal",
                self.sizes.unknown_ssm,
                "AutomationSignal",
            ),
        };
        let emu = self.env.private_emulator().await;
        let ns = self.namespace(&format!("bench-unknown-{svc}")).await;
        // Kept alive for the run (its executions are the signals' targets).
        let mut _fixture = None;
        let tracker = match service {
            Service::Swf => {
                let executions = self.sizes.executions.min(n).max(1);
                let fx = SwfFixture::start(self.env, "bench-unknown", executions).await?;
                let api: Api<WorkflowSignal> = Api::namespaced(self.client.clone(), &ns);
                let objects = (0..n).map(|i| fx.signal("unknown", i, true)).collect();
                create_all(&api, objects, self.setup_concurrency).await?;
                _fixture = Some(fx);
                Tracker::start(api).await?
            }
            Service::Ssm => {
                let ids = automation_executions(&emu.endpoint, n).await?;
                let api: Api<AutomationSignal> = Api::namespaced(self.client.clone(), &ns);
                let objects = ids
                    .iter()
                    .enumerate()
                    .map(|(i, id)| approval(&format!("unknown-{i}"), id))
                    .collect();
                create_all(&api, objects, self.setup_concurrency).await?;
                Tracker::start(api).await?
            }
        };
        emu.handle.reset();
        emu.handle.set_faults(
            FaultConfig::none().with_throttle(service, ThrottleRule::new(operation, bucket, rate)),
        )?;
        // No rate flags: the operator does not know the quota.
        let flags: Vec<(&str, String)> = Vec::new();
        let mut op = self.operator(&ns, &format!("bench-unknown-{svc}"), &emu, &flags)?;
        let cpu = CpuMeter::start(&[("operator", op.pid)]);
        op.wait_leading(Duration::from_secs(120)).await?;
        let counts = |c: &Counters| match service {
            Service::Swf => (
                c.swf.calls.get(operation).copied().unwrap_or(0),
                c.swf.throttled,
            ),
            Service::Ssm => (
                c.ssm.calls.get(operation).copied().unwrap_or(0),
                c.ssm.throttled,
            ),
        };
        let mut timeline = Vec::new();
        {
            let sampling = async {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let (calls, throttled) = counts(&emu.handle.counters());
                    let limit = match op.metrics().await {
                        Ok(text) => operator_limit(&text, svc, operation),
                        Err(_) => None,
                    };
                    timeline.push(RatePoint {
                        t: op.spawned_at.elapsed().as_secs_f64(),
                        calls,
                        throttled,
                        finished: tracker.terminal_count(),
                        operator_limit_per_second: limit,
                    });
                }
            };
            tokio::select! {
                done = tracker.wait_terminal(n, budget(n, rate)) => done?,
                _ = sampling => {}
            }
        }
        let cpu = cpu.stop();
        let (calls, throttled) = counts(&emu.handle.counters());
        timeline.push(RatePoint {
            t: op.spawned_at.elapsed().as_secs_f64(),
            calls,
            throttled,
            finished: tracker.terminal_count(),
            operator_limit_per_second: match op.metrics().await {
                Ok(text) => operator_limit(&text, svc, operation),
                Err(_) => None,
            },
        });
        op.stop();
        let counters = emu.handle.counters();
        emu.handle.clear_faults();
        let seen = tracker.all();
        let applied = match service {
            Service::Swf => counters.swf.applied_signals,
            Service::Ssm => counters.ssm.applied_signals,
        };
        check_all_delivered(&format!("unknown/{svc}"), &seen, applied)?;
        let events = writes_on(&self.client, &ns, kind).await?;
        let run = quota_of(
            svc,
            operation,
            n,
            bucket,
            rate,
            args(&flags),
            &seen,
            cost(&seen, &counters, service, events, operation),
            throttled,
            cpu,
        );
        Ok(UnknownQuota {
            run,
            calls,
            throttled_share: throttled as f64 / calls.max(1) as f64,
            timeline,
        })
    }

    // ------------------------------------------------------------------ 4 + 5. memory, restart

    pub async fn memory(&self) -> anyhow::Result<MemoryResults> {
        let mut points: Vec<usize> = self
            .sizes
            .finished_curve
            .iter()
            .copied()
            .filter(|n| *n > 0)
            .collect();
        if points.is_empty() {
            points.push(self.sizes.finished.max(1));
        }
        points.sort_unstable();
        points.dedup();
        let ns = self.namespace("bench-memory").await;
        let emu = self.env.private_emulator().await;
        let fx = SwfFixture::start(self.env, "bench-memory", 1).await?;
        let api: Api<WorkflowSignal> = Api::namespaced(self.client.clone(), &ns);
        let identity = "bench-memory";

        // Idle: nothing in the namespace.
        let mut op = self.operator(&ns, identity, &emu, &[])?;
        op.wait_leading(Duration::from_secs(120)).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let idle = op.sample();

        // One real delivery gives the exact status the operator writes on a finished signal.
        let tracker = Tracker::start(api.clone()).await?;
        let first = fx.signal("done", 0, false);
        api.create(&PostParams::default(), &first).await?;
        tracker
            .wait_ready(&first.name_any(), Duration::from_secs(60))
            .await?;
        drop(tracker);
        op.stop();
        let template = api
            .get(&first.name_any())
            .await?
            .status
            .context("the delivered signal has no status")?;
        let template = serde_json::json!({ "status": template });

        // The namespace grows to each point in turn; the operator restarts onto each.
        let mut have = 1usize;
        let mut curve = Vec::new();
        let mut chosen: Option<(Memory, Restart)> = None;
        let mut curve_error = None;
        for (k, &f) in points.iter().enumerate() {
            // A point that fails keeps the points before it (and says why).
            let step: anyhow::Result<()> = async {
                let from = have;
                let started = Instant::now();
                let objects: Vec<WorkflowSignal> =
                    (from..f).map(|i| fx.signal("done", i, false)).collect();
                let cpu_create = CpuMeter::start(&[]);
                create_all(&api, objects, self.setup_concurrency).await?;
                let cpu_create = cpu_create.stop();
                let cpu_patch = CpuMeter::start(&[]);
                futures::stream::iter(from..f)
                    .map(|i| {
                        let api = api.clone();
                        let patch = template.clone();
                        async move {
                            api.patch_status(
                                &format!("done-{i}"),
                                &PatchParams::default(),
                                &Patch::Merge(&patch),
                            )
                            .await
                            .context("writing a finished status")
                        }
                    })
                    .buffer_unordered(self.setup_concurrency)
                    .try_for_each(|_| async { Ok(()) })
                    .await?;
                let cpu_patch = cpu_patch.stop();
                have = have.max(f);
                let created = f.saturating_sub(from);
                let create_seconds = started.elapsed().as_secs_f64();
                eprintln!(
                    "signalman-bench: memory: {f} finished signals ({created} created in {create_seconds:.1} s)"
                );
                let apiserver_ms = |c: &CpuWindow| {
                    c.cores_by_process
                        .get("kube-apiserver")
                        .copied()
                        .unwrap_or(0.0)
                        * c.seconds
                        * 1000.0
                        / created.max(1) as f64
                };
                let (restart, sample) = self.restart_onto(&api, &ns, identity, &emu, f).await?;
                let apiserver = crate::harness::children_named("signalman-apis")
                    .into_iter()
                    .filter_map(crate::harness::proc_sample)
                    .fold(crate::harness::ProcSample::default(), |a, b| {
                        crate::harness::ProcSample {
                            rss_kib: a.rss_kib + b.rss_kib,
                            hwm_kib: a.hwm_kib + b.hwm_kib,
                            cpu_ticks: a.cpu_ticks + b.cpu_ticks,
                        }
                    });
                let cpu_s = restart
                    .cpu
                    .cores_by_process
                    .get("operator")
                    .copied()
                    .unwrap_or(0.0)
                    * restart.cpu.seconds;
                curve.push(ScalePoint {
                    finished: f,
                    create_seconds,
                    created,
                    rss_mib: sample.rss_kib as f64 / MIB,
                    hwm_mib: sample.hwm_kib as f64 / MIB,
                    restart: restart.clone(),
                    operator_cpu_seconds: cpu_s,
                    operator_cpu_ms_per_signal: cpu_s * 1000.0 / f as f64,
                    apiserver_rss_mib: apiserver.rss_kib as f64 / MIB,
                    apiserver_hwm_mib: apiserver.hwm_kib as f64 / MIB,
                });
                // The 10,000 point is the memory figure; otherwise the largest.
                if f == 10_000 || (k + 1 == points.len() && chosen.is_none()) {
                    let sample_obj = api.get(&format!("done-{}", f - 1)).await?;
                    let object_json_bytes = serde_json::to_vec(&sample_obj)?.len();
                    let managed_fields_json_bytes =
                        serde_json::to_vec(&sample_obj.metadata.managed_fields)?.len();
                    chosen = Some((
                        Memory {
                            idle_rss_mib: idle.rss_kib as f64 / MIB,
                            idle_hwm_mib: idle.hwm_kib as f64 / MIB,
                            finished: f,
                            finished_how: format!(
                                "1 delivered by the operator, the other {} created by the benchmark and given that signal's exact status (Succeeded, Ready=True) through the status subresource, to save time",
                                f - 1
                            ),
                            create_seconds,
                            rss_mib: sample.rss_kib as f64 / MIB,
                            hwm_mib: sample.hwm_kib as f64 / MIB,
                            apiserver_cpu_ms_per_create: apiserver_ms(&cpu_create),
                            apiserver_cpu_ms_per_status_patch: apiserver_ms(&cpu_patch),
                            object_json_bytes,
                            managed_fields_json_bytes,
                        },
                        restart,
                    ));
                }
                Ok(())
            }
            .await;
            if let Err(e) = step {
                if curve.is_empty() {
                    return Err(e);
                }
                curve_error = Some(format!("at {f} finished signals: {e:#}"));
                break;
            }
        }
        let (memory, restart) = chosen.context("no point of the scale curve was measured")?;
        let (failover, failover_error) = if self.sizes.failover_kills == 0 {
            (None, None)
        } else {
            match self.failover(&api, &ns, &emu, &fx, have).await {
                Ok(f) => (Some(f), None),
                Err(e) => (None, Some(format!("at {have} finished signals: {e:#}"))),
            }
        };
        Ok(MemoryResults {
            memory,
            restart,
            curve,
            curve_error,
            failover,
            failover_error,
        })
    }

    /// Two operators on one Lease over the `f` finished signals in `ns`. The leader is
    /// SIGKILLed (no release, as an OOM kill or a lost node) `--failover-kills` times; at each
    /// kill a new signal is created and timed until the standby has delivered it. The killed
    /// one comes back as the next standby.
    async fn failover(
        &self,
        api: &Api<WorkflowSignal>,
        ns: &str,
        emu: &Emulator,
        fx: &SwfFixture,
        f: usize,
    ) -> anyhow::Result<Failover> {
        const LABEL: &str = "signalman-bench/failover";
        let list_timeout = Duration::from_secs(300 + f as u64 / 100);
        let tracker = Tracker::start_with(
            api.clone(),
            kube::runtime::watcher::Config::default().labels(&format!("{LABEL}=true")),
        )
        .await?;
        let identities = ["bench-failover-a", "bench-failover-b"];
        let mut leader = self.operator(ns, identities[0], emu, &[])?;
        leader.wait_leading(list_timeout).await?;
        let mut standby = self.operator(ns, identities[1], emu, &[])?;
        let cpu = CpuMeter::start(&[]);
        let mut rounds = Vec::new();
        for round in 0..self.sizes.failover_kills {
            standby.wait_ready(list_timeout).await?;
            // A few of the standby's looks at the Lease, as a standby that has run a while.
            tokio::time::sleep(Duration::from_secs(3)).await;
            leader.kill();
            let killed = Instant::now();
            let mut signal = fx.signal("failover", f + round, false);
            signal
                .labels_mut()
                .insert(LABEL.to_string(), "true".to_string());
            let name = signal.name_any();
            api.create(&PostParams::default(), &signal).await?;
            let mut leading = None;
            let ready = loop {
                standby.check_alive()?;
                if leading.is_none() {
                    if let Ok(text) = standby.metrics().await {
                        if metric(&text, "signalman_leader") == Some(1.0) {
                            leading = Some(killed.elapsed());
                        }
                    }
                }
                if let Some(seen) = tracker.get(&name) {
                    if let Some(at) = seen.ready_at {
                        break at.saturating_duration_since(killed);
                    }
                    if let Some(why) = seen.failure {
                        bail!("{name} failed after the failover: {why}");
                    }
                }
                if killed.elapsed() > Duration::from_secs(120) {
                    bail!(
                        "{name} was not delivered within 120 s of the leader's kill (standby log: {})",
                        standby.log.display()
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            eprintln!(
                "signalman-bench: failover {}: the standby led {:.2} s and delivered {name} {:.2} s after the kill",
                round + 1,
                leading.unwrap_or_default().as_secs_f64(),
                ready.as_secs_f64()
            );
            rounds.push(FailoverRound {
                kill_to_leading_seconds: leading.unwrap_or(ready).as_secs_f64(),
                kill_to_ready_seconds: ready.as_secs_f64(),
            });
            let back = identities[round % 2];
            leader = std::mem::replace(&mut standby, self.operator(ns, back, emu, &[])?);
        }
        let cpu = cpu.stop();
        leader.stop();
        standby.stop();
        Ok(Failover {
            finished: f,
            how: format!(
                "Two operators (the default lease timing: {} s duration, a look every {} s) over the {f} finished signals; the leader SIGKILLed (no lease release, as an OOM kill or a lost node) {} times, each a few seconds after its standby was ready; at each kill a new WorkflowSignal is created and timed until the watch sees it Ready. The killed one comes back as the next standby.",
                signalman::leader::DEFAULT_LEASE_SECONDS,
                signalman::leader::DEFAULT_RETRY_SECONDS,
                self.sizes.failover_kills,
            ),
            rounds,
            cpu,
        })
    }

    /// The operator (same identity, so it takes its Lease back at once) started onto the `f`
    /// finished signals in `ns`, measured until idle; then stopped.
    async fn restart_onto(
        &self,
        api: &Api<WorkflowSignal>,
        ns: &str,
        identity: &str,
        emu: &Emulator,
        f: usize,
    ) -> anyhow::Result<(Restart, crate::harness::ProcSample)> {
        let before = resource_versions(api).await?;
        if before.len() != f {
            bail!("expected {f} signals, found {}", before.len());
        }
        let events_before = events_written(&self.client, ns, "WorkflowSignal").await?;
        emu.handle.reset();
        let mut op = self.operator(ns, identity, emu, &[])?;
        let cpu = CpuMeter::start(&[("operator", op.pid)]);
        let (mut ready, mut leading, mut last_change) = (None, None, op.spawned_at);
        let mut reconciles = 0.0;
        // Generous: a list of 100,000 objects and a reconcile of each on a busy 2-core machine.
        let limit = Duration::from_secs(300 + f as u64 / 100);
        let deadline = Instant::now() + limit;
        loop {
            op.check_alive()?;
            if ready.is_none() {
                if let Ok((200, _)) = crate::harness::http(&op.base, "GET", "/readyz").await {
                    ready = Some(op.spawned_at.elapsed());
                }
            }
            if let Ok(text) = op.metrics().await {
                if leading.is_none() && metric(&text, "signalman_leader") == Some(1.0) {
                    leading = Some(op.spawned_at.elapsed());
                }
                let r = metric_sum(&text, "signalman_reconcile_duration_seconds_count", &[]);
                if r != reconciles {
                    reconciles = r;
                    last_change = Instant::now();
                }
            }
            let still = last_change.elapsed();
            // Idle: every object reconciled and nothing since for 3 s (or nothing for 15 s,
            // should the operator ever skip finished objects altogether).
            let quiet_since_ready = ready.is_some_and(|r| {
                op.spawned_at.elapsed().saturating_sub(r) > Duration::from_secs(15)
            });
            let settled = (reconciles >= f as f64 && still > Duration::from_secs(3))
                || (still > Duration::from_secs(15) && quiet_since_ready);
            if ready.is_some() && leading.is_some() && settled {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "the restarted operator did not settle within {} s ({reconciles} reconciles)",
                    limit.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let cpu = cpu.stop();
        let sample = op.sample();
        let text = op.metrics().await?;
        op.stop();
        let after = resource_versions(api).await?;
        let changed = before
            .iter()
            .filter(|(name, rv)| after.get(*name) != Some(rv))
            .count() as u64;
        let counters = emu.handle.counters();
        let aws_calls_seen: u64 =
            counters.swf.calls.values().sum::<u64>() + counters.ssm.calls.values().sum::<u64>();
        let events_after = events_written(&self.client, ns, "WorkflowSignal").await?;
        Ok((
            Restart {
                finished: f,
                how: format!(
                    "The operator (same identity, so it takes its Lease back at once) started onto {f} finished WorkflowSignals; idle = its reconcile count unchanged for 3 s; status writes = objects whose resourceVersion changed between a list before and a list after."
                ),
                ready_seconds: ready.unwrap_or_default().as_secs_f64(),
                leading_seconds: leading.unwrap_or_default().as_secs_f64(),
                idle_seconds: last_change
                    .saturating_duration_since(op.spawned_at)
                    .as_secs_f64(),
                reconciles: reconciles as u64,
                aws_calls: aws_calls_seen,
                operator_aws_calls: aws_calls(&text).values().sum(),
                status_writes: changed,
                events_written: events_after.saturating_sub(events_before),
                cpu,
            },
            sample,
        ))
    }

    // ------------------------------------------------------------------ instruction counts

    pub async fn instructions(&self) -> anyhow::Result<Instructions> {
        let s = &self.sizes;
        let n = s.instructions.max(1);
        let executions = s.executions.min(n).max(1);
        let version = tokio::process::Command::new("valgrind")
            .arg("--version")
            .output()
            .await
            .context("running valgrind (install it: apt-get install valgrind)")?;
        let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
        let emu = self.env.private_emulator().await;
        let fx = SwfFixture::start(self.env, "bench-instr", executions).await?;
        emu.handle.reset();
        let ns = self.namespace("bench-instr").await;
        let api: Api<WorkflowSignal> = Api::namespaced(self.client.clone(), &ns);
        let out = self.env.state_dir.join(format!("callgrind-{ns}"));
        let wrapper = vec![
            "valgrind".to_string(),
            "--tool=callgrind".into(),
            // Without it one busy thread can starve the others under valgrind's big lock.
            "--fair-sched=yes".into(),
            format!("--callgrind-out-file={}.%p", out.display()),
        ];
        let mut flags = unlimited();
        flags.push(("--concurrency", s.concurrency.to_string()));
        let mut op = Operator::spawn_wrapped(
            &wrapper,
            &self.operator_bin,
            self.env,
            &ns,
            "bench-instr",
            &emu.endpoint,
            &args(&flags),
        )?;
        op.wait_leading(Duration::from_secs(300)).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let tracker = Tracker::start(api.clone()).await?;
        // The idle baseline: what the same 2 s tail costs with nothing to do (timers, the Lease).
        callgrind_control("-z", op.pid).await?;
        tokio::time::sleep(TAIL).await;
        callgrind_control("-d", op.pid).await?;
        callgrind_control("-z", op.pid).await?;
        let cpu = CpuMeter::start(&[("operator", op.pid)]);
        let started = Instant::now();
        let objects = (0..n).map(|i| fx.signal("instr", i, true)).collect();
        create_all(&api, objects, self.setup_concurrency).await?;
        tracker.wait_terminal(n, budget(n, 1.0)).await?;
        let seconds = started.elapsed().as_secs_f64();
        // The receipt and the Delivered Event follow the final status closely: count them too.
        tokio::time::sleep(TAIL).await;
        callgrind_control("-d", op.pid).await?;
        let cpu = cpu.stop();
        let pid = op.pid;
        op.stop();
        let read = |k: u32| -> anyhow::Result<u64> {
            let dump = PathBuf::from(format!("{}.{pid}.{k}", out.display()));
            let text = std::fs::read_to_string(&dump)
                .with_context(|| format!("reading the callgrind dump {}", dump.display()))?;
            callgrind_total(&text).with_context(|| format!("no summary line in {}", dump.display()))
        };
        let idle_instructions = read(1)?;
        let total = read(2)?;
        let instructions = total.saturating_sub(idle_instructions);
        let counters = emu.handle.counters();
        let seen = tracker.all();
        check_all_delivered("instructions", &seen, counters.swf.applied_signals)?;
        let events = writes_on(&self.client, &ns, "WorkflowSignal").await?;
        Ok(Instructions {
            n,
            tool: format!("valgrind --tool=callgrind ({version})"),
            instructions,
            idle_instructions,
            per_signal: instructions as f64 / n as f64,
            seconds,
            cost: cost(
                &seen,
                &counters,
                Service::Swf,
                events,
                "SignalWorkflowExecution",
            ),
            cpu,
        })
    }

    // ------------------------------------------------------------------ 6. aws CLI

    pub async fn cli(&self) -> anyhow::Result<Cli> {
        let n = self.sizes.cli;
        let executions = self
            .sizes
            .executions
            .min(self.sizes.wf_latency.max(1))
            .max(1);
        let emu = self.env.private_emulator().await;
        let fx = SwfFixture::start(self.env, "bench-latency", executions).await?;
        let version = tokio::process::Command::new(&self.aws_cli)
            .arg("--version")
            .output()
            .await
            .with_context(|| format!("running {}", self.aws_cli.display()))?;
        let version = String::from_utf8_lossy(&version.stdout)
            .split_whitespace()
            .next()
            .unwrap_or("aws-cli")
            .to_string();
        emu.handle.reset();
        let cpu = CpuMeter::start(&[]);
        let started = Instant::now();
        let mut times = Vec::with_capacity(n);
        for i in 0..n {
            let (workflow_id, _) = fx.run(i);
            let t0 = Instant::now();
            let out = tokio::process::Command::new(&self.aws_cli)
                .args(["swf", "signal-workflow-execution", "--domain"])
                .arg(&fx.domain)
                .arg("--workflow-id")
                .arg(workflow_id)
                .args(["--signal-name", "approve", "--input"])
                .arg(input(i))
                .args(["--endpoint-url", &emu.endpoint, "--region", REGION])
                .env("AWS_ACCESS_KEY_ID", OPERATOR_ACCESS_KEY)
                .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
                .env("AWS_CONFIG_FILE", "/nonexistent")
                .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .env("AWS_PAGER", "")
                .env_remove("AWS_PROFILE")
                .env_remove("AWS_ENDPOINT_URL")
                .output()
                .await?;
            if !out.status.success() {
                bail!(
                    "aws swf signal-workflow-execution failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            times.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        let total_seconds = started.elapsed().as_secs_f64();
        let cpu = cpu.stop();
        let applied = emu.handle.counters().swf.applied_signals;
        if applied != n as u64 {
            bail!("the aws CLI sent {n} signals, the emulator applied {applied}");
        }
        Ok(Cli {
            n,
            version,
            per_signal: Dist::of(times),
            total_seconds,
            applied,
            operator_per_signal_ms: None,
            ratio_sequential: None,
            ratio_burst: None,
            cpu,
        })
    }
}

type Sample = (Instant, Duration, Seen);

fn latency_of(
    kind: &str,
    samples: &[Sample],
    text: &str,
    service: &str,
    cost: Cost,
    cpu: CpuWindow,
) -> Latency {
    let to_ready = samples
        .iter()
        .map(|(t0, _, s)| since(*t0, s.ready_at))
        .collect();
    let create = samples
        .iter()
        .map(|(_, c, _)| c.as_secs_f64() * 1000.0)
        .collect();
    let to_claim = samples
        .iter()
        .map(|(t0, _, s)| since(*t0, s.sending_at))
        .collect();
    let claim_to_ready = samples
        .iter()
        .map(|(_, _, s)| match (s.sending_at, s.ready_at) {
            (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64() * 1000.0,
            _ => f64::NAN,
        })
        .collect();
    let label = format!("kind=\"{kind}\"");
    Latency {
        kind: kind.to_string(),
        n: samples.len(),
        create_to_ready: Dist::of(to_ready),
        create_call: Dist::of(create),
        create_to_claim: Dist::of(to_claim),
        claim_to_ready: Dist::of(claim_to_ready),
        operator_aws_call_mean_ms: aws_means(text, Some(service)),
        operator_reconcile_mean_ms: histogram_mean_ms(
            text,
            "signalman_reconcile_duration_seconds",
            &[&label],
        ),
        cost,
        cpu,
    }
}

#[allow(clippy::too_many_arguments)]
fn quota_of(
    service: &str,
    operation: &str,
    n: usize,
    bucket: f64,
    rate: f64,
    operator_args: Vec<String>,
    seen: &[(String, Seen)],
    cost: Cost,
    throttled: u64,
    cpu: CpuWindow,
) -> Quota {
    let (first, last) = window(seen);
    let seconds = match (first, last) {
        (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
        _ => f64::NAN,
    };
    let allowed = bucket + rate * seconds;
    let mut ready: Vec<Instant> = seen.iter().filter_map(|(_, s)| s.ready_at).collect();
    ready.sort();
    let b = (bucket as usize).max(1);
    let steady_per_second = match (ready.get(b - 1), ready.last()) {
        (Some(a), Some(z)) if ready.len() > b && z > a => {
            (ready.len() - b) as f64 / z.duration_since(*a).as_secs_f64()
        }
        _ => f64::NAN,
    };
    Quota {
        service: service.to_string(),
        operation: operation.to_string(),
        n,
        bucket,
        refill_per_second: rate,
        operator_args,
        seconds,
        achieved_per_second: n as f64 / seconds,
        allowed_in_window: allowed,
        share_of_quota: n as f64 / allowed,
        steady_per_second,
        throttled,
        cost,
        cpu,
    }
}

/// After the last Ready, before the counters are dumped; the idle baseline is this long too.
const TAIL: Duration = Duration::from_secs(2);

/// `callgrind_control <what> <pid>` (`-z` zero the counters, `-d` dump them).
async fn callgrind_control(what: &str, pid: u32) -> anyhow::Result<()> {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("callgrind_control")
            .arg(what)
            .arg(pid.to_string())
            .output(),
    )
    .await
    .context("callgrind_control did not answer within 60 s")?
    .context("running callgrind_control")?;
    if !out.status.success() {
        bail!(
            "callgrind_control {what} {pid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The instructions a callgrind dump counted: its `summary:` (or `totals:`) line.
fn callgrind_total(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let v = l
            .strip_prefix("summary:")
            .or_else(|| l.strip_prefix("totals:"))?;
        v.split_whitespace().next()?.parse().ok()
    })
}

/// The operator's own limit for one operation, calls per second: the gauge
/// `signalman_aws_rate_limit_per_second{service, operation}` when the operator exports it.
fn operator_limit(text: &str, service: &str, operation: &str) -> Option<f64> {
    let want = [
        format!("service=\"{service}\""),
        format!("operation=\"{operation}\""),
    ];
    text.lines().find_map(|line| {
        let rest = line.strip_prefix("signalman_aws_rate_limit_per_second{")?;
        let (labels, value) = rest.split_once("} ")?;
        want.iter()
            .all(|w| labels.split(',').any(|l| l == w))
            .then(|| value.split_whitespace().next()?.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::{callgrind_total, operator_limit};

    #[test]
    fn the_callgrind_total_is_the_summary_line() {
        let dump = "# callgrind format\nversion: 1\nevents: Ir\nfl=(1) a.rs\nfn=(1) f\n3 12\nsummary: 51536889\ntotals: 51541251\n";
        assert_eq!(callgrind_total(dump), Some(51_536_889));
        assert_eq!(callgrind_total("totals: 7\n"), Some(7));
        assert_eq!(callgrind_total("events: Ir\n"), None);
    }

    #[test]
    fn the_operator_limit_is_read_for_its_service_and_operation_only() {
        let text = "# TYPE signalman_aws_rate_limit_per_second gauge\n\
            signalman_aws_rate_limit_per_second{service=\"ssm\",operation=\"SendAutomationSignal\"} 2.5\n\
            signalman_aws_rate_limit_per_second{service=\"swf\",operation=\"SignalWorkflowExecution\"} 4.25\n";
        assert_eq!(
            operator_limit(text, "swf", "SignalWorkflowExecution"),
            Some(4.25)
        );
        assert_eq!(
            operator_limit(text, "ssm", "SendAutomationSignal"),
            Some(2.5)
        );
        assert_eq!(operator_limit(text, "ssm", "GetAutomationExecution"), None);
        assert_eq!(operator_limit("", "swf", "SignalWorkflowExecution"), None);
    }
}
