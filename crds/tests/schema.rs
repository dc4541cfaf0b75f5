//! The CRD's API surface: names, subresources, columns, defaults and rules.

use crds::{BackendMode, ChatCluster, ChatClusterSpec, LogLevel, RetentionPolicy};
use kube::CustomResourceExt;
use serde_json::{Value, json};

fn crd() -> Value {
    serde_json::to_value(ChatCluster::crd()).unwrap()
}

fn schema() -> Value {
    crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

#[test]
fn names_scope_and_subresources() {
    let crd = crd();
    assert_eq!(crd["metadata"]["name"], "chatclusters.chatback.dev");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["cc"]));
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert_eq!(version["subresources"]["status"], json!({}));
    assert_eq!(
        version["subresources"]["scale"],
        json!({
            "specReplicasPath": ".spec.server.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector"
        })
    );
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Phase", "Replicas", "Ready", "Endpoint", "Age"]);
}

#[test]
fn bare_spec_gets_the_pinned_defaults() {
    let cc: ChatCluster = serde_json::from_value(json!({
        "apiVersion": "chatback.dev/v1alpha1",
        "kind": "ChatCluster",
        "metadata": {"name": "demo"},
        "spec": {}
    }))
    .unwrap();
    let spec = &cc.spec;
    assert_eq!(spec, &ChatClusterSpec::default());
    assert_eq!(spec.server.image, "chat-server:latest");
    assert_eq!((spec.server.replicas, spec.server.port), (3, 8080));
    assert_eq!(spec.server.log_level, LogLevel::Info);
    assert!(!spec.server.auth.enabled);
    assert!(spec.autoscaling.enabled);
    assert_eq!(
        (spec.autoscaling.min_replicas, spec.autoscaling.max_replicas),
        (3, 10)
    );
    assert_eq!(spec.autoscaling.target_cpu_utilization_percentage, 70);
    assert_eq!(spec.redis.mode, BackendMode::Managed);
    assert_eq!(spec.redis.image, "redis:7-alpine");
    assert_eq!(spec.postgres.image, "postgres:16-alpine");
    assert_eq!(spec.postgres.storage.size, "1Gi");
    assert_eq!(
        spec.postgres.storage.retention_policy,
        RetentionPolicy::Retain
    );
    // On by default since issue 11 (least privilege: only chat pods reach the backends).
    assert!(spec.network_policy.enabled);
    assert!(spec.pod_disruption_budget.enabled);
    assert_eq!(spec.pod_disruption_budget.max_unavailable, 1);
    assert!(spec.problems().is_empty());
}

#[test]
fn pinned_field_names_are_in_the_schema() {
    let spec = &schema()["properties"]["spec"]["properties"];
    for (path, field) in [
        ("server", "logLevel"),
        ("server", "limits"),
        ("autoscaling", "targetCPUUtilizationPercentage"),
        ("autoscaling", "targetConnectionsPerPod"),
        ("redis", "secretRef"),
        ("postgres", "storage"),
        ("podDisruptionBudget", "maxUnavailable"),
        ("networkPolicy", "enabled"),
    ] {
        assert!(
            spec[path]["properties"][field].is_object(),
            "spec.{path}.{field} missing"
        );
    }
    let limits = &spec["server"]["properties"]["limits"]["properties"];
    for field in [
        "maxConnections",
        "maxFrameBytes",
        "maxBodyBytes",
        "ratePerSec",
        "rateBurst",
        "outboundQueue",
        "maxRoomsPerConnection",
        "historyMaxLimit",
        "presenceTtlSecs",
        "shutdownGraceSecs",
    ] {
        assert!(
            limits[field].is_object(),
            "spec.server.limits.{field} missing"
        );
    }
    let storage = &spec["postgres"]["properties"]["storage"]["properties"];
    assert_eq!(
        storage["retentionPolicy"]["enum"],
        json!(["Retain", "Delete"])
    );
}

#[test]
fn cross_field_rules_are_cel_validations() {
    let spec = &schema()["properties"]["spec"]["properties"];
    let rules = |v: &Value| -> Vec<String> {
        v["x-kubernetes-validations"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| r["rule"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(rules(&spec["autoscaling"]).contains(&"self.minReplicas <= self.maxReplicas".into()));
    for backend in ["redis", "postgres"] {
        assert!(
            rules(&spec[backend])
                .contains(&"self.mode != 'External' || has(self.secretRef)".into()),
            "{backend} External must require secretRef"
        );
    }
    assert!(!rules(&spec["server"]["properties"]["image"]).is_empty());
    assert!(!rules(&schema()).is_empty(), "metadata.name rules");
}

#[test]
fn client_side_problems_match_the_rules() {
    let mut spec = ChatClusterSpec::default();
    spec.autoscaling.min_replicas = 11;
    spec.postgres.mode = BackendMode::External;
    spec.server.image = "  ".into();
    let problems = spec.problems();
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(
        problems
            .iter()
            .any(|p| p.contains("postgres.secretRef is required"))
    );
}
