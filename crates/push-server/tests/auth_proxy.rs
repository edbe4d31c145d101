//! Proxy mode, as a user runs it: `push-server --auth-proxy-url` in front of
//! a small backend of the app's (hyper on 127.0.0.1) that knows the
//! sessions. Allowed, denied, mapped, timed out (503, fail closed), cached,
//! cookies forwarded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../../tests/support/mod.rs"]
mod support;
#[path = "../../../tests/support/ws.rs"]
mod ws_support;

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Running;
use futures_util::SinkExt as _;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use support::{get, open_sse, read_until};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

const ALICE: (&str, &str) = ("cookie", "session=alice");

/// The app's backend: what it was asked, and its rules. A `session=alice`
/// cookie is alice; none is 401. For alice: `me` is `user:alice`,
/// `private` is 403, `slow` never answers, `broken` is a 500, anything
/// else is allowed.
#[derive(Clone, Default)]
struct Backend {
    calls: Arc<AtomicUsize>,
    asked: Arc<Mutex<Vec<(HeaderMap, Value)>>>,
}

impl Backend {
    async fn start() -> (Backend, SocketAddr) {
        let backend = Backend::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serving = backend.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let backend = serving.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let backend = backend.clone();
                        async move { Ok::<_, Infallible>(backend.answer(request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (backend, addr)
    }

    async fn answer(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let (parts, body) = request.into_parts();
        assert_eq!((parts.method.as_str(), parts.uri.path()), ("POST", "/auth"));
        assert_eq!(parts.headers["content-type"], "application/json");
        let asked: Value =
            serde_json::from_slice(&body.collect().await.unwrap().to_bytes()).unwrap();
        self.asked
            .lock()
            .unwrap()
            .push((parts.headers.clone(), asked.clone()));
        let alice = parts
            .headers
            .get("cookie")
            .is_some_and(|cookie| cookie == "session=alice");
        let (status, body) = match (alice, asked["channel"].as_str().unwrap()) {
            (false, _) => (StatusCode::UNAUTHORIZED, ""),
            (true, "me") => (StatusCode::OK, r#"{"channel":"user:alice"}"#),
            (true, "private") => (StatusCode::FORBIDDEN, ""),
            (true, "slow") => std::future::pending().await,
            (true, "broken") => (StatusCode::INTERNAL_SERVER_ERROR, ""),
            (true, _) => (StatusCode::OK, ""),
        };
        let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *response.status_mut() = status;
        response
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn last(&self) -> (HeaderMap, Value) {
        self.asked.lock().unwrap().last().unwrap().clone()
    }
}

async fn server(backend: SocketAddr, cache_seconds: &str) -> Running {
    Running::start(&[
        "--auth-proxy-url",
        &format!("http://{backend}/auth"),
        "--auth-proxy-timeout",
        "0.5",
        "--auth-proxy-cache-seconds",
        cache_seconds,
        "--ws-publish",
    ])
    .await
}

fn code(answer: &support::Answer) -> String {
    answer.json()["error"]["code"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_backend_allows_denies_and_maps_with_the_cookies_it_was_sent() {
    let (backend, backend_addr) = Backend::start().await;
    let server = server(backend_addr, "0").await;
    let addr = server.addr;

    let anonymous = get(addr, "/poll/news", &[]).await;
    assert_eq!(
        (anonymous.status, code(&anonymous)),
        (StatusCode::UNAUTHORIZED, "unauthorized".into())
    );
    let private = get(addr, "/longpoll/private", &[ALICE]).await;
    assert_eq!(
        (private.status, code(&private)),
        (StatusCode::FORBIDDEN, "forbidden".into())
    );
    assert_eq!(
        get(addr, "/poll/news", &[ALICE]).await.status,
        StatusCode::OK
    );

    // `me` is alice's channel: the event stream of `me` gets a publish to
    // `me`, which the backend also mapped.
    let (mut sse, mut seen) = open_sse(
        addr,
        "/sse/me",
        "Cookie: session=alice\r\nAuthorization: Bearer app-token\r\n",
    )
    .await;
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    let (headers, asked) = backend.last();
    assert_eq!(
        asked,
        json!({"action":"subscribe","channel":"me","transport":"sse"})
    );
    assert_eq!(headers["cookie"], "session=alice");
    assert_eq!(headers["authorization"], "Bearer app-token");
    let published = support::request(addr, "POST", "/pub/me", &[ALICE], "for alice").await;
    assert_eq!(published.status, StatusCode::OK);
    assert_eq!(published.json()["channel"], "user:alice");
    assert_eq!(
        backend.last().1,
        json!({"action":"publish","channel":"me","transport":"http"})
    );
    read_until(&mut sse, &mut seen, "data: for alice\n").await;
    let polled = get(addr, "/poll/user:alice?since=earliest", &[ALICE]).await;
    assert_eq!(polled.json()["messages"][0]["data"], "for alice");

    // On a command socket each command is asked about; a refused one is an
    // error reply, and the socket goes on.
    let mut ws = ws_support::open(addr, "/ws", &[ALICE, ("sec-websocket-protocol", "push.v1")])
        .await
        .unwrap();
    ws.send(Message::text(
        r#"{"op":"subscribe","channel":"private","ref":1}"#,
    ))
    .await
    .unwrap();
    let refused = ws_support::next_json(&mut ws).await;
    assert_eq!(
        (&refused["op"], &refused["code"]),
        (&"error".into(), &"forbidden".into())
    );
    ws.send(Message::text(
        r#"{"op":"subscribe","channel":"me","ref":2}"#,
    ))
    .await
    .unwrap();
    let ack = ws_support::next_json(&mut ws).await;
    assert_eq!(
        (&ack["op"], &ack["channel"]),
        (&"ack".into(), &"user:alice".into())
    );
    assert_eq!(backend.last().1["transport"], "ws");
}

#[tokio::test]
async fn no_answer_in_time_or_a_failing_backend_is_503() {
    let (backend, backend_addr) = Backend::start().await;
    let server = server(backend_addr, "60").await;
    let started = Instant::now();
    let slow = get(server.addr, "/sse/slow", &[ALICE]).await;
    assert_eq!(
        (slow.status, code(&slow)),
        (StatusCode::SERVICE_UNAVAILABLE, "auth_unavailable".into())
    );
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "{:?}",
        started.elapsed()
    );
    for round in 1..=2 {
        let broken = get(server.addr, "/poll/broken", &[ALICE]).await;
        assert_eq!(broken.status, StatusCode::SERVICE_UNAVAILABLE);
        // Failures are not cached: the backend is asked each time.
        assert_eq!(backend.calls(), 1 + round);
    }
    let refused = support::request(server.addr, "POST", "/pub/broken", &[ALICE], "x").await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn answers_are_cached_per_headers_channel_and_action() {
    let (backend, backend_addr) = Backend::start().await;
    let server = server(backend_addr, "60").await;
    let addr = server.addr;
    for _ in 0..2 {
        assert_eq!(
            get(addr, "/poll/news", &[ALICE]).await.status,
            StatusCode::OK
        );
        assert_eq!(
            get(addr, "/poll/private", &[ALICE]).await.status,
            StatusCode::FORBIDDEN
        );
    }
    assert_eq!(backend.calls(), 2, "two identical requests, one call each");
    // Another session, channel or action is asked again.
    assert_eq!(
        get(addr, "/poll/news", &[("cookie", "session=bob")])
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(addr, "/poll/other", &[ALICE]).await.status,
        StatusCode::OK
    );
    let published = support::request(addr, "POST", "/pub/news", &[ALICE], "x").await;
    assert_eq!(published.status, StatusCode::OK);
    assert_eq!(backend.calls(), 5);
}

#[tokio::test]
async fn a_url_that_is_not_http_stops_the_server() {
    for url in ["https://auth.example/check", "not a url", "/relative"] {
        let message = common::refused(&["--auth-proxy-url", url]).await;
        assert!(message.contains("--auth-proxy-url"), "{url}: {message}");
    }
}
