//! `chat-load`: a WebSocket load generator for chat-server that measures what
//! chat users feel (latency from one client's send to delivery at every member
//! of the room) and audits that every message arrived exactly once, in order.
//!
//! The binary is a thin wrapper over [`run::run`]; the modules are:
//! * [`cli`], [`endpoint`], [`auth`], [`threshold`]: what the user asked for;
//! * [`plan`]: placement and timetable of every client, decided up front;
//! * [`run`], [`shard`], [`client`], [`shared`], [`barrier`]: the load itself;
//! * [`protocol`], [`wire`], [`engineio`], [`socketio`], [`stamp`]: the
//!   protocols spoken (`--protocol`) and the correlation stamps;
//! * [`recorder`], [`audit`], [`stamp_audit`], [`report`], [`progress`],
//!   [`sysres`]: what was measured;
//! * [`merge`]: the summaries of `--shard` generators merged into one.

pub mod audit;
pub mod auth;
pub mod barrier;
pub mod churn;
pub mod cli;
pub mod client;
pub mod endpoint;
pub mod engineio;
pub mod error;
pub mod hdr_log;
pub mod history;
pub mod lag_probe;
pub mod merge;
pub mod pacing;
pub mod plan;
pub mod progress;
pub mod protocol;
pub mod recorder;
pub mod report;
pub mod run;
pub mod scenario;
pub mod shard;
pub mod shared;
pub mod socketio;
pub mod stamp;
pub mod stamp_audit;
pub mod sysres;
pub mod threshold;
pub mod timeseries;
pub mod tls;
pub mod wire;

pub use cli::Args;
pub use error::LoadError;
pub use report::Summary;
