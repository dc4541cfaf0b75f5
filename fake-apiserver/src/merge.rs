//! Patch semantics: JSON merge patch (RFC 7386), and the parts of server-side
//! apply the operator relies on.
//!
//! Server-side apply is modelled per field manager by remembering each
//! manager's last applied configuration. Applying again merges the new
//! configuration into the live object and removes the fields the manager
//! applied before but no longer does (unless another manager also applies
//! them). Fields two managers apply with different values conflict, unless
//! the apply is forced. The lists Kubernetes declares `x-kubernetes-list-type:
//! map` (containers, env, ports, volumes, volumeMounts, ...) are merged per
//! element by their key, so two managers can each own their own container or
//! env var; other lists are atomic. Paths into a map-list name the element as
//! `[key=value]`.

use serde_json::{Map, Value};

/// RFC 7386: objects merge recursively, `null` deletes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target_map) = target else {
        return;
    };
    for (key, value) in patch_map {
        if value.is_null() {
            target_map.remove(key);
        } else {
            merge_patch(target_map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Every leaf path of an applied configuration (objects are walked, anything
/// else, lists included, is a leaf).
pub fn leaf_paths(value: &Value) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    walk(value, &mut Vec::new(), &mut out);
    out
}

fn walk(value: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                prefix.push(key.clone());
                walk(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => {
            match prefix.last().and_then(|field| list_key(field, items)) {
                Some(key) => {
                    for item in items {
                        prefix.push(element(key, item));
                        walk(item, prefix, out);
                        prefix.pop();
                    }
                }
                None => out.push(prefix.clone()),
            }
        }
        _ => out.push(prefix.clone()),
    }
}

/// The key of a list merged per element (`x-kubernetes-list-type: map` in
/// the Kubernetes API), by the list's field name; None for an atomic list, or
/// one whose elements lack the key.
fn list_key(field: &str, items: &[Value]) -> Option<&'static str> {
    let key = match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => "name",
        "volumeMounts" => "mountPath",
        "ports" if items.iter().all(|i| i.get("containerPort").is_some()) => "containerPort",
        "ports" => "port",
        _ => return None,
    };
    items
        .iter()
        .all(|i| i.get(key).is_some_and(|k| !k.is_null()))
        .then_some(key)
}

/// The path segment naming a map-list element: `[key=value]`.
fn element(key: &str, item: &Value) -> String {
    let value = &item[key];
    let text = value
        .as_str()
        .map_or_else(|| value.to_string(), String::from);
    format!("[{key}={text}]")
}

/// The index of the element a `[key=value]` segment names in `items`.
fn find_element(items: &[Value], segment: &str) -> Option<usize> {
    let (key, _) = segment.strip_prefix('[')?.split_once('=')?;
    items.iter().position(|item| element(key, item) == segment)
}

pub fn get_path<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| match v {
        Value::Array(items) => items.get(find_element(items, key)?),
        _ => v.get(key),
    })
}

fn remove_path(value: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut current = value;
    for key in parents {
        let next = match current {
            Value::Array(items) => match find_element(items, key) {
                Some(i) => items.get_mut(i),
                None => None,
            },
            other => other.get_mut(key),
        };
        match next {
            Some(next) => current = next,
            None => return,
        }
    }
    match current {
        Value::Object(map) => {
            map.remove(last);
        }
        Value::Array(items) => {
            if let Some(i) = find_element(items, last) {
                items.remove(i);
            }
        }
        _ => {}
    }
}

/// Objects merge recursively, map-lists per element by key; anything else replaces.
fn deep_merge(target: &mut Value, source: &Value, field: &str) {
    match (target, source) {
        (Value::Object(t), Value::Object(s)) => {
            for (key, value) in s {
                match t.get_mut(key) {
                    Some(existing) => deep_merge(existing, value, key),
                    None => {
                        t.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (Value::Array(t), Value::Array(s))
            if list_key(field, t).is_some() && list_key(field, s) == list_key(field, t) =>
        {
            let key = list_key(field, s).unwrap_or_default();
            for item in s {
                match find_element(t, &element(key, item)) {
                    Some(i) => deep_merge(&mut t[i], item, ""),
                    None => t.push(item.clone()),
                }
            }
        }
        (target, source) => *target = source.clone(),
    }
}

/// Fields that `applied` sets differently from another manager's configuration.
pub fn conflicts(applied: &Value, others: &[(&str, &Value)]) -> Vec<String> {
    let mut found = Vec::new();
    for path in leaf_paths(applied) {
        let mine = get_path(applied, &path);
        for (manager, theirs) in others {
            if let Some(theirs) = get_path(theirs, &path)
                && Some(theirs) != mine
            {
                found.push(format!("conflict with \"{manager}\": .{}", path.join(".")));
            }
        }
    }
    found
}

/// Applies `applied` over `live` for one manager whose previous configuration was
/// `previous`; `others` are the other managers' configurations.
pub fn server_side_apply(
    live: &mut Value,
    previous: Option<&Value>,
    applied: &Value,
    others: &[&Value],
) {
    let owned = |path: &[String]| {
        get_path(applied, path).is_some() || others.iter().any(|o| get_path(o, path).is_some())
    };
    if let Some(previous) = previous {
        for path in leaf_paths(previous) {
            if owned(&path) {
                continue;
            }
            // A map-list element nobody applies any more goes whole, not field by field.
            let element_end = (1..=path.len())
                .find(|&end| path[end - 1].starts_with('[') && !owned(&path[..end]));
            remove_path(live, &path[..element_end.unwrap_or(path.len())]);
        }
    }
    deep_merge(live, applied, "");
}

/// Drops from an applied configuration every field whose live value is no
/// longer what it applied (another writer took the field over).
pub fn release_changed(config: &mut Value, live: &Value) {
    for path in leaf_paths(config) {
        if path.is_empty()
            || path
                .first()
                .is_some_and(|k| k == "apiVersion" || k == "kind")
        {
            continue;
        }
        if path.len() == 2 && path[0] == "metadata" && path[1] == "name" {
            continue;
        }
        if get_path(live, &path) != get_path(config, &path) {
            remove_path(config, &path);
        }
    }
}

/// Splits `.spec.server.replicas` into its keys.
pub fn json_path(path: &str) -> Vec<String> {
    path.trim_start_matches('.')
        .split('.')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// Sets a value at a path, creating objects on the way.
pub fn set_path(value: &mut Value, path: &[String], new: Value) {
    let Some((last, parents)) = path.split_last() else {
        *value = new;
        return;
    };
    let mut current = value;
    for key in parents {
        if !current.is_object() {
            *current = Value::Object(Map::new());
        }
        current = current
            .as_object_mut()
            .map(|m| m.entry(key.clone()).or_insert(Value::Object(Map::new())))
            .expect("made an object above");
    }
    if !current.is_object() {
        *current = Value::Object(Map::new());
    }
    if let Value::Object(map) = current {
        map.insert(last.clone(), new);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_deletes_with_null() {
        let mut v = json!({"a": {"b": 1, "c": 2}, "d": [1]});
        merge_patch(&mut v, &json!({"a": {"b": null, "e": 3}, "d": [2]}));
        assert_eq!(v, json!({"a": {"c": 2, "e": 3}, "d": [2]}));
    }

    #[test]
    fn apply_removes_fields_the_manager_dropped() {
        let mut live = json!({"spec": {"a": 1, "b": 2}, "status": {"x": 1}});
        let previous = json!({"spec": {"a": 1, "b": 2}});
        server_side_apply(&mut live, Some(&previous), &json!({"spec": {"a": 5}}), &[]);
        assert_eq!(live, json!({"spec": {"a": 5}, "status": {"x": 1}}));
    }

    #[test]
    fn map_lists_merge_by_key_between_managers() {
        let operator = json!({"spec": {"containers": [
            {"name": "app", "image": "a:1", "env": [{"name": "A", "value": "1"}], "ports": [{"containerPort": 80}]},
        ]}});
        let injector = json!({"spec": {"containers": [{"name": "sidecar", "image": "s:1"}]}});
        let mut live = json!({});
        server_side_apply(&mut live, None, &operator, &[]);
        server_side_apply(&mut live, None, &injector, &[&operator]);
        // The operator drops env A and adds B: its own element changes, the sidecar stays.
        let next = json!({"spec": {"containers": [
            {"name": "app", "image": "a:2", "env": [{"name": "B", "value": "2"}], "ports": [{"containerPort": 80}]},
        ]}});
        server_side_apply(&mut live, Some(&operator), &next, &[&injector]);
        assert_eq!(
            live,
            json!({"spec": {"containers": [
                {"name": "app", "image": "a:2", "env": [{"name": "B", "value": "2"}], "ports": [{"containerPort": 80}]},
                {"name": "sidecar", "image": "s:1"},
            ]}})
        );
        let path = json_path("spec.containers")
            .into_iter()
            .chain(["[name=sidecar]".to_string(), "image".to_string()])
            .collect::<Vec<_>>();
        assert_eq!(get_path(&live, &path), Some(&json!("s:1")));
        assert!(
            conflicts(&next, &[("injector", &injector)]).is_empty(),
            "different elements never conflict"
        );
        let rival = json!({"spec": {"containers": [{"name": "app", "image": "a:9"}]}});
        assert_eq!(conflicts(&next, &[("rival", &rival)]).len(), 1);
    }

    #[test]
    fn atomic_lists_are_replaced_whole() {
        let mut live = json!({"spec": {"args": ["a", "b"]}});
        let previous = live.clone();
        server_side_apply(
            &mut live,
            Some(&previous),
            &json!({"spec": {"args": ["c"]}}),
            &[],
        );
        assert_eq!(live, json!({"spec": {"args": ["c"]}}));
    }

    #[test]
    fn conflicting_values_are_reported() {
        let theirs = json!({"spec": {"a": 1}});
        let found = conflicts(&json!({"spec": {"a": 2}}), &[("kubectl", &theirs)]);
        assert_eq!(found.len(), 1);
        assert!(conflicts(&json!({"spec": {"a": 1}}), &[("kubectl", &theirs)]).is_empty());
    }

    #[test]
    fn paths_are_set_and_read() {
        let mut v = json!({});
        let path = json_path(".spec.server.replicas");
        set_path(&mut v, &path, json!(5));
        assert_eq!(get_path(&v, &path), Some(&json!(5)));
    }
}
