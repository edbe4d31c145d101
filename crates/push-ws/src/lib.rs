//! WebSockets on hyper and tungstenite, over any push-core [`Hub`](push_core::Hub).
//!
//! - [`WsHandler`] with [`WsConfig::default`]: `GET /ws/{channel}`, one
//!   channel per socket, each message one text frame with its JSON envelope
//!   (what a browser's `new WebSocket(url)` wants); resumes with `?since=`.
//! - [`WsHandler`] with [`WsConfig::commands`]: `GET /ws` with the `push.v1`
//!   subprotocol, JSON commands to subscribe, unsubscribe and publish, many
//!   channels on one socket, each command acknowledged.
//! - The handshake is checked in full (RFC 6455; RFC 8441 extended CONNECT
//!   over HTTP/2), with an origin allow-list; a heartbeat closes silent peers,
//!   a write timeout peers that stop reading; a subscriber that falls behind
//!   gets the gap signal (or is closed, by policy) and never makes the server
//!   buffer.
//! - `WsSubscriber` and `WsSession` (feature `client`): Rust clients for the
//!   two endpoints that reconnect with backoff and resume every channel from
//!   its last cursor; `WsControl::publish` waits for the server's ack.
//!
//! The wire format is specified in the project's `docs/protocol.md` (§5).

#[cfg(feature = "client")]
mod client;
mod config;
mod deflate;
mod handshake;
mod incoming;
mod protocol;
mod server;
mod socket;

pub use crate::config::{Endpoint, Origins, SlowConsumer, WsConfig};
pub use crate::handshake::SUBPROTOCOL;
pub use crate::server::WsHandler;
pub use push_http::{Access, ChannelRule};

#[cfg(feature = "client")]
pub use crate::client::{Error, WsClientConfig, WsControl, WsSession, WsSubscriber};

/// The parsers of what peers send, for the fuzz targets in the repository's
/// `fuzz/` crate (docs/fuzzing.md): not part of the API, no semver promise.
#[doc(hidden)]
pub mod __fuzz {
    #[cfg(feature = "client")]
    pub use crate::client::{Frame, parse_frame, subscribe_command};
    pub use crate::protocol::{
        Acked, Command, Refused, ack, error, parse as parse_command, signal, subscribed,
    };
}
