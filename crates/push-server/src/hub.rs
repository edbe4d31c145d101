//! The hub the server runs on, chosen at start: in memory, or on Redis.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use push::{
    Batch, ChannelName, Cursor, Error, Hub, Item, MemoryHub, MemorySubscription, Publication, Start,
};
use push_redis::{RedisHub, RedisSubscription};

/// The in-memory hub (one node) or the Redis hub (several).
#[derive(Clone, Debug)]
pub enum ServerHub {
    /// One process.
    Memory(MemoryHub),
    /// Several nodes on one Redis.
    Redis(RedisHub),
}

/// A subscription to either hub.
#[derive(Debug)]
pub enum ServerSubscription {
    /// From the memory hub.
    Memory(MemorySubscription),
    /// From the Redis hub.
    Redis(RedisSubscription),
}

impl Stream for ServerSubscription {
    type Item = Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        match self.get_mut() {
            ServerSubscription::Memory(s) => Pin::new(s).poll_next(cx),
            ServerSubscription::Redis(s) => Pin::new(s).poll_next(cx),
        }
    }
}

impl Hub for ServerHub {
    type Subscription = ServerSubscription;

    async fn publish(
        &self,
        channel: &ChannelName,
        publication: Publication,
    ) -> Result<Cursor, Error> {
        match self {
            ServerHub::Memory(hub) => hub.publish(channel, publication).await,
            ServerHub::Redis(hub) => hub.publish(channel, publication).await,
        }
    }

    async fn read(
        &self,
        channel: &ChannelName,
        start: Start,
        limit: usize,
    ) -> Result<Batch, Error> {
        match self {
            ServerHub::Memory(hub) => hub.read(channel, start, limit).await,
            ServerHub::Redis(hub) => hub.read(channel, start, limit).await,
        }
    }

    async fn subscribe(
        &self,
        channel: &ChannelName,
        start: Start,
    ) -> Result<ServerSubscription, Error> {
        match self {
            ServerHub::Memory(hub) => hub
                .subscribe(channel, start)
                .await
                .map(ServerSubscription::Memory),
            ServerHub::Redis(hub) => hub
                .subscribe(channel, start)
                .await
                .map(ServerSubscription::Redis),
        }
    }
}
