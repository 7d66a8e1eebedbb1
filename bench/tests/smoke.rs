//! CI's small version of the benchmark: every scenario with tiny sizes (`--smoke`: 10 signals
//! per scenario, 5 under the unknown SSM quota, a scale curve of 20 and 50 finished signals; no
//! instruction count, which needs valgrind), on the real local environment and the real operator
//! binary. It fails only on errors (a signal that fails, a wait that times out, a signal AWS
//! applied twice, results that are not written), never on timing: the targets are reported in
//! the results, not asserted.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The operator binary of this profile, built now if it is missing or stale (a no-op in CI,
/// where `cargo test --workspace` has just built it for the operator's own tests).
fn operator_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SIGNALMAN_BENCH_OPERATOR_BIN") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root).args([
        "build",
        "-p",
        "signalman",
        "--bin",
        "signalman",
        "--message-format=json-render-diagnostics",
    ]);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .expect("running cargo build -p signalman");
    assert!(out.status.success(), "cargo build -p signalman failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "signalman")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo reported no signalman executable")
}

#[test]
fn the_benchmark_runs_every_scenario_with_tiny_sizes() {
    let operator = operator_binary();
    let out_dir =
        std::env::temp_dir().join(format!("signalman-bench-smoke-{}", std::process::id()));
    let status = Command::new(env!("CARGO_BIN_EXE_signalman-bench"))
        .args(["--smoke", "--name", "smoke", "--out-dir"])
        .arg(&out_dir)
        .arg("--operator-bin")
        .arg(&operator)
        .stdout(Stdio::null())
        .status()
        .expect("running signalman-bench");
    assert!(
        status.success(),
        "signalman-bench --smoke failed ({status}); its errors are above and in {}",
        out_dir.join("smoke.md").display()
    );

    let json = std::fs::read_to_string(out_dir.join("smoke.json")).expect("smoke.json written");
    let report: serde_json::Value = serde_json::from_str(&json).expect("smoke.json is JSON");
    let md = std::fs::read_to_string(out_dir.join("smoke.md")).expect("smoke.md written");
    assert!(md.contains("## Targets"), "{md}");
    assert_eq!(report["errors"], serde_json::json!([]), "{md}");
    for scenario in [
        "latency",
        "throughput",
        "quota_swf",
        "quota_ssm",
        "unknown_swf",
        "unknown_ssm",
        "memory",
    ] {
        assert!(
            !report[scenario].is_null(),
            "{scenario} missing from the results: {md}"
        );
    }
    // Exactly once, whatever the timing: every delivered signal applied once by AWS.
    let burst = &report["throughput"]["cost"];
    assert_eq!(burst["delivered"], burst["applied"], "{md}");
    // The unknown quota is reported with a timeline and judged against its target.
    for scenario in ["unknown_swf", "unknown_ssm"] {
        let u = &report[scenario];
        assert_eq!(
            u["run"]["cost"]["delivered"], u["run"]["cost"]["applied"],
            "{md}"
        );
        assert!(
            !u["timeline"].as_array().expect("a timeline").is_empty(),
            "{md}"
        );
    }
    assert!(
        md.contains("## 3b. A quota the operator does not know"),
        "{md}"
    );
    assert!(
        md.contains("a quota the operator does not know, swf SignalWorkflowExecution"),
        "{md}"
    );
    // The scale curve: one restart per size (smoke: 20 and 50 finished signals), each with
    // no AWS call and no status write; every row of issue 12's table that these scenarios
    // measure is judged.
    let curve = report["memory"]["curve"].as_array().expect("a scale curve");
    assert_eq!(
        curve
            .iter()
            .map(|p| p["finished"].as_u64().expect("finished"))
            .collect::<Vec<_>>(),
        vec![20, 50],
        "{md}"
    );
    for p in curve {
        assert_eq!(p["restart"]["aws_calls"], 0, "{md}");
        assert_eq!(p["restart"]["status_writes"], 0, "{md}");
    }
    let keys: Vec<&str> = report["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .map(|t| t["key"].as_str().expect("a key"))
        .collect();
    for key in [
        "unknown-swf",
        "unknown-ssm",
        "quota-swf",
        "quota-ssm",
        "cpu-operator",
        "cpu-apiserver",
        "kube-writes",
        "latency-wf",
        "latency-am",
        "restart-100k",
        "throughput-ceiling",
    ] {
        assert!(keys.contains(&key), "no row {key}: {md}");
    }
    assert!(md.contains("## 4 + 5. Scale curve"), "{md}");
    let _ = std::fs::remove_dir_all(&out_dir);
}
