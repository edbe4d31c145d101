//! One connection's life: what it is doing (requests in flight, reading a
//! head, a write that makes no progress), the deadline that follows from
//! that, and the wrappers that tell it (the counted socket, the tracked
//! service and body).

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
#[cfg(feature = "http2")]
use http::Method;
use http::header::{CACHE_CONTROL, CONNECTION, CONTENT_TYPE, HOST};
use http::{HeaderValue, Request, Response, StatusCode, Version};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::Service;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until};

use super::Shared;

/// Flags of a [`Conn`].
const SHED: u8 = 1;
const TASK_DONE: u8 = 2;
const UPGRADED: u8 = 4;
const SERVED: u8 = 8;
const HTTP2: u8 = 16;

/// Why a connection's watch ended: what to do with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Idle past the idle timeout: close it gracefully (HTTP/2: GOAWAY).
    Idle,
    /// Idle, and its slot is wanted by a new client: close it gracefully.
    Shed,
    /// No complete request head in time: drop it.
    HeaderTimeout,
    /// A write made no progress in time: the peer stopped reading; drop it.
    WriteStalled,
}

/// One accepted connection, shared by its task, its socket (which an
/// upgraded WebSocket keeps), its requests in flight and the idle queue.
/// Counted open (and per address) for as long as it lives.
pub(super) struct Conn {
    shared: Arc<Shared>,
    peer: Option<IpAddr>,
    /// The peer's address, put in every request's extensions.
    addr: SocketAddr,
    in_flight: AtomicU32,
    /// Bumped each time the connection goes idle: an idle-queue entry is
    /// current only while it matches.
    idle_generation: AtomicU64,
    /// Milliseconds (since `Shared::base`) at which it last went idle, or
    /// was accepted.
    idle_since: AtomicU64,
    /// Milliseconds + 1 at which bytes of a next request arrived while it
    /// was idle (HTTP/1); 0 for none.
    head_started: AtomicU64,
    /// Milliseconds + 1 since which a write has been pending; 0 for none.
    write_blocked_since: AtomicU64,
    flags: AtomicU8,
    /// Notified when it goes idle, a write blocks, or it is shed.
    changed: Notify,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("peer", &self.peer)
            .field("in_flight", &self.in_flight)
            .field("flags", &self.flags)
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// A new connection, counted open and queued as idle (it has sent
    /// nothing yet).
    pub(super) fn open(shared: &Arc<Shared>, addr: SocketAddr, peer: Option<IpAddr>) -> Arc<Conn> {
        shared.stats.open.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            shared: shared.clone(),
            peer,
            addr,
            in_flight: AtomicU32::new(0),
            idle_generation: AtomicU64::new(0),
            idle_since: AtomicU64::new(shared.now_ms()),
            head_started: AtomicU64::new(0),
            write_blocked_since: AtomicU64::new(0),
            flags: AtomicU8::new(0),
            changed: Notify::new(),
        });
        shared.idle.push(&conn, 0);
        conn
    }

    pub(super) fn stats(&self) -> &super::ServeStats {
        &self.shared.stats
    }

    fn flag(&self, flag: u8) -> bool {
        self.flags.load(Ordering::Acquire) & flag != 0
    }

    fn set(&self, flag: u8) -> bool {
        self.flags.fetch_or(flag, Ordering::AcqRel) & flag == 0
    }

    /// Marks it an HTTP/2 connection: bytes while idle are frames (PING,
    /// SETTINGS, …), not the start of a request head.
    #[cfg(feature = "http2")]
    pub(super) fn http2(&self) {
        self.set(HTTP2);
    }

    /// Marks its task ended: an upgraded socket may still hold it, but
    /// there is nothing left to shed.
    pub(super) fn task_done(&self) {
        self.set(TASK_DONE);
    }

    /// Asks its task to close it, if it is still idle since `generation`.
    /// Returns whether it was.
    fn shed(&self, generation: u64) -> bool {
        let idle = self.in_flight.load(Ordering::Acquire) == 0
            && self.idle_generation.load(Ordering::Acquire) == generation
            && !self.flag(TASK_DONE);
        if idle && self.set(SHED) {
            self.changed.notify_waiters();
            return true;
        }
        false
    }

    /// Whether an idle-queue entry of `generation` still names an idle,
    /// sheddable connection.
    fn is_idle_since(&self, generation: u64) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
            && self.idle_generation.load(Ordering::Acquire) == generation
            && !self.flag(TASK_DONE | SHED)
    }

    /// A request arrived.
    fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(0, Ordering::Relaxed);
        self.set(SERVED);
    }

    /// A request (its answer) ended.
    fn end(self: &Arc<Self>) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle_since
                .store(self.shared.now_ms(), Ordering::Relaxed);
            self.head_started.store(0, Ordering::Relaxed);
            let generation = self.idle_generation.fetch_add(1, Ordering::AcqRel) + 1;
            self.shared.idle.push(self, generation);
            self.changed.notify_waiters();
        }
    }

    /// Resolves with what to do with the connection: when it has been idle
    /// too long, took too long over a request head, stalled a write, or was
    /// shed. Never resolves while it is busy and its writes progress.
    pub(super) async fn watch(&self) -> Verdict {
        let config = &self.shared.timeouts;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.flag(SHED) {
                return Verdict::Shed;
            }
            let deadline = if self.in_flight.load(Ordering::Acquire) > 0 {
                match self.write_blocked_since.load(Ordering::Acquire) {
                    0 => None,
                    since => Some((since - 1, config.write, Verdict::WriteStalled)),
                }
            } else {
                let idle_since = self.idle_since.load(Ordering::Relaxed);
                match self.head_started.load(Ordering::Relaxed) {
                    _ if !self.flag(SERVED) => {
                        Some((idle_since, config.header, Verdict::HeaderTimeout))
                    }
                    0 => Some((idle_since, config.idle, Verdict::Idle)),
                    started => Some((started - 1, config.header, Verdict::HeaderTimeout)),
                }
            };
            let Some((since, allowed, verdict)) = deadline else {
                changed.await;
                continue;
            };
            let at = self.shared.instant(since, allowed);
            if Instant::now() >= at {
                return verdict;
            }
            tokio::select! {
                () = &mut changed => {}
                () = sleep_until(at) => {}
            }
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let stats = &self.shared.stats;
        stats.open.fetch_sub(1, Ordering::Relaxed);
        if self.flag(UPGRADED) {
            stats.upgraded.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(peer) = self.peer {
            self.shared.release_peer(peer);
        }
    }
}

/// The connections that may be idle, longest idle first: each time one goes
/// idle it is queued with its generation; an entry whose connection has
/// since been busy (or is gone) is stale and skipped.
#[derive(Debug, Default)]
pub(super) struct IdleQueue {
    entries: Mutex<VecDeque<(Weak<Conn>, u64)>>,
}

impl IdleQueue {
    fn push(&self, conn: &Arc<Conn>, generation: u64) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.push_back((Arc::downgrade(conn), generation));
        // Busy connections leave stale entries behind: drop them once they
        // outnumber the connections, so the queue stays as long as what is
        // open (amortised O(1) per push).
        let open = conn.shared.stats.open.load(Ordering::Relaxed);
        if entries.len() > 2 * open + 64 {
            entries.retain(|(conn, generation)| {
                conn.upgrade()
                    .is_some_and(|conn| conn.is_idle_since(*generation))
            });
        }
    }

    /// Closes the connection idle the longest; returns whether there was one.
    pub(super) fn shed_one(&self) -> bool {
        loop {
            let entry = self
                .entries
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop_front();
            let Some((conn, generation)) = entry else {
                return false;
            };
            if conn.upgrade().is_some_and(|conn| conn.shed(generation)) {
                return true;
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The TCP stream of a connection (under TLS, if any): counts the bytes
    /// through it, notes
    /// when a next request starts arriving and when a write stops
    /// progressing, and keeps the connection counted open for as long as
    /// it lives (an upgraded WebSocket keeps it).
    pub(super) struct Counted {
        #[pin]
        stream: TcpStream,
        conn: Arc<Conn>,
    }
}

impl Counted {
    pub(super) fn new(stream: TcpStream, conn: Arc<Conn>) -> Self {
        Counted { stream, conn }
    }

    fn wrote(conn: &Conn, polled: &Poll<io::Result<usize>>) {
        match polled {
            Poll::Ready(Ok(written)) => {
                conn.shared
                    .stats
                    .bytes_out
                    .fetch_add(*written as u64, Ordering::Relaxed);
                conn.write_blocked_since.store(0, Ordering::Relaxed);
            }
            Poll::Ready(Err(_)) => {}
            Poll::Pending => {
                if conn.write_blocked_since.load(Ordering::Relaxed) == 0 {
                    conn.write_blocked_since
                        .store(conn.shared.now_ms() + 1, Ordering::Release);
                    conn.changed.notify_waiters();
                }
            }
        }
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
        if read > 0 {
            let conn = &**this.conn;
            conn.shared
                .stats
                .bytes_in
                .fetch_add(read as u64, Ordering::Relaxed);
            if conn.in_flight.load(Ordering::Relaxed) == 0
                && conn.head_started.load(Ordering::Relaxed) == 0
                && !conn.flag(HTTP2)
            {
                // A next request is arriving: its own deadline runs now.
                conn.head_started
                    .store(conn.shared.now_ms() + 1, Ordering::Relaxed);
                conn.changed.notify_waiters();
            }
        }
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
        Self::wrote(this.conn, &polled);
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.stream.poll_write_vectored(cx, bufs);
        Self::wrote(this.conn, &polled);
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

/// A request in flight on a connection, until its answer's body ends.
struct InFlight(Option<Arc<Conn>>);

impl InFlight {
    fn new(conn: &Arc<Conn>) -> Self {
        conn.begin();
        InFlight(Some(conn.clone()))
    }

    /// The request became a tunnel (a WebSocket): the connection stays busy
    /// for good.
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            conn.end();
        }
    }
}

/// A service that tells its connection when requests are in flight, and
/// refuses HTTP/1.1 requests without exactly one valid `Host` (RFC 9112
/// §3.2) before they reach the service.
#[derive(Clone)]
pub(super) struct Tracked<S> {
    inner: S,
    conn: Arc<Conn>,
}

impl<S> Tracked<S> {
    pub(super) fn new(inner: S, conn: Arc<Conn>) -> Self {
        Tracked { inner, conn }
    }
}

impl<S, B> Service<Request<Incoming>> for Tracked<S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    B: Body,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(self.conn.addr);
        let in_flight = InFlight::new(&self.conn);
        if let Some(reason) = bad_host(&request) {
            return TrackedFuture::Refused {
                reason: Some(reason),
                in_flight: Some(in_flight),
            };
        }
        // An extended CONNECT (RFC 8441: a WebSocket over HTTP/2).
        #[cfg(feature = "http2")]
        let tunnel = request.method() == Method::CONNECT
            && request.extensions().get::<hyper::ext::Protocol>().is_some();
        #[cfg(not(feature = "http2"))]
        let tunnel = false;
        TrackedFuture::Called {
            inner: self.inner.call(request),
            in_flight: Some(in_flight),
            tunnel,
            conn: self.conn.clone(),
        }
    }
}

/// Why an HTTP/1.1 request's `Host` is unacceptable, if it is.
fn bad_host<B>(request: &Request<B>) -> Option<&'static str> {
    if request.version() != Version::HTTP_11 {
        return None;
    }
    let mut hosts = request.headers().get_all(HOST).iter();
    let Some(host) = hosts.next() else {
        return Some("an HTTP/1.1 request needs a Host header");
    };
    if hosts.next().is_some() {
        return Some("Host is given more than once");
    }
    if host.is_empty() {
        // An empty Host is allowed for a URI without an authority.
        return None;
    }
    match http::uri::Authority::try_from(host.as_bytes()) {
        Ok(authority) if authority.as_str().bytes().all(|b| b != b'@') => None,
        _ => Some("Host is not a valid host[:port]"),
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Tracked`]: the service's, with the request's
    /// in-flight mark moved into the body of its answer.
    #[project = TrackedProj]
    pub(super) enum TrackedFuture<F> {
        Called {
            #[pin]
            inner: F,
            in_flight: Option<InFlight>,
            tunnel: bool,
            conn: Arc<Conn>,
        },
        Refused {
            reason: Option<&'static str>,
            in_flight: Option<InFlight>,
        },
    }
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            TrackedProj::Called {
                inner,
                in_flight,
                tunnel,
                conn,
            } => {
                let response = std::task::ready!(inner.poll(cx))?;
                let in_flight = in_flight.take();
                let status = response.status();
                let upgraded = status == StatusCode::SWITCHING_PROTOCOLS;
                if upgraded && conn.set(UPGRADED) {
                    conn.shared.stats.upgraded.fetch_add(1, Ordering::Relaxed);
                }
                // A socket or tunnel keeps its connection busy for good.
                let in_flight = match in_flight {
                    Some(in_flight) if upgraded || (*tunnel && status.is_success()) => {
                        in_flight.keep();
                        None
                    }
                    other => other,
                };
                Poll::Ready(Ok(response.map(|body| TrackedBody {
                    inner: Inner::Served { body },
                    _in_flight: in_flight,
                })))
            }
            TrackedProj::Refused { reason, in_flight } => {
                let message = reason.take().unwrap_or("bad request");
                let mut response = Response::new(TrackedBody {
                    inner: Inner::Fixed {
                        bytes: Some(push_core::wire::json::error("bad_request", message)),
                    },
                    _in_flight: in_flight.take(),
                });
                *response.status_mut() = StatusCode::BAD_REQUEST;
                let headers = response.headers_mut();
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
                Poll::Ready(Ok(response))
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The body of an answer: the service's, or a refusal of our own; the
    /// request is in flight until it is dropped.
    pub(super) struct TrackedBody<B> {
        #[pin]
        inner: Inner<B>,
        _in_flight: Option<InFlight>,
    }
}

pin_project_lite::pin_project! {
    #[project = InnerProj]
    enum Inner<B> {
        Served { #[pin] body: B },
        Fixed { bytes: Option<Bytes> },
    }
}

impl<B> Body for TrackedBody<B>
where
    B: Body,
    B::Data: From<Bytes>,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        match self.project().inner.project() {
            InnerProj::Served { body } => body.poll_frame(cx),
            InnerProj::Fixed { bytes } => {
                Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes.into()))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Served { body } => body.is_end_stream(),
            Inner::Fixed { bytes } => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Served { body } => body.size_hint(),
            Inner::Fixed { bytes } => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bad_host;

    fn request(version: http::Version, hosts: &[&str]) -> http::Request<()> {
        let mut builder = http::Request::get("/").version(version);
        for host in hosts {
            builder = builder.header("host", *host);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn http11_needs_exactly_one_valid_host() {
        use http::Version;
        assert!(bad_host(&request(Version::HTTP_11, &["example.com:8080"])).is_none());
        assert!(bad_host(&request(Version::HTTP_11, &["[::1]:80"])).is_none());
        assert!(bad_host(&request(Version::HTTP_11, &[])).is_some());
        assert!(bad_host(&request(Version::HTTP_11, &["a", "b"])).is_some());
        assert!(bad_host(&request(Version::HTTP_11, &["a b"])).is_some());
        assert!(bad_host(&request(Version::HTTP_11, &["user@host"])).is_some());
        assert!(bad_host(&request(Version::HTTP_10, &[])).is_none());
        assert!(bad_host(&request(Version::HTTP_2, &[])).is_none());
    }
}
