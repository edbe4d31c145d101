//! Retry delays for clients: exponential, capped, with jitter so that a crowd
//! of clients cut off together does not come back together.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

/// Exponential backoff with "equal jitter": the n-th delay is drawn from
/// `[d/2, d]` with `d = min(max, initial × 2ⁿ)`.
///
/// ```
/// use std::time::Duration;
/// use push_core::Backoff;
///
/// let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
/// let first = backoff.next_delay();
/// assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
/// for _ in 0..20 {
///     assert!(backoff.next_delay() <= Duration::from_secs(5));
/// }
/// backoff.reset();
/// assert!(backoff.next_delay() <= Duration::from_millis(100));
/// ```
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    /// Delays from `initial` doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            attempt: 0,
            rng: RandomState::new().hash_one(0x6a09_e667_u64) | 1,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .initial
            .saturating_mul(1 << self.attempt.min(30))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + self.jitter(ceiling - half)
    }

    /// How many delays were handed out since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// `interval` moved by up to ±`fraction` of itself at random: spreads
    /// periodic requests of many clients over time.
    pub fn spread(&mut self, interval: Duration, fraction: f64) -> Duration {
        let span = interval.mul_f64(fraction.clamp(0.0, 1.0));
        (interval - span).saturating_add(self.jitter(span.saturating_mul(2)))
    }

    /// A random duration in `[0, up_to]`.
    fn jitter(&mut self, up_to: Duration) -> Duration {
        // xorshift64*: plenty for spreading retries.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let random = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let unit = (random >> 11) as f64 / (1u64 << 53) as f64;
        up_to.mul_f64(unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_and_stays_within_bounds() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut ceiling = Duration::from_millis(100);
        for _ in 0..40 {
            let d = b.next_delay();
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{d:?} not in [{:?}, {ceiling:?}]",
                ceiling / 2
            );
            ceiling = (ceiling * 2).min(Duration::from_secs(2));
        }
        assert_eq!(b.attempts(), 40);
    }

    #[test]
    fn spreads_around_the_interval() {
        let mut b = Backoff::new(Duration::from_millis(1), Duration::from_millis(1));
        let interval = Duration::from_secs(10);
        let samples: Vec<_> = (0..1000).map(|_| b.spread(interval, 0.1)).collect();
        assert!(
            samples
                .iter()
                .all(|d| *d >= Duration::from_secs(9) && *d <= Duration::from_secs(11))
        );
        assert!(samples.iter().any(|d| *d < Duration::from_millis(9_500)));
        assert!(samples.iter().any(|d| *d > Duration::from_millis(10_500)));
    }

    #[test]
    fn extreme_durations_saturate() {
        let mut b = Backoff::new(Duration::MAX, Duration::MAX);
        assert!(b.next_delay() >= Duration::MAX / 2);
        for _ in 0..100 {
            assert!(b.spread(Duration::MAX, 0.1) >= Duration::MAX.mul_f64(0.9));
        }
    }
}
