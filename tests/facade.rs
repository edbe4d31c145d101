//! The facade re-exports the core at its root and under `push_live::core`, and one
//! hub serves both paths: what a user of `push` alone writes.

use futures_util::StreamExt;
use push_live::{Hub, Item, Publication, Start};

#[tokio::test]
async fn core_types_are_the_same_through_both_paths() {
    let hub: push_live::core::MemoryHub = push_live::MemoryHub::new();
    let channel: push_live::core::ChannelName = "facade".parse().unwrap();
    let first = hub.publish(&channel, Publication::new("1")).await.unwrap();
    hub.publish(&channel, Publication::new("2")).await.unwrap();
    let mut resumed = hub.subscribe(&channel, Start::After(first)).await.unwrap();
    match resumed.next().await {
        Some(Item::Message(m)) => assert_eq!(&m.data()[..], b"2"),
        other => panic!("expected message 2, got {other:?}"),
    }
}
