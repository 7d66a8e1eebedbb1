//! The HTTP/1.1 server: routing, faults, the SSM entry point.
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::http::request::Parts;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;

use crate::error::ApiError;
use crate::faults::{FaultKind, Service, Verdict};
use crate::{control, identity, lock, now, ssm, sts, swf, Shared};

pub(crate) type Resp = Response<Full<Bytes>>;

pub(crate) const SSM_CONTENT_TYPE: &str = "application/x-amz-json-1.1";
pub(crate) const SWF_CONTENT_TYPE: &str = "application/x-amz-json-1.0";

/// The service function's error: hyper closes the connection without answering.
#[derive(Debug)]
pub(crate) struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on purpose (drop_after_apply)")
    }
}

impl std::error::Error for DropConnection {}

pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let shared = shared.clone();
                    connections.spawn(async move {
                        let service = service_fn(move |req| handle(shared.clone(), req));
                        if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
                            tracing::debug!("connection ended: {e}");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// A JSON response with a fresh request id.
pub(crate) fn json_response(status: u16, content_type: &str, body: &Value) -> Resp {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, content_type)
        .header("x-amzn-RequestId", ssm::new_uuid())
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid response")
}

/// An AWS JSON error: `{"__type", "message"}` plus `x-amzn-ErrorType`.
pub(crate) fn aws_error(content_type: &str, err: &ApiError) -> Resp {
    let mut resp = json_response(
        err.status,
        content_type,
        &json!({"__type": err.code, "message": err.message}),
    );
    let short = err.code.rsplit('#').next().unwrap_or(&err.code);
    if let Ok(v) = short.parse() {
        resp.headers_mut().insert("x-amzn-ErrorType", v);
    }
    resp
}

fn content_type_of(service: Service) -> &'static str {
    match service {
        Service::Ssm => SSM_CONTENT_TYPE,
        Service::Swf => SWF_CONTENT_TYPE,
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Resp, DropConnection> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map_err(|_| DropConnection)?.to_bytes();
    // STS role sessions, container credentials and their control API (sts_roles.rs).
    if let Some(resp) = crate::sts_roles::intercept(&shared, &parts, &body).await {
        return Ok(resp);
    }
    let path = parts.uri.path();
    if path == "/_emu" || path.starts_with("/_emu/") {
        return Ok(control::handle(&shared, &parts.method, path, &body));
    }
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(target) = target {
        if let Some(op) = target.strip_prefix("AmazonSSM.") {
            return aws_call(shared, Service::Ssm, op, parts, body).await;
        }
        if let Some(op) = target.strip_prefix("SimpleWorkflowService.") {
            return aws_call(shared, Service::Swf, op, parts, body).await;
        }
        let err = ApiError::client(
            "UnknownOperationException",
            format!("aws-emu does not serve X-Amz-Target {target}"),
        );
        return Ok(aws_error(SSM_CONTENT_TYPE, &err));
    }
    let query = parts.uri.query().unwrap_or("").as_bytes();
    let form: Vec<(String, String)> = form_urlencoded::parse(query)
        .chain(form_urlencoded::parse(&body))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if form.iter().any(|(k, _)| k == "Action") {
        return Ok(sts::handle(&shared, &parts.headers, &form));
    }
    Ok(Response::builder()
        .status(404)
        .header(CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from_static(
            b"aws-emu: send AWS JSON (X-Amz-Target), an STS Query request (Action=...), or /_emu/...\n",
        )))
        .expect("a valid response"))
}

/// One AWS call of a faultable service: count, latency, throttling, injected faults, apply.
async fn aws_call(
    shared: Arc<Shared>,
    service: Service,
    op: &str,
    parts: Parts,
    body: Bytes,
) -> Result<Resp, DropConnection> {
    lock(&shared.counters).call(service, op);
    // Temporary credentials are checked before anything else, as AWS authenticates first.
    if let Err(refusal) = shared.sts_roles.check(&parts.headers) {
        let err = refusal.json_error(service == Service::Swf);
        return Ok(aws_error(content_type_of(service), &err));
    }
    let latency = lock(&shared.faults).latency(service, op);
    if let Some(delay) = latency {
        lock(&shared.counters).fault(service, FaultKind::Latency);
        tokio::time::sleep(delay).await;
    }
    let verdict = lock(&shared.faults).verdict(service, op);
    let content_type = content_type_of(service);
    match verdict {
        Verdict::Throttled => {
            lock(&shared.counters).throttled(service);
            let code = match service {
                Service::Ssm => "ThrottlingException",
                Service::Swf => "com.amazon.coral.availability#ThrottlingException",
            };
            Ok(aws_error(
                content_type,
                &ApiError::client(code, "Rate exceeded"),
            ))
        }
        Verdict::Fail(kind) => {
            lock(&shared.counters).fault(service, kind);
            let err = match (service, kind) {
                (Service::Ssm, FaultKind::ServiceUnavailable) => ApiError {
                    status: 503,
                    code: "ServiceUnavailable".into(),
                    message: "aws-emu: injected 503, not applied".into(),
                },
                (Service::Swf, FaultKind::ServiceUnavailable) => ApiError {
                    status: 503,
                    code: "com.amazon.coral.availability#ServiceUnavailableException".into(),
                    message: "aws-emu: injected 503, not forwarded".into(),
                },
                (Service::Ssm, _) => {
                    ApiError::server("InternalServerError", "aws-emu: injected 500, not applied")
                }
                (Service::Swf, _) => ApiError::server(
                    "com.amazon.coral.service#InternalFailure",
                    "aws-emu: injected 500, not forwarded",
                ),
            };
            Ok(aws_error(content_type, &err))
        }
        Verdict::DropAfterApply => {
            lock(&shared.counters).fault(service, FaultKind::DropAfterApply);
            let _ = apply(&shared, service, op, &parts, body).await;
            Err(DropConnection)
        }
        Verdict::Proceed => Ok(apply(&shared, service, op, &parts, body).await),
    }
}

async fn apply(shared: &Shared, service: Service, op: &str, parts: &Parts, body: Bytes) -> Resp {
    match service {
        Service::Ssm => ssm_call(shared, op, &parts.headers, &body),
        Service::Swf => swf::forward(shared, op, parts, body).await,
    }
}

fn ssm_call(shared: &Shared, op: &str, headers: &HeaderMap, body: &Bytes) -> Resp {
    let Some(key) = identity::access_key(headers) else {
        let err = ApiError::client(
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        );
        return aws_error(SSM_CONTENT_TYPE, &err);
    };
    let principal = shared.principal_arn(&key);
    let parsed: Map<String, Value> = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => m,
            _ => {
                return aws_error(
                    SSM_CONTENT_TYPE,
                    &ApiError::serialization("The request body is not a JSON object"),
                )
            }
        }
    };
    let ctx = ssm::Ctx {
        principal: &principal,
        account_id: &shared.account_id,
        region: &shared.region,
        now: now(),
    };
    let result = lock(&shared.ssm).handle(&ctx, op, &parsed);
    match result {
        Ok(outcome) => {
            if let Some(signal) = outcome.signal {
                let mut counters = lock(&shared.counters);
                counters.ssm.applied_signals += 1;
                counters.ssm.signals.push(signal);
            }
            json_response(200, SSM_CONTENT_TYPE, &outcome.body)
        }
        Err(err) => aws_error(SSM_CONTENT_TYPE, &err),
    }
}

/// True for methods the control API reads without a body.
pub(crate) fn is_read(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}
