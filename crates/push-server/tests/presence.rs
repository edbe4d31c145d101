//! Presence through push-server, as users meet it: subscribers named by
//! their token's `sub` on every technique are listed by
//! `GET /presence/{channel}` and announced (`push.join`, `push.leave`) to
//! the subscribers that ask (`presence=1`), and to no one else; a poller
//! leaves once it stops polling; on Redis, a subscriber on one node is
//! seen from another, and the subscribers of a node killed with SIGKILL
//! leave within the presence lease.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../push-redis/tests/common/mod.rs"]
mod redis;
#[path = "../../../tests/support/mod.rs"]
mod support;
#[path = "../../../tests/support/ws.rs"]
mod ws_support;

mod common;

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use common::Running;
use http::StatusCode;
use push_server::auth::JwtVerifier;
use serde_json::json;
use support::{get, open_sse, within};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;

const SECRET: &str = "jwt secret for the tests, 32 bytes+";

fn token(user: Option<&str>) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let mut claims = json!({"exp": exp, "channels": ["room"]});
    if let Some(user) = user {
        claims["sub"] = json!(user);
    }
    JwtVerifier::new(SECRET.as_bytes()).unwrap().sign(&claims)
}

/// An event stream read by hand, its events parsed as they come.
struct Events {
    stream: TcpStream,
    seen: String,
    read: usize,
}

impl Events {
    async fn open(addr: SocketAddr, path: &str) -> Events {
        let (stream, seen) = open_sse(addr, path, "").await;
        assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
        let read = seen.find("\r\n\r\n").unwrap() + 4;
        Events { stream, seen, read }
    }

    /// The next event: `(event, data)` (`message` when it names none).
    async fn next(&mut self) -> (String, String) {
        within("an event", async {
            loop {
                if let Some(end) = self.seen[self.read..].find("\n\n") {
                    let block = self.seen[self.read..self.read + end].to_owned();
                    self.read += end + 2;
                    let (mut event, mut data) = ("message".to_owned(), None);
                    for line in block.lines() {
                        if let Some(name) = line.strip_prefix("event: ") {
                            event = name.to_owned();
                        } else if let Some(text) = line.strip_prefix("data: ") {
                            data = Some(text.to_owned());
                        }
                    }
                    if let Some(data) = data {
                        return (event, data);
                    }
                    continue;
                }
                let mut buffer = [0u8; 4096];
                let n = self.stream.read(&mut buffer).await.unwrap();
                assert!(n > 0, "the stream ended: {}", self.seen);
                self.seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        })
        .await
    }

    /// The next join or leave: `(event, user, technique)`.
    async fn next_presence(&mut self) -> (String, String, String) {
        loop {
            let (event, data) = self.next().await;
            if event.starts_with("push.") {
                let data: serde_json::Value = serde_json::from_str(&data).unwrap();
                return (
                    event,
                    data["user"].as_str().unwrap().to_owned(),
                    data["technique"].as_str().unwrap().to_owned(),
                );
            }
        }
    }
}

fn change(event: &str, user: &str, technique: &str) -> (String, String, String) {
    (event.to_owned(), user.to_owned(), technique.to_owned())
}

async fn presence(addr: SocketAddr) -> serde_json::Value {
    let answer = get(addr, &format!("/presence/room?token={}", token(None)), &[]).await;
    assert_eq!(answer.status, StatusCode::OK);
    answer.json()
}

#[tokio::test]
async fn users_on_every_technique_are_listed_and_announced_to_those_who_ask() {
    let server = Running::start(&["--jwt-secret", SECRET, "--poll-interval", "1"]).await;
    let addr = server.addr;
    let mut watcher = Events::open(
        addr,
        &format!("/sse/room?presence=1&token={}", token(Some("watcher"))),
    )
    .await;
    let mut uninterested = Events::open(addr, &format!("/sse/room?token={}", token(None))).await;
    assert_eq!(
        watcher.next_presence().await,
        change("push.join", "watcher", "sse")
    );

    let alice = Events::open(addr, &format!("/sse/room?token={}", token(Some("alice")))).await;
    assert_eq!(
        watcher.next_presence().await,
        change("push.join", "alice", "sse")
    );
    let bob = ws_support::open(addr, &format!("/ws/room?token={}", token(Some("bob"))), &[])
        .await
        .unwrap();
    assert_eq!(
        watcher.next_presence().await,
        change("push.join", "bob", "ws")
    );
    let carol = get(
        addr,
        &format!("/longpoll/room?timeout=0&token={}", token(Some("carol"))),
        &[],
    )
    .await;
    assert_eq!(carol.status, StatusCode::NO_CONTENT);
    assert_eq!(
        watcher.next_presence().await,
        change("push.join", "carol", "longpoll")
    );
    let dave = get(
        addr,
        &format!("/poll/room?token={}", token(Some("dave"))),
        &[],
    )
    .await;
    assert_eq!(dave.status, StatusCode::OK);
    assert_eq!(
        watcher.next_presence().await,
        change("push.join", "dave", "poll")
    );

    let listed = presence(addr).await;
    let users: Vec<_> = listed["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user"].as_str().unwrap())
        .collect();
    assert_eq!(
        users,
        ["alice", "bob", "carol", "dave", "watcher"],
        "{listed}"
    );
    assert_eq!(
        listed["users"][1]["connections"],
        json!({"ws": 1}),
        "{listed}"
    );
    assert_eq!(listed["anonymous"], json!({"sse": 1}), "{listed}");
    assert_eq!(listed["connections"]["sse"], 3, "{listed}");

    drop(alice);
    assert_eq!(
        watcher.next_presence().await,
        change("push.leave", "alice", "sse")
    );
    drop(bob);
    assert_eq!(
        watcher.next_presence().await,
        change("push.leave", "bob", "ws")
    );
    // The pollers stop: each leaves once its interval and the grace pass.
    let mut left = vec![watcher.next_presence().await, watcher.next_presence().await];
    left.sort();
    assert_eq!(
        left,
        [
            change("push.leave", "carol", "longpoll"),
            change("push.leave", "dave", "poll")
        ]
    );

    // Who did not ask saw none of it: only the message published now.
    let published = support::request(addr, "POST", "/pub/room", &[], "hello".to_owned()).await;
    assert_eq!(published.status, StatusCode::OK);
    assert_eq!(
        uninterested.next().await,
        ("message".to_owned(), "hello".to_owned())
    );
    assert!(
        !uninterested.seen.contains("push.join"),
        "{}",
        uninterested.seen
    );
    let after = presence(addr).await;
    assert_eq!(after["user_count"], 1, "{after}");
}

#[tokio::test]
async fn on_redis_a_killed_nodes_subscribers_leave_within_the_lease() {
    let Some(redis) = redis::RedisServer::any().await else {
        return;
    };
    let prefix = redis::prefix();
    let args = |prefix: &str| {
        [
            "--jwt-secret".to_owned(),
            SECRET.to_owned(),
            "--redis-url".to_owned(),
            redis.url.clone(),
            "--redis-prefix".to_owned(),
            prefix.to_owned(),
            "--presence-lease".to_owned(),
            "1".to_owned(),
        ]
    };
    let a_args = args(&prefix);
    let a = Running::start(&a_args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let b = Running::start(&a_args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let mut watcher = Events::open(
        b.addr,
        &format!("/sse/room?presence=1&token={}", token(Some("watcher"))),
    )
    .await;
    assert_eq!(
        watcher.next_presence().await,
        change("push.join", "watcher", "sse")
    );
    let _alice = Events::open(a.addr, &format!("/sse/room?token={}", token(Some("alice")))).await;
    assert_eq!(
        watcher.next_presence().await,
        change("push.join", "alice", "sse")
    );
    let listed = presence(b.addr).await;
    assert_eq!(listed["user_count"], 2, "{listed}");

    // SIGKILL: no goodbye from a. b drops its lapsed lease and says so.
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &a.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert_eq!(
        watcher.next_presence().await,
        change("push.leave", "alice", "sse")
    );
    let listed = presence(b.addr).await;
    assert_eq!(listed["user_count"], 1, "{listed}");
    drop(a);
}
