//! The continuity rules of a numbered history, shared by every hub.

use crate::{Cursor, Epoch, Gap, Position, Reset, Signal, Start};

/// What a hub knows of one channel's history at a moment: its epoch, and the
/// retained run of messages `first..=head`, numbered 1, 2, 3, … within the
/// epoch (empty when `first == head + 1`).
///
/// Every hub decides where a start points, and when a subscriber must be told
/// of a gap or a reset, with these rules, so that a client sees the same
/// answers from the memory hub and from a Redis hub.
///
/// ```
/// use push_core::{Cursor, Epoch, Position, Signal, Span, Start};
///
/// let span = Span { epoch: Epoch::new(7), first: 8, head: 10 };
/// // A cursor the history no longer reaches: the next message is the first
/// // retained one, after a gap of 5.
/// let (next, signal) = span.resolve(Start::After(span.cursor_at(2)));
/// assert_eq!((next, signal), (2 + 1, None));
/// let Some(gap) = span.gap(next) else { panic!() };
/// assert_eq!(gap.missed, Some(5));
/// // A cursor of another epoch: a reset, then everything retained.
/// let foreign = Cursor::new(Epoch::new(8), Position::new(1, 0));
/// assert!(matches!(span.resolve(Start::After(foreign)), (8, Some(Signal::Reset(_)))));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// The history's epoch.
    pub epoch: Epoch,
    /// The number of the oldest retained message (`head + 1` when none is).
    pub first: u64,
    /// The number of the newest message of this epoch (0 before any).
    pub head: u64,
}

impl Span {
    /// The cursor of message `number` (0: before the first).
    pub fn cursor_at(&self, number: u64) -> Cursor {
        Cursor::new(self.epoch, Position::new(number, 0))
    }

    /// The cursor of the head.
    pub fn head_cursor(&self) -> Cursor {
        self.cursor_at(self.head)
    }

    /// Where a start points: the number of the next message to deliver, and
    /// a reset when the cursor is not from this history. A cursor ahead of
    /// the head cannot be one of ours either: it is reset, not trusted.
    pub fn resolve(&self, start: Start) -> (u64, Option<Signal>) {
        match start {
            Start::Live => (self.head + 1, None),
            Start::Earliest => (self.first, None),
            Start::Last(n) => ((self.head + 1).saturating_sub(n).max(self.first), None),
            Start::After(since) => {
                let position = since.position();
                if since.epoch() == self.epoch
                    && position.minor() == 0
                    && position.major() <= self.head
                {
                    (position.major() + 1, None)
                } else {
                    let reset = Reset::new(since, self.cursor_at(self.first - 1));
                    (self.first, Some(Signal::Reset(reset)))
                }
            }
        }
    }

    /// The gap a subscriber whose next number is `next` must be told of
    /// before anything else, when the history has dropped that message.
    pub fn gap(&self, next: u64) -> Option<Gap> {
        (next < self.first).then(|| {
            Gap::new(
                self.cursor_at(next - 1),
                self.cursor_at(self.first - 1),
                Some(self.first - next),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// `Last(n)` starts at the `min(n, retained)` newest messages: no
        /// gap, no reset, and `last=0` is live.
        #[test]
        fn last_is_the_newest_retained(retained in 0u64..50, dropped in 0u64..50, n in 0u64..80) {
            let span = Span { epoch: Epoch::new(3), first: dropped + 1, head: dropped + retained };
            let (next, signal) = span.resolve(Start::Last(n));
            prop_assert_eq!(signal, None);
            prop_assert_eq!(span.gap(next), None);
            let delivered = span.head + 1 - next;
            prop_assert_eq!(delivered, n.min(retained));
            prop_assert!(next >= span.first);
            if n == 0 {
                prop_assert_eq!(next, span.resolve(Start::Live).0);
            }
        }
    }

    #[test]
    fn last_beyond_u64_saturates() {
        let span = Span {
            epoch: Epoch::new(1),
            first: 1,
            head: 4,
        };
        assert_eq!(span.resolve(Start::Last(u64::MAX)), (1, None));
    }
}
