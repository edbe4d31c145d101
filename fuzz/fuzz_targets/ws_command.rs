//! The `push.v1` command parser (push-ws's server side), and the frames the
//! server answers with, as the Rust client reads them.
//!
//! Checks: the `ref` echoed is the client's own JSON text, found in the
//! command; every answer (an ack or an error, with that `ref` spliced in) is
//! valid JSON that the client reads back with the same numeric `ref` and
//! error code; a subscribe written again by the client parses to the same
//! channel and start; a publish is delivered to a subscriber with the same
//! event, data and kind.
#![no_main]

use libfuzzer_sys::fuzz_target;
use push_core::wire::json;
use push_core::{Cursor, Epoch, Item, Message, Position, Timestamp};
use push_fuzz::assert_same_message;
use push_ws::__fuzz::{
    Acked, Command, Frame, ack, error, parse_command, parse_frame, subscribe_command,
};
use serde_json::value::RawValue;

fn cursor() -> Cursor {
    Cursor::new(Epoch::new(0x5eed), Position::new(42, 0))
}

/// The answer is JSON, and the client reads the same `ref` from it.
fn check_answer(answer: &[u8], reference: Option<&str>) -> Option<Frame> {
    let text = std::str::from_utf8(answer).expect("answers are UTF-8");
    serde_json::from_str::<&RawValue>(text).expect("every answer is JSON");
    // The client sends numeric refs only: it reads those back.
    let numeric = reference.map(|r| r.parse::<u64>());
    if matches!(numeric, Some(Err(_))) {
        return None;
    }
    let frame = parse_frame(text).expect("the client reads every answer");
    let Frame::Answer(got, _) = &frame else {
        panic!("an answer read as {frame:?}");
    };
    assert_eq!(*got, numeric.map(Result::unwrap));
    Some(frame)
}

fuzz_target!(|data: &[u8]| {
    // WebSocket text frames are UTF-8 (tungstenite checks it first).
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (reference, command) = parse_command(text);
    if let Some(reference) = reference {
        assert!(text.contains(reference), "the ref is the client's own text");
        serde_json::from_str::<&RawValue>(reference).expect("a ref is JSON");
    }
    let command = match command {
        Ok(command) => command,
        Err(refused) => {
            let answer = error(reference, &refused);
            if let Some(Frame::Answer(_, Err(err))) = check_answer(&answer, reference) {
                let push_http::ClientError::Status { code, .. } = err else {
                    panic!("an error frame read as {err:?}");
                };
                assert!(code.is_some_and(|code| !code.is_empty()), "{answer:?}");
            }
            return;
        }
    };
    let acked = match &command {
        Command::Publish { publication, .. } if publication.is_ephemeral() => Acked::Unstored,
        Command::Publish { .. } => Acked::Id(cursor()),
        Command::Subscribe { .. } => Acked::Cursor(cursor()),
        Command::Unsubscribe { .. } => Acked::Done,
    };
    if let Some(Frame::Answer(_, answer)) = check_answer(&ack(reference, acked, None), reference) {
        let expected = match acked {
            Acked::Done | Acked::Unstored => None,
            Acked::Cursor(_) | Acked::Id(_) => Some(cursor()),
        };
        assert_eq!(answer.ok(), Some(expected));
    }
    match command {
        Command::Subscribe {
            channel,
            start,
            presence,
        } => {
            let again = subscribe_command(&channel, start, 7, presence);
            let (reference, command) = parse_command(&again);
            assert_eq!(reference, Some("7"));
            match command {
                Ok(Command::Subscribe {
                    channel: c,
                    start: s,
                    presence: p,
                }) => {
                    assert_eq!((c, s, p), (channel, start, presence), "{again}");
                }
                other => panic!("{again} read as {other:?}"),
            }
        }
        Command::Unsubscribe { .. } => {}
        Command::Publish {
            channel,
            publication,
        } => {
            // Delivered: a message of the publication's event, data and kind,
            // as a subscriber's client reads its envelope.
            let kind = publication.kind();
            let ephemeral = publication.is_ephemeral();
            let (event, data) = publication.into_parts();
            let mut message = Message::new(
                channel.clone(),
                cursor(),
                event,
                data,
                Timestamp::from_unix_millis(1),
            )
            .with_kind(kind)
            .expect("a publication's JSON is checked already");
            if ephemeral {
                // Delivered without an id; read back at the zero cursor.
                message = Message::new(
                    channel.clone(),
                    Cursor::new(Epoch::new(0), Position::new(0, 0)),
                    message.event().cloned(),
                    message.data().clone(),
                    message.published_at(),
                )
                .with_kind(kind)
                .expect("checked already")
                .ephemeral();
            }
            let envelope = json::envelope(&message);
            let envelope = std::str::from_utf8(&envelope).expect("envelopes are UTF-8");
            match parse_frame(envelope) {
                Ok(Frame::Delivery(c, Item::Message(got))) => {
                    assert_eq!(c, channel);
                    assert_same_message(&got, &message);
                }
                other => panic!("{envelope} read as {other:?}"),
            }
        }
    }
});
