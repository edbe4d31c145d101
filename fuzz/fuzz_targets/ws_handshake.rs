//! The WebSocket opening handshake (push-ws's `WsHandler`, RFC 6455 §4.2.1),
//! through its public API: the input is a request head as a client sends
//! it, read by httparse as hyper reads it, then answered by the handler on
//! the channel endpoint and on the `push.v1` command endpoint, with each
//! kind of origin rule.
//!
//! Checks: an accepted handshake (101) was a GET over HTTP/1.1 with
//! `Upgrade: websocket`, `Connection: upgrade`, version 13 and a key of 16
//! bytes, and answers with that key's `Sec-WebSocket-Accept`; the command
//! endpoint accepts only a client offering `push.v1`, and says so; any other
//! answer is a 4xx or 5xx.
#![no_main]

use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use libfuzzer_sys::fuzz_target;
use push_core::MemoryHub;
use push_ws::{Origins, WsConfig, WsHandler};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

/// Both endpoints, with each kind of origin rule, on a hub of their own (a
/// channel endpoint's handshake subscribes: a shared hub would keep every
/// channel the fuzzer names).
fn handlers() -> Vec<WsHandler<MemoryHub>> {
    let hub = Arc::new(MemoryHub::new());
    let list = Origins::List(Arc::from(vec!["https://app.example.com".to_owned()]));
    [WsConfig::default(), WsConfig::commands()]
        .into_iter()
        .flat_map(|config| {
            [Origins::SameHost, Origins::Any, list.clone()]
                .map(|origins| WsHandler::new(hub.clone(), config.clone().with_origins(origins)))
        })
        .collect()
}

/// The request a client sent, as hyper would read it.
fn request(data: &[u8]) -> Option<http::Request<()>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut head = httparse::Request::new(&mut headers);
    head.parse(data).ok()?;
    let mut request = http::Request::builder()
        .method(head.method?)
        .uri(head.path?)
        .version(if head.version? == 1 {
            http::Version::HTTP_11
        } else {
            http::Version::HTTP_10
        });
    for header in head.headers.iter() {
        request = request.header(header.name, header.value);
    }
    request.body(()).ok()
}

fn has_token(request: &http::Request<()>, name: http::header::HeaderName, token: &str) -> bool {
    request
        .headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fuzz_target!(|data: &[u8]| {
    let Some(template) = request(data) else {
        return;
    };
    let runtime = runtime();
    for handler in &handlers() {
        let mut request = http::Request::new(());
        *request.method_mut() = template.method().clone();
        *request.uri_mut() = template.uri().clone();
        *request.version_mut() = template.version();
        *request.headers_mut() = template.headers().clone();
        let response = runtime.block_on(handler.handle(request));
        let status = response.status();
        let headers = response.headers();
        if status == http::StatusCode::SWITCHING_PROTOCOLS {
            assert_eq!(template.method(), http::Method::GET);
            assert_eq!(template.version(), http::Version::HTTP_11);
            assert!(has_token(&template, http::header::UPGRADE, "websocket"));
            assert!(has_token(&template, http::header::CONNECTION, "upgrade"));
            assert_eq!(
                template
                    .headers()
                    .get_all(http::header::SEC_WEBSOCKET_VERSION)
                    .iter()
                    .count(),
                1
            );
            let key = template
                .headers()
                .get(http::header::SEC_WEBSOCKET_KEY)
                .expect("a key");
            assert_eq!(
                BASE64.decode(key.as_bytes()).map(|k| k.len()).ok(),
                Some(16)
            );
            let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
            assert_eq!(
                headers
                    .get(http::header::SEC_WEBSOCKET_ACCEPT)
                    .map(|v| v.as_bytes()),
                Some(accept.as_bytes())
            );
            if matches!(handler.config().endpoint, push_ws::Endpoint::Commands) {
                assert!(has_token(
                    &template,
                    http::header::SEC_WEBSOCKET_PROTOCOL,
                    push_ws::SUBPROTOCOL
                ));
                assert_eq!(
                    headers
                        .get(http::header::SEC_WEBSOCKET_PROTOCOL)
                        .map(|v| v.as_bytes()),
                    Some(push_ws::SUBPROTOCOL.as_bytes())
                );
            }
        } else {
            assert!(
                status.is_client_error() || status.is_server_error(),
                "{status}"
            );
        }
        // An accepted handshake's socket task ends at once (no connection to
        // upgrade): let it, or every input's tasks and hubs would pile up.
        let tasks = handler.socket_tasks();
        tasks.close();
        runtime.block_on(tasks.wait());
    }
});
