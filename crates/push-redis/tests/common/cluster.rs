//! A Redis Cluster for the tests: six `redis-server --cluster-enabled yes`
//! on free ports (each with a directory of its own for `nodes.conf`),
//! joined by `redis-cli --cluster create … --cluster-replicas 1
//! --cluster-yes` into three primaries with a replica each, with a
//! `cluster-node-timeout` of 1 s so that a killed primary is replaced within
//! seconds. Ready when every node says `cluster_state:ok` and knows three
//! primaries and three replicas. All killed with the test.
//!
//! `redis-cli` comes from `PUSH_TEST_REDIS_CLI`, beside `redis-server`, or
//! the `PATH` (Debian's redis-server package pulls in redis-tools).

use std::time::Duration;

use push_redis::{RedisHub, RedisHubConfig};
use tokio::process::Command;

use super::sentinel::{Resp, query};
use super::{RedisServer, binary, skip, within};

/// How long a node goes unanswered before the cluster calls it failed.
pub const NODE_TIMEOUT_MS: u64 = 1_000;

/// The redis-cli to use.
pub fn cli() -> Option<String> {
    if let Ok(path) = std::env::var("PUSH_TEST_REDIS_CLI")
        && !path.is_empty()
    {
        return Some(path);
    }
    if let Some(server) = binary() {
        let beside = std::path::Path::new(&server).with_file_name("redis-cli");
        if beside.is_file() {
            return Some(beside.display().to_string());
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("redis-cli"))
        .find(|candidate| candidate.is_file())
        .map(|p| p.display().to_string())
}

/// One node as `CLUSTER NODES` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub id: String,
    pub port: u16,
    pub primary: bool,
    /// The primary's id, for a replica.
    pub replica_of: Option<String>,
    pub failed: bool,
    /// Slot ranges, for a primary.
    pub slots: Vec<(u16, u16)>,
}

/// Primaries' ports and slot ranges.
type Shards = Vec<(u16, Vec<(u16, u16)>)>;

/// Six nodes: three primaries, three replicas.
pub struct Cluster {
    pub servers: Vec<RedisServer>,
}

impl Cluster {
    /// Starts and joins the six nodes; `None` (a skip) without redis-server
    /// or redis-cli.
    pub async fn start() -> Option<Cluster> {
        if binary().is_none() {
            return skip("redis-server is not installed");
        }
        let Some(cli) = cli() else {
            return skip("redis-cli is not installed");
        };
        let timeout = NODE_TIMEOUT_MS.to_string();
        let mut servers = Vec::new();
        for _ in 0..6 {
            servers.push(
                RedisServer::own_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    &timeout,
                ])
                .await?,
            );
        }
        let mut create = Command::new(&cli);
        create.arg("--cluster").arg("create");
        for server in &servers {
            create.arg(format!("127.0.0.1:{}", server.port()));
        }
        let output = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .await
            .expect("redis-cli runs");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let cluster = Cluster { servers };
        cluster.settled(&[]).await;
        Some(cluster)
    }

    /// The seed URLs, comma-separated, as `--redis-url` takes them (two
    /// nodes: the hub learns the rest).
    pub fn seeds(&self) -> String {
        self.servers[..2]
            .iter()
            .map(|server| server.url.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A hub configuration for this cluster.
    pub fn config(&self, prefix: &str) -> RedisHubConfig {
        RedisHubConfig::cluster(self.seeds())
            .with_prefix(prefix)
            .with_probe_interval(Duration::from_millis(200))
            .with_probe_timeout(Duration::from_secs(2))
    }

    /// A hub (one node) on the cluster.
    pub async fn hub(
        &self,
        prefix: &str,
        configure: impl FnOnce(RedisHubConfig) -> RedisHubConfig,
    ) -> RedisHub {
        RedisHub::connect(configure(self.config(prefix)))
            .await
            .unwrap()
    }

    /// The ports of the nodes running now.
    fn alive(&self, dead: &[u16]) -> Vec<u16> {
        self.servers
            .iter()
            .map(RedisServer::port)
            .filter(|port| !dead.contains(port))
            .collect()
    }

    /// `CLUSTER NODES` as the node on `port` sees it.
    pub async fn nodes(port: u16) -> Vec<Node> {
        let answer = query(port, &["CLUSTER", "NODES"]).await;
        answer
            .text()
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                let address = fields[1].split('@').next().unwrap();
                let port = address.rsplit(':').next().unwrap().parse().unwrap();
                let flags = fields[2];
                let slots = fields[8..]
                    .iter()
                    .filter(|range| !range.starts_with('['))
                    .map(|range| match range.split_once('-') {
                        Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                        None => (range.parse().unwrap(), range.parse().unwrap()),
                    })
                    .collect();
                Node {
                    id: fields[0].to_owned(),
                    port,
                    primary: flags.contains("master"),
                    replica_of: (fields[3] != "-").then(|| fields[3].to_owned()),
                    failed: flags.split(',').any(|flag| flag == "fail"),
                    slots,
                }
            })
            .collect()
    }

    /// Waits until every live node says `cluster_state:ok` and agrees on
    /// three primaries that own all slots and are not failed (`dead`: ports
    /// killed, to be left out).
    pub async fn settled(&self, dead: &[u16]) -> Vec<Node> {
        let ports = self.alive(dead);
        within(
            "the cluster to settle",
            Box::pin(async {
                'wait: loop {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let mut seen: Option<Shards> = None;
                    let mut nodes = Vec::new();
                    for port in &ports {
                        let info = query(*port, &["CLUSTER", "INFO"]).await;
                        if !info.text().contains("cluster_state:ok") {
                            continue 'wait;
                        }
                        nodes = Self::nodes(*port).await;
                        let mut primaries: Shards = nodes
                            .iter()
                            .filter(|n| n.primary && !n.failed && !n.slots.is_empty())
                            .map(|n| (n.port, n.slots.clone()))
                            .collect();
                        primaries.sort();
                        let covered: u32 = primaries
                            .iter()
                            .flat_map(|(_, slots)| slots)
                            .map(|(a, b)| u32::from(b - a) + 1)
                            .sum();
                        if primaries.len() != 3
                            || covered != 16_384
                            || primaries.iter().any(|(port, _)| dead.contains(port))
                        {
                            continue 'wait;
                        }
                        if seen.as_ref().is_some_and(|seen| *seen != primaries) {
                            continue 'wait;
                        }
                        seen = Some(primaries);
                    }
                    return nodes;
                }
            }),
        )
        .await
    }

    /// The primary owning `slot`, and its replicas' ports.
    pub async fn owner(&self, slot: u16, dead: &[u16]) -> (Node, Vec<u16>) {
        let nodes = self.settled(dead).await;
        let primary = nodes
            .iter()
            .find(|n| {
                n.primary && !n.failed && n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
            })
            .expect("a primary owns every slot")
            .clone();
        let replicas = nodes
            .iter()
            .filter(|n| {
                n.replica_of.as_deref() == Some(primary.id.as_str()) && !dead.contains(&n.port)
            })
            .map(|n| n.port)
            .collect();
        (primary, replicas)
    }

    /// `CLUSTER FAILOVER` on the replica on `port`: a clean handover (the
    /// replica catches up first); returns once it is a primary everyone
    /// agrees on.
    pub async fn failover(&self, replica: u16, dead: &[u16]) {
        let answer = query(replica, &["CLUSTER", "FAILOVER"]).await;
        assert_eq!(answer, Resp::Simple("OK".into()), "CLUSTER FAILOVER");
        within("the replica to take over", async {
            loop {
                let nodes = Box::pin(self.settled(dead)).await;
                if nodes
                    .iter()
                    .any(|n| n.port == replica && n.primary && !n.slots.is_empty())
                {
                    return;
                }
            }
        })
        .await;
    }

    /// SIGKILL of the node on `port`.
    pub async fn kill(&mut self, port: u16) {
        let server = self
            .servers
            .iter_mut()
            .find(|server| server.port() == port)
            .expect("one of the cluster's nodes");
        server.stop().await;
    }

    /// Moves `slot` (its keys included) from its primary to `target`, the
    /// way `redis-cli --cluster reshard` does: `SETSLOT IMPORTING` /
    /// `MIGRATING`, `MIGRATE` of its keys in batches, then `SETSLOT NODE`
    /// on every primary.
    pub async fn migrate(&self, slot: u16, target: &Node, dead: &[u16]) {
        let (source, _) = self.owner(slot, dead).await;
        assert_ne!(source.id, target.id, "the slot is on the target already");
        let slot_text = slot.to_string();
        let ok = Resp::Simple("OK".into());
        let answer = query(
            target.port,
            &["CLUSTER", "SETSLOT", &slot_text, "IMPORTING", &source.id],
        )
        .await;
        assert_eq!(answer, ok, "SETSLOT IMPORTING");
        let answer = query(
            source.port,
            &["CLUSTER", "SETSLOT", &slot_text, "MIGRATING", &target.id],
        )
        .await;
        assert_eq!(answer, ok, "SETSLOT MIGRATING");
        let target_port = target.port.to_string();
        loop {
            let keys = query(source.port, &["CLUSTER", "GETKEYSINSLOT", &slot_text, "2"]).await;
            let keys: Vec<&str> = keys.items().iter().map(Resp::text).collect();
            if keys.is_empty() {
                break;
            }
            let mut migrate = vec![
                "MIGRATE",
                "127.0.0.1",
                &target_port,
                "",
                "0",
                "5000",
                "KEYS",
            ];
            migrate.extend(keys.iter().copied());
            let answer = query(source.port, &migrate).await;
            assert!(
                answer == ok || answer == Resp::Simple("NOKEY".into()),
                "MIGRATE: {answer:?}"
            );
            // A publisher keeps writing meanwhile: give it room between
            // batches (its scripts wait on TRYAGAIN while keys are split).
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let nodes = Self::nodes(target.port).await;
        for node in nodes
            .iter()
            .filter(|n| n.primary && !n.failed && !dead.contains(&n.port))
        {
            let answer = query(
                node.port,
                &["CLUSTER", "SETSLOT", &slot_text, "NODE", &target.id],
            )
            .await;
            assert_eq!(answer, ok, "SETSLOT NODE on {}", node.port);
        }
        within("the slot to move", async {
            loop {
                let (owner, _) = Box::pin(self.owner(slot, dead)).await;
                if owner.id == target.id {
                    return;
                }
            }
        })
        .await;
    }
}

impl Cluster {
    /// Channel names `c0`, `c1`, … until every primary owns at least
    /// `per_shard` of them (with key prefix `prefix`).
    pub async fn spread(&self, prefix: &str, per_shard: usize) -> Vec<String> {
        let nodes = self.settled(&[]).await;
        let port = nodes[0].port;
        let mut owned: std::collections::BTreeMap<u16, usize> = std::collections::BTreeMap::new();
        let mut names = Vec::new();
        for n in 0.. {
            let name = format!("c{n}");
            let slot = keyslot(port, &format!("{prefix}:{{{name}}}:meta")).await;
            let owner = nodes
                .iter()
                .find(|node| {
                    node.primary && node.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
                })
                .unwrap()
                .port;
            *owned.entry(owner).or_default() += 1;
            names.push(name);
            if owned.len() == 3 && owned.values().all(|count| *count >= per_shard) {
                return names;
            }
        }
        unreachable!()
    }
}

/// `CLUSTER KEYSLOT key`, asked of the node on `port`.
pub async fn keyslot(port: u16, key: &str) -> u16 {
    match query(port, &["CLUSTER", "KEYSLOT", key]).await {
        Resp::Int(slot) => u16::try_from(slot).unwrap(),
        other => panic!("CLUSTER KEYSLOT: {other:?}"),
    }
}
