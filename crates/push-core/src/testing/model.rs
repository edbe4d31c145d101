//! The model behind [`check`](super::check): what was published, what each
//! simulated client has seen, and the rules every delivery must obey.

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
use tokio::sync::Notify;

use super::{CLIENTS, Op, Report, Since};
use crate::{
    ChannelName, Cursor, Epoch, EventName, Hub, Item, ManualClock, Position, Publication, Signal,
};

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

pub(super) struct Model<'a, H: Hub> {
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

impl<'a, H: Hub> Model<'a, H> {
    pub(super) fn new(hub: &'a H, channel: &'a ChannelName, patience: Duration) -> Self {
        Model {
            hub,
            patience,
            report: Report::default(),
            channel,
            published: Vec::new(),
            index: HashMap::new(),
            foreign: HashSet::new(),
            clients: (0..CLIENTS).map(|_| Client::default()).collect(),
            pollers: (0..CLIENTS).map(|_| Poller::default()).collect(),
        }
    }

    pub(super) fn report(&self) -> Report {
        self.report
    }

    /// Drains every connected client: the end of every scenario.
    pub(super) async fn drain_all(&mut self) -> Result<(), String> {
        for who in 0..CLIENTS {
            if self.clients[who].subscription.is_some() {
                self.drain(who)
                    .await
                    .map_err(|e| format!("final drain of client {who}: {e}"))?;
            }
        }
        Ok(())
    }

    pub(super) async fn apply(
        &mut self,
        op: &Op,
        clock: Option<&ManualClock>,
    ) -> Result<(), String> {
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
    /// The index of the first message the hub still retains (every one
    /// published: none); the report keeps the most it ever retained.
    pub(super) async fn first_retained(&mut self) -> Result<usize, String> {
        let batch = self
            .hub
            .read(self.channel, crate::Start::Earliest, 1)
            .await
            .map_err(|e| format!("read failed: {e}"))?;
        let first = match batch.messages.first() {
            Some(m) => self.position(m.cursor())?,
            None => self.published.len(),
        };
        let retained = self.published.len() - first;
        self.report.most_retained = self.report.most_retained.max(retained);
        Ok(first)
    }

    fn position(&self, cursor: Cursor) -> Result<usize, String> {
        self.index
            .get(&cursor)
            .copied()
            .ok_or_else(|| format!("cursor {cursor} was never handed out by a publish"))
    }

    async fn subscribe(&mut self, who: usize, from: Since) -> Result<(), String> {
        let from = match from {
            Since::Live => crate::Start::Live,
            Since::Earliest => crate::Start::Earliest,
            Since::AfterPublished(_) if self.published.is_empty() => crate::Start::Live,
            Since::AfterPublished(n) => {
                crate::Start::After(self.published[n % self.published.len()].cursor)
            }
            Since::Foreign(seed) => {
                let epoch = Epoch::new(seed.rotate_left(17) ^ 0xf0f0_f0f0);
                let cursor = Cursor::new(epoch, Position::new(seed % 5, 0));
                if self.index.contains_key(&cursor) {
                    return Err(format!("the hub made epoch {epoch:?} too"));
                }
                self.foreign.insert(cursor);
                crate::Start::After(cursor)
            }
            Since::Last(n) => crate::Start::Last(n),
        };
        self.subscribe_from(who, from).await
    }

    async fn subscribe_from(&mut self, who: usize, from: crate::Start) -> Result<(), String> {
        self.clients[who].subscription = None;
        self.clients[who].parked = None;
        let (next, awaiting_reset) = match from {
            crate::Start::Live => (self.published.len(), None),
            crate::Start::Earliest => (self.first_retained().await?, None),
            crate::Start::Last(n) => {
                let last = self
                    .published
                    .len()
                    .saturating_sub(usize::try_from(n).unwrap_or(usize::MAX));
                (last.max(self.first_retained().await?), None)
            }
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
