//! A Redis Sentinel topology for the tests: a master, a replica of it
//! (`--replicaof`), and three sentinels (`redis-server FILE --sentinel`, each
//! with a config file of its own, writable, in a temporary directory)
//! monitoring it with quorum 2, `down-after-milliseconds` 500 and a short
//! `failover-timeout`. All on free ports, all killed with the test. Ready
//! when every sentinel answers `SENTINEL CKQUORUM` with OK for three and
//! knows the replica with its link to the master up.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use push_redis::{RedisHubConfig, SentinelConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use super::{RedisServer, binary, skip, within};

/// How long a sentinel waits before it calls an unanswering master down.
pub const DOWN_AFTER_MS: u64 = 500;
/// Sentinel's `failover-timeout` (a failed attempt is retried after twice it).
pub const FAILOVER_TIMEOUT_MS: u64 = 3_000;

/// One RESP2 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<String>),
    Array(Option<Vec<Resp>>),
}

impl Resp {
    /// A simple or bulk string's text ("" for anything else).
    pub fn text(&self) -> &str {
        match self {
            Resp::Simple(text) | Resp::Error(text) | Resp::Bulk(Some(text)) => text,
            _ => "",
        }
    }

    /// An array's items (none for anything else).
    pub fn items(&self) -> &[Resp] {
        match self {
            Resp::Array(Some(items)) => items,
            _ => &[],
        }
    }

    /// In a flat `key value key value …` array, the value of `key`.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.items()
            .chunks(2)
            .find(|pair| pair[0].text() == key)
            .and_then(|pair| pair.get(1))
            .map(Resp::text)
    }
}

/// One reply at the start of `buffer`, and its length; `None` while it is
/// incomplete.
fn parse(buffer: &[u8]) -> Option<(Resp, usize)> {
    let end = buffer.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&buffer[1..end]).unwrap();
    let after = end + 2;
    match buffer[0] {
        b'+' => Some((Resp::Simple(line.to_owned()), after)),
        b'-' => Some((Resp::Error(line.to_owned()), after)),
        b':' => Some((Resp::Int(line.parse().unwrap()), after)),
        b'$' => {
            let Ok(length) = usize::try_from(line.parse::<i64>().unwrap()) else {
                return Some((Resp::Bulk(None), after));
            };
            let data = buffer.get(after..after + length)?;
            buffer.get(after + length..after + length + 2)?;
            let text = String::from_utf8_lossy(data).into_owned();
            Some((Resp::Bulk(Some(text)), after + length + 2))
        }
        b'*' => {
            let Ok(count) = usize::try_from(line.parse::<i64>().unwrap()) else {
                return Some((Resp::Array(None), after));
            };
            let mut items = Vec::with_capacity(count);
            let mut at = after;
            for _ in 0..count {
                let (item, used) = parse(&buffer[at..])?;
                items.push(item);
                at += used;
            }
            Some((Resp::Array(Some(items)), at))
        }
        other => panic!(
            "not RESP2: {other:?} in {:?}",
            String::from_utf8_lossy(buffer)
        ),
    }
}

/// A plain connection speaking RESP2.
pub struct Conn {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Conn {
    pub async fn open(port: u16) -> Conn {
        Conn {
            stream: TcpStream::connect(("127.0.0.1", port)).await.unwrap(),
            buffer: Vec::new(),
        }
    }

    pub async fn send(&mut self, args: &[&str]) {
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        self.stream.write_all(request.as_bytes()).await.unwrap();
    }

    /// The next reply (waits for it).
    pub async fn reply(&mut self) -> Resp {
        loop {
            if let Some((reply, used)) = parse(&self.buffer) {
                self.buffer.drain(..used);
                return reply;
            }
            let mut chunk = [0u8; 4096];
            let read = self.stream.read(&mut chunk).await.unwrap();
            assert!(read > 0, "the connection closed mid-reply");
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }

    pub async fn query(&mut self, args: &[&str]) -> Resp {
        self.send(args).await;
        self.reply().await
    }
}

/// One command to the Redis (or sentinel) on `port`.
pub async fn query(port: u16, args: &[&str]) -> Resp {
    Conn::open(port).await.query(args).await
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A master, its replica, three sentinels.
pub struct Topology {
    /// The master's name on the sentinels.
    pub name: String,
    servers: Vec<RedisServer>,
    sentinel_ports: Vec<u16>,
    _sentinels: Vec<Child>,
    dir: PathBuf,
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Topology {
    /// Starts it and waits until it is ready; `None` (said loudly) when
    /// redis-server is missing.
    pub async fn start() -> Option<Topology> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let Some(binary) = binary() else {
            return skip("redis-server is not installed (Sentinel runs on it)");
        };
        let master = RedisServer::own().await?;
        let port = master.port().to_string();
        let replica = RedisServer::own_with(&["--replicaof", "127.0.0.1", &port]).await?;
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("m{id}");
        let dir = std::env::temp_dir().join(format!("push-sentinel-{}-{id}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut sentinels = Vec::new();
        let mut sentinel_ports = Vec::new();
        for _ in 0..3 {
            let sentinel_port = free_port();
            let file = dir.join(format!("sentinel-{sentinel_port}.conf"));
            std::fs::write(
                &file,
                format!(
                    "port {sentinel_port}\nbind 127.0.0.1\ndir {}\n\
                     sentinel monitor {name} 127.0.0.1 {port} 2\n\
                     sentinel down-after-milliseconds {name} {DOWN_AFTER_MS}\n\
                     sentinel failover-timeout {name} {FAILOVER_TIMEOUT_MS}\n",
                    dir.display()
                ),
            )
            .unwrap();
            let child = Command::new(&binary)
                .arg(&file)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .expect("redis-server --sentinel starts");
            sentinels.push(child);
            sentinel_ports.push(sentinel_port);
        }
        let topology = Topology {
            name,
            servers: vec![master, replica],
            sentinel_ports,
            _sentinels: sentinels,
            dir,
        };
        topology.ready().await;
        Some(topology)
    }

    /// Waits until every sentinel can fail the master over: a quorum of
    /// three, and the replica known with its link up.
    async fn ready(&self) {
        let replica = self.servers[1].port().to_string();
        within("the sentinels to be ready for a failover", async {
            for &port in &self.sentinel_ports {
                loop {
                    if self.sentinel_ready(port, &replica).await {
                        break;
                    }
                    // State with no event to wait on (sentinels find each
                    // other by hello messages, every 2 s).
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        })
        .await;
    }

    async fn sentinel_ready(&self, port: u16, replica: &str) -> bool {
        let Ok(stream) = TcpStream::connect(("127.0.0.1", port)).await else {
            return false;
        };
        let mut conn = Conn {
            stream,
            buffer: Vec::new(),
        };
        let quorum = conn.query(&["SENTINEL", "CKQUORUM", &self.name]).await;
        if !quorum.text().starts_with("OK 3 usable") {
            return false;
        }
        let replicas = conn.query(&["SENTINEL", "REPLICAS", &self.name]).await;
        replicas.items().iter().any(|r| {
            r.field("port") == Some(replica)
                && r.field("master-link-status") == Some("ok")
                && r.field("flags") == Some("slave")
        })
    }

    /// The sentinels' addresses.
    pub fn sentinels(&self) -> Vec<(String, u16)> {
        self.sentinel_ports
            .iter()
            .map(|port| ("127.0.0.1".to_owned(), *port))
            .collect()
    }

    /// The sentinels as `--redis-sentinel` takes them.
    pub fn sentinel_list(&self) -> String {
        let list: Vec<String> = self
            .sentinel_ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        list.join(",")
    }

    /// A hub configuration through these sentinels.
    pub fn config(&self, prefix: &str) -> RedisHubConfig {
        RedisHubConfig::through_sentinel(SentinelConfig::new(self.sentinels(), &self.name))
            .with_prefix(prefix)
    }

    /// The master's port, as the first sentinel says.
    pub async fn master_port(&self) -> u16 {
        let answer = query(
            self.sentinel_ports[0],
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", &self.name],
        )
        .await;
        answer.items()[1].text().parse().unwrap()
    }

    /// The port of the server that is not on `port`.
    pub fn replica_port(&self, port: u16) -> u16 {
        self.servers
            .iter()
            .map(RedisServer::port)
            .find(|other| *other != port)
            .expect("two servers")
    }

    /// The server on `port`.
    pub fn server(&self, port: u16) -> &RedisServer {
        self.servers
            .iter()
            .find(|server| server.port() == port)
            .expect("one of the topology's servers")
    }

    /// Listens to the first sentinel's `+switch-master`.
    pub async fn switches(&self) -> Switches {
        let mut conn = Conn::open(self.sentinel_ports[0]).await;
        let subscribed = conn.query(&["SUBSCRIBE", "+switch-master"]).await;
        assert_eq!(subscribed.items()[0].text(), "subscribe", "{subscribed:?}");
        Switches {
            conn,
            name: self.name.clone(),
        }
    }

    /// `SENTINEL FAILOVER`: a clean failover, whatever the master's state.
    pub async fn failover(&self) {
        let answer = query(
            self.sentinel_ports[0],
            &["SENTINEL", "FAILOVER", &self.name],
        )
        .await;
        assert_eq!(answer, Resp::Simple("OK".into()));
    }

    /// Kills the server on `port` with SIGKILL.
    pub async fn kill(&mut self, port: u16) {
        let server = self
            .servers
            .iter_mut()
            .find(|server| server.port() == port)
            .expect("one of the topology's servers");
        server.stop().await;
    }

    /// Has the master on `port` copy everything it took to its replica (so
    /// that what was confirmed before a failover survives it).
    pub async fn sync_replica(&self, port: u16) {
        let acknowledged = query(port, &["WAIT", "1", "10000"]).await;
        assert_eq!(acknowledged, Resp::Int(1), "the replica did not catch up");
    }
}

/// A sentinel's `+switch-master` announcements about the topology's master.
pub struct Switches {
    conn: Conn,
    name: String,
}

impl Switches {
    /// Waits for the next one; the new master's port.
    pub async fn next(&mut self) -> u16 {
        within("the sentinels to switch the master", async {
            loop {
                let message = self.conn.reply().await;
                let fields: Vec<&str> = message
                    .items()
                    .get(2)
                    .map_or("", Resp::text)
                    .split(' ')
                    .collect();
                if fields.len() == 5 && fields[0] == self.name {
                    return fields[4].parse().unwrap();
                }
            }
        })
        .await
    }
}
