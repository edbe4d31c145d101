//! `LongPoller`: a long-polling client that keeps its cursor and yields hub
//! items.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use http::header::ETAG;
use http::{Request, StatusCode, Uri};
use http_body_util::Full;
use push_core::wire::json;
use push_core::{Backoff, Batch, Cursor, Item, Start};
use push_http::client::{BoxFuture, Exchange, HttpOptions, Polling, Resume, Sender};

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
    /// Ask for joins and leaves (`presence=1`): users' first and last
    /// connections to the channel arrive as ephemeral messages with the
    /// event `push.join` / `push.leave` (default: no).
    pub presence: bool,
    /// Headers sent with every request (`with_header`), and TLS.
    pub http: HttpOptions,
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
            presence: false,
            http: HttpOptions::default(),
        }
    }
}

push_http::client_options!(LongPollerConfig);

impl LongPollerConfig {
    /// Sets [`presence`](Self::presence).
    #[must_use]
    pub fn with_presence(mut self, presence: bool) -> Self {
        self.presence = presence;
        self
    }

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

/// The answer to one long poll: a batch, or (on `204`) only where to go on.
enum Answer {
    Batch(Batch),
    Nothing(Cursor),
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
/// [`LongPoller::connect`] asks once without holding (`timeout=0`) before
/// it returns: a live start is pinned to the channel's head then, and
/// everything published after it is delivered.
///
/// ```no_run
/// use futures_util::StreamExt;
/// use push_core::Item;
/// use push_longpoll::{LongPoller, LongPollerConfig};
///
/// # async fn run() -> Result<(), push_longpoll::Error> {
/// let url = "http://127.0.0.1:8080/longpoll/notifications";
/// let config = LongPollerConfig::default().with_header("cookie", "session=abc");
/// let mut poller = LongPoller::connect(url, config).await?;
/// while let Some(item) = poller.next().await {
///     if let Ok(Item::Message(m)) = item {
///         println!("{}", String::from_utf8_lossy(m.data()));
///     }
/// }
/// # Ok(()) }
/// ```
pub struct LongPoller {
    polling: Polling<Asking>,
}

/// How a long poller asks: its URL and settings, and how long the server
/// holds the next request (zero for the first, which learns where to start).
struct Asking {
    url: Uri,
    config: LongPollerConfig,
    send: Sender,
    hold: Duration,
}

impl LongPoller {
    /// A long poller of `url` (for example `http://host:8080/longpoll/news`,
    /// or `https://` with the `rustls` feature) over a pooled HTTP/1.1
    /// client. It asks once at once, without holding (`timeout=0`), and
    /// returns when that is answered: a live start is pinned to the
    /// channel's head, so nothing published from now on is missed.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] when `url` is not a URL the client can use,
    /// [`Error::InvalidHeader`] for a header that is not valid HTTP, or the
    /// first request's fatal error (a refusal such as `400` or `401`). When
    /// it fails in passing (a network error, a `5xx`), the long poller is
    /// returned all the same: it hands out that error first, backs off and
    /// asks again, and the first answer pins a live start.
    pub async fn connect(url: &str, config: LongPollerConfig) -> Result<Self, Error> {
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
        config: LongPollerConfig,
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
            hold: Duration::ZERO,
        };
        Ok(LongPoller {
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
        let hold = self.hold.as_secs().to_string();
        let limit = self.config.limit.map(|limit| limit.to_string());
        let mut params = Vec::new();
        params.extend(start.as_ref().map(|(name, value)| (*name, value.as_str())));
        params.push(("timeout", hold.as_str()));
        params.extend(limit.as_deref().map(|limit| ("limit", limit)));
        if self.config.presence {
            params.push(("presence", "1"));
        }
        let uri = push_http::client::with_params(&self.url, &params);
        let send = self.send.clone();
        let http = self.config.http.clone();
        let timeout = self.hold.saturating_add(self.config.timeout_margin);
        let max_body = self.config.max_body_bytes;
        Box::pin(async move {
            let mut request = Request::get(uri?)
                .body(Full::default())
                .map_err(Error::request)?;
            http.apply(request.headers_mut());
            push_http::client::within(timeout, async {
                let response = send.send(request).await?;
                let status = response.status();
                let etag = response
                    .headers()
                    .get(ETAG)
                    .and_then(|v| push_http::cursor_from_etag(v.to_str().ok()?));
                let body = push_http::client::read_body(response.into_body(), max_body).await?;
                match status {
                    StatusCode::OK => Ok(Answer::Batch(json::parse_batch(&body)?)),
                    StatusCode::NO_CONTENT => etag.map(Answer::Nothing).ok_or_else(|| {
                        push_core::Error::invalid_response("a 204 without a cursor in its ETag")
                            .into()
                    }),
                    status => Err(Error::status(status.as_u16(), &body)),
                }
            })
            .await
        })
    }

    /// Asks again at once after every answer.
    fn answered(&mut self, resume: &mut Resume, answer: Answer) -> Option<Duration> {
        resume.succeeded();
        self.hold = self.config.hold;
        match answer {
            Answer::Nothing(cursor) => resume.moved_to(cursor),
            Answer::Batch(batch) => resume.take_batch(batch),
        }
        None
    }
}

impl Stream for LongPoller {
    type Item = Result<Item, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().polling.poll_next(cx)
    }
}

impl fmt::Debug for LongPoller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = &self.polling.exchange().url;
        self.polling.debug(f, "LongPoller", url)
    }
}
