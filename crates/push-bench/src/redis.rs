//! The Redis scenario (`push-bench run --only redis`): the hub layer through
//! Redis against the memory hub, in this process. Two `RedisHub` nodes (each
//! its own command and Pub/Sub connections) with 1,000 subscribers each,
//! publishing through node A; the memory hub with the same 2,000 subscribers
//! on one node. No HTTP: what differs between the two is the hub, and the
//! transports' own costs are measured by the other scenarios.
//!
//! It starts its own `redis-server` (found on the `PATH`; persistence off)
//! on a free port, or skips with a notice when there is none.
//!
//! Measured: sequential publish throughput (one publisher awaiting each
//! publish), concurrent publish throughput (16 publishers), and
//! publish→receive latency at a steady 500 messages/s, from just before the
//! publish call to each subscriber's receipt (`Instant`s of one process).

use std::fmt::Write as _;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use hdrhistogram::Histogram;
use push_core::{ChannelName, Hub, Item, MemoryHub, MemoryHubConfig, Publication, Start};
use push_redis::{RedisHub, RedisHubConfig};
use tokio::sync::Mutex;

const PER_NODE: usize = 1_000;
const BURST: u64 = 5_000;
const PUBLISHERS: u64 = 16;
const RATE: u64 = 500;
const STEADY: Duration = Duration::from_secs(5);
const HISTORY: usize = 20_000;

struct Outcome {
    name: &'static str,
    sequential: f64,
    concurrent: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    deliveries: u64,
    gaps: u64,
    missing: u64,
}

/// Runs the scenario; the markdown table, or a notice when Redis is missing.
pub(crate) async fn scenario() -> Result<String, String> {
    let Some(binary) = which("redis-server") else {
        return Ok("\n### Redis hub\n\nNOTICE: redis-server is not installed (`apt-get install -y redis-server`): skipped.\n".into());
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let mut redis = tokio::process::Command::new(binary)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting redis-server: {e}"))?;
    let url = format!("redis://127.0.0.1:{port}/");
    // Histories that hold the bursts, so that subscribers never fall out.
    let config = || {
        RedisHubConfig::new(url.clone())
            .with_prefix("bench")
            .with_max_messages(HISTORY)
            .with_node_cache(HISTORY)
    };
    let a = connect(config()).await?;
    let b = connect(config()).await?;
    let redis_outcome = run("redis (2 nodes)", &a, &[&a, &b]).await?;
    let memory = MemoryHub::with_config(
        MemoryHubConfig::default()
            .with_max_messages(HISTORY)
            .with_max_bytes(64 << 20),
    )
    .map_err(|e| e.to_string())?;
    let memory_outcome = run("memory (1 node)", &memory, &[&memory, &memory]).await?;
    let _ = redis.kill().await;
    let mut table = String::from(
        "\n### Redis hub against the memory hub\n\n\
         2 × 1,000 subscribers (Redis: two nodes, publishing through the first), no HTTP.\n\n\
         | hub | sequential publishes/s | 16 concurrent publishers: publishes/s | p50 | p99 | max | deliveries | gaps | missing |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for o in [&memory_outcome, &redis_outcome] {
        let _ = writeln!(
            table,
            "| {} | {:.0} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms | {} | {} | {} |",
            o.name,
            o.sequential,
            o.concurrent,
            ms(o.p50),
            ms(o.p99),
            ms(o.max),
            o.deliveries,
            o.gaps,
            o.missing
        );
    }
    Ok(table)
}

async fn connect(config: RedisHubConfig) -> Result<RedisHub, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match RedisHub::connect(config.clone()).await {
            Ok(hub) => return Ok(hub),
            Err(err) if Instant::now() > deadline => return Err(format!("Redis: {err}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Publishes through `publisher`; subscribers on each of `nodes`.
async fn run<H: Hub + Clone>(
    name: &'static str,
    publisher: &H,
    nodes: &[&H; 2],
) -> Result<Outcome, String> {
    let channel: ChannelName = "bench"
        .parse()
        .map_err(|e: push_core::Error| e.to_string())?;
    let epoch = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    let gaps = Arc::new(AtomicU64::new(0));
    let histogram = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3).map_err(|e| e.to_string())?,
    ));
    // Latency is recorded only while `measuring` (the steady phase).
    let measuring = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for node in nodes {
        for _ in 0..PER_NODE {
            let mut subscription = node
                .subscribe(&channel, Start::Live)
                .await
                .map_err(|e| e.to_string())?;
            let (received, gaps, histogram, measuring) = (
                received.clone(),
                gaps.clone(),
                histogram.clone(),
                measuring.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                while let Some(item) = subscription.next().await {
                    let Item::Message(message) = item else {
                        gaps.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    received.fetch_add(1, Ordering::Relaxed);
                    if measuring.load(Ordering::Relaxed) == 1
                        && let Some(sent) = std::str::from_utf8(message.data())
                            .ok()
                            .and_then(|t| t.parse::<u64>().ok())
                    {
                        let now = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
                        latencies.push(now.saturating_sub(sent));
                    }
                    if message.data().as_ref() == b"end" {
                        break;
                    }
                }
                let mut histogram = histogram.lock().await;
                for latency in latencies {
                    let _ = histogram.record(latency.max(1_000));
                }
            }));
        }
    }
    let subscribers = (nodes.len() * PER_NODE) as u64;
    let (owned, owned_channel) = (publisher.clone(), channel.clone());
    let publish = move |data: String| {
        let (publisher, channel) = (owned.clone(), owned_channel.clone());
        async move { publisher.publish(&channel, Publication::new(data)).await }
    };
    // Sequential burst.
    let started = Instant::now();
    for _ in 0..BURST {
        publish("x".into()).await.map_err(|e| e.to_string())?;
    }
    let sequential = BURST as f64 / started.elapsed().as_secs_f64();
    // Concurrent burst.
    let started = Instant::now();
    let mut publishers = Vec::new();
    for _ in 0..PUBLISHERS {
        let publish = publish.clone();
        publishers.push(tokio::spawn(async move {
            for _ in 0..BURST / PUBLISHERS {
                publish("x".into()).await?;
            }
            Ok::<_, push_core::Error>(())
        }));
    }
    for p in publishers {
        p.await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    }
    let concurrent = (BURST / PUBLISHERS * PUBLISHERS) as f64 / started.elapsed().as_secs_f64();
    // Let the subscribers catch up before the measured phase.
    let bursts = (BURST + BURST / PUBLISHERS * PUBLISHERS) * subscribers;
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.load(Ordering::Relaxed) < bursts && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Steady rate, measured.
    measuring.store(1, Ordering::Relaxed);
    let interval = Duration::from_secs(1) / u32::try_from(RATE).unwrap_or(1);
    let steady = STEADY.as_secs() * RATE;
    let started = Instant::now();
    for i in 0..steady {
        let due = started + interval * u32::try_from(i).unwrap_or(u32::MAX);
        tokio::time::sleep_until(due.into()).await;
        let sent = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        publish(sent.to_string()).await.map_err(|e| e.to_string())?;
    }
    publish("end".into()).await.map_err(|e| e.to_string())?;
    let all = tokio::time::timeout(
        Duration::from_secs(60),
        futures_util::future::join_all(tasks),
    )
    .await;
    let published = BURST + BURST / PUBLISHERS * PUBLISHERS + steady + 1;
    let deliveries = received.load(Ordering::Relaxed);
    let missing = (published * subscribers).saturating_sub(deliveries);
    if all.is_err() {
        return Err(format!(
            "{name}: subscribers did not finish ({missing} deliveries missing)"
        ));
    }
    let histogram = histogram.lock().await;
    Ok(Outcome {
        name,
        sequential,
        concurrent,
        p50: Duration::from_nanos(histogram.value_at_quantile(0.5)),
        p99: Duration::from_nanos(histogram.value_at_quantile(0.99)),
        max: Duration::from_nanos(histogram.max()),
        deliveries,
        gaps: gaps.load(Ordering::Relaxed),
        missing,
    })
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
