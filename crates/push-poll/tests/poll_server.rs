//! The polling handler over real TCP: sequences, the 304 path, paging, gaps,
//! resets, HEAD, HTTP/2, binary data, and every bad input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../../tests/support/mod.rs"]
mod support;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Empty;
use push_core::{Cursor, Hub, MemoryHub, MemoryHubConfig, Publication, WireFormat};
use push_poll::{PollConfig, PollHandler};
use serde_json::Value;
use support::{Server, get};

async fn server(hub: &MemoryHub, config: PollConfig) -> Server {
    Server::start(PollHandler::new(hub.clone(), config)).await
}

async fn publish(hub: &MemoryHub, channel: &str, data: &str) -> Cursor {
    hub.publish(&channel.parse().unwrap(), Publication::new(data.to_owned()))
        .await
        .unwrap()
}

fn datas(json: &Value) -> Vec<String> {
    json["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_poll_sequence_gets_each_message_once() {
    let hub = MemoryHub::new();
    let server = server(&hub, PollConfig::default()).await;

    // No since: nothing old, just where "now" is.
    publish(&hub, "news", "old").await;
    let first = get(server.addr, "/poll/news", &[]).await;
    assert_eq!(first.status, StatusCode::OK);
    let json = first.json();
    assert!(datas(&json).is_empty());
    assert_eq!(json["more"], false);
    let cursor = json["cursor"].as_str().unwrap().to_owned();
    assert_eq!(first.header("etag"), Some(format!("\"{cursor}\"").as_str()));
    assert_eq!(first.header("cache-control"), Some("no-cache"));
    assert_eq!(first.header("content-type"), Some("application/json"));
    assert_eq!(first.header("push-poll-interval"), Some("5000"));

    publish(&hub, "news", "a").await;
    publish(&hub, "news", "b").await;
    let second = get(server.addr, &format!("/poll/news?since={cursor}"), &[]).await;
    let json = second.json();
    assert_eq!(datas(&json), ["a", "b"]);
    let cursor = json["cursor"].as_str().unwrap();
    assert_eq!(cursor, json["messages"][1]["id"]);
    assert_eq!(json["messages"][0]["channel"], "news");

    let third = get(server.addr, &format!("/poll/news?since={cursor}"), &[]).await;
    assert!(datas(&third.json()).is_empty());
    assert_eq!(third.json()["cursor"], cursor);

    let earliest = get(server.addr, "/poll/news?since=earliest", &[]).await;
    assert_eq!(datas(&earliest.json()), ["old", "a", "b"]);
}

#[tokio::test]
async fn an_unchanged_channel_answers_304_without_a_body() {
    let hub = MemoryHub::new();
    let server = server(&hub, PollConfig::default()).await;
    let head = publish(&hub, "quiet", "x").await;
    let etag = format!("\"{head}\"");
    let path = format!("/poll/quiet?since={head}");

    let answer = get(server.addr, &path, &[("if-none-match", &etag)]).await;
    assert_eq!(answer.status, StatusCode::NOT_MODIFIED);
    assert!(answer.body.is_empty());
    assert_eq!(answer.header("etag"), Some(etag.as_str()));
    assert_eq!(answer.header("cache-control"), Some("no-cache"));
    assert_eq!(answer.header("push-poll-interval"), Some("5000"));

    // Weak and listed tags match too; another tag does not.
    let listed = format!("\"zz.1\", W/{etag}");
    assert_eq!(
        get(server.addr, &path, &[("if-none-match", &listed)])
            .await
            .status,
        StatusCode::NOT_MODIFIED
    );
    assert_eq!(
        get(server.addr, &path, &[("if-none-match", "\"zz.1\"")])
            .await
            .status,
        StatusCode::OK
    );

    publish(&hub, "quiet", "y").await;
    let changed = get(server.addr, &path, &[("if-none-match", &etag)]).await;
    assert_eq!(changed.status, StatusCode::OK);
    assert_eq!(datas(&changed.json()), ["y"]);
}

#[tokio::test]
async fn answers_cut_at_the_limit_page_without_skipping() {
    let hub = MemoryHub::new();
    let server = server(&hub, PollConfig::default().with_max_batch(3)).await;
    for n in 0..8 {
        publish(&hub, "pages", &n.to_string()).await;
    }
    let mut since = "earliest".to_owned();
    let mut got = Vec::new();
    let mut pages = Vec::new();
    loop {
        let json = get(server.addr, &format!("/poll/pages?since={since}"), &[])
            .await
            .json();
        pages.push(datas(&json).len());
        got.extend(datas(&json));
        since = json["cursor"].as_str().unwrap().to_owned();
        if json["more"] == false {
            break;
        }
    }
    assert_eq!(pages, [3, 3, 2]);
    assert_eq!(got, ["0", "1", "2", "3", "4", "5", "6", "7"]);

    // A client may ask for fewer, never for more.
    let json = get(server.addr, "/poll/pages?since=earliest&limit=2", &[])
        .await
        .json();
    assert_eq!(
        (datas(&json).len(), json["more"].as_bool()),
        (2, Some(true))
    );
    let json = get(server.addr, "/poll/pages?since=earliest&limit=50", &[])
        .await
        .json();
    assert_eq!(datas(&json).len(), 3);
}

#[tokio::test]
async fn history_overflow_is_a_gap_and_a_foreign_cursor_a_reset() {
    let hub = MemoryHub::with_config(MemoryHubConfig::default().with_max_messages(3)).unwrap();
    let server = server(&hub, PollConfig::default()).await;
    let first = publish(&hub, "small", "1").await;
    for n in 2..=6 {
        publish(&hub, "small", &n.to_string()).await;
    }
    let json = get(server.addr, &format!("/poll/small?since={first}"), &[])
        .await
        .json();
    assert_eq!(json["gap"]["since"], first.to_string());
    assert_eq!(json["gap"]["missed"], 2);
    assert_eq!(datas(&json), ["4", "5", "6"]);

    let foreign = "1.2";
    let json = get(server.addr, &format!("/poll/small?since={foreign}"), &[])
        .await
        .json();
    assert_eq!(json["reset"]["since"], foreign);
    assert!(json.get("gap").is_none());
    assert_eq!(datas(&json), ["4", "5", "6"]);

    // A gap is never answered with 304, whatever the tag.
    let etag = format!("\"{}\"", json["cursor"].as_str().unwrap());
    let answer = get(
        server.addr,
        &format!("/poll/small?since={first}"),
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test]
async fn bad_input_gets_a_400_naming_the_problem() {
    let hub = MemoryHub::new();
    let server = server(&hub, PollConfig::default().with_max_query_bytes(64)).await;
    let long = format!("/poll/c?since=earliest&pad={}", "x".repeat(100));
    for (path, code, message) in [
        (
            "/poll/c?since=0a.1",
            "invalid_cursor",
            "invalid cursor: a number has leading zeros",
        ),
        (
            "/poll/c?since=",
            "invalid_cursor",
            "invalid cursor: no '.' between epoch and position",
        ),
        (
            "/poll/bad%20name",
            "invalid_channel",
            "invalid channel name: only A-Z a-z 0-9 and _ . : @ - are allowed",
        ),
        (
            "/poll/",
            "invalid_channel",
            "invalid channel name: the request names no channel",
        ),
        (
            "/poll/c?since=earliest&since=earliest",
            "invalid_query",
            "invalid query: parameter `since` is given more than once",
        ),
        (
            "/poll/c?limit=0",
            "invalid_query",
            "invalid query: `limit` must be a positive whole number, not \"0\"",
        ),
        (
            long.as_str(),
            "invalid_query",
            "invalid query: the query is longer than 64 bytes",
        ),
    ] {
        let answer = get(server.addr, path, &[]).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(answer.header("content-type"), Some("application/json"));
        assert_eq!(answer.header("cache-control"), Some("no-store"));
        let json = answer.json();
        assert_eq!(json["error"]["code"], code, "{path}");
        assert_eq!(json["error"]["message"], message, "{path}");
    }
    // Bad requests did not make channels.
    assert_eq!(hub.channel_count(), 0);
}

#[tokio::test]
async fn other_methods_get_405_and_head_gets_headers_only() {
    let hub = MemoryHub::new();
    let server = server(&hub, PollConfig::default()).await;
    publish(&hub, "m", "x").await;
    let post = Request::post(server.url("/poll/m"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let answer = support::send(server.addr, post).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.header("allow"), Some("GET, HEAD"));
    assert_eq!(answer.json()["error"]["code"], "method_not_allowed");

    let head = Request::builder()
        .method(Method::HEAD)
        .uri(server.url("/poll/m?since=earliest"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let answer = support::send(server.addr, head).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.body.is_empty());
    assert!(answer.header("etag").is_some());
}

#[tokio::test]
async fn http2_and_binary_data_and_one_encoding_shared() {
    let hub = MemoryHub::new();
    let server = server(&hub, PollConfig::default()).await;
    let channel = "bin".parse().unwrap();
    hub.publish(
        &channel,
        Publication::new(Bytes::from_static(&[0, 159, 146, 150, 255])),
    )
    .await
    .unwrap();
    let request = Request::get(server.url("/poll/bin?since=earliest"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let answer = support::send_h2(server.addr, request).await;
    assert_eq!(answer.status, StatusCode::OK);
    let message = &answer.json()["messages"][0];
    assert_eq!(message["encoding"], "base64");
    assert_eq!(message["data"], "AJ+Slv8=");

    // The handler encoded through the message's shared slot: a second
    // encoding is never computed.
    let batch = hub
        .read(&channel, push_core::Start::Earliest, 10)
        .await
        .unwrap();
    let shared = batch.messages[0].encoded(WireFormat::JsonEnvelope, |_| {
        panic!("encoded again instead of shared")
    });
    assert!(answer.body.windows(shared.len()).any(|w| w == &shared[..]));
}
