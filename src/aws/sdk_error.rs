//! Turns an AWS SDK error into the delivery machine's [`AwsFailure`]: the error code, the HTTP
//! status and, for transport failures, whether the request can have reached AWS. The
//! decision itself is [`classify`]; this module only reads the SDK's error shapes.
use std::error::Error as StdError;

use aws_smithy_runtime_api::client::dns::ResolveDnsError;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use super::classify::{classify, Transport};
use crate::delivery::AwsFailure;

/// What an SDK error says, reduced to the facts the classification needs.
pub fn failure_from_sdk<E>(err: &SdkError<E, HttpResponse>) -> AwsFailure
where
    E: ProvideErrorMetadata + StdError + 'static,
{
    if let Some((code, sts_code)) = credentials_failure(err) {
        // No credentials, so nothing was signed or sent. Heals when the identity does
        // (a token refreshed, a role's trust fixed): retried, bounded by time.
        let cause = match sts_code {
            Some(sts) if sts != code => format!("{code}: STS answered {sts}"),
            _ => code.clone(),
        };
        return AwsFailure {
            class: super::classify::ErrorClass::Permission,
            message: format!("could not get AWS credentials ({cause}); nothing was sent"),
            code: Some(code),
        };
    }
    let (code, http_status, transport, message) = match err {
        SdkError::ServiceError(service) => {
            let code = service.err().code().map(str::to_string);
            let status = service.raw().status().as_u16();
            let message = match &code {
                Some(code) => format!("AWS answered {code} (HTTP {status})"),
                None => format!("AWS answered HTTP {status}"),
            };
            (code, Some(status), None, message)
        }
        SdkError::ResponseError(response) => {
            let status = response.raw().status().as_u16();
            (
                None,
                Some(status),
                Some(Transport::Other),
                format!("unreadable AWS response (HTTP {status})"),
            )
        }
        SdkError::TimeoutError(_) => (
            None,
            None,
            Some(Transport::Timeout),
            "the AWS call timed out".to_string(),
        ),
        SdkError::DispatchFailure(dispatch) => {
            let transport = match dispatch.as_connector_error() {
                Some(_) if never_sent(err) => Transport::NotSent,
                Some(connector) if connector.is_timeout() => Transport::Timeout,
                Some(connector) if connector.is_io() => Transport::Io,
                _ => Transport::Other,
            };
            let message = match transport {
                Transport::NotSent => "could not connect to AWS (request not sent)",
                Transport::Timeout => "the AWS call timed out",
                Transport::Io => {
                    "the connection to AWS failed after the request may have been sent"
                }
                Transport::Other => "the AWS call failed in transport",
            };
            (None, None, Some(transport), message.to_string())
        }
        // Request construction failed inside the SDK: nothing left the process.
        SdkError::ConstructionFailure(_) => (
            Some("ClientValidation".to_string()),
            None,
            Some(Transport::NotSent),
            "the request could not be built".to_string(),
        ),
        _ => (
            None,
            None,
            Some(Transport::Other),
            "unexpected AWS SDK error".to_string(),
        ),
    };
    let class = match (&code, transport) {
        // Construction failures are the client-side validation row of the table.
        (Some(c), _) if c == "ClientValidation" => super::classify::ErrorClass::Invalid,
        _ => classify(code.as_deref(), http_status, transport),
    };
    AwsFailure {
        class,
        code,
        message,
    }
}

/// The error code (STS's, `AssumeRoleFailed` or `CredentialsError`) when the call failed
/// because the SDK could not get credentials (web identity refused, container endpoint
/// refused, expired token, a SignalPolicy's role refused…), and what STS answered when that is
/// not the code itself (for a refused role: `AccessDenied`, a missing role…).
fn credentials_failure(err: &(dyn StdError + 'static)) -> Option<(String, Option<String>)> {
    use aws_credential_types::provider::error::CredentialsError;
    use aws_sdk_sts::operation::assume_role_with_web_identity::AssumeRoleWithWebIdentityError;
    let mut next: Option<&(dyn StdError + 'static)> = Some(err);
    let mut found = false;
    while let Some(e) = next {
        if e.downcast_ref::<CredentialsError>().is_some() {
            found = true;
        }
        if found {
            if let Some(refused) = e.downcast_ref::<super::assume_role::AssumeRoleFailure>() {
                return Some((
                    crate::delivery::ASSUME_ROLE_FAILED_CODE.to_string(),
                    Some(refused.code.clone()),
                ));
            }
            if let Some(sts) = e.downcast_ref::<AssumeRoleWithWebIdentityError>() {
                if let Some(code) = sts.code() {
                    return Some((code.to_string(), None));
                }
            }
        }
        next = e.source();
    }
    found.then(|| ("CredentialsError".to_string(), None))
}

/// True when the failure happened while connecting (refused, DNS, TLS, connect timeout), so the
/// request never left this process.
fn never_sent(err: &(dyn StdError + 'static)) -> bool {
    let mut next: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = next {
        if let Some(legacy) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
            if legacy.is_connect() {
                return true;
            }
        }
        if e.downcast_ref::<ResolveDnsError>().is_some() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::AddrNotAvailable
                    | std::io::ErrorKind::NotFound
            ) {
                return true;
            }
        }
        next = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::provider::error::CredentialsError;

    #[test]
    fn a_refused_role_keeps_what_sts_answered() {
        let refused =
            CredentialsError::provider_error(super::super::assume_role::AssumeRoleFailure {
                code: "AccessDenied".into(),
            });
        assert_eq!(
            credentials_failure(&refused),
            Some((
                crate::delivery::ASSUME_ROLE_FAILED_CODE.to_string(),
                Some("AccessDenied".to_string())
            ))
        );
        let other = CredentialsError::not_loaded("no source");
        assert_eq!(
            credentials_failure(&other),
            Some(("CredentialsError".to_string(), None))
        );
        let unrelated = std::io::Error::other("reset");
        assert_eq!(credentials_failure(&unrelated), None);
    }
}
