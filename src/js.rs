//! push.js, the browser client (docs/js-client.md), for apps that embed
//! push: the script itself, and a ready answer to a request for it.
//!
//! Mount it next to the router, at any path your pages import it from:
//!
//! ```
//! # #[cfg(feature = "tower")] {
//! # fn app(push: axum::Router) -> axum::Router {
//! // axum
//! push.route_service("/push.js", push_live::js::PushJs)
//! # }
//! # }
//! ```
//!
//! ```
//! # use http::Request;
//! # fn answer(request: Request<()>) -> http::Response<http_body_util::Full<bytes::Bytes>> {
//! // hyper, in your own service: the answer for a request to your path
//! push_live::js::response(request.method(), request.headers())
//! # }
//! ```
//!
//! The answer carries an `ETag` made from the script's content and
//! `Cache-Control: no-cache`: a browser keeps its copy and revalidates it
//! (a `304` of a few bytes), so a new version of push.js reaches it at once.

use std::convert::Infallible;
use std::future::{Ready, ready};

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;

/// push.js: one dependency-free ES module (`import { subscribe } from
/// "/push.js"`), as [`response`] serves it.
pub const PUSH_JS: &str = include_str!("../assets/push.js");

/// The `Content-Type` push.js is served with.
pub const PUSH_JS_CONTENT_TYPE: &str = "text/javascript; charset=utf-8";

/// The entity tag of [`PUSH_JS`], quotes included: the FNV-1a 64-bit hash
/// of its bytes in hex, computed when this crate is built, so it changes
/// with every version of the script.
///
/// ```
/// assert_eq!(push_live::js::PUSH_JS_ETAG.len(), 18);
/// assert!(push_live::js::PUSH_JS_ETAG.starts_with('"'));
/// ```
pub const PUSH_JS_ETAG: &str = match std::str::from_utf8(&ETAG_BYTES) {
    Ok(tag) => tag,
    Err(_) => "\"push-js\"",
};

const ETAG_BYTES: [u8; 18] = etag(PUSH_JS.as_bytes());

/// `"` + the FNV-1a 64 hash of `bytes` in lowercase hex + `"`.
const fn etag(bytes: &[u8]) -> [u8; 18] {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut tag = [b'"'; 18];
    let mut digit = 0;
    while digit < 16 {
        tag[1 + digit] = HEX[((hash >> (60 - 4 * digit)) & 0xf) as usize];
        digit += 1;
    }
    tag
}

/// Answers a request for push.js: `200` with the script
/// ([`PUSH_JS_CONTENT_TYPE`], `ETag: `[`PUSH_JS_ETAG`],
/// `Cache-Control: no-cache`), `304` when `If-None-Match` names that tag,
/// `405` for a method other than GET and HEAD. Any body made from bytes
/// will do (hyper's `Full`, the router's
/// [`RouterBody`](crate::RouterBody)).
///
/// ```
/// use http::{HeaderMap, Method};
/// use http_body_util::Full;
/// use bytes::Bytes;
///
/// let first = push_live::js::response::<Full<Bytes>>(&Method::GET, &HeaderMap::new());
/// assert_eq!(first.status(), 200);
/// assert_eq!(first.headers()["content-type"], "text/javascript; charset=utf-8");
///
/// let mut again = HeaderMap::new();
/// again.insert("if-none-match", first.headers()["etag"].clone());
/// let cached = push_live::js::response::<Full<Bytes>>(&Method::GET, &again);
/// assert_eq!(cached.status(), 304);
/// ```
pub fn response<B: From<Bytes>>(method: &Method, headers: &HeaderMap) -> Response<B> {
    if method != Method::GET && method != Method::HEAD {
        return push_http::method_not_allowed("GET, HEAD", "push.js is fetched with GET");
    }
    let fresh = headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == PUSH_JS_ETAG);
    let mut response = if fresh {
        let mut response = Response::new(B::from(Bytes::new()));
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        push_http::respond(
            StatusCode::OK,
            PUSH_JS_CONTENT_TYPE,
            Bytes::from_static(PUSH_JS.as_bytes()),
        )
    };
    let headers = response.headers_mut();
    headers.insert(ETAG, HeaderValue::from_static(PUSH_JS_ETAG));
    headers.insert(
        CACHE_CONTROL,
        HeaderValue::from_static(push_http::CACHE_REVALIDATE),
    );
    if !fresh {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(PUSH_JS_CONTENT_TYPE));
    }
    response
}

/// push.js as a service: [`response`] to every request, whatever its path.
/// A hyper `Service`, and with the `tower` feature a `tower::Service`
/// (always ready): `axum::Router::new().route_service("/push.js", PushJs)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct PushJs;

impl<B> hyper::service::Service<Request<B>> for PushJs {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Full<Bytes>>, Infallible>>;

    fn call(&self, request: Request<B>) -> Self::Future {
        ready(Ok(response(request.method(), request.headers())))
    }
}

#[cfg(feature = "tower")]
impl<B> tower_service::Service<Request<B>> for PushJs {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Full<Bytes>>, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        ready(Ok(response(request.method(), request.headers())))
    }
}
