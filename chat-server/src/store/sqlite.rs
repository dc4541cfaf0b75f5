//! SQLite history: the embedded default, one local file, no service to run.
//!
//! WAL mode with `synchronous=FULL`, so an `ack` means the row survived a crash.
//! SQLite has one writer; the batcher is that writer and turns each batch into one
//! multi-VALUES INSERT (one transaction, one fsync).

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Sqlite, SqlitePool};

use super::{BoxFuture, HistoryStore, Range, StoreError, clamp, row_message, sql_bounds};
use crate::protocol::ChatMessage;

type Row = (String, i64, String, String, i64);

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and runs the migrations.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(SqliteStore { pool })
    }
}

impl HistoryStore for SqliteStore {
    fn insert(
        &self,
        rows: &[ChatMessage],
    ) -> BoxFuture<'_, Result<Vec<(String, u64)>, StoreError>> {
        let mut qb: QueryBuilder<Sqlite> =
            QueryBuilder::new("INSERT INTO messages (room, seq, user_name, body, ts) ");
        qb.push_values(rows, |mut b, m| {
            b.push_bind(m.room.clone())
                .push_bind(clamp(m.seq))
                .push_bind(m.user.clone())
                .push_bind(m.body.clone())
                .push_bind(clamp(m.ts));
        });
        qb.push(" ON CONFLICT (room, seq) DO NOTHING RETURNING room, seq");
        Box::pin(async move {
            let inserted: Vec<(String, i64)> = qb.build_query_as().fetch_all(&self.pool).await?;
            Ok(inserted.into_iter().map(|(r, s)| (r, s as u64)).collect())
        })
    }

    fn get<'a>(
        &'a self,
        room: &'a str,
        seq: u64,
    ) -> BoxFuture<'a, Result<Option<ChatMessage>, StoreError>> {
        Box::pin(async move {
            let row: Option<Row> = sqlx::query_as(
                "SELECT room, seq, user_name, body, ts FROM messages WHERE room = ?1 AND seq = ?2",
            )
            .bind(room)
            .bind(clamp(seq))
            .fetch_optional(&self.pool)
            .await?;
            Ok(row.map(|(r, s, u, b, t)| row_message(r, s, u, b, t)))
        })
    }

    fn range<'a>(
        &'a self,
        room: &'a str,
        range: Range,
    ) -> BoxFuture<'a, Result<Vec<ChatMessage>, StoreError>> {
        Box::pin(async move {
            let (lo, hi, ascending) = sql_bounds(range);
            let sql = if ascending {
                "SELECT room, seq, user_name, body, ts FROM messages \
                 WHERE room = ?1 AND seq > ?2 AND seq < ?3 ORDER BY seq ASC LIMIT ?4"
            } else {
                "SELECT room, seq, user_name, body, ts FROM messages \
                 WHERE room = ?1 AND seq > ?2 AND seq < ?3 ORDER BY seq DESC LIMIT ?4"
            };
            let mut rows: Vec<Row> = sqlx::query_as(sql)
                .bind(room)
                .bind(lo)
                .bind(hi)
                .bind(i64::from(range.limit))
                .fetch_all(&self.pool)
                .await?;
            if !ascending {
                rows.reverse();
            }
            Ok(rows
                .into_iter()
                .map(|(r, s, u, b, t)| row_message(r, s, u, b, t))
                .collect())
        })
    }

    fn max_seq<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let max: Option<i64> =
                sqlx::query_scalar("SELECT MAX(seq) FROM messages WHERE room = ?1")
                    .bind(room)
                    .fetch_one(&self.pool)
                    .await?;
            Ok(max.unwrap_or(0).max(0) as u64)
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        })
    }
}
