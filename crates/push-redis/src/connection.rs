//! The node's connections to Redis, made and remade in one place.
//!
//! - [`Connector`] knows where Redis is and how to dial it: the command
//!   connection and the Pub/Sub connection both come from here, with one
//!   [`Backoff`] policy. Redis is the URL's, or the master Redis Sentinel
//!   names: then every dial asks where the master is (the `sentinel`
//!   module), and a sentinel announcing a failover makes both connections
//!   move at once ([`Moves`]).
//! - [`Link`] is the command connection every command shares: one
//!   multiplexed connection, replaced by a background task as soon as it
//!   dies, not when the next command trips over it. It speaks RESP3 so that
//!   redis-rs tells us the moment the socket closes.
//! - [`Failure`] says what a failed command means for its caller: whether it
//!   certainly did not run, or may have.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use push_core::{Backoff, Error};
use redis::aio::{MultiplexedConnection, PubSub};
use redis::{
    AsyncConnectionConfig, Client, ConnectionInfo, ErrorKind, IntoConnectionInfo as _,
    ProtocolVersion, PushKind, RedisError, ServerErrorKind,
};
use redis::{Cmd, ScriptInvocation, Value};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::RedisHubConfig;
use crate::health::Health;
use crate::sentinel::{Event, Sentinels};

/// The first wait between reconnection attempts; it doubles from there
/// (with jitter, [`Backoff`]) up to `max_reconnect_delay`.
pub(crate) const FIRST_DELAY: Duration = Duration::from_millis(50);

/// The least time between two connection attempts of the command link.
const MIN_GAP: Duration = Duration::from_millis(10);

/// Where Redis is, and how to connect to it.
#[derive(Debug)]
pub(crate) struct Connector {
    place: Place,
    connection_timeout: Duration,
    response_timeout: Duration,
    health: Arc<Health>,
}

/// Where the connections go.
#[derive(Debug)]
enum Place {
    /// The URL's Redis, always.
    Fixed(Box<ConnectionInfo>),
    /// The master the sentinels name.
    Sentinel(Box<Sentinels>),
}

/// What a connection task waits on for the master to move: never, without
/// Sentinel.
#[derive(Debug)]
pub(crate) struct Moves(Option<watch::Receiver<u64>>);

impl Moves {
    /// Waits for the next announcement of a move.
    pub(crate) async fn next(&mut self) {
        if let Some(moves) = &mut self.0
            && moves.changed().await.is_ok()
        {
            return;
        }
        std::future::pending::<()>().await;
    }
}

impl Connector {
    /// # Errors
    /// [`Error::Unavailable`] for a URL redis-rs does not accept,
    /// [`Error::InvalidConfig`] for Sentinel settings it refuses.
    pub(crate) fn new(config: &RedisHubConfig, health: Arc<Health>) -> Result<Self, Error> {
        let place = match &config.sentinel {
            Some(sentinel) => Place::Sentinel(Box::new(Sentinels::new(sentinel)?)),
            None => Place::Fixed(Box::new(
                config.url.as_str().into_connection_info().map_err(|err| {
                    Error::unavailable(format!("a Redis URL not understood: {err}"))
                })?,
            )),
        };
        Ok(Connector {
            place,
            connection_timeout: config.connection_timeout,
            response_timeout: config.response_timeout,
            health,
        })
    }

    /// Starts listening to the sentinels, if the hub follows them: one
    /// task per sentinel, each ending with the connector.
    pub(crate) fn listen(self: &Arc<Self>, max_delay: Duration) {
        let Some(sentinels) = self.sentinels() else {
            return;
        };
        for address in sentinels.addresses() {
            tokio::spawn(crate::sentinel::watch(
                Arc::downgrade(self),
                address.clone(),
                sentinels.moves(),
                self.connection_timeout,
                max_delay,
            ));
        }
    }

    /// The sentinels, if the hub follows them.
    pub(crate) fn sentinels(&self) -> Option<&Sentinels> {
        match &self.place {
            Place::Sentinel(sentinels) => Some(sentinels),
            Place::Fixed(_) => None,
        }
    }

    /// Where the connections go, for messages (never the password).
    pub(crate) fn describe(&self) -> String {
        match &self.place {
            Place::Fixed(info) => format!("Redis at {}", info.addr()),
            Place::Sentinel(sentinels) => format!(
                "the Redis master {} (sentinels {})",
                sentinels.name(),
                sentinels.list()
            ),
        }
    }

    /// What a connection task waits on for the master to move.
    pub(crate) fn moves(&self) -> Moves {
        Moves(self.sentinels().map(Sentinels::moves))
    }

    /// Whether a connection to `address` must move: a sentinel named
    /// another master.
    pub(crate) fn moved_from(&self, address: &str) -> bool {
        self.sentinels()
            .is_some_and(|sentinels| sentinels.moved_from(address))
    }

    /// A connection to `address` died or found a replica there: the next
    /// dial asks the sentinels rather than trusting that address again.
    pub(crate) fn forget(&self, address: &str) {
        if let Some(sentinels) = self.sentinels() {
            sentinels.forget(address);
        }
    }

    /// A sentinel's announcement: the connections move if it names a new
    /// master, and the node is unhealthy until a probe went through it.
    pub(crate) fn announced(&self, event: Event) {
        let Some(sentinels) = self.sentinels() else {
            return;
        };
        let Some(address) = sentinels.announce(event, crate::sentinel::PROMOTION_WAIT) else {
            return;
        };
        if self.health.address().as_deref() != Some(address.as_str()) {
            tracing::warn!(%address, "Sentinel moves the Redis master; reconnecting there");
            self.health.switching(format!(
                "Sentinel moves the Redis master to {address}; waiting for a probe through it"
            ));
        }
    }

    /// Whether the connections follow the sentinels.
    fn follows_sentinel(&self) -> bool {
        self.sentinels().is_some()
    }

    /// How to reach Redis now, and its `host:port`.
    async fn locate(&self) -> Result<(ConnectionInfo, String), String> {
        let info = match &self.place {
            Place::Fixed(info) => (**info).clone(),
            Place::Sentinel(sentinels) => {
                sentinels
                    .master(self.connection_timeout, self.response_timeout)
                    .await?
            }
        };
        let address = info.addr().to_string();
        Ok((info, address))
    }

    /// Runs `dial` (which finds Redis and connects) within the connection
    /// timeout; a success is recorded as where the node's connections go.
    async fn dial<T>(
        &self,
        dial: impl Future<Output = Result<(T, String), String>>,
    ) -> Result<(T, String), String> {
        match tokio::time::timeout(self.connection_timeout, dial).await {
            Ok(Ok((connection, address))) => {
                self.health.arrived(&address);
                Ok((connection, address))
            }
            Ok(Err(reason)) => Err(reason),
            Err(_) => Err(format!(
                "connecting to {} timed out after {:?}",
                self.describe(),
                self.connection_timeout
            )),
        }
    }

    /// A new command connection (RESP3, for the disconnection notice);
    /// `dead` is set (and `died` notified) the moment redis-rs finds it
    /// closed.
    async fn commands(&self, dead: Arc<AtomicBool>, died: Arc<Notify>) -> Result<Conn, String> {
        let flag = dead.clone();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connection_timeout))
            .set_response_timeout(Some(self.response_timeout))
            .set_push_sender(move |push: redis::PushInfo| {
                if push.kind == PushKind::Disconnection {
                    flag.store(true, Ordering::Release);
                    died.notify_one();
                }
                Ok::<(), ()>(())
            });
        let (connection, address) = self
            .dial(async {
                let (info, address) = self.locate().await?;
                let resp3 = info
                    .redis_settings()
                    .clone()
                    .set_protocol(ProtocolVersion::RESP3);
                let connected = match Client::open(info.set_redis_settings(resp3)) {
                    Ok(client) => {
                        client
                            .get_multiplexed_async_connection_with_config(&config)
                            .await
                    }
                    Err(err) => Err(err),
                };
                match connected {
                    Ok(connection) => Ok((connection, address)),
                    Err(err) => {
                        self.forget(&address);
                        Err(format!("connecting to Redis at {address}: {err}"))
                    }
                }
            })
            .await?;
        Ok(Conn {
            connection,
            dead,
            address: address.into(),
        })
    }

    /// A new Pub/Sub connection (as the URL says), and where it goes.
    pub(crate) async fn pubsub(&self) -> Result<(PubSub, String), String> {
        self.dial(async {
            let (info, address) = self.locate().await?;
            let connected = match Client::open(info) {
                Ok(client) => client.get_async_pubsub().await,
                Err(err) => Err(err),
            };
            match connected {
                Ok(pubsub) => Ok((pubsub, address)),
                Err(err) => {
                    self.forget(&address);
                    Err(format!("connecting to Redis at {address}: {err}"))
                }
            }
        })
        .await
    }
}

/// One command connection, whether it is known to be dead, and where it
/// goes (`host:port`).
#[derive(Clone)]
struct Conn {
    connection: MultiplexedConnection,
    dead: Arc<AtomicBool>,
    address: Arc<str>,
}

impl Conn {
    fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }
}

/// What the link is: connected, or not (and why).
#[derive(Clone)]
enum State {
    Up(Conn),
    Down {
        /// Failed attempts so far, ever: a waiter waits for the next one.
        failures: u64,
        /// When the last attempt failed (`None`: reconnecting now).
        failed_at: Option<Instant>,
        reason: Arc<str>,
    },
}

/// What wakes the link's task.
#[derive(Debug, Default)]
struct Signals {
    /// A connection died.
    died: Arc<Notify>,
    /// A command wants a connection now: skip the backoff wait.
    kick: Notify,
}

/// The shared command connection: to one Redis (or Sentinel's master), or
/// to a Redis Cluster (the `cluster` module).
#[derive(Debug)]
pub(crate) enum Link {
    /// One Redis: [`Single`].
    Single(Single),
    /// A Redis Cluster: redis-rs's cluster connection.
    Cluster(crate::cluster::ClusterLink),
}

impl Link {
    /// Connects to one Redis (see [`Single::connect`]).
    pub(crate) async fn connect(
        connector: Arc<Connector>,
        health: Arc<Health>,
        max_delay: Duration,
    ) -> Result<Link, Error> {
        Single::connect(connector, health, max_delay)
            .await
            .map(Link::Single)
    }

    /// Runs a script (see [`Single::script`]); safe only for what may run
    /// twice.
    pub(crate) async fn script(&self, invocation: &ScriptInvocation<'_>) -> Result<Value, Failure> {
        match self {
            Link::Single(single) => single.script(invocation).await,
            Link::Cluster(cluster) => cluster.script(invocation).await,
        }
    }

    /// Runs a plain command once.
    pub(crate) async fn command(&self, command: &Cmd) -> Result<Value, Failure> {
        match self {
            Link::Single(single) => single.command(command).await,
            Link::Cluster(cluster) => cluster.command(command).await,
        }
    }

    /// The cluster connection, when the hub runs on a Redis Cluster.
    pub(crate) fn cluster(&self) -> Option<&crate::cluster::ClusterLink> {
        match self {
            Link::Single(_) => None,
            Link::Cluster(cluster) => Some(cluster),
        }
    }
}

/// The command connection to one Redis (see the module docs).
pub(crate) struct Single {
    connector: Arc<Connector>,
    state: watch::Receiver<State>,
    signals: Arc<Signals>,
    health: Arc<Health>,
}

impl std::fmt::Debug for Single {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Single")
            .field("redis", &self.connector.describe())
            .finish_non_exhaustive()
    }
}

/// How a command failed, as its caller must treat it.
#[derive(Debug)]
pub(crate) struct Failure {
    kind: FailureKind,
    reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FailureKind {
    /// No connection: nothing was sent.
    NotConnected,
    /// Redis answered with an error: the command did not take effect (our
    /// scripts fail, if at all, before their first write).
    Refused,
    /// The connection broke with the command possibly sent.
    Dropped,
    /// No answer in time: it may still run.
    TimedOut,
    /// An answer we could not read: it ran.
    BadAnswer,
    /// The server is no master (`READONLY`, `MASTERDOWN`) though Sentinel
    /// named it: a failover moved the master. Nothing was written (our
    /// scripts fail at their first write); ask the sentinels again.
    NotMaster,
}

impl Failure {
    fn new(kind: FailureKind, reason: impl Into<String>) -> Self {
        Failure {
            kind,
            reason: reason.into(),
        }
    }

    /// What `err` means; `sentinel`: whether the master is Sentinel's
    /// (else a replica at the URL stays where it is: a plain refusal).
    pub(crate) fn of(err: &RedisError, response_timeout: Duration, sentinel: bool) -> Self {
        if err.is_timeout() {
            return Failure::new(
                FailureKind::TimedOut,
                format!("Redis did not answer within {response_timeout:?}"),
            );
        }
        match err.kind() {
            ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
                if sentinel =>
            {
                Failure::new(
                    FailureKind::NotMaster,
                    format!("Redis is no longer the master (a failover?): {err}"),
                )
            }
            ErrorKind::Server(_) | ErrorKind::Extension => {
                Failure::new(FailureKind::Refused, format!("Redis refused: {err}"))
            }
            ErrorKind::Parse | ErrorKind::UnexpectedReturnType => Failure::new(
                FailureKind::BadAnswer,
                format!("an answer from Redis not understood: {err}"),
            ),
            _ => Failure::new(
                FailureKind::Dropped,
                format!("the connection to Redis broke: {err}"),
            ),
        }
    }

    /// Why it failed, in words.
    pub(crate) fn reason(&self) -> &str {
        &self.reason
    }

    /// An answer that is not what the script returns.
    pub(crate) fn bad_answer(reason: impl Into<String>) -> Self {
        Failure::new(FailureKind::BadAnswer, reason)
    }

    /// Whether the command may have taken effect.
    fn may_have_run(&self) -> bool {
        matches!(
            self.kind,
            FailureKind::Dropped | FailureKind::TimedOut | FailureKind::BadAnswer
        )
    }

    /// Whether one more attempt, on a fresh connection, may succeed. Not
    /// after a timeout (Redis is slow, not gone: it would only pile up) nor
    /// after a refusal; after a master that is none, on the new master.
    fn worth_retrying(&self) -> bool {
        matches!(
            self.kind,
            FailureKind::NotConnected | FailureKind::Dropped | FailureKind::NotMaster
        )
    }

    /// Whether Redis answered at all.
    pub(crate) fn answered(&self) -> bool {
        matches!(self.kind, FailureKind::Refused | FailureKind::BadAnswer)
    }

    /// As the error of a publish (or anything that writes): `Unavailable`
    /// when it certainly did not happen, `OutcomeUnknown` when it may have.
    pub(crate) fn into_write_error(self) -> Error {
        if self.may_have_run() {
            Error::outcome_unknown(self.reason)
        } else {
            Error::unavailable(self.reason)
        }
    }

    /// As the error of a read: it gave nothing, whatever happened in Redis.
    pub(crate) fn into_read_error(self) -> Error {
        Error::unavailable(self.reason)
    }

    /// Two attempts at the same command: it may have run if either may have.
    fn then(self, retry: &Failure) -> Failure {
        let kind = if self.may_have_run() && !retry.may_have_run() {
            self.kind
        } else {
            retry.kind
        };
        Failure::new(
            kind,
            format!("{}; retried once: {}", self.reason, retry.reason),
        )
    }
}

impl Single {
    /// Connects (the first connection must succeed) and starts the task
    /// that keeps the connection.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when Redis cannot be reached.
    async fn connect(
        connector: Arc<Connector>,
        health: Arc<Health>,
        max_delay: Duration,
    ) -> Result<Single, Error> {
        let signals = Arc::new(Signals::default());
        let first = connector
            .commands(Arc::new(AtomicBool::new(false)), signals.died.clone())
            .await
            .map_err(Error::unavailable)?;
        let (sender, state) = watch::channel(State::Up(first));
        tokio::spawn(keep(
            connector.clone(),
            sender,
            signals.clone(),
            health.clone(),
            max_delay,
        ));
        Ok(Single {
            connector,
            state,
            signals,
            health,
        })
    }

    /// A live connection: the current one, or the outcome of the next
    /// attempt to end (never of one that failed before this call; one that
    /// began before Redis came back may still fail it, and then the retry in
    /// [`script`](Self::script) waits for an attempt begun after).
    async fn connection(&self) -> Result<Conn, Failure> {
        let mut state = self.state.clone();
        let seen = match &*state.borrow_and_update() {
            State::Up(conn) if !conn.is_dead() => return Ok(conn.clone()),
            State::Up(_) => None,
            State::Down { failures, .. } => Some(*failures),
        };
        self.signals.kick.notify_one();
        let wait = async {
            loop {
                if state.changed().await.is_err() {
                    return Err(Failure::new(
                        FailureKind::NotConnected,
                        "the hub is closing",
                    ));
                }
                match &*state.borrow_and_update() {
                    State::Up(conn) if !conn.is_dead() => return Ok(conn.clone()),
                    State::Down {
                        failures,
                        failed_at: Some(_),
                        reason,
                    } if seen.is_none_or(|seen| *failures > seen) => {
                        return Err(Failure::new(FailureKind::NotConnected, reason.to_string()));
                    }
                    _ => {}
                }
            }
        };
        let limit = self
            .connector
            .connection_timeout
            .saturating_add(FIRST_DELAY);
        tokio::time::timeout(limit, wait).await.unwrap_or_else(|_| {
            Err(Failure::new(
                FailureKind::NotConnected,
                format!(
                    "not connected to {}: no connection within {limit:?}",
                    self.connector.describe()
                ),
            ))
        })
    }

    /// Runs `command` once on a live connection.
    async fn once<T, F>(&self, command: F) -> Result<T, Failure>
    where
        F: AsyncFnOnce(&mut MultiplexedConnection) -> Result<T, RedisError>,
    {
        let conn = match self.connection().await {
            Ok(conn) => conn,
            Err(failure) => {
                self.health.answered(Err(&failure.reason));
                return Err(failure);
            }
        };
        let mut connection = conn.connection.clone();
        match command(&mut connection).await {
            Ok(value) => {
                self.health.answered(Ok(()));
                Ok(value)
            }
            Err(err) => {
                let failure = Failure::of(
                    &err,
                    self.connector.response_timeout,
                    self.connector.follows_sentinel(),
                );
                if matches!(failure.kind, FailureKind::Dropped | FailureKind::NotMaster) {
                    // redis-rs says so too, by a push; whichever is first.
                    // A master that is none: the next dial asks Sentinel.
                    conn.dead.store(true, Ordering::Release);
                    self.connector.forget(&conn.address);
                    self.signals.died.notify_one();
                }
                if failure.answered() {
                    self.health.answered(Ok(()));
                } else {
                    self.health.answered(Err(&failure.reason));
                }
                Err(failure)
            }
        }
    }

    /// Runs a script, once more on a fresh connection when the first
    /// attempt found none or lost it. Safe only for what may run twice: a
    /// read, or a publish carrying an idempotency key.
    async fn script(&self, invocation: &ScriptInvocation<'_>) -> Result<Value, Failure> {
        let run = async |connection: &mut MultiplexedConnection| {
            invocation.invoke_async::<Value>(connection).await
        };
        match self.once(run).await {
            Err(first) if first.worth_retrying() => {
                self.once(run).await.map_err(|retry| first.then(&retry))
            }
            done => done,
        }
    }

    /// Runs a plain command once.
    async fn command(&self, command: &Cmd) -> Result<Value, Failure> {
        self.once(async |connection: &mut MultiplexedConnection| {
            command.query_async::<Value>(connection).await
        })
        .await
    }
}

/// The link's task: replaces a dead connection at once, and retries with
/// backoff while Redis is unreachable (sooner when a command asks). Ends
/// when the [`Link`] is dropped.
async fn keep(
    connector: Arc<Connector>,
    state: watch::Sender<State>,
    signals: Arc<Signals>,
    health: Arc<Health>,
    max_delay: Duration,
) {
    let mut backoff = Backoff::new(FIRST_DELAY, max_delay);
    let mut moves = connector.moves();
    let mut failures = 0u64;
    loop {
        let alive = matches!(&*state.borrow(), State::Up(conn) if !conn.is_dead());
        if alive {
            tokio::select! {
                () = signals.died.notified() => continue,
                () = moves.next() => {
                    // A sentinel named another master: leave this one now
                    // (it may take writes for seconds, all of them lost).
                    if let State::Up(conn) = &*state.borrow()
                        && connector.moved_from(&conn.address)
                    {
                        conn.dead.store(true, Ordering::Release);
                    }
                    continue;
                }
                () = state.closed() => return,
            }
        }
        let lost = match &*state.borrow() {
            State::Up(conn) => Some(conn.address.clone()),
            State::Down { .. } => None,
        };
        if let Some(address) = lost {
            tracing::warn!(%address, "Redis command connection lost or left; reconnecting");
            // Whatever killed it, the next dial asks where the master is.
            connector.forget(&address);
            state.send_replace(State::Down {
                failures,
                failed_at: None,
                reason: format!(
                    "the connection to Redis at {address} was lost; reconnecting to {}",
                    connector.describe()
                )
                .into(),
            });
        }
        let started = Instant::now();
        let attempt = tokio::select! {
            attempt = connector.commands(Arc::new(AtomicBool::new(false)), signals.died.clone()) => attempt,
            () = state.closed() => return,
        };
        match attempt {
            Ok(conn) => {
                tracing::debug!(address = %conn.address, "Redis command connection up");
                backoff.reset();
                state.send_replace(State::Up(conn));
            }
            Err(reason) => {
                failures += 1;
                health.answered(Err(&reason));
                let delay = backoff.next_delay();
                tracing::warn!(%reason, ?delay, "Redis command connection failed; retrying");
                state.send_replace(State::Down {
                    failures,
                    failed_at: Some(Instant::now()),
                    reason: format!("not connected to Redis: {reason}").into(),
                });
                // A command waiting, or news of the master, cuts the wait
                // short, but attempts stay at least MIN_GAP apart however
                // many commands come.
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = async {
                        tokio::select! {
                            () = signals.kick.notified() => {}
                            () = moves.next() => {}
                        }
                        tokio::time::sleep_until(started + MIN_GAP).await;
                    } => {}
                    () = state.closed() => return,
                }
            }
        }
    }
}
