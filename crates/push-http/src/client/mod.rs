//! The clients' shared parts: the error every push client yields, the
//! I/O-free [`Resume`] state, the [`HttpOptions`] every client takes
//! (headers, TLS), and (feature `client`) the thin HTTP shell around them:
//! [`Sender`], [`parse_url`], [`with_params`], [`read_body`], [`within`],
//! [`Polling`], the request/answer loop of the polling clients, and the
//! [`Publisher`] (`POST /pub/{channel}`, retried safely with an idempotency
//! key).

mod error;
mod options;
#[cfg(feature = "client")]
mod publisher;
mod resume;
#[cfg(feature = "client")]
mod shell;

pub use self::error::ClientError;
pub use self::options::HttpOptions;
#[cfg(feature = "client")]
pub use self::publisher::{Outcome, PublishError, Publisher, PublisherConfig};
pub use self::resume::Resume;
#[cfg(feature = "client")]
pub use self::shell::{
    BoxFuture, Exchange, Polling, Sender, parse_url, read_body, with_params, within,
};

/// rustls, whose `ClientConfig` the clients take (feature `rustls`).
#[cfg(feature = "rustls")]
pub use rustls;

/// What [`client_options!`](crate::client_options) names in the crate that
/// calls it.
#[doc(hidden)]
pub mod __private {
    pub use http;
}
