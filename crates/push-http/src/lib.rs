//! The hyper glue every **push** transport shares, written once: push-core
//! holds the model and knows no HTTP; the transports (push-poll,
//! push-longpoll, push-sse, push-ws) depend on this crate and never on each
//! other, as axum-core sits under axum.
//!
//! Server side:
//!
//! - [`Head`]: the one request reader. A request's query is split once,
//!   whoever reads it (a token check, the router, the transport), and the
//!   channel, start and limit are read from it the same way everywhere.
//! - [`Query`], [`ChannelLocator`]: query parameters and where the channel
//!   is; [`EntityTag`], [`cursor_from_etag`] and the header names and values
//!   the transports share.
//! - [`respond`], [`error`], [`error_for`], [`method_not_allowed`]: the
//!   answers every handler writes alike (JSON errors, `405` with `Allow`).
//! - [`Handler`] and [`service!`]: one shape for every handler, and the hyper
//!   `Service` each gets from it.
//! - [`Live`] and [`LiveCount`]: the count of held requests, streams and
//!   sockets, and the guard that keeps one counted while it lives.
//! - [`Technique`]: the four techniques, one name each, for routers,
//!   servers, metrics and command lines; [`Access`], what one connection
//!   may do, and [`Authorize`], the app's hook that allows, denies or maps
//!   each subscribe and publish on every technique alike.
//!
//! Client side ([`client`]): [`ClientError`], the error every push client
//! yields; [`client::Resume`], a reconnecting client's state with no I/O
//! (start, last cursor, buffer, backoff, advised interval); and, with the
//! `client` feature, the thin HTTP shell around it.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use push_core::Start;
//! use push_http::{ChannelLocator, Head};
//!
//! # fn main() -> Result<(), push_core::Error> {
//! let (parts, ()) = http::Request::get("/poll/news?since=earliest").body(()).unwrap().into_parts();
//! let head = Head::read(parts, push_http::DEFAULT_MAX_QUERY_BYTES);
//! let channel = head.channel(&ChannelLocator::LastPathSegment)?;
//! assert_eq!((channel.as_str(), head.start()?), ("news", Start::Earliest));
//!
//! let refused = push_http::method_not_allowed::<Full<Bytes>>("GET", "GET only");
//! assert_eq!(refused.status(), 405);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod access;
mod authorize;
pub mod client;
mod handler;
mod head;
mod headers;
mod live;
mod presence;
mod query;
mod respond;
mod technique;

pub use crate::access::{Access, ChannelRule};
pub use crate::authorize::{Action, Authorize, Check, Deciding, Decision, Denial, peer};
pub use crate::client::ClientError;
pub use crate::handler::{Call, Handler, call, handle, handle_with};
pub use crate::head::Head;
pub use crate::headers::{
    CACHE_NEVER, CACHE_REVALIDATE, EntityTag, POLL_INTERVAL, cursor_from_etag, if_none_match_names,
    is_quoted,
};
pub use crate::live::{Live, LiveCount};
pub use crate::presence::{Attended, PRESENCE_GRACE, is_presence, member, poll_key};
pub use crate::query::{
    ChannelLocator, DEFAULT_MAX_QUERY_BYTES, LocatorFn, MAX_PARAMETERS, Query, path_with_params,
};
pub use crate::respond::{
    error, error_for, error_plain, json, method_not_allowed, respond, status_of,
};
pub use crate::technique::{Technique, UnknownTechnique};

/// What [`service!`] expands to names, from here so that a transport need
/// not name them itself.
#[doc(hidden)]
pub mod __private {
    pub use http::{Request, Response};
    pub use hyper::service::Service;
    pub use push_core::Hub;
    #[cfg(feature = "tower")]
    pub use tower_service::Service as TowerService;
}
