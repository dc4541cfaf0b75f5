//! Real processes for the fault-injection suite (`tests/faults.rs`).
//!
//! Every scenario owns its Redis, its PostgreSQL cluster and its two
//! `chat-server` processes, all children of the test started in a scratch
//! directory, so the test can SIGKILL or restart any of them without
//! disturbing the shared services the other tests use. The load is the
//! `chat-load` binary, read through its `--json` summary: the suite drives
//! binaries only, never the crates' internals.

pub mod child;
pub mod http;
pub mod load;
pub mod poison;
pub mod postgres;
pub mod redis;
pub mod scratch;
pub mod server;
pub mod stack;

use std::time::Duration;

/// Upper bound for waiting on anything to come up or recover (never an
/// assertion on how fast it did).
pub const WAIT: Duration = Duration::from_secs(30);

/// Whether this process runs as root (PostgreSQL then runs as `postgres`).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
