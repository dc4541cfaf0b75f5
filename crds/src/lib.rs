//! The `ChatCluster` and `ChatLoadTest` custom resources (`chatback.dev/v1alpha1`).
//!
//! This crate is the API contract shared by the operator, its tests and the
//! committed CRD manifests (`crds/chatcluster.yaml`, `crds/chatloadtest.yaml`). Keeping the types in their own
//! crate means the tests and the generator can never drift from what the
//! controller reads: the YAML is *generated* from these structs, and a test fails
//! when the committed copy is stale.

mod load_test;
mod spec;
mod status;

pub use load_test::{
    ChatLoadTest, ChatLoadTestSpec, ChatLoadTestStatus, LoadTarget, LoadTestPhase, Scenario,
};
pub use spec::{
    AuthSpec, AutoscalingSpec, BackendMode, ChatCluster, ChatClusterSpec, LogLevel,
    NetworkPolicySpec, PersistenceSpec, PodDisruptionBudgetSpec, PostgresSpec, PostgresStorage,
    RebalanceSpec, RedisSpec, RetentionPolicy, SecretKeyRef, ServerLimits, ServerSpec,
};
pub use status::{ChatClusterStatus, ConditionType, Phase};

use kube::CustomResourceExt;

/// Where the generated CRD is committed, relative to the workspace root.
pub const CRD_PATH: &str = "crds/chatcluster.yaml";

/// The command that regenerates [`CRD_PATH`].
pub const REGENERATE_COMMAND: &str = "cargo run -p operator -- crd > crds/chatcluster.yaml";

/// Where the generated ChatLoadTest CRD is committed.
pub const LOAD_TEST_CRD_PATH: &str = "crds/chatloadtest.yaml";

/// The command that regenerates [`LOAD_TEST_CRD_PATH`].
pub const LOAD_TEST_REGENERATE_COMMAND: &str =
    "cargo run -p operator -- crd chatloadtest > crds/chatloadtest.yaml";

/// The ChatCluster CustomResourceDefinition as a YAML document, exactly as committed.
pub fn crd_yaml() -> String {
    generated(&ChatCluster::crd(), REGENERATE_COMMAND)
}

/// The ChatLoadTest CustomResourceDefinition as a YAML document, exactly as committed.
pub fn load_test_crd_yaml() -> String {
    generated(&ChatLoadTest::crd(), LOAD_TEST_REGENERATE_COMMAND)
}

fn generated(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    command: &str,
) -> String {
    let yaml = serde_yaml::to_string(crd).expect("a CustomResourceDefinition always serializes");
    format!("# Generated from crds/src by `{command}`; do not edit by hand.\n---\n{yaml}")
}
