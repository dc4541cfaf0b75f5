//! The observed state of a chat cluster, written only by the operator.
//!
//! Everything here is read from the children's real status (Deployment and
//! StatefulSet replica counts), never assumed from what was applied, so that
//! `kubectl get cc` tells the truth. `replicas` and `selector` also back the
//! scale subresource, which is what lets a HorizontalPodAutoscaler (and
//! `kubectl scale cc`) drive the cluster.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The observed state of a ChatCluster.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChatClusterStatus {
    /// Pending, Provisioning, Ready or Degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Ready, RedisReady, PostgresReady, ServerReady and Reconciled.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// chat-server pods that exist (the scale subresource's status replicas).
    #[serde(default)]
    pub replicas: i32,
    /// chat-server pods that pass their readiness probe.
    #[serde(default)]
    pub ready_replicas: i32,
    /// The label selector of the chat-server pods, for the scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The WebSocket endpoint inside the cluster, `ws://<name>.<namespace>.svc:<port>/ws`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// The cluster's overall phase.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting on something the operator cannot create itself (an external Secret).
    Pending,
    /// Children are applied and coming up; no chat-server pod is ready yet.
    Provisioning,
    /// Every backend and every desired chat-server pod is ready.
    Ready,
    /// Chat is served, but something is short: a backend or some chat-server pods.
    Degraded,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Provisioning => "Provisioning",
            Phase::Ready => "Ready",
            Phase::Degraded => "Degraded",
        }
    }
}

/// The condition types the operator maintains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionType {
    Ready,
    RedisReady,
    PostgresReady,
    ServerReady,
    /// Whether the last reconcile applied every child; False carries the errors.
    Reconciled,
}

impl ConditionType {
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionType::Ready => "Ready",
            ConditionType::RedisReady => "RedisReady",
            ConditionType::PostgresReady => "PostgresReady",
            ConditionType::ServerReady => "ServerReady",
            ConditionType::Reconciled => "Reconciled",
        }
    }
}
