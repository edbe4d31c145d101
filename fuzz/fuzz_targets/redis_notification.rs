//! The Redis hub's Pub/Sub notification reader (push-redis's
//! `notification`, then `message`): `epoch \n number \n time \n event \n
//! data`, after `j \n` for JSON data, `epoch \n head`, or an ephemeral
//! message, `e \n time \n event \n data`.
//!
//! Checks: a message notification written again in the scripts' format
//! decodes to the same fields; the message made of it has them (JSON data
//! compacted), and its envelope reads back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use push_core::wire::json;
use push_core::{ChannelName, ContentKind, Epoch};
use push_fuzz::assert_same_message;
use push_redis::__fuzz::{Notification, message, notification};

fuzz_target!(|data: &[u8]| {
    let decoded = notification(data);
    let channel: ChannelName = "news".parse().expect("a channel name");
    if let Notification::Ephemeral {
        time,
        event,
        data: payload,
        kind,
    } = decoded
    {
        // As push-redis publishes it.
        let mut written = b"e\n".to_vec();
        if kind == ContentKind::Json {
            written.extend_from_slice(b"j\n");
        }
        written.extend_from_slice(format!("{time}\n").as_bytes());
        written.extend_from_slice(event);
        written.push(b'\n');
        written.extend_from_slice(payload);
        assert_eq!(notification(&written), decoded);
        let data = bytes::Bytes::copy_from_slice(payload);
        if let Ok(made) = message(&channel, Epoch::new(0), 0, event, time, (data, kind)) {
            let made = made.ephemeral();
            let again = json::parse_message(&json::envelope(&made)).expect("reads back");
            assert_same_message(&made, &again);
        }
        return;
    }
    let Notification::Message {
        epoch,
        number,
        time,
        event,
        data: payload,
        kind,
    } = decoded
    else {
        return;
    };
    // As the scripts write it.
    let mut written = Vec::new();
    if kind == ContentKind::Json {
        written.extend_from_slice(b"j\n");
    }
    written.extend_from_slice(format!("{}\n{number}\n{time}\n", epoch.get()).as_bytes());
    written.extend_from_slice(event);
    written.push(b'\n');
    written.extend_from_slice(payload);
    assert_eq!(notification(&written), decoded);
    let Ok(made) = message(
        &channel,
        epoch,
        number,
        event,
        time,
        (bytes::Bytes::copy_from_slice(payload), kind),
    ) else {
        return;
    };
    assert_eq!(made.cursor().epoch(), epoch);
    assert_eq!(made.cursor().position().major(), number);
    assert_eq!(made.published_at().as_unix_millis(), time);
    assert_eq!(
        made.event().map_or(&b""[..], |e| e.as_str().as_bytes()),
        event
    );
    assert_eq!(made.kind(), kind);
    if kind == ContentKind::Bytes {
        assert_eq!(&made.data()[..], payload);
    }
    let again = json::parse_message(&json::envelope(&made)).expect("an envelope reads back");
    assert_same_message(&made, &again);
});
