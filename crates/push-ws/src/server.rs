//! The WebSocket handler: the handshake on hyper, then one task per socket
//! (see `socket.rs`).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::header::{
    ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use push_core::wire::{self, Query, json};
use push_core::{ChannelName, Hub};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tungstenite::protocol::Role;

use crate::config::{Endpoint, WsConfig};
use crate::handshake::{self, Refusal, SUBPROTOCOL};
use crate::socket::{Mode, Socket};

#[derive(Debug)]
struct Shared {
    config: WsConfig,
    open: AtomicUsize,
    /// Every socket's task, so that a server can wait for them on shutdown.
    tasks: TaskTracker,
}

/// WebSockets over any [`Hub`]: a hyper `Service`, or call
/// [`handle`](Self::handle) from your own.
///
/// It checks the opening handshake (RFC 6455 over HTTP/1.1, RFC 8441's
/// extended CONNECT over HTTP/2; origin allow-list), answers it, and runs the
/// socket in a task of its own: on the channel endpoint each message is one
/// text frame with its JSON envelope; on the command endpoint (`push.v1`) the
/// client subscribes, unsubscribes and publishes with JSON commands. A
/// heartbeat closes sockets whose peer stopped answering, and a write
/// timeout those whose peer stopped reading; a subscriber that falls behind
/// never makes the server buffer: it gets the gap signal (or is closed, by
/// policy).
///
/// Serve it with upgrades enabled (`serve_connection_with_upgrades`, and
/// `http2().enable_connect_protocol()` for HTTP/2).
///
/// ```
/// use push_core::MemoryHub;
/// use push_ws::{WsConfig, WsHandler};
///
/// let ws = WsHandler::new(MemoryHub::new(), WsConfig::default());
/// assert_eq!(ws.open_sockets(), 0);
/// ```
#[derive(Debug)]
pub struct WsHandler<H> {
    hub: Arc<H>,
    shared: Arc<Shared>,
}

impl<H> Clone for WsHandler<H> {
    fn clone(&self) -> Self {
        WsHandler {
            hub: self.hub.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<H: Hub> WsHandler<H> {
    /// A handler over `hub`.
    pub fn new(hub: H, config: WsConfig) -> Self {
        Self::from_shared(Arc::new(hub), config)
    }

    /// A handler over a hub shared with other handlers.
    pub fn from_shared(hub: Arc<H>, config: WsConfig) -> Self {
        WsHandler {
            hub,
            shared: Arc::new(Shared {
                config,
                open: AtomicUsize::new(0),
                tasks: TaskTracker::new(),
            }),
        }
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &WsConfig {
        &self.shared.config
    }

    /// How many sockets are open right now.
    pub fn open_sockets(&self) -> usize {
        self.shared.open.load(Ordering::Relaxed)
    }

    /// The tracker of every socket's task. A server shutting down cancels
    /// the [`shutdown`](WsConfig::shutdown) token, then `close()`s this and
    /// awaits `wait()`: every socket has then finished its close handshake
    /// (or given up on it).
    pub fn socket_tasks(&self) -> TaskTracker {
        self.shared.tasks.clone()
    }

    /// Answers one handshake: `101` (or `200` over HTTP/2) and the socket's
    /// task, or a `4xx` naming what is wrong.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Full<Bytes>> {
        self.handle_until(request, None).await
    }

    /// Answers one handshake with a socket that is also closed at `deadline`
    /// with 1008 (policy violation), for example when the subscriber's token
    /// expires; nothing is written to it after that instant.
    pub async fn handle_until<B>(
        &self,
        request: Request<B>,
        deadline: Option<Instant>,
    ) -> Response<Full<Bytes>> {
        self.handle_with(request, Access::default().until(deadline))
            .await
    }

    /// Answers one handshake with a socket limited by `access`: closed at its
    /// deadline with 1008, and, on the command endpoint, subscribing and
    /// publishing only where it allows (else an error reply, code
    /// `forbidden`). Check the channel of `GET /ws/{channel}` yourself before
    /// calling this.
    pub async fn handle_with<B>(
        &self,
        mut request: Request<B>,
        access: Access,
    ) -> Response<Full<Bytes>> {
        let config = &self.shared.config;
        let upgrade = hyper::upgrade::on(&mut request);
        let (parts, _body) = request.into_parts();
        let accepted = match handshake::check(&parts, &config.origins) {
            Ok(accepted) => accepted,
            Err(refusal) => return refusal_response(&refusal),
        };
        if config
            .shutdown
            .as_ref()
            .is_some_and(CancellationToken::is_cancelled)
        {
            return refusal_response(&Refusal {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "shutting_down",
                message: "the server is shutting down: connect again shortly",
            });
        }
        let mode = match &config.endpoint {
            Endpoint::Commands => {
                if !accepted.offers_subprotocol {
                    return refusal_response(&Refusal {
                        status: StatusCode::BAD_REQUEST,
                        code: "subprotocol_required",
                        message: "the command endpoint speaks push.v1: offer it in Sec-WebSocket-Protocol",
                    });
                }
                Mode::Commands
            }
            Endpoint::Channel(locator) => {
                let found =
                    Query::parse(parts.uri.query(), config.max_query_len).and_then(|query| {
                        Ok((locator.locate(parts.uri.path(), &query)?, query.start()?))
                    });
                let (channel, start) = match found {
                    Ok(found) => found,
                    Err(err) => return error_response(&err),
                };
                match push_core::subscribe_pinned(&*self.hub, &channel, start).await {
                    Ok((subscription, head)) => Mode::Channel(channel, subscription, head),
                    Err(err) => return error_response(&err),
                }
            }
        };
        // Over HTTP/2 a plain 200 accepts (RFC 8441); over HTTP/1.1, a 101.
        let mut response = Response::new(Full::new(Bytes::new()));
        if let Some(accept) = accepted.accept {
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let headers = response.headers_mut();
            headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
            if let Ok(accept) = HeaderValue::from_str(&accept) {
                headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
            }
        }
        if matches!(mode, Mode::Commands) {
            response.headers_mut().insert(
                SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(SUBPROTOCOL),
            );
        }
        let hub = self.hub.clone();
        let open = Open::new(&self.shared);
        self.shared.tasks.spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let socket_config = open.config().socket();
            let ws = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(socket_config),
            )
            .await;
            Socket::new(ws, hub, open, mode, access).run().await;
        });
        response
    }
}

impl<H: Hub, B: Send + 'static> hyper::service::Service<Request<B>> for WsHandler<H> {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<B>) -> Self::Future {
        let handler = self.clone();
        Box::pin(async move { Ok(handler.handle(request).await) })
    }
}

/// Counts an open socket for as long as its task lives.
#[derive(Debug)]
pub(crate) struct Open(Arc<Shared>);

impl Open {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.open.fetch_add(1, Ordering::Relaxed);
        Open(shared.clone())
    }

    /// The configuration of the handler the socket belongs to.
    pub(crate) fn config(&self) -> &WsConfig {
        &self.0.config
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A rule on channels: may this socket subscribe (or publish) to it?
pub type ChannelRule = Arc<dyn Fn(&ChannelName) -> bool + Send + Sync>;

/// What one socket may do, for a server with its own authorisation (see
/// [`WsHandler::handle_with`]). The default allows everything the
/// configuration allows, for as long as the socket lives.
///
/// ```
/// use std::sync::Arc;
/// use push_ws::Access;
///
/// let access = Access::default().subscribing(Arc::new(|channel| channel.as_str().starts_with("public.")));
/// assert!(access.deadline.is_none());
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct Access {
    /// The socket is closed with 1008 at this instant, also while a write
    /// to it waits; no message is written to it after this instant.
    pub deadline: Option<Instant>,
    /// Channels the command endpoint may subscribe to (default: any).
    pub subscribe: Option<ChannelRule>,
    /// Channels the command endpoint may publish to, when the configuration
    /// allows publishing at all (default: any).
    pub publish: Option<ChannelRule>,
}

impl Access {
    /// Sets [`deadline`](Self::deadline).
    #[must_use]
    pub fn until(mut self, deadline: Option<Instant>) -> Self {
        self.deadline = deadline;
        self
    }

    /// Sets [`subscribe`](Self::subscribe).
    #[must_use]
    pub fn subscribing(mut self, rule: ChannelRule) -> Self {
        self.subscribe = Some(rule);
        self
    }

    /// Sets [`publish`](Self::publish).
    #[must_use]
    pub fn publishing(mut self, rule: ChannelRule) -> Self {
        self.publish = Some(rule);
        self
    }
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("deadline", &self.deadline)
            .field("subscribe", &self.subscribe.as_ref().map(|_| "rule"))
            .field("publish", &self.publish.as_ref().map(|_| "rule"))
            .finish()
    }
}

fn refusal_response(refusal: &Refusal) -> Response<Full<Bytes>> {
    let mut response = json_response(refusal.status, json::error(refusal.code, refusal.message));
    let headers = response.headers_mut();
    match refusal.status {
        StatusCode::UPGRADE_REQUIRED => {
            headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        }
        StatusCode::METHOD_NOT_ALLOWED => {
            headers.insert(ALLOW, HeaderValue::from_static("GET"));
        }
        _ => {}
    }
    response
}

fn error_response(err: &push_core::Error) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    json_response(status, json::error_for(err))
}

fn json_response(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(wire::CACHE_NEVER));
    response
}
