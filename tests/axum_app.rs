//! The axum example (examples/axum_app.rs) driven over real TCP: push
//! mounted with `nest_service` behind the app's session check, a form
//! handler's publish reaching an event stream and a WebSocket, push.js from
//! the facade, and a graceful shutdown under `axum::serve` that ends every
//! stream and socket cleanly and lets `axum::serve` return.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/axum_app.rs"]
mod axum_app;
mod support;
#[path = "support/ws.rs"]
mod ws_support;

use std::time::Instant;

use http::StatusCode;
use push_live::http::Technique;
use push_live::{MemoryHub, RouterConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::axum_app::Sessions;
use crate::support::{get, open_sse, read_to_end, read_until, request, until, within};
use crate::ws_support::{close_code_to_the_end, next_json};

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

#[tokio::test]
async fn the_axum_app_guards_push_publishes_from_a_form_and_shuts_down_cleanly() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let live = push_live::Router::new(MemoryHub::new(), RouterConfig::default());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(axum_app::serve(
        listener,
        live.clone(),
        Sessions::default(),
        async move {
            let _ = stopped.await;
        },
    ));

    // No session: every technique under /live is refused by the app's check.
    for path in [
        "/live/sse/chat",
        "/live/longpoll/chat",
        "/live/poll/chat",
        "/live/ws",
    ] {
        assert_eq!(
            get(addr, path, &[]).await.status,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
    }
    let forged = [("cookie", "session=0123456789abcdef0123456789abcdef")];
    assert_eq!(
        get(addr, "/live/sse/chat", &forged).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        ws_support::open(addr, "/live/ws/chat", &[]).await.err(),
        Some(StatusCode::UNAUTHORIZED)
    );
    let anonymous = request(addr, "POST", "/say", &[FORM], "text=hi").await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);

    // Log in: the session cookie.
    let login = request(addr, "POST", "/login", &[FORM], "name=ann").await;
    assert_eq!(login.status, StatusCode::SEE_OTHER);
    let cookie = login
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let with_cookie = ("cookie", cookie.as_str());

    // The app's own page, and push.js from the facade.
    let page = get(addr, "/", &[with_cookie]).await;
    assert!(String::from_utf8_lossy(&page.body).contains("url: \"/live\""));
    let script = get(addr, "/push.js", &[]).await;
    assert_eq!(script.status, StatusCode::OK);
    assert_eq!(
        script.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(script.header("etag"), Some(push_live::js::PUSH_JS_ETAG));
    assert_eq!(&script.body[..], push_live::js::PUSH_JS.as_bytes());

    // Subscribers under the prefix: an event stream, a WebSocket, a held
    // long poll. A path push does not know is push's 404, not axum's.
    let (mut sse, mut seen) =
        open_sse(addr, "/live/sse/chat", &format!("cookie: {cookie}\r\n")).await;
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    let mut ws = ws_support::open(addr, "/live/ws/chat", &[with_cookie])
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await["op"], "subscribed");
    let held = {
        let cookie = cookie.clone();
        tokio::spawn(async move {
            get(
                addr,
                "/live/longpoll/chat?timeout=60",
                &[("cookie", &cookie)],
            )
            .await
        })
    };
    until("the long poll to be held", || {
        live.connections(Technique::LongPoll) == 1
    })
    .await;
    let unknown = get(addr, "/live/nowhere/chat", &[with_cookie]).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&unknown.body).contains("not_found"));

    // A form post publishes; both subscribers get it.
    let said = request(
        addr,
        "POST",
        "/say",
        &[FORM, with_cookie],
        "text=hello+there",
    )
    .await;
    assert_eq!(said.status, StatusCode::SEE_OTHER);
    read_until(&mut sse, &mut seen, "data: ann: hello there\n").await;
    let envelope = next_json(&mut ws).await;
    assert_eq!(
        (&envelope["channel"], &envelope["data"]),
        (&"chat".into(), &"ann: hello there".into()),
        "{envelope}"
    );
    // The long poll was answered by the publish; hold another one.
    assert_eq!(
        within("the first long poll", held).await.unwrap().status,
        StatusCode::OK
    );
    let cursor = envelope["id"].as_str().unwrap().to_owned();
    let held = {
        let cookie = cookie.clone();
        tokio::spawn(async move {
            let path = format!("/live/longpoll/chat?since={cursor}&timeout=60");
            get(addr, &path, &[("cookie", &cookie)]).await
        })
    };
    until("another long poll to be held", || {
        live.connections(Technique::LongPoll) == 1
    })
    .await;

    // Shut down: the app's signal, then push's graceful shutdown, then
    // axum's. The stream ends after a retry hint, the socket gets 1001, the
    // held poll is answered at once, and axum::serve returns.
    // (The socket is read first: its close handshake needs the client's
    // answer, and axum closes the stream's connection only after it.)
    stop.send(()).unwrap();
    let stopping = Instant::now();
    assert_eq!(close_code_to_the_end(&mut ws).await, CloseCode::Away);
    let rest = read_to_end(&mut sse).await;
    assert!(rest.ends_with("retry: 3000\n\n\r\n0\r\n\r\n"), "{rest:?}");
    let answer = within("the held long poll", held).await.unwrap();
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert!(answer.header("etag").is_some());
    within("axum::serve to return", server)
        .await
        .unwrap()
        .unwrap();
    // Done when the socket's task was, not when the grace period ran out.
    assert!(
        stopping.elapsed() < axum_app::GRACE,
        "{:?}",
        stopping.elapsed()
    );
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
    assert_eq!(live.connections(Technique::Ws), 0);
}

#[tokio::test]
async fn a_transport_handler_mounts_alone_with_route_service() {
    use push_live::sse::{SseConfig, SseHandler};
    use push_live::{Hub as _, Publication};

    let hub = std::sync::Arc::new(MemoryHub::new());
    let sse: SseHandler<MemoryHub> = SseHandler::new(hub.clone(), SseConfig::default());
    // The channel is the last path segment, wherever the handler is mounted.
    let app: axum::Router = axum::Router::new().route_service("/events/{channel}", sse.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let (mut stream, mut seen) = open_sse(addr, "/events/news", "").await;
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(seen.contains("text/event-stream"), "{seen}");
    until("the stream to be open", || sse.connections() == 1).await;
    hub.publish(&"news".parse().unwrap(), Publication::new("hi"))
        .await
        .unwrap();
    read_until(&mut stream, &mut seen, "data: hi\n").await;
}
