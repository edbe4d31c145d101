//! A `Router` behind a gate, for the clients' tests: it records every
//! request's path and headers, refuses (`401`) a request without the header
//! it is told to want, and can fail the next publishes in scripted ways
//! (a `503` before or after storing, a status), as a flaky network or
//! backend would. Included with `#[path = "support/gate.rs"] mod gate;`.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use http::{HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;
use push_live::{Hub, MemoryHub, Router, RouterBody};
use tokio::sync::Notify;

/// The router's answer body over a memory hub.
pub type Body = RouterBody<<MemoryHub as Hub>::Subscription>;

/// What the gate does to the next publish.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer `status` with `body` without passing it on.
    Refuse(u16, &'static str),
    /// Pass it on (it is stored), then answer `status` with `body`: an
    /// answer lost after the fact.
    StoreThenRefuse(u16, &'static str),
}

/// One request the gate saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: http::Method,
    pub path: String,
    pub headers: HeaderMap,
}

#[derive(Clone)]
pub struct Gate {
    router: Router<MemoryHub>,
    want: Option<(&'static str, &'static str)>,
    faults: Arc<Mutex<VecDeque<Fault>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    changed: Arc<Notify>,
}

impl Gate {
    /// In front of `router`; with `want`, only requests carrying that
    /// header (name, value) get through.
    pub fn new(router: Router<MemoryHub>, want: Option<(&'static str, &'static str)>) -> Self {
        Gate {
            router,
            want,
            faults: Arc::default(),
            seen: Arc::default(),
            changed: Arc::default(),
        }
    }

    /// Fails the next publishes, in order.
    pub fn fault(&self, fault: Fault) {
        self.faults.lock().unwrap().push_back(fault);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The requests seen whose path starts with `prefix`.
    pub fn seen_at(&self, prefix: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.path.starts_with(prefix))
            .collect()
    }

    /// Waits until `n` requests to paths starting with `prefix` were seen.
    pub async fn wait_for(&self, prefix: &str, n: usize) -> Vec<Seen> {
        crate::support::within("requests", async {
            loop {
                let notified = self.changed.notified();
                let seen = self.seen_at(prefix);
                if seen.len() >= n {
                    return seen;
                }
                notified.await;
            }
        })
        .await
    }
}

fn answer(status: u16, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from_bytes(body));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    response
}

impl hyper::service::Service<Request<Incoming>> for Gate {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        self.seen.lock().unwrap().push(Seen {
            method: request.method().clone(),
            path: request.uri().path().to_owned(),
            headers: request.headers().clone(),
        });
        self.changed.notify_waiters();
        if let Some((name, value)) = self.want
            && request.headers().get(name).and_then(|v| v.to_str().ok()) != Some(value)
        {
            let refused = r#"{"error":{"code":"unauthorized","message":"no token"}}"#;
            return Box::pin(async move { Ok(answer(401, refused)) });
        }
        let fault = if request.method() == http::Method::POST {
            self.faults.lock().unwrap().pop_front()
        } else {
            None
        };
        let router = self.router.clone();
        Box::pin(async move {
            match fault {
                None => Ok(router.handle(request).await),
                Some(Fault::Refuse(status, body)) => Ok(answer(status, body)),
                Some(Fault::StoreThenRefuse(status, body)) => {
                    let stored = router.handle(request).await;
                    assert_eq!(stored.status(), StatusCode::OK);
                    Ok(answer(status, body))
                }
            }
        })
    }
}
