//! A chat over WebSockets with several rooms: one socket per browser tab on
//! the `push.v1` command endpoint, subscribed to every room, publishing into
//! the one it is in. A bot written with the Rust client (`WsSession`) sits in
//! the lobby and answers `!time`.
//!
//! ```sh
//! cargo run --example chat        # then open http://127.0.0.1:8091/ in two tabs
//! ```
//!
//! Set `CHAT_SCRIPT=1` to run a scripted conversation between two Rust
//! clients instead, printed as it happens (the tests do).
#![allow(clippy::print_stdout)]

use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use push_live::ws::{Origins, WsClientConfig, WsConfig, WsHandler, WsSession};
use push_live::{ChannelName, Item, MemoryHub, MemoryHubConfig, Publication, Start};

const ROOMS: [&str; 3] = ["lobby", "rust", "random"];

const PAGE: &str = r##"<!doctype html>
<meta charset="utf-8">
<title>push · chat</title>
<style>
  body { font: 15px system-ui, sans-serif; margin: 0; display: grid; grid-template-columns: 10rem 1fr; height: 100vh }
  nav { background: #1e293b; color: #e2e8f0; padding: 1rem }
  nav button { display: block; width: 100%; margin: .25rem 0; padding: .5rem; border: 0; border-radius: .4rem; text-align: left; cursor: pointer }
  nav button.here { background: #38bdf8 } nav .unread { float: right; font-weight: bold }
  main { display: grid; grid-template-rows: 1fr auto }
  #log { overflow-y: auto; padding: 1rem } #log p { margin: .2rem 0 } #log b { color: #0369a1 }
  form { display: flex; gap: .5rem; padding: 1rem; border-top: 1px solid #cbd5e1 }
  form input[name=text] { flex: 1 }
</style>
<nav><h3>Rooms</h3><div id="rooms"></div><p><small id="status">connecting…</small></p></nav>
<main><div id="log"></div>
<form><input name="who" size="8" placeholder="name"><input name="text" placeholder="say something" autocomplete="off"><button>Send</button></form></main>
<script type="module">
  const rooms = ["lobby", "rust", "random"];
  const history = Object.fromEntries(rooms.map((r) => [r, []]));
  const cursors = {};
  const unread = {};
  let here = "lobby", socket, ref = 0;
  const $ = (id) => document.getElementById(id);
  function draw() {
    $("rooms").replaceChildren(...rooms.map((room) => {
      const b = document.createElement("button");
      b.textContent = "#" + room;
      if (unread[room]) b.insertAdjacentHTML("beforeend", `<span class="unread">${unread[room]}</span>`);
      b.className = room === here ? "here" : "";
      b.onclick = () => { here = room; unread[room] = 0; draw(); };
      return b;
    }));
    $("log").replaceChildren(...history[here].map(({ who, text }) => {
      const p = document.createElement("p");
      p.append(Object.assign(document.createElement("b"), { textContent: who + ": " }), text);
      return p;
    }));
    $("log").scrollTop = 1e9;
  }
  function connect() {
    socket = new WebSocket(`ws://${location.host}/ws`, "push.v1");
    socket.onopen = () => {
      $("status").textContent = "live";
      // Every room, from where this tab left off (or the recent history).
      for (const room of rooms)
        socket.send(JSON.stringify({ op: "subscribe", channel: room, since: cursors[room] ?? "earliest" }));
    };
    socket.onmessage = (event) => {
      const frame = JSON.parse(event.data);
      if (frame.op === "gap" || frame.op === "reset") { cursors[frame.channel] = frame.resume; return; }
      if (frame.op) return; // acks and errors
      cursors[frame.channel] = frame.id;
      history[frame.channel].push(JSON.parse(frame.data));
      if (frame.channel !== here) unread[frame.channel] = (unread[frame.channel] || 0) + 1;
      draw();
    };
    socket.onclose = () => { $("status").textContent = "reconnecting…"; setTimeout(connect, 1000); };
  }
  document.querySelector("form").onsubmit = (event) => {
    event.preventDefault();
    const form = event.target, text = form.text.value.trim();
    if (!text || socket.readyState !== WebSocket.OPEN) return;
    const who = form.who.value.trim() || "anonymous";
    socket.send(JSON.stringify({ op: "publish", channel: here, data: JSON.stringify({ who, text }), ref: ++ref }));
    form.text.value = "";
  };
  draw();
  connect();
</script>
"##;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // A longer history than the default: a new tab sees the conversation.
    let hub = MemoryHub::with_config(MemoryHubConfig::default().with_max_messages(200))?;
    let config = WsConfig::commands()
        .with_publish(true)
        .with_origins(Origins::SameHost);
    // Ctrl-C closes every socket with 1001, then the server.
    let mut shutdown = push_live::Shutdown::new();
    let ws = WsHandler::new(hub.clone(), config.with_shutdown(shutdown.token().clone()));
    shutdown.track(ws.socket_tasks());
    let port: u16 = std::env::var("CHAT_PORT").map_or(Ok(8091), |p| p.parse())?;
    let listener = push_live::bind(([127, 0, 0, 1], port).into(), 1024)?;
    let addr = listener.local_addr()?;
    println!("chat on http://{addr}/");
    let service = service_fn(move |request: Request<Incoming>| {
        let ws = ws.clone();
        async move {
            if request.uri().path() == "/" {
                let mut page = Response::new(Either::Right(Full::new(Bytes::from(PAGE))));
                page.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/html; charset=utf-8"),
                );
                return Ok::<_, Infallible>(page);
            }
            Ok(ws.handle(request).await.map(Either::Left))
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

    let url = format!("ws://{addr}/ws");
    if std::env::var("CHAT_SCRIPT").is_ok() {
        return script(&url).await;
    }
    tokio::select! {
        ended = bot(&url) => ended,
        // `serve` returns once every socket has closed (1001).
        () = shutdown.triggered() => Ok(server.await??),
    }
}

/// A line of chat as the page writes it.
fn line(who: &str, text: &str) -> Publication {
    Publication::new(serde_json::json!({ "who": who, "text": text }).to_string())
}

/// Sits in the lobby and answers `!time`.
async fn bot(url: &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut session = WsSession::connect(url, WsClientConfig::default()).await?;
    let control = session.control();
    let lobby: ChannelName = "lobby".parse()?;
    control.subscribe(&lobby, Start::Live).await?;
    control
        .publish(&lobby, line("bot", "hello! say !time"))
        .await?;
    while let Some(item) = session.next().await {
        let Ok((_, Item::Message(message))) = item else {
            continue;
        };
        let said: serde_json::Value = serde_json::from_slice(message.data()).unwrap_or_default();
        if said["who"] != "bot" && said["text"] == "!time" {
            let secs = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            control
                .publish(&lobby, line("bot", &format!("it is {secs} s since 1970")))
                .await?;
        }
    }
    Ok(())
}

/// Two Rust clients talk across two rooms; each message printed on arrival.
async fn script(url: &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (mut ada, mut bob) = (
        WsSession::connect(url, WsClientConfig::default()).await?,
        WsSession::connect(url, WsClientConfig::default()).await?,
    );
    let rooms: Vec<ChannelName> = ROOMS.iter().map(|r| r.parse()).collect::<Result<_, _>>()?;
    for room in &rooms {
        ada.control().subscribe(room, Start::Live).await?;
        bob.control().subscribe(room, Start::Live).await?;
    }
    let said = [
        (&rooms[0], "ada", "hi bob"),
        (&rooms[1], "bob", "anyone here likes lifetimes?"),
        (&rooms[0], "bob", "hi ada"),
        (&rooms[2], "ada", "see you in #rust"),
    ];
    for (room, who, text) in said {
        let speaker = if who == "ada" {
            ada.control()
        } else {
            bob.control()
        };
        let id = speaker.publish(room, line(who, text)).await?;
        println!("{who} said in #{room} (id {id})");
    }
    for (name, session) in [("ada", &mut ada), ("bob", &mut bob)] {
        for _ in 0..said.len() {
            let next = tokio::time::timeout(Duration::from_secs(10), session.next()).await?;
            if let Some(Ok((room, Item::Message(m)))) = next {
                println!(
                    "  {name} got #{room}: {}",
                    String::from_utf8_lossy(m.data())
                );
            }
        }
    }
    Ok(())
}
