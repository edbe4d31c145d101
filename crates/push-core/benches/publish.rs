//! What one publish costs the memory hub, with no subscriber to wake: the
//! append, the budget's count and publish-order entry, and (when the history
//! is full) dropping the oldest message. Single-threaded, so it is steadier
//! than the fan-out bench on a shared machine.
//!
//! `cargo bench -p push-core --bench publish`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may fail loudly

use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use push_core::{ChannelName, Hub, MemoryHub, MemoryHubConfig, Publication};

const PAYLOAD: &[u8] = &[b'x'; 64];

fn publish_all(c: &mut Criterion, group: &str, config: &MemoryHubConfig, channels: usize) {
    let hub = MemoryHub::with_config(config.clone()).unwrap();
    let names: Vec<ChannelName> = (0..channels)
        .map(|i| ChannelName::new(&format!("bench-{i}")).unwrap())
        .collect();
    let mut i = 0;
    c.benchmark_group("publish")
        .throughput(Throughput::Elements(1))
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .bench_function(group, |b| {
            b.iter(|| {
                i = (i + 1) % names.len();
                let publication = Publication::new(Bytes::from_static(PAYLOAD));
                std::hint::black_box(hub.publish(&names[i], publication).into_inner().unwrap());
            });
        });
}

fn publish(c: &mut Criterion) {
    // Each channel's own history full (100 messages): every publish drops one.
    let per_channel = MemoryHubConfig::default().with_max_messages(100);
    publish_all(c, "one_channel", &per_channel, 1);
    publish_all(c, "1000_channels", &per_channel, 1_000);
    // The hub-wide budget full instead: every publish trims the oldest of the
    // whole hub through the publish order.
    let budget = MemoryHubConfig::default()
        .with_max_messages(100_000)
        .with_max_retained_bytes(1 << 20);
    publish_all(c, "1000_channels_budget_full", &budget, 1_000);
}

criterion_group!(benches, publish);
criterion_main!(benches);
