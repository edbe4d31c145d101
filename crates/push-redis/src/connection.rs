//! The node's connections to Redis, made and remade in one place.
//!
//! - [`Connector`] knows where Redis is and how to dial it: the command
//!   connection and the Pub/Sub connection both come from here (so a future
//!   Sentinel lookup changes this file alone), with one [`Backoff`] policy.
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
use redis::{AsyncConnectionConfig, Client, ErrorKind, ProtocolVersion, PushKind, RedisError};
use redis::{Cmd, ScriptInvocation, Value};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::RedisHubConfig;
use crate::health::Health;

/// The first wait between reconnection attempts; it doubles from there
/// (with jitter, [`Backoff`]) up to `max_reconnect_delay`.
pub(crate) const FIRST_DELAY: Duration = Duration::from_millis(50);

/// The least time between two connection attempts of the command link.
const MIN_GAP: Duration = Duration::from_millis(10);

/// Where Redis is, and how to connect to it.
#[derive(Debug)]
pub(crate) struct Connector {
    /// For the command connection: RESP3, for the disconnection notice.
    commands: Client,
    /// For the Pub/Sub connection: as the URL says.
    pubsub: Client,
    connection_timeout: Duration,
    response_timeout: Duration,
    /// Where, for error messages (`host:port`, never the password).
    pub(crate) address: String,
}

impl Connector {
    /// # Errors
    /// [`Error::Unavailable`] for a URL redis-rs does not accept.
    pub(crate) fn new(config: &RedisHubConfig) -> Result<Self, Error> {
        let invalid =
            |err: RedisError| Error::unavailable(format!("a Redis URL not understood: {err}"));
        let pubsub = Client::open(config.url.as_str()).map_err(invalid)?;
        let info = pubsub.get_connection_info().clone();
        let address = info.addr().to_string();
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let commands = Client::open(info.set_redis_settings(resp3)).map_err(invalid)?;
        Ok(Connector {
            commands,
            pubsub,
            connection_timeout: config.connection_timeout,
            response_timeout: config.response_timeout,
            address,
        })
    }

    /// A new command connection; `dead` is set (and `died` notified) the
    /// moment redis-rs finds it closed.
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
        let connecting = self
            .commands
            .get_multiplexed_async_connection_with_config(&config);
        match tokio::time::timeout(self.connection_timeout, connecting).await {
            Ok(Ok(connection)) => Ok(Conn { connection, dead }),
            Ok(Err(err)) => Err(format!("connecting to Redis at {}: {err}", self.address)),
            Err(_) => Err(format!(
                "connecting to Redis at {} timed out after {:?}",
                self.address, self.connection_timeout
            )),
        }
    }

    /// A new Pub/Sub connection.
    pub(crate) async fn pubsub(&self) -> Result<PubSub, String> {
        match tokio::time::timeout(self.connection_timeout, self.pubsub.get_async_pubsub()).await {
            Ok(Ok(pubsub)) => Ok(pubsub),
            Ok(Err(err)) => Err(format!("connecting to Redis at {}: {err}", self.address)),
            Err(_) => Err(format!(
                "connecting to Redis at {} timed out after {:?}",
                self.address, self.connection_timeout
            )),
        }
    }
}

/// One command connection, and whether it is known to be dead.
#[derive(Clone)]
struct Conn {
    connection: MultiplexedConnection,
    dead: Arc<AtomicBool>,
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

/// The shared command connection (see the module docs).
pub(crate) struct Link {
    connector: Arc<Connector>,
    state: watch::Receiver<State>,
    signals: Arc<Signals>,
    health: Arc<Health>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("address", &self.connector.address)
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
}

impl Failure {
    fn new(kind: FailureKind, reason: impl Into<String>) -> Self {
        Failure {
            kind,
            reason: reason.into(),
        }
    }

    fn of(err: &RedisError, response_timeout: Duration) -> Self {
        if err.is_timeout() {
            return Failure::new(
                FailureKind::TimedOut,
                format!("Redis did not answer within {response_timeout:?}"),
            );
        }
        match err.kind() {
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
    /// after a refusal.
    fn worth_retrying(&self) -> bool {
        matches!(self.kind, FailureKind::NotConnected | FailureKind::Dropped)
    }

    /// Whether Redis answered at all.
    fn answered(&self) -> bool {
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

impl Link {
    /// Connects (the first connection must succeed) and starts the task
    /// that keeps the connection.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when Redis cannot be reached.
    pub(crate) async fn connect(
        connector: Arc<Connector>,
        health: Arc<Health>,
        max_delay: Duration,
    ) -> Result<Link, Error> {
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
        Ok(Link {
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
                    "not connected to Redis at {}: no connection within {limit:?}",
                    self.connector.address
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
                let failure = Failure::of(&err, self.connector.response_timeout);
                if failure.kind == FailureKind::Dropped {
                    // redis-rs says so too, by a push; whichever is first.
                    conn.dead.store(true, Ordering::Release);
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
    pub(crate) async fn script(&self, invocation: &ScriptInvocation<'_>) -> Result<Value, Failure> {
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
    pub(crate) async fn command(&self, command: &Cmd) -> Result<Value, Failure> {
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
    let mut failures = 0u64;
    loop {
        let alive = matches!(&*state.borrow(), State::Up(conn) if !conn.is_dead());
        if alive {
            tokio::select! {
                () = signals.died.notified() => continue,
                () = state.closed() => return,
            }
        }
        if matches!(&*state.borrow(), State::Up(_)) {
            tracing::warn!(address = %connector.address, "Redis command connection lost; reconnecting");
            state.send_replace(State::Down {
                failures,
                failed_at: None,
                reason: format!(
                    "the connection to Redis at {} was lost; reconnecting",
                    connector.address
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
                tracing::debug!(address = %connector.address, "Redis command connection up");
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
                // A command waiting cuts the wait short, but attempts stay
                // at least MIN_GAP apart however many commands come.
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = async {
                        signals.kick.notified().await;
                        tokio::time::sleep_until(started + MIN_GAP).await;
                    } => {}
                    () = state.closed() => return,
                }
            }
        }
    }
}
