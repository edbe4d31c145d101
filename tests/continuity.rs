//! Continuity over every technique, through the facade's router on a real
//! socket: however connections drop, a client that resumes from the cursor
//! of the last item it took gets every message exactly once and in order;
//! when the history no longer reaches back that far it is told first, with
//! the exact number missed (a gap); a cursor from another history gets a
//! reset, then everything retained. One property, the same for short
//! polling, long polling, SSE and WebSockets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

#[path = "support/serving.rs"]
mod serving;

#[path = "support/ws.rs"]
mod ws_support;

#[path = "../crates/push-sse/tests/common/mod.rs"]
mod sse_support;

use std::net::SocketAddr;
use std::sync::Arc;

use http::StatusCode;
use proptest::prelude::*;
use push_live::http::Technique;
use push_live::wire::json;
use push_live::{
    Cursor, Epoch, Hub, Item, MemoryHub, MemoryHubConfig, Position, Publication, RouterConfig,
    ServeConfig, Signal, Start,
};
use serde_json::Value;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use support::{get, until, within};

/// What the test does next.
#[derive(Clone, Debug)]
enum Step {
    /// Publish this many messages.
    Publish(usize),
    /// Connect from the client's cursor and take at most this many items
    /// (a batch of at most this many, for the polling techniques), then
    /// drop the connection, perhaps with more on the way.
    Take(usize),
    /// Connect, and publish this many while connected (a long poll held,
    /// a stream or socket open): they come as they are published.
    TakeAcrossPublish(usize),
    /// Connect and drop the connection before taking anything: a long poll
    /// held, then hung up; an answer never read.
    HangUp,
    /// Connect with a cursor from another history: a reset comes first,
    /// then everything retained, and the client goes on from there.
    Foreign,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec(
        prop_oneof![
            4 => (1..5usize).prop_map(Step::Publish),
            5 => (0..6usize).prop_map(Step::Take),
            2 => (1..3usize).prop_map(Step::TakeAcrossPublish),
            1 => Just(Step::HangUp),
            1 => Just(Step::Foreign),
        ],
        1..20,
    )
}

/// The published messages, as the model of the hub keeps them: message `n`
/// (from 1) is the channel's position `n`, and its data is `n`.
struct Model {
    published: usize,
    /// The channel keeps this many messages.
    kept: usize,
}

impl Model {
    /// Publishes `n` messages to channel `c`.
    async fn publish(&mut self, hub: &MemoryHub, n: usize) {
        let channel = "c".parse().unwrap();
        for _ in 0..n {
            self.published += 1;
            let data = self.published.to_string();
            hub.publish(&channel, Publication::new(data)).await.unwrap();
        }
    }

    /// The first retained message's position minus one: how many are gone.
    fn lost(&self) -> usize {
        self.published.saturating_sub(self.kept)
    }

    /// What a client resuming after position `after` (in this history) must
    /// get, in order: a gap first when the history starts after `after + 1`.
    fn after(&self, after: usize) -> Vec<Expected> {
        let lost = self.lost();
        let mut expected = Vec::new();
        let first = if after < lost {
            expected.push(Expected::Gap {
                missed: lost - after,
                resume: lost,
            });
            lost
        } else {
            after
        };
        expected.extend((first + 1..=self.published).map(Expected::Message));
        expected
    }

    /// What a client resuming with a foreign cursor must get.
    fn foreign(&self) -> Vec<Expected> {
        let lost = self.lost();
        let mut expected = vec![Expected::Reset { resume: lost }];
        expected.extend((lost + 1..=self.published).map(Expected::Message));
        expected
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expected {
    Message(usize),
    Gap { missed: usize, resume: usize },
    Reset { resume: usize },
}

/// What `item` is, in the model's terms.
fn observed(item: &Item, epoch: Epoch) -> Expected {
    let position = |cursor: Cursor| {
        assert_eq!(cursor.epoch(), epoch, "a cursor of another history");
        usize::try_from(cursor.position().major()).unwrap()
    };
    match item {
        Item::Message(message) => {
            let n = position(message.cursor());
            assert_eq!(
                message.data(),
                n.to_string().as_bytes(),
                "message {n}'s data"
            );
            Expected::Message(n)
        }
        Item::Signal(Signal::Gap(gap)) => Expected::Gap {
            missed: usize::try_from(gap.missed.expect("a gap with its count")).unwrap(),
            resume: position(gap.resume),
        },
        Item::Signal(Signal::Reset(reset)) => Expected::Reset {
            resume: position(reset.resume),
        },
    }
}

/// One connection of `technique` from `since`, taking at most `take` items
/// (at least one for a poll), then dropped; a long poll is held when `hold`.
/// What it took, and the cursor a client resumes from: the batch's for the
/// polling techniques (checked against its items), the last item's for the
/// streams.
async fn connect(
    technique: Technique,
    addr: SocketAddr,
    since: Cursor,
    take: usize,
    hold: bool,
) -> (Vec<Item>, Option<Cursor>) {
    match technique {
        Technique::Poll | Technique::LongPoll => {
            let limit = take.max(1);
            let path = match technique {
                Technique::Poll => format!("/poll/c?since={since}&limit={limit}"),
                _ if hold => format!("/longpoll/c?since={since}&limit={limit}"),
                _ => format!("/longpoll/c?since={since}&timeout=0&limit={limit}"),
            };
            let answer = get(addr, &path, &[]).await;
            if answer.status == StatusCode::NO_CONTENT {
                let etag = push_live::http::cursor_from_etag(answer.header("etag").unwrap());
                assert_eq!(
                    etag,
                    Some(since),
                    "nothing new: poll again from the same cursor"
                );
                return (Vec::new(), etag);
            }
            assert_eq!(answer.status, StatusCode::OK, "{path}");
            let batch = json::parse_batch(&answer.body).unwrap();
            let cursor = batch.cursor;
            let items: Vec<Item> = batch
                .signal
                .map(Item::Signal)
                .into_iter()
                .chain(batch.messages.into_iter().map(Item::Message))
                .collect();
            let last = items.last().map_or(since, Item::cursor);
            assert_eq!(cursor, last, "a batch resumes after its last item");
            (items, Some(cursor))
        }
        Technique::Sse => {
            let since = since.to_string();
            let host = addr.to_string();
            let headers = [("host", host.as_str()), ("last-event-id", since.as_str())];
            let response = sse_support::open(addr, "/sse/c?format=json", &headers).await;
            let mut events = sse_support::Events::new(response);
            let mut items = Vec::new();
            while items.len() < take {
                let event = events.next().await.expect("an event");
                let data = event.data.as_bytes();
                items.push(match event.event.as_str() {
                    "message" => Item::Message(Arc::new(json::parse_message(data).unwrap())),
                    "push.gap" => Item::Signal(json::parse_signal("gap", data).unwrap()),
                    "push.reset" => Item::Signal(json::parse_signal("reset", data).unwrap()),
                    other => panic!("an event of type {other:?}"),
                });
            }
            let cursor = items.last().map(Item::cursor);
            (items, cursor)
        }
        Technique::Ws => {
            let mut ws = ws_support::open(addr, &format!("/ws/c?since={since}"), &[])
                .await
                .unwrap();
            let mut items = Vec::new();
            while items.len() < take {
                let frame = ws_support::next_json(&mut ws).await;
                let text = frame.to_string();
                items.push(match frame.get("op").and_then(Value::as_str) {
                    None => Item::Message(Arc::new(json::parse_envelope(&frame).unwrap())),
                    Some(kind @ ("gap" | "reset")) => {
                        Item::Signal(json::parse_signal(kind, text.as_bytes()).unwrap())
                    }
                    Some(other) => panic!("a frame with op {other:?}"),
                });
            }
            let cursor = items.last().map(Item::cursor);
            (items, cursor)
        }
    }
}

/// Connects and hangs up before reading: a long poll is held first (or
/// answered at once, when there is something to take).
async fn hang_up(technique: Technique, running: &serving::Running, since: Cursor, behind: bool) {
    let path = match technique {
        Technique::Poll => format!("/poll/c?since={since}"),
        Technique::LongPoll => format!("/longpoll/c?since={since}"),
        Technique::Sse => "/sse/c?format=json".to_owned(),
        Technique::Ws => format!("/ws/c?since={since}"),
    };
    if technique == Technique::Ws {
        drop(ws_support::open(running.addr, &path, &[]).await.unwrap());
        return;
    }
    let mut socket = TcpStream::connect(running.addr).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nLast-Event-ID: {since}\r\n\r\n").into_bytes();
    socket.write_all(&request).await.unwrap();
    if technique == Technique::LongPoll && !behind {
        until("the long poll held", || {
            running.router.connections(Technique::LongPoll) == 1
        })
        .await;
    }
    drop(socket);
}

async fn run(technique: Technique, kept: usize, steps: Vec<Step>) {
    let hub = MemoryHub::with_config(
        MemoryHubConfig::default()
            .with_max_messages(kept)
            .with_max_bytes(1 << 20),
    )
    .unwrap();
    let running = serving::start_on(hub, RouterConfig::default(), ServeConfig::default()).await;
    let hub = running.router.hub().clone();
    let head = hub
        .read(&"c".parse().unwrap(), Start::Live, 0)
        .await
        .unwrap()
        .cursor;
    let epoch = head.epoch();
    let foreign = Cursor::new(Epoch::new(epoch.get() ^ 1), Position::new(1, 0));
    let mut model = Model { published: 0, kept };
    // The client: the cursor of the last item it took.
    let mut cursor = head;
    for step in steps {
        let (since, expected, take) = match step {
            Step::Publish(n) => {
                model.publish(&hub, n).await;
                continue;
            }
            Step::TakeAcrossPublish(n)
                if technique != Technique::Poll && model.after(position(cursor)).is_empty() =>
            {
                // Never more than the history holds: a stream that has not
                // read them yet must not fall behind.
                let n = n.min(kept);
                let addr = running.addr;
                let open =
                    tokio::spawn(async move { connect(technique, addr, cursor, n, true).await });
                until("the connection open", || {
                    running.router.connections(technique) == 1
                })
                .await;
                model.publish(&hub, n).await;
                let (items, resume) = within("the answer", open).await.unwrap();
                let got: Vec<Expected> = items.iter().map(|item| observed(item, epoch)).collect();
                let expected = model.after(position(cursor));
                assert!(
                    !got.is_empty(),
                    "{technique}: an answer with what was published"
                );
                assert_eq!(
                    got,
                    expected[..got.len()],
                    "{technique}: published while connected"
                );
                cursor = resume.unwrap();
                until("the connection released", || {
                    running.router.connections(technique) == 0
                })
                .await;
                continue;
            }
            Step::TakeAcrossPublish(n) => {
                // Short polling answers at once, and a client behind is
                // answered at once too: publish, then take.
                model.publish(&hub, n).await;
                (cursor, model.after(position(cursor)), usize::MAX)
            }
            Step::HangUp => {
                let behind = !model.after(position(cursor)).is_empty();
                hang_up(technique, &running, cursor, behind).await;
                until("the connection released", || {
                    running.router.connections(technique) == 0
                })
                .await;
                continue;
            }
            Step::Take(take) => (cursor, model.after(position(cursor)), take),
            Step::Foreign => (foreign, model.foreign(), usize::MAX),
        };
        // Never more than there is: a stream would wait for the next publish.
        let take = take.min(expected.len());
        let connection = connect(technique, running.addr, since, take, false);
        let (items, resume) = within("a connection", connection).await;
        let got: Vec<Expected> = items.iter().map(|item| observed(item, epoch)).collect();
        let polled = matches!(technique, Technique::Poll | Technique::LongPoll);
        let want = &expected[..got.len().min(expected.len())];
        assert_eq!(got, want, "{technique} from {since}: the exact next items");
        if polled {
            // A batch holds what there is, up to its limit (and a signal).
            let limit = take.max(1);
            let messages = got
                .iter()
                .filter(|e| matches!(e, Expected::Message(_)))
                .count();
            let available = expected
                .iter()
                .filter(|e| matches!(e, Expected::Message(_)))
                .count();
            assert_eq!(messages, available.min(limit), "{technique}: a full batch");
        } else {
            assert_eq!(got.len(), take);
        }
        if let Some(resume) = resume {
            cursor = resume;
        }
        until("the connection released", || {
            running.router.connections(technique) == 0
        })
        .await;
    }
    // Catch up: the rest, exactly.
    let expected = model.after(position(cursor));
    let take = if matches!(technique, Technique::Poll | Technique::LongPoll) {
        usize::MAX >> 1
    } else {
        expected.len()
    };
    let (items, _) = connect(technique, running.addr, cursor, take, false).await;
    let got: Vec<Expected> = items.iter().map(|item| observed(item, epoch)).collect();
    assert_eq!(got, expected, "{technique}: catching up");
}

/// The position of a cursor of this history (0: before the first message).
fn position(cursor: Cursor) -> usize {
    usize::try_from(cursor.position().major()).unwrap()
}

fn techniques() -> impl Strategy<Value = Technique> {
    proptest::sample::select(Technique::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, max_shrink_time: 60_000, ..ProptestConfig::default() })]

    /// However connections drop, on every technique a client that resumes
    /// from its last cursor gets each message once, in order, a gap with the
    /// exact count when it fell out of the history, and a reset for a cursor
    /// of another history.
    #[test]
    fn every_technique_resumes_exactly(
        technique in techniques(),
        kept in 2..6usize,
        steps in steps(),
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(run(technique, kept, steps));
    }
}

/// Each technique, one scripted run through every kind of step: a gap, a
/// reset, hang-ups, and batches cut at their limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_run_on_each_technique() {
    let steps = vec![
        Step::Publish(2),
        Step::Take(1),
        Step::HangUp,
        Step::TakeAcrossPublish(1),
        Step::Take(5),
        Step::TakeAcrossPublish(2),
        Step::Publish(4),
        Step::Take(2),
        Step::Publish(3),
        Step::HangUp,
        Step::Foreign,
        Step::Publish(1),
        Step::Take(0),
        Step::HangUp,
    ];
    for technique in Technique::ALL {
        run(technique, 3, steps.clone()).await;
    }
}
