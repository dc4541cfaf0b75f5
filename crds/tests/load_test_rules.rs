//! The ChatLoadTest CRD's `x-kubernetes-validations` rules, evaluated with
//! kube-cel, as the ChatCluster's are in cel_rules.rs.

use crds::ChatLoadTest;
use kube::CustomResourceExt;
use serde_json::{Value, json};

fn failures(object: &Value, old: Option<&Value>) -> Vec<String> {
    let crd = serde_json::to_value(ChatLoadTest::crd()).unwrap();
    let schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
    let compiled = kube_cel::compile_schema(&schema);
    assert!(
        !compiled.has_errors(),
        "a rule does not compile: {:?}",
        compiled.compilation_errors()
    );
    match kube_cel::Validator::new().validate(&schema, object, old) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(|e| e.message.clone()).collect(),
    }
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
        failures(&load_test("smoke", spec), None),
        Vec::<String>::new()
    );
    let spec =
        json!({"target": {"urls": ["ws://chat:8080/ws"]}, "scenario": {"stages": "10s:100"}});
    assert_eq!(
        failures(&load_test("ramp", spec), None),
        Vec::<String>::new()
    );
}

#[test]
fn each_rule_rejects_what_it_names() {
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
        let got = failures(&object, None);
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
    let got = failures(&new, Some(&old));
    assert!(
        got.iter().any(|m| m.contains("cannot change once created")),
        "{got:?}"
    );
    assert_eq!(failures(&old, Some(&old)), Vec::<String>::new());
}
