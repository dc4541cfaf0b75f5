//! `operator render`: the child objects of ChatClusters read from a file,
//! printed as multi-document YAML, without touching a cluster.
//!
//! This is the same [`children::desired`] the controller applies, so a GitOps
//! pipeline or a reviewer sees exactly what the operator would create. Two
//! differences follow from having no cluster: the Secret gets freshly generated
//! values (as `kubectl create secret --dry-run` would), and ownerReferences are
//! left out unless the input carries a `metadata.uid`, because a reference to a
//! non-existent owner would make the garbage collector delete the objects.

use std::fmt::Write as _;

use crds::ChatCluster;
use kube::ResourceExt;
use serde::Deserialize;

use crate::children::desired;
use crate::error::{Error, Result};
use crate::secrets::Credentials;

/// Parses every ChatCluster document in `input` (other kinds are an error, so a
/// wrong file is noticed) and renders their children.
pub fn render(input: &str, source: &str) -> Result<String> {
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
        let (creds, _) = Credentials::resolve(cc, None);
        for child in desired(cc, &creds) {
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
    fn minimal_cluster_renders_every_child() {
        let out = render(MINIMAL, "t.yaml").unwrap();
        let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&out)
            .map(|d| serde_yaml::Value::deserialize(d).unwrap())
            .collect();
        assert_eq!(docs.len(), 10);
        for doc in &docs {
            assert_eq!(doc["metadata"]["namespace"].as_str(), Some("default"));
            assert!(doc["metadata"].get("ownerReferences").is_none());
        }
    }

    #[test]
    fn wrong_kind_is_a_clear_error() {
        let err = render("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n", "p.yaml").unwrap_err();
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
        let err = render(&input, "t.yaml").unwrap_err();
        assert!(err.to_string().contains("minReplicas"), "{err}");
    }

    #[test]
    fn garbage_and_empty_inputs_are_errors() {
        assert!(
            render("", "e.yaml")
                .unwrap_err()
                .to_string()
                .contains("no ChatCluster")
        );
        assert!(render("spec: [", "g.yaml").is_err());
        let typo = "apiVersion: chatback.dev/v1alpha1\nkind: ChatCluster\nmetadata: {name: x}\nspec: {server: {replicas: many}}\n";
        assert!(
            render(typo, "t.yaml")
                .unwrap_err()
                .to_string()
                .contains("t.yaml")
        );
    }
}
