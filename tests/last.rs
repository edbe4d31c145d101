//! `last=N` on every technique over a real socket: the last N retained
//! messages first, then live (a dashboard's initial state in one request);
//! more than retained is everything retained, no gap; `last=0` is live;
//! `since` with `last` is refused; an SSE reconnect's `Last-Event-ID` wins
//! over the `last` its URL still carries. The Rust clients send `last` only
//! on their first request and resume from cursors after.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

#[path = "support/ws.rs"]
mod ws;

use std::time::Duration;

use futures_util::SinkExt as _;
use http::StatusCode;
use push_live::client::{
    EventSource, EventSourceConfig, LongPoller, LongPollerConfig, Poller, PollerConfig,
    WsClientConfig, WsSession, WsSubscriber,
};
use push_live::{Hub, MemoryHub, Publication, Router, RouterConfig, Start};
use support::{Server, get, next_data, open_sse, read_until};
use tokio_tungstenite::tungstenite::Message;

const FAST: Duration = Duration::from_millis(20);

async fn serve(hub: &MemoryHub) -> Server {
    let mut config = RouterConfig::default();
    config.poll = config.poll.with_interval(FAST);
    Server::start(Router::new(hub.clone(), config)).await
}

/// Publishes `1..=n` on `channel`; the cursors.
async fn publish_numbers(hub: &MemoryHub, channel: &str, n: u32) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 1..=n {
        let cursor = hub
            .publish(&channel.parse().unwrap(), Publication::new(i.to_string()))
            .await
            .unwrap();
        ids.push(cursor.to_string());
    }
    ids
}

async fn publish(hub: &MemoryHub, channel: &str, data: &str) {
    hub.publish(&channel.parse().unwrap(), Publication::new(data.to_owned()))
        .await
        .unwrap();
}

fn datas(answer: &support::Answer) -> Vec<String> {
    answer.json()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn every_rust_client_starts_with_the_last_two_then_live() {
    let hub = MemoryHub::new();
    let server = serve(&hub).await;
    let start = Start::Last(2);
    for channel in ["poll", "longpoll", "sse", "ws", "session"] {
        publish_numbers(&hub, channel, 5).await;
    }
    let mut poller = Poller::connect(
        &server.url("/poll/poll"),
        PollerConfig::default()
            .with_interval(FAST)
            .with_start(start),
    )
    .await
    .unwrap();
    let mut long = LongPoller::connect(
        &server.url("/longpoll/longpoll"),
        LongPollerConfig::default().with_start(start),
    )
    .await
    .unwrap();
    let mut events = EventSource::connect(
        &server.url("/sse/sse"),
        EventSourceConfig::default().with_start(start),
    )
    .await
    .unwrap();
    let ws_config = WsClientConfig::default().with_backoff(FAST, FAST);
    let mut subscriber = WsSubscriber::connect(
        &server.url("/ws/ws").replace("http", "ws"),
        ws_config.clone().with_start(start),
    )
    .await
    .unwrap();
    let session = WsSession::connect(&server.url("/ws").replace("http", "ws"), ws_config)
        .await
        .unwrap();
    session
        .control()
        .subscribe(&"session".parse().unwrap(), start)
        .await
        .unwrap();

    let mut session = futures_util::StreamExt::map(session, |item| item.map(|(_, item)| item));
    macro_rules! last_two_then_live {
        ($name:literal, $client:expr) => {
            assert_eq!(next_data($client).await, "4", $name);
            assert_eq!(next_data($client).await, "5", $name);
            publish(&hub, $name, "6").await;
            assert_eq!(next_data($client).await, "6", $name);
        };
    }
    last_two_then_live!("poll", &mut poller);
    last_two_then_live!("longpoll", &mut long);
    last_two_then_live!("sse", &mut events);
    last_two_then_live!("ws", &mut subscriber);
    last_two_then_live!("session", &mut session);
}

#[tokio::test]
async fn a_poll_holds_the_last_n_and_its_cursor_goes_on() {
    let hub = MemoryHub::new();
    let server = serve(&hub).await;
    publish_numbers(&hub, "c", 5).await;
    for route in ["/poll/c", "/longpoll/c"] {
        let first = get(server.addr, &format!("{route}?last=2"), &[]).await;
        assert_eq!(first.status, StatusCode::OK, "{route}");
        assert_eq!(datas(&first), ["4", "5"], "{route}");
        assert!(first.json().get("gap").is_none() && first.json().get("reset").is_none());
        let all = get(server.addr, &format!("{route}?last=9"), &[]).await;
        assert_eq!(datas(&all), ["1", "2", "3", "4", "5"], "{route}");
        assert_eq!(all.json()["signal"], serde_json::Value::Null, "{route}");
    }
    let first = get(server.addr, "/poll/c?last=2", &[]).await;
    let cursor = first.json()["cursor"].as_str().unwrap().to_owned();
    publish(&hub, "c", "6").await;
    let next = get(server.addr, &format!("/poll/c?since={cursor}"), &[]).await;
    assert_eq!(datas(&next), ["6"]);
    // `last=0` is live: nothing of the past.
    let live = get(server.addr, "/poll/c?last=0", &[]).await;
    assert_eq!(live.status, StatusCode::OK);
    assert!(datas(&live).is_empty());
}

#[tokio::test]
async fn since_with_last_is_refused_everywhere() {
    let hub = MemoryHub::new();
    let server = serve(&hub).await;
    publish_numbers(&hub, "c", 1).await;
    for route in ["/poll/c", "/longpoll/c", "/sse/c"] {
        for query in ["since=earliest&last=2", "last=x", "last=-1"] {
            let answer = get(server.addr, &format!("{route}?{query}"), &[]).await;
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{route}?{query}");
            assert_eq!(
                answer.json()["error"]["code"],
                "invalid_query",
                "{route}?{query}"
            );
        }
    }
    let refused = ws::open(server.addr, "/ws/c?since=earliest&last=2", &[]).await;
    assert_eq!(refused.err(), Some(StatusCode::BAD_REQUEST));

    let protocol = [("sec-websocket-protocol", "push.v1")];
    let mut commands = ws::open(server.addr, "/ws", &protocol).await.unwrap();
    let both = r#"{"op":"subscribe","channel":"c","since":"earliest","last":2,"ref":1}"#;
    commands.send(Message::text(both)).await.unwrap();
    let error = ws::next_json(&mut commands).await;
    assert_eq!(
        (
            error["op"].as_str(),
            error["code"].as_str(),
            error["ref"].as_i64()
        ),
        (Some("error"), Some("invalid_command"), Some(1)),
        "{error}"
    );
}

#[tokio::test]
async fn the_wire_starts_with_the_last_n_on_sse_and_websocket() {
    let hub = MemoryHub::new();
    let server = serve(&hub).await;
    let ids = publish_numbers(&hub, "c", 5).await;

    let (mut sse, mut seen) = open_sse(server.addr, "/sse/c?last=2", "").await;
    read_until(&mut sse, &mut seen, "data: 5\n\n").await;
    // The stream opens pinned before the last two, as a live one at its
    // head: a reconnect before any message resumes from there.
    assert!(seen.contains(&format!("id: {}\n", ids[2])), "{seen}");
    assert!(
        seen.contains(&format!("id: {}\ndata: 4\n\n", ids[3])),
        "{seen}"
    );
    assert!(!seen.contains("data: 3\n"), "{seen}");

    let mut channel = ws::open(server.addr, "/ws/c?last=9", &[]).await.unwrap();
    // Pinned as a live start is: before the first of the last N (here the
    // first message, so the epoch's number 0).
    let subscribed = ws::next_json(&mut channel).await;
    let before_first = ids[0].strip_suffix(".1").unwrap().to_owned() + ".0";
    assert_eq!(
        (subscribed["op"].as_str(), subscribed["cursor"].as_str()),
        (Some("subscribed"), Some(&*before_first)),
    );
    for expected in ["1", "2", "3", "4", "5"] {
        assert_eq!(ws::next_json(&mut channel).await["data"], expected);
    }
    let protocol = [("sec-websocket-protocol", "push.v1")];
    let mut commands = ws::open(server.addr, "/ws", &protocol).await.unwrap();
    let subscribe = r#"{"op":"subscribe","channel":"c","last":2,"ref":1}"#;
    commands.send(Message::text(subscribe)).await.unwrap();
    let ack = ws::next_json(&mut commands).await;
    assert_eq!(
        (ack["op"].as_str(), ack["cursor"].as_str()),
        (Some("ack"), Some(&*ids[2]))
    );
    assert_eq!(ws::next_json(&mut commands).await["data"], "4");
    assert_eq!(ws::next_json(&mut commands).await["data"], "5");

    publish(&hub, "c", "6").await;
    read_until(&mut sse, &mut seen, "data: 6\n\n").await;
    assert_eq!(ws::next_json(&mut channel).await["data"], "6");
    assert_eq!(ws::next_json(&mut commands).await["data"], "6");
}

#[tokio::test]
async fn an_sse_reconnect_resumes_from_last_event_id_over_last() {
    let hub = MemoryHub::new();
    let server = serve(&hub).await;
    let ids = publish_numbers(&hub, "c", 5).await;
    // The browser reconnects to the same URL, `last=1` and all.
    let header = format!("Last-Event-ID: {}\r\n", ids[1]);
    let (mut sse, mut seen) = open_sse(server.addr, "/sse/c?last=1", &header).await;
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    read_until(&mut sse, &mut seen, "data: 5\n\n").await;
    for expected in ["data: 3\n", "data: 4\n"] {
        assert!(seen.contains(expected), "{seen}");
    }
}
