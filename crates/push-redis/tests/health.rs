//! The Redis hub's health: what `RedisHub::health` says when Redis stops
//! answering, and when it comes back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{RedisServer, hub, prefix, within};
use futures_util::StreamExt as _;
use push_core::{ChannelName, Hub, Item, Publication, Start};
use push_redis::{RedisHealth, RedisHub};

fn channel(name: &str) -> ChannelName {
    name.parse().unwrap()
}

/// Polls the health until `wanted` holds (the probe runs on its own timer).
async fn health_until(
    node: &RedisHub,
    what: &str,
    wanted: impl Fn(&RedisHealth) -> bool,
) -> RedisHealth {
    within(what, async {
        loop {
            let health = node.health();
            if wanted(&health) {
                return health;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_redis_is_unhealthy_and_healthy_again_when_it_resumes() {
    let Some(server) = RedisServer::own().await else {
        return;
    };
    let node = hub(&server, &prefix(), |c| {
        c.with_probe_interval(Duration::from_millis(100))
            .with_response_timeout(Duration::from_millis(300))
    })
    .await;
    let news = channel("news");
    let mut subscription = node.subscribe(&news, Start::Live).await.unwrap();
    let healthy = health_until(&node, "a probe to come back", |h| {
        h.healthy && h.probe_round_trip.is_some()
    })
    .await;
    assert!(
        healthy.redis_answered && healthy.reason.is_none(),
        "{healthy:?}"
    );
    assert!(healthy.since_last_probe.is_some());

    server.signal("STOP").await;
    // Publishing meanwhile: each message retried with its key until Redis
    // confirms it.
    let publisher = {
        let (node, news) = (node.clone(), news.clone());
        tokio::spawn(async move {
            let mut failures = 0;
            for i in 0..5 {
                let text = format!("m{i}");
                let publication = Publication::new(text.clone()).with_key(text.parse().unwrap());
                while node.publish(&news, publication.clone()).await.is_err() {
                    failures += 1;
                }
            }
            failures
        })
    };
    let unhealthy = health_until(&node, "the hub to see Redis stopped", |h| !h.healthy).await;
    let reason = unhealthy.reason.clone().unwrap_or_default();
    assert!(!reason.is_empty(), "{unhealthy:?}");
    println!("while stopped: {unhealthy:?}");
    // Past the probe timeout, both reasons hold.
    let stale = health_until(&node, "the probe timeout to pass", |h| {
        h.since_last_probe
            .is_some_and(|since| since > Duration::from_millis(300))
            && !h.redis_answered
    })
    .await;
    assert!(!stale.healthy, "{stale:?}");

    server.signal("CONT").await;
    let back = health_until(&node, "the hub to see Redis back", |h| h.healthy).await;
    assert!(back.redis_answered && back.reason.is_none(), "{back:?}");
    let failures = within("the publisher", publisher).await.unwrap();
    assert!(failures > 0, "no publish failed while Redis was stopped");
    // Every message published meanwhile, once each, in order.
    let mut got = Vec::new();
    within("the messages published meanwhile", async {
        while got.len() < 5 {
            match subscription.next().await {
                Some(Item::Message(m)) => got.push(String::from_utf8(m.data().to_vec()).unwrap()),
                other => panic!("expected a message, got {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(got, ["m0", "m1", "m2", "m3", "m4"]);
}

#[tokio::test]
async fn a_hub_without_redis_is_unhealthy_with_a_reason() {
    let Some(mut server) = RedisServer::own().await else {
        return;
    };
    let node = hub(&server, &prefix(), |c| {
        c.with_probe_interval(Duration::from_millis(50))
    })
    .await;
    health_until(&node, "healthy", |h| {
        h.healthy && h.probe_round_trip.is_some()
    })
    .await;
    server.stop().await;
    let down = health_until(&node, "unhealthy", |h| !h.healthy && !h.redis_answered).await;
    let reason = down.reason.unwrap();
    assert!(reason.contains("Redis"), "{reason}");
    server.restart().await;
    health_until(&node, "healthy again", |h| h.healthy).await;
}
