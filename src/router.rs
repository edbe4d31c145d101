//! One service for the whole wire contract: publish, poll, long poll, SSE and
//! both WebSocket endpoints over one hub.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::CONNECTION;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use push_core::{Error, EventName, Hub, IdempotencyKey, Publication};
use push_http::{ChannelLocator, Query, error as error_response, error_for};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::serve::Shutdown;

/// What a [`Router`] serves, and how.
///
/// Each transport's configuration is its crate's own; the router sets their
/// [`shutdown`](push_sse::SseConfig::shutdown) tokens to its own.
///
/// ```
/// use push::RouterConfig;
///
/// let config = RouterConfig::default().with_publish(true);
/// assert!(config.publish);
/// assert_eq!(config.max_publish_bytes, 256 << 10);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RouterConfig {
    /// Whether `POST /pub/{channel}` publishes (default: no, so that a router
    /// mounted in your service does not let anyone publish; put your own
    /// check in front and turn it on, or publish from code).
    pub publish: bool,
    /// The largest request body `POST /pub/{channel}` accepts (default
    /// 256 KiB, the memory hub's default message limit); larger → `413`.
    pub max_publish_bytes: usize,
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
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            publish: false,
            max_publish_bytes: 256 << 10,
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

    /// Sets [`max_publish_bytes`](Self::max_publish_bytes).
    #[must_use]
    pub fn with_max_publish_bytes(mut self, max: usize) -> Self {
        self.max_publish_bytes = max;
        self
    }

    /// Sets [`publish_body_timeout`](Self::publish_body_timeout).
    #[must_use]
    pub fn with_publish_body_timeout(mut self, timeout: Duration) -> Self {
        self.publish_body_timeout = timeout;
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
/// ```
/// use push::{MemoryHub, Router, RouterConfig};
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
    hub: Arc<H>,
    publish: bool,
    max_publish_bytes: usize,
    publish_body_timeout: Duration,
    max_query_bytes: usize,
    shutdown: CancellationToken,
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

impl<H: Hub> Router<H> {
    /// A router over `hub`.
    pub fn new(hub: H, config: RouterConfig) -> Self {
        Self::from_shared(Arc::new(hub), config)
    }

    /// A router over a hub you also publish to from code.
    #[cfg_attr(
        not(any(
            feature = "poll",
            feature = "longpoll",
            feature = "sse",
            feature = "ws"
        )),
        expect(clippy::needless_pass_by_value, reason = "no transport takes its part")
    )]
    pub fn from_shared(hub: Arc<H>, config: RouterConfig) -> Self {
        let shutdown = CancellationToken::new();
        Router {
            shared: Arc::new(Routes {
                publish: config.publish,
                max_publish_bytes: config.max_publish_bytes,
                publish_body_timeout: config.publish_body_timeout,
                max_query_bytes: config.max_query_bytes,
                #[cfg(feature = "poll")]
                poll: push_poll::PollHandler::new(hub.clone(), config.poll),
                #[cfg(feature = "longpoll")]
                longpoll: push_longpoll::LongPollHandler::new(
                    hub.clone(),
                    config.longpoll.with_shutdown(shutdown.clone()),
                ),
                #[cfg(feature = "sse")]
                sse: push_sse::SseHandler::new(
                    hub.clone(),
                    config.sse.with_shutdown(shutdown.clone()),
                ),
                #[cfg(feature = "ws")]
                ws: push_ws::WsHandler::new(hub.clone(), config.ws.with_shutdown(shutdown.clone())),
                #[cfg(feature = "ws")]
                ws_commands: push_ws::WsHandler::new(
                    hub.clone(),
                    config.ws_commands.with_shutdown(shutdown.clone()),
                ),
                shutdown,
                hub,
            }),
        }
    }

    /// The hub it serves.
    pub fn hub(&self) -> &Arc<H> {
        &self.shared.hub
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

    /// Answers one request.
    ///
    /// The future is boxed: it can become any route's (about 2 KiB), and
    /// hyper keeps room for a connection's service future as long as the
    /// connection lives, so a `service_fn` of yours that awaits this holds a
    /// pointer, not the 2 KiB, for every idle event stream.
    pub fn handle<B>(&self, request: Request<B>) -> RouterFuture<H::Subscription>
    where
        B: HttpBody + Send + 'static,
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
        B: HttpBody + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let router = self.clone();
        Box::pin(async move { router.route(request, deadline).await })
    }

    async fn route<B>(
        &self,
        request: Request<B>,
        deadline: Option<Instant>,
    ) -> Response<Body<H::Subscription>>
    where
        B: HttpBody + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        #[cfg(not(any(feature = "sse", feature = "ws")))]
        let _ = deadline;
        match Route::of(request.uri().path()) {
            Some(Route::Publish) => Body::full(self.publish(request).await),
            #[cfg(feature = "poll")]
            Some(Route::Poll) => Body::full(self.shared.poll.handle(request).await),
            #[cfg(feature = "longpoll")]
            Some(Route::LongPoll) => Body::full(self.shared.longpoll.handle(request).await),
            #[cfg(feature = "sse")]
            Some(Route::Sse) => self
                .shared
                .sse
                .handle_until(request, deadline)
                .await
                .map(|body| Body {
                    inner: Inner::Sse(Box::pin(body)),
                }),
            #[cfg(feature = "ws")]
            Some(Route::WsChannel) => {
                Body::full(self.shared.ws.handle_until(request, deadline).await)
            }
            #[cfg(feature = "ws")]
            Some(Route::WsCommands) => Body::full(
                self.shared
                    .ws_commands
                    .handle_until(request, deadline)
                    .await,
            ),
            #[allow(unreachable_patterns, reason = "with some transports off")]
            _ => Body::full(error_response(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such route: see docs/protocol.md",
            )),
        }
    }

    /// Answers a WebSocket handshake (`GET /ws/{channel}` or `GET /ws`)
    /// with a socket limited by `access` (see [`push_ws::Access`]); any
    /// other request gets `404`. For servers with their own authorisation.
    #[cfg(feature = "ws")]
    pub async fn handle_ws_with<B>(
        &self,
        request: Request<B>,
        access: push_ws::Access,
    ) -> Response<Body<H::Subscription>> {
        Body::full(match Route::of(request.uri().path()) {
            Some(Route::WsChannel) => self.shared.ws.handle_with(request, access).await,
            Some(Route::WsCommands) => self.shared.ws_commands.handle_with(request, access).await,
            _ => error_response(StatusCode::NOT_FOUND, "not_found", "not a WebSocket route"),
        })
    }

    async fn publish<B>(&self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: HttpBody + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let routes = &*self.shared;
        if request.method() != Method::POST {
            return push_http::method_not_allowed("POST", "publish with POST");
        }
        if !routes.publish {
            return error_response(
                StatusCode::FORBIDDEN,
                "publish_disabled",
                "this server does not publish over HTTP",
            );
        }
        let (parts, body) = request.into_parts();
        let asked = Query::parse(parts.uri.query(), routes.max_query_bytes).and_then(|query| {
            let channel = ChannelLocator::LastPathSegment.locate(parts.uri.path(), &query)?;
            let event = match query.get("event")? {
                Some(name) => Some(name.parse::<EventName>()?),
                None => None,
            };
            Ok((channel, event, idempotency_key(&parts.headers)?))
        });
        let (channel, event, key) = match asked {
            Ok(asked) => asked,
            Err(err) => return error_for(&err),
        };
        let too_large = || {
            error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "message_too_large",
                &format!(
                    "a message may hold at most {} bytes",
                    routes.max_publish_bytes
                ),
            )
        };
        // A declared length over the limit is refused before reading (and
        // before hyper answers `Expect: 100-continue`).
        if body.size_hint().lower() > u64::try_from(routes.max_publish_bytes).unwrap_or(u64::MAX) {
            return too_large();
        }
        let collected = tokio::time::timeout(
            routes.publish_body_timeout,
            Limited::new(body, routes.max_publish_bytes).collect(),
        )
        .await;
        let data = match collected {
            Err(_) => {
                let mut response = error_response(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    "the request body did not arrive in time",
                );
                // What is left of the body is not worth reading.
                response
                    .headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
                return response;
            }
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(err)) if err.is::<http_body_util::LengthLimitError>() => return too_large(),
            Ok(Err(_)) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "unreadable_body",
                    "the request body could not be read",
                );
            }
        };
        let mut publication = Publication::new(data);
        if let Some(event) = event {
            publication = publication.with_event(event);
        }
        if let Some(key) = key {
            publication = publication.with_key(key);
        }
        match routes.hub.publish(&channel, publication).await {
            Ok(cursor) => {
                let mut body = Vec::with_capacity(32);
                body.extend_from_slice(b"{\"id\":\"");
                body.extend_from_slice(cursor.to_string().as_bytes());
                body.extend_from_slice(b"\"}");
                push_http::json(StatusCode::OK, Bytes::from(body))
            }
            Err(err) => {
                if !err.is_client_error() {
                    tracing::warn!(%channel, %err, "publish failed");
                }
                error_for(&err)
            }
        }
    }
}

impl<H: Hub, B> hyper::service::Service<Request<B>> for Router<H>
where
    B: HttpBody + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Body<H::Subscription>>;
    type Error = Infallible;
    type Future = Call<H::Subscription>;

    fn call(&self, request: Request<B>) -> Self::Future {
        Call(self.handle(request))
    }
}

/// The future of [`Router::handle`]: boxed (see there).
pub type RouterFuture<S> = Pin<Box<dyn Future<Output = Response<Body<S>>> + Send>>;

/// The future of `Router`'s `Service::call`: [`Router::handle`]'s, as a
/// `Result` that is never an error.
pub struct Call<S>(RouterFuture<S>);

impl<S> std::fmt::Debug for Call<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Call")
    }
}

impl<S> Future for Call<S> {
    type Output = Result<Response<Body<S>>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx).map(Ok)
    }
}

/// Which route a path names: `/{route}/{channel}` with exactly one segment
/// after the route, or `/ws` alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Publish,
    #[cfg(feature = "poll")]
    Poll,
    #[cfg(feature = "longpoll")]
    LongPoll,
    #[cfg(feature = "sse")]
    Sse,
    #[cfg(feature = "ws")]
    WsChannel,
    #[cfg(feature = "ws")]
    WsCommands,
}

impl Route {
    fn of(path: &str) -> Option<Route> {
        let rest = path.strip_prefix('/')?;
        let Some((first, channel)) = rest.split_once('/') else {
            #[cfg(feature = "ws")]
            if rest == "ws" {
                return Some(Route::WsCommands);
            }
            return None;
        };
        if channel.is_empty() || channel.contains('/') {
            return None;
        }
        match first {
            "pub" => Some(Route::Publish),
            #[cfg(feature = "poll")]
            "poll" => Some(Route::Poll),
            #[cfg(feature = "longpoll")]
            "longpoll" => Some(Route::LongPoll),
            #[cfg(feature = "sse")]
            "sse" => Some(Route::Sse),
            #[cfg(feature = "ws")]
            "ws" => Some(Route::WsChannel),
            _ => None,
        }
    }
}

/// The body of a [`Router`] answer: a whole one, or an event stream.
#[derive(Debug)]
pub struct Body<S> {
    inner: Inner<S>,
}

#[derive(Debug)]
enum Inner<S> {
    Full(Full<Bytes>),
    #[cfg(feature = "sse")]
    Sse(Pin<Box<push_sse::SseBody<S>>>),
    #[cfg(not(feature = "sse"))]
    #[allow(dead_code, reason = "names S when no event stream can be served")]
    Never(Infallible, std::marker::PhantomData<fn() -> S>),
}

impl<S> Body<S> {
    fn full(response: Response<Full<Bytes>>) -> Response<Self> {
        response.map(|body| Body {
            inner: Inner::Full(body),
        })
    }

    /// A whole body holding `bytes`, for answers of your own next to the
    /// router's.
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Self {
        Body {
            inner: Inner::Full(Full::new(bytes.into())),
        }
    }
}

/// A whole body holding these bytes.
impl<S> From<Bytes> for Body<S> {
    fn from(bytes: Bytes) -> Self {
        Body::from_bytes(bytes)
    }
}

impl<S: futures_core::Stream<Item = push_core::Item> + Unpin> HttpBody for Body<S> {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut self.get_mut().inner {
            Inner::Full(full) => Pin::new(full).poll_frame(cx),
            #[cfg(feature = "sse")]
            Inner::Sse(sse) => sse.as_mut().poll_frame(cx),
            #[cfg(not(feature = "sse"))]
            Inner::Never(never, _) => match *never {},
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(full) => full.is_end_stream(),
            #[cfg(feature = "sse")]
            Inner::Sse(sse) => sse.is_end_stream(),
            #[cfg(not(feature = "sse"))]
            Inner::Never(never, _) => match *never {},
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(full) => full.size_hint(),
            #[cfg(feature = "sse")]
            Inner::Sse(sse) => sse.size_hint(),
            #[cfg(not(feature = "sse"))]
            Inner::Never(never, _) => match *never {},
        }
    }
}

/// The `Idempotency-Key` of a publish, if it names one (once).
fn idempotency_key(headers: &http::HeaderMap) -> Result<Option<IdempotencyKey>, Error> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Error::InvalidIdempotencyKey {
            reason: "Idempotency-Key is given more than once",
        });
    }
    let text = value.to_str().map_err(|_| Error::InvalidIdempotencyKey {
        reason: "only visible ASCII (! to ~) is allowed",
    })?;
    // The IETF draft sends it as a structured-field string: "key".
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    text.parse().map(Some)
}

/// The header a publisher names its idempotency key with.
const IDEMPOTENCY_KEY: http::HeaderName = http::HeaderName::from_static("idempotency-key");

#[cfg(test)]
mod tests {
    use super::Route;

    #[test]
    fn routes_take_exactly_one_channel_segment() {
        assert_eq!(Route::of("/pub/news"), Some(Route::Publish));
        assert_eq!(Route::of("/pub/news/more"), None);
        assert_eq!(Route::of("/pub/"), None);
        assert_eq!(Route::of("/pub"), None);
        assert_eq!(Route::of("/other/news"), None);
        assert_eq!(Route::of(""), None);
        #[cfg(feature = "ws")]
        {
            assert_eq!(Route::of("/ws"), Some(Route::WsCommands));
            assert_eq!(Route::of("/ws/news"), Some(Route::WsChannel));
        }
        #[cfg(feature = "sse")]
        assert_eq!(Route::of("/sse/a%2Fb"), Some(Route::Sse));
    }
}
