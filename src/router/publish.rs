//! `POST /pub/{channel}`: the router's own handler, publishing a request's
//! body to the hub.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Body;
use push_core::{ContentKind, Error, EventName, Hub, IdempotencyKey, Publication};
use push_http::{Access, Action, ChannelLocator, Head};

/// The header a publisher names its idempotency key with.
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Publishing over HTTP: the hub, and the limits from the router's
/// configuration.
#[derive(Debug)]
pub(super) struct Publisher<H> {
    pub(super) hub: Arc<H>,
    pub(super) enabled: bool,
    pub(super) max_message_bytes: usize,
    pub(super) body_timeout: Duration,
    pub(super) max_query_bytes: usize,
}

impl<H: Hub> Publisher<H> {
    /// Answers `POST /pub/{channel}[?event=NAME]` with `{"id":CURSOR}`
    /// (`?store=false`: an ephemeral publish, answered with
    /// `{"stored":false}`; not with an `Idempotency-Key`, which needs a
    /// stored message to compare with)
    /// (and the `channel` published to when `access`'s hook mapped it),
    /// once the hook allows it: before the body is read. A body sent as
    /// `application/json` (or `application/*+json`) is published as JSON,
    /// and refused with `400 invalid_json` when it is not one JSON value.
    pub(super) async fn publish<B>(
        &self,
        head: Head,
        body: B,
        access: Access,
    ) -> Response<Full<Bytes>>
    where
        B: Body + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if head.method() != Method::POST {
            return push_http::method_not_allowed("POST", "publish with POST");
        }
        if !self.enabled {
            return push_http::error(
                StatusCode::FORBIDDEN,
                "publish_disabled",
                "this server does not publish over HTTP",
            );
        }
        let asked = head.query().and_then(|query| {
            let channel = ChannelLocator::LastPathSegment.locate(head.uri().path(), &query)?;
            let event = match query.get("event")? {
                Some(name) => Some(name.parse::<EventName>()?),
                None => None,
            };
            let key = idempotency_key(head.headers())?;
            let ephemeral = query.flag("store")? == Some(false);
            if ephemeral && key.is_some() {
                return Err(Error::invalid_query(
                    "an ephemeral publish (store=false) takes no Idempotency-Key: nothing is stored to compare with",
                ));
            }
            Ok((channel, event, key, ephemeral))
        });
        let (mut channel, event, key, ephemeral) = match asked {
            Ok(asked) => asked,
            Err(err) => return push_http::error_for(&err),
        };
        let kind = content_kind(head.headers());
        let check = access.check(head.parts(), &channel, Action::Publish);
        drop(head);
        let mapped = match check.await {
            Ok(mapped) => mapped.is_some_and(|mapped| {
                channel = mapped;
                true
            }),
            Err(denial) => return denial.respond(),
        };
        let too_large = || {
            push_http::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "message_too_large",
                &format!(
                    "a message may hold at most {} bytes",
                    self.max_message_bytes
                ),
            )
        };
        // A declared length over the limit is refused before reading (and
        // before hyper answers `Expect: 100-continue`).
        if body.size_hint().lower() > u64::try_from(self.max_message_bytes).unwrap_or(u64::MAX) {
            return too_large();
        }
        let collected = tokio::time::timeout(
            self.body_timeout,
            Limited::new(body, self.max_message_bytes).collect(),
        )
        .await;
        let data = match collected {
            Err(_) => {
                let mut response: Response<Full<Bytes>> = push_http::error(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    "the request body did not arrive in time",
                );
                // What is left of the body is not worth reading.
                response
                    .headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
                return response;
            }
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(err)) if err.is::<http_body_util::LengthLimitError>() => return too_large(),
            Ok(Err(_)) => {
                return push_http::error(
                    StatusCode::BAD_REQUEST,
                    "unreadable_body",
                    "the request body could not be read",
                );
            }
        };
        let mut publication = match kind {
            ContentKind::Json => match Publication::json(data) {
                Ok(publication) => publication,
                Err(err) => return push_http::error_for(&err),
            },
            _ => Publication::new(data),
        };
        if let Some(event) = event {
            publication = publication.with_event(event);
        }
        if let Some(key) = key {
            publication = publication.with_key(key);
        }
        if ephemeral {
            publication = publication.ephemeral();
        }
        match self.hub.publish(&channel, publication).await {
            Ok(cursor) => {
                let mut body = Vec::with_capacity(32);
                if ephemeral {
                    body.extend_from_slice(b"{\"stored\":false");
                } else {
                    body.extend_from_slice(b"{\"id\":\"");
                    body.extend_from_slice(cursor.to_string().as_bytes());
                    body.push(b'"');
                }
                if mapped {
                    body.extend_from_slice(b",\"channel\":\"");
                    // A channel name needs no escaping in JSON.
                    body.extend_from_slice(channel.as_str().as_bytes());
                    body.push(b'"');
                }
                body.push(b'}');
                push_http::json(StatusCode::OK, Bytes::from(body))
            }
            Err(err) => {
                if !err.is_client_error() {
                    tracing::warn!(%channel, %err, "publish failed");
                }
                push_http::error_for(&err)
            }
        }
    }
}

/// What a publish's `Content-Type` says its body is (bytes without one).
fn content_kind(headers: &HeaderMap) -> ContentKind {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map_or(ContentKind::Bytes, ContentKind::of_media_type)
}

/// The `Idempotency-Key` of a publish, if it names one (once).
fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, Error> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Error::InvalidIdempotencyKey {
            reason: "Idempotency-Key is given more than once",
        });
    }
    let text = value.to_str().map_err(|_| Error::InvalidIdempotencyKey {
        reason: "only visible ASCII (! to ~) is allowed",
    })?;
    // The IETF draft sends it as a structured-field string: "key".
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    text.parse().map(Some)
}
