//! The HorizontalPodAutoscaler (autoscaling/v2) of the chat-server.
//!
//! It targets the ChatCluster itself through its scale subresource, not the
//! Deployment: the autoscaler then writes `spec.server.replicas`, the same field
//! `kubectl scale cc` writes, and the operator passes it on to the Deployment.
//! One source of truth means the operator and the autoscaler never fight over
//! `Deployment.spec.replicas`. The scale subresource's `status.selector` tells
//! the autoscaler which pods' metrics to average.
//!
//! Scaling down closes every WebSocket of a removed pod, and its clients all
//! reconnect at once to the rest. `behavior.scaleDown` therefore waits out a
//! stabilization window and removes at most one pod per period, so a dip in
//! load never drops many pods' connections together.
//!
//! With `targetConnectionsPerPod` the HPA also gets the Pods metric
//! [`CONNECTIONS_METRIC`], in addition to the CPU target, not instead of it: the
//! HPA computes a replica count per metric and takes the largest, so a pod
//! full of idle WebSockets and a pod busy with few both get help. The metric
//! reaches the HPA through the PodMonitor and prometheus-adapter rule of
//! k8s/monitoring/ (README, "Monitoring and autoscaling on connections").

use crds::ChatCluster;
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HPAScalingPolicy, HPAScalingRules, HorizontalPodAutoscaler,
    HorizontalPodAutoscalerBehavior, HorizontalPodAutoscalerSpec, MetricIdentifier, MetricSpec,
    MetricTarget, PodsMetricSource, ResourceMetricSource,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::Resource;

use crate::meta::{Component, Names, child_meta, cluster_api_version};

/// The per-pod metric behind `targetConnectionsPerPod` (docs/protocol.md, "Metrics").
pub const CONNECTIONS_METRIC: &str = "chat_connections";

/// How long the load must stay low before pods are removed.
pub const SCALE_DOWN_STABILIZATION_SECS: i32 = 300;
/// Pods removed per [`SCALE_DOWN_PERIOD_SECS`] at most.
pub const SCALE_DOWN_PODS: i32 = 1;
pub const SCALE_DOWN_PERIOD_SECS: i32 = 60;

/// Gentle scale-down: see the module docs. Scale-up keeps the Kubernetes default.
fn behavior() -> HorizontalPodAutoscalerBehavior {
    HorizontalPodAutoscalerBehavior {
        scale_down: Some(HPAScalingRules {
            stabilization_window_seconds: Some(SCALE_DOWN_STABILIZATION_SECS),
            select_policy: Some("Min".into()),
            policies: Some(vec![HPAScalingPolicy {
                type_: "Pods".into(),
                value: SCALE_DOWN_PODS,
                period_seconds: SCALE_DOWN_PERIOD_SECS,
            }]),
            ..HPAScalingRules::default()
        }),
        scale_up: None,
    }
}

/// The HPA, or `None` when autoscaling is disabled.
pub fn horizontal_pod_autoscaler(cc: &ChatCluster) -> Option<HorizontalPodAutoscaler> {
    let scaling = &cc.spec.autoscaling;
    if !scaling.enabled {
        return None;
    }
    let names = Names::of(cc);
    let mut metrics = vec![MetricSpec {
        type_: "Resource".into(),
        resource: Some(ResourceMetricSource {
            name: "cpu".into(),
            target: MetricTarget {
                type_: "Utilization".into(),
                average_utilization: Some(scaling.target_cpu_utilization_percentage),
                ..MetricTarget::default()
            },
        }),
        ..MetricSpec::default()
    }];
    if let Some(connections) = scaling.target_connections_per_pod {
        metrics.push(MetricSpec {
            type_: "Pods".into(),
            pods: Some(PodsMetricSource {
                metric: MetricIdentifier {
                    name: CONNECTIONS_METRIC.into(),
                    selector: None,
                },
                target: MetricTarget {
                    type_: "AverageValue".into(),
                    average_value: Some(Quantity(connections.to_string())),
                    ..MetricTarget::default()
                },
            }),
            ..MetricSpec::default()
        });
    }
    Some(HorizontalPodAutoscaler {
        metadata: child_meta(cc, names.server(), Component::Server),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some(cluster_api_version()),
                kind: ChatCluster::kind(&()).into_owned(),
                name: names.cluster.clone(),
            },
            min_replicas: Some(scaling.min_replicas),
            max_replicas: scaling.max_replicas,
            metrics: Some(metrics),
            behavior: Some(behavior()),
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::test_cluster;

    #[test]
    fn min_max_and_cpu_target_follow_the_spec() {
        let mut cc = test_cluster();
        cc.spec.autoscaling.min_replicas = 2;
        cc.spec.autoscaling.max_replicas = 7;
        cc.spec.autoscaling.target_cpu_utilization_percentage = 55;
        let spec = horizontal_pod_autoscaler(&cc).unwrap().spec.unwrap();
        assert_eq!(spec.min_replicas, Some(2));
        assert_eq!(spec.max_replicas, 7);
        let metrics = spec.metrics.unwrap();
        assert_eq!(metrics.len(), 1);
        assert_eq!(
            metrics[0]
                .resource
                .as_ref()
                .unwrap()
                .target
                .average_utilization,
            Some(55)
        );
    }

    #[test]
    fn defaults_match_the_seed() {
        let spec = horizontal_pod_autoscaler(&test_cluster())
            .unwrap()
            .spec
            .unwrap();
        assert_eq!((spec.min_replicas, spec.max_replicas), (Some(3), 10));
        let target = spec.scale_target_ref;
        assert_eq!(target.kind, "ChatCluster");
        assert_eq!(target.api_version.as_deref(), Some("chatback.dev/v1alpha1"));
        assert_eq!(target.name, "demo");
    }

    #[test]
    fn connections_target_adds_a_pods_metric() {
        let mut cc = test_cluster();
        cc.spec.autoscaling.target_connections_per_pod = Some(2000);
        let metrics = horizontal_pod_autoscaler(&cc)
            .unwrap()
            .spec
            .unwrap()
            .metrics
            .unwrap();
        let pods = metrics[1].pods.as_ref().unwrap();
        assert_eq!(pods.metric.name, CONNECTIONS_METRIC);
        assert_eq!(pods.target.average_value, Some(Quantity("2000".into())));
    }

    #[test]
    fn scale_down_is_stabilized_and_one_pod_at_a_time() {
        let spec = horizontal_pod_autoscaler(&test_cluster())
            .unwrap()
            .spec
            .unwrap();
        let down = spec.behavior.unwrap().scale_down.unwrap();
        assert_eq!(down.stabilization_window_seconds, Some(300));
        let policy = &down.policies.unwrap()[0];
        assert_eq!(
            (policy.type_.as_str(), policy.value, policy.period_seconds),
            ("Pods", 1, 60)
        );
    }

    #[test]
    fn disabled_means_no_autoscaler() {
        let mut cc = test_cluster();
        cc.spec.autoscaling.enabled = false;
        assert!(horizontal_pod_autoscaler(&cc).is_none());
    }
}
