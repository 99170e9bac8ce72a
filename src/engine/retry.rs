//! The retry policy, as data: how long to wait before each retry.

use std::time::Duration;

/// Wait before retry n: `min(base * factor^(n-1), cap)`, spread by ±`jitter`.
/// A `Retry-After` from the receiver replaces the computed wait, capped too.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    pub base: Duration,
    pub factor: f64,
    pub cap: Duration,
    /// Fraction of the wait, 0.2 meaning ±20 %.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { base: Duration::from_secs(5), factor: 2.0, cap: Duration::from_secs(3600), jitter: 0.2 }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1 for the first retry). `spread` is a
    /// sample in [-1, 1] that picks the point inside the jitter band; pass a random
    /// one in production and fixed ones in tests.
    pub fn next_delay(&self, retry: u32, retry_after: Option<Duration>, spread: f64) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(self.cap);
        }
        let exp = self.factor.powi(retry.saturating_sub(1).min(64) as i32);
        let raw = (self.base.as_secs_f64() * exp).min(self.cap.as_secs_f64());
        let jittered = raw * (1.0 + self.jitter * spread.clamp(-1.0, 1.0));
        Duration::from_secs_f64(jittered.max(0.0))
    }

    /// `next_delay` with a random spread.
    pub fn next_delay_random(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        self.next_delay(retry, retry_after, rand::Rng::gen_range(&mut rand::thread_rng(), -1.0..=1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_five_seconds() {
        let p = RetryPolicy::default();
        let secs: Vec<u64> = (1..=6).map(|n| p.next_delay(n, None, 0.0).as_secs()).collect();
        assert_eq!(secs, vec![5, 10, 20, 40, 80, 160]);
    }

    #[test]
    fn caps_at_one_hour() {
        let p = RetryPolicy::default();
        assert_eq!(p.next_delay(11, None, 0.0), Duration::from_secs(3600));
        assert_eq!(p.next_delay(20, None, 0.0), Duration::from_secs(3600));
        assert_eq!(p.next_delay(u32::MAX, None, 0.0), Duration::from_secs(3600));
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let p = RetryPolicy::default();
        assert_eq!(p.next_delay(1, None, -1.0), Duration::from_secs(4));
        assert_eq!(p.next_delay(1, None, 1.0), Duration::from_secs(6));
        for _ in 0..1000 {
            let d = p.next_delay_random(2, None).as_secs_f64();
            assert!((8.0..=12.0).contains(&d), "{d}");
        }
    }

    #[test]
    fn retry_after_replaces_the_wait_and_is_capped() {
        let p = RetryPolicy::default();
        assert_eq!(p.next_delay(3, Some(Duration::from_secs(7)), 1.0), Duration::from_secs(7));
        assert_eq!(p.next_delay(1, Some(Duration::from_secs(86_400)), 0.0), Duration::from_secs(3600));
    }
}
