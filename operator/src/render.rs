//! `operator render`: the child objects of ChatClusters read from a file,
//! printed as multi-document YAML, without touching a cluster.
//!
//! This is the same [`children::desired`] the controller applies, so a GitOps
//! pipeline or a reviewer sees exactly what the operator would create. Two
//! differences follow from having no cluster. The generated Secret is left out
//! (a comment says where it would be), and the pod-template hash is computed
//! without its values: output that holds no credential and is the same on
//! every run, and that, applied, cannot overwrite a live cluster's
//! credentials. `--show-secrets` prints the Secret with freshly generated
//! values instead (as `kubectl create secret --dry-run` would). And
//! ownerReferences are left out unless the input carries a `metadata.uid`,
//! because a reference to a non-existent owner would make the garbage
//! collector delete the objects.

use std::fmt::Write as _;

use crds::ChatCluster;
use kube::ResourceExt;
use serde::Deserialize;

use crate::children::chat_server::ExternalInputs;
use crate::children::desired;
use crate::children::secrets::Credentials;
use crate::error::{Error, Result};

/// Parses every ChatCluster document in `input` (other kinds are an error, so a
/// wrong file is noticed) and renders their children; the Secret only when
/// `show_secrets` is set.
pub fn render(input: &str, source: &str, show_secrets: bool) -> Result<String> {
    let clusters = parse(input, source)?;
    let mut out = String::new();
    for cc in &clusters {
        let problems = cc.spec.problems();
        if !problems.is_empty() {
            return Err(Error::InvalidSpec {
                name: cc.name_any(),
                problems,
            });
        }
        let creds = if show_secrets {
            Credentials::resolve(cc, None).0
        } else {
            Credentials::redacted(cc)
        };
        for child in desired(cc, &creds, &ExternalInputs::default()) {
            if child.resource.kind == "Secret" && !show_secrets {
                let _ = writeln!(
                    out,
                    "# {} is not printed: the operator generates its values in the cluster (--show-secrets prints new ones)",
                    child.describe()
                );
                continue;
            }
            let yaml = serde_yaml::to_string(&child.object)
                .map_err(|e| Error::Input(format!("{}: {e}", child.describe())))?;
            let _ = write!(out, "---\n{yaml}");
        }
    }
    Ok(out)
}

fn parse(input: &str, source: &str) -> Result<Vec<ChatCluster>> {
    let mut clusters = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(input).enumerate() {
        let value = serde_yaml::Value::deserialize(document)
            .map_err(|e| Error::Input(format!("{source}: document {}: {e}", index + 1)))?;
        if value.is_null() {
            continue;
        }
        let kind = value.get("kind").and_then(serde_yaml::Value::as_str);
        let api_version = value.get("apiVersion").and_then(serde_yaml::Value::as_str);
        if kind != Some("ChatCluster") || api_version != Some("chatback.dev/v1alpha1") {
            return Err(Error::Input(format!(
                "{source}: document {}: expected apiVersion chatback.dev/v1alpha1, kind ChatCluster; found {} {}",
                index + 1,
                api_version.unwrap_or("<no apiVersion>"),
                kind.unwrap_or("<no kind>"),
            )));
        }
        let mut cc: ChatCluster = serde_yaml::from_value(value)
            .map_err(|e| Error::Input(format!("{source}: document {}: {e}", index + 1)))?;
        if cc.metadata.name.as_deref().is_none_or(str::is_empty) {
            return Err(Error::Input(format!(
                "{source}: document {}: metadata.name is required",
                index + 1
            )));
        }
        if cc.metadata.namespace.is_none() {
            cc.metadata.namespace = Some("default".into());
        }
        clusters.push(cc);
    }
    if clusters.is_empty() {
        return Err(Error::Input(format!("{source}: no ChatCluster found")));
    }
    Ok(clusters)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str =
        "apiVersion: chatback.dev/v1alpha1\nkind: ChatCluster\nmetadata:\n  name: demo\nspec: {}\n";

    #[test]
    fn render_prints_no_secret_unless_asked_and_is_deterministic() {
        let first = render(MINIMAL, "t.yaml", false).unwrap();
        assert_eq!(first, render(MINIMAL, "t.yaml", false).unwrap());
        assert!(!first.contains("kind: Secret"), "{first}");
        assert!(first.contains("# Secret/demo-secrets is not printed"));
        let shown = render(MINIMAL, "t.yaml", true).unwrap();
        assert!(shown.contains("kind: Secret") && shown.contains("postgres-password"));
        assert_ne!(
            shown,
            render(MINIMAL, "t.yaml", true).unwrap(),
            "fresh values"
        );
    }

    #[test]
    fn minimal_cluster_renders_every_child() {
        let out = render(MINIMAL, "t.yaml", true).unwrap();
        let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&out)
            .map(|d| serde_yaml::Value::deserialize(d).unwrap())
            .collect();
        assert_eq!(docs.len(), 11);
        for doc in &docs {
            assert_eq!(doc["metadata"]["namespace"].as_str(), Some("default"));
            assert!(doc["metadata"].get("ownerReferences").is_none());
        }
    }

    #[test]
    fn wrong_kind_is_a_clear_error() {
        let err = render(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n",
            "p.yaml",
            false,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("expected apiVersion chatback.dev/v1alpha1"),
            "{err}"
        );
    }

    #[test]
    fn invalid_spec_is_rejected() {
        let input = format!(
            "{MINIMAL}---\napiVersion: chatback.dev/v1alpha1\nkind: ChatCluster\nmetadata: {{name: bad}}\nspec: {{autoscaling: {{minReplicas: 5, maxReplicas: 2}}}}\n"
        );
        let err = render(&input, "t.yaml", false).unwrap_err();
        assert!(err.to_string().contains("minReplicas"), "{err}");
    }

    #[test]
    fn garbage_and_empty_inputs_are_errors() {
        assert!(
            render("", "e.yaml", false)
                .unwrap_err()
                .to_string()
                .contains("no ChatCluster")
        );
        assert!(render("spec: [", "g.yaml", false).is_err());
        let typo = "apiVersion: chatback.dev/v1alpha1\nkind: ChatCluster\nmetadata: {name: x}\nspec: {server: {replicas: many}}\n";
        assert!(
            render(typo, "t.yaml", false)
                .unwrap_err()
                .to_string()
                .contains("t.yaml")
        );
    }
}
