//! `Poller`: a polling client that keeps its cursor and yields hub items.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use http::header::IF_NONE_MATCH;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::TokioExecutor;
use push_core::wire::json;
use push_core::{Backoff, Cursor, Item, Start};
use tokio::time::{Sleep, sleep};

/// What can go wrong in the client: [`push_http::ClientError`], shared by
/// every transport's client.
pub use push_http::ClientError as Error;

/// How a [`Poller`] polls.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PollerConfig {
    /// Where the first poll starts (default: live, only new messages).
    pub start: Start,
    /// A fixed interval; `None` (the default) follows the server's
    /// `Push-Poll-Interval` advice, 5 s until the first answer.
    pub interval: Option<Duration>,
    /// Each wait is moved by up to this fraction of itself at random (default
    /// 0.1), so that many clients do not poll in step.
    pub jitter: f64,
    /// Ask for at most this many messages per answer (default: the server's
    /// limit).
    pub limit: Option<usize>,
    /// The first retry delay after an error (default 250 ms); it doubles up to
    /// `max_backoff`.
    pub initial_backoff: Duration,
    /// The longest retry delay (default 30 s).
    pub max_backoff: Duration,
    /// How long one request may take (default 30 s).
    pub request_timeout: Duration,
    /// The largest answer body accepted (default 16 MiB).
    pub max_body_bytes: usize,
}

impl Default for PollerConfig {
    fn default() -> Self {
        PollerConfig {
            start: Start::Live,
            interval: None,
            jitter: 0.1,
            limit: None,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            max_body_bytes: 16 << 20,
        }
    }
}

impl PollerConfig {
    /// Sets [`start`](Self::start).
    #[must_use]
    pub fn with_start(mut self, start: Start) -> Self {
        self.start = start;
        self
    }

    /// Sets a fixed [`interval`](Self::interval).
    #[must_use]
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = Some(interval);
        self
    }

    /// Sets [`jitter`](Self::jitter).
    #[must_use]
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
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

    /// Sets [`request_timeout`](Self::request_timeout).
    #[must_use]
    pub fn with_request_timeout(mut self, request_timeout: Duration) -> Self {
        self.request_timeout = request_timeout;
        self
    }
}

type Sender =
    dyn Fn(Request<Empty<Bytes>>) -> BoxFuture<Result<Response<Incoming>, Error>> + Send + Sync;
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The answer to one poll.
enum Answer {
    NotModified {
        interval: Option<Duration>,
    },
    Batch {
        batch: push_core::Batch,
        interval: Option<Duration>,
    },
}

enum State {
    Ready,
    Waiting(Pin<Box<Sleep>>),
    Requesting(BoxFuture<Result<Answer, Error>>),
    Done,
}

/// A polling client: a `Stream` of the hub's [`Item`]s (messages, and gap or
/// reset signals), fetched by polling a push-poll endpoint on an interval.
///
/// It keeps the cursor, so it never misses or repeats a message; sends
/// `If-None-Match`, so an unchanged channel costs a `304`; polls again at once
/// when an answer was cut at the limit (`more`); follows the interval the
/// server advises, with jitter; and on errors yields them, backs off
/// exponentially and recovers. [`Poller::cursor`] is the cursor of the last
/// item yielded, for a program that saves its place.
///
/// ```no_run
/// use futures_util::StreamExt;
/// use push_core::Item;
/// use push_poll::{Poller, PollerConfig};
///
/// # async fn run() -> Result<(), push_poll::Error> {
/// let mut poller = Poller::new("http://127.0.0.1:8080/poll/weather", PollerConfig::default())?;
/// while let Some(item) = poller.next().await {
///     match item {
///         Ok(Item::Message(m)) => println!("{}", String::from_utf8_lossy(m.data())),
///         Ok(Item::Signal(signal)) => println!("missed some: {signal:?}"),
///         Err(e) => eprintln!("{e} (retrying)"),
///     }
/// }
/// # Ok(()) }
/// ```
pub struct Poller {
    url: Uri,
    config: PollerConfig,
    send: Arc<Sender>,
    /// Where the next poll starts.
    start: Start,
    /// The cursor of the last item yielded.
    yielded: Option<Cursor>,
    /// The cursor the server last called current, for `If-None-Match`.
    etag: Option<Cursor>,
    advised: Duration,
    buffer: VecDeque<Item>,
    backoff: Backoff,
    state: State,
}

impl Poller {
    /// A poller of `url` (for example `http://host:8080/poll/news`) over a
    /// pooled HTTP/1.1 client.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] when `url` is not an `http://` URL with a host.
    pub fn new(url: &str, config: PollerConfig) -> Result<Self, Error> {
        let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        Self::with_client(url, config, client)
    }

    /// A poller that sends its requests through `client` (for TLS, a proxy,
    /// or a shared pool).
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] when `url` is not a URL with a scheme and host.
    pub fn with_client<C>(
        url: &str,
        config: PollerConfig,
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
        Ok(Poller {
            url: parsed,
            start: config.start,
            backoff: Backoff::new(config.initial_backoff, config.max_backoff),
            advised: config.interval.unwrap_or(Duration::from_secs(5)),
            config,
            send,
            yielded: None,
            etag: None,
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
        let limit = self.config.limit.map(|limit| limit.to_string());
        let mut params = Vec::new();
        params.extend(since.as_deref().map(|since| ("since", since)));
        params.extend(limit.as_deref().map(|limit| ("limit", limit)));
        let uri = with_query(&self.url, &params);
        let etag = self.etag;
        let send = self.send.clone();
        let timeout = self.config.request_timeout;
        let max_body = self.config.max_body_bytes;
        Box::pin(async move {
            let uri = uri?;
            let mut request = Request::get(uri)
                .body(Empty::new())
                .map_err(Error::request)?;
            if let Some(etag) = etag {
                request
                    .headers_mut()
                    .insert(IF_NONE_MATCH, push_http::EntityTag::of(etag).to_header());
            }
            let exchange = async {
                let response = send(request).await?;
                let status = response.status();
                let interval = response
                    .headers()
                    .get(push_http::POLL_INTERVAL)
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .map(Duration::from_millis);
                let body = read_body(response.into_body(), max_body).await?;
                match status {
                    StatusCode::NOT_MODIFIED => Ok(Answer::NotModified { interval }),
                    StatusCode::OK => Ok(Answer::Batch {
                        batch: json::parse_batch(&body)?,
                        interval,
                    }),
                    status => Err(Error::status(status.as_u16(), &body)),
                }
            };
            tokio::time::timeout(timeout, exchange)
                .await
                .map_err(|_| Error::Timeout(timeout))?
        })
    }

    fn wait(&mut self, delay: Duration) {
        self.state = State::Waiting(Box::pin(sleep(delay)));
    }
}

impl Stream for Poller {
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
                State::Requesting(request) => {
                    let answer = ready!(request.as_mut().poll(cx));
                    let interval = match answer {
                        Ok(Answer::NotModified { interval }) => interval,
                        Ok(Answer::Batch { batch, interval }) => {
                            this.start = Start::After(batch.cursor);
                            this.etag = Some(batch.cursor);
                            this.buffer.extend(batch.signal.map(Item::Signal));
                            this.buffer
                                .extend(batch.messages.into_iter().map(Item::Message));
                            if batch.more {
                                this.backoff.reset();
                                this.state = State::Ready;
                                continue;
                            }
                            interval
                        }
                        Err(err) => {
                            if err.is_fatal() {
                                this.state = State::Done;
                            } else {
                                let delay = this.backoff.next_delay();
                                this.wait(delay);
                            }
                            return Poll::Ready(Some(Err(err)));
                        }
                    };
                    this.backoff.reset();
                    if this.config.interval.is_none()
                        && let Some(advised) = interval
                    {
                        this.advised = advised;
                    }
                    let delay = this.backoff.spread(this.advised, this.config.jitter);
                    this.wait(delay);
                }
            }
        }
    }
}

impl fmt::Debug for Poller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Poller")
            .field("url", &self.url)
            .field("start", &self.start)
            .field("yielded", &self.yielded)
            .field("buffered", &self.buffer.len())
            .finish_non_exhaustive()
    }
}

/// `url` with `params` added to its query.
fn with_query(url: &Uri, params: &[(&str, &str)]) -> Result<Uri, Error> {
    let target = push_http::path_with_params(url.path(), url.query(), params);
    let mut parts = url.clone().into_parts();
    parts.path_and_query = target.parse().ok();
    Uri::from_parts(parts).map_err(|_| Error::InvalidUrl {
        url: url.to_string(),
        reason: "the query cannot be extended",
    })
}

async fn read_body(body: Incoming, max: usize) -> Result<Bytes, Error> {
    let collected = Limited::new(body, max)
        .collect()
        .await
        .map_err(Error::Request)?;
    Ok(collected.to_bytes())
}
