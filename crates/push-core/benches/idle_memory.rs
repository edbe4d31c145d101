//! Memory per idle subscription: a subscriber parked, waiting for a message.
//! The memory hub against `tokio::sync::broadcast`, 10,000 subscribers each.
//!
//! What is counted, the same way for both: the subscriber value itself, its
//! waiting future (boxed, polled once so it is parked), and every heap byte the
//! channel allocates for it (the hub's waker slot). A counting allocator
//! measures the heap; `size_of` the values. Not counted: the task that would
//! own the subscriber (tokio aligns task cells to 128 bytes, the same for both).
//!
//! `cargo bench -p push-core --bench idle_memory` (or `cargo xtask bench`).
#![allow(clippy::print_stdout, clippy::unwrap_used)] // a measuring program: prints, fails loudly

use std::alloc::System;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Waker};

use cap::Cap;
use futures_util::StreamExt;
use push_core::{ChannelName, Hub, MemoryHub, MemorySubscription, Message, Start};
use tokio::sync::broadcast;

#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

const N: usize = 10_000;

/// Parks every future once; returns the heap growth per future (its box and
/// whatever polling it allocated) and the parked futures.
fn park_all<'a, F: Future + 'a>(make: impl Iterator<Item = F>) -> (f64, Vec<Pin<Box<F>>>) {
    let mut cx = Context::from_waker(Waker::noop());
    let mut parked = Vec::with_capacity(N);
    let before = ALLOCATOR.allocated();
    for future in make {
        let mut future = Box::pin(future);
        assert!(future.as_mut().poll(&mut cx).is_pending());
        parked.push(future);
    }
    let grown = ALLOCATOR.allocated() - before;
    (grown as f64 / N as f64, parked)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and
    // then there is nothing to measure.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let channel = ChannelName::new("idle").unwrap();

    let hub = MemoryHub::new();
    let mut subscriptions: Vec<MemorySubscription> = Vec::with_capacity(N);
    let before = ALLOCATOR.allocated();
    subscriptions
        .extend((0..N).map(|_| hub.subscribe(&channel, Start::Live).into_inner().unwrap()));
    let subscribe_heap = (ALLOCATOR.allocated() - before) as f64 / N as f64;
    let (park_heap, parked) = park_all(subscriptions.iter_mut().map(StreamExt::next));
    let hub_total = size_of::<MemorySubscription>() as f64 + subscribe_heap + park_heap;
    drop(parked);

    let (sender, _) = broadcast::channel::<Arc<Message>>(1_024);
    let mut receivers = Vec::with_capacity(N);
    let before = ALLOCATOR.allocated();
    receivers.extend((0..N).map(|_| sender.subscribe()));
    let receive_heap = (ALLOCATOR.allocated() - before) as f64 / N as f64;
    let (recv_heap, parked) = park_all(receivers.iter_mut().map(broadcast::Receiver::recv));
    let receiver_size = size_of::<broadcast::Receiver<Arc<Message>>>();
    let broadcast_total = receiver_size as f64 + receive_heap + recv_heap;
    drop(parked);

    println!("idle subscription, bytes each ({N} parked):");
    println!(
        "  memory_hub       {hub_total:>5.0} B  = {} B subscription + {subscribe_heap:.0} B heap at subscribe + {park_heap:.0} B parked (boxed future, waker slot)",
        size_of::<MemorySubscription>()
    );
    println!(
        "  tokio_broadcast  {broadcast_total:>5.0} B  = {receiver_size} B receiver + {receive_heap:.0} B heap at subscribe + {recv_heap:.0} B parked (boxed future, waiter node)"
    );
}
