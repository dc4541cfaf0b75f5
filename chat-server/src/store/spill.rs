//! The spill: where pending history writes go when the store is still down at the
//! end of the shutdown grace period, so that a store outage during a rolling
//! restart does not lose what members already saw live.
//!
//! The batcher gives up on the store a little before the grace period ends and
//! pushes every row it still holds onto a Redis list, one per store (the key names
//! the database, not the instance, so any instance of the cluster can finish the
//! job). Every instance drains that list: at start and every [`DRAIN_EVERY`] while
//! its store is up. A drain feeds the rows through its own batcher, so they are
//! inserted if absent like any commit; the rows leave the list only once each has a
//! definite outcome. Drains by several instances are serialized by a lock key with
//! a TTL, and a crash mid-drain leaves the rows on the list for the next one (a
//! second insert of the same row is a no-op).
//!
//! Limits: a spilled row is stored only if it is drained before a reader gives its
//! seq up (`--gap-wait-ms` after the store is back; a drain runs every 2 s). If it
//! is not, the reader's tombstone wins and the row is dropped with a warning; it was
//! never acked. Without Redis there is nowhere to spill: the rows are counted in
//! an error log line and lost, as before.

use std::time::Duration;

use redis::{AsyncCommands, RedisError, Script};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::batcher::{Batcher, CommitError};
use crate::protocol::ChatMessage;
use crate::redis_commands::Commands;

/// How often an instance looks for spilled rows.
pub const DRAIN_EVERY: Duration = Duration::from_secs(2);
/// Rows per drain round.
const DRAIN_ROUND: isize = 200;
/// How long one drainer holds the lock at most (it is released when done).
const LOCK_TTL_MS: u64 = 30_000;
const RELEASE_LUA: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    #[error("a spilled row is not a message: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("the server is shutting down")]
    Aborted,
}

/// The spill list of one history store, on Redis.
#[derive(Clone)]
pub struct RedisSpill {
    commands: Commands,
    key: String,
    lock: String,
    node: String,
    /// Deletes the lock only if this instance still holds it.
    release: Script,
}

impl RedisSpill {
    /// `store` names the history store (its URL without credentials): only
    /// instances writing to the same store drain each other's spills.
    pub fn new(commands: Commands, store: &str, node: String) -> RedisSpill {
        let key = format!("chat:spill:{store}");
        RedisSpill {
            commands,
            lock: format!("{key}:lock"),
            key,
            node,
            release: Script::new(RELEASE_LUA),
        }
    }

    /// Appends rows to the list, in one command.
    pub async fn push(&self, rows: &[ChatMessage]) -> Result<(), SpillError> {
        let encoded = rows
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()?;
        let _: i64 = self
            .commands
            .run(|mut conn| {
                let (key, encoded) = (self.key.clone(), encoded.clone());
                async move { conn.rpush(key, encoded).await }
            })
            .await?;
        Ok(())
    }

    /// Drains the list now and then every [`DRAIN_EVERY`] while the store is up,
    /// until `shutdown`.
    pub fn start(self, batcher: Batcher, shutdown: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                if !batcher.store_down() {
                    match self.drain(&batcher).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(rows = n, "stored spilled history writes"),
                        Err(SpillError::Aborted) => return,
                        Err(e) => {
                            tracing::warn!(error = %e, "draining the spill failed; will retry")
                        }
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(DRAIN_EVERY) => {}
                }
            }
        })
    }

    /// Commits every spilled row through `batcher`; returns how many rows left the
    /// list. Does nothing when another instance holds the lock.
    pub async fn drain(&self, batcher: &Batcher) -> Result<usize, SpillError> {
        let waiting: usize = self
            .commands
            .run(|mut conn| {
                let key = self.key.clone();
                async move { conn.llen(key).await }
            })
            .await?;
        if waiting == 0 || !self.lock().await? {
            return Ok(0);
        }
        let drained = self.drain_locked(batcher).await;
        let _: Result<i64, _> = self
            .commands
            .run(|mut conn| {
                let mut call = self.release.prepare_invoke();
                call.key(&self.lock).arg(&self.node);
                async move { call.invoke_async(&mut conn).await }
            })
            .await;
        drained
    }

    async fn lock(&self) -> Result<bool, SpillError> {
        let set: Option<String> = self
            .commands
            .run(|mut conn| {
                let (lock, node) = (self.lock.clone(), self.node.clone());
                let options = redis::SetOptions::default()
                    .conditional_set(redis::ExistenceCheck::NX)
                    .with_expiration(redis::SetExpiry::PX(LOCK_TTL_MS));
                async move { conn.set_options(lock, node, options).await }
            })
            .await?;
        Ok(set.is_some())
    }

    async fn drain_locked(&self, batcher: &Batcher) -> Result<usize, SpillError> {
        let mut drained = 0;
        loop {
            let encoded: Vec<String> = self
                .commands
                .run(|mut conn| {
                    let key = self.key.clone();
                    async move { conn.lrange(key, 0, DRAIN_ROUND - 1).await }
                })
                .await?;
            if encoded.is_empty() {
                return Ok(drained);
            }
            let mut commits = Vec::with_capacity(encoded.len());
            for row in &encoded {
                let msg: ChatMessage = serde_json::from_str(row)?;
                let slot = batcher.reserve().await.ok_or(SpillError::Aborted)?;
                commits.push(slot.submit(msg));
            }
            // Each row has a definite outcome (stored, or refused and logged by the
            // batcher) before it leaves the list; a shutdown leaves them on it.
            for commit in commits {
                let outcome = commit.await.unwrap_or(Err(CommitError::Aborted));
                if outcome == Err(CommitError::Aborted) {
                    return Err(SpillError::Aborted);
                }
            }
            let n = encoded.len();
            let _: () = self
                .commands
                .run(|mut conn| {
                    let key = self.key.clone();
                    async move { conn.ltrim(key, n as isize, -1).await }
                })
                .await?;
            drained += n;
        }
    }
}
