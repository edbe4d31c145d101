//! Long polling for **push**, on hyper, over any [`push_core::Hub`].
//!
//! The client asks what is new after its cursor; the server holds the request
//! until there is something (or a timeout), then answers, and the client asks
//! again at once. Near-real-time over plain request/response, so it passes
//! every proxy and firewall.
//!
//! - Server: [`LongPollHandler`], a hyper `Service` (or call
//!   [`LongPollHandler::handle`] from your own router), configured by
//!   [`LongPollConfig`]. A held request waits on the hub's wake-up: ten
//!   thousand of them cost no CPU while idle.
//! - Client (feature `client`): [`LongPoller`], a `Stream` of hub items that
//!   keeps its cursor and backs off on errors.
//!
//! The wire format is in docs/protocol.md:
//!
//! ```text
//! GET /longpoll/news?since=5eed.41&timeout=30
//! … held until a publish …
//! 200 OK   ETag: "5eed.42"   Cache-Control: no-store
//! {"cursor":"5eed.42","more":false,"messages":[{"channel":"news","id":"5eed.42",…}]}
//!
//! GET /longpoll/news?since=5eed.42&timeout=30
//! … 30 s, nothing …
//! 204 No Content   ETag: "5eed.42"
//! ```
#![deny(missing_docs)]

#[cfg(feature = "client")]
mod client;
mod server;

#[cfg(feature = "client")]
pub use crate::client::{Error, LongPoller, LongPollerConfig};
pub use crate::server::{LongPollConfig, LongPollHandler};
