//! `push_live::serve` against hostile and careless clients, over real TCP: every
//! connection has a deadline until it is useful (silent sockets, partial
//! HTTP/2 prefaces and header blocks, idle keep-alive, trickled heads and
//! bodies, stalled readers), the connection limit sheds idle connections
//! before it refuses anyone and counts upgraded WebSockets, and requests
//! HTTP/1.1 forbids are refused. Deadlines are set short (hundreds of
//! milliseconds); every wait is on an event, with a generous safety net.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/serving.rs"]
mod serving;
mod support;
#[path = "support/ws.rs"]
mod ws_support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use push_live::{Hub as _, Publication, RouterConfig, ServeConfig};
use serving::start;
use support::{get, read_until, until, within};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const SHORT: Duration = Duration::from_millis(300);
const LONG: Duration = Duration::from_secs(600);

/// Deadlines that matter in a test: `header` and `idle` as given, writes
/// long unless a test shortens them.
fn deadlines(header: Duration, idle: Duration) -> ServeConfig {
    ServeConfig::default()
        .with_header_timeout(header)
        .with_idle_timeout(idle)
        .with_write_timeout(LONG)
}

/// Reads until the server closes the connection (EOF or reset); returns what
/// came.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    within("the server to close the connection", async {
        let mut seen = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return seen,
                Ok(read) => seen.extend_from_slice(&buffer[..read]),
            }
        }
    })
    .await
}

/// A connection that has sent `bytes` and nothing more.
async fn sending(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

/// One HTTP/1.1 request on `stream`; returns the answer's head and body so far.
async fn exchange(stream: &mut TcpStream, request: &str, until: &str) -> String {
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut seen = String::new();
    read_until(stream, &mut seen, until).await;
    seen
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame.
const H2_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

#[tokio::test]
async fn a_silent_socket_is_closed_at_the_header_deadline() {
    let running = start(RouterConfig::default(), deadlines(SHORT, LONG)).await;
    let mut silent = TcpStream::connect(running.addr).await.unwrap();
    assert!(until_closed(&mut silent).await.is_empty());
    until("the connection to be counted closed", || {
        running.stats.open_connections() == 0
    })
    .await;
    assert_eq!(running.stats.timed_out(), 1);
}

#[tokio::test]
async fn partial_http2_prefaces_and_header_blocks_are_closed() {
    let running = start(RouterConfig::default(), deadlines(SHORT, LONG)).await;
    let addr = running.addr;
    let mut half_preface = sending(addr, &H2_PREFACE[..16]).await;
    let mut no_stream = sending(addr, &[H2_PREFACE, H2_SETTINGS].concat()).await;
    // HEADERS on stream 1 (GET http /) with END_STREAM but not END_HEADERS:
    // the rest of the block never comes.
    let headers = [0, 0, 3, 1, 0x1, 0, 0, 0, 1, 0x82, 0x86, 0x84];
    let mut half_block = sending(addr, &[H2_PREFACE, H2_SETTINGS, &headers].concat()).await;
    until_closed(&mut half_preface).await;
    until_closed(&mut no_stream).await;
    until_closed(&mut half_block).await;
    until("every connection to be counted closed", || {
        running.stats.open_connections() == 0
    })
    .await;
    assert_eq!(running.stats.timed_out(), 3);
}

#[tokio::test]
async fn an_http2_connection_with_no_open_stream_is_closed_when_idle() {
    let running = start(RouterConfig::default(), deadlines(LONG, SHORT)).await;
    let stream = TcpStream::connect(running.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let request = http::Request::get(format!("http://{}/poll/news", running.addr))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let answer = support::read(sender.send_request(request).await.unwrap()).await;
    assert_eq!(answer.status, StatusCode::OK);
    // No stream is open now: the server says GOAWAY and the connection ends.
    within("the idle HTTP/2 connection to end", connection)
        .await
        .unwrap()
        .unwrap();
    until("the close to be counted", || running.stats.timed_out() == 1).await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let running = start(RouterConfig::default(), deadlines(LONG, SHORT)).await;
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    let seen = exchange(
        &mut stream,
        "GET /poll/news HTTP/1.1\r\nHost: t\r\n\r\n",
        "\"messages\":[]}",
    )
    .await;
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    until_closed(&mut stream).await;
    until("the close to be counted", || running.stats.timed_out() == 1).await;
}

#[tokio::test]
async fn a_next_request_head_must_arrive_within_the_header_deadline() {
    // Idle keep-alive is long here: the head started, so its own deadline runs.
    let running = start(RouterConfig::default(), deadlines(SHORT, LONG)).await;
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    exchange(
        &mut stream,
        "GET /poll/news HTTP/1.1\r\nHost: t\r\n\r\n",
        "\"messages\":[]}",
    )
    .await;
    stream
        .write_all(b"GET /poll/news HTTP/1.1\r\n")
        .await
        .unwrap();
    until_closed(&mut stream).await;
    until("the close to be counted", || running.stats.timed_out() == 1).await;
}

#[tokio::test]
async fn a_trickled_publish_body_gets_408() {
    let running = start(
        RouterConfig::default()
            .with_publish(true)
            .with_publish_body_timeout(SHORT),
        deadlines(LONG, LONG),
    )
    .await;
    let mut stream = sending(
        running.addr,
        b"POST /pub/news HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nab",
    )
    .await;
    let answer = String::from_utf8(until_closed(&mut stream).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    // Nothing was published.
    let poll = get(running.addr, "/poll/news?since=earliest", &[]).await;
    assert_eq!(poll.json()["messages"], serde_json::json!([]));
}

#[tokio::test]
async fn an_oversized_declared_body_gets_413_before_any_of_it_is_read() {
    let running = start(
        RouterConfig::default()
            .with_publish(true)
            .with_max_message_bytes(16),
        deadlines(LONG, LONG),
    )
    .await;
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    let seen = exchange(
        &mut stream,
        "POST /pub/news HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\nExpect: 100-continue\r\n\r\n",
        "\r\n\r\n",
    )
    .await;
    assert!(seen.starts_with("HTTP/1.1 413"), "{seen}");
    assert!(!seen.contains("100 Continue"), "{seen}");
}

#[tokio::test]
async fn at_the_limit_the_connection_idle_longest_makes_room() {
    let running = start(
        RouterConfig::default(),
        deadlines(LONG, LONG).with_max_connections(3),
    )
    .await;
    let addr = running.addr;
    let mut oldest = TcpStream::connect(addr).await.unwrap();
    until("the first to be served", || {
        running.stats.open_connections() == 1
    })
    .await;
    let _second = TcpStream::connect(addr).await.unwrap();
    let _third = TcpStream::connect(addr).await.unwrap();
    until("three silent connections", || {
        running.stats.open_connections() == 3
    })
    .await;
    let answer = within("an honest client to get in", get(addr, "/poll/news", &[])).await;
    assert_eq!(answer.status, StatusCode::OK);
    until_closed(&mut oldest).await;
    assert_eq!(running.stats.shed(), 1);
    assert_eq!(running.stats.refused(), 0);
}

#[tokio::test]
async fn at_the_limit_with_nothing_idle_new_clients_get_503() {
    let running = start(
        RouterConfig::default(),
        deadlines(LONG, LONG).with_max_connections(2),
    )
    .await;
    let addr = running.addr;
    let (_first, _) = support::open_sse(addr, "/sse/news", "").await;
    let (_second, _) = support::open_sse(addr, "/sse/news", "").await;
    let answer = get(addr, "/poll/news", &[]).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.header("retry-after"), Some("1"));
    assert_eq!(answer.json()["error"]["code"], "too_many_connections");
    assert_eq!(running.stats.refused(), 1);
    assert_eq!(running.stats.open_connections(), 2);
}

#[tokio::test]
async fn websockets_hold_their_connection_slot_until_they_close() {
    let running = start(
        RouterConfig::default(),
        deadlines(LONG, LONG).with_max_connections(3),
    )
    .await;
    let addr = running.addr;
    let mut sockets = Vec::new();
    for _ in 0..3 {
        sockets.push(ws_support::open(addr, "/ws/news", &[]).await.unwrap());
    }
    until("three upgraded connections", || {
        running.stats.upgraded_connections() == 3
    })
    .await;
    assert_eq!(running.stats.open_connections(), 3);
    let refused = get(addr, "/poll/news", &[]).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    let mut closing = sockets.pop().unwrap();
    closing.close(None).await.unwrap();
    drop(closing);
    until("the closed socket to free its slot", || {
        running.stats.open_connections() == 2 && running.stats.upgraded_connections() == 2
    })
    .await;
    assert_eq!(get(addr, "/poll/news", &[]).await.status, StatusCode::OK);
}

#[tokio::test]
async fn connections_from_one_address_are_capped() {
    let running = start(
        RouterConfig::default(),
        deadlines(LONG, LONG).with_max_connections_per_ip(2),
    )
    .await;
    let addr = running.addr;
    let _first = TcpStream::connect(addr).await.unwrap();
    let _second = TcpStream::connect(addr).await.unwrap();
    until("two connections", || running.stats.open_connections() == 2).await;
    let answer = get(addr, "/poll/news", &[]).await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.json()["error"]["code"], "too_many_connections");
}

#[tokio::test]
async fn a_client_that_stops_reading_its_event_stream_is_dropped() {
    let running = start(
        RouterConfig::default(),
        deadlines(LONG, LONG).with_write_timeout(SHORT),
    )
    .await;
    let addr = running.addr;
    let (_stalled, _) = support::open_sse(addr, "/sse/news", "").await;
    let (mut honest, mut seen) = support::open_sse(addr, "/sse/news", "").await;
    let reader = tokio::spawn(async move {
        let mut buffer = vec![0u8; 64 << 10];
        loop {
            match honest.read(&mut buffer).await {
                Ok(0) | Err(_) => return seen,
                Ok(read) => {
                    seen.push_str(&String::from_utf8_lossy(&buffer[..read]));
                    if seen.contains("data: last\n\n") {
                        return seen;
                    }
                    // Keep only the tail: the needle may straddle two reads.
                    let keep = seen.len().saturating_sub(64);
                    let keep = (keep..=seen.len())
                        .find(|at| seen.is_char_boundary(*at))
                        .unwrap_or(seen.len());
                    seen.drain(..keep);
                }
            }
        }
    });
    let news = "news".parse().unwrap();
    let hub = running.router.hub().clone();
    let chunk = Bytes::from(vec![b'x'; 100 << 10]);
    within("the stalled reader to be dropped", async {
        while running.stats.open_connections() > 1 {
            hub.publish(&news, Publication::new(chunk.clone()))
                .await
                .unwrap();
            tokio::task::yield_now().await;
        }
    })
    .await;
    hub.publish(&news, Publication::new("last")).await.unwrap();
    let seen = within("the honest reader to get the last message", reader)
        .await
        .unwrap();
    assert!(seen.contains("data: last\n\n"), "{seen}");
    until("the drop to be counted", || running.stats.timed_out() == 1).await;
}

#[tokio::test]
async fn http11_requests_need_exactly_one_valid_host() {
    let running = start(RouterConfig::default(), deadlines(LONG, LONG)).await;
    let addr = running.addr;
    for request in [
        "GET /poll/news HTTP/1.1\r\n\r\n",
        "GET /poll/news HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET /poll/news HTTP/1.1\r\nHost: a b\r\n\r\n",
    ] {
        let mut stream = sending(addr, request.as_bytes()).await;
        let answer = String::from_utf8(until_closed(&mut stream).await).unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{request:?}: {answer}");
        assert!(answer.contains("\"bad_request\""), "{answer}");
    }
    // HTTP/1.0 may leave it out.
    let mut old = sending(addr, b"GET /poll/news HTTP/1.0\r\n\r\n").await;
    let answer = String::from_utf8(until_closed(&mut old).await).unwrap();
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
}

#[tokio::test]
async fn a_request_head_over_the_limit_gets_431() {
    let running = start(
        RouterConfig::default(),
        deadlines(LONG, LONG).with_max_header_bytes(16 << 10),
    )
    .await;
    let big = "x".repeat(20 << 10);
    let mut stream = sending(
        running.addr,
        format!("GET /poll/news HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    )
    .await;
    let answer = String::from_utf8(until_closed(&mut stream).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
}
