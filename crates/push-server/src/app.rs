//! The server's service: the facade's router behind authorisation and CORS,
//! plus the publish API's token check, the demo page, the browser client,
//! channel info, metrics and health.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, CACHE_CONTROL, ORIGIN, VARY,
    WWW_AUTHENTICATE,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use push_live::http::{Access, Authorize, ChannelLocator, Head, Technique};
use push_live::{Hub, Route, Router, RouterBody, ServeStats, Shutdown, Start};
use tokio::time::Instant;

use crate::auth::{AuthError, Claims, JwtVerifier, PublishToken, bearer};
use crate::metrics::{Metered, MeteredSubscription, Metrics, family};

/// The demo page, served at `/`.
pub const INDEX_HTML: &str = include_str!("../assets/index.html");

/// Which browsers' pages may call this server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Cors {
    /// Only pages served by this server (no CORS headers).
    #[default]
    SameOrigin,
    /// Any page.
    Any,
    /// Pages from these origins.
    List(Arc<[String]>),
}

impl Cors {
    /// From `--allowed-origins`.
    pub fn from_origins(origins: &[String]) -> Cors {
        let origins: Vec<String> = origins
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_owned())
            .filter(|o| !o.is_empty())
            .collect();
        if origins.iter().any(|o| o == "*") {
            Cors::Any
        } else if origins.is_empty() {
            Cors::SameOrigin
        } else {
            Cors::List(origins.into())
        }
    }

    /// The WebSocket handshake's origin rule to match.
    pub fn ws_origins(&self) -> push_live::ws::Origins {
        match self {
            Cors::SameOrigin => push_live::ws::Origins::SameHost,
            Cors::Any => push_live::ws::Origins::Any,
            Cors::List(list) => push_live::ws::Origins::List(list.clone()),
        }
    }

    /// The `Access-Control-Allow-Origin` for a request from `origin`.
    fn allow(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        match self {
            Cors::SameOrigin => None,
            Cors::Any => Some(HeaderValue::from_static("*")),
            Cors::List(list) => {
                let origin = origin?;
                let text = origin.to_str().ok()?;
                list.iter()
                    .any(|allowed| allowed.eq_ignore_ascii_case(text))
                    .then(|| origin.clone())
            }
        }
    }
}

/// Who may do what, and what is served.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Publishers must present this secret.
    pub publish_token: Option<PublishToken>,
    /// Publishing without a secret is refused (403): the server listens on
    /// a public address with no publisher secret and no --open-publish.
    pub publish_protected: bool,
    /// Subscribers must present a token signed with this secret.
    pub jwt: Option<JwtVerifier>,
    /// Cross-origin browsers allowed.
    pub cors: Cors,
    /// The techniques served, in [`Technique::ALL`] order.
    pub techniques: [bool; 4],
    /// The app's hook on every subscribe and publish (proxy mode,
    /// [`crate::proxy`]), after the tokens above; a request that shows the
    /// publisher secret is not asked.
    pub authorize: Option<Arc<dyn Authorize>>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            publish_token: None,
            publish_protected: false,
            jwt: None,
            cors: Cors::default(),
            techniques: [true; 4],
            authorize: None,
        }
    }
}

impl Policy {
    fn serves(&self, technique: Technique) -> bool {
        self.techniques[technique.index()]
    }
}

/// The whole server as a hyper service.
pub struct App<H: Hub> {
    shared: Arc<Shared<H>>,
}

impl<H: Hub> std::fmt::Debug for App<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("policy", &self.shared.policy)
            .finish_non_exhaustive()
    }
}

impl<H: Hub> Clone for App<H> {
    fn clone(&self) -> Self {
        App {
            shared: self.shared.clone(),
        }
    }
}

struct Shared<H: Hub> {
    router: Router<Metered<H>>,
    /// The router's shutdown handle, made once (health checks ask it).
    shutdown: Shutdown,
    metrics: Arc<Metrics>,
    stats: Arc<ServeStats>,
    policy: Policy,
    /// The longest query of the app's own routes (`/channels/…`).
    max_query_bytes: usize,
    /// The memory hub, for its budget's figures in `/metrics`.
    memory: Option<push_live::MemoryHub>,
    /// The Redis hub, for its health in `/healthz` and `/metrics`.
    redis: Option<push_redis::RedisHub>,
}

/// What a request is, for the app: one of its own pages, or a route of the
/// router's (classified once, here).
enum Kind {
    Page,
    Script,
    Health,
    Metrics,
    ChannelInfo,
    Push(Route),
    Other,
}

impl Kind {
    fn of(path: &str) -> Kind {
        if let Some(route) = Route::of(path) {
            return Kind::Push(route);
        }
        let Some(rest) = path.strip_prefix('/') else {
            return Kind::Other;
        };
        match rest.split_once('/') {
            None => match rest {
                "" | "index.html" => Kind::Page,
                "push.js" => Kind::Script,
                "healthz" => Kind::Health,
                "metrics" => Kind::Metrics,
                _ => Kind::Other,
            },
            Some(("channels", _)) => Kind::ChannelInfo,
            Some(_) => Kind::Other,
        }
    }
}

type AppResponse<H> = Response<RouterBody<MeteredSubscription<<H as Hub>::Subscription>>>;

impl<H: Hub> App<H> {
    /// The app over `router` (whose hub is metered into `metrics`).
    pub fn new(
        router: Router<Metered<H>>,
        metrics: Arc<Metrics>,
        stats: Arc<ServeStats>,
        policy: Policy,
    ) -> Self {
        App {
            shared: Arc::new(Shared {
                shutdown: router.shutdown(),
                router,
                metrics,
                stats,
                policy,
                max_query_bytes: push_live::http::DEFAULT_MAX_QUERY_BYTES,
                memory: None,
                redis: None,
            }),
        }
    }

    /// Reports the health of `hub` in `/healthz` (503 with the reason when
    /// Redis is unreachable or its Pub/Sub probe stopped coming back) and its
    /// figures in `/metrics`. Call before the app is cloned.
    #[must_use]
    pub fn with_redis_hub(mut self, hub: push_redis::RedisHub) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.redis = Some(hub);
        }
        self
    }

    /// Reports the budget and channel table of `hub` in `/metrics`. Call
    /// before the app is cloned (a clone already made keeps the old view).
    #[must_use]
    pub fn with_memory_hub(mut self, hub: push_live::MemoryHub) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.memory = Some(hub);
        }
        self
    }

    /// The shutdown handle of the router inside.
    pub fn shutdown(&self) -> Shutdown {
        self.shared.shutdown.clone()
    }

    /// Answers one request.
    pub async fn handle(&self, request: Request<Incoming>) -> AppResponse<H> {
        let origin = request.headers().get(ORIGIN).cloned();
        let mut response = if request.method() == Method::OPTIONS {
            preflight()
        } else {
            self.route(request).await
        };
        if let Some(allow) = self.shared.policy.cors.allow(origin.as_ref()) {
            let headers = response.headers_mut();
            headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow);
            headers.insert(
                ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("ETag, Push-Poll-Interval"),
            );
            if matches!(self.shared.policy.cors, Cors::List(_)) {
                headers.append(VARY, HeaderValue::from_static("Origin"));
            }
        }
        response
    }

    async fn route(&self, request: Request<Incoming>) -> AppResponse<H> {
        let shared = &*self.shared;
        let route = match Kind::of(request.uri().path()) {
            Kind::Page => {
                return fixed(request.method(), "text/html; charset=utf-8", INDEX_HTML);
            }
            Kind::Script => {
                // The facade's push.js, with its ETag (a 304 on revalidation).
                return push_live::js::response(request.method(), request.headers());
            }
            Kind::Health | Kind::Metrics if !is_get(request.method()) => {
                return method_not_allowed("GET or HEAD only");
            }
            Kind::Health if shared.shutdown.is_triggered() => {
                return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
            }
            Kind::Health => {
                let redis = shared.redis.as_ref().map(push_redis::RedisHub::health);
                return match redis.filter(|health| !health.healthy) {
                    Some(unhealthy) => {
                        let reason = unhealthy.reason.unwrap_or_else(|| "unhealthy".to_owned());
                        push_live::http::respond(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "text/plain; charset=utf-8",
                            Bytes::from(format!("redis: {reason}\n")),
                        )
                    }
                    None => text(StatusCode::OK, "ok\n"),
                };
            }
            Kind::Metrics => return self.metrics_text(),
            Kind::ChannelInfo => {
                return match self.check_publisher(request.headers()) {
                    Ok(()) => self.channel_info(request).await,
                    Err(err) => refusal(&err),
                };
            }
            Kind::Other => return error(StatusCode::NOT_FOUND, "not_found", "no such route"),
            Kind::Push(route) => route,
        };
        if let Some(technique) = route.technique()
            && !shared.policy.serves(technique)
        {
            return error(
                StatusCode::NOT_FOUND,
                "transport_disabled",
                "this server does not serve this technique",
            );
        }
        let router = &shared.router;
        let (parts, body) = request.into_parts();
        // The one parse of the query: the token, the channel and the
        // transport all read this head.
        let head = router.head(route, parts);
        match route {
            Route::Publish => match self.check_publisher(head.headers()) {
                // The router logs a failed publish with its reason. The
                // publisher secret, when set, is all a publish needs;
                // without one, the app's hook decides.
                Ok(()) if shared.policy.publish_token.is_some() => {
                    router.serve(route, head, body, Access::default()).await
                }
                Ok(()) => router.serve(route, head, body, self.hooked()).await,
                Err(err) => refusal(&err),
            },
            Route::Presence => match self.check_subscriber(&head) {
                Ok(_) => router.serve(route, head, body, self.hooked()).await,
                Err(err) => refusal(&err),
            },
            Route::Subscribe(technique) => {
                let claims = match self.check_subscriber(&head) {
                    Ok(claims) => claims,
                    Err(err) => return refusal(&err),
                };
                let mut access = self
                    .hooked()
                    .until(claims.as_ref().map(|claims| deadline(claims.expires)));
                access.user = claims.and_then(|claims| claims.user);
                tracing::debug!(
                    technique = technique.as_str(),
                    path = head.uri().path(),
                    "subscribe"
                );
                if technique == Technique::Ws {
                    return router.serve_ws(route, head, access).await;
                }
                router.serve(route, head, body, access).await
            }
            Route::Commands => {
                let access = match self.command_access(&head) {
                    Ok(access) => access,
                    Err(err) => return refusal(&err),
                };
                tracing::debug!("command socket");
                router.serve_ws(route, head, access).await
            }
        }
    }

    /// An access with the app's hook, if there is one.
    fn hooked(&self) -> Access {
        match &self.shared.policy.authorize {
            Some(hook) => Access::default().authorizing(hook.clone()),
            None => Access::default(),
        }
    }

    fn check_publisher(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        let policy = &self.shared.policy;
        match &policy.publish_token {
            Some(token) => token.check(headers),
            None if policy.publish_protected => Err(AuthError::Protected),
            None => Ok(()),
        }
    }

    /// The token of a request: `Authorization: Bearer`, else `?token=`.
    fn token(head: &Head) -> Result<Option<std::borrow::Cow<'_, str>>, AuthError> {
        if let Some(token) = bearer(head.headers())? {
            return Ok(Some(token.into()));
        }
        let query = head
            .query()
            .map_err(|_| AuthError::Malformed("the query string is not readable"))?;
        query
            .get("token")
            .map_err(|_| AuthError::Malformed("`token` is given more than once"))
    }

    /// With subscriber tokens on: the token's claims, checked against the
    /// request's channel.
    fn check_subscriber(&self, head: &Head) -> Result<Option<Claims>, AuthError> {
        let Some(jwt) = &self.shared.policy.jwt else {
            return Ok(None);
        };
        let token = Self::token(head)?.ok_or(AuthError::Missing)?;
        let claims = jwt.verify(&token, unix_now())?;
        // An unreadable channel is the router's to answer (400).
        if let Ok(channel) = head.channel(&ChannelLocator::LastPathSegment)
            && !claims.subscribe.allows(&channel)
        {
            return Err(AuthError::Forbidden(channel.to_string()));
        }
        Ok(Some(claims))
    }

    /// What a command socket may do. A socket that shows the publisher
    /// secret may do anything; with subscriber tokens on, others need one,
    /// and get its channels (to read, and to publish to) and its expiry;
    /// without them, anyone may subscribe, and publish unless a publisher
    /// secret is set. (Publishing at all also needs `--ws-publish`.)
    fn command_access(&self, head: &Head) -> Result<Access, AuthError> {
        let policy = &self.shared.policy;
        let token = Self::token(head)?;
        if let (Some(secret), Some(token)) = (&policy.publish_token, token.as_deref())
            && secret.matches(token)
        {
            return Ok(Access::default());
        }
        match &policy.jwt {
            Some(jwt) => {
                let token = token.ok_or(AuthError::Missing)?;
                let Claims {
                    expires,
                    subscribe,
                    publish,
                    user,
                } = jwt.verify(&token, unix_now())?;
                let mut access = self
                    .hooked()
                    .until(Some(deadline(expires)))
                    .subscribing(Arc::new(move |channel| subscribe.allows(channel)))
                    .publishing(Arc::new(move |channel| publish.allows(channel)));
                access.user = user;
                Ok(access)
            }
            None if policy.publish_token.is_some() || policy.publish_protected => {
                Ok(self.hooked().publishing(Arc::new(|_| false)))
            }
            None => Ok(self.hooked()),
        }
    }

    async fn channel_info(&self, request: Request<Incoming>) -> AppResponse<H> {
        if request.method() != Method::GET {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "GET only",
            );
        }
        let (parts, _body) = request.into_parts();
        let head = Head::read(parts, self.shared.max_query_bytes);
        let Ok(channel) = head.channel(&ChannelLocator::LastPathSegment) else {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_channel",
                "bad channel name",
            );
        };
        let hub = self.shared.router.hub();
        let batch = match hub
            .inner()
            .read(&channel, Start::Earliest, usize::MAX)
            .await
        {
            Ok(batch) => batch,
            Err(err) => return push_live::http::error_for(&err),
        };
        let counts = self.shared.metrics.subscribers(&channel);
        let mut body = String::with_capacity(192);
        let _ = write!(
            body,
            r#"{{"channel":"{}","subscribers":{{"poll":{},"longpoll":{},"sse":{},"ws":{}}},"cursor":"{}","retained":{}}}"#,
            channel,
            counts[0],
            counts[1],
            counts[2],
            counts[3],
            batch.cursor,
            batch.messages.len()
        );
        push_live::http::respond(StatusCode::OK, "application/json", Bytes::from(body))
    }

    fn metrics_text(&self) -> AppResponse<H> {
        let shared = &*self.shared;
        let router = &shared.router;
        let metrics = &shared.metrics;
        let stats = &shared.stats;
        let mut out = String::with_capacity(2048);
        let open = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        family(
            &mut out,
            "push_connections",
            "gauge",
            "Subscribers connected now, by transport (held long polls, event streams, WebSockets).",
            &[
                (
                    "transport=\"longpoll\"",
                    open(router.connections(Technique::LongPoll)),
                ),
                (
                    "transport=\"sse\"",
                    open(router.connections(Technique::Sse)),
                ),
                ("transport=\"ws\"", open(router.connections(Technique::Ws))),
            ],
        );
        family(
            &mut out,
            "push_http_connections",
            "gauge",
            "TCP connections open now, upgraded WebSockets included.",
            &[("", open(stats.open_connections()))],
        );
        family(
            &mut out,
            "push_http_connections_upgraded",
            "gauge",
            "HTTP/1.1 connections upgraded to a WebSocket, open now.",
            &[("", open(stats.upgraded_connections()))],
        );
        family(
            &mut out,
            "push_http_connections_accepted_total",
            "counter",
            "TCP connections accepted.",
            &[("", stats.accepted())],
        );
        family(
            &mut out,
            "push_http_connections_closed_total",
            "counter",
            "Connections the server closed: idle ones shed at the connection limit, ones past a deadline (idle, request head, stalled write), and new ones refused at a limit (503 or 429).",
            &[
                ("reason=\"shed\"", stats.shed()),
                ("reason=\"timeout\"", stats.timed_out()),
                ("reason=\"refused\"", stats.refused()),
            ],
        );
        family(
            &mut out,
            "push_messages_published_total",
            "counter",
            "Messages published.",
            &[("", metrics.published())],
        );
        let delivered: Vec<(String, u64)> = Technique::ALL
            .iter()
            .map(|t| {
                (
                    format!("transport=\"{}\"", t.as_str()),
                    metrics.delivered(*t),
                )
            })
            .collect();
        let delivered: Vec<(&str, u64)> = delivered.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        family(
            &mut out,
            "push_messages_delivered_total",
            "counter",
            "Messages handed to subscribers, by transport.",
            &delivered,
        );
        let (gaps, resets) = metrics.signals();
        family(
            &mut out,
            "push_signals_total",
            "counter",
            "Continuity signals sent to subscribers.",
            &[("kind=\"gap\"", gaps), ("kind=\"reset\"", resets)],
        );
        if let Some(memory) = &shared.memory {
            let hub = memory.stats();
            let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
            family(
                &mut out,
                "push_retained_bytes",
                "gauge",
                "Bytes the history of every channel holds now (data, event names, encodings, bookkeeping).",
                &[("", count(hub.retained_bytes))],
            );
            family(
                &mut out,
                "push_retained_bytes_limit",
                "gauge",
                "The budget of push_retained_bytes (--max-retained-bytes).",
                &[("", count(hub.max_retained_bytes))],
            );
            family(
                &mut out,
                "push_channels",
                "gauge",
                "Channels held, by whether anything was published to them yet.",
                &[
                    (
                        "kind=\"published\"",
                        count(hub.channels.saturating_sub(hub.unpublished_channels)),
                    ),
                    ("kind=\"unpublished\"", count(hub.unpublished_channels)),
                ],
            );
            family(
                &mut out,
                "push_messages_trimmed_total",
                "counter",
                "Messages dropped, oldest first, to keep within --max-retained-bytes.",
                &[("", hub.trimmed_messages)],
            );
            family(
                &mut out,
                "push_channels_evicted_total",
                "counter",
                "Channels with no subscribers evicted to make room for new ones.",
                &[("", hub.evicted_channels)],
            );
        }
        if let Some(redis) = &shared.redis {
            let health = redis.health();
            let seconds = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64());
            let _ = write!(
                out,
                "# HELP push_redis_healthy 1 when Redis answers and the Pub/Sub probe comes back in time.\n# TYPE push_redis_healthy gauge\npush_redis_healthy {}\n\
                 # HELP push_redis_probe_round_trip_seconds The last probe's trip: publish on the command connection to arrival on the Pub/Sub connection.\n# TYPE push_redis_probe_round_trip_seconds gauge\npush_redis_probe_round_trip_seconds {}\n\
                 # HELP push_redis_since_last_probe_seconds How long since a probe last came back.\n# TYPE push_redis_since_last_probe_seconds gauge\npush_redis_since_last_probe_seconds {}\n",
                u8::from(health.healthy),
                seconds(health.probe_round_trip),
                seconds(health.since_last_probe),
            );
            family(
                &mut out,
                "push_redis_cached_bytes",
                "gauge",
                "Bytes this node's caches of recent messages hold (--max-retained-bytes bounds them).",
                &[("", u64::try_from(redis.cached_bytes()).unwrap_or(u64::MAX))],
            );
        }
        family(
            &mut out,
            "push_bytes_out_total",
            "counter",
            "Bytes written to clients (heads, bodies, frames).",
            &[("", stats.bytes_out())],
        );
        family(
            &mut out,
            "push_bytes_in_total",
            "counter",
            "Bytes read from clients.",
            &[("", stats.bytes_in())],
        );
        push_live::http::respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            Bytes::from(out),
        )
    }
}

impl<H: Hub> hyper::service::Service<Request<Incoming>> for App<H> {
    type Response = AppResponse<H>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let app = self.clone();
        Box::pin(async move { Ok(app.handle(request).await) })
    }
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The instant a token that expires at `expires` (Unix seconds) runs out;
/// a year stands for any later expiry (an `Instant` cannot go that far).
fn deadline(expires: u64) -> Instant {
    let left = Duration::from_secs(expires.saturating_sub(unix_now()))
        .min(Duration::from_secs(365 * 86_400));
    let now = Instant::now();
    now.checked_add(left).unwrap_or(now)
}

fn is_get(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

fn method_not_allowed<S>(message: &str) -> Response<RouterBody<S>> {
    push_live::http::method_not_allowed("GET, HEAD", message)
}

fn fixed<S>(
    method: &Method,
    content_type: &'static str,
    content: &'static str,
) -> Response<RouterBody<S>> {
    if !is_get(method) {
        return method_not_allowed("GET or HEAD only");
    }
    let mut response = push_live::http::respond(
        StatusCode::OK,
        content_type,
        Bytes::from_static(content.as_bytes()),
    );
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn text<S>(status: StatusCode, content: &'static str) -> Response<RouterBody<S>> {
    push_live::http::respond(
        status,
        "text/plain; charset=utf-8",
        Bytes::from_static(content.as_bytes()),
    )
}

fn error<S>(status: StatusCode, code: &str, message: &str) -> Response<RouterBody<S>> {
    push_live::http::error(status, code, message)
}

fn refusal<S>(err: &AuthError) -> Response<RouterBody<S>> {
    let mut response = error(err.status(), err.code(), &err.to_string());
    if err.status() == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

fn preflight<S>() -> Response<RouterBody<S>> {
    let mut response = Response::new(RouterBody::from_bytes(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    headers.insert(
        ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(
            "Authorization, Content-Type, Idempotency-Key, If-None-Match, Last-Event-ID",
        ),
    );
    headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    response
}
