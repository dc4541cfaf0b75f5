//! The history store: where messages become durable, and where history is read.
//!
//! [`HistoryStore`] is small on purpose: a multi-row insert for group commit, range
//! reads, and the highest stored seq (to seed a room's counter after the broker lost
//! it). PostgreSQL serves the clustered deployment, SQLite the embedded default; the
//! [`batcher`] turns single accepted messages into group commits for either.

pub mod batcher;
pub mod postgres;
pub mod sqlite;

pub use crate::BoxFuture;
use crate::protocol::ChatMessage;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("history store error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("history store migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Which slice of a room's history to read (see `GET /api/rooms/{room}/messages`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// Only seq > after; when set, the oldest `limit` of the range are returned.
    pub after: Option<u64>,
    /// Only seq < before; without `after`, the newest `limit` are returned.
    pub before: Option<u64>,
    pub limit: u32,
}

pub trait HistoryStore: Send + Sync + 'static {
    /// Inserts rows, skipping keys that exist; returns the (room, seq) keys inserted.
    fn insert(&self, rows: &[ChatMessage])
    -> BoxFuture<'_, Result<Vec<(String, u64)>, StoreError>>;
    /// One stored message.
    fn get<'a>(
        &'a self,
        room: &'a str,
        seq: u64,
    ) -> BoxFuture<'a, Result<Option<ChatMessage>, StoreError>>;
    /// Messages of a range, oldest first.
    fn range<'a>(
        &'a self,
        room: &'a str,
        range: Range,
    ) -> BoxFuture<'a, Result<Vec<ChatMessage>, StoreError>>;
    /// The highest stored seq of a room, 0 if none.
    fn max_seq<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<u64, StoreError>>;
    /// Whether the store answers.
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;
}

/// Bounds as the SQL sees them: `seq > lo AND seq < hi`, ascending when `after` was set.
pub(crate) fn sql_bounds(range: Range) -> (i64, i64, bool) {
    let lo = range.after.map_or(0, clamp);
    let hi = range.before.map_or(i64::MAX, clamp);
    (lo, hi, range.after.is_some())
}

pub(crate) fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Builds a message from a row's columns (`seq`/`ts` are BIGINT).
pub(crate) fn row_message(
    room: String,
    seq: i64,
    user: String,
    body: String,
    ts: i64,
) -> ChatMessage {
    ChatMessage {
        room,
        seq: seq.max(0) as u64,
        user,
        body,
        ts: ts.max(0) as u64,
    }
}
