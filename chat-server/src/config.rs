//! Runtime configuration: one clap struct, every flag backed by an env var.
//!
//! The same struct is the library's configuration API: the binary parses it from
//! argv + env, and tests or the load tool build it with `Config::parse_from([...])`.
//! Which backends run is decided here too: `--redis-url`/`--database-url` select
//! Redis and PostgreSQL, their absence the embedded in-process broker and SQLite.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// chat-server: WebSocket chat rooms over Redis Pub/Sub with PostgreSQL history.
#[derive(Debug, Clone, Parser)]
#[command(name = "chat-server", version, about)]
pub struct Config {
    /// Address to listen on (used by the binary; `run` takes a bound listener).
    #[arg(long, env = "CHAT_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Connections the kernel may hold completed but not yet accepted (capped by
    /// net.core.somaxconn). Past it, new clients' SYNs are dropped and they retry
    /// after 1 s: size it for the largest connect burst.
    #[arg(long, env = "CHAT_LISTEN_BACKLOG", default_value_t = 4096)]
    pub listen_backlog: u32,

    /// Redis URL (redis://host:port/db). Unset: in-process broker and presence.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// Milliseconds one Redis command or connection attempt may take before it
    /// fails (once retried on a fresh connection): a join or send waiting on a
    /// hung Redis is refused with `unavailable` after about twice this.
    #[arg(long, env = "CHAT_REDIS_TIMEOUT_MS", default_value_t = 2_000)]
    pub redis_timeout_ms: u64,

    /// PostgreSQL URL (postgres://...). Unset: SQLite history in `--sqlite-path`.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,

    /// SQLite history file for the embedded mode.
    #[arg(long, env = "CHAT_SQLITE_PATH", default_value = "chat-history.db")]
    pub sqlite_path: PathBuf,

    /// HS256 secret for JWT auth. Unset: anonymous users pick their name.
    #[arg(long, env = "CHAT_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Name of this instance in logs and presence entries (default: the hostname).
    #[arg(long, env = "CHAT_INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// Maximum concurrent WebSocket connections; more are closed with 1013.
    #[arg(long, env = "CHAT_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Maximum WebSocket frame/message size in bytes; larger closes with 1009.
    #[arg(long, env = "CHAT_MAX_FRAME_BYTES", default_value_t = 65_536)]
    pub max_frame_bytes: usize,

    /// Maximum message body in bytes of UTF-8; larger gets `too_large`.
    #[arg(long, env = "CHAT_MAX_BODY_BYTES", default_value_t = 4096)]
    pub max_body_bytes: usize,

    /// Sustained client frames per second per connection.
    #[arg(long, env = "CHAT_RATE_PER_SEC", default_value_t = 50)]
    pub rate_per_sec: u32,

    /// Burst of client frames per connection above the sustained rate.
    #[arg(long, env = "CHAT_RATE_BURST", default_value_t = 100)]
    pub rate_burst: u32,

    /// Frames buffered per connection before it is closed with 4000 (slow consumer).
    #[arg(long, env = "CHAT_OUTBOUND_QUEUE", default_value_t = 1024)]
    pub outbound_queue: usize,

    /// Rooms one connection may be in at once.
    #[arg(long, env = "CHAT_MAX_ROOMS_PER_CONNECTION", default_value_t = 100)]
    pub max_rooms_per_connection: usize,

    /// Largest `limit` accepted by `history` and the messages API.
    #[arg(long, env = "CHAT_HISTORY_MAX_LIMIT", default_value_t = 200)]
    pub history_max_limit: u32,

    /// Seconds after which the presence entries of a dead instance expire.
    #[arg(long, env = "CHAT_PRESENCE_TTL_SECS", default_value_t = 30)]
    pub presence_ttl_secs: u64,

    /// Seconds shutdown may take: close sockets, flush pending history writes.
    #[arg(long, env = "CHAT_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,

    /// Most rows written by one group commit (one multi-row INSERT).
    #[arg(long, env = "CHAT_PERSIST_BATCH", default_value_t = 500)]
    pub persist_batch: usize,

    /// Accepted messages that may wait for their commit; a full queue slows senders down.
    #[arg(long, env = "CHAT_PERSIST_QUEUE", default_value_t = 20_000)]
    pub persist_queue: usize,

    /// Joins served at once; more wait their turn (for at most
    /// `--join-queue-wait-secs`), so a reconnect storm is queued instead of
    /// timing out the backends.
    #[arg(long, env = "CHAT_JOIN_CONCURRENCY", default_value_t = 128)]
    pub join_concurrency: usize,

    /// Seconds a join may wait for its turn before it is refused with `unavailable`.
    #[arg(long, env = "CHAT_JOIN_QUEUE_WAIT_SECS", default_value_t = 30)]
    pub join_queue_wait_secs: u64,

    /// Milliseconds a missing seq is waited for (its commit may be in flight) before
    /// readers give it up; a commit later than that is refused, never acked.
    #[arg(long, env = "CHAT_GAP_WAIT_MS", default_value_t = 10_000)]
    pub gap_wait_ms: u64,

    #[command(flatten)]
    pub rebalance: crate::rebalance::RebalanceConfig,
}

impl Config {
    /// The instance name: `--instance-id`, else the hostname, else `chat-server`.
    pub fn instance_name(&self) -> String {
        if let Some(id) = self.instance_id.as_deref().filter(|s| !s.is_empty()) {
            return id.to_owned();
        }
        std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "chat-server".to_owned())
    }

    pub fn presence_ttl(&self) -> Duration {
        Duration::from_secs(self.presence_ttl_secs.max(1))
    }

    pub fn join_queue_wait(&self) -> Duration {
        Duration::from_secs(self.join_queue_wait_secs)
    }

    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }

    pub fn gap_wait(&self) -> Duration {
        Duration::from_millis(self.gap_wait_ms)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// The history store's address without credentials: the same for every
    /// instance of a cluster, and different for clusters with other databases.
    pub fn store_name(&self) -> String {
        match &self.database_url {
            Some(url) => {
                let rest = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
                rest.rsplit_once('@')
                    .map_or(rest, |(_, host)| host)
                    .to_owned()
            }
            None => format!("sqlite:{}", self.sqlite_path.display()),
        }
    }

    /// Rejects limits that would make the server unusable, with a clear message.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("--listen-backlog", self.listen_backlog as usize),
            ("--max-connections", self.max_connections),
            ("--max-frame-bytes", self.max_frame_bytes),
            ("--max-body-bytes", self.max_body_bytes),
            ("--outbound-queue", self.outbound_queue),
            ("--max-rooms-per-connection", self.max_rooms_per_connection),
            ("--persist-batch", self.persist_batch),
            ("--persist-queue", self.persist_queue),
            ("--rate-per-sec", self.rate_per_sec as usize),
            ("--rate-burst", self.rate_burst as usize),
            ("--history-max-limit", self.history_max_limit as usize),
            ("--gap-wait-ms", self.gap_wait_ms as usize),
            ("--redis-timeout-ms", self.redis_timeout_ms as usize),
            ("--join-concurrency", self.join_concurrency),
            ("--join-queue-wait-secs", self.join_queue_wait_secs as usize),
        ];
        for (flag, value) in positive {
            if value == 0 {
                return Err(format!("{flag} must be at least 1"));
            }
        }
        // Five bind parameters per row; SQLite allows 32766 per statement.
        if self.persist_batch > 5000 {
            return Err("--persist-batch must be at most 5000".into());
        }
        self.rebalance.validate(self.redis_url.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_from_explicit_flags() {
        let c = Config::parse_from([
            "chat-server",
            "--redis-url",
            "redis://127.0.0.1:1/",
            "--max-connections",
            "3",
        ]);
        assert_eq!(c.redis_url.as_deref(), Some("redis://127.0.0.1:1/"));
        assert_eq!(c.max_connections, 3);
        assert_eq!(c.max_frame_bytes, 65_536);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn zero_limits_are_rejected() {
        let c = Config::parse_from(["chat-server", "--outbound-queue", "0"]);
        assert_eq!(
            c.validate().unwrap_err(),
            "--outbound-queue must be at least 1"
        );
    }

    #[test]
    fn the_store_name_leaves_out_credentials() {
        let c = Config::parse_from([
            "chat-server",
            "--database-url",
            "postgres://chat:s3cret@db.svc:5432/chat?sslmode=disable",
        ]);
        assert_eq!(c.store_name(), "db.svc:5432/chat?sslmode=disable");
        let c = Config::parse_from(["chat-server", "--sqlite-path", "/data/h.db"]);
        assert_eq!(c.store_name(), "sqlite:/data/h.db");
    }
}
