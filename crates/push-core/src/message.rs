//! Messages: what is published, and what every subscriber shares.

use std::fmt;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::content::compact_json;
use crate::memory::{Budget, ENCODING_OVERHEAD, MESSAGE_OVERHEAD};
use crate::{ChannelName, ContentKind, Cursor, Error, EventName, IdempotencyKey, Timestamp};

/// What a publisher hands to [`Hub::publish`](crate::Hub::publish): the data,
/// its [`ContentKind`] and an optional event name. The hub adds the cursor and
/// the time.
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
    kind: ContentKind,
    key: Option<IdempotencyKey>,
    ephemeral: bool,
}

impl Publication {
    /// A publication of `data`, any bytes ([`ContentKind::Bytes`]), with no
    /// event name.
    pub fn new(data: impl Into<Bytes>) -> Self {
        Publication {
            event: None,
            data: data.into(),
            kind: ContentKind::Bytes,
            key: None,
            ephemeral: false,
        }
    }

    /// A publication of one JSON value, given as its text
    /// ([`ContentKind::Json`]): every JSON envelope carries it as the value
    /// (`"data":{"a":1}`), not as a string. The text is checked, and kept
    /// compact (whitespace between tokens removed; strings and numbers
    /// exactly as written).
    ///
    /// ```
    /// use push_core::{ContentKind, Publication};
    ///
    /// let p = Publication::json("{ \"a\": [1, 2] }\n")?;
    /// assert_eq!(p.kind(), ContentKind::Json);
    /// assert_eq!(&p.data()[..], br#"{"a":[1,2]}"#);
    /// assert_eq!(Publication::json("{oops").unwrap_err().code(), "invalid_json");
    /// # Ok::<(), push_core::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidJson`] when `text` is not one JSON value, or nests
    /// deeper than [`MAX_JSON_DEPTH`](crate::MAX_JSON_DEPTH).
    pub fn json(text: impl Into<Bytes>) -> Result<Self, Error> {
        Ok(Publication {
            kind: ContentKind::Json,
            ..Publication::new(compact_json(text.into())?)
        })
    }

    /// A publication of `value` serialized as JSON ([`Publication::json`]).
    ///
    /// ```
    /// use push_core::Publication;
    ///
    /// let p = Publication::json_value(&[1, 2, 3])?;
    /// assert_eq!(&p.data()[..], b"[1,2,3]");
    /// # Ok::<(), push_core::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidJson`] when `value` cannot be serialized as JSON (a
    /// map with keys that are not strings, a failing `Serialize`), or nests
    /// too deep.
    pub fn json_value<T: Serialize + ?Sized>(value: &T) -> Result<Self, Error> {
        let text = serde_json::to_vec(value).map_err(|e| Error::invalid_json(e.to_string()))?;
        Publication::json(text)
    }

    /// The same publication of `kind`, its data taken as it is (for data
    /// this crate wrote itself).
    pub(crate) fn with_kind_trusted(mut self, kind: ContentKind) -> Self {
        self.kind = kind;
        self
    }

    /// What the data is: any bytes, or JSON.
    pub fn kind(&self) -> ContentKind {
        self.kind
    }

    /// Sets the idempotency key: a hub that already published a message with
    /// this key (within its window) answers that message's cursor and stores
    /// nothing; one published with another event or data under the same key
    /// fails with [`Error::IdempotencyKeyReused`](crate::Error::IdempotencyKeyReused).
    ///
    /// ```
    /// use push_core::{Hub, MemoryHub, Publication};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), push_core::Error> {
    /// let hub = MemoryHub::new();
    /// let news = "news".parse()?;
    /// let once = || Publication::new("hello").with_key("req-1".parse().unwrap());
    /// let first = hub.publish(&news, once()).await?;
    /// assert_eq!(hub.publish(&news, once()).await?, first); // a retry
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn with_key(mut self, key: IdempotencyKey) -> Self {
        self.key = Some(key);
        self
    }

    /// Makes it ephemeral (`?store=false` on the wire): delivered to the
    /// subscribers live now, on every technique, never kept in the history,
    /// never resumed, never a gap for anyone. For typing indicators and
    /// cursor positions. A hub answers the cursor it follows (the channel's
    /// head) and ignores an idempotency key: nothing is stored to compare.
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// use push_core::{Hub, Item, MemoryHub, Publication, Start};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), push_core::Error> {
    /// let hub = MemoryHub::new();
    /// let chat = "chat".parse()?;
    /// let mut live = hub.subscribe(&chat, Start::Live).await?;
    /// hub.publish(&chat, Publication::new("alice is typing").ephemeral()).await?;
    /// let Some(Item::Message(m)) = live.next().await else { unreachable!() };
    /// assert!(m.is_ephemeral());
    /// // Not in the history: a read finds nothing.
    /// assert!(hub.read(&chat, push_core::Start::Earliest, 10).await?.messages.is_empty());
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn ephemeral(mut self) -> Self {
        self.ephemeral = true;
        self
    }

    /// Whether it is [ephemeral](Publication::ephemeral).
    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    /// The idempotency key, if any.
    pub fn key(&self) -> Option<&IdempotencyKey> {
        self.key.as_ref()
    }

    /// The same publication without its key.
    #[must_use]
    pub fn without_key(mut self) -> Self {
        self.key = None;
        self
    }

    /// A 64-bit fingerprint of the event name, the kind and the data
    /// (FNV-1a), the same in every process and version: what a hub keeps
    /// with an idempotency key to tell a retry from a different message
    /// under the same key. The same bytes published as JSON and as bytes are
    /// different messages.
    ///
    /// ```
    /// use push_core::Publication;
    ///
    /// let text = Publication::new("1");
    /// assert_ne!(text.fingerprint(), Publication::json("1")?.fingerprint());
    /// assert_eq!(text.fingerprint(), Publication::new("1").fingerprint());
    /// # Ok::<(), push_core::Error>(())
    /// ```
    pub fn fingerprint(&self) -> u64 {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let event = self
            .event
            .as_ref()
            .map_or(&b""[..], |e| e.as_str().as_bytes());
        // The separator cannot occur in an event name (UTF-8: no 0xfe, no
        // 0xff), and says the kind; bytes keep the fingerprint they always had.
        let separator = match self.kind {
            ContentKind::Bytes => 0xff,
            ContentKind::Json => 0xfe,
        };
        event
            .iter()
            .chain(std::iter::once(&separator))
            .chain(self.data.iter())
            .fold(OFFSET, |hash, byte| {
                (hash ^ u64::from(*byte)).wrapping_mul(PRIME)
            })
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

    /// Splits into its parts (the key, if any, is dropped, and so is the
    /// kind: take them first).
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
    /// The JSON envelope compressed for WebSocket's permessage-deflate
    /// (RFC 7692, no context takeover): a compressed frame's payload.
    JsonEnvelopeDeflated,
}

impl WireFormat {
    const COUNT: usize = 4;

    fn slot(self) -> usize {
        match self {
            WireFormat::JsonEnvelope => 0,
            WireFormat::SseEvent => 1,
            WireFormat::SseEnvelope => 2,
            WireFormat::JsonEnvelopeDeflated => 3,
        }
    }
}

/// A published message, as every subscriber receives it: shared behind an `Arc`,
/// so fanning it out to ten thousand subscribers copies a pointer, not the data.
///
/// A message made by a [`MemoryHub`](crate::MemoryHub) is counted in the hub's
/// byte budget ([`max_retained_bytes`](crate::MemoryHubConfig::max_retained_bytes))
/// for as long as it lives: its data, event name and bookkeeping from the start,
/// each encoding from when it is filled. One made with [`Message::new`] is not
/// counted anywhere.
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
    kind: ContentKind,
    published_at: Timestamp,
    ephemeral: bool,
    encoded: [OnceLock<Bytes>; WireFormat::COUNT],
    /// The budget this message is charged to; `None`: not counted.
    budget: Option<Arc<Budget>>,
}

impl Message {
    /// A message as a hub records it, of [`ContentKind::Bytes`]
    /// ([`Message::with_kind`] makes it JSON). Hubs call this; publishers
    /// use [`Publication`].
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
            kind: ContentKind::Bytes,
            published_at,
            ephemeral: false,
            encoded: Default::default(),
            budget: None,
        }
    }

    /// The same message, [ephemeral](Publication::ephemeral): not in the
    /// history. Its cursor is the stored message it follows (the channel's
    /// head when it was published), so [`Item::cursor`](crate::Item::cursor)
    /// stays the position to resume after; the wire encodings carry no id for
    /// it.
    #[must_use]
    pub fn ephemeral(mut self) -> Self {
        self.ephemeral = true;
        self
    }

    /// For an ephemeral message, the same message following `cursor`: a
    /// client gives one it received (whose envelope has no id) its own
    /// position, so that [`Item::cursor`](crate::Item::cursor) stays where
    /// it resumes from. A stored message comes back unchanged.
    #[must_use]
    pub fn following(mut self, cursor: Cursor) -> Self {
        if self.ephemeral {
            self.cursor = cursor;
        }
        self
    }

    /// Whether it is [ephemeral](Message::ephemeral): delivered live, never
    /// stored, so never resumed and never counted in a gap.
    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    /// The same message with its data of `kind`. For [`ContentKind::Json`]
    /// the data is checked and made compact, as [`Publication::json`] does:
    /// a JSON message always holds one JSON value on one line, which the
    /// encoders splice into envelopes as it is.
    ///
    /// # Errors
    /// [`Error::InvalidJson`] when the data is not one JSON value (or nests
    /// too deep); the message is then dropped.
    pub fn with_kind(mut self, kind: ContentKind) -> Result<Self, Error> {
        if kind == ContentKind::Json && self.kind != ContentKind::Json {
            self.data = compact_json(std::mem::take(&mut self.data))?;
        }
        self.kind = kind;
        Ok(self)
    }

    /// A message charged to `budget` until it is dropped. Its data is kept in
    /// a buffer of its own, exactly its size, so that what is counted is what
    /// is held (a slice of a connection's read buffer would keep all of it).
    pub(crate) fn charged(
        channel: ChannelName,
        cursor: Cursor,
        event: Option<EventName>,
        (data, kind): (Bytes, ContentKind),
        published_at: Timestamp,
        budget: &Arc<Budget>,
    ) -> Arc<Self> {
        let message = Arc::new(Message {
            channel,
            cursor,
            event,
            data: own(data),
            kind,
            published_at,
            ephemeral: false,
            encoded: Default::default(),
            budget: Some(budget.clone()),
        });
        budget.charge(message.footprint());
        message
    }

    /// An ephemeral message of `publication` following `head` (its data in a
    /// buffer of its own, as [`Message::charged`] keeps it, not counted).
    pub(crate) fn ephemeral_from(
        channel: ChannelName,
        head: Cursor,
        publication: Publication,
        published_at: Timestamp,
    ) -> Self {
        let kind = publication.kind;
        let (event, data) = publication.into_parts();
        let mut message = Message::new(channel, head, event, own(data), published_at);
        message.kind = kind;
        message.ephemeral = true;
        message
    }

    /// What the message holds, as its budget counts it: data, event name,
    /// the encodings filled so far, and [`MESSAGE_OVERHEAD`].
    fn footprint(&self) -> usize {
        let encoded: usize = self
            .encoded
            .iter()
            .filter_map(OnceLock::get)
            .map(encoding_cost)
            .sum();
        MESSAGE_OVERHEAD + self.size() + encoded
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

    /// What the data is: any bytes, or JSON (as its publisher declared it).
    pub fn kind(&self) -> ContentKind {
        self.kind
    }

    /// The data of a message published as JSON, deserialized into `T`: the
    /// typed way for a Rust client to read it.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use push_core::{ContentKind, Message, Timestamp};
    ///
    /// #[derive(Debug, PartialEq, serde::Deserialize)]
    /// struct Price { symbol: String, cents: u64 }
    ///
    /// # let channel = "news".parse()?; let cursor = "1.1".parse()?;
    /// let data = Bytes::from(r#"{"symbol":"ACME","cents":4217}"#);
    /// let message = Message::new(channel, cursor, None, data, Timestamp::UNIX_EPOCH)
    ///     .with_kind(ContentKind::Json)?;
    /// let price: Price = message.json()?;
    /// assert_eq!(price, Price { symbol: "ACME".into(), cents: 4217 });
    /// // Any type that deserializes from it will do, serde_json::Value too.
    /// let value: serde_json::Value = message.json()?;
    /// assert_eq!(value["cents"], 4217);
    /// # Ok::<(), push_core::Error>(())
    /// ```
    ///
    /// A message published as bytes is refused even when its text happens to
    /// be JSON (`"42"` published as text is a string, not a number); read
    /// such text with `serde_json::from_slice(message.data())`.
    ///
    /// # Errors
    /// [`Error::InvalidJson`] when the message was not published as JSON, or
    /// its value does not deserialize into `T`.
    pub fn json<'a, T: Deserialize<'a>>(&'a self) -> Result<T, Error> {
        if self.kind != ContentKind::Json {
            return Err(Error::invalid_json("the message was not published as JSON"));
        }
        serde_json::from_slice(&self.data).map_err(|e| Error::invalid_json(e.to_string()))
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
    ///
    /// For a message of a [`MemoryHub`](crate::MemoryHub), the encoding is kept
    /// in a buffer exactly its size and counted in the hub's byte budget; when
    /// that takes the hub over its budget, the oldest retained messages are
    /// dropped before this returns.
    pub fn encoded(&self, format: WireFormat, encode: impl FnOnce(&Message) -> Bytes) -> Bytes {
        let mut over_budget = false;
        let bytes = self.encoded[format.slot()]
            .get_or_init(|| {
                let bytes = encode(self);
                match &self.budget {
                    Some(budget) => {
                        let bytes = own(bytes);
                        over_budget = budget.charge(encoding_cost(&bytes));
                        bytes
                    }
                    None => bytes,
                }
            })
            .clone();
        if over_budget && let Some(budget) = &self.budget {
            budget.trim();
        }
        bytes
    }
}

impl Drop for Message {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.release(self.footprint());
        }
    }
}

/// What a filled encoding costs in a budget.
fn encoding_cost(bytes: &Bytes) -> usize {
    bytes.len() + ENCODING_OVERHEAD
}

/// `bytes` in a buffer of its own with little spare capacity: kept as it is
/// when it is the only handle to its buffer and wastes at most an eighth of
/// it, else copied into one exactly its size.
fn own(bytes: Bytes) -> Bytes {
    if bytes.is_empty() {
        return Bytes::new();
    }
    match bytes.try_into_mut() {
        Ok(buffer) if buffer.capacity() - buffer.len() <= buffer.capacity() / 8 => buffer.freeze(),
        Ok(buffer) => Bytes::copy_from_slice(&buffer),
        Err(shared) => Bytes::copy_from_slice(&shared),
    }
}

impl PartialEq for Message {
    /// Two messages are the same message when they have the same channel and
    /// id (two ephemeral ones: and the same event and data).
    fn eq(&self, other: &Self) -> bool {
        self.channel == other.channel
            && self.cursor == other.cursor
            && self.ephemeral == other.ephemeral
            && (!self.ephemeral || (self.event == other.event && self.data == other.data))
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
            .field("kind", &self.kind)
            .field("published_at", &self.published_at)
            .field("ephemeral", &self.ephemeral)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_keeps_a_snug_buffer_and_copies_a_slice_of_a_larger_one() {
        let snug = Bytes::from(vec![7u8; 100]);
        let at = snug.as_ptr();
        assert_eq!(own(snug).as_ptr(), at, "kept without a copy");

        let mut roomy = Vec::with_capacity(1_000);
        roomy.extend_from_slice(&[1u8; 10]);
        let roomy = Bytes::from(roomy);
        let at = roomy.as_ptr();
        let owned = own(roomy);
        assert_ne!(owned.as_ptr(), at, "copied: the spare 990 bytes go");
        assert_eq!(&owned[..], &[1u8; 10]);

        let whole = Bytes::from(vec![2u8; 100]);
        let part = whole.slice(10..20);
        let owned = own(part.clone());
        assert_ne!(owned.as_ptr(), part.as_ptr(), "shared: copied");
        assert_eq!(owned, part);

        assert_eq!(
            own(Bytes::from_static(b"static")),
            Bytes::from_static(b"static")
        );
        assert!(own(Bytes::new()).is_empty());
    }
}
