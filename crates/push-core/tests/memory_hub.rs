//! The in-memory hub's own promises: history bounds, expiry, freeing idle
//! channels, the channel cap, and no lost message under concurrency.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may fail loudly

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use proptest::prelude::*;
use push_core::{
    ChannelName, Cursor, Error, Hub, Item, ManualClock, MemoryHub, MemoryHubConfig, Publication,
    Signal, Start, Timestamp,
};

const T0: Timestamp = Timestamp::from_unix_millis(1_700_000_000_000);

fn name(s: &str) -> ChannelName {
    ChannelName::new(s).unwrap()
}

fn hub_with(config: MemoryHubConfig) -> (MemoryHub, ManualClock) {
    let clock = ManualClock::new(T0);
    (
        MemoryHub::with_config_and_clock(config, clock.clone()).unwrap(),
        clock,
    )
}

/// The memory hub's futures are ready at once.
fn now<T>(future: impl Future<Output = T>) -> T {
    future.now_or_never().expect("the memory hub never waits")
}

fn publish(hub: &MemoryHub, channel: &ChannelName, data: &str) -> Cursor {
    now(hub.publish(channel, Publication::new(data.to_owned()))).unwrap()
}

fn datas(hub: &MemoryHub, channel: &ChannelName) -> Vec<Bytes> {
    let batch = now(hub.read(channel, Start::Earliest, usize::MAX)).unwrap();
    batch.messages.iter().map(|m| m.data().clone()).collect()
}

proptest! {
    #[test]
    fn history_never_exceeds_its_bounds(
        max_messages in 1usize..10,
        max_bytes in 16usize..80,
        sizes in proptest::collection::vec((0usize..=16, any::<bool>()), 0..60),
    ) {
        let config = MemoryHubConfig::default()
            .with_max_messages(max_messages)
            .with_max_bytes(max_bytes)
            .with_max_message_bytes(16);
        let (hub, _) = hub_with(config);
        let c = name("bounded");
        let mut published: Vec<(Bytes, usize)> = Vec::new();
        for (i, (len, event)) in sizes.into_iter().enumerate() {
            let data = Bytes::from(format!("{i:0>len$}").into_bytes()[..len].to_vec());
            let mut p = Publication::new(data.clone());
            if event && len > 0 {
                p = p.with_event("e".parse().unwrap());
            }
            let size = p.size();
            if size > 16 {
                let refused = matches!(now(hub.publish(&c, p)), Err(Error::MessageTooLarge { .. }));
                prop_assert!(refused);
                continue;
            }
            now(hub.publish(&c, p)).unwrap();
            published.push((data, size));

            let stats = hub.channel_stats(&c).unwrap();
            prop_assert!(stats.messages <= max_messages);
            prop_assert!(stats.bytes <= max_bytes);
            // What is kept is the longest suffix within both bounds.
            let mut keep = 0;
            let mut bytes = 0;
            for (_, size) in published.iter().rev() {
                if keep == max_messages || bytes + size > max_bytes {
                    break;
                }
                keep += 1;
                bytes += size;
            }
            let expected: Vec<Bytes> =
                published[published.len() - keep..].iter().map(|(d, _)| d.clone()).collect();
            prop_assert_eq!(datas(&hub, &c), expected);
            prop_assert_eq!((stats.messages, stats.bytes), (keep, bytes));
        }
    }
}

#[test]
fn messages_expire_by_age() {
    let (hub, clock) = hub_with(MemoryHubConfig::default().with_max_age(Duration::from_secs(10)));
    let c = name("ticker");
    publish(&hub, &c, "old");
    clock.advance(Duration::from_secs(6));
    publish(&hub, &c, "new");
    clock.advance(Duration::from_secs(4));
    assert_eq!(datas(&hub, &c), [Bytes::from("new")]);
    clock.advance(Duration::from_secs(6));
    assert!(datas(&hub, &c).is_empty());
    assert_eq!(hub.channel_stats(&c).unwrap().messages, 0);
}

#[test]
fn refuses_oversized_messages_and_unworkable_configs() {
    let (hub, _) = hub_with(MemoryHubConfig::default().with_max_message_bytes(4));
    let err = now(hub.publish(&name("c"), Publication::new("12345"))).unwrap_err();
    assert!(matches!(err, Error::MessageTooLarge { size: 5, limit: 4 }));
    assert!(err.is_client_error());

    for config in [
        MemoryHubConfig::default().with_max_messages(0),
        MemoryHubConfig::default().with_max_channels(0),
        MemoryHubConfig::default()
            .with_max_bytes(10)
            .with_max_message_bytes(11),
    ] {
        assert!(matches!(
            MemoryHub::with_config(config),
            Err(Error::InvalidConfig { .. })
        ));
    }
}

#[test]
fn fan_out_shares_one_message() {
    let hub = MemoryHub::new();
    let c = name("shared");
    let mut subs: Vec<_> = (0..3)
        .map(|_| now(hub.subscribe(&c, Start::Live)).unwrap())
        .collect();
    publish(&hub, &c, "payload");
    let got: Vec<_> = subs
        .iter_mut()
        .map(|s| match now(s.next()) {
            Some(Item::Message(m)) => m,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(Arc::ptr_eq(&got[0], &got[1]) && Arc::ptr_eq(&got[1], &got[2]));
    assert_eq!(hub.channel_stats(&c).unwrap().subscribers, 3);
    drop(subs);
    assert_eq!(hub.channel_stats(&c).unwrap().subscribers, 0);
}

struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_publish_wakes_each_parked_subscriber_once() {
    let hub = MemoryHub::new();
    let c = name("wake");
    let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let waker = Waker::from(counter.clone());
    let mut cx = Context::from_waker(&waker);
    let mut subs: Vec<_> = (0..100)
        .map(|_| now(hub.subscribe(&c, Start::Live)).unwrap())
        .collect();
    for _ in 0..3 {
        // Spurious polls must not park a subscriber twice.
        for s in &mut subs {
            assert!(s.poll_next_unpin(&mut cx).is_pending());
        }
    }
    let _idle = now(hub.subscribe(&c, Start::Live)).unwrap(); // never polled: never woken
    publish(&hub, &c, "x");
    assert_eq!(counter.0.load(Ordering::SeqCst), 100);
    for s in &mut subs {
        assert!(matches!(
            s.poll_next_unpin(&mut cx),
            Poll::Ready(Some(Item::Message(_)))
        ));
    }
    // Subscribers that went away while parked are not woken.
    for s in &mut subs {
        assert!(s.poll_next_unpin(&mut cx).is_pending());
    }
    subs.truncate(40);
    publish(&hub, &c, "y");
    assert_eq!(counter.0.load(Ordering::SeqCst), 140);
}

#[test]
fn sweep_frees_idle_channels_and_their_cursors_then_reset() {
    let config = MemoryHubConfig::default()
        .with_max_age(Duration::from_secs(60))
        .with_idle_channel_ttl(Duration::from_secs(600));
    let (hub, clock) = hub_with(config);
    let (idle, watched, kept) = (name("idle"), name("watched"), name("kept"));
    let old = publish(&hub, &idle, "a");
    publish(&hub, &watched, "b");
    let _subscriber = now(hub.subscribe(&watched, Start::Live)).unwrap();
    assert_eq!(hub.sweep(), 0);

    // History expired but the TTL has not: a returning client resumes quietly.
    clock.advance(Duration::from_secs(120));
    assert_eq!(hub.sweep(), 0);
    let quiet = now(hub.read(&idle, Start::After(old), 10)).unwrap();
    assert!(quiet.is_empty(), "{quiet:?}");

    clock.advance(Duration::from_secs(599));
    publish(&hub, &kept, "c"); // retained history keeps a channel
    clock.advance(Duration::from_secs(1));
    assert_eq!(hub.sweep(), 1);
    assert_eq!(hub.channel_count(), 2);
    assert!(hub.channel_stats(&idle).is_none());

    // Created again, the channel has a new epoch: the old cursor gets a reset.
    let batch = now(hub.read(&idle, Start::After(old), 10)).unwrap();
    match batch.signal {
        Some(Signal::Reset(reset)) => assert_eq!(reset.since, old),
        other => panic!("expected a reset, got {other:?}"),
    }
    assert_ne!(batch.cursor.epoch(), old.epoch());
}

#[test]
fn a_full_hub_evicts_unsubscribed_channels_least_recent_first() {
    // No separate quota for unpublished channels here: all ten may be.
    let config = MemoryHubConfig::default()
        .with_max_channels(10)
        .with_max_unpublished_channels(10);
    let (hub, clock) = hub_with(config);
    let mut subscribers = Vec::new();
    for i in 0..10 {
        let c = name(&format!("c{i}"));
        if i < 5 {
            subscribers.push(now(hub.subscribe(&c, Start::Live)).unwrap());
        } else {
            now(hub.read(&c, Start::Live, 1)).unwrap(); // dormant
        }
        clock.advance(Duration::from_millis(1));
    }
    now(hub.read(&name("c9"), Start::Live, 1)).unwrap(); // c9 is used again
    now(hub.read(&name("new"), Start::Live, 1)).unwrap();
    // Evicted down to 90% before adding: the two oldest dormant ones went.
    assert_eq!(hub.channel_count(), 9);
    assert!(hub.channel_stats(&name("c5")).is_none());
    assert!(hub.channel_stats(&name("c6")).is_none());
    assert!(hub.channel_stats(&name("c9")).is_some());
    for i in 0..5 {
        assert!(hub.channel_stats(&name(&format!("c{i}"))).is_some());
    }
}

#[test]
fn a_hub_full_of_channels_in_use_refuses_new_ones_clearly() {
    let config = MemoryHubConfig::default()
        .with_max_channels(3)
        .with_max_unpublished_channels(3);
    let (hub, clock) = hub_with(config);
    let subs: Vec<_> = (0..3)
        .map(|i| now(hub.subscribe(&name(&format!("c{i}")), Start::Live)).unwrap())
        .collect();
    let err = now(hub.publish(&name("one-too-many"), Publication::new("x"))).unwrap_err();
    assert!(matches!(err, Error::TooManyChannels { limit: 3 }));
    assert!(!err.is_client_error());
    // Existing channels still work.
    publish(&hub, &name("c0"), "still fine");

    drop(subs);
    // A futile eviction is not retried within the second...
    assert!(now(hub.read(&name("x"), Start::Live, 1)).is_err());
    // ...but is after it.
    clock.advance(Duration::from_millis(1_000));
    assert!(now(hub.read(&name("x"), Start::Live, 1)).is_ok());
}

/// A publish racing a sweep that frees its (idle) channel must land in the
/// channel everyone sees, never in a retired one.
#[test]
fn publishes_racing_sweeps_are_never_lost() {
    let config = MemoryHubConfig::default()
        .with_max_age(Duration::from_secs(1))
        .with_idle_channel_ttl(Duration::ZERO);
    let (hub, clock) = hub_with(config);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sweeper = {
        let (hub, stop) = (hub.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut freed = 0;
            while !stop.load(Ordering::Relaxed) {
                freed += hub.sweep();
            }
            freed
        })
    };
    let c = name("race");
    for _ in 0..100_000 {
        let cursor = publish(&hub, &c, "m");
        let batch = now(hub.read(&c, Start::Earliest, usize::MAX)).unwrap();
        assert!(
            batch.messages.iter().any(|m| m.cursor() == cursor),
            "message {cursor} lost to a retired channel"
        );
        // Its history expires: the channel is dormant, free to be swept.
        clock.advance(Duration::from_secs(1));
    }
    stop.store(true, Ordering::Relaxed);
    assert!(sweeper.join().unwrap() > 0, "the sweeper never raced");
}

/// Long polling as the transports do it, on real threads: read, and when there
/// is nothing, subscribe after the batch's cursor and wait. Every consumer gets
/// every message once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_pattern_misses_nothing_under_concurrency() {
    const MESSAGES: usize = 5_000;
    // History holds the whole run, so a consumer that falls behind is not
    // excused by a gap: it must get everything.
    let config = MemoryHubConfig::default().with_max_messages(MESSAGES);
    let hub = MemoryHub::with_config(config).unwrap();
    let c = name("race");
    let start = now(hub.read(&c, Start::Live, 0)).unwrap().cursor;
    let consumers: Vec<_> = (0..4)
        .map(|_| {
            let (hub, c) = (hub.clone(), c.clone());
            tokio::spawn(async move {
                let mut cursor = start;
                let mut got = Vec::with_capacity(MESSAGES);
                while got.len() < MESSAGES {
                    let batch = hub.read(&c, Start::After(cursor), 64).await.unwrap();
                    assert!(batch.signal.is_none());
                    if batch.is_empty() {
                        let mut wait = hub.subscribe(&c, Start::After(cursor)).await.unwrap();
                        match wait.next().await {
                            Some(Item::Message(m)) => {
                                cursor = m.cursor();
                                got.push(m.data().clone());
                            }
                            other => panic!("{other:?}"),
                        }
                        continue;
                    }
                    cursor = batch.cursor;
                    got.extend(batch.messages.iter().map(|m| m.data().clone()));
                }
                got
            })
        })
        .collect();
    for i in 0..MESSAGES {
        hub.publish(&c, Publication::new(i.to_string()))
            .await
            .unwrap();
        if i % 16 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let expected: Vec<Bytes> = (0..MESSAGES).map(|i| Bytes::from(i.to_string())).collect();
    for consumer in consumers {
        let got = tokio::time::timeout(Duration::from_secs(60), consumer)
            .await
            .expect("consumers finish")
            .unwrap();
        assert_eq!(got, expected);
    }
}
