//! Running a service on a listener (feature `serve`): HTTP/1.1 and HTTP/2
//! (feature `http2`) on one port, over TLS (feature `tls`) or not, with
//! WebSocket upgrades (RFC 6455 and RFC 8441), a large accept backlog, a
//! deadline on every connection until it is useful, connection limits that
//! shed idle connections before refusing anyone, and a graceful shutdown
//! that really ends streams and sockets.

mod config;
mod conn;
mod shutdown;
#[cfg(feature = "tls")]
mod tls;

pub use self::config::{ServeConfig, ServeStats};
pub use self::shutdown::Shutdown;

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::Service;
#[cfg(feature = "http2")]
use hyper_util::rt::TokioExecutor;
use hyper_util::rt::{TokioIo, TokioTimer};
#[cfg(feature = "http2")]
use hyper_util::server::conn::auto;
use push_core::Backoff;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::conn::{Conn, Counted, IdleQueue, Tracked, Verdict};

/// What an HTTP/2 client sends first.
#[cfg(feature = "http2")]
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The deadlines every connection's watch reads.
#[derive(Debug)]
struct Timeouts {
    header: Duration,
    idle: Duration,
    write: Duration,
}

/// What every connection of one [`serve`] shares.
#[derive(Debug)]
struct Shared {
    stats: Arc<ServeStats>,
    idle: IdleQueue,
    timeouts: Timeouts,
    /// Connections open per address, when they are limited.
    per_ip: Option<(usize, Mutex<HashMap<IpAddr, usize>>)>,
    /// The instant connection times are counted from, in milliseconds.
    base: Instant,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// The instant `allowed` after `since_ms`, saturating far in the future.
    fn instant(&self, since_ms: u64, allowed: Duration) -> Instant {
        let at = Duration::from_millis(since_ms).saturating_add(allowed);
        self.base
            .checked_add(at)
            .unwrap_or_else(|| far_future(self.base))
    }

    /// Counts a connection from `peer`; `false` when it has its maximum.
    fn admit_peer(&self, peer: IpAddr) -> bool {
        let Some((max, counts)) = &self.per_ip else {
            return true;
        };
        let mut counts = counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(peer).or_insert(0);
        if *count >= *max {
            return false;
        }
        *count += 1;
        true
    }

    fn release_peer(&self, peer: IpAddr) {
        let Some((_, counts)) = &self.per_ip else {
            return;
        };
        let mut counts = counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&peer) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&peer);
            }
        }
    }
}

/// About thirty years from `base`: as far as any deadline needs to go.
fn far_future(base: Instant) -> Instant {
    base.checked_add(Duration::from_secs(86_400 * 365 * 30))
        .unwrap_or(base)
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

/// How long accept waits after running out of file descriptors, at first
/// and at most.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));
/// Accept errors are logged at most once per this interval.
const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// The most refusals being written at once; past it a refused connection
/// is just closed.
const MAX_REFUSING: usize = 64;
/// How long a refusal may take to write and drain.
const REFUSAL_TIME: Duration = Duration::from_secs(1);
/// How long a connection closed gracefully for being idle may take.
const IDLE_CLOSE_TIME: Duration = Duration::from_secs(1);

/// Serves `service` on every connection `listener` accepts until `shutdown`
/// is triggered, then shuts down gracefully: stops accepting, ends event
/// streams (with a `retry:` hint), WebSockets (close 1001) and held long polls
/// (answered), lets requests in flight (a publish, say) finish, and waits for
/// all of it up to [`ServeConfig::grace`]; what is left then is dropped.
///
/// HTTP/1.1 and HTTP/2 (feature `http2`) share the port: the first bytes
/// decide (HTTP/2 with prior knowledge), or over TLS
/// ([`ServeConfig::with_tls`], feature `tls`) ALPN does; each connection is
/// then hyper's plain HTTP/1 or HTTP/2 connection (lighter than a connection
/// that could be either), with upgrades on, RFC 8441's extended CONNECT on,
/// and `TCP_NODELAY`. Each
/// connection keeps to the deadlines and limits of [`ServeConfig`]; an
/// HTTP/1.1 request without exactly one valid `Host` gets `400` (RFC 9112).
/// Out of file descriptors, accepting backs off (and closes the connection
/// idle the longest) instead of spinning.
///
/// # Errors
/// None yet: accept errors are waited out.
///
/// ```no_run
/// use push_live::{MemoryHub, Router, RouterConfig, ServeConfig};
///
/// # #[tokio::main]
/// # async fn main() -> std::io::Result<()> {
/// let router = Router::new(MemoryHub::new(), RouterConfig::default().with_publish(true));
/// let shutdown = router.shutdown();
/// let listener = push_live::bind("127.0.0.1:8080".parse().unwrap(), 4096)?;
/// let stop = shutdown.clone();
/// tokio::spawn(async move {
///     let _ = tokio::signal::ctrl_c().await;
///     stop.trigger();
/// });
/// push_live::serve(listener, router, shutdown, ServeConfig::default(), None).await
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
    B::Data: Send + From<Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let shared = Arc::new(Shared {
        stats: stats.unwrap_or_default(),
        idle: IdleQueue::default(),
        timeouts: Timeouts {
            header: config.header_timeout,
            idle: config.idle_timeout,
            write: config.write_timeout,
        },
        per_ip: config
            .max_connections_per_ip
            .map(|max| (max, Mutex::new(HashMap::new()))),
        base: Instant::now(),
    });
    let builders = Arc::new(Builders::new(&config));
    let refusing = Arc::new(AtomicUsize::new(0));
    let mut connections = JoinSet::new();
    let mut backoff = Backoff::new(ACCEPT_BACKOFF.0, ACCEPT_BACKOFF.1);
    let mut accept_errors = AcceptErrors::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.triggered() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                let exhausted = is_out_of_resources(&err);
                accept_errors.note(&err, exhausted);
                if exhausted {
                    // Free a descriptor for the client waiting in the backlog.
                    if shared.idle.shed_one() {
                        shared.stats.shed.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::select! {
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                        () = shutdown.triggered() => break,
                    }
                }
                continue;
            }
        };
        backoff.reset();
        shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
        let (addr, peer) = (peer, peer.ip());
        let at_limit = config
            .max_connections
            .is_some_and(|max| shared.stats.open_connections() >= max);
        let refusal = if !shared.admit_peer(peer) {
            Some(Refusal::PerAddress)
        } else if at_limit && !shared.idle.shed_one() {
            shared.release_peer(peer);
            Some(Refusal::Full)
        } else {
            if at_limit {
                shared.stats.shed.fetch_add(1, Ordering::Relaxed);
            }
            None
        };
        if let Some(refusal) = refusal {
            shared.stats.refused.fetch_add(1, Ordering::Relaxed);
            // A TLS client could not read a plain answer, and a handshake
            // for a refusal is the work the limit is there to spare.
            if !builders.is_tls() {
                refuse(&mut connections, &refusing, stream, refusal);
            }
        } else {
            let _ = stream.set_nodelay(true);
            let conn = Conn::open(&shared, addr, shared.per_ip.as_ref().map(|_| peer));
            connections.spawn(serve_connection(
                stream,
                service.clone(),
                conn,
                builders.clone(),
                shutdown.token().clone(),
            ));
        }
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

/// Whether an accept error means the process (or system) is out of
/// descriptors or memory: waiting helps, retrying at once does not.
fn is_out_of_resources(err: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM on Linux and the BSDs.
    matches!(err.raw_os_error(), Some(23 | 24 | 55 | 105 | 12))
        || err.kind() == io::ErrorKind::OutOfMemory
}

/// Logs accept errors once per [`ACCEPT_LOG_INTERVAL`], with how many there
/// were, instead of a line for each.
#[derive(Debug, Default)]
struct AcceptErrors {
    logged_at: Option<Instant>,
    unlogged: u64,
}

impl AcceptErrors {
    fn note(&mut self, err: &io::Error, exhausted: bool) {
        self.unlogged += 1;
        let due = self
            .logged_at
            .is_none_or(|at| at.elapsed() >= ACCEPT_LOG_INTERVAL);
        if !due {
            return;
        }
        let count = std::mem::take(&mut self.unlogged);
        self.logged_at = Some(Instant::now());
        if exhausted {
            tracing::warn!(%err, count, "accept failed: out of file descriptors; backing off and closing idle connections (raise the open-files limit, or set a connection limit below it)");
        } else {
            tracing::debug!(%err, count, "accept failed");
        }
    }
}

/// Why a new connection is turned away.
#[derive(Clone, Copy, Debug)]
enum Refusal {
    /// At the connection limit, with nothing idle to close.
    Full,
    /// Its address has its maximum.
    PerAddress,
}

/// Answers a refused connection with a short HTTP/1.1 error and closes it,
/// reading what it sent meanwhile so that the close does not reset the
/// answer away. At most [`MAX_REFUSING`] at once; past that, just closes.
fn refuse(
    connections: &mut JoinSet<()>,
    refusing: &Arc<AtomicUsize>,
    mut stream: TcpStream,
    refusal: Refusal,
) {
    if refusing.fetch_add(1, Ordering::AcqRel) >= MAX_REFUSING {
        refusing.fetch_sub(1, Ordering::AcqRel);
        return;
    }
    let refusing = refusing.clone();
    connections.spawn(async move {
        let (status, message) = match refusal {
            Refusal::Full => (
                "503 Service Unavailable",
                "the server is at its connection limit: try again shortly",
            ),
            Refusal::PerAddress => (
                "429 Too Many Requests",
                "too many connections from this address",
            ),
        };
        let body = push_core::wire::json::error("too_many_connections", message);
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncache-control: no-store\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let _ = tokio::time::timeout(REFUSAL_TIME, async {
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(&body).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 1024];
            while stream.read(&mut sink).await? > 0 {}
            io::Result::Ok(())
        })
        .await;
        refusing.fetch_sub(1, Ordering::AcqRel);
    });
}

/// How each connection is set up, made once from the config: TLS (when
/// configured) and the HTTP/1 and HTTP/2 connection builders.
struct Builders {
    #[cfg(feature = "tls")]
    tls: Option<tokio_rustls::TlsAcceptor>,
    http1: hyper::server::conn::http1::Builder,
    #[cfg(feature = "http2")]
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
    #[cfg(feature = "http2")]
    auto: auto::Builder<TokioExecutor>,
}

impl Builders {
    fn new(config: &ServeConfig) -> Self {
        // Our own watch keeps the deadlines; hyper's header timer (which
        // starts when a connection goes idle) only backs it up.
        let header_backstop = config
            .idle_timeout
            .saturating_add(config.header_timeout)
            .min(Duration::from_secs(86_400 * 365));
        let max_buf = config.max_header_bytes.max(8 << 10);
        // hyper's builders and the auto builder's halves are different types
        // with the same methods: one list of settings for both.
        macro_rules! http1 {
            ($builder:expr) => {
                $builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_backstop)
                    .max_buf_size(max_buf)
            };
        }
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1!(http1);
        #[cfg(feature = "http2")]
        let (http2, auto) = {
            let max_list = u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX);
            let ping = config
                .http2_ping_interval
                .min(Duration::from_secs(86_400 * 365));
            let ping_timeout = config
                .http2_ping_timeout
                .min(Duration::from_secs(86_400 * 365));
            macro_rules! http2 {
                ($builder:expr) => {
                    $builder
                        .timer(TokioTimer::new())
                        .enable_connect_protocol()
                        .max_header_list_size(max_list)
                        .keep_alive_interval(ping)
                        .keep_alive_timeout(ping_timeout)
                        // Request bodies only matter to publishing: the spec's
                        // windows, not hyper's 1 MiB, bound what a client can
                        // make us hold.
                        .initial_stream_window_size(HTTP2_WINDOW)
                        .initial_connection_window_size(4 * HTTP2_WINDOW)
                };
            }
            let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            http2!(http2);
            let mut auto = auto::Builder::new(TokioExecutor::new());
            http1!(auto.http1());
            http2!(auto.http2());
            (http2, auto)
        };
        Builders {
            #[cfg(feature = "tls")]
            tls: config.tls.clone().map(tokio_rustls::TlsAcceptor::from),
            http1,
            #[cfg(feature = "http2")]
            http2,
            #[cfg(feature = "http2")]
            auto,
        }
    }

    /// Whether connections start with a TLS handshake.
    fn is_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }
}

/// The services [`serve`] runs, as its private functions name them (the
/// bounds of `serve` itself, once).
trait Served<B>:
    Service<Request<Incoming>, Response = Response<B>, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<S, B> Served<B> for S where
    S: Service<
            Request<Incoming>,
            Response = Response<B>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// The bodies of their answers.
trait ServedBody:
    Body<Data: Send + From<Bytes>, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
    + Send
    + 'static
{
}

impl<B> ServedBody for B where
    B: Body<Data: Send + From<Bytes>, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static
{
}

/// HTTP/2's initial stream window (the spec's default).
#[cfg(feature = "http2")]
const HTTP2_WINDOW: u32 = 65_535;

/// Which HTTP a connection speaks, as far as its first bytes (or ALPN) tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    /// HTTP/1.1 (and 1.0).
    Http1,
    /// HTTP/2.
    #[cfg(feature = "http2")]
    Http2,
    /// Too few bytes to tell: hyper's auto connection reads on and decides.
    #[cfg(feature = "http2")]
    Either,
}

/// Drives the boxed connection `$conn` until it ends, is shut down (`$token`:
/// HTTP/1 closes after the answer in flight, HTTP/2 sends GOAWAY) or its
/// watch gives a verdict: idle or shed connections are closed gracefully
/// (briefly), the others dropped.
macro_rules! drive {
    ($connection:expr, $watch:expr, $token:expr) => {{
        let mut connection = $connection;
        let verdict = tokio::select! {
            _ = connection.as_mut() => None,
            () = $token.cancelled() => {
                connection.as_mut().graceful_shutdown();
                let _ = connection.as_mut().await;
                None
            }
            verdict = $watch.watch() => Some(verdict),
        };
        if let Some(Verdict::Idle | Verdict::Shed) = verdict {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(IDLE_CLOSE_TIME, connection).await;
        }
        verdict
    }};
}

/// Serves one connection: over TLS, completes the handshake (within the
/// connection's first deadline) and lets ALPN pick hyper's plain HTTP/1 or
/// HTTP/2 connection; over TCP, waits (within that deadline) for its first
/// bytes to pick, falling back to the auto builder when too few have
/// arrived to tell.
async fn serve_connection<S, B>(
    stream: TcpStream,
    service: S,
    conn: Arc<Conn>,
    builders: Arc<Builders>,
    token: CancellationToken,
) where
    S: Served<B>,
    B: ServedBody,
{
    #[cfg(feature = "tls")]
    if let Some(acceptor) = &builders.tls {
        // Boxed: the handshake's state is large, and a plain connection's
        // task should not carry room for it.
        Box::pin(tls::serve(
            acceptor.clone(),
            stream,
            service,
            &conn,
            &builders,
            &token,
        ))
        .await;
        conn.task_done();
        return;
    }
    if let Some(protocol) = first_bytes(&stream, &conn, &token).await {
        let io = TokioIo::new(Counted::new(stream, conn.clone()));
        serve_http(io, protocol, service, &conn, &builders, &token).await;
    }
    conn.task_done();
}

/// Waits (within the connection's deadline) for a plain connection's first
/// bytes and tells its protocol from them (HTTP/2 with prior knowledge, or
/// HTTP/1); `None` when it closed, timed out or the server is shutting down
/// first.
async fn first_bytes(
    stream: &TcpStream,
    conn: &Conn,
    token: &CancellationToken,
) -> Option<Protocol> {
    #[cfg(feature = "http2")]
    let mut first = [0u8; H2_PREFACE.len()];
    #[cfg(not(feature = "http2"))]
    let mut first = [0u8; 1];
    let peeked = tokio::select! {
        peeked = stream.peek(&mut first) => peeked.ok(),
        verdict = conn.watch() => {
            note(conn, verdict);
            None
        }
        () = token.cancelled() => None,
    };
    let read = peeked.filter(|read| *read > 0)?;
    #[cfg(feature = "http2")]
    {
        if first[..read] != H2_PREFACE[..read] {
            Some(Protocol::Http1)
        } else if read == H2_PREFACE.len() {
            Some(Protocol::Http2)
        } else {
            Some(Protocol::Either)
        }
    }
    #[cfg(not(feature = "http2"))]
    {
        let _ = read;
        Some(Protocol::Http1)
    }
}

/// Serves HTTP on `io` (the counted socket, or TLS over it) with the
/// connection `protocol` names, under the connection's watch.
///
/// The connection is boxed once chosen: the task of every open connection
/// then holds a pointer rather than room for the largest of the three
/// (4.6 KiB inline, measured: 7 KiB of Pss per held event stream).
async fn serve_http<I, S, B>(
    io: TokioIo<I>,
    protocol: Protocol,
    service: S,
    conn: &Arc<Conn>,
    builders: &Builders,
    token: &CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Served<B>,
    B: ServedBody,
{
    let service = Tracked::new(service, conn.clone());
    let verdict = match protocol {
        Protocol::Http1 => drive!(
            Box::pin(builders.http1.serve_connection(io, service).with_upgrades()),
            conn,
            token
        ),
        #[cfg(feature = "http2")]
        Protocol::Http2 => {
            conn.http2();
            drive!(
                Box::pin(builders.http2.serve_connection(io, service)),
                conn,
                token
            )
        }
        #[cfg(feature = "http2")]
        Protocol::Either => drive!(
            Box::pin(builders.auto.serve_connection_with_upgrades(io, service)),
            conn,
            token
        ),
    };
    if let Some(verdict) = verdict {
        note(conn, verdict);
    }
}

/// Counts a connection closed by its watch.
fn note(conn: &Conn, verdict: Verdict) {
    let stats = conn.stats();
    match verdict {
        Verdict::Shed => {}
        Verdict::Idle | Verdict::HeaderTimeout | Verdict::WriteStalled => {
            stats.timed_out.fetch_add(1, Ordering::Relaxed);
        }
    }
    tracing::debug!(?verdict, "connection closed");
}
