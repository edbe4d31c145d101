//! [`RedisHubConfig`]: how a hub talks to Redis, keeps history, retries and
//! checks its own health.

use std::time::Duration;

/// How a [`RedisHub`](crate::RedisHub) talks to Redis, keeps history, retries
/// and checks its own health.
///
/// ```
/// use std::time::Duration;
/// use push_redis::RedisHubConfig;
///
/// let config = RedisHubConfig::new("redis://127.0.0.1:6379/").with_max_messages(500);
/// assert_eq!(config.idle_ttl, Duration::from_secs(24 * 60 * 60));
/// assert_eq!(config.idempotency_window, config.idle_ttl);
/// assert_eq!(config.probe_timeout, 3 * config.probe_interval);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RedisHubConfig {
    /// The Redis URL (`redis://[:password@]host:port/db`). Unused when
    /// [`sentinel`](Self::sentinel) is set.
    pub url: String,
    /// Find the master through Redis Sentinel instead of at
    /// [`url`](Self::url), and follow it through failovers (default: none;
    /// see [`SentinelConfig`]).
    pub sentinel: Option<SentinelConfig>,
    /// The prefix of every key and Pub/Sub channel (default `push`).
    pub prefix: String,
    /// Messages each channel retains, approximately (`MAXLEN ~`: Redis trims
    /// whole nodes, so a few more may stay; default 1,000).
    pub max_messages: usize,
    /// The largest message accepted, data plus event name (default 256 KiB).
    pub max_message_bytes: usize,
    /// A channel's keys expire after this long without a publish or a read
    /// (default 24 hours); a client returning later gets a reset.
    pub idle_ttl: Duration,
    /// Recent messages each node keeps per channel it serves, shared by its
    /// subscribers (default 1,000); older ones are read from Redis.
    pub node_cache: usize,
    /// The bytes the node's caches may hold together (default 256 MiB;
    /// each message counted as twice its data, for the encodings transports
    /// cache on it, plus its bookkeeping). Past it a cache drops its oldest
    /// messages; subscribers then read those from Redis.
    pub node_cache_bytes: usize,
    /// Bytes of ephemeral messages a node holds per channel for local
    /// subscribers that have not taken them yet (default 1 MiB), as
    /// [`MemoryHubConfig::max_ephemeral_bytes`](push_core::MemoryHubConfig::max_ephemeral_bytes).
    pub max_ephemeral_bytes: usize,
    /// How long a connection's presence outlives its node's last renewal
    /// (default 15 s; renewed every third of it): the connections of a node
    /// that died leave within it, and a poller's lease is its own.
    pub presence_lease: Duration,
    /// How long one command may take before it fails (default 2 s). Only
    /// non-blocking commands run on the shared connection.
    pub response_timeout: Duration,
    /// How long connecting may take (default 2 s).
    pub connection_timeout: Duration,
    /// The longest wait between reconnection attempts (default 2 s; they
    /// start at 50 ms and double, each drawn from the upper half of its
    /// step so that nodes cut off together do not come back together; at
    /// least 50 ms).
    pub max_reconnect_delay: Duration,
    /// How long a publication's [idempotency key](push_core::Publication::with_key)
    /// is remembered (default 24 hours, the same as [`idle_ttl`](Self::idle_ttl)):
    /// a retry within it answers the first cursor and stores nothing. Each
    /// key costs Redis about 100 bytes plus its length for that long.
    pub idempotency_window: Duration,
    /// How often the node checks its Redis paths (default 2 s): it
    /// publishes a probe on a Pub/Sub channel of its own through the
    /// command connection and watches it come back on its Pub/Sub
    /// connection (see [`RedisHub::health`](crate::RedisHub::health)).
    pub probe_interval: Duration,
    /// How long without a probe coming back makes the node unhealthy
    /// (default 3 × [`probe_interval`](Self::probe_interval)); past it,
    /// while Redis still takes commands, the node also reconnects its
    /// Pub/Sub connection.
    pub probe_timeout: Duration,
}

impl RedisHubConfig {
    /// The defaults, for the Redis at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        RedisHubConfig {
            url: url.into(),
            sentinel: None,
            prefix: "push".into(),
            max_messages: 1_000,
            max_message_bytes: 256 << 10,
            idle_ttl: Duration::from_secs(24 * 60 * 60),
            node_cache: 1_000,
            node_cache_bytes: 256 << 20,
            max_ephemeral_bytes: 1 << 20,
            presence_lease: Duration::from_secs(15),
            response_timeout: Duration::from_secs(2),
            connection_timeout: Duration::from_secs(2),
            max_reconnect_delay: Duration::from_secs(2),
            idempotency_window: Duration::from_secs(24 * 60 * 60),
            probe_interval: Duration::from_secs(2),
            probe_timeout: Duration::from_secs(6),
        }
    }

    /// The defaults, for the master that `sentinel`'s sentinels name
    /// ([`url`](Self::url) stays empty: it is not used).
    ///
    /// ```
    /// use push_redis::{RedisHubConfig, SentinelConfig};
    ///
    /// let sentinels = [("10.0.0.1", 26379), ("10.0.0.2", 26379), ("10.0.0.3", 26379)];
    /// let config = RedisHubConfig::through_sentinel(
    ///     SentinelConfig::new(sentinels, "mymaster").with_password("secret"),
    /// );
    /// assert_eq!(config.sentinel.as_ref().map(|s| s.master.as_str()), Some("mymaster"));
    /// // The password never shows in a log line.
    /// assert!(!format!("{config:?}").contains("secret"));
    /// ```
    pub fn through_sentinel(sentinel: SentinelConfig) -> Self {
        Self::new(String::new()).with_sentinel(sentinel)
    }

    /// Sets [`sentinel`](Self::sentinel).
    #[must_use]
    pub fn with_sentinel(mut self, sentinel: SentinelConfig) -> Self {
        self.sentinel = Some(sentinel);
        self
    }

    /// Sets [`prefix`](Self::prefix).
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets [`max_messages`](Self::max_messages) (at least 1).
    #[must_use]
    pub fn with_max_messages(mut self, max: usize) -> Self {
        self.max_messages = max.max(1);
        self
    }

    /// Sets [`max_message_bytes`](Self::max_message_bytes).
    #[must_use]
    pub fn with_max_message_bytes(mut self, max: usize) -> Self {
        self.max_message_bytes = max;
        self
    }

    /// Sets [`idle_ttl`](Self::idle_ttl) (at least 1 s), and
    /// [`idempotency_window`](Self::idempotency_window) to the same: set the
    /// window after this to choose another.
    #[must_use]
    pub fn with_idle_ttl(mut self, ttl: Duration) -> Self {
        self.idle_ttl = ttl.max(Duration::from_secs(1));
        self.idempotency_window = self.idle_ttl;
        self
    }

    /// Sets [`idempotency_window`](Self::idempotency_window) (at least 1 ms).
    #[must_use]
    pub fn with_idempotency_window(mut self, window: Duration) -> Self {
        self.idempotency_window = window.max(Duration::from_millis(1));
        self
    }

    /// Sets [`probe_interval`](Self::probe_interval) (at least 1 ms), and
    /// [`probe_timeout`](Self::probe_timeout) to three times it: set the
    /// timeout after this to choose another.
    #[must_use]
    pub fn with_probe_interval(mut self, interval: Duration) -> Self {
        self.probe_interval = interval.max(Duration::from_millis(1));
        self.probe_timeout = self.probe_interval.saturating_mul(3);
        self
    }

    /// Sets [`probe_timeout`](Self::probe_timeout).
    #[must_use]
    pub fn with_probe_timeout(mut self, timeout: Duration) -> Self {
        self.probe_timeout = timeout;
        self
    }

    /// Sets [`response_timeout`](Self::response_timeout) (at least 1 ms).
    #[must_use]
    pub fn with_response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Sets [`connection_timeout`](Self::connection_timeout) (at least 1 ms).
    #[must_use]
    pub fn with_connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Sets [`max_reconnect_delay`](Self::max_reconnect_delay).
    #[must_use]
    pub fn with_max_reconnect_delay(mut self, delay: Duration) -> Self {
        self.max_reconnect_delay = delay;
        self
    }

    /// Checks the settings a hub cannot run with.
    pub(crate) fn validate(&self) -> Result<(), push_core::Error> {
        let reason = if self.max_message_bytes == 0 {
            "max_message_bytes must be at least 1"
        } else if self.probe_interval.is_zero() {
            "probe_interval must be more than zero"
        } else if self.presence_lease < Duration::from_millis(300) {
            "presence_lease must be at least 300 ms"
        } else if self.response_timeout.is_zero() || self.connection_timeout.is_zero() {
            "response_timeout and connection_timeout must be more than zero"
        } else if let Some(sentinel) = &self.sentinel {
            return sentinel.validate();
        } else {
            return Ok(());
        };
        Err(push_core::Error::InvalidConfig { reason })
    }

    /// How long the node's own retry keys live: long enough for the one
    /// retry after a failed attempt (an answer's wait, a reconnection).
    pub(crate) fn retry_window(&self) -> Duration {
        self.response_timeout
            .saturating_add(self.connection_timeout)
            .saturating_mul(2)
            .max(Duration::from_secs(1))
    }

    /// Sets [`node_cache`](Self::node_cache) (at least 1).
    #[must_use]
    pub fn with_node_cache(mut self, messages: usize) -> Self {
        self.node_cache = messages.max(1);
        self
    }

    /// Sets [`node_cache_bytes`](Self::node_cache_bytes).
    #[must_use]
    pub fn with_node_cache_bytes(mut self, bytes: usize) -> Self {
        self.node_cache_bytes = bytes;
        self
    }

    /// Sets [`presence_lease`](Self::presence_lease).
    #[must_use]
    pub fn with_presence_lease(mut self, lease: Duration) -> Self {
        self.presence_lease = lease;
        self
    }

    /// Sets [`max_ephemeral_bytes`](Self::max_ephemeral_bytes).
    #[must_use]
    pub fn with_max_ephemeral_bytes(mut self, bytes: usize) -> Self {
        self.max_ephemeral_bytes = bytes;
        self
    }
}

/// Where Redis Sentinel says the master is: the sentinels to ask, the name
/// they monitor the master under, and how to log in to it.
///
/// The hub asks the sentinels for the master before each connection, and
/// listens to them (`+switch-master`, and the promotion of a replica as it
/// starts) to move as soon as a failover happens; see docs/scaling.md.
#[derive(Clone)]
#[non_exhaustive]
pub struct SentinelConfig {
    /// The sentinels, as `(host, port)` (at least one; list them all: any
    /// one that answers will do, and the hub listens to each for failovers).
    pub sentinels: Vec<(String, u16)>,
    /// The master's name, as the sentinels monitor it (`sentinel monitor
    /// NAME …`).
    pub master: String,
    /// The username on the master and its replicas (Redis ACL), if any.
    pub username: Option<String>,
    /// The password of the master and its replicas (`requirepass`, or the
    /// ACL user's), if any. The sentinels themselves are asked without one.
    pub password: Option<String>,
}

impl SentinelConfig {
    /// The sentinels at `sentinels`, monitoring the master named `master`;
    /// no password.
    pub fn new<H: Into<String>>(
        sentinels: impl IntoIterator<Item = (H, u16)>,
        master: impl Into<String>,
    ) -> Self {
        SentinelConfig {
            sentinels: sentinels
                .into_iter()
                .map(|(host, port)| (host.into(), port))
                .collect(),
            master: master.into(),
            username: None,
            password: None,
        }
    }

    /// Sets [`password`](Self::password).
    #[must_use]
    pub fn with_password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Sets [`username`](Self::username).
    #[must_use]
    pub fn with_username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    fn validate(&self) -> Result<(), push_core::Error> {
        let reason = if self.sentinels.is_empty() {
            "sentinel: name at least one sentinel"
        } else if self
            .sentinels
            .iter()
            .any(|(host, port)| host.is_empty() || *port == 0)
        {
            "sentinel: each sentinel needs a host and a port other than 0"
        } else if self.master.is_empty()
            || self
                .master
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            "sentinel: the master's name must be non-empty, without spaces or control characters"
        } else {
            return Ok(());
        };
        Err(push_core::Error::InvalidConfig { reason })
    }
}

impl std::fmt::Debug for SentinelConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelConfig")
            .field("sentinels", &self.sentinels)
            .field("master", &self.master)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .finish()
    }
}
