//! `serve` over TLS, over real TCP with a certificate made here (rcgen):
//! ALPN choosing HTTP/1.1 or HTTP/2, an event stream and WebSockets (RFC
//! 6455 over HTTP/1.1, RFC 8441 over HTTP/2) over TLS, and hostile clients:
//! a handshake that never ends is closed at the connection's first deadline
//! (and is shed like any idle connection), a connection refused at the limit
//! is closed without a handshake, garbage instead of a ClientHello closes
//! that connection only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/serving.rs"]
mod serving;
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use push_live::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use push_live::rustls::{ClientConfig, RootCertStore, ServerConfig};
use push_live::{RouterConfig, ServeConfig};
use serving::{Running, start};
use support::within;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// A certificate for `localhost` and 127.0.0.1, and the client side that
/// trusts it.
struct Pki {
    server: Arc<ServerConfig>,
    roots: Arc<RootCertStore>,
}

fn pki() -> Pki {
    let made =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert: CertificateDer<'static> = made.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
    let provider = Arc::new(push_live::rustls::crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(cert).unwrap();
    Pki {
        server: Arc::new(server),
        roots: Arc::new(roots),
    }
}

impl Pki {
    /// A TLS connection to `addr` offering `alpn`.
    async fn connect(&self, addr: SocketAddr, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
        let provider = Arc::new(push_live::rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        within(
            "the TLS handshake",
            TlsConnector::from(Arc::new(config)).connect(name, tcp),
        )
        .await
        .unwrap()
    }
}

async fn start_tls(pki: &Pki, serve: ServeConfig) -> Running {
    start(
        RouterConfig::default().with_publish(true),
        serve.with_tls(pki.server.clone()),
    )
    .await
}

/// Shuts the server down and waits for `serve` to return.
async fn stop(running: Running) {
    running.shutdown.trigger();
    within("serve to return", running.task)
        .await
        .unwrap()
        .unwrap();
}

/// An HTTP/1.1 or HTTP/2 client on one TLS connection.
enum Client {
    Http1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

impl Client {
    /// Connects offering `alpn`, and speaks what the server chose.
    async fn connect(pki: &Pki, addr: SocketAddr, alpn: &[&[u8]]) -> Client {
        let tls = pki.connect(addr, alpn).await;
        let chosen = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let io = TokioIo::new(tls);
        if chosen.as_deref() == Some(b"h2") {
            let (sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .unwrap();
            tokio::spawn(connection);
            Client::Http2(sender)
        } else {
            let (sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(connection.with_upgrades());
            Client::Http1(sender)
        }
    }

    /// `GET path`.
    async fn get(&mut self, path: &str) -> hyper::Response<hyper::body::Incoming> {
        let answer = match self {
            Client::Http1(sender) => {
                let request = Request::get(path).header("host", "localhost");
                sender
                    .send_request(request.body(Empty::new()).unwrap())
                    .await
            }
            Client::Http2(sender) => {
                let request = Request::get(format!("https://localhost{path}"));
                sender
                    .send_request(request.body(Empty::new()).unwrap())
                    .await
            }
        };
        within("an answer", async { answer.unwrap() }).await
    }
}

/// Publishes `data` to `channel` over HTTP/1.1 on a TLS connection of its
/// own.
async fn publish(pki: &Pki, addr: SocketAddr, channel: &str, data: &str) {
    let tls = pki.connect(addr, &[b"http/1.1"]).await;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::post(format!("/pub/{channel}"))
        .header("host", "localhost")
        .body(http_body_util::Full::new(Bytes::from(data.to_owned())))
        .unwrap();
    let response = within("the publish", sender.send_request(request))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn alpn_chooses_http1_or_http2_over_tls() {
    let pki = pki();
    let running = start_tls(&pki, ServeConfig::default()).await;
    publish(&pki, running.addr, "news", "hello").await;
    for (alpn, version) in [
        (&[&b"h2"[..], b"http/1.1"][..], Version::HTTP_2),
        (&[&b"http/1.1"[..]][..], Version::HTTP_11),
        // No ALPN at all: told from the first bytes, as over TCP.
        (&[][..], Version::HTTP_11),
    ] {
        let mut client = Client::connect(&pki, running.addr, alpn).await;
        let response = client.get("/poll/news?since=earliest").await;
        assert_eq!(response.version(), version, "offering {alpn:?}");
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["messages"][0]["data"], "hello", "{json}");
    }
    stop(running).await;
}

#[tokio::test]
async fn event_streams_over_tls_http2_share_one_connection() {
    let pki = pki();
    let running = start_tls(&pki, ServeConfig::default()).await;
    let mut client = Client::connect(&pki, running.addr, &[b"h2", b"http/1.1"]).await;
    // Ten streams on one connection: what HTTP/1.1 (six per origin in a
    // browser) cannot do.
    let mut bodies = Vec::new();
    for _ in 0..10 {
        let response = client.get("/sse/news").await;
        assert_eq!(response.version(), Version::HTTP_2);
        assert_eq!(response.status(), StatusCode::OK);
        bodies.push(response.into_body());
    }
    assert_eq!(running.stats.open_connections(), 1);
    publish(&pki, running.addr, "news", "over tls").await;
    for body in &mut bodies {
        let mut seen = String::new();
        while !seen.contains("data: over tls\n") {
            let frame = within("an event", body.frame()).await.unwrap().unwrap();
            if let Ok(data) = frame.into_data() {
                seen.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    }
    stop(running).await;
}

#[tokio::test]
async fn websockets_work_over_tls_on_http1_and_http2() {
    let pki = pki();
    let running = start_tls(&pki, ServeConfig::default()).await;
    // RFC 6455: an HTTP/1.1 upgrade on a TLS connection (wss:).
    let tls = pki.connect(running.addr, &[b"http/1.1"]).await;
    let (mut ws1, _) = within(
        "the wss: handshake",
        Box::pin(tokio_tungstenite::client_async(
            "wss://localhost/ws/news",
            tls,
        )),
    )
    .await
    .unwrap();
    // RFC 8441: an extended CONNECT on a TLS HTTP/2 connection.
    let tls = pki.connect(running.addr, &[b"h2"]).await;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut request = Request::connect("https://localhost/ws/news")
        .header("sec-websocket-version", "13")
        .body(Empty::<Bytes>::new())
        .unwrap();
    request
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let response = within("the CONNECT", sender.send_request(request))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let upgraded = hyper::upgrade::on(response).await.unwrap();
    let mut ws2 =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    // The upgraded HTTP/1.1 connection is counted as such, and stays open.
    assert_eq!(running.stats.upgraded_connections(), 1);
    assert_eq!(running.stats.open_connections(), 2);
    publish(&pki, running.addr, "news", "to both").await;
    // After the greeting (`subscribed`), the message.
    assert!(next_text(&mut ws1).await.contains("\"op\":\"subscribed\""));
    assert!(next_text(&mut ws2).await.contains("\"op\":\"subscribed\""));
    assert!(next_text(&mut ws1).await.contains("to both"));
    assert!(next_text(&mut ws2).await.contains("to both"));
    // Shutdown closes both with 1001, over TLS as over TCP.
    running.shutdown.trigger();
    assert_eq!(close_code_to_the_end(&mut ws1).await, CloseCode::Away);
    assert_eq!(close_code_to_the_end(&mut ws2).await, CloseCode::Away);
    within("serve to return", running.task)
        .await
        .unwrap()
        .unwrap();
}

/// The next text frame (pings and pongs skipped).
async fn next_text<S>(ws: &mut WebSocketStream<S>) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match within("a WebSocket message", ws.next()).await {
            Some(Ok(Message::Text(text))) => return text.as_str().to_owned(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// The code of the next close frame, once the close handshake is done.
async fn close_code_to_the_end<S>(ws: &mut WebSocketStream<S>) -> CloseCode
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let code = loop {
        match within("a close frame", ws.next()).await {
            Some(Ok(Message::Close(Some(frame)))) => break frame.code,
            Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    while let Some(Ok(_)) = within("the socket's end", ws.next()).await {}
    code
}

/// Reads until the peer closes (or resets); what it sent meanwhile.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn a_handshake_that_never_ends_is_closed_at_the_deadline() {
    let pki = pki();
    let deadline = Duration::from_millis(300);
    let running = start_tls(&pki, ServeConfig::default().with_header_timeout(deadline)).await;
    let started = tokio::time::Instant::now();
    // TCP open, and the first bytes of a ClientHello (a TLS record header
    // that promises more), then nothing.
    let mut stalled = TcpStream::connect(running.addr).await.unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .unwrap();
    let got = within("the stalled handshake's close", read_to_close(&mut stalled)).await;
    assert!(got.is_empty(), "sent {got:?}");
    assert!(started.elapsed() >= deadline, "closed too early");
    assert_eq!(running.stats.timed_out(), 1);
    // Nothing at all after connecting: the same.
    let mut silent = TcpStream::connect(running.addr).await.unwrap();
    within("the silent client's close", read_to_close(&mut silent)).await;
    assert_eq!(running.stats.timed_out(), 2);
    stop(running).await;
}

#[tokio::test]
async fn a_stalled_handshake_is_shed_to_make_room() {
    let pki = pki();
    let running = start_tls(&pki, ServeConfig::default().with_max_connections(1)).await;
    let mut stalled = TcpStream::connect(running.addr).await.unwrap();
    support::until("the stalled connection to be open", || {
        running.stats.open_connections() == 1
    })
    .await;
    // At the limit, a real client gets the stalled one's slot.
    let mut client = Client::connect(&pki, running.addr, &[b"h2"]).await;
    let response = client.get("/poll/news").await;
    assert_eq!(response.status(), StatusCode::OK);
    within(
        "the stalled connection's close",
        read_to_close(&mut stalled),
    )
    .await;
    assert_eq!(running.stats.shed(), 1);
    assert_eq!(running.stats.refused(), 0);
    stop(running).await;
}

#[tokio::test]
async fn at_the_limit_a_tls_connection_is_closed_without_a_handshake() {
    let pki = pki();
    let running = start_tls(&pki, ServeConfig::default().with_max_connections(1)).await;
    // The one slot is busy (an event stream), so nothing can be shed.
    let mut client = Client::connect(&pki, running.addr, &[b"h2"]).await;
    let stream = client.get("/sse/news").await;
    assert_eq!(stream.status(), StatusCode::OK);
    let mut refused = TcpStream::connect(running.addr).await.unwrap();
    // A ClientHello's first bytes: no plain `503` comes back, nor a handshake.
    refused
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .unwrap();
    let got = within(
        "the refused connection's close",
        read_to_close(&mut refused),
    )
    .await;
    assert!(got.is_empty(), "sent {got:?}");
    assert_eq!(running.stats.refused(), 1);
    drop(stream);
    stop(running).await;
}

#[tokio::test]
async fn garbage_instead_of_a_client_hello_closes_that_connection_only() {
    let pki = pki();
    let running = start_tls(&pki, ServeConfig::default()).await;
    let mut client = Client::connect(&pki, running.addr, &[b"h2"]).await;
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"[..],
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
        &[0x16, 0x03, 0x01, 0x00, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff][..],
        &[0u8; 64][..],
    ] {
        let mut stream = TcpStream::connect(running.addr).await.unwrap();
        stream.write_all(garbage).await.unwrap();
        let got = within("the garbage's close", read_to_close(&mut stream)).await;
        // At most a TLS alert (content type 21), never an HTTP answer.
        assert!(got.is_empty() || got[0] == 21, "sent {got:?}");
    }
    // The open TLS connection never noticed.
    let response = client.get("/poll/news").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(running.stats.timed_out(), 0);
    stop(running).await;
}
