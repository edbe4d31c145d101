//! Presence on the memory hub: streaming connections while their guard
//! lives, pollers while their lease does; a user's first connection is a
//! join and its last a leave, announced once to the live subscribers as
//! ephemeral messages (never stored); anonymous connections are counted,
//! never announced; the snapshot pages users in name order.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use push_core::{
    ChannelName, Hub, Item, ManualClock, Member, MemoryHub, MemoryHubConfig, PresencePage,
    Publication, Start, Timestamp,
};

fn name(s: &str) -> ChannelName {
    ChannelName::new(s).unwrap()
}

fn now<T>(future: impl Future<Output = T>) -> T {
    future.now_or_never().expect("the memory hub never waits")
}

/// `push.join alice sse`-style lines for what the subscription holds now.
fn drain(subscription: &mut (impl futures_util::Stream<Item = Item> + Unpin)) -> Vec<String> {
    let mut seen = Vec::new();
    while let Some(Some(item)) = subscription.next().now_or_never() {
        let Item::Message(m) = item else {
            panic!("{item:?}")
        };
        let Some(event) = m.event() else {
            seen.push(String::from_utf8(m.data().to_vec()).unwrap());
            continue;
        };
        assert!(m.is_ephemeral());
        let data: serde_json::Value = m.json().unwrap();
        seen.push(format!(
            "{} {} {}",
            event.as_str(),
            data["user"].as_str().unwrap(),
            data["technique"].as_str().unwrap()
        ));
    }
    seen
}

fn page(limit: usize) -> PresencePage {
    PresencePage { after: None, limit }
}

#[test]
fn joins_and_leaves_once_per_user_and_anonymous_ones_are_only_counted() {
    let hub = MemoryHub::new();
    let room = name("room");
    let mut watching = now(hub.subscribe(&room, Start::Live)).unwrap();
    let alice_sse = now(hub.enter(&room, Member::new(Some("alice"), "sse"))).unwrap();
    let alice_ws = now(hub.enter(&room, Member::new(Some("alice"), "ws"))).unwrap();
    let anonymous = now(hub.enter(&room, Member::anonymous("sse"))).unwrap();
    now(hub.publish(&room, Publication::new("hello"))).unwrap();
    assert_eq!(drain(&mut watching), ["push.join alice sse", "hello"]);

    let snapshot = now(hub.presence(&room, page(10))).unwrap();
    assert_eq!(snapshot.user_count, 1);
    assert_eq!(snapshot.users[0].user, "alice");
    assert_eq!(snapshot.users[0].connections["sse"], 1);
    assert_eq!(snapshot.users[0].connections["ws"], 1);
    assert_eq!(snapshot.anonymous["sse"], 1);
    assert_eq!(snapshot.connections["sse"], 2);

    drop(alice_sse);
    assert!(drain(&mut watching).is_empty(), "alice is still on ws");
    drop(alice_ws);
    drop(anonymous);
    assert_eq!(drain(&mut watching), ["push.leave alice ws"]);
    assert_eq!(
        now(hub.presence(&room, page(10)))
            .unwrap()
            .connections
            .len(),
        0
    );
    // Never in the history.
    assert_eq!(
        now(hub.read(&room, Start::Earliest, 10))
            .unwrap()
            .messages
            .len(),
        1
    );
}

#[test]
fn a_pollers_lease_keeps_it_present_until_it_lapses() {
    let clock = ManualClock::new(Timestamp::from_unix_millis(1_700_000_000_000));
    let hub = MemoryHub::with_config_and_clock(MemoryHubConfig::default(), clock.clone()).unwrap();
    let room = name("room");
    let mut watching = now(hub.subscribe(&room, Start::Live)).unwrap();
    let ttl = Duration::from_secs(6);
    let bob = || Member::new(Some("bob"), "poll");
    now(hub.touch(&room, "u:bob", bob(), ttl)).unwrap();
    clock.advance(Duration::from_secs(5));
    // Polling again in time: no second join, no leave.
    now(hub.touch(&room, "u:bob", bob(), ttl)).unwrap();
    clock.advance(Duration::from_secs(5));
    assert_eq!(hub.expire_presence(), Some(Duration::from_secs(1)));
    assert_eq!(drain(&mut watching), ["push.join bob poll"]);
    assert_eq!(now(hub.presence(&room, page(10))).unwrap().user_count, 1);
    clock.advance(Duration::from_secs(1));
    assert_eq!(hub.expire_presence(), None);
    assert_eq!(drain(&mut watching), ["push.leave bob poll"]);
    assert_eq!(now(hub.presence(&room, page(10))).unwrap().user_count, 0);
}

#[test]
fn the_snapshot_pages_users_in_name_order() {
    let hub = MemoryHub::new();
    let room = name("room");
    let users = ["dave", "alice", "carol", "bob", "erin"];
    let _present: Vec<_> = users
        .iter()
        .map(|user| now(hub.enter(&room, Member::new(Some(user), "ws"))).unwrap())
        .collect();
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let snapshot = now(hub.presence(&room, PresencePage { after, limit: 2 })).unwrap();
        assert_eq!(snapshot.user_count, 5);
        listed.extend(snapshot.users.iter().map(|u| u.user.clone()));
        match snapshot.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(listed, ["alice", "bob", "carol", "dave", "erin"]);
}
