//! Ephemeral publishes across nodes on one Redis: a live subscriber on
//! another node gets the message once, in its place (after the stored
//! message it follows, before the next), marked ephemeral, JSON kept; the
//! stream never holds it, so a read or a resume never shows it; a node with
//! nobody watching takes it without error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use futures_util::StreamExt as _;
use push_core::{ChannelName, ContentKind, Hub, Item, Publication, Start};

use common::{RedisServer, hub, prefix, within};

fn channel(name: &str) -> ChannelName {
    name.parse().unwrap()
}

/// `(data, ephemeral, kind, cursor)` of the next item, a message.
async fn next_message(
    subscription: &mut (impl futures_util::Stream<Item = Item> + Unpin),
) -> (String, bool, ContentKind, push_core::Cursor) {
    match within("a message", subscription.next()).await {
        Some(Item::Message(m)) => (
            String::from_utf8(m.data().to_vec()).unwrap(),
            m.is_ephemeral(),
            m.kind(),
            m.cursor(),
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_ephemeral_publish_reaches_live_subscribers_on_other_nodes_in_place_and_is_never_stored()
{
    let Some(server) = RedisServer::any().await else {
        return;
    };
    let prefix = prefix();
    let a = hub(&server, &prefix, |c| c).await;
    let b = hub(&server, &prefix, |c| c).await;
    let chat = channel("chat");
    // Nobody anywhere: fine, nothing stored.
    a.publish(&chat, Publication::new("lost").ephemeral())
        .await
        .unwrap();
    let mut live = b.subscribe(&chat, Start::Live).await.unwrap();
    // A stored message through b's Pub/Sub proves b listens.
    let one = a.publish(&chat, Publication::new("1")).await.unwrap();
    assert_eq!(
        next_message(&mut live).await,
        ("1".into(), false, ContentKind::Bytes, one)
    );
    a.publish(&chat, Publication::json("{\"x\": 3}").unwrap().ephemeral())
        .await
        .unwrap();
    a.publish(&chat, Publication::new("typing").ephemeral())
        .await
        .unwrap();
    let two = a.publish(&chat, Publication::new("2")).await.unwrap();
    assert_eq!(
        next_message(&mut live).await,
        ("{\"x\":3}".into(), true, ContentKind::Json, one)
    );
    assert_eq!(
        next_message(&mut live).await,
        ("typing".into(), true, ContentKind::Bytes, one)
    );
    assert_eq!(
        next_message(&mut live).await,
        ("2".into(), false, ContentKind::Bytes, two)
    );
    // The stream holds the stored two, on either node.
    for node in [&a, &b] {
        let batch = node.read(&chat, Start::Earliest, 10).await.unwrap();
        let datas: Vec<_> = batch.messages.iter().map(|m| m.data().clone()).collect();
        assert_eq!(datas, ["1", "2"]);
        assert!(batch.signal.is_none());
    }
}
