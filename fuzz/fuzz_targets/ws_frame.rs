//! The WebSocket client's frame parser (push-ws's `WsSubscriber` and
//! `WsSession`): message envelopes, `subscribed`, `ack`, `error`, `gap` and
//! `reset` frames from a server that may be hostile.
//!
//! Checks: a delivered message names the channel it is delivered for, and
//! its envelope, written again by the server's encoder, reads back the
//! same; a signal, written again as the server writes it, reads back the
//! same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use push_core::Item;
use push_core::wire::json;
use push_fuzz::assert_same_item;
use push_ws::__fuzz::{Frame, parse_frame, signal, subscribed};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_frame(text) {
        Ok(Frame::Delivery(channel, item)) => {
            let again = match &item {
                Item::Message(message) => {
                    assert_eq!(message.channel(), &channel);
                    let envelope = json::envelope(message);
                    String::from_utf8(envelope.to_vec()).expect("UTF-8")
                }
                Item::Signal(s) => String::from_utf8(signal(&channel, s).to_vec()).expect("UTF-8"),
            };
            match parse_frame(&again) {
                Ok(Frame::Delivery(c, got)) => {
                    assert_eq!(c, channel);
                    assert_same_item(&item, &got);
                }
                other => panic!("{again} read as {other:?}"),
            }
        }
        Ok(Frame::Subscribed(channel, head)) => {
            let again = String::from_utf8(subscribed(&channel, head).to_vec()).expect("UTF-8");
            assert!(
                matches!(parse_frame(&again), Ok(Frame::Subscribed(c, h)) if c == channel && h == head)
            );
        }
        Ok(Frame::Answer(..)) | Err(_) => {}
    }
});
