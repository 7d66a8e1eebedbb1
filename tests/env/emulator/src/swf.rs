//! SWF: every call is forwarded to moto and moto's answer returned as it is, except that
//! the proxy checks the model's required members (moto answers 500 without them), pages
//! GetWorkflowExecutionHistory as SWF does (moto returns every event at once) and, in lag
//! mode, hides signals from histories until their delay has passed.
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderName;
use hyper::http::request::Parts;
use hyper::http::response;
use hyper::{Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::faults::SwfSignal;
use crate::response::{aws_error, json_response, Resp, SWF_CONTENT_TYPE};
use crate::{lock, Shared};

pub(crate) type UpstreamClient = Client<HttpConnector, Full<Bytes>>;

pub(crate) fn client() -> UpstreamClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// The documented default and maximum of `maximumPageSize`.
pub(crate) const MAX_PAGE_SIZE: u64 = 1000;

const VALIDATION: &str = "com.amazon.coral.validate#ValidationException";

/// Headers that belong to one connection, not to the message.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
    )
}

fn upstream_failure(message: String) -> Resp {
    aws_error(
        SWF_CONTENT_TYPE,
        &ApiError {
            status: 502,
            code: "com.amazon.coral.service#InternalFailure".into(),
            message,
        },
    )
}

fn validation(message: impl Into<String>) -> Resp {
    aws_error(SWF_CONTENT_TYPE, &ApiError::client(VALIDATION, message))
}

/// Required members of the operations the tests and the operator use, from the service
/// model (`a.b`: member `b` of structure `a`).
fn required_members(op: &str) -> &'static [&'static str] {
    match op {
        "SignalWorkflowExecution" => &["domain", "workflowId", "signalName"],
        "GetWorkflowExecutionHistory" | "DescribeWorkflowExecution" => &[
            "domain",
            "execution",
            "execution.workflowId",
            "execution.runId",
        ],
        "StartWorkflowExecution" => &[
            "domain",
            "workflowId",
            "workflowType",
            "workflowType.name",
            "workflowType.version",
        ],
        "TerminateWorkflowExecution" | "RequestCancelWorkflowExecution" => {
            &["domain", "workflowId"]
        }
        "ListOpenWorkflowExecutions" | "CountOpenWorkflowExecutions" => {
            &["domain", "startTimeFilter", "startTimeFilter.oldestDate"]
        }
        "ListClosedWorkflowExecutions" | "CountClosedWorkflowExecutions" => &["domain"],
        "RegisterDomain" => &["name", "workflowExecutionRetentionPeriodInDays"],
        "DescribeDomain" | "DeprecateDomain" | "UndeprecateDomain" => &["name"],
        "RegisterWorkflowType" | "RegisterActivityType" => &["domain", "name", "version"],
        "PollForDecisionTask" | "PollForActivityTask" => &["domain", "taskList", "taskList.name"],
        "RespondDecisionTaskCompleted"
        | "RespondActivityTaskCompleted"
        | "RespondActivityTaskFailed"
        | "RespondActivityTaskCanceled"
        | "RecordActivityTaskHeartbeat" => &["taskToken"],
        _ => &[],
    }
}

/// AWS's wording: "1 validation error detected: Value null at 'signalName' failed to satisfy
/// constraint: Member must not be null" (errors joined with "; ").
fn missing_members(op: &str, body: &Value) -> Option<String> {
    let missing: Vec<String> = required_members(op)
        .iter()
        .filter(|path| {
            let (parent, member) = match path.split_once('.') {
                Some((p, m)) => (body.get(p), m),
                None => (Some(body), **path),
            };
            // A missing parent is reported once, for the parent itself.
            parent.is_some_and(|p| !p.is_null() && p.get(member).is_none_or(Value::is_null))
        })
        .map(|path| {
            format!("Value null at '{path}' failed to satisfy constraint: Member must not be null")
        })
        .collect();
    match missing.len() {
        0 => None,
        1 => Some(format!("1 validation error detected: {}", missing[0])),
        n => Some(format!(
            "{n} validation errors detected: {}",
            missing.join("; ")
        )),
    }
}

/// One SWF call through the proxy. `lag`: how long a signal stays out of histories.
pub(crate) async fn call(
    shared: &Shared,
    op: &str,
    parts: &Parts,
    body: Bytes,
    lag: Option<Duration>,
) -> Resp {
    if shared.swf_upstream.is_none() {
        return aws_error(
            SWF_CONTENT_TYPE,
            &ApiError::server(
                "com.amazon.coral.service#InternalFailure",
                "aws-emu: no --swf-upstream configured",
            ),
        );
    }
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    // A body that is not an object is moto's to refuse, as before.
    if request.is_object() {
        if let Some(message) = missing_members(op, &request) {
            return validation(message);
        }
    }
    if op == "GetWorkflowExecutionHistory" && request.is_object() {
        return history(shared, parts, &request).await;
    }
    let (rparts, bytes) = match upstream(shared, parts, body).await {
        Ok(answer) => answer,
        Err(resp) => return resp,
    };
    if op == "SignalWorkflowExecution" && rparts.status.is_success() {
        applied_signal(shared, &request, lag);
    }
    relay(rparts, bytes)
}

/// Counts a signal moto applied and, in lag mode, hides it from histories for `lag`.
fn applied_signal(shared: &Shared, req: &Value, lag: Option<Duration>) {
    let text = |k: &str| req.get(k).and_then(Value::as_str).map(str::to_string);
    let signal = SwfSignal {
        domain: text("domain").unwrap_or_default(),
        workflow_id: text("workflowId").unwrap_or_default(),
        run_id: text("runId"),
        signal_name: text("signalName").unwrap_or_default(),
        has_input: req.get("input").is_some_and(|v| !v.is_null()),
    };
    lock(&shared.swf_hidden).record(&signal, lag, Instant::now());
    let mut counters = lock(&shared.counters);
    counters.swf.applied_signals += 1;
    counters.swf.signals.push(signal);
}

/// Sends the call to moto: moto's status line and headers, and its whole body.
async fn upstream(
    shared: &Shared,
    parts: &Parts,
    body: Bytes,
) -> Result<(response::Parts, Bytes), Resp> {
    let base = shared.swf_upstream.as_deref().unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut req = Request::builder()
        .method(parts.method.clone())
        .uri(format!("{base}{path}"));
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            req = req.header(name, value);
        }
    }
    let req = req.body(Full::new(body)).map_err(|e| {
        upstream_failure(format!("aws-emu: cannot build the upstream request: {e}"))
    })?;
    let resp =
        shared.http.request(req).await.map_err(|e| {
            upstream_failure(format!("aws-emu: SWF upstream {base} unreachable: {e}"))
        })?;
    let (rparts, rbody) = resp.into_parts();
    let bytes = rbody.collect().await.map_err(|e| {
        upstream_failure(format!("aws-emu: reading the SWF upstream's answer: {e}"))
    })?;
    Ok((rparts, bytes.to_bytes()))
}

/// moto's answer as it is (hop-by-hop headers aside).
fn relay(rparts: response::Parts, bytes: Bytes) -> Resp {
    let mut out = Response::builder().status(rparts.status);
    for (name, value) in &rparts.headers {
        if !hop_by_hop(name) {
            out = out.header(name, value);
        }
    }
    out.body(Full::new(bytes))
        .unwrap_or_else(|e| upstream_failure(format!("aws-emu: bad upstream answer: {e}")))
}

/// Signals applied in lag mode that histories do not show yet.
#[derive(Default)]
pub(crate) struct HiddenSignals {
    pending: Vec<Hidden>,
}

struct Hidden {
    domain: String,
    workflow_id: String,
    run_id: Option<String>,
    due: Instant,
}

impl HiddenSignals {
    /// A history shows an execution's events in order, so a signal becomes visible no
    /// earlier than the signals before it on the same workflow.
    fn record(&mut self, signal: &SwfSignal, lag: Option<Duration>, now: Instant) {
        self.pending.retain(|h| h.due > now);
        let after = self
            .pending
            .iter()
            .filter(|h| h.domain == signal.domain && h.workflow_id == signal.workflow_id)
            .map(|h| h.due)
            .max();
        let Some(due) = lag.map(|d| now + d).or(after) else {
            return;
        };
        self.pending.push(Hidden {
            domain: signal.domain.clone(),
            workflow_id: signal.workflow_id.clone(),
            run_id: signal.run_id.clone(),
            due: after.map_or(due, |a| a.max(due)),
        });
    }

    /// How many of the newest signals of this run histories hide at `now`.
    fn hidden(&mut self, domain: &str, workflow_id: &str, run_id: &str, now: Instant) -> usize {
        self.pending.retain(|h| h.due > now);
        self.pending
            .iter()
            .filter(|h| {
                h.domain == domain
                    && h.workflow_id == workflow_id
                    && h.run_id.as_deref().is_none_or(|r| r == run_id)
            })
            .count()
    }
}

/// Where a history page starts: after (or, newest first, before) `last` event id.
#[derive(Debug, PartialEq, Eq)]
struct Cursor {
    execution: u64,
    reverse: bool,
    last: i64,
}

fn execution_fingerprint(domain: &str, workflow_id: &str, run_id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    (domain, workflow_id, run_id).hash(&mut h);
    h.finish()
}

impl Cursor {
    fn token(&self) -> String {
        let plain = format!(
            "{:016x}:{}:{}",
            self.execution,
            u8::from(self.reverse),
            self.last
        );
        plain.bytes().map(|b| format!("{b:02x}")).collect()
    }

    fn parse(token: &str) -> Option<Cursor> {
        if !token.len().is_multiple_of(2) || !token.is_ascii() {
            return None;
        }
        let bytes: Option<Vec<u8>> = (0..token.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&token[i..i + 2], 16).ok())
            .collect();
        let plain = String::from_utf8(bytes?).ok()?;
        let mut it = plain.split(':');
        let execution = u64::from_str_radix(it.next()?, 16).ok()?;
        let reverse = match it.next()? {
            "0" => false,
            "1" => true,
            _ => return None,
        };
        let last = it.next()?.parse().ok()?;
        it.next().is_none().then_some(Cursor {
            execution,
            reverse,
            last,
        })
    }
}

/// GetWorkflowExecutionHistory: moto's whole history, less what lag mode hides, one page of
/// it in the requested order.
async fn history(shared: &Shared, parts: &Parts, request: &Value) -> Resp {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
    let domain = text(request.get("domain"));
    let workflow_id = text(request.pointer("/execution/workflowId"));
    let run_id = text(request.pointer("/execution/runId"));
    let page_size = match request.get("maximumPageSize") {
        None | Some(Value::Null) => MAX_PAGE_SIZE,
        Some(v) => match v.as_i64() {
            Some(0) => MAX_PAGE_SIZE,
            Some(n) if (1..=MAX_PAGE_SIZE as i64).contains(&n) => n as u64,
            _ => {
                return validation(format!(
                    "1 validation error detected: Value '{v}' at 'maximumPageSize' failed to satisfy constraint: Member must have value less than or equal to {MAX_PAGE_SIZE}"
                ))
            }
        },
    } as usize;
    let reverse = request
        .get("reverseOrder")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let fingerprint = execution_fingerprint(&domain, &workflow_id, &run_id);
    let after = match request.get("nextPageToken").and_then(Value::as_str) {
        None => None,
        Some(token) => match Cursor::parse(token) {
            Some(c) if c.execution == fingerprint && c.reverse == reverse => Some(c.last),
            _ => {
                return validation(
                    "The nextPageToken is not valid for this request (keep all other arguments unchanged)",
                )
            }
        },
    };

    // moto ignores the paging members; ask it for everything, oldest first.
    let mut whole = request.as_object().cloned().unwrap_or_default();
    for key in ["maximumPageSize", "nextPageToken", "reverseOrder"] {
        whole.remove(key);
    }
    let body = Bytes::from(Value::Object(whole).to_string());
    let (rparts, bytes) = match upstream(shared, parts, body).await {
        Ok(answer) => answer,
        Err(resp) => return resp,
    };
    if !rparts.status.is_success() {
        return relay(rparts, bytes);
    }
    let mut answer: Map<String, Value> = match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => m,
        _ => return upstream_failure("aws-emu: moto's history is not a JSON object".into()),
    };
    let mut events = match answer.remove("events") {
        Some(Value::Array(events)) => events,
        _ => vec![],
    };
    events.sort_by_key(event_id);
    let hidden = lock(&shared.swf_hidden).hidden(&domain, &workflow_id, &run_id, Instant::now());
    hide_newest_signals(&mut events, hidden);
    if reverse {
        events.reverse();
    }
    let (page, more) = page_of(events, reverse, after, page_size);
    let mut out = json!({ "events": page });
    if more {
        if let Some(last) = page.last().map(event_id) {
            out["nextPageToken"] = json!(Cursor {
                execution: fingerprint,
                reverse,
                last
            }
            .token());
        }
    }
    json_response(200, SWF_CONTENT_TYPE, &out)
}

fn event_id(event: &Value) -> i64 {
    event.get("eventId").and_then(Value::as_i64).unwrap_or(0)
}

/// Cuts the history (oldest first) before the `hidden`-th newest WorkflowExecutionSignaled
/// event: a lagging reader sees a prefix of the log, never a later event without an
/// earlier one.
fn hide_newest_signals(events: &mut Vec<Value>, hidden: usize) {
    if hidden == 0 {
        return;
    }
    let signals: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            e.get("eventType").and_then(Value::as_str) == Some("WorkflowExecutionSignaled")
        })
        .map(|(i, _)| i)
        .collect();
    let cut = signals[signals.len().saturating_sub(hidden)..]
        .first()
        .copied();
    if let Some(cut) = cut {
        events.truncate(cut);
    }
}

/// One page of `events` (already in the requested order) after the cursor event id:
/// (page, whether more follow).
fn page_of(
    events: Vec<Value>,
    reverse: bool,
    after: Option<i64>,
    size: usize,
) -> (Vec<Value>, bool) {
    let rest: Vec<Value> = events
        .into_iter()
        .filter(|e| match after {
            None => true,
            Some(last) if reverse => event_id(e) < last,
            Some(last) => event_id(e) > last,
        })
        .collect();
    let more = rest.len() > size;
    (rest.into_iter().take(size).collect(), more)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(n: i64, signals_at: &[i64]) -> Vec<Value> {
        (1..=n)
            .map(|id| {
                let kind = if signals_at.contains(&id) {
                    "WorkflowExecutionSignaled"
                } else {
                    "DecisionTaskScheduled"
                };
                json!({"eventId": id, "eventType": kind})
            })
            .collect()
    }

    fn ids(events: &[Value]) -> Vec<i64> {
        events.iter().map(event_id).collect()
    }

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let c = Cursor {
            execution: 0xfeed,
            reverse: true,
            last: 1500,
        };
        assert_eq!(Cursor::parse(&c.token()), Some(c));
        for bad in ["", "zz", "abc", "3a3a", &"00".repeat(8)] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn pages_forward_and_backward() {
        let (p, more) = page_of(history(5, &[]), false, None, 2);
        assert_eq!((ids(&p), more), (vec![1, 2], true));
        let (p, more) = page_of(history(5, &[]), false, Some(4), 2);
        assert_eq!((ids(&p), more), (vec![5], false));
        let mut newest_first = history(5, &[]);
        newest_first.reverse();
        let (p, more) = page_of(newest_first.clone(), true, Some(4), 2);
        assert_eq!((ids(&p), more), (vec![3, 2], true));
        let (p, more) = page_of(newest_first, true, Some(2), 2);
        assert_eq!((ids(&p), more), (vec![1], false));
    }

    #[test]
    fn lag_hides_a_suffix_from_the_oldest_hidden_signal() {
        let mut events = history(8, &[3, 5, 7]);
        hide_newest_signals(&mut events, 2);
        assert_eq!(ids(&events), vec![1, 2, 3, 4]);
        let mut events = history(8, &[3, 5, 7]);
        hide_newest_signals(&mut events, 0);
        assert_eq!(events.len(), 8);
        let mut events = history(8, &[3]);
        hide_newest_signals(&mut events, 5);
        assert_eq!(ids(&events), vec![1, 2]);
    }

    #[test]
    fn hidden_signals_reveal_in_order() {
        let now = Instant::now();
        let mut h = HiddenSignals::default();
        let sig = |run: Option<&str>| SwfSignal {
            domain: "d".into(),
            workflow_id: "w".into(),
            run_id: run.map(str::to_string),
            ..Default::default()
        };
        h.record(&sig(Some("r")), Some(Duration::from_secs(10)), now);
        // Shorter lag, but after the first one: visible no earlier than it.
        h.record(&sig(None), Some(Duration::from_secs(1)), now);
        // No lag, but behind hidden ones: hidden as long as they are.
        h.record(&sig(None), None, now);
        assert_eq!(h.hidden("d", "w", "r", now + Duration::from_secs(2)), 3);
        assert_eq!(h.hidden("d", "w", "other", now), 2);
        assert_eq!(h.hidden("d", "x", "r", now), 0);
        assert_eq!(h.hidden("d", "w", "r", now + Duration::from_secs(11)), 0);
        let later = now + Duration::from_secs(12);
        h.record(&sig(None), None, later);
        assert_eq!(
            h.hidden("d", "w", "r", later),
            0,
            "nothing hidden, nothing to wait for"
        );
    }

    #[test]
    fn missing_members_are_named_like_aws() {
        let body = json!({"domain": "d", "execution": {"workflowId": "w"}});
        assert_eq!(
            missing_members("GetWorkflowExecutionHistory", &body).unwrap(),
            "1 validation error detected: Value null at 'execution.runId' failed to satisfy constraint: Member must not be null"
        );
        let msg = missing_members("SignalWorkflowExecution", &json!({"domain": "d"})).unwrap();
        assert!(
            msg.starts_with("2 validation errors detected: Value null at 'workflowId'"),
            "{msg}"
        );
        assert_eq!(
            missing_members(
                "SignalWorkflowExecution",
                &json!({"domain": "d", "workflowId": "w", "signalName": "s"})
            ),
            None
        );
        assert_eq!(missing_members("ListDomains", &json!({})), None);
    }
}
