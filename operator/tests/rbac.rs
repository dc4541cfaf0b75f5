//! The install manifests grant the operator exactly the permissions in
//! `operator::rbac`: every call the controller makes (checked against the
//! fake API server in tests/controller.rs), and nothing more.
//!
//! - cluster-wide install (`k8s/rbac.yaml`): the ClusterRole `chatback-operator`
//!   holds `CLUSTER_RULES`, `NAMESPACED_RULES` and `LOAD_TEST_RULES`;
//! - namespace-scoped install (`k8s/namespaced/rbac.yaml`): the ClusterRole
//!   `chatback-operator-crd` holds `CLUSTER_RULES` only, and the Role
//!   `chatback-operator` `NAMESPACED_RULES` and `LOAD_TEST_RULES`;
//! - both: the Role `chatback-operator-leader-election` holds `LEASE_RULES`.

use std::collections::BTreeSet;

use operator::rbac::{CLUSTER_RULES, LEASE_RULES, LOAD_TEST_RULES, NAMESPACED_RULES, Rule};
use serde::Deserialize;
use serde_json::Value;

type Grant = (String, String, String);

fn documents(file: &str) -> Vec<Value> {
    let path = format!("{}/../{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{file}: {e}")))
        .collect()
}

/// The grants of the `kind` named `name` in `file`.
fn granted(file: &str, kind: &str, name: &str) -> BTreeSet<Grant> {
    let role = documents(file)
        .into_iter()
        .find(|doc| doc["kind"] == kind && doc["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{file} defines no {kind} {name}"));
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

fn needed<'a>(rules: impl Iterator<Item = &'a Rule>) -> BTreeSet<Grant> {
    rules
        .flat_map(|r| {
            r.verbs
                .iter()
                .map(|v| (r.group.to_string(), r.resource.to_string(), v.to_string()))
        })
        .collect()
}

fn assert_exact(file: &str, kind: &str, name: &str, needed: BTreeSet<Grant>) {
    let granted = granted(file, kind, name);
    let missing: Vec<_> = needed.difference(&granted).collect();
    let extra: Vec<_> = granted.difference(&needed).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{file} {kind} {name} differs from operator/src/rbac.rs (group, resource, verb):\n  missing: {missing:?}\n  not used by the operator: {extra:?}"
    );
    for (group, resource, verb) in granted {
        assert!(
            group != "*" && resource != "*" && verb != "*",
            "wildcard in {file}: {group} {resource} {verb}"
        );
    }
}

#[test]
fn the_cluster_wide_install_grants_exactly_what_the_operator_uses() {
    let rules = CLUSTER_RULES
        .iter()
        .chain(NAMESPACED_RULES)
        .chain(LOAD_TEST_RULES);
    assert_exact(
        "k8s/rbac.yaml",
        "ClusterRole",
        "chatback-operator",
        needed(rules),
    );
}

#[test]
fn the_namespace_scoped_install_needs_no_cluster_wide_access_to_namespaced_objects() {
    let file = "k8s/namespaced/rbac.yaml";
    assert_exact(
        file,
        "ClusterRole",
        "chatback-operator-crd",
        needed(CLUSTER_RULES.iter()),
    );
    assert_exact(
        file,
        "Role",
        "chatback-operator",
        needed(NAMESPACED_RULES.iter().chain(LOAD_TEST_RULES)),
    );
}

#[test]
fn leader_election_has_its_own_role() {
    assert_exact(
        "k8s/base/leader-election.yaml",
        "Role",
        "chatback-operator-leader-election",
        needed(LEASE_RULES.iter()),
    );
}
