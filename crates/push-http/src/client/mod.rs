//! The clients' shared parts: the error every push client yields, the
//! I/O-free [`Resume`] state, and (feature `client`) the thin HTTP shell
//! around it: [`Sender`], [`parse_url`], [`with_params`], [`read_body`],
//! [`within`], and [`Polling`], the request/answer loop of the polling
//! clients.

mod error;
mod resume;
#[cfg(feature = "client")]
mod shell;

pub use self::error::ClientError;
pub use self::resume::Resume;
#[cfg(feature = "client")]
pub use self::shell::{
    BoxFuture, Exchange, Polling, Sender, parse_url, read_body, with_params, within,
};
