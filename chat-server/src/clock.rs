//! Wall-clock time as Unix milliseconds: message timestamps (`ts` on the wire)
//! and the expiry scores that presence entries and load reports carry in Redis,
//! which instances compare with each other, so it must be the wall clock and not
//! a monotonic one.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is set before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
