//! Redis coming back with older data than it acknowledged (restarted from
//! an older snapshot; a lagging replica promoted does the same): the
//! channel's history goes back, and the hub must neither hand out a cursor
//! a second time nor let any subscriber miss it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;

use common::{RedisServer, hub, prefix, within};
use futures_util::StreamExt as _;
use push_core::{ChannelName, Cursor, Hub, Item, Publication, Signal, Start};
use push_redis::{RedisHub, RedisSubscription};

fn channel(name: &str) -> ChannelName {
    name.parse().unwrap()
}

fn text(item: &Item) -> Option<String> {
    match item {
        Item::Message(message) => Some(String::from_utf8(message.data().to_vec()).unwrap()),
        Item::Signal(_) => None,
    }
}

async fn publish(node: &RedisHub, channel: &ChannelName, data: &str) -> Cursor {
    let published = node
        .publish(channel, Publication::new(data.to_owned()))
        .await;
    published.unwrap_or_else(|err| panic!("publishing {data}: {err}"))
}

/// The next `count` items of `subscription`.
async fn take(subscription: &mut RedisSubscription, count: usize) -> Vec<Item> {
    let mut items = Vec::new();
    within("the subscriber's items", async {
        while items.len() < count {
            items.push(subscription.next().await.expect("the subscription ended"));
        }
    })
    .await;
    items
}

/// Publishes `old0..old4`, saves a snapshot, publishes `old5..old9`, and
/// brings Redis back from the snapshot: `old5..old9` are lost. Returns
/// the cursors handed out.
async fn publish_then_roll_back(
    server: &mut RedisServer,
    node: &RedisHub,
    news: &ChannelName,
) -> Vec<Cursor> {
    let mut issued = Vec::new();
    for i in 0..5 {
        issued.push(publish(node, news, &format!("old{i}")).await);
    }
    assert!(server.command(&["SAVE"]).await.starts_with("+OK"));
    for i in 5..10 {
        issued.push(publish(node, news, &format!("old{i}")).await);
    }
    // kill -9, and start again from the snapshot (same directory).
    server.restart().await;
    issued
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_resets_every_subscriber_and_never_reissues_a_cursor() {
    let Some(mut server) = RedisServer::own().await else {
        return;
    };
    let prefix = prefix();
    let (a, b) = (
        hub(&server, &prefix, |c| c).await,
        hub(&server, &prefix, |c| c).await,
    );
    let news = channel("news");
    let known = b.read(&news, Start::Live, 0).await.unwrap().cursor;
    let mut on_b = b.subscribe(&news, Start::After(known)).await.unwrap();
    let mut issued = Vec::new();
    for i in 0..5 {
        issued.push(publish(&a, &news, &format!("old{i}")).await);
    }
    assert!(server.command(&["SAVE"]).await.starts_with("+OK"));
    for i in 5..10 {
        issued.push(publish(&a, &news, &format!("old{i}")).await);
    }
    // B's subscriber follows along (so B's node caches old5..old9).
    let before: Vec<String> = take(&mut on_b, 10).await.iter().filter_map(text).collect();
    let expected: Vec<String> = (0..10).map(|i| format!("old{i}")).collect();
    assert_eq!(before, expected);
    server.restart().await;
    for i in 0..7 {
        issued.push(publish(&a, &news, &format!("new{i}")).await);
    }

    // No cursor handed out twice.
    let distinct: HashSet<String> = issued.iter().map(Cursor::to_string).collect();
    assert_eq!(distinct.len(), issued.len(), "{issued:?}");

    // B's subscriber: a reset (not silence, not a message of the lost
    // history from the node's cache), then what Redis retains, the new
    // messages once each, in order, under the cursors the publishes got.
    let items = take(&mut on_b, 1 + 5 + 7).await;
    let Item::Signal(Signal::Reset(reset)) = &items[0] else {
        panic!("expected a reset first, got {items:?}");
    };
    assert_eq!(reset.since, issued[9]);
    assert_ne!(reset.resume.epoch(), issued[9].epoch());
    let after: Vec<String> = items[1..].iter().filter_map(text).collect();
    let expected: Vec<String> = (0..5)
        .map(|i| format!("old{i}"))
        .chain((0..7).map(|i| format!("new{i}")))
        .collect();
    assert_eq!(after, expected, "{items:?}");
    for (item, cursor) in items[6..].iter().zip(&issued[10..]) {
        assert_eq!(item.cursor(), *cursor);
    }

    // A client resuming from a cursor of the lost part, on either node,
    // gets a reset (and so does one from the part that survived: the
    // epoch is new).
    for node in [&a, &b] {
        for since in [issued[7], issued[2]] {
            let batch = node.read(&news, Start::After(since), 100).await.unwrap();
            assert!(
                matches!(batch.signal, Some(Signal::Reset(_))),
                "{since}: {batch:?}"
            );
            let got: Vec<String> = batch
                .messages
                .iter()
                .map(|m| String::from_utf8(m.data().to_vec()).unwrap())
                .collect();
            assert_eq!(got, expected);
        }
    }
}

#[tokio::test]
async fn a_node_started_after_a_rollback_hands_out_new_cursors() {
    let Some(mut server) = RedisServer::own().await else {
        return;
    };
    let prefix = prefix();
    let news = channel("news");
    let issued = {
        let a = hub(&server, &prefix, |c| c).await;
        publish_then_roll_back(&mut server, &a, &news).await
    };
    // A node that saw nothing before publishes first.
    let fresh = hub(&server, &prefix, |c| c).await;
    let first = publish(&fresh, &news, "new0").await;
    assert!(!issued.contains(&first), "{first} was handed out before");
    assert_ne!(first.epoch(), issued[0].epoch());
    assert_eq!(first.position().major(), 6);
    // Its readers: a reset for any old cursor, then what is retained.
    let batch = fresh
        .read(&news, Start::After(issued[7]), 100)
        .await
        .unwrap();
    assert!(matches!(batch.signal, Some(Signal::Reset(_))), "{batch:?}");
    assert_eq!(batch.messages.len(), 6);
    assert_eq!(batch.messages[5].cursor(), first);
    // And a subscriber there from an old cursor as well.
    let mut subscription = fresh
        .subscribe(&news, Start::After(issued[9]))
        .await
        .unwrap();
    let items = take(&mut subscription, 7).await;
    assert!(
        matches!(items[0], Item::Signal(Signal::Reset(_))),
        "{items:?}"
    );
    assert_eq!(items[6].cursor(), first);
}

#[tokio::test]
async fn a_read_after_a_rollback_resets_live_subscribers_without_a_publish() {
    let Some(mut server) = RedisServer::own().await else {
        return;
    };
    let prefix = prefix();
    let (a, b) = (
        hub(&server, &prefix, |c| c).await,
        hub(&server, &prefix, |c| c).await,
    );
    let news = channel("news");
    let mut on_b = b.subscribe(&news, Start::Live).await.unwrap();
    let mut issued = Vec::new();
    for i in 0..5 {
        issued.push(publish(&a, &news, &format!("old{i}")).await);
    }
    assert!(server.command(&["SAVE"]).await.starts_with("+OK"));
    for i in 5..10 {
        issued.push(publish(&a, &news, &format!("old{i}")).await);
    }
    assert_eq!(take(&mut on_b, 10).await.len(), 10);
    server.restart().await;
    // Nothing is published: the node learns the new epoch on reconnecting
    // (or from a read's announcement) and its subscriber is reset.
    let items = take(&mut on_b, 1).await;
    let Item::Signal(Signal::Reset(reset)) = &items[0] else {
        panic!("expected a reset, got {items:?}");
    };
    assert_eq!(reset.since, issued[9]);
    let rest = take(&mut on_b, 5).await;
    let got: Vec<String> = rest.iter().filter_map(text).collect();
    assert_eq!(got, ["old0", "old1", "old2", "old3", "old4"]);
}
