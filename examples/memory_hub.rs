//! The core on its own: a publisher and a live subscriber, a client that drops
//! off and resumes from its last cursor without losing anything, and one too
//! far behind for the history, which is told so by a gap before the rest.
//!
//! `cargo run --example memory_hub`
#![allow(clippy::print_stdout)]

use futures_util::StreamExt;
use push_live::{
    Cursor, Hub, Item, MemoryHub, MemoryHubConfig, Publication, Signal, Start, Subscription,
};

#[tokio::main]
async fn main() -> Result<(), push_live::Error> {
    // A small history, so that the last client falls out of it.
    let hub = MemoryHub::with_config(MemoryHubConfig::default().with_max_messages(5))?;
    let prices = "prices".parse()?;

    let mut live = hub.subscribe(&prices, Start::Live).await?;
    let mut ids = Vec::new();
    for n in 1..=12 {
        let publication = Publication::new(format!("price {}", 100 + n));
        let id = hub.publish(&prices, publication).await?;
        ids.push(id);
        print_until("live", &mut live, id).await;
    }
    let last = ids[11];

    // Saw message 8, dropped, came back: gets exactly 9 to 12.
    let mut resumed = hub.subscribe(&prices, Start::After(ids[7])).await?;
    print_until("resumed", &mut resumed, last).await;

    // Saw message 2: the history keeps only 8 to 12, so first a gap.
    let mut stale = hub.subscribe(&prices, Start::After(ids[1])).await?;
    print_until("stale", &mut stale, last).await;
    Ok(())
}

/// Prints what `subscription` yields up to and including `last`.
async fn print_until(who: &str, subscription: &mut Subscription<MemoryHub>, last: Cursor) {
    while let Some(item) = subscription.next().await {
        match &item {
            Item::Message(m) => {
                let data = String::from_utf8_lossy(m.data());
                println!("{who:>8}: {} {data}", m.cursor());
            }
            Item::Signal(Signal::Gap(gap)) => {
                let missed = gap.missed.unwrap_or_default();
                println!(
                    "{who:>8}: gap: {missed} messages after {} are gone",
                    gap.since
                );
            }
            Item::Signal(signal) => println!("{who:>8}: {signal:?}"),
        }
        if item.cursor() == last {
            return;
        }
    }
}
