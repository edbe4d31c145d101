//! The limits of a memory hub.

use std::time::Duration;

use super::budget::{ENCODING_OVERHEAD, MESSAGE_OVERHEAD};
use super::log::Retention;
use crate::Error;

/// Limits of a [`MemoryHub`](super::MemoryHub). Every field has a default fit
/// for a public server; set the ones you need on `MemoryHubConfig::default()`.
///
/// Memory is bounded whatever publishers and subscribers do: retained messages
/// by [`max_retained_bytes`](Self::max_retained_bytes) across the whole hub
/// (default 256 MiB, counting their encodings and bookkeeping), and channels by
/// [`max_channels`](Self::max_channels) (a dormant channel costs a few hundred
/// bytes).
///
/// ```
/// use std::time::Duration;
/// use push_core::{MemoryHub, MemoryHubConfig};
///
/// let config = MemoryHubConfig::default()
///     .with_max_messages(100)
///     .with_max_age(Duration::from_secs(300))
///     .with_max_retained_bytes(64 << 20);
/// let hub = MemoryHub::with_config(config)?;
/// # Ok::<(), push_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryHubConfig {
    /// Messages a channel retains (default 1,000). At least 1: a subscriber reads
    /// from the log, so the log must hold the message being delivered.
    pub max_messages: usize,
    /// Bytes of data and event names a channel retains (default 1 MiB).
    pub max_bytes: usize,
    /// How long a message is retained (default 1 hour).
    pub max_age: Duration,
    /// The largest message accepted, data plus event name (default 256 KiB); at
    /// most `max_bytes`.
    pub max_message_bytes: usize,
    /// Bytes all retained messages of the hub may hold together (default
    /// 256 MiB). Counted per message: data, event name, every wire encoding a
    /// transport has filled ([`Message::encoded`](crate::Message::encoded),
    /// plus [`ENCODING_OVERHEAD`](Self::ENCODING_OVERHEAD) each) and
    /// [`MESSAGE_OVERHEAD`](Self::MESSAGE_OVERHEAD) of bookkeeping. Past it, the
    /// oldest messages of the whole hub, in publish order, are dropped, and
    /// subscribers behind get the usual [`Gap`](crate::Gap). A message still
    /// being delivered counts until it is delivered. At least
    /// `max_message_bytes + MESSAGE_OVERHEAD`, so that a message fits alone.
    pub max_retained_bytes: usize,
    /// Channels the hub holds at once (default 100,000). When full, a channel
    /// nobody is subscribed to is evicted to make room, least recently active
    /// first, even if it retains messages (a client resuming in it gets a
    /// [`Reset`](crate::Reset)); only when every channel has a subscriber does
    /// creating one fail with [`Error::TooManyChannels`].
    pub max_channels: usize,
    /// Of those, how many may be *unpublished*: created by a subscribe or a
    /// read, with nothing published in them yet. `None` (the default): half of
    /// `max_channels`, at least 1. Past it, unpublished channels with no
    /// subscriber are evicted, least recently active first, and when every one
    /// has a subscriber a subscribe or read that would create another fails with
    /// [`Error::TooManyChannels`]; publishing still creates channels. So
    /// subscribers alone can never take the room channels with publishers need.
    pub max_unpublished_channels: Option<usize>,
    /// How long a channel with no subscribers and no retained messages keeps its
    /// epoch and head before [`MemoryHub::sweep`](super::MemoryHub::sweep) frees
    /// it (default 24 hours). Within that time a returning client resumes
    /// without a spurious reset; after it, the client gets a reset.
    pub idle_channel_ttl: Duration,
    /// Bytes of [ephemeral](crate::Publication::ephemeral) messages a channel
    /// holds for live subscribers that have not taken them yet (default
    /// 1 MiB; each counted as its size plus
    /// [`MESSAGE_OVERHEAD`](Self::MESSAGE_OVERHEAD)). A subscriber further
    /// behind skips the oldest; the newest is always held. Not part of
    /// [`max_retained_bytes`](Self::max_retained_bytes): an ephemeral
    /// message lives only until every subscriber live at its publish has it.
    pub max_ephemeral_bytes: usize,
    /// Pollers a channel counts present at once (default 10,000): each poll
    /// renews a lease keyed by its user or address; past this a new poller
    /// is served but not counted. Streaming connections are always counted
    /// (each is a connection, bounded by the server).
    pub max_presence_leases: usize,
}

impl Default for MemoryHubConfig {
    fn default() -> Self {
        MemoryHubConfig {
            max_messages: 1_000,
            max_bytes: 1 << 20,
            max_age: Duration::from_secs(60 * 60),
            max_message_bytes: 256 << 10,
            max_retained_bytes: 256 << 20,
            max_channels: 100_000,
            max_unpublished_channels: None,
            idle_channel_ttl: Duration::from_secs(24 * 60 * 60),
            max_ephemeral_bytes: 1 << 20,
            max_presence_leases: 10_000,
        }
    }
}

impl MemoryHubConfig {
    /// What each retained message costs in
    /// [`max_retained_bytes`](Self::max_retained_bytes) beyond its data, event
    /// name and encodings: the message itself and its shared allocation's
    /// header, its slot in the channel's log, its entry in the hub's publish
    /// order, and the headers of its event name and data. Computed from the
    /// types' sizes: 360 bytes on 64-bit targets.
    pub const MESSAGE_OVERHEAD: usize = MESSAGE_OVERHEAD;

    /// What each filled wire encoding of a message costs in
    /// [`max_retained_bytes`](Self::max_retained_bytes) beyond its length: the
    /// header of its shared buffer. 24 bytes on 64-bit targets.
    pub const ENCODING_OVERHEAD: usize = ENCODING_OVERHEAD;

    /// Sets [`max_messages`](Self::max_messages).
    #[must_use]
    pub fn with_max_messages(mut self, max_messages: usize) -> Self {
        self.max_messages = max_messages;
        self
    }

    /// Sets [`max_bytes`](Self::max_bytes).
    #[must_use]
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Sets [`max_age`](Self::max_age).
    #[must_use]
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// Sets [`max_message_bytes`](Self::max_message_bytes).
    #[must_use]
    pub fn with_max_message_bytes(mut self, max_message_bytes: usize) -> Self {
        self.max_message_bytes = max_message_bytes;
        self
    }

    /// Sets [`max_retained_bytes`](Self::max_retained_bytes).
    #[must_use]
    pub fn with_max_retained_bytes(mut self, max_retained_bytes: usize) -> Self {
        self.max_retained_bytes = max_retained_bytes;
        self
    }

    /// Sets [`max_channels`](Self::max_channels).
    #[must_use]
    pub fn with_max_channels(mut self, max_channels: usize) -> Self {
        self.max_channels = max_channels;
        self
    }

    /// Sets [`max_unpublished_channels`](Self::max_unpublished_channels).
    #[must_use]
    pub fn with_max_unpublished_channels(mut self, max_unpublished_channels: usize) -> Self {
        self.max_unpublished_channels = Some(max_unpublished_channels);
        self
    }

    /// Sets [`idle_channel_ttl`](Self::idle_channel_ttl).
    #[must_use]
    pub fn with_idle_channel_ttl(mut self, idle_channel_ttl: Duration) -> Self {
        self.idle_channel_ttl = idle_channel_ttl;
        self
    }

    /// Sets [`max_presence_leases`](Self::max_presence_leases).
    #[must_use]
    pub fn with_max_presence_leases(mut self, max_presence_leases: usize) -> Self {
        self.max_presence_leases = max_presence_leases;
        self
    }

    /// Sets [`max_ephemeral_bytes`](Self::max_ephemeral_bytes).
    #[must_use]
    pub fn with_max_ephemeral_bytes(mut self, max_ephemeral_bytes: usize) -> Self {
        self.max_ephemeral_bytes = max_ephemeral_bytes;
        self
    }

    /// How many unpublished channels the hub holds at most: the
    /// [`max_unpublished_channels`](Self::max_unpublished_channels) in effect.
    ///
    /// ```
    /// use push_core::MemoryHubConfig;
    ///
    /// let config = MemoryHubConfig::default().with_max_channels(1_000);
    /// assert_eq!(config.unpublished_channel_limit(), 500);
    /// assert_eq!(config.with_max_unpublished_channels(10).unpublished_channel_limit(), 10);
    /// ```
    pub fn unpublished_channel_limit(&self) -> usize {
        self.max_unpublished_channels
            .unwrap_or(self.max_channels / 2)
            .clamp(1, self.max_channels.max(1))
    }

    /// Checks that the limits can work together.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the first problem.
    pub fn validate(&self) -> Result<(), Error> {
        let reason = if self.max_messages == 0 {
            "max_messages must be at least 1"
        } else if self.max_channels == 0 {
            "max_channels must be at least 1"
        } else if self.max_unpublished_channels == Some(0) {
            "max_unpublished_channels must be at least 1"
        } else if self.max_message_bytes > self.max_bytes {
            "max_message_bytes must not exceed max_bytes"
        } else if self.max_retained_bytes < self.max_message_bytes.saturating_add(MESSAGE_OVERHEAD)
        {
            "max_retained_bytes must hold a message of max_message_bytes and its MESSAGE_OVERHEAD"
        } else {
            return Ok(());
        };
        Err(Error::InvalidConfig { reason })
    }

    pub(super) fn retention(&self) -> Retention {
        Retention {
            max_messages: self.max_messages,
            max_bytes: self.max_bytes,
            max_age: self.max_age,
        }
    }
}
