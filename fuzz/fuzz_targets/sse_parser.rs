//! The SSE parser (push-sse's `Parser`), as the `EventSource` client feeds
//! it from the network, and what the client makes of each event.
//!
//! Checks: the same events whatever pieces the stream arrives in; each
//! event written again by the encoder parses back to itself; a message or
//! signal the client reads, encoded by the server's encoder, reads back the
//! same; a small limit is an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use push_core::{Item, Message};
use push_fuzz::{assert_same_item, chunks};
use push_sse::{Event, EventBuilder, Format, Parser, message_event, signal_event};

/// Everything the parser made of the stream: its events, the error that
/// stopped it if any, then its last event ID and advised retry.
fn parse(
    pieces: &[&[u8]],
    limit: usize,
) -> (Vec<Event>, bool, String, Option<std::time::Duration>) {
    let mut parser = Parser::with_limit(limit);
    let mut events = Vec::new();
    let mut failed = false;
    for piece in pieces {
        let fed = parser.feed(piece);
        events.extend(std::iter::from_fn(|| parser.next_event()));
        if fed.is_err() {
            failed = true;
            break;
        }
    }
    (
        events,
        failed,
        parser.last_event_id().to_owned(),
        parser.retry(),
    )
}

fn parse_one(bytes: &[u8]) -> Vec<Event> {
    let mut parser = Parser::new();
    parser
        .feed(bytes)
        .expect("an encoded event is within the limit");
    std::iter::from_fn(|| parser.next_event()).collect()
}

/// The event the encoder writes for `event` parses back to it.
fn encode_again(event: &Event) {
    let mut builder = EventBuilder::new()
        .id(&event.id)
        .expect("a parsed id holds no line break or NUL")
        .event(&event.event)
        .expect("a parsed event type holds no line break");
    if let Some(encoding) = &event.encoding {
        builder = builder
            .encoding(encoding)
            .expect("a parsed field is one line");
    }
    let bytes = builder.data(&event.data).finish();
    assert_eq!(parse_one(&bytes), std::slice::from_ref(event), "{bytes:?}");
}

/// A message the client read, encoded by the server, reads back the same.
fn serve_again(item: &Item) {
    let bytes = match item {
        Item::Message(message) => {
            check_plain(message);
            message_event(message, Format::Json)
        }
        Item::Signal(signal) => signal_event(signal),
    };
    let events = parse_one(&bytes);
    assert_eq!(events.len(), 1, "{bytes:?}");
    // An ephemeral message has no `id:` (the last event ID stays).
    let ephemeral = matches!(item, Item::Message(m) if m.is_ephemeral());
    let id = if ephemeral {
        String::new()
    } else {
        item.cursor().to_string()
    };
    assert_eq!(events[0].id, id);
    let again = push_sse::__fuzz::item_of(&events[0]).expect("the server's event reads back");
    assert_same_item(item, &again);
}

/// The plain format carries the data itself: as text (line ends become LF)
/// or as base64.
fn check_plain(message: &Message) {
    let events = parse_one(&message_event(message, Format::Plain));
    assert_eq!(events.len(), 1);
    let event = &events[0];
    let id = if message.is_ephemeral() {
        String::new()
    } else {
        message.cursor().to_string()
    };
    assert_eq!(event.id, id);
    assert_eq!(
        event.event,
        message.event().map_or("message", |e| e.as_str())
    );
    match std::str::from_utf8(message.data()) {
        Ok(text) => {
            assert_eq!(event.encoding, None);
            assert_eq!(event.data, text.replace("\r\n", "\n").replace('\r', "\n"));
        }
        Err(_) => {
            use base64::Engine as _;
            assert_eq!(event.encoding.as_deref(), Some("base64"));
            let data = base64::engine::general_purpose::STANDARD
                .decode(&event.data)
                .expect("base64");
            assert_eq!(&data[..], &message.data()[..]);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let whole = parse(&[data], Parser::DEFAULT_LIMIT);
    let pieces = chunks(data);
    assert_eq!(parse(&pieces, Parser::DEFAULT_LIMIT), whole, "{pieces:?}");
    // A small limit: the same events up to an error, never a panic.
    let (small, failed, ..) = parse(&pieces, 64);
    assert!(whole.0.starts_with(&small));
    assert!(failed || small == whole.0);
    for event in &whole.0 {
        assert!(!event.data.contains('\r'), "lines are split at CR");
        encode_again(event);
        if let Ok(item) = push_sse::__fuzz::item_of(event) {
            serve_again(&item);
        }
    }
});
