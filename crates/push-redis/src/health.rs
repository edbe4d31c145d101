//! Whether this node's Redis paths work, measured rather than assumed.
//!
//! Every `probe_interval` the probe task publishes a small numbered probe on
//! a Pub/Sub channel of this node's own (`PREFIX:probe:NODE`, not a push
//! channel: no stream, no history) through the command connection, and the
//! node's Pub/Sub connection, subscribed to it, reports it back. A probe that
//! returns proves both connections and Redis itself; one that does not, while
//! commands still work, means the Pub/Sub connection is silently dead: the
//! task then has it reconnected (the node catches up from the streams).
//!
//! When the master moves (a Sentinel failover), the node is unhealthy from
//! the moment it learns so until a probe sent one full interval later comes
//! back: the probe has then gone through the new master both ways.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use redis::Value;
use tokio::sync::Notify;
use tokio::time::{Instant, MissedTickBehavior};

use crate::Inner;
use crate::pubsub::Control;

/// Probes remembered for their round trip (older ones count as returned,
/// without a round trip).
const REMEMBERED: usize = 32;

/// What [`RedisHub::health`](crate::RedisHub::health) reports: the verdict,
/// why, and the figures it rests on.
///
/// ```
/// # async fn check(hub: push_redis::RedisHub) {
/// let health = hub.health();
/// if !health.healthy {
///     eprintln!("unhealthy: {}", health.reason.as_deref().unwrap_or(""));
/// }
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisHealth {
    /// The verdict: Redis answered the last command, and a probe came back
    /// through Pub/Sub within [`probe_timeout`](crate::RedisHubConfig::probe_timeout).
    pub healthy: bool,
    /// Why it is unhealthy, in words for a log line or a `503` body; `None`
    /// when healthy.
    pub reason: Option<String>,
    /// Whether Redis answered the last command this node sent (a reply,
    /// even an error reply, counts; a timeout or a broken connection does
    /// not).
    pub redis_answered: bool,
    /// The round trip of the last probe that came back: publish on the
    /// command connection to arrival on the Pub/Sub connection.
    pub probe_round_trip: Option<Duration>,
    /// How long since a probe last came back (`None`: none yet).
    pub since_last_probe: Option<Duration>,
    /// Where the node's connections went last (`host:port`): the URL's
    /// Redis, or the master the sentinels named (`None`: none yet).
    pub address: Option<String>,
}

/// The health figures, shared by the link, the probe and the Pub/Sub task.
#[derive(Debug)]
pub(crate) struct Health {
    state: Mutex<State>,
    probe_timeout: Duration,
    /// The master moved: the probe task starts a fresh interval.
    pub(crate) switched: Notify,
}

#[derive(Debug)]
struct Probe {
    number: u64,
    sent: Instant,
    /// When Redis acknowledged the PUBLISH, if it did.
    published: Option<Instant>,
}

#[derive(Debug)]
struct State {
    started: Instant,
    /// The last command's outcome: `Err` holds why it got no answer.
    last_answer: Result<(), String>,
    /// Probes sent and not yet back.
    in_flight: VecDeque<Probe>,
    next_probe: u64,
    round_trip: Option<Duration>,
    last_back: Option<Instant>,
    /// Where the connections went last.
    address: Option<String>,
    /// A move to another master not yet confirmed by a probe.
    switch: Option<Switch>,
}

/// A move to another master, in progress.
#[derive(Debug)]
struct Switch {
    reason: String,
    /// The first probe that counts: one sent after the move began.
    first_probe: u64,
}

impl Health {
    pub(crate) fn new(probe_timeout: Duration) -> Arc<Self> {
        Arc::new(Health {
            state: Mutex::new(State {
                started: Instant::now(),
                last_answer: Ok(()),
                in_flight: VecDeque::new(),
                next_probe: 0,
                round_trip: None,
                last_back: None,
                address: None,
                switch: None,
            }),
            probe_timeout,
            switched: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records whether Redis answered a command.
    pub(crate) fn answered(&self, outcome: Result<(), &str>) {
        self.lock().last_answer = outcome.map_err(str::to_owned);
    }

    /// A connection to `address` is up: a move if the last one went
    /// elsewhere.
    pub(crate) fn arrived(&self, address: &str) {
        let mut state = self.lock();
        let moved = match &state.address {
            Some(last) if last != address => Some(format!(
                "the Redis master moved from {last} to {address}; waiting for a probe through it"
            )),
            _ => None,
        };
        state.address = Some(address.to_owned());
        if let Some(reason) = moved {
            tracing::warn!("{reason}");
            Self::begin_switch(&mut state, reason);
            drop(state);
            self.switched.notify_one();
        }
    }

    /// Where the connections went last.
    pub(crate) fn address(&self) -> Option<String> {
        self.lock().address.clone()
    }

    /// The master is moving (a sentinel said so), for `reason`: unhealthy
    /// until a probe sent from now on comes back.
    pub(crate) fn switching(&self, reason: String) {
        Self::begin_switch(&mut self.lock(), reason);
        self.switched.notify_one();
    }

    fn begin_switch(state: &mut State, reason: String) {
        let first_probe = state.next_probe;
        state.switch = Some(Switch {
            reason,
            first_probe,
        });
    }

    /// Numbers a new probe, sent now.
    fn probe_sent(&self) -> u64 {
        let mut state = self.lock();
        let number = state.next_probe;
        state.next_probe += 1;
        state.in_flight.push_back(Probe {
            number,
            sent: Instant::now(),
            published: None,
        });
        if state.in_flight.len() > REMEMBERED {
            state.in_flight.pop_front();
        }
        number
    }

    /// Redis acknowledged probe `number`'s PUBLISH.
    fn probe_published(&self, number: u64) {
        let mut state = self.lock();
        if let Some(probe) = state.in_flight.iter_mut().find(|p| p.number == number) {
            probe.published = Some(Instant::now());
        }
    }

    /// Whether a probe Redis acknowledged has not come back within the probe
    /// timeout: the Pub/Sub connection is not receiving.
    fn pubsub_stalled(&self) -> bool {
        self.lock().in_flight.iter().any(|probe| {
            probe
                .published
                .is_some_and(|at| at.elapsed() > self.probe_timeout)
        })
    }

    /// A probe came back through Pub/Sub.
    pub(crate) fn probe_back(&self, payload: &[u8]) {
        let now = Instant::now();
        let number = std::str::from_utf8(payload)
            .ok()
            .and_then(|text| text.parse::<u64>().ok());
        let mut state = self.lock();
        if let Some(number) = number
            && let Some(index) = state.in_flight.iter().position(|p| p.number == number)
        {
            let sent = state.in_flight[index].sent;
            state.round_trip = Some(now.saturating_duration_since(sent));
            // Older ones will not come back now (Pub/Sub keeps order).
            state.in_flight.drain(..=index);
            if state
                .switch
                .as_ref()
                .is_some_and(|switch| number >= switch.first_probe)
            {
                state.switch = None;
            }
        }
        state.last_back = Some(now);
    }

    /// Whether no probe came back for longer than the probe timeout.
    fn overdue(&self, state: &State) -> bool {
        state.last_back.unwrap_or(state.started).elapsed() > self.probe_timeout
    }

    /// The report.
    pub(crate) fn report(&self) -> RedisHealth {
        let state = self.lock();
        let since_last_probe = state.last_back.map(|at| at.elapsed());
        let reason = match (&state.last_answer, self.overdue(&state)) {
            (Err(why), _) => Some(format!("Redis did not answer the last command: {why}")),
            (Ok(()), _) if state.switch.is_some() => {
                state.switch.as_ref().map(|switch| switch.reason.clone())
            }
            (Ok(()), true) => Some(match since_last_probe {
                Some(since) => format!(
                    "no Pub/Sub probe came back for {:.1} s (limit {:.1} s): the node's \
                     subscribers may not be getting messages",
                    since.as_secs_f64(),
                    self.probe_timeout.as_secs_f64()
                ),
                None => format!(
                    "no Pub/Sub probe came back since the node started {:.1} s ago (limit {:.1} s)",
                    state.started.elapsed().as_secs_f64(),
                    self.probe_timeout.as_secs_f64()
                ),
            }),
            (Ok(()), false) => None,
        };
        RedisHealth {
            healthy: reason.is_none(),
            reason,
            redis_answered: state.last_answer.is_ok(),
            probe_round_trip: state.round_trip,
            since_last_probe,
            address: state.address.clone(),
        }
    }
}

/// The probe task: runs until the hub is gone (it holds it weakly).
pub(crate) async fn run(hub: Weak<Inner>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // When the Pub/Sub connection was last asked to reconnect.
    let mut reconnected_at: Option<Instant> = None;
    let Some(switched) = hub.upgrade().map(|inner| inner.health.clone()) else {
        return;
    };
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            // The first probe through a new master goes a full interval
            // after the move (so a switch is seen, however quick).
            () = switched.switched.notified() => {
                ticker.reset();
                continue;
            }
        }
        let Some(inner) = hub.upgrade() else { return };
        let (link, health) = (inner.link.clone(), inner.health.clone());
        let channel = inner.probe_channel();
        let control = inner.control.clone();
        // Hold no hub across the command.
        drop(inner);
        let number = health.probe_sent();
        let published = match link.cluster() {
            // One copy per shard (the `cluster` module).
            Some(cluster) => cluster.probe(&channel, number).await,
            None => {
                let mut publish = redis::cmd("PUBLISH");
                publish.arg(channel).arg(number);
                matches!(link.command(&publish).await, Ok(Value::Int(_)))
            }
        };
        if published {
            health.probe_published(number);
        }
        // Redis takes the probes but they stop coming back: the Pub/Sub
        // connection is dead without knowing it. Have it reconnected, at
        // most once per probe timeout.
        let recently = reconnected_at.is_some_and(|at| at.elapsed() <= health.probe_timeout);
        if health.pubsub_stalled() && !recently {
            tracing::warn!("no Pub/Sub probe came back in time; reconnecting Pub/Sub");
            reconnected_at = Some(Instant::now());
            let _ = control.send(Control::Reconnect);
        }
    }
}
