//! The subscribers parked on a channel, woken all at once by a publish.
//!
//! A slab of wakers: a subscriber that finds nothing to read puts its waker in a
//! slot (reusing its slot when it polls again, so spurious polls never grow the
//! slab); a publish swaps the whole slab out in O(1) under the channel lock and
//! wakes the lot after releasing it. A generation number tells a subscriber
//! whether its slot is still in the current slab.

use std::mem;
use std::num::NonZeroU64;
use std::task::Waker;

/// A subscriber's claim on a slot, valid while `generation` is current.
/// (Non-zero, so that `Option<WaitToken>` is 16 bytes: every subscription
/// carries one.)
#[derive(Clone, Copy, Debug)]
pub(super) struct WaitToken {
    generation: NonZeroU64,
    slot: usize,
}

#[derive(Debug)]
pub(super) struct Waiters {
    slots: Vec<Option<Waker>>,
    free: Vec<usize>,
    generation: NonZeroU64,
    /// An empty slab with capacity, swapped in by `take_all` so a publish does
    /// not allocate.
    spare: Vec<Option<Waker>>,
}

impl Default for Waiters {
    fn default() -> Self {
        Waiters {
            slots: Vec::new(),
            free: Vec::new(),
            generation: NonZeroU64::MIN,
            spare: Vec::new(),
        }
    }
}

impl Waiters {
    /// Parks `waker`, in the slot `token` holds when it is still current.
    pub(super) fn register(&mut self, token: &mut Option<WaitToken>, waker: &Waker) {
        if let Some(t) = *token
            && t.generation == self.generation
            && let Some(slot) = self.slots.get_mut(t.slot)
        {
            match slot {
                Some(parked) if parked.will_wake(waker) => {}
                _ => *slot = Some(waker.clone()),
            }
            return;
        }
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(waker.clone());
                slot
            }
            None => {
                self.slots.push(Some(waker.clone()));
                self.slots.len() - 1
            }
        };
        *token = Some(WaitToken {
            generation: self.generation,
            slot,
        });
    }

    /// Gives up a parked slot (the subscriber is going away).
    pub(super) fn cancel(&mut self, token: Option<WaitToken>) {
        if let Some(t) = token
            && t.generation == self.generation
            && let Some(slot) = self.slots.get_mut(t.slot)
            && slot.take().is_some()
        {
            self.free.push(t.slot);
        }
    }

    /// Takes every parked waker, in O(1); wake them with [`wake_all`] after
    /// releasing the lock.
    pub(super) fn take_all(&mut self) -> Vec<Option<Waker>> {
        self.generation = self.generation.saturating_add(1);
        self.free.clear();
        mem::replace(&mut self.slots, mem::take(&mut self.spare))
    }

    /// Returns a drained slab's allocation for the next `take_all`.
    pub(super) fn give_back(&mut self, mut drained: Vec<Option<Waker>>) {
        drained.clear();
        if drained.capacity() > self.spare.capacity() {
            self.spare = drained;
        }
    }

    /// Frees all memory when nobody is parked (a dormant channel).
    pub(super) fn release_memory(&mut self) {
        if self.slots.iter().all(Option::is_none) {
            self.slots = Vec::new();
            self.free = Vec::new();
            self.spare = Vec::new();
        }
    }

    #[cfg(test)]
    fn parked(&self) -> usize {
        self.slots.iter().flatten().count()
    }
}

/// Wakes every parked subscriber; returns the emptied slab for `give_back`.
pub(super) fn wake_all(mut slab: Vec<Option<Waker>>) -> Vec<Option<Waker>> {
    for waker in slab.iter_mut().filter_map(Option::take) {
        waker.wake();
    }
    slab
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Counter(AtomicUsize);
    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Counter>, Waker) {
        let c = Arc::new(Counter(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    #[test]
    fn a_parked_token_costs_no_tag() {
        assert_eq!(size_of::<Option<WaitToken>>(), 16);
    }

    #[test]
    fn repeated_polls_reuse_one_slot() {
        let mut w = Waiters::default();
        let (count, waker) = counter();
        let mut token = None;
        for _ in 0..100 {
            w.register(&mut token, &waker);
        }
        assert_eq!(w.slots.len(), 1);
        let slab = w.take_all();
        w.give_back(wake_all(slab));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        // The old token is stale now: registering takes a fresh slot.
        w.register(&mut token, &waker);
        assert_eq!(w.parked(), 1);
    }

    #[test]
    fn cancelled_slots_are_reused_and_never_woken() {
        let mut w = Waiters::default();
        let (count, waker) = counter();
        let mut tokens = vec![None; 10];
        for t in &mut tokens {
            w.register(t, &waker);
        }
        for t in &tokens[..5] {
            w.cancel(*t);
        }
        for t in &mut tokens[..5] {
            *t = None;
            w.register(t, &waker);
        }
        assert_eq!(w.slots.len(), 10, "churn does not grow the slab");
        for t in &tokens[..3] {
            w.cancel(*t);
        }
        let drained = wake_all(w.take_all());
        w.give_back(drained);
        assert_eq!(count.0.load(Ordering::SeqCst), 7);
    }

    #[test]
    fn cancel_after_a_wake_does_not_touch_the_new_slab() {
        let mut w = Waiters::default();
        let (_, waker) = counter();
        let (mut a, mut b) = (None, None);
        w.register(&mut a, &waker);
        let _ = wake_all(w.take_all());
        w.register(&mut b, &waker);
        w.cancel(a);
        assert_eq!(w.parked(), 1);
    }
}
