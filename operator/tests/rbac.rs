//! `k8s/rbac.yaml` grants the operator exactly the permissions in
//! `operator::rbac::RULES`: every call the controller makes (checked against
//! the fake API server in tests/controller.rs), and nothing more.

use std::collections::BTreeSet;

use operator::rbac::RULES;
use serde::Deserialize;
use serde_json::Value;

type Grant = (String, String, String);

fn granted_by_manifest() -> BTreeSet<Grant> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../k8s/rbac.yaml");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let role = serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("k8s/rbac.yaml is valid YAML"))
        .find(|doc| doc["kind"] == "ClusterRole" && doc["metadata"]["name"] == "chatback-operator")
        .expect("k8s/rbac.yaml defines the ClusterRole chatback-operator");
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(String::from))
            .collect()
    };
    let mut grants = BTreeSet::new();
    for rule in role["rules"].as_array().expect("rules") {
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    grants.insert((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    grants
}

fn needed() -> BTreeSet<Grant> {
    RULES
        .iter()
        .flat_map(|r| {
            r.verbs
                .iter()
                .map(|v| (r.group.to_string(), r.resource.to_string(), v.to_string()))
        })
        .collect()
}

#[test]
fn the_cluster_role_grants_exactly_what_the_operator_uses() {
    let granted = granted_by_manifest();
    let needed = needed();
    let missing: Vec<_> = needed.difference(&granted).collect();
    let extra: Vec<_> = granted.difference(&needed).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "k8s/rbac.yaml differs from operator/src/rbac.rs (group, resource, verb):\n  missing: {missing:?}\n  not used by the operator: {extra:?}"
    );
}

#[test]
fn wildcards_are_not_used() {
    for (group, resource, verb) in granted_by_manifest() {
        assert!(
            group != "*" && resource != "*" && verb != "*",
            "wildcard in k8s/rbac.yaml: {group} {resource} {verb}"
        );
    }
}
