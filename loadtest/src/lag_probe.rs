//! The generator's own receive lag, measured on each generator thread.
//!
//! A delivery is timed when its client task runs: after epoll returned, after
//! the frames before it in the same read were decoded, and after every other
//! task that was ready on the thread. That wait is the generator's, not the
//! server's, and it is inside every delivery and ack latency. This probe
//! measures it: every [`EVERY`] it asks to run again as soon as possible
//! (`yield_now`, which tokio defers until the I/O driver has been polled and
//! every task ready by then has run) and records how long that took. A frame
//! that arrives at a random moment waits about as long before its task runs,
//! so when `receive_lag` is a visible share of the delivery latency the
//! generator, not the server, is saturated.

use std::time::{Duration, Instant};

use tokio::time::MissedTickBehavior;

/// How often each thread measures itself.
pub const EVERY: Duration = Duration::from_millis(10);

/// Runs until aborted, handing each sample (µs) to `record`.
pub async fn run(mut record: impl FnMut(u64)) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let asked = Instant::now();
        tokio::task::yield_now().await;
        record(asked.elapsed().as_micros() as u64);
    }
}
