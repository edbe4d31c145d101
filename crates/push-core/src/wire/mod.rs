//! The wire contract's shared pieces, as plain functions over bytes and
//! strings: the JSON envelopes and batches every JSON transport sends and its
//! clients read, and the request parsing every transport does. No HTTP types:
//! each transport's hyper glue calls these.
//!
//! docs/protocol.md is the normative statement of the formats written here.

pub mod json;
mod request;

pub use self::request::{ChannelLocator, DEFAULT_MAX_QUERY_LEN, LocatorFn, MAX_PARAMETERS, Query};

/// Response header carrying the polling interval a server advises, in
/// milliseconds.
pub const POLL_INTERVAL_HEADER: &str = "push-poll-interval";

/// `Cache-Control` for answers that must never be served stale: caches may
/// store them but must ask again every time (the cheap `304` path).
pub const CACHE_REVALIDATE: &str = "no-cache";

/// `Cache-Control` for answers that must not be stored at all.
pub const CACHE_NEVER: &str = "no-store";

/// Reads a cursor from an `ETag` or `If-None-Match` entity tag (`"…"` or
/// `W/"…"`); `None` when it is not one.
pub fn cursor_from_etag(tag: &str) -> Option<crate::Cursor> {
    let tag = tag.trim();
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    tag.strip_prefix('"')?.strip_suffix('"')?.parse().ok()
}

/// A request target: `path`, its existing `query`, and `params` appended, as
/// the clients send it. Cursors, `earliest` and numbers need no escaping:
/// their alphabets are URL-safe.
///
/// ```
/// use push_core::wire::path_with_params;
///
/// assert_eq!(path_with_params("/poll/a", Some("token=t"), &[("since", "1.2")]), "/poll/a?token=t&since=1.2");
/// assert_eq!(path_with_params("/poll/a", None, &[]), "/poll/a");
/// ```
pub fn path_with_params(path: &str, query: Option<&str>, params: &[(&str, &str)]) -> String {
    let mut target = path.to_owned();
    let mut separator = '?';
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        target.push('?');
        target.push_str(query);
        separator = '&';
    }
    for (name, value) in params {
        target.push(separator);
        target.push_str(name);
        target.push('=');
        target.push_str(value);
        separator = '&';
    }
    target
}

/// `true` when `tag` is exactly `text` in double quotes: the cheap test of
/// an `If-None-Match` against the cursor a client polled from.
pub fn is_quoted(tag: &[u8], text: &str) -> bool {
    tag.len() == text.len() + 2
        && tag.first() == Some(&b'"')
        && tag.last() == Some(&b'"')
        && &tag[1..tag.len() - 1] == text.as_bytes()
}

/// `true` when an `If-None-Match` header value names `cursor` (or is `*`).
pub fn if_none_match_names(header: &str, cursor: crate::Cursor) -> bool {
    header
        .split(',')
        .any(|tag| tag.trim() == "*" || cursor_from_etag(tag) == Some(cursor))
}

/// The `ETag` for a cursor: the cursor, quoted.
pub fn etag(cursor: crate::Cursor) -> String {
    EntityTag::of(cursor).as_str().to_owned()
}

/// A cursor's entity tag (`"…"`), on the stack: built and compared with
/// `If-None-Match` on every poll without an allocation.
#[derive(Clone, Copy, Debug)]
pub struct EntityTag {
    bytes: [u8; crate::MAX_CURSOR_LEN + 2],
    len: usize,
}

impl EntityTag {
    /// The tag of `cursor`.
    pub fn of(cursor: crate::Cursor) -> Self {
        let text = cursor.text();
        let text = text.as_str().as_bytes();
        let mut bytes = [0; crate::MAX_CURSOR_LEN + 2];
        bytes[0] = b'"';
        bytes[1..=text.len()].copy_from_slice(text);
        bytes[text.len() + 1] = b'"';
        EntityTag {
            bytes,
            len: text.len() + 2,
        }
    }

    /// The tag, quotes included.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// The tag as a string.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags() {
        let c: crate::Cursor = "ab.12".parse().unwrap();
        assert_eq!(etag(c), "\"ab.12\"");
        assert_eq!(cursor_from_etag(&etag(c)), Some(c));
        assert_eq!(cursor_from_etag("W/\"ab.12\""), Some(c));
        assert_eq!(cursor_from_etag("ab.12"), None);
        assert!(if_none_match_names("\"x\", W/\"ab.12\"", c));
        assert!(if_none_match_names("*", c));
        assert!(!if_none_match_names("\"ab.13\"", c));
        assert!(!if_none_match_names("", c));
    }
}
