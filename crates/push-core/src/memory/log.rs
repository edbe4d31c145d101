//! One channel's bounded history: pure data and rules, no locks, no clock.
//!
//! Messages are numbered 1, 2, 3, … within an epoch; the log holds the
//! contiguous run `first..=head` (empty when `first == head + 1`). A subscriber
//! is just the number of the next message it wants, so the log never grows for a
//! slow subscriber: when its number falls below `first`, it gets a gap.

use std::collections::{HashMap, VecDeque};
use std::mem;
use std::sync::Arc;
use std::time::Duration;

use super::Budget;
use crate::{
    Batch, ChannelName, Cursor, Epoch, Error, Gap, IdempotencyKey, Message, Position, Publication,
    Signal, Span, Start, Timestamp,
};

/// How much history a channel keeps.
#[derive(Clone, Copy, Debug)]
pub(super) struct Retention {
    pub(super) max_messages: usize,
    pub(super) max_bytes: usize,
    pub(super) max_age: Duration,
}

/// A log's buffer is shrunk when a quarter of it or less is in use, down to
/// twice what is; not below this many slots, so a small log never churns.
const MIN_SHRINK_CAPACITY: usize = 8;

/// What remembering one idempotency key costs beyond its length: its map
/// entry (key, number, fingerprint), its place in the order, the key's
/// shared header, and the map's slack.
const KEY_OVERHEAD: usize =
    2 * size_of::<IdempotencyKey>() + 3 * size_of::<u64>() + 2 * size_of::<usize>() + 16;

/// The idempotency keys of the retained messages that came with one: a key
/// is remembered exactly as long as its message is retained, and counted in
/// the hub's byte budget meanwhile.
#[derive(Debug)]
struct Keys {
    budget: Arc<Budget>,
    /// Key → (message number, fingerprint of its event and data).
    by_key: HashMap<IdempotencyKey, (u64, u64)>,
    /// The keys in message order, to forget them as messages go.
    order: VecDeque<(u64, IdempotencyKey)>,
}

impl Keys {
    fn cost(key: &IdempotencyKey) -> usize {
        key.as_str().len() + KEY_OVERHEAD
    }

    /// Forgets the keys of messages numbered below `first`.
    fn forget_before(&mut self, first: u64) {
        while let Some((number, _)) = self.order.front() {
            if *number >= first {
                break;
            }
            if let Some((number, key)) = self.order.pop_front() {
                if self.by_key.get(&key).is_some_and(|(n, _)| *n == number) {
                    self.by_key.remove(&key);
                }
                self.budget.release(Self::cost(&key));
            }
        }
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        let held: usize = self.order.iter().map(|(_, key)| Self::cost(key)).sum();
        self.budget.release(held);
    }
}

#[derive(Debug)]
pub(super) struct ChannelLog {
    epoch: Epoch,
    messages: VecDeque<Arc<Message>>,
    /// Keys of retained messages; boxed, as most channels never see one.
    keys: Option<Box<Keys>>,
    /// Number of `messages[0]`; `head + 1` when empty.
    first: u64,
    /// Number of the last message published in this epoch; 0 before any.
    head: u64,
    bytes: usize,
    last_published_at: Timestamp,
}

impl ChannelLog {
    pub(super) fn new(epoch: Epoch) -> Self {
        ChannelLog {
            epoch,
            messages: VecDeque::new(),
            keys: None,
            first: 1,
            head: 0,
            bytes: 0,
            last_published_at: Timestamp::UNIX_EPOCH,
        }
    }

    pub(super) fn cursor_at(&self, number: u64) -> Cursor {
        Cursor::new(self.epoch, Position::new(number, 0))
    }

    pub(super) fn head_cursor(&self) -> Cursor {
        self.cursor_at(self.head)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    pub(super) fn len(&self) -> usize {
        self.messages.len()
    }

    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Nothing was ever published in this epoch: the channel exists because
    /// someone subscribed to it or read it.
    pub(super) fn is_unpublished(&self) -> bool {
        self.head == 0
    }

    /// The number of the oldest retained message (`head + 1` when none is).
    pub(super) fn first(&self) -> u64 {
        self.first
    }

    /// Appends a message charged to `budget`, then drops the oldest messages
    /// until both size bounds hold. The new message always stays: the hub
    /// refuses any larger than `max_bytes`.
    /// The cursor of the retained message published with `key`, if any;
    /// an error when it was published with other content.
    pub(super) fn keyed(
        &self,
        key: &IdempotencyKey,
        fingerprint: u64,
    ) -> Option<Result<Cursor, Error>> {
        let (number, known) = self.keys.as_ref()?.by_key.get(key)?;
        Some(if *known == fingerprint {
            Ok(self.cursor_at(*number))
        } else {
            Err(Error::IdempotencyKeyReused)
        })
    }

    pub(super) fn append(
        &mut self,
        channel: &ChannelName,
        mut publication: Publication,
        now: Timestamp,
        retention: &Retention,
        budget: &Arc<Budget>,
    ) -> Cursor {
        let keyed = publication
            .key()
            .cloned()
            .map(|key| (key, publication.fingerprint()));
        publication = publication.without_key();
        // Publish times never go backwards within a channel, whatever the
        // clock does, so age expiry can work from the front.
        let published_at = now.max(self.last_published_at);
        self.last_published_at = published_at;
        self.head += 1;
        let cursor = self.cursor_at(self.head);
        let kind = publication.kind();
        let (event, data) = publication.into_parts();
        let message = Message::charged(
            channel.clone(),
            cursor,
            event,
            (data, kind),
            published_at,
            budget,
        );
        self.bytes += message.size();
        self.messages.push_back(message);
        if let Some((key, fingerprint)) = keyed {
            let keys = self.keys.get_or_insert_with(|| {
                Box::new(Keys {
                    budget: budget.clone(),
                    by_key: HashMap::new(),
                    order: VecDeque::new(),
                })
            });
            budget.charge(Keys::cost(&key));
            keys.by_key.insert(key.clone(), (self.head, fingerprint));
            keys.order.push_back((self.head, key));
        }
        while self.messages.len() > retention.max_messages.max(1)
            || (self.bytes > retention.max_bytes && self.messages.len() > 1)
        {
            self.pop_front();
        }
        cursor
    }

    /// Drops messages that are `max_age` old or older.
    pub(super) fn expire(&mut self, now: Timestamp, max_age: Duration) {
        while self
            .messages
            .front()
            .is_some_and(|m| now.saturating_duration_since(m.published_at()) >= max_age)
        {
            self.pop_front();
        }
    }

    /// Drops every retained message numbered up to `number`; returns how many.
    pub(super) fn drop_through(&mut self, number: u64) -> u64 {
        let mut dropped = 0;
        while self.first <= number && self.pop_front() {
            dropped += 1;
        }
        dropped
    }

    /// Empties the log for good (the channel is being removed) and hands back
    /// the messages, to be dropped outside any lock.
    pub(super) fn clear(&mut self) -> VecDeque<Arc<Message>> {
        self.first = self.head + 1;
        self.bytes = 0;
        mem::take(&mut self.messages)
    }

    /// Drops the oldest message; `false` when there is none. A buffer left
    /// mostly empty is shrunk, so a channel trimmed down does not keep the
    /// memory of its longest history.
    fn pop_front(&mut self) -> bool {
        let Some(message) = self.messages.pop_front() else {
            return false;
        };
        self.bytes -= message.size();
        self.first += 1;
        if let Some(keys) = &mut self.keys {
            keys.forget_before(self.first);
            if keys.order.is_empty() {
                self.keys = None;
            }
        }
        let (len, capacity) = (self.messages.len(), self.messages.capacity());
        if capacity > MIN_SHRINK_CAPACITY && len <= capacity / 4 {
            self.messages.shrink_to(len * 2);
        }
        true
    }

    /// Gives back the buffer of an empty log (a dormant channel).
    pub(super) fn release_memory(&mut self) {
        if self.messages.is_empty() {
            self.messages = VecDeque::new();
        }
    }

    /// The epoch and retained run, for the shared rules.
    fn span(&self) -> Span {
        Span {
            epoch: self.epoch,
            first: self.first,
            head: self.head,
        }
    }

    /// Where a start points (see [`Span::resolve`]).
    pub(super) fn resolve(&self, start: Start) -> (u64, Option<Signal>) {
        self.span().resolve(start)
    }

    /// The gap a subscriber at `next` must be told of first (see [`Span::gap`]).
    pub(super) fn gap(&self, next: u64) -> Option<Gap> {
        self.span().gap(next)
    }

    /// The message numbered `number`, if retained.
    pub(super) fn get(&self, number: u64) -> Option<&Arc<Message>> {
        let index = number.checked_sub(self.first)?;
        self.messages.get(usize::try_from(index).ok()?)
    }

    /// The first item for a subscriber at `next`: a gap (and its new `next`),
    /// a message, or nothing yet.
    pub(super) fn next_for(&self, next: &mut u64) -> Option<crate::Item> {
        if let Some(gap) = self.gap(*next) {
            *next = self.first;
            return Some(crate::Item::Signal(Signal::Gap(gap)));
        }
        let message = self.get(*next)?.clone();
        *next += 1;
        Some(crate::Item::Message(message))
    }

    /// A one-shot read of up to `limit` messages from `start`.
    pub(super) fn read(&self, start: Start, limit: usize) -> Batch {
        let (mut next, mut signal) = self.resolve(start);
        if let Some(gap) = self.gap(next) {
            signal = Some(Signal::Gap(gap));
            next = self.first;
        }
        let available = self.head + 1 - next;
        let taken = available.min(u64::try_from(limit).unwrap_or(u64::MAX));
        let messages = (next..next + taken)
            .filter_map(|number| self.get(number).cloned())
            .collect();
        Batch::new(
            signal,
            messages,
            self.cursor_at(next + taken - 1),
            taken < available,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Item, Reset};

    const NOW: Timestamp = Timestamp::from_unix_millis(1_000_000);

    fn retention(max_messages: usize, max_bytes: usize) -> Retention {
        Retention {
            max_messages,
            max_bytes,
            max_age: Duration::from_secs(60),
        }
    }

    fn budget() -> Arc<Budget> {
        Arc::new(Budget::new(usize::MAX))
    }

    fn log_with(n: u64, retention: &Retention) -> ChannelLog {
        let mut log = ChannelLog::new(Epoch::new(7));
        let channel = ChannelName::new("c").unwrap();
        let budget = budget();
        for i in 1..=n {
            log.append(
                &channel,
                Publication::new(format!("{i}")),
                NOW,
                retention,
                &budget,
            );
        }
        log
    }

    fn numbers(batch: &Batch) -> Vec<u64> {
        batch
            .messages
            .iter()
            .map(|m| m.cursor().position().major())
            .collect()
    }

    #[test]
    fn count_bound_drops_the_oldest() {
        let log = log_with(10, &retention(3, 1 << 20));
        assert_eq!((log.first, log.head, log.len()), (8, 10, 3));
        assert_eq!(numbers(&log.read(Start::Earliest, 100)), [8, 9, 10]);
    }

    #[test]
    fn byte_bound_drops_the_oldest_but_keeps_the_newest() {
        let r = retention(100, 4);
        let log = log_with(12, &r); // sizes 1 (1..=9), 2 (10..=12)
        assert_eq!(numbers(&log.read(Start::Earliest, 100)), [11, 12]);
        assert_eq!(log.bytes(), 4);
    }

    #[test]
    fn read_cut_at_the_limit_resumes_exactly() {
        let log = log_with(5, &retention(100, 1 << 20));
        let first = log.read(Start::Earliest, 2);
        assert_eq!((numbers(&first), first.more), (vec![1, 2], true));
        let second = log.read(Start::After(first.cursor), 10);
        assert_eq!((numbers(&second), second.more), (vec![3, 4, 5], false));
        assert_eq!(second.cursor, log.head_cursor());
        let empty = log.read(Start::After(second.cursor), 10);
        assert!(empty.is_empty());
        assert_eq!(empty.cursor, log.head_cursor());
    }

    #[test]
    fn limit_zero_says_more_without_moving() {
        let log = log_with(2, &retention(100, 1 << 20));
        let batch = log.read(Start::After(log.cursor_at(1)), 0);
        assert!(batch.messages.is_empty() && batch.more);
        assert_eq!(batch.cursor, log.cursor_at(1));
    }

    #[test]
    fn old_cursor_gets_a_gap_with_the_count() {
        let log = log_with(10, &retention(3, 1 << 20));
        let batch = log.read(Start::After(log.cursor_at(2)), 100);
        assert_eq!(
            batch.signal,
            Some(Signal::Gap(Gap::new(
                log.cursor_at(2),
                log.cursor_at(7),
                Some(5)
            )))
        );
        assert_eq!(numbers(&batch), [8, 9, 10]);
    }

    #[test]
    fn foreign_or_future_cursors_reset() {
        let log = log_with(4, &retention(2, 1 << 20));
        for since in [
            Cursor::new(Epoch::new(8), Position::new(1, 0)),
            Cursor::new(Epoch::new(7), Position::new(2, 1)),
            Cursor::new(Epoch::new(7), Position::new(5, 0)),
        ] {
            let batch = log.read(Start::After(since), 100);
            assert_eq!(
                batch.signal,
                Some(Signal::Reset(Reset::new(since, log.cursor_at(2))))
            );
            assert_eq!(numbers(&batch), [3, 4]);
        }
    }

    #[test]
    fn live_start_is_the_head() {
        let log = log_with(4, &retention(100, 1 << 20));
        let batch = log.read(Start::Live, 100);
        assert!(batch.is_empty() && !batch.more);
        assert_eq!(batch.cursor, log.cursor_at(4));
    }

    #[test]
    fn expiry_by_age_and_monotonic_publish_times() {
        let r = retention(100, 1 << 20);
        let channel = ChannelName::new("c").unwrap();
        let mut log = ChannelLog::new(Epoch::new(1));
        let budget = budget();
        log.append(&channel, Publication::new("a"), NOW, &r, &budget);
        // A clock that steps back does not make a message older than its predecessor.
        let back = Timestamp::from_unix_millis(NOW.as_unix_millis() - 5_000);
        log.append(&channel, Publication::new("b"), back, &r, &budget);
        assert_eq!(log.get(2).unwrap().published_at(), NOW);
        log.expire(NOW.saturating_add(Duration::from_secs(59)), r.max_age);
        assert_eq!(log.len(), 2);
        log.expire(NOW.saturating_add(Duration::from_secs(60)), r.max_age);
        assert!(log.is_empty());
        assert_eq!((log.first, log.head, log.bytes()), (3, 2, 0));
        // Everything expired: an old cursor learns it lost both, then waits at the head.
        let mut next = 1;
        let gap = log.next_for(&mut next).unwrap();
        assert_eq!(gap.cursor(), log.cursor_at(2));
        assert_eq!(next, 3);
        assert!(log.next_for(&mut next).is_none());
        assert!(matches!(
            gap,
            Item::Signal(Signal::Gap(Gap {
                missed: Some(2),
                ..
            }))
        ));
    }

    #[test]
    fn drop_through_and_clear_keep_the_numbering() {
        let mut log = log_with(10, &retention(100, 1 << 20));
        assert_eq!(log.drop_through(3), 3);
        assert_eq!(log.drop_through(3), 0, "already gone: a stale order entry");
        assert_eq!((log.first(), log.len(), log.bytes()), (4, 7, 8));
        assert_eq!(log.clear().len(), 7);
        assert_eq!((log.first(), log.head, log.bytes()), (11, 10, 0));
        assert_eq!(log.drop_through(u64::MAX), 0);
    }

    #[test]
    fn a_log_trimmed_down_gives_its_buffer_back() {
        let mut log = log_with(1_000, &retention(1_000, 1 << 20));
        assert!(log.messages.capacity() >= 1_000);
        log.drop_through(999);
        assert_eq!(log.len(), 1);
        assert!(
            log.messages.capacity() <= MIN_SHRINK_CAPACITY,
            "{}",
            log.messages.capacity()
        );
        log.drop_through(1_000);
        assert!(log.is_empty());
    }

    #[test]
    fn messages_are_charged_while_they_live() {
        let budget = budget();
        let channel = ChannelName::new("c").unwrap();
        let mut log = ChannelLog::new(Epoch::new(1));
        assert!(log.is_unpublished());
        log.append(
            &channel,
            Publication::new("abc"),
            NOW,
            &retention(1, 1 << 20),
            &budget,
        );
        assert!(!log.is_unpublished());
        let held = log.get(1).unwrap().clone();
        let one = budget.used();
        assert!(one >= 3);
        // The count bound drops the first; it lives on while held.
        log.append(
            &channel,
            Publication::new("de"),
            NOW,
            &retention(1, 1 << 20),
            &budget,
        );
        assert_eq!(budget.used(), 2 * one - 1);
        drop(held);
        assert_eq!(budget.used(), one - 1);
        drop(log);
        assert_eq!(budget.used(), 0);
    }
}
