//! Decoding what Redis returns: epochs, stream entries and notifications
//! as messages.

use std::sync::Arc;

use bytes::Bytes;
use push_core::{ChannelName, ContentKind, Epoch, Error, EventName, Message, Span, Timestamp};
use redis::Value;

pub(crate) fn parse_epoch(text: &str) -> Result<Epoch, Error> {
    text.parse::<u64>()
        .map(Epoch::new)
        .map_err(|_| Error::invalid_response(format!("not an epoch: {text:?}")))
}

/// How a stream entry's `k` field and a notification's first line name
/// data published as JSON ([`ContentKind::Json`]); bytes have no `k`.
pub(crate) const KIND_JSON: &str = "j";

/// A notification or a stream entry as a message.
pub(crate) fn message(
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
pub(crate) fn parse_entries(
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

pub(crate) fn bytes_of(value: &Value) -> Option<Bytes> {
    match value {
        Value::BulkString(bytes) => Some(Bytes::copy_from_slice(bytes)),
        Value::SimpleString(text) => Some(Bytes::copy_from_slice(text.as_bytes())),
        Value::Int(n) => Some(Bytes::from(n.to_string())),
        _ => None,
    }
}
