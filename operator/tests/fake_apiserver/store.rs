//! The fake's object store: what etcd plus the API server's registry logic do.
//!
//! Objects are JSON, keyed by group/resource/namespace/name. Every write that
//! changes an object bumps the global resourceVersion and appends a watch
//! event to a bounded log, so a watch can resume from any recent
//! resourceVersion (older ones get 410 Gone, as from the real server). A write
//! that changes nothing is a no-op, exactly like the real server: otherwise a
//! controller that applies unchanged children would wake itself up forever.
//!
//! The registry behaviour modelled: metadata the server owns (uid,
//! creationTimestamp, generation, resourceVersion), generation bumps on spec
//! changes, status/scale subresources, finalizers with deletionTimestamp,
//! ownerReference garbage collection, CRD registration and schema defaulting.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::merge::{self, json_path};
use super::resources::{ResourceType, apply_defaults};
use super::validation;

/// The watch log's length: watches resuming from further back get 410 Gone.
const LOG_LEN: usize = 20_000;

/// An API error, rendered as a `Status` object.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
        }
    }

    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        let resource = if rt.group.is_empty() {
            rt.plural.clone()
        } else {
            format!("{}.{}", rt.plural, rt.group)
        };
        Self::new(404, "NotFound", format!("{resource} \"{name}\" not found"))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn to_status(&self) -> Value {
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        })
    }
}

pub type Result<T> = std::result::Result<T, ApiError>;

/// A watch's backlog and its live feed.
pub type Subscription = (Vec<Arc<Change>>, broadcast::Receiver<Arc<Change>>);

/// The field manager of a server-side apply, and whether it forces conflicts.
pub struct Applier<'a> {
    pub manager: &'a str,
    pub force: bool,
}

/// One watch event.
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub group: String,
    pub plural: String,
    pub namespace: String,
    pub type_: &'static str,
    pub object: Value,
}

/// Which part of an object a write may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Main,
    Status,
}

struct Stored {
    object: Value,
    /// Each field manager's last applied configuration (server-side apply).
    applied: BTreeMap<String, Value>,
}

type Key = (String, String, String, String);

pub struct Store {
    types: Vec<ResourceType>,
    objects: BTreeMap<Key, Stored>,
    rv: u64,
    uid_seq: u64,
    log: VecDeque<Arc<Change>>,
    tx: broadcast::Sender<Arc<Change>>,
}

/// A parsed label or field selector: every requirement must hold.
#[derive(Clone, Debug, Default)]
pub struct Selector {
    labels: Vec<(String, Requirement)>,
    fields: Vec<(String, String)>,
}

#[derive(Clone, Debug)]
enum Requirement {
    Equals(String),
    NotEquals(String),
    Exists,
    NotExists,
}

impl Selector {
    pub fn parse(labels: Option<&str>, fields: Option<&str>) -> Result<Self> {
        let mut selector = Selector::default();
        for term in labels
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            let requirement = if let Some((k, v)) = term.split_once("!=") {
                (
                    k.trim().to_string(),
                    Requirement::NotEquals(v.trim().to_string()),
                )
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (
                    k.trim().to_string(),
                    Requirement::Equals(v.trim().to_string()),
                )
            } else if let Some(k) = term.strip_prefix('!') {
                (k.trim().to_string(), Requirement::NotExists)
            } else if term.contains(' ') {
                return Err(ApiError::bad_request(format!(
                    "unsupported label selector term {term:?}"
                )));
            } else {
                (term.to_string(), Requirement::Exists)
            };
            selector.labels.push(requirement);
        }
        for term in fields
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            let (k, v) = term
                .split_once("==")
                .or_else(|| term.split_once('='))
                .ok_or_else(|| {
                    ApiError::bad_request(format!("unsupported field selector {term:?}"))
                })?;
            if k != "metadata.name" && k != "metadata.namespace" {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {k}"
                )));
            }
            selector.fields.push((k.to_string(), v.to_string()));
        }
        Ok(selector)
    }

    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label_ok = self.labels.iter().all(|(key, req)| {
            let value = labels.get(key).and_then(Value::as_str);
            match req {
                Requirement::Equals(v) => value == Some(v.as_str()),
                Requirement::NotEquals(v) => value != Some(v.as_str()),
                Requirement::Exists => value.is_some(),
                Requirement::NotExists => value.is_none(),
            }
        });
        let field_ok = self.fields.iter().all(|(key, v)| {
            let field = key.trim_start_matches("metadata.");
            object["metadata"][field].as_str() == Some(v.as_str())
        });
        label_ok && field_ok
    }
}

fn now() -> String {
    Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .unwrap_or(Timestamp::now())
        .to_string()
}

impl Store {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(LOG_LEN);
        Self {
            types: ResourceType::builtins(),
            objects: BTreeMap::new(),
            rv: 1,
            uid_seq: 0,
            log: VecDeque::new(),
            tx,
        }
    }

    pub fn types(&self) -> &[ResourceType] {
        &self.types
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// The resource type serving `group/version/plural`.
    pub fn resource(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
            .cloned()
    }

    fn type_of(&self, group: &str, plural: &str) -> Option<ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.plural == plural)
            .cloned()
    }

    fn key(rt: &ResourceType, namespace: &str, name: &str) -> Key {
        let ns = if rt.namespaced { namespace } else { "" };
        (
            rt.group.clone(),
            rt.plural.clone(),
            ns.to_string(),
            name.to_string(),
        )
    }

    pub fn list(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        selector: &Selector,
    ) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((g, p, ns, _), _)| {
                *g == rt.group && *p == rt.plural && namespace.is_none_or(|n| n == ns)
            })
            .map(|(_, s)| s.object.clone())
            .filter(|o| selector.matches(o))
            .collect()
    }

    pub fn get(&self, rt: &ResourceType, namespace: &str, name: &str) -> Result<Value> {
        self.objects
            .get(&Self::key(rt, namespace, name))
            .map(|s| s.object.clone())
            .ok_or_else(|| ApiError::not_found(rt, name))
    }

    /// The watch backlog after `since` plus a live receiver, taken atomically.
    pub fn watch(&self, since: u64) -> Result<Subscription> {
        if let Some(oldest) = self.log.front()
            && since + 1 < oldest.rv
        {
            return Err(ApiError::new(
                410,
                "Expired",
                format!("too old resource version: {since}"),
            ));
        }
        let backlog = self.log.iter().filter(|c| c.rv > since).cloned().collect();
        Ok((backlog, self.tx.subscribe()))
    }

    fn emit(&mut self, rt: &ResourceType, namespace: &str, type_: &'static str, object: Value) {
        let change = Arc::new(Change {
            rv: self.rv,
            group: rt.group.clone(),
            plural: rt.plural.clone(),
            namespace: namespace.to_string(),
            type_,
            object,
        });
        if self.log.len() == LOG_LEN {
            self.log.pop_front();
        }
        self.log.push_back(change.clone());
        let _ = self.tx.send(change);
    }

    fn next_rv(&mut self) -> String {
        self.rv += 1;
        self.rv.to_string()
    }

    fn next_uid(&mut self) -> String {
        self.uid_seq += 1;
        let salt: u32 = rand::random();
        format!("{salt:08x}-0000-4000-8000-{:012x}", self.uid_seq)
    }

    /// Fills in what the server owns and checks the identity of a new object.
    fn admit_new(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        mut object: Value,
    ) -> Result<(Key, Value)> {
        if !object.is_object() {
            return Err(ApiError::bad_request("the body must be an object"));
        }
        let api_version = object["apiVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        if (!api_version.is_empty() && api_version != rt.api_version())
            || (!kind.is_empty() && kind != rt.kind)
        {
            return Err(ApiError::bad_request(format!(
                "the body is {api_version} {kind}, but the URL is for {} {}",
                rt.api_version(),
                rt.kind
            )));
        }
        object["apiVersion"] = json!(rt.api_version());
        object["kind"] = json!(rt.kind);
        if !object["metadata"].is_object() {
            object["metadata"] = json!({});
        }
        let name = match object["metadata"]["name"].as_str() {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => match object["metadata"]["generateName"].as_str() {
                Some(prefix) => {
                    let suffix: u32 = rand::random();
                    format!("{prefix}{:05x}", suffix & 0xfffff)
                }
                None => {
                    return Err(ApiError::new(
                        422,
                        "Invalid",
                        "metadata.name: Required value",
                    ));
                }
            },
        };
        if let Some(ns) = object["metadata"]["namespace"].as_str()
            && rt.namespaced
            && ns != namespace
        {
            return Err(ApiError::bad_request(format!(
                "the namespace of the object ({ns}) does not match the namespace of the request ({namespace})"
            )));
        }
        let key = Self::key(rt, namespace, &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", rt.plural),
            ));
        }
        let meta = &mut object["metadata"];
        meta["name"] = json!(name);
        if rt.namespaced {
            meta["namespace"] = json!(namespace);
        } else if let Some(m) = meta.as_object_mut() {
            m.remove("namespace");
        }
        meta["uid"] = json!(self.next_uid());
        meta["creationTimestamp"] = json!(now());
        meta["generation"] = json!(1);
        if let Some(m) = meta.as_object_mut() {
            m.remove("deletionTimestamp");
            m.remove("resourceVersion");
        }
        if rt.status
            && let Some(m) = object.as_object_mut()
        {
            m.remove("status");
        }
        Ok((key, object))
    }

    /// Registry hooks run on every stored version of an object.
    fn prepare(&mut self, rt: &ResourceType, object: &mut Value) {
        if let Some(schema) = &rt.schema {
            apply_defaults(object, schema);
        }
        let is_crd = rt.group == "apiextensions.k8s.io" && rt.plural == "customresourcedefinitions";
        if is_crd && object["status"].get("conditions").is_none() {
            object["status"] = json!({
                "acceptedNames": object["spec"]["names"],
                "storedVersions": object["spec"]["versions"].as_array().into_iter().flatten()
                    .filter(|v| v["storage"] == json!(true)).map(|v| v["name"].clone()).collect::<Vec<_>>(),
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now()},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now()},
                ],
            });
        }
        if is_crd {
            let new_types = ResourceType::from_crd(object);
            self.types.retain(|t| {
                !new_types
                    .iter()
                    .any(|n| n.group == t.group && n.plural == t.plural)
            });
            self.types.extend(new_types);
        }
    }

    pub fn create(&mut self, rt: &ResourceType, namespace: &str, body: Value) -> Result<Value> {
        let (key, mut object) = self.admit_new(rt, namespace, body)?;
        self.prepare(rt, &mut object);
        validation::admit(rt, &mut object, None)?;
        object["metadata"]["resourceVersion"] = json!(self.next_rv());
        self.objects.insert(
            key,
            Stored {
                object: object.clone(),
                applied: BTreeMap::new(),
            },
        );
        self.emit(rt, namespace, "ADDED", object.clone());
        Ok(object)
    }

    /// Server-side apply. Returns the object and whether it was created.
    pub fn apply(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        mut config: Value,
        applier: Applier<'_>,
        part: Part,
    ) -> Result<(Value, bool)> {
        let Applier { manager, force } = applier;
        if manager.is_empty() {
            return Err(ApiError::bad_request(
                "fieldManager is required for apply requests",
            ));
        }
        if config["metadata"]["name"].as_str() != Some(name) {
            return Err(ApiError::bad_request(
                "the name of the object does not match the name in the URL",
            ));
        }
        for field in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "generation",
            "managedFields",
        ] {
            if let Some(m) = config["metadata"].as_object_mut() {
                m.remove(field);
            }
        }
        let key = Self::key(rt, namespace, name);
        if !self.objects.contains_key(&key) {
            if part == Part::Status {
                return Err(ApiError::not_found(rt, name));
            }
            let object = self.create(rt, namespace, config.clone())?;
            if let Some(stored) = self.objects.get_mut(&key) {
                stored.applied.insert(manager.to_string(), config);
            }
            return Ok((object, true));
        }
        let stored = &self.objects[&key];
        let others: Vec<(&str, &Value)> = stored
            .applied
            .iter()
            .filter(|(m, _)| m.as_str() != manager)
            .map(|(m, v)| (m.as_str(), v))
            .collect();
        if !force {
            let found = merge::conflicts(&config, &others);
            if !found.is_empty() {
                return Err(ApiError::new(
                    409,
                    "Conflict",
                    format!(
                        "Apply failed with {} conflicts: {}",
                        found.len(),
                        found.join("; ")
                    ),
                ));
            }
        }
        let other_configs: Vec<&Value> = others.iter().map(|(_, v)| *v).collect();
        let mut updated = stored.object.clone();
        merge::server_side_apply(
            &mut updated,
            stored.applied.get(manager),
            &config,
            &other_configs,
        );
        let object = self.commit(rt, namespace, name, updated, part)?;
        if let Some(stored) = self.objects.get_mut(&key) {
            stored.applied.insert(manager.to_string(), config);
        }
        Ok((object, false))
    }

    /// Any other write: `change` edits a copy of the live object.
    pub fn update(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        part: Part,
        change: impl FnOnce(&mut Value) -> Result<()>,
    ) -> Result<Value> {
        let mut updated = self.get(rt, namespace, name)?;
        change(&mut updated)?;
        self.commit(rt, namespace, name, updated, part)
    }

    /// Stores a changed object: keeps server-owned metadata, confines the write
    /// to its part, bumps generation on spec changes, and finishes deletion
    /// once the last finalizer is gone.
    fn commit(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        mut new: Value,
        part: Part,
    ) -> Result<Value> {
        let key = Self::key(rt, namespace, name);
        let old = self.objects[&key].object.clone();
        let sent_rv = new["metadata"]["resourceVersion"]
            .as_str()
            .map(String::from);
        if let Some(sent) = sent_rv
            && Some(sent.as_str()) != old["metadata"]["resourceVersion"].as_str()
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    rt.plural
                ),
            ));
        }
        for field in [
            "uid",
            "creationTimestamp",
            "name",
            "namespace",
            "deletionTimestamp",
            "generation",
            "resourceVersion",
        ] {
            match old["metadata"].get(field) {
                Some(v) => new["metadata"][field] = v.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(field);
                    }
                }
            }
        }
        new["apiVersion"] = json!(rt.api_version());
        new["kind"] = json!(rt.kind);
        match part {
            Part::Status => {
                let status = new.get("status").cloned();
                new = old.clone();
                match status {
                    Some(s) if !s.is_null() => new["status"] = s,
                    _ => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            Part::Main if rt.status => match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            },
            Part::Main => {}
        }
        self.prepare(rt, &mut new);
        validation::admit(rt, &mut new, Some(&old))?;
        if new == old {
            return Ok(old);
        }
        let content = |v: &Value| {
            let mut v = v.clone();
            if let Some(m) = v.as_object_mut() {
                m.remove("metadata");
                m.remove("status");
            }
            v
        };
        if content(&new) != content(&old) {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
            new["metadata"]["generation"] = json!(generation + 1);
        }
        new["metadata"]["resourceVersion"] = json!(self.next_rv());
        if let Some(stored) = self.objects.get_mut(&key) {
            stored.object = new.clone();
        }
        let deleting = new["metadata"].get("deletionTimestamp").is_some();
        let finalizers_left = new["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if deleting && !finalizers_left {
            self.remove(rt, namespace, name);
        } else {
            self.emit(rt, namespace, "MODIFIED", new.clone());
        }
        Ok(new)
    }

    /// DELETE: marks objects with finalizers, removes the others, then lets the
    /// garbage collector cascade over ownerReferences.
    pub fn delete(&mut self, rt: &ResourceType, namespace: &str, name: &str) -> Result<Value> {
        let key = Self::key(rt, namespace, name);
        let object = self.get(rt, namespace, name)?;
        let has_finalizers = object["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if !has_finalizers {
            return Ok(self.remove(rt, namespace, name).unwrap_or(object));
        }
        if object["metadata"].get("deletionTimestamp").is_some() {
            return Ok(object);
        }
        let mut marked = object;
        marked["metadata"]["deletionTimestamp"] = json!(now());
        marked["metadata"]["resourceVersion"] = json!(self.next_rv());
        if let Some(stored) = self.objects.get_mut(&key) {
            stored.object = marked.clone();
        }
        self.emit(rt, namespace, "MODIFIED", marked.clone());
        Ok(marked)
    }

    /// Removes an object for good and collects its dependents.
    fn remove(&mut self, rt: &ResourceType, namespace: &str, name: &str) -> Option<Value> {
        let stored = self.objects.remove(&Self::key(rt, namespace, name))?;
        let mut object = stored.object;
        object["metadata"]["resourceVersion"] = json!(self.next_rv());
        self.emit(rt, namespace, "DELETED", object.clone());
        if rt.group == "apiextensions.k8s.io" && rt.plural == "customresourcedefinitions" {
            for gone in ResourceType::from_crd(&object) {
                self.types
                    .retain(|t| !(t.group == gone.group && t.plural == gone.plural));
                let keys: Vec<Key> = self
                    .objects
                    .keys()
                    .filter(|(g, p, _, _)| *g == gone.group && *p == gone.plural)
                    .cloned()
                    .collect();
                for (_, _, ns, n) in keys {
                    self.remove(&gone, &ns, &n);
                }
            }
        }
        if let Some(uid) = object["metadata"]["uid"].as_str() {
            self.collect_dependents(uid);
        }
        Some(object)
    }

    /// The garbage collector: deletes every object owned by `uid`.
    fn collect_dependents(&mut self, uid: &str) {
        let dependents: Vec<Key> = self
            .objects
            .iter()
            .filter(|(_, s)| {
                s.object["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for (group, plural, namespace, name) in dependents {
            if let Some(rt) = self.type_of(&group, &plural) {
                let _ = self.delete(&rt, &namespace, &name);
            }
        }
    }

    /// The autoscaling/v1 Scale of an object with a scale subresource.
    pub fn scale(&self, rt: &ResourceType, namespace: &str, name: &str) -> Result<Value> {
        let paths = rt
            .scale
            .as_ref()
            .ok_or_else(|| ApiError::not_found(rt, &format!("{name}/scale")))?;
        let object = self.get(rt, namespace, name)?;
        let spec_replicas = merge::get_path(&object, &json_path(&paths.spec_replicas))
            .cloned()
            .unwrap_or(json!(0));
        let status_replicas = merge::get_path(&object, &json_path(&paths.status_replicas))
            .cloned()
            .unwrap_or(json!(0));
        let selector = match &paths.selector {
            Some(path) => merge::get_path(&object, &json_path(path))
                .cloned()
                .unwrap_or(json!("")),
            None => json!(
                object["spec"]["selector"]["matchLabels"]
                    .as_object()
                    .map(|m| m
                        .iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(","))
                    .unwrap_or_default()
            ),
        };
        let meta = &object["metadata"];
        Ok(json!({
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
                "resourceVersion": meta["resourceVersion"],
                "creationTimestamp": meta["creationTimestamp"],
            },
            "spec": {"replicas": spec_replicas},
            "status": {"replicas": status_replicas, "selector": selector},
        }))
    }

    /// Writes `spec.replicas` of a Scale back to the object.
    pub fn set_scale(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        scale: &Value,
    ) -> Result<Value> {
        let paths = rt
            .scale
            .clone()
            .ok_or_else(|| ApiError::not_found(rt, &format!("{name}/scale")))?;
        let replicas = scale["spec"]["replicas"]
            .as_i64()
            .filter(|r| *r >= 0)
            .ok_or_else(|| {
                ApiError::new(
                    422,
                    "Invalid",
                    "spec.replicas: must be a non-negative integer",
                )
            })?;
        let sent_rv = scale["metadata"]["resourceVersion"]
            .as_str()
            .map(String::from);
        self.update(rt, namespace, name, Part::Main, |object| {
            if let Some(rv) = sent_rv {
                object["metadata"]["resourceVersion"] = json!(rv);
            }
            merge::set_path(object, &json_path(&paths.spec_replicas), json!(replicas));
            Ok(())
        })?;
        self.scale(rt, namespace, name)
    }
}
