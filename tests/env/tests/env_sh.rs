//! `env.sh` (`signalman-env up --env-file`) as a person uses it: sourced by bash, then the
//! aws CLI v1 pinned for the benchmark (bench/requirements.txt) run as the README shows.
use std::path::PathBuf;
use std::process::Command;

use signalman_testenv::{aws_shell_exports, repo_root, OPERATOR_ACCESS_KEY, REGION};

fn sourced(exports: &str, command: &str) -> std::process::Output {
    let dir = std::env::temp_dir().join(format!("env-sh-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("env-{}.sh", rand::random::<u32>()));
    std::fs::write(&file, exports).unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(format!("source '{}' && {command}", file.display()))
        // Nothing from the caller's AWS set-up: only what env.sh exports counts.
        .env("HOME", &dir)
        .env("AWS_CONFIG_FILE", dir.join("no-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("no-credentials"));
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.output().expect("running bash")
}

#[test]
fn env_sh_exports_the_region_for_the_cli_and_the_sdks() {
    let exports = aws_shell_exports("http://127.0.0.1:1");
    let out = sourced(
        &exports,
        "echo \"$AWS_DEFAULT_REGION $AWS_REGION $AWS_ACCESS_KEY_ID $AWS_ENDPOINT_URL\"",
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{REGION} {REGION} {OPERATOR_ACCESS_KEY} http://127.0.0.1:1")
    );
}

/// The aws CLI v1: `SIGNALMAN_AWS_CLI`, else the benchmark's venv (scripts/bench.sh).
fn aws_cli() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SIGNALMAN_AWS_CLI") {
        return Some(PathBuf::from(p));
    }
    let cli = repo_root().join(".env-cache/bench-venv/bin/aws");
    cli.exists().then_some(cli)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_cli_example_works_after_sourcing_env_sh() {
    let Some(cli) = aws_cli() else {
        eprintln!("SKIPPED: no aws CLI (run scripts/bench.sh once, or set SIGNALMAN_AWS_CLI)");
        return;
    };
    let emu = aws_emulator::start(aws_emulator::EmulatorConfig::default())
        .await
        .unwrap();
    let ssm = signalman_testenv::ssm_client_at(&emu.endpoint, "someone");
    let id = ssm
        .start_automation_execution()
        .document_name("Signalman-Approve")
        .parameters("Approvers", vec![OPERATOR_ACCESS_KEY.to_string()])
        .send()
        .await
        .unwrap()
        .automation_execution_id()
        .unwrap()
        .to_string();
    let bin = cli.parent().unwrap().display().to_string();
    let example = format!(
        "PATH='{bin}':\"$PATH\" aws ssm send-automation-signal --automation-execution-id {id} --signal-type \"Approve\""
    );
    let exports = aws_shell_exports(&emu.endpoint);

    // Without AWS_DEFAULT_REGION the CLI v1 refuses: the export is what makes it work.
    let without: String = exports
        .lines()
        .filter(|l| !l.contains("AWS_DEFAULT_REGION"))
        .map(|l| format!("{l}\n"))
        .collect();
    let out = tokio::task::spawn_blocking({
        let example = example.clone();
        move || sourced(&without, &example)
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("You must specify a region"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = tokio::task::spawn_blocking(move || sourced(&exports, &example))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "aws CLI failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let exec = emu.handle.automation_execution(&id).unwrap();
    assert_eq!(exec["AutomationExecutionStatus"], "Success");
    let signals = emu.handle.counters().ssm.signals;
    assert_eq!(signals.len(), 1);
    assert_eq!(
        signals[0].principal,
        aws_emulator::default_arn(emu.handle.account_id(), OPERATOR_ACCESS_KEY)
    );
}
