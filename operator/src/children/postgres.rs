//! The managed PostgreSQL: a one-replica StatefulSet with a volumeClaimTemplate,
//! and its headless Service. A postStart hook keeps the chat-server's
//! non-superuser role (see `app_role.rs`).
//!
//! The claims the StatefulSet controller creates are *not* owned by the
//! ChatCluster (ownership would delete the chat history with it). What happens
//! to them on deletion is the cluster's retention policy, run by the finalizer
//! in `controller::cleanup`. They carry the component labels so it can find them.

use std::collections::BTreeMap;

use crds::ChatCluster;
use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, ExecAction, Lifecycle,
    LifecycleHandler, PodSpec, PodTemplateSpec, Probe, Service, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use crate::app_role::{APP_USER, SCRIPT};
use crate::children::backend::{DATA_VOLUME, claim_template, headless_service};
use crate::children::pod::{
    container_security_context, pod_security_context, resources_or, secret_env,
};
use crate::children::secrets::{
    POSTGRES_APP_PASSWORD_KEY, POSTGRES_DB, POSTGRES_PASSWORD_KEY, POSTGRES_PORT, POSTGRES_USER,
};
use crate::meta::{CONFIG_HASH_ANNOTATION, Component, Names, child_meta};

/// The uid of the `postgres` user in the official alpine images.
const POSTGRES_UID: i64 = 70;
const DATA_MOUNT: &str = "/var/lib/postgresql/data";

pub fn service(cc: &ChatCluster) -> Service {
    let names = Names::of(cc);
    headless_service(
        cc,
        names.postgres(),
        Component::Postgres,
        "postgres",
        POSTGRES_PORT,
    )
}

/// The PostgreSQL StatefulSet; `app_password_digest` is the digest of the
/// chat-server role's password (a pod-template annotation: a new password
/// restarts the pod, whose postStart hook then sets it).
pub fn stateful_set(cc: &ChatCluster, app_password_digest: &str) -> StatefulSet {
    let names = Names::of(cc);
    let spec = &cc.spec.postgres;
    let env = |name: &str, value: &str| EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    };
    let probe = |initial: i32| Probe {
        exec: Some(ExecAction {
            command: Some(vec![
                "pg_isready".into(),
                "-U".into(),
                POSTGRES_USER.into(),
                "-d".into(),
                POSTGRES_DB.into(),
                "-h".into(),
                "127.0.0.1".into(),
            ]),
        }),
        initial_delay_seconds: Some(initial),
        period_seconds: Some(10),
        timeout_seconds: Some(5),
        failure_threshold: Some(6),
        ..Probe::default()
    };
    let mount = |name: &str, path: &str| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..VolumeMount::default()
    };
    let scratch = |name: &str| Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    };
    let container = Container {
        name: "postgres".into(),
        image: Some(spec.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        env: Some(vec![
            env("POSTGRES_USER", POSTGRES_USER),
            env("POSTGRES_DB", POSTGRES_DB),
            env("PGDATA", &format!("{DATA_MOUNT}/pgdata")),
            secret_env("POSTGRES_PASSWORD", &names.secret(), POSTGRES_PASSWORD_KEY),
            env("APP_USER", APP_USER),
            secret_env("APP_PASSWORD", &names.secret(), POSTGRES_APP_PASSWORD_KEY),
        ]),
        lifecycle: Some(Lifecycle {
            post_start: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec!["/bin/sh".into(), "-c".into(), SCRIPT.into()]),
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        ports: Some(vec![ContainerPort {
            name: Some("postgres".into()),
            container_port: POSTGRES_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        resources: Some(resources_or(&spec.resources, "100m", "256Mi", "1Gi")),
        liveness_probe: Some(probe(30)),
        readiness_probe: Some(probe(5)),
        security_context: Some(container_security_context()),
        volume_mounts: Some(vec![
            mount(DATA_VOLUME, DATA_MOUNT),
            mount("run", "/var/run/postgresql"),
            mount("tmp", "/tmp"),
        ]),
        ..Container::default()
    };
    StatefulSet {
        metadata: child_meta(cc, names.postgres(), Component::Postgres),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(names.postgres()),
            selector: LabelSelector {
                match_labels: Some(names.selector_labels(Component::Postgres)),
                match_expressions: None,
            },
            // The operator's finalizer owns the claims' fate (retention policy),
            // so the StatefulSet controller must leave them alone.
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Retain".into()),
                    when_scaled: Some("Retain".into()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(names.labels(Component::Postgres)),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.to_string(),
                        app_password_digest.to_string(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    security_context: Some(pod_security_context(POSTGRES_UID)),
                    termination_grace_period_seconds: Some(60),
                    containers: vec![container],
                    volumes: Some(vec![scratch("run"), scratch("tmp")]),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![claim_template(
                &names,
                Component::Postgres,
                &spec.storage.size,
                spec.storage.storage_class_name.as_deref(),
            )]),
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

    #[test]
    fn claim_template_follows_storage_spec() {
        let mut cc = test_cluster();
        cc.spec.postgres.storage.size = "20Gi".into();
        cc.spec.postgres.storage.storage_class_name = Some("fast".into());
        let spec = stateful_set(&cc, "d1").spec.unwrap();
        let claim = &spec.volume_claim_templates.unwrap()[0];
        let claim_spec = claim.spec.as_ref().unwrap();
        assert_eq!(claim_spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            claim.metadata.labels.as_ref().unwrap()["app.kubernetes.io/instance"],
            "demo"
        );
    }

    #[test]
    fn password_comes_from_the_secret() {
        let spec = stateful_set(&test_cluster(), "d1").spec.unwrap();
        let container = &spec.template.spec.unwrap().containers[0];
        assert_eq!(
            secret_source(container.env.as_ref().unwrap(), "POSTGRES_PASSWORD"),
            ("demo-secrets".into(), POSTGRES_PASSWORD_KEY.into())
        );
        assert!(container.readiness_probe.is_some() && container.liveness_probe.is_some());
    }

    #[test]
    fn a_post_start_hook_keeps_the_application_role() {
        let spec = stateful_set(&test_cluster(), "d1").spec.unwrap();
        let annotations = spec.template.metadata.unwrap().annotations.unwrap();
        assert_eq!(annotations[CONFIG_HASH_ANNOTATION], "d1");
        let container = &spec.template.spec.unwrap().containers[0];
        let hook = container
            .lifecycle
            .as_ref()
            .unwrap()
            .post_start
            .as_ref()
            .unwrap();
        let command = hook.exec.as_ref().unwrap().command.as_ref().unwrap();
        assert_eq!(command[..2], ["/bin/sh".to_string(), "-c".to_string()]);
        assert_eq!(command[2], SCRIPT);
        assert_eq!(
            secret_source(container.env.as_ref().unwrap(), "APP_PASSWORD"),
            ("demo-secrets".into(), POSTGRES_APP_PASSWORD_KEY.into())
        );
    }

    #[test]
    fn service_is_headless_on_5432() {
        let spec = service(&test_cluster()).spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.ports.unwrap()[0].port, 5432);
    }
}
