//! A hub chosen at run time: one of two, behind one type.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;

use std::time::Duration;

use crate::{
    Batch, ChannelName, Cursor, Error, Hub, Item, Member, Presence, PresencePage, PresenceSnapshot,
    Publication, Start,
};

/// One of two hubs, chosen at run time, as one [`Hub`]; its subscriptions
/// are `Either` too. What a program uses that picks its hub from a setting
/// (the standalone server: memory or Redis), since `dyn Hub` is not a type.
/// Each call is one `match`, then the chosen hub's own code.
///
/// ```
/// use futures_util::StreamExt;
/// use push_core::{Either, Hub, Item, MemoryHub, Publication, Start};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), push_core::Error> {
/// let on_disk = false;
/// let hub: Either<MemoryHub, MemoryHub> = if on_disk {
///     Either::Right(MemoryHub::new())
/// } else {
///     Either::Left(MemoryHub::new())
/// };
/// let news = "news".parse()?;
/// let mut live = hub.subscribe(&news, Start::Live).await?;
/// hub.publish(&news, Publication::new("hello")).await?;
/// assert!(matches!(live.next().await, Some(Item::Message(_))));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Either<L, R> {
    /// The first choice.
    Left(L),
    /// The second choice.
    Right(R),
}

impl<L, R> Either<L, R> {
    /// The first choice, if it is the one.
    pub fn left(&self) -> Option<&L> {
        match self {
            Either::Left(left) => Some(left),
            Either::Right(_) => None,
        }
    }

    /// The second choice, if it is the one.
    pub fn right(&self) -> Option<&R> {
        match self {
            Either::Left(_) => None,
            Either::Right(right) => Some(right),
        }
    }
}

impl<L, R> Stream for Either<L, R>
where
    L: Stream<Item = Item> + Unpin,
    R: Stream<Item = Item> + Unpin,
{
    type Item = Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        match self.get_mut() {
            Either::Left(left) => Pin::new(left).poll_next(cx),
            Either::Right(right) => Pin::new(right).poll_next(cx),
        }
    }
}

impl<L: Hub, R: Hub> Hub for Either<L, R> {
    type Subscription = Either<L::Subscription, R::Subscription>;

    async fn publish(
        &self,
        channel: &ChannelName,
        publication: Publication,
    ) -> Result<Cursor, Error> {
        match self {
            Either::Left(hub) => hub.publish(channel, publication).await,
            Either::Right(hub) => hub.publish(channel, publication).await,
        }
    }

    async fn read(
        &self,
        channel: &ChannelName,
        start: Start,
        limit: usize,
    ) -> Result<Batch, Error> {
        match self {
            Either::Left(hub) => hub.read(channel, start, limit).await,
            Either::Right(hub) => hub.read(channel, start, limit).await,
        }
    }

    async fn subscribe(
        &self,
        channel: &ChannelName,
        start: Start,
    ) -> Result<Self::Subscription, Error> {
        match self {
            Either::Left(hub) => hub.subscribe(channel, start).await.map(Either::Left),
            Either::Right(hub) => hub.subscribe(channel, start).await.map(Either::Right),
        }
    }

    async fn enter(&self, channel: &ChannelName, member: Member) -> Result<Presence, Error> {
        match self {
            Either::Left(hub) => hub.enter(channel, member).await,
            Either::Right(hub) => hub.enter(channel, member).await,
        }
    }

    async fn touch(
        &self,
        channel: &ChannelName,
        key: &str,
        member: Member,
        ttl: Duration,
    ) -> Result<(), Error> {
        match self {
            Either::Left(hub) => hub.touch(channel, key, member, ttl).await,
            Either::Right(hub) => hub.touch(channel, key, member, ttl).await,
        }
    }

    async fn presence(
        &self,
        channel: &ChannelName,
        page: PresencePage,
    ) -> Result<PresenceSnapshot, Error> {
        match self {
            Either::Left(hub) => hub.presence(channel, page).await,
            Either::Right(hub) => hub.presence(channel, page).await,
        }
    }
}
