//! Idempotent publishing on the Redis hub: a publication carrying a key is
//! stored once however often it is retried, also when connections are
//! killed under it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::{RedisServer, hub, prefix, within};
use push_core::{ChannelName, Error, EventName, Hub, IdempotencyKey, Publication, Start};

fn channel(name: &str) -> ChannelName {
    name.parse().unwrap()
}

fn key(text: &str) -> IdempotencyKey {
    text.parse().unwrap()
}

/// Every message `channel` retains, as text.
async fn stored(node: &push_redis::RedisHub, channel: &ChannelName) -> Vec<String> {
    let mut all = Vec::new();
    let mut start = Start::Earliest;
    loop {
        let batch = node.read(channel, start, 5_000).await.unwrap();
        assert!(batch.signal.is_none());
        all.extend(
            batch
                .messages
                .iter()
                .map(|m| String::from_utf8(m.data().to_vec()).unwrap()),
        );
        if !batch.more {
            return all;
        }
        start = Start::After(batch.cursor);
    }
}

#[tokio::test]
async fn a_retry_with_the_same_key_answers_the_same_cursor_and_stores_once() {
    let Some(server) = RedisServer::any().await else {
        return;
    };
    let prefix = prefix();
    let (a, b) = (
        hub(&server, &prefix, |c| c).await,
        hub(&server, &prefix, |c| c).await,
    );
    let news = channel("news");
    let once = || Publication::new("hello").with_key(key("req-1"));
    let first = a.publish(&news, once()).await.unwrap();
    // From the same node and from another: the first cursor, verbatim.
    assert_eq!(a.publish(&news, once()).await.unwrap(), first);
    assert_eq!(b.publish(&news, once()).await.unwrap(), first);
    let other = a.publish(&news, Publication::new("other")).await.unwrap();
    assert!(other > first);
    assert_eq!(a.publish(&news, once()).await.unwrap(), first);
    assert_eq!(stored(&b, &news).await, ["hello", "other"]);

    // The same key with other data, or another event name: refused, and
    // nothing stored.
    let reused = a
        .publish(&news, Publication::new("bye").with_key(key("req-1")))
        .await;
    assert!(
        matches!(reused, Err(Error::IdempotencyKeyReused)),
        "{reused:?}"
    );
    let event: EventName = "greeting".parse().unwrap();
    let reused = b.publish(&news, once().with_event(event)).await;
    assert!(
        matches!(reused, Err(Error::IdempotencyKeyReused)),
        "{reused:?}"
    );
    assert_eq!(stored(&a, &news).await, ["hello", "other"]);

    // A key belongs to its channel.
    let sport = channel("sport");
    let elsewhere = a.publish(&sport, once()).await.unwrap();
    assert_ne!(elsewhere, first);
    assert_eq!(stored(&a, &sport).await, ["hello"]);
}

#[tokio::test]
async fn a_key_is_forgotten_after_its_window() {
    let Some(server) = RedisServer::own().await else {
        return;
    };
    let window = std::time::Duration::from_millis(200);
    let node = hub(&server, &prefix(), |c| c.with_idempotency_window(window)).await;
    let news = channel("news");
    let once = || Publication::new("hello").with_key(key("k"));
    let first = node.publish(&news, once()).await.unwrap();
    assert_eq!(node.publish(&news, once()).await.unwrap(), first);
    // Wait for Redis to drop the key (it says when), then it stores again.
    within("the key to expire", async {
        loop {
            let keys = server.command(&["KEYS", "*:key:k"]).await;
            if keys.starts_with("*0") {
                return;
            }
            tokio::time::sleep(window / 4).await;
        }
    })
    .await;
    let second = node.publish(&news, once()).await.unwrap();
    assert!(second > first);
    assert_eq!(stored(&node, &news).await, ["hello", "hello"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_with_keys_under_killed_connections_stores_each_message_once() {
    const PUBLISHERS: usize = 8;
    /// Failures the publishers must have seen (and retried) before they
    /// stop: the kills must reach publishes in flight, many times.
    const FAILURES: usize = 20;
    let Some(server) = RedisServer::own().await else {
        return;
    };
    let prefix = prefix();
    let node = hub(&server, &prefix, |c| c.with_max_messages(1_000_000)).await;
    let news = channel("news");
    let failures = Arc::new(AtomicUsize::new(0));
    let kinds = Arc::new(std::sync::Mutex::new(HashMap::<&'static str, usize>::new()));
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let (node, news, failures, kinds) =
            (node.clone(), news.clone(), failures.clone(), kinds.clone());
        publishers.push(tokio::spawn(async move {
            let mut published = 0;
            while failures.load(Ordering::Relaxed) < FAILURES || published < 20 {
                let text = format!("p{p}-m{published}");
                let publication = Publication::new(text.clone()).with_key(key(&text));
                // Retry until it is known to be stored.
                loop {
                    match node.publish(&news, publication.clone()).await {
                        Ok(_) => break,
                        Err(err) => {
                            let kind = match err {
                                Error::OutcomeUnknown(_) => "outcome_unknown",
                                Error::Unavailable(_) => "unavailable",
                                other => panic!("{text}: {other:?}"),
                            };
                            *kinds.lock().unwrap().entry(kind).or_default() += 1;
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                published += 1;
            }
            published
        }));
    }
    // Kill every command connection, over and over, while they publish.
    let done = Arc::new(AtomicBool::new(false));
    let killer = {
        let done = done.clone();
        let url = server.url.clone();
        tokio::spawn(async move {
            let mut kills = 0;
            while !done.load(Ordering::Relaxed) {
                common::command_at(&url, &["CLIENT", "KILL", "TYPE", "normal"]).await;
                kills += 1;
                // Time for some publishes to get through in between.
                tokio::time::sleep(std::time::Duration::from_micros(300)).await;
            }
            kills
        })
    };
    let mut counts = Vec::new();
    for publisher in publishers {
        counts.push(within("a publisher", publisher).await.unwrap());
    }
    done.store(true, Ordering::Relaxed);
    let kills = killer.await.unwrap();
    let kinds = kinds.lock().unwrap().clone();
    println!("{kills} kills, {counts:?} published, {failures:?} failed attempts: {kinds:?}");
    assert!(failures.load(Ordering::Relaxed) >= FAILURES);
    // Every message stored exactly once.
    let mut got = stored(&node, &news).await;
    got.sort();
    let mut expected: Vec<String> = counts
        .iter()
        .enumerate()
        .flat_map(|(p, count)| (0..*count).map(move |m| format!("p{p}-m{m}")))
        .collect();
    expected.sort();
    assert_eq!(got.len(), expected.len(), "stored twice or lost");
    assert_eq!(got, expected);
}
