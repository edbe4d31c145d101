//! JSON as JSON, over the wire, on both hubs: a publish sent as
//! `application/json` (over HTTP) or as a non-string `data` (a `push.v1`
//! publish) arrives as the JSON value itself with `"encoding":"json"` in
//! every envelope (short polling, long polling, SSE's json format,
//! WebSockets) and as its compact text in SSE's plain format; text stays a
//! JSON string, so a JSON string value and the same text stay apart;
//! invalid JSON is refused with 400 and stores nothing. On Redis the
//! subscribers sit on another node than the publisher.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../push-redis/tests/common/mod.rs"]
mod redis;
#[path = "../../../tests/support/mod.rs"]
mod support;
#[path = "../../../tests/support/ws.rs"]
mod ws_support;

mod common;

use std::net::SocketAddr;

use common::Running;
use futures_util::SinkExt as _;
use http::StatusCode;
use serde_json::{Value, json};
use support::{get, open_sse, read_until, request};
use tokio_tungstenite::tungstenite::Message;

/// What each envelope must hold, in order: `data` and `encoding`.
fn expected() -> Vec<(Value, Value)> {
    vec![
        (json!({"a": [1, 2.5]}), json!("json")),
        (json!("{\"a\":[1,2.50]}"), Value::Null),
        (json!("hi"), json!("json")),
        (json!("\"hi\""), Value::Null),
        (
            json!({"from": "ws", "n": 12345678901234567890_u64}),
            json!("json"),
        ),
    ]
}

/// The same messages in SSE's plain format: their data as text.
const PLAIN: [&str; 5] = [
    r#"{"a":[1,2.50]}"#,
    r#"{"a":[1,2.50]}"#,
    r#""hi""#,
    r#""hi""#,
    r#"{"from":"ws","n":12345678901234567890}"#,
];

fn fields(envelopes: &[Value]) -> Vec<(Value, Value)> {
    envelopes
        .iter()
        .map(|m| {
            let encoding = m.get("encoding").cloned().unwrap_or(Value::Null);
            (m["data"].clone(), encoding)
        })
        .collect()
}

async fn publish(addr: SocketAddr, content_type: Option<&str>, body: &str) -> support::Answer {
    let headers: Vec<(&str, &str)> = content_type
        .map(|t| ("content-type", t))
        .into_iter()
        .collect();
    request(addr, "POST", "/pub/j", &headers, body.to_owned()).await
}

/// Publishes on `a` and reads on `b` (the same server on the memory hub).
async fn json_is_json_everywhere(a: SocketAddr, b: SocketAddr) {
    // Live subscribers first: SSE plain and json, a channel socket.
    let (mut plain, mut plain_seen) = open_sse(b, "/sse/j", "").await;
    read_until(&mut plain, &mut plain_seen, "retry:").await;
    let (mut in_json, mut json_seen) = open_sse(b, "/sse/j?format=json", "").await;
    read_until(&mut in_json, &mut json_seen, "push.subscribed").await;
    let mut ws = ws_support::open(b, "/ws/j", &[]).await.unwrap();
    assert_eq!(ws_support::next_json(&mut ws).await["op"], "subscribed");

    let mut ids = Vec::new();
    for (content_type, body) in [
        (Some("application/json"), "{ \"a\": [1, 2.50] }\n"),
        (None, "{\"a\":[1,2.50]}"),
        (Some("Application/JSON; charset=utf-8"), "\"hi\""),
        (Some("text/plain"), "\"hi\""),
    ] {
        let answer = publish(a, content_type, body).await;
        assert_eq!(answer.status, StatusCode::OK, "{body}");
        ids.push(answer.json()["id"].as_str().unwrap().to_owned());
    }
    for (content_type, body) in [
        ("application/json", "{oops"),
        ("application/vnd.api+json", "[1,]"),
        ("application/json", ""),
        ("application/json", "\"\\ud800\""),
    ] {
        let answer = publish(a, Some(content_type), body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(answer.json()["error"]["code"], "invalid_json", "{body}");
    }
    // A WebSocket publisher: data that is not a string is JSON, as written.
    let mut commands = ws_support::open(a, "/ws", &[("sec-websocket-protocol", "push.v1")])
        .await
        .unwrap();
    let command =
        r#"{"op":"publish","channel":"j","data":{"from":"ws","n":12345678901234567890},"ref":1}"#;
    commands.send(Message::text(command)).await.unwrap();
    let ack = ws_support::next_json(&mut commands).await;
    assert_eq!(ack["op"], "ack", "{ack}");
    ids.push(ack["id"].as_str().unwrap().to_owned());

    // Short and long polling, from the stream: the five, nothing of the
    // refused ones, each value spliced as published (2.50 stays 2.50).
    for path in ["/poll/j?since=earliest", "/longpoll/j?since=earliest"] {
        let answer = get(b, path, &[]).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        let batch = answer.json();
        let messages = batch["messages"].as_array().unwrap();
        assert_eq!(fields(messages), expected(), "{path}");
        let text = String::from_utf8(answer.body.to_vec()).unwrap();
        assert!(
            text.contains(r#""data":{"a":[1,2.50]},"encoding":"json"}"#),
            "{path}: {text}"
        );
        assert!(text.contains("12345678901234567890}"), "{path}: {text}");
    }
    // A channel socket.
    let mut frames = Vec::new();
    for _ in 0..5 {
        frames.push(ws_support::next_json(&mut ws).await);
    }
    assert_eq!(fields(&frames), expected(), "WebSocket");
    // SSE's json format: the envelope on one data line.
    let last = ids.last().unwrap();
    read_until(&mut in_json, &mut json_seen, &format!("id: {last}\ndata: ")).await;
    read_until(&mut in_json, &mut json_seen, "}\n\n").await;
    let envelopes: Vec<Value> = json_seen
        .lines()
        .filter_map(|line| line.strip_prefix("data: {\"channel\""))
        .map(|rest| serde_json::from_str(&format!("{{\"channel\"{rest}")).unwrap())
        .collect();
    assert_eq!(fields(&envelopes), expected(), "SSE json");
    // SSE's plain format: the data as it is, JSON included.
    let blocks: Vec<String> = ids
        .iter()
        .zip(PLAIN)
        .map(|(id, data)| format!("id: {id}\ndata: {data}\n\n"))
        .collect();
    read_until(&mut plain, &mut plain_seen, blocks.last().unwrap()).await;
    let mut at = 0;
    for block in &blocks {
        let found = plain_seen[at..].find(block.as_str());
        at += found.unwrap_or_else(|| panic!("{block:?} in order in {plain_seen}")) + block.len();
    }
}

#[tokio::test]
async fn json_is_json_on_every_technique_on_the_memory_hub() {
    let server = Running::start(&["--ws-publish"]).await;
    json_is_json_everywhere(server.addr, server.addr).await;
}

#[tokio::test]
async fn json_is_json_on_every_technique_across_two_redis_nodes() {
    let Some(redis) = redis::RedisServer::any().await else {
        return;
    };
    let prefix = redis::prefix();
    let args = [
        "--ws-publish",
        "--redis-url",
        &redis.url,
        "--redis-prefix",
        &prefix,
    ];
    let (a, b) = (Running::start(&args).await, Running::start(&args).await);
    json_is_json_everywhere(a.addr, b.addr).await;
}
