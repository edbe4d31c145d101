//! `LongPoller`: a long-polling client that keeps its cursor and yields hub
//! items.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use http::header::ETAG;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::TokioExecutor;
use push_core::wire::json;
use push_core::{Backoff, Batch, Cursor, Item, Start};
use tokio::time::{Sleep, sleep};

/// What can go wrong in the client: [`push_http::ClientError`], shared by
/// every transport's client.
pub use push_http::ClientError as Error;

/// How a [`LongPoller`] polls.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LongPollerConfig {
    /// Where the first request starts (default: live, only new messages).
    pub start: Start,
    /// How long the server should hold each request (default 30 s; the
    /// server lowers it to its own maximum).
    pub hold: Duration,
    /// Ask for at most this many messages per answer (default: the server's
    /// limit).
    pub limit: Option<usize>,
    /// The first retry delay after an error (default 250 ms); it doubles up to
    /// `max_backoff`.
    pub initial_backoff: Duration,
    /// The longest retry delay (default 30 s).
    pub max_backoff: Duration,
    /// How much longer than `hold` a request may take before it is given up
    /// (default 15 s).
    pub timeout_margin: Duration,
    /// The largest answer body accepted (default 16 MiB).
    pub max_body_bytes: usize,
}

impl Default for LongPollerConfig {
    fn default() -> Self {
        LongPollerConfig {
            start: Start::Live,
            hold: Duration::from_secs(30),
            limit: None,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
            timeout_margin: Duration::from_secs(15),
            max_body_bytes: 16 << 20,
        }
    }
}

impl LongPollerConfig {
    /// Sets [`start`](Self::start).
    #[must_use]
    pub fn with_start(mut self, start: Start) -> Self {
        self.start = start;
        self
    }

    /// Sets [`hold`](Self::hold) (whole seconds; rounded down).
    #[must_use]
    pub fn with_hold(mut self, hold: Duration) -> Self {
        self.hold = hold;
        self
    }

    /// Sets [`limit`](Self::limit).
    #[must_use]
    pub fn with_limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Sets the retry delays: from `initial`, doubling up to `max`.
    #[must_use]
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max;
        self
    }
}

type Sender =
    dyn Fn(Request<Empty<Bytes>>) -> BoxFuture<Result<Response<Incoming>, Error>> + Send + Sync;
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The answer to one long poll: a batch, or (on `204`) only where to go on.
enum Answer {
    Batch(Batch),
    Nothing(Cursor),
}

enum State {
    Ready,
    Waiting(Pin<Box<Sleep>>),
    Requesting(BoxFuture<Result<Answer, Error>>),
    Done,
}

/// A long-polling client: a `Stream` of the hub's [`Item`]s (messages, and gap
/// or reset signals) from a push-longpoll endpoint.
///
/// Each request is held by the server until there is news; the poller asks
/// again at once after every answer, carrying its cursor, so nothing published
/// between two requests is lost. On errors it yields them, backs off
/// exponentially and recovers. [`LongPoller::cursor`] is the cursor of the
/// last item yielded.
///
/// ```no_run
/// use futures_util::StreamExt;
/// use push_core::Item;
/// use push_longpoll::{LongPoller, LongPollerConfig};
///
/// # async fn run() -> Result<(), push_longpoll::Error> {
/// let url = "http://127.0.0.1:8080/longpoll/notifications";
/// let mut poller = LongPoller::new(url, LongPollerConfig::default())?;
/// while let Some(item) = poller.next().await {
///     if let Ok(Item::Message(m)) = item {
///         println!("{}", String::from_utf8_lossy(m.data()));
///     }
/// }
/// # Ok(()) }
/// ```
pub struct LongPoller {
    url: Uri,
    config: LongPollerConfig,
    send: Arc<Sender>,
    start: Start,
    yielded: Option<Cursor>,
    buffer: VecDeque<Item>,
    backoff: Backoff,
    state: State,
}

impl LongPoller {
    /// A long poller of `url` (for example `http://host:8080/longpoll/news`)
    /// over a pooled HTTP/1.1 client.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] when `url` is not a URL with a scheme and host.
    pub fn new(url: &str, config: LongPollerConfig) -> Result<Self, Error> {
        let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        Self::with_client(url, config, client)
    }

    /// A long poller that sends its requests through `client` (for TLS, a
    /// proxy, or a shared pool).
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] when `url` is not a URL with a scheme and host.
    pub fn with_client<C>(
        url: &str,
        config: LongPollerConfig,
        client: Client<C, Empty<Bytes>>,
    ) -> Result<Self, Error>
    where
        C: Connect + Clone + Send + Sync + 'static,
    {
        let invalid = |reason| Error::InvalidUrl {
            url: url.to_owned(),
            reason,
        };
        let parsed: Uri = url.parse().map_err(|_| invalid("not a URL"))?;
        if parsed.scheme().is_none() || parsed.host().is_none() {
            return Err(invalid("it needs a scheme and a host"));
        }
        let send: Arc<Sender> = Arc::new(move |request| {
            let response = client.request(request);
            Box::pin(async move { response.await.map_err(Error::request) })
        });
        Ok(LongPoller {
            url: parsed,
            start: config.start,
            backoff: Backoff::new(config.initial_backoff, config.max_backoff),
            config,
            send,
            yielded: None,
            buffer: VecDeque::new(),
            state: State::Ready,
        })
    }

    /// The cursor of the last item yielded: resume from here.
    pub fn cursor(&self) -> Option<Cursor> {
        self.yielded
    }

    fn request(&self) -> BoxFuture<Result<Answer, Error>> {
        let since = self.start.to_since();
        let hold = self.config.hold.as_secs().to_string();
        let limit = self.config.limit.map(|limit| limit.to_string());
        let mut params = Vec::new();
        params.extend(since.as_deref().map(|since| ("since", since)));
        params.push(("timeout", hold.as_str()));
        params.extend(limit.as_deref().map(|limit| ("limit", limit)));
        let target = push_http::path_with_params(self.url.path(), self.url.query(), &params);
        let uri = target.parse().ok().and_then(|path_and_query| {
            let mut parts = self.url.clone().into_parts();
            parts.path_and_query = Some(path_and_query);
            Uri::from_parts(parts).ok()
        });
        let send = self.send.clone();
        let timeout = self.config.hold.saturating_add(self.config.timeout_margin);
        let max_body = self.config.max_body_bytes;
        let url = self.url.to_string();
        Box::pin(async move {
            let uri = uri.ok_or(Error::InvalidUrl {
                url,
                reason: "the query cannot be extended",
            })?;
            let request = Request::get(uri)
                .body(Empty::new())
                .map_err(Error::request)?;
            let exchange = async {
                let response = send(request).await?;
                let status = response.status();
                let etag = response
                    .headers()
                    .get(ETAG)
                    .and_then(|v| push_http::cursor_from_etag(v.to_str().ok()?));
                let body = Limited::new(response.into_body(), max_body)
                    .collect()
                    .await
                    .map_err(Error::Request)?
                    .to_bytes();
                match status {
                    StatusCode::OK => Ok(Answer::Batch(json::parse_batch(&body)?)),
                    StatusCode::NO_CONTENT => etag.map(Answer::Nothing).ok_or_else(|| {
                        push_core::Error::invalid_response("a 204 without a cursor in its ETag")
                            .into()
                    }),
                    status => Err(Error::status(status.as_u16(), &body)),
                }
            };
            tokio::time::timeout(timeout, exchange)
                .await
                .map_err(|_| Error::Timeout(timeout))?
        })
    }
}

impl Stream for LongPoller {
    type Item = Result<Item, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(item) = this.buffer.pop_front() {
                this.yielded = Some(item.cursor());
                return Poll::Ready(Some(Ok(item)));
            }
            match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Ready => this.state = State::Requesting(this.request()),
                State::Waiting(sleep) => {
                    ready!(sleep.as_mut().poll(cx));
                    this.state = State::Ready;
                }
                State::Requesting(request) => match ready!(request.as_mut().poll(cx)) {
                    Ok(answer) => {
                        this.backoff.reset();
                        this.state = State::Ready;
                        match answer {
                            Answer::Nothing(cursor) => this.start = Start::After(cursor),
                            Answer::Batch(batch) => {
                                this.start = Start::After(batch.cursor);
                                this.buffer.extend(batch.signal.map(Item::Signal));
                                this.buffer
                                    .extend(batch.messages.into_iter().map(Item::Message));
                            }
                        }
                    }
                    Err(err) => {
                        this.state = if err.is_fatal() {
                            State::Done
                        } else {
                            State::Waiting(Box::pin(sleep(this.backoff.next_delay())))
                        };
                        return Poll::Ready(Some(Err(err)));
                    }
                },
            }
        }
    }
}

impl fmt::Debug for LongPoller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LongPoller")
            .field("url", &self.url)
            .field("start", &self.start)
            .field("yielded", &self.yielded)
            .field("buffered", &self.buffer.len())
            .finish_non_exhaustive()
    }
}
