//! The memory hub's byte budget: retained history never passes
//! `max_retained_bytes`, counted honestly (encodings included), trimmed oldest
//! first across channels, and whoever lost messages to it is told.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may fail loudly

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use push_core::{
    Batch, ChannelName, Cursor, Error, EventName, Hub, Item, ManualClock, MemoryHub,
    MemoryHubConfig, Message, Publication, Signal, Start, Timestamp, WireFormat,
};

const T0: Timestamp = Timestamp::from_unix_millis(1_700_000_000_000);
const OVERHEAD: usize = MemoryHubConfig::MESSAGE_OVERHEAD;
const PER_ENCODING: usize = MemoryHubConfig::ENCODING_OVERHEAD;
const FORMATS: [WireFormat; 3] = [
    WireFormat::JsonEnvelope,
    WireFormat::SseEvent,
    WireFormat::SseEnvelope,
];

fn name(s: &str) -> ChannelName {
    ChannelName::new(s).unwrap()
}

/// Per-channel limits out of the way: only the budget trims.
fn hub(budget: usize) -> (MemoryHub, ManualClock) {
    let clock = ManualClock::new(T0);
    let config = MemoryHubConfig::default()
        .with_max_messages(100_000)
        .with_max_message_bytes(4_096)
        .with_max_retained_bytes(budget)
        .with_max_age(Duration::from_secs(60))
        .with_idle_channel_ttl(Duration::from_secs(60));
    (
        MemoryHub::with_config_and_clock(config, clock.clone()).unwrap(),
        clock,
    )
}

fn now<T>(future: impl Future<Output = T>) -> T {
    future.now_or_never().expect("the memory hub never waits")
}

fn read(hub: &MemoryHub, channel: &ChannelName, start: Start) -> Batch {
    now(hub.read(channel, start, usize::MAX)).unwrap()
}

/// Fills `format` as a transport would, with an encoding `len` bytes long.
fn encode(message: &Message, format: WireFormat, len: usize) -> Bytes {
    message.encoded(format, |_| Bytes::from(vec![b'e'; len]))
}

/// One publish, as the test remembers it.
struct Published {
    channel: usize,
    cursor: Cursor,
    data: Bytes,
    /// What the budget counts for it.
    footprint: usize,
}

/// 3,000 messages of up to 1 KiB over 20 channels into a 64 KiB budget, with
/// encodings filled on every third: after every step the budget holds, and
/// what is retained is exactly the newest messages of the whole hub (a suffix
/// of the publish order), counted to the byte.
#[test]
fn the_budget_is_never_exceeded_and_the_oldest_go_first() {
    const BUDGET: usize = 64 << 10;
    let (hub, _) = hub(BUDGET);
    let names: Vec<ChannelName> = (0..20).map(|i| name(&format!("c{i}"))).collect();
    let mut published: Vec<Published> = Vec::new();
    let mut largest = 0;
    for i in 0..3_000usize {
        let channel = (i * 7 + i / 20) % names.len();
        let len = (i * 37) % 1_000;
        let data = Bytes::from(vec![b"abcdefghijklmnopqrstuvwxyz"[i % 26]; len]);
        let event = (i % 5 == 0).then(|| "tick".parse::<EventName>().unwrap());
        let mut publication = Publication::new(data.clone());
        if let Some(event) = &event {
            publication = publication.with_event(event.clone());
        }
        let size = publication.size();
        let cursor = now(hub.publish(&names[channel], publication)).unwrap();
        let mut footprint = OVERHEAD + size;
        assert!(hub.stats().retained_bytes <= BUDGET, "after publish {i}");

        if i % 3 == 0 {
            // As a transport does on delivery: encode the message just published.
            let batch = read(&hub, &names[channel], Start::Earliest);
            let message = batch.messages.iter().find(|m| m.cursor() == cursor);
            if let Some(message) = message {
                for (k, format) in FORMATS.iter().enumerate().take(1 + i % 3) {
                    let len = 2 * len + 40 * (k + 1);
                    assert_eq!(encode(message, *format, len).len(), len);
                    footprint += len + PER_ENCODING;
                }
            }
            drop(batch);
            assert!(hub.stats().retained_bytes <= BUDGET, "after encoding {i}");
        }
        largest = largest.max(footprint);
        published.push(Published {
            channel,
            cursor,
            data,
            footprint,
        });
    }

    // What each channel retains, read back.
    let mut retained: HashMap<Cursor, Bytes> = HashMap::new();
    for channel in &names {
        for message in read(&hub, channel, Start::Earliest).messages {
            retained.insert(message.cursor(), message.data().clone());
        }
    }
    // A suffix of the publish order, across all channels: the oldest went first.
    let oldest_kept = published.len() - retained.len();
    for (i, p) in published.iter().enumerate() {
        let kept = retained.get(&p.cursor);
        assert_eq!(
            kept.is_some(),
            i >= oldest_kept,
            "message {i} (channel {})",
            p.channel
        );
        if let Some(data) = kept {
            assert_eq!(data, &p.data);
        }
    }
    // Counted to the byte, and trimmed no further than needed.
    let counted: usize = published[oldest_kept..].iter().map(|p| p.footprint).sum();
    let stats = hub.stats();
    assert_eq!(stats.retained_bytes, counted);
    assert!(counted + largest > BUDGET, "trimmed too much: {counted}");
    assert_eq!(stats.trimmed_messages, oldest_kept as u64);
}

/// Polls once, without waiting.
fn poll(subscription: &mut push_core::MemorySubscription) -> Option<Item> {
    match subscription.poll_next_unpin(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(item) => item,
        Poll::Pending => None,
    }
}

/// A subscriber that fell behind while other channels' traffic pushed its
/// channel's oldest messages out: a gap with the exact count, then exactly
/// what is retained, in order. A resuming cursor gets the same gap.
#[test]
fn a_subscriber_behind_gets_a_gap_with_the_missed_count_then_what_is_retained() {
    let (hub, _) = hub(40 * (OVERHEAD + 100));
    let watched = name("watched");
    let mut subscriber = now(hub.subscribe(&watched, Start::Live)).unwrap();
    let start = hub.channel_stats(&watched).unwrap().cursor;
    let mut ours = Vec::new();
    for i in 0..300 {
        now(hub.publish(
            &name(&format!("other{}", i % 5)),
            Publication::new(vec![b'o'; 100]),
        ))
        .unwrap();
        if i % 10 == 0 {
            let data = Bytes::from(format!("{i:0>100}"));
            let cursor = now(hub.publish(&watched, Publication::new(data.clone()))).unwrap();
            ours.push((cursor, data));
        }
    }
    let kept = hub.channel_stats(&watched).unwrap().messages;
    assert!(kept > 0 && kept < ours.len(), "{kept} of {}", ours.len());
    let lost = ours.len() - kept;

    match poll(&mut subscriber) {
        Some(Item::Signal(Signal::Gap(gap))) => {
            assert_eq!(gap.since, start);
            assert_eq!(gap.resume, ours[lost - 1].0);
            assert_eq!(gap.missed, Some(lost as u64));
        }
        other => panic!("expected a gap, got {other:?}"),
    }
    for (cursor, data) in &ours[lost..] {
        match poll(&mut subscriber) {
            Some(Item::Message(m)) => assert_eq!((m.cursor(), m.data()), (*cursor, data)),
            other => panic!("expected {cursor}, got {other:?}"),
        }
    }
    assert!(poll(&mut subscriber).is_none(), "caught up");

    // A client resuming from its last cursor is told the same.
    let batch = read(&hub, &watched, Start::After(ours[0].0));
    match batch.signal {
        Some(Signal::Gap(gap)) => assert_eq!(gap.missed, Some(lost as u64 - 1)),
        other => panic!("expected a gap, got {other:?}"),
    }
    assert_eq!(batch.messages.len(), kept);
}

/// A message being delivered counts until it is dropped: trimming frees what
/// it can (the retained ones) and the held one goes when released.
#[test]
fn messages_in_flight_count_until_delivered() {
    const BUDGET: usize = 8 * (OVERHEAD + 1_000);
    let (hub, _) = hub(BUDGET);
    let (big, small) = (name("big"), name("small"));
    let held_cursor = now(hub.publish(&big, Publication::new(vec![b'b'; 4_000]))).unwrap();
    let held = read(&hub, &big, Start::Earliest);
    for _ in 0..20 {
        now(hub.publish(&small, Publication::new(vec![b's'; 1_000]))).unwrap();
    }
    // Trimmed from the log, still counted while held.
    assert_eq!(hub.channel_stats(&big).unwrap().messages, 0);
    let with_held = hub.stats().retained_bytes;
    assert!(with_held <= BUDGET);
    assert_eq!(held.messages[0].cursor(), held_cursor);
    drop(held);
    assert_eq!(hub.stats().retained_bytes, with_held - OVERHEAD - 4_000);
    // The big channel's reader learns of the loss.
    let batch = read(
        &hub,
        &big,
        Start::After(Cursor::new(held_cursor.epoch(), push_core::Position::ZERO)),
    );
    assert!(matches!(batch.signal, Some(Signal::Gap(gap)) if gap.missed == Some(1)));
}

/// Filling an encoding is charged at once; when it takes the hub over the
/// budget, the oldest messages go before `encoded` returns.
#[test]
fn filling_an_encoding_past_the_budget_trims_at_once() {
    let budget = 4 * OVERHEAD + 5_000;
    let (hub, _) = hub(budget);
    let c = name("c");
    for _ in 0..3 {
        now(hub.publish(&c, Publication::new(vec![b'x'; 10]))).unwrap();
    }
    let before = hub.stats().retained_bytes;
    assert_eq!(before, 3 * (OVERHEAD + 10));
    let batch = read(&hub, &c, Start::Earliest);
    let newest: Arc<Message> = batch.messages[2].clone();
    drop(batch);
    encode(&newest, WireFormat::SseEvent, 100);
    let sse = 100 + PER_ENCODING;
    assert_eq!(hub.stats().retained_bytes, before + sse);
    // Asking again costs nothing more: the same bytes, charged once.
    encode(&newest, WireFormat::SseEvent, 100);
    assert_eq!(hub.stats().retained_bytes, before + sse);
    // One byte over the budget: the oldest message goes, and only it.
    let over = budget - (before + sse + PER_ENCODING) + 1;
    encode(&newest, WireFormat::JsonEnvelope, over);
    assert!(hub.stats().retained_bytes <= budget);
    assert_eq!(
        hub.channel_stats(&c).unwrap().messages,
        2,
        "the oldest went"
    );
    assert_eq!(hub.stats().trimmed_messages, 1);
    drop(newest);
    assert_eq!(
        hub.stats().retained_bytes,
        2 * (OVERHEAD + 10) + sse + over + PER_ENCODING
    );
}

/// Everything charged is released: once all history has expired or been
/// evicted, the count is back to zero.
#[test]
fn every_charge_is_released() {
    let (hub, clock) = hub(1 << 20);
    for i in 0..200 {
        let c = name(&format!("c{}", i % 7));
        now(hub.publish(&c, Publication::new(vec![b'x'; i]))).unwrap();
        if i % 2 == 0 {
            let batch = read(&hub, &c, Start::Earliest);
            for m in &batch.messages {
                encode(m, WireFormat::JsonEnvelope, 3 * i);
            }
        }
    }
    assert!(hub.stats().retained_bytes > 0);
    clock.advance(Duration::from_secs(120));
    assert_eq!(hub.sweep(), 7);
    let stats = hub.stats();
    assert_eq!((stats.retained_bytes, stats.channels), (0, 0));
}

#[test]
fn the_budget_must_hold_the_largest_message() {
    let config = |budget| {
        MemoryHubConfig::default()
            .with_max_message_bytes(1_000)
            .with_max_retained_bytes(budget)
    };
    assert!(matches!(
        MemoryHub::with_config(config(1_000 + OVERHEAD - 1)),
        Err(Error::InvalidConfig { .. })
    ));
    MemoryHub::with_config(config(1_000 + OVERHEAD)).unwrap();
    assert!(matches!(
        MemoryHub::with_config(MemoryHubConfig::default().with_max_unpublished_channels(0)),
        Err(Error::InvalidConfig { .. })
    ));
    let defaults = MemoryHubConfig::default();
    assert_eq!(defaults.max_retained_bytes, 256 << 20);
    assert_eq!(defaults.unpublished_channel_limit(), 50_000);
}

/// Publishers, subscribers that encode what they get, readers of new names
/// and a sweeper, on real threads, over a small budget and a small table: no
/// deadlock, the budget holds whenever nobody holds a message, and once all is
/// dropped nothing stays counted.
#[test]
fn concurrent_publishes_encodings_and_evictions_keep_the_count_exact() {
    const BUDGET: usize = 32 * (OVERHEAD + 64);
    let clock = ManualClock::new(T0);
    let config = MemoryHubConfig::default()
        .with_max_channels(16)
        .with_max_message_bytes(256)
        .with_max_retained_bytes(BUDGET)
        .with_max_age(Duration::from_secs(60))
        .with_idle_channel_ttl(Duration::ZERO);
    let hub = MemoryHub::with_config_and_clock(config, clock.clone()).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut threads = Vec::new();
    for t in 0..3 {
        let hub = hub.clone();
        threads.push(std::thread::spawn(move || {
            for i in 0..20_000usize {
                let c = name(&format!("p{}", (i * (t + 1)) % 12));
                let data = vec![b'p'; i % 200];
                // The table may be full of subscribed channels for a moment.
                let _ = now(hub.publish(&c, Publication::new(data)));
            }
        }));
    }
    for t in 0..2 {
        let (hub, stop) = (hub.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut i = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let Ok(mut subscription) =
                    now(hub.subscribe(&name(&format!("p{}", (i + t) % 12)), Start::Earliest))
                else {
                    continue;
                };
                for _ in 0..20 {
                    match poll(&mut subscription) {
                        Some(Item::Message(m)) => {
                            encode(&m, FORMATS[i % 3], m.data().len() + 30);
                        }
                        Some(Item::Signal(_)) => {}
                        None => break,
                    }
                }
                let _ = now(hub.read(&name(&format!("r{t}-{i}")), Start::Live, 1));
            }
        }));
    }
    {
        let (hub, stop) = (hub.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                hub.sweep();
                std::thread::yield_now();
            }
        }));
    }
    for publisher in threads.drain(..3) {
        publisher.join().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for thread in threads {
        thread.join().unwrap();
    }
    let stats = hub.stats();
    assert!(stats.retained_bytes <= BUDGET, "{stats:?}");
    assert!(
        stats.trimmed_messages > 0 && stats.evicted_channels > 0,
        "{stats:?}"
    );
    clock.advance(Duration::from_secs(60));
    hub.sweep();
    let stats = hub.stats();
    assert_eq!((stats.retained_bytes, stats.channels), (0, 0), "{stats:?}");
}
