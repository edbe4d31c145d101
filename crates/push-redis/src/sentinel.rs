//! Finding the master through Redis Sentinel, and noticing when it moves.
//!
//! - [`Sentinels::master`] says where the master is for the next connection:
//!   the address a sentinel announced last, if that server says it is the
//!   master (`ROLE`), else what the sentinels answer now (redis-rs's lookup:
//!   `SENTINEL MASTERS`, then `ROLE` on the one named). A connection that
//!   died, or was refused, or found a replica (`READONLY`), makes the hub
//!   forget that address: the next dial asks the sentinels again.
//! - [`watch`] listens to one sentinel's announcements: the promotion of a
//!   replica as it starts (`+failover-state-send-slaveof-noone`) and the
//!   switch when it is done (`+switch-master`). The old master keeps taking
//!   writes for seconds after a failover (until Sentinel turns it into a
//!   replica, measured here: about 10 s), and every write it takes then is
//!   lost, so the node moves at the first word, not when its connection
//!   breaks.

use std::sync::{Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use futures_util::StreamExt as _;
use push_core::{Backoff, Error};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo as _,
    RedisConnectionInfo, Role,
};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::SentinelConfig;
use crate::connection::{Connector, FIRST_DELAY};

/// The announcement of a replica being promoted (the failover's point of
/// no return: the old master's writes from now on are lost).
const PROMOTING: &str = "+failover-state-send-slaveof-noone";
/// The announcement of a finished failover.
const SWITCHED: &str = "+switch-master";
/// How long a replica announced as being promoted is waited for (no
/// connection goes to the old master meanwhile) before the hub asks the
/// sentinels again; the switch's announcement ends the wait sooner.
pub(crate) const PROMOTION_WAIT: Duration = Duration::from_secs(5);

/// The sentinels of one master, and what they last announced.
pub(crate) struct Sentinels {
    name: String,
    addresses: Vec<(String, u16)>,
    /// redis-rs's lookup (it takes `&mut`).
    lookup: tokio::sync::Mutex<SentinelClient>,
    /// The master's username and password, for every connection to it.
    settings: RedisConnectionInfo,
    /// Where a sentinel said the master is (or is about to be).
    hint: Mutex<Option<Hint>>,
    /// Bumped at every announcement that moves the master. The connection
    /// tasks wait on it; the watchers end when it closes (the hub is gone).
    moves: watch::Sender<u64>,
}

impl std::fmt::Debug for Sentinels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sentinels")
            .field("name", &self.name)
            .field("addresses", &self.addresses)
            .finish_non_exhaustive()
    }
}

/// Where a sentinel said the master is.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Hint {
    host: String,
    port: u16,
    /// A replica being promoted: until then, finding it still a replica
    /// means "not yet", and the old master must not be used meanwhile.
    promoting_until: Option<Instant>,
}

impl Hint {
    fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// What a sentinel announced about our master.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// This replica is being promoted now.
    Promoting { host: String, port: u16 },
    /// The failover is done: this is the master.
    Switched { host: String, port: u16 },
}

impl Sentinels {
    /// # Errors
    /// [`Error::InvalidConfig`] when redis-rs refuses the settings.
    pub(crate) fn new(config: &SentinelConfig) -> Result<Self, Error> {
        let addresses = config
            .sentinels
            .iter()
            .map(|(host, port)| ConnectionAddr::Tcp(host.clone(), *port));
        let mut builder =
            SentinelClientBuilder::new(addresses, &config.master, SentinelServerType::Master)
                .map_err(|_| invalid())?;
        let mut settings = RedisConnectionInfo::default();
        if let Some(username) = &config.username {
            builder = builder.set_client_to_redis_username(username);
            settings = settings.set_username(username);
        }
        if let Some(password) = &config.password {
            builder = builder.set_client_to_redis_password(password);
            settings = settings.set_password(password);
        }
        let lookup = builder.build().map_err(|_| invalid())?;
        Ok(Sentinels {
            name: config.master.clone(),
            addresses: config.sentinels.clone(),
            lookup: tokio::sync::Mutex::new(lookup),
            settings,
            hint: Mutex::new(None),
            moves: watch::channel(0).0,
        })
    }

    fn lock_hint(&self) -> MutexGuard<'_, Option<Hint>> {
        self.hint.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The sentinels' addresses.
    pub(crate) fn addresses(&self) -> &[(String, u16)] {
        &self.addresses
    }

    /// The master's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// What the connection tasks wait on for a move.
    pub(crate) fn moves(&self) -> watch::Receiver<u64> {
        self.moves.subscribe()
    }

    /// Whether a sentinel named another master than `address`.
    pub(crate) fn moved_from(&self, address: &str) -> bool {
        self.lock_hint()
            .as_ref()
            .is_some_and(|hint| hint.address() != address)
    }

    /// Takes `event` in; `Some(address)` when it names a master not known
    /// before (the connections must move there).
    pub(crate) fn announce(&self, event: Event, wait: Duration) -> Option<String> {
        let (host, port, promoting_until) = match event {
            Event::Promoting { host, port } => (host, port, Some(Instant::now() + wait)),
            Event::Switched { host, port } => (host, port, None),
        };
        let hint = Hint {
            host,
            port,
            promoting_until,
        };
        let address = hint.address();
        let mut current = self.lock_hint();
        let news = current.as_ref().is_none_or(|old| old.address() != address);
        // A switch after its promotion only ends the "not yet", and wakes
        // the connection tasks waiting out a backoff to dial it now.
        let promoted = !news
            && promoting_until.is_none()
            && current
                .as_ref()
                .is_some_and(|old| old.promoting_until.is_some());
        if news || promoting_until.is_none() {
            *current = Some(hint);
        }
        drop(current);
        if news || promoted {
            self.moves.send_modify(|n| *n = n.wrapping_add(1));
        }
        news.then_some(address)
    }

    /// A connection to `address` died, was refused, or found no master
    /// there: the next dial asks the sentinels.
    pub(crate) fn forget(&self, address: &str) {
        let mut hint = self.lock_hint();
        if hint.as_ref().is_some_and(|hint| hint.address() == address) {
            *hint = None;
        }
    }

    /// Where the master is, for the next connection (see the module docs).
    /// The caller bounds the time it takes.
    pub(crate) async fn master(
        &self,
        connection_timeout: Duration,
        response_timeout: Duration,
    ) -> Result<ConnectionInfo, String> {
        let hint = self.lock_hint().clone();
        if let Some(hint) = hint {
            let address = hint.address();
            let info = self.info(&hint.host, hint.port)?;
            match is_master(&info, connection_timeout, response_timeout).await {
                Ok(true) => return Ok(info),
                // Not yet a master, or not answering while it turns into
                // one: wait for it. Asking the sentinels now would name
                // the old master (until the switch), whose writes from now
                // on are lost.
                Ok(false) | Err(_) if hint.promoting_until.is_some_and(|t| Instant::now() < t) => {
                    return Err(format!(
                        "Redis at {address} is being promoted to master by Sentinel, not yet done"
                    ));
                }
                Ok(false) => {
                    tracing::debug!(%address, "the announced master is a replica; asking the sentinels");
                    self.forget(&address);
                }
                Err(err) => {
                    tracing::debug!(%address, %err, "the announced master does not answer; asking the sentinels");
                    self.forget(&address);
                }
            }
        }
        let client = self
            .lookup
            .lock()
            .await
            .async_get_client()
            .await
            .map_err(|err| {
                format!(
                    "asking the sentinels ({}) for master {}: {err}",
                    self.list(),
                    self.name
                )
            })?;
        Ok(client.get_connection_info().clone())
    }

    /// How to connect to the Redis at `host:port` as the master.
    fn info(&self, host: &str, port: u16) -> Result<ConnectionInfo, String> {
        (host.to_owned(), port)
            .into_connection_info()
            .map(|info| info.set_redis_settings(self.settings.clone()))
            .map_err(|err| format!("the address {host}:{port}: {err}"))
    }

    /// The sentinels, for messages.
    pub(crate) fn list(&self) -> String {
        let list: Vec<String> = self
            .addresses
            .iter()
            .map(|(host, port)| format!("{host}:{port}"))
            .collect();
        list.join(",")
    }
}

fn invalid() -> Error {
    Error::InvalidConfig {
        reason: "sentinel: the sentinels' addresses or the master's name were refused",
    }
}

/// Whether the Redis at `info` says it is a master (`ROLE`), on a
/// connection of its own.
async fn is_master(
    info: &ConnectionInfo,
    connection_timeout: Duration,
    response_timeout: Duration,
) -> Result<bool, String> {
    let client = Client::open(info.clone()).map_err(|err| err.to_string())?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(connection_timeout))
        .set_response_timeout(Some(response_timeout));
    let mut connection = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|err| err.to_string())?;
    let role: Role = redis::cmd("ROLE")
        .query_async(&mut connection)
        .await
        .map_err(|err| err.to_string())?;
    Ok(matches!(role, Role::Primary { .. }))
}

/// An announcement on `channel` with `payload`, if it is about `master`:
///
/// - `+failover-state-send-slaveof-noone`: `slave NAME IP PORT @ MASTER
///   OLD_IP OLD_PORT` (the replica at IP:PORT is being promoted);
/// - `+switch-master`: `MASTER OLD_IP OLD_PORT NEW_IP NEW_PORT`.
pub(crate) fn parse_event(channel: &str, payload: &str, master: &str) -> Option<Event> {
    let fields: Vec<&str> = payload.split_whitespace().collect();
    match (channel, fields.as_slice()) {
        (PROMOTING, [_, _, host, port, "@", name, _, _]) if *name == master => {
            Some(Event::Promoting {
                host: (*host).to_owned(),
                port: port.parse().ok()?,
            })
        }
        (SWITCHED, [name, _, _, host, port]) if *name == master => Some(Event::Switched {
            host: (*host).to_owned(),
            port: port.parse().ok()?,
        }),
        _ => None,
    }
}

/// Listens to the sentinel at `sentinel` for announcements about the
/// master, and hands them to the connector; reconnects with backoff. Ends
/// when the connector is gone.
pub(crate) async fn watch(
    connector: Weak<Connector>,
    sentinel: (String, u16),
    mut closed: watch::Receiver<u64>,
    connection_timeout: Duration,
    max_delay: Duration,
) {
    let Some(name) = connector
        .upgrade()
        .and_then(|c| c.sentinels().map(|s| s.name().to_owned()))
    else {
        return;
    };
    let address = format!("{}:{}", sentinel.0, sentinel.1);
    let Ok(client) = Client::open(sentinel) else {
        tracing::warn!(%address, "a sentinel address redis-rs does not take; not listening to it");
        return;
    };
    let mut backoff = Backoff::new(FIRST_DELAY, max_delay);
    // The connector gone: the sender of `closed` is dropped.
    let gone = async |closed: &mut watch::Receiver<u64>| {
        while closed.changed().await.is_ok() {}
    };
    loop {
        let connecting = tokio::time::timeout(connection_timeout, client.get_async_pubsub());
        let connected = tokio::select! {
            connected = connecting => connected,
            () = gone(&mut closed) => return,
        };
        match connected {
            Ok(Ok(mut pubsub)) => {
                if pubsub.subscribe(&[PROMOTING, SWITCHED]).await.is_ok() {
                    backoff.reset();
                    tracing::debug!(%address, "listening to a sentinel");
                    let mut messages = pubsub.on_message();
                    loop {
                        let message = tokio::select! {
                            message = messages.next() => message,
                            () = gone(&mut closed) => return,
                        };
                        let Some(message) = message else { break };
                        let payload = String::from_utf8_lossy(message.get_payload_bytes());
                        if let Some(event) =
                            parse_event(message.get_channel_name(), &payload, &name)
                        {
                            let Some(connector) = connector.upgrade() else {
                                return;
                            };
                            connector.announced(event);
                        }
                    }
                }
                tracing::debug!(%address, "lost a sentinel's announcements; reconnecting");
            }
            Ok(Err(err)) => tracing::debug!(%address, %err, "cannot listen to a sentinel"),
            Err(_) => tracing::debug!(%address, "connecting to a sentinel timed out"),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            () = gone(&mut closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_announcements_about_its_master_only() {
        assert_eq!(
            parse_event(
                PROMOTING,
                "slave 127.0.0.1:7002 127.0.0.1 7002 @ mym 127.0.0.1 7001",
                "mym"
            ),
            Some(Event::Promoting {
                host: "127.0.0.1".into(),
                port: 7002
            })
        );
        assert_eq!(
            parse_event(SWITCHED, "mym 127.0.0.1 7001 ::1 7002", "mym"),
            Some(Event::Switched {
                host: "::1".into(),
                port: 7002
            })
        );
        assert_eq!(
            parse_event(SWITCHED, "other 127.0.0.1 7001 127.0.0.1 7002", "mym"),
            None
        );
        for bad in ["", "mym", "mym 1 2 3 notaport", "mym 1 2 3 4 5"] {
            assert_eq!(parse_event(SWITCHED, bad, "mym"), None, "{bad:?}");
        }
        assert_eq!(
            parse_event("+sdown", "master mym 127.0.0.1 7001", "mym"),
            None
        );
    }

    #[tokio::test]
    async fn an_announcement_moves_once_and_forgetting_asks_the_sentinels_again() {
        let sentinels = Sentinels::new(&SentinelConfig::new([("127.0.0.1", 1)], "mym")).unwrap();
        let mut moves = sentinels.moves();
        let promoting = Event::Promoting {
            host: "h".into(),
            port: 2,
        };
        let wait = Duration::from_secs(1);
        assert_eq!(sentinels.announce(promoting, wait), Some("h:2".into()));
        assert!(moves.has_changed().unwrap());
        moves.borrow_and_update();
        assert!(sentinels.moved_from("h:1") && !sentinels.moved_from("h:2"));
        // The promotion is done: the same master, and a wake-up to dial it.
        let switched = || Event::Switched {
            host: "h".into(),
            port: 2,
        };
        assert_eq!(sentinels.announce(switched(), wait), None);
        assert!(moves.has_changed().unwrap());
        moves.borrow_and_update();
        // Every sentinel says it again: no news.
        assert_eq!(sentinels.announce(switched(), wait), None);
        assert!(!moves.has_changed().unwrap());
        assert_eq!(sentinels.lock_hint().clone().unwrap().promoting_until, None);
        sentinels.forget("h:3");
        assert!(sentinels.moved_from("h:1"));
        sentinels.forget("h:2");
        assert!(!sentinels.moved_from("h:1"));
    }
}
