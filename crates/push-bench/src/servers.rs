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
//! | `GET /ws/{channel}` | a WebSocket, each message one text frame (its JSON envelope) |
//! | `GET /bench/ws` | how many WebSockets are open (a number) |
//!
//! (`push-router` is the facade as its users run it: `push_live::Router` served by
//! `push_live::serve`; `push-server` is the standalone server with its defaults,
//! which reports no counts: the benchmark then trusts its own.)
//!
//! (the hello-world answers `Hello, World!` to everything; `hello-stream`
//! answers every request with an endless body that never yields, the floor
//! of a held streaming response; `hello-ws` accepts every WebSocket
//! handshake and holds the socket with tungstenite, sending nothing, the
//! floor of a held WebSocket; `write-floor` takes over each WebSocket's TCP
//! stream after the handshake and writes every published message, one frame
//! encoded once, to all of them from the publish handler in one loop, as
//! nginx does: the floor of a fan-out on this machine. It reads nothing and
//! drops a socket whose kernel buffer is full.)

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Json};
use axum::routing::{get, post};
use bytes::Bytes;
use futures_util::SinkExt as _;
use http::HeaderValue;
use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::{Service, service_fn};
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use push_core::{Hub, MemoryHub, MemorySubscription, Publication};
use push_live::http::Technique;
use push_longpoll::{LongPollConfig, LongPollHandler};
use push_poll::{PollConfig, PollHandler};
use push_sse::{SseBody, SseConfig, SseHandler};
use push_ws::{WsConfig, WsHandler};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{Notify, broadcast};
use tokio_stream::Stream;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::BroadcastStream;
use tokio_tungstenite::WebSocketStream;
use tungstenite::protocol::{Role, WebSocketConfig};

use crate::listen::{self, Dispatch};

/// The servers this binary can run: push behind hyper-util's auto builder
/// (what a hyper user writes), push behind a peek-and-dispatch to hyper's
/// plain HTTP/1 and HTTP/2 connections, a bare hyper hello-world, the same
/// answering with an endless body or holding WebSockets (behind either),
/// and axum (its WebSockets with their default or a 4 KiB read buffer).
pub(crate) const NAMES: [&str; 13] = [
    "push-server",
    "push-served",
    "push",
    "push-direct",
    "push-router",
    "hello",
    "hello-stream",
    "hello-stream-direct",
    "hello-ws",
    "hello-ws-direct",
    "axum",
    "axum-4k",
    "write-floor",
];

pub(crate) async fn run(name: &str, listener: TcpListener, extra: &[String]) -> Result<(), String> {
    if !extra.is_empty() && name != "push-server" {
        return Err(format!("{name} takes no extra flags"));
    }
    match name {
        "push" => listen::serve(listener, PushServer::new(), Dispatch::Auto).await,
        "push-direct" => listen::serve(listener, PushServer::new(), Dispatch::Peek).await,
        "push-router" => serve_router(listener).await?,
        "push-server" => serve_push_server(listener, extra).await?,
        "push-served" => push_live::serve(
            listener,
            PushServer::new(),
            push_live::Shutdown::new(),
            push_live::ServeConfig::default(),
            None,
        )
        .await
        .map_err(|e| e.to_string())?,
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
        "hello-ws" => listen::serve(listener, ws_floor_service(), Dispatch::Auto).await,
        "hello-ws-direct" => listen::serve(listener, ws_floor_service(), Dispatch::Peek).await,
        "axum" => axum::serve(listener, axum_app(None))
            .await
            .map_err(|e| e.to_string())?,
        "axum-4k" => axum::serve(listener, axum_app(Some(4 << 10)))
            .await
            .map_err(|e| e.to_string())?,
        "write-floor" => listen::serve(listener, WriteFloor::default(), Dispatch::Peek).await,
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

/// A service accepting every WebSocket handshake (no checks beyond the key)
/// and holding the socket with tungstenite at a 4 KiB read buffer, reading
/// (so that pings are answered and a close is seen) and sending nothing.
fn ws_floor_service() -> impl Service<
    Request<Incoming>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    service_fn(|mut request: Request<Incoming>| {
        let accept = request
            .headers()
            .get(SEC_WEBSOCKET_KEY)
            .map(|key| tungstenite::handshake::derive_accept_key(key.as_bytes()))
            .and_then(|accept| HeaderValue::from_str(&accept).ok());
        let response = match accept {
            Some(accept) => {
                tokio::spawn(hold_socket(hyper::upgrade::on(&mut request)));
                let mut response = Response::new(Full::new(Bytes::new()));
                *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                let headers = response.headers_mut();
                headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
                headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
                headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
                response
            }
            None => status(400, "not a WebSocket handshake"),
        };
        drop(request);
        std::future::ready(Ok::<_, Infallible>(response))
    })
}

async fn hold_socket(upgrade: OnUpgrade) {
    let Ok(upgraded) = upgrade.await else {
        return;
    };
    let config = WebSocketConfig::default().read_buffer_size(4 << 10);
    let mut ws =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
    while let Some(Ok(_)) = ws.next().await {}
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
    ws: WsHandler<MemoryHub>,
}

/// The body of a push answer: a whole one, or an event stream.
type PushBody = Either<Full<Bytes>, SseBody<push_live::http::Attended<MemorySubscription>>>;

impl PushServer {
    fn new() -> Self {
        let hub = MemoryHub::new();
        PushServer(Arc::new(Routes {
            poll: PollHandler::new(hub.clone(), PollConfig::default()),
            longpoll: LongPollHandler::new(hub.clone(), LongPollConfig::default()),
            sse: SseHandler::new(hub.clone(), SseConfig::default()),
            ws: WsHandler::new(hub.clone(), WsConfig::default()),
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
        if request.uri().path().starts_with("/ws/") {
            return Box::pin(
                async move { Ok(server.0.ws.handle(request).await.map(Either::Left)) },
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
                    server.0.longpoll.connections().to_string(),
                )))
            } else if path == "/bench/sse" {
                Response::new(Full::new(Bytes::from(
                    server.0.sse.connections().to_string(),
                )))
            } else if path == "/bench/ws" {
                Response::new(Full::new(Bytes::from(
                    server.0.ws.connections().to_string(),
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
    /// One `tokio::sync::broadcast` per channel for the WebSockets, of each
    /// message's JSON envelope as text (as axum's chat example broadcasts
    /// `String`s), made when the first socket subscribes.
    sockets: Arc<RwLock<HashMap<String, broadcast::Sender<String>>>>,
    /// The WebSockets' read buffer, when not axum's default (128 KiB).
    ws_read_buffer: Option<usize>,
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

    /// The channel's broadcast to WebSockets, made on first use.
    fn sockets(&self, name: &str) -> broadcast::Sender<String> {
        let mut sockets = self
            .sockets
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        sockets
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

fn axum_app(ws_read_buffer: Option<usize>) -> axum::Router {
    let state = AppState {
        ws_read_buffer,
        ..AppState::default()
    };
    axum::Router::new()
        .route("/pub/{channel}", post(axum_publish))
        .route("/poll/{channel}", get(axum_poll))
        .route("/longpoll/{channel}", get(axum_longpoll))
        .route("/bench/held", get(axum_held))
        .route("/sse/{channel}", get(axum_sse))
        .route("/bench/sse", get(axum_sse_open))
        .route("/ws/{channel}", get(axum_ws))
        .route("/bench/ws", get(axum_ws_open))
        .with_state(state)
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
    let sockets = state
        .sockets
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&name)
        .cloned();
    if let Some(sockets) = sockets {
        // Encoded once, as push encodes each message's envelope once.
        let envelope = json!({ "channel": name, "id": id.to_string(), "data": body });
        let _ = sockets.send(envelope.to_string());
    }
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

/// WebSockets as axum's docs show them (`WebSocketUpgrade`, its default
/// configuration unless `ws_read_buffer` is set) and as its chat example
/// runs one: the socket split, a task forwarding the broadcast to it (a
/// receiver that lags ends the loop, as there), a task reading from it, and
/// either one ending the other.
async fn axum_ws(
    ws: WebSocketUpgrade,
    State(state): State<AppState>,
    Path(channel): Path<String>,
) -> impl IntoResponse {
    let ws = match state.ws_read_buffer {
        Some(size) => ws.read_buffer_size(size),
        None => ws,
    };
    ws.on_upgrade(move |socket| axum_socket(socket, state, channel))
}

async fn axum_socket(socket: WebSocket, state: AppState, channel: String) {
    let mut receiver_of_messages = state.sockets(&channel).subscribe();
    let (mut sender, mut receiver) = futures_util::StreamExt::split(socket);
    let mut send_task = tokio::spawn(async move {
        while let Ok(message) = receiver_of_messages.recv().await {
            if sender.send(Message::text(message)).await.is_err() {
                break;
            }
        }
    });
    let mut recv_task = tokio::spawn(async move {
        // The client has nothing to say: reading answers its pings and sees
        // it go.
        while let Some(Ok(_)) = receiver.next().await {}
    });
    tokio::select! {
        _ = &mut send_task => recv_task.abort(),
        _ = &mut recv_task => send_task.abort(),
    }
}

async fn axum_ws_open(State(state): State<AppState>) -> String {
    let sockets = state
        .sockets
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    sockets
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

/// The fan-out floor: sockets taken over after the handshake, written from
/// the publish handler (see the module's doc).
#[derive(Clone, Default)]
struct WriteFloor {
    sockets: Arc<std::sync::Mutex<Vec<tokio::net::TcpStream>>>,
    published: Arc<AtomicUsize>,
}

impl Service<Request<Incoming>> for WriteFloor {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        let floor = self.clone();
        Box::pin(async move {
            let path = request.uri().path();
            if path.starts_with("/ws/") {
                let accept = request
                    .headers()
                    .get(SEC_WEBSOCKET_KEY)
                    .map(|key| tungstenite::handshake::derive_accept_key(key.as_bytes()))
                    .and_then(|accept| HeaderValue::from_str(&accept).ok());
                let Some(accept) = accept else {
                    return Ok(status(400, "not a WebSocket handshake"));
                };
                let upgrade = hyper::upgrade::on(&mut request);
                let sockets = floor.sockets.clone();
                tokio::spawn(async move {
                    let Ok(upgraded) = upgrade.await else {
                        return;
                    };
                    if let (Ok(parts), Ok(mut sockets)) = (
                        upgraded.downcast::<TokioIo<tokio::net::TcpStream>>(),
                        sockets.lock(),
                    ) {
                        sockets.push(parts.io.into_inner());
                    }
                });
                let mut response = Response::new(Full::new(Bytes::new()));
                *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                let headers = response.headers_mut();
                headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
                headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
                headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
                return Ok(response);
            }
            if path == "/bench/ws" {
                let open = floor.sockets.lock().map(|s| s.len()).unwrap_or(0);
                return Ok(Response::new(Full::new(Bytes::from(open.to_string()))));
            }
            if !path.starts_with("/pub/") {
                return Ok(status(404, "not found"));
            }
            let Ok(body) = request.into_body().collect().await else {
                return Ok(status(400, "unreadable body"));
            };
            let id = floor.published.fetch_add(1, Ordering::Relaxed);
            let mut payload = Vec::with_capacity(64);
            payload.extend_from_slice(format!("{{\"id\":\"{id}\",\"data\":\"").as_bytes());
            payload.extend_from_slice(&body.to_bytes());
            payload.extend_from_slice(b"\"}");
            // An unmasked, final text frame (RFC 6455 §5.2).
            let mut bytes = Vec::with_capacity(payload.len() + 10);
            bytes.push(0x81);
            match u16::try_from(payload.len()) {
                Ok(short) if short < 126 => bytes.push(u8::try_from(short).unwrap_or(0)),
                Ok(medium) => {
                    bytes.push(126);
                    bytes.extend_from_slice(&medium.to_be_bytes());
                }
                Err(_) => {
                    bytes.push(127);
                    bytes.extend_from_slice(&(payload.len() as u64).to_be_bytes());
                }
            }
            bytes.extend_from_slice(&payload);
            if let Ok(mut sockets) = floor.sockets.lock() {
                sockets.retain(|socket| socket.try_write(&bytes).is_ok_and(|n| n == bytes.len()));
            }
            Ok(Response::new(Full::new(Bytes::from(format!(
                "{{\"id\":\"{id}\"}}"
            )))))
        })
    }
}

/// The facade as a user runs it: `push_live::Router` (publishing on) served by
/// `push_live::serve`, plus the three counts the benchmark reads.
async fn serve_router(listener: TcpListener) -> Result<(), String> {
    let router = push_live::Router::new(
        MemoryHub::new(),
        push_live::RouterConfig::default().with_publish(true),
    );
    let shutdown = router.shutdown();
    // `Router::handle` boxes its future: this one stays small.
    let service = service_fn(move |request: Request<Incoming>| {
        let router = router.clone();
        async move {
            let count = match request.uri().path() {
                "/bench/held" => Some(router.connections(Technique::LongPoll)),
                "/bench/sse" => Some(router.connections(Technique::Sse)),
                "/bench/ws" => Some(router.connections(Technique::Ws)),
                _ => None,
            };
            if let Some(count) = count {
                return Ok::<_, Infallible>(Response::new(push_live::RouterBody::from_bytes(
                    count.to_string(),
                )));
            }
            Ok(router.handle(request).await)
        }
    });
    push_live::serve(
        listener,
        service,
        shutdown,
        push_live::ServeConfig::default(),
        None,
    )
    .await
    .map_err(|e| e.to_string())
}

/// The standalone server as `cargo run -p push-server` runs it (defaults:
/// memory hub, metered, no auth configured, unless `extra` flags say
/// otherwise), on this listener.
async fn serve_push_server(listener: TcpListener, extra: &[String]) -> Result<(), String> {
    use clap::Parser as _;
    let addr = listener
        .local_addr()
        .map_err(|e| e.to_string())?
        .to_string();
    let args = push_server::cli::Args::try_parse_from(
        ["push-server", "--listen", &addr]
            .into_iter()
            .map(str::to_owned)
            .chain(extra.iter().cloned()),
    )
    .map_err(|e| e.to_string())?;
    let server = push_server::Server::new(&args)
        .await
        .map_err(|e| e.to_string())?;
    server.run(listener).await.map_err(|e| e.to_string())
}
