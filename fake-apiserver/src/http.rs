//! The fake's REST surface: URL routing, verbs, patch types, watch streams and
//! discovery, shaped like the real API server's so that kube::Client and
//! kubectl talk to it unmodified.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use std::convert::Infallible;

use futures::SinkExt;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::merge;
use super::resources::ResourceType;
use super::store::{ApiError, Applier, Change, Part, Propagation, Result, Selector};
use super::table;
use super::validation;
use super::{Request, Shared};

/// A parsed resource URL.
struct Target {
    rt: ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn error_response(error: &ApiError) -> Response {
    json_response(
        StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &error.to_status(),
    )
}

/// The single entry point: every request lands here, and is recorded.
pub async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let raw_query = raw_query.unwrap_or_default();
    let path = uri.path().trim_end_matches('/').to_string();
    let response = respond(shared.clone(), &method, &path, &raw_query, &headers, &body);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    shared.record(Request {
        method,
        path,
        query: raw_query,
        content_type,
        status: response.status().as_u16(),
    });
    response
}

fn respond(
    shared: Arc<Shared>,
    method: &Method,
    path: &str,
    raw_query: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let query: HashMap<String, String> = url::form_urlencoded::parse(raw_query.as_bytes())
        .into_owned()
        .collect();
    if let Some(response) = discovery(&shared, path) {
        return response;
    }
    let target = {
        let store = shared.store.lock().unwrap_or_else(|p| p.into_inner());
        match route(&store, path) {
            Ok(t) => t,
            Err(e) => return error_response(&e),
        }
    };
    if let Some(error) = shared.take_fault(method, &target.rt.plural) {
        return error_response(&error);
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type.contains("protobuf") || content_type.contains("cbor") {
        // Like a server without those codecs: clients fall back to JSON.
        return error_response(&ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format ({content_type}); accepted media types include: application/json, application/yaml, application/apply-patch+yaml, application/merge-patch+json, application/json-patch+json"
            ),
        ));
    }
    let strict = query.get("fieldValidation").is_some_and(|v| v == "Strict");
    if strict
        && matches!(*method, Method::POST | Method::PUT | Method::PATCH)
        && !is_scale(&target)
        && let Ok(sent) = parse_body(body)
        && let Err(error) = validation::strict(&target.rt, &sent)
    {
        return error_response(&error);
    }
    if target.subresource.as_deref() == Some("log") {
        return pod_log(&shared, &target, method, &query);
    }
    let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let as_table = table::wanted(accept) && !is_scale(&target);
    let result = match (method.clone(), target.name.is_some(), watch) {
        (Method::GET, false, true) => return watch_stream(shared, target, query),
        (Method::GET, false, false) => list(&shared, &target, &query).map(|(code, list)| {
            let items = list["items"].as_array().cloned().unwrap_or_default();
            let rv = list["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default();
            match as_table {
                true => (code, table::render(&target.rt, &items, rv)),
                false => (code, list),
            }
        }),
        (Method::GET, true, _) => get(&shared, &target).map(|(code, object)| match as_table {
            true => {
                let rv = object["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                (
                    code,
                    table::render(&target.rt, std::slice::from_ref(&object), &rv),
                )
            }
            false => (code, object),
        }),
        (Method::POST, false, _) => create(&shared, &target, body),
        (Method::PUT, true, _) => replace(&shared, &target, body),
        (Method::PATCH, true, _) => patch(&shared, &target, &query, headers, body),
        (Method::DELETE, true, _) => delete(&shared, &target, &query, body),
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported on {path}"),
        )),
    };
    match result {
        Ok((code, body)) => json_response(code, &body),
        Err(e) => error_response(&e),
    }
}

/// `GET pods/<name>/log`: plain text, `tailLines` honoured.
fn pod_log(
    shared: &Shared,
    target: &Target,
    method: &Method,
    query: &HashMap<String, String>,
) -> Response {
    if method != Method::GET {
        return error_response(&ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported on pods/log"),
        ));
    }
    let tail = match query.get("tailLines").map(|t| t.parse::<usize>()) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            return error_response(&ApiError::bad_request("tailLines must be a whole number"));
        }
    };
    let store = shared.store.lock().unwrap_or_else(|p| p.into_inner());
    match super::jobs::log(shared, &store, ns(target), name(target), tail) {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain")], text).into_response(),
        Err(e) => error_response(&e),
    }
}

/// `/api/v1/...` and `/apis/<group>/<version>/...`, namespaced or not.
fn route(store: &super::store::Store, path: &str) -> Result<Target> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!("the server could not find the requested resource ({path})"),
            ));
        }
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, rest @ ..] => (Some(ns.to_string()), {
            let mut v = vec![*plural];
            v.extend_from_slice(rest);
            v
        }),
        rest => (None, rest.to_vec()),
    };
    let (plural, name, subresource) = match rest.as_slice() {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(name.to_string()), None),
        [plural, name, sub] => (*plural, Some(name.to_string()), Some(sub.to_string())),
        _ => {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!("the server could not find the requested resource ({path})"),
            ));
        }
    };
    let rt = store.resource(group, version, plural).ok_or_else(|| {
        ApiError::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    })?;
    if rt.namespaced && name.is_some() && namespace.is_none() {
        return Err(ApiError::new(
            404,
            "NotFound",
            format!("{} is namespaced ({path})", rt.plural),
        ));
    }
    if let Some(sub) = &subresource {
        let known = (sub == "status" && rt.status)
            || (sub == "scale" && rt.scale.is_some())
            || (sub == "log" && rt.plural == "pods" && rt.group.is_empty());
        if !known {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!("no subresource {sub} on {}", rt.plural),
            ));
        }
    }
    Ok(Target {
        rt,
        namespace,
        name,
        subresource,
    })
}

fn ns(target: &Target) -> &str {
    target.namespace.as_deref().unwrap_or("")
}

fn name(target: &Target) -> &str {
    target.name.as_deref().unwrap_or("")
}

fn part(target: &Target) -> Part {
    match target.subresource.as_deref() {
        Some("status") => Part::Status,
        _ => Part::Main,
    }
}

fn is_scale(target: &Target) -> bool {
    target.subresource.as_deref() == Some("scale")
}

type Reply = Result<(StatusCode, Value)>;

fn list(shared: &Shared, target: &Target, query: &HashMap<String, String>) -> Reply {
    let selector = Selector::parse(
        query.get("labelSelector").map(String::as_str),
        query.get("fieldSelector").map(String::as_str),
    )?;
    let store = shared.store.lock().unwrap_or_else(|p| p.into_inner());
    let items = store.list(&target.rt, target.namespace.as_deref(), &selector);
    Ok((
        StatusCode::OK,
        json!({
            "apiVersion": target.rt.api_version(),
            "kind": format!("{}List", target.rt.kind),
            "metadata": {"resourceVersion": store.resource_version().to_string()},
            "items": items,
        }),
    ))
}

fn get(shared: &Shared, target: &Target) -> Reply {
    let store = shared.store.lock().unwrap_or_else(|p| p.into_inner());
    let object = if is_scale(target) {
        store.scale(&target.rt, ns(target), name(target))?
    } else {
        store.get(&target.rt, ns(target), name(target))?
    };
    Ok((StatusCode::OK, object))
}

fn parse_body(body: &Bytes) -> Result<Value> {
    serde_json::from_slice(body)
        .or_else(|_| serde_yaml::from_slice::<Value>(body))
        .map_err(|e| ApiError::bad_request(format!("the body is neither JSON nor YAML: {e}")))
}

fn create(shared: &Shared, target: &Target, body: &Bytes) -> Reply {
    let object = parse_body(body)?;
    let mut store = shared.store.lock().unwrap_or_else(|p| p.into_inner());
    let created = store.create(&target.rt, ns(target), object)?;
    Ok((StatusCode::CREATED, created))
}

fn replace(shared: &Shared, target: &Target, body: &Bytes) -> Reply {
    let object = parse_body(body)?;
    let mut store = shared.store.lock().unwrap_or_else(|p| p.into_inner());
    if is_scale(target) {
        return Ok((
            StatusCode::OK,
            store.set_scale(&target.rt, ns(target), name(target), &object)?,
        ));
    }
    let updated = store.update(&target.rt, ns(target), name(target), part(target), |live| {
        *live = object;
        Ok(())
    })?;
    Ok((StatusCode::OK, updated))
}

fn patch(
    shared: &Shared,
    target: &Target,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Reply {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    let mut store = shared.store.lock().unwrap_or_else(|p| p.into_inner());
    if content_type == "application/apply-patch+yaml" {
        let config = parse_body(body)?;
        let manager = query.get("fieldManager").cloned().unwrap_or_default();
        let force = query.get("force").is_some_and(|f| f == "true");
        if is_scale(target) {
            let mut scale = store.scale(&target.rt, ns(target), name(target))?;
            merge::merge_patch(&mut scale, &config);
            return Ok((
                StatusCode::OK,
                store.set_scale(&target.rt, ns(target), name(target), &scale)?,
            ));
        }
        let (object, created) = store.apply(
            &target.rt,
            ns(target),
            name(target),
            config,
            Applier {
                manager: &manager,
                force,
            },
            part(target),
        )?;
        let code = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        return Ok((code, object));
    }
    let patch = parse_body(body)?;
    let apply_patch = |live: &mut Value| -> Result<()> {
        match content_type.as_str() {
            "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                merge::merge_patch(live, &patch);
                Ok(())
            }
            "application/json-patch+json" => {
                let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                    .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
                for op in ops.0 {
                    // Like the real server, `test` of a missing path against null succeeds.
                    if let json_patch::PatchOperation::Test(test) = &op
                        && test.value.is_null()
                        && live.pointer(test.path.as_str()).is_none()
                    {
                        continue;
                    }
                    json_patch::patch(live, &[op]).map_err(|e| {
                        ApiError::new(
                            422,
                            "Invalid",
                            format!("the JSON patch could not be applied: {e}"),
                        )
                    })?;
                }
                Ok(())
            }
            other => Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!("unsupported patch type {other:?}"),
            )),
        }
    };
    if is_scale(target) {
        let mut scale = store.scale(&target.rt, ns(target), name(target))?;
        apply_patch(&mut scale)?;
        return Ok((
            StatusCode::OK,
            store.set_scale(&target.rt, ns(target), name(target), &scale)?,
        ));
    }
    let updated = store.update(
        &target.rt,
        ns(target),
        name(target),
        part(target),
        apply_patch,
    )?;
    Ok((StatusCode::OK, updated))
}

/// DELETE, with `propagationPolicy` from the DeleteOptions body (kube-rs,
/// kubectl) or the query string.
fn delete(
    shared: &Shared,
    target: &Target,
    query: &HashMap<String, String>,
    body: &Bytes,
) -> Reply {
    let options = if body.is_empty() {
        Value::Null
    } else {
        parse_body(body)?
    };
    let policy = options["propagationPolicy"]
        .as_str()
        .or(query.get("propagationPolicy").map(String::as_str))
        .map(Propagation::parse)
        .transpose()?
        .unwrap_or_default();
    let mut store = shared.store.lock().unwrap_or_else(|p| p.into_inner());
    let object = store.delete(&target.rt, ns(target), name(target), policy)?;
    Ok((StatusCode::OK, object))
}

/// `?watch=true`: the backlog after `resourceVersion`, then live changes, as
/// newline-delimited JSON events, until `timeoutSeconds` or the server stops.
fn watch_stream(shared: Arc<Shared>, target: Target, query: HashMap<String, String>) -> Response {
    let selector = match Selector::parse(
        query.get("labelSelector").map(String::as_str),
        query.get("fieldSelector").map(String::as_str),
    ) {
        Ok(s) => s,
        Err(e) => return error_response(&e),
    };
    let since: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let timeout = Duration::from_secs(
        query
            .get("timeoutSeconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(300),
    );
    let (initial, mut receiver) = {
        let store = shared.store.lock().unwrap_or_else(|p| p.into_inner());
        // resourceVersion 0 or unset: start with the current state, as ADDED events.
        let initial: Vec<Value> = if since == 0 {
            store
                .list(&target.rt, target.namespace.as_deref(), &selector)
                .into_iter()
                .map(|o| json!({"type": "ADDED", "object": o}))
                .collect()
        } else {
            Vec::new()
        };
        let start = if since == 0 {
            store.resource_version()
        } else {
            since
        };
        match store.watch(start) {
            Ok((backlog, receiver)) => {
                let mut events = initial;
                events.extend(
                    backlog
                        .iter()
                        .filter_map(|c| event_for(c, &target, &selector)),
                );
                (events, receiver)
            }
            Err(e) => {
                // The real server reports an expired resourceVersion inside the stream.
                let body = format!("{}\n", json!({"type": "ERROR", "object": e.to_status()}));
                return (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/json")],
                    body,
                )
                    .into_response();
            }
        }
    };
    let shutdown = shared.shutdown.clone();
    let (mut sender, body) =
        futures::channel::mpsc::channel::<std::result::Result<Bytes, Infallible>>(64);
    tokio::spawn(async move {
        for event in initial {
            if sender
                .send(Ok(Bytes::from(format!("{event}\n"))))
                .await
                .is_err()
            {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            let change = tokio::select! {
                () = &mut deadline => return,
                () = shutdown.cancelled() => return,
                received = receiver.recv() => match received {
                    Ok(change) => change,
                    // A lagging watcher is closed; the client re-watches from its last version.
                    Err(RecvError::Lagged(_) | RecvError::Closed) => return,
                },
            };
            if let Some(event) = event_for(&change, &target, &selector) {
                let line = Bytes::from(format!("{event}\n"));
                if sender.send(Ok(line)).await.is_err() {
                    return;
                }
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The event a watch on `target` with `selector` sees for `change`, if any.
/// As on the real server, an object that stops matching the selector is
/// DELETED for that watch, and one that starts matching is ADDED.
fn event_for(change: &Change, target: &Target, selector: &Selector) -> Option<Value> {
    let ours = change.group == target.rt.group
        && change.plural == target.rt.plural
        && target
            .namespace
            .as_deref()
            .is_none_or(|n| n == change.namespace);
    if !ours {
        return None;
    }
    let matches_now = selector.matches(&change.object);
    let matched_before = change.old.as_ref().is_some_and(|o| selector.matches(o));
    let type_ = match (change.type_, matched_before, matches_now) {
        ("MODIFIED", true, false) => "DELETED",
        ("MODIFIED", false, true) => "ADDED",
        (type_, _, true) => type_,
        _ => return None,
    };
    Some(json!({"type": type_, "object": change.object}))
}

/// `/version`, `/api`, `/apis`, `/api/v1`, `/apis/<group>/<version>`.
fn discovery(shared: &Shared, path: &str) -> Option<Response> {
    let store = shared.store.lock().unwrap_or_else(|p| p.into_inner());
    let types = store.types();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let body = match segments.as_slice() {
        ["version"] => json!({
            "major": "1", "minor": "33", "gitVersion": "v1.33.0-fake",
            "gitCommit": "fake", "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z",
            "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64",
        }),
        ["api"] => json!({
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
        }),
        ["apis"] => {
            let mut groups: Vec<(String, Vec<String>)> = Vec::new();
            for t in types.iter().filter(|t| !t.group.is_empty()) {
                match groups.iter_mut().find(|(g, _)| *g == t.group) {
                    Some((_, versions)) if !versions.contains(&t.version) => {
                        versions.push(t.version.clone())
                    }
                    Some(_) => {}
                    None => groups.push((t.group.clone(), vec![t.version.clone()])),
                }
            }
            let groups: Vec<Value> = groups
                .into_iter()
                .map(|(group, versions)| {
                    let versions: Vec<Value> = versions
                        .iter()
                        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
                        .collect();
                    json!({"name": group, "versions": versions, "preferredVersion": versions[0]})
                })
                .collect();
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        }
        ["api", version] => resource_list(types, "", version),
        ["apis", group, version] => resource_list(types, group, version),
        ["openapi", "v3"] => openapi_index(types),
        ["openapi", "v3", "api", version] => openapi_group_version(types, "", version),
        ["openapi", "v3", "apis", group, version] => openapi_group_version(types, group, version),
        _ => return None,
    };
    Some(json_response(StatusCode::OK, &body))
}

fn resource_list(types: &[ResourceType], group: &str, version: &str) -> Value {
    let resources: Vec<Value> = types
        .iter()
        .filter(|t| t.group == group && t.version == version)
        .flat_map(ResourceType::discovery_entries)
        .collect();
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
}

/// `/openapi/v3`: one document per group-version. kubectl reads them to learn
/// that PATCH accepts `fieldValidation`, and then leaves validation to the server.
fn openapi_index(types: &[ResourceType]) -> Value {
    let mut paths = serde_json::Map::new();
    for t in types {
        let key = if t.group.is_empty() {
            format!("api/{}", t.version)
        } else {
            format!("apis/{}/{}", t.group, t.version)
        };
        let url = json!({"serverRelativeURL": format!("/openapi/v3/{key}")});
        paths.insert(key, url);
    }
    json!({"paths": paths})
}

fn openapi_group_version(types: &[ResourceType], group: &str, version: &str) -> Value {
    let mut paths = serde_json::Map::new();
    for t in types
        .iter()
        .filter(|t| t.group == group && t.version == version)
    {
        let prefix = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let scope = if t.namespaced {
            "/namespaces/{namespace}"
        } else {
            ""
        };
        let patch = json!({
            "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": t.kind},
            "parameters": [
                {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
                {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                {"name": "force", "in": "query", "schema": {"type": "boolean"}},
            ],
            "responses": {"200": {"description": "OK"}},
        });
        paths.insert(
            format!("{prefix}{scope}/{}/{{name}}", t.plural),
            json!({"patch": patch}),
        );
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (fake)", "version": "v1.33.0"},
        "paths": paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn change(type_: &'static str, old: Option<&str>, new: &str) -> Change {
        let object = |app: &str| json!({"metadata": {"name": "a", "labels": {"app": app}}});
        Change {
            rv: 2,
            group: String::new(),
            plural: "configmaps".into(),
            namespace: "ns".into(),
            type_,
            object: object(new),
            old: old.map(object),
        }
    }

    #[test]
    fn a_selector_watch_sees_objects_leave_and_enter_its_selection() {
        let store = Store::new();
        let target = Target {
            rt: store.resource("", "v1", "configmaps").unwrap(),
            namespace: Some("ns".into()),
            name: None,
            subresource: None,
        };
        let selector = Selector::parse(Some("app=x"), None).unwrap();
        let seen = |c: Change| event_for(&c, &target, &selector).map(|e| e["type"].clone());
        assert_eq!(
            seen(change("MODIFIED", Some("x"), "y")),
            Some(json!("DELETED"))
        );
        assert_eq!(
            seen(change("MODIFIED", Some("y"), "x")),
            Some(json!("ADDED"))
        );
        assert_eq!(
            seen(change("MODIFIED", Some("x"), "x")),
            Some(json!("MODIFIED"))
        );
        assert_eq!(seen(change("MODIFIED", Some("y"), "z")), None);
        assert_eq!(seen(change("ADDED", None, "y")), None);
        assert_eq!(seen(change("DELETED", None, "x")), Some(json!("DELETED")));
    }
}
