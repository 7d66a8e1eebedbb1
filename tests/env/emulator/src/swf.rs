//! SWF: every call is forwarded unchanged to moto, and moto's answer returned as it is.
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderName;
use hyper::http::request::Parts;
use hyper::{Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::error::ApiError;
use crate::faults::SwfSignal;
use crate::server::{aws_error, Resp, SWF_CONTENT_TYPE};
use crate::{lock, Shared};

pub(crate) type UpstreamClient = Client<HttpConnector, Full<Bytes>>;

pub(crate) fn client() -> UpstreamClient {
    Client::builder(TokioExecutor::new()).build_http()
}

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

pub(crate) async fn forward(shared: &Shared, op: &str, parts: &Parts, body: Bytes) -> Resp {
    let Some(base) = &shared.swf_upstream else {
        return aws_error(
            SWF_CONTENT_TYPE,
            &ApiError::server(
                "com.amazon.coral.service#InternalFailure",
                "aws-emu: no --swf-upstream configured",
            ),
        );
    };
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
    let req = match req.body(Full::new(body.clone())) {
        Ok(r) => r,
        Err(e) => {
            return upstream_failure(format!("aws-emu: cannot build the upstream request: {e}"))
        }
    };
    let resp = match shared.http.request(req).await {
        Ok(r) => r,
        Err(e) => {
            return upstream_failure(format!("aws-emu: SWF upstream {base} unreachable: {e}"))
        }
    };
    let (rparts, rbody) = resp.into_parts();
    let bytes = match rbody.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return upstream_failure(format!("aws-emu: reading the SWF upstream's answer: {e}"))
        }
    };
    if op == "SignalWorkflowExecution" && rparts.status.is_success() {
        let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let text = |k: &str| req.get(k).and_then(Value::as_str).map(str::to_string);
        let signal = SwfSignal {
            domain: text("domain").unwrap_or_default(),
            workflow_id: text("workflowId").unwrap_or_default(),
            run_id: text("runId"),
            signal_name: text("signalName").unwrap_or_default(),
            has_input: req.get("input").is_some_and(|v| !v.is_null()),
        };
        let mut counters = lock(&shared.counters);
        counters.swf.applied_signals += 1;
        counters.swf.signals.push(signal);
    }
    let mut out = Response::builder().status(rparts.status);
    for (name, value) in &rparts.headers {
        if !hop_by_hop(name) {
            out = out.header(name, value);
        }
    }
    out.body(Full::new(bytes))
        .unwrap_or_else(|e| upstream_failure(format!("aws-emu: bad upstream answer: {e}")))
}
