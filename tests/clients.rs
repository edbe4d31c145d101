//! The Rust clients against the facade's router on a real socket: a live
//! start is pinned when a client is created (what is published between
//! creating and reading is delivered); headers go out on every request,
//! reconnect and handshake; invalid headers and `https://` without TLS are
//! typed errors at creation; and the `Publisher` publishes exactly once,
//! retrying with the same idempotency key, and says whether a publish that
//! failed may have been stored.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

#[path = "support/gate.rs"]
mod gate;

use std::time::Duration;

use gate::{Fault, Gate};
use push_live::client::{
    ClientError, EventSource, EventSourceConfig, LongPoller, LongPollerConfig, Outcome, Poller,
    PollerConfig, Publisher, PublisherConfig, WsClientConfig, WsSession, WsSubscriber,
};
use push_live::{Hub, Item, MemoryHub, Publication, Router, RouterConfig, Start};
use support::{Server, drive, next_data};

const FAST: Duration = Duration::from_millis(20);
const TOKEN: (&str, &str) = ("authorization", "Bearer t0ken");

fn router(hub: &MemoryHub) -> Router<MemoryHub> {
    let mut config = RouterConfig::default().with_publish(true);
    config.poll = config.poll.with_interval(FAST);
    Router::new(hub.clone(), config)
}

async fn serve(hub: &MemoryHub, want: Option<(&'static str, &'static str)>) -> (Server, Gate) {
    let gate = Gate::new(router(hub), want);
    (Server::start(gate.clone()).await, gate)
}

async fn publish(hub: &MemoryHub, data: &str) {
    hub.publish(&"c".parse().unwrap(), Publication::new(data.to_owned()))
        .await
        .unwrap();
}

fn quick_ws() -> WsClientConfig {
    WsClientConfig::default().with_backoff(FAST, FAST)
}

// A live start is pinned when the client is made: what is published right
// after creation, before the first read, is delivered.

#[tokio::test]
async fn a_live_poller_gets_what_is_published_right_after_connect() {
    let hub = MemoryHub::new();
    let (server, _) = serve(&hub, None).await;
    let config = PollerConfig::default().with_interval(FAST);
    let mut poller = Poller::connect(&server.url("/poll/c"), config)
        .await
        .unwrap();
    publish(&hub, "after connect").await;
    assert_eq!(next_data(&mut poller).await, "after connect");
}

#[tokio::test]
async fn a_live_long_poller_gets_what_is_published_right_after_connect() {
    let hub = MemoryHub::new();
    let (server, _) = serve(&hub, None).await;
    let url = server.url("/longpoll/c");
    let mut poller = LongPoller::connect(&url, LongPollerConfig::default())
        .await
        .unwrap();
    publish(&hub, "after connect").await;
    assert_eq!(next_data(&mut poller).await, "after connect");
}

#[tokio::test]
async fn a_live_event_source_gets_what_is_published_right_after_connect() {
    let hub = MemoryHub::new();
    let (server, _) = serve(&hub, None).await;
    let url = server.url("/sse/c");
    let mut events = EventSource::connect(&url, EventSourceConfig::default())
        .await
        .unwrap();
    publish(&hub, "after connect").await;
    assert_eq!(next_data(&mut events).await, "after connect");
}

#[tokio::test]
async fn a_live_websocket_subscriber_gets_what_is_published_right_after_connect() {
    let hub = MemoryHub::new();
    let (server, _) = serve(&hub, None).await;
    let url = server.url("/ws/c").replace("http", "ws");
    let mut subscriber = WsSubscriber::connect(&url, quick_ws()).await.unwrap();
    publish(&hub, "after connect").await;
    assert_eq!(next_data(&mut subscriber).await, "after connect");
}

// Headers: on every request, reconnect and handshake.

/// Every request the gate saw at `prefix` carried the token; there were
/// at least `n`.
async fn all_carry_the_token(gate: &Gate, prefix: &str, n: usize) {
    let seen = gate.wait_for(prefix, n).await;
    for request in &seen {
        assert_eq!(
            request.headers.get(TOKEN.0).map(|v| v.to_str().unwrap()),
            Some(TOKEN.1),
            "{prefix}: {request:?}"
        );
        assert_eq!(
            request.headers.get("cookie").map(|v| v.to_str().unwrap()),
            Some("session=s1"),
            "{prefix}: {request:?}"
        );
    }
}

#[tokio::test]
async fn every_client_sends_its_headers_on_every_request_and_reconnect() {
    let hub = MemoryHub::new();
    let (server, gate) = serve(&hub, Some(TOKEN)).await;
    let mut headers = http::HeaderMap::new();
    headers.insert("cookie", "session=s1".parse().unwrap());

    let poll = PollerConfig::default()
        .with_interval(FAST)
        .with_header(TOKEN.0, TOKEN.1)
        .with_headers(headers.clone());
    let poller = drive(Poller::connect(&server.url("/poll/c"), poll).await.unwrap());
    all_carry_the_token(&gate, "/poll/", 3).await;
    drop(poller);

    // Held for no time: every answer is at once, and another request follows.
    let longpoll = LongPollerConfig::default()
        .with_hold(Duration::ZERO)
        .with_header(TOKEN.0, TOKEN.1)
        .with_headers(headers.clone());
    let url = server.url("/longpoll/c");
    let poller = drive(LongPoller::connect(&url, longpoll).await.unwrap());
    all_carry_the_token(&gate, "/longpoll/", 3).await;
    drop(poller);

    // A stream that looks idle is reconnected: the reconnects carry them too.
    let sse = EventSourceConfig::default()
        .with_retry(FAST, FAST)
        .with_idle_timeout(Some(Duration::from_millis(100)))
        .with_header(TOKEN.0, TOKEN.1)
        .with_headers(headers.clone());
    let events = drive(
        EventSource::connect(&server.url("/sse/c"), sse)
            .await
            .unwrap(),
    );
    all_carry_the_token(&gate, "/sse/", 3).await;
    drop(events);

    let ws = quick_ws()
        .with_idle_timeout(Some(Duration::from_millis(100)))
        .with_header(TOKEN.0, TOKEN.1)
        .with_headers(headers.clone());
    let url = server.url("/ws/c").replace("http", "ws");
    let subscriber = WsSubscriber::connect(&url, ws.clone()).await.unwrap();
    all_carry_the_token(&gate, "/ws/", 3).await;
    drop(subscriber);
    let handshakes = gate.seen_at("/ws").len();
    let session = WsSession::connect(&server.url("/ws").replace("http", "ws"), ws)
        .await
        .unwrap();
    let room = "room".parse().unwrap();
    session
        .control()
        .subscribe(&room, Start::Live)
        .await
        .unwrap();
    all_carry_the_token(&gate, "/ws", handshakes + 2).await;
    drop(session);

    let publisher = Publisher::new(
        &server.url(""),
        PublisherConfig::default()
            .with_token("t0ken")
            .with_headers(headers),
    )
    .unwrap();
    publisher
        .publish(&"c".parse().unwrap(), "hi")
        .await
        .unwrap();
    all_carry_the_token(&gate, "/pub/", 1).await;
}

#[tokio::test]
async fn without_the_token_the_first_request_is_refused_at_connect() {
    let hub = MemoryHub::new();
    let (server, _) = serve(&hub, Some(TOKEN)).await;
    let refused = |err: ClientError| {
        assert!(err.is_fatal(), "{err}");
        assert!(
            matches!(err, ClientError::Status { status: 401, .. }),
            "{err}"
        );
    };
    refused(
        Poller::connect(&server.url("/poll/c"), PollerConfig::default())
            .await
            .unwrap_err(),
    );
    refused(
        LongPoller::connect(&server.url("/longpoll/c"), LongPollerConfig::default())
            .await
            .unwrap_err(),
    );
    refused(
        EventSource::connect(&server.url("/sse/c"), EventSourceConfig::default())
            .await
            .unwrap_err(),
    );
    let url = server.url("/ws/c").replace("http", "ws");
    refused(WsSubscriber::connect(&url, quick_ws()).await.unwrap_err());
    let url = server.url("/ws").replace("http", "ws");
    refused(WsSession::connect(&url, quick_ws()).await.unwrap_err());
}

#[tokio::test]
async fn an_invalid_header_is_an_error_when_the_client_is_made() {
    let hub = MemoryHub::new();
    let (server, gate) = serve(&hub, None).await;
    let invalid = |err: ClientError| {
        assert!(matches!(err, ClientError::InvalidHeader { .. }), "{err}");
        assert!(err.is_fatal());
    };
    let bad_name = PollerConfig::default().with_header("bad name", "x");
    invalid(
        Poller::connect(&server.url("/poll/c"), bad_name)
            .await
            .unwrap_err(),
    );
    let bad_value = LongPollerConfig::default().with_header("x-token", "a\r\nb");
    invalid(
        LongPoller::connect(&server.url("/longpoll/c"), bad_value)
            .await
            .unwrap_err(),
    );
    let bad_value = EventSourceConfig::default().with_header("x-token", "\n");
    invalid(
        EventSource::connect(&server.url("/sse/c"), bad_value)
            .await
            .unwrap_err(),
    );
    let ws_url = server.url("/ws/c").replace("http", "ws");
    invalid(
        WsSubscriber::connect(&ws_url, WsClientConfig::default().with_header("", "x"))
            .await
            .unwrap_err(),
    );
    invalid(
        WsSession::connect(&ws_url, WsClientConfig::default().with_header("a:b", "x"))
            .await
            .unwrap_err(),
    );
    let bad_token = PublisherConfig::default().with_token("line\nbreak");
    invalid(Publisher::new(&server.url(""), bad_token).unwrap_err());
    // Nothing was sent.
    assert!(gate.seen().is_empty(), "{:?}", gate.seen());
}

#[cfg(not(feature = "rustls"))]
#[tokio::test]
async fn https_without_the_rustls_feature_says_so_at_creation() {
    let says_so = |err: ClientError| {
        assert!(matches!(err, ClientError::InvalidUrl { .. }), "{err}");
        assert!(err.to_string().contains("`rustls` feature"), "{err}");
    };
    let url = "https://127.0.0.1:1/poll/c";
    says_so(
        Poller::connect(url, PollerConfig::default())
            .await
            .unwrap_err(),
    );
    says_so(
        LongPoller::connect(url, LongPollerConfig::default())
            .await
            .unwrap_err(),
    );
    says_so(
        EventSource::connect(url, EventSourceConfig::default())
            .await
            .unwrap_err(),
    );
    says_so(
        WsSubscriber::connect("wss://127.0.0.1:1/ws/c", WsClientConfig::default())
            .await
            .unwrap_err(),
    );
    says_so(
        WsSession::connect("wss://127.0.0.1:1/ws", WsClientConfig::default())
            .await
            .unwrap_err(),
    );
    says_so(Publisher::new("https://127.0.0.1:1", PublisherConfig::default()).unwrap_err());
}

// The publisher.

fn quick_publisher() -> PublisherConfig {
    PublisherConfig::default().with_backoff(Duration::from_millis(5), Duration::from_millis(10))
}

/// Everything the channel `c` holds: (cursor, data).
async fn stored(hub: &MemoryHub) -> Vec<(push_live::Cursor, String)> {
    let channel = "c".parse().unwrap();
    let batch = hub.read(&channel, Start::Earliest, 100).await.unwrap();
    batch
        .messages
        .iter()
        .map(|m| (m.cursor(), String::from_utf8(m.data().to_vec()).unwrap()))
        .collect()
}

#[tokio::test]
async fn publishes_with_an_event_name_and_a_fresh_key_each_time() {
    let hub = MemoryHub::new();
    let (server, gate) = serve(&hub, None).await;
    let publisher = Publisher::new(&server.url("/"), quick_publisher()).unwrap();
    let channel = "c".parse().unwrap();
    let first = publisher.publish(&channel, "one").await.unwrap();
    let named = Publication::new("two").with_event("price update".parse().unwrap());
    let second = publisher
        .publish_with(&channel, named, Some("text/plain"))
        .await
        .unwrap();
    assert!(first < second);
    let seen = gate.seen_at("/pub/");
    assert_eq!(seen.len(), 2);
    let key = |n: usize| seen[n].headers.get("idempotency-key").unwrap().clone();
    assert_ne!(key(0), key(1));
    assert_eq!(seen[1].headers.get("content-type").unwrap(), "text/plain");
    let mut subscription = hub.subscribe(&channel, Start::After(first)).await.unwrap();
    match futures_util::StreamExt::next(&mut subscription).await {
        Some(Item::Message(m)) => {
            assert_eq!(
                m.event().map(push_live::EventName::as_str),
                Some("price update")
            );
            assert_eq!(m.cursor(), second);
        }
        other => panic!("expected the named message, got {other:?}"),
    }
}

#[tokio::test]
async fn a_lost_answer_is_retried_with_the_same_key_and_stored_once() {
    let hub = MemoryHub::new();
    let (server, gate) = serve(&hub, None).await;
    let unknown = r#"{"error":{"code":"unavailable","message":"timed out","outcome":"unknown"}}"#;
    gate.fault(Fault::StoreThenRefuse(503, unknown));
    gate.fault(Fault::Refuse(429, ""));
    gate.fault(Fault::Refuse(408, ""));
    let publisher = Publisher::new(&server.url(""), quick_publisher()).unwrap();
    let cursor = publisher
        .publish(&"c".parse().unwrap(), "once")
        .await
        .unwrap();
    let seen = gate.seen_at("/pub/");
    assert_eq!(seen.len(), 4);
    let keys: Vec<_> = seen
        .iter()
        .map(|s| s.headers.get("idempotency-key").unwrap().clone())
        .collect();
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
    assert_eq!(stored(&hub).await, [(cursor, "once".to_owned())]);
}

#[tokio::test]
async fn giving_up_says_whether_it_may_have_been_published() {
    let hub = MemoryHub::new();
    let (server, gate) = serve(&hub, None).await;
    let publisher = Publisher::new(&server.url(""), quick_publisher().with_retries(2)).unwrap();
    let channel = "c".parse().unwrap();

    // The backend was never reached: not published, after 1 + 2 attempts.
    let not_done = r#"{"error":{"code":"unavailable","message":"down","outcome":"not_done"}}"#;
    for _ in 0..3 {
        gate.fault(Fault::Refuse(503, not_done));
    }
    let err = publisher.publish(&channel, "a").await.unwrap_err();
    assert_eq!((err.outcome(), err.attempts()), (Outcome::NotPublished, 3));
    assert!(!err.may_have_published());
    assert_eq!(err.error().may_have_happened(), Some(false));

    // One attempt may have stored it: the whole publish may have.
    let unknown = r#"{"error":{"code":"unavailable","message":"lost","outcome":"unknown"}}"#;
    gate.fault(Fault::Refuse(503, unknown));
    gate.fault(Fault::Refuse(503, not_done));
    gate.fault(Fault::Refuse(503, not_done));
    let err = publisher.publish(&channel, "b").await.unwrap_err();
    assert_eq!(err.outcome(), Outcome::Unknown);
    assert!(err.to_string().contains("may have been published"), "{err}");
    // Publishing again with its key is safe.
    let again = Publication::new("b").with_key(err.key().clone());
    publisher.publish_with(&channel, again, None).await.unwrap();

    // A refusal is not retried.
    let reused = r#"{"error":{"code":"idempotency_key_reused","message":"other content"}}"#;
    gate.fault(Fault::Refuse(422, reused));
    let before = gate.seen_at("/pub/").len();
    let err = publisher.publish(&channel, "c").await.unwrap_err();
    assert_eq!((err.outcome(), err.attempts()), (Outcome::NotPublished, 1));
    assert!(
        matches!(err.error(), ClientError::Status { status: 422, code: Some(c), .. } if c == "idempotency_key_reused")
    );
    assert_eq!(gate.seen_at("/pub/").len(), before + 1);

    // Nothing listening: never connected, never published.
    let addr = server.addr;
    server.stop().await;
    let gone =
        Publisher::new(&format!("http://{addr}"), quick_publisher().with_retries(1)).unwrap();
    let err = gone.publish(&channel, "d").await.unwrap_err();
    assert_eq!((err.outcome(), err.attempts()), (Outcome::NotPublished, 2));
    assert!(matches!(err.error(), ClientError::Request(_)), "{err}");

    let data: Vec<String> = stored(&hub).await.into_iter().map(|(_, d)| d).collect();
    assert_eq!(data, ["b"]);
}
