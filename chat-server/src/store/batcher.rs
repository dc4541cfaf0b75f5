//! Group commit: many accepted messages become one multi-row INSERT.
//!
//! Sessions reserve a slot *before* they publish (so a published message always has
//! a place in the queue), then submit the message and await its [`Commit`]. One
//! task drains up to `max_batch` rows per INSERT. On a transient store error it
//! keeps the rows and retries with backoff, marking the store down so new sends are
//! refused up-front; a success marks it up again. When the store refuses the data
//! itself ([`StoreError::is_permanent`]), retrying cannot help: the batch is written
//! row by row and only the poison row's sender gets an error, so one bad row never
//! stalls other rooms. On shutdown the queue is closed and drained, so everything
//! accepted is flushed before the process exits. If the store is still down when
//! the grace period is about to end (`give_up`), the rows still held are pushed to
//! the [`spill`](super::spill) instead, for another instance to store.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::spill::RedisSpill;
use super::{BoxFuture, HistoryStore, StoreError};
use crate::metrics::Metrics;
use crate::protocol::ChatMessage;

/// The outcome of one message's commit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    #[error("seq {0} of this room was already stored with other content")]
    Conflict(u64),
    #[error(
        "seq {0} was given up as never committed: its commit came after readers stopped waiting for it"
    )]
    GivenUp(u64),
    #[error("the history store refused it: {0}")]
    Refused(String),
    #[error("the server stopped before the message was committed")]
    Aborted,
}

/// Resolves when the message is durable.
pub type Commit = oneshot::Receiver<Result<(), CommitError>>;

struct Job {
    msg: ChatMessage,
    accepted: Instant,
    done: oneshot::Sender<Result<(), CommitError>>,
}

/// Handle to the batcher task: reserve a slot, then submit.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Job>,
    down: Arc<AtomicBool>,
}

/// A reserved queue slot.
pub struct Slot<'a> {
    permit: mpsc::Permit<'a, Job>,
}

impl Slot<'_> {
    pub fn submit(self, msg: ChatMessage) -> Commit {
        let (done, commit) = oneshot::channel();
        self.permit.send(Job {
            msg,
            accepted: Instant::now(),
            done,
        });
        commit
    }
}

/// When the batcher stops: `shutdown` closes the queue (what is in it still
/// drains); `give_up` makes it stop retrying a down store and spill instead.
pub struct Stop {
    pub shutdown: CancellationToken,
    pub give_up: CancellationToken,
}

impl Batcher {
    pub fn spawn(
        store: Arc<dyn HistoryStore>,
        (max_batch, queue): (usize, usize),
        metrics: Arc<Metrics>,
        spill: Option<RedisSpill>,
        stop: Stop,
    ) -> (Batcher, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let down = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            store,
            rx,
            max_batch: max_batch.max(1),
            metrics,
            down: down.clone(),
            spill,
            give_up: stop.give_up,
        };
        let shutdown = stop.shutdown;
        let handle = tokio::spawn(worker.run(shutdown));
        (Batcher { tx, down }, handle)
    }

    /// Whether the last write (or probe) failed: new sends are refused while it is.
    pub fn store_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// Waits for a queue slot; `None` once the batcher shut down.
    pub async fn reserve(&self) -> Option<Slot<'_>> {
        self.tx.reserve().await.ok().map(|permit| Slot { permit })
    }
}

/// What became of one row of a batch.
enum Written {
    Inserted,
    /// Its key was already taken (by this message in an earlier try, or another).
    Existed,
    /// The store refused the row itself.
    Refused(String),
}

/// Why a store operation gave no result.
enum Failed {
    /// The store refused the data ([`StoreError::is_permanent`]).
    Refused(StoreError),
    /// The store was down when the batcher was told to give up.
    GaveUp,
}

impl Written {
    fn classify(rows: &[ChatMessage], inserted: Vec<(String, u64)>) -> Vec<Written> {
        let inserted: HashSet<(&str, u64)> = inserted
            .iter()
            .map(|(room, seq)| (room.as_str(), *seq))
            .collect();
        rows.iter()
            .map(|m| {
                if inserted.contains(&(m.room.as_str(), m.seq)) {
                    Written::Inserted
                } else {
                    Written::Existed
                }
            })
            .collect()
    }
}

struct Worker {
    store: Arc<dyn HistoryStore>,
    rx: mpsc::Receiver<Job>,
    max_batch: usize,
    metrics: Arc<Metrics>,
    down: Arc<AtomicBool>,
    spill: Option<RedisSpill>,
    give_up: CancellationToken,
}

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

impl Worker {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut batch = Vec::with_capacity(self.max_batch);
        let mut closed = false;
        loop {
            tokio::select! {
                n = self.rx.recv_many(&mut batch, self.max_batch) => {
                    if n == 0 {
                        break;
                    }
                    self.commit(&mut batch).await;
                }
                _ = shutdown.cancelled(), if !closed => {
                    // Refuse new slots; what is queued (and reserved) still drains.
                    self.rx.close();
                    closed = true;
                }
                _ = tokio::time::sleep(BACKOFF_MAX), if self.down.load(Ordering::Relaxed) => {
                    // Nothing to write, but the store is marked down: probe it so
                    // sends are accepted again as soon as it is back.
                    if self.store.ping().await.is_ok() {
                        self.set_down(false, None);
                    }
                }
            }
        }
    }

    /// Writes one batch and resolves each job's commit.
    async fn commit(&self, batch: &mut Vec<Job>) {
        let rows: Vec<ChatMessage> = batch.iter().map(|j| j.msg.clone()).collect();
        let written = if self.give_up.is_cancelled() && self.down.load(Ordering::Relaxed) {
            Err(Failed::GaveUp)
        } else {
            self.write(&rows).await
        };
        let Ok(written) = written else {
            return self.spill(&rows, batch).await;
        };
        self.metrics.persist_batch.observe(rows.len() as f64);
        for (job, written) in batch.drain(..).zip(written) {
            let outcome = match written {
                Written::Inserted => Ok(()),
                Written::Refused(reason) => Err(CommitError::Refused(reason)),
                // The key already existed: fine if it is this very message (a retried
                // insert that had committed), a conflict otherwise (never acked).
                Written::Existed => match self
                    .retry(|| self.store.get(&job.msg.room, job.msg.seq))
                    .await
                {
                    Ok(Some(stored)) if stored == job.msg => Ok(()),
                    Ok(Some(stored)) if stored.is_tombstone() => {
                        tracing::warn!(room = %job.msg.room, seq = job.msg.seq, "commit came after readers gave the seq up; not acked");
                        Err(CommitError::GivenUp(job.msg.seq))
                    }
                    Ok(_) => {
                        tracing::error!(room = %job.msg.room, seq = job.msg.seq, "seq conflict in the history store");
                        Err(CommitError::Conflict(job.msg.seq))
                    }
                    Err(Failed::Refused(e)) => Err(CommitError::Refused(e.to_string())),
                    Err(Failed::GaveUp) => Err(CommitError::Aborted),
                },
            };
            self.metrics
                .persist_latency
                .observe(job.accepted.elapsed().as_secs_f64());
            // The session may be gone; the row is stored either way.
            let _ = job.done.send(outcome);
        }
    }

    /// Inserts `rows`, retrying transient errors. When the store refuses the batch
    /// itself (a poison row), the rows are written one by one, so only the row the
    /// store cannot hold is refused and every other room's messages commit.
    async fn write(&self, rows: &[ChatMessage]) -> Result<Vec<Written>, Failed> {
        let refused = match self.retry(|| self.store.insert(rows)).await {
            Ok(inserted) => return Ok(Written::classify(rows, inserted)),
            Err(Failed::Refused(e)) => e,
            Err(Failed::GaveUp) => return Err(Failed::GaveUp),
        };
        if rows.len() == 1 {
            tracing::warn!(room = %rows[0].room, seq = rows[0].seq, error = %refused, "the history store refused a message");
            return Ok(vec![Written::Refused(refused.to_string())]);
        }
        tracing::warn!(rows = rows.len(), error = %refused, "the history store refused a batch; writing its rows one by one");
        let mut written = Vec::with_capacity(rows.len());
        for row in rows {
            written.extend(Box::pin(self.write(std::slice::from_ref(row))).await?);
        }
        Ok(written)
    }

    /// The store is down and the grace period is ending: hands the rows to the
    /// spill (or counts them lost without one). Their senders are not acked.
    async fn spill(&self, rows: &[ChatMessage], batch: &mut Vec<Job>) {
        match &self.spill {
            Some(spill) => match spill.push(rows).await {
                Ok(()) => tracing::warn!(
                    rows = rows.len(),
                    "history store down at shutdown; spilled pending writes to Redis for another instance to store"
                ),
                Err(e) => tracing::error!(
                    rows = rows.len(),
                    error = %e,
                    "history store down at shutdown and the spill failed; pending writes lost"
                ),
            },
            None => tracing::error!(
                rows = rows.len(),
                "history store down at shutdown and no Redis to spill to; pending writes lost"
            ),
        }
        for job in batch.drain(..) {
            let _ = job.done.send(Err(CommitError::Aborted));
        }
    }

    /// Runs a store operation until it succeeds or fails permanently, marking the
    /// store down while it fails transiently, until told to give up.
    async fn retry<'a, T>(
        &self,
        op: impl Fn() -> BoxFuture<'a, Result<T, StoreError>>,
    ) -> Result<T, Failed> {
        let mut backoff = BACKOFF_MIN;
        loop {
            match op().await {
                Ok(value) => {
                    self.set_down(false, None);
                    return Ok(value);
                }
                // The store answered: it is up, it just cannot hold this data.
                Err(e) if e.is_permanent() => {
                    self.set_down(false, None);
                    return Err(Failed::Refused(e));
                }
                Err(e) => {
                    self.set_down(true, Some(&e.to_string()));
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.give_up.cancelled() => return Err(Failed::GaveUp),
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    fn set_down(&self, down: bool, reason: Option<&str>) {
        let was = self.down.swap(down, Ordering::Relaxed);
        match (was, down) {
            (false, true) => tracing::warn!(
                reason = reason.unwrap_or(""),
                "history store down; refusing sends"
            ),
            (true, false) => tracing::info!("history store back; accepting sends"),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Range;
    use crate::store::sqlite::SqliteStore;
    use std::sync::Mutex;

    fn msg(room: &str, seq: u64, body: &str) -> ChatMessage {
        ChatMessage {
            room: room.into(),
            seq,
            user: "u".into(),
            body: body.into(),
            ts: 1,
        }
    }

    /// A real SQLite store whose writes can be made to fail, and which records
    /// the size of each insert.
    struct Flaky {
        inner: SqliteStore,
        fail: AtomicBool,
        sizes: Mutex<Vec<usize>>,
    }

    impl HistoryStore for Flaky {
        fn insert(
            &self,
            rows: &[ChatMessage],
        ) -> BoxFuture<'_, Result<Vec<(String, u64)>, StoreError>> {
            self.sizes.lock().unwrap().push(rows.len());
            if self.fail.load(Ordering::SeqCst) {
                return Box::pin(async { Err(StoreError::Db(sqlx::Error::PoolTimedOut)) });
            }
            self.inner.insert(rows)
        }
        fn get<'a>(
            &'a self,
            room: &'a str,
            seq: u64,
        ) -> BoxFuture<'a, Result<Option<ChatMessage>, StoreError>> {
            self.inner.get(room, seq)
        }
        fn range<'a>(
            &'a self,
            room: &'a str,
            r: Range,
        ) -> BoxFuture<'a, Result<Vec<ChatMessage>, StoreError>> {
            self.inner.range(room, r)
        }
        fn max_seq<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<u64, StoreError>> {
            self.inner.max_seq(room)
        }
        fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
            self.inner.ping()
        }
    }

    async fn flaky(dir: &std::path::Path) -> Arc<Flaky> {
        let inner = SqliteStore::open(&dir.join("h.db")).await.unwrap();
        Arc::new(Flaky {
            inner,
            fail: AtomicBool::new(false),
            sizes: Mutex::new(vec![]),
        })
    }

    fn tempdir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("chat-batcher-{name}-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[tokio::test]
    async fn groups_rows_and_survives_store_errors() {
        let dir = tempdir("group");
        let store = flaky(&dir).await;
        let shutdown = CancellationToken::new();
        let (b, handle) = Batcher::spawn(
            store.clone(),
            (100, 1000),
            Arc::new(Metrics::new()),
            None,
            Stop {
                shutdown: shutdown.clone(),
                give_up: CancellationToken::new(),
            },
        );

        store.fail.store(true, Ordering::SeqCst);
        let mut commits = Vec::new();
        for seq in 1..=50 {
            commits.push(b.reserve().await.unwrap().submit(msg("r", seq, "x")));
        }
        // Wait until the batcher has seen a failure (bounded, not timed).
        let until = Instant::now() + Duration::from_secs(10);
        while !b.store_down() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(b.store_down());
        store.fail.store(false, Ordering::SeqCst);
        for c in commits {
            assert_eq!(
                tokio::time::timeout(Duration::from_secs(10), c)
                    .await
                    .unwrap()
                    .unwrap(),
                Ok(())
            );
        }
        assert!(!b.store_down());
        // Rows were grouped: far fewer inserts than rows.
        assert!(store.sizes.lock().unwrap().iter().any(|&n| n > 1));
        let rows = store
            .range(
                "r",
                Range {
                    after: Some(0),
                    before: None,
                    limit: 100,
                },
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 50);
        assert!(rows.iter().enumerate().all(|(i, m)| m.seq == i as u64 + 1));

        // A different message under an existing key is a conflict, never an ack;
        // the same message again is fine (an idempotent retry).
        let same = b.reserve().await.unwrap().submit(msg("r", 1, "x"));
        let other = b.reserve().await.unwrap().submit(msg("r", 2, "different"));
        assert_eq!(same.await.unwrap(), Ok(()));
        assert_eq!(other.await.unwrap(), Err(CommitError::Conflict(2)));

        // Shutdown drains what was queued.
        let last = b.reserve().await.unwrap().submit(msg("r", 51, "x"));
        shutdown.cancel();
        assert_eq!(last.await.unwrap(), Ok(()));
        drop(b);
        tokio::time::timeout(Duration::from_secs(10), handle)
            .await
            .unwrap()
            .unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }
}
