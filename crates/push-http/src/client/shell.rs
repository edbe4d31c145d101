//! The thin HTTP shell around [`Resume`]: checking a URL, sending requests
//! through hyper-util's pooled client, reading bounded bodies, and the
//! request/answer loop of the polling clients.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::TokioExecutor;
use push_core::Item;
use tokio::time::{Sleep, sleep};

use super::{HttpOptions, Resume};
use crate::ClientError;

/// A boxed, sendable future: what the shell keeps in flight.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

type SendFn = dyn Fn(Request<Full<Bytes>>) -> BoxFuture<Result<Response<Incoming>, ClientError>>
    + Send
    + Sync;

/// Sends a client's requests: hyper-util's pooled HTTP/1.1 client (with
/// rustls for `https://` under the `rustls` feature), or one you built (for
/// a proxy, or a pool shared by several clients).
#[derive(Clone)]
pub struct Sender(Arc<SendFn>);

impl Sender {
    /// Over a pooled HTTP/1.1 client of its own, with the TLS settings of
    /// `options` when the `rustls` feature is on.
    ///
    /// # Errors
    /// [`ClientError::Request`] when the TLS configuration cannot be built.
    pub fn new(options: &HttpOptions) -> Result<Self, ClientError> {
        let builder = Client::builder(TokioExecutor::new());
        #[cfg(feature = "rustls")]
        {
            let mut http = HttpConnector::new();
            http.enforce_http(false);
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config((*options.tls_config()?).clone())
                .https_or_http()
                .enable_http1()
                .wrap_connector(http);
            Ok(Self::with_client(builder.build(https)))
        }
        #[cfg(not(feature = "rustls"))]
        {
            let _ = options;
            Ok(Self::with_client(builder.build(HttpConnector::new())))
        }
    }

    /// Through `client`.
    pub fn with_client<C>(client: Client<C, Full<Bytes>>) -> Self
    where
        C: Connect + Clone + Send + Sync + 'static,
    {
        Sender(Arc::new(move |request| {
            let response = client.request(request);
            Box::pin(async move { response.await.map_err(ClientError::request) })
        }))
    }

    /// Sends `request`; the answer's head, its body still to read.
    pub fn send(
        &self,
        request: Request<Full<Bytes>>,
    ) -> BoxFuture<Result<Response<Incoming>, ClientError>> {
        (self.0)(request)
    }
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sender")
    }
}

/// `url` as a URI the clients can use: `http://` or `https://` (with the
/// `rustls` feature) and a host.
///
/// # Errors
/// [`ClientError::InvalidUrl`] otherwise; for `https://` in a build without
/// the `rustls` feature, saying so.
pub fn parse_url(url: &str) -> Result<Uri, ClientError> {
    let invalid = |reason| ClientError::InvalidUrl {
        url: url.to_owned(),
        reason,
    };
    let parsed: Uri = url.parse().map_err(|_| invalid("not a URL"))?;
    if parsed.host().is_none() {
        return Err(invalid("it needs a scheme and a host"));
    }
    match parsed.scheme_str() {
        Some("http") => Ok(parsed),
        Some("https") if cfg!(feature = "rustls") => Ok(parsed),
        Some("https") => Err(invalid(
            "https:// needs TLS, which this build leaves out: enable the `rustls` feature",
        )),
        Some(_) => Err(invalid("it needs the http:// or https:// scheme")),
        None => Err(invalid("it needs a scheme and a host")),
    }
}

/// `url` with `params` added to its query (see
/// [`path_with_params`](crate::path_with_params)).
///
/// # Errors
/// [`ClientError::InvalidUrl`] when the result is not a URI.
pub fn with_params(url: &Uri, params: &[(&str, &str)]) -> Result<Uri, ClientError> {
    let target = crate::path_with_params(url.path(), url.query(), params);
    let mut parts = url.clone().into_parts();
    parts.path_and_query = target.parse().ok();
    Uri::from_parts(parts).map_err(|_| ClientError::InvalidUrl {
        url: url.to_string(),
        reason: "the query cannot be extended",
    })
}

/// The whole of `body`, at most `max` bytes.
///
/// # Errors
/// [`ClientError::Request`] when it breaks off or is longer.
pub async fn read_body(body: Incoming, max: usize) -> Result<Bytes, ClientError> {
    let collected = Limited::new(body, max)
        .collect()
        .await
        .map_err(ClientError::Request)?;
    Ok(collected.to_bytes())
}

/// `exchange`, given up after `timeout` ([`ClientError::Timeout`]).
///
/// # Errors
/// The exchange's own, or the timeout.
pub async fn within<T>(
    timeout: Duration,
    exchange: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ClientError::Timeout(timeout))?
}

/// One request/answer client's own part (short polling, long polling): how
/// it asks, and what it makes of an answer. [`Polling`] does the rest.
pub trait Exchange: Unpin {
    /// What one request brings back.
    type Answer;

    /// The next request, from where `resume` says to start.
    fn request(&self, resume: &Resume) -> BoxFuture<Result<Self::Answer, ClientError>>;

    /// Takes in `answer` (into `resume`); the wait before the next request,
    /// `None` to ask again at once.
    fn answered(&mut self, resume: &mut Resume, answer: Self::Answer) -> Option<Duration>;
}

enum State<A> {
    Ready,
    Waiting(Pin<Box<Sleep>>),
    Requesting(BoxFuture<Result<A, ClientError>>),
    Done,
}

/// The loop of a client that asks again and again: hand out what was
/// taken in, ask, take in the answer, wait as the exchange says; on an
/// error hand it out, back off and ask again, or stop for good when it is
/// fatal ([`ClientError::is_fatal`]).
pub struct Polling<E: Exchange> {
    exchange: E,
    resume: Resume,
    state: State<E::Answer>,
}

impl<E: Exchange> Polling<E> {
    /// Asks with `exchange`, from the state `resume`.
    pub fn new(exchange: E, resume: Resume) -> Self {
        Polling {
            exchange,
            resume,
            state: State::Ready,
        }
    }

    /// Asks with `exchange` from `resume` at once, and takes in the answer
    /// before returning: a live start is pinned to the channel's head now,
    /// so that everything published from here on is delivered. When that
    /// first request fails in passing (a network error, a `5xx`), the
    /// client is returned all the same: it hands out the error first, backs
    /// off and asks again, and the first answer pins the start.
    ///
    /// # Errors
    /// A fatal error of the first request ([`ClientError::is_fatal`]: a bad
    /// URL or header, a refusal such as `400` or `401`).
    pub async fn connect(exchange: E, resume: Resume) -> Result<Self, ClientError> {
        let mut polling = Polling::new(exchange, resume);
        match polling.exchange.request(&polling.resume).await {
            Ok(answer) => polling.take(answer),
            Err(err) if err.is_fatal() => return Err(err),
            Err(err) => {
                polling.resume.take_error(err);
                polling.state = State::Waiting(Box::pin(sleep(polling.resume.retry_delay())));
            }
        }
        Ok(polling)
    }

    /// Takes in `answer`; the next request waits as the exchange says.
    fn take(&mut self, answer: E::Answer) {
        self.state = match self.exchange.answered(&mut self.resume, answer) {
            None => State::Ready,
            Some(delay) => State::Waiting(Box::pin(sleep(delay))),
        };
    }

    /// The client's own part.
    pub fn exchange(&self) -> &E {
        &self.exchange
    }

    /// The state between requests.
    pub fn resume(&self) -> &Resume {
        &self.resume
    }

    /// The next item or error, as a `Stream` hands it out.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Item, ClientError>>> {
        loop {
            if let Some(next) = self.resume.next_item() {
                return Poll::Ready(Some(next));
            }
            match &mut self.state {
                State::Done => return Poll::Ready(None),
                State::Ready => self.state = State::Requesting(self.exchange.request(&self.resume)),
                State::Waiting(sleeping) => {
                    ready!(sleeping.as_mut().poll(cx));
                    self.state = State::Ready;
                }
                State::Requesting(request) => match ready!(request.as_mut().poll(cx)) {
                    Ok(answer) => self.take(answer),
                    Err(err) => {
                        self.state = if err.is_fatal() {
                            State::Done
                        } else {
                            State::Waiting(Box::pin(sleep(self.resume.retry_delay())))
                        };
                        return Poll::Ready(Some(Err(err)));
                    }
                },
            }
        }
    }
}

impl<E: Exchange> Polling<E> {
    /// Writes the client's `Debug`: `name { url, start, yielded, buffered, .. }`.
    ///
    /// # Errors
    /// The formatter's.
    pub fn debug(&self, f: &mut fmt::Formatter<'_>, name: &str, url: &Uri) -> fmt::Result {
        f.debug_struct(name)
            .field("url", url)
            .field("start", &self.resume.start())
            .field("yielded", &self.resume.cursor())
            .field("buffered", &self.resume.buffered())
            .finish_non_exhaustive()
    }
}

impl<E: Exchange> fmt::Debug for Polling<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Polling")
            .field("start", &self.resume.start())
            .field("yielded", &self.resume.cursor())
            .field("buffered", &self.resume.buffered())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use push_core::{Backoff, Batch, Cursor, Start};

    use super::*;

    /// Answers from a script, recording where each request started.
    struct Scripted {
        answers: Arc<Mutex<VecDeque<Result<Cursor, ClientError>>>>,
        asked: Arc<Mutex<Vec<Start>>>,
    }

    impl Exchange for Scripted {
        type Answer = Cursor;

        fn request(&self, resume: &Resume) -> BoxFuture<Result<Cursor, ClientError>> {
            self.asked.lock().unwrap().push(resume.start());
            let answer = self.answers.lock().unwrap().pop_front();
            Box::pin(async move {
                answer.unwrap_or(Err(ClientError::InvalidUrl {
                    url: String::new(),
                    reason: "done",
                }))
            })
        }

        fn answered(&mut self, resume: &mut Resume, cursor: Cursor) -> Option<Duration> {
            resume.succeeded();
            resume.take_batch(Batch::new(None, Vec::new(), cursor, false));
            None
        }
    }

    #[tokio::test(start_paused = true)]
    async fn answers_move_the_start_errors_back_off_and_a_fatal_one_ends() {
        let cursor = |text: &str| text.parse::<Cursor>().unwrap();
        let answers = VecDeque::from([
            Ok(cursor("a.1")),
            Err(ClientError::Timeout(Duration::from_secs(1))),
            Ok(cursor("a.2")),
        ]);
        let asked = Arc::new(Mutex::new(Vec::new()));
        let exchange = Scripted {
            answers: Arc::new(Mutex::new(answers)),
            asked: asked.clone(),
        };
        let backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(10));
        let mut polling = Polling::new(exchange, Resume::new(Start::Live, backoff));
        let mut next = async || std::future::poll_fn(|cx| polling.poll_next(cx)).await;
        assert!(matches!(next().await, Some(Err(ClientError::Timeout(_)))));
        assert!(matches!(
            next().await,
            Some(Err(ClientError::InvalidUrl { .. }))
        ));
        assert!(next().await.is_none());
        assert_eq!(
            *asked.lock().unwrap(),
            [
                Start::Live,
                Start::After(cursor("a.1")),
                Start::After(cursor("a.1")),
                Start::After(cursor("a.2")),
            ]
        );
    }

    #[test]
    fn urls_need_a_scheme_and_a_host() {
        assert!(parse_url("http://h:1/poll/a").is_ok());
        assert_eq!(
            parse_url("https://h/poll/a").is_ok(),
            cfg!(feature = "rustls")
        );
        for bad in ["/poll/a", "h:1/poll/a", "not a url", "ftp://h/poll/a"] {
            assert!(
                matches!(parse_url(bad), Err(ClientError::InvalidUrl { .. })),
                "{bad}"
            );
        }
        let url = parse_url("http://h/poll/a?token=t").unwrap();
        assert_eq!(
            with_params(&url, &[("since", "1.2")]).unwrap(),
            "http://h/poll/a?token=t&since=1.2"
        );
    }
}
