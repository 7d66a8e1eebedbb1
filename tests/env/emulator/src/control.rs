//! The control API: JSON over HTTP under `/_emu/`.
use std::collections::BTreeMap;

use bytes::Bytes;
use hyper::Method;
use serde_json::{json, Value};

use crate::faults::FaultConfig;
use crate::lag::LagConfig;
use crate::response::{is_read, json_response, Resp};
use crate::{lock, Shared};

const JSON: &str = "application/json";

fn ok(body: Value) -> Resp {
    json_response(200, JSON, &body)
}

fn bad(status: u16, message: impl std::fmt::Display) -> Resp {
    json_response(status, JSON, &json!({"error": message.to_string()}))
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

pub(crate) fn handle(shared: &Shared, method: &Method, path: &str, body: &Bytes) -> Resp {
    let path = path.trim_end_matches('/');
    match path {
        "/_emu/health" if is_read(method) => ok(json!({"status": "ok"})),
        "/_emu/faults" if is_read(method) => ok(to_json(&lock(&shared.faults).config())),
        "/_emu/faults" if method == Method::PUT => {
            match serde_json::from_slice::<FaultConfig>(body) {
                Ok(config) => match config.validate() {
                    Ok(()) => {
                        lock(&shared.faults).set(config);
                        ok(to_json(&lock(&shared.faults).config()))
                    }
                    Err(e) => bad(400, e),
                },
                Err(e) => bad(400, format!("not a fault configuration: {e}")),
            }
        }
        "/_emu/faults" if method == Method::DELETE => {
            lock(&shared.faults).set(FaultConfig::none());
            ok(to_json(&FaultConfig::none()))
        }
        "/_emu/lag" if is_read(method) => ok(to_json(&lock(&shared.lag).config())),
        "/_emu/lag" if method == Method::PUT => match serde_json::from_slice::<LagConfig>(body) {
            Ok(config) => match config.validate() {
                Ok(()) => {
                    lock(&shared.lag).set(config);
                    ok(to_json(&lock(&shared.lag).config()))
                }
                Err(e) => bad(400, e),
            },
            Err(e) => bad(400, format!("not a lag configuration: {e}")),
        },
        "/_emu/lag" if method == Method::DELETE => {
            lock(&shared.lag).set(LagConfig::none());
            ok(to_json(&LagConfig::none()))
        }
        "/_emu/presets/aws-quotas" if is_read(method) => ok(to_json(&FaultConfig::aws_quotas())),
        "/_emu/counters" if is_read(method) => ok(to_json(&*lock(&shared.counters))),
        "/_emu/reset" if method == Method::POST => {
            lock(&shared.faults).set(FaultConfig::none());
            *lock(&shared.counters) = Default::default();
            ok(json!({}))
        }
        "/_emu/identities" if is_read(method) => ok(to_json(&*lock(&shared.identities))),
        "/_emu/identities" if method == Method::PUT => {
            match serde_json::from_slice::<BTreeMap<String, String>>(body) {
                Ok(map) => {
                    *lock(&shared.identities) = map;
                    ok(to_json(&*lock(&shared.identities)))
                }
                Err(e) => bad(
                    400,
                    format!("expected a JSON object of access key -> ARN: {e}"),
                ),
            }
        }
        _ => {
            if let Some(id) = path.strip_prefix("/_emu/ssm/executions/") {
                if is_read(method) {
                    return match lock(&shared.ssm).execution_json(id) {
                        Some(v) => ok(v),
                        None => bad(404, format!("no automation execution {id}")),
                    };
                }
            }
            bad(404, format!("no control endpoint {method} {path}"))
        }
    }
}
