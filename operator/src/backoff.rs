//! Per-object exponential backoff for failed reconciles.
//!
//! A ChatCluster that keeps failing (a denied permission, an API server under
//! pressure) is retried quickly at first and then ever more slowly, up to a cap,
//! without slowing down the other clusters. A success resets its count.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Consecutive failures by (namespace, name).
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: Mutex<HashMap<(String, String), u32>>,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            failures: Mutex::default(),
        }
    }

    /// Records a failure and returns the delay before the next attempt:
    /// `base`, `2 * base`, `4 * base`, ... capped at `max`.
    pub fn next(&self, key: (String, String)) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let count = failures.entry(key).or_insert(0);
        *count = count.saturating_add(1);
        let factor = 2u32.saturating_pow((*count - 1).min(16));
        self.base.saturating_mul(factor).min(self.max)
    }

    /// Forgets the failures of an object that reconciled successfully.
    pub fn reset(&self, key: &(String, String)) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> (String, String) {
        ("ns".into(), name.into())
    }

    #[test]
    fn doubles_up_to_the_cap_per_object() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let delays: Vec<u64> = (0..5).map(|_| backoff.next(key("a")).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 5, 5]);
        assert_eq!(
            backoff.next(key("b")).as_secs(),
            1,
            "other objects are unaffected"
        );
    }

    #[test]
    fn success_resets() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        backoff.next(key("a"));
        backoff.next(key("a"));
        backoff.reset(&key("a"));
        assert_eq!(backoff.next(key("a")).as_secs(), 1);
    }

    #[test]
    fn many_failures_do_not_overflow() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        for _ in 0..100 {
            assert!(backoff.next(key("a")) <= Duration::from_secs(300));
        }
    }
}
