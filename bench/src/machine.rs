//! The machine a run was measured on, and how busy it was while it ran.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::harness::{children_named, clock_ticks_per_second, cpu_ticks, machine_cpu};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub mem_total_mib: u64,
    pub kernel: String,
    pub hostname: String,
}

pub fn describe() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "model name").then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_total_mib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024;
    Machine {
        nproc: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        cpu_model,
        mem_total_mib,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = text
        .split_whitespace()
        .map(|v| v.parse::<f64>().unwrap_or(f64::NAN));
    [
        it.next().unwrap_or(f64::NAN),
        it.next().unwrap_or(f64::NAN),
        it.next().unwrap_or(f64::NAN),
    ]
}

/// Samples of the 1-minute load average and of the machine's busy cores, every few seconds.
#[derive(Clone, Default)]
pub struct LoadSampler {
    samples: Arc<Mutex<Vec<LoadSample>>>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct LoadSample {
    pub at_s: f64,
    pub load1: f64,
    /// Cores busy over the last interval, all processes of the machine.
    pub busy_cores: f64,
}

impl LoadSampler {
    pub fn start(every: Duration) -> LoadSampler {
        let sampler = LoadSampler::default();
        let samples = sampler.samples.clone();
        let began = Instant::now();
        let nproc = describe().nproc as f64;
        tokio::spawn(async move {
            let mut last = machine_cpu();
            loop {
                tokio::time::sleep(every).await;
                let now = machine_cpu();
                let total = now.1.saturating_sub(last.1) as f64;
                let busy = now.0.saturating_sub(last.0) as f64;
                last = now;
                samples.lock().expect("samples").push(LoadSample {
                    at_s: began.elapsed().as_secs_f64(),
                    load1: loadavg()[0],
                    busy_cores: if total > 0.0 {
                        busy / total * nproc
                    } else {
                        0.0
                    },
                });
            }
        });
        sampler
    }

    pub fn samples(&self) -> Vec<LoadSample> {
        self.samples.lock().expect("samples").clone()
    }
}

/// CPU use over one measured window: by the processes of the benchmark, and by everything else
/// on the machine (other people's builds and tests on a shared machine).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CpuWindow {
    pub seconds: f64,
    /// Average cores used over the window, by process.
    pub cores_by_process: BTreeMap<String, f64>,
    /// Average cores busy, whole machine.
    pub machine_busy_cores: f64,
    /// Average cores used by processes that are not part of the benchmark.
    pub others_cores: f64,
    pub load1_at_start: f64,
    pub load1_at_end: f64,
}

pub struct CpuMeter {
    started: Instant,
    machine: (u64, u64),
    procs: Vec<(String, u32, u64)>,
    load1: f64,
}

impl CpuMeter {
    /// Starts counting for this process (the benchmark, with the emulator inside), the
    /// kube-apiserver, moto, and `extra` (the operator).
    pub fn start(extra: &[(&str, u32)]) -> CpuMeter {
        let mut procs: Vec<(String, u32)> =
            vec![("bench+emulator".to_string(), std::process::id())];
        for pid in children_named("signalman-apis") {
            procs.push(("kube-apiserver".into(), pid));
        }
        for pid in children_named("python") {
            procs.push(("moto".into(), pid));
        }
        for (name, pid) in extra {
            procs.push((name.to_string(), *pid));
        }
        CpuMeter {
            started: Instant::now(),
            machine: machine_cpu(),
            procs: procs
                .into_iter()
                .map(|(n, p)| {
                    let t = cpu_ticks(p).unwrap_or(0);
                    (n, p, t)
                })
                .collect(),
            load1: loadavg()[0],
        }
    }

    pub fn stop(&self) -> CpuWindow {
        let seconds = self.started.elapsed().as_secs_f64().max(1e-6);
        let hz = clock_ticks_per_second();
        let mut cores_by_process = BTreeMap::new();
        let mut ours = 0.0;
        for (name, pid, t0) in &self.procs {
            let t1 = cpu_ticks(*pid).unwrap_or(*t0);
            let cores = t1.saturating_sub(*t0) as f64 / hz / seconds;
            ours += cores;
            *cores_by_process.entry(name.clone()).or_insert(0.0) += cores;
        }
        let now = machine_cpu();
        let total = now.1.saturating_sub(self.machine.1) as f64;
        let busy = now.0.saturating_sub(self.machine.0) as f64;
        let nproc = describe().nproc as f64;
        let machine_busy_cores = if total > 0.0 {
            busy / total * nproc
        } else {
            0.0
        };
        CpuWindow {
            seconds,
            cores_by_process,
            machine_busy_cores,
            others_cores: (machine_busy_cores - ours).max(0.0),
            load1_at_start: self.load1,
            load1_at_end: loadavg()[0],
        }
    }
}
