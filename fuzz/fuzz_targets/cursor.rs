//! The cursor parser (push-core's `Cursor` and `Start`) and the entity tags
//! that carry cursors (push-http's `cursor_from_etag`, `If-None-Match`).
//!
//! Checks: a text is accepted exactly when it is the canonical form of the
//! cursor it names (it writes back to itself, on the stack and through
//! `Display`); a start written as a `since` reads back the same; an entity
//! tag names the cursor it carries; cursors of one epoch are ordered by
//! position, of two epochs not at all.
#![no_main]

use libfuzzer_sys::fuzz_target;
use push_core::{Cursor, MAX_CURSOR_LEN, Start};
use push_http::{EntityTag, cursor_from_etag, if_none_match_names, is_quoted};

fn check_cursor(text: &str) -> Option<Cursor> {
    let cursor = text.parse::<Cursor>().ok()?;
    assert!(text.len() <= MAX_CURSOR_LEN);
    assert_eq!(cursor.to_string(), text, "only the canonical form parses");
    assert_eq!(cursor.text().as_str(), text);
    let tag = EntityTag::of(cursor);
    assert_eq!(cursor_from_etag(tag.as_str()), Some(cursor));
    assert_eq!(
        cursor_from_etag(&format!("W/{}", tag.as_str())),
        Some(cursor)
    );
    assert!(is_quoted(tag.as_bytes(), text));
    assert!(if_none_match_names(tag.as_str(), cursor));
    Some(cursor)
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let cursor = check_cursor(&text);
    match Start::from_since(Some(&text)) {
        Ok(start) => {
            assert_eq!(
                Start::from_since(start.to_since().as_deref()).ok(),
                Some(start)
            );
            match start {
                Start::After(c) => assert_eq!(Some(c), cursor),
                Start::Earliest => assert_eq!(text, "earliest"),
                other => panic!("a since gave {other:?}"),
            }
        }
        Err(_) => assert!(cursor.is_none()),
    }
    // Entity tags: what the text names, if anything, is a cursor that
    // parses on its own, and the header naming it matches it.
    if let Some(c) = cursor_from_etag(&text) {
        assert!(if_none_match_names(&text, c));
        assert!(check_cursor(&c.to_string()).is_some());
    }
    for tag in text.split(',') {
        if let Some(c) = cursor_from_etag(tag) {
            assert!(if_none_match_names(&text, c));
        }
    }
    // Two cursors: ordered by position within an epoch only.
    if let Some((a, b)) = text.split_once(' ')
        && let (Ok(a), Ok(b)) = (a.parse::<Cursor>(), b.parse::<Cursor>())
    {
        let order = a.partial_cmp(&b);
        if a.epoch() == b.epoch() {
            assert_eq!(order, Some(a.position().cmp(&b.position())));
            assert_eq!(order == Some(std::cmp::Ordering::Equal), a == b);
        } else {
            assert_eq!(order, None);
            assert_ne!(a, b);
        }
    }
});
