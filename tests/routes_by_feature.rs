//! The router serves exactly the transports whose features are on: `cargo
//! xtask test` runs this with each transport's feature alone, and with all.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use http::StatusCode;
use push_live::{MemoryHub, Router, RouterConfig, ServeConfig};
use support::get;

#[tokio::test]
async fn routes_follow_the_features() {
    let router = Router::new(MemoryHub::new(), RouterConfig::default());
    let listener = push_live::bind("127.0.0.1:0".parse().unwrap(), 128).unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = router.shutdown();
    tokio::spawn(push_live::serve(
        listener,
        router,
        shutdown.clone(),
        ServeConfig::default(),
        None,
    ));
    let routes = [
        ("/poll/news", cfg!(feature = "poll"), StatusCode::OK),
        (
            "/longpoll/news?timeout=0",
            cfg!(feature = "longpoll"),
            StatusCode::NO_CONTENT,
        ),
        // Not a WebSocket handshake: the handler says so.
        (
            "/ws/news",
            cfg!(feature = "ws"),
            StatusCode::UPGRADE_REQUIRED,
        ),
    ];
    for (path, served, status) in routes {
        let answer = get(addr, path, &[]).await;
        let expected = if served {
            status
        } else {
            StatusCode::NOT_FOUND
        };
        assert_eq!(answer.status, expected, "{path}");
    }
    // An event stream never ends by itself: its head is enough.
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get(format!("http://{addr}/sse/news"))
        .header(http::header::HOST, addr.to_string())
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let expected = if cfg!(feature = "sse") {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    assert_eq!(response.status(), expected);
    shutdown.trigger();
}
