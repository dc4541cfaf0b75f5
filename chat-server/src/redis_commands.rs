//! Commands to Redis: one multiplexed connection per instance, shared by the broker
//! and presence, with a retry on a broken connection.
//!
//! [`ConnectionManager`] reconnects by itself, but only after a command has failed
//! on the broken connection: after a Redis restart the first command of every
//! instance would fail (and a join with it). So a command that fails because the
//! connection broke, timed out or was refused is sent once more, on the fresh
//! connection. Every command sent through here is safe to repeat (the publish
//! script is idempotent per publish id; presence writes are set operations).
//! Sharing one manager also means readiness (`PING`) checks the very connection
//! joins and sends use.

use std::future::Future;
use std::time::Duration;

use redis::RedisError;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

#[derive(Clone)]
pub struct Commands {
    conn: ConnectionManager,
    timeout: Duration,
}

impl Commands {
    /// Connects now, failing if Redis is unreachable. `timeout` bounds each
    /// command and connection attempt (`--redis-timeout-ms`): short, so a hung
    /// Redis fails requests fast instead of holding joins and sends.
    pub async fn connect(client: redis::Client, timeout: Duration) -> Result<Commands, RedisError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_with_config(client, config).await?;
        Ok(Commands { conn, timeout })
    }

    /// The bound on one command or connection attempt; the pub/sub connection
    /// uses it too.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends `pipe` as [`run`](Self::run) sends a command: retried once on a
    /// broken connection.
    pub async fn pipeline<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, RedisError> {
        self.run(|mut c| async move { pipe.query_async(&mut c).await })
            .await
    }

    /// Runs `op` on the connection, and once more if it failed on a broken one.
    pub async fn run<T, F, Fut>(&self, op: F) -> Result<T, RedisError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        match op(self.conn.clone()).await {
            Err(e) if broken(&e) => {
                tracing::debug!(error = %e, "redis command failed on a broken connection; retrying once");
                op(self.conn.clone()).await
            }
            other => other,
        }
    }
}

/// Whether an error says the connection (not the command) failed.
fn broken(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}
