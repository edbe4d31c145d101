//! Header names and values the transports and their clients share, and the
//! entity tags (ETags) that carry cursors.

use http::HeaderName;
use push_core::{Cursor, MAX_CURSOR_LEN};

/// Response header carrying the polling interval a server advises, in
/// milliseconds.
pub const POLL_INTERVAL: HeaderName = HeaderName::from_static("push-poll-interval");

/// `Cache-Control` for answers that must never be served stale: caches may
/// store them but must ask again every time (the cheap `304` path).
pub const CACHE_REVALIDATE: &str = "no-cache";

/// `Cache-Control` for answers that must not be stored at all.
pub const CACHE_NEVER: &str = "no-store";

/// Reads a cursor from an `ETag` or `If-None-Match` entity tag (`"…"` or
/// `W/"…"`); `None` when it is not one.
pub fn cursor_from_etag(tag: &str) -> Option<Cursor> {
    let tag = tag.trim();
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    tag.strip_prefix('"')?.strip_suffix('"')?.parse().ok()
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
pub fn if_none_match_names(header: &str, cursor: Cursor) -> bool {
    header
        .split(',')
        .any(|tag| tag.trim() == "*" || cursor_from_etag(tag) == Some(cursor))
}

/// A cursor's entity tag (`"…"`), on the stack: built and compared with
/// `If-None-Match` on every poll without an allocation.
///
/// ```
/// use push_http::EntityTag;
///
/// let cursor = "ab.12".parse()?;
/// assert_eq!(EntityTag::of(cursor).as_str(), "\"ab.12\"");
/// assert_eq!(push_http::cursor_from_etag("W/\"ab.12\""), Some(cursor));
/// # Ok::<(), push_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct EntityTag {
    bytes: [u8; MAX_CURSOR_LEN + 2],
    len: usize,
}

impl EntityTag {
    /// The tag of `cursor`.
    pub fn of(cursor: Cursor) -> Self {
        let text = cursor.text();
        let text = text.as_str().as_bytes();
        let mut bytes = [0; MAX_CURSOR_LEN + 2];
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

    /// The tag as a header value.
    pub fn to_header(&self) -> http::HeaderValue {
        http::HeaderValue::from_bytes(self.as_bytes())
            .unwrap_or_else(|_| http::HeaderValue::from_static(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags() {
        let c: Cursor = "ab.12".parse().unwrap();
        let tag = EntityTag::of(c);
        assert_eq!(tag.as_str(), "\"ab.12\"");
        assert_eq!(tag.to_header(), "\"ab.12\"");
        assert_eq!(cursor_from_etag(tag.as_str()), Some(c));
        assert_eq!(cursor_from_etag("W/\"ab.12\""), Some(c));
        assert_eq!(cursor_from_etag("ab.12"), None);
        assert!(if_none_match_names("\"x\", W/\"ab.12\"", c));
        assert!(if_none_match_names("*", c));
        assert!(!if_none_match_names("\"ab.13\"", c));
        assert!(!if_none_match_names("", c));
        assert!(is_quoted(b"\"ab.12\"", "ab.12"));
        assert!(!is_quoted(b"ab.12", "ab.12"));
    }
}
