//! The JSON wire format: message envelopes, batches, signals and error bodies,
//! written straight into bytes and read back by the clients.
//!
//! ```text
//! envelope  {"channel":"news","id":"5eed.42","event":"price","time":1700000000000,"data":"hello"}
//! binary    {"channel":"news","id":"5eed.43","time":1700000000001,"data":"AAEC/w==","encoding":"base64"}
//! JSON      {"channel":"news","id":"5eed.44","time":1700000000002,"data":{"a":1},"encoding":"json"}
//! ephemeral {"channel":"news","ephemeral":true,"time":1700000000003,"data":"typing"}
//! batch     {"cursor":"5eed.43","more":false,"gap":{"since":"5eed.3","resume":"5eed.41","missed":38},"messages":[…]}
//! error     {"error":{"code":"invalid_cursor","message":"invalid cursor: a number has leading zeros"}}
//! ```
//!
//! Data published as JSON ([`ContentKind::Json`]) travels as the JSON value
//! itself, its compact text spliced in as it is, with `"encoding":"json"`;
//! other data that is valid UTF-8 as a JSON string; any other data as
//! standard base64 with `"encoding":"base64"`, so no byte is ever lost.
//! The marker keeps a JSON string value (`"data":"hi","encoding":"json"`)
//! apart from the text `hi` (`"data":"hi"`).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::{
    Batch, ChannelName, ContentKind, Cursor, Error, EventName, Gap, Message, Reset, Signal,
    Timestamp, WireFormat,
};

/// The message's JSON envelope: encoded the first time any connection asks,
/// then the same shared bytes for all.
pub fn envelope(message: &Message) -> Bytes {
    message.encoded(WireFormat::JsonEnvelope, encode_envelope)
}

fn encode_envelope(message: &Message) -> Bytes {
    let data = message.data();
    let mut buf = BytesMut::with_capacity(96 + data.len() + data.len() / 3);
    buf.put_slice(b"{\"channel\":");
    put_string(&mut buf, message.channel().as_str());
    if message.is_ephemeral() {
        // Not in the history: no id to resume from.
        buf.put_slice(b",\"ephemeral\":true");
    } else {
        buf.put_slice(b",\"id\":");
        put_cursor(&mut buf, message.cursor());
    }
    if let Some(event) = message.event() {
        buf.put_slice(b",\"event\":");
        put_string(&mut buf, event.as_str());
    }
    buf.put_slice(b",\"time\":");
    put_display(&mut buf, message.published_at().as_unix_millis());
    buf.put_slice(b",\"data\":");
    match std::str::from_utf8(data) {
        // Compact JSON text, checked when published: spliced as it is.
        _ if message.kind() == ContentKind::Json => {
            buf.put_slice(data);
            buf.put_slice(b",\"encoding\":\"json\"");
        }
        Ok(text) => put_string(&mut buf, text),
        Err(_) => {
            buf.put_u8(b'"');
            buf.put_slice(BASE64.encode(data).as_bytes());
            buf.put_slice(b"\",\"encoding\":\"base64\"");
        }
    }
    buf.put_u8(b'}');
    buf.freeze()
}

/// A batch: `cursor`, `more`, the signal if any, and the messages' shared
/// envelopes spliced in.
pub fn batch(batch: &Batch) -> Bytes {
    let envelopes: Vec<Bytes> = batch.messages.iter().map(|m| envelope(m)).collect();
    let size = 128 + envelopes.iter().map(|e| e.len() + 1).sum::<usize>();
    let mut buf = BytesMut::with_capacity(size);
    buf.put_slice(b"{\"cursor\":");
    put_cursor(&mut buf, batch.cursor);
    buf.put_slice(if batch.more {
        b",\"more\":true"
    } else {
        b",\"more\":false"
    });
    if let Some(signal) = &batch.signal {
        buf.put_u8(b',');
        put_signal_field(&mut buf, signal);
    }
    buf.put_slice(b",\"messages\":[");
    for (i, envelope) in envelopes.iter().enumerate() {
        if i > 0 {
            buf.put_u8(b',');
        }
        buf.put_slice(envelope);
    }
    buf.put_slice(b"]}");
    buf.freeze()
}

/// `"gap":{…}` or `"reset":{…}`: a signal as a field of a larger object.
pub fn put_signal_field(buf: &mut BytesMut, signal: &Signal) {
    let name = match signal {
        Signal::Gap(_) => "gap",
        Signal::Reset(_) => "reset",
    };
    buf.put_u8(b'"');
    buf.put_slice(name.as_bytes());
    buf.put_slice(b"\":");
    put_signal_object(buf, signal);
}

/// The signal's own object, `{"since":…,"resume":…,"missed":…}` (`missed`
/// only for a gap that knows it): what an SSE `push.gap` or `push.reset` event
/// carries as its data.
///
/// ```
/// use push_core::{Cursor, Gap, Signal, wire::json};
///
/// let (since, resume): (Cursor, Cursor) = ("a.3".parse()?, "a.9".parse()?);
/// let gap = Signal::Gap(Gap::new(since, resume, Some(6)));
/// assert_eq!(&json::signal(&gap)[..], br#"{"since":"a.3","resume":"a.9","missed":6}"#);
/// assert_eq!(json::parse_signal("gap", &json::signal(&gap))?, gap);
/// # Ok::<(), push_core::Error>(())
/// ```
pub fn signal(signal: &Signal) -> Bytes {
    let mut buf = BytesMut::with_capacity(2 * crate::MAX_CURSOR_LEN + 48);
    put_signal_object(&mut buf, signal);
    buf.freeze()
}

fn put_signal_object(buf: &mut BytesMut, signal: &Signal) {
    let (since, resume, missed) = match signal {
        Signal::Gap(gap) => (gap.since, gap.resume, gap.missed),
        Signal::Reset(reset) => (reset.since, reset.resume, None),
    };
    buf.put_slice(b"{\"since\":");
    put_cursor(buf, since);
    buf.put_slice(b",\"resume\":");
    put_cursor(buf, resume);
    if let Some(missed) = missed {
        buf.put_slice(b",\"missed\":");
        put_display(buf, missed);
    }
    buf.put_u8(b'}');
}

/// Reads a signal's object as [`signal`] writes it; `kind` is `"gap"` or
/// `"reset"`.
///
/// # Errors
/// [`Error::InvalidResponse`] for another kind, or a malformed object.
pub fn parse_signal(kind: &str, body: &[u8]) -> Result<Signal, Error> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Error::invalid_response(format!("the {kind} is not JSON: {e}")))?;
    match kind {
        "gap" => parse_gap(&value).map(Signal::Gap),
        "reset" => parse_reset(&value).map(Signal::Reset),
        _ => Err(Error::invalid_response(format!("unknown signal {kind:?}"))),
    }
}

/// The body of an error answer: `{"error":{"code":…,"message":…}}`.
pub fn error(code: &str, message: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(48 + code.len() + message.len());
    buf.put_slice(b"{\"error\":{\"code\":");
    put_string(&mut buf, code);
    buf.put_slice(b",\"message\":");
    put_string(&mut buf, message);
    buf.put_slice(b"}}");
    buf.freeze()
}

/// The body of an answer to `err`; a backend failure also says whether the
/// operation may have happened: `"outcome":"not_done"` (retrying is safe)
/// or `"outcome":"unknown"` (a publish may have been stored: retry it with
/// the same idempotency key).
///
/// ```
/// use push_core::Error;
/// use push_core::wire::json;
///
/// let body = json::error_for(&Error::outcome_unknown("timed out"));
/// assert!(std::str::from_utf8(&body)?.contains(r#""outcome":"unknown""#));
/// # Ok::<(), std::str::Utf8Error>(())
/// ```
pub fn error_for(err: &Error) -> Bytes {
    let message = err.to_string();
    let Some(may_have) = err.may_have_happened() else {
        return error(err.code(), &message);
    };
    let mut buf = BytesMut::with_capacity(80 + message.len());
    buf.put_slice(b"{\"error\":{\"code\":");
    put_string(&mut buf, err.code());
    buf.put_slice(b",\"message\":");
    put_string(&mut buf, &message);
    buf.put_slice(if may_have {
        b",\"outcome\":\"unknown\"}}"
    } else {
        b",\"outcome\":\"not_done\"}}"
    });
    buf.freeze()
}

/// Writes `s` as a JSON string: quotes, and escapes for `"`, `\` and every
/// control character, so no input can break out of it.
pub fn put_string(buf: &mut BytesMut, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    buf.reserve(s.len() + 2);
    buf.put_u8(b'"');
    let bytes = s.as_bytes();
    let mut clean = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => b"",
            _ => continue,
        };
        buf.put_slice(&bytes[clean..i]);
        if escape.is_empty() {
            buf.put_slice(b"\\u00");
            buf.put_u8(HEX[usize::from(b >> 4)]);
            buf.put_u8(HEX[usize::from(b & 0xf)]);
        } else {
            buf.put_slice(escape);
        }
        clean = i + 1;
    }
    buf.put_slice(&bytes[clean..]);
    buf.put_u8(b'"');
}

/// Writes a cursor as a JSON string; its alphabet needs no escaping.
fn put_cursor(buf: &mut BytesMut, cursor: Cursor) {
    buf.put_u8(b'"');
    put_display(buf, cursor);
    buf.put_u8(b'"');
}

fn put_display(buf: &mut BytesMut, value: impl fmt::Display) {
    // BytesMut grows as needed: writing to it cannot fail.
    let _ = fmt::Write::write_fmt(buf, format_args!("{value}"));
}

/// An object's fields, each as the JSON text it was sent as (a field given
/// twice: the last one, as in a `serde_json::Value`).
type RawFields<'a> = BTreeMap<String, &'a RawValue>;

fn raw_fields<'a>(body: &'a [u8], what: &str) -> Result<RawFields<'a>, Error> {
    serde_json::from_slice(body)
        .map_err(|e| Error::invalid_response(format!("the {what} is not a JSON object: {e}")))
}

fn raw_field<'a>(fields: &RawFields<'a>, name: &str) -> Option<&'a RawValue> {
    fields.get(name).copied().filter(|raw| raw.get() != "null")
}

fn value_of(raw: &RawValue, name: &str) -> Result<Value, Error> {
    serde_json::from_str(raw.get())
        .map_err(|e| Error::invalid_response(format!("`{name}` is not JSON: {e}")))
}

/// Reads a batch as [`batch`] writes it. A JSON message's data is read as
/// the text it was sent as, never parsed into a value and written again.
///
/// # Errors
/// [`Error::InvalidResponse`] naming what is missing or malformed.
pub fn parse_batch(body: &[u8]) -> Result<Batch, Error> {
    let fields = raw_fields(body, "batch")?;
    let cursor = match raw_field(&fields, "cursor") {
        Some(raw) => parse_cursor(&value_of(raw, "cursor")?, "cursor")?,
        None => {
            return Err(Error::invalid_response(
                "`cursor` is missing or not a string",
            ));
        }
    };
    let more = match raw_field(&fields, "more").map(RawValue::get) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(Error::invalid_response("`more` is not a boolean")),
    };
    let signal = match (raw_field(&fields, "gap"), raw_field(&fields, "reset")) {
        (None, None) => None,
        (Some(gap), None) => Some(Signal::Gap(parse_gap(&value_of(gap, "gap")?)?)),
        (None, Some(reset)) => Some(Signal::Reset(parse_reset(&value_of(reset, "reset")?)?)),
        (Some(_), Some(_)) => return Err(Error::invalid_response("both a gap and a reset")),
    };
    let items: Vec<&RawValue> = raw_field(&fields, "messages")
        .and_then(|raw| serde_json::from_str(raw.get()).ok())
        .ok_or_else(|| Error::invalid_response("`messages` is not an array"))?;
    let messages = items
        .into_iter()
        .map(|item| parse_message(item.get().as_bytes()).map(Arc::new))
        .collect::<Result<_, _>>()?;
    Ok(Batch::new(signal, messages, cursor, more))
}

/// Reads one message envelope from its bytes (an SSE event's data, a
/// WebSocket frame). A JSON message's data is read as the text it was sent
/// as, never parsed into a value and written again.
///
/// # Errors
/// [`Error::InvalidResponse`] naming what is missing or malformed.
pub fn parse_message(body: &[u8]) -> Result<Message, Error> {
    let mut fields = raw_fields(body, "message")?;
    let data = fields
        .remove("data")
        .ok_or_else(|| Error::invalid_response("`data` is missing"))?;
    let mut object = Map::new();
    for (name, raw) in fields {
        let value = value_of(raw, &name)?;
        object.insert(name, value);
    }
    envelope_of(&object, Data::Raw(data))
}

/// Reads one message envelope from a parsed value. A JSON message's data is
/// written back from the value (serde_json's number precision and key
/// order); [`parse_message`], from the bytes, keeps it exactly as sent.
///
/// # Errors
/// [`Error::InvalidResponse`] naming what is missing or malformed.
pub fn parse_envelope(value: &Value) -> Result<Message, Error> {
    let object = as_object(value, "message")?;
    let data = object
        .get("data")
        .ok_or_else(|| Error::invalid_response("`data` is missing"))?;
    envelope_of(object, Data::Value(data))
}

/// An envelope's `data`, as text or as a parsed value.
#[derive(Clone, Copy)]
enum Data<'a> {
    Raw(&'a RawValue),
    Value(&'a Value),
}

fn envelope_of(object: &Map<String, Value>, data: Data<'_>) -> Result<Message, Error> {
    let channel = ChannelName::new(str_field(object, "channel")?)
        .map_err(|e| Error::invalid_response(e.to_string()))?;
    let ephemeral = match object.get("ephemeral") {
        None | Some(Value::Null | Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(_) => return Err(Error::invalid_response("`ephemeral` is not a boolean")),
    };
    // An ephemeral message has no id: a client gives it its own position
    // (`Message::following`).
    let cursor = if ephemeral {
        Cursor::new(crate::Epoch::new(0), crate::Position::new(0, 0))
    } else {
        cursor_field(object, "id")?
    };
    let event = match object.get("event") {
        None | Some(Value::Null) => None,
        // Joins and leaves are the protocol's own, and only ephemeral.
        Some(Value::String(event)) => match crate::PresenceChange::of_event(event) {
            Some(change) if ephemeral => Some(change.event()),
            _ => Some(EventName::new(event).map_err(|e| Error::invalid_response(e.to_string()))?),
        },
        Some(_) => return Err(Error::invalid_response("`event` is not a string")),
    };
    let time = match object.get("time") {
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| Error::invalid_response("`time` is not a whole number"))?,
        _ => return Err(Error::invalid_response("`time` is missing")),
    };
    let encoding = match object.get("encoding") {
        None | Some(Value::Null) => None,
        Some(Value::String(encoding)) => Some(encoding.as_str()),
        Some(other) => {
            return Err(Error::invalid_response(format!("unknown encoding {other}")));
        }
    };
    let (data, kind) = match encoding {
        Some("json") => {
            let text = match data {
                Data::Raw(raw) => Bytes::copy_from_slice(raw.get().as_bytes()),
                Data::Value(value) => Bytes::from(value.to_string()),
            };
            (text, ContentKind::Json)
        }
        None | Some("base64") => {
            let text = match data {
                Data::Raw(raw) => serde_json::from_str::<String>(raw.get()).ok(),
                Data::Value(Value::String(text)) => Some(text.clone()),
                Data::Value(_) => None,
            }
            .ok_or_else(|| Error::invalid_response("`data` is not a string"))?;
            let data = if encoding.is_some() {
                BASE64
                    .decode(text)
                    .map(Bytes::from)
                    .map_err(|e| Error::invalid_response(format!("`data` is not base64: {e}")))?
            } else {
                Bytes::from(text)
            };
            (data, ContentKind::Bytes)
        }
        Some(other) => {
            return Err(Error::invalid_response(format!(
                "unknown encoding {other:?}"
            )));
        }
    };
    let message = Message::new(
        channel,
        cursor,
        event,
        data,
        Timestamp::from_unix_millis(time),
    )
    .with_kind(kind)
    .map_err(|e| Error::invalid_response(format!("`data`: {e}")))?;
    Ok(if ephemeral {
        message.ephemeral()
    } else {
        message
    })
}

/// Reads an error body: its code and message, when it is one.
pub fn parse_error(body: &[u8]) -> Option<(String, String)> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let error = value.get("error")?;
    let code = error.get("code")?.as_str()?.to_owned();
    let message = error.get("message")?.as_str()?.to_owned();
    Some((code, message))
}

fn parse_gap(value: &Value) -> Result<Gap, Error> {
    let object = as_object(value, "gap")?;
    let missed = match object.get("missed") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(
            n.as_u64()
                .ok_or_else(|| Error::invalid_response("`missed` is not a whole number"))?,
        ),
        Some(_) => return Err(Error::invalid_response("`missed` is not a number")),
    };
    Ok(Gap::new(
        cursor_field(object, "since")?,
        cursor_field(object, "resume")?,
        missed,
    ))
}

fn parse_reset(value: &Value) -> Result<Reset, Error> {
    let object = as_object(value, "reset")?;
    Ok(Reset::new(
        cursor_field(object, "since")?,
        cursor_field(object, "resume")?,
    ))
}

fn as_object<'a>(value: &'a Value, what: &str) -> Result<&'a Map<String, Value>, Error> {
    value
        .as_object()
        .ok_or_else(|| Error::invalid_response(format!("the {what} is not a JSON object")))
}

fn str_field<'a>(object: &'a Map<String, Value>, name: &str) -> Result<&'a str, Error> {
    object
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| Error::invalid_response(format!("`{name}` is missing or not a string")))
}

fn cursor_field(object: &Map<String, Value>, name: &str) -> Result<Cursor, Error> {
    parse_cursor(
        object
            .get(name)
            .ok_or_else(|| Error::invalid_response(format!("`{name}` is missing")))?,
        name,
    )
}

fn parse_cursor(value: &Value, name: &str) -> Result<Cursor, Error> {
    value
        .as_str()
        .ok_or_else(|| Error::invalid_response(format!("`{name}` is missing or not a string")))?
        .parse()
        .map_err(|e: Error| Error::invalid_response(format!("`{name}`: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Epoch, Position};
    use proptest::prelude::*;

    fn cursor(n: u64) -> Cursor {
        Cursor::new(Epoch::new(0xab), Position::new(n, 0))
    }

    fn message(data: &[u8], event: Option<&str>) -> Message {
        Message::new(
            "news".parse().unwrap(),
            cursor(7),
            event.map(|e| e.parse().unwrap()),
            Bytes::copy_from_slice(data),
            Timestamp::from_unix_millis(1_700_000_000_123),
        )
    }

    #[test]
    fn envelope_forms() {
        assert_eq!(
            envelope(&message(b"hi \"you\"\n", Some("ev"))),
            &br#"{"channel":"news","id":"ab.7","event":"ev","time":1700000000123,"data":"hi \"you\"\n"}"#[..]
        );
        assert_eq!(
            envelope(&message(&[0, 1, 2, 0xff], None)),
            &br#"{"channel":"news","id":"ab.7","time":1700000000123,"data":"AAEC/w==","encoding":"base64"}"#[..]
        );
    }

    fn json_message(text: &str) -> Message {
        message(text.as_bytes(), None)
            .with_kind(ContentKind::Json)
            .unwrap()
    }

    #[test]
    fn json_envelopes_carry_the_value() {
        let m = json_message("{ \"a\" : [1, 2.50, \"x\"] }");
        let json = envelope(&m);
        assert_eq!(
            json,
            &br#"{"channel":"news","id":"ab.7","time":1700000000123,"data":{"a":[1,2.50,"x"]},"encoding":"json"}"#[..]
        );
        let back = parse_message(&json).unwrap();
        assert_eq!(back.kind(), ContentKind::Json);
        assert_eq!(
            &back.data()[..],
            br#"{"a":[1,2.50,"x"]}"#,
            "as sent, 2.50 too"
        );
        let value: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value["data"]["a"][2], "x");
        assert_eq!(parse_envelope(&value).unwrap().kind(), ContentKind::Json);
    }

    #[test]
    fn a_json_string_and_text_stay_apart() {
        let json = json_message("\"hi\"");
        let text = message(b"hi", None);
        assert_eq!(
            envelope(&json),
            &br#"{"channel":"news","id":"ab.7","time":1700000000123,"data":"hi","encoding":"json"}"#[..]
        );
        assert_eq!(
            envelope(&text),
            &br#"{"channel":"news","id":"ab.7","time":1700000000123,"data":"hi"}"#[..]
        );
        let json = parse_message(&envelope(&json)).unwrap();
        let text = parse_message(&envelope(&text)).unwrap();
        assert_eq!(
            (json.kind(), &json.data()[..]),
            (ContentKind::Json, &b"\"hi\""[..])
        );
        assert_eq!(
            (text.kind(), &text.data()[..]),
            (ContentKind::Bytes, &b"hi"[..])
        );
        assert_eq!(json.json::<String>().unwrap(), "hi");
        assert_eq!(text.json::<String>().unwrap_err().code(), "invalid_json");
    }

    #[test]
    fn json_data_that_is_null_is_a_value() {
        let m =
            parse_message(br#"{"channel":"a","id":"ab.1","time":0,"data":null,"encoding":"json"}"#)
                .unwrap();
        assert_eq!((m.kind(), &m.data()[..]), (ContentKind::Json, &b"null"[..]));
        let m = parse_message(
            br#"{"channel":"a","id":"ab.1","time":0,"data":{ "b" :
            true },"encoding":"json"}"#,
        )
        .unwrap();
        assert_eq!(&m.data()[..], br#"{"b":true}"#, "made compact");
    }

    #[test]
    fn envelope_is_encoded_once() {
        let m = message(b"x", None);
        assert_eq!(envelope(&m).as_ptr(), envelope(&m).as_ptr());
    }

    #[test]
    fn batch_with_a_gap() {
        let b = Batch::new(
            Some(Signal::Gap(Gap::new(cursor(1), cursor(6), Some(5)))),
            vec![Arc::new(message(b"x", None))],
            cursor(7),
            true,
        );
        let json = batch(&b);
        assert_eq!(
            json,
            &br#"{"cursor":"ab.7","more":true,"gap":{"since":"ab.1","resume":"ab.6","missed":5},"messages":[{"channel":"news","id":"ab.7","time":1700000000123,"data":"x"}]}"#[..]
        );
        assert_eq!(parse_batch(&json).unwrap(), b);
    }

    #[test]
    fn error_bodies() {
        let err = "01.1".parse::<Cursor>().unwrap_err();
        let body = error_for(&err);
        assert_eq!(
            parse_error(&body),
            Some((
                "invalid_cursor".into(),
                "invalid cursor: a number has leading zeros".into()
            ))
        );
    }

    #[test]
    fn malformed_batches_are_errors() {
        for body in [
            &b"not json"[..],
            b"[]",
            b"{}",
            br#"{"cursor":"ab.1","messages":{}}"#,
            br#"{"cursor":"AB.1","messages":[]}"#,
            br#"{"cursor":"ab.1","more":1,"messages":[]}"#,
            br#"{"cursor":"ab.1","messages":[{"channel":"a b","id":"ab.1","time":0,"data":""}]}"#,
            br#"{"cursor":"ab.1","messages":[{"channel":"a","id":"ab.1","time":-1,"data":""}]}"#,
            br#"{"cursor":"ab.1","messages":[{"channel":"a","id":"ab.1","time":0,"data":"!","encoding":"base64"}]}"#,
            br#"{"cursor":"ab.1","messages":[{"channel":"a","id":"ab.1","time":0,"data":"","encoding":"rot13"}]}"#,
            br#"{"cursor":"ab.1","gap":{"since":"ab.1"},"messages":[]}"#,
            br#"{"cursor":"ab.1","messages":[{"channel":"a","id":"ab.1","time":0,"data":{}}]}"#,
            br#"{"cursor":"ab.1","messages":[{"channel":"a","id":"ab.1","time":0,"data":null}]}"#,
            br#"{"cursor":"ab.1","messages":[{"channel":"a","id":"ab.1","time":0,"encoding":"json"}]}"#,
            br#"{"cursor":"ab.1","messages":[{"channel":"a","id":"ab.1","time":0,"data":1,"encoding":"base64"}]}"#,
            br#"{"cursor":null,"messages":[]}"#,
        ] {
            let parsed = parse_batch(body);
            assert!(
                matches!(parsed, Err(Error::InvalidResponse { .. })),
                "{}: {parsed:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    proptest! {
        #[test]
        fn any_string_survives_a_json_string(s in "\\PC*|[\\x00-\\x7f]*") {
            let mut buf = BytesMut::new();
            put_string(&mut buf, &s);
            let back: String = serde_json::from_slice(&buf).unwrap();
            prop_assert_eq!(back, s);
        }

        #[test]
        fn any_message_survives_an_envelope(
            data in proptest::collection::vec(any::<u8>(), 0..64),
            text in "\\PC{0,20}",
            use_text: bool,
            event in proptest::option::of("[a-z]{1,8}"),
            time: u64,
            n: u64,
        ) {
            let data = if use_text { text.into_bytes() } else { data };
            let m = Message::new(
                "c".parse().unwrap(),
                cursor(n),
                event.map(|e| e.parse().unwrap()),
                Bytes::from(data),
                Timestamp::from_unix_millis(time),
            );
            let value: Value = serde_json::from_slice(&envelope(&m)).unwrap();
            let back = parse_envelope(&value).unwrap();
            prop_assert_eq!(back.data(), m.data());
            prop_assert_eq!(back.event(), m.event());
            prop_assert_eq!(back.published_at(), m.published_at());
            prop_assert_eq!(back, m);
        }

        #[test]
        fn any_json_value_survives_the_envelope_unchanged(
            value in crate::content::strategy::any_json(),
            event in proptest::option::of("[a-z]{1,8}"),
            n: u64,
        ) {
            // What a publisher sends: compact, or pretty (made compact).
            let text = serde_json::to_string(&value).unwrap();
            let pretty = serde_json::to_string_pretty(&value).unwrap();
            let published = crate::Publication::json(pretty).unwrap();
            prop_assert_eq!(&published.data()[..], text.as_bytes());
            let m = Message::new(
                "c".parse().unwrap(),
                cursor(n),
                event.map(|e| e.parse().unwrap()),
                published.data().clone(),
                Timestamp::from_unix_millis(1),
            )
            .with_kind(ContentKind::Json)
            .unwrap();
            let encoded = envelope(&m);
            // The envelope holds the value itself, and is one line.
            let parsed: Value = serde_json::from_slice(&encoded).unwrap();
            prop_assert_eq!(&parsed["encoding"], "json");
            prop_assert_eq!(&parsed["data"], &serde_json::from_str::<Value>(&text).unwrap());
            prop_assert!(!encoded.contains(&b'\n'));
            // Read back from the bytes, alone and in a batch: the very text.
            let back = parse_message(&encoded).unwrap();
            prop_assert_eq!(back.kind(), ContentKind::Json);
            prop_assert_eq!(&back.data()[..], text.as_bytes());
            prop_assert_eq!(back.event(), m.event());
            let b = Batch::new(None, vec![Arc::new(m)], cursor(n), false);
            let read = parse_batch(&batch(&b)).unwrap();
            prop_assert_eq!(&read.messages[0].data()[..], text.as_bytes());
            prop_assert_eq!(read.messages[0].kind(), ContentKind::Json);
            // And typed: the value deserializes as the one published.
            let typed: Value = back.json().unwrap();
            prop_assert_eq!(typed, serde_json::from_str::<Value>(&text).unwrap());
        }

        #[test]
        fn arbitrary_bodies_never_panic(body: Vec<u8>) {
            let _ = parse_batch(&body);
            let _ = parse_message(&body);
            let _ = parse_error(&body);
        }
    }
}
