//! Two push-server nodes finding Redis through Sentinel (`--redis-sentinel`,
//! `--redis-master`), through a `SENTINEL FAILOVER` while a publisher posts
//! with idempotency keys, alternating nodes and retrying until 200: clients
//! of every technique (the project's own poll, long-poll, EventSource and
//! WebSocket clients), one on each node, each end with every message once,
//! in order, or a reset signal before the new history. And the flags'
//! combinations that cannot work are refused with a message naming them.
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
use redis::sentinel::Topology;
use support::{Driven, within};
use tokio::sync::mpsc;

/// Publishes confirmed after the switch before the publisher stops.
const AFTER: usize = 20;

async fn node(topology: &Topology, prefix: &str) -> Running {
    Running::start(&[
        "--redis-sentinel",
        &topology.sentinel_list(),
        "--redis-master",
        &topology.name,
        "--redis-prefix",
        prefix,
        "--redis-probe-interval",
        "0.1",
    ])
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_sentinel_serve_every_technique_through_a_failover() {
    let Some(topology) = Topology::start().await else {
        return;
    };
    let prefix = redis::prefix();
    let nodes = [
        node(&topology, &prefix).await,
        node(&topology, &prefix).await,
    ];
    let old_master = topology.master_port().await;
    let mut confirmed = vec![publish_keyed(&nodes[0], "news", 0).await];
    let mut watched: Vec<(String, Driven)> = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for (name, client) in clients(node, "news").await {
            watched.push((format!("{name} on node {n}"), client));
        }
    }

    // A keyed publisher alternating nodes at a steady pace, through the
    // failover.
    let stop = Arc::new(AtomicBool::new(false));
    let (sender, mut confirmations) = mpsc::unbounded_channel();
    let publisher = {
        let stop = stop.clone();
        let nodes = Arc::new(nodes);
        let publishing = nodes.clone();
        (
            tokio::spawn(async move {
                for i in 1.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let _ = sender.send(publish_keyed(&publishing[i % 2], "news", i).await);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }),
            nodes,
        )
    };
    let mut switches = topology.switches().await;
    for _ in 0..10 {
        confirmed.push(within("a publish", confirmations.recv()).await.unwrap());
    }
    topology.failover().await;
    let new_master = switches.next().await;
    assert_ne!(new_master, old_master);
    let mut after = 0;
    while after < AFTER {
        confirmed.push(within("a publish", confirmations.recv()).await.unwrap());
        after += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let (task, nodes) = publisher;
    within("the publisher", task).await.unwrap();
    while let Ok(next) = confirmations.try_recv() {
        confirmed.push(next);
    }
    let last = confirmed.last().unwrap().1;

    // The history now: each key once, in order, all in the last epoch.
    let history = support::get(nodes[1].addr, "/poll/news?since=earliest", &[])
        .await
        .json();
    let stored: Vec<(Cursor, String)> = history["messages"]
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
        stored
            .iter()
            .all(|(cursor, _)| cursor.epoch() == last.epoch())
    );
    assert!(
        stored.windows(2).all(|w| index(&w[0].1) < index(&w[1].1)),
        "{stored:?}"
    );
    for (data, cursor) in &confirmed {
        if cursor.epoch() == last.epoch() {
            assert!(stored.contains(&(*cursor, data.clone())), "{data} {cursor}");
        }
    }

    // Every client: runs of consecutive messages, a reset before the new
    // history, then exactly the new history after the reset's resume.
    for (name, client) in &mut watched {
        let items = until(name, client, last).await;
        let reset = check(name, &items, &stored, last);
        assert_eq!(reset, 1, "{name}: no reset, though the master moved");
    }
}

#[tokio::test]
async fn sentinel_flags_that_cannot_work_are_refused() {
    for (args, named) in [
        (
            vec!["--redis-sentinel", "127.0.0.1:26379"],
            "--redis-master",
        ),
        (vec!["--redis-master", "mymaster"], "--redis-sentinel"),
        (
            vec![
                "--redis-url",
                "redis://127.0.0.1/",
                "--redis-sentinel",
                "127.0.0.1:26379",
                "--redis-master",
                "m",
            ],
            "use one",
        ),
        (vec!["--redis-password", "secret"], "--redis-sentinel"),
        (
            vec!["--redis-sentinel", "127.0.0.1", "--redis-master", "m"],
            "HOST:PORT",
        ),
        (
            vec!["--redis-sentinel", "::1:26379", "--redis-master", "m"],
            "HOST:PORT",
        ),
        (
            vec!["--redis-sentinel", "h:0", "--redis-master", "m"],
            "HOST:PORT",
        ),
        (
            vec!["--redis-sentinel", "h:1", "--redis-master", "a b"],
            "master",
        ),
    ] {
        let stderr = refused(&args).await;
        assert!(stderr.contains(named), "{args:?}: {stderr}");
        assert!(!stderr.contains("secret"), "{stderr}");
    }
}
