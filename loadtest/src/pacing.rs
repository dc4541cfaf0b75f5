//! When a send leaves, and which time it carries.
//!
//! tokio's timer wheel ticks once per millisecond and rounds every deadline
//! *up* to the next tick, so sleeping until a message's slot wakes 0–1 ms
//! after it, and a latency counted from the slot would charge the server for
//! the generator's timer. chat-load therefore arms its send timer one tick
//! ahead of the slot ([`timer_deadline`]) and stamps the message with the
//! instant it is actually written when that is before the slot
//! ([`stamp_time`]): a send leaves up to one tick early, the timetable keeps
//! its rate (slots never drift), and the latency counts from when the message
//! left. A send written *after* its slot (the generator fell behind) keeps the
//! slot as its time, so the generator's own lateness is charged rather than
//! hidden (no coordinated omission) and shows as `send_lag`.

use std::time::{Duration, Instant};

/// The resolution of tokio's timers.
pub const TIMER_TICK: Duration = Duration::from_millis(1);

/// When to arm the timer for a send due at `due`: one tick ahead, so the
/// rounding up lands it in `[due - 1 tick, due]` instead of `[due, due + 1 tick]`.
pub fn timer_deadline(due: Instant) -> Instant {
    due.checked_sub(TIMER_TICK).unwrap_or(due)
}

/// The time a message written at `now` for the slot `due` is stamped with:
/// when it left if that was early, its slot if it was late.
pub fn stamp_time(due: Instant, now: Instant) -> Instant {
    due.min(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::{Instant as TokioInstant, sleep_until};

    /// On tokio's (paused, so deterministic) clock, a send armed for slots
    /// that fall between ticks leaves no later than its slot and carries the
    /// time it left.
    #[tokio::test(start_paused = true)]
    async fn sends_leave_on_time_and_carry_when_they_left() {
        let origin = TokioInstant::now().into_std();
        let mut slot = origin;
        for step_us in [300, 700, 1_250, 999, 2_001, 10_500] {
            slot += Duration::from_micros(step_us);
            sleep_until(timer_deadline(slot).into()).await;
            let now = TokioInstant::now().into_std();
            assert!(now <= slot, "left {:?} after its slot", now - slot);
            assert!(slot - now <= TIMER_TICK, "left more than a tick early");
            assert_eq!(stamp_time(slot, now), now, "stamped when it left");
        }
    }

    #[test]
    fn a_late_send_is_charged_from_its_slot() {
        let slot = Instant::now();
        let late = slot + Duration::from_millis(30);
        assert_eq!(stamp_time(slot, late), slot);
    }
}
