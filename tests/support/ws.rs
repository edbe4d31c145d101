//! WebSocket helpers for the tests that have tokio-tungstenite (included
//! with `#[path = …] mod ws_support;` next to `mod support;`).
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::net::SocketAddr;

use futures_util::StreamExt as _;
use http::StatusCode;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::support::within;

/// A client socket.
pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// Opens `ws://addr/path` with `headers`; the handshake's status when it is
/// refused.
pub async fn open(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Ws, StatusCode> {
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(response)) => Err(response.status()),
        Err(other) => panic!("{other}"),
    }
}

/// The next text frame, as JSON (pings and pongs skipped).
pub async fn next_json(ws: &mut Ws) -> serde_json::Value {
    loop {
        match within("a WebSocket message", ws.next()).await {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(text.as_str()).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// The code of the close frame that comes next (other frames skipped).
pub async fn close_code(ws: &mut Ws) -> CloseCode {
    loop {
        match within("a close frame", ws.next()).await {
            Some(Ok(Message::Close(Some(frame)))) => return frame.code,
            Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// The code of the close frame that comes next (other frames skipped), once
/// the close handshake is finished: the client's reply goes out as it reads
/// on, to the end of the stream.
pub async fn close_code_to_the_end(ws: &mut Ws) -> CloseCode {
    let code = close_code(ws).await;
    while let Some(Ok(_)) = within("the end", ws.next()).await {}
    code
}

/// The next text frame as the server wrote it (pings and pongs skipped).
pub async fn next_text(ws: &mut Ws) -> String {
    loop {
        match within("a text frame", ws.next()).await {
            Some(Ok(Message::Text(text))) => return text.as_str().to_owned(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}
