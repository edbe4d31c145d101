//! The Rust clients: [`WsSubscriber`] (one channel per socket) and
//! [`WsSession`] (`push.v1`: many channels, publish with ack). Both keep a
//! cursor per channel, reconnect with backoff and resume from it.

use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_core::Stream;
use futures_util::{SinkExt as _, StreamExt as _};
use http::Uri;
use push_core::wire::json;
use push_core::{Backoff, ChannelName, ContentKind, Cursor, Item, Publication, Start};
use serde_json::{Value, json as to_json};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::sleep;
use tokio_tungstenite::tungstenite;
use tungstenite::Message;
use tungstenite::client::IntoClientRequest;

use crate::handshake::SUBPROTOCOL;

/// What can go wrong in the client: [`push_http::ClientError`], shared by
/// every transport's client.
pub use push_http::ClientError as Error;

/// How a [`WsSubscriber`] or [`WsSession`] connects and reconnects.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WsClientConfig {
    /// Where a [`WsSubscriber`] starts (default: live).
    pub start: Start,
    /// The first retry delay after a failure (default 250 ms); it doubles, with
    /// jitter, up to `max_backoff` (default 30 s).
    pub initial_backoff: Duration,
    /// The longest retry delay.
    pub max_backoff: Duration,
    /// How long the handshake may take (default 30 s).
    pub connect_timeout: Duration,
    /// Reconnect when no frame at all (pings included) arrives for this long
    /// (default 60 s: more than twice the server's ping interval).
    pub idle_timeout: Option<Duration>,
    /// The largest message accepted from the server (default 16 MiB).
    pub max_message_bytes: usize,
    /// Items received but not yet taken (default 256). When the application
    /// lags, the client stops reading and the server's history takes over:
    /// a gap, never unbounded memory.
    pub buffer: usize,
    /// Ask for joins and leaves (`presence=1` on the channel endpoint,
    /// `"presence":true` in every `push.v1` subscribe): users' first and
    /// last connections arrive as ephemeral messages with the event
    /// `push.join` / `push.leave` (default: no).
    pub presence: bool,
    /// Headers sent with every handshake, reconnects included
    /// (`with_header`), and TLS for `wss://`.
    pub http: push_http::client::HttpOptions,
}

impl Default for WsClientConfig {
    fn default() -> Self {
        WsClientConfig {
            start: Start::Live,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(30),
            idle_timeout: Some(Duration::from_secs(60)),
            max_message_bytes: 16 << 20,
            buffer: 256,
            presence: false,
            http: push_http::client::HttpOptions::default(),
        }
    }
}

push_http::client_options!(WsClientConfig);

impl WsClientConfig {
    /// Sets [`start`](Self::start).
    #[must_use]
    pub fn with_start(mut self, start: Start) -> Self {
        self.start = start;
        self
    }

    /// Sets [`presence`](Self::presence).
    #[must_use]
    pub fn with_presence(mut self, presence: bool) -> Self {
        self.presence = presence;
        self
    }

    /// Sets the retry delays: from `initial`, doubling up to `max`.
    #[must_use]
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max;
        self
    }

    /// Sets [`idle_timeout`](Self::idle_timeout).
    #[must_use]
    pub fn with_idle_timeout(mut self, idle: Option<Duration>) -> Self {
        self.idle_timeout = idle;
        self
    }
}

/// One channel over one socket (`GET /ws/{channel}`): a `Stream` of the
/// hub's [`Item`]s like every other push client. After a drop it reconnects
/// with backoff and `since` set to the last item's cursor: nothing lost,
/// nothing twice.
///
/// [`WsSubscriber::connect`] returns once the socket is open and, for a
/// live start, the server has said where it starts: everything published
/// after it returns is delivered.
///
/// ```no_run
/// use futures_util::StreamExt;
/// use push_core::Item;
/// use push_ws::{WsClientConfig, WsSubscriber};
///
/// # async fn run() -> Result<(), push_ws::Error> {
/// let config = WsClientConfig::default().with_header("authorization", "Bearer token");
/// let mut news = WsSubscriber::connect("ws://127.0.0.1:8080/ws/news", config).await?;
/// while let Some(item) = news.next().await {
///     if let Ok(Item::Message(m)) = item {
///         println!("{}", String::from_utf8_lossy(m.data()));
///     }
/// }
/// # Ok(()) }
/// ```
pub struct WsSubscriber {
    items: Received,
    task: JoinHandle<()>,
}

impl WsSubscriber {
    /// A subscriber of `url` (`ws://host:port/ws/{channel}`, or `wss://`
    /// with the `rustls` feature); the channel is the URL's last path
    /// segment. It connects at once, in a task of its own, and returns
    /// when the socket is open and a live start is pinned to the channel's
    /// head (the server's `subscribed` frame), so that nothing published
    /// from now on is missed. When the first attempt fails in passing (a
    /// network error, a `5xx`), the subscriber is returned all the same: it
    /// hands out the error first and reconnects with backoff.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] for a URL that is not `ws://` (or `wss://`
    /// with the `rustls` feature) with a host and a channel, or when called
    /// outside a tokio runtime; [`Error::InvalidHeader`] for a header that
    /// is not valid HTTP; or the first handshake's fatal error (a refusal
    /// such as `401` or `404`).
    pub async fn connect(url: &str, config: WsClientConfig) -> Result<Self, Error> {
        config.http.check()?;
        let uri = check_url(url)?;
        // The server's own rule for `/ws/{channel}` (percent-decoded).
        let no_query = push_http::Query::parse(None, 0).map_err(Error::Protocol)?;
        let channel = push_http::ChannelLocator::LastPathSegment
            .locate(uri.path(), &no_query)
            .map_err(|_| invalid(url, "its last path segment is not a channel name"))?;
        let mut subscriptions = HashMap::new();
        subscriptions.insert(channel, config.start);
        let (items, task, ready) = spawn(Target::Channel(uri), config, subscriptions, None, url)?;
        let subscriber = WsSubscriber { items, task };
        opened(ready).await?;
        Ok(subscriber)
    }
}

impl Stream for WsSubscriber {
    type Item = Result<Item, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.items
            .poll_recv(cx)
            .map(|item| item.map(|item| item.map(|(_, item)| item)))
    }
}

impl Drop for WsSubscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl fmt::Debug for WsSubscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsSubscriber").finish_non_exhaustive()
    }
}

/// Many channels over one socket (`GET /ws`, `push.v1`): a `Stream` of
/// `(channel, item)`, and a [`WsControl`] to subscribe, unsubscribe and
/// publish. After a drop it reconnects with backoff and subscribes every
/// channel again from its last cursor.
///
/// ```no_run
/// use futures_util::StreamExt;
/// use push_core::{Publication, Start};
/// use push_ws::{WsClientConfig, WsSession};
///
/// # async fn run() -> Result<(), push_ws::Error> {
/// let mut session = WsSession::connect("ws://127.0.0.1:8080/ws", WsClientConfig::default()).await?;
/// let control = session.control();
/// let room = "room:1".parse()?;
/// control.subscribe(&room, Start::Live).await?;
/// let id = control.publish(&room, Publication::new("hello")).await?;
/// while let Some(Ok((channel, item))) = session.next().await {
///     println!("{channel}: {item:?}");
/// }
/// # let _ = id; Ok(()) }
/// ```
pub struct WsSession {
    items: Received,
    control: WsControl,
    task: JoinHandle<()>,
}

impl WsSession {
    /// A session with the command endpoint at `url` (`ws://host:port/ws`,
    /// or `wss://` with the `rustls` feature). It connects at once, in a
    /// task of its own, and returns when the socket is open. When the
    /// first attempt fails in passing (a network error, a `5xx`), the
    /// session is returned all the same: it hands out the error first and
    /// reconnects with backoff.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] for a URL that is not `ws://` (or `wss://`
    /// with the `rustls` feature) with a host, or when called outside a
    /// tokio runtime; [`Error::InvalidHeader`] for a header that is not
    /// valid HTTP; or the first handshake's fatal error (a refusal such as
    /// `401` or `404`).
    pub async fn connect(url: &str, config: WsClientConfig) -> Result<Self, Error> {
        config.http.check()?;
        let uri = check_url(url)?;
        let (ops, receiver) = mpsc::unbounded_channel();
        let (items, task, ready) = spawn(
            Target::Commands(uri),
            config,
            HashMap::new(),
            Some(receiver),
            url,
        )?;
        let session = WsSession {
            items,
            control: WsControl { ops },
            task,
        };
        opened(ready).await?;
        Ok(session)
    }

    /// A handle to subscribe, unsubscribe and publish; clone it freely.
    pub fn control(&self) -> WsControl {
        self.control.clone()
    }
}

impl Stream for WsSession {
    type Item = Result<(ChannelName, Item), Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.items.poll_recv(cx)
    }
}

impl Drop for WsSession {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl fmt::Debug for WsSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsSession").finish_non_exhaustive()
    }
}

/// Commands for a [`WsSession`]. Each waits for the server's answer.
#[derive(Clone, Debug)]
pub struct WsControl {
    ops: mpsc::UnboundedSender<Op>,
}

impl WsControl {
    /// Subscribes to `channel` from `start` (again, from the new start, if
    /// already subscribed); the session keeps it across reconnects.
    ///
    /// # Errors
    /// The server's refusal ([`Error::Status`] with its code, status 400), or
    /// [`Error::Request`] when the session is gone.
    pub async fn subscribe(&self, channel: &ChannelName, start: Start) -> Result<(), Error> {
        let (reply, answer) = oneshot::channel();
        self.send(Op::Subscribe(channel.clone(), start, reply))?;
        wait(answer).await.map(drop)
    }

    /// Unsubscribes from `channel`.
    ///
    /// # Errors
    /// As [`subscribe`](Self::subscribe).
    pub async fn unsubscribe(&self, channel: &ChannelName) -> Result<(), Error> {
        let (reply, answer) = oneshot::channel();
        self.send(Op::Unsubscribe(channel.clone(), reply))?;
        wait(answer).await.map(drop)
    }

    /// Publishes to `channel`; returns the message's id once the server has
    /// it. A publish in flight when the connection drops fails with
    /// [`Error::Request`]: it may or may not have been published.
    ///
    /// # Errors
    /// The server's refusal (`forbidden` where publishing is not allowed,
    /// …), or [`Error::Request`].
    pub async fn publish(
        &self,
        channel: &ChannelName,
        publication: Publication,
    ) -> Result<Cursor, Error> {
        if publication.is_ephemeral() {
            return Err(push_core::Error::invalid_query(
                "an ephemeral publication has no id: send it with publish_ephemeral",
            )
            .into());
        }
        let (reply, answer) = oneshot::channel();
        self.send(Op::Publish(channel.clone(), publication, reply))?;
        wait(answer)
            .await?
            .ok_or_else(|| push_core::Error::invalid_response("a publish ack without an id").into())
    }

    /// Publishes `publication` to `channel` as [ephemeral](Publication::ephemeral)
    /// (`"store":false`): the subscribers live now get it, on every
    /// technique; it is never stored, so it has no id. Returns once the
    /// server has it. For typing indicators and cursor positions.
    ///
    /// # Errors
    /// As [`publish`](Self::publish).
    pub async fn publish_ephemeral(
        &self,
        channel: &ChannelName,
        publication: Publication,
    ) -> Result<(), Error> {
        let (reply, answer) = oneshot::channel();
        let publication = publication.without_key().ephemeral();
        self.send(Op::Publish(channel.clone(), publication, reply))?;
        wait(answer).await.map(drop)
    }

    fn send(&self, op: Op) -> Result<(), Error> {
        self.ops.send(op).map_err(|_| gone())
    }
}

type Reply = oneshot::Sender<Result<Option<Cursor>, Error>>;

#[derive(Debug)]
enum Op {
    Subscribe(ChannelName, Start, Reply),
    Unsubscribe(ChannelName, Reply),
    Publish(ChannelName, Publication, Reply),
}

async fn wait(
    answer: oneshot::Receiver<Result<Option<Cursor>, Error>>,
) -> Result<Option<Cursor>, Error> {
    answer.await.map_err(|_| gone())?
}

fn gone() -> Error {
    Error::request("the WebSocket session has ended")
}

enum Target {
    Channel(Uri),
    Commands(Uri),
}

type Items = mpsc::Sender<Result<(ChannelName, Item), Error>>;
type Received = mpsc::Receiver<Result<(ChannelName, Item), Error>>;

fn spawn(
    target: Target,
    config: WsClientConfig,
    subscriptions: HashMap<ChannelName, Start>,
    ops: Option<mpsc::UnboundedReceiver<Op>>,
    url: &str,
) -> Result<(Received, JoinHandle<()>, Ready), Error> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| invalid(url, "the client must be made inside a tokio runtime"))?;
    let (items, receiver) = mpsc::channel(config.buffer.max(1));
    let (ready, opened) = oneshot::channel();
    let worker = Worker {
        backoff: Backoff::new(config.initial_backoff, config.max_backoff),
        target,
        config,
        items,
        ops,
        subscriptions,
        waiting: HashMap::new(),
        next_ref: 0,
        ready: Some(ready),
    };
    Ok((receiver, runtime.spawn(worker.run()), opened))
}

/// Told once how the first connection went: `Ok` when the client may be
/// handed out (open and pinned, or failed in passing), the error when it
/// failed for good.
type Ready = oneshot::Receiver<Result<(), Error>>;

/// Waits for the first connection (see [`Ready`]).
async fn opened(ready: Ready) -> Result<(), Error> {
    ready.await.map_err(|_| gone())?
}

/// What an answer with a given `ref` resolves.
enum Waiting {
    /// A caller's command (a subscribe names its channel).
    Caller(Reply, Option<ChannelName>),
    /// A subscription sent again after a reconnect.
    Resubscribe(ChannelName),
}

struct Worker {
    target: Target,
    config: WsClientConfig,
    backoff: Backoff,
    items: Items,
    ops: Option<mpsc::UnboundedReceiver<Op>>,
    /// Every subscribed channel and where it resumes.
    subscriptions: HashMap<ChannelName, Start>,
    waiting: HashMap<u64, Waiting>,
    next_ref: u64,
    /// Until the first connection is open (and a live channel socket
    /// pinned), or has failed: who waits for it.
    ready: Option<oneshot::Sender<Result<(), Error>>>,
}

/// A connection's bytes: plain TCP, or TLS over it for `wss://`.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

type Socket = tokio_tungstenite::WebSocketStream<Box<dyn Io>>;

/// Opens the connection `uri` names: TCP, with TLS for `wss://` (rustls,
/// offering only HTTP/1.1 by ALPN: the handshake is HTTP/1.1, whatever the
/// given TLS configuration names).
async fn open(uri: &Uri, http: &push_http::client::HttpOptions) -> Result<Box<dyn Io>, Error> {
    let secure = uri.scheme_str() == Some("wss");
    let host = uri.host().unwrap_or_default();
    // An IPv6 literal is written in brackets.
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(Error::request)?;
    tcp.set_nodelay(true).map_err(Error::request)?;
    if !secure {
        let _ = http;
        return Ok(Box::new(tcp));
    }
    #[cfg(feature = "rustls")]
    {
        let mut tls = (*http.tls_config()?).clone();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = push_http::client::rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|_| invalid(&uri.to_string(), "its host is not a TLS server name"))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(name, tcp)
            .await
            .map_err(Error::request)?;
        Ok(Box::new(stream))
    }
    #[cfg(not(feature = "rustls"))]
    Err(invalid(
        &uri.to_string(),
        "wss:// needs TLS, which this build leaves out: enable the `rustls` feature",
    ))
}

/// Why a connection ended.
enum Ended {
    /// Reconnect (after a backoff), reporting this first if any.
    Retry(Option<Error>),
    /// The application dropped the client: stop.
    Stop,
}

impl Worker {
    async fn run(mut self) {
        loop {
            match self.connect().await {
                Ok(socket) => {
                    if !self.pins_first() {
                        self.opened(Ok(()));
                    }
                    let ended = self.session(socket).await;
                    match ended {
                        Ended::Stop => return,
                        Ended::Retry(err) => {
                            if let Some(err) = err
                                && self.items.send(Err(err)).await.is_err()
                            {
                                return;
                            }
                        }
                    }
                }
                Err(err) if err.is_fatal() && self.ready.is_some() => {
                    self.opened(Err(err));
                    return;
                }
                Err(err) => {
                    let fatal = err.is_fatal();
                    if self.items.send(Err(err)).await.is_err() || fatal {
                        return;
                    }
                }
            }
            // Handed out all the same: the error first, then what comes.
            self.opened(Ok(()));
            // What was in flight is lost with the connection.
            let waiting = std::mem::take(&mut self.waiting);
            for waiting in waiting.into_values() {
                if let Waiting::Caller(reply, _) = waiting {
                    let _ = reply.send(Err(Error::request(
                        "the connection dropped before the server answered",
                    )));
                }
            }
            sleep(self.backoff.next_delay()).await;
        }
    }

    async fn connect(&mut self) -> Result<Socket, Error> {
        let mut request = match &self.target {
            Target::Channel(uri) => {
                let start = self.subscriptions.values().next().and_then(Start::to_param);
                let mut params: Vec<(&str, &str)> = start
                    .as_ref()
                    .map(|(name, value)| (*name, value.as_str()))
                    .into_iter()
                    .collect();
                if self.config.presence {
                    params.push(("presence", "1"));
                }
                let target = push_http::path_with_params(uri.path(), uri.query(), &params);
                let mut parts = uri.clone().into_parts();
                parts.path_and_query = target.parse().ok();
                Uri::from_parts(parts)
                    .map_err(Error::request)?
                    .into_client_request()
                    .map_err(Error::request)?
            }
            Target::Commands(uri) => {
                let mut request = uri.clone().into_client_request().map_err(Error::request)?;
                request.headers_mut().insert(
                    http::header::SEC_WEBSOCKET_PROTOCOL,
                    http::HeaderValue::from_static(SUBPROTOCOL),
                );
                request
            }
        };
        request.headers_mut().remove(http::header::ORIGIN);
        self.config.http.apply(request.headers_mut());
        let config = tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(self.config.max_message_bytes))
            .max_frame_size(Some(self.config.max_message_bytes));
        let timeout = self.config.connect_timeout;
        let uri = request.uri().clone();
        let http = &self.config.http;
        let connecting = async move {
            let stream = open(&uri, http).await?;
            tokio_tungstenite::client_async_with_config(request, stream, Some(config))
                .await
                .map_err(handshake_error)
        };
        match tokio::time::timeout(timeout, connecting).await {
            Err(_) => Err(Error::Timeout(timeout)),
            Ok(Err(err)) => Err(err),
            Ok(Ok((socket, _response))) => Ok(socket),
        }
    }

    async fn session(&mut self, mut socket: Socket) -> Ended {
        if matches!(self.target, Target::Commands(_)) {
            let channels: Vec<(ChannelName, Start)> = self
                .subscriptions
                .iter()
                .map(|(c, s)| (c.clone(), *s))
                .collect();
            for (channel, start) in channels {
                let reference = self.reference(Waiting::Resubscribe(channel.clone()));
                let command = subscribe_command(&channel, start, reference, self.config.presence);
                if socket.send(Message::text(command)).await.is_err() {
                    return Ended::Retry(None);
                }
            }
        }
        let idle = self.config.idle_timeout;
        loop {
            let next = async {
                match idle {
                    Some(idle) => tokio::time::timeout(idle, socket.next())
                        .await
                        .map_err(|_| idle),
                    None => Ok(socket.next().await),
                }
            };
            let op = async {
                match &mut self.ops {
                    Some(ops) => ops.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                frame = next => {
                    let frame = match frame {
                        Err(idle) => return Ended::Retry(Some(Error::Timeout(idle))),
                        Ok(None) => return Ended::Retry(None),
                        Ok(Some(Err(err))) => return Ended::Retry(Some(Error::request(err))),
                        Ok(Some(Ok(frame))) => frame,
                    };
                    if let Message::Text(text) = frame {
                        self.backoff.reset();
                        if let Some(ended) = self.received(text.as_str()).await {
                            return ended;
                        }
                    }
                }
                op = op => {
                    let Some(op) = op else { return Ended::Stop };
                    let command = self.command(op);
                    if socket.send(Message::text(command)).await.is_err() {
                        return Ended::Retry(None);
                    }
                }
            }
        }
    }

    /// Sends `op` on its way: its frame, with a fresh `ref`.
    fn command(&mut self, op: Op) -> String {
        match op {
            Op::Subscribe(channel, start, reply) => {
                self.subscriptions.insert(channel.clone(), start);
                let reference = self.reference(Waiting::Caller(reply, Some(channel.clone())));
                subscribe_command(&channel, start, reference, self.config.presence)
            }
            Op::Unsubscribe(channel, reply) => {
                self.subscriptions.remove(&channel);
                let reference = self.reference(Waiting::Caller(reply, None));
                to_json!({"op": "unsubscribe", "channel": channel.as_str(), "ref": reference})
                    .to_string()
            }
            Op::Publish(channel, publication, reply) => {
                let reference = self.reference(Waiting::Caller(reply, None));
                let key = publication.key().map(|key| Value::from(key.as_str()));
                let ephemeral = publication.is_ephemeral();
                let kind = publication.kind();
                let (event, data) = publication.into_parts();
                let mut command =
                    to_json!({"op": "publish", "channel": channel.as_str(), "ref": reference});
                if let Some(key) = key {
                    command["key"] = key;
                }
                if ephemeral {
                    command["store"] = Value::from(false);
                }
                if let Some(event) = event {
                    command["event"] = Value::from(event.as_str());
                }
                match std::str::from_utf8(&data) {
                    // JSON data goes as written (never through a Value).
                    Ok(text) if kind == ContentKind::Json => {
                        command["encoding"] = Value::from("json");
                        let mut frame = command.to_string();
                        frame.pop();
                        frame.push_str(",\"data\":");
                        frame.push_str(text);
                        frame.push('}');
                        return frame;
                    }
                    Ok(text) => command["data"] = Value::from(text),
                    Err(_) => {
                        command["data"] = Value::from(BASE64.encode(&data));
                        command["encoding"] = Value::from("base64");
                    }
                }
                command.to_string()
            }
        }
    }

    fn reference(&mut self, waiting: Waiting) -> u64 {
        self.next_ref += 1;
        self.waiting.insert(self.next_ref, waiting);
        self.next_ref
    }

    /// Handles one text frame; `Some` when the connection should end.
    async fn received(&mut self, text: &str) -> Option<Ended> {
        // The first frame of a live channel socket says where it starts
        // (`subscribed`); any frame at all says the socket is subscribed.
        let frame = parse_frame(text);
        if let Ok(Frame::Subscribed(channel, head)) = &frame {
            self.pin(channel, *head);
        }
        self.opened(Ok(()));
        let delivery = match frame {
            Ok(Frame::Delivery(channel, mut item)) => {
                if let Some(start) = self.subscriptions.get_mut(&channel) {
                    match item {
                        // Not in the history: it moves nothing, and follows
                        // where the channel is.
                        Item::Message(message) if message.is_ephemeral() => {
                            let message = match (Arc::try_unwrap(message), *start) {
                                (Ok(message), Start::After(at)) => Arc::new(message.following(at)),
                                (Ok(message), _) => Arc::new(message),
                                (Err(shared), _) => shared,
                            };
                            item = Item::Message(message);
                        }
                        _ => *start = Start::After(item.cursor()),
                    }
                } else if matches!(self.target, Target::Commands(_)) {
                    // Unsubscribed since the server sent it.
                    return None;
                }
                Ok((channel, item))
            }
            Ok(Frame::Subscribed(..)) => return None,
            Ok(Frame::Answer(reference, answer)) => {
                match reference.and_then(|r| self.waiting.remove(&r)) {
                    Some(Waiting::Caller(reply, subscribed)) => {
                        if let (Some(channel), Ok(Some(head))) = (&subscribed, &answer) {
                            self.pin(channel, *head);
                        }
                        let _ = reply.send(answer);
                        return None;
                    }
                    Some(Waiting::Resubscribe(channel)) => match answer {
                        Ok(head) => {
                            if let Some(head) = head {
                                self.pin(&channel, head);
                            }
                            return None;
                        }
                        Err(err) => {
                            self.subscriptions.remove(&channel);
                            Err(err)
                        }
                    },
                    None => return None,
                }
            }
            Err(err) => Err(err.into()),
        };
        if self.items.send(delivery).await.is_err() {
            return Some(Ended::Stop);
        }
        None
    }
}

impl Worker {
    /// `true` for a live channel socket: it is ready once the server said
    /// where it starts (`subscribed`), not when the handshake is done.
    fn pins_first(&self) -> bool {
        matches!(self.target, Target::Channel(_))
            && self
                .subscriptions
                .values()
                .all(|start| matches!(start, Start::Live | Start::Last(_)))
    }

    /// Tells whoever waits for the first connection how it went (once).
    fn opened(&mut self, result: Result<(), Error>) {
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(result);
        }
    }

    /// A live (or last-N) subscription learns where it starts: it resumes
    /// from there.
    fn pin(&mut self, channel: &ChannelName, head: Cursor) {
        if let Some(start @ (Start::Live | Start::Last(_))) = self.subscriptions.get_mut(channel) {
            *start = Start::After(head);
        }
    }
}

/// The `subscribe` command the clients send.
pub fn subscribe_command(
    channel: &ChannelName,
    start: Start,
    reference: u64,
    presence: bool,
) -> String {
    let mut command = to_json!({"op": "subscribe", "channel": channel.as_str(), "ref": reference});
    if presence {
        command["presence"] = Value::from(true);
    }
    match start {
        Start::Last(n) => command["last"] = Value::from(n),
        other => {
            if let Some(since) = other.to_since() {
                command["since"] = Value::from(since);
            }
        }
    }
    command.to_string()
}

/// A frame from the server.
#[derive(Debug)]
pub enum Frame {
    /// A message or a signal, and the channel it is for.
    Delivery(ChannelName, Item),
    /// Where a live channel socket starts.
    Subscribed(ChannelName, Cursor),
    /// An `ack` (with a cursor or an id) or an `error`, and its numeric `ref`.
    Answer(Option<u64>, Result<Option<Cursor>, Error>),
}

/// Reads one text frame from the server.
///
/// # Errors
/// [`push_core::Error::InvalidResponse`] for a frame that is not one.
pub fn parse_frame(text: &str) -> Result<Frame, push_core::Error> {
    let bad = |what: &str| push_core::Error::invalid_response(format!("a frame {what}"));
    let value: Value = serde_json::from_str(text).map_err(|_| bad("is not JSON"))?;
    let Some(op) = value.get("op") else {
        // From the text: a JSON message's data exactly as sent.
        let message = json::parse_message(text.as_bytes())?;
        return Ok(Frame::Delivery(
            message.channel().clone(),
            Item::Message(Arc::new(message)),
        ));
    };
    let reference = value.get("ref").and_then(Value::as_u64);
    let channel = || {
        value
            .get("channel")
            .and_then(Value::as_str)
            .and_then(|c| c.parse::<ChannelName>().ok())
            .ok_or_else(|| bad("names no channel"))
    };
    let cursor = |name: &str| match value.get(name).and_then(Value::as_str) {
        Some(text) => text
            .parse::<Cursor>()
            .map(Some)
            .map_err(|_| bad("holds a malformed cursor")),
        None => Ok(None),
    };
    match op.as_str() {
        Some(kind @ ("gap" | "reset")) => {
            let signal = json::parse_signal(kind, text.as_bytes())?;
            Ok(Frame::Delivery(channel()?, Item::Signal(signal)))
        }
        Some("subscribed") => {
            let head = cursor("cursor")?.ok_or_else(|| bad("says subscribed without a cursor"))?;
            Ok(Frame::Subscribed(channel()?, head))
        }
        Some("ack") => {
            let acked = match cursor("id")? {
                Some(id) => Some(id),
                None => cursor("cursor")?,
            };
            Ok(Frame::Answer(reference, Ok(acked)))
        }
        Some("error") => {
            let text_of = |name| value.get(name).and_then(Value::as_str).map(str::to_owned);
            Ok(Frame::Answer(
                reference,
                Err(Error::Status {
                    status: 400,
                    code: text_of("code"),
                    message: text_of("message"),
                    outcome: text_of("outcome"),
                }),
            ))
        }
        _ => Err(bad("has an unknown op")),
    }
}

fn check_url(url: &str) -> Result<Uri, Error> {
    let uri: Uri = url.parse().map_err(|_| invalid(url, "not a URL"))?;
    if uri.host().is_none() {
        return Err(invalid(url, "it needs a host"));
    }
    match uri.scheme_str() {
        Some("ws") => Ok(uri),
        Some("wss") if cfg!(feature = "rustls") => Ok(uri),
        Some("wss") => Err(invalid(
            url,
            "wss:// needs TLS, which this build leaves out: enable the `rustls` feature",
        )),
        _ => Err(invalid(url, "it needs the ws:// or wss:// scheme")),
    }
}

/// A refused handshake is the server's status and error body; anything
/// else, a failed request.
fn handshake_error(err: tungstenite::Error) -> Error {
    match err {
        tungstenite::Error::Http(response) => {
            let status = response.status().as_u16();
            let body = response.body().as_deref().unwrap_or_default();
            Error::status(status, body)
        }
        err => Error::request(err),
    }
}

fn invalid(url: &str, reason: &'static str) -> Error {
    Error::InvalidUrl {
        url: url.to_owned(),
        reason,
    }
}
