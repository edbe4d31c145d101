//! Presence for the transports: a subscription that counts its subscriber
//! present while it lives, and hands out joins and leaves only to those
//! who asked (`?presence=1`); and the key a poller's lease goes by.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use http::request::Parts;
use push_core::{ChannelName, Error, Hub, Item, Member, Presence, PresenceChange};

use crate::{Access, Technique};

/// How long a poller stays present past the time it may take to come
/// back: its interval (or a long poll's hold) plus this.
pub const PRESENCE_GRACE: Duration = Duration::from_secs(5);

/// A subscription with its subscriber's presence: present while this
/// lives; joins and leaves (ephemeral `push.join` / `push.leave` messages)
/// pass only when [`presence_events`](Self::new) was asked for.
#[derive(Debug)]
pub struct Attended<S> {
    subscription: S,
    _presence: Option<Presence>,
    presence_events: bool,
}

impl<S> Attended<S> {
    /// `subscription`, present as `presence` holds it, with or without the
    /// joins and leaves.
    pub fn new(subscription: S, presence: Option<Presence>, presence_events: bool) -> Self {
        Attended {
            subscription,
            _presence: presence,
            presence_events,
        }
    }

    /// Enters `member` in `channel` on `hub` and attends `subscription`.
    ///
    /// # Errors
    /// What [`Hub::enter`] fails with.
    pub async fn enter<H: Hub>(
        hub: &H,
        channel: &ChannelName,
        member: Member,
        subscription: S,
        presence_events: bool,
    ) -> Result<Self, Error> {
        let presence = hub.enter(channel, member).await?;
        Ok(Attended::new(subscription, Some(presence), presence_events))
    }
}

impl<S: Stream<Item = Item> + Unpin> Stream for Attended<S> {
    type Item = Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        loop {
            let item = std::task::ready!(Pin::new(&mut self.subscription).poll_next(cx));
            match item {
                Some(item) if !self.presence_events && is_presence(&item) => {}
                item => return Poll::Ready(item),
            }
        }
    }
}

/// Whether `item` is a join or a leave.
///
/// ```
/// use std::sync::Arc;
/// use push_core::{Cursor, Item, Message, PresenceChange};
///
/// # let channel: push_core::ChannelName = "c".parse()?; let cursor: Cursor = "1.1".parse()?;
/// let text = Message::new(channel, cursor, None, "hi".into(), push_core::Timestamp::UNIX_EPOCH);
/// assert!(!push_http::is_presence(&Item::Message(Arc::new(text))));
/// # Ok::<(), push_core::Error>(())
/// ```
pub fn is_presence(item: &Item) -> bool {
    matches!(item, Item::Message(message)
        if message.is_ephemeral()
            && message.event().is_some_and(|e| PresenceChange::of_event(e.as_str()).is_some()))
}

/// Who the request is, as `technique`: the access's user, if any.
pub fn member(access: &Access, technique: Technique) -> Member {
    Member::new(access.user.as_deref(), technique.as_str())
}

/// The key of a poller's lease, per technique: its user when known, else
/// its address (without the port: each poll may come on a new connection),
/// else one key for every anonymous poller the server cannot tell apart.
///
/// ```
/// let (parts, ()) = http::Request::get("/poll/news").body(()).unwrap().into_parts();
/// let alice = std::sync::Arc::from("alice");
/// assert_eq!(push_http::poll_key(&parts, Some(&alice), push_http::Technique::Poll), "poll:u:alice");
/// assert_eq!(push_http::poll_key(&parts, None, push_http::Technique::LongPoll), "longpoll:anonymous");
/// ```
pub fn poll_key(parts: &Parts, user: Option<&Arc<str>>, technique: Technique) -> String {
    let technique = technique.as_str();
    match (user, crate::peer(parts)) {
        (Some(user), _) => format!("{technique}:u:{user}"),
        (None, Some(peer)) => format!("{technique}:a:{}", peer.ip()),
        (None, None) => format!("{technique}:anonymous"),
    }
}
