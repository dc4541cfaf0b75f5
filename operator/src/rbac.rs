//! The Kubernetes permissions the operator needs: every API call it makes, and
//! nothing more.
//!
//! This list is the contract between the code and the install manifests: the
//! tests check that the controller, run against the fake API server, makes no
//! call outside it and uses every entry, and that `k8s/rbac.yaml` grants exactly
//! this. Server-side apply of an object that does not exist yet is authorized
//! as `create` as well as `patch`, so every applied kind needs both.

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

/// The operator's rules, cluster-wide (it watches ChatClusters in every namespace).
pub const RULES: &[Rule] = &[
    // Startup check that the CRD is installed.
    Rule {
        group: "apiextensions.k8s.io",
        resource: "customresourcedefinitions",
        verbs: &["get"],
    },
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
    // The retention policy Delete removes the data claims.
    Rule {
        group: "",
        resource: "persistentvolumeclaims",
        verbs: &["list", "delete"],
    },
    // Events (kube::runtime::events creates them, then patches a repeated one).
    Rule {
        group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
    },
];

/// Whether the rules allow `verb` on `group`/`resource`.
pub fn allows(group: &str, resource: &str, verb: &str) -> bool {
    RULES
        .iter()
        .any(|r| r.group == group && r.resource == resource && r.verbs.contains(&verb))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_unique_per_resource() {
        for (i, a) in RULES.iter().enumerate() {
            for b in &RULES[i + 1..] {
                assert!(
                    !(a.group == b.group && a.resource == b.resource),
                    "{a:?} twice"
                );
            }
        }
    }

    #[test]
    fn applied_kinds_can_be_created_and_patched() {
        for resource in ["secrets", "configmaps", "services"] {
            assert!(allows("", resource, "create") && allows("", resource, "patch"));
        }
        assert!(
            !allows("", "secrets", "delete"),
            "the Secret is never deleted"
        );
    }
}
