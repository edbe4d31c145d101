//! Messages: what is published, and what every subscriber shares.

use std::fmt;
use std::sync::OnceLock;

use bytes::Bytes;

use crate::{ChannelName, Cursor, EventName, Timestamp};

/// What a publisher hands to [`Hub::publish`](crate::Hub::publish): the data and
/// an optional event name. The hub adds the cursor and the time.
///
/// ```
/// use push_core::{EventName, Publication};
///
/// let p = Publication::new("42.17").with_event("price".parse::<EventName>()?);
/// assert_eq!(&p.data()[..], b"42.17");
/// assert_eq!(p.size(), 5 + 5);
/// # Ok::<(), push_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publication {
    event: Option<EventName>,
    data: Bytes,
}

impl Publication {
    /// A publication of `data` with no event name.
    pub fn new(data: impl Into<Bytes>) -> Self {
        Publication {
            event: None,
            data: data.into(),
        }
    }

    /// Sets the event name.
    #[must_use]
    pub fn with_event(mut self, event: EventName) -> Self {
        self.event = Some(event);
        self
    }

    /// The event name, if any.
    pub fn event(&self) -> Option<&EventName> {
        self.event.as_ref()
    }

    /// The data.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// What the message costs in a hub's byte limits: data plus event name.
    pub fn size(&self) -> usize {
        self.data.len() + self.event.as_ref().map_or(0, |e| e.as_str().len())
    }

    /// Splits into its parts.
    pub fn into_parts(self) -> (Option<EventName>, Bytes) {
        (self.event, self.data)
    }
}

/// The wire formats whose encoding of a message is computed once and shared.
///
/// push-core does not know how to encode them (the transports do); it only keeps
/// one slot per format in every [`Message`], so the first connection that needs
/// a format fills it and every other connection reuses the same bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WireFormat {
    /// The JSON envelope `{"channel":…,"id":…,"event":…,"data":…}` that polling,
    /// long polling and WebSockets send.
    JsonEnvelope,
    /// One complete Server-Sent Events event, `id:` to the blank line, with
    /// the data as published.
    SseEvent,
    /// One complete Server-Sent Events event whose data is the JSON envelope.
    SseEnvelope,
}

impl WireFormat {
    const COUNT: usize = 3;

    fn slot(self) -> usize {
        match self {
            WireFormat::JsonEnvelope => 0,
            WireFormat::SseEvent => 1,
            WireFormat::SseEnvelope => 2,
        }
    }
}

/// A published message, as every subscriber receives it: shared behind an `Arc`,
/// so fanning it out to ten thousand subscribers copies a pointer, not the data.
///
/// ```
/// use bytes::Bytes;
/// use push_core::{Cursor, Message, Timestamp, WireFormat};
///
/// # let channel = "news".parse()?; let cursor: Cursor = "1.1".parse()?;
/// let message = Message::new(channel, cursor, None, Bytes::from("hi"), Timestamp::UNIX_EPOCH);
/// let first = message.encoded(WireFormat::SseEvent, |m| {
///     Bytes::from(format!("id: {}\ndata: hi\n\n", m.cursor()))
/// });
/// // The second caller gets the same bytes without encoding again.
/// let second = message.encoded(WireFormat::SseEvent, |_| unreachable!());
/// assert_eq!(first.as_ptr(), second.as_ptr());
/// # Ok::<(), push_core::Error>(())
/// ```
pub struct Message {
    channel: ChannelName,
    cursor: Cursor,
    event: Option<EventName>,
    data: Bytes,
    published_at: Timestamp,
    encoded: [OnceLock<Bytes>; WireFormat::COUNT],
}

impl Message {
    /// A message as a hub records it. Hubs call this; publishers use
    /// [`Publication`].
    pub fn new(
        channel: ChannelName,
        cursor: Cursor,
        event: Option<EventName>,
        data: Bytes,
        published_at: Timestamp,
    ) -> Self {
        Message {
            channel,
            cursor,
            event,
            data,
            published_at,
            encoded: Default::default(),
        }
    }

    /// The channel it was published to.
    pub fn channel(&self) -> &ChannelName {
        &self.channel
    }

    /// Its id: the cursor a subscriber resumes after.
    pub fn cursor(&self) -> Cursor {
        self.cursor
    }

    /// The event name, if the publisher gave one.
    pub fn event(&self) -> Option<&EventName> {
        self.event.as_ref()
    }

    /// The data, as published: any bytes.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// When the hub accepted it.
    pub fn published_at(&self) -> Timestamp {
        self.published_at
    }

    /// What the message costs in a hub's byte limits: data plus event name.
    pub fn size(&self) -> usize {
        self.data.len() + self.event.as_ref().map_or(0, |e| e.as_str().len())
    }

    /// The message encoded in `format`: computed by `encode` the first time it is
    /// asked for, then the same shared bytes for every caller.
    pub fn encoded(&self, format: WireFormat, encode: impl FnOnce(&Message) -> Bytes) -> Bytes {
        self.encoded[format.slot()]
            .get_or_init(|| encode(self))
            .clone()
    }
}

impl PartialEq for Message {
    /// Two messages are the same message when they have the same channel and id.
    fn eq(&self, other: &Self) -> bool {
        self.channel == other.channel && self.cursor == other.cursor
    }
}

impl Eq for Message {}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("channel", &self.channel)
            .field("cursor", &self.cursor)
            .field("event", &self.event)
            .field("data_len", &self.data.len())
            .field("published_at", &self.published_at)
            .finish_non_exhaustive()
    }
}
