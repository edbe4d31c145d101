//! Property tests of the encoder and the parser together: any event
//! round-trips, any chunking of a stream parses the same, and no input makes
//! the parser panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use proptest::prelude::*;
use push_core::{Cursor, Epoch, Message, Position, Timestamp, wire::json};
use push_sse::{Event, EventBuilder, Format, Parser};

/// What a parser makes of text data: every line end becomes LF.
fn normalized(data: &str) -> String {
    data.replace("\r\n", "\n").replace('\r', "\n")
}

fn parse_all(stream: &[u8]) -> Vec<Event> {
    let mut parser = Parser::new();
    parser.feed(stream).unwrap();
    std::iter::from_fn(|| parser.next_event()).collect()
}

fn parse_in_pieces(stream: &[u8], cuts: &[usize]) -> (Vec<Event>, Parser) {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    cuts.sort_unstable();
    let mut parser = Parser::new();
    let mut events = Vec::new();
    let mut from = 0;
    for cut in cuts.into_iter().chain([stream.len()]) {
        parser.feed(&stream[from..cut]).unwrap();
        events.extend(std::iter::from_fn(|| parser.next_event()));
        from = cut;
    }
    (events, parser)
}

/// A line end of any kind.
fn line_end() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("\n"), Just("\r"), Just("\r\n")]
}

/// Text with any mix of line ends.
fn text() -> impl Strategy<Value = String> {
    proptest::collection::vec(("\\PC{0,6}", line_end()), 0..5).prop_map(|parts| {
        parts
            .into_iter()
            .enumerate()
            .map(|(i, (s, end))| if i == 0 { s } else { format!("{end}{s}") })
            .collect()
    })
}

/// One line of text for `id` and `event`: anything but CR, LF (and NUL).
fn one_line() -> impl Strategy<Value = String> {
    "[^\r\n\u{0}]{1,12}"
}

#[derive(Clone, Debug)]
struct Spec {
    id: Option<String>,
    event: Option<String>,
    data: String,
    comment: Option<String>,
    retry: Option<u64>,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        proptest::option::of(one_line()),
        proptest::option::of(one_line()),
        text(),
        proptest::option::of(text()),
        proptest::option::of(0..100_000u64),
    )
        .prop_map(|(id, event, data, comment, retry)| Spec {
            id,
            event,
            data,
            comment,
            retry,
        })
}

fn encode(spec: &Spec) -> Bytes {
    let mut builder = EventBuilder::new();
    if let Some(comment) = &spec.comment {
        builder = builder.comment(comment);
    }
    if let Some(id) = &spec.id {
        builder = builder.id(id).unwrap();
    }
    if let Some(event) = &spec.event {
        builder = builder.event(event).unwrap();
    }
    if let Some(retry) = spec.retry {
        builder = builder.retry(std::time::Duration::from_millis(retry));
    }
    builder.data(&spec.data).finish()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Encoded, then parsed: the same id, type and data (line ends as LF).
    #[test]
    fn any_event_round_trips(specs in proptest::collection::vec(spec(), 1..6), bom in any::<bool>()) {
        let mut stream = if bom { b"\xEF\xBB\xBF".to_vec() } else { Vec::new() };
        for spec in &specs {
            stream.extend_from_slice(&encode(spec));
        }
        let events = parse_all(&stream);
        prop_assert_eq!(events.len(), specs.len());
        let mut last_id = String::new();
        for (event, spec) in events.iter().zip(&specs) {
            if let Some(id) = &spec.id {
                last_id.clone_from(id);
            }
            prop_assert_eq!(&event.id, &last_id);
            prop_assert_eq!(event.event.as_str(), spec.event.as_deref().unwrap_or("message"));
            prop_assert_eq!(&event.data, &normalized(&spec.data));
        }
    }

    /// Cutting a stream of events anywhere (inside a CRLF, inside a UTF-8
    /// character, inside the BOM) changes nothing.
    #[test]
    fn any_chunking_parses_the_same(
        specs in proptest::collection::vec(spec(), 1..6),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
        crlf in any::<bool>(),
    ) {
        let mut stream = b"\xEF\xBB\xBF".to_vec();
        for spec in &specs {
            stream.extend_from_slice(&encode(spec));
        }
        if crlf {
            // The same stream with CRLF line ends, as other servers write it.
            stream = String::from_utf8(stream).unwrap().replace('\n', "\r\n").into_bytes();
        }
        let whole = parse_all(&stream);
        prop_assert_eq!(whole.len(), specs.len());
        let (pieces, _) = parse_in_pieces(&stream, &cuts);
        prop_assert_eq!(pieces, whole);
    }

    /// Arbitrary bytes never panic, and chunking them changes nothing either.
    #[test]
    fn arbitrary_bytes_never_panic(
        stream in proptest::collection::vec(prop_oneof![
            4 => any::<u8>(),
            2 => Just(b'\n'),
            2 => Just(b'\r'),
            2 => Just(b':'),
        ], 0..300),
        cuts in proptest::collection::vec(any::<usize>(), 0..10),
    ) {
        let mut parser = Parser::new();
        parser.feed(&stream).unwrap();
        let whole: Vec<_> = std::iter::from_fn(|| parser.next_event()).collect();
        let (pieces, split) = parse_in_pieces(&stream, &cuts);
        prop_assert_eq!(&pieces, &whole);
        prop_assert_eq!(split.last_event_id(), parser.last_event_id());
        prop_assert_eq!(split.retry(), parser.retry());
        for event in whole {
            prop_assert!(!event.id.contains('\0'));
        }
    }

    /// A push message as an event, in both formats: the data comes back
    /// exactly (binary as base64 in the plain format; the JSON format keeps
    /// even CRs).
    #[test]
    fn messages_round_trip(data in proptest::collection::vec(any::<u8>(), 0..64), text in text(), minor in 0..3u64) {
        let cursor = Cursor::new(Epoch::new(0x5eed), Position::new(42, minor));
        for data in [Bytes::from(data.clone()), Bytes::from(text.clone())] {
            let message = Arc::new(Message::new(
                "c".parse().unwrap(), cursor, None, data.clone(), Timestamp::from_unix_millis(7),
            ));
            let plain = parse_all(&push_sse::message_event(&message, Format::Plain));
            prop_assert_eq!(plain.len(), 1);
            prop_assert_eq!(&plain[0].id, &cursor.to_string());
            match std::str::from_utf8(&data) {
                Ok(text) => {
                    prop_assert_eq!(plain[0].encoding.as_deref(), None);
                    prop_assert_eq!(&plain[0].data, &normalized(text));
                }
                Err(_) => {
                    prop_assert_eq!(plain[0].encoding.as_deref(), Some("base64"));
                    let decoded = base64::engine::general_purpose::STANDARD.decode(&plain[0].data).unwrap();
                    prop_assert_eq!(&decoded[..], &data[..]);
                }
            }
            let in_json = parse_all(&push_sse::message_event(&message, Format::Json));
            prop_assert_eq!(in_json.len(), 1);
            prop_assert_eq!(&in_json[0].event, "message");
            let back = json::parse_message(in_json[0].data.as_bytes()).unwrap();
            prop_assert_eq!(back.data(), &data);
            prop_assert_eq!(back.cursor(), cursor);
        }
    }
}
