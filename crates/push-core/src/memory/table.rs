//! The channel table: finding a channel by name, creating it within the
//! limits, and making room by evicting channels nobody is subscribed to.
//!
//! Two limits: `max_channels` for all channels, and a quota for *unpublished*
//! ones (nothing published in them yet: made by a subscribe or a read). When
//! a limit is reached, one pass over the table evicts the least recently
//! active channels with no subscriber (for the quota: unpublished ones) down
//! to 90% of the limit, so a flood of new names costs one O(channels) pass per
//! tenth of the limit. A pass that cannot free that much is not repeated
//! within a second: meanwhile, new channels beyond the limit are refused.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use super::{Channel, ChannelLog, ChannelState, Inner, Waiters, read, write};
use crate::{ChannelName, Epoch, Error, Timestamp};

/// Why a channel is wanted. Both may create it; only a publish may create one
/// beyond the unpublished quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Intent {
    Publish,
    /// A subscribe or a read.
    Observe,
}

/// The limit an eviction pass makes room under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Room {
    /// `max_channels`: any channel without a subscriber may go.
    Table = 0,
    /// The unpublished quota: an unpublished channel without a subscriber may go.
    Unpublished = 1,
}

impl Room {
    fn evictable(self, state: &ChannelState) -> bool {
        state.subscribers == 0 && (self == Room::Table || state.log.is_unpublished())
    }
}

impl Inner {
    /// Runs `f` on the live channel named `name`, creating it if needed.
    pub(super) fn with_channel<T>(
        &self,
        name: &ChannelName,
        now: Timestamp,
        intent: Intent,
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
            let channel = self.channel(name, now, intent)?;
            let mut state = channel.lock();
            // A sweep or an eviction may have retired it between the lookup
            // and the lock.
            if !state.retired {
                return Ok(f(&channel, &mut state));
            }
        }
    }

    fn channel(
        &self,
        name: &ChannelName,
        now: Timestamp,
        intent: Intent,
    ) -> Result<Arc<Channel>, Error> {
        if let Some(channel) = read(&self.channels).get(name) {
            return Ok(channel.clone());
        }
        let max_unpublished = self.config.unpublished_channel_limit();
        let mut made_room = false;
        loop {
            let mut channels = write(&self.channels);
            if let Some(channel) = channels.get(name) {
                return Ok(channel.clone());
            }
            let table_full = channels.len() >= self.config.max_channels;
            let quota_full = intent == Intent::Observe
                && self.unpublished.load(Ordering::Relaxed) >= max_unpublished;
            if !table_full && !quota_full {
                let channel = Arc::new(Channel {
                    name: name.clone(),
                    clock: self.clock.clone(),
                    state: Mutex::new(ChannelState {
                        log: ChannelLog::new(self.next_epoch()),
                        waiters: Waiters::default(),
                        ephemeral: crate::EphemeralQueue::new(),
                        presence: super::presence::PresenceTable::default(),
                        subscribers: 0,
                        last_active: now,
                        retired: false,
                    }),
                });
                // Every channel starts unpublished; its first publish moves it.
                self.unpublished.fetch_add(1, Ordering::Relaxed);
                channels.insert(name.clone(), channel.clone());
                return Ok(channel);
            }
            drop(channels);
            if made_room {
                let limit = if quota_full {
                    max_unpublished
                } else {
                    self.config.max_channels
                };
                return Err(Error::TooManyChannels { limit });
            }
            made_room = true;
            if quota_full {
                self.make_room(Room::Unpublished, now);
            }
            if table_full {
                self.make_room(Room::Table, now);
            }
        }
    }

    /// A fresh epoch, from a per-hub random seed (see [`Epoch::derived`]).
    fn next_epoch(&self) -> Epoch {
        Epoch::derived(
            self.epoch_seed,
            self.epochs_made.fetch_add(1, Ordering::Relaxed),
        )
    }

    /// Evicts channels without subscribers, least recently active first, down
    /// to 90% of `room`'s limit (a channel that retains messages too: a client
    /// resuming in it gets a reset, as the new channel has a new epoch).
    fn make_room(&self, room: Room, now: Timestamp) {
        let short_at = &self.short_pass_at[room as usize];
        let last_short = short_at.load(Ordering::Relaxed);
        if last_short != 0 && now.as_unix_millis() < last_short.saturating_add(1_000) {
            return;
        }
        let limit = match room {
            Room::Table => self.config.max_channels,
            Room::Unpublished => self.config.unpublished_channel_limit(),
        };
        let (count, mut candidates) = {
            let channels = read(&self.channels);
            let count = match room {
                Room::Table => channels.len(),
                Room::Unpublished => self.unpublished.load(Ordering::Relaxed),
            };
            if count < limit {
                return; // someone else made room meanwhile
            }
            let candidates: Vec<_> = channels
                .values()
                .filter_map(|channel| {
                    let mut state = channel.lock();
                    state.log.expire(now, self.config.max_age);
                    room.evictable(&state)
                        .then(|| (state.last_active, channel.clone()))
                })
                .collect();
            (count, candidates)
        };
        let keep = limit - limit / 10;
        let excess = (count + 1).saturating_sub(keep);
        if candidates.len() > excess {
            candidates.select_nth_unstable_by_key(excess, |(last_active, _)| *last_active);
            candidates.truncate(excess);
        }
        let chosen = candidates.into_iter().map(|(_, channel)| channel);
        let removed = self.remove_if(chosen, |state| room.evictable(state));
        self.evicted.fetch_add(
            u64::try_from(removed).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        if removed < excess {
            short_at.store(now.as_unix_millis().max(1), Ordering::Relaxed);
        }
    }

    /// Removes each of `candidates` that still satisfies `should_remove` under
    /// its lock, and drops what it retained; returns how many it removed.
    pub(super) fn remove_if(
        &self,
        candidates: impl IntoIterator<Item = Arc<Channel>>,
        should_remove: impl Fn(&ChannelState) -> bool,
    ) -> usize {
        let mut removed = 0;
        let mut retained = Vec::new();
        {
            let mut channels = write(&self.channels);
            for channel in candidates {
                let mut state = channel.lock();
                let current = channels
                    .get(&channel.name)
                    .is_some_and(|c| Arc::ptr_eq(c, &channel));
                if current && !state.retired && should_remove(&state) {
                    state.retired = true;
                    if state.log.is_unpublished() {
                        self.unpublished.fetch_sub(1, Ordering::Relaxed);
                    }
                    let messages = state.log.clear();
                    if !messages.is_empty() {
                        retained.push(messages);
                    }
                    state.waiters.release_memory();
                    channels.remove(&channel.name);
                    removed += 1;
                }
            }
        }
        // Freed outside the locks (messages in flight live on until delivered).
        drop(retained);
        removed
    }
}
