//! A live dashboard over Server-Sent Events: this machine's load and memory,
//! published every second to the `dashboard` channel with one event name per
//! gauge, and a page whose `EventSource` shows them as they change. Open the
//! printed URL in a browser; stop the server and start it again, and the page
//! reconnects by itself (a `push.reset` tells it the history is new).
//!
//! ```sh
//! cargo run --example live_dashboard          # then open http://127.0.0.1:8090/
//! curl -N localhost:8090/sse/dashboard         # the raw stream
//! ```
//!
//! Set `DASHBOARD_TICKS=N` to stop after N readings (the tests do).
#![allow(clippy::print_stdout)]

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use push::sse::{SseConfig, SseHandler};
use push::{EventName, Hub, MemoryHub, MemoryHubConfig, Publication};
use tokio::net::TcpListener;

const PAGE: &str = r#"<!doctype html>
<meta charset="utf-8">
<title>push · live dashboard</title>
<style>
  body { font: 16px system-ui, sans-serif; margin: 2rem; background: #0f172a; color: #e2e8f0 }
  .gauges { display: grid; grid-template-columns: repeat(auto-fit, minmax(12rem, 1fr)); gap: 1rem }
  .gauge { background: #1e293b; border-radius: .75rem; padding: 1rem 1.25rem }
  .gauge b { display: block; font-size: 2.25rem; font-variant-numeric: tabular-nums }
  small { color: #94a3b8 }
</style>
<h1>Live dashboard</h1>
<div class="gauges">
  <div class="gauge"><small>load (1 min)</small><b id="load">…</b></div>
  <div class="gauge"><small>memory used</small><b id="memory">…</b></div>
  <div class="gauge"><small>readings received</small><b id="count">0</b></div>
</div>
<p><small id="status">connecting…</small></p>
<script type="module">
  // Named events: one listener per gauge. The browser reconnects by itself
  // and sends Last-Event-ID, so nothing is missed while it was away.
  const source = new EventSource("/sse/dashboard?since=earliest");
  let count = 0;
  const show = (id) => (event) => {
    document.getElementById(id).textContent = event.data;
    document.getElementById("count").textContent = ++count;
  };
  source.addEventListener("load", show("load"));
  source.addEventListener("memory", show("memory"));
  source.addEventListener("push.gap", () => status("some readings were missed"));
  source.addEventListener("push.reset", () => status("the server restarted"));
  source.onopen = () => status("live");
  source.onerror = () => status("reconnecting…");
  function status(text) { document.getElementById("status").textContent = text; }
</script>
"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A short history: a page that (re)connects gets the last readings first.
    let hub = MemoryHub::with_config(MemoryHubConfig::default().with_max_messages(20))?;
    let sse = SseHandler::new(hub.clone(), SseConfig::default());
    let port = std::env::var("DASHBOARD_PORT").unwrap_or_else(|_| "8090".into());
    let listener = TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("dashboard on http://{}/", listener.local_addr()?);

    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let sse = sse.clone();
            let service = service_fn(move |request: Request<Incoming>| {
                let sse = sse.clone();
                async move {
                    if request.uri().path() == "/" {
                        let mut page = Response::new(Either::Right(Full::new(Bytes::from(PAGE))));
                        page.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("text/html; charset=utf-8"),
                        );
                        return Ok::<_, Infallible>(page);
                    }
                    Ok(sse.handle(request).await.map(Either::Left))
                }
            });
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });

    let channel = "dashboard".parse()?;
    let (load, memory): (EventName, EventName) = ("load".parse()?, "memory".parse()?);
    let ticks: Option<u64> = std::env::var("DASHBOARD_TICKS")
        .ok()
        .and_then(|t| t.parse().ok());
    let mut tick = 0;
    while ticks.is_none_or(|ticks| tick < ticks) {
        let (load_now, memory_now) = readings();
        hub.publish(
            &channel,
            Publication::new(load_now).with_event(load.clone()),
        )
        .await?;
        let id = hub
            .publish(
                &channel,
                Publication::new(memory_now).with_event(memory.clone()),
            )
            .await?;
        println!("published reading {tick} (id {id})");
        tick += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(())
}

/// The 1-minute load average and the share of memory in use, from /proc
/// (or "n/a" where there is none).
fn readings() -> (String, String) {
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "n/a".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| -> Option<f64> {
        let line = meminfo.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    let memory = match (field("MemTotal:"), field("MemAvailable:")) {
        (Some(total), Some(available)) if total > 0.0 => {
            format!("{:.1} %", 100.0 * (total - available) / total)
        }
        _ => "n/a".into(),
    };
    (load, memory)
}
