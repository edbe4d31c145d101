//! The `push-server` binary, run as a user runs it, over real TCP: the
//! publish API, every technique, auth, channel info, metrics, CORS, signals.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../../tests/support/mod.rs"]
mod support;
#[path = "../../../tests/support/ws.rs"]
mod ws_support;

mod common;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::Running;
use futures_util::SinkExt as _;
use http::StatusCode;
use push_server::auth::JwtVerifier;
use serde_json::json;
use support::{Answer, get, open_sse, read_until, within};
use tokio::io::AsyncReadExt as _;
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use ws_support::{close_code, next_json};

const SECRET: &str = "jwt secret for the tests, 32 bytes+";

async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    support::request(addr, method, path, headers, body.to_owned()).await
}

async fn publish(addr: SocketAddr, channel: &str, data: &str, headers: &[(&str, &str)]) -> Answer {
    request(addr, "POST", &format!("/pub/{channel}"), headers, data).await
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(claims: &serde_json::Value) -> String {
    JwtVerifier::new(SECRET.as_bytes()).unwrap().sign(claims)
}

#[tokio::test]
async fn one_publish_reaches_every_technique() {
    let server = Running::start(&[]).await;
    let addr = server.addr;
    let (mut sse, head) = open_sse(addr, "/sse/news", "").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut ws = ws_support::open(addr, "/ws/news", &[]).await.unwrap();
    assert_eq!(next_json(&mut ws).await["op"], "subscribed");
    let before = get(addr, "/poll/news", &[]).await;
    let cursor = before.json()["cursor"].as_str().unwrap().to_owned();
    let held =
        tokio::spawn(
            async move { get(addr, &format!("/longpoll/news?since={cursor}"), &[]).await },
        );
    let router_waiting = || async { get(addr, "/metrics", &[]).await };
    within("the long poll to be held", async {
        while !String::from_utf8_lossy(&router_waiting().await.body)
            .contains("push_connections{transport=\"longpoll\"} 1")
        {
            tokio::task::yield_now().await;
        }
    })
    .await;

    let published = publish(addr, "news", "hello", &[]).await;
    assert_eq!(published.status, StatusCode::OK);
    let id = published.json()["id"].as_str().unwrap().to_owned();

    let mut seen = String::new();
    read_until(&mut sse, &mut seen, &format!("id: {id}\ndata: hello\n\n")).await;
    assert_eq!(next_json(&mut ws).await["data"], "hello");
    assert_eq!(
        within("the long poll", held).await.unwrap().json()["messages"][0]["id"],
        *id
    );
    let polled = get(addr, "/poll/news?since=earliest", &[]).await;
    assert_eq!(polled.json()["messages"][0]["data"], "hello");

    // Channel info and metrics see the same.
    let info = get(addr, "/channels/news", &[]).await.json();
    assert_eq!(info["subscribers"]["sse"], 1);
    assert_eq!(info["subscribers"]["ws"], 1);
    assert_eq!(
        (info["cursor"].as_str(), info["retained"].as_u64()),
        (Some(&*id), Some(1))
    );
    let metrics = String::from_utf8(get(addr, "/metrics", &[]).await.body.to_vec()).unwrap();
    for line in [
        "push_messages_published_total 1",
        "push_connections{transport=\"sse\"} 1",
        "push_connections{transport=\"ws\"} 1",
        "push_messages_delivered_total{transport=\"sse\"} 1",
        "push_messages_delivered_total{transport=\"ws\"} 1",
        "push_messages_delivered_total{transport=\"longpoll\"} 1",
        "# TYPE push_bytes_out_total counter",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
    assert_eq!(get(addr, "/healthz", &[]).await.status, StatusCode::OK);
    let page = get(addr, "/", &[]).await;
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    let script = get(addr, "/push.js", &[]).await;
    assert!(
        script
            .header("content-type")
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(String::from_utf8_lossy(&script.body).contains("export"));
    // The facade's push.js: revalidated by its ETag.
    let etag = script.header("etag").unwrap().to_owned();
    assert_eq!(etag, push_live::js::PUSH_JS_ETAG);
    let cached = get(addr, "/push.js", &[("if-none-match", &etag)]).await;
    assert_eq!(cached.status, StatusCode::NOT_MODIFIED);
    assert!(cached.body.is_empty());
    assert_eq!(
        get(addr, "/nowhere", &[]).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_publisher_token_guards_publishing_and_channel_info() {
    let server = Running::start(&["--publish-token", "s3cret"]).await;
    let addr = server.addr;
    let missing = publish(addr, "news", "x", &[]).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
    let wrong = publish(addr, "news", "x", &[("authorization", "Bearer s3cre")]).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let right = publish(addr, "news", "x", &[("authorization", "Bearer s3cret")]).await;
    assert_eq!(right.status, StatusCode::OK);
    assert_eq!(
        get(addr, "/channels/news", &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    let info = get(
        addr,
        "/channels/news",
        &[("authorization", "Bearer s3cret")],
    )
    .await;
    assert_eq!(info.json()["retained"], 1);
    // Subscribing stays open (no --jwt-secret).
    assert_eq!(
        get(addr, "/poll/news?since=earliest", &[]).await.json()["messages"][0]["data"],
        "x"
    );
}

#[tokio::test]
async fn subscriber_tokens_select_channels_and_end_streams_at_expiry() {
    let server = Running::start(&["--jwt-secret", SECRET, "--ws-publish"]).await;
    let addr = server.addr;
    let news = token(&json!({"exp": unix_now() + 600, "channels": ["news", "room:*"]}));
    assert_eq!(
        get(addr, "/poll/news", &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    let bearer = format!("Bearer {news}");
    assert_eq!(
        get(addr, "/poll/news", &[("authorization", &bearer)])
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        get(addr, &format!("/poll/room:7?token={news}"), &[])
            .await
            .status,
        StatusCode::OK
    );
    let other = get(addr, &format!("/poll/secret?token={news}"), &[]).await;
    assert_eq!(
        (other.status, other.json()["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    let forged = format!("{}x", &news[..news.len() - 1]);
    assert_eq!(
        get(addr, &format!("/poll/news?token={forged}"), &[])
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let expired = token(&json!({"exp": unix_now() - 1, "channels": ["news"]}));
    let answer = get(addr, &format!("/sse/news?token={expired}"), &[]).await;
    assert_eq!(
        (answer.status, answer.json()["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("token_expired"))
    );
    assert_eq!(
        ws_support::open(addr, "/ws/secret", &[("authorization", &bearer)])
            .await
            .err(),
        Some(StatusCode::FORBIDDEN)
    );

    // The command endpoint applies the token to each subscribe and publish.
    let mut commands = ws_support::open(
        addr,
        &format!("/ws?token={news}"),
        &[("sec-websocket-protocol", "push.v1")],
    )
    .await
    .unwrap();
    commands
        .send(Message::text(
            r#"{"op":"subscribe","channel":"secret","ref":1}"#,
        ))
        .await
        .unwrap();
    let refused = next_json(&mut commands).await;
    assert_eq!(
        (refused["op"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("forbidden")),
        "{refused}"
    );
    commands
        .send(Message::text(
            r#"{"op":"subscribe","channel":"room:1","ref":2}"#,
        ))
        .await
        .unwrap();
    assert_eq!(next_json(&mut commands).await["op"], "ack");
    commands
        .send(Message::text(
            r#"{"op":"publish","channel":"room:1","data":"hi","ref":3}"#,
        ))
        .await
        .unwrap();
    let no_publish = next_json(&mut commands).await;
    assert_eq!(no_publish["code"], "forbidden", "{no_publish}");

    // A token about to expire ends the stream and the socket at its expiry.
    let short = token(&json!({"exp": unix_now() + 2, "channels": ["news"]}));
    let (mut sse, head) = open_sse(addr, &format!("/sse/news?token={short}"), "").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut ws = ws_support::open(addr, &format!("/ws/news?token={short}"), &[])
        .await
        .unwrap();
    let mut rest = String::new();
    read_until(&mut sse, &mut rest, "retry: 3000\n\n\r\n0\r\n\r\n").await;
    assert_eq!(close_code(&mut ws).await, CloseCode::Policy);
}

#[tokio::test]
async fn allowed_origins_drive_cors_and_the_websocket_origin_check() {
    let server = Running::start(&["--allowed-origins", "https://app.example"]).await;
    let addr = server.addr;
    let preflight = request(
        addr,
        "OPTIONS",
        "/pub/news",
        &[
            ("origin", "https://app.example"),
            ("access-control-request-method", "POST"),
        ],
        "",
    )
    .await;
    assert_eq!(preflight.status, StatusCode::NO_CONTENT);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert!(
        preflight
            .header("access-control-allow-headers")
            .unwrap()
            .contains("Authorization")
    );
    let polled = get(addr, "/poll/news", &[("origin", "https://app.example")]).await;
    assert_eq!(
        polled.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert!(
        polled
            .header("access-control-expose-headers")
            .unwrap()
            .contains("ETag")
    );
    let foreign = get(addr, "/poll/news", &[("origin", "https://evil.example")]).await;
    assert_eq!(foreign.header("access-control-allow-origin"), None);
    assert!(
        ws_support::open(addr, "/ws/news", &[("origin", "https://app.example")])
            .await
            .is_ok()
    );
    assert_eq!(
        ws_support::open(addr, "/ws/news", &[("origin", "https://evil.example")])
            .await
            .err(),
        Some(StatusCode::FORBIDDEN)
    );
}

#[tokio::test]
async fn sigterm_shuts_down_gracefully() {
    let server = Running::start(&[]).await;
    let addr = server.addr;
    let (mut sse, _) = open_sse(addr, "/sse/news", "").await;
    let mut ws = ws_support::open(addr, "/ws/news", &[]).await.unwrap();
    assert_eq!(next_json(&mut ws).await["op"], "subscribed");
    let status = server.terminate().await;
    assert!(status.success(), "{status}");
    let mut rest = Vec::new();
    within("the stream's end", sse.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&rest).ends_with("retry: 3000\n\n\r\n0\r\n\r\n"));
    assert_eq!(close_code(&mut ws).await, CloseCode::Away);
}

#[tokio::test]
async fn help_names_every_setting_and_its_environment_variable() {
    let output = Command::new(env!("CARGO_BIN_EXE_push-server"))
        .arg("--help")
        .output()
        .await
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for needle in [
        "--listen",
        "PUSH_LISTEN",
        "--publish-token",
        "PUSH_PUBLISH_TOKEN",
        "--jwt-secret",
        "--allowed-origins",
        "--history-messages",
        "--longpoll-timeout",
        "--max-connections",
    ] {
        assert!(help.contains(needle), "{needle} missing from --help");
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_push-server"))
        .args(["--listen", "nonsense"])
        .output()
        .await
        .unwrap();
    assert!(!bad.status.success());
    let _ = Duration::ZERO;
}

#[tokio::test]
async fn transports_left_out_answer_404() {
    let server = Running::start(&["--transports", "poll,sse"]).await;
    let addr = server.addr;
    assert_eq!(get(addr, "/poll/news", &[]).await.status, StatusCode::OK);
    let held = get(addr, "/longpoll/news?timeout=0", &[]).await;
    assert_eq!(
        (held.status, held.json()["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("transport_disabled"))
    );
    assert_eq!(
        ws_support::open(addr, "/ws/news", &[]).await.err(),
        Some(StatusCode::NOT_FOUND)
    );
    assert_eq!(
        ws_support::open(addr, "/ws", &[("sec-websocket-protocol", "push.v1")])
            .await
            .err(),
        Some(StatusCode::NOT_FOUND)
    );
    let (_sse, head) = open_sse(addr, "/sse/news", "").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

/// The handshake's answer to a browser-like offer of permessage-deflate.
async fn deflate_answer(addr: SocketAddr) -> String {
    use tokio::io::AsyncWriteExt as _;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"GET /ws/news HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
        )
        .await
        .unwrap();
    let mut seen = String::new();
    read_until(&mut stream, &mut seen, "\r\n\r\n").await;
    seen.to_ascii_lowercase()
}

#[tokio::test]
async fn ws_deflate_is_offered_only_when_asked_for() {
    let plain = Running::start(&[]).await;
    let answer = deflate_answer(plain.addr).await;
    assert!(answer.starts_with("http/1.1 101"), "{answer}");
    assert!(!answer.contains("permessage-deflate"), "{answer}");
    let deflating = Running::start(&["--ws-deflate", "1024"]).await;
    let answer = deflate_answer(deflating.addr).await;
    assert!(answer.starts_with("http/1.1 101"), "{answer}");
    assert!(
        answer.contains("sec-websocket-extensions: permessage-deflate"),
        "{answer}"
    );
}
