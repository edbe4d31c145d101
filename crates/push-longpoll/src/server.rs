//! The long-polling handler: a request held on the hub until there is news.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use push_core::wire::json;
use push_core::{Batch, ChannelName, Cursor, Error, Hub, Item, Member, Start};
use push_http::{
    Access, Action, Attended, ChannelLocator, Check, EntityTag, Handler, Head, Live, LiveCount,
    Technique,
};
use tokio_util::sync::CancellationToken;

/// How a [`LongPollHandler`] reads requests and how long it holds them.
///
/// ```
/// use std::time::Duration;
/// use push_longpoll::LongPollConfig;
///
/// let config = LongPollConfig::default().with_max_timeout(Duration::from_secs(55));
/// assert_eq!(config.default_timeout, Duration::from_secs(30));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LongPollConfig {
    /// Where the channel name is in the request (default: the last path
    /// segment, as in `GET /longpoll/{channel}`).
    pub channel: ChannelLocator,
    /// The most messages one answer carries (default 100); a client may ask
    /// for fewer with `?limit=`.
    pub max_batch: usize,
    /// How long a request is held when it names no `timeout` (default 30 s).
    pub default_timeout: Duration,
    /// The longest hold a client may ask for; a larger `timeout` is lowered
    /// to it (default 120 s). Keep it below your proxies' idle timeouts.
    pub max_timeout: Duration,
    /// The longest query string accepted (default 8 KiB, [`push_http::DEFAULT_MAX_QUERY_BYTES`]).
    pub max_query_bytes: usize,
    /// When this token is cancelled (the server is shutting down), every held
    /// request is answered at once (`204` with its cursor, as on a timeout),
    /// and later requests are answered without waiting: clients poll again,
    /// on another node or the restarted server. Default: none.
    pub shutdown: Option<CancellationToken>,
}

impl Default for LongPollConfig {
    fn default() -> Self {
        LongPollConfig {
            channel: ChannelLocator::default(),
            max_batch: 100,
            default_timeout: Duration::from_secs(30),
            max_timeout: Duration::from_secs(120),
            max_query_bytes: push_http::DEFAULT_MAX_QUERY_BYTES,
            shutdown: None,
        }
    }
}

impl LongPollConfig {
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

    /// Sets [`default_timeout`](Self::default_timeout).
    #[must_use]
    pub fn with_default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// Sets [`max_timeout`](Self::max_timeout).
    #[must_use]
    pub fn with_max_timeout(mut self, timeout: Duration) -> Self {
        self.max_timeout = timeout;
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

/// Long polling over any [`Hub`]: a hyper `Service`, or call
/// [`handle`](Self::handle) from your own.
///
/// `GET …/{channel}?since=CURSOR&timeout=SECS` answers as soon as anything
/// exists after `since`: at once when it already does, otherwise when the next
/// message is published, with everything then ready (up to the limit) in one
/// `200` batch. With nothing by the timeout it answers `204 No Content`, the
/// `ETag` carrying the cursor to poll from next. A held request waits on the
/// hub's wake-up, never in a sleep loop, and a client that hangs up releases
/// everything at once ([`connections`](Self::connections) counts the held
/// requests).
///
/// ```
/// use push_core::MemoryHub;
/// use push_longpoll::{LongPollConfig, LongPollHandler};
///
/// let longpoll = LongPollHandler::new(MemoryHub::new(), LongPollConfig::default());
/// assert_eq!(longpoll.connections(), 0);
/// ```
#[derive(Debug)]
pub struct LongPollHandler<H> {
    hub: Arc<H>,
    shared: Arc<Shared>,
}

/// The configuration, and the count of held requests.
#[derive(Debug)]
struct Shared {
    config: LongPollConfig,
    held: LiveCount,
}

impl AsRef<LiveCount> for Shared {
    fn as_ref(&self) -> &LiveCount {
        &self.held
    }
}

push_http::service!(LongPollHandler);

impl<H: Hub> LongPollHandler<H> {
    /// A handler over `hub` (a hub, or an `Arc` of one shared with other
    /// handlers).
    pub fn new(hub: impl Into<Arc<H>>, config: LongPollConfig) -> Self {
        LongPollHandler {
            hub: hub.into(),
            shared: Arc::new(Shared {
                config,
                held: LiveCount::default(),
            }),
        }
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &LongPollConfig {
        &self.shared.config
    }

    /// How many requests are held right now, waiting for a message.
    pub fn connections(&self) -> usize {
        self.shared.held.get()
    }

    /// Answers one request. The body of a long-poll request is ignored.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Full<Bytes>> {
        push_http::handle(self, request).await
    }

    fn read(&self, head: &Head) -> Result<Asked, Error> {
        let config = &self.shared.config;
        let query = head.query()?;
        Ok(Asked {
            channel: config.channel.locate(head.uri().path(), &query)?,
            start: query.start()?,
            limit: query.limit(config.max_batch)?,
            timeout: query
                .seconds("timeout", config.max_timeout)?
                .unwrap_or(config.default_timeout),
            presence: query.flag("presence")?.unwrap_or(false),
            poller: None,
        })
    }

    async fn answer(&self, asked: Asked) -> Result<Response<Full<Bytes>>, Error> {
        let Asked {
            channel,
            start,
            limit,
            timeout,
            presence,
            poller,
        } = asked;
        if let Some((key, member)) = poller {
            // Present until the next poll is due, and a little more.
            let ttl = timeout.saturating_add(push_http::PRESENCE_GRACE);
            self.hub.touch(&channel, &key, member, ttl).await?;
        }
        let batch = self.hub.read(&channel, start, limit).await?;
        let shutdown = self.shared.config.shutdown.as_ref();
        if !batch.is_empty()
            || timeout.is_zero()
            || shutdown.is_some_and(CancellationToken::is_cancelled)
        {
            return Ok(batch_response(&batch));
        }
        // Nothing yet: wait after the batch's cursor, so that whatever was
        // published since the read is the subscription's first item.
        let since = batch.cursor;
        drop(batch);
        let _held = Live::new(&self.shared);
        let subscription = self.hub.subscribe(&channel, Start::After(since)).await?;
        let mut subscription = Attended::new(subscription, None, presence);
        drop(channel);
        let waited = tokio::time::timeout(timeout, next(&mut subscription));
        let first = match shutdown {
            Some(token) => token.run_until_cancelled(waited).await,
            None => Some(waited.await),
        };
        let batch = match first {
            Some(Ok(Some(first))) => collect(first, &mut subscription, since, limit),
            // Timed out, shutting down, or the hub is closing: nothing new,
            // poll again.
            None | Some(Ok(None) | Err(_)) => Batch::new(None, Vec::new(), since, false),
        };
        Ok(batch_response(&batch))
    }
}

impl<H: Hub> Handler for LongPollHandler<H> {
    type Body = Full<Bytes>;

    fn max_query_bytes(&self) -> usize {
        self.shared.config.max_query_bytes
    }

    /// Answers a long poll. Everything the wait needs is read first, and the
    /// head dropped: a held request keeps only a few words, not its headers.
    /// `access`'s hook is asked first; its deadline limits nothing here (a
    /// held request ends by its timeout).
    fn serve(
        &self,
        head: Head,
        access: Access,
    ) -> impl Future<Output = Response<Full<Bytes>>> + Send + 'static {
        let read = (head.method() == Method::GET).then(|| self.read(&head));
        let check = match &read {
            Some(Ok(asked)) => access.check(head.parts(), &asked.channel, Action::Subscribe),
            _ => Check::allowed(),
        };
        let poller = (
            push_http::poll_key(head.parts(), access.user.as_ref(), Technique::LongPoll),
            push_http::member(&access, Technique::LongPoll),
        );
        drop(head);
        let handler = self.clone();
        async move {
            let mut asked = match read {
                None => {
                    return push_http::method_not_allowed("GET", "long polling answers GET only");
                }
                Some(Err(err)) => return push_http::error_plain(&err),
                Some(Ok(asked)) => Asked {
                    poller: Some(poller),
                    ..asked
                },
            };
            match check.await {
                Ok(mapped) => asked.channel = mapped.unwrap_or(asked.channel),
                Err(denial) => return denial.respond(),
            }
            match handler.answer(asked).await {
                Ok(response) => response,
                Err(err) => push_http::error_plain(&err),
            }
        }
    }
}

/// What a request asks for: all a held request keeps of it.
struct Asked {
    channel: ChannelName,
    start: Start,
    limit: usize,
    timeout: Duration,
    /// Joins and leaves asked for (`presence=1`).
    presence: bool,
    /// The poller's lease key and who it is, for presence.
    poller: Option<(String, Member)>,
}

async fn next<S: Stream<Item = Item> + Unpin>(subscription: &mut S) -> Option<Item> {
    std::future::poll_fn(|cx| Pin::new(&mut *subscription).poll_next(cx)).await
}

/// The item after `first` that is ready now, if any.
fn ready_now<S: Stream<Item = Item> + Unpin>(subscription: &mut S) -> Option<Item> {
    match Pin::new(subscription).poll_next(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(item) => item,
        Poll::Pending => None,
    }
}

/// One batch of `first` and everything else ready, up to `limit` messages. A
/// signal after messages is left for the next request (its read finds it
/// again), so that a batch carries at most one signal, before its messages.
fn collect<S: Stream<Item = Item> + Unpin>(
    first: Item,
    subscription: &mut S,
    since: Cursor,
    limit: usize,
) -> Batch {
    let mut signal = None;
    let mut messages = Vec::new();
    let mut cursor = since;
    let mut next = Some(first);
    let mut more = false;
    while let Some(item) = next.take() {
        match item {
            Item::Signal(s) if messages.is_empty() && signal.is_none() => {
                cursor = s.resume();
                signal = Some(s);
            }
            Item::Signal(_) => {
                more = true;
                break;
            }
            Item::Message(_) if messages.len() == limit => {
                more = true;
                break;
            }
            Item::Message(message) => {
                if !message.is_ephemeral() {
                    cursor = message.cursor();
                }
                messages.push(message);
            }
        }
        next = ready_now(subscription);
    }
    Batch::new(signal, messages, cursor, more)
}

/// `200` with the batch, or `204` when it is empty; the `ETag` is the cursor
/// either way.
fn batch_response(batch: &Batch) -> Response<Full<Bytes>> {
    let empty = batch.is_empty();
    let body = if empty {
        Bytes::new()
    } else {
        json::batch(batch)
    };
    let mut response = Response::new(Full::new(body));
    if empty {
        *response.status_mut() = StatusCode::NO_CONTENT;
    }
    let headers = response.headers_mut();
    if !empty {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    headers.insert(
        CACHE_CONTROL,
        HeaderValue::from_static(push_http::CACHE_NEVER),
    );
    headers.insert(ETAG, EntityTag::of(batch.cursor).to_header());
    response
}
