//! The `Hub` trait: what every transport needs from the place messages live.

use std::future::Future;
use std::sync::Arc;

use futures_core::Stream;

use std::time::Duration;

use crate::{
    Batch, ChannelName, Cursor, Error, Item, Member, Presence, PresencePage, PresenceSnapshot,
    Publication, Start,
};

/// Where channels live: publish to them, read their history, subscribe to them.
///
/// The in-memory [`MemoryHub`](crate::MemoryHub) serves one process; a Redis hub
/// serves several. Every transport (polling, long polling, SSE, WebSockets) is
/// written against this trait alone, so each works over either.
///
/// # Continuity
///
/// Every implementation keeps the same promise, on every path: starting
/// [`Start::After`] a cursor yields each retained message after it, in order,
/// exactly once. When the history no longer reaches back that far, a
/// [`Signal::Gap`](crate::Signal::Gap) comes first; when the cursor is from
/// another history (epoch), a [`Signal::Reset`](crate::Signal::Reset) does;
/// then what is retained follows. Nothing is lost silently.
///
/// # Why generic, not object-safe
///
/// The methods return `impl Future` and the subscription is an associated
/// type, so a transport over a [`MemoryHub`](crate::MemoryHub) compiles to direct
/// calls: a publish is an append and a wake-up, with no boxed future and no
/// virtual call per message delivered. The cost is that `dyn Hub` is not a
/// type; a program that picks its hub at run time (the standalone server:
/// memory or Redis, from a flag) holds the choice in an
/// [`Either`](crate::Either), which is a `Hub` when both sides are.
///
/// # Long polling without a race
///
/// A long poll reads, and when the batch is empty waits. Subscribing
/// [`Start::After`] the empty batch's cursor closes the window: anything
/// published between the read and the subscribe is already in the log, after
/// that cursor, and is the subscription's first item.
///
/// ```
/// use futures_util::StreamExt;
/// use push_core::{Hub, Item, MemoryHub, Publication, Start};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), push_core::Error> {
/// let hub = MemoryHub::new();
/// let news = "news".parse()?;
/// let batch = hub.read(&news, Start::Live, 100).await?;
/// assert!(batch.is_empty());
/// hub.publish(&news, Publication::new("published in between")).await?;
/// let mut waiting = hub.subscribe(&news, Start::After(batch.cursor)).await?;
/// let Some(Item::Message(m)) = waiting.next().await else { panic!() };
/// assert_eq!(&m.data()[..], b"published in between");
/// # Ok(())
/// # }
/// ```
pub trait Hub: Send + Sync + 'static {
    /// A live subscription to one channel: a stream of messages and continuity
    /// signals that never ends on its own while the hub runs. Dropping it
    /// unsubscribes.
    type Subscription: Stream<Item = Item> + Send + Unpin + 'static;

    /// Appends a message to `channel` and wakes its subscribers; returns the
    /// message's cursor. When this returns `Ok`, every later read or
    /// subscription that starts before that cursor sees the message (or a gap
    /// signal, once the history has dropped it).
    ///
    /// A publication with an [idempotency key](Publication::with_key) that
    /// the channel has already stored (within the hub's window) is not stored
    /// again: the first one's cursor comes back. So a publisher that retries
    /// with the same key until `Ok` stores every message exactly once.
    ///
    /// # Errors
    /// [`Error::MessageTooLarge`], [`Error::TooManyChannels`],
    /// [`Error::IdempotencyKeyReused`] (the key came with other content),
    /// [`Error::Unavailable`] when the backend failed before the publish
    /// could happen (nothing was published), or [`Error::OutcomeUnknown`] when
    /// it failed after (it may have been: retry with the same key).
    fn publish(
        &self,
        channel: &ChannelName,
        publication: Publication,
    ) -> impl Future<Output = Result<Cursor, Error>> + Send;

    /// Reads at once up to `limit` messages from `start`, with a signal first
    /// when continuity broke. Never waits for new messages.
    ///
    /// # Errors
    /// [`Error::TooManyChannels`], or [`Error::Unavailable`].
    fn read(
        &self,
        channel: &ChannelName,
        start: Start,
        limit: usize,
    ) -> impl Future<Output = Result<Batch, Error>> + Send;

    /// Subscribes to `channel` from `start`: first what is retained after the
    /// start (with a signal first when continuity broke), then every message as
    /// it is published.
    ///
    /// # Errors
    /// [`Error::TooManyChannels`], or [`Error::Unavailable`].
    fn subscribe(
        &self,
        channel: &ChannelName,
        start: Start,
    ) -> impl Future<Output = Result<Self::Subscription, Error>> + Send;

    /// Marks `member` present in `channel` until the returned guard is
    /// dropped: a streaming connection's presence (see [`Presence`]). A
    /// user's first connection announces a join to the channel's live
    /// subscribers; its last, dropped, a leave.
    ///
    /// # Errors
    /// [`Error::TooManyChannels`], or [`Error::Unavailable`].
    fn enter(
        &self,
        channel: &ChannelName,
        member: Member,
    ) -> impl Future<Output = Result<Presence, Error>> + Send;

    /// Marks the poller `key` (its user, or an id of its own) present in
    /// `channel` as `member` for `ttl` from now; each poll touches it again.
    /// Joins and leaves are announced as for [`enter`](Self::enter): the
    /// leave once `ttl` passed with no touch.
    ///
    /// # Errors
    /// [`Error::TooManyChannels`], or [`Error::Unavailable`].
    fn touch(
        &self,
        channel: &ChannelName,
        key: &str,
        member: Member,
        ttl: Duration,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Who is present in `channel` now: one page of users, and every
    /// connection counted.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    fn presence(
        &self,
        channel: &ChannelName,
        page: PresencePage,
    ) -> impl Future<Output = Result<PresenceSnapshot, Error>> + Send;
}

/// The subscription type of hub `H`, for signatures that name it.
pub type Subscription<H> = <H as Hub>::Subscription;

impl<H: Hub> Hub for Arc<H> {
    type Subscription = H::Subscription;

    fn publish(
        &self,
        channel: &ChannelName,
        publication: Publication,
    ) -> impl Future<Output = Result<Cursor, Error>> + Send {
        (**self).publish(channel, publication)
    }

    fn read(
        &self,
        channel: &ChannelName,
        start: Start,
        limit: usize,
    ) -> impl Future<Output = Result<Batch, Error>> + Send {
        (**self).read(channel, start, limit)
    }

    fn subscribe(
        &self,
        channel: &ChannelName,
        start: Start,
    ) -> impl Future<Output = Result<Self::Subscription, Error>> + Send {
        (**self).subscribe(channel, start)
    }

    fn enter(
        &self,
        channel: &ChannelName,
        member: Member,
    ) -> impl Future<Output = Result<Presence, Error>> + Send {
        (**self).enter(channel, member)
    }

    fn touch(
        &self,
        channel: &ChannelName,
        key: &str,
        member: Member,
        ttl: Duration,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        (**self).touch(channel, key, member, ttl)
    }

    fn presence(
        &self,
        channel: &ChannelName,
        page: PresencePage,
    ) -> impl Future<Output = Result<PresenceSnapshot, Error>> + Send {
        (**self).presence(channel, page)
    }
}

/// Subscribes from `start`, with a live start pinned to the channel's head:
/// reads the head, then subscribes after it (nothing published in between is
/// missed), and returns the head so that the client can be told where it
/// stands. A client that reconnects before its first message then resumes
/// from the head instead of starting live again and missing what came in
/// between. A [`Start::Last`] is pinned the same way, to the cursor just
/// before its last `n` messages. For `Earliest` and `After` starts the
/// cursor is `None`.
///
/// ```
/// use futures_util::StreamExt;
/// use push_core::{Hub, Item, MemoryHub, Publication, Start, subscribe_pinned};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), push_core::Error> {
/// let hub = MemoryHub::new();
/// let news = "news".parse()?;
/// let (mut live, head) = subscribe_pinned(&hub, &news, Start::Live).await?;
/// let id = hub.publish(&news, Publication::new("first")).await?;
/// let Some(Item::Message(m)) = live.next().await else { panic!() };
/// assert_eq!(m.cursor(), id);
/// assert!(head.is_some_and(|head| head < id));
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// Whatever [`Hub::read`] or [`Hub::subscribe`] returns.
pub async fn subscribe_pinned<H: Hub>(
    hub: &H,
    channel: &ChannelName,
    start: Start,
) -> Result<(H::Subscription, Option<Cursor>), Error> {
    let head = match start {
        Start::Live | Start::Last(_) => Some(hub.read(channel, start, 0).await?.cursor),
        Start::Earliest | Start::After(_) => None,
    };
    let subscription = hub
        .subscribe(channel, head.map_or(start, Start::After))
        .await?;
    Ok((subscription, head))
}
