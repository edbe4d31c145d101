//! Ephemeral publishes on the memory hub: each live subscriber gets one in
//! its place (after every stored message published before it, before every
//! one after), once; nothing of it is stored, counted or resumed; a channel
//! nobody watches is not created; a subscriber too far behind skips the
//! oldest within the channel's bound, and the queue empties as subscribers
//! take or leave.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use futures_util::{FutureExt, StreamExt};
use push_core::{ChannelName, Cursor, Hub, Item, MemoryHub, MemoryHubConfig, Publication, Start};

fn name(s: &str) -> ChannelName {
    ChannelName::new(s).unwrap()
}

fn now<T>(future: impl Future<Output = T>) -> T {
    future.now_or_never().expect("the memory hub never waits")
}

fn stored(hub: &MemoryHub, channel: &ChannelName, data: &str) -> Cursor {
    now(hub.publish(channel, Publication::new(data.to_owned()))).unwrap()
}

fn ephemeral(hub: &MemoryHub, channel: &ChannelName, data: &str) -> Cursor {
    now(hub.publish(channel, Publication::new(data.to_owned()).ephemeral())).unwrap()
}

/// What a subscription holds now: `data` or `~data` for an ephemeral one,
/// with its cursor.
fn drain(
    subscription: &mut (impl futures_util::Stream<Item = Item> + Unpin),
) -> Vec<(String, Cursor)> {
    let mut seen = Vec::new();
    while let Some(Some(item)) = subscription.next().now_or_never() {
        let Item::Message(m) = item else {
            panic!("{item:?}")
        };
        let text = String::from_utf8(m.data().to_vec()).unwrap();
        let mark = if m.is_ephemeral() { "~" } else { "" };
        seen.push((format!("{mark}{text}"), m.cursor()));
    }
    seen
}

fn texts(seen: &[(String, Cursor)]) -> Vec<&str> {
    seen.iter().map(|(text, _)| text.as_str()).collect()
}

#[test]
fn each_live_subscriber_gets_it_once_in_its_place_and_nothing_is_stored() {
    let hub = MemoryHub::new();
    let chat = name("chat");
    let mut early = now(hub.subscribe(&chat, Start::Live)).unwrap();
    let one = stored(&hub, &chat, "1");
    let mut late = now(hub.subscribe(&chat, Start::Live)).unwrap();
    assert_eq!(
        ephemeral(&hub, &chat, "typing"),
        one,
        "answers the head it follows"
    );
    let two = stored(&hub, &chat, "2");

    // The early one had not taken 1 yet: it gets 1, then the ephemeral
    // message (following 1), then 2.
    let seen = drain(&mut early);
    assert_eq!(texts(&seen), ["1", "~typing", "2"]);
    assert_eq!(seen[1].1, one);
    assert_eq!(seen[2].1, two);
    assert_eq!(texts(&drain(&mut late)), ["~typing", "2"]);

    // Not in the history, not counted.
    let all = now(hub.read(&chat, Start::Earliest, 10)).unwrap();
    assert_eq!(all.messages.len(), 2);
    assert!(all.signal.is_none());
    assert_eq!(hub.channel_stats(&chat).unwrap().messages, 2);
    // A subscriber from before it, resuming after 1, does not get it.
    let mut resumed = now(hub.subscribe(&chat, Start::After(one))).unwrap();
    assert_eq!(texts(&drain(&mut resumed)), ["2"]);
}

#[test]
fn nobody_watching_creates_nothing_and_a_new_subscriber_gets_nothing_old() {
    let hub = MemoryHub::new();
    let chat = name("chat");
    ephemeral(&hub, &chat, "lost on nobody");
    assert_eq!(hub.channel_count(), 0);
    stored(&hub, &chat, "1");
    ephemeral(&hub, &chat, "before anyone");
    let mut from_start = now(hub.subscribe(&chat, Start::Earliest)).unwrap();
    assert_eq!(texts(&drain(&mut from_start)), ["1"]);
}

#[test]
fn a_subscriber_behind_skips_the_oldest_within_the_bound_and_the_queue_empties() {
    let message = 2 + MemoryHubConfig::MESSAGE_OVERHEAD;
    let hub =
        MemoryHub::with_config(MemoryHubConfig::default().with_max_ephemeral_bytes(3 * message))
            .unwrap();
    let chat = name("chat");
    let mut slow = now(hub.subscribe(&chat, Start::Live)).unwrap();
    let mut fast = now(hub.subscribe(&chat, Start::Live)).unwrap();
    for n in 10..15 {
        ephemeral(&hub, &chat, &n.to_string());
        assert_eq!(texts(&drain(&mut fast)), [format!("~{n}")]);
    }
    assert_eq!(texts(&drain(&mut slow)), ["~12", "~13", "~14"]);
    // Both took everything: the next one goes to whoever is live then.
    drop(fast);
    ephemeral(&hub, &chat, "99");
    drop(slow);
    let mut after = now(hub.subscribe(&chat, Start::Live)).unwrap();
    assert!(drain(&mut after).is_empty());
}

#[tokio::test]
async fn a_parked_subscriber_is_woken() {
    let hub = MemoryHub::new();
    let chat = name("chat");
    let mut live = hub.subscribe(&chat, Start::Live).await.unwrap();
    let waiting = tokio::spawn(async move { live.next().await });
    tokio::task::yield_now().await;
    ephemeral(&hub, &chat, "hi");
    let Some(Item::Message(m)) = waiting.await.unwrap() else {
        panic!()
    };
    assert!(m.is_ephemeral());
}
