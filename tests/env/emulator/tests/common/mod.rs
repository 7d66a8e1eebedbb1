//! Helpers shared by the emulator's integration tests: an emulator per test, real SDK
//! clients with retries off, raw HTTP for the control API, and moto when it is installed.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_emulator::{EmulatorConfig, RunningEmulator};
use aws_sdk_ssm::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ssm::types::{AutomationExecution, ExecutionMode, SignalType, StepExecution};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const ACCOUNT: &str = "123456789012";

pub async fn emulator() -> RunningEmulator {
    emulator_with(None).await
}

pub async fn emulator_with(swf_upstream: Option<String>) -> RunningEmulator {
    aws_emulator::start(EmulatorConfig {
        swf_upstream,
        ..EmulatorConfig::default()
    })
    .await
    .expect("the emulator starts")
}

/// A real SSM client signing as `access_key`, SDK retries disabled.
pub fn ssm(endpoint: &str, access_key: &str) -> aws_sdk_ssm::Client {
    use aws_sdk_ssm::config::{retry::RetryConfig, BehaviorVersion, Credentials, Region};
    let config = aws_sdk_ssm::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(
            access_key,
            "not-a-secret",
            None,
            None,
            "test",
        ))
        .retry_config(RetryConfig::disabled())
        .build();
    aws_sdk_ssm::Client::from_conf(config)
}

/// A real SWF client, SDK retries disabled.
pub fn swf(endpoint: &str) -> aws_sdk_swf::Client {
    use aws_sdk_swf::config::{retry::RetryConfig, BehaviorVersion, Credentials, Region};
    let config = aws_sdk_swf::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(
            "swf-tester",
            "not-a-secret",
            None,
            None,
            "test",
        ))
        .retry_config(RetryConfig::disabled())
        .build();
    aws_sdk_swf::Client::from_conf(config)
}

pub fn user_arn(name: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:user/{name}")
}

/// The AWS error code of a failed call (panics on success or on an error without a code).
pub fn code_of<T: std::fmt::Debug, E, R>(result: Result<T, SdkError<E, R>>) -> String
where
    E: ProvideErrorMetadata + std::fmt::Debug,
    R: std::fmt::Debug,
{
    match result {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => match e.code() {
            Some(code) => code.to_string(),
            None => panic!("an error without an AWS code: {e:?}"),
        },
    }
}

/// Starts `document` with `params` and returns the execution id.
pub async fn start(
    client: &aws_sdk_ssm::Client,
    document: &str,
    params: &[(&str, &[&str])],
    mode: ExecutionMode,
) -> String {
    let mut req = client
        .start_automation_execution()
        .document_name(document)
        .mode(mode);
    for (k, vs) in params {
        req = req.parameters(*k, vs.iter().map(|v| v.to_string()).collect());
    }
    let out = req.send().await.expect("StartAutomationExecution");
    let id = out
        .automation_execution_id()
        .expect("an execution id")
        .to_string();
    assert_eq!(id.len(), 36);
    id
}

pub async fn get(client: &aws_sdk_ssm::Client, id: &str) -> AutomationExecution {
    client
        .get_automation_execution()
        .automation_execution_id(id)
        .send()
        .await
        .expect("GetAutomationExecution")
        .automation_execution()
        .expect("an execution")
        .clone()
}

pub fn status(exec: &AutomationExecution) -> &str {
    exec.automation_execution_status()
        .map(|s| s.as_str())
        .unwrap_or("")
}

/// The latest started execution of step `name`.
pub fn step<'a>(exec: &'a AutomationExecution, name: &str) -> &'a StepExecution {
    exec.step_executions()
        .iter()
        .rev()
        .find(|s| s.step_name() == Some(name) && s.step_execution_id().is_some())
        .unwrap_or_else(|| panic!("no started step {name} in {exec:?}"))
}

pub fn step_status<'a>(exec: &'a AutomationExecution, name: &str) -> &'a str {
    step(exec, name)
        .step_status()
        .map(|s| s.as_str())
        .unwrap_or("")
}

pub fn output<'a>(step: &'a StepExecution, key: &str) -> Vec<&'a str> {
    step.outputs()
        .and_then(|o| o.get(key))
        .map(|v| v.iter().map(String::as_str).collect())
        .unwrap_or_default()
}

pub async fn send(
    client: &aws_sdk_ssm::Client,
    id: &str,
    signal: SignalType,
    payload: &[(&str, &str)],
) -> Result<
    aws_sdk_ssm::operation::send_automation_signal::SendAutomationSignalOutput,
    SdkError<
        aws_sdk_ssm::operation::send_automation_signal::SendAutomationSignalError,
        aws_sdk_ssm::config::http::HttpResponse,
    >,
> {
    let mut req = client
        .send_automation_signal()
        .automation_execution_id(id)
        .signal_type(signal);
    for (k, v) in payload {
        req = req.payload(*k, vec![v.to_string()]);
    }
    req.send().await
}

/// A bare HTTP/1.1 exchange (Connection: close): (status, body).
pub async fn http(
    endpoint: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let addr = endpoint.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

pub async fn http_json(
    endpoint: &str,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let (status, text) = http(
        endpoint,
        method,
        path,
        &[("Content-Type", "application/json")],
        body,
    )
    .await;
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")),
    )
}

/// The python of a venv with moto: `SIGNALMAN_MOTO_PYTHON`, else the test environment's venv.
pub fn moto_python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SIGNALMAN_MOTO_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..");
    let home = std::env::var_os("SIGNALMAN_ENV_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join(".env-cache"));
    let python = home.join("venv/bin/python");
    python.exists().then_some(python)
}

/// moto's server started with `tests/env/moto/launch.py`; killed on drop.
pub struct Moto {
    child: Child,
    pub url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_moto(python: &Path) -> Moto {
    let launcher = Path::new(env!("CARGO_MANIFEST_DIR")).join("../moto/launch.py");
    let mut child = Command::new(python)
        .arg(&launcher)
        .args(["--host", "127.0.0.1", "--port", "0"])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {} {}: {e}", python.display(), launcher.display()));
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("ready ") {
                let _ = tx.send(url.trim().to_string());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(url) => Moto { child, url },
        Err(_) => {
            let _ = child.kill();
            panic!("moto did not print its ready line within 120s");
        }
    }
}

/// The moto venv's python, or `None` (with a message) when there is none outside CI.
pub fn python_or_skip(test: &str) -> Option<PathBuf> {
    let python = moto_python();
    // In CI the venv is part of the set-up: a missing one is a failure, not a skip.
    assert!(
        python.is_some() || std::env::var_os("CI").is_none(),
        "{test}: no moto venv in CI (tests/env/setup.sh should have made .env-cache/venv)"
    );
    if python.is_none() {
        eprintln!(
            "SKIPPED {test}: no moto venv (set SIGNALMAN_MOTO_PYTHON, or run tests/env/setup.sh to create .env-cache/venv)"
        );
    }
    python
}

/// Registers `domain` and the workflow type `order`/`1`.
pub async fn register_swf(client: &aws_sdk_swf::Client, domain: &str) {
    use aws_sdk_swf::types::{ChildPolicy, TaskList};
    client
        .register_domain()
        .name(domain)
        .workflow_execution_retention_period_in_days("1")
        .send()
        .await
        .expect("RegisterDomain");
    client
        .register_workflow_type()
        .domain(domain)
        .name("order")
        .version("1")
        .default_task_list(TaskList::builder().name("orders").build().unwrap())
        .default_execution_start_to_close_timeout("3600")
        .default_task_start_to_close_timeout("60")
        .default_child_policy(ChildPolicy::Terminate)
        .send()
        .await
        .expect("RegisterWorkflowType");
}

/// Starts workflow `workflow_id` of type `order`/`1`.
pub async fn start_workflow(
    client: &aws_sdk_swf::Client,
    domain: &str,
    workflow_id: &str,
) -> aws_sdk_swf::types::WorkflowExecution {
    use aws_sdk_swf::types::{WorkflowExecution, WorkflowType};
    let run = client
        .start_workflow_execution()
        .domain(domain)
        .workflow_id(workflow_id)
        .workflow_type(
            WorkflowType::builder()
                .name("order")
                .version("1")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("StartWorkflowExecution");
    WorkflowExecution::builder()
        .workflow_id(workflow_id)
        .run_id(run.run_id().expect("a run id"))
        .build()
        .unwrap()
}

/// The names of the WorkflowExecutionSignaled events of one history page.
pub fn signal_names(events: &[aws_sdk_swf::types::HistoryEvent]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.event_type() == &aws_sdk_swf::types::EventType::WorkflowExecutionSignaled)
        .map(|e| {
            e.workflow_execution_signaled_event_attributes()
                .expect("signal attributes")
                .signal_name()
                .to_string()
        })
        .collect()
}

/// The whole history as one call through `client` returns it (the emulator's first page
/// when `client` points at the emulator; everything when it points at moto).
pub async fn history_page(
    client: &aws_sdk_swf::Client,
    domain: &str,
    execution: &aws_sdk_swf::types::WorkflowExecution,
) -> Vec<aws_sdk_swf::types::HistoryEvent> {
    client
        .get_workflow_execution_history()
        .domain(domain)
        .execution(execution.clone())
        .send()
        .await
        .expect("GetWorkflowExecutionHistory")
        .events()
        .to_vec()
}
