//! **push**: live updates from a hyper server to its clients, with all four
//! classic techniques — short polling, long polling, Server-Sent Events and
//! WebSockets — over one core of channels, message history and resumable
//! cursors.
//!
//! This crate is a facade: it re-exports [`push_core`] (always) and each
//! transport crate behind its feature (`poll`, `longpoll`, `sse`, `ws`; all on
//! by default), and the Redis hub behind `redis` (off by default). Its own
//! server, `serve` (the accept loop, with deadlines, connection limits and
//! graceful shutdown), is the `serve` feature, with HTTP/2 as `http2` (both
//! on by default) and TLS as `tls` (off by default). Depend on one transport
//! crate alone, or on `push-live` with `default-features = false` and the
//! features you serve: `features = ["sse"]` is Server-Sent Events for a
//! server of your own (axum, hyper), without h2. With `tower`,
//! [`Router`] and every handler are `tower::Service`s that axum mounts in
//! one line (docs/axum.md); [`js`] serves the browser client, push.js.
//!
//! ```
//! use futures_util::StreamExt;
//! use push_live::{Hub, Item, MemoryHub, Publication, Start};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), push_live::Error> {
//! let hub = MemoryHub::new();
//! let news = "news".parse()?;
//! let mut subscription = hub.subscribe(&news, Start::Live).await?;
//! hub.publish(&news, Publication::new("hello")).await?;
//! let Some(Item::Message(message)) = subscription.next().await else { unreachable!() };
//! assert_eq!(&message.data()[..], b"hello");
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub use push_core::*;

pub mod js;
mod router;
#[cfg(feature = "serve")]
mod serve;
/// Without the `serve` feature, only the shutdown handle (its token is what
/// the router and the handlers end their streams and sockets with).
#[cfg(not(feature = "serve"))]
mod serve {
    mod shutdown;
    pub use shutdown::Shutdown;
}

pub use router::{Call, Route, Router, RouterBody, RouterConfig, RouterFuture};
pub use serve::Shutdown;
#[cfg(feature = "serve")]
pub use serve::{ServeConfig, ServeStats, bind, serve};
/// rustls, as [`ServeConfig::with_tls`] takes it (feature `tls`): build a
/// `ServerConfig` with this one, so that the versions match.
#[cfg(feature = "tls")]
pub use tokio_rustls::rustls;
/// The cancellation token type of [`Shutdown::token`] and the transports'
/// `shutdown` settings.
pub use tokio_util::sync::CancellationToken;
/// The task tracker type of [`Shutdown::track`].
pub use tokio_util::task::TaskTracker;

/// The core crate, for paths that name it.
pub use push_core as core;

/// The hyper glue the transports share: the request reader ([`http::Head`],
/// [`http::Query`], [`http::ChannelLocator`]), the JSON answers, ETags, and
/// the clients' error ([`http::ClientError`]).
pub use push_http as http;

/// Short (interval) polling.
#[cfg(feature = "poll")]
pub use push_poll as poll;

/// Long polling.
#[cfg(feature = "longpoll")]
pub use push_longpoll as longpoll;

/// Server-Sent Events.
#[cfg(feature = "sse")]
pub use push_sse as sse;

/// WebSockets.
#[cfg(feature = "ws")]
pub use push_ws as ws;

/// The Rust clients (feature `client`): one for each technique this build
/// serves, and the HTTP [`Publisher`](client::Publisher). Every client takes
/// headers (`with_header`) and, with the `rustls` feature, `https://` and
/// `wss://`. docs/rust-clients.md shows each.
#[cfg(feature = "client")]
pub mod client {
    pub use push_http::ClientError;
    /// rustls, whose `ClientConfig` the clients take (feature `rustls`).
    #[cfg(feature = "rustls")]
    pub use push_http::client::rustls;
    pub use push_http::client::{
        HttpOptions, Outcome, PublishError, Publisher, PublisherConfig, Sender,
    };
    #[cfg(feature = "longpoll")]
    pub use push_longpoll::{LongPoller, LongPollerConfig};
    #[cfg(feature = "poll")]
    pub use push_poll::{Poller, PollerConfig};
    #[cfg(feature = "sse")]
    pub use push_sse::{EventSource, EventSourceConfig};
    #[cfg(feature = "ws")]
    pub use push_ws::{WsClientConfig, WsControl, WsSession, WsSubscriber};
}

/// The hub on Redis, for several nodes (feature `redis`, not on by default).
#[cfg(feature = "redis")]
pub use push_redis as redis;

// The README's Rust snippets compile and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

// So do docs/axum.md's.
#[cfg(all(doctest, feature = "tower", feature = "sse"))]
#[doc = include_str!("../docs/axum.md")]
struct AxumDoctests;

// And docs/rust-clients.md's (TLS included).
#[cfg(all(
    doctest,
    feature = "rustls",
    feature = "poll",
    feature = "longpoll",
    feature = "sse",
    feature = "ws"
))]
#[doc = include_str!("../docs/rust-clients.md")]
struct RustClientsDoctests;

// And docs/scaling.md's.
#[cfg(all(doctest, feature = "redis"))]
#[doc = include_str!("../docs/scaling.md")]
struct ScalingDoctests;
