//! Listening the same way for every Rust server in the bench: a large accept
//! backlog (tokio's default drops connections in bursts of thousands; bound
//! with `push_live::bind`), TCP_NODELAY on each connection, and upgrades
//! (WebSockets) enabled.

use std::convert::Infallible;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// The accept backlog: matches this machine's `somaxconn`.
pub(crate) const BACKLOG: u32 = 4096;

/// How a connection's HTTP version is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dispatch {
    /// hyper-util's auto builder: reads the first bytes and replays them
    /// through a `Rewind` wrapper.
    Auto,
    /// Peek at the first bytes without reading them, then serve with
    /// hyper's plain HTTP/1 or HTTP/2 connection (smaller, and lets hyper
    /// reuse its read buffer once a held request lets go of its head).
    Peek,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves `service` on every connection `listener` accepts, HTTP/1.1 and
/// HTTP/2, until the process ends.
pub(crate) async fn serve<S, B>(listener: TcpListener, service: S, dispatch: Dispatch)
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, most likely: let some close.
                eprintln!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        tokio::spawn(async move {
            if dispatch == Dispatch::Peek {
                let mut first = [0u8; H2_PREFACE.len()];
                let Ok(read) = stream.peek(&mut first).await else {
                    return;
                };
                if read > 0 && first[..read] != H2_PREFACE[..read] {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                    return;
                }
                if read == H2_PREFACE.len() {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    return;
                }
                // Too few bytes yet to tell: let the auto builder read on.
            }
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}
