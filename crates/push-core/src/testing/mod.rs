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
//! use push_core::testing::{Op, Options, Since, check};
//! use push_core::MemoryHub;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let ops = [
//!     Op::Subscribe { who: 0, from: Since::Live },
//!     Op::Publish { len: 3, event: false },
//!     Op::Drain { who: 0 },
//! ];
//! check(&MemoryHub::new(), &"c".parse().unwrap(), &ops, &Options::default()).await.unwrap();
//! # }
//! ```

mod model;

use std::time::Duration;

use proptest::prelude::*;

use self::model::Model;

use crate::{ChannelName, Hub, ManualClock};

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

/// Where a simulated client subscribes from (it becomes the hub's
/// [`Start`](crate::Start); named after the wire's `since`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Since {
    /// Only new messages.
    Live,
    /// Everything retained.
    Earliest,
    /// After the `n`th message published so far (modulo how many there are).
    AfterPublished(usize),
    /// After a cursor from an epoch the hub never made.
    Foreign(u64),
    /// The last `n` retained messages, then live.
    Last(u64),
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
        from: Since,
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
        Just(Since::Live),
        Just(Since::Earliest),
        any::<usize>().prop_map(Since::AfterPublished),
        any::<u64>().prop_map(Since::Foreign),
        (0u64..12).prop_map(Since::Last),
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
    /// The most messages the hub retained at any time it was asked (and at
    /// the end): never more than its history limit, or it ignored it.
    pub most_retained: usize,
}

impl std::ops::AddAssign for Report {
    fn add_assign(&mut self, other: Report) {
        self.published += other.published;
        self.delivered += other.delivered;
        self.gaps += other.gaps;
        self.resets += other.resets;
        self.wakeups += other.wakeups;
        self.reads += other.reads;
        self.most_retained = self.most_retained.max(other.most_retained);
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
    let mut model = Model::new(hub, channel, options.patience);
    for (step, op) in ops.iter().enumerate() {
        model
            .apply(op, options.clock.as_ref())
            .await
            .map_err(|e| format!("step {step} ({op:?}): {e}"))?;
    }
    model.drain_all().await?;
    model.first_retained().await?;
    Ok(model.report())
}
