//! The chatback operator: turns a `ChatCluster` into a running chat stack.
//!
//! The binary (`main.rs`) is a thin CLI over this library. Builders (one module
//! per kind of child) are pure functions of the ChatCluster, which makes them
//! unit-testable and shared by `operator render` and the controller.

pub mod app_role;
pub mod autoscaler;
pub mod backend;
pub mod backoff;
pub mod children;
pub mod controller;
pub mod disruption_budget;
pub mod error;
pub mod http;
pub mod leader;
pub mod load_test;
pub mod meta;
pub mod metrics;
pub mod network_policy;
pub mod pod;
pub mod postgres;
pub mod rbac;
pub mod redis;
pub mod render;
pub mod secrets;
pub mod server;
pub mod status;

pub use error::{Error, Result};
