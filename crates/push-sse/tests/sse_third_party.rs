//! A client nobody here wrote reads our stream: Node's `eventsource` package
//! (WHATWG-conformant) receives plain and named events, and after the server
//! goes away reconnects by itself with `Last-Event-ID` and resumes exactly.
//!
//! `cargo xtask test` installs the package and points `PUSH_TEST_NODE_PATH` at
//! it. Without it the test says so loudly and passes, except under `CI=true`,
//! where a missing third-party client is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../../tests/support/mod.rs"]
mod support;

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::Gate;
use push_core::{EventName, Hub, MemoryHub, Publication};
use push_sse::{SseConfig, SseHandler};
use serde_json::Value;
use support::{Server, until, within};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{ChildStdout, Command};

async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>) -> Value {
    let line = within("a line from node", lines.next_line())
        .await
        .unwrap()
        .expect("node ended");
    serde_json::from_str(&line).unwrap()
}

/// The next line that is an event (skipping `open` and `error` notices).
async fn next_event(lines: &mut Lines<BufReader<ChildStdout>>) -> Value {
    loop {
        let line = next_line(lines).await;
        if line["type"] != "open" && line["type"] != "error" {
            return line;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_eventsource_reads_and_resumes_with_last_event_id() {
    let Some(node_path) = support::node_path("Node's `eventsource` client") else {
        return;
    };
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/js/eventsource-client.cjs"
    );
    let hub = MemoryHub::new();
    let channel = "c".parse().unwrap();
    let config = SseConfig::default().with_retry(Duration::from_millis(50));
    let gate = Gate::new(SseHandler::new(hub.clone(), config.clone()));
    let server = Server::start(gate.clone()).await;
    let addr = server.addr;

    let first = hub
        .publish(&channel, Publication::new("one\r\ntwo"))
        .await
        .unwrap();
    let price = Publication::new("42").with_event("price".parse::<EventName>().unwrap());
    let second = hub.publish(&channel, price).await.unwrap();

    let mut node = Command::new("node")
        .arg(script)
        .arg(server.url("/sse/c?since=earliest"))
        .arg("price")
        .env("NODE_PATH", &node_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();
    assert_eq!(next_line(&mut lines).await["type"], "open");
    let event = next_event(&mut lines).await;
    assert_eq!(event["type"], "message");
    assert_eq!(event["id"], first.to_string());
    assert_eq!(event["data"], "one\ntwo");
    let event = next_event(&mut lines).await;
    assert_eq!(event["type"], "price");
    assert_eq!(event["id"], second.to_string());
    assert_eq!(event["data"], "42");

    // The server goes away; two messages are published meanwhile.
    server.stop().await;
    let third = hub
        .publish(&channel, Publication::new("three"))
        .await
        .unwrap();
    hub.publish(&channel, Publication::new("four"))
        .await
        .unwrap();
    let gate = Gate::new(SseHandler::new(hub.clone(), config));
    let _server = Server::start_at(addr, gate.clone()).await;

    // Node reconnects by itself, to the same URL, adding Last-Event-ID.
    let event = next_event(&mut lines).await;
    assert_eq!(
        (&event["id"], &event["data"]),
        (&Value::from(third.to_string()), &Value::from("three"))
    );
    assert_eq!(next_event(&mut lines).await["data"], "four");
    let seen = gate.seen.lock().unwrap().clone();
    assert_eq!(
        seen.last().unwrap().as_deref(),
        Some(second.to_string().as_str())
    );
    until("node's stream", || gate.handler.connections() == 1).await;
    hub.publish(&channel, Publication::new("live"))
        .await
        .unwrap();
    assert_eq!(next_event(&mut lines).await["data"], "live");
    drop(node.stdin.take());
    within("node to exit", node.wait()).await.unwrap();
}
