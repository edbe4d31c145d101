//! Two push-server nodes on a Redis Cluster (`--redis-url` naming two of
//! its six nodes, `--redis-cluster`), with clients of every technique (the
//! project's own poll, long-poll, EventSource and WebSocket clients) on
//! both nodes for channels spread over all three shards, while a publisher
//! posts with idempotency keys, alternating nodes and retrying until 200,
//! through a `CLUSTER FAILOVER`, a SIGKILL of a primary and a slot
//! migration of a live channel: each client ends with every message once,
//! in order, or a reset signal and then exactly the history after it. And
//! the flag combinations that cannot work are refused, naming the flags.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../push-redis/tests/common/mod.rs"]
mod redis;
#[path = "../../../tests/support/mod.rs"]
mod support;

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::failover::{check, clients, index, publish_keyed, until};
use common::{Running, refused};
use push_core::Cursor;
use redis::cluster::{Cluster, keyslot};
use support::{Driven, within};
use tokio::sync::{Mutex, mpsc};

/// Publishing rounds (one message per channel) between the events.
const ROUNDS: usize = 8;

async fn node(cluster: &Cluster, prefix: &str) -> Running {
    Running::start(&[
        "--redis-url",
        &cluster.seeds(),
        "--redis-cluster",
        "--redis-prefix",
        prefix,
        "--redis-probe-interval",
        "0.1",
    ])
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_a_cluster_serve_every_technique_through_failover_kill_and_migration() {
    let Some(mut cluster) = Cluster::start().await else {
        return;
    };
    let prefix = redis::prefix();
    let nodes = Arc::new([node(&cluster, &prefix).await, node(&cluster, &prefix).await]);
    let channels = cluster.spread(&prefix, 2).await;
    let mut confirmed: Vec<Vec<(String, Cursor)>> = Vec::new();
    for channel in &channels {
        confirmed.push(vec![publish_keyed(&nodes[0], channel, 0).await]);
    }
    let mut watched: Vec<(String, usize, Driven)> = Vec::new();
    for (c, channel) in channels.iter().enumerate() {
        for (n, node) in nodes.iter().enumerate() {
            for (name, client) in clients(node, channel).await {
                watched.push((format!("{name} of {channel} on node {n}"), c, client));
            }
        }
    }

    // A keyed publisher: round after round over every channel, alternating
    // nodes.
    let stop = Arc::new(AtomicBool::new(false));
    let (sender, mut confirmations) = mpsc::unbounded_channel();
    let publisher = {
        let (stop, nodes, channels) = (stop.clone(), nodes.clone(), channels.clone());
        tokio::spawn(async move {
            for i in 1.. {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                for (c, channel) in channels.iter().enumerate() {
                    let _ = sender.send((c, publish_keyed(&nodes[(i + c) % 2], channel, i).await));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let confirmed = Mutex::new(confirmed);
    let mut receive = async |rounds: usize| {
        for _ in 0..rounds * channels.len() {
            let (c, next) = within("a publish", confirmations.recv()).await.unwrap();
            confirmed.lock().await[c].push(next);
        }
    };
    receive(ROUNDS).await;
    // Each channel's slot, asked before any node goes away.
    let seed = cluster.settled(&[]).await[0].port;
    let mut slots = Vec::new();
    for channel in &channels {
        slots.push(keyslot(seed, &format!("{prefix}:{{{channel}}}:meta")).await);
    }

    // 1. A clean failover of the shard of the first channel.
    let (_, replicas) = cluster.owner(slots[0], &[]).await;
    cluster.failover(replicas[0], &[]).await;
    receive(ROUNDS).await;

    // 2. SIGKILL of the primary of the last channel.
    let (victim, _) = cluster.owner(*slots.last().unwrap(), &[]).await;
    cluster.kill(victim.port).await;
    let dead = [victim.port];
    cluster.settled(&dead).await;
    receive(ROUNDS).await;

    // 3. The slot of the second channel moves, the publisher writing on.
    let slot = slots[1];
    let (owner, _) = cluster.owner(slot, &dead).await;
    let target = cluster
        .settled(&dead)
        .await
        .into_iter()
        .find(|n| n.primary && !n.failed && !n.slots.is_empty() && n.id != owner.id)
        .unwrap();
    cluster.migrate(slot, &target, &dead).await;
    receive(ROUNDS).await;

    stop.store(true, Ordering::Relaxed);
    within("the publisher", publisher).await.unwrap();
    let mut confirmed = confirmed.into_inner();
    while let Ok((c, next)) = confirmations.try_recv() {
        confirmed[c].push(next);
    }

    // The history of each channel now: each key once, in order, all in the
    // last epoch, every confirmed publish of that epoch in it.
    let mut stored: Vec<Vec<(Cursor, String)>> = Vec::new();
    for (c, channel) in channels.iter().enumerate() {
        let last = confirmed[c].last().unwrap().1;
        let history = support::get(
            nodes[c % 2].addr,
            &format!("/poll/{channel}?since=earliest"),
            &[],
        )
        .await
        .json();
        let history: Vec<(Cursor, String)> = history["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["id"].as_str().unwrap().parse().unwrap(),
                    m["data"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert!(
            history
                .iter()
                .all(|(cursor, _)| cursor.epoch() == last.epoch()),
            "{channel}"
        );
        assert!(
            history
                .windows(2)
                .all(|w| index(&w[0].1) + 1 == index(&w[1].1)),
            "{channel}: {history:?}"
        );
        for (data, cursor) in &confirmed[c] {
            if cursor.epoch() == last.epoch() {
                assert!(
                    history.contains(&(*cursor, data.clone())),
                    "{channel}: {data} {cursor}"
                );
            }
        }
        stored.push(history);
    }

    // Every client: consecutive messages from m0, or a reset and then
    // exactly the history after the reset's resume.
    let mut resets = 0;
    for (name, c, client) in &mut watched {
        let last = confirmed[*c].last().unwrap().1;
        let items = until(name, client, last).await;
        resets += check(name, &items, &stored[*c], last);
    }
    println!(
        "{} channels, {} clients, {resets} resets",
        channels.len(),
        watched.len()
    );
}

#[tokio::test]
async fn cluster_flags_that_cannot_work_are_refused() {
    for (args, named) in [
        (vec!["--redis-cluster"], "--redis-url"),
        (
            vec![
                "--redis-cluster",
                "--redis-sentinel",
                "127.0.0.1:26379",
                "--redis-master",
                "m",
            ],
            "--redis-sentinel",
        ),
    ] {
        let stderr = refused(&args).await;
        assert!(stderr.contains(named), "{args:?}: {stderr}");
        assert!(stderr.contains("--redis-cluster"), "{args:?}: {stderr}");
    }
}
