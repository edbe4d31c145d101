//! Server-Sent Events on hyper, over any push-core [`Hub`](push_core::Hub).
//!
//! - [`EventBuilder`]: events written straight into one buffer; fields that
//!   must be one line are checked, data of any line ends becomes `data:` lines.
//! - [`Parser`]: the WHATWG event stream interpretation, incremental and
//!   bounded; what the client uses, and what the tests check the encoder with.
//! - [`SseHandler`]: `GET /sse/{channel}` as a hyper service: each message one
//!   event whose `id:` is its cursor, resumable with `Last-Event-ID` or
//!   `?since=`, gap and reset as `push.gap` / `push.reset` events, keep-alive
//!   comments, an optional stream lifetime. Each message is encoded once and
//!   its bytes shared by every stream.
//! - `EventSource` (feature `client`): a reconnecting client that yields the
//!   same [`Item`](push_core::Item)s as every other push client.
//!
//! ```no_run
//! use std::convert::Infallible;
//! use hyper::server::conn::http1;
//! use hyper_util::rt::TokioIo;
//! use push_core::{Hub, MemoryHub, Publication};
//! use push_sse::{SseConfig, SseHandler};
//!
//! # #[tokio::main] async fn main() -> std::io::Result<()> {
//! let hub = std::sync::Arc::new(MemoryHub::new());
//! let sse = SseHandler::<MemoryHub>::new(hub.clone(), SseConfig::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! // Publish from anywhere: every open stream of the channel gets it.
//! hub.publish(&"news".parse().unwrap(), Publication::new("hello")).await.ok();
//! loop {
//!     let (stream, _) = listener.accept().await?;
//!     let sse = sse.clone();
//!     tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), sse));
//! }
//! # }
//! ```
//!
//! The wire format is specified in the project's `docs/protocol.md` (§4).

mod encode;
mod parse;
mod server;

#[cfg(feature = "client")]
mod client;

pub use crate::encode::{
    ENCODING_FIELD, EventBuilder, FieldError, Format, GAP_EVENT, KEEP_ALIVE, RESET_EVENT,
    SUBSCRIBED_EVENT, message_event, opening_block, retry_block, signal_event,
};
pub use crate::parse::{Event, ParseError, Parser};
pub use crate::server::{LAST_EVENT_ID, SseBody, SseConfig, SseHandler, X_ACCEL_BUFFERING};

#[cfg(feature = "client")]
pub use crate::client::{Error, EventSource, EventSourceConfig};

/// The parsers of what peers send, for the fuzz targets in the repository's
/// `fuzz/` crate (docs/fuzzing.md): not part of the API, no semver promise.
#[doc(hidden)]
#[cfg(feature = "client")]
pub mod __fuzz {
    pub use crate::client::item_of;
}
