//! The HTTP/1.1 server: routing, faults, lag, the SSM entry point.
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::http::request::Parts;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value};
use tokio::net::TcpListener;

use crate::error::ApiError;
use crate::faults::{FaultKind, Service, Verdict};
use crate::response::{
    aws_error, json_response, DropConnection, Resp, SSM_CONTENT_TYPE, SWF_CONTENT_TYPE,
};
use crate::{control, identity, lock, now, ssm, sts, swf, Shared};

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

fn content_type_of(service: Service) -> &'static str {
    match service {
        Service::Ssm => SSM_CONTENT_TYPE,
        Service::Swf => SWF_CONTENT_TYPE,
    }
}

/// What a request is, from its path, `X-Amz-Target` or Query-protocol `Action`.
enum Route {
    Control,
    Aws(Service, String),
    UnknownTarget(String),
    /// A Query-protocol (STS) request, with its form fields (query string and body).
    Query(Vec<(String, String)>),
    NotFound,
}

fn route(parts: &Parts, body: &Bytes) -> Route {
    let path = parts.uri.path();
    if path == "/_emu" || path.starts_with("/_emu/") {
        return Route::Control;
    }
    if let Some(target) = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
    {
        if let Some(op) = target.strip_prefix("AmazonSSM.") {
            return Route::Aws(Service::Ssm, op.to_string());
        }
        if let Some(op) = target.strip_prefix("SimpleWorkflowService.") {
            return Route::Aws(Service::Swf, op.to_string());
        }
        return Route::UnknownTarget(target.to_string());
    }
    let query = parts.uri.query().unwrap_or("").as_bytes();
    let form: Vec<(String, String)> = form_urlencoded::parse(query)
        .chain(form_urlencoded::parse(body))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if form.iter().any(|(k, _)| k == "Action") {
        return Route::Query(form);
    }
    Route::NotFound
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Resp, DropConnection> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map_err(|_| DropConnection)?.to_bytes();
    // STS role sessions, container credentials and their control API (sts_roles.rs).
    if let Some(resp) = crate::sts_roles::intercept(&shared, &parts, &body).await {
        return Ok(resp);
    }
    match route(&parts, &body) {
        Route::Control => Ok(control::handle(
            &shared,
            &parts.method,
            parts.uri.path(),
            &body,
        )),
        Route::Aws(service, op) => {
            // Once a request has arrived whole it is handled to the end, whether or not its
            // caller is still there (as AWS does): what is applied is also counted, even when
            // the caller disconnects mid-request and hyper drops this future.
            let call = tokio::spawn(aws_call(shared, service, op, parts, body));
            call.await.map_err(|_| DropConnection)?
        }
        Route::UnknownTarget(target) => {
            let err = ApiError::client(
                "UnknownOperationException",
                format!("aws-emu does not serve X-Amz-Target {target}"),
            );
            Ok(aws_error(SSM_CONTENT_TYPE, &err))
        }
        Route::Query(form) => Ok(sts::handle(&shared, &parts.headers, &form)),
        Route::NotFound => Ok(Response::builder()
            .status(404)
            .header(CONTENT_TYPE, "text/plain")
            .body(Full::new(Bytes::from_static(
                b"aws-emu: send AWS JSON (X-Amz-Target), an STS Query request (Action=...), or /_emu/...\n",
            )))
            .expect("a valid response")),
    }
}

/// One AWS call of a faultable service: count, latency, throttling, injected faults, apply.
async fn aws_call(
    shared: Arc<Shared>,
    service: Service,
    op: String,
    parts: Parts,
    body: Bytes,
) -> Result<Resp, DropConnection> {
    let op = op.as_str();
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
    let lag = lock(&shared.lag).delay(service, op);
    match service {
        Service::Ssm => ssm_call(shared, op, &parts.headers, &body, lag),
        Service::Swf => swf::call(shared, op, parts, body, lag).await,
    }
}

fn ssm_call(
    shared: &Shared,
    op: &str,
    headers: &HeaderMap,
    body: &Bytes,
    lag: Option<std::time::Duration>,
) -> Resp {
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
        lag,
        clock: Instant::now(),
    };
    let result = lock(&shared.ssm).handle(&ctx, op, &parsed);
    match result {
        Ok(outcome) => {
            if let Some(mut signal) = outcome.signal {
                signal.source_identity = shared.sts_roles.source_identity(&key);
                let mut counters = lock(&shared.counters);
                counters.ssm.applied_signals += 1;
                counters.ssm.signals.push(signal);
            }
            json_response(200, SSM_CONTENT_TYPE, &outcome.body)
        }
        Err(err) => aws_error(SSM_CONTENT_TYPE, &err),
    }
}
