//! The history store: where messages become durable, and where history is read.
//!
//! [`HistoryStore`] is small on purpose: a multi-row insert for group commit, range
//! reads, and the highest stored seq (to seed a room's counter after the broker lost
//! it). PostgreSQL serves the clustered deployment, SQLite the embedded default; the
//! [`batcher`] turns single accepted messages into group commits for either.

pub use crate::BoxFuture;
use crate::protocol::ChatMessage;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("history store error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("history store migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    /// Whether the store refused the data itself, so that retrying the same write
    /// can never succeed (a poison row). Anything else (I/O, timeouts, a restarting
    /// server, exhausted connections) is transient and worth retrying.
    ///
    /// Permanent: PostgreSQL SQLSTATE classes 22 (data exception, e.g. U+0000 in
    /// `text`), 23 (integrity constraint) and 54 (program limit exceeded); SQLite
    /// TOOBIG, CONSTRAINT and MISMATCH.
    pub fn is_permanent(&self) -> bool {
        let StoreError::Db(sqlx::Error::Database(db)) = self else {
            return false;
        };
        if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
            return matches!(pg.code().get(..2), Some("22" | "23" | "54"));
        }
        // SQLite reports its extended result code as a number.
        db.code()
            .and_then(|code| code.parse::<i32>().ok())
            .is_some_and(|code| matches!(code & 0xff, 18..=20))
    }
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

/// The contract of a history store:
/// - a row is keyed by `(room, seq)` and never changes once stored: `insert` skips
///   keys that exist, so repeating an insert whose outcome is unknown is safe, and
///   the first writer of a key wins (a commit, or a reader's tombstone);
/// - a successful `insert` is durable (for PostgreSQL, committed with the server's
///   `synchronous_commit`), and every later read on any instance sees it;
/// - an `Err` from `insert` means nothing or everything of that call was stored:
///   [`StoreError::is_permanent`] tells whether retrying can help;
/// - reads return rows in seq order and never invent or reorder seqs.
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

/// A `messages` row: room, seq, user_name, body, ts.
pub(crate) type Row = (String, i64, String, String, i64);

pub(crate) fn into_message((room, seq, user, body, ts): Row) -> ChatMessage {
    ChatMessage {
        room,
        seq: seq.max(0) as u64,
        user,
        body,
        ts: ts.max(0) as u64,
    }
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

/// The read side of [`HistoryStore`] for a store with a `pool` field. The SQL is the
/// same on both databases (SQLite accepts `$N` parameters too), so it is written once.
macro_rules! history_reads {
    () => {
        fn get<'a>(
            &'a self,
            room: &'a str,
            seq: u64,
        ) -> $crate::BoxFuture<'a, Result<Option<$crate::protocol::ChatMessage>, $crate::store::StoreError>> {
            Box::pin(async move {
                let row: Option<$crate::store::Row> = sqlx::query_as(
                    "SELECT room, seq, user_name, body, ts FROM messages WHERE room = $1 AND seq = $2",
                )
                .bind(room)
                .bind($crate::store::clamp(seq))
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map($crate::store::into_message))
            })
        }

        fn range<'a>(
            &'a self,
            room: &'a str,
            range: $crate::store::Range,
        ) -> $crate::BoxFuture<'a, Result<Vec<$crate::protocol::ChatMessage>, $crate::store::StoreError>> {
            Box::pin(async move {
                let (lo, hi, ascending) = $crate::store::sql_bounds(range);
                let sql = if ascending {
                    "SELECT room, seq, user_name, body, ts FROM messages \
                     WHERE room = $1 AND seq > $2 AND seq < $3 ORDER BY seq ASC LIMIT $4"
                } else {
                    "SELECT room, seq, user_name, body, ts FROM messages \
                     WHERE room = $1 AND seq > $2 AND seq < $3 ORDER BY seq DESC LIMIT $4"
                };
                let mut rows: Vec<$crate::store::Row> = sqlx::query_as(sql)
                    .bind(room)
                    .bind(lo)
                    .bind(hi)
                    .bind(i64::from(range.limit))
                    .fetch_all(&self.pool)
                    .await?;
                if !ascending {
                    rows.reverse();
                }
                Ok(rows.into_iter().map($crate::store::into_message).collect())
            })
        }

        fn max_seq<'a>(&'a self, room: &'a str) -> $crate::BoxFuture<'a, Result<u64, $crate::store::StoreError>> {
            Box::pin(async move {
                let max: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM messages WHERE room = $1")
                    .bind(room)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(max.unwrap_or(0).max(0) as u64)
            })
        }

        fn ping(&self) -> $crate::BoxFuture<'_, Result<(), $crate::store::StoreError>> {
            Box::pin(async move {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            })
        }
    };
}
pub(crate) use history_reads;

pub mod batcher;
pub mod postgres;
pub mod spill;
pub mod sqlite;
