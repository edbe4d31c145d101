//! The Lua scripts: each publish and each read is one atomic step in Redis.
//!
//! Per channel there are these keys, in one hash slot (`{channel}` is a hash
//! tag, so this works on Redis Cluster too):
//!
//! - `PREFIX:{CHANNEL}:meta`, a hash: `epoch` (decimal u64), `head` (the
//!   number of the last message, 0 before any), `time` (the last publish
//!   time, ms; publish times never go backwards), `run` (the `run_id` of the
//!   Redis process that last wrote the hash);
//! - `PREFIX:{CHANNEL}:log`, a stream: message number N is entry `N-0`,
//!   fields `e` (event name, empty for none), `t` (time, ms), `d` (data),
//!   and `k` = `j` for data published as JSON (absent for bytes: entries
//!   written before the field existed read as bytes, as they always did);
//! - `PREFIX:{CHANNEL}:key:KEY` (a caller's idempotency key) and
//!   `PREFIX:{CHANNEL}:auto:RANDOM` (the node's own, so that it may retry a
//!   publish once), strings `EPOCH NUMBER FINGERPRINT` naming the message
//!   stored under that key, expiring after their window.
//!
//! Meta and log expire together after the channel's idle time. Numbering
//! messages ourselves (rather than letting Redis pick time-based ids) makes
//! every node hand out the same cursors, and makes a gap's size exact.
//!
//! **Rollbacks.** Redis may come back with older data than it acknowledged
//! (a restart from an older snapshot, a failover to a replica that lagged):
//! a channel's head then goes back while its epoch stays, and the numbers
//! after it would be handed out again for other messages. Either needs a
//! new Redis process, and every process has its own `run_id`. So both
//! scripts, finding a channel last written by another process, first give
//! it a fresh epoch (same numbers, same stream): every cursor handed out
//! before is then from another history, and answered with a reset. Script
//! effects replicate as written, so a replica's copy names the master's
//! `run_id` and a promoted replica rotates too.
//!
//! **Failing before writing.** Both scripts only read (`INFO`, `HMGET`,
//! `GET`) before their first write, and a script that fails (an out-of-memory
//! refusal comes at the first write) has then changed nothing: an error
//! reply means the publish did not happen.

use redis::Script;

/// Publishes one message. KEYS: meta, log, the idempotency key's key. ARGV:
/// a fresh epoch (used if the channel has none, or was written by another
/// Redis process), max retained (approximate, `MAXLEN ~`), idle TTL in ms,
/// the time now in ms, event ('' for none), data, the Pub/Sub channel to
/// notify, the publication's fingerprint, the key's window in ms, the kind
/// ('j' for JSON, '' for bytes).
///
/// Returns `{epoch, number, outcome}`: outcome 0 stored now, 1 stored before
/// under this key (the cursor is that message's, verbatim), 2 the key names
/// a message with another fingerprint (nothing stored).
///
/// The notification is `epoch \n number \n time \n event \n data`: event
/// names hold no newline, and data is raw bytes. JSON data's notification
/// starts with `j \n` (a node that does not know it finds no epoch there,
/// ignores the notification and reads the message from the stream). A new
/// epoch of an existing history is announced first, as `epoch \n head` (see
/// [`READ`]).
pub(crate) const PUBLISH: &str = r"
local info = redis.call('INFO', 'server')
local at = string.find(info, 'run_id:', 1, true)
local run = at and string.sub(info, at + 7, at + 46) or ''
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'run', 'head')
local epoch = meta[1]
local known = redis.call('GET', KEYS[3])
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'head', 0, 'time', 0, 'run', run)
elseif meta[2] ~= run then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'run', run)
  redis.call('PUBLISH', ARGV[7], epoch .. '\n' .. (meta[3] or '0'))
end
if known then
  local e, n, f = string.match(known, '^(%d+) (%d+) (%d+)$')
  if f == ARGV[8] then
    return {e, tonumber(n), 1}
  end
  return {'0', 0, 2}
end
local number = redis.call('HINCRBY', KEYS[1], 'head', 1)
local last = tonumber(redis.call('HGET', KEYS[1], 'time')) or 0
local time = math.max(tonumber(ARGV[4]), last)
redis.call('HSET', KEYS[1], 'time', string.format('%d', time))
local id = string.format('%d-0', number)
if ARGV[10] == '' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], id, 'e', ARGV[5], 't', string.format('%d', time), 'd', ARGV[6])
else
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], id, 'e', ARGV[5], 't', string.format('%d', time), 'd', ARGV[6], 'k', ARGV[10])
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('SET', KEYS[3], epoch .. ' ' .. string.format('%d', number) .. ' ' .. ARGV[8], 'PX', ARGV[9])
local note = epoch .. '\n' .. string.format('%d', number) .. '\n' .. string.format('%d', time) .. '\n' .. ARGV[5] .. '\n' .. ARGV[6]
if ARGV[10] ~= '' then
  note = ARGV[10] .. '\n' .. note
end
redis.call('PUBLISH', ARGV[7], note)
return {epoch, number, 0}
";

/// Reads a channel's state and up to COUNT messages from number FROM on.
/// KEYS: meta, log. ARGV: a fresh epoch (used if the channel has none, or
/// was written by another Redis process: reading creates the channel's
/// history, so that the cursor it hands out for a live start names an epoch
/// every node agrees on), idle TTL in ms, FROM, COUNT (0: none), the Pub/Sub
/// channel to notify of a new epoch. Returns `{epoch, head, first, entries}`
/// where `first` is the oldest retained number (`head + 1` when none is) and
/// `entries` what `XRANGE` gives.
///
/// A new epoch of an existing history is announced as `epoch \n head`, so
/// that every node following the channel drops what it cached of the old one.
pub(crate) const READ: &str = r"
local info = redis.call('INFO', 'server')
local at = string.find(info, 'run_id:', 1, true)
local run = at and string.sub(info, at + 7, at + 46) or ''
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'run', 'head')
local epoch = meta[1]
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'head', 0, 'time', 0, 'run', run)
elseif meta[2] ~= run then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'run', run)
  redis.call('PUBLISH', ARGV[5], epoch .. '\n' .. (meta[3] or '0'))
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
local head = tonumber(redis.call('HGET', KEYS[1], 'head'))
local first = head + 1
local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if #oldest > 0 then
  first = tonumber(string.match(oldest[1][1], '^(%d+)'))
end
local entries = {}
local count = tonumber(ARGV[4])
if count > 0 then
  entries = redis.call('XRANGE', KEYS[2], ARGV[3] .. '-0', '+', 'COUNT', count)
end
return {epoch, head, first, entries}
";

/// The scripts, loaded once (`EVALSHA`, falling back to `EVAL` after a
/// Redis restart emptied its script cache: redis-rs does that).
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) publish: Script,
    pub(crate) read: Script,
}

impl Scripts {
    /// The scripts; on a Redis Cluster, with every `PUBLISH` a sharded
    /// `SPUBLISH` (see [`script`]).
    pub(crate) fn new(cluster: bool) -> Self {
        Scripts {
            publish: script(PUBLISH, cluster),
            read: script(READ, cluster),
        }
    }
}

/// `text` as a script; on a Redis Cluster, its notifications are sharded
/// (`SPUBLISH`): a plain `PUBLISH` there goes to every node of the cluster,
/// while `SPUBLISH` stays on the shard that owns the channel's slot (its
/// keys' slot too: the notification channel carries the same hash tag), and
/// reaches only the nodes subscribed there.
pub(crate) fn script(text: &str, cluster: bool) -> Script {
    if cluster {
        Script::new(&text.replace("redis.call('PUBLISH',", "redis.call('SPUBLISH',"))
    } else {
        Script::new(text)
    }
}
