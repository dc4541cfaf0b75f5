//! PostgreSQL history: the clustered deployment's store.
//!
//! Group commits use one `INSERT ... SELECT FROM UNNEST(arrays)` per batch: a single
//! statement with five array parameters whatever the batch size, so the plan is
//! cached and there is no bind-parameter limit.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use super::{BoxFuture, HistoryStore, StoreError, clamp};
use crate::protocol::ChatMessage;

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

    super::history_reads!();
}
