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
//! | `GET /sse/{channel}` | Server-Sent Events, each message one event |
//! | `GET /bench/sse` | how many event streams are open (a number) |
//!
//! (the hello-world answers `Hello, World!` to everything; `hello-stream`
//! answers every request with an endless body that never yields, the floor
//! of a held streaming response.)

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Json};
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::{Service, service_fn};
use hyper::{Request, Response};
use push_core::{Hub, MemoryHub, MemorySubscription, Publication};
use push_longpoll::{LongPollConfig, LongPollHandler};
use push_poll::{PollConfig, PollHandler};
use push_sse::{SseBody, SseConfig, SseHandler};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{Notify, broadcast};
use tokio_stream::Stream;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::BroadcastStream;

use crate::listen::{self, Dispatch};

/// The servers this binary can run: push behind hyper-util's auto builder
/// (what a hyper user writes), push behind a peek-and-dispatch to hyper's
/// plain HTTP/1 and HTTP/2 connections, a bare hyper hello-world, the same
/// answering with an endless body (behind either), and axum.
pub(crate) const NAMES: [&str; 6] = [
    "push",
    "push-direct",
    "hello",
    "hello-stream",
    "hello-stream-direct",
    "axum",
];

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
        "hello-stream" => listen::serve(listener, endless_service(), Dispatch::Auto).await,
        "hello-stream-direct" => listen::serve(listener, endless_service(), Dispatch::Peek).await,
        "axum" => axum::serve(listener, axum_app())
            .await
            .map_err(|e| e.to_string())?,
        other => return Err(format!("no server named {other:?}; try one of {NAMES:?}")),
    }
    Ok(())
}

/// A service answering every request with [`Endless`]. The request is
/// dropped at once, as push's SSE handler drops it before streaming.
fn endless_service() -> impl Service<
    Request<Incoming>,
    Response = Response<Endless>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Endless>, Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    service_fn(|request: Request<Incoming>| {
        drop(request);
        std::future::ready(Ok::<_, Infallible>(Response::new(Endless)))
    })
}

/// A response body that never yields a frame and never wakes: what a held
/// streaming response costs hyper before the body holds anything.
#[derive(Debug)]
pub(crate) struct Endless;

impl Body for Endless {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Pending
    }
}

/// push's own handlers behind a five-route switch (one shared `Arc`, so a
/// request costs one reference count, not one per handler).
#[derive(Clone)]
struct PushServer(Arc<Routes>);

struct Routes {
    hub: MemoryHub,
    poll: PollHandler<MemoryHub>,
    longpoll: LongPollHandler<MemoryHub>,
    sse: SseHandler<MemoryHub>,
}

/// The body of a push answer: a whole one, or an event stream.
type PushBody = Either<Full<Bytes>, SseBody<MemorySubscription>>;

impl PushServer {
    fn new() -> Self {
        let hub = MemoryHub::new();
        PushServer(Arc::new(Routes {
            poll: PollHandler::new(hub.clone(), PollConfig::default()),
            longpoll: LongPollHandler::new(hub.clone(), LongPollConfig::default()),
            sse: SseHandler::from_shared(Arc::new(hub.clone()), SseConfig::default()),
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
    type Response = Response<PushBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let server = self.clone();
        if request.uri().path().starts_with("/sse/") {
            // Its own future, so that the others do not carry its size.
            return Box::pin(
                async move { Ok(server.0.sse.handle(request).await.map(Either::Right)) },
            );
        }
        Box::pin(async move {
            let path = request.uri().path();
            let response = if path.starts_with("/pub/") {
                server.publish(request).await
            } else if path.starts_with("/poll/") {
                server.0.poll.handle(request).await
            } else if path.starts_with("/longpoll/") {
                server.0.longpoll.handle(request).await
            } else if path == "/bench/held" {
                Response::new(Full::new(Bytes::from(
                    server.0.longpoll.waiting().to_string(),
                )))
            } else if path == "/bench/sse" {
                Response::new(Full::new(Bytes::from(
                    server.0.sse.open_streams().to_string(),
                )))
            } else {
                status(404, "not found")
            };
            Ok(response.map(Either::Left))
        })
    }
}

// ---- axum, written the way its docs show: a Router, extractors, shared
// state, tokio's sync primitives, JSON via serde_json. ----

#[derive(Clone, Default)]
struct AppState {
    channels: Arc<RwLock<HashMap<String, Arc<Channel>>>>,
    held: Arc<AtomicUsize>,
    /// One `tokio::sync::broadcast` per channel for the event streams: each
    /// message with its id.
    events: Arc<RwLock<HashMap<String, Events>>>,
}

/// A channel's broadcast of `(id, data)`.
type Events = broadcast::Sender<(usize, String)>;

/// Messages a channel's broadcast keeps for subscribers that fall behind
/// (about push's hub default of 1,000); beyond that, one lags and loses them.
const AXUM_BROADCAST_CAPACITY: usize = 1024;

#[derive(Default)]
struct Channel {
    messages: RwLock<Vec<String>>,
    published: Notify,
}

impl AppState {
    /// The channel's broadcast, made on first use.
    fn events(&self, name: &str) -> Events {
        if let Some(sender) = self
            .events
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
        {
            return sender.clone();
        }
        let mut events = self
            .events
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        events
            .entry(name.to_owned())
            .or_insert_with(|| broadcast::channel(AXUM_BROADCAST_CAPACITY).0)
            .clone()
    }

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
        .route("/sse/{channel}", get(axum_sse))
        .route("/bench/sse", get(axum_sse_open))
        .with_state(AppState::default())
}

async fn axum_publish(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: String,
) -> Json<serde_json::Value> {
    let channel = state.channel(&name);
    let id = {
        let mut messages = channel
            .messages
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        messages.push(body.clone());
        messages.len()
    };
    channel.published.notify_waiters();
    // No receivers is not an error here: nobody is listening yet.
    let _ = state.events(&name).send((id, body));
    Json(json!({ "id": id.to_string() }))
}

/// Server-Sent Events as axum's docs show them: `Sse` over a stream, with
/// `KeepAlive::default()`; the stream is the channel's broadcast receiver.
async fn axum_sse(
    State(state): State<AppState>,
    Path(channel): Path<String>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let receiver = state.events(&channel).subscribe();
    let stream = BroadcastStream::new(receiver).filter_map(|published| {
        // A receiver that lagged behind the capacity gets an error: skip it.
        let (id, data) = published.ok()?;
        Some(Ok(Event::default().id(id.to_string()).data(data)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn axum_sse_open(State(state): State<AppState>) -> String {
    let events = state
        .events
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    events
        .values()
        .map(broadcast::Sender::receiver_count)
        .sum::<usize>()
        .to_string()
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
