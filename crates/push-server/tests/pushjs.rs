//! push.js, the browser client, against the real push-server from Node
//! (tests/js/pushjs-node.mjs, with the `ws` and `eventsource` packages as the
//! browser's `WebSocket` and `EventSource`): every technique alone and the
//! default order, cut connections, resuming, gap, reset (the script restarts
//! the server), fallback and moving back up.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::time::Duration;

use tokio::process::Command;

#[tokio::test]
async fn push_js_passes_its_node_suite_against_push_server() {
    let Some(node_path) = support::node_path("Node.js with the third-party clients") else {
        return;
    };
    // A free port for the script to start (and restart) the server on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let run = Command::new("node")
        .arg(root.join("tests/js/pushjs-node.mjs"))
        .arg(format!("http://127.0.0.1:{port}"))
        .env("PUSH_TEST_NODE_PATH", &node_path)
        .env("PUSH_SERVER_BIN", env!("CARGO_BIN_EXE_push-server"))
        .kill_on_drop(true)
        .output();
    // The suite's own waits are bounded; this only catches a hang.
    let output = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("the Node suite finished")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let failed: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        output.status.success() && failed.is_empty(),
        "push.js suite failed ({}):\n{}\n--- stderr ---\n{}",
        output.status,
        failed.join("\n"),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("checks passed"), "{stdout}");
    assert!(!stdout.contains("SKIP"), "{stdout}");
}
