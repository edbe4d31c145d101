//! Decoding what Redis returns: epochs, stream entries and notifications
//! as messages.

use std::sync::Arc;

use bytes::Bytes;
use push_core::{ChannelName, ContentKind, Epoch, Error, EventName, Message, Span, Timestamp};
use redis::Value;

use crate::EPHEMERAL_PREFIX;

/// A channel's epoch, as the scripts keep it (decimal).
///
/// # Errors
/// [`Error::InvalidResponse`] when it is not one.
pub fn parse_epoch(text: &str) -> Result<Epoch, Error> {
    text.parse::<u64>()
        .map(Epoch::new)
        .map_err(|_| Error::invalid_response(format!("not an epoch: {text:?}")))
}

/// How a stream entry's `k` field and a notification's first line name
/// data published as JSON ([`ContentKind::Json`]); bytes have no `k`.
pub(crate) const KIND_JSON: &str = "j";

/// A notification or a stream entry as a message.
///
/// # Errors
/// [`Error::InvalidResponse`] for an event name or data that is not valid.
pub fn message(
    channel: &ChannelName,
    span_epoch: Epoch,
    number: u64,
    event: &[u8],
    time: u64,
    (data, kind): (Bytes, ContentKind),
) -> Result<Message, Error> {
    let event = if event.is_empty() {
        None
    } else {
        let text = std::str::from_utf8(event)
            .map_err(|_| Error::invalid_response("an event name is not UTF-8"))?;
        // Joins and leaves come from the presence scripts, never a publisher.
        match push_core::PresenceChange::of_event(text) {
            Some(change) => Some(change.event()),
            None => Some(text.parse::<EventName>()?),
        }
    };
    let cursor = Span {
        epoch: span_epoch,
        first: 1,
        head: number,
    }
    .head_cursor();
    Message::new(
        channel.clone(),
        cursor,
        event,
        data,
        Timestamp::from_unix_millis(time),
    )
    .with_kind(kind)
    .map_err(|e| Error::invalid_response(format!("a message's data: {e}")))
}

/// `XRANGE` entries (`[[id, [field, value, …]], …]`) as messages.
///
/// # Errors
/// [`Error::InvalidResponse`] naming what is not as the scripts write it.
pub fn parse_entries(
    channel: &ChannelName,
    epoch: Epoch,
    entries: Value,
) -> Result<Vec<Arc<Message>>, Error> {
    let bad = |what: &str| Error::invalid_response(format!("unexpected stream entry: {what}"));
    let Value::Array(entries) = entries else {
        return Err(bad("not an array"));
    };
    let mut messages = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(parts) = entry else {
            return Err(bad("an entry is not an array"));
        };
        let [id, Value::Array(fields)] = parts.as_slice() else {
            return Err(bad("an entry is not [id, fields]"));
        };
        let id = bytes_of(id).ok_or_else(|| bad("id"))?;
        let number = std::str::from_utf8(&id)
            .ok()
            .and_then(|id| id.strip_suffix("-0"))
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| bad("id is not N-0"))?;
        let (mut event, mut time, mut data) = (Bytes::new(), 0, Bytes::new());
        let mut kind = ContentKind::Bytes;
        for pair in fields.chunks(2) {
            let [name, value] = pair else {
                return Err(bad("odd field list"));
            };
            let value = bytes_of(value).ok_or_else(|| bad("a field value"))?;
            match bytes_of(name).as_deref() {
                Some(b"e") => event = value,
                Some(b"t") => {
                    time = std::str::from_utf8(&value)
                        .ok()
                        .and_then(|t| t.parse().ok())
                        .ok_or_else(|| bad("time"))?;
                }
                Some(b"d") => data = value,
                Some(b"k") if value == KIND_JSON.as_bytes() => kind = ContentKind::Json,
                Some(b"k") => return Err(bad("kind")),
                _ => {}
            }
        }
        if is_presence_event(&event) {
            return Err(bad("a join or leave is never stored"));
        }
        messages.push(Arc::new(message(
            channel,
            epoch,
            number,
            &event,
            time,
            (data, kind),
        )?));
    }
    Ok(messages)
}

/// A Pub/Sub notification's payload, decoded (what the scripts publish).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notification<'a> {
    /// `epoch \n number \n time \n event \n data`, after `j \n` for
    /// JSON data: a message, to be made with [`message`].
    Message {
        /// The channel's epoch.
        epoch: Epoch,
        /// The message's number in the stream.
        number: u64,
        /// When it was published, in Unix milliseconds.
        time: u64,
        /// Its event name (empty: none).
        event: &'a [u8],
        /// Its data.
        data: &'a [u8],
        /// What the data is.
        kind: ContentKind,
    },
    /// `epoch \n head`: a script gave the channel a new epoch.
    NewEpoch {
        /// The new epoch.
        epoch: Epoch,
        /// The channel's head in it.
        head: u64,
    },
    /// `e \n time \n event \n data` (`j \n` before `time` for JSON data):
    /// an ephemeral message, never stored.
    Ephemeral {
        /// When it was published, in Unix milliseconds.
        time: u64,
        /// Its event name (empty: none).
        event: &'a [u8],
        /// Its data.
        data: &'a [u8],
        /// What the data is.
        kind: ContentKind,
    },
    /// Starts as an ephemeral message but is not one: ignored.
    MalformedEphemeral,
    /// None of these: ignored (the node reads the stream instead).
    Malformed,
}

/// Decodes one notification's payload.
pub fn notification(payload: &[u8]) -> Notification<'_> {
    let number_of = |field: &[u8]| std::str::from_utf8(field).ok()?.parse::<u64>().ok();
    if let Some(rest) = payload.strip_prefix(EPHEMERAL_PREFIX) {
        let (kind, rest) = split_kind(rest);
        let mut fields = rest.splitn(3, |b| *b == b'\n');
        return match (fields.next().map(number_of), fields.next(), fields.next()) {
            (Some(Some(time)), Some(event), Some(data)) => Notification::Ephemeral {
                time,
                event,
                data,
                kind,
            },
            _ => Notification::MalformedEphemeral,
        };
    }
    let (kind, payload) = split_kind(payload);
    let mut fields = payload.splitn(5, |b| *b == b'\n');
    let (Some(epoch), Some(number), Some(time), Some(event), Some(data)) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        let mut fields = payload.splitn(2, |b| *b == b'\n');
        return match (fields.next().map(number_of), fields.next().map(number_of)) {
            (Some(Some(epoch)), Some(Some(head))) => Notification::NewEpoch {
                epoch: Epoch::new(epoch),
                head,
            },
            _ => Notification::Malformed,
        };
    };
    match (number_of(epoch), number_of(number), number_of(time)) {
        (Some(epoch), Some(number), Some(time)) if !is_presence_event(event) => {
            Notification::Message {
                epoch: Epoch::new(epoch),
                number,
                time,
                event,
                data,
                kind,
            }
        }
        _ => Notification::Malformed,
    }
}

/// Whether `event` is a join or a leave: announced as ephemeral messages
/// only, never stored (a stored message naming one was not written by push,
/// and no client could read its envelope).
fn is_presence_event(event: &[u8]) -> bool {
    std::str::from_utf8(event)
        .ok()
        .and_then(push_core::PresenceChange::of_event)
        .is_some()
}

/// The kind a notification's payload starts with (`j \n` for JSON), and
/// the rest.
fn split_kind(payload: &[u8]) -> (ContentKind, &[u8]) {
    match payload
        .strip_prefix(KIND_JSON.as_bytes())
        .and_then(|rest| rest.strip_prefix(b"\n"))
    {
        Some(rest) => (ContentKind::Json, rest),
        None => (ContentKind::Bytes, payload),
    }
}

pub(crate) fn bytes_of(value: &Value) -> Option<Bytes> {
    match value {
        Value::BulkString(bytes) => Some(Bytes::copy_from_slice(bytes)),
        Value::SimpleString(text) => Some(Bytes::copy_from_slice(text.as_bytes())),
        Value::Int(n) => Some(Bytes::from(n.to_string())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_decode_as_the_scripts_write_them() {
        assert_eq!(
            notification(b"7\n42\n1700000000000\nprice\na\nb"),
            Notification::Message {
                epoch: Epoch::new(7),
                number: 42,
                time: 1_700_000_000_000,
                event: b"price",
                data: b"a\nb",
                kind: ContentKind::Bytes,
            }
        );
        assert_eq!(
            notification(b"j\n7\n43\n1\n\n{\"a\":1}"),
            Notification::Message {
                epoch: Epoch::new(7),
                number: 43,
                time: 1,
                event: b"",
                data: b"{\"a\":1}",
                kind: ContentKind::Json,
            }
        );
        assert_eq!(
            notification(b"8\n0"),
            Notification::NewEpoch {
                epoch: Epoch::new(8),
                head: 0
            }
        );
        assert_eq!(
            notification(b"e\nj\n5\nping\n[1]"),
            Notification::Ephemeral {
                time: 5,
                event: b"ping",
                data: b"[1]",
                kind: ContentKind::Json,
            }
        );
        for malformed in [&b"e\n"[..], b"e\n5\nping", b"e\nx\n\n"] {
            assert_eq!(
                notification(malformed),
                Notification::MalformedEphemeral,
                "{malformed:?}"
            );
        }
        // The fuzz target redis_notification fails on this input: joins and leaves are
        // announced as ephemeral notifications only; a stored one would make
        // a message no client can read (its envelope names a reserved event).
        assert_eq!(
            notification(b"7\n42\n1\npush.join\n{\"u\":1}"),
            Notification::Malformed
        );
        assert!(matches!(
            notification(b"e\nj\n1\npush.join\n{\"u\":1}"),
            Notification::Ephemeral { .. }
        ));
        // Five fields with a bad number are not read as a new epoch.
        for malformed in [
            &b""[..],
            b"8",
            b"8\nx",
            b"x\n1\n2\n\n",
            b"1\n2\n-3\n\n",
            b"j\n",
        ] {
            assert_eq!(
                notification(malformed),
                Notification::Malformed,
                "{malformed:?}"
            );
        }
    }

    #[test]
    fn a_stored_join_or_leave_is_refused() {
        let bulk = |text: &str| Value::BulkString(text.as_bytes().to_vec());
        let entry = |event: &str| {
            Value::Array(vec![Value::Array(vec![
                bulk("42-0"),
                Value::Array(vec![
                    bulk("e"),
                    bulk(event),
                    bulk("t"),
                    bulk("1"),
                    bulk("d"),
                    bulk("{}"),
                ]),
            ])])
        };
        let channel: ChannelName = "news".parse().unwrap();
        assert!(parse_entries(&channel, Epoch::new(7), entry("price")).is_ok());
        for event in ["push.join", "push.leave"] {
            assert!(
                parse_entries(&channel, Epoch::new(7), entry(event)).is_err(),
                "{event}"
            );
        }
    }
}
