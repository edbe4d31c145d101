//! The one error type of push-core.

use std::error::Error as StdError;

/// A boxed error from a hub's backend (Redis, …), kept opaque.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Everything that can go wrong in push-core and in a [`Hub`](crate::Hub).
///
/// The variants split into two families that transports map to different
/// answers: bad input from the network (`Invalid*`, [`Error::MessageTooLarge`]),
/// which is the client's fault and gets a 4xx or a close code, and the hub's own
/// limits and failures ([`Error::TooManyChannels`], [`Error::Unavailable`]),
/// which get a 5xx. [`Error::is_client_error`] tells them apart.
///
/// The type stays small (24 bytes) so `Result`s of it are cheap to pass around.
///
/// ```
/// use push_core::{ChannelName, Error};
///
/// let err = "bad name!".parse::<ChannelName>().unwrap_err();
/// assert!(matches!(err, Error::InvalidChannelName { .. }));
/// assert!(err.is_client_error());
/// assert_eq!(
///     err.to_string(),
///     "invalid channel name: only A-Z a-z 0-9 and _ . : @ - are allowed"
/// );
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A channel name that is empty, too long or holds a forbidden byte.
    #[error("invalid channel name: {reason}")]
    InvalidChannelName {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An event name that is empty, too long or holds a control character.
    #[error("invalid event name: {reason}")]
    InvalidEventName {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A string that is not a cursor this library could have written.
    #[error("invalid cursor: {reason}")]
    InvalidCursor {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An idempotency key that is empty, too long or holds a byte outside
    /// visible ASCII.
    #[error("invalid idempotency key: {reason}")]
    InvalidIdempotencyKey {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An idempotency key already used, within the hub's window, for a
    /// different message (another event name or other data): a client bug,
    /// never stored.
    #[error("the idempotency key was already used for a different message")]
    IdempotencyKeyReused,
    /// A query string that is too long, repeats a parameter, or holds a bad
    /// value.
    #[error("invalid query: {reason}")]
    InvalidQuery {
        /// What is wrong with it.
        reason: Box<str>,
    },
    /// Data published as JSON that is not one JSON value (or nests deeper
    /// than [`MAX_JSON_DEPTH`](crate::MAX_JSON_DEPTH)); also what
    /// [`Message::json`](crate::Message::json) answers for a message that was
    /// not published as JSON or does not fit the type asked for.
    #[error("invalid JSON: {reason}")]
    InvalidJson {
        /// What is wrong with it.
        reason: Box<str>,
    },
    /// A response that does not follow the wire protocol (seen by clients).
    #[error("invalid response: {reason}")]
    InvalidResponse {
        /// What is wrong with it.
        reason: Box<str>,
    },
    /// A message larger than the hub accepts.
    #[error("message of {size} bytes is larger than the limit of {limit} bytes")]
    MessageTooLarge {
        /// The message's size: data plus event name, in bytes.
        size: usize,
        /// The hub's limit.
        limit: usize,
    },
    /// The hub holds as many channels as it may, and none of them can be freed:
    /// every one has a subscriber. For a subscribe or read that would create a
    /// channel, the limit may be the one on channels nothing was published to
    /// yet ([`MemoryHubConfig::max_unpublished_channels`](crate::MemoryHubConfig::max_unpublished_channels)).
    #[error("too many channels: the hub holds its limit of {limit} channels, all in use")]
    TooManyChannels {
        /// The configured maximum that was reached.
        limit: usize,
    },
    /// A configuration that cannot work.
    #[error("invalid configuration: {reason}")]
    InvalidConfig {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The hub's backend could not be reached or failed; the operation did not
    /// happen (a publish that fails with this was not published).
    #[error("hub unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// The hub's backend failed after the operation was sent: it may have
    /// happened. A publish that fails with this may have been stored; retry
    /// it with the same idempotency key, which answers the stored message's
    /// cursor if it was.
    #[error("hub unavailable, outcome unknown: {0}")]
    OutcomeUnknown(#[source] BoxError),
}

impl Error {
    /// `true` when the error is caused by the caller's input (a 4xx on HTTP),
    /// `false` when it is the hub's limit or failure (a 5xx).
    pub fn is_client_error(&self) -> bool {
        self.http_status() < 500
    }

    /// The HTTP status every transport answers this error with.
    pub fn http_status(&self) -> u16 {
        match self {
            Error::InvalidChannelName { .. }
            | Error::InvalidEventName { .. }
            | Error::InvalidCursor { .. }
            | Error::InvalidIdempotencyKey { .. }
            | Error::InvalidQuery { .. }
            | Error::InvalidJson { .. } => 400,
            Error::MessageTooLarge { .. } => 413,
            Error::IdempotencyKeyReused => 422,
            Error::InvalidConfig { .. } => 500,
            Error::InvalidResponse { .. } => 502,
            Error::TooManyChannels { .. } | Error::Unavailable(_) | Error::OutcomeUnknown(_) => 503,
        }
    }

    /// A stable, machine-readable name for the error, sent as `code` in JSON
    /// error bodies (see docs/protocol.md).
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidChannelName { .. } => "invalid_channel",
            Error::InvalidEventName { .. } => "invalid_event",
            Error::InvalidCursor { .. } => "invalid_cursor",
            Error::InvalidIdempotencyKey { .. } => "invalid_idempotency_key",
            Error::IdempotencyKeyReused => "idempotency_key_reused",
            Error::InvalidQuery { .. } => "invalid_query",
            Error::InvalidJson { .. } => "invalid_json",
            Error::InvalidResponse { .. } => "invalid_response",
            Error::MessageTooLarge { .. } => "message_too_large",
            Error::TooManyChannels { .. } => "too_many_channels",
            Error::InvalidConfig { .. } => "invalid_config",
            Error::Unavailable(_) | Error::OutcomeUnknown(_) => "unavailable",
        }
    }

    /// For a failure of the hub's backend, whether the operation may have
    /// happened anyway: `Some(false)` for [`Error::Unavailable`] (it did not),
    /// `Some(true)` for [`Error::OutcomeUnknown`] (it may have); `None` for
    /// every other error (nothing was attempted). Sent as `outcome` in JSON
    /// error bodies: `"not_done"` or `"unknown"`.
    pub fn may_have_happened(&self) -> Option<bool> {
        match self {
            Error::Unavailable(_) => Some(false),
            Error::OutcomeUnknown(_) => Some(true),
            _ => None,
        }
    }

    /// An [`Error::InvalidQuery`] saying `reason`.
    pub fn invalid_query(reason: impl Into<Box<str>>) -> Self {
        Error::InvalidQuery {
            reason: reason.into(),
        }
    }

    /// An [`Error::InvalidJson`] saying `reason`.
    pub fn invalid_json(reason: impl Into<Box<str>>) -> Self {
        Error::InvalidJson {
            reason: reason.into(),
        }
    }

    /// An [`Error::InvalidResponse`] saying `reason`.
    pub fn invalid_response(reason: impl Into<Box<str>>) -> Self {
        Error::InvalidResponse {
            reason: reason.into(),
        }
    }

    /// Wraps a backend failure after which the operation did not happen.
    pub fn unavailable(source: impl Into<BoxError>) -> Self {
        Error::Unavailable(source.into())
    }

    /// Wraps a backend failure after which the operation may have happened.
    pub fn outcome_unknown(source: impl Into<BoxError>) -> Self {
        Error::OutcomeUnknown(source.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_small() {
        assert!(size_of::<Error>() <= 24);
    }

    #[test]
    fn unavailable_keeps_its_source() {
        let err = Error::unavailable("connection refused");
        assert!(!err.is_client_error());
        assert_eq!(err.to_string(), "hub unavailable: connection refused");
        assert!(StdError::source(&err).is_some());
    }
}
