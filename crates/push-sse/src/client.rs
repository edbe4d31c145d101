//! `EventSource`: a reconnecting SSE client that yields hub items.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_core::Stream;
use http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::Full;
use hyper::body::{Body, Incoming};
use push_core::wire::json;
use push_core::{Backoff, Cursor, Item, Start};
use push_http::client::{BoxFuture, HttpOptions, Resume, Sender};
use tokio::time::{Sleep, sleep};

use crate::encode::{GAP_EVENT, RESET_EVENT, SUBSCRIBED_EVENT};
use crate::parse::{Event, Parser};
use crate::server::LAST_EVENT_ID;

/// What can go wrong in the client: [`push_http::ClientError`], shared by
/// every transport's client.
pub use push_http::ClientError as Error;

/// How an [`EventSource`] connects and reconnects.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EventSourceConfig {
    /// Where the first connection starts (default: live, only new messages).
    pub start: Start,
    /// The reconnection delay until the server advises one with `retry:`
    /// (default 3 s).
    pub retry: Duration,
    /// After failed attempts the delay doubles from the advised one up to this
    /// (default 30 s), with jitter.
    pub max_backoff: Duration,
    /// How long to wait for the response head (default 30 s).
    pub connect_timeout: Duration,
    /// Reconnect when nothing at all (not even a keep-alive comment) arrives
    /// for this long (default 45 s: three of the server's default keep-alive
    /// intervals). `None`: wait forever.
    pub idle_timeout: Option<Duration>,
    /// The longest message (one event, or one line) accepted (default
    /// 16 MiB).
    pub max_message_bytes: usize,
    /// Ask for joins and leaves (`presence=1`): users' first and last
    /// connections to the channel arrive as ephemeral messages with the
    /// event `push.join` / `push.leave` (default: no).
    pub presence: bool,
    /// Headers sent with every request, reconnects included
    /// (`with_header`), and TLS.
    pub http: HttpOptions,
}

impl Default for EventSourceConfig {
    fn default() -> Self {
        EventSourceConfig {
            start: Start::Live,
            retry: Duration::from_secs(3),
            max_backoff: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(30),
            idle_timeout: Some(Duration::from_secs(45)),
            max_message_bytes: Parser::DEFAULT_LIMIT,
            presence: false,
            http: HttpOptions::default(),
        }
    }
}

push_http::client_options!(EventSourceConfig);

impl EventSourceConfig {
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

    /// Sets [`retry`](Self::retry) and [`max_backoff`](Self::max_backoff).
    #[must_use]
    pub fn with_retry(mut self, retry: Duration, max_backoff: Duration) -> Self {
        self.retry = retry;
        self.max_backoff = max_backoff;
        self
    }

    /// Sets [`idle_timeout`](Self::idle_timeout).
    #[must_use]
    pub fn with_idle_timeout(mut self, idle_timeout: Option<Duration>) -> Self {
        self.idle_timeout = idle_timeout;
        self
    }

    /// Sets [`max_message_bytes`](Self::max_message_bytes).
    #[must_use]
    pub fn with_max_message_bytes(mut self, max: usize) -> Self {
        self.max_message_bytes = max;
        self
    }
}

enum State {
    Ready,
    Connecting(BoxFuture<Result<Incoming, Error>>),
    Streaming {
        body: Incoming,
        idle: Option<Pin<Box<Sleep>>>,
    },
    Waiting(Pin<Box<Sleep>>),
    Done,
}

/// A Server-Sent Events client: a `Stream` of the hub's [`Item`]s (messages,
/// and gap or reset signals) from a push-sse endpoint, like every other push
/// client.
///
/// It asks for the `json` format (each event's data is the message's full
/// envelope: event name, time, and binary data losslessly), parses with the
/// spec's algorithm, and when the stream ends or breaks reconnects after the
/// server's advised `retry:` delay (doubling with jitter while attempts fail),
/// sending `Last-Event-ID` so that nothing is lost or repeated. As the spec
/// says, a `204 No Content` ends it for good, and so does a `200` that is not
/// `text/event-stream` or a 4xx; a 5xx or a network error is retried.
///
/// [`EventSource::connect`] opens the stream before it returns: a live
/// start is pinned to the channel's head then, and everything published
/// after it is delivered.
///
/// ```no_run
/// use futures_util::StreamExt;
/// use push_core::Item;
/// use push_sse::{EventSource, EventSourceConfig};
///
/// # async fn run() -> Result<(), push_sse::Error> {
/// let config = EventSourceConfig::default().with_header("authorization", "Bearer token");
/// let mut events = EventSource::connect("http://127.0.0.1:8080/sse/news", config).await?;
/// while let Some(item) = events.next().await {
///     match item {
///         Ok(Item::Message(m)) => println!("{}", String::from_utf8_lossy(m.data())),
///         Ok(Item::Signal(signal)) => println!("continuity broke: {signal:?}"),
///         Err(err) => eprintln!("{err}; reconnecting"),
///     }
/// }
/// # Ok(()) }
/// ```
pub struct EventSource {
    url: Uri,
    config: EventSourceConfig,
    send: Sender,
    /// The stream's parser: its last event ID is where a reconnect resumes.
    parser: Parser,
    /// What was received and not yet handed out, the last cursor handed
    /// out, the backoff and the advised `retry:`.
    resume: Resume,
    state: State,
}

impl EventSource {
    /// An event source of `url` (for example `http://host:8080/sse/news`,
    /// or `https://` with the `rustls` feature) over a pooled HTTP/1.1
    /// client. It opens the stream at once and returns when the server has
    /// answered: a live start is pinned to the channel's head, so nothing
    /// published from now on is missed.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] when `url` is not a URL the client can use (or
    /// its query cannot take the `format` parameter),
    /// [`Error::InvalidHeader`] for a header that is not valid HTTP, or the
    /// first connection's fatal error (a refusal such as `401`, or a `204`).
    /// When it fails in passing (a network error, a `5xx`), the event
    /// source is returned all the same: it hands out that error first and
    /// reconnects as usual, and the first stream pins a live start.
    pub async fn connect(url: &str, config: EventSourceConfig) -> Result<Self, Error> {
        let send = Sender::new(&config.http)?;
        Self::connect_with(url, config, send).await
    }

    /// As [`connect`](Self::connect), connecting through `send` (a proxy,
    /// or a pool shared by several clients).
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub async fn connect_with(
        url: &str,
        config: EventSourceConfig,
        send: Sender,
    ) -> Result<Self, Error> {
        config.http.check()?;
        let mut source = Self::with_sender(url, config, send)?;
        match source.open().await {
            Ok(body) => source.streaming(body),
            Err(err) if err.is_fatal() || matches!(err, Error::Status { status: 204, .. }) => {
                return Err(err);
            }
            Err(err) => {
                // Handed out first; then the usual reconnecting.
                source.resume.take_error(err);
                source.reconnect_later();
            }
        }
        Ok(source)
    }

    fn with_sender(url: &str, config: EventSourceConfig, send: Sender) -> Result<Self, Error> {
        let parsed = push_http::client::parse_url(url)?;
        let mut parser = Parser::with_limit(config.max_message_bytes);
        let start = match config.start {
            Start::After(cursor) => {
                // The first connection resumes as every later one does.
                parser.set_last_event_id(cursor.text().as_str());
                None
            }
            // In the URL; a reconnect's Last-Event-ID wins over it.
            other => other.to_param(),
        };
        let mut params = vec![("format", "json")];
        params.extend(start.as_ref().map(|(name, value)| (*name, value.as_str())));
        if config.presence {
            params.push(("presence", "1"));
        }
        let url_with_format =
            push_http::client::with_params(&parsed, &params).map_err(|_| Error::InvalidUrl {
                url: url.to_owned(),
                reason: "its query cannot be extended",
            })?;
        Ok(EventSource {
            url: url_with_format,
            resume: Resume::new(config.start, Backoff::new(config.retry, config.max_backoff)),
            config,
            send,
            parser,
            state: State::Ready,
        })
    }

    /// The cursor of the last item yielded: resume from here.
    pub fn cursor(&self) -> Option<Cursor> {
        self.resume.cursor()
    }

    /// The stream has opened: read it.
    fn streaming(&mut self, body: Incoming) {
        self.parser.restart();
        self.state = State::Streaming {
            body,
            idle: self.idle_timer(),
        };
    }

    fn open(&self) -> BoxFuture<Result<Incoming, Error>> {
        let mut request = Request::get(self.url.clone());
        let headers = request.headers_mut();
        if let Some(headers) = headers {
            headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            let last = self.parser.last_event_id();
            if let Ok(value) = HeaderValue::from_str(last)
                && !last.is_empty()
            {
                headers.insert(LAST_EVENT_ID, value);
            }
            self.config.http.apply(headers);
        }
        let request = request.body(Full::default()).map_err(Error::request);
        let send = self.send.clone();
        let timeout = self.config.connect_timeout;
        Box::pin(async move {
            let exchange = async {
                let response = send.send(request?).await?;
                let status = response.status();
                if status == StatusCode::OK {
                    let content_type = response
                        .headers()
                        .get(CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    if !is_event_stream(content_type) {
                        return Err(Error::WrongContentType {
                            expected: "text/event-stream",
                            got: content_type.to_owned(),
                        });
                    }
                    return Ok(Some(response.into_body()));
                }
                if status == StatusCode::NO_CONTENT {
                    return Ok(None);
                }
                let body = push_http::client::read_body(response.into_body(), 64 << 10)
                    .await
                    .unwrap_or_default();
                Err(Error::status(status.as_u16(), &body))
            };
            match tokio::time::timeout(timeout, exchange).await {
                Ok(Ok(Some(body))) => Ok(body),
                Ok(Ok(None)) => Err(Error::Status {
                    status: 204,
                    code: None,
                    message: None,
                    outcome: None,
                }),
                Ok(Err(err)) => Err(err),
                Err(_) => Err(Error::Timeout(timeout)),
            }
        })
    }

    /// What to do after the connection ended or failed: wait, then reconnect.
    fn reconnect_later(&mut self) {
        let delay = self.resume.retry_delay();
        self.state = State::Waiting(Box::pin(sleep(delay)));
    }

    fn idle_timer(&self) -> Option<Pin<Box<Sleep>>> {
        self.config.idle_timeout.map(|idle| Box::pin(sleep(idle)))
    }

    /// Turns the parser's dispatched events into items.
    fn take_events(&mut self) {
        while let Some(event) = self.parser.next_event() {
            // The live start's position: the parser keeps it as the last
            // event ID already, and reconnects send it.
            if event.event == SUBSCRIBED_EVENT {
                continue;
            }
            match item_of(&event) {
                Ok(item) => self.resume.take_item(item),
                Err(err) => self.resume.take_error(err),
            }
        }
        if let Some(advised) = self.parser.retry()
            && self.resume.advised() != Some(advised)
        {
            // Only while streaming, right after a reset: no attempts to carry.
            self.resume.advise_retry(advised, self.config.max_backoff);
        }
    }
}

/// `text/event-stream`, with any parameters, in any case.
fn is_event_stream(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("text/event-stream")
}

/// What the client makes of one event: a message, a gap or a reset.
///
/// # Errors
/// [`Error::Protocol`] for an event of another type, or data that is not
/// what its type says.
pub fn item_of(event: &Event) -> Result<Item, Error> {
    let item = match event.event.as_str() {
        GAP_EVENT => Item::Signal(json::parse_signal("gap", event.data.as_bytes())?),
        RESET_EVENT => Item::Signal(json::parse_signal("reset", event.data.as_bytes())?),
        "message" => Item::Message(Arc::new(json::parse_message(event.data.as_bytes())?)),
        other => {
            return Err(push_core::Error::invalid_response(format!(
                "an event of unknown type {other:?}"
            ))
            .into());
        }
    };
    Ok(item)
}

impl Stream for EventSource {
    type Item = Result<Item, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(item) = this.resume.next_item() {
                return Poll::Ready(Some(item));
            }
            match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Ready => this.state = State::Connecting(this.open()),
                State::Waiting(sleep) => {
                    ready!(sleep.as_mut().poll(cx));
                    this.state = State::Ready;
                }
                State::Connecting(connecting) => match ready!(connecting.as_mut().poll(cx)) {
                    Ok(body) => this.streaming(body),
                    Err(Error::Status { status: 204, .. }) => this.state = State::Done,
                    Err(err) => {
                        if err.is_fatal() {
                            this.state = State::Done;
                        } else {
                            this.reconnect_later();
                        }
                        return Poll::Ready(Some(Err(err)));
                    }
                },
                State::Streaming { body, idle } => {
                    match Pin::new(&mut *body).poll_frame(cx) {
                        Poll::Ready(Some(Ok(frame))) => {
                            let Ok(data) = frame.into_data() else {
                                continue;
                            };
                            if let (Some(idle), Some(after)) = (idle, this.config.idle_timeout) {
                                idle.as_mut().reset(tokio::time::Instant::now() + after);
                            }
                            this.resume.succeeded();
                            let fed = this.parser.feed(&data);
                            this.take_events();
                            if let Err(err) = fed {
                                this.reconnect_later();
                                return Poll::Ready(Some(Err(push_core::Error::invalid_response(
                                    err.to_string(),
                                )
                                .into())));
                            }
                        }
                        Poll::Ready(Some(Err(err))) => {
                            this.reconnect_later();
                            return Poll::Ready(Some(Err(Error::request(err))));
                        }
                        Poll::Ready(None) => {
                            // The server ended the stream: come back after
                            // the advised delay.
                            this.reconnect_later();
                        }
                        Poll::Pending => {
                            if let Some(idle) = idle {
                                ready!(idle.as_mut().poll(cx));
                                let after = this.config.idle_timeout.unwrap_or_default();
                                this.reconnect_later();
                                return Poll::Ready(Some(Err(Error::Timeout(after))));
                            }
                            return Poll::Pending;
                        }
                    }
                }
            }
        }
    }
}

impl fmt::Debug for EventSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventSource")
            .field("url", &self.url)
            .field("last_event_id", &self.parser.last_event_id())
            .field("yielded", &self.resume.cursor())
            .field("buffered", &self.resume.buffered())
            .finish_non_exhaustive()
    }
}
