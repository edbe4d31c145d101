//! The memory hub's channel table under squatting: a client that publishes to,
//! subscribes to or reads a flood of new names cannot make the hub refuse
//! channels to others, and whoever loses a channel to eviction is told.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may fail loudly

use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use push_core::{
    Batch, ChannelName, Cursor, Error, Hub, Item, ManualClock, MemoryHub, MemoryHubConfig,
    MemorySubscription, Publication, Signal, Start, Timestamp,
};

const T0: Timestamp = Timestamp::from_unix_millis(1_700_000_000_000);

fn name(s: &str) -> ChannelName {
    ChannelName::new(s).unwrap()
}

/// A hub of 100 channels (so at most 50 unpublished, by default).
fn hub() -> (MemoryHub, ManualClock) {
    let clock = ManualClock::new(T0);
    let config = MemoryHubConfig::default().with_max_channels(100);
    (
        MemoryHub::with_config_and_clock(config, clock.clone()).unwrap(),
        clock,
    )
}

fn now<T>(future: impl Future<Output = T>) -> T {
    future.now_or_never().expect("the memory hub never waits")
}

fn publish(hub: &MemoryHub, channel: &str, data: &str) -> Result<Cursor, Error> {
    now(hub.publish(&name(channel), Publication::new(data.to_owned())))
}

fn subscribe(hub: &MemoryHub, channel: &str) -> Result<MemorySubscription, Error> {
    now(hub.subscribe(&name(channel), Start::Live))
}

fn read(hub: &MemoryHub, channel: &str, start: Start) -> Result<Batch, Error> {
    now(hub.read(&name(channel), start, 100))
}

/// Squatting by publishing: 100 one-message channels fill the table, and
/// their messages are retained for an hour. New channels are still accepted.
#[test]
fn publishes_to_new_channels_evict_the_least_recent_unsubscribed_even_with_history() {
    let (hub, clock) = hub();
    let squatted: Vec<Cursor> = (0..100)
        .map(|i| {
            clock.advance(Duration::from_millis(1));
            publish(&hub, &format!("squat{i}"), "x").unwrap()
        })
        .collect();
    assert_eq!(hub.channel_count(), 100);

    publish(&hub, "fresh", "hello").unwrap();
    // One pass made room for a tenth of the table: the eleven least recent went.
    assert_eq!(hub.channel_count(), 90);
    assert_eq!(hub.stats().evicted_channels, 11);
    for i in 0..11 {
        assert!(hub.channel_stats(&name(&format!("squat{i}"))).is_none());
    }
    assert!(hub.channel_stats(&name("squat11")).is_some());

    // A client resuming in an evicted channel is told: a reset, never silence.
    let batch = read(&hub, "squat0", Start::After(squatted[0])).unwrap();
    match batch.signal {
        Some(Signal::Reset(reset)) => assert_eq!(reset.since, squatted[0]),
        other => panic!("expected a reset, got {other:?}"),
    }
    assert_ne!(batch.cursor.epoch(), squatted[0].epoch());

    // The flood can go on: the table keeps accepting new channels.
    for i in 0..1_000 {
        publish(&hub, &format!("more{i}"), "x").unwrap();
        assert!(hub.channel_count() <= 100);
    }
    assert!(hub.channel_stats(&name("more999")).is_some());
}

/// Channels with subscribers are never evicted; when every channel has one, a
/// new channel is refused (and existing ones keep working).
#[test]
fn subscribed_channels_survive_a_flood_of_publishes() {
    let (hub, clock) = hub();
    let mut kept: Vec<MemorySubscription> = (0..10)
        .map(|i| subscribe(&hub, &format!("kept{i}")).unwrap())
        .collect();
    for i in 0..500 {
        clock.advance(Duration::from_millis(1));
        publish(&hub, &format!("flood{i}"), "x").unwrap();
    }
    for (i, subscription) in kept.iter_mut().enumerate() {
        let cursor = publish(&hub, &format!("kept{i}"), "still here").unwrap();
        match now(subscription.next()) {
            Some(Item::Message(m)) => assert_eq!(m.cursor(), cursor),
            other => panic!("{other:?}"),
        }
    }
}

/// Squatting by subscribing: subscriptions to new names take at most the
/// unpublished quota (half the table), so publishers always find room.
#[test]
fn subscriptions_alone_fill_only_the_unpublished_quota() {
    let (hub, _clock) = hub();
    let mut squatters: Vec<MemorySubscription> = (0..50)
        .map(|i| subscribe(&hub, &format!("sub{i}")).unwrap())
        .collect();
    let stats = hub.stats();
    assert_eq!((stats.channels, stats.unpublished_channels), (50, 50));

    // Beyond the quota, a subscribe or read that would create a channel is refused...
    let refused = subscribe(&hub, "sub50").unwrap_err();
    assert!(
        matches!(refused, Error::TooManyChannels { limit: 50 }),
        "{refused}"
    );
    assert!(matches!(
        read(&hub, "poll-new", Start::Live),
        Err(Error::TooManyChannels { limit: 50 })
    ));
    // ...while existing channels work, and publishes still create channels.
    read(&hub, "sub0", Start::Live).unwrap();
    for i in 0..60 {
        publish(&hub, &format!("pub{i}"), "x").unwrap();
    }
    assert!(hub.channel_count() <= 100);
    // Subscribing to a published channel takes no quota.
    let _watcher = subscribe(&hub, "pub59").unwrap();

    // A first publish moves a channel out of the unpublished class: room for one more.
    publish(&hub, "sub0", "first").unwrap();
    assert_eq!(hub.stats().unpublished_channels, 49);
    let mut late = subscribe(&hub, "late").unwrap();
    let cursor = publish(&hub, "late", "welcome").unwrap();
    assert!(matches!(now(late.next()), Some(Item::Message(m)) if m.cursor() == cursor));
    assert!(matches!(now(squatters[0].next()), Some(Item::Message(_))));
}

/// Reads of ever new names (a poller walking a dictionary) recycle the
/// unpublished quota among themselves; channels with history are untouched.
#[test]
fn reads_of_new_names_evict_each_other_not_published_channels() {
    let (hub, clock) = hub();
    let published: Vec<Cursor> = (0..40)
        .map(|i| publish(&hub, &format!("pub{i}"), "kept").unwrap())
        .collect();
    for i in 0..1_000 {
        clock.advance(Duration::from_millis(1));
        read(&hub, &format!("probe{i}"), Start::Live).unwrap();
        let stats = hub.stats();
        assert!(stats.unpublished_channels <= 50, "{stats:?}");
    }
    for (i, cursor) in published.iter().enumerate() {
        let batch = read(&hub, &format!("pub{i}"), Start::Earliest).unwrap();
        assert_eq!(batch.messages.len(), 1);
        assert_eq!(batch.messages[0].cursor(), *cursor);
    }
    // The most recent probes are still there, the oldest went first.
    assert!(hub.channel_stats(&name("probe999")).is_some());
    assert!(hub.channel_stats(&name("probe0")).is_none());
}

/// The quota evicts unpublished channels nobody watches, least recent first,
/// before refusing; a futile pass is not repeated within the second.
#[test]
fn a_full_quota_evicts_unwatched_unpublished_channels_first() {
    let (hub, clock) = hub();
    let mut watched: Vec<MemorySubscription> = (0..40)
        .map(|i| subscribe(&hub, &format!("watched{i}")).unwrap())
        .collect();
    for i in 0..10 {
        clock.advance(Duration::from_millis(1));
        read(&hub, &format!("unwatched{i}"), Start::Live).unwrap();
    }
    // Full: one pass makes room for a tenth of the quota, least recent first.
    watched.push(subscribe(&hub, "new").unwrap());
    for i in 0..10 {
        let present = hub.channel_stats(&name(&format!("unwatched{i}"))).is_some();
        assert_eq!(present, i >= 6, "unwatched{i}");
    }
    assert_eq!(hub.stats().unpublished_channels, 45);
    // Every unpublished channel watched: refused.
    watched.extend((0..5).map(|i| subscribe(&hub, &format!("extra{i}")).unwrap()));
    let last: Vec<MemorySubscription> = (6..10)
        .map(|i| subscribe(&hub, &format!("unwatched{i}")).unwrap())
        .collect();
    assert!(matches!(
        subscribe(&hub, "one-more"),
        Err(Error::TooManyChannels { limit: 50 })
    ));
    drop(last);
    assert!(
        subscribe(&hub, "one-more").is_err(),
        "retried within the second"
    );
    clock.advance(Duration::from_secs(1));
    subscribe(&hub, "one-more").unwrap();
    // The four dropped ones went (the pass asks for six) and one came.
    assert_eq!(hub.stats().unpublished_channels, 47);
}
