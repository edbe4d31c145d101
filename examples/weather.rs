//! Short polling, the weather way: a station publishes a reading every second
//! to `weather`, a `Poller` asks for news every two seconds (the interval the
//! server advises) and prints what it gets; an unchanged channel costs it a
//! `304`. Try it from a shell too while it runs (the port is printed):
//!
//! ```sh
//! curl -i 'localhost:PORT/poll/weather?since=earliest'
//! ```
//!
//! `cargo run --example weather` (stops after ten readings).
#![allow(clippy::print_stdout)]

use std::time::Duration;

use futures_util::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use push_live::poll::{PollConfig, PollHandler, Poller, PollerConfig};
use push_live::{Hub, Item, MemoryHub, Publication};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let hub = MemoryHub::new();
    let config = PollConfig::default().with_interval(Duration::from_secs(2));
    let poll = PollHandler::new(hub.clone(), config);

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    println!("serving GET http://{addr}/poll/weather");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let poll = poll.clone();
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), poll)
                    .await;
            });
        }
    });

    let weather = "weather".parse()?;
    tokio::spawn(async move {
        for minute in 0u32.. {
            let reading = format!(
                r#"{{"temp_c":{:.1},"wind_kmh":{}}}"#,
                12.0 + f64::from(minute % 7) * 0.4,
                8 + minute % 5
            );
            if hub
                .publish(&weather, Publication::new(reading))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });

    let url = format!("http://{addr}/poll/weather");
    let mut poller = Poller::connect(&url, PollerConfig::default()).await?;
    let mut readings = 0;
    while let Some(item) = poller.next().await {
        match item {
            Ok(Item::Message(m)) => {
                readings += 1;
                println!("{}  {}", m.cursor(), String::from_utf8_lossy(m.data()));
            }
            Ok(Item::Signal(signal)) => println!("missed some readings: {signal:?}"),
            Err(e) => println!("poll failed, retrying: {e}"),
        }
        if readings == 10 {
            break;
        }
    }
    Ok(())
}
