//! The CRDs' `x-kubernetes-validations` rules, evaluated with kube-cel (an
//! implementation of Kubernetes' CEL libraries), so a rule that does not
//! compile or says the wrong thing fails here rather than on a cluster.

use crds::{ChatCluster, ChatLoadTest};
use kube::CustomResourceExt;
use serde_json::{Value, json};

fn schema() -> Value {
    let crd = serde_json::to_value(ChatCluster::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

fn cluster(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "chatback.dev/v1alpha1",
        "kind": "ChatCluster",
        "metadata": {"name": name, "namespace": "chat-app"},
        "spec": spec,
    })
}

/// The failure messages for `object`, empty when it is valid.
fn failures(object: &Value) -> Vec<String> {
    failures_of_update(object, None)
}

/// The failure messages for an update from `old` to `object` (transition rules).
fn failures_of_update(object: &Value, old: Option<&Value>) -> Vec<String> {
    failures_against(&schema(), object, old)
}

/// The failure messages of `schema`'s rules for `object` (updated from `old`).
fn failures_against(schema: &Value, object: &Value, old: Option<&Value>) -> Vec<String> {
    let compiled = kube_cel::compile_schema(schema);
    assert!(
        !compiled.has_errors(),
        "a rule does not compile: {:?}",
        compiled.compilation_errors()
    );
    match kube_cel::Validator::new().validate(schema, object, old) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(|e| e.message.clone()).collect(),
    }
}

#[test]
fn valid_clusters_pass() {
    assert_eq!(failures(&cluster("demo", json!({}))), Vec::<String>::new());
    let full = json!({
        "server": {"image": "chat-server:0.1.0", "limits": {"maxBodyBytes": 8192, "maxFrameBytes": 65536, "ratePerSec": 10}},
        "autoscaling": {"minReplicas": 2, "maxReplicas": 2},
        "redis": {"mode": "External", "secretRef": {"name": "redis-url"}},
        "postgres": {"mode": "External", "secretRef": {"name": "pg", "key": "dsn"}},
    });
    assert_eq!(failures(&cluster("prod-1", full)), Vec::<String>::new());
}

#[test]
fn each_rule_rejects_what_it_names() {
    let cases = [
        (
            cluster(
                "demo",
                json!({"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}),
            ),
            "autoscaling.minReplicas must be less than or equal",
        ),
        (
            cluster("demo", json!({"redis": {"mode": "External"}})),
            "redis.secretRef is required",
        ),
        (
            cluster("demo", json!({"postgres": {"mode": "External"}})),
            "postgres.secretRef is required",
        ),
        (
            cluster("demo", json!({"server": {"image": " "}})),
            "server.image must not be empty",
        ),
        (
            cluster("demo", json!({"redis": {"image": ""}})),
            "redis.image must not be empty",
        ),
        (
            cluster(
                "demo",
                json!({"server": {"limits": {"maxBodyBytes": 70000}}}),
            ),
            "maxBodyBytes must not exceed",
        ),
        (
            cluster("demo", json!({"server": {"limits": {"ratePerSec": 500}}})),
            "rateBurst must be at least",
        ),
        (
            cluster(
                "demo",
                json!({"redis": {"mode": "External", "secretRef": {"name": ""}}}),
            ),
            "secretRef.name must not be empty",
        ),
        (cluster("1demo", json!({})), "DNS-1035 label"),
        (cluster(&"a".repeat(41), json!({})), "at most 40 characters"),
    ];
    for (object, expected) in cases {
        let found = failures(&object);
        assert!(
            found.iter().any(|m| m.contains(expected)),
            "expected {expected:?} for {}, got {found:?}",
            object["spec"]
        );
    }
}

#[test]
fn external_mode_with_a_reference_ignores_the_image_rule() {
    let spec = json!({"postgres": {"mode": "External", "image": "", "secretRef": {"name": "pg"}}});
    assert_eq!(failures(&cluster("demo", spec)), Vec::<String>::new());
}

/// A ChatCluster with its PostgreSQL storage as the API server stores it (defaulted).
fn with_storage(storage: Value) -> Value {
    cluster(
        "demo",
        json!({"postgres": {"mode": "Managed", "image": "postgres:16-alpine", "storage": storage}}),
    )
}

#[test]
fn postgres_storage_cannot_change_after_creation() {
    let old = with_storage(json!({"size": "1Gi", "retentionPolicy": "Retain"}));
    for changed in [
        json!({"size": "5Gi", "retentionPolicy": "Retain"}),
        json!({"size": "1Gi", "storageClassName": "fast", "retentionPolicy": "Retain"}),
    ] {
        let found = failures_of_update(&with_storage(changed.clone()), Some(&old));
        assert!(
            found
                .iter()
                .any(|m| m.contains("cannot change after creation")
                    && m.contains("expand the claim data-<name>-postgres-0")),
            "{changed}: {found:?}"
        );
    }
    let retention_only = with_storage(json!({"size": "1Gi", "retentionPolicy": "Delete"}));
    assert_eq!(
        failures_of_update(&retention_only, Some(&old)),
        Vec::<String>::new(),
        "the retention policy may change"
    );
    assert_eq!(
        failures(&with_storage(
            json!({"size": "5Gi", "storageClassName": "fast"})
        )),
        Vec::<String>::new(),
        "any storage is fine at creation"
    );
}

// The ChatLoadTest CRD.

fn load_test_failures(object: &Value, old: Option<&Value>) -> Vec<String> {
    let crd = serde_json::to_value(ChatLoadTest::crd()).unwrap();
    failures_against(
        &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
        object,
        old,
    )
}

fn load_test(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "chatback.dev/v1alpha1",
        "kind": "ChatLoadTest",
        "metadata": {"name": name, "namespace": "chat-app"},
        "spec": spec,
    })
}

#[test]
fn a_valid_load_test_passes() {
    let spec = json!({"target": {"chatCluster": "demo"}, "scenario": {"clients": 30, "rooms": 3}});
    assert_eq!(
        load_test_failures(&load_test("smoke", spec), None),
        Vec::<String>::new()
    );
    let spec =
        json!({"target": {"urls": ["ws://chat:8080/ws"]}, "scenario": {"stages": "10s:100"}});
    assert_eq!(
        load_test_failures(&load_test("ramp", spec), None),
        Vec::<String>::new()
    );
}

#[test]
fn each_load_test_rule_rejects_what_it_names() {
    let cases = [
        (
            load_test("t", json!({"target": {}})),
            "target needs exactly one of chatCluster and urls",
        ),
        (
            load_test(
                "t",
                json!({"target": {"chatCluster": "demo", "urls": ["ws://x/ws"]}}),
            ),
            "target needs exactly one of chatCluster and urls",
        ),
        (
            load_test(
                "t",
                json!({"target": {"chatCluster": "demo"}, "scenario": {"stages": "1s:10", "clients": 10}}),
            ),
            "stages replaces clients",
        ),
        (
            load_test(
                "t",
                json!({"target": {"chatCluster": "demo"}, "scenario": {"roomSizes": "2x5", "rooms": 2}}),
            ),
            "roomSizes replaces rooms and clients",
        ),
        (
            load_test(
                "t",
                json!({"target": {"chatCluster": "demo"}, "image": " "}),
            ),
            "image must not be empty",
        ),
        (
            load_test("Not_A_Label", json!({"target": {"chatCluster": "demo"}})),
            "metadata.name must be a DNS-1035 label",
        ),
    ];
    for (object, message) in cases {
        let got = load_test_failures(&object, None);
        assert!(
            got.iter().any(|m| m.contains(message)),
            "{object}: expected {message:?}, got {got:?}"
        );
    }
}

#[test]
fn the_spec_cannot_change_once_created() {
    let old = load_test(
        "t",
        json!({"target": {"chatCluster": "demo"}, "parallelism": 2}),
    );
    let new = load_test(
        "t",
        json!({"target": {"chatCluster": "demo"}, "parallelism": 3}),
    );
    let got = load_test_failures(&new, Some(&old));
    assert!(
        got.iter().any(|m| m.contains("cannot change once created")),
        "{got:?}"
    );
    assert_eq!(load_test_failures(&old, Some(&old)), Vec::<String>::new());
}
