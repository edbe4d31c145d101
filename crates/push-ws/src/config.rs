//! How a [`WsHandler`](crate::WsHandler) accepts sockets and runs them.

use std::sync::Arc;
use std::time::Duration;

use push_http::ChannelLocator;
use tokio_util::sync::CancellationToken;

/// Which of the two WebSocket endpoints a handler serves.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Endpoint {
    /// `GET /ws/{channel}`: one channel per socket, named where the locator
    /// says; each message one text frame with its JSON envelope. What a
    /// browser's `new WebSocket(url)` wants.
    Channel(ChannelLocator),
    /// `GET /ws` with the `push.v1` subprotocol: JSON commands (subscribe,
    /// unsubscribe, publish) for many channels on one socket.
    Commands,
    /// Every text and binary message the client sends comes back as it
    /// came, through the same handshake, configuration and read path (close
    /// codes, UTF-8 checks, size limits, heartbeats) as the other endpoints.
    /// For conformance testing only (Autobahn|Testsuite's fuzzingclient,
    /// `cargo xtask autobahn`): the hub is not used.
    #[doc(hidden)]
    Echo,
}

/// Which `Origin`s may open a socket: the defence against cross-site
/// WebSocket hijacking (a page on another site opening a socket with the
/// user's cookies). Requests without an `Origin` header (not from a browser)
/// are always allowed: only browsers send it, and only browsers need the
/// protection.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum Origins {
    /// The origin's host and port must be the request's own: its `Host`
    /// header, or over HTTP/2 (which has none) its `:authority` (the
    /// default). Pages served by this server may connect, others may not.
    #[default]
    SameHost,
    /// Any origin.
    Any,
    /// Exactly these origins (`https://app.example.com`, compared without
    /// regard to case), and no other: the request's own host is not added,
    /// as a page whose name merely resolves to this server (DNS rebinding)
    /// would pass that test. List the server's own origin too if its pages
    /// connect.
    List(Arc<[String]>),
}

/// What happens to a subscriber that falls so far behind that the channel's
/// history no longer holds what it has not read yet, and to one whose writes
/// wait longer than [`WsConfig::write_timeout`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlowConsumer {
    /// It gets the gap signal and goes on from what is retained (the default):
    /// nothing is buffered for it, and no other subscriber waits for it. A
    /// write that waits past the write timeout closes it with 1001 (the peer
    /// stopped reading).
    #[default]
    Signal,
    /// It is closed with code 1013 (try again later), also when a write waits
    /// past the write timeout; it reconnects and resumes from its cursor, or
    /// learns of the gap then.
    Close,
}

/// How a [`WsHandler`](crate::WsHandler) accepts and runs sockets.
///
/// ```
/// use std::time::Duration;
/// use push_ws::{Origins, WsConfig};
///
/// let config = WsConfig::commands().with_publish(true).with_origins(Origins::Any);
/// assert_eq!(config.ping_interval, Duration::from_secs(25));
/// assert_eq!(config.write_timeout, Duration::from_secs(10));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WsConfig {
    /// The endpoint served (default: one channel per socket, named by the last
    /// path segment).
    pub endpoint: Endpoint,
    /// Who may connect (default: the same host).
    pub origins: Origins,
    /// Whether the command endpoint accepts `publish` (default: no).
    pub allow_publish: bool,
    /// The largest message (and frame) a client may send (default 64 KiB);
    /// a larger one closes the socket with 1009.
    pub max_message_bytes: usize,
    /// tungstenite's read buffer per socket (default 1 KiB; tungstenite's own
    /// default of 128 KiB costs that much per idle socket). tungstenite zeroes
    /// this much before every read attempt, and a socket attempts one each
    /// time it wakes to send: small is faster too. Larger client messages
    /// are read in several steps.
    pub read_buffer_bytes: usize,
    /// The most bytes waiting to be written to one socket (default 1 MiB).
    /// Messages wait for the socket's writes; what else piles up while the
    /// peer does not read (replies to its commands) closes it, past this,
    /// as a writer stalled past [`write_timeout`](Self::write_timeout) is.
    /// One frame larger than this still goes out when nothing waits before
    /// it: a message the hub accepted reaches every subscriber that reads.
    pub max_write_buffer_bytes: usize,
    /// A ping is sent after this long (default 25 s) …
    pub ping_interval: Duration,
    /// … and a socket whose pong does not come within this (default 10 s)
    /// is closed as gone (1001). The heartbeat runs while a write waits too.
    pub pong_timeout: Duration,
    /// The longest a write to the socket may wait (default 10 s). A peer
    /// that stops reading fills the socket's buffers and the write waits;
    /// past this the socket is closed as a slow consumer (1013 with
    /// [`SlowConsumer::Close`], else 1001) without waiting for the peer, and
    /// the connection dropped. A write also gives way at once to the
    /// socket's expiry ([`Access::deadline`](crate::Access::deadline)) and to
    /// [`shutdown`](Self::shutdown).
    pub write_timeout: Duration,
    /// What happens to a subscriber that falls out of the history.
    pub slow_consumer: SlowConsumer,
    /// The most channels one command socket may subscribe to (default 100).
    pub max_subscriptions: usize,
    /// The longest query string accepted (default 8 KiB, [`push_http::DEFAULT_MAX_QUERY_BYTES`]).
    pub max_query_bytes: usize,
    /// permessage-deflate (RFC 7692): `None` (the default) declines it;
    /// `Some(threshold)` accepts a client's offer and compresses each
    /// message whose frame is at least `threshold` bytes, once for every
    /// socket that gets it (no context takeover). Smaller ones go out
    /// plain. Compressed client messages are inflated within
    /// [`max_message_bytes`](Self::max_message_bytes) (past it: 1009).
    pub deflate_threshold: Option<usize>,
    /// When this token is cancelled (the server is shutting down), every
    /// socket is closed with 1001 (going away) and a clean close handshake,
    /// and later handshakes are refused with `503`. Default: none.
    pub shutdown: Option<CancellationToken>,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            endpoint: Endpoint::Channel(ChannelLocator::default()),
            origins: Origins::default(),
            allow_publish: false,
            max_message_bytes: 64 << 10,
            read_buffer_bytes: 1 << 10,
            max_write_buffer_bytes: 1 << 20,
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            slow_consumer: SlowConsumer::default(),
            max_subscriptions: 100,
            max_query_bytes: push_http::DEFAULT_MAX_QUERY_BYTES,
            deflate_threshold: None,
            shutdown: None,
        }
    }
}

impl WsConfig {
    /// The command endpoint (`GET /ws`, subprotocol `push.v1`) with the
    /// other defaults.
    pub fn commands() -> Self {
        WsConfig {
            endpoint: Endpoint::Commands,
            ..WsConfig::default()
        }
    }

    /// Sets [`endpoint`](Self::endpoint).
    #[must_use]
    pub fn with_endpoint(mut self, endpoint: Endpoint) -> Self {
        self.endpoint = endpoint;
        self
    }

    /// Sets [`origins`](Self::origins).
    #[must_use]
    pub fn with_origins(mut self, origins: Origins) -> Self {
        self.origins = origins;
        self
    }

    /// Sets [`allow_publish`](Self::allow_publish).
    #[must_use]
    pub fn with_publish(mut self, allow: bool) -> Self {
        self.allow_publish = allow;
        self
    }

    /// Sets [`max_message_bytes`](Self::max_message_bytes) (at least 125 bytes).
    #[must_use]
    pub fn with_max_message_bytes(mut self, max: usize) -> Self {
        self.max_message_bytes = max.max(125);
        self
    }

    /// Sets the heartbeat: [`ping_interval`](Self::ping_interval) and
    /// [`pong_timeout`](Self::pong_timeout) (each at least 1 ms; one too far
    /// away for the clock to reach, such as `Duration::MAX`, never comes).
    #[must_use]
    pub fn with_heartbeat(mut self, interval: Duration, timeout: Duration) -> Self {
        self.ping_interval = interval.max(Duration::from_millis(1));
        self.pong_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Sets [`write_timeout`](Self::write_timeout) (at least 1 ms; one too
    /// far away for the clock to reach, such as `Duration::MAX`, never
    /// comes).
    #[must_use]
    pub fn with_write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Sets [`slow_consumer`](Self::slow_consumer).
    #[must_use]
    pub fn with_slow_consumer(mut self, policy: SlowConsumer) -> Self {
        self.slow_consumer = policy;
        self
    }

    /// Sets [`max_subscriptions`](Self::max_subscriptions).
    #[must_use]
    pub fn with_max_subscriptions(mut self, max: usize) -> Self {
        self.max_subscriptions = max;
        self
    }

    /// tungstenite's configuration for a socket.
    pub(crate) fn socket(&self) -> tungstenite::protocol::WebSocketConfig {
        tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(self.read_buffer_bytes)
            // tungstenite never shrinks its write buffer: keep the batch
            // that fills it small, or every socket keeps its largest burst.
            .write_buffer_size(4 << 10)
            // The socket bounds what waits (`max_write_buffer_bytes`) itself:
            // tungstenite's bound would refuse a frame larger than it even
            // with nothing else waiting.
            .max_write_buffer_size(usize::MAX)
            .max_message_size(Some(self.max_message_bytes))
            .max_frame_size(Some(self.max_message_bytes))
    }

    /// Accepts permessage-deflate, compressing messages whose frame is at
    /// least `threshold` bytes (see
    /// [`deflate_threshold`](Self::deflate_threshold); 1 KiB is a common
    /// choice: below that the frame header and CPU outweigh what is saved).
    #[must_use]
    pub fn with_deflate(mut self, threshold: usize) -> Self {
        self.deflate_threshold = Some(threshold);
        self
    }

    /// Sets [`shutdown`](Self::shutdown).
    #[must_use]
    pub fn with_shutdown(mut self, token: CancellationToken) -> Self {
        self.shutdown = Some(token);
        self
    }
}
