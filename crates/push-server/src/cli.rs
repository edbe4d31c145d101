//! The command line: every flag also from a `PUSH_…` environment variable.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

/// push-server: publish with one HTTP request, subscribe with short polling,
/// long polling, Server-Sent Events or WebSockets, and resume from a cursor
/// on any of them.
///
/// Publish:    curl -d hello localhost:8080/pub/news
/// Subscribe:  curl -N localhost:8080/sse/news
///
/// Every option can also be set from the environment variable shown with
/// it. Durations are whole seconds.
#[derive(Clone, Debug, Parser)]
#[command(name = "push-server", version, verbatim_doc_comment)]
pub struct Args {
    /// Address to listen on (port 0 picks a free port; the first line on
    /// stdout is `listening on http://IP:PORT`).
    #[arg(long, env = "PUSH_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// The listen backlog: connections waiting to be accepted (the kernel
    /// caps it at net.core.somaxconn).
    #[arg(long, env = "PUSH_BACKLOG", default_value_t = 4096)]
    pub backlog: u32,

    /// The most connections open at once (0: no limit). At the limit new
    /// connections wait in the backlog.
    #[arg(long, env = "PUSH_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,

    /// Messages each channel keeps for clients to resume from.
    #[arg(long, env = "PUSH_HISTORY_MESSAGES", default_value_t = 1000)]
    pub history_messages: usize,

    /// Bytes each channel keeps (data and event names).
    #[arg(long, env = "PUSH_HISTORY_BYTES", default_value_t = 1 << 20)]
    pub history_bytes: usize,

    /// How long a message is kept, in seconds.
    #[arg(long, env = "PUSH_HISTORY_SECONDS", default_value_t = 3600)]
    pub history_seconds: u64,

    /// The largest message accepted, in bytes (publish body).
    #[arg(long, env = "PUSH_MAX_MESSAGE_BYTES", default_value_t = 256 << 10)]
    pub max_message_bytes: usize,

    /// Run on the Redis at this URL (`redis://[:password@]host:port/db`)
    /// instead of the in-memory hub: several push-server nodes on the same
    /// Redis share channels, history and cursors. History is then kept by
    /// count (`--history-messages`, approximately) and a channel expires
    /// after `--history-seconds` without activity.
    #[arg(long, env = "PUSH_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// The prefix of every Redis key and Pub/Sub channel.
    #[arg(long, env = "PUSH_REDIS_PREFIX", default_value = "push")]
    pub redis_prefix: String,

    /// The most channels held at once.
    #[arg(long, env = "PUSH_MAX_CHANNELS", default_value_t = 100_000)]
    pub max_channels: usize,

    /// The poll interval advised to short-polling clients, in seconds.
    #[arg(long, env = "PUSH_POLL_INTERVAL", default_value_t = 5)]
    pub poll_interval: u64,

    /// How long a long poll is held when it names no timeout, in seconds.
    #[arg(long, env = "PUSH_LONGPOLL_TIMEOUT", default_value_t = 30)]
    pub longpoll_timeout: u64,

    /// The longest hold a long poll may ask for, in seconds.
    #[arg(long, env = "PUSH_LONGPOLL_MAX_TIMEOUT", default_value_t = 120)]
    pub longpoll_max_timeout: u64,

    /// A comment is sent on an idle event stream after this many seconds.
    #[arg(long, env = "PUSH_SSE_KEEP_ALIVE", default_value_t = 15)]
    pub sse_keep_alive: u64,

    /// The reconnection delay advised to event-stream clients, in seconds.
    #[arg(long, env = "PUSH_SSE_RETRY", default_value_t = 3)]
    pub sse_retry: u64,

    /// End each event stream after about this many seconds (0: never), so
    /// that clients spread over nodes; they resume where they were.
    #[arg(long, env = "PUSH_SSE_MAX_LIFETIME", default_value_t = 0)]
    pub sse_max_lifetime: u64,

    /// WebSocket ping interval, in seconds.
    #[arg(long, env = "PUSH_WS_PING", default_value_t = 25)]
    pub ws_ping: u64,

    /// A WebSocket whose pong does not come within this many seconds is
    /// closed.
    #[arg(long, env = "PUSH_WS_PONG_TIMEOUT", default_value_t = 10)]
    pub ws_pong_timeout: u64,

    /// The largest message a WebSocket client may send, in bytes.
    #[arg(long, env = "PUSH_WS_MAX_MESSAGE_BYTES", default_value_t = 64 << 10)]
    pub ws_max_message_bytes: usize,

    /// The techniques served, comma-separated (the others answer 404, and
    /// browser clients fall back): poll, longpoll, sse, ws.
    #[arg(
        long,
        env = "PUSH_TRANSPORTS",
        value_delimiter = ',',
        default_value = "poll,longpoll,sse,ws"
    )]
    pub transports: Vec<TransportArg>,

    /// Let WebSocket clients publish on the command endpoint (`GET /ws`).
    /// With a publisher token set, only sockets that presented it (or a
    /// subscriber token with `publish` channels) may.
    #[arg(long, env = "PUSH_WS_PUBLISH")]
    pub ws_publish: bool,

    /// Close WebSocket readers that fall out of the history (1013) instead
    /// of sending them a gap signal.
    #[arg(long, env = "PUSH_WS_CLOSE_SLOW")]
    pub ws_close_slow: bool,

    /// Origins allowed to connect from a browser (WebSocket `Origin` check,
    /// CORS), comma-separated, e.g. `https://app.example.com`; `*` allows
    /// any. Default: only pages served by this server.
    #[arg(long, env = "PUSH_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// The secret publishers must send as `Authorization: Bearer …`. Without
    /// one, anyone who can reach the server may publish.
    #[arg(long, env = "PUSH_PUBLISH_TOKEN", hide_env_values = true)]
    pub publish_token: Option<String>,

    /// The HS256 secret of subscriber tokens (JWTs with `exp` and
    /// `channels`). With it set, subscribing needs a token, from
    /// `Authorization: Bearer …` or `?token=…`, and a stream ends when its
    /// token expires.
    #[arg(long, env = "PUSH_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// On shutdown (SIGINT, SIGTERM), how long to wait for connections to
    /// end, in seconds.
    #[arg(long, env = "PUSH_SHUTDOWN_GRACE", default_value_t = 10)]
    pub shutdown_grace: u64,

    /// What to log: `error`, `warn`, `info`, `debug` (one line per
    /// subscriber event), or a tracing filter.
    #[arg(long, env = "PUSH_LOG", default_value = "info")]
    pub log: String,
}

/// A technique, as named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TransportArg {
    /// Short polling: `GET /poll/{channel}`.
    Poll,
    /// Long polling: `GET /longpoll/{channel}`.
    Longpoll,
    /// Server-Sent Events: `GET /sse/{channel}`.
    Sse,
    /// WebSockets: `GET /ws/{channel}` and `GET /ws`.
    Ws,
}

/// Whole seconds as a duration.
pub fn seconds(secs: u64) -> Duration {
    Duration::from_secs(secs)
}
