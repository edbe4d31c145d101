//! JSON data on the Redis hub: the kind a message was published with
//! survives the stream (a catch-up read on any node) and Pub/Sub (a live
//! subscriber on another node), the same bytes as JSON and as text stay two
//! messages, and entries and notifications without the kind read as bytes,
//! as they always did.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use futures_util::StreamExt as _;
use push_core::{ChannelName, ContentKind, Error, Hub, Item, Publication, Start};
use push_redis::RedisHub;

use common::{RedisServer, hub, prefix, within};

fn channel(name: &str) -> ChannelName {
    name.parse().unwrap()
}

/// (kind, data as text) of every message `node` retains on `channel`.
async fn stored(node: &RedisHub, channel: &ChannelName) -> Vec<(ContentKind, String)> {
    let batch = node.read(channel, Start::Earliest, 100).await.unwrap();
    batch
        .messages
        .iter()
        .map(|m| (m.kind(), String::from_utf8(m.data().to_vec()).unwrap()))
        .collect()
}

async fn next_message(
    subscription: &mut (impl futures_util::Stream<Item = Item> + Unpin),
) -> (ContentKind, String) {
    match within("a message", subscription.next()).await {
        Some(Item::Message(m)) => (m.kind(), String::from_utf8(m.data().to_vec()).unwrap()),
        other => panic!("{other:?}"),
    }
}

/// Two nodes on one Redis, as behind a load balancer.
async fn two_nodes(server: &RedisServer, prefix: &str) -> (RedisHub, RedisHub) {
    (
        hub(server, prefix, |c| c).await,
        hub(server, prefix, |c| c).await,
    )
}

#[tokio::test]
async fn json_published_on_one_node_is_json_on_another_live_and_from_the_stream() {
    let Some(server) = RedisServer::any().await else {
        return;
    };
    let prefix = prefix();
    let (a, b) = two_nodes(&server, &prefix).await;
    let news = channel("news");
    let mut live = b.subscribe(&news, Start::Live).await.unwrap();
    let published = [
        Publication::json("{ \"a\" : [1, 2.50] }").unwrap(),
        Publication::new("{\"a\":[1,2.50]}"),
        Publication::json("\"hi\"").unwrap(),
        Publication::new("\"hi\""),
    ];
    let expected = [
        (ContentKind::Json, "{\"a\":[1,2.50]}"),
        (ContentKind::Bytes, "{\"a\":[1,2.50]}"),
        (ContentKind::Json, "\"hi\""),
        (ContentKind::Bytes, "\"hi\""),
    ]
    .map(|(kind, text)| (kind, text.to_owned()));
    for publication in published {
        a.publish(&news, publication).await.unwrap();
    }
    for want in &expected {
        assert_eq!(&next_message(&mut live).await, want, "live on node B");
    }
    // A node that never saw them reads them from the stream.
    let c = hub(&server, &prefix, |c| c).await;
    assert_eq!(stored(&c, &news).await, expected);

    // In the stream, only JSON entries have the kind field: a bytes entry
    // is exactly what entries were before it existed.
    let log = format!("{prefix}:{{news}}:log");
    let entries = server.command(&["XRANGE", &log, "-", "+"]).await;
    assert_eq!(
        entries.matches("$1\r\nk\r\n$1\r\nj\r\n").count(),
        2,
        "{entries}"
    );
    assert_eq!(entries.matches("$1\r\nk\r\n").count(), 2, "{entries}");
}

#[tokio::test]
async fn a_key_used_for_json_refuses_the_same_bytes_as_text() {
    let Some(server) = RedisServer::any().await else {
        return;
    };
    let prefix = prefix();
    let (a, b) = two_nodes(&server, &prefix).await;
    let news = channel("news");
    let key = || "k-1".parse().unwrap();
    let first = a
        .publish(&news, Publication::json("1").unwrap().with_key(key()))
        .await
        .unwrap();
    let retry = Publication::json("1").unwrap().with_key(key());
    assert_eq!(b.publish(&news, retry).await.unwrap(), first);
    let text = b
        .publish(&news, Publication::new("1").with_key(key()))
        .await;
    assert!(matches!(text, Err(Error::IdempotencyKeyReused)), "{text:?}");
    assert_eq!(stored(&a, &news).await, [(ContentKind::Json, "1".into())]);
}

/// A notification is taken as it comes (not read again from the stream):
/// one naming a message the stream does not hold reaches a live subscriber,
/// JSON with the `j` line, bytes without it (as every notification was
/// before the kind existed).
#[tokio::test]
async fn notifications_carry_the_kind_and_old_ones_read_as_bytes() {
    let Some(server) = RedisServer::any().await else {
        return;
    };
    let prefix = prefix();
    let node = hub(&server, &prefix, |c| c).await;
    let news = channel("news");
    let head = node.read(&news, Start::Live, 0).await.unwrap().cursor;
    let mut live = node.subscribe(&news, Start::After(head)).await.unwrap();
    let epoch = head.epoch().get();
    let number = head.position().major();
    let notify = format!("{prefix}:news");
    // Wait until the node follows the channel: a probe publish reaches it.
    let probe = Publication::new("probe");
    node.publish(&news, probe).await.unwrap();
    assert_eq!(
        next_message(&mut live).await,
        (ContentKind::Bytes, "probe".to_owned())
    );
    let json = format!("j\n{epoch}\n{}\n1\n\n{{\"only\":\"notified\"}}", number + 2);
    let old = format!("{epoch}\n{}\n1\n\n{{\"only\":\"notified\"}}", number + 3);
    for payload in [json, old] {
        let answer = server.command(&["PUBLISH", &notify, &payload]).await;
        assert!(answer.starts_with(":1"), "one node follows it: {answer}");
    }
    assert_eq!(
        next_message(&mut live).await,
        (ContentKind::Json, "{\"only\":\"notified\"}".to_owned())
    );
    assert_eq!(
        next_message(&mut live).await,
        (ContentKind::Bytes, "{\"only\":\"notified\"}".to_owned())
    );
}
