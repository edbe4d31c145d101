//! The `LongPoller` against a real server: delivery in order, 204s followed at
//! once, backoff and recovery, fatal errors, and a server restart that it
//! recovers from and reports as a reset.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use futures_util::StreamExt;
use http::StatusCode;
use push_core::{Hub, Item, MemoryHub, Publication, Signal, Start};
use push_longpoll::{LongPollConfig, LongPollHandler, LongPoller, LongPollerConfig};
use support::{Recording, Server, drive, next_data, next_item, until, within};

fn handler(hub: &MemoryHub) -> LongPollHandler<MemoryHub> {
    LongPollHandler::new(hub.clone(), LongPollConfig::default())
}

async fn publish(hub: &MemoryHub, data: &str) {
    hub.publish(&"c".parse().unwrap(), Publication::new(data.to_owned()))
        .await
        .unwrap();
}

#[tokio::test]
async fn delivers_every_message_in_order_as_it_is_published() {
    let hub = MemoryHub::new();
    let handler = handler(&hub);
    let server = Server::start(handler.clone()).await;
    let mut items = drive(
        LongPoller::connect(&server.url("/longpoll/c"), LongPollerConfig::default())
            .await
            .unwrap(),
    );
    for round in 0..5 {
        until("the poller to be held", || handler.connections() == 1).await;
        for n in 0..=round {
            publish(&hub, &format!("{round}.{n}")).await;
        }
        for n in 0..=round {
            assert_eq!(next_data(&mut items).await, format!("{round}.{n}"));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_204_is_followed_by_the_next_request_at_once() {
    let hub = MemoryHub::new();
    let service = Recording::new(handler(&hub));
    let log = service.log.clone();
    let server = Server::start(service).await;
    let config = LongPollerConfig::default().with_hold(Duration::from_secs(5));
    let mut items = drive(
        LongPoller::connect(&server.url("/longpoll/c"), config)
            .await
            .unwrap(),
    );
    // Two empty holds, in virtual time.
    let statuses = log.wait_for(2).await;
    assert_eq!(statuses, [StatusCode::NO_CONTENT; 2]);
    publish(&hub, "finally").await;
    assert_eq!(next_data(&mut items).await, "finally");
}

#[tokio::test]
async fn backs_off_on_errors_and_recovers() {
    let hub = MemoryHub::new();
    publish(&hub, "after the storm").await;
    let server = Server::start(Recording::failing(handler(&hub), 3)).await;
    let config = LongPollerConfig::default()
        .with_start(Start::Earliest)
        .with_backoff(Duration::from_millis(10), Duration::from_millis(40));
    let mut poller = LongPoller::connect(&server.url("/longpoll/c"), config)
        .await
        .unwrap();
    for _ in 0..3 {
        match within("an error", poller.next()).await {
            Some(Err(e)) => assert!(!e.is_fatal() && e.to_string().contains("503"), "{e}"),
            other => panic!("expected a 503, got {other:?}"),
        }
    }
    match within("the message", poller.next()).await {
        Some(Ok(Item::Message(m))) => assert_eq!(&m.data()[..], b"after the storm"),
        other => panic!("expected the message, got {other:?}"),
    }
}

#[tokio::test]
async fn a_bad_request_is_fatal_at_connect() {
    let hub = MemoryHub::new();
    let server = Server::start(handler(&hub)).await;
    let config = LongPollerConfig::default().with_start(Start::Earliest);
    // The first request goes out in `connect`: a refusal is its error.
    match LongPoller::connect(&server.url("/longpoll/bad%20name"), config).await {
        Err(e @ push_longpoll::Error::Status { status, .. }) => {
            assert_eq!(status, StatusCode::BAD_REQUEST);
            assert!(e.is_fatal());
            assert!(
                matches!(e, push_longpoll::Error::Status { code: Some(ref c), .. } if c == "invalid_channel")
            );
        }
        other => panic!("expected a fatal 400, got {other:?}"),
    }
}

#[tokio::test]
async fn recovers_from_a_server_restart_and_reports_the_reset() {
    let first_hub = MemoryHub::new();
    let first = handler(&first_hub);
    let server = Server::start(first.clone()).await;
    let addr = server.addr;
    let config = LongPollerConfig::default()
        .with_backoff(Duration::from_millis(10), Duration::from_millis(50));
    let mut items = drive(
        LongPoller::connect(&server.url("/longpoll/c"), config)
            .await
            .unwrap(),
    );
    until("the poller to be held", || first.connections() == 1).await;
    publish(&first_hub, "one").await;
    assert_eq!(next_data(&mut items).await, "one");

    until("the poller to be held again", || first.connections() == 1).await;
    server.stop().await;
    let second_hub = MemoryHub::new();
    publish(&second_hub, "two").await;
    let _server = Server::start_at(addr, handler(&second_hub)).await;

    match next_item(&mut items).await {
        Item::Signal(Signal::Reset(reset)) => assert_ne!(reset.since.epoch(), reset.resume.epoch()),
        other => panic!("expected a reset, got {other:?}"),
    }
    assert_eq!(next_data(&mut items).await, "two");
    // Reading the new hub once more proves the cursor moved to its epoch.
    let head = second_hub
        .read(&"c".parse().unwrap(), Start::Live, 0)
        .await
        .unwrap()
        .cursor;
    assert_eq!(head.position().major(), 1);
}

#[tokio::test]
async fn an_answer_over_the_body_limit_is_refused_not_buffered() {
    let hub = MemoryHub::new();
    publish(&hub, &"x".repeat(500)).await;
    let server = Server::start(handler(&hub)).await;
    let mut config = LongPollerConfig::default().with_start(Start::Earliest);
    config.max_body_bytes = 200;
    let mut poller = LongPoller::connect(&server.url("/longpoll/c"), config)
        .await
        .unwrap();
    match within("the refusal", poller.next()).await {
        Some(Err(push_longpoll::Error::Request(e))) => {
            assert!(e.to_string().contains("length limit"), "{e}");
        }
        other => panic!("expected the body to be refused, got {other:?}"),
    }
}

#[tokio::test]
async fn a_204_without_a_cursor_is_a_protocol_error() {
    let service =
        hyper::service::service_fn(|_request: http::Request<hyper::body::Incoming>| async {
            let mut response = http::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
            *response.status_mut() = StatusCode::NO_CONTENT;
            Ok::<_, std::convert::Infallible>(response)
        });
    let server = Server::start(service).await;
    let mut poller = LongPoller::connect(&server.url("/longpoll/c"), LongPollerConfig::default())
        .await
        .unwrap();
    match within("the error", poller.next()).await {
        Some(Err(e @ push_longpoll::Error::Protocol(_))) => {
            assert!(!e.is_fatal());
            assert!(e.to_string().contains("without a cursor"), "{e}");
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
}
