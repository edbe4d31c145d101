//! Publish one message and wait until every subscriber of the channel has it:
//! the memory hub against `tokio::sync::broadcast`, with 1, 1,000 and 10,000
//! subscribers, each a task on a two-worker tokio runtime.
//!
//! `cargo bench -p push-core --bench fanout` (or `cargo xtask bench`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may fail loudly

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::StreamExt;
use push_core::{
    ChannelName, Cursor, Epoch, Hub, Item, MemoryHub, MemoryHubConfig, Message, Position,
    Publication, Start, Timestamp,
};
use tokio::runtime::Runtime;
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;

const SUBSCRIBERS: [usize; 3] = [1, 1_000, 10_000];
const PAYLOAD: &[u8] = &[b'x'; 64];

/// Counts deliveries of the current round; the last one wakes the publisher.
struct Round {
    remaining: AtomicUsize,
    done: Notify,
}

impl Round {
    fn delivered(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_one();
        }
    }
}

struct Fixture {
    round: Arc<Round>,
    tasks: Vec<JoinHandle<()>>,
    subscribers: usize,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Fixture {
    fn new(subscribers: usize) -> Self {
        Fixture {
            round: Arc::new(Round {
                remaining: AtomicUsize::new(0),
                done: Notify::new(),
            }),
            tasks: Vec::with_capacity(subscribers),
            subscribers,
        }
    }

    /// `iters` rounds of: publish one message, wait for all deliveries.
    async fn run(&self, iters: u64, mut publish: impl FnMut()) -> Duration {
        let start = Instant::now();
        for _ in 0..iters {
            self.round
                .remaining
                .store(self.subscribers, Ordering::Release);
            publish();
            self.round.done.notified().await;
        }
        start.elapsed()
    }
}

fn memory_hub(rt: &Runtime, subscribers: usize) -> (Fixture, MemoryHub, ChannelName) {
    let hub = MemoryHub::with_config(MemoryHubConfig::default()).unwrap();
    let channel = ChannelName::new("bench").unwrap();
    let mut fixture = Fixture::new(subscribers);
    for _ in 0..subscribers {
        let mut subscription = rt.block_on(hub.subscribe(&channel, Start::Live)).unwrap();
        let round = fixture.round.clone();
        fixture.tasks.push(rt.spawn(async move {
            while let Some(item) = subscription.next().await {
                assert!(matches!(item, Item::Message(_)), "{item:?}");
                round.delivered();
            }
        }));
    }
    (fixture, hub, channel)
}

fn tokio_broadcast(rt: &Runtime, subscribers: usize) -> (Fixture, broadcast::Sender<Arc<Message>>) {
    let (sender, _) = broadcast::channel(1_024);
    let mut fixture = Fixture::new(subscribers);
    for _ in 0..subscribers {
        let mut receiver = sender.subscribe();
        let round = fixture.round.clone();
        fixture.tasks.push(rt.spawn(async move {
            while let Ok(message) = receiver.recv().await {
                std::hint::black_box(message);
                round.delivered();
            }
        }));
    }
    (fixture, sender)
}

fn fanout(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let mut group = c.benchmark_group("fanout");
    group.sample_size(20).warm_up_time(Duration::from_secs(1));
    for subscribers in SUBSCRIBERS {
        group.throughput(Throughput::Elements(subscribers as u64));
        group.measurement_time(Duration::from_secs(if subscribers > 1_000 { 8 } else { 3 }));

        group.bench_function(BenchmarkId::new("memory_hub", subscribers), |b| {
            let (fixture, hub, channel) = memory_hub(&rt, subscribers);
            b.iter_custom(|iters| {
                rt.block_on(fixture.run(iters, || {
                    let publication = Publication::new(Bytes::from_static(PAYLOAD));
                    let published = hub.publish(&channel, publication).into_inner();
                    std::hint::black_box(published.unwrap());
                }))
            });
        });

        group.bench_function(BenchmarkId::new("tokio_broadcast", subscribers), |b| {
            let (fixture, sender) = tokio_broadcast(&rt, subscribers);
            let channel = ChannelName::new("bench").unwrap();
            let mut n = 0;
            b.iter_custom(|iters| {
                rt.block_on(fixture.run(iters, || {
                    // The same work a hub does: build a shared message, send it.
                    n += 1;
                    let cursor = Cursor::new(Epoch::new(1), Position::new(n, 0));
                    let message = Message::new(
                        channel.clone(),
                        cursor,
                        None,
                        Bytes::from_static(PAYLOAD),
                        Timestamp::UNIX_EPOCH,
                    );
                    std::hint::black_box(sender.send(Arc::new(message)).unwrap());
                }))
            });
        });
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
