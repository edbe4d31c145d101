//! The polling handler: `GET …?since=CURSOR` answered at once from the hub.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::Full;
use push_core::wire::{self, ChannelLocator, Query, json};
use push_core::{Error, Hub};

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
    /// The longest query string accepted (default 1 KiB).
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
    config: Arc<PollConfig>,
}

impl<H> Clone for PollHandler<H> {
    fn clone(&self) -> Self {
        PollHandler {
            hub: self.hub.clone(),
            config: self.config.clone(),
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
        PollHandler {
            hub,
            config: Arc::new(config),
        }
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &PollConfig {
        &self.config
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

    async fn answer(&self, uri: &Uri, headers: &HeaderMap) -> Result<Response<Full<Bytes>>, Error> {
        let config = &*self.config;
        let query = Query::parse(uri.query(), config.max_query_len)?;
        let channel = config.channel.locate(uri.path(), &query)?;
        let start = query.start()?;
        let limit = query
            .count("limit", config.max_batch)?
            .unwrap_or(config.max_batch);
        let batch = self.hub.read(&channel, start, limit).await?;

        let unchanged = batch.signal.is_none()
            && headers
                .get_all(IF_NONE_MATCH)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| wire::if_none_match_names(v, batch.cursor));
        let (status, body) = if unchanged {
            (StatusCode::NOT_MODIFIED, Bytes::new())
        } else {
            (StatusCode::OK, json::batch(&batch))
        };
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        if status == StatusCode::OK {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        headers.insert(
            CACHE_CONTROL,
            HeaderValue::from_static(wire::CACHE_REVALIDATE),
        );
        headers.insert(ETAG, header_value(wire::etag(batch.cursor)));
        headers.insert(
            wire::POLL_INTERVAL_HEADER,
            header_value(config.interval.as_millis().to_string()),
        );
        Ok(response)
    }
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

/// Our header values (cursors, numbers) are always valid; an empty value
/// stands in for the impossible.
fn header_value(value: String) -> HeaderValue {
    HeaderValue::try_from(value).unwrap_or_else(|_| HeaderValue::from_static(""))
}
