//! What the fuzz targets share: comparing messages field by field (a
//! `Message`'s `==` compares channel and cursor only) and cutting an input
//! into chunks the same way every run.

#![forbid(unsafe_code)]

use push_core::{Batch, Item, Message};

/// Asserts that two messages are the same in every field a client sees.
pub fn assert_same_message(a: &Message, b: &Message) {
    assert_eq!(a.channel(), b.channel(), "channel");
    assert_eq!(a.cursor(), b.cursor(), "cursor");
    assert_eq!(a.is_ephemeral(), b.is_ephemeral(), "ephemeral");
    assert_eq!(a.event(), b.event(), "event");
    assert_eq!(a.kind(), b.kind(), "kind");
    assert_eq!(a.data(), b.data(), "data");
    assert_eq!(a.published_at(), b.published_at(), "time");
}

/// Asserts that two items are the same, messages field by field.
pub fn assert_same_item(a: &Item, b: &Item) {
    match (a, b) {
        (Item::Message(a), Item::Message(b)) => assert_same_message(a, b),
        _ => assert_eq!(a, b),
    }
}

/// Asserts that two batches are the same, messages field by field.
pub fn assert_same_batch(a: &Batch, b: &Batch) {
    assert_eq!(a.cursor, b.cursor, "cursor");
    assert_eq!(a.more, b.more, "more");
    assert_eq!(a.signal, b.signal, "signal");
    assert_eq!(a.messages.len(), b.messages.len(), "messages");
    for (a, b) in a.messages.iter().zip(&b.messages) {
        assert_same_message(a, b);
    }
}

/// `data` cut into chunks of 1 to 16 bytes, their sizes drawn from a
/// generator seeded by the data itself: the same cuts for the same input,
/// different cuts for different inputs (a stream arrives in any pieces).
pub fn chunks(data: &[u8]) -> Vec<&[u8]> {
    // FNV-1a of the input seeds an xorshift generator.
    let mut state = data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    }) | 1;
    let mut pieces = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let size = usize::try_from(state % 16).unwrap_or(0) + 1;
        let (piece, tail) = rest.split_at(size.min(rest.len()));
        pieces.push(piece);
        rest = tail;
    }
    pieces
}
