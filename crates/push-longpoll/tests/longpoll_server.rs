//! The long-polling handler over real TCP: held requests answered by a
//! publish, timeouts, a thousand concurrent holds, hang-ups, batching and bad
//! input. Resuming across reconnects is the facade's tests/continuity.rs,
//! for every technique alike.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Empty;
use push_core::{Cursor, Hub, MemoryHub, MemoryHubConfig, Publication, Start};
use push_longpoll::{LongPollConfig, LongPollHandler};
use serde_json::Value;
use support::{Server, get, until, within};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

async fn start(hub: &MemoryHub, config: LongPollConfig) -> (Server, LongPollHandler<MemoryHub>) {
    let handler = LongPollHandler::new(hub.clone(), config);
    (Server::start(handler.clone()).await, handler)
}

async fn publish(hub: &MemoryHub, data: &str) -> Cursor {
    hub.publish(&"c".parse().unwrap(), Publication::new(data.to_owned()))
        .await
        .unwrap()
}

async fn head(hub: &MemoryHub) -> Cursor {
    hub.read(&"c".parse().unwrap(), Start::Live, 0)
        .await
        .unwrap()
        .cursor
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
async fn a_held_request_is_answered_by_the_next_publish() {
    let hub = MemoryHub::new();
    let (server, handler) = start(&hub, LongPollConfig::default()).await;
    let since = head(&hub).await;
    let addr = server.addr;
    let held =
        tokio::spawn(async move { get(addr, &format!("/longpoll/c?since={since}"), &[]).await });
    until("the request to be held", || handler.connections() == 1).await;

    let id = publish(&hub, "news").await;
    let answer = within("the answer", held).await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    assert_eq!(answer.header("etag"), Some(format!("\"{id}\"").as_str()));
    let json = answer.json();
    assert_eq!(datas(&json), ["news"]);
    assert_eq!(json["cursor"], id.to_string());
    assert_eq!(handler.connections(), 0);

    // Something already there: answered at once, never held.
    publish(&hub, "waiting for you").await;
    let answer = get(addr, &format!("/longpoll/c?since={id}"), &[]).await;
    assert_eq!(datas(&answer.json()), ["waiting for you"]);
}

#[tokio::test]
async fn without_since_it_waits_for_the_next_message() {
    let hub = MemoryHub::new();
    publish(&hub, "old").await;
    let (server, handler) = start(&hub, LongPollConfig::default()).await;
    let addr = server.addr;
    let held = tokio::spawn(async move { get(addr, "/longpoll/c", &[]).await });
    until("the request to be held", || handler.connections() == 1).await;
    publish(&hub, "new").await;
    assert_eq!(
        datas(&within("the answer", held).await.unwrap().json()),
        ["new"]
    );
}

#[tokio::test(start_paused = true)]
async fn nothing_by_the_timeout_is_a_204_with_the_cursor() {
    let hub = MemoryHub::new();
    let since = publish(&hub, "x").await;
    let config = LongPollConfig::default()
        .with_default_timeout(Duration::from_secs(7))
        .with_max_timeout(Duration::from_secs(10));
    let (server, handler) = start(&hub, config).await;
    let path = format!("/longpoll/c?since={since}");

    for (query, held_for) in [
        ("", 7),
        ("&timeout=3", 3),
        ("&timeout=999", 10),
        ("&timeout=0", 0),
    ] {
        let began = tokio::time::Instant::now();
        let answer = get(server.addr, &format!("{path}{query}"), &[]).await;
        assert_eq!(answer.status, StatusCode::NO_CONTENT, "{query}");
        assert!(answer.body.is_empty());
        assert_eq!(answer.header("etag"), Some(format!("\"{since}\"").as_str()));
        // Virtual time: exactly the hold asked for, lowered to the maximum.
        let elapsed = began.elapsed();
        let expected = Duration::from_secs(held_for);
        assert!(
            elapsed >= expected && elapsed < expected + Duration::from_secs(1),
            "{query}: {elapsed:?}"
        );
    }
    assert_eq!(handler.connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_held_requests_each_get_one_publish_once() {
    const HELD: usize = 1_000;
    let hub = MemoryHub::new();
    let (server, handler) = start(&hub, LongPollConfig::default()).await;
    let since = head(&hub).await;
    let requests: Vec<_> = (0..HELD)
        .map(|_| {
            let addr = server.addr;
            tokio::spawn(async move { get(addr, &format!("/longpoll/c?since={since}"), &[]).await })
        })
        .collect();
    until("every request to be held", || handler.connections() == HELD).await;

    let id = publish(&hub, "to all").await;
    for request in requests {
        let answer = within("an answer", request).await.unwrap();
        let json = answer.json();
        assert_eq!(datas(&json), ["to all"]);
        assert_eq!(json["cursor"], id.to_string());
    }
    assert_eq!(handler.connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_hang_up_release_their_waiters() {
    let hub = MemoryHub::new();
    let (server, handler) = start(&hub, LongPollConfig::default()).await;
    let since = head(&hub).await;
    let mut sockets = Vec::new();
    for _ in 0..50 {
        let mut socket = TcpStream::connect(server.addr).await.unwrap();
        let request = format!("GET /longpoll/c?since={since} HTTP/1.1\r\nHost: test\r\n\r\n");
        socket.write_all(request.as_bytes()).await.unwrap();
        sockets.push(socket);
    }
    until("50 held requests", || handler.connections() == 50).await;
    let channel = "c".parse().unwrap();
    assert_eq!(hub.channel_stats(&channel).unwrap().subscribers, 50);

    drop(sockets);
    until("every waiter released", || handler.connections() == 0).await;
    assert_eq!(hub.channel_stats(&channel).unwrap().subscribers, 0);
}

#[tokio::test(flavor = "current_thread")]
async fn messages_ready_together_come_in_one_answer_up_to_the_limit() {
    let hub = MemoryHub::new();
    let (server, handler) = start(&hub, LongPollConfig::default().with_max_batch(3)).await;
    let since = head(&hub).await;

    // Published before the request: one answer, cut at the limit.
    for n in 0..5 {
        publish(&hub, &n.to_string()).await;
    }
    let json = get(server.addr, &format!("/longpoll/c?since={since}"), &[])
        .await
        .json();
    assert_eq!(
        (datas(&json), json["more"].as_bool()),
        (vec!["0".into(), "1".into(), "2".into()], Some(true))
    );
    let cursor = json["cursor"].as_str().unwrap().to_owned();
    let json = get(server.addr, &format!("/longpoll/c?since={cursor}"), &[])
        .await
        .json();
    assert_eq!(
        (datas(&json), json["more"].as_bool()),
        (vec!["3".into(), "4".into()], Some(false))
    );
    let cursor = json["cursor"].as_str().unwrap().to_owned();

    // Published while held (in one go: this runtime has one thread, so the
    // held request runs only after all four are in): one answer.
    let addr = server.addr;
    let path = format!("/longpoll/c?since={cursor}");
    let held = tokio::spawn(async move { get(addr, &path, &[]).await });
    until("the request to be held", || handler.connections() == 1).await;
    for n in 5..9 {
        publish(&hub, &n.to_string()).await;
    }
    let json = within("the answer", held).await.unwrap().json();
    assert_eq!(datas(&json), ["5", "6", "7"]);
    assert_eq!(json["more"], true);
    let cursor = json["cursor"].as_str().unwrap();
    let json = get(server.addr, &format!("/longpoll/c?since={cursor}"), &[])
        .await
        .json();
    assert_eq!(datas(&json), ["8"]);
}

#[tokio::test]
async fn a_gap_while_away_comes_first() {
    let hub = MemoryHub::with_config(MemoryHubConfig::default().with_max_messages(2)).unwrap();
    let (server, _) = start(&hub, LongPollConfig::default()).await;
    let old = publish(&hub, "1").await;
    for n in 2..=5 {
        publish(&hub, &n.to_string()).await;
    }
    let json = get(server.addr, &format!("/longpoll/c?since={old}"), &[])
        .await
        .json();
    assert_eq!(json["gap"]["missed"], 2);
    assert_eq!(datas(&json), ["4", "5"]);
}

#[tokio::test]
async fn bad_input_gets_a_400_and_other_methods_a_405() {
    let hub = MemoryHub::new();
    let (server, handler) = start(&hub, LongPollConfig::default()).await;
    for (query, code) in [
        ("timeout=abc", "invalid_query"),
        ("timeout=-1", "invalid_query"),
        ("timeout=1.5", "invalid_query"),
        ("timeout=1&timeout=2", "invalid_query"),
        ("since=nope", "invalid_cursor"),
        ("limit=x", "invalid_query"),
    ] {
        let answer = get(server.addr, &format!("/longpoll/c?{query}"), &[]).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(answer.json()["error"]["code"], code, "{query}");
    }
    let answer = get(server.addr, "/longpoll/%00", &[]).await;
    assert_eq!(answer.json()["error"]["code"], "invalid_channel");
    let post = Request::post(server.url("/longpoll/c"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let answer = support::send(server.addr, post).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.header("allow"), Some("GET"));
    assert_eq!(handler.connections(), 0);
}
