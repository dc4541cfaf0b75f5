//! The Kubernetes permissions the operator needs: every API call it makes, and
//! nothing more.
//!
//! These lists are the contract between the code and the install manifests:
//! the tests check that the controller, run against the fake API server, makes
//! no call outside them and uses every entry, and that the manifests grant
//! exactly this. Server-side apply of an object that does not exist yet is
//! authorized as `create` as well as `patch`, so every applied kind needs both.
//!
//! - [`CLUSTER_RULES`]: cluster-scoped objects, always a ClusterRole;
//! - [`NAMESPACED_RULES`]: what it does in a watched namespace: a ClusterRole
//!   for the cluster-wide install (k8s/rbac.yaml), a Role per namespace for the
//!   namespace-scoped one (k8s/namespaced/rbac.yaml);
//! - [`LEASE_RULES`]: leader election, a Role in the operator's own namespace.

/// One rule: an API group, a resource (or `resource/subresource`), and verbs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
}

const APPLIED_AND_OWNED: &[&str] = &["list", "watch", "create", "patch"];
const APPLIED_OWNED_READ: &[&str] = &["get", "list", "watch", "create", "patch"];
const APPLIED_OWNED_PRUNED: &[&str] = &["get", "list", "watch", "create", "patch", "delete"];

/// Cluster-scoped: the startup check that the CRD is installed.
pub const CLUSTER_RULES: &[Rule] = &[Rule {
    group: "apiextensions.k8s.io",
    resource: "customresourcedefinitions",
    verbs: &["get"],
}];

/// Leader election (`leader.rs`): read, create and renew the Lease.
pub const LEASE_RULES: &[Rule] = &[Rule {
    group: "coordination.k8s.io",
    resource: "leases",
    verbs: &["get", "create", "patch"],
}];

/// Everything the controller does in a namespace it watches.
pub const NAMESPACED_RULES: &[Rule] = &[
    // The watched resource; patch adds and removes the retention finalizer.
    Rule {
        group: "chatback.dev",
        resource: "chatclusters",
        verbs: &["list", "watch", "patch"],
    },
    Rule {
        group: "chatback.dev",
        resource: "chatclusters/status",
        verbs: &["patch"],
    },
    // Secrets: the generated one is read back (values are never regenerated),
    // external ones are checked before use.
    Rule {
        group: "",
        resource: "secrets",
        verbs: APPLIED_OWNED_READ,
    },
    Rule {
        group: "",
        resource: "configmaps",
        verbs: APPLIED_AND_OWNED,
    },
    // Services and StatefulSets of a backend switched to External are pruned.
    Rule {
        group: "",
        resource: "services",
        verbs: APPLIED_OWNED_PRUNED,
    },
    // The Deployment is read for its previous config hash (rollout Events).
    Rule {
        group: "apps",
        resource: "deployments",
        verbs: APPLIED_OWNED_READ,
    },
    Rule {
        group: "apps",
        resource: "statefulsets",
        verbs: APPLIED_OWNED_PRUNED,
    },
    Rule {
        group: "autoscaling",
        resource: "horizontalpodautoscalers",
        verbs: APPLIED_OWNED_PRUNED,
    },
    Rule {
        group: "policy",
        resource: "poddisruptionbudgets",
        verbs: APPLIED_OWNED_PRUNED,
    },
    Rule {
        group: "networking.k8s.io",
        resource: "networkpolicies",
        verbs: APPLIED_OWNED_PRUNED,
    },
    // get: a missing PostgreSQL password is never regenerated over an
    // existing data claim. The retention policy Delete removes the claims.
    Rule {
        group: "",
        resource: "persistentvolumeclaims",
        verbs: &["get", "list", "delete"],
    },
    // Events (kube::runtime::events creates them, then patches a repeated one).
    Rule {
        group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
    },
];

/// What the ChatLoadTest controller (`load_test.rs`) does in a watched
/// namespace, besides the startup check of its CRD (in [`CLUSTER_RULES`]):
/// watch load tests and write their status, read the target ChatCluster,
/// apply and watch the Job, annotate its pods with the start time and read
/// their logs. The manifests grant it with [`NAMESPACED_RULES`].
pub const LOAD_TEST_RULES: &[Rule] = &[
    Rule {
        group: "chatback.dev",
        resource: "chatloadtests",
        verbs: &["list", "watch"],
    },
    Rule {
        group: "chatback.dev",
        resource: "chatloadtests/status",
        verbs: &["patch"],
    },
    Rule {
        group: "chatback.dev",
        resource: "chatclusters",
        verbs: &["get"],
    },
    Rule {
        group: "batch",
        resource: "jobs",
        verbs: APPLIED_AND_OWNED,
    },
    Rule {
        group: "",
        resource: "pods",
        verbs: &["list", "watch", "patch"],
    },
    Rule {
        group: "",
        resource: "pods/log",
        verbs: &["get"],
    },
];

/// The controller's rules: [`CLUSTER_RULES`] and [`NAMESPACED_RULES`].
pub fn rules() -> impl Iterator<Item = &'static Rule> {
    CLUSTER_RULES.iter().chain(NAMESPACED_RULES)
}

/// Whether `rules` allow `verb` on `group`/`resource`.
pub fn allows<'a>(
    mut rules: impl Iterator<Item = &'a Rule>,
    group: &str,
    resource: &str,
    verb: &str,
) -> bool {
    rules.any(|r| r.group == group && r.resource == resource && r.verbs.contains(&verb))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_unique_per_resource() {
        let all: Vec<&Rule> = rules().chain(LEASE_RULES).collect();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert!(
                    !(a.group == b.group && a.resource == b.resource),
                    "{a:?} twice"
                );
            }
        }
    }

    #[test]
    fn applied_kinds_can_be_created_and_patched() {
        let allowed = |resource, verb| allows(rules(), "", resource, verb);
        for resource in ["secrets", "configmaps", "services"] {
            assert!(allowed(resource, "create") && allowed(resource, "patch"));
        }
        assert!(!allowed("secrets", "delete"), "the Secret is never deleted");
    }
}
