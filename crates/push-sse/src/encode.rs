//! The encoder: events built straight into one buffer, frozen once.

use std::fmt::Write as _;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{BufMut, Bytes, BytesMut};
use push_core::wire::json;
use push_core::{Cursor, Message, Signal, WireFormat};

/// The event type of the gap signal (`Signal::Gap`); its data is the JSON
/// object `{"since":…,"resume":…,"missed":…}`.
pub const GAP_EVENT: &str = "push.gap";
/// The event type of the reset signal (`Signal::Reset`); its data is the JSON
/// object `{"since":…,"resume":…}`.
pub const RESET_EVENT: &str = "push.reset";
/// The event type that opens a live stream in the `json` format; its data is
/// `{"cursor":…}`, the channel's position the stream starts after (also its
/// `id:`). A browser's `EventSource` hides the last event ID, so a client
/// that reconnects by itself learns from this event where to resume.
pub const SUBSCRIBED_EVENT: &str = "push.subscribed";
/// The field push adds to an event whose data is base64 (binary data in the
/// plain format). Conforming parsers ignore fields they do not know.
pub const ENCODING_FIELD: &str = "encoding";

/// A field value that would break the stream's framing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FieldError {
    /// `id`, `event` and `encoding` are one line each: CR and LF cannot be in them.
    #[error("the `{field}` field cannot hold a line break (CR or LF)")]
    LineBreak {
        /// The field.
        field: &'static str,
    },
    /// The spec ignores an `id` holding NUL, so it is never sent.
    #[error("the `id` field cannot hold NUL")]
    NulInId,
}

/// One Server-Sent Events event, written field by field into one buffer and
/// frozen once by [`finish`](Self::finish).
///
/// Data may hold any mix of LF, CR and CRLF line ends: each line becomes its
/// own `data:` line, so a parser rebuilds the text with LF line ends (SSE has
/// no way to carry a CR). Fields that are one line (`id`, `event`) are checked
/// and a typed [`FieldError`] returned: nothing is ever injected into the
/// stream.
///
/// ```
/// use std::time::Duration;
/// use push_sse::EventBuilder;
///
/// let event = EventBuilder::new()
///     .id("5eed.42")?
///     .event("price")?
///     .data("a\r\nb")
///     .retry(Duration::from_secs(3))
///     .finish();
/// assert_eq!(&event[..], b"id: 5eed.42\nevent: price\ndata: a\ndata: b\nretry: 3000\n\n");
/// assert!(EventBuilder::new().event("two\nlines").is_err());
/// # Ok::<(), push_sse::FieldError>(())
/// ```
#[derive(Debug, Default)]
pub struct EventBuilder {
    buf: BytesMut,
}

impl EventBuilder {
    /// An empty event.
    pub fn new() -> Self {
        Self::with_capacity(64)
    }

    /// An empty event with room for `capacity` bytes before it grows.
    pub fn with_capacity(capacity: usize) -> Self {
        EventBuilder {
            buf: BytesMut::with_capacity(capacity),
        }
    }

    /// The `id:` field: sets the client's last event ID (what it sends back as
    /// `Last-Event-ID`).
    ///
    /// # Errors
    /// [`FieldError`] when `id` holds CR, LF or NUL.
    pub fn id(mut self, id: &str) -> Result<Self, FieldError> {
        if id.contains('\0') {
            return Err(FieldError::NulInId);
        }
        self.field("id", id)?;
        Ok(self)
    }

    /// The `event:` field: the event's type (browsers dispatch it to
    /// `addEventListener(type)`; without one, to `onmessage`).
    ///
    /// # Errors
    /// [`FieldError::LineBreak`] when `event` holds CR or LF.
    pub fn event(mut self, event: &str) -> Result<Self, FieldError> {
        self.field("event", event)?;
        Ok(self)
    }

    /// Push's `encoding:` field (`base64` for binary data in the plain format).
    ///
    /// # Errors
    /// [`FieldError::LineBreak`] when `encoding` holds CR or LF.
    pub fn encoding(mut self, encoding: &str) -> Result<Self, FieldError> {
        self.field(ENCODING_FIELD, encoding)?;
        Ok(self)
    }

    /// The data, one `data:` line per line of `text` (LF, CR and CRLF all end
    /// a line). Call it again to append more lines.
    #[must_use]
    pub fn data(mut self, text: &str) -> Self {
        put_lines(&mut self.buf, "data", text);
        self
    }

    /// A `retry:` field: how long the client waits before reconnecting (whole
    /// milliseconds).
    #[must_use]
    pub fn retry(mut self, delay: Duration) -> Self {
        put_retry(&mut self.buf, delay);
        self
    }

    /// A comment (`: text`), one per line of `text`. Parsers ignore comments;
    /// they keep a connection busy through idle proxies.
    #[must_use]
    pub fn comment(mut self, text: &str) -> Self {
        put_lines(&mut self.buf, "", text);
        self
    }

    /// Ends the event with its blank line and freezes it.
    pub fn finish(mut self) -> Bytes {
        self.buf.put_u8(b'\n');
        self.buf.freeze()
    }

    fn field(&mut self, name: &'static str, value: &str) -> Result<(), FieldError> {
        if value.contains(['\r', '\n']) {
            return Err(FieldError::LineBreak { field: name });
        }
        put_field(&mut self.buf, name, value);
        Ok(())
    }
}

fn put_field(buf: &mut BytesMut, name: &str, value: &str) {
    buf.reserve(name.len() + value.len() + 3);
    buf.put_slice(name.as_bytes());
    buf.put_slice(b": ");
    buf.put_slice(value.as_bytes());
    buf.put_u8(b'\n');
}

/// Writes `name: line` for every line of `text` (`name` empty: comments).
fn put_lines(buf: &mut BytesMut, name: &str, text: &str) {
    let mut rest = text;
    loop {
        let end = rest.find(['\r', '\n']).unwrap_or(rest.len());
        put_field(buf, name, &rest[..end]);
        let Some(&first) = rest.as_bytes().get(end) else {
            return;
        };
        let skip = if first == b'\r' && rest.as_bytes().get(end + 1) == Some(&b'\n') {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
    }
}

fn put_retry(buf: &mut BytesMut, delay: Duration) {
    let millis = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    // Writing into a BytesMut cannot fail.
    let _ = writeln!(buf, "retry: {millis}");
}

/// A stream's opening or closing block: a `retry:` advice alone (no data, so
/// no event is dispatched).
pub fn retry_block(delay: Duration) -> Bytes {
    let mut buf = BytesMut::with_capacity(24);
    put_retry(&mut buf, delay);
    buf.put_u8(b'\n');
    buf.freeze()
}

/// A live stream's opening block: `id:` the channel's head and the `retry:`
/// advice. In the plain format it has no data (so no event is dispatched, but
/// the client's last event ID is set: a reconnect before the first message
/// resumes from the head); in the `json` format it is a [`SUBSCRIBED_EVENT`]
/// whose data names the head, for clients that must read it.
///
/// ```
/// use std::time::Duration;
/// use push_core::{Cursor, Epoch, Position};
/// use push_sse::{Format, opening_block};
///
/// let head = Cursor::new(Epoch::new(0x5eed), Position::new(41, 0));
/// let plain = opening_block(head, Duration::from_secs(3), Format::Plain);
/// assert_eq!(&plain[..], b"id: 5eed.41\nretry: 3000\n\n");
/// let json = opening_block(head, Duration::from_secs(3), Format::Json);
/// assert_eq!(
///     &json[..],
///     b"id: 5eed.41\nretry: 3000\nevent: push.subscribed\ndata: {\"cursor\":\"5eed.41\"}\n\n"
/// );
/// ```
pub fn opening_block(head: Cursor, retry: Duration, format: Format) -> Bytes {
    let mut buf = BytesMut::with_capacity(128);
    let head = head.text();
    put_field(&mut buf, "id", head.as_str());
    put_retry(&mut buf, retry);
    if format == Format::Json {
        put_field(&mut buf, "event", SUBSCRIBED_EVENT);
        buf.put_slice(b"data: {\"cursor\":\"");
        buf.put_slice(head.as_str().as_bytes());
        buf.put_slice(b"\"}\n");
    }
    buf.put_u8(b'\n');
    buf.freeze()
}

/// The keep-alive comment: three bytes a parser ignores.
pub const KEEP_ALIVE: &[u8] = b":\n\n";

/// How a message is written on an event stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// `id:` the cursor, `event:` the event name (when it has one), `data:` the
    /// data as published (JSON data as its compact text, on one line); binary
    /// (non-UTF-8) data as base64 with an `encoding: base64` field. What a
    /// browser's `EventSource` and `curl` want.
    #[default]
    Plain,
    /// `id:` the cursor, `data:` the message's JSON envelope (channel, event,
    /// time, data, encoding), no `event:` field: every message reaches a
    /// browser's `onmessage`, whatever its event name (`?format=json`).
    Json,
}

/// The message as one event in `format`: encoded by the first stream that sends
/// it, then the same shared bytes for every other stream.
pub fn message_event(message: &Message, format: Format) -> Bytes {
    match format {
        Format::Plain => message.encoded(WireFormat::SseEvent, encode_plain),
        Format::Json => message.encoded(WireFormat::SseEnvelope, encode_json),
    }
}

fn encode_plain(message: &Message) -> Bytes {
    let data = message.data();
    let mut buf = BytesMut::with_capacity(64 + data.len() + data.len() / 2);
    put_id(&mut buf, message);
    if let Some(event) = message.event() {
        // An EventName holds no control characters: a safe field as it is.
        put_field(&mut buf, "event", event.as_str());
    }
    match std::str::from_utf8(data) {
        Ok(text) => put_lines(&mut buf, "data", text),
        Err(_) => {
            put_field(&mut buf, ENCODING_FIELD, "base64");
            put_field(&mut buf, "data", &BASE64.encode(data));
        }
    }
    buf.put_u8(b'\n');
    buf.freeze()
}

/// The `id:` field, which an ephemeral message has not: a browser keeps its
/// last event id, so a reconnect resumes after the last stored message.
fn put_id(buf: &mut BytesMut, message: &Message) {
    if !message.is_ephemeral() {
        put_field(buf, "id", message.cursor().text().as_str());
    }
}

fn encode_json(message: &Message) -> Bytes {
    // The envelope is one line: JSON strings escape every control character,
    // and JSON data is held compact (a `ContentKind::Json` message's data has
    // no whitespace between its tokens, checked when it was made).
    let envelope = json::envelope(message);
    let mut buf = BytesMut::with_capacity(envelope.len() + 80);
    put_id(&mut buf, message);
    buf.put_slice(b"data: ");
    buf.put_slice(&envelope);
    buf.put_slice(b"\n\n");
    buf.freeze()
}

/// The signal as its own event (`push.gap` or `push.reset`), whose `id:` is
/// the signal's `resume` cursor, so a reconnecting client never sees it twice.
pub fn signal_event(signal: &Signal) -> Bytes {
    let kind = match signal {
        Signal::Gap(_) => GAP_EVENT,
        Signal::Reset(_) => RESET_EVENT,
    };
    let object = json::signal(signal);
    let mut buf = BytesMut::with_capacity(object.len() + 96);
    put_field(&mut buf, "id", signal.resume().text().as_str());
    put_field(&mut buf, "event", kind);
    buf.put_slice(b"data: ");
    buf.put_slice(&object);
    buf.put_slice(b"\n\n");
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_ends_of_every_kind_become_data_lines() {
        let event = EventBuilder::new().data("a\rb\nc\r\nd\n\re").finish();
        assert_eq!(
            &event[..],
            b"data: a\ndata: b\ndata: c\ndata: d\ndata: \ndata: e\n\n"
        );
        let event = EventBuilder::new().data("").finish();
        assert_eq!(&event[..], b"data: \n\n");
        let event = EventBuilder::new().data("end\r\n").finish();
        assert_eq!(&event[..], b"data: end\ndata: \n\n");
    }

    #[test]
    fn one_line_fields_refuse_line_breaks_and_nul() {
        for bad in ["a\rb", "a\nb", "\r\n", "x\n"] {
            assert_eq!(
                EventBuilder::new().id(bad).err(),
                Some(FieldError::LineBreak { field: "id" })
            );
            assert_eq!(
                EventBuilder::new().event(bad).err(),
                Some(FieldError::LineBreak { field: "event" })
            );
            assert_eq!(
                EventBuilder::new().encoding(bad).err(),
                Some(FieldError::LineBreak { field: "encoding" })
            );
        }
        assert_eq!(
            EventBuilder::new().id("a\0b").err(),
            Some(FieldError::NulInId)
        );
        // NUL is fine in an event type and in data.
        assert!(EventBuilder::new().event("a\0b").is_ok());
    }

    #[test]
    fn comments_and_retry() {
        let block = EventBuilder::new()
            .comment("two\nlines")
            .retry(Duration::from_millis(1500))
            .finish();
        assert_eq!(&block[..], b": two\n: lines\nretry: 1500\n\n");
        assert_eq!(&retry_block(Duration::from_secs(2))[..], b"retry: 2000\n\n");
    }
}
