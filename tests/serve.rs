//! The facade's router and `serve` over real TCP: every route on one port,
//! graceful shutdown of streams, sockets and held polls, deadlines (the
//! connection limits and deadlines of `serve` itself: serve_limits.rs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/serving.rs"]
mod serving;
mod support;
#[path = "support/ws.rs"]
mod ws_support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http::{Request, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use push_live::{MemoryHub, Router, RouterConfig, ServeConfig};
use serving::start;
use support::{get, read_until, until, within};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use ws_support::{Ws, close_code, next_json};

async fn post(addr: SocketAddr, path: &str, body: impl Into<Bytes>) -> support::Answer {
    support::request(addr, "POST", path, &[], body).await
}

/// Opens an event stream by hand; returns the socket, past the head.
async fn open_sse(addr: SocketAddr, path: &str) -> (TcpStream, String) {
    let (stream, seen) = support::open_sse(addr, path, "").await;
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    (stream, seen)
}

async fn read_to_end(stream: &mut TcpStream) -> String {
    let mut rest = Vec::new();
    within("the end of the stream", stream.read_to_end(&mut rest))
        .await
        .unwrap();
    String::from_utf8(rest).unwrap()
}

/// Opens a WebSocket that must be accepted.
async fn open_ws(addr: SocketAddr, path: &str, subprotocol: Option<&str>) -> Ws {
    let headers: Vec<(&str, &str)> = subprotocol
        .map(|p| ("sec-websocket-protocol", p))
        .into_iter()
        .collect();
    ws_support::open(addr, path, &headers).await.unwrap()
}

#[tokio::test]
async fn every_route_is_served_on_one_port() {
    let running = start(
        RouterConfig::default().with_publish(true),
        ServeConfig::default(),
    )
    .await;
    let addr = running.addr;
    let published = post(addr, "/pub/news?event=greeting", "hello").await;
    assert_eq!(published.status, StatusCode::OK);
    let id = published.json()["id"].as_str().unwrap().to_owned();

    let polled = get(addr, "/poll/news?since=earliest", &[]).await;
    assert_eq!(polled.status, StatusCode::OK);
    let message = &polled.json()["messages"][0];
    assert_eq!(
        (message["id"].as_str(), message["event"].as_str()),
        (Some(&*id), Some("greeting"))
    );
    assert_eq!(message["data"], "hello");

    let held = get(addr, "/longpoll/news?since=earliest", &[]).await;
    assert_eq!(held.json()["messages"][0]["id"], *id);

    let (mut sse, mut seen) = open_sse(addr, "/sse/news?since=earliest").await;
    read_until(
        &mut sse,
        &mut seen,
        &format!("id: {id}\nevent: greeting\ndata: hello\n\n"),
    )
    .await;

    let mut ws = open_ws(addr, "/ws/news?since=earliest", None).await;
    assert_eq!(next_json(&mut ws).await["id"], *id);

    let mut commands = open_ws(addr, "/ws", Some("push.v1")).await;
    let subscribe = r#"{"op":"subscribe","channel":"news","since":"earliest","ref":1}"#;
    commands.send(Message::text(subscribe)).await.unwrap();
    let ack = next_json(&mut commands).await;
    assert_eq!(
        (ack["op"].as_str(), ack["ref"].as_i64()),
        (Some("ack"), Some(1))
    );
    assert_eq!(next_json(&mut commands).await["id"], *id);

    // One more, seen live by every open subscriber.
    let second = post(addr, "/pub/news", "again").await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    read_until(
        &mut sse,
        &mut seen,
        &format!("id: {second}\ndata: again\n\n"),
    )
    .await;
    assert_eq!(next_json(&mut ws).await["data"], "again");
    assert_eq!(next_json(&mut commands).await["data"], "again");
    assert!(running.stats.accepted() >= 7);
    assert!(running.stats.bytes_out() > 0 && running.stats.bytes_in() > 0);
}

#[tokio::test]
async fn bad_requests_get_clear_answers() {
    let running = start(
        RouterConfig::default()
            .with_publish(true)
            .with_max_message_bytes(16),
        ServeConfig::default(),
    )
    .await;
    let addr = running.addr;
    let cases: [(&str, &str, StatusCode, &str); 7] = [
        ("GET", "/nowhere/news", StatusCode::NOT_FOUND, "not_found"),
        ("GET", "/sse/a/b", StatusCode::NOT_FOUND, "not_found"),
        (
            "GET",
            "/pub/news",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "POST",
            "/pub/bad%20name",
            StatusCode::BAD_REQUEST,
            "invalid_channel",
        ),
        (
            "POST",
            "/pub/news?event=push.gap",
            StatusCode::BAD_REQUEST,
            "invalid_event",
        ),
        (
            "POST",
            "/pub/news?event=a&event=b",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "POST",
            "/pub/news?big",
            StatusCode::PAYLOAD_TOO_LARGE,
            "message_too_large",
        ),
    ];
    for (method, path, status, code) in cases {
        let answer = if method == "GET" {
            get(addr, path, &[]).await
        } else {
            let body = if path.ends_with("?big") {
                "x".repeat(17)
            } else {
                "x".into()
            };
            post(addr, path, body).await
        };
        assert_eq!(answer.status, status, "{method} {path}");
        assert_eq!(answer.json()["error"]["code"], code, "{method} {path}");
    }
    // Nothing of it reached the channel.
    let polled = get(addr, "/poll/news?since=earliest", &[]).await;
    assert_eq!(polled.json()["messages"].as_array().unwrap().len(), 0);
    // Sixteen bytes are fine.
    assert_eq!(
        post(addr, "/pub/news", "x".repeat(16)).await.status,
        StatusCode::OK
    );

    let closed = start(RouterConfig::default(), ServeConfig::default()).await;
    let answer = post(closed.addr, "/pub/news", "x").await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(answer.json()["error"]["code"], "publish_disabled");
}

#[tokio::test]
async fn shutdown_ends_streams_sockets_and_held_polls() {
    let running = start(RouterConfig::default(), ServeConfig::default()).await;
    let addr = running.addr;
    let (mut sse, _) = open_sse(addr, "/sse/news").await;
    let mut ws = open_ws(addr, "/ws/news", None).await;
    let mut commands = open_ws(addr, "/ws", Some("push.v1")).await;
    let held = tokio::spawn(async move { get(addr, "/longpoll/news?timeout=60", &[]).await });
    let router = running.router.clone();
    until("every subscriber to be in place", || {
        let (channel, command) = router.ws();
        router.sse().connections() == 1
            && channel.connections() == 1
            && command.connections() == 1
            && router.longpoll().connections() == 1
    })
    .await;

    running.shutdown.trigger();
    // The stream's last chunk is the retry hint; then the connection closes.
    let rest = read_to_end(&mut sse).await;
    assert!(rest.ends_with("retry: 3000\n\n\r\n0\r\n\r\n"), "{rest:?}");
    assert_eq!(close_code(&mut ws).await, CloseCode::Away);
    assert_eq!(close_code(&mut commands).await, CloseCode::Away);
    let answer = within("the held long poll", held).await.unwrap();
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert!(answer.header("etag").is_some());
    // The close handshakes finish (tungstenite answers the close), and
    // `serve` returns long before its grace period is over.
    for ws in [&mut ws, &mut commands] {
        while let Some(Ok(_)) = within("the socket's end", ws.next()).await {}
    }
    within("serve to return", running.task)
        .await
        .unwrap()
        .unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
    assert_eq!(running.stats.open_connections(), 0);
}

#[tokio::test]
async fn a_deadline_ends_event_streams_and_sockets() {
    let router = Router::new(MemoryHub::new(), RouterConfig::default());
    let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
    let service = {
        let router = router.clone();
        service_fn(move |request: Request<Incoming>| {
            let router = router.clone();
            async move { Ok::<_, Infallible>(router.handle_until(request, Some(deadline)).await) }
        })
    };
    let listener = push_live::bind("127.0.0.1:0".parse().unwrap(), 128).unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = router.shutdown();
    tokio::spawn(push_live::serve(
        listener,
        service,
        shutdown,
        ServeConfig::default(),
        None,
    ));

    let (mut sse, _) = open_sse(addr, "/sse/news").await;
    let mut ws = open_ws(addr, "/ws/news", None).await;
    // The stream ends (its last chunk the retry hint); the connection stays.
    let mut rest = String::new();
    read_until(&mut sse, &mut rest, "\r\n0\r\n\r\n").await;
    assert!(rest.ends_with("retry: 3000\n\n\r\n0\r\n\r\n"), "{rest:?}");
    assert_eq!(close_code(&mut ws).await, CloseCode::Policy);
    assert!(tokio::time::Instant::now() >= deadline);
}

#[tokio::test]
async fn http2_with_prior_knowledge_is_served_too() {
    let running = start(
        RouterConfig::default().with_publish(true),
        ServeConfig::default(),
    )
    .await;
    post(running.addr, "/pub/news", "h2").await;
    let request = Request::get(format!("http://{}/poll/news?since=earliest", running.addr))
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let answer = support::send_h2(running.addr, request).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json()["messages"][0]["data"], "h2");
}

#[tokio::test]
async fn a_publish_in_flight_completes_during_shutdown() {
    let running = start(
        RouterConfig::default().with_publish(true),
        ServeConfig::default(),
    )
    .await;
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    let head = b"POST /pub/news HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n\r\nhel";
    stream.write_all(head).await.unwrap();
    let stats = running.stats.clone();
    until("the server to read the request so far", || {
        stats.bytes_in() >= head.len() as u64
    })
    .await;
    running.shutdown.trigger();
    stream.write_all(b"lo").await.unwrap();
    let mut answer = String::new();
    read_until(&mut stream, &mut answer, "\"}").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let batch = push_live::Hub::read(
        &**running.router.hub(),
        &"news".parse().unwrap(),
        push_live::Start::Earliest,
        10,
    )
    .await
    .unwrap();
    assert_eq!(&batch.messages[0].data()[..], b"hello");
    within("serve to return", running.task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn http2_websockets_work_and_end_on_shutdown() {
    use hyper_util::rt::TokioExecutor;
    use tokio_tungstenite::tungstenite::protocol::Role;

    let running = start(RouterConfig::default(), ServeConfig::default()).await;
    let stream = TcpStream::connect(running.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut request = Request::connect(format!("http://{}/ws/news", running.addr))
        .header("sec-websocket-version", "13")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    request
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let upgraded = hyper::upgrade::on(response).await.unwrap();
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        Role::Client,
        None,
    )
    .await;
    let greeting = match within("the greeting", ws.next()).await {
        Some(Ok(Message::Text(text))) => text,
        other => panic!("expected the greeting, got {other:?}"),
    };
    assert!(greeting.contains("\"op\":\"subscribed\""), "{greeting}");
    // An HTTP/2 CONNECT stream would hold hyper's graceful shutdown forever;
    // the socket's own close ends it.
    running.shutdown.trigger();
    let code = loop {
        match within("a close frame", ws.next()).await {
            Some(Ok(Message::Close(Some(frame)))) => break frame.code,
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(code, CloseCode::Away);
    while let Some(Ok(_)) = within("the socket's end", ws.next()).await {}
    within("serve to return", running.task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_publish_retried_with_its_idempotency_key_is_stored_once() {
    let running = start(
        RouterConfig::default().with_publish(true),
        ServeConfig::default(),
    )
    .await;
    let addr = running.addr;
    let keyed = |key: &'static str, body: &'static str| async move {
        support::request(addr, "POST", "/pub/news", &[("idempotency-key", key)], body).await
    };
    let first = keyed("k-1", "hello").await;
    assert_eq!(first.status, StatusCode::OK);
    let retry = keyed("k-1", "hello").await;
    assert_eq!(retry.json()["id"], first.json()["id"]);
    // The IETF draft's quoted form names the same key.
    let quoted = keyed("\"k-1\"", "hello").await;
    assert_eq!(quoted.json()["id"], first.json()["id"]);
    let reused = keyed("k-1", "other").await;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reused.json()["error"]["code"], "idempotency_key_reused");
    let bad = keyed("a b", "x").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.json()["error"]["code"], "invalid_idempotency_key");
    let polled = get(addr, "/poll/news?since=earliest", &[]).await;
    assert_eq!(polled.json()["messages"].as_array().unwrap().len(), 1);
}
