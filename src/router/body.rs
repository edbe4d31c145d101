//! The body of a router's answers: a whole one, or an event stream.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper::body::{Body, Frame, SizeHint};

/// The body of a [`Router`](crate::Router) answer: a whole one, or an event
/// stream. (Named for the router, so as not to be read as hyper's `Body`
/// trait, which it implements.)
///
/// ```
/// use hyper::body::Body as _;
/// use push_live::{MemorySubscription, RouterBody};
///
/// let body = RouterBody::<MemorySubscription>::from_bytes("ok");
/// assert_eq!(body.size_hint().exact(), Some(2));
/// ```
#[derive(Debug)]
pub struct RouterBody<S> {
    inner: Inner<S>,
}

#[derive(Debug)]
enum Inner<S> {
    Full(Full<Bytes>),
    #[cfg(feature = "sse")]
    Sse(Pin<Box<push_sse::SseBody<push_http::Attended<S>>>>),
    #[cfg(not(feature = "sse"))]
    #[allow(dead_code, reason = "names S when no event stream can be served")]
    Never(Infallible, std::marker::PhantomData<fn() -> S>),
}

impl<S> RouterBody<S> {
    /// A whole answer's body in a router's answer.
    pub(crate) fn full(response: Response<Full<Bytes>>) -> Response<Self> {
        response.map(|body| RouterBody {
            inner: Inner::Full(body),
        })
    }

    /// An event stream's answer as a router's answer.
    #[cfg(feature = "sse")]
    pub(crate) fn sse(
        response: Response<push_sse::SseBody<push_http::Attended<S>>>,
    ) -> Response<Self> {
        response.map(|body| RouterBody {
            inner: Inner::Sse(Box::pin(body)),
        })
    }

    /// A whole body holding `bytes`, for answers of your own next to the
    /// router's.
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Self {
        RouterBody {
            inner: Inner::Full(Full::new(bytes.into())),
        }
    }
}

/// A whole body holding these bytes.
impl<S> From<Bytes> for RouterBody<S> {
    fn from(bytes: Bytes) -> Self {
        RouterBody::from_bytes(bytes)
    }
}

impl<S: futures_core::Stream<Item = push_core::Item> + Unpin> Body for RouterBody<S> {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut self.get_mut().inner {
            Inner::Full(full) => Pin::new(full).poll_frame(cx),
            #[cfg(feature = "sse")]
            Inner::Sse(sse) => sse.as_mut().poll_frame(cx),
            #[cfg(not(feature = "sse"))]
            Inner::Never(never, _) => match *never {},
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(full) => full.is_end_stream(),
            #[cfg(feature = "sse")]
            Inner::Sse(sse) => sse.is_end_stream(),
            #[cfg(not(feature = "sse"))]
            Inner::Never(never, _) => match *never {},
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(full) => full.size_hint(),
            #[cfg(feature = "sse")]
            Inner::Sse(sse) => sse.size_hint(),
            #[cfg(not(feature = "sse"))]
            Inner::Never(never, _) => match *never {},
        }
    }
}
