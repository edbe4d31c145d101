//! Continuity across several channels of one memory hub under a tiny byte
//! budget and tiny channel limits, where every publish, encoding, read or new
//! channel can trim another channel's history or evict another channel.
//!
//! Random publishes, subscribes, polls, reads (with encodings filled, as
//! transports do on delivery), disconnects, sweeps and time passing; after
//! every step the budget holds, and every item any client gets obeys the
//! continuity rules against what the hub holds at that moment:
//!
//! - a message is the next one after the client's cursor, in the same epoch,
//!   with the data it was published with (no loss, no repeat, in order);
//! - a gap is sent only when the history no longer holds the next message,
//!   lands on the first retained one, and counts exactly what was lost;
//! - a reset is sent exactly when the cursor is not of the channel's current
//!   epoch (a foreign cursor, or the channel was evicted and made again);
//! - a subscription with nothing to give is caught up with the head.
//!
//! At the end, with everything dropped and expired, the budget's count is zero.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may fail loudly

use std::collections::HashMap;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use push_core::{
    ChannelName, Cursor, Epoch, Error, EventName, Hub, Item, ManualClock, MemoryHub,
    MemoryHubConfig, MemorySubscription, Message, Position, Publication, Signal, Span, Start,
    Timestamp, WireFormat,
};

const T0: Timestamp = Timestamp::from_unix_millis(1_700_000_000_000);
const CHANNELS: usize = 5;
const CLIENTS: usize = 4;
const MAX_MESSAGE_BYTES: usize = 8;
const OVERHEAD: usize = MemoryHubConfig::MESSAGE_OVERHEAD;

#[derive(Clone, Copy, Debug)]
enum From {
    Live,
    Earliest,
    /// After the client's own last cursor (a reconnect).
    Resume,
    /// After the `n`th message published to the channel (modulo).
    Published(usize),
    /// After a cursor of an epoch the hub never made.
    Foreign(u64),
}

#[derive(Clone, Debug)]
enum Op {
    Publish {
        channel: usize,
        len: usize,
        event: bool,
    },
    Subscribe {
        who: usize,
        channel: usize,
        from: From,
    },
    /// Polls until nothing is ready, filling the encodings in `encode` (a
    /// bit per format) of each message delivered.
    Drain {
        who: usize,
        encode: u8,
    },
    /// Polls once.
    Poll {
        who: usize,
        encode: u8,
    },
    Disconnect {
        who: usize,
    },
    /// Poller `who` reads `channel` after its cursor there (or from live or
    /// earliest, the first time).
    Read {
        who: usize,
        channel: usize,
        limit: usize,
        live: bool,
        encode: u8,
    },
    Advance {
        millis: u64,
    },
    Sweep,
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let from = prop_oneof![
        Just(From::Live),
        Just(From::Earliest),
        Just(From::Resume),
        any::<usize>().prop_map(From::Published),
        any::<u64>().prop_map(From::Foreign),
    ];
    let op = prop_oneof![
        8 => (0..CHANNELS, 0..MAX_MESSAGE_BYTES, any::<bool>())
            .prop_map(|(channel, len, event)| Op::Publish { channel, len, event }),
        3 => (0..CLIENTS, 0..CHANNELS, from)
            .prop_map(|(who, channel, from)| Op::Subscribe { who, channel, from }),
        5 => (0..CLIENTS, 0..8u8).prop_map(|(who, encode)| Op::Drain { who, encode }),
        2 => (0..CLIENTS, 0..8u8).prop_map(|(who, encode)| Op::Poll { who, encode }),
        1 => (0..CLIENTS).prop_map(|who| Op::Disconnect { who }),
        3 => (0..CLIENTS, 0..CHANNELS, 0..5usize, any::<bool>(), 0..8u8)
            .prop_map(|(who, channel, limit, live, encode)| Op::Read { who, channel, limit, live, encode }),
        1 => (0..1_500u64).prop_map(|millis| Op::Advance { millis }),
        1 => Just(Op::Sweep),
    ];
    proptest::collection::vec(op, 0..=120)
}

/// The hub's limits for one case.
#[derive(Clone, Debug)]
struct Limits {
    max_channels: usize,
    max_unpublished: Option<usize>,
    max_messages: usize,
    max_bytes: usize,
    max_age_ms: u64,
    /// Messages (of bookkeeping) the budget holds, plus some bytes.
    budget_messages: usize,
    budget_extra: usize,
}

fn limits() -> impl Strategy<Value = Limits> {
    (
        2..=6usize,
        proptest::option::of(1..=6usize),
        1..8usize,
        8..48usize,
        50..3_000u64,
        1..12usize,
        0..200usize,
    )
        .prop_map(
            |(max_channels, max_unpublished, max_messages, max_bytes, max_age_ms, n, extra)| {
                Limits {
                    max_channels,
                    max_unpublished,
                    max_messages,
                    max_bytes,
                    max_age_ms,
                    budget_messages: n,
                    budget_extra: extra,
                }
            },
        )
}

impl Limits {
    fn config(&self) -> MemoryHubConfig {
        let mut config = MemoryHubConfig::default()
            .with_max_channels(self.max_channels)
            .with_max_messages(self.max_messages)
            .with_max_bytes(self.max_bytes)
            .with_max_message_bytes(MAX_MESSAGE_BYTES)
            .with_max_age(Duration::from_millis(self.max_age_ms))
            .with_idle_channel_ttl(Duration::from_millis(self.max_age_ms / 2))
            .with_max_retained_bytes(
                self.budget_messages * (OVERHEAD + MAX_MESSAGE_BYTES) + self.budget_extra,
            );
        if let Some(max) = self.max_unpublished {
            config = config.with_max_unpublished_channels(max);
        }
        config
    }
}

/// What a run exercised.
#[derive(Clone, Copy, Debug, Default)]
struct Report {
    published: usize,
    delivered: usize,
    gaps: usize,
    resets: usize,
    reads: usize,
    encodings: usize,
    refused: usize,
    trimmed: u64,
    evicted: u64,
}

impl std::ops::AddAssign for Report {
    fn add_assign(&mut self, o: Report) {
        self.published += o.published;
        self.delivered += o.delivered;
        self.gaps += o.gaps;
        self.resets += o.resets;
        self.reads += o.reads;
        self.encodings += o.encodings;
        self.refused += o.refused;
        self.trimmed += o.trimmed;
        self.evicted += o.evicted;
    }
}

struct Client {
    channel: usize,
    subscription: Option<MemorySubscription>,
    /// Where the client stands: its last item's cursor, or where it started.
    at: Option<Cursor>,
}

struct Sim {
    hub: MemoryHub,
    clock: ManualClock,
    config: MemoryHubConfig,
    names: Vec<ChannelName>,
    /// Every message published: its channel, data and event.
    records: HashMap<Cursor, (usize, Bytes, Option<EventName>)>,
    cursors: Vec<Vec<Cursor>>,
    clients: Vec<Client>,
    /// Each poller's cursor per channel.
    pollers: Vec<HashMap<usize, Cursor>>,
    report: Report,
}

/// Whether `at` is a place in the history `span` describes.
fn valid(at: Cursor, span: &Span) -> bool {
    at.epoch() == span.epoch && at.position().minor() == 0 && at.position().major() <= span.head
}

impl Sim {
    fn new(limits: &Limits) -> Self {
        let clock = ManualClock::new(T0);
        let config = limits.config();
        Sim {
            hub: MemoryHub::with_config_and_clock(config.clone(), clock.clone()).unwrap(),
            clock,
            config,
            names: (0..CHANNELS)
                .map(|i| ChannelName::new(&format!("c{i}")).unwrap())
                .collect(),
            records: HashMap::new(),
            cursors: vec![Vec::new(); CHANNELS],
            clients: (0..CLIENTS)
                .map(|_| Client {
                    channel: 0,
                    subscription: None,
                    at: None,
                })
                .collect(),
            pollers: vec![HashMap::new(); CLIENTS],
            report: Report::default(),
        }
    }

    /// The channel's history now, without touching it (`None`: not held).
    fn span(&self, channel: usize) -> Option<Span> {
        let stats = self.hub.channel_stats(&self.names[channel])?;
        let head = stats.cursor.position().major();
        Some(Span {
            epoch: stats.cursor.epoch(),
            first: head + 1 - stats.messages as u64,
            head,
        })
    }

    /// A refusal is legitimate only when a limit is reached.
    fn refused(&mut self, err: &Error, observe: bool) -> Result<(), String> {
        let stats = self.hub.stats();
        let table_full = stats.channels >= self.config.max_channels;
        let quota_full =
            observe && stats.unpublished_channels >= self.config.unpublished_channel_limit();
        match err {
            Error::TooManyChannels { .. } if table_full || quota_full => {
                self.report.refused += 1;
                Ok(())
            }
            _ => Err(format!("refused: {err} ({stats:?})")),
        }
    }

    fn apply(&mut self, op: &Op) -> Result<(), String> {
        match *op {
            Op::Publish {
                channel,
                len,
                event,
            } => self.publish(channel, len, event),
            Op::Subscribe { who, channel, from } => self.subscribe(who, channel, from),
            Op::Drain { who, encode } => self.poll(who, encode, usize::MAX),
            Op::Poll { who, encode } => self.poll(who, encode, 1),
            Op::Disconnect { who } => {
                self.clients[who].subscription = None;
                Ok(())
            }
            Op::Read {
                who,
                channel,
                limit,
                live,
                encode,
            } => self.read(who, channel, limit, live, encode),
            Op::Advance { millis } => {
                self.clock.advance(Duration::from_millis(millis));
                Ok(())
            }
            Op::Sweep => {
                self.hub.sweep();
                Ok(())
            }
        }
    }

    /// What must hold between any two steps (no message is held outside).
    fn invariants(&self) -> Result<(), String> {
        let stats = self.hub.stats();
        if stats.retained_bytes > stats.max_retained_bytes {
            return Err(format!("over the budget: {stats:?}"));
        }
        if stats.channels > self.config.max_channels
            || stats.unpublished_channels > self.config.unpublished_channel_limit()
            || stats.unpublished_channels > stats.channels
        {
            return Err(format!("over a channel limit: {stats:?}"));
        }
        Ok(())
    }

    fn publish(&mut self, channel: usize, len: usize, event: bool) -> Result<(), String> {
        let n = self.records.len();
        let mut data = format!("{n}:").into_bytes();
        data.resize(len, b'x');
        let event = (event && len < MAX_MESSAGE_BYTES).then(|| "e".parse::<EventName>().unwrap());
        let mut publication = Publication::new(data.clone());
        if let Some(event) = &event {
            publication = publication.with_event(event.clone());
        }
        let before = self.span(channel);
        let cursor = match self
            .hub
            .publish(&self.names[channel], publication)
            .now_or_never()
        {
            Some(Ok(cursor)) => cursor,
            Some(Err(err)) => return self.refused(&err, false),
            None => return Err("a publish waited".into()),
        };
        let expected = match before {
            Some(span) => span.cursor_at(span.head + 1),
            None => Cursor::new(cursor.epoch(), Position::new(1, 0)),
        };
        if cursor != expected {
            return Err(format!("published at {cursor}, expected {expected}"));
        }
        if self
            .records
            .insert(cursor, (channel, Bytes::from(data), event))
            .is_some()
        {
            return Err(format!("cursor {cursor} handed out twice"));
        }
        self.cursors[channel].push(cursor);
        self.report.published += 1;
        Ok(())
    }

    fn subscribe(&mut self, who: usize, channel: usize, from: From) -> Result<(), String> {
        self.clients[who].subscription = None;
        let start = match from {
            From::Live => Start::Live,
            From::Earliest => Start::Earliest,
            From::Resume => match self.clients[who].at {
                // Its cursor was for its old channel: in this one, a foreign one.
                Some(at) => Start::After(at),
                None => Start::Live,
            },
            From::Published(_) if self.cursors[channel].is_empty() => Start::Live,
            From::Published(n) => {
                Start::After(self.cursors[channel][n % self.cursors[channel].len()])
            }
            From::Foreign(seed) => Start::After(Cursor::new(
                Epoch::new(seed.rotate_left(17) ^ 0xf0f0_f0f0),
                Position::new(seed % 5, 0),
            )),
        };
        let subscription = match self
            .hub
            .subscribe(&self.names[channel], start)
            .now_or_never()
        {
            Some(Ok(subscription)) => subscription,
            Some(Err(err)) => {
                self.clients[who].at = None;
                return self.refused(&err, true);
            }
            None => return Err("a subscribe waited".into()),
        };
        let span = self
            .span(channel)
            .ok_or("subscribed, yet the channel is gone")?;
        let at = match start {
            Start::Live => span.head_cursor(),
            Start::Earliest => span.cursor_at(span.first - 1),
            Start::Last(n) => span.cursor_at(span.head.saturating_sub(n).max(span.first - 1)),
            Start::After(cursor) => cursor,
        };
        self.clients[who] = Client {
            channel,
            subscription: Some(subscription),
            at: Some(at),
        };
        Ok(())
    }

    fn poll(&mut self, who: usize, encode: u8, limit: usize) -> Result<(), String> {
        for _ in 0..limit {
            let channel = self.clients[who].channel;
            let Some(subscription) = self.clients[who].subscription.as_mut() else {
                return Ok(());
            };
            // Polling changes nothing in the log: the span before it is the
            // one the subscription reads.
            let span = {
                let stats = self.hub.channel_stats(&self.names[channel]);
                let stats = stats.ok_or("a subscribed channel is gone")?;
                let head = stats.cursor.position().major();
                Span {
                    epoch: stats.cursor.epoch(),
                    first: head + 1 - stats.messages as u64,
                    head,
                }
            };
            let item = match subscription.poll_next_unpin(&mut Context::from_waker(Waker::noop())) {
                Poll::Ready(Some(item)) => item,
                Poll::Ready(None) => return Err("the subscription ended".into()),
                Poll::Pending => {
                    let at = self.clients[who].at.ok_or("subscribed without a cursor")?;
                    if !valid(at, &span) || at.position().major() != span.head {
                        return Err(format!("nothing ready at {at}, but the log is {span:?}"));
                    }
                    return Ok(());
                }
            };
            let mut at = self.clients[who].at.ok_or("subscribed without a cursor")?;
            self.check(channel, &mut at, &item, &span)
                .map_err(|e| format!("client {who}: {e}"))?;
            self.clients[who].at = Some(at);
            if let Item::Message(message) = &item {
                self.encode(message, encode);
            }
        }
        Ok(())
    }

    fn read(
        &mut self,
        who: usize,
        channel: usize,
        limit: usize,
        live: bool,
        encode: u8,
    ) -> Result<(), String> {
        let start = match self.pollers[who].get(&channel) {
            Some(cursor) => Start::After(*cursor),
            None if live => Start::Live,
            None => Start::Earliest,
        };
        // A read expires what is due, as channel_stats does: the span before
        // it is the one it reads, unless the read makes the channel.
        let before = self.span(channel);
        let batch = match self
            .hub
            .read(&self.names[channel], start, limit)
            .now_or_never()
        {
            Some(Ok(batch)) => batch,
            Some(Err(err)) => return self.refused(&err, true),
            None => return Err("a read waited".into()),
        };
        let span = match before {
            Some(span) => span,
            None => self.span(channel).ok_or("read, yet the channel is gone")?,
        };
        let mut at = match start {
            Start::Live => span.head_cursor(),
            Start::Earliest => span.cursor_at(span.first - 1),
            Start::Last(n) => span.cursor_at(span.head.saturating_sub(n).max(span.first - 1)),
            Start::After(cursor) => cursor,
        };
        let needs_signal = !valid(at, &span) || at.position().major() + 1 < span.first;
        match &batch.signal {
            Some(signal) => self.check(channel, &mut at, &Item::Signal(*signal), &span)?,
            None if needs_signal => {
                return Err(format!("read from {at} without a signal: {span:?}"));
            }
            None => {}
        }
        if batch.messages.len() > limit {
            return Err(format!(
                "{} messages over a limit of {limit}",
                batch.messages.len()
            ));
        }
        for message in &batch.messages {
            self.check(channel, &mut at, &Item::Message(message.clone()), &span)?;
        }
        for message in &batch.messages {
            self.encode(message, encode);
        }
        if batch.cursor != at {
            return Err(format!("batch cursor {} should be {at}", batch.cursor));
        }
        let more = at.position().major() < span.head;
        if batch.more != more {
            return Err(format!(
                "more is {}, expected {more} at {at} of {span:?}",
                batch.more
            ));
        }
        self.pollers[who].insert(channel, batch.cursor);
        self.report.reads += 1;
        Ok(())
    }

    /// Checks one item for a client standing at `at`, and moves it on.
    fn check(
        &mut self,
        channel: usize,
        at: &mut Cursor,
        item: &Item,
        span: &Span,
    ) -> Result<(), String> {
        match item {
            Item::Message(message) => {
                let Some((published_to, data, event)) = self.records.get(&message.cursor()) else {
                    return Err(format!("{} was never published", message.cursor()));
                };
                if *published_to != channel
                    || message.data() != data
                    || message.event() != event.as_ref()
                    || message.channel() != &self.names[channel]
                {
                    return Err(format!("{message:?} arrived altered"));
                }
                if !valid(*at, span) {
                    return Err(format!(
                        "{} delivered to {at} without a reset",
                        message.cursor()
                    ));
                }
                let number = message.cursor().position().major();
                if message.cursor().epoch() != at.epoch() || number != at.position().major() + 1 {
                    return Err(format!(
                        "{} delivered to {at}: not the next",
                        message.cursor()
                    ));
                }
                if !(span.first..=span.head).contains(&number) {
                    return Err(format!(
                        "{} delivered, not retained in {span:?}",
                        message.cursor()
                    ));
                }
                *at = message.cursor();
                self.report.delivered += 1;
            }
            Item::Signal(Signal::Gap(gap)) => {
                let lost_up_to = span.first - 1;
                if !valid(*at, span) || gap.since != *at {
                    return Err(format!("{gap:?} for a client at {at} in {span:?}"));
                }
                if gap.resume != span.cursor_at(lost_up_to) || lost_up_to <= at.position().major() {
                    return Err(format!(
                        "{gap:?} does not land on the first retained of {span:?}"
                    ));
                }
                if gap.missed != Some(lost_up_to - at.position().major()) {
                    return Err(format!("{gap:?}: wrong count from {at}"));
                }
                *at = gap.resume;
                self.report.gaps += 1;
            }
            Item::Signal(Signal::Reset(reset)) => {
                if valid(*at, span) || reset.since != *at {
                    return Err(format!("{reset:?} for a client at {at} in {span:?}"));
                }
                // Resolved when the subscription was made: what has been
                // dropped since then follows as a gap.
                let resume = reset.resume;
                if !valid(resume, span) || resume.position().major() >= span.first {
                    return Err(format!(
                        "{reset:?} lands past the first retained of {span:?}"
                    ));
                }
                *at = reset.resume;
                self.report.resets += 1;
            }
        }
        Ok(())
    }

    /// Fills encodings as a transport would (each may trim the hub).
    fn encode(&mut self, message: &Message, mask: u8) {
        let formats = [
            WireFormat::JsonEnvelope,
            WireFormat::SseEvent,
            WireFormat::SseEnvelope,
        ];
        for (bit, format) in formats.into_iter().enumerate() {
            if mask & (1 << bit) != 0 {
                let encoded =
                    message.encoded(format, |m| Bytes::from(vec![b'e'; 2 * m.data().len() + 10]));
                assert_eq!(encoded.len(), 2 * message.data().len() + 10);
                self.report.encodings += 1;
            }
        }
    }

    /// Everything dropped and expired: nothing may stay counted.
    fn finish(mut self) -> Result<Report, String> {
        for client in &mut self.clients {
            client.subscription = None;
        }
        // Past every message's age and every channel's idle time.
        self.clock
            .advance(self.config.max_age + Duration::from_millis(1));
        self.hub.sweep();
        let stats = self.hub.stats();
        if (
            stats.retained_bytes,
            stats.channels,
            stats.unpublished_channels,
        ) != (0, 0, 0)
        {
            return Err(format!("left behind: {stats:?}"));
        }
        self.report.trimmed = stats.trimmed_messages;
        self.report.evicted = stats.evicted_channels;
        Ok(self.report)
    }
}

fn run(limits: &Limits, ops: &[Op]) -> Result<Report, String> {
    let mut sim = Sim::new(limits);
    for (step, op) in ops.iter().enumerate() {
        sim.apply(op)
            .and_then(|()| sim.invariants())
            .map_err(|e| format!("step {step} ({op:?}): {e}"))?;
    }
    sim.finish()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1_000,
        max_shrink_time: 60_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn several_channels_keep_continuity_within_a_tiny_budget(limits in limits(), ops in ops()) {
        let result = run(&limits, &ops);
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}

/// The generator must reach the paths the property speaks of.
#[test]
fn generated_scenarios_trim_evict_refuse_and_signal() {
    let mut runner = TestRunner::deterministic();
    let mut total = Report::default();
    for _ in 0..300 {
        let limits = limits().new_tree(&mut runner).unwrap().current();
        let ops = ops().new_tree(&mut runner).unwrap().current();
        total += run(&limits, &ops).unwrap();
    }
    println!("{total:?}");
    // About 60% of what the deterministic runner reaches, as a floor.
    assert!(total.published > 3_000, "{total:?}");
    assert!(total.delivered > 900, "{total:?}");
    assert!(total.gaps > 250, "{total:?}");
    assert!(total.resets > 250, "{total:?}");
    assert!(total.reads > 1_100, "{total:?}");
    assert!(total.encodings > 1_300, "{total:?}");
    assert!(total.refused > 600, "{total:?}");
    assert!(total.trimmed > 1_100, "{total:?}");
    assert!(total.evicted > 700, "{total:?}");
}
