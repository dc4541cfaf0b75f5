//! SQLite history: the embedded default, one local file, no service to run.
//!
//! WAL mode with `synchronous=FULL`, so an `ack` means the row survived a crash.
//! SQLite has one writer; the batcher is that writer and turns each batch into one
//! multi-VALUES INSERT (one transaction, one fsync).

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Sqlite, SqlitePool};

use super::{BoxFuture, HistoryStore, StoreError, clamp};
use crate::protocol::ChatMessage;

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

    super::history_reads!();
}
