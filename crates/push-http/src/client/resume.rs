//! A reconnecting client's state, with no I/O and no clock: where the next
//! request starts, what was received and not yet handed out, the cursor of
//! the last item handed out, the retry backoff and the advised interval.

use std::collections::VecDeque;
use std::time::Duration;

use std::sync::Arc;

use push_core::{Backoff, Batch, Cursor, Item, Message, Start};

use crate::ClientError;

/// The state every push client keeps between requests or connections, free
/// of sockets and timers as quinn-proto's state machine is: the HTTP shell
/// around it sends what it says and feeds it what comes back, so that a
/// test can drive it through any order of answers and failures.
///
/// - [`start`](Self::start): where the next request (or connection) starts;
///   moved on by every batch, empty answer or item taken in.
/// - [`next_item`](Self::next_item): what was taken in and not handed out yet, in
///   order; [`cursor`](Self::cursor) is the cursor of the last item handed
///   out, where a program that saves its place resumes.
/// - [`retry_delay`](Self::retry_delay) and [`succeeded`](Self::succeeded):
///   exponential backoff with jitter while attempts fail.
/// - [`advise`](Self::advise) and [`pace`](Self::pace): the interval a
///   server advises (short polling), spread with jitter.
///
/// ```
/// use std::time::Duration;
/// use push_core::{Backoff, Batch, Start};
/// use push_http::client::Resume;
///
/// let mut resume = Resume::new(Start::Live, Backoff::new(Duration::from_millis(250), Duration::from_secs(30)));
/// let cursor = "ab.7".parse()?;
/// resume.take_batch(Batch::new(None, Vec::new(), cursor, false));
/// assert_eq!(resume.start(), Start::After(cursor));
/// assert!(resume.next_item().is_none());
/// assert!(resume.retry_delay() <= Duration::from_millis(250));
/// # Ok::<(), push_core::Error>(())
/// ```
#[derive(Debug)]
pub struct Resume {
    start: Start,
    yielded: Option<Cursor>,
    buffer: VecDeque<Result<Item, ClientError>>,
    backoff: Backoff,
    advised: Option<Duration>,
}

impl Resume {
    /// A client that starts at `start` and retries after `backoff`.
    pub fn new(start: Start, backoff: Backoff) -> Self {
        Resume {
            start,
            yielded: None,
            buffer: VecDeque::new(),
            backoff,
            advised: None,
        }
    }

    /// Where the next request starts.
    pub fn start(&self) -> Start {
        self.start
    }

    /// The cursor of the last item handed out: resume from here.
    pub fn cursor(&self) -> Option<Cursor> {
        self.yielded
    }

    /// How many items (and errors) wait to be handed out.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// The next item (or error) to hand out, if any; an item's cursor
    /// becomes [`cursor`](Self::cursor).
    pub fn next_item(&mut self) -> Option<Result<Item, ClientError>> {
        let next = self.buffer.pop_front()?;
        if let Ok(item) = &next
            && !is_ephemeral(item)
        {
            self.yielded = Some(item.cursor());
        }
        Some(next)
    }

    /// Takes in a batch: its signal and messages wait to be handed out, and
    /// the next request starts after its cursor.
    /// An ephemeral message (no id on the wire) follows the stored one
    /// before it, or where the batch started.
    pub fn take_batch(&mut self, batch: Batch) {
        let mut at = self.position();
        if let Some(signal) = batch.signal {
            at = Some(signal.resume());
            self.buffer.push_back(Ok(Item::Signal(signal)));
        }
        for message in batch.messages {
            let message = place(message, at);
            if !message.is_ephemeral() {
                at = Some(message.cursor());
            }
            self.buffer.push_back(Ok(Item::Message(message)));
        }
        self.start = Start::After(batch.cursor);
    }

    /// Takes in an answer with nothing new that says where to go on.
    pub fn moved_to(&mut self, cursor: Cursor) {
        self.start = Start::After(cursor);
    }

    /// Takes in one item of a stream; the next connection starts after it.
    /// An ephemeral message moves nothing: it is given the position it
    /// follows.
    pub fn take_item(&mut self, item: Item) {
        let item = match item {
            Item::Message(message) if message.is_ephemeral() => {
                Item::Message(place(message, self.position()))
            }
            item => {
                self.start = Start::After(item.cursor());
                item
            }
        };
        self.buffer.push_back(Ok(item));
    }

    /// Where the next request would resume after, when known.
    fn position(&self) -> Option<Cursor> {
        match self.start {
            Start::After(cursor) => Some(cursor),
            _ => self.yielded,
        }
    }

    /// Takes in something the stream held that is not an item: it is
    /// handed out in its place among the items.
    pub fn take_error(&mut self, err: ClientError) {
        self.buffer.push_back(Err(err));
    }

    /// An attempt failed: how long to wait before the next (doubling, with
    /// jitter, up to the backoff's maximum).
    pub fn retry_delay(&mut self) -> Duration {
        self.backoff.next_delay()
    }

    /// An attempt succeeded: the next failure waits the shortest delay again.
    pub fn succeeded(&mut self) {
        self.backoff.reset();
    }

    /// The server advised this interval (between polls, or before a
    /// reconnect).
    pub fn advise(&mut self, interval: Duration) {
        self.advised = Some(interval);
    }

    /// The interval the server advised last, if any.
    pub fn advised(&self) -> Option<Duration> {
        self.advised
    }

    /// The server advised `delay` before reconnecting: failed attempts
    /// now back off from it, up to `max` (at least `delay`).
    pub fn advise_retry(&mut self, delay: Duration, max: Duration) {
        self.advised = Some(delay);
        self.backoff = Backoff::new(delay, max.max(delay));
    }

    /// The wait before the next poll: `interval` moved by up to `jitter` of
    /// itself at random, so that many clients do not poll in step.
    pub fn pace(&mut self, interval: Duration, jitter: f64) -> Duration {
        self.backoff.spread(interval, jitter)
    }
}

fn is_ephemeral(item: &Item) -> bool {
    matches!(item, Item::Message(message) if message.is_ephemeral())
}

/// An ephemeral message following `at` (unchanged when that is unknown).
fn place(message: Arc<Message>, at: Option<Cursor>) -> Arc<Message> {
    match at {
        // Freshly parsed, so not shared: no copy.
        Some(at) if message.is_ephemeral() => match Arc::try_unwrap(message) {
            Ok(message) => Arc::new(message.following(at)),
            Err(shared) => shared,
        },
        _ => message,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use push_core::{Gap, Message, Signal, Timestamp};

    use super::*;

    fn cursor(text: &str) -> Cursor {
        text.parse().unwrap()
    }

    fn message(id: &str) -> Arc<Message> {
        Arc::new(Message::new(
            "c".parse().unwrap(),
            cursor(id),
            None,
            id.to_owned().into(),
            Timestamp::from_unix_millis(0),
        ))
    }

    fn backoff() -> Backoff {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(1))
    }

    #[test]
    fn items_are_handed_out_in_order_and_the_cursor_follows() {
        let mut resume = Resume::new(Start::Earliest, backoff());
        let gap = Signal::Gap(Gap::new(cursor("a.1"), cursor("a.3"), Some(2)));
        resume.take_batch(Batch::new(
            Some(gap),
            vec![message("a.4"), message("a.5")],
            cursor("a.5"),
            false,
        ));
        assert_eq!(resume.start(), Start::After(cursor("a.5")));
        assert_eq!(resume.buffered(), 3);
        assert_eq!(resume.cursor(), None);
        assert!(matches!(resume.next_item(), Some(Ok(Item::Signal(s))) if s == gap));
        assert_eq!(resume.cursor(), Some(cursor("a.3")));
        resume.take_error(ClientError::Timeout(Duration::from_secs(1)));
        resume.take_item(Item::Message(message("a.6")));
        assert_eq!(resume.start(), Start::After(cursor("a.6")));
        assert!(matches!(resume.next_item(), Some(Ok(Item::Message(_)))));
        assert_eq!(resume.cursor(), Some(cursor("a.4")));
        assert!(matches!(resume.next_item(), Some(Ok(Item::Message(_)))));
        assert!(matches!(
            resume.next_item(),
            Some(Err(ClientError::Timeout(_)))
        ));
        assert_eq!(resume.cursor(), Some(cursor("a.5")));
        assert!(matches!(resume.next_item(), Some(Ok(Item::Message(_)))));
        assert_eq!(resume.cursor(), Some(cursor("a.6")));
        assert!(resume.next_item().is_none());
        resume.moved_to(cursor("a.9"));
        assert_eq!(resume.start(), Start::After(cursor("a.9")));
        assert_eq!(resume.cursor(), Some(cursor("a.6")));
    }

    #[test]
    fn failures_back_off_and_success_starts_over() {
        let mut resume = Resume::new(Start::Live, backoff());
        let delays: Vec<_> = (0..6).map(|_| resume.retry_delay()).collect();
        assert!(delays[0] <= Duration::from_millis(100));
        assert!(delays[5] >= Duration::from_millis(500));
        resume.succeeded();
        assert!(resume.retry_delay() <= Duration::from_millis(100));
        resume.advise_retry(Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(resume.advised(), Some(Duration::from_secs(2)));
        let delay = resume.retry_delay();
        assert!(delay >= Duration::from_secs(1) && delay <= Duration::from_secs(2));
        resume.advise(Duration::from_secs(5));
        let paced = resume.pace(Duration::from_secs(5), 0.1);
        assert!(paced >= Duration::from_millis(4500) && paced <= Duration::from_millis(5500));
    }
}
