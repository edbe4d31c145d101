//! One socket's task: it reads the client's frames (commands on the command
//! endpoint), writes what the hub delivers, and keeps the heartbeat, the
//! write timeout and the subscriber's expiry, none of which waits for
//! another (a write never blocks the loop).

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use futures_util::future::OptionFuture;
use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use push_core::wire::json;
use push_core::{ChannelName, Cursor, Hub, Item, Member, Signal, WireFormat};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_stream::StreamMap;
use tokio_tungstenite::WebSocketStream;
use tungstenite::Message;
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::{CloseFrame, Frame};

use crate::config::{SlowConsumer, WsConfig};
use crate::deflate;
use crate::protocol::{self, Acked, Command, Refused};
use crate::server::Shared;
use http::request::Parts;
use push_http::{Access, Action, Attended, ChannelRule, Check, Denial, Live, Technique};

/// How long a closing socket waits for the peer's close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// The most ready messages written before one flush.
const BATCH: usize = 64;

/// What a socket serves: one channel, or commands.
pub(crate) enum Mode<S> {
    /// The channel, its subscription, and the head a live start is pinned to.
    Channel(ChannelName, S, Option<Cursor>),
    /// The command endpoint (`push.v1`).
    Commands,
    /// Every text and binary message echoed (the conformance endpoint).
    Echo,
}

/// What a socket does with the client's text and binary messages.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reads {
    /// Nothing: on the channel endpoint the client has nothing to say.
    Ignored,
    /// JSON commands (`push.v1`).
    Commands,
    /// Sent back as they came (Autobahn|Testsuite's fuzzingclient).
    Echoed,
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

fn allows(rule: Option<&ChannelRule>, channel: &ChannelName) -> bool {
    rule.is_none_or(|rule| rule(channel))
}

/// What limits a socket: its access, and the handshake's head its hook is
/// asked with (on the command endpoint, when there is a hook).
struct Limits {
    access: Access,
    request: Option<Box<Parts>>,
}

/// One socket and everything it holds.
pub(crate) struct Socket<H: Hub, S> {
    ws: WebSocketStream<S>,
    /// Rules, deadline and hook; boxed, as most sockets have none.
    limits: Option<Box<Limits>>,
    /// A frame to send first (where a live channel socket starts).
    greeting: Option<Bytes>,
    hub: Arc<H>,
    /// Counts the socket, and reaches its handler's configuration.
    live: Live<Shared>,
    /// With permessage-deflate negotiated: the size from which a message
    /// goes out compressed.
    deflate: Option<usize>,
    reads: Reads,
    /// Frames were written that are not flushed yet.
    dirty: bool,
    /// A flush had to wait: the peer is not reading (for now).
    waiting: bool,
    /// At most how many bytes wait in tungstenite's buffer, unsent, since
    /// the connection last took everything: bounded by
    /// [`WsConfig::max_write_buffer_bytes`] here rather than by tungstenite,
    /// which would refuse a single frame larger than the bound forever.
    unsent: usize,
    subscriptions: StreamMap<ChannelName, Tracked<Attended<H::Subscription>>>,
    /// Who the subscriber is, for presence.
    user: Option<Arc<str>>,
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
    pub(crate) fn new(
        ws: WebSocketStream<S>,
        hub: Arc<H>,
        live: Live<Shared>,
        mode: Mode<Attended<H::Subscription>>,
        access: Access,
        request: Option<Box<Parts>>,
        deflate: Option<usize>,
    ) -> Self {
        // Most sockets hold one channel: start the map at one slot.
        let mut subscriptions = StreamMap::with_capacity(1);
        let mut greeting = None;
        let reads = match mode {
            Mode::Channel(channel, subscription, head) => {
                greeting = head.map(|head| protocol::subscribed(&channel, head));
                subscriptions.insert(
                    channel,
                    Tracked {
                        inner: subscription,
                        started: false,
                    },
                );
                Reads::Ignored
            }
            Mode::Commands => Reads::Commands,
            Mode::Echo => Reads::Echoed,
        };
        let limited = access.is_limited();
        let user = access.user.clone();
        Socket {
            user,
            ws,
            limits: limited.then(|| Box::new(Limits { access, request })),
            greeting,
            hub,
            live,
            deflate,
            reads,
            dirty: false,
            waiting: false,
            unsent: 0,
            subscriptions,
        }
    }

    fn config(&self) -> &WsConfig {
        &self.live.config
    }

    /// Runs the socket to its end. Borrowing `self` (rather than moving it
    /// into the future) keeps the task from holding the socket twice.
    pub(crate) async fn run(&mut self) {
        let deadline = self
            .limits
            .as_ref()
            .and_then(|limits| limits.access.deadline);
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
                        (self.dirty, self.waiting, self.unsent) = (false, false, 0);
                        clock.write_by = None;
                    }
                    Io::Flushed(Err(_)) | Io::Read(None) => return End::Gone,
                    Io::Read(Some(Err(err))) => return read_error(&err),
                    Io::Read(Some(Ok(message))) => {
                        match message {
                            // Boxed: an idle channel socket need not carry
                            // the state of a command it will never run.
                            Message::Text(text) if self.reads == Reads::Commands => {
                                if let Err(end) = Box::pin(self.command(text.as_str())).await {
                                    return end;
                                }
                            }
                            Message::Binary(_) if self.reads == Reads::Commands => {
                                return End::Close(CloseCode::Unsupported, "push.v1 speaks text frames only");
                            }
                            message @ (Message::Text(_) | Message::Binary(_))
                                if self.reads == Reads::Echoed =>
                            {
                                if let Err(end) = self.echo(message) {
                                    return end;
                                }
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
                Item::Message(message) => self.envelope(message),
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
                    text(protocol::signal(&channel, signal))
                }
            };
            // Nothing goes out after the expiry instant, however busy the
            // channel.
            if expiry.is_some_and(|at| at <= Instant::now()) {
                return Err(End::Close(CloseCode::Policy, EXPIRED));
            }
            self.write(frame)?;
            written += 1;
            if written == BATCH || !self.ready() {
                break;
            }
            next = self.subscriptions.next().now_or_never().flatten();
        }
        Ok(())
    }

    /// Queues `message` without waiting for the connection; the loop
    /// flushes it. A frame goes out whatever its size when nothing waits
    /// before it; behind others, only within `max_write_buffer_bytes`.
    fn write(&mut self, message: Message) -> Result<(), End> {
        let len = message.len();
        if self.unsent > 0 && self.unsent.saturating_add(len) > self.config().max_write_buffer_bytes
        {
            // Our buffer for this peer is full: it has not read for long.
            return Err(self.stalled());
        }
        self.dirty = true;
        if self.ws.start_send_unpin(message).is_err() {
            return Err(End::Gone);
        }
        // The connection took it all (tungstenite keeps less than its 4 KiB
        // write buffer), or some of it waits.
        self.unsent = if self.ready() {
            0
        } else {
            self.unsent.saturating_add(len)
        };
        Ok(())
    }

    /// `message`'s envelope as a frame: compressed (once, for every socket
    /// that sends it) when permessage-deflate is on and it is large enough.
    fn envelope(&self, message: &push_core::Message) -> Message {
        let envelope = json::envelope(message);
        if self
            .deflate
            .is_some_and(|threshold| envelope.len() >= threshold)
        {
            let deflated = message.encoded(WireFormat::JsonEnvelopeDeflated, |_| {
                // Empty: the compressor failed (it does not); sent plain.
                deflate::compress(&envelope).unwrap_or_default()
            });
            if !deflated.is_empty() {
                return compressed(deflated, Data::Text);
            }
        }
        text(envelope)
    }

    /// Sends an echoed message back, compressed when permessage-deflate is
    /// on and it is large enough.
    fn echo(&mut self, message: Message) -> Result<(), End> {
        let (data, bytes) = match &message {
            Message::Text(text) => (Data::Text, text.as_bytes()),
            Message::Binary(bytes) => (Data::Binary, &bytes[..]),
            _ => return self.write(message),
        };
        if self
            .deflate
            .is_some_and(|threshold| bytes.len() >= threshold)
            && let Some(deflated) = deflate::compress(bytes)
        {
            return self.write(compressed(deflated, data));
        }
        self.write(message)
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
                Ok((acked, mapped)) => protocol::ack(reference, acked, mapped.as_ref()),
                Err(refused) => protocol::error(reference, &refused),
            },
            Err(refused) => protocol::error(reference, &refused),
        };
        self.write(text(reply))
    }

    /// Asks the hook about `channel`: ready at once without one. Made
    /// here, awaited by the caller, so that no borrow of the socket is held
    /// while the app decides.
    fn check(&self, channel: &ChannelName, action: Action) -> Check {
        match self.limits.as_deref() {
            Some(Limits {
                access,
                request: Some(request),
            }) => access.check(request, channel, action),
            _ => Check::allowed(),
        }
    }

    /// Carries out `command`: what the ack carries, and the channel it acted
    /// on when the hook mapped it.
    async fn carry_out(
        &mut self,
        command: Command,
    ) -> Result<(Acked, Option<ChannelName>), Refused> {
        let rules = self.limits.as_ref().map(|limits| &limits.access);
        match command {
            Command::Subscribe {
                channel,
                start,
                presence,
            } => {
                if !allows(rules.and_then(|a| a.subscribe.as_ref()), &channel) {
                    return Err(Refused::new(
                        "forbidden",
                        format!("not allowed to subscribe to {channel}"),
                    ));
                }
                let mapped = self
                    .check(&channel, Action::Subscribe)
                    .await
                    .map_err(denied)?;
                let (channel, mapped) = unmapped_or(channel, mapped);
                let max = self.config().max_subscriptions;
                if !self.subscriptions.contains_key(&channel) && self.subscriptions.len() >= max {
                    return Err(Refused::new(
                        "too_many_subscriptions",
                        format!("a socket may subscribe to at most {max} channels"),
                    ));
                }
                let (subscription, head) =
                    push_core::subscribe_pinned(&*self.hub, &channel, start).await?;
                let member = Member::new(self.user.as_deref(), Technique::Ws.as_str());
                let subscription =
                    Attended::enter(&*self.hub, &channel, member, subscription, presence).await?;
                let acked = head.map_or(Acked::Done, Acked::Cursor);
                let mapped = mapped.then(|| channel.clone());
                self.subscriptions.insert(
                    channel,
                    Tracked {
                        inner: subscription,
                        started: false,
                    },
                );
                Ok((acked, mapped))
            }
            Command::Unsubscribe { channel } => match self.subscriptions.remove(&channel) {
                Some(_) => Ok((Acked::Done, None)),
                None => Err(Refused::new(
                    "not_subscribed",
                    format!("not subscribed to {channel}"),
                )),
            },
            Command::Publish {
                channel,
                publication,
            } => {
                let rule = rules.and_then(|a| a.publish.as_ref());
                if !self.config().allow_publish || !allows(rule, &channel) {
                    return Err(Refused::new(
                        "forbidden",
                        format!("not allowed to publish to {channel}"),
                    ));
                }
                let mapped = self
                    .check(&channel, Action::Publish)
                    .await
                    .map_err(denied)?;
                let (channel, mapped) = unmapped_or(channel, mapped);
                let ephemeral = publication.is_ephemeral();
                let id = self.hub.publish(&channel, publication).await?;
                let acked = if ephemeral {
                    Acked::Unstored
                } else {
                    Acked::Id(id)
                };
                Ok((acked, mapped.then_some(channel)))
            }
        }
    }
}

/// The channel to act on: the one the hook mapped to, else the one named;
/// and whether it was mapped.
fn unmapped_or(named: ChannelName, mapped: Option<ChannelName>) -> (ChannelName, bool) {
    match mapped {
        Some(mapped) => (mapped, true),
        None => (named, false),
    }
}

/// A denied command's error reply: the denial's code and message (its
/// status is for HTTP answers).
fn denied(denial: Denial) -> Refused {
    Refused {
        code: denial.code,
        message: denial.message.into_owned(),
        may_have_happened: None,
    }
}

/// A text frame from bytes known to be UTF-8 (our own JSON), without checking
/// them again for every socket.
fn text(bytes: Bytes) -> Message {
    Message::Frame(Frame::message(bytes, OpCode::Data(Data::Text), true))
}

/// A final frame of a message compressed with permessage-deflate (RSV1 set).
fn compressed(bytes: Bytes, data: Data) -> Message {
    let mut frame = Frame::message(bytes, OpCode::Data(data), true);
    frame.header_mut().rsv1 = true;
    Message::Frame(frame)
}

/// The close code for a read error, or `Gone` when there is no one to tell.
fn read_error(err: &tungstenite::Error) -> End {
    use crate::incoming::Refused;
    use tungstenite::Error as E;
    match err {
        E::Capacity(_) => End::Close(CloseCode::Size, "message too big"),
        E::Utf8(_) => End::Close(CloseCode::Invalid, "text frame is not UTF-8"),
        E::Io(io) => match crate::incoming::refused(io) {
            Some(Refused::InvalidText) => End::Close(CloseCode::Invalid, "text frame is not UTF-8"),
            Some(Refused::InvalidDeflate) => {
                End::Close(CloseCode::Invalid, "compressed message is not deflate data")
            }
            Some(Refused::TooBig) => End::Close(CloseCode::Size, "message too big"),
            Some(Refused::Protocol) => End::Close(CloseCode::Protocol, "protocol violation"),
            None => End::Gone,
        },
        E::Protocol(_) => End::Close(CloseCode::Protocol, "protocol violation"),
        _ => End::Gone,
    }
}
