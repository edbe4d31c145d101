//! One shape for every transport's handler, and the hyper `Service` it gets
//! from that shape: written once here instead of once per transport.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;

use http::{Request, Response};

use crate::{Access, Head};

/// A transport's server side: it answers a request whose [`Head`] has been
/// read. Implemented by every push handler (polling, long polling, SSE,
/// WebSockets); the facade's router and a server's own authorisation read a
/// request's head once and hand it on through this.
///
/// The future owns what it needs (`'static`): a handler reads what it keeps
/// of the head before it waits, so that a held request or an open stream
/// keeps a few words, not the request.
pub trait Handler: Clone + Send + Sync + 'static {
    /// The body of its answers.
    type Body: Send + 'static;

    /// The longest query string it reads (longer: `400 invalid_query`).
    fn max_query_bytes(&self) -> usize;

    /// Answers the request `head`, within what `access` allows (its
    /// deadline ends a stream or a socket; WebSockets also apply its rules).
    fn serve(
        &self,
        head: Head,
        access: Access,
    ) -> impl Future<Output = Response<Self::Body>> + Send + 'static;
}

/// Answers `request` with `handler`, with no limits of its own: reads the
/// head (the body of a subscribing request is not read) and serves it.
pub fn handle<T: Handler, B>(
    handler: &T,
    request: Request<B>,
) -> impl Future<Output = Response<T::Body>> + Send + 'static {
    handle_with(handler, request, Access::default())
}

/// Answers `request` with `handler` within what `access` allows: its
/// deadline, its rules, and its [`Authorize`](crate::Authorize) hook. How a
/// handler served on its own, without the facade's router, gets the app's
/// hook.
///
/// ```
/// use std::sync::Arc;
/// use push_http::{Access, Decision, Denial};
///
/// let deny_all = Access::default().authorizing(Arc::new(|_: &_, _: &_, _| async {
///     Decision::Deny(Denial::forbidden())
/// }));
/// // push_http::handle_with(&sse_handler, request, deny_all.clone()).await
/// # let _ = deny_all;
/// ```
pub fn handle_with<T: Handler, B>(
    handler: &T,
    request: Request<B>,
    access: Access,
) -> impl Future<Output = Response<T::Body>> + Send + 'static {
    let (parts, _body) = request.into_parts();
    handler.serve(Head::read(parts, handler.max_query_bytes()), access)
}

/// The future of a handler's `Service::call`: [`handle`]'s, boxed, so that
/// hyper keeps a pointer per connection rather than the whole future.
pub type Call<B> = Pin<Box<dyn Future<Output = Result<Response<B>, Infallible>> + Send>>;

/// What a handler's `Service::call` does (see [`service!`](crate::service)).
pub fn call<T: Handler, B>(handler: &T, request: Request<B>) -> Call<T::Body> {
    let answer = handle(handler, request);
    Box::pin(async move { Ok(answer.await) })
}

/// Makes a transport's handler type a hyper `Service`: `push_http::service!(PollHandler);`
/// for a `PollHandler<H>` that implements [`Handler`] for every `H: Hub`.
/// (A macro, because a blanket `impl Service for every Handler` is not
/// allowed outside hyper.) It also gives the handler `Clone` for every `H`
/// (two `Arc`s cloned, not the hub): the type's fields are `hub: Arc<H>` and
/// `shared: Arc<_>`.
///
/// When the crate that expands it has a feature named `tower` turned on
/// (which must turn on this crate's `tower`), the handler is a
/// `tower::Service` too, always ready, so that axum mounts it in one line
/// (`route_service("/sse/{channel}", sse)`). Its body ignores what it is
/// given: a subscribing request's body is never read.
#[macro_export]
macro_rules! service {
    ($handler:ident) => {
        impl<H> ::core::clone::Clone for $handler<H> {
            fn clone(&self) -> Self {
                $handler {
                    hub: self.hub.clone(),
                    shared: self.shared.clone(),
                }
            }
        }

        impl<H, B> $crate::__private::Service<$crate::__private::Request<B>> for $handler<H>
        where
            H: $crate::__private::Hub,
            B: Send + 'static,
        {
            type Response = $crate::__private::Response<<Self as $crate::Handler>::Body>;
            type Error = ::core::convert::Infallible;
            type Future = $crate::Call<<Self as $crate::Handler>::Body>;

            fn call(&self, request: $crate::__private::Request<B>) -> Self::Future {
                $crate::call(self, request)
            }
        }

        #[cfg(feature = "tower")]
        impl<H, B> $crate::__private::TowerService<$crate::__private::Request<B>> for $handler<H>
        where
            H: $crate::__private::Hub,
            B: Send + 'static,
        {
            type Response = $crate::__private::Response<<Self as $crate::Handler>::Body>;
            type Error = ::core::convert::Infallible;
            type Future = $crate::Call<<Self as $crate::Handler>::Body>;

            fn poll_ready(
                &mut self,
                _: &mut ::core::task::Context<'_>,
            ) -> ::core::task::Poll<::core::result::Result<(), Self::Error>> {
                ::core::task::Poll::Ready(Ok(()))
            }

            fn call(&mut self, request: $crate::__private::Request<B>) -> Self::Future {
                $crate::call(self, request)
            }
        }
    };
}
