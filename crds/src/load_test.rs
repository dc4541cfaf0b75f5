//! The `ChatLoadTest` custom resource: a `chat-load` run split over
//! `parallelism` generator pods inside the cluster, against a ChatCluster or
//! explicit URLs, with the merged result in its status.
//!
//! The scenario fields are `chat-load`'s flags (loadtest/README.md), written
//! the same way (durations such as `5s`, stages such as `30s:1000`); an unset
//! field keeps chat-load's default. The operator checks them with chat-load's
//! own parser before it creates anything, so a bad value fails the test with
//! chat-load's message. A load test runs once: its spec cannot change after
//! creation (delete and recreate it to run again).

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A load test of a chat cluster, run by the chatback operator as an Indexed Job.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "chatback.dev",
    version = "v1alpha1",
    kind = "ChatLoadTest",
    namespaced,
    shortname = "clt",
    category = "chatback",
    status = "ChatLoadTestStatus",
    derive = "PartialEq",
    doc = "A chat-load run split over generator pods (an Indexed Job), with the merged result in its status.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Pods", type_ = "integer", json_path = ".spec.parallelism"),
    printcolumn(name = "Passed", type_ = "boolean", json_path = ".status.passed"),
    printcolumn(name = "Delivery-p99-ms", type_ = "number", json_path = ".status.result.latency_ms.delivery.p99"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.size() <= 52").message("metadata.name must be at most 52 characters: it names the Job, whose pods add a suffix"),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("metadata.name must be a DNS-1035 label (start with a letter): it names the Job")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf").message("a ChatLoadTest's spec cannot change once created; delete it and create a new one"))]
pub struct ChatLoadTestSpec {
    /// What to load: a ChatCluster in this namespace, or WebSocket URLs.
    pub target: LoadTarget,
    /// Generator pods (the Job's parallelism and completions); each runs
    /// chat-load on every N-th client (`--shard I/N`).
    #[serde(default = "default_parallelism")]
    #[schemars(range(min = 1, max = 100))]
    pub parallelism: i32,
    /// The chat-load container image.
    #[serde(default = "default_image")]
    #[schemars(length(max = 512))]
    #[x_kube(validation = Rule::new("self.trim().size() > 0").message("image must not be empty"))]
    pub image: String,
    /// The run, in chat-load's terms (one generator's view: all clients).
    #[serde(default)]
    pub scenario: Scenario,
    /// Pass/fail rules such as `delivery.p99<50ms` (chat-load `--threshold`),
    /// judged on the merged result; chat-load's defaults (missing==0, ...) apply too.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub thresholds: Vec<String>,
    /// Seconds between the moment every generator pod runs and the common
    /// start time the operator gives them (time for the kubelet to project
    /// the start time into each pod).
    #[serde(default = "default_start_delay")]
    #[schemars(range(min = 1, max = 600))]
    pub start_delay_seconds: i32,
    /// Resources of each generator pod. When empty: requests of 100m CPU and
    /// 128Mi memory, a 1Gi memory limit.
    #[serde(default)]
    pub resources: ResourceRequirements,
}

/// Exactly one of `chatCluster` and `urls`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.chatCluster) != has(self.urls)").message("target needs exactly one of chatCluster and urls"))]
pub struct LoadTarget {
    /// A ChatCluster in the load test's namespace: its Service's WebSocket endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub chat_cluster: Option<String>,
    /// WebSocket endpoints (`ws://` or `wss://`), spread round-robin as chat-load's `--url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32))]
    pub urls: Option<Vec<String>>,
}

/// chat-load's scenario flags; unset ones keep chat-load's default.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.stages) && (has(self.clients) || has(self.batchSize) || has(self.batchInterval)))").message("stages replaces clients, batchSize and batchInterval; set one or the other"))]
#[x_kube(validation = Rule::new("!(has(self.roomSizes) && (has(self.rooms) || has(self.clients)))").message("roomSizes replaces rooms and clients; set one or the other"))]
pub struct Scenario {
    /// Simulated users in all (`--clients`), split over the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub clients: Option<u32>,
    /// Rooms (`--rooms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub rooms: Option<u32>,
    /// Messages each client sends (`--messages`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<u32>,
    /// Messages per second per client (`--rate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Clients started together (`--batch-size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub batch_size: Option<u32>,
    /// Pause between two batches (`--batch-interval`), e.g. `5s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub batch_interval: Option<String>,
    /// A k6-style ramp (`--stages`), e.g. `30s:1000,60s:5000`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub stages: Option<String>,
    /// Uneven rooms (`--room-sizes`), e.g. `2x200,60x10`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub room_sizes: Option<String>,
    /// Stop sending after this long (`--duration`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub duration: Option<String>,
    /// Limit for connect + handshake + joined (`--connect-timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub connect_timeout: Option<String>,
    /// Wait for outstanding acks and deliveries once sending is over (`--drain-timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub drain_timeout: Option<String>,
    /// Pad every message body to this many bytes (`--body-size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 65536))]
    pub body_size: Option<u32>,
    /// Join/leave churn connections per second, in all (`--churn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub churn: Option<f64>,
    /// Send after the previous ack only (`--closed-loop`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_loop: Option<bool>,
    /// Generator threads per pod (`--threads`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 256))]
    pub threads: Option<u16>,
}

fn default_parallelism() -> i32 {
    1
}
fn default_image() -> String {
    "chat-load:latest".into()
}
fn default_start_delay() -> i32 {
    10
}

/// The observed state of a ChatLoadTest, written only by the operator.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChatLoadTestStatus {
    /// Pending, Running, Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<LoadTestPhase>,
    /// Started, Complete and Passed.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The Job running the generator pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// The WebSocket endpoints under load.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// Generator pods running now.
    #[serde(default)]
    pub running_pods: i32,
    /// The common start time given to the pods (Unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at_unix_ms: Option<i64>,
    /// Whether every threshold passed on the merged result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passed: Option<bool>,
    /// The merged result: chat-load's JSON summary (schema
    /// `chat-load/summary/v1`, loadtest/README.md), counts summed over the
    /// pods, latencies from their merged HdrHistograms, thresholds judged on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub result: Option<serde_json::Value>,
}

fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// A load test's phase.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadTestPhase {
    /// Waiting for the target or for every generator pod to run.
    Pending,
    /// The pods were given their start time and are running.
    Running,
    /// Every pod reported, and every threshold passed on the merged result.
    Succeeded,
    /// A threshold failed, a pod failed, or the spec is unusable (see the conditions).
    Failed,
}

impl LoadTestPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Running => "Running",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
        }
    }

    /// Succeeded and Failed are final.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}
