//! The budget is honest about memory: what it counts for retained messages
//! against what the heap really grew by, measured with a counting allocator.
//!
//! One test in this binary, so that no other test allocates meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a measuring test

use std::alloc::System;

use bytes::Bytes;
use cap::Cap;
use futures_util::FutureExt;
use push_core::{ChannelName, Hub, MemoryHub, MemoryHubConfig, Publication, Start, WireFormat};

#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

const CHANNELS: usize = 100;

/// Retains `count` messages of `size` bytes over `CHANNELS` channels (made
/// beforehand, so their own cost is left out), each with `encodings` formats
/// filled at 1.5× its size; returns (heap growth, bytes counted) per message.
fn measure(size: usize, count: usize, encodings: usize) -> (f64, f64) {
    let config = MemoryHubConfig::default()
        .with_max_messages(count)
        .with_max_bytes(count * size.max(1))
        .with_max_message_bytes(size)
        .with_max_retained_bytes(usize::MAX);
    let hub = MemoryHub::with_config(config).unwrap();
    let names: Vec<ChannelName> = (0..CHANNELS)
        .map(|i| ChannelName::new(&format!("channel-{i}")).unwrap())
        .collect();
    let mut heads: Vec<_> = names
        .iter()
        .map(|name| {
            hub.read(name, Start::Live, 0)
                .now_or_never()
                .unwrap()
                .unwrap()
                .cursor
        })
        .collect();

    let (heap_before, counted_before) = (ALLOCATOR.allocated(), hub.stats().retained_bytes);
    for i in 0..count {
        let data = Bytes::from(vec![b'x'; size]);
        let name = &names[i % CHANNELS];
        let cursor = hub
            .publish(name, Publication::new(data))
            .now_or_never()
            .unwrap()
            .unwrap();
        let before = std::mem::replace(&mut heads[i % CHANNELS], cursor);
        if encodings > 0 {
            let last = hub
                .read(name, Start::After(before), 1)
                .now_or_never()
                .unwrap()
                .unwrap();
            let formats = [
                WireFormat::JsonEnvelope,
                WireFormat::SseEvent,
                WireFormat::SseEnvelope,
            ];
            for format in &formats[..encodings] {
                last.messages[0]
                    .encoded(*format, |m| Bytes::from(vec![b'e'; m.data().len() * 3 / 2]));
            }
        }
    }
    let heap = (ALLOCATOR.allocated() - heap_before) as f64 / count as f64;
    let counted = (hub.stats().retained_bytes - counted_before) as f64 / count as f64;
    drop(hub);
    (heap, counted)
}

#[test]
fn the_budget_counts_what_retained_messages_really_hold() {
    for (size, encodings) in [(0, 0), (16, 0), (100, 1), (1_000, 3), (10_000, 3)] {
        let count = 20_000;
        let (heap, counted) = measure(size, count, encodings);
        let ratio = heap / counted;
        println!(
            "{size:>6} B data, {encodings} encodings: heap {heap:>8.0} B, counted {counted:>8.0} B per message (heap/counted {ratio:.3})"
        );
        // Never counts less than the heap holds by more than the spare
        // capacity growable buffers may have (a log's, the FIFO's).
        assert!(ratio < 1.05, "{size} B: heap {heap} > counted {counted}");
        assert!(
            ratio > 0.85,
            "{size} B: counted {counted} far above heap {heap}"
        );
    }
}
