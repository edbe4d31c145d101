//! Presence across nodes: every connection is a field with a lease in one
//! hash per channel, and a second hash counts each user's connections, so
//! that a user's first connection anywhere is a join and its last a leave.
//!
//! - `PREFIX:{CHANNEL}:presence`: field `NODE:ID` (a streaming connection)
//!   or `L:KEY` (a poller's lease, the same on every node), value
//!   `EXPIRES_MS \n TECHNIQUE \n USER` (`USER` empty when anonymous);
//! - `PREFIX:{CHANNEL}:present`: user → connections.
//!
//! Each node renews its streaming connections' leases every third of
//! [`presence_lease`](crate::RedisHubConfig::presence_lease), and drops the
//! lapsed fields of every channel it serves: so the connections of a node
//! that died leave, with a `push.leave` for each user that had no other,
//! within a lease. Joins and leaves are announced as ephemeral
//! notifications (`e \n j \n TIME \n push.join \n {"user":…,"technique":…}`)
//! by the script that makes them, once, whichever node runs it.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use push_core::{ChannelName, Error, Member, Presence, PresencePage, PresenceSnapshot, Timestamp};
use redis::Script;

use crate::Inner;
use crate::connection::Failure;

/// Enters or renews one field; announces a join (and the leave of
/// another user that held the field before). KEYS: presence, present.
/// ARGV: field, expires (ms), technique, user ('' anonymous), notify
/// channel, now (ms), keys' expiry (ms).
const ENTER: &str = r"
local function announce(kind, user, technique)
  local data = cjson.encode({user = user, technique = technique})
  redis.call('PUBLISH', ARGV[5], 'e\nj\n' .. ARGV[6] .. '\npush.' .. kind .. '\n' .. data)
end
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '\n' .. ARGV[3] .. '\n' .. ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
local before = nil
local technique = ARGV[3]
if old then
  technique, before = string.match(old, '^[^\n]*\n([^\n]*)\n(.*)$')
end
if before == ARGV[4] then
  return 0
end
if before and before ~= '' then
  if redis.call('HINCRBY', KEYS[2], before, -1) <= 0 then
    redis.call('HDEL', KEYS[2], before)
    announce('leave', before, technique)
  end
end
if ARGV[4] ~= '' then
  if redis.call('HINCRBY', KEYS[2], ARGV[4], 1) == 1 then
    announce('join', ARGV[4], ARGV[3])
  end
  redis.call('PEXPIRE', KEYS[2], ARGV[7])
end
return 1
";

/// Drops fields: the one named (ARGV[4] ~= '') or every lapsed one; a
/// leave for each user left with none. KEYS: presence, present. ARGV:
/// notify channel, now (ms), lapsed before (ms), field ('' for the lapsed
/// ones). Returns how many it dropped.
const LEAVE: &str = r"
local function announce(user, technique)
  local data = cjson.encode({user = user, technique = technique})
  redis.call('PUBLISH', ARGV[1], 'e\nj\n' .. ARGV[2] .. '\npush.leave\n' .. data)
end
local function drop(field, value)
  redis.call('HDEL', KEYS[1], field)
  local technique, user = string.match(value, '^[^\n]*\n([^\n]*)\n(.*)$')
  if user and user ~= '' then
    if redis.call('HINCRBY', KEYS[2], user, -1) <= 0 then
      redis.call('HDEL', KEYS[2], user)
      announce(user, technique)
    end
  end
end
if ARGV[4] ~= '' then
  local value = redis.call('HGET', KEYS[1], ARGV[4])
  if value then
    drop(ARGV[4], value)
    return 1
  end
  return 0
end
local dropped = 0
local fields = redis.call('HGETALL', KEYS[1])
local lapsed = tonumber(ARGV[3])
for i = 1, #fields, 2 do
  local expires = tonumber(string.match(fields[i + 1], '^(%d+)'))
  if not expires or expires < lapsed then
    drop(fields[i], fields[i + 1])
    dropped = dropped + 1
  end
end
return dropped
";

/// Renews fields that still exist (a field another node dropped, as
/// lapsed, stays dropped: its connection is not counted until it comes
/// again). KEYS: presence. ARGV: expires (ms), keys' expiry (ms), the
/// fields.
const RENEW: &str = r"
for i = 3, #ARGV do
  local value = redis.call('HGET', KEYS[1], ARGV[i])
  if value then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[1] .. string.match(value, '^%d*(.*)$'))
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 0
";

/// The presence scripts, loaded once.
#[derive(Debug)]
pub(crate) struct PresenceScripts {
    enter: Script,
    leave: Script,
    renew: Script,
}

impl PresenceScripts {
    pub(crate) fn new() -> Self {
        PresenceScripts {
            enter: Script::new(ENTER),
            leave: Script::new(LEAVE),
            renew: Script::new(RENEW),
        }
    }
}

/// This node's streaming connections, by channel (field id → member), and
/// the channels where it took a poller's lease lately.
#[derive(Debug, Default)]
pub(crate) struct LocalPresence {
    connections: HashMap<ChannelName, HashMap<u64, Member>>,
    leased: HashMap<ChannelName, SystemTime>,
}

fn now_ms() -> u64 {
    Timestamp::from(SystemTime::now()).as_unix_millis()
}

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Inner {
    fn presence_key(&self, channel: &ChannelName) -> String {
        format!("{}:{{{channel}}}:presence", self.config.prefix)
    }

    fn present_key(&self, channel: &ChannelName) -> String {
        format!("{}:{{{channel}}}:present", self.config.prefix)
    }

    fn connection_field(&self, id: u64) -> String {
        format!("{}:{id}", self.node)
    }

    fn lock_presence(&self) -> std::sync::MutexGuard<'_, LocalPresence> {
        self.presence
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How long the presence keys outlive their last write.
    fn keys_ttl(ttl: Duration) -> u64 {
        ms(ttl).saturating_mul(4).max(60_000)
    }

    /// Runs the enter script for `field`.
    async fn put(
        &self,
        channel: &ChannelName,
        field: &str,
        member: &Member,
        ttl: Duration,
    ) -> Result<(), Error> {
        let now = now_ms();
        let mut invocation = self.presence_scripts.enter.key(self.presence_key(channel));
        invocation
            .key(self.present_key(channel))
            .arg(field)
            .arg(now.saturating_add(ms(ttl)))
            .arg(member.technique())
            .arg(member.user().unwrap_or(""))
            .arg(self.notify_channel(channel))
            .arg(now)
            .arg(Self::keys_ttl(ttl));
        self.link
            .script(&invocation)
            .await
            .map(drop)
            .map_err(Failure::into_write_error)
    }

    /// Runs the leave script: `field`, or every lapsed field when `None`.
    async fn drop_fields(&self, channel: &ChannelName, field: Option<&str>) -> Result<(), Error> {
        let now = now_ms();
        let mut invocation = self.presence_scripts.leave.key(self.presence_key(channel));
        invocation
            .key(self.present_key(channel))
            .arg(self.notify_channel(channel))
            .arg(now)
            .arg(now)
            .arg(field.unwrap_or(""));
        self.link
            .script(&invocation)
            .await
            .map(drop)
            .map_err(Failure::into_write_error)
    }

    pub(crate) async fn enter(
        self: &Arc<Self>,
        channel: &ChannelName,
        member: Member,
    ) -> Result<Presence, Error> {
        let id = self.next_subscriber.fetch_add(1, Ordering::Relaxed);
        let field = self.connection_field(id);
        self.lock_presence()
            .connections
            .entry(channel.clone())
            .or_default()
            .insert(id, member.clone());
        let guard = RedisPresence {
            inner: Arc::downgrade(self),
            channel: channel.clone(),
            id,
        };
        // The guard leaves again if this fails.
        self.put(channel, &field, &member, self.config.presence_lease)
            .await?;
        Ok(Presence::new(guard))
    }

    pub(crate) async fn touch(
        &self,
        channel: &ChannelName,
        key: &str,
        member: Member,
        ttl: Duration,
    ) -> Result<(), Error> {
        self.lock_presence()
            .leased
            .insert(channel.clone(), SystemTime::now() + ttl);
        self.put(channel, &format!("L:{key}"), &member, ttl).await
    }

    pub(crate) async fn presence(
        &self,
        channel: &ChannelName,
        page: PresencePage,
    ) -> Result<PresenceSnapshot, Error> {
        let mut command = redis::cmd("HGETALL");
        command.arg(self.presence_key(channel));
        let answer = self
            .link
            .command(&command)
            .await
            .map_err(Failure::into_read_error)?;
        let fields: HashMap<String, Vec<u8>> = redis::FromRedisValue::from_redis_value(answer)
            .map_err(|err| Failure::bad_answer(format!("presence: {err}")).into_read_error())?;
        let now = now_ms();
        let live: Vec<(Option<String>, String)> = fields
            .values()
            .filter_map(|value| {
                let text = std::str::from_utf8(value).ok()?;
                let mut parts = text.splitn(3, '\n');
                let expires = parts.next()?.parse::<u64>().ok()?;
                let technique = parts.next()?.to_owned();
                let user = parts.next()?;
                (expires >= now).then(|| ((!user.is_empty()).then(|| user.to_owned()), technique))
            })
            .collect();
        Ok(PresenceSnapshot::of(
            live.iter()
                .map(|(user, technique)| (user.as_deref(), technique.as_str())),
            page.after.as_deref(),
            page.limit,
        ))
    }

    /// One round of the node's presence duty: renew its connections'
    /// leases, and drop the lapsed fields of every channel it serves.
    async fn renew(&self) {
        let lease = self.config.presence_lease;
        let (connections, mut channels) = {
            let mut local = self.lock_presence();
            let now = SystemTime::now();
            local.leased.retain(|_, until| *until + lease > now);
            let connections: Vec<(ChannelName, Vec<u64>)> = local
                .connections
                .iter()
                .map(|(channel, members)| (channel.clone(), members.keys().copied().collect()))
                .collect();
            let channels: Vec<ChannelName> = local.leased.keys().cloned().collect();
            (connections, channels)
        };
        let expires = now_ms().saturating_add(ms(lease));
        for (channel, ids) in &connections {
            let mut invocation = self.presence_scripts.renew.key(self.presence_key(channel));
            invocation.arg(expires).arg(Self::keys_ttl(lease));
            for id in ids {
                invocation.arg(self.connection_field(*id));
            }
            if let Err(err) = self.link.script(&invocation).await {
                tracing::warn!(%channel, err = %err.into_write_error(), "renewing presence leases failed");
            }
        }
        channels.extend(connections.into_iter().map(|(channel, _)| channel));
        channels.extend(self.followed().into_iter().map(|local| local.name.clone()));
        channels.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        channels.dedup();
        for channel in &channels {
            if let Err(err) = self.drop_fields(channel, None).await {
                tracing::warn!(%channel, %err, "dropping lapsed presence failed");
            }
        }
    }
}

/// Renews this node's leases and expires lapsed ones, until the hub goes.
pub(crate) async fn run(hub: Weak<Inner>) {
    loop {
        let Some(period) = hub.upgrade().map(|inner| inner.config.presence_lease / 3) else {
            return;
        };
        tokio::time::sleep(period).await;
        let Some(inner) = hub.upgrade() else { return };
        inner.renew().await;
    }
}

/// A streaming connection's presence on the Redis hub: leaves when dropped
/// (at once, in a task; or, if that cannot run, when its lease lapses).
struct RedisPresence {
    inner: Weak<Inner>,
    channel: ChannelName,
    id: u64,
}

impl Drop for RedisPresence {
    fn drop(&mut self) {
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        {
            let mut local = inner.lock_presence();
            if let Some(members) = local.connections.get_mut(&self.channel) {
                members.remove(&self.id);
                if members.is_empty() {
                    local.connections.remove(&self.channel);
                }
            }
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let channel = self.channel.clone();
        let field = inner.connection_field(self.id);
        runtime.spawn(async move {
            if let Err(err) = inner.drop_fields(&channel, Some(&field)).await {
                tracing::warn!(%channel, %err, "leaving failed; the lease will lapse");
            }
        });
    }
}
