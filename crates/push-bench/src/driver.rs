//! `push-bench run`: starts each server in a process of its own, loads it
//! from this one over loopback, reads its memory from /proc, checks that no
//! message went missing, and prints one summary table per scenario.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::StatusCode;

use crate::fanout::{self, Search};
use crate::load::{self, Rate, Target};
use crate::memory::pss_tree;
use crate::nchan::{self, Nchan};
use crate::sse::Sse;
use crate::ws::{Ws, WsClient};

/// What to run.
#[derive(Debug)]
pub(crate) struct Options {
    pub(crate) seconds: u64,
    pub(crate) connections: usize,
    pub(crate) held: usize,
    pub(crate) scenarios: Vec<String>,
    pub(crate) servers: Vec<String>,
    pub(crate) rust_load: bool,
    pub(crate) workers: usize,
    pub(crate) rounds: usize,
    /// Fan-out (SSE and WebSocket): the subscriber counts to measure.
    pub(crate) sse_counts: Vec<usize>,
    /// Fan-out: messages per second in the latency run.
    pub(crate) sse_rate: f64,
    /// Fan-out: how long the latency run publishes.
    pub(crate) sse_seconds: f64,
    /// Fan-out: latency runs per server and subscriber count.
    pub(crate) sse_rounds: usize,
    /// Fan-out: the saturation searches.
    pub(crate) saturation: Vec<Search>,
    /// Fan-out: the time budget of one saturation search.
    pub(crate) saturation_seconds: u64,
    /// Fan-out: how long each saturation step publishes.
    pub(crate) step_seconds: f64,
    /// WebSocket: the subscribers' client.
    pub(crate) ws_client: WsClient,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seconds: 3,
            connections: 64,
            held: 10_000,
            scenarios: vec![
                "poll".into(),
                "longpoll".into(),
                "sse".into(),
                "ws".into(),
                "hostile".into(),
                "redis".into(),
                "failover".into(),
                "cluster".into(),
            ],
            servers: ["hello", "push", "push-direct", "axum", "nchan"]
                .map(String::from)
                .to_vec(),
            rust_load: false,
            workers: 1,
            rounds: 7,
            sse_counts: vec![1_000, 10_000],
            sse_rate: 50.0,
            sse_seconds: 5.0,
            sse_rounds: 3,
            saturation: vec![
                Search {
                    subscribers: 10_000,
                    p99: Duration::from_millis(100),
                },
                Search {
                    subscribers: 10_000,
                    p99: Duration::from_millis(500),
                },
                Search {
                    subscribers: 1_000,
                    p99: Duration::from_millis(100),
                },
            ],
            saturation_seconds: 40,
            step_seconds: 2.0,
            ws_client: WsClient::Tungstenite,
        }
    }
}

/// A server under test, however it runs.
enum Running {
    Ours(Child),
    Nchan(Nchan),
}

/// A server under test, started for a scenario and stopped when dropped.
pub(crate) struct Server {
    pub(crate) name: String,
    pub(crate) addr: SocketAddr,
    running: Running,
}

impl Server {
    /// Starts server `name` (`push-bench serve NAME`, or nginx for `nchan`).
    pub(crate) fn start(
        name: &str,
        nginx: Option<&PathBuf>,
        workers: usize,
    ) -> Result<Server, String> {
        Self::start_with(name, nginx, workers, &[])
    }

    /// Starts server `name` with `extra` arguments after `--` (push-server's
    /// own flags).
    pub(crate) fn start_with(
        name: &str,
        nginx: Option<&PathBuf>,
        workers: usize,
        extra: &[&str],
    ) -> Result<Server, String> {
        if name == "nchan" {
            let nginx = nginx.ok_or("Nchan is not available")?;
            let nchan = Nchan::start(nginx, workers)?;
            return Ok(Server {
                name: name.into(),
                addr: nchan.addr,
                running: Running::Nchan(nchan),
            });
        }
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .args([
                "serve",
                name,
                "--listen",
                "127.0.0.1:0",
                "--workers",
                &workers.to_string(),
            ])
            .args((!extra.is_empty()).then_some("--"))
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("{name} said {line:?} instead of its address"))?;
        Ok(Server {
            name: name.into(),
            addr,
            running: Running::Ours(child),
        })
    }

    /// The process to read memory and CPU time from (with its descendants).
    pub(crate) fn pid(&self) -> u32 {
        match &self.running {
            Running::Ours(child) => child.id(),
            Running::Nchan(nchan) => nchan.child.id(),
        }
    }

    /// How many long polls the server holds.
    async fn held(&self) -> Result<usize, String> {
        let answer = load::once(self.addr, &load::get("/bench/held", &[])).await?;
        let text = String::from_utf8_lossy(&answer.body);
        let number = match text.lines().find_map(|l| l.strip_prefix("subscribers:")) {
            Some(nchan) => nchan.trim(),
            None => text.trim(),
        };
        number.parse().map_err(|_| format!("held count {text:?}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Running::Ours(child) = &mut self.running {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub(crate) fn run(options: &Options) -> Result<(), String> {
    let nginx = if options.servers.iter().any(|s| s == "nchan") {
        match nchan::find_or_install() {
            Ok(nginx) => Some(nginx),
            Err(why) => {
                eprintln!("NOTICE: skipping the Nchan peer: {why}");
                None
            }
        }
    } else {
        None
    };
    let servers: Vec<&str> = options
        .servers
        .iter()
        .map(String::as_str)
        .filter(|s| *s != "nchan" || nginx.is_some())
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut summary = format!(
        "push-bench: {} server worker(s), {} cores, load average {}\n",
        options.workers,
        std::thread::available_parallelism().map_or(1, usize::from),
        load_average()
    );
    println!("{summary}");
    if options.scenarios.iter().any(|s| s == "poll") {
        let table = runtime.block_on(poll_scenario(options, &servers, nginx.as_ref()))?;
        println!("{table}");
        summary.push_str(&table);
    }
    if options.scenarios.iter().any(|s| s == "longpoll") {
        let table = runtime.block_on(longpoll_scenario(options, &servers, nginx.as_ref()))?;
        println!("{table}");
        summary.push_str(&table);
    }
    if options.scenarios.iter().any(|s| s == "sse") {
        let table = runtime.block_on(fanout::scenario(Sse, options, &servers, nginx.as_ref()))?;
        println!("{table}");
        summary.push_str(&table);
    }
    if options.scenarios.iter().any(|s| s == "ws") {
        let ws = Ws {
            client: options.ws_client,
        };
        let table = runtime.block_on(fanout::scenario(ws, options, &servers, nginx.as_ref()))?;
        println!("{table}");
        summary.push_str(&table);
    }
    if options.scenarios.iter().any(|s| s == "hostile") {
        let table = runtime.block_on(crate::hostile::scenario(options))?;
        println!("{table}");
        summary.push_str(&table);
    }
    if options.scenarios.iter().any(|s| s == "redis") {
        let table = runtime.block_on(crate::redis::scenario())?;
        println!("{table}");
        summary.push_str(&table);
    }
    if options.scenarios.iter().any(|s| s == "failover") {
        let table = runtime.block_on(crate::failover::scenario())?;
        println!("{table}");
        summary.push_str(&table);
    }
    if options.scenarios.iter().any(|s| s == "cluster") {
        let table = runtime.block_on(crate::cluster::scenario())?;
        println!("{table}");
        summary.push_str(&table);
    }
    let _ = writeln!(summary, "\nload average after: {}", load_average());
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/push-bench-summary.md");
    if std::fs::write(&out, &summary).is_ok() {
        println!("summary written to {}", out.display());
    }
    Ok(())
}

/// Short polling on the `304` path: every request names the current cursor.
/// All servers run side by side and are loaded in turn, round after round, so
/// that the machine's drift falls on all of them alike; each is reported by its
/// median round.
async fn poll_scenario(
    options: &Options,
    servers: &[&str],
    nginx: Option<&PathBuf>,
) -> Result<String, String> {
    let mut running = Vec::new();
    for name in servers {
        let server = Server::start(name, nginx, options.workers)?;
        let (path, headers, expect) = if *name == "hello" {
            ("/".to_owned(), Vec::new(), StatusCode::OK)
        } else {
            prime_poll(&server).await?
        };
        running.push((server, path, headers, expect, Vec::<Rate>::new()));
    }
    let duration = Duration::from_secs(options.seconds);
    for round in 0..options.rounds {
        for (server, path, headers, expect, rates) in &mut running {
            let target = Target {
                addr: server.addr,
                path,
                headers,
                expect: *expect,
            };
            let wrk =
                (!options.rust_load).then(|| load::wrk(&target, options.connections, duration));
            let rate = match wrk.flatten() {
                Some(rate) => rate?,
                None => load::rust_loop(&target, options.connections, duration).await?,
            };
            // wrk cannot tell a 304 from a 200: look once more.
            let check = load::once(server.addr, &load::get(path, headers)).await?;
            if check.status != expect.as_u16() {
                return Err(format!(
                    "{} answered {} on the 304 path",
                    server.name, check.status
                ));
            }
            eprintln!(
                "poll round {round} {}: {:.0} req/s ({})",
                server.name, rate.per_second, rate.tool
            );
            rates.push(rate);
        }
    }
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied()
    };
    let hello = running
        .iter()
        .find(|r| r.0.name == "hello")
        .map(|r| r.4.clone());
    let tool = running
        .first()
        .and_then(|r| r.4.first())
        .map_or("-", |r| r.tool);
    let mut table = format!(
        "\n### Short polling, the 304 path ({} connections, {} rounds of {} s, load by {tool})\n\n\
         Each server's rate is compared with hello-world's in the same round (the\n\
         machine's speed drifts between rounds); the ratio shown is the median of\n\
         those per-round ratios, with their range.\n\n\
         | server | requests/s (median) | p50 | p99 | unexpected answers | vs hello-world (median) | range |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
        options.connections, options.rounds, options.seconds
    );
    for (server, _, _, _, rates) in &running {
        let mut per_second: Vec<f64> = rates.iter().map(|r| r.per_second).collect();
        let Some(rate) = median(&mut per_second) else {
            continue;
        };
        let typical = rates
            .iter()
            .min_by(|a, b| {
                (a.per_second - rate)
                    .abs()
                    .total_cmp(&(b.per_second - rate).abs())
            })
            .cloned();
        let mut ratios: Vec<f64> = hello.as_ref().map_or_else(Vec::new, |hello| {
            rates
                .iter()
                .zip(hello)
                .map(|(r, h)| r.per_second / h.per_second)
                .collect()
        });
        let ratio = median(&mut ratios).map_or("-".into(), |r| format!("{r:.2}"));
        let range = match (ratios.first(), ratios.last()) {
            (Some(low), Some(high)) => format!("{low:.2}–{high:.2}"),
            _ => "-".into(),
        };
        let unexpected: u64 = rates.iter().map(|r| r.unexpected).sum();
        let (p50, p99) = typical.map_or((Duration::ZERO, Duration::ZERO), |r| (r.p50, r.p99));
        let _ = writeln!(
            table,
            "| {} | {rate:.0} | {} | {} | {unexpected} | {ratio} | {range} |",
            server.name,
            human(p50),
            human(p99),
        );
    }
    Ok(table)
}

/// Publishes one message and finds the conditional headers under which a
/// poll answers `304`.
async fn prime_poll(
    server: &Server,
) -> Result<(String, Vec<(String, String)>, StatusCode), String> {
    let published = load::once(server.addr, &load::post("/pub/bench", "hello")).await?;
    if published.status >= 300 {
        return Err(format!(
            "{}: publish answered {}",
            server.name, published.status
        ));
    }
    // As a real client does: learn the cursor once, then poll from it.
    let path = match server.name.as_str() {
        "push" | "push-direct" | "push-router" | "axum" => {
            let since = if server.name == "axum" {
                "0"
            } else {
                "earliest"
            };
            let first = load::once(
                server.addr,
                &load::get(&format!("/poll/bench?since={since}"), &[]),
            )
            .await?;
            let json: serde_json::Value =
                serde_json::from_slice(&first.body).map_err(|e| e.to_string())?;
            let cursor = json["cursor"]
                .as_str()
                .ok_or("no cursor in the first poll")?;
            format!("/poll/bench?since={cursor}")
        }
        _ => "/poll/bench".to_owned(),
    };
    let first = load::once(server.addr, &load::get(&path, &[])).await?;
    let mut headers = Vec::new();
    if let Some(etag) = load::header_of(&first.head, "etag") {
        headers.push(("If-None-Match".to_owned(), etag));
    }
    if let Some(modified) = load::header_of(&first.head, "last-modified") {
        headers.push(("If-Modified-Since".to_owned(), modified));
    }
    Ok((path, headers, StatusCode::NOT_MODIFIED))
}

struct Fanout {
    name: String,
    held: usize,
    delivered: usize,
    connect: Duration,
    p50: Duration,
    p99: Duration,
    max: Duration,
    per_held: f64,
}

/// `held` requests held open, then one publish: how fast all are answered,
/// and what each held request costs the server.
async fn longpoll_scenario(
    options: &Options,
    servers: &[&str],
    nginx: Option<&PathBuf>,
) -> Result<String, String> {
    let mut rows = Vec::new();
    for name in servers.iter().filter(|s| **s != "hello") {
        let server = Server::start(name, nginx, options.workers)?;
        // Warm up the paths outside the measured channel, then a baseline.
        load::once(server.addr, &load::post("/pub/warmup", "x")).await?;
        load::once(server.addr, &load::get("/poll/warmup", &[])).await?;
        server.held().await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let baseline = pss_tree(server.pid());

        let path = match *name {
            "nchan" => "/longpoll/bench".to_owned(),
            _ => "/longpoll/bench?timeout=110".to_owned(),
        };
        let began = Instant::now();
        let mut tasks = load::hold_many(server.addr, &load::get(&path, &[]), options.held);
        let wait_all = Instant::now() + Duration::from_secs(120);
        loop {
            let held = server.held().await?;
            if held >= options.held {
                break;
            }
            if Instant::now() > wait_all {
                return Err(format!("{name}: only {held} of {} held", options.held));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let connect = began.elapsed();
        let held_memory = pss_tree(server.pid());

        let message = format!("fanout-{}", std::process::id());
        let published = Instant::now();
        load::once(server.addr, &load::post("/pub/bench", &message)).await?;
        let mut latencies = Vec::with_capacity(options.held);
        let mut delivered = 0;
        while let Some(joined) = tasks.join_next().await {
            let arrival = joined.map_err(|e| e.to_string())??;
            latencies.push(arrival.at.saturating_duration_since(published));
            if arrival.status == 200
                && arrival
                    .body
                    .windows(message.len())
                    .any(|w| w == message.as_bytes())
            {
                delivered += 1;
            }
        }
        latencies.sort();
        let quantile = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
        let row = Fanout {
            name: server.name.clone(),
            held: options.held,
            delivered,
            connect,
            p50: quantile(0.5),
            p99: quantile(0.99),
            max: quantile(1.0),
            per_held: (held_memory.saturating_sub(baseline)) as f64 / options.held as f64,
        };
        eprintln!(
            "longpoll {name}: {} of {} delivered, p99 {}, {:.0} B per held request",
            row.delivered,
            row.held,
            human(row.p99),
            row.per_held
        );
        if row.delivered != row.held {
            eprintln!("WARNING: {name} lost {} messages", row.held - row.delivered);
        }
        rows.push(row);
    }
    let mut table = format!(
        "\n### Long polling: {} held requests, one publish\n\n\
         | server | delivered | publish → all answered: p50 | p99 | max | memory per held request | time to hold all |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
        options.held
    );
    for row in &rows {
        let _ = writeln!(
            table,
            "| {} | {}/{} | {} | {} | {} | {:.1} KiB | {} |",
            row.name,
            row.delivered,
            row.held,
            human(row.p50),
            human(row.p99),
            human(row.max),
            row.per_held / 1024.0,
            human(row.connect)
        );
    }
    Ok(table)
}

/// A duration in the unit that suits it.
pub(crate) fn human(d: Duration) -> String {
    let micros = d.as_secs_f64() * 1e6;
    if micros >= 1e6 {
        format!("{:.2} s", micros / 1e6)
    } else if micros >= 1e3 {
        format!("{:.2} ms", micros / 1e3)
    } else {
        format!("{micros:.0} µs")
    }
}

/// The 1, 5 and 15 minute load averages.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
