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

use common::{Running, refused};
use futures_util::StreamExt as _;
use http::StatusCode;
use push_core::{Cursor, Item, Signal, Start};
use push_live::longpoll::{LongPoller, LongPollerConfig};
use push_live::poll::{Poller, PollerConfig};
use push_live::sse::{EventSource, EventSourceConfig};
use push_live::ws::{WsClientConfig, WsSubscriber};
use redis::sentinel::Topology;
use support::{Driven, drive, within};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The longest one keyed publish may take to succeed, retries included.
const BOUND: Duration = Duration::from_secs(15);
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

/// Posts `m{i}` with key `k{i}` to `node` until it answers 200; its cursor.
async fn publish_keyed(node: &Running, i: usize) -> (String, Cursor) {
    let (data, key) = (format!("m{i}"), format!("k{i}"));
    let started = Instant::now();
    loop {
        let answer = support::request(
            node.addr,
            "POST",
            "/pub/news",
            &[("Idempotency-Key", key.as_str())],
            data.clone(),
        )
        .await;
        if answer.status == StatusCode::OK {
            let id = answer.json()["id"].as_str().unwrap().parse().unwrap();
            return (data, id);
        }
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "m{i}");
        assert!(started.elapsed() < BOUND, "m{i} still failing");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn index(data: &str) -> usize {
    data.strip_prefix('m').unwrap().parse().unwrap()
}

/// The project's four clients on `node`, from the start of the history.
async fn clients(node: &Running) -> Vec<(&'static str, Driven)> {
    let (backoff, max) = (Duration::from_millis(20), Duration::from_millis(500));
    let base = format!("http://{}", node.addr);
    let ws = format!("ws://{}/ws/news", node.addr);
    vec![
        (
            "poll",
            drive(
                Poller::connect(
                    &format!("{base}/poll/news"),
                    PollerConfig::default()
                        .with_start(Start::Earliest)
                        .with_interval(Duration::from_millis(50))
                        .with_backoff(backoff, max),
                )
                .await
                .unwrap(),
            ),
        ),
        (
            "longpoll",
            drive(
                LongPoller::connect(
                    &format!("{base}/longpoll/news"),
                    LongPollerConfig::default()
                        .with_start(Start::Earliest)
                        .with_hold(Duration::from_secs(2))
                        .with_backoff(backoff, max),
                )
                .await
                .unwrap(),
            ),
        ),
        (
            "sse",
            drive(
                EventSource::connect(
                    &format!("{base}/sse/news"),
                    EventSourceConfig::default()
                        .with_start(Start::Earliest)
                        .with_retry(backoff, max),
                )
                .await
                .unwrap(),
            ),
        ),
        (
            "ws",
            drive(
                WsSubscriber::connect(
                    &ws,
                    WsClientConfig::default()
                        .with_start(Start::Earliest)
                        .with_backoff(backoff, max),
                )
                .await
                .unwrap(),
            ),
        ),
    ]
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
    let mut confirmed = vec![publish_keyed(&nodes[0], 0).await];
    let mut watched: Vec<(String, Driven)> = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for (name, client) in clients(node).await {
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
                    let _ = sender.send(publish_keyed(&publishing[i % 2], i).await);
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
        let items = within(&format!("{name} to reach the last message"), async {
            let mut items = Vec::new();
            loop {
                match client.next().await {
                    Some(Ok(item)) => {
                        let done = item.cursor() == last;
                        items.push(item);
                        if done {
                            return items;
                        }
                    }
                    Some(Err(err)) if !err.is_fatal() => {}
                    other => panic!("{name}: {other:?}"),
                }
            }
        })
        .await;
        check(name, &items, &stored, last);
    }
}

/// What one client got: see the test.
fn check(name: &str, items: &[Item], stored: &[(Cursor, String)], last: Cursor) {
    let mut run: Vec<usize> = Vec::new();
    let mut after_reset: Option<Vec<(Cursor, String)>> = None;
    let mut resume = None;
    for item in items {
        match item {
            Item::Message(message) => {
                let data = String::from_utf8(message.data().to_vec()).unwrap();
                if let Some(run) = run.last() {
                    assert_eq!(index(&data), run + 1, "{name}: {items:?}");
                }
                run.push(index(&data));
                if let Some(after) = &mut after_reset {
                    after.push((message.cursor(), data));
                }
            }
            Item::Signal(Signal::Reset(reset)) => {
                run.clear();
                after_reset = Some(Vec::new());
                resume = Some(reset.resume);
            }
            Item::Signal(Signal::Gap(gap)) => panic!("{name}: a gap {gap:?}"),
        }
    }
    let resume = resume.unwrap_or_else(|| panic!("{name}: no reset, though the master moved"));
    assert_eq!(resume.epoch(), last.epoch(), "{name}");
    let expected: Vec<(Cursor, String)> = stored
        .iter()
        .filter(|(cursor, _)| cursor.position() > resume.position())
        .cloned()
        .collect();
    assert_eq!(after_reset.unwrap(), expected, "{name}");
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
