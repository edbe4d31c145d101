//! The SSE handler: one endless response per subscriber, fed by the hub.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response};
use hyper::body::{Body, Frame, SizeHint};
use push_core::{Backoff, ChannelName, Cursor, Error, Hub, Item, Member, Start};
use push_http::{
    Access, Action, Attended, ChannelLocator, Check, Handler, Head, Live, LiveCount, Technique,
};
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
    /// The longest query string accepted (default 8 KiB, [`push_http::DEFAULT_MAX_QUERY_BYTES`]).
    pub max_query_bytes: usize,
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
            max_query_bytes: push_http::DEFAULT_MAX_QUERY_BYTES,
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

    /// Sets [`max_query_bytes`](Self::max_query_bytes).
    #[must_use]
    pub fn with_max_query_bytes(mut self, max: usize) -> Self {
        self.max_query_bytes = max;
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
    open: LiveCount,
}

impl AsRef<LiveCount> for Shared {
    fn as_ref(&self) -> &LiveCount {
        &self.open
    }
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
/// assert_eq!(sse.connections(), 0);
/// ```
#[derive(Debug)]
pub struct SseHandler<H> {
    hub: Arc<H>,
    shared: Arc<Shared>,
}

push_http::service!(SseHandler);

impl<H: Hub> SseHandler<H> {
    /// A handler over `hub` (a hub, or an `Arc` of one shared with other
    /// handlers).
    pub fn new(hub: impl Into<Arc<H>>, config: SseConfig) -> Self {
        SseHandler {
            hub: hub.into(),
            shared: Arc::new(Shared {
                retry_block: encode::retry_block(config.retry),
                config,
                open: LiveCount::default(),
            }),
        }
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &SseConfig {
        &self.shared.config
    }

    /// How many event streams are open right now.
    pub fn connections(&self) -> usize {
        self.shared.open.get()
    }

    /// Answers one request. The body of the request is ignored.
    pub async fn handle<B>(
        &self,
        request: Request<B>,
    ) -> Response<SseBody<Attended<H::Subscription>>> {
        push_http::handle(self, request).await
    }

    /// Answers one request with a stream that also ends at `deadline` (with a
    /// `retry:` hint), for example when the subscriber's token expires.
    pub async fn handle_until<B>(
        &self,
        request: Request<B>,
        deadline: Option<Instant>,
    ) -> Response<SseBody<Attended<H::Subscription>>> {
        let (parts, _body) = request.into_parts();
        let head = Head::read(parts, self.shared.config.max_query_bytes);
        self.serve(head, Access::default().until(deadline)).await
    }

    /// Opens the stream `asked` asks for, ending at `deadline` at the latest.
    async fn open(
        &self,
        asked: Asked,
        deadline: Option<Instant>,
        member: Member,
    ) -> Response<SseBody<Attended<H::Subscription>>> {
        let (subscription, head) =
            match push_core::subscribe_pinned(&*self.hub, &asked.channel, asked.start).await {
                Ok(started) => started,
                Err(err) => return push_http::error_plain(&err),
            };
        let attended = Attended::enter(
            &*self.hub,
            &asked.channel,
            member,
            subscription,
            asked.presence,
        );
        let subscription = match attended.await {
            Ok(attended) => attended,
            Err(err) => return push_http::error_plain(&err),
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
        let streaming = Streaming {
            subscription,
            format: asked.format,
            keep_alive: config.keep_alive,
            end,
            wrote: false,
            shutdown: config
                .shutdown
                .clone()
                .map(|token| Box::pin(token.cancelled_owned())),
            live: Live::new(&self.shared),
        };
        let body = SseBody {
            pending: Some(match head {
                // The client's last event ID starts at the head, so that a
                // reconnect before any message still resumes exactly.
                Some(head) => encode::opening_block(head, config.retry, asked.format),
                None => self.shared.retry_block.clone(),
            }),
            streaming: Some(streaming),
            timer: Some(sleep_until(next_tick(now, config.keep_alive, end))),
        };
        let mut response = Response::new(body);
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(
            CACHE_CONTROL,
            HeaderValue::from_static(push_http::CACHE_REVALIDATE),
        );
        headers.insert(X_ACCEL_BUFFERING, HeaderValue::from_static("no"));
        response
    }

    fn read(&self, head: &Head) -> Result<Asked, Error> {
        let config = &self.shared.config;
        let query = head.query()?;
        let channel = config.channel.locate(head.uri().path(), &query)?;
        // `since` is checked even when the header wins: a bad URL is a bug.
        let since = query.start()?;
        let start = match last_event_id(head.headers())? {
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
            presence: query.flag("presence")?.unwrap_or(false),
        })
    }
}

impl<H: Hub> Handler for SseHandler<H> {
    type Body = SseBody<Attended<H::Subscription>>;

    fn max_query_bytes(&self) -> usize {
        self.shared.config.max_query_bytes
    }

    /// Answers a request for an event stream that also ends at the access's
    /// deadline (with a `retry:` hint), once its hook allows it. What the
    /// stream needs is read first and the head dropped.
    fn serve(
        &self,
        head: Head,
        access: Access,
    ) -> impl Future<Output = Response<Self::Body>> + Send + 'static {
        let read = (head.method() == Method::GET).then(|| self.read(&head));
        let check = match &read {
            Some(Ok(asked)) => access.check(head.parts(), &asked.channel, Action::Subscribe),
            _ => Check::allowed(),
        };
        drop(head);
        let handler = self.clone();
        let deadline = access.deadline;
        let member = push_http::member(&access, Technique::Sse);
        async move {
            match read {
                None => push_http::method_not_allowed("GET", "an event stream answers GET only"),
                Some(Err(err)) => push_http::error_plain(&err),
                Some(Ok(mut asked)) => match check.await {
                    Ok(mapped) => {
                        asked.channel = mapped.unwrap_or(asked.channel);
                        handler.open(asked, deadline, member).await
                    }
                    Err(denial) => denial.respond(),
                },
            }
        }
    }
}

/// The `Last-Event-ID` header's cursor: none when absent or empty (a client
/// whose last event ID was reset sends nothing), an error when malformed.
fn last_event_id(headers: &HeaderMap) -> Result<Option<Cursor>, Error> {
    let mut values = headers.get_all(LAST_EVENT_ID).iter();
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
    channel: ChannelName,
    start: Start,
    format: Format,
    /// Joins and leaves asked for (`presence=1`).
    presence: bool,
}

/// What an open stream holds besides its body's buffer and timer.
#[derive(Debug)]
struct Streaming<S> {
    subscription: S,
    format: Format,
    keep_alive: Duration,
    end: Option<Instant>,
    /// Something was written since the timer last fired: no comment needed.
    wrote: bool,
    /// Boxed: a server without a shutdown token pays one word per stream.
    shutdown: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    /// Counts the stream, and reaches the handler's `retry:` block.
    live: Live<Shared>,
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
        streaming: Option<Streaming<S>>,
        #[pin]
        timer: Option<Sleep>,
    }
}

/// A whole body holding `bytes` (an error's JSON), with no stream after it.
impl<S> From<Bytes> for SseBody<S> {
    fn from(bytes: Bytes) -> Self {
        SseBody {
            pending: Some(bytes),
            streaming: None,
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
        let Some(streaming) = this.streaming.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(shutdown) = streaming.shutdown.as_mut()
            && shutdown.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(end(this.streaming));
        }
        match Pin::new(&mut streaming.subscription).poll_next(cx) {
            Poll::Ready(Some(item)) => {
                streaming.wrote = true;
                let bytes = match &item {
                    Item::Message(message) => encode::message_event(message, streaming.format),
                    Item::Signal(signal) => encode::signal_event(signal),
                };
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            Poll::Ready(None) => return Poll::Ready(end(this.streaming)),
            Poll::Pending => {}
        }
        loop {
            let Some(timer) = this.timer.as_mut().as_pin_mut() else {
                return Poll::Pending;
            };
            ready!(timer.poll(cx));
            let now = Instant::now();
            let Some(streaming) = this.streaming.as_mut() else {
                return Poll::Ready(None);
            };
            if streaming.end.is_some_and(|end| now >= end) {
                return Poll::Ready(end(this.streaming));
            }
            let tick = next_tick(now, streaming.keep_alive, streaming.end);
            if let Some(timer) = this.timer.as_mut().as_pin_mut() {
                timer.reset(tick);
            }
            if !std::mem::take(&mut streaming.wrote) {
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(KEEP_ALIVE)))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_none() && self.streaming.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.pending, &self.streaming) {
            (Some(bytes), None) => SizeHint::with_exact(bytes.len() as u64),
            (None, None) => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// Ends the stream: drops the subscription, and hands out the `retry:` block.
fn end<S>(streaming: &mut Option<Streaming<S>>) -> Option<Result<Frame<Bytes>, Infallible>> {
    let streaming = streaming.take()?;
    Some(Ok(Frame::data(streaming.live.retry_block.clone())))
}
