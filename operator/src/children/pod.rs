//! Pod-level building blocks every workload shares: the restricted security
//! context, default resources and Secret-backed environment variables.
//!
//! The Pod Security Standards "restricted" profile is the baseline for every
//! container the operator creates: non-root, no privilege escalation, all
//! capabilities dropped, the runtime's seccomp profile and a read-only root
//! filesystem (writable paths are explicit emptyDir or PVC mounts).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, EnvVar, EnvVarSource, PodSecurityContext, ResourceRequirements, SeccompProfile,
    SecretKeySelector, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// The container-level restricted security context.
pub fn container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..SecurityContext::default()
    }
}

/// The pod-level security context: a fixed non-root uid/gid that owns mounted volumes.
pub fn pod_security_context(uid: i64) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        fs_group: Some(uid),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..PodSecurityContext::default()
    }
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    }
}

/// The user's resources, or modest defaults when the user left them empty: CPU
/// autoscaling needs a CPU request, and a memory limit keeps one pod from
/// starving its node.
pub fn resources_or(
    user: &ResourceRequirements,
    cpu_request: &str,
    memory_request: &str,
    memory_limit: &str,
) -> ResourceRequirements {
    let empty = user.requests.as_ref().is_none_or(BTreeMap::is_empty)
        && user.limits.as_ref().is_none_or(BTreeMap::is_empty);
    if !empty {
        return user.clone();
    }
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".into(), Quantity(cpu_request.into())),
            ("memory".into(), Quantity(memory_request.into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".into(),
            Quantity(memory_limit.into()),
        )])),
        claims: None,
    }
}

/// An environment variable read from a Secret key: values stay out of specs.
pub fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// The (Secret name, key) an env var reads, for the builders' unit tests.
#[cfg(test)]
pub(crate) fn secret_source(env: &[EnvVar], var: &str) -> (String, String) {
    let found = env
        .iter()
        .find(|e| e.name == var)
        .unwrap_or_else(|| panic!("no env var {var}"));
    assert!(found.value.is_none(), "{var} must come from a Secret");
    let reference = found
        .value_from
        .as_ref()
        .and_then(|v| v.secret_key_ref.as_ref())
        .unwrap_or_else(|| panic!("{var} has no secretKeyRef"));
    (reference.name.clone(), reference.key.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_resources_get_defaults() {
        let r = resources_or(&ResourceRequirements::default(), "100m", "64Mi", "256Mi");
        assert_eq!(r.requests.unwrap()["cpu"], Quantity("100m".into()));
        assert_eq!(r.limits.unwrap()["memory"], Quantity("256Mi".into()));
    }

    #[test]
    fn user_resources_are_kept() {
        let user = ResourceRequirements {
            limits: Some(BTreeMap::from([("cpu".into(), Quantity("2".into()))])),
            ..ResourceRequirements::default()
        };
        assert_eq!(resources_or(&user, "100m", "64Mi", "256Mi"), user);
    }

    #[test]
    fn security_context_is_restricted() {
        let sc = container_security_context();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.unwrap().drop.unwrap(),
            vec!["ALL".to_string()]
        );
    }
}
