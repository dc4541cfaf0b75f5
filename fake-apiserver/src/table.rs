//! Server-side printing: `kubectl get` asks for a `meta.k8s.io/v1` Table and
//! shows its columns. Custom resources get their CRD's printer columns (so
//! `kubectl get cc` shows Phase, Replicas, Ready, Endpoint, Age); other kinds
//! get Name and Age.

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::merge::{get_path, json_path};
use super::resources::ResourceType;

/// Whether the client asked for a Table.
pub fn wanted(accept: &str) -> bool {
    accept.contains("as=Table")
}

/// The Table of `objects` (a list's items, or the one object of a get).
pub fn render(rt: &ResourceType, objects: &[Value], resource_version: &str) -> Value {
    let columns: Vec<Value> = if rt.printer_columns.is_empty() {
        vec![json!({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"})]
    } else {
        rt.printer_columns.clone()
    };
    let mut definitions = vec![json!({
        "name": "Name", "type": "string", "format": "name", "priority": 0,
        "description": "Name must be unique within a namespace.",
    })];
    definitions.extend(columns.iter().map(|c| {
        json!({
            "name": c["name"], "type": c["type"], "format": c.get("format").cloned().unwrap_or(json!("")),
            "priority": c.get("priority").cloned().unwrap_or(json!(0)),
            "description": c.get("description").cloned().unwrap_or(json!("")),
        })
    }));
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let mut cells = vec![object["metadata"]["name"].clone()];
            cells.extend(columns.iter().map(|c| cell(object, c)));
            json!({
                "cells": cells,
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": object["metadata"],
                },
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

fn cell(object: &Value, column: &Value) -> Value {
    let path = json_path(column["jsonPath"].as_str().unwrap_or_default());
    let value = get_path(object, &path).cloned().unwrap_or(Value::Null);
    match (column["type"].as_str(), value.as_str()) {
        (Some("date"), Some(timestamp)) => json!(age(timestamp)),
        _ => value,
    }
}

/// `5s`, `3m`, `2h`, `4d`, like kubectl's ages.
fn age(timestamp: &str) -> String {
    let Ok(then) = timestamp.parse::<Timestamp>() else {
        return "<invalid>".into();
    };
    let seconds = Timestamp::now()
        .as_second()
        .saturating_sub(then.as_second())
        .max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}
