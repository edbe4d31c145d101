//! The in-memory hub: one process, no dependencies, the default.
//!
//! Locks, always taken in this order: the channel map, then one channel; the
//! budget's FIFO, then one channel (see `budget.rs`). A channel lock is never
//! held while taking the map or the FIFO, and the map and the FIFO are never
//! held together.

mod budget;
mod config;
mod log;
mod presence;
mod subscription;
mod table;
mod waiters;

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::future::{Ready, ready};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub(crate) use self::budget::{Budget, ENCODING_OVERHEAD, MESSAGE_OVERHEAD};
pub use self::config::MemoryHubConfig;
use self::log::ChannelLog;
use self::presence::{Change, PresenceTable};
pub use self::subscription::MemorySubscription;
use self::table::Intent;
use self::waiters::{Waiters, wake_all};
use crate::{
    Batch, ChannelName, Clock, Cursor, EphemeralQueue, Error, Hub, Member, Message, Presence,
    PresencePage, PresenceSnapshot, Publication, Start, SystemClock, Timestamp,
};

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

/// What the whole hub holds right now (see [`MemoryHub::stats`]): for metrics,
/// and to see the budget and the channel limits at work.
///
/// ```
/// use push_core::{Hub, MemoryHub, Publication, Start};
///
/// # futures_util::FutureExt::now_or_never(async {
/// let hub = MemoryHub::new();
/// hub.publish(&"news".parse()?, Publication::new("hello")).await?;
/// let _watching = hub.subscribe(&"quiet".parse()?, Start::Live).await?;
/// let stats = hub.stats();
/// assert_eq!((stats.channels, stats.unpublished_channels), (2, 1));
/// assert!(stats.retained_bytes > 5 && stats.retained_bytes <= stats.max_retained_bytes);
/// # Ok::<(), push_core::Error>(()) }).unwrap()?;
/// # Ok::<(), push_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryHubStats {
    /// Channels held, of both kinds.
    pub channels: usize,
    /// Of those, the ones nothing was published to yet (created by a
    /// subscribe or a read); see
    /// [`max_unpublished_channels`](MemoryHubConfig::max_unpublished_channels).
    pub unpublished_channels: usize,
    /// Bytes held by live messages, as
    /// [`max_retained_bytes`](MemoryHubConfig::max_retained_bytes) counts them:
    /// retained ones, and dropped ones still being delivered.
    pub retained_bytes: usize,
    /// The budget: [`max_retained_bytes`](MemoryHubConfig::max_retained_bytes).
    pub max_retained_bytes: usize,
    /// Messages dropped to keep within the budget, since the hub started.
    pub trimmed_messages: u64,
    /// Channels evicted to make room for new ones, since the hub started (not
    /// counting the idle ones [`MemoryHub::sweep`] frees).
    pub evicted_channels: u64,
}

/// The in-memory [`Hub`]: channels, their bounded logs and their subscribers in
/// this process. Cloning is cheap and shares the hub.
///
/// Each channel is a log with positions, not a queue per subscriber: a publish
/// is one append and one wake-up of the parked subscribers, whatever their
/// number, and an idle subscription costs about a hundred bytes. The hub reads
/// the time only from the [`Clock`] it is given, so tests can drive expiry.
///
/// Memory is bounded hub-wide: past
/// [`max_retained_bytes`](MemoryHubConfig::max_retained_bytes), the oldest
/// messages of the whole hub are dropped (subscribers behind get a gap); past
/// [`max_channels`](MemoryHubConfig::max_channels), channels nobody is
/// subscribed to are evicted (clients resuming in them get a reset). Nothing is
/// lost silently.
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
    budget: Arc<Budget>,
    /// Channels nothing was published to in their epoch (created by a
    /// subscribe or a read). Changed under the channel's lock.
    unpublished: AtomicUsize,
    evicted: AtomicU64,
    epoch_seed: u64,
    epochs_made: AtomicU64,
    /// When an eviction pass last fell short, per [`table::Room`] (ms; 0 =
    /// never): a full hub tries again at most once a second, so a flood of new
    /// names cannot make every request scan every channel.
    short_pass_at: [AtomicU64; 2],
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
    ephemeral: EphemeralQueue,
    presence: PresenceTable,
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
        self.subscribers == 0 && self.log.is_empty() && self.presence.is_empty()
    }

    /// Hands an ephemeral `publication` to the live subscribers, after the
    /// stored messages before it; the parked ones to wake (once unlocked).
    fn broadcast(
        &mut self,
        name: &ChannelName,
        publication: Publication,
        now: Timestamp,
        max_bytes: usize,
    ) -> Vec<Option<std::task::Waker>> {
        if self.subscribers == 0 {
            return Vec::new();
        }
        let head = self.log.head_cursor();
        let message = Message::ephemeral_from(name.clone(), head, publication, now);
        let after = head.position().major() + 1;
        self.ephemeral
            .push(after, Arc::new(message), self.subscribers, max_bytes);
        self.last_active = now;
        self.waiters.take_all()
    }

    /// Announces presence changes; the parked subscribers to wake.
    fn announce(
        &mut self,
        name: &ChannelName,
        changes: impl IntoIterator<Item = Change>,
        now: Timestamp,
        max_bytes: usize,
    ) -> Vec<Option<std::task::Waker>> {
        let mut parked = Vec::new();
        for (change, user, technique) in changes {
            let woken = self.broadcast(name, change.publication(&user, technique), now, max_bytes);
            if parked.is_empty() {
                parked = woken;
            }
        }
        parked
    }
}

impl Channel {
    /// Wakes `parked` (taken under the lock), then gives the buffer back.
    fn wake(&self, parked: Vec<Option<std::task::Waker>>) {
        if parked.capacity() > 0 {
            let drained = wake_all(parked);
            self.lock().waiters.give_back(drained);
        }
    }
}

/// A streaming connection's presence on the memory hub.
struct MemoryPresence {
    channel: Arc<Channel>,
    id: u64,
    max_ephemeral_bytes: usize,
}

impl Drop for MemoryPresence {
    fn drop(&mut self) {
        let now = self.channel.clock.now();
        let mut state = self.channel.lock();
        let left = state.presence.remove(self.id);
        let parked = state.announce(&self.channel.name, left, now, self.max_ephemeral_bytes);
        state.last_active = state.last_active.max(now);
        drop(state);
        self.channel.wake(parked);
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
                budget: Arc::new(Budget::new(config.max_retained_bytes)),
                config,
                clock,
                channels: RwLock::new(HashMap::new()),
                unpublished: AtomicUsize::new(0),
                evicted: AtomicU64::new(0),
                epoch_seed: RandomState::new().hash_one(0x5eed_u64),
                epochs_made: AtomicU64::new(0),
                short_pass_at: [AtomicU64::new(0), AtomicU64::new(0)],
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

    /// What the hub holds now: channels of each kind, and the bytes counted
    /// against its budget. Cheap: a few atomic loads and the map's length.
    pub fn stats(&self) -> MemoryHubStats {
        let inner = &*self.inner;
        MemoryHubStats {
            channels: read(&inner.channels).len(),
            unpublished_channels: inner.unpublished.load(Ordering::Relaxed),
            retained_bytes: inner.budget.used(),
            max_retained_bytes: inner.budget.limit(),
            trimmed_messages: inner.budget.trimmed(),
            evicted_channels: inner.evicted.load(Ordering::Relaxed),
        }
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
    /// channels it freed. O(channels + retained messages); call it on an
    /// interval.
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
        let freed = inner.remove_if(candidates, expired);
        inner.budget.compact();
        freed
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
        if publication.is_ephemeral() {
            return Ok(self.publish_ephemeral(channel, publication, now));
        }
        let retention = inner.config.retention();
        let fingerprint = publication.key().map(|_| publication.fingerprint());
        let published = inner.with_channel(channel, now, Intent::Publish, |channel, state| {
            state.log.expire(now, retention.max_age);
            if let (Some(key), Some(fingerprint)) = (publication.key(), fingerprint)
                && let Some(known) = state.log.keyed(key, fingerprint)
            {
                // A retry: the first one's cursor, nothing stored.
                state.last_active = now;
                return Err(known);
            }
            if state.log.is_unpublished() {
                inner.unpublished.fetch_sub(1, Ordering::Relaxed);
            }
            let cursor =
                state
                    .log
                    .append(&channel.name, publication, now, &retention, &inner.budget);
            state.last_active = now;
            Ok((channel.clone(), cursor, state.waiters.take_all()))
        })?;
        let (channel, cursor, parked) = match published {
            Ok(published) => published,
            Err(known) => return known,
        };
        if parked.capacity() > 0 {
            let drained = wake_all(parked);
            channel.lock().waiters.give_back(drained);
        }
        let budget = &inner.budget;
        budget.record(Arc::downgrade(&channel), cursor.position().major());
        if budget.used() > budget.limit() {
            budget.trim();
        }
        Ok(cursor)
    }

    /// Hands an ephemeral publication to the channel's live subscribers;
    /// answers the head it follows. Creates no channel: with nobody
    /// subscribed there is no one to deliver to.
    fn publish_ephemeral(
        &self,
        name: &ChannelName,
        publication: Publication,
        now: Timestamp,
    ) -> Cursor {
        let inner = &*self.inner;
        let Some(channel) = read(&inner.channels).get(name).cloned() else {
            return Cursor::new(crate::Epoch::new(0), crate::Position::new(0, 0));
        };
        let mut state = channel.lock();
        let head = state.log.head_cursor();
        let parked = state.broadcast(name, publication, now, inner.config.max_ephemeral_bytes);
        drop(state);
        channel.wake(parked);
        head
    }

    /// Drops the pollers' leases that lapsed, announcing the leaves; how
    /// long until the next one may lapse (`None`: no lease is held). The
    /// push server calls it on that schedule; [`Hub::presence`] and
    /// [`Hub::touch`] expire a channel's leases too.
    pub fn expire_presence(&self) -> Option<std::time::Duration> {
        let inner = &*self.inner;
        let now = inner.clock.now();
        let leased: Vec<_> = read(&inner.channels)
            .values()
            .filter(|channel| channel.lock().presence.has_leases())
            .cloned()
            .collect();
        let mut next: Option<Timestamp> = None;
        for channel in leased {
            let mut state = channel.lock();
            let left = state.presence.expire(now);
            let parked = state.announce(&channel.name, left, now, inner.config.max_ephemeral_bytes);
            if let Some(at) = state.presence.earliest() {
                next = Some(next.map_or(at, |next| next.min(at)));
            }
            drop(state);
            channel.wake(parked);
        }
        next.map(|at| at.saturating_duration_since(now))
    }

    /// Changes `name`'s presence with `change` under its lock, and
    /// announces the joins and leaves it answers; the channel is woken (and
    /// its `Arc` cloned) only when someone waits.
    fn change_presence<T>(
        &self,
        name: &ChannelName,
        change: impl FnOnce(&Arc<Channel>, &mut PresenceTable, Timestamp) -> (T, Vec<Change>),
    ) -> Result<T, Error> {
        let inner = &*self.inner;
        let now = inner.clock.now();
        let max_bytes = inner.config.max_ephemeral_bytes;
        inner
            .with_channel(name, now, Intent::Observe, |channel, state| {
                let (out, changes) = change(channel, &mut state.presence, now);
                state.last_active = now;
                let parked = state.announce(&channel.name, changes, now, max_bytes);
                let waking = (parked.capacity() > 0).then(|| (channel.clone(), parked));
                (out, waking)
            })
            .map(|(out, waking)| {
                if let Some((channel, parked)) = waking {
                    channel.wake(parked);
                }
                out
            })
    }

    fn read_now(&self, channel: &ChannelName, start: Start, limit: usize) -> Result<Batch, Error> {
        let inner = &*self.inner;
        let now = inner.clock.now();
        inner.with_channel(channel, now, Intent::Observe, |_, state| {
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
        inner.with_channel(channel, now, Intent::Observe, |channel, state| {
            state.log.expire(now, inner.config.max_age);
            state.last_active = now;
            state.subscribers += 1;
            let (next, signal) = state.log.resolve(start);
            let ephemeral = state.ephemeral.next_seq();
            MemorySubscription::new(channel.clone(), next, ephemeral, signal)
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

    fn enter(&self, channel: &ChannelName, member: Member) -> Ready<Result<Presence, Error>> {
        let max_ephemeral_bytes = self.inner.config.max_ephemeral_bytes;
        ready(
            self.change_presence(channel, |channel, presence, _| {
                let (id, joined) = presence.enter(member);
                ((channel.clone(), id), joined.into_iter().collect())
            })
            .map(|(channel, id)| {
                Presence::new(MemoryPresence {
                    channel,
                    id,
                    max_ephemeral_bytes,
                })
            }),
        )
    }

    fn touch(
        &self,
        channel: &ChannelName,
        key: &str,
        member: Member,
        ttl: std::time::Duration,
    ) -> Ready<Result<(), Error>> {
        let max_leases = self.inner.config.max_presence_leases;
        ready(self.change_presence(channel, |_, presence, now| {
            let mut changes = presence.expire(now);
            let expires = now.saturating_add(ttl);
            changes.extend(presence.touch(key, member, expires, max_leases));
            ((), changes)
        }))
    }

    fn presence(
        &self,
        channel: &ChannelName,
        page: PresencePage,
    ) -> Ready<Result<PresenceSnapshot, Error>> {
        let inner = &*self.inner;
        let Some(channel) = read(&inner.channels).get(channel).cloned() else {
            return ready(Ok(PresenceSnapshot::default()));
        };
        let now = inner.clock.now();
        let mut state = channel.lock();
        let left = state.presence.expire(now);
        let parked = state.announce(&channel.name, left, now, inner.config.max_ephemeral_bytes);
        let snapshot = state.presence.snapshot(&page);
        drop(state);
        channel.wake(parked);
        ready(Ok(snapshot))
    }
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
