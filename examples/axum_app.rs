//! push inside an axum app: the app's own routes (a page, a login, a form
//! that publishes), push mounted under `/live` in one line, a session-cookie
//! check in front of it (done in axum: no session, `401`), push.js served by
//! the facade, and a graceful shutdown under `axum::serve` that ends event
//! streams with a `retry:` hint and closes WebSockets with 1001.
//!
//! ```sh
//! cargo run --example axum_app --features tower   # then open http://127.0.0.1:8093/
//! ```
//!
//! tests/axum_app.rs drives this very app (`app` and `serve` below) over
//! TCP. docs/axum.md walks through it.
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher as _, Hasher as _, RandomState};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{Form, Request, State};
use axum::http::header::{COOKIE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use push_live::{ChannelName, Hub as _, MemoryHub, Publication, RouterConfig};
use tokio::net::TcpListener;

/// The channel the page subscribes to and `POST /say` publishes to.
pub const CHANNEL: &str = "chat";
/// The name of the session cookie.
pub const SESSION_COOKIE: &str = "session";
/// How long a shutdown waits for WebSockets to finish their close handshake.
pub const GRACE: Duration = Duration::from_secs(5);

/// The app's sessions: token → user name. (A real app has its own store;
/// push only needs the check in front of it.)
#[derive(Clone, Default)]
pub struct Sessions {
    users: Arc<Mutex<HashMap<String, String>>>,
    made: Arc<AtomicU64>,
}

/// Without the tokens: they are secrets.
impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

impl Sessions {
    /// A new session for `user`; its token.
    fn open(&self, user: &str) -> String {
        let hashers = RandomState::new();
        let made = self.made.fetch_add(1, Ordering::Relaxed);
        let token: String = (0..2)
            .map(|half| {
                let mut hasher = hashers.build_hasher();
                hasher.write_u64(made);
                hasher.write_u64(half);
                format!("{:016x}", hasher.finish())
            })
            .collect();
        self.lock().insert(token.clone(), user.to_owned());
        token
    }

    /// The user whose session cookie `headers` carry, if any.
    fn user(&self, headers: &HeaderMap) -> Option<String> {
        let token = headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find_map(|(name, value)| (name == SESSION_COOKIE).then_some(value))?;
        self.lock().get(token).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.users.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the app's handlers share: push's router (its hub publishes) and the
/// sessions.
#[derive(Clone)]
struct AppState {
    live: push_live::Router<MemoryHub>,
    sessions: Sessions,
}

/// The whole app: its own routes, push.js at `/push.js`, and push under
/// `/live` behind the session check.
pub fn app(live: push_live::Router<MemoryHub>, sessions: Sessions) -> axum::Router {
    let state = AppState { live, sessions };
    // push under /live: axum strips the prefix, so push sees /sse/chat for
    // /live/sse/chat. The layer runs before every technique's request
    // (poll, long poll, SSE, both WebSocket endpoints).
    let live = axum::Router::new()
        .nest_service("/live", state.live.clone())
        .layer(middleware::from_fn_with_state(
            state.sessions.clone(),
            require_session,
        ));
    axum::Router::new()
        .route("/", get(page))
        .route("/login", post(login))
        .route("/say", post(say))
        .route_service("/push.js", push_live::js::PushJs)
        .with_state(state)
        .merge(live)
}

/// Serves the app on `listener` until `signal` resolves, then shuts down
/// gracefully: push's streams and sockets first (so that axum's wait for
/// its connections ends), then axum's connections. Returns when
/// `axum::serve` does.
///
/// # Errors
/// What `axum::serve` returns.
pub async fn serve(
    listener: TcpListener,
    live: push_live::Router<MemoryHub>,
    sessions: Sessions,
    signal: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let app = app(live.clone(), sessions);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            signal.await;
            // Event streams end with `retry:`, WebSockets get close 1001,
            // held long polls are answered; resolves once every socket's
            // task is done (at most GRACE).
            live.graceful_shutdown(GRACE).await;
        })
        .await
}

/// `401` unless the request carries a live session cookie.
async fn require_session(
    State(sessions): State<Sessions>,
    request: Request,
    next: Next,
) -> Response {
    if sessions.user(request.headers()).is_none() {
        return (StatusCode::UNAUTHORIZED, "log in first\n").into_response();
    }
    next.run(request).await
}

/// `POST /login` with a `name`: a session cookie, and back to the page.
async fn login(
    State(state): State<AppState>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let name = form.get("name").map_or("", |name| name.trim());
    if name.is_empty() || name.len() > 32 {
        return (StatusCode::BAD_REQUEST, "a name of 1 to 32 bytes\n").into_response();
    }
    let token = state.sessions.open(name);
    let cookie = format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax");
    (
        StatusCode::SEE_OTHER,
        [(SET_COOKIE, cookie), (LOCATION, "/".to_owned())],
    )
        .into_response()
}

/// `POST /say` with a `text`: published to the channel as `name: text`.
async fn say(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let Some(user) = state.sessions.user(&headers) else {
        return (StatusCode::UNAUTHORIZED, "log in first\n").into_response();
    };
    let Some(text) = form.get("text").filter(|text| !text.is_empty()) else {
        return (StatusCode::BAD_REQUEST, "say something\n").into_response();
    };
    let channel: ChannelName = match CHANNEL.parse() {
        Ok(channel) => channel,
        Err(err) => return (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    };
    let publication = Publication::new(format!("{user}: {text}"));
    match state.live.hub().publish(&channel, publication).await {
        Ok(_) => (StatusCode::SEE_OTHER, [(LOCATION, "/")]).into_response(),
        Err(err) => (StatusCode::SERVICE_UNAVAILABLE, err.to_string()).into_response(),
    }
}

/// The page: a login form, or the chat (push.js subscribed under `/live`).
async fn page(State(state): State<AppState>, headers: HeaderMap) -> Html<&'static str> {
    Html(if state.sessions.user(&headers).is_some() {
        CHAT_PAGE
    } else {
        LOGIN_PAGE
    })
}

const LOGIN_PAGE: &str = r#"<!doctype html>
<meta charset="utf-8"><title>axum + push</title>
<form method="post" action="/login">
  <input name="name" placeholder="your name" required maxlength="32">
  <button>log in</button>
</form>
"#;

const CHAT_PAGE: &str = r#"<!doctype html>
<meta charset="utf-8"><title>axum + push</title>
<ul id="log"></ul>
<form id="say" method="post" action="/say">
  <input name="text" autocomplete="off" required> <button>say</button>
</form>
<p id="via"></p>
<script type="module">
  import { subscribe } from "/push.js";
  const log = document.getElementById("log");
  // push is mounted under /live; the session cookie goes along by itself.
  subscribe("chat", (message) => {
    const line = document.createElement("li");
    line.textContent = message.data;
    log.append(line);
  }, {
    url: "/live",
    onTransport: (name) => { document.getElementById("via").textContent = "via " + name; },
  });
  const form = document.getElementById("say");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    await fetch("/say", { method: "POST", body: new URLSearchParams(new FormData(form)) });
    form.reset();
  });
</script>
"#;

#[tokio::main]
async fn main() -> io::Result<()> {
    let live = push_live::Router::new(MemoryHub::new(), RouterConfig::default());
    let listener = TcpListener::bind("127.0.0.1:8093").await?;
    println!("axum + push on http://{}/", listener.local_addr()?);
    let signal = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    serve(listener, live, Sessions::default(), signal).await?;
    println!("shut down");
    Ok(())
}
