//! A socket's deadlines hold while its writes wait, over real TCP: a peer
//! that stops reading on a busy channel is closed by the write timeout, the
//! heartbeat, its expiry or the shutdown, within those bounds, while an
//! honest reader of the same channel gets every message in order; nothing
//! goes out after the expiry; and no setting, however large, panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../../tests/support/mod.rs"]
mod support;
// This crate depends on tungstenite itself, which makes one of its paths
// longer than needed here.
#[allow(unused_qualifications)]
#[path = "../../../tests/support/ws.rs"]
mod ws_support;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use push_core::{ChannelName, Hub, MemoryHub, MemoryHubConfig, Publication};
use push_ws::{SlowConsumer, WsConfig, WsHandler};
use serde_json::Value;
use support::{Server, within};
use tokio::net::TcpSocket;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, client_async};
use tokio_util::sync::CancellationToken;
use ws_support::{Ws, next_json};

/// The messages that fill a non-reader's buffers.
const BIG: usize = 64 << 10;
/// More than the kernel holds for one loopback connection here (a send
/// buffer of at most 4 MiB, `tcp_wmem`, and the reader's small receive
/// buffer), so the server's writes to it wait.
const FILL: usize = (8 << 20) / BIG;
/// The messages that keep the channel busy afterwards.
const SMALL: usize = 4 << 10;
/// Settings that never fire within a test.
const NEVER: Duration = Duration::from_secs(3600);

fn channel() -> ChannelName {
    "c".parse().unwrap()
}

/// `WsHandler::handle_until` with one deadline for every socket.
#[derive(Clone)]
struct Until {
    handler: WsHandler<MemoryHub>,
    deadline: Option<Instant>,
}

impl hyper::service::Service<Request<Incoming>> for Until {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let (handler, deadline) = (self.handler.clone(), self.deadline);
        Box::pin(async move { Ok(handler.handle_until(request, deadline).await) })
    }
}

/// A client that reads nothing after its handshake, on a small receive
/// buffer.
async fn not_reading(addr: SocketAddr) -> Ws {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4 << 10).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let (ws, _) = client_async(format!("ws://{addr}/ws/c"), MaybeTlsStream::Plain(stream))
        .await
        .unwrap();
    ws
}

/// One channel, an honest reader on a server of its own (default settings),
/// and a reader that stopped reading on a server with the settings under
/// test.
struct Scene {
    hub: MemoryHub,
    /// The handler under test: it holds the non-reader's socket only.
    handler: WsHandler<MemoryHub>,
    honest: Ws,
    stalled: Ws,
    /// When each message's publish began, by number.
    published: Vec<Instant>,
    /// How many of them the honest reader has, each checked in order.
    seen: usize,
    _servers: (Server, Server),
}

impl Scene {
    async fn new(config: WsConfig, deadline: Option<Instant>) -> Scene {
        let hub = MemoryHub::with_config(
            MemoryHubConfig::default()
                .with_max_messages(100_000)
                .with_max_bytes(256 << 20),
        )
        .unwrap();
        let honest_server = Server::start(WsHandler::new(hub.clone(), WsConfig::default())).await;
        let handler = WsHandler::new(hub.clone(), config);
        let server = Server::start(Until {
            handler: handler.clone(),
            deadline,
        })
        .await;
        let mut honest = ws_support::open(honest_server.addr, "/ws/c", &[])
            .await
            .unwrap();
        assert_eq!(next_json(&mut honest).await["op"], "subscribed");
        let stalled = not_reading(server.addr).await;
        assert_eq!(handler.connections(), 1);
        Scene {
            hub,
            handler,
            honest,
            stalled,
            published: Vec::new(),
            seen: 0,
            _servers: (honest_server, server),
        }
    }

    /// Publishes the next message, `size` bytes that start with its number.
    async fn publish(&mut self, size: usize) {
        let n = self.published.len();
        self.published.push(Instant::now());
        let data = format!("{n:08}{}", "x".repeat(size - 8));
        self.hub
            .publish(&channel(), Publication::new(data))
            .await
            .unwrap();
    }

    /// Reads the honest reader up to the last message published: every one,
    /// in order.
    async fn honest_catch_up(&mut self) {
        while self.seen < self.published.len() {
            let message = next_json(&mut self.honest).await;
            let data = message["data"].as_str().unwrap();
            assert_eq!(data[..8], format!("{:08}", self.seen), "{message:.80}");
            self.seen += 1;
        }
    }

    /// Fills the non-reader's buffers: the server's writes to it now wait.
    async fn fill(&mut self) {
        for _ in 0..FILL {
            self.publish(BIG).await;
        }
        self.honest_catch_up().await;
    }

    /// Keeps the channel busy, a message at a time (each read by the honest
    /// reader), until the handler under test has no socket left; when that
    /// was seen.
    async fn busy_until_closed(&mut self) -> Instant {
        within("the non-reader to be closed", async {
            while self.handler.connections() > 0 {
                self.publish(SMALL).await;
                self.honest_catch_up().await;
            }
        })
        .await;
        Instant::now()
    }

    /// Reads the non-reader to its end, which must come: the numbers of the
    /// messages it got (in order, from the first), and the close code if a
    /// close frame got through.
    async fn drain(&mut self) -> (Vec<usize>, Option<CloseCode>) {
        within("the end of the non-reader's connection", async {
            let (mut got, mut code) = (Vec::new(), None);
            loop {
                match self.stalled.next().await {
                    Some(Ok(Message::Text(text))) => {
                        let frame: Value = serde_json::from_str(&text).unwrap();
                        if let Some(data) = frame["data"].as_str() {
                            got.push(data[..8].parse::<usize>().unwrap());
                        } else {
                            assert_eq!(frame["op"], "subscribed", "{frame}");
                        }
                    }
                    Some(Ok(Message::Close(frame))) => code = frame.map(|f| f.code),
                    Some(Ok(_)) => {}
                    // Dropped without a close handshake: the expected end.
                    Some(Err(_)) | None => break,
                }
            }
            assert_eq!(
                got,
                (0..got.len()).collect::<Vec<_>>(),
                "in order, none lost"
            );
            (got, code)
        })
        .await
    }
}

#[tokio::test]
async fn a_writer_stalled_by_a_non_reader_is_closed_after_the_write_timeout() {
    let write_timeout = Duration::from_millis(300);
    let config = WsConfig::default()
        .with_heartbeat(NEVER, NEVER)
        .with_write_timeout(write_timeout)
        .with_slow_consumer(SlowConsumer::Close);
    let mut scene = Scene::new(config, None).await;
    let start = Instant::now();
    scene.fill().await;
    let filled = Instant::now();
    let closed = scene.busy_until_closed().await;
    // The write began to wait before the fill was read by the honest
    // reader; without the timeout it waits forever (no heartbeat here).
    assert!(closed - start >= write_timeout);
    assert!(
        closed - filled <= write_timeout * 10,
        "closed {:?} after the fill",
        closed - filled
    );
    // The honest reader goes on.
    for _ in 0..10 {
        scene.publish(BIG).await;
    }
    scene.honest_catch_up().await;
    let (got, code) = scene.drain().await;
    assert!(got.len() < scene.published.len());
    assert!(code.is_none_or(|code| code == CloseCode::Again), "{code:?}");
}

#[tokio::test]
async fn the_heartbeat_holds_while_a_write_waits() {
    let (ping, pong) = (Duration::from_millis(600), Duration::from_millis(600));
    let config = WsConfig::default()
        .with_heartbeat(ping, pong)
        .with_write_timeout(NEVER);
    let opened = Instant::now();
    let mut scene = Scene::new(config, None).await;
    // Filled well before the first ping is due.
    scene.fill().await;
    let closed = scene.busy_until_closed().await;
    // The ping waits behind the data, no pong comes: closed as gone.
    assert!(closed - opened >= ping + pong);
    assert!(
        closed - opened <= (ping + pong) * 3,
        "closed {:?} after opening",
        closed - opened
    );
    let (_, code) = scene.drain().await;
    assert!(code.is_none_or(|code| code == CloseCode::Away), "{code:?}");
}

#[tokio::test]
async fn a_waiting_write_ends_at_the_expiry_and_nothing_goes_out_after_it() {
    let config = WsConfig::default()
        .with_heartbeat(NEVER, NEVER)
        .with_write_timeout(NEVER);
    // Room for a slow machine to fill the buffers before it.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut scene = Scene::new(config, Some(deadline)).await;
    scene.fill().await;
    assert!(Instant::now() < deadline, "filled too slowly to test this");
    let closed = scene.busy_until_closed().await;
    assert!(closed >= deadline);
    assert!(
        closed - deadline <= Duration::from_secs(1),
        "closed {:?} after the expiry",
        closed - deadline
    );
    // Published after the expiry: the honest reader gets it, the expired
    // socket must not (it would, were the write let finish once it reads).
    for _ in 0..10 {
        scene.publish(BIG).await;
    }
    scene.honest_catch_up().await;
    let (got, code) = scene.drain().await;
    assert!(!got.is_empty());
    for n in got {
        assert!(
            scene.published[n] < deadline,
            "message {n} was published after the expiry"
        );
    }
    assert!(
        code.is_none_or(|code| code == CloseCode::Policy),
        "{code:?}"
    );
}

#[tokio::test]
async fn a_waiting_write_ends_at_shutdown() {
    let shutdown = CancellationToken::new();
    let config = WsConfig::default()
        .with_heartbeat(NEVER, NEVER)
        .with_write_timeout(NEVER)
        .with_shutdown(shutdown.clone());
    let mut scene = Scene::new(config, None).await;
    scene.fill().await;
    let cancelled = Instant::now();
    shutdown.cancel();
    let closed = scene.busy_until_closed().await;
    // At once: a peer that does not read gets no grace for its close frame.
    assert!(
        closed - cancelled <= Duration::from_secs(1),
        "closed {:?} after the shutdown",
        closed - cancelled
    );
    let (_, code) = scene.drain().await;
    assert!(code.is_none_or(|code| code == CloseCode::Away), "{code:?}");
}

#[tokio::test]
async fn the_expiry_holds_on_a_busy_channel_read_at_full_speed() {
    let hub = MemoryHub::new();
    let handler = WsHandler::new(hub.clone(), WsConfig::default());
    let deadline = Instant::now() + Duration::from_millis(300);
    let server = Server::start(Until {
        handler: handler.clone(),
        deadline: Some(deadline),
    })
    .await;
    let mut ws = ws_support::open(server.addr, "/ws/c", &[]).await.unwrap();
    // A publisher that never pauses, and a reader that keeps up.
    let publisher = tokio::spawn({
        let hub = hub.clone();
        async move {
            let mut published = Vec::new();
            loop {
                published.push(Instant::now());
                let data = format!("{:08}", published.len() - 1);
                hub.publish(&channel(), Publication::new(data))
                    .await
                    .unwrap();
                if published.len() % 16 == 0 {
                    tokio::task::yield_now().await;
                }
                if Instant::now() > deadline + Duration::from_millis(200) {
                    return published;
                }
            }
        }
    });
    let mut got = Vec::new();
    let code = within("the close at the expiry", async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    let frame: Value = serde_json::from_str(&text).unwrap();
                    if let Some(data) = frame["data"].as_str() {
                        got.push(data.parse::<usize>().unwrap());
                    }
                }
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
                Some(Ok(_)) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await;
    let closed = Instant::now();
    assert_eq!(code, Some(CloseCode::Policy));
    assert!(closed - deadline <= Duration::from_secs(1));
    let published = publisher.await.unwrap();
    assert!(!got.is_empty());
    for n in got {
        assert!(
            published[n] < deadline,
            "message {n} was published after the expiry"
        );
    }
}

#[tokio::test]
async fn no_setting_panics() {
    let huge = Duration::from_secs(u64::MAX);
    for (ping, pong, write) in [
        (Duration::MAX, Duration::MAX, Duration::MAX),
        (huge, huge, huge),
        // A ping goes out at once; its pong timeout is out of reach.
        (Duration::from_millis(1), Duration::MAX, Duration::MAX),
        (Duration::from_millis(1), huge, huge),
    ] {
        let hub = MemoryHub::new();
        let config = WsConfig::default()
            .with_heartbeat(ping, pong)
            .with_write_timeout(write);
        let handler = WsHandler::new(hub.clone(), config);
        let server = Server::start(handler.clone()).await;
        let mut ws = ws_support::open(server.addr, "/ws/c", &[]).await.unwrap();
        assert_eq!(next_json(&mut ws).await["op"], "subscribed");
        // An unsolicited pong: the server sets its next ping from it.
        ws.send(Message::Pong(Bytes::new())).await.unwrap();
        ws.send(Message::Ping(Bytes::from_static(b"p")))
            .await
            .unwrap();
        // The answer to our ping says the pong before it was read; a short
        // interval's ping says the server set the pong's timeout.
        let (mut answered, mut pinged) = (false, ping > Duration::from_secs(1));
        within("the server's pong and ping", async {
            while !(answered && pinged) {
                match ws.next().await {
                    Some(Ok(Message::Pong(payload))) => answered |= payload == "p",
                    Some(Ok(Message::Ping(_))) => pinged = true,
                    other => panic!("{ping:?} {pong:?}: expected a pong or a ping, got {other:?}"),
                }
            }
        })
        .await;
        hub.publish(&channel(), Publication::new("alive"))
            .await
            .unwrap();
        let data = within("the message", async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(text))) => return text,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    other => panic!("{ping:?} {pong:?}: expected the message, got {other:?}"),
                }
            }
        })
        .await;
        assert!(data.contains("\"alive\""), "{ping:?} {pong:?}");
        // An expiry too far away for `Instant + Duration` to reach from here
        // is not given; the farthest one that is, is.
        let far = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
        let until = Server::start(Until {
            handler: handler.clone(),
            deadline: Some(far),
        })
        .await;
        let mut other = ws_support::open(until.addr, "/ws/c", &[]).await.unwrap();
        assert_eq!(next_json(&mut other).await["op"], "subscribed");
        ws.close(None).await.unwrap();
        other.close(None).await.unwrap();
        while let Some(Ok(_)) = within("the end", ws.next()).await {}
        while let Some(Ok(_)) = within("the end", other.next()).await {}
        support::until("the sockets to close", || handler.connections() == 0).await;
    }
}
