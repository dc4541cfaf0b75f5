//! The real kube-runtime Controller, end to end, against the in-process fake
//! API server: convergence, drift repair, status, scale, deletion with each
//! retention policy, and retries after API errors.
//!
//! Waits poll the fake's store until a condition holds, with a generous
//! deadline that only guards against hangs; no assertion depends on timing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::Method;
use crds::ChatCluster;
use fake_apiserver::FakeApiServer;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{CustomResourceExt, ResourceExt};
use operator::controller::{self, Context, Scope, Settings};
use operator::leader::{self, Election, Outcome};
use operator::metrics::Metrics;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const NS: &str = "chat";
const DEADLINE: Duration = Duration::from_secs(60);

struct Harness {
    fake: FakeApiServer,
    api: Api<ChatCluster>,
    registry: Arc<Registry>,
    stop: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn settings() -> Settings {
    Settings {
        requeue: Duration::from_secs(300),
        pending_requeue: Duration::from_millis(200),
        retry_base: Duration::from_millis(50),
        retry_max: Duration::from_millis(500),
    }
}

async fn install_crd(fake: &FakeApiServer) {
    Api::<CustomResourceDefinition>::all(fake.client())
        .create(&PostParams::default(), &ChatCluster::crd())
        .await
        .expect("install the CRD");
}

/// A fake API server with the CRD installed and the controller running.
async fn start() -> Harness {
    let fake = FakeApiServer::start().await;
    install_crd(&fake).await;
    start_controller(fake).await
}

async fn start_controller(fake: FakeApiServer) -> Harness {
    start_controller_in(fake, Scope::Cluster).await
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
}

async fn start_controller_in(fake: FakeApiServer, scope: Scope) -> Harness {
    init_tracing();
    let client = fake.client();
    controller::ensure_crd_installed(&client)
        .await
        .expect("CRD installed");
    let mut registry = Registry::default();
    let metrics = Metrics::default().register(&mut registry);
    let ctx = Context::new(client.clone(), metrics, settings(), Some("test".into()));
    let stop = CancellationToken::new();
    tokio::spawn(controller::run(ctx, scope, stop.clone()));
    Harness {
        api: Api::namespaced(client, NS),
        fake,
        registry: Arc::new(registry),
        stop,
    }
}

async fn create(h: &Harness, name: &str, spec: Value) -> ChatCluster {
    let cc: ChatCluster = serde_json::from_value(json!({
        "apiVersion": "chatback.dev/v1alpha1",
        "kind": "ChatCluster",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }))
    .expect("a valid ChatCluster");
    h.api
        .create(&PostParams::default(), &cc)
        .await
        .expect("create the ChatCluster")
}

/// The Secret an External backend reads its URL from (key `url`).
async fn create_url_secret(h: &Harness, name: &str) {
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NS},
        "stringData": {"url": "postgres://chat:pw@db.example:5432/chat"},
    }))
    .expect("a Secret");
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(h.fake.client(), NS)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create the external Secret");
}

/// Polls `check` until it returns Some, or panics naming `what` after the deadline.
async fn eventually<T>(what: &str, check: impl FnMut() -> Option<T>) -> T {
    eventually_or_none(check)
        .await
        .unwrap_or_else(|| panic!("timed out waiting for {what}"))
}

/// Polls `check` until it returns Some, or gives None after the deadline.
async fn eventually_or_none<T>(mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if start.elapsed() >= DEADLINE {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

impl Harness {
    fn cluster(&self, name: &str) -> Option<Value> {
        self.fake.object("chatback.dev", "chatclusters", NS, name)
    }

    fn child(&self, group: &str, plural: &str, name: &str) -> Option<Value> {
        self.fake.object(group, plural, NS, name)
    }

    fn deployment(&self, name: &str) -> Option<Value> {
        self.child("apps", "deployments", name)
    }

    async fn wait_phase(&self, name: &str, phase: &str) -> Value {
        let mut last = Value::Null;
        let found = eventually_or_none(|| {
            last = self.cluster(name).unwrap_or_default();
            (last["status"]["phase"] == phase).then(|| last.clone())
        })
        .await;
        found.unwrap_or_else(|| {
            panic!("timed out waiting for {name} to reach phase {phase}; last: {last}")
        })
    }

    /// Creates a ChatCluster and waits until it is Ready and its PostgreSQL
    /// claim exists (the fake kubelet makes it right after the StatefulSet).
    async fn ready_with_postgres_claim(&self, name: &str, spec: Value) {
        create(self, name, spec).await;
        self.wait_phase(name, "Ready").await;
        let claim = format!("data-{name}-postgres-0");
        eventually("the PostgreSQL claim", || {
            self.child("", "persistentvolumeclaims", &claim)
        })
        .await;
    }

    /// Deletes the ChatCluster and waits until it is gone (finalizer done).
    async fn delete_cluster(&self, name: &str) {
        self.api
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete the ChatCluster");
        eventually("the ChatCluster to be gone", || {
            self.cluster(name).is_none().then_some(())
        })
        .await;
    }

    async fn wait_event(&self, reason: &str) {
        eventually(&format!("a {reason} event"), || {
            self.event_reasons()
                .iter()
                .any(|r| r == reason)
                .then_some(())
        })
        .await;
    }

    fn event_reasons(&self) -> Vec<String> {
        self.fake
            .objects("events.k8s.io", "events", NS)
            .iter()
            .filter_map(|e| e["reason"].as_str().map(String::from))
            .collect()
    }

    fn metrics_text(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encode metrics");
        out
    }
}

fn condition<'a>(cc: &'a Value, kind: &str) -> &'a Value {
    cc["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .unwrap_or_else(|| panic!("no {kind} condition in {cc}"))
}

fn config_hash(deployment: &Value) -> String {
    deployment["spec"]["template"]["metadata"]["annotations"]["chatback.dev/config-hash"]
        .as_str()
        .expect("the config-hash annotation")
        .to_string()
}

/// A Secret value as stored (the typed Secret decodes the base64).
fn decoded(secret: &Value, key: &str) -> String {
    let secret: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(secret.clone()).expect("a Secret");
    let data = secret.data.unwrap_or_default();
    String::from_utf8(data[key].0.clone()).expect("utf-8")
}

#[tokio::test]
async fn a_new_cluster_converges_to_ready() {
    let h = start().await;
    create(&h, "demo", json!({})).await;
    let cc = h.wait_phase("demo", "Ready").await;
    let uid = cc["metadata"]["uid"].as_str().unwrap().to_string();

    assert_eq!(
        cc["metadata"]["finalizers"],
        json!(["chatback.dev/retention"])
    );
    let status = &cc["status"];
    assert_eq!(status["replicas"], 3);
    assert_eq!(status["readyReplicas"], 3);
    assert_eq!(status["endpoint"], "ws://demo.chat.svc:8080/ws");
    assert_eq!(
        status["selector"],
        "app.kubernetes.io/component=server,app.kubernetes.io/instance=demo,app.kubernetes.io/name=chat-server"
    );
    assert_eq!(status["observedGeneration"], cc["metadata"]["generation"]);
    for kind in ["Ready", "RedisReady", "PostgresReady", "ServerReady"] {
        let c = condition(&cc, kind);
        assert_eq!(c["status"], "True", "{kind}: {c}");
        assert_eq!(c["observedGeneration"], cc["metadata"]["generation"]);
        assert!(c["reason"].is_string() && c["message"].is_string());
    }

    let secret = h.child("", "secrets", "demo-secrets").expect("the Secret");
    assert!(
        secret["metadata"].get("ownerReferences").is_none(),
        "under Retain the Secret outlives the ChatCluster"
    );
    let children = [
        ("", "configmaps", "demo-config"),
        ("", "services", "demo"),
        ("", "services", "demo-redis"),
        ("", "services", "demo-postgres"),
        ("apps", "deployments", "demo"),
        ("apps", "statefulsets", "demo-redis"),
        ("apps", "statefulsets", "demo-postgres"),
        ("autoscaling", "horizontalpodautoscalers", "demo"),
        ("policy", "poddisruptionbudgets", "demo"),
        ("networking.k8s.io", "networkpolicies", "demo-backends"),
    ];
    for (group, plural, name) in children {
        let child = h
            .child(group, plural, name)
            .unwrap_or_else(|| panic!("{plural}/{name} missing"));
        let owner = &child["metadata"]["ownerReferences"][0];
        assert_eq!(owner["uid"], uid.as_str(), "{plural}/{name}");
        assert_eq!(owner["controller"], true);
        assert_eq!(
            child["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "chatback-operator"
        );
        assert_eq!(
            child["metadata"]["labels"]["app.kubernetes.io/instance"],
            "demo"
        );
    }
    assert!(
        h.child("networking.k8s.io", "networkpolicies", "demo-backends")
            .is_some(),
        "the backends are fenced by default"
    );
    let hpa = h
        .child("autoscaling", "horizontalpodautoscalers", "demo")
        .unwrap();
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "ChatCluster");

    // Events name what happened; no secret value leaks into them or the status.
    let secret = h.child("", "secrets", "demo-secrets").unwrap();
    let password = decoded(&secret, "postgres-password");
    assert_eq!(password.len(), 32);
    let reasons = eventually("the Provisioned and PhaseChanged events", || {
        let reasons = h.event_reasons();
        (reasons.contains(&"Provisioned".to_string())
            && reasons.contains(&"PhaseChanged".to_string()))
        .then_some(reasons)
    })
    .await;
    assert!(
        reasons.contains(&"SecretGenerated".to_string()),
        "{reasons:?}"
    );
    let events = serde_json::to_string(&h.fake.objects("events.k8s.io", "events", NS)).unwrap();
    assert!(!events.contains(&password));
    assert!(!h.cluster("demo").unwrap().to_string().contains(&password));
    let deployment = h.deployment("demo").unwrap();
    assert!(
        !deployment.to_string().contains(&password),
        "secrets are referenced, not inlined"
    );
}

#[tokio::test]
async fn a_spec_change_updates_the_deployment_and_rolls_the_hash() {
    let h = start().await;
    create(&h, "demo", json!({})).await;
    h.wait_phase("demo", "Ready").await;
    let before = config_hash(&h.deployment("demo").unwrap());
    let secret_before = h.child("", "secrets", "demo-secrets").unwrap()["data"].clone();

    let patch =
        json!({"spec": {"server": {"limits": {"maxConnections": 500}, "logLevel": "debug"}}});
    h.api
        .patch("demo", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch the spec");

    let deployment = eventually("the Deployment to roll", || {
        h.deployment("demo").filter(|d| config_hash(d) != before)
    })
    .await;
    assert_ne!(config_hash(&deployment), before);
    let config = h.child("", "configmaps", "demo-config").unwrap();
    assert_eq!(config["data"]["CHAT_MAX_CONNECTIONS"], "500");
    assert_eq!(config["data"]["RUST_LOG"], "debug");
    let cc = eventually("the status to observe generation 2", || {
        h.cluster("demo").filter(|cc| {
            cc["status"]["observedGeneration"] == 2 && cc["status"]["phase"] == "Ready"
        })
    })
    .await;
    assert_eq!(cc["metadata"]["generation"], 2);
    assert_eq!(
        h.child("", "secrets", "demo-secrets").unwrap()["data"],
        secret_before,
        "credentials are never regenerated"
    );
    h.wait_event("ConfigChanged").await;
}

#[tokio::test]
async fn deleted_and_edited_children_are_restored() {
    let h = start().await;
    create(&h, "demo", json!({})).await;
    h.wait_phase("demo", "Ready").await;
    let client = h.fake.client();
    let service_uid = h.child("", "services", "demo").unwrap()["metadata"]["uid"].clone();

    Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), NS)
        .delete("demo", &DeleteParams::default())
        .await
        .expect("delete the Service");
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), NS)
        .delete("demo-config", &DeleteParams::default())
        .await
        .expect("delete the ConfigMap");
    let restored = eventually("the Service to be recreated", || {
        h.child("", "services", "demo")
            .filter(|s| s["metadata"]["uid"] != service_uid)
    })
    .await;
    assert_eq!(restored["spec"]["ports"][0]["name"], "http");
    eventually("the ConfigMap to be recreated", || {
        h.child("", "configmaps", "demo-config")
    })
    .await;

    let edit = json!({"spec": {"replicas": 7}});
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client, NS)
        .patch("demo", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .expect("edit the Deployment");
    eventually("the Deployment's replicas to be restored", || {
        h.deployment("demo")
            .filter(|d| d["spec"]["replicas"] == 3 && d["metadata"]["generation"] != 1)
    })
    .await;
}

#[tokio::test]
async fn status_turns_ready_only_once_the_children_are_ready() {
    let h = start().await;
    h.fake.set_pods_ready(false);
    create(&h, "demo", json!({})).await;
    let cc = eventually("the children to report not ready", || {
        h.cluster("demo").filter(|cc| {
            cc["status"]["phase"] == "Provisioning"
                && cc["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "ServerReady" && c["reason"] == "ReplicasNotReady")
                })
        })
    })
    .await;
    assert_eq!(condition(&cc, "Ready")["status"], "False");
    assert_eq!(condition(&cc, "RedisReady")["reason"], "PodsNotReady");
    assert_eq!(cc["status"]["readyReplicas"], 0);

    h.fake.set_pods_ready(true);
    let cc = h.wait_phase("demo", "Ready").await;
    assert_eq!(condition(&cc, "Ready")["status"], "True");
    assert_eq!(cc["status"]["readyReplicas"], 3);
}

#[tokio::test]
async fn the_scale_subresource_drives_the_deployment() {
    let h = start().await;
    create(&h, "demo", json!({})).await;
    h.wait_phase("demo", "Ready").await;

    let scale = json!({"spec": {"replicas": 5}});
    h.api
        .patch_scale("demo", &PatchParams::default(), &Patch::Merge(&scale))
        .await
        .expect("patch the scale subresource");
    eventually("the Deployment to follow", || {
        h.deployment("demo").filter(|d| d["spec"]["replicas"] == 5)
    })
    .await;
    eventually("the status to report 5 replicas", || {
        h.cluster("demo")
            .filter(|cc| cc["status"]["replicas"] == 5 && cc["status"]["phase"] == "Ready")
    })
    .await;
    let scale = h
        .api
        .get_scale("demo")
        .await
        .expect("read the scale subresource");
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(5));
    let status = scale.status.expect("scale status");
    assert_eq!(status.replicas, 5);
    assert!(
        status
            .selector
            .unwrap_or_default()
            .contains("app.kubernetes.io/instance=demo")
    );
}

#[tokio::test]
async fn deletion_with_retain_keeps_the_claims_and_their_secret() {
    let h = start().await;
    h.ready_with_postgres_claim("demo", json!({})).await;
    let password = decoded(
        &h.child("", "secrets", "demo-secrets").unwrap(),
        "postgres-password",
    );

    h.delete_cluster("demo").await;
    for (group, plural, name) in [
        ("apps", "deployments", "demo"),
        ("apps", "statefulsets", "demo-postgres"),
        ("", "services", "demo"),
        ("", "configmaps", "demo-config"),
    ] {
        assert!(
            h.child(group, plural, name).is_none(),
            "{plural}/{name} was not collected"
        );
    }
    assert!(
        h.child("", "persistentvolumeclaims", "data-demo-postgres-0")
            .is_some(),
        "Retain keeps the claim"
    );
    assert!(
        h.child("", "persistentvolumeclaims", "data-demo-redis-0")
            .is_none()
    );
    let secret = h
        .child("", "secrets", "demo-secrets")
        .expect("Retain keeps the Secret");
    assert!(secret["metadata"].get("ownerReferences").is_none());
    assert!(h.event_reasons().contains(&"VolumesRetained".to_string()));

    // A new cluster of the same name adopts the kept Secret: same password.
    create(&h, "demo", json!({})).await;
    h.wait_phase("demo", "Ready").await;
    let secret = h.child("", "secrets", "demo-secrets").unwrap();
    assert_eq!(decoded(&secret, "postgres-password"), password);
}

#[tokio::test]
async fn deletion_with_delete_removes_the_claims() {
    let h = start().await;
    h.ready_with_postgres_claim(
        "demo",
        json!({"postgres": {"storage": {"retentionPolicy": "Delete"}}}),
    )
    .await;

    h.delete_cluster("demo").await;
    assert!(
        h.child("", "persistentvolumeclaims", "data-demo-postgres-0")
            .is_none()
    );
    assert!(h.child("", "secrets", "demo-secrets").is_none());
    assert!(h.child("apps", "statefulsets", "demo-postgres").is_none());
    assert!(h.event_reasons().contains(&"VolumesDeleted".to_string()));
}

#[tokio::test]
async fn api_errors_are_retried() {
    let fake = FakeApiServer::start().await;
    install_crd(&fake).await;
    fake.inject_fault(Method::PATCH, "deployments", 3, 500);
    let h = start_controller(fake).await;
    create(&h, "demo", json!({})).await;
    h.wait_phase("demo", "Ready").await;
    assert_eq!(h.fake.faults_left(), 0, "every injected failure was hit");
    let metrics = h.metrics_text();
    assert!(
        metrics.contains("chatback_operator_reconciliation_errors_total{reason=\"kube\"} 3"),
        "{metrics}"
    );
    h.wait_event("ReconcileFailed").await;
}

#[tokio::test]
async fn switching_features_off_removes_their_children() {
    let h = start().await;
    create(&h, "demo", json!({"networkPolicy": {"enabled": true}})).await;
    h.wait_phase("demo", "Ready").await;
    assert!(
        h.child("networking.k8s.io", "networkpolicies", "demo-backends")
            .is_some()
    );

    let patch = json!({"spec": {
        "autoscaling": {"enabled": false},
        "podDisruptionBudget": {"enabled": false},
        "networkPolicy": {"enabled": false},
        "server": {"replicas": 2},
    }});
    h.api
        .patch("demo", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch");
    eventually("the HPA, PDB and NetworkPolicy to go", || {
        (h.child("autoscaling", "horizontalpodautoscalers", "demo")
            .is_none()
            && h.child("policy", "poddisruptionbudgets", "demo").is_none()
            && h.child("networking.k8s.io", "networkpolicies", "demo-backends")
                .is_none())
        .then_some(())
    })
    .await;
    eventually("the Deployment to follow spec.server.replicas", || {
        h.deployment("demo").filter(|d| d["spec"]["replicas"] == 2)
    })
    .await;
}

/// `autoscaling.targetConnectionsPerPod` adds the `chat_connections` Pods
/// metric (what k8s/monitoring/'s prometheus-adapter rule serves) next to the
/// CPU target, follows edits, and goes when unset.
#[tokio::test]
async fn a_connections_target_adds_the_pods_metric_to_the_autoscaler() {
    let h = start().await;
    create(
        &h,
        "demo",
        json!({"autoscaling": {"targetConnectionsPerPod": 2000}}),
    )
    .await;
    let hpa_metrics = |count: usize| {
        h.child("autoscaling", "horizontalpodautoscalers", "demo")
            .map(|hpa| hpa["spec"]["metrics"].clone())
            .filter(|m| m.as_array().is_some_and(|a| a.len() == count))
    };
    let cpu = json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}});
    let connections = |target: &str| json!({"type": "Pods", "pods": {"metric": {"name": "chat_connections"}, "target": {"type": "AverageValue", "averageValue": target}}});
    let metrics = eventually("the HPA with two metrics", || hpa_metrics(2)).await;
    assert_eq!(metrics, json!([cpu, connections("2000")]));

    patch_spec(
        &h,
        "demo",
        json!({"autoscaling": {"targetConnectionsPerPod": 500}}),
    )
    .await
    .expect("patch");
    eventually("the HPA to follow the new target", || {
        hpa_metrics(2).filter(|m| m[1] == connections("500"))
    })
    .await;

    patch_spec(
        &h,
        "demo",
        json!({"autoscaling": {"targetConnectionsPerPod": null}}),
    )
    .await
    .expect("patch");
    let metrics = eventually("the connections metric to go", || hpa_metrics(1)).await;
    assert_eq!(metrics, json!([cpu]));
}

#[tokio::test]
async fn external_postgres_waits_for_its_secret_and_drops_the_managed_one() {
    let h = start().await;
    create(&h, "demo", json!({})).await;
    h.wait_phase("demo", "Ready").await;

    let patch =
        json!({"spec": {"postgres": {"mode": "External", "secretRef": {"name": "pg-url"}}}});
    h.api
        .patch("demo", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch");
    let cc = h.wait_phase("demo", "Pending").await;
    assert_eq!(condition(&cc, "Ready")["reason"], "SecretNotFound");
    assert!(
        condition(&cc, "Ready")["message"]
            .as_str()
            .unwrap()
            .contains("pg-url/url")
    );

    create_url_secret(&h, "pg-url").await;
    let cc = h.wait_phase("demo", "Ready").await;
    assert_eq!(condition(&cc, "PostgresReady")["reason"], "External");
    assert!(h.child("apps", "statefulsets", "demo-postgres").is_none());
    assert!(h.child("", "services", "demo-postgres").is_none());
    let env = &h.deployment("demo").unwrap()["spec"]["template"]["spec"]["containers"][0]["env"];
    let database_url = env
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "DATABASE_URL")
        .unwrap();
    assert_eq!(database_url["valueFrom"]["secretKeyRef"]["name"], "pg-url");
}

#[tokio::test]
async fn the_api_server_rejects_an_invalid_cluster_with_the_rules_message() {
    let h = start().await;
    let cc: ChatCluster = serde_json::from_value(json!({
        "apiVersion": "chatback.dev/v1alpha1",
        "kind": "ChatCluster",
        "metadata": {"name": "bad", "namespace": NS},
        "spec": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}, "redis": {"mode": "External"}},
    }))
    .unwrap();
    let error = h.api.create(&PostParams::default(), &cc).await.unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains(
            "autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas"
        ),
        "{message}"
    );
    assert!(
        message.contains("redis.secretRef is required when redis.mode is External"),
        "{message}"
    );
    assert!(h.cluster("bad").is_none(), "nothing was stored");
}

/// Strips the CEL rules from the CRD, as an older CRD might have lacked them.
fn without_cel_rules(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("x-kubernetes-validations");
            map.values_mut().for_each(without_cel_rules);
        }
        Value::Array(items) => items.iter_mut().for_each(without_cel_rules),
        _ => {}
    }
}

/// The controller against a CRD without its CEL rules, as an older CRD might be.
async fn start_without_cel_rules() -> Harness {
    let fake = FakeApiServer::start().await;
    let mut crd = serde_json::to_value(ChatCluster::crd()).unwrap();
    without_cel_rules(&mut crd);
    let crd: CustomResourceDefinition = serde_json::from_value(crd).unwrap();
    Api::<CustomResourceDefinition>::all(fake.client())
        .create(&PostParams::default(), &crd)
        .await
        .expect("install the rule-less CRD");
    start_controller(fake).await
}

#[tokio::test]
async fn an_invalid_spec_that_got_past_the_schema_is_reported_not_half_applied() {
    let h = start_without_cel_rules().await;
    create(
        &h,
        "bad",
        json!({"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}),
    )
    .await;
    let cc = h.wait_phase("bad", "Pending").await;
    let ready = condition(&cc, "Ready");
    assert_eq!(ready["reason"], "InvalidSpec");
    assert!(ready["message"].as_str().unwrap().contains("minReplicas"));
    assert!(h.deployment("bad").is_none());
    assert!(h.child("", "secrets", "bad-secrets").is_none());
}

#[tokio::test]
async fn startup_fails_clearly_without_the_crd() {
    let fake = FakeApiServer::start().await;
    let error = controller::ensure_crd_installed(&fake.client())
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(message.contains("CRD is not installed"), "{message}");
    assert!(
        message.contains("kubectl apply --server-side -f crds/chatcluster.yaml"),
        "{message}"
    );
    install_crd(&fake).await;
    controller::ensure_crd_installed(&fake.client())
        .await
        .expect("installed now");
    let names: Vec<String> = Api::<ChatCluster>::namespaced(fake.client(), NS)
        .list(&Default::default())
        .await
        .expect("the CRD is served")
        .iter()
        .map(|c| c.name_any())
        .collect();
    assert!(names.is_empty());
}

/// The (group, resource, verb) of a request the operator made, as RBAC sees it.
fn rbac_verbs(request: &fake_apiserver::Request) -> Vec<(String, String, String)> {
    let segments: Vec<&str> = request.path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _, rest @ ..] => ("", rest),
        ["apis", group, _, rest @ ..] => (*group, rest),
        _ => return Vec::new(),
    };
    let rest = match rest {
        ["namespaces", _, rest @ ..] if !rest.is_empty() => rest,
        rest => rest,
    };
    let (resource, named) = match rest {
        [plural] => (plural.to_string(), false),
        [plural, _] => (plural.to_string(), true),
        [plural, _, sub] => (format!("{plural}/{sub}"), true),
        _ => return Vec::new(),
    };
    let verbs: &[&str] = match (&request.method, named) {
        (&Method::GET, true) => &["get"],
        (&Method::GET, false) if request.query.contains("watch=true") => &["watch"],
        (&Method::GET, false) => &["list"],
        (&Method::POST, _) => &["create"],
        (&Method::PUT, _) => &["update"],
        // A server-side apply that creates the object is authorized as create too.
        (&Method::PATCH, _) if request.status == 201 => &["patch", "create"],
        (&Method::PATCH, _) => &["patch"],
        (&Method::DELETE, _) => &["delete"],
        _ => &[],
    };
    verbs
        .iter()
        .map(|v| (group.to_string(), resource.clone(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn rbac_rules_cover_exactly_the_calls_the_controller_makes() {
    let fake = FakeApiServer::start().await;
    install_crd(&fake).await;
    let setup_requests = fake.requests().len();
    let h = start_controller(fake).await;
    let uses = |h: &Harness, verb: &str, resource: &str| {
        h.fake.requests()[setup_requests..]
            .iter()
            .flat_map(rbac_verbs)
            .any(|(_, r, v)| r == resource && v == verb)
    };

    // Every path through the controller: provision, prune, wait on a Secret
    // (a repeated Event is patched), switch to External, delete with Delete.
    h.ready_with_postgres_claim("demo", json!({"networkPolicy": {"enabled": true}, "postgres": {"storage": {"retentionPolicy": "Delete"}}})).await;
    let off = json!({"spec": {"autoscaling": {"enabled": false}, "podDisruptionBudget": {"enabled": false}, "networkPolicy": {"enabled": false}}});
    h.api
        .patch("demo", &PatchParams::default(), &Patch::Merge(&off))
        .await
        .expect("patch");
    eventually("the HPA to go", || {
        h.child("autoscaling", "horizontalpodautoscalers", "demo")
            .is_none()
            .then_some(())
    })
    .await;
    h.delete_cluster("demo").await;

    create(
        &h,
        "ext",
        json!({"postgres": {"mode": "External", "secretRef": {"name": "pg-url"}}}),
    )
    .await;
    h.wait_phase("ext", "Pending").await;
    eventually("a repeated Event to be patched", || {
        uses(&h, "patch", "events").then_some(())
    })
    .await;
    create_url_secret(&h, "pg-url").await;
    h.wait_phase("ext", "Ready").await;
    let managed = json!({"spec": {"postgres": {"mode": "Managed"}, "redis": {"mode": "External", "secretRef": {"name": "pg-url"}}}});
    h.api
        .patch("ext", &PatchParams::default(), &Patch::Merge(&managed))
        .await
        .expect("patch");
    eventually("the managed Redis to be pruned", || {
        (h.child("apps", "statefulsets", "ext-redis").is_none()
            && h.child("", "services", "ext-redis").is_none())
        .then_some(())
    })
    .await;
    h.stop.cancel();

    // The test's own calls (creating, editing and deleting ChatClusters,
    // creating a Secret) are not the operator's.
    let by_test = |r: &fake_apiserver::Request| {
        let cluster = r.path.contains("/chatclusters") && !r.path.ends_with("/status");
        (r.method == Method::POST && (cluster || r.path.ends_with("/secrets")))
            || (cluster && r.method == Method::DELETE)
            || (cluster
                && r.method == Method::PATCH
                && r.content_type.starts_with("application/merge-patch+json"))
    };
    let made: std::collections::BTreeSet<(String, String, String)> = h.fake.requests()
        [setup_requests..]
        .iter()
        .filter(|r| !by_test(r))
        .flat_map(rbac_verbs)
        .collect();
    for (group, resource, verb) in &made {
        assert!(
            operator::rbac::allows(operator::rbac::rules(), group, resource, verb),
            "the controller called {verb} on {group}/{resource}, which operator/src/rbac.rs does not grant"
        );
    }
    for rule in operator::rbac::rules() {
        for verb in rule.verbs {
            let used = made
                .iter()
                .any(|(g, r, v)| g == rule.group && r == rule.resource && v == verb);
            assert!(
                used,
                "operator/src/rbac.rs grants {verb} on {}/{} but the controller never used it",
                rule.group, rule.resource
            );
        }
    }
}

/// The spec patch of an edit, applied as a user's `kubectl patch --type merge`.
async fn patch_spec(h: &Harness, name: &str, spec: Value) -> Result<ChatCluster, kube::Error> {
    h.api
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": spec })),
        )
        .await
}

#[tokio::test]
async fn the_api_server_refuses_a_storage_change_and_says_what_to_do() {
    let h = start().await;
    create(&h, "demo", json!({})).await;
    h.wait_phase("demo", "Ready").await;
    let error = patch_spec(
        &h,
        "demo",
        json!({"postgres": {"storage": {"size": "5Gi"}}}),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(error.contains("cannot change after creation"), "{error}");
    assert!(error.contains("data-<name>-postgres-0"), "{error}");
    patch_spec(
        &h,
        "demo",
        json!({"postgres": {"storage": {"retentionPolicy": "Delete"}}}),
    )
    .await
    .expect("the retention policy may change");
}

#[tokio::test]
async fn a_child_the_api_server_refuses_does_not_stop_the_others() {
    // A ChatCluster stored under an older CRD (no transition rule) can still
    // ask for a change the StatefulSet cannot take.
    let h = start_without_cel_rules().await;
    create(&h, "demo", json!({})).await;
    h.wait_phase("demo", "Ready").await;

    patch_spec(
        &h,
        "demo",
        json!({"postgres": {"storage": {"size": "5Gi"}}, "server": {"limits": {"maxConnections": 500}}}),
    )
    .await
    .expect("the rule-less CRD accepts it");
    eventually("the ConfigMap to follow the spec", || {
        h.child("", "configmaps", "demo-config")
            .filter(|c| c["data"]["CHAT_MAX_CONNECTIONS"] == "500")
    })
    .await;
    let cc = eventually("a Reconciled=False condition", || {
        h.cluster("demo").filter(|cc| {
            cc["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Reconciled" && c["status"] == "False")
            })
        })
    })
    .await;
    let reconciled = condition(&cc, "Reconciled");
    assert_eq!(reconciled["reason"], "ReconcileFailed");
    let message = reconciled["message"].as_str().unwrap();
    assert!(
        message.contains("StatefulSet/demo-postgres") && message.contains("Forbidden"),
        "{message}"
    );
}

#[tokio::test]
async fn an_image_that_never_gets_ready_never_reads_as_ready() {
    let h = start().await;
    create(&h, "demo", json!({})).await;
    h.wait_phase("demo", "Ready").await;
    h.fake.break_image("chat-server:crashloop");

    patch_spec(
        &h,
        "demo",
        json!({"server": {"image": "chat-server:crashloop"}}),
    )
    .await
    .expect("patch the image");
    // The first status that describes generation 2 must already say not ready.
    let cc = eventually("the status to observe generation 2", || {
        h.cluster("demo")
            .filter(|cc| cc["status"]["observedGeneration"] == 2)
    })
    .await;
    assert_eq!(condition(&cc, "Ready")["status"], "False", "{cc}");
    assert_eq!(condition(&cc, "ServerReady")["status"], "False", "{cc}");
    let cc = eventually("ProgressDeadlineExceeded", || {
        h.cluster("demo").filter(|cc| {
            cc["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter().any(|c| {
                    c["type"] == "ServerReady" && c["reason"] == "ProgressDeadlineExceeded"
                })
            })
        })
    })
    .await;
    assert_eq!(condition(&cc, "Ready")["status"], "False");
    assert_eq!(
        cc["status"]["phase"], "Degraded",
        "the old pods still serve"
    );

    patch_spec(
        &h,
        "demo",
        json!({"server": {"image": "chat-server:fixed"}}),
    )
    .await
    .expect("patch the image");
    eventually("Ready after the fix", || {
        h.cluster("demo").filter(|cc| {
            cc["status"]["observedGeneration"] == 3 && cc["status"]["phase"] == "Ready"
        })
    })
    .await;
}

#[tokio::test]
async fn a_lost_password_is_not_regenerated_over_existing_data() {
    let h = start().await;
    // The data claim a deleted cluster left (retention Retain), whose Secret is gone.
    let claim: k8s_openapi::api::core::v1::PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "data-demo-postgres-0", "namespace": NS},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::namespaced(h.fake.client(), NS)
        .create(&PostParams::default(), &claim)
        .await
        .expect("create the claim");

    create(&h, "demo", json!({})).await;
    let cc = h.wait_phase("demo", "Pending").await;
    let ready = condition(&cc, "Ready");
    assert_eq!(ready["reason"], "PasswordMissing");
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.contains("data-demo-postgres-0")
            && message.contains("Restore the Secret demo-secrets"),
        "{message}"
    );
    assert!(
        h.child("", "secrets", "demo-secrets").is_none(),
        "no new password was generated"
    );
    assert!(
        h.deployment("demo").is_none(),
        "nothing is built on a password nobody knows"
    );

    // Restoring the Secret from a backup brings the cluster up on the old data.
    let restored: Secret = serde_json::from_value(json!({
        "metadata": {"name": "demo-secrets", "namespace": NS},
        "stringData": {"postgres-password": "the-original-password"},
    }))
    .unwrap();
    Api::<Secret>::namespaced(h.fake.client(), NS)
        .create(&PostParams::default(), &restored)
        .await
        .expect("restore the Secret");
    h.wait_phase("demo", "Ready").await;
    let secret = h.child("", "secrets", "demo-secrets").unwrap();
    assert_eq!(
        decoded(&secret, "postgres-password"),
        "the-original-password"
    );
}

#[tokio::test]
async fn foreground_deletion_with_retain_keeps_the_password() {
    let h = start().await;
    create(&h, "demo", json!({})).await;
    h.wait_phase("demo", "Ready").await;
    let password = decoded(
        &h.child("", "secrets", "demo-secrets").unwrap(),
        "postgres-password",
    );
    // Argo CD deletes with propagationPolicy=Foreground: the garbage collector
    // removes every dependent before the ChatCluster's finalizer runs.
    h.api
        .delete("demo", &DeleteParams::foreground())
        .await
        .expect("delete the ChatCluster");
    eventually("the ChatCluster to be gone", || {
        h.cluster("demo").is_none().then_some(())
    })
    .await;
    assert!(
        h.deployment("demo").is_none(),
        "owned children were collected"
    );
    let secret = h
        .child("", "secrets", "demo-secrets")
        .expect("the retained data's password is kept");
    assert_eq!(decoded(&secret, "postgres-password"), password);
}

#[tokio::test]
async fn rotating_an_external_secret_rolls_the_pods() {
    let h = start().await;
    create_url_secret(&h, "pg-url").await;
    create(
        &h,
        "demo",
        json!({"postgres": {"mode": "External", "secretRef": {"name": "pg-url"}}}),
    )
    .await;
    h.wait_phase("demo", "Ready").await;
    let before = config_hash(&h.deployment("demo").unwrap());

    let rotated = json!({"stringData": {"url": "postgres://chat:rotated@db.example:5432/chat"}});
    Api::<Secret>::namespaced(h.fake.client(), NS)
        .patch("pg-url", &PatchParams::default(), &Patch::Merge(&rotated))
        .await
        .expect("rotate the URL");
    eventually("the Deployment to roll", || {
        h.deployment("demo").filter(|d| config_hash(d) != before)
    })
    .await;
}

#[tokio::test]
async fn managed_to_external_then_deletion_with_delete_removes_the_old_claims() {
    let h = start().await;
    h.ready_with_postgres_claim(
        "demo",
        json!({"postgres": {"storage": {"retentionPolicy": "Delete"}}}),
    )
    .await;
    create_url_secret(&h, "pg-url").await;
    patch_spec(
        &h,
        "demo",
        json!({"postgres": {"mode": "External", "secretRef": {"name": "pg-url"}}}),
    )
    .await
    .expect("switch to External");
    eventually("the managed PostgreSQL to be pruned", || {
        h.child("apps", "statefulsets", "demo-postgres")
            .is_none()
            .then_some(())
    })
    .await;
    h.delete_cluster("demo").await;
    assert!(
        h.child("", "persistentvolumeclaims", "data-demo-postgres-0")
            .is_none(),
        "retention policy Delete deletes the claims the managed PostgreSQL left"
    );
}

#[tokio::test]
async fn switching_redis_persistence_recreates_redis() {
    let h = start().await;
    create(&h, "demo", json!({})).await;
    h.wait_phase("demo", "Ready").await;
    patch_spec(
        &h,
        "demo",
        json!({"redis": {"persistence": {"enabled": true}}}),
    )
    .await
    .expect("switch persistence on");
    eventually("Redis with a claim template", || {
        h.child("apps", "statefulsets", "demo-redis")
            .filter(|s| s["spec"]["volumeClaimTemplates"].is_array())
    })
    .await;
    eventually("the Redis claim", || {
        h.child("", "persistentvolumeclaims", "data-demo-redis-0")
    })
    .await;
    let cc = eventually("Ready at generation 2", || {
        h.cluster("demo").filter(|cc| {
            cc["status"]["observedGeneration"] == 2 && cc["status"]["phase"] == "Ready"
        })
    })
    .await;
    assert_eq!(condition(&cc, "Reconciled")["status"], "True");
    h.wait_event("RedisRecreated").await;
}

#[tokio::test]
async fn a_namespace_scoped_operator_touches_only_its_namespaces() {
    let fake = FakeApiServer::start().await;
    install_crd(&fake).await;
    let setup_requests = fake.requests().len();
    let h = start_controller_in(fake, Scope::Namespaces(vec![NS.into()])).await;
    create(&h, "demo", json!({})).await;
    let elsewhere: Api<ChatCluster> = Api::namespaced(h.fake.client(), "other");
    let other: ChatCluster = serde_json::from_value(json!({
        "apiVersion": "chatback.dev/v1alpha1", "kind": "ChatCluster",
        "metadata": {"name": "other", "namespace": "other"}, "spec": {},
    }))
    .unwrap();
    elsewhere
        .create(&PostParams::default(), &other)
        .await
        .expect("create a ChatCluster in another namespace");
    h.wait_phase("demo", "Ready").await;
    h.stop.cancel();

    assert!(
        h.fake
            .object("chatback.dev", "chatclusters", "other", "other")
            .unwrap()["status"]
            .is_null(),
        "a namespace the operator does not watch is left alone"
    );
    assert!(h.fake.objects("apps", "deployments", "other").is_empty());
    let operator_calls = h.fake.requests()[setup_requests..]
        .iter()
        .filter(|r| !(r.method == Method::POST && r.path.ends_with("/chatclusters")))
        .map(|r| r.path.clone())
        .collect::<Vec<_>>();
    for path in &operator_calls {
        assert!(
            path.contains(&format!("/namespaces/{NS}/"))
                || path
                    == "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/chatclusters.chatback.dev",
            "a cluster-wide call from a namespace-scoped operator: {path}"
        );
    }
}

/// A harness whose operator replicas the test starts itself ([`replica`]).
fn without_controller(fake: FakeApiServer) -> Harness {
    Harness {
        api: Api::namespaced(fake.client(), NS),
        fake,
        registry: Arc::new(Registry::default()),
        stop: CancellationToken::new(),
    }
}

fn election(identity: &str) -> Election {
    Election {
        namespace: NS.into(),
        lease: "chatback-operator".into(),
        identity: identity.into(),
        duration: Duration::from_secs(3),
        grace: Duration::from_secs(1),
    }
}

/// One operator replica with leader election, as `operator run --leader-elect`
/// runs it: `leading` is set while it reconciles.
fn replica(
    h: &Harness,
    identity: &'static str,
    stop: CancellationToken,
) -> (
    Arc<std::sync::atomic::AtomicBool>,
    tokio::task::JoinHandle<operator::Result<Outcome>>,
) {
    let client = h.fake.client();
    let leading = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = leading.clone();
    let task = tokio::spawn(async move {
        let ctx = Context::new(
            client.clone(),
            Metrics::default(),
            settings(),
            Some(identity.into()),
        );
        leader::lead(client, &election(identity), stop, |work| async move {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            controller::run(ctx, Scope::Cluster, work).await;
            flag.store(false, std::sync::atomic::Ordering::SeqCst);
        })
        .await
    });
    (leading, task)
}

#[tokio::test]
async fn only_the_leader_reconciles_and_the_standby_takes_over() {
    init_tracing();
    let fake = FakeApiServer::start().await;
    install_crd(&fake).await;
    let h = without_controller(fake);
    let setup_requests = h.fake.requests().len();
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    let (a, task_a) = replica(&h, "operator-a", stop_a.clone());
    let (b, task_b) = replica(&h, "operator-b", stop_b.clone());
    create(&h, "first", json!({})).await;
    h.wait_phase("first", "Ready").await;
    let holder = |h: &Harness| {
        h.fake
            .object("coordination.k8s.io", "leases", NS, "chatback-operator")
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(String::from))
    };
    let first = holder(&h).expect("a leader holds the lease");
    let leaders = [&a, &b]
        .iter()
        .filter(|f| f.load(std::sync::atomic::Ordering::SeqCst))
        .count();
    assert_eq!(leaders, 1, "exactly one replica reconciles");

    // The leader shuts down: it releases the lease, and the standby takes over.
    let (leader_stop, leader_task, standby) = if first == "operator-a" {
        (stop_a, task_a, (b, stop_b, task_b))
    } else {
        (stop_b, task_b, (a, stop_a, task_a))
    };
    leader_stop.cancel();
    let outcome = leader_task
        .await
        .expect("join")
        .expect("the leader stops cleanly");
    assert_eq!(outcome, Outcome::Shutdown);
    eventually("the standby to take the lease", || {
        holder(&h).filter(|now| *now != first)
    })
    .await;
    create(&h, "second", json!({})).await;
    h.wait_phase("second", "Ready").await;
    assert!(standby.0.load(std::sync::atomic::Ordering::SeqCst));
    standby.1.cancel();
    assert_eq!(
        standby.2.await.expect("join").expect("stops cleanly"),
        Outcome::Shutdown
    );

    // Leader election needs exactly operator::rbac::LEASE_RULES.
    let lease_calls: std::collections::BTreeSet<(String, String, String)> = h.fake.requests()
        [setup_requests..]
        .iter()
        .filter(|r| r.path.contains("/leases"))
        .flat_map(rbac_verbs)
        .collect();
    for (group, resource, verb) in &lease_calls {
        assert!(
            operator::rbac::allows(operator::rbac::LEASE_RULES.iter(), group, resource, verb),
            "leader election called {verb} on {group}/{resource}, which LEASE_RULES does not grant"
        );
    }
    for rule in operator::rbac::LEASE_RULES {
        for verb in rule.verbs {
            assert!(
                lease_calls
                    .iter()
                    .any(|(_, r, v)| r == rule.resource && v == verb),
                "LEASE_RULES grants {verb} on {} but leader election never used it",
                rule.resource
            );
        }
    }
}

#[tokio::test]
async fn a_lease_left_by_a_dead_leader_is_taken_over_once_it_expires() {
    init_tracing();
    let fake = FakeApiServer::start().await;
    install_crd(&fake).await;
    // A leader that died holding the lease: it will never renew or release it.
    let stale: k8s_openapi::api::coordination::v1::Lease = serde_json::from_value(json!({
        "metadata": {"name": "chatback-operator", "namespace": NS},
        "spec": {
            "holderIdentity": "operator-dead",
            "leaseDurationSeconds": 3,
            "acquireTime": "2020-01-01T00:00:00.000000Z",
            "renewTime": "2020-01-01T00:00:00.000000Z",
        },
    }))
    .unwrap();
    Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(fake.client(), NS)
        .create(&PostParams::default(), &stale)
        .await
        .expect("create the stale Lease");
    let h = without_controller(fake);
    let stop = CancellationToken::new();
    let (leading, task) = replica(&h, "operator-a", stop.clone());
    create(&h, "demo", json!({})).await;
    h.wait_phase("demo", "Ready").await;
    assert!(leading.load(std::sync::atomic::Ordering::SeqCst));
    let lease = h
        .fake
        .object("coordination.k8s.io", "leases", NS, "chatback-operator")
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "operator-a");
    stop.cancel();
    assert_eq!(task.await.expect("join").expect("stops"), Outcome::Shutdown);
}
