//! The core of **push**: channels, messages, resumable cursors, the [`Hub`]
//! trait and the in-memory hub, [`MemoryHub`]. No HTTP, no sockets, and no
//! clock it is not handed.
//!
//! Every transport crate (short polling, long polling, Server-Sent Events,
//! WebSockets) is written against [`Hub`] and [`Item`], which is why a client can
//! move between transports and resume from the same [`Cursor`].
//!
//! # The model
//!
//! - A **channel** ([`ChannelName`]) holds a bounded **log** of [`Message`]s.
//! - Each message's id is a [`Cursor`]: an [`Epoch`] (which history) and a
//!   [`Position`] in it.
//! - A **subscriber** is a position in that log, not a queue: publishing is one
//!   append and one wake-up, however many subscribers there are.
//! - **Continuity**: resuming after a cursor yields exactly the messages after
//!   it, in order, once each; when the log no longer reaches back that far
//!   ([`Gap`]) or the cursor is from another epoch ([`Reset`]), the subscriber
//!   is told first ([`Item::Signal`]). Nothing is lost silently.
//! - **Encode once**: a [`Message`] keeps each wire encoding of itself, made by
//!   the first connection that needs it and shared by all ([`Message::encoded`]).
//! - **JSON as JSON**: data is bytes or one JSON value ([`ContentKind`]); a
//!   [`Publication::json`] is checked once, and every JSON envelope carries
//!   its value itself (`"data":{"a":1},"encoding":"json"`), which a Rust
//!   client reads typed with [`Message::json`].
//! - **Bounded memory**: the [`MemoryHub`] keeps all retained history, encodings
//!   included, within one byte budget, dropping the oldest messages of the whole
//!   hub first, and makes room for new channels by evicting ones nobody is
//!   subscribed to ([`MemoryHubConfig`], [`MemoryHub::stats`]). Whoever lost
//!   history to either is told, with a gap or a reset.
//!
//! ```
//! use futures_util::StreamExt;
//! use push_core::{Hub, Item, MemoryHub, Publication, Start};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), push_core::Error> {
//! let hub = MemoryHub::new();
//! let news = "news".parse()?;
//! let first = hub.publish(&news, Publication::new("one")).await?;
//! hub.publish(&news, Publication::new("two")).await?;
//!
//! // A client that saw "one" resumes after it, on any transport.
//! let mut resumed = hub.subscribe(&news, Start::After(first)).await?;
//! let Some(Item::Message(m)) = resumed.next().await else { unreachable!() };
//! assert_eq!(&m.data()[..], b"two");
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod backoff;
mod content;
mod cursor;
mod either;
mod ephemeral;
mod error;
mod hub;
mod item;
mod memory;
mod message;
mod names;
mod presence;
mod span;
mod time;
pub mod wire;

#[cfg(feature = "testing")]
pub mod testing;

pub use crate::backoff::Backoff;
pub use crate::content::{ContentKind, MAX_JSON_DEPTH};
pub use crate::cursor::{Cursor, CursorText, EARLIEST, Epoch, MAX_CURSOR_LEN, Position, Start};
pub use crate::either::Either;
pub use crate::ephemeral::EphemeralQueue;
pub use crate::error::{BoxError, Error};
pub use crate::hub::{Hub, Subscription, subscribe_pinned};
pub use crate::item::{Batch, Gap, Item, Reset, Signal};
pub use crate::memory::{
    ChannelStats, MemoryHub, MemoryHubConfig, MemoryHubStats, MemorySubscription,
};
pub use crate::message::{Message, Publication, WireFormat};
pub use crate::names::{
    ChannelName, EventName, IdempotencyKey, MAX_CHANNEL_NAME_LEN, MAX_EVENT_NAME_LEN,
    MAX_IDEMPOTENCY_KEY_LEN, RESERVED_EVENT_PREFIX,
};
pub use crate::presence::{
    Counts, JOIN_EVENT, LEAVE_EVENT, MAX_USER_LEN, Member, Presence, PresenceChange, PresencePage,
    PresenceSnapshot, PresentUser,
};
pub use crate::span::Span;
pub use crate::time::{Clock, ManualClock, SystemClock, Timestamp};
