//! Amazon SWF: resolve the open run, send `SignalWorkflowExecution`, and verify delivery by
//! reading the run's history for the matching `WorkflowExecutionSignaled` event.
use std::time::Duration;

use aws_sdk_swf::operation::RequestId;
use aws_sdk_swf::types::{
    EventType, ExecutionTimeFilter, WorkflowExecution, WorkflowExecutionFilter,
};
use aws_smithy_types::DateTime;
use k8s_openapi::jiff::Timestamp;

use super::classify::ErrorClass;
use super::clients::{Gate, RegionClients};
use super::sdk_error::failure_from_sdk;
use super::target::{Prepared, SignalTarget};
use crate::api::{SignalStatus, WorkflowSignal};
use crate::delivery::{AwsFailure, SendOutcome, VerifyOutcome};
use crate::metrics::{self, Metrics};

/// The operation that sends a WorkflowSignal.
pub const SEND_OPERATION: &str = "SignalWorkflowExecution";
/// The look-up of the open run, for a WorkflowSignal without `runId`.
pub const LIST_OPEN_OPERATION: &str = "ListOpenWorkflowExecutions";
/// The read that verifies delivery.
pub const HISTORY_OPERATION: &str = "GetWorkflowExecutionHistory";
/// The listing of a workflow's earlier runs, for a signal without runId.
pub const LIST_CLOSED_OPERATION: &str = "ListClosedWorkflowExecutions";
/// The read of a pinned run's start time.
pub const DESCRIBE_OPERATION: &str = "DescribeWorkflowExecution";

/// The open run of a workflow, as ListOpenWorkflowExecutions shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct OpenRun {
    pub run_id: String,
    pub started: Option<Timestamp>,
}

/// `WorkflowSignal` → Amazon SWF `SignalWorkflowExecution`.
pub struct Swf;

impl SignalTarget for Swf {
    type Resource = WorkflowSignal;
    const KIND: &'static str = "WorkflowSignal";
    const SERVICE: &'static str = "swf";
    const SEND_OPERATION: &'static str = SEND_OPERATION;
    const VERIFY_OPERATION: &'static str = HISTORY_OPERATION;

    fn spec_schema() -> &'static serde_json::Value {
        WorkflowSignal::spec_schema()
    }

    fn gate(clients: &RegionClients) -> &std::sync::Arc<Gate> {
        &clients.swf.gate
    }

    fn identity(signal: &WorkflowSignal) -> serde_json::Value {
        let spec = &signal.spec;
        serde_json::json!({
            "region": spec.region(),
            "domain": spec.domain,
            "workflowId": spec.workflow_id,
            "runId": spec.run_id(),
            "signalName": spec.signal_name,
            "input": spec.input,
        })
    }

    fn policy_target(signal: &WorkflowSignal) -> crate::policy::Target<'_> {
        crate::policy::Target::Swf {
            domain: &signal.spec.domain,
            workflow_id: &signal.spec.workflow_id,
        }
    }

    async fn document(
        _signal: &WorkflowSignal,
        _clients: &RegionClients,
        _metrics: &Metrics,
    ) -> Result<Option<String>, AwsFailure> {
        Ok(None)
    }

    fn target_of(_signal: &WorkflowSignal, status: &SignalStatus) -> Option<String> {
        status.run_id.clone()
    }

    /// The run an earlier object's attempt went to, so verification reads its history.
    fn restore_target(signal: &WorkflowSignal, status: &mut SignalStatus, target: &str) {
        if signal.spec.run_id().is_none() && status.run_id.is_none() && !target.is_empty() {
            status.run_id = Some(target.to_string());
        }
    }

    /// Pins the run before the claim, so that verification reads the history of the run that
    /// was signalled: the spec's `runId`, else the run pinned by an earlier claim, else the
    /// workflow's open run now. Before a first send whose run may predate the receipts, reads
    /// the run's history for this very signal.
    async fn prepare(
        signal: &WorkflowSignal,
        claim: &mut SignalStatus,
        _reference: &str,
        unrecorded_before: Option<Timestamp>,
        clients: &RegionClients,
        metrics: &Metrics,
    ) -> Result<Prepared, AwsFailure> {
        let pinned = signal
            .spec
            .run_id
            .clone()
            .filter(|r| !r.is_empty())
            .or_else(|| claim.run_id.clone());
        let (run, started) = match pinned {
            Some(run) => (run, None),
            None => {
                let lookup = resolve_open_run(
                    &clients.swf.read,
                    &signal.spec.domain,
                    &signal.spec.workflow_id,
                );
                let observed = metrics.observe_aws(
                    Self::SERVICE,
                    LIST_OPEN_OPERATION,
                    lookup,
                    metrics::result_outcome,
                );
                let open = clients
                    .swf
                    .gate
                    .read(LIST_OPEN_OPERATION, metrics, observed, |r| r.as_ref().err())
                    .await?;
                (open.run_id, open.started)
            }
        };
        claim.run_id = Some(run.clone());
        let Some(horizon) = unrecorded_before else {
            return Ok(Prepared::Send);
        };
        let key = RunKey::of(clients, signal, &run);
        let started = match started.or_else(|| clients.swf_runs.started(&key)) {
            Some(t) => t,
            None => {
                let describe = run_start(
                    &clients.swf.read,
                    &signal.spec.domain,
                    &signal.spec.workflow_id,
                    &run,
                );
                let t = metrics
                    .observe_aws(
                        Self::SERVICE,
                        DESCRIBE_OPERATION,
                        describe,
                        metrics::result_outcome,
                    )
                    .await?;
                clients.swf_runs.set_started(&key, t);
                t
            }
        };
        // Every delivery to a run younger than the horizon has a receipt.
        if started >= horizon + CLOCK_SKEW {
            return Ok(Prepared::Send);
        }
        let found = run_holds(signal, &run, horizon, clients, metrics).await?;
        if found != Prepared::Send || signal.spec.run_id().is_some() {
            return Ok(found);
        }
        // A signal without runId went to whichever run was open: after continue-as-new, or
        // for a workflowId that recurs, an earlier run may hold it. (Only when the open run
        // predates the horizon too: runs that closed before it opened are older still.)
        for earlier in
            closed_runs_before(signal, horizon + CLOCK_SKEW, started, clients, metrics).await?
        {
            let found = run_holds(signal, &earlier, horizon, clients, metrics).await?;
            if let Prepared::AlreadyDelivered(evidence) = found {
                return Ok(Prepared::AlreadyDelivered(format!(
                    "an earlier run of the workflow: {evidence}"
                )));
            }
        }
        Ok(Prepared::Send)
    }

    async fn send(
        signal: &WorkflowSignal,
        claimed: &SignalStatus,
        _reference: &str,
        _approved_by: Option<&str>,
        clients: &RegionClients,
    ) -> SendOutcome {
        let run_id = claimed.run_id.as_deref().unwrap_or_default();
        let outcome = send(&clients.swf.send, view(signal, run_id)).await;
        // Keep a cached history of the run as it now is (see `RunFacts::signals`).
        let key = RunKey::of(clients, signal, run_id);
        match &outcome {
            SendOutcome::Accepted { .. } => clients.swf_runs.add_signal(
                &key,
                SignaledEvent {
                    at: Timestamp::now(),
                    signal_name: signal.spec.signal_name.clone(),
                    input: signal.spec.input.clone(),
                    external: false,
                },
            ),
            SendOutcome::Failed(f) if f.class == ErrorClass::Ambiguous => {
                clients.swf_runs.forget_signals(&key)
            }
            SendOutcome::Failed(_) => {}
        }
        outcome
    }

    async fn verify(
        signal: &WorkflowSignal,
        status: &SignalStatus,
        _reference: &str,
        since: Timestamp,
        clients: &RegionClients,
        metrics: &Metrics,
    ) -> VerifyOutcome {
        let Some(run_id) = status.run_id.as_deref() else {
            // No run was pinned, so nothing can have been sent.
            return VerifyOutcome::Absent;
        };
        let read = metrics.observe_aws(
            Self::SERVICE,
            HISTORY_OPERATION,
            verify(&clients.swf.read, view(signal, run_id), since),
            metrics::verify_outcome,
        );
        clients
            .swf
            .gate
            .read(HISTORY_OPERATION, metrics, read, VerifyOutcome::failure)
            .await
    }
}

/// What to signal: the spec, with the pinned run.
fn view<'a>(signal: &'a WorkflowSignal, run_id: &'a str) -> SwfSignal<'a> {
    SwfSignal {
        domain: &signal.spec.domain,
        workflow_id: &signal.spec.workflow_id,
        run_id,
        signal_name: &signal.spec.signal_name,
        input: signal.spec.input.as_deref(),
    }
}

/// What to signal, borrowed from a WorkflowSignal's spec (plus the pinned run).
#[derive(Clone, Copy, Debug)]
pub struct SwfSignal<'a> {
    pub domain: &'a str,
    pub workflow_id: &'a str,
    pub run_id: &'a str,
    pub signal_name: &'a str,
    pub input: Option<&'a str>,
}

/// Clocks of this process and of AWS differ; events this much older than the claim still count.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// The filters of a listing of `workflow_id`'s runs: SWF executions last at most a year, so
/// runs started in the last year are every run that can still be open or recently closed.
fn last_years_runs(
    workflow_id: &str,
) -> Result<(ExecutionTimeFilter, WorkflowExecutionFilter), AwsFailure> {
    let oldest = DateTime::from_secs(Timestamp::now().as_second() - 366 * 24 * 3600);
    let start_filter = ExecutionTimeFilter::builder()
        .oldest_date(oldest)
        .build()
        .map_err(build_failure)?;
    let execution_filter = WorkflowExecutionFilter::builder()
        .workflow_id(workflow_id)
        .build()
        .map_err(build_failure)?;
    Ok((start_filter, execution_filter))
}

/// The run a listed execution is, if it is one of `workflow_id`'s: the filter is applied here
/// too, since not every SWF implementation honours executionFilter.
fn run_of(info: &aws_sdk_swf::types::WorkflowExecutionInfo, workflow_id: &str) -> Option<OpenRun> {
    let execution = info.execution()?;
    (execution.workflow_id() == workflow_id).then(|| OpenRun {
        run_id: execution.run_id().to_string(),
        started: Some(to_timestamp(info.start_timestamp())),
    })
}

/// Finds the current open run of `workflow_id` (the run a signal without runId goes to), so the
/// claim can pin it and a later verification reads the right history.
pub async fn resolve_open_run(
    client: &aws_sdk_swf::Client,
    domain: &str,
    workflow_id: &str,
) -> Result<OpenRun, AwsFailure> {
    let (start_filter, execution_filter) = last_years_runs(workflow_id)?;
    let mut token: Option<String> = None;
    loop {
        let page = client
            .list_open_workflow_executions()
            .domain(domain)
            .start_time_filter(start_filter.clone())
            .execution_filter(execution_filter.clone())
            .maximum_page_size(1000)
            .set_next_page_token(token.take())
            .send()
            .await
            .map_err(|e| failure_from_sdk(&e))?;
        let found = page
            .execution_infos()
            .iter()
            .find_map(|info| run_of(info, workflow_id));
        match (found, page.next_page_token()) {
            (Some(run), _) => return Ok(run),
            (None, Some(next)) if !next.is_empty() => token = Some(next.to_string()),
            (None, _) => break,
        }
    }
    None.ok_or_else(|| AwsFailure {
        class: ErrorClass::NotFound,
        code: Some("UnknownResourceFault".into()),
        message: "no open run of the workflow".into(),
    })
}

/// Whether `events` (a run's signals) hold `target`'s signal: then it was delivered before.
fn already_in(events: &[SignaledEvent], target: &SwfSignal<'_>) -> Prepared {
    match holds_signal(events, target, Timestamp::UNIX_EPOCH) {
        Some(at) => Prepared::AlreadyDelivered(format!(
            "the run's history already holds this signal, recorded at {}",
            at.round(k8s_openapi::jiff::Unit::Second).unwrap_or(at)
        )),
        None => Prepared::Send,
    }
}

/// Whether run `run_id`'s history holds this signal: one history read per run, cached (see
/// [`RunFacts::signals`]).
async fn run_holds(
    signal: &WorkflowSignal,
    run_id: &str,
    horizon: Timestamp,
    clients: &RegionClients,
    metrics: &Metrics,
) -> Result<Prepared, AwsFailure> {
    let key = RunKey::of(clients, signal, run_id);
    let target = view(signal, run_id);
    if let Some(events) = clients.swf_runs.signals(&key, horizon) {
        return Ok(already_in(&events, &target));
    }
    let history = clients.swf.gate.read(
        HISTORY_OPERATION,
        metrics,
        metrics.observe_aws(
            Swf::SERVICE,
            HISTORY_OPERATION,
            signals_of_run(&clients.swf.read, target),
            metrics::result_outcome,
        ),
        |r: &Result<Vec<SignaledEvent>, AwsFailure>| r.as_ref().err(),
    );
    let read_at = Timestamp::now();
    let events = history.await?;
    let found = already_in(&events, &target);
    clients.swf_runs.set_signals(&key, read_at, events);
    Ok(found)
}

/// Closed runs of the workflow started before `before`, newest first, at most
/// [`MAX_EARLIER_RUNS`] (ListClosedWorkflowExecutions over the year an SWF run can last). The
/// listing is cached per workflow while it was read after `current_started` (the open run's
/// start): every run closed before that one opened is in it.
async fn closed_runs_before(
    signal: &WorkflowSignal,
    before: Timestamp,
    current_started: Timestamp,
    clients: &RegionClients,
    metrics: &Metrics,
) -> Result<Vec<String>, AwsFailure> {
    let key = RunKey::of(clients, signal, "");
    if let Some(runs) = clients.swf_runs.closed_runs(&key, current_started) {
        return Ok(older_than(runs, before));
    }
    let read_at = Timestamp::now();
    let list = closed_runs(
        &clients.swf.read,
        &signal.spec.domain,
        &signal.spec.workflow_id,
    );
    let runs = clients
        .swf
        .gate
        .read(
            LIST_CLOSED_OPERATION,
            metrics,
            metrics.observe_aws(
                Swf::SERVICE,
                LIST_CLOSED_OPERATION,
                list,
                metrics::result_outcome,
            ),
            |r| r.as_ref().err(),
        )
        .await?;
    clients
        .swf_runs
        .set_closed_runs(&key, read_at, runs.clone());
    Ok(older_than(runs, before))
}

fn older_than(runs: Vec<OpenRun>, before: Timestamp) -> Vec<String> {
    runs.into_iter()
        .filter(|r| r.started.is_none_or(|t| t < before))
        .map(|r| r.run_id)
        .collect()
}

/// Earlier runs of one workflow the pre-send check reads at most.
const MAX_EARLIER_RUNS: usize = 100;

/// The workflow's closed runs of the last year, newest first, at most [`MAX_EARLIER_RUNS`].
pub async fn closed_runs(
    client: &aws_sdk_swf::Client,
    domain: &str,
    workflow_id: &str,
) -> Result<Vec<OpenRun>, AwsFailure> {
    let (start_filter, execution_filter) = last_years_runs(workflow_id)?;
    let mut runs = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = client
            .list_closed_workflow_executions()
            .domain(domain)
            .start_time_filter(start_filter.clone())
            .execution_filter(execution_filter.clone())
            .maximum_page_size(100)
            .set_next_page_token(token.take())
            .send()
            .await
            .map_err(|e| failure_from_sdk(&e))?;
        runs.extend(
            page.execution_infos()
                .iter()
                .filter_map(|info| run_of(info, workflow_id)),
        );
        match page.next_page_token() {
            Some(next) if !next.is_empty() && runs.len() < MAX_EARLIER_RUNS => {
                token = Some(next.to_string())
            }
            _ => break,
        }
    }
    runs.sort_by_key(|r| std::cmp::Reverse(r.started));
    runs.truncate(MAX_EARLIER_RUNS);
    Ok(runs)
}

/// A run, as the pre-send check caches what it learned about it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RunKey {
    region: String,
    domain: String,
    workflow_id: String,
    run_id: String,
}

impl RunKey {
    fn of(clients: &RegionClients, signal: &WorkflowSignal, run_id: &str) -> Self {
        RunKey {
            region: clients.region.clone(),
            domain: signal.spec.domain.clone(),
            workflow_id: signal.spec.workflow_id.clone(),
            run_id: run_id.to_string(),
        }
    }
}

#[derive(Default)]
pub struct RunFacts {
    started: Option<Timestamp>,
    /// The run's signals as one history read showed them (and when it was read), plus those
    /// this process delivered since (a send of unknown fate drops it). A read made after the
    /// receipt horizon holds every delivery that can lack a receipt, so it serves every later
    /// first send to the same run: one read per run, not per signal. A read from before the
    /// horizon does not.
    signals: Option<(Timestamp, Vec<SignaledEvent>)>,
    /// Under the workflow's key (empty run id): its closed runs, and when they were listed.
    closed: Option<(Timestamp, Vec<OpenRun>)>,
}

/// What the pre-send check learned about runs older than the receipts, bounded. One per
/// identity's clients ([`RegionClients::swf_runs`]): what one identity read, it keeps.
#[derive(Default)]
pub struct RunCache(std::sync::Mutex<std::collections::HashMap<RunKey, RunFacts>>);

/// Runs kept at most; the map starts over when full.
const MAX_CACHED_RUNS: usize = 1024;

impl RunCache {
    fn with<R>(&self, f: impl FnOnce(&mut std::collections::HashMap<RunKey, RunFacts>) -> R) -> R {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_CACHED_RUNS {
            map.clear();
        }
        f(&mut map)
    }
    fn started(&self, key: &RunKey) -> Option<Timestamp> {
        self.with(|m| m.get(key).and_then(|f| f.started))
    }
    fn set_started(&self, key: &RunKey, t: Timestamp) {
        self.with(|m| m.entry(key.clone()).or_default().started = Some(t));
    }
    fn signals(&self, key: &RunKey, horizon: Timestamp) -> Option<Vec<SignaledEvent>> {
        self.with(|m| {
            m.get(key)
                .and_then(|f| f.signals.as_ref())
                .filter(|(read_at, _)| *read_at >= horizon)
                .map(|(_, events)| events.clone())
        })
    }
    fn closed_runs(&self, key: &RunKey, listed_after: Timestamp) -> Option<Vec<OpenRun>> {
        self.with(|m| {
            m.get(key)
                .and_then(|f| f.closed.as_ref())
                .filter(|(read_at, _)| *read_at > listed_after)
                .map(|(_, runs)| runs.clone())
        })
    }
    fn set_closed_runs(&self, key: &RunKey, read_at: Timestamp, runs: Vec<OpenRun>) {
        self.with(|m| m.entry(key.clone()).or_default().closed = Some((read_at, runs)));
    }
    /// A signal this process delivered to the run since the history was read.
    fn add_signal(&self, key: &RunKey, event: SignaledEvent) {
        self.with(|m| {
            if let Some((_, events)) = m.get_mut(key).and_then(|f| f.signals.as_mut()) {
                events.push(event);
            }
        });
    }
    /// A send whose fate is unknown: the cached history can no longer tell.
    fn forget_signals(&self, key: &RunKey) {
        self.with(|m| {
            if let Some(f) = m.get_mut(key) {
                f.signals = None;
            }
        });
    }
    /// Keeps a history read, together with what was known before: reads of the same run may
    /// finish out of order, and a read may not show yet a send this process made (AWS's read
    /// lag), so nothing already known is dropped.
    fn set_signals(&self, key: &RunKey, read_at: Timestamp, mut events: Vec<SignaledEvent>) {
        self.with(|m| {
            let facts = m.entry(key.clone()).or_default();
            let read_at = match facts.signals.take() {
                Some((before, known)) => {
                    for e in known {
                        if !events.contains(&e) {
                            events.push(e);
                        }
                    }
                    before.max(read_at)
                }
                None => read_at,
            };
            facts.signals = Some((read_at, events));
        });
    }
}

/// Every signal in the run's history (all pages).
pub async fn signals_of_run(
    client: &aws_sdk_swf::Client,
    run: SwfSignal<'_>,
) -> Result<Vec<SignaledEvent>, AwsFailure> {
    let execution = WorkflowExecution::builder()
        .workflow_id(run.workflow_id)
        .run_id(run.run_id)
        .build()
        .map_err(build_failure)?;
    let mut found = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = client
            .get_workflow_execution_history()
            .domain(run.domain)
            .execution(execution.clone())
            .maximum_page_size(1000)
            .set_next_page_token(token.take())
            .send()
            .await
            .map_err(|e| failure_from_sdk(&e))?;
        found.extend(signaled_events(page.events()));
        match page.next_page_token() {
            Some(next) if !next.is_empty() => token = Some(next.to_string()),
            _ => return Ok(found),
        }
    }
}

fn signaled_events(events: &[aws_sdk_swf::types::HistoryEvent]) -> Vec<SignaledEvent> {
    events
        .iter()
        .filter(|e| e.event_type() == &EventType::WorkflowExecutionSignaled)
        .filter_map(|e| {
            let attrs = e.workflow_execution_signaled_event_attributes()?;
            Some(SignaledEvent {
                at: to_timestamp(e.event_timestamp()),
                signal_name: attrs.signal_name().to_string(),
                input: attrs.input().map(str::to_string),
                external: attrs.external_workflow_execution().is_some(),
            })
        })
        .collect()
}

/// When the run started (DescribeWorkflowExecution).
pub async fn run_start(
    client: &aws_sdk_swf::Client,
    domain: &str,
    workflow_id: &str,
    run_id: &str,
) -> Result<Timestamp, AwsFailure> {
    let execution = WorkflowExecution::builder()
        .workflow_id(workflow_id)
        .run_id(run_id)
        .build()
        .map_err(build_failure)?;
    let out = client
        .describe_workflow_execution()
        .domain(domain)
        .execution(execution)
        .send()
        .await
        .map_err(|e| failure_from_sdk(&e))?;
    Ok(out
        .execution_info()
        .map(|info| to_timestamp(info.start_timestamp()))
        .unwrap_or(Timestamp::UNIX_EPOCH))
}

/// One `SignalWorkflowExecution` call on the send client (no SDK retries).
pub async fn send(client: &aws_sdk_swf::Client, signal: SwfSignal<'_>) -> SendOutcome {
    let result = client
        .signal_workflow_execution()
        .domain(signal.domain)
        .workflow_id(signal.workflow_id)
        .run_id(signal.run_id)
        .signal_name(signal.signal_name)
        .set_input(signal.input.map(str::to_string))
        .send()
        .await;
    match result {
        Ok(out) => SendOutcome::Accepted {
            request_id: out.request_id().map(str::to_string),
            run_id: Some(signal.run_id.to_string()),
        },
        Err(e) => SendOutcome::Failed(failure_from_sdk(&e)),
    }
}

/// A `WorkflowExecutionSignaled` event reduced to what verification compares.
#[derive(Clone, Debug, PartialEq)]
pub struct SignaledEvent {
    pub at: Timestamp,
    pub signal_name: String,
    pub input: Option<String>,
    /// Sent by another workflow (SignalExternalWorkflowExecution), so not by us.
    pub external: bool,
}

/// Whether `events` hold our signal: same name and input, not from another workflow, recorded
/// at or after `since` less the clock skew. An absent input and an empty one are the same on
/// the wire only if AWS recorded them the same, so they are compared as given.
pub fn holds_signal(
    events: &[SignaledEvent],
    signal: &SwfSignal<'_>,
    since: Timestamp,
) -> Option<Timestamp> {
    let earliest = since - CLOCK_SKEW;
    events
        .iter()
        .find(|e| {
            !e.external
                && e.at >= earliest
                && e.signal_name == signal.signal_name
                && e.input.as_deref().filter(|s| !s.is_empty())
                    == signal.input.filter(|s| !s.is_empty())
        })
        .map(|e| e.at)
}

/// Reads the run's history newest first until it reaches events older than `since` (less the
/// skew) and says whether our signal is there. Pages are scanned whole, so a server that ignores
/// `reverseOrder` is still read correctly.
pub async fn verify(
    client: &aws_sdk_swf::Client,
    signal: SwfSignal<'_>,
    since: Timestamp,
) -> VerifyOutcome {
    let earliest = since - CLOCK_SKEW;
    let execution = match WorkflowExecution::builder()
        .workflow_id(signal.workflow_id)
        .run_id(signal.run_id)
        .build()
    {
        Ok(e) => e,
        Err(e) => return VerifyOutcome::Failed(build_failure(e)),
    };
    let mut token: Option<String> = None;
    loop {
        let result = client
            .get_workflow_execution_history()
            .domain(signal.domain)
            .execution(execution.clone())
            .reverse_order(true)
            .maximum_page_size(1000)
            .set_next_page_token(token.take())
            .send()
            .await;
        let page = match result {
            Ok(page) => page,
            Err(e) => {
                let failure = failure_from_sdk(&e);
                return match failure.class {
                    ErrorClass::NotFound => VerifyOutcome::NotFound,
                    _ => VerifyOutcome::Failed(failure),
                };
            }
        };
        let events = signaled_events(page.events());
        if let Some(at) = holds_signal(&events, &signal, since) {
            return VerifyOutcome::DeliveredAt(at);
        }
        let page_all_older = page
            .events()
            .iter()
            .all(|e| to_timestamp(e.event_timestamp()) < earliest);
        match page.next_page_token() {
            Some(next) if !page_all_older && !next.is_empty() => token = Some(next.to_string()),
            _ => return VerifyOutcome::Absent,
        }
    }
}

fn to_timestamp(t: &DateTime) -> Timestamp {
    Timestamp::new(t.secs(), t.subsec_nanos() as i32).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn build_failure(e: aws_sdk_swf::error::BuildError) -> AwsFailure {
    AwsFailure {
        class: ErrorClass::Invalid,
        code: Some("ClientValidation".into()),
        message: format!("request not built: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signal<'a>(input: Option<&'a str>) -> SwfSignal<'a> {
        SwfSignal {
            domain: "d",
            workflow_id: "w",
            run_id: "r",
            signal_name: "approve",
            input,
        }
    }

    fn event(at: Timestamp, name: &str, input: Option<&str>, external: bool) -> SignaledEvent {
        SignaledEvent {
            at,
            signal_name: name.into(),
            input: input.map(Into::into),
            external,
        }
    }

    #[test]
    fn finds_the_same_signal_after_the_claim() {
        let claim: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let at = claim + Duration::from_secs(1);
        assert!(holds_signal(
            &[event(at, "approve", Some("x"), false)],
            &signal(Some("x")),
            claim
        )
        .is_some());
        assert!(holds_signal(&[event(at, "approve", None, false)], &signal(None), claim).is_some());
    }

    #[test]
    fn ignores_other_names_inputs_senders_and_old_events() {
        let claim: Timestamp = "2026-01-01T00:10:00Z".parse().unwrap();
        let at = claim + Duration::from_secs(1);
        assert!(holds_signal(
            &[event(at, "reject", Some("x"), false)],
            &signal(Some("x")),
            claim
        )
        .is_none());
        assert!(holds_signal(
            &[event(at, "approve", Some("y"), false)],
            &signal(Some("x")),
            claim
        )
        .is_none());
        assert!(holds_signal(
            &[event(at, "approve", None, false)],
            &signal(Some("x")),
            claim
        )
        .is_none());
        assert!(holds_signal(
            &[event(at, "approve", Some("x"), true)],
            &signal(Some("x")),
            claim
        )
        .is_none());
        let old = claim - CLOCK_SKEW - Duration::from_secs(1);
        assert!(holds_signal(
            &[event(old, "approve", Some("x"), false)],
            &signal(Some("x")),
            claim
        )
        .is_none());
    }

    #[test]
    fn allows_for_clock_skew() {
        let claim: Timestamp = "2026-01-01T00:10:00Z".parse().unwrap();
        let slightly_before = claim - Duration::from_secs(30);
        assert!(holds_signal(
            &[event(slightly_before, "approve", None, false)],
            &signal(None),
            claim
        )
        .is_some());
    }
}
