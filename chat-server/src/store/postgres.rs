//! PostgreSQL history: the clustered deployment's store.
//!
//! Group commits use one `INSERT ... SELECT FROM UNNEST(arrays)` per batch: a single
//! statement with five array parameters whatever the batch size, so the plan is
//! cached and there is no bind-parameter limit.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use super::{BoxFuture, HistoryStore, Range, StoreError, clamp, row_message, sql_bounds};
use crate::protocol::ChatMessage;

type Row = (String, i64, String, String, i64);

pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects and runs the migrations.
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(3))
            .connect(url)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(PostgresStore { pool })
    }
}

impl HistoryStore for PostgresStore {
    fn insert(
        &self,
        rows: &[ChatMessage],
    ) -> BoxFuture<'_, Result<Vec<(String, u64)>, StoreError>> {
        let rooms: Vec<String> = rows.iter().map(|m| m.room.clone()).collect();
        let seqs: Vec<i64> = rows.iter().map(|m| clamp(m.seq)).collect();
        let users: Vec<String> = rows.iter().map(|m| m.user.clone()).collect();
        let bodies: Vec<String> = rows.iter().map(|m| m.body.clone()).collect();
        let tss: Vec<i64> = rows.iter().map(|m| clamp(m.ts)).collect();
        Box::pin(async move {
            let inserted: Vec<(String, i64)> = sqlx::query_as(
                "INSERT INTO messages (room, seq, user_name, body, ts) \
                 SELECT * FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::text[], $5::int8[]) \
                 ON CONFLICT (room, seq) DO NOTHING RETURNING room, seq",
            )
            .bind(rooms)
            .bind(seqs)
            .bind(users)
            .bind(bodies)
            .bind(tss)
            .fetch_all(&self.pool)
            .await?;
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
                "SELECT room, seq, user_name, body, ts FROM messages WHERE room = $1 AND seq = $2",
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
                 WHERE room = $1 AND seq > $2 AND seq < $3 ORDER BY seq ASC LIMIT $4"
            } else {
                "SELECT room, seq, user_name, body, ts FROM messages \
                 WHERE room = $1 AND seq > $2 AND seq < $3 ORDER BY seq DESC LIMIT $4"
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
                sqlx::query_scalar("SELECT MAX(seq) FROM messages WHERE room = $1")
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
