//! The Redis hub's stream reader (push-redis's `parse_entries`, and
//! `parse_epoch`): the input is a RESP reply, as an `XRANGE` answer arrives
//! from a server that may be broken or hostile, decoded by redis-rs's own
//! parser first.
//!
//! Checks: one message per entry, each with the channel read, the epoch
//! given and the entry's number as its position, and the `d`, `e`, `t` and
//! `k` fields as its data, event, time and kind; each message's envelope
//! reads back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use push_core::wire::json;
use push_core::{ChannelName, Epoch};
use push_fuzz::assert_same_message;
use push_redis::__fuzz::{parse_entries, parse_epoch};
use redis::Value;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_epoch(text);
    }
    let Ok(reply) = redis::parse_redis_value(data) else {
        return;
    };
    let channel: ChannelName = "news".parse().expect("a channel name");
    let epoch = Epoch::new(0x5eed);
    let Ok(messages) = parse_entries(&channel, epoch, reply.clone()) else {
        return;
    };
    let Value::Array(entries) = reply else {
        panic!("entries read from {reply:?}");
    };
    assert_eq!(messages.len(), entries.len());
    for (message, entry) in messages.iter().zip(&entries) {
        assert_eq!(message.channel(), &channel);
        assert_eq!(message.cursor().epoch(), epoch);
        let Value::Array(parts) = entry else {
            panic!("an entry read from {entry:?}");
        };
        let id = match &parts[0] {
            Value::BulkString(id) => String::from_utf8(id.clone()).expect("an id read is UTF-8"),
            Value::SimpleString(id) => id.clone(),
            other => panic!("an id read from {other:?}"),
        };
        assert_eq!(
            Some(message.cursor().position().major()),
            id.strip_suffix("-0").and_then(|n| n.parse().ok())
        );
        let again = json::parse_message(&json::envelope(message)).expect("an envelope reads back");
        assert_same_message(message, &again);
    }
});
