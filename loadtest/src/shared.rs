//! State shared by all generator threads: the plan, the run's clock origin,
//! the cancellation signal, per-room completion and the live progress figures.
//!
//! Only rare events touch it (an ack, a client finishing its sends, the
//! progress tick four times a second); deliveries, the hot path, stay within
//! one thread's `Recorder`.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::plan::Plan;
use crate::protocol::Protocol;
use crate::recorder::{Recorder, latency_histogram};
use crate::stamp_audit::SentMark;
use crate::timeseries::Interval;

pub struct Shared {
    pub plan: Plan,
    /// Time zero of the run; stamps and deadlines are relative to it.
    pub origin: Instant,
    /// Fired on Ctrl-C and at the plan's end deadline; every task selects on it.
    pub cancel: CancellationToken,
    pub rooms: Vec<RoomState>,
    /// One per generator thread.
    pub live: Vec<Live>,
    /// The instance each client is connected to now (`--url` index), so a
    /// receiver knows whether a message crossed instances.
    pub connected_to: Vec<AtomicU32>,
    /// With `--timeseries`: where the threads send their finished seconds.
    pub timeseries: Option<mpsc::Sender<Interval>>,
    /// Whether the threads keep their current delivery latencies for the
    /// progress line (`Live::window`); not when it is hidden.
    pub live_latency: bool,
    /// Socket.IO: what each client has written, by client id (empty for
    /// the native protocol), for `stamp_audit`'s caught-up check.
    pub sent: Vec<SentMark>,
}

impl Shared {
    pub fn new(
        plan: Plan,
        threads: usize,
        timeseries: Option<mpsc::Sender<Interval>>,
        live_latency: bool,
    ) -> Self {
        // Every member of the plan counts, also those of other shards: with
        // `--shard` a room is never "all sent" here (the other generators'
        // senders are out of sight), so clients stay until the end deadline.
        let mut members = vec![Vec::new(); plan.rooms as usize];
        (0..plan.clients).for_each(|c| members[plan.room_of(c) as usize].push(c));
        let sent = match plan.protocol {
            Protocol::Native => Vec::new(),
            Protocol::SocketIo => (0..plan.clients).map(|_| SentMark::default()).collect(),
        };
        Self {
            origin: Instant::now(),
            cancel: CancellationToken::new(),
            rooms: members.into_iter().map(RoomState::new).collect(),
            live_latency,
            sent,
            live: (0..threads).map(|_| Live::default()).collect(),
            timeseries,
            connected_to: (0..plan.clients)
                .map(|c| AtomicU32::new(plan.target_of(c) as u32))
                .collect(),
            plan,
        }
    }

    /// Microseconds from the origin to `at`.
    pub fn micros(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_micros() as u64
    }

    pub fn at(&self, since_origin: Duration) -> Instant {
        self.origin + since_origin
    }
}

/// Whether a room can still get new messages, and the highest seq acked in it.
pub struct RoomState {
    /// Client ids of the room's members, ascending.
    pub members: Vec<u32>,
    max_acked: AtomicU64,
    /// Members that have not finished sending (and receiving their acks).
    senders: AtomicU32,
    all_sent: watch::Sender<bool>,
}

impl RoomState {
    fn new(members: Vec<u32>) -> Self {
        let count = members.len() as u32;
        Self {
            members,
            max_acked: AtomicU64::new(0),
            senders: AtomicU32::new(count),
            all_sent: watch::Sender::new(count == 0),
        }
    }

    pub fn acked(&self, seq: u64) {
        self.max_acked.fetch_max(seq, Ordering::Relaxed);
    }

    pub fn max_acked(&self) -> u64 {
        self.max_acked.load(Ordering::Relaxed)
    }

    /// One member finished sending; the last one marks the room as all sent.
    pub fn sender_done(&self) {
        if self.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.all_sent.send_replace(true);
        }
    }

    pub fn watch_all_sent(&self) -> watch::Receiver<bool> {
        self.all_sent.subscribe()
    }
}

/// One thread's figures for the progress display, published by the thread
/// itself a few times a second.
pub struct Live {
    pub open: AtomicU64,
    pub sent: AtomicU64,
    pub messages: AtomicU64,
    /// Delivery latencies since the previous publish ("current" p99).
    pub window: Mutex<Histogram<u64>>,
}

impl Default for Live {
    fn default() -> Self {
        Self {
            open: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            messages: AtomicU64::new(0),
            window: Mutex::new(latency_histogram()),
        }
    }
}

impl Live {
    /// Publishes the counters and, when kept, the latencies since the last
    /// publish (`window`, then emptied).
    pub fn publish(&self, recorder: &Recorder, window: Option<&mut Histogram<u64>>) {
        let c = &recorder.counters;
        self.open.store(c.open, Ordering::Relaxed);
        self.sent.store(c.sent, Ordering::Relaxed);
        self.messages.store(c.messages, Ordering::Relaxed);
        let Some(window) = window else {
            return;
        };
        if let Ok(mut shared) = self.window.lock() {
            std::mem::swap(&mut *shared, window);
        }
        window.reset();
    }
}
