//! `Poller`: a polling client that keeps its cursor and yields hub items.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use http::header::IF_NONE_MATCH;
use http::{Request, StatusCode, Uri};
use http_body_util::Full;
use push_core::wire::json;
use push_core::{Backoff, Cursor, Item, Start};
use push_http::EntityTag;
use push_http::client::{BoxFuture, Exchange, HttpOptions, Polling, Resume, Sender};

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
    /// Headers sent with every request (`with_header`), and TLS.
    pub http: HttpOptions,
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
            http: HttpOptions::default(),
        }
    }
}

push_http::client_options!(PollerConfig);

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
/// [`Poller::connect`] sends the first poll before it returns: a live start
/// is pinned to the channel's head then, and everything published after it
/// is delivered.
///
/// ```no_run
/// use futures_util::StreamExt;
/// use push_core::Item;
/// use push_poll::{Poller, PollerConfig};
///
/// # async fn run() -> Result<(), push_poll::Error> {
/// let config = PollerConfig::default().with_header("authorization", "Bearer token");
/// let mut poller = Poller::connect("http://127.0.0.1:8080/poll/weather", config).await?;
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
    polling: Polling<Asking>,
}

/// How a poller asks: its URL, settings, and the cursor the server last
/// called current (for `If-None-Match`).
struct Asking {
    url: Uri,
    config: PollerConfig,
    send: Sender,
    etag: Option<Cursor>,
}

impl Poller {
    /// A poller of `url` (for example `http://host:8080/poll/news`, or
    /// `https://` with the `rustls` feature) over a pooled HTTP/1.1 client.
    /// It sends the first poll at once and returns when it is answered: a
    /// live start is pinned to the channel's head, so nothing published
    /// from now on is missed.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] when `url` is not a URL the client can use,
    /// [`Error::InvalidHeader`] for a header that is not valid HTTP, or the
    /// first poll's fatal error (a refusal such as `400` or `401`). When it
    /// fails in passing (a network error, a `5xx`), the poller is returned
    /// all the same: it hands out that error first, backs off and asks
    /// again, and the first answer pins a live start.
    pub async fn connect(url: &str, config: PollerConfig) -> Result<Self, Error> {
        let send = Sender::new(&config.http)?;
        Self::connect_with(url, config, send).await
    }

    /// As [`connect`](Self::connect), sending the requests through `send`
    /// (a proxy, or a pool shared by several clients).
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub async fn connect_with(
        url: &str,
        config: PollerConfig,
        send: Sender,
    ) -> Result<Self, Error> {
        config.http.check()?;
        let resume = Resume::new(
            config.start,
            Backoff::new(config.initial_backoff, config.max_backoff),
        );
        let asking = Asking {
            url: push_http::client::parse_url(url)?,
            config,
            send,
            etag: None,
        };
        Ok(Poller {
            polling: Polling::connect(asking, resume).await?,
        })
    }

    /// The cursor of the last item yielded: resume from here.
    pub fn cursor(&self) -> Option<Cursor> {
        self.polling.resume().cursor()
    }
}

impl Exchange for Asking {
    type Answer = Answer;

    fn request(&self, resume: &Resume) -> BoxFuture<Result<Answer, Error>> {
        let start = resume.start().to_param();
        let limit = self.config.limit.map(|limit| limit.to_string());
        let mut params = Vec::new();
        params.extend(start.as_ref().map(|(name, value)| (*name, value.as_str())));
        params.extend(limit.as_deref().map(|limit| ("limit", limit)));
        let uri = push_http::client::with_params(&self.url, &params);
        let etag = self.etag;
        let http = self.config.http.clone();
        let send = self.send.clone();
        let timeout = self.config.request_timeout;
        let max_body = self.config.max_body_bytes;
        Box::pin(async move {
            let uri = uri?;
            let mut request = Request::get(uri)
                .body(Full::default())
                .map_err(Error::request)?;
            if let Some(etag) = etag {
                request
                    .headers_mut()
                    .insert(IF_NONE_MATCH, EntityTag::of(etag).to_header());
            }
            http.apply(request.headers_mut());
            push_http::client::within(timeout, async {
                let response = send.send(request).await?;
                let status = response.status();
                let interval = response
                    .headers()
                    .get(push_http::POLL_INTERVAL)
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .map(Duration::from_millis);
                let body = push_http::client::read_body(response.into_body(), max_body).await?;
                match status {
                    StatusCode::NOT_MODIFIED => Ok(Answer::NotModified { interval }),
                    StatusCode::OK => Ok(Answer::Batch {
                        batch: json::parse_batch(&body)?,
                        interval,
                    }),
                    status => Err(Error::status(status.as_u16(), &body)),
                }
            })
            .await
        })
    }

    fn answered(&mut self, resume: &mut Resume, answer: Answer) -> Option<Duration> {
        resume.succeeded();
        let interval = match answer {
            Answer::NotModified { interval } => interval,
            Answer::Batch { batch, interval } => {
                self.etag = Some(batch.cursor);
                let more = batch.more;
                resume.take_batch(batch);
                if more {
                    return None;
                }
                interval
            }
        };
        if self.config.interval.is_none()
            && let Some(advised) = interval
        {
            resume.advise(advised);
        }
        let interval = self
            .config
            .interval
            .or(resume.advised())
            .unwrap_or(DEFAULT_INTERVAL);
        Some(resume.pace(interval, self.config.jitter))
    }
}

/// The interval until a server advises one.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

impl Stream for Poller {
    type Item = Result<Item, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().polling.poll_next(cx)
    }
}

impl fmt::Debug for Poller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = &self.polling.exchange().url;
        self.polling.debug(f, "Poller", url)
    }
}
