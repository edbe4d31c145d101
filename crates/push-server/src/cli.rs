//! The command line: every flag also from a `PUSH_…` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use clap::builder::TypedValueParser as _;
use push_live::http::Technique;

/// push-server: publish with one HTTP request, subscribe with short polling,
/// long polling, Server-Sent Events or WebSockets, and resume from a cursor
/// on any of them.
///
/// Publish:    curl -d hello localhost:8080/pub/news
/// Subscribe:  curl -N localhost:8080/sse/news
///
/// Every option can also be set from the environment variable shown with
/// it. Durations are in seconds (decimals allowed: 0.5). Every value is
/// checked at start: one out of its range stops the server with a message
/// naming it.
#[derive(Clone, Debug, Parser)]
#[command(name = "push-server", version, verbatim_doc_comment)]
pub struct Args {
    /// Address to listen on (port 0 picks a free port; the first line on
    /// stdout is `listening on http://IP:PORT`).
    #[arg(long, env = "PUSH_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// The listen backlog: connections waiting to be accepted (the kernel
    /// caps it at net.core.somaxconn).
    #[arg(long, env = "PUSH_BACKLOG", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..=65_535))]
    pub backlog: u32,

    /// Serve HTTPS (and wss:) with this certificate chain: a PEM file, the
    /// server's certificate first (needs --tls-key). ALPN offers h2 and
    /// http/1.1: browsers then speak HTTP/2, and any number of event
    /// streams share one connection (HTTP/1.1 allows six per origin).
    #[arg(long, env = "PUSH_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert: a PEM file (PKCS#8, PKCS#1 or SEC1;
    /// needs --tls-cert).
    #[arg(long, env = "PUSH_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// The most connections open at once, WebSockets included (0: no
    /// limit; keep it below the open-files limit). At the limit the
    /// connection idle the longest is closed to make room; with none idle,
    /// a new client gets 503 and Retry-After.
    #[arg(long, env = "PUSH_MAX_CONNECTIONS", default_value_t = 0,
          value_parser = count(0, 10_000_000))]
    pub max_connections: usize,

    /// The most connections open at once from one IP address (0: no limit;
    /// behind a reverse proxy every client has the proxy's address). Over
    /// it a new connection gets 429.
    #[arg(long, env = "PUSH_MAX_CONNECTIONS_PER_IP", default_value_t = 0,
          value_parser = count(0, 10_000_000))]
    pub max_connections_per_ip: usize,

    /// A new connection must send a whole request head within this, and
    /// each next request head within this of its first byte; else it is
    /// closed.
    #[arg(long, env = "PUSH_HEADER_TIMEOUT", default_value = "10",
          value_parser = secs(0.01, 3_600.0))]
    pub header_timeout: Duration,

    /// A connection with nothing in flight (HTTP/1.1 keep-alive, HTTP/2 with
    /// no open stream) is closed after this.
    #[arg(long, env = "PUSH_IDLE_TIMEOUT", default_value = "30",
          value_parser = secs(0.01, 86_400.0))]
    pub idle_timeout: Duration,

    /// A connection (or WebSocket) whose writes make no progress for this
    /// long (the client stopped reading) is closed.
    #[arg(long, env = "PUSH_WRITE_TIMEOUT", default_value = "10",
          value_parser = secs(0.01, 3_600.0))]
    pub write_timeout: Duration,

    /// HTTP/2: a PING is sent after this long without a frame from the
    /// client …
    #[arg(long, env = "PUSH_HTTP2_PING_INTERVAL", default_value = "20",
          value_parser = secs(0.01, 3_600.0))]
    pub http2_ping_interval: Duration,

    /// … and the connection is closed if its answer takes longer than this.
    #[arg(long, env = "PUSH_HTTP2_PING_TIMEOUT", default_value = "10",
          value_parser = secs(0.01, 3_600.0))]
    pub http2_ping_timeout: Duration,

    /// A publish whose body has not arrived whole within this gets 408.
    #[arg(long, env = "PUSH_PUBLISH_BODY_TIMEOUT", default_value = "15",
          value_parser = secs(0.01, 3_600.0))]
    pub publish_body_timeout: Duration,

    /// The largest request head accepted, in bytes (HTTP/1.1 at least 8 KiB).
    #[arg(long, env = "PUSH_MAX_HEADER_BYTES", default_value_t = 32 << 10,
          value_parser = count(8 << 10, 1 << 20))]
    pub max_header_bytes: usize,

    /// Messages each channel keeps for clients to resume from.
    #[arg(long, env = "PUSH_HISTORY_MESSAGES", default_value_t = 1000,
          value_parser = count(1, 10_000_000))]
    pub history_messages: usize,

    /// Bytes each channel keeps (data and event names).
    #[arg(long, env = "PUSH_HISTORY_BYTES", default_value_t = 1 << 20,
          value_parser = count(1, 1 << 40))]
    pub history_bytes: usize,

    /// How long a message is kept.
    #[arg(long, env = "PUSH_HISTORY_SECONDS", default_value = "3600",
          value_parser = secs(1.0, 365.0 * 86_400.0))]
    pub history_seconds: Duration,

    /// The largest message accepted, in bytes (publish body); at most
    /// --history-bytes.
    #[arg(long, env = "PUSH_MAX_MESSAGE_BYTES", default_value_t = 256 << 10,
          value_parser = count(1, 64 << 20))]
    pub max_message_bytes: usize,

    /// Run on the Redis at this URL (`redis://[:password@]host:port/db`)
    /// instead of the in-memory hub: several push-server nodes on the same
    /// Redis share channels, history and cursors. History is then kept by
    /// count (`--history-messages`, approximately) and a channel expires
    /// after `--history-seconds` without activity.
    #[arg(long, env = "PUSH_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// --redis-url names a Redis Cluster: one or more of its nodes,
    /// comma-separated (`redis://10.0.0.1:7000,redis://10.0.0.2:7000`).
    /// Each channel lives on the shard owning its slot, and each node
    /// subscribes there (sharded Pub/Sub) only to the channels its clients
    /// hold. Not with --redis-sentinel.
    #[arg(long, env = "PUSH_REDIS_CLUSTER")]
    pub redis_cluster: bool,

    /// Instead of --redis-url: find the Redis master through these Redis
    /// Sentinels (`HOST:PORT,HOST:PORT,…`; list them all) and follow it
    /// through failovers. Needs --redis-master.
    #[arg(long, env = "PUSH_REDIS_SENTINEL", value_delimiter = ',',
          value_parser = sentinel_address)]
    pub redis_sentinel: Vec<SentinelAddress>,

    /// The name the sentinels monitor the master under (`sentinel monitor
    /// NAME …`); with --redis-sentinel.
    #[arg(long, env = "PUSH_REDIS_MASTER")]
    pub redis_master: Option<String>,

    /// The password of the master and its replicas, with --redis-sentinel
    /// (with --redis-url, the URL carries it). The sentinels are asked
    /// without one.
    #[arg(long, env = "PUSH_REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<String>,

    /// How often each node probes Redis: a message published on the command
    /// connection must come back on its Pub/Sub connection within three
    /// intervals, else /healthz answers 503 with the reason.
    #[arg(long, env = "PUSH_REDIS_PROBE_INTERVAL", default_value = "2",
          value_parser = secs(0.01, 3_600.0))]
    pub redis_probe_interval: Duration,

    /// With Redis: how long a connection stays present after its node's
    /// last renewal (renewed every third of it). A node that dies takes its
    /// subscribers' presence with it within this.
    #[arg(long, env = "PUSH_PRESENCE_LEASE", default_value = "15",
          value_parser = secs(1.0, 3_600.0))]
    pub presence_lease: Duration,

    /// The prefix of every Redis key and Pub/Sub channel.
    #[arg(long, env = "PUSH_REDIS_PREFIX", default_value = "push")]
    pub redis_prefix: String,

    /// The most channels held at once. When full, channels nobody
    /// subscribes to make room, least recently active first (their clients
    /// get a reset).
    #[arg(long, env = "PUSH_MAX_CHANNELS", default_value_t = 100_000,
          value_parser = count(1, 100_000_000))]
    pub max_channels: usize,

    /// Of those, the most that nothing was published to yet (made by a
    /// subscribe or a read), so that subscribers alone cannot crowd out
    /// channels with publishers (0: half of --max-channels).
    #[arg(long, env = "PUSH_MAX_UNPUBLISHED_CHANNELS", default_value_t = 0,
          value_parser = count(0, 100_000_000))]
    pub max_unpublished_channels: usize,

    /// The bytes all channels' history may hold together (data, event names,
    /// encodings and bookkeeping); past it the oldest messages of the whole
    /// server go first, and subscribers behind get a gap. With Redis: what
    /// each node's cache of recent messages may hold.
    #[arg(long, env = "PUSH_MAX_RETAINED_BYTES", default_value_t = 256 << 20,
          value_parser = count(1 << 20, 1 << 40))]
    pub max_retained_bytes: usize,

    /// The bytes of ephemeral messages (`?store=false`) a channel holds for
    /// live subscribers that have not taken them yet; one further behind
    /// skips the oldest. Never part of the history.
    #[arg(long, env = "PUSH_MAX_EPHEMERAL_BYTES", default_value_t = 1 << 20,
          value_parser = count(0, 1 << 32))]
    pub max_ephemeral_bytes: usize,

    /// The connections a channel counts present at once: pollers (each
    /// poll renews a lease by user or address) on the memory hub; every
    /// connection with Redis. Past it a new one is served, not counted.
    #[arg(long, env = "PUSH_MAX_PRESENCE", default_value_t = 100_000,
          value_parser = count(1, 100_000_000))]
    pub max_presence: usize,

    /// The poll interval advised to short-polling clients.
    #[arg(long, env = "PUSH_POLL_INTERVAL", default_value = "5",
          value_parser = secs(1.0, 86_400.0))]
    pub poll_interval: Duration,

    /// How long a long poll is held when it names no timeout.
    #[arg(long, env = "PUSH_LONGPOLL_TIMEOUT", default_value = "30",
          value_parser = secs(0.0, 3_600.0))]
    pub longpoll_timeout: Duration,

    /// The longest hold a long poll may ask for.
    #[arg(long, env = "PUSH_LONGPOLL_MAX_TIMEOUT", default_value = "120",
          value_parser = secs(0.0, 3_600.0))]
    pub longpoll_max_timeout: Duration,

    /// A comment is sent on an idle event stream after this long.
    #[arg(long, env = "PUSH_SSE_KEEP_ALIVE", default_value = "15",
          value_parser = secs(0.01, 3_600.0))]
    pub sse_keep_alive: Duration,

    /// The reconnection delay advised to event-stream clients.
    #[arg(long, env = "PUSH_SSE_RETRY", default_value = "3",
          value_parser = secs(0.0, 86_400.0))]
    pub sse_retry: Duration,

    /// End each event stream after about this long (0: never), so that
    /// clients spread over nodes; they resume where they were.
    #[arg(long, env = "PUSH_SSE_MAX_LIFETIME", default_value = "0",
          value_parser = secs(0.0, 365.0 * 86_400.0))]
    pub sse_max_lifetime: Duration,

    /// WebSocket ping interval.
    #[arg(long, env = "PUSH_WS_PING", default_value = "25",
          value_parser = secs(0.01, 3_600.0))]
    pub ws_ping: Duration,

    /// A WebSocket whose pong does not come within this is closed.
    #[arg(long, env = "PUSH_WS_PONG_TIMEOUT", default_value = "10",
          value_parser = secs(0.01, 3_600.0))]
    pub ws_pong_timeout: Duration,

    /// The largest message a WebSocket client may send, in bytes.
    #[arg(long, env = "PUSH_WS_MAX_MESSAGE_BYTES", default_value_t = 64 << 10,
          value_parser = count(125, 64 << 20))]
    pub ws_max_message_bytes: usize,

    /// Offer permessage-deflate (RFC 7692) to WebSocket clients that ask
    /// (browsers do): a message whose frame is at least this many bytes is
    /// compressed, once for every socket. Off when not given; 1024 is a
    /// common threshold.
    #[arg(long, env = "PUSH_WS_DEFLATE", value_parser = count(0, 64 << 20))]
    pub ws_deflate: Option<usize>,

    /// The most channels one `GET /ws` socket may subscribe to.
    #[arg(long, env = "PUSH_WS_MAX_SUBSCRIPTIONS", default_value_t = 100,
          value_parser = count(1, 100_000))]
    pub ws_max_subscriptions: usize,

    /// The techniques served, comma-separated (the others answer 404, and
    /// browser clients fall back): poll, longpoll, sse, ws.
    #[arg(
        long,
        env = "PUSH_TRANSPORTS",
        value_delimiter = ',',
        default_value = "poll,longpoll,sse,ws",
        value_parser = technique()
    )]
    pub transports: Vec<Technique>,

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

    /// The secret publishers must send as `Authorization: Bearer …` (not
    /// empty). Without one, publishing is open on a loopback address only
    /// (see --open-publish).
    #[arg(long, env = "PUSH_PUBLISH_TOKEN", hide_env_values = true)]
    pub publish_token: Option<String>,

    /// Let anyone publish without --publish-token although the server
    /// listens on a non-loopback address (refused by default there: 403).
    #[arg(long, env = "PUSH_OPEN_PUBLISH")]
    pub open_publish: bool,

    /// The HS256 secret of subscriber tokens (JWTs with `exp` and
    /// `channels`; at least 32 bytes, as RFC 7518 asks). With it set,
    /// subscribing needs a token, from `Authorization: Bearer …` or
    /// `?token=…`, and a stream ends when its token expires.
    #[arg(long, env = "PUSH_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    // Proxy mode: the app's backend decides every subscribe and publish.
    /// Proxy mode: on every subscribe and publish, POST
    /// `{"action","channel","transport"}` with the request's cookies and
    /// headers (--auth-proxy-forward-headers) to this http:// URL of your
    /// app, and obey: 200 allows (`{"channel":"user:42"}` serves that
    /// channel instead), 401 and 403 refuse with that status, anything else
    /// or no answer in time refuses with 503 (fail closed).
    #[arg(long, env = "PUSH_AUTH_PROXY_URL")]
    pub auth_proxy_url: Option<String>,

    /// How long the backend may take to answer, body included.
    #[arg(long, env = "PUSH_AUTH_PROXY_TIMEOUT", default_value = "2",
          value_parser = secs(0.01, 60.0))]
    pub auth_proxy_timeout: Duration,

    /// How long an answer of the backend (200, 401, 403) is reused for the
    /// same headers, channel, action and transport (0: ask every time).
    #[arg(long, env = "PUSH_AUTH_PROXY_CACHE_SECONDS", default_value = "5",
          value_parser = secs(0.0, 3_600.0))]
    pub auth_proxy_cache_seconds: Duration,

    /// The most answers of the backend kept; the oldest go first.
    #[arg(long, env = "PUSH_AUTH_PROXY_CACHE_SIZE", default_value_t = 10_000,
          value_parser = count(0, 10_000_000))]
    pub auth_proxy_cache_size: usize,

    /// The request headers forwarded to the backend, comma-separated.
    #[arg(
        long,
        env = "PUSH_AUTH_PROXY_FORWARD_HEADERS",
        value_delimiter = ',',
        default_value = "cookie,authorization"
    )]
    pub auth_proxy_forward_headers: Vec<String>,

    /// On shutdown (SIGINT, SIGTERM), how long to wait for connections to
    /// end.
    #[arg(long, env = "PUSH_SHUTDOWN_GRACE", default_value = "10",
          value_parser = secs(0.0, 3_600.0))]
    pub shutdown_grace: Duration,

    /// What to log: `error`, `warn`, `info`, `debug` (one line per
    /// subscriber event), or a tracing filter.
    #[arg(long, env = "PUSH_LOG", default_value = "info")]
    pub log: String,
}

/// A sentinel's address, `HOST:PORT`, as --redis-sentinel takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentinelAddress {
    /// The host name or IP address (an IPv6 one without its brackets).
    pub host: String,
    /// The port.
    pub port: u16,
}

/// Parses `HOST:PORT` (`[IPV6]:PORT` for an IPv6 address).
fn sentinel_address(text: &str) -> Result<SentinelAddress, String> {
    let bad =
        || format!("`{text}` is not HOST:PORT (a sentinel's address; its port is usually 26379)");
    let (host, port) = text.trim().rsplit_once(':').ok_or_else(bad)?;
    let host = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.strip_suffix(']').ok_or_else(bad)?,
        None if host.contains(':') => return Err(bad()),
        None => host,
    };
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty()
        || port == 0
        || host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/' || c == '@')
    {
        return Err(bad());
    }
    Ok(SentinelAddress {
        host: host.to_owned(),
        port,
    })
}

impl Args {
    /// Whether publishing without a publisher secret is refused: the
    /// server listens on a non-loopback address with no --publish-token,
    /// no --auth-proxy-url (whose backend decides each publish) and without
    /// --open-publish (as Redis's protected mode does).
    pub fn publish_protected(&self) -> bool {
        self.publish_token.is_none()
            && self.auth_proxy_url.is_none()
            && !self.open_publish
            && !self.listen.ip().is_loopback()
    }

    /// The Redis hub's settings, from --redis-url (with --redis-cluster or
    /// not) or --redis-sentinel with --redis-master (and --redis-password);
    /// `None` for the in-memory hub.
    /// The caller adds the history and probe settings.
    ///
    /// # Errors
    /// A message naming the flags at odds (see [`validate`](Self::validate)).
    pub fn redis_hub_config(&self) -> Result<Option<push_redis::RedisHubConfig>, String> {
        let sentinel = !self.redis_sentinel.is_empty();
        if self.redis_cluster && sentinel {
            return Err(
                "--redis-cluster and --redis-sentinel exclude each other (a cluster fails over by itself)"
                    .into(),
            );
        }
        if self.redis_cluster && self.redis_url.is_none() {
            return Err("--redis-cluster needs --redis-url naming one or more of its nodes".into());
        }
        match (&self.redis_url, sentinel, &self.redis_master) {
            (Some(_), true, _) => {
                Err("--redis-url and --redis-sentinel are two ways to name Redis: use one".into())
            }
            (_, false, Some(_)) => Err("--redis-master needs --redis-sentinel".into()),
            (_, true, None) => Err(
                "--redis-sentinel needs --redis-master (the name the sentinels monitor it under)"
                    .into(),
            ),
            (_, false, None) if self.redis_password.is_some() => Err(
                "--redis-password goes with --redis-sentinel (a --redis-url carries its own)"
                    .into(),
            ),
            (Some(url), false, None) => Ok(Some(
                push_redis::RedisHubConfig::new(url.clone()).with_cluster(self.redis_cluster),
            )),
            (None, false, None) => Ok(None),
            (None, true, Some(master)) => {
                let sentinels = self
                    .redis_sentinel
                    .iter()
                    .map(|address| (address.host.clone(), address.port));
                let mut sentinel = push_redis::SentinelConfig::new(sentinels, master.clone());
                if let Some(password) = &self.redis_password {
                    sentinel = sentinel.with_password(password.clone());
                }
                Ok(Some(push_redis::RedisHubConfig::through_sentinel(sentinel)))
            }
        }
    }

    /// Checks what one flag's range cannot: how settings fit together.
    ///
    /// # Errors
    /// A message naming the flags at odds.
    pub fn validate(&self) -> Result<(), String> {
        self.redis_hub_config()?;
        if self.max_message_bytes > self.history_bytes {
            return Err(format!(
                "--max-message-bytes ({}) must not exceed --history-bytes ({})",
                self.max_message_bytes, self.history_bytes
            ));
        }
        if self.max_unpublished_channels > self.max_channels {
            return Err("--max-unpublished-channels must not exceed --max-channels".to_owned());
        }
        // The budget must hold the largest message with its bookkeeping.
        if self
            .max_message_bytes
            .saturating_add(push_live::MemoryHubConfig::MESSAGE_OVERHEAD)
            > self.max_retained_bytes
        {
            return Err(format!(
                "--max-message-bytes ({}) must be well under --max-retained-bytes ({})",
                self.max_message_bytes, self.max_retained_bytes
            ));
        }
        if self.longpoll_timeout > self.longpoll_max_timeout {
            return Err("--longpoll-timeout must not exceed --longpoll-max-timeout".to_owned());
        }
        Ok(())
    }
}

/// A duration in seconds (decimals allowed) within `min..=max`.
fn secs(
    min: f64,
    max: f64,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |text: &str| {
        let value: f64 = text
            .trim()
            .parse()
            .map_err(|_| format!("`{text}` is not a number of seconds"))?;
        if !(min..=max).contains(&value) {
            return Err(format!("must be between {min} and {max} seconds"));
        }
        Ok(Duration::from_secs_f64(value))
    }
}

/// A technique by its name: one of those of [`Technique::ALL`] (listed in
/// `--help` and in the error for any other).
fn technique() -> impl clap::builder::TypedValueParser<Value = Technique> {
    let described = Technique::ALL.map(|technique| {
        let help = match technique {
            Technique::Poll => "Short polling: `GET /poll/{channel}`",
            Technique::LongPoll => "Long polling: `GET /longpoll/{channel}`",
            Technique::Sse => "Server-Sent Events: `GET /sse/{channel}`",
            Technique::Ws => "WebSockets: `GET /ws/{channel}` and `GET /ws`",
        };
        clap::builder::PossibleValue::new(technique.as_str()).help(help)
    });
    clap::builder::PossibleValuesParser::new(described).try_map(|name| name.parse::<Technique>())
}

/// A count within `min..=max`.
fn count(min: u64, max: u64) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(min..=max)
}
