//! The hub-wide byte budget: what every live message holds, counted, and the
//! oldest retained messages (in publish order, across channels) dropped when
//! the count passes the limit.
//!
//! Each message the memory hub makes carries a handle to the [`Budget`]: it is
//! charged its [`footprint`](MESSAGE_OVERHEAD) when made, and each wire encoding
//! when a transport fills it; its `Drop` releases all of it. So `used` is the
//! bytes of live messages, retained or still in flight to a subscriber.
//!
//! The publish order is a FIFO of `(channel, message number)`. Trimming pops
//! its front and drops that channel's messages up to that number; an entry whose
//! message the channel already dropped (by its own count, bytes or age limits)
//! is stale and costs one pop. Compaction keeps stale entries from piling up.
//!
//! Locks: the FIFO, then a channel, never the other way. Trimming releases the
//! FIFO before locking a channel; compaction locks channels while holding it;
//! nothing takes the FIFO while holding a channel (a publish records its entry
//! after releasing its channel, and dropping a message only decrements an
//! atomic).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use super::Channel;
use crate::Message;

/// The reference counts at the head of an `Arc` allocation.
const ARC_HEADER: usize = 2 * size_of::<usize>();

/// The header `bytes::Bytes` allocates for a buffer once it is shared (its
/// pointer, capacity and count): an encoding is, as soon as
/// [`Message::encoded`] hands out a clone; data is when a transport clones it.
pub(crate) const BUFFER_HEADER: usize = 3 * size_of::<usize>();

/// What a retained message costs beyond its data, event name and encodings:
/// the `Message` in its `Arc` allocation, its slot in the channel's log, its
/// entry in the publish-order FIFO, the `Arc<str>` header of an event name and
/// the shared header of its data (both counted whether or not there is one).
/// 360 bytes on 64-bit targets.
pub(crate) const MESSAGE_OVERHEAD: usize = size_of::<Message>()
    + ARC_HEADER
    + size_of::<Arc<Message>>()
    + size_of::<Entry>()
    + ARC_HEADER
    + BUFFER_HEADER;

/// What a filled encoding costs beyond its length.
pub(crate) const ENCODING_OVERHEAD: usize = BUFFER_HEADER;

/// The FIFO is compacted when it holds this many entries, or twice as many as
/// survived the last compaction, whichever is more.
const MIN_COMPACT_AT: usize = 64;

/// One published message, in publish order: its channel and number.
#[derive(Debug)]
struct Entry {
    channel: Weak<Channel>,
    number: u64,
}

#[derive(Debug)]
struct Fifo {
    entries: VecDeque<Entry>,
    compact_at: usize,
}

/// The hub-wide count of bytes held by live messages, and the limit it is
/// trimmed to.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: usize,
    used: AtomicUsize,
    trimmed: AtomicU64,
    fifo: Mutex<Fifo>,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Self {
        Budget {
            limit,
            used: AtomicUsize::new(0),
            trimmed: AtomicU64::new(0),
            fifo: Mutex::new(Fifo {
                entries: VecDeque::new(),
                compact_at: MIN_COMPACT_AT,
            }),
        }
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held by live messages now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Messages dropped to keep within the limit, ever.
    pub(crate) fn trimmed(&self) -> u64 {
        self.trimmed.load(Ordering::Relaxed)
    }

    /// Counts `bytes` more; `true` when the total is now over the limit.
    pub(crate) fn charge(&self, bytes: usize) -> bool {
        let before = self.used.fetch_add(bytes, Ordering::Relaxed);
        before.saturating_add(bytes) > self.limit
    }

    /// Counts `bytes` fewer: what a dropped message had been charged.
    pub(crate) fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }

    fn fifo(&self) -> MutexGuard<'_, Fifo> {
        // Nothing panics while holding it, so a poisoned FIFO is intact.
        self.fifo.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records message `number` of `channel` as the newest published.
    pub(super) fn record(&self, channel: Weak<Channel>, number: u64) {
        let mut fifo = self.fifo();
        fifo.entries.push_back(Entry { channel, number });
        if fifo.entries.len() >= fifo.compact_at {
            compact(&mut fifo);
        }
    }

    /// Drops the oldest retained messages, across all channels, until the
    /// count is within the limit or nothing retained is left. Messages in
    /// flight to a subscriber are not freed by this: they go when delivered.
    pub(crate) fn trim(&self) {
        while self.used() > self.limit {
            let Some(entry) = self.fifo().entries.pop_front() else {
                return;
            };
            let Some(channel) = entry.channel.upgrade() else {
                continue;
            };
            let dropped = channel.lock().log.drop_through(entry.number);
            self.trimmed.fetch_add(dropped, Ordering::Relaxed);
        }
    }

    /// Removes stale entries now (the hub's sweep calls it, so that a FIFO
    /// nobody publishes to shrinks too).
    pub(super) fn compact(&self) {
        compact(&mut self.fifo());
    }

    #[cfg(test)]
    pub(super) fn fifo_len(&self) -> usize {
        self.fifo().entries.len()
    }
}

/// Keeps the entries whose messages are still retained, and sets the next
/// compaction at twice as many: each compaction's O(n) is paid for by at least
/// n/2 publishes, and stale entries never outnumber live ones by much. Each run
/// of entries of one channel costs one lock of that channel.
fn compact(fifo: &mut Fifo) {
    // The channel last looked at, and the first number it retains.
    let mut last: Option<(*const Channel, u64)> = None;
    fifo.entries.retain(|entry| {
        let at = entry.channel.as_ptr();
        let first = match last {
            Some((channel, first)) if channel == at => first,
            _ => {
                let first = entry
                    .channel
                    .upgrade()
                    .map_or(u64::MAX, |channel| channel.lock().log.first());
                last = Some((at, first));
                first
            }
        };
        entry.number >= first
    });
    let len = fifo.entries.len();
    fifo.compact_at = len.saturating_mul(2).max(MIN_COMPACT_AT);
    if fifo.entries.capacity() > fifo.compact_at.saturating_mul(2) {
        fifo.entries.shrink_to(fifo.compact_at);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{ChannelName, Hub, MemoryHub, MemoryHubConfig, Publication};

    fn publish(hub: &MemoryHub, channel: &str, data: &'static str) {
        let channel = ChannelName::new(channel).unwrap();
        hub.publish(&channel, Publication::new(data))
            .into_inner()
            .unwrap();
    }

    #[cfg(target_pointer_width = "64")]
    #[test]
    fn the_documented_overhead_is_the_computed_one() {
        assert_eq!(MESSAGE_OVERHEAD, 360);
        assert_eq!(ENCODING_OVERHEAD, 24);
        assert_eq!(MemoryHubConfig::MESSAGE_OVERHEAD, MESSAGE_OVERHEAD);
        assert_eq!(MemoryHubConfig::ENCODING_OVERHEAD, ENCODING_OVERHEAD);
    }

    /// Channels that drop their own messages (count, bytes, age) leave stale
    /// entries behind; compaction keeps them from outnumbering live ones.
    #[test]
    fn the_publish_order_stays_bounded_when_channels_trim_themselves() {
        let config = MemoryHubConfig::default().with_max_messages(1);
        let hub = MemoryHub::with_config(config).unwrap();
        let names = ["a", "b", "c", "d", "e"];
        for i in 0..100_000 {
            publish(&hub, names[i % names.len()], "x");
            let len = hub.inner.budget.fifo_len();
            assert!(
                len <= 2 * names.len() + MIN_COMPACT_AT,
                "{len} entries at {i}"
            );
        }
        assert_eq!(hub.stats().trimmed_messages, 0, "the budget never trimmed");
    }

    #[test]
    fn a_sweep_compacts_the_order_of_expired_messages() {
        let clock = crate::ManualClock::new(crate::Timestamp::from_unix_millis(1_000));
        let config = MemoryHubConfig::default().with_max_age(Duration::from_secs(1));
        let hub = MemoryHub::with_config_and_clock(config, clock.clone()).unwrap();
        for _ in 0..50 {
            publish(&hub, "a", "x");
        }
        assert_eq!(hub.inner.budget.fifo_len(), 50);
        clock.advance(Duration::from_secs(1));
        hub.sweep();
        assert_eq!(hub.inner.budget.fifo_len(), 0);
        assert_eq!(hub.stats().retained_bytes, 0);
    }

    #[test]
    fn trimming_an_empty_order_stops() {
        let budget = Budget::new(10);
        assert!(budget.charge(11));
        budget.trim(); // nothing retained to drop: returns
        budget.release(11);
        assert_eq!(budget.used(), 0);
    }
}
