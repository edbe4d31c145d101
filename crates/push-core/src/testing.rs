//! The continuity properties every [`Hub`] must keep, as a reusable checker.
//!
//! [`check`] drives a hub through a sequence of [`Op`]s — publishes,
//! subscriptions from every kind of start, drains, disconnects, resumes from the
//! last cursor, one-shot reads, parked subscribers, time passing — and checks
//! each delivery against a model of what was published:
//!
//! - messages arrive in publish order, each exactly once, with their data;
//! - a subscriber skips forward only after a [`Gap`](crate::Gap) (whose `missed`
//!   count is exact) or a [`Reset`](crate::Reset), and only over messages the hub
//!   no longer retains: what follows a signal is exactly the retained suffix;
//! - a subscriber that resumes with a foreign cursor gets a reset first;
//! - a parked subscriber is woken by the next publish;
//! - a drained subscriber has caught up with the head and has nothing more;
//! - a read's `cursor` and `more` obey the batch rules, so that paging by
//!   cursor never skips or repeats.
//!
//! push-core runs it against [`MemoryHub`](crate::MemoryHub) under proptest; every
//! other hub implementation runs the same code in its own tests.
//!
//! ```
//! use push_core::testing::{Op, Options, Start, check};
//! use push_core::MemoryHub;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let ops = [
//!     Op::Subscribe { who: 0, from: Start::Live },
//!     Op::Publish { len: 3, event: false },
//!     Op::Drain { who: 0 },
//! ];
//! check(&MemoryHub::new(), &"c".parse().unwrap(), &ops, &Options::default()).await.unwrap();
//! # }
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use futures_util::StreamExt;
use proptest::prelude::*;
use tokio::sync::Notify;

use crate::{
    ChannelName, Cursor, Epoch, EventName, Hub, Item, ManualClock, Position, Publication, Signal,
};

/// How many simulated clients an op sequence addresses.
pub const CLIENTS: usize = 4;

/// How [`check`] treats the hub under test.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Options {
    /// Advanced by [`Op::Advance`]; without one, those ops do nothing.
    pub clock: Option<ManualClock>,
    /// The safety net for waiting on the hub (a delivery, a wake-up): a correct
    /// hub answers at once (memory) or within milliseconds (a backend on
    /// loopback); a broken one fails the check after this long.
    pub patience: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            clock: None,
            patience: Duration::from_secs(10),
        }
    }
}

impl Options {
    /// Drives this clock on [`Op::Advance`].
    #[must_use]
    pub fn with_clock(mut self, clock: ManualClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Sets [`patience`](Self::patience).
    #[must_use]
    pub fn with_patience(mut self, patience: Duration) -> Self {
        self.patience = patience;
        self
    }
}

/// Where a simulated client subscribes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Only new messages.
    Live,
    /// Everything retained.
    Earliest,
    /// After the `n`th message published so far (modulo how many there are).
    AfterPublished(usize),
    /// After a cursor from an epoch the hub never made.
    Foreign(u64),
}

/// One step of a scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Publish a message with `len` bytes of data (and an event name).
    Publish {
        /// Data length; the data is unique to the message.
        len: usize,
        /// Whether it carries an event name.
        event: bool,
    },
    /// Client `who` subscribes (dropping its subscription, if any).
    Subscribe {
        /// The client.
        who: usize,
        /// Where from.
        from: Start,
    },
    /// Client `who` receives everything available, and must have caught up.
    Drain {
        /// The client.
        who: usize,
    },
    /// Client `who` polls once and, when nothing is ready, waits to be woken
    /// by the next publish.
    Park {
        /// The client.
        who: usize,
    },
    /// Client `who` drops its connection, keeping its cursor.
    Disconnect {
        /// The client.
        who: usize,
    },
    /// Client `who` subscribes again after its last cursor.
    Resume {
        /// The client.
        who: usize,
    },
    /// Poller `who` reads at most `limit` messages after its own cursor
    /// (the first read of a poller starts at `earliest` or live).
    Read {
        /// The poller.
        who: usize,
        /// The batch limit.
        limit: usize,
        /// Without a cursor yet: read from live (`true`) or earliest.
        live: bool,
    },
    /// Time passes (only for hubs whose clock the test drives).
    Advance {
        /// How far, in milliseconds.
        millis: u64,
    },
}

/// Random op sequences of up to `max_len` steps, with data up to
/// `max_data_len` bytes and time steps up to `max_advance_ms`.
pub fn ops(
    max_len: usize,
    max_data_len: usize,
    max_advance_ms: u64,
) -> impl Strategy<Value = Vec<Op>> {
    let who = 0..CLIENTS;
    let start = prop_oneof![
        Just(Start::Live),
        Just(Start::Earliest),
        any::<usize>().prop_map(Start::AfterPublished),
        any::<u64>().prop_map(Start::Foreign),
    ];
    let op = prop_oneof![
        6 => (0..=max_data_len, any::<bool>()).prop_map(|(len, event)| Op::Publish { len, event }),
        2 => (who.clone(), start).prop_map(|(who, from)| Op::Subscribe { who, from }),
        4 => who.clone().prop_map(|who| Op::Drain { who }),
        2 => who.clone().prop_map(|who| Op::Park { who }),
        1 => who.clone().prop_map(|who| Op::Disconnect { who }),
        2 => who.clone().prop_map(|who| Op::Resume { who }),
        3 => (who, 0..6usize, any::<bool>())
            .prop_map(|(who, limit, live)| Op::Read { who, limit, live }),
        1 => (0..=max_advance_ms).prop_map(|millis| Op::Advance { millis }),
    ];
    proptest::collection::vec(op, 0..=max_len)
}

/// What a [`check`] exercised: proof that a generator reaches the paths that
/// matter, not only the happy one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// Messages published.
    pub published: usize,
    /// Messages delivered to subscribers.
    pub delivered: usize,
    /// Gap signals delivered (subscriptions and reads).
    pub gaps: usize,
    /// Reset signals delivered (subscriptions and reads).
    pub resets: usize,
    /// Parked subscribers woken by a publish.
    pub wakeups: usize,
    /// One-shot reads.
    pub reads: usize,
}

impl std::ops::AddAssign for Report {
    fn add_assign(&mut self, other: Report) {
        self.published += other.published;
        self.delivered += other.delivered;
        self.gaps += other.gaps;
        self.resets += other.resets;
        self.wakeups += other.wakeups;
        self.reads += other.reads;
    }
}

/// Runs `ops` against `hub` on `channel` (which must be fresh: nothing
/// published to it before) and checks every delivery.
///
/// # Errors
/// A description of the first property that did not hold, with the op that
/// broke it.
pub async fn check<H: Hub>(
    hub: &H,
    channel: &ChannelName,
    ops: &[Op],
    options: &Options,
) -> Result<Report, String> {
    let mut model = Model::<H> {
        hub,
        patience: options.patience,
        report: Report::default(),
        channel,
        published: Vec::new(),
        index: HashMap::new(),
        foreign: HashSet::new(),
        clients: (0..CLIENTS).map(|_| Client::default()).collect(),
        pollers: (0..CLIENTS).map(|_| Poller::default()).collect(),
    };
    for (step, op) in ops.iter().enumerate() {
        model
            .apply(op, options.clock.as_ref())
            .await
            .map_err(|e| format!("step {step} ({op:?}): {e}"))?;
    }
    for who in 0..CLIENTS {
        if model.clients[who].subscription.is_some() {
            model
                .drain(who)
                .await
                .map_err(|e| format!("final drain of client {who}: {e}"))?;
        }
    }
    Ok(model.report)
}

struct Record {
    cursor: Cursor,
    data: Bytes,
    event: Option<EventName>,
}

struct Client<S> {
    subscription: Option<S>,
    /// Where it resumes from.
    cursor: Option<Cursor>,
    /// Index in `published` of the next message it must get.
    next: usize,
    /// It started from this foreign cursor and must get a reset first.
    awaiting_reset: Option<Cursor>,
    parked: Option<Arc<WakeFlag>>,
}

impl<S> Default for Client<S> {
    fn default() -> Self {
        Client {
            subscription: None,
            cursor: None,
            next: 0,
            awaiting_reset: None,
            parked: None,
        }
    }
}

#[derive(Default)]
struct Poller {
    cursor: Option<Cursor>,
}

struct Model<'a, H: Hub> {
    hub: &'a H,
    patience: Duration,
    report: Report,
    channel: &'a ChannelName,
    published: Vec<Record>,
    index: HashMap<Cursor, usize>,
    /// Cursors the test made up, from epochs the hub never made.
    foreign: HashSet<Cursor>,
    clients: Vec<Client<H::Subscription>>,
    pollers: Vec<Poller>,
}

/// What a client is told, checked against what it expected.
struct Expectation {
    next: usize,
    awaiting_reset: Option<Cursor>,
}

impl<H: Hub> Model<'_, H> {
    async fn apply(&mut self, op: &Op, clock: Option<&ManualClock>) -> Result<(), String> {
        match *op {
            Op::Publish { len, event } => self.publish(len, event).await,
            Op::Subscribe { who, from } => self.subscribe(who, from).await,
            Op::Drain { who } => self.drain(who).await,
            Op::Park { who } => self.park(who).await,
            Op::Disconnect { who } => {
                let client = &mut self.clients[who];
                client.subscription = None;
                client.parked = None;
                Ok(())
            }
            Op::Resume { who } => {
                let from = match self.clients[who].cursor {
                    Some(cursor) => crate::Start::After(cursor),
                    None => crate::Start::Live,
                };
                self.subscribe_from(who, from).await
            }
            Op::Read { who, limit, live } => self.read(who, limit, live).await,
            Op::Advance { millis } => {
                if let Some(clock) = clock {
                    clock.advance(Duration::from_millis(millis));
                }
                Ok(())
            }
        }
    }

    async fn publish(&mut self, len: usize, event: bool) -> Result<(), String> {
        let n = self.published.len();
        let mut data = format!("{n}:").into_bytes();
        data.resize(len.max(data.len()), b'x');
        data.truncate(len);
        let event = event
            .then(|| EventName::new("e").map_err(|e| e.to_string()))
            .transpose()?;
        let mut publication = Publication::new(data.clone());
        if let Some(event) = &event {
            publication = publication.with_event(event.clone());
        }
        let cursor = self
            .hub
            .publish(self.channel, publication)
            .await
            .map_err(|e| format!("publish failed: {e}"))?;
        if let Some(last) = self.published.last()
            && last.cursor.partial_cmp(&cursor) != Some(std::cmp::Ordering::Less)
        {
            return Err(format!("cursor {cursor} does not follow {}", last.cursor));
        }
        if self.index.insert(cursor, n).is_some() {
            return Err(format!("cursor {cursor} handed out twice"));
        }
        self.published.push(Record {
            cursor,
            data: Bytes::from(data),
            event,
        });
        self.report.published += 1;
        for (who, client) in self.clients.iter_mut().enumerate() {
            if let Some(flag) = client.parked.take() {
                tokio::time::timeout(self.patience, flag.woken())
                    .await
                    .map_err(|_| format!("client {who} was parked and not woken by the publish"))?;
                self.report.wakeups += 1;
            }
        }
        Ok(())
    }

    /// The index of the oldest message the hub retains now (`published.len()`
    /// when it retains none), asked of the hub itself.
    async fn first_retained(&self) -> Result<usize, String> {
        let batch = self
            .hub
            .read(self.channel, crate::Start::Earliest, 1)
            .await
            .map_err(|e| format!("read failed: {e}"))?;
        match batch.messages.first() {
            Some(m) => self.position(m.cursor()),
            None => Ok(self.published.len()),
        }
    }

    fn position(&self, cursor: Cursor) -> Result<usize, String> {
        self.index
            .get(&cursor)
            .copied()
            .ok_or_else(|| format!("cursor {cursor} was never handed out by a publish"))
    }

    async fn subscribe(&mut self, who: usize, from: Start) -> Result<(), String> {
        let from = match from {
            Start::Live => crate::Start::Live,
            Start::Earliest => crate::Start::Earliest,
            Start::AfterPublished(_) if self.published.is_empty() => crate::Start::Live,
            Start::AfterPublished(n) => {
                crate::Start::After(self.published[n % self.published.len()].cursor)
            }
            Start::Foreign(seed) => {
                let epoch = Epoch::new(seed.rotate_left(17) ^ 0xf0f0_f0f0);
                let cursor = Cursor::new(epoch, Position::new(seed % 5, 0));
                if self.index.contains_key(&cursor) {
                    return Err(format!("the hub made epoch {epoch:?} too"));
                }
                self.foreign.insert(cursor);
                crate::Start::After(cursor)
            }
        };
        self.subscribe_from(who, from).await
    }

    async fn subscribe_from(&mut self, who: usize, from: crate::Start) -> Result<(), String> {
        self.clients[who].subscription = None;
        self.clients[who].parked = None;
        let (next, awaiting_reset) = match from {
            crate::Start::Live => (self.published.len(), None),
            crate::Start::Earliest => (self.first_retained().await?, None),
            crate::Start::After(cursor) => match self.index.get(&cursor) {
                Some(&n) => (n + 1, None),
                None if self.foreign.contains(&cursor) => (0, Some(cursor)),
                // The only other cursors a hub hands out are the empty
                // log's head and resume points before the first message.
                None => (0, None),
            },
        };
        let subscription = self
            .hub
            .subscribe(self.channel, from)
            .await
            .map_err(|e| format!("subscribe failed: {e}"))?;
        let client = &mut self.clients[who];
        client.subscription = Some(subscription);
        client.next = next;
        client.awaiting_reset = awaiting_reset;
        if let crate::Start::After(cursor) = from {
            client.cursor = Some(cursor);
        }
        Ok(())
    }

    async fn drain(&mut self, who: usize) -> Result<(), String> {
        if self.clients[who].subscription.is_none() {
            return Ok(());
        }
        let first_retained = self.first_retained().await?;
        let target = self.published.len();
        loop {
            let client = &self.clients[who];
            if client.next == target && client.awaiting_reset.is_none() {
                break;
            }
            let Some(subscription) = self.clients[who].subscription.as_mut() else {
                return Ok(());
            };
            let item = tokio::time::timeout(self.patience, subscription.next())
                .await
                .map_err(|_| self.stuck(who))?
                .ok_or("the subscription ended")?;
            self.receive(who, &item, first_retained)?;
        }
        if let Some(subscription) = self.clients[who].subscription.as_mut() {
            let mut cx = Context::from_waker(Waker::noop());
            if let Poll::Ready(item) = Pin::new(subscription).poll_next(&mut cx) {
                return Err(format!("caught up, yet it yielded {item:?}"));
            }
        }
        self.clients[who].parked = None;
        Ok(())
    }

    fn stuck(&self, who: usize) -> String {
        let client = &self.clients[who];
        let mut s = format!(
            "client {who} waited {:?} for message #{} of {}",
            self.patience,
            client.next,
            self.published.len()
        );
        if let Some(cursor) = client.awaiting_reset {
            let _ = write!(s, " and a reset for {cursor}");
        }
        s
    }

    async fn park(&mut self, who: usize) -> Result<(), String> {
        let Some(subscription) = self.clients[who].subscription.as_mut() else {
            return Ok(());
        };
        let flag = Arc::new(WakeFlag::default());
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        match Pin::new(subscription).poll_next(&mut cx) {
            Poll::Pending => {
                self.clients[who].parked = Some(flag);
                Ok(())
            }
            Poll::Ready(None) => Err("the subscription ended".into()),
            // Something was ready: a delivery like any other.
            Poll::Ready(Some(item)) => {
                let first_retained = self.first_retained().await?;
                self.receive(who, &item, first_retained)
            }
        }
    }

    fn receive(&mut self, who: usize, item: &Item, first_retained: usize) -> Result<(), String> {
        let client = &self.clients[who];
        let mut expected = Expectation {
            next: client.next,
            awaiting_reset: client.awaiting_reset,
        };
        self.check_item(item, &mut expected, first_retained)?;
        let client = &mut self.clients[who];
        client.next = expected.next;
        client.awaiting_reset = expected.awaiting_reset;
        client.cursor = Some(item.cursor());
        Ok(())
    }

    /// Checks one item against what the receiver expects, and moves it on.
    fn check_item(
        &mut self,
        item: &Item,
        expected: &mut Expectation,
        first_retained: usize,
    ) -> Result<(), String> {
        match item {
            Item::Message(message) => {
                if let Some(cursor) = expected.awaiting_reset {
                    return Err(format!(
                        "resumed from foreign cursor {cursor} without a reset"
                    ));
                }
                let n = self.position(message.cursor())?;
                if n != expected.next {
                    return Err(format!(
                        "got message #{n}, expected #{} (first retained: #{first_retained})",
                        expected.next
                    ));
                }
                let record = &self.published[n];
                if message.data() != &record.data
                    || message.event() != record.event.as_ref()
                    || message.channel() != self.channel
                {
                    return Err(format!("message #{n} arrived altered: {message:?}"));
                }
                expected.next = n + 1;
                self.report.delivered += 1;
            }
            Item::Signal(signal) => {
                let resume = signal.resume();
                let landed = match self.index.get(&resume) {
                    Some(&n) => n + 1,
                    None => 0,
                };
                if landed > first_retained {
                    return Err(format!(
                        "{signal:?} skips to #{landed}, past the first retained #{first_retained}"
                    ));
                }
                match signal {
                    Signal::Reset(reset) => {
                        if expected.awaiting_reset != Some(reset.since) {
                            return Err(format!("unexpected {reset:?}"));
                        }
                        expected.awaiting_reset = None;
                        self.report.resets += 1;
                    }
                    Signal::Gap(gap) => {
                        if let Some(cursor) = expected.awaiting_reset {
                            return Err(format!("got {gap:?}, expected a reset for {cursor}"));
                        }
                        if landed <= expected.next {
                            return Err(format!(
                                "{gap:?} at #{} loses nothing: it should not be sent",
                                expected.next
                            ));
                        }
                        let since_ok = match expected.next.checked_sub(1) {
                            Some(last) => gap.since == self.published[last].cursor,
                            None => true,
                        };
                        if !since_ok {
                            return Err(format!(
                                "{gap:?}.since is not the cursor of message #{}",
                                expected.next - 1
                            ));
                        }
                        let missed = (landed - expected.next) as u64;
                        if gap.missed.is_some_and(|m| m != missed) {
                            return Err(format!("{gap:?} but {missed} were missed"));
                        }
                        self.report.gaps += 1;
                    }
                }
                expected.next = landed;
            }
        }
        Ok(())
    }

    async fn read(&mut self, who: usize, limit: usize, live: bool) -> Result<(), String> {
        let first_retained = self.first_retained().await?;
        let (from, next) = match self.pollers[who].cursor {
            // A poller only holds cursors the hub gave it: a message's id, or
            // (before any message) the empty log's head.
            Some(cursor) => (
                crate::Start::After(cursor),
                self.index.get(&cursor).map_or(0, |n| n + 1),
            ),
            None if live => (crate::Start::Live, self.published.len()),
            None => (crate::Start::Earliest, first_retained),
        };
        let mut expected = Expectation {
            next,
            awaiting_reset: None,
        };
        let batch = self
            .hub
            .read(self.channel, from, limit)
            .await
            .map_err(|e| format!("read failed: {e}"))?;
        if let Some(signal) = &batch.signal {
            self.check_item(&Item::Signal(*signal), &mut expected, first_retained)?;
        } else if expected.next < first_retained {
            return Err(format!(
                "read from #{} without a gap, but #{first_retained} is the first retained",
                expected.next
            ));
        }
        if batch.messages.len() > limit {
            return Err(format!(
                "{} messages over a limit of {limit}",
                batch.messages.len()
            ));
        }
        for message in &batch.messages {
            self.check_item(
                &Item::Message(message.clone()),
                &mut expected,
                first_retained,
            )?;
        }
        let more = expected.next < self.published.len();
        if batch.more != more {
            return Err(format!("more is {}, expected {more}", batch.more));
        }
        let cursor = match (batch.messages.last(), &batch.signal, from) {
            (Some(last), _, _) => Some(last.cursor()),
            (None, Some(signal), _) => Some(signal.resume()),
            (None, None, crate::Start::After(cursor)) => Some(cursor),
            (None, None, _) => expected
                .next
                .checked_sub(1)
                .map(|last| self.published[last].cursor),
        };
        if let Some(cursor) = cursor
            && batch.cursor != cursor
        {
            return Err(format!("batch cursor {} should be {cursor}", batch.cursor));
        }
        self.pollers[who].cursor = Some(batch.cursor);
        self.report.reads += 1;
        Ok(())
    }
}

#[derive(Default)]
struct WakeFlag {
    woken: AtomicBool,
    notify: Notify,
}

impl WakeFlag {
    async fn woken(&self) {
        while !self.woken.load(Ordering::SeqCst) {
            self.notify.notified().await;
        }
    }
}

impl Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }
}
