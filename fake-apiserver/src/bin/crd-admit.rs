//! `crd-admit --crd FILE...`: judges custom resources the way the fake API
//! server admits them, for `scripts/lint-k8s/validate.py`.
//!
//! The lint judges the repository's ChatClusters and ChatLoadTests (examples,
//! kustomize output, the invalid examples that must be rejected); the
//! operator's tests meet the fake's admission. One judge for both,
//! [`validation::strict_create`] (undeclared fields, defaults, the structural
//! schema, and the CEL rules through kube-cel), means they cannot disagree
//! about what a valid object is.
//!
//! Reads one JSON object a line on stdin; writes, for each, one line: a JSON
//! array of the errors a strict create would get (empty: admitted). Exits
//! non-zero only when it cannot do its job (an unreadable CRD or line).

use std::io::{BufRead, Write};
use std::process::ExitCode;

use fake_apiserver::resources::ResourceType;
use fake_apiserver::validation;
use serde_json::Value;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("crd-admit: {message}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    let types = crd_types(std::env::args().skip(1))?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (number, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.map_err(|e| format!("stdin: {e}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let object: Value = serde_json::from_str(&line)
            .map_err(|e| format!("stdin line {}: not JSON: {e}", number + 1))?;
        let errors: Vec<String> = match find(&types, &object) {
            Err(message) => vec![message],
            Ok(rt) => validation::strict_create(rt, &object)
                .err()
                .map(|e| e.message)
                .into_iter()
                .collect(),
        };
        let verdict = serde_json::to_string(&errors).map_err(|e| e.to_string())?;
        writeln!(out, "{verdict}").map_err(|e| format!("stdout: {e}"))?;
        out.flush().map_err(|e| format!("stdout: {e}"))?;
    }
    Ok(())
}

/// The served versions of every CRD in the `--crd FILE` arguments.
fn crd_types(mut args: impl Iterator<Item = String>) -> Result<Vec<ResourceType>, String> {
    let usage = "usage: crd-admit --crd FILE [--crd FILE]... < objects.jsonl";
    let mut types = Vec::new();
    while let Some(flag) = args.next() {
        let path = match (flag.as_str(), args.next()) {
            ("--crd", Some(path)) => path,
            _ => return Err(usage.into()),
        };
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        for document in serde_yaml::Deserializer::from_str(&text) {
            let crd: Value = serde::Deserialize::deserialize(document)
                .map_err(|e| format!("{path}: not YAML: {e}"))?;
            if crd["kind"] == "CustomResourceDefinition" {
                types.extend(ResourceType::from_crd(&crd));
            }
        }
    }
    if types.is_empty() {
        return Err(format!("no CustomResourceDefinition given; {usage}"));
    }
    Ok(types)
}

/// The resource type of `object`'s apiVersion and kind.
fn find<'a>(types: &'a [ResourceType], object: &Value) -> Result<&'a ResourceType, String> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    types
        .iter()
        .find(|t| t.api_version() == api_version && t.kind == kind)
        .ok_or_else(|| format!("no CRD given serves {kind} in {api_version}"))
}
