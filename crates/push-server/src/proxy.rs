//! Proxy mode: on every subscribe and publish, ask the app's own backend,
//! with the request's cookies and headers, and obey its answer.
//!
//! `POST URL` with `{"action":"subscribe","channel":"news","transport":"sse"}`
//! and the forwarded headers (by default `Cookie` and `Authorization`):
//!
//! | the backend answers | push-server does |
//! |---|---|
//! | `200`, empty body or a JSON object | allows |
//! | `200` with `{"channel":"user:42"}` | serves `user:42` instead (the URL is not rewritten) |
//! | `401` or `403` | refuses with that status (`unauthorized`, `forbidden`) |
//! | anything else, an unreadable body, no answer within the timeout | refuses with `503 auth_unavailable`: **fail closed** |
//!
//! Answers of `200`, `401` and `403` are cached for a short while per
//! (forwarded headers, channel, action, transport), in a bounded cache; a
//! failure is never cached. The backend's body is read up to
//! [`MAX_ANSWER_BYTES`].

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::request::Parts;
use http::{HeaderName, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use push_live::http::{Action, Authorize, Deciding, Decision, Denial};
use push_live::{ChannelName, Route};
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

/// The most bytes of the backend's answer read; a longer one is a failure
/// (503).
pub const MAX_ANSWER_BYTES: usize = 4096;

/// How proxy mode reaches the backend and remembers its answers.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ProxyConfig {
    /// Where to ask: an `http://` URL (the backend is on loopback or a
    /// private network; `https://` is not supported).
    pub url: Uri,
    /// How long an answer may take, body included.
    pub timeout: Duration,
    /// How long an answer is reused (zero: never).
    pub cache_for: Duration,
    /// The most answers remembered; the oldest go first.
    pub cache_size: usize,
    /// The request headers forwarded to the backend.
    pub forward: Vec<HeaderName>,
}

impl ProxyConfig {
    /// Proxy mode asking `url`: 2 s timeout, answers cached 5 s, at most
    /// 10,000 of them, forwarding `Cookie` and `Authorization`.
    ///
    /// # Errors
    /// A URL that is not `http://host[:port][/path]`.
    pub fn new(url: &str) -> Result<ProxyConfig, String> {
        let url: Uri = url
            .parse()
            .map_err(|err| format!("`{url}` is not a URL: {err}"))?;
        if url.scheme_str() != Some("http") || url.host().is_none() {
            return Err(format!(
                "`{url}` must be an http:// URL with a host (https is not supported: reach the backend over loopback or a private network)"
            ));
        }
        Ok(ProxyConfig {
            url,
            timeout: Duration::from_secs(2),
            cache_for: Duration::from_secs(5),
            cache_size: 10_000,
            forward: vec![http::header::COOKIE, http::header::AUTHORIZATION],
        })
    }

    /// Sets [`timeout`](Self::timeout).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets [`cache_for`](Self::cache_for) and [`cache_size`](Self::cache_size).
    #[must_use]
    pub fn with_cache(mut self, cache_for: Duration, cache_size: usize) -> Self {
        self.cache_for = cache_for;
        self.cache_size = cache_size;
        self
    }

    /// Sets [`forward`](Self::forward) from header names.
    ///
    /// # Errors
    /// A name that is not a header name.
    pub fn with_forward(mut self, names: &[String]) -> Result<Self, String> {
        self.forward = names
            .iter()
            .map(|name| name.trim())
            .filter(|name| !name.is_empty())
            .map(|name| {
                HeaderName::try_from(name).map_err(|_| format!("`{name}` is not a header name"))
            })
            .collect::<Result<_, _>>()?;
        Ok(self)
    }
}

/// The [`Authorize`] hook of proxy mode.
#[derive(Clone)]
pub struct AuthProxy {
    inner: Arc<Inner>,
}

struct Inner {
    config: ProxyConfig,
    client: Client<HttpConnector, Full<Bytes>>,
    cache: Mutex<Cache>,
}

impl std::fmt::Debug for AuthProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthProxy")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl AuthProxy {
    /// The hook for `config`. Connections to the backend are pooled.
    pub fn new(config: ProxyConfig) -> AuthProxy {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let cache = Cache::new(config.cache_for, config.cache_size);
        AuthProxy {
            inner: Arc::new(Inner {
                config,
                client,
                cache: Mutex::new(cache),
            }),
        }
    }
}

/// The transport a request came by, for the backend: the technique's name,
/// or `http` for `POST /pub`.
fn transport(parts: &Parts) -> &'static str {
    match Route::of(parts.uri.path()) {
        Some(Route::Subscribe(technique)) => technique.as_str(),
        Some(Route::Commands) => "ws",
        Some(Route::Publish | Route::Presence) | None => "http",
    }
}

/// Why the backend's answer could not be used.
type Failure = &'static str;

impl Authorize for AuthProxy {
    fn authorize(&self, parts: &Parts, channel: &ChannelName, action: Action) -> Deciding {
        let transport = transport(parts);
        let forwarded: Vec<(HeaderName, HeaderValue)> = self
            .inner
            .config
            .forward
            .iter()
            .flat_map(|name| {
                parts
                    .headers
                    .get_all(name)
                    .iter()
                    .map(move |value| (name.clone(), value.clone()))
            })
            .collect();
        let key = cache_key(&forwarded, channel, action, transport);
        let now = Instant::now();
        if let Some(decision) = self.inner.lock().get(&key, now) {
            return Box::pin(std::future::ready(decision));
        }
        let inner = self.inner.clone();
        let channel = channel.clone();
        Box::pin(async move {
            let asked = tokio::time::timeout(
                inner.config.timeout,
                inner.ask(forwarded, &channel, action, transport),
            )
            .await
            .unwrap_or(Err("no answer in time"));
            match asked {
                Ok(decision) => {
                    inner.lock().insert(key, Instant::now(), decision.clone());
                    decision
                }
                Err(reason) => {
                    tracing::warn!(%channel, action = action.as_str(), reason, "auth backend failed: refused (503)");
                    Decision::Deny(Denial::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "auth_unavailable",
                        "the authorization backend did not answer: try again later",
                    ))
                }
            }
        })
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One exchange with the backend.
    async fn ask(
        &self,
        forwarded: Vec<(HeaderName, HeaderValue)>,
        channel: &ChannelName,
        action: Action,
        transport: &'static str,
    ) -> Result<Decision, Failure> {
        let body = serde_json::json!({
            "action": action.as_str(),
            "channel": channel.as_str(),
            "transport": transport,
        });
        let mut request = Request::post(self.config.url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|_| "the request could not be made")?;
        let headers = request.headers_mut();
        for (name, value) in forwarded {
            headers.append(name, value);
        }
        let response = self
            .client
            .request(request)
            .await
            .map_err(|_| "the backend could not be reached")?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|_| "the answer was unreadable or too long")?
            .to_bytes();
        match status {
            StatusCode::OK => allowed(&body, channel),
            StatusCode::UNAUTHORIZED => Ok(Decision::Deny(Denial::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the app does not know this session",
            ))),
            StatusCode::FORBIDDEN => Ok(Decision::Deny(Denial::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the app does not allow this on this channel",
            ))),
            _ => Err("the backend answered neither 200, 401 nor 403"),
        }
    }
}

/// A `200`'s decision: allowed, or mapped when it names another channel.
fn allowed(body: &[u8], asked: &ChannelName) -> Result<Decision, Failure> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Decision::Allow);
    }
    let answer: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| "a 200 whose body is not JSON")?;
    let object = answer
        .as_object()
        .ok_or("a 200 whose body is not an object")?;
    match object.get("channel") {
        None | Some(serde_json::Value::Null) => Ok(Decision::Allow),
        Some(serde_json::Value::String(name)) => {
            let mapped: ChannelName = name
                .parse()
                .map_err(|_| "a 200 naming an invalid channel")?;
            Ok(if &mapped == asked {
                Decision::Allow
            } else {
                Decision::Map(mapped)
            })
        }
        Some(_) => Err("a 200 whose `channel` is not a string"),
    }
}

/// The cache key: a hash of what the backend's answer depends on, so that
/// an entry is 32 bytes however long the cookies.
fn cache_key(
    forwarded: &[(HeaderName, HeaderValue)],
    channel: &ChannelName,
    action: Action,
    transport: &str,
) -> [u8; 32] {
    let mut hash = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    };
    field(action.as_str().as_bytes());
    field(transport.as_bytes());
    field(channel.as_str().as_bytes());
    for (name, value) in forwarded {
        field(name.as_str().as_bytes());
        field(value.as_bytes());
    }
    hash.finalize().into()
}

/// The backend's recent answers: at most `max`, each for `ttl`. Entries
/// expire in the order they were made (one `ttl` for all), so the oldest is
/// always at the front of `order`: expiring and evicting are O(1) each.
struct Cache {
    ttl: Duration,
    max: usize,
    entries: HashMap<[u8; 32], (Instant, Decision)>,
    order: VecDeque<(Instant, [u8; 32])>,
}

impl Cache {
    fn new(ttl: Duration, max: usize) -> Cache {
        Cache {
            ttl,
            max,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn get(&self, key: &[u8; 32], now: Instant) -> Option<Decision> {
        let (at, decision) = self.entries.get(key)?;
        (now.saturating_duration_since(*at) < self.ttl).then(|| decision.clone())
    }

    fn insert(&mut self, key: [u8; 32], now: Instant, decision: Decision) {
        if self.ttl.is_zero() || self.max == 0 {
            return;
        }
        while let Some(&(at, oldest)) = self.order.front() {
            if now.saturating_duration_since(at) < self.ttl && self.order.len() < self.max {
                break;
            }
            self.order.pop_front();
            // Only if it is still this entry (not a newer answer for the key).
            if self
                .entries
                .get(&oldest)
                .is_some_and(|(made, _)| *made == at)
            {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(key, (now, decision));
        self.order.push_back((now, key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(name: &str) -> ChannelName {
        name.parse().unwrap()
    }

    #[test]
    fn a_200_allows_or_maps_and_anything_odd_fails() {
        let news = channel("news");
        assert_eq!(allowed(b"", &news), Ok(Decision::Allow));
        assert_eq!(allowed(b" {} ", &news), Ok(Decision::Allow));
        assert_eq!(
            allowed(br#"{"channel":"news"}"#, &news),
            Ok(Decision::Allow)
        );
        assert_eq!(
            allowed(br#"{"channel":"user:42","x":1}"#, &news),
            Ok(Decision::Map(channel("user:42")))
        );
        for odd in [
            &b"ok"[..],
            b"[1]",
            br#"{"channel":"a b"}"#,
            br#"{"channel":7}"#,
        ] {
            assert!(allowed(odd, &news).is_err(), "{odd:?}");
        }
    }

    #[test]
    fn the_cache_is_bounded_and_forgets_in_time() {
        let now = Instant::now();
        let ttl = Duration::from_secs(5);
        let mut cache = Cache::new(ttl, 2);
        let key = |n: u8| [n; 32];
        cache.insert(key(1), now, Decision::Allow);
        cache.insert(key(2), now, Decision::Allow);
        assert_eq!(cache.get(&key(1), now), Some(Decision::Allow));
        cache.insert(key(3), now, Decision::Allow);
        assert_eq!(cache.get(&key(1), now), None, "the oldest made room");
        assert_eq!(cache.entries.len(), 2);
        assert_eq!(cache.get(&key(3), now + ttl), None, "expired");
        // A key answered again lives on; its old place in the order is
        // skipped, not taken as its own.
        cache.insert(key(3), now + ttl, Decision::Deny(Denial::forbidden()));
        cache.insert(key(4), now + ttl, Decision::Allow);
        assert!(cache.get(&key(3), now + ttl).is_some());
        assert!(cache.order.len() <= 2 && cache.entries.len() <= 2);
        let mut off = Cache::new(Duration::ZERO, 10);
        off.insert(key(1), now, Decision::Allow);
        assert_eq!(off.get(&key(1), now), None);
    }

    #[test]
    fn keys_tell_apart_headers_channels_actions_and_transports() {
        let cookie = |v: &'static str| vec![(http::header::COOKIE, HeaderValue::from_static(v))];
        let base = cache_key(&cookie("s=1"), &channel("a"), Action::Subscribe, "sse");
        for other in [
            cache_key(&cookie("s=2"), &channel("a"), Action::Subscribe, "sse"),
            cache_key(&cookie("s=1"), &channel("b"), Action::Subscribe, "sse"),
            cache_key(&cookie("s=1"), &channel("a"), Action::Publish, "sse"),
            cache_key(&cookie("s=1"), &channel("a"), Action::Subscribe, "ws"),
            cache_key(&[], &channel("a"), Action::Subscribe, "sse"),
        ] {
            assert_ne!(base, other);
        }
        assert_eq!(
            base,
            cache_key(&cookie("s=1"), &channel("a"), Action::Subscribe, "sse")
        );
    }
}
