//! What every scenario needs around the environment: the CRDs, operator processes (the real
//! binary), scrapes of its metrics, process statistics from /proc, and small HTTP calls.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use signalman_testenv::{aws_env_at, free_port, Env, OPERATOR_ACCESS_KEY};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 request to `base` (`http://host:port`): (status code, body).
pub async fn http(base: &str, method: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let authority = base
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("not an http:// URL: {base}"))?
        .trim_end_matches('/');
    let mut stream = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(authority),
    )
    .await
    .map_err(|_| anyhow!("connecting to {authority} timed out"))??;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
        .await
        .map_err(|_| anyhow!("{method} {base}{path} timed out"))??;
    let raw = String::from_utf8_lossy(&raw);
    let code = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("no status line from {base}{path}"))?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// The value of one series of an OpenMetrics text, e.g. `signalman_leader`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Sum of every series of `name` whose labels contain all of `labels` (`k="v"` strings).
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (lbl, value) = if let Some(rest) = rest.strip_prefix('{') {
                let (lbl, value) = rest.split_once("} ")?;
                (lbl, value)
            } else {
                ("", rest.strip_prefix(' ')?)
            };
            if labels.iter().all(|l| lbl.split(',').any(|x| x == *l)) {
                value.split_whitespace().next()?.parse::<f64>().ok()
            } else {
                None
            }
        })
        .sum()
}

/// `signalman_aws_calls_total` by `service/operation/outcome`.
pub fn aws_calls(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("signalman_aws_calls_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let get = |k: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(k)?.strip_prefix("=\""))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        let n = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        out.insert(
            format!("{}/{}/{}", get("service"), get("operation"), get("outcome")),
            n as u64,
        );
    }
    out
}

/// Mean of a histogram in milliseconds (`<name>_sum / <name>_count` for the given labels).
pub fn histogram_mean_ms(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let sum = metric_sum(text, &format!("{name}_sum"), labels);
    let count = metric_sum(text, &format!("{name}_count"), labels);
    (count > 0.0).then(|| sum / count * 1000.0)
}

/// Resident memory and CPU time of one process, from /proc.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct ProcSample {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
}

pub fn proc_sample(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Some(ProcSample {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
        cpu_ticks: cpu_ticks(pid).unwrap_or(0),
    })
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(") ")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the command name: state(3) ppid(4) ... utime(14) stime(15).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

pub fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// The direct children of this process whose command name starts with `prefix`.
pub fn children_named(prefix: &str) -> Vec<u32> {
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let comm = head.split_once(" (").map(|(_, c)| c).unwrap_or("");
        let ppid = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(me) && comm.starts_with(prefix) {
            out.push(pid);
        }
    }
    out
}

/// Machine-wide CPU time from /proc/stat: (busy ticks, total ticks).
pub fn machine_cpu() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// The operator binary: the real `signalman`, one process per scenario.
pub struct Operator {
    child: Option<Child>,
    pub pid: u32,
    pub base: String,
    pub log: PathBuf,
    pub spawned_at: Instant,
}

impl Operator {
    /// Starts `bin run` watching `ns`, with its leader Lease in `ns`, signing as the operator's
    /// access key against `aws_endpoint`, with `args` appended (e.g. `--swf-rate 50`).
    pub fn spawn(
        bin: &Path,
        env: &Env,
        ns: &str,
        identity: &str,
        aws_endpoint: &str,
        args: &[String],
    ) -> anyhow::Result<Operator> {
        Self::spawn_wrapped(&[], bin, env, ns, identity, aws_endpoint, args)
    }

    /// As [`Operator::spawn`], run through `wrapper` (e.g. `valgrind --tool=callgrind`); the
    /// wrapper must keep the operator's pid (valgrind does).
    pub fn spawn_wrapped(
        wrapper: &[String],
        bin: &Path,
        env: &Env,
        ns: &str,
        identity: &str,
        aws_endpoint: &str,
        args: &[String],
    ) -> anyhow::Result<Operator> {
        let port = free_port()?;
        let log = env.state_dir.join(format!("operator-{ns}-{identity}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.arg("run")
            .args(args)
            .env("SIGNALMAN_KUBECONFIG", &env.kubeconfig)
            .env("SIGNALMAN_NAMESPACES", ns)
            .env("POD_NAME", identity)
            .env("POD_NAMESPACE", ns)
            .env("SIGNALMAN_LEASE_NAME", ns)
            .env(
                "SIGNALMAN_METRICS_BIND_ADDRESS",
                format!("127.0.0.1:{port}"),
            )
            .env_remove("AWS_PROFILE")
            .env_remove("RUST_LOG")
            .envs(aws_env_at(aws_endpoint, OPERATOR_ACCESS_KEY))
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        // SAFETY: the closure only calls prctl, which is async-signal-safe.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Operator {
            pid: child.id(),
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            log,
            spawned_at: Instant::now(),
        })
    }

    /// Waits until `/readyz` answers 200 and this replica leads; returns the time since spawn.
    pub async fn wait_leading(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            if let Ok((200, _)) = http(&self.base, "GET", "/readyz").await {
                if let Ok(text) = self.metrics().await {
                    if metric(&text, "signalman_leader") == Some(1.0) {
                        return Ok(self.spawned_at.elapsed());
                    }
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "the operator was not ready and leading within {timeout:?} (log: {})",
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn metrics(&self) -> anyhow::Result<String> {
        let (code, body) = http(&self.base, "GET", "/metrics").await?;
        if code != 200 {
            bail!("/metrics answered {code}");
        }
        Ok(body)
    }

    pub fn sample(&self) -> ProcSample {
        proc_sample(self.pid).unwrap_or_default()
    }

    /// Fails when the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(child) = self.child.as_mut() {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                bail!(
                    "the operator exited ({status}); log: {}",
                    self.log.display()
                );
            }
        }
        Ok(())
    }

    /// SIGKILL, as an OOM kill or a lost node: no lease release, no draining.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until `/readyz` answers 200 (caches listed; leading or not).
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            if let Ok((200, _)) = http(&self.base, "GET", "/readyz").await {
                return Ok(self.spawned_at.elapsed());
            }
            if Instant::now() > deadline {
                bail!(
                    "the operator was not ready within {timeout:?} (log: {})",
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM (a rolling update), then SIGKILL if it has not exited within 30 s.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Clears every moto backend (`POST /moto-api/reset`): each SWF scenario starts from the same
/// empty moto, so no scenario pays for the history another one left behind.
pub async fn reset_moto(env: &Env) -> anyhow::Result<()> {
    let (code, body) = http(&env.moto_endpoint, "POST", "/moto-api/reset").await?;
    if code != 200 {
        bail!("moto reset answered {code}: {body}");
    }
    Ok(())
}

/// Percentile (nearest rank) of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_series_and_sums() {
        let text = "signalman_leader 1\n\
            signalman_aws_calls_total{service=\"swf\",operation=\"SignalWorkflowExecution\",outcome=\"ok\"} 3\n\
            signalman_aws_calls_total{service=\"swf\",operation=\"ListOpenWorkflowExecutions\",outcome=\"ok\"} 2\n\
            signalman_reconcile_duration_seconds_count{kind=\"WorkflowSignal\"} 5\n\
            signalman_reconcile_duration_seconds_count{kind=\"AutomationSignal\"} 1\n";
        assert_eq!(metric(text, "signalman_leader"), Some(1.0));
        assert_eq!(
            metric_sum(text, "signalman_reconcile_duration_seconds_count", &[]),
            6.0
        );
        assert_eq!(
            metric_sum(
                text,
                "signalman_aws_calls_total",
                &["operation=\"SignalWorkflowExecution\""]
            ),
            3.0
        );
        let calls = aws_calls(text);
        assert_eq!(calls["swf/SignalWorkflowExecution/ok"], 3);
        assert_eq!(calls["swf/ListOpenWorkflowExecutions/ok"], 2);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 90.0), 7.0);
    }
}
