//! Per-connection rate limiting: a token bucket.
//!
//! A bucket of `burst` tokens refills at `per_sec` tokens per second; each client
//! frame takes one. It is owned by one connection's reader, so it needs no locking,
//! and time is passed in, so the tests need no clock.

use std::time::Instant;

#[derive(Debug)]
pub struct TokenBucket {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(per_sec: u32, burst: u32, now: Instant) -> TokenBucket {
        TokenBucket {
            per_sec: f64::from(per_sec),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(50, 100, t0);
        assert!((0..100).all(|_| b.try_take(t0)));
        assert!(!b.try_take(t0));
        // 50/s: 20 ms gives exactly one token back.
        let t1 = t0 + Duration::from_millis(20);
        assert!(b.try_take(t1));
        assert!(!b.try_take(t1));
        // A long pause refills to the burst, not beyond.
        let t2 = t1 + Duration::from_secs(60);
        assert!((0..100).all(|_| b.try_take(t2)));
        assert!(!b.try_take(t2));
    }
}
