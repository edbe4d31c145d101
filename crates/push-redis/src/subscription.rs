//! A subscription on one node: served from the node's recent messages when
//! it can, from the Redis stream when it must.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use push_core::{Batch, Cursor, Epoch, Item, Position, Start};

use crate::Inner;
use crate::local::LocalChannel;

/// The most messages one catch-up read brings.
const CATCH_UP: usize = 256;
/// Waits between failed catch-up reads (Redis down): from the first to
/// the last, doubling.
const RETRY: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(1));

type Fetch = Pin<Box<dyn Future<Output = Batch> + Send>>;

/// A live subscription to a channel of a [`RedisHub`](crate::RedisHub).
/// Dropping it unsubscribes (and the node stops following the channel when
/// it was the last local subscriber).
pub struct RedisSubscription {
    inner: Arc<Inner>,
    local: Arc<LocalChannel>,
    id: u64,
    /// The epoch of the history being followed, and the next number wanted.
    epoch: Epoch,
    next: u64,
    /// The next ephemeral message wanted (see [`push_core::EphemeralQueue`]).
    ephemeral: u64,
    pending: VecDeque<Item>,
    fetch: Option<Fetch>,
    /// The node state's version when a read from Redis last found nothing:
    /// no new read before it changes.
    idle_at: Option<u64>,
}

impl std::fmt::Debug for RedisSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSubscription")
            .field("channel", &self.local.name)
            .field("epoch", &self.epoch)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl RedisSubscription {
    pub(crate) fn new(inner: Arc<Inner>, local: Arc<LocalChannel>, id: u64) -> Self {
        let ephemeral = {
            let mut state = local.lock();
            state.subscribers += 1;
            state.ephemeral.next_seq()
        };
        RedisSubscription {
            ephemeral,
            inner,
            local,
            id,
            epoch: Epoch::new(0),
            next: 1,
            pending: VecDeque::new(),
            fetch: None,
            idle_at: None,
        }
    }

    /// Starts where `batch` (a read of no messages) says: after its cursor,
    /// with its signal first.
    pub(crate) fn starting_at(mut self, batch: Batch) -> Self {
        self.absorb(batch);
        self
    }

    fn absorb(&mut self, batch: Batch) {
        let empty = batch.is_empty();
        if let Some(signal) = batch.signal {
            self.follow(signal.resume());
            self.pending.push_back(Item::Signal(signal));
        }
        for message in batch.messages {
            self.follow(message.cursor());
            self.pending.push_back(Item::Message(message));
        }
        if empty {
            self.follow(batch.cursor);
        }
    }

    fn follow(&mut self, cursor: Cursor) {
        self.epoch = cursor.epoch();
        self.next = cursor.position().major() + 1;
    }

    /// Reads what follows from Redis, retrying while Redis is unreachable.
    fn start_fetch(&mut self) {
        let inner = self.inner.clone();
        let channel = self.local.name.clone();
        let since = Cursor::new(self.epoch, Position::new(self.next - 1, 0));
        self.fetch = Some(Box::pin(async move {
            let mut delay = RETRY.0;
            loop {
                match inner.read(&channel, Start::After(since), CATCH_UP).await {
                    Ok(batch) => return batch,
                    Err(err) => {
                        tracing::warn!(%channel, %err, "catching up from Redis failed; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(RETRY.1);
                    }
                }
            }
        }));
    }
}

impl Stream for RedisSubscription {
    type Item = Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        let this = &mut *self;
        loop {
            if let Some(item) = this.pending.pop_front() {
                return Poll::Ready(Some(item));
            }
            if let Some(fetch) = this.fetch.as_mut() {
                let batch = std::task::ready!(fetch.as_mut().poll(cx));
                this.fetch = None;
                if batch.is_empty() {
                    this.idle_at = Some(this.local.lock().version);
                }
                this.absorb(batch);
                continue;
            }
            let local = this.local.clone();
            let mut state = local.lock();
            if let Some(message) = state.ephemeral.take(&mut this.ephemeral, this.next) {
                return Poll::Ready(Some(Item::Message(message)));
            }
            let Some(epoch) = state.epoch else {
                // The node has not learned this channel's state yet.
                state.wait(this.id, cx.waker());
                return Poll::Pending;
            };
            let current = epoch == this.epoch;
            if current && this.next > state.head {
                state.wait(this.id, cx.waker());
                return Poll::Pending;
            }
            if current && let Some(message) = state.get(this.next) {
                let message = message.clone();
                this.next += 1;
                return Poll::Ready(Some(Item::Message(message)));
            }
            // Behind the node's recent messages, or another epoch: Redis
            // knows. Unless it just said there is nothing new.
            if this.idle_at == Some(state.version) {
                state.wait(this.id, cx.waker());
                return Poll::Pending;
            }
            drop(state);
            this.idle_at = None;
            this.start_fetch();
        }
    }
}

impl Drop for RedisSubscription {
    fn drop(&mut self) {
        {
            let mut state = self.local.lock();
            state.forget(self.id);
            state.ephemeral.leave(self.ephemeral);
            state.subscribers = state.subscribers.saturating_sub(1);
        }
        self.inner.unfollow(&self.local.name);
    }
}
