//! The failover scenario (`push-bench run --only failover`): how long a
//! Redis Sentinel failover interrupts the Redis hub.
//!
//! It starts a master, a replica and three sentinels (`redis-server FILE
//! --sentinel`; `down-after-milliseconds` 1000, `failover-timeout` 3000) on
//! free ports, and two `RedisHub` nodes through the sentinels with the
//! hub's default timeouts (push-server's too). A publisher on node A
//! publishes with idempotency keys every 10 ms, retrying every 5 ms until a
//! publish succeeds; a subscriber on node B. Each round waits until every
//! sentinel could fail over (`SENTINEL CKQUORUM`, the replica's link up),
//! sends `SENTINEL FAILOVER` and measures from that moment:
//!
//! - **switch**: until a sentinel announces `+switch-master`;
//! - **publish**: until the first publish confirmed by the new master (its
//!   cursor is in the new epoch: the hub rotates each channel's epoch on a
//!   new Redis process);
//! - **receive**: until the subscriber on the other node receives a
//!   message from the new master.
//!
//! At the end, every confirmed publish is checked against the history: each
//! stored once, or rolled back (confirmed by the old master after the
//! promotion, lost with it; its subscribers got a reset).
//!
//! It skips with a notice when `redis-server` is not on the `PATH`. With
//! `PUSH_BENCH_DEBUG` set, the topology's directory (the sentinels' logs)
//! is kept and named.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use push_core::{ChannelName, Cursor, Hub, Item, Publication, Start};
use push_redis::{RedisHub, RedisHubConfig, SentinelConfig};
use tokio::process::{Child, Command};

/// Failovers measured.
const ROUNDS: usize = 5;
/// The publisher's pace, and its retry pace.
const PACE: Duration = Duration::from_millis(10);
const RETRY: Duration = Duration::from_millis(5);
/// The safety net of every wait.
const PATIENCE: Duration = Duration::from_secs(60);
const NAME: &str = "bench";
/// The leader's announcement of the promotion, and of the switch.
const PROMOTING: &str = "+failover-state-send-slaveof-noone";
const SWITCHED: &str = "+switch-master";

/// A publish's number, from its data.
fn index(data: &str) -> u64 {
    data.parse().unwrap_or(u64::MAX)
}

/// One failover, measured from `SENTINEL FAILOVER`.
struct Round {
    /// When it began.
    started: Instant,
    /// Until the leader announced the replica's promotion
    /// (`+failover-state-send-slaveof-noone`).
    promote: Duration,
    switch: Duration,
    publish: Duration,
    receive: Duration,
    /// The longest one publish took, retries included, in this round.
    slowest_publish: Duration,
    /// Publishes the old master confirmed after the promotion (lost with
    /// it, told by a reset), and when the last of them was confirmed.
    rolled_back: usize,
    rolled_back_until: Option<Duration>,
}

/// What the publisher and the subscriber saw, with when.
#[derive(Default)]
struct Seen {
    /// Confirmed publishes: when, the data, the cursor.
    confirmed: Vec<(Instant, String, Cursor, Duration)>,
    /// Messages received: when, the cursor, the data.
    received: Vec<(Instant, Cursor, String)>,
    resets: usize,
}

type Shared = Arc<Mutex<Seen>>;

fn lock(seen: &Shared) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs the scenario; the markdown table, or a notice when Redis is missing.
pub(crate) async fn scenario() -> Result<String, String> {
    let Some(binary) = crate::which("redis-server") else {
        return Ok("\n### Redis Sentinel failover\n\nNOTICE: redis-server is not installed (`apt-get install -y redis-server`): skipped.\n".into());
    };
    let topology = Topology::start(&binary).await?;
    topology.wait_ready().await?;
    let result = measure(&topology).await;
    drop(topology);
    let (rounds, checked) = result?;
    let mut table = String::from(
        "\n### Redis Sentinel failover\n\n\
         Master, replica, three sentinels; two hub nodes with the default timeouts; a keyed \
         publisher on node A every 10 ms (retrying every 5 ms), a subscriber on node B; \
         times from `SENTINEL FAILOVER`.\n\n\
         | round | promotion announced | +switch-master | first publish on the new master | subscriber receiving again | slowest publish (retries included) | rolled back (the last confirmed at) |\n\
         |---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (i, round) in rounds.iter().enumerate() {
        let _ = writeln!(
            table,
            "| {} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {} ({}) |",
            i + 1,
            ms(round.promote),
            ms(round.switch),
            ms(round.publish),
            ms(round.receive),
            ms(round.slowest_publish),
            round.rolled_back,
            round
                .rolled_back_until
                .map_or_else(|| "-".to_owned(), |at| format!("{:.0} ms", ms(at)))
        );
    }
    let median = |f: fn(&Round) -> Duration| {
        let mut values: Vec<Duration> = rounds.iter().map(f).collect();
        values.sort();
        ms(values[values.len() / 2])
    };
    let _ = writeln!(
        table,
        "| median | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | |\n\n{checked}",
        median(|r| r.promote),
        median(|r| r.switch),
        median(|r| r.publish),
        median(|r| r.receive),
        median(|r| r.slowest_publish)
    );
    Ok(table)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn measure(topology: &Topology) -> Result<(Vec<Round>, String), String> {
    let mut rounds = Vec::new();
    let config = || {
        RedisHubConfig::through_sentinel(SentinelConfig::new(topology.sentinels(), NAME))
            .with_prefix("failover")
            .with_max_messages(1_000_000)
    };
    let a = RedisHub::connect(config())
        .await
        .map_err(|e| e.to_string())?;
    let b = RedisHub::connect(config())
        .await
        .map_err(|e| e.to_string())?;
    let channel: ChannelName = "bench"
        .parse()
        .map_err(|e: push_core::Error| e.to_string())?;
    let seen = Shared::default();
    let subscriber = {
        let mut subscription = b
            .subscribe(&channel, Start::Live)
            .await
            .map_err(|e| e.to_string())?;
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some(item) = subscription.next().await {
                let mut seen = lock(&seen);
                match item {
                    Item::Message(message) => seen.received.push((
                        Instant::now(),
                        message.cursor(),
                        String::from_utf8_lossy(message.data()).into_owned(),
                    )),
                    Item::Signal(_) => seen.resets += 1,
                }
            }
        })
    };
    let publisher = {
        let (a, channel, seen) = (a.clone(), channel.clone(), seen.clone());
        tokio::spawn(async move {
            for i in 0u64.. {
                let Ok(key) = format!("k{i}").parse() else {
                    return;
                };
                let publication = Publication::new(i.to_string()).with_key(key);
                let started = Instant::now();
                loop {
                    if let Ok(cursor) = a.publish(&channel, publication.clone()).await {
                        let took = started.elapsed();
                        lock(&seen)
                            .confirmed
                            .push((Instant::now(), i.to_string(), cursor, took));
                        break;
                    }
                    tokio::time::sleep(RETRY).await;
                }
                tokio::time::sleep(PACE).await;
            }
        })
    };
    let outcome = async {
        for _ in 0..ROUNDS {
            rounds.push(topology.round(&seen).await?);
        }
        Ok::<(), String>(())
    }
    .await;
    publisher.abort();
    let _ = publisher.await;
    outcome?;
    // Let the last publishes arrive, then check the history.
    let history = within("the history", b.read(&channel, Start::Earliest, 1_000_000))
        .await?
        .map_err(|e| e.to_string())?;
    subscriber.abort();
    let stored: HashMap<String, Cursor> = history
        .messages
        .iter()
        .map(|m| (String::from_utf8_lossy(m.data()).into_owned(), m.cursor()))
        .collect();
    if stored.len() != history.messages.len() {
        return Err("a key was stored twice".into());
    }
    let seen = lock(&seen);
    let last_epoch = history.cursor.epoch();
    let mut rolled_back = 0;
    for (at, data, cursor, _) in &seen.confirmed {
        match stored.get(data) {
            Some(_) => {}
            None if cursor.epoch() != last_epoch => {
                rolled_back += 1;
                if let Some(round) = rounds.iter_mut().rev().find(|r| r.started < *at) {
                    round.rolled_back += 1;
                    round.rolled_back_until = Some(*at - round.started);
                }
            }
            None => return Err(format!("{data} confirmed in the last epoch, not stored")),
        }
    }
    let checked = format!(
        "Checked: {} publishes confirmed, {} stored, each once; {rolled_back} rolled back \
         (confirmed by an old master after the promotion; their subscribers got a reset); \
         the subscriber got {} resets ({} failovers).",
        seen.confirmed.len(),
        stored.len(),
        seen.resets,
        rounds.len()
    );
    Ok((rounds, checked))
}

async fn within<T>(what: &str, future: impl Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(PATIENCE, future)
        .await
        .map_err(|_| format!("failover: timed out waiting for {what}"))
}

/// A master, its replica, three sentinels, killed on drop.
struct Topology {
    sentinel_ports: Vec<u16>,
    _children: Vec<Child>,
    dir: PathBuf,
}

impl Drop for Topology {
    fn drop(&mut self) {
        if std::env::var_os("PUSH_BENCH_DEBUG").is_some() {
            eprintln!("kept {}", self.dir.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

fn spawn(binary: &std::path::Path, args: &[String]) -> Result<Child, String> {
    Command::new(binary)
        .args(args)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting redis-server: {e}"))
}

/// A connection to the Redis or sentinel on `port`.
async fn connect(port: u16) -> Result<redis::aio::MultiplexedConnection, String> {
    let client = redis::Client::open(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    within("a connection", client.get_multiplexed_async_connection())
        .await?
        .map_err(|e| e.to_string())
}

impl Topology {
    async fn start(binary: &std::path::Path) -> Result<Topology, String> {
        let dir = std::env::temp_dir().join(format!("push-bench-failover-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let (master, replica) = (free_port()?, free_port()?);
        // Each server in a directory of its own (a full resync writes an
        // RDB file there, and a start would load it).
        let server = |port: u16| -> Result<Vec<String>, String> {
            let own = dir.join(port.to_string());
            std::fs::create_dir_all(&own).map_err(|e| e.to_string())?;
            let own = own.display().to_string();
            Ok([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--dir",
                &own,
                "--save",
                "",
                "--appendonly",
                "no",
            ]
            .map(String::from)
            .to_vec())
        };
        let mut children = vec![spawn(binary, &server(master)?)?];
        let mut args = server(replica)?;
        args.extend(["--replicaof".into(), "127.0.0.1".into(), master.to_string()]);
        children.push(spawn(binary, &args)?);
        let mut sentinel_ports = Vec::new();
        for _ in 0..3 {
            let port = free_port()?;
            let file = dir.join(format!("sentinel-{port}.conf"));
            std::fs::write(
                &file,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\n\
                     sentinel monitor {NAME} 127.0.0.1 {master} 2\n\
                     sentinel down-after-milliseconds {NAME} 1000\n\
                     sentinel failover-timeout {NAME} 3000\nlogfile {}\n",
                    dir.display(),
                    dir.join(format!("sentinel-{port}.log")).display()
                ),
            )
            .map_err(|e| e.to_string())?;
            children.push(spawn(
                binary,
                &[file.display().to_string(), "--sentinel".into()],
            )?);
            sentinel_ports.push(port);
        }
        Ok(Topology {
            sentinel_ports,
            _children: children,
            dir,
        })
    }

    fn sentinels(&self) -> Vec<(String, u16)> {
        self.sentinel_ports
            .iter()
            .map(|port| ("127.0.0.1".to_owned(), *port))
            .collect()
    }

    /// Whether every sentinel could fail the master over now: quorum, and
    /// a replica with its link up.
    async fn ready(&self) -> bool {
        for &port in &self.sentinel_ports {
            let Ok(mut sentinel) = connect(port).await else {
                return false;
            };
            let quorum: Result<String, _> = redis::cmd("SENTINEL")
                .arg("CKQUORUM")
                .arg(NAME)
                .query_async(&mut sentinel)
                .await;
            if !quorum.is_ok_and(|q| q.starts_with("OK 3 usable")) {
                return false;
            }
            let replicas: Result<Vec<HashMap<String, String>>, _> = redis::cmd("SENTINEL")
                .arg("REPLICAS")
                .arg(NAME)
                .query_async(&mut sentinel)
                .await;
            let linked = replicas.is_ok_and(|replicas| {
                replicas.iter().any(|r| {
                    r.get("flags").map(String::as_str) == Some("slave")
                        && r.get("master-link-status").map(String::as_str) == Some("ok")
                })
            });
            if !linked {
                return false;
            }
        }
        true
    }

    /// Waits until the sentinels could fail the master over.
    async fn wait_ready(&self) -> Result<(), String> {
        within("the sentinels to be ready", async {
            // Sentinel state, with no event to wait on: looked at often.
            while !self.ready().await {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
    }

    /// One failover, measured.
    async fn round(&self, seen: &Shared) -> Result<Round, String> {
        self.wait_ready().await?;
        let before = within("a first publish", async {
            loop {
                if let Some(last) = lock(seen).confirmed.last() {
                    return last.2.epoch();
                }
                tokio::time::sleep(PACE).await;
            }
        })
        .await?;
        let client = redis::Client::open(("127.0.0.1", self.sentinel_ports[0]))
            .map_err(|e| e.to_string())?;
        let mut switches = within("a subscription", client.get_async_pubsub())
            .await?
            .map_err(|e| e.to_string())?;
        switches
            .subscribe(&[PROMOTING, SWITCHED])
            .await
            .map_err(|e| e.to_string())?;
        let mut sentinel = connect(self.sentinel_ports[0]).await?;
        let started = Instant::now();
        let _: () = redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(NAME)
            .query_async(&mut sentinel)
            .await
            .map_err(|e| format!("SENTINEL FAILOVER: {e}"))?;
        let (mut promote, mut switch) = (None, None);
        let mut announcements = switches.on_message();
        while switch.is_none() {
            let Some(message) = within("+switch-master", announcements.next()).await? else {
                return Err("the sentinel's announcements ended".into());
            };
            match message.get_channel_name() {
                PROMOTING => promote = promote.or(Some(started.elapsed())),
                _ => switch = Some(started.elapsed()),
            }
        }
        drop(announcements);
        let switch = switch.unwrap_or_default();
        let promote = promote.unwrap_or(switch);
        let (publish, receive) = within("the new master in use", async {
            loop {
                {
                    let seen = lock(seen);
                    let publish = seen
                        .confirmed
                        .iter()
                        .find(|c| c.0 > started && c.2.epoch() != before);
                    // A message published on the new master (not the
                    // retained ones replayed after the reset).
                    let receive = publish.and_then(|publish| {
                        seen.received.iter().find(|r| {
                            r.0 > started
                                && r.1.epoch() != before
                                && index(&r.2) >= index(&publish.1)
                        })
                    });
                    if let (Some(publish), Some(receive)) = (publish, receive) {
                        return (publish.0 - started, receive.0 - started);
                    }
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await?;
        // One publish at a time: those of the switch are all confirmed.
        let slowest_publish = lock(seen)
            .confirmed
            .iter()
            .filter(|c| c.0 > started)
            .map(|c| c.3)
            .max()
            .unwrap_or_default();
        Ok(Round {
            rolled_back: 0,
            rolled_back_until: None,
            started,
            promote,
            switch,
            publish,
            receive,
            slowest_publish,
        })
    }
}
