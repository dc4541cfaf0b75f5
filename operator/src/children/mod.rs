//! The complete set of child objects one ChatCluster turns into.
//!
//! Both the controller and `operator render` get their objects from
//! [`desired`], so what a user reviews is exactly what the operator applies.
//! Children are held type-erased ([`Child`]: an [`ApiResource`] plus JSON) so that
//! one server-side-apply loop handles every kind under one field manager.
//!
//! One module per kind of child, each a pure function of the ChatCluster:
//! `secrets` (generated credentials), `redis` and `postgres` (the in-cluster
//! backends), `backend` (what they share), `chat_server` (the server's ConfigMap,
//! Deployment and Service; not the operator's own HTTP server, which is
//! `crate::http`), `autoscaler`, `disruption_budget`, `network_policy`, and `pod`
//! (the security context and env helpers every pod template uses).

pub mod autoscaler;
pub mod backend;
pub mod chat_server;
pub mod disruption_budget;
pub mod network_policy;
pub mod pod;
pub mod postgres;
pub mod redis;
pub mod secrets;

use crds::{BackendMode, ChatCluster};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Resource;
use kube::core::ApiResource;
use serde::Serialize;

use self::chat_server::ExternalInputs;
use self::secrets::{Credentials, POSTGRES_APP_PASSWORD_KEY, REDIS_PASSWORD_KEY};
use crate::meta::Names;

/// One child object, ready for server-side apply.
#[derive(Clone, Debug)]
pub struct Child {
    pub resource: ApiResource,
    pub name: String,
    pub object: serde_json::Value,
}

impl Child {
    pub fn of<K>(object: &K) -> Self
    where
        K: Resource<DynamicType = ()> + Serialize,
    {
        Self {
            resource: ApiResource::erase::<K>(&()),
            name: object.meta().name.clone().unwrap_or_default(),
            // Typed k8s-openapi objects always serialize (apiVersion and kind included).
            object: serde_json::to_value(object).unwrap_or_default(),
        }
    }

    /// `Kind/name`, for logs and Events.
    pub fn describe(&self) -> String {
        format!("{}/{}", self.resource.kind, self.name)
    }
}

/// A child that may exist from an earlier spec and must go when its feature is off.
#[derive(Clone, Debug)]
pub struct Optional {
    pub resource: ApiResource,
    pub name: String,
}

impl Optional {
    fn of<K: Resource<DynamicType = ()>>(name: String) -> Self {
        Self {
            resource: ApiResource::erase::<K>(&()),
            name,
        }
    }

    pub fn describe(&self) -> String {
        format!("{}/{}", self.resource.kind, self.name)
    }
}

/// Every child the ChatCluster needs, in apply order: the Secret first (pods
/// reference it), then the backends, then the chat-server and its policies.
/// `external` holds the External backends' Secret values, for the pod-template hash.
pub fn desired(cc: &ChatCluster, creds: &Credentials, external: &ExternalInputs) -> Vec<Child> {
    let mut children = Vec::new();
    if !creds.is_empty() {
        children.push(Child::of(&creds.to_secret(cc)));
    }
    if cc.spec.redis.mode == BackendMode::Managed {
        children.push(Child::of(&redis::service(cc)));
        let digest = creds.digest_of(REDIS_PASSWORD_KEY);
        children.push(Child::of(&redis::stateful_set(cc, &digest)));
    }
    if cc.spec.postgres.mode == BackendMode::Managed {
        children.push(Child::of(&postgres::service(cc)));
        let digest = creds.digest_of(POSTGRES_APP_PASSWORD_KEY);
        children.push(Child::of(&postgres::stateful_set(cc, &digest)));
    }
    let config = chat_server::config_map(cc);
    let hash = chat_server::config_hash(&config, creds, cc, external);
    children.push(Child::of(&config));
    children.push(Child::of(&chat_server::deployment(cc, &hash)));
    children.push(Child::of(&chat_server::service(cc)));
    if let Some(hpa) = autoscaler::horizontal_pod_autoscaler(cc) {
        children.push(Child::of(&hpa));
    }
    if let Some(pdb) = disruption_budget::pod_disruption_budget(cc) {
        children.push(Child::of(&pdb));
    }
    if let Some(policy) = network_policy::network_policy(cc) {
        children.push(Child::of(&policy));
    }
    children
}

/// Children that depend on a switch in the spec and are not in `desired`:
/// they are deleted, so turning a feature off really removes it. The Secret is
/// never pruned: the PostgreSQL password must survive a switch to External and back.
pub fn unwanted(cc: &ChatCluster, desired: &[Child]) -> Vec<Optional> {
    let names = Names::of(cc);
    let candidates = [
        Optional::of::<HorizontalPodAutoscaler>(names.server()),
        Optional::of::<PodDisruptionBudget>(names.server()),
        Optional::of::<NetworkPolicy>(names.network_policy()),
        Optional::of::<StatefulSet>(names.redis()),
        Optional::of::<Service>(names.redis()),
        Optional::of::<StatefulSet>(names.postgres()),
        Optional::of::<Service>(names.postgres()),
    ];
    candidates
        .into_iter()
        .filter(|c| {
            !desired
                .iter()
                .any(|d| d.resource.kind == c.resource.kind && d.name == c.name)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{TestCluster, test_cluster};
    use crds::SecretKeyRef;

    fn kinds(children: &[Child]) -> Vec<String> {
        children.iter().map(Child::describe).collect()
    }

    #[test]
    fn default_cluster_has_the_full_stack() {
        let cc = test_cluster().with_uid("uid-1");
        let (creds, _) = Credentials::resolve(&cc, None);
        let children = desired(&cc, &creds, &ExternalInputs::default());
        assert_eq!(
            kinds(&children),
            vec![
                "Secret/demo-secrets",
                "Service/demo-redis",
                "StatefulSet/demo-redis",
                "Service/demo-postgres",
                "StatefulSet/demo-postgres",
                "ConfigMap/demo-config",
                "Deployment/demo",
                "Service/demo",
                "HorizontalPodAutoscaler/demo",
                "PodDisruptionBudget/demo",
                "NetworkPolicy/demo-backends",
            ]
        );
        for child in &children {
            let meta = &child.object["metadata"];
            // Under Retain (the default) the Secret outlives the cluster: see secrets.rs.
            let owner = if child.resource.kind == "Secret" {
                serde_json::Value::Null
            } else {
                "uid-1".into()
            };
            assert_eq!(
                meta["ownerReferences"][0]["uid"],
                owner,
                "{}",
                child.describe()
            );
            assert_eq!(meta["labels"]["app.kubernetes.io/instance"], "demo");
            assert_eq!(meta["namespace"], "ns");
            assert!(child.object["apiVersion"].is_string() && child.object["kind"].is_string());
        }
        assert!(unwanted(&cc, &children).is_empty());
    }

    #[test]
    fn external_modes_create_no_backends() {
        let mut cc = test_cluster().with_uid("uid-1");
        let r = SecretKeyRef {
            name: "ext".into(),
            key: "url".into(),
        };
        cc.spec.redis.mode = BackendMode::External;
        cc.spec.redis.secret_ref = Some(r.clone());
        cc.spec.postgres.mode = BackendMode::External;
        cc.spec.postgres.secret_ref = Some(r);
        cc.spec.network_policy.enabled = true;
        let (creds, _) = Credentials::resolve(&cc, None);
        let children = desired(&cc, &creds, &ExternalInputs::default());
        let described = kinds(&children);
        assert!(
            described
                .iter()
                .all(|k| !k.contains("redis") && !k.contains("postgres")),
            "{described:?}"
        );
        assert!(
            !described
                .iter()
                .any(|k| k.starts_with("StatefulSet") || k.starts_with("Secret"))
        );
        let pruned: Vec<_> = unwanted(&cc, &children)
            .iter()
            .map(Optional::describe)
            .collect();
        assert!(pruned.contains(&"StatefulSet/demo-postgres".to_string()));
        assert!(pruned.contains(&"Service/demo-redis".to_string()));
    }
}
