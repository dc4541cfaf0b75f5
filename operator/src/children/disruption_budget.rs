//! The PodDisruptionBudget of the chat-server pods.
//!
//! Node drains and cluster upgrades evict pods; the budget keeps all but
//! `maxUnavailable` chat pods serving while that happens, so clients reconnect
//! to a live instance instead of finding none.

use crds::ChatCluster;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::meta::{Component, Names, child_meta};

/// The PDB, or `None` when disabled.
pub fn pod_disruption_budget(cc: &ChatCluster) -> Option<PodDisruptionBudget> {
    let pdb = &cc.spec.pod_disruption_budget;
    if !pdb.enabled {
        return None;
    }
    let names = Names::of(cc);
    Some(PodDisruptionBudget {
        metadata: child_meta(cc, names.server(), Component::Server),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(pdb.max_unavailable)),
            selector: Some(LabelSelector {
                match_labels: Some(names.selector_labels(Component::Server)),
                match_expressions: None,
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::test_cluster;

    #[test]
    fn budget_selects_server_pods() {
        let mut cc = test_cluster();
        cc.spec.pod_disruption_budget.max_unavailable = 2;
        let spec = pod_disruption_budget(&cc).unwrap().spec.unwrap();
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(2)));
        let labels = spec.selector.unwrap().match_labels.unwrap();
        assert_eq!(labels["app.kubernetes.io/component"], "server");
        cc.spec.pod_disruption_budget.enabled = false;
        assert!(pod_disruption_budget(&cc).is_none());
    }
}
