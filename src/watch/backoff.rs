//! Retry timing: capped exponential back-off, and the jittered full-rescan period.
//!
//! When the secondary misbehaves (unreachable, full, refusing writes) the watcher keeps
//! its dirty set and retries after `min`, then twice as long each time, never longer
//! than `max` (1 s → 5 min by default); the first success resets it. Both functions are
//! pure: the caller passes `now` and, for jitter, a seed, so the tests need no clock.

use std::time::{Duration, Instant};

/// Back-off state.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
    next: Option<Instant>,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            failures: 0,
            next: None,
        }
    }

    /// Records a failure at `now`; returns how long to wait before the next attempt.
    pub fn fail(&mut self, now: Instant) -> Duration {
        let shift = self.failures.min(31);
        let wait = self
            .min
            .checked_mul(1u32 << shift)
            .unwrap_or(self.max)
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        self.next = Some(now + wait);
        wait
    }

    /// Records a success: the next failure waits `min` again.
    pub fn succeed(&mut self) {
        self.failures = 0;
        self.next = None;
    }

    /// When the next attempt may run (`None`: at once).
    pub fn next_attempt(&self) -> Option<Instant> {
        self.next
    }

    /// True if an attempt may run at `now`.
    pub fn ready(&self, now: Instant) -> bool {
        self.next.is_none_or(|n| n <= now)
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// `period` spread by ±10% from `seed` (so many watchers started together do not
/// rescan together).
pub fn jittered(period: Duration, seed: u64) -> Duration {
    // SplitMix64 finaliser: a well-spread value from any seed.
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let frac = (z >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
    period.mul_f64(0.9 + 0.2 * frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_reset_on_success() {
        let s = Duration::from_secs;
        let t0 = Instant::now();
        let mut b = Backoff::new(s(1), s(300));
        let waits: Vec<u64> = (0..12).map(|_| b.fail(t0).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert!(!b.ready(t0 + s(299)));
        assert!(b.ready(t0 + s(300)));
        b.succeed();
        assert!(b.ready(t0));
        assert_eq!(b.failures(), 0);
        assert_eq!(b.fail(t0), s(1));
    }

    #[test]
    fn many_failures_never_overflow() {
        let t0 = Instant::now();
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(50));
        for _ in 0..100 {
            assert!(b.fail(t0) <= Duration::from_millis(50));
        }
        assert_eq!(b.next_attempt(), Some(t0 + Duration::from_millis(50)));
    }

    #[test]
    fn jitter_stays_within_ten_percent_and_varies() {
        let h = Duration::from_secs(3600);
        let all: Vec<Duration> = (0..200).map(|seed| jittered(h, seed)).collect();
        for d in &all {
            assert!(*d >= h.mul_f64(0.9) && *d <= h.mul_f64(1.1), "{d:?}");
        }
        assert!(all.iter().any(|d| *d < h) && all.iter().any(|d| *d > h));
    }
}
