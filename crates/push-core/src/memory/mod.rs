//! The in-memory hub: one process, no dependencies, the default.

mod log;
mod subscription;
mod waiters;

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::future::{Ready, ready};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use self::log::{ChannelLog, Retention};
pub use self::subscription::MemorySubscription;
use self::waiters::{Waiters, wake_all};
use crate::{
    Batch, ChannelName, Clock, Cursor, Epoch, Error, Hub, Publication, Start, SystemClock,
    Timestamp,
};

/// Limits of a [`MemoryHub`]. Every field has a default fit for a public server;
/// set the ones you need on `MemoryHubConfig::default()`.
///
/// Memory is bounded by `max_channels × max_bytes` for retained data (plus about
/// 200 bytes of bookkeeping per message and per channel), whatever publishers
/// and subscribers do.
///
/// ```
/// use std::time::Duration;
/// use push_core::{MemoryHub, MemoryHubConfig};
///
/// let config = MemoryHubConfig::default()
///     .with_max_messages(100)
///     .with_max_age(Duration::from_secs(300));
/// let hub = MemoryHub::with_config(config)?;
/// # Ok::<(), push_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryHubConfig {
    /// Messages a channel retains (default 1,000). At least 1: a subscriber reads
    /// from the log, so the log must hold the message being delivered.
    pub max_messages: usize,
    /// Bytes of data and event names a channel retains (default 1 MiB).
    pub max_bytes: usize,
    /// How long a message is retained (default 1 hour).
    pub max_age: Duration,
    /// The largest message accepted, data plus event name (default 256 KiB); at
    /// most `max_bytes`.
    pub max_message_bytes: usize,
    /// Channels the hub holds at once (default 100,000). When full, channels with
    /// no subscribers and no retained messages are evicted, least recently used
    /// first; only when every channel is in use does creating one fail with
    /// [`Error::TooManyChannels`].
    pub max_channels: usize,
    /// How long a channel with no subscribers and no retained messages keeps its
    /// epoch and head before [`MemoryHub::sweep`] frees it (default 24 hours).
    /// Within that time a returning client resumes without a spurious reset;
    /// after it, the client gets a reset.
    pub idle_channel_ttl: Duration,
}

impl Default for MemoryHubConfig {
    fn default() -> Self {
        MemoryHubConfig {
            max_messages: 1_000,
            max_bytes: 1 << 20,
            max_age: Duration::from_secs(60 * 60),
            max_message_bytes: 256 << 10,
            max_channels: 100_000,
            idle_channel_ttl: Duration::from_secs(24 * 60 * 60),
        }
    }
}

impl MemoryHubConfig {
    /// Sets [`max_messages`](Self::max_messages).
    #[must_use]
    pub fn with_max_messages(mut self, max_messages: usize) -> Self {
        self.max_messages = max_messages;
        self
    }

    /// Sets [`max_bytes`](Self::max_bytes).
    #[must_use]
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Sets [`max_age`](Self::max_age).
    #[must_use]
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// Sets [`max_message_bytes`](Self::max_message_bytes).
    #[must_use]
    pub fn with_max_message_bytes(mut self, max_message_bytes: usize) -> Self {
        self.max_message_bytes = max_message_bytes;
        self
    }

    /// Sets [`max_channels`](Self::max_channels).
    #[must_use]
    pub fn with_max_channels(mut self, max_channels: usize) -> Self {
        self.max_channels = max_channels;
        self
    }

    /// Sets [`idle_channel_ttl`](Self::idle_channel_ttl).
    #[must_use]
    pub fn with_idle_channel_ttl(mut self, idle_channel_ttl: Duration) -> Self {
        self.idle_channel_ttl = idle_channel_ttl;
        self
    }

    /// Checks that the limits can work together.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the first problem.
    pub fn validate(&self) -> Result<(), Error> {
        let reason = if self.max_messages == 0 {
            "max_messages must be at least 1"
        } else if self.max_channels == 0 {
            "max_channels must be at least 1"
        } else if self.max_message_bytes > self.max_bytes {
            "max_message_bytes must not exceed max_bytes"
        } else {
            return Ok(());
        };
        Err(Error::InvalidConfig { reason })
    }

    fn retention(&self) -> Retention {
        Retention {
            max_messages: self.max_messages,
            max_bytes: self.max_bytes,
            max_age: self.max_age,
        }
    }
}

/// What a channel holds right now (see [`MemoryHub::channel_stats`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelStats {
    /// The channel's head: the id of its last message, or its start.
    pub cursor: Cursor,
    /// Messages retained.
    pub messages: usize,
    /// Bytes retained (data and event names).
    pub bytes: usize,
    /// Live subscriptions.
    pub subscribers: usize,
}

/// The in-memory [`Hub`]: channels, their bounded logs and their subscribers in
/// this process. Cloning is cheap and shares the hub.
///
/// Each channel is a log with positions, not a queue per subscriber: a publish
/// is one append and one wake-up of the parked subscribers, whatever their
/// number, and an idle subscription costs about a hundred bytes. The hub reads
/// the time only from the [`Clock`] it is given, so tests can drive expiry.
///
/// Call [`MemoryHub::sweep`] now and then (the push server does, every minute)
/// to free channels idle for longer than
/// [`idle_channel_ttl`](MemoryHubConfig::idle_channel_ttl); without it, idle
/// channels are still evicted when the hub reaches `max_channels`.
///
/// ```
/// use futures_util::StreamExt;
/// use push_core::{Hub, Item, MemoryHub, Publication, Start};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), push_core::Error> {
/// let hub = MemoryHub::new();
/// let news = "news".parse()?;
/// let mut subscription = hub.subscribe(&news, Start::Live).await?;
/// let cursor = hub.publish(&news, Publication::new("hello")).await?;
/// let Some(Item::Message(message)) = subscription.next().await else { unreachable!() };
/// assert_eq!((message.cursor(), &message.data()[..]), (cursor, &b"hello"[..]));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct MemoryHub {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: MemoryHubConfig,
    clock: Arc<dyn Clock>,
    channels: RwLock<HashMap<ChannelName, Arc<Channel>>>,
    epoch_seed: u64,
    epochs_made: AtomicU64,
    /// When an eviction last freed nothing (ms; 0 = never): a full hub retries
    /// at most once a second, so a flood of new names cannot make every
    /// request scan every channel.
    futile_eviction_at: AtomicU64,
}

#[derive(Debug)]
struct Channel {
    name: ChannelName,
    clock: Arc<dyn Clock>,
    state: Mutex<ChannelState>,
}

#[derive(Debug)]
struct ChannelState {
    log: ChannelLog,
    waiters: Waiters,
    subscribers: usize,
    last_active: Timestamp,
    /// Removed from the hub's map; whoever still holds it looks the name up again.
    retired: bool,
}

impl Channel {
    fn lock(&self) -> MutexGuard<'_, ChannelState> {
        // No code panics while holding the lock, so a poisoned state is intact.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ChannelState {
    /// Nothing depends on it but its epoch and head.
    fn is_dormant(&self) -> bool {
        self.subscribers == 0 && self.log.is_empty()
    }
}

impl Default for MemoryHub {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryHub {
    /// A hub with the default limits and the system clock.
    pub fn new() -> Self {
        Self::build(MemoryHubConfig::default(), Arc::new(SystemClock))
    }

    /// A hub with these limits and the system clock.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when the limits cannot work together.
    pub fn with_config(config: MemoryHubConfig) -> Result<Self, Error> {
        Self::with_config_and_clock(config, SystemClock)
    }

    /// A hub with these limits that reads time from `clock`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when the limits cannot work together.
    pub fn with_config_and_clock(
        config: MemoryHubConfig,
        clock: impl Clock,
    ) -> Result<Self, Error> {
        config.validate()?;
        Ok(Self::build(config, Arc::new(clock)))
    }

    fn build(config: MemoryHubConfig, clock: Arc<dyn Clock>) -> Self {
        MemoryHub {
            inner: Arc::new(Inner {
                config,
                clock,
                channels: RwLock::new(HashMap::new()),
                epoch_seed: RandomState::new().hash_one(0x5eed_u64),
                epochs_made: AtomicU64::new(0),
                futile_eviction_at: AtomicU64::new(0),
            }),
        }
    }

    /// The limits this hub runs with.
    pub fn config(&self) -> &MemoryHubConfig {
        &self.inner.config
    }

    /// How many channels the hub holds, dormant ones included.
    pub fn channel_count(&self) -> usize {
        read(&self.inner.channels).len()
    }

    /// What `channel` holds now, or `None` if the hub does not hold it.
    pub fn channel_stats(&self, channel: &ChannelName) -> Option<ChannelStats> {
        let channel = read(&self.inner.channels).get(channel)?.clone();
        let now = self.inner.clock.now();
        let mut state = channel.lock();
        state.log.expire(now, self.inner.config.max_age);
        Some(ChannelStats {
            cursor: state.log.head_cursor(),
            messages: state.log.len(),
            bytes: state.log.bytes(),
            subscribers: state.subscribers,
        })
    }

    /// Expires old messages in every channel, gives back the buffers of channels
    /// left empty, and frees the channels idle for longer than
    /// [`idle_channel_ttl`](MemoryHubConfig::idle_channel_ttl). Returns how many
    /// channels it freed. O(channels); call it on an interval.
    pub fn sweep(&self) -> usize {
        let inner = &*self.inner;
        let now = inner.clock.now();
        let ttl = inner.config.idle_channel_ttl;
        let expired = |state: &ChannelState| {
            state.is_dormant() && now.saturating_duration_since(state.last_active) >= ttl
        };
        let candidates: Vec<_> = read(&inner.channels)
            .values()
            .filter(|channel| {
                let mut state = channel.lock();
                state.log.expire(now, inner.config.max_age);
                if state.is_dormant() {
                    state.log.release_memory();
                    state.waiters.release_memory();
                }
                expired(&state)
            })
            .cloned()
            .collect();
        inner.remove_if(candidates, expired)
    }

    /// Appends to a channel now; the body of [`Hub::publish`].
    fn publish_now(
        &self,
        channel: &ChannelName,
        publication: Publication,
    ) -> Result<Cursor, Error> {
        let inner = &*self.inner;
        let limit = inner.config.max_message_bytes;
        let size = publication.size();
        if size > limit {
            return Err(Error::MessageTooLarge { size, limit });
        }
        let now = inner.clock.now();
        let retention = inner.config.retention();
        let (channel, cursor, parked) = inner.with_channel(channel, now, |channel, state| {
            state.log.expire(now, retention.max_age);
            let cursor = state
                .log
                .append(&channel.name, publication, now, &retention);
            state.last_active = now;
            (channel.clone(), cursor, state.waiters.take_all())
        })?;
        if parked.capacity() > 0 {
            let drained = wake_all(parked);
            channel.lock().waiters.give_back(drained);
        }
        Ok(cursor)
    }

    fn read_now(&self, channel: &ChannelName, start: Start, limit: usize) -> Result<Batch, Error> {
        let inner = &*self.inner;
        let now = inner.clock.now();
        inner.with_channel(channel, now, |_, state| {
            state.log.expire(now, inner.config.max_age);
            state.last_active = now;
            state.log.read(start, limit)
        })
    }

    fn subscribe_now(
        &self,
        channel: &ChannelName,
        start: Start,
    ) -> Result<MemorySubscription, Error> {
        let inner = &*self.inner;
        let now = inner.clock.now();
        inner.with_channel(channel, now, |channel, state| {
            state.log.expire(now, inner.config.max_age);
            state.last_active = now;
            state.subscribers += 1;
            let (next, signal) = state.log.resolve(start);
            MemorySubscription::new(channel.clone(), next, signal)
        })
    }
}

// The futures are `Ready`, and say so: a caller holding a `MemoryHub` may take
// the result without an executor (`Ready::into_inner`).
#[allow(refining_impl_trait)]
impl Hub for MemoryHub {
    type Subscription = MemorySubscription;

    fn publish(
        &self,
        channel: &ChannelName,
        publication: Publication,
    ) -> Ready<Result<Cursor, Error>> {
        ready(self.publish_now(channel, publication))
    }

    fn read(
        &self,
        channel: &ChannelName,
        start: Start,
        limit: usize,
    ) -> Ready<Result<Batch, Error>> {
        ready(self.read_now(channel, start, limit))
    }

    fn subscribe(
        &self,
        channel: &ChannelName,
        start: Start,
    ) -> Ready<Result<MemorySubscription, Error>> {
        ready(self.subscribe_now(channel, start))
    }
}

impl Inner {
    /// Runs `f` on the live channel named `name`, creating it if needed.
    fn with_channel<T>(
        &self,
        name: &ChannelName,
        now: Timestamp,
        f: impl FnOnce(&Arc<Channel>, &mut ChannelState) -> T,
    ) -> Result<T, Error> {
        // The common case, an existing channel: work under the map's read
        // guard, without touching the channel's reference count.
        {
            let channels = read(&self.channels);
            if let Some(channel) = channels.get(name) {
                let mut state = channel.lock();
                if !state.retired {
                    return Ok(f(channel, &mut state));
                }
            }
        }
        loop {
            let channel = self.channel(name, now)?;
            let mut state = channel.lock();
            // A sweep may have retired it between the lookup and the lock.
            if !state.retired {
                return Ok(f(&channel, &mut state));
            }
        }
    }

    fn channel(&self, name: &ChannelName, now: Timestamp) -> Result<Arc<Channel>, Error> {
        if let Some(channel) = read(&self.channels).get(name) {
            return Ok(channel.clone());
        }
        for attempt in 0..2 {
            let mut channels = write(&self.channels);
            if let Some(channel) = channels.get(name) {
                return Ok(channel.clone());
            }
            if channels.len() < self.config.max_channels {
                let channel = Arc::new(Channel {
                    name: name.clone(),
                    clock: self.clock.clone(),
                    state: Mutex::new(ChannelState {
                        log: ChannelLog::new(self.next_epoch()),
                        waiters: Waiters::default(),
                        subscribers: 0,
                        last_active: now,
                        retired: false,
                    }),
                });
                channels.insert(name.clone(), channel.clone());
                return Ok(channel);
            }
            drop(channels);
            if attempt == 0 {
                self.evict_dormant(now);
            }
        }
        Err(Error::TooManyChannels {
            limit: self.config.max_channels,
        })
    }

    /// A fresh epoch, from a per-hub random seed (see [`Epoch::derived`]).
    fn next_epoch(&self) -> Epoch {
        Epoch::derived(
            self.epoch_seed,
            self.epochs_made.fetch_add(1, Ordering::Relaxed),
        )
    }

    /// Makes room in a full hub: evicts dormant channels, least recently active
    /// first, down to 90% of `max_channels`.
    fn evict_dormant(&self, now: Timestamp) {
        let futile_at = self.futile_eviction_at.load(Ordering::Relaxed);
        if futile_at != 0 && now.as_unix_millis() < futile_at.saturating_add(1_000) {
            return;
        }
        let (count, mut dormant) = {
            let channels = read(&self.channels);
            let dormant: Vec<_> = channels
                .values()
                .filter_map(|channel| {
                    let mut state = channel.lock();
                    state.log.expire(now, self.config.max_age);
                    state
                        .is_dormant()
                        .then(|| (state.last_active, channel.clone()))
                })
                .collect();
            (channels.len(), dormant)
        };
        let keep = self.config.max_channels - self.config.max_channels / 10;
        let excess = (count + 1).saturating_sub(keep);
        dormant.sort_unstable_by_key(|(last_active, _)| *last_active);
        let chosen = dormant.into_iter().take(excess).map(|(_, channel)| channel);
        if self.remove_if(chosen, ChannelState::is_dormant) == 0 {
            self.futile_eviction_at
                .store(now.as_unix_millis().max(1), Ordering::Relaxed);
        }
    }

    /// Removes each of `candidates` that still satisfies `should_remove` under
    /// its lock; returns how many it removed.
    fn remove_if(
        &self,
        candidates: impl IntoIterator<Item = Arc<Channel>>,
        should_remove: impl Fn(&ChannelState) -> bool,
    ) -> usize {
        let mut channels = write(&self.channels);
        let mut removed = 0;
        for channel in candidates {
            let mut state = channel.lock();
            let current = channels
                .get(&channel.name)
                .is_some_and(|c| Arc::ptr_eq(c, &channel));
            if current && !state.retired && should_remove(&state) {
                state.retired = true;
                channels.remove(&channel.name);
                removed += 1;
            }
        }
        removed
    }
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
