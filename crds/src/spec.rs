//! The desired state of a chat cluster, as users write it.
//!
//! Field names and defaults are pinned (issue 4): users and tooling write
//! against them. Every field has a default, so `spec: {}` is a valid, complete
//! cluster. Defaults are declared per field (`#[serde(default = ...)]`) so the
//! API server fills them in from the schema as well, and `kubectl get -o yaml`
//! shows what the operator will actually build.
//!
//! Validation lives in the schema (OpenAPI bounds plus `x-kubernetes-validations`
//! CEL rules), so the API server rejects an invalid ChatCluster with a clear
//! message before the operator ever sees it.

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::status::ChatClusterStatus;

/// A chat stack: chat-server pods plus Redis and PostgreSQL, managed or external.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "chatback.dev",
    version = "v1alpha1",
    kind = "ChatCluster",
    namespaced,
    shortname = "cc",
    category = "chatback",
    status = "ChatClusterStatus",
    derive = "PartialEq",
    doc = "A chat stack (chat-server, Redis, PostgreSQL) provisioned and maintained by the chatback operator.",
    scale(
        spec_replicas_path = ".spec.server.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.size() <= 40").message("metadata.name must be at most 40 characters: child names such as <name>-postgres-0 must stay valid DNS labels"),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("metadata.name must be a DNS-1035 label (start with a letter): it names the chat Service")
)]
#[serde(rename_all = "camelCase")]
pub struct ChatClusterSpec {
    /// The chat-server Deployment.
    #[serde(default = "ServerSpec::default")]
    pub server: ServerSpec,
    /// The HorizontalPodAutoscaler (autoscaling/v2) that scales the chat-server.
    #[serde(default = "AutoscalingSpec::default")]
    pub autoscaling: AutoscalingSpec,
    /// The Redis broker (pub/sub, sequence numbers, presence).
    #[serde(default = "RedisSpec::default")]
    pub redis: RedisSpec,
    /// The PostgreSQL history store.
    #[serde(default = "PostgresSpec::default")]
    pub postgres: PostgresSpec,
    /// A NetworkPolicy that admits Redis and PostgreSQL traffic only from this cluster's chat pods.
    #[serde(default = "NetworkPolicySpec::default")]
    pub network_policy: NetworkPolicySpec,
    /// A PodDisruptionBudget for the chat-server pods.
    #[serde(default = "PodDisruptionBudgetSpec::default")]
    pub pod_disruption_budget: PodDisruptionBudgetSpec,
}

/// The chat-server pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServerSpec {
    /// The chat-server container image.
    #[serde(default = "default_server_image")]
    #[schemars(length(max = 512))]
    #[x_kube(validation = Rule::new("self.trim().size() > 0").message("server.image must not be empty"))]
    pub image: String,
    /// Desired chat-server pods. With autoscaling enabled the HorizontalPodAutoscaler
    /// writes this field through the scale subresource, clamped to [minReplicas, maxReplicas].
    #[serde(default = "default_server_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// The port chat-server listens on (HTTP, WebSocket `/ws`, `/metrics`, probes).
    #[serde(default = "default_server_port")]
    #[schemars(range(min = 1024, max = 65535))]
    pub port: i32,
    /// Container resources. When empty, the operator sets modest requests and a
    /// memory limit so that CPU autoscaling has a baseline.
    #[serde(default)]
    pub resources: ResourceRequirements,
    /// The log level (`RUST_LOG`).
    #[serde(default)]
    pub log_level: LogLevel,
    /// JWT authentication. When enabled, the operator generates the signing key once.
    #[serde(default = "AuthSpec::default")]
    pub auth: AuthSpec,
    /// The chat-server limits of docs/protocol.md; unset ones keep the server default.
    #[serde(default = "ServerLimits::default")]
    pub limits: ServerLimits,
    /// Opt-in rebalancing after a scale-up (docs/protocol.md, "Rebalancing").
    #[serde(default = "RebalanceSpec::default")]
    pub rebalance: RebalanceSpec,
}

impl Default for ServerSpec {
    fn default() -> Self {
        Self {
            image: default_server_image(),
            replicas: default_server_replicas(),
            port: default_server_port(),
            resources: ResourceRequirements::default(),
            log_level: LogLevel::default(),
            auth: AuthSpec::default(),
            limits: ServerLimits::default(),
            rebalance: RebalanceSpec::default(),
        }
    }
}

fn default_server_image() -> String {
    "chat-server:latest".into()
}
fn default_server_replicas() -> i32 {
    3
}
fn default_server_port() -> i32 {
    8080
}

/// The chat-server log level, passed as `RUST_LOG`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    #[default]
    Info,
    Warn,
    Error,
}

impl LogLevel {
    /// The `RUST_LOG` filter for this level.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// Rebalancing: a pod well above the cluster's mean connection count closes
/// some connections with 4001 `rebalance`, so they reconnect to other pods (they
/// rejoin with `since` and lose nothing). Unset fields keep the server defaults.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RebalanceSpec {
    /// `CHAT_REBALANCE`: turn rebalancing on for every pod.
    #[serde(default)]
    pub enabled: bool,
    /// `CHAT_REBALANCE_TOLERANCE` in percent (default 20): how far above the mean a
    /// pod may be before it sheds connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub tolerance_percent: Option<i64>,
    /// `CHAT_REBALANCE_INTERVAL_SECS` (default 10): seconds between two decisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub interval_secs: Option<i64>,
    /// `CHAT_REBALANCE_MAX_CLOSES` (default 100): most connections a pod closes per interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_closes: Option<i64>,
}

/// JWT (HS256) authentication of WebSocket clients.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Require a JWT on `/ws`. The signing key is generated into the cluster's Secret.
    #[serde(default)]
    pub enabled: bool,
}

/// The chat-server limits (docs/protocol.md, "Configuration"). Each is optional;
/// an unset limit keeps the chat-server default shown in its description.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.maxBodyBytes) ? self.maxBodyBytes : 4096) <= (has(self.maxFrameBytes) ? self.maxFrameBytes : 65536)").message("limits.maxBodyBytes must not exceed limits.maxFrameBytes (defaults 4096 and 65536): a message body has to fit in one frame"))]
#[x_kube(validation = Rule::new("(has(self.ratePerSec) ? self.ratePerSec : 50) <= (has(self.rateBurst) ? self.rateBurst : 100)").message("limits.rateBurst must be at least limits.ratePerSec (defaults 100 and 50)"))]
pub struct ServerLimits {
    /// `CHAT_MAX_CONNECTIONS` (default 10000): WebSocket connections per pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub max_connections: Option<i64>,
    /// `CHAT_MAX_FRAME_BYTES` (default 65536): largest accepted WebSocket frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 256, max = 16_777_216))]
    pub max_frame_bytes: Option<i64>,
    /// `CHAT_MAX_BODY_BYTES` (default 4096): largest message body, in UTF-8 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16_777_216))]
    pub max_body_bytes: Option<i64>,
    /// `CHAT_RATE_PER_SEC` (default 50): sustained frames per second per connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100_000))]
    pub rate_per_sec: Option<i64>,
    /// `CHAT_RATE_BURST` (default 100): burst allowance per connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100_000))]
    pub rate_burst: Option<i64>,
    /// `CHAT_OUTBOUND_QUEUE` (default 1024): frames queued per connection before it is
    /// closed as a slow consumer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub outbound_queue: Option<i64>,
    /// `CHAT_MAX_ROOMS_PER_CONNECTION` (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100_000))]
    pub max_rooms_per_connection: Option<i64>,
    /// `CHAT_HISTORY_MAX_LIMIT` (default 200): largest `limit` a history request may ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10_000))]
    pub history_max_limit: Option<i64>,
    /// `CHAT_PRESENCE_TTL_SECS` (default 30): how long a dead pod's presence entries live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub presence_ttl_secs: Option<i64>,
    /// `CHAT_SHUTDOWN_GRACE_SECS` (default 10): how long a terminating pod lets
    /// connections drain. The pod's termination grace period is derived from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 600))]
    pub shutdown_grace_secs: Option<i64>,
}

/// The HorizontalPodAutoscaler. It scales the ChatCluster itself through the scale
/// subresource, and the operator passes `spec.server.replicas` on to the Deployment,
/// so `kubectl scale cc` and the autoscaler act on the same field.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas"))]
pub struct AutoscalingSpec {
    /// Create the HorizontalPodAutoscaler.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Lower bound of chat-server pods.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,
    /// Upper bound of chat-server pods.
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Target average CPU utilization, in percent of the CPU request.
    #[serde(
        default = "default_target_cpu",
        rename = "targetCPUUtilizationPercentage"
    )]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: i32,
    /// Optional target of WebSocket connections per pod: the HPA then also scales on
    /// the `chat_connections` Pods metric, served by a custom-metrics adapter
    /// (k8s/monitoring/ ships the prometheus-adapter rule). It is in addition to the
    /// CPU target: the HPA takes whichever of the two wants more pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub target_connections_per_pod: Option<i64>,
}

impl Default for AutoscalingSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            min_replicas: default_min_replicas(),
            max_replicas: default_max_replicas(),
            target_cpu_utilization_percentage: default_target_cpu(),
            target_connections_per_pod: None,
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_min_replicas() -> i32 {
    3
}
fn default_max_replicas() -> i32 {
    10
}
fn default_target_cpu() -> i32 {
    70
}

/// Whether the operator runs a backend itself or the user supplies one.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendMode {
    /// The operator provisions and maintains the backend in the namespace.
    #[default]
    Managed,
    /// The backend runs elsewhere; its URL is read from `secretRef`.
    External,
}

/// A key in a Secret in the ChatCluster's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.size() > 0").message("secretRef.name must not be empty"))]
    pub name: String,
    /// The key holding the URL.
    #[serde(default = "default_url_key")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.size() > 0").message("secretRef.key must not be empty"))]
    pub key: String,
}

fn default_url_key() -> String {
    "url".into()
}

/// Redis: managed by the operator, or external.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.mode != 'External' || has(self.secretRef)").message("redis.secretRef is required when redis.mode is External"))]
#[x_kube(validation = Rule::new("self.mode != 'Managed' || self.image.trim().size() > 0").message("redis.image must not be empty when redis.mode is Managed"))]
pub struct RedisSpec {
    /// `Managed` or `External`.
    #[serde(default)]
    pub mode: BackendMode,
    /// Managed: the Redis image.
    #[serde(default = "default_redis_image")]
    #[schemars(length(max = 512))]
    pub image: String,
    /// Managed: container resources (modest defaults when empty).
    #[serde(default)]
    pub resources: ResourceRequirements,
    /// Managed: keep Redis data on a PersistentVolumeClaim.
    #[serde(default = "PersistenceSpec::default")]
    pub persistence: PersistenceSpec,
    /// External: the Secret key holding the URL (`redis://...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
}

impl Default for RedisSpec {
    fn default() -> Self {
        Self {
            mode: BackendMode::Managed,
            image: default_redis_image(),
            resources: ResourceRequirements::default(),
            persistence: PersistenceSpec::default(),
            secret_ref: None,
        }
    }
}

fn default_redis_image() -> String {
    "redis:7-alpine".into()
}

/// Persistence of the managed Redis.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PersistenceSpec {
    /// Keep Redis data (append-only file) on a PersistentVolumeClaim.
    #[serde(default)]
    pub enabled: bool,
    /// The claim's size.
    #[serde(default = "default_size")]
    #[schemars(length(max = 32))]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"))]
    pub size: String,
}

impl Default for PersistenceSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            size: default_size(),
        }
    }
}

fn default_size() -> String {
    "1Gi".into()
}

/// PostgreSQL: managed by the operator, or external.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.mode != 'External' || has(self.secretRef)").message("postgres.secretRef is required when postgres.mode is External"))]
#[x_kube(validation = Rule::new("self.mode != 'Managed' || self.image.trim().size() > 0").message("postgres.image must not be empty when postgres.mode is Managed"))]
pub struct PostgresSpec {
    /// `Managed` or `External`.
    #[serde(default)]
    pub mode: BackendMode,
    /// Managed: the PostgreSQL image.
    #[serde(default = "default_postgres_image")]
    #[schemars(length(max = 512))]
    pub image: String,
    /// Managed: container resources (modest defaults when empty).
    #[serde(default)]
    pub resources: ResourceRequirements,
    /// Managed: the data volume.
    #[serde(default = "PostgresStorage::default")]
    pub storage: PostgresStorage,
    /// External: the Secret key holding the URL (`postgres://...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
}

impl Default for PostgresSpec {
    fn default() -> Self {
        Self {
            mode: BackendMode::Managed,
            image: default_postgres_image(),
            resources: ResourceRequirements::default(),
            storage: PostgresStorage::default(),
            secret_ref: None,
        }
    }
}

fn default_postgres_image() -> String {
    "postgres:16-alpine".into()
}

/// The managed PostgreSQL data volume.
///
/// `size` and `storageClassName` end up in the StatefulSet's
/// volumeClaimTemplates, which Kubernetes never lets change: a transition rule
/// refuses the edit at admission, with what to do instead, rather than let
/// every later reconcile fail on the StatefulSet.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.size == oldSelf.size && (has(self.storageClassName) ? self.storageClassName : '') == (has(oldSelf.storageClassName) ? oldSelf.storageClassName : '')").message("postgres.storage.size and postgres.storage.storageClassName cannot change after creation: they are the PostgreSQL StatefulSet's volumeClaimTemplate, which Kubernetes keeps immutable. To grow the volume, expand the claim data-<name>-postgres-0 itself (kubectl patch pvc, if its StorageClass allows expansion); to move to another StorageClass, back up the database and restore it into a new ChatCluster"))]
pub struct PostgresStorage {
    /// The claim's size.
    #[serde(default = "default_size")]
    #[schemars(length(max = 32))]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"))]
    pub size: String,
    /// The claim's StorageClass; unset uses the cluster default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub storage_class_name: Option<String>,
    /// What happens to the data volume when the ChatCluster is deleted.
    #[serde(default)]
    pub retention_policy: RetentionPolicy,
}

impl Default for PostgresStorage {
    fn default() -> Self {
        Self {
            size: default_size(),
            storage_class_name: None,
            retention_policy: RetentionPolicy::default(),
        }
    }
}

/// What happens to PostgreSQL's PersistentVolumeClaims when the ChatCluster is deleted.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RetentionPolicy {
    /// Keep the claims (and the chat history); a new ChatCluster of the same name reuses them.
    #[default]
    Retain,
    /// Delete the claims with the ChatCluster.
    Delete,
}

/// The NetworkPolicy for the backends (on by default: least privilege).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Admit Redis and PostgreSQL traffic only from this cluster's chat pods.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// The PodDisruptionBudget of the chat-server pods.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodDisruptionBudgetSpec {
    /// Create the PodDisruptionBudget.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Chat pods that a voluntary disruption (drain, upgrade) may take down at once.
    #[serde(default = "default_max_unavailable")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_unavailable: i32,
}

impl Default for PodDisruptionBudgetSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            max_unavailable: default_max_unavailable(),
        }
    }
}

fn default_max_unavailable() -> i32 {
    1
}

impl ChatClusterSpec {
    /// The cross-field rules the operator cannot build around, checked again
    /// client-side: `operator render` reads files no API server has validated,
    /// and a ChatCluster stored under an older CRD may predate a rule.
    /// The schema's CEL rules remain the first line; these messages match them.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.autoscaling.min_replicas > self.autoscaling.max_replicas {
            problems.push(
                "autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas"
                    .to_string(),
            );
        }
        if self.redis.mode == BackendMode::External && self.redis.secret_ref.is_none() {
            problems.push("redis.secretRef is required when redis.mode is External".to_string());
        }
        if self.postgres.mode == BackendMode::External && self.postgres.secret_ref.is_none() {
            problems
                .push("postgres.secretRef is required when postgres.mode is External".to_string());
        }
        if self.server.image.trim().is_empty() {
            problems.push("server.image must not be empty".to_string());
        }
        problems
    }
}
