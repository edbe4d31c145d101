//! What one node keeps of a channel its subscribers follow: the recent run
//! of messages the Pub/Sub notifications brought (each decoded once, the
//! `Arc` shared by every local subscriber), and the wakers of those waiting.
//!
//! The cache is only a fast path. Where it cannot answer (a subscriber
//! behind it, an epoch it has not seen, a notification lost while the Pub/Sub
//! connection was down), subscribers read from Redis, which is the truth.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Waker;

use push_core::{ChannelName, Cursor, EphemeralQueue, Epoch, MemoryHubConfig, Message, Position};

/// What the caches of one node may hold together, in bytes, and hold now.
/// A cache over it drops its oldest messages, all of them if need be: the
/// cache is only a fast path, so a message it lacks is read from Redis.
#[derive(Debug)]
pub(crate) struct CacheBudget {
    limit: usize,
    used: AtomicUsize,
}

impl CacheBudget {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(CacheBudget {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// The bytes the caches hold now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn over(&self) -> bool {
        self.used() > self.limit
    }

    fn charge(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::Relaxed);
    }

    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// What a cached message is counted as: its data and event name, its
/// bookkeeping, and as much again for the encodings transports cache on it
/// (a JSON envelope or an SSE event each hold about the data once more).
fn footprint(message: &Message) -> usize {
    2 * message.size() + MemoryHubConfig::MESSAGE_OVERHEAD
}

/// One channel, on this node.
#[derive(Debug)]
pub(crate) struct LocalChannel {
    pub(crate) name: ChannelName,
    state: Mutex<State>,
    budget: Arc<CacheBudget>,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    /// The epoch the cache belongs to; `None` until the node has learned it.
    pub(crate) epoch: Option<Epoch>,
    /// The newest number known in that epoch.
    pub(crate) head: u64,
    /// Messages `head + 1 - cache.len() ..= head`.
    cache: VecDeque<Arc<Message>>,
    /// What they are counted as in the node's [`CacheBudget`].
    cached_bytes: usize,
    /// Ephemeral messages the local subscribers have yet to take.
    pub(crate) ephemeral: EphemeralQueue,
    /// Local subscribers.
    pub(crate) subscribers: usize,
    /// Subscribers waiting for a number past `head` (by subscriber id).
    waiting: HashMap<u64, Waker>,
    /// Changes with every change of the above: a subscriber whose read from
    /// Redis found nothing new waits for it to move before reading again.
    pub(crate) version: u64,
}

impl State {
    /// The oldest number in the cache (`head + 1` when it is empty).
    pub(crate) fn first_cached(&self) -> u64 {
        // Saturating: numbers come from Redis, not from us.
        self.head
            .saturating_add(1)
            .saturating_sub(self.cache.len() as u64)
    }

    /// Message `number`, if cached.
    pub(crate) fn get(&self, number: u64) -> Option<&Arc<Message>> {
        let index = number.checked_sub(self.first_cached())?;
        self.cache.get(usize::try_from(index).ok()?)
    }

    /// The newest cursor known (the start of epoch 0 before any).
    pub(crate) fn head_cursor(&self) -> Cursor {
        Cursor::new(
            self.epoch.unwrap_or(Epoch::new(0)),
            Position::new(self.head, 0),
        )
    }

    /// A notified ephemeral message: for the local subscribers, after the
    /// stored messages this node has seen.
    pub(crate) fn notified_ephemeral(&mut self, message: Message, max_bytes: usize) {
        let head = self.head_cursor();
        let message = Arc::new(message.following(head));
        let subscribers = self.subscribers;
        self.ephemeral
            .push(self.head.saturating_add(1), message, subscribers, max_bytes);
        self.wake_all();
    }

    /// Parks subscriber `id` until the next change.
    pub(crate) fn wait(&mut self, id: u64, waker: &Waker) {
        match self.waiting.get_mut(&id) {
            Some(parked) if parked.will_wake(waker) => {}
            Some(parked) => parked.clone_from(waker),
            None => {
                self.waiting.insert(id, waker.clone());
            }
        }
    }

    /// Forgets subscriber `id`'s waker.
    pub(crate) fn forget(&mut self, id: u64) {
        self.waiting.remove(&id);
    }

    /// Wakes everyone waiting (the state changed).
    fn wake_all(&mut self) {
        self.version += 1;
        for (_, waker) in self.waiting.drain() {
            waker.wake();
        }
    }

    /// A notified message: appended when it follows the cache, else the
    /// cache restarts at it (a new epoch, or notifications were lost:
    /// subscribers fetch what they miss from Redis).
    pub(crate) fn notified(
        &mut self,
        epoch: Epoch,
        message: Arc<Message>,
        capacity: usize,
        budget: &CacheBudget,
    ) {
        let number = message.cursor().position().major();
        if self.epoch == Some(epoch) && number <= self.head {
            return; // Already known (a fill got there first).
        }
        if self.epoch != Some(epoch) || self.head.checked_add(1) != Some(number) {
            self.clear(budget);
        }
        self.epoch = Some(epoch);
        self.head = number;
        let bytes = footprint(&message);
        self.cached_bytes += bytes;
        budget.charge(bytes);
        self.cache.push_back(message);
        while self.cache.len() > capacity.max(1) || (budget.over() && !self.cache.is_empty()) {
            self.pop_front(budget);
        }
        self.wake_all();
    }

    fn pop_front(&mut self, budget: &CacheBudget) {
        if let Some(message) = self.cache.pop_front() {
            let bytes = footprint(&message);
            self.cached_bytes -= bytes;
            budget.release(bytes);
        }
    }

    /// Empties the cache.
    fn clear(&mut self, budget: &CacheBudget) {
        self.cache.clear();
        budget.release(std::mem::take(&mut self.cached_bytes));
    }

    /// What Redis says after (re)subscribing: its epoch and head. Anything
    /// newer than the cache means notifications were missed.
    pub(crate) fn learned(&mut self, epoch: Epoch, head: u64, budget: &CacheBudget) {
        if self.epoch == Some(epoch) && head <= self.head {
            return;
        }
        if self.epoch != Some(epoch) || head > self.head {
            self.clear(budget);
        }
        self.epoch = Some(epoch);
        self.head = head;
        self.wake_all();
    }

    /// Wakes everyone without news: they look again (used when the node's
    /// view may be stale, e.g. after the Pub/Sub connection came back).
    pub(crate) fn nudge(&mut self) {
        self.wake_all();
    }
}

impl LocalChannel {
    pub(crate) fn new(name: ChannelName, budget: Arc<CacheBudget>) -> Arc<Self> {
        Arc::new(LocalChannel {
            name,
            state: Mutex::new(State::default()),
            budget,
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The node's budget its cache counts against.
    pub(crate) fn budget(&self) -> &CacheBudget {
        &self.budget
    }
}

impl Drop for LocalChannel {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        self.budget.release(std::mem::take(&mut state.cached_bytes));
    }
}
