//! Computing a ChatCluster's status from its children's real status.
//!
//! Pure functions of what the API server reported (Deployment and StatefulSet
//! replica counts), so the phase and conditions are unit-testable and never
//! claim more than the cluster shows. A condition keeps its
//! `lastTransitionTime` while its status stays the same, as Kubernetes
//! conventions require.

use crds::{BackendMode, ChatCluster, ChatClusterStatus, ConditionType, Phase};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::meta::{Component, Names};
use crate::server;

/// What the API server reported about the workloads, as applied this reconcile.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub server: Option<Deployment>,
    pub redis: Option<StatefulSet>,
    pub postgres: Option<StatefulSet>,
}

/// One condition's verdict before timestamps are attached.
struct Verdict {
    ready: bool,
    reason: &'static str,
    message: String,
}

/// The full status for `cc`, given the observed children and the current time.
pub fn compute(cc: &ChatCluster, observed: &Observed, now: &Time) -> ChatClusterStatus {
    let names = Names::of(cc);
    let server_status = observed.server.as_ref().and_then(|d| d.status.clone());
    let replicas = server_status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let ready_replicas = server_status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);

    let redis = backend_verdict("Redis", cc.spec.redis.mode, observed.redis.as_ref());
    let postgres = backend_verdict(
        "PostgreSQL",
        cc.spec.postgres.mode,
        observed.postgres.as_ref(),
    );
    let server = server_verdict(cc, observed.server.as_ref(), ready_replicas);
    let all_ready = redis.ready && postgres.ready && server.ready;
    let ready = if all_ready {
        Verdict {
            ready: true,
            reason: "AllComponentsReady",
            message: format!("serving at {}", server::endpoint(cc)),
        }
    } else {
        let waiting: Vec<&str> = [
            (!redis.ready).then_some("Redis"),
            (!postgres.ready).then_some("PostgreSQL"),
            (!server.ready).then_some("chat-server"),
        ]
        .into_iter()
        .flatten()
        .collect();
        Verdict {
            ready: false,
            reason: "ComponentsNotReady",
            message: format!("waiting for {}", waiting.join(", ")),
        }
    };
    let phase = if all_ready {
        Phase::Ready
    } else if ready_replicas > 0 {
        Phase::Degraded
    } else {
        Phase::Provisioning
    };

    let previous = cc
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or(&[]);
    let generation = cc.metadata.generation;
    let conditions = [
        (ConditionType::Ready, ready),
        (ConditionType::RedisReady, redis),
        (ConditionType::PostgresReady, postgres),
        (ConditionType::ServerReady, server),
    ]
    .into_iter()
    .map(|(kind, v)| {
        condition(
            kind, v.ready, v.reason, v.message, generation, previous, now,
        )
    })
    .collect();

    ChatClusterStatus {
        phase: Some(phase),
        conditions,
        observed_generation: generation,
        replicas,
        ready_replicas,
        selector: Some(names.selector_string(Component::Server)),
        endpoint: Some(server::endpoint(cc)),
    }
}

/// The status of a cluster that cannot be built yet (a missing external Secret,
/// an invalid spec): phase Pending, every condition False with the reason.
pub fn pending(
    cc: &ChatCluster,
    reason: &'static str,
    message: &str,
    now: &Time,
) -> ChatClusterStatus {
    let previous_status = cc.status.clone().unwrap_or_default();
    let previous = previous_status.conditions.as_slice();
    let generation = cc.metadata.generation;
    let mut conditions = vec![condition(
        ConditionType::Ready,
        false,
        reason,
        message.to_string(),
        generation,
        previous,
        now,
    )];
    // Keep the component conditions as last observed: they are still true facts.
    conditions.extend(
        previous
            .iter()
            .filter(|c| c.type_ != ConditionType::Ready.as_str())
            .cloned(),
    );
    ChatClusterStatus {
        phase: Some(Phase::Pending),
        conditions,
        observed_generation: generation,
        selector: Some(Names::of(cc).selector_string(Component::Server)),
        endpoint: Some(server::endpoint(cc)),
        ..previous_status
    }
}

fn backend_verdict(label: &str, mode: BackendMode, sts: Option<&StatefulSet>) -> Verdict {
    if mode == BackendMode::External {
        return Verdict {
            ready: true,
            reason: "External",
            message: format!("{label} is external; its URL comes from the referenced Secret"),
        };
    }
    let Some(sts) = sts else {
        return Verdict {
            ready: false,
            reason: "NotFound",
            message: format!("the {label} StatefulSet does not exist yet"),
        };
    };
    let ready = sts
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let wanted = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    if ready >= wanted && wanted > 0 {
        Verdict {
            ready: true,
            reason: "StatefulSetReady",
            message: format!("{ready}/{wanted} {label} pods ready"),
        }
    } else {
        Verdict {
            ready: false,
            reason: "PodsNotReady",
            message: format!("{ready}/{wanted} {label} pods ready"),
        }
    }
}

fn server_verdict(cc: &ChatCluster, deployment: Option<&Deployment>, ready: i32) -> Verdict {
    let Some(deployment) = deployment else {
        return Verdict {
            ready: false,
            reason: "NotFound",
            message: "the chat-server Deployment does not exist yet".into(),
        };
    };
    let wanted = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or_else(|| server::desired_replicas(cc));
    if wanted == 0 {
        return Verdict {
            ready: false,
            reason: "ScaledToZero",
            message: "spec.server.replicas is 0".into(),
        };
    }
    let message = format!("{ready}/{wanted} chat-server pods ready");
    if ready >= wanted {
        Verdict {
            ready: true,
            reason: "AllReplicasReady",
            message,
        }
    } else {
        Verdict {
            ready: false,
            reason: "ReplicasNotReady",
            message,
        }
    }
}

fn condition(
    kind: ConditionType,
    ready: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    previous: &[Condition],
    now: &Time,
) -> Condition {
    let status = if ready { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == kind.as_str() && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: kind.as_str().into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::{ChatClusterSpec, SecretKeyRef};
    use k8s_openapi::api::apps::v1::{
        DeploymentSpec, DeploymentStatus, StatefulSetSpec, StatefulSetStatus,
    };
    use k8s_openapi::jiff::Timestamp;

    fn cluster() -> ChatCluster {
        let mut cc = ChatCluster::new("demo", ChatClusterSpec::default());
        cc.metadata.namespace = Some("ns".into());
        cc.metadata.generation = Some(4);
        cc
    }

    fn deployment(wanted: i32, ready: i32) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(wanted),
                ..DeploymentSpec::default()
            }),
            status: Some(DeploymentStatus {
                replicas: Some(wanted),
                ready_replicas: Some(ready),
                ..DeploymentStatus::default()
            }),
            ..Deployment::default()
        }
    }

    fn sts(ready: i32) -> StatefulSet {
        StatefulSet {
            spec: Some(StatefulSetSpec {
                replicas: Some(1),
                ..StatefulSetSpec::default()
            }),
            status: Some(StatefulSetStatus {
                ready_replicas: Some(ready),
                ..StatefulSetStatus::default()
            }),
            ..StatefulSet::default()
        }
    }

    fn now() -> Time {
        Time(Timestamp::from_second(1_700_000_000).unwrap())
    }

    fn find(s: &ChatClusterStatus, kind: ConditionType) -> &Condition {
        s.conditions
            .iter()
            .find(|c| c.type_ == kind.as_str())
            .unwrap()
    }

    #[test]
    fn nothing_observed_is_provisioning() {
        let s = compute(&cluster(), &Observed::default(), &now());
        assert_eq!(s.phase, Some(Phase::Provisioning));
        assert_eq!(find(&s, ConditionType::Ready).status, "False");
        assert_eq!(find(&s, ConditionType::ServerReady).reason, "NotFound");
        assert_eq!(s.observed_generation, Some(4));
        assert_eq!(s.endpoint.as_deref(), Some("ws://demo.ns.svc:8080/ws"));
    }

    #[test]
    fn all_ready_is_ready() {
        let observed = Observed {
            server: Some(deployment(3, 3)),
            redis: Some(sts(1)),
            postgres: Some(sts(1)),
        };
        let s = compute(&cluster(), &observed, &now());
        assert_eq!(s.phase, Some(Phase::Ready));
        assert_eq!((s.replicas, s.ready_replicas), (3, 3));
        for c in &s.conditions {
            assert_eq!(c.status, "True", "{c:?}");
            assert_eq!(c.observed_generation, Some(4));
        }
    }

    #[test]
    fn some_server_pods_but_a_backend_down_is_degraded() {
        let observed = Observed {
            server: Some(deployment(3, 2)),
            redis: Some(sts(0)),
            postgres: Some(sts(1)),
        };
        let s = compute(&cluster(), &observed, &now());
        assert_eq!(s.phase, Some(Phase::Degraded));
        let ready = find(&s, ConditionType::Ready);
        assert_eq!(ready.message, "waiting for Redis, chat-server");
        assert_eq!(
            find(&s, ConditionType::ServerReady).message,
            "2/3 chat-server pods ready"
        );
    }

    #[test]
    fn external_backends_count_as_ready() {
        let mut cc = cluster();
        cc.spec.postgres.mode = BackendMode::External;
        cc.spec.postgres.secret_ref = Some(SecretKeyRef {
            name: "pg".into(),
            key: "url".into(),
        });
        let observed = Observed {
            server: Some(deployment(3, 3)),
            redis: Some(sts(1)),
            postgres: None,
        };
        let s = compute(&cc, &observed, &now());
        assert_eq!(s.phase, Some(Phase::Ready));
        assert_eq!(find(&s, ConditionType::PostgresReady).reason, "External");
    }

    #[test]
    fn transition_time_is_kept_while_status_is_unchanged() {
        let mut cc = cluster();
        let first = compute(&cc, &Observed::default(), &now());
        cc.status = Some(first.clone());
        let later = Time(Timestamp::from_second(1_700_000_100).unwrap());
        let second = compute(&cc, &Observed::default(), &later);
        assert_eq!(
            find(&second, ConditionType::Ready).last_transition_time,
            now()
        );
        let observed = Observed {
            server: Some(deployment(3, 3)),
            redis: Some(sts(1)),
            postgres: Some(sts(1)),
        };
        let third = compute(&cc, &observed, &later);
        assert_eq!(
            find(&third, ConditionType::Ready).last_transition_time,
            later
        );
    }

    #[test]
    fn pending_keeps_component_conditions() {
        let mut cc = cluster();
        cc.status = Some(compute(&cc, &Observed::default(), &now()));
        let s = pending(
            &cc,
            "SecretNotFound",
            "postgres secret pg: not found",
            &now(),
        );
        assert_eq!(s.phase, Some(Phase::Pending));
        assert_eq!(find(&s, ConditionType::Ready).reason, "SecretNotFound");
        assert_eq!(s.conditions.len(), 4);
    }
}
