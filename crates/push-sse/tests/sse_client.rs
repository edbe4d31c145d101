//! The `EventSource` against a real server: delivery, binary data, resuming
//! with `Last-Event-ID` after the server ends the stream or restarts,
//! backoff on 5xx, and the answers that end it (204, 4xx, a wrong type).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../../tests/support/mod.rs"]
mod support;

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Canned, Gate};
use futures_util::StreamExt;
use http::StatusCode;
use push_core::{EventName, Hub, Item, MemoryHub, Publication, Signal, Start};
use push_http::ClientError;
use push_sse::{EventSource, EventSourceConfig, SseConfig, SseHandler};
use support::{Server, drive, next_data, next_item, until, within};

fn channel() -> push_core::ChannelName {
    "c".parse().unwrap()
}

async fn publish(hub: &MemoryHub, data: impl Into<Bytes>) -> push_core::Cursor {
    hub.publish(&channel(), Publication::new(data))
        .await
        .unwrap()
}

fn quick() -> EventSourceConfig {
    EventSourceConfig::default().with_retry(Duration::from_millis(10), Duration::from_millis(100))
}

#[tokio::test]
async fn delivers_messages_with_their_names_and_exact_bytes() {
    let hub = MemoryHub::new();
    let handler = SseHandler::new(hub.clone(), SseConfig::default());
    let server = Server::start(handler.clone()).await;
    let first = publish(&hub, "first").await;
    let config = quick().with_start(Start::Earliest);
    let mut items = drive(
        EventSource::connect(&server.url("/sse/c"), config)
            .await
            .unwrap(),
    );
    assert_eq!(next_data(&mut items).await, "first");

    let named = Publication::new("a\r\nb").with_event("price".parse::<EventName>().unwrap());
    let second = hub.publish(&channel(), named).await.unwrap();
    publish(&hub, Bytes::from_static(b"\x00\xff\xfe")).await;
    let Item::Message(message) = next_item(&mut items).await else {
        panic!()
    };
    assert_eq!(message.cursor(), second);
    assert_eq!(message.event().unwrap().as_str(), "price");
    assert_eq!(&message.data()[..], b"a\r\nb", "CRLF kept exactly");
    assert!(message.published_at().as_unix_millis() > 0);
    assert!(message.cursor() > first);
    let Item::Message(binary) = next_item(&mut items).await else {
        panic!()
    };
    assert_eq!(&binary.data()[..], b"\x00\xff\xfe");
}

#[tokio::test]
async fn a_lifetime_end_is_followed_by_a_resume_with_last_event_id() {
    let hub = MemoryHub::new();
    let config = SseConfig::default()
        .with_retry(Duration::from_millis(5))
        .with_max_lifetime(Duration::from_millis(30));
    let gate = Gate::new(SseHandler::new(hub.clone(), config));
    let server = Server::start(gate.clone()).await;
    let mut items = drive(
        EventSource::connect(&server.url("/sse/c"), quick())
            .await
            .unwrap(),
    );
    until("the first stream", || gate.handler.connections() == 1).await;
    let mut published = Vec::new();
    let mut received = Vec::new();
    // Publish across several stream lifetimes; nothing is lost or repeated.
    for n in 0..30 {
        let data = n.to_string();
        publish(&hub, data.clone()).await;
        published.push(data);
        received.push(next_data(&mut items).await);
        if n % 10 == 9 {
            // Wait for the next reconnection before publishing more.
            let seen = gate.seen.lock().unwrap().len();
            gate.wait_for(seen + 1).await;
        }
    }
    assert_eq!(received, published);
    let seen = gate.seen.lock().unwrap().clone();
    assert!(seen.len() >= 4, "{seen:?}");
    assert_eq!(seen[0], None, "the first connection starts live");
    assert!(seen[1..].iter().all(Option::is_some), "{seen:?}");
}

#[tokio::test]
async fn a_restarted_server_is_reported_as_a_reset() {
    let hub = MemoryHub::new();
    let server = Server::start(SseHandler::new(hub.clone(), SseConfig::default())).await;
    let addr = server.addr;
    let mut items = drive(
        EventSource::connect(&server.url("/sse/c"), quick())
            .await
            .unwrap(),
    );
    let handler_hub = hub.clone();
    within("the first message", async {
        loop {
            if handler_hub
                .channel_stats(&channel())
                .is_some_and(|s| s.subscribers == 1)
            {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    publish(&hub, "before").await;
    assert_eq!(next_data(&mut items).await, "before");
    server.stop().await;

    // The same port, a new hub: the client's cursor is from a lost history.
    let fresh = MemoryHub::new();
    publish(&fresh, "after").await;
    let _server =
        Server::start_at(addr, SseHandler::new(fresh.clone(), SseConfig::default())).await;
    let Item::Signal(Signal::Reset(reset)) = next_item(&mut items).await else {
        panic!("expected a reset")
    };
    assert_eq!(next_data(&mut items).await, "after");
    let Item::Message(m) = next_item_after_publish(&fresh, &mut items, "later").await else {
        panic!()
    };
    assert_eq!(&m.data()[..], b"later");
    assert!(m.cursor() > reset.resume);
}

async fn next_item_after_publish(hub: &MemoryHub, items: &mut support::Driven, data: &str) -> Item {
    publish(hub, data.to_owned()).await;
    next_item(items).await
}

#[tokio::test]
async fn retries_5xx_with_backoff_and_recovers() {
    let hub = MemoryHub::new();
    let gate = Gate::new(SseHandler::new(hub.clone(), SseConfig::default()));
    for _ in 0..3 {
        gate.queue(Canned::Status(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"error":{"code":"unavailable","message":"busy"}}"#,
        ));
    }
    let server = Server::start(gate.clone()).await;
    let mut items = drive(
        EventSource::connect(&server.url("/sse/c"), quick())
            .await
            .unwrap(),
    );
    for _ in 0..3 {
        match within("an error", items.next()).await {
            Some(Err(ClientError::Status {
                status: 503, code, ..
            })) => {
                assert_eq!(code.as_deref(), Some("unavailable"));
            }
            other => panic!("expected a 503, got {other:?}"),
        }
    }
    until("the fourth request to stream", || {
        gate.handler.connections() == 1
    })
    .await;
    publish(&hub, "through").await;
    assert_eq!(next_data(&mut items).await, "through");
}

#[tokio::test]
async fn a_204_at_connect_ends_it_without_reconnecting() {
    let hub = MemoryHub::new();
    let gate = Gate::new(SseHandler::new(hub.clone(), SseConfig::default()));
    gate.queue(Canned::Status(StatusCode::NO_CONTENT, ""));
    let server = Server::start(gate.clone()).await;
    match EventSource::connect(&server.url("/sse/c"), quick()).await {
        Err(ClientError::Status { status: 204, .. }) => {}
        other => panic!("expected the 204 to end it, got {other:?}"),
    }
    assert_eq!(
        gate.seen.lock().unwrap().len(),
        1,
        "no reconnection after a 204"
    );
}

#[tokio::test]
async fn a_4xx_or_a_wrong_content_type_is_fatal() {
    let hub = MemoryHub::new();
    let server = Server::start(SseHandler::new(hub.clone(), SseConfig::default())).await;
    // The stream opens in `connect`: a refusal is its error.
    match EventSource::connect(&server.url("/sse/bad%20name"), quick()).await {
        Err(err @ ClientError::Status { status: 400, .. }) => assert!(err.is_fatal()),
        other => panic!("expected a 400, got {other:?}"),
    }

    let gate = Gate::new(SseHandler::new(hub.clone(), SseConfig::default()));
    gate.queue(Canned::Typed("text/plain"));
    let server = Server::start(gate.clone()).await;
    match EventSource::connect(&server.url("/sse/c"), quick()).await {
        Err(err @ ClientError::WrongContentType { .. }) => {
            assert!(err.is_fatal());
            assert!(err.to_string().contains("text/event-stream"), "{err}");
        }
        other => panic!("expected a refusal of text/plain, got {other:?}"),
    }
    assert_eq!(gate.seen.lock().unwrap().len(), 1);

    assert!(matches!(
        EventSource::connect("not a url", quick()).await,
        Err(ClientError::InvalidUrl { .. })
    ));
}

#[tokio::test]
async fn a_content_type_with_parameters_is_fine() {
    let hub = MemoryHub::new();
    let gate = Gate::new(SseHandler::new(hub.clone(), SseConfig::default()));
    gate.queue(Canned::Typed("Text/Event-Stream; charset=utf-8"));
    let server = Server::start(gate.clone()).await;
    let mut source = EventSource::connect(&server.url("/sse/c"), quick())
        .await
        .unwrap();
    // The canned stream's event is not push's JSON: a passing protocol error.
    match within("an item", source.next()).await {
        Some(Err(ClientError::Protocol(_))) => {}
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_silent_server_is_given_up_after_the_idle_timeout() {
    let hub = MemoryHub::new();
    // Keep-alives far apart: the stream looks dead to the client.
    let config = SseConfig::default().with_keep_alive(Duration::from_secs(3600));
    let gate = Gate::new(SseHandler::new(hub.clone(), config));
    let server = Server::start(gate.clone()).await;
    let source = EventSource::connect(
        &server.url("/sse/c"),
        quick().with_idle_timeout(Some(Duration::from_secs(10))),
    )
    .await
    .unwrap();
    let mut items = drive(source);
    match within("the idle timeout", items.next()).await {
        Some(Err(ClientError::Timeout(after))) => assert_eq!(after, Duration::from_secs(10)),
        other => panic!("expected a timeout, got {other:?}"),
    }
    gate.wait_for(2).await;
}

#[tokio::test]
async fn a_gap_while_away_comes_first_then_the_rest() {
    let hub =
        MemoryHub::with_config(push_core::MemoryHubConfig::default().with_max_messages(2)).unwrap();
    let server = Server::start(SseHandler::new(hub.clone(), SseConfig::default())).await;
    let seen = publish(&hub, "seen").await;
    for n in 0..4 {
        publish(&hub, n.to_string()).await;
    }
    let config = quick().with_start(Start::After(seen));
    let mut items = drive(
        EventSource::connect(&server.url("/sse/c"), config)
            .await
            .unwrap(),
    );
    let Item::Signal(Signal::Gap(gap)) = next_item(&mut items).await else {
        panic!("expected a gap")
    };
    assert_eq!((gap.since, gap.missed), (seen, Some(2)));
    assert_eq!(next_data(&mut items).await, "2");
    assert_eq!(next_data(&mut items).await, "3");
}
