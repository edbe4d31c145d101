//! What a message's data is: opaque bytes, or a JSON value.

use std::fmt;

use bytes::Bytes;
use serde::Deserializer;
use serde::de::{Deserialize, MapAccess, SeqAccess, Visitor};

use crate::Error;

/// How deeply arrays and objects may nest in JSON data. JSON parsers bound
/// their recursion (serde_json at 128 levels, counting the envelope and the
/// batch around the data), so deeper data could be published but not read.
pub const MAX_JSON_DEPTH: usize = 64;

/// What a message's data is, as its publisher declared it: the one name for
/// this in every crate (the HTTP `Content-Type`, the `push.v1` publish
/// command and the envelope's `"encoding":"json"` all map to it).
///
/// Every JSON envelope carries [`ContentKind::Json`] data as the JSON value
/// itself (`"data":{"a":1},"encoding":"json"`) and [`ContentKind::Bytes`] as
/// today (a JSON string of UTF-8 text, or base64 with `"encoding":"base64"`),
/// so a JSON string value and a text message stay apart. A plain SSE event
/// carries either kind's bytes as they are.
///
/// ```
/// use push_core::{ContentKind, Publication};
///
/// assert_eq!(Publication::new("{\"a\":1}").kind(), ContentKind::Bytes);
/// assert_eq!(Publication::json("{\"a\": 1}")?.kind(), ContentKind::Json);
/// # Ok::<(), push_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ContentKind {
    /// Any bytes: sent as a JSON string when they are UTF-8 text, as base64
    /// otherwise. What a publish without a JSON `Content-Type` makes.
    #[default]
    Bytes,
    /// One JSON value (RFC 8259), held as compact JSON text: checked when
    /// published, never parsed again, spliced into every envelope as it is.
    Json,
}

impl ContentKind {
    /// The kind a `Content-Type` header value declares: [`ContentKind::Json`]
    /// for `application/json` and any `application/*+json` (RFC 6839), with
    /// or without parameters, in any letter case; [`ContentKind::Bytes`]
    /// for anything else.
    ///
    /// ```
    /// use push_core::ContentKind;
    ///
    /// assert_eq!(ContentKind::of_media_type("application/json; charset=utf-8"), ContentKind::Json);
    /// assert_eq!(ContentKind::of_media_type("Application/LD+JSON"), ContentKind::Json);
    /// assert_eq!(ContentKind::of_media_type("text/plain"), ContentKind::Bytes);
    /// assert_eq!(ContentKind::of_media_type("application/jsonx"), ContentKind::Bytes);
    /// ```
    pub fn of_media_type(content_type: &str) -> ContentKind {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim_matches([' ', '\t']);
        let Some((kind, subtype)) = essence.split_once('/') else {
            return ContentKind::Bytes;
        };
        let subtype = subtype.as_bytes();
        let json = kind.eq_ignore_ascii_case("application")
            && (subtype.eq_ignore_ascii_case(b"json")
                || (subtype.len() > 5
                    && subtype[subtype.len() - 5..].eq_ignore_ascii_case(b"+json")));
        if json {
            ContentKind::Json
        } else {
            ContentKind::Bytes
        }
    }
}

/// Checks that `text` is one JSON value nested at most [`MAX_JSON_DEPTH`]
/// deep, and returns it compact: the whitespace between tokens removed (the
/// bytes of strings and numbers untouched), so it is one line that any
/// envelope or SSE `data:` line can hold. Text that is compact already is
/// returned as it is, without a copy.
pub(crate) fn compact_json(text: Bytes) -> Result<Bytes, Error> {
    let utf8 = std::str::from_utf8(&text).map_err(|e| Error::invalid_json(e.to_string()))?;
    serde_json::from_str::<Checked>(utf8).map_err(|e| Error::invalid_json(e.to_string()))?;
    // Valid JSON from here on: a string holds no raw control character, and
    // whitespace outside strings is only ' ', '\t', '\n' and '\r'.
    let mut out: Option<Vec<u8>> = None;
    let (mut in_string, mut escaped, mut depth) = (false, false, 0usize);
    for (i, &byte) in text.iter().enumerate() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match byte {
                b' ' | b'\t' | b'\n' | b'\r' => {
                    if out.is_none() {
                        out = Some(text[..i].to_vec());
                    }
                    continue;
                }
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > MAX_JSON_DEPTH {
                        return Err(Error::invalid_json(format!(
                            "nested more than {MAX_JSON_DEPTH} levels deep"
                        )));
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        if let Some(out) = &mut out {
            out.push(byte);
        }
    }
    Ok(out.map_or(text, Bytes::from))
}

/// A JSON value read in full and kept nowhere: every string decoded (so a
/// bad escape or a lone surrogate is refused, as every client's parser would
/// refuse it) and every number read (`1e400` is refused), without building a
/// tree.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(Checked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn compact(text: &str) -> Result<String, Error> {
        compact_json(Bytes::copy_from_slice(text.as_bytes()))
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
    }

    #[test]
    fn compacts_between_tokens_only() {
        assert_eq!(
            compact(" {\r\n \"a b\" :\t[1 , \"x\\\" \\n y\", 1.5e3, null] }\n").unwrap(),
            "{\"a b\":[1,\"x\\\" \\n y\",1.5e3,null]}"
        );
        assert_eq!(compact("\"  \"").unwrap(), "\"  \"");
        assert_eq!(
            compact("12345678901234567890123").unwrap(),
            "12345678901234567890123"
        );
    }

    #[test]
    fn compact_text_is_not_copied() {
        let text = Bytes::from_static(b"{\"a\":[1,2]}");
        assert_eq!(compact_json(text.clone()).unwrap().as_ptr(), text.as_ptr());
    }

    #[test]
    fn refuses_what_is_not_one_json_value() {
        for bad in [
            "",
            " ",
            "{",
            "{\"a\":1}}",
            "{\"a\":1} {}",
            "'a'",
            "\"a\nb\"",
            "NaN",
            "[1,]",
            "\u{feff}{}",
            "\"\\ud800\"",
            "\"\\x\"",
            "1e400",
        ] {
            let err = compact(bad).unwrap_err();
            assert_eq!(err.code(), "invalid_json", "{bad:?}");
            assert_eq!(err.http_status(), 400);
        }
        assert!(compact_json(Bytes::from_static(b"\"\xff\"")).is_err());
    }

    #[test]
    fn bounds_the_depth() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(compact(&deep(MAX_JSON_DEPTH)).is_ok());
        let err = compact(&deep(MAX_JSON_DEPTH + 1)).unwrap_err();
        assert!(err.to_string().contains("nested"), "{err}");
        // Brackets in strings do not count.
        let text = format!("[\"{}\"]", "[".repeat(500));
        assert!(compact(&text).is_ok());
    }

    proptest! {
        #[test]
        fn compact_text_is_the_same_value(value in strategy::any_json()) {
            let pretty = serde_json::to_string_pretty(&value).unwrap();
            let compacted = compact(&pretty).unwrap();
            prop_assert!(!compacted.contains(['\n', '\r']));
            // Exactly the compact form serde_json writes: nothing but the
            // whitespace between tokens went.
            prop_assert_eq!(compacted, serde_json::to_string(&value).unwrap());
        }
    }
}

/// Any JSON value, for property tests.
#[cfg(test)]
pub(crate) mod strategy {
    use proptest::prelude::*;
    use serde_json::Value;

    /// Any JSON value up to a few levels deep: every scalar (integers beyond
    /// 64 bits are written as floats by serde_json), strings with escapes
    /// and non-ASCII text, arrays and objects.
    pub(crate) fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "\\PC*|[\\x00-\\x7f]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map("\\PC{0,6}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
