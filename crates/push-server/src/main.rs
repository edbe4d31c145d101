//! `push-server`: see `push-server --help`.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;
use push_server::Server;
use push_server::cli::Args;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = EnvFilter::try_new(&args.log).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(%err, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::new(&args).await?;
    let listener = push_live::bind(args.listen, args.backlog)
        .map_err(|err| format!("cannot listen on {}: {err}", args.listen))?;
    let addr = listener.local_addr()?;
    // The first line on stdout, for scripts and tests that pick port 0.
    let mut stdout = std::io::stdout();
    let scheme = if args.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    writeln!(stdout, "listening on {scheme}://{addr}")?;
    stdout.flush()?;
    if args.publish_protected() {
        tracing::warn!(
            "publishing is off: {addr} is not a loopback address and there is no --publish-token, so POST /pub answers 403 (set --publish-token, or --open-publish to let anyone publish)"
        );
    } else if args.publish_token.is_none() {
        tracing::warn!("no --publish-token: anyone who can reach this server may publish");
    }
    match (&args.redis_url, &args.redis_master) {
        (Some(url), _) if args.redis_cluster => {
            let seeds: Vec<String> = url.split(',').map(|seed| redact(seed.trim())).collect();
            tracing::info!(seeds = %seeds.join(","), "hub on a Redis Cluster: nodes on it share channels (sharded Pub/Sub)");
        }
        (Some(url), _) => {
            tracing::info!(redis = %redact(url), "hub on Redis: nodes on the same Redis share channels");
        }
        (None, Some(master)) => {
            let sentinels: Vec<String> = args
                .redis_sentinel
                .iter()
                .map(|s| format!("{}:{}", s.host, s.port))
                .collect();
            tracing::info!(%master, sentinels = %sentinels.join(","), "hub on the Redis master Sentinel names: nodes on it share channels");
        }
        (None, None) => tracing::info!("in-memory hub (one node; --redis-url for several)"),
    }
    if args.jwt_secret.is_some() {
        tracing::info!("subscribers need a token (--jwt-secret is set)");
    }
    tracing::info!(%addr, "serving the demo at {scheme}://{addr}/");
    let shutdown = server.shutdown();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received: shutting down");
        shutdown.trigger();
    });
    server.run(listener).await?;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// A Redis URL without its password, for the log.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://…{}", &url[..scheme], &url[at..]),
        _ => url.to_owned(),
    }
}
