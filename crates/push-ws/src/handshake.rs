//! The opening handshake: RFC 6455 over HTTP/1.1, RFC 8441 over HTTP/2.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::header::{
    CONNECTION, HOST, ORIGIN, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::request::Parts;
use http::{HeaderMap, Method, StatusCode, Version};

use crate::config::Origins;

/// The subprotocol of the command endpoint.
pub const SUBPROTOCOL: &str = "push.v1";

/// Why a handshake is refused: the status and a message naming the problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: &'static str,
}

fn refuse(status: StatusCode, code: &'static str, message: &'static str) -> Refusal {
    Refusal {
        status,
        code,
        message,
    }
}

/// A valid opening handshake.
#[derive(Debug)]
pub(crate) struct Accepted {
    /// `Sec-WebSocket-Accept` for HTTP/1.1; `None` over HTTP/2.
    pub(crate) accept: Option<String>,
    /// Whether the client offered `push.v1`.
    pub(crate) offers_subprotocol: bool,
    /// Whether the client offered permessage-deflate in a form push-ws
    /// accepts (see [`deflate_offered`]).
    pub(crate) offers_deflate: bool,
}

/// Checks the request as RFC 6455 §4.2.1 (or RFC 8441 §5 over HTTP/2) asks.
pub(crate) fn check(parts: &Parts, origins: &Origins) -> Result<Accepted, Refusal> {
    let headers = &parts.headers;
    let accept = if parts.version == Version::HTTP_2 {
        let protocol = parts.extensions.get::<hyper::ext::Protocol>();
        if parts.method != Method::CONNECT || protocol.is_none_or(|p| p.as_str() != "websocket") {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "not_a_websocket",
                "over HTTP/2 a WebSocket opens with CONNECT and :protocol websocket (RFC 8441)",
            ));
        }
        None
    } else {
        if parts.method != Method::GET {
            return Err(refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "a WebSocket opens with GET",
            ));
        }
        if !has_token(headers, &UPGRADE, "websocket") {
            return Err(refuse(
                StatusCode::UPGRADE_REQUIRED,
                "upgrade_required",
                "this is a WebSocket endpoint: send Upgrade: websocket",
            ));
        }
        if !has_token(headers, &CONNECTION, "upgrade") {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "invalid_handshake",
                "the Connection header must contain upgrade",
            ));
        }
        if parts.version < Version::HTTP_11 {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "invalid_handshake",
                "a WebSocket needs HTTP/1.1",
            ));
        }
        Some(accept_key(headers)?)
    };
    let mut versions = headers.get_all(SEC_WEBSOCKET_VERSION).iter();
    if versions.next().is_none_or(|v| v.as_bytes() != b"13") || versions.next().is_some() {
        return Err(refuse(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported_version",
            "only WebSocket version 13 is spoken: send Sec-WebSocket-Version: 13",
        ));
    }
    check_origin(parts, origins)?;
    let offers_subprotocol = headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL);
    Ok(Accepted {
        accept,
        offers_subprotocol,
        offers_deflate: deflate_offered(headers),
    })
}

/// Whether one of the `Sec-WebSocket-Extensions` offers is a
/// permessage-deflate push-ws accepts (RFC 7692 §7.1): its parameters
/// known, each at most once, with valid values, and no
/// `server_max_window_bits` below 15 (the compressor's window is 32 KiB).
/// An offer that is not accepted is declined, as the RFC asks; the
/// handshake goes on without it.
pub(crate) fn deflate_offered(headers: &HeaderMap) -> bool {
    headers
        .get_all(SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|offer| {
            let mut parts = offer.split(';').map(str::trim);
            if parts.next() != Some("permessage-deflate") {
                return false;
            }
            let mut seen = Vec::new();
            parts.all(|param| {
                let (name, value) = match param.split_once('=') {
                    Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
                    None => (param, None),
                };
                if seen.contains(&name) {
                    return false;
                }
                seen.push(name);
                let bits = |value: &str| value.parse::<u8>().is_ok_and(|b| (8..=15).contains(&b));
                match (name, value) {
                    (
                        "server_no_context_takeover"
                        | "client_no_context_takeover"
                        | "client_max_window_bits",
                        None,
                    ) => true,
                    ("client_max_window_bits", Some(value)) => bits(value),
                    ("server_max_window_bits", Some(value)) => value == "15",
                    _ => false,
                }
            })
        })
}

/// `Sec-WebSocket-Accept` for a well-formed `Sec-WebSocket-Key` (base64 of
/// exactly 16 bytes, given once).
fn accept_key(headers: &HeaderMap) -> Result<String, Refusal> {
    let invalid = || {
        refuse(
            StatusCode::BAD_REQUEST,
            "invalid_handshake",
            "Sec-WebSocket-Key must be the base64 of 16 bytes, given once",
        )
    };
    let mut keys = headers.get_all(SEC_WEBSOCKET_KEY).iter();
    let key = keys.next().ok_or_else(invalid)?;
    if keys.next().is_some() {
        return Err(invalid());
    }
    let decoded = BASE64.decode(key.as_bytes()).map_err(|_| invalid())?;
    if decoded.len() != 16 {
        return Err(invalid());
    }
    Ok(tungstenite::handshake::derive_accept_key(key.as_bytes()))
}

fn check_origin(parts: &Parts, origins: &Origins) -> Result<(), Refusal> {
    let Some(origin) = parts.headers.get(ORIGIN) else {
        return Ok(());
    };
    let forbidden = || {
        refuse(
            StatusCode::FORBIDDEN,
            "forbidden_origin",
            "this origin may not open a WebSocket here",
        )
    };
    let origin = origin.to_str().map_err(|_| forbidden())?.trim();
    let allowed = match origins {
        Origins::Any => true,
        Origins::SameHost => {
            let origin_host = origin.split_once("://").map(|(_, rest)| rest);
            matches!((own_host(parts), origin_host), (Some(h), Some(o)) if h.eq_ignore_ascii_case(o))
        }
        // The list alone decides: a name that merely resolves here (DNS
        // rebinding) arrives with a matching Host.
        Origins::List(list) => list.iter().any(|o| o.eq_ignore_ascii_case(origin)),
    };
    if allowed { Ok(()) } else { Err(forbidden()) }
}

/// The host (and port) the request was sent to: its `Host` header, or over
/// HTTP/2, which carries none, its `:authority` (without any user info).
fn own_host(parts: &Parts) -> Option<&str> {
    match parts.headers.get(HOST) {
        Some(host) => host.to_str().ok(),
        None => {
            let authority = parts.uri.authority()?.as_str();
            authority.rsplit('@').next()
        }
    }
}

/// Whether a comma-separated header holds `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: &http::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut request = http::Request::get("/ws/c");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap().into_parts().0
    }

    const GOOD: [(&str, &str); 5] = [
        ("host", "example.com"),
        ("upgrade", "websocket"),
        ("connection", "keep-alive, Upgrade"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn the_rfcs_example_key() {
        let accepted = check(&parts(&GOOD), &Origins::SameHost).unwrap();
        // RFC 6455 §1.3.
        assert_eq!(
            accepted.accept.as_deref(),
            Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
        assert!(!accepted.offers_subprotocol);
    }

    #[test]
    fn each_missing_or_wrong_part_is_named() {
        let without = |name: &str| -> Vec<(&str, &str)> {
            GOOD.iter().copied().filter(|(n, _)| *n != name).collect()
        };
        let with = |name: &'static str, value: &'static str| -> Vec<(&'static str, &'static str)> {
            let mut headers: Vec<_> = GOOD.iter().copied().filter(|(n, _)| *n != name).collect();
            headers.push((name, value));
            headers
        };
        let cases = [
            (
                without("upgrade"),
                StatusCode::UPGRADE_REQUIRED,
                "upgrade_required",
            ),
            (
                without("connection"),
                StatusCode::BAD_REQUEST,
                "invalid_handshake",
            ),
            (
                without("sec-websocket-key"),
                StatusCode::BAD_REQUEST,
                "invalid_handshake",
            ),
            (
                with("sec-websocket-key", "c2hvcnQ="),
                StatusCode::BAD_REQUEST,
                "invalid_handshake",
            ),
            (
                with("sec-websocket-key", "not base64!!"),
                StatusCode::BAD_REQUEST,
                "invalid_handshake",
            ),
            (
                without("sec-websocket-version"),
                StatusCode::UPGRADE_REQUIRED,
                "unsupported_version",
            ),
            (
                with("sec-websocket-version", "8"),
                StatusCode::UPGRADE_REQUIRED,
                "unsupported_version",
            ),
            (
                with("origin", "https://evil.example"),
                StatusCode::FORBIDDEN,
                "forbidden_origin",
            ),
        ];
        for (headers, status, code) in cases {
            let refusal = check(&parts(&headers), &Origins::SameHost).unwrap_err();
            assert_eq!(
                (refusal.status, refusal.code),
                (status, code),
                "{headers:?}"
            );
        }
    }

    /// An HTTP/2 extended CONNECT as hyper hands it over: no `Host`, the
    /// authority in the URI.
    fn h2_parts(uri: &str, origin: &str) -> Parts {
        let mut request = http::Request::connect(uri)
            .version(Version::HTTP_2)
            .header("sec-websocket-version", "13")
            .header("origin", origin)
            .body(())
            .unwrap();
        request
            .extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        request.into_parts().0
    }

    #[test]
    fn same_host_over_http2_is_the_authority() {
        let own = h2_parts("https://example.com:8443/ws/c", "https://example.com:8443");
        assert!(own.headers.get(HOST).is_none());
        assert!(check(&own, &Origins::SameHost).is_ok());
        let other = h2_parts("https://example.com:8443/ws/c", "https://evil.example");
        assert_eq!(
            check(&other, &Origins::SameHost).unwrap_err().code,
            "forbidden_origin"
        );
        // Another port is another origin.
        let port = h2_parts("https://example.com:8443/ws/c", "https://example.com");
        assert!(check(&port, &Origins::SameHost).is_err());
        // Without Host or authority nothing is the same host.
        let bare = h2_parts("/ws/c", "https://example.com");
        assert!(check(&bare, &Origins::SameHost).is_err());
    }

    #[test]
    fn an_origin_list_alone_decides() {
        let list = Origins::List(vec!["https://app.example.org".to_owned()].into());
        // The DNS-rebinding shape: attacker.example resolves to this server,
        // so the browser's Host matches the Origin.
        let rebound = [
            ("host", "attacker.example"),
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("origin", "http://attacker.example"),
        ];
        assert!(check(&parts(&rebound), &Origins::SameHost).is_ok());
        assert_eq!(
            check(&parts(&rebound), &list).unwrap_err().code,
            "forbidden_origin"
        );
        let mut listed = GOOD.to_vec();
        listed.push(("origin", "HTTPS://app.example.org"));
        assert!(check(&parts(&listed), &list).is_ok());
        // The server's own origin passes only when listed.
        let mut own = GOOD.to_vec();
        own.push(("origin", "http://example.com"));
        assert!(check(&parts(&own), &list).is_err());
        let with_own = Origins::List(
            vec![
                "https://app.example.org".to_owned(),
                "http://example.com".to_owned(),
            ]
            .into(),
        );
        assert!(check(&parts(&own), &with_own).is_ok());
        // Over HTTP/2 too.
        let h2 = h2_parts("https://attacker.example/ws/c", "https://attacker.example");
        assert!(check(&h2, &list).is_err());
        assert!(check(&h2, &Origins::SameHost).is_ok());
    }

    #[test]
    fn deflate_offers() {
        let offered = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(SEC_WEBSOCKET_EXTENSIONS, value.parse().unwrap());
            deflate_offered(&headers)
        };
        // What browsers send.
        assert!(offered("permessage-deflate; client_max_window_bits"));
        assert!(offered("permessage-deflate"));
        assert!(offered(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        ));
        assert!(offered("permessage-deflate; client_max_window_bits=\"10\""));
        assert!(offered("permessage-deflate; server_max_window_bits=15"));
        // A smaller server window than the compressor's is declined, and
        // so are unknown, repeated or bad parameters; a later offer in the
        // list is taken.
        assert!(!offered("permessage-deflate; server_max_window_bits=10"));
        assert!(!offered("permessage-deflate; mystery"));
        assert!(!offered("permessage-deflate; client_max_window_bits=16"));
        assert!(!offered(
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover"
        ));
        assert!(!offered("x-webkit-deflate-frame"));
        assert!(offered(
            "permessage-deflate; server_max_window_bits=9, permessage-deflate"
        ));
    }

    #[test]
    fn origins() {
        let mut headers = GOOD.to_vec();
        headers.push(("origin", "http://EXAMPLE.com"));
        assert!(check(&parts(&headers), &Origins::SameHost).is_ok());
        let mut other = GOOD.to_vec();
        other.push(("origin", "https://app.example.org"));
        assert!(check(&parts(&other), &Origins::SameHost).is_err());
        assert!(check(&parts(&other), &Origins::Any).is_ok());
        let list = Origins::List(vec!["https://app.example.org".to_owned()].into());
        assert!(check(&parts(&other), &list).is_ok());
        let mut subprotocols = GOOD.to_vec();
        subprotocols.push(("sec-websocket-protocol", "chat, push.v1"));
        assert!(
            check(&parts(&subprotocols), &Origins::SameHost)
                .unwrap()
                .offers_subprotocol
        );
    }
}
