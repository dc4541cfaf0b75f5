//! Errors that stop a run before or after the load itself.
//!
//! Failures *during* the load (a refused connection, an error frame, a close)
//! are not errors of the tool: they are measurements and end up in the report.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("invalid arguments: {0}")]
    Args(String),
    #[error("cannot resolve {url}: {source}")]
    Resolve { url: String, source: std::io::Error },
    #[error("cannot reach {url}: {reason} (is chat-server running there?)")]
    Unreachable { url: String, reason: String },
    #[error("{url} refused the connection with close 1008 `{reason}`: {hint}")]
    Auth {
        url: String,
        reason: String,
        hint: &'static str,
    },
    #[error(
        "{clients} clients need about {needed} file descriptors but RLIMIT_NOFILE is {limit} \
         (raise the hard limit, e.g. `ulimit -Hn`, or use fewer clients)"
    )]
    FileLimit {
        clients: u32,
        needed: u64,
        limit: u64,
    },
    #[error("cannot start the generator: {0}")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    Barrier(#[from] crate::barrier::BarrierError),
    #[error("a generator thread panicked")]
    ShardPanicked,
    #[error("wss: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("--verify-history: {0}")]
    History(#[from] crate::history::HistoryError),
    #[error("cannot write the time series to {path}: {source}", path = .path.display())]
    Timeseries {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the HdrHistogram log to {path}: {source}", path = .path.display())]
    HdrLog {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the JSON summary to {path}: {source}", path = .path.display())]
    Json {
        path: PathBuf,
        source: std::io::Error,
    },
}
