//! What the failover tests of push-server share: a keyed publisher that
//! retries until 200, the project's four clients of a channel, and the
//! check of what each client got (included by `common`).

use std::time::Duration;

use futures_util::StreamExt as _;
use http::StatusCode;
use push_core::{Cursor, Item, Signal, Start};
use push_live::longpoll::{LongPoller, LongPollerConfig};
use push_live::poll::{Poller, PollerConfig};
use push_live::sse::{EventSource, EventSourceConfig};
use push_live::ws::{WsClientConfig, WsSubscriber};
use tokio::time::Instant;

use super::Running;
use crate::support::{self, Driven, drive};

/// The longest one keyed publish may take to succeed, retries included.
pub const BOUND: Duration = Duration::from_secs(15);
/// Posts `m{i}` with key `k{i}` on `channel` to `node` until it answers
/// 200; its cursor.
pub async fn publish_keyed(node: &Running, channel: &str, i: usize) -> (String, Cursor) {
    let (data, key) = (format!("m{i}"), format!("k{i}"));
    let started = Instant::now();
    loop {
        let answer = support::request(
            node.addr,
            "POST",
            &format!("/pub/{channel}"),
            &[("Idempotency-Key", key.as_str())],
            data.clone(),
        )
        .await;
        if answer.status == StatusCode::OK {
            let id = answer.json()["id"].as_str().unwrap().parse().unwrap();
            return (data, id);
        }
        assert_eq!(
            answer.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{channel} m{i}"
        );
        assert!(started.elapsed() < BOUND, "{channel} m{i} still failing");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn index(data: &str) -> usize {
    data.strip_prefix('m').unwrap().parse().unwrap()
}

/// The project's four clients of `channel` on `node`, from the start of
/// the history.
pub async fn clients(node: &Running, channel: &str) -> Vec<(&'static str, Driven)> {
    let (backoff, max) = (Duration::from_millis(20), Duration::from_millis(500));
    let base = format!("http://{}", node.addr);
    let ws = format!("ws://{}/ws/{channel}", node.addr);
    vec![
        (
            "poll",
            drive(
                Poller::connect(
                    &format!("{base}/poll/{channel}"),
                    PollerConfig::default()
                        .with_start(Start::Earliest)
                        .with_interval(Duration::from_millis(100))
                        .with_backoff(backoff, max),
                )
                .await
                .unwrap(),
            ),
        ),
        (
            "longpoll",
            drive(
                LongPoller::connect(
                    &format!("{base}/longpoll/{channel}"),
                    LongPollerConfig::default()
                        .with_start(Start::Earliest)
                        .with_hold(Duration::from_secs(2))
                        .with_backoff(backoff, max),
                )
                .await
                .unwrap(),
            ),
        ),
        (
            "sse",
            drive(
                EventSource::connect(
                    &format!("{base}/sse/{channel}"),
                    EventSourceConfig::default()
                        .with_start(Start::Earliest)
                        .with_retry(backoff, max),
                )
                .await
                .unwrap(),
            ),
        ),
        (
            "ws",
            drive(
                WsSubscriber::connect(
                    &ws,
                    WsClientConfig::default()
                        .with_start(Start::Earliest)
                        .with_backoff(backoff, max),
                )
                .await
                .unwrap(),
            ),
        ),
    ]
}

/// What one client got: see the test. Whether it saw a reset.
pub fn check(name: &str, items: &[Item], stored: &[(Cursor, String)], last: Cursor) -> usize {
    let mut previous: Option<usize> = None;
    let mut after_reset: Option<Vec<(Cursor, String)>> = None;
    let mut resume = None;
    for item in items {
        match item {
            Item::Message(message) => {
                let data = String::from_utf8(message.data().to_vec()).unwrap();
                match previous {
                    Some(previous) => assert_eq!(index(&data), previous + 1, "{name}: {items:?}"),
                    None if after_reset.is_none() => assert_eq!(index(&data), 0, "{name}"),
                    None => {}
                }
                previous = Some(index(&data));
                if let Some(after) = &mut after_reset {
                    after.push((message.cursor(), data));
                }
            }
            Item::Signal(Signal::Reset(reset)) => {
                previous = None;
                after_reset = Some(Vec::new());
                resume = Some(reset.resume);
            }
            Item::Signal(Signal::Gap(gap)) => panic!("{name}: a gap {gap:?}"),
        }
    }
    let Some(resume) = resume else {
        return 0;
    };
    assert_eq!(resume.epoch(), last.epoch(), "{name}");
    let expected: Vec<(Cursor, String)> = stored
        .iter()
        .filter(|(cursor, _)| cursor.position() > resume.position())
        .cloned()
        .collect();
    assert_eq!(after_reset.unwrap(), expected, "{name}");
    1
}

/// What `client` gets up to and including the message at `last`.
pub async fn until(name: &str, client: &mut Driven, last: Cursor) -> Vec<Item> {
    support::within(&format!("{name} to reach the last message"), async {
        let mut items = Vec::new();
        loop {
            match client.next().await {
                Some(Ok(item)) => {
                    let done = item.cursor() == last;
                    items.push(item);
                    if done {
                        return items;
                    }
                }
                Some(Err(err)) if !err.is_fatal() => {}
                other => panic!("{name}: {other:?}"),
            }
        }
    })
    .await
}
