//! **push-redis**: the push [`Hub`] on Redis, so that several push nodes
//! behind a load balancer share channels, history and cursors: a client may
//! poll, long-poll, reconnect its event stream or its WebSocket to any node
//! and still get every message once, in order.
//!
//! - **History**: per channel a Redis Stream, message number N at entry
//!   `N-0`, trimmed with `MAXLEN ~`; an epoch and the head in a hash beside
//!   it. Publishing and reading are each one Lua script, so every node hands
//!   out and understands the same cursors (`EPOCH.N`), and a gap's size is
//!   exact. Both keys expire after the channel's idle time; a channel whose
//!   keys are gone (expired, deleted, Redis flushed) starts a new epoch, and
//!   a client resuming with an old cursor gets a reset, never silence.
//! - **Live fan-out**: each node holds one Pub/Sub connection, subscribed to
//!   a channel while the node has local subscribers to it. A notification
//!   carries the whole message; the node decodes it once and every local
//!   subscriber shares it (the same encode-once bytes as the memory hub).
//! - **Nothing lost**: Pub/Sub is at-most-once, so it is only the fast
//!   path. A subscriber that the node's recent messages cannot serve (it is
//!   behind, or notifications were lost while the Pub/Sub connection was
//!   down) reads from the stream; after reconnecting, the node asks Redis
//!   for each channel's head and wakes its subscribers, who catch up from
//!   the stream before going live again.
//! - **Rollbacks are told**: Redis may come back with older data than it
//!   acknowledged (restarted from an older snapshot, a lagging replica
//!   promoted). Each channel records the `run_id` of the Redis process that
//!   last wrote it, and a script finding another gives the channel a new
//!   epoch first: no cursor is handed out twice, and every subscriber and
//!   every client with an older cursor gets a reset (the price: one reset
//!   per channel after any Redis restart or failover). See the `scripts`
//!   module and docs/scaling.md.
//! - **Idempotent publishing**: a publication with a key
//!   ([`Publication::with_key`]) is stored at most once per
//!   [`idempotency_window`](RedisHubConfig::idempotency_window); a retry
//!   answers the first cursor. Every publish carries a key (a random one of
//!   the node's when the caller gave none), so that the node retries once,
//!   safely, on a fresh connection when the connection broke under it.
//! - **Failures are typed**: a publish fails with [`Error::Unavailable`]
//!   only when it certainly did not happen (no connection, Redis refused),
//!   with [`Error::OutcomeUnknown`] when it may have (no answer in time, the
//!   connection broke twice); the message says why. The command connection
//!   is replaced as soon as it dies, not when a request finds it dead.
//!   Subscribers wait through an outage and resume.
//! - **Health**: [`RedisHub::health`] says whether Redis answers and whether
//!   the node's Pub/Sub connection still receives (a probe published through
//!   the command connection comes back on it every
//!   [`probe_interval`](RedisHubConfig::probe_interval)).
//!
//! - **Redis Cluster**: with [`RedisHubConfig::cluster`] the hub runs on a
//!   cluster: each channel's keys share a hash tag (one slot, so its
//!   scripts stay atomic), its notifications are sharded (`SPUBLISH`), and
//!   the node subscribes (`SSUBSCRIBE`) on the shard owning each channel it
//!   follows, again wherever a slot moves, catching up from the stream
//!   each time (the `cluster` module).
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use push_core::{Hub, Item, Publication, Start};
//! use push_redis::{RedisHub, RedisHubConfig};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let hub = RedisHub::connect(RedisHubConfig::new("redis://127.0.0.1:6379/")).await?;
//! let news = "news".parse()?;
//! let mut subscription = hub.subscribe(&news, Start::Live).await?;
//! hub.publish(&news, Publication::new("hello")).await?;
//! let Some(Item::Message(message)) = subscription.next().await else { unreachable!() };
//! assert_eq!(&message.data()[..], b"hello");
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

mod cluster;
mod config;
mod connection;
mod entries;
mod health;
mod local;
mod presence;
mod pubsub;
mod scripts;
mod sentinel;
mod subscription;

use std::collections::HashMap;
use std::hash::BuildHasher as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use push_core::{
    Batch, ChannelName, ContentKind, Cursor, Epoch, Error, EventName, Hub, Member, Message,
    Presence, PresencePage, PresenceSnapshot, Publication, Span, Start, Timestamp,
};
use redis::Value;
use tokio::sync::mpsc;

pub use crate::config::{RedisHubConfig, SentinelConfig};
use crate::connection::{Connector, Failure, Link};
pub(crate) use crate::entries::{KIND_JSON, message};

/// What starts an ephemeral notification (no stored one starts with `e`: an
/// epoch is digits).
pub(crate) const EPHEMERAL_PREFIX: &[u8] = b"e\n";
use crate::entries::{parse_entries, parse_epoch};
use crate::health::Health;
pub use crate::health::RedisHealth;
use crate::local::{CacheBudget, LocalChannel};
use crate::pubsub::Control;
use crate::scripts::Scripts;
pub use crate::subscription::RedisSubscription;

/// The decoders of what Redis returns, for the fuzz targets in the
/// repository's `fuzz/` crate (docs/fuzzing.md): not part of the API, no
/// semver promise.
#[doc(hidden)]
pub mod __fuzz {
    pub use crate::entries::{Notification, message, notification, parse_entries, parse_epoch};
}

/// The most messages one read asks Redis for.
const MAX_READ: usize = 1 << 20;
/// Attempts of one read whose history keeps moving under it.
const READ_ATTEMPTS: usize = 5;
/// The longest expiry handed to Redis (about 100 years, in ms): longer
/// settings mean "forever", and Redis refuses times past its clock's range.
const MAX_EXPIRY_MS: u64 = 100 * 365 * 24 * 60 * 60 * 1000;

/// The hub on Redis. Cheap to clone: clones share the connections and the
/// node's Pub/Sub subscription.
#[derive(Clone, Debug)]
pub struct RedisHub {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    config: RedisHubConfig,
    /// The command connection.
    link: Arc<Link>,
    scripts: Scripts,
    /// Channels with local subscribers, and how many.
    channels: Mutex<HashMap<ChannelName, (Arc<LocalChannel>, usize)>>,
    /// What the caches of those channels hold together.
    cache_budget: Arc<CacheBudget>,
    control: mpsc::UnboundedSender<Control>,
    health: Arc<Health>,
    next_subscriber: AtomicU64,
    epochs: AtomicU64,
    seed: u64,
    /// This node's name on Redis (its probe channel), random per hub.
    node: String,
    presence: Mutex<presence::LocalPresence>,
    presence_scripts: presence::PresenceScripts,
}

impl RedisHub {
    /// Connects to Redis (the command connection and the Pub/Sub one), and
    /// starts the node's background tasks: the Pub/Sub listener, the
    /// command connection's keeper and the health probe. They end with the
    /// last clone of the hub.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when Redis cannot be reached (or the URL is
    /// bad), [`Error::InvalidConfig`] for settings out of range.
    pub async fn connect(config: RedisHubConfig) -> Result<RedisHub, Error> {
        config.validate()?;
        let health = Health::new(config.probe_timeout);
        let (link, listener) = if config.cluster {
            let (link, listener) = cluster::connect(&config, health.clone()).await?;
            (Link::Cluster(link), Listener::Cluster(listener))
        } else {
            let connector = Arc::new(Connector::new(&config, health.clone())?);
            connector.listen(config.max_reconnect_delay);
            let link = Link::connect(
                connector.clone(),
                health.clone(),
                config.max_reconnect_delay,
            )
            .await?;
            (link, Listener::Single(connector))
        };
        let link = Arc::new(link);
        let (control, receiver) = mpsc::unbounded_channel();
        let seed = std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64);
        let node = format!("{:016x}", Epoch::derived(seed, u64::MAX).get());
        let interval = config.probe_interval;
        let inner = Arc::new(Inner {
            cache_budget: CacheBudget::new(config.node_cache_bytes),
            scripts: Scripts::new(config.cluster),
            presence_scripts: presence::PresenceScripts::new(config.cluster),
            config,
            link,
            channels: Mutex::new(HashMap::new()),
            control,
            health,
            next_subscriber: AtomicU64::new(0),
            epochs: AtomicU64::new(0),
            seed,
            node,
            presence: Mutex::default(),
        });
        // The tasks hold the hub weakly: they end with the last clone.
        match listener {
            Listener::Single(connector) => {
                tokio::spawn(pubsub::run(connector, Arc::downgrade(&inner), receiver));
            }
            Listener::Cluster(listener) => {
                tokio::spawn(cluster::listen(listener, Arc::downgrade(&inner), receiver));
            }
        }
        tokio::spawn(health::run(Arc::downgrade(&inner), interval));
        tokio::spawn(presence::run(Arc::downgrade(&inner)));
        Ok(RedisHub { inner })
    }

    /// Whether this node's Redis paths work, as the health probe last saw
    /// them: Redis answering commands, and probes coming back through the
    /// node's Pub/Sub connection (see [`RedisHealth`]). Cheap: it reads
    /// what the probe recorded.
    pub fn health(&self) -> RedisHealth {
        self.inner.health.report()
    }

    /// The bytes this node's caches of recent messages hold now, as
    /// [`node_cache_bytes`](RedisHubConfig::node_cache_bytes) counts them.
    pub fn cached_bytes(&self) -> usize {
        self.inner.cache_budget.used()
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &RedisHubConfig {
        &self.inner.config
    }

    /// Channels this node follows now (those with local subscribers).
    pub fn followed_channels(&self) -> usize {
        self.inner.lock_channels().len()
    }
}

impl Inner {
    fn lock_channels(&self) -> MutexGuard<'_, HashMap<ChannelName, (Arc<LocalChannel>, usize)>> {
        self.channels.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn meta_key(&self, channel: &ChannelName) -> String {
        format!("{}:{{{channel}}}:meta", self.config.prefix)
    }

    pub(crate) fn log_key(&self, channel: &ChannelName) -> String {
        format!("{}:{{{channel}}}:log", self.config.prefix)
    }

    /// A channel's Pub/Sub channel; on a cluster in the slot of its keys
    /// (the same hash tag), so that the publish script may notify on it.
    pub(crate) fn notify_channel(&self, channel: &ChannelName) -> String {
        if self.config.cluster {
            format!("{}:{{{channel}}}", self.config.prefix)
        } else {
            format!("{}:{channel}", self.config.prefix)
        }
    }

    /// The channel a Pub/Sub channel name stands for.
    pub(crate) fn channel_of(&self, notify_channel: &str) -> Option<ChannelName> {
        let name = notify_channel
            .strip_prefix(self.config.prefix.as_str())?
            .strip_prefix(':')?;
        let name = if self.config.cluster {
            name.strip_prefix('{')?.strip_suffix('}')?
        } else {
            name
        };
        name.parse().ok()
    }

    /// A fresh epoch (see [`Epoch::derived`]), offered to Redis whenever a
    /// channel might have none yet.
    fn fresh_epoch(&self) -> u64 {
        Epoch::derived(self.seed, self.epochs.fetch_add(1, Ordering::Relaxed)).get()
    }

    /// This node's probe channel: not a push channel's (`/` is in no
    /// channel name), so no notification is ever mistaken for a probe.
    pub(crate) fn probe_channel(&self) -> String {
        format!("{}:probe/{}", self.config.prefix, self.node)
    }

    /// The key that remembers a publication's idempotency key.
    fn idempotency_key(&self, channel: &ChannelName, kind: &str, key: &str) -> String {
        format!("{}:{{{channel}}}:{kind}:{key}", self.config.prefix)
    }

    /// A key of the node's own for one publish without a caller's key: 128
    /// random bits, so that it names one publish among all nodes'.
    fn retry_key(&self) -> String {
        let n = self.epochs.fetch_add(1, Ordering::Relaxed);
        let high = Epoch::derived(self.seed ^ 0xa5a5_a5a5_a5a5_a5a5, n).get();
        let low = Epoch::derived(self.seed, n).get();
        format!("{high:016x}{low:016x}")
    }

    fn ttl_millis(&self) -> u64 {
        millis(self.config.idle_ttl)
    }

    /// Publishes: one script, which stores the message under an idempotency
    /// key (the caller's, or one of the node's own for a few seconds) so
    /// that a second attempt after a broken connection is always safe, and
    /// answers the first attempt's cursor if that one got through.
    pub(crate) async fn publish(
        &self,
        channel: &ChannelName,
        publication: Publication,
    ) -> Result<Cursor, Error> {
        let size = publication.size();
        if size > self.config.max_message_bytes {
            return Err(Error::MessageTooLarge {
                size,
                limit: self.config.max_message_bytes,
            });
        }
        if publication.is_ephemeral() {
            return self.publish_ephemeral(channel, publication).await;
        }
        let (key, fingerprint, window) = match publication.key() {
            Some(key) => (
                self.idempotency_key(channel, "key", key.as_str()),
                publication.fingerprint(),
                self.config.idempotency_window,
            ),
            // Only this node retries with it, the same publication: no
            // fingerprint needed.
            None => (
                self.idempotency_key(channel, "auto", &self.retry_key()),
                0,
                self.config.retry_window(),
            ),
        };
        let kind = match publication.kind() {
            ContentKind::Json => KIND_JSON,
            _ => "",
        };
        let (event, data) = publication.into_parts();
        let now = Timestamp::from(SystemTime::now()).as_unix_millis();
        let mut invocation = self.scripts.publish.key(self.meta_key(channel));
        invocation
            .key(self.log_key(channel))
            .key(key)
            .arg(self.fresh_epoch().to_string())
            .arg(self.config.max_messages)
            .arg(self.ttl_millis())
            .arg(now)
            .arg(event.as_ref().map_or("", EventName::as_str))
            .arg(data.as_ref())
            .arg(self.notify_channel(channel))
            .arg(fingerprint.to_string())
            .arg(millis(window))
            .arg(kind);
        let answer = self
            .link
            .script(&invocation)
            .await
            .map_err(Failure::into_write_error)?;
        let (epoch, number, outcome): (String, u64, u8) =
            redis::FromRedisValue::from_redis_value(answer).map_err(|err| {
                Failure::bad_answer(format!("a publish answered {err}")).into_write_error()
            })?;
        if outcome == 2 {
            return Err(Error::IdempotencyKeyReused);
        }
        let epoch = parse_epoch(&epoch).map_err(|_| {
            Failure::bad_answer(format!("a publish answered epoch {epoch:?}")).into_write_error()
        })?;
        Ok(Span {
            epoch,
            first: 1,
            head: number,
        }
        .head_cursor())
    }

    /// An ephemeral publish: one `PUBLISH` of `e \n time \n event \n data`
    /// (after `e \n j \n` for JSON data), never in the stream. Each node
    /// hands it to its local subscribers after the stored messages it has
    /// seen (see [`push_core::EphemeralQueue`]). Answers the head this node
    /// knows (the start of an epoch it has not seen).
    async fn publish_ephemeral(
        &self,
        channel: &ChannelName,
        publication: Publication,
    ) -> Result<Cursor, Error> {
        let kind = publication.kind();
        let (event, data) = publication.into_parts();
        let now = Timestamp::from(SystemTime::now()).as_unix_millis();
        let mut payload = Vec::with_capacity(data.len() + 48);
        payload.extend_from_slice(EPHEMERAL_PREFIX);
        if kind == ContentKind::Json {
            payload.extend_from_slice(KIND_JSON.as_bytes());
            payload.push(b'\n');
        }
        payload.extend_from_slice(format!("{now}\n").as_bytes());
        payload.extend_from_slice(event.as_ref().map_or("", EventName::as_str).as_bytes());
        payload.push(b'\n');
        payload.extend_from_slice(&data);
        // Sharded on a cluster, as the scripts' notifications are.
        let mut command = redis::cmd(if self.config.cluster {
            "SPUBLISH"
        } else {
            "PUBLISH"
        });
        command.arg(self.notify_channel(channel)).arg(payload);
        // Nothing is stored, so a retry could deliver it twice: one attempt.
        self.link
            .command(&command)
            .await
            .map_err(Failure::into_write_error)?;
        Ok(self.local(channel).map_or(
            Cursor::new(Epoch::new(0), push_core::Position::new(0, 0)),
            |local| local.lock().head_cursor(),
        ))
    }

    /// One read: the channel's span and up to `limit` messages from number
    /// `from` on.
    pub(crate) async fn read_from(
        &self,
        channel: &ChannelName,
        from: u64,
        limit: usize,
    ) -> Result<(Span, Vec<Arc<Message>>), Error> {
        // Redis takes a COUNT up to i64::MAX; a batch this large is more than
        // any history holds anyway (`more` says when there is more).
        let limit = limit.min(MAX_READ);
        let mut invocation = self.scripts.read.key(self.meta_key(channel));
        invocation
            .key(self.log_key(channel))
            .arg(self.fresh_epoch().to_string())
            .arg(self.ttl_millis())
            .arg(from)
            .arg(limit)
            .arg(self.notify_channel(channel));
        let answer = self
            .link
            .script(&invocation)
            .await
            .map_err(Failure::into_read_error)?;
        let (epoch, head, first, entries): (String, u64, u64, Value) =
            redis::FromRedisValue::from_redis_value(answer)
                .map_err(|err| Error::invalid_response(format!("a read answered {err}")))?;
        let span = Span {
            epoch: parse_epoch(&epoch)?,
            first: first.min(head.saturating_add(1)),
            head,
        };
        let messages = parse_entries(channel, span.epoch, entries)?;
        Ok((span, messages))
    }

    /// A read by the hub's rules: where `start` points, a signal first when
    /// continuity broke, then what is retained, up to `limit`.
    pub(crate) async fn read(
        &self,
        channel: &ChannelName,
        start: Start,
        limit: usize,
    ) -> Result<Batch, Error> {
        // A history that changes between the two reads of one attempt (a new
        // epoch, a trim at the front) is read again; a few times at most.
        for _ in 0..READ_ATTEMPTS {
            if let Some(batch) = self.read_once(channel, start, limit).await? {
                return Ok(batch);
            }
        }
        Err(Error::unavailable(format!(
            "the history of {channel} changed under {READ_ATTEMPTS} reads in a row"
        )))
    }

    /// One attempt at [`read`](Self::read): `None` when the history moved
    /// under it.
    async fn read_once(
        &self,
        channel: &ChannelName,
        start: Start,
        limit: usize,
    ) -> Result<Option<Batch>, Error> {
        // The first round trip learns the span and, in the common case
        // (a cursor of this epoch, still retained), already the messages.
        let guess = match start {
            Start::After(since) => since.position().major().saturating_add(1),
            Start::Earliest => 0,
            // The span decides where the last n begin: learn it first.
            Start::Live | Start::Last(_) => u64::MAX,
        };
        let count = if guess == u64::MAX { 0 } else { limit };
        let (span, mut messages) = self.read_from(channel, guess, count).await?;
        let (mut next, mut signal) = span.resolve(start);
        if let Some(gap) = span.gap(next) {
            signal = Some(push_core::Signal::Gap(gap));
            next = span.first;
        }
        let first_read = messages.first().map(|m| m.cursor().position().major());
        if limit > 0 && next <= span.head && first_read != Some(next) {
            // The guess was wrong (a reset, a gap, `earliest` on a trimmed
            // log): read again from where the rules point.
            let (again, read) = self.read_from(channel, next, limit).await?;
            if again.epoch != span.epoch {
                return Ok(None);
            }
            messages = read;
        }
        messages.retain(|m| (next..=span.head).contains(&m.cursor().position().major()));
        messages.truncate(limit);
        // Messages must run from `next` without holes (a trim between the
        // two reads could cut the front: then the batch is what follows).
        let contiguous = messages
            .iter()
            .enumerate()
            .all(|(i, m)| m.cursor().position().major() == next + i as u64);
        if !contiguous {
            return Ok(None);
        }
        let available = (span.head + 1).saturating_sub(next);
        let taken = messages.len() as u64;
        Ok(Some(Batch::new(
            signal,
            messages,
            span.cursor_at(next + taken - 1),
            taken < available,
        )))
    }

    /// Adds a local subscriber to `channel`: the node follows it.
    fn follow(&self, channel: &ChannelName) -> Arc<LocalChannel> {
        let mut channels = self.lock_channels();
        if let Some((local, count)) = channels.get_mut(channel) {
            *count += 1;
            return local.clone();
        }
        let local = LocalChannel::new(channel.clone(), self.cache_budget.clone());
        channels.insert(channel.clone(), (local.clone(), 1));
        let _ = self.control.send(Control::Follow(local.clone()));
        local
    }

    /// Removes one local subscriber from `channel`.
    pub(crate) fn unfollow(&self, channel: &ChannelName) {
        let mut channels = self.lock_channels();
        if let Some((_, count)) = channels.get_mut(channel) {
            *count -= 1;
            if *count == 0 {
                channels.remove(channel);
                let _ = self.control.send(Control::Unfollow(channel.clone()));
            }
        }
    }

    /// The channels followed now.
    pub(crate) fn followed(&self) -> Vec<Arc<LocalChannel>> {
        self.lock_channels()
            .values()
            .map(|(local, _)| local.clone())
            .collect()
    }

    /// The local channel of `name`, if followed.
    pub(crate) fn local(&self, name: &ChannelName) -> Option<Arc<LocalChannel>> {
        self.lock_channels()
            .get(name)
            .map(|(local, _)| local.clone())
    }
}

/// Where the node's Pub/Sub task listens.
enum Listener {
    /// One Redis, through the connector.
    Single(Arc<Connector>),
    /// A Redis Cluster.
    Cluster(cluster::Listener),
}

/// `duration` in whole milliseconds for Redis: at least 1, at most
/// [`MAX_EXPIRY_MS`].
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_EXPIRY_MS)
}

impl Hub for RedisHub {
    type Subscription = RedisSubscription;

    async fn publish(
        &self,
        channel: &ChannelName,
        publication: Publication,
    ) -> Result<Cursor, Error> {
        self.inner.publish(channel, publication).await
    }

    async fn read(
        &self,
        channel: &ChannelName,
        start: Start,
        limit: usize,
    ) -> Result<Batch, Error> {
        self.inner.read(channel, start, limit).await
    }

    async fn subscribe(
        &self,
        channel: &ChannelName,
        start: Start,
    ) -> Result<RedisSubscription, Error> {
        // Follow first, then read: a message published in between is either
        // in the read or notified (or found by the node's catch-up).
        let local = self.inner.follow(channel);
        let id = self.inner.next_subscriber.fetch_add(1, Ordering::Relaxed);
        let subscription = RedisSubscription::new(self.inner.clone(), local, id);
        let batch = match self.inner.read(channel, start, 0).await {
            Ok(batch) => batch,
            // Dropping the subscription unfollows.
            Err(err) => return Err(err),
        };
        Ok(subscription.starting_at(batch))
    }

    async fn enter(&self, channel: &ChannelName, member: Member) -> Result<Presence, Error> {
        self.inner.enter(channel, member).await
    }

    async fn touch(
        &self,
        channel: &ChannelName,
        key: &str,
        member: Member,
        ttl: Duration,
    ) -> Result<(), Error> {
        self.inner.touch(channel, key, member, ttl).await
    }

    async fn presence(
        &self,
        channel: &ChannelName,
        page: PresencePage,
    ) -> Result<PresenceSnapshot, Error> {
        self.inner.presence(channel, page).await
    }
}
