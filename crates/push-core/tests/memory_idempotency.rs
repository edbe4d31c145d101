//! Idempotent publishes on the memory hub: a retry with the same key answers
//! the first cursor and stores nothing; the same key with other content is
//! refused; a key lives as long as its message, counted in the budget.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures_util::{FutureExt as _, StreamExt as _};
use push_core::{
    ChannelName, ContentKind, Cursor, Error, EventName, Hub, IdempotencyKey, Item, MemoryHub,
    MemoryHubConfig, Publication, Start,
};

fn name(s: &str) -> ChannelName {
    s.parse().unwrap()
}

fn key(s: &str) -> IdempotencyKey {
    s.parse().unwrap()
}

fn publish(
    hub: &MemoryHub,
    channel: &ChannelName,
    publication: Publication,
) -> Result<Cursor, Error> {
    hub.publish(channel, publication).now_or_never().unwrap()
}

#[test]
fn a_retry_answers_the_first_cursor_and_stores_nothing() {
    let hub = MemoryHub::new();
    let news = name("news");
    let mut subscription = hub
        .subscribe(&news, Start::Live)
        .now_or_never()
        .unwrap()
        .unwrap();
    let keyed = || Publication::new("hello").with_key(key("k-1"));
    let first = publish(&hub, &news, keyed()).unwrap();
    for _ in 0..3 {
        assert_eq!(publish(&hub, &news, keyed()).unwrap(), first);
    }
    let other = publish(&hub, &news, Publication::new("other")).unwrap();
    assert_eq!(hub.channel_stats(&news).unwrap().messages, 2);
    let mut received = Vec::new();
    while let Some(Some(Item::Message(message))) = subscription.next().now_or_never() {
        received.push(message.cursor());
    }
    assert_eq!(received, [first, other]);
    // The key is the channel's: the same key elsewhere is another message.
    assert_ne!(publish(&hub, &name("sports"), keyed()).unwrap(), first);
}

#[test]
fn the_same_key_with_other_content_is_refused() {
    let hub = MemoryHub::new();
    let news = name("news");
    publish(&hub, &news, Publication::new("a").with_key(key("k"))).unwrap();
    for different in [
        Publication::new("b"),
        Publication::new("a").with_event("price".parse::<EventName>().unwrap()),
    ] {
        let err = publish(&hub, &news, different.with_key(key("k"))).unwrap_err();
        assert!(matches!(err, Error::IdempotencyKeyReused), "{err:?}");
        assert_eq!(err.http_status(), 422);
    }
    assert_eq!(hub.channel_stats(&news).unwrap().messages, 1);
}

/// The same bytes as JSON and as text are two different messages: a key
/// first used for one refuses the other, and a retry of either keeps its kind.
#[test]
fn the_same_bytes_as_json_and_as_text_are_different_messages() {
    let hub = MemoryHub::new();
    let news = name("news");
    let text = || Publication::new("1").with_key(key("t"));
    let json = || Publication::json("1").unwrap().with_key(key("j"));
    let first_text = publish(&hub, &news, text()).unwrap();
    let first_json = publish(&hub, &news, json()).unwrap();
    assert_eq!(publish(&hub, &news, text()).unwrap(), first_text);
    assert_eq!(publish(&hub, &news, json()).unwrap(), first_json);
    for swapped in [
        Publication::json("1").unwrap().with_key(key("t")),
        Publication::new("1").with_key(key("j")),
    ] {
        let err = publish(&hub, &news, swapped).unwrap_err();
        assert!(matches!(err, Error::IdempotencyKeyReused), "{err:?}");
    }
    let batch = hub
        .read(&news, Start::Earliest, 10)
        .now_or_never()
        .unwrap()
        .unwrap();
    let kinds: Vec<_> = batch.messages.iter().map(|m| m.kind()).collect();
    assert_eq!(kinds, [ContentKind::Bytes, ContentKind::Json]);
    assert_eq!(batch.messages[1].json::<u8>().unwrap(), 1);
}

#[test]
fn a_key_is_remembered_as_long_as_its_message_and_counted_meanwhile() {
    let hub = MemoryHub::with_config(MemoryHubConfig::default().with_max_messages(2)).unwrap();
    let news = name("news");
    let unkeyed_cost = {
        publish(&hub, &news, Publication::new("x")).unwrap();
        hub.stats().retained_bytes
    };
    let first = publish(
        &hub,
        &news,
        Publication::new("x").with_key(key("long-key-of-forty-bytes-0123456789abcde")),
    )
    .unwrap();
    assert!(
        hub.stats().retained_bytes > 2 * unkeyed_cost,
        "the key is counted: {} vs {unkeyed_cost}",
        hub.stats().retained_bytes
    );
    // Two more messages push the keyed one out, and its key with it.
    publish(&hub, &news, Publication::new("y")).unwrap();
    publish(&hub, &news, Publication::new("z")).unwrap();
    assert_eq!(hub.stats().retained_bytes, 2 * unkeyed_cost);
    let again = publish(
        &hub,
        &news,
        Publication::new("x").with_key(key("long-key-of-forty-bytes-0123456789abcde")),
    )
    .unwrap();
    assert_ne!(again, first);
}
