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
use futures_util::{SinkExt as _, StreamExt as _};
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

/// The server's resident memory, from /proc.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kb * 1024
}

/// Publishes `count` messages of `size` bytes round-robin over `channels`
/// on one keep-alive connection.
async fn flood(
    addr: std::net::SocketAddr,
    prefix: &str,
    channels: usize,
    count: usize,
    size: usize,
) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let body = bytes::Bytes::from(vec![b'x'; size]);
    for n in 0..count {
        let request = http::Request::post(format!("/pub/{prefix}{}", n % channels))
            .header("host", addr.to_string())
            .body(http_body_util::Full::new(body.clone()))
            .unwrap();
        sender.ready().await.unwrap();
        let answer = support::read(sender.send_request(request).await.unwrap()).await;
        assert_eq!(answer.status, StatusCode::OK, "{prefix}{n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_neighbours_cannot_lock_out_honest_clients() {
    const BUDGET: u64 = 32 << 20;
    const LIMIT: usize = 300;
    const NEWS: usize = 200;
    let budget = BUDGET.to_string();
    let limit = LIMIT.to_string();
    let server = Running::start(&[
        "--max-connections",
        &limit,
        // Silent sockets are not cut by their deadline here: only shedding
        // lets honest clients in.
        "--header-timeout",
        "600",
        "--max-channels",
        "2000",
        "--max-retained-bytes",
        &budget,
        "--write-timeout",
        "0.5",
        "--ws-max-subscriptions",
        "100",
    ])
    .await;
    let addr = server.addr;
    let pid = server.pid();
    let baseline = rss(pid);

    // Honest subscribers first, then the neighbours move in.
    let (mut sse, mut seen) = open_sse(addr, "/sse/news", "").await;
    let mut ws = ws_support::open(addr, "/ws/news", &[]).await.unwrap();
    assert_eq!(next_json(&mut ws).await["op"], "subscribed");
    let mut silent = Vec::new();
    for _ in 0..LIMIT {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    // A reader that never reads, on the channels the filler fills.
    let mut stalled = ws_support::open(addr, "/ws", &[("sec-websocket-protocol", "push.v1")])
        .await
        .unwrap();
    for n in 0..100 {
        let command = json!({"op": "subscribe", "channel": format!("fill-{n}")});
        stalled
            .send(Message::text(command.to_string()))
            .await
            .unwrap();
    }
    // Squatters: a channel per one-byte publish, and sockets subscribing to
    // as many new names as they may.
    let squatter = tokio::spawn(flood(addr, "squat-", 5_000, 5_000, 1));
    let mut squatting_sockets = Vec::new();
    for socket in 0..12 {
        let mut ws = ws_support::open(addr, "/ws", &[("sec-websocket-protocol", "push.v1")])
            .await
            .unwrap();
        for n in 0..100 {
            let command = json!({"op": "subscribe", "channel": format!("idle-{socket}-{n}")});
            ws.send(Message::text(command.to_string())).await.unwrap();
        }
        squatting_sockets.push(ws);
    }
    // A memory filler: 160 MiB of history asked for, five times the budget.
    let filler = tokio::spawn(flood(addr, "fill-", 200, 640, 256 << 10));

    // The honest publisher, one fresh connection per message.
    let publisher = tokio::spawn(async move {
        for n in 1..=NEWS {
            let answer = request(addr, "POST", "/pub/news", &[], n.to_string()).await;
            assert_eq!(answer.status, StatusCode::OK, "news {n}");
        }
    });
    let ws_reader = tokio::spawn(async move {
        let mut got = Vec::new();
        while got.len() < NEWS {
            let frame = next_json(&mut ws).await;
            assert!(
                frame.get("op").is_none(),
                "a signal on the honest socket: {frame}"
            );
            got.push(frame["data"].as_str().unwrap().parse::<usize>().unwrap());
        }
        got
    });
    let mut from_sse = Vec::new();
    within("every message over SSE", async {
        let mut buffer = vec![0u8; 8192];
        while from_sse.len() < NEWS {
            let read = sse.read(&mut buffer).await.unwrap();
            assert!(read > 0, "the honest stream ended");
            seen.push_str(&String::from_utf8_lossy(&buffer[..read]));
            while let Some(end) = seen.find("\n\n") {
                let event: String = seen.drain(..end + 2).collect();
                assert!(
                    !event.contains("event: push."),
                    "a signal on the honest stream: {event}"
                );
                if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) {
                    from_sse.push(data.parse::<usize>().unwrap());
                }
            }
        }
    })
    .await;
    let expected: Vec<usize> = (1..=NEWS).collect();
    assert_eq!(from_sse, expected);
    assert_eq!(
        within("every message over the WebSocket", ws_reader)
            .await
            .unwrap(),
        expected
    );
    within("the honest publisher", publisher).await.unwrap();
    within("the squatter", squatter).await.unwrap();
    within("the filler", filler).await.unwrap();

    // A new channel is still there for the asking.
    let fresh = request(addr, "POST", "/pub/fresh", &[], "hello".to_owned()).await;
    assert_eq!(fresh.status, StatusCode::OK, "{:?}", fresh.json());
    // The reader that never read was let go: what it finally reads ends.
    within("the stalled socket to end", async {
        while let Some(Ok(frame)) = stalled.next().await {
            if frame.is_close() {
                break;
            }
        }
    })
    .await;
    // History stayed within its budget, and so did the process.
    let metrics = String::from_utf8(get(addr, "/metrics", &[]).await.body.to_vec()).unwrap();
    let retained: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("push_retained_bytes "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(retained <= BUDGET, "{retained}");
    let grown = rss(pid).saturating_sub(baseline);
    println!(
        "RSS grew by {:.1} MiB; {retained} bytes retained",
        grown as f64 / f64::from(1 << 20)
    );
    assert!(
        grown < BUDGET + (32 << 20),
        "RSS grew by {} MiB with a {} MiB budget",
        grown >> 20,
        BUDGET >> 20
    );
    drop(silent);
    drop(squatting_sockets);
}
