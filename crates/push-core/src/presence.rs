//! Presence: who is subscribed to a channel now, by technique, and the
//! `push.join` / `push.leave` events when a user comes and goes.
//!
//! A streaming subscriber (an event stream, a WebSocket) is present while it
//! is connected: it holds a [`Presence`] guard from [`Hub::enter`](crate::Hub::enter).
//! A poller is present while it keeps polling: each poll renews a lease
//! ([`Hub::touch`](crate::Hub::touch)) that lapses after its time to live.
//!
//! Users (a subscriber token's `sub`, or whoever the app says) are listed,
//! with their connections by technique; anonymous subscribers are counted.
//! When a user's first connection to a channel arrives, the channel's live
//! subscribers get an [ephemeral](crate::Publication::ephemeral) message with
//! the event [`JOIN_EVENT`]; when its last goes, [`LEAVE_EVENT`]. Its data is
//! JSON: `{"user":"alice","technique":"sse"}`. Never stored, never counted,
//! never a gap; transports hand them only to subscribers that ask.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::{ContentKind, EventName, Publication};

/// The event of a user's first connection to a channel.
pub const JOIN_EVENT: &str = "push.join";
/// The event of a user's last connection to a channel going.
pub const LEAVE_EVENT: &str = "push.leave";
/// The longest user name kept (longer ones are cut at a character boundary).
pub const MAX_USER_LEN: usize = 256;

/// Who a connection is: a user, or nobody in particular, and its technique
/// (`poll`, `longpoll`, `sse`, `ws`).
///
/// ```
/// use push_core::Member;
///
/// let alice = Member::new(Some("alice"), "sse");
/// assert_eq!(alice.user(), Some("alice"));
/// assert_eq!(Member::anonymous("poll").user(), None);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Member {
    user: Option<Arc<str>>,
    technique: &'static str,
}

impl Member {
    /// A member, `user` when known (cut to [`MAX_USER_LEN`] bytes; an empty
    /// one is anonymous).
    pub fn new(user: Option<&str>, technique: &'static str) -> Self {
        let user = user.filter(|u| !u.is_empty()).map(|user| {
            let mut end = user.len().min(MAX_USER_LEN);
            while !user.is_char_boundary(end) {
                end -= 1;
            }
            Arc::from(&user[..end])
        });
        Member { user, technique }
    }

    /// An anonymous member.
    pub fn anonymous(technique: &'static str) -> Self {
        Member {
            user: None,
            technique,
        }
    }

    /// The user, if known.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The technique it is connected by.
    pub fn technique(&self) -> &'static str {
        self.technique
    }

    /// The shared user name, if known.
    pub fn user_arc(&self) -> Option<&Arc<str>> {
        self.user.as_ref()
    }
}

/// A join or a leave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PresenceChange {
    /// A user's first connection to the channel.
    Join,
    /// A user's last connection to the channel went.
    Leave,
}

impl PresenceChange {
    /// Its event name: [`JOIN_EVENT`] or [`LEAVE_EVENT`].
    pub fn event_name(self) -> &'static str {
        match self {
            PresenceChange::Join => JOIN_EVENT,
            PresenceChange::Leave => LEAVE_EVENT,
        }
    }

    /// Its event name, as messages carry it.
    pub fn event(self) -> EventName {
        EventName::protocol(self.event_name())
    }

    /// The change an event name stands for, if it is one.
    pub fn of_event(name: &str) -> Option<Self> {
        match name {
            JOIN_EVENT => Some(PresenceChange::Join),
            LEAVE_EVENT => Some(PresenceChange::Leave),
            _ => None,
        }
    }

    /// The ephemeral publication that announces it: the event, and
    /// `{"user":USER,"technique":TECHNIQUE}` as JSON.
    ///
    /// ```
    /// use push_core::{PresenceChange, JOIN_EVENT};
    ///
    /// let join = PresenceChange::Join.publication("alice", "ws");
    /// assert!(join.is_ephemeral());
    /// assert_eq!(join.event().unwrap().as_str(), JOIN_EVENT);
    /// let data: serde_json::Value = serde_json::from_slice(join.data())?;
    /// assert_eq!(data, serde_json::json!({"user": "alice", "technique": "ws"}));
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn publication(self, user: &str, technique: &str) -> Publication {
        let data = serde_json::json!({"user": user, "technique": technique}).to_string();
        Publication::new(Bytes::from(data))
            .with_kind_trusted(ContentKind::Json)
            .with_event(self.event())
            .ephemeral()
    }
}

/// Which page of users [`Hub::presence`](crate::Hub::presence) answers:
/// those after `after` in name order, at most `limit`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PresencePage {
    /// Start after this user (`None`: from the first).
    pub after: Option<String>,
    /// The most users listed.
    pub limit: usize,
}

/// Connections by technique (`"sse"` → 3).
pub type Counts = BTreeMap<String, u64>;

/// A user present in a channel, with its connections by technique.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PresentUser {
    /// The user.
    pub user: String,
    /// Its connections, by technique.
    pub connections: Counts,
}

/// Who is present in a channel now ([`Hub::presence`](crate::Hub::presence)):
/// a page of users in name order, anonymous connections counted, and all
/// connections by technique.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PresenceSnapshot {
    /// Users present, in name order, after the page's start, at most its
    /// limit.
    pub users: Vec<PresentUser>,
    /// Users present in all.
    pub user_count: u64,
    /// Anonymous connections, by technique.
    pub anonymous: Counts,
    /// Every connection, users' and anonymous, by technique.
    pub connections: Counts,
    /// The last user of this page when more follow: ask again after it.
    pub next: Option<String>,
}

impl PresenceSnapshot {
    /// The snapshot of `entries` (each a connection: its user, if any, and
    /// technique), users from after `after`, at most `limit` of them.
    pub fn of<'a>(
        entries: impl IntoIterator<Item = (Option<&'a str>, &'a str)>,
        after: Option<&str>,
        limit: usize,
    ) -> Self {
        let mut users: BTreeMap<&str, Counts> = BTreeMap::new();
        let mut snapshot = PresenceSnapshot::default();
        for (user, technique) in entries {
            *snapshot
                .connections
                .entry(technique.to_owned())
                .or_default() += 1;
            let counts = match user {
                Some(user) => users.entry(user).or_default(),
                None => &mut snapshot.anonymous,
            };
            *counts.entry(technique.to_owned()).or_default() += 1;
        }
        snapshot.user_count = users.len() as u64;
        let mut page = users
            .into_iter()
            .filter(|(user, _)| after.is_none_or(|after| *user > after));
        snapshot.users = page
            .by_ref()
            .take(limit)
            .map(|(user, connections)| PresentUser {
                user: user.to_owned(),
                connections,
            })
            .collect();
        if page.next().is_some() {
            snapshot.next = snapshot.users.last().map(|u| u.user.clone());
        }
        snapshot
    }
}

/// A streaming connection's presence in a channel: it counts until this
/// is dropped. Hubs make it ([`Hub::enter`](crate::Hub::enter)).
pub struct Presence {
    _held: Box<dyn Send + Sync>,
}

impl Presence {
    /// A presence that ends when `held` is dropped.
    pub fn new(held: impl Send + Sync + 'static) -> Self {
        Presence {
            _held: Box::new(held),
        }
    }
}

impl fmt::Debug for Presence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Presence")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_counts_and_pages_users_in_order() {
        let entries = [
            (Some("bob"), "sse"),
            (Some("alice"), "ws"),
            (None, "poll"),
            (Some("alice"), "sse"),
            (Some("carol"), "longpoll"),
            (None, "poll"),
        ];
        let first = PresenceSnapshot::of(entries, None, 2);
        assert_eq!(first.user_count, 3);
        assert_eq!(
            first
                .users
                .iter()
                .map(|u| u.user.as_str())
                .collect::<Vec<_>>(),
            ["alice", "bob"]
        );
        assert_eq!(first.users[0].connections.values().sum::<u64>(), 2);
        assert_eq!(first.anonymous["poll"], 2);
        assert_eq!(first.connections.values().sum::<u64>(), 6);
        assert_eq!(first.next.as_deref(), Some("bob"));
        let rest = PresenceSnapshot::of(entries, first.next.as_deref(), 2);
        assert_eq!(rest.users.len(), 1);
        assert_eq!(rest.next, None);
    }

    #[test]
    fn long_or_empty_users() {
        let long = "é".repeat(200);
        let member = Member::new(Some(&long), "ws");
        assert!(member.user().unwrap().len() <= MAX_USER_LEN);
        assert_eq!(Member::new(Some(""), "ws").user(), None);
    }
}
