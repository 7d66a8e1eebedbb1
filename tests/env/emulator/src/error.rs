//! An AWS error as the JSON protocols carry it.

/// `{"__type": code, "message": message}` with an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl ApiError {
    /// A client error (HTTP 400).
    pub fn client(code: &str, message: impl Into<String>) -> Self {
        Self {
            status: 400,
            code: code.to_string(),
            message: message.into(),
        }
    }

    /// `ValidationException` for a constraint of the service model, worded like AWS.
    pub fn validation(detail: impl Into<String>) -> Self {
        Self::client(
            "ValidationException",
            format!("1 validation error detected: {}", detail.into()),
        )
    }

    /// `SerializationException`: the body does not have the model's shape.
    pub fn serialization(message: impl Into<String>) -> Self {
        Self::client("SerializationException", message)
    }

    pub fn server(code: &str, message: impl Into<String>) -> Self {
        Self {
            status: 500,
            code: code.to_string(),
            message: message.into(),
        }
    }
}
