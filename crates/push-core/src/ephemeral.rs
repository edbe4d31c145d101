//! Ephemeral messages: delivered to the subscribers live when each is
//! published, never kept in a channel's history.
//!
//! A hub keeps one [`EphemeralQueue`] per channel. Each entry remembers the
//! stored message it follows (the channel's next number when it was
//! published), so a subscriber still delivering older stored messages gets it
//! in its place, after them, and never before; and how many subscribers have
//! yet to take it, so it is dropped as soon as the last one has.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::Message;

/// The ephemeral messages of one channel that live subscribers have yet to
/// take, in publish order, within a byte bound (each counted as its
/// [`size`](Message::size) plus [`MESSAGE_OVERHEAD`](crate::MemoryHubConfig::MESSAGE_OVERHEAD);
/// the newest is always kept). A subscriber too far behind skips the oldest:
/// ephemeral messages are for the present.
///
/// Each subscriber keeps its own sequence number (its next wanted entry),
/// starting at [`EphemeralQueue::next_seq`] when it subscribes: it gets what
/// is published from then on, nothing before.
///
/// ```
/// use std::sync::Arc;
/// use bytes::Bytes;
/// use push_core::{Cursor, EphemeralQueue, Message, Timestamp};
///
/// let typing = Arc::new(
///     Message::new("chat".parse()?, Cursor::new(push_core::Epoch::new(1), push_core::Position::new(0, 0)), None,
///         Bytes::from("typing"), Timestamp::UNIX_EPOCH).ephemeral(),
/// );
/// let mut queue = EphemeralQueue::new();
/// let mut seq = queue.next_seq(); // a subscriber at stored number 1
/// queue.push(3, typing, 1, 1 << 20); // published after stored messages 1 and 2
/// assert!(queue.take(&mut seq, 1).is_none()); // deliver 1 and 2 first
/// assert!(queue.take(&mut seq, 3).is_some());
/// assert!(queue.is_empty()); // its only subscriber took it
/// # Ok::<(), push_core::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct EphemeralQueue {
    next_seq: u64,
    entries: VecDeque<Entry>,
    bytes: usize,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    /// The stored number a subscriber must want next to take it.
    after: u64,
    message: Arc<Message>,
    /// Subscribers that were live at publish time and have not taken it.
    pending: usize,
}

impl EphemeralQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Where a subscriber starting now begins.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Nothing waits for anyone.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The bytes the queue holds, as its bound counts them.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Queues `message` for the `subscribers` live now, to follow every
    /// stored message numbered below `after`; the oldest entries go while
    /// the queue holds more than `max_bytes` (never the newest). With no
    /// subscriber, nothing is kept.
    pub fn push(
        &mut self,
        after: u64,
        message: Arc<Message>,
        subscribers: usize,
        max_bytes: usize,
    ) {
        let seq = self.next_seq;
        self.next_seq += 1;
        if subscribers == 0 {
            return;
        }
        self.bytes += cost(&message);
        self.entries.push_back(Entry {
            seq,
            after,
            message,
            pending: subscribers,
        });
        while self.bytes > max_bytes && self.entries.len() > 1 {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some(entry) = self.entries.pop_front() {
            self.bytes -= cost(&entry.message);
        }
    }

    /// The next ephemeral message for a subscriber whose next wanted
    /// sequence is `*seq` and next wanted stored number is `next`: given
    /// once every stored message before it was, and only once.
    pub fn take(&mut self, seq: &mut u64, next: u64) -> Option<Arc<Message>> {
        let index = self.entries.iter().position(|entry| entry.seq >= *seq)?;
        let entry = &mut self.entries[index];
        if entry.after > next {
            *seq = entry.seq;
            return None;
        }
        *seq = entry.seq + 1;
        entry.pending = entry.pending.saturating_sub(1);
        let message = entry.message.clone();
        self.drop_taken();
        Some(message)
    }

    /// A subscriber at `seq` leaves: it takes nothing more.
    pub fn leave(&mut self, seq: u64) {
        for entry in self.entries.iter_mut().filter(|entry| entry.seq >= seq) {
            entry.pending = entry.pending.saturating_sub(1);
        }
        self.drop_taken();
    }

    /// Forgets everything (the channel's history was replaced).
    pub fn clear(&mut self) {
        self.entries = VecDeque::new();
        self.bytes = 0;
    }

    fn drop_taken(&mut self) {
        while self.entries.front().is_some_and(|entry| entry.pending == 0) {
            self.pop_front();
        }
        if self.entries.is_empty() && self.entries.capacity() > 0 {
            self.entries = VecDeque::new();
        }
    }
}

fn cost(message: &Message) -> usize {
    message.size() + crate::MemoryHubConfig::MESSAGE_OVERHEAD
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::{Cursor, Epoch, Timestamp};

    fn message(text: &'static str) -> Arc<Message> {
        let channel = "c".parse().unwrap();
        let cursor = Cursor::new(Epoch::new(1), crate::Position::new(0, 0));
        Arc::new(
            Message::new(
                channel,
                cursor,
                None,
                Bytes::from(text),
                Timestamp::UNIX_EPOCH,
            )
            .ephemeral(),
        )
    }

    #[test]
    fn each_subscriber_takes_each_once_in_order_after_the_stored_before_it() {
        let mut queue = EphemeralQueue::new();
        let (mut a, mut b) = (queue.next_seq(), queue.next_seq());
        queue.push(1, message("x"), 2, 1 << 20);
        queue.push(2, message("y"), 2, 1 << 20);
        // a is at stored number 1: it takes x, then must deliver message 1.
        assert_eq!(&queue.take(&mut a, 1).unwrap().data()[..], b"x");
        assert!(queue.take(&mut a, 1).is_none());
        assert_eq!(&queue.take(&mut a, 2).unwrap().data()[..], b"y");
        assert!(queue.take(&mut a, 2).is_none());
        assert_eq!(&queue.take(&mut b, 5).unwrap().data()[..], b"x");
        assert_eq!(&queue.take(&mut b, 5).unwrap().data()[..], b"y");
        assert!(queue.is_empty());
    }

    #[test]
    fn a_late_subscriber_gets_nothing_published_before_it() {
        let mut queue = EphemeralQueue::new();
        let mut early = queue.next_seq();
        queue.push(1, message("x"), 1, 1 << 20);
        let mut late = queue.next_seq();
        assert!(queue.take(&mut late, 1).is_none());
        assert!(queue.take(&mut early, 1).is_some());
    }

    #[test]
    fn leaving_and_the_bound_drop_what_nobody_will_take() {
        let mut queue = EphemeralQueue::new();
        let gone = queue.next_seq();
        let mut slow = queue.next_seq();
        let three = 3 * cost(&message("x"));
        for _ in 0..5 {
            queue.push(1, message("x"), 2, three);
        }
        queue.leave(gone);
        // The slow one skipped the two oldest: three left.
        assert!((0..3).all(|_| queue.take(&mut slow, 1).is_some()));
        assert!(queue.take(&mut slow, 1).is_none());
        assert!(queue.is_empty());
        assert_eq!(queue.bytes(), 0);
        queue.push(1, message("x"), 0, three);
        assert!(queue.is_empty());
        // The newest is kept whatever the bound.
        queue.push(1, message("x"), 1, 0);
        assert!(!queue.is_empty());
    }
}
