//! Computing a ChatCluster's status from its children's real status.
//!
//! Pure functions of what the API server reported, so the phase and
//! conditions are unit-testable and never claim more than the cluster shows. A
//! workload counts as ready only once its controller has observed the current
//! spec (`observedGeneration`) and finished rolling it out (every pod updated,
//! no `ProgressDeadlineExceeded`, the StatefulSet's current revision equal to
//! its update revision): a replica count alone still describes the old pods
//! right after a change. A condition keeps its `lastTransitionTime` while its
//! status stays the same, as Kubernetes conventions require.

use crds::{BackendMode, ChatCluster, ChatClusterStatus, ConditionType, Phase};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::children::chat_server;
use crate::meta::{Component, Names};

/// What the API server reported about the workloads, read after this reconcile's applies.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub server: Option<Deployment>,
    pub redis: Option<StatefulSet>,
    pub postgres: Option<StatefulSet>,
}

/// One condition's verdict before timestamps are attached.
pub(crate) struct Verdict {
    /// The condition's status: True or False.
    pub ready: bool,
    /// Its reason, a CamelCase word.
    pub reason: &'static str,
    /// What a person reads.
    pub message: String,
}

impl Verdict {
    fn not_ready(reason: &'static str, message: String) -> Self {
        Self {
            ready: false,
            reason,
            message,
        }
    }
}

/// The full status for `cc`, given the observed children, the children that
/// failed to apply this reconcile (`failures`, one message each), and the time.
pub fn compute(
    cc: &ChatCluster,
    observed: &Observed,
    failures: &[String],
    now: &Time,
) -> ChatClusterStatus {
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
    let server = server_verdict(cc, observed.server.as_ref());
    let all_ready = redis.ready && postgres.ready && server.ready;
    let ready = if all_ready {
        Verdict {
            ready: true,
            reason: "AllComponentsReady",
            message: format!("serving at {}", chat_server::endpoint(cc)),
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
        Verdict::not_ready(
            "ComponentsNotReady",
            format!("waiting for {}", waiting.join(", ")),
        )
    };
    let phase = if all_ready {
        Phase::Ready
    } else if ready_replicas > 0 {
        Phase::Degraded
    } else {
        Phase::Provisioning
    };
    let reconciled = reconciled_verdict(failures);

    let previous = cc
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or(&[]);
    let generation = cc.metadata.generation;
    let stamp = Stamp {
        generation,
        previous,
        now,
    };
    let conditions = [
        (ConditionType::Ready, ready),
        (ConditionType::RedisReady, redis),
        (ConditionType::PostgresReady, postgres),
        (ConditionType::ServerReady, server),
        (ConditionType::Reconciled, reconciled),
    ]
    .into_iter()
    .map(|(kind, v)| stamp.condition(kind.as_str(), v))
    .collect();

    ChatClusterStatus {
        phase: Some(phase),
        conditions,
        observed_generation: generation,
        replicas,
        ready_replicas,
        selector: Some(names.selector_string(Component::Server)),
        endpoint: Some(chat_server::endpoint(cc)),
    }
}

fn reconciled_verdict(failures: &[String]) -> Verdict {
    if failures.is_empty() {
        Verdict {
            ready: true,
            reason: "ReconcileSucceeded",
            message: "every child object is applied".into(),
        }
    } else {
        Verdict::not_ready("ReconcileFailed", failures.join("; "))
    }
}

/// `status` with its Reconciled condition set from `failures`: used when a
/// reconcile fails before it could observe the children.
pub fn with_reconcile_failure(
    cc: &ChatCluster,
    failures: &[String],
    now: &Time,
) -> ChatClusterStatus {
    let mut status = cc.status.clone().unwrap_or_default();
    let stamp = Stamp {
        generation: cc.metadata.generation,
        previous: &status.conditions,
        now,
    };
    let updated = stamp.condition(
        ConditionType::Reconciled.as_str(),
        reconciled_verdict(failures),
    );
    status
        .conditions
        .retain(|c| c.type_ != ConditionType::Reconciled.as_str());
    status.conditions.push(updated);
    status
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
    let stamp = Stamp {
        generation,
        previous,
        now,
    };
    let mut conditions = vec![stamp.condition(
        ConditionType::Ready.as_str(),
        Verdict::not_ready(reason, message.to_string()),
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
        endpoint: Some(chat_server::endpoint(cc)),
        ..previous_status
    }
}

/// Whether a workload's controller has seen its current spec.
fn observed_current(generation: Option<i64>, observed: Option<i64>) -> bool {
    match (generation, observed) {
        (Some(generation), Some(observed)) => observed >= generation,
        (Some(_), None) => false,
        (None, _) => true,
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
        return Verdict::not_ready(
            "NotFound",
            format!("the {label} StatefulSet does not exist yet"),
        );
    };
    let status = sts.status.clone().unwrap_or_default();
    let ready = status.ready_replicas.unwrap_or(0);
    let wanted = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let counts = format!("{ready}/{wanted} {label} pods ready");
    if !observed_current(sts.metadata.generation, status.observed_generation) {
        return Verdict::not_ready(
            "RolloutPending",
            format!("the StatefulSet controller has not observed the current spec yet; {counts}"),
        );
    }
    if let Some(update) = &status.update_revision
        && status.current_revision.as_ref() != Some(update)
    {
        return Verdict::not_ready(
            "RollingOut",
            format!("rolling out revision {update}; {counts}"),
        );
    }
    if ready >= wanted && wanted > 0 {
        Verdict {
            ready: true,
            reason: "StatefulSetReady",
            message: counts,
        }
    } else {
        Verdict::not_ready("PodsNotReady", counts)
    }
}

/// The chat-server is ready once the current spec is rolled out to every pod
/// and the pods that must serve are ready: all of them, or with autoscaling,
/// at least the autoscaler's minimum (so an autoscaler scale-up, whose new
/// pods are still starting, does not flip the cluster to not ready).
fn server_verdict(cc: &ChatCluster, deployment: Option<&Deployment>) -> Verdict {
    let Some(deployment) = deployment else {
        return Verdict::not_ready(
            "NotFound",
            "the chat-server Deployment does not exist yet".into(),
        );
    };
    let wanted = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or_else(|| chat_server::desired_replicas(cc));
    if wanted == 0 {
        return Verdict::not_ready("ScaledToZero", "spec.server.replicas is 0".into());
    }
    let status = deployment.status.clone().unwrap_or_default();
    let ready = status.ready_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let counts = format!("{ready}/{wanted} chat-server pods ready, {updated} updated");
    if !observed_current(deployment.metadata.generation, status.observed_generation) {
        return Verdict::not_ready(
            "RolloutPending",
            format!("the Deployment controller has not observed the current spec yet; {counts}"),
        );
    }
    let stuck = status.conditions.iter().flatten().find(|c| {
        c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    if let Some(stuck) = stuck {
        return Verdict::not_ready(
            "ProgressDeadlineExceeded",
            format!(
                "the rollout is stuck: {}; {counts}",
                stuck
                    .message
                    .as_deref()
                    .unwrap_or("progress deadline exceeded")
            ),
        );
    }
    if updated < wanted || total > updated {
        return Verdict::not_ready("RollingOut", counts);
    }
    let scaling = &cc.spec.autoscaling;
    let floor = if scaling.enabled {
        scaling.min_replicas.min(wanted)
    } else {
        wanted
    };
    if ready >= wanted {
        Verdict {
            ready: true,
            reason: "AllReplicasReady",
            message: counts,
        }
    } else if ready >= floor {
        Verdict {
            ready: true,
            reason: "ScalingUp",
            message: format!("{counts}; the autoscaler's minimum of {floor} is ready"),
        }
    } else {
        Verdict::not_ready("ReplicasNotReady", counts)
    }
}

/// What the conditions of one status update share: the generation they
/// describe, the conditions they replace, and the time.
pub(crate) struct Stamp<'a> {
    pub generation: Option<i64>,
    pub previous: &'a [Condition],
    pub now: &'a Time,
}

impl Stamp<'_> {
    /// A condition of type `kind` saying `verdict`; its transition time is
    /// kept from `previous` while its status does not change.
    pub(crate) fn condition(&self, kind: &str, verdict: Verdict) -> Condition {
        let status = if verdict.ready { "True" } else { "False" };
        let last_transition_time = self
            .previous
            .iter()
            .find(|c| c.type_ == kind && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| self.now.clone());
        Condition {
            type_: kind.into(),
            status: status.into(),
            reason: verdict.reason.into(),
            message: verdict.message,
            observed_generation: self.generation,
            last_transition_time,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{TestCluster, test_cluster};
    use crds::SecretKeyRef;
    use k8s_openapi::api::apps::v1::DeploymentCondition;
    use k8s_openapi::api::apps::v1::{
        DeploymentSpec, DeploymentStatus, StatefulSetSpec, StatefulSetStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::jiff::Timestamp;

    /// A Deployment at generation 2 whose controller observed it and updated every pod.
    fn deployment(wanted: i32, ready: i32) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                generation: Some(2),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(wanted),
                ..DeploymentSpec::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(2),
                replicas: Some(wanted),
                updated_replicas: Some(wanted),
                ready_replicas: Some(ready),
                ..DeploymentStatus::default()
            }),
        }
    }

    fn sts(ready: i32) -> StatefulSet {
        StatefulSet {
            metadata: ObjectMeta {
                generation: Some(1),
                ..ObjectMeta::default()
            },
            spec: Some(StatefulSetSpec {
                replicas: Some(1),
                ..StatefulSetSpec::default()
            }),
            status: Some(StatefulSetStatus {
                observed_generation: Some(1),
                ready_replicas: Some(ready),
                current_revision: Some("r1".into()),
                update_revision: Some("r1".into()),
                ..StatefulSetStatus::default()
            }),
        }
    }

    fn ready_backends(server: Deployment) -> Observed {
        Observed {
            server: Some(server),
            redis: Some(sts(1)),
            postgres: Some(sts(1)),
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
        let s = compute(
            &test_cluster().with_generation(4),
            &Observed::default(),
            &[],
            &now(),
        );
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
        let s = compute(&test_cluster().with_generation(4), &observed, &[], &now());
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
        let s = compute(&test_cluster().with_generation(4), &observed, &[], &now());
        assert_eq!(s.phase, Some(Phase::Degraded));
        let ready = find(&s, ConditionType::Ready);
        assert_eq!(ready.message, "waiting for Redis, chat-server");
        assert_eq!(
            find(&s, ConditionType::ServerReady).message,
            "2/3 chat-server pods ready, 3 updated"
        );
    }

    #[test]
    fn external_backends_count_as_ready() {
        let mut cc = test_cluster().with_generation(4);
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
        let s = compute(&cc, &observed, &[], &now());
        assert_eq!(s.phase, Some(Phase::Ready));
        assert_eq!(find(&s, ConditionType::PostgresReady).reason, "External");
    }

    #[test]
    fn transition_time_is_kept_while_status_is_unchanged() {
        let mut cc = test_cluster().with_generation(4);
        let first = compute(&cc, &Observed::default(), &[], &now());
        cc.status = Some(first.clone());
        let later = Time(Timestamp::from_second(1_700_000_100).unwrap());
        let second = compute(&cc, &Observed::default(), &[], &later);
        assert_eq!(
            find(&second, ConditionType::Ready).last_transition_time,
            now()
        );
        let observed = Observed {
            server: Some(deployment(3, 3)),
            redis: Some(sts(1)),
            postgres: Some(sts(1)),
        };
        let third = compute(&cc, &observed, &[], &later);
        assert_eq!(
            find(&third, ConditionType::Ready).last_transition_time,
            later
        );
    }

    #[test]
    fn pending_keeps_component_conditions() {
        let mut cc = test_cluster().with_generation(4);
        cc.status = Some(compute(&cc, &Observed::default(), &[], &now()));
        let s = pending(
            &cc,
            "SecretNotFound",
            "postgres secret pg: not found",
            &now(),
        );
        assert_eq!(s.phase, Some(Phase::Pending));
        assert_eq!(find(&s, ConditionType::Ready).reason, "SecretNotFound");
        assert_eq!(s.conditions.len(), 5);
    }

    #[test]
    fn a_spec_the_deployment_controller_has_not_observed_is_not_ready() {
        let mut server = deployment(3, 3);
        server.metadata.generation = Some(3);
        let s = compute(
            &test_cluster().with_generation(4),
            &ready_backends(server),
            &[],
            &now(),
        );
        let c = find(&s, ConditionType::ServerReady);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "RolloutPending")
        );
        assert_eq!(find(&s, ConditionType::Ready).status, "False");
    }

    #[test]
    fn a_stuck_rollout_is_not_ready_though_the_old_pods_are() {
        let mut server = deployment(3, 3);
        let status = server.status.as_mut().unwrap();
        status.replicas = Some(4);
        status.updated_replicas = Some(1);
        let mut s = compute(
            &test_cluster().with_generation(4),
            &ready_backends(server.clone()),
            &[],
            &now(),
        );
        assert_eq!(find(&s, ConditionType::ServerReady).reason, "RollingOut");
        server.status.as_mut().unwrap().conditions = Some(vec![DeploymentCondition {
            type_: "Progressing".into(),
            status: "False".into(),
            reason: Some("ProgressDeadlineExceeded".into()),
            message: Some("ReplicaSet \"demo-1\" has timed out progressing.".into()),
            ..DeploymentCondition::default()
        }]);
        s = compute(
            &test_cluster().with_generation(4),
            &ready_backends(server),
            &[],
            &now(),
        );
        let c = find(&s, ConditionType::ServerReady);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "ProgressDeadlineExceeded")
        );
        assert!(c.message.contains("timed out progressing"), "{}", c.message);
        assert_eq!(s.phase, Some(Phase::Degraded));
    }

    #[test]
    fn an_autoscaler_scale_up_keeps_the_cluster_ready() {
        let s = compute(
            &test_cluster().with_generation(4),
            &ready_backends(deployment(5, 3)),
            &[],
            &now(),
        );
        let c = find(&s, ConditionType::ServerReady);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "ScalingUp")
        );
        assert_eq!(s.phase, Some(Phase::Ready));
        let mut fixed = test_cluster().with_generation(4);
        fixed.spec.autoscaling.enabled = false;
        let s = compute(&fixed, &ready_backends(deployment(5, 3)), &[], &now());
        assert_eq!(
            find(&s, ConditionType::ServerReady).reason,
            "ReplicasNotReady"
        );
    }

    #[test]
    fn a_statefulset_rolling_to_a_new_revision_is_not_ready() {
        let mut redis = sts(1);
        redis.status.as_mut().unwrap().update_revision = Some("r2".into());
        let observed = Observed {
            redis: Some(redis),
            ..ready_backends(deployment(3, 3))
        };
        let s = compute(&test_cluster().with_generation(4), &observed, &[], &now());
        assert_eq!(find(&s, ConditionType::RedisReady).reason, "RollingOut");
        assert_eq!(find(&s, ConditionType::Ready).status, "False");
    }

    #[test]
    fn failed_children_show_as_a_reconciled_condition() {
        let failures = vec!["apply StatefulSet/demo-postgres: Forbidden".to_string()];
        let s = compute(
            &test_cluster().with_generation(4),
            &ready_backends(deployment(3, 3)),
            &failures,
            &now(),
        );
        let c = find(&s, ConditionType::Reconciled);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "ReconcileFailed")
        );
        assert!(c.message.contains("StatefulSet/demo-postgres"));
        let mut cc = test_cluster().with_generation(4);
        cc.status = Some(compute(&cc, &Observed::default(), &[], &now()));
        let s = with_reconcile_failure(&cc, &failures, &now());
        assert_eq!(find(&s, ConditionType::Reconciled).status, "False");
        assert_eq!(s.conditions.len(), 5);
    }
}
