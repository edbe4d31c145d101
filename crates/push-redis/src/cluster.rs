//! The hub on a Redis Cluster ([`RedisHubConfig::cluster`]).
//!
//! - **Keys**: every key of a channel carries the hash tag `{CHANNEL}`
//!   (see the `scripts` module), so they share one slot and each publish or
//!   read stays one atomic script on the primary that owns the slot.
//! - **Notifications** are sharded: the scripts `SPUBLISH` on
//!   `PREFIX:{CHANNEL}` (the same hash tag, so the same slot and shard), and
//!   the node `SSUBSCRIBE`s there to each channel it follows, and to nothing
//!   else: a notification reaches only the nodes that hold a subscriber of
//!   its channel, from the one shard that owns it, instead of crossing every
//!   node of the cluster (what a plain `PUBLISH` does there).
//! - **Slots move** (a failover, a resharding): redis-rs moves the node's
//!   subscriptions to the new owner when it refreshes its slot map, and
//!   Redis itself drops a shard channel's subscribers when its slot leaves
//!   a primary (an unsolicited `sunsubscribe`): the node then subscribes
//!   again. Every confirmed subscription (`ssubscribe`) is followed by a read
//!   of the channel's head, so what was published while the node was not
//!   subscribed is read from the stream: nothing is lost.
//! - **Two tasks**: one handles what the cluster pushes (messages,
//!   confirmations, dropped subscriptions), the other subscribes and
//!   unsubscribes, one command at a time and in order: a subscription
//!   waiting on a shard that is down never holds up the other shards'
//!   messages.
//! - **Rollbacks, per shard**: a script records the `run_id` of the primary
//!   it runs on, so a failover (or a restart) of one shard gives new epochs
//!   to that shard's channels only, on their next publish or read: only
//!   they may have lost acknowledged writes (replication is per shard). The
//!   other shards' histories are intact, and a reset there would be a false
//!   alarm. A slot migrated to another primary rotates its channels too (a
//!   moved key looks like a restored one): one reset each, never silence.
//! - **Health, per shard**: each probe round publishes one probe on a
//!   channel in a slot of each primary (a hash tag found for that slot)
//!   and counts as returned when every copy came back: `/healthz` fails when
//!   any shard does not deliver. A change of the set of primaries marks the
//!   node unhealthy until a probe went through the new set.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

use push_core::{Backoff, ChannelName, Error};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{
    Cmd, ErrorKind, ProtocolVersion, PushInfo, PushKind, RedisError, RedisResult, ScriptInvocation,
    ServerErrorKind, Value,
};
use tokio::sync::Notify;
use tokio::sync::mpsc::{self, UnboundedReceiver};

use crate::connection::{FIRST_DELAY, Failure};
use crate::health::Health;
use crate::pubsub::Control;
use crate::{Inner, RedisHubConfig};

/// Hash slots of a Redis Cluster.
const SLOTS: u16 = 16_384;
/// Probe rounds remembered until every shard's copy came back.
const ROUNDS: usize = 32;
/// Attempts redis-rs makes at one command across redirections and
/// reconnections, before the hub sees it fail.
const RETRIES: u32 = 6;
/// Attempts at one command while the cluster says it is in transition
/// (waits of 50, 100, 200 ms between them).
const TRANSITION_ATTEMPTS: u32 = 4;

/// The command connection to the cluster, and the per-shard probes.
pub(crate) struct ClusterLink {
    connection: ClusterConnection,
    health: Arc<Health>,
    response_timeout: Duration,
    probes: Arc<Probes>,
}

impl std::fmt::Debug for ClusterLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterLink").finish_non_exhaustive()
    }
}

/// The Pub/Sub side: its own cluster connection, whose pushes (sharded
/// messages, subscription confirmations, disconnections) come on `pushes`.
pub(crate) struct Listener {
    connection: ClusterConnection,
    pushes: UnboundedReceiver<PushInfo>,
    probes: Arc<Probes>,
}

/// The probe channels (one per primary) and the rounds under way.
#[derive(Debug, Default)]
struct Probes {
    state: Mutex<ProbeState>,
    /// The set of probe channels changed, or one has no subscriber: the
    /// listener subscribes again.
    changed: Notify,
}

#[derive(Debug, Default)]
struct ProbeState {
    /// The probe channels now, one in a slot of each primary.
    channels: BTreeSet<String>,
    /// The primaries (`host:port`) the last round found.
    primaries: BTreeSet<String>,
    /// A shard may have lost the node's subscriptions (a primary changed,
    /// or a probe found no subscriber): subscribe to every followed channel
    /// again.
    resubscribe: bool,
    /// Probe number and the channels whose copy has not come back yet.
    rounds: VecDeque<(u64, BTreeSet<String>)>,
}

impl Probes {
    fn lock(&self) -> MutexGuard<'_, ProbeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A copy of probe `number` came back on `channel`: whether that was the
    /// last one of its round.
    fn back(&self, channel: &str, number: u64) -> bool {
        let mut state = self.lock();
        let Some(index) = state.rounds.iter().position(|(n, _)| *n == number) else {
            return false;
        };
        let pending = &mut state.rounds[index].1;
        pending.remove(channel);
        if !pending.is_empty() {
            return false;
        }
        // Older rounds will not complete now: a shard answers in order.
        state.rounds.drain(..=index);
        true
    }
}

/// Connects to the cluster: the command connection and the Pub/Sub one.
///
/// # Errors
/// [`Error::Unavailable`] when no seed answers.
pub(crate) async fn connect(
    config: &RedisHubConfig,
    health: Arc<Health>,
) -> Result<(ClusterLink, Listener), Error> {
    let builder = || {
        ClusterClientBuilder::new(config.seeds())
            .use_protocol(ProtocolVersion::RESP3)
            .connection_timeout(config.connection_timeout)
            .response_timeout(config.response_timeout)
            // Room for redirections and a reconnection within one command.
            .overall_response_timeout(Some(
                config
                    .response_timeout
                    .saturating_add(config.connection_timeout),
            ))
            .retries(RETRIES)
            .min_retry_wait(millis(FIRST_DELAY))
            .max_retry_wait(millis(config.max_reconnect_delay).max(millis(FIRST_DELAY) + 1))
    };
    let unavailable =
        |err: RedisError| Error::unavailable(format!("connecting to the Redis Cluster: {err}"));
    let connection = builder()
        .build()
        .map_err(unavailable)?
        .get_async_connection()
        .await
        .map_err(unavailable)?;
    let (sender, pushes) = mpsc::unbounded_channel();
    let subscriber = builder()
        .push_sender(sender)
        .build()
        .map_err(unavailable)?
        .get_async_connection()
        .await
        .map_err(unavailable)?;
    let probes = Arc::new(Probes::default());
    Ok((
        ClusterLink {
            connection,
            health,
            response_timeout: config.response_timeout,
            probes: probes.clone(),
        },
        Listener {
            connection: subscriber,
            pushes,
            probes,
        },
    ))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl ClusterLink {
    /// Runs a script on the primary owning its keys' slot (redis-rs follows
    /// `MOVED`/`ASK`, waits out `TRYAGAIN` during a migration, and retries
    /// on another connection after a failover: our scripts may run twice).
    pub(crate) async fn script(&self, invocation: &ScriptInvocation<'_>) -> Result<Value, Failure> {
        let result = self.patiently(Request::Script(invocation)).await;
        self.outcome(result)
    }

    /// Runs a plain command, routed by its key.
    pub(crate) async fn command(&self, command: &Cmd) -> Result<Value, Failure> {
        let result = self.patiently(Request::Command(command)).await;
        self.outcome(result)
    }

    /// Runs `request`, again after a short wait while the cluster answers
    /// that it is in transition (a redirection redis-rs gave up following
    /// while nodes disagree on a moved slot, `TRYAGAIN` past its retries, a
    /// cluster down, or a replica during a failover): nothing ran then.
    async fn patiently(&self, request: Request<'_, '_>) -> RedisResult<Value> {
        let mut wait = FIRST_DELAY;
        let mut attempt = 1;
        loop {
            let mut connection = self.connection.clone();
            let result = match request {
                Request::Script(invocation) => invocation.invoke_async(&mut connection).await,
                Request::Command(command) => command.query_async(&mut connection).await,
            };
            match result {
                Err(err) if attempt < TRANSITION_ATTEMPTS && in_transition(&err) => {
                    tracing::debug!(%err, "the cluster is in transition; trying again");
                    tokio::time::sleep(wait).await;
                    wait = wait.saturating_mul(2);
                    attempt += 1;
                }
                done => return done,
            }
        }
    }

    fn outcome(&self, result: RedisResult<Value>) -> Result<Value, Failure> {
        match result {
            Ok(value) => {
                self.health.answered(Ok(()));
                Ok(value)
            }
            Err(err) => {
                let failure = Failure::of(&err, self.response_timeout, false);
                if failure.answered() {
                    self.health.answered(Ok(()));
                } else {
                    self.health.answered(Err(failure.reason()));
                }
                Err(failure)
            }
        }
    }

    /// One probe round: probe `number` published on a channel of each
    /// primary's (`base` plus a hash tag of a slot it owns). Whether every
    /// primary took it.
    pub(crate) async fn probe(&self, base: &str, number: u64) -> bool {
        let primaries = match self.primaries().await {
            Ok(primaries) if !primaries.is_empty() => primaries,
            Ok(_) => {
                self.health
                    .answered(Err("the cluster reports no primary owning a slot"));
                return false;
            }
            Err(failure) => {
                tracing::warn!(
                    reason = failure.reason(),
                    "asking the cluster for its slots failed"
                );
                return false;
            }
        };
        // Where the node's connections go: the set of primaries. A change
        // (a failover) is unhealthy until a probe went through the new set.
        let addresses: Vec<&str> = primaries.keys().map(String::as_str).collect();
        self.health
            .arrived(&format!("cluster primaries {}", addresses.join(",")));
        let channels: BTreeSet<String> = primaries
            .values()
            .map(|slot| format!("{base}{{{}}}", tag(*slot)))
            .collect();
        {
            let mut state = self.probes.lock();
            let now: BTreeSet<String> = primaries.keys().cloned().collect();
            if !state.primaries.is_empty() && state.primaries != now {
                // A failover: the new primary's connection holds none of
                // the node's subscriptions (redis-rs moves them only when
                // its slot map catches up; do not count on it).
                state.resubscribe = true;
                self.probes.changed.notify_one();
            }
            state.primaries = now;
            if state.channels != channels {
                state.channels = channels.clone();
                self.probes.changed.notify_one();
            }
            state.rounds.push_back((number, channels.clone()));
            if state.rounds.len() > ROUNDS {
                state.rounds.pop_front();
            }
        }
        let mut published = true;
        for channel in &channels {
            let mut publish = redis::cmd("SPUBLISH");
            publish.arg(channel).arg(number);
            match self.command(&publish).await {
                Ok(Value::Int(receivers)) => {
                    if receivers == 0 {
                        // Not subscribed there (yet, or any more): neither,
                        // perhaps, to the channels on that shard.
                        self.probes.lock().resubscribe = true;
                        self.probes.changed.notify_one();
                    }
                }
                _ => published = false,
            }
        }
        published
    }

    /// The primaries owning slots (`host:port`) and the first slot of each,
    /// as `CLUSTER SLOTS` tells.
    async fn primaries(&self) -> Result<BTreeMap<String, u16>, Failure> {
        let mut connection = self.connection.clone();
        let result = connection
            .route_command(
                redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await;
        let answer = self.outcome(result)?;
        let Value::Array(ranges) = answer else {
            return Err(Failure::bad_answer("CLUSTER SLOTS is no array"));
        };
        let mut primaries = BTreeMap::new();
        for range in ranges {
            let Value::Array(fields) = range else {
                continue;
            };
            let (Some(Value::Int(start)), Some(Value::Array(primary))) =
                (fields.first(), fields.get(2))
            else {
                continue;
            };
            let (Some(host), Some(Value::Int(port))) = (
                primary.first().and_then(crate::entries::bytes_of),
                primary.get(1),
            ) else {
                continue;
            };
            let Ok(slot) = u16::try_from(*start) else {
                continue;
            };
            let address = format!("{}:{port}", String::from_utf8_lossy(&host));
            let first = primaries.entry(address).or_insert(slot);
            *first = (*first).min(slot);
        }
        Ok(primaries)
    }
}

/// What [`ClusterLink::patiently`] runs.
#[derive(Clone, Copy)]
enum Request<'a, 'b> {
    Script(&'a ScriptInvocation<'b>),
    Command(&'a Cmd),
}

/// Whether `err` says the cluster is changing hands, and nothing ran.
fn in_transition(err: &RedisError) -> bool {
    matches!(
        err.kind(),
        ErrorKind::Server(
            ServerErrorKind::Moved
                | ServerErrorKind::Ask
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::ReadOnly
                | ServerErrorKind::MasterDown
        )
    )
}

/// The Redis Cluster hash slot of `key` (CRC16/XMODEM of the key, or of
/// its `{hash tag}`, modulo 16384).
pub(crate) fn slot(key: &[u8]) -> u16 {
    let key = match key.iter().position(|b| *b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|b| *b == b'}') {
            Some(0) | None => key,
            Some(len) => &key[open + 1..open + 1 + len],
        },
        None => key,
    };
    let mut crc: u16 = 0;
    for &byte in key {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 == 0 {
                crc << 1
            } else {
                (crc << 1) ^ 0x1021
            };
        }
    }
    crc % SLOTS
}

/// A short hash tag (a decimal number) that hashes to `slot`.
fn tag(wanted: u16) -> u32 {
    static TAGS: OnceLock<Vec<u32>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        let mut tags = vec![u32::MAX; usize::from(SLOTS)];
        let mut missing = SLOTS;
        let mut n = 0u32;
        while missing > 0 && n < u32::MAX {
            let entry = &mut tags[usize::from(slot(n.to_string().as_bytes()))];
            if *entry == u32::MAX {
                *entry = n;
                missing -= 1;
            }
            n += 1;
        }
        tags
    });
    tags.get(usize::from(wanted)).copied().unwrap_or(0)
}

/// The Pub/Sub task on a cluster: runs until the hub is gone.
pub(crate) async fn listen(
    listener: Listener,
    hub: Weak<Inner>,
    mut control: UnboundedReceiver<Control>,
) {
    let Listener {
        mut connection,
        pushes,
        probes,
    } = listener;
    let Some(max_delay) = hub.upgrade().map(|inner| inner.config.max_reconnect_delay) else {
        return;
    };
    // Pushes are handled by a task of their own, so that a subscription
    // waiting on a shard that is down never holds up the messages of the
    // others; subscriptions stay here, one at a time, in order.
    let (again, mut dropped) = mpsc::unbounded_channel();
    tokio::spawn(receive(pushes, hub.clone(), probes.clone(), again));
    // Shard channels whose subscription failed: tried again after a wait.
    let mut failed: BTreeSet<String> = BTreeSet::new();
    let mut backoff = Backoff::new(FIRST_DELAY, max_delay);
    let mut retry_at: Option<tokio::time::Instant> = None;
    loop {
        let retry = async {
            match retry_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            command = control.recv() => {
                let Some(command) = command else { return };
                let Some(inner) = hub.upgrade() else { return };
                match command {
                    Control::Follow(local) => {
                        let channel = inner.notify_channel(&local.name);
                        if !subscribe(&mut connection, &channel).await {
                            failed.insert(channel);
                        }
                        // The confirmation (a push) makes the node learn
                        // the channel's head.
                    }
                    // Followed again meanwhile: stay subscribed.
                    Control::Unfollow(name) if inner.local(&name).is_some() => {}
                    Control::Unfollow(name) => {
                        let channel = inner.notify_channel(&name);
                        failed.remove(&channel);
                        if let Err(err) = connection.sunsubscribe(&channel).await {
                            tracing::debug!(%channel, %err, "SUNSUBSCRIBE failed");
                        }
                    }
                    Control::Reconnect => {
                        // Probes do not come back: subscribe to everything
                        // again (a no-op where the subscription stands);
                        // each confirmation brings a catch-up.
                        tracing::warn!("no Pub/Sub probe came back in time; subscribing again");
                        failed.extend(inner.followed().iter().map(|l| inner.notify_channel(&l.name)));
                        failed.extend(probes.lock().channels.iter().cloned());
                        retry_at = Some(tokio::time::Instant::now());
                    }
                }
            }
            () = probes.changed.notified() => {
                let (mut channels, all) = {
                    let mut state = probes.lock();
                    let channels: Vec<String> = state.channels.iter().cloned().collect();
                    (channels, std::mem::take(&mut state.resubscribe))
                };
                if all {
                    // Each confirmation brings a catch-up from the stream.
                    let Some(inner) = hub.upgrade() else { return };
                    tracing::info!("the cluster's primaries changed; subscribing to every channel again");
                    channels.extend(inner.followed().iter().map(|l| inner.notify_channel(&l.name)));
                }
                for channel in channels {
                    if !subscribe(&mut connection, &channel).await {
                        failed.insert(channel);
                    }
                }
            }
            () = retry => {
                retry_at = None;
                let Some(inner) = hub.upgrade() else { return };
                let wanted = |channel: &String| {
                    probes.lock().channels.contains(channel)
                        || inner.channel_of(channel).is_some_and(|name| inner.local(&name).is_some())
                };
                let again: Vec<String> = std::mem::take(&mut failed).into_iter().filter(wanted).collect();
                for channel in again {
                    if !subscribe(&mut connection, &channel).await {
                        failed.insert(channel);
                    }
                }
                if failed.is_empty() {
                    backoff.reset();
                }
            }
            channel = dropped.recv() => {
                // The cluster dropped a subscription the node still wants.
                let Some(channel) = channel else { return };
                failed.insert(channel);
                retry_at = Some(tokio::time::Instant::now());
            }
        }
        if !failed.is_empty() && retry_at.is_none() {
            retry_at = Some(tokio::time::Instant::now() + backoff.next_delay());
        }
    }
}

/// The push task: sharded messages, subscription confirmations (each a
/// catch-up), subscriptions the cluster dropped (sent back on `again`).
/// Ends with the hub, or the cluster connection.
async fn receive(
    mut pushes: UnboundedReceiver<PushInfo>,
    hub: Weak<Inner>,
    probes: Arc<Probes>,
    again: mpsc::UnboundedSender<String>,
) {
    while let Some(push) = pushes.recv().await {
        let Some(inner) = hub.upgrade() else { return };
        if let Some(channel) = pushed(&inner, &probes, &push)
            && again.send(channel).is_err()
        {
            return;
        }
    }
}

/// `SSUBSCRIBE channel` (one at a time: channels of several slots in one
/// command would be refused); whether it succeeded.
async fn subscribe(connection: &mut ClusterConnection, channel: &str) -> bool {
    match connection.ssubscribe(channel).await {
        Ok(()) => true,
        Err(err) => {
            tracing::warn!(%channel, %err, "SSUBSCRIBE failed; retrying");
            false
        }
    }
}

/// One push from the cluster; a channel to subscribe to again, if the
/// server dropped the node's subscription to it.
fn pushed(inner: &Arc<Inner>, probes: &Probes, push: &PushInfo) -> Option<String> {
    let text = |value: Option<&Value>| {
        value
            .and_then(crate::entries::bytes_of)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
    };
    match push.kind {
        PushKind::SMessage => {
            let channel = text(push.data.first())?;
            let payload = push.data.get(1).and_then(crate::entries::bytes_of)?;
            if channel.starts_with(&inner.probe_channel()) {
                let number = std::str::from_utf8(&payload).ok()?.parse::<u64>().ok()?;
                if probes.back(&channel, number) {
                    inner.health.probe_back(&payload);
                }
            } else {
                crate::pubsub::notified(inner, &channel, &payload);
            }
            None
        }
        PushKind::SSubscribe => {
            // Subscribed (first, again after a reconnection, or where the
            // slot moved to): what was published meanwhile is in the
            // stream; the node learns the head, its subscribers catch up.
            let channel = text(push.data.first())?;
            let name = inner.channel_of(&channel)?;
            let local = inner.local(&name)?;
            let inner = inner.clone();
            tokio::spawn(async move { crate::pubsub::learn(&inner, &local).await });
            None
        }
        PushKind::SUnsubscribe => {
            // Not asked for while still followed: Redis dropped it (its slot
            // left that primary). Subscribe again, where the slot is now.
            let channel = text(push.data.first())?;
            let wanted = probes.lock().channels.contains(&channel)
                || inner
                    .channel_of(&channel)
                    .is_some_and(|name: ChannelName| inner.local(&name).is_some());
            if wanted {
                tracing::debug!(%channel, "the cluster dropped a subscription; subscribing again");
                Some(channel)
            } else {
                None
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{slot, tag};

    #[test]
    fn slots_are_redis_cluster_slots() {
        // CRC16/XMODEM("123456789") = 0x31C3.
        assert_eq!(slot(b"123456789"), 0x31C3);
        // Hash tags: only what is inside the first {…} counts.
        assert_eq!(slot(b"push:{news}:meta"), slot(b"news"));
        assert_eq!(slot(b"push:{news}"), slot(b"push:{news}:log"));
        // An empty tag means the whole key.
        assert_eq!(slot(b"a{}b"), slot(b"a{}b"));
        assert_ne!(slot(b"a{}b"), slot(b""));
        // Redis says: CLUSTER KEYSLOT foo = 12182, somekey = 11058.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"somekey"), 11058);
    }

    #[test]
    fn every_slot_has_a_tag() {
        for s in [0u16, 1, 5000, 16383] {
            assert_eq!(slot(tag(s).to_string().as_bytes()), s);
        }
    }
}
