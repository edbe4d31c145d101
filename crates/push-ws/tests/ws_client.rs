//! The Rust WebSocket clients against a real server, through a TCP proxy the
//! tests can cut: delivery, publish with ack, refusals, and reconnects that
//! resume every channel from its cursor.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use push_core::{ChannelName, Hub, Item, MemoryHub, Publication, Signal, Start};
use push_http::ClientError;
use push_ws::{WsClientConfig, WsConfig, WsHandler, WsSession, WsSubscriber};
use support::{Server, drive, next_data, next_item, until, within};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

fn channel(name: &str) -> ChannelName {
    name.parse().unwrap()
}

fn quick() -> WsClientConfig {
    WsClientConfig::default().with_backoff(Duration::from_millis(10), Duration::from_millis(100))
}

/// A TCP proxy in front of `upstream` whose connections can be cut at once.
struct Proxy {
    addr: SocketAddr,
    upstream: Arc<Mutex<SocketAddr>>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accepting: JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let upstream = Arc::new(Mutex::new(upstream));
        let (list, target) = (connections.clone(), upstream.clone());
        let accepting = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = *target.lock().unwrap();
                let relay = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                list.lock().unwrap().push(relay);
            }
        });
        Proxy {
            addr,
            upstream,
            connections,
            accepting,
        }
    }

    /// Sends new connections to another server.
    fn point_at(&self, upstream: SocketAddr) {
        *self.upstream.lock().unwrap() = upstream;
    }

    /// Drops every connection through the proxy (new ones still pass).
    fn cut(&self) {
        for relay in self.connections.lock().unwrap().drain(..) {
            relay.abort();
        }
    }

    fn connections(&self) -> usize {
        self.connections.lock().unwrap().len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accepting.abort();
        self.cut();
    }
}

#[tokio::test]
async fn a_subscriber_resumes_across_cut_connections() {
    let hub = MemoryHub::new();
    let handler = WsHandler::new(hub.clone(), WsConfig::default());
    let server = Server::start(handler.clone()).await;
    let proxy = Proxy::start(server.addr).await;
    let url = format!("ws://{}/ws/c", proxy.addr);
    let mut items = drive(WsSubscriber::connect(&url, quick()).await.unwrap());
    let mut published = Vec::new();
    let mut received = Vec::new();
    for round in 0..4 {
        until("the socket", || handler.connections() == 1).await;
        for n in 0..5 {
            let data = format!("{round}.{n}");
            hub.publish(&channel("c"), Publication::new(data.clone()))
                .await
                .unwrap();
            published.push(data);
        }
        received.push(next_data(&mut items).await);
        // Cut with messages still in flight; more are published meanwhile.
        proxy.cut();
        until("the server to notice", || handler.connections() == 0).await;
        for n in 5..8 {
            let data = format!("{round}.{n}");
            hub.publish(&channel("c"), Publication::new(data.clone()))
                .await
                .unwrap();
            published.push(data);
        }
        while received.len() < published.len() {
            received.push(next_data(&mut items).await);
        }
    }
    assert_eq!(received, published);
    assert!(proxy.connections() <= 1);
}

#[tokio::test]
async fn a_subscriber_learns_of_a_restarted_hub() {
    let hub = MemoryHub::new();
    let old = Server::start(WsHandler::new(hub.clone(), WsConfig::default())).await;
    let proxy = Proxy::start(old.addr).await;
    hub.publish(&channel("c"), Publication::new("old"))
        .await
        .unwrap();
    let config = quick().with_start(Start::Earliest);
    let mut items = drive(
        WsSubscriber::connect(&format!("ws://{}/ws/c", proxy.addr), config)
            .await
            .unwrap(),
    );
    assert_eq!(next_data(&mut items).await, "old");

    // Another server with a fresh hub (a restart that lost the history).
    let fresh = MemoryHub::new();
    fresh
        .publish(&channel("c"), Publication::new("new"))
        .await
        .unwrap();
    let new = Server::start(WsHandler::new(fresh.clone(), WsConfig::default())).await;
    proxy.point_at(new.addr);
    proxy.cut();
    let Item::Signal(Signal::Reset(reset)) = next_item(&mut items).await else {
        panic!("expected a reset")
    };
    assert_eq!(next_data(&mut items).await, "new");
    let later = fresh
        .publish(&channel("c"), Publication::new("later"))
        .await
        .unwrap();
    let Item::Message(m) = next_item(&mut items).await else {
        panic!()
    };
    assert_eq!((m.cursor(), &m.data()[..]), (later, &b"later"[..]));
    assert!(later > reset.resume);
}

#[tokio::test]
async fn a_refused_handshake_is_fatal_at_connect() {
    let hub = MemoryHub::new();
    let server = Server::start(WsHandler::new(hub.clone(), WsConfig::commands())).await;
    // The command endpoint refuses a socket without push.v1: 400.
    // The first handshake is made in `connect`: its refusal is the error.
    match WsSubscriber::connect(&format!("ws://{}/ws/c", server.addr), quick()).await {
        Err(err @ ClientError::Status { status: 400, .. }) => assert!(err.is_fatal()),
        other => panic!("expected a 400, got {other:?}"),
    }
    let mut bad = vec!["http://h/ws/c", "ws://h/ws/a%20b", "nope"];
    if !cfg!(feature = "rustls") {
        bad.push("wss://h/ws/c");
    }
    for bad in bad {
        assert!(
            matches!(
                WsSubscriber::connect(bad, quick()).await,
                Err(ClientError::InvalidUrl { .. })
            ),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn a_session_subscribes_publishes_and_resumes_every_channel() {
    let hub = MemoryHub::new();
    let handler = WsHandler::new(hub.clone(), WsConfig::commands().with_publish(true));
    let server = Server::start(handler.clone()).await;
    let proxy = Proxy::start(server.addr).await;
    let mut session = WsSession::connect(&format!("ws://{}/ws", proxy.addr), quick())
        .await
        .unwrap();
    let control = session.control();
    let (a, b) = (channel("a"), channel("b"));
    within("subscribing a", control.subscribe(&a, Start::Live))
        .await
        .unwrap();
    within("subscribing b", control.subscribe(&b, Start::Live))
        .await
        .unwrap();

    let id = within("the ack", control.publish(&a, Publication::new("mine")))
        .await
        .unwrap();
    let (got, Item::Message(message)) =
        within("a delivery", session.next()).await.unwrap().unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (got, message.cursor(), &message.data()[..]),
        (a.clone(), id, &b"mine"[..])
    );

    // Cut the socket; publish to both channels while it is down.
    proxy.cut();
    until("the server to notice", || handler.connections() == 0).await;
    let mut expected = Vec::new();
    for n in 0..3 {
        for ch in [&a, &b] {
            let data = format!("{ch}{n}");
            hub.publish(ch, Publication::new(data.clone()))
                .await
                .unwrap();
            expected.push((ch.clone(), data));
        }
    }
    let mut got = Vec::new();
    while got.len() < expected.len() {
        match within("a delivery", session.next()).await {
            Some(Ok((ch, Item::Message(m)))) => {
                got.push((ch, String::from_utf8(m.data().to_vec()).unwrap()));
            }
            Some(Err(e)) if !e.is_fatal() => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    // In order within each channel.
    for ch in [&a, &b] {
        let of = |list: &[(ChannelName, String)]| {
            list.iter()
                .filter(|(c, _)| c == ch)
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(of(&got), of(&expected));
    }

    // Unsubscribed: nothing more from a.
    within("unsubscribing", control.unsubscribe(&a))
        .await
        .unwrap();
    hub.publish(&a, Publication::new("not for us"))
        .await
        .unwrap();
    hub.publish(&b, Publication::new("for us")).await.unwrap();
    let (ch, item) = within("a delivery", session.next()).await.unwrap().unwrap();
    assert_eq!(ch, b);
    assert!(matches!(item, Item::Message(m) if &m.data()[..] == b"for us"));
}

#[tokio::test]
async fn refusals_come_back_to_the_caller() {
    let hub = MemoryHub::new();
    let server = Server::start(WsHandler::new(hub.clone(), WsConfig::commands())).await;
    let session = WsSession::connect(&format!("ws://{}/ws", server.addr), quick())
        .await
        .unwrap();
    let control = session.control();
    match within(
        "the refusal",
        control.publish(&channel("c"), Publication::new("x")),
    )
    .await
    {
        Err(ClientError::Status { code, .. }) => assert_eq!(code.as_deref(), Some("forbidden")),
        other => panic!("expected forbidden, got {other:?}"),
    }
    match within("the refusal", control.unsubscribe(&channel("c"))).await {
        Err(ClientError::Status { code, .. }) => {
            assert_eq!(code.as_deref(), Some("not_subscribed"));
        }
        other => panic!("expected not_subscribed, got {other:?}"),
    }
    drop(session);
    assert!(
        control.subscribe(&channel("c"), Start::Live).await.is_err(),
        "the session is gone"
    );
}

#[tokio::test]
async fn a_gap_reaches_the_session_with_its_channel() {
    let hub =
        MemoryHub::with_config(push_core::MemoryHubConfig::default().with_max_messages(2)).unwrap();
    let server = Server::start(WsHandler::new(hub.clone(), WsConfig::commands())).await;
    let since = hub
        .publish(&channel("c"), Publication::new("seen"))
        .await
        .unwrap();
    for n in 0..4 {
        hub.publish(&channel("c"), Publication::new(n.to_string()))
            .await
            .unwrap();
    }
    let mut session = WsSession::connect(&format!("ws://{}/ws", server.addr), quick())
        .await
        .unwrap();
    within(
        "subscribing",
        session
            .control()
            .subscribe(&channel("c"), Start::After(since)),
    )
    .await
    .unwrap();
    let (ch, item) = within("the gap", session.next()).await.unwrap().unwrap();
    assert_eq!(ch, channel("c"));
    let Item::Signal(Signal::Gap(gap)) = item else {
        panic!("expected a gap, got {item:?}")
    };
    assert_eq!(gap.missed, Some(2));
}
