//! The polling handler: `GET …?since=CURSOR` answered at once from the hub.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use push_core::wire::json;
use push_core::{ChannelName, Error, Hub, Start};
use push_http::{Access, Action, ChannelLocator, Check, EntityTag, Handler, Head, Technique};

/// How a [`PollHandler`] reads requests and what it advises clients.
///
/// ```
/// use std::time::Duration;
/// use push_poll::PollConfig;
///
/// let config = PollConfig::default()
///     .with_interval(Duration::from_secs(10))
///     .with_max_batch(50);
/// assert_eq!(config.max_batch, 50);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PollConfig {
    /// Where the channel name is in the request (default: the last path
    /// segment, as in `GET /poll/{channel}`).
    pub channel: ChannelLocator,
    /// The most messages one answer carries (default 100); a client may ask
    /// for fewer with `?limit=`.
    pub max_batch: usize,
    /// The polling interval advised to clients in the `Push-Poll-Interval`
    /// header (default 5 s).
    pub interval: Duration,
    /// The longest query string accepted (default 8 KiB, [`push_http::DEFAULT_MAX_QUERY_BYTES`]).
    pub max_query_bytes: usize,
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            channel: ChannelLocator::default(),
            max_batch: 100,
            interval: Duration::from_secs(5),
            max_query_bytes: push_http::DEFAULT_MAX_QUERY_BYTES,
        }
    }
}

impl PollConfig {
    /// Sets [`channel`](Self::channel).
    #[must_use]
    pub fn with_channel(mut self, channel: ChannelLocator) -> Self {
        self.channel = channel;
        self
    }

    /// Sets [`max_batch`](Self::max_batch) (at least 1).
    #[must_use]
    pub fn with_max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch.max(1);
        self
    }

    /// Sets [`interval`](Self::interval).
    #[must_use]
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Sets [`max_query_bytes`](Self::max_query_bytes).
    #[must_use]
    pub fn with_max_query_bytes(mut self, max: usize) -> Self {
        self.max_query_bytes = max;
        self
    }
}

/// Short polling over any [`Hub`]: a hyper `Service`, or call
/// [`handle`](Self::handle) from your own.
///
/// `GET` (or `HEAD`) `…/{channel}?since=CURSOR` answers at once with
/// `{"cursor":…,"more":…,"messages":[…]}` (and `gap` or `reset` when
/// continuity broke). The `ETag` is the batch's cursor; a request whose
/// `If-None-Match` names it gets `304 Not Modified` and no body, the cheap
/// answer to the many polls that find nothing new. Every answer is
/// `Cache-Control: no-cache`, so no cache serves it without asking, and
/// advises the interval in `Push-Poll-Interval` (milliseconds).
///
/// ```
/// use push_core::MemoryHub;
/// use push_poll::{PollConfig, PollHandler};
///
/// let hub = MemoryHub::new();
/// let poll = PollHandler::new(hub, PollConfig::default());
/// // Serve it with hyper: `serve_connection(io, poll.clone())`.
/// # let _ = poll;
/// ```
#[derive(Debug)]
pub struct PollHandler<H> {
    hub: Arc<H>,
    shared: Arc<Shared>,
}

/// The configuration, and the header values every answer repeats, made once.
#[derive(Debug)]
struct Shared {
    config: PollConfig,
    interval: HeaderValue,
}

push_http::service!(PollHandler);

impl<H: Hub> PollHandler<H> {
    /// A handler reading from `hub` (a hub, or an `Arc` of one shared with
    /// other handlers).
    pub fn new(hub: impl Into<Arc<H>>, config: PollConfig) -> Self {
        let interval =
            HeaderValue::from(u64::try_from(config.interval.as_millis()).unwrap_or(u64::MAX));
        PollHandler {
            hub: hub.into(),
            shared: Arc::new(Shared { config, interval }),
        }
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &PollConfig {
        &self.shared.config
    }

    /// Answers one request. The body of a poll request is ignored.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Full<Bytes>> {
        push_http::handle(self, request).await
    }

    /// What a poll asks for, read before any waiting so that the query's
    /// parse state never lives in the future.
    fn read(&self, head: &Head) -> Result<Asked, Error> {
        let config = &self.shared.config;
        let query = head.query()?;
        Ok(Asked {
            channel: config.channel.locate(head.uri().path(), &query)?,
            start: query.start()?,
            since: query.span("since"),
            limit: query.limit(config.max_batch)?,
        })
    }

    async fn answer(&self, parts: &Parts, asked: Asked) -> Result<Response<Full<Bytes>>, Error> {
        let Asked {
            channel,
            start,
            since,
            limit,
        } = asked;
        let batch = self.hub.read(&channel, start, limit).await?;

        // The common case is a client at the head, polling from cursor C with
        // `If-None-Match: "C"`: compare those bytes as they came (a parsed
        // cursor's text is canonical, so equal cursors have equal text), and
        // send the request's own header value back as the ETag.
        let requested = parts.headers.get_all(IF_NONE_MATCH);
        let since_text = since.and_then(|span| parts.uri.query()?.get(span));
        let at_head = match (start, since_text) {
            (Start::After(since), Some(text)) if since == batch.cursor => Some(text),
            _ => None,
        };
        // Formatted only when the cheap comparison cannot be used, and once.
        let tag = at_head.is_none().then(|| EntityTag::of(batch.cursor));
        let exact = match (at_head, &tag) {
            (Some(text), _) => requested
                .iter()
                .find(|v| push_http::is_quoted(v.as_bytes(), text)),
            (None, Some(tag)) => requested.iter().find(|v| v.as_bytes() == tag.as_bytes()),
            (None, None) => None,
        };
        let unchanged = batch.signal.is_none()
            && (exact.is_some()
                || requested
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .any(|v| push_http::if_none_match_names(v, batch.cursor)));
        let etag = match exact {
            Some(value) => value.clone(),
            None => tag
                .unwrap_or_else(|| EntityTag::of(batch.cursor))
                .to_header(),
        };
        let (status, body) = if unchanged {
            (StatusCode::NOT_MODIFIED, Bytes::new())
        } else {
            (StatusCode::OK, json::batch(&batch))
        };
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        *headers = HeaderMap::with_capacity(4);
        if status == StatusCode::OK {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        headers.insert(
            CACHE_CONTROL,
            HeaderValue::from_static(push_http::CACHE_REVALIDATE),
        );
        headers.insert(ETAG, etag);
        headers.insert(push_http::POLL_INTERVAL, self.shared.interval.clone());
        Ok(response)
    }
}

impl<H: Hub> Handler for PollHandler<H> {
    type Body = Full<Bytes>;

    fn max_query_bytes(&self) -> usize {
        self.shared.config.max_query_bytes
    }

    /// Answers a poll, once `access`'s hook allows it (its deadline limits
    /// nothing here: a poll is answered at once).
    fn serve(
        &self,
        head: Head,
        access: Access,
    ) -> impl Future<Output = Response<Full<Bytes>>> + Send + 'static {
        let read = if head.method() == Method::GET || head.method() == Method::HEAD {
            Some(self.read(&head))
        } else {
            None
        };
        let check = match &read {
            Some(Ok(asked)) => access.check(head.parts(), &asked.channel, Action::Subscribe),
            _ => Check::allowed(),
        };
        let handler = self.clone();
        let parts = head.into_parts();
        let key = push_http::poll_key(&parts, access.user.as_ref(), Technique::Poll);
        let member = push_http::member(&access, Technique::Poll);
        async move {
            let mut asked = match read {
                None => {
                    return push_http::method_not_allowed(
                        "GET, HEAD",
                        "polling answers GET and HEAD only",
                    );
                }
                Some(Err(err)) => return push_http::error_plain(&err),
                Some(Ok(asked)) => asked,
            };
            match check.await {
                Ok(mapped) => asked.channel = mapped.unwrap_or(asked.channel),
                Err(denial) => return denial.respond(),
            }
            // Present until the next poll is due, and a little more.
            let ttl = handler
                .shared
                .config
                .interval
                .saturating_add(push_http::PRESENCE_GRACE);
            if let Err(err) = handler.hub.touch(&asked.channel, &key, member, ttl).await {
                return push_http::error_plain(&err);
            }
            match handler.answer(&parts, asked).await {
                Ok(response) => response,
                Err(err) => push_http::error_plain(&err),
            }
        }
    }
}

/// What a poll asks for.
struct Asked {
    channel: ChannelName,
    start: Start,
    /// Where `since` is in the query, as sent (still encoded), to compare
    /// with `If-None-Match`.
    since: Option<std::ops::Range<usize>>,
    limit: usize,
}
