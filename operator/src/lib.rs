//! The chatback operator: turns a `ChatCluster` into a running chat stack.
//!
//! The binary (`main.rs`) is a thin CLI over this library. The child builders
//! live in [`children`] (one module per kind of child); they are pure functions
//! of the ChatCluster, which makes them unit-testable and shared by
//! `operator render` and the controller. [`load_test`] reconciles ChatLoadTests
//! into Jobs of chat-load. The rest: [`controller`] (reconcile, error
//! policy) and the [`events`] it records, [`status`], [`meta`] (names, labels,
//! owner references), [`rbac`] (what the operator may do), [`leader`]
//! election, [`render`], and the operator's own [`http`] server and
//! [`metrics`].

pub mod app_role;
pub mod backoff;
pub mod children;
pub mod controller;
pub mod error;
pub mod events;
pub mod http;
pub mod leader;
pub mod load_test;
pub mod meta;
pub mod metrics;
pub mod rbac;
pub mod render;
pub mod status;

pub use error::{Error, Result};
