//! The echo server Autobahn|Testsuite's fuzzingclient tests: push-ws's own
//! handshake, configuration and socket loop (close codes, UTF-8 checks,
//! size limits, heartbeats), with every text and binary message sent back
//! as it came instead of a subscription. `cargo xtask autobahn` runs it.
//!
//! ```text
//! cargo run -p push-ws --example autobahn_echo -- [PORT]
//! ```
//!
//! It listens on 127.0.0.1:PORT (default 0: a free port) and prints
//! `listening on ADDR` once it accepts connections.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use push_core::MemoryHub;
use push_ws::{Endpoint, Origins, WsConfig, WsHandler};
use tokio::net::TcpListener;

/// Autobahn's largest messages (section 9) are 16 MiB.
const MAX_MESSAGE_BYTES: usize = 16 << 20;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let port = match std::env::args().nth(1).map(|port| port.parse::<u16>()) {
        None => 0,
        Some(Ok(port)) => port,
        Some(Err(e)) => {
            eprintln!("autobahn_echo: the port must be a number: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(("127.0.0.1", port)).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("autobahn_echo: cannot listen on port {port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = WsConfig::default()
        .with_endpoint(Endpoint::Echo)
        .with_origins(Origins::Any)
        .with_max_message_bytes(MAX_MESSAGE_BYTES)
        // permessage-deflate for sections 12 and 13, on every message.
        .with_deflate(0);
    let handler = WsHandler::new(MemoryHub::new(), config);
    match listener.local_addr() {
        Ok(addr) => println!("listening on {addr}"),
        Err(e) => {
            eprintln!("autobahn_echo: {e}");
            return ExitCode::FAILURE;
        }
    }
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), handler)
                .await;
        });
    }
}
