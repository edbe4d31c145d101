//! A client nobody here wrote: Node's `ws` package subscribes on both
//! endpoints and receives, and the command endpoint answers it.
//!
//! `cargo xtask test` installs the package and points `PUSH_TEST_NODE_PATH` at
//! it. Without it the test says so loudly and passes, except under `CI=true`,
//! where a missing third-party client is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../../tests/support/mod.rs"]
mod support;

use std::process::Stdio;

use push_core::{Hub, MemoryHub, Publication};
use push_ws::{WsConfig, WsHandler};
use serde_json::{Value, json};
use support::{Server, until, within};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

fn node(node_path: &str, args: &[&str]) -> (Child, Lines<BufReader<ChildStdout>>) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/js/ws-client.cjs");
    let mut child = Command::new("node")
        .arg(script)
        .args(args)
        .env("NODE_PATH", node_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>) -> Value {
    let line = within("a line from node", lines.next_line())
        .await
        .unwrap()
        .expect("node ended");
    serde_json::from_str(&line).unwrap()
}

/// The next message's data, as JSON.
async fn next_message(lines: &mut Lines<BufReader<ChildStdout>>) -> Value {
    let line = next_line(lines).await;
    assert_eq!(line["type"], "message", "{line}");
    assert_eq!(line["binary"], false, "text frames only");
    serde_json::from_str(line["data"].as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_ws_reads_both_endpoints() {
    let Some(node_path) = support::node_path("Node's `ws` client") else {
        return;
    };
    let hub = MemoryHub::new();
    let channel = "c".parse().unwrap();

    let one = WsHandler::new(hub.clone(), WsConfig::default());
    let server = Server::start(one.clone()).await;
    let first = hub
        .publish(&channel, Publication::new("before"))
        .await
        .unwrap();
    let url = format!("ws://{}/ws/c?since={first}", server.addr);
    hub.publish(&channel, Publication::new("after"))
        .await
        .unwrap();
    let (mut child, mut lines) = node(&node_path, &[&url]);
    assert_eq!(next_line(&mut lines).await["type"], "open");
    let envelope = next_message(&mut lines).await;
    assert_eq!(
        (&envelope["channel"], &envelope["data"]),
        (&json!("c"), &json!("after"))
    );
    hub.publish(&channel, Publication::new("live"))
        .await
        .unwrap();
    assert_eq!(next_message(&mut lines).await["data"], "live");
    drop(child.stdin.take());
    child.kill().await.unwrap();
    until("the socket to close", || one.connections() == 0).await;

    let commands = WsHandler::new(hub.clone(), WsConfig::commands().with_publish(true));
    let server = Server::start(commands.clone()).await;
    let url = format!("ws://{}/ws", server.addr);
    let (mut child, mut lines) = node(&node_path, &[&url, "push.v1"]);
    let open = next_line(&mut lines).await;
    assert_eq!(
        (&open["type"], &open["protocol"]),
        (&json!("open"), &json!("push.v1"))
    );
    let mut stdin = child.stdin.take().unwrap();
    let subscribe = json!({"op":"subscribe","channel":"c","ref":"s"}).to_string() + "\n";
    stdin.write_all(subscribe.as_bytes()).await.unwrap();
    let head = hub
        .read(&channel, push_core::Start::Live, 0)
        .await
        .unwrap()
        .cursor;
    assert_eq!(
        next_message(&mut lines).await,
        json!({"op":"ack","ref":"s","cursor":head.to_string()})
    );
    let publish =
        json!({"op":"publish","channel":"c","data":"from node","ref":"p"}).to_string() + "\n";
    stdin.write_all(publish.as_bytes()).await.unwrap();
    let mut got = [
        next_message(&mut lines).await,
        next_message(&mut lines).await,
    ];
    got.sort_by_key(|v| v.get("op").is_none());
    assert_eq!(
        (&got[0]["op"], &got[0]["ref"]),
        (&json!("ack"), &json!("p"))
    );
    assert_eq!(
        (&got[1]["data"], &got[1]["id"]),
        (&json!("from node"), &got[0]["id"])
    );
    stdin.write_all(b"{oops\n").await.unwrap();
    assert_eq!(next_message(&mut lines).await["code"], "invalid_command");
    drop(stdin);
    child.kill().await.unwrap();
}
