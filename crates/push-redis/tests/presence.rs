//! Presence across two nodes on one Redis: a user's first connection on
//! any node is one join, seen by subscribers on both; its second, on the
//! other node, announces nothing; its leave waits for the last; a poller's
//! lease lapses into a leave; the snapshot is the same from either node;
//! a node gone without a goodbye loses its connections within the lease.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use futures_util::StreamExt as _;
use push_core::{ChannelName, Hub, Item, Member, PresencePage, Start};

use common::{RedisServer, hub, prefix, within};

fn room() -> ChannelName {
    "room".parse().unwrap()
}

fn page() -> PresencePage {
    PresencePage {
        after: None,
        limit: 10,
    }
}

/// `(event, user, technique)` of the next item: a join or a leave.
async fn next_change(
    subscription: &mut (impl futures_util::Stream<Item = Item> + Unpin),
) -> (String, String, String) {
    match within("a join or leave", subscription.next()).await {
        Some(Item::Message(m)) if m.is_ephemeral() => {
            let data: serde_json::Value = m.json().unwrap();
            (
                m.event().unwrap().as_str().to_owned(),
                data["user"].as_str().unwrap().to_owned(),
                data["technique"].as_str().unwrap().to_owned(),
            )
        }
        other => panic!("{other:?}"),
    }
}

fn change(event: &str, user: &str, technique: &str) -> (String, String, String) {
    (event.to_owned(), user.to_owned(), technique.to_owned())
}

#[tokio::test]
async fn joins_and_leaves_once_across_nodes_and_leases_lapse() {
    let Some(server) = RedisServer::any().await else {
        return;
    };
    let prefix = prefix();
    let lease = Duration::from_millis(600);
    let a = hub(&server, &prefix, |c| c.with_presence_lease(lease)).await;
    let b = hub(&server, &prefix, |c| c.with_presence_lease(lease)).await;
    let mut on_a = a.subscribe(&room(), Start::Live).await.unwrap();
    let mut on_b = b.subscribe(&room(), Start::Live).await.unwrap();
    // Both listen (a stored message through each node's Pub/Sub).
    a.publish(&room(), push_core::Publication::new("ready"))
        .await
        .unwrap();
    for subscription in [&mut on_a, &mut on_b] {
        assert!(matches!(
            within("ready", subscription.next()).await,
            Some(Item::Message(_))
        ));
    }

    let alice_a = a
        .enter(&room(), Member::new(Some("alice"), "sse"))
        .await
        .unwrap();
    assert_eq!(
        next_change(&mut on_a).await,
        change("push.join", "alice", "sse")
    );
    assert_eq!(
        next_change(&mut on_b).await,
        change("push.join", "alice", "sse")
    );
    let alice_b = b
        .enter(&room(), Member::new(Some("alice"), "ws"))
        .await
        .unwrap();
    let _anonymous = b.enter(&room(), Member::anonymous("ws")).await.unwrap();
    b.touch(
        &room(),
        "poll:u:bob",
        Member::new(Some("bob"), "poll"),
        lease,
    )
    .await
    .unwrap();
    assert_eq!(
        next_change(&mut on_a).await,
        change("push.join", "bob", "poll")
    );
    for node in [&a, &b] {
        let snapshot = node.presence(&room(), page()).await.unwrap();
        let users: Vec<_> = snapshot.users.iter().map(|u| u.user.as_str()).collect();
        assert_eq!(users, ["alice", "bob"]);
        assert_eq!(snapshot.users[0].connections.values().sum::<u64>(), 2);
        assert_eq!(snapshot.anonymous["ws"], 1);
    }
    drop(alice_a);
    drop(alice_b);
    // Bob stops polling: his lease lapses; alice's last connection went.
    let mut changes = vec![next_change(&mut on_a).await, next_change(&mut on_a).await];
    changes.sort();
    assert_eq!(
        changes,
        [
            change("push.leave", "alice", "ws"),
            change("push.leave", "bob", "poll")
        ]
    );
    assert_eq!(b.presence(&room(), page()).await.unwrap().user_count, 0);

    // A node that goes without a goodbye: its connection lapses on the
    // other node's watch.
    let carol = b
        .enter(&room(), Member::new(Some("carol"), "sse"))
        .await
        .unwrap();
    assert_eq!(
        next_change(&mut on_a).await,
        change("push.join", "carol", "sse")
    );
    std::mem::forget(carol);
    drop(on_b);
    drop(b);
    assert_eq!(
        next_change(&mut on_a).await,
        change("push.leave", "carol", "sse")
    );
}

#[tokio::test]
async fn entries_past_the_limit_are_served_but_not_counted() {
    let Some(server) = RedisServer::any().await else {
        return;
    };
    let prefix = prefix();
    let node = hub(&server, &prefix, |c| c.with_max_presence_entries(2)).await;
    let mut held = Vec::new();
    for user in ["a", "b", "c"] {
        held.push(
            node.enter(&room(), Member::new(Some(user), "ws"))
                .await
                .unwrap(),
        );
    }
    let snapshot = node.presence(&room(), page()).await.unwrap();
    let users: Vec<_> = snapshot.users.iter().map(|u| u.user.as_str()).collect();
    assert_eq!(users, ["a", "b"]);
}
