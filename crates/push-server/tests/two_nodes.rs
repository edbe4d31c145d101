//! Two push-server processes on one Redis, as behind a load balancer with no
//! sticky sessions: publish on one, receive on the other over every
//! technique; a long poller alternating nodes and an event stream moving to
//! the other node miss nothing and repeat nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../push-redis/tests/common/mod.rs"]
mod redis;
#[path = "../../../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::process::Stdio;

use futures_util::StreamExt as _;
use http::StatusCode;
use redis::RedisServer;
use support::{get, read_until, within};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

struct Node {
    addr: SocketAddr,
    _child: Child,
}

async fn node(redis: &RedisServer, prefix: &str) -> Node {
    node_with(redis, prefix, &[]).await
}

async fn node_with(redis: &RedisServer, prefix: &str, args: &[&str]) -> Node {
    let mut child = Command::new(env!("CARGO_BIN_EXE_push-server"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--log",
            "warn",
            "--redis-url",
            &redis.url,
        ])
        .args(["--redis-prefix", prefix])
        .args(args)
        .env_remove("PUSH_PUBLISH_TOKEN")
        .env_remove("PUSH_JWT_SECRET")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = within("the listening line", lines.next_line())
        .await
        .unwrap()
        .unwrap();
    let addr = first
        .strip_prefix("listening on http://")
        .unwrap()
        .parse()
        .unwrap();
    Node {
        addr,
        _child: child,
    }
}

async fn publish(node: &Node, channel: &str, data: &str) -> String {
    let answer = post(node, channel, data).await;
    assert_eq!(answer.status, StatusCode::OK);
    answer.json()["id"].as_str().unwrap().to_owned()
}

async fn post(node: &Node, channel: &str, data: &str) -> support::Answer {
    let path = format!("/pub/{channel}");
    support::request(node.addr, "POST", &path, &[], data.to_owned()).await
}

#[tokio::test]
async fn two_nodes_on_one_redis_serve_every_technique() {
    let Some(redis) = RedisServer::any().await else {
        return;
    };
    let prefix = redis::prefix();
    let (a, b) = (node(&redis, &prefix).await, node(&redis, &prefix).await);

    // Subscribers on B, publisher on A.
    let mut sse = TcpStream::connect(b.addr).await.unwrap();
    sse.write_all(b"GET /sse/news HTTP/1.1\r\nHost: b\r\n\r\n")
        .await
        .unwrap();
    let mut seen = String::new();
    read_until(&mut sse, &mut seen, "retry:").await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws/news", b.addr))
        .await
        .unwrap();
    let greeting = within("the greeting", ws.next()).await.unwrap().unwrap();
    assert!(greeting.to_text().unwrap().contains("subscribed"));
    let start = get(b.addr, "/poll/news", &[]).await.json()["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let held = {
        let (addr, start) = (b.addr, start.clone());
        tokio::spawn(async move { get(addr, &format!("/longpoll/news?since={start}"), &[]).await })
    };
    let first = publish(&a, "news", "from A").await;
    read_until(
        &mut sse,
        &mut seen,
        &format!("id: {first}\ndata: from A\n\n"),
    )
    .await;
    match within("a frame", ws.next()).await {
        Some(Ok(Message::Text(text))) => assert!(text.contains("\"data\":\"from A\"")),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        within("the long poll", held).await.unwrap().json()["messages"][0]["id"],
        *first
    );
    let polled = get(b.addr, &format!("/poll/news?since={start}"), &[]).await;
    assert_eq!(polled.json()["messages"][0]["data"], "from A");

    // A long poller alternating nodes on every request.
    let mut cursor = start;
    let mut got = Vec::new();
    for i in 0..12 {
        let node = if i % 2 == 0 { &a } else { &b };
        publish(if i % 3 == 0 { &b } else { &a }, "news", &format!("m{i}")).await;
        let answer = get(
            node.addr,
            &format!("/longpoll/news?since={cursor}&timeout=5"),
            &[],
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK);
        let json = answer.json();
        for message in json["messages"].as_array().unwrap() {
            got.push(message["data"].as_str().unwrap().to_owned());
        }
        cursor = json["cursor"].as_str().unwrap().to_owned();
    }
    let mut expected = vec!["from A".to_owned()];
    expected.extend((0..12).map(|i| format!("m{i}")));
    assert_eq!(got, expected);

    // Channel info reads the shared history from either node.
    let info = get(a.addr, "/channels/news", &[]).await.json();
    assert_eq!(
        (info["retained"].as_u64(), info["cursor"].as_str()),
        (Some(13), Some(&*cursor))
    );

    // The event stream moves to A with Last-Event-ID: exactly what followed.
    drop(sse);
    let last = publish(&b, "news", "while away").await;
    let mut moved = TcpStream::connect(a.addr).await.unwrap();
    let head = format!("GET /sse/news HTTP/1.1\r\nHost: a\r\nLast-Event-ID: {first}\r\n\r\n");
    moved.write_all(head.as_bytes()).await.unwrap();
    let mut seen = String::new();
    read_until(
        &mut moved,
        &mut seen,
        &format!("id: {last}\ndata: while away\n\n"),
    )
    .await;
    let events: Vec<&str> = seen.matches("data: ").collect();
    assert_eq!(events.len(), 13, "{seen}"); // m0..m11 and "while away"
    assert!(seen.find("data: m0\n").unwrap() < seen.find("data: m11\n").unwrap());
    assert!(
        !seen.contains("data: from A\n"),
        "repeated what it had: {seen}"
    );
}

#[tokio::test]
async fn with_redis_down_publishing_answers_503_and_subscribers_recover() {
    let Some(mut redis) = RedisServer::own().await else {
        return;
    };
    let a = node(&redis, &redis::prefix()).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws/news", a.addr))
        .await
        .unwrap();
    within("the greeting", ws.next()).await.unwrap().unwrap();
    redis.stop().await;
    let answer = within("the publish", post(&a, "news", "lost")).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.json()["error"]["code"], "unavailable");
    redis.restart().await;
    // Redis came back empty: the socket is told (a reset), then gets news.
    let reset = within("the reset", ws.next()).await.unwrap().unwrap();
    assert!(
        reset.to_text().unwrap().contains("\"op\":\"reset\""),
        "{reset}"
    );
    let id = loop {
        let answer = post(&a, "news", "back").await;
        if answer.status == StatusCode::OK {
            break answer.json()["id"].as_str().unwrap().to_owned();
        }
        // The node's command connection is still reconnecting.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let frame = within("the message", ws.next()).await.unwrap().unwrap();
    assert!(
        frame
            .to_text()
            .unwrap()
            .contains(&format!("\"id\":\"{id}\"")),
        "{frame}"
    );
}

#[tokio::test]
async fn a_publish_retried_on_another_node_with_its_key_is_stored_once() {
    let Some(redis) = RedisServer::any().await else {
        return;
    };
    let prefix = redis::prefix();
    let (a, b) = (node(&redis, &prefix).await, node(&redis, &prefix).await);
    let keyed = |node: &Node, body: &'static str| {
        let addr = node.addr;
        async move {
            support::request(
                addr,
                "POST",
                "/pub/news",
                &[("idempotency-key", "k-1")],
                body,
            )
            .await
        }
    };
    let first = keyed(&a, "once").await;
    assert_eq!(first.status, StatusCode::OK);
    let retry = keyed(&b, "once").await;
    assert_eq!(retry.json()["id"], first.json()["id"]);
    let reused = keyed(&b, "other").await;
    assert_eq!(reused.json()["error"]["code"], "idempotency_key_reused");
    let polled = get(a.addr, "/poll/news?since=earliest", &[]).await;
    assert_eq!(polled.json()["messages"].as_array().unwrap().len(), 1);
}

/// `/healthz` until it answers `status`; its body then.
async fn health_becomes(node: &Node, status: StatusCode) -> String {
    within(&format!("/healthz to answer {status}"), async {
        loop {
            let answer = get(node.addr, "/healthz", &[]).await;
            if answer.status == status {
                return String::from_utf8(answer.body.to_vec()).unwrap();
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
}

#[tokio::test]
async fn health_tells_the_truth_when_redis_stalls() {
    let Some(redis) = RedisServer::own().await else {
        return;
    };
    let node = node_with(&redis, &redis::prefix(), &["--redis-probe-interval", "0.2"]).await;
    health_becomes(&node, StatusCode::OK).await;
    let metrics = String::from_utf8(get(node.addr, "/metrics", &[]).await.body.to_vec()).unwrap();
    assert!(metrics.contains("\npush_redis_healthy 1\n"), "{metrics}");
    redis.signal("STOP").await;
    let why = health_becomes(&node, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(why.starts_with("redis: "), "{why}");
    redis.signal("CONT").await;
    health_becomes(&node, StatusCode::OK).await;
    assert!(!publish(&node, "news", "after").await.is_empty());
}
