//! What [`serve`](super::serve) is told (its limits, deadlines and TLS) and
//! what it counts.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// How [`serve`](crate::serve()) runs connections: its limits and deadlines. Every field
/// has a default fit for a public server.
///
/// Every connection has a deadline until it is useful: a new one must send
/// a whole request head within [`header_timeout`](Self::header_timeout); one
/// with nothing in flight (HTTP/1.1 between requests, HTTP/2 with no open
/// stream) is closed after [`idle_timeout`](Self::idle_timeout), or
/// `header_timeout` after the next request started arriving; one whose
/// writes make no progress for [`write_timeout`](Self::write_timeout) is
/// dropped. A request, an event stream, a held long poll or a WebSocket is
/// useful: it is never cut for being long.
///
/// ```
/// use std::time::Duration;
/// use push_live::ServeConfig;
///
/// let config = ServeConfig::default().with_max_connections(10_000);
/// assert_eq!(config.grace, Duration::from_secs(10));
/// assert_eq!(config.header_timeout, Duration::from_secs(10));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServeConfig {
    /// The most connections open at once, upgraded WebSockets included
    /// (default: no limit). At the limit the connection idle the longest is
    /// closed to make room for a new one; when none is idle, the new one is
    /// answered `503` (`too_many_connections`, `Retry-After: 1`) and closed.
    pub max_connections: Option<usize>,
    /// The most connections open at once from one IP address (default: no
    /// limit; behind a reverse proxy every client has the proxy's address).
    /// Over it, a new connection is answered `429`
    /// (`too_many_connections`) and closed.
    pub max_connections_per_ip: Option<usize>,
    /// How long a shutdown waits for connections, streams and sockets to end
    /// before dropping the rest (default 10 s).
    pub grace: Duration,
    /// How long a client may take to send a whole request head: from
    /// connecting (over TLS, the handshake included), and from the first
    /// byte of each next request (default 10 s). Past it the connection is
    /// dropped.
    pub header_timeout: Duration,
    /// How long a connection with nothing in flight is kept: HTTP/1.1
    /// keep-alive between requests, HTTP/2 with no open stream (default
    /// 30 s). Then it is closed gracefully (HTTP/2: GOAWAY).
    pub idle_timeout: Duration,
    /// How long a write to a client may make no progress (its receive
    /// window stays full: it stopped reading) before the connection is
    /// dropped (default 10 s). Upgraded WebSockets have their own
    /// (`push_ws::WsConfig::write_timeout`).
    pub write_timeout: Duration,
    /// HTTP/2: a PING is sent after this long without a frame from the
    /// client (default 20 s) …
    pub http2_ping_interval: Duration,
    /// … and the connection is closed if its answer does not come within
    /// this (default 10 s).
    pub http2_ping_timeout: Duration,
    /// The largest request head accepted, in bytes (default 32 KiB; HTTP/1.1
    /// at least 8 KiB): HTTP/1.1's read buffer, HTTP/2's header list.
    pub max_header_bytes: usize,
    /// Serve TLS (HTTPS and `wss:`) with this rustls configuration instead
    /// of plain TCP (default: none). Set it with [`with_tls`](Self::with_tls),
    /// which fills in ALPN.
    #[cfg(feature = "tls")]
    pub tls: Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            max_connections: None,
            max_connections_per_ip: None,
            grace: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            http2_ping_interval: Duration::from_secs(20),
            http2_ping_timeout: Duration::from_secs(10),
            max_header_bytes: 32 << 10,
            #[cfg(feature = "tls")]
            tls: None,
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

    /// Sets [`max_connections_per_ip`](Self::max_connections_per_ip) (at
    /// least 1).
    #[must_use]
    pub fn with_max_connections_per_ip(mut self, max: usize) -> Self {
        self.max_connections_per_ip = Some(max.max(1));
        self
    }

    /// Sets [`grace`](Self::grace).
    #[must_use]
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Sets [`header_timeout`](Self::header_timeout).
    #[must_use]
    pub fn with_header_timeout(mut self, timeout: Duration) -> Self {
        self.header_timeout = timeout;
        self
    }

    /// Sets [`idle_timeout`](Self::idle_timeout).
    #[must_use]
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets [`write_timeout`](Self::write_timeout).
    #[must_use]
    pub fn with_write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// Sets the HTTP/2 keep-alive: [`http2_ping_interval`](Self::http2_ping_interval)
    /// and [`http2_ping_timeout`](Self::http2_ping_timeout).
    #[must_use]
    pub fn with_http2_ping(mut self, interval: Duration, timeout: Duration) -> Self {
        self.http2_ping_interval = interval;
        self.http2_ping_timeout = timeout;
        self
    }

    /// Sets [`max_header_bytes`](Self::max_header_bytes).
    #[must_use]
    pub fn with_max_header_bytes(mut self, max: usize) -> Self {
        self.max_header_bytes = max;
        self
    }

    /// Serves TLS with `config` (feature `tls`): every connection starts
    /// with a TLS handshake, which must end within
    /// [`header_timeout`](Self::header_timeout) of connecting (a client that
    /// never finishes it is closed then, and counts against the connection
    /// limits meanwhile like any idle connection). A failed handshake is
    /// logged at debug and closes that connection only. Over TLS a refused
    /// connection is closed without an answer (no handshake is spent on it).
    ///
    /// When `config` names no ALPN protocols, `h2` (with the `http2`
    /// feature) and `http/1.1` are offered: browsers then speak HTTP/2, and
    /// their event streams escape HTTP/1.1's six connections per origin. ALPN
    /// decides each connection's protocol; a client that sends none is
    /// served as over plain TCP (HTTP/1.1, or HTTP/2 with prior knowledge).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use push_live::ServeConfig;
    /// use push_live::rustls::ServerConfig;
    /// use push_live::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    ///
    /// fn https(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>)
    ///     -> Result<ServeConfig, push_live::rustls::Error>
    /// {
    ///     let provider = Arc::new(push_live::rustls::crypto::ring::default_provider());
    ///     let tls = ServerConfig::builder_with_provider(provider)
    ///         .with_safe_default_protocol_versions()?
    ///         .with_no_client_auth()
    ///         .with_single_cert(chain, key)?;
    ///     Ok(ServeConfig::default().with_tls(Arc::new(tls)))
    /// }
    /// ```
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn with_tls(mut self, config: std::sync::Arc<tokio_rustls::rustls::ServerConfig>) -> Self {
        self.tls = Some(super::tls::with_alpn(config));
        self
    }
}

/// Counters of a running [`serve`](crate::serve()), for metrics.
#[derive(Debug, Default)]
pub struct ServeStats {
    pub(super) open: AtomicUsize,
    pub(super) upgraded: AtomicUsize,
    pub(super) accepted: AtomicU64,
    pub(super) refused: AtomicU64,
    pub(super) shed: AtomicU64,
    pub(super) timed_out: AtomicU64,
    pub(super) bytes_out: AtomicU64,
    pub(super) bytes_in: AtomicU64,
}

impl ServeStats {
    /// Connections open now, upgraded WebSockets included.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Of those, the HTTP/1.1 connections upgraded to a WebSocket.
    pub fn upgraded_connections(&self) -> usize {
        self.upgraded.load(Ordering::Relaxed)
    }

    /// Connections accepted since the start (refused ones included).
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Connections refused at a connection limit (`503` or `429`).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Idle connections closed to make room for new ones.
    pub fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }

    /// Connections closed by a deadline (idle, request head, stalled write).
    pub fn timed_out(&self) -> u64 {
        self.timed_out.load(Ordering::Relaxed)
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
