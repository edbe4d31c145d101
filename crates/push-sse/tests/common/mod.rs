//! SSE test helpers: an event reader over a real response, and a service
//! wrapper that records `Last-Event-ID` headers and can answer badly on
//! purpose.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Empty, Full};
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::TokioIo;
use push_core::MemoryHub;
use push_sse::{Event, Parser, SseBody, SseHandler};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::support::within;

/// Opens `GET path` with `headers` over a fresh HTTP/1.1 connection.
pub async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response<Incoming> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = Request::get(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    sender
        .send_request(request.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap()
}

/// Reads events from a response body with the spec parser.
pub struct Events {
    body: Incoming,
    pub parser: Parser,
    /// Every byte received, for checks on the raw stream.
    pub raw: Vec<u8>,
}

impl Events {
    pub fn new(response: Response<Incoming>) -> Self {
        assert_eq!(response.status(), StatusCode::OK);
        Events {
            body: response.into_body(),
            parser: Parser::new(),
            raw: Vec::new(),
        }
    }

    /// The next event, or `None` when the stream ends.
    pub async fn next(&mut self) -> Option<Event> {
        within("an event", async {
            loop {
                if let Some(event) = self.parser.next_event() {
                    return Some(event);
                }
                if !self.read_frame().await {
                    return None;
                }
            }
        })
        .await
    }

    /// Reads one frame into the parser; `false` at the end of the stream.
    pub async fn read_frame(&mut self) -> bool {
        match self.body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    self.raw.extend_from_slice(&data);
                    self.parser.feed(&data).unwrap();
                }
                true
            }
            Some(Err(e)) => panic!("the stream broke: {e}"),
            None => false,
        }
    }

    /// The next event, which must be a message: its `(id, event, data)`.
    pub async fn message(&mut self) -> (String, String, String) {
        let event = self.next().await.expect("an event");
        (event.id, event.event, event.data)
    }
}

/// How a [`Gate`] answers the next requests before passing them on.
#[derive(Clone, Debug)]
pub enum Canned {
    Status(StatusCode, &'static str),
    Typed(&'static str),
}

/// Wraps an [`SseHandler`]: records every request's `Last-Event-ID`, and
/// answers the queued canned responses first.
#[derive(Clone)]
pub struct Gate {
    pub handler: SseHandler<MemoryHub>,
    pub seen: Arc<Mutex<Vec<Option<String>>>>,
    pub canned: Arc<Mutex<Vec<Canned>>>,
    pub changed: Arc<Notify>,
}

impl Gate {
    pub fn new(handler: SseHandler<MemoryHub>) -> Self {
        Gate {
            handler,
            seen: Arc::default(),
            canned: Arc::default(),
            changed: Arc::default(),
        }
    }

    pub fn queue(&self, canned: Canned) {
        self.canned.lock().unwrap().push(canned);
    }

    /// Waits until `n` requests came; returns their `Last-Event-ID`s.
    pub async fn wait_for(&self, n: usize) -> Vec<Option<String>> {
        within(&format!("{n} requests"), async {
            loop {
                let notified = self.changed.notified();
                let seen = self.seen.lock().unwrap().clone();
                if seen.len() >= n {
                    return seen;
                }
                notified.await;
            }
        })
        .await
    }
}

type GateBody = Either<SseBody<push_http::Attended<push_core::MemorySubscription>>, Full<Bytes>>;

impl Service<Request<Incoming>> for Gate {
    type Response = Response<GateBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let last = request
            .headers()
            .get("last-event-id")
            .map(|v| v.to_str().unwrap().to_owned());
        self.seen.lock().unwrap().push(last);
        self.changed.notify_waiters();
        let canned = {
            let mut queue = self.canned.lock().unwrap();
            (!queue.is_empty()).then(|| queue.remove(0))
        };
        let handler = self.handler.clone();
        Box::pin(async move {
            let response = match canned {
                None => handler.handle(request).await.map(Either::Left),
                Some(Canned::Status(status, body)) => {
                    let mut response = Response::new(Either::Right(Full::new(Bytes::from(body))));
                    *response.status_mut() = status;
                    response
                }
                Some(Canned::Typed(content_type)) => {
                    let mut response =
                        Response::new(Either::Right(Full::new(Bytes::from_static(b"data: x\n\n"))));
                    response
                        .headers_mut()
                        .insert("content-type", content_type.parse().unwrap());
                    response
                }
            };
            Ok(response)
        })
    }
}
