//! Test support shared by every transport's tests (included with
//! `#[path = …] mod support;`): a real hyper server on 127.0.0.1, a plain
//! HTTP/1.1 and HTTP/2 client, and service wrappers that record or fail.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinSet;

/// The safety net for every wait in a test: generous, never the expected path.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Waits for `future`, failing the test with `what` after [`PATIENCE`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Waits until `condition` holds, yielding to the runtime between looks (for
/// state with no event to wait on, such as a counter), failing after
/// [`PATIENCE`].
pub async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    within(what, async {
        while !condition() {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

/// A hyper server (HTTP/1.1 and HTTP/2 on one port) on a real socket.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Serves `service` on a free port of 127.0.0.1.
    pub async fn start<S, B>(service: S) -> Server
    where
        S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        Self::start_at("127.0.0.1:0".parse().unwrap(), service).await
    }

    /// Serves `service` on `addr` (to restart a server on the same port).
    pub async fn start_at<S, B>(addr: SocketAddr, service: S) -> Server
    where
        S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let service = service.clone();
                        connections.spawn(async move {
                            let mut builder = auto::Builder::new(TokioExecutor::new());
                            // WebSockets over HTTP/2 (RFC 8441).
                            builder.http2().enable_connect_protocol();
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                }
            }
            // Dropping the set aborts every connection: the server is gone.
            connections.shutdown().await;
        });
        Server {
            addr,
            stop: Some(stop),
            task,
        }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.addr)
    }

    /// Stops accepting and closes every connection.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// One answer, fully read.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

/// Adds the `Host` every HTTP/1.1 client sends (hyper's connection-level
/// client does not), unless the test set one.
fn with_host<B>(addr: SocketAddr, mut request: Request<B>) -> Request<B> {
    if !request.headers().contains_key(http::header::HOST) {
        request
            .headers_mut()
            .insert(http::header::HOST, addr.to_string().parse().unwrap());
    }
    request
}

/// Sends `request` over a fresh HTTP/1.1 connection and reads the answer.
pub async fn send(addr: SocketAddr, request: Request<Empty<Bytes>>) -> Answer {
    let request = with_host(addr, request);
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(request).await.unwrap();
    read(response).await
}

/// Sends `request` over a fresh HTTP/2 (prior knowledge) connection.
pub async fn send_h2(addr: SocketAddr, request: Request<Empty<Bytes>>) -> Answer {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(request).await.unwrap();
    read(response).await
}

pub async fn read(response: Response<Incoming>) -> Answer {
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// `GET path_and_query` with `headers`.
pub async fn get(addr: SocketAddr, path_and_query: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = Request::get(format!("http://{addr}{path_and_query}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(addr, request.body(Empty::new()).unwrap()).await
}

/// `METHOD path` with `headers` and `body` over a fresh HTTP/1.1 connection.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Answer {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = with_host(addr, builder.body(Full::new(body.into())).unwrap());
    read(sender.send_request(request).await.unwrap()).await
}

/// Reads from `stream` into `seen` until it holds `needle`.
pub async fn read_until(stream: &mut TcpStream, seen: &mut String, needle: &str) {
    use tokio::io::AsyncReadExt as _;
    within(&format!("{needle:?} on the stream"), async {
        let mut buffer = [0u8; 4096];
        while !seen.contains(needle) {
            let read = stream.read(&mut buffer).await.unwrap();
            assert!(read > 0, "closed before {needle:?}: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buffer[..read]));
        }
    })
    .await;
}

/// Reads `stream` to its end (the peer closed it); what came.
pub async fn read_to_end(stream: &mut TcpStream) -> String {
    use tokio::io::AsyncReadExt as _;
    let mut rest = Vec::new();
    within("the end of the stream", stream.read_to_end(&mut rest))
        .await
        .unwrap();
    String::from_utf8(rest).unwrap()
}

/// Opens an event stream by hand (`headers`: extra lines, each ending in
/// CRLF); the socket, and what came up to the end of the response head.
pub async fn open_sse(addr: SocketAddr, path: &str, headers: &str) -> (TcpStream, String) {
    use tokio::io::AsyncWriteExt as _;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: test\r\n{headers}\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut seen = String::new();
    read_until(&mut stream, &mut seen, "\r\n\r\n").await;
    (stream, seen)
}

/// What every transport's client yields.
pub type ClientItem = Result<push_core::Item, push_http::ClientError>;

/// A client driven in a task of its own, as an application would drive it
/// (a client only works while it is polled): its items, as a stream.
pub struct Driven(tokio::sync::mpsc::UnboundedReceiver<ClientItem>);

impl futures_util::Stream for Driven {
    type Item = ClientItem;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<ClientItem>> {
        self.0.poll_recv(cx)
    }
}

pub fn drive<C>(mut client: C) -> Driven
where
    C: futures_util::Stream<Item = ClientItem> + Unpin + Send + 'static,
{
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(item) = futures_util::StreamExt::next(&mut client).await {
            if sender.send(item).is_err() {
                return;
            }
        }
    });
    Driven(receiver)
}

/// The next item of a client's stream, past passing errors; a fatal error or
/// the end of the stream fails the test.
pub async fn next_item<C>(client: &mut C) -> push_core::Item
where
    C: futures_util::Stream<Item = ClientItem> + Unpin,
{
    loop {
        match within("an item", futures_util::StreamExt::next(client)).await {
            Some(Ok(item)) => return item,
            Some(Err(e)) if !e.is_fatal() => continue,
            other => panic!("expected an item, got {other:?}"),
        }
    }
}

/// The data of the next item, which must be a message.
pub async fn next_data<C>(client: &mut C) -> String
where
    C: futures_util::Stream<Item = ClientItem> + Unpin,
{
    match next_item(client).await {
        push_core::Item::Message(m) => String::from_utf8(m.data().to_vec()).unwrap(),
        other => panic!("expected a message, got {other:?}"),
    }
}

/// What a [`Recording`] service saw: the status of each answer, in order.
#[derive(Clone, Default)]
pub struct Log {
    statuses: Arc<Mutex<Vec<StatusCode>>>,
    changed: Arc<Notify>,
}

impl Log {
    pub fn statuses(&self) -> Vec<StatusCode> {
        self.statuses.lock().unwrap().clone()
    }

    /// Waits until at least `n` answers were given.
    pub async fn wait_for(&self, n: usize) -> Vec<StatusCode> {
        within(&format!("{n} answers"), async {
            loop {
                let notified = self.changed.notified();
                let statuses = self.statuses();
                if statuses.len() >= n {
                    return statuses;
                }
                notified.await;
            }
        })
        .await
    }
}

/// Wraps a service: answers with `503` to the first `fail_first` requests,
/// and logs every answer's status.
#[derive(Clone)]
pub struct Recording<S> {
    inner: S,
    pub log: Log,
    failures_left: Arc<AtomicUsize>,
}

impl<S> Recording<S> {
    pub fn new(inner: S) -> Self {
        Self::failing(inner, 0)
    }

    pub fn failing(inner: S, fail_first: usize) -> Self {
        Recording {
            inner,
            log: Log::default(),
            failures_left: Arc::new(AtomicUsize::new(fail_first)),
        }
    }
}

impl<S> Service<Request<Incoming>> for Recording<S>
where
    S: Service<Request<Incoming>, Response = Response<Full<Bytes>>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let log = self.log.clone();
        let fail = self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let inner = (!fail).then(|| self.inner.call(request));
        Box::pin(async move {
            let response = match inner {
                Some(inner) => inner.await?,
                None => {
                    let mut response = Response::new(Full::new(Bytes::from_static(
                        br#"{"error":{"code":"unavailable","message":"failing on purpose"}}"#,
                    )));
                    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                    response
                }
            };
            log.statuses.lock().unwrap().push(response.status());
            log.changed.notify_waiters();
            Ok(response)
        })
    }
}

/// Where the third-party npm packages are (`PUSH_TEST_NODE_PATH`, set by
/// `cargo xtask test`), or `None` after saying loudly that `what` is
/// skipped; under `CI=true` a missing package fails instead.
pub fn node_path(what: &str) -> Option<String> {
    match std::env::var("PUSH_TEST_NODE_PATH") {
        Ok(path) if !path.is_empty() => Some(path),
        _ if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            panic!("PUSH_TEST_NODE_PATH is not set under CI=true: run `cargo xtask test`")
        }
        _ => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!(
                    "\n*** SKIPPED: {what} is not installed.\n\
                     *** `cargo xtask test` installs it (it needs node and npm: \
                     `apt-get install -y nodejs npm`).\n"
                );
            }
            None
        }
    }
}
