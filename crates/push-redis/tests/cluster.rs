//! The Redis hub on a real Redis Cluster (three primaries, three replicas,
//! started by the test: `common::cluster`): the continuity properties every
//! hub keeps, two nodes sharing channels spread over every shard through
//! sharded Pub/Sub, and a publisher running through a `CLUSTER FAILOVER`, a
//! SIGKILL of a primary and a slot migration without losing or repeating a
//! message unless a signal says so.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::cluster::{Cluster, keyslot};
use common::sentinel::query;
use common::{prefix, within};
use futures_util::StreamExt as _;
use proptest::prelude::*;
use push_core::testing::{self, Options, Report};
use push_core::{ChannelName, Cursor, Hub, IdempotencyKey, Item, Publication, Start};
use push_redis::RedisHub;

fn channel(name: &str) -> ChannelName {
    name.parse().unwrap()
}

#[test]
fn cluster_hub_keeps_continuity() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let Some(cluster) = runtime.block_on(Cluster::start()) else {
        return;
    };
    let config = ProptestConfig {
        cases: 64,
        max_shrink_time: 60_000,
        ..ProptestConfig::default()
    };
    let total = Mutex::new(Report::default());
    let case = std::sync::atomic::AtomicU64::new(0);
    proptest!(config, |(max_messages in 1usize..8, ops in testing::ops(60, 7, 150))| {
        // A channel of its own per case: the cases spread over the shards.
        let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let result = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|runtime| runtime.block_on(async {
                let hub = cluster
                    .hub(&prefix(), |c| c.with_max_messages(max_messages).with_max_message_bytes(8))
                    .await;
                let options = Options::default().with_patience(Duration::from_secs(5));
                testing::check(&hub, &channel(&format!("c{n}")), &ops, &options).await
            }));
        prop_assert!(result.is_ok(), "{}", result.as_ref().unwrap_err());
        *total.lock().unwrap() += result.unwrap();
    });
    let total = total.into_inner().unwrap();
    println!("{total:?}");
    assert!(
        total.gaps > 5 && total.resets > 5 && total.wakeups > 5,
        "{total:?}"
    );
    drop(cluster);
}

async fn spread(cluster: &Cluster, prefix: &str, per_shard: usize) -> Vec<ChannelName> {
    let names = cluster.spread(prefix, per_shard).await;
    names.iter().map(|name| channel(name)).collect()
}

/// The shard channels of `prefix` the primaries have subscribers on.
async fn shard_channels(cluster: &Cluster, prefix: &str, dead: &[u16]) -> BTreeSet<String> {
    let mut channels = BTreeSet::new();
    for node in cluster
        .settled(dead)
        .await
        .iter()
        .filter(|n| n.primary && !n.failed)
    {
        let answer = query(
            node.port,
            &["PUBSUB", "SHARDCHANNELS", &format!("{prefix}:{{*")],
        )
        .await;
        channels.extend(answer.items().iter().map(|item| item.text().to_owned()));
    }
    channels
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_channels_over_every_shard() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let prefix = prefix();
    let (a, b) = (
        cluster.hub(&prefix, |c| c).await,
        cluster.hub(&prefix, |c| c).await,
    );
    let channels = spread(&cluster, &prefix, 3).await;
    // B follows every channel; A publishes.
    let mut subscriptions = Vec::new();
    for name in &channels {
        subscriptions.push(b.subscribe(name, Start::Live).await.unwrap());
    }
    let mut published: Vec<Vec<Cursor>> = vec![Vec::new(); channels.len()];
    for round in 0..5 {
        for (i, name) in channels.iter().enumerate() {
            let cursor = a
                .publish(name, Publication::new(format!("{round}")))
                .await
                .unwrap();
            published[i].push(cursor);
        }
    }
    for (i, subscription) in subscriptions.iter_mut().enumerate() {
        for (round, cursor) in published[i].iter().enumerate() {
            match within("a message", subscription.next()).await {
                Some(Item::Message(message)) => {
                    assert_eq!(message.data().as_ref(), format!("{round}").as_bytes());
                    // The same cursor on both nodes.
                    assert_eq!(message.cursor(), *cursor, "{}", channels[i]);
                }
                other => panic!("expected message {round} on {}, got {other:?}", channels[i]),
            }
        }
    }
    // A reader on A sees what B was sent, with the same cursors.
    let batch = a.read(&channels[0], Start::Earliest, 100).await.unwrap();
    let cursors: Vec<Cursor> = batch.messages.iter().map(|m| m.cursor()).collect();
    assert_eq!(cursors, published[0]);
    // Sharded: the primaries hold a subscription for each channel B
    // follows (A follows none), and none other.
    let expected: BTreeSet<String> = channels
        .iter()
        .map(|c| format!("{prefix}:{{{c}}}"))
        .collect();
    assert_eq!(shard_channels(&cluster, &prefix, &[]).await, expected);
    // B drops half: their subscriptions go.
    let kept = channels.len() / 2;
    subscriptions.truncate(kept);
    let expected: BTreeSet<String> = channels[..kept]
        .iter()
        .map(|c| format!("{prefix}:{{{c}}}"))
        .collect();
    within("the dropped channels to be unsubscribed", async {
        while shard_channels(&cluster, &prefix, &[]).await != expected {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // Both nodes healthy: every shard's probe came back.
    within("both nodes to be healthy", async {
        while !(a.health().healthy && b.health().healthy) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        a.health()
            .address
            .unwrap()
            .starts_with("cluster primaries ")
    );
}

/// What one subscriber saw of one channel.
#[derive(Debug, Default)]
struct Seen {
    /// Message data (the publish's number) and cursor, or `None` for a
    /// signal.
    items: Vec<Option<(u64, Cursor)>>,
}

/// Checks one channel's deliveries against what was published (numbers
/// `1..=last`, with the cursors each publish answered): in order, each once,
/// none missing, except across a signal, which may skip (never repeat
/// within an epoch). Returns the number of signals.
fn verify(name: &ChannelName, seen: &Seen, published: &BTreeMap<u64, Cursor>) -> usize {
    let mut expected_next = 1u64;
    let mut signals = 0;
    let mut after_signal = false;
    for item in &seen.items {
        match item {
            None => {
                signals += 1;
                after_signal = true;
            }
            Some((number, cursor)) => {
                if after_signal {
                    // A signal says where delivery goes on: anywhere.
                    after_signal = false;
                } else {
                    assert_eq!(
                        *number, expected_next,
                        "{name}: message {number} where {expected_next} was due, without a signal: {seen:?}"
                    );
                }
                // A cursor of the publish's epoch is the publish's cursor.
                let answered = published[number];
                if answered.epoch() == cursor.epoch() {
                    assert_eq!(*cursor, answered, "{name}: message {number}'s cursor");
                }
                expected_next = number + 1;
            }
        }
    }
    let last = published.keys().next_back().copied().unwrap_or(0);
    assert_eq!(
        expected_next,
        last + 1,
        "{name}: the last message never came: {seen:?}"
    );
    signals
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_kill_and_migration_lose_nothing() {
    let Some(mut cluster) = Cluster::start().await else {
        return;
    };
    let prefix = prefix();
    let a = cluster.hub(&prefix, |c| c).await;
    let b = cluster.hub(&prefix, |c| c).await;
    let channels = spread(&cluster, &prefix, 3).await;
    // Which primary each channel starts on.
    let port = cluster.servers[0].port();
    let mut shards = Vec::new();
    for name in &channels {
        let slot = keyslot(port, &format!("{prefix}:{{{name}}}:meta")).await;
        shards.push(cluster.owner(slot, &[]).await.0.id);
    }
    // Subscribers on both nodes, each channel.
    let seen: Vec<Arc<Mutex<Seen>>> = (0..channels.len() * 2)
        .map(|_| Arc::new(Mutex::new(Seen::default())))
        .collect();
    let mut readers = Vec::new();
    for (i, name) in channels.iter().enumerate() {
        for (j, hub) in [&a, &b].into_iter().enumerate() {
            let mut subscription = hub.subscribe(name, Start::Live).await.unwrap();
            let seen = seen[i * 2 + j].clone();
            readers.push(tokio::spawn(async move {
                while let Some(item) = subscription.next().await {
                    let entry = match item {
                        Item::Message(message) => {
                            let number = std::str::from_utf8(message.data())
                                .unwrap()
                                .parse()
                                .unwrap();
                            Some((number, message.cursor()))
                        }
                        Item::Signal(_) => None,
                    };
                    seen.lock().unwrap().items.push(entry);
                }
            }));
        }
    }
    // The publisher: round after round over every channel, each publish
    // retried with its idempotency key until it answers.
    let published: Arc<Mutex<Vec<BTreeMap<u64, Cursor>>>> =
        Arc::new(Mutex::new(vec![BTreeMap::new(); channels.len()]));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let publisher = {
        let (publisher_hub, channels, published, stop, failures) = (
            a.clone(),
            channels.clone(),
            published.clone(),
            stop.clone(),
            failures.clone(),
        );
        tokio::spawn(async move {
            for number in 1u64.. {
                for (i, name) in channels.iter().enumerate() {
                    let key: IdempotencyKey = format!("{name}-{number}").parse().unwrap();
                    loop {
                        let publication =
                            Publication::new(number.to_string()).with_key(key.clone());
                        match publisher_hub.publish(name, publication).await {
                            Ok(cursor) => {
                                published.lock().unwrap()[i].insert(number, cursor);
                                break;
                            }
                            Err(_) => {
                                failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                }
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let rounds = || published.lock().unwrap()[0].len();
    let wait_rounds = async |more: usize| {
        let target = rounds() + more;
        within("the publisher to go on", async {
            while rounds() < target {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    };
    wait_rounds(5).await;

    // 1. A clean failover of the shard holding channels[0].
    let slot0 = keyslot(port, &format!("{prefix}:{{{}}}:meta", channels[0])).await;
    let (_, replicas) = cluster.owner(slot0, &[]).await;
    cluster.failover(replicas[0], &[]).await;
    wait_rounds(10).await;

    // 2. SIGKILL of the primary holding the last channel.
    let last = channels.last().unwrap();
    let slot_last = keyslot(port, &format!("{prefix}:{{{last}}}:meta")).await;
    let (victim, _) = cluster.owner(slot_last, &[]).await;
    cluster.kill(victim.port).await;
    let dead = [victim.port];
    // Health covers every shard: a shard gone (then a new primary) makes
    // both nodes unhealthy, with the reason.
    within("the nodes to notice the dead primary", async {
        while a.health().healthy || b.health().healthy {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let reason = a.health().reason.unwrap();
    assert!(
        reason.contains("cluster primaries")
            || reason.contains("probe")
            || reason.contains("Redis"),
        "{reason}"
    );
    cluster.settled(&dead).await;
    wait_rounds(10).await;

    // 3. The slot of channels[1] moves to another primary, the publisher
    // writing to it all along.
    let alive = cluster
        .servers
        .iter()
        .find(|s| s.port() != victim.port)
        .unwrap()
        .port();
    let slot1 = keyslot(alive, &format!("{prefix}:{{{}}}:meta", channels[1])).await;
    let (owner, _) = cluster.owner(slot1, &dead).await;
    let nodes = cluster.settled(&dead).await;
    let target = nodes
        .iter()
        .find(|n| n.primary && !n.failed && !n.slots.is_empty() && n.id != owner.id)
        .unwrap()
        .clone();
    cluster.migrate(slot1, &target, &dead).await;
    wait_rounds(10).await;

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    within("the publisher to stop", publisher).await.unwrap();
    let published = published.lock().unwrap().clone();
    // Every subscriber gets to the last message.
    let behind = || {
        seen.iter()
            .enumerate()
            .filter_map(|(k, seen)| {
                let last = published[k / 2].keys().next_back().copied().unwrap();
                let seen = seen.lock().unwrap();
                let done = seen.items.iter().flatten().any(|(n, _)| *n == last);
                let tail: Vec<_> = seen.items.iter().rev().take(3).collect();
                (!done).then(|| {
                    format!(
                        "{} on node {}: last {last}, saw {tail:?}",
                        channels[k / 2],
                        k % 2
                    )
                })
            })
            .collect::<Vec<_>>()
    };
    let began = tokio::time::Instant::now();
    let deadline = began + common::PATIENCE;
    let mut report = began;
    while !behind().is_empty() {
        if report.elapsed() > Duration::from_secs(2) {
            report = tokio::time::Instant::now();
            eprintln!(
                "after {:?}: {:#?} {:?} {:?}",
                began.elapsed(),
                behind(),
                a.health(),
                b.health()
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "subscribers behind: {:#?}",
            behind()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut signals = 0;
    for (k, seen) in seen.iter().enumerate() {
        let got = verify(&channels[k / 2], &seen.lock().unwrap(), &published[k / 2]);
        // The rollback rule per shard: the channels of the shards that
        // failed over were reset; those of the shard that did not, and
        // whose slot stayed, were not.
        let shard = &shards[k / 2];
        if *shard == shards[0] {
            assert!(
                got > 0,
                "{}: no reset after its shard failed over",
                channels[k / 2]
            );
        } else if *shard != *shards.last().unwrap() && k / 2 != 1 {
            assert_eq!(
                got,
                0,
                "{}: a signal on a shard that did not fail over",
                channels[k / 2]
            );
        }
        signals += got;
    }
    println!(
        "{} channels, {} rounds, {} failed publishes retried, {signals} signals",
        channels.len(),
        published[0].len(),
        failures.load(std::sync::atomic::Ordering::Relaxed)
    );
    for reader in readers {
        reader.abort();
    }
    // The node is healthy again on the new set of primaries.
    within("both nodes to be healthy", async {
        while !(a.health().healthy && b.health().healthy) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let _: &RedisHub = &a;
}

/// Ephemeral publishes and presence on a cluster: sharded like stored
/// notifications (`SPUBLISH` from the scripts and the ephemeral publish),
/// so a subscriber on the other node gets each, on channels of every shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_messages_and_presence_reach_other_nodes_on_every_shard() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let prefix = prefix();
    let (a, b) = (
        cluster.hub(&prefix, |c| c).await,
        cluster.hub(&prefix, |c| c).await,
    );
    for name in spread(&cluster, &prefix, 1).await {
        let mut live = b.subscribe(&name, Start::Live).await.unwrap();
        // A stored message through b's sharded subscription: b listens.
        let first = a.publish(&name, Publication::new("stored")).await.unwrap();
        assert!(
            matches!(within("stored", live.next()).await, Some(Item::Message(m)) if m.cursor() == first)
        );
        a.publish(&name, Publication::new("typing").ephemeral())
            .await
            .unwrap();
        match within("the ephemeral message", live.next()).await {
            Some(Item::Message(m)) => {
                assert!(m.is_ephemeral(), "{name}");
                assert_eq!(m.data().as_ref(), b"typing");
                assert_eq!(m.cursor(), first, "{name}: it follows the stored one");
            }
            other => panic!("{name}: {other:?}"),
        }
        let present = a
            .enter(&name, push_core::Member::new(Some("alice"), "sse"))
            .await
            .unwrap();
        match within("the join", live.next()).await {
            Some(Item::Message(m)) => {
                assert_eq!(m.event().unwrap().as_str(), push_core::JOIN_EVENT, "{name}");
            }
            other => panic!("{name}: {other:?}"),
        }
        let snapshot = b
            .presence(
                &name,
                push_core::PresencePage {
                    after: None,
                    limit: 10,
                },
            )
            .await
            .unwrap();
        assert_eq!(snapshot.user_count, 1, "{name}");
        drop(present);
        match within("the leave", live.next()).await {
            Some(Item::Message(m)) => {
                assert_eq!(
                    m.event().unwrap().as_str(),
                    push_core::LEAVE_EVENT,
                    "{name}"
                );
            }
            other => panic!("{name}: {other:?}"),
        }
        // Nothing of it in the stream.
        let batch = b.read(&name, Start::Earliest, 10).await.unwrap();
        assert_eq!(batch.messages.len(), 1, "{name}");
    }
}
