//! The answers every push handler writes the same way: a whole body with its
//! type and no caching, a JSON error, a 405 naming the allowed methods.

use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use push_core::Error;
use push_core::wire::json;

use crate::headers::CACHE_NEVER;

/// The status every transport answers `err` with: 4xx for what the client
/// sent, 5xx for what went wrong here (docs/protocol.md §1.7).
///
/// ```
/// use http::StatusCode;
/// use push_core::Error;
///
/// assert_eq!(push_http::status_of(&Error::invalid_query("x")), StatusCode::BAD_REQUEST);
/// ```
pub fn status_of(err: &Error) -> StatusCode {
    StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// A whole answer: `status`, `body` of `content_type`, and
/// `Cache-Control: no-store`. Any body type made from bytes will do (hyper's
/// `Full`, an event stream's body, the router's).
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
///
/// let ok = push_http::respond::<Full<Bytes>>(http::StatusCode::OK, "text/plain", Bytes::from("ok"));
/// assert_eq!(ok.headers()["cache-control"], "no-store");
/// ```
pub fn respond<B: From<Bytes>>(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
) -> Response<B> {
    let mut response = Response::new(B::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(CACHE_NEVER));
    response
}

/// A JSON answer (`application/json`, not stored).
pub fn json<B: From<Bytes>>(status: StatusCode, body: Bytes) -> Response<B> {
    respond(status, "application/json", body)
}

/// A JSON error answer, `{"error":{"code":…,"message":…}}`, as every push
/// handler writes one.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
///
/// let gone = push_http::error::<Full<Bytes>>(http::StatusCode::NOT_FOUND, "not_found", "no such route");
/// assert_eq!(gone.status(), 404);
/// assert_eq!(gone.headers()["content-type"], "application/json");
/// ```
pub fn error<B: From<Bytes>>(status: StatusCode, code: &str, message: &str) -> Response<B> {
    json(status, json::error(code, message))
}

/// The answer to `err`: its status, code and message, and for a backend
/// failure whether the operation may have happened (`outcome`, §1.8).
pub fn error_for<B: From<Bytes>>(err: &Error) -> Response<B> {
    json(status_of(err), json::error_for(err))
}

/// The answer to `err` as the subscribing GET handlers (polling, long
/// polling, SSE) write it: status, code and message, without `outcome`.
pub fn error_plain<B: From<Bytes>>(err: &Error) -> Response<B> {
    error(status_of(err), err.code(), &err.to_string())
}

/// `405 Method Not Allowed`, with `Allow: allow` and a JSON error saying
/// `message`.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
///
/// let refused = push_http::method_not_allowed::<Full<Bytes>>("GET", "an event stream answers GET only");
/// assert_eq!(refused.headers()["allow"], "GET");
/// ```
pub fn method_not_allowed<B: From<Bytes>>(allow: &'static str, message: &str) -> Response<B> {
    let mut response = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        message,
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt as _, Full};

    async fn body(response: Response<Full<Bytes>>) -> Bytes {
        response.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn errors_are_json_and_never_stored() {
        let err = Error::invalid_query("bad");
        let response: Response<Full<Bytes>> = error_plain(&err);
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()["cache-control"], "no-store");
        assert_eq!(
            body(response).await,
            r#"{"error":{"code":"invalid_query","message":"invalid query: bad"}}"#
        );
        let unavailable = Error::unavailable("down");
        let with: Response<Full<Bytes>> = error_for(&unavailable);
        assert_eq!(with.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(body(with).await.ends_with(br#","outcome":"not_done"}}"#));
        let without: Response<Full<Bytes>> = error_plain(&unavailable);
        assert!(!body(without).await.ends_with(br#","outcome":"not_done"}}"#));
    }

    #[test]
    fn statuses_match_the_protocol() {
        for (err, status) in [
            (Error::invalid_query("x"), 400),
            (Error::IdempotencyKeyReused, 422),
            (Error::unavailable("x"), 503),
            (Error::invalid_response("x"), 502),
        ] {
            assert_eq!(status_of(&err), status, "{err}");
        }
    }
}
