//! The WebSocket handler: the handshake on hyper, then one task per socket
//! (see `socket.rs`).

use std::sync::Arc;

use bytes::Bytes;
use http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use push_core::Hub;
use push_http::{Access, Action, Attended, Handler, Head, Live, LiveCount};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tungstenite::protocol::Role;

use crate::config::{Endpoint, WsConfig};
use crate::handshake::{self, Refusal, SUBPROTOCOL};
use crate::incoming::Incoming;
use crate::socket::{Mode, Socket};

/// What every socket of a handler shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: WsConfig,
    open: LiveCount,
    /// Every socket's task, so that a server can wait for them on shutdown.
    tasks: TaskTracker,
}

impl AsRef<LiveCount> for Shared {
    fn as_ref(&self) -> &LiveCount {
        &self.open
    }
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
/// assert_eq!(ws.connections(), 0);
/// ```
#[derive(Debug)]
pub struct WsHandler<H> {
    hub: Arc<H>,
    shared: Arc<Shared>,
}

push_http::service!(WsHandler);

impl<H: Hub> WsHandler<H> {
    /// A handler over `hub` (a hub, or an `Arc` of one shared with other
    /// handlers).
    pub fn new(hub: impl Into<Arc<H>>, config: WsConfig) -> Self {
        WsHandler {
            hub: hub.into(),
            shared: Arc::new(Shared {
                config,
                open: LiveCount::default(),
                tasks: TaskTracker::new(),
            }),
        }
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &WsConfig {
        &self.shared.config
    }

    /// How many sockets are open right now.
    pub fn connections(&self) -> usize {
        self.shared.open.get()
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
        push_http::handle(self, request).await
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
    /// deadline with 1008; on the command endpoint, subscribing and
    /// publishing only where its rules allow (else an error reply, code
    /// `forbidden`); and its [`authorize`](Access::authorize) hook asked
    /// for the channel of `GET /ws/{channel}` before the handshake is
    /// answered (a denial is the handshake's answer), and for each
    /// `subscribe` and `publish` command (a denial is that command's error
    /// reply; the socket stays open).
    pub async fn handle_with<B>(
        &self,
        request: Request<B>,
        access: Access,
    ) -> Response<Full<Bytes>> {
        let (parts, _body) = request.into_parts();
        let head = Head::read(parts, self.shared.config.max_query_bytes);
        self.serve(head, access).await
    }

    async fn open(&self, head: Head, access: Access) -> Response<Full<Bytes>> {
        let config = &self.shared.config;
        let accepted = match handshake::check(head.parts(), &config.origins) {
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
            Endpoint::Echo => Mode::Echo,
            Endpoint::Channel(locator) => {
                let found = head
                    .channel(locator)
                    .and_then(|channel| Ok((channel, head.start()?)));
                let (mut channel, start) = match found {
                    Ok(found) => found,
                    Err(err) => return push_http::error_for(&err),
                };
                match access
                    .check(head.parts(), &channel, Action::Subscribe)
                    .await
                {
                    Ok(mapped) => channel = mapped.unwrap_or(channel),
                    Err(denial) => return denial.respond(),
                }
                let presence_events = match head.query().and_then(|q| q.flag("presence")) {
                    Ok(asked) => asked.unwrap_or(false),
                    Err(err) => return push_http::error_for(&err),
                };
                let member = push_http::member(&access, push_http::Technique::Ws);
                let started = match push_core::subscribe_pinned(&*self.hub, &channel, start).await {
                    Ok(started) => started,
                    Err(err) => return push_http::error_for(&err),
                };
                let (subscription, head) = started;
                match Attended::enter(&*self.hub, &channel, member, subscription, presence_events)
                    .await
                {
                    Ok(attended) => Mode::Channel(channel, attended, head),
                    Err(err) => return push_http::error_for(&err),
                }
            }
        };
        let mut parts = head.into_parts();
        let upgrade = parts.extensions.remove::<OnUpgrade>();
        // A command socket asks the hook with its handshake's head, for
        // every command: kept only when there is a hook to ask.
        let request =
            (matches!(mode, Mode::Commands) && access.authorize.is_some()).then(|| Box::new(parts));
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
        // permessage-deflate when the handler takes it and the client
        // offered it in a form it accepts.
        let deflate = config.deflate_threshold.filter(|_| accepted.offers_deflate);
        if deflate.is_some() {
            response.headers_mut().insert(
                SEC_WEBSOCKET_EXTENSIONS,
                HeaderValue::from_static(crate::deflate::RESPONSE),
            );
        }
        let inflate_limit = deflate.map(|_| config.max_message_bytes);
        if matches!(mode, Mode::Commands) {
            response.headers_mut().insert(
                SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(SUBPROTOCOL),
            );
        }
        let hub = self.hub.clone();
        let live = Live::new(&self.shared);
        self.shared.tasks.spawn(async move {
            let Some(upgrade) = upgrade else { return };
            let Ok(upgraded) = upgrade.await else { return };
            let socket_config = live.config.socket();
            // Invalid text fails as its first bad byte arrives, not once
            // tungstenite has the whole frame; compressed messages are
            // inflated before tungstenite reads them.
            let ws = WebSocketStream::from_raw_socket(
                Incoming::new(TokioIo::new(upgraded), inflate_limit),
                Role::Server,
                Some(socket_config),
            )
            .await;
            Socket::new(ws, hub, live, mode, access, request, deflate)
                .run()
                .await;
        });
        response
    }
}

impl<H: Hub> Handler for WsHandler<H> {
    type Body = Full<Bytes>;

    fn max_query_bytes(&self) -> usize {
        self.shared.config.max_query_bytes
    }

    /// Answers a handshake with a socket limited by `access` (see
    /// [`handle_with`](Self::handle_with)).
    fn serve(
        &self,
        head: Head,
        access: Access,
    ) -> impl Future<Output = Response<Full<Bytes>>> + Send + 'static {
        let handler = self.clone();
        async move { handler.open(head, access).await }
    }
}

fn refusal_response(refusal: &Refusal) -> Response<Full<Bytes>> {
    let mut response = match refusal.status {
        StatusCode::METHOD_NOT_ALLOWED => push_http::method_not_allowed("GET", refusal.message),
        status => push_http::error(status, refusal.code, refusal.message),
    };
    if refusal.status == StatusCode::UPGRADE_REQUIRED {
        let headers = response.headers_mut();
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
    }
    response
}
