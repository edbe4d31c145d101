//! The standalone push server, as a library: what `push-server` runs, for
//! tests and for embedding it whole.
//!
//! ```no_run
//! use clap::Parser as _;
//! use push_server::{Server, cli::Args};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let args = Args::parse_from(["push-server", "--listen", "127.0.0.1:0"]);
//! let server = Server::new(&args).await?;
//! let listener = push_live::bind(args.listen, args.backlog)?;
//! server.run(listener).await?;
//! # Ok(())
//! # }
//! ```

pub mod app;
pub mod auth;
pub mod cli;
pub mod metrics;
pub mod proxy;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use push_live::http::Technique;
use push_live::{
    Either, MemoryHub, MemoryHubConfig, Router, RouterConfig, ServeConfig, ServeStats, Shutdown,
};
use push_redis::RedisHub;
use tokio::net::TcpListener;

use crate::app::{App, Cors, Policy};
use crate::auth::{JwtVerifier, PublishToken};
use crate::cli::Args;
use crate::metrics::{Metered, Metrics};

/// The hub the server runs on, chosen at start: in memory (one node), or on
/// Redis (several).
type ServerHub = Either<MemoryHub, RedisHub>;

/// How often idle channels are swept from the memory hub.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Settings that do not fit together, or an unusable secret.
    #[error("invalid settings: {0}")]
    Settings(String),
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    Config(#[from] push_live::Error),
    /// Redis could not be reached.
    #[error("cannot use Redis: {0}")]
    Redis(push_live::Error),
    /// `--tls-cert` or `--tls-key` unreadable or unusable.
    #[error("cannot serve TLS: {0}")]
    Tls(String),
}

/// The server, built from its settings, not yet running.
pub struct Server {
    app: App<ServerHub>,
    hub: Arc<Metered<ServerHub>>,
    stats: Arc<ServeStats>,
    serve: ServeConfig,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("serve", &self.serve)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Builds the hub (connecting to Redis with `--redis-url`, or through
    /// `--redis-sentinel`), the router
    /// and the app from `args`.
    ///
    /// # Errors
    /// A setting the hub or the auth rejects, or Redis unreachable.
    pub async fn new(args: &Args) -> Result<Server, StartError> {
        args.validate().map_err(StartError::Settings)?;
        // Read first: a bad file stops the server before it connects anywhere.
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(tls::load(cert, key).map_err(StartError::Tls)?),
            (None, None) => None,
            _ => {
                return Err(StartError::Settings(
                    "--tls-cert and --tls-key go together: give both or neither".to_owned(),
                ));
            }
        };
        let hub = match args.redis_hub_config().map_err(StartError::Settings)? {
            None => Either::Left(MemoryHub::with_config({
                let config = MemoryHubConfig::default()
                    .with_max_messages(args.history_messages)
                    .with_max_bytes(args.history_bytes)
                    .with_max_age(args.history_seconds)
                    .with_max_message_bytes(args.max_message_bytes)
                    .with_max_channels(args.max_channels)
                    .with_max_retained_bytes(args.max_retained_bytes)
                    .with_max_ephemeral_bytes(args.max_ephemeral_bytes)
                    .with_max_presence_leases(args.max_presence);
                match args.max_unpublished_channels {
                    0 => config,
                    max => config.with_max_unpublished_channels(max),
                }
            })?),
            Some(redis) => Either::Right(
                RedisHub::connect(
                    redis
                        .with_prefix(args.redis_prefix.clone())
                        .with_max_messages(args.history_messages)
                        .with_max_message_bytes(args.max_message_bytes)
                        .with_idle_ttl(args.history_seconds)
                        .with_probe_interval(args.redis_probe_interval)
                        .with_presence_lease(args.presence_lease)
                        .with_node_cache_bytes(args.max_retained_bytes)
                        .with_max_ephemeral_bytes(args.max_ephemeral_bytes)
                        .with_max_presence_entries(args.max_presence),
                )
                .await
                .map_err(StartError::Redis)?,
            ),
        };
        let metrics = Arc::new(Metrics::default());
        let hub = Arc::new(Metered::new(hub, metrics.clone()));
        let cors = Cors::from_origins(&args.allowed_origins);
        let mut config = RouterConfig::default()
            .with_publish(true)
            .with_max_message_bytes(args.max_message_bytes)
            .with_publish_body_timeout(args.publish_body_timeout);
        config.poll = config.poll.with_interval(args.poll_interval);
        config.longpoll = config
            .longpoll
            .with_default_timeout(args.longpoll_timeout)
            .with_max_timeout(args.longpoll_max_timeout);
        config.sse = config
            .sse
            .with_keep_alive(args.sse_keep_alive)
            .with_retry(args.sse_retry);
        if !args.sse_max_lifetime.is_zero() {
            config.sse = config.sse.with_max_lifetime(args.sse_max_lifetime);
        }
        let slow = if args.ws_close_slow {
            push_live::ws::SlowConsumer::Close
        } else {
            push_live::ws::SlowConsumer::Signal
        };
        let ws = |ws: push_live::ws::WsConfig| {
            let ws = ws
                .with_origins(cors.ws_origins())
                .with_heartbeat(args.ws_ping, args.ws_pong_timeout)
                .with_write_timeout(args.write_timeout)
                .with_max_message_bytes(args.ws_max_message_bytes)
                .with_max_subscriptions(args.ws_max_subscriptions)
                .with_slow_consumer(slow);
            match args.ws_deflate {
                Some(threshold) => ws.with_deflate(threshold),
                None => ws,
            }
        };
        config.ws = ws(config.ws);
        config.ws_commands = ws(config.ws_commands).with_publish(args.ws_publish);
        // Each technique's handler reaches the hub through a handle of its
        // own, labelled for the metrics.
        let router = Router::<Metered<ServerHub>>::with_hub_for(
            hub.clone(),
            |hub, technique| Arc::new(hub.labelled(technique)),
            config,
        );
        let flag = |flag: &'static str| {
            move |err: auth::AuthError| StartError::Settings(format!("{flag}: {err}"))
        };
        let policy = Policy {
            publish_token: args
                .publish_token
                .as_deref()
                .map(PublishToken::new)
                .transpose()
                .map_err(flag("--publish-token"))?,
            publish_protected: args.publish_protected(),
            jwt: args
                .jwt_secret
                .as_deref()
                .map(|secret| JwtVerifier::new(secret.as_bytes()))
                .transpose()
                .map_err(flag("--jwt-secret"))?,
            cors,
            techniques: Technique::ALL.map(|t| args.transports.contains(&t)),
            authorize: match &args.auth_proxy_url {
                Some(url) => Some(Arc::new(proxy::AuthProxy::new(
                    proxy::ProxyConfig::new(url)
                        .and_then(|config| config.with_forward(&args.auth_proxy_forward_headers))
                        .map_err(|err| StartError::Settings(format!("--auth-proxy-url: {err}")))?
                        .with_timeout(args.auth_proxy_timeout)
                        .with_cache(args.auth_proxy_cache_seconds, args.auth_proxy_cache_size),
                ))),
                None => None,
            },
        };
        let stats = Arc::new(ServeStats::default());
        let mut app = App::new(router, metrics, stats.clone(), policy);
        match hub.inner() {
            Either::Left(memory) => app = app.with_memory_hub(memory.clone()),
            Either::Right(redis) => app = app.with_redis_hub(redis.clone()),
        }
        let mut serve = ServeConfig::default()
            .with_grace(args.shutdown_grace)
            .with_header_timeout(args.header_timeout)
            .with_idle_timeout(args.idle_timeout)
            .with_write_timeout(args.write_timeout)
            .with_http2_ping(args.http2_ping_interval, args.http2_ping_timeout)
            .with_max_header_bytes(args.max_header_bytes);
        if args.max_connections > 0 {
            serve = serve.with_max_connections(args.max_connections);
        }
        if args.max_connections_per_ip > 0 {
            serve = serve.with_max_connections_per_ip(args.max_connections_per_ip);
        }
        if let Some(tls) = tls {
            serve = serve.with_tls(tls);
        }
        Ok(Server {
            app,
            hub,
            stats,
            serve,
        })
    }

    /// The handle that stops it gracefully.
    pub fn shutdown(&self) -> Shutdown {
        self.app.shutdown()
    }

    /// Serves on `listener` until the shutdown is triggered and done.
    ///
    /// # Errors
    /// From [`push_live::serve`].
    pub async fn run(self, listener: TcpListener) -> std::io::Result<()> {
        let shutdown = self.shutdown();
        let hub = self.hub.clone();
        let sweeping = shutdown.clone();
        tokio::spawn(async move {
            let Some(memory) = hub.inner().left() else {
                return; // Redis expires idle channels itself.
            };
            let mut interval = tokio::time::interval(SWEEP_INTERVAL);
            loop {
                tokio::select! {
                    _ = interval.tick() => {
                        let freed = memory.sweep();
                        if freed > 0 {
                            tracing::debug!(freed, "idle channels swept");
                        }
                    }
                    () = sweeping.triggered() => break,
                }
            }
        });
        // Pollers' presence leases lapse on the memory hub when this looks
        // (the Redis hub runs its own renewals and expiry).
        let hub = self.hub.clone();
        let expiring = shutdown.clone();
        tokio::spawn(async move {
            let Some(memory) = hub.inner().left() else {
                return;
            };
            loop {
                let next = memory
                    .expire_presence()
                    .unwrap_or(PRESENCE_TICK)
                    .clamp(Duration::from_millis(50), PRESENCE_TICK);
                tokio::select! {
                    () = tokio::time::sleep(next) => {}
                    () = expiring.triggered() => break,
                }
            }
        });
        push_live::serve(listener, self.app, shutdown, self.serve, Some(self.stats)).await
    }
}

/// The longest a lapsed poller's lease waits to be noticed (and its leave
/// announced) on the memory hub.
const PRESENCE_TICK: Duration = Duration::from_secs(1);
