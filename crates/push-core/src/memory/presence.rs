//! A channel's presence on the memory hub: its connections (streaming ones
//! until their guard drops, pollers' leases until they lapse) and how many
//! each user has, to tell a join and a leave.

use std::collections::HashMap;
use std::sync::Arc;

use crate::{Member, PresenceChange, PresencePage, PresenceSnapshot, Timestamp};

#[derive(Debug, Default)]
pub(super) struct PresenceTable {
    next_id: u64,
    entries: HashMap<u64, Entry>,
    /// Pollers' leases, by key.
    leases: HashMap<Box<str>, u64>,
    /// Connections per user.
    users: HashMap<Arc<str>, usize>,
    /// No lease lapses before this (it may be earlier than the truth: a
    /// renewed lease leaves it behind; a look past it finds the next).
    earliest: Option<Timestamp>,
}

#[derive(Debug)]
struct Entry {
    member: Member,
    /// A lease's end; `None` for a streaming connection.
    expires: Option<Timestamp>,
    key: Option<Box<str>>,
}

/// A join or leave to announce: the change, the user and the technique.
pub(super) type Change = (PresenceChange, Arc<str>, &'static str);

impl PresenceTable {
    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(super) fn has_leases(&self) -> bool {
        !self.leases.is_empty()
    }

    /// A streaming connection arrives: its id, and a join if it is its
    /// user's first.
    pub(super) fn enter(&mut self, member: Member) -> (u64, Option<Change>) {
        self.add(member, None, None)
    }

    fn add(
        &mut self,
        member: Member,
        expires: Option<Timestamp>,
        key: Option<Box<str>>,
    ) -> (u64, Option<Change>) {
        let id = self.next_id;
        self.next_id += 1;
        let change = member.user_arc().and_then(|user| {
            let count = self.users.entry(user.clone()).or_default();
            *count += 1;
            (*count == 1).then(|| (PresenceChange::Join, user.clone(), member.technique()))
        });
        if let Some(key) = &key {
            self.leases.insert(key.clone(), id);
        }
        if let Some(at) = expires {
            self.earliest = Some(self.earliest.map_or(at, |earliest| earliest.min(at)));
        }
        self.entries.insert(
            id,
            Entry {
                member,
                expires,
                key,
            },
        );
        (id, change)
    }

    /// Connection `id` goes: a leave if it was its user's last.
    pub(super) fn remove(&mut self, id: u64) -> Option<Change> {
        let entry = self.entries.remove(&id)?;
        if let Some(key) = &entry.key {
            self.leases.remove(key);
        }
        let user = entry.member.user_arc()?;
        let count = self.users.get_mut(user)?;
        *count -= 1;
        if *count > 0 {
            return None;
        }
        self.users.remove(user);
        if self.entries.is_empty() {
            self.release_memory();
        }
        Some((
            PresenceChange::Leave,
            user.clone(),
            entry.member.technique(),
        ))
    }

    /// A poller's lease, renewed or taken until `expires`: a join if new
    /// and its user's first. Past `max_leases` a new one is not taken (a
    /// streaming connection always is: connections are bounded).
    pub(super) fn touch(
        &mut self,
        key: &str,
        member: Member,
        expires: Timestamp,
        max_leases: usize,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        if let Some(&id) = self.leases.get(key) {
            match self.entries.get_mut(&id) {
                Some(entry) if entry.member == member => {
                    entry.expires = Some(expires);
                    return changes;
                }
                // Another user or technique under the key: a new entry.
                _ => changes.extend(self.remove(id)),
            }
        } else if self.leases.len() >= max_leases {
            return changes;
        }
        changes.extend(self.add(member, Some(expires), Some(key.into())).1);
        changes
    }

    /// Drops the leases over at `now`: the leaves they make. Looks at
    /// every lease only once the earliest may have lapsed: a poll costs a
    /// comparison, not a scan.
    pub(super) fn expire(&mut self, now: Timestamp) -> Vec<Change> {
        if self.earliest.is_none_or(|earliest| now < earliest) {
            return Vec::new();
        }
        let over: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, entry)| entry.expires.is_some_and(|at| at <= now))
            .map(|(id, _)| *id)
            .collect();
        let left = over.into_iter().filter_map(|id| self.remove(id)).collect();
        self.earliest = self.next_expiry();
        left
    }

    /// No lease lapses before this (cheap: no scan).
    pub(super) fn earliest(&self) -> Option<Timestamp> {
        self.earliest
    }

    /// When the first lease lapses (a scan).
    fn next_expiry(&self) -> Option<Timestamp> {
        self.entries
            .values()
            .filter_map(|entry| entry.expires)
            .min()
    }

    pub(super) fn snapshot(&self, page: &PresencePage) -> PresenceSnapshot {
        PresenceSnapshot::of(
            self.entries
                .values()
                .map(|entry| (entry.member.user(), entry.member.technique())),
            page.after.as_deref(),
            page.limit,
        )
    }

    fn release_memory(&mut self) {
        *self = PresenceTable {
            next_id: self.next_id,
            ..PresenceTable::default()
        };
    }
}
