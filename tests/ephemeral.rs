//! Ephemeral publishes (`POST /pub/{channel}?store=false`, `push.v1`'s
//! `"store":false`) over real sockets: every live subscriber, on long
//! polling, SSE, a channel socket and a `push.v1` session, gets the message
//! once, in its place, marked ephemeral and with no id, and no client's
//! cursor moves; nothing is stored (a poll of the history never shows it);
//! a key with `store=false` and a bad `store` value are refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

#[path = "support/ws.rs"]
mod ws;

use std::time::Duration;

use futures_util::SinkExt as _;
use http::StatusCode;
use push_live::client::{
    EventSource, EventSourceConfig, LongPoller, LongPollerConfig, Publisher, PublisherConfig,
    WsClientConfig, WsSession, WsSubscriber,
};
use push_live::{ChannelName, Hub, Item, MemoryHub, Publication, Router, RouterConfig, Start};
use support::{Server, drive, get, next_item, open_sse, read_until, request, until};
use tokio_tungstenite::tungstenite::Message;

const FAST: Duration = Duration::from_millis(20);

fn chat() -> ChannelName {
    "chat".parse().unwrap()
}

async fn serve(hub: &MemoryHub) -> Server {
    let mut config = RouterConfig::default().with_publish(true);
    config.ws_commands = config.ws_commands.with_publish(true);
    config.poll = config.poll.with_interval(FAST);
    Server::start(Router::new(hub.clone(), config)).await
}

/// Waits until `n` subscriptions are live on the chat channel (a long
/// poll counts while it is held).
async fn live(hub: &MemoryHub, n: usize) {
    until(&format!("{n} live subscribers"), || {
        hub.channel_stats(&chat())
            .is_some_and(|s| s.subscribers == n)
    })
    .await;
}

/// `(data, ephemeral, cursor)` of the next item, which must be a message.
async fn next_message<C>(client: &mut C) -> (String, bool, push_live::Cursor)
where
    C: futures_util::Stream<Item = support::ClientItem> + Unpin,
{
    match next_item(client).await {
        Item::Message(m) => (
            String::from_utf8(m.data().to_vec()).unwrap(),
            m.is_ephemeral(),
            m.cursor(),
        ),
        other => panic!("expected a message, got {other:?}"),
    }
}

#[tokio::test]
async fn every_live_client_gets_an_ephemeral_message_once_and_no_cursor_moves() {
    let hub = MemoryHub::new();
    let server = serve(&hub).await;
    let url = |path: &str| server.url(path);
    let ws_config = WsClientConfig::default().with_backoff(FAST, FAST);
    let long = LongPoller::connect(&url("/longpoll/chat"), LongPollerConfig::default())
        .await
        .unwrap();
    let events = EventSource::connect(&url("/sse/chat"), EventSourceConfig::default())
        .await
        .unwrap();
    let subscriber =
        WsSubscriber::connect(&url("/ws/chat").replace("http", "ws"), ws_config.clone())
            .await
            .unwrap();
    let session = WsSession::connect(&url("/ws").replace("http", "ws"), ws_config)
        .await
        .unwrap();
    let control = session.control();
    control.subscribe(&chat(), Start::Live).await.unwrap();
    let session = futures_util::StreamExt::map(session, |item| item.map(|(_, item)| item));
    let mut clients = [
        ("longpoll", drive(long)),
        ("sse", drive(events)),
        ("ws", drive(subscriber)),
        ("session", drive(session)),
    ];
    live(&hub, 4).await;

    let one = hub.publish(&chat(), Publication::new("1")).await.unwrap();
    for (name, client) in &mut clients {
        assert_eq!(
            next_message(client).await,
            ("1".into(), false, one),
            "{name}"
        );
    }
    // The long poller asks again: four live again.
    live(&hub, 4).await;
    let answer = request(server.addr, "POST", "/pub/chat?store=false", &[], "typing").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json(), serde_json::json!({"stored": false}));
    for (name, client) in &mut clients {
        // It follows 1: the position every client already holds.
        assert_eq!(
            next_message(client).await,
            ("typing".into(), true, one),
            "{name}"
        );
    }
    live(&hub, 4).await;
    control
        .publish_ephemeral(&chat(), Publication::new("moved"))
        .await
        .unwrap();
    for (name, client) in &mut clients {
        assert_eq!(
            next_message(client).await,
            ("moved".into(), true, one),
            "{name}"
        );
    }
    live(&hub, 4).await;
    // The Rust HTTP publisher: once, no key, `?store=false`.
    let publisher = Publisher::new(&server.url(""), PublisherConfig::default()).unwrap();
    publisher
        .publish_ephemeral(&chat(), Publication::new("pointer"))
        .await
        .unwrap();
    for (name, client) in &mut clients {
        assert_eq!(
            next_message(client).await,
            ("pointer".into(), true, one),
            "{name}"
        );
    }
    let two = hub.publish(&chat(), Publication::new("2")).await.unwrap();
    for (name, client) in &mut clients {
        assert_eq!(
            next_message(client).await,
            ("2".into(), false, two),
            "{name}"
        );
    }
    // The history has the two stored messages only.
    let history = get(server.addr, "/poll/chat?since=earliest", &[]).await;
    let datas: Vec<_> = history.json()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(datas, ["1", "2"]);
}

#[tokio::test]
async fn on_the_wire_an_ephemeral_message_has_no_id() {
    let hub = MemoryHub::new();
    let server = serve(&hub).await;
    let one = hub.publish(&chat(), Publication::new("1")).await.unwrap();
    let (mut sse, mut seen) = open_sse(server.addr, "/sse/chat", "").await;
    let mut socket = ws::open(server.addr, "/ws/chat", &[]).await.unwrap();
    assert_eq!(ws::next_json(&mut socket).await["op"], "subscribed");
    let held = tokio::spawn({
        let addr = server.addr;
        let since = one.to_string();
        async move {
            get(
                addr,
                &format!("/longpoll/chat?since={since}&timeout=20"),
                &[],
            )
            .await
        }
    });
    live(&hub, 3).await;
    hub.publish(&chat(), Publication::new("typing").ephemeral())
        .await
        .unwrap();

    read_until(&mut sse, &mut seen, "data: typing\n\n").await;
    let before = &seen[..seen.find("data: typing").unwrap()];
    let event = before.rsplit("\n\n").next().unwrap();
    assert!(
        !event.contains("id:"),
        "no id: line, so Last-Event-ID stays: {seen:?}"
    );
    let frame = ws::next_json(&mut socket).await;
    assert_eq!(frame["ephemeral"], true, "{frame}");
    assert!(frame.get("id").is_none(), "{frame}");
    let batch = held.await.unwrap();
    assert_eq!(batch.status, StatusCode::OK);
    let batch = batch.json();
    assert_eq!(batch["cursor"], one.to_string(), "{batch}");
    assert_eq!(batch["messages"][0]["ephemeral"], true, "{batch}");
    assert!(batch["messages"][0].get("id").is_none(), "{batch}");
}

#[tokio::test]
async fn a_key_or_a_bad_store_value_is_refused_and_nobody_watching_is_fine() {
    let hub = MemoryHub::new();
    let server = serve(&hub).await;
    let keyed = [("idempotency-key", "k1")];
    let answer = request(server.addr, "POST", "/pub/chat?store=false", &keyed, "x").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.json()["error"]["code"], "invalid_query");
    let answer = request(server.addr, "POST", "/pub/chat?store=maybe", &[], "x").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    // Nobody subscribed: accepted, nothing created.
    let answer = request(server.addr, "POST", "/pub/chat?store=false", &[], "x").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(hub.channel_count(), 0);
    // `store=true` is an ordinary publish.
    let answer = request(server.addr, "POST", "/pub/chat?store=true", &[], "x").await;
    assert!(answer.json()["id"].is_string());

    let protocol = [("sec-websocket-protocol", "push.v1")];
    let mut commands = ws::open(server.addr, "/ws", &protocol).await.unwrap();
    let cases = [
        (
            r#"{"op":"publish","channel":"chat","data":"x","store":false,"ref":1}"#,
            "ack",
        ),
        (
            r#"{"op":"publish","channel":"chat","data":"x","store":false,"key":"k","ref":2}"#,
            "error",
        ),
        (
            r#"{"op":"publish","channel":"chat","data":"x","store":"no","ref":3}"#,
            "error",
        ),
    ];
    for (command, op) in cases {
        commands.send(Message::text(command)).await.unwrap();
        let answer = ws::next_json(&mut commands).await;
        assert_eq!(answer["op"], op, "{command}: {answer}");
        if op == "ack" {
            assert_eq!(answer["stored"], false, "{answer}");
            assert!(answer.get("id").is_none(), "{answer}");
        } else {
            assert_eq!(answer["code"], "invalid_command", "{answer}");
        }
    }
}
