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
//! - **Failures are typed**: a publish that did not reach Redis fails with
//!   [`Error::Unavailable`] (push-server answers `503`); it is never reported
//!   as published. Subscribers wait through an outage and resume.
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

mod local;
mod pubsub;
mod scripts;
mod subscription;

use std::collections::HashMap;
use std::hash::BuildHasher as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use push_core::{
    Batch, ChannelName, Cursor, Epoch, Error, EventName, Hub, Message, Publication, Span, Start,
    Timestamp,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Value};
use tokio::sync::mpsc;

use crate::local::{CacheBudget, LocalChannel};
use crate::pubsub::Control;
use crate::scripts::Scripts;
pub use crate::subscription::RedisSubscription;

/// The most messages one read asks Redis for.
const MAX_READ: usize = 1 << 20;
/// Attempts of one read whose history keeps moving under it.
const READ_ATTEMPTS: usize = 5;

/// How a [`RedisHub`] talks to Redis and keeps history.
///
/// ```
/// use std::time::Duration;
/// use push_redis::RedisHubConfig;
///
/// let config = RedisHubConfig::new("redis://127.0.0.1:6379/").with_max_messages(500);
/// assert_eq!(config.idle_ttl, Duration::from_secs(24 * 60 * 60));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RedisHubConfig {
    /// The Redis URL (`redis://[:password@]host:port/db`).
    pub url: String,
    /// The prefix of every key and Pub/Sub channel (default `push`).
    pub prefix: String,
    /// Messages each channel retains, approximately (`MAXLEN ~`: Redis trims
    /// whole nodes, so a few more may stay; default 1,000).
    pub max_messages: usize,
    /// The largest message accepted, data plus event name (default 256 KiB).
    pub max_message_bytes: usize,
    /// A channel's keys expire after this long without a publish or a read
    /// (default 24 hours); a client returning later gets a reset.
    pub idle_ttl: Duration,
    /// Recent messages each node keeps per channel it serves, shared by its
    /// subscribers (default 1,000); older ones are read from Redis.
    pub node_cache: usize,
    /// The bytes the node's caches may hold together (default 256 MiB;
    /// each message counted as twice its data, for the encodings transports
    /// cache on it, plus its bookkeeping). Past it a cache drops its oldest
    /// messages; subscribers then read those from Redis.
    pub node_cache_bytes: usize,
    /// How long one command may take before it fails (default 2 s). Only
    /// non-blocking commands run on the shared connection.
    pub response_timeout: Duration,
    /// How long connecting may take (default 2 s).
    pub connection_timeout: Duration,
    /// The longest wait between reconnection attempts (default 2 s; they
    /// start at 50 ms and double).
    pub max_reconnect_delay: Duration,
}

impl RedisHubConfig {
    /// The defaults, for the Redis at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        RedisHubConfig {
            url: url.into(),
            prefix: "push".into(),
            max_messages: 1_000,
            max_message_bytes: 256 << 10,
            idle_ttl: Duration::from_secs(24 * 60 * 60),
            node_cache: 1_000,
            node_cache_bytes: 256 << 20,
            response_timeout: Duration::from_secs(2),
            connection_timeout: Duration::from_secs(2),
            max_reconnect_delay: Duration::from_secs(2),
        }
    }

    /// Sets [`prefix`](Self::prefix).
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets [`max_messages`](Self::max_messages) (at least 1).
    #[must_use]
    pub fn with_max_messages(mut self, max: usize) -> Self {
        self.max_messages = max.max(1);
        self
    }

    /// Sets [`max_message_bytes`](Self::max_message_bytes).
    #[must_use]
    pub fn with_max_message_bytes(mut self, max: usize) -> Self {
        self.max_message_bytes = max;
        self
    }

    /// Sets [`idle_ttl`](Self::idle_ttl) (at least 1 s).
    #[must_use]
    pub fn with_idle_ttl(mut self, ttl: Duration) -> Self {
        self.idle_ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// Sets [`node_cache`](Self::node_cache) (at least 1).
    #[must_use]
    pub fn with_node_cache(mut self, messages: usize) -> Self {
        self.node_cache = messages.max(1);
        self
    }

    /// Sets [`node_cache_bytes`](Self::node_cache_bytes).
    #[must_use]
    pub fn with_node_cache_bytes(mut self, bytes: usize) -> Self {
        self.node_cache_bytes = bytes;
        self
    }
}

/// The hub on Redis. Cheap to clone: clones share the connections and the
/// node's Pub/Sub subscription.
#[derive(Clone, Debug)]
pub struct RedisHub {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    config: RedisHubConfig,
    commands: ConnectionManager,
    scripts: Scripts,
    /// Channels with local subscribers, and how many.
    channels: Mutex<HashMap<ChannelName, (Arc<LocalChannel>, usize)>>,
    /// What the caches of those channels hold together.
    cache_budget: Arc<CacheBudget>,
    control: mpsc::UnboundedSender<Control>,
    next_subscriber: AtomicU64,
    epochs: AtomicU64,
    seed: u64,
}

impl RedisHub {
    /// Connects to Redis (the command connection and the Pub/Sub one).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when Redis cannot be reached (or the URL is
    /// bad), [`Error::InvalidConfig`] for settings out of range.
    pub async fn connect(config: RedisHubConfig) -> Result<RedisHub, Error> {
        if config.max_message_bytes == 0 {
            return Err(Error::InvalidConfig {
                reason: "max_message_bytes must be at least 1",
            });
        }
        let client = Client::open(config.url.as_str()).map_err(Error::unavailable)?;
        let manager = ConnectionManagerConfig::new()
            .set_response_timeout(Some(config.response_timeout))
            .set_connection_timeout(Some(config.connection_timeout))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(config.max_reconnect_delay)
            .set_number_of_retries(2);
        let commands = client
            .get_connection_manager_with_config(manager)
            .await
            .map_err(Error::unavailable)?;
        let (control, receiver) = mpsc::unbounded_channel();
        let seed = std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64);
        let inner = Arc::new(Inner {
            cache_budget: CacheBudget::new(config.node_cache_bytes),
            config,
            commands,
            scripts: Scripts::new(),
            channels: Mutex::new(HashMap::new()),
            control,
            next_subscriber: AtomicU64::new(0),
            epochs: AtomicU64::new(0),
            seed,
        });
        // The task holds the hub weakly: it ends with the last clone.
        tokio::spawn(pubsub::run(client, Arc::downgrade(&inner), receiver));
        Ok(RedisHub { inner })
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

    pub(crate) fn notify_channel(&self, channel: &ChannelName) -> String {
        format!("{}:{channel}", self.config.prefix)
    }

    /// The channel a Pub/Sub channel name stands for.
    pub(crate) fn channel_of(&self, notify_channel: &str) -> Option<ChannelName> {
        notify_channel
            .strip_prefix(self.config.prefix.as_str())?
            .strip_prefix(':')?
            .parse()
            .ok()
    }

    /// A fresh epoch (see [`Epoch::derived`]), offered to Redis whenever a
    /// channel might have none yet.
    fn fresh_epoch(&self) -> u64 {
        Epoch::derived(self.seed, self.epochs.fetch_add(1, Ordering::Relaxed)).get()
    }

    fn ttl_millis(&self) -> u64 {
        u64::try_from(self.config.idle_ttl.as_millis()).unwrap_or(u64::MAX)
    }

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
        let (event, data) = publication.into_parts();
        let now = Timestamp::from(SystemTime::now()).as_unix_millis();
        let mut connection = self.commands.clone();
        let (epoch, number, _time): (String, u64, u64) = self
            .scripts
            .publish
            .key(self.meta_key(channel))
            .key(self.log_key(channel))
            .arg(self.fresh_epoch().to_string())
            .arg(self.config.max_messages)
            .arg(self.ttl_millis())
            .arg(now)
            .arg(event.as_ref().map_or("", EventName::as_str))
            .arg(data.as_ref())
            .arg(self.notify_channel(channel))
            .invoke_async(&mut connection)
            .await
            .map_err(Error::unavailable)?;
        Ok(Span {
            epoch: parse_epoch(&epoch)?,
            first: 1,
            head: number,
        }
        .head_cursor())
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
        let mut connection = self.commands.clone();
        let (epoch, head, first, entries): (String, u64, u64, Value) = self
            .scripts
            .read
            .key(self.meta_key(channel))
            .key(self.log_key(channel))
            .arg(self.fresh_epoch().to_string())
            .arg(self.ttl_millis())
            .arg(from)
            .arg(limit)
            .invoke_async(&mut connection)
            .await
            .map_err(Error::unavailable)?;
        let span = Span {
            epoch: parse_epoch(&epoch)?,
            first: first.min(head + 1),
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
            Start::Live => u64::MAX,
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
}

fn parse_epoch(text: &str) -> Result<Epoch, Error> {
    text.parse::<u64>()
        .map(Epoch::new)
        .map_err(|_| Error::invalid_response(format!("not an epoch: {text:?}")))
}

/// A notification or a stream entry as a message.
pub(crate) fn message(
    channel: &ChannelName,
    span_epoch: Epoch,
    number: u64,
    event: &[u8],
    time: u64,
    data: Bytes,
) -> Result<Message, Error> {
    let event = if event.is_empty() {
        None
    } else {
        let text = std::str::from_utf8(event)
            .map_err(|_| Error::invalid_response("an event name is not UTF-8"))?;
        Some(text.parse::<EventName>()?)
    };
    let cursor = Span {
        epoch: span_epoch,
        first: 1,
        head: number,
    }
    .head_cursor();
    Ok(Message::new(
        channel.clone(),
        cursor,
        event,
        data,
        Timestamp::from_unix_millis(time),
    ))
}

/// `XRANGE` entries (`[[id, [field, value, …]], …]`) as messages.
fn parse_entries(
    channel: &ChannelName,
    epoch: Epoch,
    entries: Value,
) -> Result<Vec<Arc<Message>>, Error> {
    let bad = |what: &str| Error::invalid_response(format!("unexpected stream entry: {what}"));
    let Value::Array(entries) = entries else {
        return Err(bad("not an array"));
    };
    let mut messages = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(parts) = entry else {
            return Err(bad("an entry is not an array"));
        };
        let [id, Value::Array(fields)] = parts.as_slice() else {
            return Err(bad("an entry is not [id, fields]"));
        };
        let id = bytes_of(id).ok_or_else(|| bad("id"))?;
        let number = std::str::from_utf8(&id)
            .ok()
            .and_then(|id| id.strip_suffix("-0"))
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| bad("id is not N-0"))?;
        let (mut event, mut time, mut data) = (Bytes::new(), 0, Bytes::new());
        for pair in fields.chunks(2) {
            let [name, value] = pair else {
                return Err(bad("odd field list"));
            };
            let value = bytes_of(value).ok_or_else(|| bad("a field value"))?;
            match bytes_of(name).as_deref() {
                Some(b"e") => event = value,
                Some(b"t") => {
                    time = std::str::from_utf8(&value)
                        .ok()
                        .and_then(|t| t.parse().ok())
                        .ok_or_else(|| bad("time"))?;
                }
                Some(b"d") => data = value,
                _ => {}
            }
        }
        messages.push(Arc::new(message(
            channel, epoch, number, &event, time, data,
        )?));
    }
    Ok(messages)
}

fn bytes_of(value: &Value) -> Option<Bytes> {
    match value {
        Value::BulkString(bytes) => Some(Bytes::copy_from_slice(bytes)),
        Value::SimpleString(text) => Some(Bytes::copy_from_slice(text.as_bytes())),
        Value::Int(n) => Some(Bytes::from(n.to_string())),
        _ => None,
    }
}
