//! The parser: the WHATWG event stream interpretation, fed in chunks.

use std::collections::VecDeque;
use std::time::Duration;

use crate::encode::ENCODING_FIELD;

const BOM: &[u8; 3] = b"\xEF\xBB\xBF";

/// One dispatched event, as the spec's algorithm builds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Event {
    /// The event type: the last `event:` field, or `"message"` without one.
    pub event: String,
    /// The data lines, joined with LF.
    pub data: String,
    /// The stream's last event ID when the event was dispatched (it carries
    /// over from earlier events, as the spec says).
    pub id: String,
    /// Push's `encoding:` field, when the event had one (`"base64"`).
    pub encoding: Option<String>,
}

/// The stream broke a limit: a hostile or broken server cannot make the parser
/// buffer without bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// One line, or one event's data, is longer than the limit.
    #[error("an event is longer than {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
}

/// An incremental Server-Sent Events parser, exactly as the WHATWG HTML
/// standard interprets an event stream: one leading UTF-8 BOM skipped; lines
/// ended by LF, CR or CRLF (also when the CR ends one chunk and the LF starts
/// the next); comments ignored; a field without a colon has an empty value;
/// one space after the colon stripped; `retry` only when all digits; an `id`
/// holding NUL ignored; the last event ID kept across events; no event for an
/// empty data buffer; an unfinished event at the end discarded.
///
/// ```
/// use push_sse::Parser;
///
/// let mut parser = Parser::new();
/// parser.feed(b"\xEF\xBB\xBFid: 7\r\nevent: tick\rdata: a\ndata:b\r")?;
/// assert!(parser.next_event().is_none()); // not yet ended by a blank line
/// parser.feed(b"\n\n: a comment\ndata: c\n\n")?;
/// let first = parser.next_event().unwrap();
/// assert_eq!((first.event.as_str(), first.data.as_str(), first.id.as_str()), ("tick", "a\nb", "7"));
/// let second = parser.next_event().unwrap();
/// assert_eq!((second.event.as_str(), second.data.as_str(), second.id.as_str()), ("message", "c", "7"));
/// # Ok::<(), push_sse::ParseError>(())
/// ```
#[derive(Debug)]
pub struct Parser {
    limit: usize,
    /// Bytes of a leading BOM matched so far; `None` once past the start.
    bom: Option<usize>,
    after_cr: bool,
    line: Vec<u8>,
    data: String,
    event_type: String,
    encoding: Option<String>,
    id_buffer: String,
    last_event_id: String,
    retry: Option<Duration>,
    ready: VecDeque<Event>,
}

impl Default for Parser {
    fn default() -> Self {
        Self::new()
    }
}

impl Parser {
    /// The default limit on one line or one event's data: 16 MiB.
    pub const DEFAULT_LIMIT: usize = 16 << 20;

    /// A parser with the [default limit](Self::DEFAULT_LIMIT).
    pub fn new() -> Self {
        Self::with_limit(Self::DEFAULT_LIMIT)
    }

    /// A parser refusing lines or events longer than `limit` bytes.
    pub fn with_limit(limit: usize) -> Self {
        Parser {
            limit,
            bom: Some(0),
            after_cr: false,
            line: Vec::new(),
            data: String::new(),
            event_type: String::new(),
            encoding: None,
            id_buffer: String::new(),
            last_event_id: String::new(),
            retry: None,
            ready: VecDeque::new(),
        }
    }

    /// Parses the next bytes of the stream; the events they complete are then
    /// available from [`next_event`](Self::next_event).
    ///
    /// # Errors
    /// [`ParseError::TooLarge`] when a line or an event's data outgrows the
    /// limit (the stream should then be dropped).
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), ParseError> {
        let mut rest = self.skip_bom(chunk);
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if rest[0] == b'\n' {
                rest = &rest[1..];
            }
        }
        while let Some(end) = rest.iter().position(|&b| b == b'\r' || b == b'\n') {
            if self.line.is_empty() {
                self.process_line(&rest[..end]);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&rest[..end]);
                self.check(line.len())?;
                self.process_line(&line);
                line.clear();
                self.line = line;
            }
            self.check(0)?;
            let was_cr = rest[end] == b'\r';
            rest = &rest[end + 1..];
            if was_cr {
                match rest.first() {
                    None => self.after_cr = true,
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                }
            }
        }
        self.line.extend_from_slice(rest);
        self.check(self.line.len())
    }

    /// The next dispatched event, in stream order.
    pub fn next_event(&mut self) -> Option<Event> {
        self.ready.pop_front()
    }

    /// The stream's last event ID: what a client sends as `Last-Event-ID` when
    /// it reconnects (empty: send none).
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// Sets the last event ID, as if an event with this `id:` had been
    /// dispatched: a client resuming from an id it stored. An id holding NUL
    /// is ignored, as the spec ignores such a field.
    pub fn set_last_event_id(&mut self, id: &str) {
        if !id.contains('\0') {
            id.clone_into(&mut self.id_buffer);
            id.clone_into(&mut self.last_event_id);
        }
    }

    /// The reconnection time the stream last advised with `retry:`, if any.
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// Forgets a half-received event and expects a new stream (a new
    /// response, which may start with a BOM). The last event ID and the
    /// reconnection time are kept, as the spec keeps them across reconnects.
    pub fn restart(&mut self) {
        self.bom = Some(0);
        self.after_cr = false;
        self.line.clear();
        self.data.clear();
        self.event_type.clear();
        self.encoding = None;
        self.id_buffer.clone_from(&self.last_event_id);
        self.ready.clear();
    }

    fn check(&self, line: usize) -> Result<(), ParseError> {
        if line > self.limit || self.data.len() > self.limit {
            return Err(ParseError::TooLarge { limit: self.limit });
        }
        Ok(())
    }

    /// Strips one leading BOM, also when it arrives split across chunks.
    fn skip_bom<'a>(&mut self, chunk: &'a [u8]) -> &'a [u8] {
        let Some(matched) = self.bom else {
            return chunk;
        };
        let mut taken = 0;
        let mut matched = matched;
        while matched < BOM.len() {
            match chunk.get(taken) {
                None => {
                    self.bom = Some(matched);
                    return &[];
                }
                Some(&b) if b == BOM[matched] => {
                    matched += 1;
                    taken += 1;
                }
                Some(_) => {
                    // Not a BOM: the bytes held back are the stream's own.
                    self.bom = None;
                    self.line.extend_from_slice(&BOM[..matched]);
                    return &chunk[taken..];
                }
            }
        }
        self.bom = None;
        &chunk[taken..]
    }

    fn process_line(&mut self, line: &[u8]) {
        if line.is_empty() {
            self.dispatch();
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match field {
            b"event" => (*value).clone_into(&mut self.event_type),
            b"data" => {
                self.data.push_str(&value);
                self.data.push('\n');
            }
            b"id" if !value.contains('\0') => (*value).clone_into(&mut self.id_buffer),
            b"retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                // Too many digits for u64 milliseconds: as long as can be.
                let millis = value.parse().unwrap_or(u64::MAX);
                self.retry = Some(Duration::from_millis(millis));
            }
            field if field == ENCODING_FIELD.as_bytes() => self.encoding = Some(value.into_owned()),
            _ => {}
        }
    }

    fn dispatch(&mut self) {
        self.last_event_id.clone_from(&self.id_buffer);
        let encoding = self.encoding.take();
        if self.data.is_empty() {
            self.event_type.clear();
            return;
        }
        if self.data.ends_with('\n') {
            self.data.pop();
        }
        let event = if self.event_type.is_empty() {
            "message".to_owned()
        } else {
            std::mem::take(&mut self.event_type)
        };
        self.ready.push_back(Event {
            event,
            data: std::mem::take(&mut self.data),
            id: self.last_event_id.clone(),
            encoding,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(stream: &[u8]) -> Vec<Event> {
        let mut parser = Parser::new();
        parser.feed(stream).unwrap();
        std::iter::from_fn(|| parser.next_event()).collect()
    }

    fn event(event: &str, data: &str, id: &str) -> Event {
        Event {
            event: event.into(),
            data: data.into(),
            id: id.into(),
            encoding: None,
        }
    }

    #[test]
    fn the_specs_examples() {
        // WHATWG HTML §9.2.5 (event stream interpretation) examples.
        assert_eq!(
            events(b"data: YHOO\ndata: +2\ndata: 10\n\n"),
            [event("message", "YHOO\n+2\n10", "")]
        );
        assert_eq!(
            events(b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n"),
            [
                event("message", "first event", "1"),
                event("message", "second event", ""),
                event("message", " third event", ""),
            ]
        );
        assert_eq!(
            events(b"data\n\ndata\ndata\n\ndata:"),
            [event("message", "", ""), event("message", "\n", "")]
        );
        let same = [event("message", "test", ""), event("message", "test", "")];
        assert_eq!(events(b"data:test\n\ndata: test\n\n"), same);
    }

    #[test]
    fn fields_and_their_rules() {
        let mut parser = Parser::new();
        parser
            .feed(b"retry: 1500\n\nretry: 15x\nretry:\nretry: -1\n\n")
            .unwrap();
        assert_eq!(parser.retry(), Some(Duration::from_millis(1500)));
        parser.feed(b"retry: 99999999999999999999999\n\n").unwrap();
        assert_eq!(parser.retry(), Some(Duration::from_millis(u64::MAX)));
        assert!(parser.next_event().is_none(), "no data, no event");

        // An id holding NUL is ignored; the last one stays.
        assert_eq!(
            events(b"id: 1\ndata: a\n\nid: 2\0\ndata: b\n\n"),
            [event("message", "a", "1"), event("message", "b", "1")]
        );
        // An id alone, without data, still sets the last event ID.
        let mut parser = Parser::new();
        parser.feed(b"id: 9\n\n").unwrap();
        assert_eq!(parser.last_event_id(), "9");
        assert!(parser.next_event().is_none());
        // Unknown fields are ignored; the event type is reset after dispatch.
        assert_eq!(
            events(b"event: a\nfoo: bar\ndata: 1\n\ndata: 2\n\n"),
            [event("a", "1", ""), event("message", "2", "")]
        );
        // Only one space is stripped, and a colon in the value is kept.
        assert_eq!(events(b"data:  a: b\n\n"), [event("message", " a: b", "")]);
        // An unfinished event at the end is not dispatched.
        assert_eq!(events(b"data: a\n\ndata: b\n"), [event("message", "a", "")]);
    }

    #[test]
    fn line_ends_and_bom_across_chunks() {
        let mut parser = Parser::new();
        for chunk in [&b"\xEF"[..], b"\xBB", b"\xBFdata: a\r", b"\n", b"\r"] {
            parser.feed(chunk).unwrap();
        }
        assert_eq!(parser.next_event(), Some(event("message", "a", "")));
        // Only one BOM is skipped; a second is part of the field name.
        assert_eq!(
            events(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: x\n\ndata: y\n\n"),
            [event("message", "y", "")]
        );
        // A stream starting like a BOM but not one keeps its bytes.
        let mut parser = Parser::new();
        parser.feed(b"\xEF").unwrap();
        parser.feed(b"data: z\n\n").unwrap();
        assert!(parser.next_event().is_none(), "the field is \\xEFdata");
        let mut parser = Parser::new();
        parser.feed(b"\xEF\xBB").unwrap();
        parser.feed(b"\n").unwrap();
        parser.feed(b"data: z\n\n").unwrap();
        assert_eq!(parser.next_event(), Some(event("message", "z", "")));
    }

    #[test]
    fn limits() {
        let mut parser = Parser::with_limit(8);
        assert_eq!(
            parser.feed(b"data: 0123456789"),
            Err(ParseError::TooLarge { limit: 8 })
        );
        let mut parser = Parser::with_limit(8);
        parser.feed(b"data: 0123\n").unwrap();
        assert_eq!(
            parser.feed(b"data: 4567\n"),
            Err(ParseError::TooLarge { limit: 8 })
        );
    }

    #[test]
    fn restart_keeps_the_id_and_drops_the_half_event() {
        let mut parser = Parser::new();
        parser.feed(b"id: 3\ndata: a\n\nid: 4\ndata: half").unwrap();
        assert!(parser.next_event().is_some());
        parser.restart();
        parser.feed(b"\xEF\xBB\xBFdata: b\n\n").unwrap();
        assert_eq!(parser.next_event(), Some(event("message", "b", "3")));
    }
}
