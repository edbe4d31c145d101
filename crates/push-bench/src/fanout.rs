//! What the fan-out scenarios share (SSE in [`sse`](crate::sse), WebSockets
//! in [`ws`](crate::ws)): N subscribers held open from this process, each on
//! a connection of its own, messages published at a fixed rate, every message
//! parsed and its publish → receive latency recorded.
//!
//! Per server and per subscriber count: a server process of its own, its
//! memory (Pss) read before the connections open and once every one of them
//! is open, then `rate` messages per second for a few seconds. Each
//! message's data is `STEP NANOS`: the step it belongs to and the time its
//! publish request was sent, in nanoseconds since an `Instant` this process
//! shares with its subscribers. Every subscriber counts its own messages, so
//! that a message missing at any one of them is counted.
//!
//! A server that answers publishes slowly holds the (sequential) publisher
//! back, which the send times alone would hide: how far the publisher fell
//! behind its schedule is reported too, and counts against a saturation step
//! like latency does.
//!
//! Then saturation searches, each at a subscriber count and a p99 limit
//! (say 10,000 and 100 ms): the highest rate a server carries with p99 within
//! the limit, the publisher never further behind, and nothing missing:
//! doubling from 25/s until a step fails, then bisecting, within a time
//! budget.
//!
//! What differs between the scenarios is a [`Protocol`]: how a subscriber
//! opens its connection and reads messages from it, which servers run, and
//! where they report how many connections they hold.

use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::Request;
use http::header::{CONTENT_TYPE, HOST};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use push_live::http::Technique;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use crate::driver::{Options, Server, human, load_average};
use crate::load;
use crate::memory::{cpu_process, cpu_tree, pss_tree};

/// The first rate the saturation search tries (messages per second).
const FIRST_RATE: f64 = 25.0;
/// The saturation search stops doubling here.
const HIGHEST_RATE: f64 = 25_600.0;
/// Bisection steps once a passing and a failing rate are known.
const BISECTIONS: usize = 3;
/// Connects in flight at once (the SYN backlog here is 2,048).
const CONNECTING: usize = 256;
/// Latency histograms, shared by subscribers in turn (index modulo this).
const SHARDS: usize = 16;
/// The longest response head a subscriber accepts.
pub(crate) const MAX_HEAD: usize = 16 << 10;

/// How long to wait for every connection to open.
const OPEN_TIMEOUT: Duration = Duration::from_secs(90);
/// After the last publish of the rate run: time for stragglers, so that a
/// slow delivery is told from a missing one.
const RATE_DRAIN: Duration = Duration::from_secs(10);
/// The same in a saturation step: anything later fails it anyway.
const STEP_DRAIN: Duration = Duration::from_secs(2);

/// The peers a server's figures are compared with, when they ran.
const P99_PEERS: [&str; 2] = ["axum", "axum-4k"];
const SATURATION_PEERS: [&str; 3] = ["axum", "axum-4k", "nchan"];

/// How one kind of subscriber connects and reads, and which servers speak it.
pub(crate) trait Protocol: Copy + Send + Sync + 'static {
    /// The technique measured: its name is the scenario's in the log and
    /// in its channels' names (`sse`).
    const TECHNIQUE: Technique;
    /// Its name in the tables' titles (`SSE`).
    const TITLE: &'static str;
    /// What one subscriber's connection is called (`stream`).
    const UNIT: &'static str;
    /// When a connection counts as open (`has its response head`).
    const OPENED: &'static str;

    /// The servers run for one of `--servers` (`hello` stands for the floors).
    fn variants(server: &str) -> Vec<String>;

    /// Where `server` says how many connections it holds (`None`: it cannot).
    fn count_path(server: &str) -> Option<&'static str>;

    /// One subscriber: connect (with [`Subscriber::connect`]), open (then
    /// [`Subscriber::opened`]), and count messages until the connection ends.
    fn subscribe(
        self,
        subscriber: &mut Subscriber,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

/// A floor: a bare server measured for memory only (it publishes nothing).
fn is_floor(server: &str) -> bool {
    server.starts_with("hello")
}

/// What every subscriber of one group shares with the driver.
pub(crate) struct Tally {
    pub(crate) epoch: Instant,
    count: usize,
    /// The step being measured; messages of other steps are stale.
    pub(crate) step: AtomicU32,
    /// Subscribers that are open, and those that ended before opening.
    opened: AtomicUsize,
    settled: AtomicUsize,
    settled_all: Notify,
    /// Subscribers whose connection ended (after or before opening).
    closed: AtomicUsize,
    first_error: Mutex<Option<String>>,
    /// Messages of the current step, per subscriber and in all.
    received: Box<[AtomicU32]>,
    total: AtomicU64,
    /// `total` the driver waits for (`u64::MAX` until publishing is done).
    target: AtomicU64,
    reached: Notify,
    /// When the last message of the step arrived (ns since `epoch`).
    last_ns: AtomicU64,
    stale: AtomicU64,
    /// Latency in microseconds.
    shards: Box<[Mutex<Histogram<u64>>]>,
}

fn histogram() -> Result<Histogram<u64>, String> {
    Histogram::new_with_bounds(1, 120_000_000, 3).map_err(|e| e.to_string())
}

pub(crate) fn nanos_since(epoch: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

impl Tally {
    pub(crate) fn new(count: usize, epoch: Instant) -> Result<Tally, String> {
        let shards = (0..SHARDS)
            .map(|_| histogram().map(Mutex::new))
            .collect::<Result<_, _>>()?;
        Ok(Tally {
            epoch,
            count,
            step: AtomicU32::new(0),
            opened: AtomicUsize::new(0),
            settled: AtomicUsize::new(0),
            settled_all: Notify::new(),
            closed: AtomicUsize::new(0),
            first_error: Mutex::new(None),
            received: (0..count).map(|_| AtomicU32::new(0)).collect(),
            total: AtomicU64::new(0),
            target: AtomicU64::new(u64::MAX),
            reached: Notify::new(),
            last_ns: AtomicU64::new(0),
            stale: AtomicU64::new(0),
            shards,
        })
    }

    fn settle(&self) {
        if self.settled.fetch_add(1, Ordering::SeqCst) + 1 == self.count {
            self.settled_all.notify_one();
        }
    }

    /// A subscriber is open.
    fn open(&self) {
        self.opened.fetch_add(1, Ordering::SeqCst);
        self.settle();
    }

    /// A subscriber's connection ended, `opened` or before.
    fn end(&self, opened: bool, result: Result<(), String>) {
        self.closed.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = result {
            let mut first = self
                .first_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            first.get_or_insert(e);
        }
        if !opened {
            self.settle();
        }
    }

    /// Starts a step: counts and histograms from zero. Returns its number.
    pub(crate) fn begin_step(&self) -> u32 {
        for received in &self.received {
            received.store(0, Ordering::Relaxed);
        }
        for shard in &self.shards {
            shard.lock().unwrap_or_else(PoisonError::into_inner).reset();
        }
        self.total.store(0, Ordering::SeqCst);
        self.target.store(u64::MAX, Ordering::SeqCst);
        self.last_ns.store(0, Ordering::SeqCst);
        self.stale.store(0, Ordering::SeqCst);
        self.step.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Counts the messages one read brought to subscriber `index`, given as
    /// their latencies in nanoseconds, and `stale` ones of another step.
    pub(crate) fn record(&self, index: usize, latencies: &[u64], stale: u64, now_ns: u64) {
        if stale > 0 {
            self.stale.fetch_add(stale, Ordering::Relaxed);
        }
        let Some(n) = u64::try_from(latencies.len()).ok().filter(|n| *n > 0) else {
            return;
        };
        {
            let mut shard = self.shards[index % SHARDS]
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for ns in latencies {
                shard.saturating_record((ns / 1_000).max(1));
            }
        }
        if let Some(received) = self.received.get(index) {
            received.fetch_add(u32::try_from(n).unwrap_or(u32::MAX), Ordering::Relaxed);
        }
        self.last_ns.fetch_max(now_ns, Ordering::SeqCst);
        let before = self.total.fetch_add(n, Ordering::SeqCst);
        let target = self.target.load(Ordering::SeqCst);
        if before < target && before + n >= target {
            self.reached.notify_one();
        }
    }

    /// Sorts one message's data (`STEP NANOS`) into `latencies` (of the
    /// current `step`, received at `now_ns`) or counts it in `stale`.
    pub(crate) fn sort(
        data: &[u8],
        step: u32,
        now_ns: u64,
        latencies: &mut Vec<u64>,
        stale: &mut u64,
    ) {
        match parse_data(data) {
            Some((of, sent)) if of == step => latencies.push(now_ns.saturating_sub(sent)),
            _ => *stale += 1,
        }
    }

    /// Waits until `target` messages arrived in all, or `deadline`.
    async fn wait_total(&self, target: u64, deadline: Instant) {
        self.target.store(target, Ordering::SeqCst);
        while self.total.load(Ordering::SeqCst) < target {
            tokio::select! {
                () = self.reached.notified() => {}
                () = tokio::time::sleep_until(deadline.into()) => return,
            }
        }
    }

    fn first_error(&self) -> String {
        self.first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| "closed by the server".into())
    }

    #[cfg(test)]
    pub(crate) fn totals(&self) -> (u64, u64, u32) {
        (
            self.total.load(Ordering::SeqCst),
            self.stale.load(Ordering::SeqCst),
            self.received[0].load(Ordering::SeqCst),
        )
    }
}

/// `STEP NANOS`.
fn parse_data(value: &[u8]) -> Option<(u32, u64)> {
    let text = std::str::from_utf8(value).ok()?;
    let (step, sent) = text.split_once(' ')?;
    Some((step.parse().ok()?, sent.parse().ok()?))
}

/// One subscriber, as its task sees it.
pub(crate) struct Subscriber {
    pub(crate) addr: SocketAddr,
    pub(crate) channel: Arc<str>,
    pub(crate) index: usize,
    pub(crate) tally: Arc<Tally>,
    connecting: Arc<Semaphore>,
    opened: bool,
}

impl Subscriber {
    /// Connects (a few hundred at a time: the connect and the write of
    /// `first`, if any, hold a permit), with `SO_LINGER 0` so that closing
    /// sends RST and leaves no TIME_WAIT behind.
    pub(crate) async fn connect(&self, first: &[u8]) -> Result<TcpStream, String> {
        let _permit = self.connecting.acquire().await.map_err(|e| e.to_string())?;
        let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
        socket.set_zero_linger().map_err(|e| e.to_string())?;
        let mut stream = socket.connect(self.addr).await.map_err(|e| e.to_string())?;
        if !first.is_empty() {
            stream.write_all(first).await.map_err(|e| e.to_string())?;
        }
        Ok(stream)
    }

    /// The connection is open: its response head (or handshake) arrived.
    pub(crate) fn opened(&mut self) {
        self.opened = true;
        self.tally.open();
    }
}

/// A group of subscribers to one channel, each on its own connection.
pub(crate) struct Subscribers {
    pub(crate) tally: Arc<Tally>,
    tasks: JoinSet<()>,
    addr: SocketAddr,
    channel: String,
    count: usize,
}

impl Subscribers {
    /// Starts `count` subscribers of `channel` (connecting a few hundred at
    /// a time); [`wait_open`](Self::wait_open) waits for them.
    fn open<P: Protocol>(
        protocol: P,
        addr: SocketAddr,
        channel: String,
        count: usize,
        epoch: Instant,
    ) -> Result<Subscribers, String> {
        let tally = Arc::new(Tally::new(count, epoch)?);
        let connecting = Arc::new(Semaphore::new(CONNECTING));
        let shared_channel: Arc<str> = channel.as_str().into();
        let mut tasks = JoinSet::new();
        for index in 0..count {
            let mut subscriber = Subscriber {
                addr,
                channel: shared_channel.clone(),
                index,
                tally: tally.clone(),
                connecting: connecting.clone(),
                opened: false,
            };
            tasks.spawn(async move {
                let result = protocol.subscribe(&mut subscriber).await;
                subscriber.tally.end(subscriber.opened, result);
            });
        }
        Ok(Subscribers {
            tally,
            tasks,
            addr,
            channel,
            count,
        })
    }

    /// Waits until every subscriber is open (or failed).
    async fn wait_open(&self, unit: &str) -> Result<(), String> {
        let deadline = Instant::now() + OPEN_TIMEOUT;
        while self.tally.settled.load(Ordering::SeqCst) < self.count {
            tokio::select! {
                () = self.tally.settled_all.notified() => {}
                () = tokio::time::sleep_until(deadline.into()) => break,
            }
        }
        let opened = self.tally.opened.load(Ordering::SeqCst);
        if opened < self.count {
            return Err(format!(
                "{opened} of {} {unit}s opened: {}",
                self.count,
                self.tally.first_error()
            ));
        }
        Ok(())
    }

    /// Closes every connection (with RST: the sockets linger 0).
    async fn close(mut self) {
        self.tasks.shutdown().await;
    }
}

/// What the publisher did in one step.
struct Published {
    count: u64,
    /// When the first message was scheduled (ns since the epoch).
    first_ns: u64,
    done: Instant,
    /// How far behind its schedule the publisher got at worst.
    behind: Duration,
}

/// Publishes `rate × seconds` messages to `channel`, on a thread and runtime
/// of its own so that the subscribers' work does not delay it.
fn publish_paced(
    addr: SocketAddr,
    channel: &str,
    step: u32,
    rate: f64,
    seconds: f64,
    epoch: Instant,
) -> Result<Published, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let count = ((rate * seconds).round() as u64).max(1);
        let interval = Duration::from_secs_f64(1.0 / rate);
        let start = Instant::now() + Duration::from_millis(5);
        let path = format!("/pub/{channel}");
        let host = addr.to_string();
        let mut sender = None;
        let mut behind = Duration::ZERO;
        for k in 0..count {
            let scheduled = start + interval.mul_f64(k as f64);
            tokio::time::sleep_until(scheduled.into()).await;
            let sent = Instant::now();
            behind = behind.max(sent.saturating_duration_since(scheduled));
            let body = format!("{step} {}", nanos_since(epoch, sent));
            post(&mut sender, addr, &path, &host, &body).await?;
        }
        Ok(Published {
            count,
            first_ns: nanos_since(epoch, start),
            done: Instant::now(),
            behind,
        })
    })
}

/// One publish over a keep-alive connection, reconnecting when the server
/// closed it (nginx does after 1,000 requests).
async fn post(
    sender: &mut Option<SendRequest<Full<Bytes>>>,
    addr: SocketAddr,
    path: &str,
    host: &str,
    body: &str,
) -> Result<(), String> {
    for _attempt in 0..3 {
        let ready = match sender.as_mut() {
            Some(live) => live.ready().await.is_ok(),
            None => false,
        };
        if !ready {
            *sender = Some(connect(addr).await?);
        }
        let Some(live) = sender.as_mut() else {
            continue;
        };
        let request = Request::post(path)
            .header(HOST, host)
            .header(CONTENT_TYPE, "text/plain")
            .body(Full::new(Bytes::from(body.to_owned())))
            .map_err(|e| e.to_string())?;
        match live.send_request(request).await {
            Ok(response) => {
                let status = response.status();
                let _ = response.into_body().collect().await;
                if !status.is_success() {
                    return Err(format!("publish answered {status}"));
                }
                return Ok(());
            }
            // Not sent: the connection closed first. Try a new one.
            Err(e) if e.is_canceled() => *sender = None,
            Err(e) => return Err(format!("publishing: {e}")),
        }
    }
    Err("publishing: the connection kept closing".into())
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One measured run: a rate for a while, then the stragglers.
#[derive(Clone, Debug)]
struct Step {
    rate: f64,
    published: u64,
    received: u64,
    /// Σ over subscribers of the messages it never got.
    missing: u64,
    /// Σ over subscribers of the messages beyond those published (duplicates).
    extra: u64,
    /// Connections that ended (they should not).
    closed: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
    per_second: f64,
    behind: Duration,
    /// The server's CPU time (user + system) from the first publish to the
    /// last delivery, per delivery.
    cpu_per_delivery: Duration,
    /// The same for this process (the subscribers and the publisher).
    client_cpu_per_delivery: Duration,
}

impl Step {
    /// Every message reached every subscriber, no connection closed, and
    /// neither the p99 latency nor the publisher's delay exceeds `limit`.
    fn passes(&self, limit: Duration) -> bool {
        self.complete() && self.p99 <= limit && self.behind <= limit
    }

    /// Every message reached every subscriber once, and no connection closed.
    fn complete(&self) -> bool {
        self.missing == 0 && self.extra == 0 && self.closed == 0
    }

    fn why_not(&self, limit: Duration, unit: &str) -> String {
        let mut why = Vec::new();
        if self.p99 > limit {
            why.push(format!("p99 {}", human(self.p99)));
        }
        if self.behind > limit {
            why.push(format!("publisher {} behind", human(self.behind)));
        }
        if self.missing > 0 {
            why.push(format!("{} missing", self.missing));
        }
        if self.extra > 0 {
            why.push(format!("{} duplicated", self.extra));
        }
        if self.closed > 0 {
            why.push(format!("{} {unit}s closed", self.closed));
        }
        why.join(", ")
    }
}

/// Publishes at `rate` for `seconds` and waits up to `drain` after the last
/// publish for every subscriber to have every message.
async fn measure(
    server: &Server,
    subscribers: &Subscribers,
    rate: f64,
    seconds: f64,
    drain: Duration,
) -> Result<Step, String> {
    let tally = &subscribers.tally;
    let step = tally.begin_step();
    let cpu_before = cpu_tree(server.pid());
    let client_before = cpu_process(std::process::id());
    let (addr, channel, epoch) = (subscribers.addr, subscribers.channel.clone(), tally.epoch);
    let published = tokio::task::spawn_blocking(move || {
        publish_paced(addr, &channel, step, rate, seconds, epoch)
    })
    .await
    .map_err(|e| e.to_string())??;
    let count = subscribers.count as u64;
    tally
        .wait_total(published.count * count, published.done + drain)
        .await;
    let cpu = cpu_tree(server.pid()).saturating_sub(cpu_before);
    let client_cpu = cpu_process(std::process::id()).saturating_sub(client_before);

    let mut latency = histogram()?;
    for shard in &tally.shards {
        let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        latency.add(&*shard).map_err(|e| e.to_string())?;
    }
    let (mut missing, mut extra) = (0, 0);
    for received in &tally.received {
        let received = u64::from(received.load(Ordering::Relaxed));
        missing += published.count.saturating_sub(received);
        extra += received.saturating_sub(published.count);
    }
    let received = tally.total.load(Ordering::SeqCst);
    let last_ns = tally.last_ns.load(Ordering::SeqCst);
    let span = Duration::from_nanos(last_ns.saturating_sub(published.first_ns));
    let micros = |q: f64| Duration::from_micros(latency.value_at_quantile(q));
    let per_delivery = |cpu: Duration| {
        cpu.checked_div(u32::try_from(received).unwrap_or(u32::MAX))
            .unwrap_or_default()
    };
    Ok(Step {
        rate,
        published: published.count,
        received,
        missing,
        extra,
        closed: tally.closed.load(Ordering::SeqCst),
        p50: micros(0.5),
        p99: micros(0.99),
        max: Duration::from_micros(latency.max()),
        per_second: received as f64 / span.as_secs_f64().max(1e-9),
        behind: published.behind,
        cpu_per_delivery: per_delivery(cpu),
        client_cpu_per_delivery: per_delivery(client_cpu),
    })
}

/// How many connections the server says are open (`None`: it cannot say).
async fn server_connections<P: Protocol>(server: &Server) -> Result<Option<usize>, String> {
    let Some(path) = P::count_path(&server.name) else {
        return Ok(None);
    };
    let answer = load::once(server.addr, &load::get(path, &[])).await?;
    let text = String::from_utf8_lossy(&answer.body);
    let number = match text.lines().find_map(|l| l.strip_prefix("subscribers:")) {
        Some(nchan) => nchan.trim(),
        None => text.trim(),
    };
    number
        .parse()
        .map(Some)
        .map_err(|_| format!("{}: {} count {text:?}", server.name, P::UNIT))
}

/// Waits (briefly) until the server reports `expected` open connections;
/// returns what it last reported.
async fn await_connections<P: Protocol>(
    server: &Server,
    expected: usize,
) -> Result<Option<usize>, String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let open = server_connections::<P>(server).await?;
        if open.is_none_or(|n| n == expected) || Instant::now() > deadline {
            return Ok(open);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Exercises every path once (publish, open, deliver, close) outside the
/// measured channel, and waits until the server has let the connection go.
async fn warm_up<P: Protocol>(
    protocol: P,
    server: &Server,
    publishes: bool,
    epoch: Instant,
) -> Result<(), String> {
    let subscribers = Subscribers::open(protocol, server.addr, "warmup".into(), 1, epoch)?;
    subscribers.wait_open(P::UNIT).await?;
    if publishes {
        let step = measure(server, &subscribers, 100.0, 0.05, Duration::from_secs(2)).await?;
        if step.missing > 0 {
            return Err(format!(
                "{}: the warm-up message went missing ({})",
                server.name,
                subscribers.tally.first_error()
            ));
        }
    }
    subscribers.close().await;
    await_connections::<P>(server, 0).await?;
    Ok(())
}

/// One saturation search: the highest rate `subscribers` connections carry
/// with p99 ≤ `p99` (and the publisher never further behind), nothing missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Search {
    pub(crate) subscribers: usize,
    pub(crate) p99: Duration,
}

impl Search {
    /// `SUBSCRIBERS:P99_MS`, as in `10000:100`.
    pub(crate) fn parse(text: &str) -> Result<Search, String> {
        let (subscribers, p99) = text
            .split_once(':')
            .ok_or_else(|| format!("{text:?} is not SUBSCRIBERS:P99_MS"))?;
        let subscribers = subscribers
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{text:?}: not a subscriber count"))?;
        let p99 = p99
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{text:?}: not a p99 in milliseconds"))?;
        Ok(Search {
            subscribers,
            p99: Duration::from_millis(p99),
        })
    }
}

/// One row: a server at one subscriber count.
struct Row {
    name: String,
    count: usize,
    open_time: Duration,
    reported: Option<usize>,
    per_connection: f64,
    /// The same once the rate runs are over (the connections idle again):
    /// what their buffers kept.
    per_connection_after: Option<f64>,
    /// The rate runs (none for the floors).
    rounds: Vec<Step>,
}

impl Row {
    /// The round with the median p99.
    fn median(&self) -> Option<&Step> {
        let mut rounds: Vec<&Step> = self.rounds.iter().collect();
        rounds.sort_by_key(|s| s.p99);
        rounds.get(rounds.len() / 2).copied()
    }
}

/// A saturation search's outcome for one server.
struct Saturation {
    name: String,
    search: Search,
    best: Option<Step>,
    failed: Option<Step>,
    steps: Vec<(f64, bool)>,
    took: Duration,
}

/// Opens `count` connections on a fresh channel.
async fn open_group<P: Protocol>(
    protocol: P,
    server: &Server,
    count: usize,
    generation: &mut u32,
    epoch: Instant,
) -> Result<Subscribers, String> {
    *generation += 1;
    let channel = format!("{}-{count}-{generation}", P::TECHNIQUE.as_str());
    let subscribers = Subscribers::open(protocol, server.addr, channel, count, epoch)?;
    subscribers.wait_open(P::UNIT).await?;
    Ok(subscribers)
}

/// The highest rate within `search`'s p99 with nothing missing: doubling
/// from 25/s, then bisecting, within the time budget. A failed step leaves a
/// backlog, so the connections are closed and opened afresh after one.
/// Returns the connections still open.
async fn saturate<P: Protocol>(
    protocol: P,
    server: &Server,
    subscribers: Subscribers,
    search: Search,
    options: &Options,
    generation: &mut u32,
    epoch: Instant,
) -> Result<(Saturation, Option<Subscribers>), String> {
    let began = Instant::now();
    let budget = Duration::from_secs(options.saturation_seconds);
    let count = subscribers.count;
    let mut group = Some(subscribers);
    let mut best: Option<Step> = None;
    let mut failed: Option<Step> = None;
    let mut steps = Vec::new();
    let mut rate = FIRST_RATE;
    let mut bisections = 0;
    while began.elapsed() < budget {
        let live = match group.take() {
            Some(live) => live,
            None => open_group(protocol, server, count, generation, epoch).await?,
        };
        let step = measure(server, &live, rate, options.step_seconds, STEP_DRAIN).await?;
        let passed = step.passes(search.p99);
        eprintln!(
            "{} saturation {} {count} (p99 ≤ {}): {rate:.0}/s {} (p50 {}, p99 {}, {} missing, publisher behind by {} at worst, {:.0} deliveries/s, server CPU {:.2} µs, client CPU {:.2} µs per delivery)",
            P::TECHNIQUE.as_str(),
            server.name,
            human(search.p99),
            if passed { "passes" } else { "fails" },
            human(step.p50),
            human(step.p99),
            step.missing,
            human(step.behind),
            step.per_second,
            step.cpu_per_delivery.as_secs_f64() * 1e6,
            step.client_cpu_per_delivery.as_secs_f64() * 1e6,
        );
        steps.push((rate, passed));
        if step.complete() {
            group = Some(live);
        } else {
            live.close().await;
        }
        if passed {
            best = Some(step);
        } else {
            failed = Some(step);
        }
        let low = best.as_ref().map_or(0.0, |s| s.rate);
        rate = match &failed {
            None if rate * 2.0 <= HIGHEST_RATE => rate * 2.0,
            None => break,
            Some(high) => {
                if bisections == BISECTIONS || high.rate / low.max(1e-9) < 1.1 {
                    break;
                }
                bisections += 1;
                ((low + high.rate) / 2.0).round().max(1.0)
            }
        };
    }
    let outcome = Saturation {
        name: server.name.clone(),
        search,
        best,
        failed,
        steps,
        took: began.elapsed(),
    };
    Ok((outcome, group))
}

/// The whole scenario for `protocol`; returns its tables.
pub(crate) async fn scenario<P: Protocol>(
    protocol: P,
    options: &Options,
    servers: &[&str],
    nginx: Option<&PathBuf>,
) -> Result<String, String> {
    let began = Instant::now();
    let load_before = load_average();
    let epoch = Instant::now();
    let name = P::TECHNIQUE.as_str();
    for search in &options.saturation {
        if !options.sse_counts.contains(&search.subscribers) {
            eprintln!(
                "NOTICE: no saturation search at {} subscribers: not among --subscribers",
                search.subscribers
            );
        }
    }
    let mut rows = Vec::new();
    let mut saturations = Vec::new();
    let variants: Vec<String> = servers.iter().flat_map(|s| P::variants(s)).collect();
    for variant in &variants {
        for &count in &options.sse_counts {
            let server = Server::start(variant, nginx, options.workers)?;
            let floor = is_floor(variant);
            warm_up(protocol, &server, !floor, epoch).await?;
            let baseline = pss_tree(server.pid());
            let opening = Instant::now();
            let mut generation = 0;
            let subscribers = open_group(protocol, &server, count, &mut generation, epoch).await?;
            let open_time = opening.elapsed();
            let reported = await_connections::<P>(&server, count).await?;
            let held = pss_tree(server.pid());
            let per_connection = held.saturating_sub(baseline) as f64 / count as f64;
            eprintln!(
                "{name} {variant} {count}: open in {}, {:.1} KiB per {}, server reports {reported:?}",
                human(open_time),
                per_connection / 1024.0,
                P::UNIT,
            );
            let mut row = Row {
                name: variant.clone(),
                count,
                open_time,
                reported,
                per_connection,
                per_connection_after: None,
                rounds: Vec::new(),
            };
            if floor {
                subscribers.close().await;
                rows.push(row);
                continue;
            }
            let mut group = Some(subscribers);
            for round in 0..options.sse_rounds {
                let live = match group.take() {
                    Some(live) => live,
                    None => open_group(protocol, &server, count, &mut generation, epoch).await?,
                };
                let step = measure(
                    &server,
                    &live,
                    options.sse_rate,
                    options.sse_seconds,
                    RATE_DRAIN,
                )
                .await?;
                eprintln!(
                    "{name} {variant} {count} × {}/s, round {round}: {} of {} received, p50 {}, p99 {}, max {}, {} missing, {:.0} deliveries/s, server CPU {:.2} µs, client CPU {:.2} µs per delivery, publisher behind by {} at worst",
                    options.sse_rate,
                    step.received,
                    step.published * count as u64,
                    human(step.p50),
                    human(step.p99),
                    human(step.max),
                    step.missing,
                    step.per_second,
                    step.cpu_per_delivery.as_secs_f64() * 1e6,
                    step.client_cpu_per_delivery.as_secs_f64() * 1e6,
                    human(step.behind),
                );
                if !step.complete() {
                    eprintln!(
                        "{name} {variant} {count}: {} {}s closed; first error: {}",
                        step.closed,
                        P::UNIT,
                        live.tally.first_error()
                    );
                }
                if step.complete() {
                    group = Some(live);
                } else {
                    // Its backlog would spill into the next run.
                    live.close().await;
                }
                row.rounds.push(step);
            }
            if group.is_some() {
                let after = pss_tree(server.pid());
                row.per_connection_after =
                    Some(after.saturating_sub(baseline) as f64 / count as f64);
            }
            rows.push(row);
            let searches = options
                .saturation
                .iter()
                .filter(|s| s.subscribers == count && options.saturation_seconds > 0);
            for search in searches {
                let live = match group.take() {
                    Some(live) => live,
                    None => open_group(protocol, &server, count, &mut generation, epoch).await?,
                };
                let (outcome, left) = saturate(
                    protocol,
                    &server,
                    live,
                    *search,
                    options,
                    &mut generation,
                    epoch,
                )
                .await?;
                saturations.push(outcome);
                group = left;
            }
            if let Some(live) = group {
                live.close().await;
            }
        }
    }
    Ok(tables::<P>(
        options,
        &rows,
        &saturations,
        &load_before,
        began.elapsed(),
    ))
}

fn ratio(ours: Duration, theirs: Duration) -> String {
    format!("{:.2}", ours.as_secs_f64() / theirs.as_secs_f64().max(1e-9))
}

fn tables<P: Protocol>(
    options: &Options,
    rows: &[Row],
    saturations: &[Saturation],
    load_before: &str,
    took: Duration,
) -> String {
    let (title, unit) = (P::TITLE, P::UNIT);
    let ran = |peer: &&str| *peer == "axum" || rows.iter().any(|r| r.name == *peer);
    let p99_peers: Vec<&str> = P99_PEERS.into_iter().filter(|p| ran(p)).collect();
    let p99_of = |name: &str, count: usize| {
        rows.iter()
            .find(|r| r.name == name && r.count == count)
            .and_then(Row::median)
            .map(|s| s.p99)
    };
    let versus_heads: String = p99_peers.iter().map(|p| format!(" p99 vs {p} |")).collect();
    let versus_rule = "---:|".repeat(p99_peers.len());
    let mut table = format!(
        "\n### {title} fan-out: {} msg/s for {} s to each subscriber count, {} rounds\n\n\
         Load average at the start {load_before}, at the end {}; the scenario took {}.\n\
         Memory: server Pss after every {unit} {}, minus before, per {unit}; \
         \"after the rounds\": the same once the rounds are over, on the same {unit}s, idle again.\n\
         Latency: from sending each publish request to each subscriber's parsing of the message; \
         the round with the median p99 is shown, with the range of p99 over the rounds.\n\
         Server CPU: the server's user + system time from the first publish to the last delivery, per delivery \
         (client CPU: the same for the load generator, subscribers and publisher).\n\
         Publisher behind: how late the (sequential) publisher got against its schedule at worst.\n\
         missing = Σ over rounds and subscribers of messages never received (must be 0).\n\n\
         | server | subscribers | memory per idle {unit} | … after the rounds | time to open all | {unit}s the server reports | published | p50 | p99 | p99 range | max |{versus_heads} deliveries/s | server CPU per delivery | client CPU per delivery | publisher behind | missing |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|{versus_rule}---:|---:|---:|---:|---:|\n",
        options.sse_rate,
        options.sse_seconds,
        options.sse_rounds,
        load_average(),
        human(took),
        P::OPENED,
    );
    for row in rows {
        let reported = row.reported.map_or("-".into(), |n| n.to_string());
        let after = row
            .per_connection_after
            .map_or("-".into(), |bytes| format!("{:.1} KiB", bytes / 1024.0));
        let _ = write!(
            table,
            "| {} | {} | {:.1} KiB | {after} | {} | {reported} |",
            row.name,
            row.count,
            row.per_connection / 1024.0,
            human(row.open_time),
        );
        let Some(step) = row.median() else {
            table.push_str(&" - |".repeat(10 + p99_peers.len()));
            table.push('\n');
            continue;
        };
        let versus: String = p99_peers
            .iter()
            .map(|peer| {
                let ratio = p99_of(peer, row.count).map_or("-".into(), |p| ratio(step.p99, p));
                format!(" {ratio} |")
            })
            .collect();
        let low = row.rounds.iter().map(|s| s.p99).min().unwrap_or_default();
        let high = row.rounds.iter().map(|s| s.p99).max().unwrap_or_default();
        let missing: u64 = row.rounds.iter().map(|s| s.missing).sum();
        let extra: u64 = row.rounds.iter().map(|s| s.extra).sum();
        let closed: usize = row.rounds.iter().map(|s| s.closed).sum();
        let mut missing = missing.to_string();
        if extra > 0 || closed > 0 {
            let _ = write!(missing, " ({extra} duplicated, {closed} {unit}s closed)");
        }
        let _ = writeln!(
            table,
            " {} | {} | {} | {}–{} | {} |{versus} {:.0} | {:.2} µs | {:.2} µs | {} | {missing} |",
            step.published,
            human(step.p50),
            human(step.p99),
            human(low),
            human(high),
            human(step.max),
            step.per_second,
            step.cpu_per_delivery.as_secs_f64() * 1e6,
            step.client_cpu_per_delivery.as_secs_f64() * 1e6,
            human(step.behind),
        );
    }
    if saturations.is_empty() {
        return table;
    }
    let ran = |peer: &&str| *peer != "axum-4k" || saturations.iter().any(|s| s.name == *peer);
    let peers: Vec<&str> = SATURATION_PEERS.into_iter().filter(|p| ran(p)).collect();
    let best_of = |name: &str, search: Search| {
        saturations
            .iter()
            .find(|s| s.name == name && s.search == search)
            .and_then(|s| s.best.as_ref())
            .map(|s| s.rate)
    };
    let versus_heads: String = peers.iter().map(|p| format!(" vs {p} |")).collect();
    let versus_rule = "---:|".repeat(peers.len());
    let _ = write!(
        table,
        "\n### {title} saturation: the highest publish rate within a p99, nothing missing\n\n\
         Steps of {} s (doubling from {FIRST_RATE}/s, then {BISECTIONS} bisections, at most {} s per search); \
         a step fails on its p99 over the limit, on the publisher falling further than the limit behind \
         its schedule, or on any message not received within {} s of the last publish.\n\n\
         | server | subscribers | p99 limit | highest passing rate | its p50 | its p99 | its deliveries/s | its server CPU per delivery | lowest failing rate | why it failed |{versus_heads} steps (rate: pass/fail) | search took |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---|{versus_rule}---|---:|\n",
        options.step_seconds,
        options.saturation_seconds,
        STEP_DRAIN.as_secs(),
    );
    for outcome in saturations {
        let rate = outcome.best.as_ref().map(|s| s.rate);
        let versus: String = peers
            .iter()
            .map(|peer| match (rate, best_of(peer, outcome.search)) {
                (Some(ours), Some(theirs)) => format!(" {:.2} |", ours / theirs),
                _ => " - |".into(),
            })
            .collect();
        let steps = outcome
            .steps
            .iter()
            .map(|(rate, passed)| format!("{rate:.0}: {}", if *passed { "✓" } else { "✗" }))
            .collect::<Vec<_>>()
            .join(", ");
        let lowest = outcome.steps.iter().map(|s| s.0).fold(FIRST_RATE, f64::min);
        let best = outcome.best.as_ref().map_or_else(
            || format!("< {lowest:.0}/s | - | - | - | -"),
            |s| {
                format!(
                    "{:.0}/s | {} | {} | {:.0} | {:.2} µs",
                    s.rate,
                    human(s.p50),
                    human(s.p99),
                    s.per_second,
                    s.cpu_per_delivery.as_secs_f64() * 1e6
                )
            },
        );
        let failed = outcome.failed.as_ref().map_or_else(
            || "none | -".into(),
            |s| format!("{:.0}/s | {}", s.rate, s.why_not(outcome.search.p99, unit)),
        );
        let _ = writeln!(
            table,
            "| {} | {} | {} | {best} | {failed} |{versus} {steps} | {} |",
            outcome.name,
            outcome.search.subscribers,
            human(outcome.search.p99),
            human(outcome.took),
        );
    }
    let _ = writeln!(
        table,
        "\nLoad average after the saturation searches: {}.",
        load_average()
    );
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_fails_on_latency_or_loss() {
        let step = Step {
            rate: 50.0,
            published: 10,
            received: 10,
            missing: 0,
            extra: 0,
            closed: 0,
            p50: Duration::from_millis(1),
            p99: Duration::from_millis(100),
            max: Duration::from_millis(300),
            per_second: 1.0,
            behind: Duration::ZERO,
            cpu_per_delivery: Duration::ZERO,
            client_cpu_per_delivery: Duration::ZERO,
        };
        let limit = Duration::from_millis(100);
        assert!(step.passes(limit));
        assert!(
            !Step {
                missing: 1,
                ..step.clone()
            }
            .passes(limit)
        );
        assert!(
            !Step {
                p99: Duration::from_millis(101),
                ..step.clone()
            }
            .passes(limit)
        );
        assert!(
            !Step {
                behind: Duration::from_millis(101),
                ..step
            }
            .passes(limit)
        );
    }

    #[test]
    fn parses_searches() {
        assert_eq!(
            Search::parse("10000:100").unwrap(),
            Search {
                subscribers: 10_000,
                p99: Duration::from_millis(100)
            }
        );
        assert!(Search::parse("0:100").is_err());
        assert!(Search::parse("100").is_err());
    }
}
