//! The fake API server as its clients meet it: kube::Client over a real
//! socket. One test per piece of API machinery the operator's tests lean on
//! most: server-side apply between field managers, admission of a custom
//! resource against its CRD (structural rules, CEL, transition rules), and a
//! watch. The finer rules have unit tests next to their code.

use std::time::Duration;

use fake_apiserver::FakeApiServer;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use serde_json::{Value, json};

const NS: &str = "default";
/// Guards against a hang only; nothing asserts on timing.
const DEADLINE: Duration = Duration::from_secs(30);

fn config_map(data: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": NS},
        "data": data,
    })
}

async fn apply(api: &Api<ConfigMap>, manager: &str, object: Value) -> ConfigMap {
    api.patch(
        "settings",
        &PatchParams::apply(manager),
        &Patch::Apply(object),
    )
    .await
    .unwrap_or_else(|e| panic!("apply as {manager}: {e}"))
}

fn keys(cm: &ConfigMap) -> Vec<String> {
    cm.data.iter().flat_map(|d| d.keys().cloned()).collect()
}

#[tokio::test]
async fn server_side_apply_merges_managers_and_drops_what_one_stops_applying() {
    let fake = FakeApiServer::start().await;
    let api: Api<ConfigMap> = Api::namespaced(fake.client(), NS);

    apply(&api, "alice", config_map(json!({"colour": "blue"}))).await;
    let both = apply(&api, "bob", config_map(json!({"size": "large"}))).await;
    assert_eq!(keys(&both), ["colour", "size"]);

    // alice no longer applies `colour`: it was hers alone, so it goes; bob's stays.
    let mut without_data = config_map(json!({}));
    if let Some(object) = without_data.as_object_mut() {
        object.remove("data");
    }
    let after = apply(&api, "alice", without_data).await;
    assert_eq!(keys(&after), ["size"]);

    // A field another manager holds is a conflict unless forced.
    let conflict = api
        .patch(
            "settings",
            &PatchParams::apply("alice"),
            &Patch::Apply(config_map(json!({"size": "small"}))),
        )
        .await
        .expect_err("a conflict over bob's field");
    assert!(
        matches!(&conflict, kube::Error::Api(status) if status.code == 409),
        "{conflict}"
    );
    let forced = api
        .patch(
            "settings",
            &PatchParams::apply("alice").force(),
            &Patch::Apply(config_map(json!({"size": "small"}))),
        )
        .await
        .expect("a forced apply takes the field over");
    assert_eq!(forced.data.unwrap_or_default()["size"], "small");
}

/// A CRD with one structural rule, one CEL rule and one transition rule.
fn widget_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {
                        "type": "object",
                        "x-kubernetes-validations": [
                            {"rule": "self.min <= self.max", "message": "min must not exceed max"},
                            {"rule": "self.colour == oldSelf.colour", "message": "colour is immutable"},
                        ],
                        "properties": {
                            "min": {"type": "integer", "minimum": 0, "default": 0},
                            "max": {"type": "integer", "default": 10},
                            "colour": {"type": "string", "default": "red"},
                        },
                    }},
                }},
            }],
        },
    }))
    .expect("a CRD")
}

fn widget(spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "namespace": NS},
        "spec": spec,
    }))
    .expect("a Widget")
}

fn invalid_message(error: kube::Error) -> String {
    match error {
        kube::Error::Api(status) if status.code == 422 => status.message,
        other => panic!("expected 422 Invalid, got {other}"),
    }
}

#[tokio::test]
async fn custom_resources_are_defaulted_pruned_and_validated_against_their_crd() {
    let fake = FakeApiServer::start().await;
    let client = fake.client();
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&PostParams::default(), &widget_crd())
        .await
        .expect("install the CRD");
    let resource = ApiResource {
        group: "example.com".into(),
        version: "v1".into(),
        api_version: "example.com/v1".into(),
        kind: "Widget".into(),
        plural: "widgets".into(),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client, NS, &resource);
    let post = PostParams::default();

    let below = api.create(&post, &widget(json!({"min": -1}))).await;
    let message = invalid_message(below.expect_err("min below its minimum"));
    assert!(message.contains("spec.min"), "{message}");

    let crossed = api
        .create(&post, &widget(json!({"min": 5, "max": 2})))
        .await;
    let message = invalid_message(crossed.expect_err("min above max"));
    assert!(message.contains("min must not exceed max"), "{message}");

    let created = api
        .create(&post, &widget(json!({"min": 1, "unknown": true})))
        .await
        .expect("a valid Widget");
    assert_eq!(
        created.data["spec"],
        json!({"min": 1, "max": 10, "colour": "red"}),
        "defaults filled in, the unknown field pruned"
    );

    let recoloured = api
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"colour": "green"}})),
        )
        .await;
    let message = invalid_message(recoloured.expect_err("colour is immutable"));
    assert!(message.contains("colour is immutable"), "{message}");
}

#[tokio::test]
async fn a_watch_sees_an_object_come_change_and_go() {
    let fake = FakeApiServer::start().await;
    let api: Api<ConfigMap> = Api::namespaced(fake.client(), NS);
    let mut events = watcher::watcher(api.clone(), watcher::Config::default()).boxed();

    // The initial list of an empty namespace ends with InitDone.
    let next = async |events: &mut futures::stream::BoxStream<'_, _>| {
        tokio::time::timeout(DEADLINE, events.try_next())
            .await
            .expect("a watch event before the deadline")
            .expect("a watch without errors")
            .expect("a watch that does not end")
    };
    loop {
        if let Event::InitDone = next(&mut events).await {
            break;
        }
    }

    apply(&api, "alice", config_map(json!({"colour": "blue"}))).await;
    match next(&mut events).await {
        Event::Apply(cm) => assert_eq!(keys(&cm), ["colour"]),
        other => panic!("expected the new ConfigMap, got {other:?}"),
    }
    apply(&api, "alice", config_map(json!({"colour": "green"}))).await;
    match next(&mut events).await {
        Event::Apply(cm) => assert_eq!(cm.data.unwrap_or_default()["colour"], "green"),
        other => panic!("expected the changed ConfigMap, got {other:?}"),
    }
    api.delete("settings", &DeleteParams::default())
        .await
        .expect("delete");
    match next(&mut events).await {
        Event::Delete(cm) => assert_eq!(cm.metadata.name.as_deref(), Some("settings")),
        other => panic!("expected the deletion, got {other:?}"),
    }
}
