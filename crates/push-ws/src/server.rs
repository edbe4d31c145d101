//! The WebSocket handler: the handshake on hyper, then one task per socket
//! that reads commands, writes what the hub delivers, and keeps a heartbeat.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use futures_util::future::OptionFuture;
use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use http::header::{
    ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use push_core::wire::{self, Query, json};
use push_core::{ChannelName, Cursor, Hub, Item, Signal};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_stream::StreamMap;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tungstenite::Message;
use tungstenite::protocol::Role;
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::{CloseFrame, Frame};

use crate::config::{Endpoint, SlowConsumer, WsConfig};
use crate::handshake::{self, Refusal, SUBPROTOCOL};
use crate::protocol::{self, Acked, Command, Refused};

/// How long a closing socket waits for the peer's close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// The most ready messages written before one flush.
const BATCH: usize = 64;

#[derive(Debug)]
struct Shared {
    config: WsConfig,
    open: AtomicUsize,
    /// Every socket's task, so that a server can wait for them on shutdown.
    tasks: TaskTracker,
}

/// WebSockets over any [`Hub`]: a hyper `Service`, or call
/// [`handle`](Self::handle) from your own.
///
/// It checks the opening handshake (RFC 6455 over HTTP/1.1, RFC 8441's
/// extended CONNECT over HTTP/2; origin allow-list), answers it, and runs the
/// socket in a task of its own: on the channel endpoint each message is one
/// text frame with its JSON envelope; on the command endpoint (`push.v1`) the
/// client subscribes, unsubscribes and publishes with JSON commands. A
/// heartbeat closes sockets whose peer stopped answering, and a write
/// timeout those whose peer stopped reading; a subscriber that falls behind
/// never makes the server buffer: it gets the gap signal (or is closed, by
/// policy).
///
/// Serve it with upgrades enabled (`serve_connection_with_upgrades`, and
/// `http2().enable_connect_protocol()` for HTTP/2).
///
/// ```
/// use push_core::MemoryHub;
/// use push_ws::{WsConfig, WsHandler};
///
/// let ws = WsHandler::new(MemoryHub::new(), WsConfig::default());
/// assert_eq!(ws.open_sockets(), 0);
/// ```
#[derive(Debug)]
pub struct WsHandler<H> {
    hub: Arc<H>,
    shared: Arc<Shared>,
}

impl<H> Clone for WsHandler<H> {
    fn clone(&self) -> Self {
        WsHandler {
            hub: self.hub.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<H: Hub> WsHandler<H> {
    /// A handler over `hub`.
    pub fn new(hub: H, config: WsConfig) -> Self {
        Self::from_shared(Arc::new(hub), config)
    }

    /// A handler over a hub shared with other handlers.
    pub fn from_shared(hub: Arc<H>, config: WsConfig) -> Self {
        WsHandler {
            hub,
            shared: Arc::new(Shared {
                config,
                open: AtomicUsize::new(0),
                tasks: TaskTracker::new(),
            }),
        }
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &WsConfig {
        &self.shared.config
    }

    /// How many sockets are open right now.
    pub fn open_sockets(&self) -> usize {
        self.shared.open.load(Ordering::Relaxed)
    }

    /// The tracker of every socket's task. A server shutting down cancels
    /// the [`shutdown`](WsConfig::shutdown) token, then `close()`s this and
    /// awaits `wait()`: every socket has then finished its close handshake
    /// (or given up on it).
    pub fn socket_tasks(&self) -> TaskTracker {
        self.shared.tasks.clone()
    }

    /// Answers one handshake: `101` (or `200` over HTTP/2) and the socket's
    /// task, or a `4xx` naming what is wrong.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Full<Bytes>> {
        self.handle_until(request, None).await
    }

    /// Answers one handshake with a socket that is also closed at `deadline`
    /// with 1008 (policy violation), for example when the subscriber's token
    /// expires; nothing is written to it after that instant.
    pub async fn handle_until<B>(
        &self,
        request: Request<B>,
        deadline: Option<Instant>,
    ) -> Response<Full<Bytes>> {
        self.handle_with(request, Access::default().until(deadline))
            .await
    }

    /// Answers one handshake with a socket limited by `access`: closed at its
    /// deadline with 1008, and, on the command endpoint, subscribing and
    /// publishing only where it allows (else an error reply, code
    /// `forbidden`). Check the channel of `GET /ws/{channel}` yourself before
    /// calling this.
    pub async fn handle_with<B>(
        &self,
        mut request: Request<B>,
        access: Access,
    ) -> Response<Full<Bytes>> {
        let config = &self.shared.config;
        let upgrade = hyper::upgrade::on(&mut request);
        let (parts, _body) = request.into_parts();
        let accepted = match handshake::check(&parts, &config.origins) {
            Ok(accepted) => accepted,
            Err(refusal) => return refusal_response(&refusal),
        };
        if config
            .shutdown
            .as_ref()
            .is_some_and(CancellationToken::is_cancelled)
        {
            return refusal_response(&Refusal {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "shutting_down",
                message: "the server is shutting down: connect again shortly",
            });
        }
        let mode = match &config.endpoint {
            Endpoint::Commands => {
                if !accepted.offers_subprotocol {
                    return refusal_response(&Refusal {
                        status: StatusCode::BAD_REQUEST,
                        code: "subprotocol_required",
                        message: "the command endpoint speaks push.v1: offer it in Sec-WebSocket-Protocol",
                    });
                }
                Mode::Commands
            }
            Endpoint::Channel(locator) => {
                let found =
                    Query::parse(parts.uri.query(), config.max_query_len).and_then(|query| {
                        Ok((locator.locate(parts.uri.path(), &query)?, query.start()?))
                    });
                let (channel, start) = match found {
                    Ok(found) => found,
                    Err(err) => return error_response(&err),
                };
                match push_core::subscribe_pinned(&*self.hub, &channel, start).await {
                    Ok((subscription, head)) => Mode::Channel(channel, subscription, head),
                    Err(err) => return error_response(&err),
                }
            }
        };
        // Over HTTP/2 a plain 200 accepts (RFC 8441); over HTTP/1.1, a 101.
        let mut response = Response::new(Full::new(Bytes::new()));
        if let Some(accept) = accepted.accept {
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let headers = response.headers_mut();
            headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
            if let Ok(accept) = HeaderValue::from_str(&accept) {
                headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
            }
        }
        if matches!(mode, Mode::Commands) {
            response.headers_mut().insert(
                SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(SUBPROTOCOL),
            );
        }
        let hub = self.hub.clone();
        let open = Open::new(&self.shared);
        self.shared.tasks.spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let socket_config = open.0.config.socket();
            let ws = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(socket_config),
            )
            .await;
            Socket::new(ws, hub, open, mode, access).run().await;
        });
        response
    }
}

impl<H: Hub, B: Send + 'static> hyper::service::Service<Request<B>> for WsHandler<H> {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<B>) -> Self::Future {
        let handler = self.clone();
        Box::pin(async move { Ok(handler.handle(request).await) })
    }
}

/// Counts an open socket for as long as its task lives.
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

enum Mode<S> {
    /// The channel, its subscription, and the head a live start is pinned to.
    Channel(ChannelName, S, Option<Cursor>),
    Commands,
}

/// A subscription that knows whether it has delivered anything yet: a gap
/// on a subscription already under way means its reader fell behind.
struct Tracked<S> {
    inner: S,
    started: bool,
}

impl<S: Stream<Item = Item> + Unpin> Stream for Tracked<S> {
    type Item = (Item, bool);

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<(Item, bool)>> {
        let item = std::task::ready!(Pin::new(&mut self.inner).poll_next(cx));
        let started = std::mem::replace(&mut self.started, true);
        Poll::Ready(item.map(|item| (item, started)))
    }
}

/// Why a socket ends.
enum End {
    /// The peer went away, or its close handshake is done.
    Gone,
    /// We close it with this code and reason, and wait a little for the
    /// peer's close frame (unless a write is waiting: then as `Abandon`).
    Close(CloseCode, &'static str),
    /// We send this close frame to a peer gone silent or not reading, with
    /// one attempt, and drop the connection.
    Abandon(CloseCode, &'static str),
}

/// A rule on channels: may this socket subscribe (or publish) to it?
pub type ChannelRule = Arc<dyn Fn(&ChannelName) -> bool + Send + Sync>;

/// What one socket may do, for a server with its own authorisation (see
/// [`WsHandler::handle_with`]). The default allows everything the
/// configuration allows, for as long as the socket lives.
///
/// ```
/// use std::sync::Arc;
/// use push_ws::Access;
///
/// let access = Access::default().subscribing(Arc::new(|channel| channel.as_str().starts_with("public.")));
/// assert!(access.deadline.is_none());
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct Access {
    /// The socket is closed with 1008 at this instant, also while a write
    /// to it waits; no message is written to it after this instant.
    pub deadline: Option<Instant>,
    /// Channels the command endpoint may subscribe to (default: any).
    pub subscribe: Option<ChannelRule>,
    /// Channels the command endpoint may publish to, when the configuration
    /// allows publishing at all (default: any).
    pub publish: Option<ChannelRule>,
}

impl Access {
    /// Sets [`deadline`](Self::deadline).
    #[must_use]
    pub fn until(mut self, deadline: Option<Instant>) -> Self {
        self.deadline = deadline;
        self
    }

    /// Sets [`subscribe`](Self::subscribe).
    #[must_use]
    pub fn subscribing(mut self, rule: ChannelRule) -> Self {
        self.subscribe = Some(rule);
        self
    }

    /// Sets [`publish`](Self::publish).
    #[must_use]
    pub fn publishing(mut self, rule: ChannelRule) -> Self {
        self.publish = Some(rule);
        self
    }
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("deadline", &self.deadline)
            .field("subscribe", &self.subscribe.as_ref().map(|_| "rule"))
            .field("publish", &self.publish.as_ref().map(|_| "rule"))
            .finish()
    }
}

fn allows(rule: Option<&ChannelRule>, channel: &ChannelName) -> bool {
    rule.is_none_or(|rule| rule(channel))
}

struct Socket<H: Hub, S> {
    ws: WebSocketStream<S>,
    /// Rules and deadline; boxed, as most sockets have none.
    access: Option<Box<Access>>,
    /// A frame to send first (where a live channel socket starts).
    greeting: Option<Bytes>,
    hub: Arc<H>,
    open: Open,
    commands: bool,
    /// Frames were written that are not flushed yet.
    dirty: bool,
    /// A flush had to wait: the peer is not reading (for now).
    waiting: bool,
    subscriptions: StreamMap<ChannelName, Tracked<H::Subscription>>,
}

/// What the connection did: a frame read (or the end), a flush done, or a
/// flush that has to wait (the write clock starts).
enum Io {
    Read(Option<Result<Message, tungstenite::Error>>),
    Flushed(Result<(), tungstenite::Error>),
    Waiting,
}

/// The instants a socket acts on besides I/O; `None` is never (a setting
/// beyond what the clock can reach).
struct Clock {
    /// The next ping or, while a pong is awaited, when it is overdue.
    heartbeat: Option<Instant>,
    awaiting_pong: bool,
    /// When the write now waiting counts as stalled (set only while one
    /// waits).
    write_by: Option<Instant>,
    /// The subscriber's expiry.
    expiry: Option<Instant>,
}

impl Clock {
    fn next(&self) -> Option<Instant> {
        [self.heartbeat, self.write_by, self.expiry]
            .into_iter()
            .flatten()
            .min()
    }

    fn expired(&self, now: Instant) -> bool {
        self.expiry.is_some_and(|at| at <= now)
    }
}

/// Points `timer` at `next`, or stops it (`armed`) when there is none.
fn rearm(timer: Pin<&mut Sleep>, armed: &mut bool, next: Option<Instant>) {
    *armed = next.is_some();
    if let Some(at) = next {
        timer.reset(at);
    }
}

const EXPIRED: &str = "the subscriber's token expired";

impl<H: Hub, S: AsyncRead + AsyncWrite + Unpin> Socket<H, S> {
    fn new(
        ws: WebSocketStream<S>,
        hub: Arc<H>,
        open: Open,
        mode: Mode<H::Subscription>,
        access: Access,
    ) -> Self {
        // Most sockets hold one channel: start the map at one slot.
        let mut subscriptions = StreamMap::with_capacity(1);
        let mut greeting = None;
        let commands = match mode {
            Mode::Channel(channel, subscription, head) => {
                greeting = head.map(|head| protocol::subscribed(&channel, head));
                subscriptions.insert(
                    channel,
                    Tracked {
                        inner: subscription,
                        started: false,
                    },
                );
                false
            }
            Mode::Commands => true,
        };
        let limited =
            access.deadline.is_some() || access.subscribe.is_some() || access.publish.is_some();
        Socket {
            ws,
            access: limited.then(|| Box::new(access)),
            greeting,
            hub,
            open,
            commands,
            dirty: false,
            waiting: false,
            subscriptions,
        }
    }

    fn config(&self) -> &WsConfig {
        &self.open.0.config
    }

    /// Runs the socket to its end. Borrowing `self` (rather than moving it
    /// into the future) keeps the task from holding the socket twice.
    async fn run(&mut self) {
        let deadline = self.access.as_ref().and_then(|access| access.deadline);
        let (code, reason, wait) = match self.serve(deadline).await {
            End::Gone => return,
            // A peer that is not reading would never see the frame.
            End::Close(code, reason) => (code, reason, !self.waiting),
            End::Abandon(code, reason) => (code, reason, false),
        };
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        if !wait {
            // One attempt (the frame goes out if there is room now), then the
            // connection is dropped.
            let _ = self.ws.start_send_unpin(Message::Close(Some(frame)));
            return;
        }
        let write_timeout = self.config().write_timeout;
        let closing = async {
            let sent = tokio::time::timeout(write_timeout, self.ws.close(Some(frame))).await;
            if matches!(sent, Ok(Ok(()))) {
                // The close handshake: the peer's close frame ends the stream.
                while let Some(Ok(_)) = self.ws.next().await {}
            }
        };
        let _ = tokio::time::timeout(CLOSE_GRACE, closing).await;
    }

    /// The socket's loop. Nothing in it waits for a write: frames are
    /// queued, and flushed beside reading, so that the heartbeat, the write
    /// timeout, the expiry and the shutdown hold while the peer is not
    /// reading.
    async fn serve(&mut self, expiry: Option<Instant>) -> End {
        let config = self.config();
        let (interval, pong_timeout) = (config.ping_interval, config.pong_timeout);
        let write_timeout = config.write_timeout;
        // Boxed: a socket without a shutdown token pays a word.
        let shutdown = config.shutdown.clone();
        let mut shutdown = OptionFuture::from(shutdown.map(|t| Box::pin(t.cancelled_owned())));
        let now = Instant::now();
        let mut clock = Clock {
            heartbeat: now.checked_add(interval),
            awaiting_pong: false,
            write_by: None,
            expiry,
        };
        // One timer for the heartbeat, the write timeout and the expiry.
        let mut armed = false;
        let timer = sleep_until(now);
        tokio::pin!(timer);
        rearm(timer.as_mut(), &mut armed, clock.next());
        if let Some(greeting) = self.greeting.take() {
            if clock.expired(now) {
                return End::Close(CloseCode::Policy, EXPIRED);
            }
            if let Err(end) = self.write(text(greeting)) {
                return end;
            }
        }
        loop {
            tokio::select! {
                biased;
                Some(()) = &mut shutdown => {
                    return End::Close(CloseCode::Away, "the server is shutting down");
                }
                () = &mut timer, if armed => {
                    let now = Instant::now().max(timer.deadline());
                    if clock.expired(now) {
                        return End::Close(CloseCode::Policy, EXPIRED);
                    }
                    if clock.write_by.is_some_and(|at| at <= now) {
                        return self.stalled();
                    }
                    if clock.heartbeat.is_some_and(|at| at <= now) {
                        if clock.awaiting_pong {
                            return End::Abandon(CloseCode::Away, "no pong: the peer is gone");
                        }
                        clock.awaiting_pong = true;
                        clock.heartbeat = now.checked_add(pong_timeout);
                        // Queued behind a waiting write too: the pong is
                        // due all the same.
                        if let Err(end) = self.write(Message::Ping(Bytes::new())) {
                            return end;
                        }
                    }
                    rearm(timer.as_mut(), &mut armed, clock.next());
                }
                io = poll_fn(|cx| {
                    if self.dirty {
                        match self.ws.poll_flush_unpin(cx) {
                            Poll::Ready(flushed) => return Poll::Ready(Io::Flushed(flushed)),
                            Poll::Pending if !self.waiting => return Poll::Ready(Io::Waiting),
                            Poll::Pending => {}
                        }
                    }
                    self.ws.poll_next_unpin(cx).map(Io::Read)
                }) => match io {
                    Io::Waiting => {
                        // The only place the write clock starts: a flush
                        // that completes at once costs no timer.
                        self.waiting = true;
                        clock.write_by = Instant::now().checked_add(write_timeout);
                        rearm(timer.as_mut(), &mut armed, clock.next());
                    }
                    Io::Flushed(Ok(())) => {
                        // The timer may still fire at `write_by`, find
                        // nothing due, and move on.
                        (self.dirty, self.waiting) = (false, false);
                        clock.write_by = None;
                    }
                    Io::Flushed(Err(_)) | Io::Read(None) => return End::Gone,
                    Io::Read(Some(Err(err))) => return read_error(&err),
                    Io::Read(Some(Ok(message))) => {
                        match message {
                            // Boxed: an idle channel socket need not carry
                            // the state of a command it will never run.
                            Message::Text(text) if self.commands => {
                                if let Err(end) = Box::pin(self.command(text.as_str())).await {
                                    return end;
                                }
                            }
                            Message::Binary(_) if self.commands => {
                                return End::Close(CloseCode::Unsupported, "push.v1 speaks text frames only");
                            }
                            Message::Pong(_) => {
                                clock.awaiting_pong = false;
                                clock.heartbeat = Instant::now().checked_add(interval);
                                rearm(timer.as_mut(), &mut armed, clock.next());
                            }
                            // tungstenite answers the close (echoing its
                            // code); the stream then ends. Pings are
                            // answered by tungstenite on the next flush. On
                            // the channel endpoint the client has nothing
                            // to say.
                            _ => {}
                        }
                        // Pongs, close replies and command replies go out
                        // with the next flush.
                        self.dirty = true;
                    }
                },
                Some((channel, (item, started))) = self.subscriptions.next(), if !self.dirty && !self.subscriptions.is_empty() => {
                    if let Err(end) = self.deliver(channel, item, started, clock.expiry) {
                        return end;
                    }
                }
            }
        }
    }

    /// Writes `item` and whatever else is ready now, until a batch is full
    /// or a write has to wait; the loop then flushes.
    fn deliver(
        &mut self,
        channel: ChannelName,
        item: Item,
        started: bool,
        expiry: Option<Instant>,
    ) -> Result<(), End> {
        let mut next = Some((channel, (item, started)));
        let mut written = 0;
        while let Some((channel, (item, started))) = next.take() {
            let frame = match &item {
                Item::Message(message) => json::envelope(message),
                Item::Signal(signal) => {
                    if started
                        && matches!(signal, Signal::Gap(_))
                        && self.config().slow_consumer == SlowConsumer::Close
                    {
                        return Err(End::Close(
                            CloseCode::Again,
                            "too slow: the history moved on",
                        ));
                    }
                    protocol::signal(&channel, signal)
                }
            };
            // Nothing goes out after the expiry instant, however busy the
            // channel.
            if expiry.is_some_and(|at| at <= Instant::now()) {
                return Err(End::Close(CloseCode::Policy, EXPIRED));
            }
            self.write(text(frame))?;
            written += 1;
            if written == BATCH || !self.ready() {
                break;
            }
            next = self.subscriptions.next().now_or_never().flatten();
        }
        Ok(())
    }

    /// Queues `message` without waiting for the connection; the loop
    /// flushes it.
    fn write(&mut self, message: Message) -> Result<(), End> {
        self.dirty = true;
        match self.ws.start_send_unpin(message) {
            Ok(()) => Ok(()),
            // Our buffer for this peer is full: it has not read for long.
            Err(tungstenite::Error::WriteBufferFull(_)) => Err(self.stalled()),
            Err(_) => Err(End::Gone),
        }
    }

    /// Whether the connection takes another frame now, rather than after
    /// the last one has gone out.
    fn ready(&mut self) -> bool {
        matches!(
            poll_fn(|cx| self.ws.poll_ready_unpin(cx)).now_or_never(),
            Some(Ok(()))
        )
    }

    /// The end of a socket whose peer stopped reading.
    fn stalled(&self) -> End {
        match self.config().slow_consumer {
            SlowConsumer::Close => {
                End::Abandon(CloseCode::Again, "too slow: the peer stopped reading")
            }
            SlowConsumer::Signal => End::Abandon(CloseCode::Away, "the peer stopped reading"),
        }
    }

    async fn command(&mut self, command_text: &str) -> Result<(), End> {
        let (reference, command) = protocol::parse(command_text);
        let reply = match command {
            Ok(command) => match self.carry_out(command).await {
                Ok(acked) => protocol::ack(reference, acked),
                Err(refused) => protocol::error(reference, &refused),
            },
            Err(refused) => protocol::error(reference, &refused),
        };
        self.write(text(reply))
    }

    async fn carry_out(&mut self, command: Command) -> Result<Acked, Refused> {
        match command {
            Command::Subscribe { channel, start } => {
                let rule = self.access.as_ref().and_then(|a| a.subscribe.as_ref());
                if !allows(rule, &channel) {
                    return Err(Refused::new(
                        "forbidden",
                        format!("not allowed to subscribe to {channel}"),
                    ));
                }
                let max = self.config().max_subscriptions;
                if !self.subscriptions.contains_key(&channel) && self.subscriptions.len() >= max {
                    return Err(Refused::new(
                        "too_many_subscriptions",
                        format!("a socket may subscribe to at most {max} channels"),
                    ));
                }
                let (subscription, head) =
                    push_core::subscribe_pinned(&*self.hub, &channel, start).await?;
                self.subscriptions.insert(
                    channel,
                    Tracked {
                        inner: subscription,
                        started: false,
                    },
                );
                Ok(head.map_or(Acked::Done, Acked::Cursor))
            }
            Command::Unsubscribe { channel } => match self.subscriptions.remove(&channel) {
                Some(_) => Ok(Acked::Done),
                None => Err(Refused::new(
                    "not_subscribed",
                    format!("not subscribed to {channel}"),
                )),
            },
            Command::Publish {
                channel,
                publication,
            } => {
                let rule = self.access.as_ref().and_then(|a| a.publish.as_ref());
                if !self.config().allow_publish || !allows(rule, &channel) {
                    return Err(Refused::new(
                        "forbidden",
                        format!("not allowed to publish to {channel}"),
                    ));
                }
                Ok(Acked::Id(self.hub.publish(&channel, publication).await?))
            }
        }
    }
}

/// A text frame from bytes known to be UTF-8 (our own JSON), without checking
/// them again for every socket.
fn text(bytes: Bytes) -> Message {
    Message::Frame(Frame::message(bytes, OpCode::Data(Data::Text), true))
}

/// The close code for a read error, or `Gone` when there is no one to tell.
fn read_error(err: &tungstenite::Error) -> End {
    use tungstenite::Error as E;
    match err {
        E::Capacity(_) => End::Close(CloseCode::Size, "message too big"),
        E::Utf8(_) => End::Close(CloseCode::Invalid, "text frame is not UTF-8"),
        E::Protocol(_) => End::Close(CloseCode::Protocol, "protocol violation"),
        _ => End::Gone,
    }
}

fn refusal_response(refusal: &Refusal) -> Response<Full<Bytes>> {
    let mut response = json_response(refusal.status, json::error(refusal.code, refusal.message));
    let headers = response.headers_mut();
    match refusal.status {
        StatusCode::UPGRADE_REQUIRED => {
            headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        }
        StatusCode::METHOD_NOT_ALLOWED => {
            headers.insert(ALLOW, HeaderValue::from_static("GET"));
        }
        _ => {}
    }
    response
}

fn error_response(err: &push_core::Error) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    json_response(status, json::error_for(err))
}

fn json_response(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(wire::CACHE_NEVER));
    response
}
