//! push-server against hostile clients and careless settings, as an attacker
//! and an operator would try it: running out of file descriptors, publishing
//! on a public address with no secret, secrets and settings that cannot
//! work, extreme token expiries, long tokens in the query, and methods the
//! operational endpoints do not take.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../../tests/support/mod.rs"]
mod support;
#[path = "../../../tests/support/ws.rs"]
mod ws_support;

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{Launch, Running, refused};
use futures_util::SinkExt as _;
use http::StatusCode;
use push_server::auth::JwtVerifier;
use serde_json::json;
use support::{get, open_sse, request, until, within};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use ws_support::next_json;

const SECRET: &str = "jwt secret for the tests, 32 bytes+";

fn token(claims: &serde_json::Value) -> String {
    JwtVerifier::new(SECRET.as_bytes()).unwrap().sign(claims)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Reads until the server closes `stream` (EOF or reset).
async fn until_closed(stream: &mut TcpStream) {
    within("the server to close the connection", async {
        let mut buffer = [0u8; 1024];
        while let Ok(read) = stream.read(&mut buffer).await {
            if read == 0 {
                break;
            }
        }
    })
    .await;
}

#[tokio::test]
async fn out_of_file_descriptors_it_sheds_idle_connections_and_logs_once() {
    // Silent sockets are not cut by their deadline here: only shedding can
    // let the honest client in.
    let server = Running::launch(
        &["--header-timeout", "600"],
        Launch {
            keep_log: true,
            open_files: Some(64),
            ..Launch::default()
        },
    )
    .await;
    let addr = server.addr;
    let mut silent = Vec::new();
    for _ in 0..80 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    let answer = within("an honest client to get in", get(addr, "/healthz", &[])).await;
    assert_eq!(answer.status, StatusCode::OK);
    // The ones shed first were the oldest.
    until_closed(&mut silent[0]).await;
    let failures = server
        .log()
        .iter()
        .filter(|line| line.contains("accept failed"))
        .count();
    assert_eq!(failures, 1, "{:#?}", server.log());
}

#[tokio::test]
async fn on_a_public_address_publishing_needs_a_secret_or_open_publish() {
    let launch = Launch {
        listen: Some("0.0.0.0:0"),
        keep_log: true,
        ..Launch::default()
    };
    let protected = Running::launch(&["--ws-publish"], launch).await;
    let answer = request(protected.addr, "POST", "/pub/news", &[], "hello".to_owned()).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(answer.json()["error"]["code"], "publish_disabled");
    assert!(
        answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--open-publish"),
        "{:?}",
        answer.json()
    );
    // Nor over a WebSocket.
    let mut ws = ws_support::open(
        protected.addr,
        "/ws",
        &[("sec-websocket-protocol", "push.v1")],
    )
    .await
    .unwrap();
    ws.send(Message::text(
        r#"{"op":"publish","channel":"news","data":"x","ref":1}"#,
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut ws).await["code"], "forbidden");
    // Subscribing is as open as ever.
    assert_eq!(
        get(protected.addr, "/poll/news", &[]).await.status,
        StatusCode::OK
    );
    until("the log to say why", || {
        protected
            .log()
            .iter()
            .any(|line| line.contains("publishing is off"))
    })
    .await;

    let open = Running::launch(&["--open-publish"], launch).await;
    let answer = request(open.addr, "POST", "/pub/news", &[], "hello".to_owned()).await;
    assert_eq!(answer.status, StatusCode::OK);

    let guarded = Running::launch(&["--publish-token", "s3cret"], launch).await;
    let bare = request(guarded.addr, "POST", "/pub/news", &[], "x".to_owned()).await;
    assert_eq!(bare.status, StatusCode::UNAUTHORIZED);
    let with = request(
        guarded.addr,
        "POST",
        "/pub/news",
        &[("authorization", "Bearer s3cret")],
        "x".to_owned(),
    )
    .await;
    assert_eq!(with.status, StatusCode::OK);

    // Loopback stays open, so the README's first commands work.
    let local = Running::start(&[]).await;
    let answer = request(local.addr, "POST", "/pub/news", &[], "hello".to_owned()).await;
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test]
async fn settings_that_cannot_work_stop_it_with_a_message_naming_them() {
    for (args, named) in [
        (vec!["--publish-token", ""], "--publish-token"),
        (vec!["--publish-token", "  "], "--publish-token"),
        (vec!["--jwt-secret", "short"], "--jwt-secret"),
        (vec!["--sse-keep-alive", "1e30"], "--sse-keep-alive"),
        (
            vec!["--sse-max-lifetime", "99999999999"],
            "--sse-max-lifetime",
        ),
        (vec!["--ws-ping", "18446744073709551615"], "--ws-ping"),
        (vec!["--ws-pong-timeout=-1"], "--ws-pong-timeout"),
        (vec!["--ws-pong-timeout", "NaN"], "--ws-pong-timeout"),
        (
            vec!["--max-connections", "2305843009213693952"],
            "--max-connections",
        ),
        (vec!["--history-messages", "0"], "--history-messages"),
        (vec!["--header-timeout", "0"], "--header-timeout"),
        (
            vec![
                "--max-message-bytes",
                "2000000",
                "--history-bytes",
                "1000000",
            ],
            "--max-message-bytes",
        ),
        (
            vec!["--longpoll-timeout", "200", "--longpoll-max-timeout", "100"],
            "--longpoll-timeout",
        ),
    ] {
        let stderr = refused(&args).await;
        assert!(stderr.contains(named), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn the_largest_settings_allowed_still_serve() {
    let server = Running::start(&[
        "--sse-keep-alive",
        "3600",
        "--sse-max-lifetime",
        "31536000",
        "--sse-retry",
        "86400",
        "--ws-ping",
        "3600",
        "--ws-pong-timeout",
        "3600",
        "--max-connections",
        "10000000",
        "--history-seconds",
        "31536000",
        "--idle-timeout",
        "86400",
    ])
    .await;
    let addr = server.addr;
    let (mut sse, head) = open_sse(addr, "/sse/news", "").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut ws = ws_support::open(addr, "/ws/news", &[]).await.unwrap();
    assert_eq!(next_json(&mut ws).await["op"], "subscribed");
    let published = request(addr, "POST", "/pub/news", &[], "hi".to_owned()).await;
    assert_eq!(published.status, StatusCode::OK);
    assert_eq!(next_json(&mut ws).await["data"], "hi");
    let mut seen = head;
    support::read_until(&mut sse, &mut seen, "data: hi\n\n").await;
}

#[tokio::test]
async fn tokens_with_any_numeric_expiry_are_served() {
    let server = Running::start(&["--jwt-secret", SECRET]).await;
    let addr = server.addr;
    for exp in [
        json!(u64::MAX),
        json!(1e300),
        json!(unix_now() as f64 + 600.5),
    ] {
        let token = token(&json!({"exp": exp, "channels": ["news"]}));
        let (_sse, head) = open_sse(addr, &format!("/sse/news?token={token}"), "").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{exp}: {head}");
        let mut ws = ws_support::open(addr, &format!("/ws/news?token={token}"), &[])
            .await
            .unwrap();
        assert_eq!(next_json(&mut ws).await["op"], "subscribed");
    }
}

#[tokio::test]
async fn a_token_as_long_as_the_header_allows_also_works_in_the_query() {
    let server = Running::start(&["--jwt-secret", SECRET]).await;
    let mut channels: Vec<String> = (0..225).map(|i| format!("room:{i:05}")).collect();
    channels.push("news".to_owned());
    let token = token(&json!({"exp": unix_now() + 600, "channels": channels}));
    assert!(
        token.len() > 3_900 && token.len() <= 4_096,
        "{}",
        token.len()
    );
    let (_sse, head) = open_sse(server.addr, &format!("/sse/news?token={token}"), "").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let polled = get(server.addr, &format!("/poll/news?token={token}"), &[]).await;
    assert_eq!(polled.status, StatusCode::OK);
}

#[tokio::test]
async fn metrics_and_health_take_only_get() {
    let server = Running::start(&[]).await;
    for path in ["/metrics", "/healthz"] {
        let answer = request(server.addr, "POST", path, &[], String::new()).await;
        assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert_eq!(answer.header("allow"), Some("GET, HEAD"));
        assert_eq!(get(server.addr, path, &[]).await.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn metrics_count_upgraded_websockets_as_connections() {
    let server = Running::start(&[]).await;
    let mut sockets = Vec::new();
    for _ in 0..5 {
        let mut ws = ws_support::open(server.addr, "/ws/news", &[])
            .await
            .unwrap();
        assert_eq!(next_json(&mut ws).await["op"], "subscribed");
        sockets.push(ws);
    }
    let metrics = String::from_utf8(get(server.addr, "/metrics", &[]).await.body.to_vec()).unwrap();
    // The five sockets and the connection asking.
    assert!(metrics.contains("\npush_http_connections 6\n"), "{metrics}");
    assert!(
        metrics.contains("\npush_http_connections_upgraded 5\n"),
        "{metrics}"
    );
}
