//! The NetworkPolicy that fences the managed backends.
//!
//! Redis and PostgreSQL have no business talking to anything but this cluster's
//! chat pods. The policy selects the managed backend pods and admits ingress only
//! from pods carrying this cluster's server selector labels, on the backend ports.
//! External backends are outside the namespace's pods, so there is nothing to fence.

use crds::{BackendMode, ChatCluster};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::children::redis::REDIS_PORT;
use crate::children::secrets::POSTGRES_PORT;
use crate::meta::{Component, Names, child_meta};

/// The policy, or `None` when disabled or when no backend is managed.
pub fn network_policy(cc: &ChatCluster) -> Option<NetworkPolicy> {
    if !cc.spec.network_policy.enabled {
        return None;
    }
    let mut components = Vec::new();
    let mut ports = Vec::new();
    if cc.spec.redis.mode == BackendMode::Managed {
        components.push(Component::Redis.as_str().to_string());
        ports.push(REDIS_PORT);
    }
    if cc.spec.postgres.mode == BackendMode::Managed {
        components.push(Component::Postgres.as_str().to_string());
        ports.push(POSTGRES_PORT);
    }
    if components.is_empty() {
        return None;
    }
    let names = Names::of(cc);
    Some(NetworkPolicy {
        metadata: child_meta(cc, names.network_policy(), Component::Server),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(
                    [(
                        "app.kubernetes.io/instance".to_string(),
                        names.cluster.clone(),
                    )]
                    .into(),
                ),
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "app.kubernetes.io/component".into(),
                    operator: "In".into(),
                    values: Some(components),
                }]),
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![NetworkPolicyPeer {
                    pod_selector: Some(LabelSelector {
                        match_labels: Some(names.selector_labels(Component::Server)),
                        match_expressions: None,
                    }),
                    ..NetworkPolicyPeer::default()
                }]),
                ports: Some(
                    ports
                        .into_iter()
                        .map(|port| NetworkPolicyPort {
                            port: Some(IntOrString::Int(port)),
                            protocol: Some("TCP".into()),
                            end_port: None,
                        })
                        .collect(),
                ),
            }]),
            egress: None,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{TestCluster, test_cluster};
    use crds::SecretKeyRef;

    #[test]
    fn admits_only_chat_pods_to_both_backends() {
        let spec =
            network_policy(&test_cluster().with_spec(|spec| spec.network_policy.enabled = true))
                .unwrap()
                .spec
                .unwrap();
        let selector = spec.pod_selector.unwrap();
        let components = selector.match_expressions.unwrap()[0]
            .values
            .clone()
            .unwrap();
        assert_eq!(
            components,
            vec!["redis".to_string(), "postgres".to_string()]
        );
        let rule = &spec.ingress.unwrap()[0];
        let from = rule.from.as_ref().unwrap()[0]
            .pod_selector
            .as_ref()
            .unwrap();
        assert_eq!(
            from.match_labels.as_ref().unwrap()["app.kubernetes.io/component"],
            "server"
        );
        assert_eq!(rule.ports.as_ref().unwrap().len(), 2);
    }

    #[test]
    fn nothing_to_fence_with_external_backends_or_when_disabled() {
        let mut cc = test_cluster().with_spec(|spec| spec.network_policy.enabled = true);
        let r = SecretKeyRef {
            name: "s".into(),
            key: "url".into(),
        };
        cc.spec.redis.mode = BackendMode::External;
        cc.spec.redis.secret_ref = Some(r.clone());
        cc.spec.postgres.mode = BackendMode::External;
        cc.spec.postgres.secret_ref = Some(r);
        assert!(network_policy(&cc).is_none());
        let mut off = test_cluster().with_spec(|spec| spec.network_policy.enabled = true);
        off.spec.network_policy.enabled = false;
        assert!(network_policy(&off).is_none());
    }
}
