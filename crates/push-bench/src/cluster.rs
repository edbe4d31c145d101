//! The Redis Cluster scenario (`push-bench run --only cluster`): the hub
//! through one Redis against the hub through a three-primary Redis Cluster
//! (no replicas), same machine, same run, in this process. On each: two
//! `RedisHub` nodes, 64 channels, 4 subscribers per channel, node A holding
//! the subscribers of the first 32 channels and node B those of the other
//! 32; 16 publishers publish 20,000 messages round-robin over the channels
//! through node A.
//!
//! Measured: publishes per second (the 16 publishers' burst), deliveries per
//! second (first publish to the last delivery), deliveries per push node,
//! and per Redis server what it sent during the burst (`total_net_output_bytes`,
//! replies and Pub/Sub alike) and the cluster-bus Pub/Sub messages
//! (`cluster_stats_messages_publish_sent`: a plain `PUBLISH` on a cluster is
//! copied to every node; sharded `SPUBLISH` stays on its shard).
//!
//! It starts its own `redis-server`s (found on the `PATH`, persistence off)
//! and joins the cluster with `redis-cli --cluster create`; it skips with a
//! notice when either is missing.

use std::fmt::Write as _;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use push_core::{ChannelName, Hub, Item, Publication, Start};
use push_redis::{RedisHub, RedisHubConfig};
use tokio::process::{Child, Command};

const CHANNELS: usize = 64;
const PER_CHANNEL: usize = 4;
const BURST: u64 = 20_000;
const PUBLISHERS: u64 = 16;
const PATIENCE: Duration = Duration::from_secs(60);
/// Plain `PUBLISH`es sent to show the cluster bus's share.
const PLAIN: u64 = 1_000;

struct Outcome {
    name: String,
    publishes: f64,
    deliveries: f64,
    per_node: [u64; 2],
    /// Per Redis server: its port, bytes sent, cluster-bus publish messages.
    servers: Vec<(u16, u64, u64)>,
    missing: u64,
}

/// Runs the scenario; the markdown table, or a notice when Redis is missing.
pub(crate) async fn scenario() -> Result<String, String> {
    let (Some(server), Some(cli)) = (crate::which("redis-server"), crate::which("redis-cli"))
    else {
        return Ok("\n### Redis Cluster\n\nNOTICE: redis-server or redis-cli is not installed (`apt-get install -y redis-server`): skipped.\n".into());
    };
    let mut children = Vec::new();
    let single = free_port()?;
    children.push(spawn(&server, single, false)?);
    let mut ports = Vec::new();
    for _ in 0..3 {
        let port = free_port()?;
        children.push(spawn(&server, port, true)?);
        ports.push(port);
    }
    for port in ports.iter().chain([&single]) {
        wait_for(*port, "PING", "PONG").await?;
    }
    let mut create = Command::new(&cli);
    create.args(["--cluster", "create"]);
    for port in &ports {
        create.arg(format!("127.0.0.1:{port}"));
    }
    let created = create
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdout(Stdio::null())
        .status()
        .await
        .map_err(|e| format!("redis-cli: {e}"))?;
    if !created.success() {
        return Err("redis-cli --cluster create failed".into());
    }
    for port in &ports {
        wait_for(*port, "CLUSTER INFO", "cluster_state:ok").await?;
    }
    let one = run(
        "one Redis".into(),
        RedisHubConfig::new(format!("redis://127.0.0.1:{single}/")),
        &[single],
    )
    .await?;
    let seeds: Vec<String> = ports
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}/"))
        .collect();
    let cluster = run(
        "cluster, 3 primaries".into(),
        RedisHubConfig::cluster(seeds.join(",")),
        &ports,
    )
    .await?;
    // For comparison: what plain PUBLISH (not sharded) costs the cluster
    // bus, on one node.
    let before = stats(&ports).await?;
    let mut connection = redis::Client::open(("127.0.0.1", ports[0]))
        .map_err(|e| e.to_string())?
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    for _ in 0..PLAIN {
        redis::cmd("PUBLISH")
            .arg("bench-plain")
            .arg("x")
            .query_async::<i64>(&mut connection)
            .await
            .map_err(|e| e.to_string())?;
    }
    let after = stats(&ports).await?;
    let plain: Vec<String> = ports
        .iter()
        .zip(before.iter().zip(&after))
        .map(|(port, (b, a))| format!(":{port} {}", a.1.saturating_sub(b.1)))
        .collect();
    drop(children);
    for port in ports.iter().chain([&single]) {
        let _ = std::fs::remove_dir_all(dir(*port));
    }
    let mut table = format!(
        "\n### Redis Cluster against one Redis\n\n\
         {CHANNELS} channels × {PER_CHANNEL} subscribers, node A holding the first half, node B the \
         other; {PUBLISHERS} publishers, {BURST} publishes through node A. Redis servers and hub \
         nodes share this machine's cores.\n\n\
         | hub on | publishes/s | deliveries/s | deliveries node A / B | missing | per Redis server: bytes sent, cluster-bus publishes |\n\
         |---|---:|---:|---:|---:|---|\n"
    );
    for o in [&one, &cluster] {
        let servers: Vec<String> = o
            .servers
            .iter()
            .map(|(port, bytes, bus)| format!(":{port} {:.1} MB, {bus}", *bytes as f64 / 1e6))
            .collect();
        let _ = writeln!(
            table,
            "| {} | {:.0} | {:.0} | {} / {} | {} | {} |",
            o.name,
            o.publishes,
            o.deliveries,
            o.per_node[0],
            o.per_node[1],
            o.missing,
            servers.join("; ")
        );
    }
    let _ = writeln!(
        table,
        "\nFor comparison, {PLAIN} plain `PUBLISH` (not sharded) on the cluster's first node, \
         no subscriber anywhere: cluster-bus publish messages sent per server: {}.",
        plain.join("; ")
    );
    let _ = writeln!(table, "\nload average: {}", crate::driver::load_average());
    Ok(table)
}

async fn run(name: String, config: RedisHubConfig, servers: &[u16]) -> Result<Outcome, String> {
    let config = config
        .with_prefix("bench")
        .with_max_messages(BURST as usize)
        .with_node_cache(BURST as usize);
    let connect = async || {
        RedisHub::connect(config.clone())
            .await
            .map_err(|e| format!("{name}: {e}"))
    };
    let nodes = [connect().await?, connect().await?];
    let channels: Vec<ChannelName> = (0..CHANNELS)
        .map(|i| format!("c{i}").parse())
        .collect::<Result<_, _>>()
        .map_err(|e: push_core::Error| e.to_string())?;
    let per_node = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
    let last = Arc::new(std::sync::Mutex::new(Instant::now()));
    let mut tasks = Vec::new();
    for (i, channel) in channels.iter().enumerate() {
        let n = i * 2 / CHANNELS;
        for _ in 0..PER_CHANNEL {
            let mut subscription = nodes[n]
                .subscribe(channel, Start::Live)
                .await
                .map_err(|e| e.to_string())?;
            let (count, last) = (per_node[n].clone(), last.clone());
            tasks.push(tokio::spawn(async move {
                while let Some(item) = subscription.next().await {
                    if let Item::Message(message) = item {
                        count.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut last) = last.lock() {
                            *last = Instant::now();
                        }
                        if message.data().as_ref() == b"end" {
                            return;
                        }
                    }
                }
            }));
        }
    }
    let before = stats(servers).await?;
    let started = Instant::now();
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let (hub, channels) = (nodes[0].clone(), channels.clone());
        publishers.push(tokio::spawn(async move {
            for i in 0..BURST / PUBLISHERS {
                let channel =
                    &channels[usize::try_from(p + i * PUBLISHERS).unwrap_or(0) % CHANNELS];
                hub.publish(channel, Publication::new("x")).await?;
            }
            Ok::<_, push_core::Error>(())
        }));
    }
    for publisher in publishers {
        publisher
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    }
    let published = started.elapsed();
    let expected = BURST * PER_CHANNEL as u64;
    let deadline = Instant::now() + PATIENCE;
    let delivered = || per_node[0].load(Ordering::Relaxed) + per_node[1].load(Ordering::Relaxed);
    while delivered() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let done = last.lock().map(|at| *at).unwrap_or_else(|_| Instant::now());
    let after = stats(servers).await?;
    let counts = [
        per_node[0].load(Ordering::Relaxed),
        per_node[1].load(Ordering::Relaxed),
    ];
    for channel in &channels {
        let _ = nodes[0].publish(channel, Publication::new("end")).await;
    }
    let _ = tokio::time::timeout(PATIENCE, futures_util::future::join_all(tasks)).await;
    Ok(Outcome {
        name,
        publishes: BURST as f64 / published.as_secs_f64(),
        deliveries: expected as f64 / done.duration_since(started).as_secs_f64(),
        per_node: counts,
        servers: servers
            .iter()
            .zip(before.iter().zip(&after))
            .map(|(port, (b, a))| (*port, a.0.saturating_sub(b.0), a.1.saturating_sub(b.1)))
            .collect(),
        missing: expected.saturating_sub(counts[0] + counts[1]),
    })
}

/// Per server: bytes sent so far, cluster-bus publish messages sent so far.
async fn stats(ports: &[u16]) -> Result<Vec<(u64, u64)>, String> {
    let mut out = Vec::new();
    for port in ports {
        let info = query(*port, &["INFO", "stats"]).await?;
        let cluster = query(*port, &["CLUSTER", "INFO"]).await.unwrap_or_default();
        out.push((
            field(&info, "total_net_output_bytes"),
            field(&cluster, "cluster_stats_messages_publish_sent"),
        ));
    }
    Ok(out)
}

fn field(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

async fn query(port: u16, args: &[&str]) -> Result<String, String> {
    let client = redis::Client::open(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    let mut command = redis::cmd(args[0]);
    for arg in &args[1..] {
        command.arg(*arg);
    }
    command
        .query_async::<String>(&mut connection)
        .await
        .map_err(|e| e.to_string())
}

async fn wait_for(port: u16, command: &str, answer: &str) -> Result<(), String> {
    let deadline = Instant::now() + PATIENCE;
    let args: Vec<&str> = command.split(' ').collect();
    loop {
        if let Ok(text) = query(port, &args).await
            && text.contains(answer)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "cluster: {port} never answered {command} with {answer}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn spawn(binary: &std::path::Path, port: u16, cluster: bool) -> Result<Child, String> {
    let dir =
        std::env::temp_dir().join(format!("push-bench-cluster-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut command = Command::new(binary);
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&dir);
    if cluster {
        command.args([
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
        ]);
    }
    command
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting redis-server: {e}"))
}

/// The directory of the server on `port` (its `nodes.conf`), removed at
/// the end.
fn dir(port: u16) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("push-bench-cluster-{}-{port}", std::process::id()))
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}
