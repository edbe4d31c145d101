//! The Rust clients and JSON data: every client (short polling, long
//! polling, SSE, the channel socket, the command session) tells a JSON
//! message from a text one and reads it typed with `Message::json`, whether
//! it was published over HTTP as `application/json` or by the session's
//! `publish` with `Publication::json_value`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/serving.rs"]
mod serving;
#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use futures_util::StreamExt as _;
use push_live::{ContentKind, Item, Message, Publication, RouterConfig, ServeConfig, Start};
use serde::{Deserialize, Serialize};
use support::{drive, next_item, request, within};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Price {
    symbol: String,
    cents: u64,
}

fn message(item: Item) -> std::sync::Arc<Message> {
    match item {
        Item::Message(m) => m,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// The next three messages of a client.
async fn three(client: &mut support::Driven) -> Vec<std::sync::Arc<Message>> {
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(message(next_item(client).await));
    }
    got
}

/// The three messages every client must see: JSON over HTTP, text that
/// looks like JSON, JSON from the WebSocket session.
fn check(got: &[std::sync::Arc<Message>], client: &str) {
    assert_eq!(got.len(), 3, "{client}");
    let first: Price = got[0].json().unwrap();
    assert_eq!(
        first,
        Price {
            symbol: "ACME".into(),
            cents: 4217
        },
        "{client}"
    );
    assert_eq!(got[1].kind(), ContentKind::Bytes, "{client}");
    assert_eq!(got[1].json::<Price>().unwrap_err().code(), "invalid_json");
    assert_eq!(&got[1].data()[..], br#"{"symbol":"ACME","cents":4217}"#);
    let third: Price = got[2].json().unwrap();
    assert_eq!(third.symbol, "WS", "{client}");
    assert_eq!(got[2].kind(), ContentKind::Json, "{client}");
}

#[tokio::test]
async fn every_rust_client_reads_json_typed() {
    let mut config = RouterConfig::default().with_publish(true);
    config.ws_commands = config.ws_commands.with_publish(true);
    let server = serving::start(config, ServeConfig::default()).await;
    let http = |path: &str| format!("http://{}{path}", server.addr);
    let ws = |path: &str| format!("ws://{}{path}", server.addr);
    let prices: push_live::ChannelName = "prices".parse().unwrap();
    let earliest = Start::Earliest;

    let mut poller = drive(
        push_live::poll::Poller::connect(
            &http("/poll/prices"),
            push_live::poll::PollerConfig::default()
                .with_start(earliest)
                .with_interval(Duration::from_millis(50)),
        )
        .await
        .unwrap(),
    );
    let mut long_poller = drive(
        push_live::longpoll::LongPoller::connect(
            &http("/longpoll/prices"),
            push_live::longpoll::LongPollerConfig::default().with_start(earliest),
        )
        .await
        .unwrap(),
    );
    let mut events = drive(
        push_live::sse::EventSource::connect(
            &http("/sse/prices"),
            push_live::sse::EventSourceConfig::default().with_start(earliest),
        )
        .await
        .unwrap(),
    );
    let mut socket = drive(
        push_live::ws::WsSubscriber::connect(
            &ws("/ws/prices"),
            push_live::ws::WsClientConfig::default().with_start(earliest),
        )
        .await
        .unwrap(),
    );
    let mut session = push_live::ws::WsSession::connect(&ws("/ws"), Default::default())
        .await
        .unwrap();
    let control = session.control();
    control.subscribe(&prices, earliest).await.unwrap();

    let headers = [("content-type", "application/json")];
    let body = r#"{ "symbol": "ACME", "cents": 4217 }"#;
    let answer = request(server.addr, "POST", "/pub/prices", &headers, body).await;
    assert_eq!(answer.status, 200);
    let text = r#"{"symbol":"ACME","cents":4217}"#;
    let answer = request(server.addr, "POST", "/pub/prices", &[], text).await;
    assert_eq!(answer.status, 200);
    let from_ws = Publication::json_value(&Price {
        symbol: "WS".into(),
        cents: 1,
    })
    .unwrap();
    control.publish(&prices, from_ws).await.unwrap();

    check(&three(&mut poller).await, "Poller");
    check(&three(&mut long_poller).await, "LongPoller");
    check(&three(&mut events).await, "EventSource");
    check(&three(&mut socket).await, "WsSubscriber");
    let mut got = Vec::new();
    while got.len() < 3 {
        match within("a session item", session.next()).await {
            Some(Ok((_, Item::Message(m)))) => got.push(m),
            Some(Ok(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    check(&got, "WsSession");
}

/// The HTTP publisher sends a JSON publication as JSON (its
/// `Content-Type` follows the publication), so subscribers get the value.
#[tokio::test]
async fn the_publisher_sends_json_as_json() {
    let server = serving::start(
        RouterConfig::default().with_publish(true),
        ServeConfig::default(),
    )
    .await;
    let publisher = push_live::client::Publisher::new(
        &format!("http://{}", server.addr),
        push_live::client::PublisherConfig::default(),
    )
    .unwrap();
    let prices: push_live::ChannelName = "prices".parse().unwrap();
    let price = Price {
        symbol: "ACME".into(),
        cents: 4217,
    };
    let json = Publication::json_value(&price).unwrap();
    publisher.publish_with(&prices, json, None).await.unwrap();
    publisher.publish(&prices, "plain").await.unwrap();
    let answer = request(server.addr, "GET", "/poll/prices?since=earliest", &[], "").await;
    assert_eq!(answer.status, 200);
    let batch = push_live::wire::json::parse_batch(&answer.body).unwrap();
    assert_eq!(batch.messages.len(), 2);
    assert_eq!(batch.messages[0].kind(), ContentKind::Json);
    assert_eq!(batch.messages[0].json::<Price>().unwrap(), price);
    assert_eq!(batch.messages[1].kind(), ContentKind::Bytes);
}
