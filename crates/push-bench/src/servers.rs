//! The servers under test, each run in a process of its own (`push-bench
//! serve NAME`) so that its memory can be read from /proc: push, a bare hyper
//! hello-world, and axum. Every one answers the same routes:
//!
//! | route | what |
//! |---|---|
//! | `POST /pub/{channel}` | publish the body |
//! | `GET /poll/{channel}?since=` | short polling, `ETag` and `304` |
//! | `GET /longpoll/{channel}?since=&timeout=` | long polling |
//! | `GET /bench/held` | how many long polls are held (a number) |
//!
//! (the hello-world answers `Hello, World!` to everything).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json};
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::{Service, service_fn};
use hyper::{Request, Response};
use push_core::{Hub, MemoryHub, Publication};
use push_longpoll::{LongPollConfig, LongPollHandler};
use push_poll::{PollConfig, PollHandler};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::listen::{self, Dispatch};

/// The servers this binary can run: push behind hyper-util's auto builder
/// (what a hyper user writes), push behind a peek-and-dispatch to hyper's
/// plain HTTP/1 and HTTP/2 connections, a bare hyper hello-world, and axum.
pub(crate) const NAMES: [&str; 4] = ["push", "push-direct", "hello", "axum"];

pub(crate) async fn run(name: &str, listener: TcpListener) -> Result<(), String> {
    match name {
        "push" => listen::serve(listener, PushServer::new(), Dispatch::Auto).await,
        "push-direct" => listen::serve(listener, PushServer::new(), Dispatch::Peek).await,
        "hello" => {
            let hello = service_fn(|_request: Request<Incoming>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                    b"Hello, World!",
                ))))
            });
            listen::serve(listener, hello, Dispatch::Auto).await;
        }
        "axum" => axum::serve(listener, axum_app())
            .await
            .map_err(|e| e.to_string())?,
        other => return Err(format!("no server named {other:?}; try one of {NAMES:?}")),
    }
    Ok(())
}

/// push's own handlers behind a four-route switch (one shared `Arc`, so a
/// request costs one reference count, not one per handler).
#[derive(Clone)]
struct PushServer(Arc<Routes>);

struct Routes {
    hub: MemoryHub,
    poll: PollHandler<MemoryHub>,
    longpoll: LongPollHandler<MemoryHub>,
}

impl PushServer {
    fn new() -> Self {
        let hub = MemoryHub::new();
        PushServer(Arc::new(Routes {
            poll: PollHandler::new(hub.clone(), PollConfig::default()),
            longpoll: LongPollHandler::new(hub.clone(), LongPollConfig::default()),
            hub,
        }))
    }

    async fn publish(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = request.uri().path().to_owned();
        let Some(channel) = path.rsplit('/').next().and_then(|c| c.parse().ok()) else {
            return status(400, "bad channel");
        };
        let Ok(body) = Limited::new(request.into_body(), 1 << 20).collect().await else {
            return status(400, "bad body");
        };
        match self
            .0
            .hub
            .publish(&channel, Publication::new(body.to_bytes()))
            .await
        {
            Ok(cursor) => Response::new(Full::new(Bytes::from(format!("{{\"id\":\"{cursor}\"}}")))),
            Err(e) => status(503, &e.to_string()),
        }
    }
}

fn status(code: u16, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text.to_owned())));
    *response.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
    response
}

impl Service<Request<Incoming>> for PushServer {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let server = self.clone();
        Box::pin(async move {
            let path = request.uri().path();
            Ok(if path.starts_with("/pub/") {
                server.publish(request).await
            } else if path.starts_with("/poll/") {
                server.0.poll.handle(request).await
            } else if path.starts_with("/longpoll/") {
                server.0.longpoll.handle(request).await
            } else if path == "/bench/held" {
                Response::new(Full::new(Bytes::from(
                    server.0.longpoll.waiting().to_string(),
                )))
            } else {
                status(404, "not found")
            })
        })
    }
}

// ---- axum, written the way its docs show: a Router, extractors, shared
// state, tokio's sync primitives, JSON via serde_json. ----

#[derive(Clone, Default)]
struct AppState {
    channels: Arc<RwLock<HashMap<String, Arc<Channel>>>>,
    held: Arc<AtomicUsize>,
}

#[derive(Default)]
struct Channel {
    messages: RwLock<Vec<String>>,
    published: Notify,
}

impl AppState {
    fn channel(&self, name: &str) -> Arc<Channel> {
        if let Some(channel) = self
            .channels
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
        {
            return channel.clone();
        }
        let mut channels = self
            .channels
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        channels.entry(name.to_owned()).or_default().clone()
    }
}

impl Channel {
    /// Messages after `since` (ids count from 1), and the id of the last.
    fn after(&self, since: Option<usize>) -> (Vec<serde_json::Value>, usize) {
        let messages = self
            .messages
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let since = since.unwrap_or(messages.len()).min(messages.len());
        let batch = messages[since..]
            .iter()
            .enumerate()
            .map(|(i, data)| json!({ "id": (since + i + 1).to_string(), "data": data }))
            .collect();
        (batch, messages.len())
    }
}

#[derive(Deserialize)]
struct Params {
    since: Option<usize>,
    timeout: Option<u64>,
}

fn axum_app() -> axum::Router {
    axum::Router::new()
        .route("/pub/{channel}", post(axum_publish))
        .route("/poll/{channel}", get(axum_poll))
        .route("/longpoll/{channel}", get(axum_longpoll))
        .route("/bench/held", get(axum_held))
        .with_state(AppState::default())
}

async fn axum_publish(
    State(state): State<AppState>,
    Path(channel): Path<String>,
    body: String,
) -> Json<serde_json::Value> {
    let channel = state.channel(&channel);
    let id = {
        let mut messages = channel
            .messages
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        messages.push(body);
        messages.len()
    };
    channel.published.notify_waiters();
    Json(json!({ "id": id.to_string() }))
}

async fn axum_poll(
    State(state): State<AppState>,
    Path(channel): Path<String>,
    Query(params): Query<Params>,
    headers: HeaderMap,
) -> impl IntoResponse {
    let (messages, head) = state.channel(&channel).after(params.since);
    let etag = format!("\"{head}\"");
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    (
        [
            (header::ETAG, etag),
            (header::CACHE_CONTROL, "no-cache".to_owned()),
        ],
        Json(json!({ "cursor": head.to_string(), "messages": messages })),
    )
        .into_response()
}

async fn axum_longpoll(
    State(state): State<AppState>,
    Path(channel): Path<String>,
    Query(params): Query<Params>,
) -> impl IntoResponse {
    let channel = state.channel(&channel);
    // Register for the wake-up before looking, so that a publish in between
    // is not missed.
    let published = channel.published.notified();
    tokio::pin!(published);
    published.as_mut().enable();
    let (messages, head) = channel.after(params.since);
    if !messages.is_empty() {
        return Json(json!({ "cursor": head.to_string(), "messages": messages })).into_response();
    }
    state.held.fetch_add(1, Ordering::Relaxed);
    let timeout = Duration::from_secs(params.timeout.unwrap_or(30).min(120));
    let woken = tokio::time::timeout(timeout, published).await.is_ok();
    state.held.fetch_sub(1, Ordering::Relaxed);
    let (messages, head) = channel.after(Some(head));
    if woken && !messages.is_empty() {
        Json(json!({ "cursor": head.to_string(), "messages": messages })).into_response()
    } else {
        (
            StatusCode::NO_CONTENT,
            [(header::ETAG, format!("\"{head}\""))],
        )
            .into_response()
    }
}

async fn axum_held(State(state): State<AppState>) -> String {
    state.held.load(Ordering::Relaxed).to_string()
}
