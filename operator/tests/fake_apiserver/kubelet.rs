//! The fake kubelet: plays the workload controllers and kubelets of a real
//! cluster, which the fake API server does not have.
//!
//! Every tick it writes each Deployment's and StatefulSet's status (all
//! desired pods ready, or none, as the test chooses), and creates the
//! PersistentVolumeClaims of StatefulSet volumeClaimTemplates as the
//! StatefulSet controller would (labelled from the template, owned by nobody).
//! Writes go through the store, so they are watch events like any other.

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
                let mut store = shared.store.lock().unwrap_or_else(|p| p.into_inner());
                step(&mut store, ready.load(Ordering::Relaxed));
            }
        }
    }
}

/// One pass over every workload.
pub fn step(store: &mut Store, ready: bool) {
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
            let replicas = object["spec"]["replicas"].as_i64().unwrap_or(1);
            let ready_replicas = if ready { replicas } else { 0 };
            let status = json!({
                "observedGeneration": meta["generation"],
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": ready_replicas,
                "availableReplicas": ready_replicas,
            });
            let _ = store.update(&rt, &namespace, &name, Part::Status, |o| {
                o["status"] = status;
                Ok(())
            });
            if plural == "statefulsets" {
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
