//! The app's authorize hook on every technique, over real TCP through
//! `push_live::serve`: allowed, denied with a status and push's JSON error,
//! and `me` mapped to `user:42` so that a publish reaches every kind of
//! subscriber of `me`; on `GET /ws`, a denied command is an error reply and
//! the socket stays open.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

#[path = "support/serving.rs"]
mod serving;

#[path = "support/ws.rs"]
mod ws_support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::SinkExt as _;
use http::StatusCode;
use http::request::Parts;
use push_live::http::{Action, Decision, Denial, Technique};
use push_live::{ChannelName, RouterConfig, ServeConfig};
use tokio_tungstenite::tungstenite::Message;

use support::{get, open_sse, read_until, request, until, within};

const SESSION: (&str, &str) = ("cookie", "theme=dark; session=valid-42");
const SESSION_LINE: &str = "Cookie: theme=dark; session=valid-42\r\n";

/// Every question the hook was asked: the peer, the channel and the action.
type Asked = Arc<Mutex<Vec<(Option<SocketAddr>, String, Action)>>>;

/// The app's rules: a `session=valid-N` cookie is user N; without one, 401.
/// `me` is mapped to `user:N`; `secret` is refused with a code of the app's
/// own; publishing is allowed on `me` only.
fn config(asked: &Asked) -> RouterConfig {
    let asked = asked.clone();
    let mut config = RouterConfig::default().with_publish(true).with_authorize(
        move |parts: &Parts, channel: &ChannelName, action: Action| {
            asked
                .lock()
                .unwrap()
                .push((push_live::http::peer(parts), channel.to_string(), action));
            let user = parts
                .headers
                .get(http::header::COOKIE)
                .and_then(|value| value.to_str().ok())
                .and_then(|cookies| {
                    cookies
                        .split("; ")
                        .find_map(|c| c.strip_prefix("session=valid-"))
                })
                .and_then(|id| id.parse::<u64>().ok());
            let channel = channel.clone();
            async move {
                let Some(user) = user else {
                    return Decision::Deny(Denial::unauthorized());
                };
                match (channel.as_str(), action) {
                    ("me", _) => Decision::Map(format!("user:{user}").parse().unwrap()),
                    ("secret", _) => Decision::Deny(Denial::new(
                        StatusCode::FORBIDDEN,
                        "secret_channel",
                        "the secret channel is not yours",
                    )),
                    (_, Action::Subscribe) => Decision::Allow,
                    (_, Action::Publish) => Decision::Deny(Denial::forbidden()),
                }
            }
        },
    );
    config.ws_commands = config.ws_commands.with_publish(true);
    config
}

fn error_code(answer: &support::Answer) -> String {
    answer.json()["error"]["code"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_technique_allows_denies_with_the_status_and_never_touches_the_hub() {
    let asked = Asked::default();
    let server = serving::start(config(&asked), ServeConfig::default()).await;
    let addr = server.addr;
    // A WebSocket handshake is checked as such first, then asked about.
    let handshake = [
        ("connection", "upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    for technique in ["poll", "longpoll", "sse", "ws"] {
        let headers: &[(&str, &str)] = if technique == "ws" { &handshake } else { &[] };
        let anonymous = get(addr, &format!("/{technique}/news"), headers).await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{technique}");
        assert_eq!(error_code(&anonymous), "unauthorized", "{technique}");
        let with_session = [headers, &[SESSION]].concat();
        let secret = get(addr, &format!("/{technique}/secret"), &with_session).await;
        assert_eq!(secret.status, StatusCode::FORBIDDEN, "{technique}");
        assert_eq!(
            secret.json(),
            serde_json::json!({"error":{"code":"secret_channel","message":"the secret channel is not yours"}}),
            "{technique}"
        );
    }
    // A denied request never reached the hub: no channel was made.
    assert_eq!(server.router.hub().stats().channels, 0);

    // Allowed: a poll answers, an event stream and a WebSocket open.
    assert_eq!(get(addr, "/poll/news", &[SESSION]).await.status, 200);
    let (_sse, head) = open_sse(addr, "/sse/news", SESSION_LINE).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let _ws = ws_support::open(addr, "/ws/news", &[SESSION])
        .await
        .unwrap();

    // The peer's address reached the hook, and so did each action.
    let asked = asked.lock().unwrap();
    assert!(asked.len() >= 11, "{asked:?}");
    assert!(asked.iter().all(
        |(peer, _, action)| peer.is_some_and(|p| p.ip().is_loopback())
            && *action == Action::Subscribe
    ));
}

#[tokio::test]
async fn publishing_is_asked_before_the_body_is_read() {
    let asked = Asked::default();
    let server = serving::start(config(&asked), ServeConfig::default()).await;
    let anonymous = request(server.addr, "POST", "/pub/news", &[], "hello").await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let refused = request(server.addr, "POST", "/pub/news", &[SESSION], "hello").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&refused), "forbidden");
    assert_eq!(server.router.hub().stats().channels, 0);
    let asked = asked.lock().unwrap();
    assert_eq!(asked.len(), 2);
    assert!(
        asked
            .iter()
            .all(|(_, channel, action)| channel == "news" && *action == Action::Publish)
    );
}

#[tokio::test]
async fn me_is_mapped_on_every_technique_and_cursors_resume_on_it() {
    let asked = Asked::default();
    let server = serving::start(config(&asked), ServeConfig::default()).await;
    let addr = server.addr;

    // One subscriber of `me` per technique, each waiting for the next message.
    let (mut sse, mut sse_seen) = open_sse(addr, "/sse/me", SESSION_LINE).await;
    let mut ws = ws_support::open(addr, "/ws/me", &[SESSION]).await.unwrap();
    let greeting = ws_support::next_json(&mut ws).await;
    assert_eq!(greeting["op"], "subscribed");
    assert_eq!(greeting["channel"], "user:42");
    let mut commands = ws_support::open(
        addr,
        "/ws",
        &[SESSION, ("sec-websocket-protocol", "push.v1")],
    )
    .await
    .unwrap();
    commands
        .send(Message::text(
            r#"{"op":"subscribe","channel":"me","ref":1}"#,
        ))
        .await
        .unwrap();
    let ack = ws_support::next_json(&mut commands).await;
    assert_eq!(
        (&ack["op"], &ack["ref"], &ack["channel"]),
        (&"ack".into(), &1.into(), &"user:42".into())
    );
    let longpoll =
        tokio::spawn(async move { get(addr, "/longpoll/me?timeout=60", &[SESSION]).await });
    until("the long poll held", || {
        server.router.connections(Technique::LongPoll) == 1
    })
    .await;

    // A publish to `me` lands on user:42, and says so.
    let published = request(addr, "POST", "/pub/me", &[SESSION], "hello 42").await;
    assert_eq!(published.status, 200, "{:?}", published.body);
    let published = published.json();
    assert_eq!(published["channel"], "user:42");
    let id = published["id"].as_str().unwrap().to_owned();

    // Every subscriber of `me` gets it, named as the channel it is on.
    read_until(&mut sse, &mut sse_seen, "data: hello 42\n").await;
    assert!(sse_seen.contains(&format!("id: {id}\n")), "{sse_seen}");
    for frame in [
        ws_support::next_json(&mut ws).await,
        ws_support::next_json(&mut commands).await,
    ] {
        assert_eq!(
            (&frame["channel"], &frame["id"], &frame["data"]),
            (&"user:42".into(), &id.clone().into(), &"hello 42".into())
        );
    }
    let held = within("the long poll's answer", longpoll).await.unwrap();
    assert_eq!(held.status, 200);
    assert_eq!(held.json()["messages"][0]["channel"], "user:42");
    let polled = get(addr, "/poll/me?since=earliest", &[SESSION]).await;
    assert_eq!(polled.json()["messages"][0]["id"], id.as_str());

    // Published directly to user:42 (from code), it reaches `me` too; and a
    // cursor of `me` resumes on user:42.
    let user_42: ChannelName = "user:42".parse().unwrap();
    let second = push_live::Hub::publish(
        &**server.router.hub(),
        &user_42,
        push_live::Publication::new("second"),
    )
    .await
    .unwrap();
    read_until(&mut sse, &mut sse_seen, "data: second\n").await;
    let resumed = get(addr, &format!("/poll/me?since={id}"), &[SESSION]).await;
    let resumed = resumed.json();
    assert_eq!(resumed["messages"].as_array().unwrap().len(), 1);
    assert_eq!(resumed["messages"][0]["data"], "second");
    assert_eq!(resumed["cursor"], second.to_string());
    let (mut again, mut again_seen) = open_sse(
        addr,
        "/sse/me",
        &format!("{SESSION_LINE}Last-Event-ID: {id}\r\n"),
    )
    .await;
    read_until(&mut again, &mut again_seen, "data: second\n").await;
    assert!(!again_seen.contains("hello 42"), "{again_seen}");
    // Someone else's `me` is another channel.
    let other = get(
        addr,
        "/poll/me?since=earliest",
        &[("cookie", "session=valid-7")],
    )
    .await;
    assert!(other.json()["messages"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn a_denied_command_is_an_error_reply_and_the_socket_stays_open() {
    let asked = Asked::default();
    let server = serving::start(config(&asked), ServeConfig::default()).await;
    let mut ws = ws_support::open(
        server.addr,
        "/ws",
        &[SESSION, ("sec-websocket-protocol", "push.v1")],
    )
    .await
    .unwrap();
    for (command, code) in [
        (
            r#"{"op":"subscribe","channel":"secret","ref":1}"#,
            "secret_channel",
        ),
        (
            r#"{"op":"publish","channel":"news","data":"x","ref":2}"#,
            "forbidden",
        ),
    ] {
        ws.send(Message::text(command)).await.unwrap();
        let reply = ws_support::next_json(&mut ws).await;
        assert_eq!(
            (&reply["op"], &reply["code"]),
            (&"error".into(), &code.into()),
            "{reply}"
        );
    }
    // Still open: an allowed subscribe, and a publish mapped to user:42
    // that comes back to it.
    ws.send(Message::text(
        r#"{"op":"subscribe","channel":"me","ref":3}"#,
    ))
    .await
    .unwrap();
    let ack = ws_support::next_json(&mut ws).await;
    assert_eq!(
        (&ack["ref"], &ack["channel"]),
        (&3.into(), &"user:42".into())
    );
    ws.send(Message::text(
        r#"{"op":"publish","channel":"me","data":"mine","ref":4}"#,
    ))
    .await
    .unwrap();
    let mut frames = [
        ws_support::next_json(&mut ws).await,
        ws_support::next_json(&mut ws).await,
    ];
    frames.sort_by_key(|frame| frame["op"].is_string());
    let (message, ack) = (&frames[0], &frames[1]);
    assert_eq!(
        (&ack["op"], &ack["ref"], &ack["channel"]),
        (&"ack".into(), &4.into(), &"user:42".into())
    );
    assert_eq!(
        (&message["channel"], &message["data"]),
        (&"user:42".into(), &"mine".into())
    );
    assert_eq!(ack["id"], message["id"]);
    // The hook saw each command once, with the handshake's peer.
    let asked = asked.lock().unwrap();
    let seen: Vec<(&str, Action)> = asked.iter().map(|(_, c, a)| (c.as_str(), *a)).collect();
    assert_eq!(
        seen,
        [
            ("secret", Action::Subscribe),
            ("news", Action::Publish),
            ("me", Action::Subscribe),
            ("me", Action::Publish)
        ]
    );
    assert!(asked.iter().all(|(peer, ..)| peer.is_some()));
}

#[tokio::test]
async fn without_a_session_a_command_socket_opens_and_every_command_is_refused() {
    let asked = Asked::default();
    let server = serving::start(config(&asked), ServeConfig::default()).await;
    let mut ws = ws_support::open(server.addr, "/ws", &[("sec-websocket-protocol", "push.v1")])
        .await
        .unwrap();
    for round in 0..2 {
        ws.send(Message::text(r#"{"op":"subscribe","channel":"news"}"#))
            .await
            .unwrap();
        let reply = ws_support::next_json(&mut ws).await;
        assert_eq!(reply["code"], "unauthorized", "round {round}");
    }
}
