//! What subscribers receive: messages, and the signals that say continuity broke.

use std::sync::Arc;

use crate::{Cursor, Message};

/// Some messages after the subscriber's cursor are no longer retained.
///
/// Sent before the first message that does follow, so that a client knows its
/// view has a hole (and can reload state) instead of silently missing updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Gap {
    /// The cursor the subscriber was at (asked to resume after).
    pub since: Cursor,
    /// The cursor delivery continues after: the last message that was lost.
    /// A client stores it as its position, exactly as it would a message's id.
    pub resume: Cursor,
    /// How many messages were lost, when the hub knows.
    pub missed: Option<u64>,
}

impl Gap {
    /// A gap from `since` to `resume` that lost `missed` messages.
    pub fn new(since: Cursor, resume: Cursor, missed: Option<u64>) -> Self {
        Gap {
            since,
            resume,
            missed,
        }
    }
}

/// The subscriber's cursor belongs to another history (another epoch): the hub
/// restarted, the channel was freed and created again, or the cursor is not
/// one of this channel's. Nothing can be said about what was missed; what the
/// channel retains now follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reset {
    /// The cursor the subscriber asked to resume after.
    pub since: Cursor,
    /// The cursor delivery continues after, in the current history.
    pub resume: Cursor,
}

impl Reset {
    /// A reset from a foreign `since` to `resume` in the current history.
    pub fn new(since: Cursor, resume: Cursor) -> Self {
        Reset { since, resume }
    }
}

/// A break in continuity, delivered before the messages that follow it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Messages were lost from the history.
    Gap(Gap),
    /// The history itself was replaced.
    Reset(Reset),
}

impl Signal {
    /// The cursor delivery continues after.
    pub fn resume(&self) -> Cursor {
        match self {
            Signal::Gap(gap) => gap.resume,
            Signal::Reset(reset) => reset.resume,
        }
    }

    /// The cursor the subscriber was at.
    pub fn since(&self) -> Cursor {
        match self {
            Signal::Gap(gap) => gap.since,
            Signal::Reset(reset) => reset.since,
        }
    }
}

/// One thing a subscription yields: a message, or a continuity signal.
///
/// Every item carries the cursor to resume after once it is handled
/// ([`Item::cursor`]), so a client that stores it after each item and resumes
/// from it never misses or repeats anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A message.
    Message(Arc<Message>),
    /// A gap or reset, before the messages that follow it.
    Signal(Signal),
}

impl Item {
    /// The cursor to resume after once this item is handled.
    pub fn cursor(&self) -> Cursor {
        match self {
            Item::Message(message) => message.cursor(),
            Item::Signal(signal) => signal.resume(),
        }
    }
}

/// What a one-shot read returns: up to a limit of messages after a start, for
/// short polling and for the first step of long polling.
///
/// ```
/// use push_core::{Hub, MemoryHub, Publication, Start};
/// # futures_util::FutureExt::now_or_never(async {
/// let hub = MemoryHub::new();
/// let news = "news".parse()?;
/// for n in 0..3 {
///     hub.publish(&news, Publication::new(format!("{n}"))).await?;
/// }
/// let first = hub.read(&news, Start::Earliest, 2).await?;
/// assert_eq!(first.messages.len(), 2);
/// assert!(first.more);
/// // Resuming from the batch's cursor gets the rest, nothing twice.
/// let rest = hub.read(&news, Start::After(first.cursor), 2).await?;
/// assert_eq!(&rest.messages[0].data()[..], b"2");
/// assert!(!rest.more);
/// # Ok::<(), push_core::Error>(()) }).unwrap()?;
/// # Ok::<(), push_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Batch {
    /// A gap or reset that comes before `messages`.
    pub signal: Option<Signal>,
    /// The messages, in order.
    pub messages: Vec<Arc<Message>>,
    /// Where the next read resumes: the id of the last message in the batch,
    /// else the signal's resume cursor, else the start (for a live start or
    /// `earliest` on an empty channel, the channel's head).
    pub cursor: Cursor,
    /// More messages follow `cursor` already: the batch was cut at the limit.
    pub more: bool,
}

impl Batch {
    /// A batch from its parts.
    pub fn new(
        signal: Option<Signal>,
        messages: Vec<Arc<Message>>,
        cursor: Cursor,
        more: bool,
    ) -> Self {
        Batch {
            signal,
            messages,
            cursor,
            more,
        }
    }

    /// `true` when there is neither a message nor a signal: nothing new.
    pub fn is_empty(&self) -> bool {
        self.signal.is_none() && self.messages.is_empty()
    }
}
