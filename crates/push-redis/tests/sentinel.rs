//! The Redis hub through Redis Sentinel: it finds the master, and follows a
//! failover (a clean `SENTINEL FAILOVER`; a master killed with SIGKILL) with
//! its guarantees intact: a keyed publisher's retries succeed within a bound
//! and store each message once (what the old master took after the replica
//! was promoted is in a rolled-back history, which the reset covers), a live
//! subscriber gets a reset and then every later message once, in order, and
//! the health probe is unhealthy during the switch and healthy after.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::sentinel::Topology;
use common::{prefix, within};
use futures_util::StreamExt as _;
use push_core::{ChannelName, Cursor, Hub, Item, Message, Publication, Signal, Start};
use push_redis::{RedisHub, RedisSubscription};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The longest one keyed publish may take to succeed, retries included.
const BOUND: Duration = Duration::from_secs(15);
/// Publishes confirmed on the new master before the test stops publishing.
const AFTER: usize = 20;

fn channel(name: &str) -> ChannelName {
    name.parse().unwrap()
}

fn text(message: &Message) -> String {
    String::from_utf8(message.data().to_vec()).unwrap()
}

/// The index `i` of a message `m{i}`.
fn index(data: &str) -> usize {
    data.strip_prefix('m').unwrap().parse().unwrap()
}

/// One confirmed publish.
#[derive(Debug)]
struct Confirmed {
    data: String,
    cursor: Cursor,
    /// From the first attempt to the success.
    took: Duration,
    attempts: u32,
}

/// Publishes `m{i}` with key `k{i}` until it succeeds, retrying every 10 ms.
async fn publish_keyed(node: &RedisHub, news: &ChannelName, i: usize) -> Confirmed {
    let data = format!("m{i}");
    let publication = Publication::new(data.clone()).with_key(format!("k{i}").parse().unwrap());
    let started = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        match node.publish(news, publication.clone()).await {
            Ok(cursor) => {
                return Confirmed {
                    data,
                    cursor,
                    took: started.elapsed(),
                    attempts,
                };
            }
            Err(err) => {
                assert!(started.elapsed() < BOUND, "m{i} still failing: {err}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// The next item of `subscription`.
async fn next(subscription: &mut RedisSubscription) -> Item {
    within("the subscriber's next item", subscription.next())
        .await
        .expect("the subscription ended")
}

enum Trigger {
    /// `SENTINEL FAILOVER`.
    Failover,
    /// SIGKILL the master; the sentinels promote the replica.
    Kill,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_follows_a_sentinel_failover() {
    through(Trigger::Failover).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_follows_the_promotion_when_its_master_is_killed() {
    through(Trigger::Kill).await;
}

#[tokio::test]
async fn a_hub_without_a_reachable_sentinel_fails_to_connect_with_a_reason() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = push_redis::RedisHubConfig::through_sentinel(push_redis::SentinelConfig::new(
        [("127.0.0.1", port)],
        "nobody",
    ))
    .with_connection_timeout(Duration::from_millis(500));
    let err = RedisHub::connect(config).await.unwrap_err();
    assert!(matches!(err, push_core::Error::Unavailable(_)), "{err}");
    assert!(err.to_string().contains("sentinels"), "{err}");
    // Settings that cannot work are refused before any connection.
    let bad = push_redis::RedisHubConfig::through_sentinel(push_redis::SentinelConfig::new(
        Vec::<(String, u16)>::new(),
        "m",
    ));
    let err = RedisHub::connect(bad).await.unwrap_err();
    assert!(
        matches!(err, push_core::Error::InvalidConfig { .. }),
        "{err}"
    );
}

/// Two hubs through the topology's sentinels, on a prefix of their own,
/// quick to notice a failure.
async fn two_nodes(topology: &Topology) -> (RedisHub, RedisHub) {
    let prefix = prefix();
    let config = || {
        topology
            .config(&prefix)
            .with_probe_interval(Duration::from_millis(100))
            .with_response_timeout(Duration::from_millis(500))
            .with_connection_timeout(Duration::from_millis(500))
    };
    (
        RedisHub::connect(config()).await.unwrap(),
        RedisHub::connect(config()).await.unwrap(),
    )
}

async fn through(trigger: Trigger) {
    let Some(mut topology) = Topology::start().await else {
        return;
    };
    let (a, b) = two_nodes(&topology).await;
    let news = channel("news");
    let old_master = topology.master_port().await;
    let old_address = format!("127.0.0.1:{old_master}");
    assert_eq!(b.health().address.as_deref(), Some(old_address.as_str()));

    // Through Sentinel: publish on A, receive on B.
    let mut subscription = b.subscribe(&news, Start::Live).await.unwrap();
    let mut confirmed = Vec::new();
    for i in 0..10 {
        confirmed.push(publish_keyed(&a, &news, i).await);
    }
    for i in 0..10 {
        match next(&mut subscription).await {
            Item::Message(message) => assert_eq!(text(&message), format!("m{i}")),
            other => panic!("expected m{i}, got {other:?}"),
        }
    }
    // From now on the subscriber reads as items come, as a transport would.
    let (forward, mut received) = mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        while let Some(item) = subscription.next().await {
            if forward.send(item).is_err() {
                return;
            }
        }
    });
    within("B healthy", async {
        while !(b.health().healthy && b.health().probe_round_trip.is_some()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // What was confirmed so far is on the replica too: it must survive.
    topology.sync_replica(old_master).await;

    // B's health, watched from now on: unhealthy, then healthy elsewhere.
    let watcher = {
        let (b, old_address) = (b.clone(), old_address.clone());
        tokio::spawn(async move {
            let mut unhealthy = None;
            loop {
                let health = b.health();
                if !health.healthy && unhealthy.is_none() {
                    unhealthy = health.reason.clone();
                }
                if unhealthy.is_some()
                    && health.healthy
                    && health.address.as_ref().is_some_and(|a| *a != old_address)
                {
                    return (unhealthy, health);
                }
                // State with no event: the probe records, the test looks.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    // A keyed publisher on A at a steady pace, through the failover.
    let stop = Arc::new(AtomicBool::new(false));
    let (sender, mut confirmations) = mpsc::unbounded_channel();
    let publisher = {
        let (a, news, stop) = (a.clone(), news.clone(), stop.clone());
        tokio::spawn(async move {
            for i in 10.. {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let _ = sender.send(publish_keyed(&a, &news, i).await);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let mut switches = topology.switches().await;
    for _ in 0..5 {
        confirmed.push(within("a publish", confirmations.recv()).await.unwrap());
    }
    let triggered = Instant::now();
    match trigger {
        Trigger::Failover => topology.failover().await,
        Trigger::Kill => topology.kill(old_master).await,
    }
    let new_master = switches.next().await;
    assert_ne!(new_master, old_master);
    let new_address = format!("127.0.0.1:{new_master}");
    let (unhealthy, healthy) = within("B unhealthy, then healthy on the new master", watcher)
        .await
        .unwrap();
    println!(
        "switched after {:?}; B was unhealthy ({unhealthy:?}), now {healthy:?}",
        triggered.elapsed()
    );
    assert_eq!(healthy.address.as_deref(), Some(new_address.as_str()));
    assert_eq!(a.health().address.as_deref(), Some(new_address.as_str()));
    // Publishing goes on on the new master.
    let mut after = 0;
    while after < AFTER {
        let next = within("a publish", confirmations.recv()).await.unwrap();
        after += 1;
        confirmed.push(next);
    }
    stop.store(true, Ordering::Relaxed);
    within("the publisher", publisher).await.unwrap();
    while let Ok(next) = confirmations.try_recv() {
        confirmed.push(next);
    }
    let last = confirmed.last().unwrap().cursor;

    // The history on the new master: each key once, in order.
    let history = b.read(&news, Start::Earliest, 100_000).await.unwrap();
    assert!(
        history
            .messages
            .iter()
            .all(|m| m.cursor().epoch() == last.epoch())
    );
    let stored: Vec<String> = history.messages.iter().map(|m| text(m)).collect();
    let at: HashMap<&str, Cursor> = history
        .messages
        .iter()
        .map(|m| (std::str::from_utf8(m.data()).unwrap(), m.cursor()))
        .collect();
    assert_eq!(at.len(), stored.len(), "a key stored twice: {stored:?}");
    assert!(
        stored.windows(2).all(|w| index(&w[0]) < index(&w[1])),
        "{stored:?}"
    );
    let mut rolled_back = Vec::new();
    for publish in &confirmed {
        assert!(publish.took < BOUND, "{publish:?}");
        match at.get(publish.data.as_str()) {
            // Confirmed by the new master: there, under that cursor.
            _ if publish.cursor.epoch() == last.epoch() => {
                assert_eq!(at.get(publish.data.as_str()), Some(&publish.cursor));
            }
            // Confirmed by the old one and copied before the switch.
            Some(_) => {}
            // Confirmed by the old master after the promotion: lost with
            // its history (every reader of it gets a reset).
            None => rolled_back.push(publish.data.clone()),
        }
    }
    assert!(
        rolled_back.iter().all(|data| index(data) >= 10),
        "synced messages lost: {rolled_back:?}"
    );
    let slowest = confirmed.iter().max_by_key(|p| p.took).unwrap();
    let retried = confirmed.iter().filter(|p| p.attempts > 1).count();
    println!(
        "{} confirmed, {retried} after retries, the slowest {:?} ({} attempts); rolled back: {rolled_back:?}",
        confirmed.len(),
        slowest.took,
        slowest.attempts
    );

    // The live subscriber: what the old history gave it, consecutively;
    // then a reset (the new master is another process); then every message
    // of the new history after the reset's resume, once each, in order.
    let mut items = Vec::new();
    within("the subscriber to reach the last message", async {
        loop {
            let item = received.recv().await.expect("the subscription ended");
            let done = item.cursor() == last;
            items.push(item);
            if done {
                break;
            }
        }
    })
    .await;
    reader.abort();
    let resets: Vec<usize> = (0..items.len())
        .filter(|&i| matches!(items[i], Item::Signal(Signal::Reset(_))))
        .collect();
    assert!(
        !items
            .iter()
            .any(|i| matches!(i, Item::Signal(Signal::Gap(_)))),
        "{items:?}"
    );
    let (&first, &final_reset) = (resets.first().unwrap(), resets.last().unwrap());
    let before: Vec<usize> = items[..first]
        .iter()
        .map(|item| match item {
            Item::Message(m) => index(&text(m)),
            Item::Signal(_) => unreachable!(),
        })
        .collect();
    assert!(
        before.windows(2).all(|w| w[1] == w[0] + 1),
        "before the reset: {before:?}"
    );
    let Item::Signal(Signal::Reset(reset)) = &items[final_reset] else {
        unreachable!()
    };
    assert_eq!(reset.resume.epoch(), last.epoch());
    let expected: Vec<(Cursor, String)> = history
        .messages
        .iter()
        .filter(|m| m.cursor().position() > reset.resume.position())
        .map(|m| (m.cursor(), text(m)))
        .collect();
    let got: Vec<(Cursor, String)> = items[final_reset + 1..]
        .iter()
        .map(|item| match item {
            Item::Message(m) => (m.cursor(), text(m)),
            other => panic!("after the reset: {other:?}"),
        })
        .collect();
    assert_eq!(got, expected);
    println!(
        "subscriber: {} before the reset, {} resets, {} after",
        before.len(),
        resets.len(),
        got.len()
    );
}

/// Case 1 of issue 13 through Sentinel: the replica stops copying (made to,
/// with `REPLICAOF NO ONE`, so that what it lacks is known), the master
/// takes five more publishes, confirmed, and is killed; the sentinels
/// promote the lagging replica. A live subscriber gets a reset, never
/// silence; no cursor names two messages; a client resuming from a cursor
/// of the lost part gets a reset; a retried key whose first store was lost
/// with the master is stored again (under a new cursor).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_promoted_ends_in_a_reset_not_silence() {
    let Some(mut topology) = Topology::start().await else {
        return;
    };
    let (a, b) = two_nodes(&topology).await;
    let news = channel("news");
    let old_master = topology.master_port().await;
    let replica = topology.replica_port(old_master);
    let mut subscription = b.subscribe(&news, Start::Live).await.unwrap();
    let mut confirmed = Vec::new();
    for i in 0..5 {
        confirmed.push(publish_keyed(&a, &news, i).await);
    }
    topology.sync_replica(old_master).await;
    // The replica stops copying: what follows exists on the master only.
    let detached = common::sentinel::query(replica, &["REPLICAOF", "NO", "ONE"]).await;
    assert_eq!(detached.text(), "OK");
    for i in 5..10 {
        confirmed.push(publish_keyed(&a, &news, i).await);
    }
    for i in 0..10 {
        match next(&mut subscription).await {
            Item::Message(message) => assert_eq!(text(&message), format!("m{i}")),
            other => panic!("expected m{i}, got {other:?}"),
        }
    }
    let mut switches = topology.switches().await;
    topology.kill(old_master).await;
    assert_eq!(switches.next().await, replica, "the lagging replica");

    // Publishing goes on; m5's key was lost with the master: stored again.
    let again = publish_keyed(&a, &news, 5).await;
    assert_ne!(again.cursor, confirmed[5].cursor);
    assert_ne!(again.cursor.epoch(), confirmed[5].cursor.epoch());
    confirmed.push(again);
    for i in 10..15 {
        confirmed.push(publish_keyed(&a, &news, i).await);
    }
    // A key that replicated answers its first cursor, from the old epoch.
    assert_eq!(
        publish_keyed(&a, &news, 2).await.cursor,
        confirmed[2].cursor
    );
    let mut cursors: Vec<Cursor> = confirmed.iter().map(|p| p.cursor).collect();
    cursors.sort_by_key(|c| (c.epoch(), c.position()));
    cursors.dedup();
    assert_eq!(
        cursors.len(),
        confirmed.len(),
        "a cursor named two messages"
    );

    // The live subscriber: a reset, then the new history after its resume.
    let reset = match next(&mut subscription).await {
        Item::Signal(Signal::Reset(reset)) => reset,
        other => panic!("expected a reset, got {other:?}"),
    };
    let last = confirmed.last().unwrap().cursor;
    assert_eq!(reset.resume.epoch(), last.epoch());
    let history = b.read(&news, Start::Earliest, 1_000).await.unwrap();
    let expected: Vec<String> = history
        .messages
        .iter()
        .filter(|m| m.cursor().position() > reset.resume.position())
        .map(|m| text(m))
        .collect();
    let mut got = Vec::new();
    while got.len() < expected.len() {
        match next(&mut subscription).await {
            Item::Message(message) => got.push(text(&message)),
            other => panic!("after the reset: {other:?}"),
        }
    }
    assert_eq!(got, expected);
    let stored: Vec<String> = history.messages.iter().map(|m| text(m)).collect();
    let survivors: Vec<String> = (0..5)
        .chain([5])
        .chain(10..15)
        .map(|i| format!("m{i}"))
        .collect();
    assert_eq!(stored, survivors, "what survived, each once, in order");

    // A client holding a cursor from the lost part: a reset, on either node.
    for node in [&a, &b] {
        let mut resumed = node
            .subscribe(&news, Start::After(confirmed[7].cursor))
            .await
            .unwrap();
        match next(&mut resumed).await {
            Item::Signal(Signal::Reset(reset)) => assert_eq!(reset.since, confirmed[7].cursor),
            other => panic!("expected a reset, got {other:?}"),
        }
    }
}
