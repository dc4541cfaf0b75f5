//! The fake kubelet: plays the workload controllers and kubelets of a real
//! cluster, which the fake API server does not have.
//!
//! Every tick it writes each Deployment's and StatefulSet's status the way
//! their controllers do: `observedGeneration`, `updatedReplicas`, the
//! Deployment's `Available` and `Progressing` conditions, the StatefulSet's
//! `currentRevision`/`updateRevision`. Pods are all ready, or none, as the test
//! chooses; and a pod whose image the test marked broken never becomes ready
//! (a crash loop, a pull error). A Deployment rolling to a broken image keeps
//! its old pods (maxUnavailable 0), runs one surge pod that never gets ready,
//! and reports `ProgressDeadlineExceeded` on the next tick, as a real one does
//! once its deadline passes. It also creates the PersistentVolumeClaims of
//! StatefulSet volumeClaimTemplates as the StatefulSet controller would
//! (labelled from the template, owned by nobody). Writes go through the store,
//! so they are watch events like any other.

use std::collections::BTreeSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use super::Shared;
use super::store::{Part, Selector, Store};

pub async fn run(shared: Arc<Shared>, ready: Arc<AtomicBool>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            _ = tick.tick() => {
                let broken = shared.broken_images.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let mut store = shared.store.lock().unwrap_or_else(|p| p.into_inner());
                step(&mut store, ready.load(Ordering::Relaxed), &broken);
            }
        }
    }
}

/// Whether every container of the pod template runs an image that works.
fn template_works(object: &Value, broken: &BTreeSet<String>) -> bool {
    object["spec"]["template"]["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|c| c["image"].as_str().is_none_or(|i| !broken.contains(i)))
}

/// A StatefulSet controller revision name: `<name>-<hash of the template>`.
fn revision(name: &str, object: &Value) -> String {
    let mut hasher = DefaultHasher::new();
    object["spec"]["template"].to_string().hash(&mut hasher);
    format!("{name}-{:08x}", hasher.finish() as u32)
}

fn condition(type_: &str, status: bool, reason: &str, message: &str) -> Value {
    json!({
        "type": type_,
        "status": if status { "True" } else { "False" },
        "reason": reason,
        "message": message,
    })
}

/// A Deployment's status: a rollout to a broken template never completes.
fn deployment_status(object: &Value, ready: bool, works: bool) -> Value {
    let meta = &object["metadata"];
    let name = meta["name"].as_str().unwrap_or_default();
    let replicas = object["spec"]["replicas"].as_i64().unwrap_or(1);
    let previous = &object["status"];
    if works || replicas == 0 {
        let ready_replicas = if ready { replicas } else { 0 };
        return json!({
            "observedGeneration": meta["generation"],
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": ready_replicas,
            "availableReplicas": ready_replicas,
            "conditions": [
                condition("Available", ready_replicas >= replicas, "MinimumReplicasAvailable", "Deployment has minimum availability."),
                condition("Progressing", true, "NewReplicaSetAvailable", &format!("ReplicaSet \"{name}\" has successfully progressed.")),
            ],
        });
    }
    // The old pods stay (maxUnavailable 0) and one surge pod crash-loops.
    let old_ready = previous["readyReplicas"]
        .as_i64()
        .unwrap_or(0)
        .min(replicas);
    let was_progressing = previous["observedGeneration"] == meta["generation"]
        && previous["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Progressing" && c["reason"] != "NewReplicaSetAvailable");
    let progressing = if was_progressing {
        condition(
            "Progressing",
            false,
            "ProgressDeadlineExceeded",
            &format!("ReplicaSet \"{name}\" has timed out progressing."),
        )
    } else {
        condition(
            "Progressing",
            true,
            "ReplicaSetUpdated",
            &format!("ReplicaSet \"{name}\" is progressing."),
        )
    };
    json!({
        "observedGeneration": meta["generation"],
        "replicas": old_ready + 1,
        "updatedReplicas": 1,
        "readyReplicas": old_ready,
        "availableReplicas": old_ready,
        "unavailableReplicas": 1,
        "conditions": [
            condition("Available", old_ready >= replicas, "MinimumReplicasAvailable", "Deployment has minimum availability."),
            progressing,
        ],
    })
}

/// A StatefulSet's status: its pods are replaced by the new revision, which
/// never gets ready when broken, so `currentRevision` stays behind.
fn stateful_set_status(object: &Value, ready: bool, works: bool) -> Value {
    let meta = &object["metadata"];
    let name = meta["name"].as_str().unwrap_or_default();
    let replicas = object["spec"]["replicas"].as_i64().unwrap_or(1);
    let update_revision = revision(name, object);
    let ready_replicas = if ready && works { replicas } else { 0 };
    let current_revision = if works {
        update_revision.clone()
    } else {
        object["status"]["currentRevision"]
            .as_str()
            .map_or_else(|| update_revision.clone(), String::from)
    };
    json!({
        "observedGeneration": meta["generation"],
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": ready_replicas,
        "availableReplicas": ready_replicas,
        "currentReplicas": if works { replicas } else { 0 },
        "currentRevision": current_revision,
        "updateRevision": update_revision,
    })
}

/// One pass over every workload.
pub fn step(store: &mut Store, ready: bool, broken: &BTreeSet<String>) {
    for plural in ["deployments", "statefulsets"] {
        let Some(rt) = store.resource("apps", "v1", plural) else {
            continue;
        };
        for object in store.list(&rt, None, &Selector::default()) {
            let meta = &object["metadata"];
            if meta.get("deletionTimestamp").is_some() {
                continue;
            }
            let namespace = meta["namespace"].as_str().unwrap_or_default().to_string();
            let name = meta["name"].as_str().unwrap_or_default().to_string();
            let works = template_works(&object, broken);
            let status = if plural == "deployments" {
                deployment_status(&object, ready, works)
            } else {
                stateful_set_status(&object, ready, works)
            };
            let _ = store.update(&rt, &namespace, &name, Part::Status, |o| {
                o["status"] = status;
                Ok(())
            });
            if plural == "statefulsets" {
                let replicas = object["spec"]["replicas"].as_i64().unwrap_or(1);
                create_claims(store, &object, &namespace, &name, replicas);
            }
        }
    }
}

/// `<template>-<statefulset>-<ordinal>` claims, as the StatefulSet controller makes them.
fn create_claims(store: &mut Store, sts: &Value, namespace: &str, name: &str, replicas: i64) {
    let Some(rt) = store.resource("", "v1", "persistentvolumeclaims") else {
        return;
    };
    for template in sts["spec"]["volumeClaimTemplates"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let template_name = template["metadata"]["name"].as_str().unwrap_or("data");
        for ordinal in 0..replicas {
            let claim_name = format!("{template_name}-{name}-{ordinal}");
            if store.get(&rt, namespace, &claim_name).is_ok() {
                continue;
            }
            let claim = json!({
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {
                    "name": claim_name,
                    "namespace": namespace,
                    "labels": template["metadata"]["labels"],
                },
                "spec": template["spec"],
            });
            let _ = store.create(&rt, namespace, claim);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Applier;

    fn deployment(image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                "template": {"spec": {"containers": [{"name": "c", "image": image}]}}},
        })
    }

    fn apply(store: &mut Store, body: Value) {
        let rt = store.resource("apps", "v1", "deployments").unwrap();
        let applier = Applier {
            manager: "test",
            force: true,
        };
        store
            .apply(&rt, "ns", "web", body, applier, Part::Main)
            .unwrap();
    }

    fn status(store: &Store) -> Value {
        let rt = store.resource("apps", "v1", "deployments").unwrap();
        store.get(&rt, "ns", "web").unwrap()["status"].clone()
    }

    #[test]
    fn a_rollout_to_a_broken_image_keeps_the_old_pods_and_exceeds_its_deadline() {
        let mut store = Store::new();
        let broken = BTreeSet::from(["web:bad".to_string()]);
        apply(&mut store, deployment("web:1"));
        step(&mut store, true, &broken);
        let good = status(&store);
        assert_eq!(
            (
                good["readyReplicas"].clone(),
                good["updatedReplicas"].clone()
            ),
            (json!(3), json!(3))
        );
        assert_eq!(good["observedGeneration"], 1);

        apply(&mut store, deployment("web:bad"));
        assert_eq!(
            status(&store)["observedGeneration"],
            1,
            "not observed before a tick"
        );
        step(&mut store, true, &broken);
        let rolling = status(&store);
        assert_eq!(rolling["observedGeneration"], 2);
        assert_eq!(rolling["readyReplicas"], 3, "the old pods keep serving");
        assert_eq!(rolling["updatedReplicas"], 1);
        assert_eq!(rolling["conditions"][1]["reason"], "ReplicaSetUpdated");
        step(&mut store, true, &broken);
        let stuck = status(&store);
        assert_eq!(stuck["conditions"][1]["reason"], "ProgressDeadlineExceeded");
        assert_eq!(stuck["conditions"][1]["status"], "False");

        apply(&mut store, deployment("web:2"));
        step(&mut store, true, &broken);
        assert_eq!(
            status(&store)["conditions"][1]["reason"],
            "NewReplicaSetAvailable"
        );
    }
}
