//! What one subscriber may do, for servers with their own authorisation.

use std::sync::Arc;

use http::request::Parts;
use push_core::ChannelName;
use tokio::time::Instant;

use crate::authorize::{Action, Authorize, Check};

/// A rule on channels: may this connection subscribe (or publish) to it?
pub type ChannelRule = Arc<dyn Fn(&ChannelName) -> bool + Send + Sync>;

/// What one connection may do, for a server with its own authorisation.
/// The default allows everything the handler's configuration allows, for as
/// long as the connection lives.
///
/// An event stream ends at the deadline (with a `retry:` hint); a WebSocket
/// is closed with 1008 then, and on the command endpoint subscribes and
/// publishes only where the rules allow. The [`authorize`](Self::authorize)
/// hook is asked by every technique alike, once the channel is read and
/// before the hub is touched (see [`Authorize`]).
///
/// ```
/// use std::sync::Arc;
/// use push_http::Access;
///
/// let access = Access::default().subscribing(Arc::new(|channel| channel.as_str().starts_with("public.")));
/// assert!(access.deadline.is_none());
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct Access {
    /// The connection ends at this instant: no message is written to it
    /// after it.
    pub deadline: Option<Instant>,
    /// Channels a WebSocket command socket may subscribe to (default: any).
    pub subscribe: Option<ChannelRule>,
    /// Channels a WebSocket command socket may publish to, when its
    /// configuration allows publishing at all (default: any).
    pub publish: Option<ChannelRule>,
    /// The app's hook, asked on every subscribe and publish this request
    /// (or, on the command endpoint, each of its commands) makes: it
    /// allows, denies or maps the channel. On the command endpoint it is
    /// asked after the rules above allowed the channel as named.
    pub authorize: Option<Arc<dyn Authorize>>,
    /// Who the subscriber is, for presence (`GET /presence/{channel}`,
    /// joins and leaves): a token's `sub`, a session's user. `None`:
    /// anonymous, counted but not named.
    pub user: Option<Arc<str>>,
}

impl Access {
    /// Sets [`deadline`](Self::deadline).
    #[must_use]
    pub fn until(mut self, deadline: Option<Instant>) -> Self {
        self.deadline = deadline;
        self
    }

    /// Sets [`subscribe`](Self::subscribe).
    #[must_use]
    pub fn subscribing(mut self, rule: ChannelRule) -> Self {
        self.subscribe = Some(rule);
        self
    }

    /// Sets [`publish`](Self::publish).
    #[must_use]
    pub fn publishing(mut self, rule: ChannelRule) -> Self {
        self.publish = Some(rule);
        self
    }

    /// Sets [`user`](Self::user).
    #[must_use]
    pub fn as_user(mut self, user: impl Into<Arc<str>>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Sets [`authorize`](Self::authorize).
    #[must_use]
    pub fn authorizing(mut self, hook: Arc<dyn Authorize>) -> Self {
        self.authorize = Some(hook);
        self
    }

    /// Asks the [`authorize`](Self::authorize) hook whether the request
    /// `parts` may do `action` on `channel`: what every transport does once
    /// it has read the channel, before it touches the hub. Without a hook
    /// the check is ready at once, and allocates nothing.
    pub fn check(&self, parts: &Parts, channel: &ChannelName, action: Action) -> Check {
        Check::new(self.authorize.as_ref(), parts, channel, action)
    }

    /// `true` when it limits anything: a deadline, a rule or a hook.
    pub fn is_limited(&self) -> bool {
        self.deadline.is_some()
            || self.subscribe.is_some()
            || self.publish.is_some()
            || self.authorize.is_some()
    }
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("deadline", &self.deadline)
            .field("subscribe", &self.subscribe.as_ref().map(|_| "rule"))
            .field("publish", &self.publish.as_ref().map(|_| "rule"))
            .field("authorize", &self.authorize)
            .field("user", &self.user)
            .finish()
    }
}
