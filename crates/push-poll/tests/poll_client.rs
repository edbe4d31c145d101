//! The `Poller` against a real server: delivery in order, the 304 path, paging,
//! the advised interval, backoff and recovery, fatal errors, and a server
//! restart that the client recovers from and reports as a reset.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use futures_util::StreamExt;
use http::StatusCode;
use push_core::{Hub, Item, MemoryHub, Publication, Signal, Start};
use push_poll::{PollConfig, PollHandler, Poller, PollerConfig};
use support::{Recording, Server, drive, next_data, next_item, within};

const FAST: Duration = Duration::from_millis(20);

fn handler(hub: &MemoryHub, config: PollConfig) -> PollHandler<MemoryHub> {
    PollHandler::new(hub.clone(), config)
}

async fn publish(hub: &MemoryHub, data: &str) {
    hub.publish(&"c".parse().unwrap(), Publication::new(data.to_owned()))
        .await
        .unwrap();
}

#[tokio::test]
async fn delivers_in_order_and_costs_304s_when_nothing_changes() {
    let hub = MemoryHub::new();
    let service = Recording::new(handler(&hub, PollConfig::default().with_interval(FAST)));
    let log = service.log.clone();
    let server = Server::start(service).await;
    publish(&hub, "before").await;
    let config = PollerConfig::default().with_start(Start::Earliest);
    let poller = Poller::connect(&server.url("/poll/c"), config)
        .await
        .unwrap();
    let mut items = drive(poller);

    assert_eq!(next_data(&mut items).await, "before");
    let seen = log.statuses().len();
    // It keeps polling; with nothing new every answer is a 304.
    let statuses = log.wait_for(seen + 3).await;
    assert!(
        statuses[seen..]
            .iter()
            .all(|s| *s == StatusCode::NOT_MODIFIED),
        "{statuses:?}"
    );

    for n in 0..5 {
        publish(&hub, &n.to_string()).await;
    }
    for n in 0..5 {
        assert_eq!(next_data(&mut items).await, n.to_string());
    }
}

#[tokio::test]
async fn an_answer_cut_at_the_limit_is_followed_at_once() {
    let hub = MemoryHub::new();
    // The advised interval is an hour: only `more` can bring the rest soon.
    let config = PollConfig::default()
        .with_max_batch(2)
        .with_interval(Duration::from_secs(3600));
    let server = Server::start(handler(&hub, config)).await;
    for n in 0..7 {
        publish(&hub, &n.to_string()).await;
    }
    let config = PollerConfig::default().with_start(Start::Earliest);
    let mut poller = Poller::connect(&server.url("/poll/c"), config)
        .await
        .unwrap();
    for n in 0..7 {
        assert_eq!(next_data(&mut poller).await, n.to_string());
    }
}

#[tokio::test(start_paused = true)]
async fn follows_the_advised_interval() {
    let hub = MemoryHub::new();
    // Below the tests' safety net, which runs on the same paused clock.
    let advised = Duration::from_secs(8);
    let service = Recording::new(handler(&hub, PollConfig::default().with_interval(advised)));
    let log = service.log.clone();
    let server = Server::start(service).await;
    // No jitter, and a default (5 s) that differs from the advice.
    let config = PollerConfig::default().with_jitter(0.0);
    let items = drive(
        Poller::connect(&server.url("/poll/c"), config)
            .await
            .unwrap(),
    );

    let start = tokio::time::Instant::now();
    log.wait_for(1).await;
    log.wait_for(2).await;
    let between = start.elapsed();
    // Virtual time: exactly the advised interval passed, not the default.
    assert!(
        between >= advised && between < advised + Duration::from_secs(1),
        "{between:?}"
    );
    drop(items);
}

#[tokio::test]
async fn backs_off_on_errors_and_recovers() {
    let hub = MemoryHub::new();
    let service = Recording::failing(handler(&hub, PollConfig::default().with_interval(FAST)), 3);
    let log = service.log.clone();
    let server = Server::start(service).await;
    publish(&hub, "after the storm").await;
    let config = PollerConfig::default()
        .with_start(Start::Earliest)
        .with_backoff(Duration::from_millis(10), Duration::from_millis(40));
    let mut poller = Poller::connect(&server.url("/poll/c"), config)
        .await
        .unwrap();
    for _ in 0..3 {
        match within("an error", poller.next()).await {
            Some(Err(push_poll::Error::Status { status, code, .. })) => {
                assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
                assert_eq!(code.as_deref(), Some("unavailable"));
            }
            other => panic!("expected a 503, got {other:?}"),
        }
    }
    assert_eq!(next_data(&mut poller).await, "after the storm");
    assert_eq!(
        log.statuses()[..4],
        [StatusCode::SERVICE_UNAVAILABLE; 3]
            .iter()
            .copied()
            .chain([StatusCode::OK])
            .collect::<Vec<_>>()[..]
    );
}

#[tokio::test]
async fn a_bad_request_is_fatal_at_connect() {
    let hub = MemoryHub::new();
    let server = Server::start(handler(&hub, PollConfig::default())).await;
    // The first poll goes out in `connect`: a refusal is its error.
    match Poller::connect(&server.url("/poll/not%20valid"), PollerConfig::default()).await {
        Err(e) => {
            assert!(e.is_fatal());
            assert!(e.to_string().contains("invalid channel name"), "{e}");
        }
        Ok(poller) => panic!("expected a fatal error, got {poller:?}"),
    }
    assert!(
        Poller::connect("not a url", PollerConfig::default())
            .await
            .is_err()
    );
    assert!(
        Poller::connect("/relative", PollerConfig::default())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn recovers_from_a_server_restart_and_reports_the_reset() {
    let first_hub = MemoryHub::new();
    let config = PollConfig::default().with_interval(FAST);
    let server = Server::start(handler(&first_hub, config.clone())).await;
    let addr = server.addr;
    publish(&first_hub, "one").await;
    let poller_config = PollerConfig::default()
        .with_start(Start::Earliest)
        .with_backoff(Duration::from_millis(10), Duration::from_millis(50));
    let mut poller = Poller::connect(&server.url("/poll/c"), poller_config)
        .await
        .unwrap();
    assert_eq!(next_data(&mut poller).await, "one");

    // The server goes away; the poller keeps trying.
    server.stop().await;
    match within("a connection error", poller.next()).await {
        Some(Err(e)) => assert!(!e.is_fatal(), "{e}"),
        other => panic!("expected an error while down, got {other:?}"),
    }

    // A new process: a new hub, a new epoch, the same port.
    let second_hub = MemoryHub::new();
    publish(&second_hub, "two").await;
    let _server = Server::start_at(addr, handler(&second_hub, config)).await;
    let reset = match next_item(&mut poller).await {
        Item::Signal(Signal::Reset(reset)) => reset,
        other => panic!("expected a reset, got {other:?}"),
    };
    assert_ne!(reset.since.epoch(), reset.resume.epoch());
    assert_eq!(next_data(&mut poller).await, "two");
    assert_eq!(
        poller.cursor().map(push_core::Cursor::epoch),
        Some(reset.resume.epoch())
    );
}

#[tokio::test]
async fn an_answer_over_the_body_limit_is_refused_not_buffered() {
    let hub = MemoryHub::new();
    let server = Server::start(handler(&hub, PollConfig::default())).await;
    publish(&hub, &"x".repeat(500)).await;
    let mut config = PollerConfig::default()
        .with_start(Start::Earliest)
        .with_backoff(Duration::from_millis(10), Duration::from_millis(10));
    config.max_body_bytes = 200;
    let mut poller = Poller::connect(&server.url("/poll/c"), config)
        .await
        .unwrap();
    match within("the refusal", poller.next()).await {
        Some(Err(push_poll::Error::Request(e))) => {
            assert!(e.to_string().contains("length limit"), "{e}");
        }
        other => panic!("expected the body to be refused, got {other:?}"),
    }
}
