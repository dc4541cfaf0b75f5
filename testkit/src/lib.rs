//! What the workspace's black-box tests share, so that chat-server's tests and
//! chat-load's tests start servers, databases and scratch space the same way.
//! Not published; a dev-dependency only.
//!
//! - [`env`]: the shared services `scripts/test.sh` starts (CHAT_TEST_REDIS_URL,
//!   CHAT_TEST_DATABASE_URL) and unique names for per-test isolation.
//! - [`postgres`]: a fresh, empty database per test on the shared PostgreSQL.
//! - [`scratch`]: a temporary directory removed on drop.
//! - [`http`]: a bare HTTP/1.1 GET, enough for /readyz, /metrics and the REST API.
//! - [`port`]: a free loopback port, for processes a test starts itself.
//! - [`server`]: a chat-server running in the test process on 127.0.0.1:0,
//!   through the library's `run(listener, config, shutdown)`.
//!
//! Waits are bounded by [`WAIT`] only so a broken test cannot hang; no
//! assertion depends on how fast anything was.

use std::time::Duration;

pub mod env;
pub mod http;
pub mod port;
pub mod postgres;
pub mod scratch;
pub mod server;

pub use env::{admin_database_url, redis_url, unique};
pub use http::{http_get, http_get_with};
pub use port::free_port;
pub use postgres::fresh_database;
pub use scratch::TempDir;
pub use server::Server;

/// Upper bound for any single wait in a test (never an assertion on speed).
pub const WAIT: Duration = Duration::from_secs(20);
