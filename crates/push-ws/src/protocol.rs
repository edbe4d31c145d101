//! The `push.v1` JSON protocol: commands read from clients, control frames
//! written to them. Messages themselves travel as their shared JSON envelope.

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{BufMut, Bytes, BytesMut};
use push_core::wire::json;
use push_core::{ChannelName, Cursor, EventName, IdempotencyKey, Publication, Signal, Start};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// The longest `ref` a client may attach: a string of up to 64 bytes, or a
/// number written in up to 64 characters.
const MAX_REF_LEN: usize = 64;

/// A client's command.
#[derive(Debug)]
pub enum Command {
    /// `{"op":"subscribe","channel":C}`, with `since` or `last`.
    Subscribe {
        /// The channel.
        channel: ChannelName,
        /// Where it starts.
        start: Start,
        /// Joins and leaves asked for (`"presence":true`).
        presence: bool,
    },
    /// `{"op":"unsubscribe","channel":C}`.
    Unsubscribe {
        /// The channel.
        channel: ChannelName,
    },
    /// `{"op":"publish","channel":C,"data":D}`, with `encoding`, `event`, `key`.
    Publish {
        /// The channel.
        channel: ChannelName,
        /// What to publish.
        publication: Publication,
    },
}

/// A command that cannot be carried out: its error code and message.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    pub(crate) code: Cow<'static, str>,
    pub(crate) message: String,
    /// For a backend failure: whether the command may have happened anyway.
    pub(crate) may_have_happened: Option<bool>,
}

impl Refused {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Self {
        Refused {
            code: Cow::Borrowed(code),
            message: message.into(),
            may_have_happened: None,
        }
    }
}

impl From<push_core::Error> for Refused {
    fn from(err: push_core::Error) -> Self {
        Refused {
            may_have_happened: err.may_have_happened(),
            ..Refused::new(err.code(), err.to_string())
        }
    }
}

/// Reads one command; the `ref` comes back even when the rest is refused, so
/// that the error can name it. The `ref` is the client's own JSON text,
/// echoed byte for byte (a number is not re-read as a float, a string not
/// re-escaped).
pub fn parse(text: &str) -> (Option<&str>, Result<Command, Refused>) {
    let object: Object<'_> = match serde_json::from_str(text) {
        Ok(object) => object,
        Err(e) if e.classify() == serde_json::error::Category::Data => {
            return (
                None,
                Err(Refused::new(
                    "invalid_command",
                    "a command is a JSON object",
                )),
            );
        }
        Err(e) => {
            return (
                None,
                Err(Refused::new("invalid_command", format!("not JSON: {e}"))),
            );
        }
    };
    match object.reference.map(reference).transpose() {
        Ok(reference) => (reference.flatten(), command(&object.fields, object.data)),
        Err(refused) => (None, Err(refused)),
    }
}

/// A `ref` as written, if it is one: `null` (none), a number of at most
/// [`MAX_REF_LEN`] characters, or a string of at most that many bytes.
fn reference(raw: &RawValue) -> Result<Option<&str>, Refused> {
    let text = raw.get();
    let fits = match text.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(text).is_ok_and(|s| s.len() <= MAX_REF_LEN),
        Some(b'-' | b'0'..=b'9') => text.len() <= MAX_REF_LEN,
        _ if text == "null" => return Ok(None),
        _ => false,
    };
    if fits {
        Ok(Some(text))
    } else {
        Err(Refused::new(
            "invalid_command",
            "`ref` must be a number of at most 64 characters or a string of at most 64 bytes",
        ))
    }
}

/// A command object: its fields, and its `ref` and `data` as the client
/// wrote them (JSON data is published as written, never re-serialized).
struct Object<'a> {
    fields: Map<String, Value>,
    reference: Option<&'a RawValue>,
    data: Option<&'a RawValue>,
}

impl<'de> Deserialize<'de> for Object<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ObjectVisitor)
    }
}

struct ObjectVisitor;

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = Object<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object<'de>, A::Error> {
        let mut object = Object {
            fields: Map::new(),
            reference: None,
            data: None,
        };
        // As in a `serde_json::Value`, the last of repeated keys wins.
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "ref" => object.reference = Some(map.next_value()?),
                "data" => object.data = Some(map.next_value()?),
                _ => {
                    object.fields.insert(key, map.next_value()?);
                }
            }
        }
        Ok(object)
    }
}

fn command(object: &Map<String, Value>, data: Option<&RawValue>) -> Result<Command, Refused> {
    let op =
        string(object, "op")?.ok_or_else(|| Refused::new("invalid_command", "`op` is missing"))?;
    let channel = || -> Result<ChannelName, Refused> {
        let name = string(object, "channel")?
            .ok_or_else(|| Refused::new("invalid_channel", "`channel` is missing"))?;
        Ok(name.parse::<ChannelName>()?)
    };
    match op {
        "subscribe" => Ok(Command::Subscribe {
            channel: channel()?,
            start: start(object)?,
            presence: match object.get("presence") {
                None | Some(Value::Null | Value::Bool(false)) => false,
                Some(Value::Bool(true)) => true,
                Some(_) => {
                    return Err(Refused::new(
                        "invalid_command",
                        "`presence` must be true or false",
                    ));
                }
            },
        }),
        "unsubscribe" => Ok(Command::Unsubscribe {
            channel: channel()?,
        }),
        "publish" => {
            let channel = channel()?;
            let data = data.ok_or_else(|| Refused::new("invalid_command", "`data` is missing"))?;
            let mut publication = publication(data, string(object, "encoding")?)?;
            if let Some(event) = string(object, "event")? {
                publication = publication.with_event(event.parse::<EventName>()?);
            }
            if let Some(key) = string(object, "key")? {
                publication = publication.with_key(key.parse::<IdempotencyKey>()?);
            }
            match object.get("store") {
                None | Some(Value::Null | Value::Bool(true)) => {}
                Some(Value::Bool(false)) if publication.key().is_some() => {
                    return Err(Refused::new(
                        "invalid_command",
                        "an ephemeral publish (`store`: false) takes no `key`",
                    ));
                }
                Some(Value::Bool(false)) => publication = publication.ephemeral(),
                Some(_) => {
                    return Err(Refused::new(
                        "invalid_command",
                        "`store` must be true or false",
                    ));
                }
            }
            Ok(Command::Publish {
                channel,
                publication,
            })
        }
        _ => Err(Refused::new("unknown_op", format!("unknown op {op:?}"))),
    }
}

/// A publish's data: a string is text (or, with `"encoding":"base64"`,
/// binary data); any other JSON value, or any value with
/// `"encoding":"json"`, is published as JSON, as the client wrote it.
fn publication(data: &RawValue, encoding: Option<&str>) -> Result<Publication, Refused> {
    let text = data.get();
    let string = || {
        serde_json::from_str::<String>(text)
            .map_err(|_| Refused::new("invalid_command", "`data` must be a string"))
    };
    match encoding {
        Some("json") => Ok(Publication::json(Bytes::copy_from_slice(text.as_bytes()))?),
        None if !text.starts_with('"') => {
            Ok(Publication::json(Bytes::copy_from_slice(text.as_bytes()))?)
        }
        None => Ok(Publication::new(string()?)),
        Some("base64") => BASE64
            .decode(string()?)
            .map(Publication::new)
            .map_err(|e| Refused::new("invalid_command", format!("`data` is not base64: {e}"))),
        Some(_) => Err(Refused::new(
            "invalid_command",
            "`encoding` must be base64 or json",
        )),
    }
}

/// A subscribe's start: `since` (a cursor or `earliest`) or `last` (a
/// whole number; `0` is live), never both.
fn start(object: &Map<String, Value>) -> Result<Start, Refused> {
    let since = string(object, "since")?;
    let last = match object.get("last") {
        None | Some(Value::Null) => return Ok(Start::from_since(since)?),
        Some(last) => last
            .as_u64()
            .ok_or_else(|| Refused::new("invalid_command", "`last` must be a whole number"))?,
    };
    if since.is_some() {
        return Err(Refused::new(
            "invalid_command",
            "`since` and `last` cannot be given together",
        ));
    }
    Ok(if last == 0 {
        Start::Live
    } else {
        Start::Last(last)
    })
}

fn string<'a>(object: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, Refused> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Refused::new(
            "invalid_command",
            format!("`{name}` must be a string"),
        )),
    }
}

/// What an ack carries besides its `ref`.
#[derive(Clone, Copy, Debug)]
pub enum Acked {
    /// Nothing more (unsubscribe; subscribe from a cursor or the earliest).
    Done,
    /// A live subscribe: the channel's head, where the subscription starts.
    Cursor(Cursor),
    /// A publish: the message's id.
    Id(Cursor),
    /// An ephemeral publish: `"stored":false`, no id.
    Unstored,
}

/// `{"op":"ack","ref":R}`, with the head of a live subscription as `cursor`,
/// or the published message's `id`; and the `channel` it acted on when the
/// app's hook mapped the one named.
pub fn ack(reference: Option<&str>, acked: Acked, mapped: Option<&ChannelName>) -> Bytes {
    let mut buf = BytesMut::with_capacity(96 + mapped.map_or(0, |c| c.as_str().len()));
    buf.put_slice(b"{\"op\":\"ack\"");
    put_ref(&mut buf, reference);
    let (name, cursor): (&[u8], _) = match acked {
        Acked::Done => (b"", None),
        Acked::Cursor(cursor) => (b",\"cursor\":\"", Some(cursor)),
        Acked::Id(id) => (b",\"id\":\"", Some(id)),
        Acked::Unstored => (b",\"stored\":false", None),
    };
    if cursor.is_none() {
        buf.put_slice(name);
    }
    if let Some(cursor) = cursor {
        buf.put_slice(name);
        buf.put_slice(cursor.text().as_str().as_bytes());
        buf.put_u8(b'"');
    }
    if let Some(channel) = mapped {
        buf.put_slice(b",\"channel\":");
        json::put_string(&mut buf, channel.as_str());
    }
    buf.put_u8(b'}');
    buf.freeze()
}

/// `{"op":"subscribed","channel":C,"cursor":HEAD}`: the first frame of a live
/// socket on the channel endpoint, saying where it starts.
pub fn subscribed(channel: &ChannelName, head: Cursor) -> Bytes {
    let mut buf = BytesMut::with_capacity(96 + channel.as_str().len());
    buf.put_slice(b"{\"op\":\"subscribed\",\"channel\":");
    json::put_string(&mut buf, channel.as_str());
    buf.put_slice(b",\"cursor\":\"");
    buf.put_slice(head.text().as_str().as_bytes());
    buf.put_slice(b"\"}");
    buf.freeze()
}

/// `{"op":"error","ref":R,"code":C,"message":M}`.
pub fn error(reference: Option<&str>, refused: &Refused) -> Bytes {
    let mut buf = BytesMut::with_capacity(96 + refused.message.len());
    buf.put_slice(b"{\"op\":\"error\"");
    put_ref(&mut buf, reference);
    buf.put_slice(b",\"code\":");
    json::put_string(&mut buf, &refused.code);
    buf.put_slice(b",\"message\":");
    json::put_string(&mut buf, &refused.message);
    match refused.may_have_happened {
        Some(true) => buf.put_slice(b",\"outcome\":\"unknown\""),
        Some(false) => buf.put_slice(b",\"outcome\":\"not_done\""),
        None => {}
    }
    buf.put_u8(b'}');
    buf.freeze()
}

/// `{"op":"gap","channel":C,"since":…,"resume":…,"missed":…}` (or `reset`).
pub fn signal(channel: &ChannelName, signal: &Signal) -> Bytes {
    let object = json::signal(signal);
    let op: &[u8] = match signal {
        Signal::Gap(_) => b"gap",
        Signal::Reset(_) => b"reset",
    };
    let mut buf = BytesMut::with_capacity(object.len() + 48 + channel.as_str().len());
    buf.put_slice(b"{\"op\":\"");
    buf.put_slice(op);
    buf.put_slice(b"\",\"channel\":");
    json::put_string(&mut buf, channel.as_str());
    buf.put_u8(b',');
    // The signal's own object without its opening brace.
    buf.put_slice(&object[1..]);
    buf.freeze()
}

/// `,"ref":R` with the client's own JSON text for `R`.
fn put_ref(buf: &mut BytesMut, reference: Option<&str>) {
    if let Some(reference) = reference {
        buf.put_slice(b",\"ref\":");
        buf.put_slice(reference.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use push_core::ContentKind;

    #[test]
    fn commands_and_their_refusals() {
        let (r, command) =
            parse(r#"{"op":"subscribe","channel":"news","since":"earliest","ref":7}"#);
        assert_eq!(r, Some("7"));
        assert!(matches!(
            command,
            Ok(Command::Subscribe {
                start: Start::Earliest,
                ..
            })
        ));
        let (_, command) = parse(
            r#"{"op":"publish","channel":"c","data":"AP8=","encoding":"base64","event":"e"}"#,
        );
        let Ok(Command::Publish { publication, .. }) = command else {
            panic!()
        };
        assert_eq!(&publication.data()[..], b"\x00\xff");
        assert_eq!(publication.kind(), ContentKind::Bytes);
        for (text, kind, data) in [
            (r#""{\"a\":1}""#, ContentKind::Bytes, r#"{"a":1}"#),
            (
                r#"{ "a" : 12345678901234567890123 }"#,
                ContentKind::Json,
                r#"{"a":12345678901234567890123}"#,
            ),
            ("[1, 2.50]", ContentKind::Json, "[1,2.50]"),
            ("null", ContentKind::Json, "null"),
            ("false", ContentKind::Json, "false"),
        ] {
            let command = format!(r#"{{"op":"publish","channel":"c","data":{text}}}"#);
            let Ok(Command::Publish { publication, .. }) = parse(&command).1 else {
                panic!("{command}")
            };
            assert_eq!(
                (publication.kind(), &publication.data()[..]),
                (kind, data.as_bytes()),
                "{text}"
            );
        }
        // A JSON string value needs the marker; without it a string is text.
        let (_, command) = parse(r#"{"op":"publish","channel":"c","data":"hi","encoding":"json"}"#);
        let Ok(Command::Publish { publication, .. }) = command else {
            panic!()
        };
        assert_eq!(
            (publication.kind(), &publication.data()[..]),
            (ContentKind::Json, &b"\"hi\""[..])
        );
        for (text, code) in [
            ("nope", "invalid_command"),
            ("[1]", "invalid_command"),
            (r#"{"channel":"c"}"#, "invalid_command"),
            (r#"{"op":"dance"}"#, "unknown_op"),
            (r#"{"op":"subscribe"}"#, "invalid_channel"),
            (r#"{"op":"subscribe","channel":"a b"}"#, "invalid_channel"),
            (
                r#"{"op":"subscribe","channel":"c","since":"x"}"#,
                "invalid_cursor",
            ),
            (r#"{"op":"subscribe","channel":7}"#, "invalid_command"),
            (
                r#"{"op":"subscribe","channel":"c","since":"earliest","last":2}"#,
                "invalid_command",
            ),
            (
                r#"{"op":"subscribe","channel":"c","last":-1}"#,
                "invalid_command",
            ),
            (
                r#"{"op":"subscribe","channel":"c","last":"2"}"#,
                "invalid_command",
            ),
            (r#"{"op":"publish","channel":"c"}"#, "invalid_command"),
            (
                r#"{"op":"publish","channel":"c","data":"x","event":"push.gap"}"#,
                "invalid_event",
            ),
            (
                r#"{"op":"publish","channel":"c","data":"!","encoding":"base64"}"#,
                "invalid_command",
            ),
            (
                r#"{"op":"publish","channel":"c","data":[1],"encoding":"base64"}"#,
                "invalid_command",
            ),
            (
                r#"{"op":"publish","channel":"c","data":"x","encoding":"rot13"}"#,
                "invalid_command",
            ),
            (
                r#"{"op":"publish","channel":"c","data":"\ud800","encoding":"json"}"#,
                "invalid_json",
            ),
            (
                r#"{"op":"unsubscribe","channel":"c","ref":{"a":1}}"#,
                "invalid_command",
            ),
        ] {
            let (_, command) = parse(text);
            assert_eq!(command.unwrap_err().code, code, "{text}");
        }
    }

    #[test]
    fn refs_come_back_as_written() {
        let long_string = format!("\"{}\"", "x".repeat(64));
        let long_number = "9".repeat(64);
        for written in [
            "12345678901234567890123",
            "1.50",
            "1e2",
            "-0",
            "-1.0E+400",
            "7",
            r#""a\"b""#,
            r#""\u00e9t\u00E9""#,
            "\"été\"",
            "\"\"",
            &long_string,
            &long_number,
        ] {
            for command in [
                format!(r#"{{"op":"unsubscribe","channel":"c","ref":{written}}}"#),
                format!("{{ \"ref\" :  {written}  , \"op\":\"dance\"}}"),
            ] {
                let (r, _) = parse(&command);
                assert_eq!(r, Some(written), "{command}");
                let acked = ack(r, Acked::Done, None);
                let expected = format!(r#"{{"op":"ack","ref":{written}}}"#);
                assert_eq!(&acked[..], expected.as_bytes());
                let errored = error(r, &Refused::new("unknown_op", "m"));
                let expected = format!(
                    r#"{{"op":"error","ref":{written},"code":"unknown_op","message":"m"}}"#
                );
                assert_eq!(&errored[..], expected.as_bytes());
            }
        }
        assert_eq!(parse(r#"{"op":"dance","ref":null}"#).0, None);
        assert_eq!(
            parse(r#"{"op":"dance","ref":1,"ref":"two"}"#).0,
            Some(r#""two""#)
        );
        for bad in [
            format!("\"{}\"", "x".repeat(65)),
            "9".repeat(65),
            "true".to_owned(),
            "[1]".to_owned(),
            r#"{"a":1}"#.to_owned(),
            r#""\ud800""#.to_owned(),
        ] {
            let text = format!(r#"{{"op":"unsubscribe","channel":"c","ref":{bad}}}"#);
            let (r, command) = parse(&text);
            assert_eq!(r, None, "{bad}");
            assert_eq!(command.unwrap_err().code, "invalid_command", "{bad}");
        }
        // Not an object, or not JSON: no ref to echo.
        assert_eq!(
            parse(r#"[{"ref":1}]"#).1.unwrap_err().message,
            "a command is a JSON object"
        );
        assert!(
            parse(r#"{"ref":1"#)
                .1
                .unwrap_err()
                .message
                .starts_with("not JSON")
        );
    }

    #[test]
    fn control_frames_are_json() {
        let ack: Value =
            serde_json::from_slice(&ack(Some(r#""a\"b""#), Acked::Done, None)).unwrap();
        assert_eq!(ack, serde_json::json!({"op":"ack","ref":"a\"b"}));
        let mapped: ChannelName = "user:42".parse().unwrap();
        let cursor: Cursor = "a.7".parse().unwrap();
        let acked: Value =
            serde_json::from_slice(&super::ack(None, Acked::Cursor(cursor), Some(&mapped)))
                .unwrap();
        assert_eq!(
            acked,
            serde_json::json!({"op":"ack","cursor":"a.7","channel":"user:42"})
        );
        let refused = Refused::new("forbidden", "no \"publish\" here");
        let error: Value = serde_json::from_slice(&error(Some("3"), &refused)).unwrap();
        assert_eq!(
            error,
            serde_json::json!({"op":"error","ref":3,"code":"forbidden","message":"no \"publish\" here"})
        );
        for (err, outcome) in [
            (push_core::Error::unavailable("down"), "not_done"),
            (push_core::Error::outcome_unknown("timed out"), "unknown"),
        ] {
            let frame: Value =
                serde_json::from_slice(&super::error(None, &Refused::from(err))).unwrap();
            assert_eq!(
                (&frame["code"], &frame["outcome"]),
                (
                    &serde_json::json!("unavailable"),
                    &serde_json::json!(outcome)
                )
            );
        }
        let cursor = |s: &str| s.parse::<Cursor>().unwrap();
        let gap = Signal::Gap(push_core::Gap::new(cursor("a.1"), cursor("a.5"), Some(4)));
        let frame: Value = serde_json::from_slice(&signal(&"c".parse().unwrap(), &gap)).unwrap();
        assert_eq!(
            frame,
            serde_json::json!({"op":"gap","channel":"c","since":"a.1","resume":"a.5","missed":4})
        );
    }
}
