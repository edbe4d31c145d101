//! One service for the whole wire contract: publish, poll, long poll, SSE and
//! both WebSocket endpoints over one hub.

mod body;
mod presence;
mod publish;
mod route;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::request::Parts;
use http::{Request, Response, StatusCode};
use hyper::body::Body;
use push_core::Hub;
use push_http::{Access, Authorize, Head, Technique};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use self::body::RouterBody;
use self::publish::Publisher;
pub use self::route::Route;
use crate::serve::Shutdown;

/// What a [`Router`] serves, and how.
///
/// Each transport's configuration is its crate's own; the router sets their
/// [`shutdown`](push_sse::SseConfig::shutdown) tokens to its own.
///
/// ```
/// use push_live::RouterConfig;
///
/// let config = RouterConfig::default().with_publish(true);
/// assert!(config.publish);
/// assert_eq!(config.max_message_bytes, 256 << 10);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RouterConfig {
    /// Whether `POST /pub/{channel}` publishes (default: no, so that a router
    /// mounted in your service does not let anyone publish; put your own
    /// check in front and turn it on, or publish from code).
    pub publish: bool,
    /// The largest message `POST /pub/{channel}` accepts as its body
    /// (default 256 KiB, the memory hub's default message limit); larger →
    /// `413`.
    pub max_message_bytes: usize,
    /// How long `POST /pub/{channel}` waits for the whole request body
    /// (default 15 s); a body that takes longer (trickled, or stalled) is
    /// answered `408` (`request_timeout`).
    pub publish_body_timeout: Duration,
    /// The longest query string accepted on `/pub/` (default
    /// [`push_http::DEFAULT_MAX_QUERY_BYTES`]).
    pub max_query_bytes: usize,
    /// `GET /poll/{channel}`.
    #[cfg(feature = "poll")]
    pub poll: push_poll::PollConfig,
    /// `GET /longpoll/{channel}`.
    #[cfg(feature = "longpoll")]
    pub longpoll: push_longpoll::LongPollConfig,
    /// `GET /sse/{channel}`.
    #[cfg(feature = "sse")]
    pub sse: push_sse::SseConfig,
    /// `GET /ws/{channel}`.
    #[cfg(feature = "ws")]
    pub ws: push_ws::WsConfig,
    /// `GET /ws` (subprotocol `push.v1`).
    #[cfg(feature = "ws")]
    pub ws_commands: push_ws::WsConfig,
    /// The app's hook, asked on every subscribe (every technique) and
    /// publish (`POST /pub`, `push.v1` commands): it allows, denies with a
    /// status, or maps the channel (see [`with_authorize`](Self::with_authorize)).
    /// Default: none, everything the rest of the configuration allows.
    pub authorize: Option<Arc<dyn Authorize>>,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            publish: false,
            max_message_bytes: 256 << 10,
            publish_body_timeout: Duration::from_secs(15),
            max_query_bytes: push_http::DEFAULT_MAX_QUERY_BYTES,
            #[cfg(feature = "poll")]
            poll: push_poll::PollConfig::default(),
            #[cfg(feature = "longpoll")]
            longpoll: push_longpoll::LongPollConfig::default(),
            #[cfg(feature = "sse")]
            sse: push_sse::SseConfig::default(),
            #[cfg(feature = "ws")]
            ws: push_ws::WsConfig::default(),
            #[cfg(feature = "ws")]
            ws_commands: push_ws::WsConfig::commands(),
            authorize: None,
        }
    }
}

impl RouterConfig {
    /// Sets [`publish`](Self::publish).
    #[must_use]
    pub fn with_publish(mut self, publish: bool) -> Self {
        self.publish = publish;
        self
    }

    /// Sets [`max_message_bytes`](Self::max_message_bytes).
    #[must_use]
    pub fn with_max_message_bytes(mut self, max: usize) -> Self {
        self.max_message_bytes = max;
        self
    }

    /// Sets [`publish_body_timeout`](Self::publish_body_timeout).
    #[must_use]
    pub fn with_publish_body_timeout(mut self, timeout: Duration) -> Self {
        self.publish_body_timeout = timeout;
        self
    }

    /// Sets [`authorize`](Self::authorize): the app decides, on every
    /// technique alike, who may subscribe and publish where.
    ///
    /// The hook gets the request's head (cookies, headers, the peer's
    /// address from [`push_http::peer`]), the channel as the client named
    /// it, and the [`Action`](push_http::Action). It runs once per request
    /// (per command on `GET /ws`), after the channel is read and before the
    /// hub is touched. A [`Decision::Deny`](push_http::Decision::Deny) is
    /// answered with its status and push's JSON error body (on `GET /ws`, an
    /// error reply to that command; the socket stays open); a
    /// [`Decision::Map`](push_http::Decision::Map) serves another channel
    /// instead, without rewriting the URL: `GET /sse/me` streams `user:42`.
    /// The hub, the messages and the acks then name the mapped channel, and
    /// cursors are the mapped channel's, so a client resumes at the same
    /// URL (`/sse/me`, `Last-Event-ID`) as long as the mapping holds.
    ///
    /// ```
    /// use http::request::Parts;
    /// use push_live::http::{Action, Decision, Denial};
    /// use push_live::{ChannelName, RouterConfig};
    ///
    /// /// The user a session cookie names (your session store goes here).
    /// fn user_of(parts: &Parts) -> Option<u64> {
    ///     let cookies = parts.headers.get(http::header::COOKIE)?.to_str().ok()?;
    ///     let session = cookies.split("; ").find_map(|c| c.strip_prefix("session="))?;
    ///     session.strip_prefix("valid-")?.parse().ok()
    /// }
    ///
    /// let config = RouterConfig::default().with_publish(true).with_authorize(
    ///     |parts: &Parts, channel: &ChannelName, action: Action| {
    ///         let user = user_of(parts);
    ///         let channel = channel.clone();
    ///         async move {
    ///             let Some(user) = user else {
    ///                 return Decision::Deny(Denial::unauthorized());
    ///             };
    ///             match (channel.as_str(), action) {
    ///                 // Everyone's own channel, under one URL: /sse/me.
    ///                 ("me", _) => match format!("user:{user}").parse() {
    ///                     Ok(mine) => Decision::Map(mine),
    ///                     Err(_) => Decision::Deny(Denial::forbidden()),
    ///                 },
    ///                 (name, Action::Subscribe) if !name.starts_with("user:") => Decision::Allow,
    ///                 _ => Decision::Deny(Denial::forbidden()),
    ///             }
    ///         }
    ///     },
    /// );
    /// assert!(config.authorize.is_some());
    /// ```
    #[must_use]
    pub fn with_authorize(mut self, hook: impl Authorize) -> Self {
        self.authorize = Some(Arc::new(hook));
        self
    }
}

/// The wire contract of `docs/protocol.md` over one [`Hub`], as a hyper
/// `Service`, or call [`handle`](Self::handle) from your own:
///
/// | route | served by |
/// |---|---|
/// | `POST /pub/{channel}[?event=NAME]` | the router (when [`RouterConfig::publish`]) |
/// | `GET /poll/{channel}` | [`push_poll::PollHandler`] |
/// | `GET /longpoll/{channel}` | [`push_longpoll::LongPollHandler`] |
/// | `GET /sse/{channel}` | [`push_sse::SseHandler`] |
/// | `GET /ws/{channel}` and `GET /ws` | [`push_ws::WsHandler`] |
///
/// A transport whose feature is off answers `404`, as does any other path.
/// [`shutdown`](Self::shutdown) hands out the handle that ends every stream
/// and socket gracefully; [`serve`](crate::serve) uses it.
///
/// A server with checks of its own (tokens, metrics) classifies a request
/// once ([`Route::of`]), reads its head once ([`head`](Self::head)), checks
/// it, and has the router answer it ([`serve`](Self::serve)).
///
/// ```
/// use push_live::{MemoryHub, Router, RouterConfig};
///
/// let router = Router::new(MemoryHub::new(), RouterConfig::default());
/// assert!(!router.shutdown().is_triggered());
/// ```
#[derive(Debug)]
pub struct Router<H> {
    shared: Arc<Routes<H>>,
}

impl<H> Clone for Router<H> {
    fn clone(&self) -> Self {
        Router {
            shared: self.shared.clone(),
        }
    }
}

#[derive(Debug)]
struct Routes<H> {
    publisher: Publisher<H>,
    shutdown: CancellationToken,
    authorize: Option<Arc<dyn Authorize>>,
    #[cfg(feature = "poll")]
    poll: push_poll::PollHandler<H>,
    #[cfg(feature = "longpoll")]
    longpoll: push_longpoll::LongPollHandler<H>,
    #[cfg(feature = "sse")]
    sse: push_sse::SseHandler<H>,
    #[cfg(feature = "ws")]
    ws: push_ws::WsHandler<H>,
    #[cfg(feature = "ws")]
    ws_commands: push_ws::WsHandler<H>,
}

/// The future of [`Router::handle`] and [`Router::serve`]: boxed, and sized
/// to the route's own future.
pub type RouterFuture<S> = Pin<Box<dyn Future<Output = Response<RouterBody<S>>> + Send>>;

/// What a path that names no route gets.
const NO_ROUTE: &str = "no such route: see docs/protocol.md";
/// What a path that names no WebSocket route gets from the WebSocket entry.
#[cfg(feature = "ws")]
const NO_WS_ROUTE: &str = "not a WebSocket route";

impl<H: Hub> Router<H> {
    /// A router over `hub` (a hub, or an `Arc` of one you also publish to
    /// from code; [`hub`](Self::hub) hands it out too).
    pub fn new(hub: impl Into<Arc<H>>, config: RouterConfig) -> Self {
        Self::with_hub_for(hub, |hub, _| hub.clone(), config)
    }

    /// A router whose transports each reach the hub through their own
    /// handle: `hub_for(&hub, technique)` is called once per technique
    /// (once for both WebSocket endpoints), for example to label what each
    /// technique reads and subscribes to in metrics; publishing uses `hub`.
    #[cfg_attr(
        not(any(
            feature = "poll",
            feature = "longpoll",
            feature = "sse",
            feature = "ws"
        )),
        expect(clippy::needless_pass_by_value, reason = "no transport takes its part")
    )]
    pub fn with_hub_for(
        hub: impl Into<Arc<H>>,
        hub_for: impl Fn(&Arc<H>, Technique) -> Arc<H>,
        config: RouterConfig,
    ) -> Self {
        let hub = hub.into();
        #[cfg(not(any(
            feature = "poll",
            feature = "longpoll",
            feature = "sse",
            feature = "ws"
        )))]
        let _ = &hub_for;
        let shutdown = CancellationToken::new();
        #[cfg(feature = "ws")]
        let ws_hub = hub_for(&hub, Technique::Ws);
        Router {
            shared: Arc::new(Routes {
                #[cfg(feature = "poll")]
                poll: push_poll::PollHandler::new(hub_for(&hub, Technique::Poll), config.poll),
                #[cfg(feature = "longpoll")]
                longpoll: push_longpoll::LongPollHandler::new(
                    hub_for(&hub, Technique::LongPoll),
                    config.longpoll.with_shutdown(shutdown.clone()),
                ),
                #[cfg(feature = "sse")]
                sse: push_sse::SseHandler::new(
                    hub_for(&hub, Technique::Sse),
                    config.sse.with_shutdown(shutdown.clone()),
                ),
                #[cfg(feature = "ws")]
                ws: push_ws::WsHandler::new(
                    ws_hub.clone(),
                    config.ws.with_shutdown(shutdown.clone()),
                ),
                #[cfg(feature = "ws")]
                ws_commands: push_ws::WsHandler::new(
                    ws_hub,
                    config.ws_commands.with_shutdown(shutdown.clone()),
                ),
                shutdown,
                authorize: config.authorize,
                publisher: Publisher {
                    hub,
                    enabled: config.publish,
                    max_message_bytes: config.max_message_bytes,
                    body_timeout: config.publish_body_timeout,
                    max_query_bytes: config.max_query_bytes,
                },
            }),
        }
    }

    /// `access` with the router's hook, unless it brings its own.
    fn hooked(&self, mut access: Access) -> Access {
        if access.authorize.is_none() {
            access.authorize.clone_from(&self.shared.authorize);
        }
        access
    }

    /// The hub it serves.
    pub fn hub(&self) -> &Arc<H> {
        &self.shared.publisher.hub
    }

    /// The handle that shuts it down: WebSockets get close 1001, event
    /// streams end with a `retry:` hint, held long polls are answered.
    pub fn shutdown(&self) -> Shutdown {
        #[cfg_attr(not(feature = "ws"), expect(unused_mut))]
        let mut shutdown = Shutdown::with_token(self.shared.shutdown.clone());
        #[cfg(feature = "ws")]
        {
            shutdown.track(self.shared.ws.socket_tasks());
            shutdown.track(self.shared.ws_commands.socket_tasks());
        }
        shutdown
    }

    /// Shuts it down gracefully, under any host server (axum's `serve`, a
    /// hyper loop of your own): every event stream ends with a `retry:`
    /// hint, every WebSocket gets close 1001 (going away), every held long
    /// poll is answered at once (`204` with the cursor), and new
    /// subscribers are turned away (`503` for WebSockets; an event stream
    /// or long poll ends at once). Resolves once every WebSocket's task
    /// has ended (its close handshake done: sockets outlive their HTTP
    /// response, so the host server does not wait for them), or after
    /// `grace`; returns whether all ended in time. Calling it again, or
    /// after [`shutdown`](Self::shutdown)'s `trigger`, only waits.
    ///
    /// Under axum, await it in the future given to
    /// `with_graceful_shutdown`: the streams and sockets are over before
    /// axum waits for its connections, which then close at once (an open
    /// event stream would otherwise hold axum's shutdown forever).
    ///
    /// ```
    /// use std::time::Duration;
    /// use push_live::{MemoryHub, Router, RouterConfig};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let router = Router::new(MemoryHub::new(), RouterConfig::default());
    /// let stop = router.graceful_shutdown(Duration::from_secs(10));
    /// assert!(stop.await, "no socket was open");
    /// assert!(router.shutdown().is_triggered());
    /// # }
    /// ```
    pub fn graceful_shutdown(
        &self,
        grace: Duration,
    ) -> impl Future<Output = bool> + Send + 'static {
        let shutdown = self.shutdown();
        async move { shutdown.finish(grace).await }
    }

    /// The long-poll handler.
    #[cfg(feature = "longpoll")]
    pub fn longpoll(&self) -> &push_longpoll::LongPollHandler<H> {
        &self.shared.longpoll
    }

    /// The SSE handler.
    #[cfg(feature = "sse")]
    pub fn sse(&self) -> &push_sse::SseHandler<H> {
        &self.shared.sse
    }

    /// The handlers of `GET /ws/{channel}` and `GET /ws`.
    #[cfg(feature = "ws")]
    pub fn ws(&self) -> (&push_ws::WsHandler<H>, &push_ws::WsHandler<H>) {
        (&self.shared.ws, &self.shared.ws_commands)
    }

    /// How many subscribers `technique` holds right now: held long polls,
    /// open event streams, open WebSockets (both endpoints). Short polling
    /// holds none, and neither does a technique whose feature is off.
    pub fn connections(&self, technique: Technique) -> usize {
        let routes = &*self.shared;
        #[cfg(not(any(feature = "longpoll", feature = "sse", feature = "ws")))]
        let _ = routes;
        match technique {
            #[cfg(feature = "longpoll")]
            Technique::LongPoll => routes.longpoll.connections(),
            #[cfg(feature = "sse")]
            Technique::Sse => routes.sse.connections(),
            #[cfg(feature = "ws")]
            Technique::Ws => routes.ws.connections() + routes.ws_commands.connections(),
            _ => 0,
        }
    }

    /// Reads the head of a request for `route`: its query split once, at
    /// most as long as that route accepts. What a server in front of the
    /// router does before it checks the request (its token, its channel)
    /// and hands it to [`serve`](Self::serve).
    pub fn head(&self, route: Route, parts: Parts) -> Head {
        let routes = &*self.shared;
        let max = match route {
            #[cfg(feature = "poll")]
            Route::Subscribe(Technique::Poll) => push_http::Handler::max_query_bytes(&routes.poll),
            #[cfg(feature = "longpoll")]
            Route::Subscribe(Technique::LongPoll) => {
                push_http::Handler::max_query_bytes(&routes.longpoll)
            }
            #[cfg(feature = "sse")]
            Route::Subscribe(Technique::Sse) => push_http::Handler::max_query_bytes(&routes.sse),
            #[cfg(feature = "ws")]
            Route::Subscribe(Technique::Ws) => push_http::Handler::max_query_bytes(&routes.ws),
            #[cfg(feature = "ws")]
            Route::Commands => push_http::Handler::max_query_bytes(&routes.ws_commands),
            _ => routes.publisher.max_query_bytes,
        };
        Head::read(parts, max)
    }

    /// Answers one request.
    ///
    /// The future is boxed: hyper keeps room for a connection's service
    /// future as long as the connection lives, so a `service_fn` of yours
    /// that awaits this holds a pointer, not the route's future, for every
    /// idle event stream.
    pub fn handle<B>(&self, request: Request<B>) -> RouterFuture<H::Subscription>
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.handle_until(request, None)
    }

    /// Answers one request; an event stream or WebSocket it opens also ends
    /// at `deadline` (SSE with a `retry:` hint, WebSocket with close 1008),
    /// for example when the subscriber's token expires. Boxed, as
    /// [`handle`](Self::handle).
    pub fn handle_until<B>(
        &self,
        request: Request<B>,
        deadline: Option<Instant>,
    ) -> RouterFuture<H::Subscription>
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = request.into_parts();
        let Some(route) = Route::of(parts.uri.path()) else {
            return not_found(NO_ROUTE);
        };
        let head = self.head(route, parts);
        self.serve(route, head, body, Access::default().until(deadline))
    }

    /// Answers a request already classified as `route`, whose head was read
    /// by [`head`](Self::head), within what `access` allows: an event
    /// stream ends at its deadline; a WebSocket is closed then, and applies
    /// its rules. Its [`authorize`](Access::authorize) hook, else the
    /// router's ([`RouterConfig::authorize`]), is asked on every technique. A path that does not name exactly one channel, or a
    /// technique whose feature is off, gets `404`. Boxed, as
    /// [`handle`](Self::handle).
    pub fn serve<B>(
        &self,
        route: Route,
        head: Head,
        body: B,
        access: Access,
    ) -> RouterFuture<H::Subscription>
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if route != Route::Commands && !Route::names_one_channel(head.uri().path()) {
            return not_found(NO_ROUTE);
        }
        let access = self.hooked(access);
        #[cfg(any(feature = "poll", feature = "longpoll", feature = "sse"))]
        let routes = &*self.shared;
        #[cfg(not(any(
            feature = "poll",
            feature = "longpoll",
            feature = "sse",
            feature = "ws"
        )))]
        let _ = &access;
        match route {
            Route::Publish => {
                let router = self.clone();
                Box::pin(async move {
                    RouterBody::full(router.shared.publisher.publish(head, body, access).await)
                })
            }
            Route::Presence => {
                let hub = self.hub().clone();
                Box::pin(
                    async move { RouterBody::full(presence::presence(&*hub, head, access).await) },
                )
            }
            #[cfg(feature = "poll")]
            Route::Subscribe(Technique::Poll) => {
                full(push_http::Handler::serve(&routes.poll, head, access))
            }
            #[cfg(feature = "longpoll")]
            Route::Subscribe(Technique::LongPoll) => {
                full(push_http::Handler::serve(&routes.longpoll, head, access))
            }
            #[cfg(feature = "sse")]
            Route::Subscribe(Technique::Sse) => {
                let answer = push_http::Handler::serve(&routes.sse, head, access);
                Box::pin(async move { RouterBody::sse(answer.await) })
            }
            #[cfg(feature = "ws")]
            Route::Subscribe(Technique::Ws) | Route::Commands => self.serve_ws(route, head, access),
            #[allow(unreachable_patterns, reason = "with some transports off")]
            _ => not_found(NO_ROUTE),
        }
    }

    /// Answers a WebSocket handshake (`GET /ws/{channel}` or `GET /ws`)
    /// already classified as `route`, with a socket limited by `access`
    /// (see [`push_ws::Access`]); any other route, or a path that does not
    /// name exactly one channel, gets `404`. For servers with their own
    /// authorisation.
    #[cfg(feature = "ws")]
    pub fn serve_ws(
        &self,
        route: Route,
        head: Head,
        access: Access,
    ) -> RouterFuture<H::Subscription> {
        let access = self.hooked(access);
        let handler = match route {
            Route::Subscribe(Technique::Ws) if Route::names_one_channel(head.uri().path()) => {
                &self.shared.ws
            }
            Route::Commands => &self.shared.ws_commands,
            _ => return not_found(NO_WS_ROUTE),
        };
        full(push_http::Handler::serve(handler, head, access))
    }

    /// Answers a WebSocket handshake (`GET /ws/{channel}` or `GET /ws`)
    /// with a socket limited by `access` (see [`push_ws::Access`]); any
    /// other request gets `404`. For servers with their own authorisation.
    #[cfg(feature = "ws")]
    pub async fn handle_ws_with<B>(
        &self,
        request: Request<B>,
        access: Access,
    ) -> Response<RouterBody<H::Subscription>> {
        let (parts, _body) = request.into_parts();
        let Some(route) = Route::of(parts.uri.path()) else {
            return not_found(NO_WS_ROUTE).await;
        };
        let head = self.head(route, parts);
        self.serve_ws(route, head, access).await
    }
}

/// A handler's whole answer, boxed, as a router's answer.
#[cfg(any(feature = "poll", feature = "longpoll", feature = "ws"))]
fn full<S: Send + 'static>(
    answer: impl Future<Output = Response<http_body_util::Full<bytes::Bytes>>> + Send + 'static,
) -> RouterFuture<S> {
    Box::pin(async move { RouterBody::full(answer.await) })
}

/// `404`, saying `message`.
fn not_found<S: Send + 'static>(message: &'static str) -> RouterFuture<S> {
    Box::pin(std::future::ready(push_http::error(
        StatusCode::NOT_FOUND,
        "not_found",
        message,
    )))
}

impl<H: Hub, B> hyper::service::Service<Request<B>> for Router<H>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<RouterBody<H::Subscription>>;
    type Error = Infallible;
    type Future = Call<H::Subscription>;

    fn call(&self, request: Request<B>) -> Self::Future {
        Call(self.handle(request))
    }
}

/// With the `tower` feature, a `tower::Service` too (always ready), so that
/// axum mounts it: `axum::Router::new().nest_service("/live", router)`.
/// axum strips the prefix, so the router sees `/sse/news` for
/// `/live/sse/news`, as it classifies paths ([`Route::of`]) from their
/// first segment.
#[cfg(feature = "tower")]
impl<H: Hub, B> tower_service::Service<Request<B>> for Router<H>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<RouterBody<H::Subscription>>;
    type Error = Infallible;
    type Future = Call<H::Subscription>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        Call(self.handle(request))
    }
}

/// The future of `Router`'s `Service::call`: [`Router::handle`]'s, as a
/// `Result` that is never an error.
pub struct Call<S>(RouterFuture<S>);

impl<S> std::fmt::Debug for Call<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Call")
    }
}

impl<S> Future for Call<S> {
    type Output = Result<Response<RouterBody<S>>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx).map(Ok)
    }
}
