//! The one error type every transport's client yields.

use std::time::Duration;

use push_core::BoxError;

/// What can go wrong in a transport's client (polling, long polling, SSE,
/// WebSockets). Most of it is passing: a client yields the error, backs off
/// and tries again. A fatal error ([`ClientError::is_fatal`]) is yielded last,
/// and the client's stream ends.
///
/// ```
/// use push_http::ClientError;
///
/// let refused = ClientError::status(400, br#"{"error":{"code":"invalid_channel","message":"bad"}}"#);
/// assert!(refused.is_fatal());
/// let busy = ClientError::status(503, br#"{"error":{"code":"unavailable","message":"m","outcome":"unknown"}}"#);
/// assert!(!busy.is_fatal());
/// assert_eq!(busy.may_have_happened(), Some(true));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL is not one the client can use.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A header given to the client (`with_header`) is not valid HTTP.
    #[error("invalid header: {reason}")]
    InvalidHeader {
        /// What is wrong with it.
        reason: String,
    },
    /// Connecting or talking to the server failed.
    #[error("request failed: {0}")]
    Request(#[source] BoxError),
    /// No answer within the time allowed.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The server answered with an error status.
    #[error("server answered {status}{}", message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    Status {
        /// The HTTP status code.
        status: u16,
        /// The error `code` from the JSON body, when there is one.
        code: Option<String>,
        /// The error `message` from the JSON body, when there is one.
        message: Option<String>,
        /// The error `outcome` from the JSON body of a `503` (`"not_done"`,
        /// `"unknown"`: whether the operation may have happened anyway,
        /// docs/protocol.md §1.8), when there is one.
        outcome: Option<String>,
    },
    /// The server answered `200` with a body the client cannot read (an SSE
    /// client given something other than `text/event-stream`). As the SSE
    /// spec says, the client gives up.
    #[error("the answer's Content-Type is {got:?}, not {expected}")]
    WrongContentType {
        /// The type the client reads.
        expected: &'static str,
        /// The type the server sent (empty when none).
        got: String,
    },
    /// The answer does not follow the protocol.
    #[error(transparent)]
    Protocol(#[from] push_core::Error),
}

impl ClientError {
    /// `true` when retrying cannot help: a bad URL or header, a wrong content type, or
    /// a 4xx other than 408 (timeout) and 429 (too many requests).
    pub fn is_fatal(&self) -> bool {
        match self {
            ClientError::InvalidUrl { .. }
            | ClientError::InvalidHeader { .. }
            | ClientError::WrongContentType { .. } => true,
            ClientError::Status { status, .. } => {
                (400..500).contains(status) && *status != 408 && *status != 429
            }
            _ => false,
        }
    }

    /// A [`ClientError::Status`] for `status`, with the code and message of the
    /// JSON error `body` when it is one.
    pub fn status(status: u16, body: &[u8]) -> Self {
        let (code, message) = push_core::wire::json::parse_error(body).unzip();
        let outcome = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|body| Some(body.get("error")?.get("outcome")?.as_str()?.to_owned()));
        ClientError::Status {
            status,
            code,
            message,
            outcome,
        }
    }

    /// For an answer that says so (`outcome`), whether the operation may
    /// have happened anyway: `Some(false)` for `"not_done"`, `Some(true)`
    /// for `"unknown"`, as [`push_core::Error::may_have_happened`]; `None`
    /// otherwise.
    pub fn may_have_happened(&self) -> Option<bool> {
        match self {
            ClientError::Status {
                outcome: Some(outcome),
                ..
            } => match outcome.as_str() {
                "not_done" => Some(false),
                "unknown" => Some(true),
                _ => None,
            },
            _ => None,
        }
    }

    /// Wraps a connection or I/O failure.
    pub fn request(source: impl Into<BoxError>) -> Self {
        ClientError::Request(source.into())
    }
}
