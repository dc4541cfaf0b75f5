//! The `ChatCluster` custom resource (`chatback.dev/v1alpha1`).
//!
//! This crate is the API contract shared by the operator, its tests and the
//! committed CRD manifest (`crds/chatcluster.yaml`). Keeping the types in their own
//! crate means the tests and the generator can never drift from what the
//! controller reads: the YAML is *generated* from these structs, and a test fails
//! when the committed copy is stale.

mod spec;
mod status;

pub use spec::{
    AuthSpec, AutoscalingSpec, BackendMode, ChatCluster, ChatClusterSpec, LogLevel,
    NetworkPolicySpec, PersistenceSpec, PodDisruptionBudgetSpec, PostgresSpec, PostgresStorage,
    RedisSpec, RetentionPolicy, SecretKeyRef, ServerLimits, ServerSpec,
};
pub use status::{ChatClusterStatus, ConditionType, Phase};

use kube::CustomResourceExt;

/// Where the generated CRD is committed, relative to the workspace root.
pub const CRD_PATH: &str = "crds/chatcluster.yaml";

/// The command that regenerates [`CRD_PATH`].
pub const REGENERATE_COMMAND: &str = "cargo run -p operator -- crd > crds/chatcluster.yaml";

/// The CustomResourceDefinition as a YAML document, exactly as committed.
pub fn crd_yaml() -> String {
    let crd = ChatCluster::crd();
    let yaml = serde_yaml::to_string(&crd).expect("a CustomResourceDefinition always serializes");
    format!(
        "# Generated from crds/src by `{REGENERATE_COMMAND}`; do not edit by hand.\n---\n{yaml}"
    )
}
