//! The polling handler: `GET …?since=CURSOR` answered at once from the hub.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::Full;
use push_core::wire::{self, ChannelLocator, EntityTag, Query, json};
use push_core::{Error, Hub, Start};

const POLL_INTERVAL: HeaderName = HeaderName::from_static(wire::POLL_INTERVAL_HEADER);

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
    /// The longest query string accepted (default 8 KiB, [`wire::DEFAULT_MAX_QUERY_LEN`]).
    pub max_query_len: usize,
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            channel: ChannelLocator::default(),
            max_batch: 100,
            interval: Duration::from_secs(5),
            max_query_len: wire::DEFAULT_MAX_QUERY_LEN,
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

    /// Sets [`max_query_len`](Self::max_query_len).
    #[must_use]
    pub fn with_max_query_len(mut self, max_query_len: usize) -> Self {
        self.max_query_len = max_query_len;
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

impl<H> Clone for PollHandler<H> {
    fn clone(&self) -> Self {
        PollHandler {
            hub: self.hub.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<H: Hub> PollHandler<H> {
    /// A handler reading from `hub`.
    pub fn new(hub: H, config: PollConfig) -> Self {
        Self::from_shared(Arc::new(hub), config)
    }

    /// A handler reading from a hub shared with other handlers.
    pub fn from_shared(hub: Arc<H>, config: PollConfig) -> Self {
        let interval =
            HeaderValue::from(u64::try_from(config.interval.as_millis()).unwrap_or(u64::MAX));
        PollHandler {
            hub,
            shared: Arc::new(Shared { config, interval }),
        }
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &PollConfig {
        &self.shared.config
    }

    /// Answers one request. The body of a poll request is ignored.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Full<Bytes>> {
        let (parts, _body) = request.into_parts();
        if parts.method != Method::GET && parts.method != Method::HEAD {
            let mut response = error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "polling answers GET and HEAD only",
            );
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        match self.answer(&parts.uri, &parts.headers).await {
            Ok(response) => response,
            Err(err) => error_for(&err),
        }
    }

    /// What a request asks for, read before any waiting so that the query's
    /// parse state never lives in the future.
    fn read_request<'u>(&self, uri: &'u Uri) -> Result<Asked<'u>, Error> {
        let config = &self.shared.config;
        let query = Query::parse(uri.query(), config.max_query_len)?;
        Ok(Asked {
            channel: config.channel.locate(uri.path(), &query)?,
            start: query.start()?,
            since_text: query.raw("since"),
            limit: query
                .count("limit", config.max_batch)?
                .unwrap_or(config.max_batch),
        })
    }

    async fn answer(&self, uri: &Uri, headers: &HeaderMap) -> Result<Response<Full<Bytes>>, Error> {
        let Asked {
            channel,
            start,
            since_text,
            limit,
        } = self.read_request(uri)?;
        let batch = self.hub.read(&channel, start, limit).await?;

        // The common case is a client at the head, polling from cursor C with
        // `If-None-Match: "C"`: compare those bytes as they came (a parsed
        // cursor's text is canonical, so equal cursors have equal text), and
        // send the request's own header value back as the ETag.
        let requested = headers.get_all(IF_NONE_MATCH);
        let at_head = match (start, since_text) {
            (Start::After(since), Some(text)) if since == batch.cursor => Some(text),
            _ => None,
        };
        // Formatted only when the cheap comparison cannot be used, and once.
        let tag = at_head.is_none().then(|| EntityTag::of(batch.cursor));
        let exact = match (at_head, &tag) {
            (Some(text), _) => requested
                .iter()
                .find(|v| wire::is_quoted(v.as_bytes(), text)),
            (None, Some(tag)) => requested.iter().find(|v| v.as_bytes() == tag.as_bytes()),
            (None, None) => None,
        };
        let unchanged = batch.signal.is_none()
            && (exact.is_some()
                || requested
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .any(|v| wire::if_none_match_names(v, batch.cursor)));
        let etag = match exact {
            Some(value) => value.clone(),
            None => HeaderValue::from_bytes(
                tag.unwrap_or_else(|| EntityTag::of(batch.cursor))
                    .as_bytes(),
            )
            .unwrap_or_else(|_| HeaderValue::from_static("")),
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
            HeaderValue::from_static(wire::CACHE_REVALIDATE),
        );
        headers.insert(ETAG, etag);
        headers.insert(POLL_INTERVAL, self.shared.interval.clone());
        Ok(response)
    }
}

/// What a poll asks for.
struct Asked<'u> {
    channel: push_core::ChannelName,
    start: Start,
    /// `since` as sent (still encoded), to compare with `If-None-Match`.
    since_text: Option<&'u str>,
    limit: usize,
}

impl<H: Hub, B: Send + 'static> hyper::service::Service<Request<B>> for PollHandler<H> {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<B>) -> Self::Future {
        let handler = self.clone();
        Box::pin(async move { Ok(handler.handle(request).await) })
    }
}

fn error_for(err: &Error) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    error_response(status, err.code(), &err.to_string())
}

fn error_response(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(json::error(code, message)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(wire::CACHE_NEVER));
    response
}
