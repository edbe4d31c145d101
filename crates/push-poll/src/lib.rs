//! Short (interval) polling for **push**, on hyper, over any
//! [`push_core::Hub`].
//!
//! The client asks every few seconds for what is new after its cursor and gets
//! an answer at once. The simplest technique, the only one a CDN can cache,
//! and fine for rare updates; an unchanged channel costs a `304` with no body.
//!
//! - Server: [`PollHandler`], a hyper `Service` (or call
//!   [`PollHandler::handle`] from your own router), configured by
//!   [`PollConfig`].
//! - Client (feature `client`): [`Poller`], a `Stream` of hub items that keeps
//!   its cursor, honours `304`, `more` and the advised interval, and backs off
//!   on errors.
//!
//! The wire format is in docs/protocol.md:
//!
//! ```text
//! GET /poll/news?since=5eed.41
//! 200 OK   ETag: "5eed.43"   Push-Poll-Interval: 5000   Cache-Control: no-cache
//! {"cursor":"5eed.43","more":false,"messages":[{"channel":"news","id":"5eed.42",…},…]}
//!
//! GET /poll/news?since=5eed.43   If-None-Match: "5eed.43"
//! 304 Not Modified
//! ```
#![deny(missing_docs)]

#[cfg(feature = "client")]
mod client;
mod server;

#[cfg(feature = "client")]
pub use crate::client::{Error, Poller, PollerConfig};
pub use crate::server::{PollConfig, PollHandler};
