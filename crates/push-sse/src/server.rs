//! The SSE handler: one endless response per subscriber, fed by the hub.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::request::Parts;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::{Body, Frame, SizeHint};
use push_core::wire::{self, ChannelLocator, Query, json};
use push_core::{Backoff, Cursor, Error, Hub, Item, Start};
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::encode::{self, Format, KEEP_ALIVE};

/// The header a reconnecting `EventSource` sends: the id of the last event it
/// received.
pub const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");
/// Tells nginx (and proxies that copy it) not to buffer the stream.
pub const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// How an [`SseHandler`] reads requests and keeps its streams.
///
/// ```
/// use std::time::Duration;
/// use push_sse::SseConfig;
///
/// let config = SseConfig::default().with_max_lifetime(Duration::from_secs(3600));
/// assert_eq!(config.keep_alive, Duration::from_secs(15));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SseConfig {
    /// Where the channel name is in the request (default: the last path
    /// segment, as in `GET /sse/{channel}`).
    pub channel: ChannelLocator,
    /// A comment is written after this long without a write (default 15 s):
    /// it keeps idle proxies from closing the stream, and a failed write is
    /// how a peer that vanished without closing is noticed.
    pub keep_alive: Duration,
    /// The reconnection delay advised to clients with `retry:` when a stream
    /// opens and when the server ends it (default 3 s).
    pub retry: Duration,
    /// When set, a stream ends cleanly after about this long (spread ±10% so
    /// that streams opened together do not end together), with a `retry:`
    /// hint: the client reconnects, perhaps to another node, and resumes.
    /// Default: none.
    pub max_lifetime: Option<Duration>,
    /// The longest query string accepted (default 8 KiB, [`wire::DEFAULT_MAX_QUERY_LEN`]).
    pub max_query_len: usize,
    /// When this token is cancelled (the server is shutting down), every
    /// stream ends at once with a `retry:` hint, and a stream opened after
    /// that ends right after its opening: clients reconnect, to another node
    /// or to the restarted server, and resume. Default: none.
    pub shutdown: Option<CancellationToken>,
}

impl Default for SseConfig {
    fn default() -> Self {
        SseConfig {
            channel: ChannelLocator::default(),
            keep_alive: Duration::from_secs(15),
            retry: Duration::from_secs(3),
            max_lifetime: None,
            max_query_len: wire::DEFAULT_MAX_QUERY_LEN,
            shutdown: None,
        }
    }
}

impl SseConfig {
    /// Sets [`channel`](Self::channel).
    #[must_use]
    pub fn with_channel(mut self, channel: ChannelLocator) -> Self {
        self.channel = channel;
        self
    }

    /// Sets [`keep_alive`](Self::keep_alive) (at least 1 ms).
    #[must_use]
    pub fn with_keep_alive(mut self, interval: Duration) -> Self {
        self.keep_alive = interval.max(Duration::from_millis(1));
        self
    }

    /// Sets [`retry`](Self::retry).
    #[must_use]
    pub fn with_retry(mut self, delay: Duration) -> Self {
        self.retry = delay;
        self
    }

    /// Sets [`max_lifetime`](Self::max_lifetime).
    #[must_use]
    pub fn with_max_lifetime(mut self, lifetime: Duration) -> Self {
        self.max_lifetime = Some(lifetime);
        self
    }

    /// Sets [`max_query_len`](Self::max_query_len).
    #[must_use]
    pub fn with_max_query_len(mut self, max_query_len: usize) -> Self {
        self.max_query_len = max_query_len;
        self
    }

    /// Sets [`shutdown`](Self::shutdown).
    #[must_use]
    pub fn with_shutdown(mut self, token: CancellationToken) -> Self {
        self.shutdown = Some(token);
        self
    }
}

/// What every stream of a handler shares.
#[derive(Debug)]
struct Shared {
    config: SseConfig,
    /// The `retry:` block that opens and closes every stream.
    retry_block: Bytes,
    open: AtomicUsize,
}

/// Server-Sent Events over any [`Hub`]: a hyper `Service`, or call
/// [`handle`](Self::handle) from your own.
///
/// `GET …/{channel}` answers `200 text/event-stream` and then streams each
/// message as one event whose `id:` is its cursor. A reconnecting client
/// resumes after its `Last-Event-ID` header, else after `?since=`; a gap or
/// reset comes first as its own `push.gap` / `push.reset` event. `?format=json`
/// sends each message's JSON envelope as the data instead (see [`Format`]).
/// A stream waits on the hub's wake-up, keeps nothing but its position and a
/// timer, and is released as soon as the client is gone.
///
/// ```
/// use push_core::MemoryHub;
/// use push_sse::{SseConfig, SseHandler};
///
/// let sse = SseHandler::new(MemoryHub::new(), SseConfig::default());
/// assert_eq!(sse.open_streams(), 0);
/// ```
#[derive(Debug)]
pub struct SseHandler<H> {
    hub: Arc<H>,
    shared: Arc<Shared>,
}

impl<H> Clone for SseHandler<H> {
    fn clone(&self) -> Self {
        SseHandler {
            hub: self.hub.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<H: Hub> SseHandler<H> {
    /// A handler over `hub`.
    pub fn new(hub: H, config: SseConfig) -> Self {
        Self::from_shared(Arc::new(hub), config)
    }

    /// A handler over a hub shared with other handlers.
    pub fn from_shared(hub: Arc<H>, config: SseConfig) -> Self {
        SseHandler {
            hub,
            shared: Arc::new(Shared {
                retry_block: encode::retry_block(config.retry),
                config,
                open: AtomicUsize::new(0),
            }),
        }
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &SseConfig {
        &self.shared.config
    }

    /// How many event streams are open right now.
    pub fn open_streams(&self) -> usize {
        self.shared.open.load(Ordering::Relaxed)
    }

    /// Answers one request. The body of the request is ignored.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<SseBody<H::Subscription>> {
        self.handle_until(request, None).await
    }

    /// Answers one request with a stream that also ends at `deadline` (with a
    /// `retry:` hint), for example when the subscriber's token expires.
    pub async fn handle_until<B>(
        &self,
        request: Request<B>,
        deadline: Option<Instant>,
    ) -> Response<SseBody<H::Subscription>> {
        let asked = {
            let (parts, _body) = request.into_parts();
            if parts.method != Method::GET {
                let mut response = error_response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "an event stream answers GET only",
                );
                response
                    .headers_mut()
                    .insert(ALLOW, HeaderValue::from_static("GET"));
                return response;
            }
            match self.read_request(&parts) {
                Ok(asked) => asked,
                Err(err) => return error_for(&err),
            }
        };
        let (subscription, head) =
            match push_core::subscribe_pinned(&*self.hub, &asked.channel, asked.start).await {
                Ok(started) => started,
                Err(err) => return error_for(&err),
            };
        let config = &self.shared.config;
        let now = Instant::now();
        let lifetime = config
            .max_lifetime
            .map(|lifetime| later(now, Backoff::new(lifetime, lifetime).spread(lifetime, 0.1)));
        let end = match (lifetime, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let live = Live {
            subscription,
            format: asked.format,
            keep_alive: config.keep_alive,
            end,
            wrote: false,
            shutdown: config
                .shutdown
                .clone()
                .map(|token| Box::pin(token.cancelled_owned())),
            open: Open::new(&self.shared),
        };
        let body = SseBody {
            pending: Some(match head {
                // The client's last event ID starts at the head, so that a
                // reconnect before any message still resumes exactly.
                Some(head) => encode::opening_block(head, config.retry, asked.format),
                None => self.shared.retry_block.clone(),
            }),
            live: Some(live),
            timer: Some(sleep_until(next_tick(now, config.keep_alive, end))),
        };
        let mut response = Response::new(body);
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(
            CACHE_CONTROL,
            HeaderValue::from_static(wire::CACHE_REVALIDATE),
        );
        headers.insert(X_ACCEL_BUFFERING, HeaderValue::from_static("no"));
        response
    }

    fn read_request(&self, parts: &Parts) -> Result<Asked, Error> {
        let config = &self.shared.config;
        let query = Query::parse(parts.uri.query(), config.max_query_len)?;
        let channel = config.channel.locate(parts.uri.path(), &query)?;
        // `since` is checked even when the header wins: a bad URL is a bug.
        let since = query.start()?;
        let start = match last_event_id(parts)? {
            Some(cursor) => Start::After(cursor),
            None => since,
        };
        let format = match query.get("format")?.as_deref() {
            None | Some("plain") => Format::Plain,
            Some("json") => Format::Json,
            Some(_) => {
                return Err(Error::InvalidQuery {
                    reason: "`format` must be `plain` or `json`".into(),
                });
            }
        };
        Ok(Asked {
            channel,
            start,
            format,
        })
    }
}

/// The `Last-Event-ID` header's cursor: none when absent or empty (a client
/// whose last event ID was reset sends nothing), an error when malformed.
fn last_event_id(parts: &Parts) -> Result<Option<Cursor>, Error> {
    let mut values = parts.headers.get_all(LAST_EVENT_ID).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let invalid = |reason| Error::InvalidCursor { reason };
    if values.next().is_some() {
        return Err(invalid("Last-Event-ID is given more than once"));
    }
    let text = value
        .to_str()
        .map_err(|_| invalid("Last-Event-ID is not text"))?
        .trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<Cursor>()
        .map(Some)
        .map_err(|_| invalid("Last-Event-ID is not a cursor this server wrote"))
}

/// What a request asks for: all a stream keeps of it.
struct Asked {
    channel: push_core::ChannelName,
    start: Start,
    format: Format,
}

impl<H: Hub, B: Send + 'static> hyper::service::Service<Request<B>> for SseHandler<H> {
    type Response = Response<SseBody<H::Subscription>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<B>) -> Self::Future {
        let handler = self.clone();
        Box::pin(async move { Ok(handler.handle(request).await) })
    }
}

/// Counts an open stream for as long as it lives.
#[derive(Debug)]
struct Open(Arc<Shared>);

impl Open {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.open.fetch_add(1, Ordering::Relaxed);
        Open(shared.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct Live<S> {
    subscription: S,
    format: Format,
    keep_alive: Duration,
    end: Option<Instant>,
    /// Something was written since the timer last fired: no comment needed.
    wrote: bool,
    /// Boxed: a server without a shutdown token pays one word per stream.
    shutdown: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    open: Open,
}

fn next_tick(now: Instant, keep_alive: Duration, end: Option<Instant>) -> Instant {
    let tick = later(now, keep_alive);
    end.map_or(tick, |end| tick.min(end))
}

/// `after` from `now`, or as far ahead as an `Instant` goes: no setting,
/// however large, overflows (a year stands for "never").
fn later(now: Instant, after: Duration) -> Instant {
    now.checked_add(after.min(Duration::from_secs(365 * 86_400)))
        .unwrap_or(now)
}

pin_project_lite::pin_project! {
    /// The body of an [`SseHandler`] answer: an endless event stream, or an
    /// error's JSON.
    ///
    /// Each message is one frame holding its shared encoding; a keep-alive
    /// comment goes out when nothing was written for a whole interval; the
    /// stream ends (with a `retry:` hint) at its lifetime or deadline, on
    /// shutdown, or when the hub closes. hyper drops the body when the client goes away, which
    /// drops the subscription.
    #[derive(Debug)]
    pub struct SseBody<S> {
        pending: Option<Bytes>,
        live: Option<Live<S>>,
        #[pin]
        timer: Option<Sleep>,
    }
}

impl<S> SseBody<S> {
    fn fixed(bytes: Bytes) -> Self {
        SseBody {
            pending: Some(bytes),
            live: None,
            timer: None,
        }
    }
}

impl<S: Stream<Item = Item> + Unpin> Body for SseBody<S> {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let mut this = self.project();
        if let Some(bytes) = this.pending.take() {
            return Poll::Ready(Some(Ok(Frame::data(bytes))));
        }
        let Some(live) = this.live.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(shutdown) = live.shutdown.as_mut()
            && shutdown.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(end(this.live));
        }
        match Pin::new(&mut live.subscription).poll_next(cx) {
            Poll::Ready(Some(item)) => {
                live.wrote = true;
                let bytes = match &item {
                    Item::Message(message) => encode::message_event(message, live.format),
                    Item::Signal(signal) => encode::signal_event(signal),
                };
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            Poll::Ready(None) => return Poll::Ready(end(this.live)),
            Poll::Pending => {}
        }
        loop {
            let Some(timer) = this.timer.as_mut().as_pin_mut() else {
                return Poll::Pending;
            };
            ready!(timer.poll(cx));
            let now = Instant::now();
            let Some(live) = this.live.as_mut() else {
                return Poll::Ready(None);
            };
            if live.end.is_some_and(|end| now >= end) {
                return Poll::Ready(end(this.live));
            }
            let tick = next_tick(now, live.keep_alive, live.end);
            if let Some(timer) = this.timer.as_mut().as_pin_mut() {
                timer.reset(tick);
            }
            if !std::mem::take(&mut live.wrote) {
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(KEEP_ALIVE)))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_none() && self.live.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.pending, &self.live) {
            (Some(bytes), None) => SizeHint::with_exact(bytes.len() as u64),
            (None, None) => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// Ends the stream: drops the subscription, and hands out the `retry:` block.
fn end<S>(live: &mut Option<Live<S>>) -> Option<Result<Frame<Bytes>, Infallible>> {
    let live = live.take()?;
    Some(Ok(Frame::data(live.open.0.retry_block.clone())))
}

fn error_for<S>(err: &Error) -> Response<SseBody<S>> {
    let status = StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    error_response(status, err.code(), &err.to_string())
}

fn error_response<S>(status: StatusCode, code: &str, message: &str) -> Response<SseBody<S>> {
    let mut response = Response::new(SseBody::fixed(json::error(code, message)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(wire::CACHE_NEVER));
    response
}
