//! Pure classification of a failed AWS call into the delivery machine's [`ErrorClass`]
//! (docs/design.md, "Errors and retries"). No I/O: the SDK adapter reduces an SDK error to an
//! error code, an HTTP status and, when no answer arrived, what happened on the wire
//! ([`Transport`]); this module decides.
//!
//! # Order of the rules
//! 1. A **recognised error code** decides (an answer with a code is the strongest evidence).
//!    Codes are compared exactly after stripping a namespace prefix (`aws.foo#Code`) and a
//!    `:`-suffix (`Code:http://...`), the two decorations the JSON protocols put on `__type`.
//! 2. **HTTP 429** → [`ErrorClass::Throttled`].
//! 3. A **transport** failure (no answer): [`Transport::NotSent`] → [`ErrorClass::NotSent`];
//!    `Timeout`, `Io`, `Other` → [`ErrorClass::Ambiguous`] (the request may have been applied).
//! 4. The **HTTP status** alone: 5xx → Ambiguous; 408 → Ambiguous (the server gave up on the
//!    request; verifying first is cheap and safe); 401/403 → Permission; any other 4xx →
//!    [`ErrorClass::Invalid`] (an unknown client error will not heal by resending the same
//!    immutable spec).
//! 5. **Nothing known** → Ambiguous: when we cannot tell, verify before resending.
//!
//! # The code table
//! | codes | class | why |
//! |---|---|---|
//! | Throttling, ThrottlingException, ThrottledException, RequestThrottledException, TooManyRequestsException, ProvisionedThroughputExceededException, TransactionInProgressException, RequestLimitExceeded, BandwidthLimitExceeded, LimitExceededException, RequestThrottled, SlowDown, EC2ThrottledException, PriorRequestNotComplete | Throttled | the AWS SDK's own throttling list: refused, not applied; retry without spending an attempt |
//! | LimitExceededFault | Limit | SWF: "a system imposed limitation has been reached; clean up unused resources or ask AWS for more". Not a rate, so not throttling: refused and not applied, but persistent, so retries spend attempts and end in RetriesExhausted if nobody raises the limit |
//! | RequestTimeout, RequestTimeoutException, InternalFailure, InternalError, InternalServerError, InternalServiceError, InternalServiceException, ServiceUnavailable, ServiceUnavailableException, ServiceFailure, ServiceException | Ambiguous | a server fault or timeout: the request may have been applied, verify first |
//! | OperationNotPermittedFault, AccessDenied, AccessDeniedException, UnrecognizedClientException, InvalidClientTokenId, ExpiredToken, ExpiredTokenException, InvalidSignatureException, SignatureDoesNotMatch, MissingAuthenticationToken, MissingAuthenticationTokenException, IncompleteSignature, IncompleteSignatureException, InvalidAccessKeyId, AuthFailure, NotAuthorized, RequestExpired, RequestTimeTooSkewed | Permission | refused before acting; an operator may fix IAM or credentials (or the clock), so retry with backoff, bounded by `spec.retry.maxDurationSeconds` (credentials heal, e.g. during a rotation) |
//! | UnknownResourceFault, AutomationExecutionNotFoundException, AutomationStepNotFoundException | NotFound | the execution (or the step) is not there |
//! | InvalidAutomationSignalException | InvalidNow | the signal is not valid for the execution's current state |
//! | ValidationException, ClientValidation, SerializationException, InvalidParameterException, InvalidParameterValueException, InvalidParameterCombination, MissingParameter, InvalidParameters, UnknownOperationException, InvalidAction | Invalid | the request itself is wrong; resending the same spec cannot help |
//!
//! `ClientValidation` is the code the SDK adapter gives a request the SDK refused to build.
use crate::delivery::ErrorClass as Class;
pub use crate::delivery::ErrorClass;

/// What happened on the wire when no AWS answer arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Connection refused, DNS or TLS failure, connect timeout: the request never left.
    NotSent,
    /// The call timed out after the request may have been written.
    Timeout,
    /// Connection reset or closed after the request may have been written.
    Io,
    /// Any other transport failure (including an unreadable answer).
    Other,
}

const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "EC2ThrottledException",
    "PriorRequestNotComplete",
];

const LIMIT: &[&str] = &["LimitExceededFault"];

const AMBIGUOUS: &[&str] = &[
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalFailure",
    "InternalError",
    "InternalServerError",
    "InternalServiceError",
    "InternalServiceException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "ServiceFailure",
    "ServiceException",
];

const PERMISSION: &[&str] = &[
    "OperationNotPermittedFault",
    "AccessDenied",
    "AccessDeniedException",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "MissingAuthenticationToken",
    "MissingAuthenticationTokenException",
    "IncompleteSignature",
    "IncompleteSignatureException",
    "InvalidAccessKeyId",
    "AuthFailure",
    "NotAuthorized",
    "RequestExpired",
    "RequestTimeTooSkewed",
];

const NOT_FOUND: &[&str] = &[
    "UnknownResourceFault",
    "AutomationExecutionNotFoundException",
    "AutomationStepNotFoundException",
];

const INVALID_NOW: &[&str] = &["InvalidAutomationSignalException"];

const INVALID: &[&str] = &[
    "ValidationException",
    "ClientValidation",
    "SerializationException",
    "InvalidParameterException",
    "InvalidParameterValueException",
    "InvalidParameterCombination",
    "MissingParameter",
    "InvalidParameters",
    "UnknownOperationException",
    "InvalidAction",
];

/// Every code this module knows, with its class (for documentation and tests).
pub const KNOWN_CODES: &[(&[&str], Class)] = &[
    (THROTTLING, Class::Throttled),
    (LIMIT, Class::Limit),
    (AMBIGUOUS, Class::Ambiguous),
    (PERMISSION, Class::Permission),
    (NOT_FOUND, Class::NotFound),
    (INVALID_NOW, Class::InvalidNow),
    (INVALID, Class::Invalid),
];

/// The bare error code: `aws.protocoltests#Code:http://...` → `Code`.
fn bare(code: &str) -> &str {
    let code = code.trim();
    let code = code.rsplit_once('#').map_or(code, |(_, c)| c);
    code.split_once(':').map_or(code, |(c, _)| c)
}

/// The class of a recognised error code, if any.
pub fn class_of_code(code: &str) -> Option<Class> {
    let code = bare(code);
    KNOWN_CODES
        .iter()
        .find(|(codes, _)| codes.contains(&code))
        .map(|(_, class)| *class)
}

/// Classify a failed AWS call (see the module docs for every rule).
pub fn classify(
    code: Option<&str>,
    http_status: Option<u16>,
    transport: Option<Transport>,
) -> Class {
    if let Some(class) = code.and_then(class_of_code) {
        return class;
    }
    if http_status == Some(429) {
        return Class::Throttled;
    }
    match transport {
        Some(Transport::NotSent) => return Class::NotSent,
        Some(Transport::Timeout | Transport::Io | Transport::Other) => return Class::Ambiguous,
        None => {}
    }
    match http_status {
        Some(500..=599) | Some(408) => Class::Ambiguous,
        Some(401 | 403) => Class::Permission,
        Some(400..=499) => Class::Invalid,
        _ => Class::Ambiguous,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_throttling_code_is_throttled_whatever_the_status() {
        for code in THROTTLING {
            assert_eq!(
                classify(Some(code), Some(400), None),
                Class::Throttled,
                "{code}"
            );
            assert_eq!(classify(Some(code), None, None), Class::Throttled, "{code}");
            // S3-style SlowDown arrives as 503: still throttling, not a server fault.
            assert_eq!(
                classify(Some(code), Some(503), None),
                Class::Throttled,
                "{code}"
            );
        }
    }

    #[test]
    fn http_429_without_a_code_is_throttled() {
        assert_eq!(classify(None, Some(429), None), Class::Throttled);
        assert_eq!(
            classify(Some("SomethingNew"), Some(429), None),
            Class::Throttled
        );
    }

    #[test]
    fn swf_limit_exceeded_fault_is_a_persistent_limit() {
        assert_eq!(
            classify(Some("LimitExceededFault"), Some(400), None),
            Class::Limit
        );
        // ...while the SDK's LimitExceededException stays throttling.
        assert_eq!(
            classify(Some("LimitExceededException"), Some(400), None),
            Class::Throttled
        );
    }

    #[test]
    fn transport_failures() {
        assert_eq!(
            classify(None, None, Some(Transport::NotSent)),
            Class::NotSent
        );
        assert_eq!(
            classify(None, None, Some(Transport::Timeout)),
            Class::Ambiguous
        );
        assert_eq!(classify(None, None, Some(Transport::Io)), Class::Ambiguous);
        assert_eq!(
            classify(None, None, Some(Transport::Other)),
            Class::Ambiguous
        );
        // An unreadable answer with a status: the transport rule wins over the status.
        assert_eq!(
            classify(None, Some(400), Some(Transport::Other)),
            Class::Ambiguous
        );
    }

    #[test]
    fn server_faults_are_ambiguous() {
        for code in AMBIGUOUS {
            assert_eq!(
                classify(Some(code), Some(400), None),
                Class::Ambiguous,
                "{code}"
            );
            assert_eq!(
                classify(Some(code), Some(500), None),
                Class::Ambiguous,
                "{code}"
            );
        }
        for status in [500, 502, 503, 504, 599] {
            assert_eq!(
                classify(None, Some(status), None),
                Class::Ambiguous,
                "{status}"
            );
            assert_eq!(
                classify(Some("Unheard"), Some(status), None),
                Class::Ambiguous,
                "{status}"
            );
        }
        assert_eq!(classify(None, Some(408), None), Class::Ambiguous);
    }

    #[test]
    fn permission_codes() {
        for code in PERMISSION {
            assert_eq!(
                classify(Some(code), Some(400), None),
                Class::Permission,
                "{code}"
            );
        }
        assert_eq!(classify(None, Some(403), None), Class::Permission);
        assert_eq!(classify(None, Some(401), None), Class::Permission);
        assert_eq!(
            classify(Some("Unheard"), Some(403), None),
            Class::Permission
        );
    }

    #[test]
    fn not_found_codes() {
        for code in NOT_FOUND {
            assert_eq!(
                classify(Some(code), Some(400), None),
                Class::NotFound,
                "{code}"
            );
        }
    }

    #[test]
    fn invalid_now_code() {
        assert_eq!(
            classify(Some("InvalidAutomationSignalException"), Some(400), None),
            Class::InvalidNow
        );
    }

    #[test]
    fn invalid_codes_and_unknown_4xx() {
        for code in INVALID {
            assert_eq!(
                classify(Some(code), Some(400), None),
                Class::Invalid,
                "{code}"
            );
            assert_eq!(classify(Some(code), None, None), Class::Invalid, "{code}");
        }
        assert_eq!(
            classify(Some("SomethingNew"), Some(400), None),
            Class::Invalid
        );
        assert_eq!(classify(None, Some(404), None), Class::Invalid);
        assert_eq!(classify(None, Some(409), None), Class::Invalid);
    }

    #[test]
    fn nothing_known_is_ambiguous() {
        assert_eq!(classify(None, None, None), Class::Ambiguous);
        assert_eq!(classify(Some("SomethingNew"), None, None), Class::Ambiguous);
        assert_eq!(classify(Some(""), None, None), Class::Ambiguous);
        // A 2xx or 3xx that still ended up as an error: we cannot tell, so verify.
        assert_eq!(classify(None, Some(200), None), Class::Ambiguous);
        assert_eq!(classify(None, Some(301), None), Class::Ambiguous);
    }

    #[test]
    fn a_known_code_beats_status_and_transport() {
        assert_eq!(
            classify(Some("UnknownResourceFault"), Some(500), None),
            Class::NotFound
        );
        assert_eq!(
            classify(Some("ThrottlingException"), None, Some(Transport::Timeout)),
            Class::Throttled
        );
    }

    #[test]
    fn decorated_codes_are_recognised() {
        assert_eq!(
            classify(
                Some("com.amazonaws.swf.base.model#UnknownResourceFault"),
                Some(400),
                None
            ),
            Class::NotFound
        );
        assert_eq!(
            classify(
                Some("ThrottlingException:http://internal.amazon.com/coral/com.amazon.coral.availability/"),
                Some(400),
                None
            ),
            Class::Throttled
        );
        assert_eq!(
            classify(Some(" ValidationException "), None, None),
            Class::Invalid
        );
    }

    #[test]
    fn codes_are_case_sensitive_like_aws() {
        // AWS codes are exact identifiers; an unknown spelling falls through to the status.
        assert_eq!(
            classify(Some("throttlingexception"), Some(500), None),
            Class::Ambiguous
        );
    }

    #[test]
    fn no_code_is_listed_twice() {
        let mut all: Vec<&str> = KNOWN_CODES
            .iter()
            .flat_map(|(c, _)| c.iter().copied())
            .collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
    }
}
