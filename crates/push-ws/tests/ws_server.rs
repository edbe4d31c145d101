//! The WebSocket handler over real TCP with a real client (tokio-tungstenite):
//! both endpoints, many channels on one socket, publish with ack, bad
//! commands, close codes, heartbeats, slow readers, HTTP/2 extended CONNECT,
//! bad handshakes and origins. Resuming across dropped sockets is the
//! facade's tests/continuity.rs, for every technique alike.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../../tests/support/mod.rs"]
mod support;

#[path = "../../../tests/support/ws.rs"]
mod ws_support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use push_core::{Cursor, Hub, MemoryHub, MemoryHubConfig, Publication};
use push_ws::{Origins, SlowConsumer, WsConfig, WsHandler};
use serde_json::{Value, json};
use support::{Server, get, until, within};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use ws_support::{Ws, close_code_to_the_end, next_json, next_text};

fn channel(name: &str) -> push_core::ChannelName {
    name.parse().unwrap()
}

async fn publish(hub: &MemoryHub, name: &str, data: impl Into<Bytes>) -> Cursor {
    hub.publish(&channel(name), Publication::new(data))
        .await
        .unwrap()
}

async fn start(hub: &MemoryHub, config: WsConfig) -> (Server, WsHandler<MemoryHub>) {
    let handler = WsHandler::new(hub.clone(), config);
    (Server::start(handler.clone()).await, handler)
}

async fn connect(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Ws {
    ws_support::open(addr, path, headers).await.unwrap()
}

async fn commands(addr: SocketAddr) -> Ws {
    connect(addr, "/ws", &[("sec-websocket-protocol", "push.v1")]).await
}

async fn send(ws: &mut Ws, command: Value) {
    ws.send(Message::text(command.to_string())).await.unwrap();
}

#[tokio::test]
async fn one_channel_per_socket_with_envelopes_and_resume() {
    let hub = MemoryHub::new();
    let (server, handler) = start(&hub, WsConfig::default()).await;
    let first = publish(&hub, "c", "one").await;
    publish(&hub, "c", "two").await;
    let mut ws = connect(server.addr, &format!("/ws/c?since={first}"), &[]).await;
    let envelope = next_json(&mut ws).await;
    assert_eq!(envelope["data"], "two");
    assert_eq!(envelope["channel"], "c");
    assert!(envelope.get("op").is_none(), "a message has no op");
    publish(&hub, "c", Bytes::from_static(b"\xff\x00")).await;
    let binary = next_json(&mut ws).await;
    assert_eq!(
        (&binary["data"], &binary["encoding"]),
        (&json!("/wA="), &json!("base64"))
    );
    assert_eq!(handler.connections(), 1);
    ws.close(None).await.unwrap();
    until("the socket to close", || handler.connections() == 0).await;
    assert_eq!(hub.channel_stats(&channel("c")).unwrap().subscribers, 0);
}

#[tokio::test]
async fn a_live_socket_is_told_where_it_starts() {
    let hub = MemoryHub::new();
    let (server, handler) = start(&hub, WsConfig::default()).await;
    let head = publish(&hub, "c", "before").await;
    let mut ws = connect(server.addr, "/ws/c", &[]).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"op":"subscribed","channel":"c","cursor":head.to_string()})
    );
    drop(ws);
    until("the socket to close", || handler.connections() == 0).await;
    // Dropped before any message: resuming from the greeting's cursor
    // misses nothing published in between.
    publish(&hub, "c", "while away").await;
    let mut ws = connect(server.addr, &format!("/ws/c?since={head}"), &[]).await;
    assert_eq!(next_json(&mut ws).await["data"], "while away");
}

#[tokio::test]
async fn a_gap_arrives_as_its_own_op() {
    let hub = MemoryHub::with_config(MemoryHubConfig::default().with_max_messages(2)).unwrap();
    let (server, _handler) = start(&hub, WsConfig::default()).await;
    let since = publish(&hub, "c", "0").await;
    for n in 1..=4 {
        publish(&hub, "c", n.to_string()).await;
    }
    let mut ws = connect(server.addr, &format!("/ws/c?since={since}"), &[]).await;
    let gap = next_json(&mut ws).await;
    assert_eq!(gap["op"], "gap");
    assert_eq!(gap["channel"], "c");
    assert_eq!(gap["since"], since.to_string());
    assert_eq!(gap["missed"], 2);
    assert_eq!(next_json(&mut ws).await["data"], "3");
}

#[tokio::test]
async fn many_channels_on_one_socket_with_acks() {
    let hub = MemoryHub::new();
    let (server, _handler) = start(&hub, WsConfig::commands().with_publish(true)).await;
    let mut ws = commands(server.addr).await;
    let head = publish(&hub, "a", "before").await;
    send(&mut ws, json!({"op":"subscribe","channel":"a","ref":1})).await;
    // A live subscription's ack says where it starts: resume from there.
    assert_eq!(
        next_json(&mut ws).await,
        json!({"op":"ack","ref":1,"cursor":head.to_string()})
    );
    send(
        &mut ws,
        json!({"op":"subscribe","channel":"b","ref":"two","since":"earliest"}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await, json!({"op":"ack","ref":"two"}));
    publish(&hub, "a", "for a").await;
    let message = next_json(&mut ws).await;
    assert_eq!(
        (&message["channel"], &message["data"]),
        (&json!("a"), &json!("for a"))
    );
    publish(&hub, "b", "for b").await;
    assert_eq!(next_json(&mut ws).await["channel"], "b");

    // Publishing from the socket: acknowledged with the message's id, and
    // delivered to the subscription on the same socket.
    send(
        &mut ws,
        json!({"op":"publish","channel":"a","data":"mine","event":"chat","ref":3}),
    )
    .await;
    let mut seen = [next_json(&mut ws).await, next_json(&mut ws).await];
    seen.sort_by_key(|v| v.get("op").is_none());
    let (ack, message) = (&seen[0], &seen[1]);
    assert_eq!((&ack["op"], &ack["ref"]), (&json!("ack"), &json!(3)));
    assert_eq!(ack["id"], message["id"]);
    assert_eq!(
        (&message["data"], &message["event"]),
        (&json!("mine"), &json!("chat"))
    );

    send(&mut ws, json!({"op":"unsubscribe","channel":"a","ref":4})).await;
    assert_eq!(next_json(&mut ws).await, json!({"op":"ack","ref":4}));
    publish(&hub, "a", "not for us").await;
    publish(&hub, "b", "still for us").await;
    assert_eq!(next_json(&mut ws).await["data"], "still for us");
}

#[tokio::test]
async fn bad_commands_get_an_error_and_the_socket_stays_up() {
    let hub = MemoryHub::new();
    let (server, handler) = start(&hub, WsConfig::commands().with_max_subscriptions(1)).await;
    let mut ws = commands(server.addr).await;
    for (command, code) in [
        ("not json".to_owned(), "invalid_command"),
        (json!({"op":"dance","ref":1}).to_string(), "unknown_op"),
        (
            json!({"op":"subscribe","channel":"a b","ref":2}).to_string(),
            "invalid_channel",
        ),
        (
            json!({"op":"subscribe","channel":"c","since":"bad","ref":3}).to_string(),
            "invalid_cursor",
        ),
        (
            json!({"op":"publish","channel":"c","data":"x","ref":4}).to_string(),
            "forbidden",
        ),
        (
            json!({"op":"unsubscribe","channel":"c","ref":5}).to_string(),
            "not_subscribed",
        ),
    ] {
        ws.send(Message::text(command.clone())).await.unwrap();
        let error = next_json(&mut ws).await;
        assert_eq!(
            (&error["op"], &error["code"]),
            (&json!("error"), &json!(code)),
            "{command}"
        );
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    send(&mut ws, json!({"op":"subscribe","channel":"one","ref":6})).await;
    assert_eq!(next_json(&mut ws).await["op"], "ack");
    send(&mut ws, json!({"op":"subscribe","channel":"two","ref":7})).await;
    assert_eq!(next_json(&mut ws).await["code"], "too_many_subscriptions");
    // Still up and subscribed.
    publish(&hub, "one", "alive").await;
    assert_eq!(next_json(&mut ws).await["data"], "alive");
    assert_eq!(handler.connections(), 1);

    // A binary frame is not part of push.v1: 1003.
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(close_code_to_the_end(&mut ws).await, CloseCode::Unsupported);
    until("the socket to close", || handler.connections() == 0).await;
}

#[tokio::test]
async fn a_ref_comes_back_as_written() {
    let hub = MemoryHub::new();
    let (server, _handler) = start(&hub, WsConfig::commands()).await;
    let mut ws = commands(server.addr).await;
    let head = publish(&hub, "c", "before").await;
    for written in [
        "12345678901234567890123",
        "1.50",
        "1e2",
        "-0.0",
        r#""\u00e9t\u00E9 \"quoted\"""#,
        "\"été\"",
    ] {
        // Acked: a live subscribe, with its cursor.
        ws.send(Message::text(format!(
            r#"{{"op":"subscribe","channel":"c","ref": {written} }}"#
        )))
        .await
        .unwrap();
        let ack = next_text(&mut ws).await;
        assert_eq!(
            ack,
            format!(r#"{{"op":"ack","ref":{written},"cursor":"{head}"}}"#)
        );
        // Refused: the error names it the same way.
        ws.send(Message::text(format!(
            r#"{{"ref":{written},"op":"dance"}}"#
        )))
        .await
        .unwrap();
        let error = next_text(&mut ws).await;
        assert!(
            error.starts_with(&format!(
                r#"{{"op":"error","ref":{written},"code":"unknown_op""#
            )),
            "{error}"
        );
    }
    // Too long a number is refused like too long a string.
    let long = "1".repeat(65);
    ws.send(Message::text(format!(r#"{{"op":"dance","ref":{long}}}"#)))
        .await
        .unwrap();
    let error: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(error["code"], "invalid_command");
    assert!(error.get("ref").is_none());
}

#[tokio::test]
async fn the_server_echoes_the_clients_close() {
    let hub = MemoryHub::new();
    let (server, handler) = start(&hub, WsConfig::default()).await;
    for (sent, echoed) in [
        (Some((CloseCode::Normal, "")), Some((CloseCode::Normal, ""))),
        (
            Some((CloseCode::Away, "leaving")),
            Some((CloseCode::Away, "leaving")),
        ),
        (
            Some((CloseCode::from(4001), "bye")),
            Some((CloseCode::from(4001), "bye")),
        ),
        // A close without a code is answered without one.
        (None, None),
        // A code no endpoint may send (1005: "no code") is a protocol error.
        (
            Some((CloseCode::Status, "")),
            Some((CloseCode::Protocol, "Protocol violation")),
        ),
    ] {
        let mut ws = connect(server.addr, "/ws/c", &[]).await;
        assert_eq!(next_json(&mut ws).await["op"], "subscribed");
        let frame = sent.map(|(code, reason)| CloseFrame {
            code,
            reason: reason.into(),
        });
        ws.close(frame).await.unwrap();
        let answer = loop {
            match within("the server's close", ws.next()).await {
                Some(Ok(Message::Close(answer))) => break answer,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        };
        let answer = answer.map(|frame| (frame.code, frame.reason.as_str().to_owned()));
        let echoed = echoed.map(|(code, reason)| (code, reason.to_owned()));
        assert_eq!(answer, echoed, "{sent:?}");
        assert!(within("the end", ws.next()).await.is_none());
        until("the socket to close", || handler.connections() == 0).await;
    }
}

#[tokio::test]
async fn a_message_over_the_limit_closes_with_1009() {
    let hub = MemoryHub::new();
    let (server, _handler) = start(&hub, WsConfig::commands().with_max_message_bytes(1024)).await;
    let mut ws = commands(server.addr).await;
    ws.send(Message::text("x".repeat(4096))).await.unwrap();
    assert_eq!(close_code_to_the_end(&mut ws).await, CloseCode::Size);
}

#[tokio::test]
async fn a_peer_that_never_answers_pings_is_closed() {
    let hub = MemoryHub::new();
    let config =
        WsConfig::default().with_heartbeat(Duration::from_millis(20), Duration::from_millis(20));
    let (server, handler) = start(&hub, config).await;
    // A peer that reads nothing never answers a ping (pongs go out on reads).
    let silent = connect(server.addr, "/ws/c", &[]).await;
    until("the silent peer to be closed", || {
        handler.connections() == 0
    })
    .await;
    drop(silent);

    // A peer that reads answers every ping and stays.
    let mut live = connect(server.addr, "/ws/c", &[]).await;
    let mut pings = 0;
    while pings < 5 {
        match within("a ping", live.next()).await {
            Some(Ok(Message::Ping(_))) => pings += 1,
            Some(Ok(Message::Text(greeting))) => {
                assert!(greeting.contains("\"op\":\"subscribed\""));
            }
            other => panic!("expected pings, got {other:?}"),
        }
    }
    assert_eq!(handler.connections(), 1);
    publish(&hub, "c", "still here").await;
    assert_eq!(next_json(&mut live).await["data"], "still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_gets_a_gap_or_is_closed_by_policy() {
    for policy in [SlowConsumer::Signal, SlowConsumer::Close] {
        let hub = MemoryHub::with_config(
            MemoryHubConfig::default()
                .with_max_messages(8)
                .with_max_bytes(64 << 20),
        )
        .unwrap();
        let (server, _handler) = start(&hub, WsConfig::default().with_slow_consumer(policy)).await;
        let mut slow = connect(server.addr, "/ws/c", &[]).await;
        assert_eq!(next_json(&mut slow).await["op"], "subscribed");
        // Under way: what follows is lag, not a resume from an old cursor.
        publish(&hub, "c", "warm").await;
        assert_eq!(next_json(&mut slow).await["data"], "warm");
        let payload = "x".repeat(60 << 10);
        for n in 0..300 {
            publish(&hub, "c", format!("{n:08}{payload}")).await;
        }
        // Now read: what was in flight, then the gap (or the close).
        let mut next = 0;
        loop {
            match within("a frame", slow.next()).await {
                Some(Ok(Message::Text(text))) => {
                    let frame: Value = serde_json::from_str(&text).unwrap();
                    if frame["op"] == "gap" {
                        assert_eq!(policy, SlowConsumer::Signal);
                        next += usize::try_from(frame["missed"].as_u64().unwrap()).unwrap();
                        continue;
                    }
                    assert_eq!(frame["data"].as_str().unwrap()[..8], format!("{next:08}"));
                    next += 1;
                    if next == 300 {
                        assert_eq!(policy, SlowConsumer::Signal);
                        break;
                    }
                }
                Some(Ok(Message::Close(Some(frame)))) => {
                    assert_eq!(policy, SlowConsumer::Close);
                    assert_eq!(frame.code, CloseCode::Again);
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

/// Opens `path` as a WebSocket over a fresh HTTP/2 connection (RFC 8441),
/// with `origin` if given: the socket, or the refusal's status.
async fn open_h2(addr: SocketAddr, path: &str, origin: Option<&str>) -> Result<Ws2, StatusCode> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut request =
        Request::connect(format!("http://{addr}{path}")).header("sec-websocket-version", "13");
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    let mut request = request.body(Empty::<Bytes>::new()).unwrap();
    request
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let response = sender.send_request(request).await.unwrap();
    if response.status() != StatusCode::OK {
        return Err(response.status());
    }
    let upgraded = hyper::upgrade::on(response).await.unwrap();
    Ok(WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        Role::Client,
        Some(WebSocketConfig::default()),
    )
    .await)
}

type Ws2 = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

#[tokio::test]
async fn websockets_over_http2_extended_connect() {
    let hub = MemoryHub::new();
    let (server, handler) = start(&hub, WsConfig::default()).await;
    let mut ws = open_h2(server.addr, "/ws/c", None).await.unwrap();
    until("the socket", || handler.connections() == 1).await;
    match within("the greeting", ws.next()).await {
        Some(Ok(Message::Text(text))) => assert!(text.contains("\"op\":\"subscribed\"")),
        other => panic!("expected the greeting, got {other:?}"),
    }
    publish(&hub, "c", "over h2").await;
    match within("a frame", ws.next()).await {
        Some(Ok(Message::Text(text))) => {
            assert_eq!(
                serde_json::from_str::<Value>(&text).unwrap()["data"],
                "over h2"
            );
        }
        other => panic!("expected a text frame, got {other:?}"),
    }
}

#[tokio::test]
async fn the_same_host_rule_holds_over_http2() {
    // HTTP/2 carries no Host: the request's own origin is its :authority.
    let hub = MemoryHub::new();
    let (server, _handler) = start(&hub, WsConfig::default()).await;
    let own = format!("http://{}", server.addr);
    let mut ws = open_h2(server.addr, "/ws/c", Some(&own)).await.unwrap();
    match within("the greeting", ws.next()).await {
        Some(Ok(Message::Text(text))) => assert!(text.contains("\"op\":\"subscribed\"")),
        other => panic!("expected the greeting, got {other:?}"),
    }
    let other = open_h2(server.addr, "/ws/c", Some("http://evil.example")).await;
    assert_eq!(other.err(), Some(StatusCode::FORBIDDEN));
    // An explicit list alone decides, over HTTP/2 as over HTTP/1.1.
    let list = Origins::List(vec!["https://app.example".to_owned()].into());
    let (listed, _h) = start(&hub, WsConfig::default().with_origins(list)).await;
    let own = format!("http://{}", listed.addr);
    assert_eq!(
        open_h2(listed.addr, "/ws/c", Some(&own)).await.err(),
        Some(StatusCode::FORBIDDEN)
    );
    assert!(
        open_h2(listed.addr, "/ws/c", Some("https://app.example"))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn bad_handshakes_and_origins_are_refused() {
    let hub = MemoryHub::new();
    let (server, handler) = start(&hub, WsConfig::default()).await;
    let key = ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    let upgrade = [("upgrade", "websocket"), ("connection", "Upgrade")];
    let version = ("sec-websocket-version", "13");
    type Case<'a> = (Vec<(&'a str, &'a str)>, StatusCode, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (vec![], StatusCode::UPGRADE_REQUIRED, "upgrade_required"),
        (
            vec![upgrade[0], upgrade[1], version],
            StatusCode::BAD_REQUEST,
            "invalid_handshake",
        ),
        (
            vec![upgrade[0], upgrade[1], key],
            StatusCode::UPGRADE_REQUIRED,
            "unsupported_version",
        ),
        (
            vec![
                upgrade[0],
                upgrade[1],
                key,
                version,
                ("origin", "https://evil.example"),
            ],
            StatusCode::FORBIDDEN,
            "forbidden_origin",
        ),
    ];
    for (headers, status, code) in cases {
        let answer = get(server.addr, "/ws/c", &headers).await;
        assert_eq!(answer.status, status, "{headers:?}");
        assert_eq!(answer.json()["error"]["code"], code, "{headers:?}");
    }
    let answer = get(server.addr, "/ws/c", &[]).await;
    assert_eq!(answer.header("sec-websocket-version"), Some("13"));
    let answer = get(
        server.addr,
        "/ws/a%20b",
        &[upgrade[0], upgrade[1], key, version],
    )
    .await;
    assert_eq!(answer.json()["error"]["code"], "invalid_channel");
    let answer = get(
        server.addr,
        "/ws/c?since=nope",
        &[upgrade[0], upgrade[1], key, version],
    )
    .await;
    assert_eq!(answer.json()["error"]["code"], "invalid_cursor");
    let post = Request::post(server.url("/ws/c"))
        .body(Empty::new())
        .unwrap();
    assert_eq!(
        support::send(server.addr, post).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        hub.channel_count(),
        0,
        "no channel made for refused handshakes"
    );
    assert_eq!(handler.connections(), 0);

    // The same host may; with Origins::Any, anyone may.
    let host = server.addr.to_string();
    let same = format!("http://{host}");
    let ws = connect(server.addr, "/ws/c", &[("origin", same.as_str())]).await;
    drop(ws);
    let (open, _h) = start(&hub, WsConfig::default().with_origins(Origins::Any)).await;
    connect(
        open.addr,
        "/ws/c",
        &[("origin", "https://elsewhere.example")],
    )
    .await;

    // The command endpoint needs its subprotocol.
    let (commands_server, _h) = start(&hub, WsConfig::commands()).await;
    let answer = get(
        commands_server.addr,
        "/ws",
        &[upgrade[0], upgrade[1], key, version],
    )
    .await;
    assert_eq!(answer.json()["error"]["code"], "subprotocol_required");
    let mut ws = commands(commands_server.addr).await;
    send(&mut ws, json!({"op":"subscribe","channel":"c","ref":1})).await;
    assert_eq!(next_json(&mut ws).await["op"], "ack");
}

#[tokio::test]
async fn a_publish_retried_with_its_key_is_stored_once() {
    let hub = MemoryHub::new();
    let (server, _handler) = start(&hub, WsConfig::commands().with_publish(true)).await;
    let mut ws = commands(server.addr).await;
    let mut ids = Vec::new();
    for reference in 1..=3 {
        send(
            &mut ws,
            json!({"op":"publish","channel":"c","data":"once","key":"k-1","ref":reference}),
        )
        .await;
        let ack = next_json(&mut ws).await;
        assert_eq!(ack["op"], "ack", "{ack}");
        ids.push(ack["id"].clone());
    }
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(hub.channel_stats(&channel("c")).unwrap().messages, 1);
    for (command, code) in [
        (
            json!({"op":"publish","channel":"c","data":"other","key":"k-1","ref":4}),
            "idempotency_key_reused",
        ),
        (
            json!({"op":"publish","channel":"c","data":"x","key":"a b","ref":5}),
            "invalid_idempotency_key",
        ),
        (
            json!({"op":"publish","channel":"c","data":"x","key":7,"ref":6}),
            "invalid_command",
        ),
    ] {
        send(&mut ws, command.clone()).await;
        let error = next_json(&mut ws).await;
        assert_eq!(
            (&error["op"], &error["code"]),
            (&json!("error"), &json!(code)),
            "{command}"
        );
    }
    assert_eq!(hub.channel_stats(&channel("c")).unwrap().messages, 1);
}
