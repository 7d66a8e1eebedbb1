//! STS GetCallerIdentity (Query protocol, XML answers) for the caller's access key.
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::CONTENT_TYPE;
use hyper::{HeaderMap, Response};

use crate::identity::{access_key, account_of, user_id};

use crate::response::{new_uuid, Resp};
use crate::Shared;

const NS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

fn xml(status: u16, body: String, request_id: &str) -> Resp {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/xml")
        .header("x-amzn-RequestId", request_id)
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

fn error(status: u16, code: &str, message: &str) -> Resp {
    let id = new_uuid();
    let body = format!(
        "<ErrorResponse xmlns=\"{NS}\"><Error><Type>Sender</Type><Code>{}</Code><Message>{}</Message></Error><RequestId>{id}</RequestId></ErrorResponse>",
        escape(code),
        escape(message)
    );
    xml(status, body, &id)
}

pub(crate) fn handle(shared: &Shared, headers: &HeaderMap, form: &[(String, String)]) -> Resp {
    let action = form
        .iter()
        .find(|(k, _)| k == "Action")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    if action != "GetCallerIdentity" {
        return error(
            400,
            "InvalidAction",
            &format!("aws-emu does not emulate STS {action}"),
        );
    }
    let Some(key) = access_key(headers) else {
        return error(
            403,
            "MissingAuthenticationToken",
            "Request is missing Authentication Token",
        );
    };
    let arn = shared.principal_arn(&key);
    let account = account_of(&arn).unwrap_or(&shared.account_id).to_string();
    let id = new_uuid();
    let body = format!(
        "<GetCallerIdentityResponse xmlns=\"{NS}\">\n  <GetCallerIdentityResult>\n    <Arn>{}</Arn>\n    <UserId>{}</UserId>\n    <Account>{}</Account>\n  </GetCallerIdentityResult>\n  <ResponseMetadata>\n    <RequestId>{id}</RequestId>\n  </ResponseMetadata>\n</GetCallerIdentityResponse>\n",
        escape(&arn),
        escape(&user_id(&arn)),
        escape(&account)
    );
    xml(200, body, &id)
}
