//! The SSE handler over real TCP: headers, events, resuming with
//! `Last-Event-ID` and `since`, signals, both formats, binary data, keep-alive
//! and lifetime, HTTP/2, hang-ups and bad input. Resuming across
//! connections dropped at random points is the facade's tests/continuity.rs,
//! for every technique alike.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../../tests/support/mod.rs"]
mod support;

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Events, open};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use push_core::{
    Cursor, EventName, Hub, MemoryHub, MemoryHubConfig, Publication, Start, wire::json,
};
use push_sse::{SseConfig, SseHandler};
use support::{Server, get, until, within};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn channel() -> push_core::ChannelName {
    "c".parse().unwrap()
}

async fn publish(hub: &MemoryHub, data: impl Into<Bytes>) -> Cursor {
    hub.publish(&channel(), Publication::new(data))
        .await
        .unwrap()
}

async fn start(hub: &MemoryHub, config: SseConfig) -> (Server, SseHandler<MemoryHub>) {
    let handler = SseHandler::new(hub.clone(), config);
    (Server::start(handler.clone()).await, handler)
}

#[tokio::test]
async fn streams_each_message_as_one_event_with_its_cursor_as_id() {
    let hub = MemoryHub::new();
    let (server, handler) = start(&hub, SseConfig::default()).await;
    let first = publish(&hub, "before").await;
    let response = open(server.addr, "/sse/c?since=earliest", &[]).await;
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-accel-buffering"], "no");
    let mut events = Events::new(response);
    assert_eq!(
        events.message().await,
        (first.to_string(), "message".into(), "before".into())
    );
    assert_eq!(events.parser.retry(), Some(Duration::from_secs(3)));
    assert_eq!(handler.connections(), 1);

    let price = Publication::new("a\r\nb\rc\nd").with_event("price".parse::<EventName>().unwrap());
    let second = hub.publish(&channel(), price).await.unwrap();
    let third = publish(&hub, "").await;
    assert_eq!(
        events.message().await,
        (second.to_string(), "price".into(), "a\nb\nc\nd".into())
    );
    // Empty data is still an event.
    assert_eq!(
        events.message().await,
        (third.to_string(), "message".into(), String::new())
    );
    let raw = String::from_utf8(events.raw.clone()).unwrap();
    assert!(
        raw.starts_with(&format!("retry: 3000\n\nid: {first}\ndata: before\n\n")),
        "{raw:?}"
    );
    assert!(raw.contains(&format!(
        "id: {second}\nevent: price\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
    )));
}

#[tokio::test]
async fn without_since_only_new_messages_come() {
    let hub = MemoryHub::new();
    let (server, handler) = start(&hub, SseConfig::default()).await;
    publish(&hub, "old").await;
    let mut events = Events::new(open(server.addr, "/sse/c", &[]).await);
    until("the stream to open", || handler.connections() == 1).await;
    publish(&hub, "new").await;
    assert_eq!(events.message().await.2, "new");
}

#[tokio::test]
async fn a_live_stream_starts_its_client_at_the_head() {
    let hub = MemoryHub::new();
    let (server, handler) = start(&hub, SseConfig::default()).await;
    let before = publish(&hub, "before").await;
    let mut events = Events::new(open(server.addr, "/sse/c", &[]).await);
    assert!(events.read_frame().await);
    // No event, but the last event ID is the head: a reconnect resumes there.
    assert_eq!(events.parser.last_event_id(), before.to_string());
    assert!(events.parser.next_event().is_none());
    drop(events);
    until("the stream released", || handler.connections() == 0).await;
    publish(&hub, "while away").await;
    let id = before.to_string();
    let mut events = Events::new(open(server.addr, "/sse/c", &[("last-event-id", &id)]).await);
    assert_eq!(events.message().await.2, "while away");
}

#[tokio::test]
async fn last_event_id_resumes_and_wins_over_since() {
    let hub = MemoryHub::new();
    let (server, _handler) = start(&hub, SseConfig::default()).await;
    let one = publish(&hub, "one").await;
    let two = publish(&hub, "two").await;
    publish(&hub, "three").await;

    let path = format!("/sse/c?since={one}");
    let mut by_since = Events::new(open(server.addr, &path, &[]).await);
    assert_eq!(by_since.message().await.2, "two");

    // A browser reconnects to the same URL and adds the header: it wins.
    let header = two.to_string();
    let mut by_header =
        Events::new(open(server.addr, &path, &[("last-event-id", header.as_str())]).await);
    assert_eq!(by_header.message().await.2, "three");

    // An empty header is no header.
    let mut empty = Events::new(open(server.addr, &path, &[("last-event-id", "")]).await);
    assert_eq!(empty.message().await.2, "two");
}

#[tokio::test]
async fn a_gap_and_a_reset_come_first_as_events_of_their_own() {
    let hub = MemoryHub::with_config(MemoryHubConfig::default().with_max_messages(2)).unwrap();
    let (server, _handler) = start(&hub, SseConfig::default()).await;
    let since = publish(&hub, "0").await;
    for n in 1..=4 {
        publish(&hub, n.to_string()).await;
    }
    let header = since.to_string();
    let mut events = Events::new(open(server.addr, "/sse/c", &[("last-event-id", &header)]).await);
    let gap = events.next().await.unwrap();
    assert_eq!(gap.event, "push.gap");
    let signal = json::parse_signal("gap", gap.data.as_bytes()).unwrap();
    assert_eq!(signal.since(), since);
    // The signal's id is where delivery continues: a reconnect never repeats it.
    assert_eq!(gap.id, signal.resume().to_string());
    assert_eq!(
        gap.data,
        format!(
            r#"{{"since":"{since}","resume":"{}","missed":2}}"#,
            signal.resume()
        )
    );
    assert_eq!(events.message().await.2, "3");
    assert_eq!(events.message().await.2, "4");

    // A cursor of another epoch (another server's history).
    let other = MemoryHub::new();
    let foreign = other
        .publish(&channel(), Publication::new("x"))
        .await
        .unwrap();
    let header = foreign.to_string();
    let mut events = Events::new(open(server.addr, "/sse/c", &[("last-event-id", &header)]).await);
    let reset = events.next().await.unwrap();
    assert_eq!(reset.event, "push.reset");
    let signal = json::parse_signal("reset", reset.data.as_bytes()).unwrap();
    assert_eq!(signal.since(), foreign);
    assert_eq!(events.message().await.2, "3");
}

#[tokio::test]
async fn binary_data_is_never_corrupted_in_either_format() {
    let hub = MemoryHub::new();
    let (server, _handler) = start(&hub, SseConfig::default()).await;
    let bytes: &[u8] = b"\x00\xff\r\n\xfe binary";
    let id = publish(&hub, Bytes::from_static(bytes)).await;
    let text = publish(&hub, "caf\u{e9}\r\nline").await;

    let mut plain = Events::new(open(server.addr, "/sse/c?since=earliest", &[]).await);
    let event = plain.next().await.unwrap();
    assert_eq!(event.encoding.as_deref(), Some("base64"));
    assert_eq!(event.id, id.to_string());
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(&event.data)
        .unwrap();
    assert_eq!(decoded, bytes);
    let event = plain.next().await.unwrap();
    assert_eq!(
        (event.encoding, event.data.as_str()),
        (None, "caf\u{e9}\nline")
    );

    // The JSON format carries the exact bytes, CR included.
    let mut json_events =
        Events::new(open(server.addr, "/sse/c?since=earliest&format=json", &[]).await);
    let event = json_events.next().await.unwrap();
    assert_eq!(event.event, "message");
    assert_eq!(event.id, id.to_string());
    let message = json::parse_message(event.data.as_bytes()).unwrap();
    assert_eq!(&message.data()[..], bytes);
    let message = json::parse_message(json_events.next().await.unwrap().data.as_bytes()).unwrap();
    assert_eq!(&message.data()[..], "caf\u{e9}\r\nline".as_bytes());
    assert_eq!(message.cursor(), text);
}

#[tokio::test]
async fn named_events_reach_onmessage_in_the_json_format() {
    let hub = MemoryHub::new();
    let (server, _handler) = start(&hub, SseConfig::default()).await;
    let named = Publication::new("42").with_event("price".parse::<EventName>().unwrap());
    hub.publish(&channel(), named).await.unwrap();
    let mut events = Events::new(open(server.addr, "/sse/c?since=earliest&format=json", &[]).await);
    let event = events.next().await.unwrap();
    assert_eq!(event.event, "message");
    let message = json::parse_message(event.data.as_bytes()).unwrap();
    assert_eq!(message.event().unwrap().as_str(), "price");
    assert_eq!(message.channel().as_str(), "c");
}

#[tokio::test]
async fn a_live_json_stream_names_its_start_in_an_event() {
    let hub = MemoryHub::new();
    let (server, _handler) = start(&hub, SseConfig::default()).await;
    hub.publish(&channel(), Publication::new("before"))
        .await
        .unwrap();
    let mut events = Events::new(open(server.addr, "/sse/c?format=json", &[]).await);
    let opening = events.next().await.unwrap();
    let head = hub.channel_stats(&channel()).unwrap().cursor;
    assert_eq!(opening.event, push_sse::SUBSCRIBED_EVENT);
    assert_eq!(opening.id, head.to_string());
    let data: serde_json::Value = serde_json::from_str(&opening.data).unwrap();
    assert_eq!(data["cursor"], head.to_string());
    let after = hub
        .publish(&channel(), Publication::new("after"))
        .await
        .unwrap();
    let event = events.next().await.unwrap();
    assert_eq!(
        (event.event.as_str(), event.id),
        ("message", after.to_string())
    );
    // The plain format keeps its opening silent (no event dispatched).
    let mut plain = Events::new(open(server.addr, "/sse/c", &[]).await);
    hub.publish(&channel(), Publication::new("next"))
        .await
        .unwrap();
    assert_eq!(plain.next().await.unwrap().data, "next");
}

#[tokio::test(start_paused = true)]
async fn keep_alive_comments_and_the_lifetime_end() {
    let hub = MemoryHub::new();
    let config = SseConfig::default()
        .with_keep_alive(Duration::from_secs(15))
        .with_max_lifetime(Duration::from_secs(100));
    let (server, handler) = start(&hub, config).await;
    let opened = tokio::time::Instant::now();
    let mut events = Events::new(open(server.addr, "/sse/c", &[]).await);
    while events.read_frame().await {}
    let lived = opened.elapsed();
    // Spread ±10% around the lifetime, in virtual time.
    assert!(
        lived >= Duration::from_secs(90) && lived <= Duration::from_secs(111),
        "{lived:?}"
    );
    let raw = String::from_utf8(events.raw.clone()).unwrap();
    let comments = raw.matches(":\n\n").count();
    assert!(
        (5..=7).contains(&comments),
        "{comments} keep-alives in {raw:?}"
    );
    // It ends with the retry hint, so clients come back at once and resume.
    let head = hub.channel_stats(&channel()).unwrap().cursor;
    let opening = format!("id: {head}\nretry: 3000\n\n");
    assert!(
        raw.starts_with(&opening) && raw.ends_with(":\n\nretry: 3000\n\n"),
        "{raw:?}"
    );
    assert!(events.parser.next_event().is_none());
    until("the stream to close", || handler.connections() == 0).await;
}

#[tokio::test(start_paused = true)]
async fn a_busy_stream_needs_no_keep_alive() {
    let hub = MemoryHub::new();
    let config = SseConfig::default().with_keep_alive(Duration::from_secs(10));
    let (server, _handler) = start(&hub, config).await;
    let mut events = Events::new(open(server.addr, "/sse/c", &[]).await);
    assert!(events.read_frame().await, "the retry block");
    for n in 0..6 {
        tokio::time::sleep(Duration::from_secs(4)).await;
        publish(&hub, n.to_string()).await;
        assert_eq!(events.message().await.2, n.to_string());
    }
    let raw = String::from_utf8(events.raw.clone()).unwrap();
    assert_eq!(raw.matches(":\n\n").count(), 0, "{raw:?}");
}

#[tokio::test(start_paused = true)]
async fn a_deadline_ends_the_stream_with_a_retry_hint() {
    let hub = MemoryHub::new();
    let handler = SseHandler::new(hub.clone(), SseConfig::default());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let request = Request::get("/sse/c").body(()).unwrap();
    let response = handler.handle_until(request, Some(deadline)).await;
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let head = hub.channel_stats(&channel()).unwrap().cursor;
    assert_eq!(body, format!("id: {head}\nretry: 3000\n\nretry: 3000\n\n"));
    assert!(tokio::time::Instant::now() >= deadline);
    assert_eq!(handler.connections(), 0);
}

#[tokio::test]
async fn two_streams_share_one_http2_connection() {
    let hub = MemoryHub::new();
    let (server, handler) = start(&hub, SseConfig::default()).await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut streams = Vec::new();
    for channel in ["c", "d"] {
        let mut sender = sender.clone();
        let request = Request::get(format!("http://{}/sse/{channel}", server.addr))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        streams.push(Events::new(response));
    }
    until("both streams", || handler.connections() == 2).await;
    for round in 0..3 {
        publish(&hub, format!("c{round}")).await;
        hub.publish(&"d".parse().unwrap(), Publication::new(format!("d{round}")))
            .await
            .unwrap();
        assert_eq!(streams[0].message().await.2, format!("c{round}"));
        assert_eq!(streams[1].message().await.2, format!("d{round}"));
    }
    drop(streams);
    until("both streams released", || handler.connections() == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_hang_up_are_noticed_and_released() {
    let hub = MemoryHub::new();
    let (server, handler) = start(&hub, SseConfig::default()).await;
    publish(&hub, "exists").await;
    let mut sockets = Vec::new();
    for _ in 0..50 {
        let mut socket = TcpStream::connect(server.addr).await.unwrap();
        socket
            .write_all(b"GET /sse/c HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        sockets.push(socket);
    }
    until("50 streams", || handler.connections() == 50).await;
    assert_eq!(hub.channel_stats(&channel()).unwrap().subscribers, 50);
    drop(sockets);
    until("every stream released", || handler.connections() == 0).await;
    assert_eq!(hub.channel_stats(&channel()).unwrap().subscribers, 0);
}

#[tokio::test]
async fn bad_input_gets_a_400_and_other_methods_a_405() {
    let hub = MemoryHub::new();
    let (server, handler) = start(&hub, SseConfig::default()).await;
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case<'_>; 8] = [
        (
            "/sse/c",
            &[("last-event-id", "not-a-cursor")],
            "invalid_cursor",
        ),
        ("/sse/c", &[("last-event-id", "a.01")], "invalid_cursor"),
        (
            "/sse/c",
            &[("last-event-id", "a.1"), ("last-event-id", "a.2")],
            "invalid_cursor",
        ),
        ("/sse/c?since=x", &[], "invalid_cursor"),
        (
            "/sse/c?since=",
            &[("last-event-id", "a.1")],
            "invalid_cursor",
        ),
        ("/sse/bad%20name", &[], "invalid_channel"),
        ("/sse/c?format=xml", &[], "invalid_query"),
        ("/sse/c?since=a.1&since=a.2", &[], "invalid_query"),
    ];
    for (path, headers, code) in cases {
        let answer = get(server.addr, path, headers).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{path} {headers:?}");
        assert_eq!(answer.json()["error"]["code"], code, "{path} {headers:?}");
        assert_eq!(answer.header("content-type"), Some("application/json"));
    }
    let long = format!(
        "/sse/c?pad={}",
        "x".repeat(push_http::DEFAULT_MAX_QUERY_BYTES)
    );
    assert_eq!(
        get(server.addr, &long, &[]).await.json()["error"]["code"],
        "invalid_query"
    );
    let post = Request::post(server.url("/sse/c"))
        .body(Empty::new())
        .unwrap();
    let answer = support::send(server.addr, post).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.header("allow"), Some("GET"));
    assert_eq!(handler.connections(), 0);
    assert_eq!(hub.channel_count(), 0, "no channel made for bad requests");
}

#[test]
fn each_message_is_encoded_once_for_every_stream() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let hub = MemoryHub::new();
        publish(&hub, "shared").await;
        let json = Publication::json(r#"{"shared": [1, "two"]}"#).unwrap();
        hub.publish(&channel(), json).await.unwrap();
        let batch = hub.read(&channel(), Start::Earliest, 2).await.unwrap();
        for message in &batch.messages {
            for format in [push_sse::Format::Plain, push_sse::Format::Json] {
                let first = push_sse::message_event(message, format);
                let again = push_sse::message_event(message, format);
                assert_eq!(first.as_ptr(), again.as_ptr(), "{format:?}");
            }
            // The envelope the SSE json format spliced is the one polling and
            // WebSockets send: made once.
            let envelope = json::envelope(message);
            assert_eq!(envelope.as_ptr(), json::envelope(message).as_ptr());
        }
        let json = &batch.messages[1];
        assert_eq!(
            push_sse::message_event(json, push_sse::Format::Plain),
            &format!(
                "id: {}\ndata: {{\"shared\":[1,\"two\"]}}\n\n",
                json.cursor()
            )[..],
            "raw (compact) JSON in the plain format"
        );
        let in_json = push_sse::message_event(json, push_sse::Format::Json);
        let line = std::str::from_utf8(&in_json).unwrap();
        assert!(
            line.contains(r#","data":{"shared":[1,"two"]},"encoding":"json"}"#),
            "{line}"
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_too_slow_gets_a_gap_and_never_holds_up_the_others() {
    // A short history, and more data than the socket buffers hold.
    let hub = MemoryHub::with_config(
        MemoryHubConfig::default()
            .with_max_messages(8)
            .with_max_bytes(64 << 20),
    )
    .unwrap();
    let (server, handler) = start(&hub, SseConfig::default()).await;
    let mut slow = Events::new(open(server.addr, "/sse/c", &[]).await);
    let mut fast = Events::new(open(server.addr, "/sse/c", &[]).await);
    until("both streams", || handler.connections() == 2).await;
    let count: usize = 400;
    let payload = "x".repeat(64 << 10);
    let (progress, mut received) = tokio::sync::watch::channel(0);
    let reader = tokio::spawn(async move {
        let mut ids = Vec::new();
        for n in 0..count {
            let event = fast.next().await.unwrap();
            assert_eq!(event.event, "message");
            ids.push(event.data[..8].to_owned());
            progress.send_replace(n + 1);
        }
        ids
    });
    for n in 0..count {
        // The publisher keeps within the history of the fast reader.
        let behind = n.saturating_sub(4);
        within("the fast reader", received.wait_for(|got| *got >= behind))
            .await
            .unwrap();
        publish(&hub, format!("{n:08}{}", &payload[8..])).await;
    }
    // The fast reader got everything, in order, while the slow one read nothing.
    let ids = within("the fast reader", reader).await.unwrap();
    assert_eq!(
        ids,
        (0..count).map(|n| format!("{n:08}")).collect::<Vec<_>>()
    );

    // The slow reader: what was in flight, then a gap, then the rest, in order.
    let mut next = 0;
    let mut gaps = 0;
    while next < count {
        let event = slow.next().await.unwrap();
        if event.event == "push.gap" {
            let gap = json::parse_signal("gap", event.data.as_bytes()).unwrap();
            let push_core::Signal::Gap(gap) = gap else {
                panic!()
            };
            next += usize::try_from(gap.missed.unwrap()).unwrap();
            gaps += 1;
            continue;
        }
        assert_eq!(event.data[..8], format!("{next:08}"));
        next += 1;
    }
    assert_eq!(next, count);
    assert!(gaps >= 1, "400 × 64 KiB cannot all wait in socket buffers");
}

#[tokio::test]
async fn extreme_settings_serve_instead_of_panicking() {
    let hub = MemoryHub::new();
    let config = SseConfig::default()
        .with_keep_alive(Duration::MAX)
        .with_max_lifetime(Duration::MAX)
        .with_retry(Duration::MAX);
    let (server, handler) = start(&hub, config).await;
    let response = open(server.addr, "/sse/c", &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut events = Events::new(response);
    let id = publish(&hub, "still here").await;
    assert_eq!(
        events.message().await,
        (id.to_string(), "message".into(), "still here".into())
    );
    assert_eq!(handler.connections(), 1);
}
