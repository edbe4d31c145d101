//! The Redis hub against a real redis-server: the continuity properties
//! every hub keeps (push_core::testing, the same code as the memory hub's),
//! and two nodes sharing channels.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{RedisServer, hub, prefix, within};
use futures_util::StreamExt as _;
use proptest::prelude::*;
use push_core::testing::{self, Op, Options, Report};
use push_core::{ChannelName, Hub, Item, Publication, Signal, Start};

fn channel(name: &str) -> ChannelName {
    name.parse().unwrap()
}

async fn next_message(subscription: &mut push_redis::RedisSubscription) -> String {
    match within("a message", subscription.next()).await {
        Some(Item::Message(message)) => String::from_utf8(message.data().to_vec()).unwrap(),
        other => panic!("expected a message, got {other:?}"),
    }
}

fn check(server: &RedisServer, max_messages: usize, ops: &[Op]) -> Result<Report, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let hub = hub(server, &prefix(), |c| {
            c.with_max_messages(max_messages).with_max_message_bytes(8)
        })
        .await;
        let options = Options::default().with_patience(Duration::from_secs(5));
        testing::check(&hub, &channel("c"), ops, &options).await
    })
}

#[test]
fn redis_hub_keeps_continuity() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let Some(server) = runtime.block_on(RedisServer::any()) else {
        return;
    };
    // MAXLEN ~ trims whole stream nodes (100 entries by default): small
    // limits still let the history run out, as the gaps need.
    let config = ProptestConfig {
        cases: 128,
        max_shrink_time: 60_000,
        ..ProptestConfig::default()
    };
    let total = std::sync::Mutex::new(Report::default());
    proptest!(config, |(max_messages in 1usize..8, ops in testing::ops(60, 7, 150))| {
        let result = check(&server, max_messages, &ops);
        prop_assert!(result.is_ok(), "{}", result.as_ref().unwrap_err());
        *total.lock().unwrap() += result.unwrap();
    });
    // The scenarios must reach the paths the properties speak of.
    let total = total.into_inner().unwrap();
    println!("{total:?}");
    assert!(
        total.gaps > 20 && total.resets > 20 && total.wakeups > 20,
        "{total:?}"
    );
    drop(server);
}

#[tokio::test]
async fn last_reads_and_subscribes_to_the_newest_retained() {
    let Some(server) = RedisServer::any().await else {
        return;
    };
    let prefix = prefix();
    let (a, b) = (
        hub(&server, &prefix, |c| c).await,
        hub(&server, &prefix, |c| c).await,
    );
    let news = channel("news");
    let mut ids = Vec::new();
    for i in 1..=5 {
        ids.push(
            a.publish(&news, Publication::new(i.to_string()))
                .await
                .unwrap(),
        );
    }
    let datas = |batch: &push_core::Batch| -> Vec<String> {
        batch
            .messages
            .iter()
            .map(|m| String::from_utf8(m.data().to_vec()).unwrap())
            .collect()
    };
    let two = b.read(&news, Start::Last(2), 10).await.unwrap();
    assert_eq!(
        (datas(&two), two.signal, two.more),
        (vec!["4".into(), "5".into()], None, false)
    );
    assert_eq!(two.cursor, ids[4]);
    let one_of_two = b.read(&news, Start::Last(2), 1).await.unwrap();
    assert_eq!(
        (datas(&one_of_two), one_of_two.more),
        (vec!["4".to_owned()], true)
    );
    let all = b.read(&news, Start::Last(50), 10).await.unwrap();
    assert_eq!((all.messages.len(), all.signal), (5, None));
    let none = b.read(&news, Start::Last(0), 10).await.unwrap();
    assert_eq!((none.messages.len(), none.cursor), (0, ids[4]));

    let mut on_b = b.subscribe(&news, Start::Last(2)).await.unwrap();
    let mut on_a = a.subscribe(&news, Start::Last(9)).await.unwrap();
    assert_eq!(next_message(&mut on_b).await, "4");
    assert_eq!(next_message(&mut on_b).await, "5");
    for i in 1..=5 {
        assert_eq!(next_message(&mut on_a).await, i.to_string());
    }
    a.publish(&news, Publication::new("6")).await.unwrap();
    assert_eq!(next_message(&mut on_b).await, "6");
    assert_eq!(next_message(&mut on_a).await, "6");
}

#[tokio::test]
async fn two_nodes_share_channels_cursors_and_history() {
    let Some(server) = RedisServer::any().await else {
        return;
    };
    let prefix = prefix();
    let (a, b) = (
        hub(&server, &prefix, |c| c).await,
        hub(&server, &prefix, |c| c).await,
    );
    let news = channel("news");
    let mut on_b = b.subscribe(&news, Start::Live).await.unwrap();
    let first = a.publish(&news, Publication::new("one")).await.unwrap();
    assert_eq!(next_message(&mut on_b).await, "one");
    a.publish(&news, Publication::new("two")).await.unwrap();
    assert_eq!(next_message(&mut on_b).await, "two");
    // A cursor from A is understood by B, and the other way round.
    let rest = b.read(&news, Start::After(first), 10).await.unwrap();
    assert_eq!(rest.messages.len(), 1);
    assert_eq!(&rest.messages[0].data()[..], b"two");
    let again = a.read(&news, Start::After(rest.cursor), 10).await.unwrap();
    assert!(again.is_empty());
    assert_eq!(again.cursor, rest.cursor);
    // A subscriber on A resuming from B's cursor gets exactly what follows.
    let third = b.publish(&news, Publication::new("three")).await.unwrap();
    let mut on_a = a.subscribe(&news, Start::After(first)).await.unwrap();
    assert_eq!(next_message(&mut on_a).await, "two");
    assert_eq!(next_message(&mut on_a).await, "three");
    assert_eq!(next_message(&mut on_b).await, "three");
    assert!(third > first);
}

#[tokio::test]
async fn a_poller_alternating_nodes_gets_everything_once_in_order() {
    let Some(server) = RedisServer::any().await else {
        return;
    };
    let prefix = prefix();
    let nodes = [
        hub(&server, &prefix, |c| c).await,
        hub(&server, &prefix, |c| c).await,
    ];
    let news = channel("news");
    let mut cursor = nodes[0].read(&news, Start::Live, 10).await.unwrap().cursor;
    let mut got = Vec::new();
    for i in 0..40 {
        nodes[i % 2]
            .publish(&news, Publication::new(format!("{i}")))
            .await
            .unwrap();
        if i % 3 == 0 {
            let batch = nodes[(i / 3) % 2]
                .read(&news, Start::After(cursor), 2)
                .await
                .unwrap();
            assert!(batch.signal.is_none());
            got.extend(
                batch
                    .messages
                    .iter()
                    .map(|m| String::from_utf8(m.data().to_vec()).unwrap()),
            );
            cursor = batch.cursor;
        }
    }
    loop {
        let batch = nodes[got.len() % 2]
            .read(&news, Start::After(cursor), 3)
            .await
            .unwrap();
        if batch.is_empty() {
            break;
        }
        got.extend(
            batch
                .messages
                .iter()
                .map(|m| String::from_utf8(m.data().to_vec()).unwrap()),
        );
        cursor = batch.cursor;
    }
    let expected: Vec<String> = (0..40).map(|i| i.to_string()).collect();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn a_trimmed_history_is_a_gap_with_its_size() {
    let Some(server) = RedisServer::any().await else {
        return;
    };
    let hub = hub(&server, &prefix(), |c| c.with_max_messages(10)).await;
    let news = channel("news");
    let first = hub.publish(&news, Publication::new("0")).await.unwrap();
    for i in 1..1_000 {
        hub.publish(&news, Publication::new(format!("{i}")))
            .await
            .unwrap();
    }
    let batch = hub.read(&news, Start::After(first), 5).await.unwrap();
    let Some(Signal::Gap(gap)) = batch.signal else {
        panic!("expected a gap, got {:?}", batch.signal);
    };
    let first_kept = batch.messages[0].cursor().position().major();
    assert_eq!(gap.missed, Some(first_kept - 2));
    assert!(first_kept > 2 && first_kept <= 1_000 - 9, "{first_kept}");
}

#[tokio::test]
async fn the_node_caches_stay_within_their_byte_budget() {
    let Some(server) = RedisServer::any().await else {
        return;
    };
    let limit = 64 << 10;
    let node = hub(&server, &prefix(), |c| {
        c.with_node_cache_bytes(limit).with_max_messages(10_000)
    })
    .await;
    let names: Vec<ChannelName> = (0..4).map(|i| channel(&format!("big{i}"))).collect();
    let mut subscriptions = Vec::new();
    for name in &names {
        subscriptions.push(node.subscribe(name, Start::Live).await.unwrap());
    }
    let data = "x".repeat(10 << 10);
    for round in 0..20 {
        for name in &names {
            node.publish(name, Publication::new(format!("{round} {data}")))
                .await
                .unwrap();
        }
        // Every subscriber still gets every message, in order (what the
        // cache dropped comes from Redis)…
        for subscription in &mut subscriptions {
            let got = next_message(subscription).await;
            assert!(got.starts_with(&format!("{round} ")), "{round}: {got:.10}");
        }
        // … and the caches together hold at most the budget (and one
        // message more while the notification in flight is counted).
        assert!(
            node.cached_bytes() <= limit + 2 * (11 << 10),
            "{}",
            node.cached_bytes()
        );
    }
    drop(subscriptions);
    within("the caches to be let go", async {
        while node.cached_bytes() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}
