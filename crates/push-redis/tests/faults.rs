//! The Redis hub when Redis misbehaves: connections killed mid-stream,
//! Redis restarted empty, Redis down.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{RedisServer, hub, prefix, within};
use futures_util::StreamExt as _;
use push_core::{ChannelName, Error, Hub, Item, Publication, Signal, Start};
use push_redis::RedisSubscription;

fn channel(name: &str) -> ChannelName {
    name.parse().unwrap()
}

fn data(item: &Item) -> Option<String> {
    match item {
        Item::Message(message) => Some(String::from_utf8(message.data().to_vec()).unwrap()),
        Item::Signal(_) => None,
    }
}

/// Collects what `subscription` yields until `done` says so.
async fn collect_until(
    subscription: &mut RedisSubscription,
    mut done: impl FnMut(&[Item]) -> bool,
) -> Vec<Item> {
    let mut items = Vec::new();
    within("the subscriber to catch up", async {
        while !done(&items) {
            items.push(subscription.next().await.expect("the subscription ended"));
        }
    })
    .await;
    items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_lose_no_message() {
    let Some(server) = RedisServer::own().await else {
        return;
    };
    let prefix = prefix();
    let (node_a, node_b) = (
        hub(&server, &prefix, |c| c).await,
        hub(&server, &prefix, |c| c).await,
    );
    let news = channel("news");
    let mut subscribers = Vec::new();
    for node in [&node_a, &node_a, &node_b] {
        subscribers.push(node.subscribe(&news, Start::Live).await.unwrap());
    }
    // A steady stream of publishes from B, recording which were confirmed.
    let confirmed = Arc::new(Mutex::new(Vec::new()));
    let publisher = {
        let (node, confirmed, news) = (node_b.clone(), confirmed.clone(), news.clone());
        tokio::spawn(async move {
            for i in 0..300u32 {
                let text = format!("{i:04}");
                if node
                    .publish(&news, Publication::new(text.clone()))
                    .await
                    .is_ok()
                {
                    confirmed.lock().unwrap().push(text);
                }
                tokio::task::yield_now().await;
            }
        })
    };
    // Kill every connection a few times while it runs.
    for _ in 0..3 {
        let target = confirmed.lock().unwrap().len() + 40;
        while confirmed.lock().unwrap().len() < target.min(280) && !publisher.is_finished() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        server.command(&["CLIENT", "KILL", "TYPE", "pubsub"]).await;
        server.command(&["CLIENT", "KILL", "TYPE", "normal"]).await;
    }
    within("the publisher", publisher).await.unwrap();
    let marker = node_b.publish(&news, Publication::new("end")).await;
    let marker = match marker {
        Ok(cursor) => cursor,
        // The connection manager may still be reconnecting: once more.
        Err(_) => node_b
            .publish(&news, Publication::new("end"))
            .await
            .unwrap(),
    };
    let confirmed = confirmed.lock().unwrap().clone();
    assert!(
        confirmed.len() > 200,
        "too few confirmed: {}",
        confirmed.len()
    );
    for (n, subscriber) in subscribers.iter_mut().enumerate() {
        let items = collect_until(subscriber, |items| {
            items
                .last()
                .is_some_and(|i| data(i).as_deref() == Some("end"))
        })
        .await;
        assert!(
            items.iter().all(|i| matches!(i, Item::Message(_))),
            "subscriber {n} got a signal"
        );
        let got: Vec<String> = items
            .iter()
            .filter_map(data)
            .filter(|d| d != "end")
            .collect();
        // In order, once each, and every confirmed publish among them (an
        // unconfirmed one may or may not have happened).
        let mut sorted = got.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(got, sorted, "subscriber {n}: out of order or repeated");
        let seen: HashSet<&String> = got.iter().collect();
        let missing: Vec<&String> = confirmed.iter().filter(|c| !seen.contains(c)).collect();
        assert!(missing.is_empty(), "subscriber {n} missed {missing:?}");
        let last = items.last().unwrap();
        assert_eq!(last.cursor(), marker);
    }
}

#[tokio::test]
async fn a_restarted_empty_redis_resets_every_subscriber() {
    let Some(mut server) = RedisServer::own().await else {
        return;
    };
    let prefix = prefix();
    let node = hub(&server, &prefix, |c| c).await;
    let other = hub(&server, &prefix, |c| c).await;
    let news = channel("news");
    let mut subscribers = vec![
        node.subscribe(&news, Start::Live).await.unwrap(),
        other.subscribe(&news, Start::Live).await.unwrap(),
    ];
    let before = node
        .publish(&news, Publication::new("before"))
        .await
        .unwrap();
    for subscriber in &mut subscribers {
        let items = collect_until(subscriber, |items| !items.is_empty()).await;
        assert_eq!(data(&items[0]).as_deref(), Some("before"));
    }
    server.restart().await;
    // Nothing is published: the nodes notice on reconnecting.
    for subscriber in &mut subscribers {
        let items = collect_until(subscriber, |items| !items.is_empty()).await;
        let Item::Signal(Signal::Reset(reset)) = &items[0] else {
            panic!("expected a reset, got {:?}", items[0]);
        };
        assert_eq!(reset.since, before);
        assert_ne!(reset.resume.epoch(), before.epoch());
    }
    let after = loop {
        // The command connection reconnects on its own schedule.
        match node.publish(&news, Publication::new("after")).await {
            Ok(cursor) => break cursor,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    for subscriber in &mut subscribers {
        let items = collect_until(subscriber, |items| !items.is_empty()).await;
        assert_eq!(data(&items[0]).as_deref(), Some("after"));
        assert_eq!(items[0].cursor(), after);
    }
    // An old cursor read from anywhere: a reset, never silence.
    let batch = other.read(&news, Start::After(before), 10).await.unwrap();
    assert!(matches!(batch.signal, Some(Signal::Reset(_))));
}

#[tokio::test]
async fn with_redis_down_publishing_fails_and_subscribers_recover() {
    let Some(mut server) = RedisServer::own().await else {
        return;
    };
    let node = hub(&server, &prefix(), |c| c).await;
    let news = channel("news");
    let mut subscriber = node.subscribe(&news, Start::Live).await.unwrap();
    node.publish(&news, Publication::new("up")).await.unwrap();
    collect_until(&mut subscriber, |items| !items.is_empty()).await;
    server.stop().await;
    // Sent before the node saw the connection close, a publish may or may
    // not have reached Redis as far as the node can tell…
    let failed = within(
        "a publish to fail",
        node.publish(&news, Publication::new("lost")),
    )
    .await;
    assert!(
        matches!(
            failed,
            Err(Error::Unavailable(_) | Error::OutcomeUnknown(_))
        ),
        "{failed:?}"
    );
    // … once it knows Redis is gone, a publish certainly did not happen.
    within("the node to see Redis gone", async {
        while node.health().redis_answered {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let failed = within(
        "a publish to fail",
        node.publish(&news, Publication::new("lost")),
    )
    .await;
    assert!(matches!(failed, Err(Error::Unavailable(_))), "{failed:?}");
    let read = within("a read to fail", node.read(&news, Start::Earliest, 10)).await;
    assert!(matches!(read, Err(Error::Unavailable(_))), "{read:?}");
    server.restart().await;
    let back = loop {
        match node.publish(&news, Publication::new("back")).await {
            Ok(cursor) => break cursor,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    // The history is new (persistence is off): a reset, then the message;
    // "lost" was never published.
    let items = collect_until(&mut subscriber, |items| {
        items.iter().any(|i| data(i).as_deref() == Some("back"))
    })
    .await;
    assert!(
        matches!(items[0], Item::Signal(Signal::Reset(_))),
        "{items:?}"
    );
    assert!(items.iter().all(|i| data(i).as_deref() != Some("lost")));
    assert_eq!(items.last().unwrap().cursor(), back);
}

#[tokio::test]
async fn the_first_publish_after_a_redis_restart_succeeds() {
    let Some(mut server) = RedisServer::own().await else {
        return;
    };
    let prefix = prefix();
    let (node, other) = (
        hub(&server, &prefix, |c| c).await,
        hub(&server, &prefix, |c| c).await,
    );
    let news = channel("news");
    node.publish(&news, Publication::new("before"))
        .await
        .unwrap();
    // Several times over, so that no lucky timing passes it: each node's
    // first command after Redis is back (it answers PING) succeeds.
    for round in 0..3 {
        server.restart().await;
        let published = node
            .publish(&news, Publication::new(format!("after {round}")))
            .await;
        assert!(published.is_ok(), "round {round}: {published:?}");
        let read = other.read(&news, Start::Earliest, 10).await;
        assert!(read.is_ok(), "round {round}: {read:?}");
        let messages = read.unwrap().messages;
        assert_eq!(messages.len(), 1, "round {round}");
        assert_eq!(messages[0].cursor(), published.unwrap());
    }
}
