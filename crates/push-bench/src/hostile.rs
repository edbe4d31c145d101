//! The hostile scenario: what an attacker's load costs push-server, and what
//! its honest clients see meanwhile.
//!
//! 1. Retained memory: 1 GiB published as 256 KiB messages into 4,096
//!    channels (the defaults: 1 MiB of history per channel would keep all
//!    of it without a hub-wide budget); the server's Pss before and after.
//! 2. Connecting while silent sockets hold the connection limit: 1,000
//!    sockets that never send a byte, `--max-connections 1000`, and a header
//!    deadline long enough that only shedding can let anyone in; then honest
//!    requests one after the other, each on a fresh connection.
//! 3. The same limit held by 1,000 event streams (nothing idle to shed): how
//!    long a new client waits for its `503`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::Request;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::driver::{Options, Server};
use crate::load;
use crate::memory::pss_tree;

const MESSAGE: usize = 256 << 10;
const PUBLISHED: usize = 1 << 30;
const CHANNELS: usize = 4_096;
const PUBLISHERS: usize = 8;
const LIMIT: usize = 1_000;
const HONEST: usize = 200;

pub(crate) async fn scenario(options: &Options) -> Result<String, String> {
    let mut out = String::from("\n### Hostile clients (push-server)\n\n");
    let (before, after, seconds) = retained_memory(options).await?;
    let _ = writeln!(
        out,
        "Retained memory: {} MiB published as {} messages of {} KiB into {CHANNELS} channels in {seconds:.1} s, with the defaults; server Pss {:.1} MiB before, {:.1} MiB after.\n",
        PUBLISHED >> 20,
        PUBLISHED / MESSAGE,
        MESSAGE >> 10,
        mib(before),
        mib(after),
    );
    println!("{out}");
    let (silent, waits, shed) = connect_while_held_by_silent_sockets(options).await?;
    let _ = writeln!(
        out,
        "Connecting while {silent} silent sockets hold --max-connections {LIMIT}: {HONEST} honest requests one after the other, each on a fresh connection: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms from connect to answer; {shed} silent sockets shed.\n",
        ms(waits.value_at_quantile(0.5)),
        ms(waits.value_at_quantile(0.99)),
        ms(waits.max()),
    );
    println!("{out}");
    let (streams, refusal) = refused_while_held_by_streams(options).await?;
    let _ = writeln!(
        out,
        "The same limit held by {streams} event streams (nothing idle): a new client's 503 came {:.2} ms after it connected.",
        refusal.as_secs_f64() * 1e3
    );
    Ok(out)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1e3
}

async fn retained_memory(options: &Options) -> Result<(u64, u64, f64), String> {
    let server = Server::start("push-server", None, options.workers)?;
    let before = pss_tree(server.pid());
    let began = Instant::now();
    let body = Bytes::from(vec![b'x'; MESSAGE]);
    let mut publishers = tokio::task::JoinSet::new();
    for publisher in 0..PUBLISHERS {
        let addr = server.addr;
        let body = body.clone();
        publishers.spawn(async move {
            let mut sender = keep_alive(addr).await?;
            let mut n = publisher;
            while n < PUBLISHED / MESSAGE {
                let request = Request::post(format!("/pub/filler-{}", n % CHANNELS))
                    .header(http::header::HOST, addr.to_string())
                    .body(Full::new(body.clone()))
                    .map_err(|e| e.to_string())?;
                sender.ready().await.map_err(|e| e.to_string())?;
                let response = sender
                    .send_request(request)
                    .await
                    .map_err(|e| e.to_string())?;
                let status = response.status();
                response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| e.to_string())?;
                if !status.is_success() {
                    return Err(format!("publish answered {status}"));
                }
                n += PUBLISHERS;
            }
            Ok::<_, String>(())
        });
    }
    while let Some(done) = publishers.join_next().await {
        done.map_err(|e| e.to_string())??;
    }
    let seconds = began.elapsed().as_secs_f64();
    let after = pss_tree(server.pid());
    Ok((before, after, seconds))
}

async fn keep_alive(
    addr: SocketAddr,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(sender)
}

async fn connect_while_held_by_silent_sockets(
    options: &Options,
) -> Result<(usize, Histogram<u64>, usize), String> {
    let limit = LIMIT.to_string();
    let server = Server::start_with(
        "push-server",
        None,
        options.workers,
        &["--max-connections", &limit, "--header-timeout", "600"],
    )?;
    let mut silent = Vec::with_capacity(LIMIT);
    for _ in 0..LIMIT {
        silent.push(
            TcpStream::connect(server.addr)
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    // Every silent socket is the server's once one request has been answered
    // after them (the accept queue is first in, first out).
    load::once(server.addr, &load::get("/healthz", &[])).await?;
    let mut waits = Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
    for _ in 0..HONEST {
        let began = Instant::now();
        let answer = load::once(server.addr, &load::get("/healthz", &[])).await?;
        if answer.status != 200 {
            return Err(format!("an honest request got {}", answer.status));
        }
        let micros = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
        waits.saturating_record(micros.max(1));
    }
    let metrics = load::once(server.addr, &load::get("/metrics", &[])).await?;
    let metrics = String::from_utf8_lossy(&metrics.body);
    let shed = metrics
        .lines()
        .find_map(|line| line.strip_prefix("push_http_connections_closed_total{reason=\"shed\"} "))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .ok_or("no shed count in /metrics")?;
    Ok((silent.len(), waits, shed))
}

async fn refused_while_held_by_streams(options: &Options) -> Result<(usize, Duration), String> {
    let limit = LIMIT.to_string();
    let server = Server::start_with(
        "push-server",
        None,
        options.workers,
        &["--max-connections", &limit],
    )?;
    let mut streams = load::hold_many(server.addr, &load::get("/sse/held", &[]), LIMIT);
    // The streams never end: wait until the server holds them all.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let began = Instant::now();
        let answer = load::once(server.addr, &load::get("/healthz", &[])).await?;
        if answer.status == 503 {
            let refusal = began.elapsed();
            streams.abort_all();
            return Ok((LIMIT, refusal));
        }
        if Instant::now() > deadline {
            let failed = streams
                .try_join_next()
                .map(|r| r.map(|a| a.map(|a| a.status)));
            return Err(format!(
                "the streams never filled the limit (last answer {}, a stream ended with {failed:?})",
                answer.status
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
