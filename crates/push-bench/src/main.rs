//! push-bench: the load generator and peer servers behind `cargo xtask bench`.
//!
//! - `push-bench run [--seconds N] [--connections N] [--held N]
//!   [--only poll|longpoll|sse|ws|hostile|redis|failover|cluster] [--servers hello,push,push-direct,axum,nchan] [--workers N]
//!   [--rounds N] [--rust-load] [--subscribers N,N] [--rate N] [--sse-seconds N]
//!   [--sse-rounds N] [--saturation SUBSCRIBERS:P99_MS,…|none] [--saturation-seconds N]
//!   [--step-seconds N] [--ws-client tungstenite|lean]` starts each server in a process of its
//!   own, loads it over loopback, reads its memory from /proc, checks that no message
//!   went missing, and prints a summary table per scenario. The fan-out flags
//!   (`--subscribers` to `--step-seconds`) apply to both SSE and WebSockets.
//! - `push-bench serve push|push-direct|push-router|hello|hello-stream|hello-stream-direct|hello-ws|
//!   hello-ws-direct|axum|axum-4k|push-server [--listen ADDR] [--workers N] [-- FLAGS]` runs
//!   one server (the first line on stdout is `listening on http://ADDR`); `FLAGS` go to
//!   push-server.
//!
//! Client and server share the machine's cores: every server runs with the
//! same number of workers (threads, or nginx processes; default 1, so that on
//! two cores the server has one and the load generator the other). Compare
//! servers within one run, not across machines.
#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line program
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)] // statistics

mod cluster;
mod driver;
mod failover;
mod fanout;
mod hostile;
mod listen;
mod load;
mod memory;
mod nchan;
mod redis;
mod servers;
mod sse;
mod ws;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "usage:
  push-bench run [--seconds N] [--connections N] [--held N] [--only poll|longpoll|sse|ws|hostile|redis|failover|cluster]
                 [--servers hello,push,push-direct,axum,nchan] [--workers N] [--rounds N] [--rust-load]
                 [--subscribers 1000,10000] [--rate MSG_PER_S] [--sse-seconds N] [--sse-rounds N]
                 [--saturation 10000:100,10000:500,1000:100|none] [--saturation-seconds N]
                 [--step-seconds N] [--ws-client tungstenite|lean]
  push-bench serve push|push-direct|push-router|hello|hello-stream|hello-stream-direct|hello-ws|hello-ws-direct
                 |axum|axum-4k|push-server [--listen ADDR] [--workers N] [-- PUSH_SERVER_FLAGS]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("run") => parse_run(&args[1..]).and_then(|options| driver::run(&options)),
        Some("serve") => serve(&args[1..]),
        _ => Err(USAGE.to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("push-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_run(args: &[String]) -> Result<driver::Options, String> {
    let mut options = driver::Options::default();
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: &String| v.parse().map_err(|_| format!("{flag}: not a number: {v}"));
        match flag.as_str() {
            "--seconds" => options.seconds = number(value()?)?,
            "--connections" => {
                options.connections = usize::try_from(number(value()?)?).unwrap_or(64);
            }
            "--held" => options.held = usize::try_from(number(value()?)?).unwrap_or(10_000),
            "--only" => options.scenarios = vec![value()?.clone()],
            "--servers" => options.servers = value()?.split(',').map(str::to_owned).collect(),
            "--rust-load" => options.rust_load = true,
            "--rounds" => options.rounds = usize::try_from(number(value()?)?).unwrap_or(3).max(1),
            "--workers" => options.workers = usize::try_from(number(value()?)?).unwrap_or(1).max(1),
            "--subscribers" => {
                options.sse_counts = value()?
                    .split(',')
                    .map(|n| {
                        n.trim()
                            .parse::<usize>()
                            .map_err(|_| format!("{flag}: not a count: {n}"))
                    })
                    .filter(|n| n.as_ref().map_or(true, |n| *n > 0))
                    .collect::<Result<_, _>>()?;
            }
            "--rate" => options.sse_rate = positive(flag, value()?)?,
            "--sse-seconds" => options.sse_seconds = positive(flag, value()?)?,
            "--sse-rounds" => {
                options.sse_rounds = usize::try_from(number(value()?)?).unwrap_or(3).max(1);
            }
            "--saturation" => {
                let value = value()?;
                options.saturation = if value == "none" {
                    Vec::new()
                } else {
                    value
                        .split(',')
                        .map(fanout::Search::parse)
                        .collect::<Result<_, _>>()?
                };
            }
            "--saturation-seconds" => options.saturation_seconds = number(value()?)?,
            "--step-seconds" => options.step_seconds = positive(flag, value()?)?,
            "--ws-client" => options.ws_client = ws::WsClient::parse(value()?)?,
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    Ok(options)
}

/// A positive number of (fractional) units.
fn positive(flag: &str, value: &str) -> Result<f64, String> {
    value
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0)
        .ok_or_else(|| format!("{flag}: not a positive number: {value}"))
}

fn serve(args: &[String]) -> Result<(), String> {
    let name = args.first().ok_or(USAGE)?;
    let mut listen: SocketAddr = "127.0.0.1:0".parse().map_err(|_| "bad default address")?;
    let mut workers = std::thread::available_parallelism().map_or(1, usize::from);
    let mut rest = args[1..].iter();
    let mut extra = Vec::new();
    while let Some(flag) = rest.next() {
        if flag == "--" {
            extra = rest.by_ref().cloned().collect();
            break;
        }
        let value = rest.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = value.parse().map_err(|_| format!("bad address {value}"))?,
            "--workers" => workers = value.parse().map_err(|_| format!("bad count {value}"))?,
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let listener = push_live::bind(listen, listen::BACKLOG)
            .map_err(|e| format!("binding {listen}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        println!("listening on http://{addr}");
        servers::run(name, listener, &extra).await
    })
}

/// Where `program` is on the PATH, if anywhere.
pub(crate) fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|path| path.is_file())
}
