//! What Autobahn|Testsuite (`cargo xtask autobahn`) found in push-ws, each
//! pinned over real TCP with a real client (tokio-tungstenite), and the
//! echo endpoint it tests through.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../../tests/support/mod.rs"]
mod support;
// This crate depends on tungstenite itself, which makes one of its paths
// longer than needed here.
#[allow(unused_qualifications)]
#[path = "../../../tests/support/ws.rs"]
mod ws_support;

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use push_core::{ChannelName, Hub, MemoryHub, MemoryHubConfig, Publication};
use push_ws::{Endpoint, WsConfig, WsHandler};
use support::{Server, until, within};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, client_async};
use ws_support::{close_code, next_json, open};

/// Settings that never fire within a test.
const NEVER: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn the_echo_endpoint_echoes_text_and_binary() {
    let handler = WsHandler::new(
        MemoryHub::new(),
        WsConfig::default().with_endpoint(Endpoint::Echo),
    );
    let server = Server::start(handler.clone()).await;
    let mut ws = open(server.addr, "/anything", &[]).await.unwrap();
    ws.send(Message::text("héllo")).await.unwrap();
    ws.send(Message::binary(vec![0xff, 0, 1])).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        match within("an echo", ws.next()).await {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(message)) => got.push(message),
            other => panic!("expected an echo, got {other:?}"),
        }
    }
    assert_eq!(
        got,
        [Message::text("héllo"), Message::binary(vec![0xff, 0, 1])]
    );
}

/// Autobahn 9.1.3 and after (1 MiB and larger echoes) were closed with 1001
/// "the peer stopped reading": tungstenite refuses any frame larger than
/// its write-buffer bound, even with nothing else waiting. So was every
/// subscriber of a hub message whose frame passes `max_write_buffer_bytes`.
#[tokio::test]
async fn a_message_larger_than_the_write_buffer_reaches_a_reader() {
    let data = "x".repeat(3 << 20);
    let hub = MemoryHub::with_config(
        MemoryHubConfig::default()
            .with_max_message_bytes(4 << 20)
            .with_max_bytes(16 << 20),
    )
    .unwrap();
    let config = WsConfig::default();
    assert!(config.max_write_buffer_bytes < data.len());
    let server = Server::start(WsHandler::new(hub.clone(), config)).await;
    let mut ws = open(server.addr, "/ws/c?since=earliest", &[])
        .await
        .unwrap();
    let channel: ChannelName = "c".parse().unwrap();
    hub.publish(&channel, Publication::new(data.clone()))
        .await
        .unwrap();
    let envelope = next_json(&mut ws).await;
    assert_eq!(envelope["data"].as_str().map(str::len), Some(data.len()));
}

/// The bound still holds for what piles up behind a waiting write: a
/// client that sends and never reads is closed once its echoes pass
/// `max_write_buffer_bytes` beyond what the kernel holds (the write timeout
/// never fires here).
#[tokio::test]
async fn what_piles_up_for_a_non_reader_stays_bounded() {
    let config = WsConfig::default()
        .with_endpoint(Endpoint::Echo)
        .with_write_timeout(NEVER)
        .with_heartbeat(NEVER, NEVER);
    let handler = WsHandler::new(MemoryHub::new(), config);
    let server = Server::start(handler.clone()).await;
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4 << 10).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let (mut ws, _) = client_async(
        format!("ws://{}/echo", server.addr),
        MaybeTlsStream::Plain(stream),
    )
    .await
    .unwrap();
    let chunk = vec![7u8; 64 << 10];
    let mut sent = 0usize;
    // The kernel's buffers hold some MiB; a server without the bound would
    // take all 64.
    while handler.connections() > 0 && sent < 64 << 20 {
        if within("a send", ws.send(Message::binary(chunk.clone())))
            .await
            .is_err()
        {
            break;
        }
        sent += chunk.len();
    }
    until("the non-reader to be closed", || handler.connections() == 0).await;
    assert!(sent < 64 << 20, "sent {sent} bytes and the socket is open");
}

/// Autobahn 6.4.3 and 6.4.4 were NON-STRICT: a text frame whose invalid
/// UTF-8 arrives before the rest of the frame was failed only once all of
/// it had come (tungstenite checks a whole frame). Now the byte that makes
/// it invalid closes the socket with 1007, with the frame unfinished.
#[tokio::test]
async fn invalid_text_closes_before_the_frame_is_finished() {
    let endpoints = [
        (WsConfig::default(), "/ws/c", None),
        (
            WsConfig::commands(),
            "/ws",
            Some(("sec-websocket-protocol", "push.v1")),
        ),
        (WsConfig::default().with_endpoint(Endpoint::Echo), "/", None),
    ];
    for (config, path, header) in endpoints {
        let handler = WsHandler::new(MemoryHub::new(), config);
        let server = Server::start(handler.clone()).await;
        let headers: Vec<_> = header.into_iter().collect();
        let mut ws = open(server.addr, path, &headers).await.unwrap();
        // A masked text frame of 100 bytes, of which only the first 16
        // are sent: "κόσμε", then U+110000's first two bytes (no character
        // starts so).
        let payload = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80e";
        let mask = [1u8, 2, 3, 4];
        let mut wire = vec![0x81, 0x80 | 100];
        wire.extend_from_slice(&mask);
        wire.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        let MaybeTlsStream::Plain(tcp) = ws.get_mut() else {
            panic!("a plain socket")
        };
        tcp.write_all(&wire).await.unwrap();
        assert_eq!(close_code(&mut ws).await, CloseCode::Invalid);
        until("the socket to close", || handler.connections() == 0).await;
    }
}
