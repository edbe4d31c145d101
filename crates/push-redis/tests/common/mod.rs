//! A real `redis-server` for the tests: started on a free port with
//! persistence off (a `SAVE` still writes a snapshot, into a directory of
//! the server's own, which a restart then loads), stopped, restarted,
//! paused and resumed by the fault tests, killed with the test. The binary comes from `PUSH_TEST_REDIS_SERVER` (set by `cargo
//! xtask test`) or the `PATH`; without one, a test uses `PUSH_TEST_REDIS_URL`
//! when it can, else says so loudly and is skipped (a failure under
//! `CI=true`).
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub mod cluster;
pub mod sentinel;

use push_redis::{RedisHub, RedisHubConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// The safety net of every wait.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

pub struct RedisServer {
    pub url: String,
    port: u16,
    binary: Option<String>,
    child: Option<Child>,
    /// Where a `SAVE` writes its snapshot, and a start loads it from.
    dir: Option<std::path::PathBuf>,
    /// More arguments for every start.
    extra: Vec<String>,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

pub fn binary() -> Option<String> {
    if let Ok(path) = std::env::var("PUSH_TEST_REDIS_SERVER")
        && !path.is_empty()
    {
        return Some(path);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| candidate.is_file())
        .map(|p| p.display().to_string())
}

pub fn skip<T>(why: &str) -> Option<T> {
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("{why} (CI=true: a failure, not a skip)");
    }
    eprintln!(
        "\n*** SKIPPED: {why}.\n*** Install Redis (`apt-get install -y redis-server`), \
         or run `cargo xtask test`, which starts one.\n"
    );
    None
}

impl RedisServer {
    /// A server of this test's own (needed to stop and restart it).
    pub async fn own() -> Option<RedisServer> {
        Self::own_with(&[]).await
    }

    /// A server of this test's own, started with `extra` arguments too
    /// (`--replicaof 127.0.0.1 PORT`).
    pub async fn own_with(extra: &[&str]) -> Option<RedisServer> {
        let Some(binary) = binary() else {
            return skip("redis-server is not installed");
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("push-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = RedisServer {
            url: format!("redis://127.0.0.1:{port}/"),
            port,
            binary: Some(binary),
            child: None,
            dir: Some(dir),
            extra: extra.iter().map(|arg| (*arg).to_owned()).collect(),
        };
        server.start_process().await;
        Some(server)
    }

    /// A server of its own, or the one of `PUSH_TEST_REDIS_URL`.
    pub async fn any() -> Option<RedisServer> {
        if binary().is_none()
            && let Ok(url) = std::env::var("PUSH_TEST_REDIS_URL")
        {
            return Some(RedisServer {
                url,
                port: 0,
                binary: None,
                child: None,
                dir: None,
                extra: Vec::new(),
            });
        }
        Self::own().await
    }

    async fn start_process(&mut self) {
        let binary = self.binary.as_ref().expect("a server of our own");
        let dir = self.dir.as_ref().expect("a server of our own");
        let child = Command::new(binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir)
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            // `MAXLEN ~` trims whole stream nodes: small nodes let small
            // histories run out, as the gap tests need.
            .args(["--stream-node-max-entries", "4"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let port = self.port;
        within("redis-server to answer PING", async move {
            loop {
                if ping(port).await {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server with `SIGKILL` (what it holds in memory is gone;
    /// a snapshot written by `SAVE` stays).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }

    /// Starts it again on the same port, and returns once it answers PING:
    /// empty, or with the last `SAVE`'s snapshot if there was one.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_process().await;
    }

    /// Sends the server process a signal (`"STOP"`, `"CONT"`).
    pub async fn signal(&self, signal: &str) {
        let pid = self
            .child
            .as_ref()
            .and_then(Child::id)
            .expect("a running server of our own");
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .await
            .unwrap();
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// A command over a plain connection (RESP), e.g. `CLIENT KILL TYPE pubsub`.
    pub async fn command(&self, args: &[&str]) -> String {
        command_at(&self.url, args).await
    }
}

/// A command to the Redis at `url` over a plain connection (RESP); the
/// start of its answer, as text.
pub async fn command_at(url: &str, args: &[&str]) -> String {
    let addr = url.trim_start_matches("redis://").trim_end_matches('/');
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buffer = vec![0u8; 4096];
    let read = stream.read(&mut buffer).await.unwrap();
    String::from_utf8_lossy(&buffer[..read]).into_owned()
}

async fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if stream.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut buffer = [0u8; 16];
    matches!(stream.read(&mut buffer).await, Ok(n) if buffer[..n].starts_with(b"+PONG"))
}

/// A key prefix no other test uses.
pub fn prefix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "t{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A hub (one node) on `server`.
pub async fn hub(
    server: &RedisServer,
    prefix: &str,
    configure: impl FnOnce(RedisHubConfig) -> RedisHubConfig,
) -> RedisHub {
    let config = configure(RedisHubConfig::new(server.url.clone()).with_prefix(prefix));
    RedisHub::connect(config).await.unwrap()
}
