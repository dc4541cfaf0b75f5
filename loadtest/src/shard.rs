//! One generator thread: a current-thread Tokio runtime that owns every
//! `threads`-th client.
//!
//! A shard's clients share its `Recorder` through an `Rc<RefCell<…>>`: on one
//! thread that costs a flag check, where a shared multi-threaded recorder would
//! cost a lock or an atomic per delivery. Scaling out is one shard per core
//! (`--threads`), merged at the end.
//!
//! Clients are spawned batch by batch when their start time comes, so a run
//! with a million clients does not hold a million idle tasks from the start.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::task::{JoinHandle, LocalSet};

use crate::audit::{Audited, LostSend, RoomLedger};
use crate::churn;
use crate::client;
use crate::error::LoadError;
use crate::lag_probe;
use crate::recorder::{Counters, Recorder, latency_histogram};
use crate::shared::Shared;
use crate::stamp::Stamp;
use crate::timeseries::{Counts, Interval, Window};

/// How often a shard publishes its figures for the progress display.
const PUBLISH_EVERY: Duration = Duration::from_millis(250);

pub struct Shard {
    pub shared: Arc<Shared>,
    pub index: usize,
    pub recorder: RefCell<Recorder>,
    /// Delivery latencies since the last publish, kept only for a shown
    /// progress line (`Shared::live_latency`).
    pub window: Option<RefCell<Histogram<u64>>>,
    /// Acked seqs per room, for the lost-acked check.
    pub ledgers: RefCell<Vec<RoomLedger>>,
    /// With `--timeseries`: the latencies of the current second.
    pub second: Option<RefCell<Window>>,
}

impl Shard {
    /// Client `stamp.client` of `room` wrote message `stamp` (a protocol
    /// without acks: the stamp audit owes it to the room).
    pub fn wrote(&self, room: usize, stamp: Stamp) {
        self.ledgers.borrow_mut()[room].written(stamp);
        if let Some(mark) = self.shared.sent.get(stamp.client as usize) {
            mark.wrote(&stamp);
        }
    }
}

/// What a shard hands back when its clients are done.
pub struct ShardResult {
    pub recorder: Recorder,
    pub ledgers: Vec<RoomLedger>,
    /// (room index, member) of every client that ran.
    pub members: Vec<(usize, Audited)>,
    /// Sends never answered, and messages due but never sent.
    pub lost: Vec<LostSend>,
}

/// Runs shard `index` of `threads` to completion on the calling thread.
pub fn run(shared: Arc<Shared>, index: usize, threads: usize) -> Result<ShardResult, LoadError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(LoadError::Runtime)?;
    let shard = Rc::new(Shard {
        index,
        recorder: RefCell::new(Recorder::default()),
        window: shared
            .live_latency
            .then(|| RefCell::new(latency_histogram())),
        ledgers: RefCell::new(vec![RoomLedger::default(); shared.plan.rooms as usize]),
        second: shared.timeseries.as_ref().map(|_| RefCell::default()),
        shared,
    });
    let outcomes = LocalSet::new().block_on(&runtime, drive(shard.clone(), threads))?;
    let shard = Rc::try_unwrap(shard).map_err(|_| LoadError::ShardPanicked)?;
    let mut members = Vec::with_capacity(outcomes.len());
    let mut lost = Vec::new();
    for outcome in outcomes {
        let room = outcome.room;
        lost.extend(
            outcome
                .lost
                .into_iter()
                .map(|stamp| LostSend { room, stamp }),
        );
        members.push((room, outcome.member));
    }
    Ok(ShardResult {
        recorder: shard.recorder.into_inner(),
        ledgers: shard.ledgers.into_inner(),
        members,
        lost,
    })
}

async fn drive(shard: Rc<Shard>, threads: usize) -> Result<Vec<client::Outcome>, LoadError> {
    let shared = shard.shared.clone();
    let plan = &shared.plan;
    let publisher = tokio::task::spawn_local(publish(shard.clone()));
    let churn = tokio::task::spawn_local(churn::run(shard.clone(), threads));
    let reporter = Rc::new(RefCell::new(SecondReporter::default()));
    let seconds = tokio::task::spawn_local(report_seconds(shard.clone(), reporter.clone()));
    let probed = shard.clone();
    let probe = tokio::task::spawn_local(lag_probe::run(move |us| {
        probed
            .recorder
            .borrow_mut()
            .receive_lag
            .saturating_record(us);
    }));
    let mut handles: Vec<JoinHandle<client::Outcome>> = Vec::new();
    for batch in 0..plan.batches() {
        let start = shared.at(plan.start_of(batch * plan.batch_size));
        tokio::select! {
            () = shared.cancel.cancelled() => break,
            () = tokio::time::sleep_until(start.into()) => {}
        }
        let first = batch * plan.batch_size;
        let last = (first + plan.batch_size).min(plan.clients);
        for id in
            (first..last).filter(|&id| plan.owns(id) && plan.thread_of(id, threads) == shard.index)
        {
            handles.push(tokio::task::spawn_local(client::run(shard.clone(), id)));
        }
    }
    let mut outcomes = Vec::with_capacity(handles.len());
    for handle in handles {
        outcomes.push(handle.await.map_err(|_| LoadError::ShardPanicked)?);
    }
    for task in [publisher, probe, seconds, churn] {
        task.abort();
        let _ = task.await;
    }
    publish_now(&shard);
    // The last, partial second.
    let last = shard.shared.origin.elapsed().as_secs() + 1;
    reporter.borrow_mut().send(&shard, last);
    Ok(outcomes)
}

/// The figures of the second being reported: counters as they were at its start.
#[derive(Default)]
struct SecondReporter {
    counters: Counters,
    errors: u64,
}

impl SecondReporter {
    /// Sends the interval that ends at `second` (since the origin).
    fn send(&mut self, shard: &Shard, second: u64) {
        let (Some(sender), Some(window)) = (&shard.shared.timeseries, &shard.second) else {
            return;
        };
        let recorder = shard.recorder.borrow();
        let errors = recorder.errors.values().sum();
        let counts = Counts::between(&self.counters, &recorder.counters, self.errors, errors);
        self.counters = recorder.counters.clone();
        self.errors = errors;
        let window = std::mem::take(&mut *window.borrow_mut());
        // The main thread is gone only when the run is over.
        let _ = sender.send(Interval {
            second,
            counts,
            window,
        });
    }
}

/// With `--timeseries`, reports every whole second since the origin until
/// aborted (the caller then reports the last, partial second).
async fn report_seconds(shard: Rc<Shard>, reporter: Rc<RefCell<SecondReporter>>) {
    if shard.second.is_none() {
        return;
    }
    let origin = shard.shared.origin;
    let mut second = origin.elapsed().as_secs() + 1;
    loop {
        tokio::time::sleep_until((origin + Duration::from_secs(second)).into()).await;
        reporter.borrow_mut().send(&shard, second);
        second += 1;
    }
}

async fn publish(shard: Rc<Shard>) {
    let mut tick = tokio::time::interval(PUBLISH_EVERY);
    loop {
        tick.tick().await;
        publish_now(&shard);
    }
}

fn publish_now(shard: &Shard) {
    let recorder = shard.recorder.borrow();
    let mut window = shard.window.as_ref().map(RefCell::borrow_mut);
    shard.shared.live[shard.index].publish(&recorder, window.as_deref_mut());
}
