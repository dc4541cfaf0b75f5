//! The managed Redis: a one-replica StatefulSet and its headless Service.
//!
//! A StatefulSet (rather than a Deployment) gives Redis a stable identity and,
//! with persistence on, a volumeClaimTemplate, so an append-only file survives
//! pod restarts. That claim is deleted with the StatefulSet, whatever
//! PostgreSQL's retention policy: Redis only holds counters and presence, which
//! PostgreSQL's sequence numbers and the presence TTL rebuild. Without
//! persistence, the data lives in an emptyDir.
//!
//! Redis requires a password (`requirepass`), generated into the cluster's
//! Secret: any pod that can reach it would otherwise read presence and publish
//! into every room. It reaches redis-server and the probes' redis-cli as
//! `REDISCLI_AUTH` (which redis-cli reads itself), and the chat-server as the
//! password in its `REDIS_URL`. The pod template carries a digest of it, so a
//! changed password restarts Redis.

use std::collections::BTreeMap;

use crds::ChatCluster;
use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, ExecAction, PodSpec, PodTemplateSpec, Probe,
    Service, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use crate::children::backend::{DATA_VOLUME, claim_template, headless_service};
use crate::children::pod::{
    container_security_context, pod_security_context, resources_or, secret_env,
};
use crate::children::secrets::REDIS_PASSWORD_KEY;
use crate::meta::{CONFIG_HASH_ANNOTATION, Component, Names, child_meta};

pub const REDIS_PORT: i32 = 6379;
/// The uid of the `redis` user in the official images.
const REDIS_UID: i64 = 999;

pub fn service(cc: &ChatCluster) -> Service {
    let names = Names::of(cc);
    headless_service(cc, names.redis(), Component::Redis, "redis", REDIS_PORT)
}

/// The Redis StatefulSet; `password_digest` is [`Credentials::digest_of`] the
/// Redis password (a pod-template annotation).
///
/// [`Credentials::digest_of`]: crate::children::secrets::Credentials::digest_of
pub fn stateful_set(cc: &ChatCluster, password_digest: &str) -> StatefulSet {
    let names = Names::of(cc);
    let spec = &cc.spec.redis;
    let persistent = spec.persistence.enabled;
    // One argument per directive: redis-server joins its argv into config lines,
    // and a bare `yes` list item would read as a boolean to YAML 1.1 tools
    // (kubectl, PyYAML) when the object is rendered.
    // Kubernetes expands $(REDISCLI_AUTH) from the container's env.
    let mut args = vec![
        format!("--port {REDIS_PORT}"),
        "--dir /data".to_string(),
        "--requirepass $(REDISCLI_AUTH)".to_string(),
    ];
    if persistent {
        args.push("--appendonly yes".into());
    } else {
        args.extend(["--save \"\"".to_string(), "--appendonly no".to_string()]);
    }
    let probe = |initial: i32| Probe {
        exec: Some(ExecAction {
            command: Some(vec!["redis-cli".into(), "ping".into()]),
        }),
        initial_delay_seconds: Some(initial),
        period_seconds: Some(10),
        timeout_seconds: Some(3),
        failure_threshold: Some(3),
        ..Probe::default()
    };
    let container = Container {
        name: "redis".into(),
        image: Some(spec.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(args),
        env: Some(vec![secret_env(
            "REDISCLI_AUTH",
            &names.secret(),
            REDIS_PASSWORD_KEY,
        )]),
        ports: Some(vec![ContainerPort {
            name: Some("redis".into()),
            container_port: REDIS_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        resources: Some(resources_or(&spec.resources, "50m", "64Mi", "256Mi")),
        liveness_probe: Some(probe(15)),
        readiness_probe: Some(probe(2)),
        security_context: Some(container_security_context()),
        volume_mounts: Some(vec![VolumeMount {
            name: DATA_VOLUME.into(),
            mount_path: "/data".into(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };
    let (volumes, claims) = if persistent {
        (
            None,
            Some(vec![claim_template(
                &names,
                Component::Redis,
                &spec.persistence.size,
                None,
            )]),
        )
    } else {
        let empty_dir = Volume {
            name: DATA_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        };
        (Some(vec![empty_dir]), None)
    };
    StatefulSet {
        metadata: child_meta(cc, names.redis(), Component::Redis),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(names.redis()),
            selector: LabelSelector {
                match_labels: Some(names.selector_labels(Component::Redis)),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(names.labels(Component::Redis)),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.to_string(),
                        password_digest.to_string(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    security_context: Some(pod_security_context(REDIS_UID)),
                    containers: vec![container],
                    volumes,
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: claims,
            // Redis data is derived state (PostgreSQL holds the history): its
            // claim goes with the StatefulSet, whatever PostgreSQL's retention.
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Delete".into()),
                    when_scaled: Some("Delete".into()),
                },
            ),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::pod::secret_source;
    use crate::meta::test_cluster;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    #[test]
    fn ephemeral_by_default() {
        let sts = stateful_set(&test_cluster(), "d1");
        let spec = sts.spec.unwrap();
        assert_eq!(spec.replicas, Some(1));
        assert!(spec.volume_claim_templates.is_none());
        let pod = spec.template.spec.unwrap();
        assert!(pod.volumes.unwrap()[0].empty_dir.is_some());
        assert!(pod.containers[0].readiness_probe.is_some());
        assert!(pod.containers[0].liveness_probe.is_some());
    }

    #[test]
    fn redis_requires_the_password_from_the_secret() {
        let spec = stateful_set(&test_cluster(), "d1").spec.unwrap();
        let template = spec.template;
        let annotations = template.metadata.unwrap().annotations.unwrap();
        assert_eq!(annotations[CONFIG_HASH_ANNOTATION], "d1");
        let container = &template.spec.unwrap().containers[0];
        assert!(
            container
                .args
                .as_ref()
                .unwrap()
                .contains(&"--requirepass $(REDISCLI_AUTH)".to_string())
        );
        assert_eq!(
            secret_source(container.env.as_ref().unwrap(), "REDISCLI_AUTH"),
            ("demo-secrets".into(), REDIS_PASSWORD_KEY.into())
        );
    }

    #[test]
    fn persistence_adds_a_claim_template() {
        let mut cc = test_cluster();
        cc.spec.redis.persistence.enabled = true;
        cc.spec.redis.persistence.size = "5Gi".into();
        let spec = stateful_set(&cc, "d1").spec.unwrap();
        let retention = spec
            .persistent_volume_claim_retention_policy
            .clone()
            .unwrap();
        assert_eq!(retention.when_deleted.as_deref(), Some("Delete"));
        let claim = &spec.volume_claim_templates.unwrap()[0];
        let requests = claim
            .spec
            .as_ref()
            .unwrap()
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref();
        assert_eq!(requests.unwrap()["storage"], Quantity("5Gi".into()));
        assert!(
            spec.template.spec.unwrap().containers[0]
                .args
                .as_ref()
                .unwrap()
                .contains(&"--appendonly yes".to_string())
        );
    }

    #[test]
    fn service_selects_redis_pods() {
        let svc = service(&test_cluster());
        assert_eq!(svc.metadata.name.as_deref(), Some("demo-redis"));
        let selector = svc.spec.unwrap().selector.unwrap();
        assert_eq!(selector["app.kubernetes.io/component"], "redis");
    }
}
