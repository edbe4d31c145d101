//! `Publisher`: `POST /pub/{channel}` from Rust, exactly once: every publish
//! carries an `Idempotency-Key`, and what may be retried is retried with the
//! same key, as push.js's `publish()` does (docs/protocol.md §1.7, §1.8).

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::Full;
use push_core::{Backoff, ChannelName, Cursor, IdempotencyKey, Publication};

use super::{HttpOptions, Sender, parse_url, read_body, within};
use crate::ClientError;

/// The header a publish names its idempotency key with.
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// How a [`Publisher`] publishes.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PublisherConfig {
    /// Headers sent with every publish (the publisher token:
    /// [`with_token`](Self::with_token)), and TLS.
    pub http: HttpOptions,
    /// How many times a publish that may be retried is retried (default 3,
    /// as push.js): after a network error, a timeout, `408`, `429` or a
    /// `5xx` (but `501`).
    pub retries: u32,
    /// The first retry delay (default 250 ms); it doubles, with jitter, up
    /// to `max_backoff` (default 4 s).
    pub initial_backoff: Duration,
    /// The longest retry delay.
    pub max_backoff: Duration,
    /// How long one attempt may take (default 30 s).
    pub request_timeout: Duration,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        PublisherConfig {
            http: HttpOptions::default(),
            retries: 3,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(4),
            request_timeout: Duration::from_secs(30),
        }
    }
}

crate::client_options!(PublisherConfig);

impl PublisherConfig {
    /// Sends `Authorization: Bearer {token}`: push-server's publisher token.
    #[must_use]
    pub fn with_token(self, token: &str) -> Self {
        self.with_header(AUTHORIZATION, format!("Bearer {token}"))
    }

    /// Sets [`retries`](Self::retries).
    #[must_use]
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Sets the retry delays: from `initial`, doubling up to `max`.
    #[must_use]
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max;
        self
    }

    /// Sets [`request_timeout`](Self::request_timeout).
    #[must_use]
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }
}

/// Whether a publish that failed may have been stored anyway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It was not published: a `4xx`, a `503` with `"outcome":"not_done"`,
    /// or a connection that could not be made, on every attempt.
    NotPublished,
    /// It may have been published: an attempt timed out, lost its
    /// connection after sending, or got a `503` with `"outcome":"unknown"`
    /// or another `5xx`. Publishing it again with the same
    /// [`key`](PublishError::key) stores it at most once.
    Unknown,
}

/// A publish that did not get its cursor: the last attempt's error, and
/// whether the message may have been stored ([`Outcome`]).
///
/// ```
/// use push_http::ClientError;
/// use push_http::client::{Outcome, PublishError};
///
/// fn report(err: &PublishError) -> &'static str {
///     match err.outcome() {
///         Outcome::NotPublished => "not published: fix it, or try later",
///         Outcome::Unknown => "may be published: retry with err.key() to be sure",
///     }
/// }
/// # let _ = report;
/// ```
#[derive(Debug, thiserror::Error)]
#[error("{} after {attempts} attempt(s): {error}", match outcome {
    Outcome::NotPublished => "not published",
    Outcome::Unknown => "may have been published",
})]
pub struct PublishError {
    outcome: Outcome,
    key: IdempotencyKey,
    attempts: u32,
    #[source]
    error: ClientError,
}

impl PublishError {
    /// Whether the message may have been stored.
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// `true` when it may have been stored ([`Outcome::Unknown`]).
    pub fn may_have_published(&self) -> bool {
        self.outcome == Outcome::Unknown
    }

    /// The idempotency key every attempt carried: publish again with it
    /// ([`Publication::with_key`]) to store the message at most once.
    pub fn key(&self) -> &IdempotencyKey {
        &self.key
    }

    /// How many requests were sent.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The last attempt's error: the server's status and code
    /// ([`ClientError::Status`]), a timeout, a network error, …
    pub fn error(&self) -> &ClientError {
        &self.error
    }

    /// The last attempt's error, owned.
    pub fn into_error(self) -> ClientError {
        self.error
    }
}

/// Publishes over HTTP (`POST {base}/pub/{channel}`, docs/protocol.md §1.8),
/// each message exactly once: every publish carries an `Idempotency-Key`
/// (the [`Publication`]'s own, or a fresh random one), and a network error,
/// a timeout, `408`, `429` or a `5xx` is retried with the same key after a
/// backoff, up to [`PublisherConfig::retries`] times. A server that stored
/// the first attempt answers the retry with the same cursor and stores
/// nothing. When it gives up, [`PublishError::outcome`] says whether the
/// message may have been stored.
///
/// ```no_run
/// use push_http::client::{Publisher, PublisherConfig};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let config = PublisherConfig::default().with_token("publisher-secret");
/// let publisher = Publisher::new("http://127.0.0.1:8080", config)?;
/// let id = publisher.publish(&"news".parse()?, "hello").await?;
/// println!("published as {id}");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Publisher {
    base: Uri,
    config: PublisherConfig,
    send: Sender,
}

impl Publisher {
    /// A publisher to the server at `base_url` (`http://host:8080`, or with
    /// a path prefix: `https://example.com/live`), over a pooled HTTP/1.1
    /// client of its own.
    ///
    /// # Errors
    /// [`ClientError::InvalidUrl`] for a URL that is not `http://` (or
    /// `https://` with the `rustls` feature) with a host;
    /// [`ClientError::InvalidHeader`] for a header that is not valid HTTP.
    pub fn new(base_url: &str, config: PublisherConfig) -> Result<Self, ClientError> {
        let send = Sender::new(&config.http)?;
        Self::with_sender(base_url, config, send)
    }

    /// A publisher that sends through `send` (a proxy, a shared pool); the
    /// config's TLS settings are then the sender's business.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn with_sender(
        base_url: &str,
        config: PublisherConfig,
        send: Sender,
    ) -> Result<Self, ClientError> {
        config.http.check()?;
        Ok(Publisher {
            base: parse_url(base_url)?,
            config,
            send,
        })
    }

    /// Publishes `data` to `channel`; the message's cursor.
    ///
    /// # Errors
    /// [`PublishError`]: the last attempt's error, and whether the message
    /// may have been stored.
    pub async fn publish(
        &self,
        channel: &ChannelName,
        data: impl Into<Bytes>,
    ) -> Result<Cursor, PublishError> {
        self.publish_with(channel, Publication::new(data), None)
            .await
    }

    /// Publishes `publication` (its data, event name and idempotency key)
    /// to `channel`, with `content_type` as the request's `Content-Type`
    /// when given, and `application/json` for a JSON publication when not
    /// (`Publication::json_value(&value)?`: subscribers' envelopes carry it
    /// as JSON, not as a string); the message's cursor.
    ///
    /// # Errors
    /// [`PublishError`]: the last attempt's error, and whether the message
    /// may have been stored.
    pub async fn publish_with(
        &self,
        channel: &ChannelName,
        publication: Publication,
        content_type: Option<&str>,
    ) -> Result<Cursor, PublishError> {
        let key = match publication.key() {
            Some(key) => key.clone(),
            None => fresh_key(),
        };
        let json = publication.kind() == push_core::ContentKind::Json;
        let content_type = content_type.or(json.then_some("application/json"));
        let (event, data) = publication.into_parts();
        let fail = |error: ClientError| PublishError {
            outcome: Outcome::NotPublished,
            key: key.clone(),
            attempts: 0,
            error,
        };
        let content_type = content_type
            .map(HeaderValue::from_str)
            .transpose()
            .map_err(|err| {
                fail(ClientError::InvalidHeader {
                    reason: format!("Content-Type: {err}"),
                })
            })?;
        let uri = self
            .uri(channel, event.as_ref().map(push_core::EventName::as_str))
            .map_err(fail)?;
        let mut backoff = Backoff::new(self.config.initial_backoff, self.config.max_backoff);
        let mut outcome = Outcome::NotPublished;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let attempt = self.attempt(&uri, &data, content_type.as_ref(), &key);
            let failure = match within(self.config.request_timeout, attempt).await {
                Ok(cursor) => return Ok(cursor),
                Err(error) => Failure::of(error),
            };
            if failure.outcome == Outcome::Unknown {
                outcome = Outcome::Unknown;
            }
            if !failure.retry || attempts > self.config.retries {
                return Err(PublishError {
                    outcome,
                    key,
                    attempts,
                    error: failure.error,
                });
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// Publishes `publication` as [ephemeral](Publication::ephemeral)
    /// (`?store=false`): the subscribers live now get it, nothing is
    /// stored, so there is no id to answer and no key to retry with. Sent
    /// once (a retry could deliver it twice); its key, if any, is dropped.
    ///
    /// # Errors
    /// The server's refusal, or the request's failure ([`ClientError`]).
    pub async fn publish_ephemeral(
        &self,
        channel: &ChannelName,
        publication: Publication,
    ) -> Result<(), ClientError> {
        let json = publication.kind() == push_core::ContentKind::Json;
        let (event, data) = publication.into_parts();
        let uri = self.uri_with(
            channel,
            event.as_ref().map(push_core::EventName::as_str),
            &[("store", "false")],
        )?;
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .body(Full::new(data))
            .map_err(ClientError::request)?;
        let headers = request.headers_mut();
        if json {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        self.config.http.apply(headers);
        let exchange = async {
            let response = self.send.send(request).await?;
            let status = response.status();
            let body = read_body(response.into_body(), MAX_ANSWER_BYTES).await?;
            if status.is_success() {
                Ok(())
            } else {
                Err(ClientError::status(status.as_u16(), &body))
            }
        };
        within(self.config.request_timeout, exchange).await
    }

    /// `{base}/pub/{channel}[?event=NAME]`.
    fn uri(&self, channel: &ChannelName, event: Option<&str>) -> Result<Uri, ClientError> {
        self.uri_with(channel, event, &[])
    }

    /// `{base}/pub/{channel}[?event=NAME]` and `more` parameters.
    fn uri_with(
        &self,
        channel: &ChannelName,
        event: Option<&str>,
        more: &[(&str, &str)],
    ) -> Result<Uri, ClientError> {
        let path = format!(
            "{}/pub/{}",
            self.base.path().trim_end_matches('/'),
            channel.as_str()
        );
        // Event names may hold spaces and more: escaped as a form value.
        let event = event
            .map(|event| form_urlencoded::byte_serialize(event.as_bytes()).collect::<String>());
        let params: Vec<(&str, &str)> = event
            .as_deref()
            .map(|event| ("event", event))
            .into_iter()
            .chain(more.iter().copied())
            .collect();
        let target = crate::path_with_params(&path, self.base.query(), &params);
        let mut parts = self.base.clone().into_parts();
        parts.path_and_query = target.parse().ok();
        Uri::from_parts(parts).map_err(|_| ClientError::InvalidUrl {
            url: self.base.to_string(),
            reason: "the publish path cannot be added to it",
        })
    }

    /// One request: the cursor of a `2xx`, or why not.
    async fn attempt(
        &self,
        uri: &Uri,
        data: &Bytes,
        content_type: Option<&HeaderValue>,
        key: &IdempotencyKey,
    ) -> Result<Cursor, ClientError> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(uri.clone())
            .body(Full::new(data.clone()))
            .map_err(ClientError::request)?;
        let headers = request.headers_mut();
        let key = HeaderValue::from_str(key.as_str()).map_err(ClientError::request)?;
        headers.insert(IDEMPOTENCY_KEY, key);
        if let Some(content_type) = content_type {
            headers.insert(CONTENT_TYPE, content_type.clone());
        }
        self.config.http.apply(headers);
        let response = self.send.send(request).await?;
        let status = response.status();
        let body = read_body(response.into_body(), MAX_ANSWER_BYTES).await?;
        if !status.is_success() {
            return Err(ClientError::status(status.as_u16(), &body));
        }
        let id = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|answer| answer.get("id")?.as_str()?.parse::<Cursor>().ok());
        id.ok_or_else(|| {
            push_core::Error::invalid_response("a publish answer without an id").into()
        })
    }
}

/// The largest publish answer read (`{"id":…}`, or an error).
const MAX_ANSWER_BYTES: usize = 64 << 10;

/// One failed attempt: its error, whether it may have stored the message,
/// and whether retrying (with the same key) may help.
struct Failure {
    error: ClientError,
    outcome: Outcome,
    retry: bool,
}

impl Failure {
    fn of(error: ClientError) -> Self {
        let (outcome, retry) = match &error {
            // Never connected: nothing was sent.
            ClientError::Request(source) if is_connect(source.as_ref()) => {
                (Outcome::NotPublished, true)
            }
            ClientError::Request(_) | ClientError::Timeout(_) => (Outcome::Unknown, true),
            ClientError::Status { status: 503, .. } => match error.may_have_happened() {
                Some(true) => (Outcome::Unknown, true),
                _ => (Outcome::NotPublished, true),
            },
            ClientError::Status { status: 501, .. } => (Outcome::NotPublished, false),
            ClientError::Status { status, .. } if *status >= 500 => (Outcome::Unknown, true),
            ClientError::Status {
                status: 408 | 429, ..
            } => (Outcome::NotPublished, true),
            // A 2xx the publisher cannot read: it was stored.
            ClientError::Protocol(_) => (Outcome::Unknown, false),
            _ => (Outcome::NotPublished, false),
        };
        Failure {
            error,
            outcome,
            retry,
        }
    }
}

/// `true` for hyper-util's "could not connect" (nothing was sent).
fn is_connect(error: &(dyn std::error::Error + 'static)) -> bool {
    error
        .downcast_ref::<hyper_util::client::legacy::Error>()
        .is_some_and(hyper_util::client::legacy::Error::is_connect)
}

/// A fresh idempotency key: 128 random bits in hex (std's per-process
/// random hasher keys, a counter and the clock).
fn fresh_key() -> IdempotencyKey {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let high = RandomState::new().hash_one((count, now));
    let low = RandomState::new().hash_one((high, count));
    let text = format!("{high:016x}{low:016x}");
    // 32 hex digits always make a valid key; the fallback is never taken.
    IdempotencyKey::new(&text).unwrap_or_else(|_| fallback_key())
}

#[allow(clippy::expect_used)]
fn fallback_key() -> IdempotencyKey {
    IdempotencyKey::new("push-publish").expect("a valid literal key")
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("base", &self.base)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fresh_and_valid() {
        let a = fresh_key();
        let b = fresh_key();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 32);
    }

    #[test]
    fn failures_say_what_may_have_happened() {
        let status = |status, body: &str| Failure::of(ClientError::status(status, body.as_bytes()));
        let unknown = r#"{"error":{"code":"unavailable","message":"m","outcome":"unknown"}}"#;
        let not_done = r#"{"error":{"code":"unavailable","message":"m","outcome":"not_done"}}"#;
        let cases = [
            (status(503, unknown), Outcome::Unknown, true),
            (status(503, not_done), Outcome::NotPublished, true),
            (status(503, ""), Outcome::NotPublished, true),
            (status(500, ""), Outcome::Unknown, true),
            (status(408, ""), Outcome::NotPublished, true),
            (status(429, ""), Outcome::NotPublished, true),
            (status(400, ""), Outcome::NotPublished, false),
            (status(422, ""), Outcome::NotPublished, false),
            (status(501, ""), Outcome::NotPublished, false),
            (
                Failure::of(ClientError::Timeout(Duration::from_secs(1))),
                Outcome::Unknown,
                true,
            ),
        ];
        for (n, (failure, outcome, retry)) in cases.into_iter().enumerate() {
            assert_eq!(
                (failure.outcome, failure.retry),
                (outcome, retry),
                "case {n}"
            );
        }
    }
}
