//! Counting what the server does: a hub wrapper that counts publishes,
//! deliveries and signals per technique, and subscribers per channel; and the
//! Prometheus text of it all.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures_core::Stream;
use push_live::http::Technique;
use push_live::{
    Batch, ChannelName, Cursor, Error, Hub, Item, Member, Presence, PresencePage, PresenceSnapshot,
    Publication, Signal, Start,
};

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

    /// Messages handed to `technique`'s subscribers.
    pub fn delivered(&self, technique: Technique) -> u64 {
        self.delivered[technique.index()].load(Ordering::Relaxed)
    }

    /// Gap and reset signals handed out.
    pub fn signals(&self) -> (u64, u64) {
        (
            self.gaps.load(Ordering::Relaxed),
            self.resets.load(Ordering::Relaxed),
        )
    }

    /// Live subscriptions to `channel`, per technique (in
    /// [`Technique::ALL`] order).
    pub fn subscribers(&self, channel: &ChannelName) -> [u32; 4] {
        self.lock().get(channel).copied().unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ChannelName, [u32; 4]>> {
        self.channels.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count_item(&self, technique: Technique, item: &Item) {
        match item {
            Item::Message(_) => {
                self.delivered[technique.index()].fetch_add(1, Ordering::Relaxed);
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

/// A hub that counts what passes through it: publishes, and the reads,
/// deliveries and subscriptions of the technique it is labelled with (see
/// [`labelled`](Self::labelled); the router gives each technique its own).
#[derive(Debug)]
pub struct Metered<H> {
    inner: Arc<H>,
    metrics: Arc<Metrics>,
    /// Whose reads and subscriptions these are; none: only publishes count.
    technique: Option<Technique>,
}

impl<H> Metered<H> {
    /// Counts the publishes to `inner` into `metrics`.
    pub fn new(inner: H, metrics: Arc<Metrics>) -> Self {
        Metered {
            inner: Arc::new(inner),
            metrics,
            technique: None,
        }
    }

    /// The same hub, counting what it reads and subscribes as `technique`'s.
    #[must_use]
    pub fn labelled(&self, technique: Technique) -> Self {
        Metered {
            inner: self.inner.clone(),
            metrics: self.metrics.clone(),
            technique: Some(technique),
        }
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
        let batch = self.inner.read(channel, start, limit).await?;
        if let Some(technique) = self.technique {
            let delivered = u64::try_from(batch.messages.len()).unwrap_or(u64::MAX);
            self.metrics.delivered[technique.index()].fetch_add(delivered, Ordering::Relaxed);
            if let Some(signal) = &batch.signal {
                self.metrics.count_signal(signal);
            }
        }
        Ok(batch)
    }

    async fn subscribe(
        &self,
        channel: &ChannelName,
        start: Start,
    ) -> Result<Self::Subscription, Error> {
        let inner = self.inner.subscribe(channel, start).await?;
        if let Some(technique) = self.technique {
            self.metrics.lock().entry(channel.clone()).or_default()[technique.index()] += 1;
            tracing::debug!(channel = %channel, technique = technique.as_str(), "subscribed");
        }
        Ok(MeteredSubscription {
            inner,
            counted: self.technique.map(|technique| Counted {
                technique,
                channel: channel.clone(),
                metrics: self.metrics.clone(),
            }),
        })
    }

    async fn enter(&self, channel: &ChannelName, member: Member) -> Result<Presence, Error> {
        self.inner.enter(channel, member).await
    }

    async fn touch(
        &self,
        channel: &ChannelName,
        key: &str,
        member: Member,
        ttl: std::time::Duration,
    ) -> Result<(), Error> {
        self.inner.touch(channel, key, member, ttl).await
    }

    async fn presence(
        &self,
        channel: &ChannelName,
        page: PresencePage,
    ) -> Result<PresenceSnapshot, Error> {
        self.inner.presence(channel, page).await
    }
}

/// A subscription that counts its deliveries, and itself while it lives.
#[derive(Debug)]
pub struct MeteredSubscription<S> {
    inner: S,
    /// Where it is counted; none through an unlabelled hub.
    counted: Option<Counted>,
}

/// One subscription's place in the counts.
#[derive(Debug)]
struct Counted {
    technique: Technique,
    channel: ChannelName,
    metrics: Arc<Metrics>,
}

impl<S: Stream<Item = Item> + Unpin> Stream for MeteredSubscription<S> {
    type Item = Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        if let (Poll::Ready(Some(item)), Some(counted)) = (&polled, &self.counted) {
            counted.metrics.count_item(counted.technique, item);
        }
        polled
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        tracing::debug!(channel = %self.channel, technique = self.technique.as_str(), "unsubscribed");
        let mut channels = self.metrics.lock();
        if let Some(counts) = channels.get_mut(&self.channel) {
            let count = &mut counts[self.technique.index()];
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
    use push_live::MemoryHub;

    #[tokio::test]
    async fn counts_follow_subscriptions_deliveries_and_signals() {
        let metrics = Arc::new(Metrics::default());
        let hub = Metered::new(MemoryHub::new(), metrics.clone());
        let (sse_hub, ws_hub) = (hub.labelled(Technique::Sse), hub.labelled(Technique::Ws));
        let poll_hub = hub.labelled(Technique::Poll);
        let news: ChannelName = "news".parse().unwrap();
        let mut sse = sse_hub.subscribe(&news, Start::Live).await.unwrap();
        let ws = ws_hub.subscribe(&news, Start::Live).await.unwrap();
        let unlabelled = hub.subscribe(&news, Start::Live).await.unwrap();
        assert_eq!(metrics.subscribers(&news), [0, 0, 1, 1]);
        hub.publish(&news, Publication::new("1")).await.unwrap();
        assert!(matches!(sse.next().await, Some(Item::Message(_))));
        assert_eq!(metrics.published(), 1);
        assert_eq!(metrics.delivered(Technique::Sse), 1);
        let batch = poll_hub.read(&news, Start::Earliest, 10).await.unwrap();
        assert_eq!(batch.messages.len(), 1);
        assert_eq!(metrics.delivered(Technique::Poll), 1);
        hub.read(&news, Start::Earliest, 10).await.unwrap();
        assert_eq!(metrics.delivered(Technique::Poll), 1);
        // A cursor from another hub's history: a reset.
        let foreign = MemoryHub::new()
            .publish(&news, Publication::new("x"))
            .await
            .unwrap();
        poll_hub
            .read(&news, Start::After(foreign), 10)
            .await
            .unwrap();
        assert_eq!(metrics.signals(), (0, 1));
        drop((sse, ws, unlabelled));
        assert_eq!(metrics.subscribers(&news), [0; 4]);
        assert!(metrics.lock().is_empty());
    }
}
