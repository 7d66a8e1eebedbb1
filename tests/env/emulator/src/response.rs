//! HTTP responses as the AWS JSON protocols write them, shared by every part of the server.
//! Depends on nothing but the error type, so that the server and the services it routes to
//! can all use it without depending on each other.
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Response};
use serde_json::{json, Value};

use crate::error::ApiError;

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

/// A random version-4 UUID (36 characters): request ids, execution ids.
pub(crate) fn new_uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A JSON response with a fresh request id.
pub(crate) fn json_response(status: u16, content_type: &str, body: &Value) -> Resp {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, content_type)
        .header("x-amzn-RequestId", new_uuid())
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid response")
}

/// An AWS JSON error: `{"__type", "message"}` plus `x-amzn-ErrorType`. The SSM model names
/// the member `Message`, the SWF model `message`; every SDK reads either (see the README),
/// so both services write the lower-case form.
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

/// True for methods the control API reads without a body.
pub(crate) fn is_read(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_36_chars_version_4() {
        let u = new_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, new_uuid());
    }
}
