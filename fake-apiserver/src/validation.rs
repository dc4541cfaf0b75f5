//! Admission of custom resources against their CRD's openAPIV3Schema, as the
//! real API server does it: unknown fields are pruned, then the structural
//! rules (types, enums, bounds, lengths, required fields) and the
//! `x-kubernetes-validations` CEL rules (evaluated by kube-cel, which
//! implements Kubernetes' CEL libraries) must hold. A failing object is
//! rejected whole with 422 Invalid and the rules' messages, never half-applied.

use serde_json::{Map, Value};

use super::resources::{ResourceType, apply_defaults};
use super::store::ApiError;

/// What a strict create of the custom resource `object` meets, in the API
/// server's order: undeclared fields (see [`strict`]), then defaulting and
/// [`admit`]. Returns the object as it would be stored. `crd-admit` runs this
/// for `scripts/lint-k8s`, so the lint judges the repository's custom
/// resources exactly as the fake judges them in the tests.
pub fn strict_create(rt: &ResourceType, object: &Value) -> Result<Value, ApiError> {
    strict(rt, object)?;
    let mut object = object.clone();
    if let Some(schema) = &rt.schema {
        apply_defaults(&mut object, schema);
    }
    admit(rt, &mut object, None)?;
    Ok(object)
}

/// `fieldValidation=Strict` (kubectl's default): a request body with fields
/// the schema does not declare is refused with 400, naming each one.
pub fn strict(rt: &ResourceType, body: &Value) -> Result<(), ApiError> {
    let unknown = unknown_fields(rt, body);
    if unknown.is_empty() {
        return Ok(());
    }
    let fields: Vec<String> = unknown
        .iter()
        .map(|f| format!(".{f}: field not declared in schema"))
        .collect();
    Err(ApiError::bad_request(fields.join(", ")))
}

/// Prunes and validates `object` (already defaulted) of a custom resource type.
pub fn admit(rt: &ResourceType, object: &mut Value, old: Option<&Value>) -> Result<(), ApiError> {
    let Some(schema) = &rt.schema else {
        return Ok(());
    };
    if let Value::Object(map) = object {
        for (key, value) in map.iter_mut() {
            if !matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                prune(value, &schema["properties"][key]);
            }
        }
        map.retain(|key, _| {
            matches!(key.as_str(), "apiVersion" | "kind" | "metadata")
                || schema["properties"].get(key).is_some()
        });
    }
    let mut errors = Vec::new();
    if let Value::Object(map) = &*object {
        check_object(map, schema, "", &mut errors);
    }
    if errors.is_empty()
        && let Err(failures) = kube_cel::Validator::new().validate(schema, object, old)
    {
        errors.extend(failures.iter().map(|f| {
            let path = if f.field_path.is_empty() {
                "<root>".to_string()
            } else {
                f.field_path.clone()
            };
            format!("{path}: Invalid value: {}", f.message)
        }));
    }
    if errors.is_empty() {
        return Ok(());
    }
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    Err(ApiError::new(
        422,
        "Invalid",
        format!(
            "{}.{} \"{name}\" is invalid: {}",
            rt.kind,
            rt.group,
            errors.join(", ")
        ),
    ))
}

/// The fields of a request body that the schema does not declare, for
/// `fieldValidation=Strict` (what kubectl sends): rejected instead of pruned.
fn unknown_fields(rt: &ResourceType, body: &Value) -> Vec<String> {
    let mut found = Vec::new();
    if let (Some(schema), Value::Object(map)) = (&rt.schema, body) {
        for (key, value) in map {
            match schema["properties"].get(key) {
                Some(property) => collect_unknown(value, property, key, &mut found),
                None if !matches!(key.as_str(), "apiVersion" | "kind" | "metadata") => {
                    found.push(key.clone());
                }
                None => {}
            }
        }
    }
    found
}

fn collect_unknown(value: &Value, schema: &Value, path: &str, found: &mut Vec<String>) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let child_schema = schema["properties"]
                    .get(key)
                    .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object()));
                match child_schema {
                    Some(s) => collect_unknown(child, s, &format!("{path}.{key}"), found),
                    None => found.push(format!("{path}.{key}")),
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect_unknown(item, &schema["items"], &format!("{path}[{i}]"), found);
            }
        }
        _ => {}
    }
}

/// Drops fields the schema does not know (structural pruning).
fn prune(value: &mut Value, schema: &Value) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    match value {
        Value::Object(map) => {
            if let Some(properties) = schema["properties"].as_object() {
                map.retain(|key, _| properties.contains_key(key));
                for (key, child) in map.iter_mut() {
                    prune(child, &properties[key]);
                }
            } else if let Some(additional) =
                schema.get("additionalProperties").filter(|a| a.is_object())
            {
                for child in map.values_mut() {
                    prune(child, additional);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                prune(item, &schema["items"]);
            }
        }
        _ => {}
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The structural (non-CEL) rules of one value.
fn check(value: &Value, schema: &Value, path: &str, errors: &mut Vec<String>) {
    if value.is_null() {
        if schema.get("nullable") != Some(&Value::Bool(true)) {
            errors.push(format!("{path}: Invalid value: \"null\": must not be null"));
        }
        return;
    }
    let actual = type_name(value);
    let int_or_string = schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    if int_or_string {
        if !matches!(actual, "integer" | "string") {
            errors.push(format!(
                "{path}: Invalid value: must be an integer or a string"
            ));
        }
    } else if let Some(expected) = schema["type"].as_str() {
        let ok = expected == actual || (expected == "number" && actual == "integer");
        if !ok {
            errors.push(format!(
                "{path}: Invalid value: \"{actual}\": {path} in body must be of type {expected}"
            ));
            return;
        }
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        let allowed: Vec<String> = allowed.iter().map(Value::to_string).collect();
        errors.push(format!(
            "{path}: Unsupported value: {value}: supported values: {}",
            allowed.join(", ")
        ));
    }
    if let Some(number) = value.as_f64() {
        if let Some(min) = schema["minimum"].as_f64()
            && number < min
        {
            errors.push(format!("{path}: Invalid value: {value}: {path} in body should be greater than or equal to {min}"));
        }
        if let Some(max) = schema["maximum"].as_f64()
            && number > max
        {
            errors.push(format!("{path}: Invalid value: {value}: {path} in body should be less than or equal to {max}"));
        }
    }
    if let Some(text) = value.as_str() {
        let length = text.chars().count() as u64;
        if let Some(max) = schema["maxLength"].as_u64()
            && length > max
        {
            errors.push(format!("{path}: Too long: may not be longer than {max}"));
        }
        if let Some(min) = schema["minLength"].as_u64()
            && length < min
        {
            errors.push(format!(
                "{path}: Invalid value: {value}: {path} in body should be at least {min} chars long"
            ));
        }
    }
    match value {
        Value::Object(map) => check_object(map, schema, path, errors),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check(item, &schema["items"], &format!("{path}[{i}]"), errors);
            }
        }
        _ => {}
    }
}

/// `path.key`, or `key` at the root.
fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn check_object(map: &Map<String, Value>, schema: &Value, path: &str, errors: &mut Vec<String>) {
    for required in schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !map.contains_key(required) {
            errors.push(format!("{}: Required value", join(path, required)));
        }
    }
    for (key, child) in map {
        let child_schema = schema["properties"]
            .get(key)
            .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object()));
        if let Some(child_schema) = child_schema {
            check(child, child_schema, &join(path, key), errors);
        }
    }
}

/// The StatefulSet spec fields an update may change; the real API server
/// forbids changing any other (volumeClaimTemplates, selector, serviceName...).
const STATEFULSET_MUTABLE: &[&str] = &[
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
];

/// The immutable fields of built-in kinds, as the real registry checks them
/// on update: a changed one is rejected whole with 422 Invalid.
pub fn immutable(rt: &ResourceType, new: &Value, old: &Value) -> Result<(), ApiError> {
    let name = new["metadata"]["name"].as_str().unwrap_or_default();
    let invalid = |detail: String| {
        let kind = if rt.group.is_empty() {
            rt.kind.clone()
        } else {
            format!("{}.{}", rt.kind, rt.group)
        };
        Err(ApiError::new(
            422,
            "Invalid",
            format!("{kind} \"{name}\" is invalid: {detail}"),
        ))
    };
    let (new_spec, old_spec) = (&new["spec"], &old["spec"]);
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("apps", "statefulsets") => {
            let frozen = |spec: &Value| -> Map<String, Value> {
                spec.as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, _)| !STATEFULSET_MUTABLE.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            };
            if frozen(new_spec) != frozen(old_spec) {
                return invalid(
                    "spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden".into(),
                );
            }
        }
        ("apps", "deployments") if new_spec["selector"] != old_spec["selector"] => {
            return invalid(format!(
                "spec.selector: Invalid value: {}: field is immutable",
                new_spec["selector"]
            ));
        }
        ("", "persistentvolumeclaims") => {
            let without_requests = |spec: &Value| {
                let mut spec = spec.clone();
                if let Some(resources) = spec["resources"].as_object_mut() {
                    resources.remove("requests");
                }
                spec
            };
            if without_requests(new_spec) != without_requests(old_spec) {
                return invalid(
                    "spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims".into(),
                );
            }
        }
        _ => {}
    }
    Ok(())
}
