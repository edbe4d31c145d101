//! Counting what the server does: a hub wrapper that counts publishes,
//! deliveries and signals per transport, and subscribers per channel; and the
//! Prometheus text of it all.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures_core::Stream;
use push::{Batch, ChannelName, Cursor, Error, Hub, Item, Publication, Signal, Start};

/// The four techniques, as labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Short polling.
    Poll,
    /// Long polling.
    LongPoll,
    /// Server-Sent Events.
    Sse,
    /// WebSockets.
    Ws,
}

impl Transport {
    /// Every transport, in label order.
    pub const ALL: [Transport; 4] = [
        Transport::Poll,
        Transport::LongPoll,
        Transport::Sse,
        Transport::Ws,
    ];

    /// Its label in metrics and JSON.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Poll => "poll",
            Transport::LongPoll => "longpoll",
            Transport::Sse => "sse",
            Transport::Ws => "ws",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

tokio::task_local! {
    /// The transport whose request is being handled, so that the hub knows
    /// whom it serves. A WebSocket command socket subscribes from its own
    /// task, outside any request: unlabelled means WebSocket.
    static TRANSPORT: Transport;
}

/// Runs `future` (the handling of one request) labelled as `transport`.
pub async fn serving<F: Future>(transport: Transport, future: F) -> F::Output {
    TRANSPORT.scope(transport, future).await
}

fn current() -> Transport {
    TRANSPORT.try_with(|t| *t).unwrap_or(Transport::Ws)
}

/// The counters.
#[derive(Debug, Default)]
pub struct Metrics {
    published: AtomicU64,
    delivered: [AtomicU64; 4],
    gaps: AtomicU64,
    resets: AtomicU64,
    /// Live subscriptions per channel and transport.
    channels: Mutex<HashMap<ChannelName, [u32; 4]>>,
}

impl Metrics {
    /// Messages published.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Messages handed to `transport`'s subscribers.
    pub fn delivered(&self, transport: Transport) -> u64 {
        self.delivered[transport.index()].load(Ordering::Relaxed)
    }

    /// Gap and reset signals handed out.
    pub fn signals(&self) -> (u64, u64) {
        (
            self.gaps.load(Ordering::Relaxed),
            self.resets.load(Ordering::Relaxed),
        )
    }

    /// Live subscriptions to `channel`, per transport (in [`Transport::ALL`]
    /// order).
    pub fn subscribers(&self, channel: &ChannelName) -> [u32; 4] {
        self.lock().get(channel).copied().unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ChannelName, [u32; 4]>> {
        self.channels.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count_item(&self, transport: Transport, item: &Item) {
        match item {
            Item::Message(_) => {
                self.delivered[transport.index()].fetch_add(1, Ordering::Relaxed);
            }
            Item::Signal(signal) => self.count_signal(signal),
        }
    }

    fn count_signal(&self, signal: &Signal) {
        let counter = match signal {
            Signal::Gap(_) => &self.gaps,
            Signal::Reset(_) => &self.resets,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A hub that counts what passes through it.
#[derive(Debug)]
pub struct Metered<H> {
    inner: H,
    metrics: Arc<Metrics>,
}

impl<H> Metered<H> {
    /// Counts into `metrics`.
    pub fn new(inner: H, metrics: Arc<Metrics>) -> Self {
        Metered { inner, metrics }
    }

    /// The hub underneath.
    pub fn inner(&self) -> &H {
        &self.inner
    }
}

impl<H: Hub> Hub for Metered<H> {
    type Subscription = MeteredSubscription<H::Subscription>;

    async fn publish(
        &self,
        channel: &ChannelName,
        publication: Publication,
    ) -> Result<Cursor, Error> {
        let cursor = self.inner.publish(channel, publication).await?;
        self.metrics.published.fetch_add(1, Ordering::Relaxed);
        Ok(cursor)
    }

    async fn read(
        &self,
        channel: &ChannelName,
        start: Start,
        limit: usize,
    ) -> Result<Batch, Error> {
        let transport = current();
        let batch = self.inner.read(channel, start, limit).await?;
        let delivered = u64::try_from(batch.messages.len()).unwrap_or(u64::MAX);
        self.metrics.delivered[transport.index()].fetch_add(delivered, Ordering::Relaxed);
        if let Some(signal) = &batch.signal {
            self.metrics.count_signal(signal);
        }
        Ok(batch)
    }

    async fn subscribe(
        &self,
        channel: &ChannelName,
        start: Start,
    ) -> Result<Self::Subscription, Error> {
        let transport = current();
        let inner = self.inner.subscribe(channel, start).await?;
        self.metrics.lock().entry(channel.clone()).or_default()[transport.index()] += 1;
        tracing::debug!(channel = %channel, transport = transport.label(), "subscribed");
        Ok(MeteredSubscription {
            inner,
            transport,
            channel: channel.clone(),
            metrics: self.metrics.clone(),
        })
    }
}

/// A subscription that counts its deliveries, and itself while it lives.
#[derive(Debug)]
pub struct MeteredSubscription<S> {
    inner: S,
    transport: Transport,
    channel: ChannelName,
    metrics: Arc<Metrics>,
}

impl<S: Stream<Item = Item> + Unpin> Stream for MeteredSubscription<S> {
    type Item = Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(item)) = &polled {
            self.metrics.count_item(self.transport, item);
        }
        polled
    }
}

impl<S> Drop for MeteredSubscription<S> {
    fn drop(&mut self) {
        tracing::debug!(channel = %self.channel, transport = self.transport.label(), "unsubscribed");
        let mut channels = self.metrics.lock();
        if let Some(counts) = channels.get_mut(&self.channel) {
            let count = &mut counts[self.transport.index()];
            *count = count.saturating_sub(1);
            if counts.iter().all(|c| *c == 0) {
                channels.remove(&self.channel);
            }
        }
    }
}

/// Appends one Prometheus metric family to `out`.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(&str, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt as _;
    use push::MemoryHub;

    #[tokio::test]
    async fn counts_follow_subscriptions_deliveries_and_signals() {
        let metrics = Arc::new(Metrics::default());
        let hub = Metered::new(MemoryHub::new(), metrics.clone());
        let news: ChannelName = "news".parse().unwrap();
        let mut sse = serving(Transport::Sse, hub.subscribe(&news, Start::Live))
            .await
            .unwrap();
        let ws = hub.subscribe(&news, Start::Live).await.unwrap();
        assert_eq!(metrics.subscribers(&news), [0, 0, 1, 1]);
        hub.publish(&news, Publication::new("1")).await.unwrap();
        assert!(matches!(sse.next().await, Some(Item::Message(_))));
        assert_eq!(metrics.published(), 1);
        assert_eq!(metrics.delivered(Transport::Sse), 1);
        let batch = serving(Transport::Poll, hub.read(&news, Start::Earliest, 10))
            .await
            .unwrap();
        assert_eq!(batch.messages.len(), 1);
        assert_eq!(metrics.delivered(Transport::Poll), 1);
        // A cursor from another hub's history: a reset.
        let foreign = MemoryHub::new()
            .publish(&news, Publication::new("x"))
            .await
            .unwrap();
        serving(Transport::Poll, hub.read(&news, Start::After(foreign), 10))
            .await
            .unwrap();
        assert_eq!(metrics.signals(), (0, 1));
        drop((sse, ws));
        assert_eq!(metrics.subscribers(&news), [0; 4]);
        assert!(metrics.lock().is_empty());
    }
}
