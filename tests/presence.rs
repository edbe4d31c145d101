//! Joins and leaves on each technique through the router (who a request is
//! comes from the app: here an `x-user` header, as a session would say):
//! a channel WebSocket and a `push.v1` subscription that ask get them as
//! ephemeral envelopes with the `push.join` / `push.leave` event, a held
//! long poll answers with one, the Rust event-stream client yields one;
//! those that do not ask get none; `GET /presence/{channel}` lists users
//! by technique.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

#[path = "support/ws.rs"]
mod ws;

use std::convert::Infallible;

use futures_util::SinkExt as _;
use http::{Request, StatusCode};
use hyper::body::Incoming;
use push_live::client::{EventSource, EventSourceConfig};
use push_live::http::Access;
use push_live::{Item, MemoryHub, Route, Router, RouterConfig};
use support::{Server, get, next_item, open_sse, request};
use tokio_tungstenite::tungstenite::Message;

/// The router behind a service that names the user from `x-user`.
async fn serve(hub: &MemoryHub) -> Server {
    let router = Router::new(hub.clone(), RouterConfig::default().with_publish(true));
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let router = router.clone();
        async move {
            let (parts, body) = request.into_parts();
            let Some(route) = Route::of(parts.uri.path()) else {
                panic!("no route: {}", parts.uri);
            };
            let user = parts
                .headers
                .get("x-user")
                .map(|v| v.to_str().unwrap().to_owned());
            let mut access = Access::default();
            if let Some(user) = user {
                access = access.as_user(user);
            }
            let head = router.head(route, parts);
            Ok::<_, Infallible>(router.serve(route, head, body, access).await)
        }
    });
    Server::start(service).await
}

fn presence_of(frame: &serde_json::Value) -> (String, String, String) {
    assert_eq!(frame["ephemeral"], true, "{frame}");
    assert!(frame.get("id").is_none(), "{frame}");
    (
        frame["event"].as_str().unwrap().to_owned(),
        frame["data"]["user"].as_str().unwrap().to_owned(),
        frame["data"]["technique"].as_str().unwrap().to_owned(),
    )
}

fn change(event: &str, user: &str, technique: &str) -> (String, String, String) {
    (event.to_owned(), user.to_owned(), technique.to_owned())
}

#[tokio::test]
async fn every_technique_that_asks_gets_joins_and_leaves() {
    let hub = MemoryHub::new();
    let server = serve(&hub).await;
    let addr = server.addr;
    let mut channel = ws::open(addr, "/ws/room?presence=1", &[("x-user", "watcher")])
        .await
        .unwrap();
    assert_eq!(ws::next_json(&mut channel).await["op"], "subscribed");
    assert_eq!(
        presence_of(&ws::next_json(&mut channel).await),
        change("push.join", "watcher", "ws")
    );
    let protocol = [("sec-websocket-protocol", "push.v1"), ("x-user", "session")];
    let mut commands = ws::open(addr, "/ws", &protocol).await.unwrap();
    let subscribe = r#"{"op":"subscribe","channel":"room","presence":true,"ref":1}"#;
    commands.send(Message::text(subscribe)).await.unwrap();
    assert_eq!(ws::next_json(&mut commands).await["op"], "ack");
    assert_eq!(
        presence_of(&ws::next_json(&mut commands).await),
        change("push.join", "session", "ws")
    );
    assert_eq!(
        presence_of(&ws::next_json(&mut channel).await),
        change("push.join", "session", "ws")
    );
    // Not asking: nothing of it.
    let mut quiet = ws::open(addr, "/ws/room", &[("x-user", "quiet")])
        .await
        .unwrap();
    assert_eq!(ws::next_json(&mut quiet).await["op"], "subscribed");
    assert_eq!(
        presence_of(&ws::next_json(&mut channel).await),
        change("push.join", "quiet", "ws")
    );
    assert_eq!(
        presence_of(&ws::next_json(&mut commands).await),
        change("push.join", "quiet", "ws")
    );

    let mut events = EventSource::connect(
        &server.url("/sse/room?presence=1"),
        EventSourceConfig::default(),
    )
    .await
    .unwrap();
    // A held long poll answers with the join it waited for.
    let held = tokio::spawn(async move {
        get(
            addr,
            "/longpoll/room?presence=1&timeout=20",
            &[("x-user", "held")],
        )
        .await
    });
    let room = "room".parse().unwrap();
    support::until("the long poll held", || {
        hub.channel_stats(&room).is_some_and(|s| s.subscribers == 5)
    })
    .await;
    let (_sse, _) = open_sse(addr, "/sse/room", "x-user: alice\r\n").await;
    let joined = match next_item(&mut events).await {
        Item::Message(m) => {
            assert!(m.is_ephemeral());
            (
                m.event().unwrap().as_str().to_owned(),
                m.json::<serde_json::Value>().unwrap(),
            )
        }
        other => panic!("{other:?}"),
    };
    // The long poll's own join may come first: skip to alice's.
    assert_eq!(joined.0, "push.join");
    let mut saw = vec![joined.1["user"].as_str().unwrap().to_owned()];
    if saw[0] != "alice" {
        let Item::Message(m) = next_item(&mut events).await else {
            panic!()
        };
        saw.push(
            m.json::<serde_json::Value>().unwrap()["user"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert!(saw.contains(&"alice".to_owned()), "{saw:?}");
    let batch = held.await.unwrap();
    assert_eq!(batch.status, StatusCode::OK);
    let first = &batch.json()["messages"][0];
    let (event, user, _) = presence_of(first);
    assert_eq!(event, "push.join");
    assert!(user == "held" || user == "alice", "{first}");

    drop(quiet);
    let mut leaves = Vec::new();
    while leaves.is_empty() {
        let frame = ws::next_json(&mut channel).await;
        let (event, user, _) = presence_of(&frame);
        if event == "push.leave" {
            leaves.push(user);
        }
    }
    assert_eq!(leaves, ["quiet"]);

    let listed = get(addr, "/presence/room", &[]).await;
    assert_eq!(listed.status, StatusCode::OK);
    let listed = listed.json();
    let users: Vec<_> = listed["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user"].as_str().unwrap())
        .collect();
    for user in ["alice", "held", "session", "watcher"] {
        assert!(users.contains(&user), "{user}: {listed}");
    }
    assert_eq!(listed["anonymous"]["sse"], 1, "{listed}");
    let refused = request(addr, "POST", "/presence/room", &[], "").await;
    assert_eq!(refused.status, StatusCode::METHOD_NOT_ALLOWED);
}
