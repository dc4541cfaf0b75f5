//! The chat-server: its ConfigMap, Deployment and Service.
//!
//! Plain settings (listen address, limits, log level) go into the ConfigMap
//! and reach the container through `envFrom`; anything secret (database and
//! Redis URLs, which carry passwords, and the JWT key) is a `secretKeyRef`, so
//! it never appears in a spec. The pod template carries a hash of both inputs: a
//! changed limit or a new secret value changes the template, which rolls the pods.

use std::collections::BTreeMap;

use crds::{BackendMode, ChatCluster, SecretKeyRef};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapEnvSource, Container, ContainerPort, EmptyDirVolumeSource, EnvFromSource,
    EnvVar, EnvVarSource, HTTPGetAction, Lifecycle, LifecycleHandler, ObjectFieldSelector, PodSpec,
    PodTemplateSpec, Probe, Service, ServicePort, ServiceSpec, SleepAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest, Sha256};

use crate::children::pod::{
    container_security_context, pod_security_context, resources_or, secret_env,
};
use crate::children::secrets::{Credentials, DATABASE_URL_KEY, JWT_SECRET_KEY, REDIS_URL_KEY};
use crate::meta::{CONFIG_HASH_ANNOTATION, Component, Names, child_meta};

/// The uid the chat-server image runs as (any non-root uid works: it writes nothing).
const SERVER_UID: i64 = 10001;
/// The chat-server's default drain time (`CHAT_SHUTDOWN_GRACE_SECS`).
const DEFAULT_SHUTDOWN_GRACE_SECS: i64 = 10;
/// How long a terminating pod keeps serving before SIGTERM, so that the Service's
/// endpoints stop sending it new connections first.
const PRE_STOP_SLEEP_SECS: i64 = 5;
/// Headroom past the drain time before the kubelet sends SIGKILL.
const KILL_MARGIN_SECS: i64 = 5;

/// The ConfigMap: every non-secret setting, as the chat-server's env vars.
pub fn config_map(cc: &ChatCluster) -> ConfigMap {
    let names = Names::of(cc);
    let spec = &cc.spec.server;
    let mut data = BTreeMap::from([
        ("CHAT_LISTEN".to_string(), format!("0.0.0.0:{}", spec.port)),
        ("LOG_FORMAT".to_string(), "json".to_string()),
        ("RUST_LOG".to_string(), spec.log_level.as_str().to_string()),
    ]);
    let limits = &spec.limits;
    let limit_vars = [
        ("CHAT_MAX_CONNECTIONS", limits.max_connections),
        ("CHAT_MAX_FRAME_BYTES", limits.max_frame_bytes),
        ("CHAT_MAX_BODY_BYTES", limits.max_body_bytes),
        ("CHAT_RATE_PER_SEC", limits.rate_per_sec),
        ("CHAT_RATE_BURST", limits.rate_burst),
        ("CHAT_OUTBOUND_QUEUE", limits.outbound_queue),
        (
            "CHAT_MAX_ROOMS_PER_CONNECTION",
            limits.max_rooms_per_connection,
        ),
        ("CHAT_HISTORY_MAX_LIMIT", limits.history_max_limit),
        ("CHAT_PRESENCE_TTL_SECS", limits.presence_ttl_secs),
        ("CHAT_SHUTDOWN_GRACE_SECS", limits.shutdown_grace_secs),
    ];
    for (var, value) in limit_vars {
        if let Some(value) = value {
            data.insert(var.into(), value.to_string());
        }
    }
    let rebalance = &spec.rebalance;
    if rebalance.enabled {
        data.insert("CHAT_REBALANCE".into(), "true".into());
        let tolerance = rebalance
            .tolerance_percent
            .map(|p| (p as f64 / 100.0).to_string());
        let settings = [
            ("CHAT_REBALANCE_TOLERANCE", tolerance),
            (
                "CHAT_REBALANCE_INTERVAL_SECS",
                rebalance.interval_secs.map(|v| v.to_string()),
            ),
            (
                "CHAT_REBALANCE_MAX_CLOSES",
                rebalance.max_closes.map(|v| v.to_string()),
            ),
        ];
        for (var, value) in settings {
            if let Some(value) = value {
                data.insert(var.into(), value);
            }
        }
    }
    ConfigMap {
        metadata: child_meta(cc, names.config(), Component::Server),
        data: Some(data),
        ..ConfigMap::default()
    }
}

/// The values of the External backends' Secret keys, by backend name: inputs
/// of the pod-template hash only (they reach the pods as `secretKeyRef`s).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ExternalInputs(BTreeMap<&'static str, Vec<u8>>);

impl ExternalInputs {
    pub fn insert(&mut self, backend: &'static str, value: Vec<u8>) {
        self.0.insert(backend, value);
    }
}

/// The hash of every input the pods read at start: the ConfigMap data, the
/// generated credentials, which external Secret keys are referenced, and
/// their content (so rotating an External URL rolls the pods).
pub fn config_hash(
    config: &ConfigMap,
    creds: &Credentials,
    cc: &ChatCluster,
    external: &ExternalInputs,
) -> String {
    let mut hasher = Sha256::new();
    let mut feed = |section: &str, key: &str, value: &str| {
        for part in [section, key, value] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
    };
    for (k, v) in config.data.iter().flatten() {
        feed("config", k, v);
    }
    for (k, v) in creds.digest_input() {
        feed("secret", k, v);
    }
    for (backend, reference) in external_refs(cc) {
        feed(
            "external",
            backend,
            &format!("{}/{}", reference.name, reference.key),
        );
    }
    for (backend, value) in &external.0 {
        for part in [b"external-value".as_slice(), backend.as_bytes(), value] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
    }
    let digest = hasher.finalize();
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// The Secret references of the External backends, by backend name.
pub fn external_refs(cc: &ChatCluster) -> Vec<(&'static str, &SecretKeyRef)> {
    let mut refs = Vec::new();
    if cc.spec.redis.mode == BackendMode::External
        && let Some(r) = &cc.spec.redis.secret_ref
    {
        refs.push(("redis", r));
    }
    if cc.spec.postgres.mode == BackendMode::External
        && let Some(r) = &cc.spec.postgres.secret_ref
    {
        refs.push(("postgres", r));
    }
    refs
}

/// The number of chat-server pods to run: `spec.server.replicas`, kept within
/// the autoscaler's bounds when autoscaling is on (the autoscaler writes the
/// same field through the scale subresource).
pub fn desired_replicas(cc: &ChatCluster) -> i32 {
    let replicas = cc.spec.server.replicas;
    let scaling = &cc.spec.autoscaling;
    if scaling.enabled {
        replicas.clamp(
            scaling.min_replicas,
            scaling.max_replicas.max(scaling.min_replicas),
        )
    } else {
        replicas
    }
}

fn env_vars(cc: &ChatCluster, names: &Names) -> Vec<EnvVar> {
    let mut env = vec![EnvVar {
        name: "CHAT_INSTANCE_ID".into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.name".into(),
                api_version: Some("v1".into()),
            }),
            ..EnvVarSource::default()
        }),
    }];
    match (cc.spec.redis.mode, &cc.spec.redis.secret_ref) {
        (BackendMode::External, Some(r)) => env.push(secret_env("REDIS_URL", &r.name, &r.key)),
        _ => env.push(secret_env("REDIS_URL", &names.secret(), REDIS_URL_KEY)),
    }
    match (cc.spec.postgres.mode, &cc.spec.postgres.secret_ref) {
        (BackendMode::External, Some(r)) => env.push(secret_env("DATABASE_URL", &r.name, &r.key)),
        _ => env.push(secret_env(
            "DATABASE_URL",
            &names.secret(),
            DATABASE_URL_KEY,
        )),
    }
    if cc.spec.server.auth.enabled {
        env.push(secret_env(
            "CHAT_JWT_SECRET",
            &names.secret(),
            JWT_SECRET_KEY,
        ));
    }
    env
}

/// The chat-server Deployment. `config_hash` comes from [`config_hash`].
pub fn deployment(cc: &ChatCluster, config_hash: &str) -> Deployment {
    let names = Names::of(cc);
    let spec = &cc.spec.server;
    let http_probe = |path: &str, initial: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            scheme: Some("HTTP".into()),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(initial),
        period_seconds: Some(10),
        timeout_seconds: Some(3),
        failure_threshold: Some(failures),
        ..Probe::default()
    };
    let grace = spec
        .limits
        .shutdown_grace_secs
        .unwrap_or(DEFAULT_SHUTDOWN_GRACE_SECS);
    let container = Container {
        name: "chat-server".into(),
        image: Some(spec.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: names.config(),
                optional: Some(false),
            }),
            ..EnvFromSource::default()
        }]),
        env: Some(env_vars(cc, &names)),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: spec.port,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        resources: Some(resources_or(&spec.resources, "100m", "128Mi", "512Mi")),
        liveness_probe: Some(http_probe("/healthz", 5, 3)),
        readiness_probe: Some(http_probe("/readyz", 2, 2)),
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction {
                    seconds: PRE_STOP_SLEEP_SECS,
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        security_context: Some(container_security_context()),
        volume_mounts: Some(vec![VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };
    let annotations = BTreeMap::from([
        (CONFIG_HASH_ANNOTATION.to_string(), config_hash.to_string()),
        ("prometheus.io/scrape".to_string(), "true".to_string()),
        ("prometheus.io/port".to_string(), spec.port.to_string()),
        ("prometheus.io/path".to_string(), "/metrics".to_string()),
    ]);
    Deployment {
        metadata: child_meta(cc, names.server(), Component::Server),
        spec: Some(DeploymentSpec {
            replicas: Some(desired_replicas(cc)),
            selector: LabelSelector {
                match_labels: Some(names.selector_labels(Component::Server)),
                match_expressions: None,
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(names.labels(Component::Server)),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    security_context: Some(pod_security_context(SERVER_UID)),
                    termination_grace_period_seconds: Some(
                        PRE_STOP_SLEEP_SECS + grace + KILL_MARGIN_SECS,
                    ),
                    containers: vec![container],
                    volumes: Some(vec![Volume {
                        name: "tmp".into(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Volume::default()
                    }]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// The chat Service: `ws://<name>.<ns>.svc:<port>/ws`.
pub fn service(cc: &ChatCluster) -> Service {
    let names = Names::of(cc);
    Service {
        metadata: child_meta(cc, names.server(), Component::Server),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(names.selector_labels(Component::Server)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: cc.spec.server.port,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                app_protocol: Some("http".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The in-cluster WebSocket endpoint reported in the status.
pub fn endpoint(cc: &ChatCluster) -> String {
    let names = Names::of(cc);
    format!(
        "ws://{}:{}/ws",
        names.host(&names.server()),
        cc.spec.server.port
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::pod::secret_source;
    use crate::meta::test_cluster;

    /// Every variable the operator gives the chat-server container, with the
    /// value it would have in the pod (`valueFrom` sources get a value of the
    /// shape their Secret or field holds).
    fn container_env(cc: &ChatCluster) -> Vec<(String, String)> {
        let mut vars: Vec<(String, String)> = config_map(cc).data.into_iter().flatten().collect();
        for var in env(&deployment(cc, "hash")) {
            let value = match (var.value, var.name.as_str()) {
                (Some(value), _) => value,
                (None, "CHAT_INSTANCE_ID") => "demo-7d9f8-abcde".into(),
                (None, "REDIS_URL") => "redis://:pw@demo-redis.ns.svc:6379/".into(),
                (None, "DATABASE_URL") => {
                    "postgres://chat:pw@demo-postgres.ns.svc:5432/chat".into()
                }
                (None, "CHAT_JWT_SECRET") => "a-generated-key".into(),
                (None, other) => panic!("no sample value for {other}"),
            };
            vars.push((var.name, value));
        }
        vars
    }

    /// The contract between this crate and chat-server: each variable is a
    /// setting of `chat_server::Config` (or one the binary reads for logging), and
    /// the values parse and pass the server's own validation.
    #[test]
    fn every_env_var_is_a_chat_server_setting_with_a_valid_value() {
        use clap::{CommandFactory, Parser};
        use std::ffi::OsStr;
        let mut tuned = test_cluster();
        tuned.spec.server.auth.enabled = true;
        tuned.spec.server.limits = crds::ServerLimits {
            max_connections: Some(20_000),
            max_frame_bytes: Some(65_536),
            max_body_bytes: Some(4_096),
            rate_per_sec: Some(20),
            rate_burst: Some(40),
            outbound_queue: Some(512),
            max_rooms_per_connection: Some(10),
            history_max_limit: Some(100),
            presence_ttl_secs: Some(30),
            shutdown_grace_secs: Some(20),
        };
        tuned.spec.server.rebalance = crds::RebalanceSpec {
            enabled: true,
            tolerance_percent: Some(25),
            interval_secs: Some(5),
            max_closes: Some(50),
        };
        let command = chat_server::Config::command();
        for cc in [test_cluster(), tuned] {
            let mut argv = vec!["chat-server".to_string()];
            for (name, value) in container_env(&cc) {
                match name.as_str() {
                    // Read by the binary's logging setup, not by Config.
                    "RUST_LOG" => {
                        tracing_subscriber::EnvFilter::try_new(&value).expect("a valid RUST_LOG");
                        continue;
                    }
                    "LOG_FORMAT" => {
                        assert_eq!(value, "json");
                        continue;
                    }
                    _ => {}
                }
                let arg = command
                    .get_arguments()
                    .find(|a| a.get_env() == Some(OsStr::new(&name)))
                    .unwrap_or_else(|| panic!("{name} is not an env of chat_server::Config"));
                let flag = format!("--{}", arg.get_long().expect("a long flag"));
                if arg.get_action().takes_values() {
                    argv.extend([flag, value]);
                } else {
                    // A switch: its variable holds a boolean, the flag none.
                    assert_eq!(value, "true", "{name} is a switch");
                    argv.push(flag);
                }
            }
            let config = chat_server::Config::try_parse_from(&argv)
                .unwrap_or_else(|e| panic!("{argv:?} does not parse: {e}"));
            config
                .validate()
                .expect("the chat-server accepts the values");
            assert!(config.redis_url.is_some() && config.database_url.is_some());
            assert_eq!(config.jwt_secret.is_some(), cc.spec.server.auth.enabled);
            assert_eq!(config.rebalance.enabled, cc.spec.server.rebalance.enabled);
        }
    }

    fn hash_of(cc: &ChatCluster, creds: &Credentials) -> String {
        config_hash(&config_map(cc), creds, cc, &ExternalInputs::default())
    }

    fn env(d: &Deployment) -> Vec<EnvVar> {
        d.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .env
            .clone()
            .unwrap()
    }

    #[test]
    fn limits_become_env_vars() {
        let mut cc = test_cluster();
        cc.spec.server.limits.max_connections = Some(500);
        cc.spec.server.limits.rate_burst = Some(7);
        let data = config_map(&cc).data.unwrap();
        assert_eq!(data["CHAT_MAX_CONNECTIONS"], "500");
        assert_eq!(data["CHAT_RATE_BURST"], "7");
        assert_eq!(data["CHAT_LISTEN"], "0.0.0.0:8080");
        assert!(!data.contains_key("REDIS_URL"), "it carries a password");
        assert_eq!(data["LOG_FORMAT"], "json");
        assert!(!data.contains_key("CHAT_MAX_FRAME_BYTES"));
    }

    #[test]
    fn config_change_changes_the_hash() {
        let cc = test_cluster();
        let (creds, _) = Credentials::resolve(&cc, None);
        let before = hash_of(&cc, &creds);
        assert_eq!(before, hash_of(&cc, &creds), "the hash is deterministic");
        let mut changed = cc.clone();
        changed.spec.server.limits.max_body_bytes = Some(1024);
        assert_ne!(before, hash_of(&changed, &creds));
    }

    #[test]
    fn a_rotated_external_secret_changes_the_hash() {
        let cc = test_cluster();
        let (creds, _) = Credentials::resolve(&cc, None);
        let hash = |url: &str| {
            let mut external = ExternalInputs::default();
            external.insert("postgres", url.as_bytes().to_vec());
            config_hash(&config_map(&cc), &creds, &cc, &external)
        };
        assert_eq!(hash("postgres://a"), hash("postgres://a"));
        assert_ne!(hash("postgres://a"), hash("postgres://b"));
    }

    #[test]
    fn secret_change_changes_the_hash() {
        let mut cc = test_cluster();
        let (creds, _) = Credentials::resolve(&cc, None);
        let before = hash_of(&cc, &creds);
        cc.spec.server.auth.enabled = true;
        let (with_jwt, _) = Credentials::resolve(&cc, Some(&creds.to_secret(&cc)));
        assert_ne!(before, hash_of(&cc, &with_jwt));
    }

    #[test]
    fn deployment_is_hardened_and_annotated() {
        let d = deployment(&test_cluster(), "abc");
        let spec = d.spec.as_ref().unwrap();
        let template = &spec.template;
        let annotations = template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap();
        assert_eq!(annotations[CONFIG_HASH_ANNOTATION], "abc");
        assert_eq!(annotations["prometheus.io/scrape"], "true");
        let pod = template.spec.as_ref().unwrap();
        let c = &pod.containers[0];
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.run_as_non_root, Some(true));
        let probe_path =
            |p: &Option<Probe>| p.as_ref().unwrap().http_get.as_ref().unwrap().path.clone();
        assert_eq!(probe_path(&c.liveness_probe).as_deref(), Some("/healthz"));
        assert_eq!(probe_path(&c.readiness_probe).as_deref(), Some("/readyz"));
        assert_eq!(pod.termination_grace_period_seconds, Some(20));
        assert_eq!(spec.replicas, Some(3));
    }

    #[test]
    fn secrets_are_references_not_values() {
        let mut cc = test_cluster();
        cc.spec.server.auth.enabled = true;
        let env = env(&deployment(&cc, "h"));
        for var in ["DATABASE_URL", "REDIS_URL", "CHAT_JWT_SECRET"] {
            assert_eq!(secret_source(&env, var).0, "demo-secrets");
        }
        let id = env.iter().find(|e| e.name == "CHAT_INSTANCE_ID").unwrap();
        assert_eq!(
            id.value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "metadata.name"
        );
    }

    #[test]
    fn external_backends_use_the_user_secrets() {
        let mut cc = test_cluster();
        cc.spec.redis.mode = BackendMode::External;
        cc.spec.redis.secret_ref = Some(SecretKeyRef {
            name: "r".into(),
            key: "u".into(),
        });
        cc.spec.postgres.mode = BackendMode::External;
        cc.spec.postgres.secret_ref = Some(SecretKeyRef {
            name: "p".into(),
            key: "url".into(),
        });
        assert!(!config_map(&cc).data.unwrap().contains_key("REDIS_URL"));
        let env = env(&deployment(&cc, "h"));
        let source = |var: &str| secret_source(&env, var);
        assert_eq!(source("REDIS_URL"), ("r".to_string(), "u".to_string()));
        assert_eq!(source("DATABASE_URL"), ("p".to_string(), "url".to_string()));
    }

    #[test]
    fn replicas_are_clamped_to_autoscaler_bounds() {
        let mut cc = test_cluster();
        cc.spec.server.replicas = 50;
        assert_eq!(desired_replicas(&cc), 10);
        cc.spec.server.replicas = 1;
        assert_eq!(desired_replicas(&cc), 3);
        cc.spec.autoscaling.enabled = false;
        assert_eq!(desired_replicas(&cc), 1);
    }

    #[test]
    fn service_port_is_named_http() {
        let mut cc = test_cluster();
        cc.spec.server.port = 9000;
        let port = &service(&cc).spec.unwrap().ports.unwrap()[0];
        assert_eq!(port.name.as_deref(), Some("http"));
        assert_eq!(port.port, 9000);
        assert_eq!(endpoint(&cc), "ws://demo.ns.svc:9000/ws");
    }
}
