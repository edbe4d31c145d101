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
//! Set `DASHBOARD_TICKS=N` to stop after N readings, and `DASHBOARD_PORT` for
//! another port (0: any free one). Ctrl-C ends the open streams gracefully.
#![allow(clippy::print_stdout)]

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use push_live::sse::{SseConfig, SseHandler};
use push_live::{EventName, Hub, MemoryHub, MemoryHubConfig, Publication};

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
    // Ctrl-C ends every open stream with a `retry:` hint, then the server.
    let shutdown = push_live::Shutdown::new();
    let config = SseConfig::default().with_shutdown(shutdown.token().clone());
    let sse = SseHandler::new(hub.clone(), config);
    let port: u16 = std::env::var("DASHBOARD_PORT").map_or(Ok(8090), |p| p.parse())?;
    let listener = push_live::bind(([127, 0, 0, 1], port).into(), 1024)?;
    println!("dashboard on http://{}/", listener.local_addr()?);

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
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.trigger();
    });
    let server = tokio::spawn(push_live::serve(
        listener,
        service,
        shutdown.clone(),
        push_live::ServeConfig::default(),
        None,
    ));

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
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = shutdown.triggered() => break,
        }
    }
    shutdown.trigger();
    server.await??;
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
