//! The app's say on every subscribe and publish: one async hook, asked the
//! same way by every technique, after the channel is located and before the
//! hub is touched.

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::request::Parts;
use http::{Response, StatusCode};
use push_core::ChannelName;

/// What a request asks to do on a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Read it: a poll, a long poll, an event stream, a WebSocket on
    /// `/ws/{channel}`, or a `push.v1` `subscribe` command.
    Subscribe,
    /// Write to it: `POST /pub/{channel}` or a `push.v1` `publish` command.
    Publish,
}

impl Action {
    /// Its name on the wire: `subscribe` or `publish`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Subscribe => "subscribe",
            Action::Publish => "publish",
        }
    }
}

/// A refusal: the status an HTTP request is answered with, and the code and
/// message of push's JSON error body (`{"error":{"code":…,"message":…}}`) or
/// of a `push.v1` command's error frame.
///
/// ```
/// use http::StatusCode;
/// use push_http::Denial;
///
/// let denial = Denial::new(StatusCode::UNAUTHORIZED, "login_required", "log in first");
/// assert_eq!(denial.status, 401);
/// assert_eq!(Denial::forbidden().code, "forbidden");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Denial {
    /// The HTTP status (a `push.v1` error frame carries no status).
    pub status: StatusCode,
    /// The error code, e.g. `forbidden`.
    pub code: Cow<'static, str>,
    /// A sentence for people.
    pub message: Cow<'static, str>,
}

impl Denial {
    /// A refusal with `status`, `code` and `message`.
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Denial {
            status,
            code: code.into(),
            message: message.into(),
        }
    }

    /// `403 forbidden`: who asked is known, and may not do this.
    pub fn forbidden() -> Self {
        Denial::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "not allowed on this channel",
        )
    }

    /// `401 unauthorized`: who asked is not known (no session, or an
    /// expired one).
    pub fn unauthorized() -> Self {
        Denial::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "authentication required",
        )
    }

    /// The HTTP answer: its status and push's JSON error body.
    pub fn respond<B: From<Bytes>>(&self) -> Response<B> {
        crate::error(self.status, &self.code, &self.message)
    }
}

/// What the app decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead, on the channel asked for.
    Allow,
    /// Refuse: an HTTP request gets the denial's status and JSON error; a
    /// `push.v1` command gets an error frame, and its socket stays open.
    Deny(Denial),
    /// Go ahead on this channel instead (`me` → `user:42`): the hub sees
    /// only this name, and so do messages, acknowledgements and cursors
    /// (docs/protocol.md, "Authorization").
    Map(ChannelName),
}

/// The future of a decision: boxed, and owning what it needs (`'static`),
/// so that a held request or an open stream keeps none of its headers.
pub type Deciding = Pin<Box<dyn Future<Output = Decision> + Send>>;

/// The app's hook, asked once per subscribing request, per `POST /pub`, and
/// per `push.v1` `subscribe` or `publish` command, after the channel has
/// been read and before the hub is touched.
///
/// `parts` is the request's head: method, URI, headers (cookies included)
/// and extensions, where [`push_live::serve`] puts the peer's
/// `SocketAddr` (read it with [`peer`]). On a `push.v1` socket it is the
/// handshake's head, for every command. `channel` is the name as the client
/// wrote it.
///
/// Object safe, for `Arc<dyn Authorize>`; any
/// `Fn(&Parts, &ChannelName, Action) -> impl Future<Output = Decision>` is
/// one. The future must own what it reads (clone a cookie out of `parts`
/// before the `async` block): it outlives the request's head.
///
/// [`push_live::serve`]: https://docs.rs/push-live/latest/push_live/fn.serve.html
///
/// ```
/// use std::sync::Arc;
/// use http::request::Parts;
/// use push_core::ChannelName;
/// use push_http::{Action, Authorize, Decision, Denial};
///
/// // A session cookie names the user; `me` is that user's own channel.
/// let hook = |parts: &Parts, channel: &ChannelName, _action: Action| {
///     let user = parts
///         .headers
///         .get(http::header::COOKIE)
///         .and_then(|value| value.to_str().ok())
///         .and_then(|cookies| cookies.split("; ").find_map(|c| c.strip_prefix("session=")))
///         .map(str::to_owned);
///     let channel = channel.clone();
///     async move {
///         match user {
///             None => Decision::Deny(Denial::unauthorized()),
///             Some(user) if channel.as_str() == "me" => match format!("user:{user}").parse() {
///                 Ok(mapped) => Decision::Map(mapped),
///                 Err(_) => Decision::Deny(Denial::forbidden()),
///             },
///             Some(_) => Decision::Allow,
///         }
///     }
/// };
/// let hook: Arc<dyn Authorize> = Arc::new(hook);
/// # let _ = hook;
/// ```
pub trait Authorize: Send + Sync + 'static {
    /// Decides whether the request `parts` may do `action` on `channel`.
    fn authorize(&self, parts: &Parts, channel: &ChannelName, action: Action) -> Deciding;
}

impl<F, Fut> Authorize for F
where
    F: Fn(&Parts, &ChannelName, Action) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Decision> + Send + 'static,
{
    fn authorize(&self, parts: &Parts, channel: &ChannelName, action: Action) -> Deciding {
        Box::pin(self(parts, channel, action))
    }
}

impl std::fmt::Debug for dyn Authorize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authorize")
    }
}

/// The peer's address, when the server that accepted the connection put it
/// in the request's extensions (as [`push_live::serve`] does).
///
/// [`push_live::serve`]: https://docs.rs/push-live/latest/push_live/fn.serve.html
///
/// ```
/// let (mut parts, ()) = http::Request::get("/sse/news").body(()).unwrap().into_parts();
/// assert_eq!(push_http::peer(&parts), None);
/// parts.extensions.insert(std::net::SocketAddr::from(([127, 0, 0, 1], 4000)));
/// assert_eq!(push_http::peer(&parts).unwrap().port(), 4000);
/// ```
pub fn peer(parts: &Parts) -> Option<SocketAddr> {
    parts.extensions.get::<SocketAddr>().copied()
}

/// The check of one request or command: ready at once when there is no
/// hook (nothing allocated), else the hook's decision. Its output is the
/// channel to use instead of the one asked for (`Some` only when the app
/// mapped it), or the denial.
#[must_use = "a check does nothing unless awaited"]
pub struct Check(Option<Deciding>);

impl Check {
    /// A check with no hook: allowed, as asked.
    pub fn allowed() -> Check {
        Check(None)
    }

    /// Asks `hook`, if there is one.
    pub fn new(
        hook: Option<&std::sync::Arc<dyn Authorize>>,
        parts: &Parts,
        channel: &ChannelName,
        action: Action,
    ) -> Check {
        Check(hook.map(|hook| hook.authorize(parts, channel, action)))
    }
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Check(asking)"
        } else {
            "Check(allowed)"
        })
    }
}

impl Future for Check {
    type Output = Result<Option<ChannelName>, Denial>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(deciding) = self.0.as_mut() else {
            return Poll::Ready(Ok(None));
        };
        let decision = std::task::ready!(deciding.as_mut().poll(cx));
        self.0 = None;
        Poll::Ready(match decision {
            Decision::Allow => Ok(None),
            Decision::Map(channel) => Ok(Some(channel)),
            Decision::Deny(denial) => Err(denial),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn parts(cookie: Option<&str>) -> Parts {
        let mut request = http::Request::get("/sse/me");
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[tokio::test]
    async fn a_closure_allows_denies_and_maps() {
        let hook: Arc<dyn Authorize> =
            Arc::new(|parts: &Parts, channel: &ChannelName, action: Action| {
                let known = parts.headers.contains_key("cookie");
                let me = channel.as_str() == "me";
                async move {
                    match (known, me, action) {
                        (false, _, _) => Decision::Deny(Denial::unauthorized()),
                        (true, _, Action::Publish) => Decision::Deny(Denial::forbidden()),
                        (true, true, _) => Decision::Map("user:42".parse().unwrap()),
                        (true, false, _) => Decision::Allow,
                    }
                }
            });
        let me: ChannelName = "me".parse().unwrap();
        let news: ChannelName = "news".parse().unwrap();
        let ask =
            |cookie, channel, action| Check::new(Some(&hook), &parts(cookie), channel, action);
        assert_eq!(
            ask(None, &me, Action::Subscribe).await.unwrap_err().status,
            401
        );
        assert_eq!(
            ask(Some("s=1"), &news, Action::Publish)
                .await
                .unwrap_err()
                .code,
            "forbidden"
        );
        assert_eq!(
            ask(Some("s=1"), &me, Action::Subscribe)
                .await
                .unwrap()
                .unwrap()
                .as_str(),
            "user:42"
        );
        assert_eq!(ask(Some("s=1"), &news, Action::Subscribe).await, Ok(None));
        assert_eq!(
            Check::new(None, &parts(None), &me, Action::Publish).await,
            Ok(None)
        );
        assert_eq!(format!("{hook:?}"), "Authorize");
    }

    #[tokio::test]
    async fn a_denial_is_push_json() {
        use http_body_util::{BodyExt as _, Full};
        let response: Response<Full<Bytes>> =
            Denial::new(StatusCode::PAYMENT_REQUIRED, "pay", "pay \"first\"").respond();
        assert_eq!(response.status(), 402);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            &body[..],
            br#"{"error":{"code":"pay","message":"pay \"first\""}}"#
        );
    }
}
