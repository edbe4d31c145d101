//! Running a service on a listener: HTTP/1.1 and HTTP/2 on one port, with
//! WebSocket upgrades (RFC 6455 and RFC 8441), a large accept backlog, an
//! optional connection limit, and a graceful shutdown that really ends
//! streams and sockets.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What an HTTP/2 client sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The handle that shuts a push service down: cancel it (from a signal
/// handler, say) and [`serve`] stops accepting, ends every stream and socket
/// gracefully, waits for them up to its grace period, and returns.
///
/// Get one from [`Router::shutdown`](crate::Router::shutdown), or, for a
/// service of your own, make one and hand its [`token`](Self::token) to your
/// handlers' `with_shutdown` (and [`track`](Self::track) your WebSocket
/// handlers' `socket_tasks()`):
///
/// ```
/// use push::{MemoryHub, Shutdown};
/// use push::sse::{SseConfig, SseHandler};
///
/// let shutdown = Shutdown::new();
/// let sse = SseHandler::new(
///     MemoryHub::new(),
///     SseConfig::default().with_shutdown(shutdown.token().clone()),
/// );
/// # let _ = sse;
/// ```
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tasks: Vec<TaskTracker>,
}

impl Shutdown {
    /// A handle with a token of its own.
    pub fn new() -> Self {
        Shutdown::default()
    }

    pub(crate) fn with_token(token: CancellationToken) -> Self {
        Shutdown {
            token,
            tasks: Vec::new(),
        }
    }

    /// Makes [`serve`] also wait, on shutdown, for these tasks (a
    /// WebSocket handler's `socket_tasks()`: its sockets outlive their HTTP
    /// connections).
    pub fn track(&mut self, tasks: TaskTracker) {
        self.tasks.push(tasks);
    }

    /// Starts the shutdown.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Whether the shutdown has started.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves when the shutdown starts.
    pub async fn triggered(&self) {
        self.token.cancelled().await;
    }

    /// The token that is cancelled when the shutdown starts, for your own
    /// long-lived work.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Resolves once every task it tracks (each WebSocket) has ended.
    async fn tasks_done(&self) {
        for tasks in &self.tasks {
            tasks.close();
            tasks.wait().await;
        }
    }
}

/// How [`serve`] runs connections.
///
/// ```
/// use std::time::Duration;
/// use push::ServeConfig;
///
/// let config = ServeConfig::default().with_max_connections(10_000);
/// assert_eq!(config.grace, Duration::from_secs(10));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServeConfig {
    /// The most connections open at once (default: no limit). At the limit
    /// the server stops accepting, and new connections wait in the kernel's
    /// backlog until one closes.
    pub max_connections: Option<usize>,
    /// How long a shutdown waits for connections, streams and sockets to end
    /// before dropping the rest (default 10 s).
    pub grace: Duration,
    /// How long a client may take to send a request head (default 30 s).
    pub header_read_timeout: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            max_connections: None,
            grace: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
        }
    }
}

impl ServeConfig {
    /// Sets [`max_connections`](Self::max_connections) (at least 1).
    #[must_use]
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.max_connections = Some(max.max(1));
        self
    }

    /// Sets [`grace`](Self::grace).
    #[must_use]
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Sets [`header_read_timeout`](Self::header_read_timeout).
    #[must_use]
    pub fn with_header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }
}

/// Counters of a running [`serve`], for metrics.
#[derive(Debug, Default)]
pub struct ServeStats {
    open: AtomicUsize,
    accepted: AtomicU64,
    bytes_out: AtomicU64,
    bytes_in: AtomicU64,
}

impl ServeStats {
    /// Connections open now (an upgraded WebSocket counts until it closes).
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections accepted since the start.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Bytes written to clients since the start (everything: heads, bodies,
    /// frames).
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.load(Ordering::Relaxed)
    }

    /// Bytes read from clients since the start.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed)
    }
}

/// Binds a listener the way a push server needs one: `SO_REUSEADDR`, and a
/// listen backlog of `backlog` (tokio's `TcpListener::bind` uses 128, which
/// drops connections when thousands reconnect at once; the kernel caps it at
/// `net.core.somaxconn`).
///
/// # Errors
/// The socket could not be made, bound, or put to listening.
pub fn bind(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Serves `service` on every connection `listener` accepts until `shutdown`
/// is triggered, then shuts down gracefully: stops accepting, ends event
/// streams (with a `retry:` hint), WebSockets (close 1001) and held long polls
/// (answered), lets requests in flight (a publish, say) finish, and waits for
/// all of it up to [`ServeConfig::grace`]; what is left then is dropped.
///
/// HTTP/1.1 and HTTP/2 share the port: the first bytes decide (HTTP/2 with
/// prior knowledge), each connection is then hyper's plain HTTP/1 or HTTP/2
/// connection (lighter than a connection that could be either), with
/// upgrades on, RFC 8441's extended CONNECT on, and `TCP_NODELAY`.
///
/// # Errors
/// None yet: accept errors (out of file descriptors) are waited out.
///
/// ```no_run
/// use push::{MemoryHub, Router, RouterConfig, ServeConfig};
///
/// # #[tokio::main]
/// # async fn main() -> std::io::Result<()> {
/// let router = Router::new(MemoryHub::new(), RouterConfig::default().with_publish(true));
/// let shutdown = router.shutdown();
/// let listener = push::bind("127.0.0.1:8080".parse().unwrap(), 4096)?;
/// let stop = shutdown.clone();
/// tokio::spawn(async move {
///     let _ = tokio::signal::ctrl_c().await;
///     stop.trigger();
/// });
/// push::serve(listener, router, shutdown, ServeConfig::default(), None).await
/// # }
/// ```
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    shutdown: Shutdown,
    config: ServeConfig,
    stats: Option<Arc<ServeStats>>,
) -> io::Result<()>
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
    let stats = stats.unwrap_or_default();
    let limit = config
        .max_connections
        .map(|max| Arc::new(Semaphore::new(max)));
    let mut connections = JoinSet::new();
    loop {
        let permit = match &limit {
            Some(limit) => tokio::select! {
                permit = limit.clone().acquire_owned() => permit.ok(),
                () = shutdown.triggered() => break,
            },
            None => None,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of file descriptors, most likely: let some close.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.triggered() => break,
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let connection = serve_connection(
            stream,
            service.clone(),
            config.header_read_timeout,
            shutdown.token.clone(),
            stats.clone(),
        );
        let open = Open::new(&stats);
        connections.spawn(async move {
            let _open = open;
            let _permit = permit;
            connection.await;
        });
        // Reap what has finished, so that the set stays as small as what is open.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    tracing::info!("shutting down");
    let ended = tokio::time::timeout(config.grace, async {
        shutdown.tasks_done().await;
        while connections.join_next().await.is_some() {}
    })
    .await;
    if ended.is_err() {
        tracing::warn!(grace = ?config.grace, "shutdown grace period over: dropping what is left");
    }
    connections.shutdown().await;
    Ok(())
}

/// Counts an open connection for as long as its task lives.
struct Open(Arc<ServeStats>);

impl Open {
    fn new(stats: &Arc<ServeStats>) -> Self {
        stats.open.fetch_add(1, Ordering::Relaxed);
        Open(stats.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs the boxed connection `$conn` until it ends; when `$token` is
/// cancelled first, asks it to end gracefully (HTTP/1: after the response in
/// flight; HTTP/2: GOAWAY) and runs it on until it has.
macro_rules! run_gracefully {
    ($conn:expr, $token:expr) => {{
        let mut conn = $conn;
        tokio::select! {
            _ = conn.as_mut() => {}
            () = $token.cancelled() => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
    }};
}

/// Serves one connection: peeks at its first bytes to pick hyper's plain
/// HTTP/1 or HTTP/2 connection, falling back to the auto builder when too
/// few have arrived to tell.
///
/// Each connection is boxed once chosen: the task of every open connection
/// then holds a pointer rather than room for the largest of the three
/// (4.6 KiB inline, measured: 7 KiB of Pss per held event stream).
async fn serve_connection<S, B>(
    stream: TcpStream,
    service: S,
    header_read_timeout: Duration,
    token: CancellationToken,
    stats: Arc<ServeStats>,
) where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut first = [0u8; H2_PREFACE.len()];
    let Ok(read) = stream.peek(&mut first).await else {
        return;
    };
    let io = TokioIo::new(Counted { stream, stats });
    if read > 0 && first[..read] != H2_PREFACE[..read] {
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout);
        run_gracefully!(
            Box::pin(http1.serve_connection(io, service).with_upgrades()),
            token
        );
    } else if read == H2_PREFACE.len() {
        let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        http2.timer(TokioTimer::new()).enable_connect_protocol();
        run_gracefully!(Box::pin(http2.serve_connection(io, service)), token);
    } else {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .enable_connect_protocol();
        let conn = builder
            .serve_connection_with_upgrades(io, service)
            .into_owned();
        drop(builder);
        run_gracefully!(Box::pin(conn), token);
    }
}

pin_project_lite::pin_project! {
    /// A TCP stream that counts the bytes through it.
    struct Counted {
        #[pin]
        stream: TcpStream,
        stats: Arc<ServeStats>,
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.stream.poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before);
        this.stats
            .bytes_in
            .fetch_add(read as u64, Ordering::Relaxed);
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.stream.poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = &polled {
            this.stats
                .bytes_out
                .fetch_add(*written as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.stream.poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(written)) = &polled {
            this.stats
                .bytes_out
                .fetch_add(*written as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().stream.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().stream.poll_shutdown(cx)
    }
}
