//! The shared services of a test run, named by the environment `scripts/test.sh`
//! sets, and unique names so tests sharing them do not see each other.

fn required(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is unset (set by scripts/test.sh)"))
}

/// The shared Redis (`CHAT_TEST_REDIS_URL`).
pub fn redis_url() -> String {
    required("CHAT_TEST_REDIS_URL")
}

/// The shared PostgreSQL's admin database (`CHAT_TEST_DATABASE_URL`); tests
/// make their own database with [`crate::fresh_database`].
pub fn admin_database_url() -> String {
    required("CHAT_TEST_DATABASE_URL")
}

/// `prefix` and 64 random bits: room names, database names, directories.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}
