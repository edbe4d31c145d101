//! push-server behind a real nginx (Debian's), configured with exactly the
//! server block of docs/recipes.md "Behind nginx" (read from the file, so the
//! test follows the doc), without TLS: `listen 127.0.0.1:PORT;` instead of
//! `listen 443 ssl;`, and no `http2 on;` (nginx speaks HTTP/2 to browsers only
//! over TLS). Through it: SSE unbuffered (each event arrives alone, before the
//! next is published), the WebSocket upgrade (with a browser's `Origin`), a
//! long poll held for its whole timeout (and, in a location whose
//! `proxy_read_timeout` is shorter than the hold, nginx's `504`: why the
//! recipe sets it), and a resume through nginx after a drop.
//!
//! nginx is found as `PUSH_TEST_NGINX`, `/usr/sbin/nginx` or `nginx` on the
//! `PATH`; missing, the test says so loudly and passes, except under
//! `CI=true`, where it fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../../tests/support/mod.rs"]
mod support;

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::Running;
use http::StatusCode;
use push_core::Start;
use push_live::longpoll::{LongPoller, LongPollerConfig};
use push_live::sse::{EventSource, EventSourceConfig};
use push_live::ws::{WsClientConfig, WsSubscriber};
use support::{drive, next_data, within};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// The recipe whose server block this test runs.
const RECIPES: &str = include_str!("../../../docs/recipes.md");

/// How long an event may take through nginx to count as "in time": far
/// above a local hop, far below any buffer's flush.
const IN_TIME: Duration = Duration::from_secs(2);

fn nginx_binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("PUSH_TEST_NGINX") {
        return Some(path.into());
    }
    let sbin = Path::new("/usr/sbin/nginx");
    if sbin.exists() {
        return Some(sbin.into());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.exists())
}

/// The recipe's `nginx` block, as docs/recipes.md shows it.
fn recipe() -> &'static str {
    let section = RECIPES
        .split_once("## Behind nginx")
        .expect("docs/recipes.md has no \"Behind nginx\" section")
        .1;
    let block = section
        .split_once("```nginx\n")
        .expect("the nginx section has no nginx block")
        .1;
    block.split_once("```").unwrap().0
}

/// The recipe for this machine: push at `upstream`, nginx on `port`, no TLS
/// and no HTTP/2; plus `/short/longpoll/`, the recipe's long-poll location
/// with a 1 s `proxy_read_timeout`.
fn configured(upstream: SocketAddr, port: u16) -> String {
    let mut out = String::new();
    for line in recipe().lines() {
        let trimmed = line.trim_start();
        let line = if trimmed.starts_with("server 127.0.0.1:8080;") {
            format!("    server {upstream};")
        } else if trimmed.starts_with("listen 443 ssl;") {
            format!("    listen 127.0.0.1:{port};")
        } else if trimmed.starts_with("http2 on;") || trimmed.starts_with("# ssl_certificate") {
            continue;
        } else {
            line.to_owned()
        };
        out.push_str(&line);
        out.push('\n');
    }
    for expected in [
        format!("server {upstream};"),
        format!("listen 127.0.0.1:{port};"),
    ] {
        assert!(
            out.contains(&expected),
            "the recipe changed shape: {expected:?} not made"
        );
    }
    let short = "    location /short/longpoll/ {\n\
        \x20       proxy_pass http://push/longpoll/;\n\
        \x20       proxy_read_timeout 1s;\n\
        \x20   }\n}";
    let end = out.trim_end().rfind('}').unwrap();
    out.replace_range(end.., short);
    out.push('\n');
    out
}

/// nginx in the foreground, one process, everything it writes in a temp dir.
struct Nginx {
    addr: SocketAddr,
    dir: PathBuf,
    child: Child,
}

impl Nginx {
    async fn start(binary: &Path, upstream: SocketAddr) -> Nginx {
        let dir = std::env::temp_dir().join(format!("push-nginx-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let port = {
            let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
            probe.local_addr().unwrap().port()
        };
        let d = dir.display();
        let config = format!(
            "pid {d}/nginx.pid;\n\
             error_log {d}/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
             access_log {d}/access.log;\n\
             client_body_temp_path {d}/body;\n\
             proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n\
             uwsgi_temp_path {d}/uwsgi;\n\
             scgi_temp_path {d}/scgi;\n\
             {}\n}}\n",
            configured(upstream, port)
        );
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, &config).unwrap();
        let child = Command::new(binary)
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off; master_process off;"])
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut nginx = Nginx { addr, dir, child };
        within("nginx to listen", async {
            loop {
                if TcpStream::connect(addr).await.is_ok() {
                    return;
                }
                if let Some(status) = nginx.child.try_wait().unwrap() {
                    panic!("nginx exited ({status}): {}", nginx.error_log());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        nginx
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://{}{path}", self.addr)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Publishes `data` on `channel` through nginx; the message's id.
async fn publish(nginx: &Nginx, channel: &str, data: &str) -> String {
    let answer = support::request(
        nginx.addr,
        "POST",
        &format!("/pub/{channel}"),
        &[],
        data.to_owned(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "publish {data}");
    answer.json()["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_technique_through_nginx_with_the_recipes_configuration() {
    let Some(binary) = nginx_binary() else {
        assert!(
            !std::env::var("CI").is_ok_and(|ci| ci == "true"),
            "nginx is not installed under CI=true (apt-get install -y nginx)"
        );
        eprintln!(
            "\n*** SKIPPED: nginx is not installed; install it with: apt-get install -y nginx\n"
        );
        return;
    };
    let push = Running::start(&[]).await;
    let nginx = Nginx::start(&binary, push.addr).await;
    let backoff = (Duration::from_millis(20), Duration::from_millis(200));

    // SSE, unbuffered: each event arrives, alone, before the next is published.
    let mut sse = drive(
        EventSource::connect(
            &nginx.url("http", "/sse/news"),
            EventSourceConfig::default()
                .with_start(Start::Live)
                .with_retry(backoff.0, backoff.1),
        )
        .await
        .unwrap(),
    );
    // A WebSocket subscriber through the upgrade.
    let mut ws = drive(
        WsSubscriber::connect(
            &nginx.url("ws", "/ws/news"),
            WsClientConfig::default()
                .with_start(Start::Live)
                .with_backoff(backoff.0, backoff.1),
        )
        .await
        .unwrap(),
    );
    // Both are subscribed once a subscriber count says so.
    within("both subscribers at push", async {
        loop {
            let answer = support::get(push.addr, "/channels/news", &[]).await;
            let subscribers = &answer.json()["subscribers"];
            if subscribers["sse"] == 1 && subscribers["ws"] == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    for round in 0..5 {
        let data = format!("m{round}");
        let sent = Instant::now();
        publish(&nginx, "news", &data).await;
        assert_eq!(next_data(&mut sse).await, data, "sse, round {round}");
        assert!(
            sent.elapsed() < IN_TIME,
            "sse round {round}: {:?}",
            sent.elapsed()
        );
        assert_eq!(next_data(&mut ws).await, data, "ws, round {round}");
        assert!(
            sent.elapsed() < IN_TIME,
            "ws round {round}: {:?}",
            sent.elapsed()
        );
    }

    // The WebSocket handshake as a browser on nginx's origin sends it.
    let mut stream = TcpStream::connect(nginx.addr).await.unwrap();
    let origin = nginx.url("http", "");
    let head = format!(
        "GET /ws/news HTTP/1.1\r\nHost: {}\r\nOrigin: {origin}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        nginx.addr
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut seen = String::new();
    support::read_until(&mut stream, &mut seen, "\r\n\r\n").await;
    assert!(
        seen.starts_with("HTTP/1.1 101"),
        "a browser's upgrade through nginx: {seen}"
    );
    drop(stream);

    // A long poll held for its whole timeout: 204 through nginx.
    let started = Instant::now();
    let held = support::get(nginx.addr, "/longpoll/quiet?timeout=2", &[]).await;
    assert_eq!(held.status, StatusCode::NO_CONTENT, "held for its timeout");
    assert!(started.elapsed() >= Duration::from_secs(2));
    // With proxy_read_timeout (1 s) shorter than the hold (2 s): nginx's 504.
    let short = support::get(nginx.addr, "/short/longpoll/quiet?timeout=2", &[]).await;
    assert_eq!(
        short.status,
        StatusCode::GATEWAY_TIMEOUT,
        "nginx gave up first"
    );
    // And the project's long poller through nginx gets a message.
    let mut longpoll = drive(
        LongPoller::connect(
            &nginx.url("http", "/longpoll/news"),
            LongPollerConfig::default()
                .with_start(Start::Earliest)
                .with_hold(Duration::from_secs(2))
                .with_backoff(backoff.0, backoff.1),
        )
        .await
        .unwrap(),
    );
    for round in 0..5 {
        assert_eq!(next_data(&mut longpoll).await, format!("m{round}"));
    }

    // Resume: drop an event stream, publish, reconnect with Last-Event-ID.
    let (mut stream, head) = support::open_sse(nginx.addr, "/sse/resume", "").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        !head.contains("X-Accel-Buffering"),
        "nginx keeps that header to itself"
    );
    let first = publish(&nginx, "resume", "r1").await;
    let mut seen = head;
    support::read_until(&mut stream, &mut seen, "data: r1\n").await;
    drop(stream);
    publish(&nginx, "resume", "r2").await;
    publish(&nginx, "resume", "r3").await;
    let (mut stream, head) = support::open_sse(
        nginx.addr,
        "/sse/resume",
        &format!("Last-Event-ID: {first}\r\n"),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // What came with the head is the stream's start.
    let mut seen = head;
    support::read_until(&mut stream, &mut seen, "data: r3\n").await;
    let data: Vec<&str> = seen
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .collect();
    assert_eq!(
        data,
        ["r2", "r3"],
        "everything missed, once, in order: {seen}"
    );
    drop(stream);

    let log = nginx.error_log();
    assert!(
        !log.contains("[emerg]") && !log.contains("[crit]"),
        "nginx's error log: {log}"
    );
}
