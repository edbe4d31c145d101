//! Long polling for notifications: a `LongPoller` holds a request open on
//! `notifications:alice` and prints each notification the moment it is
//! published; the client drops its connection halfway, reconnects from its
//! cursor and misses nothing. Try it from a shell too while it runs:
//!
//! ```sh
//! curl -i 'localhost:PORT/longpoll/notifications:alice?timeout=30'
//! ```
//!
//! `cargo run --example notifications` (stops after eight notifications).
#![allow(clippy::print_stdout)]

use std::time::Duration;

use futures_util::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use push_live::longpoll::{LongPollConfig, LongPollHandler, LongPoller, LongPollerConfig};
use push_live::{Hub, Item, MemoryHub, Publication, Start};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let hub = MemoryHub::new();
    let longpoll = LongPollHandler::new(hub.clone(), LongPollConfig::default());

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    println!("serving GET http://{addr}/longpoll/notifications:alice");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let longpoll = longpoll.clone();
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), longpoll)
                    .await;
            });
        }
    });

    let alice = "notifications:alice".parse()?;
    tokio::spawn(async move {
        let events = [
            "bob liked your photo",
            "carol commented",
            "dave followed you",
        ];
        for n in 0.. {
            let text = events[n % events.len()];
            if hub.publish(&alice, Publication::new(text)).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
    });

    let url = format!("http://{addr}/longpoll/notifications:alice");
    let mut received = 0;
    let mut start = Start::Live;
    for connection in 1..=2 {
        let config = LongPollerConfig::default().with_start(start);
        let mut poller = LongPoller::connect(&url, config).await?;
        while let Some(item) = poller.next().await {
            match item {
                Ok(Item::Message(m)) => {
                    received += 1;
                    println!(
                        "[{connection}] {}  {}",
                        m.cursor(),
                        String::from_utf8_lossy(m.data())
                    );
                }
                Ok(Item::Signal(signal)) => println!("[{connection}] missed some: {signal:?}"),
                Err(e) => println!("[{connection}] retrying: {e}"),
            }
            if received == 4 * connection {
                break;
            }
        }
        if connection == 1 {
            // Gone for a while; back from the last cursor, nothing lost.
            start = poller.cursor().map_or(Start::Live, Start::After);
            println!("-- disconnected; reconnecting from {start:?} in 2 s");
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    Ok(())
}
