//! A subscriber of the in-memory hub: a position in a channel's log.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;

use super::Channel;
use super::waiters::WaitToken;
use crate::{Item, Signal};

/// A live subscription to one channel of a [`MemoryHub`](super::MemoryHub).
///
/// It holds no queue: only the number of the next message it wants, a pending
/// signal, and a parked waker while it waits. Each poll reads at most one item
/// from the shared log under the channel's lock. A subscriber that falls
/// behind the log's bounds gets a [`Gap`](crate::Gap) on its next poll; it never
/// makes the log keep more. Dropping it unsubscribes.
pub struct MemorySubscription {
    channel: Arc<Channel>,
    next: u64,
    /// The next ephemeral message wanted (see [`EphemeralQueue`](crate::EphemeralQueue)).
    ephemeral: u64,
    pending: Option<Box<Signal>>,
    wait: Option<WaitToken>,
}

impl MemorySubscription {
    pub(super) fn new(
        channel: Arc<Channel>,
        next: u64,
        ephemeral: u64,
        pending: Option<Signal>,
    ) -> Self {
        MemorySubscription {
            channel,
            next,
            ephemeral,
            pending: pending.map(Box::new),
            wait: None,
        }
    }
}

impl Stream for MemorySubscription {
    type Item = Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        let this = self.get_mut();
        if let Some(signal) = this.pending.take() {
            return Poll::Ready(Some(Item::Signal(*signal)));
        }
        let mut state = this.channel.lock();
        if let Some(message) = state.ephemeral.take(&mut this.ephemeral, this.next) {
            return Poll::Ready(Some(Item::Message(message)));
        }
        if let Some(item) = state.log.next_for(&mut this.next) {
            return Poll::Ready(Some(item));
        }
        state.waiters.register(&mut this.wait, cx.waker());
        Poll::Pending
    }
}

impl Drop for MemorySubscription {
    fn drop(&mut self) {
        let now = self.channel.clock.now();
        let mut state = self.channel.lock();
        state.waiters.cancel(self.wait.take());
        state.ephemeral.leave(self.ephemeral);
        state.subscribers = state.subscribers.saturating_sub(1);
        state.last_active = state.last_active.max(now);
    }
}

impl fmt::Debug for MemorySubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemorySubscription")
            .field("channel", &self.channel.name)
            .field("next", &self.next)
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}
